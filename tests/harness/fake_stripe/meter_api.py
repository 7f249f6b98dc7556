"""The Billing meter endpoints over the account, once a request passed authentication, faults and the version
check: v1 meter events and adjustments (with Idempotency-Keys), a meter, v2 sessions, the stream, events."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from .faults import Fault
from .idempotency import IdempotencyKeys
from .meter_objects import Incoming, MeterEvent
from .meter_rules import (
    CANCEL_WINDOW,
    EVENTS_PATH,
    METER_EVENT_ADJUSTMENTS_PATH,
    METER_EVENT_SESSION_PATH,
    METER_EVENT_STREAM_PATH,
    METER_EVENTS_PATH,
    METER_LIST_PATH,
    METER_STATUSES,
    METERS_PATH,
    Adjustment,
    adjustment_params,
    duplicate_identifier,
    meter_event_params,
    no_active_meter,
    v2_error,
)
from .meter_stream import MeterStream
from .metering import Judged, Metering
from .query_rules import LIST_PARAMS, list_object, page_params, query_refusal
from .rules import Params, Reply, stripe_error
from .thin_events import ErrorReports

METER_ROUTES = (
    METER_EVENTS_PATH,
    METER_EVENT_ADJUSTMENTS_PATH,
    METER_EVENT_SESSION_PATH,
    METER_EVENT_STREAM_PATH,
    METER_LIST_PATH,
)


def is_meter_route(route: str) -> bool:
    return route in METER_ROUTES or route.startswith((METERS_PATH, EVENTS_PATH))


class MeterApi:
    """What each meter endpoint answers; the v1 POSTs' answers are saved for their Idempotency-Key."""

    def __init__(
        self, metering: Metering, stream: MeterStream, reports: ErrorReports, idempotency: IdempotencyKeys
    ) -> None:
        self._metering = metering
        self._stream = stream
        self._reports = reports
        self._idempotency = idempotency

    def answer(
        self, method: str, route: str, params: Params, document: Any, key: str | None, version: str, slow: Fault | None
    ) -> Reply | None:
        """The endpoint's answer; None for a path or method it does not have."""

        def record(incoming: Incoming) -> Reply:
            if slow:
                slow.pause()
            return self.record(incoming, version=version, key=key)

        def cancel(adjustment: Adjustment) -> Reply:
            if slow:
                slow.pause()
            return self.cancel(adjustment)

        if method == "POST" and route == METER_EVENTS_PATH:
            return self._idempotency.run(key, route, params, validate=meter_event_params, endpoint=record)
        if method == "POST" and route == METER_EVENT_ADJUSTMENTS_PATH:
            return self._idempotency.run(key, route, params, validate=adjustment_params, endpoint=cancel)
        if method == "POST" and route == METER_EVENT_SESSION_PATH:
            return self._stream.open_session()
        if method == "POST" and route == METER_EVENT_STREAM_PATH:
            return self._stream.receive(document, version)
        if method == "GET" and route == METER_LIST_PATH:
            return self.list_meters(params)
        if method == "GET" and route.startswith(METERS_PATH):
            with self._metering.lock:
                meter = self._metering.meters.get(route.removeprefix(METERS_PATH))
            if meter is None:
                return stripe_error(
                    404,
                    f"No such billing meter: '{route.removeprefix(METERS_PATH)}'",
                    code="resource_missing",
                    param="id",
                )
            return Reply(200, meter.as_json())
        if method == "GET" and route.startswith(EVENTS_PATH):
            event = self._reports.event(route.removeprefix(EVENTS_PATH))
            if event is None:
                return v2_error(
                    404,
                    "invalid_request_error",
                    "resource_missing",
                    f"No such event: '{route.removeprefix(EVENTS_PATH)}'",
                )
            return Reply(200, event)
        return None

    def list_meters(self, params: Params) -> Reply:
        """``GET /v1/billing/meters``: the meters newest first (of one ``status``, if given), a page at a time."""
        refusal = query_refusal(params, LIST_PARAMS | {"status"}, expandable=frozenset())
        if refusal:
            return refusal
        status = params.get("status")
        if status is not None and status not in METER_STATUSES:
            return stripe_error(400, "Invalid status: must be one of active or inactive", param="status")
        page = page_params(params)
        if isinstance(page, Reply):
            return page
        with self._metering.lock:
            added_last_first = reversed(list(self._metering.meters.values()))
            # Newest first; of meters created in the same second, the one added last first (a stable sort).
            ordered = [m.as_json() for m in sorted(added_last_first, key=lambda m: m.created, reverse=True)]
        return list_object(
            ordered, page, METER_LIST_PATH, keep=lambda m: status is None or m["status"] == status, noun="billing meter"
        )

    def record(self, incoming: Incoming, *, version: str, key: str | None) -> Reply:
        """``POST /v1/billing/meter_events`` once its parameters are valid: Stripe's synchronous checks."""
        metering = self._metering
        with metering.lock:
            now = metering.now()
            meter = metering.meter_for(incoming.event_name)
            if meter is None or not meter.active:
                return no_active_meter(incoming.event_name)
            if incoming.identifier and metering.holds(incoming.identifier, now):
                return duplicate_identifier(incoming.identifier)
            identifier = incoming.identifier or str(uuid.uuid4())
            judged = metering.judge(incoming, now, version)
            if isinstance(judged, Judged):
                return Reply(200, metering.accept(judged, incoming, identifier, now, "v1", key).as_v1())
            if judged.code != "meter_event_customer_not_found" or not metering.unknown_customers_async:
                return stripe_error(400, judged.message)
            metering.collect(incoming.event_name, judged, identifier, now)  # accepted now, refused later
            timestamp = now if incoming.timestamp is None else incoming.timestamp
            seen = MeterEvent(
                incoming.event_name, identifier, "", Decimal(0), timestamp, now, incoming.payload, "v1", 0
            )
            return Reply(200, seen.as_v1())

    def cancel(self, adjustment: Adjustment) -> Reply:
        """``POST /v1/billing/meter_event_adjustments`` once its parameters are valid: cancel an event received
        within the last 24 hours (applied at once; the answer says ``pending``, as Stripe's does)."""
        name, identifier = adjustment.event_name, adjustment.identifier
        metering = self._metering
        with metering.lock:
            now = metering.now()
            meter = metering.meter_for(name)
            if meter is None or not meter.active:
                return no_active_meter(name)
            matches = [e for e in metering.events if e.identifier == identifier and e.event_name == name]
            if not matches:
                return stripe_error(
                    400, f'No meter event with identifier {identifier} was found for event name "{name}".'
                )
            event = matches[-1]
            if event.cancelled_at is not None:
                return stripe_error(400, f"The meter event with identifier {identifier} has already been canceled.")
            if now - event.created >= CANCEL_WINDOW:
                return stripe_error(
                    400,
                    "You can only cancel events within 24 hours of Stripe receiving them. The event with identifier "
                    f"{identifier} was received at {event.created}.",
                )
            event.cancelled_at = now
        adjustment_object = {
            "object": "billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "event_name": name,
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
        return Reply(200, adjustment_object)
