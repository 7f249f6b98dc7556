"""GET /v1/usage/{key} and GET /v1/meter_events/{key}: the caller's own stored answer, signed, no body."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, unquote

from tests.conftest import OTHER_CLIENT, Deployment, record
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import LambdaContext, http_api_event, load_handler
from tests.test_openapi import documented, schema_errors
from usage_reporter.auth import sign


def get(deployment: Deployment, path: str, *, client: tuple[str, str] | None = None, body: bytes = b"") -> Any:
    client_id, secret = client or deployment.default_client
    headers = {"x-usage-client": client_id, "x-usage-signature": sign(secret, f"GET {unquote(path)}".encode())}
    route = path.rsplit("/", 1)[0] + "/{idempotency_key}"
    event = http_api_event("GET", path, body, headers, route_key=f"GET {route}")
    response = load_handler("ingest")(event, LambdaContext(timeout_seconds=deployment.timeout_seconds))
    return response["statusCode"], json.loads(response["body"])


def test_a_reported_record_shows_its_answer_and_stripe_id(deployment: Deployment) -> None:
    posted = deployment.post("/v1/usage", record("looked-up"))

    status, body = get(deployment, "/v1/usage/looked-up")

    assert status == 200
    assert body == {**posted.body, "status_code": 200, "attempts": 1}
    assert body["stripe_id"].startswith("mbur_")


def test_a_queued_record_shows_the_reason_the_attempts_and_the_next_attempt(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.server_error(503), times=3)
    before = int(time.time())
    deployment.post("/v1/usage", record("waiting"))

    status, body = get(deployment, "/v1/usage/waiting")

    assert (status, body["status"], body["status_code"]) == (200, "queued", 202)
    assert body["reason"]["type"] == "stripe_unavailable" and body["attempts"] == 1
    first_backoff = int(deployment.env["RETRY_BASE_DELAY_SECONDS"])
    assert before + first_backoff <= body["next_attempt_at"] <= int(time.time()) + first_backoff


def test_a_rejected_record_shows_stripes_reason(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("refused", subscription_item="si_doesNotExist"))

    status, body = get(deployment, "/v1/usage/refused")

    assert (status, body["status"], body["error"]["code"]) == (200, "rejected", "resource_missing")


def test_keys_are_the_callers_own_and_per_kind(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("mine"))

    assert get(deployment, "/v1/usage/mine", client=OTHER_CLIENT)[0] == 404
    assert get(deployment, "/v1/meter_events/mine")[0] == 404
    status, body = get(deployment, "/v1/usage/never-sent")
    assert (status, body["error"]["type"]) == (404, "not_found")


def test_a_key_with_reserved_characters_is_found_encoded_or_as_api_gateway_decodes_it(
    deployment: Deployment,
) -> None:
    key = "invoice/42 über"
    deployment.post("/v1/usage", record(key))

    sent_encoded = get(deployment, "/v1/usage/" + quote(key, safe=""))  # a local server passes the path as sent
    decoded_by_api_gateway = get(deployment, "/v1/usage/" + key)  # API Gateway's HTTP API decodes rawPath

    assert sent_encoded[0] == decoded_by_api_gateway[0] == 200
    assert sent_encoded[1]["idempotency_key"] == decoded_by_api_gateway[1]["idempotency_key"] == key


def test_a_lookup_is_signed_and_has_no_body(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("signed"))

    assert get(deployment, "/v1/usage/signed", client=("demo-client", "wrong-secret"))[0] == 401
    assert get(deployment, "/v1/usage/signed", body=b"{}")[0] == 400


def test_a_lookups_signature_covers_its_path_so_it_cannot_read_another_key(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("key-a"))
    deployment.post("/v1/usage", record("key-b"))
    signature = sign(deployment.default_client[1], b"GET /v1/usage/key-a")
    headers = {"x-usage-client": deployment.default_client[0], "x-usage-signature": signature}

    def with_signature(path: str) -> int:
        event = http_api_event("GET", path, b"", headers, route_key="GET /v1/usage/{idempotency_key}")
        response = load_handler("ingest")(event, LambdaContext(timeout_seconds=deployment.timeout_seconds))
        return int(response["statusCode"])

    assert with_signature("/v1/usage/key-a") == 200
    assert with_signature("/v1/usage/key-b") == 401  # the same signature, replayed on another key


def test_a_cancelled_meter_event_shows_its_cancellation(deployment: Deployment) -> None:
    deployment.stripe.add_meter("api_requests")
    deployment.stripe.add_customers("cus_TESTlookup")
    event = {"idempotency_key": "to-cancel", "event_name": "api_requests", "customer": "cus_TESTlookup", "value": 4}
    assert deployment.post("/v1/meter_events", event).status == 200
    assert "cancellation" not in get(deployment, "/v1/meter_events/to-cancel")[1]

    assert deployment.post("/v1/meter_events/cancel", {"idempotency_key": "to-cancel"}).status == 200

    status, body = get(deployment, "/v1/meter_events/to-cancel")
    assert (status, body["status"]) == (200, "reported")
    assert (body["cancellation"]["status"], body["cancellation"]["status_code"]) == ("reported", 200)
    assert body["cancellation"]["cancelled_identifier"] == body["stripe_identifier"]
    assert schema_errors(documented("GET /v1/meter_events/{idempotency_key}", 200), body) == []  # as documented
