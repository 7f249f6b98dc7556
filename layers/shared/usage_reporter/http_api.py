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
from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from . import observability, wiring
from .answers import Outcome, error_body
from .auth import AuthenticationError, Client, loggable_client_id
from .config import get_settings
from .kinds import MeterEvents
from .meter_event_models import MeterEvent, MeterEventBatch, MeterEventCancel, ResolvedCancel
from .models import UsageBatch, UsageRecord
from .observability import logger
from .secrets import SecretUnavailable

MAX_BODY_BYTES = 256 * 1024
STRIPE_EVENTS_ROUTE = "POST /v1/stripe/events"
REPLAYED_HEADER = "Idempotent-Replayed"
JSON = "application/json"

# Decimals, never binary floats: a meter event's value reaches Stripe exactly as the caller wrote it.
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=partial(json.loads, parse_float=Decimal))


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
    try:
        client = wiring.authenticator().authenticate(headers, body)
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

    if _method(event) == "GET":  # a status lookup: signed like the rest, over an empty body
        if body:
            return _refusal(400, "invalid_request", "a GET has no body (sign the empty body)")
        app.append_context(client=client, received_at=int(time.time()))
        return app.resolve(event, context)
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


def _refused_fields(
    status_code: int, error_type: str, fields: list[dict[str, Any]], metric: str
) -> Response[dict[str, Any]] | None:
    """A refusal naming each field (nothing is stored), or None when ``fields`` is empty."""
    if not fields:
        return None
    observability.count(metric)
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return Response(status_code, JSON, error_body(error_type, message, fields=fields))


def _field(collection: str | None, index: int, name: str, message: str, type_: str) -> dict[str, Any]:
    """An error naming ``collection[index].name`` (a batch) or ``name`` (a single record)."""
    if collection is None:
        return {"field": name, "message": message, "type": type_}
    return {"field": f"{collection}[{index}].{name}", "message": message, "type": type_, "index": index}


def _duplicate_keys(records: Sequence[Any], collection: str) -> Response[dict[str, Any]] | None:
    """422 naming every record whose key an earlier record of the batch already uses, or None."""
    first_seen: dict[str, int] = {}
    fields = []
    for index, record in enumerate(records):
        key = record.idempotency_key
        if key in first_seen:
            message = f"idempotency_key {key!r} is also used by {collection}[{first_seen[key]}]"
            fields.append(_field(collection, index, "idempotency_key", message, "duplicate_idempotency_key"))
        first_seen.setdefault(key, index)
    return _refused_fields(422, "validation_error", fields, "Invalid")


def _usage_refusal(records: list[UsageRecord], batch: bool) -> Response[dict[str, Any]] | None:
    """403 naming every record the client may not report to, or None."""
    client: Client = app.context["client"]
    collection = "records" if batch else None
    fields = [
        _field(
            collection,
            index,
            "subscription_item",
            f"client {client.client_id!r} may not report usage to {record.subscription_item!r}",
            "subscription_item_not_allowed",
        )
        for index, record in enumerate(records)
        if not client.may_report_to(record.subscription_item)
    ]
    return _refused_fields(403, "forbidden", fields, "Forbidden")


def _meter_event_refusal(events: list[MeterEvent], batch: bool) -> Response[dict[str, Any]] | None:
    """403 for event names the client may not send; 422 for what Stripe would refuse, named by field."""
    client: Client = app.context["client"]
    kind = wiring.kinds()["meter_event"]
    assert isinstance(kind, MeterEvents)
    collection = "events" if batch else None
    forbidden = [
        _field(
            collection,
            index,
            "event_name",
            f"client {client.client_id!r} may not send events named {event.event_name!r}",
            "event_name_not_allowed",
        )
        for index, event in enumerate(events)
        if not client.may_send_event(event.event_name)
    ]
    refusal = _refused_fields(403, "forbidden", forbidden, "Forbidden")
    if refusal:
        return refusal
    invalid = []
    now = app.context["received_at"]
    for index, event in enumerate(events):
        customer = kind.customer_problem(event)
        if customer:
            invalid.append(_field(collection, index, "customer", customer, "missing"))
        window = event.timestamp_problem(now)
        # Stripe's window applies to new events only: a replay gets its stored answer whatever its age.
        if window and not _known(kind, client.client_id, event):
            invalid.append(_field(collection, index, "timestamp", window, "timestamp_out_of_window"))
    return _refused_fields(422, "validation_error", invalid, "Invalid")


def _known(kind: MeterEvents, client_id: str, event: MeterEvent) -> bool:
    from .reporting import DeliveryImpossible  # the reporting path loads only when a request needs it

    try:
        return wiring.reporter().has_answer(kind, client_id, event)
    except DeliveryImpossible as exc:
        raise ServiceUnavailable(str(exc)) from exc


class ServiceUnavailable(Exception):
    """A dependency the answer needs (DynamoDB) cannot be reached: 503, retry with the same request."""


@app.exception_handler(ServiceUnavailable)
def _unavailable(exc: ServiceUnavailable) -> Response[dict[str, Any]]:
    logger.error("service unavailable", extra={"cause": str(exc)})
    observability.count("ServiceUnavailable")
    body = error_body("service_unavailable", "the service cannot answer right now; retry with the same request")
    return Response(503, JSON, body, headers={"Retry-After": "30"})


def _outcome_response(outcome: Outcome) -> Response[dict[str, Any]]:
    headers = dict(outcome.headers)
    if outcome.replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(status_code=outcome.status_code, content_type=JSON, body=outcome.body, headers=headers)


def _batch_response(outcomes: list[Outcome]) -> Response[dict[str, Any]]:
    """200 with one result per record, in request order, and a summary by status."""
    results = []
    for outcome in outcomes:
        result = {**outcome.body, "status_code": outcome.status_code}
        result.setdefault("idempotency_key", outcome.body.get("error", {}).get("idempotency_key"))
        if outcome.replayed:
            result["replayed"] = True
        results.append(result)
    body: dict[str, Any] = {"results": results, "summary": dict(Counter(outcome.status for outcome in outcomes))}
    mirrors = [outcome.body["mirror"] for outcome in outcomes if "mirror" in outcome.body]
    if mirrors:
        body["mirror_summary"] = dict(Counter(m.get("status") or m["error"]["type"] for m in mirrors))
    return Response(status_code=200, content_type=JSON, body=body)


def _report(records: Sequence[Any], kind: str = "usage_record", *, stream: bool = False) -> list[Outcome]:
    return wiring.reporter().report_many(
        app.context["client"].client_id,
        records,
        received_at=app.context["received_at"],
        context=app.lambda_context,
        kind=wiring.kinds()[kind],
        stream=stream,
    )


def _report_usage(records: Sequence[UsageRecord]) -> list[Outcome]:
    """Usage records, and their mirrors to meter events where the deployment mirrors them."""
    from .mirroring import report_usage_with_mirrors

    return report_usage_with_mirrors(
        wiring.reporter(),
        wiring.mirror_map(),
        wiring.kinds(),
        app.context["client"].client_id,
        records,
        received_at=app.context["received_at"],
        context=app.lambda_context,
    )


@app.post("/v1/usage", summary="Report one usage record")
def post_usage(record: Annotated[UsageRecord, Body(description="One usage record")]) -> Response[dict[str, Any]]:
    logger.append_keys(idempotency_key=record.idempotency_key)
    return _usage_refusal([record], batch=False) or _outcome_response(_report_usage([record])[0])


@app.post("/v1/usage/batch", summary="Report 1 to 100 usage records")
def post_usage_batch(
    batch: Annotated[UsageBatch, Body(description="A batch of usage records")],
) -> Response[dict[str, Any]]:
    refusal = _duplicate_keys(batch.records, "records") or _usage_refusal(batch.records, batch=True)
    return refusal or _batch_response(_report_usage(batch.records))


@app.post("/v1/meter_events", summary="Report one Billing meter event")
def post_meter_event(event: Annotated[MeterEvent, Body(description="One meter event")]) -> Response[dict[str, Any]]:
    logger.append_keys(idempotency_key=event.idempotency_key)
    refusal = _meter_event_refusal([event], batch=False)
    return refusal or _outcome_response(_report([event], "meter_event")[0])


@app.post("/v1/meter_events/batch", summary="Report 1 to 100 Billing meter events")
def post_meter_event_batch(
    batch: Annotated[MeterEventBatch, Body(description="A batch of meter events")],
) -> Response[dict[str, Any]]:
    refusal = _duplicate_keys(batch.events, "events") or _meter_event_refusal(batch.events, batch=True)
    stream = get_settings().meter_event_batch_api == "stream"
    return refusal or _batch_response(_report(batch.events, "meter_event", stream=stream))


@app.post("/v1/meter_events/cancel", summary="Cancel an earlier meter event (within 24 h of Stripe receiving it)")
def post_meter_event_cancel(
    cancel: Annotated[MeterEventCancel, Body(description="The idempotency_key of the event to cancel")],
) -> Response[dict[str, Any]]:
    from .reporting import CancelRefused, DeliveryImpossible  # loaded only when a request needs them

    logger.append_keys(idempotency_key=cancel.idempotency_key)
    client_id = app.context["client"].client_id
    kind = wiring.kinds()["meter_event_cancel"]
    unresolved = ResolvedCancel(cancel.idempotency_key, event_name="", identifier="")
    try:
        if wiring.reporter().answered(kind, client_id, unresolved):
            resolved = unresolved  # a replay: dedup answers it, nothing is sent
        else:
            resolved = wiring.reporter().resolve_cancel(client_id, cancel.idempotency_key, app.context["received_at"])
    except CancelRefused as refused:
        observability.count("Invalid")
        body = error_body(refused.error_type, str(refused), idempotency_key=cancel.idempotency_key)
        return Response(refused.status_code, JSON, body)
    except DeliveryImpossible as exc:
        raise ServiceUnavailable(str(exc)) from exc
    return _outcome_response(_report([resolved], "meter_event_cancel")[0])


def _status(kind: str, idempotency_key: str) -> Response[dict[str, Any]]:
    """The stored answer for one of the caller's keys (its own only: keys are scoped per client), or 404."""
    from .status_lookup import LookupUnavailable

    key = unquote(idempotency_key)  # API Gateway passes the path as sent: a key may hold an encoded "/"
    logger.append_keys(idempotency_key=key)
    try:
        found = wiring.status_lookup().status(kind, app.context["client"].client_id, key)
    except LookupUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    if found is None:
        message = (
            "no answer is stored for this key: it was never received, its dedup window has passed, or its "
            "request was answered 503 (then send it again, with the same key and payload)"
        )
        return Response(404, JSON, error_body("not_found", message, idempotency_key=key))
    return Response(200, JSON, found)


@app.get("/v1/usage/<idempotency_key>", summary="The answer stored for one of the caller's usage record keys")
def get_usage_status(idempotency_key: str) -> Response[dict[str, Any]]:
    return _status("usage_record", idempotency_key)


@app.get("/v1/meter_events/<idempotency_key>", summary="The answer stored for one of the caller's meter event keys")
def get_meter_event_status(idempotency_key: str) -> Response[dict[str, Any]]:
    return _status("meter_event", idempotency_key)


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
