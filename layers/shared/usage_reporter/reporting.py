"""Report one usage record exactly once: dedup, Stripe, and the queues when Stripe does not take it.

Outcomes, stored in the dedup record and replayed for the same (client, key, payload):
- 200 reported: Stripe accepted it.
- 202 queued:   Stripe was unreachable, slow, rate-limiting or failing; the record is on the retry queue.
- 422 rejected: Stripe refused it for good; the record and the reason are on the dead-letter queue.
When neither Stripe nor SQS takes the record, ``DeliveryImpossible`` escapes the idempotent function,
Powertools deletes the dedup record, and the caller gets a 503 it can retry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS
from aws_lambda_powertools.utilities.typing import LambdaContext

from . import answers, observability
from .answers import Outcome, error_body
from .config import Settings
from .dedup import DeliveryPlans, PlanUnavailable, dedup_request, idempotency_config, payload_sha256
from .kinds import RecordKind, UsageRecords, answer_fields
from .meter_event_models import ResolvedCancel
from .models import DeliveryPlan, FailureReason, QueuedRecord, StripeMeterEvent, late_record_reason
from .observability import logger
from .queues import QueueUnavailable, RecordQueues
from .secrets import SecretUnavailable
from .stream_batch import StreamBatch, StreamSlot
from .stripe_gateway import StripeDeliveryError, StripeGateway, key_problem, worst_case_seconds

IN_PROGRESS_RETRY_AFTER_SECONDS = 5
CANCEL_WINDOW_SECONDS = 24 * 3600  # Stripe cancels an event only within 24 h of receiving it
UNAVAILABLE_RETRY_AFTER_SECONDS = 30

_METRIC_BY_STATUS = {
    "reported": "Reported",
    "accepted": "Accepted",
    "queued": "Queued",
    "rejected": "Rejected",
    "idempotency_conflict": "IdempotencyConflict",
    "idempotency_in_progress": "IdempotencyInProgress",
    "service_unavailable": "ServiceUnavailable",
}


class DeliveryImpossible(Exception):
    """Neither Stripe nor SQS took the record: nothing may be remembered for this key."""


class CancelRefused(Exception):
    """A cancellation that cannot go to Stripe: the answer's status, error type and message."""

    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type


class PayloadConflict(Exception):
    """The key's delivery plan was fixed for another payload (by a processing whose answer was lost)."""


class Reporter:
    """Reports records of any kind exactly once; one dedup scope (and persistence layer) per kind."""

    def __init__(
        self,
        settings: Settings,
        *,
        gateway: StripeGateway,
        queues: RecordQueues,
        persistence: Callable[[], BasePersistenceLayer],
        plans: DeliveryPlans,
        kinds: Sequence[RecordKind],
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._queues = queues
        self._plans = plans
        self._config = idempotency_config(settings)
        self._kinds = {kind.name: kind for kind in kinds}
        self._stores = {kind.name: persistence() for kind in kinds}
        self._deliver_once = {
            kind.name: idempotent_function(
                data_keyword_argument="request",
                config=self._config,
                persistence_store=self._stores[kind.name],
                key_prefix=kind.key_prefix,
            )(self._deliver)
            for kind in kinds
        }
        self._stripe_call_seconds = worst_case_seconds(settings) + settings.stripe_budget_reserve_seconds

    def report_many(
        self,
        client_id: str,
        records: Sequence[Any],
        *,
        received_at: int,
        context: LambdaContext,
        kind: RecordKind | None = None,
        stream: bool = False,
    ) -> list[Outcome]:
        """Report each record (in parallel, bounded); outcomes in the order of ``records``. ``stream``: the
        meter events go to Stripe together, in one v2 meter event stream request (see ``stream_batch``)."""
        kind = kind or UsageRecords()
        self._config.register_lambda_context(context)
        workers = min(self._settings.batch_concurrency, len(records))
        if kind.name == "usage_record":
            # Paced records wait for their turn after the time-budget check: no more in flight than the pace
            # lets start within the budget's reserve, so that wait never eats the Stripe call's own time.
            settings = self._settings
            paced = int(settings.usage_record_rate * max(settings.stripe_budget_reserve_seconds, 1.0))
            workers = max(1, min(workers, paced))
        batch = None
        if stream:
            # Every event's processing must be able to reach the batch at once: one thread each (at most 100).
            workers = len(records)
            # Events wait for each other only while the invocation still has time for the Stripe call after.
            wait_seconds = max(0.0, context.get_remaining_time_in_millis() / 1000 - self._stripe_call_seconds)
            batch = StreamBatch(self._gateway.stream_meter_events, len(records), wait_seconds)

        def one(record: Any) -> Outcome:
            slot = batch.slot() if batch else None
            try:
                return self._report(kind, client_id, record, received_at, context, stream=slot)
            finally:
                if slot:
                    slot.end()

        if workers <= 1:
            outcomes = [one(record) for record in records]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report") as pool:
                outcomes = list(pool.map(one, records))
        # A replay is not a new report: it counts only as Replayed.
        for status, number in Counter(o.status for o in outcomes if not o.replayed).items():
            observability.count(_METRIC_BY_STATUS.get(status, status), number, kind=kind.name)
        observability.count("Replayed", sum(outcome.replayed for outcome in outcomes), kind=kind.name)
        return outcomes

    def resolve_cancel(self, client_id: str, idempotency_key: str, now: int) -> ResolvedCancel:
        """The meter event a cancellation names, if Stripe holds it and can still cancel it; else
        ``CancelRefused`` (nothing is stored). ``DeliveryImpossible`` when DynamoDB cannot tell."""
        events = self._kinds["meter_event"]
        try:
            plan = self._plans.find(events.key_prefix, client_id, idempotency_key)
        except PlanUnavailable as exc:
            raise DeliveryImpossible(str(exc)) from exc
        if plan is None or not isinstance(plan.stripe, StripeMeterEvent):
            raise CancelRefused(
                422, "unknown_idempotency_key", "this client sent no meter event with this idempotency_key"
            )
        stored = self._stored_answer(events, dedup_request(client_id, idempotency_key, plan.record))
        status = (stored or {}).get("body", {}).get("status")
        if status == "rejected":
            raise CancelRefused(422, "nothing_to_cancel", "Stripe refused this event: there is nothing to cancel")
        if status not in ("reported", "accepted"):
            raise CancelRefused(
                409,
                "event_not_reported",
                "the event is not in Stripe yet (queued, or its first processing failed): cancel it once a replay "
                "of it answers reported",
            )
        if now - plan.fixed_at > CANCEL_WINDOW_SECONDS:
            hours = (now - plan.fixed_at) // 3600
            raise CancelRefused(
                422,
                "cancel_window_passed",
                f"Stripe cancels a meter event only within 24 h of receiving it; this one was sent {hours} h ago",
            )
        return ResolvedCancel(idempotency_key, plan.stripe.event_name, plan.stripe.identifier)

    def _stored_answer(self, kind: RecordKind, request: dict[str, Any]) -> dict[str, Any] | None:
        """The stored answer for ``request``, ``{"status_code", "body"}`` (None: no completed answer)."""
        store = self._stores[kind.name]
        store.configure(self._config, key_prefix=kind.key_prefix)
        try:
            found = store.get_record(request)
        except (IdempotencyItemNotFoundError, IdempotencyValidationError):
            return None
        except Exception as exc:  # botocore's errors come as they are
            raise DeliveryImpossible(f"cannot look up the key: {exc}") from exc
        if found is None or found.status != STATUS_CONSTANTS["COMPLETED"]:
            return None
        return found.response_json_as_dict() or None

    def answered(self, kind: RecordKind, client_id: str, record: Any) -> bool:
        """Whether this (client, key, payload) has a completed answer: a replay."""
        request = dedup_request(client_id, record.idempotency_key, record.dedup_payload())
        return self._stored_answer(kind, request) is not None

    def has_answer(self, kind: RecordKind, client_id: str, record: Any) -> bool:
        """Whether this (client, key) already has a stored answer or a processing (with any payload): then
        the record is not new, and dedup answers it (a replay, a conflict, in progress). ``DeliveryImpossible``
        when DynamoDB cannot tell."""
        store = self._stores[kind.name]
        store.configure(self._config, key_prefix=kind.key_prefix)
        try:
            found = store.get_record(dedup_request(client_id, record.idempotency_key, record.dedup_payload()))
        except IdempotencyItemNotFoundError:
            return False
        except IdempotencyValidationError:  # another payload: dedup answers 409
            return True
        except Exception as exc:  # Powertools wraps nothing here: botocore's errors come as they are
            raise DeliveryImpossible(f"cannot look up the key: {exc}") from exc
        return found is not None

    def _report(
        self,
        kind: RecordKind,
        client_id: str,
        record: Any,
        received_at: int,
        context: LambdaContext,
        *,
        stream: StreamSlot | None = None,
    ) -> Outcome:
        key = record.idempotency_key
        try:
            stored = self._deliver_once[kind.name](
                request=dedup_request(client_id, key, record.dedup_payload()),
                record=record,
                received_at=received_at,
                context=context,
                kind=kind,
                stream=stream,
            )
        except IdempotencyAlreadyInProgressError:
            return Outcome(
                409,
                error_body(
                    "idempotency_in_progress",
                    "a request with this idempotency_key is still being processed; retry later",
                    idempotency_key=key,
                ),
                headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_SECONDS)},
            )
        except (IdempotencyValidationError, PayloadConflict):
            return Outcome(
                409,
                error_body(
                    "idempotency_conflict",
                    "this idempotency_key was already used with a different payload",
                    idempotency_key=key,
                ),
            )
        except (DeliveryImpossible, IdempotencyPersistenceLayerError) as exc:
            logger.error("record not accepted", extra={"idempotency_key": key, "cause": str(exc)})
            return Outcome(
                503,
                error_body(
                    "service_unavailable",
                    "the record could not be reported nor queued; retry with the same key and payload "
                    "(it will not be counted twice)",
                    idempotency_key=key,
                ),
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
            )
        replayed = bool(stored.pop("replayed", False))
        return Outcome(stored["status_code"], stored["body"], replayed=replayed)

    def _deliver(
        self,
        request: dict[str, Any],
        record: Any,
        received_at: int,
        context: LambdaContext,
        kind: RecordKind,
        *,
        stream: StreamSlot | None = None,
    ) -> dict[str, Any]:
        """A processing of a (client, key): runs under the dedup lock; a later one only after a failed one."""
        client_id = request["client_id"]
        key = record.idempotency_key
        proposed = DeliveryPlan(
            stripe=kind.stripe_params(record, client_id, received_at),
            stripe_idempotency_key=kind.stripe_idempotency_key(client_id, key),
            payload_sha256=payload_sha256(request["record"]),
            record=request["record"],
            fixed_at=received_at,
            client_id=client_id,
            idempotency_key=key,
        )
        try:
            plan = self._plans.fix(kind.key_prefix, client_id, key, proposed)
        except PlanUnavailable as exc:
            raise DeliveryImpossible(str(exc)) from exc
        if plan.payload_sha256 != proposed.payload_sha256:
            # An earlier processing of this key (whose answer was lost) had another payload.
            raise PayloadConflict(key)
        params = plan.stripe
        fields = answer_fields(kind, key, params)

        # A later processing of the key: the earlier one may have reached Stripe, whatever happens now.
        reprocessed = plan != proposed

        def keep(reason: FailureReason, *, in_doubt: bool | None = None) -> QueuedRecord:
            return QueuedRecord(
                kind=kind.name,
                client_id=client_id,
                idempotency_key=key,
                record=request["record"],
                stripe=params,
                stripe_idempotency_key=plan.stripe_idempotency_key,
                received_at=plan.fixed_at,
                reason=reason,
                in_doubt=reprocessed if in_doubt is None else in_doubt,
            )

        if reprocessed and received_at - plan.fixed_at > self._settings.late_record_seconds:
            # An earlier processing may have reached Stripe, which has forgotten the key by now.
            reason = late_record_reason(plan.fixed_at, received_at)
            return self._hold_for_review(keep(reason, in_doubt=True), fields)
        # Not enough of this invocation left for a Stripe call with its retries: let the worker do it.
        out_of_time = FailureReason(type="time_budget_exhausted", message="no time left in this request to call Stripe")
        if context.get_remaining_time_in_millis() / 1000 < self._stripe_call_seconds:
            return self._queue_for_retry(keep(out_of_time), fields)
        try:
            started = time.perf_counter()
            try:
                if stream is not None and isinstance(params, StripeMeterEvent):
                    if stream.offer(params):
                        # Stripe validates streamed events later; an invalid one comes back as a thin event.
                        logger.info("accepted", extra={"idempotency_key": key, "stripe_identifier": params.identifier})
                        return answers.accepted(fields, {kind.id_field: params.identifier})
                    # Stripe refused the stream request whole: this event alone, through v1, if time is left.
                    if context.get_remaining_time_in_millis() / 1000 < self._stripe_call_seconds:
                        return self._queue_for_retry(keep(out_of_time), fields)
                stripe_id = kind.send(self._gateway, params, plan.stripe_idempotency_key)
            finally:
                observability.stripe_latency((time.perf_counter() - started) * 1000)
        except StripeDeliveryError as exc:
            if exc.needs_review:
                return self._hold_for_review(keep(exc.reason, in_doubt=True), fields)
            if exc.permanent:  # a refusal (Stripe replays the first answer): nothing is in Stripe
                return self._dead_letter(keep(exc.reason, in_doubt=False), fields)
            return self._queue_for_retry(keep(exc.reason), fields)
        except SecretUnavailable as exc:
            reason = key_problem(exc)
            return self._queue_for_retry(keep(reason), fields)
        logger.info("reported", extra={"idempotency_key": key, "stripe_id": stripe_id})
        return answers.reported(fields, {kind.id_field: stripe_id})

    def _queue_for_retry(self, message: QueuedRecord, fields: dict[str, Any]) -> dict[str, Any]:
        # The first retry waits the base backoff: an outage is rarely over within a second.
        delay = self._settings.retry_base_delay_seconds
        self._keep(lambda: self._queues.send_for_retry(message, delay_seconds=delay), message, "queued for retry")
        return answers.queued(fields, message.reason, next_attempt_at=int(time.time()) + delay)

    def _dead_letter(self, message: QueuedRecord, fields: dict[str, Any]) -> dict[str, Any]:
        # The caller learns of the rejection only once an operator can see it too.
        self._keep(lambda: self._queues.send_dead_letter(message), message, "rejected by Stripe")
        return answers.rejected(fields, message.reason)

    def _hold_for_review(self, message: QueuedRecord, fields: dict[str, Any]) -> dict[str, Any]:
        """Stripe may hold the record: an operator checks before it is sent again (never 422, never resent)."""
        self._keep(lambda: self._queues.send_dead_letter(message), message, "held for review")
        return answers.held_for_review(fields, message.reason)

    @staticmethod
    def _keep(send: Callable[[], str], message: QueuedRecord, what: str) -> None:
        """Put the record on a queue, or ``DeliveryImpossible`` (the caller gets a 503 and nothing is kept)."""
        try:
            message_id = send()
        except QueueUnavailable as exc:
            raise DeliveryImpossible(f"{message.reason.type}; {exc}") from exc
        logger.warning(
            what,
            extra={
                "idempotency_key": message.idempotency_key,
                "reason": message.reason.model_dump(),
                "message_id": message_id,
            },
        )
