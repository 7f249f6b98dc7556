"""``FakeStripe``: the test account, answered over Stripe's API as Stripe answers."""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from .account import FakeAccount, answer_control
from .faults import Fault
from .rules import (
    ACCOUNT_DEFAULT_VERSION,
    DAY,
    FIRST_VERSION_WITHOUT_USAGE_RECORDS,
    Params,
    Reply,
    UsageParams,
    is_stripe_version,
    parse_form,
    stripe_error,
    timestamp_refusal,
    unknown_url,
    usage_item,
    usage_params,
)
from .server import serve


class FakeStripe(FakeAccount):
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
        self.account_version = account_version
        self.future_tolerance_seconds = future_tolerance_seconds
        self._server: ThreadingHTTPServer | None = None
        super().__init__(
            subscription_items=subscription_items,
            clock=clock,
            period_seconds=period_seconds,
            period_elapsed_seconds=period_elapsed_seconds,
        )

    # -- server ----------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = serve(self, host, port)
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

    def handle(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> Reply | Fault:
        """One API request; a ``Fault`` back means the transport must misbehave as it says."""
        route, _, query = path.partition("?")
        content_type = headers.get("content-type", "application/x-www-form-urlencoded").split(";")[0].strip()
        body = raw_body.decode("utf-8", errors="replace") if content_type == "application/x-www-form-urlencoded" else ""
        params = parse_form(body)
        subscription_item = usage_item(route)
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "params": params})
        if route.startswith("/_fake/"):
            return answer_control(self, method, route, {**parse_form(query), **params})

        if headers.get("authorization", "") != f"Bearer {self.api_key}":
            return stripe_error(401, "Invalid API Key provided")
        fault = self._faults.next_for(subscription_item)
        if fault and fault.kind == "status":
            return fault.refusal()
        if fault and fault.kind == "reset":
            return fault
        if fault and fault.kind == "delay":
            fault.pause()

        version = headers.get("stripe-version") or self.account_version
        if not is_stripe_version(version, datetime.datetime.fromtimestamp(self.now(), datetime.UTC).date()):
            return stripe_error(400, f"Invalid Stripe API version: {version}")
        if method != "POST" or subscription_item is None or version[:10] >= FIRST_VERSION_WITHOUT_USAGE_RECORDS:
            return unknown_url(method, route)
        reply = self._create_usage_record(
            subscription_item,
            route,
            params,
            headers.get("idempotency-key"),
            fault if fault and fault.kind == "slow" else None,
        )
        if fault and fault.kind == "after_commit":
            return fault.after_commit(reply)
        return reply

    def _create_usage_record(
        self, subscription_item: str, route: str, params: Params, key: str | None, slow: Fault | None
    ) -> Reply:
        """Validate, then run the endpoint; with an Idempotency-Key, only a result of the endpoint is saved."""

        def endpoint(usage: UsageParams) -> Reply:
            if slow:
                slow.pause()
            return self._record_usage(subscription_item, usage, key)

        return self._idempotency.run(key, route, params, validate=usage_params, endpoint=endpoint)

    def _record_usage(self, subscription_item: str, usage: UsageParams, key: str | None) -> Reply:
        """The endpoint itself: its answer is saved for the Idempotency-Key, whatever it is."""
        now = self.now()
        timestamp = now if usage.timestamp is None else usage.timestamp
        with self._lock:
            if subscription_item not in self.subscription_items:
                return stripe_error(
                    404, f"No such subscription item: '{subscription_item}'", code="resource_missing", param="id"
                )
            refusal = timestamp_refusal(
                timestamp, now + self.future_tolerance_seconds, self.billing_period(subscription_item)
            )
            if refusal is not None:
                return refusal
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
