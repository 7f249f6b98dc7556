"""The fault-and-load check (tests/harness/fault_load.py): its short form passes, and its reconciliation
catches what it is there to catch, for usage records and meter events."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from tests.harness.fake_stripe import MeterEvent
from tests.harness.fault_load import Key, reconcile, record_body, repeated_dead_letters
from tests.harness.stack import ROOT
from usage_reporter.config import Settings
from usage_reporter.kinds import MeterEvents
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
    for kind in ("usage records", "meter events"):  # both kinds were sent (and the killed usage record)
        assert re.search(rf"^{kind}: +1[56] keys, .*; in Stripe [1-9]", run.stdout, re.MULTILINE), run.stdout


def stripe_record(key: str, quantity: int, suffix: str = "") -> dict[str, object]:
    return {"idempotency_key": stripe_idempotency_key("demo-client", key) + suffix, "quantity": quantity}


def identifier(key: str) -> str:
    return MeterEvents(Settings.model_construct()).stripe_idempotency_key("demo-client", key)


def meter_event(key: str, value: str, *, suffix: str = "", cancelled: bool = False) -> MeterEvent:
    """An event in the fake's ledger as the service writes it: its identifier derived from the key, the
    Idempotency-Key the same (``-r<n>`` after a redrive of a refusal)."""
    return MeterEvent(
        event_name="api_requests",
        identifier=identifier(key),
        customer="cus_demo",
        value=Decimal(value),
        timestamp=1_795_000_000,
        created=1_795_000_000,
        payload={"stripe_customer_id": "cus_demo", "value": value},
        via="v1",
        seq=0,
        idempotency_key=identifier(key) + suffix,
        cancelled_at=1_795_000_100 if cancelled else None,
    )


def event_key(name: str, value: str, status: int, event_name: str = "api_requests") -> Key:
    return Key(name, event_name, Decimal(value), (status, {}), kind="meter_event", customer="cus_demo")


def letter(reason: str, kind: str = "usage_record", **fields: Any) -> list[dict[str, Any]]:
    return [{"kind": kind, "reason": {"type": "stripe_error", "message": reason}, **fields}]


def test_reconciliation_flags_a_double_report_a_loss_and_a_refused_record_in_stripe() -> None:
    keys = [
        Key("twice", "si_demo", 5, (200, {})),
        Key("lost", "si_demo", 3, (202, {})),
        Key("no", "si_x", 1, (422, {})),
    ]
    ledger = [stripe_record("twice", 5), stripe_record("twice", 5, "-r1"), stripe_record("no", 1)]

    problems = reconcile(keys, ledger, letters={"no": letter("No such subscription item")})

    assert any("twice: 2 Stripe records" in p for p in problems)
    assert any("lost: answered 202 but neither in Stripe nor dead-lettered" in p for p in problems)
    assert any("no: answered 422 rejected but in Stripe" in p for p in problems)
    assert any(p.startswith("quantities:") for p in problems)


def test_reconciliation_flags_a_double_meter_event_a_lost_one_and_a_refused_one_in_stripe() -> None:
    keys = [
        event_key("twice", "12.5", 200),
        event_key("lost", "3", 202),
        event_key("no", "1.25", 422, event_name="no_such_meter"),
    ]
    # Two events under the same identifier: e.g. a resend with a fresh Idempotency-Key that Stripe took anew.
    events = [meter_event("twice", "12.5"), meter_event("twice", "12.5", suffix="-r1"), meter_event("no", "1.25")]

    problems = reconcile(keys, [], letters={"no": letter("No active meter", "meter_event")}, meter_events=events)

    assert any("twice: 2 Stripe records" in p for p in problems)
    assert any("lost: answered 202 but neither in Stripe nor dead-lettered" in p for p in problems)
    assert any("no: answered 422 rejected but in Stripe" in p for p in problems)
    assert any(p.startswith("meter values: callers were told 15.5, Stripe + dead letters hold 25.0") for p in problems)
    assert not any(p.startswith("quantities:") for p in problems)


def test_reconciliation_matches_meter_events_by_identifier_and_value_not_by_key_or_kind() -> None:
    keys = [event_key("off", "2.50", 200), event_key("foreign", "1", 200), event_key("usage", "4", 202)]
    events = [
        meter_event("off", "2.05"),  # a value other than the caller's
        MeterEvent("api_requests", "evt-someone-else", "cus_demo", Decimal(7), 0, 0, {}, "v1", 1, None),
        meter_event("foreign", "1", suffix="-other"),  # written under an Idempotency-Key not the record's
    ]
    letters = letter("gave up", kind="usage_record")  # a usage record's letter: not this meter event's

    problems = reconcile(keys, [], letters={"usage": letters}, meter_events=events)

    assert any("off: Stripe holds 2.05, the caller sent 2.50" in p for p in problems)
    assert any(p.startswith("Stripe holds 1 meter event(s) evt-someone-else") for p in problems)
    assert any("foreign: a Stripe record under the Idempotency-Key" in p for p in problems)
    assert any("usage: answered 202 but neither in Stripe nor dead-lettered" in p for p in problems)
    assert any("1 dead letter(s) for 'usage'" in p for p in problems)


def test_a_cancelled_meter_event_is_not_counted() -> None:
    keys = [event_key("gone", "5", 200)]

    problems = reconcile(keys, [], letters={}, meter_events=[meter_event("gone", "5", cancelled=True)])

    assert any("gone: its meter event was cancelled" in p for p in problems)
    assert any("gone: answered 200 but neither in Stripe nor dead-lettered" in p for p in problems)


def test_reconciliation_accepts_stripe_once_or_a_dead_letter_with_its_reason() -> None:
    keys = [Key("a", "si_demo", 5, (200, {})), Key("b", "si_demo", 3, (202, {})), Key("c", "si_x", 1, (422, {}))]
    ledger = [stripe_record("a", 5)]
    letters = {"b": letter("gave up"), "c": letter("No such subscription item")}

    assert reconcile(keys, ledger, letters) == []


def test_reconciliation_accepts_meter_events_once_with_decimal_values_and_redriven_refusals() -> None:
    keys = [
        event_key("a", "12.50", 200),  # Stripe holds 12.5: the same amount
        event_key("b", "0.10", 202),  # queued, then delivered by the worker
        event_key("c", "3", 202),  # dead-lettered after the worker gave up
        event_key("d", "7.25", 422, event_name="no_such_meter"),
        event_key("e", "1.5", 200),  # refused, fixed, redriven: a fresh Idempotency-Key, the same identifier
    ]
    events = [meter_event("a", "12.5"), meter_event("b", "0.10"), meter_event("e", "1.5", suffix="-r2")]
    value = {"stripe": {"payload": {"value": "3"}}}
    letters = {"c": letter("gave up", "meter_event", **value), "d": letter("No active meter", "meter_event")}
    mixed = [*keys, Key("u", "si_demo", 4, (200, {}))]  # and a usage record beside them

    assert reconcile(mixed, [stripe_record("u", 4)], letters, meter_events=events) == []


def test_the_same_record_dead_lettered_twice_is_counted_once_and_shown() -> None:
    keys = [event_key("no", "2", 422, event_name="no_such_meter"), Key("x", "si_x", 1, (422, {}))]
    same = {"stripe": {"payload": {"value": "2"}}, "stripe_idempotency_key": identifier("no")}
    letters = {
        "no": letter("No active meter", "meter_event", **same) * 2,  # a refusal whose answer could not be stored
        "x": [
            *letter("No such subscription item", stripe={"quantity": 1}),
            *letter("No such subscription item", stripe={"quantity": 1, "action": "set"}),
        ],
    }

    problems = reconcile(keys, [], letters)

    assert problems == ["x: dead-lettered 2 times, as different records"]
    assert repeated_dead_letters(keys, letters) == [
        "no x2 (meter event, stripe_error)",
        "x x2 (usage record, stripe_error)",
    ]


def test_a_meter_events_value_is_sent_as_written() -> None:
    key = event_key("k", "12.50", 200)

    assert b'"value": "12.50"' in record_body(key)
    assert b'"value": 12.50}' in record_body(Key("k", "m", Decimal("12.50"), kind="meter_event", as_number=True))
    assert b'"value": "13.50"' in record_body(key, key.quantity + 1)
