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

**Layout.** ``rules`` (Stripe's rules: versions, forms, parameters, timestamps, periods, error replies),
``faults``, ``idempotency``, ``account`` (the state, and the controls over it), ``fake`` (``FakeStripe``:
the API over the account), ``server`` (the HTTP transport); ``python -m tests.harness.fake_stripe`` serves it.
"""

from .account import FakeAccount
from .fake import FakeStripe
from .faults import FAULT_KINDS, Fault
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

__all__ = [
    "ACCOUNT_DEFAULT_VERSION",
    "DAY",
    "FAULT_KINDS",
    "FIRST_VERSION_WITHOUT_USAGE_RECORDS",
    "STRIPE_RELEASES",
    "USAGE_RECORDS_PATH",
    "USAGE_RECORD_PARAMS",
    "BillingPeriod",
    "FakeAccount",
    "FakeStripe",
    "Fault",
    "Params",
    "Reply",
    "UsageParams",
    "is_stripe_version",
    "parse_form",
    "parse_integer",
    "stripe_error",
]
