"""Service configuration, parsed once from environment variables into a typed model.

Secrets have two sources: a Secrets Manager ARN in AWS, or a plain environment
variable for local runs. Exactly one of each pair is needed; the ARN wins.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_STRIPE_VERSION = "2025-02-24.acacia"  # last Stripe-Version that still has usage records
FIRST_VERSION_WITHOUT_USAGE_RECORDS = "2025-03-31"  # basil removed the usage-record API
# Stripe's first named release and its versions' dates; versions before it are plain dates (2024-06-20).
ACACIA, ACACIA_FIRST, ACACIA_LAST = "acacia", "2024-09-30", "2025-02-24"
_STRIPE_VERSION = re.compile(r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.(?P<name>[a-z]+))?")


class MeterKeys(BaseModel):
    """A meter's payload key names (Stripe's defaults unless the meter was created with others)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_key: str = Field("stripe_customer_id", min_length=1, max_length=100)
    value_key: str = Field("value", min_length=1, max_length=100)


class MirrorTarget(BaseModel):
    """Where a mirrored usage record goes: the meter's event name, and the customer (from Stripe when unset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_name: str = Field(min_length=1, max_length=100)
    customer: str | None = Field(None, pattern=r"^cus_[A-Za-z0-9]+$")


MirrorSource = Annotated[str, Field(pattern=r"^(si|price)_[A-Za-z0-9]+$")]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    idempotency_table_name: str = Field(alias="IDEMPOTENCY_TABLE_NAME", min_length=1)
    retry_queue_url: str = Field(alias="RETRY_QUEUE_URL", min_length=1)
    dead_letter_queue_url: str = Field(alias="DEAD_LETTER_QUEUE_URL", min_length=1)

    # Longer than Stripe's ~24 h idempotency memory, so a late client retry is still caught by us.
    dedup_window_days: Annotated[int, Field(ge=2, le=365)] = Field(35, alias="DEDUP_WINDOW_DAYS")

    client_secrets_secret_arn: str | None = Field(None, alias="CLIENT_SECRETS_SECRET_ARN")
    client_secrets_json: str | None = Field(None, alias="CLIENT_SECRETS", repr=False)
    signature_tolerance_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(300, alias="SIGNATURE_TOLERANCE_SECONDS")
    secrets_cache_seconds: Annotated[int, Field(ge=0)] = Field(300, alias="SECRETS_CACHE_SECONDS")

    stripe_api_key_secret_arn: str | None = Field(None, alias="STRIPE_API_KEY_SECRET_ARN")
    stripe_api_key: str | None = Field(None, alias="STRIPE_API_KEY", repr=False)
    stripe_api_base: str | None = Field(None, alias="STRIPE_API_BASE")
    # The signing secret (whsec_...) of the Stripe event destination that posts to /v1/stripe/events.
    stripe_webhook_secret_arn: str | None = Field(None, alias="STRIPE_WEBHOOK_SECRET_ARN")
    stripe_webhook_secret: str | None = Field(None, alias="STRIPE_WEBHOOK_SECRET", repr=False)
    stripe_mode: Literal["test", "live"] = Field("test", alias="STRIPE_MODE")
    stripe_version: str = Field(DEFAULT_STRIPE_VERSION, alias="STRIPE_API_VERSION")
    # One attempt plus retries must fit the Lambda timeout: see template.yaml.
    stripe_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = Field(5.0, alias="STRIPE_TIMEOUT_SECONDS")
    stripe_max_network_retries: Annotated[int, Field(ge=0, le=5)] = Field(2, alias="STRIPE_MAX_NETWORK_RETRIES")

    # Usage records sent to Stripe per second by one instance (unset: Stripe's limit for the mode, 25/s in
    # test mode, 100/s live; Stripe's limit is per account, so with several instances set it lower).
    usage_records_per_second: Annotated[float, Field(ge=1, le=1000)] | None = Field(
        None, alias="STRIPE_USAGE_RECORDS_PER_SECOND"
    )
    # Records of a batch reported in parallel; Stripe allows ~100 requests/s per account.
    batch_concurrency: Annotated[int, Field(ge=1, le=32)] = Field(8, alias="BATCH_CONCURRENCY")
    # Stop calling Stripe (and queue instead) when less than this is left of the invocation.
    stripe_budget_reserve_seconds: Annotated[float, Field(ge=0)] = Field(3.0, alias="STRIPE_BUDGET_RESERVE_SECONDS")

    # How /v1/meter_events/batch reaches Stripe: one v2 stream request per batch (validated asynchronously,
    # errors come back as thin events), or one synchronous v1 request per event (exact answers, 1,000/s).
    meter_event_batch_api: Literal["stream", "v1"] = Field("stream", alias="METER_EVENT_BATCH_API")
    # Meter events: {"event name": {"customer_key": ..., "value_key": ...}} for meters with custom keys.
    meter_event_keys: dict[str, MeterKeys] = Field(default_factory=dict, alias="METER_EVENT_KEYS")

    # Migration: usage records for these subscription items (si_...) or legacy prices (price_...) are also
    # reported as meter events: {"si_123": {"event_name": "api_requests", "customer": "cus_123"}, ...}.
    usage_record_mirror: dict[MirrorSource, MirrorTarget] = Field(default_factory=dict, alias="USAGE_RECORD_MIRROR")

    # Retry worker: backoff between receives (SQS visibility), and when to give a record to an operator.
    retry_base_delay_seconds: Annotated[int, Field(ge=0, le=900)] = Field(30, alias="RETRY_BASE_DELAY_SECONDS")
    retry_max_delay_seconds: Annotated[int, Field(ge=0, le=43200)] = Field(3600, alias="RETRY_MAX_DELAY_SECONDS")
    retry_max_receive_count: Annotated[int, Field(ge=1, le=1000)] = Field(10, alias="RETRY_MAX_RECEIVE_COUNT")
    # Stripe forgets idempotency keys after ~24 h: past this age a resend could be a second record.
    late_record_seconds: Annotated[int, Field(ge=60, le=86400)] = Field(23 * 3600, alias="LATE_RECORD_SECONDS")

    @field_validator(
        "client_secrets_secret_arn",
        "client_secrets_json",
        "stripe_api_key_secret_arn",
        "stripe_api_key",
        "stripe_api_base",
        "stripe_webhook_secret_arn",
        "stripe_webhook_secret",
        "usage_records_per_second",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CloudFormation cannot omit a variable conditionally; an empty one means "not set".
        return value or None

    @field_validator("meter_event_keys", "usage_record_mirror", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) and value.strip() else value or {}

    @field_validator("usage_record_mirror")
    @classmethod
    def _customers_only_for_items(cls, value: dict[str, MirrorTarget]) -> dict[str, MirrorTarget]:
        for source, target in value.items():
            if source.startswith("price_") and target.customer is not None:
                # A price has many subscribers: one customer for all of them would bill the wrong ones.
                raise ValueError(
                    f"USAGE_RECORD_MIRROR[{source!r}]: a price's items belong to many customers; leave out "
                    "customer (each item's comes from Stripe) or list the items (si_...) with their customers"
                )
        return value

    @field_validator("stripe_version")
    @classmethod
    def _version_has_usage_records(cls, value: str) -> str:
        problem = stripe_version_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> Settings:
        if not (self.client_secrets_secret_arn or self.client_secrets_json):
            raise ValueError("set CLIENT_SECRETS_SECRET_ARN (AWS) or CLIENT_SECRETS (local runs)")
        if not (self.stripe_api_key_secret_arn or self.stripe_api_key):
            raise ValueError("set STRIPE_API_KEY_SECRET_ARN (AWS) or STRIPE_API_KEY (local runs)")
        return self

    @property
    def usage_record_rate(self) -> float:
        """Usage records a second to Stripe from this instance."""
        return self.usage_records_per_second or (25.0 if self.stripe_mode == "test" else 100.0)

    @property
    def dedup_window_seconds(self) -> int:
        return self.dedup_window_days * 86400


def stripe_version_problem(version: str) -> str | None:
    """Why ``version`` is not a Stripe API version with usage records, or None when it is one.

    Stripe's versions are ``YYYY-MM-DD`` (a real date) before its first named release, acacia, and
    ``YYYY-MM-DD.<release>`` from then on; usage records are gone from ``2025-03-31.basil`` on. Stripe
    only has the dates it released; this checks the rule, not that list (Stripe refuses the others).
    """
    match = _STRIPE_VERSION.fullmatch(version)
    if not match:
        return (
            f"STRIPE_API_VERSION {version!r} is not a Stripe API version: expected YYYY-MM-DD.<release name> "
            f"such as {DEFAULT_STRIPE_VERSION}, or a plain YYYY-MM-DD before {ACACIA_FIRST}"
        )
    day, name = match["date"], match["name"]
    try:
        datetime.date.fromisoformat(day)
    except ValueError:
        return f"STRIPE_API_VERSION {version!r}: {day} is not a date"
    if day >= FIRST_VERSION_WITHOUT_USAGE_RECORDS:
        return (
            f"STRIPE_API_VERSION {version!r} has no usage records (removed in 2025-03-31.basil); "
            f"use an earlier version such as {DEFAULT_STRIPE_VERSION}"
        )
    if day < ACACIA_FIRST:
        if name:
            return f"STRIPE_API_VERSION {version!r}: versions before {ACACIA_FIRST} have no release name; use {day}"
        return None
    if day > ACACIA_LAST:
        return (
            f"STRIPE_API_VERSION {version!r}: Stripe released no version between {ACACIA_LAST}.{ACACIA} "
            "and 2025-03-31.basil"
        )
    if name != ACACIA:
        return (
            f"STRIPE_API_VERSION {version!r}: Stripe's versions from {ACACIA_FIRST} to {ACACIA_LAST} are "
            f"release {ACACIA!r}; did you mean {day}.{ACACIA}?"
        )
    return None


@functools.cache
def get_settings() -> Settings:
    """The settings of this process; tests call ``get_settings.cache_clear()`` after changing the env."""
    return Settings.model_validate(dict(os.environ))
