"""``make openapi``: write the HTTP contract as an OpenAPI 3.1 document, generated from the code, to openapi.json.

Powertools' event handler generates the routes of ``http_api``'s resolver from ``http_routes``' decorators
(request models, and ``responses=`` with every status, schema and example); the answer bodies those name are
``api_schema``'s types, whose JSON Schema pydantic generates here. ``POST /v1/stripe/events``, which ``http_api``
answers before the resolver, is added here without touching the routing. The output is deterministic (sorted
keys, indent 2, a trailing newline), so ``tests/test_openapi.py`` can fail whenever the checked-in file and the
code disagree.

    .venv/bin/python -m tests.harness.openapi            # writes openapi.json
    .venv/bin/python -m tests.harness.openapi --check    # exit 1 if openapi.json is stale
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi.json"
SCHEMAS = "#/components/schemas/"

SIGNATURE = (
    '`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, the scheme Stripe signs its webhooks with: '
    'sign the exact bytes sent (a GET has no body: it signs "GET <path>" instead, the key as written). '
    "`t` must be within 300 s of the server's clock (the "
    "default SIGNATURE_TOLERANCE_SECONDS). Several `v1=` entries are allowed (up to 8), and a client may have up to "
    "three secrets, so secrets rotate without downtime. `make curl` prints a freshly signed request."
)
RULES = """Every body is JSON. Every error the service writes is `{"error": {"type": ..., "message": ..., ...}}`, with
`fields` naming each bad field of a 403 or 422; a route the API does not have is answered by API Gateway itself:
`404 {"message": "Not Found"}`. Retry `409 idempotency_in_progress`, `503` and network errors with the **same**
`idempotency_key` and payload: you get the first answer back, never a second report. Do not retry other `4xx`.

Generated from the code by `make openapi`; the README's "HTTP contract" explains each rule."""


def _description(summary: str) -> str:
    signed = "Callers sign every request with two headers, `X-Usage-Client: <client id>` and `X-Usage-Signature`: "
    return "\n\n".join([summary, signed + SIGNATURE, RULES])


TAGS = [
    {
        "name": "Usage records",
        "description": "Legacy metered usage records (`POST /v1/subscription_items/{si}/usage_records`).",
    },
    {"name": "Meter events", "description": "Billing meter events (`POST /v1/billing/meter_events`, the v2 stream)."},
    {"name": "Stripe", "description": "Called by Stripe, not by callers."},
]
# Both headers, together, on every route but Stripe's.
CALLERS: list[dict[str, list[str]]] = [{"UsageClient": [], "UsageSignature": []}]


def _security_schemes() -> dict[str, Any]:
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    def header(name: str, description: str) -> APIKey:
        return APIKey.model_validate(
            {"type": "apiKey", "in": APIKeyIn.header, "name": name, "description": description}
        )

    return {
        "UsageClient": header("X-Usage-Client", "The caller's client id (its entry in the client-secrets secret)."),
        "UsageSignature": header("X-Usage-Signature", SIGNATURE),
        "StripeSignature": header(
            "Stripe-Signature",
            "Stripe's signature of the event destination's request, verified with the destination's signing "
            "secret (5 minutes' tolerance) with the Stripe SDK.",
        ),
    }


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def _stripe_events_operation() -> dict[str, Any]:
    from usage_reporter import api_schema

    return {
        "operationId": "receiveStripeEvent",
        "summary": "Stripe's event destination: meter event error reports (not for callers)",
        "description": (
            "The URL of a Stripe event destination (thin events) for `v1.billing.meter.error_report_triggered` and "
            "`v1.billing.meter.no_meter_found`. Each request is verified with the destination's signing secret "
            "(`Stripe-Signature`, 5 minutes' tolerance), then the full event is fetched from Stripe; each failing "
            "event Stripe samples leads back to its key, whose answer becomes `422 rejected` and whose event goes to "
            "the dead-letter queue. Not signed with X-Usage-Signature. Handled before the resolver (http_api)."
        ),
        "tags": ["Stripe"],
        "security": [{"StripeSignature": []}],
        "requestBody": {
            "required": True,
            "content": {
                api_schema.JSON: {
                    "schema": api_schema.ref(api_schema.StripeThinEvent),
                    "examples": {
                        "error_report": {
                            "summary": "A meter's error report",
                            "value": {
                                "id": "evt_test_65R9Jm5c3z8sWY1cT4Ht",
                                "object": "v2.core.event",
                                "type": "v1.billing.meter.error_report_triggered",
                                "created": "2026-11-23T04:37:11.000Z",
                                "livemode": False,
                                "context": None,
                                "reason": None,
                                "related_object": {
                                    "id": "mtr_test_61R9Jm5c3z8sWY1cT",
                                    "type": "billing.meter",
                                    "url": "/v1/billing/meters/mtr_test_61R9Jm5c3z8sWY1cT",
                                },
                            },
                        }
                    },
                }
            },
        },
        "responses": {str(status): response for status, response in api_schema.STRIPE_EVENTS.items()},
    }


def _refs(node: Any) -> Iterator[str]:
    """The component names every ``$ref`` under ``node`` points to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.removeprefix(SCHEMAS)
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _add_answer_schemas(document: dict[str, Any]) -> None:
    """Add the schema of every ``api_schema`` type the answers refer to (pydantic, serialization mode)."""
    from pydantic import TypeAdapter
    from pydantic.json_schema import JsonSchemaMode

    from usage_reporter import api_schema

    schemas: dict[str, Any] = document["components"]["schemas"]
    missing = sorted(set(_refs(document)) - set(schemas))
    unknown = [name for name in missing if not hasattr(api_schema, name)]
    if unknown:
        raise SystemExit(f"the answers refer to {unknown}, which usage_reporter.api_schema does not define")
    adapters: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (name, "serialization", TypeAdapter(getattr(api_schema, name))) for name in missing
    ]
    _, definitions = TypeAdapter.json_schemas(adapters, ref_template=SCHEMAS + "{model}")
    for name, schema in definitions.get("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            raise SystemExit(f"two different schemas are named {name}: rename one")
        schemas[name] = schema


def _drop_default_validation_errors(document: dict[str, Any]) -> None:
    """Powertools gives every route a 422 HTTPValidationError; the routes that can answer 422 declare their own
    (the project's error shape), so what is left of Powertools' is a status the route never answers (a GET)."""
    default = {"$ref": SCHEMAS + "HTTPValidationError"}
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            for status, response in list(responses.items()):
                if response.get("content", {}).get("application/json", {}).get("schema") == default:
                    del responses[status]


def _drop_unused_schemas(document: dict[str, Any]) -> None:
    schemas: dict[str, Any] = document["components"]["schemas"]
    used = set(_refs({key: value for key, value in document.items() if key != "components"}))
    pending = list(used)
    while pending:
        for name in _refs(schemas.get(pending.pop(), {})):
            if name not in used:
                used.add(name)
                pending.append(name)
    for name in set(schemas) - used:
        del schemas[name]


def document() -> dict[str, Any]:
    """The OpenAPI document, as a dict."""
    from aws_lambda_powertools.event_handler.openapi.models import Tag

    from usage_reporter.http_api import STRIPE_EVENTS_ROUTE, app

    project = _project()
    generated = app.get_openapi_json_schema(
        title=project["name"],
        version=project["version"],
        description=_description(project["description"]),
        tags=[Tag.model_validate(tag) for tag in TAGS],
        security_schemes=_security_schemes(),
        security=CALLERS,
    )
    document: dict[str, Any] = json.loads(generated)
    document.pop("servers", None)  # the API's URL is the deployment's (or make run's): the page's own origin
    _drop_default_validation_errors(document)
    method, path = STRIPE_EVENTS_ROUTE.split(" ")
    if method.lower() in document["paths"].get(path, {}):
        raise SystemExit(f"{STRIPE_EVENTS_ROUTE} is routed by the resolver now: drop it from this generator")
    document["paths"].setdefault(path, {})[method.lower()] = _stripe_events_operation()
    _add_answer_schemas(document)
    _drop_unused_schemas(document)
    return document


def render(openapi: dict[str, Any]) -> str:
    """The document as written to openapi.json: sorted keys, indent 2, a trailing newline."""
    return json.dumps(openapi, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if openapi.json differs from the code's")
    args = parser.parse_args()
    text = render(document())
    if args.check:
        current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
        if current != text:
            sys.exit(f"{DOCUMENT.name} is stale: run `make openapi`")
        return
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
