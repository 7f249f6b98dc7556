"""Write the sample events in this folder (``make events`` refreshes their signatures).

Each is a payload-2.0 event as API Gateway sends it, for ``sam local invoke -e`` or, without
Docker, ``make invoke EVENT=events/<file>``. ``EVENTS`` and ``SQS_EVENTS`` say what each one shows
and answers locally (the tests check it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http_api_event, sqs_event
from usage_reporter.auth import sign
from usage_reporter.kinds import UsageRecords
from usage_reporter.models import FailureReason, QueuedRecord, StripeUsage

HERE = Path(__file__).resolve().parent
NOW = int(time.time())
RECORD = {"idempotency_key": "invoice-2026-11-acme-api-calls", "subscription_item": "si_demo", "quantity": 42}

# file name: (path, body, signing secret, expected status locally, what it shows)
EVENTS: dict[str, tuple[str, str, str, int, str]] = {
    "usage-record.json": ("/v1/usage", json.dumps(RECORD), DEMO_CLIENT_SECRET, 200, "a valid record, reported"),
    "usage-record-set.json": (
        "/v1/usage",
        json.dumps(
            {**RECORD, "idempotency_key": "gauge-seats-1", "quantity": 17, "timestamp": NOW - 60, "action": "set"}
        ),
        DEMO_CLIENT_SECRET,
        200,
        "a record with an explicit timestamp and action=set",
    ),
    "usage-batch.json": (
        "/v1/usage/batch",
        json.dumps({"records": [{**RECORD, "idempotency_key": f"batch-{i}", "quantity": i} for i in range(1, 4)]}),
        DEMO_CLIENT_SECRET,
        200,
        "a batch of three records",
    ),
    "usage-invalid.json": (
        "/v1/usage",
        json.dumps({**RECORD, "quantity": "42", "action": "add"}),
        DEMO_CLIENT_SECRET,
        422,
        "fails validation: quantity is a string, action unknown",
    ),
    "usage-not-json.json": ("/v1/usage", '{"idempotency_key": ', DEMO_CLIENT_SECRET, 400, "a body that is not JSON"),
    "usage-unknown-item.json": (
        "/v1/usage",
        json.dumps({**RECORD, "idempotency_key": "unknown-item-1", "subscription_item": "si_unknown"}),
        DEMO_CLIENT_SECRET,
        422,
        "Stripe rejects it for good (no such subscription item): dead-letter queue",
    ),
    "meter-event.json": (
        "/v1/meter_events",
        json.dumps(
            {
                "idempotency_key": "invoice-2026-11-acme-requests",
                "event_name": "api_requests",
                "customer": "cus_demo",
                "value": "12.5",
            }
        ),
        DEMO_CLIENT_SECRET,
        200,
        "a Billing meter event with a decimal value, reported",
    ),
    "meter-event-unknown-meter.json": (
        "/v1/meter_events",
        json.dumps(
            {"idempotency_key": "unknown-meter-1", "event_name": "no_such_meter", "customer": "cus_demo", "value": 1}
        ),
        DEMO_CLIENT_SECRET,
        422,
        "Stripe rejects it for good (no active meter for the event name): dead-letter queue",
    ),
    "meter-event-batch.json": (
        "/v1/meter_events/batch",
        json.dumps(
            {
                "events": [
                    {
                        "idempotency_key": f"requests-batch-{i}",
                        "event_name": "api_requests",
                        "customer": "cus_demo",
                        "value": i,
                    }
                    for i in range(1, 4)
                ]
            }
        ),
        DEMO_CLIENT_SECRET,
        200,
        "three meter events in one v2 meter event stream request: each 202 accepted",
    ),
    "usage-bad-signature.json": ("/v1/usage", json.dumps(RECORD), "not-the-secret", 401, "signed with a wrong secret"),
    "stripe-event-bad-signature.json": (
        "/v1/stripe/events",
        json.dumps({"id": "evt_test_1", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered"}),
        "whsec_not_the_destinations",
        400,
        "a thin event to the Stripe event destination route, not signed with its secret",
    ),
}


def queued(key: str, item: str, quantity: int) -> QueuedRecord:
    """A retry-queue message as the ingest function writes it after Stripe answered 429."""
    return QueuedRecord(
        client_id=DEMO_CLIENT_ID,
        idempotency_key=key,
        record={"subscription_item": item, "quantity": quantity, "timestamp": "now", "action": "increment"},
        stripe=StripeUsage(subscription_item=item, quantity=quantity, timestamp=NOW - 120, action="increment"),
        stripe_idempotency_key=UsageRecords().stripe_idempotency_key(DEMO_CLIENT_ID, key),
        received_at=NOW - 120,
        reason=FailureReason(type="stripe_rate_limited", message="Too many requests", http_status=429),
    )


# SQS events for the retry worker: file name -> (messages, what it shows). Locally none fails:
# the first is reported, the second is dead-lettered (no such subscription item).
SQS_EVENTS: dict[str, tuple[list[QueuedRecord], str]] = {
    "retry-queue-batch.json": (
        [queued("retry-demo-1", "si_demo", 5), queued("retry-demo-2", "si_unknown", 1)],
        "two queued records: one is reported, one goes to the dead-letter queue",
    ),
}
RETRY_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:stripe-usage-reporter-RetryQueue"


def build_sqs(messages: list[QueuedRecord]) -> dict[str, object]:
    received = [
        {
            "MessageId": f"0e6f{i:04d}-0000-4000-8000-00000000000{i}",
            "ReceiptHandle": f"local-receipt-{i}",
            "Body": message.model_dump_json(),
            "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(NOW * 1000)},
            "MessageAttributes": {"reason_type": {"DataType": "String", "StringValue": message.reason.type}},
        }
        for i, message in enumerate(messages, 1)
    ]
    return sqs_event(received, RETRY_QUEUE_ARN)


def build(path: str, body: str, secret: str) -> dict[str, object]:
    if path == "/v1/stripe/events":  # signed the way Stripe signs (the same scheme, its own header)
        stripe_headers = {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": sign(secret, body.encode()),
        }
        return http_api_event("POST", path, body, stripe_headers)
    headers = {
        "content-type": "application/json",
        "user-agent": "billing-service/1.0",
        "x-usage-client": DEMO_CLIENT_ID,
        "x-usage-signature": sign(secret, body.encode()),
    }
    return http_api_event("POST", path, body, headers)


def main() -> None:
    for name, (path, body, secret, _, _) in EVENTS.items():
        (HERE / name).write_text(json.dumps(build(path, body, secret), indent=2) + "\n")
        print(f"wrote events/{name}")
    for name, (messages, _) in SQS_EVENTS.items():
        (HERE / name).write_text(json.dumps(build_sqs(messages), indent=2) + "\n")
        print(f"wrote events/{name}")


if __name__ == "__main__":
    main()
