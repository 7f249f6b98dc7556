"""Stripe's rules for Billing meter events, as the fake applies them: the v1 form parameters, the v2 stream
body, what makes an event invalid (with Stripe's error codes), time windows, values, and v2 error replies."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .meter_objects import Incoming, MeterEvent, Problem
from .rules import DAY, Params, Reply, invalid_empty, parse_integer, stripe_error

METER_EVENTS_PATH = "/v1/billing/meter_events"
METER_EVENT_ADJUSTMENTS_PATH = "/v1/billing/meter_event_adjustments"
METERS_PATH = "/v1/billing/meters/"  # + meter id: what a thin event's related_object.url points at
METER_LIST_PATH = "/v1/billing/meters"
METER_STATUSES = ("active", "inactive")
METER_EVENT_SESSION_PATH = "/v2/billing/meter_event_session"
METER_EVENT_STREAM_PATH = "/v2/billing/meter_event_stream"
EVENTS_PATH = "/v2/core/events/"  # + event id
METER_EVENT_PARAMS = frozenset({"event_name", "payload", "identifier", "timestamp", "expand"})
ADJUSTMENT_PARAMS = frozenset({"event_name", "type", "cancel", "expand"})
AGGREGATIONS = ("sum", "count", "last")
MAX_NAME_LENGTH = 100  # event_name, identifier, cancel[identifier] (Stripe's spec: maxLength 100)
MAX_STREAM_EVENTS = 100
PAST_WINDOW = 35 * DAY  # "within the past 35 calendar days"
FUTURE_WINDOW = 5 * 60  # "up to 5 minutes in the future"
IDENTIFIER_WINDOW = DAY  # "uniqueness within a rolling 24 hour period"
CANCEL_WINDOW = DAY  # "You can only cancel events within 24 hours of Stripe receiving them."
SESSION_SECONDS = 15 * 60
MAX_VALUE_DIGITS = 15
FIRST_VERSION_LIMITING_DIGITS = "2026-04-22"  # 2026-04-22.dahlia refuses values of more than 15 significant digits
_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_HASH_KEY = re.compile(r"(?P<name>[^\[\]]+)\[(?P<key>[^\[\]]+)\]")  # payload[value], cancel[identifier]


@dataclass(frozen=True)
class Adjustment:
    event_name: str
    identifier: str


def _hash(params: Params, name: str) -> dict[str, str]:
    """The ``name[key]=value`` entries of a form, as a dict."""
    entries: dict[str, str] = {}
    for key, value in params.items():
        match = _HASH_KEY.fullmatch(key)
        if match and match["name"] == name and isinstance(value, str):
            entries[match["key"]] = value
    return entries


def _form_refusal(params: Params, allowed: frozenset[str], required: tuple[str, ...]) -> Reply | None:
    """Stripe's refusals of a form's shape, before the endpoint runs: unknown, missing, empty, too long."""
    unknown = sorted(key.split("[", 1)[0] for key in params if key.split("[", 1)[0] not in allowed)
    unknown += sorted(key for key in params if key.startswith("cancel[") and key != "cancel[identifier]")
    if unknown:
        return stripe_error(
            400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )
    for name in required:
        if name not in params and not any(key.startswith(f"{name}[") for key in params):
            return stripe_error(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    for name in ("payload", "cancel"):
        if name in params:  # payload=x or payload[]=x: not a hash
            return stripe_error(400, "Invalid hash", param=name)
    for name, value in params.items():
        if value == "" and name in ("event_name", "identifier", "timestamp", "type", "cancel[identifier]"):
            return invalid_empty(name)
        if name in ("event_name", "identifier", "cancel[identifier]") and len(value) > MAX_NAME_LENGTH:
            return stripe_error(
                400, f"Invalid string: {value}; must be at most {MAX_NAME_LENGTH} characters", param=name
            )
    if not isinstance(params.get("expand", []), list):
        return stripe_error(400, "Invalid array", param="expand")
    return None


def meter_event_params(params: Params) -> Incoming | Reply:
    """``POST /v1/billing/meter_events``'s parameters, or the refusal Stripe gives before the endpoint runs."""
    refusal = _form_refusal(params, METER_EVENT_PARAMS, ("event_name", "payload"))
    if refusal:
        return refusal
    raw_timestamp = params.get("timestamp")
    timestamp = parse_integer(raw_timestamp) if isinstance(raw_timestamp, str) else None
    if raw_timestamp is not None and timestamp is None:
        return stripe_error(
            400, f"Invalid integer: {raw_timestamp}", code="parameter_invalid_integer", param="timestamp"
        )
    identifier = params.get("identifier")
    return Incoming(
        str(params["event_name"]), _hash(params, "payload"), str(identifier) if identifier else None, timestamp
    )


def adjustment_params(params: Params) -> Adjustment | Reply:
    """``POST /v1/billing/meter_event_adjustments``'s parameters, or Stripe's refusal before the endpoint runs."""
    refusal = _form_refusal(params, ADJUSTMENT_PARAMS, ("event_name", "type"))
    if refusal:
        return refusal
    if params["type"] != "cancel":
        return stripe_error(400, "Invalid type: must be one of cancel", param="type")
    identifier = _hash(params, "cancel").get("identifier")
    if identifier is None:
        return stripe_error(
            400, "Missing required param: cancel[identifier].", code="parameter_missing", param="cancel[identifier]"
        )
    return Adjustment(str(params["event_name"]), identifier)


def parse_value(raw: str, *, decimals: bool, limit_digits: bool) -> Decimal | Problem:
    """A payload value: ASCII digits with an optional leading minus (Stripe takes negative usage), and with
    ``decimals`` a fractional part; no exponent, sign ``+``, spaces or ``NaN``. With ``limit_digits`` (API
    versions from 2026-04-22.dahlia) at most 15 significant digits, leading zeros not counted."""
    if not (_DECIMAL if decimals else _WHOLE).fullmatch(raw):
        kind = "number" if decimals else "whole number"
        return Problem("meter_event_invalid_value", f"The value in the event payload must be a {kind}. Received {raw}.")
    value = Decimal(raw)
    if limit_digits and len(value.as_tuple().digits) > MAX_VALUE_DIGITS:
        return Problem(
            "meter_event_value_too_many_digits",
            f"The value in the event payload can have at most {MAX_VALUE_DIGITS} digits. Received {raw}.",
        )
    return value


def timestamp_problem(timestamp: int, received: int) -> Problem | None:
    """A timestamp more than 35 days before, or 5 minutes after, the moment Stripe received the event."""
    earliest, latest = received - PAST_WINDOW, received + FUTURE_WINDOW
    if timestamp < earliest:
        return Problem(
            "timestamp_too_far_in_past",
            "The event timestamp cannot be more than 35 days in past. "
            f"Expected a timestamp greater than or equal to {earliest}.",
        )
    if timestamp > latest:
        return Problem(
            "timestamp_in_future",
            "The event timestamp cannot be more than 5 minutes in future. "
            f"Expected a timestamp less than or equal to {latest}.",
        )
    return None


def no_active_meter(event_name: str) -> Reply:
    """The v1 refusal of an event_name no active meter has (none, or deactivated)."""
    return stripe_error(400, f'No active meter found for event name "{event_name}".')


def duplicate_identifier(identifier: str) -> Reply:
    """The v1 refusal of an identifier Stripe already holds (within its 24-hour window)."""
    reply = stripe_error(400, f"An event already exists with identifier {identifier}.")
    reply.headers["Stripe-Should-Retry"] = "false"
    return reply


def aggregate(formula: str, events: list[MeterEvent]) -> Decimal:
    """A meter's aggregation over ``events``: ``sum`` of values, ``count`` of events, or the ``last`` event's value
    (the latest timestamp; of equal timestamps, the one received last)."""
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        return max(events, key=lambda e: (e.timestamp, e.seq)).value if events else Decimal(0)
    return sum((e.value for e in events), Decimal(0))


def v2_error(status: int, type_: str, code: str, message: str) -> Reply:
    """An error in the v2 shape: ``{"error": {"type", "code", "message", "doc_url"}}``."""
    doc_url = f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}"
    return Reply(status, {"error": {"type": type_, "code": code, "message": message, "doc_url": doc_url}})


def session_expired() -> Reply:
    return v2_error(
        401,
        "temporary_session_expired",
        "billing_meter_event_session_expired",
        "The temporary session token has expired.",
    )


def rfc3339(seconds: float) -> str:
    """``2024-06-01T12:00:00.000Z``, as Stripe's v2 API writes times."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> int | None:
    """Unix seconds of an RFC 3339 time with a zone (``Z`` or an offset), else None."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(moment.timestamp()) if moment.tzinfo is not None and "T" in text else None


def stream_body(body: Any) -> list[Incoming] | Reply:
    """The events of a ``POST /v2/billing/meter_event_stream`` body, or its refusal (checked before the 200;
    what the events mean is checked later, asynchronously)."""

    def invalid(message: str) -> Reply:
        return v2_error(400, "invalid_request_error", "invalid_fields", message)

    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return invalid("events is required and must be an array.")
    if len(events) > MAX_STREAM_EVENTS:
        return invalid(f"events can contain at most {MAX_STREAM_EVENTS} items; received {len(events)}.")
    incoming = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
            return invalid(f"events[{index}].event_name is required and must be a string.")
        payload, identifier, raw_time = event.get("payload"), event.get("identifier"), event.get("timestamp")
        if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
            return invalid(f"events[{index}].payload is required and must be an object of strings.")
        if identifier is not None and not isinstance(identifier, str):
            return invalid(f"events[{index}].identifier must be a string.")
        timestamp = parse_rfc3339(raw_time) if isinstance(raw_time, str) else None
        if raw_time is not None and timestamp is None:
            return invalid(f"events[{index}].timestamp must be an RFC 3339 date-time.")
        incoming.append(Incoming(event["event_name"], dict(payload), identifier or None, timestamp))
    return incoming
