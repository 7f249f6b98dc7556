"""POST /v1/stripe/events: Stripe's thin events for streamed meter events it found invalid later. Each sampled
identifier of ours is dead-lettered with Stripe's reason and its key answers rejected; the rest is counted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.conftest import Deployment
from tests.harness.aws_clients import aws_client
from tests.harness.aws_faults import AwsFaults
from tests.harness.event_destination import EventDestination, event_destination
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import FAKE_STRIPE_KEY, LOCAL_STRIPE_WEBHOOK_SECRET

EVENT_NAME = "api_requests"
CUSTOMER = "cus_TESTevents1"
EVENTS_PATH = "/v1/stripe/events"


@pytest.fixture
def metered(deployment: Deployment) -> Deployment:
    deployment.stripe.add_meter(EVENT_NAME)
    deployment.stripe.add_customers(CUSTOMER)
    return deployment


@pytest.fixture
def destination(metered: Deployment) -> Iterator[EventDestination]:
    with event_destination(metered.timeout_seconds) as destination:
        yield destination


def event(key: str, **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "event_name": EVENT_NAME, "customer": CUSTOMER, "value": 2, **overrides}


def stream_batch(deployment: Deployment, *events: dict[str, Any]) -> dict[str, Any]:
    response = deployment.post("/v1/meter_events/batch", {"events": list(events)})
    assert response.body["summary"] == {"accepted": len(events)}, response
    deployment.stripe.process_meter_event_stream()
    return response.body  # type: ignore[no-any-return]


def test_an_event_stripe_finds_invalid_later_is_dead_lettered_and_answers_rejected(
    metered: Deployment, destination: EventDestination
) -> None:
    stream_batch(
        metered, event("good"), event("no-customer", customer="cus_TESTnobody"), event("no-meter", event_name="nope")
    )

    deliveries = metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)

    assert sorted(d.status for d in deliveries) == [200, 200]  # one report per meter, one for "no meter"
    letters = {m["Body"]["idempotency_key"]: m["Body"] for m in metered.dead_letters()}
    assert set(letters) == {"no-customer", "no-meter"}
    assert letters["no-customer"]["reason"]["code"] == "meter_event_customer_not_found"
    assert letters["no-meter"]["reason"]["code"] == "no_meter"
    assert letters["no-customer"]["record"]["customer"] == "cus_TESTnobody"
    replay = metered.post(
        "/v1/meter_events/batch", {"events": [event("good"), event("no-customer", customer="cus_TESTnobody")]}
    )
    assert [(r["status_code"], r["status"]) for r in replay.body["results"]] == [(202, "accepted"), (422, "rejected")]
    assert replay.body["results"][1]["error"]["code"] == "meter_event_customer_not_found"
    assert [e.identifier for e in metered.stripe.meter_events] == [replay.body["results"][0]["stripe_identifier"]]


def test_a_delivery_that_fails_midway_is_handled_once_when_stripe_delivers_it_again(
    metered: Deployment, destination: EventDestination, aws_faults: AwsFaults
) -> None:
    stream_batch(metered, event("bad", customer="cus_TESTnobody"))
    aws_faults.fail("dynamodb:UpdateItem")  # the dead letter is sent; the rejected answer cannot be stored

    [first] = metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)
    aws_faults.clear()
    [again] = metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)  # Stripe's redelivery
    assert metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET) == []  # acknowledged

    assert (first.status, again.status) == (503, 200)
    assert metered.stored_answer("bad", prefix="meter-event")["body"]["status"] == "rejected"
    # The letter goes before the answer changes, so a failure between them leaves a second copy for the
    # redelivery, never none; both name the same identifier, which Stripe keeps unique on a redrive.
    letters = metered.dead_letters()
    assert len(letters) == 2 and len({m["Body"]["stripe"]["identifier"] for m in letters}) == 1


def test_a_redelivered_report_changes_nothing(metered: Deployment, destination: EventDestination) -> None:
    stream_batch(metered, event("bad", customer="cus_TESTnobody"))
    metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)
    [delivery] = destination.received

    assert destination.post_again(delivery) == 200  # as if our first 200 had not reached Stripe

    assert [r.answer["rejected"] for r in destination.received] == [1, 0]
    assert len(metered.dead_letters()) == 1
    assert metered.stored_answer("bad", prefix="meter-event")["body"]["status"] == "rejected"


@pytest.mark.parametrize("secret, age", [("whsec_not_the_destinations", 0), (LOCAL_STRIPE_WEBHOOK_SECRET, 600)])
def test_an_unsigned_or_stale_delivery_is_refused_and_changes_nothing(
    metered: Deployment, destination: EventDestination, secret: str, age: int
) -> None:
    stream_batch(metered, event("bad", customer="cus_TESTnobody"))

    [delivery] = metered.stripe.deliver_error_reports(destination.url, secret, signed_at=int(time.time()) - age)

    assert delivery.status == 400
    assert metered.dead_letters() == []
    assert metered.stored_answer("bad", prefix="meter-event")["body"]["status"] == "accepted"


def test_errors_of_events_that_are_not_ours_are_counted_as_unattributed(
    metered: Deployment, destination: EventDestination
) -> None:
    stream_batch(metered, event("ours", customer="cus_TESTnobody"))
    client = stripe.StripeClient(
        FAKE_STRIPE_KEY, base_addresses={"api": metered.stripe.url, "meter_events": metered.stripe.url}
    )
    session = client.v2.billing.meter_event_session.create()
    foreign: Any = {"events": [{"event_name": EVENT_NAME, "identifier": "another-system-1", "payload": {"value": "1"}}]}
    client.v2.billing.meter_event_stream.create(params=foreign, options={"api_key": session.authentication_token})
    metered.stripe.process_meter_event_stream()

    [delivery] = metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)

    assert delivery.status == 200
    [received] = destination.received
    assert (received.answer["rejected"], received.answer["unattributed"]) == (1, 1)
    assert [m["Body"]["idempotency_key"] for m in metered.dead_letters()] == ["ours"]


def test_other_event_types_are_acknowledged_and_ignored(metered: Deployment) -> None:
    from tests.harness.fake_stripe.thin_events import signature_header

    notification = {
        "id": "evt_test_1",
        "object": "v2.core.event",
        "type": "v1.billing.meter.created",
        "created": "2026-01-01T00:00:00.000Z",
        "livemode": False,
        "related_object": {"id": "mtr_test_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_test_1"},
    }
    payload = json.dumps(notification)
    response = metered.post(
        EVENTS_PATH,
        payload,
        headers={"stripe-signature": signature_header(payload, LOCAL_STRIPE_WEBHOOK_SECRET, int(time.time()))},
    )

    assert (response.status, response.body["type"], response.body["rejected"]) == (200, "v1.billing.meter.created", 0)


def test_a_v1_event_stripe_refuses_after_taking_it_is_dead_lettered_and_answers_rejected(
    metered: Deployment, destination: EventDestination
) -> None:
    """Stripe checks a v1 event's customer after answering 200 too: the event was "reported", and is not."""
    metered.stripe.metering.unknown_customers_async = True
    response = metered.post("/v1/meter_events", event("later-refused", customer="cus_TESTnobody"))
    assert (response.status, response.body["status"]) == (200, "reported"), response

    [delivery] = metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)

    assert delivery.status == 200
    assert (destination.received[0].answer["rejected"], destination.received[0].answer["unattributed"]) == (1, 0)
    [letter] = metered.dead_letters()
    assert letter["Body"]["reason"]["code"] == "meter_event_customer_not_found"
    replay = metered.post("/v1/meter_events", event("later-refused", customer="cus_TESTnobody"))
    assert (replay.status, replay.body["status"]) == (422, "rejected")


def test_an_event_the_worker_delivered_and_stripe_refused_later_is_rejected_too(
    metered: Deployment, destination: EventDestination
) -> None:
    metered.stripe.metering.unknown_customers_async = True
    metered.stripe.inject(Fault.server_error(503), times=3)  # the stream request and its two retries
    queued = metered.post("/v1/meter_events/batch", {"events": [event("via-worker", customer="cus_TESTnobody")]})
    assert queued.body["summary"] == {"queued": 1}, queued
    metered.run_retry_worker()  # v1: 200, and refused later

    metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)

    assert metered.stored_answer("via-worker", prefix="meter-event")["body"]["status"] == "rejected"
    assert [m["Body"]["idempotency_key"] for m in metered.dead_letters()] == ["via-worker"]


def test_an_unsigned_post_is_refused_before_any_stripe_secret_is_needed(metered: Deployment) -> None:

    from usage_reporter import wiring

    aws_client("secretsmanager").put_secret_value(  # a fresh stack's Stripe key, not filled in yet
        SecretId=metered.env["STRIPE_API_KEY_SECRET_ARN"], SecretString="REPLACE_WITH_STRIPE_API_KEY"
    )
    wiring.reset()

    response = metered.post(EVENTS_PATH, b"not even json", headers={"stripe-signature": "t=1,v1=00"})

    assert (response.status, response.body["error"]["type"]) == (400, "invalid_signature"), response


def test_a_signed_body_that_is_not_a_thin_event_is_refused(metered: Deployment) -> None:
    from tests.harness.fake_stripe.thin_events import signature_header

    payload = json.dumps([{"type": "v1.billing.meter.error_report_triggered"}])
    signed = signature_header(payload, LOCAL_STRIPE_WEBHOOK_SECRET, int(time.time()))

    response = metered.post(EVENTS_PATH, payload, headers={"stripe-signature": signed})

    assert (response.status, response.body["error"]["type"]) == (400, "invalid_event"), response


def test_an_event_stripe_got_twice_and_refused_twice_is_one_rejection_and_nothing_unattributed(
    metered: Deployment, destination: EventDestination
) -> None:
    """A retry after a lost answer streams the same identifier again: Stripe's report names it twice."""
    response = metered.post("/v1/meter_events/batch", {"events": [event("twice", customer="cus_TESTnobody")]})
    identifier = response.body["results"][0]["stripe_identifier"]
    client = stripe.StripeClient(
        FAKE_STRIPE_KEY, base_addresses={"api": metered.stripe.url, "meter_events": metered.stripe.url}
    )
    session = client.v2.billing.meter_event_session.create()
    [sent] = [r["params"]["events"][0] for r in metered.stripe.requests if r["path"].endswith("meter_event_stream")]
    client.v2.billing.meter_event_stream.create(
        params={"events": [sent]}, options={"api_key": session.authentication_token}
    )
    metered.stripe.process_meter_event_stream()
    assert [e.identifier for e in metered.stripe.meter_errors] == [identifier, identifier]

    metered.stripe.deliver_error_reports(destination.url, LOCAL_STRIPE_WEBHOOK_SECRET)

    [received] = destination.received
    assert (received.answer["rejected"], received.answer["unattributed"]) == (1, 0)
    assert len(metered.dead_letters()) == 1
