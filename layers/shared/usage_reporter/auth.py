"""Caller authentication, webhook-style: ``X-Usage-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

Several ``v1=`` entries may be sent, and a client may have several secrets, so secrets can be
rotated without downtime. Comparisons are constant-time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence

from .secrets import SecretUnavailable

CLIENT_HEADER = "x-usage-client"
SIGNATURE_HEADER = "x-usage-signature"
SIGNATURE_SCHEME = "v1"


class AuthenticationError(Exception):
    """The request is not from a known client; the message is safe to show the caller."""


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Usage-Signature`` header value for ``body`` (what a caller computes)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},{SIGNATURE_SCHEME}={compute_signature(secret, at, body)}"


def _parse_signature_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SIGNATURE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise AuthenticationError("X-Usage-Signature has no valid t=<unix seconds> element")
    if not signatures:
        raise AuthenticationError(f"X-Usage-Signature has no {SIGNATURE_SCHEME}= signature")
    return timestamp, signatures


def verify_signature(
    secrets: Sequence[str], header: str, body: bytes, *, tolerance_seconds: int, now: float | None = None
) -> None:
    """Raise ``AuthenticationError`` unless one of ``secrets`` signed ``body`` within the tolerance."""
    timestamp, signatures = _parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise AuthenticationError(
            f"X-Usage-Signature timestamp is more than {tolerance_seconds} seconds from the server's clock"
        )
    expected = [compute_signature(secret, timestamp, body) for secret in secrets]
    # Check every pair, so the time taken does not depend on which one matched.
    matched = False
    for candidate in signatures:
        for wanted in expected:
            matched |= hmac.compare_digest(candidate.encode(), wanted.encode())
    if not matched:
        raise AuthenticationError("unknown client or signature mismatch")


@functools.lru_cache(maxsize=4)  # the secret's text changes only on rotation
def parse_client_secrets(raw: str) -> dict[str, list[str]]:
    """``{"client": "secret"}`` or ``{"client": ["new", "old"]}`` into ``{"client": [secrets]}``."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SecretUnavailable(f"client secrets are not JSON: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise SecretUnavailable("client secrets must be a JSON object of client id -> secret(s)")
    parsed: dict[str, list[str]] = {}
    for client_id, value in data.items():
        secrets = [value] if isinstance(value, str) else value
        if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
            raise SecretUnavailable(f"client {client_id!r}: secret must be a string or a list of strings")
        parsed[str(client_id)] = list(secrets)
    return parsed


class Authenticator:
    """Checks the two auth headers against the secrets that ``load_secrets`` returns (it caches)."""

    def __init__(self, load_secrets: Callable[[], dict[str, list[str]]], tolerance_seconds: int) -> None:
        self._load_secrets = load_secrets
        self._tolerance_seconds = tolerance_seconds

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> str:
        """The authenticated client id, or ``AuthenticationError``. Header names are lower case."""
        client_id = headers.get(CLIENT_HEADER, "").strip()
        header = headers.get(SIGNATURE_HEADER, "")
        if not client_id:
            raise AuthenticationError("missing X-Usage-Client header")
        if not header:
            raise AuthenticationError("missing X-Usage-Signature header")
        secrets = self._load_secrets().get(client_id, [])
        if not secrets:
            # Same answer as a wrong signature: do not tell strangers which client ids exist.
            _parse_signature_header(header)
            raise AuthenticationError("unknown client or signature mismatch")
        verify_signature(secrets, header, body, tolerance_seconds=self._tolerance_seconds)
        return client_id
