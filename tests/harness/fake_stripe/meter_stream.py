"""The v2 meter event stream: sessions (15-minute tokens), the queue of events received, and their
asynchronous validation into the ledger (or into errors for error reports)."""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from .meter_objects import Incoming
from .meter_rules import SESSION_SECONDS, rfc3339, session_expired, stream_body, v2_error
from .metering import Metering
from .rules import Reply


@dataclass
class Session:
    id: str
    token: str
    created: float
    expires_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "v2.billing.meter_event_session",
            "authentication_token": self.token,
            "created": rfc3339(self.created),
            "expires_at": rfc3339(self.expires_at),
            "livemode": False,
        }


@dataclass(frozen=True)
class Received:
    """A streamed event waiting for validation: when it arrived, under which API version."""

    event: Incoming
    at: int
    version: str


class MeterStream:
    """Sessions by token and the events received and not validated yet, behind the account's lock."""

    def __init__(self, metering: Metering) -> None:
        self._metering = metering
        self._lock = metering.lock
        self._sessions: dict[str, Session] = {}
        self._queue: deque[Received] = deque()

    @property
    def pending(self) -> int:
        """Events received and not validated yet."""
        with self._lock:
            return len(self._queue)

    def open_session(self) -> Reply:
        """``POST /v2/billing/meter_event_session``: a token valid for 15 minutes."""
        now = self._metering.clock()
        session = Session(
            f"mtrses_test_{secrets.token_hex(12)}", f"mtrtok_test_{secrets.token_hex(24)}", now, now + SESSION_SECONDS
        )
        with self._lock:
            self._sessions[session.token] = session
        return Reply(200, session.as_json())

    def expire_sessions(self) -> int:
        """End every session now (as 15 minutes passing would); the number ended."""
        now = self._metering.clock()
        with self._lock:
            live = [s for s in self._sessions.values() if s.expires_at > now]
            for session in live:
                session.expires_at = now
            return len(live)

    def refusal(self, authorization: str) -> Reply | None:
        """Why a stream request's ``Authorization: Bearer <token>`` is refused, or None."""
        token = authorization.removeprefix("Bearer ")
        with self._lock:
            session = self._sessions.get(token) if authorization.startswith("Bearer ") else None
        if session is None:
            return v2_error(401, "invalid_request_error", "unauthorized", "The meter event session token is not valid.")
        if self._metering.clock() >= session.expires_at:
            return session_expired()
        return None

    def receive(self, body: Any, version: str) -> Reply:
        """``POST /v2/billing/meter_event_stream``: the body's shape is checked, the events are queued, ``{}``."""
        events = stream_body(body)
        if isinstance(events, Reply):
            return events
        now = self._metering.now()
        with self._lock:
            self._queue.extend(Received(event, now, version) for event in events)
        return Reply(200, {})

    def process(self) -> dict[str, int]:
        """Validate every event received so far, in order (what Stripe does a little after answering)."""
        counts = {"accepted": 0, "dropped": 0, "failed": 0}
        with self._lock:
            while self._queue:
                received = self._queue.popleft()
                counts[self._metering.settle(received.event, received.at, received.version)] += 1
        return counts

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._queue.clear()
