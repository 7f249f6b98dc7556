"""Mirroring usage records to meter events (the migration): one caller record, reported to both APIs, each
exactly once, each with its own outcome; the mapping from configuration or from Stripe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import Deployment
from tests.harness.aws_faults import AwsFaults
from tests.harness.fake_stripe import Fault

ITEM = "si_MIRRORitem1"  # configured with its customer: no Stripe lookup
PRICED_ITEM = "si_MIRRORpriced1"  # on a mirrored legacy price: the customer comes from Stripe
CUSTOMER = "cus_MIRRORcustomer1"
PRICE = "price_MIRRORlegacy1"
SUM_METER = "api_requests"
LAST_METER = "seats"


@pytest.fixture
def mirrored(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    from usage_reporter import wiring

    stripe = deployment.stripe
    stripe.add_meter(SUM_METER)
    stripe.add_meter(LAST_METER, aggregation="last")
    stripe.add_customers(CUSTOMER)
    stripe.add_subscription_items(ITEM, customer=CUSTOMER)
    stripe.add_subscription_items(PRICED_ITEM, customer=CUSTOMER, price=PRICE)
    mapping = {ITEM: {"event_name": SUM_METER, "customer": CUSTOMER}, PRICE: {"event_name": SUM_METER}}
    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps(mapping))
    wiring.reset()
    yield deployment


def usage(key: str, item: str = ITEM, **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "subscription_item": item, "quantity": 5, **overrides}


def lookups(deployment: Deployment) -> list[str]:
    return [r["path"].partition("?")[0] for r in deployment.stripe.requests if r["method"] == "GET"]


def test_a_mirrored_record_reaches_both_apis_once_with_both_outcomes(mirrored: Deployment) -> None:
    response = mirrored.post("/v1/usage", usage("u1"))

    assert (response.status, response.body["status"]) == (200, "reported"), response
    mirror = response.body["mirror"]
    assert (mirror["status_code"], mirror["status"], mirror["customer"], mirror["value"]) == (
        200,
        "reported",
        CUSTOMER,
        "5",
    )
    assert mirror["timestamp"] == response.body["timestamp"]
    assert mirrored.stripe.total_usage(ITEM) == 5
    [event] = mirrored.stripe.meter_events
    assert (event.identifier, event.value, event.customer) == (mirror["stripe_identifier"], Decimal(5), CUSTOMER)
    assert lookups(mirrored) == ["/v1/billing/meters"]  # the meter's aggregation, once (cached)

    replay = mirrored.post("/v1/usage", usage("u1"))
    assert replay.headers["idempotent-replayed"] == "true" and replay.body == response.body
    assert mirrored.stripe.total_usage(ITEM) == 5 and len(mirrored.stripe.meter_events) == 1


def test_a_mapping_by_price_takes_the_customer_from_stripe_once(mirrored: Deployment) -> None:
    first = mirrored.post("/v1/usage", usage("p1", PRICED_ITEM))
    second = mirrored.post("/v1/usage", usage("p2", PRICED_ITEM))

    assert [r.body["mirror"]["status"] for r in (first, second)] == ["reported", "reported"]
    assert {e.customer for e in mirrored.stripe.meter_events} == {CUSTOMER}
    assert sorted(lookups(mirrored)) == ["/v1/billing/meters", f"/v1/subscription_items/{PRICED_ITEM}"]  # cached


def test_an_item_that_left_legacy_billing_is_refused_there_and_still_reaches_its_meter(mirrored: Deployment) -> None:
    mirrored.stripe.add_subscription_items(ITEM, customer=CUSTOMER, legacy_metered=False)

    response = mirrored.post("/v1/usage", usage("moved"))

    assert (response.status, response.body["error"]["type"]) == (422, "usage_records_unsupported"), response
    assert response.body["mirror"]["status"] == "reported"
    assert mirrored.stripe.meter_total(SUM_METER, CUSTOMER) == 5


def test_a_mirror_stripe_refuses_is_dead_lettered_on_its_own(
    mirrored: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps({ITEM: {"event_name": "no_such_meter", "customer": CUSTOMER}}))
    wiring.reset()

    response = mirrored.post("/v1/usage", usage("m1"))

    assert (response.status, response.body["mirror"]["status_code"]) == (200, 422), response
    [letter] = mirrored.dead_letters()
    assert (letter["Body"]["kind"], letter["Body"]["idempotency_key"]) == ("usage_record_mirror", "m1")


def test_set_mirrors_only_to_a_meter_that_keeps_the_last_value(
    mirrored: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    refused = mirrored.post("/v1/usage", usage("s1", action="set"))

    assert refused.status == 200 and refused.body["mirror"]["error"]["type"] == "mirror_needs_last_aggregation"
    assert mirrored.stripe.meter_events == [] and mirrored.stripe.total_usage(ITEM) == 5
    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps({ITEM: {"event_name": LAST_METER, "customer": CUSTOMER}}))
    wiring.reset()
    assert mirrored.post("/v1/usage", usage("s2", action="set")).body["mirror"]["status"] == "reported"


def test_stripe_down_during_the_lookup_is_503_and_the_retry_gets_both_done(mirrored: Deployment) -> None:
    mirrored.stripe.inject(Fault.server_error(503), times=6)  # the record's 3 attempts, the lookup's 3

    response = mirrored.post("/v1/usage", usage("d1", PRICED_ITEM))

    assert (response.status, response.body["error"]["type"]) == (503, "service_unavailable"), response
    assert response.headers["retry-after"]
    assert [m["Body"]["kind"] for m in mirrored.retry_messages()] == ["usage_record"]  # kept, not lost
    retry = mirrored.post("/v1/usage", usage("d1", PRICED_ITEM))
    assert (retry.body["status"], retry.body["mirror"]["status"]) == ("queued", "reported"), retry
    mirrored.run_retry_worker()
    assert mirrored.stripe.total_usage(PRICED_ITEM) == 5 and len(mirrored.stripe.meter_events) == 1


def test_a_mirror_that_can_be_neither_sent_nor_kept_makes_the_answer_503(
    deployment: Deployment, aws_faults: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    deployment.stripe.add_subscription_items(ITEM, customer=CUSTOMER)
    # Stripe refuses the mirror for good (no such meter): it needs the dead-letter queue, which is down.
    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps({ITEM: {"event_name": "not_created", "customer": CUSTOMER}}))
    wiring.reset()
    aws_faults.fail("sqs:SendMessage")

    response = deployment.post("/v1/usage", usage("m1"))

    assert (response.status, response.body["error"]["type"]) == (503, "service_unavailable"), response
    aws_faults.clear()
    retry = deployment.post("/v1/usage", usage("m1"))
    assert (retry.status, retry.body["status"], retry.body["mirror"]["status"]) == (200, "reported", "rejected")
    [letter] = deployment.dead_letters()
    assert (letter["Body"]["kind"], letter["Body"]["idempotency_key"]) == ("usage_record_mirror", "m1")
    assert deployment.stripe.total_usage(ITEM) == 5


def test_a_replay_needs_no_lookup_while_stripe_is_down(mirrored: Deployment) -> None:
    from usage_reporter import wiring

    first = mirrored.post("/v1/usage", usage("r1", PRICED_ITEM))
    wiring.reset()  # a new instance: nothing cached
    mirrored.stripe.inject(Fault.server_error(503), times=10)

    replay = mirrored.post("/v1/usage", usage("r1", PRICED_ITEM))

    assert (replay.status, replay.body) == (200, first.body), replay  # the mirror's plan says where it went


def test_a_customer_on_a_price_mapping_is_a_configuration_error() -> None:
    from usage_reporter.config import Settings

    env = {
        "IDEMPOTENCY_TABLE_NAME": "t",
        "RETRY_QUEUE_URL": "q",
        "DEAD_LETTER_QUEUE_URL": "d",
        "CLIENT_SECRETS": "{}",
        "STRIPE_API_KEY": "sk_test_x",
        "USAGE_RECORD_MIRROR": json.dumps({PRICE: {"event_name": SUM_METER, "customer": CUSTOMER}}),
    }

    with pytest.raises(ValueError, match="a price's items belong to many customers"):
        Settings.model_validate(env)


def test_items_nobody_mirrors_cost_no_lookup_and_answer_as_before(
    mirrored: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps({ITEM: {"event_name": SUM_METER}}))  # no price keys
    wiring.reset()

    response = mirrored.post("/v1/usage", usage("plain", "si_TESTnotMirrored"))

    assert "mirror" not in response.body
    assert lookups(mirrored) == []


def test_a_batch_reports_each_mirror_with_a_summary(mirrored: Deployment) -> None:
    records = [usage("b1"), usage("b2", PRICED_ITEM), usage("b3", "si_TESTnotMirrored")]
    mirrored.stripe.add_subscription_items("si_TESTnotMirrored")

    response = mirrored.post("/v1/usage/batch", {"records": records})

    assert response.body["summary"] == {"reported": 3}, response
    assert response.body["mirror_summary"] == {"reported": 2}
    assert ["mirror" in r for r in response.body["results"]] == [True, True, False]
    assert len(mirrored.stripe.meter_events) == 2


def test_a_queued_mirror_is_delivered_by_the_worker_once(mirrored: Deployment) -> None:
    queued = mirrored.post("/v1/usage", usage("q1"), timeout_seconds=1)  # no time left to call Stripe: both queued

    assert (queued.status, queued.body["mirror"]["status_code"]) == (202, 202), queued
    assert {m["Body"]["kind"] for m in mirrored.retry_messages()} == {"usage_record", "usage_record_mirror"}
    mirrored.run_retry_worker()

    replay = mirrored.post("/v1/usage", usage("q1"))
    assert (replay.body["status"], replay.body["mirror"]["status"]) == ("reported", "reported")
    assert mirrored.stripe.total_usage(ITEM) == 5 and len(mirrored.stripe.meter_events) == 1


def test_increment_mirrors_only_to_a_meter_that_sums(mirrored: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from usage_reporter import wiring

    monkeypatch.setenv("USAGE_RECORD_MIRROR", json.dumps({ITEM: {"event_name": LAST_METER, "customer": CUSTOMER}}))
    wiring.reset()

    response = mirrored.post("/v1/usage", usage("i1"))

    assert response.body["mirror"]["error"]["type"] == "mirror_needs_sum_aggregation", response
    assert mirrored.stripe.meter_events == []
