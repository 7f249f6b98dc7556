"""The Stripe event destination: meter events that Stripe found invalid after the stream accepted them.

Stripe validates meter events asynchronously (all of a stream's, and some checks of v1's, such as the
customer) and reports the invalid ones as thin events (``v1.billing.meter.error_report_triggered``,
``v1.billing.meter.no_meter_found``) naming a sample of the failing events by identifier. An identifier
is ``<kind prefix>-<record_digest(client, key)>`` (meter events, mirrored usage records), the same digest
that names the key's delivery plan, so each sampled identifier leads back to the caller's record: it goes
to the dead-letter queue with Stripe's reason and its stored answer becomes ``rejected``, whether it was
``accepted`` (streamed) or ``reported`` (Stripe took a v1 event and refused it later). What cannot be
traced (events Stripe did not sample, identifiers that are not ours) is counted for an alarm.

Stripe delivers an event again until it gets a 2xx, so handling one twice must change nothing: a key
already answered ``rejected`` is left alone, and the dead letter is sent before the answer is changed
(a failure between the two sends Stripe's redelivery down the same path, never loses the record).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import answers, observability
from .dedup import DedupLedger, DeliveryPlans, dedup_request
from .kinds import MeterEventKind, answer_fields
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
        queues: RecordQueues,
        kinds: Sequence[tuple[MeterEventKind, DedupLedger]],
    ) -> None:
        self._gateway = gateway
        self._webhook_secret = webhook_secret
        self._plans = plans
        self._queues = queues
        self._kinds = kinds

    def receive(self, payload: str, signature: str | None) -> HandledEvent:
        """Handle one delivery. Raises ``InvalidStripeSignature``; any other exception means "deliver it again"."""
        notice = self._gateway.read_event_notification(payload, signature, self._webhook_secret.get())
        if not notice.samples and not notice.error_count:
            logger.info("Stripe event ignored", extra={"stripe_event": notice.event_id, "type": notice.type})
            return HandledEvent(notice.event_id, notice.type)
        traced = 0  # failing events (samples) traced to a record: one identifier can fail more than once
        rejected = 0
        samples_per_identifier = Counter(s.identifier for s in notice.samples)
        for sample in {s.identifier: s for s in notice.samples}.values():
            found = self._plan(sample.identifier)
            if found is None:
                continue
            traced += samples_per_identifier[sample.identifier]
            rejected += self._reject(*found, sample, notice.event_id)
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

    def _plan(self, identifier: str) -> tuple[MeterEventKind, DedupLedger, DeliveryPlan] | None:
        """The kind and delivery plan of the record Stripe names, or None when the identifier is not ours."""
        for kind, ledger in self._kinds:
            digest = kind.digest_of(identifier)
            if digest is None:
                continue
            plan = self._plans.find_by_digest(kind.key_prefix, digest)
            if plan and plan.client_id and isinstance(plan.stripe, StripeMeterEvent):
                return (kind, ledger, plan) if plan.stripe.identifier == identifier else None
        return None

    def _reject(
        self, kind: MeterEventKind, ledger: DedupLedger, plan: DeliveryPlan, sample: SampledMeterError, event_id: str
    ) -> int:
        """Dead-letter the record and answer ``rejected`` for its key (1), or leave it as it is (0)."""
        request = dedup_request(plan.client_id, plan.idempotency_key, plan.record)
        stored = ledger.answer(request) or {}
        status = stored.get("body", {}).get("status")
        if status not in ("accepted", "reported"):
            # rejected: done before (a redelivery). queued: on the retry queue, whose worker sends it again
            # (and if Stripe refuses it again, a later report finds it reported).
            logger.info("meter error left alone", extra={"idempotency_key": plan.idempotency_key, "status": status})
            return 0
        assert isinstance(plan.stripe, StripeMeterEvent)
        reason = FailureReason(
            type="stripe_error",
            code=sample.code,
            message=f"{sample.message} (Stripe validated the event after taking it and reported it in {event_id})",
        )
        message = QueuedRecord(
            kind=kind.name,
            client_id=plan.client_id,
            idempotency_key=plan.idempotency_key,
            record=plan.record,
            stripe=plan.stripe,
            stripe_idempotency_key=plan.stripe_idempotency_key,
            received_at=plan.fixed_at,
            reason=reason,
        )
        self._queues.send_dead_letter(message)
        fields = {**answer_fields(kind, plan.idempotency_key, plan.stripe), kind.id_field: plan.stripe.identifier}
        ledger.store(request, answers.rejected(fields, reason))
        observability.count("Rejected", kind=kind.name)
        return 1
