"""The local tools a user runs: the sample events, the Docker-free invoke, and `make run`'s server."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.harness.client import send
from tests.harness.invoke import invoke
from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http_api_event
from tests.harness.local_api import free_port
from tests.harness.stack import ROOT
from usage_reporter import wiring
from usage_reporter.auth import sign


def _load_events() -> Any:
    spec = importlib.util.spec_from_file_location("events_generate", ROOT / "events" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GENERATOR = _load_events()
EVENTS, SQS_EVENTS = _GENERATOR.EVENTS, _GENERATOR.SQS_EVENTS


@pytest.fixture
def restored_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    wiring.reset()


def test_events_folder_holds_exactly_the_generated_events() -> None:
    assert sorted(p.name for p in (ROOT / "events").glob("*.json")) == sorted([*EVENTS, *SQS_EVENTS])


def test_retry_queue_event_drives_the_worker(restored_environment: None) -> None:
    event = json.loads((ROOT / "events" / "retry-queue-batch.json").read_text())

    response = invoke(event)

    assert response == {"batchItemFailures": []}  # one reported, one dead-lettered: none left to retry


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_sample_event_gives_its_documented_answer(name: str, restored_environment: None) -> None:
    expected = EVENTS[name][3]
    event = json.loads((ROOT / "events" / name).read_text())

    response = invoke(event)

    assert response["statusCode"] == expected, response
    if name == "usage-batch.json":
        assert json.loads(response["body"])["summary"] == {"reported": 3}
    if name == "meter-event-batch.json":
        assert json.loads(response["body"])["summary"] == {"accepted": 3}


def test_stale_sample_signature_is_refused_when_sent_as_is(restored_environment: None) -> None:
    event = json.loads((ROOT / "events" / "usage-record.json").read_text())
    event["headers"]["x-usage-signature"] = re.sub(r"t=\d+", "t=1000000000", event["headers"]["x-usage-signature"])

    assert invoke(event, as_is=True)["statusCode"] == 401
    assert invoke(event)["statusCode"] == 401  # a tampered signature is not "refreshed" either


@pytest.fixture
def local_server() -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRIPE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.local_api", "--port", str(port), "--retry-delay", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    banner: list[str] = []
    deadline = time.monotonic() + 60
    assert process.stdout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        banner.append(line)
        if line.startswith("  --data-binary"):
            break
    try:
        yield f"http://127.0.0.1:{port}", "".join(banner)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_local_server_serves_the_real_handler_over_http(local_server: tuple[str, str]) -> None:
    url, banner = local_server
    body = json.dumps({"idempotency_key": "k1", "subscription_item": "si_demo", "quantity": 2}).encode()

    status, _, raw = send(url, "/v1/usage", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    replay_status, replay_headers, replay_raw = send(url, "/v1/usage", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    unknown_route, _, _ = send(url, "/v1/other", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)

    assert (status, json.loads(raw)["status"]) == (200, "reported")
    assert (replay_status, replay_headers.get("Idempotent-Replayed")) == (200, "true")
    assert json.loads(replay_raw)["stripe_id"] == json.loads(raw)["stripe_id"]
    assert unknown_route == 404
    ledger_url = re.search(r"ledger: (\S+)/_fake/ledger", banner)
    assert ledger_url, banner


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_printed_curl_example_works_as_pasted(local_server: tuple[str, str]) -> None:
    _, banner = local_server
    command = banner[banner.index("curl -sS") :]

    output = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout

    assert output.startswith("HTTP/1.1 200")
    assert '"status":"reported"' in output


@pytest.mark.slow
def test_local_server_retries_a_queued_record_in_the_background(local_server: tuple[str, str]) -> None:
    url, banner = local_server
    match = re.search(r"(http://\S+)/_fake/ledger", banner)
    assert match, banner
    stripe_url = match.group(1)
    urllib.request.urlopen(
        urllib.request.Request(f"{stripe_url}/_fake/faults", data=b"kind=status&status=429", method="POST")
    ).read()
    body = json.dumps({"idempotency_key": "late-1", "subscription_item": "si_demo", "quantity": 6}).encode()

    status, _, raw = send(url, "/v1/usage", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    assert (status, json.loads(raw)["status"]) == (202, "queued")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, _, raw = send(url, "/v1/usage", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        if json.loads(raw)["status"] == "reported":
            break
        time.sleep(0.5)
    assert (status, json.loads(raw)["status"]) == (200, "reported")
    with urllib.request.urlopen(f"{stripe_url}/_fake/ledger") as ledger:
        assert [r["quantity"] for r in json.load(ledger)["data"]] == [6]


def test_an_old_sample_event_is_sent_as_if_sent_now(restored_environment: None) -> None:
    """Checked-in events age: explicit timestamps keep their age relative to the event, or Stripe would
    refuse them once they leave the billing period (and this test would start failing one day)."""
    event = json.loads((ROOT / "events" / "usage-record-set.json").read_text())
    body = json.loads(event["body"])
    body["timestamp"] -= 40 * 86400
    event["requestContext"]["timeEpoch"] -= 40 * 86400 * 1000
    event["body"] = json.dumps(body)
    event["headers"]["x-usage-signature"] = sign(DEMO_CLIENT_SECRET, event["body"].encode(), body["timestamp"] + 60)

    response = invoke(event)

    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["timestamp"] > time.time() - 3600


@pytest.mark.slow
def test_local_server_posts_stripes_error_reports_back_like_stripe(local_server: tuple[str, str]) -> None:
    url, _ = local_server
    events = [
        {"idempotency_key": "ok", "event_name": "api_requests", "customer": "cus_demo", "value": 1},
        {"idempotency_key": "bad", "event_name": "api_requests", "customer": "cus_nobody", "value": 1},
    ]
    body = json.dumps({"events": events}).encode()

    status, _, raw = send(url, "/v1/meter_events/batch", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    assert (status, json.loads(raw)["summary"]) == (200, {"accepted": 2})

    def answers() -> list[str]:
        _, _, replay = send(url, "/v1/meter_events/batch", body, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        return [r["status"] for r in json.loads(replay)["results"]]

    wait_until(lambda: answers() == ["accepted", "rejected"], timeout=20)


def _generated_event(tmp_path: Any) -> Any:
    """What `sam local generate-event apigateway http-api-proxy` writes (the fields that matter here)."""
    event = http_api_event("POST", "/path/to/resource", "Hello from Lambda", {"Header1": "value1"})
    event["routeKey"] = "$default"
    path = tmp_path / "generated.json"
    path.write_text(json.dumps(event))
    return path


def test_invoke_names_the_routes_when_an_event_matches_none(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.harness.invoke", str(_generated_event(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "'POST /path/to/resource', not one of the API's routes" in result.stderr
    assert "POST /v1/usage" in result.stderr and "--path" in result.stderr


def test_invoke_makes_a_generated_event_a_signed_usage_record(tmp_path: Any) -> None:
    body = json.dumps({"idempotency_key": "generated-1", "subscription_item": "si_demo", "quantity": 2})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.harness.invoke",
            str(_generated_event(tmp_path)),
            "--path",
            "/v1/usage",
            "--body",
            body,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    response = json.loads(result.stdout[result.stdout.index('{\n  "statusCode"') :])
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "reported"


def test_a_busy_port_is_one_clear_line(tmp_path: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRIPE_"))}
        result = subprocess.run(
            [sys.executable, "-m", "tests.harness.local_api", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert result.returncode == 1
    assert result.stderr.strip().endswith("try make run PORT=3001"), result.stderr[-500:]
    assert "Traceback" not in result.stderr


def test_the_local_api_matches_routes_with_a_path_parameter_as_api_gateway_does() -> None:
    from tests.harness.local_api import matching_route

    known = {"POST /v1/usage", "POST /v1/usage/batch", "GET /v1/usage/{idempotency_key}"}

    assert matching_route(known, "POST", "/v1/usage/batch") == "POST /v1/usage/batch"
    assert matching_route(known, "GET", "/v1/usage/k%2F1") == "GET /v1/usage/{idempotency_key}"
    assert matching_route(known, "GET", "/v1/usage/a/b") is None
    assert matching_route(known, "GET", "/v1/usage") is None
