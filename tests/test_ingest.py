"""POST /v1/usage: every answer of the contract, observed where a user would look (Stripe, DynamoDB, SQS)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import OTHER_CLIENT, SUBSCRIPTION_ITEM, Deployment, record, wait_until
from tests.harness.aws_clients import aws_client
from tests.harness.fake_stripe import Fault
from usage_reporter.config import DEFAULT_STRIPE_VERSION, get_settings
from usage_reporter.dedup import KEY_PREFIX, dedup_request, idempotency_config, persistence_layer
from usage_reporter.kinds import UsageRecords
from usage_reporter.models import UsageRecord


def test_reports_the_record_to_stripe(deployment: Deployment) -> None:
    before = int(time.time())
    response = deployment.post("/v1/usage", record("r1", quantity=12))

    assert response.status == 200
    [accepted] = deployment.stripe.ledger
    assert response.body["status"] == "reported"
    assert response.body["stripe_id"] == accepted["id"]
    assert response.body["idempotency_key"] == "r1"
    assert accepted["subscription_item"] == SUBSCRIPTION_ITEM
    assert accepted["quantity"] == 12
    assert accepted["action"] == "increment"
    # "now" is fixed when we receive the record, so every attempt sends the same timestamp.
    assert before <= accepted["timestamp"] <= int(time.time())
    assert response.body["timestamp"] == accepted["timestamp"]
    [sent] = deployment.stripe.usage_requests()
    assert sent["headers"]["stripe-version"] == DEFAULT_STRIPE_VERSION
    assert sent["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    assert sent["headers"]["idempotency-key"] == UsageRecords().stripe_idempotency_key("demo-client", "r1")
    assert "idempotent-replayed" not in response.headers


def test_explicit_timestamp_and_set_action_reach_stripe(deployment: Deployment) -> None:
    at = int(time.time()) - 3600
    response = deployment.post("/v1/usage", record("r1", quantity=5, timestamp=at, action="set"))

    assert response.status == 200
    [accepted] = deployment.stripe.ledger
    assert (accepted["timestamp"], accepted["action"], accepted["quantity"]) == (at, "set", 5)


def test_dedup_record_is_kept_for_the_dedup_window(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("r1"))

    [item] = deployment.dedup_items()
    assert item["status"]["S"] == "COMPLETED"
    assert item["id"]["S"].startswith(f"{KEY_PREFIX}#")
    remaining_days = (int(item["expiration"]["N"]) - time.time()) / 86400
    assert 34.9 < remaining_days <= 35  # the template's default, longer than Stripe's 24 h


def test_replay_returns_the_stored_answer_without_calling_stripe(deployment: Deployment) -> None:
    first = deployment.post("/v1/usage", record("r1"))
    replay = deployment.post("/v1/usage", record("r1"))

    assert replay.status == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.body == first.body
    assert len(deployment.stripe.usage_requests()) == 1
    assert len(deployment.stripe.ledger) == 1


def test_same_key_with_another_payload_is_a_conflict(deployment: Deployment) -> None:
    deployment.post("/v1/usage", record("r1", quantity=1))
    conflict = deployment.post("/v1/usage", record("r1", quantity=2))

    assert conflict.status == 409
    assert conflict.body["error"]["type"] == "idempotency_conflict"
    assert [r["quantity"] for r in deployment.stripe.ledger] == [1]


def test_keys_are_scoped_per_client(deployment: Deployment) -> None:
    mine = deployment.post("/v1/usage", record("shared-key"))
    theirs = deployment.post("/v1/usage", record("shared-key"), client=OTHER_CLIENT)

    assert mine.status == theirs.status == 200
    assert mine.body["stripe_id"] != theirs.body["stripe_id"]
    assert len(deployment.stripe.ledger) == 2


def test_key_still_in_flight_is_409_with_retry_after(deployment: Deployment) -> None:
    # Another invocation holds the lock (or crashed while holding it): simulate it with Powertools itself.
    settings = get_settings()
    store = persistence_layer(settings)
    store.configure(idempotency_config(settings), key_prefix=KEY_PREFIX)
    held = UsageRecord.model_validate(record("r1"))
    request = dedup_request("demo-client", held.idempotency_key, held.dedup_payload())
    store.save_inprogress(data=request, remaining_time_in_millis=20_000)

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 409
    assert response.body["error"]["type"] == "idempotency_in_progress"
    assert int(response.headers["retry-after"]) > 0
    assert deployment.stripe.usage_requests() == []


def test_stripe_5xx_then_success_reports_once(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.server_error(500), Fault.server_error(503))

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 200
    assert len(deployment.stripe.ledger) == 1
    attempts = deployment.stripe.usage_requests()
    assert len(attempts) == 3
    assert len({a["headers"]["idempotency-key"] for a in attempts}) == 1  # every retry with the same key


def test_answer_lost_after_stripe_wrote_the_record_is_not_double_reported(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.lost_response())  # written, then the connection drops

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 200
    [accepted] = deployment.stripe.ledger
    assert response.body["stripe_id"] == accepted["id"]
    assert len(deployment.stripe.usage_requests()) == 2


def test_rate_limited_record_is_queued(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.rate_limit())

    response = deployment.post("/v1/usage", record("r1", quantity=3))

    assert response.status == 202
    assert response.body["status"] == "queued"
    assert response.body["reason"]["type"] == "stripe_rate_limited"
    assert len(deployment.stripe.usage_requests()) == 1  # the SDK does not retry a plain 429
    assert deployment.stripe.ledger == []
    [message] = deployment.retry_messages()
    body = message["Body"]
    assert body["client_id"] == "demo-client"
    assert body["idempotency_key"] == "r1"
    assert body["record"] == {
        "subscription_item": SUBSCRIPTION_ITEM,
        "quantity": 3,
        "timestamp": "now",
        "action": "increment",
    }
    assert body["stripe"]["timestamp"] == response.body["timestamp"]
    assert body["stripe_idempotency_key"] == UsageRecords().stripe_idempotency_key("demo-client", "r1")
    assert body["reason"]["http_status"] == 429
    assert message["MessageAttributes"]["reason_type"]["StringValue"] == "stripe_rate_limited"

    replay = deployment.post("/v1/usage", record("r1", quantity=3))
    assert (replay.status, replay.body["status"], replay.headers["idempotent-replayed"]) == (202, "queued", "true")
    assert len(deployment.retry_messages()) == 1


def test_stripe_failing_after_bounded_retries_is_queued(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.server_error(502), times=3)

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 202
    assert response.body["reason"]["type"] == "stripe_unavailable"
    assert len(deployment.stripe.usage_requests()) == 3  # one attempt and two retries
    assert len(deployment.retry_messages()) == 1


def test_stripe_unreachable_is_queued(deployment: Deployment) -> None:
    deployment.stripe.inject(Fault.connection_reset(), times=3)

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 202
    assert response.body["reason"]["type"] == "stripe_unreachable"
    assert len(deployment.retry_messages()) == 1


def test_stripe_timeouts_queue_the_record_and_stripe_counts_it_at_most_once(deployment: Deployment) -> None:
    # Each attempt outlives the 1 s client timeout; Stripe still executes the first one.
    deployment.stripe.inject(Fault.latency(1.5), times=3)

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 202
    assert response.body["reason"]["type"] == "stripe_unreachable"
    wait_until(lambda: len(deployment.stripe.ledger) >= 1)
    time.sleep(1.6)  # let every delayed attempt finish
    assert len(deployment.stripe.ledger) == 1
    [message] = deployment.retry_messages()
    assert message["Body"]["stripe_idempotency_key"] == deployment.stripe.ledger[0]["idempotency_key"]


def test_permanent_rejection_goes_to_the_dead_letter_queue_with_the_reason(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1", subscription_item="si_doesNotExist"))

    assert response.status == 422
    assert response.body["status"] == "rejected"
    assert response.body["error"]["type"] == "stripe_error"
    assert response.body["error"]["code"] == "resource_missing"
    assert "si_doesNotExist" in response.body["error"]["message"]
    assert deployment.retry_messages() == []
    [letter] = deployment.dead_letters()
    assert letter["Body"]["record"]["subscription_item"] == "si_doesNotExist"
    assert letter["Body"]["idempotency_key"] == "r1"
    assert letter["Body"]["reason"]["type"] == "stripe_error"
    assert letter["Body"]["reason"]["code"] == "resource_missing"
    assert letter["Body"]["reason"]["http_status"] == 404

    replay = deployment.post("/v1/usage", record("r1", subscription_item="si_doesNotExist"))
    assert (replay.status, replay.body, replay.headers["idempotent-replayed"]) == (422, response.body, "true")
    assert len(deployment.stripe.usage_requests()) == 1
    assert len(deployment.dead_letters()) == 1


def test_neither_stripe_nor_sqs_is_503_and_the_retry_goes_through(deployment: Deployment) -> None:
    sqs = aws_client("sqs")
    retry_queue_name = deployment.stack.attributes[("RetryQueue", "QueueName")]
    deployment.stripe.inject(Fault.server_error(500), times=3)
    sqs.delete_queue(QueueUrl=deployment.retry_queue_url)  # SQS outage

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 503
    assert response.body["error"]["type"] == "service_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert deployment.dedup_items() == []  # nothing remembered: the client's retry must go through
    assert deployment.stripe.ledger == []

    sqs.create_queue(QueueName=retry_queue_name)
    retry = deployment.post("/v1/usage", record("r1"))
    assert retry.status == 200
    assert "idempotent-replayed" not in retry.headers
    assert len(deployment.stripe.ledger) == 1


def test_rejection_that_cannot_be_dead_lettered_is_503(deployment: Deployment) -> None:
    aws_client("sqs").delete_queue(QueueUrl=deployment.dead_letter_queue_url)

    response = deployment.post("/v1/usage", record("r1", subscription_item="si_doesNotExist"))

    assert response.status == 503
    assert deployment.dedup_items() == []


def test_stripe_key_for_the_wrong_mode_is_a_configuration_error_that_keeps_the_record(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    aws_client("secretsmanager").put_secret_value(
        SecretId=deployment.env["STRIPE_API_KEY_SECRET_ARN"], SecretString="sk_live_not_for_a_test_stack"
    )

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 202
    reason = response.body["reason"]
    assert reason["type"] == "stripe_key_misconfigured" and "STRIPE_MODE" not in reason["message"]  # the log says
    assert "sk_live_not_for" not in json.dumps(response.body)  # never the key itself
    assert deployment.stripe.usage_requests() == []
    [message] = deployment.retry_messages()
    assert message["Body"]["reason"]["type"] == "stripe_key_misconfigured"
    emitted = capsys.readouterr().out
    assert '"ConfigurationInvalid":[1.0]' in emitted.replace(" ", "") and "sk_live_not_for" not in emitted


def test_stripe_rejecting_our_api_key_keeps_the_record_for_retry(deployment: Deployment) -> None:
    aws_client("secretsmanager").put_secret_value(
        SecretId=deployment.env["STRIPE_API_KEY_SECRET_ARN"], SecretString="sk_test_revoked"
    )

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 202
    assert response.body["reason"]["type"] == "stripe_auth_failed"
    assert deployment.dead_letters() == []
    assert len(deployment.retry_messages()) == 1


def test_no_time_left_for_stripe_queues_without_calling_it(deployment: Deployment) -> None:
    response = deployment.post("/v1/usage", record("r1"), timeout_seconds=2)

    assert response.status == 202
    assert response.body["reason"]["type"] == "time_budget_exhausted"
    assert deployment.stripe.usage_requests() == []
    assert len(deployment.retry_messages()) == 1


def test_logs_carry_request_id_client_and_key(deployment: Deployment, logs: Callable[[], str]) -> None:
    deployment.post("/v1/usage", record("r1"))

    request_id = deployment.invocations[-1]["requestContext"]["requestId"]
    [reported] = [line for line in map(json.loads, logs().splitlines()) if line["message"] == "reported"]
    assert reported["correlation_id"] == request_id
    assert reported["client_id"] == "demo-client"
    assert reported["idempotency_key"] == "r1"


def test_metrics_count_outcomes_and_stripe_latency(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.post("/v1/usage", record("r1"))
    deployment.post("/v1/usage", record("r1"))
    deployment.post("/v1/usage", record("r2", subscription_item="si_doesNotExist"))

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    service_wide = [m for m in emitted if "kind" not in m]
    assert [sorted(k for k in m if k not in ("_aws", "service")) for m in service_wide] == [
        ["Reported", "StripeLatency"],
        ["Replayed"],
        ["Rejected", "StripeLatency"],
    ]
    by_kind = [
        (m["kind"], *sorted(k for k in m if k not in ("_aws", "service", "kind"))) for m in emitted if "kind" in m
    ]
    assert by_kind == [("usage_record", "Reported"), ("usage_record", "Replayed"), ("usage_record", "Rejected")]
    dimensions = {m["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][-1] for m in emitted}
    assert dimensions == {"service", "kind"}  # the alarms' metrics keep the one dimension they are defined on
