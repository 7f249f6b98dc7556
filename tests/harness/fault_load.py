"""A rerunnable fault-and-load check of the whole service, on this machine only (127.0.0.1).

    python -m tests.harness.fault_load                  # the full run (make fault-load)
    python -m tests.harness.fault_load --keys 30 --clients 4 --seconds 60   # the short form the tests run
    python -m tests.harness.fault_load --kinds meter_event --seed 7         # meter events only, a given seed
    python -m tests.harness.fault_load --kinds meter_event_batch --seed 7   # streamed batches only

It starts the local stack (moto behind an AWS fault proxy, the fake Stripe, the API and the retry
worker, as ``make run`` does) and drives the API with concurrent signed callers that behave as the
README tells them to (retry 409 in progress, 503 and network errors with the same bytes). The keys are
of three kinds in turn (``--kinds``): usage records to ``POST /v1/usage``, Billing meter events (decimal
values, two customers) to ``POST /v1/meter_events``, and meter events in batches of 2 to 10 to
``POST /v1/meter_events/batch``, which go to Stripe through the v2 meter event stream (answered
``202 accepted``: Stripe validates them later). A batch is retried whole, with the same bytes, while one
of its events is answered 503 or 409 in progress; some of its events are ones Stripe finds invalid only
later (a customer or an event name it does not know). Meanwhile:
- the fake Stripe injects 5xx, 429, resets, delays and answers lost after it wrote the record;
- SQS (SendMessage) and DynamoDB (PutItem, UpdateItem) fail for short windows;
- sequential and concurrent duplicates, and conflicting payloads, are sent for some keys;
- one request is handled by a separate instance that is killed (SIGKILL) while Stripe holds the answer.
Then the faults stop, the retry worker drains the queue, and Stripe does what it does later: it validates
the streamed events and posts its error reports (signed thin events) to ``POST /v1/stripe/events`` until
each is acknowledged (the first round meets an SQS or DynamoDB outage: 503, delivered again). Each batch
is sent once more, and its replay is each event's final answer. Both of Stripe's ledgers are reconciled
(usage records by Idempotency-Key, meter events by identifier): every key answered 200/202 is in Stripe
exactly once or in the dead-letter queue with its reason (a batched event finally ``accepted`` or
``reported``: in Stripe), no key is in Stripe twice, 422-rejected keys are not in Stripe, every event
Stripe found invalid is dead-lettered with Stripe's code and finally ``rejected``, the event destination
traced every invalid event (``unattributed`` 0), and the quantities (meter values, as decimals) add up,
per kind. Bounded in requests and time; exits non-zero on any discrepancy.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import random
import re
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TextIO

from tests.harness.aws_clients import aws_client
from usage_reporter.auth import sign
from usage_reporter.config import Settings
from usage_reporter.kinds import MeterEvents, UsageRecords

from .fake_stripe import FakeStripe, Fault, MeterError, MeterEvent
from .instances import start_instance
from .lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, LOCAL_STRIPE_WEBHOOK_SECRET
from .local_api import DEMO_CUSTOMER, DEMO_METER, free_port, serve, start_backends

KindName = Literal["usage_record", "meter_event", "meter_event_batch"]
KINDS: tuple[KindName, ...] = ("usage_record", "meter_event", "meter_event_batch")
BATCH: KindName = "meter_event_batch"  # meter events sent in batches, streamed to Stripe (v2)
PATHS: dict[KindName, str] = {
    "usage_record": "/v1/usage",
    "meter_event": "/v1/meter_events",
    "meter_event_batch": "/v1/meter_events/batch",
}
LABELS: dict[KindName, str] = {
    "usage_record": "usage records",
    "meter_event": "meter events",
    "meter_event_batch": "batched events",
}
# The service's record kind (in dead letters, and for the Stripe identifier): a batched event is a meter event.
SERVICE_KINDS: dict[KindName, str] = {
    "usage_record": "usage_record",
    "meter_event": "meter_event",
    "meter_event_batch": "meter_event",
}
BATCH_SIZES = (2, 10)  # events a batch, at least and at most
CALM_BATCH = 3  # the first batch's events: sent before the chaos, an unknown customer among them
ITEMS = ("si_demo", "si_demo2")
UNKNOWN_ITEM = "si_doesNotExist"  # Stripe refuses it: 422 rejected, dead-letter queue
KILL_ITEM = "si_killed"  # only the killed instance's request goes there
CUSTOMERS = (DEMO_CUSTOMER, "cus_loadSecond")  # the demo meter's customers (the second is added by the run)
UNKNOWN_METER = "no_such_meter"  # no meter has this event name: Stripe refuses it, as UNKNOWN_ITEM
# Stripe does not know this customer: v1 refuses the event at once; the stream takes it and Stripe reports it later.
UNKNOWN_CUSTOMER = "cus_unknownToStripe"
STRIPE_EVENTS_PATH = "/v1/stripe/events"  # the event destination: Stripe's reports of invalid streamed events
LAMBDA_TIMEOUT_SECONDS = 6.0  # short, so the lock of a processing that died expires within the run
# What the functions run with here: short Stripe timeouts so that a call with its retries fits in the
# short Lambda timeout, and no backoff floor, so that the worker can drain quickly once faults stop.
FUNCTION_SETTINGS = {
    "POWERTOOLS_LOG_LEVEL": "CRITICAL",  # the run prints its own summary
    "POWERTOOLS_METRICS_DISABLED": "true",
    "STRIPE_TIMEOUT_SECONDS": "1",
    "STRIPE_BUDGET_RESERVE_SECONDS": "0.5",
    "RETRY_BASE_DELAY_SECONDS": "0",
    "RETRY_MAX_DELAY_SECONDS": "2",
}


Answer = tuple[int, dict[str, Any]]  # an answer's status and body (a batched event's: its result)


@dataclass
class Key:
    name: str
    item: str  # a usage record's subscription item, or a meter event's event_name
    quantity: int | Decimal  # its quantity, or the meter event's value (sent exactly as written)
    final: Answer | None = None  # the caller's final answer (status, body)
    kind: KindName = "usage_record"
    customer: str = ""  # a meter event's customer
    as_number: bool = False  # a meter event's value written as a JSON number (12.50), not a string ("12.50")
    batch: int | None = None  # a batched event's batch (its number in the run)
    told: Answer | None = None  # a batched event's answer by the end of the drive ("final": on
    # the replay after Stripe's error reports)


@dataclass
class Results:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(seconds)


class Caller:
    """A calling service that follows the README's retry rules, bounded in time."""

    def __init__(self, url: str, results: Results, deadline: float) -> None:
        self._url = url
        self._results = results
        self._deadline = deadline

    def post_once(self, body: bytes, path: str = "/v1/usage") -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {
            "Content-Type": "application/json",
            "X-Usage-Client": DEMO_CLIENT_ID,
            "X-Usage-Signature": sign(DEMO_CLIENT_SECRET, body),
        }
        request = urllib.request.Request(self._url + path, data=body, method="POST", headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, answer_headers = response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as error:
            status, raw, answer_headers = error.code, error.read(), dict(error.headers.items())
        except OSError:
            self._results.record(0, time.perf_counter() - started)
            return 0, {}, {}
        self._results.record(status, time.perf_counter() - started)
        return status, answer_headers, json.loads(raw)

    def report(self, body: bytes, path: str = "/v1/usage") -> tuple[int, dict[str, Any]] | None:
        """Send until a final answer (not 409 in progress, not 503, not a network error) or the deadline."""
        while time.monotonic() < self._deadline:
            status, _, answer = self.post_once(body, path)
            in_progress = status == 409 and answer.get("error", {}).get("type") == "idempotency_in_progress"
            if status in (0, 503) or in_progress:
                time.sleep(0.3)  # Retry-After, shortened: the run is bounded
                continue
            return status, answer
        return None

    def report_batch(self, body: bytes, keys: Sequence[Key]) -> list[Answer] | None:
        """Send a batch until each of its events has a final answer (none 503 or 409 in progress: else the same
        bytes again, and the events answered before replay), or the deadline; each event's (status, result)."""
        names = [key.name for key in keys]
        while time.monotonic() < self._deadline:
            status, _, answer = self.post_once(body, PATHS[BATCH])
            results = answer.get("results") if status == 200 else None
            if status in (0, 503) or (results and any(_retry_event(result) for result in results)):
                time.sleep(0.3)
                continue
            if not isinstance(results, list) or [r.get("idempotency_key") for r in results] != names:
                with self._results.lock:
                    self._results.unexpected.append(f"batch of {', '.join(names)}: answered {status} {answer}")
                return None
            return [(int(result["status_code"]), result) for result in results]
        return None


def _retry_event(result: Mapping[str, Any]) -> bool:
    """Whether a batch's answer for one event says to send it again (503, or 409 in progress)."""
    in_progress = result.get("error", {}).get("type") == "idempotency_in_progress"
    return bool(result.get("status_code") == 503 or (result.get("status_code") == 409 and in_progress))


def record_body(key: Key, quantity: int | Decimal | None = None) -> bytes:
    """The key's record, or meter event (``quantity``: another amount, for a conflicting payload)."""
    amount = key.quantity if quantity is None else quantity
    if key.kind in ("meter_event", BATCH):
        event = {"idempotency_key": key.name, "event_name": key.item, "customer": key.customer, "value": str(amount)}
        raw = json.dumps(event)
        # A JSON number is parsed as a decimal, never a binary float, and sent to Stripe as written.
        return (raw.replace(f'"{amount}"', str(amount)) if key.as_number else raw).encode()
    record = {"idempotency_key": key.name, "subscription_item": key.item, "quantity": amount}
    return json.dumps(record).encode()  # timestamp omitted: "now", the case that needs the delivery plan


def batch_body(keys: Sequence[Key], other: Key | None = None) -> bytes:
    """A batch of meter events, each written as ``record_body`` writes it (``other``: its value + 1, a conflict)."""
    events = [record_body(key, key.quantity + 1 if key is other else None) for key in keys]
    return b'{"events": [' + b", ".join(events) + b"]}"


def meter_value(rng: random.Random) -> Decimal:
    """A meter event's value with 0 to 2 decimals, trailing zeros kept (12, 12.5, 0.10, 12.50)."""
    return Decimal(rng.randint(1, 100_000)).scaleb(-rng.choice([0, 1, 2]))


def make_keys(seed: int, count: int, kinds: Sequence[KindName], rng: random.Random) -> list[Key]:
    """``count`` keys, the kinds in turn; one in 13 goes to a target Stripe refuses (422, dead-letter queue), and
    one in 6 batched events to a customer Stripe does not know (which the stream takes: Stripe reports it later)."""
    keys = []
    for i in range(count):
        kind, refused = kinds[i % len(kinds)], i % 13 == 5
        if kind in ("meter_event", BATCH):
            name = UNKNOWN_METER if refused else DEMO_METER
            customer, value, as_number = rng.choice(CUSTOMERS), meter_value(rng), rng.random() < 0.5
            if kind == BATCH and (i // len(kinds)) % 6 == 2:
                customer = UNKNOWN_CUSTOMER
            keys.append(Key(f"load-{seed}-{i}", name, value, kind=kind, customer=customer, as_number=as_number))
        else:
            item = UNKNOWN_ITEM if refused else rng.choice(ITEMS)
            keys.append(Key(f"load-{seed}-{i}", item, rng.randint(1, 1000)))
    return keys


def make_jobs(keys: list[Key], rng: random.Random) -> list[list[Key]]:
    """What callers send, in key order: each key alone, except batched events, 2 to 10 to a batch (numbered). The
    first batch has 3 events, one for a customer Stripe does not know (see ``make_keys``): it is sent before the
    chaos starts (``CALM_BATCH``), so that its stream request reaches Stripe and Stripe reports that event later."""
    batched = [key for key in keys if key.kind == BATCH]
    batches: list[list[Key]] = []
    while batched:
        size = min(CALM_BATCH if not batches else rng.randint(*BATCH_SIZES), len(batched))
        if len(batched) - size == 1:  # never leave one alone
            size += 1 if size < BATCH_SIZES[1] else -1
        batches.append(batched[:size])
        batched = batched[size:]
    for number, batch in enumerate(batches):
        for key in batch:
            key.batch = number
    jobs = [[key] for key in keys if key.kind != BATCH] + batches
    order = {key.name: i for i, key in enumerate(keys)}
    return sorted(jobs, key=lambda job: order[job[0].name])


def inject_chaos(backends: dict[str, Any], stop: threading.Event, rng: random.Random) -> None:
    """A fault for about a third of Stripe's requests, and short SQS/DynamoDB outages, until ``stop``."""
    stripe, aws = backends["fake_stripe"], backends["aws_faults"]
    stripe_faults: list[Callable[[], Fault]] = [
        lambda: Fault.server_error(rng.choice([500, 502, 503])),
        Fault.rate_limit,
        Fault.connection_reset,
        lambda: Fault.latency(rng.uniform(0.05, 0.3)),
        lambda: Fault.lost_response(rng.choice([0, 500])),
    ]
    outages = ["sqs:SendMessage", "dynamodb:UpdateItem", "dynamodb:PutItem"]
    seen = len(stripe.requests)
    next_outage, turn = time.monotonic() + 0.5, 0
    while not stop.wait(0.02):
        now_seen = len(stripe.requests)
        for _ in range(now_seen - seen):  # one draw per request Stripe received: faults track the load
            if rng.random() < 0.3:
                stripe.inject(rng.choice(stripe_faults)())
        seen = now_seen
        if time.monotonic() >= next_outage:  # each AWS operation in turn, down for 0.2 to 0.8 s
            operation = outages[turn % len(outages)]
            aws.fail(operation)
            stop.wait(rng.uniform(0.2, 0.8))
            aws.clear(operation)
            next_outage, turn = time.monotonic() + rng.uniform(0.5, 1.5), turn + 1


def kill_an_instance_mid_call(backends: dict[str, Any], key: Key) -> None:
    """A separate instance takes the request; Stripe writes it and holds the answer; the instance dies."""
    stripe = backends["fake_stripe"]
    stripe.inject(Fault.stall_after_commit(30, subscription_item=KILL_ITEM))
    env = {**os.environ, **backends["env"]}
    instance = start_instance(
        env,
        "/v1/usage",
        record_body(key),
        (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
        timeout_seconds=LAMBDA_TIMEOUT_SECONDS,
    )
    deadline = time.monotonic() + 60
    while not any(r["subscription_item"] == KILL_ITEM for r in stripe.ledger) and time.monotonic() < deadline:
        time.sleep(0.05)
    instance.kill()
    instance.join(10)


def queue_depth(url: str) -> int:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = aws_client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def dead_letters(url: str) -> dict[str, list[dict[str, Any]]]:
    """The dead-letter queue's records by idempotency key, each key's every message (read once each, with a
    short visibility, then released)."""
    sqs = aws_client("sqs")
    found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    seen: set[str] = set()
    for _ in range(50):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        fresh = [message for message in batch if message["MessageId"] not in seen]
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            body = json.loads(message["Body"])
            found[str(body.get("idempotency_key", message["MessageId"]))].append(body)
    return dict(found)


@functools.cache
def _kinds() -> tuple[UsageRecords, MeterEvents]:
    # Only their Stripe keys are used, which no setting changes: no environment needed.
    return UsageRecords(), MeterEvents(Settings.model_construct())


def stripe_key(key: Key) -> str:
    """The key's Stripe Idempotency-Key (a meter event's identifier too), as the service derives it."""
    usage_records, meter_events = _kinds()
    kind = meter_events if SERVICE_KINDS[key.kind] == "meter_event" else usage_records
    return kind.stripe_idempotency_key(DEMO_CLIENT_ID, key.name)


@dataclass(frozen=True)
class Held:
    """One record in one of Stripe's ledgers."""

    idempotency_key: str  # the Idempotency-Key Stripe wrote it under
    amount: Decimal
    cancelled: bool = False
    streamed: bool = False  # a meter event from the v2 stream: no Idempotency-Key, only its identifier


class StripeHoldings:
    """Stripe's two ledgers by the record they belong to: usage records by Idempotency-Key (a redrive after a
    refusal uses ``<key>-r<n>``, the same record), meter events by identifier (a redrive keeps it)."""

    def __init__(self, ledger: Sequence[Mapping[str, Any]], meter_events: Sequence[MeterEvent]) -> None:
        self.usage: dict[str, list[Held]] = collections.defaultdict(list)
        for entry in ledger:
            key = str(entry["idempotency_key"])
            self.usage[re.sub(r"-r\d+$", "", key)].append(Held(key, Decimal(entry["quantity"])))
        self.events: dict[str, list[Held]] = collections.defaultdict(list)
        for event in meter_events:
            cancelled, streamed = event.cancelled_at is not None, event.via == "v2"
            held = Held(event.idempotency_key or "", event.value, cancelled, streamed)
            self.events[event.identifier].append(held)

    def take(self, key: Key) -> list[Held]:
        """What Stripe holds for ``key``, taken out (what is left belongs to no caller's key)."""
        return (self.events if SERVICE_KINDS[key.kind] == "meter_event" else self.usage).pop(stripe_key(key), [])


def letter_amount(letter: Mapping[str, Any]) -> Decimal | None:
    """The quantity or meter value a dead letter holds (None if it names none)."""
    stripe = letter.get("stripe") or {}
    if "quantity" in stripe:
        return Decimal(stripe["quantity"])
    value = (stripe.get("payload") or {}).get("value")
    return None if value is None else Decimal(value)


def record_problems(key: Key, in_stripe: list[Held], letters: list[Mapping[str, Any]]) -> list[str]:
    """What is wrong with the key's records in Stripe and its dead letters, whatever its answer."""
    problems = []
    base = stripe_key(key)
    for entry in in_stripe:
        if not entry.streamed and not re.fullmatch(re.escape(base) + r"(-r\d+)?", entry.idempotency_key):
            problems.append(f"{key.name}: a Stripe record under the Idempotency-Key {entry.idempotency_key!r}")
        if entry.cancelled:
            problems.append(f"{key.name}: its meter event was cancelled, which no caller asked for")
        elif entry.amount != Decimal(key.quantity):
            problems.append(f"{key.name}: Stripe holds {entry.amount}, the caller sent {key.quantity}")
    live = [entry for entry in in_stripe if not entry.cancelled]
    if len(live) > 1:
        problems.append(f"{key.name}: {len(live)} Stripe records")
    records = {json.dumps([one.get("stripe"), one.get("stripe_idempotency_key")], sort_keys=True) for one in letters}
    if len(records) > 1:  # the same record more than once is counted once (see repeated_dead_letters)
        problems.append(f"{key.name}: dead-lettered {len(letters)} times, as different records")
    for letter in letters:
        if not letter.get("reason", {}).get("message"):
            problems.append(f"{key.name}: dead-lettered without a reason")
        amount = letter_amount(letter)
        if amount is not None and amount != Decimal(key.quantity):
            problems.append(f"{key.name}: dead-lettered with {amount}, the caller sent {key.quantity}")
    return problems


def reported_later(letter: Mapping[str, Any]) -> bool:
    """Whether the event destination wrote this dead letter (from an error report): a meter event's
    ``stripe_error`` with Stripe's code that no Stripe request was answered with (a refused request's letter has
    its ``http_status``)."""
    reason = letter.get("reason") or {}
    from_report = reason.get("type") == "stripe_error" and reason.get("code") and not reason.get("http_status")
    return letter.get("kind") == "meter_event" and bool(from_report)


def letters_of(key: Key, letters: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """The key's dead letters (a letter names the service's kind; none: a usage record)."""
    found = letters.get(key.name, [])
    return [letter for letter in found if letter.get("kind", "usage_record") == SERVICE_KINDS[key.kind]]


def reconcile(
    keys: list[Key],
    ledger: Sequence[Mapping[str, Any]],
    letters: Mapping[str, Sequence[Mapping[str, Any]]],
    meter_events: Sequence[MeterEvent] = (),
    meter_errors: Sequence[MeterError] = (),
) -> list[str]:
    """Every discrepancy between what callers were told and what Stripe's ledgers and the dead-letter queue
    hold: ``ledger`` Stripe's usage records, ``meter_events`` its meter events, ``meter_errors`` the streamed
    events it found invalid later, ``letters`` the dead-letter queue's records by idempotency key (a letter
    names its kind; none: a usage record). A batched event's ``final`` is its replay after the error reports."""
    problems = []
    holdings = StripeHoldings(ledger, meter_events)
    unclaimed = {name: list(found) for name, found in letters.items()}
    told = dict.fromkeys(KINDS, Decimal(0))  # what callers were told was accepted, by kind
    held_total = dict.fromkeys(KINDS, Decimal(0))  # what Stripe and the dead-letter queue hold of it
    for key in keys:
        everything = holdings.take(key)
        in_stripe = [entry for entry in everything if not entry.cancelled]
        mine = letters_of(key, unclaimed)
        unclaimed[key.name] = [letter for letter in unclaimed.get(key.name, []) if letter not in mine]
        problems += record_problems(key, everything, mine)
        status = key.final[0] if key.final else None
        said = key.final[1].get("status") if key.final else None
        if status in (200, 202):
            told[key.kind] += Decimal(key.quantity)
            held_total[key.kind] += sum((entry.amount for entry in in_stripe), Decimal(0))
            if key.kind == BATCH and said in ("accepted", "reported") and (mine or not in_stripe):
                # Stripe took it and its validation is over: in Stripe, and not waiting for an operator.
                where = ("in Stripe and" if in_stripe else "not in Stripe") + (" dead-lettered" if mine else "")
                problems.append(f"{key.name}: finally {said} but {where}")
            elif not in_stripe and not mine:
                problems.append(f"{key.name}: answered {status} but neither in Stripe nor dead-lettered")
            if not in_stripe and mine:
                held_total[key.kind] += Decimal(key.quantity)  # waiting for an operator, with its reason
        elif status == 422:
            if in_stripe:
                problems.append(f"{key.name}: answered 422 rejected but in Stripe")
            if not mine:
                problems.append(f"{key.name}: answered 422 rejected but not dead-lettered")
        elif status is None:
            problems.append(f"{key.name}: no final answer within the run")
        else:
            problems.append(f"{key.name}: final answer {status}, not 200, 202 or 422")
    problems += invalid_event_problems(keys, letters, meter_errors)
    for stripe_id, entries in holdings.usage.items():
        problems.append(f"Stripe holds {len(entries)} record(s) under {stripe_id[:30]}... for no caller's key")
    for identifier, entries in holdings.events.items():
        problems.append(f"Stripe holds {len(entries)} meter event(s) {identifier[:30]}... for no caller's key")
    for name, rest in unclaimed.items():
        if rest:
            problems.append(f"{len(rest)} dead letter(s) for {name!r}, which no caller's key of that kind has")
    amounts: tuple[tuple[KindName, str], ...] = (
        ("usage_record", "quantities"),
        ("meter_event", "meter values"),
        (BATCH, "batched event values"),
    )
    for kind, what in amounts:
        if told[kind] != held_total[kind]:
            problems.append(f"{what}: callers were told {told[kind]}, Stripe + dead letters hold {held_total[kind]}")
    return problems


def invalid_event_problems(
    keys: list[Key], letters: Mapping[str, Sequence[Mapping[str, Any]]], meter_errors: Sequence[MeterError]
) -> list[str]:
    """Each event Stripe found invalid later is a caller's, finally ``rejected`` and dead-lettered; a letter the
    event destination wrote (``reported_later``) carries Stripe's code."""
    problems = []
    by_identifier = {stripe_key(key): key for key in keys if SERVICE_KINDS[key.kind] == "meter_event"}
    codes: dict[str, set[str]] = collections.defaultdict(set)
    for error in meter_errors:
        codes[error.identifier].add(error.code)
    for identifier, found in codes.items():
        key = by_identifier.get(identifier)
        if key is None:
            problems.append(f"Stripe found a meter event {identifier[:30]}... invalid, which no caller sent")
            continue
        if not key.final or key.final[0] != 422:
            said = f"{key.final[0]} {key.final[1].get('status')}" if key.final else "nothing"
            problems.append(f"{key.name}: Stripe found it invalid ({'/'.join(sorted(found))}), its final answer {said}")
        if not letters_of(key, letters):
            problems.append(f"{key.name}: Stripe found it invalid, but it is not dead-lettered")
    for key in keys:
        for letter in letters_of(key, letters):
            reason = letter.get("reason") or {}
            if reported_later(letter) and reason.get("code") not in codes.get(stripe_key(key), ()):
                problems.append(
                    f"{key.name}: dead-lettered by an error report with code {reason.get('code')!r}, Stripe's: "
                    f"{sorted(codes.get(stripe_key(key), ())) or 'none'}"
                )
    return problems


def repeated_dead_letters(keys: list[Key], letters: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Keys whose record the dead-letter queue holds more than once (the same record: counted once). Not a
    ledger discrepancy, but an operator sees it N times: e.g. an ingest refusal dead-lettered, its answer not
    stored (DynamoDB down), the caller's retry refused and dead-lettered again."""
    repeated = []
    for key in keys:
        mine = letters_of(key, letters)
        if len(mine) > 1:
            reasons = sorted({str(letter.get("reason", {}).get("type")) for letter in mine})
            repeated.append(f"{key.name} x{len(mine)} ({LABELS[key.kind][:-1]}, {'/'.join(reasons)})")
    return repeated


def drive(url: str, jobs: list[list[Key]], clients: int, deadline: float, rng: random.Random, results: Results) -> None:
    """Concurrent callers, each with its share of the jobs (a key, or a batch), duplicates and conflicts among them."""

    def caller_loop(mine: list[list[Key]]) -> None:
        caller = Caller(url, results, deadline)
        for job in mine:
            if job[0].kind == BATCH:
                send_batch(caller, job)
                continue
            [key] = job
            body, path = record_body(key), PATHS[key.kind]
            if rng.random() < 0.15:  # a concurrent duplicate from "another instance" of the caller
                twin = threading.Thread(target=caller.report, args=(body, path))
                twin.start()
                key.final = caller.report(body, path)
                twin.join()
            else:
                key.final = caller.report(body, path)
            if key.final and rng.random() < 0.3:  # a sequential duplicate: the same answer again
                again = caller.report(body, path)
                if again and key.final[0] in (200, 422) and again[0] != key.final[0]:
                    results.unexpected.append(f"{key.name}: replay {again[0]} after {key.final[0]}")
            if key.final and rng.random() < 0.1:  # the same key with another payload: a conflict
                other = caller.report(record_body(key, key.quantity + 1), path)
                if other and other[0] != 409:
                    results.unexpected.append(f"{key.name}: other payload answered {other[0]}, not 409")

    def send_batch(caller: Caller, batch: list[Key]) -> None:
        body = batch_body(batch)
        if rng.random() < 0.15:  # a concurrent duplicate: its events are in progress, or replay
            twin = threading.Thread(target=caller.report_batch, args=(body, batch))
            twin.start()
            answers = caller.report_batch(body, batch)
            twin.join()
        else:
            answers = caller.report_batch(body, batch)
        for key, answer in zip(batch, answers or none_for(batch), strict=True):
            key.final = key.told = answer
        if answers and rng.random() < 0.3:  # the same batch again: every event replays its answer
            check_replays(batch, caller.report_batch(body, batch), results)
        if answers and rng.random() < 0.1:  # one event with another value: 409 for it, the others replay
            other = rng.choice(batch)
            again = caller.report_batch(batch_body(batch, other), batch)
            if again:
                pairs = list(zip(batch, again, strict=True))
                check_replays([k for k, _ in pairs if k is not other], [a for k, a in pairs if k is not other], results)
                status, reply = next(a for k, a in pairs if k is other)
                if status != 409 or reply.get("error", {}).get("type") != "idempotency_conflict":
                    with results.lock:
                        results.unexpected.append(f"{other.name}: another value in its batch answered {status}")

    threads = [threading.Thread(target=caller_loop, args=(jobs[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def none_for(batch: Sequence[Key]) -> list[Answer | None]:
    """No answer for any event of the batch (the deadline passed)."""
    return [None] * len(batch)


def check_replays(batch: Sequence[Key], answers: Sequence[Answer] | None, results: Results) -> None:
    """A batch sent again: each event replays, and says what it said (a queued one may be reported or rejected
    by now: the worker delivered it)."""
    if answers is None:
        return  # the deadline passed
    for key, (status, answer) in zip(batch, answers, strict=True):
        before = key.final[1].get("status") if key.final else None
        now = answer.get("status") or answer.get("error", {}).get("type")
        if not answer.get("replayed") or before not in ("queued", now):
            with results.lock:
                results.unexpected.append(f"{key.name}: sent again in its batch, {status} {now} after {before}")


def replay_batches(url: str, jobs: list[list[Key]]) -> list[str]:
    """Each batch once more, after Stripe's error reports: its events' final answers (all replays)."""
    problems: list[str] = []
    caller = Caller(url, Results(), time.monotonic() + 30)
    for batch in (job for job in jobs if job[0].kind == BATCH):
        if any(key.final is None for key in batch):
            continue  # the drive ran out of time: "no final answer within the run"
        answers = caller.report_batch(batch_body(batch), batch)
        for key, answer in zip(batch, answers or none_for(batch), strict=True):
            key.final = answer
            if answer and not answer[1].get("replayed"):
                problems.append(f"{key.name}: processed anew when its batch was sent after the run ({answer[0]})")
    return problems


@dataclass
class ErrorReports:
    """Stripe's error reports after the run: each delivery's status, and the event destination's counts (its
    2xx answers): keys it answered ``rejected``, failing events it could not trace to a key."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    answers: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0  # events Stripe found invalid
    events: int = 0  # reports (thin events) delivered
    repeated: int = 0  # failing events a report names again under an identifier it already names
    unacknowledged: int = 0  # reports still not acknowledged when the run gave up

    @property
    def rejected(self) -> int:
        return sum(int(answer.get("rejected", 0)) for answer in self.answers)

    @property
    def unattributed(self) -> int:
        return sum(int(answer.get("unattributed", 0)) for answer in self.answers)

    def problems(self, keys: list[Key], letters: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
        """Every report acknowledged; every failing event traced; each key the reports rejected counted once."""
        problems = []
        if self.unacknowledged:
            problems.append(f"{self.unacknowledged} error report(s) never acknowledged")
        if self.unattributed:
            why = (
                f" (Stripe's reports name {self.repeated} failing event(s) a second time under the same identifier:"
                " the event was streamed again after its first answer was lost, and the copy is counted as not ours)"
                if self.repeated
                else ""
            )
            problems.append(f"the event destination could not trace {self.unattributed} invalid event(s){why}")
        by_reports = [key for key in keys if any(reported_later(one) for one in letters_of(key, letters))]
        if self.rejected != len(by_reports):
            problems.append(f"the event destination rejected {self.rejected} keys, {len(by_reports)} are dead-lettered")
        return problems


def deliver_error_reports(stripe: FakeStripe, aws: Any, url: str, rng: random.Random) -> ErrorReports:
    """What Stripe does after the run: validate the streamed events, then POST its error reports (signed thin
    events) to the event destination again and again until each is acknowledged. The first round meets an SQS
    or DynamoDB outage, so that a report is answered 503 (the service must lose nothing, and Stripe sends again)."""
    reports = ErrorReports()
    stripe.process_meter_event_stream()
    reports.invalid = len(stripe.meter_errors)
    destination = f"{url}{STRIPE_EVENTS_PATH}"
    outage = rng.choice(["sqs:SendMessage", "dynamodb:UpdateItem"])
    aws.fail(outage)
    try:
        rounds = [stripe.deliver_error_reports(destination, LOCAL_STRIPE_WEBHOOK_SECRET)]
    finally:
        aws.clear(outage)
    while rounds[-1] and len(rounds) <= 10:  # until a round has nothing left to deliver
        rounds.append(stripe.deliver_error_reports(destination, LOCAL_STRIPE_WEBHOOK_SECRET))
    deliveries = [delivery for one in rounds for delivery in one]
    reports.statuses.update(delivery.status for delivery in deliveries)
    reports.events = len({delivery.event_id for delivery in deliveries})
    reports.unacknowledged = sum(not 200 <= delivery.status < 300 for delivery in rounds[-1])
    reports.answers = [json.loads(d.body) for d in deliveries if 200 <= d.status < 300]
    for event in stripe.error_reports.events.values():
        named = [
            sample["request"]["identifier"]
            for error_type in event["data"]["reason"]["error_types"]
            for sample in error_type["sample_errors"]
        ]
        reports.repeated += len(named) - len(set(named))
    return reports


def answer_label(answer: Answer | None, kind: KindName) -> str:
    """An answer as the summary counts it: its status (a batched event's with its word: 202 is two things)."""
    if answer is None:
        return "none"
    if kind != BATCH:
        return str(answer[0])
    return f"{answer[0]} {answer[1].get('status') or answer[1].get('error', {}).get('type')}"


def kind_summary(
    kind: KindName, keys: list[Key], holdings: StripeHoldings, letters: Mapping[str, Sequence[Mapping[str, Any]]]
) -> str:
    mine = [key for key in keys if key.kind == kind]
    finals = collections.Counter(answer_label(key.final, kind) for key in mine)
    in_stripe = [e for key in mine for e in holdings.take(key) if not e.cancelled]
    held = [key for key in mine if letters_of(key, letters)]
    what = "quantity" if kind == "usage_record" else "value"
    stripe_total = sum((e.amount for e in in_stripe), Decimal(0))
    held_total = sum((Decimal(key.quantity) for key in held), Decimal(0))
    answers = f"{len(mine)} keys, final answers {dict(sorted(finals.items()))}"
    if kind == BATCH:  # answered by the end of the drive, then (final) on the replay after Stripe's error reports
        told = collections.Counter(answer_label(key.told, kind) for key in mine)
        batches = len({key.batch for key in mine})
        answers = (
            f"{len(mine)} keys in {batches} batch{'es' if batches != 1 else ''}, answered {dict(sorted(told.items()))}"
            f", replayed {dict(sorted(finals.items()))}"
        )
    return (
        f"{answers}; in Stripe {len(in_stripe)} ({what} {stripe_total}), "
        f"dead-lettered {len(held)} ({what} {held_total})"
    )


def print_summary(
    keys: list[Key],
    results: Results,
    backends: dict[str, Any],
    clients: int,
    started: float,
    letters: Mapping[str, Sequence[Mapping[str, Any]]],
    reports: ErrorReports | None = None,
    out: TextIO | None = None,
) -> None:
    say = functools.partial(print, file=out or sys.stdout)
    latencies = sorted(results.latencies)
    finals = collections.Counter(str(k.final[0]) if k.final else "none" for k in keys)
    say(f"requests sent:      {sum(results.statuses.values())} ({len(keys)} keys incl. the killed; {clients} callers)")
    say(f"status counts:      {dict(sorted(results.statuses.items()))}  (0 = network error; a batch: its HTTP status)")
    say(f"final answers:      {dict(sorted(finals.items()))}")
    stripe, aws = backends["fake_stripe"], backends["aws_faults"]
    for kind in KINDS:
        if any(key.kind == kind for key in keys):
            holdings = StripeHoldings(list(stripe.ledger), list(stripe.meter_events))
            say(f"{LABELS[kind] + ':':<20}{kind_summary(kind, keys, holdings, letters)}")
    if reports is not None:
        say(
            f"error reports:      Stripe found {reports.invalid} streamed events invalid; {reports.events} reports, "
            f"delivered {sum(reports.statuses.values())} times {dict(sorted(reports.statuses.items()))}; "
            f"the service rejected {reports.rejected}, unattributed {reports.unattributed}"
        )
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        say(f"latency:            p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    streamed = sum(event.via == "v2" for event in stripe.meter_events)
    say(
        f"Stripe:             {len(stripe.requests)} requests, {len(stripe.ledger)} usage records, "
        f"{len(stripe.meter_events)} meter events ({streamed} streamed)"
    )
    say(f"AWS calls failed:   {dict(collections.Counter(aws.failed))}")
    repeated = repeated_dead_letters(keys, letters)
    if repeated:
        say(f"dead-lettered more than once (counted once): {', '.join(repeated)}")
    say(f"duration:           {time.monotonic() - started:.1f} s")


def run(keys_count: int, clients: int, seconds: float, seed: int, kinds: Sequence[KindName] = KINDS) -> int:
    """The whole check; what the service prints itself (its metrics, as EMF lines) is not shown."""
    out = sys.stdout
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return _run(keys_count, clients, seconds, seed, kinds, out)


def start_local_api() -> tuple[dict[str, Any], str]:
    """The local stack (moto behind the AWS fault proxy, the fake Stripe) and the API serving it: its URL."""
    backends = start_backends(aws_faults=True)
    backends["env"].update(FUNCTION_SETTINGS)
    os.environ.update(FUNCTION_SETTINGS)
    backends["fake_stripe"].add_subscription_items(KILL_ITEM)
    # The demo meter (DEMO_METER) and DEMO_CUSTOMER are the local fake's own.
    backends["fake_stripe"].add_customers(*CUSTOMERS)
    port = free_port()
    server = serve(
        "127.0.0.1", port, backends, timeout_seconds=LAMBDA_TIMEOUT_SECONDS, worker_poll_seconds=0.5, quiet=True
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return backends, f"http://127.0.0.1:{port}"


def send_calm_batch(url: str, jobs: list[list[Key]], results: Results, deadline: float) -> list[Key] | None:
    """The first batch, before the chaos: Stripe takes its stream request, so an error report will come for its
    unknown customer whatever the chaos does to the other batches. The batch (None: no batches)."""
    calm = next((job for job in jobs if job[0].kind == BATCH), None)
    if calm:
        answers = Caller(url, results, deadline).report_batch(batch_body(calm), calm)
        for key, answer in zip(calm, answers or none_for(calm), strict=True):
            key.final = key.told = answer
    return calm


def _run(keys_count: int, clients: int, seconds: float, seed: int, kinds: Sequence[KindName], out: TextIO) -> int:
    say = functools.partial(print, file=out, flush=True)
    rng = random.Random(seed)
    backends, url = start_local_api()
    stripe, env = backends["fake_stripe"], backends["env"]
    started = time.monotonic()
    deadline = started + seconds * 0.7  # the rest is for draining and reconciling
    results = Results()
    keys = make_keys(seed, keys_count, kinds, rng)
    jobs = make_jobs(keys, rng)
    killed = Key(f"load-{seed}-killed", KILL_ITEM, 77)  # a usage record
    kill_an_instance_mid_call(backends, killed)  # before the chaos, so that its stall is the fault it meets
    calm = send_calm_batch(url, jobs, results, deadline)

    def retry_the_killed_key() -> None:  # until the dead instance's lock expires
        killed.final = Caller(url, results, deadline).report(record_body(killed))

    stop = threading.Event()
    background = [
        threading.Thread(target=retry_the_killed_key),
        threading.Thread(target=inject_chaos, args=(backends, stop, rng), daemon=True),
    ]
    for thread in background:
        thread.start()
    drive(url, [job for job in jobs if job is not calm], clients, deadline, rng, results)
    background[0].join()
    stop.set()
    background[1].join()
    stripe.clear_faults()
    backends["aws_faults"].clear()

    while queue_depth(env["RETRY_QUEUE_URL"]) and time.monotonic() < started + seconds:
        time.sleep(0.3)
    time.sleep(1)  # let an invocation under way finish
    problems = list(results.unexpected)
    reports = None
    if BATCH in kinds:  # what Stripe does later: validate the stream, report the invalid events; then replays
        reports = deliver_error_reports(stripe, backends["aws_faults"], url, rng)
        problems += replay_batches(url, jobs)
    keys.append(killed)
    letters = dead_letters(env["DEAD_LETTER_QUEUE_URL"])
    problems += reconcile(keys, list(stripe.ledger), letters, list(stripe.meter_events), list(stripe.meter_errors))
    if reports is not None:
        problems += reports.problems(keys, letters)
    if queue_depth(env["RETRY_QUEUE_URL"]):
        problems.append("the retry queue did not drain within the run")
    print_summary(keys, results, backends, clients, started, letters, reports, out)
    if problems:
        say(f"RECONCILIATION FAILED: {len(problems)} discrepancies")
        for problem in problems:
            say(f"  - {problem}")
        return 1
    say("reconciliation:     OK (each accepted key in Stripe exactly once or dead-lettered with its reason)")
    return 0


def parse_kinds(text: str) -> tuple[KindName, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in KINDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(KINDS)} (comma-separated), not {text!r}")
    return tuple(kind for kind in KINDS if kind in chosen)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200, help="distinct idempotency keys (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--seconds", type=float, default=180, help="bound on the whole run (default 180)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--kinds",
        type=parse_kinds,
        default=KINDS,
        help=f"record kinds the keys are, in turn (default: {','.join(KINDS)})",
    )
    args = parser.parse_args(argv)
    rerun = f"--seed {args.seed}" + ("" if args.kinds == KINDS else f" --kinds {','.join(args.kinds)}")
    print(f"fault-and-load check, seed {args.seed} (rerun with {rerun})", flush=True)
    sys.exit(run(args.keys, args.clients, args.seconds, args.seed, args.kinds))


if __name__ == "__main__":
    main()
