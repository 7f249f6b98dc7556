"""The fault-and-load check (tests/harness/fault_load.py): its short form passes, and its reconciliation
catches what it is there to catch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.fault_load import Key, reconcile
from tests.harness.stack import ROOT
from usage_reporter.stripe_gateway import stripe_idempotency_key


@pytest.mark.slow
def test_the_short_fault_and_load_run_reconciles() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.harness.fault_load", "--keys", "30", "--clients", "4", "--seconds", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "reconciliation:     OK" in run.stdout
    assert "AWS calls failed:   {'" in run.stdout  # outages did happen


def stripe_record(key: str, quantity: int, suffix: str = "") -> dict[str, object]:
    return {"idempotency_key": stripe_idempotency_key("demo-client", key) + suffix, "quantity": quantity}


def test_reconciliation_flags_a_double_report_a_loss_and_a_refused_record_in_stripe() -> None:
    keys = [
        Key("twice", "si_demo", 5, (200, {})),
        Key("lost", "si_demo", 3, (202, {})),
        Key("no", "si_x", 1, (422, {})),
    ]
    ledger = [stripe_record("twice", 5), stripe_record("twice", 5, "-r1"), stripe_record("no", 1)]

    problems = reconcile(keys, ledger, letters={"no": {"reason": {"message": "No such subscription item"}}})

    assert any("twice: 2 Stripe records" in p for p in problems)
    assert any("lost: answered 202 but neither in Stripe nor dead-lettered" in p for p in problems)
    assert any("no: answered 422 rejected but in Stripe" in p for p in problems)
    assert any(p.startswith("quantities:") for p in problems)


def test_reconciliation_accepts_stripe_once_or_a_dead_letter_with_its_reason() -> None:
    keys = [Key("a", "si_demo", 5, (200, {})), Key("b", "si_demo", 3, (202, {})), Key("c", "si_x", 1, (422, {}))]
    ledger = [stripe_record("a", 5)]
    letters = {"b": {"reason": {"message": "gave up"}}, "c": {"reason": {"message": "No such subscription item"}}}

    assert reconcile(keys, ledger, letters) == []
