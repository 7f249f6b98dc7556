"""Operator CLI for the dead-letter queue: see what is there and why, redrive it after a fix, purge one.

    python -m usage_reporter.dead_letters --stack stripe-usage-reporter list
    python -m usage_reporter.dead_letters --stack stripe-usage-reporter redrive            # all: SQS move task
    python -m usage_reporter.dead_letters redrive --message-id <id> [--confirm-not-in-stripe]
    python -m usage_reporter.dead_letters purge-one --message-id <id>

Queue URLs come from ``--stack`` (the stack's outputs) or ``DEAD_LETTER_QUEUE_URL`` / ``RETRY_QUEUE_URL``.
Redriven records go back to the retry queue, where the worker reports them exactly once (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import aws

PEEK_SECONDS = 30  # how long a listed message stays hidden from the worker while we look at it


@dataclass(frozen=True)
class Queues:
    dead_letter_url: str
    retry_url: str

    def arn(self, url: str) -> str:
        attributes = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])


def resolve_queues(stack: str | None) -> Queues:
    if stack:
        outputs = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
        by_key = {o["OutputKey"]: o["OutputValue"] for o in outputs}
        if "DeadLetterQueueUrl" not in by_key or "RetryQueueUrl" not in by_key:
            sys.exit(f"stack {stack!r} has no DeadLetterQueueUrl/RetryQueueUrl outputs: is it this service's stack?")
        return Queues(by_key["DeadLetterQueueUrl"], by_key["RetryQueueUrl"])
    try:
        return Queues(os.environ["DEAD_LETTER_QUEUE_URL"], os.environ["RETRY_QUEUE_URL"])
    except KeyError:
        sys.exit("name the stack (--stack) or set DEAD_LETTER_QUEUE_URL and RETRY_QUEUE_URL")


def _receive_all(url: str, limit: int) -> Iterator[dict[str, Any]]:
    """Every message once (up to ``limit``); each stays invisible for PEEK_SECONDS, then comes back."""
    sqs = aws.client("sqs")
    seen: set[str] = set()
    while len(seen) < limit:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=PEEK_SECONDS,
            WaitTimeSeconds=1,
        ).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            yield message


def _release(url: str, message: dict[str, Any]) -> None:
    aws.client("sqs").change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )


def describe(message: dict[str, Any]) -> dict[str, Any]:
    """What an operator needs to decide: who, which key, how much, why, and how old."""
    try:
        body = json.loads(message["Body"])
    except ValueError:
        body = {"kind": "unreadable", "reason": {"type": "unreadable_message", "message": "body is not JSON"}}
    reason = body.get("reason") or {}
    sent_ms = int(message.get("Attributes", {}).get("SentTimestamp", 0))
    return {
        "message_id": message["MessageId"],
        "kind": body.get("kind"),
        "client_id": body.get("client_id"),
        "idempotency_key": body.get("idempotency_key"),
        "subscription_item": (body.get("stripe") or {}).get("subscription_item"),
        "quantity": (body.get("stripe") or {}).get("quantity"),
        "event_name": (body.get("stripe") or {}).get("event_name"),
        "payload": (body.get("stripe") or {}).get("payload"),
        "reason_type": reason.get("type"),
        "reason_code": reason.get("code"),
        "reason": reason.get("message"),
        "attempts": body.get("attempts"),
        "in_doubt": body.get("in_doubt", False),
        "age_hours": round((time.time() * 1000 - sent_ms) / 3_600_000, 1) if sent_ms else None,
    }


def list_messages(queues: Queues, limit: int) -> list[dict[str, Any]]:
    received = list(_receive_all(queues.dead_letter_url, limit))
    for message in received:  # released only at the end, so no message is read twice
        _release(queues.dead_letter_url, message)
    return [describe(message) for message in received]


def _find(queues: Queues, message_id: str, limit: int = 10_000) -> dict[str, Any]:
    found = None
    for message in list(_receive_all(queues.dead_letter_url, limit)):  # all: none stays hidden by accident
        if message["MessageId"] == message_id:
            found = message
        else:
            _release(queues.dead_letter_url, message)
    if found:
        return found
    sys.exit(f"message {message_id} is not in the dead-letter queue (or is being looked at; retry in {PEEK_SECONDS} s)")


def redrive_one(queues: Queues, message_id: str, *, confirm_not_in_stripe: bool = False) -> str:
    """Move one message back to the retry queue; the new message id."""
    message = _find(queues, message_id)
    body = message["Body"]
    if confirm_not_in_stripe:
        data = json.loads(body)
        # The operator looked in Stripe: the worker may now send a late record it was in doubt about.
        body = json.dumps({**data, "review_confirmed_at": int(time.time())})
    return _move(queues, message, body)


def _move(queues: Queues, message: dict[str, Any], body: str) -> str:
    sqs = aws.client("sqs")
    attributes = {
        name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        for name, value in message.get("MessageAttributes", {}).items()
        if "StringValue" in value
    }
    sent = sqs.send_message(QueueUrl=queues.retry_url, MessageBody=body, MessageAttributes=attributes)
    sqs.delete_message(QueueUrl=queues.dead_letter_url, ReceiptHandle=message["ReceiptHandle"])
    return str(sent["MessageId"])


def redrive_all_by_copy(queues: Queues, limit: int) -> int:
    received = list(_receive_all(queues.dead_letter_url, limit))
    for message in received:
        _move(queues, message, message["Body"])
    return len(received)


def start_move_task(queues: Queues, max_per_second: int | None) -> str:
    """SQS's own dead-letter redrive: moves every message, in the background, at a bounded rate."""
    args: dict[str, Any] = {
        "SourceArn": queues.arn(queues.dead_letter_url),
        "DestinationArn": queues.arn(queues.retry_url),
    }
    if max_per_second:
        args["MaxNumberOfMessagesPerSecond"] = max_per_second
    return str(aws.client("sqs").start_message_move_task(**args)["TaskHandle"])


def purge_one(queues: Queues, message_id: str) -> None:
    message = _find(queues, message_id)
    aws.client("sqs").delete_message(QueueUrl=queues.dead_letter_url, ReceiptHandle=message["ReceiptHandle"])


def main(argv: list[str] | None = None) -> None:
    """The command line; what AWS says is wrong (region, credentials, stack) as one line, not a traceback."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    try:
        _run(argv)
    except NoRegionError:
        sys.exit("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a region in your AWS profile)")
    except NoCredentialsError:
        sys.exit("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    except EndpointConnectionError as exc:
        sys.exit(f"cannot reach AWS: {exc}")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message")):
            region = aws.client("cloudformation").meta.region_name
            sys.exit(f"{error.get('Message')} in {region}: check --stack and AWS_REGION")
        sys.exit(f"AWS refused: {error.get('Code')}: {error.get('Message')}")


def _run(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="dead_letters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", help="CloudFormation stack name (queue URLs from its outputs)")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="each message with its reason (messages stay in the queue)")
    show.add_argument("--max", type=int, default=100)
    show.add_argument("--json", action="store_true")
    redrive = commands.add_parser("redrive", help="back to the retry queue after a fix")
    redrive.add_argument("--message-id", help="only this message (default: all)")
    redrive.add_argument("--confirm-not-in-stripe", action="store_true", help="for a needs_review record you checked")
    redrive.add_argument("--copy", action="store_true", help="move all one by one instead of SQS's move task")
    redrive.add_argument("--max-per-second", type=int, help="rate of SQS's move task (Stripe allows ~100/s)")
    purge = commands.add_parser("purge-one", help="delete one message for good")
    purge.add_argument("--message-id", required=True)
    args = parser.parse_args(argv)
    queues = resolve_queues(args.stack)

    if args.command == "list":
        messages = list_messages(queues, args.max)
        if args.json:
            print(json.dumps(messages, indent=2))
        for m in [] if args.json else messages:
            what = (
                f"event={m['event_name']} payload={json.dumps(m['payload'])}"
                if m["kind"] == "meter_event"
                else f"item={m['subscription_item']} qty={m['quantity']}"
            )
            code = f"/{m['reason_code']}" if m["reason_code"] else ""
            print(
                f"{m['message_id']}  {m['kind']}  {m['reason_type']}{code}"
                f"  client={m['client_id']} key={m['idempotency_key']} {what} attempts={m['attempts']}"
                f" age={m['age_hours']}h{' MAY-BE-IN-STRIPE' if m['in_doubt'] else ''}\n    {m['reason']}"
            )
        if not args.json:
            print(f"{len(messages)} message(s)")
    elif args.command == "redrive":
        if args.confirm_not_in_stripe and not args.message_id:
            sys.exit("--confirm-not-in-stripe is for one record you checked: give its --message-id")
        if args.message_id:
            print(
                f"redriven as {redrive_one(queues, args.message_id, confirm_not_in_stripe=args.confirm_not_in_stripe)}"
            )
        elif args.copy:
            print(f"{redrive_all_by_copy(queues, 10_000)} message(s) redriven")
        else:
            print(f"SQS move task started: {start_move_task(queues, args.max_per_second)}")
    elif args.command == "purge-one":
        purge_one(queues, args.message_id)
        print(f"deleted {args.message_id}")


if __name__ == "__main__":
    main()
