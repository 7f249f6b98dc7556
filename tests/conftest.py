"""Fixtures: a fake Stripe over real HTTP, moto AWS built from template.yaml, and a signed HTTP client
that goes through the real handler exactly as API Gateway would call it."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend
from moto.server import ThreadedMotoServer

from tests.harness.aws_clients import aws_client
from tests.harness.aws_faults import AwsFaults
from tests.harness.fake_stripe import FakeStripe
from tests.harness.lambda_runtime import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    FAKE_STRIPE_KEY,
    LambdaContext,
    http_api_event,
    load_handler,
    local_environment,
    poll_queue_once,
)
from tests.harness.local_api import free_port, serialize_moto_dynamodb_writes
from tests.harness.stack import Stack
from usage_reporter import wiring
from usage_reporter.auth import sign
from usage_reporter.dedup import KEY_PREFIX, PLAN_PREFIX
from usage_reporter.observability import logger

SUBSCRIPTION_ITEM = "si_TESTitem001"
OTHER_CLIENT = ("other-client", "other-secret")
ROTATING_CLIENT = ("rotating-client", ["new-secret", "old-secret"])
# A client that may report only to these subscription items (an exact id and a prefix).
RESTRICTED_CLIENT = ("restricted-client", "restricted-secret")
RESTRICTED_ITEMS = [SUBSCRIPTION_ITEM, "si_team*"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each pytest-xdist worker starts with its share of the slow tests, so that none starts one when the others
    are done. ``--dist worksteal`` gives each worker one contiguous block of the collected order (the rest is
    stolen from the end of the others' blocks): each block begins with every n-th slow test. The order depends
    only on the worker count, so every worker collects the same one, as pytest-xdist requires."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = iter([item for item in items if not item.get_closest_marker("slow")])
    bounds = [len(items) * block // workers for block in range(workers + 1)]
    ordered: list[pytest.Item] = []
    for block in range(workers):
        share = slow[block::workers]
        ordered += share + list(itertools.islice(fast, max(0, bounds[block + 1] - bounds[block] - len(share))))
    items[:] = ordered + list(fast)


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: Any

    def __repr__(self) -> str:
        return f"HttpResult({self.status}, {self.body!r})"


@dataclass
class Deployment:
    """One local deployment: the template's resources in moto, the ingest handler, and the fake Stripe."""

    stack: Stack
    env: dict[str, str]
    stripe: FakeStripe
    timeout_seconds: float
    overrides: dict[str, str] = field(default_factory=dict)
    default_client: tuple[str, str] = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    invocations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def table_name(self) -> str:
        return self.env["IDEMPOTENCY_TABLE_NAME"]

    @property
    def retry_queue_url(self) -> str:
        return self.env["RETRY_QUEUE_URL"]

    @property
    def dead_letter_queue_url(self) -> str:
        return self.env["DEAD_LETTER_QUEUE_URL"]

    def post(
        self,
        path: str,
        body: Any,
        *,
        client: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        signature: str | None = None,
        timeout_seconds: float | None = None,
    ) -> HttpResult:
        raw = body if isinstance(body, bytes | str) else json.dumps(body)
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        client_id, secret = client or self.default_client
        all_headers = {
            "content-type": "application/json",
            "x-usage-client": client_id,
            "x-usage-signature": signature or sign(secret, raw_bytes),
            **(headers or {}),
        }
        event = http_api_event("POST", path, raw_bytes, {k: v for k, v in all_headers.items() if v is not None})
        context = LambdaContext(timeout_seconds=timeout_seconds or self.timeout_seconds)
        response = load_handler("ingest")(event, context)
        self.invocations.append(event)
        return HttpResult(
            status=response["statusCode"],
            headers={k.lower(): v for k, v in response.get("headers", {}).items()},
            body=json.loads(response["body"]) if response.get("body") else None,
        )

    def run_retry_worker(self, *, rounds: int = 20) -> list[dict[str, Any]]:
        """Let the retry worker drain the retry queue as Lambda's SQS event source would; its responses."""
        batch_size = int(self.stack.parameters["RetryBatchSize"])
        timeout = self.stack.function_timeout("RetryFunction")
        responses = []
        with self.function_environment("RetryFunction"):
            for _ in range(rounds):
                response = poll_queue_once(self.retry_queue_url, "retry", batch_size, timeout)
                if response is None:
                    break
                responses.append(response)
        return responses

    @contextlib.contextmanager
    def function_environment(self, logical_id: str) -> Iterator[None]:
        """The process environment of another function of the template (with the test's overrides)."""
        saved = dict(os.environ)
        os.environ.update({**self.stack.function_environment(logical_id), **self.overrides})
        wiring.reset()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            wiring.reset()

    def instance_environment(self, logical_id: str, aws_endpoint_url: str) -> dict[str, str]:
        """A separate process's environment for the template's function ``logical_id``, on a moto server."""
        return {
            **self.stack.function_environment(logical_id),
            **self.env_overrides_for(logical_id),
            "AWS_ENDPOINT_URL": aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

    def env_overrides_for(self, logical_id: str) -> dict[str, str]:
        # The ingest's environment here is the test's (secrets, Stripe base); other functions get the overrides.
        return {**self.env, **self.overrides} if logical_id == "IngestFunction" else dict(self.overrides)

    def stored_answer(self, key: str, client_id: str = DEMO_CLIENT_ID, *, prefix: str = KEY_PREFIX) -> dict[str, Any]:
        """The answer stored for ``key`` among the dedup records of one kind (``prefix``: the kind's key prefix)."""
        items = self.dedup_items(prefix)
        [item] = [i for i in items if json.loads(i["data"]["S"])["body"].get("idempotency_key") == key]
        assert item["status"]["S"] == "COMPLETED"
        return json.loads(item["data"]["S"])  # type: ignore[no-any-return]

    # -- what is stored ------------------------------------------------------------------------

    def table_items(self) -> list[dict[str, Any]]:
        return aws_client("dynamodb").scan(TableName=self.table_name)["Items"]  # type: ignore[no-any-return]

    def dedup_items(self, prefix: str = KEY_PREFIX) -> list[dict[str, Any]]:
        """Powertools' dedup records (the stored answers) of one kind."""
        return [i for i in self.table_items() if i["id"]["S"].startswith(f"{prefix}#")]

    def delivery_plans(self) -> list[dict[str, Any]]:
        """The Stripe request fixed for each key (``DeliveryPlan`` JSON)."""
        return [json.loads(i["plan"]["S"]) for i in self.table_items() if i["id"]["S"].startswith(f"{PLAN_PREFIX}#")]

    def messages(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message on the queue (received once, then made visible again), bodies parsed."""
        sqs = aws_client("sqs")
        found: dict[str, dict[str, Any]] = {}
        for _ in range(5):
            response = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            for message in batch:
                found[message["MessageId"]] = {**message, "Body": json.loads(message["Body"])}
        return list(found.values())

    def retry_messages(self) -> list[dict[str, Any]]:
        return self.messages(self.retry_queue_url)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.messages(self.dead_letter_queue_url)


def record(key: str = "rec-1", **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "subscription_item": SUBSCRIPTION_ITEM, "quantity": 7, **overrides}


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe(api_key=FAKE_STRIPE_KEY)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_stripe(stripe_server: FakeStripe) -> Iterator[FakeStripe]:
    stripe_server.reset()
    stripe_server.add_subscription_items(SUBSCRIPTION_ITEM)
    yield stripe_server
    stripe_server.reset()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto, with no way to reach real AWS."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "StripeUsageReporterTests")
    with mock_aws():
        yield


@pytest.fixture
def deployment(aws: None, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    clients: dict[str, Any] = {
        DEMO_CLIENT_ID: DEMO_CLIENT_SECRET,
        OTHER_CLIENT[0]: OTHER_CLIENT[1],
        ROTATING_CLIENT[0]: ROTATING_CLIENT[1],
        RESTRICTED_CLIENT[0]: {
            "secrets": [RESTRICTED_CLIENT[1]],
            "subscription_items": RESTRICTED_ITEMS,
            "event_names": ["team_a_*"],
        },
    }
    stack, env = local_environment(stripe_api_key=FAKE_STRIPE_KEY, stripe_api_base=fake_stripe.url, clients=clients)
    # Short Stripe timeouts keep the timeout tests quick; the budget logic scales with them. No backoff
    # delay, so the worker can be driven round after round (test_retry_worker checks the real backoff).
    overrides = {"STRIPE_API_BASE": fake_stripe.url, "STRIPE_TIMEOUT_SECONDS": "1", "RETRY_BASE_DELAY_SECONDS": "0"}
    env.update(overrides)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    yield Deployment(
        stack=stack,
        env=env,
        stripe=fake_stripe,
        timeout_seconds=stack.function_timeout("IngestFunction"),
        overrides=overrides,
    )
    wiring.reset()


@pytest.fixture
def logs() -> Iterator[Callable[[], str]]:
    """What the functions have logged so far (Powertools' handler keeps the stdout it first saw)."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    yield buffer.getvalue
    handler.setStream(previous)  # type: ignore[attr-defined]


@pytest.fixture
def moto_server(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("put_item", "update_item", "delete_item"):  # restored after the test
        monkeypatch.setattr(DynamoDBBackend, name, getattr(DynamoDBBackend, name))
    serialize_moto_dynamodb_writes()  # moto's conditional writes, made atomic as DynamoDB's are
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    server.stop()


@pytest.fixture
def aws_faults(deployment: Deployment, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsFaults]:
    """The deployment's AWS behind a proxy that fails chosen operations (``fail("dynamodb:UpdateItem")``)."""
    faults = AwsFaults()
    monkeypatch.setenv("AWS_ENDPOINT_URL", faults.start(moto_server))
    wiring.reset()  # rebuild the service's clients on the proxy
    yield faults
    faults.stop()


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
