"""The retry worker: every record answered 202 queued reaches Stripe exactly once, or an operator."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import SUBSCRIPTION_ITEM, Deployment, record
from tests.harness.aws_clients import aws_client
from tests.harness.fake_stripe import Fault
from usage_reporter import wiring
from usage_reporter.config import get_settings
from usage_reporter.dead_letters import Queues, redrive_one
from usage_reporter.dedup import DedupLedger, persistence_layer
from usage_reporter.kinds import UsageRecords


def queue_via_rate_limit(deployment: Deployment, *records: dict[str, Any]) -> None:
    """Ingest records while Stripe answers 429: each is answered 202 and sits on the retry queue."""
    for body in records:
        deployment.stripe.inject(Fault.rate_limit())
        assert deployment.post("/v1/usage", body).status == 202
    deployment.stripe.requests.clear()


def shift_received_at(deployment: Deployment, hours: float) -> None:
    """Make the queued records look older (as after a long outage or a late redrive)."""
    sqs = aws_client("sqs")
    for message in deployment.retry_messages():
        body = {**message["Body"], "received_at": message["Body"]["received_at"] - int(hours * 3600)}
        sqs.delete_message(QueueUrl=deployment.retry_queue_url, ReceiptHandle=message["ReceiptHandle"])
        sqs.send_message(QueueUrl=deployment.retry_queue_url, MessageBody=json.dumps(body))


def queues(deployment: Deployment) -> Queues:
    return Queues(dead_letter_url=deployment.dead_letter_queue_url, retry_url=deployment.retry_queue_url)


def test_stripe_down_then_back_every_queued_record_lands_exactly_once(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No retry inside the SDK (test_ingest covers it): each 503 reaches the ingest and the worker themselves.
    deployment.overrides["STRIPE_MAX_NETWORK_RETRIES"] = "0"
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    wiring.reset()
    keys = [f"k{i}" for i in range(6)]
    deployment.stripe.inject(Fault.server_error(503), times=len(keys))
    assert {deployment.post("/v1/usage", record(k, quantity=i + 1)).status for i, k in enumerate(keys)} == {202}

    deployment.stripe.inject(Fault.server_error(503), times=len(keys))  # still down for the first round
    [first_round] = deployment.run_retry_worker(rounds=1)
    assert len(first_round["batchItemFailures"]) == len(keys)
    assert deployment.stripe.ledger == []
    deployment.run_retry_worker()  # Stripe is back

    assert sorted(r["quantity"] for r in deployment.stripe.ledger) == [1, 2, 3, 4, 5, 6]
    sent_keys = [r["idempotency_key"] for r in deployment.stripe.ledger]
    assert sorted(sent_keys) == sorted(UsageRecords().stripe_idempotency_key("demo-client", k) for k in keys)
    for i, key in enumerate(keys):
        replay = deployment.post("/v1/usage", record(key, quantity=i + 1))
        assert (replay.status, replay.body["status"], replay.headers["idempotent-replayed"]) == (
            200,
            "reported",
            "true",
        )
        assert replay.body["stripe_id"] in {r["id"] for r in deployment.stripe.ledger}
    assert deployment.retry_messages() == []
    assert deployment.dead_letters() == []


def test_failed_attempt_backs_off_before_the_next(deployment: Deployment) -> None:
    queue_via_rate_limit(deployment, record("r1"))
    deployment.overrides["RETRY_BASE_DELAY_SECONDS"] = "30"
    deployment.stripe.inject(Fault.server_error(500), times=2)

    [failed] = deployment.run_retry_worker(rounds=1)
    assert len(failed["batchItemFailures"]) == 1
    assert deployment.run_retry_worker(rounds=1) == []  # not visible again yet
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=deployment.retry_queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"

    with deployment.function_environment("RetryFunction"):
        worker = wiring.retry_worker()
        delays = [worker.backoff_seconds(n) for n in range(1, 12)]
    assert 24 <= delays[0] <= 30
    assert all(0.8 * min(30 * 2 ** (n - 1), 3600) <= d <= min(30 * 2 ** (n - 1), 3600) for n, d in enumerate(delays, 1))


def test_rate_limit_pauses_the_batch_and_drops_nothing(deployment: Deployment) -> None:
    queue_via_rate_limit(deployment, *[record(f"k{i}") for i in range(5)])
    deployment.stripe.inject(Fault.rate_limit())

    [paused] = deployment.run_retry_worker(rounds=1)

    assert len(paused["batchItemFailures"]) == 5
    assert len(deployment.stripe.usage_requests()) == 1  # the rest of the batch did not hammer Stripe
    deployment.run_retry_worker()
    assert len(deployment.stripe.ledger) == 5


def test_poison_messages_are_dead_lettered_while_batch_mates_succeed(deployment: Deployment) -> None:
    queue_via_rate_limit(deployment, record("good-1"), record("gone", subscription_item="si_gone"), record("good-2"))
    aws_client("sqs").send_message(QueueUrl=deployment.retry_queue_url, MessageBody="{not a record")

    [response] = deployment.run_retry_worker()

    assert response["batchItemFailures"] == []
    assert sorted(r["subscription_item"] for r in deployment.stripe.ledger) == [SUBSCRIPTION_ITEM] * 2
    letters = {m["Body"].get("kind"): m for m in deployment.dead_letters()}
    rejected = letters["usage_record"]["Body"]
    assert (rejected["idempotency_key"], rejected["reason"]["code"]) == ("gone", "resource_missing")
    assert rejected["reason"]["http_status"] == 404
    unreadable = letters["unreadable"]
    assert unreadable["Body"]["body"] == "{not a record"
    assert unreadable["MessageAttributes"]["reason_type"]["StringValue"] == "unreadable_message"
    replay = deployment.post("/v1/usage", record("gone", subscription_item="si_gone"))
    assert (replay.status, replay.body["status"], replay.body["error"]["code"]) == (422, "rejected", "resource_missing")
    assert deployment.retry_messages() == []


def test_worker_gives_up_after_max_receives_with_the_last_reason(deployment: Deployment) -> None:
    queue_via_rate_limit(deployment, record("r1"))
    deployment.overrides["RETRY_MAX_RECEIVE_COUNT"] = "3"
    deployment.stripe.inject(Fault.server_error(502), times=50)

    deployment.run_retry_worker()

    assert deployment.retry_messages() == []
    [letter] = deployment.dead_letters()
    assert letter["Body"]["reason"]["type"] == "stripe_unavailable"
    assert letter["Body"]["reason"]["message"].startswith("gave up after 4 attempts")  # ingest + 3 receives
    replay = deployment.post("/v1/usage", record("r1"))
    assert (replay.status, replay.body["reason"]["type"]) == (202, "stripe_unavailable")
    assert deployment.stripe.ledger == []

    deployment.stripe.clear_faults()  # fixed: the operator redrives it
    redrive_one(queues(deployment), letter["MessageId"])
    deployment.run_retry_worker()
    assert len(deployment.stripe.ledger) == 1
    assert deployment.post("/v1/usage", record("r1")).body["status"] == "reported"


def test_redrive_after_a_fix_reports_a_rejected_record(deployment: Deployment) -> None:
    rejected = deployment.post("/v1/usage", record("r1", subscription_item="si_createdLater"))
    assert rejected.status == 422
    [letter] = deployment.dead_letters()

    deployment.stripe.add_subscription_items("si_createdLater")  # the operator's fix
    redrive_one(queues(deployment), letter["MessageId"])
    deployment.run_retry_worker()

    [accepted] = deployment.stripe.ledger
    # Stripe would replay its refusal for the old key for 24 h: the redrive uses a fresh one.
    assert accepted["idempotency_key"] == UsageRecords().stripe_idempotency_key("demo-client", "r1") + "-r1"
    replay = deployment.post("/v1/usage", record("r1", subscription_item="si_createdLater"))
    assert (replay.status, replay.body["stripe_id"]) == (200, accepted["id"])
    assert deployment.dead_letters() == []
    deployment.run_retry_worker()
    assert len(deployment.stripe.ledger) == 1


def test_late_record_in_doubt_goes_to_an_operator_not_to_stripe(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.server_error(503), times=3)  # Stripe may or may not have written it
    assert deployment.post("/v1/usage", record("r1")).status == 202
    shift_received_at(deployment, hours=25)
    deployment.stripe.requests.clear()

    deployment.run_retry_worker()

    assert deployment.stripe.usage_requests() == []
    [letter] = deployment.dead_letters()
    assert letter["Body"]["reason"]["type"] == "needs_review"
    replay = deployment.post("/v1/usage", record("r1"))
    assert (replay.status, replay.body["reason"]["type"]) == (202, "needs_review")

    # The operator checked Stripe's usage for the item: not there. Confirmed, the record goes out once.
    redrive_one(queues(deployment), letter["MessageId"], confirm_not_in_stripe=True)
    deployment.run_retry_worker()
    assert len(deployment.stripe.ledger) == 1
    assert deployment.post("/v1/usage", record("r1")).body["status"] == "reported"


def test_late_record_never_sent_to_stripe_is_delivered(deployment: Deployment) -> None:
    # No time left at ingest: Stripe was never called, so nothing can be there under its key.
    assert deployment.post("/v1/usage", record("r1"), timeout_seconds=2).status == 202
    shift_received_at(deployment, hours=30)

    deployment.run_retry_worker()

    assert len(deployment.stripe.ledger) == 1
    assert deployment.dead_letters() == []


def test_late_record_whose_last_attempt_died_mid_call_is_not_resent(deployment: Deployment) -> None:
    queue_via_rate_limit(deployment, record("r1"))  # a 429: Stripe wrote nothing so far
    shift_received_at(deployment, hours=25)
    answer_before = deployment.retry_messages()[0]["Body"]
    # A worker wrote its attempt ahead and died before the answer (see test_retry_crash.py for the real crash).
    ledger = DedupLedger(get_settings(), persistence_layer(get_settings()))
    request = {"client_id": "demo-client", "idempotency_key": "r1", "record": answer_before["record"]}
    stored = deployment.stored_answer("r1")
    delivery = {
        "stripe_idempotency_key": answer_before["stripe_idempotency_key"],
        "key_first_used_at": answer_before["received_at"],
        "in_doubt": False,
        "attempt_started_at": int(time.time()) - 3600,
        "attempts": 2,
    }
    ledger.store(request, {**stored, "delivery": delivery})

    deployment.run_retry_worker()

    assert deployment.stripe.usage_requests() == []
    [letter] = deployment.dead_letters()
    assert letter["Body"]["reason"]["type"] == "needs_review"


def test_message_the_worker_keeps_failing_on_ends_in_the_dead_letter_queue(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_via_rate_limit(deployment, record("r1"))
    sqs = aws_client("sqs")
    # Failed messages come back at once (instead of after the queue's 720 s), to run every receive here.
    sqs.set_queue_attributes(QueueUrl=deployment.retry_queue_url, Attributes={"VisibilityTimeout": "0"})
    aws_client("dynamodb").delete_table(TableName=deployment.table_name)  # not Stripe's fault: DynamoDB

    deployment.run_retry_worker(rounds=30)

    max_receives = int(deployment.stack.parameters["RetryMaxReceiveCount"])
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert sum(m.get("RetryFailed", [0])[0] for m in emitted) == max_receives  # each counted for the alarm
    assert deployment.retry_messages() == []
    [letter] = deployment.dead_letters()  # moved by SQS's redrive policy, the body as the ingest wrote it
    assert (letter["Body"]["idempotency_key"], letter["Body"]["reason"]["type"]) == ("r1", "stripe_rate_limited")
    assert deployment.stripe.usage_requests() == []
