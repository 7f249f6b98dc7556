"""Write the sample events in this folder (``make events`` refreshes their signatures).

Each is a payload-2.0 event as API Gateway sends it, for ``sam local invoke -e`` or, without
Docker, ``make invoke EVENT=events/<file>``. ``EXPECTED`` says what each one answers locally.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http_api_event
from usage_reporter.auth import sign

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
    "usage-bad-signature.json": ("/v1/usage", json.dumps(RECORD), "not-the-secret", 401, "signed with a wrong secret"),
}


def build(path: str, body: str, secret: str) -> dict[str, object]:
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


if __name__ == "__main__":
    main()
