"""A local fake of the part of Stripe this service uses, served over real HTTP.

It answers what Stripe answers where it matters for billing correctness, checked against Stripe's
published OpenAPI spec (stripe/openapi) and Stripe's documented behaviour. It keeps a ledger of
accepted usage records and one of accepted meter events, which is what tests assert on.

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

**Billing meters.** ``POST /v1/billing/meter_events`` (form: ``event_name``, ``payload[<key>]``, ``identifier``,
``timestamp``, ``expand``; event_name and identifier at most 100 characters) runs Stripe's checks in this order: an
active meter has the event_name; no event accepted in the last 24 hours holds the identifier (one is generated when
none is sent); the payload has the meter's customer key and value key; the value is a decimal (``-?[0-9]+(.[0-9]+)?``,
ASCII, no exponent: negative usage is allowed, as Stripe documents; ``decimal_meter_values=False`` takes whole numbers
only) of at most 15 significant digits under ``2026-04-22.dahlia`` or later; the timestamp (default: now) is at most 35
days before and 5 minutes after now; the customer exists (``unknown_customers_async=True``: accepted, then reported
as an error). It answers the ``billing.meter_event`` object (no id) and appends a ``MeterEvent`` (its value a
``Decimal``) to ``meter_events``; ``meter_total(event_name, customer, start=, end=)`` applies the meter's
aggregation (``sum``, ``count``, ``last``: the latest timestamp) to the events not cancelled.
``POST /v1/billing/meter_event_adjustments`` (``event_name``, ``type=cancel``, ``cancel[identifier]``) cancels an
event received in the last 24 hours and answers ``status: pending`` (as Stripe's example; the fake applies it at
once). Both are v1 POSTs with Idempotency-Keys as above. ``GET /v1/billing/meters/{id}`` answers a meter.

``POST /v2/billing/meter_event_session`` (secret key, JSON) answers a token valid for 15 minutes (``created`` and
``expires_at`` in RFC 3339). ``POST /v2/billing/meter_event_stream`` (``Bearer <token>``, ``{"events": [...]}``, at
most 100) checks only the body's shape and answers ``{}``: the events are validated, as Stripe does later, when
``process_meter_event_stream()`` runs (``deliver_error_reports`` runs it first). Valid events join the ledger, an
identifier already held is dropped, and invalid ones become ``meter_errors`` with Stripe's codes (``no_meter``,
``archived_meter``, ``meter_event_no_customer_defined``, ``meter_event_customer_not_found``,
``meter_event_value_not_found``, ``meter_event_invalid_value``, ``meter_event_value_too_many_digits``,
``timestamp_too_far_in_past``, ``timestamp_in_future``). ``expire_sessions()`` ends every session, as 15 minutes do.

**Error reports.** ``deliver_error_reports(url, endpoint_secret)`` creates a ``v2.core.event`` per meter with errors
not reported (``v1.billing.meter.error_report_triggered``, ``related_object`` the meter) and one for event names no
meter has (``v1.billing.meter.no_meter_found``), POSTs each thin notification (no ``data``) signed as Stripe signs,
``Stripe-Signature: t=<unix now>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, sends again events no 2xx acknowledged,
and returns the ``Delivery`` list (event id, type, status; 0 for no answer). ``GET /v2/core/events/{id}`` answers
the event with ``data``: a summary and each failing event's identifier under ``reason.error_types[].sample_errors``.

====  =========================  ===================================  ========  ==============================  =====
HTTP  type                       code                                 param     meter endpoints: when           saved
====  =========================  ===================================  ========  ==============================  =====
400   invalid_request_error      parameter_missing/unknown/...        the name  as above (v1 forms)             no
400   invalid_request_error                                           the name  event_name/identifier > 100     no
400   invalid_request_error                                                     no active meter for event_name  yes
400   invalid_request_error                                                     identifier held (should-retry   yes
                                                                                false), payload, value, time,
                                                                                unknown customer
400   invalid_request_error                                                     cancel: unknown, cancelled, or  yes
                                                                                received 24 hours ago or more
404   invalid_request_error      resource_missing                     id        unknown meter or v2 event       no
400   invalid_request_error      invalid_fields                                 stream body, over 100 events    no
401   invalid_request_error      unauthorized                                   stream token unknown            no
401   temporary_session_expired  billing_meter_event_session_expired            stream token expired            no
====  =========================  ===================================  ========  ==============================  =====

v2 errors are ``{"error": {"type", "code", "message", "doc_url"}}``. Faults without a ``subscription_item`` apply to
these endpoints too. Messages are Stripe's where known (no active meter, identifier held, 35 days, 15 digits,
customer mapping key, no meter found, session expired); the rest are the fake's own.

**Lookups** (v1 GETs, their parameters read from the query; unknown or empty ones refused as above).
``GET /v1/billing/meters`` lists the meters newest first (``status`` ``active``/``inactive``; ``limit`` 1 to 100,
default 10, else 400 ``parameter_invalid_integer`` with ``param: limit``; ``starting_after`` or ``ending_before``, an
id of the list, else 400 ``resource_missing``; both: ``parameters_exclusive``) as Stripe's list object
(``object``, ``data``, ``has_more``, ``url``). ``GET /v1/subscription_items/{id}`` answers the item with its
``price`` (``recurring.usage_type: metered``, ``recurring.meter`` null for a legacy metered price, else the meter's
id; ``aggregate_usage: sum`` before basil, which removed it) and ``subscription`` (its id, or the object with
``expand[]=subscription``); ``GET /v1/subscriptions/{id}`` answers the subscription (``customer``, ``status:
active``, ``items`` a list object). The billing period is on the items from basil on, on the subscription before.
Unknown ids: 404 ``resource_missing``, ``param: id``. ``add_subscription_items(..., customer=, price=,
subscription=, meter=)`` sets them up (ids generated when not given).

**Control endpoints** (no auth; tests call the methods directly): ``GET /_fake/ledger``;
``POST /_fake/faults`` (``kind``, ``status``, ``seconds``, ``times``, ``subscription_item``);
``GET|POST /_fake/subscription_items/<si>/billing_period`` (POST with ``start`` and ``end``, unix
seconds); ``POST /_fake/subscription_items/<si>/roll_over`` (optional ``at``, default now). Period
answers are ``{"subscription_item", "current_period_start", "current_period_end"}``. Meters:
``POST /_fake/meters`` (``event_name``, ``customer_key``, ``value_key``, ``aggregation``, ``active``),
``POST /_fake/meters/<id or event_name>/deactivate``, ``POST /_fake/customers`` (``customers=cus_a,cus_b``),
``GET /_fake/meter_events``, ``GET /_fake/meter_errors``, ``POST /_fake/meter_event_stream/process``,
``POST /_fake/meter_event_sessions/expire``, ``POST /_fake/error_reports`` (``url``, ``secret``).

**Layout.** ``rules`` (Stripe's rules: versions, forms, parameters, timestamps, periods, error replies),
``faults``, ``idempotency``, ``account`` (the state, and the controls over it), ``fake`` (``FakeStripe``:
the API over the account), ``server`` (the HTTP transport); for meters ``meter_rules`` (their rules),
``meter_objects``, ``metering`` (meters, customers, ledger, errors), ``meter_stream`` (sessions, the stream),
``thin_events`` (error reports), ``meter_api`` (the endpoints), ``meter_control`` (the controls); for lookups
``query_rules`` (GET parameters, list pages), ``catalog`` (subscriptions, items, prices), ``catalog_api``;
``python -m tests.harness.fake_stripe`` serves it.
"""

from .account import FakeAccount
from .fake import FakeStripe
from .faults import FAULT_KINDS, Fault
from .meter_objects import Meter, MeterError, MeterEvent
from .rules import (
    ACCOUNT_DEFAULT_VERSION,
    DAY,
    FIRST_VERSION_WITHOUT_USAGE_RECORDS,
    STRIPE_RELEASES,
    USAGE_RECORD_PARAMS,
    USAGE_RECORDS_PATH,
    BillingPeriod,
    Params,
    Reply,
    UsageParams,
    is_stripe_version,
    parse_form,
    parse_integer,
    stripe_error,
)
from .thin_events import Delivery, signature_header

__all__ = [
    "ACCOUNT_DEFAULT_VERSION",
    "DAY",
    "FAULT_KINDS",
    "FIRST_VERSION_WITHOUT_USAGE_RECORDS",
    "STRIPE_RELEASES",
    "USAGE_RECORDS_PATH",
    "USAGE_RECORD_PARAMS",
    "BillingPeriod",
    "Delivery",
    "FakeAccount",
    "FakeStripe",
    "Fault",
    "Meter",
    "MeterError",
    "MeterEvent",
    "Params",
    "Reply",
    "UsageParams",
    "is_stripe_version",
    "parse_form",
    "parse_integer",
    "signature_header",
    "stripe_error",
]
