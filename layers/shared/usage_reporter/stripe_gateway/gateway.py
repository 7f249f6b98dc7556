"""The Stripe calls the service makes: usage records, meter events (v1 and the v2 stream), cancels, thin
events, and the lookups for mirroring.

stripe-python 16 has no usage-record methods (the API was removed in ``2025-03-31.basil``), so
records go through ``raw_request`` to the legacy endpoint with a pinned pre-basil Stripe-Version.
Every attempt of one record uses the same Idempotency-Key, so a retry can never count it twice
while Stripe remembers the key (~24 h); after that, the dedup table is the source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..models import FailureReason, StripeMeterEvent, StripeMeterEventCancel, StripeUsage
from ..secrets import SecretMisconfigured, SecretSource
from .client import LIVE_KEY_PREFIXES, TEST_KEY_PREFIXES, MeterEventSession, RequestPacer, build_client, rfc3339
from .errors import InvalidStripeSignature, StreamRefused, StripeDeliveryError, UnreadableStripeEvent, classify
from .shapes import METER_ERROR_EVENT_TYPES, ItemBilling, SampledMeterError, StripeEventNotice

if TYPE_CHECKING:
    import stripe


class StripeGateway:
    def __init__(self, settings: Settings, api_key: SecretSource) -> None:
        self._settings = settings
        self._api_key = api_key
        self._session = MeterEventSession()
        self._usage_record_pacer = RequestPacer(settings.usage_record_rate)

    def _client(self) -> stripe.StripeClient:
        key = self._api_key.get()
        allowed = TEST_KEY_PREFIXES if self._settings.stripe_mode == "test" else LIVE_KEY_PREFIXES
        if not key.startswith(allowed):
            # Never let a test deployment bill real customers, nor a live one report into a sandbox.
            prefixes = " or ".join(f"{prefix}..." for prefix in allowed)
            raise SecretMisconfigured(
                f"the Stripe API key is not a {self._settings.stripe_mode}-mode key ({prefixes}) as STRIPE_MODE="
                f"{self._settings.stripe_mode} requires: put the right key in the secret"
            )
        settings = self._settings
        return build_client(
            key, settings.stripe_api_base, settings.stripe_max_network_retries, settings.stripe_timeout_seconds
        )

    def create_usage_record(self, usage: StripeUsage, idempotency_key: str) -> str:
        """Report ``usage``; the Stripe usage record id, or ``StripeDeliveryError``."""
        import stripe

        client = self._client()
        self._usage_record_pacer.wait()  # a batch never goes faster than Stripe allows
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
                    "timestamp": rfc3339(event.timestamp),
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
