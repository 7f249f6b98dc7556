"""``make run``: the real ingest handler at http://127.0.0.1:3000, as API Gateway would call it, no Docker.

HTTP request -> payload-2.0 event -> ``functions/ingest/app.lambda_handler`` -> HTTP response, and the
retry worker fed from the retry queue as Lambda's SQS event source would, with
DynamoDB, SQS and Secrets Manager from a moto server built from template.yaml, and the project's fake
Stripe (or real Stripe in test mode when ``STRIPE_API_KEY`` is set).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from .aws_faults import AwsFaults
from .client import curl_command
from .fake_stripe import FakeStripe
from .lambda_runtime import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    FAKE_STRIPE_KEY,
    INGEST_FUNCTION,
    LOCAL_STRIPE_WEBHOOK_SECRET,
    GatewayRequestHandler,
    LambdaContext,
    function_logical_id,
    http_api_event,
    load_handler,
    local_environment,
    poll_queue_once,
    routes,
)

DEMO_ITEMS = ("si_demo", "si_demo2")
DEMO_METER = "api_requests"  # a meter (sum of "value" per "stripe_customer_id") the local fake Stripe has
DEMO_CUSTOMER = "cus_demo"
DEMO_PRICE = "price_demo"
# Settings a user may set when starting the local API (the template's defaults otherwise).
USER_SETTINGS = ("USAGE_RECORD_MIRROR", "METER_EVENT_BATCH_API", "METER_EVENT_KEYS", "STRIPE_TIMEOUT_SECONDS")


def demo_fake_stripe() -> FakeStripe:
    """The local fake Stripe: the demo subscription items, meter and customer."""
    fake = FakeStripe(api_key=FAKE_STRIPE_KEY, subscription_items=DEMO_ITEMS)
    fake.add_subscription_items(*DEMO_ITEMS, customer=DEMO_CUSTOMER, price=DEMO_PRICE)  # for mirroring
    fake.add_meter(DEMO_METER)
    fake.add_customers(DEMO_CUSTOMER)
    return fake


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serialize_moto_dynamodb_writes() -> None:
    """Real DynamoDB applies a conditional write atomically; moto's server threads do not. Serialize
    moto's writes so that local runs see DynamoDB's semantics (the product relies on them)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    for name in ("put_item", "update_item", "delete_item"):
        method = getattr(DynamoDBBackend, name)
        if getattr(method, "_serialized", False):
            continue

        def call(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with lock:
                return _method(*args, **kwargs)

        call._serialized = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, call)


def start_backends(retry_delay_seconds: int | None = None, *, aws_faults: bool = False) -> dict[str, Any]:
    """moto (over HTTP, so other tools can look in) and Stripe; sets this process's environment.

    ``aws_faults``: put an ``AwsFaults`` proxy between the service and moto (``backends["aws_faults"]``).
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    serialize_moto_dynamodb_writes()
    moto_port = free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port).start()
    moto_url = f"http://127.0.0.1:{moto_port}"
    faults = AwsFaults() if aws_faults else None
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": faults.start(moto_url) if faults else moto_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    real_key = os.environ.pop("STRIPE_API_KEY", None)
    fake = None
    if real_key:
        stripe_key, stripe_base = real_key, None
    else:
        fake = demo_fake_stripe()
        stripe_key, stripe_base = FAKE_STRIPE_KEY, fake.start()
    stack, env = local_environment(stripe_api_key=stripe_key, stripe_api_base=stripe_base)
    if retry_delay_seconds is not None:
        env["RETRY_BASE_DELAY_SECONDS"] = str(retry_delay_seconds)
    env.update({name: os.environ[name] for name in USER_SETTINGS if os.environ.get(name)})
    os.environ.update(env)
    return {"stack": stack, "env": env, "fake_stripe": fake, "moto_url": moto_url, "aws_faults": faults}


def matching_route(known_routes: set[str], method: str, path: str) -> str | None:
    """The template's route key (``GET /v1/usage/{idempotency_key}``) a request matches, as API Gateway picks it:
    an exact route first, then one with a path parameter (one path segment)."""
    if f"{method} {path}" in known_routes:
        return f"{method} {path}"
    for route in sorted(known_routes):
        route_method, _, pattern = route.partition(" ")
        regex = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(pattern))
        if route_method == method and re.fullmatch(regex, path):
            return route
    return None


def serve(
    host: str,
    port: int,
    backends: dict[str, Any],
    *,
    timeout_seconds: float | None = None,
    worker_poll_seconds: float = 2.0,
    quiet: bool = False,
) -> ThreadingHTTPServer:
    """The API on ``host:port`` and the retry worker; ``timeout_seconds``: the ingest's Lambda timeout."""
    stack = backends["stack"]
    known_routes = routes(stack)
    timeout = timeout_seconds or stack.function_timeout(INGEST_FUNCTION)
    handler = load_handler("ingest")
    # One Lambda instance: the handler's resolver keeps per-request state, like Lambda's one-at-a-time.
    instance = threading.Lock()

    class Gateway(GatewayRequestHandler):
        def _serve(self) -> None:
            body = self.read_body()
            if self.command == "GET" and self._docs(self.path.split("?")[0]):
                return
            route_key = matching_route(known_routes, self.command, self.path.split("?")[0])
            if route_key is None:  # API Gateway answers unknown routes itself
                self.reply(404, {"Content-Type": "application/json"}, b'{"message":"Not Found"}')
                return
            event = http_api_event(self.command, self.path, body, dict(self.headers.items()), route_key=route_key)
            with instance:
                response = handler(event, LambdaContext(timeout_seconds=timeout))
            payload = response.get("body") or ""
            raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
            self.reply(response["statusCode"], response.get("headers") or {}, raw)

        def _docs(self, path: str) -> bool:
            """The checked-in OpenAPI document (``make openapi``) and a Swagger UI page of it, which API Gateway
            does not serve: Powertools' page, with the Swagger UI assets Powertools ships (works offline)."""
            if path not in ("/openapi.json", "/docs"):
                return False
            from .openapi import DOCUMENT

            spec = DOCUMENT.read_text(encoding="utf-8")
            if path == "/openapi.json":
                self.reply(200, {"Content-Type": "application/json"}, spec.encode())
                return True
            from pathlib import Path

            from aws_lambda_powertools.event_handler.openapi import swagger_ui

            assets = Path(swagger_ui.__file__).parent
            page = swagger_ui.generate_swagger_html(
                spec.replace("</", "<\\/"),  # as Powertools does: the JSON cannot close the <script>
                (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
                (assets / "swagger-ui.min.css").read_text(encoding="utf-8"),
                swagger_base_url="",  # the assets inline, not from a CDN
                oauth2_config=None,
            )
            self.reply(200, {"Content-Type": "text/html; charset=utf-8"}, page.encode())
            return True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            if not quiet:
                sys.stderr.write(f"[api] {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    server = ThreadingHTTPServer((host, port), Gateway)
    server.daemon_threads = True
    worker = threading.Thread(
        target=_retry_worker_loop, args=(stack, backends["env"], instance, worker_poll_seconds), daemon=True
    )
    worker.start()
    return server


def _retry_worker_loop(stack: Any, env: dict[str, str], instance: threading.Lock, poll_seconds: float) -> None:
    """Lambda's SQS event source for the retry worker: poll, invoke, delete what succeeded."""
    logical_id = function_logical_id(stack, "retry")
    batch_size = int(stack.parameters["RetryBatchSize"])
    timeout = stack.function_timeout(logical_id)
    while True:
        time.sleep(poll_seconds)
        with instance:  # one function at a time in this process (they share module state)
            try:
                poll_queue_once(env["RETRY_QUEUE_URL"], "retry", batch_size, timeout)
            except Exception as exc:  # keep polling, as Lambda would
                sys.stderr.write(f"[retry worker] {exc}\n")


def _stripe_async_loop(fake: FakeStripe, destination: str, poll_seconds: float) -> None:
    """What Stripe does a little after answering: validate streamed meter events, then post error reports
    (thin events, signed) to the service's event destination."""
    while True:
        time.sleep(poll_seconds)
        try:
            fake.process_meter_event_stream()
            fake.deliver_error_reports(destination, LOCAL_STRIPE_WEBHOOK_SECRET)
        except Exception as exc:  # keep going, as Stripe would
            sys.stderr.write(f"[fake stripe] {exc}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--retry-delay", type=int, help="first retry backoff in seconds (default: the template's)")
    args = parser.parse_args()

    from pydantic import ValidationError

    from usage_reporter.config import get_settings

    backends = start_backends(args.retry_delay)
    try:
        settings = get_settings()  # what the function would refuse to start with, said before the banner
    except ValidationError as exc:
        sys.exit(f"make run: invalid settings:\n{exc}")
    try:
        server = serve(args.host, args.port, backends)
    except OSError as exc:  # the port is taken (or not ours to take): one line, not a traceback
        sys.exit(f"make run: cannot listen on {args.host}:{args.port} ({exc.strerror}); try make run PORT=3001")
    url = f"http://{args.host}:{args.port}"
    if backends["fake_stripe"]:
        destination = f"{url}/v1/stripe/events"
        stripe_async = threading.Thread(
            target=_stripe_async_loop, args=(backends["fake_stripe"], destination, 2.0), daemon=True
        )
        stripe_async.start()
    example = {"idempotency_key": "order-1001-api-calls", "subscription_item": DEMO_ITEMS[0], "quantity": 3}
    fake = backends["fake_stripe"]
    stripe_line = (
        f"fake Stripe at {fake.url} (ledger: {fake.url}/_fake/ledger; items: {', '.join(DEMO_ITEMS)};"
        f" meter {DEMO_METER} with customer {DEMO_CUSTOMER}: {fake.url}/_fake/meter_events)"
        if fake
        else "real Stripe (test mode key from STRIPE_API_KEY)"
    )
    env = backends["env"]
    batches = (
        "one v2 stream request each; the fake Stripe validates them every 2 s and posts its error reports to "
        f"/v1/stripe/events (errors: {fake.url if fake else 'Stripe'}/_fake/meter_errors; the local signing secret "
        f"is {LOCAL_STRIPE_WEBHOOK_SECRET})"
        if settings.meter_event_batch_api == "stream"
        else "one synchronous /v1/billing/meter_events call per event (METER_EVENT_BATCH_API=v1)"
    )
    mirroring = (
        ", ".join(f"{source} -> {target.event_name}" for source, target in settings.usage_record_mirror.items())
        or "off (USAGE_RECORD_MIRROR)"
    )
    dead_letters = (
        f"AWS_ENDPOINT_URL={backends['moto_url']} AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local "
        f"AWS_DEFAULT_REGION={os.environ['AWS_DEFAULT_REGION']} DEAD_LETTER_QUEUE_URL={env['DEAD_LETTER_QUEUE_URL']} "
        f"RETRY_QUEUE_URL={env['RETRY_QUEUE_URL']} make dlq ARGS=list"
    )
    print(
        f"""
stripe-usage-reporter listening on {url}
  routes: POST /v1/usage[/batch], POST /v1/meter_events[/batch|/cancel], POST /v1/stripe/events (Stripe's)
  docs: {url}/docs (OpenAPI: {url}/openapi.json)
  AWS (moto, from template.yaml): {backends["moto_url"]}  table {env["IDEMPOTENCY_TABLE_NAME"]}
  Stripe: {stripe_line}
  client: {DEMO_CLIENT_ID} / secret {DEMO_CLIENT_SECRET}
  retry worker: polls the retry queue every 2 s; the first retry waits {env["RETRY_BASE_DELAY_SECONDS"]} s
  meter event batches: {batches}
  mirroring usage records to meter events: {mirroring}
  dead letters: {dead_letters}
  faults: curl -X POST {fake.url if fake else "(fake Stripe only)"}/_fake/faults -d kind=status -d status=503 -d times=3

Try it (the signature is valid for 5 minutes; `make curl` prints a fresh one):

{curl_command(url, "/v1/usage", json.dumps(example).encode(), DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)}
""",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
