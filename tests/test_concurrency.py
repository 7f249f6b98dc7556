"""Duplicates sent at the same moment by separate Lambda instances: exactly one Stripe record."""

from __future__ import annotations

import json

import pytest

from tests.conftest import record
from tests.harness.fake_stripe import FakeStripe, Fault
from tests.harness.instances import invoke_concurrently
from tests.harness.lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FAKE_STRIPE_KEY, local_environment


@pytest.mark.slow
def test_concurrent_duplicates_reach_stripe_once(moto_server: str, fake_stripe: FakeStripe) -> None:
    with_moto_http = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    _, env = local_environment(stripe_api_key=FAKE_STRIPE_KEY, stripe_api_base=fake_stripe.url)
    fake_stripe.inject(Fault.latency(1.0))  # the winner holds the dedup lock while the others arrive
    body = json.dumps(record("same-key", quantity=5)).encode()

    responses = invoke_concurrently(
        {**env, **with_moto_http}, "/v1/usage", body, (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET), 5
    )

    [accepted] = fake_stripe.ledger
    fresh = [r for r in responses if r["statusCode"] == 200 and "Idempotent-Replayed" not in r["headers"]]
    assert len(fresh) == 1
    for response in responses:
        if response["statusCode"] == 200:
            assert response["body"]["stripe_id"] == accepted["id"]
        else:
            assert response["statusCode"] == 409
            assert response["body"]["error"]["type"] == "idempotency_in_progress"
    assert any(r["statusCode"] == 409 for r in responses)
