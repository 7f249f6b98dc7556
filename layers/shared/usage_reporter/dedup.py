"""Deduplication by the caller's idempotency key, with Powertools Idempotency on DynamoDB.

The dedup record is the source of truth for a (client, key): it holds the answer the caller got
(reported, queued or rejected) for the whole dedup window, long after Stripe forgot its own key.
The retry worker rewrites it when a queued record is finally delivered or rejected.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord

from . import aws
from .config import Settings

# A fixed prefix (not the function's name), so the retry worker addresses the same items.
KEY_PREFIX = "usage-record"


def dedup_request(client_id: str, idempotency_key: str, record: dict[str, Any]) -> dict[str, Any]:
    """The data the dedup key and payload hash are computed from (``record``: ``UsageRecord.dedup_payload()``)."""
    return {"client_id": client_id, "idempotency_key": idempotency_key, "record": record}


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


class DedupRecordInProgress(Exception):
    """The ingest function is still working on this key."""


class DedupLedger:
    """Read and rewrite stored answers outside the ingest function (the retry worker), with Powertools'
    own persistence layer, so the item key, payload hash and expiry are exactly the ingest's."""

    def __init__(self, settings: Settings, persistence: BasePersistenceLayer) -> None:
        persistence.configure(idempotency_config(settings), key_prefix=KEY_PREFIX)
        self._store = persistence

    def answer(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The stored answer for this (client, key, payload), or None when there is none."""
        try:
            record = self._store.get_record(request)
        except IdempotencyItemNotFoundError:
            return None
        if record is None:
            return None
        if record.status == STATUS_CONSTANTS["INPROGRESS"]:
            raise DedupRecordInProgress(request["idempotency_key"])
        return record.response_json_as_dict()

    def store(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        """Replace the stored answer (and restart the dedup window: it is never shortened)."""
        self._store.save_success(request, answer)
