"""Ledger reconciliation: with random faults everywhere, every accepted unit is in Stripe or with an
operator, exactly once."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

import pytest

from tests.conftest import SUBSCRIPTION_ITEM, Deployment, record
from tests.harness.fake_stripe import Fault
from usage_reporter import wiring
from usage_reporter.dead_letters import Queues, redrive_all_by_copy
from usage_reporter.stripe_gateway import stripe_idempotency_key

RECORDS = 40
INGEST_FAULTS = {
    "none": [],
    "down": [Fault.server_error(503)] * 3,
    "rate_limited": [Fault.rate_limit()],
    "resets": [Fault.connection_reset()] * 3,
    "lost_answer": [Fault.lost_response()],
    "lost_then_down": [Fault.lost_response(), Fault.server_error(500), Fault.server_error(500)],
    "timeout": [Fault.latency(0.5)] * 3,  # over the 0.3 s Stripe timeout of this test
}
WORKER_FAULTS: list[Callable[[], Fault]] = [
    lambda: Fault.server_error(500),
    lambda: Fault.server_error(503),
    Fault.rate_limit,
    Fault.connection_reset,
    Fault.lost_response,
    lambda: Fault.lost_response(status=502),
]


@pytest.mark.slow
def test_every_accepted_unit_is_in_stripe_or_dead_lettered_exactly_once(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261122)
    deployment.overrides["RETRY_MAX_RECEIVE_COUNT"] = "4"  # some records exhaust their retries
    deployment.overrides["STRIPE_TIMEOUT_SECONDS"] = "0.3"  # timeouts, quickly
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "0.3")
    wiring.reset()
    told: dict[str, tuple[int, int]] = {}  # key -> (HTTP status, quantity)
    for i in range(RECORDS):
        key, quantity = f"rec-{i}", rng.randint(1, 1000)
        item = "si_neverExisted" if rng.random() < 0.1 else SUBSCRIPTION_ITEM
        deployment.stripe.inject(*INGEST_FAULTS[rng.choice(list(INGEST_FAULTS))])
        response = deployment.post("/v1/usage", record(key, quantity=quantity, subscription_item=item))
        deployment.stripe.clear_faults()
        told[key] = (response.status, quantity)
    assert {status for status, _ in told.values()} <= {200, 202, 422}  # SQS was up: never a 503

    for _ in range(6):  # the worker meets a flaky Stripe for a while...
        deployment.stripe.inject(*[rng.choice(WORKER_FAULTS)() for _ in range(rng.randint(3, 12))])
        deployment.run_retry_worker(rounds=1)
    deployment.stripe.clear_faults()
    deployment.run_retry_worker()  # ...then a healthy one
    assert deployment.retry_messages() == []
    # Records that ran out of attempts may be in Stripe already (a lost answer): the operator redrives
    # the dead-letter queue once Stripe is healthy, and Stripe replays instead of counting twice.
    assert redrive_all_by_copy(Queues(deployment.dead_letter_queue_url, deployment.retry_queue_url), 100) > 0
    deployment.run_retry_worker()

    assert deployment.retry_messages() == []
    accepted_units = sum(quantity for _, quantity in told.values())
    in_stripe = sum(r["quantity"] for r in deployment.stripe.ledger)
    letters = deployment.dead_letters()
    dead_lettered = sum(m["Body"]["stripe"]["quantity"] for m in letters)
    assert in_stripe + dead_lettered == accepted_units

    base_key = {stripe_idempotency_key("demo-client", key): key for key in told}
    reported = Counter(base_key[re.sub(r"-r\d+$", "", r["idempotency_key"])] for r in deployment.stripe.ledger)
    held = Counter(m["Body"]["idempotency_key"] for m in letters)
    assert max(reported.values()) == 1, "a key was reported twice"
    assert max(held.values(), default=1) == 1, "a key was dead-lettered twice"
    assert not set(reported) & set(held), "a key is both reported and dead-lettered"
    assert set(reported) | set(held) == set(told)
    for key in reported:  # and each caller's replay tells the truth
        replay = deployment.post("/v1/usage", record(key, quantity=told[key][1]))
        assert replay.body["status"] == "reported", (key, replay)
