"""Authentication: 401 before any other work, with no side effect anywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import ROTATING_CLIENT, Deployment, record
from usage_reporter.auth import AuthenticationError, compute_signature, sign, verify_signature

BODY = json.dumps(record("r1")).encode()


def assert_no_side_effect(deployment: Deployment) -> None:
    assert deployment.stripe.requests == []
    assert deployment.dedup_items() == []
    assert deployment.retry_messages() == []
    assert deployment.dead_letters() == []


def stale(seconds: int) -> str:
    at = int(time.time()) + seconds
    return f"t={at},v1={compute_signature('demo-secret-change-me', at, BODY)}"


@pytest.mark.parametrize(
    ("headers", "signature", "says"),
    [
        ({"x-usage-client": None}, None, "missing X-Usage-Client"),
        ({"x-usage-signature": None}, None, "missing X-Usage-Signature"),
        ({"x-usage-client": "nobody"}, None, "unknown client or signature mismatch"),
        ({}, sign("wrong-secret", BODY), "unknown client or signature mismatch"),
        ({}, sign("demo-secret-change-me", BODY + b" "), "unknown client or signature mismatch"),
        ({}, "v1=abc", "no valid t="),
        ({}, f"t={int(time.time())}", "no v1= signature"),
        ({}, "STALE", "more than 300 seconds"),
        ({}, "FUTURE", "more than 300 seconds"),
    ],
)
def test_unauthenticated_request_is_401_with_no_side_effect(
    deployment: Deployment, headers: dict[str, str | None], signature: str | None, says: str
) -> None:
    signature = {"STALE": stale(-310), "FUTURE": stale(310)}.get(signature or "", signature)
    # The body is also invalid: authentication must come first and hide that.
    body = BODY if says != "missing X-Usage-Client" else json.dumps({"quantity": "bad"}).encode()
    response = deployment.post("/v1/usage", body, headers=headers, signature=signature)  # type: ignore[arg-type]

    assert response.status == 401
    assert response.body["error"]["type"] == "unauthorized"
    assert says in response.body["error"]["message"]
    assert response.headers["www-authenticate"] == "X-Usage-Signature"
    assert_no_side_effect(deployment)


def test_unauthenticated_invalid_body_is_401_not_422(deployment: Deployment) -> None:
    body = b'{"quantity": "not a number"'
    response = deployment.post("/v1/usage", body, signature=sign("wrong", body))

    assert response.status == 401
    assert_no_side_effect(deployment)


def test_rotation_accepts_any_current_secret(deployment: Deployment) -> None:
    client_id, (new, old) = ROTATING_CLIENT
    with_old = deployment.post("/v1/usage", record("r1"), client=(client_id, old))
    with_new = deployment.post("/v1/usage", record("r2"), client=(client_id, new))

    assert (with_old.status, with_new.status) == (200, 200)


def test_several_v1_signatures_one_valid_is_accepted(deployment: Deployment) -> None:
    at = int(time.time())
    header = f"t={at},v1={'0' * 64},v1={compute_signature('demo-secret-change-me', at, BODY)}"

    assert deployment.post("/v1/usage", BODY, signature=header).status == 200


def test_401_is_counted_in_metrics(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.post("/v1/usage", BODY, signature=sign("wrong", BODY))

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert any(m.get("Unauthorized") == [1.0] for m in emitted)


def test_signature_is_never_logged(deployment: Deployment, logs: Callable[[], str]) -> None:
    signature = sign("wrong", BODY)
    deployment.post("/v1/usage", BODY, signature=signature)
    deployment.post("/v1/usage", BODY)

    logged = logs()
    assert '"message":"unauthorized"' in logged  # the 401 was logged, without the signature
    assert signature.split("v1=")[1] not in logged
    assert "demo-secret-change-me" not in logged


def test_verify_signature_checks_the_timestamp_against_the_clock() -> None:
    header = sign("s", b"{}", timestamp=1_000)
    verify_signature(["s"], header, b"{}", tolerance_seconds=300, now=1_299)
    with pytest.raises(AuthenticationError):
        verify_signature(["s"], header, b"{}", tolerance_seconds=300, now=1_301)
