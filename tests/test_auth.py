"""Authentication: 401 before any other work, with no side effect anywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import RESTRICTED_CLIENT, ROTATING_CLIENT, Deployment, record
from usage_reporter import auth
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
    # Stable ids: the signatures above depend on the clock, and every xdist worker must collect the same tests.
    ids=[
        "no-client",
        "no-signature",
        "unknown-client",
        "wrong-secret",
        "other-body",
        "no-t",
        "no-v1",
        "stale",
        "future",
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


@pytest.mark.parametrize("client", ["demo-client", "nobody"])
@pytest.mark.parametrize(
    "t", ["²", "1" * 5000, "9" * 400, "-5", "0x10", "1e9", "١٢٣٤٥٦٧٨٩٠", " 123", ""], ids=lambda t: t[:8] or "empty"
)
def test_hostile_signature_timestamps_are_401_for_known_and_unknown_clients(
    deployment: Deployment, client: str, t: str
) -> None:
    signature = f"t={t},v1={compute_signature('demo-secret-change-me', 0, BODY)}"
    response = deployment.post("/v1/usage", BODY, headers={"x-usage-client": client}, signature=signature)

    assert response.status == 401
    assert response.body["error"]["type"] == "unauthorized"
    assert_no_side_effect(deployment)


def test_an_oversized_signature_header_is_401(deployment: Deployment) -> None:
    signature = sign("demo-secret-change-me", BODY) + ",v1=" + "a" * 70_000
    response = deployment.post("/v1/usage", BODY, signature=signature)

    assert (response.status, response.body["error"]["type"]) == (401, "unauthorized")
    assert_no_side_effect(deployment)


@pytest.mark.parametrize("seconds", [-310, 310])
def test_known_and_unknown_clients_get_the_same_401(deployment: Deployment, seconds: int) -> None:
    def answer(client: str, signature: str) -> tuple[int, object]:
        response = deployment.post("/v1/usage", BODY, headers={"x-usage-client": client}, signature=signature)
        return response.status, response.body

    assert answer("demo-client", stale(seconds)) == answer("nobody", stale(seconds))
    assert answer("demo-client", sign("wrong", BODY)) == answer("nobody", sign("wrong", BODY))
    assert answer("demo-client", "t=²,v1=00") == answer("nobody", "t=²,v1=00")


def test_the_unauthenticated_client_header_is_logged_bounded(deployment: Deployment, logs: Callable[[], str]) -> None:
    huge = "x" * 60_000 + "\x1b[31m"
    response = deployment.post("/v1/usage", BODY, headers={"x-usage-client": huge}, signature=sign("s", BODY))

    assert response.status == 401
    [line] = [json.loads(line) for line in logs().splitlines() if '"unauthorized"' in line]
    assert len(line["client_id"]) < 200
    assert line["client_id"].startswith("x" * 100)
    assert "\x1b" not in json.dumps(line)


def test_a_restricted_client_reports_only_to_its_subscription_items(deployment: Deployment) -> None:
    client = RESTRICTED_CLIENT
    assert deployment.post("/v1/usage", record("ok-1"), client=client).status == 200  # the exact id
    deployment.stripe.add_subscription_items("si_team42")
    assert deployment.post("/v1/usage", record("ok-2", subscription_item="si_team42"), client=client).status == 200
    before = (len(deployment.stripe.requests), len(deployment.dedup_items()))

    refused = deployment.post("/v1/usage", record("no-1", subscription_item="si_otherTeam"), client=client)
    batch = deployment.post(
        "/v1/usage/batch",
        {"records": [record("no-2"), record("no-3", subscription_item="si_other"), record("no-4")]},
        client=client,
    )

    assert (refused.status, refused.body["error"]["type"]) == (403, "forbidden")
    assert "si_otherTeam" in refused.body["error"]["message"]
    assert refused.body["error"]["fields"][0]["field"] == "subscription_item"
    assert (batch.status, batch.body["error"]["type"]) == (403, "forbidden")
    assert [(f["field"], f["index"]) for f in batch.body["error"]["fields"]] == [("records[1].subscription_item", 1)]
    assert (len(deployment.stripe.requests), len(deployment.dedup_items())) == before  # nothing stored or sent
    assert deployment.retry_messages() == [] and deployment.dead_letters() == []
    # Unrestricted clients are not affected.
    deployment.stripe.add_subscription_items("si_otherTeam")
    assert deployment.post("/v1/usage", record("free", subscription_item="si_otherTeam")).status == 200


def test_every_client_check_costs_the_same_hmacs(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing cannot tell an unknown client from a known one, nor a client in the middle of a rotation."""
    computed: list[int] = []
    real = auth.compute_signature

    def counting(secret: str, timestamp: int, body: bytes) -> str:
        computed.append(len(body))
        return real(secret, timestamp, body)

    signature = sign("x", BODY)
    monkeypatch.setattr(auth, "compute_signature", counting)
    counts = {}
    for client in ("demo-client", ROTATING_CLIENT[0], "nobody"):
        computed.clear()
        response = deployment.post("/v1/usage", BODY, headers={"x-usage-client": client}, signature=signature)
        assert response.status == 401
        counts[client] = len(computed)

    assert set(counts.values()) == {auth.MAX_SECRETS_PER_CLIENT}, counts


def test_an_oversized_body_is_refused_before_any_hmac(deployment: Deployment) -> None:
    body = b"x" * (300 * 1024)
    response = deployment.post("/v1/usage", body, headers={"x-usage-client": "nobody"}, signature=sign("x", body))

    assert (response.status, response.body["error"]["type"]) == (413, "payload_too_large")
    assert_no_side_effect(deployment)
