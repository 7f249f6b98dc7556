"""A local fake of the part of Stripe this service uses, served over real HTTP.

It answers what Stripe answers where it matters for billing correctness, checked against Stripe's
published OpenAPI spec (stripe/openapi) and Stripe's documented behaviour. It keeps a ledger of
accepted usage records, which is what tests assert on.

**The endpoint.** ``POST /v1/subscription_items/{si}/usage_records``, Bearer auth, form-encoded
parameters (a body of another Content-Type is not read, as Stripe's v1 API reads only forms):
``quantity`` (required integer, at least 0), ``timestamp`` (``now``, the default, or an integer),
``action`` (``increment``, the default, or ``set``) and ``expand`` (a form array, ``expand[]=`` or
``expand[0]=``; accepted and not checked, since the service never expands anything). Integers are
parsed strictly: ASCII digits with an optional leading minus, at most 19 digits (``str.isdigit()``
would take ``²``, which ``int()`` refuses).

**API versions.** ``Stripe-Version`` (or, without the header, the account's default version,
``2025-03-31.basil`` as for a new account) must be one Stripe has: ``YYYY-MM-DD`` (a real date)
before 2024-09-30, or ``YYYY-MM-DD.<release>`` with the release of that date (``STRIPE_RELEASES``),
and not in the future. Anything else is refused as Stripe refuses it: 400 ``invalid_request_error``,
``Invalid Stripe API version: <version>``. The usage-record API was removed in ``2025-03-31.basil``:
under that version or a later one the path does not exist, and the answer is the one Stripe gives for
any path a version does not know: 404 ``invalid_request_error`` ``Unrecognized request URL (POST: ...)``.

**Billing periods.** Each subscription item has a current billing period ``[start, end)``, by default
30 days long and started 15 days before the item was added. Once the fake's clock passes its end, the
next period of the same length is the current one. ``set_billing_period`` and ``roll_over`` (end the
current period now, as when time passes its end) change it, also over HTTP (below). A timestamp
(``now`` is the fake's clock) is refused, 400 ``invalid_request_error`` with ``param: timestamp`` and
Stripe's message (no code, as Stripe sends none), when it is ahead of the fake's clock (Stripe's spec:
"must not be in the future"; ``future_tolerance_seconds`` can allow drift), before the period's start,
or not before its end.

**Errors**, always ``{"error": {"type", "code", "message", "param"}}`` (``code``/``param`` when Stripe
sends them) with a ``Request-Id`` header. Codes are from Stripe's published enum; messages are Stripe's
where known (the period-start refusal, versions, unknown URL, missing/unknown/empty parameters,
idempotency); the future/period-end timestamp and negative-quantity wordings are the fake's own.

====  =====================  ===========================  ==========  =============================  =====
HTTP  type                   code                         param       when                           saved
====  =====================  ===========================  ==========  =============================  =====
401   invalid_request_error                                           wrong API key                  no
400   invalid_request_error                                           malformed/unknown version      no
404   invalid_request_error                                           unknown path (also basil+)     no
400   invalid_request_error  parameter_unknown            the name    a parameter the API lacks      no
400   invalid_request_error  parameter_missing            quantity    no quantity                    no
400   invalid_request_error  parameter_invalid_empty      the name    an empty value                 no
400   invalid_request_error  parameter_invalid_integer    the name    not an integer, or quantity<0  no
400   invalid_request_error                               action      not increment/set              no
400   invalid_request_error                               expand      expand not an array            no
404   invalid_request_error  resource_missing             id          unknown subscription item      yes
400   invalid_request_error                               timestamp   outside the period, future     yes
409   invalid_request_error  idempotency_key_in_use                   the key is still in flight     no
400   idempotency_error                                               the key with other parameters  no
500   api_error                                                       the fake itself failed (bug)   no
====  =====================  ===========================  ==========  =============================  =====

**Idempotency**, as Stripe documents it: "Results are only saved if an API endpoint started
executing. If incoming parameters failed validation, or the request conflicted with another that was
executing concurrently, no idempotent result is saved." So refusals before the endpoint runs
(authentication, version, path, parameter validation, injected ``status``/``reset`` faults) are not
saved: the same key may be sent again, with any parameters. Once the endpoint ran, its answer (200,
``resource_missing``, a timestamp outside the period) is saved and replayed for the same key with
``Idempotent-Replayed: true`` and ``Original-Request``; the same key with other parameters (or on
another path) is 400 ``idempotency_error``; a key whose request is still executing is 409.

**Faults** to inject: status codes (5xx, 429, with or without ``Stripe-Should-Retry``), connection
resets, latency before the endpoint, a slow endpoint (the key in flight meanwhile), and failures
*after* the record was written (the nasty case).

**Control endpoints** (no auth; tests call the methods directly): ``GET /_fake/ledger``;
``POST /_fake/faults`` (``kind``, ``status``, ``seconds``, ``times``, ``subscription_item``);
``GET|POST /_fake/subscription_items/<si>/billing_period`` (POST with ``start`` and ``end``, unix
seconds); ``POST /_fake/subscription_items/<si>/roll_over`` (optional ``at``, default now). Period
answers are ``{"subscription_item", "current_period_start", "current_period_end"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

USAGE_RECORDS_PATH = "/usage_records"
FIRST_VERSION_WITHOUT_USAGE_RECORDS = "2025-03-31"
ACCOUNT_DEFAULT_VERSION = "2025-03-31.basil"
DAY = 86400
# Stripe's named releases: (name, first version, last version or None for the current release).
# Versions before the first one are plain dates (e.g. 2024-06-20). Dates between two releases are no version.
STRIPE_RELEASES: tuple[tuple[str, str, str | None], ...] = (
    ("acacia", "2024-09-30", "2025-02-24"),
    ("basil", "2025-03-31", "2025-08-27"),
    ("clover", "2025-09-30", "2026-02-25"),
    ("dahlia", "2026-03-25", "2026-08-26"),
    ("endive", "2026-09-30", None),
)
FAULT_KINDS = ("status", "reset", "delay", "slow", "after_commit")
USAGE_RECORD_PARAMS = frozenset({"quantity", "timestamp", "action", "expand"})
_VERSION = re.compile(r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.(?P<name>[a-z]+))?")
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: "²" and "٣" are str.isdigit() but not integers
_FORM_ARRAY_KEY = re.compile(r"(?P<name>[^\[\]]+)\[[0-9]*\]")  # expand[] or expand[0]
_INT64 = range(-(2**63), 2**63)
_TIMESTAMP_REFUSED = "Cannot create the usage record with this timestamp because timestamps must "

Params = dict[str, str | list[str]]


@dataclass
class Fault:
    """What to do instead of (or around) the next matching request.

    kind: ``status`` (answer ``status`` without running the endpoint), ``reset`` (drop the connection),
    ``delay`` (sleep ``seconds`` before the request reaches the endpoint, then run normally), ``slow``
    (the endpoint itself takes ``seconds``, or until ``until`` is set: its Idempotency-Key is in flight
    meanwhile), ``after_commit`` (run the endpoint, keep its result, then answer ``status`` or drop the
    connection if ``status`` is 0).
    """

    kind: str
    status: int = 500
    seconds: float = 0.0
    should_retry: bool | None = None
    subscription_item: str | None = None  # only requests for this item; None: any
    until: threading.Event | None = field(default=None, repr=False)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Fault:
        return cls("status", status=status, **kw)

    @classmethod
    def rate_limit(cls, **kw: Any) -> Fault:
        return cls("status", status=429, **kw)

    @classmethod
    def connection_reset(cls, **kw: Any) -> Fault:
        return cls("reset", **kw)

    @classmethod
    def latency(cls, seconds: float, **kw: Any) -> Fault:
        return cls("delay", seconds=seconds, **kw)

    @classmethod
    def slow_endpoint(cls, seconds: float, **kw: Any) -> Fault:
        """The endpoint runs for ``seconds`` (or until ``until`` is set) before it writes the record."""
        return cls("slow", seconds=seconds, **kw)

    @classmethod
    def lost_response(cls, status: int = 0, **kw: Any) -> Fault:
        """Stripe writes the record, but the answer never arrives (``status`` 0) or is a 5xx."""
        return cls("after_commit", status=status, **kw)

    @classmethod
    def stall_after_commit(cls, seconds: float, **kw: Any) -> Fault:
        """Stripe writes the record, then holds the answer for ``seconds`` (a caller may die meanwhile)."""
        return cls("after_commit", status=200, seconds=seconds, **kw)

    def pause(self) -> None:
        if self.until is not None:
            self.until.wait(self.seconds)
        else:
            time.sleep(self.seconds)


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(8)}")


def stripe_error(status: int, message: str, *, type_: str = "invalid_request_error", **extra: Any) -> Reply:
    return Reply(status, {"error": {"type": type_, "message": message, **extra}})


@dataclass(frozen=True)
class BillingPeriod:
    """A subscription item's billing period, ``[start, end)`` in unix seconds."""

    start: int
    end: int

    def current(self, now: int) -> BillingPeriod:
        """This period, rolled over to the next one of the same length as often as ``now`` has passed its end."""
        if now < self.end:
            return self
        length = self.end - self.start
        shift = ((now - self.end) // length + 1) * length
        return BillingPeriod(self.start + shift, self.end + shift)

    def as_json(self, subscription_item: str) -> dict[str, Any]:
        return {
            "subscription_item": subscription_item,
            "current_period_start": self.start,
            "current_period_end": self.end,
        }


@dataclass(frozen=True)
class UsageParams:
    quantity: int
    timestamp: int | None  # None: "now"
    action: str


def parse_integer(value: str) -> int | None:
    """``value`` as a 64-bit integer written in ASCII digits (optional leading minus), else None."""
    if not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if number in _INT64 else None


def parse_form(body: str) -> Params:
    """A form body as Stripe reads it: the last value of a repeated key wins; ``k[]``/``k[0]`` make a list."""
    params: Params = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        array = _FORM_ARRAY_KEY.fullmatch(key)
        if array:
            previous = params.get(array["name"])
            params[array["name"]] = [*(previous if isinstance(previous, list) else []), value]
        else:
            params[key] = value
    return params


def is_stripe_version(version: str, today: datetime.date) -> bool:
    """Whether Stripe has API version ``version`` (see ``STRIPE_RELEASES``)."""
    match = _VERSION.fullmatch(version)
    if not match:
        return False
    try:
        day = datetime.date.fromisoformat(match["date"])
    except ValueError:
        return False
    if day > today:
        return False
    if match["date"] < STRIPE_RELEASES[0][1]:
        return match["name"] is None
    return any(
        match["name"] == name and first <= match["date"] <= (last or match["date"])
        for name, first, last in STRIPE_RELEASES
    )


def _usage_params(params: Params) -> UsageParams | Reply:
    """The parameters, or the refusal Stripe gives before the endpoint runs (never saved for a key)."""
    unknown = sorted(key.split("[", 1)[0] for key in params if key not in USAGE_RECORD_PARAMS)
    if unknown:
        return stripe_error(
            400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )
    if "quantity" not in params:
        return stripe_error(400, "Missing required param: quantity.", code="parameter_missing", param="quantity")
    for name in ("quantity", "timestamp", "action"):
        if params.get(name) == "":
            return stripe_error(
                400,
                f"You passed an empty string for '{name}'. We assume empty values are an attempt to unset a "
                f"parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or "
                "supply a non-empty value.",
                code="parameter_invalid_empty",
                param=name,
            )
    raw_quantity, raw_timestamp = params["quantity"], params.get("timestamp", "now")
    quantity = parse_integer(raw_quantity) if isinstance(raw_quantity, str) else None
    if quantity is None:
        return stripe_error(400, f"Invalid integer: {raw_quantity}", code="parameter_invalid_integer", param="quantity")
    if quantity < 0:
        return stripe_error(
            400,
            "This value must be greater than or equal to 0.",
            code="parameter_invalid_integer",
            param="quantity",
        )
    timestamp = parse_integer(raw_timestamp) if isinstance(raw_timestamp, str) else None
    if timestamp is None and raw_timestamp != "now":
        return stripe_error(
            400, f"Invalid integer: {raw_timestamp}", code="parameter_invalid_integer", param="timestamp"
        )
    action = params.get("action", "increment")
    if action not in ("increment", "set"):
        return stripe_error(400, "Invalid action: must be one of increment or set", param="action")
    if not isinstance(params.get("expand", []), list):
        return stripe_error(400, "Invalid array", param="expand")
    return UsageParams(quantity, timestamp, str(action))


class FakeStripe:
    def __init__(
        self,
        *,
        api_key: str = "sk_test_fake",
        subscription_items: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
        account_version: str = ACCOUNT_DEFAULT_VERSION,
        future_tolerance_seconds: int = 0,
        period_seconds: int = 30 * DAY,
        period_elapsed_seconds: int = 15 * DAY,
    ) -> None:
        self.api_key = api_key
        self.clock = clock
        self.account_version = account_version
        self.future_tolerance_seconds = future_tolerance_seconds
        self.period_seconds = period_seconds
        self.period_elapsed_seconds = period_elapsed_seconds
        self.subscription_items: set[str] = set()
        self.ledger: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._periods: dict[str, BillingPeriod] = {}
        self._faults: deque[Fault] = deque()
        self._idempotent: dict[str, tuple[tuple[str, Params], Reply]] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.add_subscription_items(*subscription_items)

    # -- control (tests and the local server) --------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def add_subscription_items(self, *items: str) -> None:
        """Items that exist; a new one's period is ``period_seconds`` long, begun ``period_elapsed_seconds`` ago."""
        start = self.now() - self.period_elapsed_seconds
        with self._lock:
            for item in items:
                self.subscription_items.add(item)
                self._periods.setdefault(item, BillingPeriod(start, start + self.period_seconds))

    def billing_period(self, item: str) -> BillingPeriod:
        """The item's current billing period (``KeyError`` for an unknown item)."""
        with self._lock:
            period = self._periods[item].current(self.now())
            self._periods[item] = period
            return period

    def set_billing_period(self, item: str, start: int, end: int) -> BillingPeriod:
        """Make ``[start, end)`` the item's period (rolled over from there as time passes its end)."""
        if start >= end:
            raise ValueError(f"the period must end after it starts: [{start}, {end})")
        with self._lock:
            if item not in self.subscription_items:
                raise KeyError(item)
            self._periods[item] = BillingPeriod(start, end)
        return self.billing_period(item)

    def roll_over(self, item: str, at: int | None = None) -> BillingPeriod:
        """End the item's current period at ``at`` (default now) and start the next, of the same length, there."""
        with self._lock:
            period = self.billing_period(item)
            at = self.now() if at is None else at
            if not period.start < at <= period.end:
                raise ValueError(f"{at} is not within the current period [{period.start}, {period.end}]")
            self._periods[item] = BillingPeriod(at, at + period.end - period.start)
            return self._periods[item]

    def inject(self, *faults: Fault, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        with self._lock:
            self.subscription_items.clear()
            self._periods.clear()
            self.ledger.clear()
            self.requests.clear()
            self._faults.clear()
            self._idempotent.clear()
            self._in_flight.clear()

    def usage_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith(USAGE_RECORDS_PATH)]

    def total_usage(self, subscription_item: str) -> int:
        """The current period's total as Stripe computes it: ``set`` overwrites its timestamp, ``increment`` adds."""
        by_timestamp: dict[int, int] = {}
        with self._lock:
            if subscription_item not in self._periods:
                return 0
            period = self.billing_period(subscription_item)
            for record in self.ledger:
                ts = record["timestamp"]
                if record["subscription_item"] != subscription_item or not period.start <= ts < period.end:
                    continue
                by_timestamp[ts] = record["quantity"] + (0 if record["action"] == "set" else by_timestamp.get(ts, 0))
        return sum(by_timestamp.values())

    # -- server ----------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- request processing ------------------------------------------------------------------------

    def _next_fault(self, subscription_item: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.subscription_item in (None, subscription_item):
                    self._faults.remove(fault)
                    return fault
        return None

    def handle(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> Reply | Fault:
        """One API request; a ``Fault`` back means the transport must misbehave as it says."""
        route, _, query = path.partition("?")
        content_type = headers.get("content-type", "application/x-www-form-urlencoded").split(";")[0].strip()
        body = raw_body.decode("utf-8", errors="replace") if content_type == "application/x-www-form-urlencoded" else ""
        params = parse_form(body)
        subscription_item = _usage_item(route)
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "params": params})
        if route.startswith("/_fake/"):
            return self._control(method, route, {**parse_form(query), **params})

        if headers.get("authorization", "") != f"Bearer {self.api_key}":
            return stripe_error(401, "Invalid API Key provided")
        fault = self._next_fault(subscription_item)
        if fault and fault.kind == "status":
            reply = stripe_error(fault.status, f"injected {fault.status}", type_="api_error")
            if fault.status == 429:
                reply = stripe_error(429, "Too many requests", code="rate_limit")
            if fault.should_retry is not None:
                reply.headers["Stripe-Should-Retry"] = str(fault.should_retry).lower()
            return reply
        if fault and fault.kind == "reset":
            return fault
        if fault and fault.kind == "delay":
            fault.pause()

        version = headers.get("stripe-version") or self.account_version
        if not is_stripe_version(version, datetime.datetime.fromtimestamp(self.now(), datetime.UTC).date()):
            return stripe_error(400, f"Invalid Stripe API version: {version}")
        if method != "POST" or subscription_item is None or version[:10] >= FIRST_VERSION_WITHOUT_USAGE_RECORDS:
            return stripe_error(
                404,
                f"Unrecognized request URL ({method}: {route}). Please see https://stripe.com/docs or we can "
                "help at https://support.stripe.com/.",
            )
        reply = self._create_usage_record(
            subscription_item,
            route,
            params,
            headers.get("idempotency-key"),
            fault if fault and fault.kind == "slow" else None,
        )
        if fault and fault.kind == "after_commit":
            fault.pause()
            if fault.status == 0:
                return fault
            if fault.status >= 400:
                return stripe_error(fault.status, "injected after commit", type_="api_error")
        return reply

    def _create_usage_record(
        self, subscription_item: str, route: str, params: Params, key: str | None, slow: Fault | None
    ) -> Reply:
        """Validate, then run the endpoint; with an Idempotency-Key, only a result of the endpoint is saved."""
        with self._lock:
            if key:
                earlier = self._replay(key, route, params)
                if earlier:
                    return earlier
            usage = _usage_params(params)
            if isinstance(usage, Reply):
                return usage  # the parameters failed validation: nothing is saved
            if key:
                self._in_flight.add(key)
        try:
            if slow:
                slow.pause()
            reply = self._record_usage(subscription_item, usage, key)
            if key:
                with self._lock:
                    self._idempotent[key] = ((route, params), reply)
            return reply
        finally:
            if key:
                with self._lock:
                    self._in_flight.discard(key)

    def _replay(self, key: str, route: str, params: Params) -> Reply | None:
        """What Stripe answers for a key it has seen: the saved result, a conflict, or None (a new key)."""
        if key in self._in_flight:
            return stripe_error(
                409,
                "There is currently another in-progress request using this Idempotent Key (that probably means "
                f"you submitted twice, and the other request is still going through): {key}. Please try again later.",
                code="idempotency_key_in_use",
            )
        if key not in self._idempotent:
            return None
        (first_route, first_params), first = self._idempotent[key]
        if first_route != route:
            return stripe_error(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they were first used for "
                f"('POST {first_route}' vs 'POST {route}'). Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type_="idempotency_error",
            )
        if first_params != params:
            return stripe_error(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                type_="idempotency_error",
            )
        return Reply(first.status, first.body, {"Idempotent-Replayed": "true", "Original-Request": first.request_id})

    def _record_usage(self, subscription_item: str, usage: UsageParams, key: str | None) -> Reply:
        """The endpoint itself: its answer is saved for the Idempotency-Key, whatever it is."""
        now = self.now()
        timestamp = now if usage.timestamp is None else usage.timestamp
        with self._lock:
            if subscription_item not in self.subscription_items:
                return stripe_error(
                    404, f"No such subscription item: '{subscription_item}'", code="resource_missing", param="id"
                )
            period = self.billing_period(subscription_item)
            if timestamp > now + self.future_tolerance_seconds:
                return stripe_error(400, _TIMESTAMP_REFUSED + "not be in the future.", param="timestamp")
            if timestamp < period.start:
                return stripe_error(
                    400,
                    _TIMESTAMP_REFUSED
                    + "be after the subscription's last invoice period (or current period start time).",
                    param="timestamp",
                )
            if timestamp >= period.end:
                return stripe_error(
                    400, _TIMESTAMP_REFUSED + "be before the subscription's current period end time.", param="timestamp"
                )
            record = {
                "id": f"mbur_{secrets.token_hex(12)}",
                "object": "usage_record",
                "livemode": False,
                "quantity": usage.quantity,
                "subscription_item": subscription_item,
                "timestamp": timestamp,
                "action": usage.action,  # not in Stripe's object; kept for the ledger's arithmetic
                "idempotency_key": key,
            }
            self.ledger.append(record)
        public = {k: v for k, v in record.items() if k not in ("action", "idempotency_key")}
        return Reply(200, public)

    def _control(self, method: str, path: str, params: Params) -> Reply:
        def text(name: str, default: str | None = None) -> str | None:
            value = params.get(name, default)
            if isinstance(value, list):
                raise ValueError(f"{name} must be a single value")
            return value

        def integer(name: str, default: int | None = None) -> int | None:
            value = text(name)
            number = default if value is None else parse_integer(value)
            if value is not None and number is None:
                raise ValueError(f"{name} must be an integer, not {value!r}")
            return number

        parts = path.strip("/").split("/")
        try:
            if method == "GET" and path == "/_fake/ledger":
                with self._lock:
                    return Reply(200, {"object": "list", "data": list(self.ledger)})
            if method == "POST" and path == "/_fake/faults":  # e.g. kind=status&status=503&times=3
                fault = Fault(
                    kind=text("kind", "status") or "",
                    status=integer("status", 500) or 0,
                    seconds=float(text("seconds", "0") or ""),
                    subscription_item=text("subscription_item"),
                )
                if fault.kind not in FAULT_KINDS or not 0 <= fault.seconds <= DAY:
                    raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)} and seconds 0 to {DAY}")
                times = integer("times", 1) or 0
                self.inject(fault, times=times)
                shown = {k: v for k, v in fault.__dict__.items() if k != "until"}
                return Reply(200, {"injected": times, "fault": shown})
            if len(parts) == 4 and parts[:2] == ["_fake", "subscription_items"]:
                item, action = parts[2], parts[3]
                if action == "billing_period" and method == "GET":
                    return Reply(200, self.billing_period(item).as_json(item))
                if action == "billing_period" and method == "POST":
                    start, end = integer("start"), integer("end")
                    if start is None or end is None:
                        raise ValueError("start and end (unix seconds) are required")
                    return Reply(200, self.set_billing_period(item, start, end).as_json(item))
                if action == "roll_over" and method == "POST":
                    return Reply(200, self.roll_over(item, integer("at")).as_json(item))
        except KeyError as exc:
            return stripe_error(404, f"No such subscription item: {exc}", code="resource_missing", param="id")
        except ValueError as exc:
            return stripe_error(400, str(exc))
        return stripe_error(404, f"Unrecognized request URL ({method}: {path})")


def _usage_item(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "subscription_items"] and parts[3] == "usage_records":
        return parts[2]
    return None


def _handler_for(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's session expects
        # Buffered: the status line, headers and body leave in one send when handle_one_request flushes.
        # Written in two sends, the body waited for the client's delayed ACK (Nagle): ~40 ms a request.
        wbufsize = -1

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self) -> Reply | Fault:
            length = self.headers.get("Content-Length") or "0"
            if parse_integer(length) is None or int(length) < 0:
                self.close_connection = True  # the body's end is unknown: the connection cannot be reused
                return stripe_error(400, f"Invalid Content-Length: {length}")
            raw = self.rfile.read(int(length)) if int(length) else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            return fake.handle(self.command, self.path, headers, raw)

        def _serve(self) -> None:
            try:
                result = self._answer()
            except Exception as exc:  # a bug in the fake: answer as Stripe does for its own failures, never hang
                self.close_connection = True
                result = stripe_error(500, f"The fake Stripe failed: {type(exc).__name__}: {exc}", type_="api_error")
            if isinstance(result, Fault):  # drop the connection without an answer
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = json.dumps(result.body).encode()
            self.send_response(result.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", result.request_id)
            for name, value in result.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake Stripe API.")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_fake")
    parser.add_argument("--items", default="si_demo,si_demo2", help="comma-separated subscription items that exist")
    args = parser.parse_args()
    fake = FakeStripe(api_key=args.api_key, subscription_items=tuple(args.items.split(",")))
    print(f"fake Stripe at {fake.start(port=args.port)} (ledger: GET /_fake/ledger)", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
