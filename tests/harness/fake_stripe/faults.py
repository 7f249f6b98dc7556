"""Faults to inject: what goes wrong instead of (or around) a request, and the queue they wait in."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .rules import Reply, stripe_error

FAULT_KINDS = ("status", "reset", "delay", "slow", "after_commit")


@dataclass
class Fault:
    """What to do instead of (or around) the next matching request.

    kind: ``status`` (answer ``status`` without running the endpoint), ``reset`` (drop the connection),
    ``delay`` (sleep ``seconds`` before the request reaches the endpoint, then run normally), ``slow``
    (the endpoint itself takes ``seconds``, or until ``until`` is set: its Idempotency-Key is in flight
    meanwhile), ``after_commit`` (run the endpoint, keep its result, then answer ``status`` or drop the
    connection if ``status`` is 0).
    """

    kind: str
    status: int = 500
    seconds: float = 0.0
    should_retry: bool | None = None
    subscription_item: str | None = None  # only requests for this item; None: any
    until: threading.Event | None = field(default=None, repr=False)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Fault:
        return cls("status", status=status, **kw)

    @classmethod
    def rate_limit(cls, **kw: Any) -> Fault:
        return cls("status", status=429, **kw)

    @classmethod
    def connection_reset(cls, **kw: Any) -> Fault:
        return cls("reset", **kw)

    @classmethod
    def latency(cls, seconds: float, **kw: Any) -> Fault:
        return cls("delay", seconds=seconds, **kw)

    @classmethod
    def slow_endpoint(cls, seconds: float, **kw: Any) -> Fault:
        """The endpoint runs for ``seconds`` (or until ``until`` is set) before it writes the record."""
        return cls("slow", seconds=seconds, **kw)

    @classmethod
    def lost_response(cls, status: int = 0, **kw: Any) -> Fault:
        """Stripe writes the record, but the answer never arrives (``status`` 0) or is a 5xx."""
        return cls("after_commit", status=status, **kw)

    @classmethod
    def stall_after_commit(cls, seconds: float, **kw: Any) -> Fault:
        """Stripe writes the record, then holds the answer for ``seconds`` (a caller may die meanwhile)."""
        return cls("after_commit", status=200, seconds=seconds, **kw)

    def pause(self) -> None:
        if self.until is not None:
            self.until.wait(self.seconds)
        else:
            time.sleep(self.seconds)

    def refusal(self) -> Reply:
        """The answer of a ``status`` fault, given instead of running the endpoint."""
        reply = stripe_error(self.status, f"injected {self.status}", type_="api_error")
        if self.status == 429:
            reply = stripe_error(429, "Too many requests", code="rate_limit")
        if self.should_retry is not None:
            reply.headers["Stripe-Should-Retry"] = str(self.should_retry).lower()
        return reply

    def after_commit(self, reply: Reply) -> Reply | Fault:
        """What an ``after_commit`` fault answers once the endpoint gave ``reply``: itself means no answer."""
        self.pause()
        if self.status == 0:
            return self
        if self.status >= 400:
            return stripe_error(self.status, "injected after commit", type_="api_error")
        return reply


class FaultQueue:
    """Faults waiting for their request, first in first out, each used once."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._faults: deque[Fault] = deque()

    def add(self, *faults: Fault, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def next_for(self, subscription_item: str | None) -> Fault | None:
        """The first fault for ``subscription_item`` (or for any item), taken off the queue."""
        with self._lock:
            for fault in self._faults:
                if fault.subscription_item in (None, subscription_item):
                    self._faults.remove(fault)
                    return fault
        return None
