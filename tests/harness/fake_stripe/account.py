"""The test account behind the fake: what Stripe holds for it, and the controls over it, as methods (for
tests) and as the ``/_fake/`` endpoints (for the local tools)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .catalog import Catalog
from .faults import FAULT_KINDS, Fault, FaultQueue
from .idempotency import IdempotencyKeys
from .meter_stream import MeterStream
from .metering import Metering
from .rules import DAY, USAGE_RECORDS_PATH, BillingPeriod, Params, Reply, parse_integer, stripe_error
from .thin_events import ErrorReports


class FakeAccount:
    """Subscription items and their billing periods, the ledger of accepted usage records, the requests
    received, the faults queued, the results saved for Idempotency-Keys, the items' subscriptions and prices
    (``catalog``), and the Billing meters (``metering``, ``meter_stream``, ``error_reports``); one lock guards them
    all."""

    def __init__(
        self,
        *,
        subscription_items: tuple[str, ...],
        clock: Callable[[], float],
        period_seconds: int,
        period_elapsed_seconds: int,
    ) -> None:
        self.clock = clock
        self.period_seconds = period_seconds
        self.period_elapsed_seconds = period_elapsed_seconds
        self.subscription_items: set[str] = set()
        # Items on a price created with a meter (basil and later): no usage records for them.
        self.metered_price_items: set[str] = set()
        self.ledger: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._periods: dict[str, BillingPeriod] = {}
        self._lock = threading.RLock()
        self._faults = FaultQueue(self._lock)
        self._idempotency = IdempotencyKeys(self._lock)
        self.catalog = Catalog(self._lock)
        self.metering = Metering(self._lock, self._time)
        self.meter_stream = MeterStream(self.metering)
        self.error_reports = ErrorReports(self.metering)
        self.add_subscription_items(*subscription_items)

    @property
    def _in_flight(self) -> set[str]:
        """The Idempotency-Keys whose request is still executing."""
        return self._idempotency.in_flight

    def now(self) -> int:
        return int(self.clock())

    def _time(self) -> float:
        """The clock, read late: a test may replace ``clock``."""
        return self.clock()

    def add_subscription_items(
        self,
        *items: str,
        legacy_metered: bool = True,
        customer: str | None = None,
        price: str | None = None,
        subscription: str | None = None,
        meter: str | None = None,
    ) -> None:
        """Items that exist; a new one's period is ``period_seconds`` long, begun ``period_elapsed_seconds`` ago.
        ``legacy_metered=False``: the item's price bills through a meter (``meter``, an id, or none named), so
        Stripe refuses its usage records. The items share one subscription (``subscription``, added to if it
        exists) of ``customer`` and one price (``price``, reused if it exists); ids are generated for those not
        given (``sub_``, ``cus_``, ``price_``). ``ValueError``: a meter for a legacy price, or a price or
        subscription that exists with another meter or customer."""
        now = self.now()
        start = now - self.period_elapsed_seconds
        with self._lock:
            self.catalog.add(
                items,
                now=now,
                legacy_metered=legacy_metered,
                customer=customer,
                price=price,
                subscription=subscription,
                meter=meter,
            )
            for item in items:
                self.subscription_items.add(item)
                if legacy_metered:  # an item added again is on the price this call gave it
                    self.metered_price_items.discard(item)
                else:
                    self.metered_price_items.add(item)
                self._periods.setdefault(item, BillingPeriod(start, start + self.period_seconds))

    def billing_period(self, item: str) -> BillingPeriod:
        """The item's current billing period (``KeyError`` for an unknown item)."""
        with self._lock:
            period = self._periods[item].current(self.now())
            self._periods[item] = period
            return period

    def set_billing_period(self, item: str, start: int, end: int) -> BillingPeriod:
        """Make ``[start, end)`` the item's period (rolled over from there as time passes its end)."""
        if start >= end:
            raise ValueError(f"the period must end after it starts: [{start}, {end})")
        with self._lock:
            if item not in self.subscription_items:
                raise KeyError(item)
            self._periods[item] = BillingPeriod(start, end)
        return self.billing_period(item)

    def roll_over(self, item: str, at: int | None = None) -> BillingPeriod:
        """End the item's current period at ``at`` (default now) and start the next, of the same length, there."""
        with self._lock:
            period = self.billing_period(item)
            at = self.now() if at is None else at
            if not period.start < at <= period.end:
                raise ValueError(f"{at} is not within the current period [{period.start}, {period.end}]")
            self._periods[item] = BillingPeriod(at, at + period.end - period.start)
            return self._periods[item]

    def inject(self, *faults: Fault, times: int = 1) -> None:
        self._faults.add(*faults, times=times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def forget_idempotency_keys(self) -> None:
        """Stripe keeps an Idempotency-Key's result about 24 h: a test says that much time has passed."""
        self._idempotency.forget_saved()

    def reset(self) -> None:
        with self._lock:
            self.subscription_items.clear()
            self.metered_price_items.clear()
            self._periods.clear()
            self.ledger.clear()
            self.requests.clear()
            self._faults.clear()
            self._idempotency.clear()
            self.catalog.reset()
            self.metering.reset()
            self.meter_stream.reset()
            self.error_reports.reset()

    def usage_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith(USAGE_RECORDS_PATH)]

    def total_usage(self, subscription_item: str) -> int:
        """The current period's total as Stripe computes it: ``set`` overwrites its timestamp, ``increment`` adds."""
        by_timestamp: dict[int, int] = {}
        with self._lock:
            if subscription_item not in self._periods:
                return 0
            period = self.billing_period(subscription_item)
            for record in self.ledger:
                ts = record["timestamp"]
                if record["subscription_item"] != subscription_item or not period.start <= ts < period.end:
                    continue
                by_timestamp[ts] = record["quantity"] + (0 if record["action"] == "set" else by_timestamp.get(ts, 0))
        return sum(by_timestamp.values())


def answer_control(account: FakeAccount, method: str, path: str, params: Params) -> Reply:
    """A ``/_fake/`` request: the ledger, a fault to inject, or an item's billing period (no auth)."""

    def text(name: str, default: str | None = None) -> str | None:
        value = params.get(name, default)
        if isinstance(value, list):
            raise ValueError(f"{name} must be a single value")
        return value

    def integer(name: str, default: int | None = None) -> int | None:
        value = text(name)
        number = default if value is None else parse_integer(value)
        if value is not None and number is None:
            raise ValueError(f"{name} must be an integer, not {value!r}")
        return number

    parts = path.strip("/").split("/")
    try:
        if method == "GET" and path == "/_fake/ledger":
            with account._lock:
                return Reply(200, {"object": "list", "data": list(account.ledger)})
        if method == "DELETE" and path == "/_fake/faults":  # the faults not used yet are dropped
            account.clear_faults()
            return Reply(200, {"cleared": True})
        if (
            method == "POST"
            and len(parts) == 4
            and parts[:2] == ["_fake", "subscription_items"]
            and parts[3] == ("meter_price")
        ):  # the item moves to a price billed through a meter: Stripe refuses its usage records from now on
            current = account.catalog.items.get(parts[2])
            subscription = account.catalog.subscriptions.get(current.subscription) if current else None
            account.add_subscription_items(
                parts[2], legacy_metered=False, customer=subscription.customer if subscription else None
            )
            return Reply(200, {"subscription_item": parts[2], "legacy_metered": False})
        if method == "POST" and path == "/_fake/faults":  # e.g. kind=status&status=503&times=3
            fault = Fault(
                kind=text("kind", "status") or "",
                status=integer("status", 500) or 0,
                seconds=float(text("seconds", "0") or ""),
                subscription_item=text("subscription_item"),
            )
            if fault.kind not in FAULT_KINDS or not 0 <= fault.seconds <= DAY:
                raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)} and seconds 0 to {DAY}")
            times = integer("times", 1) or 0
            account.inject(fault, times=times)
            shown = {k: v for k, v in fault.__dict__.items() if k != "until"}
            return Reply(200, {"injected": times, "fault": shown})
        if len(parts) == 4 and parts[:2] == ["_fake", "subscription_items"]:
            item, action = parts[2], parts[3]
            if action == "billing_period" and method == "GET":
                return Reply(200, account.billing_period(item).as_json(item))
            if action == "billing_period" and method == "POST":
                start, end = integer("start"), integer("end")
                if start is None or end is None:
                    raise ValueError("start and end (unix seconds) are required")
                return Reply(200, account.set_billing_period(item, start, end).as_json(item))
            if action == "roll_over" and method == "POST":
                return Reply(200, account.roll_over(item, integer("at")).as_json(item))
    except KeyError as exc:
        return stripe_error(404, f"No such subscription item: {exc}", code="resource_missing", param="id")
    except ValueError as exc:
        return stripe_error(400, str(exc))
    return stripe_error(404, f"Unrecognized request URL ({method}: {path})")
