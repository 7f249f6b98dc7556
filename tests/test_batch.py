"""POST /v1/usage/batch: all-or-nothing validation, then one independent outcome per record, in order."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Deployment, record
from tests.harness.fake_stripe import Fault
from usage_reporter.models import MAX_BATCH_RECORDS


def test_batch_reports_each_record_in_request_order(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("seen-before", quantity=1))
    deployment.stripe.inject(Fault.rate_limit(subscription_item="si_rateLimited"))
    records = [
        record("a", quantity=2),
        record("bad-item", subscription_item="si_doesNotExist"),
        record("seen-before", quantity=1),
        record("limited", subscription_item="si_rateLimited"),
        record("fresh", quantity=4),
    ]
    deployment.stripe.add_subscription_items("si_rateLimited")

    response = deployment.post("/v1/usage/batch", {"records": records})

    assert response.status == 200
    results = response.body["results"]
    assert [r["idempotency_key"] for r in results] == [r["idempotency_key"] for r in records]
    assert [r["status_code"] for r in results] == [200, 422, 200, 202, 200]
    assert [r["status"] for r in results] == ["reported", "rejected", "reported", "queued", "reported"]
    assert results[1]["error"]["code"] == "resource_missing"
    assert results[2]["replayed"] is True
    assert "replayed" not in results[0]
    assert response.body["summary"] == {"reported": 3, "rejected": 1, "queued": 1}
    assert sorted(r["quantity"] for r in deployment.stripe.ledger) == [1, 2, 4]
    assert len(deployment.dead_letters()) == 1
    assert len(deployment.retry_messages()) == 1


def test_conflicting_record_in_a_batch_is_409_in_its_result(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("k", quantity=1))

    response = deployment.post("/v1/usage/batch", {"records": [record("k", quantity=9), record("new")]})

    assert response.status == 200
    conflict, fresh = response.body["results"]
    assert (conflict["status_code"], conflict["error"]["type"], conflict["idempotency_key"]) == (
        409,
        "idempotency_conflict",
        "k",
    )
    assert fresh["status_code"] == 200
    assert response.body["summary"] == {"idempotency_conflict": 1, "reported": 1}


def test_one_invalid_record_rejects_the_whole_batch_naming_its_index(deployment: Deployment) -> None:
    records = [record("a"), record("b", quantity="5"), record("c", action="remove")]

    response = deployment.post("/v1/usage/batch", {"records": records})

    assert response.status == 422
    fields = response.body["error"]["fields"]
    assert [(f["field"], f["index"]) for f in fields] == [("records[1].quantity", 1), ("records[2].action", 2)]
    assert deployment.stripe.requests == []
    assert deployment.dedup_items() == []


def test_records_sharing_a_key_reject_the_batch_naming_each_duplicate(deployment: Deployment) -> None:
    records = [record("a"), record("b"), record("a", quantity=1), record("b"), record("a")]
    response = deployment.post("/v1/usage/batch", {"records": records})

    assert response.status == 422
    fields = response.body["error"]["fields"]
    assert [(f["field"], f["index"], f["type"]) for f in fields] == [
        ("records[2].idempotency_key", 2, "duplicate_idempotency_key"),
        ("records[3].idempotency_key", 3, "duplicate_idempotency_key"),
        ("records[4].idempotency_key", 4, "duplicate_idempotency_key"),
    ]
    assert "also used by records[0]" in fields[2]["message"]
    assert deployment.stripe.requests == []
    assert deployment.dedup_items() == []


def test_batch_size_limits(deployment: Deployment) -> None:
    too_many = [record(f"k{i}") for i in range(MAX_BATCH_RECORDS + 1)]

    assert deployment.post("/v1/usage/batch", {"records": []}).status == 422
    assert deployment.post("/v1/usage/batch", {"records": too_many}).status == 422
    assert deployment.post("/v1/usage/batch", {"records": [record("a")], "extra": 1}).status == 422
    assert deployment.stripe.requests == []


def test_full_batch_is_reported_within_the_request(deployment: Deployment) -> None:
    records = [record(f"k{i}", quantity=i) for i in range(MAX_BATCH_RECORDS)]

    response = deployment.post("/v1/usage/batch", {"records": records})

    assert response.status == 200
    assert response.body["summary"] == {"reported": MAX_BATCH_RECORDS}
    assert sorted(r["quantity"] for r in deployment.stripe.ledger) == list(range(MAX_BATCH_RECORDS))
    assert len(deployment.dedup_items()) == MAX_BATCH_RECORDS

    again = deployment.post("/v1/usage/batch", {"records": records})
    assert all(r["replayed"] for r in again.body["results"])
    assert len(deployment.stripe.ledger) == MAX_BATCH_RECORDS


def test_a_batch_of_usage_records_never_goes_faster_than_the_configured_stripe_rate(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("STRIPE_USAGE_RECORDS_PER_SECOND", "10")
    wiring.reset()
    started = time.monotonic()

    response = deployment.post("/v1/usage/batch", {"records": [record(f"paced-{i}") for i in range(11)]})

    assert response.body["summary"] == {"reported": 11}, response
    assert time.monotonic() - started >= 1.0  # 11 calls spaced 0.1 s apart, 8 threads or not


def test_a_slow_pace_lets_no_more_records_wait_than_the_time_reserve_covers(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1 record/s with a 3 s reserve, at most 3 records are in flight: none waits its turn past the reserve."""
    from usage_reporter import wiring

    monkeypatch.setenv("STRIPE_USAGE_RECORDS_PER_SECOND", "1")
    wiring.reset()
    in_flight: list[int] = []
    gateway = wiring.stripe_gateway()
    send = gateway.create_usage_record
    current = [0]

    def counted(*args: object, **kwargs: object) -> str:
        current[0] += 1
        in_flight.append(current[0])
        try:
            return send(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            current[0] -= 1

    monkeypatch.setattr(gateway, "create_usage_record", counted)

    response = deployment.post("/v1/usage/batch", {"records": [record(f"slow-{i}") for i in range(4)]})

    assert response.body["summary"] == {"reported": 4}, response
    assert max(in_flight) <= 3
