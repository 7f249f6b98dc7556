"""The bench's AWS and Stripe: a moto server with the template's resources (in a process of its own,
``moto_process``), and the local fake Stripe (in the parent) answering every API request after a fixed
latency. The children are the Lambda instances.

The fake Stripe has no fixed-latency option: ``Fault.latency(seconds)`` delays one request (faults are a
queue, each used once). ``LatentStripe`` sleeps before every API request instead (never before the
``/_fake/`` controls), and counts how many requests were in flight at most.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.harness.fake_stripe import FakeStripe, Fault, Reply
from tests.harness.lambda_runtime import FAKE_STRIPE_KEY, local_environment
from tests.harness.local_api import DEMO_CUSTOMER, DEMO_ITEMS, DEMO_METER, DEMO_PRICE
from tests.harness.stack import Stack

from .moto_process import MotoProcess


class LatentStripe(FakeStripe):
    """``local_api.demo_fake_stripe()`` (its items, meter and customer), answering after ``latency_seconds``."""

    def __init__(self, latency_seconds: float) -> None:
        super().__init__(api_key=FAKE_STRIPE_KEY, subscription_items=DEMO_ITEMS)
        self.add_subscription_items(*DEMO_ITEMS, customer=DEMO_CUSTOMER, price=DEMO_PRICE)
        self.add_meter(DEMO_METER)
        self.add_customers(DEMO_CUSTOMER)
        self.latency_seconds = latency_seconds
        self._gauge = threading.Lock()
        self._active = 0
        self.max_in_flight = 0

    def handle(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> Reply | Fault:
        if path.startswith("/_fake/"):
            return super().handle(method, path, headers, raw_body)
        with self._gauge:
            self._active += 1
            self.max_in_flight = max(self.max_in_flight, self._active)
        try:
            time.sleep(self.latency_seconds)
            return super().handle(method, path, headers, raw_body)
        finally:
            with self._gauge:
                self._active -= 1

    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def requests_since(self, start: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests[start:])

    def reset_gauge(self) -> None:
        with self._gauge:
            self.max_in_flight = self._active


@dataclass
class Backends:
    stripe: LatentStripe
    stack: Stack
    function_env: dict[str, str]  # the ingest function's environment, as Lambda would set it
    moto: MotoProcess

    @property
    def child_env(self) -> dict[str, str]:
        """A child's environment: this process's (AWS endpoint and credentials) and the function's. Children
        never write bytecode: every cold start of a run finds the same ``.pyc`` files (see ``measure``)."""
        return {**os.environ, **self.function_env, "PYTHONDONTWRITEBYTECODE": "1"}

    def stop(self) -> None:
        self.stripe.stop()
        self.moto.stop()


def start(latency_seconds: float, moto: MotoProcess | None = None) -> Backends:
    """moto (in its own process; ``moto`` if already started) and the fake Stripe; sets this process's AWS
    environment, as ``local_api.start_backends`` does."""
    moto = moto or MotoProcess()
    try:
        moto.wait_ready()
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": moto.url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        os.environ.pop("STRIPE_API_KEY", None)  # always the fake: a bench must not report to a real account
        stripe = LatentStripe(latency_seconds)
        stack, env = local_environment(stripe_api_key=FAKE_STRIPE_KEY, stripe_api_base=stripe.start())
        # Usage records paced as deployed against a test-mode account (the local tools' default is unpaced).
        env["STRIPE_USAGE_RECORDS_PER_SECOND"] = "25"
    except BaseException:
        moto.stop()
        raise
    return Backends(stripe=stripe, stack=stack, function_env=env, moto=moto)
