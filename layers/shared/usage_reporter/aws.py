"""The one place that builds AWS SDK clients.

boto3 reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) itself, which is how local
runs and tests point these clients at moto.
"""

from __future__ import annotations

import functools
from typing import Any

# Fail fast inside a Lambda invocation: a hung AWS call must not eat the Stripe time budget.
_CLIENT_CONFIG = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "max_attempts": 3},
    # A streamed batch processes its (up to 100) events in as many threads at once.
    "max_pool_connections": 32,
}


@functools.cache
def client(service: str) -> Any:
    import boto3  # imported here: the 401 and 4xx paths never need it
    from botocore.config import Config

    return boto3.session.Session().client(service, config=Config(**_CLIENT_CONFIG))
