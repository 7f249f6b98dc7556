"""The service's answers, typed: one result per record, and a batch's results with its summary.

A result is an answer about the record itself: ``reported`` (Stripe has it), ``accepted`` (a streamed
meter event: Stripe took it and validates it later), ``queued`` (the service keeps it and reports it
exactly once) or ``rejected`` (Stripe refused it for good: it is on the dead-letter queue). Anything
else (the request was refused, or could not be answered) is an exception from ``errors``, or, for one
record of a batch, a ``RecordError`` in the batch's results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

Status = Literal["reported", "accepted", "queued", "rejected"]
STATUSES: tuple[Status, ...] = ("reported", "accepted", "queued", "rejected")
# A queued record Stripe may already hold: an operator checks Stripe before it is sent again.
HELD_FOR_REVIEW = frozenset({"stripe_idempotency_mismatch", "needs_review"})


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Reason:
    """Why a record is ``queued`` (Stripe unreachable, 5xx, 429...)."""

    type: str
    message: str | None = None
    code: str | None = None
    http_status: int | None = None

    @property
    def held_for_review(self) -> bool:
        """Stripe may already hold the record: it waits for an operator, and is counted at most once."""
        return self.type in HELD_FOR_REVIEW

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reason | None:
        if not data:
            return None
        return cls(str(data.get("type", "")), _str(data, "message"), _str(data, "code"), _int(data, "http_status"))


@dataclass(frozen=True)
class Refusal:
    """Why a record is ``rejected``: Stripe's code and message (or the service's, e.g.
    ``usage_records_unsupported`` for an item on a meter-based price)."""

    type: str
    message: str
    code: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refusal | None:
        if not data:
            return None
        return cls(str(data.get("type", "")), str(data.get("message", "")), _str(data, "code"))


@dataclass(frozen=True, kw_only=True)
class Result:
    """What the service says about one record (the fields common to every kind)."""

    status: Status
    status_code: int
    idempotency_key: str | None
    replayed: bool = False
    """The service's stored answer to an earlier request with this key and payload (Stripe not called again)."""
    message: str | None = None
    reason: Reason | None = None
    """Set when ``queued``."""
    error: Refusal | None = None
    """Set when ``rejected``."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The answer's JSON as received, for fields this version does not know yet."""

    @classmethod
    def _common(cls, body: Mapping[str, Any], status_code: int, replayed: bool) -> dict[str, Any]:
        status = body.get("status")
        if status not in STATUSES:
            raise ValueError(f"not a record's answer: status {status!r}")
        return {
            "status": status,
            "status_code": _int(body, "status_code") or status_code,
            "idempotency_key": _str(body, "idempotency_key"),
            "replayed": replayed or body.get("replayed") is True,
            "message": _str(body, "message"),
            "reason": Reason.from_json(_dict(body, "reason")),
            "error": Refusal.from_json(_dict(body, "error")),
            "raw": body,
        }


_M = TypeVar("_M", bound="MeterEventResult")


@dataclass(frozen=True, kw_only=True)
class MeterEventResult(Result):
    """A Billing meter event's answer (``POST /v1/meter_events`` and batches)."""

    event_name: str | None = None
    customer: str | None = None
    value: str | None = None
    """As sent to Stripe (a decimal string)."""
    timestamp: int | None = None
    stripe_identifier: str | None = None

    @classmethod
    def from_json(cls: type[_M], body: Mapping[str, Any], status_code: int = 0, replayed: bool = False) -> _M:
        value = body.get("value")
        return cls(
            **cls._common(body, status_code, replayed),
            event_name=_str(body, "event_name"),
            customer=_str(body, "customer"),
            value=None if value is None or isinstance(value, bool) else str(value),
            timestamp=_int(body, "timestamp"),
            stripe_identifier=_str(body, "stripe_identifier"),
        )


@dataclass(frozen=True, kw_only=True)
class MirrorResult(MeterEventResult):
    """A usage record's copy to a meter during a migration (``mirror`` in its answer)."""


@dataclass(frozen=True, kw_only=True)
class UsageRecordResult(Result):
    """A usage record's answer (``POST /v1/usage`` and batches)."""

    subscription_item: str | None = None
    quantity: int | None = None
    timestamp: int | None = None
    """The unix time Stripe was (or will be) sent: ``"now"`` resolved once, when the key was first seen."""
    action: str | None = None
    stripe_id: str | None = None
    mirror: MirrorResult | None = None
    """When the deployment mirrors the item to a meter: the copy's own outcome."""

    @classmethod
    def from_json(cls, body: Mapping[str, Any], status_code: int = 0, replayed: bool = False) -> UsageRecordResult:
        mirror = _dict(body, "mirror")
        return cls(
            **cls._common(body, status_code, replayed),
            subscription_item=_str(body, "subscription_item"),
            quantity=_int(body, "quantity"),
            timestamp=_int(body, "timestamp"),
            action=_str(body, "action"),
            stripe_id=_str(body, "stripe_id"),
            mirror=MirrorResult.from_json(mirror) if mirror else None,
        )


@dataclass(frozen=True, kw_only=True)
class CancelResult(Result):
    """A meter event cancellation's answer (``POST /v1/meter_events/cancel``)."""

    event_name: str | None = None
    cancelled_identifier: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], status_code: int = 0, replayed: bool = False) -> CancelResult:
        return cls(
            **cls._common(body, status_code, replayed),
            event_name=_str(body, "event_name"),
            cancelled_identifier=_str(body, "cancelled_identifier"),
        )


# The service's per-record errors in a batch that a later request with the same record may resolve.
RETRYABLE_RECORD_ERRORS = frozenset({"idempotency_in_progress", "service_unavailable"})


@dataclass(frozen=True, kw_only=True)
class RecordError:
    """One record of a batch the service could not answer for: ``idempotency_conflict`` (the key was
    used with another payload), or ``idempotency_in_progress`` / ``service_unavailable`` once the
    client's retries ran out (send the record again later, with the same key and payload)."""

    idempotency_key: str | None
    status_code: int
    error_type: str
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def retryable(self) -> bool:
        return self.error_type in RETRYABLE_RECORD_ERRORS

    @classmethod
    def from_json(cls, body: Mapping[str, Any], status_code: int = 0) -> RecordError:
        error = _dict(body, "error")
        return cls(
            idempotency_key=_str(body, "idempotency_key") or _str(error, "idempotency_key"),
            status_code=_int(body, "status_code") or status_code,
            error_type=str(error.get("type", "unknown")),
            message=str(error.get("message", "")),
            raw=body,
        )


R = TypeVar("R", bound=Result)


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    """One entry per record, in the order given (whatever the number of requests it took), and the
    counts by status (a ``RecordError`` counts under its ``error_type``, as the service counts it)."""

    results: list[R | RecordError]
    summary: dict[str, int]
    mirror_summary: dict[str, int] | None = None
    requests: int = 0
    """HTTP requests sent (a batch over 100 records is split; retries count)."""

    @property
    def errors(self) -> list[RecordError]:
        return [result for result in self.results if isinstance(result, RecordError)]

    @classmethod
    def of(cls, results: Iterable[R | RecordError], requests: int) -> BatchResult[R]:
        entries = list(results)
        summary: Counter[str] = Counter(r.error_type if isinstance(r, RecordError) else r.status for r in entries)
        mirrors: Counter[str] = Counter(
            r.mirror.status for r in entries if isinstance(r, UsageRecordResult) and r.mirror is not None
        )
        return cls(entries, dict(summary), dict(mirrors) or None, requests)
