"""The runs: cold starts in fresh processes, a warm instance for single records, batches, replays and the
local API, every figure beside its floor or baseline, in one run against the same moto and fake Stripe.

Everything is returned as one JSON-able dict (``run``); ``report`` prints it and ``cost`` prices it.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import itertools
import json
import math
import os
import queue
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from tests.harness.aws_clients import aws_client
from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FAKE_STRIPE_KEY, http_api_event
from tests.harness.local_api import DEMO_CUSTOMER, DEMO_ITEMS, DEMO_METER, free_port
from tests.harness.stack import ROOT, load_template
from usage_reporter.auth import sign
from usage_reporter.config import Settings

from . import backends
from .child import ANSWER_PREFIX, PHASE_MARK
from .moto_process import MotoProcess
from .options import SERVE_CLIENTS, Options

CHILD = "tests.harness.bench.child"
WARM_UP_RECORDS = 3  # per side, before a warm instance's records count
KINDS = {  # single path, batch path, the batch's field
    "usage_record": ("/v1/usage", "/v1/usage/batch", "records"),
    "meter_event": ("/v1/meter_events", "/v1/meter_events/batch", "events"),
}


class BenchError(RuntimeError):
    """A run did not do what it measures (an answer other than reported/accepted, a child that died)."""


# -- what is sent -------------------------------------------------------------------------------------


class Keys:
    """Idempotency keys no run has used (a fresh prefix per bench run)."""

    def __init__(self) -> None:
        self._prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self._numbers = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._numbers)}"


def record_body(kind: str, key: str) -> dict[str, Any]:
    if kind == "usage_record":
        return {"idempotency_key": key, "subscription_item": DEMO_ITEMS[0], "quantity": 1}
    return {"idempotency_key": key, "event_name": DEMO_METER, "customer": DEMO_CUSTOMER, "value": 1}


def signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    headers = {
        "content-type": "application/json",
        "x-usage-client": DEMO_CLIENT_ID,
        "x-usage-signature": sign(DEMO_CLIENT_SECRET, raw),
    }
    return raw, headers


def signed_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    raw, headers = signed(body)
    return http_api_event("POST", path, raw, headers)


def single_event(kind: str, key: str) -> dict[str, Any]:
    return signed_event(KINDS[kind][0], record_body(kind, key))


def batch_event(kind: str, keys: list[str]) -> dict[str, Any]:
    _, path, field = KINDS[kind]
    return signed_event(path, {field: [record_body(kind, key) for key in keys]})


# -- output of the service: CloudWatch Logs lines and EMF metrics ---------------------------------------


@dataclass
class LogTally:
    """The service's stdout lines (Powertools' JSON logs and EMF documents), as CloudWatch Logs ingests them."""

    events: int = 0
    bytes: int = 0
    emf_events: int = 0
    emf_bytes: int = 0

    def add(self, lines: Iterable[str], metrics: set[str] | None = None) -> LogTally:
        for line in lines:
            text = line.rstrip("\n")
            if not text:
                continue
            size = len(text.encode())
            self.events += 1
            self.bytes += size
            emf = _emf(text)
            if emf is not None:
                self.emf_events += 1
                self.emf_bytes += size
                if metrics is not None:
                    metrics.update(_metric_names(emf))
        return self


def _emf(text: str) -> dict[str, Any] | None:
    if '"_aws"' not in text:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "_aws" in document else None


def _metric_names(document: dict[str, Any]) -> set[str]:
    """Each custom metric of an EMF document: namespace, name and dimension values (CloudWatch bills each one)."""
    found = set()
    for directive in document["_aws"].get("CloudWatchMetrics", []):
        for dimension_set in directive.get("Dimensions", [[]]):
            dimensions = ",".join(f"{name}={document.get(name)}" for name in dimension_set)
            for metric in directive.get("Metrics", []):
                found.add(f"{directive.get('Namespace')}/{metric['Name']} [{dimensions}]")
    return found


# -- children ------------------------------------------------------------------------------------------


def _answer(stdout: str) -> tuple[dict[str, Any], list[str]]:
    logs: list[str] = []
    found = None
    for line in stdout.splitlines():
        if line.startswith(ANSWER_PREFIX):
            found = json.loads(line[len(ANSWER_PREFIX) :])
        else:
            logs.append(line)
    if found is None:
        raise BenchError("the child gave no answer")
    return found, logs


def cold_process(
    role: str, env: dict[str, str], job: dict[str, Any], *, importtime: bool = False
) -> tuple[dict[str, Any], list[str], str]:
    """One fresh process answering one record; its result (with ``cold_seconds``), log lines and stderr."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", CHILD, role]
    spawned = time.time()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(json.dumps(job), timeout=120)
    if process.returncode != 0:
        raise BenchError(f"cold {role} process failed ({process.returncode}):\n{stderr[-3000:]}")
    result, logs = _answer(stdout)
    if result.get("status") != 200 or result.get("body_status") != "reported":
        raise BenchError(f"cold {role} process did not report its record: {result}\n{stderr[-3000:]}")
    result["spawned"] = spawned
    result["cold_seconds"] = result["answered"] - spawned
    result["startup_seconds"] = result["entered"] - spawned
    return result, logs, stderr


class WarmWorker:
    """The parent's end of a ``warm`` child: one command at a time, its answer and the log lines it wrote.

    A thread reads the child's stdout all the time: while the local API serves, the child writes log lines
    between commands, and a full pipe would stop it in the middle of a request (holding the instance).
    """

    def __init__(self, env: dict[str, str]) -> None:
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()
        self._process = subprocess.Popen(
            [sys.executable, "-m", CHILD, "warm"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, name="warm-stdout", daemon=True).start()
        self.init_logs = self._read()[1]

    def _drain(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def call(self, command: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> tuple[dict[str, Any], list[str]]:
        logs: list[str] = []
        while True:
            line = self._lines.get(timeout=600)
            if line is None:
                raise BenchError(f"the warm instance died:\n{self.stderr_tail()}")
            if ANSWER_PREFIX in line:  # a thread's print may have written part of a line before it
                fragment, _, answer = line.partition(ANSWER_PREFIX)
                logs.append(fragment)
                result: dict[str, Any] = json.loads(answer)
                if "error" in result:
                    raise BenchError(f"the warm instance failed: {result['error']}\n{self.stderr_tail()}")
                return result, logs
            logs.append(line)

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._stderr.close()


# -- the run -------------------------------------------------------------------------------------------


def stripe_endpoint(path: str) -> str:
    route = path.split("?", maxsplit=1)[0]
    if route.endswith("/usage_records"):
        return "usage_records"
    return {
        "/v1/billing/meter_events": "meter_events",
        "/v2/billing/meter_event_stream": "meter_event_stream",
        "/v2/billing/meter_event_session": "meter_event_session",
    }.get(route, route)


def summary(values: list[float]) -> dict[str, float]:
    return {"best": min(values), "median": statistics.median(values), "n": len(values)}


class Bench:
    def __init__(self, options: Options, say: Callable[[str], None], moto: MotoProcess | None = None) -> None:
        self.options = options
        self.say = say
        self.keys = Keys()
        self.metrics: set[str] = set()
        self.backends = backends.start(options.latency, moto)
        self.settings = Settings.model_validate(self.backends.function_env)
        self.env = self.backends.child_env

    def floor_config(self) -> dict[str, Any]:
        return {
            "table": self.settings.idempotency_table_name,
            "client_id": DEMO_CLIENT_ID,
            "subscription_item": DEMO_ITEMS[0],
            "stripe_version": self.settings.stripe_version,
            "stripe_api_key": FAKE_STRIPE_KEY,
            "stripe_api_base": self.backends.stripe.url,
            "stripe_timeout_seconds": self.settings.stripe_timeout_seconds,
            "stripe_max_network_retries": self.settings.stripe_max_network_retries,
        }

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        load_before = _load_average()
        pycache = tempfile.TemporaryDirectory(prefix="bench-pycache-")
        try:
            cold = self.cold_starts()
            profile = self.compile_bytecode(pycache.name)
            if self.options.importtime:
                cold["imports"] = profile
            worker = WarmWorker(self.env)
            try:
                precompiled = functools.partial(self.precompiled_env, pycache.name)
                cold["precompiled"] = self.cold_rounds(precompiled, "with precompiled bytecode")
                if self.options.importtime:
                    cold["imports_precompiled"] = self.import_profiles(precompiled)
                cold["holder_rss_mb"] = holder_rss(precompiled("service"))  # as the "held by" import times
                warm, calls, logs = self.warm_instance(worker)
                serve = self.local_api(worker)
            finally:
                worker.close()
            items = self.item_sizes()
        finally:
            self.backends.stop()
            pycache.cleanup()
        return {
            "version": 1,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "options": asdict(self.options),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average": {"start": load_before, "end": _load_average()},
            "bytecode": bytecode_state(),
            "batch_concurrency": self.settings.batch_concurrency,
            "meter_event_batch_api": self.settings.meter_event_batch_api,
            "cold": cold,
            "warm": warm,
            "calls": calls,
            "logs": logs,
            "serve": serve,
            "dynamodb_item_bytes": items,
            "custom_metrics": sorted(self.metrics),
            "access_log_line_bytes": access_log_line_bytes(),
            "memory_size": int(load_template()["Globals"]["Function"]["MemorySize"]),
            "seconds": time.monotonic() - started,
        }

    # 1. cold starts ------------------------------------------------------------------------------------

    def cold_starts(self) -> dict[str, Any]:
        cold = self.cold_rounds(lambda role: self.env, "")
        cold["bytecode"] = "as the environment has it (children write none)"
        return cold

    def cold_rounds(self, env: Callable[[str], dict[str, str]], label: str) -> dict[str, Any]:
        """``rounds`` fresh processes per side, alternating which goes first; figures by side and phase."""
        self.say(f"cold starts{' ' + label if label else ''}: {self.options.rounds} fresh processes per side")
        runs: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
        tally = LogTally()
        for index in range(self.options.rounds):
            for role in ("service", "floor") if index % 2 == 0 else ("floor", "service"):
                result, logs, _ = cold_process(role, env(role), self.cold_job(role))
                runs[role].append(result)
                if role == "service":
                    tally.add(logs, self.metrics)
        cold: dict[str, Any] = {}
        for role, results in runs.items():
            cold[role] = {
                name: summary([r[field] for r in results])
                for name, field in (
                    ("seconds", "cold_seconds"),
                    ("startup_seconds", "startup_seconds"),
                    ("load_seconds", "load_seconds"),
                    ("call_seconds", "call_seconds"),
                    ("cpu_seconds", "cpu_seconds"),
                )
            }
            cold[role]["peak_rss_mb"] = summary([r["peak_rss_kb"]["vm_hwm"] / 1024 for r in results])
            cold[role]["ru_maxrss_mb"] = summary([r["peak_rss_kb"]["ru_maxrss"] / 1024 for r in results])
        cold["service_log"] = asdict(tally)
        return cold

    def compile_bytecode(self, pycache: str) -> dict[str, Any]:
        """One cold process per side that compiles what it imports (nothing is precompiled but the stdlib) and
        writes the bytecode into ``pycache``; under ``python -X importtime``, where its import time goes."""
        profiled = " under python -X importtime" if self.options.importtime else ""
        self.say(f"cold starts: one more process per side{profiled}, writing bytecode for the precompiled runs")
        profiles = {}
        for role in ("service", "floor"):
            seed_stdlib_bytecode(str(Path(pycache) / role))
            env = {k: v for k, v in self.precompiled_env(pycache, role).items() if k != "PYTHONDONTWRITEBYTECODE"}
            stderr = cold_process(role, env, self.cold_job(role), importtime=self.options.importtime)[2]
            profiles[role] = import_profile(stderr)
        return profiles

    def import_profiles(self, env_for: Callable[[str], dict[str, str]]) -> dict[str, Any]:
        """``rounds`` more processes per side under ``python -X importtime``, reading the precompiled bytecode:
        where the import time goes as Lambda pays it (sam build compiles the layer); each group's median."""
        rounds = self.options.rounds
        self.say(f"cold starts: {rounds} more processes per side under python -X importtime, precompiled")
        profiles: dict[str, Any] = {}
        for role in ("service", "floor"):
            runs = [
                import_profile(cold_process(role, env_for(role), self.cold_job(role), importtime=True)[2])
                for _ in range(rounds)
            ]
            profiles[role] = {
                phase: {
                    group: statistics.median(run[phase].get(group, 0.0) for run in runs)
                    for group in {group for run in runs for group in run[phase]}
                }
                for phase in ("before_call", "in_call")
            }
        return profiles

    def precompiled_env(self, pycache: str, role: str) -> dict[str, str]:
        """Children that read (never write) bytecode from their side's cache, filled by ``compile_bytecode``
        (one cache per side: the floor must not find the bytecode of the service's boto3)."""
        return {**self.env, "PYTHONPYCACHEPREFIX": str(Path(pycache) / role)}

    def cold_job(self, role: str) -> dict[str, Any]:
        if role == "service":
            return {"event": single_event("usage_record", self.keys())}
        return {"floor": self.floor_config(), "key": self.keys()}

    # 2, 3 and 5: one warm instance -------------------------------------------------------------------

    def service(self, worker: WarmWorker, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Events through the warm handler: results, AWS calls, Stripe requests, log lines."""
        stripe = self.backends.stripe
        first = stripe.request_count()
        stripe.reset_gauge()
        moto_cpu = self.backends.moto.cpu_seconds()
        result, logs = worker.call({"op": "service", "events": events})
        moto_after = self.backends.moto.cpu_seconds()
        requests = stripe.requests_since(first)
        result["moto_cpu_seconds"] = None if moto_cpu is None or moto_after is None else moto_after - moto_cpu
        result["stripe"] = dict(Counter(stripe_endpoint(r["path"]) for r in requests))
        result["stripe_max_in_flight"] = stripe.max_in_flight
        result["log"] = asdict(LogTally().add(logs, self.metrics))
        return result

    def expect(self, result: dict[str, Any], kind: str, size: int | None, *, replayed: bool = False) -> None:
        [one] = result["results"]
        streamed = kind == "meter_event" and self.settings.meter_event_batch_api == "stream"
        status = "accepted" if streamed else "reported"
        if size is None:
            ok = one["status"] == 200 and one["body_status"] == "reported" and one["replayed"] == replayed
        else:
            ok = one["status"] == 200 and one["summary"] == {status: size}
        if not ok:
            raise BenchError(f"unexpected answer for {kind} ({size or 'single'}): {one}")

    def warm_instance(self, worker: WarmWorker) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        opts = self.options
        calls: dict[str, Any] = {}
        logs: dict[str, Any] = {}

        def counted(name: str, result: dict[str, Any], records: int, kind: str, scenario: str) -> None:
            calls[name] = {
                "aws": result["aws"],
                "stripe": result["stripe"],
                "records": records,
                "kind": kind,
                "scenario": scenario,
            }
            logs[name] = {**result["log"], "records": records, "kind": kind, "scenario": scenario}

        self.say(f"warm instance: {WARM_UP_RECORDS} records per side to warm up, then {opts.warm} per side")
        first = self.service(worker, [single_event("usage_record", self.keys())])
        self.expect(first, "usage_record", None)
        counted("usage record, first in a new instance", first, 1, "usage_record", "first")
        for _ in range(WARM_UP_RECORDS - 1):
            self.expect(self.service(worker, [single_event("usage_record", self.keys())]), "usage_record", None)
        warm_up = [self.keys() for _ in range(WARM_UP_RECORDS)]
        worker.call({"op": "floor", "floor": self.floor_config(), "keys": warm_up})

        sides: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
        last_body: dict[str, Any] = {}
        for index in range(opts.warm):
            for side in ("service", "floor") if index % 2 == 0 else ("floor", "service"):
                key = self.keys()
                if side == "floor":
                    result, _ = worker.call({"op": "floor", "floor": self.floor_config(), "keys": [key]})
                    sides["floor"] += result["results"]
                    continue
                last_body = record_body("usage_record", key)
                result = self.service(worker, [signed_event("/v1/usage", last_body)])
                self.expect(result, "usage_record", None)
                sides["service"] += result["results"]
                if index == 0:
                    counted("usage record", result, 1, "usage_record", "single")
        replay = self.service(worker, [signed_event("/v1/usage", last_body)])
        self.expect(replay, "usage_record", None, replayed=True)
        counted("usage record, replayed", replay, 1, "usage_record", "replay")

        meter_singles: list[dict[str, Any]] = []
        for index in range(max(1, opts.warm // 2) + 1):
            result = self.service(worker, [single_event("meter_event", self.keys())])
            self.expect(result, "meter_event", None)
            if index == 1:
                counted("meter event", result, 1, "meter_event", "single")
            if index:  # the first single meter event builds its Stripe resources: a warm-up
                meter_singles += result["results"]

        warm: dict[str, Any] = {
            "usage_record": {side: _timings(results) for side, results in sides.items()},
            "meter_event": {"service": _timings(meter_singles)},
            "batches": {},
        }
        sizes = opts.batch_sizes
        self.say(f"batches: {', '.join(map(str, sizes))} records, {opts.batch_rounds} rounds per size and kind")
        for kind in KINDS:
            per_size: dict[str, Any] = {}
            for size in sizes:
                rounds = []
                for round_index in range(opts.batch_rounds):
                    result = self.service(worker, [batch_event(kind, [self.keys() for _ in range(size)])])
                    self.expect(result, kind, size)
                    rounds.append(result)
                    if size == max(sizes) and round_index == opts.batch_rounds - 1:
                        counted(f"{kind.replace('_', ' ')}s, batch of {size}", result, size, kind, "batch")
                per_size[str(size)] = _batch_timings(rounds)
            warm["batches"][kind] = per_size
        warm["stripe_sessions_created"] = sum(
            1 for r in self.backends.stripe.requests if stripe_endpoint(r["path"]) == "meter_event_session"
        )
        return warm, calls, logs

    # 4. the local API -----------------------------------------------------------------------------------

    def local_api(self, worker: WarmWorker) -> dict[str, Any]:
        port = free_port()
        worker.call({"op": "serve", "port": port, "parameters": self.backends.stack.parameters})
        self.say(f"local API: {self.options.serve_records} records per level, {SERVE_CLIENTS} concurrent clients")
        levels: dict[str, Any] = {}
        try:
            for clients in SERVE_CLIENTS:
                per_client = math.ceil(max(self.options.serve_records, clients) / clients)
                try:
                    levels[str(clients)] = drive_local_api(port, clients, per_client, self.keys)
                except BenchError as exc:
                    raise BenchError(f"{exc}\nthe instance's stderr:\n{worker.stderr_tail()}") from None
                self.say(f"local API: {clients} client{'s' if clients > 1 else ''} done")
        finally:
            worker.call({"op": "stop-serve"})
        return levels

    # DynamoDB item sizes -------------------------------------------------------------------------------

    def item_sizes(self) -> dict[str, Any]:
        """Median item size per kind of item (DynamoDB's rules, approximately): what one write unit covers."""

        sizes: dict[str, list[int]] = {}
        paginator = aws_client("dynamodb").get_paginator("scan")
        for page in paginator.paginate(TableName=self.settings.idempotency_table_name):
            for item in page["Items"]:
                prefix = item["id"]["S"].rsplit("#", 1)[0]
                if prefix.startswith("floor"):
                    continue
                sizes.setdefault(f"{prefix} (answer)" if "data" in item else prefix, []).append(item_bytes(item))
                if "data" in item:  # the lock, as first written (before the answer was added)
                    lock = {k: v for k, v in item.items() if k != "data"}
                    lock["status"] = {"S": "INPROGRESS"}
                    lock["in_progress_expiration"] = {"N": "1795400000000"}
                    sizes.setdefault(f"{prefix} (lock)", []).append(item_bytes(lock))
        return {name: int(statistics.median(values)) for name, values in sorted(sizes.items())}


def _timings(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": summary([r["seconds"] for r in results]),
        "cpu_seconds": summary([r["cpu_seconds"] for r in results]),
    }


def _batch_timings(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["results"][0]["seconds"] for r in rounds]
    usage_requests = [r["stripe"].get("usage_records", 0) for r in rounds]
    moto = [r["moto_cpu_seconds"] for r in rounds]
    return {
        "seconds": summary(seconds),
        "cpu_seconds": summary([r["results"][0]["cpu_seconds"] for r in rounds]),
        "stripe_requests": statistics.median(sum(r["stripe"].values()) for r in rounds),
        "usage_records_per_second": statistics.median(n / s for n, s in zip(usage_requests, seconds, strict=True)),
        "stripe_max_in_flight": max(r["stripe_max_in_flight"] for r in rounds),
        "moto_cpu_seconds": None if None in moto else statistics.median(moto),
    }


def drive_local_api(port: int, clients: int, per_client: int, keys: Callable[[], str]) -> dict[str, Any]:
    """``clients`` threads, each sending ``per_client`` signed records over one keep-alive connection."""
    return LocalApiClients(port, clients, per_client, keys).run()


class LocalApiClients:
    """Concurrent callers of the local API, started together.

    A connection the local API drops before answering is opened again and the record sent again, once (the
    same key: a record the first attempt did report is answered as a replay, never counted twice by the
    service); such retries are counted, and a second drop fails the run.
    """

    def __init__(self, port: int, clients: int, per_client: int, keys: Callable[[], str]) -> None:
        self.port = port
        self.go = threading.Barrier(clients + 1)
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.retries: list[str] = []
        self.bodies = [[record_body("usage_record", keys()) for _ in range(per_client)] for _ in range(clients)]

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self.client, args=(mine,)) for mine in self.bodies]
        for thread in threads:
            thread.start()
        self.go.wait(60)
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        if self.failures:
            raise BenchError(f"local API: {len(self.failures)} records not reported, e.g. {self.failures[0]}")
        return {
            "records": len(self.latencies),
            "seconds": seconds,
            "records_per_second": len(self.latencies) / seconds,
            "latency": summary(self.latencies),
            "connection_retries": len(self.retries),
            "retry_reasons": sorted(set(self.retries)),
        }

    def connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.connect()
        # http.client sends a request's headers and body in two writes: without this, Nagle holds the body
        # back until the server's delayed ACK of the headers (~40 ms a request, which is not the service's).
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    @staticmethod
    def post(connection: http.client.HTTPConnection, body: dict[str, Any]) -> tuple[int, bytes, float]:
        raw, headers = signed(body)
        t0 = time.perf_counter()
        connection.request("POST", "/v1/usage", raw, headers)
        response = connection.getresponse()
        return response.status, response.read(), time.perf_counter() - t0

    def client(self, mine: list[dict[str, Any]]) -> None:
        try:
            connection = self.connect()
        except OSError as exc:
            with self.lock:
                self.failures.append(f"cannot connect: {exc}")
            self.go.wait(60)
            return
        self.go.wait(60)
        try:
            for body in mine:
                try:
                    status, answer, seconds = self.post(connection, body)
                except (ConnectionError, http.client.HTTPException) as exc:
                    connection.close()
                    with self.lock:
                        self.retries.append(f"{type(exc).__name__}: {exc}")
                    connection = self.connect()
                    status, answer, seconds = self.post(connection, body)
                with self.lock:
                    self.latencies.append(seconds)
                    if status != 200:
                        self.failures.append(f"{status} {answer[:200]!r}")
        except Exception as exc:  # reported by run(), as a failed run
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()


# -- where a cold start goes: python -X importtime ------------------------------------------------------

_GROUPS = {
    **dict.fromkeys(("boto3", "botocore", "s3transfer", "dateutil", "six"), "boto3/botocore"),
    "jmespath": "jmespath",
    "stripe": "stripe",
    **dict.fromkeys(("requests", "urllib3", "charset_normalizer", "idna", "certifi"), "requests/urllib3"),
    **dict.fromkeys(
        ("pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"), "pydantic"
    ),
    "aws_lambda_powertools": "Powertools",
    **dict.fromkeys(("aws_xray_sdk", "wrapt"), "X-Ray SDK"),
    **dict.fromkeys(("usage_reporter", "functions_ingest_app"), "the service's own code"),
    "tests": "bench harness (both sides)",
}


# What the service imports beyond the floor's boto3 and stripe, as the handler's modules import it.
_HOLDER_IMPORTS = {
    "pydantic": "import pydantic, pydantic_core",
    "Powertools": (
        "import aws_lambda_powertools.event_handler, aws_lambda_powertools.logging, aws_lambda_powertools.metrics,"
        " aws_lambda_powertools.utilities.idempotency, aws_lambda_powertools.utilities.parameters"
    ),
    "the service's handler (all of it: those two and its own code)": "import app",
}


def holder_rss(env: dict[str, str]) -> dict[str, float]:
    """Peak RSS (MB) of a fresh process importing boto3 and stripe, then one more for each holder on top (each
    with the handler's code and the layer on its path, as Lambda has them)."""
    paths = [str(ROOT / "functions" / "ingest"), str(ROOT / "layers" / "shared")]
    found = {}
    for holder, statement in {"boto3 + stripe": "", **_HOLDER_IMPORTS}.items():
        code = (
            f"import sys; sys.path[:0] = {paths!r}\nimport boto3, stripe\n{statement}\n"
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"measuring the peak RSS of {holder} failed:\n{result.stderr[-3000:]}")
        found[holder] = int(result.stdout.strip()) / 1024
    return found


def package_group(module: str) -> str:
    top = module.strip().split(".")[0]
    if top in _GROUPS:
        return _GROUPS[top]
    if top in sys.stdlib_module_names or top.startswith("_"):
        return "stdlib"
    return "other"


def import_profile(stderr: str) -> dict[str, dict[str, float]]:
    """Import time (each module's own, in seconds) by package group, before the first call and inside it."""
    phases: dict[str, dict[str, float]] = {"before_call": {}, "in_call": {}}
    phase = "before_call"
    for line in stderr.splitlines():
        if line.startswith(PHASE_MARK):
            phase = "in_call"
            continue
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        group = package_group(fields[2])
        phases[phase][group] = phases[phase].get(group, 0.0) + int(fields[0]) / 1e6
    return phases


# -- sizes ---------------------------------------------------------------------------------------------


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (attribute names plus values; numbers about 1 byte per 2 digits)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        digits = len(str(data).lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_bytes(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(_value_bytes(v) + 1 for v in data)
    return 1


def access_log_line_bytes() -> int:
    """One HTTP API access log line in the template's format, with typical values for a record."""
    api = load_template()["Resources"]["HttpApi"]["Properties"]
    line = str(api["AccessLogSettings"]["Format"])
    typical = {
        "$context.requestId": "Ab1Cd2Ef3Gh4IjA=",
        "$context.requestTime": "23/Nov/2026:03:17:00 +0000",
        "$context.httpMethod": "POST",
        "$context.routeKey": "POST /v1/usage",
        "$context.path": "/v1/usage",
        "$context.status": "200",
        "$context.responseLatency": "142",
        "$context.integrationLatency": "139",
        "$context.integrationStatus": "200",
        "$context.integrationErrorMessage": "-",
        "$context.error.message": "-",
        "$context.responseLength": "214",
        "$context.identity.sourceIp": "203.0.113.17",
        "$context.identity.userAgent": "python-requests/2.32.3",
    }
    for variable in sorted(typical, key=len, reverse=True):
        line = line.replace(variable, typical[variable])
    return len(line.encode())


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def seed_stdlib_bytecode(pycache: str) -> int:
    """Link the standard library's own bytecode into ``pycache`` (a ``PYTHONPYCACHEPREFIX``, which replaces every
    ``__pycache__``): a precompiled stdlib, as Lambda's runtime has, and as the other cold starts find it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tag = sys.implementation.cache_tag
    linked = 0
    for compiled in stdlib.rglob(f"__pycache__/*.{tag}.pyc"):
        relative = compiled.parent.parent.relative_to(stdlib)
        if relative.parts and relative.parts[0] in ("test", "idlelib", "tkinter", "site-packages", "lib2to3"):
            continue
        target = Path(pycache) / compiled.parent.parent.relative_to(compiled.anchor) / compiled.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            target.symlink_to(compiled)
            linked += 1
    return linked


def bytecode_state() -> dict[str, Any]:
    """Whether the packages the service imports have bytecode next to them (else every cold start compiles
    them, as on Lambda for a layer ``sam build`` made: it unpacks wheels without compiling, and ``/opt`` is
    read-only)."""
    import importlib.util

    found: dict[str, bool] = {}
    for package in ("boto3", "botocore", "stripe", "pydantic", "aws_lambda_powertools"):
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec else None
        found[package] = bool(origin and any((Path(origin).parent / "__pycache__").glob("__init__.*.pyc")))
    return {"packages_with_pyc": found, "any": any(found.values())}
