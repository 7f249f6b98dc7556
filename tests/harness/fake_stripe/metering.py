"""The account's Billing meters: meters and customers, the ledger of accepted meter events, the identifiers
Stripe holds, and the errors found asynchronously; how Stripe judges an event."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .meter_objects import Incoming, Meter, MeterError, MeterEvent, Problem
from .meter_rules import (
    AGGREGATIONS,
    FIRST_VERSION_LIMITING_DIGITS,
    IDENTIFIER_WINDOW,
    MAX_NAME_LENGTH,
    aggregate,
    parse_value,
    timestamp_problem,
)


@dataclass(frozen=True)
class Judged:
    """A valid event: its meter, customer, value and timestamp."""

    meter: Meter
    customer: str
    value: Decimal
    timestamp: int


class Metering:
    """Meters (by id), customers, the ledger ``events``, the errors found asynchronously and the identifiers
    Stripe holds for 24 hours; the account's lock guards them all."""

    def __init__(self, lock: threading.RLock, clock: Callable[[], float]) -> None:
        self.lock = lock
        self.clock = clock
        self.decimal_values = True  # False: an account Stripe takes whole numbers only from
        self.unknown_customers_async = False  # True: v1 accepts an unknown customer and reports it later
        self.meters: dict[str, Meter] = {}
        self.customers: set[str] = set()
        self.events: list[MeterEvent] = []
        self.errors: list[MeterError] = []
        self._identifiers: dict[str, int] = {}  # identifier -> when the ledger's event holding it was received

    def now(self) -> int:
        return int(self.clock())

    def add_meter(self, event_name: str, *, customer_key: str, value_key: str, aggregation: str, active: bool) -> Meter:
        if aggregation not in AGGREGATIONS or not 0 < len(event_name) <= MAX_NAME_LENGTH:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; event_name 1 to 100 characters")
        with self.lock:
            current = self.meter_for(event_name)
            if current is not None and current.active:
                raise ValueError(f"the active meter {current.id} already has event_name {event_name!r}")
            meter = Meter(
                f"mtr_test_{secrets.token_hex(12)}", event_name, customer_key, value_key, aggregation, self.now()
            )
            self.meters[meter.id] = meter
            if not active:
                self.deactivate(meter.id)
            return meter

    def deactivate(self, meter: str) -> Meter:
        """Deactivate a meter, named by id or event_name (``KeyError`` if there is none)."""
        with self.lock:
            found = self.meters.get(meter) or self.meter_for(meter)
            if found is None:
                raise KeyError(meter)
            found.status, found.deactivated_at = "inactive", self.now()
            return found

    def meter_for(self, event_name: str) -> Meter | None:
        """The meter of ``event_name``: the active one, else the one added last."""
        with self.lock:
            named = [m for m in self.meters.values() if m.event_name == event_name]
            return next((m for m in named if m.active), named[-1] if named else None)

    def holds(self, identifier: str, at: int) -> bool:
        """Whether an accepted event holds ``identifier`` at ``at`` (Stripe keeps it unique for 24 hours)."""
        with self.lock:
            received = self._identifiers.get(identifier)
            return received is not None and at - received < IDENTIFIER_WINDOW

    def judge(self, incoming: Incoming, received: int, version: str) -> Judged | Problem:
        """Stripe's checks of an event, in order: meter, customer key, value, timestamp, customer."""
        meter = self.meter_for(incoming.event_name)
        if meter is None:
            return Problem("no_meter", f"No meter was found matching event_name {incoming.event_name}.")
        if not meter.active:
            return Problem("archived_meter", f"The meter {meter.id} for event_name {meter.event_name} is inactive.")
        customer = incoming.payload.get(meter.customer_key)
        if not customer:
            return Problem(
                "meter_event_no_customer_defined", f"Customer mapping key {meter.customer_key} not found in payload."
            )
        raw = incoming.payload.get(meter.value_key)
        if raw is None:
            return Problem("meter_event_value_not_found", f"Value mapping key {meter.value_key} not found in payload.")
        limit_digits = version[:10] >= FIRST_VERSION_LIMITING_DIGITS
        value = parse_value(raw, decimals=self.decimal_values, limit_digits=limit_digits)
        if isinstance(value, Problem):
            return value
        timestamp = received if incoming.timestamp is None else incoming.timestamp
        problem = timestamp_problem(timestamp, received)
        if problem:
            return problem
        if customer not in self.customers:
            return Problem("meter_event_customer_not_found", f"No such customer: '{customer}'")
        return Judged(meter, customer, value, timestamp)

    def settle(self, incoming: Incoming, received: int, version: str) -> str:
        """Validate a streamed event: ``accepted`` into the ledger, ``dropped`` (its identifier is held) or
        ``failed`` (an error for the next error report)."""
        with self.lock:
            if incoming.identifier and self.holds(incoming.identifier, received):
                return "dropped"
            identifier = incoming.identifier or str(uuid.uuid4())
            judged = self.judge(incoming, received, version)
            if isinstance(judged, Problem):
                self.collect(incoming.event_name, judged, identifier, received)
                return "failed"
            self.accept(judged, incoming, identifier, received, "v2", None)
            return "accepted"

    def collect(self, event_name: str, problem: Problem, identifier: str, received: int) -> None:
        """An error for the next error report (of the meter, or a no-meter report)."""
        meter = None if problem.code == "no_meter" else self.meter_for(event_name)
        with self.lock:
            self.errors.append(
                MeterError(event_name, meter.id if meter else None, problem.code, problem.message, identifier, received)
            )

    def total(self, event_name: str, customer: str, *, start: int | None = None, end: int | None = None) -> Decimal:
        """The meter's aggregation over the customer's events not cancelled, timestamps in ``[start, end)``."""
        with self.lock:
            meter = self.meter_for(event_name)
            if meter is None:
                raise KeyError(event_name)
            events = [
                e
                for e in self.events
                if e.event_name == event_name
                and e.customer == customer
                and e.cancelled_at is None
                and (start is None or e.timestamp >= start)
                and (end is None or e.timestamp < end)
            ]
            return aggregate(meter.aggregation, events)

    def reset(self) -> None:
        with self.lock:
            self.meters.clear()
            self.customers.clear()
            self.events.clear()
            self.errors.clear()
            self._identifiers.clear()

    def accept(
        self, judged: Judged, incoming: Incoming, identifier: str, received: int, via: str, key: str | None
    ) -> MeterEvent:
        event = MeterEvent(
            incoming.event_name,
            identifier,
            judged.customer,
            judged.value,
            judged.timestamp,
            received,
            dict(incoming.payload),
            via,
            len(self.events),
            key,
        )
        self.events.append(event)
        self._identifiers[identifier] = received
        return event
