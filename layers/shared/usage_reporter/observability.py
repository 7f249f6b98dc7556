"""Powertools Logger, Metrics and Tracer: one instance each for the whole process."""

from __future__ import annotations

import os
import threading

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "stripe-usage-reporter")

logger = Logger(service=SERVICE)
NAMESPACE = os.getenv("POWERTOOLS_METRICS_NAMESPACE", "StripeUsageReporter")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

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
