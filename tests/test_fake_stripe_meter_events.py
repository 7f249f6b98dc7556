"""The fake Stripe's Billing meter events answer as Stripe does: driven with the real stripe SDK over HTTP, the
calls the service makes (v1 meter events and adjustments, v2 sessions and the stream, thin events)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from stripe.params.billing import MeterEventAdjustmentCreateParams, MeterEventCreateParams
from stripe.params.v2.billing import MeterEventStreamCreateParamsEvent

from tests.harness.fake_stripe import DAY, FakeStripe, Fault

KEY = "sk_test_meters"
SECRET = "whsec_test_meters"
METER = "api_calls"
CUSTOMER = "cus_TESTmeter001"


class Clock:
    """The fake's clock, moved by tests instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Receiver:
    """An event destination on loopback: what Stripe POSTed (body, Stripe-Signature), answering ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, self.headers["Stripe-Signature"]))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stripe/events"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[FakeStripe]:
    fake = FakeStripe(api_key=KEY, clock=clock)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeStripe, clock: Clock) -> FakeStripe:
    server.reset()
    server.metering.decimal_values, server.metering.unknown_customers_async = True, False
    clock.now = time.time()
    server.add_meter(METER)
    server.add_customers(CUSTOMER)
    return server


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        KEY,
        base_addresses={"api": fake.url, "meter_events": fake.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=5),
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    destination = Receiver()
    yield destination
    destination.stop()


def event(
    value: str = "5",
    customer: str = CUSTOMER,
    name: str = METER,
    *,
    identifier: str | None = None,
    timestamp: int | None = None,
) -> MeterEventCreateParams:
    """A v1 meter event's parameters."""
    params: MeterEventCreateParams = {"event_name": name, "payload": {"stripe_customer_id": customer, "value": value}}
    if identifier is not None:
        params["identifier"] = identifier
    if timestamp is not None:
        params["timestamp"] = timestamp
    return params


def streamed(
    value: str = "5",
    customer: str = CUSTOMER,
    name: str = METER,
    *,
    identifier: str | None = None,
    timestamp: str | None = None,
) -> MeterEventStreamCreateParamsEvent:
    """A v2 stream event (its timestamp in RFC 3339)."""
    item: MeterEventStreamCreateParamsEvent = {
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": value},
    }
    if identifier is not None:
        item["identifier"] = identifier
    if timestamp is not None:
        item["timestamp"] = timestamp
    return item


def replayed(answer: stripe.StripeObject) -> bool:
    assert answer.last_response is not None
    return answer.last_response.headers.get("Idempotent-Replayed") == "true"


def refusal(call: Any, *args: Any, **kwargs: Any) -> stripe.StripeError:
    with pytest.raises(stripe.StripeError) as caught:
        call(*args, **kwargs)
    return caught.value


def control(fake: FakeStripe, method: str, path: str, **form: str) -> dict[str, Any]:
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    request = urllib.request.Request(f"{fake.url}{path}", data=body if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_meters_and_customers_by_method_and_over_http(fake: FakeStripe, client: stripe.StripeClient) -> None:
    meter_id = fake.add_meter("tokens", customer_key="account", value_key="tokens", aggregation="last")
    assert meter_id.startswith("mtr_")
    meter = client.v1.billing.meters.retrieve(meter_id)
    assert (meter.event_name, meter.status, meter.default_aggregation.formula) == ("tokens", "active", "last")
    assert (meter.customer_mapping.event_payload_key, meter.value_settings.event_payload_key) == ("account", "tokens")

    over_http = control(fake, "POST", "/_fake/meters", event_name="storage", aggregation="count")
    assert over_http["customer_mapping"]["event_payload_key"] == "stripe_customer_id"
    assert control(fake, "POST", f"/_fake/meters/{over_http['id']}/deactivate")["status"] == "inactive"
    customers = control(fake, "POST", "/_fake/customers", customers="cus_a,cus_b")["customers"]
    assert customers == sorted(["cus_a", "cus_b", CUSTOMER])
    fake.deactivate_meter("tokens")
    assert client.v1.billing.meters.retrieve(meter_id).status == "inactive"
    with pytest.raises(ValueError, match="aggregation"):
        fake.add_meter("other", aggregation="max")


def test_accepted_event_answers_stripes_shape_and_joins_the_ledger(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    create = client.v1.billing.meter_events.create
    answer = create(params=event("25", identifier="evt-1"), options={"idempotency_key": "k1"})
    assert set(answer.to_dict()) == {
        "created",
        "event_name",
        "identifier",
        "livemode",
        "object",
        "payload",
        "timestamp",
    }
    assert (answer.object, answer.identifier, answer.livemode) == ("billing.meter_event", "evt-1", False)
    assert answer.payload.to_dict() == {"stripe_customer_id": CUSTOMER, "value": "25"}
    assert answer.timestamp == answer.created == int(fake.clock())
    generated = create(params=event("1"))
    assert len(generated.identifier) == 36  # Stripe generates an identifier when none is sent
    [first, second] = fake.meter_events
    assert (first.value, first.customer, first.via, first.idempotency_key) == (Decimal(25), CUSTOMER, "v1", "k1")
    assert second.identifier == generated.identifier


def test_event_name_must_be_an_active_meters(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    too_long = refusal(create, params=event(name="x" * 101))
    assert (too_long.http_status, too_long.json_body["error"]["param"]) == (400, "event_name")  # type: ignore[index]
    unknown = refusal(create, params=event(name="nope"))
    assert (unknown.http_status, unknown.user_message) == (400, 'No active meter found for event name "nope".')
    fake.deactivate_meter(METER)
    inactive = refusal(create, params=event())
    assert inactive.user_message == f'No active meter found for event name "{METER}".'
    assert fake.meter_events == []


def test_payload_must_name_a_known_customer_under_the_meters_key(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    fake.add_meter("seats", customer_key="account")
    missing = refusal(create, params=event(name="seats"))
    assert (missing.http_status, missing.user_message) == (400, "Customer mapping key account not found in payload.")
    unknown = refusal(create, params=event(customer="cus_nobody"))
    assert (unknown.http_status, unknown.user_message) == (400, "No such customer: 'cus_nobody'")
    create(params={"event_name": "seats", "payload": {"account": CUSTOMER, "value": "2"}})
    assert fake.meter_total("seats", CUSTOMER) == Decimal(2)


def test_values_are_decimals_negative_allowed(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    for accepted in ("5", "-2", "007", "1.25", "0.000000000000001"):
        create(params=event(accepted))
    assert fake.meter_events[3].value == Decimal("1.25")
    assert fake.meter_total(METER, CUSTOMER) == Decimal("11.250000000000001")  # negative usage corrects earlier
    for refused in ("1.", ".5", "1e3", "+1", " 1", "NaN", "Infinity", "\u0663", "", "0x10", "1,5"):
        error = refusal(create, params=event(refused))
        assert error.http_status == 400, refused
        assert error.user_message == f"The value in the event payload must be a number. Received {refused}."
    missing = refusal(create, params={"event_name": METER, "payload": {"stripe_customer_id": CUSTOMER}})
    assert missing.user_message == "Value mapping key value not found in payload."


def test_values_of_more_than_15_digits_are_refused_from_dahlia(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    create(params=event("999999999999999"))
    error = refusal(create, params=event("1234567890123456"))  # the SDK's own version, 2026-10-28.endive
    assert error.user_message == "The value in the event payload can have at most 15 digits. Received 1234567890123456."
    create(params=event("1234567890123456"), options={"stripe_version": "2026-02-25.clover"})
    assert fake.meter_total(METER, CUSTOMER) == Decimal(999999999999999 + 1234567890123456)


def test_whole_numbers_only_for_an_account_without_decimals(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    fake.metering.decimal_values = False  # FakeStripe(decimal_meter_values=False)
    create(params=event("-12"))
    error = refusal(create, params=event("1.5"))
    assert (error.http_status, error.user_message) == (
        400,
        "The value in the event payload must be a whole number. Received 1.5.",
    )
    assert fake.meter_total(METER, CUSTOMER) == Decimal(-12)


def test_timestamps_within_35_days_before_and_5_minutes_after_now(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    create = client.v1.billing.meter_events.create
    now = int(fake.clock())
    for timestamp in (now - 35 * DAY, now + 300):
        create(params=event(timestamp=timestamp))
    old = refusal(create, params=event(timestamp=now - 35 * DAY - 1))
    assert old.user_message == (
        "The event timestamp cannot be more than 35 days in past. "
        f"Expected a timestamp greater than or equal to {now - 35 * DAY}."
    )
    ahead = refusal(create, params=event(timestamp=now + 301))
    assert (ahead.http_status, ahead.json_body["error"]["type"]) == (400, "invalid_request_error")  # type: ignore[index]
    assert [e.timestamp for e in fake.meter_events] == [now - 35 * DAY, now + 300]


def test_an_identifier_is_unique_for_24_hours(fake: FakeStripe, client: stripe.StripeClient, clock: Clock) -> None:
    create = client.v1.billing.meter_events.create
    create(params=event(identifier="usage-1"), options={"idempotency_key": "a"})
    again = refusal(create, params=event(identifier="usage-1"), options={"idempotency_key": "b"})
    assert (again.http_status, again.user_message) == (400, "An event already exists with identifier usage-1.")
    assert again.headers is not None and again.headers["Stripe-Should-Retry"] == "false"
    clock.advance(DAY)
    create(params=event(identifier="usage-1"), options={"idempotency_key": "c"})
    assert len(fake.meter_events) == 2
    too_long = refusal(create, params=event(identifier="i" * 101))
    assert too_long.json_body["error"]["param"] == "identifier"  # type: ignore[index]


def test_idempotency_keys_replay_and_conflict_as_for_usage_records(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    create = client.v1.billing.meter_events.create
    incomplete: Any = {"event_name": METER}
    bad = refusal(create, params=incomplete, options={"idempotency_key": "k"})
    assert bad.json_body["error"]["code"] == "parameter_missing"  # type: ignore[index]  # not saved: k is still new
    first = create(params=event(identifier="i-1"), options={"idempotency_key": "k"})
    replay = create(params=event(identifier="i-1"), options={"idempotency_key": "k"})
    assert replayed(replay) and replay.to_dict() == first.to_dict() and len(fake.meter_events) == 1
    conflict = refusal(create, params=event("6", identifier="i-1"), options={"idempotency_key": "k"})
    assert isinstance(conflict, stripe.IdempotencyError)
    unknown: Any = {**event(), "metadata": {"a": "b"}}
    assert refusal(create, params=unknown).json_body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "Received unknown parameter: metadata",
        "code": "parameter_unknown",
        "param": "metadata",
    }


def test_meter_total_applies_the_meters_aggregation(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.add_meter("calls", aggregation="count")
    fake.add_meter("seats", aggregation="last")
    now = int(fake.clock())
    for value, timestamp in (("4", now - 20), ("9", now - 30), ("2", now - 10)):
        for name in (METER, "calls", "seats"):
            client.v1.billing.meter_events.create(params=event(value, name=name, timestamp=timestamp))
    assert (fake.meter_total(METER, CUSTOMER), fake.meter_total("calls", CUSTOMER)) == (Decimal(15), Decimal(3))
    assert fake.meter_total("seats", CUSTOMER) == Decimal(2)  # the latest timestamp, not the last received
    assert fake.meter_total(METER, CUSTOMER, start=now - 25, end=now - 10) == Decimal(4)
    assert fake.meter_total(METER, "cus_other") == Decimal(0)


def test_an_adjustment_cancels_an_event_received_within_24_hours(
    fake: FakeStripe, client: stripe.StripeClient, clock: Clock
) -> None:
    adjust = client.v1.billing.meter_event_adjustments.create
    for identifier in ("keep", "drop", "late"):
        client.v1.billing.meter_events.create(params=event(identifier=identifier))

    def cancel(identifier: str) -> MeterEventAdjustmentCreateParams:
        return {"event_name": METER, "type": "cancel", "cancel": {"identifier": identifier}}

    answer = adjust(params=cancel("drop"), options={"idempotency_key": "adj-1"})
    assert answer.to_dict() == {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": "drop"},
        "event_name": METER,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }
    assert fake.meter_total(METER, CUSTOMER) == Decimal(10)
    assert refusal(adjust, params=cancel("drop")).http_status == 400  # already cancelled
    unknown = refusal(adjust, params=cancel("x"))
    assert unknown.http_status == 400 and "identifier x" in (unknown.user_message or "")
    clock.advance(DAY)
    late = refusal(adjust, params=cancel("late"))
    assert (late.user_message or "").startswith("You can only cancel events within 24 hours of Stripe receiving them.")
    assert fake.meter_total(METER, CUSTOMER) == Decimal(10)


def test_a_meter_event_session_lasts_15_minutes(fake: FakeStripe, client: stripe.StripeClient) -> None:
    session = client.v2.billing.meter_event_session.create()
    assert set(session.to_dict()) == {"id", "object", "authentication_token", "created", "expires_at", "livemode"}
    assert (session.object, session.livemode) == ("v2.billing.meter_event_session", False)
    created = time.strptime(session.created, "%Y-%m-%dT%H:%M:%S.%fZ")
    expires = time.strptime(session.expires_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert time.mktime(expires) - time.mktime(created) == 15 * 60
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"


def test_the_stream_answers_at_once_and_validates_later(fake: FakeStripe, client: stripe.StripeClient) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fake.clock() - 36 * DAY))
    events = [
        streamed("3", identifier="ok-1"),
        streamed("4", identifier="ok-1"),  # a duplicate identifier: Stripe drops it
        streamed(name="nope", identifier="bad-meter"),
        streamed(customer="cus_nobody", identifier="bad-customer"),
        streamed("x", identifier="bad-value"),
        streamed(identifier="bad-time", timestamp=past),
    ]
    client.v2.billing.meter_event_stream.create(params={"events": events}, options={"api_key": token})
    assert fake.requests[-1]["params"] == {"events": events}  # the request log keeps v2 JSON bodies
    assert fake.meter_events == [] and fake.meter_errors == []  # answered 200 {} before validating
    assert fake.process_meter_event_stream() == {"accepted": 1, "dropped": 1, "failed": 4}
    assert [(e.identifier, e.value, e.via) for e in fake.meter_events] == [("ok-1", Decimal(3), "v2")]
    assert [(e.identifier, e.code, e.meter_id is None) for e in fake.meter_errors] == [
        ("bad-meter", "no_meter", True),
        ("bad-customer", "meter_event_customer_not_found", False),
        ("bad-value", "meter_event_invalid_value", False),
        ("bad-time", "timestamp_too_far_in_past", False),
    ]


def test_the_stream_takes_100_events_from_a_live_session(fake: FakeStripe, client: stripe.StripeClient) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    stream = client.v2.billing.meter_event_stream.create
    events = [streamed(identifier=str(i)) for i in range(101)]
    too_many = refusal(stream, params={"events": events}, options={"api_key": token})
    assert isinstance(too_many, stripe.InvalidRequestError) and too_many.code == "invalid_fields"
    assert set(too_many.json_body["error"]) == {"type", "code", "message", "doc_url"}  # type: ignore[index]
    stream(params={"events": events[:100]}, options={"api_key": token})
    for credential in ("mtrtok_test_unknown", KEY):
        unknown = refusal(stream, params={"events": [streamed()]}, options={"api_key": credential})
        assert isinstance(unknown, stripe.AuthenticationError) and unknown.http_status == 401
    assert fake.process_meter_event_stream()["accepted"] == 100


def test_an_expired_session_is_401_temporary_session_expired(
    fake: FakeStripe, client: stripe.StripeClient, clock: Clock
) -> None:
    stream = client.v2.billing.meter_event_stream.create
    token = client.v2.billing.meter_event_session.create().authentication_token
    assert fake.expire_sessions() == 1
    expired = refusal(stream, params={"events": [streamed()]}, options={"api_key": token})
    assert isinstance(expired, stripe.TemporarySessionExpiredError) and expired.http_status == 401
    assert expired.json_body == {
        "error": {
            "type": "temporary_session_expired",
            "code": "billing_meter_event_session_expired",
            "message": "The temporary session token has expired.",
            "doc_url": "https://docs.stripe.com/error-codes/billing-meter-event-session-expired",
        }
    }
    renewed = client.v2.billing.meter_event_session.create().authentication_token
    stream(params={"events": [streamed()]}, options={"api_key": renewed})
    clock.advance(15 * 60)
    later = refusal(stream, params={"events": [streamed()]}, options={"api_key": renewed})
    assert isinstance(later, stripe.TemporarySessionExpiredError)


def test_error_reports_arrive_as_signed_thin_events_the_sdk_fetches(
    fake: FakeStripe, client: stripe.StripeClient, receiver: Receiver
) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    events = [
        streamed(customer="cus_nobody", identifier="e-1"),
        streamed("1.5.0", identifier="e-2"),
        streamed(name="nope", identifier="e-3"),
    ]
    client.v2.billing.meter_event_stream.create(params={"events": events}, options={"api_key": token})
    deliveries = fake.deliver_error_reports(receiver.url, SECRET)
    assert [(d.type, d.status) for d in deliveries] == [
        ("v1.billing.meter.error_report_triggered", 200),
        ("v1.billing.meter.no_meter_found", 200),
    ]
    (report_body, signature), (no_meter_body, no_meter_signature) = receiver.received
    timestamp, digest = (part.split("=", 1)[1] for part in signature.split(","))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + report_body, hashlib.sha256).hexdigest()
    assert digest == expected and abs(int(timestamp) - time.time()) < 60
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(report_body, signature, "whsec_wrong")

    notification = client.parse_event_notification(report_body, signature, SECRET)
    assert isinstance(notification, stripe.events.V1BillingMeterErrorReportTriggeredEventNotification)
    assert "data" not in json.loads(report_body)  # thin: the data is fetched
    report = notification.fetch_event()
    assert report.data.reason.error_count == 2
    assert [(t.code, [s.request.identifier for s in t.sample_errors]) for t in report.data.reason.error_types] == [
        ("meter_event_customer_not_found", ["e-1"]),
        ("meter_event_invalid_value", ["e-2"]),
    ]
    assert report.data.developer_message_summary == "There are 2 invalid events"
    assert notification.fetch_related_object().event_name == METER

    no_meter = client.parse_event_notification(no_meter_body, no_meter_signature, SECRET)
    assert isinstance(no_meter, stripe.events.V1BillingMeterNoMeterFoundEventNotification)
    sample = no_meter.fetch_event().data.reason.error_types[0].sample_errors[0]
    assert (sample.error_message, sample.request.identifier) == ("No meter was found matching event_name nope.", "e-3")
    assert fake.deliver_error_reports(receiver.url, SECRET) == []  # nothing new, nothing unacknowledged


def test_unacknowledged_reports_are_sent_again_also_over_http(
    fake: FakeStripe, client: stripe.StripeClient, receiver: Receiver
) -> None:
    create = client.v1.billing.meter_events.create
    create(params=event())
    fake.metering.unknown_customers_async = True  # the v1 call accepts it; the report says why it did not count
    accepted = create(params=event(customer="cus_nobody", identifier="later"))
    assert accepted.identifier == "later" and fake.meter_total(METER, CUSTOMER) == Decimal(5)
    receiver.status = 500
    [failed] = control(fake, "POST", "/_fake/error_reports", url=receiver.url, secret=SECRET)["delivered"]
    assert (failed["type"], failed["status"]) == ("v1.billing.meter.error_report_triggered", 500)
    receiver.status = 204
    [retried] = fake.deliver_error_reports(receiver.url, SECRET)
    assert (retried.event_id, retried.status) == (failed["event_id"], 204)
    assert len(receiver.received) == 2 and receiver.received[0][0] == receiver.received[1][0]


def test_faults_apply_to_meter_endpoints(fake: FakeStripe, client: stripe.StripeClient) -> None:
    create = client.v1.billing.meter_events.create
    fake.inject(Fault.server_error(503))
    assert refusal(create, params=event()).http_status == 503
    fake.inject(Fault.lost_response())
    with pytest.raises(stripe.APIConnectionError):
        create(params=event(identifier="lost"), options={"idempotency_key": "lost"})
    assert [e.identifier for e in fake.meter_events] == ["lost"]  # written, the answer lost
    retried = create(params=event(identifier="lost"), options={"idempotency_key": "lost"})
    assert replayed(retried) and len(fake.meter_events) == 1
    token = client.v2.billing.meter_event_session.create().authentication_token
    fake.inject(Fault.rate_limit())
    limited = refusal(
        client.v2.billing.meter_event_stream.create, params={"events": [streamed()]}, options={"api_key": token}
    )
    assert isinstance(limited, stripe.RateLimitError)
    paths = [r["path"] for r in fake.requests if r["path"].startswith("/v")]
    assert paths[-2:] == ["/v2/billing/meter_event_session", "/v2/billing/meter_event_stream"]
