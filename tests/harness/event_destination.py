"""A loopback URL that hands each POST to the ingest handler as API Gateway would: where the fake Stripe
delivers its thin events (``FakeStripe.deliver_error_reports``) in tests. It keeps what it was sent and what
the handler answered, so a test can read the answer or deliver the very same request again."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.harness.lambda_runtime import GatewayRequestHandler, LambdaContext, http_api_event, load_handler


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    status: int
    answer: dict[str, Any]


@dataclass
class EventDestination:
    url: str
    received: list[Received] = field(default_factory=list)

    def post_again(self, delivery: Received) -> int:
        """Send ``delivery`` once more, byte for byte (Stripe's redelivery of an unacknowledged event)."""
        request = urllib.request.Request(self.url, data=delivery.body, headers=delivery.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@contextlib.contextmanager
def event_destination(timeout_seconds: float, path: str = "/v1/stripe/events") -> Iterator[EventDestination]:
    """An ``EventDestination`` whose POSTs reach the ingest handler in this process."""
    handler = load_handler("ingest")
    destination: EventDestination

    class Gateway(GatewayRequestHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
            event = http_api_event("POST", self.path, body, headers)
            response = handler(event, LambdaContext(timeout_seconds=timeout_seconds))
            raw = (response.get("body") or "").encode()
            answer = json.loads(raw) if raw else {}
            destination.received.append(Received(body, headers, response["statusCode"], answer))
            self.reply(response["statusCode"], {"Content-Type": "application/json"}, raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    destination = EventDestination(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield destination
    finally:
        server.shutdown()
        server.server_close()
