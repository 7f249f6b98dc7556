"""One signed HTTP exchange with the service (``urllib``), no retries: what every call is built on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._version import __version__
from .signing import Secret, signed_headers

USER_AGENT = f"stripe-usage-reporter-client/{__version__} (python urllib)"


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received: the status, the headers (names as sent) and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """A header's value, the name compared case-insensitively."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)


def check_url(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) (urllib would also open ``file:`` URLs)."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"the service URL must start with https:// or http://, not {url!r}")
    return url.rstrip("/")


def post_signed(url: str, body: bytes, client_id: str, secret: Secret, *, timeout: float) -> RawResponse:
    """POST ``body`` to ``url``, signed now, once. Every HTTP answer is returned (4xx and 5xx too); a
    network failure raises what urllib raises (``urllib.error.URLError``, ``TimeoutError``, ...)."""
    check_url(url)
    headers = {**signed_headers(body, client_id, secret), "Accept": "application/json", "User-Agent": USER_AGENT}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 - checked
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked above
            return RawResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return RawResponse(error.code, dict(error.headers.items()), error.read())
