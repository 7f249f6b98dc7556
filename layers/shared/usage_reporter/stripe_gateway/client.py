"""The Stripe client (built once per API key), the meter event stream's session token, and the time budget
of one Stripe call."""

from __future__ import annotations

import datetime
import functools
import threading
import time
from typing import TYPE_CHECKING, Any

from ..config import Settings

if TYPE_CHECKING:
    import stripe

TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


def worst_case_seconds(settings: Settings) -> float:
    """How long one record's Stripe call can take with all its retries (backoff 0.5 s doubling to 5 s)."""
    attempts = settings.stripe_max_network_retries + 1
    backoff = sum(min(0.5 * 2.0**n, 5.0) for n in range(settings.stripe_max_network_retries))
    return attempts * settings.stripe_timeout_seconds + backoff


SESSION_RENEW_MARGIN_SECONDS = 60


class MeterEventSession:
    """The v2 meter event stream's authentication token (valid 15 minutes), shared by every request of this
    process and renewed before it expires, or when Stripe says it has."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._api_key = ""

    def token(self, client: stripe.StripeClient, api_key: str, *, renew: bool = False) -> str:
        with self._lock:
            fresh = time.time() < self._expires_at - SESSION_RENEW_MARGIN_SECONDS and api_key == self._api_key
            if renew or self._token is None or not fresh:
                session = client.v2.billing.meter_event_session.create()
                self._token = session.authentication_token
                self._expires_at = datetime.datetime.fromisoformat(session.expires_at).timestamp()
                self._api_key = api_key
            return self._token


def rfc3339(unix_seconds: int) -> str:
    """The v2 API's time format."""
    return datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# Connections kept open to Stripe, shared by a batch's threads: the SDK otherwise opens a session (and a TLS
# handshake) per thread, and a batch's threads are new each invocation. BATCH_CONCURRENCY is at most 32.
MAX_STRIPE_CONNECTIONS = 32


@functools.lru_cache(maxsize=2)  # rebuilt only when the key rotates
def build_client(api_key: str, api_base: str | None, max_retries: int, timeout_seconds: float) -> stripe.StripeClient:
    import requests
    import stripe

    session = requests.Session()  # thread-safe for this use: no cookies, one connection pool per host
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=MAX_STRIPE_CONNECTIONS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)  # the local fake Stripe
    base: Any = {"api": api_base, "meter_events": api_base} if api_base else {}  # the SDK's BaseAddresses
    return stripe.StripeClient(
        api_key,
        base_addresses=base,
        max_network_retries=max_retries,
        http_client=stripe.RequestsClient(timeout=timeout_seconds, session=session),
    )


class RequestPacer:
    """At most ``per_second`` calls a second from this process, spaced evenly (Stripe's rate limit for usage
    records is per account: about 100 requests/s live, 25/s in test mode)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)
