"""The HTTP contract's answers, for the OpenAPI document (``openapi.json``, written by ``python -m
tests.harness.openapi``): each answer body's exact fields, and per route every status with its examples.

Documentation only: the handlers build their answers with ``answers`` and never go through these types.
``http_routes`` gives each route its table below (``responses=``); the bodies are TypedDicts, which the
generator turns into JSON Schema with pydantic (``additionalProperties: false``: an answer has these fields and
no others) under ``#/components/schemas/<name>``. The routes refer to them by name, so Powertools builds no
model for them while the Lambda runs, and the annotations stay strings: importing this module only creates its
classes and dicts (about 5 ms of a cold start). ``tests/test_openapi.py`` checks real answers against these
schemas, and the checked-in document against the code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import ConfigDict, Field, with_config

from .models import FailureReason  # at run time: pydantic reads the annotations when the generator runs

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader

SCHEMAS = "#/components/schemas/"


@with_config(ConfigDict(extra="forbid"))  # inherited: every answer below lists all of its fields
class _Closed(TypedDict):
    pass


# -- errors -------------------------------------------------------------------------------------------------


class FieldError(_Closed):
    """One field the request got wrong (or may not use)."""

    field: Annotated[str, Field(description="The field's path: `quantity`, `records[3].quantity`, or `body`.")]
    message: str
    type: Annotated[str, Field(description="What is wrong: pydantic's error type, or the service's own.")]
    index: NotRequired[Annotated[int, Field(description="In a batch: the index of the record or event named.")]]


class ErrorDetail(_Closed):
    type: Annotated[
        str,
        Field(
            description=(
                "invalid_json, invalid_request, unauthorized, forbidden, not_found, idempotency_conflict, "
                "idempotency_in_progress, event_not_reported, payload_too_large, unsupported_media_type, "
                "validation_error, unknown_idempotency_key, nothing_to_cancel, cancel_window_passed, "
                "service_unavailable; on Stripe's route: invalid_signature, invalid_event"
            )
        ),
    ]
    message: Annotated[str, Field(description="What went wrong, for a person; safe to show and to log.")]
    fields: NotRequired[Annotated[list[FieldError], Field(description="validation_error, forbidden: every field.")]]
    idempotency_key: NotRequired[Annotated[str, Field(description="The key, when the answer is about one.")]]


class ErrorBody(_Closed):
    """Every error the service itself writes. (A route the API does not have is answered by API Gateway itself:
    `404 {"message": "Not Found"}`.)"""

    error: ErrorDetail


class StripeRefusal(_Closed):
    """Stripe's reason for refusing a record for good."""

    type: Annotated[
        str, Field(description="stripe_error, or a refusal with a name of its own (usage_records_unsupported).")
    ]
    code: Annotated[str | None, Field(description="Stripe's error code (resource_missing...); null when it gave none.")]
    message: str


# -- what every answer about a record says about it -------------------------------------------------------

_TIMESTAMP = 'Unix seconds, as sent to Stripe ("now" is fixed once, when the key is first processed).'


class _UsageRecordFields(_Closed):
    idempotency_key: str
    subscription_item: str
    quantity: int
    timestamp: Annotated[int, Field(description=_TIMESTAMP)]
    action: Literal["increment", "set"]


class _MeterEventFields(_Closed):
    idempotency_key: str
    event_name: str
    customer: Annotated[str, Field(description="Sent as the meter's customer payload key.")]
    value: Annotated[str, Field(description="Exactly as sent to Stripe (a decimal string).")]
    timestamp: Annotated[int, Field(description=_TIMESTAMP)]


class _CancelFields(_Closed):
    idempotency_key: Annotated[str, Field(description="The cancelled event's key (also the cancellation's).")]
    event_name: str


class _Queued(_Closed):
    status: Literal["queued"]
    message: str
    reason: Annotated[FailureReason, Field(description="Why Stripe has not taken it yet (the last attempt's reason).")]
    next_attempt_at: NotRequired[
        Annotated[int, Field(description="When the retry worker tries again (unix seconds); not when held for review.")]
    ]


class _Rejected(_Closed):
    status: Literal["rejected"]
    error: StripeRefusal


class _StatusCode(_Closed):
    status_code: Annotated[int, Field(description="The HTTP status this answer has on its own.")]


# -- the meter event mirroring a usage record (a migration: USAGE_RECORD_MIRROR) --------------------------


class MirrorReported(_MeterEventFields, _StatusCode):
    """The mirror was reported to the meter."""

    status: Literal["reported"]
    stripe_identifier: Annotated[str, Field(description="usage-record-mirror-<sha256(client id, key)>")]


class MirrorQueued(_MeterEventFields, _Queued, _StatusCode):
    """The mirror is queued for the retry worker."""


class MirrorRejected(_MeterEventFields, _Rejected, _StatusCode):
    """Stripe refused the mirror: it is dead-lettered on its own."""


class MirrorRefusedError(_Closed):
    type: Annotated[str, Field(description="mirror_needs_last_aggregation or mirror_needs_sum_aggregation")]
    message: str


class MirrorRefused(_StatusCode):
    """Not sent: the meter's aggregation cannot say what the record says (`set` needs `last`, `increment` `sum`)."""

    status: Literal["rejected"]
    error: MirrorRefusedError


type MirrorAnswer = Annotated[
    MirrorReported | MirrorQueued | MirrorRejected | MirrorRefused,
    Field(description="The mirror's own outcome, beside the usage record's (whose status code the answer has)."),
]


class _Mirrored(_Closed):
    mirror: NotRequired[MirrorAnswer]


# -- usage records ------------------------------------------------------------------------------------------


class UsageRecordReported(_UsageRecordFields, _Mirrored):
    """Stripe accepted the usage record."""

    status: Literal["reported"]
    stripe_id: Annotated[str, Field(description="Stripe's usage record id (mbur_...).")]


class UsageRecordQueued(_UsageRecordFields, _Queued, _Mirrored):
    """Stripe did not take the record yet: it is queued and will be reported exactly once (or, when Stripe may
    already hold it, held for an operator: counted at most once)."""


class UsageRecordRejected(_UsageRecordFields, _Rejected, _Mirrored):
    """Stripe refused the record for good: it is on the dead-letter queue with the reason."""


# -- meter events -------------------------------------------------------------------------------------------

_IDENTIFIER = "The event's Stripe identifier: meter-event-<sha256(client id, key)>."


class MeterEventReported(_MeterEventFields):
    """Stripe accepted the meter event."""

    status: Literal["reported"]
    stripe_identifier: Annotated[str, Field(description=_IDENTIFIER)]


class MeterEventAccepted(_MeterEventFields):
    """Sent in a v2 meter event stream (a batch): Stripe took it and validates it later; if Stripe finds it
    invalid, the key's answer becomes rejected."""

    status: Literal["accepted"]
    stripe_identifier: Annotated[str, Field(description=_IDENTIFIER)]
    message: str


class MeterEventQueued(_MeterEventFields, _Queued):
    """Stripe did not take the event yet: it is queued and will be reported exactly once."""


class MeterEventRejected(_MeterEventFields, _Rejected):
    """Stripe refused the event (at once, or later through its event destination): it is dead-lettered."""


# -- meter event cancellations ------------------------------------------------------------------------------


class MeterEventCancelReported(_CancelFields):
    """Stripe took the cancellation: the event leaves the meter's totals."""

    status: Literal["reported"]
    cancelled_identifier: Annotated[str, Field(description="The cancelled event's Stripe identifier.")]


class MeterEventCancelQueued(_CancelFields, _Queued):
    """Stripe did not take the cancellation yet: the worker sends it once."""


class MeterEventCancelRejected(_CancelFields, _Rejected):
    """Stripe refused the cancellation."""


# -- batches ------------------------------------------------------------------------------------------------


class _BatchResult(_StatusCode):
    replayed: NotRequired[Annotated[Literal[True], Field(description="Present when this is a stored answer.")]]


class RecordErrorResult(_BatchResult):
    """A record the service could not answer for yet (409 or 503): send it again with the same payload."""

    idempotency_key: str
    error: Annotated[
        ErrorDetail, Field(description="idempotency_conflict, idempotency_in_progress, service_unavailable")
    ]


class UsageRecordReportedResult(UsageRecordReported, _BatchResult):
    """A batch's usage record, reported."""


class UsageRecordQueuedResult(UsageRecordQueued, _BatchResult):
    """A batch's usage record, queued."""


class UsageRecordRejectedResult(UsageRecordRejected, _BatchResult):
    """A batch's usage record, refused by Stripe."""


class MeterEventReportedResult(MeterEventReported, _BatchResult):
    """A batch's meter event, reported (METER_EVENT_BATCH_API=v1, or a replay)."""


class MeterEventAcceptedResult(MeterEventAccepted, _BatchResult):
    """A batch's meter event, taken by Stripe's v2 stream (METER_EVENT_BATCH_API=stream, the default)."""


class MeterEventQueuedResult(MeterEventQueued, _BatchResult):
    """A batch's meter event, queued."""


class MeterEventRejectedResult(MeterEventRejected, _BatchResult):
    """A batch's meter event, refused by Stripe."""


type UsageRecordResult = (
    UsageRecordReportedResult | UsageRecordQueuedResult | UsageRecordRejectedResult | RecordErrorResult
)
type MeterEventResult = (
    MeterEventReportedResult
    | MeterEventAcceptedResult
    | MeterEventQueuedResult
    | MeterEventRejectedResult
    | RecordErrorResult
)
_SUMMARY = 'How many results have each status (or error type), e.g. {"reported": 2, "rejected": 1}.'


class UsageBatchAnswer(_Closed):
    """One result per record, in request order, and a summary."""

    results: list[UsageRecordResult]
    summary: Annotated[dict[str, int], Field(description=_SUMMARY)]
    mirror_summary: NotRequired[
        Annotated[dict[str, int], Field(description="Where records are mirrored: the mirrors' statuses, counted.")]
    ]


class MeterEventBatchAnswer(_Closed):
    """One result per event, in request order, and a summary."""

    results: list[MeterEventResult]
    summary: Annotated[dict[str, int], Field(description=_SUMMARY)]


# -- status lookups -----------------------------------------------------------------------------------------


class _Lookup(_StatusCode):
    attempts: Annotated[int, Field(description="Delivery attempts so far (the first request's included).")]


class CancellationReported(MeterEventCancelReported, _StatusCode):
    """The event's cancellation went through: it is no longer in the meter's totals."""


class CancellationQueued(MeterEventCancelQueued, _StatusCode):
    """The event's cancellation is queued: the worker sends it once."""


class CancellationRejected(MeterEventCancelRejected, _StatusCode):
    """Stripe refused the event's cancellation."""


class _MeterEventLookup(_Lookup):
    cancellation: NotRequired[
        Annotated[
            CancellationReported | CancellationQueued | CancellationRejected,
            Field(description="Present when the event's cancellation was sent (POST /v1/meter_events/cancel)."),
        ]
    ]


class InProgress(_Closed):
    """A request with the key is being processed right now: look again in a few seconds."""

    idempotency_key: str
    status: Literal["in_progress"]
    message: str


class UsageRecordReportedStatus(UsageRecordReported, _Lookup):
    """A usage record's stored answer: reported."""


class UsageRecordQueuedStatus(UsageRecordQueued, _Lookup):
    """A usage record's stored answer: queued (the last reason, and when the worker tries next)."""


class UsageRecordRejectedStatus(UsageRecordRejected, _Lookup):
    """A usage record's stored answer: rejected."""


class MeterEventReportedStatus(MeterEventReported, _MeterEventLookup):
    """A meter event's stored answer: reported."""


class MeterEventAcceptedStatus(MeterEventAccepted, _MeterEventLookup):
    """A meter event's stored answer: accepted by the stream, not reported invalid (yet)."""


class MeterEventQueuedStatus(MeterEventQueued, _MeterEventLookup):
    """A meter event's stored answer: queued."""


class MeterEventRejectedStatus(MeterEventRejected, _MeterEventLookup):
    """A meter event's stored answer: rejected."""


_STORED = (
    "The answer stored for one of the caller's keys, as a replay would give it, with the answer's status_code "
    "and the delivery attempts; or in_progress."
)
type UsageRecordStatus = Annotated[
    UsageRecordReportedStatus | UsageRecordQueuedStatus | UsageRecordRejectedStatus | InProgress,
    Field(description=_STORED),
]
type MeterEventStatus = Annotated[
    MeterEventReportedStatus
    | MeterEventAcceptedStatus
    | MeterEventQueuedStatus
    | MeterEventRejectedStatus
    | InProgress,
    Field(description=_STORED),
]


# -- Stripe's event destination (routed before the resolver: tests/harness/openapi.py adds its operation) --


class StripeThinEvent(TypedDict):
    """A thin event (`v2.core.event`) as Stripe's event destination posts it; the service verifies it, then
    fetches the full event from Stripe. Other fields may be present."""

    id: Annotated[str, Field(description="evt_...")]
    object: Literal["v2.core.event"]
    type: Annotated[
        str, Field(description="v1.billing.meter.error_report_triggered or v1.billing.meter.no_meter_found")
    ]
    created: Annotated[str, Field(description="RFC 3339")]
    livemode: bool


class StripeEventHandled(_Closed):
    """The event was handled (or is of a type the service ignores)."""

    received: Literal[True]
    id: Annotated[str, Field(description="The event's id.")]
    type: str
    rejected: Annotated[int, Field(description="Keys whose answer became rejected (their events dead-lettered).")]
    unattributed: Annotated[
        int, Field(description="Failing events Stripe did not sample, or whose identifier is not the service's.")
    ]


# == each route's answers =====================================================================================


def ref(schema: Any) -> dict[str, Any]:
    """A reference to one of the answer types above, by name (the generator adds its schema)."""
    name: str = schema.__name__
    return {"$ref": SCHEMAS + name}


def one_of(*schemas: Any) -> dict[str, Any]:
    return {"oneOf": [ref(schema) for schema in schemas]}


def answer(
    schema: Any,
    description: str,
    headers: dict[str, OpenAPIResponseHeader] | None = None,
    **named: tuple[str, dict[str, Any]],
) -> OpenAPIResponse:
    """One status of a route: its body's schema (a type above, or ``one_of``), what it means, its headers, and
    examples by name (``name=(summary, body)``)."""
    body = schema if isinstance(schema, dict) else ref(schema)
    examples = {name: {"summary": summary, "value": value} for name, (summary, value) in named.items()}
    response: OpenAPIResponse = {"description": description, "content": {JSON: {"schema": body, "examples": examples}}}
    if headers:
        response["headers"] = headers
    return response


def error(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """An example error body (``answers.error_body``'s shape)."""
    return {"error": {"type": error_type, "message": message, **extra}}


def invalid(*fields: tuple[str, str, str], index: int | None = None) -> dict[str, Any]:
    """An example validation_error naming ``(field, message, type)``s (``index``: in a batch)."""
    named: list[dict[str, Any]] = [{"field": f, "message": m, "type": t} for f, m, t in fields]
    if index is not None:
        named = [{**item, "index": index} for item in named]
    return error("validation_error", "; ".join(f"{f}: {m}" for f, m, _ in fields), fields=named)


JSON = "application/json"
REPLAYED: dict[str, OpenAPIResponseHeader] = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same client, key and "
        "payload (within the dedup window): Stripe was not called again.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
RETRY_AFTER: dict[str, OpenAPIResponseHeader] = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same request again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
WWW_AUTHENTICATE: dict[str, OpenAPIResponseHeader] = {
    "WWW-Authenticate": {"description": "`X-Usage-Signature`", "schema": {"type": "string"}}
}

# The examples' values (README's), and the answers the examples are built of.
KEY = "inv-42-api-calls"
ITEM = "si_123"
AT = 1795374145
EVENT_KEY = "inv-42-api-requests"
EVENT_NAME = "api_requests"
CUSTOMER = "cus_123"
IDENTIFIER = "meter-event-5786656bac24388fdce7da5c11e944adb7b01908262aa8caf737590a0b8366d0"
MIRROR_IDENTIFIER = "usage-record-mirror-1f698d996a06cd6ae68d45f9c7992c74f54d76ba5cfe0c853966192d9df9d6c7"
QUEUED_MESSAGE = "Stripe did not take the record yet; it is queued and will be reported exactly once."
ACCEPTED_MESSAGE = (
    "Stripe received the event and validates it asynchronously. If Stripe finds it invalid, this key's answer "
    "becomes rejected and the event goes to the dead-letter queue with Stripe's reason."
)
UNAVAILABLE = {"type": "stripe_unavailable", "message": "Stripe answered 503", "http_status": 503}

USAGE_FIELDS = {
    "idempotency_key": KEY,
    "subscription_item": ITEM,
    "quantity": 3,
    "timestamp": AT,
    "action": "increment",
}
USAGE_REPORTED = {"status": "reported", **USAGE_FIELDS, "stripe_id": "mbur_9f3b84f867e4ba57d1452d09"}
USAGE_QUEUED = {
    "status": "queued",
    **USAGE_FIELDS,
    "message": QUEUED_MESSAGE,
    "reason": {**UNAVAILABLE, "stripe_request_id": "req_d48506c5ab769793"},
    "next_attempt_at": AT + 60,
}
USAGE_REJECTED = {
    "status": "rejected",
    **USAGE_FIELDS,
    "subscription_item": "si_gone",
    "error": {"type": "stripe_error", "code": "resource_missing", "message": "No such subscription item: 'si_gone'"},
}
EVENT_FIELDS = {
    "idempotency_key": EVENT_KEY,
    "event_name": EVENT_NAME,
    "customer": CUSTOMER,
    "value": "12.5",
    "timestamp": AT,
}
EVENT_REPORTED = {"status": "reported", **EVENT_FIELDS, "stripe_identifier": IDENTIFIER}
EVENT_ACCEPTED = {"status": "accepted", **EVENT_FIELDS, "stripe_identifier": IDENTIFIER, "message": ACCEPTED_MESSAGE}
EVENT_QUEUED = {
    "status": "queued",
    **EVENT_FIELDS,
    "message": QUEUED_MESSAGE,
    "reason": UNAVAILABLE,
    "next_attempt_at": AT + 60,
}
EVENT_REJECTED = {
    "status": "rejected",
    **EVENT_FIELDS,
    "event_name": "no_such_meter",
    "error": {"type": "stripe_error", "code": None, "message": 'No active meter found for event name "no_such_meter".'},
}
_REPLAY = " With `Idempotent-Replayed: true`: the stored answer to an earlier request with the same key and payload."


def _edge(*, post: bool) -> dict[int, OpenAPIResponse]:
    """What the HTTP edge (``http_api``) answers on any of the callers' routes, before the route itself runs."""
    refusals: dict[int, OpenAPIResponse] = {
        401: answer(
            ErrorBody,
            "Missing or unknown client, bad or stale signature. Checked first: nothing else happens. An unknown client "
            "gets the same answer as a known one.",
            WWW_AUTHENTICATE,
            unauthorized=(
                "A stale signature",
                error("unauthorized", "X-Usage-Signature timestamp is more than 300 seconds from the server's clock"),
            ),
        ),
        413: answer(
            ErrorBody,
            "The body is over 256 KiB (checked before authentication).",
            payload_too_large=("Too large", error("payload_too_large", "the body is over 262144 bytes")),
        ),
        503: answer(
            ErrorBody,
            "The service cannot answer right now (client secrets, DynamoDB or SQS unreachable, or its configuration "
            "is invalid): send the same request again; nothing is counted twice.",
            RETRY_AFTER,
            **(
                {
                    "record": (
                        "Neither Stripe nor the retry queue took the record",
                        error(
                            "service_unavailable",
                            "the record could not be reported nor queued; retry with the same key and payload (it "
                            "will not be counted twice)",
                            idempotency_key=KEY,
                        ),
                    )
                }
                if post
                else {
                    "lookup": (
                        "DynamoDB cannot say right now",
                        error(
                            "service_unavailable",
                            "the service cannot answer right now; retry with the same request",
                        ),
                    )
                }
            ),
            secrets=(
                "The client secrets cannot be read",
                error("service_unavailable", "the service cannot authenticate requests right now"),
            ),
        ),
    }
    if post:
        refusals[400] = answer(
            ErrorBody,
            "The body is empty, not UTF-8, not JSON (NaN included), nested too deeply, or holds an integer over "
            "4,300 digits.",
            invalid_json=(
                "Not JSON",
                error("invalid_json", "the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
            ),
        )
        refusals[415] = answer(
            ErrorBody,
            "A Content-Type other than application/json, or a charset other than UTF-8 (no Content-Type at all is "
            "taken as JSON).",
            unsupported_media_type=(
                "Not JSON",
                error("unsupported_media_type", "Content-Type must be application/json"),
            ),
        )
    else:
        refusals[400] = answer(
            ErrorBody,
            "The GET has a body.",
            invalid_request=("A body", error("invalid_request", "a GET has no body")),
        )
    return refusals


_CONFLICT = error(
    "idempotency_conflict", "this idempotency_key was already used with a different payload", idempotency_key=KEY
)
_IN_PROGRESS = error(
    "idempotency_in_progress",
    "a request with this idempotency_key is still being processed; retry later",
    idempotency_key=KEY,
)
_CONFLICTS = answer(
    ErrorBody,
    "idempotency_conflict: the key was used with another payload (a key is bound to its first payload). "
    "idempotency_in_progress, with Retry-After: a request with the key is being processed right now; retry.",
    RETRY_AFTER,
    idempotency_conflict=("Same key, another payload", _CONFLICT),
    idempotency_in_progress=("Same key, in flight", _IN_PROGRESS),
)


def _forbidden(field: str, message: str, error_type: str) -> OpenAPIResponse:
    return answer(
        ErrorBody,
        "The client may not use what a field names (its entry in the client secrets restricts it); nothing is "
        "stored. A batch with one such record is refused whole.",
        forbidden=(
            "Not this client's",
            error(
                "forbidden", f"{field}: {message}", fields=[{"field": field, "message": message, "type": error_type}]
            ),
        ),
    )


POST_USAGE: dict[int, OpenAPIResponse] = {
    **_edge(post=True),
    200: answer(
        UsageRecordReported,
        "Stripe accepted the record." + _REPLAY,
        REPLAYED,
        reported=("Reported", USAGE_REPORTED),
        mirrored=(
            "Reported, and mirrored to a meter (USAGE_RECORD_MIRROR)",
            {
                **USAGE_REPORTED,
                "mirror": {
                    "status": "reported",
                    "status_code": 200,
                    **EVENT_FIELDS,
                    "idempotency_key": KEY,
                    "value": "3",
                    "stripe_identifier": MIRROR_IDENTIFIER,
                },
            },
        ),
    ),
    202: answer(
        UsageRecordQueued,
        "Stripe unreachable, timing out, 429 or 5xx after bounded retries (or no time left in the request): the "
        "record is on the retry queue and will be reported exactly once. With reason.type "
        "stripe_idempotency_mismatch or needs_review, Stripe may already hold it: it is held for an operator, and "
        "counted at most once." + _REPLAY,
        REPLAYED,
        queued=("Queued for the retry worker", USAGE_QUEUED),
    ),
    403: _forbidden(
        "subscription_item", "client 'team-a-svc' may not report usage to 'si_123'", "subscription_item_not_allowed"
    ),
    409: _CONFLICTS,
    422: answer(
        one_of(UsageRecordRejected, ErrorBody),
        "status rejected: Stripe refused the record for good (e.g. resource_missing, usage_records_unsupported); "
        "it is on the dead-letter queue with the reason." + _REPLAY + " error.type validation_error: the body "
        "fails validation, every bad field is named; nothing is stored.",
        REPLAYED,
        rejected=("Refused by Stripe", USAGE_REJECTED),
        validation_error=("Invalid body", invalid(("quantity", "Input should be a valid integer", "int_type"))),
    ),
}

POST_USAGE_BATCH: dict[int, OpenAPIResponse] = {
    **_edge(post=True),
    200: answer(
        UsageBatchAnswer,
        "One result per record, in request order: the single answer's fields plus its status_code (and replayed: "
        "true for a replay); a summary by status.",
        batch=(
            "Reported, refused by Stripe, replayed",
            {
                "results": [
                    {**USAGE_REPORTED, "idempotency_key": "a", "status_code": 200},
                    {**USAGE_REJECTED, "idempotency_key": "b", "status_code": 422},
                    {**USAGE_REPORTED, "idempotency_key": "c", "status_code": 200, "replayed": True},
                ],
                "summary": {"reported": 2, "rejected": 1},
            },
        ),
    ),
    403: _forbidden(
        "records[0].subscription_item",
        "client 'team-a-svc' may not report usage to 'si_123'",
        "subscription_item_not_allowed",
    ),
    422: answer(
        ErrorBody,
        "A record fails validation, or repeats an earlier record's idempotency_key: the whole batch is refused and "
        "nothing is processed.",
        validation_error=(
            "A repeated key",
            invalid(
                (
                    "records[1].idempotency_key",
                    "idempotency_key 'a' is also used by records[0]",
                    "duplicate_idempotency_key",
                ),
                index=1,
            ),
        ),
    ),
}

POST_METER_EVENT: dict[int, OpenAPIResponse] = {
    **_edge(post=True),
    200: answer(
        MeterEventReported, "Stripe accepted the event." + _REPLAY, REPLAYED, reported=("Reported", EVENT_REPORTED)
    ),
    202: answer(
        one_of(MeterEventQueued, MeterEventAccepted),
        "queued: Stripe did not take the event yet; it is on the retry queue and will be reported exactly once. "
        "accepted: the stored answer of a key first sent in a streamed batch." + _REPLAY,
        REPLAYED,
        queued=("Queued for the retry worker", EVENT_QUEUED),
        accepted=("A replay of a streamed event", EVENT_ACCEPTED),
    ),
    403: _forbidden(
        "event_name", "client 'team-a-svc' may not send events named 'api_requests'", "event_name_not_allowed"
    ),
    409: _CONFLICTS,
    422: answer(
        one_of(MeterEventRejected, ErrorBody),
        "status rejected: Stripe refused the event (unknown or inactive meter, unknown customer...); it is "
        "dead-lettered." + _REPLAY + " error.type validation_error: the body fails validation, names no customer, "
        "or its timestamp is outside Stripe's window (35 days back, 5 minutes ahead); nothing is stored.",
        REPLAYED,
        rejected=("Refused by Stripe", EVENT_REJECTED),
        validation_error=(
            "Outside Stripe's window",
            invalid(
                (
                    "timestamp",
                    "timestamp is more than 35 days in the past, which Stripe refuses",
                    "timestamp_out_of_window",
                )
            ),
        ),
    ),
}

POST_METER_EVENT_BATCH: dict[int, OpenAPIResponse] = {
    **_edge(post=True),
    200: answer(
        MeterEventBatchAnswer,
        "One result per event, in request order, and a summary. METER_EVENT_BATCH_API=stream (the default): the "
        "new events go to Stripe in one v2 stream request and are accepted (Stripe validates them later); v1: one "
        "call per event, reported or rejected at once.",
        stream=(
            "Streamed, with a replay",
            {
                "results": [
                    {**EVENT_ACCEPTED, "idempotency_key": "e1", "status_code": 202},
                    {**EVENT_REPORTED, "idempotency_key": "e2", "status_code": 200, "replayed": True},
                ],
                "summary": {"accepted": 1, "reported": 1},
            },
        ),
    ),
    403: _forbidden(
        "events[0].event_name", "client 'team-a-svc' may not send events named 'api_requests'", "event_name_not_allowed"
    ),
    422: answer(
        ErrorBody,
        "An event fails validation (or Stripe's window), names no customer, or repeats an earlier event's key: the "
        "whole batch is refused and nothing is processed.",
        validation_error=(
            "No customer",
            invalid(
                (
                    "events[2].customer",
                    "customer is required (or payload['stripe_customer_id'], the meter's customer key)",
                    "missing",
                ),
                index=2,
            ),
        ),
    ),
}

_CANCEL_FIELDS = {"idempotency_key": EVENT_KEY, "event_name": EVENT_NAME}

POST_METER_EVENT_CANCEL: dict[int, OpenAPIResponse] = {
    **_edge(post=True),
    200: answer(
        MeterEventCancelReported,
        "Stripe took the cancellation: the event leaves the meter's totals." + _REPLAY,
        REPLAYED,
        reported=("Cancelled", {"status": "reported", **_CANCEL_FIELDS, "cancelled_identifier": IDENTIFIER}),
    ),
    202: answer(
        MeterEventCancelQueued,
        "Stripe did not take it yet (unreachable, or a streamed event it has not processed yet): the worker sends "
        "the cancellation, once." + _REPLAY,
        REPLAYED,
        queued=(
            "Stripe has not processed the streamed event yet",
            {
                "status": "queued",
                **_CANCEL_FIELDS,
                "message": QUEUED_MESSAGE,
                "reason": {
                    "type": "meter_event_not_in_stripe_yet",
                    "message": f'No meter event with identifier {IDENTIFIER} was found for event name "api_requests". '
                    "Stripe may not have processed the streamed event yet; retried later.",
                    "http_status": 400,
                },
                "next_attempt_at": AT + 60,
            },
        ),
    ),
    409: answer(
        ErrorBody,
        "event_not_reported: the event is not in Stripe yet (queued, or its processing failed): cancel it once a "
        "replay of the event answers reported. idempotency_conflict, idempotency_in_progress (with Retry-After): "
        "as for the events themselves.",
        RETRY_AFTER,
        event_not_reported=(
            "The event is still queued",
            error(
                "event_not_reported",
                "the event is not in Stripe yet (queued, or its first processing failed): cancel it once a replay "
                "of the event answers reported",
                idempotency_key=EVENT_KEY,
            ),
        ),
    ),
    422: answer(
        one_of(MeterEventCancelRejected, ErrorBody),
        "error.type unknown_idempotency_key: this client sent no meter event with that key; nothing_to_cancel: "
        "Stripe refused the event; cancel_window_passed: Stripe cancels an event only within 24 h of receiving it; "
        "validation_error: the body fails validation. Nothing is stored for these. status rejected: Stripe refused "
        "the cancellation." + _REPLAY,
        REPLAYED,
        unknown_idempotency_key=(
            "No such event",
            error(
                "unknown_idempotency_key",
                "this client sent no meter event with this idempotency_key",
                idempotency_key=EVENT_KEY,
            ),
        ),
        cancel_window_passed=(
            "Too late",
            error(
                "cancel_window_passed",
                "Stripe cancels a meter event only within 24 h of receiving it; this one was sent 30 h ago",
                idempotency_key=EVENT_KEY,
            ),
        ),
    ),
}

_NOT_FOUND = answer(
    ErrorBody,
    "No answer is stored for this key of the caller's: never received, past the dedup window, or its request was "
    "answered 503 (send it again). Another client's key, or a key of the other kind, is a 404 too.",
    not_found=(
        "Unknown key",
        error(
            "not_found",
            "no answer is stored for this key: it was never received, its dedup window has passed, or its request "
            "was answered 503 (then send it again, with the same key and payload)",
            idempotency_key=KEY,
        ),
    ),
)

GET_USAGE_STATUS: dict[int, OpenAPIResponse] = {
    **_edge(post=False),
    200: answer(
        UsageRecordStatus,
        "The stored answer, as a replay would give it, with its status_code and the delivery attempts so far.",
        queued=("Queued, retried once already", {**USAGE_QUEUED, "status_code": 202, "attempts": 2}),
        reported=("Reported", {**USAGE_REPORTED, "status_code": 200, "attempts": 1}),
        in_progress=(
            "Being processed",
            {
                "idempotency_key": KEY,
                "status": "in_progress",
                "message": "a request with this key is being processed right now; look again in a few seconds",
            },
        ),
    ),
    404: _NOT_FOUND,
}

GET_METER_EVENT_STATUS: dict[int, OpenAPIResponse] = {
    **_edge(post=False),
    200: answer(
        MeterEventStatus,
        "The stored answer, as a replay would give it, with its status_code and the delivery attempts so far.",
        accepted=("Streamed, not reported invalid", {**EVENT_ACCEPTED, "status_code": 202, "attempts": 1}),
        rejected=("Refused by Stripe", {**EVENT_REJECTED, "status_code": 422, "attempts": 1}),
    ),
    404: _NOT_FOUND,
}

STRIPE_EVENTS: dict[int, OpenAPIResponse] = {
    200: answer(
        StripeEventHandled,
        "Handled; other event types are answered 200 and ignored.",
        handled=(
            "Two sampled events traced to keys and rejected",
            {
                "received": True,
                "id": "evt_test_65R9Jm5c3z8sWY1cT4Ht",
                "type": "v1.billing.meter.error_report_triggered",
                "rejected": 2,
                "unattributed": 0,
            },
        ),
    ),
    400: answer(
        ErrorBody,
        "invalid_signature: the Stripe-Signature header does not verify (metric StripeEventSignatureInvalid). "
        "invalid_event: a signed body that is not a thin event. invalid_json: the body cannot be decoded.",
        invalid_signature=(
            "Not signed by Stripe",
            error("invalid_signature", "the Stripe-Signature header does not verify"),
        ),
        invalid_event=("Not a thin event", error("invalid_event", "the body is not a Stripe thin event")),
    ),
    413: _edge(post=True)[413],
    503: answer(
        ErrorBody,
        "DynamoDB, SQS, the secret or Stripe failed: Stripe delivers the event again later (for up to three days), "
        "so nothing is lost.",
        RETRY_AFTER,
        service_unavailable=("Stripe will deliver it again", error("service_unavailable", "retry later")),
    ),
}
