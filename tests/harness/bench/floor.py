"""The floor: one usage record reported exactly once with the service's design, and nothing else.

Only boto3 and stripe: no Powertools, no pydantic, no service code. The same four calls the service makes
for a new record, with items of the same shape and about the same size:

1. a conditional PutItem: the dedup lock (Powertools' item and condition, status ``INPROGRESS``);
2. a conditional PutItem: the delivery plan (the write-ahead that makes a second processing send the same
   request), ``ReturnValuesOnConditionCheckFailure`` as the service sends it;
3. ``POST /v1/subscription_items/{si}/usage_records`` through ``StripeClient.raw_request`` with an
   Idempotency-Key and the pinned pre-basil ``Stripe-Version``;
4. an UpdateItem: the stored answer (status ``COMPLETED``).

The floor knows its Stripe key (no Secrets Manager), validates nothing and logs nothing: it is what a
hand-written function with this design could not go below.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import boto3
import stripe
from botocore.config import Config

# The service's client settings (usage_reporter.aws), so that neither side retries or times out differently.
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
_LOCK_CONDITION = (
    "attribute_not_exists(#id) OR #expiry < :now OR "
    "(#status = :inprogress AND attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)"
)
DEDUP_WINDOW_SECONDS = 35 * 86400


class Floor:
    """Clients built once (a warm instance reuses them), then ``report`` per record."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._table = str(config["table"])
        self._client_id = str(config["client_id"])
        self._subscription_item = str(config["subscription_item"])
        self._stripe_version = str(config["stripe_version"])
        self._dynamodb: Any = boto3.session.Session().client("dynamodb", config=_CLIENT_CONFIG)
        self._stripe = stripe.StripeClient(
            str(config["stripe_api_key"]),
            base_addresses={"api": str(config["stripe_api_base"])},
            max_network_retries=int(config["stripe_max_network_retries"]),
            http_client=stripe.RequestsClient(timeout=float(config["stripe_timeout_seconds"])),
        )

    def report(self, key: str, quantity: int) -> str:
        """The four calls for one new record; the Stripe usage record's id."""
        now = time.time()
        digest = hashlib.sha256(json.dumps([self._client_id, key]).encode()).hexdigest()
        record = {"subscription_item": self._subscription_item, "quantity": quantity, "action": "increment"}
        payload_hash = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        expiry = str(int(now) + DEDUP_WINDOW_SECONDS)
        lock = {"id": {"S": f"floor#{digest}"}}
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                **lock,
                "expiration": {"N": expiry},
                "status": {"S": "INPROGRESS"},
                "in_progress_expiration": {"N": str(int(now * 1000) + 28_000)},
                "validation": {"S": payload_hash},
            },
            ConditionExpression=_LOCK_CONDITION,
            ExpressionAttributeNames={
                "#id": "id",
                "#expiry": "expiration",
                "#in_progress_expiry": "in_progress_expiration",
                "#status": "status",
            },
            ExpressionAttributeValues={
                ":now": {"N": str(int(now))},
                ":now_in_millis": {"N": str(int(now * 1000))},
                ":inprogress": {"S": "INPROGRESS"},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        stripe_params = {**record, "timestamp": int(now)}
        stripe_key = f"floor-{digest}"
        plan = {
            "stripe": stripe_params,
            "stripe_idempotency_key": stripe_key,
            "payload_sha256": payload_hash,
            "record": record,
            "fixed_at": int(now),
            "client_id": self._client_id,
            "idempotency_key": key,
        }
        self._dynamodb.put_item(
            TableName=self._table,
            Item={"id": {"S": f"floor-plan#{digest}"}, "expiration": {"N": expiry}, "plan": {"S": json.dumps(plan)}},
            ConditionExpression="attribute_not_exists(#id) OR #expiration < :now",
            ExpressionAttributeNames={"#id": "id", "#expiration": "expiration"},
            ExpressionAttributeValues={":now": {"N": str(int(now))}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        response = self._stripe.raw_request(
            "post",
            f"/v1/subscription_items/{self._subscription_item}/usage_records",
            quantity=quantity,
            timestamp=int(now),
            action="increment",
            idempotency_key=stripe_key,
            stripe_version=self._stripe_version,
        )
        stripe_id = str(response.data["id"])
        body = {"status": "reported", "idempotency_key": key, **stripe_params, "stripe_id": stripe_id}
        answer = {"status_code": 200, "body": body}
        self._dynamodb.update_item(
            TableName=self._table,
            Key=lock,
            UpdateExpression="SET #data = :data, #expiry = :expiry, #status = :status, #validation = :validation",
            ExpressionAttributeNames={
                "#data": "data",
                "#expiry": "expiration",
                "#status": "status",
                "#validation": "validation",
            },
            ExpressionAttributeValues={
                ":data": {"S": json.dumps(answer)},
                ":expiry": {"N": expiry},
                ":status": {"S": "COMPLETED"},
                ":validation": {"S": payload_hash},
            },
        )
        return stripe_id
