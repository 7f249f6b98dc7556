"""``GET /v1/usage/{key}`` and ``GET /v1/meter_events/{key}``: the stored answer for one of the caller's keys.

The dedup record is found the way every processing finds it, from the (client, key) and the payload it
was sent with; a lookup has no payload, so it reads the key's delivery plan first, which holds it.
"""

from __future__ import annotations

from typing import Any

from .dedup import DedupLedger, DedupRecordInProgress, DeliveryPlans, PlanUnavailable, dedup_request
from .kinds import RecordKind


class LookupUnavailable(Exception):
    """DynamoDB cannot say right now."""


class StatusLookup:
    def __init__(self, plans: DeliveryPlans, kinds: dict[str, RecordKind], ledgers: dict[str, DedupLedger]) -> None:
        self._plans = plans
        self._kinds = kinds
        self._ledgers = ledgers

    def status(self, kind_name: str, client_id: str, idempotency_key: str) -> dict[str, Any] | None:
        """The key's answer as a caller reads it (with ``status_code`` and ``attempts``), or None: unknown."""
        kind = self._kinds[kind_name]
        try:
            plan = self._plans.find(kind.key_prefix, client_id, idempotency_key)
            if plan is None:
                return None
            stored = self._ledgers[kind_name].answer(dedup_request(client_id, idempotency_key, plan.record))
        except DedupRecordInProgress:
            return {
                "idempotency_key": idempotency_key,
                "status": "in_progress",
                "message": "a request with this key is being processed right now; look again in a few seconds",
            }
        except PlanUnavailable as exc:
            raise LookupUnavailable(str(exc)) from exc
        except Exception as exc:  # botocore's errors come as they are from Powertools' persistence layer
            raise LookupUnavailable(f"cannot read the key's answer: {exc}") from exc
        if stored is None:  # its processing failed (the caller was answered 503) and left no answer
            return None
        delivery = stored.get("delivery") or {}
        found = {**stored["body"], "status_code": stored["status_code"], "attempts": delivery.get("attempts", 1)}
        if kind_name == "meter_event":
            # A cancelled event still has its "reported" answer: say what became of the cancellation too.
            cancellation = self._answer("meter_event_cancel", client_id, idempotency_key)
            if cancellation is not None:
                found["cancellation"] = {**cancellation["body"], "status_code": cancellation["status_code"]}
        return found

    def _answer(self, kind_name: str, client_id: str, idempotency_key: str) -> dict[str, Any] | None:
        """The completed answer of another kind's record for the key, or None."""
        try:
            plan = self._plans.find(self._kinds[kind_name].key_prefix, client_id, idempotency_key)
            if plan is None:
                return None
            return self._ledgers[kind_name].answer(dedup_request(client_id, idempotency_key, plan.record))
        except DedupRecordInProgress:
            return None
        except PlanUnavailable as exc:
            raise LookupUnavailable(str(exc)) from exc
        except Exception as exc:  # botocore's errors come as they are from Powertools' persistence layer
            raise LookupUnavailable(f"cannot read the key's answer: {exc}") from exc
