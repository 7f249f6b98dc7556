"""A Lambda instance for the bench, in a process of its own: ``python -m tests.harness.bench.child <role>``.

Roles:

- ``service``: a fresh process loads ``functions/ingest/app.py``'s handler (as ``load_handler("ingest")`` does)
  and answers the one event it reads on stdin, then exits: a cold start;
- ``floor``: a fresh process imports boto3 and stripe and makes the same DynamoDB and Stripe calls directly
  (``floor.Floor``), then exits: the cold start's floor;
- ``warm``: stays up and runs commands (one JSON line each on stdin) until stdin closes: records through the
  warm handler or the warm floor, and the local API (``local_api.serve``) on a port.

Each answer is one stdout line beginning ``BENCH ``; every other stdout line is the service's own output
(Powertools' JSON log lines and EMF metric documents), which the parent counts as CloudWatch Logs would.
Counts of the service's AWS calls come from botocore's ``before-call`` event on the service's own clients
(``usage_reporter.aws.client``), registered in the warm instance.

Before a role starts, only the standard library is imported here: a cold start must pay for what the service
(or the floor) imports, not for the harness (``lambda_runtime`` imports boto3 and PyYAML at its top), so the
cold roles load the handler and build the Lambda context themselves, exactly as ``lambda_runtime`` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
ANSWER_PREFIX = "BENCH "
PHASE_MARK = "BENCH-PHASE first-call"  # written to stderr between the handler's import and its first call
INGEST_TIMEOUT_SECONDS = 28.0  # template.yaml's IngestFunction Timeout

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class ColdContext:
    """``lambda_runtime.LambdaContext``'s fields, without importing it (see the module docstring)."""

    function_name = "bench-ingest"
    memory_limit_in_mb = 512
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-ingest"
    log_group_name = "/aws/lambda/bench-ingest"
    log_stream_name = "bench"

    def __init__(self, timeout_seconds: float = INGEST_TIMEOUT_SECONDS) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_ingest_handler() -> Handler:
    """``functions/ingest/app.py``'s handler, imported as ``lambda_runtime.load_handler("ingest")`` imports it."""
    name = "functions_ingest_app"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "ingest" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    handler: Handler = module.lambda_handler
    return handler


def answer(result: dict[str, Any]) -> None:
    sys.stdout.write(ANSWER_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def peak_rss_kb() -> dict[str, int]:
    """This process's peak RSS, kilobytes: ``VmHWM`` (its own memory's high-water mark) and ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives fork and exec: a child of a large process reports at least the parent's
    RSS at the fork (the bench's parent holds the fake Stripe and the stack: ~115 MB), so the figure used is
    ``VmHWM``, which starts anew with the executed program's memory.
    """
    peak = {"ru_maxrss": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak["vm_hwm"] = int(line.split()[1])
    except OSError:  # not Linux: ru_maxrss is all there is
        pass
    peak.setdefault("vm_hwm", peak["ru_maxrss"])
    return peak


def cold_service(job: dict[str, Any], entered: float) -> dict[str, Any]:
    """Load the handler and answer one event: the service's cold start, by phase."""
    t0 = time.perf_counter()
    handler = load_ingest_handler()
    t1 = time.perf_counter()
    sys.stderr.write(PHASE_MARK + "\n")
    sys.stderr.flush()
    response = handler(job["event"], ColdContext())
    t2 = time.perf_counter()
    body = json.loads(response.get("body") or "{}")
    return _cold_result(entered, t0, t1, t2, response["statusCode"], body.get("status"))


def cold_floor(job: dict[str, Any], entered: float) -> dict[str, Any]:
    """Import boto3 and stripe and make the four calls: the floor's cold start, by phase."""
    t0 = time.perf_counter()
    from . import floor  # boto3 and stripe, imported here: the floor's "handler import"

    t1 = time.perf_counter()
    sys.stderr.write(PHASE_MARK + "\n")
    sys.stderr.flush()
    stripe_id = floor.Floor(job["floor"]).report(job["key"], 1)
    t2 = time.perf_counter()
    return _cold_result(entered, t0, t1, t2, 200, "reported" if stripe_id else None)


def _cold_result(
    entered: float, t0: float, t1: float, t2: float, status: int, body_status: str | None
) -> dict[str, Any]:
    """A cold child's figures: loading took ``t1 - t0``, the first call ``t2 - t1`` (perf_counter times)."""
    return {
        "entered": entered,
        "answered": time.time(),
        "load_seconds": t1 - t0,
        "call_seconds": t2 - t1,
        "cpu_seconds": time.process_time(),
        "peak_rss_kb": peak_rss_kb(),
        "status": status,
        "body_status": body_status,
    }


class AwsCalls:
    """The service's AWS calls by ``service:Operation``, counted on its own clients (thread-safe)."""

    SERVICES = ("dynamodb", "sqs", "secretsmanager")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def register(self) -> None:
        from usage_reporter import aws

        for service in self.SERVICES:
            aws.client(service).meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.counts[f"{model.service_model.service_name}:{model.name}"] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class WarmInstance:
    """One warm Lambda instance (the service's handler and the floor, in one process), driven by commands."""

    def __init__(self) -> None:
        from tests.harness.lambda_runtime import LambdaContext, load_handler

        self._context = LambdaContext
        self._handler = load_handler("ingest")
        self._floor: Any = None
        self._server: Any = None
        self.calls = AwsCalls()
        self.calls.register()

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "service":
            return self._service(command["events"])
        if op == "floor":
            return self._run_floor(command["floor"], command["keys"])
        if op == "serve":
            return self._serve(int(command["port"]), command["parameters"])
        if op == "stop-serve":
            return self._stop_serve()
        raise ValueError(f"unknown command {op!r}")

    def _service(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        before = self.calls.snapshot()
        results = []
        for event in events:
            context = self._context(timeout_seconds=INGEST_TIMEOUT_SECONDS)
            cpu0, t0 = time.process_time(), time.perf_counter()
            response = self._handler(event, context)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            body = json.loads(response.get("body") or "{}")
            results.append(
                {
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "status": response["statusCode"],
                    "body_status": body.get("status"),
                    "summary": body.get("summary"),
                    "replayed": (response.get("headers") or {}).get("Idempotent-Replayed") == "true",
                }
            )
        counts = self.calls.snapshot()
        counts.subtract(before)
        return {"results": results, "aws": {name: n for name, n in counts.items() if n}}

    def _run_floor(self, config: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        if self._floor is None:
            from .floor import Floor

            self._floor = Floor(config)
        results = []
        for key in keys:
            cpu0, t0 = time.process_time(), time.perf_counter()
            self._floor.report(key, 1)
            results.append({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0})
        return {"results": results}

    def _serve(self, port: int, parameters: dict[str, str]) -> dict[str, Any]:
        """``local_api.serve`` on ``port`` in this process (its handler is this instance's)."""
        from tests.harness.local_api import serve
        from tests.harness.stack import Stack, load_template

        stack = Stack(template=load_template(), parameters=parameters)
        self._server = serve("127.0.0.1", port, {"stack": stack, "env": dict(os.environ)}, quiet=True)
        serving = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="bench-serve", daemon=True)
        serving.start()
        return {"port": port}

    def _stop_serve(self) -> dict[str, Any]:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return {}


def main() -> None:
    entered = time.time()
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role in ("service", "floor"):
        job = json.loads(sys.stdin.read())
        answer((cold_service if role == "service" else cold_floor)(job, entered))
        return
    if role != "warm":
        raise SystemExit(f"usage: python -m tests.harness.bench.child service|floor|warm (not {role!r})")
    instance = WarmInstance()
    answer({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = instance.run(json.loads(line))
        except Exception as exc:  # the parent shows it and stops
            result = {"error": f"{type(exc).__name__}: {exc}"}
        answer(result)


if __name__ == "__main__":
    main()
