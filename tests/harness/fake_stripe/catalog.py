"""The account's subscriptions, their items and the items' prices: what ``GET /v1/subscription_items/{id}`` and
``GET /v1/subscriptions/{id}`` answer. Every price is metered (the fake bills nothing else): a legacy one (usage
records, ``recurring.meter`` null) or one billed through a meter."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from .rules import FIRST_VERSION_WITHOUT_USAGE_RECORDS, BillingPeriod


def _removes_legacy_billing(version: str) -> bool:
    """From 2025-03-31.basil on, ``aggregate_usage`` and ``billing_thresholds`` are gone from every endpoint, and
    the billing period moved from the subscription to its items (Stripe's changelog for basil)."""
    return version[:10] >= FIRST_VERSION_WITHOUT_USAGE_RECORDS


@dataclass(frozen=True)
class Price:
    """A monthly metered price: a legacy one (usage records; no meter) or one billed through ``meter`` (None when
    a test named none)."""

    id: str
    legacy: bool
    meter: str | None
    created: int
    product: str

    def as_json(self, version: str) -> dict[str, Any]:
        """The ``price`` object under API version ``version``."""
        recurring: dict[str, Any] = {
            "interval": "month",
            "interval_count": 1,
            "meter": self.meter,
            "trial_period_days": None,
            "usage_type": "metered",
        }
        if not _removes_legacy_billing(version):
            recurring["aggregate_usage"] = "sum"  # the spec: "Defaults to `sum`" for metered prices
        return {
            "id": self.id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": self.created,
            "currency": "usd",
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": self.product,
            "recurring": dict(sorted(recurring.items())),
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring",
            "unit_amount": 1,
            "unit_amount_decimal": "1",
        }


@dataclass(frozen=True)
class SubscriptionItem:
    id: str
    subscription: str
    price: str
    created: int


@dataclass
class Subscription:
    id: str
    customer: str
    created: int
    items: list[str] = field(default_factory=list)  # in the order they were added


class Catalog:
    """Subscriptions, items and prices by id; the account's lock guards them."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.prices: dict[str, Price] = {}
        self.items: dict[str, SubscriptionItem] = {}
        self.subscriptions: dict[str, Subscription] = {}

    def add(
        self,
        items: tuple[str, ...],
        *,
        now: int,
        legacy_metered: bool,
        customer: str | None,
        price: str | None,
        subscription: str | None,
        meter: str | None,
    ) -> None:
        """Put ``items`` on one subscription (``subscription``, new or existing; else a new one) at one price
        (likewise). An item added again moves to what this call says. ``ValueError`` for what Stripe could not
        hold: a meter on a legacy price, a price or subscription that exists with another meter or customer."""
        if legacy_metered and meter is not None:
            raise ValueError("a legacy metered price has no meter")
        if not items:
            return
        with self.lock:
            found_price = self.prices.get(price) if price else None
            if found_price is not None and (found_price.legacy, found_price.meter) != (legacy_metered, meter):
                kind = "a legacy metered price" if found_price.legacy else f"billed through meter {found_price.meter}"
                raise ValueError(f"the price {price} exists, {kind}")
            found_subscription = self.subscriptions.get(subscription) if subscription else None
            if found_subscription is not None and customer not in (None, found_subscription.customer):
                raise ValueError(f"the subscription {subscription} is the customer {found_subscription.customer}'s")
            if found_price is None:
                found_price = Price(price or f"price_{_token()}", legacy_metered, meter, now, f"prod_{_token()}")
                self.prices[found_price.id] = found_price
            if found_subscription is None:
                found_subscription = Subscription(subscription or f"sub_{_token()}", customer or f"cus_{_token()}", now)
                self.subscriptions[found_subscription.id] = found_subscription
            for item in items:
                self._detach(item)
                self.items[item] = SubscriptionItem(item, found_subscription.id, found_price.id, now)
                found_subscription.items.append(item)
            self.subscriptions[found_subscription.id] = found_subscription  # again, if _detach emptied it

    def _detach(self, item: str) -> None:
        """Take ``item`` off its subscription, dropping the subscription if no item is left (Stripe's have one)."""
        old = self.items.pop(item, None)
        if old is None:
            return
        subscription = self.subscriptions[old.subscription]
        subscription.items.remove(item)
        if not subscription.items:
            del self.subscriptions[subscription.id]

    def reset(self) -> None:
        with self.lock:
            self.prices.clear()
            self.items.clear()
            self.subscriptions.clear()

    def item_json(self, item: str, version: str, period: BillingPeriod) -> dict[str, Any] | None:
        """The ``subscription_item`` object (None for an unknown item); metered items have no ``quantity``, as
        Stripe omits it for a metered price. ``period`` is the item's current billing period."""
        with self.lock:
            found = self.items.get(item)
            if found is None:
                return None
            body: dict[str, Any] = {
                "id": found.id,
                "object": "subscription_item",
                "created": found.created,
                "discounts": [],
                "metadata": {},
                "price": self.prices[found.price].as_json(version),
                "subscription": found.subscription,
                "tax_rates": [],
            }
            if _removes_legacy_billing(version):
                body["current_period_start"], body["current_period_end"] = period.start, period.end
            else:
                body["billing_thresholds"] = None
            return body

    def subscription_json(
        self, subscription: str, version: str, periods: dict[str, BillingPeriod]
    ) -> dict[str, Any] | None:
        """The ``subscription`` object (None for an unknown one), its items a list object; ``periods`` holds each
        item's current billing period (before basil the subscription's is its first item's)."""
        with self.lock:
            found = self.subscriptions.get(subscription)
            if found is None:
                return None
            items = [self.item_json(item, version, periods[item]) for item in found.items]
            body: dict[str, Any] = {
                "id": found.id,
                "object": "subscription",
                "cancel_at_period_end": False,
                "collection_method": "charge_automatically",
                "created": found.created,
                "currency": "usd",
                "customer": found.customer,
                "items": {
                    "object": "list",
                    "data": items,
                    "has_more": False,
                    "total_count": len(items),
                    "url": f"/v1/subscription_items?subscription={found.id}",
                },
                "livemode": False,
                "metadata": {},
                "start_date": found.created,
                "status": "active",
            }
            if not _removes_legacy_billing(version):
                first = periods[found.items[0]]
                body["billing_thresholds"] = None
                body["current_period_start"], body["current_period_end"] = first.start, first.end
            return body


def _token() -> str:
    return secrets.token_hex(7)
