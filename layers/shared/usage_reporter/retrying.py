"""The retry worker: every record answered ``202 queued`` reaches Stripe exactly once, or an operator.

For each retry-queue message:
1. The dedup record is read first (the source of truth). Already reported: nothing to do.
2. A record first sent more than ``LATE_RECORD_SECONDS`` (23 h) ago whose earlier attempts may have
   reached Stripe unseen is not resent: Stripe may have forgotten its key, so a resend could count it
   twice. It goes to the dead-letter queue as ``needs_review`` for an operator to check Stripe.
3. Before calling Stripe the attempt is written ahead into the dedup record, so an attempt that dies
   mid-call is known to be in doubt. The call uses the record's Stripe Idempotency-Key.
4. Accepted: the dedup record becomes ``200 reported``. Refused for good: dead-letter queue with the
   reason, dedup record ``422 rejected``. Transient: back on the queue after an exponential backoff,
   until ``RETRY_MAX_RECEIVE_COUNT`` receives, then the dead-letter queue with the last reason.
"""

from __future__ import annotations

import random
import time
from contextlib import suppress
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from . import answers, observability
from .config import Settings
from .dedup import DedupLedger, DedupRecordInProgress, dedup_request
from .kinds import RecordKind, answer_fields
from .models import (
    KEY_SEEN_WITH_OTHER_PARAMETERS,
    REFUSED_FOR_NOW_REASONS,
    DeliveryState,
    FailureReason,
    QueuedRecord,
    late_record_reason,
)
from .observability import logger
from .queues import QueueUnavailable, RecordQueues
from .secrets import SecretUnavailable
from .stripe_gateway import StripeDeliveryError, StripeGateway, key_problem, worst_case_seconds

# Dead-lettered because Stripe may already hold the record: an operator checks Stripe first.
REVIEW_REASONS = frozenset({"needs_review", KEY_SEEN_WITH_OTHER_PARAMETERS})


class RetryLater(Exception):
    """Leave the message on the retry queue; it comes back after ``seconds``."""

    def __init__(self, seconds: int, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


class RetryWorker:
    def __init__(
        self,
        settings: Settings,
        gateway: StripeGateway,
        queues: RecordQueues,
        ledgers: dict[str, DedupLedger],
        kinds: dict[str, RecordKind],
    ) -> None:
        """``ledgers`` and ``kinds``: by kind name (each kind has its own dedup scope)."""
        self._settings = settings
        self._gateway = gateway
        self._queues = queues
        self._ledgers = ledgers
        self._kinds = kinds
        self._stripe_call_seconds = worst_case_seconds(settings) + settings.stripe_budget_reserve_seconds
        self._context: LambdaContext | None = None
        self._rate_limited = False

    def _ledger(self, message: QueuedRecord) -> DedupLedger:
        return self._ledgers[message.kind]

    def _fields(self, message: QueuedRecord) -> dict[str, Any]:
        return answer_fields(self._kinds[message.kind], message.idempotency_key, message.stripe)

    def start_batch(self, context: LambdaContext) -> None:
        self._context = context
        self._rate_limited = False

    def handle(self, record: SQSRecord) -> None:
        """Powertools BatchProcessor's record handler: raising marks just this message as failed."""
        receive_count = int(record.attributes.approximate_receive_count or 1)
        try:
            self._process(record.body or "", receive_count)
        except RetryLater as later:
            logger.info("retry later", extra={"message_id": record.message_id, "why": str(later)})
            observability.count("RetryScheduled")
            with suppress(QueueUnavailable):  # the queue's visibility timeout still spaces the retries
                self._queues.delay_redelivery(record.receipt_handle, later.seconds)
            raise
        except Exception:
            # Not Stripe's doing (DynamoDB, SQS, a bug): the message comes back after the usual backoff
            # (or the queue's visibility timeout if SQS is down too), and SQS's redrive policy is the last
            # resort. Alarmed on.
            logger.exception("retry worker failed on a message", extra={"message_id": record.message_id})
            observability.count("RetryFailed")
            with suppress(QueueUnavailable):
                self._queues.delay_redelivery(record.receipt_handle, self.backoff_seconds(receive_count))
            raise

    def backoff_seconds(self, receive_count: int) -> int:
        delay = min(
            self._settings.retry_base_delay_seconds * 2 ** (receive_count - 1), self._settings.retry_max_delay_seconds
        )
        return int(delay * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not security

    def _process(self, body: str, receive_count: int) -> None:
        try:
            message = QueuedRecord.model_validate_json(body)
        except ValidationError as exc:
            reason = FailureReason(type="unreadable_message", message=f"not a queued record: {exc.errors()[0]['msg']}")
            self._queues.send_unreadable_dead_letter(body, reason)
            observability.count("DeadLettered")
            logger.error("unreadable retry message dead-lettered", extra={"reason": reason.message})
            return
        request = dedup_request(message.client_id, message.idempotency_key, message.record)
        try:
            answer = self._ledger(message).answer(request)
        except DedupRecordInProgress:
            raise RetryLater(max(self._settings.retry_base_delay_seconds, 1), "ingest still holds this key") from None
        except IdempotencyValidationError:
            reason = FailureReason(type="dedup_mismatch", message="the dedup record holds another payload for this key")
            self._to_operator(message, request, DeliveryState.first(message), reason)
            return
        if answer and answer["status_code"] == 200:
            observability.count("AlreadyReported")
            return

        state = self._state(message, answer)
        now = int(time.time())
        if now - state.key_first_used_at > self._settings.late_record_seconds and state.in_doubt:
            reason = late_record_reason(state.key_first_used_at, now)
            self._to_operator(message, request, state, reason)
            return
        if self._rate_limited:
            raise RetryLater(self.backoff_seconds(receive_count), "Stripe rate-limited this batch")
        if not self._time_for_a_call():
            raise RetryLater(1, "no time left in this invocation")
        self._attempt(
            message,
            request,
            state.model_copy(update={"attempt_started_at": now, "attempts": state.attempts + 1}),
            receive_count,
        )

    def _time_for_a_call(self) -> bool:
        """Whether a Stripe call, with the SDK's retries, still fits in the invocation."""
        return not self._context or self._context.get_remaining_time_in_millis() / 1000 >= self._stripe_call_seconds

    def _state(self, message: QueuedRecord, answer: dict[str, Any] | None) -> DeliveryState:
        state = (
            DeliveryState.model_validate(answer["delivery"])
            if answer and "delivery" in answer
            else DeliveryState.first(message)
        )
        if state.attempt_started_at is not None:  # an attempt died between its Stripe call and its answer
            state = state.model_copy(update={"in_doubt": True, "attempt_started_at": None})
        refused = bool(answer and answer["status_code"] == 422)
        confirmed = (message.review_confirmed_at or 0) > state.review_confirmation_used
        if refused or confirmed:
            # Stripe refused this key for good (so it holds nothing under it, but would replay the refusal
            # for 24 h), or an operator checked Stripe and confirmed the record is not there (after a
            # late record in doubt, or a key Stripe saw with other parameters): a fresh key delivers it,
            # and its own doubt starts afresh. A confirmation is used once: the state remembers it.
            used = max(message.review_confirmed_at or 0, state.review_confirmation_used)
            state = DeliveryState.fresh_key(message, state.attempts, review_confirmation_used=used)
        return state

    def _attempt(
        self,
        message: QueuedRecord,
        request: dict[str, Any],
        attempt: DeliveryState,
        receive_count: int,
        *,
        after_replayed_refusal: bool = False,
    ) -> None:
        key, kind = message.idempotency_key, self._kinds[message.kind]
        fields = self._fields(message)
        self._ledger(message).store(
            request, {**answers.queued(fields, message.reason), "delivery": attempt.model_dump()}
        )
        try:
            stripe_id = kind.send(self._gateway, message.stripe, attempt.stripe_idempotency_key)
        except StripeDeliveryError as exc:
            # A refusal proves nothing was written under the key; any other failure may hide a write.
            done = attempt.model_copy(update={"attempt_started_at": None, "in_doubt": not exc.permanent})
            if exc.needs_review:
                self._to_operator(message, request, done, exc.reason)
                return
            if exc.permanent and exc.replayed and not after_replayed_refusal:
                # Stripe replayed the refusal it saved for an earlier attempt whose answer never reached us (so
                # nothing is stored under the key), and it may predate the fix an operator redrove this for:
                # ask Stripe now, once, under the key that follows this one (every copy of the record that
                # meets this replay derives the same key, so Stripe still takes at most one).
                if not self._time_for_a_call():
                    self._transient(message, request, done, exc.reason, receive_count)  # asked next time
                    return
                again = DeliveryState.asked_again(done).model_copy(
                    update={"attempt_started_at": int(time.time()), "attempts": done.attempts + 1}
                )
                logger.info(
                    "Stripe replayed an earlier refusal: asking again under the next key",
                    extra={"idempotency_key": key, "stripe_idempotency_key": again.stripe_idempotency_key},
                )
                self._attempt(message, request, again, receive_count, after_replayed_refusal=True)
                return
            if exc.permanent:
                self._queues.send_dead_letter(_with(message, done, exc.reason))
                self._ledger(message).store(
                    request, {**answers.rejected(fields, exc.reason), "delivery": done.model_dump()}
                )
                observability.count("RetryRejected", kind=message.kind)
                logger.warning("rejected by Stripe", extra={"idempotency_key": key, "reason": exc.reason.model_dump()})
                return
            self._rate_limited |= exc.reason.type == "stripe_rate_limited"
            if exc.reason.type in REFUSED_FOR_NOW_REASONS:
                used = done.review_confirmation_used
                done = DeliveryState.fresh_key(message, done.attempts, review_confirmation_used=used)
            self._transient(message, request, done, exc.reason, receive_count)
            return
        except SecretUnavailable as exc:
            done = attempt.model_copy(update={"attempt_started_at": None, "attempts": attempt.attempts - 1})
            self._transient(message, request, done, key_problem(exc), receive_count)
            return
        done = attempt.model_copy(update={"attempt_started_at": None})
        self._ledger(message).store(
            request, {**answers.reported(fields, {kind.id_field: stripe_id}), "delivery": done.model_dump()}
        )
        observability.count("RetryReported", kind=message.kind)
        logger.info(
            "reported on retry", extra={"idempotency_key": key, "stripe_id": stripe_id, "attempts": done.attempts}
        )

    def _transient(
        self,
        message: QueuedRecord,
        request: dict[str, Any],
        state: DeliveryState,
        reason: FailureReason,
        receive_count: int,
    ) -> None:
        if receive_count >= self._settings.retry_max_receive_count:
            final = reason.model_copy(update={"message": f"gave up after {state.attempts} attempts: {reason.message}"})
            self._to_operator(message, request, state, final)
            return
        backoff = self.backoff_seconds(receive_count)
        next_attempt_at = int(time.time()) + backoff
        self._ledger(message).store(
            request,
            {
                **answers.queued(self._fields(message), reason, next_attempt_at=next_attempt_at),
                "delivery": state.model_dump(),
            },
        )
        raise RetryLater(backoff, reason.type)

    def _to_operator(
        self,
        message: QueuedRecord,
        request: dict[str, Any],
        state: DeliveryState,
        reason: FailureReason,
    ) -> None:
        """Dead-letter the record with the reason; the caller's replay still says queued, with that reason."""
        try:
            self._queues.send_dead_letter(_with(message, state, reason))
        except QueueUnavailable as exc:
            raise RetryLater(self.backoff_seconds(1), f"dead-letter queue unavailable: {exc}") from exc
        if reason.type != "dedup_mismatch":  # never overwrite another payload's answer
            answer = (
                answers.held_for_review(self._fields(message), reason)
                if state.in_doubt and reason.type in REVIEW_REASONS
                else answers.queued(self._fields(message), reason)
            )
            self._ledger(message).store(request, {**answer, "delivery": state.model_dump()})
        observability.count("DeadLettered", kind=message.kind)
        logger.warning(
            "dead-lettered", extra={"idempotency_key": message.idempotency_key, "reason": reason.model_dump()}
        )


def _with(message: QueuedRecord, state: DeliveryState, reason: FailureReason) -> QueuedRecord:
    """The message as it goes to the dead-letter queue: the latest reason and attempt count. Its Stripe key
    stays the record's first one; the key in use is in the dedup record's delivery state."""
    return message.model_copy(
        update={"reason": reason, "attempts": state.attempts, "in_doubt": state.in_doubt, "review_confirmed_at": None}
    )
