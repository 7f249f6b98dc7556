"""``FakeStripe``: the test account, answered over Stripe's API as Stripe answers."""

from __future__ import annotations

import datetime
import json
import secrets
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from .account import FakeAccount, answer_control
from .catalog_api import CatalogApi, is_catalog_route
from .faults import Fault
from .meter_api import MeterApi, is_meter_route
from .meter_control import MeterControls, answer_meter_control
from .meter_rules import METER_EVENT_STREAM_PATH, v2_error
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

_INVALID_JSON = object()  # a v2 body that does not parse


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return _INVALID_JSON


class FakeStripe(FakeAccount, MeterControls):
    """The fake Stripe API (see the package's docstring); ``start()`` serves it over HTTP."""

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
        decimal_meter_values: bool = True,
        unknown_customers_async: bool = False,
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
        self.metering.decimal_values = decimal_meter_values
        self.metering.unknown_customers_async = unknown_customers_async
        self.meter_api = MeterApi(self.metering, self.meter_stream, self.error_reports, self._idempotency)
        self.catalog_api = CatalogApi(self.catalog, self.billing_period)

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
        text = raw_body.decode("utf-8", errors="replace")
        params = parse_form(text) if content_type == "application/x-www-form-urlencoded" else {}
        if method == "GET":  # Stripe reads a GET's parameters from its query
            params = parse_form(query)
        v2 = route.startswith("/v2/")  # v2 reads JSON bodies, v1 forms only
        document = _json(text) if v2 and content_type == "application/json" else None
        with self._lock:
            logged = params if document is None or document is _INVALID_JSON else document
            self.requests.append({"method": method, "path": path, "headers": headers, "params": logged})
        if route.startswith("/_fake/"):
            control = {**parse_form(query), **params}
            return answer_meter_control(self, method, route, control) or answer_control(self, method, route, control)

        if route == METER_EVENT_STREAM_PATH:  # authenticated by a meter event session's token
            refusal = self.meter_stream.refusal(headers.get("authorization", ""))
            if refusal:
                return refusal
        elif headers.get("authorization", "") != f"Bearer {self.api_key}":
            return stripe_error(401, "Invalid API Key provided")
        subscription_item = usage_item(route)
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
        slow = fault if fault and fault.kind == "slow" else None
        key = headers.get("idempotency-key")
        if is_meter_route(route):
            if document is _INVALID_JSON:
                return v2_error(400, "invalid_request_error", "invalid_json", "The request body is not valid JSON.")
            meter_reply = self.meter_api.answer(method, route, params, document, key, version, slow)
            reply = meter_reply or unknown_url(method, route)
        elif is_catalog_route(route):
            reply = self.catalog_api.answer(method, route, params, version) or unknown_url(method, route)
        elif method != "POST" or subscription_item is None or version[:10] >= FIRST_VERSION_WITHOUT_USAGE_RECORDS:
            return unknown_url(method, route)
        else:
            reply = self._create_usage_record(subscription_item, route, params, key, slow)
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
            if subscription_item in self.metered_price_items:
                return stripe_error(
                    400,
                    f"Cannot create a usage record for `{subscription_item}` because it is not on the legacy metered "
                    "billing system. Call /v1/billing/meter_events instead.",
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
