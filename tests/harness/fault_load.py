"""A rerunnable fault-and-load check of the whole service, on this machine only (127.0.0.1).

    python -m tests.harness.fault_load                  # the full run (make fault-load)
    python -m tests.harness.fault_load --keys 30 --clients 4 --seconds 60   # the short form the tests run

It starts the local stack (moto behind an AWS fault proxy, the fake Stripe, the API and the retry
worker, as ``make run`` does) and drives the API with concurrent signed callers that behave as the
README tells them to (retry 409 in progress, 503 and network errors with the same bytes). Meanwhile:
- the fake Stripe injects 5xx, 429, resets, delays and answers lost after it wrote the record;
- SQS (SendMessage) and DynamoDB (PutItem, UpdateItem) fail for short windows;
- sequential and concurrent duplicates, and conflicting payloads, are sent for some keys;
- one request is handled by a separate instance that is killed (SIGKILL) while Stripe holds the answer.
Then the faults stop, the retry worker drains the queue, and the ledger is reconciled: every key
answered 200/202 is in Stripe exactly once or in the dead-letter queue with its reason, no key is in
Stripe twice, 422-rejected keys are not in Stripe, and the quantities add up. Bounded in requests
and time; exits non-zero on any discrepancy.
"""

from __future__ import annotations

import argparse
import collections
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from usage_reporter.auth import sign
from usage_reporter.stripe_gateway import stripe_idempotency_key

from .fake_stripe import Fault
from .instances import start_instance
from .lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from .local_api import free_port, serve, start_backends

ITEMS = ("si_demo", "si_demo2")
UNKNOWN_ITEM = "si_doesNotExist"  # Stripe refuses it: 422 rejected, dead-letter queue
KILL_ITEM = "si_killed"  # only the killed instance's request goes there
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


@dataclass
class Key:
    name: str
    item: str
    quantity: int
    final: tuple[int, dict[str, Any]] | None = None  # the caller's final answer (status, body)


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

    def post_once(self, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {
            "Content-Type": "application/json",
            "X-Usage-Client": DEMO_CLIENT_ID,
            "X-Usage-Signature": sign(DEMO_CLIENT_SECRET, body),
        }
        request = urllib.request.Request(self._url + "/v1/usage", data=body, method="POST", headers=headers)
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

    def report(self, body: bytes) -> tuple[int, dict[str, Any]] | None:
        """Send until a final answer (not 409 in progress, not 503, not a network error) or the deadline."""
        while time.monotonic() < self._deadline:
            status, _, answer = self.post_once(body)
            in_progress = status == 409 and answer.get("error", {}).get("type") == "idempotency_in_progress"
            if status in (0, 503) or in_progress:
                time.sleep(0.3)  # Retry-After, shortened: the run is bounded
                continue
            return status, answer
        return None


def record_body(key: Key, quantity: int | None = None) -> bytes:
    record = {"idempotency_key": key.name, "subscription_item": key.item, "quantity": quantity or key.quantity}
    return json.dumps(record).encode()  # timestamp omitted: "now", the case that needs the delivery plan


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
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def dead_letters(url: str) -> dict[str, dict[str, Any]]:
    """The dead-letter queue's records by idempotency key (read with a short visibility, then released)."""
    sqs = boto3.client("sqs")
    found: dict[str, dict[str, Any]] = {}
    for _ in range(50):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not batch:
            break
        for message in batch:
            body = json.loads(message["Body"])
            found[body.get("idempotency_key", message["MessageId"])] = body
    return found


def reconcile(keys: list[Key], ledger: list[dict[str, Any]], letters: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    by_stripe_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in ledger:
        # A redrive after a refusal uses a derived key (``<key>-r<n>``): the same record.
        by_stripe_key[re.sub(r"-r\d+$", "", str(entry["idempotency_key"]))].append(entry)
    expected_total = stripe_total = 0
    for key in keys:
        in_stripe = by_stripe_key.pop(stripe_idempotency_key(DEMO_CLIENT_ID, key.name), [])
        letter = letters.get(key.name)
        status = key.final[0] if key.final else None
        if len(in_stripe) > 1:
            problems.append(f"{key.name}: {len(in_stripe)} Stripe records")
        if status in (200, 202):
            expected_total += key.quantity
            stripe_total += sum(entry["quantity"] for entry in in_stripe)
            if not in_stripe and not letter:
                problems.append(f"{key.name}: answered {status} but neither in Stripe nor dead-lettered")
            if letter and not letter.get("reason", {}).get("message"):
                problems.append(f"{key.name}: dead-lettered without a reason")
            if not in_stripe and letter:
                stripe_total += key.quantity  # waiting for an operator, with its reason
        elif status == 422:
            if in_stripe:
                problems.append(f"{key.name}: answered 422 rejected but in Stripe")
            if not letter:
                problems.append(f"{key.name}: answered 422 rejected but not dead-lettered")
        elif status is None:
            problems.append(f"{key.name}: no final answer within the run")
    for stripe_key, entries in by_stripe_key.items():
        problems.append(f"Stripe holds {len(entries)} record(s) under {stripe_key[:30]}... for no caller's key")
    if expected_total != stripe_total:
        problems.append(f"quantities: callers were told {expected_total}, Stripe + dead letters hold {stripe_total}")
    return problems


def drive(url: str, keys: list[Key], clients: int, deadline: float, rng: random.Random, results: Results) -> None:
    """Concurrent callers, each with its share of the keys, duplicates and conflicts among them."""

    def caller_loop(mine: list[Key]) -> None:
        caller = Caller(url, results, deadline)
        for key in mine:
            body = record_body(key)
            if rng.random() < 0.15:  # a concurrent duplicate from "another instance" of the caller
                twin = threading.Thread(target=caller.report, args=(body,))
                twin.start()
                key.final = caller.report(body)
                twin.join()
            else:
                key.final = caller.report(body)
            if key.final and rng.random() < 0.3:  # a sequential duplicate: the same answer again
                again = caller.report(body)
                if again and key.final[0] in (200, 422) and again[0] != key.final[0]:
                    results.unexpected.append(f"{key.name}: replay {again[0]} after {key.final[0]}")
            if key.final and rng.random() < 0.1:  # the same key with another payload: a conflict
                other = caller.report(record_body(key, key.quantity + 1))
                if other and other[0] != 409:
                    results.unexpected.append(f"{key.name}: other payload answered {other[0]}, not 409")

    threads = [threading.Thread(target=caller_loop, args=(keys[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def print_summary(keys: list[Key], results: Results, backends: dict[str, Any], clients: int, started: float) -> None:
    latencies = sorted(results.latencies)
    finals = collections.Counter(str(k.final[0]) if k.final else "none" for k in keys)
    print(
        f"requests sent:      {sum(results.statuses.values())} ({len(keys)} keys incl. the killed; {clients} callers)"
    )
    print(f"status counts:      {dict(sorted(results.statuses.items()))}  (0 = network error)")
    print(f"final answers:      {dict(sorted(finals.items()))}")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency:            p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    stripe, aws = backends["fake_stripe"], backends["aws_faults"]
    print(f"Stripe:             {len(stripe.requests)} requests, {len(stripe.ledger)} records")
    print(f"AWS calls failed:   {dict(collections.Counter(aws.failed))}")
    print(f"duration:           {time.monotonic() - started:.1f} s")


def run(keys_count: int, clients: int, seconds: float, seed: int) -> int:
    rng = random.Random(seed)
    backends = start_backends(aws_faults=True)
    backends["env"].update(FUNCTION_SETTINGS)
    os.environ.update(FUNCTION_SETTINGS)
    stripe, env = backends["fake_stripe"], backends["env"]
    stripe.add_subscription_items(KILL_ITEM)
    port = free_port()
    server = serve(
        "127.0.0.1", port, backends, timeout_seconds=LAMBDA_TIMEOUT_SECONDS, worker_poll_seconds=0.5, quiet=True
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    deadline = started + seconds * 0.7  # the rest is for draining and reconciling
    results = Results()
    keys = [
        Key(f"load-{seed}-{i}", UNKNOWN_ITEM if i % 13 == 5 else rng.choice(ITEMS), rng.randint(1, 1000))
        for i in range(keys_count)
    ]
    killed = Key(f"load-{seed}-killed", KILL_ITEM, 77)
    kill_an_instance_mid_call(backends, killed)  # before the chaos, so that its stall is the fault it meets

    def retry_the_killed_key() -> None:  # until the dead instance's lock expires
        killed.final = Caller(url, results, deadline).report(record_body(killed))

    stop = threading.Event()
    background = [
        threading.Thread(target=retry_the_killed_key),
        threading.Thread(target=inject_chaos, args=(backends, stop, rng), daemon=True),
    ]
    for thread in background:
        thread.start()
    drive(url, keys, clients, deadline, rng, results)
    background[0].join()
    stop.set()
    background[1].join()
    stripe.clear_faults()
    backends["aws_faults"].clear()

    while queue_depth(env["RETRY_QUEUE_URL"]) and time.monotonic() < started + seconds:
        time.sleep(0.3)
    time.sleep(1)  # let an invocation under way finish
    keys.append(killed)
    problems = reconcile(keys, list(stripe.ledger), dead_letters(env["DEAD_LETTER_QUEUE_URL"])) + results.unexpected
    if queue_depth(env["RETRY_QUEUE_URL"]):
        problems.append("the retry queue did not drain within the run")
    print_summary(keys, results, backends, clients, started)
    if problems:
        print(f"RECONCILIATION FAILED: {len(problems)} discrepancies")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("reconciliation:     OK (each accepted key in Stripe exactly once or dead-lettered with its reason)")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200, help="distinct idempotency keys (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--seconds", type=float, default=180, help="bound on the whole run (default 180)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    print(f"fault-and-load check, seed {args.seed} (rerun with --seed {args.seed})", flush=True)
    sys.exit(run(args.keys, args.clients, args.seconds, args.seed))


if __name__ == "__main__":
    main()
