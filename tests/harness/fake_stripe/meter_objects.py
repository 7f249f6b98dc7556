"""The Billing meter objects the fake holds: meters, accepted meter events, incoming events, the problems
that make an event invalid, and the errors collected for error reports."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass
class Meter:
    """A billing meter: which payload keys carry the customer and the value, and how events aggregate."""

    id: str
    event_name: str
    customer_key: str
    value_key: str
    aggregation: str
    created: int
    status: str = "active"
    deactivated_at: int | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def as_json(self) -> dict[str, Any]:
        """The ``billing.meter`` object, as ``GET /v1/billing/meters/{id}`` answers it."""
        return {
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.aggregation},
            "display_name": self.event_name,
            "event_name": self.event_name,
            "event_time_window": None,
            "livemode": False,
            "status": self.status,
            "status_transitions": {"deactivated_at": self.deactivated_at},
            "updated": self.deactivated_at or self.created,
            "value_settings": {"event_payload_key": self.value_key},
        }


@dataclass(frozen=True)
class Incoming:
    """A meter event as sent (v1 form or v2 stream item), before Stripe judged it."""

    event_name: str
    payload: dict[str, str]
    identifier: str | None
    timestamp: int | None  # None: when Stripe received it


@dataclass(frozen=True)
class Problem:
    """Why Stripe refuses an event: its error code (as error reports give it) and message."""

    code: str
    message: str


@dataclass
class MeterEvent:
    """An accepted meter event, in the ledger: what Stripe aggregates unless it is cancelled."""

    event_name: str
    identifier: str
    customer: str
    value: Decimal
    timestamp: int
    created: int  # when Stripe received it
    payload: dict[str, str]
    via: str  # "v1" (POST /v1/billing/meter_events) or "v2" (the meter event stream)
    seq: int  # order of acceptance
    idempotency_key: str | None = None
    cancelled_at: int | None = None

    def as_v1(self) -> dict[str, Any]:
        """The ``billing.meter_event`` object (it has no id)."""
        return {
            "object": "billing.meter_event",
            "created": self.created,
            "event_name": self.event_name,
            "identifier": self.identifier,
            "livemode": False,
            "payload": dict(self.payload),
            "timestamp": self.timestamp,
        }

    def as_json(self) -> dict[str, Any]:
        """The ledger entry, for ``GET /_fake/meter_events`` (the value as a decimal string)."""
        return {
            **self.as_v1(),
            "customer": self.customer,
            "value": str(self.value),
            "via": self.via,
            "idempotency_key": self.idempotency_key,
            "cancelled_at": self.cancelled_at,
        }


@dataclass
class MeterError:
    """An event found invalid asynchronously, waiting for (or included in) an error report."""

    event_name: str
    meter_id: str | None  # None: no meter has this event_name (a v1.billing.meter.no_meter_found report)
    code: str
    message: str
    identifier: str
    received: int
    reported: bool = False

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
