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
from dataclasses import dataclass, field
from typing import Any

# Fail fast inside a Lambda invocation: a hung AWS call must not eat the Stripe time budget.
_CLIENT_CONFIG = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "max_attempts": 3},
    # A streamed batch processes its (up to 100) events in as many threads at once.
    "max_pool_connections": 32,
}


Environment = tuple[tuple[str, str], ...]


def aws_environment() -> Environment:
    """What a Session and its clients are built from: region, credentials, endpoints, profile, config files."""
    while True:
        try:
            return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_")))
        except (KeyError, RuntimeError):  # another thread changed the environment while it was read: again
            continue


@dataclass
class _Built:
    """The Session and clients built from one environment (replaced whole, so no reader mixes two)."""

    environment: Environment
    clients: dict[str, Any] = field(default_factory=dict)
    session: Any = None


class _Clients:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built = _Built(environment=())

    def get(self, service: str) -> Any:
        built = self._built
        found = built.clients.get(service)
        if found is not None and built.environment == aws_environment():
            return found
        with self._lock:
            environment = aws_environment()
            if self._built.environment != environment:
                self._built = _Built(environment)
            built = self._built
            if service not in built.clients:
                import boto3  # imported here: the 401 and 4xx paths never need it
                from botocore.config import Config

                if built.session is None:
                    built.session = boto3.session.Session()
                built.clients[service] = built.session.client(service, config=Config(**_CLIENT_CONFIG))
            return built.clients[service]


_clients = _Clients()


def client(service: str) -> Any:
    """The process's client for ``service`` (built on first use)."""
    return _clients.get(service)
