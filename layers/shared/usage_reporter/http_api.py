"""The HTTP API (API Gateway HTTP API, payload format 2.0): authentication, limits, routes, errors.

Authentication and size limits run before the Powertools resolver, because the resolver validates
the body before any middleware: an unauthenticated caller must get a 401 and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from . import observability, wiring
from .answers import error_body
from .auth import AuthenticationError, loggable_client_id
from .http_routes import JSON, ServiceUnavailable, router
from .observability import logger
from .secrets import SecretUnavailable

MAX_BODY_BYTES = 256 * 1024
STRIPE_EVENTS_ROUTE = "POST /v1/stripe/events"
LOOKUP_PREFIXES = ("/v1/usage/", "/v1/meter_events/")

# Decimals, never binary floats: a meter event's value reaches Stripe exactly as the caller wrote it.
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=partial(json.loads, parse_float=Decimal))
app.include_router(router)


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


def _refusal(status_code: int, error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    observability.count("Invalid")
    return _response(status_code, error_body(error_type, message, **extra))


def _media_type_problem(content_type: str | None) -> str | None:
    """Why the Content-Type is not JSON in UTF-8, or None. No Content-Type at all is taken as JSON."""
    if content_type is None:
        return None
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    if media_type.lower() != JSON:  # media types are case-insensitive
        return f"Content-Type must be {JSON}"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"the body must be UTF-8 (Content-Type: {JSON}; charset=utf-8)"
    return None


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


def _parse_body(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The body as text, or the refusal: an empty, non-UTF-8, unparsable, too deep or array body."""
    if not body.strip():
        return None, _refusal(400, "invalid_json", "the body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, _refusal(400, "invalid_json", f"the body is not UTF-8 (byte {exc.start})")
    try:
        parsed = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        return None, _refusal(400, "invalid_json", "the body is nested too deeply")
    except ValueError as exc:  # includes integers over Python's 4,300-digit conversion limit
        return None, _refusal(400, "invalid_json", f"the body is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        # Powertools would validate only the first element of an array: the others would be lost.
        kind = "an array" if isinstance(parsed, list) else f"a JSON {type(parsed).__name__}"
        fields = [{"field": "body", "message": f"expected a JSON object, got {kind}", "type": "model_type"}]
        return None, _refusal(422, "validation_error", "body: expected a JSON object", fields=fields)
    return text, None


def _method(event: dict[str, Any]) -> str:
    return str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()


def _decoded_path(event: dict[str, Any]) -> str:
    """The path with the key as the caller wrote it: API Gateway's HTTP API hands ``rawPath`` over already
    decoded, a local server as sent (percent-encoded); a GET's signature covers this form in both."""
    return unquote(str(event.get("rawPath", "")))


def _one_segment_key(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a lookup's key encoded as one path segment, as the router's ``<idempotency_key>`` needs,
    whatever it holds ("/" included); the route decodes it again."""
    path = _decoded_path(event)
    for prefix in LOOKUP_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return {**event, "rawPath": prefix + quote(path[len(prefix) :], safe="")}
    return event


def _route_key(event: dict[str, Any]) -> str:
    return f"{_method(event)} {event.get('rawPath', '')}"


def _stripe_event(body: bytes, signature: str | None) -> dict[str, Any]:
    """``POST /v1/stripe/events``: a thin event from Stripe's event destination (meter error reports)."""
    from .stripe_gateway import InvalidStripeSignature, UnreadableStripeEvent

    try:
        handled = wiring.stripe_event_receiver().receive(body.decode("utf-8"), signature)
    except (InvalidStripeSignature, UnicodeDecodeError) as exc:
        observability.count("StripeEventSignatureInvalid")
        logger.warning("Stripe event refused: bad signature", extra={"reason": str(exc)})
        return _response(400, error_body("invalid_signature", "the Stripe-Signature header does not verify"))
    except UnreadableStripeEvent as exc:
        logger.error("Stripe event refused: unreadable", extra={"reason": str(exc)})
        return _response(400, error_body("invalid_event", "the body is not a Stripe thin event"))
    except Exception as exc:  # DynamoDB, SQS, Stripe or the secret: none of them may lose the report
        # Stripe delivers the event again later (for days): nothing is lost by answering 503 now.
        logger.exception("Stripe event not handled; Stripe will deliver it again", extra={"cause": str(exc)})
        observability.count("ServiceUnavailable")
        return _response(503, error_body("service_unavailable", "retry later"), {"Retry-After": "60"})
    return _response(200, handled.as_json())


def handle_http_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    try:
        body = _raw_body(event)
    except (binascii.Error, ValueError):  # not base64, or text that is not Unicode
        return _refusal(400, "invalid_json", "the body cannot be decoded")
    if len(body) > MAX_BODY_BYTES:  # before the HMACs: their cost must not grow with what a stranger sends
        return _refusal(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if _route_key(event) == STRIPE_EVENTS_ROUTE:  # Stripe signs these itself, with the destination's secret
        return _stripe_event(body, headers.get("stripe-signature"))
    lookup = _method(event) == "GET"
    if lookup and body:
        return _refusal(400, "invalid_request", "a GET has no body")
    try:
        # A GET has no body to sign: its signature covers the method and path instead, so a signature for one
        # key cannot read another.
        signed = f"GET {_decoded_path(event)}".encode() if lookup else body
        client = wiring.authenticator().authenticate(headers, signed)
    except AuthenticationError as exc:
        observability.count("Unauthorized")
        logger.warning("unauthorized", extra={"reason": str(exc), "client_id": loggable_client_id(headers)})
        return _response(401, error_body("unauthorized", str(exc)), {"WWW-Authenticate": "X-Usage-Signature"})
    except SecretUnavailable:
        logger.exception("client secrets unreachable")
        observability.count("ServiceUnavailable")
        message = "the service cannot authenticate requests right now"
        return _response(503, error_body("service_unavailable", message), {"Retry-After": "30"})
    except ValidationError:  # the service's own configuration (Settings), not the caller's body
        logger.exception("service misconfigured: fix its settings (the error names each one)")
        observability.count("ServiceUnavailable")
        observability.count("ConfigurationInvalid")
        message = "the service's configuration is invalid; its operators must fix it (the logs name the setting)"
        return _response(503, error_body("service_unavailable", message), {"Retry-After": "30"})
    logger.append_keys(client_id=client.client_id)

    if lookup:  # a status lookup
        app.append_context(client=client, received_at=int(time.time()))
        return app.resolve(_one_segment_key(event), context)
    problem = _media_type_problem(headers.get("content-type"))
    if problem:
        return _refusal(415, "unsupported_media_type", problem)
    text, refusal = _parse_body(body)
    if refusal is not None:
        return refusal

    app.append_context(client=client, received_at=int(time.time()))
    # The resolver parses exactly the text checked above (never base64 or another encoding again), and
    # is told the media type in the one spelling it knows (it compares case-sensitively).
    checked = {**event, "headers": {**headers, "content-type": JSON}, "body": text, "isBase64Encoded": False}
    return app.resolve(checked, context)


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


@app.exception_handler(ServiceUnavailable)
def _unavailable(exc: ServiceUnavailable) -> Response[dict[str, Any]]:
    logger.error("service unavailable", extra={"cause": str(exc)})
    observability.count("ServiceUnavailable")
    body = error_body("service_unavailable", "the service cannot answer right now; retry with the same request")
    return Response(503, JSON, body, headers={"Retry-After": "30"})


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
