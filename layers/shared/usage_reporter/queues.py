"""SQS adapter: the retry queue and the dead-letter queue share one message shape (``QueuedRecord``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .models import FailureReason, QueuedRecord


class QueueUnavailable(Exception):
    """SQS did not take the message."""


class RecordQueues:
    def __init__(self, sqs_client: Callable[[], Any], *, retry_queue_url: str, dead_letter_queue_url: str) -> None:
        self._sqs_client = sqs_client  # built on first use: most requests never queue anything
        self.retry_queue_url = retry_queue_url
        self.dead_letter_queue_url = dead_letter_queue_url

    @property
    def _sqs(self) -> Any:
        return self._sqs_client()

    def send_for_retry(self, message: QueuedRecord, *, delay_seconds: int = 0) -> str:
        return self._send(self.retry_queue_url, message, delay_seconds)

    def send_dead_letter(self, message: QueuedRecord) -> str:
        return self._send(self.dead_letter_queue_url, message, 0)

    def send_unreadable_dead_letter(self, body: str, reason: FailureReason) -> str:
        """A message the worker cannot even parse: kept as it came, the reason beside it."""
        wrapped = json.dumps({"version": 1, "kind": "unreadable", "body": body, "reason": reason.model_dump()})
        return self._send_raw(self.dead_letter_queue_url, wrapped, reason, None, 0)

    def delay_redelivery(self, receipt_handle: str, seconds: int) -> None:
        """Backoff: the retry-queue message comes back only after ``seconds``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.retry_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (BotoCoreError, ClientError) as exc:
            # Not fatal: the queue's own visibility timeout then spaces the attempts.
            raise QueueUnavailable(f"cannot delay the retry: {exc}") from exc

    def _send(self, queue_url: str, message: QueuedRecord, delay_seconds: int) -> str:
        # ASCII JSON: SQS refuses some characters a key may hold (U+FFFE, U+FFFF); escaped, they pass.
        body = json.dumps(message.model_dump(mode="json"))
        return self._send_raw(queue_url, body, message.reason, message.client_id, delay_seconds)

    def _send_raw(
        self, queue_url: str, body: str, reason: FailureReason, client_id: str | None, delay_seconds: int
    ) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        # The reason also rides as attributes, so an operator can see it without parsing bodies.
        attributes = {"reason_type": {"DataType": "String", "StringValue": reason.type}}
        if client_id:
            attributes["client_id"] = {"DataType": "String", "StringValue": client_id}
        if reason.code:
            attributes["reason_code"] = {"DataType": "String", "StringValue": reason.code}
        try:
            response = self._sqs.send_message(
                QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes, DelaySeconds=delay_seconds
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS send to {queue_url} failed: {exc}") from exc
        return str(response["MessageId"])
