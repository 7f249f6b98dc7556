"""A worker that dies after Stripe wrote the record but before the dedup record says so: no double report."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from tests.conftest import Deployment, record, wait_until
from tests.harness.aws_clients import aws_client
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import LambdaContext, load_handler, sqs_event


def _worker_instance(env: dict[str, str], event: dict[str, Any]) -> None:
    os.environ.update(env)
    load_handler("retry")(event, LambdaContext(timeout_seconds=120))


@pytest.mark.slow
def test_worker_killed_after_stripe_accepted_does_not_double_report(deployment: Deployment, moto_server: str) -> None:
    deployment.stripe.inject(Fault.rate_limit())
    assert deployment.post("/v1/usage", record("r1", quantity=9)).status == 202
    sqs = aws_client("sqs")
    [message] = sqs.receive_message(QueueUrl=deployment.retry_queue_url, AttributeNames=["All"], VisibilityTimeout=600)[
        "Messages"
    ]
    arn = deployment.stack.attributes[("RetryQueue", "Arn")]
    deployment.stripe.inject(Fault.stall_after_commit(30))  # Stripe writes it, then holds the answer

    env = deployment.instance_environment("RetryFunction", moto_server)
    worker = multiprocessing.get_context("spawn").Process(
        target=_worker_instance, args=(env, sqs_event([message], arn))
    )
    worker.start()
    wait_until(lambda: len(deployment.stripe.ledger) == 1, timeout=60)
    worker.kill()  # the Lambda dies (timeout, OOM, crash) while Stripe's answer is on its way
    worker.join(10)

    [accepted] = deployment.stripe.ledger
    stored = deployment.stored_answer("r1")
    assert stored["status_code"] == 202  # the dedup record does not know yet...
    assert stored["delivery"]["attempt_started_at"]  # ...but it knows an attempt was under way

    sqs.change_message_visibility(
        QueueUrl=deployment.retry_queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    deployment.run_retry_worker()  # SQS hands the message to the next worker

    assert deployment.stripe.ledger == [accepted]  # Stripe replayed its answer for the same key
    replay = deployment.post("/v1/usage", record("r1", quantity=9))
    assert (replay.status, replay.body["stripe_id"]) == (200, accepted["id"])
    assert deployment.retry_messages() == []
