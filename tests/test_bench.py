"""`make bench` (tests/harness/bench): its smallest run prints every row of its tables, and the cost model turns
the run's measurements into dollars. Nothing is asserted about the figures: the bench is a script, not a test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.stack import ROOT

SIZES = (2, 5, 10)  # 10 is over the service's BATCH_CONCURRENCY (8): a batch runs in waves
SMALLEST = ["--rounds", "1", "--warm", "1", "--batch-rounds", "1", "--serve-records", "1", "--latency", "0"]

FIGURE_ROWS = [
    "cold start, best",
    "cold start, median",
    "peak RSS (VmHWM), median",
    "CPU time to first answer, median",
    "cold start with precompiled .pyc (as sam build makes the layer), median",
    "saved by precompiling, median",
    "held by pydantic imports",
    "held by Powertools imports",
    "held by the service's own code imports",
    "precompiled cold start less those imports (-X importtime overstates them a little), median",
    "peak RSS of a process importing boto3 + stripe only",
    "+ pydantic",
    "+ Powertools",
    "+ the service's handler (all of it: those two and its own code)",
    "imports, total (python -X importtime, precompiled, median by group)",
    "interpreter start (spawn -> child's first line)",
    "handler import (floor: import boto3, stripe)",
    "first call (floor: clients + its 4 calls)",
    "imports, total (python -X importtime",
    "of which inside the first call (lazy imports)",
    "import boto3/botocore",
    "import stripe",
    "usage record, median",
    "usage record, best",
    "of which not Stripe",
    "CPU time per record, median",
    "meter event (single, v1), median",
    *[f"{kind}, batch of {size} (vs 1 record)" for kind in ("usage records", "meter events") for size in SIZES],
    f"moto's CPU during the usage records batch of {SIZES[-1]}",
    f"moto's CPU during the meter events batch of {SIZES[-1]}",
    *[f"Stripe requests/s, usage batch of {size} " for size in SIZES],
    "| 1 client (",
    "| 4 clients (",
    "| 16 clients (",
]
CALL_ROWS = [
    "[1] usage record, first in a new instance",
    "[2] usage record ",
    "[3] usage record, replayed",
    "[4] meter event ",
    f"[5] usage records, batch of {SIZES[-1]}",
    f"[6] meter events, batch of {SIZES[-1]}",
]


def run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_the_smallest_bench_prints_every_row_and_its_cost_in_dollars(tmp_path: Path) -> None:
    measurements = tmp_path / "bench.json"
    sizes = ",".join(map(str, SIZES))

    table = run("tests.harness.bench", *SMALLEST, "--batch-sizes", sizes, "--json", str(measurements))
    cost = run("tests.harness.bench.cost", "--from", str(measurements))

    figures = [line for line in table.splitlines() if line.startswith("| ")]
    for row in FIGURE_ROWS + CALL_ROWS:
        assert any(row in line for line in figures), f"no row {row!r} in:\n{table}"
    header = next(line for line in figures if "figure" in line)
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["figure", "service", "floor / baseline", "ratio"]
    assert json.loads(measurements.read_text())["calls"]
    for mode in ("usage record, one per request", "usage record, batches of 10", "meter event, one per request"):
        assert mode in cost
    assert len(re.findall(r"^\| total +\| +\| +\$\d+\.\d\d \|$", cost, re.MULTILINE)) == 4, cost
    for memory in (256, 512, 1024, 1769):
        assert re.search(rf"^\| {memory} MB .*\| +\$\d+\.\d\d \| +\$\d+\.\d\d \|$", cost, re.MULTILINE), cost
    assert "Recommended: " in cost
    assert "https://aws.amazon.com/lambda/pricing/" in cost
