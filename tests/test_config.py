"""Configuration: env-var secrets for local runs, guards against settings that would lose or misroute money."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import Deployment, record
from tests.harness.fake_stripe import is_stripe_version
from tests.harness.lambda_runtime import FAKE_STRIPE_KEY
from tests.harness.stack import ROOT
from usage_reporter import wiring
from usage_reporter.config import FIRST_VERSION_WITHOUT_USAGE_RECORDS, Settings, stripe_version_problem
from usage_reporter.stripe_gateway import worst_case_seconds

BASE = {"IDEMPOTENCY_TABLE_NAME": "t", "RETRY_QUEUE_URL": "r", "DEAD_LETTER_QUEUE_URL": "d"}
LOCAL_SECRETS = {"CLIENT_SECRETS": '{"c": "s"}', "STRIPE_API_KEY": "sk_test_x"}


def test_secrets_from_plain_env_vars_work_end_to_end(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY_SECRET_ARN", "")
    monkeypatch.setenv("CLIENT_SECRETS_SECRET_ARN", "")
    monkeypatch.setenv("STRIPE_API_KEY", FAKE_STRIPE_KEY)
    monkeypatch.setenv("CLIENT_SECRETS", json.dumps({"env-client": ["env-secret"]}))
    wiring.reset()

    response = deployment.post("/v1/usage", record("r1"), client=("env-client", "env-secret"))

    assert response.status == 200
    assert len(deployment.stripe.ledger) == 1


def test_missing_configuration_is_503_not_a_crash(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDEMPOTENCY_TABLE_NAME")
    wiring.reset()

    response = deployment.post("/v1/usage", record("r1"))

    assert response.status == 503
    assert response.body["error"]["type"] == "service_unavailable"
    assert deployment.stripe.requests == []


def test_unreadable_client_secrets_are_503(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENT_SECRETS_SECRET_ARN", deployment.env["CLIENT_SECRETS_SECRET_ARN"] + "-gone")
    wiring.reset()

    assert deployment.post("/v1/usage", record("r1")).status == 503


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"STRIPE_API_VERSION": "2025-03-31.basil"}, "has no usage records"),
        ({"STRIPE_MODE": "prod"}, "STRIPE_MODE"),
        ({"CLIENT_SECRETS": ""}, "CLIENT_SECRETS"),
        ({"STRIPE_API_KEY": ""}, "STRIPE_API_KEY"),
        ({"DEDUP_WINDOW_DAYS": "1"}, "DEDUP_WINDOW_DAYS"),
    ],
)
def test_dangerous_settings_are_refused(change: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings.model_validate({**BASE, **LOCAL_SECRETS, **change})


def test_empty_arn_means_unset() -> None:
    settings = Settings.model_validate({**BASE, **LOCAL_SECRETS, "STRIPE_API_KEY_SECRET_ARN": ""})
    assert settings.stripe_api_key_secret_arn is None


def test_stripe_budget_fits_the_ingest_timeout_for_every_allowed_stripe_timeout(deployment: Deployment) -> None:
    template: dict[str, Any] = deployment.stack.template
    lambda_timeout = deployment.stack.function_timeout("IngestFunction")
    largest = template["Parameters"]["StripeTimeoutSeconds"]["MaxValue"]
    env = {**BASE, **LOCAL_SECRETS, **deployment.stack.function_environment("IngestFunction")}
    settings = Settings.model_validate({**env, "STRIPE_TIMEOUT_SECONDS": str(largest)})

    assert worst_case_seconds(settings) + settings.stripe_budget_reserve_seconds < lambda_timeout


@pytest.mark.parametrize(
    "version", ["2025-02-24.acacia", "2024-09-30.acacia", "2024-12-18.acacia", "2024-06-20", "2023-10-16"]
)
def test_stripe_versions_with_usage_records_are_accepted(version: str) -> None:
    settings = Settings.model_validate({**BASE, **LOCAL_SECRETS, "STRIPE_API_VERSION": version})

    assert settings.stripe_version == version


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("2025-02-24.acaica", "did you mean 2025-02-24.acacia"),
        ("2025-02-24.basil", "did you mean 2025-02-24.acacia"),
        ("2025-02-24", "did you mean 2025-02-24.acacia"),
        ("2024-06-20.acacia", "versions before 2024-09-30 have no release name; use 2024-06-20"),
        ("2025-03-15.acacia", "no version between 2025-02-24.acacia and 2025-03-31.basil"),
        ("2025-02-30.acacia", "2025-02-30 is not a date"),
        ("2025-2-24.acacia", "is not a Stripe API version: expected YYYY-MM-DD"),
        ("2025-02-24.Acacia", "is not a Stripe API version"),
        ("2025-02-24.acacia ", "is not a Stripe API version"),
        ("\uff12025-02-24.acacia", "is not a Stripe API version"),  # a FULLWIDTH DIGIT TWO is not ASCII
        ("acacia", "is not a Stripe API version"),
        ("", "is not a Stripe API version"),
        ("2025-04-30.basil", "has no usage records"),
        ("2030-01-01", "has no usage records"),
    ],
)
def test_stripe_versions_that_are_not_stripes_or_lack_usage_records_are_refused(version: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings.model_validate({**BASE, **LOCAL_SECRETS, "STRIPE_API_VERSION": version})


@pytest.mark.parametrize(
    "version",
    [
        "2025-02-24.acacia",
        "2024-11-20.acacia",
        "2024-06-20",
        "2025-02-24.acaica",
        "2025-02-24",
        "2024-06-20.acacia",
        "2025-03-15.acacia",
        "2025-02-30.acacia",
        "2025-2-24.acacia",
        "2025-03-31.basil",
        "2025-09-30.clover",
    ],
)
def test_the_fake_stripe_applies_the_same_version_rule(version: str) -> None:
    """What the service accepts is exactly what (the fake) Stripe has, before basil."""
    has_usage_records = version[:10] < FIRST_VERSION_WITHOUT_USAGE_RECORDS
    stripe_has_it = is_stripe_version(version, datetime.datetime.now(datetime.UTC).date())

    assert (stripe_version_problem(version) is None) == (stripe_has_it and has_usage_records)


@pytest.mark.parametrize(
    ("env", "traced"),
    [
        ({"AWS_LAMBDA_FUNCTION_NAME": "ingest"}, True),
        ({"AWS_LAMBDA_FUNCTION_NAME": "ingest", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "ingest", "AWS_SAM_LOCAL": "true"}, False),
        ({}, False),
    ],
)
def test_tracing_is_on_in_lambda_only_and_loads_the_xray_sdk_only_then(env: dict[str, str], traced: bool) -> None:
    script = (
        "import sys; from usage_reporter import observability as o; "
        "print(o.tracer is not None, 'aws_xray_sdk.core' in sys.modules, "
        "sorted(o.tracer._config['patch_modules']) if o.tracer else [])"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("POWERTOOLS_TRACE_DISABLED", "AWS_LAMBDA_FUNCTION_NAME")}
    output = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env, "PYTHONPATH": str(ROOT / "layers" / "shared")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=2)

    assert output[:2] == [str(traced), str(traced)]
    assert output[2].strip() == ("['botocore', 'requests']" if traced else "[]")


def test_aws_clients_are_built_once_and_again_only_for_another_aws_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from usage_reporter import aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first = aws.client("sqs")
    wiring.reset()  # the service's other objects are rebuilt; the clients stay while the environment does
    assert aws.client("sqs") is first
    assert first.meta.endpoint_url == "http://127.0.0.1:1" and first.meta.region_name == "eu-west-1"

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")  # e.g. the local server's moto, a fault proxy
    moved = aws.client("sqs")
    assert moved is not first and moved.meta.endpoint_url == "http://127.0.0.1:2"
    assert aws.client("dynamodb").meta.endpoint_url == "http://127.0.0.1:2"
