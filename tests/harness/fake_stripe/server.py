"""The HTTP transport: requests in, replies (or a dropped connection) out, one thread a connection."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .faults import Fault
from .rules import Reply, parse_integer, stripe_error


class Api(Protocol):
    def handle(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> Reply | Fault:
        """One request; a ``Fault`` back means the transport must misbehave as it says."""
        ...


def serve(api: Api, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``api`` on ``host:port`` from a daemon thread."""
    server = ThreadingHTTPServer((host, port), _handler_for(api))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True).start()
    return server


def _handler_for(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's session expects
        # Buffered: the status line, headers and body leave in one send when handle_one_request flushes.
        # Written in two sends, the body waited for the client's delayed ACK (Nagle): ~40 ms a request.
        wbufsize = -1

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self) -> Reply | Fault:
            length = self.headers.get("Content-Length") or "0"
            if parse_integer(length) is None or int(length) < 0:
                self.close_connection = True  # the body's end is unknown: the connection cannot be reused
                return stripe_error(400, f"Invalid Content-Length: {length}")
            raw = self.rfile.read(int(length)) if int(length) else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            return api.handle(self.command, self.path, headers, raw)

        def _serve(self) -> None:
            try:
                result = self._answer()
            except Exception as exc:  # a bug in the fake: answer as Stripe does for its own failures, never hang
                self.close_connection = True
                result = stripe_error(500, f"The fake Stripe failed: {type(exc).__name__}: {exc}", type_="api_error")
            if isinstance(result, Fault):  # drop the connection without an answer
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = json.dumps(result.body).encode()
            self.send_response(result.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", result.request_id)
            for name, value in result.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Handler
