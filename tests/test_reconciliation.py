"""Ledger reconciliation, for each record kind (usage records and Billing meter events): with random faults
everywhere, every accepted unit is in Stripe or with an operator, exactly once.

``RECONCILIATION_SEED=<n>`` reruns both with another seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import SUBSCRIPTION_ITEM, Deployment
from tests.harness.aws_clients import aws_client
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import poll_queue_once
from usage_reporter import wiring
from usage_reporter.dead_letters import Queues, redrive_all_by_copy

RECORDS = 30  # of each kind
INGEST_FAULTS = {  # what the one Stripe call of an ingest meets (no SDK retry here: see flaky)
    "none": [],
    "down": [Fault.server_error(503)],
    "rate_limited": [Fault.rate_limit()],
    "reset": [Fault.connection_reset()],
    "lost_answer": [Fault.lost_response()],
    "lost_answer_5xx": [Fault.lost_response(status=502)],
    "timeout": [Fault.latency(0.5)],  # over the 0.3 s Stripe timeout of this test
}
WORKER_FAULTS: list[Callable[[], Fault]] = [
    lambda: Fault.server_error(500),
    lambda: Fault.server_error(503),
    Fault.rate_limit,
    Fault.connection_reset,
    Fault.lost_response,
    lambda: Fault.lost_response(status=502),
]

# Each kind has a target Stripe refuses to the end, and one it refuses until the operator creates it, between
# the worker's drain and the redrive ("fix the cause first"): those records are then reported under a fresh
# Idempotency-Key (``<key>-r<n>``), a meter event keeping its identifier.
NEVER_EXISTED_ITEM, CREATED_LATER_ITEM = "si_neverExisted", "si_createdLater"
METER, UNKNOWN_METER, METER_CREATED_LATER = "api_requests", "no_such_meter", "meter_created_later"
CUSTOMER = "cus_TESTreconciled"


@dataclass(frozen=True)
class Sent:
    """What one caller sent, and the status it was told."""

    target: str  # the subscription item, or the meter's event name
    amount: Decimal  # the quantity, or the meter event's value
    body: str  # exactly the bytes sent: a replay sends them again
    status: int = 0


@dataclass(frozen=True)
class InStripe:
    """One record Stripe holds, traced back to the caller's key."""

    key: str  # the caller's idempotency key it belongs to
    idempotency_key: str  # the Stripe Idempotency-Key it was written under
    amount: Decimal
    stripe_id: str  # what the caller's answer names: the usage record's id, or the event's identifier


def stripe_settings(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, *, sdk_retries: int) -> Deployment:
    """Quick Stripe timeouts, and ``sdk_retries`` retries inside each Stripe call, for the ingest and the worker."""
    for name, value in {"STRIPE_TIMEOUT_SECONDS": "0.3", "STRIPE_MAX_NETWORK_RETRIES": str(sdk_retries)}.items():
        deployment.overrides[name] = value
        monkeypatch.setenv(name, value)
    wiring.reset()
    return deployment


@pytest.fixture
def flaky(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    deployment.overrides["RETRY_MAX_RECEIVE_COUNT"] = "4"  # some records exhaust their retries
    # No retry inside the SDK (its 0.5 s backoff would be most of the run, and test_ingest and test_exactly_once
    # cover it): every fault reaches the service's own handling, so that each kind's run takes about 10 s.
    return stripe_settings(deployment, monkeypatch, sdk_retries=0)


def seed(default: int) -> int:
    return int(os.environ.get("RECONCILIATION_SEED", default))


def target(i: int, refused_for_good: str, created_later: str, existing: str) -> str:
    """Where record ``i`` goes: one in 10 to the target refused for good, one in 15 to the one created later
    (fixed, not drawn, so that every seed has both refusals)."""
    if i % 10 == 3:
        return refused_for_good
    return created_later if i % 15 == 7 else existing


def report_under_faults(
    deployment: Deployment, rng: random.Random, path: str, make: Callable[[int], tuple[str, Sent]]
) -> dict[str, Sent]:
    """Each record meets a random Stripe fault on its way in; what each caller was told."""
    told: dict[str, Sent] = {}
    for i in range(RECORDS):
        key, sent = make(i)
        deployment.stripe.inject(*INGEST_FAULTS[rng.choice(list(INGEST_FAULTS))])
        response = deployment.post(path, sent.body)
        deployment.stripe.clear_faults()
        told[key] = replace(sent, status=response.status)
    assert {sent.status for sent in told.values()} <= {200, 202, 422}  # SQS was up: never a 503
    return told


def drain_through_a_flaky_worker(
    deployment: Deployment, rng: random.Random, midway: Callable[[], None] = lambda: None
) -> None:
    for round_ in range(6):  # the worker meets a flaky Stripe for a while...
        deployment.stripe.inject(*[rng.choice(WORKER_FAULTS)() for _ in range(rng.randint(3, 12))])
        deployment.run_retry_worker(rounds=1)
        if round_ == 2:
            midway()
    deployment.stripe.clear_faults()
    deployment.run_retry_worker()  # ...then a healthy one
    assert deployment.retry_messages() == []


def redrive(deployment: Deployment) -> int:
    moved = redrive_all_by_copy(Queues(deployment.dead_letter_queue_url, deployment.retry_queue_url), 100)
    deployment.run_retry_worker()
    assert deployment.retry_messages() == []
    return moved


def operator_redrives(deployment: Deployment, told: dict[str, Sent], refused_for_good: str) -> None:
    """Records that ran out of attempts may be in Stripe already (a lost answer): once Stripe is healthy and the
    cause of the refusals fixed, the operator redrives the dead-letter queue, and nothing is counted twice."""
    assert redrive(deployment) > 0  # one redrive: assert_reconciled checks that only lasting refusals remain


def assert_reconciled(
    deployment: Deployment,
    kind: str,
    path: str,
    told: dict[str, Sent],
    in_stripe: list[InStripe],
    billed: Decimal,
    letter_amount: Callable[[dict[str, Any]], Decimal],
    *,
    refused_for_good: str,
    fixed: str,
) -> None:
    """``in_stripe``: the records Stripe holds; ``billed``: Stripe's own total of them; ``refused_for_good``: the
    target Stripe refuses to the end; ``fixed``: the target refused at first, created before the redrive."""
    stripe_key, id_field = wiring.kinds()[kind].stripe_idempotency_key, wiring.kinds()[kind].id_field
    reported = Counter(entry.key for entry in in_stripe)
    assert max(reported.values()) == 1, f"a key was reported twice: {reported.most_common(3)}"
    for entry in in_stripe:  # under the record's own key, or the fresh key of a redrive after a refusal
        base = stripe_key("demo-client", entry.key)
        assert re.fullmatch(re.escape(base) + r"(-r\d+)?(-a)?", entry.idempotency_key), entry
        assert entry.idempotency_key == base or told[entry.key].target == fixed, entry
        assert entry.amount == told[entry.key].amount, (entry, told[entry.key])

    messages = [m["Body"] for m in deployment.dead_letters()]
    letters = {letter["idempotency_key"]: letter for letter in messages}
    held = Counter(letter["idempotency_key"] for letter in messages)
    assert max(held.values(), default=1) == 1, f"a key was dead-lettered twice: {held.most_common(3)}"
    for key, letter in letters.items():
        assert letter["kind"] == kind and letter["reason"]["message"], letter
        assert letter_amount(letter) == told[key].amount, (letter, told[key])
    assert not set(reported) & set(held), "a key is both reported and dead-lettered"
    assert set(reported) | set(held) == set(told), "an accepted record is neither in Stripe nor dead-lettered"
    # Once Stripe is healthy and the redrive done, only Stripe's lasting refusals stay with the operator, and a
    # record answered 422 is in Stripe only if the operator fixed its cause before redriving it.
    lasting = {key for key, sent in told.items() if sent.target == refused_for_good}
    assert set(held) == lasting, [json.dumps(letters.get(key)) for key in set(held) ^ lasting]
    assert all(told[key].status in (200, 202) or told[key].target == fixed for key in reported)

    dead_lettered = sum((letter_amount(letter) for letter in messages), Decimal(0))
    assert billed == sum((entry.amount for entry in in_stripe), Decimal(0))
    assert billed + dead_lettered == sum((sent.amount for sent in told.values()), Decimal(0))

    stripe_requests = len(deployment.stripe.requests)
    by_key = {entry.key: entry for entry in in_stripe}
    for key, sent in told.items():  # and each caller's replay tells the truth, from the dedup record alone
        replay = deployment.post(path, sent.body)
        if key in by_key:
            assert (replay.status, replay.body["status"]) == (200, "reported"), (key, replay)
            assert replay.body[id_field] == by_key[key].stripe_id, (key, replay)
        else:
            assert (replay.status, replay.body["status"]) == (422, "rejected"), (key, replay)
            assert replay.body["error"]["message"] == letters[key]["reason"]["message"], (key, replay)
    assert len(deployment.stripe.requests) == stripe_requests, "a replay called Stripe"


@pytest.mark.slow
def test_every_accepted_usage_record_is_in_stripe_or_dead_lettered_exactly_once(flaky: Deployment) -> None:
    rng = random.Random(seed(20261122))

    def make(i: int) -> tuple[str, Sent]:
        quantity, item = rng.randint(1, 1000), target(i, NEVER_EXISTED_ITEM, CREATED_LATER_ITEM, SUBSCRIPTION_ITEM)
        body = {"idempotency_key": f"rec-{i}", "subscription_item": item, "quantity": quantity}
        return f"rec-{i}", Sent(item, Decimal(quantity), json.dumps(body))

    told = report_under_faults(flaky, rng, "/v1/usage", make)
    drain_through_a_flaky_worker(flaky, rng)
    flaky.stripe.add_subscription_items(CREATED_LATER_ITEM)
    operator_redrives(flaky, told, NEVER_EXISTED_ITEM)

    base_key = {wiring.kinds()["usage_record"].stripe_idempotency_key("demo-client", key): key for key in told}
    in_stripe = [
        InStripe(
            base_key[re.sub(r"(-r\d+)?(-a)?$", "", r["idempotency_key"])],
            r["idempotency_key"],
            Decimal(r["quantity"]),
            r["id"],
        )
        for r in flaky.stripe.ledger
    ]
    billed = Decimal(sum(flaky.stripe.total_usage(item) for item in (SUBSCRIPTION_ITEM, CREATED_LATER_ITEM)))
    assert_reconciled(
        flaky,
        "usage_record",
        "/v1/usage",
        told,
        in_stripe,
        billed,
        lambda letter: Decimal(letter["stripe"]["quantity"]),
        refused_for_good=NEVER_EXISTED_ITEM,
        fixed=CREATED_LATER_ITEM,
    )


def meter_value(rng: random.Random) -> Decimal:
    """A value with 0 to 2 decimals, trailing zeros kept (12, 12.5, 0.10, 12.50)."""
    return Decimal(rng.randint(1, 100_000)).scaleb(-rng.choice([0, 1, 1, 2]))


@pytest.mark.slow
def test_every_accepted_meter_event_is_in_stripe_or_dead_lettered_exactly_once(flaky: Deployment) -> None:
    rng = random.Random(seed(20261123))
    flaky.stripe.add_meter(METER)
    flaky.stripe.add_customers(CUSTOMER)

    def make(i: int) -> tuple[str, Sent]:
        value, name = meter_value(rng), target(i, UNKNOWN_METER, METER_CREATED_LATER, METER)
        body = {"idempotency_key": f"ev-{i}", "event_name": name, "customer": CUSTOMER, "value": str(value)}
        raw = json.dumps(body)
        if rng.random() < 0.5:  # a JSON number, not a string: parsed as a decimal, sent as written
            raw = raw.replace(f'"{value}"', str(value))
        return f"ev-{i}", Sent(name, value, raw)

    told = report_under_faults(flaky, rng, "/v1/meter_events", make)
    # Midway, Stripe forgets every Idempotency-Key: an event's identifier alone keeps it once (a resent event that
    # Stripe holds is refused as "already exists", which the service takes as delivered).
    drain_through_a_flaky_worker(flaky, rng, midway=flaky.stripe.forget_idempotency_keys)
    flaky.stripe.add_meter(METER_CREATED_LATER)
    operator_redrives(flaky, told, UNKNOWN_METER)

    identifier = {wiring.kinds()["meter_event"].stripe_idempotency_key("demo-client", key): key for key in told}
    events = flaky.stripe.meter_events
    assert all(e.cancelled_at is None and e.customer == CUSTOMER and e.identifier in identifier for e in events)
    in_stripe = [InStripe(identifier[e.identifier], e.idempotency_key or "", e.value, e.identifier) for e in events]
    billed = sum((flaky.stripe.meter_total(name, CUSTOMER) for name in (METER, METER_CREATED_LATER)), Decimal(0))
    assert_reconciled(
        flaky,
        "meter_event",
        "/v1/meter_events",
        told,
        in_stripe,
        billed,
        lambda letter: Decimal(letter["stripe"]["payload"]["value"]),
        refused_for_good=UNKNOWN_METER,
        fixed=METER_CREATED_LATER,
    )


def lose_a_refusal(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, kind: str) -> tuple[str, dict[str, Any]]:
    """A record the worker gave up on: Stripe refused it (and saved the refusal for its key), but the answer was
    lost, so the record was dead-lettered as "gave up", not refused. Its path and body."""
    flaky = stripe_settings(deployment, monkeypatch, sdk_retries=1)  # a lost answer, then the SDK's retry
    flaky.overrides["RETRY_MAX_RECEIVE_COUNT"] = "1"
    flaky.stripe.add_customers(CUSTOMER)
    if kind == "usage_record":
        path, body = "/v1/usage", {"idempotency_key": "k", "subscription_item": CREATED_LATER_ITEM, "quantity": 3}
    else:
        path = "/v1/meter_events"
        body = {"idempotency_key": "k", "event_name": METER_CREATED_LATER, "customer": CUSTOMER, "value": "2.5"}
    flaky.stripe.inject(Fault.connection_reset(), times=2)
    assert flaky.post(path, body).status == 202
    flaky.stripe.inject(Fault.lost_response(status=502), Fault.server_error(500))
    flaky.run_retry_worker()
    flaky.stripe.clear_faults()
    [letter] = flaky.dead_letters()
    assert letter["Body"]["reason"]["message"].startswith("gave up")
    return path, body


@pytest.mark.parametrize("kind", ["usage_record", "meter_event"])
def test_a_redrive_after_a_fix_delivers_a_record_whose_refusal_was_lost(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path, body = lose_a_refusal(deployment, monkeypatch, kind)
    if kind == "usage_record":  # the operator's fix, then one redrive
        deployment.stripe.add_subscription_items(CREATED_LATER_ITEM)
    else:
        deployment.stripe.add_meter(METER_CREATED_LATER)
    deployment.stripe.requests.clear()
    assert redrive(deployment) == 1

    # Stripe replayed the old refusal under the record's key; asked again under a fresh key, it took the record.
    assert deployment.dead_letters() == [], deployment.dead_letters()[0]["Body"]["reason"]
    assert len(deployment.stripe.ledger) + len(deployment.stripe.meter_events) == 1
    assert len(deployment.stripe.requests) == 2
    assert deployment.post(path, body).body["status"] == "reported"


@pytest.mark.parametrize("kind", ["usage_record", "meter_event"])
def test_a_redrive_without_a_fix_asks_stripe_once_more_and_keeps_the_refusal(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path, body = lose_a_refusal(deployment, monkeypatch, kind)
    deployment.stripe.requests.clear()
    assert redrive(deployment) == 1

    # The replayed refusal, then the same refusal under a fresh key: the record goes back to the operator with
    # Stripe's reason, once, and the caller is told it was rejected.
    assert len(deployment.stripe.requests) == 2
    [letter] = deployment.dead_letters()
    reason = letter["Body"]["reason"]  # 404 no such item, or 400 no such meter
    assert (reason["type"], reason["http_status"] // 100) == ("stripe_error", 4) and "gave up" not in reason["message"]
    assert deployment.stripe.ledger == [] and deployment.stripe.meter_events == []
    replay = deployment.post(path, body)
    assert (replay.status, replay.body["status"]) == (422, "rejected")


def test_two_copies_that_meet_the_same_replayed_refusal_at_once_report_the_record_once(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of one dead letter (SQS delivers at least once; a redrive that died between its send and its
    delete leaves one in each queue) processed at the same time: both meet Stripe's replayed refusal, and both
    ask again under the same next key, so Stripe takes the record once."""
    lose_a_refusal(deployment, monkeypatch, "usage_record")
    deployment.stripe.add_subscription_items(CREATED_LATER_ITEM)
    [letter] = deployment.dead_letters()
    for _ in range(2):
        aws_client("sqs").send_message(QueueUrl=deployment.retry_queue_url, MessageBody=json.dumps(letter["Body"]))
    # The first copy's first request waits in front of Stripe; meanwhile the second copy reads its write-ahead.
    deployment.stripe.inject(Fault.latency(0.5))
    timeout = deployment.stack.function_timeout("RetryFunction")
    with deployment.function_environment("RetryFunction"), ThreadPoolExecutor(2) as pool:
        first = pool.submit(poll_queue_once, deployment.retry_queue_url, "retry", 1, timeout)
        time.sleep(0.2)
        second = pool.submit(poll_queue_once, deployment.retry_queue_url, "retry", 1, timeout)
        first.result(), second.result()

    [reported] = deployment.stripe.ledger
    base = wiring.kinds()["usage_record"].stripe_idempotency_key("demo-client", "k")
    assert reported["idempotency_key"] == f"{base}-a"
    deployment.run_retry_worker()
    assert len(deployment.stripe.ledger) == 1
    assert [m["Body"] for m in deployment.dead_letters()] == [letter["Body"]]  # the original copy, not redriven
