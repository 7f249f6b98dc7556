"""How Stripe's answers and failures are classified: refused for good, worth retrying, or held for review."""

from __future__ import annotations

from .. import observability
from ..models import KEY_SEEN_WITH_OTHER_PARAMETERS, FailureReason, stripe_key_reason
from ..observability import logger
from ..secrets import SecretMisconfigured, SecretUnavailable


class StripeDeliveryError(Exception):
    """Stripe did not accept the record.

    ``permanent``: Stripe refused it for good; nothing is stored under the key. ``needs_review``:
    Stripe has seen the key with other parameters, so it may hold the record: neither a refusal
    nor worth retrying, only an operator who checked Stripe can release it (under a fresh key).
    Otherwise the failure is transient and Stripe may or may not have written the record. ``replayed``:
    the answer is the one Stripe saved for an earlier request under the key (``Idempotent-Replayed``).
    """

    def __init__(
        self, reason: FailureReason, *, permanent: bool, needs_review: bool = False, replayed: bool = False
    ) -> None:
        super().__init__(reason.message)
        self.reason = reason
        self.permanent = permanent
        self.needs_review = needs_review
        self.replayed = replayed


def _replayed(error: Exception) -> bool:
    headers = getattr(error, "headers", None) or {}
    return any(name.lower() == "idempotent-replayed" and str(value) == "true" for name, value in headers.items())


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
        return StripeDeliveryError(reason, permanent=True, replayed=_replayed(error))
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
    return StripeDeliveryError(reason, permanent=permanent, replayed=permanent and _replayed(error))


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


def key_problem(exc: SecretUnavailable) -> FailureReason:
    """The reason a record waits when the Stripe key cannot be used; a wrong key is a configuration error,
    counted (``ConfigurationInvalid``, alarmed) and said in the record's reason."""
    if isinstance(exc, SecretMisconfigured):
        # The detail (which mode, which prefixes) is for the operator's log, not for the callers' answers.
        logger.error("Stripe API key misconfigured", extra={"cause": str(exc)})
        observability.count("ConfigurationInvalid")
        return stripe_key_reason("the service's Stripe key is misconfigured; its operators are alerted")
    logger.error("Stripe API key unavailable", extra={"cause": str(exc)})
    return stripe_key_reason(None)
