"""The lookups of subscriptions over the account, once a request passed authentication, faults and the version
check: ``GET /v1/subscription_items/{id}`` (``expand[]=subscription``) and ``GET /v1/subscriptions/{id}``."""

from __future__ import annotations

from collections.abc import Callable

from .catalog import Catalog
from .query_rules import query_refusal
from .rules import BillingPeriod, Params, Reply, stripe_error

SUBSCRIPTION_ITEMS_PATH = "/v1/subscription_items/"  # + item id
SUBSCRIPTIONS_PATH = "/v1/subscriptions/"  # + subscription id
RETRIEVE_PARAMS = frozenset({"expand"})


def _id_after(route: str, prefix: str) -> str | None:
    """The id in ``<prefix><id>`` (one path segment), else None."""
    rest = route.removeprefix(prefix)
    return rest if rest != route and rest and "/" not in rest else None


def is_catalog_route(route: str) -> bool:
    return _id_after(route, SUBSCRIPTION_ITEMS_PATH) is not None or _id_after(route, SUBSCRIPTIONS_PATH) is not None


class CatalogApi:
    """What the lookups answer; ``period(item)`` is an item's current billing period (the account's)."""

    def __init__(self, catalog: Catalog, period: Callable[[str], BillingPeriod]) -> None:
        self._catalog = catalog
        self._period = period

    def answer(self, method: str, route: str, params: Params, version: str) -> Reply | None:
        """The endpoint's answer; None for a path or method it does not have."""
        item, subscription = _id_after(route, SUBSCRIPTION_ITEMS_PATH), _id_after(route, SUBSCRIPTIONS_PATH)
        if method == "GET" and item is not None:
            return self.retrieve_item(item, params, version)
        if method == "GET" and subscription is not None:
            return self.retrieve_subscription(subscription, params, version)
        return None

    def retrieve_item(self, item: str, params: Params, version: str) -> Reply:
        refusal = query_refusal(params, RETRIEVE_PARAMS, expandable=frozenset({"subscription"}))
        if refusal:
            return refusal
        with self._catalog.lock:
            body = self._catalog.item_json(item, version, self._period(item)) if item in self._catalog.items else None
            if body is None:
                return stripe_error(404, f"No such subscription item: '{item}'", code="resource_missing", param="id")
            if "subscription" in params.get("expand", []):
                body["subscription"] = self._subscription(body["subscription"], version)
        return Reply(200, body)

    def retrieve_subscription(self, subscription: str, params: Params, version: str) -> Reply:
        # The fake holds no customers' objects to expand: it refuses every expand.
        refusal = query_refusal(params, RETRIEVE_PARAMS, expandable=frozenset())
        if refusal:
            return refusal
        with self._catalog.lock:
            body = self._subscription(subscription, version)
        if body is None:
            return stripe_error(404, f"No such subscription: '{subscription}'", code="resource_missing", param="id")
        return Reply(200, body)

    def _subscription(self, subscription: str, version: str) -> dict[str, object] | None:
        with self._catalog.lock:
            found = self._catalog.subscriptions.get(subscription)
            if found is None:
                return None
            periods = {item: self._period(item) for item in found.items}
            return self._catalog.subscription_json(subscription, version, periods)
