"""Error reports as thin events: the ``v2.core.event`` Stripe creates for meter events found invalid
(``v1.billing.meter.error_report_triggered`` per meter, ``v1.billing.meter.no_meter_found`` for event names no
meter has), the notification POSTed to an event destination, signed as Stripe signs, and the full event that
``GET /v2/core/events/{id}`` answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .meter_objects import MeterError
from .meter_rules import METERS_PATH, rfc3339
from .metering import Metering

ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
_NOTIFICATION_FIELDS = ("id", "object", "type", "created", "livemode", "context", "reason", "related_object")


@dataclass(frozen=True)
class Delivery:
    """One POST of a notification: the event, and the status and body the destination answered (0: no answer)."""

    event_id: str
    type: str
    status: int
    body: str = ""


def signature_header(payload: str, secret: str, timestamp: int) -> str:
    """``Stripe-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed by the secret>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_data(errors: list[MeterError]) -> dict[str, Any]:
    """The event's ``data``: a summary and the errors by code, each failing event a sample with its identifier."""
    by_code: dict[str, list[MeterError]] = {}
    for error in errors:
        by_code.setdefault(error.code, []).append(error)
    count = len(errors)
    return {
        "developer_message_summary": f"There is {count} invalid event"
        if count == 1
        else f"There are {count} invalid events",
        "reason": {
            "error_count": count,
            "error_types": [
                {
                    "code": code,
                    "error_count": len(group),
                    "sample_errors": [
                        {"error_message": e.message, "request": {"identifier": e.identifier}} for e in group
                    ],
                }
                for code, group in by_code.items()
            ],
        },
        "validation_start": rfc3339(min(e.received for e in errors)),
        "validation_end": rfc3339(max(e.received for e in errors) + 1),
    }


class ErrorReports:
    """The events created from collected errors, and which of them a destination has acknowledged (2xx)."""

    def __init__(self, metering: Metering) -> None:
        self._metering = metering
        self._lock = metering.lock
        self.events: dict[str, dict[str, Any]] = {}
        self._acknowledged: set[str] = set()

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.events.get(event_id)

    def create_events(self) -> list[dict[str, Any]]:
        """One event per meter with errors not reported yet (and one for event names no meter has)."""
        created = []
        with self._lock:
            groups: dict[str | None, list[MeterError]] = {}
            for error in self._metering.errors:
                if not error.reported:
                    error.reported = True
                    groups.setdefault(error.meter_id, []).append(error)
            for meter_id, errors in groups.items():
                event: dict[str, Any] = {
                    "id": f"evt_test_{secrets.token_hex(16)}",
                    "object": "v2.core.event",
                    "type": NO_METER_FOUND if meter_id is None else ERROR_REPORT_TRIGGERED,
                    "created": rfc3339(self._metering.clock()),
                    "livemode": False,
                    "context": None,
                    "reason": None,
                    "related_object": (
                        {"id": meter_id, "type": "billing.meter", "url": f"{METERS_PATH}{meter_id}"} if meter_id else {}
                    ),
                    "data": event_data(errors),
                }
                self.events[event["id"]] = event
                created.append(event)
        return created

    def deliver(self, url: str, secret: str, *, signed_at: int | None = None) -> list[Delivery]:
        """POST a notification for each new event, and again for each event not acknowledged yet."""
        self.create_events()
        with self._lock:
            pending = [e for e in self.events.values() if e["id"] not in self._acknowledged]
        deliveries = []
        for event in pending:
            notification = {k: event[k] for k in _NOTIFICATION_FIELDS if event.get(k) != {}}
            payload = json.dumps(notification, indent=2)
            status, body = _post(url, payload, signature_header(payload, secret, signed_at or int(time.time())))
            if 200 <= status < 300:
                with self._lock:
                    self._acknowledged.add(event["id"])
            deliveries.append(Delivery(event["id"], event["type"], status, body))
        return deliveries

    def reset(self) -> None:
        with self._lock:
            self.events.clear()
            self._acknowledged.clear()


def _post(url: str, payload: str, signature: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=payload.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
