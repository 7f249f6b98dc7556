"""The callers' client library (``clients/python``) and shell function (``clients/shell``), against the real
ingest handler over HTTP: a loopback server in front of the ``deployment`` (moto AWS from the template, the
fake Stripe), whose faults make the service answer ``503`` and ``409``, and lose connections."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from usage_reporter_client import (
    CancelRefused,
    Conflict,
    ConnectionFailed,
    Forbidden,
    MeterEventResult,
    RecordError,
    ServiceUnavailable,
    Unauthorized,
    UsageRecord,
    UsageRecordResult,
    UsageReporterClient,
    ValidationRefused,
)
from usage_reporter_client.client import encode_meter_value
from usage_reporter_client.retrying import backoff_delay, retry_after_seconds

from tests.conftest import RESTRICTED_CLIENT, SUBSCRIPTION_ITEM, Deployment
from tests.harness.aws_clients import aws_client
from tests.harness.aws_faults import AwsFaults
from tests.harness.fake_stripe import Fault
from tests.harness.lambda_runtime import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    GatewayRequestHandler,
    LambdaContext,
    http_api_event,
    load_handler,
)
from tests.harness.local_api import free_port
from tests.harness.stack import ROOT
from usage_reporter.auth import sign
from usage_reporter.config import get_settings
from usage_reporter.dedup import KEY_PREFIX, dedup_request, idempotency_config, persistence_layer
from usage_reporter.models import UsageRecord as ServiceUsageRecord

OTHER_ITEM = "si_TESTother002"
METER = "api_calls"
CUSTOMER = "cus_TESTclient01"
SHELL_FUNCTION = ROOT / "clients" / "shell" / "usage_reporter.sh"


@dataclass(frozen=True)
class Seen:
    path: str
    body: bytes
    status: int


@dataclass
class Service:
    """The ingest handler at ``url``, as API Gateway serves it, keeping every request it answered."""

    url: str
    deployment: Deployment
    seen: list[Seen] = field(default_factory=list)

    def client(self, secret: str = DEMO_CLIENT_SECRET, client_id: str = DEMO_CLIENT_ID, **options: Any) -> Client:
        return Client(self.url, client_id, secret, **{"sleep": Sleeps(), **options})

    def bodies(self) -> list[Any]:
        return [json.loads(s.body) for s in self.seen]


class Sleeps(list[float]):
    """A client's ``sleep``: the waits asked for, recorded; ``real`` waits that long (at most 1 s) too, and
    ``before_next`` runs first (what changes between two attempts)."""

    def __init__(self, *, real: bool = False, before_next: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.real = real
        self.before_next = before_next

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.before_next:
            self.before_next()
        if self.real:
            time.sleep(min(seconds, 1.0))


class Client(UsageReporterClient):
    """The library's client, with its ``sleep`` at hand for the test."""

    @property
    def sleeps(self) -> Sleeps:
        assert isinstance(self._sleep, Sleeps)
        return self._sleep


@pytest.fixture
def service(deployment: Deployment) -> Iterator[Service]:
    handler = load_handler("ingest")
    instance = threading.Lock()  # one Lambda instance: one request at a time
    served: Service

    class Gateway(GatewayRequestHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
            event = http_api_event("POST", self.path, body, headers)
            with instance:
                response = handler(event, LambdaContext(timeout_seconds=deployment.timeout_seconds))
            raw = (response.get("body") or "").encode()
            served.seen.append(Seen(self.path, body, response["statusCode"]))
            self.reply(response["statusCode"], response.get("headers") or {}, raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    server.daemon_threads = True
    served = Service(f"http://127.0.0.1:{server.server_address[1]}", deployment)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served
    server.shutdown()
    server.server_close()


def lose_answers_and_sqs(deployment: Deployment, **fault: Any) -> None:
    """Stripe writes the record but its answers are lost, and SQS is gone: the service answers 503 (the
    caller's retry gets Stripe's replay of the record, and needs no SQS)."""
    deployment.stripe.inject(Fault.lost_response(500, **fault), times=3)  # the SDK's three attempts
    aws_client("sqs").delete_queue(QueueUrl=deployment.retry_queue_url)


# -- one record --------------------------------------------------------------------------------------


def test_a_record_is_reported_and_a_repeat_is_a_replay(service: Service) -> None:
    client = service.client()

    result = client.report_usage("k1", SUBSCRIPTION_ITEM, 3)
    again = client.report_usage("k1", SUBSCRIPTION_ITEM, 3)

    [written] = service.deployment.stripe.ledger
    assert isinstance(result, UsageRecordResult)
    assert (result.status, result.status_code, result.replayed) == ("reported", 200, False)
    assert (result.idempotency_key, result.subscription_item, result.quantity, result.action) == (
        "k1",
        SUBSCRIPTION_ITEM,
        3,
        "increment",
    )
    assert result.stripe_id == written["id"] and result.timestamp == written["timestamp"]
    assert result.mirror is None and result.reason is None and result.error is None
    assert (again.status, again.replayed, again.stripe_id) == ("reported", True, result.stripe_id)
    assert len(service.seen) == 2 and client.sleeps == []


def test_a_record_stripe_refuses_is_a_rejected_result_not_an_error(service: Service) -> None:
    client = service.client()

    result = client.report_usage("k1", "si_nope", 3)

    assert (result.status, result.status_code) == ("rejected", 422)
    assert result.error is not None and result.error.code == "resource_missing"
    assert "si_nope" in result.error.message
    assert len(service.seen) == 1  # a definite answer: not retried


def test_503_is_retried_with_the_same_bytes_and_stripe_holds_one_record(service: Service) -> None:
    lose_answers_and_sqs(service.deployment)  # SQS stays gone: the retry does not need it
    client = service.client(max_backoff=60)

    result = client.report_usage("k1", SUBSCRIPTION_ITEM, 5)

    assert [s.status for s in service.seen] == [503, 200]
    assert service.seen[0].body == service.seen[1].body  # byte for byte (only the signature is new)
    [written] = service.deployment.stripe.ledger
    assert (result.status, result.stripe_id, result.timestamp) == ("reported", written["id"], written["timestamp"])
    assert client.sleeps == [30.0]  # the service's Retry-After


def test_retry_after_is_capped_at_max_backoff_and_attempts_are_bounded(service: Service) -> None:
    lose_answers_and_sqs(service.deployment)
    # Every attempt ends in 503 now: the answers stay lost and SQS gone.
    service.deployment.stripe.inject(Fault.lost_response(500), times=30)
    client = service.client(max_backoff=2.5, max_attempts=3)

    with pytest.raises(ServiceUnavailable) as raised:
        client.report_usage("k1", SUBSCRIPTION_ITEM, 5)

    assert (raised.value.status_code, raised.value.error_type, raised.value.attempts) == (503, "service_unavailable", 3)
    assert client.sleeps == [2.5, 2.5]
    assert [s.status for s in service.seen] == [503, 503, 503]
    assert len({s.body for s in service.seen}) == 1


def test_a_dynamodb_outage_answered_503_is_retried_once_it_is_over(service: Service, aws_faults: AwsFaults) -> None:
    aws_faults.fail("dynamodb:PutItem")  # the dedup lock cannot be written: nothing happens, 503
    client = service.client(sleep=Sleeps(before_next=aws_faults.clear))

    result = client.report_usage("k1", SUBSCRIPTION_ITEM, 5)

    assert [s.status for s in service.seen] == [503, 200]
    assert result.status == "reported" and len(service.deployment.stripe.ledger) == 1
    assert "dynamodb:PutItem" in aws_faults.failed
    assert client.sleeps == [30.0]


def test_409_in_progress_is_retried_until_the_key_is_free(service: Service) -> None:
    # Another instance holds the key's lock (or died holding it): it expires in 1.5 s.
    settings = get_settings()
    store = persistence_layer(settings)
    store.configure(idempotency_config(settings), key_prefix=KEY_PREFIX)
    held = ServiceUsageRecord.model_validate(
        {"idempotency_key": "k1", "subscription_item": SUBSCRIPTION_ITEM, "quantity": 2}
    )
    store.save_inprogress(data=dedup_request(DEMO_CLIENT_ID, "k1", held.dedup_payload()), remaining_time_in_millis=1500)
    client = service.client(sleep=Sleeps(real=True), max_backoff=0.4, max_attempts=10)

    result = client.report_usage("k1", SUBSCRIPTION_ITEM, 2)

    statuses = [s.status for s in service.seen]
    assert statuses[0] == 409 and statuses[-1] == 200 and set(statuses[:-1]) == {409}
    assert set(client.sleeps) == {0.4}  # Retry-After: 5, capped
    assert len({s.body for s in service.seen}) == 1
    assert result.status == "reported" and len(service.deployment.stripe.ledger) == 1


@pytest.mark.parametrize("failure", ["refused", "timeout"])
def test_no_answer_is_retried_then_raised(failure: str) -> None:
    listener = None
    if failure == "refused":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    else:  # the kernel accepts the connection; nobody ever answers
        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = Client(url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, sleep=Sleeps(), timeout=0.3, max_attempts=3, backoff=1)
    try:
        with pytest.raises(ConnectionFailed) as raised:
            client.report_usage("k1", SUBSCRIPTION_ITEM, 1)
    finally:
        if listener:
            listener.close()

    assert isinstance(raised.value, ServiceUnavailable) and raised.value.attempts == 3
    assert raised.value.status_code is None and raised.value.__cause__ is not None
    assert len(client.sleeps) == 2
    assert 0.5 <= client.sleeps[0] <= 1 and 1 <= client.sleeps[1] <= 2  # 1 s doubling, jittered


def test_other_4xx_are_typed_errors_and_never_retried(service: Service) -> None:
    client = service.client()
    restricted = service.client(client_id=RESTRICTED_CLIENT[0], secret=RESTRICTED_CLIENT[1])
    client.report_usage("k1", SUBSCRIPTION_ITEM, 1)
    service.seen.clear()

    with pytest.raises(Unauthorized) as unauthorized:
        service.client(secret="not-the-secret").report_usage("k2", SUBSCRIPTION_ITEM, 1)
    with pytest.raises(ValidationRefused) as invalid:
        client.report_usage("k3", SUBSCRIPTION_ITEM, -1)
    with pytest.raises(Forbidden) as forbidden:
        restricted.report_usage("k4", "si_elsewhere", 1)
    with pytest.raises(Conflict) as conflict:
        client.report_usage("k1", SUBSCRIPTION_ITEM, 2)  # the key's first payload said 1
    with pytest.raises(CancelRefused) as cancel:
        client.cancel_meter_event("never-sent")

    assert [s.status for s in service.seen] == [401, 422, 403, 409, 422]  # one request each
    assert client.sleeps == []
    assert (unauthorized.value.status_code, unauthorized.value.error_type) == (401, "unauthorized")
    assert [(f.field, f.type) for f in invalid.value.fields] == [("quantity", "greater_than_equal")]
    assert [f.field for f in forbidden.value.fields] == ["subscription_item"]
    assert conflict.value.error_type == "idempotency_conflict"
    assert cancel.value.error_type == "unknown_idempotency_key"
    assert len(service.deployment.stripe.ledger) == 1


# -- batches -----------------------------------------------------------------------------------------


def records(count: int, prefix: str = "b") -> list[UsageRecord]:
    return [
        {"idempotency_key": f"{prefix}-{i:03}", "subscription_item": SUBSCRIPTION_ITEM, "quantity": i + 1}
        for i in range(count)
    ]


def test_a_batch_of_250_is_sent_as_three_requests_with_results_in_order(service: Service) -> None:
    batch = service.client().report_usage_batch(records(250))

    assert [len(body["records"]) for body in service.bodies()] == [100, 100, 50]
    assert batch.requests == 3 and batch.summary == {"reported": 250} and batch.errors == []
    assert [r.idempotency_key for r in batch.results] == [f"b-{i:03}" for i in range(250)]
    assert all(isinstance(r, UsageRecordResult) and r.quantity == i + 1 for i, r in enumerate(batch.results))
    assert len(service.deployment.stripe.ledger) == 250


def test_only_the_records_the_service_could_not_answer_are_sent_again(service: Service) -> None:
    service.deployment.stripe.add_subscription_items(OTHER_ITEM)
    lose_answers_and_sqs(service.deployment, subscription_item=OTHER_ITEM)
    sent: list[UsageRecord] = [
        {"idempotency_key": "a", "subscription_item": SUBSCRIPTION_ITEM, "quantity": 1},
        {"idempotency_key": "b", "subscription_item": OTHER_ITEM, "quantity": 2, "action": "set"},
        {"idempotency_key": "c", "subscription_item": "si_nope", "quantity": 3},
    ]
    client = service.client()

    batch = client.report_usage_batch(sent)

    first, second = service.seen
    assert [r["idempotency_key"] for r in json.loads(second.body)["records"]] == ["b"]
    b_bytes = json.dumps(sent[1], separators=(",", ":")).encode()
    assert b_bytes in first.body and b_bytes in second.body
    assert batch.errors == []
    assert [(r.idempotency_key, r.status) for r in batch.results if isinstance(r, UsageRecordResult)] == [
        ("a", "reported"),
        ("b", "reported"),
        ("c", "rejected"),
    ]
    assert batch.summary == {"reported": 2, "rejected": 1} and batch.requests == 2
    assert sorted(r["subscription_item"] for r in service.deployment.stripe.ledger) == [SUBSCRIPTION_ITEM, OTHER_ITEM]
    assert len(client.sleeps) == 1


def test_a_record_still_unanswered_when_attempts_run_out_is_a_record_error(service: Service) -> None:
    service.deployment.stripe.add_subscription_items(OTHER_ITEM)
    lose_answers_and_sqs(service.deployment, subscription_item=OTHER_ITEM)
    service.deployment.stripe.inject(Fault.lost_response(500, subscription_item=OTHER_ITEM), times=30)
    sent: list[UsageRecord] = [*records(1), {"idempotency_key": "x", "subscription_item": OTHER_ITEM, "quantity": 2}]

    batch = service.client(max_attempts=2).report_usage_batch(sent)

    reported, unanswered = batch.results
    assert isinstance(reported, UsageRecordResult) and reported.status == "reported"
    assert isinstance(unanswered, RecordError) and batch.errors == [unanswered]
    assert (unanswered.idempotency_key, unanswered.status_code, unanswered.error_type) == (
        "x",
        503,
        "service_unavailable",
    )
    assert unanswered.retryable and batch.summary == {"reported": 1, "service_unavailable": 1}


def test_a_key_twice_in_a_long_batch_is_refused_before_anything_is_sent(service: Service) -> None:
    sent = records(150)
    sent[120] = {**sent[120], "idempotency_key": sent[3]["idempotency_key"]}

    with pytest.raises(ValidationRefused) as raised:
        service.client().report_usage_batch(sent)

    assert service.seen == [] and raised.value.status_code is None
    [duplicate] = raised.value.fields
    assert (duplicate.field, duplicate.index, duplicate.type) == (
        "records[120].idempotency_key",
        120,
        "duplicate_idempotency_key",
    )


def test_an_invalid_record_in_a_later_request_is_named_by_its_place_in_the_whole_batch(service: Service) -> None:
    sent = records(130)
    sent[117] = {**sent[117], "quantity": -1}

    with pytest.raises(ValidationRefused) as raised:
        service.client().report_usage_batch(sent)

    [invalid] = raised.value.fields
    assert (invalid.field, invalid.index) == ("records[117].quantity", 117)
    assert "records[117].quantity" in str(raised.value)
    assert len(raised.value.completed) == 100  # the first request's records were processed
    assert [s.status for s in service.seen] == [200, 422]


def test_an_empty_batch_sends_nothing(service: Service) -> None:
    batch = service.client().report_usage_batch([])

    assert (batch.results, batch.summary, batch.requests, service.seen) == ([], {}, 0, [])


# -- meter events ------------------------------------------------------------------------------------


def test_meter_events_one_then_a_batch_of_150_then_a_cancel(service: Service) -> None:
    service.deployment.stripe.add_meter(METER)
    service.deployment.stripe.add_customers(CUSTOMER)
    client = service.client()

    single = client.report_meter_event("m-1", METER, Decimal("0.10"), customer=CUSTOMER)
    batch = client.report_meter_events(
        [{"idempotency_key": f"e-{i:03}", "event_name": METER, "customer": CUSTOMER, "value": i} for i in range(150)]
    )
    cancel = client.cancel_meter_event("m-1")

    assert isinstance(single, MeterEventResult)
    assert (single.status, single.value, single.customer, single.event_name) == ("reported", "0.10", CUSTOMER, METER)
    assert [len(body.get("events", [])) for body in service.bodies()] == [0, 100, 50, 0]
    assert batch.summary == {"accepted": 150} and batch.requests == 2  # streamed: Stripe validates later
    assert [r.idempotency_key for r in batch.results] == [f"e-{i:03}" for i in range(150)]
    assert (cancel.status, cancel.cancelled_identifier) == ("reported", single.stripe_identifier)


@pytest.mark.parametrize(
    ("value", "sent"),
    [(12, 12), ("12.5", "12.5"), (Decimal("0.10"), "0.10"), (0.1, "0.1"), (1e-07, "0.0000001")],
)
def test_meter_values_are_sent_as_integers_or_decimal_strings(value: Any, sent: Any) -> None:
    assert encode_meter_value(value) == sent


# -- the retry rules' arithmetic ---------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480) == 30.0
    assert retry_after_seconds(None) is retry_after_seconds("soon") is None
    assert backoff_delay(1, 120.0, backoff=0.5, max_backoff=10) == 10  # capped
    assert backoff_delay(4, None, backoff=0.5, max_backoff=10, jitter=lambda: 1.0) == 4.0
    assert backoff_delay(4, None, backoff=0.5, max_backoff=10, jitter=lambda: 0.0) == 2.0
    assert backoff_delay(60, None, backoff=0.5, max_backoff=10, jitter=lambda: 1.0) == 10


def test_the_client_signs_as_the_service_verifies() -> None:
    from usage_reporter_client import sign as client_sign

    body = b'{"idempotency_key":"k1"}'

    assert client_sign("s3cret", body, 1700000000) == sign("s3cret", body, 1700000000)
    assert client_sign(["new", "old"], body, 1700000000) == (
        f"t=1700000000,{sign('new', body, 1700000000).split(',')[1]},{sign('old', body, 1700000000).split(',')[1]}"
    )
    assert "s3cret" not in repr(UsageReporterClient("http://127.0.0.1:1", "c", "s3cret"))


# -- installed on its own ----------------------------------------------------------------------------

IN_A_FRESH_VENV = """
import importlib.metadata, json, sys
from pathlib import Path
import usage_reporter_client
from usage_reporter_client import UsageReporterClient, sign

signature = sign("s3cret", b"{}", 1700000000)
result = UsageReporterClient(sys.argv[1], sys.argv[2], sys.argv[3]).report_usage("fresh-1", sys.argv[4], 4)
heavy = ("boto3", "botocore", "stripe", "aws_lambda_powertools", "pydantic", "usage_reporter")
print(json.dumps({
    "signature": signature,
    "status": result.status,
    "imported": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
    "distributions": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
    "location": usage_reporter_client.__file__,
    "typed": (Path(usage_reporter_client.__file__).parent / "py.typed").is_file(),
}))
"""


def _install(python: Path) -> None:
    """A fresh virtualenv at ``python``'s place, and ``./clients/python`` installed into it: with uv (its cache
    first, so no network is needed once the dev venv was built), else with the virtualenv's own pip."""
    source = str(python.parent.parent.parent / "client-source")  # a copy: the build writes next to the sources
    shutil.copytree(
        ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns("build", "*.egg-info", ".*_cache")
    )
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    venv = ["--without-pip"] if uv else []  # quicker; pip is only needed without uv
    subprocess.run([sys.executable, "-m", "venv", *venv, str(python.parent.parent)], check=True, timeout=120)
    commands = (
        [[uv, "pip", "install", "--python", str(python), *extra, source] for extra in (["--offline"], [])] if uv else []
    )
    commands.append([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source])
    outputs = []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode == 0:
            return
        outputs.append(f"{' '.join(map(str, command))}:\n{done.stdout}{done.stderr}")
    pytest.fail("could not install the client library:\n" + "\n".join(outputs))


@pytest.mark.slow
def test_pip_install_into_a_fresh_virtualenv_needs_nothing_of_the_service(service: Service, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _install(python)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    done = subprocess.run(
        [str(python), "-c", IN_A_FRESH_VENV, service.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SUBSCRIPTION_ITEM],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["signature"] == sign("s3cret", b"{}", 1700000000)
    assert report["status"] == "reported"
    assert report["imported"] == []
    assert set(report["distributions"]) <= {"pip", "setuptools", "stripe-usage-reporter-client"}
    assert "stripe-usage-reporter-client" in report["distributions"]
    assert report["location"].startswith(str(venv)) and report["typed"]
    assert [r["subscription_item"] for r in service.deployment.stripe.ledger] == [SUBSCRIPTION_ITEM]


# -- the shell function ------------------------------------------------------------------------------

needs_curl_and_openssl = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl") and shutil.which("bash")), reason="needs bash, curl, openssl"
)


def usage_report(service: Service, path: str, body: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = (
        f'source {SHELL_FUNCTION} && usage_report "$1" "$2"; code=$?; echo "status=$USAGE_REPORT_STATUS"; exit $code'
    )
    environment = {
        **os.environ,
        "USAGE_REPORTER_URL": service.url + "/",
        "USAGE_REPORTER_CLIENT": DEMO_CLIENT_ID,
        "USAGE_REPORTER_SECRET": DEMO_CLIENT_SECRET,
        **env,
    }
    return subprocess.run(
        ["bash", "-c", script, "usage_report", path, body],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@needs_curl_and_openssl
def test_the_shell_function_signs_posts_and_prints_the_answer(service: Service) -> None:
    body = json.dumps({"idempotency_key": "sh-1", "subscription_item": SUBSCRIPTION_ITEM, "quantity": 4})

    done = usage_report(service, "/v1/usage", body)
    refused = usage_report(service, "/v1/usage", body, USAGE_REPORTER_SECRET="wrong")

    assert done.returncode == 0, done.stderr
    answer, status = done.stdout.splitlines()
    assert (json.loads(answer)["status"], status) == ("reported", "status=200")
    assert refused.returncode == 1 and refused.stdout.splitlines()[-1] == "status=401"
    assert [s.status for s in service.seen] == [200, 401]  # the 401 was not retried
    assert service.seen[0].body == body.encode()  # exactly the bytes given, as signed
    assert len(service.deployment.stripe.ledger) == 1


@pytest.mark.slow
@needs_curl_and_openssl
def test_the_shell_function_retries_a_503_with_the_same_bytes(service: Service) -> None:
    lose_answers_and_sqs(service.deployment)
    body = json.dumps({"idempotency_key": "sh-2", "subscription_item": SUBSCRIPTION_ITEM, "quantity": 4})

    done = usage_report(service, "/v1/usage", body, USAGE_REPORTER_MAX_BACKOFF="0")

    assert done.returncode == 0, done.stderr
    assert [s.status for s in service.seen] == [503, 200]
    assert service.seen[0].body == service.seen[1].body
    assert len(service.deployment.stripe.ledger) == 1


@pytest.mark.slow
@needs_curl_and_openssl
def test_the_shell_function_gives_up_on_no_answer_with_curls_code() -> None:
    script = f"source {SHELL_FUNCTION} && usage_report /v1/usage '{{}}'"
    environment = {
        **os.environ,
        "USAGE_REPORTER_URL": f"http://127.0.0.1:{free_port()}",
        "USAGE_REPORTER_CLIENT": DEMO_CLIENT_ID,
        "USAGE_REPORTER_SECRET": DEMO_CLIENT_SECRET,
        "USAGE_REPORTER_MAX_ATTEMPTS": "2",
        "USAGE_REPORTER_MAX_BACKOFF": "0",
    }

    done = subprocess.run(
        ["bash", "-c", script], env=environment, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 7  # curl: could not connect
    assert "after 2 attempt(s)" in done.stderr
