"""A record processed a second time sends Stripe the very same request, whatever failed in between.

Each test reproduces a real failure path with the default timestamp ("now"): Stripe writing the
record and the answers being lost, SQS and DynamoDB failing (through a proxy in front of moto),
and an instance killed mid-call. Each asserts what Stripe holds (exactly one record) and what the
caller is finally told.
"""

from __future__ import annotations

import json
import time

import pytest
import stripe

from tests.conftest import SUBSCRIPTION_ITEM, Deployment, HttpResult, record, wait_until
from tests.harness.aws_clients import aws_client
from tests.harness.aws_faults import AwsFaults
from tests.harness.fake_stripe import Fault
from tests.harness.instances import start_instance
from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FAKE_STRIPE_KEY, LambdaContext
from usage_reporter import wiring
from usage_reporter.config import DEFAULT_STRIPE_VERSION
from usage_reporter.dead_letters import Queues, redrive_all_by_copy, redrive_one
from usage_reporter.kinds import UsageRecords
from usage_reporter.models import UsageRecord

# A short Lambda timeout, so the in-progress lock of a failed processing expires within seconds. The
# reserve is lowered so that a Stripe call with its retries (3 x 1 s + 1.5 s backoff) still fits in it,
# with 2 s to spare for a busy machine.
LOCK_SECONDS = 6.5
SHORT_BUDGET = {"STRIPE_BUDGET_RESERVE_SECONDS": "0"}


@pytest.fixture
def short_budget(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    for name, value in SHORT_BUDGET.items():
        monkeypatch.setenv(name, value)
    deployment.overrides.update(SHORT_BUDGET)
    wiring.reset()
    return deployment


def retry_until_answered(deployment: Deployment, body: str, timeout: float = 20) -> HttpResult:
    """The caller's retry loop: the same bytes again while the key is still in progress (409)."""
    deadline = time.monotonic() + timeout
    while True:
        response = deployment.post("/v1/usage", body)
        if response.status != 409 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def assert_sent_the_same_request_every_time(deployment: Deployment) -> None:
    sent = deployment.stripe.usage_requests()
    assert len(sent) >= 2
    assert len({json.dumps(r["params"], sort_keys=True) for r in sent}) == 1, [r["params"] for r in sent]
    assert len({r["headers"]["idempotency-key"] for r in sent}) == 1


def test_a_answers_lost_and_sqs_down_then_the_callers_retry_is_reported_once(deployment: Deployment) -> None:
    sqs = aws_client("sqs")
    deployment.stripe.inject(Fault.lost_response(500), times=3)  # Stripe writes it; all three answers lost
    sqs.delete_queue(QueueUrl=deployment.retry_queue_url)  # and SQS refuses the retry message
    body = json.dumps(record("r1"))  # timestamp omitted: "now"

    first = deployment.post("/v1/usage", body)
    assert first.status == 503
    [written] = deployment.stripe.ledger

    sqs.create_queue(QueueName=deployment.stack.attributes[("RetryQueue", "QueueName")])
    time.sleep(1.1)  # a second later: a fresh "now" would differ
    retry = deployment.post("/v1/usage", body)

    assert (retry.status, retry.body["status"]) == (200, "reported")
    assert retry.body["stripe_id"] == written["id"]
    assert retry.body["timestamp"] == written["timestamp"]
    assert deployment.stripe.ledger == [written]
    assert_sent_the_same_request_every_time(deployment)
    assert deployment.dead_letters() == []  # nothing for an operator to redrive under a fresh key
    assert deployment.retry_messages() == []


@pytest.mark.slow
def test_b_dedup_write_fails_after_stripe_wrote_it_and_the_record_was_queued(
    short_budget: Deployment, aws_faults: AwsFaults
) -> None:
    deployment = short_budget
    deployment.stripe.inject(Fault.lost_response(500), times=3)
    aws_faults.fail("dynamodb:UpdateItem")  # the answer cannot be recorded
    body = json.dumps(record("r1"))

    first = deployment.post("/v1/usage", body, timeout_seconds=LOCK_SECONDS)
    aws_faults.clear()

    assert first.status == 503
    assert "dynamodb:UpdateItem" in aws_faults.failed
    [written] = deployment.stripe.ledger
    assert len(deployment.retry_messages()) == 1  # the retry queue already holds the record
    time.sleep(1.1)

    retry = retry_until_answered(deployment, body)  # waits out the failed processing's lock
    assert (retry.status, retry.body["status"], retry.body["stripe_id"]) == (200, "reported", written["id"])

    deployment.run_retry_worker()  # the queued copy: already reported
    assert deployment.stripe.ledger == [written]
    assert_sent_the_same_request_every_time(deployment)
    assert deployment.retry_messages() == []
    assert deployment.dead_letters() == []
    replay = deployment.post("/v1/usage", body)
    assert (replay.status, replay.body["stripe_id"], replay.headers["idempotent-replayed"]) == (
        200,
        written["id"],
        "true",
    )


@pytest.mark.slow
def test_b_the_worker_delivers_when_the_caller_never_retries(short_budget: Deployment, aws_faults: AwsFaults) -> None:
    deployment = short_budget
    deployment.stripe.inject(Fault.lost_response(500), times=3)
    aws_faults.fail("dynamodb:UpdateItem")
    body = json.dumps(record("r1"))
    assert deployment.post("/v1/usage", body, timeout_seconds=LOCK_SECONDS).status == 503
    aws_faults.clear()
    [written] = deployment.stripe.ledger

    deployment.run_retry_worker(rounds=1)  # the lock is still held: the worker waits
    [item] = deployment.dedup_items()
    assert item["status"]["S"] == "INPROGRESS"
    time.sleep(LOCK_SECONDS)
    deployment.run_retry_worker()  # the lock expired: the worker delivers, and Stripe replays its answer

    assert deployment.stripe.ledger == [written]
    assert_sent_the_same_request_every_time(deployment)
    replay = deployment.post("/v1/usage", body)
    assert (replay.status, replay.body["stripe_id"]) == (200, written["id"])
    assert deployment.retry_messages() == [] and deployment.dead_letters() == []


@pytest.mark.slow
def test_c_instance_killed_while_stripe_holds_the_answer(short_budget: Deployment, moto_server: str) -> None:
    deployment = short_budget
    wiring.reset()
    env = deployment.instance_environment("IngestFunction", moto_server)
    deployment.stripe.inject(Fault.stall_after_commit(30))  # Stripe writes it, then holds the answer
    body = json.dumps(record("r1"))

    instance = start_instance(
        env, "/v1/usage", body.encode(), (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET), timeout_seconds=LOCK_SECONDS
    )
    wait_until(lambda: len(deployment.stripe.ledger) == 1, timeout=60)
    instance.kill()  # SIGKILL, as a Lambda timeout would
    instance.join(10)
    [written] = deployment.stripe.ledger
    time.sleep(1.1)

    retry = retry_until_answered(deployment, body)

    assert (retry.status, retry.body["status"], retry.body["stripe_id"]) == (200, "reported", written["id"])
    assert retry.body["timestamp"] == written["timestamp"]
    assert deployment.stripe.ledger == [written]
    assert_sent_the_same_request_every_time(deployment)


def test_the_plan_is_written_once_before_stripe_is_called(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("r1"))
    deployment.post("/v1/usage", record("r1"))  # a replay writes nothing

    [plan] = deployment.delivery_plans()
    [accepted] = deployment.stripe.ledger
    assert plan["stripe"]["timestamp"] == accepted["timestamp"]
    assert plan["stripe_idempotency_key"] == UsageRecords().stripe_idempotency_key(DEMO_CLIENT_ID, "r1")


def test_another_payload_for_a_key_whose_answer_was_lost_is_a_conflict(deployment: Deployment) -> None:
    sqs = aws_client("sqs")
    deployment.stripe.inject(Fault.lost_response(500), times=3)
    sqs.delete_queue(QueueUrl=deployment.retry_queue_url)
    assert deployment.post("/v1/usage", record("r1", quantity=7)).status == 503
    sqs.create_queue(QueueName=deployment.stack.attributes[("RetryQueue", "QueueName")])

    other = deployment.post("/v1/usage", record("r1", quantity=8))

    assert (other.status, other.body["error"]["type"]) == (409, "idempotency_conflict")
    assert [r["quantity"] for r in deployment.stripe.ledger] == [7]
    assert deployment.post("/v1/usage", record("r1", quantity=7)).status == 200


def _key_seen_by_stripe_with_other_parameters(deployment: Deployment, key: str) -> None:
    """Another sender (say, a second deployment on the same Stripe account) used our Stripe key first."""
    client = stripe.StripeClient(FAKE_STRIPE_KEY, base_addresses={"api": deployment.stripe.url})
    client.raw_request(
        "post",
        f"/v1/subscription_items/{SUBSCRIPTION_ITEM}/usage_records",
        quantity=1,
        idempotency_key=UsageRecords().stripe_idempotency_key(DEMO_CLIENT_ID, key),
        stripe_version=DEFAULT_STRIPE_VERSION,
    )


def test_stripe_idempotency_error_is_held_for_review_never_rejected_nor_resent(deployment: Deployment) -> None:
    _key_seen_by_stripe_with_other_parameters(deployment, "r1")

    response = deployment.post("/v1/usage", record("r1", quantity=7))

    assert response.status == 202  # never 422: Stripe may hold the record
    assert response.body["reason"]["type"] == "stripe_idempotency_mismatch"
    assert "may already hold" in response.body["reason"]["message"]
    [letter] = deployment.dead_letters()
    assert letter["Body"]["in_doubt"] is True
    assert deployment.retry_messages() == []
    queues = Queues(deployment.dead_letter_queue_url, deployment.retry_queue_url)

    redrive_one(queues, letter["MessageId"])  # without the operator's confirmation: same key, same answer
    deployment.run_retry_worker()
    [again] = deployment.dead_letters()
    assert again["Body"]["reason"]["type"] == "stripe_idempotency_mismatch"
    assert [r["quantity"] for r in deployment.stripe.ledger] == [1]
    sent_keys = {r["headers"]["idempotency-key"] for r in deployment.stripe.usage_requests()}
    assert sent_keys == {UsageRecords().stripe_idempotency_key(DEMO_CLIENT_ID, "r1")}

    redrive_one(queues, again["MessageId"], confirm_not_in_stripe=True)  # checked in Stripe: not there
    deployment.run_retry_worker()
    assert [r["quantity"] for r in deployment.stripe.ledger] == [1, 7]
    assert deployment.stripe.ledger[1]["idempotency_key"].startswith(
        UsageRecords().stripe_idempotency_key(DEMO_CLIENT_ID, "r1") + "-r"
    )
    replay = deployment.post("/v1/usage", record("r1", quantity=7))
    assert (replay.status, replay.body["stripe_id"]) == (200, deployment.stripe.ledger[1]["id"])
    deployment.run_retry_worker()
    assert deployment.dead_letters() == [] and len(deployment.stripe.ledger) == 2


def test_a_retry_a_day_after_an_unknown_outcome_is_held_for_review(deployment: Deployment) -> None:
    sqs = aws_client("sqs")
    deployment.stripe.inject(Fault.lost_response(500), times=3)
    sqs.delete_queue(QueueUrl=deployment.retry_queue_url)
    first_seen = int(time.time()) - 25 * 3600  # the first processing, a day ago (its answer was a 503)
    [outcome] = wiring.reporter().report_many(
        DEMO_CLIENT_ID,
        [UsageRecord(**record("r1"))],
        received_at=first_seen,
        context=LambdaContext(),  # type: ignore[arg-type]
    )
    assert outcome.status_code == 503
    sqs.create_queue(QueueName=deployment.stack.attributes[("RetryQueue", "QueueName")])

    late = deployment.post("/v1/usage", record("r1"))

    assert (late.status, late.body["reason"]["type"]) == (202, "needs_review")
    assert late.body["timestamp"] == first_seen
    assert len(deployment.stripe.ledger) == 1  # not resent: Stripe may have forgotten the key
    [letter] = deployment.dead_letters()
    assert letter["Body"]["in_doubt"] is True


def _a_day_later(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, seconds: int = 25 * 3600) -> None:
    """Time passes for everyone here (the service's clock moves on), and Stripe has forgotten its keys."""
    deployment.stripe.forget_idempotency_keys()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def _first_processing_lost_long_ago(deployment: Deployment, key: str, age_seconds: int, *faults: Fault) -> None:
    """A processing ``age_seconds`` ago whose Stripe outcome was lost, and SQS down: its caller got 503."""
    sqs = aws_client("sqs")
    deployment.stripe.inject(*faults)
    sqs.delete_queue(QueueUrl=deployment.retry_queue_url)
    [outcome] = wiring.reporter().report_many(
        DEMO_CLIENT_ID,
        [UsageRecord(**record(key))],
        received_at=int(time.time()) - age_seconds,
        context=LambdaContext(),  # type: ignore[arg-type]
    )
    assert outcome.status_code == 503
    sqs.create_queue(QueueName=deployment.stack.attributes[("RetryQueue", "QueueName")])


def test_a_retry_that_never_reaches_stripe_still_carries_the_earlier_doubt(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first processing (22 h ago) reached Stripe, which wrote the record; every answer was lost.
    _first_processing_lost_long_ago(deployment, "r1", 22 * 3600, *[Fault.lost_response(500)] * 3)
    # The caller's retry has no time left to call Stripe: queued as "never sent" by *this* processing.
    retry = deployment.post("/v1/usage", record("r1"), timeout_seconds=3)
    assert (retry.status, retry.body["reason"]["type"]) == (202, "time_budget_exhausted")
    [queued] = deployment.retry_messages()
    assert queued["Body"]["in_doubt"] is True  # the earlier processing may have reached Stripe

    _a_day_later(deployment, monkeypatch, seconds=2 * 3600)  # the worker gets to it after Stripe forgot
    deployment.run_retry_worker()

    assert len(deployment.stripe.ledger) == 1  # not sent again under a forgotten key
    [letter] = deployment.dead_letters()
    assert (letter["Body"]["reason"]["type"], letter["Body"]["in_doubt"]) == ("needs_review", True)


def test_an_operators_confirmation_is_used_once(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    _first_processing_lost_long_ago(deployment, "r1", 25 * 3600, *[Fault.connection_reset()] * 3)
    assert deployment.post("/v1/usage", record("r1")).body["reason"]["type"] == "needs_review"
    [letter] = deployment.dead_letters()
    queues = Queues(deployment.dead_letter_queue_url, deployment.retry_queue_url)
    redrive_one(queues, letter["MessageId"], confirm_not_in_stripe=True)  # checked: not in Stripe
    deployment.stripe.inject(Fault.lost_response(500), times=2)  # the confirmed attempt: written, answers lost
    deployment.run_retry_worker(rounds=1)
    [written] = deployment.stripe.ledger
    assert written["idempotency_key"].endswith("-r1")  # a fresh key, since Stripe may remember the old one

    # The message, still saying "confirmed", reaches the dead-letter queue without the worker (SQS's
    # redrive policy after the worker could not process it), and is redriven in bulk a day later.
    sqs = aws_client("sqs")
    [message] = sqs.receive_message(QueueUrl=deployment.retry_queue_url)["Messages"]
    assert json.loads(message["Body"])["review_confirmed_at"]
    sqs.send_message(QueueUrl=deployment.dead_letter_queue_url, MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=deployment.retry_queue_url, ReceiptHandle=message["ReceiptHandle"])
    _a_day_later(deployment, monkeypatch)
    redrive_all_by_copy(queues, 100)
    deployment.run_retry_worker()

    assert deployment.stripe.ledger == [written]  # the old confirmation does not vouch for the new attempt
    [again] = deployment.dead_letters()
    assert (again["Body"]["reason"]["type"], again["Body"]["in_doubt"]) == ("needs_review", True)


def test_a_key_sqs_could_not_carry_raw_is_kept_escaped(deployment: Deployment) -> None:
    body = record("k\ufffe\uffff", subscription_item="si_missing")  # Stripe refuses it: dead-letter queue

    response = deployment.post("/v1/usage", body)

    assert response.status == 422
    [letter] = deployment.dead_letters()
    assert letter["Body"]["idempotency_key"] == "k\ufffe\uffff"
    raw = aws_client("sqs").receive_message(QueueUrl=deployment.dead_letter_queue_url)["Messages"][0]["Body"]
    assert raw.isascii()  # real SQS refuses U+FFFE and U+FFFF in a body; escaped, they pass
