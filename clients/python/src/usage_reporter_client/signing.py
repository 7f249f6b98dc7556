"""Request signing, webhook-style (the scheme Stripe signs its webhooks with).

``X-Usage-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``, next to
``X-Usage-Client: <client id>``. Sign the exact bytes you send; ``t`` must be within 300 s of the
service's clock. Several ``v1=`` entries may be sent (one per secret), so secrets rotate without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import TypeAlias

CLIENT_HEADER = "X-Usage-Client"
SIGNATURE_HEADER = "X-Usage-Signature"
SIGNATURE_SCHEME = "v1"

Secret: TypeAlias = str | Sequence[str]
"""One secret, or several (during a rotation: each is signed with, the service accepts any)."""


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _secrets(secret: Secret) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("a secret must be a non-empty string (or a list of them)")
    return secrets


def sign(secret: Secret, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Usage-Signature`` header value for ``body``, signed now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    signatures = ",".join(f"{SIGNATURE_SCHEME}={compute_signature(s, at, body)}" for s in _secrets(secret))
    return f"t={at},{signatures}"


def signed_headers(body: bytes, client_id: str, secret: Secret, timestamp: int | None = None) -> dict[str, str]:
    """Every header a request with ``body`` needs: its content type, the client id and the signature."""
    if not client_id:
        raise ValueError("client_id must not be empty")
    return {
        "Content-Type": "application/json",
        CLIENT_HEADER: client_id,
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }
