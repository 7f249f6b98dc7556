"""The controls over the account's meters, as methods of ``FakeStripe`` (for tests) and as ``/_fake/`` endpoints
(for the local tools): meters, customers, the ledger, the stream's validation, sessions, error reports."""

from __future__ import annotations

from decimal import Decimal

from .meter_objects import MeterError, MeterEvent
from .meter_stream import MeterStream
from .metering import Metering
from .rules import Params, Reply, stripe_error
from .thin_events import Delivery, ErrorReports


class MeterControls:
    """Mixed into ``FakeStripe``; the account sets ``metering``, ``meter_stream`` and ``error_reports``."""

    metering: Metering
    meter_stream: MeterStream
    error_reports: ErrorReports

    def add_meter(
        self,
        event_name: str,
        *,
        customer_key: str = "stripe_customer_id",
        value_key: str = "value",
        aggregation: str = "sum",
        active: bool = True,
    ) -> str:
        """A meter for ``event_name`` (``sum``, ``count`` or ``last``); its id, ``mtr_test_...``."""
        meter = self.metering.add_meter(
            event_name, customer_key=customer_key, value_key=value_key, aggregation=aggregation, active=active
        )
        return meter.id

    def deactivate_meter(self, meter: str) -> None:
        """Deactivate a meter, by id or event_name: its events are refused from now on."""
        self.metering.deactivate(meter)

    def add_customers(self, *customers: str) -> None:
        with self.metering.lock:
            self.metering.customers.update(customers)

    @property
    def meter_events(self) -> list[MeterEvent]:
        """The ledger of accepted meter events (v1 and streamed), cancelled ones marked ``cancelled_at``."""
        return self.metering.events

    @property
    def meter_errors(self) -> list[MeterError]:
        """Events found invalid asynchronously (``reported`` once an error report includes them)."""
        return self.metering.errors

    def meter_total(
        self, event_name: str, customer: str, *, start: int | None = None, end: int | None = None
    ) -> Decimal:
        """The meter's aggregation of the customer's events not cancelled (timestamps in ``[start, end)``)."""
        return self.metering.total(event_name, customer, start=start, end=end)

    def process_meter_event_stream(self) -> dict[str, int]:
        """Validate the streamed events received so far: counts ``accepted``, ``dropped`` (duplicate identifier),
        ``failed`` (collected for error reports)."""
        return self.meter_stream.process()

    def expire_sessions(self) -> int:
        """End every meter event session now; the stream answers 401 for their tokens."""
        return self.meter_stream.expire_sessions()

    def deliver_error_reports(self, url: str, endpoint_secret: str, *, signed_at: int | None = None) -> list[Delivery]:
        """Validate the stream, then POST a signed thin event for each meter with errors not reported yet (and for
        event names no meter has), and again for events not acknowledged with a 2xx before; what was delivered.
        ``signed_at`` (default: the real time, which the receiver checks against its own clock) signs."""
        self.meter_stream.process()
        return self.error_reports.deliver(url, endpoint_secret, signed_at=signed_at)


def answer_meter_control(fake: MeterControls, method: str, route: str, params: Params) -> Reply | None:
    """A ``/_fake/`` meter request, or None for a path that is not one (no auth)."""

    def text(name: str, default: str = "") -> str:
        value = params.get(name, default)
        if isinstance(value, list):
            raise ValueError(f"{name} must be a single value")
        return value

    parts = route.strip("/").split("/")
    try:
        if method == "POST" and route == "/_fake/meters":  # event_name=api_calls&aggregation=sum
            meter_id = fake.add_meter(
                text("event_name"),
                customer_key=text("customer_key", "stripe_customer_id"),
                value_key=text("value_key", "value"),
                aggregation=text("aggregation", "sum"),
                active=text("active", "true") != "false",
            )
            return Reply(200, fake.metering.meters[meter_id].as_json())
        if method == "POST" and len(parts) == 4 and parts[:2] == ["_fake", "meters"] and parts[3] == "deactivate":
            return Reply(200, fake.metering.deactivate(parts[2]).as_json())
        if method == "POST" and route == "/_fake/customers":  # customers=cus_a,cus_b
            customers = [c for c in text("customers").split(",") if c]
            fake.add_customers(*customers)
            return Reply(200, {"customers": sorted(fake.metering.customers)})
        if method == "GET" and route == "/_fake/meter_events":
            with fake.metering.lock:
                return Reply(200, {"object": "list", "data": [e.as_json() for e in fake.meter_events]})
        if method == "GET" and route == "/_fake/meter_errors":
            with fake.metering.lock:
                return Reply(200, {"object": "list", "data": [e.as_json() for e in fake.meter_errors]})
        if method == "POST" and route == "/_fake/meter_event_stream/process":
            return Reply(200, fake.process_meter_event_stream())
        if method == "POST" and route == "/_fake/meter_event_sessions/expire":
            return Reply(200, {"expired": fake.expire_sessions()})
        if method == "POST" and route == "/_fake/error_reports":  # url=http://...&secret=whsec_...
            deliveries = fake.deliver_error_reports(text("url"), text("secret"))
            return Reply(200, {"delivered": [d.__dict__ for d in deliveries]})
    except KeyError as exc:
        return stripe_error(404, f"No such billing meter: {exc}", code="resource_missing", param="id")
    except ValueError as exc:
        return stripe_error(400, str(exc))
    return None
