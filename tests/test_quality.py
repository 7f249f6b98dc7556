"""The project's static checks, run as tests so `make test` (and CI) cannot skip them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.stack import ROOT

BIN = Path(sys.executable).parent


def sam_cli() -> str:
    sam = os.environ.get("SAM_CLI") or str(ROOT / ".venv-sam" / "bin" / "sam")
    if not Path(sam).exists():
        pytest.fail(f"SAM CLI not found at {sam}: run `make setup` (or set SAM_CLI)")
    return sam


def checkov_cli() -> str:
    checkov = os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not Path(checkov).exists():
        pytest.fail(f"checkov not found at {checkov}: run `make setup` (or set CHECKOV)")
    return str(Path(checkov).absolute())


def run(*command: str, cwd: Path = ROOT) -> str:
    # `sam build` needs a python3.12 on PATH for the layer: the project's venv has one.
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def test_ruff_lint() -> None:
    run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    run(str(BIN / "ruff"), "format", "--check", ".")


@pytest.mark.slow
def test_mypy() -> None:
    run(str(BIN / "mypy"), "layers/shared/usage_reporter", "functions", "tests", "events", "clients/python")


@pytest.mark.slow
def test_cfn_lint() -> None:
    run(str(BIN / "cfn-lint"), "template.yaml")


@pytest.mark.slow
def test_sam_validate_lint() -> None:
    assert "is a valid SAM Template" in run(sam_cli(), "validate", "--lint")


# The checkov findings the template accepts, each with its reason beside it in template.yaml
# (`# checkov:skip=ID:reason` inside the resource's block). A skip added there must be added here too, so
# that no finding is waved through unreviewed; a skip that no longer takes effect shows up as a failure.
ACCEPTED_CHECKOV_FINDINGS = {
    # no VPC: the functions talk only to AWS APIs and Stripe
    ("CKV_AWS_117", "AWS::Serverless::Function.IngestFunction"),
    ("CKV_AWS_117", "AWS::Serverless::Function.RetryFunction"),
    # no Lambda DLQ: both are invoked synchronously (API Gateway, SQS event source); the SQS dead-letter queue
    ("CKV_AWS_116", "AWS::Serverless::Function.IngestFunction"),
    ("CKV_AWS_116", "AWS::Serverless::Function.RetryFunction"),
    # the worker's concurrency is bounded by its event source's MaximumConcurrency
    ("CKV_AWS_115", "AWS::Serverless::Function.RetryFunction"),
    # AWS-managed encryption at rest; no customer-managed KMS keys
    ("CKV_AWS_173", "AWS::Serverless::Function.IngestFunction"),
    ("CKV_AWS_173", "AWS::Serverless::Function.RetryFunction"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.IngestLogGroup"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.RetryLogGroup"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.HttpApiAccessLogGroup"),
    ("CKV_AWS_119", "AWS::DynamoDB::Table.IdempotencyTable"),
    ("CKV_AWS_149", "AWS::SecretsManager::Secret.StripeApiKeySecret"),
    ("CKV_AWS_149", "AWS::SecretsManager::Secret.ClientSecretsSecret"),
    ("CKV_AWS_149", "AWS::SecretsManager::Secret.StripeWebhookSecret"),
    # SSE-SQS (SqsManagedSseEnabled), which this check does not recognize
    ("CKV_AWS_27", "AWS::SQS::Queue.RetryQueue"),
    ("CKV_AWS_27", "AWS::SQS::Queue.DeadLetterQueue"),
}


@pytest.mark.slow
def test_checkov_finds_nothing_unsuppressed() -> None:
    # The cloudformation framework is the one that reads SAM templates (AWS::Serverless::*); `serverless` is
    # the Serverless Framework's serverless.yml. --skip-download: no call to the vendor's platform.
    command = [checkov_cli(), "-f", "template.yaml", "--framework", "cloudformation", "--skip-download", "-o", "json"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    [report] = [r for r in report if r["check_type"] == "cloudformation"] if isinstance(report, list) else [report]
    results = report["results"]
    assert results["parsing_errors"] == []
    failed = [
        f"{c['check_id']} {c['resource']} (template.yaml lines {c['file_line_range']}): {c['check_name']}"
        for c in results["failed_checks"]
    ]
    assert not failed, "checkov findings: fix them, or skip them with a reason inside the resource:\n" + "\n".join(
        failed
    )
    assert result.returncode == 0, result.stdout + result.stderr

    skipped = {
        (c["check_id"], c["resource"]): c["check_result"].get("suppress_comment", "") for c in results["skipped_checks"]
    }
    assert set(skipped) == ACCEPTED_CHECKOV_FINDINGS, "checkov skips changed: review them and ACCEPTED_CHECKOV_FINDINGS"
    assert all(len(reason) > 20 for reason in skipped.values()), f"every skip needs its reason: {skipped}"
    passed = {(c["check_id"], c["resource"]) for c in results["passed_checks"]}
    assert ("CKV_AWS_95", "AWS::Serverless::HttpApi.HttpApi") in passed  # access logging


@pytest.mark.slow
def test_sam_build_packages_the_layer_for_arm64(tmp_path: Path) -> None:
    run(sam_cli(), "build", "--build-dir", str(tmp_path / "build"), "--cache-dir", str(tmp_path / "cache"))

    layer = tmp_path / "build" / "SharedLayer" / "python"
    assert (layer / "usage_reporter" / "http_api.py").is_file()
    assert (layer / "stripe").is_dir()
    assert not (layer / ".lock").exists() and not (layer / "bin").exists()  # the installer's, not the layer's
    [native] = list((layer / "pydantic_core").glob("_pydantic_core*.so"))
    assert "aarch64" in native.name  # built for the template's arm64, not this machine
    # Bytecode compiled at build time for the runtime's CPython 3.12, checked by hash only (a zip keeps no
    # source mtimes): Lambda's /opt is read-only, and without it every cold start compiles the layer.
    for module in (
        "usage_reporter/http_api",
        "usage_reporter/stripe_gateway/gateway",
        "pydantic/main",
        "stripe/_stripe_client",
    ):
        source = layer / f"{module}.py"
        [compiled] = list(source.parent.glob(f"__pycache__/{source.stem}.cpython-312.pyc"))
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, (compiled, flags)  # hash-based, source not checked
    assert not list((layer / "usage_reporter").rglob("*.cpython-31[!2]*.pyc"))  # nothing from another Python
    assert (tmp_path / "build" / "IngestFunction" / "app.py").is_file()


def test_worker_is_wired_for_partial_failures_and_bounded_concurrency() -> None:
    from tests.harness.stack import load_template

    template = load_template()
    worker = template["Resources"]["RetryFunction"]["Properties"]
    [source] = worker["Events"].values()
    assert source["Type"] == "SQS"
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["Properties"]["BatchSize"] == {"Ref": "RetryBatchSize"}
    assert source["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "RetryWorkerConcurrency"}}
    # Even at the highest allowed concurrency, one request at a time per worker (>= 200 ms each) stays
    # under Stripe's ~100 requests/s for legacy usage records.
    assert template["Parameters"]["RetryWorkerConcurrency"]["MaxValue"] * 5 <= 100
    queue = template["Resources"]["RetryQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "RetryMaxReceiveCount"}
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]  # AWS's advice for Lambda event sources
    alarms = {
        r["Properties"]["MetricName"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert {"ApproximateNumberOfMessagesVisible", "Errors", "5xx"} <= alarms


def test_the_license_file_is_the_one_pyproject_names() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]

    assert declared == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_samconfig_leaves_the_region_to_the_user() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())

    assert "region" not in json.dumps(config)
