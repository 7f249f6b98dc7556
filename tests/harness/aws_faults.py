"""AWS outages on demand: an HTTP proxy in front of the moto server that fails chosen operations.

The service's boto3 clients talk to it through ``AWS_ENDPOINT_URL``, so a failure travels the real
path: botocore sends the request, gets the service's own error answer (or a dropped connection),
retries as configured, and the service sees what it would see in an AWS outage. Operations are
named ``service:Operation`` (``dynamodb:UpdateItem``, ``sqs:SendMessage``), read from the request's
``X-Amz-Target`` header (the JSON protocol boto3 uses for DynamoDB, SQS and Secrets Manager).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# The service name in X-Amz-Target, and the error each service answers when it is down.
_SERVICES = {
    "DynamoDB_20120810": ("dynamodb", 500, "com.amazonaws.dynamodb.v20120810#InternalServerError"),
    "AmazonSQS": ("sqs", 500, "com.amazonaws.sqs#InternalError"),
    "secretsmanager": ("secretsmanager", 500, "InternalServiceError"),
}


@dataclass
class _Outage:
    remaining: int | None  # None: until cleared
    reset: bool  # drop the connection instead of answering an error


class AwsFaults:
    """Start with ``start(moto_url)``; ``fail("dynamodb:UpdateItem")`` until ``clear()``."""

    def __init__(self) -> None:
        self._outages: dict[str, _Outage] = {}
        self.failed: list[str] = []  # operations that were failed, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._upstream = ""

    def fail(self, *operations: str, times: int | None = None, reset: bool = False) -> None:
        """Fail these operations ``times`` times each (default: until ``clear``)."""
        with self._lock:
            for operation in operations:
                self._outages[operation] = _Outage(times, reset)

    def clear(self, *operations: str) -> None:
        with self._lock:
            for operation in operations or list(self._outages):
                self._outages.pop(operation, None)

    def _take(self, operation: str) -> _Outage | None:
        with self._lock:
            outage = self._outages.get(operation)
            if outage is None:
                return None
            if outage.remaining is not None:
                outage.remaining -= 1
                if outage.remaining <= 0:
                    del self._outages[operation]
            self.failed.append(operation)
            return outage

    def start(self, upstream: str) -> str:
        self._upstream = upstream
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="aws-faults", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _operation(target: str) -> tuple[str, str, int, str] | None:
    prefix, _, name = target.partition(".")
    if prefix not in _SERVICES or not name:
        return None
    service, status, error_type = _SERVICES[prefix]
    return f"{service}:{name}", service, status, error_type


def _proxy_handler(faults: AwsFaults) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            found = _operation(self.headers.get("X-Amz-Target", ""))
            outage = faults._take(found[0]) if found else None
            if found and outage:
                if outage.reset:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                _, _, status, error_type = found
                payload = json.dumps({"__type": error_type, "message": "injected outage"}).encode()
                self._reply(status, [("Content-Type", "application/x-amz-json-1.0")], payload)
                return
            upstream = urlsplit(faults._upstream)
            connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
                passed = [(k, v) for k, v in answer.getheaders() if k.lower() not in ("connection", "content-length")]
                self._reply(answer.status, passed, payload)
            finally:
                connection.close()

        def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
            lines += [f"{name}: {value}" for name, value in headers]
            lines += [f"Content-Length: {len(payload)}", "", ""]
            self.wfile.write("\r\n".join(lines).encode("latin-1") + payload)  # one write: no delayed-ACK stall

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Proxy
