"""POST /v1/meter_events/batch through the v2 meter event stream: one Stripe request per batch, a session token
kept across invocations, each event still exactly once, and the v1 switch."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.conftest import Deployment
from tests.harness.fake_stripe import Fault

EVENT_NAME = "api_requests"
CUSTOMER = "cus_TESTstream1"
STREAM = "/v2/billing/meter_event_stream"
SESSION = "/v2/billing/meter_event_session"


@pytest.fixture
def metered(deployment: Deployment) -> Deployment:
    deployment.stripe.add_meter(EVENT_NAME)
    deployment.stripe.add_customers(CUSTOMER)
    return deployment


def event(key: str, **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "event_name": EVENT_NAME, "customer": CUSTOMER, "value": 1, **overrides}


def calls(deployment: Deployment) -> Counter[str]:
    return Counter(request["path"].partition("?")[0] for request in deployment.stripe.requests)


def in_stripe(deployment: Deployment) -> Counter[str]:
    """Each identifier in Stripe's ledger, with how many times it is there."""
    return Counter(e.identifier for e in deployment.stripe.meter_events)


def test_a_batch_of_100_is_one_stripe_request_and_each_event_is_accepted(metered: Deployment) -> None:
    response = metered.post("/v1/meter_events/batch", {"events": [event(f"k{i}", value=i) for i in range(100)]})

    assert response.status == 200, response
    assert response.body["summary"] == {"accepted": 100}
    results = response.body["results"]
    assert [r["idempotency_key"] for r in results] == [f"k{i}" for i in range(100)]
    assert {(r["status"], r["status_code"]) for r in results} == {("accepted", 202)}
    assert calls(metered) == {SESSION: 1, STREAM: 1}

    assert metered.stripe.process_meter_event_stream()["accepted"] == 100
    assert set(in_stripe(metered).values()) == {1}
    assert {r["stripe_identifier"] for r in results} == set(in_stripe(metered))
    assert metered.stripe.meter_total(EVENT_NAME, CUSTOMER) == sum(range(100))


def test_the_session_is_kept_across_invocations_and_renewed_when_stripe_ends_it(metered: Deployment) -> None:
    for batch in range(3):
        assert metered.post("/v1/meter_events/batch", {"events": [event(f"b{batch}")]}).status == 200
    assert calls(metered)[SESSION] == 1

    metered.stripe.expire_sessions()  # as 15 minutes passing would (or Stripe revoking it)
    response = metered.post("/v1/meter_events/batch", {"events": [event("after-expiry")]})

    assert response.body["summary"] == {"accepted": 1}
    assert calls(metered)[SESSION] == 2 and calls(metered)[STREAM] == 5  # 3 + the refused one + its resend
    metered.stripe.process_meter_event_stream()
    assert len(in_stripe(metered)) == 4


def test_a_replay_answers_accepted_and_only_new_events_are_streamed(metered: Deployment) -> None:
    first = metered.post("/v1/meter_events/batch", {"events": [event("a"), event("b")]})
    again = metered.post("/v1/meter_events/batch", {"events": [event("a"), event("c"), event("b")]})

    assert [r.get("replayed", False) for r in again.body["results"]] == [True, False, True]
    assert again.body["results"][0]["stripe_identifier"] == first.body["results"][0]["stripe_identifier"]
    streamed = [r for r in metered.stripe.requests if r["path"] == STREAM]
    assert [len(r["params"]["events"]) for r in streamed] == [2, 1]
    single = metered.post("/v1/meter_events", event("a"))  # one key space for both endpoints: a replay
    assert (single.status, single.body["status"], single.headers["idempotent-replayed"]) == (202, "accepted", "true")


def test_stripe_down_queues_the_batch_and_the_worker_delivers_each_event_once(metered: Deployment) -> None:
    metered.stripe.inject(Fault.lost_response(0), times=3)  # Stripe takes the stream request; no answer arrives

    response = metered.post("/v1/meter_events/batch", {"events": [event("x"), event("y")]})

    assert response.body["summary"] == {"queued": 2}, response
    metered.run_retry_worker()  # v1, same identifiers, before Stripe has even processed the stream
    metered.stripe.process_meter_event_stream()  # the streamed copies: their identifiers are taken
    assert set(in_stripe(metered).values()) == {1} and len(in_stripe(metered)) == 2
    replay = metered.post("/v1/meter_events/batch", {"events": [event("x"), event("y")]})
    assert {r["status"] for r in replay.body["results"]} == {"reported"}
    assert metered.dead_letters() == []


def test_a_stream_request_stripe_refuses_whole_falls_back_to_one_v1_call_per_event(metered: Deployment) -> None:
    assert metered.post("/v1/meter_events/batch", {"events": [event("warm")]}).status == 200  # a session exists
    metered.stripe.inject(Fault.server_error(400))  # the next request, the stream, is refused as a whole

    response = metered.post(
        "/v1/meter_events/batch", {"events": [event("ok"), event("no-meter", event_name="not_a_meter")]}
    )

    assert [r["status"] for r in response.body["results"]] == ["reported", "rejected"], response
    assert calls(metered)["/v1/billing/meter_events"] == 2
    [letter] = metered.dead_letters()
    assert letter["Body"]["idempotency_key"] == "no-meter"


def test_v1_switch_sends_each_event_synchronously_with_exact_answers(
    metered: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("METER_EVENT_BATCH_API", "v1")
    wiring.reset()

    response = metered.post("/v1/meter_events/batch", {"events": [event("p"), event("q", event_name="nope")]})

    assert response.body["summary"] == {"reported": 1, "rejected": 1}, response
    assert calls(metered)[STREAM] == 0 and calls(metered)["/v1/billing/meter_events"] == 2


def test_an_accepted_event_can_be_cancelled(metered: Deployment) -> None:
    metered.post("/v1/meter_events/batch", {"events": [event("to-cancel", value=7)]})
    metered.stripe.process_meter_event_stream()

    cancel = metered.post("/v1/meter_events/cancel", {"idempotency_key": "to-cancel"})

    assert cancel.status == 200, cancel
    assert metered.stripe.meter_total(EVENT_NAME, CUSTOMER) == 0


def test_a_cancel_before_stripe_processed_the_stream_waits_for_it_and_cancels_once(metered: Deployment) -> None:
    metered.post("/v1/meter_events/batch", {"events": [event("too-soon", value=9)]})

    cancel = metered.post("/v1/meter_events/cancel", {"idempotency_key": "too-soon"})

    assert (cancel.status, cancel.body["status"]) == (202, "queued"), cancel
    assert cancel.body["reason"]["type"] == "meter_event_not_in_stripe_yet"
    metered.stripe.process_meter_event_stream()
    metered.run_retry_worker()
    assert metered.stripe.meter_total(EVENT_NAME, CUSTOMER) == 0
    replay = metered.post("/v1/meter_events/cancel", {"idempotency_key": "too-soon"})
    assert (replay.status, replay.body["status"]) == (200, "reported")
