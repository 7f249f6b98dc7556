"""What Lambda and API Gateway do around our handlers, for tests and local runs without Docker.

- ``http_api_event``: the payload-2.0 event an HTTP API sends for a request;
- ``GatewayRequestHandler``: the HTTP side of a local API Gateway (answers written without delayed-ACK stalls);
- ``LambdaContext``: a context whose remaining time counts down from the template's timeout;
- ``load_handler``: ``functions/<name>/app.py`` imported as Lambda would (layer package on the path);
- ``local_environment``: a whole local deployment (moto resources from the template, secrets, Stripe).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from .aws_clients import aws_client
from .stack import ROOT, Stack, create_stack

DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret-change-me"
FAKE_STRIPE_KEY = "sk_test_local_fake"
INGEST_FUNCTION = "IngestFunction"


class GatewayRequestHandler(BaseHTTPRequestHandler):
    """A request handler for the local servers that stand in for API Gateway in front of a handler: HTTP/1.1,
    answers written with ``reply``, nothing logged per request."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this each answer waits for a delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@dataclass
class LambdaContext:
    function_name: str = "local-ingest"
    timeout_seconds: float = 28.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local-ingest"
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/local-ingest"
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def http_api_event(
    method: str,
    path: str,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    *,
    route_key: str | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The event API Gateway (HTTP API, payload 2.0) gives Lambda for this request."""
    raw = body.encode() if isinstance(body, str) else (body or b"")
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    content_type = lowered.get("content-type", "")
    text = content_type == "" or content_type.startswith(("application/json", "text/"))
    try:
        decoded = raw.decode("utf-8") if text else None
    except UnicodeDecodeError:
        decoded = None
    now = datetime.now(UTC)
    path_only, _, query = path.partition("?")
    return {
        "version": "2.0",
        "routeKey": route_key or f"{method} {path_only}",
        "rawPath": path_only,
        "rawQueryString": query,
        "headers": {**lowered, "content-length": str(len(raw))},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path_only,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": route_key or f"{method} {path_only}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": decoded if decoded is not None else base64.b64encode(raw).decode(),
        "isBase64Encoded": decoded is None,
    }


# The signing secret of the local event destination (a real one comes from Stripe's Dashboard).
LOCAL_STRIPE_WEBHOOK_SECRET = "whsec_local_stripe_usage_reporter"


def load_handler(function: str = "ingest") -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """``functions/<function>/app.py``'s ``lambda_handler``, imported under a unique module name."""
    module_name = f"functions_{function}_app"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / function / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module.lambda_handler  # type: ignore[no-any-return]


def routes(stack: Stack, logical_id: str = INGEST_FUNCTION) -> set[str]:
    """The function's HttpApi routes from the template, as route keys (``POST /v1/usage``)."""
    events = stack.properties(logical_id).get("Events", {}).values()
    return {f"{e['Properties']['Method'].upper()} {e['Properties']['Path']}" for e in events if e["Type"] == "HttpApi"}


def function_logical_id(stack: Stack, function: str) -> str:
    """The template's function whose code is ``functions/<function>``."""
    [logical_id] = [
        lid
        for lid, resource in stack.template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        and resource["Properties"]["CodeUri"] == f"functions/{function}"
    ]
    return str(logical_id)


def local_environment(
    *,
    stripe_api_key: str,
    stripe_api_base: str | None,
    clients: Mapping[str, object] | None = None,
    parameters: dict[str, str] | None = None,
    function: str = "ingest",
) -> tuple[Stack, dict[str, str]]:
    """Create the template's resources and secrets in the current (moto) AWS; the functions' environment.

    Secrets go through Secrets Manager, as in AWS; only ``STRIPE_API_BASE`` is local-only.
    """
    stack = create_stack(parameters=parameters)
    env = stack.function_environment(function_logical_id(stack, function))
    secrets = aws_client("secretsmanager")
    secrets.put_secret_value(SecretId=env["STRIPE_API_KEY_SECRET_ARN"], SecretString=stripe_api_key)
    secrets.put_secret_value(
        SecretId=env["CLIENT_SECRETS_SECRET_ARN"],
        SecretString=json.dumps(dict(clients or {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET})),
    )
    if env.get("STRIPE_WEBHOOK_SECRET_ARN"):  # the ingest's: Stripe's event destination signs with it
        secrets.put_secret_value(SecretId=env["STRIPE_WEBHOOK_SECRET_ARN"], SecretString=LOCAL_STRIPE_WEBHOOK_SECRET)
    if stripe_api_base:
        env["STRIPE_API_BASE"] = stripe_api_base
        # The fake Stripe has no rate limit; real Stripe's test mode allows 25 usage records a second.
        env["STRIPE_USAGE_RECORDS_PER_SECOND"] = env.get("STRIPE_USAGE_RECORDS_PER_SECOND") or "1000"
    return stack, env


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source gives the function for these received messages."""
    region = queue_arn.split(":")[3]
    records = []
    for message in messages:
        attributes = {k: str(v) for k, v in message.get("Attributes", {}).items()}
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {"ApproximateReceiveCount": "1", **attributes},
                "messageAttributes": {
                    name: {"stringValue": value.get("StringValue"), "dataType": value["DataType"]}
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def poll_queue_once(queue_url: str, function: str, batch_size: int, timeout_seconds: float) -> dict[str, Any] | None:
    """One poll of Lambda's SQS event source: receive a batch, invoke, delete what did not fail.

    Returns the function's response, or None when the queue had nothing visible.
    """
    sqs = aws_client("sqs")
    received = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=batch_size,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    if not received:
        return None
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    response = load_handler(function)(sqs_event(received, arn), LambdaContext(timeout_seconds=timeout_seconds))
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    for message in received:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return response
