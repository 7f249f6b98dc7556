"""Caller authentication, webhook-style: ``X-Usage-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

Several ``v1=`` entries may be sent, and a client may have several secrets, so secrets can be
rotated without downtime. Comparisons are constant-time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


# A valid header is ``t=<10 digits>`` plus a few 64-hex signatures: anything far longer is refused
# before it is parsed, and ``t`` must be ASCII digits of a plausible length (``int()`` is never fed
# 5,000 digits, nor ``"²"``, which ``str.isdigit`` accepts).
MAX_SIGNATURE_HEADER_CHARS = 1024
MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_CLIENT_ID_CHARS = 128
# Rotation needs two; every check computes this many HMACs (padding with dummies), so the time taken
# says nothing about the client or how many secrets it has.
MAX_SECRETS_PER_CLIENT = 3
# HMAC work done for an unknown client, so that it takes as long as a known client's check.
_DUMMY_SECRET = "no-such-client-" + "0" * 32


def _parse_signature_header(header: str) -> tuple[int, list[str]]:
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        raise AuthenticationError(f"X-Usage-Signature is longer than {MAX_SIGNATURE_HEADER_CHARS} characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif name == SIGNATURE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise AuthenticationError("X-Usage-Signature has no valid t=<unix seconds> element")
    if not signatures:
        raise AuthenticationError(f"X-Usage-Signature has no {SIGNATURE_SCHEME}= signature")
    if len(signatures) > MAX_SIGNATURES:
        raise AuthenticationError(f"X-Usage-Signature has more than {MAX_SIGNATURES} signatures")
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
    padded = [*secrets, *[_DUMMY_SECRET] * (MAX_SECRETS_PER_CLIENT - len(secrets))]
    expected = [compute_signature(secret, timestamp, body) for secret in padded]
    # Check every pair, so the time taken does not depend on which one matched.
    matched = False
    for candidate in signatures:
        for index, wanted in enumerate(expected):
            matched |= hmac.compare_digest(candidate.encode(), wanted.encode()) and index < len(secrets)
    if not matched:
        raise AuthenticationError("unknown client or signature mismatch")


@dataclass(frozen=True)
class Client:
    """An authenticated caller and what it may report to (``None``: any subscription item)."""

    client_id: str
    subscription_items: Allowed | None = None
    event_names: Allowed | None = None

    def may_report_to(self, subscription_item: str) -> bool:
        return self.subscription_items is None or self.subscription_items.allows(subscription_item)

    def may_send_event(self, event_name: str) -> bool:
        return self.event_names is None or self.event_names.allows(event_name)


@dataclass(frozen=True)
class Allowed:
    """Exact names, and prefixes (written ``name*``); an empty list allows nothing."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, client_id: str, setting: str, value: object) -> Allowed | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip("*") for item in value):
            raise SecretUnavailable(f"client {client_id!r}: {setting} must be a list of names or prefixes*")
        return cls(
            frozenset(item for item in value if not item.endswith("*")),
            tuple(item[:-1] for item in value if item.endswith("*")),
        )

    def allows(self, name: str) -> bool:
        return name in self.exact or any(name.startswith(prefix) for prefix in self.prefixes)


@dataclass(frozen=True)
class ClientEntry:
    secrets: tuple[str, ...]
    client: Client


def _entry(client_id: str, value: object) -> ClientEntry:
    """``"secret"``, ``["new", "old"]`` or ``{"secrets": [...], "subscription_items": ["si_1", "si_team_*"],
    "event_names": ["api_calls", "team_a_*"]}``."""
    limits: dict[str, object] = {}
    if isinstance(value, dict):
        unknown = set(value) - {"secrets", "subscription_items", "event_names"}
        if unknown:
            raise SecretUnavailable(f"client {client_id!r}: unknown setting(s) {sorted(unknown)}")
        limits = {name: value.get(name) for name in ("subscription_items", "event_names")}
        value = value.get("secrets")
    secrets = [value] if isinstance(value, str) else value
    if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise SecretUnavailable(f"client {client_id!r}: secret must be a string or a list of strings")
    if len(secrets) > MAX_SECRETS_PER_CLIENT:
        raise SecretUnavailable(f"client {client_id!r}: at most {MAX_SECRETS_PER_CLIENT} secrets (rotation needs two)")
    client = Client(
        client_id,
        subscription_items=Allowed.parse(client_id, "subscription_items", limits.get("subscription_items")),
        event_names=Allowed.parse(client_id, "event_names", limits.get("event_names")),
    )
    return ClientEntry(tuple(secrets), client)


@functools.lru_cache(maxsize=4)  # the secret's text changes only on rotation
def parse_client_secrets(raw: str) -> dict[str, ClientEntry]:
    """The client-secrets JSON: ``{"client id": entry}``, each entry as ``_entry`` describes."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise SecretUnavailable("client secrets are not JSON") from None
    if not isinstance(data, dict):
        raise SecretUnavailable("client secrets must be a JSON object of client id -> secret(s)")
    return {str(client_id): _entry(str(client_id), value) for client_id, value in data.items()}


class Authenticator:
    """Checks the two auth headers against the clients that ``load_clients`` returns (it caches).

    Unknown and known clients get the same answers and the same work (the timestamp check, then an
    HMAC), so neither the body nor the timing tells a stranger which client ids exist.
    """

    def __init__(self, load_clients: Callable[[], dict[str, ClientEntry]], tolerance_seconds: int) -> None:
        self._load_clients = load_clients
        self._tolerance_seconds = tolerance_seconds

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> Client:
        """The authenticated client, or ``AuthenticationError``. Header names are lower case."""
        client_id = headers.get(CLIENT_HEADER, "").strip()
        header = headers.get(SIGNATURE_HEADER, "")
        if not client_id:
            raise AuthenticationError("missing X-Usage-Client header")
        if not header:
            raise AuthenticationError("missing X-Usage-Signature header")
        entry = self._load_clients().get(client_id) if len(client_id) <= MAX_CLIENT_ID_CHARS else None
        # An unknown client is checked against no secret: the same work (padded HMACs), the same answer.
        verify_signature(entry.secrets if entry else (), header, body, tolerance_seconds=self._tolerance_seconds)
        if entry is None:  # unreachable: no secret can match; refused all the same
            raise AuthenticationError("unknown client or signature mismatch")
        return entry.client


def loggable_client_id(headers: Mapping[str, str]) -> str:
    """The unauthenticated X-Usage-Client, bounded and printable, for a log line."""
    raw = headers.get(CLIENT_HEADER, "")
    shown = "".join(ch if ch.isprintable() else "?" for ch in raw[:MAX_CLIENT_ID_CHARS])
    return shown + (f"...(+{len(raw) - MAX_CLIENT_ID_CHARS} chars)" if len(raw) > MAX_CLIENT_ID_CHARS else "")
