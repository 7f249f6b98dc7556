"""The fault-and-load check (tests/harness/fault_load.py): its short form passes, and its reconciliation
catches what it is there to catch, for usage records, meter events and meter events in streamed batches."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from tests.harness.fake_stripe import MeterError, MeterEvent
from tests.harness.fault_load import (
    ErrorReports,
    Key,
    batch_body,
    make_jobs,
    make_keys,
    parse_kinds,
    reconcile,
    record_body,
    repeated_dead_letters,
)
from tests.harness.stack import ROOT
from usage_reporter.config import Settings
from usage_reporter.kinds import MeterEvents, UsageRecords


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
    assert '{"_aws"' not in run.stdout  # the service's metrics are not mixed into the summary
    for kind, count in (("usage records", 11), ("meter events", 10)):  # each kind was sent (and the killed record)
        assert re.search(rf"^{kind}: +{count} keys, .*; in Stripe [1-9]", run.stdout, re.MULTILINE), run.stdout
    batched = (
        r"^batched events: +10 keys in \d+ batch(es)?, answered \{.*'202 accepted'.*\}, replayed \{.*'422 rejected'"
    )
    assert re.search(batched + r".*; in Stripe [1-9]", run.stdout, re.MULTILINE), run.stdout
    # Stripe found some streamed events invalid, reported them (answered 503 during an outage, then again), and
    # the service traced every one of them.
    reports = (
        r"^error reports: +Stripe found [1-9]\d* streamed events invalid; .* 503: .*rejected [1-9]\d*, unattributed 0$"
    )
    assert re.search(reports, run.stdout, re.MULTILINE), run.stdout


def stripe_record(key: str, quantity: int, suffix: str = "") -> dict[str, object]:
    return {"idempotency_key": UsageRecords().stripe_idempotency_key("demo-client", key) + suffix, "quantity": quantity}


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


def batched_key(name: str, value: str, status: int, said: str, customer: str = "cus_demo") -> Key:
    return Key(
        name, "api_requests", Decimal(value), (status, {"status": said}), kind="meter_event_batch", customer=customer
    )


def meter_error(key: str, code: str = "meter_event_customer_not_found") -> MeterError:
    return MeterError("api_requests", "mtr_test_1", code, "No such customer: 'cus_x'", identifier(key), 1_795_000_000)


def reported_later(code: str = "meter_event_customer_not_found") -> list[dict[str, Any]]:
    """The letter the event destination writes: Stripe's code, no http_status."""
    reason = {"type": "stripe_error", "code": code, "message": "No such customer: 'cus_x' (reported later)"}
    return [{"kind": "meter_event", "reason": reason}]


def test_batched_events_reconcile_by_identifier_with_letters_of_the_meter_event_kind() -> None:
    keys = [
        batched_key("a", "2.50", 202, "accepted"),  # streamed, valid: in Stripe (no Idempotency-Key: v2)
        batched_key("q", "3", 200, "reported"),  # queued, then the worker's v1 call
        batched_key("bad", "4", 422, "rejected", customer="cus_unknown"),  # Stripe reported it later
    ]
    streamed = meter_event("a", "2.5")
    streamed.via, streamed.idempotency_key = "v2", None
    letters = {"bad": reported_later()}

    problems = reconcile(
        keys, [], letters, meter_events=[streamed, meter_event("q", "3")], meter_errors=[meter_error("bad")]
    )

    assert problems == []
    assert ErrorReports(answers=[{"rejected": 1, "unattributed": 0}]).problems(keys, letters) == []


def test_a_batched_event_finally_accepted_must_be_in_stripe_and_not_dead_lettered() -> None:
    keys = [
        batched_key("lost", "1", 202, "accepted"),
        batched_key("both", "2", 202, "accepted"),
        batched_key("queued", "3", 202, "queued"),  # held for an operator: a letter is enough
    ]
    letters = {"both": letter("gave up", "meter_event"), "queued": letter("gave up", "meter_event")}

    problems = reconcile(keys, [], letters, meter_events=[meter_event("both", "2")])

    assert problems == [
        "lost: finally accepted but not in Stripe",
        "both: finally accepted but in Stripe and dead-lettered",
        "batched event values: callers were told 6, Stripe + dead letters hold 5",  # the lost one's 1
    ]


def test_every_event_stripe_found_invalid_is_a_callers_rejected_and_dead_lettered_with_stripes_code() -> None:
    keys = [
        batched_key("still", "1", 202, "accepted"),  # the report did not change its answer
        batched_key("nowhere", "2", 422, "rejected"),  # rejected, but no letter
        batched_key("wrong", "3", 422, "rejected"),  # dead-lettered with another code
        batched_key("v1", "4", 422, "rejected"),  # refused by the worker's v1 call first: Stripe's v1 refusal
    ]
    errors = [meter_error(name) for name in ("still", "nowhere", "wrong", "v1")] + [meter_error("stranger")]
    v1_refusal = letter("No such customer: 'cus_x'", "meter_event", stripe={"payload": {"value": "4"}})
    v1_refusal[0]["reason"]["http_status"] = 400
    letters = {"wrong": reported_later("no_meter"), "v1": v1_refusal}

    problems = reconcile(keys, [], letters, meter_errors=errors)

    assert any(
        "still: Stripe found it invalid (meter_event_customer_not_found), its final answer 202" in p for p in problems
    )
    assert any("still: Stripe found it invalid, but it is not dead-lettered" in p for p in problems)
    assert any("nowhere: answered 422 rejected but not dead-lettered" in p for p in problems)
    assert any("wrong: dead-lettered by an error report with code 'no_meter'" in p for p in problems)
    assert any(
        p.startswith("Stripe found a meter event meter-event-") and "which no caller sent" in p for p in problems
    )
    assert not any(p.startswith("v1:") for p in problems)


def test_error_reports_must_be_acknowledged_traced_and_counted_once() -> None:
    keys = [batched_key("bad", "4", 422, "rejected"), batched_key("worse", "5", 422, "rejected")]
    letters = {"bad": reported_later(), "worse": reported_later()}
    reports = ErrorReports(answers=[{"rejected": 1, "unattributed": 1}], unacknowledged=1)

    assert reports.problems(keys, letters) == [
        "1 error report(s) never acknowledged",
        "the event destination could not trace 1 invalid event(s)",
        "the event destination rejected 1 keys, 2 are dead-lettered",
    ]


def test_batches_hold_2_to_10_events_in_key_order_the_first_3_with_an_unknown_customer() -> None:
    rng = random.Random(5)
    keys = make_keys(5, 90, ("usage_record", "meter_event_batch"), rng)

    jobs = make_jobs(keys, rng)

    batches = [job for job in jobs if job[0].kind == "meter_event_batch"]
    assert [key for batch in batches for key in batch] == [key for key in keys if key.kind == "meter_event_batch"]
    assert all(2 <= len(batch) <= 10 for batch in batches) and len(batches[0]) == 3
    assert "cus_unknownToStripe" in {key.customer for key in batches[0]}
    assert all(len(job) == 1 for job in jobs if job[0].kind == "usage_record")
    assert [job[0].name for job in jobs] == sorted((job[0].name for job in jobs), key=lambda n: int(n.split("-")[-1]))


def test_a_batch_is_its_events_as_sent_alone_and_a_conflict_changes_one() -> None:
    one, two = batched_key("k1", "12.50", 202, "accepted"), batched_key("k2", "3", 202, "accepted")

    assert batch_body([one, two]) == b'{"events": [' + record_body(one) + b", " + record_body(two) + b"]}"
    assert b'"value": "4"' in batch_body([one, two], other=two) and b'"value": "12.50"' in batch_body([one, two], two)


def test_kinds_accept_the_batched_kind() -> None:
    assert parse_kinds("meter_event_batch,usage_record") == ("usage_record", "meter_event_batch")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_kinds("meter_event_batches")
