"""The project's static checks, run as tests so `make test` (and CI) cannot skip them."""

from __future__ import annotations

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


def test_mypy() -> None:
    run(str(BIN / "mypy"), "layers/shared/usage_reporter", "functions", "tests", "events")


def test_cfn_lint() -> None:
    run(str(BIN / "cfn-lint"), "template.yaml")


@pytest.mark.slow
def test_sam_validate_lint() -> None:
    assert "is a valid SAM Template" in run(sam_cli(), "validate", "--lint")


@pytest.mark.slow
def test_sam_build_packages_the_layer_for_arm64(tmp_path: Path) -> None:
    run(sam_cli(), "build", "--build-dir", str(tmp_path / "build"), "--cache-dir", str(tmp_path / "cache"))

    layer = tmp_path / "build" / "SharedLayer" / "python"
    assert (layer / "usage_reporter" / "http_api.py").is_file()
    assert (layer / "stripe").is_dir()
    [native] = list((layer / "pydantic_core").glob("_pydantic_core*.so"))
    assert "aarch64" in native.name  # built for the template's arm64, not this machine
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
    assert {"ApproximateNumberOfMessagesVisible", "Errors"} <= alarms
