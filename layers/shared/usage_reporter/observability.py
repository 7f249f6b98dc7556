"""Powertools Logger, Metrics and Tracer: one instance each for the whole process."""

from __future__ import annotations

import os
import threading

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "stripe-usage-reporter")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "StripeUsageReporter"), service=SERVICE)
tracer = Tracer(service=SERVICE)

# Batch records are reported from worker threads; Metrics' buffers are not meant for that.
_metrics_lock = threading.Lock()


def count(name: str, value: int = 1) -> None:
    if value:
        with _metrics_lock:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def stripe_latency(milliseconds: float) -> None:
    with _metrics_lock:
        metrics.add_metric(name="StripeLatency", unit=MetricUnit.Milliseconds, value=milliseconds)
