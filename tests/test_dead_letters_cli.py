"""The operator's dead-letter CLI, run as an operator would (python -m usage_reporter.dead_letters ...)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from botocore.stub import Stubber

from tests.conftest import Deployment, record
from tests.harness.aws_clients import aws_client
from tests.harness.fake_stripe import Fault
from tests.harness.stack import ROOT
from usage_reporter import aws
from usage_reporter.dead_letters import main


@pytest.fixture
def cli_env(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", deployment.dead_letter_queue_url)
    monkeypatch.setenv("RETRY_QUEUE_URL", deployment.retry_queue_url)
    return deployment


def two_rejections(deployment: Deployment) -> None:
    for key in ("a", "b"):
        assert deployment.post("/v1/usage", record(key, subscription_item="si_missing")).status == 422


def test_list_shows_each_record_with_its_reason_and_keeps_it(
    cli_env: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    two_rejections(cli_env)

    main(["list"])
    listed = capsys.readouterr().out
    main(["list", "--json"])
    as_json = json.loads(capsys.readouterr().out)

    assert "2 message(s)" in listed
    assert "stripe_error/resource_missing" in listed and "No such subscription item: 'si_missing'" in listed
    assert sorted(m["idempotency_key"] for m in as_json) == ["a", "b"]
    assert {m["client_id"] for m in as_json} == {"demo-client"}
    assert len(cli_env.dead_letters()) == 2  # looking does not remove


def test_purge_one_deletes_exactly_that_message(cli_env: Deployment) -> None:
    two_rejections(cli_env)
    target, other = cli_env.dead_letters()

    main(["purge-one", "--message-id", target["MessageId"]])

    assert [m["MessageId"] for m in cli_env.dead_letters()] == [other["MessageId"]]


def test_redrive_all_by_copy_then_the_worker_reports_them(
    cli_env: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    two_rejections(cli_env)
    cli_env.stripe.add_subscription_items("si_missing")

    main(["redrive", "--copy"])
    cli_env.run_retry_worker()

    assert "2 message(s) redriven" in capsys.readouterr().out
    assert cli_env.dead_letters() == []
    assert len(cli_env.stripe.ledger) == 2


def test_confirmation_needs_a_single_message(cli_env: Deployment) -> None:
    with pytest.raises(SystemExit, match="give its --message-id"):
        main(["redrive", "--confirm-not-in-stripe"])


def test_list_flags_records_stripe_may_already_hold(cli_env: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    cli_env.stripe.inject(Fault.server_error(500), times=3)
    assert cli_env.post("/v1/usage", record("r1")).status == 202
    cli_env.overrides["RETRY_MAX_RECEIVE_COUNT"] = "2"
    cli_env.stripe.inject(Fault.lost_response(status=502), Fault.server_error(503), Fault.server_error(503), times=2)
    cli_env.run_retry_worker()

    main(["list"])

    assert "MAY-BE-IN-STRIPE" in capsys.readouterr().out


def test_redrive_all_starts_sqs_message_move_task(cli_env: Deployment) -> None:
    # moto has no message-move tasks: check the call SQS receives (queue ARNs, rate) with botocore's Stubber.
    sqs = aws.client("sqs")
    arns = {
        url: aws_client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for url in (cli_env.dead_letter_queue_url, cli_env.retry_queue_url)
    }
    with Stubber(sqs) as stub:
        for url in (cli_env.dead_letter_queue_url, cli_env.retry_queue_url):
            stub.add_response(
                "get_queue_attributes",
                {"Attributes": {"QueueArn": arns[url]}},
                {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
            )
        expected = {
            "SourceArn": arns[cli_env.dead_letter_queue_url],
            "DestinationArn": arns[cli_env.retry_queue_url],
            "MaxNumberOfMessagesPerSecond": 50,
        }
        stub.add_response("start_message_move_task", {"TaskHandle": "task-1"}, expected)

        main(["redrive", "--max-per-second", "50"])

        stub.assert_no_pending_responses()


def test_a_stack_that_does_not_exist_is_one_clear_line(cli_env: Deployment) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--stack", "no-such-stack", "list"])

    assert "no-such-stack" in str(exited.value) and "us-east-1" in str(exited.value)


def test_no_region_is_one_clear_line_not_a_traceback(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "usage_reporter.dead_letters", "--stack", "any", "list"],
        env={**env, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "layers" / "shared")},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip().startswith("no AWS region: set AWS_REGION")  # one line, no traceback
    assert "Traceback" not in result.stderr
