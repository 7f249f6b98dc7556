"""One v2 meter event stream request for a whole batch, while each event keeps its own exactly-once processing.

Every event of a batch is processed in its own thread, under its own dedup lock and delivery plan (so a
replay, a conflict or a queued event is decided per event, as everywhere else). Instead of calling Stripe,
a processing offers its event to the batch and waits; once every processing has either offered its event
or ended without one (a replay, a conflict, a late record), the events offered go to Stripe in one request
and each waiting processing learns the result. Past the batch's deadline (the invocation must keep time for
the Stripe call), a waiting processing sends what is there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .models import StripeMeterEvent
from .stripe_gateway import StreamRefused


@dataclass
class _Offer:
    event: StripeMeterEvent
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class StreamBatch:
    """The events of one request, sent together by ``send`` (which raises for the whole group)."""

    def __init__(self, send: Callable[[list[StripeMeterEvent]], None], processings: int, wait_seconds: float) -> None:
        self._send = send
        # One deadline for the batch (not a wait per offer): a late offer must not push the send past it.
        self._deadline = time.monotonic() + wait_seconds
        self._lock = threading.Lock()
        self._undecided = processings  # processings that have neither offered an event nor ended
        self._offers: list[_Offer] = []

    def slot(self) -> StreamSlot:
        return StreamSlot(self)

    def _offer(self, event: StripeMeterEvent) -> bool:
        offer = _Offer(event)
        with self._lock:
            self._offers.append(offer)
            self._undecided -= 1
            group = self._take_if_complete()
        if group:
            self._flush(group)
        if not offer.done.wait(max(0.0, self._deadline - time.monotonic())):
            with self._lock:  # the others are slow: send what is there now (they form a group of their own)
                group = self._offers if offer in self._offers else []
                self._offers = [] if group else self._offers
            if group:
                self._flush(group)
            offer.done.wait()
        if isinstance(offer.error, StreamRefused):
            return False  # Stripe took none of the request: this event goes alone, through v1
        if offer.error is not None:
            raise offer.error
        return True

    def _ended_without_offer(self) -> None:
        with self._lock:
            self._undecided -= 1
            group = self._take_if_complete()
        if group:
            self._flush(group)

    def _take_if_complete(self) -> list[_Offer]:
        """Under the lock: the offers to send now, when no processing can still offer one."""
        if self._undecided > 0 or not self._offers:
            return []
        group, self._offers = self._offers, []
        return group

    def _flush(self, group: list[_Offer]) -> None:
        error: Exception | None = None
        try:
            self._send([offer.event for offer in group])
        except Exception as exc:  # every offer learns it: the group was one request
            error = exc
        for offer in group:
            offer.error = error
            offer.done.set()


class StreamSlot:
    """One processing's place in a ``StreamBatch``: it offers its event at most once, and always ends."""

    def __init__(self, batch: StreamBatch) -> None:
        self._batch = batch
        self._decided = False

    def offer(self, event: StripeMeterEvent) -> bool:
        """Send ``event`` with the others: True once Stripe took the request, False when Stripe refused the
        request as a whole (send the event alone). Raises the group's ``StripeDeliveryError``."""
        if self._decided:
            raise RuntimeError("a processing offers at most one event")
        self._decided = True
        return self._batch._offer(event)

    def end(self) -> None:
        """The processing is over; if it offered nothing, the others need not wait for it."""
        if not self._decided:
            self._decided = True
            self._batch._ended_without_offer()
