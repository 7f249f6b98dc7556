"""The fake Stripe answers what Stripe answers: driven with the real stripe SDK (and raw HTTP) over the wire."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import stripe

from tests.conftest import SUBSCRIPTION_ITEM, Deployment, record, wait_until
from tests.harness.fake_stripe import FakeStripe, Fault
from tests.harness.lambda_runtime import FAKE_STRIPE_KEY
from usage_reporter.config import DEFAULT_STRIPE_VERSION

PATH = f"/v1/subscription_items/{SUBSCRIPTION_ITEM}/usage_records"
FORM = "application/x-www-form-urlencoded"
DAY = 86400


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def error(self) -> dict[str, Any]:
        return self.body["error"]  # type: ignore[no-any-return]

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


def send(
    fake: FakeStripe, item: str = SUBSCRIPTION_ITEM, *, stripe_version: str = DEFAULT_STRIPE_VERSION, **params: Any
) -> Answer:
    """One usage-record request exactly as the service sends it (``raw_request``, no SDK retries)."""
    client = stripe.StripeClient(
        FAKE_STRIPE_KEY,
        base_addresses={"api": fake.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=5),
    )
    try:
        response = client.raw_request(
            "post", f"/v1/subscription_items/{item}/usage_records", stripe_version=stripe_version, **params
        )
    except stripe.StripeError as exc:
        assert exc.http_status is not None and isinstance(exc.json_body, dict), exc
        return Answer(exc.http_status, exc.json_body, exc.headers or {})
    return Answer(response.code, json.loads(response.body), response.headers)


def send_raw(
    fake: FakeStripe,
    body: bytes,
    *,
    path: str = PATH,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A request the SDK would never send; the answer must arrive all the same."""
    host, port = fake.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    all_headers = {
        "Authorization": f"Bearer {FAKE_STRIPE_KEY}",
        "Stripe-Version": DEFAULT_STRIPE_VERSION,
        "Content-Type": FORM,
        **(headers or {}),
    }
    try:
        connection.request(method, path, body=body, headers={k: v for k, v in all_headers.items() if v})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.headers)
    finally:
        connection.close()


def now() -> int:
    return int(time.time())


# -- the endpoint and its errors ---------------------------------------------------------------------


def test_accepted_record_is_stripes_usage_record_object(fake_stripe: FakeStripe) -> None:
    answer = send(fake_stripe, quantity=3, timestamp=now() - 60, action="set", idempotency_key="k1")

    assert answer.status == 200
    assert set(answer.body) == {"id", "livemode", "object", "quantity", "subscription_item", "timestamp"}
    assert answer.body["id"].startswith("mbur_") and answer.body["object"] == "usage_record"
    assert answer.headers["Request-Id"].startswith("req_")
    [accepted] = fake_stripe.ledger
    assert (accepted["quantity"], accepted["action"], accepted["idempotency_key"]) == (3, "set", "k1")


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ({"timestamp": "now"}, 400, "parameter_missing", "quantity"),
        ({"quantity": "five"}, 400, "parameter_invalid_integer", "quantity"),
        ({"quantity": "1.5"}, 400, "parameter_invalid_integer", "quantity"),
        ({"quantity": " 1"}, 400, "parameter_invalid_integer", "quantity"),
        ({"quantity": "9" * 20}, 400, "parameter_invalid_integer", "quantity"),
        ({"quantity": -1}, 400, "parameter_invalid_integer", "quantity"),
        ({"quantity": ""}, 400, "parameter_invalid_empty", "quantity"),
        ({"quantity": 1, "timestamp": "yesterday"}, 400, "parameter_invalid_integer", "timestamp"),
        ({"quantity": 1, "action": "add"}, 400, None, "action"),
        ({"quantity": 1, "comment": "hi"}, 400, "parameter_unknown", "comment"),
        ({"quantity": 1, "metadata": {"a": "b"}}, 400, "parameter_unknown", "metadata"),
    ],
)
def test_invalid_parameters_get_stripes_codes(
    fake_stripe: FakeStripe, params: dict[str, Any], status: int, code: str | None, param: str
) -> None:
    answer = send(fake_stripe, **params)

    assert answer.status == status
    assert answer.error["type"] == "invalid_request_error"
    assert answer.error.get("code") == code
    assert answer.error["param"] == param
    assert answer.headers["Request-Id"].startswith("req_")
    assert fake_stripe.ledger == []


def test_unknown_subscription_item_is_resource_missing(fake_stripe: FakeStripe) -> None:
    answer = send(fake_stripe, "si_nope", quantity=1)

    assert (answer.status, answer.error["code"], answer.error["param"]) == (404, "resource_missing", "id")
    assert answer.error["message"] == "No such subscription item: 'si_nope'"


def test_no_invented_codes_are_left(fake_stripe: FakeStripe) -> None:
    answers = [
        send(fake_stripe, quantity="x"),
        send(fake_stripe, quantity=1, stripe_version="2025-03-31.basil"),
        send(fake_stripe, quantity=1, stripe_version="2025-02-24.acaica"),
        Answer(*send_raw(fake_stripe, b"quantity=1", headers={"Content-Type": "application/json"})),
    ]
    assert {a.error.get("code") for a in answers}.isdisjoint({"parameter_invalid", "api_version_unsupported"})


def test_a_body_that_is_not_a_form_is_not_read(fake_stripe: FakeStripe) -> None:
    status, body, _ = send_raw(fake_stripe, b'{"quantity": 1}', headers={"Content-Type": "application/json"})

    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "parameter_missing", "quantity")


@pytest.mark.parametrize("body", [b"quantity=1&expand[]=subscription_item", b"quantity=1&expand[0]=a&expand[1]=b"])
def test_expand_form_array_is_accepted(fake_stripe: FakeStripe, body: bytes) -> None:
    status, answer, _ = send_raw(fake_stripe, body)

    assert status == 200, answer
    assert send(fake_stripe, quantity=1, expand=["subscription_item"]).status == 200  # the SDK sends expand[0]


def test_expand_that_is_not_an_array_is_refused(fake_stripe: FakeStripe) -> None:
    status, body, _ = send_raw(fake_stripe, b"quantity=1&expand=subscription_item")

    assert (status, body["error"]["param"]) == (400, "expand")


# -- API versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["2025-02-24.acaica", "2025-02-24", "2024-06-20.acacia", "2025-02-30.acacia", "2025-2-24.acacia", "x"]
)
def test_a_version_stripe_does_not_have_is_refused(fake_stripe: FakeStripe, version: str) -> None:
    answer = send(fake_stripe, quantity=1, stripe_version=version, idempotency_key="k1")

    assert answer.status == 400
    assert answer.error == {"type": "invalid_request_error", "message": f"Invalid Stripe API version: {version}"}
    retry = send(fake_stripe, quantity=1, idempotency_key="k1")  # nothing was saved for the key
    assert (retry.status, retry.replayed) == (200, False)


@pytest.mark.parametrize("version", ["2024-09-30.acacia", "2024-06-20", "2023-10-16"])
def test_older_versions_have_usage_records(fake_stripe: FakeStripe, version: str) -> None:
    assert send(fake_stripe, quantity=1, stripe_version=version).status == 200


@pytest.mark.parametrize("version", ["2025-03-31.basil", "2025-09-30.clover"])
def test_from_basil_on_the_path_does_not_exist(fake_stripe: FakeStripe, version: str) -> None:
    answer = send(fake_stripe, quantity=1, stripe_version=version)

    assert answer.status == 404
    assert answer.error["type"] == "invalid_request_error" and "code" not in answer.error
    assert answer.error["message"].startswith(f"Unrecognized request URL (POST: {PATH})")


def test_without_a_version_header_the_account_default_applies(fake_stripe: FakeStripe) -> None:
    status, body, _ = send_raw(fake_stripe, b"quantity=1", headers={"Stripe-Version": ""})

    assert status == 404  # a new account's default is basil or later: no usage records
    assert body["error"]["message"].startswith("Unrecognized request URL")


# -- billing periods -----------------------------------------------------------------------------------


def test_new_item_is_in_a_default_period_that_holds_now(fake_stripe: FakeStripe) -> None:
    period = fake_stripe.billing_period(SUBSCRIPTION_ITEM)

    assert period.end - period.start == 30 * DAY
    assert period.start < now() - 14 * DAY and now() + 14 * DAY < period.end
    assert send(fake_stripe, quantity=1, timestamp=now() - 14 * DAY).status == 200


def test_timestamp_in_the_future_is_refused(fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = send(fake_stripe, quantity=1, timestamp=now() + 2, idempotency_key="k1")

    assert (answer.status, answer.error["type"], answer.error["param"]) == (400, "invalid_request_error", "timestamp")
    assert "code" not in answer.error
    assert answer.error["message"].endswith("timestamps must not be in the future.")
    assert send(fake_stripe, quantity=1, timestamp=now()).status == 200
    monkeypatch.setattr(fake_stripe, "future_tolerance_seconds", 300)  # drift, when a test wants it
    assert send(fake_stripe, quantity=1, timestamp=now() + 200).status == 200


def test_timestamp_before_the_period_start_is_refused(fake_stripe: FakeStripe) -> None:
    start = now() - 3600
    fake_stripe.set_billing_period(SUBSCRIPTION_ITEM, start, start + 30 * DAY)

    refused = send(fake_stripe, quantity=1, timestamp=start - 1)
    assert (refused.status, refused.error["param"]) == (400, "timestamp")
    assert refused.error["message"] == (
        "Cannot create the usage record with this timestamp because timestamps must be after the "
        "subscription's last invoice period (or current period start time)."
    )
    assert send(fake_stripe, quantity=1, timestamp=start).status == 200


def test_timestamp_at_or_after_the_period_end_is_refused(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_stripe.set_billing_period(SUBSCRIPTION_ITEM, now() - DAY, now() + 60)
    monkeypatch.setattr(fake_stripe, "future_tolerance_seconds", 300)

    refused = send(fake_stripe, quantity=1, timestamp=now() + 120)  # within the drift, but past the end

    assert (refused.status, refused.error["param"]) == (400, "timestamp")
    assert refused.error["message"].endswith("must be before the subscription's current period end time.")


def test_now_is_the_fakes_clock(fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    an_hour_ago = now() - 3600
    monkeypatch.setattr(fake_stripe, "clock", lambda: an_hour_ago + 0.5)

    assert send(fake_stripe, quantity=1, timestamp="now").body["timestamp"] == an_hour_ago
    assert send(fake_stripe, quantity=1).body["timestamp"] == an_hour_ago  # "now" is the default


def test_period_rolls_over_when_the_clock_passes_its_end(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = now() - 1000
    fake_stripe.set_billing_period(SUBSCRIPTION_ITEM, start, start + 100)  # ended long ago: rolled over to now
    assert fake_stripe.billing_period(SUBSCRIPTION_ITEM).as_json(SUBSCRIPTION_ITEM) == {
        "subscription_item": SUBSCRIPTION_ITEM,
        "current_period_start": start + 1000,
        "current_period_end": start + 1100,
    }
    monkeypatch.setattr(fake_stripe, "clock", lambda: start + 1100)  # the next period begins

    assert send(fake_stripe, quantity=1, timestamp=start + 1099).status == 400
    assert send(fake_stripe, quantity=1, timestamp=start + 1100).status == 200


def test_after_roll_over_a_timestamp_of_the_old_period_is_refused(fake_stripe: FakeStripe) -> None:
    earlier = now() - 60
    first = send(fake_stripe, quantity=2, timestamp=earlier, idempotency_key="k1")
    assert first.status == 200
    assert fake_stripe.total_usage(SUBSCRIPTION_ITEM) == 2

    new_period = fake_stripe.roll_over(SUBSCRIPTION_ITEM)

    assert new_period.start == now() or new_period.start == now() - 1
    assert new_period.end - new_period.start == 30 * DAY
    late = send(fake_stripe, quantity=2, timestamp=earlier, idempotency_key="k2")
    assert (late.status, late.error["param"]) == (400, "timestamp")
    replay = send(fake_stripe, quantity=2, timestamp=earlier, idempotency_key="k1")
    assert (replay.status, replay.replayed, replay.body["id"]) == (200, True, first.body["id"])
    assert fake_stripe.total_usage(SUBSCRIPTION_ITEM) == 0  # the new period has no usage yet


def test_billing_periods_over_the_control_endpoints(fake_stripe: FakeStripe) -> None:
    base = f"/_fake/subscription_items/{SUBSCRIPTION_ITEM}"
    start = now() - DAY

    status, period, _ = send_raw(
        fake_stripe, f"start={start}&end={start + 7 * DAY}".encode(), path=f"{base}/billing_period"
    )
    assert (status, period["current_period_start"], period["current_period_end"]) == (200, start, start + 7 * DAY)
    status, shown, _ = send_raw(fake_stripe, b"", path=f"{base}/billing_period", method="GET")
    assert (status, shown) == (200, period)
    at = now() - 10
    status, rolled, _ = send_raw(fake_stripe, f"at={at}".encode(), path=f"{base}/roll_over")
    assert (status, rolled["current_period_start"], rolled["current_period_end"]) == (200, at, at + 7 * DAY)
    assert send(fake_stripe, quantity=1, timestamp=at - 1).status == 400

    assert send_raw(fake_stripe, b"", path="/_fake/subscription_items/si_nope/billing_period", method="GET")[0] == 404
    assert send_raw(fake_stripe, b"start=1&end=x", path=f"{base}/billing_period")[0] == 400
    assert send_raw(fake_stripe, b"start=5&end=5", path=f"{base}/billing_period")[0] == 400
    assert send_raw(fake_stripe, f"at={now() + DAY * 60}".encode(), path=f"{base}/roll_over")[0] == 400
    assert send_raw(fake_stripe, b"kind=status&status=x", path="/_fake/faults")[0] == 400


# -- idempotency ---------------------------------------------------------------------------------------


def test_accepted_record_is_replayed_for_its_key(fake_stripe: FakeStripe) -> None:
    first = send(fake_stripe, quantity=4, timestamp=now(), idempotency_key="k1")
    replay = send(fake_stripe, quantity=4, timestamp=first.body["timestamp"], idempotency_key="k1")

    assert (replay.status, replay.body, replay.replayed) == (200, first.body, True)
    assert replay.headers["Original-Request"] == first.headers["Request-Id"] != replay.headers["Request-Id"]
    assert len(fake_stripe.ledger) == 1


def test_refusals_of_the_endpoint_are_saved_and_replayed(fake_stripe: FakeStripe) -> None:
    missing = send(fake_stripe, "si_later", quantity=1, idempotency_key="k1")
    too_old = send(fake_stripe, quantity=1, timestamp=now() - 60 * DAY, idempotency_key="k2")
    fake_stripe.add_subscription_items("si_later")

    again_missing = send(fake_stripe, "si_later", quantity=1, idempotency_key="k1")
    again_too_old = send(fake_stripe, quantity=1, timestamp=now() - 60 * DAY, idempotency_key="k2")

    assert (again_missing.status, again_missing.body, again_missing.replayed) == (404, missing.body, True)
    assert (again_too_old.status, again_too_old.body, again_too_old.replayed) == (400, too_old.body, True)
    assert fake_stripe.ledger == []


def test_parameter_validation_refusals_are_not_saved(fake_stripe: FakeStripe) -> None:
    for bad in ({"quantity": "x"}, {"timestamp": 1}, {"quantity": 1, "colour": "red"}, {"quantity": ""}):
        assert send(fake_stripe, idempotency_key="k1", **bad).status == 400
    assert send(fake_stripe, quantity=1, action="add", idempotency_key="k1").status == 400

    accepted = send(fake_stripe, quantity=1, idempotency_key="k1")

    assert (accepted.status, accepted.replayed) == (200, False)


def test_same_key_with_other_parameters_is_an_idempotency_error(fake_stripe: FakeStripe) -> None:
    assert send(fake_stripe, quantity=1, timestamp=now() - 5, idempotency_key="k1").status == 200

    for other in ({"quantity": 2, "timestamp": now() - 5}, {"quantity": "x"}):
        answer = send(fake_stripe, idempotency_key="k1", **other)
        assert answer.status == 400
        assert answer.error["type"] == "idempotency_error" and "code" not in answer.error
        assert "same parameters" in answer.error["message"]
    assert len(fake_stripe.ledger) == 1


def test_key_still_in_flight_is_409_idempotency_key_in_use(fake_stripe: FakeStripe) -> None:
    gate = threading.Event()
    fake_stripe.inject(Fault.slow_endpoint(5, until=gate))
    answers: list[Answer] = []
    first = threading.Thread(target=lambda: answers.append(send(fake_stripe, quantity=1, idempotency_key="k1")))
    first.start()
    try:
        wait_until(lambda: "k1" in fake_stripe._in_flight)
        concurrent = send(fake_stripe, quantity=1, idempotency_key="k1")
    finally:
        gate.set()
        first.join(5)

    assert concurrent.status == 409
    assert concurrent.error["type"] == "invalid_request_error"
    assert concurrent.error["code"] == "idempotency_key_in_use"
    [done] = answers
    assert done.status == 200
    replay = send(fake_stripe, quantity=1, idempotency_key="k1")
    assert (replay.status, replay.replayed, replay.body["id"]) == (200, True, done.body["id"])
    assert len(fake_stripe.ledger) == 1


# -- robustness and speed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "quantity=²".encode(),
        b"quantity=%C2%B2",
        "quantity=\u0663".encode(),  # ARABIC-INDIC DIGIT THREE
        b"quantity=1" + b"0" * 5000,  # more digits than int() converts
        b"quantity=\xff\xfe",  # not UTF-8
        b"quantity[]=1",
    ],
)
def test_every_request_gets_an_answer(fake_stripe: FakeStripe, body: bytes) -> None:
    status, answer, headers = send_raw(fake_stripe, body)

    assert (status, answer["error"]["code"], answer["error"]["param"]) == (400, "parameter_invalid_integer", "quantity")
    assert headers["Request-Id"].startswith("req_")


def test_bad_content_length_is_answered(fake_stripe: FakeStripe) -> None:
    status, answer, _ = send_raw(fake_stripe, b"quantity=1", headers={"Content-Length": "1x"})

    assert (status, answer["error"]["type"]) == (400, "invalid_request_error")


def test_a_failure_of_the_fake_is_a_500_and_saves_nothing(
    fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(fake_stripe, "_record_usage", broken)
        failed = send(fake_stripe, quantity=1, idempotency_key="k1")

    assert (failed.status, failed.error["type"]) == (500, "api_error")
    retry = send(fake_stripe, quantity=1, idempotency_key="k1")
    assert (retry.status, retry.replayed) == (200, False)


def test_a_round_trip_takes_no_delayed_ack(fake_stripe: FakeStripe) -> None:
    # Headers and body in two sends without TCP_NODELAY cost ~40 ms a request (the client's delayed ACK).
    send(fake_stripe, quantity=1)
    durations = []
    for _ in range(10):
        started = time.perf_counter()
        send(fake_stripe, quantity=1)
        durations.append(time.perf_counter() - started)

    assert statistics.median(durations) < 0.03, durations


# -- end to end ------------------------------------------------------------------------------------------


def test_record_retried_after_its_period_ended_is_dead_lettered_with_stripes_reason(deployment: Deployment) -> None:
    usage = record("r1", timestamp=now() - 60)
    deployment.stripe.inject(Fault.rate_limit())
    assert deployment.post("/v1/usage", usage).status == 202  # queued for a retry, in its period

    deployment.stripe.roll_over(SUBSCRIPTION_ITEM)  # the period ends before the retry
    deployment.run_retry_worker()

    assert deployment.stripe.ledger == []
    assert deployment.retry_messages() == []
    [letter] = deployment.dead_letters()
    reason = letter["Body"]["reason"]
    assert (reason["type"], reason["http_status"]) == ("stripe_error", 400)
    assert "after the subscription's last invoice period" in reason["message"]
    replay = deployment.post("/v1/usage", usage)
    assert (replay.status, replay.body["status"]) == (422, "rejected")
    assert "after the subscription's last invoice period" in replay.body["error"]["message"]


def test_form_encoding_of_the_sdk_is_what_the_fake_parses(fake_stripe: FakeStripe) -> None:
    send(fake_stripe, quantity=1, expand=["a", "b"])

    [sent] = fake_stripe.usage_requests()
    assert sent["params"] == {"quantity": "1", "expand": ["a", "b"]}


def test_faults_can_be_cleared_and_an_item_moved_to_a_meter_price_over_http(fake_stripe: FakeStripe) -> None:
    import urllib.request

    def control(method: str, path: str, data: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(fake_stripe.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    control("POST", "/_fake/faults", b"kind=status&status=503&times=5")
    assert control("DELETE", "/_fake/faults") == {"cleared": True}
    fake_stripe.add_subscription_items("si_TESTmoving", customer="cus_TESTmover")

    assert control("POST", "/_fake/subscription_items/si_TESTmoving/meter_price")["legacy_metered"] is False

    client = stripe.StripeClient(FAKE_STRIPE_KEY, base_addresses={"api": fake_stripe.url})
    with pytest.raises(stripe.InvalidRequestError, match="legacy metered billing"):  # and no injected 503 left
        client.raw_request(
            "post", "/v1/subscription_items/si_TESTmoving/usage_records", quantity=1, stripe_version="2025-02-24.acacia"
        )
    item = client.v1.subscription_items.retrieve("si_TESTmoving", params={"expand": ["subscription"]})
    assert item.subscription.customer == "cus_TESTmover"  # type: ignore[attr-defined]
