"""Mirroring usage records to meter events, for the migration from legacy usage records to Billing meters.

Stripe's migration guide: keep sending usage records until every subscription has moved to a meter-based
price, so for a while the same usage must reach both APIs. A deployment lists the subscription items (or
legacy prices) to mirror and the meter each goes to; the caller's request does not change. Each copy is its
own record kind, exactly once on its own (its own dedup scope and identifier), and the answer carries
both outcomes: the usage record's as always, the meter event's under ``"mirror"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from . import observability
from .answers import Outcome, error_body
from .config import MirrorTarget, Settings
from .dedup import DeliveryPlans, PlanUnavailable
from .kinds import RecordKind, UsageRecordMirrors
from .models import MirroredUsage, StripeMeterEvent, UsageRecord
from .observability import logger
from .reporting import UNAVAILABLE_RETRY_AFTER_SECONDS, Reporter
from .secrets import SecretUnavailable
from .stripe_gateway import ItemBilling, StripeDeliveryError, StripeGateway

LOOKUP_CACHE_SECONDS = 300  # what Stripe says of items and meters changes rarely, and only by a person


class MirrorLookupUnavailable(Exception):
    """Stripe could not say where a record is mirrored: nothing was reported; the caller retries (503)."""


@dataclass(frozen=True)
class MirrorRefusal:
    """Why a record cannot be mirrored (a deployment's mapping Stripe cannot honour): its ``mirror`` answer."""

    error_type: str
    message: str


class _Cached:
    """A small TTL cache, shared by the threads of a batch."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            found = self._values.get(key)
        if found and found[0] > time.monotonic():
            return found[1]
        value = load()
        with self._lock:
            self._values[key] = (time.monotonic() + self._seconds, value)
        return value


class MirrorMap:
    """Which meter (and customer) a usage record is mirrored to: from the configuration, and where it leaves
    something out, from Stripe (the item's price and customer; the meter's aggregation for ``set``)."""

    def __init__(
        self, settings: Settings, gateway: StripeGateway, plans: DeliveryPlans, kind: UsageRecordMirrors
    ) -> None:
        self._mapping = settings.usage_record_mirror
        self._by_price = any(source.startswith("price_") for source in self._mapping)
        self._gateway = gateway
        self._plans = plans
        self._kind = kind
        self._items = _Cached(LOOKUP_CACHE_SECONDS)
        self._meters = _Cached(LOOKUP_CACHE_SECONDS)

    @property
    def enabled(self) -> bool:
        return bool(self._mapping)

    def target(
        self, client_id: str, record: UsageRecord, timestamp: int, *, replayed: bool
    ) -> MirroredUsage | MirrorRefusal | None:
        """The record's mirror, why it cannot have one, or None (not mirrored); ``timestamp``: the usage
        record's. ``MirrorLookupUnavailable`` when Stripe or DynamoDB cannot say."""
        if replayed:
            # A replay's mirror was (most likely) planned already: its plan says where, without asking Stripe.
            planned = self._planned(client_id, record)
            if planned is not None:
                return planned
        item = record.subscription_item
        configured = self._mapping.get(item)
        if configured is None and not self._by_price:
            return None  # never ask Stripe about items nobody mirrors
        billing = None
        if configured is None or configured.customer is None:
            billing = self._lookup(f"item:{item}", lambda: self._item_billing(item))
            if billing is None:
                return None  # Stripe has no such item: the usage record's own answer says so
        target = configured or (self._mapping.get(billing.price) if billing else None)
        if target is None:
            return None
        customer = target.customer or (billing.customer if billing else None)
        if customer is None:
            return None
        refusal = self._aggregation_refusal(target, record.action)
        if refusal:
            return refusal
        return MirroredUsage(record, target.event_name, customer, timestamp)

    def _planned(self, client_id: str, record: UsageRecord) -> MirroredUsage | None:
        try:
            plan = self._plans.find(self._kind.key_prefix, client_id, record.idempotency_key)
        except PlanUnavailable as exc:
            raise MirrorLookupUnavailable(str(exc)) from exc
        if plan is None or not isinstance(plan.stripe, StripeMeterEvent):
            return None
        customer = self._kind.answer_fields(plan.stripe)["customer"]
        return MirroredUsage(record, plan.stripe.event_name, str(customer), plan.stripe.timestamp)

    def _aggregation_refusal(self, target: MirrorTarget, action: str) -> MirrorRefusal | None:
        """A usage record's ``increment`` adds up, its ``set`` replaces the usage so far: a meter says the same
        only if it sums (``sum``) or keeps the last value (``last``), respectively."""
        try:
            formulas: dict[str, str] = self._lookup("meters", self._gateway.meter_aggregations)
        except MirrorLookupUnavailable as exc:  # a safety net for the mapping: never a reason to hold the record
            logger.warning("meter aggregation unknown; mirror sent unchecked", extra={"cause": str(exc)})
            return None
        formula = formulas.get(target.event_name)
        needed = "last" if action == "set" else "sum"
        if formula is None or formula == needed:
            return None  # no such active meter: Stripe refuses the event itself, with its own reason
        return MirrorRefusal(
            f"mirror_needs_{needed}_aggregation",
            f"action {action!r} {'replaces' if action == 'set' else 'adds to'} the usage so far; meter "
            f"{target.event_name!r} aggregates with {formula!r}, so its total would differ. Mirror {action!r} "
            f"records only to a meter with {needed!r} aggregation.",
        )

    def _item_billing(self, item: str) -> ItemBilling | None:
        try:
            return self._gateway.item_billing(item)
        except StripeDeliveryError as exc:
            if exc.permanent:
                return None
            raise

    def _lookup(self, key: str, load: Callable[[], Any]) -> Any:
        cache = self._meters if key == "meters" else self._items
        try:
            return cache.get(key, load)
        except (StripeDeliveryError, SecretUnavailable) as exc:
            raise MirrorLookupUnavailable(f"cannot read the mirror mapping from Stripe: {exc}") from exc


_UNAVAILABLE = "unavailable"  # a mirror that could be neither reported nor kept: the caller must retry


def report_usage_with_mirrors(
    reporter: Reporter,
    mirrors: MirrorMap,
    kinds: dict[str, RecordKind],
    client_id: str,
    records: Sequence[UsageRecord],
    *,
    received_at: int,
    context: LambdaContext,
) -> list[Outcome]:
    """Report usage records, then each one's mirror; each outcome carries its mirror's answer. A record
    whose mirror could be neither reported nor queued is answered 503 as a whole: the caller's retry
    replays the usage record and gets the mirror done (neither is counted twice)."""

    def report(batch: Sequence[Any], kind: str) -> list[Outcome]:
        return reporter.report_many(client_id, batch, received_at=received_at, context=context, kind=kinds[kind])

    outcomes = report(records, "usage_record")
    if not mirrors.enabled:
        return outcomes
    targets: list[MirroredUsage | MirrorRefusal | str | None] = []
    for record, outcome in zip(records, outcomes, strict=True):
        timestamp = outcome.body.get("timestamp")
        if not isinstance(timestamp, int):  # 409 or 503: nothing was answered for the record yet
            targets.append(None)
            continue
        try:
            targets.append(mirrors.target(client_id, record, timestamp, replayed=outcome.replayed))
        except MirrorLookupUnavailable as exc:
            logger.error(
                "mirror target unavailable", extra={"idempotency_key": record.idempotency_key, "cause": str(exc)}
            )
            targets.append(_UNAVAILABLE)
    mirrored = [(index, t) for index, t in enumerate(targets) if isinstance(t, MirroredUsage)]
    reported = report([t for _, t in mirrored], "usage_record_mirror") if mirrored else []
    mirror_outcomes = dict(zip((index for index, _ in mirrored), reported, strict=True))
    return [
        _with_mirror(outcome, mirror_outcomes.get(index), target)
        for index, (outcome, target) in enumerate(zip(outcomes, targets, strict=True))
    ]


def _with_mirror(outcome: Outcome, mirror: Outcome | None, target: object) -> Outcome:
    key = outcome.body.get("idempotency_key")
    if target == _UNAVAILABLE or (mirror is not None and mirror.status_code == 503):
        message = (
            "the record's meter event mirror could be neither reported nor queued; retry with the same key and "
            "payload (neither copy is counted twice)"
        )
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
        return Outcome(503, error_body("service_unavailable", message, idempotency_key=key), headers=headers)
    if mirror is not None:
        answer: dict[str, Any] = {**mirror.body, "status_code": mirror.status_code}
    elif isinstance(target, MirrorRefusal):
        observability.count("MirrorRefused")
        logger.warning("mirror refused", extra={"idempotency_key": key, "reason": target.message})
        answer = {"status": "rejected", "status_code": 422, **error_body(target.error_type, target.message)}
    else:
        return outcome
    return replace(outcome, body={**outcome.body, "mirror": answer})
