"""Billing meter events as callers send them, and the value rules Stripe applies to them.

Stripe takes a meter event's value as a string: a whole number or a decimal. The service forwards it
exactly as the caller wrote it (the body is parsed with decimals, never binary floats, so ``0.1``
stays ``0.1``), and refuses what Stripe would refuse: negatives, exponents, NaN, more than 15
significant digits, booleans.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .models import IdempotencyKey, UnixSeconds, unix_seconds_or_now

MAX_PAST_SECONDS = 35 * 86400  # Stripe accepts meter events from the past 35 days...
MAX_FUTURE_SECONDS = 300  # ...and up to 5 minutes ahead
MAX_SIGNIFICANT_DIGITS = 15
MAX_BATCH_EVENTS = 100

EventName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
CustomerId = Annotated[str, StringConstraints(pattern=r"^cus_[A-Za-z0-9]+$", max_length=255)]
PayloadKey = Annotated[str, StringConstraints(min_length=1, max_length=100)]
PayloadValue = Annotated[str, StringConstraints(max_length=100)]
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def meter_value(value: object) -> str:
    """The value as Stripe will get it (as written), or a ``PydanticCustomError`` saying why it is refused."""
    if isinstance(value, int | decimal.Decimal) and not isinstance(value, bool):
        text = str(value)  # Decimal keeps what was written: 12.50 -> "12.50", 1e3 -> "1E+3" (refused below)
    elif isinstance(value, str):
        text = value
    else:
        raise PydanticCustomError("meter_value_type", "value must be a number, or a decimal string such as '12.5'")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise PydanticCustomError(
            "meter_value", "value must be a non-negative number written without sign or exponent, such as 12 or 12.5"
        )
    if len(text.replace(".", "").lstrip("0")) > MAX_SIGNIFICANT_DIGITS:
        raise PydanticCustomError(
            "meter_value_digits", f"value has more than {MAX_SIGNIFICANT_DIGITS} significant digits"
        )
    return text


class MeterEvent(BaseModel):
    """One Billing meter event as a caller sends it (unknown fields are refused)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey = Field(description="The caller's dedup key, scoped to the caller and kind.")
    event_name: EventName = Field(description="The meter's event name.")
    customer: CustomerId | None = Field(
        None, description="Stripe customer (cus_...); required unless payload carries the meter's customer key."
    )
    value: str = Field(
        description="A non-negative integer or decimal (JSON number or string, e.g. '12.5').",
        # The plain validator below takes either; the schema says so (OpenAPI), as the validator cannot.
        json_schema_extra={
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?$"}]
        },
    )
    timestamp: UnixSeconds | Literal["now"] = Field(
        "now", description='Unix seconds within the past 35 days and at most 5 minutes ahead, or "now".'
    )
    payload: dict[PayloadKey, PayloadValue] = Field(
        default_factory=dict, max_length=20, description="Extra payload keys (dimensions, custom key names)."
    )

    @field_validator("value", mode="plain")
    @classmethod
    def _value(cls, value: object) -> str:
        return meter_value(value)

    @field_validator("timestamp", mode="wrap")
    @classmethod
    def _timestamp(cls, value: object, handler: ValidatorFunctionWrapHandler) -> int | str:
        return unix_seconds_or_now(value, handler)

    def timestamp_problem(self, now: int) -> str | None:
        """Why Stripe would refuse the timestamp now (checked on first processing, not on replays)."""
        if self.timestamp == "now":
            return None
        at = int(self.timestamp)
        if at < now - MAX_PAST_SECONDS:
            return "timestamp is more than 35 days in the past, which Stripe refuses"
        if at > now + MAX_FUTURE_SECONDS:
            return f"timestamp is more than {MAX_FUTURE_SECONDS} seconds in the future, which Stripe refuses"
        return None

    def dedup_payload(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude={"idempotency_key"})


class MeterEventBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    events: list[MeterEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class MeterEventCancel(BaseModel):
    """Cancel the client's earlier meter event, named by its idempotency_key (the cancel is itself exactly once)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey = Field(description="The idempotency_key of the meter event to cancel.")

    def dedup_payload(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class ResolvedCancel:
    """A cancel whose event was found: what the cancel kind sends Stripe."""

    idempotency_key: str
    event_name: str
    identifier: str

    def dedup_payload(self) -> dict[str, object]:
        return {}  # the caller's payload: only the key
