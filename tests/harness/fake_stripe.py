"""A local fake of the part of Stripe this service uses, served over real HTTP.

It behaves like Stripe where it matters for billing correctness:
- form-encoded ``POST /v1/subscription_items/{si}/usage_records`` with Bearer auth and a
  pre-basil ``Stripe-Version`` (the endpoint is gone from ``2025-03-31.basil`` on);
- Idempotency-Key semantics: a completed request is replayed (``Idempotent-Replayed: true``),
  a different payload under the same key is a 400 ``idempotency_error``, and a key still in
  flight is a 409; results are kept only once the endpoint ran (not for injected faults);
- Stripe's error shape ``{"error": {"type", "code", "message", "param"}}`` and a ``Request-Id``;
- faults to inject: status codes (5xx, 429, with or without ``Stripe-Should-Retry``),
  connection resets, latency, and failures *after* the record was written (the nasty case).

It keeps a ledger of accepted usage records, which is what tests assert on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

USAGE_RECORDS_PATH = "/usage_records"
FIRST_VERSION_WITHOUT_USAGE_RECORDS = "2025-03-31"


@dataclass
class Fault:
    """What to do instead of (or around) the next matching request.

    kind: ``status`` (answer ``status`` without running the endpoint), ``reset`` (drop the connection),
    ``delay`` (sleep ``seconds`` then run normally), ``after_commit`` (run the endpoint, keep its result,
    then answer ``status`` or drop the connection if ``status`` is 0).
    """

    kind: str
    status: int = 500
    seconds: float = 0.0
    should_retry: bool | None = None
    subscription_item: str | None = None  # only requests for this item; None: any

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
    def lost_response(cls, status: int = 0, **kw: Any) -> Fault:
        """Stripe writes the record, but the answer never arrives (``status`` 0) or is a 5xx."""
        return cls("after_commit", status=status, **kw)

    @classmethod
    def stall_after_commit(cls, seconds: float, **kw: Any) -> Fault:
        """Stripe writes the record, then holds the answer for ``seconds`` (a caller may die meanwhile)."""
        return cls("after_commit", status=200, seconds=seconds, **kw)


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def stripe_error(status: int, message: str, *, type_: str = "invalid_request_error", **extra: Any) -> Reply:
    return Reply(status, {"error": {"type": type_, "message": message, **extra}})


class FakeStripe:
    def __init__(self, *, api_key: str = "sk_test_fake", subscription_items: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        self.subscription_items: set[str] = set(subscription_items)
        self.ledger: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._faults: deque[Fault] = deque()
        self._idempotent: dict[str, tuple[dict[str, Any], Reply]] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- control (tests and the local server) --------------------------------------------------

    def add_subscription_items(self, *items: str) -> None:
        with self._lock:
            self.subscription_items.update(items)

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
            self.ledger.clear()
            self.requests.clear()
            self._faults.clear()
            self._idempotent.clear()
            self._in_flight.clear()

    def usage_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith(USAGE_RECORDS_PATH)]

    def total_usage(self, subscription_item: str) -> int:
        """The period total as Stripe computes it: ``set`` overwrites its timestamp, ``increment`` adds."""
        by_timestamp: dict[int, int] = {}
        with self._lock:
            for record in self.ledger:
                if record["subscription_item"] != subscription_item:
                    continue
                ts = record["timestamp"]
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
        params = {k: v[-1] for k, v in parse_qs(raw_body.decode(), keep_blank_values=True).items()}
        subscription_item = _usage_item(path)
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "params": params})
        if path.startswith("/_fake/"):
            return self._control(method, path, params)

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
            time.sleep(fault.seconds)

        if method != "POST" or subscription_item is None:
            return stripe_error(404, f"Unrecognized request URL ({method}: {path})")
        reply = self._idempotent_call(
            headers, params, lambda: self._create_usage_record(subscription_item, headers, params)
        )
        if fault and fault.kind == "after_commit":
            time.sleep(fault.seconds)
            if fault.status == 0:
                return fault
            if fault.status >= 400:
                return stripe_error(fault.status, "injected after commit", type_="api_error")
        return reply

    def _idempotent_call(self, headers: dict[str, str], params: dict[str, str], run: Any) -> Reply:
        key = headers.get("idempotency-key")
        if not key:
            return run()  # type: ignore[no-any-return]
        with self._lock:
            if key in self._in_flight:
                return stripe_error(
                    409,
                    "There is currently another in-progress request using this Idempotent Key. Retry later.",
                    type_="idempotency_error",
                )
            if key in self._idempotent:
                first_params, first_reply = self._idempotent[key]
                if first_params != params:
                    return stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                        type_="idempotency_error",
                    )
                return Reply(first_reply.status, first_reply.body, {"Idempotent-Replayed": "true"})
            self._in_flight.add(key)
        try:
            reply = run()
            if reply.status < 500 and reply.body.get("error", {}).get("code") != "parameter_invalid":
                with self._lock:  # Stripe keeps a result once the endpoint ran, not for bad parameters
                    self._idempotent[key] = (params, reply)
            return reply  # type: ignore[no-any-return]
        finally:
            with self._lock:
                self._in_flight.discard(key)

    def _create_usage_record(self, subscription_item: str, headers: dict[str, str], params: dict[str, str]) -> Reply:
        version = headers.get("stripe-version", "")
        if not version or version[:10] >= FIRST_VERSION_WITHOUT_USAGE_RECORDS:
            return stripe_error(
                400,
                f"Usage records are not available in API version {version or '(account default)'}; "
                "use a version before 2025-03-31.basil",
                code="api_version_unsupported",
            )
        if headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return stripe_error(400, "Request body must be form-encoded", code="parameter_invalid")
        quantity = params.get("quantity", "")
        if not quantity.isdigit():
            return stripe_error(400, "Invalid integer: " + quantity, code="parameter_invalid", param="quantity")
        timestamp_param = params.get("timestamp", "now")
        if timestamp_param != "now" and not timestamp_param.isdigit():
            return stripe_error(400, "Invalid timestamp", code="parameter_invalid", param="timestamp")
        action = params.get("action", "increment")
        if action not in ("increment", "set"):
            return stripe_error(
                400, "Invalid action: must be one of increment, set", code="parameter_invalid", param="action"
            )
        unknown = set(params) - {"quantity", "timestamp", "action"}
        if unknown:
            return stripe_error(400, f"Received unknown parameter: {sorted(unknown)[0]}", code="parameter_unknown")
        with self._lock:
            if subscription_item not in self.subscription_items:
                return stripe_error(
                    404, f"No such subscription item: '{subscription_item}'", code="resource_missing", param="id"
                )
            record = {
                "id": f"mbur_{secrets.token_hex(12)}",
                "object": "usage_record",
                "livemode": False,
                "quantity": int(quantity),
                "subscription_item": subscription_item,
                "timestamp": int(time.time()) if timestamp_param == "now" else int(timestamp_param),
                "action": action,  # not in Stripe's object; kept for the ledger's arithmetic
                "idempotency_key": headers.get("idempotency-key"),
            }
            self.ledger.append(record)
        public = {k: v for k, v in record.items() if k not in ("action", "idempotency_key")}
        return Reply(200, public)

    def _control(self, method: str, path: str, params: dict[str, str]) -> Reply:
        if method == "GET" and path == "/_fake/ledger":
            with self._lock:
                return Reply(200, {"object": "list", "data": list(self.ledger)})
        if method == "POST" and path == "/_fake/faults":  # e.g. kind=status&status=503&times=3
            fault = Fault(
                kind=params.get("kind", "status"),
                status=int(params.get("status", 500)),
                seconds=float(params.get("seconds", 0)),
                subscription_item=params.get("subscription_item"),
            )
            self.inject(fault, times=int(params.get("times", 1)))
            return Reply(200, {"injected": int(params.get("times", 1)), "fault": fault.__dict__})
        return stripe_error(404, f"Unrecognized request URL ({method}: {path})")


def _usage_item(path: str) -> str | None:
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "subscription_items"] and parts[3] == "usage_records":
        return parts[2]
    return None


def _handler_for(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's session expects

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            result = fake.handle(self.command, self.path, headers, raw)
            if isinstance(result, Fault):  # drop the connection without an answer
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = json.dumps(result.body).encode()
            self.send_response(result.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
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
