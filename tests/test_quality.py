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
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
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
