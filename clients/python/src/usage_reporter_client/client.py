"""``UsageReporterClient``: signed requests, the service's retry rules, batches of any size, typed answers."""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar

from .errors import (
    ConnectionFailed,
    ServiceUnavailable,
    StillInProgress,
    UnexpectedResponse,
    UsageReporterError,
    ValidationRefused,
    refusal,
)
from .errors import error_body as parse_error_body
from .results import (
    STATUSES,
    BatchResult,
    CancelResult,
    MeterEventResult,
    RecordError,
    Result,
    UsageRecordResult,
)
from .retrying import IN_PROGRESS, backoff_delay, error_type, is_retryable, is_retryable_network_error
from .retrying import retry_after_seconds as parse_retry_after
from .signing import Secret
from .transport import RawResponse, check_url, post_signed

MAX_BATCH = 100
"""Records per request (the service's limit): longer batches are split."""

Timestamp: TypeAlias = int | Literal["now"]


class _UsageRecordRequired(TypedDict):
    idempotency_key: str
    subscription_item: str
    quantity: int


class UsageRecord(_UsageRecordRequired, total=False):
    """One usage record, as ``POST /v1/usage`` takes it (``timestamp`` defaults to ``"now"``, ``action`` to
    ``"increment"``)."""

    timestamp: Timestamp
    action: Literal["increment", "set"]


MeterValue: TypeAlias = int | float | Decimal | str
"""A non-negative integer or decimal: sent as a JSON integer, or as a decimal string (never exponents)."""


class _MeterEventRequired(TypedDict):
    idempotency_key: str
    event_name: str
    value: MeterValue


class MeterEvent(_MeterEventRequired, total=False):
    """One Billing meter event, as ``POST /v1/meter_events`` takes it (``customer`` unless ``payload`` has the
    meter's customer key; ``timestamp`` defaults to ``"now"``)."""

    customer: str
    timestamp: Timestamp
    payload: dict[str, str]


R = TypeVar("R", bound=Result)


class _Attempts:
    """The attempts one request (or one part of a batch) may still make."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


def encode_meter_value(value: MeterValue) -> int | str:
    """``12`` stays a JSON integer; decimals become strings as written (``Decimal("0.10")`` -> ``"0.10"``;
    a float by its shortest form, ``1e-07`` -> ``"0.0000001"``), so no binary float or exponent is sent."""
    if isinstance(value, bool):
        raise TypeError("a meter event value cannot be a boolean")
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a meter event value must be finite, not {value!r}")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"a meter event value must be an int, a Decimal or a string, not {type(value).__name__}")


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _meter_event(event: Mapping[str, Any]) -> dict[str, Any]:
    encoded = dict(event)
    if "value" in encoded:
        encoded["value"] = encode_meter_value(encoded["value"])
    return encoded


class UsageReporterClient:
    """A caller of one stripe-usage-reporter deployment.

    ``base_url``: the stack's ``ApiUrl`` (``http://127.0.0.1:3000`` for ``make run``); ``secret``: the client's
    secret, or several during a rotation (each signs, the service accepts any). Each request is sent at most
    ``max_attempts`` times, ``timeout`` seconds each; retries wait as ``Retry-After`` says, at most
    ``max_backoff`` seconds, else ``backoff`` doubling with jitter (see ``retrying``). Safe to share between
    threads.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: Secret,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_backoff: float = 30.0,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0 or max_backoff < 0 or backoff < 0:
            raise ValueError("timeout must be positive; max_backoff and backoff not negative")
        if not client_id:
            raise ValueError("client_id must not be empty")
        self.base_url = check_url(base_url)
        self.client_id = client_id
        self._secret = secret
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.backoff = backoff
        self._sleep = sleep

    def __repr__(self) -> str:  # never the secret
        return f"UsageReporterClient({self.base_url!r}, {self.client_id!r})"

    # -- usage records ---------------------------------------------------------------------------

    def report_usage(
        self,
        idempotency_key: str,
        subscription_item: str,
        quantity: int,
        *,
        timestamp: Timestamp | None = None,
        action: Literal["increment", "set"] | None = None,
    ) -> UsageRecordResult:
        """``POST /v1/usage``. ``reported``, ``queued`` or ``rejected`` (Stripe refused it: a result, not an
        error); ``replayed`` when the service had answered this key and payload before."""
        record: dict[str, Any] = {
            "idempotency_key": idempotency_key,
            "subscription_item": subscription_item,
            "quantity": quantity,
        }
        if timestamp is not None:
            record["timestamp"] = timestamp
        if action is not None:
            record["action"] = action
        return self._single("/v1/usage", record, UsageRecordResult.from_json)

    def report_usage_batch(self, records: Iterable[UsageRecord]) -> BatchResult[UsageRecordResult]:
        """``POST /v1/usage/batch``, 100 records a request: one entry per record, in the order given."""
        return self._batch("/v1/usage/batch", "records", [dict(r) for r in records], UsageRecordResult.from_json)

    # -- meter events ----------------------------------------------------------------------------

    def report_meter_event(
        self,
        idempotency_key: str,
        event_name: str,
        value: MeterValue,
        *,
        customer: str | None = None,
        timestamp: Timestamp | None = None,
        payload: Mapping[str, str] | None = None,
    ) -> MeterEventResult:
        """``POST /v1/meter_events`` (always Stripe's v1 API): ``reported``, ``queued`` or ``rejected``."""
        event: dict[str, Any] = {"idempotency_key": idempotency_key, "event_name": event_name, "value": value}
        if customer is not None:
            event["customer"] = customer
        if timestamp is not None:
            event["timestamp"] = timestamp
        if payload is not None:
            event["payload"] = dict(payload)
        return self._single("/v1/meter_events", _meter_event(event), MeterEventResult.from_json)

    def report_meter_events(self, events: Iterable[MeterEvent]) -> BatchResult[MeterEventResult]:
        """``POST /v1/meter_events/batch``, 100 events a request. Streamed deployments answer ``accepted``
        (Stripe validates later; a refusal then turns the key's answer into ``rejected``)."""
        encoded = [_meter_event(e) for e in events]
        return self._batch("/v1/meter_events/batch", "events", encoded, MeterEventResult.from_json)

    def cancel_meter_event(self, idempotency_key: str) -> CancelResult:
        """``POST /v1/meter_events/cancel``: cancel this client's event with that key (within 24 h).
        ``EventNotReported`` while the event is not in Stripe yet; ``CancelRefused`` for the 422s."""
        body = {"idempotency_key": idempotency_key}
        return self._single("/v1/meter_events/cancel", body, CancelResult.from_json)

    # -- any route -------------------------------------------------------------------------------

    def post(self, path: str, body: bytes) -> RawResponse:
        """POST ``body`` as is to ``path``, signed, with the retry rules: the last answer, whatever it is
        (a ``503`` too, once the attempts run out); ``ConnectionFailed`` if no answer came at all."""
        return self._exchange(path, body, _Attempts(self.max_attempts))

    # -- the machinery ---------------------------------------------------------------------------

    def _exchange(self, path: str, body: bytes, attempts: _Attempts) -> RawResponse:
        """Send ``body`` (the same bytes every time) until a final answer or the last attempt."""
        while True:
            attempts.used += 1
            try:
                response = post_signed(self.base_url + path, body, self.client_id, self._secret, timeout=self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                if not is_retryable_network_error(exc):
                    raise UsageReporterError(f"POST {self.base_url}{path} failed: {_describe(exc)}") from exc
                if attempts.exhausted:
                    message = f"no answer from {self.base_url}{path} in {attempts.used} attempt(s): {_describe(exc)}"
                    raise ConnectionFailed(message, attempts=attempts.used) from exc
                self._pause(attempts.used, None)
                continue
            if attempts.exhausted or not is_retryable(response):
                return response
            self._pause(attempts.used, parse_retry_after(response.header("Retry-After")))

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        self._sleep(backoff_delay(attempt, retry_after, backoff=self.backoff, max_backoff=self.max_backoff))

    def _single(self, path: str, payload: Mapping[str, Any], parse: Callable[..., R]) -> R:
        attempts = _Attempts(self.max_attempts)
        response = self._exchange(path, _encode(payload), attempts)
        if is_retryable(response):
            raise _unavailable(response, attempts.used)
        body = _json_object(response)
        if body is not None and body.get("status") in STATUSES:
            replayed = (response.header("Idempotent-Replayed") or "").lower() == "true"
            return parse(body, response.status, replayed)
        raise refusal(response)

    def _batch(
        self, path: str, collection: str, items: Sequence[Mapping[str, Any]], parse: Callable[..., R]
    ) -> BatchResult[R]:
        _refuse_duplicate_keys(items, collection)
        encoded = [_encode(item) for item in items]
        results: list[R | RecordError] = []
        requests = 0
        for start in range(0, len(encoded), MAX_BATCH):
            part = encoded[start : start + MAX_BATCH]
            try:
                entries, used = self._batch_part(path, collection, part, start, parse)
            except UsageReporterError as exc:
                exc.completed = tuple(results)  # the records of the requests before: processed
                raise
            results.extend(entries)
            requests += used
        return BatchResult.of(results, requests)

    def _batch_part(
        self,
        path: str,
        collection: str,
        part: list[bytes],
        start: int,
        parse: Callable[..., R],
    ) -> tuple[list[R | RecordError], int]:
        """Up to 100 records in one request; the records the service could not answer yet (in progress,
        unavailable) are sent again, alone, with their very same bytes, until answered or out of attempts."""
        attempts = _Attempts(self.max_attempts)
        entries: list[R | RecordError | None] = [None] * len(part)
        pending = list(range(len(part)))
        while True:
            body = b'{"' + collection.encode() + b'":[' + b",".join(part[i] for i in pending) + b"]}"
            response = self._exchange(path, body, attempts)
            positions = [start + i for i in pending]  # in the caller's list, for the errors' field names
            if is_retryable(response):
                raise _unavailable(response, attempts.used)
            answers = _json_object(response)
            results = answers.get("results") if response.status == 200 and answers is not None else None
            if not isinstance(results, list) or len(results) != len(pending):
                raise _renumbered(refusal(response), collection, positions)
            again = []
            for index, answer in zip(pending, results, strict=True):
                entry = _batch_entry(answer, parse, response)
                entries[index] = entry
                if isinstance(entry, RecordError) and entry.retryable:
                    again.append(index)
            if not again or attempts.exhausted:
                return [e for e in entries if e is not None], attempts.used
            pending = again
            self._pause(attempts.used, None)


def _describe(error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def _json_object(response: RawResponse) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _unavailable(response: RawResponse, attempts: int) -> ServiceUnavailable:
    body, kind, message = parse_error_body(response)
    cls = StillInProgress if error_type(response) == IN_PROGRESS else ServiceUnavailable
    return cls(
        f"{message} (after {attempts} attempt(s); send it again later with the same key and payload)",
        attempts=attempts,
        status_code=response.status,
        error_type=kind,
        body=body,
        headers=response.headers,
    )


def _batch_entry(answer: object, parse: Callable[..., R], response: RawResponse) -> R | RecordError:
    if isinstance(answer, dict) and answer.get("status") in STATUSES:
        return parse(answer, int(answer.get("status_code") or 200))
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return RecordError.from_json(answer)
    raise UnexpectedResponse(f"a batch result the contract does not have: {answer!r}", status_code=response.status)


def _renumbered(error: UsageReporterError, collection: str, positions: list[int]) -> UsageReporterError:
    """The error with its fields named by their place in the caller's list (``records[104].quantity``), not in
    the request that carried them (a batch over 100 records is split)."""
    error_json = error.body.get("error")
    fields = error_json.get("fields") if isinstance(error_json, dict) else None
    if not isinstance(error_json, dict) or not isinstance(fields, list):
        return error
    pattern = re.compile(rf"\b{re.escape(collection)}\[(\d+)\]")

    def rename(text: str) -> str:
        return pattern.sub(lambda m: f"{collection}[{_position(positions, int(m.group(1)))}]", text)

    renamed = []
    for field in fields:
        if not isinstance(field, dict):
            continue
        item = {**field, "field": rename(str(field.get("field", "")))}
        if isinstance(item.get("index"), int):
            item["index"] = _position(positions, item["index"])
        renamed.append(item)
    message = rename(error.message)
    body = {**error.body, "error": {**error_json, "fields": renamed, "message": message}}
    return type(error)(
        message,
        status_code=error.status_code,
        error_type=error.error_type,
        body=body,
        headers=error.headers,
        completed=error.completed,
    )


def _position(positions: list[int], index: int) -> int:
    return positions[index] if 0 <= index < len(positions) else index


def _refuse_duplicate_keys(items: Sequence[Mapping[str, Any]], collection: str) -> None:
    """A key twice in one call would be a conflict (or a replay) if the two landed in different requests:
    refuse it before sending anything, as the service refuses it within one request."""
    first_seen: dict[object, int] = {}
    fields = []
    for index, item in enumerate(items):
        key = item.get("idempotency_key")
        if not isinstance(key, str):
            continue
        if key in first_seen:
            fields.append(
                {
                    "field": f"{collection}[{index}].idempotency_key",
                    "message": f"idempotency_key {key!r} is also used by {collection}[{first_seen[key]}]",
                    "type": "duplicate_idempotency_key",
                    "index": index,
                }
            )
        first_seen.setdefault(key, index)
    if fields:
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        body = {"error": {"type": "validation_error", "message": message, "fields": fields}}
        raise ValidationRefused(message, error_type="validation_error", body=body)
