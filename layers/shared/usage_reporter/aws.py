"""The one place that builds AWS SDK clients.

boto3 reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) itself, which is how local
runs and tests point these clients at moto. Every client comes from one shared Session: a Session
loads botocore's data files (~240 ms), so one per client would pay it again for each service. Clients
are built once and shared by the threads of a batch (boto3 clients are thread-safe; Sessions are not,
hence the lock around building them). They are built again only if the ``AWS_*`` environment they were built
from changes (in Lambda it never does; tests and the local server point them elsewhere).
"""

from __future__ import annotations

import os
import threading
from typing import Any

# Fail fast inside a Lambda invocation: a hung AWS call must not eat the Stripe time budget.
_CLIENT_CONFIG = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "max_attempts": 3},
    # A streamed batch processes its (up to 100) events in as many threads at once.
    "max_pool_connections": 32,
}


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """What a Session and its clients are built from: region, credentials, endpoint, profile, config files."""
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_")))


class _Clients:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._built_from: tuple[tuple[str, str], ...] = ()

    def get(self, service: str) -> Any:
        environment = _aws_environment()
        found = self._clients.get(service)
        if found is not None and environment == self._built_from:
            return found
        with self._lock:
            if environment != self._built_from:
                self._session, self._built_from = None, environment
                self._clients.clear()
            if service not in self._clients:
                import boto3  # imported here: the 401 and 4xx paths never need it
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                self._clients[service] = self._session.client(service, config=Config(**_CLIENT_CONFIG))
            return self._clients[service]


_clients = _Clients()


def client(service: str) -> Any:
    """The process's client for ``service`` (built on first use)."""
    return _clients.get(service)
