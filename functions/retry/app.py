"""Retry worker: drains the retry queue into Stripe (partial batch failures reported to SQS)."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from usage_reporter import wiring
from usage_reporter.observability import logger, metrics, trace_handler

# A whole batch may fail (Stripe down): that is a normal answer here, not an error of the function.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@trace_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    worker = wiring.retry_worker()
    worker.start_batch(context)
    return process_partial_response(event=event, record_handler=worker.handle, processor=processor, context=context)
