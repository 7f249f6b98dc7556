"""Record kinds: what differs between a legacy usage record and a Billing meter event.

Everything else (authentication, validation errors, dedup, the delivery plan, queue messages, the
retry worker, dead letters, replays, metrics) is shared and takes a kind, the way Powertools'
idempotency takes a persistence layer. A kind knows its dedup scope, how it derives the Stripe
Idempotency-Key (and a meter event's identifier), the exact Stripe parameters for a record, how to
send them, and which fields its answers carry.
"""

from __future__ import annotations

from typing import Any, Protocol

from .config import MeterKeys, Settings
from .meter_event_models import MeterEvent, ResolvedCancel
from .models import (
    MirroredUsage,
    RecordKindName,
    StripeMeterEvent,
    StripeMeterEventCancel,
    StripeUsage,
    UsageRecord,
    record_digest,
)
from .stripe_gateway import StripeGateway

StripeParamsModel = StripeUsage | StripeMeterEvent | StripeMeterEventCancel


class RecordKind(Protocol):
    name: RecordKindName
    key_prefix: str  # the dedup records' prefix: a key is scoped to its client and its kind
    id_field: str  # the answer's field for what Stripe gave back

    def stripe_idempotency_key(self, client_id: str, idempotency_key: str) -> str: ...

    def stripe_params(self, record: Any, client_id: str, received_at: int) -> StripeParamsModel: ...

    def send(self, gateway: StripeGateway, params: Any, idempotency_key: str) -> str: ...

    def answer_fields(self, params: Any) -> dict[str, Any]: ...


def _identifier_digest(prefix: str, identifier: str) -> str | None:
    """The ``record_digest`` an identifier ``<prefix>-<digest>`` of ours carries, or None for another one."""
    digest = identifier.removeprefix(f"{prefix}-")
    if digest == identifier or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        return None
    return digest


class MeterEventKind(RecordKind, Protocol):
    """A kind whose records are Billing meter events: Stripe names them by identifier in its error reports."""

    def digest_of(self, identifier: str) -> str | None:
        """The ``record_digest`` an identifier of this kind carries, or None for another one."""
        ...


class UsageRecords:
    """Legacy usage records: ``POST /v1/subscription_items/{si}/usage_records``."""

    name: RecordKindName = "usage_record"
    key_prefix = "usage-record"
    id_field = "stripe_id"

    def stripe_idempotency_key(self, client_id: str, idempotency_key: str) -> str:
        return f"usage-record-{record_digest(client_id, idempotency_key)}"

    def stripe_params(self, record: UsageRecord, client_id: str, received_at: int) -> StripeUsage:
        return StripeUsage(
            subscription_item=record.subscription_item,
            quantity=record.quantity,
            timestamp=record.resolved_timestamp(received_at),
            action=record.action,
        )

    def send(self, gateway: StripeGateway, params: StripeUsage, idempotency_key: str) -> str:
        return gateway.create_usage_record(params, idempotency_key)

    def answer_fields(self, params: StripeUsage) -> dict[str, Any]:
        return params.model_dump()


class MeterEvents:
    """Billing meter events: ``POST /v1/billing/meter_events``, with an identifier Stripe keeps unique."""

    name: RecordKindName = "meter_event"
    key_prefix = "meter-event"
    id_field = "stripe_identifier"

    def __init__(self, settings: Settings) -> None:
        self._keys = settings.meter_event_keys
        self._default_keys = MeterKeys.model_validate({})

    def keys(self, event_name: str) -> MeterKeys:
        """The meter's customer and value payload keys (Stripe's defaults unless configured)."""
        return self._keys.get(event_name, self._default_keys)

    def stripe_idempotency_key(self, client_id: str, idempotency_key: str) -> str:
        # Also the event's identifier (at most 100 characters): Stripe refuses a second event with it.
        return f"meter-event-{record_digest(client_id, idempotency_key)}"

    def digest_of(self, identifier: str) -> str | None:
        return _identifier_digest(self.key_prefix, identifier)

    def customer_problem(self, event: MeterEvent) -> str | None:
        """Why the event names no customer, or None."""
        keys = self.keys(event.event_name)
        if event.customer is None and keys.customer_key not in event.payload:
            return f"customer is required (or payload[{keys.customer_key!r}], the meter's customer key)"
        return None

    def stripe_params(self, record: MeterEvent, client_id: str, received_at: int) -> StripeMeterEvent:
        keys = self.keys(record.event_name)
        payload = dict(record.payload)
        if record.customer is not None:
            payload[keys.customer_key] = record.customer
        payload[keys.value_key] = record.value
        return StripeMeterEvent(
            event_name=record.event_name,
            payload=payload,
            identifier=self.stripe_idempotency_key(client_id, record.idempotency_key),
            timestamp=received_at if record.timestamp == "now" else int(record.timestamp),
        )

    def send(self, gateway: StripeGateway, params: StripeMeterEvent, idempotency_key: str) -> str:
        return gateway.create_meter_event(params, idempotency_key)

    def answer_fields(self, params: StripeMeterEvent) -> dict[str, Any]:
        keys = self.keys(params.event_name)
        return {
            "event_name": params.event_name,
            "customer": params.payload.get(keys.customer_key),
            "value": params.payload.get(keys.value_key),
            "timestamp": params.timestamp,
        }


class UsageRecordMirrors:
    """Usage records mirrored to a meter (a migration): ``POST /v1/billing/meter_events``, value = quantity."""

    name: RecordKindName = "usage_record_mirror"
    key_prefix = "usage-record-mirror"
    id_field = "stripe_identifier"

    def __init__(self, meter_events: MeterEvents) -> None:
        self._meter_events = meter_events  # the meters' payload keys

    def stripe_idempotency_key(self, client_id: str, idempotency_key: str) -> str:
        return f"{self.key_prefix}-{record_digest(client_id, idempotency_key)}"  # also the identifier

    def digest_of(self, identifier: str) -> str | None:
        return _identifier_digest(self.key_prefix, identifier)

    def stripe_params(self, record: MirroredUsage, client_id: str, received_at: int) -> StripeMeterEvent:
        keys = self._meter_events.keys(record.event_name)
        return StripeMeterEvent(
            event_name=record.event_name,
            payload={keys.customer_key: record.customer, keys.value_key: str(record.usage.quantity)},
            identifier=self.stripe_idempotency_key(client_id, record.idempotency_key),
            timestamp=record.timestamp,
        )

    def send(self, gateway: StripeGateway, params: StripeMeterEvent, idempotency_key: str) -> str:
        return gateway.create_meter_event(params, idempotency_key)

    def answer_fields(self, params: StripeMeterEvent) -> dict[str, Any]:
        return self._meter_events.answer_fields(params)


class MeterEventCancels:
    """``cancel`` meter event adjustments of a client's earlier events (possible for 24 h after Stripe got them)."""

    name: RecordKindName = "meter_event_cancel"
    key_prefix = "meter-event-cancel"
    id_field = "cancelled_identifier"

    def stripe_idempotency_key(self, client_id: str, idempotency_key: str) -> str:
        return f"meter-event-cancel-{record_digest(client_id, idempotency_key)}"

    def stripe_params(self, record: ResolvedCancel, client_id: str, received_at: int) -> StripeMeterEventCancel:
        return StripeMeterEventCancel(event_name=record.event_name, cancel_identifier=record.identifier)

    def send(self, gateway: StripeGateway, params: StripeMeterEventCancel, idempotency_key: str) -> str:
        return gateway.cancel_meter_event(params, idempotency_key)

    def answer_fields(self, params: StripeMeterEventCancel) -> dict[str, Any]:
        return {"event_name": params.event_name}


def answer_fields(kind: RecordKind, idempotency_key: str, params: StripeParamsModel) -> dict[str, Any]:
    """The record's fields in every answer about it."""
    return {"idempotency_key": idempotency_key, **kind.answer_fields(params)}
