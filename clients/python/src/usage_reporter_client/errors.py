"""Typed errors: the service refused the request (``RequestRefused`` and its kinds: never retried, the
same request would get the same answer), or could not answer it before the retries ran out
(``ServiceUnavailable``: send it again later with the same key and payload, it is never counted twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .retrying import retry_after_seconds
from .transport import RawResponse


@dataclass(frozen=True)
class FieldError:
    """One field the service named: ``quantity``, or ``records[3].quantity`` with its ``index``."""

    field: str
    message: str
    type: str
    index: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldError:
        index = data.get("index")
        return cls(
            str(data.get("field", "")),
            str(data.get("message", "")),
            str(data.get("type", "")),
            index if isinstance(index, int) else None,
        )


class UsageReporterError(Exception):
    """Every error of this library. ``status_code`` is None when no HTTP answer was had (or needed)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        completed: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.body: Mapping[str, Any] = body or {}
        self.headers: Mapping[str, str] = headers or {}
        self.completed: tuple[object, ...] = tuple(completed)
        """For a batch split into several requests: the results of the records before the failing request
        (they were processed; sending the whole batch again replays them)."""

    def __str__(self) -> str:
        prefix = f"{self.status_code} " if self.status_code else ""
        kind = f"{self.error_type}: " if self.error_type else ""
        return f"{prefix}{kind}{self.message}"


class RequestRefused(UsageReporterError):
    """A 4xx: nothing was stored, and the same request gets the same answer (but for ``Throttled``)."""

    @property
    def fields(self) -> list[FieldError]:
        """The fields the service named (validation, forbidden items or event names)."""
        error = self.body.get("error")
        raw = error.get("fields") if isinstance(error, dict) else None
        return [FieldError.from_json(f) for f in raw if isinstance(f, dict)] if isinstance(raw, list) else []


class BadRequest(RequestRefused):
    """400 ``invalid_json``: the body is not JSON the service can read."""


class Unauthorized(RequestRefused):
    """401: unknown client, wrong secret, or a signature more than 300 s off the service's clock."""


class Forbidden(RequestRefused):
    """403: the client may not report to that subscription item (or send that event name); see ``fields``.
    A batch with one such record is refused whole."""


class NotFound(RequestRefused):
    """404: no such route (check the base URL)."""


class Conflict(RequestRefused):
    """409 ``idempotency_conflict``: this key was already used with a different payload (a key is bound to
    its first payload). Use a new key for a new record."""


class EventNotReported(RequestRefused):
    """409 ``event_not_reported`` (a cancellation): the event is not in Stripe yet; cancel it once a replay of
    the event answers ``reported``."""


class PayloadTooLarge(RequestRefused):
    """413: the body is over 256 KiB."""


class UnsupportedMediaType(RequestRefused):
    """415: not ``application/json`` in UTF-8 (this client always sends that)."""


class ValidationRefused(RequestRefused):
    """422 ``validation_error``: the body fails validation; every bad field is in ``fields``. Also raised
    before sending, with no ``status_code``, for what the client checks itself (a key twice in a batch)."""


class CancelRefused(RequestRefused):
    """422 for a cancellation: ``unknown_idempotency_key``, ``nothing_to_cancel`` or ``cancel_window_passed``."""


class Throttled(RequestRefused):
    """429 from API Gateway's throttle (the stack's default: 100 requests/s, bursts of 200). Nothing was
    processed; not retried by this client: slow down, then send it again (``retry_after`` if it said)."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(next((v for k, v in self.headers.items() if k.lower() == "retry-after"), None))


class ServiceUnavailable(UsageReporterError):
    """The retries ran out on ``503``, ``409 idempotency_in_progress`` or network errors. The record may or
    may not be processed: send it again later with the same key and payload (it is never counted twice)."""

    def __init__(self, message: str, *, attempts: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.attempts = attempts


class StillInProgress(ServiceUnavailable):
    """The key was still being processed (``409 idempotency_in_progress``) at the last attempt."""


class ConnectionFailed(ServiceUnavailable):
    """No answer at the last attempt: connection refused or reset, a timeout, DNS... (``__cause__``)."""


class UnexpectedResponse(UsageReporterError):
    """An answer the contract does not have (not JSON, an unknown status): a proxy, or the wrong URL."""


_BY_STATUS: dict[int, type[RequestRefused]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: Throttled,
}
_BY_TYPE: dict[str, type[RequestRefused]] = {
    "idempotency_conflict": Conflict,
    "event_not_reported": EventNotReported,
    "validation_error": ValidationRefused,
    "unknown_idempotency_key": CancelRefused,
    "nothing_to_cancel": CancelRefused,
    "cancel_window_passed": CancelRefused,
}


def error_body(response: RawResponse) -> tuple[Mapping[str, Any], str | None, str]:
    """The parsed body, ``error.type`` and the message of an error answer (API Gateway's own answers are
    ``{"message": ...}``)."""
    try:
        body = response.json()
    except ValueError:
        return {}, None, response.body[:200].decode("utf-8", "replace") or f"HTTP {response.status}"
    if not isinstance(body, dict):
        return {}, None, f"HTTP {response.status}"
    error = body.get("error")
    if isinstance(error, dict):
        return body, str(error.get("type")) if error.get("type") else None, str(error.get("message", ""))
    return body, None, str(body.get("message") or f"HTTP {response.status}")


def refusal(response: RawResponse, *, completed: Sequence[object] = ()) -> UsageReporterError:
    """The exception for a definite answer that is not a record's result."""
    body, error_type, message = error_body(response)
    status = response.status
    kwargs: dict[str, Any] = {
        "status_code": status,
        "error_type": error_type,
        "body": body,
        "headers": response.headers,
        "completed": completed,
    }
    if 400 <= status < 500:
        cls = _BY_TYPE.get(error_type or "") or _BY_STATUS.get(status, RequestRefused)
        return cls(message, **kwargs)
    return UnexpectedResponse(message, **kwargs)
