"""The fake Stripe's lookups answer as Stripe does: driven with the real stripe SDK over HTTP, listing meters (pages,
the status filter, the limit's bounds) and retrieving subscription items and subscriptions."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.conftest import SUBSCRIPTION_ITEM
from tests.harness.fake_stripe import FakeStripe
from tests.harness.lambda_runtime import FAKE_STRIPE_KEY

ACACIA = "2025-02-24.acacia"  # the last version with aggregate_usage and usage records
BASIL = "2025-03-31.basil"


@pytest.fixture
def client(fake_stripe: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        FAKE_STRIPE_KEY,
        base_addresses={"api": fake_stripe.url, "meter_events": fake_stripe.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=5),
    )


def refusal(raised: pytest.ExceptionInfo[stripe.InvalidRequestError]) -> dict[str, Any]:
    """The error object Stripe sent, as sent."""
    body: Any = raised.value.json_body
    error: dict[str, Any] = body["error"]
    return error


# -- GET /v1/billing/meters ------------------------------------------------------------------------------------


def test_auto_paging_iter_returns_every_meter_exactly_once_newest_first(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    added = [fake_stripe.add_meter(f"event_{n}") for n in range(23)]

    first = client.v1.billing.meters.list(params={"limit": 4})
    listed = [meter.id for meter in first.auto_paging_iter()]

    assert first["object"] == "list" and first.url == "/v1/billing/meters" and first.has_more is True
    assert len(first.data) == 4 and first.data[0].object == "billing.meter"
    assert listed == added[::-1]  # created in the same second: the one added last comes first


def test_ending_before_pages_back_over_every_newer_meter_once(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    added = [fake_stripe.add_meter(f"event_{n}") for n in range(9)]

    listed = [
        m.id for m in client.v1.billing.meters.list(params={"limit": 2, "ending_before": added[0]}).auto_paging_iter()
    ]

    assert listed == added[1:]  # the SDK walks backwards from the oldest meter: each newer one, once


def test_the_default_page_is_ten_meters(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    for n in range(12):
        fake_stripe.add_meter(f"event_{n}")

    page = client.v1.billing.meters.list()

    assert len(page.data) == 10 and page.has_more is True


def test_the_status_filter_lists_only_meters_of_that_status(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    added = [fake_stripe.add_meter(f"event_{n}") for n in range(7)]
    for meter in added[1::2]:
        fake_stripe.deactivate_meter(meter)

    active = client.v1.billing.meters.list(params={"status": "active", "limit": 2}).auto_paging_iter()
    inactive = client.v1.billing.meters.list(params={"status": "inactive", "limit": 2}).auto_paging_iter()

    assert [m.id for m in active] == added[0::2][::-1]
    assert [(m.id, m.status) for m in inactive] == [(m, "inactive") for m in added[1::2][::-1]]


@pytest.mark.parametrize(("limit", "says"), [(0, "greater than or equal to 1"), (101, "less than or equal to 100")])
def test_a_limit_out_of_range_is_refused_naming_limit(client: stripe.StripeClient, limit: int, says: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.list(params={"limit": limit})

    assert raised.value.http_status == 400 and raised.value.param == "limit"
    assert refusal(raised) == {
        "type": "invalid_request_error",
        "code": "parameter_invalid_integer",
        "param": "limit",
        "message": f"This value must be {says}.",
    }


def test_limits_1_and_100_are_taken(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    fake_stripe.add_meter("event_a")
    fake_stripe.add_meter("event_b")

    assert len(client.v1.billing.meters.list(params={"limit": 1}).data) == 1
    assert len(client.v1.billing.meters.list(params={"limit": 100}).data) == 2


def test_a_cursor_that_is_no_meter_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.list(params={"starting_after": "mtr_nope"})

    assert raised.value.http_status == 400
    assert refusal(raised)["code"] == "resource_missing" and refusal(raised)["param"] == "starting_after"


def test_an_unknown_status_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.list(params={"status": "archived"})

    assert raised.value.http_status == 400 and raised.value.param == "status"


# -- GET /v1/subscription_items/{id} ---------------------------------------------------------------------------


def test_an_item_answers_its_legacy_metered_price_and_subscription_id(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    fake_stripe.add_subscription_items("si_legacy", customer="cus_legacy", price="price_legacy", subscription="sub_l")

    item = client.v1.subscription_items.retrieve("si_legacy")

    assert (item.id, item.object, item.subscription) == ("si_legacy", "subscription_item", "sub_l")
    assert isinstance(item.created, int)
    assert (item.price.id, item.price.object) == ("price_legacy", "price")
    assert item.price.recurring is not None
    assert (item.price.recurring.usage_type, item.price.recurring.meter) == ("metered", None)
    assert "quantity" not in item  # Stripe omits it for a metered price


def test_expanding_subscription_answers_the_subscription_object(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    fake_stripe.add_subscription_items("si_one", "si_two", customer="cus_expand", subscription="sub_expand")

    item = client.v1.subscription_items.retrieve("si_one", params={"expand": ["subscription"]})

    subscription: Any = item.subscription
    assert isinstance(subscription, stripe.Subscription)
    assert (subscription.id, subscription.customer, subscription.status) == ("sub_expand", "cus_expand", "active")
    assert [i.id for i in subscription["items"].data] == ["si_one", "si_two"]


def test_a_meter_based_item_points_its_price_at_the_meter(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    meter = fake_stripe.add_meter("api_calls")
    fake_stripe.add_subscription_items("si_meter", legacy_metered=False, meter=meter)
    fake_stripe.add_subscription_items("si_no_meter", legacy_metered=False)

    with_meter = client.v1.subscription_items.retrieve("si_meter").price.recurring
    without_meter = client.v1.subscription_items.retrieve("si_no_meter").price.recurring

    assert with_meter is not None and (with_meter.usage_type, with_meter.meter) == ("metered", meter)
    assert without_meter is not None and without_meter.meter is None


def test_aggregate_usage_is_there_before_basil_only(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    before = client.v1.subscription_items.retrieve(SUBSCRIPTION_ITEM, options={"stripe_version": ACACIA})
    after = client.v1.subscription_items.retrieve(SUBSCRIPTION_ITEM, options={"stripe_version": BASIL})

    assert before["price"]["recurring"]["aggregate_usage"] == "sum"
    assert "aggregate_usage" not in after["price"]["recurring"]
    period = fake_stripe.billing_period(SUBSCRIPTION_ITEM)  # basil moved the period onto the item
    assert (after["current_period_start"], after["current_period_end"]) == (period.start, period.end)


def test_an_unknown_item_is_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscription_items.retrieve("si_nope", params={"expand": ["subscription"]})

    assert raised.value.http_status == 404 and raised.value.code == "resource_missing"
    assert refusal(raised) == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "param": "id",
        "message": "No such subscription item: 'si_nope'",
    }


def test_expanding_a_field_that_is_not_expandable_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscription_items.retrieve(SUBSCRIPTION_ITEM, params={"expand": ["price.nope"]})

    assert raised.value.http_status == 400


# -- GET /v1/subscriptions/{id} --------------------------------------------------------------------------------


def test_a_subscription_answers_its_customer_and_items(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    fake_stripe.add_subscription_items("si_a", "si_b", customer="cus_owner", subscription="sub_owned")

    subscription = client.v1.subscriptions.retrieve("sub_owned")

    assert (subscription.id, subscription.object, subscription.customer) == ("sub_owned", "subscription", "cus_owner")
    assert subscription.status == "active"
    items = subscription["items"]
    assert (items.object, items.has_more, [i.id for i in items.data]) == ("list", False, ["si_a", "si_b"])
    assert {i.subscription for i in items.data} == {"sub_owned"}


def test_an_unknown_subscription_is_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.retrieve("sub_nope")

    assert raised.value.http_status == 404
    assert refusal(raised) == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "param": "id",
        "message": "No such subscription: 'sub_nope'",
    }


# -- the controls ----------------------------------------------------------------------------------------------


def test_ids_not_given_are_generated_one_subscription_and_price_per_call(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    fake_stripe.add_subscription_items("si_x", "si_y")

    x, y = (client.v1.subscription_items.retrieve(i, params={"expand": ["subscription"]}) for i in ("si_x", "si_y"))

    assert x.price.id == y.price.id and x.price.id.startswith("price_")
    assert x["subscription"]["id"] == y["subscription"]["id"] and x["subscription"]["id"].startswith("sub_")
    assert x["subscription"]["customer"].startswith("cus_")
    assert x["subscription"]["id"] != client.v1.subscription_items.retrieve(SUBSCRIPTION_ITEM).subscription


def test_an_existing_subscription_and_price_are_added_to(fake_stripe: FakeStripe) -> None:
    fake_stripe.add_subscription_items("si_1", customer="cus_c", price="price_p", subscription="sub_s")
    fake_stripe.add_subscription_items("si_2", price="price_p", subscription="sub_s")

    assert fake_stripe.catalog.subscriptions["sub_s"].items == ["si_1", "si_2"]
    assert {fake_stripe.catalog.items[i].price for i in ("si_1", "si_2")} == {"price_p"}


def test_an_item_added_again_moves_to_what_the_call_says(fake_stripe: FakeStripe) -> None:
    fake_stripe.add_subscription_items("si_1", subscription="sub_s")
    fake_stripe.add_subscription_items("si_1", subscription="sub_s")  # its only item, onto the same one
    fake_stripe.add_subscription_items("si_2", "si_3", subscription="sub_t")
    fake_stripe.add_subscription_items("si_3", subscription="sub_s", legacy_metered=False)

    catalog = fake_stripe.catalog
    assert (catalog.subscriptions["sub_s"].items, catalog.subscriptions["sub_t"].items) == (["si_1", "si_3"], ["si_2"])
    assert catalog.items["si_3"].subscription == "sub_s" and "si_3" in fake_stripe.metered_price_items


@pytest.mark.parametrize(
    "clash",
    [
        {"legacy_metered": True, "meter": "mtr_x"},  # a legacy price has no meter
        {"legacy_metered": False, "price": "price_p"},  # price_p is legacy
        {"customer": "cus_other", "subscription": "sub_s"},  # sub_s is cus_c's
    ],
)
def test_what_stripe_could_not_hold_is_refused(fake_stripe: FakeStripe, clash: dict[str, Any]) -> None:
    fake_stripe.add_subscription_items("si_1", customer="cus_c", price="price_p", subscription="sub_s")

    with pytest.raises(ValueError):
        fake_stripe.add_subscription_items("si_2", **clash)


def test_reset_forgets_items_subscriptions_and_prices(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    fake_stripe.add_subscription_items("si_gone", subscription="sub_gone")

    fake_stripe.reset()

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_items.retrieve("si_gone")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.retrieve("sub_gone")
    assert not (fake_stripe.catalog.prices or fake_stripe.catalog.items or fake_stripe.catalog.subscriptions)
