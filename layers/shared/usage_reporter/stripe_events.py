"""The Stripe event destination: meter events that Stripe found invalid after the stream accepted them.

Stripe validates streamed meter events asynchronously and reports the invalid ones as thin events
(``v1.billing.meter.error_report_triggered``, ``v1.billing.meter.no_meter_found``) naming a sample of
the failing events by identifier. An identifier is ``meter-event-<record_digest(client, key)>``, the same
digest that names the key's delivery plan, so each sampled identifier leads back to the caller's record:
it goes to the dead-letter queue with Stripe's reason and its stored answer becomes ``rejected``. What
cannot be traced (events Stripe did not sample, identifiers that are not ours) is counted for an alarm.

Stripe delivers an event again until it gets a 2xx, so handling one twice must change nothing: a key
already answered ``rejected`` is left alone, and the dead letter is sent before the answer is changed
(a failure between the two sends Stripe's redelivery down the same path, never loses the record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import answers, observability
from .dedup import DedupLedger, DeliveryPlans, dedup_request
from .kinds import MeterEvents, answer_fields
from .models import DeliveryPlan, FailureReason, QueuedRecord, StripeMeterEvent
from .observability import logger
from .queues import RecordQueues
from .secrets import SecretSource
from .stripe_gateway import SampledMeterError, StripeGateway


@dataclass(frozen=True)
class HandledEvent:
    """What one thin event changed: keys now rejected, failing events traced to no record of ours."""

    event_id: str
    type: str
    rejected: int = 0
    unattributed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "received": True,
            "id": self.event_id,
            "type": self.type,
            "rejected": self.rejected,
            "unattributed": self.unattributed,
        }


class StripeEventReceiver:
    def __init__(
        self,
        *,
        gateway: StripeGateway,
        webhook_secret: SecretSource,
        plans: DeliveryPlans,
        ledger: DedupLedger,
        queues: RecordQueues,
        kind: MeterEvents,
    ) -> None:
        self._gateway = gateway
        self._webhook_secret = webhook_secret
        self._plans = plans
        self._ledger = ledger
        self._queues = queues
        self._kind = kind

    def receive(self, payload: str, signature: str | None) -> HandledEvent:
        """Handle one delivery. Raises ``InvalidStripeSignature``; any other exception means "deliver it again"."""
        notice = self._gateway.read_event_notification(payload, signature, self._webhook_secret.get())
        if not notice.samples and not notice.error_count:
            logger.info("Stripe event ignored", extra={"stripe_event": notice.event_id, "type": notice.type})
            return HandledEvent(notice.event_id, notice.type)
        traced = 0
        rejected = 0
        for sample in {s.identifier: s for s in notice.samples}.values():
            plan = self._plan(sample.identifier)
            if plan is None:
                continue
            traced += 1
            rejected += self._reject(plan, sample, notice.event_id)
        unattributed = max(notice.error_count - traced, 0)
        observability.count("MeterEventsRejectedByStripe", rejected)
        observability.count("MeterEventErrorsUnattributed", unattributed)
        logger.warning(
            "Stripe reported invalid meter events",
            extra={
                "stripe_event": notice.event_id,
                "type": notice.type,
                "error_count": notice.error_count,
                "rejected": rejected,
                "unattributed": unattributed,
            },
        )
        return HandledEvent(notice.event_id, notice.type, rejected, unattributed)

    def _plan(self, identifier: str) -> DeliveryPlan | None:
        """The delivery plan of the record Stripe names, or None when the identifier is not one of ours."""
        digest = self._kind.digest_of(identifier)
        plan = self._plans.find_by_digest(self._kind.key_prefix, digest) if digest else None
        if plan is None or not plan.client_id or not isinstance(plan.stripe, StripeMeterEvent):
            return None
        return plan if plan.stripe.identifier == identifier else None

    def _reject(self, plan: DeliveryPlan, sample: SampledMeterError, event_id: str) -> int:
        """Dead-letter the record and answer ``rejected`` for its key (1), or leave it as it is (0)."""
        request = dedup_request(plan.client_id, plan.idempotency_key, plan.record)
        stored = self._ledger.answer(request) or {}
        status = stored.get("body", {}).get("status")
        if status != "accepted":
            # rejected: done before (a redelivery). queued/reported: the worker's own v1 call answers for it.
            logger.info("meter error left alone", extra={"idempotency_key": plan.idempotency_key, "status": status})
            return 0
        reason = FailureReason(
            type="stripe_error",
            code=sample.code,
            message=f"{sample.message} (Stripe validated the streamed event later and reported it in {event_id})",
        )
        message = QueuedRecord(
            kind=self._kind.name,
            client_id=plan.client_id,
            idempotency_key=plan.idempotency_key,
            record=plan.record,
            stripe=plan.stripe,
            stripe_idempotency_key=plan.stripe_idempotency_key,
            received_at=plan.fixed_at,
            reason=reason,
        )
        self._queues.send_dead_letter(message)
        fields = answer_fields(self._kind, plan.idempotency_key, plan.stripe)
        self._ledger.store(request, answers.rejected({**fields, **self._identifier(plan)}, reason))
        return 1

    def _identifier(self, plan: DeliveryPlan) -> dict[str, str]:
        assert isinstance(plan.stripe, StripeMeterEvent)
        return {self._kind.id_field: plan.stripe.identifier}
