"""Deduplication by the caller's idempotency key, with Powertools Idempotency on DynamoDB.

The dedup record is the source of truth for a (client, key): it holds the answer the caller got
(reported, queued or rejected) for the whole dedup window, long after Stripe forgot its own key.
The retry worker rewrites it when a queued record is finally delivered or rejected.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord

from . import aws
from .config import Settings
from .models import DeliveryPlan, record_digest

# A fixed prefix (not the function's name), so the retry worker addresses the same items.
KEY_PREFIX = "usage-record"
PLAN_PREFIX = "delivery-plan"


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

    def __init__(self, settings: Settings, persistence: BasePersistenceLayer, key_prefix: str = KEY_PREFIX) -> None:
        persistence.configure(idempotency_config(settings), key_prefix=key_prefix)
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
            lock_expiry_ms = record.in_progress_expiry_timestamp
            if lock_expiry_ms is None or lock_expiry_ms > time.time() * 1000:
                raise DedupRecordInProgress(request["idempotency_key"])
            # The processing that took the lock died (or could not record its answer) and its lock has
            # expired: there is no answer, and the worker may deliver the record (same plan, same key).
            return None
        return record.response_json_as_dict()

    def store(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        """Replace the stored answer (and restart the dedup window: it is never shortened)."""
        self._store.save_success(request, answer)


def payload_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class PlanUnavailable(Exception):
    """DynamoDB did not fix the plan: Stripe must not be called."""


class DeliveryPlans:
    """Each (client, key)'s Stripe request, kept beside the dedup records, in the same table.

    Powertools deletes its record when the processing fails (so the caller's retry goes through) and
    overwrites it when a crashed processing's lock expires; the plan survives both, so the retry
    sends Stripe the very same request. One conditional PutItem: it writes the plan, or (a later
    processing) returns the one already there, for the dedup window.
    """

    def __init__(self, settings: Settings, dynamodb: Any) -> None:
        self._table = settings.idempotency_table_name
        self._window_seconds = settings.dedup_window_seconds
        self._dynamodb = dynamodb

    def fix(self, scope: str, client_id: str, idempotency_key: str, proposed: DeliveryPlan) -> DeliveryPlan:
        """The plan in force for this key of this kind (``scope``): ``proposed`` if it is the first, else the
        first one."""
        from botocore.exceptions import BotoCoreError, ClientError

        now = int(time.time())
        key = self._key(scope, client_id, idempotency_key)
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    **key,
                    "expiration": {"N": str(now + self._window_seconds)},  # the table's TTL attribute
                    "plan": {"S": proposed.model_dump_json()},
                },
                # A plan past the dedup window belongs to an earlier use of the key: replace it.
                ConditionExpression="attribute_not_exists(#id) OR #expiration < :now",
                ExpressionAttributeNames={"#id": "id", "#expiration": "expiration"},
                ExpressionAttributeValues={":now": {"N": str(now)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise PlanUnavailable(f"cannot fix the delivery plan: {exc}") from exc
            item = exc.response.get("Item") or self._read(key)
            return DeliveryPlan.model_validate_json(item["plan"]["S"])
        except BotoCoreError as exc:
            raise PlanUnavailable(f"cannot fix the delivery plan: {exc}") from exc
        return proposed

    def find(self, scope: str, client_id: str, idempotency_key: str) -> DeliveryPlan | None:
        """The plan in force for this key, or None (never processed, or past the dedup window)."""
        return self._find(self._key(scope, client_id, idempotency_key))

    def _find(self, key: dict[str, Any]) -> DeliveryPlan | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self._dynamodb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise PlanUnavailable(f"cannot read the delivery plan: {exc}") from exc
        if not item or int(item["expiration"]["N"]) < time.time():
            return None
        return DeliveryPlan.model_validate_json(item["plan"]["S"])

    def find_by_digest(self, scope: str, digest: str) -> DeliveryPlan | None:
        """The plan of the (client, key) whose ``record_digest`` is ``digest`` (what a Stripe identifier ends in)."""
        return self._find({"id": {"S": f"{PLAN_PREFIX}#{scope}#{digest}"}})

    @staticmethod
    def _key(scope: str, client_id: str, idempotency_key: str) -> dict[str, Any]:
        return {"id": {"S": f"{PLAN_PREFIX}#{scope}#{record_digest(client_id, idempotency_key)}"}}

    def _read(self, key: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self._dynamodb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise PlanUnavailable(f"cannot read the delivery plan: {exc}") from exc
        if not item:
            raise PlanUnavailable("the delivery plan vanished while it was being read")
        return item  # type: ignore[no-any-return]
