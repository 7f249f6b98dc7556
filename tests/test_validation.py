"""Bad requests get a clear 4xx naming the field, and nothing is stored or sent anywhere."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Deployment, record
from usage_reporter.models import MAX_QUANTITY


def assert_nothing_kept(deployment: Deployment) -> None:
    assert deployment.stripe.requests == []
    assert deployment.dedup_items() == []
    assert deployment.retry_messages() == []
    assert deployment.dead_letters() == []


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"quantity": "5"}, "quantity", "valid integer"),
        ({"quantity": 5.0}, "quantity", "valid integer"),
        ({"quantity": True}, "quantity", "valid integer"),
        ({"quantity": -1}, "quantity", "greater than or equal to 0"),
        ({"quantity": MAX_QUANTITY + 1}, "quantity", f"less than or equal to {MAX_QUANTITY}"),
        ({"quantity": None}, "quantity", "valid integer"),
        ({"idempotency_key": ""}, "idempotency_key", "at least 1 character"),
        ({"idempotency_key": "k" * 256}, "idempotency_key", "at most 255 characters"),
        ({"idempotency_key": 42}, "idempotency_key", "valid string"),
        ({"subscription_item": "sub_123"}, "subscription_item", "pattern"),
        ({"timestamp": "later"}, "timestamp", 'unix seconds (a positive integer) or "now"'),
        ({"timestamp": 1700000000.5}, "timestamp", 'or "now"'),
        ({"timestamp": "1700000000"}, "timestamp", 'or "now"'),
        ({"timestamp": True}, "timestamp", 'or "now"'),
        ({"timestamp": 0}, "timestamp", 'or "now"'),
        ({"timestamp": "FUTURE"}, "timestamp", "timestamp is in the future"),
        ({"action": "decrement"}, "action", "'increment' or 'set'"),
        ({"customer": "cus_1"}, "customer", "Extra inputs are not permitted"),
    ],
)
def test_invalid_field_is_422_naming_it(deployment: Deployment, change: dict[str, Any], field: str, says: str) -> None:
    if change.get("timestamp") == "FUTURE":
        change = {"timestamp": int(time.time()) + 2}  # Stripe refuses any future timestamp
    response = deployment.post("/v1/usage", record("r1", **change))

    assert response.status == 422, response
    error = response.body["error"]
    assert error["type"] == "validation_error"
    assert [f["field"] for f in error["fields"]] == [field]
    assert says in error["fields"][0]["message"]
    assert field in error["message"]
    assert_nothing_kept(deployment)


@pytest.mark.parametrize("missing", ["idempotency_key", "subscription_item", "quantity"])
def test_missing_required_field_is_422(deployment: Deployment, missing: str) -> None:
    body = record("r1")
    del body[missing]
    response = deployment.post("/v1/usage", body)

    assert response.status == 422
    assert response.body["error"]["fields"] == [{"field": missing, "message": "Field required", "type": "missing"}]
    assert_nothing_kept(deployment)


def test_timestamp_of_this_second_is_accepted(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1", timestamp=int(time.time())))

    assert response.status == 200
    assert deployment.stripe.ledger[0]["timestamp"] == response.body["timestamp"]


def test_every_bad_field_is_named_at_once(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", {"idempotency_key": "", "subscription_item": "x", "quantity": "1"})

    assert response.status == 422
    assert sorted(f["field"] for f in response.body["error"]["fields"]) == [
        "idempotency_key",
        "quantity",
        "subscription_item",
    ]


@pytest.mark.parametrize("body", ['{"quantity": ', "not json", "{'single': 'quotes'}", ""])
def test_body_that_is_not_json_is_400(deployment: Deployment, body: str) -> None:
    response = deployment.post("/v1/usage", body)

    assert response.status == 400
    assert response.body["error"]["type"] == "invalid_json"
    assert_nothing_kept(deployment)


@pytest.mark.parametrize("body", [[record("r1")], "a string", 7, None])
def test_json_that_is_not_an_object_is_422(deployment: Deployment, body: Any) -> None:
    response = deployment.post("/v1/usage", json.dumps(body))

    assert response.status == 422
    assert response.body["error"]["type"] == "validation_error"
    assert_nothing_kept(deployment)


def test_body_over_256_kib_is_413(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1", padding="x" * (256 * 1024)))

    assert response.status == 413
    assert response.body["error"]["type"] == "payload_too_large"
    assert_nothing_kept(deployment)


def test_non_json_content_type_is_415(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1"), headers={"content-type": "application/x-www-form-urlencoded"})

    assert response.status == 415
    assert_nothing_kept(deployment)


def test_unknown_route_is_404_with_the_error_shape(deployment: Deployment) -> None:
    response = deployment.post("/v1/usages", record("r1"))

    assert response.status == 404
    assert response.body["error"]["type"] == "not_found"
    assert_nothing_kept(deployment)
