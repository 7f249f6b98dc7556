"""SQS adapter: the retry queue and the dead-letter queue share one message shape (``QueuedRecord``)."""

from __future__ import annotations

from typing import Any

from .models import QueuedRecord


class QueueUnavailable(Exception):
    """SQS did not take the message."""


class RecordQueues:
    def __init__(self, sqs_client: Any, *, retry_queue_url: str, dead_letter_queue_url: str) -> None:
        self._sqs = sqs_client
        self.retry_queue_url = retry_queue_url
        self.dead_letter_queue_url = dead_letter_queue_url

    def send_for_retry(self, message: QueuedRecord, *, delay_seconds: int = 0) -> str:
        return self._send(self.retry_queue_url, message, delay_seconds)

    def send_dead_letter(self, message: QueuedRecord) -> str:
        return self._send(self.dead_letter_queue_url, message, 0)

    def _send(self, queue_url: str, message: QueuedRecord, delay_seconds: int) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        # The reason also rides as attributes, so an operator can see it without parsing bodies.
        attributes = {
            "reason_type": {"DataType": "String", "StringValue": message.reason.type},
            "client_id": {"DataType": "String", "StringValue": message.client_id},
        }
        if message.reason.code:
            attributes["reason_code"] = {"DataType": "String", "StringValue": message.reason.code}
        try:
            response = self._sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=message.model_dump_json(),
                MessageAttributes=attributes,
                DelaySeconds=delay_seconds,
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS send to {queue_url} failed: {exc}") from exc
        return str(response["MessageId"])
