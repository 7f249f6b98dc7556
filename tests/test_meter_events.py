"""POST /v1/meter_events and /batch: Billing meter events, through the same dedup, plan, queues and worker
as usage records, against the fake Stripe's /v1/billing/meter_events."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import RESTRICTED_CLIENT, Deployment, record
from tests.harness.fake_stripe import Fault

EVENT_NAME = "api_requests"
CUSTOMER = "cus_TESTcustomer1"


@pytest.fixture
def metered(deployment: Deployment) -> Deployment:
    deployment.stripe.add_meter(EVENT_NAME)
    deployment.stripe.add_customers(CUSTOMER)
    return deployment


def event(key: str = "ev-1", **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "event_name": EVENT_NAME, "customer": CUSTOMER, "value": 3, **overrides}


def test_an_event_is_reported_with_an_identifier_derived_from_client_and_key(metered: Deployment) -> None:
    before = int(time.time())
    response = metered.post("/v1/meter_events", event(value=12))

    assert response.status == 200, response
    [sent] = metered.stripe.meter_events
    body = response.body
    assert (body["status"], body["event_name"], body["customer"], body["value"]) == (
        "reported",
        EVENT_NAME,
        CUSTOMER,
        "12",
    )
    assert body["stripe_identifier"] == sent.identifier and len(sent.identifier) <= 100
    assert before <= sent.timestamp == body["timestamp"] <= int(time.time())
    assert sent.value == Decimal(12) and sent.customer == CUSTOMER
    [request] = [r for r in metered.stripe.requests if r["path"] == "/v1/billing/meter_events"]
    assert request["headers"]["idempotency-key"] == sent.identifier


@pytest.mark.parametrize("written", ["0.1", "12.50", "100"])
def test_a_decimal_value_reaches_stripe_exactly_as_written(metered: Deployment, written: str) -> None:
    as_number = '{"idempotency_key": "n", "event_name": "%s", "customer": "%s", "value": %s}' % (  # noqa: UP031
        EVENT_NAME,
        CUSTOMER,
        written,
    )
    as_string = event("s", value=written)

    assert metered.post("/v1/meter_events", as_number).status == 200
    assert metered.post("/v1/meter_events", as_string).status == 200
    assert [e.payload["value"] for e in metered.stripe.meter_events] == [written, written]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-1, "non-negative"),
        ("-1", "non-negative"),
        ("1e3", "exponent"),
        ("NaN", "non-negative number"),
        ("1234567890123456", "15 significant digits"),
        (True, "must be a number"),
        (None, "must be a number"),
    ],
)
def test_a_value_stripe_would_refuse_is_422_naming_it(metered: Deployment, value: object, says: str) -> None:
    response = metered.post("/v1/meter_events", event(value=value))

    assert response.status == 422, response
    [field] = response.body["error"]["fields"]
    assert field["field"] == "value" and says in field["message"]
    assert metered.stripe.requests == [] and metered.table_items() == []


def test_an_exponent_in_a_json_number_is_refused(metered: Deployment) -> None:
    body = '{"idempotency_key": "e", "event_name": "%s", "customer": "%s", "value": 1e3}' % (EVENT_NAME, CUSTOMER)  # noqa: UP031
    assert metered.post("/v1/meter_events", body).status == 422


@pytest.mark.parametrize(("offset", "says"), [(-36 * 86400, "35 days"), (400, "in the future")])
def test_a_timestamp_outside_stripes_window_is_422_with_nothing_stored(
    metered: Deployment, offset: int, says: str
) -> None:
    response = metered.post("/v1/meter_events", event(timestamp=int(time.time()) + offset))

    assert response.status == 422
    [field] = response.body["error"]["fields"]
    assert field["field"] == "timestamp" and says in field["message"]
    assert metered.stripe.requests == [] and metered.table_items() == []


def test_a_customer_is_required_unless_the_payload_names_one(metered: Deployment) -> None:
    missing = metered.post("/v1/meter_events", event(customer=None))
    in_payload = metered.post(
        "/v1/meter_events", {**event("p"), "customer": None, "payload": {"stripe_customer_id": CUSTOMER}}
    )

    assert missing.status == 422 and missing.body["error"]["fields"][0]["field"] == "customer"
    assert in_payload.status == 200, in_payload
    assert metered.stripe.meter_events[0].customer == CUSTOMER


def test_configured_payload_keys_are_used_for_the_meter(metered: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from usage_reporter import wiring

    metered.stripe.add_meter("seats", customer_key="account", value_key="count")
    monkeypatch.setenv("METER_EVENT_KEYS", json.dumps({"seats": {"customer_key": "account", "value_key": "count"}}))
    wiring.reset()

    response = metered.post("/v1/meter_events", event(event_name="seats", value=4))

    assert response.status == 200, response
    [sent] = metered.stripe.meter_events
    assert sent.payload == {"account": CUSTOMER, "count": "4"}


def test_a_replay_gets_the_stored_answer_and_stripe_is_not_called_again(metered: Deployment) -> None:
    first = metered.post("/v1/meter_events", event())
    replay = metered.post("/v1/meter_events", event())

    assert (replay.status, replay.body, replay.headers["idempotent-replayed"]) == (200, first.body, "true")
    assert len(metered.stripe.meter_events) == 1
    assert metered.post("/v1/meter_events", event(value=4)).status == 409  # same key, other payload


def test_keys_are_scoped_per_kind(metered: Deployment) -> None:
    usage = metered.post("/v1/usage", record("same-key"))
    meter = metered.post("/v1/meter_events", event("same-key"))

    assert (usage.status, meter.status) == (200, 200)
    assert len(metered.stripe.ledger) == 1 and len(metered.stripe.meter_events) == 1


def test_an_answer_lost_after_stripe_took_the_event_is_delivered_once(metered: Deployment) -> None:
    metered.stripe.inject(Fault.lost_response(500))  # taken; the answer lost: the SDK's retry replays it
    assert metered.post("/v1/meter_events", event("once")).status == 200
    metered.stripe.inject(Fault.lost_response(500), times=3)  # taken; every answer lost: queued

    queued = metered.post("/v1/meter_events", event("queued"))
    metered.run_retry_worker()

    assert queued.status == 202
    assert metered.post("/v1/meter_events", event("queued")).body["status"] == "reported"
    assert sorted(e.idempotency_key or "" for e in metered.stripe.meter_events) == sorted(
        {e.idempotency_key or "" for e in metered.stripe.meter_events}
    )
    assert len(metered.stripe.meter_events) == 2


def test_an_identifier_stripe_already_has_is_delivered_not_refused(metered: Deployment) -> None:
    """The Idempotency-Key memory is gone (a day later), but Stripe refuses the identifier: ours, delivered."""
    metered.stripe.inject(Fault.lost_response(500), times=3)
    metered.stripe.inject(Fault.server_error(503), times=3)
    assert metered.post("/v1/meter_events", event()).status in (200, 202)
    metered.stripe.clear_faults()
    metered.stripe.forget_idempotency_keys()

    metered.run_retry_worker()
    replay = metered.post("/v1/meter_events", event())

    assert (replay.status, replay.body["status"]) == (200, "reported")
    assert len(metered.stripe.meter_events) == 1
    assert metered.dead_letters() == []


def test_stripe_down_queues_the_event_and_the_worker_delivers_it(metered: Deployment) -> None:
    metered.stripe.inject(Fault.server_error(503), times=3)

    queued = metered.post("/v1/meter_events", event())
    assert (queued.status, queued.body["status"]) == (202, "queued")
    [message] = metered.retry_messages()
    assert message["Body"]["kind"] == "meter_event"

    metered.run_retry_worker()
    replay = metered.post("/v1/meter_events", event())
    assert (replay.status, replay.body["status"]) == (200, "reported")
    assert len(metered.stripe.meter_events) == 1


def test_an_unknown_meter_is_rejected_with_stripes_reason_and_dead_lettered(metered: Deployment) -> None:
    response = metered.post("/v1/meter_events", event(event_name="no_such_meter"))

    assert (response.status, response.body["status"]) == (422, "rejected"), response
    assert response.body["error"]["message"]
    [letter] = metered.dead_letters()
    assert letter["Body"]["kind"] == "meter_event" and letter["Body"]["reason"]["http_status"] == 400


def test_a_batch_reports_each_event_in_order(metered: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("METER_EVENT_BATCH_API", "v1")  # the stream's batches: tests/test_meter_event_stream.py
    wiring.reset()
    events = [event(f"b{i}", value=i) for i in range(1, 4)]
    response = metered.post("/v1/meter_events/batch", {"events": events})

    assert response.status == 200, response
    assert [r["idempotency_key"] for r in response.body["results"]] == ["b1", "b2", "b3"]
    assert response.body["summary"] == {"reported": 3}
    assert sorted(e.value for e in metered.stripe.meter_events) == [1, 2, 3]


def test_a_batch_with_one_bad_event_is_refused_whole(metered: Deployment) -> None:
    events = [event("b1"), event("b2", customer=None), event("b1")]
    response = metered.post("/v1/meter_events/batch", {"events": events})

    assert response.status == 422
    assert [f["field"] for f in response.body["error"]["fields"]] == ["events[2].idempotency_key"]
    assert metered.stripe.requests == []


def test_event_names_can_be_restricted_per_client(metered: Deployment) -> None:
    response = metered.post("/v1/meter_events", event(), client=RESTRICTED_CLIENT)

    assert (response.status, response.body["error"]["type"]) == (403, "forbidden")
    assert response.body["error"]["fields"][0]["field"] == "event_name"
    assert metered.stripe.requests == []
    metered.stripe.add_meter("team_a_calls")
    assert metered.post("/v1/meter_events", event(event_name="team_a_calls"), client=RESTRICTED_CLIENT).status == 200


def test_a_usage_record_for_a_meter_billed_item_is_refused_with_its_own_type(metered: Deployment) -> None:
    metered.stripe.add_subscription_items("si_basilPrice", legacy_metered=False)

    response = metered.post("/v1/usage", record("u1", subscription_item="si_basilPrice"))

    assert (response.status, response.body["status"]) == (422, "rejected")
    assert response.body["error"]["type"] == "usage_records_unsupported"
    assert "/v1/meter_events" in response.body["error"]["message"]
    [letter] = metered.dead_letters()
    assert letter["Body"]["reason"]["type"] == "usage_records_unsupported"


def test_the_dead_letter_list_shows_the_kind(
    metered: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usage_reporter.dead_letters import main

    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", metered.dead_letter_queue_url)
    monkeypatch.setenv("RETRY_QUEUE_URL", metered.retry_queue_url)
    metered.post("/v1/meter_events", event(event_name="no_such_meter"))
    metered.post("/v1/usage", record("u1", subscription_item="si_missing"))

    main(["list"])
    listed = capsys.readouterr().out

    assert "meter_event  stripe_error" in listed and "event=no_such_meter" in listed
    assert "usage_record  stripe_error/resource_missing" in listed and "item=si_missing" in listed


def test_a_replay_gets_its_answer_after_the_timestamp_left_stripes_window(
    metered: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = event("old", timestamp=int(time.time()) - 34 * 86400)
    first = metered.post("/v1/meter_events", old)
    assert first.status == 200
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * 86400)  # two days later: 36 days old

    replay = metered.post("/v1/meter_events", old)
    other = metered.post("/v1/meter_events", {**old, "value": 4})

    assert (replay.status, replay.body, replay.headers["idempotent-replayed"]) == (200, first.body, "true")
    assert (other.status, other.body["error"]["type"]) == (409, "idempotency_conflict")
    assert len(metered.stripe.meter_events) == 1


def test_dynamodb_down_during_the_window_check_is_503(metered: Deployment, aws_faults: Any) -> None:
    aws_faults.fail("dynamodb:GetItem")

    response = metered.post("/v1/meter_events", event(timestamp=int(time.time()) - 40 * 86400))

    assert (response.status, response.body["error"]["type"]) == (503, "service_unavailable")
    assert int(response.headers["retry-after"]) > 0


def test_a_refusal_that_quotes_the_phrase_is_not_taken_as_delivered(metered: Deployment) -> None:
    response = metered.post("/v1/meter_events", event(event_name="x already exists with identifier y"))

    assert (response.status, response.body["status"]) == (422, "rejected")
    assert metered.stripe.meter_events == []
    assert len(metered.dead_letters()) == 1


def test_a_reported_event_is_cancelled_once(metered: Deployment) -> None:
    assert metered.post("/v1/meter_events", event("c1", value=5)).status == 200

    cancel = metered.post("/v1/meter_events/cancel", {"idempotency_key": "c1"})
    again = metered.post("/v1/meter_events/cancel", {"idempotency_key": "c1"})

    assert (cancel.status, cancel.body["status"]) == (200, "reported"), cancel
    [sent] = metered.stripe.meter_events
    assert cancel.body["cancelled_identifier"] == sent.identifier and sent.cancelled_at is not None
    assert metered.stripe.meter_total(EVENT_NAME, CUSTOMER) == 0
    assert (again.status, again.headers["idempotent-replayed"]) == (200, "true")
    adjustments = [r for r in metered.stripe.requests if r["path"] == "/v1/billing/meter_event_adjustments"]
    assert len(adjustments) == 1


@pytest.mark.parametrize(
    ("setup", "status", "error_type"),
    [
        ("none", 422, "unknown_idempotency_key"),
        ("rejected", 422, "nothing_to_cancel"),
        ("queued", 409, "event_not_reported"),
        ("a_day_old", 422, "cancel_window_passed"),
    ],
)
def test_a_cancel_stripe_cannot_do_is_refused_clearly_with_nothing_stored(
    metered: Deployment, monkeypatch: pytest.MonkeyPatch, setup: str, status: int, error_type: str
) -> None:
    if setup == "rejected":
        metered.post("/v1/meter_events", event("c1", event_name="no_such_meter"))
    if setup == "queued":
        metered.stripe.inject(Fault.server_error(503), times=3)
        assert metered.post("/v1/meter_events", event("c1")).status == 202
    if setup == "a_day_old":
        assert metered.post("/v1/meter_events", event("c1")).status == 200
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 25 * 3600)
    before = len(metered.dedup_items())

    response = metered.post("/v1/meter_events/cancel", {"idempotency_key": "c1"})

    assert (response.status, response.body["error"]["type"]) == (status, error_type), response
    assert len(metered.dedup_items()) == before  # nothing stored for the cancel
    assert not [r for r in metered.stripe.requests if r["path"] == "/v1/billing/meter_event_adjustments"]


def test_a_cancel_queued_while_stripe_is_down_is_delivered_by_the_worker(metered: Deployment) -> None:
    assert metered.post("/v1/meter_events", event("c1")).status == 200
    metered.stripe.inject(Fault.server_error(503), times=3)

    queued = metered.post("/v1/meter_events/cancel", {"idempotency_key": "c1"})
    metered.run_retry_worker()

    assert (queued.status, queued.body["status"]) == (202, "queued")
    assert metered.stripe.meter_events[0].cancelled_at is not None
    replay = metered.post("/v1/meter_events/cancel", {"idempotency_key": "c1"})
    assert (replay.status, replay.body["status"]) == (200, "reported")
