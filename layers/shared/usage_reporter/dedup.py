"""Deduplication by the caller's idempotency key, with Powertools Idempotency on DynamoDB.

The dedup record is the source of truth for a (client, key): it holds the answer the caller got
(reported, queued or rejected) for the whole dedup window, long after Stripe forgot its own key.
The retry worker rewrites it when a queued record is finally delivered or rejected.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from . import aws
from .config import Settings
from .models import UsageRecord

# A fixed prefix (not the function's name), so the retry worker addresses the same items.
KEY_PREFIX = "usage-record"


def dedup_request(client_id: str, record: UsageRecord) -> dict[str, Any]:
    """The data the dedup key and payload hash are computed from."""
    return {"client_id": client_id, "idempotency_key": record.idempotency_key, "record": record.dedup_payload()}


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "replayed": True}


def idempotency_config(settings: Settings) -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath="[client_id, idempotency_key]",
        payload_validation_jmespath="record",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.dedup_window_seconds,
        response_hook=_mark_replayed,
    )


def persistence_layer(settings: Settings) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(table_name=settings.idempotency_table_name, boto3_client=aws.client("dynamodb"))
