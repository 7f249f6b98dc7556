"""No input gets a 5xx: every request is served or refused with a structured 4xx, and a refusal has no
side effect. Known crashers are pinned one by one; hypothesis then fuzzes the signature header, the
headers and the raw body (bytes, nesting, numbers, encodings) through the real handler."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Deployment, HttpResult, record
from tests.harness.lambda_runtime import DEMO_CLIENT_SECRET, LambdaContext, http_api_event, load_handler
from usage_reporter.auth import sign


def assert_structured_refusal(response: HttpResult, status: int | None = None) -> None:
    assert 400 <= response.status < 500, response
    if status is not None:
        assert response.status == status, response
    assert isinstance(response.body["error"]["type"], str) and response.body["error"]["message"]


def side_effects(deployment: Deployment) -> tuple[int, int, int, int]:
    return (
        len(deployment.stripe.requests),
        len(deployment.table_items()),
        len(deployment.retry_messages()),
        len(deployment.dead_letters()),
    )


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ('{"a":' * 1500 + "1" + "}" * 1500, 400, "nested too deeply"),
        ("[" * 5000 + "]" * 5000, 400, "nested too deeply"),
        (
            '{"idempotency_key": "k", "subscription_item": "si_x", "quantity": ' + "9" * 4301 + "}",
            400,
            "not valid JSON",
        ),
        ("[" * 50 + "]" * 50, 422, "expected a JSON object"),
        ('"just a string"', 422, "expected a JSON object"),
        ("12", 422, "expected a JSON object"),
        ('{"quantity": NaN}', 400, "NaN is not a JSON number"),
    ],
    ids=["objects-1500-deep", "arrays-5000-deep", "int-4301-digits", "arrays-50-deep", "string", "number", "nan"],
)
def test_crafted_signed_bodies_are_refused_with_a_4xx(
    deployment: Deployment, body: str, status: int, says: str
) -> None:
    response = deployment.post("/v1/usage", body)

    assert_structured_refusal(response, status)
    assert says in response.body["error"]["message"]
    assert side_effects(deployment) == (0, 0, 0, 0)


def test_content_type_is_case_insensitive(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1"), headers={"content-type": "APPLICATION/JSON; Charset=UTF-8"})

    assert response.status == 200


def test_no_content_type_is_taken_as_json(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1"), headers={"content-type": None})  # type: ignore[dict-item]

    assert response.status == 200


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=latin-1", "text/plain", "application/x-www-form-urlencoded"]
)
def test_other_media_types_and_charsets_are_415(deployment: Deployment, content_type: str) -> None:
    response = deployment.post("/v1/usage", record("r1"), headers={"content-type": content_type})

    assert_structured_refusal(response, 415)
    assert side_effects(deployment) == (0, 0, 0, 0)


def test_a_body_that_is_not_utf8_is_400(deployment: Deployment) -> None:
    body = json.dumps(record("caf\u00e9"), ensure_ascii=False).encode("latin-1")
    response = deployment.post("/v1/usage", body)

    assert_structured_refusal(response, 400)
    assert "not UTF-8" in response.body["error"]["message"]
    assert side_effects(deployment) == (0, 0, 0, 0)


def invoke_raw(deployment: Deployment, event: dict[str, Any]) -> HttpResult:
    response = load_handler("ingest")(event, LambdaContext(timeout_seconds=deployment.timeout_seconds))
    return HttpResult(
        response["statusCode"],
        {k.lower(): v for k, v in response.get("headers", {}).items()},
        json.loads(response["body"]) if response.get("body") else None,
    )


def test_a_base64_body_that_is_not_base64_is_400(deployment: Deployment) -> None:
    event = http_api_event("POST", "/v1/usage", b"{}", {"x-usage-client": "demo-client", "x-usage-signature": "t=1"})
    event.update(body="%%% not base64 %%%", isBase64Encoded=True)

    assert_structured_refusal(invoke_raw(deployment, event), 400)


# -- fuzzing ---------------------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "idempotency_key": st.one_of(st.text(max_size=300), json_values),
        "subscription_item": st.one_of(st.from_regex(r"si_[A-Za-z0-9]{1,8}", fullmatch=True), json_values),
        "quantity": st.one_of(st.integers(), json_values),
        "timestamp": st.one_of(st.integers(), st.just("now"), json_values),
        "action": st.one_of(st.sampled_from(["increment", "set", "SET"]), json_values),
        "extra": json_values,
    },
)


def _nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "array" else ('{"a":' * depth + "0" + "}" * depth)


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda v: json.dumps(v).encode(), record_like),
    st.builds(lambda v: json.dumps({"records": v}).encode(), st.lists(record_like, max_size=3)),
    st.builds(lambda d, k: _nested(d, k).encode(), st.integers(0, 6000), st.sampled_from(["array", "object"])),
    st.builds(lambda n: b'{"quantity": ' + b"7" * n + b"}", st.integers(1, 6000)),
    st.builds(
        lambda v, enc: json.dumps(v, ensure_ascii=False).encode(enc, "replace"),
        record_like,
        st.sampled_from(["utf-16", "latin-1", "utf-8"]),
    ),
)
signature_headers = st.one_of(
    st.text(max_size=80),
    st.builds(lambda t, v: f"t={t},v1={v}", st.text(max_size=12), st.text(max_size=70)),
    st.builds(lambda n: "t=" + "1" * n + ",v1=00", st.integers(1, 6000)),
    st.just("VALID"),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "APPLICATION/JSON", "application/json; charset=utf-16", "text/plain", ""]),
    st.text(max_size=40),
)
client_ids = st.one_of(st.just("demo-client"), st.just("nobody"), st.text(max_size=300))


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["/v1/usage", "/v1/usage/batch"]),
    body=raw_bodies,
    signature=signature_headers,
    content_type=content_types,
    client_id=client_ids,
    as_base64=st.booleans(),
)
def test_no_input_gets_a_5xx_and_a_refusal_changes_nothing(
    deployment: Deployment,
    path: str,
    body: bytes,
    signature: str,
    content_type: str | None,
    client_id: str,
    as_base64: bool,
) -> None:
    headers = {"x-usage-client": client_id, "x-usage-signature": signature}
    if signature == "VALID":
        headers["x-usage-signature"] = sign(DEMO_CLIENT_SECRET, body)
    if content_type is not None:
        headers["content-type"] = content_type
    event = http_api_event("POST", path, body, headers)
    if as_base64:
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    before = side_effects(deployment)

    response = invoke_raw(deployment, event)

    assert response.status < 500, response
    assert isinstance(response.body, dict)
    if response.status >= 400 and "status" not in response.body:  # a refusal (not a served "rejected")
        assert isinstance(response.body["error"]["type"], str), response
        assert side_effects(deployment) == before, response
