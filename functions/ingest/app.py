"""Ingest function: API Gateway (HTTP API) -> authenticate, validate, dedup, report to Stripe."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from usage_reporter.http_api import handle_http_event
from usage_reporter.observability import logger, metrics, trace_handler


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@trace_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_http_event(event, context)
