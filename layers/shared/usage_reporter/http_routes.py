"""The API's routes: each handler validates what only it can (authorization, Stripe's rules), then calls a
use case (``reporting``, ``mirroring``, ``status_lookup``). The HTTP edge (authentication, limits, body
parsing, error shapes) is ``http_api``, which includes this router."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from . import api_schema, observability, wiring
from .answers import Outcome, error_body
from .auth import Client
from .config import get_settings
from .kinds import MeterEvents
from .meter_event_models import MeterEvent, MeterEventBatch, MeterEventCancel, ResolvedCancel
from .models import UsageBatch, UsageRecord
from .observability import logger

REPLAYED_HEADER = "Idempotent-Replayed"
JSON = "application/json"

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]  # Powertools leaves its __init__ untyped


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
    client: Client = router.context["client"]
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
    client: Client = router.context["client"]
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
    now = router.context["received_at"]
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
        router.context["client"].client_id,
        records,
        received_at=router.context["received_at"],
        context=router.lambda_context,
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
        router.context["client"].client_id,
        records,
        received_at=router.context["received_at"],
        context=router.lambda_context,
    )


@router.post(
    "/v1/usage",
    summary="Report one usage record",
    description=(
        "Reports one metered-usage record to Stripe (legacy usage records) exactly once: the same client, key and "
        "payload again is answered with the stored answer, never a second report. Retry 409 in progress, 503 and "
        "network errors with the same key and payload."
    ),
    tags=["Usage records"],
    operation_id="reportUsage",
    responses=api_schema.POST_USAGE,
)
def post_usage(record: Annotated[UsageRecord, Body(description="One usage record")]) -> Response[dict[str, Any]]:
    logger.append_keys(idempotency_key=record.idempotency_key)
    return _usage_refusal([record], batch=False) or _outcome_response(_report_usage([record])[0])


@router.post(
    "/v1/usage/batch",
    summary="Report 1 to 100 usage records",
    description=(
        "All-or-nothing validation (fields named `records[i]...`), then each record as `POST /v1/usage` would "
        "report it (8 in parallel), each with its own answer."
    ),
    tags=["Usage records"],
    operation_id="reportUsageBatch",
    responses=api_schema.POST_USAGE_BATCH,
)
def post_usage_batch(
    batch: Annotated[UsageBatch, Body(description="A batch of usage records")],
) -> Response[dict[str, Any]]:
    refusal = _duplicate_keys(batch.records, "records") or _usage_refusal(batch.records, batch=True)
    return refusal or _batch_response(_report_usage(batch.records))


@router.post(
    "/v1/meter_events",
    summary="Report one Billing meter event",
    description=(
        "Reports one Billing meter event (POST /v1/billing/meter_events) exactly once, under the identifier "
        "`meter-event-<sha256(client id, key)>`. Keys are scoped to the client and the kind."
    ),
    tags=["Meter events"],
    operation_id="reportMeterEvent",
    responses=api_schema.POST_METER_EVENT,
)
def post_meter_event(event: Annotated[MeterEvent, Body(description="One meter event")]) -> Response[dict[str, Any]]:
    logger.append_keys(idempotency_key=event.idempotency_key)
    refusal = _meter_event_refusal([event], batch=False)
    return refusal or _outcome_response(_report([event], "meter_event")[0])


@router.post(
    "/v1/meter_events/batch",
    summary="Report 1 to 100 Billing meter events",
    description=(
        "All-or-nothing validation (fields named `events[i]...`), then one v2 meter event stream request for the "
        "new events (METER_EVENT_BATCH_API=stream, the default) or one v1 call per event (v1)."
    ),
    tags=["Meter events"],
    operation_id="reportMeterEventBatch",
    responses=api_schema.POST_METER_EVENT_BATCH,
)
def post_meter_event_batch(
    batch: Annotated[MeterEventBatch, Body(description="A batch of meter events")],
) -> Response[dict[str, Any]]:
    refusal = _duplicate_keys(batch.events, "events") or _meter_event_refusal(batch.events, batch=True)
    stream = get_settings().meter_event_batch_api == "stream"
    return refusal or _batch_response(_report(batch.events, "meter_event", stream=stream))


@router.post(
    "/v1/meter_events/cancel",
    summary="Cancel an earlier meter event (within 24 h of Stripe receiving it)",
    description=(
        "Sends Stripe a `cancel` meter event adjustment for the client's event with that key. The cancellation is "
        "itself exactly once (its own dedup record, plan and retries)."
    ),
    tags=["Meter events"],
    operation_id="cancelMeterEvent",
    responses=api_schema.POST_METER_EVENT_CANCEL,
)
def post_meter_event_cancel(
    cancel: Annotated[MeterEventCancel, Body(description="The idempotency_key of the event to cancel")],
) -> Response[dict[str, Any]]:
    from .reporting import CancelRefused, DeliveryImpossible  # loaded only when a request needs them

    logger.append_keys(idempotency_key=cancel.idempotency_key)
    client_id = router.context["client"].client_id
    kind = wiring.kinds()["meter_event_cancel"]
    unresolved = ResolvedCancel(cancel.idempotency_key, event_name="", identifier="")
    try:
        if wiring.reporter().answered(kind, client_id, unresolved):
            resolved = unresolved  # a replay: dedup answers it, nothing is sent
        else:
            resolved = wiring.reporter().resolve_cancel(
                client_id, cancel.idempotency_key, router.context["received_at"]
            )
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

    key = unquote(idempotency_key)  # http_api encoded it as one path segment
    logger.append_keys(idempotency_key=key)
    try:
        found = wiring.status_lookup().status(kind, router.context["client"].client_id, key)
    except LookupUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    if found is None:
        message = (
            "no answer is stored for this key: it was never received, its dedup window has passed, or its "
            "request was answered 503 (then send it again, with the same key and payload)"
        )
        return Response(404, JSON, error_body("not_found", message, idempotency_key=key))
    return Response(200, JSON, found)


@router.get(
    "/v1/usage/<idempotency_key>",
    summary="The answer stored for one of the caller's usage record keys",
    description=(
        "Signed like the rest, but over `GET <path>` with the key as written (not percent-encoded): a GET has no body. "
        "A key holding `/` or other reserved characters is "
        "percent-encoded in the path."
    ),
    tags=["Usage records"],
    operation_id="getUsageStatus",
    responses=api_schema.GET_USAGE_STATUS,
)
def get_usage_status(idempotency_key: str) -> Response[dict[str, Any]]:
    return _status("usage_record", idempotency_key)


@router.get(
    "/v1/meter_events/<idempotency_key>",
    summary="The answer stored for one of the caller's meter event keys",
    description=(
        "Signed like the rest, but over `GET <path>` with the key as written (not percent-encoded): a GET has no body. "
        "A key holding `/` or other reserved characters is "
        "percent-encoded in the path."
    ),
    tags=["Meter events"],
    operation_id="getMeterEventStatus",
    responses=api_schema.GET_METER_EVENT_STATUS,
)
def get_meter_event_status(idempotency_key: str) -> Response[dict[str, Any]]:
    return _status("meter_event", idempotency_key)
