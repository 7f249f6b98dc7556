"""The wire models: what callers send, and what travels on the retry and dead-letter queues."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

MAX_QUANTITY = 1_000_000_000  # above this a record is almost surely a unit mistake (ms, bytes...)
MAX_BATCH_RECORDS = 100

IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
SubscriptionItemId = Annotated[str, StringConstraints(pattern=r"^si_[A-Za-z0-9]+$", max_length=255)]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
UnixSeconds = Annotated[int, Field(gt=0)]


def record_digest(client_id: str, idempotency_key: str) -> str:
    """A (client, key)'s fixed-length name: in its Stripe Idempotency-Key (a meter event's identifier) and in
    its delivery plan's id, so that an identifier Stripe reports leads back to the plan."""
    return hashlib.sha256(json.dumps([client_id, idempotency_key]).encode()).hexdigest()


def unix_seconds_or_now(value: object, handler: ValidatorFunctionWrapHandler) -> int | str:
    """A timestamp field's wrap validator: one clear message instead of one per member of the union."""
    try:
        checked: int | str = handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "timestamp_type", 'timestamp must be unix seconds (a positive integer) or "now"'
        ) from None
    return checked


class UsageRecord(BaseModel):
    """One metered-usage record as a caller sends it. Strict: ``"5"``, ``5.0`` and ``true`` are not quantities."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey = Field(description="The caller's dedup key, scoped to the caller.")
    subscription_item: SubscriptionItemId = Field(description="Stripe subscription item id (si_...).")
    quantity: Quantity = Field(description=f"Usage quantity, an integer from 0 to {MAX_QUANTITY}.")
    timestamp: UnixSeconds | Literal["now"] = Field(
        "now", description='When the usage happened: unix seconds, or "now" (the time we receive it).'
    )
    action: Literal["increment", "set"] = Field(
        "increment", description="increment adds to the period's usage; set overwrites it at this timestamp."
    )

    @field_validator("timestamp", mode="wrap")
    @classmethod
    def _timestamp(cls, value: object, handler: ValidatorFunctionWrapHandler) -> int | str:
        checked = unix_seconds_or_now(value, handler)
        if isinstance(checked, int) and checked > time.time():
            # Stripe refuses a usage record dated in the future; how far back is its rule (the current
            # billing period of the item's subscription), which only Stripe knows.
            raise PydanticCustomError("timestamp_in_future", 'timestamp is in the future; use past seconds or "now"')
        return checked

    def resolved_timestamp(self, received_at: int) -> int:
        """The unix time sent to Stripe: ``"now"`` is fixed at receipt so that retries send the same record."""
        return received_at if self.timestamp == "now" else int(self.timestamp)

    def dedup_payload(self) -> dict[str, object]:
        """What a replay of the same key must match (the key itself is not part of the payload)."""
        return self.model_dump(mode="json", exclude={"idempotency_key"})


@dataclass(frozen=True)
class MirroredUsage:
    """A usage record on its way to a meter as well (mirroring during a migration): its own dedup scope,
    the caller's key and payload, so a replay of the record replays its mirror too."""

    usage: UsageRecord
    event_name: str
    customer: str
    timestamp: int  # the usage record's own, as its delivery plan fixed it: both copies say the same time

    @property
    def idempotency_key(self) -> str:
        return self.usage.idempotency_key

    def dedup_payload(self) -> dict[str, object]:
        return self.usage.dedup_payload()


class UsageBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    records: list[UsageRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class StripeUsage(BaseModel):
    """Exactly the parameters sent to Stripe; every attempt of a record sends these same values."""

    model_config = ConfigDict(frozen=True)

    subscription_item: str
    quantity: int
    timestamp: int
    action: Literal["increment", "set"]


class StripeMeterEvent(BaseModel):
    """Exactly the parameters of a Billing meter event sent to Stripe (every attempt sends these)."""

    model_config = ConfigDict(frozen=True)

    event_name: str
    payload: dict[str, str] = Field(description="The meter's customer and value keys, and any dimensions.")
    identifier: str = Field(description="Derived from (client, key): Stripe refuses a second event with it.")
    timestamp: int


class StripeMeterEventCancel(BaseModel):
    """A ``cancel`` meter event adjustment of an earlier event, by its identifier."""

    model_config = ConfigDict(frozen=True)

    event_name: str
    cancel_identifier: str


def _params_kind(value: object) -> str:
    def has(field: str) -> bool:
        return field in value if isinstance(value, dict) else hasattr(value, field)

    if has("cancel_identifier"):
        return "meter_event_cancel"
    return "meter_event" if has("event_name") else "usage_record"


# What a record sends Stripe, by kind (told apart by their fields, so queue messages need no tag).
StripeParams = Annotated[
    Annotated[StripeUsage, Tag("usage_record")]
    | Annotated[StripeMeterEvent, Tag("meter_event")]
    | Annotated[StripeMeterEventCancel, Tag("meter_event_cancel")],
    Discriminator(_params_kind),
]
RecordKindName = Literal["usage_record", "meter_event", "meter_event_cancel", "usage_record_mirror"]


class FailureReason(BaseModel):
    """Why a record was not reported (yet): shown to callers, operators and in queue messages."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(description="stripe_error | stripe_unavailable | stripe_rate_limited | ...")
    message: str
    code: str | None = None
    param: str | None = Field(default=None, description="The request parameter Stripe named (e.g. timestamp).")
    http_status: int | None = None
    stripe_request_id: str | None = None


class QueuedRecord(BaseModel):
    """The body of a retry-queue or dead-letter-queue message.

    It carries everything needed to report the record later with the same Stripe Idempotency-Key,
    and to update the caller's dedup record (``client_id``, ``idempotency_key``, ``record``).
    """

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    kind: RecordKindName = "usage_record"
    client_id: str
    idempotency_key: str
    record: dict[str, object] = Field(description="The record as the caller sent it (without the key).")
    stripe: StripeParams
    stripe_idempotency_key: str
    received_at: int
    reason: FailureReason
    attempts: int = Field(default=1, description="Delivery attempts so far (the ingest attempt counts).")
    in_doubt: bool = Field(
        default=False,
        description=(
            "Stripe may already hold this record (an attempt's answer was lost). A redrive is safe while Stripe "
            "remembers the key (23 h after the first attempt): it replays its answer instead of counting twice."
        ),
    )
    review_confirmed_at: int | None = Field(
        default=None,
        description=(
            "When an operator checked Stripe and confirmed this record is not there (redrive "
            "--confirm-not-in-stripe). The worker uses a confirmation once: it starts a fresh Stripe key."
        ),
    )


# Reasons for which the ingest never sent the record to Stripe: nothing can be there under its key.
NEVER_SENT_REASONS = frozenset({"time_budget_exhausted", "stripe_key_unavailable", "stripe_key_misconfigured"})
# Stripe refused these for now, not for good: it holds nothing under the key, but would replay its refusal
# to that key for 24 h, so the next attempt goes under a fresh one (a cancel of an event Stripe has not
# processed yet).
REFUSED_FOR_NOW_REASONS = frozenset({"meter_event_not_in_stripe_yet"})


def stripe_key_reason(misconfigured: str | None) -> FailureReason:
    """Why a record was not sent: the Stripe key could not be read, or is wrong for this deployment
    (``misconfigured``: what is wrong, never the key)."""
    if misconfigured:
        return FailureReason(type="stripe_key_misconfigured", message=misconfigured)
    return FailureReason(type="stripe_key_unavailable", message="the service cannot reach Stripe right now")


def late_record_reason(first_sent_at: int, now: int) -> FailureReason:
    """Why a record whose earlier attempt may have reached Stripe is not resent this late: Stripe keeps
    an Idempotency-Key (and a meter event identifier) about 24 h, so a resend could count it twice."""
    return FailureReason(
        type="needs_review",
        message=(
            f"first sent to Stripe {(now - first_sent_at) // 3600} h ago and an earlier attempt's outcome is "
            "unknown; Stripe may have forgotten the key, so a resend could report it twice. Check Stripe for "
            "this record, then redrive with --confirm-not-in-stripe."
        ),
    )


# Stripe answered ``idempotency_error``: it has seen this Idempotency-Key with other parameters, so it may
# hold the record. Never a refusal, never a fresh key without an operator's confirmation.
KEY_SEEN_WITH_OTHER_PARAMETERS = "stripe_idempotency_mismatch"


class DeliveryPlan(BaseModel):
    """The Stripe request for one (client, key), fixed once, durably, before Stripe is first called.

    Every later processing of the key (SDK retry, caller retry after a 503 or a crash, worker,
    redrive) sends exactly these parameters under this Idempotency-Key, so Stripe can only ever
    replay the first answer. ``"now"`` is resolved once, here.
    """

    model_config = ConfigDict(frozen=True)

    stripe: StripeParams
    stripe_idempotency_key: str
    payload_sha256: str = Field(description="The caller's payload the plan was made for.")
    record: dict[str, object] = Field(
        default_factory=dict, description="That payload (a cancellation finds the event's stored answer with it)."
    )
    fixed_at: int = Field(description="When the plan was fixed: the key's first processing.")
    client_id: str = Field("", description="Whose key (an identifier Stripe reports leads back to the caller).")
    idempotency_key: str = ""


class DeliveryState(BaseModel):
    """What the retry worker knows about a queued record's Stripe attempts; kept in the dedup record.

    ``in_doubt``: some attempt under ``stripe_idempotency_key`` may have been written by Stripe without
    us seeing the answer. Harmless while Stripe remembers the key (it replays), not after.
    ``attempt_started_at``: set before each Stripe call and cleared after its answer, so an attempt
    that died mid-call is known to be in doubt.
    """

    model_config = ConfigDict(frozen=True)

    stripe_idempotency_key: str
    key_first_used_at: int
    in_doubt: bool
    attempt_started_at: int | None = None
    attempts: int = 1
    review_confirmation_used: int = Field(
        default=0, description="The operator's confirmation (review_confirmed_at) this state already acted on."
    )

    @classmethod
    def first(cls, message: QueuedRecord) -> DeliveryState:
        if message.reason.type in REFUSED_FOR_NOW_REASONS and not message.in_doubt:
            return cls.fresh_key(message, message.attempts)
        return cls(
            stripe_idempotency_key=message.stripe_idempotency_key,
            key_first_used_at=message.received_at,
            # An earlier processing of the key may have reached Stripe even when this one never did.
            in_doubt=message.in_doubt or message.reason.type not in NEVER_SENT_REASONS,
            attempts=message.attempts,
        )

    @classmethod
    def asked_again(cls, refused: DeliveryState) -> DeliveryState:
        """The state for asking Stripe again after it replayed a refusal saved for ``refused``'s key: the key
        derives from that one alone (``<key>-a``), so copies of the record processed at once share it."""
        return refused.model_copy(
            update={
                "stripe_idempotency_key": f"{refused.stripe_idempotency_key}-a",
                "key_first_used_at": int(time.time()),
                "in_doubt": False,
                "attempt_started_at": None,
            }
        )

    @classmethod
    def fresh_key(cls, message: QueuedRecord, attempts: int, **state: int) -> DeliveryState:
        """The state for a fresh Stripe key (``-r<attempts>``): nothing was ever sent under it."""
        return cls(
            stripe_idempotency_key=f"{message.stripe_idempotency_key}-r{attempts}",
            key_first_used_at=int(time.time()),
            in_doubt=False,
            attempts=attempts,
            **state,
        )
