"""The stream barrier on its own: one send for every event offered, and never past the batch's deadline."""

from __future__ import annotations

import threading
import time

from usage_reporter.models import StripeMeterEvent
from usage_reporter.stream_batch import StreamBatch


def event(n: int) -> StripeMeterEvent:
    return StripeMeterEvent(event_name="e", payload={"value": str(n)}, identifier=f"id-{n}", timestamp=1)


def test_every_offer_and_end_before_one_send() -> None:
    sent: list[list[str]] = []
    batch = StreamBatch(lambda events: sent.append([e.identifier for e in events]), processings=3, wait_seconds=5)
    slots = [batch.slot() for _ in range(3)]
    results: dict[int, bool] = {}

    def offer(n: int) -> None:
        results[n] = slots[n].offer(event(n))

    threads = [threading.Thread(target=offer, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    assert sent == []  # the third processing has not decided yet
    slots[2].end()  # a replay: it offers nothing
    for thread in threads:
        thread.join(5)

    assert [sorted(s) for s in sent] == [["id-0", "id-1"]] and results == {0: True, 1: True}


def test_a_late_offer_does_not_push_the_send_past_the_batch_deadline() -> None:
    sent_at: list[float] = []
    started = time.monotonic()
    batch = StreamBatch(lambda events: sent_at.append(time.monotonic() - started), processings=2, wait_seconds=1.0)
    early, never = batch.slot(), batch.slot()
    time.sleep(0.8)  # the first offer comes late in the window; the other processing never decides

    assert early.offer(event(1)) is True

    assert len(sent_at) == 1 and sent_at[0] < 1.3  # the batch's deadline, not 0.8 s + a full window
    never.end()
