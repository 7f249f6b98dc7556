"""The HTTP API (API Gateway HTTP API, payload format 2.0): authentication, limits, routes, errors.

Authentication and size limits run before the Powertools resolver, because the resolver validates
the body before any middleware: an unauthenticated caller must get a 401 and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import Counter
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from . import observability, wiring
from .answers import Outcome, error_body
from .auth import AuthenticationError
from .models import UsageBatch, UsageRecord
from .observability import logger
from .secrets import SecretUnavailable

MAX_BODY_BYTES = 256 * 1024
REPLAYED_HEADER = "Idempotent-Replayed"
JSON = "application/json"

app = APIGatewayHttpResolver(enable_validation=True)


def _response(status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A payload-2.0 response for answers given before the resolver runs."""
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": JSON, **(headers or {})},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body, validate=True)
    return body.encode("utf-8")


def handle_http_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    try:
        body = _raw_body(event)
        client_id = wiring.authenticator().authenticate(headers, body)
    except (AuthenticationError, binascii.Error) as exc:
        observability.count("Unauthorized")
        logger.warning("unauthorized", extra={"reason": str(exc), "client_id": headers.get("x-usage-client")})
        return _response(401, error_body("unauthorized", str(exc)), {"WWW-Authenticate": "X-Usage-Signature"})
    except (SecretUnavailable, ValidationError):
        # ValidationError here is the service's own configuration (Settings), not the caller's body.
        logger.exception("service misconfigured or client secrets unreachable")
        observability.count("ServiceUnavailable")
        message = "the service cannot authenticate requests right now"
        return _response(503, error_body("service_unavailable", message), {"Retry-After": "30"})
    logger.append_keys(client_id=client_id)

    if len(body) > MAX_BODY_BYTES:
        observability.count("Invalid")
        return _response(413, error_body("payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes"))
    content_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type != JSON:
        observability.count("Invalid")
        return _response(415, error_body("unsupported_media_type", f"Content-Type must be {JSON}"))
    if not body.strip():
        observability.count("Invalid")
        return _response(400, error_body("invalid_json", "the body is empty; expected a JSON object"))
    if body.lstrip().startswith(b"["):
        # Powertools would validate only the first element of an array: the others would be lost.
        observability.count("Invalid")
        try:
            json.loads(body)
        except ValueError:
            return _response(400, error_body("invalid_json", "the body is not valid JSON"))
        fields = [{"field": "body", "message": "expected a JSON object, got an array", "type": "model_type"}]
        return _response(422, error_body("validation_error", "body: expected a JSON object", fields=fields))

    app.append_context(client_id=client_id, received_at=int(time.time()))
    return app.resolve(event, context)


def _outcome_response(outcome: Outcome) -> Response[dict[str, Any]]:
    headers = dict(outcome.headers)
    if outcome.replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(status_code=outcome.status_code, content_type=JSON, body=outcome.body, headers=headers)


def _report(records: list[UsageRecord]) -> list[Outcome]:
    return wiring.reporter().report_many(
        app.context["client_id"], records, received_at=app.context["received_at"], context=app.lambda_context
    )


@app.post("/v1/usage", summary="Report one usage record")
def post_usage(record: Annotated[UsageRecord, Body(description="One usage record")]) -> Response[dict[str, Any]]:
    logger.append_keys(idempotency_key=record.idempotency_key)
    return _outcome_response(_report([record])[0])


@app.post("/v1/usage/batch", summary="Report 1 to 100 usage records")
def post_usage_batch(
    batch: Annotated[UsageBatch, Body(description="A batch of usage records")],
) -> Response[dict[str, Any]]:
    outcomes = _report(batch.records)
    results = []
    for outcome in outcomes:
        result = {**outcome.body, "status_code": outcome.status_code}
        result.setdefault("idempotency_key", outcome.body.get("error", {}).get("idempotency_key"))
        if outcome.replayed:
            result["replayed"] = True
        results.append(result)
    summary = dict(Counter(outcome.status for outcome in outcomes))
    return Response(status_code=200, content_type=JSON, body={"results": results, "summary": summary})


def _field_path(loc: tuple[Any, ...]) -> tuple[str, int | None]:
    """``("body", "records", 2, "quantity")`` into ``("records[2].quantity", 2)``."""
    path = ""
    index = None
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
            index = part if index is None else index
        else:
            path += f".{part}" if path else str(part)
    return path or "body", index


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    errors = exc.errors()
    observability.count("Invalid")
    if any(error.get("type") == "json_invalid" for error in errors):
        detail = errors[0].get("ctx", {}).get("error", "")
        return Response(400, JSON, error_body("invalid_json", f"the body is not valid JSON: {detail}".rstrip(": ")))
    fields = []
    for error in errors:
        path, index = _field_path(tuple(error.get("loc", ())))
        item: dict[str, Any] = {"field": path, "message": error.get("msg", ""), "type": error.get("type", "")}
        if index is not None:
            item["index"] = index
        fields.append(item)
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return Response(422, JSON, error_body("validation_error", message, fields=fields))


@app.not_found
def _not_found(exc: Exception) -> Response[dict[str, Any]]:
    return Response(
        404, JSON, error_body("not_found", f"no route {app.current_event.http_method} {app.current_event.path}")
    )


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[dict[str, Any]]:
    logger.exception("unexpected error")
    return Response(
        500, JSON, error_body("internal_error", "the request failed unexpectedly; retry with the same idempotency_key")
    )
