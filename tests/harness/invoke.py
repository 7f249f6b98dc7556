"""What ``sam local invoke -e events/<file>`` does, without Docker: one event through the real handler.

    python -m tests.harness.invoke events/usage-record.json
    python -m tests.harness.invoke events/retry-queue-batch.json     # the retry worker
    python -m tests.harness.invoke generated.json --path /v1/usage --body '{"idempotency_key": ...}'
        # any HTTP API event (e.g. from `sam local generate-event apigateway http-api-proxy`) made into a
        # signed request of the demo client to one of the API's routes

AWS is an in-process moto built from template.yaml (fresh for each invoke), Stripe is the project's
fake (or real Stripe in test mode when ``STRIPE_API_KEY`` is set). Events signed with the demo
client's secret are re-sent as if sent now: re-signed, since a signature is only valid for 5 minutes,
and with explicit timestamps moved by the event's age; ``--as-is`` sends them untouched. Prints the
function's response, as sam does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from usage_reporter.auth import compute_signature, sign

from .lambda_runtime import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    FAKE_STRIPE_KEY,
    LambdaContext,
    function_logical_id,
    load_handler,
    local_environment,
    routes,
)
from .local_api import demo_fake_stripe
from .stack import Stack, load_template


def create_stack_template_only() -> Stack:
    """The template as a ``Stack`` (for its routes): nothing is created."""
    template = load_template()
    return Stack(
        template=template, parameters={k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    )


def _shifted(record: Any, seconds: int) -> Any:
    if (
        isinstance(record, dict)
        and isinstance(record.get("timestamp"), int)
        and not isinstance(record["timestamp"], bool)
    ):
        return {**record, "timestamp": record["timestamp"] + seconds}
    return record


def _redated_body(body: str, seconds: int) -> str:
    """The body with its records' explicit timestamps moved by ``seconds`` (their age is kept)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        moved: Any = {**data, "records": [_shifted(r, seconds) for r in data["records"]]}
    else:
        moved = _shifted(data, seconds)
    return body if moved == data else json.dumps(moved)


def refresh_signature(event: dict[str, Any]) -> dict[str, Any]:
    """Re-send an event the demo client signed correctly once as if it were sent now: explicit record
    timestamps keep their age relative to the event's own time (Stripe refuses usage outside the
    current billing period), and the signature is fresh. Deliberately bad events are left alone."""
    headers = event.get("headers") or {}
    header = headers.get("x-usage-signature", "")
    if headers.get("x-usage-client") != DEMO_CLIENT_ID or "t=" not in header:
        return event
    body = event.get("body") or ""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if parts.get("v1") != compute_signature(DEMO_CLIENT_SECRET, int(parts["t"]), body.encode()):
        return event
    sent_at = int((event.get("requestContext") or {}).get("timeEpoch", 0)) // 1000 or int(parts["t"])
    body = _redated_body(body, int(time.time()) - sent_at)
    return {**event, "body": body, "headers": {**headers, "x-usage-signature": sign(DEMO_CLIENT_SECRET, body.encode())}}


def as_signed_request(event: dict[str, Any], path: str, body: str) -> dict[str, Any]:
    """``event`` as a POST of ``body`` to ``path`` by the demo client, signed now."""
    context = dict(event.get("requestContext") or {})
    context["http"] = {**(context.get("http") or {}), "method": "POST", "path": path}
    context["routeKey"] = f"POST {path}"
    context["timeEpoch"] = int(time.time() * 1000)
    headers = {
        **{k.lower(): v for k, v in (event.get("headers") or {}).items()},
        "content-type": "application/json",
        "x-usage-client": DEMO_CLIENT_ID,
        "x-usage-signature": sign(DEMO_CLIENT_SECRET, body.encode()),
    }
    return {
        **event,
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": False,
    }


def unknown_route(event: dict[str, Any]) -> str | None:
    """Why API Gateway would not pass this HTTP event to the function (it answers 404 itself), or None."""
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "")
    route = f"{method} {event.get('rawPath', '')}"
    known = routes(create_stack_template_only())
    if route in known:
        return None
    return (
        f"the event is {route!r}, not one of the API's routes ({', '.join(sorted(known))}); API Gateway answers "
        "404 itself. Make it one with --path and --body (see --help)."
    )


def function_for(event: dict[str, Any]) -> str:
    """The function an event is for: SQS events drive the retry worker, HTTP events the ingest function."""
    records = event.get("Records") or [{}]
    return "retry" if records[0].get("eventSource") == "aws:sqs" else "ingest"


def invoke(event: dict[str, Any], *, function: str | None = None, as_is: bool = False) -> dict[str, Any]:
    """Invoke ``functions/<function>`` with ``event`` in a fresh local deployment; the response."""
    function = function or function_for(event)
    from moto import mock_aws

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    real_key = os.environ.pop("STRIPE_API_KEY", None)
    fake = None if real_key else demo_fake_stripe()
    with mock_aws():
        stack, env = local_environment(
            stripe_api_key=real_key or FAKE_STRIPE_KEY,
            stripe_api_base=fake.start() if fake else None,
            function=function,
        )
        os.environ.update(env)
        from usage_reporter import wiring

        wiring.reset()
        try:
            context = LambdaContext(timeout_seconds=stack.function_timeout(function_logical_id(stack, function)))
            return load_handler(function)(event if as_is else refresh_signature(event), context)
        finally:
            if fake:
                fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event", type=Path, help="an event file, e.g. events/usage-record.json")
    parser.add_argument("--function", help="functions/<name> (default: retry for SQS events, else ingest)")
    parser.add_argument("--as-is", action="store_true", help="do not refresh the demo signature")
    parser.add_argument("--path", help="send the event as a signed POST to this route, e.g. /v1/usage")
    parser.add_argument("--body", help="with --path: the JSON body to send")
    args = parser.parse_args()
    event = json.loads(args.event.read_text())
    if args.path:
        event = as_signed_request(event, args.path, args.body or "{}")
    if function_for(event) == "ingest" and not args.function:
        problem = unknown_route(event)
        if problem:
            sys.exit(problem)
    response = invoke(event, function=args.function, as_is=args.as_is)
    sys.stdout.flush()
    print(json.dumps(response, indent=2))


if __name__ == "__main__":
    main()
