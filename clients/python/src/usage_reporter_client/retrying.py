"""Which answers are retried, and how long to wait before the next attempt.

Retried, with the same idempotency key and the very same body bytes (signed afresh each time), which the
service answers with its first answer and never counts twice:

- ``409`` with ``error.type = idempotency_in_progress``: the key is being processed right now;
- ``503``: the service could not take the record (or record its outcome);
- ``500``, ``502``, ``504``: API Gateway's own answers when the function crashed, answered badly or timed
  out. The service itself never answers them; like a network error, the outcome is unknown;
- network errors: connection refused or reset, a timeout, an answer cut short.

Never retried: any other answer (another ``4xx`` is the same for the same request). The wait honours
``Retry-After`` (capped at ``max_backoff``), otherwise it is exponential (``backoff`` doubling, capped) with
jitter; attempts are bounded.
"""

from __future__ import annotations

import email.utils
import http.client
import random
import ssl
import time
import urllib.error
from collections.abc import Callable

from .transport import RawResponse

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
IN_PROGRESS = "idempotency_in_progress"


def error_type(response: RawResponse) -> str | None:
    """The ``error.type`` of an answer, if it has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


def is_retryable(response: RawResponse) -> bool:
    """Whether the same request may get another answer later (and is safe to send again)."""
    if response.status in RETRYABLE_STATUSES:
        return True
    return response.status == 409 and error_type(response) == IN_PROGRESS


def is_retryable_network_error(error: BaseException) -> bool:
    """A network failure worth another attempt (not a certificate the client refuses, nor a bad URL)."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, ssl.SSLCertVerificationError | ssl.CertificateError):
        return False
    return isinstance(reason, OSError | http.client.HTTPException)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    *,
    backoff: float,
    max_backoff: float,
    jitter: Callable[[], float] = random.random,
) -> float:
    """The wait after failed attempt number ``attempt`` (1, 2, ...): ``Retry-After`` capped at ``max_backoff``,
    else ``backoff * 2 ** (attempt - 1)`` capped, of which a random half is waited (callers that failed
    together do not retry together)."""
    if retry_after is not None:
        return max(0.0, min(retry_after, max_backoff))
    ceiling = min(max_backoff, backoff * 2.0 ** min(max(attempt - 1, 0), 32))
    return ceiling / 2 + jitter() * ceiling / 2
