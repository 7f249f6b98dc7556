"""The tests' own AWS clients (to set up and inspect what the service sees), built once per AWS environment.

``boto3.client()`` builds a client at every call (about 20 ms), and moto's mock resets boto3's default Session
for every test (about 150 ms to load botocore's data again): paid hundreds of times over the suite.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3

from usage_reporter.aws import Environment, aws_environment

_lock = threading.Lock()
_sessions: dict[Environment, Any] = {}
_clients: dict[tuple[str, Environment], Any] = {}


def aws_client(service: str) -> Any:
    """A client for ``service`` in the current ``AWS_*`` environment (moto's, a moto server's, a fault proxy's)."""
    environment = aws_environment()
    with _lock:
        found = _clients.get((service, environment))
        if found is None:
            if environment not in _sessions and len(_sessions) >= 3:  # a Session is ~12 MB: keep the newest few
                oldest = next(iter(_sessions))
                del _sessions[oldest]
                for key in [key for key in _clients if key[1] == oldest]:
                    del _clients[key]
            session = _sessions.get(environment)
            if session is None:
                session = _sessions[environment] = boto3.session.Session()
            found = _clients[(service, environment)] = session.client(service)
        return found
