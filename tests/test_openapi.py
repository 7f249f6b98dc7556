"""The OpenAPI document (openapi.json): what the code generates, valid OpenAPI 3.1, every route of the template,
and true to what the handler answers; `make run` serves it with Swagger UI."""

from __future__ import annotations

import copy
import difflib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.conftest import RESTRICTED_CLIENT, Deployment, HttpResult, record
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    INGEST_FUNCTION,
    LambdaContext,
    http_api_event,
    load_handler,
    routes,
)
from tests.harness.local_api import free_port
from tests.harness.openapi import DOCUMENT, document, render
from tests.harness.stack import ROOT, Stack, load_template
from usage_reporter.auth import sign
from usage_reporter.http_api import MAX_BODY_BYTES, STRIPE_EVENTS_ROUTE

CHECKED_IN: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
JSON = "application/json"


def operations() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each documented operation, by route key (``POST /v1/usage``)."""
    for path, methods in CHECKED_IN["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def documented(route: str, status: int) -> dict[str, Any]:
    """The JSON media object (schema, examples) documented for ``route`` answering ``status``."""
    responses = dict(operations())[route]["responses"]
    assert str(status) in responses, f"{route} answers {status}, which the document does not say"
    media: dict[str, Any] = responses[str(status)]["content"][JSON]
    return media


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Where ``instance`` breaks ``schema`` (whose refs point into the document's components), by jsonschema's
    validator for OpenAPI 3.1 schema objects (JSON Schema 2020-12 and OpenAPI's keywords)."""
    validator = OAS31Validator({**schema, "components": CHECKED_IN["components"]})
    errors = []
    for error in validator.iter_errors(instance):
        causes = error.context or [error]  # oneOf/anyOf: why each branch failed
        errors += [f"{'/'.join(map(str, cause.absolute_path)) or '(body)'}: {cause.message}" for cause in causes]
    return errors


def shape(value: Any) -> Any:
    """A JSON value's keys and types, without its values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def test_the_checked_in_document_is_what_the_code_generates() -> None:
    generated = render(document())
    checked_in = DOCUMENT.read_text(encoding="utf-8")
    if checked_in != generated:
        diff = difflib.unified_diff(
            checked_in.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            "openapi.json (checked in)",
            "openapi.json (from the code)",
        )
        pytest.fail(
            "openapi.json differs from what the code generates: run `make openapi` and commit the file\n"
            + "".join(list(diff)[:80])
        )


def test_the_document_is_valid_openapi_3_1() -> None:
    assert CHECKED_IN["openapi"].startswith("3.1.")
    errors = [str(error) for error in OpenAPIV31SpecValidator(CHECKED_IN).iter_errors()]
    assert not errors, "\n\n".join(errors)


def test_the_validator_refuses_a_broken_document() -> None:
    broken = copy.deepcopy(CHECKED_IN)
    del broken["paths"]["/v1/usage"]["post"]["responses"]
    broken["components"]["securitySchemes"]["UsageSignature"]["in"] = "body"

    assert len(list(OpenAPIV31SpecValidator(broken).iter_errors())) == 2


def test_every_route_of_the_template_is_documented_and_only_those() -> None:
    template = Stack(template=load_template(), parameters={})

    assert {route for route, _ in operations()} == routes(template, INGEST_FUNCTION)


def test_callers_sign_every_route_but_stripes_own() -> None:
    schemes = CHECKED_IN["components"]["securitySchemes"]

    assert {name: (s["type"], s["in"], s["name"]) for name, s in schemes.items()} == {
        "UsageClient": ("apiKey", "header", "X-Usage-Client"),
        "UsageSignature": ("apiKey", "header", "X-Usage-Signature"),
        "StripeSignature": ("apiKey", "header", "Stripe-Signature"),
    }
    signature = schemes["UsageSignature"]["description"]
    assert 't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>' in signature
    assert "300 s" in signature and "Several `v1=`" in signature
    assert CHECKED_IN["security"] == [{"UsageClient": [], "UsageSignature": []}]  # both headers, together
    for route, operation in operations():
        stripes = route == STRIPE_EVENTS_ROUTE
        assert operation.get("security") == ([{"StripeSignature": []}] if stripes else None), route
    stripe_events = dict(operations())[STRIPE_EVENTS_ROUTE]
    assert "event destination" in stripe_events["description"] and "Stripe-Signature" in stripe_events["description"]


def test_every_answer_has_a_schema_and_examples_that_fit_it() -> None:
    for route, operation in operations():
        assert operation.get("operationId") and operation.get("tags") and operation.get("description"), route
        for status, response in operation["responses"].items():
            media = response["content"][JSON]
            assert media["examples"], f"{route} {status}: no example"
            for name, example in media["examples"].items():
                errors = schema_errors(media["schema"], example["value"])
                assert not errors, f"{route} {status} example {name!r}:\n" + "\n".join(errors)


def test_refusals_have_the_projects_error_shape_not_powertools() -> None:
    assert "HTTPValidationError" not in DOCUMENT.read_text(encoding="utf-8")
    for route, operation in operations():
        if route.startswith("POST ") and route != STRIPE_EVENTS_ROUTE:
            assert "#/components/schemas/ErrorBody" in json.dumps(operation["responses"]["422"]), route
    error = CHECKED_IN["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"type", "message", "fields", "idempotency_key"}
    assert error["required"] == ["type", "message"] and error["additionalProperties"] is False


def test_post_usage_answers_have_the_shapes_of_the_documented_examples(deployment: Deployment) -> None:
    reported = deployment.post("/v1/usage", record("doc-reported"))
    deployment.stripe.inject(Fault.server_error(503), times=10)
    queued = deployment.post("/v1/usage", record("doc-queued"))
    deployment.stripe.clear_faults()
    rejected = deployment.post("/v1/usage", record("doc-rejected", subscription_item="si_missing"))
    invalid = deployment.post("/v1/usage", record("doc-invalid", quantity="3"))

    for answer, status, example in [
        (reported, 200, "reported"),
        (queued, 202, "queued"),
        (rejected, 422, "rejected"),
        (invalid, 422, "validation_error"),
    ]:
        assert answer.status == status, answer
        media = documented("POST /v1/usage", status)
        errors = schema_errors(media["schema"], answer.body)
        assert not errors, f"POST /v1/usage {status}: the real answer breaks the schema:\n" + "\n".join(errors)
        assert shape(media["examples"][example]["value"]) == shape(answer.body), (
            f"the {example!r} example and the real answer differ in shape:\n{answer.body}"
        )


def _get(deployment: Deployment, path: str, body: bytes = b"") -> HttpResult:
    signature = sign(DEMO_CLIENT_SECRET, f"GET {unquote(path)}".encode())
    headers = {"x-usage-client": DEMO_CLIENT_ID, "x-usage-signature": signature}
    event = http_api_event("GET", path, body, headers)
    response = load_handler("ingest")(event, LambdaContext(timeout_seconds=deployment.timeout_seconds))
    return HttpResult(response["statusCode"], response.get("headers") or {}, json.loads(response["body"]))


def test_what_the_handler_answers_on_every_route_is_documented(deployment: Deployment) -> None:
    stripe = deployment.stripe
    stripe.add_meter("api_requests")
    stripe.add_customers("cus_DOC1")

    def event(key: str, **overrides: Any) -> dict[str, Any]:
        return {"idempotency_key": key, "event_name": "api_requests", "customer": "cus_DOC1", "value": 2, **overrides}

    cancel = "/v1/meter_events/cancel"
    usage_batch = [record("u1"), record("b1"), record("b2", subscription_item="si_none")]
    # (route, the status this request is answered, the answer), in order: later requests build on earlier ones.
    answers: list[tuple[str, int, HttpResult]] = [
        ("POST /v1/usage", 200, deployment.post("/v1/usage", record("u1"))),
        ("POST /v1/usage", 409, deployment.post("/v1/usage", record("u1", quantity=8))),
        (
            "POST /v1/usage",
            403,
            deployment.post("/v1/usage", record("u3", subscription_item="si_x"), client=RESTRICTED_CLIENT),
        ),
        ("POST /v1/usage", 401, deployment.post("/v1/usage", record("u4"), signature="t=1,v1=00")),
        ("POST /v1/usage", 400, deployment.post("/v1/usage", "{")),
        ("POST /v1/usage", 422, deployment.post("/v1/usage", "[]")),
        ("POST /v1/usage", 415, deployment.post("/v1/usage", record("u5"), headers={"content-type": "text/plain"})),
        ("POST /v1/usage", 413, deployment.post("/v1/usage", "x" * (MAX_BODY_BYTES + 1))),
        ("POST /v1/usage/batch", 200, deployment.post("/v1/usage/batch", {"records": usage_batch})),
        ("POST /v1/usage/batch", 422, deployment.post("/v1/usage/batch", {"records": [record("d"), record("d")]})),
        ("POST /v1/meter_events", 200, deployment.post("/v1/meter_events", event("e1"))),
        ("POST /v1/meter_events", 422, deployment.post("/v1/meter_events", event("e2", event_name="no_such_meter"))),
        ("POST /v1/meter_events", 422, deployment.post("/v1/meter_events", event("e3", timestamp=1000))),
        ("POST /v1/meter_events", 422, deployment.post("/v1/meter_events", event("e4", customer=None))),
        (
            "POST /v1/meter_events/batch",
            200,
            deployment.post("/v1/meter_events/batch", {"events": [event("e1"), event("s1"), event("s2")]}),
        ),
        (
            "POST /v1/meter_events/batch",
            422,
            deployment.post("/v1/meter_events/batch", {"events": [event("e5", value=-1)]}),
        ),
        ("POST /v1/meter_events/cancel", 200, deployment.post(cancel, {"idempotency_key": "e1"})),
        ("POST /v1/meter_events/cancel", 202, deployment.post(cancel, {"idempotency_key": "s1"})),  # not in Stripe yet
        ("POST /v1/meter_events/cancel", 422, deployment.post(cancel, {"idempotency_key": "never-sent"})),
        ("POST /v1/meter_events/cancel", 422, deployment.post(cancel, {"idempotency_key": "e2"})),  # nothing to cancel
        ("GET /v1/usage/{idempotency_key}", 200, _get(deployment, "/v1/usage/u1")),
        ("GET /v1/usage/{idempotency_key}", 404, _get(deployment, "/v1/usage/never-sent")),
        ("GET /v1/usage/{idempotency_key}", 400, _get(deployment, "/v1/usage/u1", b"{}")),
        ("GET /v1/meter_events/{idempotency_key}", 200, _get(deployment, "/v1/meter_events/s2")),  # accepted
        ("GET /v1/meter_events/{idempotency_key}", 200, _get(deployment, "/v1/meter_events/e2")),  # rejected
        (
            STRIPE_EVENTS_ROUTE,
            400,
            deployment.post("/v1/stripe/events", "{}", headers={"stripe-signature": "t=1,v1=0"}),
        ),
    ]

    for route, status, answer in answers:
        assert answer.status == status, (route, answer)
        errors = schema_errors(documented(route, status)["schema"], answer.body)
        assert not errors, f"{route} {status}: the real answer breaks the schema: {answer.body}\n" + "\n".join(errors)


@pytest.mark.slow
def test_make_run_serves_the_document_and_swagger_ui() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRIPE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.local_api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout
        banner: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (banner and banner[-1].startswith("  docs:")):
            line = process.stdout.readline()
            if not line:  # the server exited
                break
            banner.append(line)
        assert f"  docs: {url}/docs (OpenAPI: {url}/openapi.json)\n" in banner, "".join(banner)

        with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as response:
            assert response.headers["Content-Type"] == JSON
            assert response.read().decode() == DOCUMENT.read_text(encoding="utf-8")
        with urllib.request.urlopen(f"{url}/docs", timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/html")
        assert "SwaggerUIBundle(" in page and '"operationId": "reportUsage"' in page
        assert "<script src=" not in page  # the assets are inline: the page works offline
    finally:
        process.terminate()
        process.wait(10)
