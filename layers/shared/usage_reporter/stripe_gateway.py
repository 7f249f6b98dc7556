"""Stripe adapter: the one place that builds the Stripe client and sends usage records.

stripe-python 16 has no usage-record methods (the API was removed in ``2025-03-31.basil``), so
records go through ``raw_request`` to the legacy endpoint with a pinned pre-basil Stripe-Version.
Every attempt of one record uses the same Idempotency-Key, so a retry can never count it twice
while Stripe remembers the key (~24 h); after that, the dedup table is the source of truth.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Settings
from .models import KEY_SEEN_WITH_OTHER_PARAMETERS, FailureReason, StripeMeterEvent, StripeMeterEventCancel, StripeUsage
from .secrets import SecretSource, SecretUnavailable

if TYPE_CHECKING:
    import stripe

_TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


class StripeDeliveryError(Exception):
    """Stripe did not accept the record.

    ``permanent``: Stripe refused it for good; nothing is stored under the key. ``needs_review``:
    Stripe has seen the key with other parameters, so it may hold the record: neither a refusal
    nor worth retrying, only an operator who checked Stripe can release it (under a fresh key).
    Otherwise the failure is transient and Stripe may or may not have written the record.
    """

    def __init__(self, reason: FailureReason, *, permanent: bool, needs_review: bool = False) -> None:
        super().__init__(reason.message)
        self.reason = reason
        self.permanent = permanent
        self.needs_review = needs_review


def stripe_idempotency_key(client_id: str, idempotency_key: str) -> str:
    """Deterministic per (client, key): a re-run after a crash sends the very same key to Stripe."""
    digest = hashlib.sha256(json.dumps([client_id, idempotency_key]).encode()).hexdigest()
    return f"usage-record-{digest}"


def worst_case_seconds(settings: Settings) -> float:
    """How long one record's Stripe call can take with all its retries (backoff 0.5 s doubling to 5 s)."""
    attempts = settings.stripe_max_network_retries + 1
    backoff = sum(min(0.5 * 2.0**n, 5.0) for n in range(settings.stripe_max_network_retries))
    return attempts * settings.stripe_timeout_seconds + backoff


def classify(error: Exception) -> StripeDeliveryError:
    """Turn a stripe-python error into a reason and a retry decision."""
    import stripe

    status = getattr(error, "http_status", None)
    stripe_error = getattr(error, "error", None)
    code = getattr(stripe_error, "code", None) or getattr(error, "code", None)
    message = getattr(stripe_error, "message", None) or getattr(error, "user_message", None) or str(error)
    request_id = getattr(error, "request_id", None)
    error_type = getattr(stripe_error, "type", None)

    if status != 409 and (isinstance(error, stripe.IdempotencyError) or error_type == "idempotency_error"):
        reason = FailureReason(
            type=KEY_SEEN_WITH_OTHER_PARAMETERS,
            code=code,
            message=(
                "Stripe has already seen this record's Idempotency-Key with other parameters, so it may "
                f"already hold the record; held for an operator to check Stripe. Stripe said: {message}"
            ),
            http_status=status,
            stripe_request_id=request_id,
        )
        return StripeDeliveryError(reason, permanent=False, needs_review=True)
    if status == 400 and "legacy metered billing" in str(message):
        # Basil-era prices: the item bills through a meter. A refusal, with a name that says what to do.
        reason = FailureReason(
            type="usage_records_unsupported",
            code=code,
            message=(
                f"{message} This subscription item is billed through a Billing meter: report its usage with "
                "POST /v1/meter_events (or mirror usage records to meter events; see README)."
            ),
            http_status=status,
            stripe_request_id=request_id,
        )
        return StripeDeliveryError(reason, permanent=True)
    if isinstance(error, stripe.APIConnectionError) or status is None:
        kind, permanent = "stripe_unreachable", False
    elif isinstance(error, stripe.RateLimitError) or status == 429:
        kind, permanent = "stripe_rate_limited", False
    elif status >= 500:
        kind, permanent = "stripe_unavailable", False
    elif status == 409:
        kind, permanent = "stripe_conflict", False  # idempotency_key_in_use: a concurrent request, same key
    elif status in (401, 403):
        # Our API key is wrong or lacks permission: the record is fine, keep it for a retry after the fix.
        kind, permanent = "stripe_auth_failed", False
    else:
        kind, permanent = "stripe_error", True
    param = getattr(stripe_error, "param", None)
    reason = FailureReason(
        type=kind, code=code, param=param, message=str(message), http_status=status, stripe_request_id=request_id
    )
    return StripeDeliveryError(reason, permanent=permanent)


class StreamRefused(Exception):
    """Stripe refused a meter event stream request as a whole (nothing of it was taken): send the events
    one by one through v1 instead, so that each gets Stripe's own answer."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.message)
        self.reason = reason


class InvalidStripeSignature(Exception):
    """A request to the event destination that Stripe did not sign with the endpoint's secret (or too long ago)."""


class UnreadableStripeEvent(Exception):
    """A correctly signed request that is not a thin event: Stripe's delivering it again would not help."""


METER_ERROR_EVENT_TYPES = frozenset({"v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"})


@dataclass(frozen=True)
class SampledMeterError:
    """One failing meter event Stripe names in an error report: its identifier, Stripe's code and message."""

    identifier: str
    code: str
    message: str


@dataclass(frozen=True)
class StripeEventNotice:
    """A verified thin event; for a meter error report, how many events failed and the ones Stripe sampled."""

    event_id: str
    type: str
    error_count: int = 0
    samples: tuple[SampledMeterError, ...] = ()


@dataclass(frozen=True)
class ItemBilling:
    """What Stripe says a subscription item bills: its price, and the subscription's customer."""

    price: str
    customer: str


# Renew a meter event session this long before Stripe's expiry: a request must not race the clock.
SESSION_RENEW_MARGIN_SECONDS = 60


class _MeterEventSession:
    """The v2 meter event stream's authentication token (valid 15 minutes), shared by every request of this
    process and renewed before it expires, or when Stripe says it has."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._api_key = ""

    def token(self, client: stripe.StripeClient, api_key: str, *, renew: bool = False) -> str:
        with self._lock:
            fresh = time.time() < self._expires_at - SESSION_RENEW_MARGIN_SECONDS and api_key == self._api_key
            if renew or self._token is None or not fresh:
                session = client.v2.billing.meter_event_session.create()
                self._token = session.authentication_token
                self._expires_at = datetime.datetime.fromisoformat(session.expires_at).timestamp()
                self._api_key = api_key
            return self._token


class StripeGateway:
    def __init__(self, settings: Settings, api_key: SecretSource) -> None:
        self._settings = settings
        self._api_key = api_key
        self._session = _MeterEventSession()

    def _client(self) -> stripe.StripeClient:
        key = self._api_key.get()
        allowed = _TEST_KEY_PREFIXES if self._settings.stripe_mode == "test" else _LIVE_KEY_PREFIXES
        if not key.startswith(allowed):
            # Never let a test deployment bill real customers, nor a live one report into a sandbox.
            raise SecretUnavailable(f"the Stripe API key does not match STRIPE_MODE={self._settings.stripe_mode}")
        settings = self._settings
        return _build_client(
            key, settings.stripe_api_base, settings.stripe_max_network_retries, settings.stripe_timeout_seconds
        )

    def create_usage_record(self, usage: StripeUsage, idempotency_key: str) -> str:
        """Report ``usage``; the Stripe usage record id, or ``StripeDeliveryError``."""
        import stripe

        client = self._client()
        try:
            response = client.raw_request(
                "post",
                f"/v1/subscription_items/{usage.subscription_item}/usage_records",
                quantity=usage.quantity,
                timestamp=usage.timestamp,
                action=usage.action,
                idempotency_key=idempotency_key,
                stripe_version=self._settings.stripe_version,
            )
        except stripe.StripeError as exc:
            raise classify(exc) from exc
        record = client.deserialize(response, api_mode="V1")
        return str(record["id"])

    def create_meter_event(self, event: StripeMeterEvent, idempotency_key: str) -> str:
        """Report ``event``; its identifier, or ``StripeDeliveryError``. A second event with the same
        identifier is refused by Stripe ("An event already exists with identifier ..."): that event is
        ours, already delivered, so it counts as delivered."""
        import stripe

        client = self._client()
        params: Any = {  # the SDK's TypedDict for these parameters
            "event_name": event.event_name,
            "payload": event.payload,
            "identifier": event.identifier,
            "timestamp": event.timestamp,
        }
        try:
            client.v1.billing.meter_events.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as exc:
            # Only Stripe's refusal of *this* identifier (a message may quote the caller's input).
            said = str(getattr(exc, "user_message", None) or exc)
            if f"already exists with identifier {event.identifier}" in said:
                return event.identifier
            raise classify(exc) from exc
        except stripe.StripeError as exc:
            raise classify(exc) from exc
        return event.identifier

    def stream_meter_events(self, events: Sequence[StripeMeterEvent]) -> None:
        """Send up to 100 events in one v2 meter event stream request. Stripe validates them later and
        reports the invalid ones as thin events. ``StreamRefused`` when Stripe refuses the request as a
        whole; ``StripeDeliveryError`` (transient) when it may or may not have taken them."""
        import stripe

        client = self._client()
        params: Any = {  # the SDK's TypedDict for these parameters
            "events": [
                {
                    "event_name": event.event_name,
                    "payload": event.payload,
                    "identifier": event.identifier,
                    "timestamp": _rfc3339(event.timestamp),
                }
                for event in events
            ]
        }
        api_key = self._api_key.get()
        try:
            for renewed in (False, True):
                token = self._session.token(client, api_key, renew=renewed)
                try:
                    client.v2.billing.meter_event_stream.create(params=params, options={"api_key": token})
                    return
                except (stripe.TemporarySessionExpiredError, stripe.AuthenticationError):
                    # The session ended before we thought (or was revoked): once more with a new one.
                    if renewed:
                        raise
        except stripe.StripeError as exc:
            failure = classify(exc)
            if failure.permanent:
                raise StreamRefused(failure.reason) from exc
            raise failure from exc

    def item_billing(self, subscription_item: str) -> ItemBilling:
        """The item's price and customer, or ``StripeDeliveryError`` (permanent: Stripe has no such item)."""
        import stripe

        client = self._client()
        try:
            item = client.v1.subscription_items.retrieve(subscription_item, params={"expand": ["subscription"]})
        except stripe.StripeError as exc:
            raise classify(exc) from exc
        subscription: Any = item.subscription  # expanded: the object, not its id
        customer = subscription.customer if isinstance(subscription.customer, str) else subscription.customer.id
        return ItemBilling(price=item.price.id, customer=customer)

    def meter_aggregations(self) -> dict[str, str]:
        """Each active meter's event name and aggregation formula (sum, count, last)."""
        import stripe

        client = self._client()
        try:
            meters = client.v1.billing.meters.list(params={"status": "active", "limit": 100})
            return {meter.event_name: meter.default_aggregation.formula for meter in meters.auto_paging_iter()}
        except stripe.StripeError as exc:
            raise classify(exc) from exc

    def read_event_notification(self, payload: str, signature: str | None, secret: str) -> StripeEventNotice:
        """Verify a thin event's ``Stripe-Signature`` (``InvalidStripeSignature``); for a meter error report,
        fetch the full event from Stripe for its errors (``StripeDeliveryError`` when Stripe cannot say)."""
        import stripe

        try:  # first, and without the API key: a stranger's request costs no secret but the webhook's
            stripe.WebhookSignature.verify_header(payload, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            raise InvalidStripeSignature(str(exc)) from None  # the message never quotes the signature
        client = self._client()
        try:
            notification = client.parse_event_notification_without_verification(payload)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # signed, yet not a thin event
            raise UnreadableStripeEvent(f"not a thin event: {type(exc).__name__}") from None
        if notification.type not in METER_ERROR_EVENT_TYPES:
            return StripeEventNotice(notification.id, notification.type)
        try:
            event: Any = notification.fetch_event()
        except stripe.StripeError as exc:
            raise classify(exc) from exc
        reason = event.data.reason
        samples = tuple(
            SampledMeterError(sample.request.identifier, error_type.code, sample.error_message)
            for error_type in reason.error_types
            for sample in error_type.sample_errors
        )
        return StripeEventNotice(event.id, event.type, int(reason.error_count), samples)

    def cancel_meter_event(self, cancel: StripeMeterEventCancel, idempotency_key: str) -> str:
        """Cancel the event with ``cancel.cancel_identifier``; that identifier, or ``StripeDeliveryError``."""
        import stripe

        client = self._client()
        params: Any = {  # the SDK's TypedDict for these parameters
            "event_name": cancel.event_name,
            "type": "cancel",
            "cancel": {"identifier": cancel.cancel_identifier},
        }
        try:
            client.v1.billing.meter_event_adjustments.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            said = str(getattr(exc, "user_message", None) or exc)
            if f"No meter event with identifier {cancel.cancel_identifier}" in said:
                # A streamed event Stripe has not processed yet (it validates the stream later): not a
                # refusal for good; the worker tries again (an event Stripe refuses is answered rejected).
                reason = FailureReason(
                    type="meter_event_not_in_stripe_yet",
                    code=getattr(exc, "code", None),
                    message=f"{said} Stripe may not have processed the streamed event yet; retried later.",
                    http_status=getattr(exc, "http_status", None),
                    stripe_request_id=getattr(exc, "request_id", None),
                )
                raise StripeDeliveryError(reason, permanent=False) from exc
            raise classify(exc) from exc
        except stripe.StripeError as exc:
            raise classify(exc) from exc
        return cancel.cancel_identifier


def _rfc3339(unix_seconds: int) -> str:
    """The v2 API's time format."""
    return datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@functools.lru_cache(maxsize=2)  # rebuilt only when the key rotates
def _build_client(api_key: str, api_base: str | None, max_retries: int, timeout_seconds: float) -> stripe.StripeClient:
    import stripe

    base: Any = {"api": api_base, "meter_events": api_base} if api_base else {}  # the SDK's BaseAddresses
    return stripe.StripeClient(
        api_key,
        base_addresses=base,
        max_network_retries=max_retries,
        http_client=stripe.RequestsClient(timeout=timeout_seconds),
    )
