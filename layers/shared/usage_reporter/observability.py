"""Powertools Logger, Metrics and Tracer: one instance each for the whole process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "stripe-usage-reporter")

logger = Logger(service=SERVICE)
NAMESPACE = os.getenv("POWERTOOLS_METRICS_NAMESPACE", "StripeUsageReporter")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def _tracing_enabled() -> bool:
    # Powertools' own rule: on in Lambda unless POWERTOOLS_TRACE_DISABLED; off elsewhere (SAM local too).
    disabled = os.getenv("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true")
    in_lambda = bool(os.getenv("AWS_LAMBDA_FUNCTION_NAME")) and not os.getenv("AWS_SAM_LOCAL")
    return in_lambda and not disabled


# Tracing off (local runs, tests): no Tracer at all, since Powertools' would still import the X-Ray SDK
# (~170 ms). On: only what the service calls is patched, AWS (botocore) and Stripe (requests); patching
# every library X-Ray knows imports each of them at cold start.
tracer = Tracer(service=SERVICE, patch_modules=("botocore", "requests")) if _tracing_enabled() else None


def trace_handler[H: Callable[..., Any]](handler: H) -> H:
    """Powertools' ``capture_lambda_handler`` when tracing is on."""
    if tracer is None:
        return handler
    return cast(H, tracer.capture_lambda_handler(handler))


# Batch records are reported from worker threads; Metrics' buffers are not meant for that.
_metrics_lock = threading.Lock()


def count(name: str, value: int = 1, *, kind: str | None = None) -> None:
    """Add to the service-wide metric ``name``; with ``kind`` (a record kind), also to ``name`` by kind."""
    if not value:
        return
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if kind:
        # Its own EMF document: a dimension the service-wide metrics (and their alarms) do not have.
        dimensions = {"service": SERVICE, "kind": kind}
        with single_metric(name, MetricUnit.Count, value, namespace=NAMESPACE, default_dimensions=dimensions):
            pass


def stripe_latency(milliseconds: float) -> None:
    with _metrics_lock:
        metrics.add_metric(name="StripeLatency", unit=MetricUnit.Milliseconds, value=milliseconds)
