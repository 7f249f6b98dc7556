"""Run the ingest handler in separate processes, as separate Lambda instances would, all at once."""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

from .lambda_runtime import LambdaContext, http_api_event, load_handler


def _instance(env: dict[str, str], path: str, body: bytes, client: tuple[str, str], go: Any, results: Any) -> None:
    os.environ.update(env)
    from usage_reporter.auth import sign

    handler = load_handler("ingest")  # cold start before the starting gun
    go.wait(60)  # a barrier: every instance is warm before any sends
    headers = {
        "content-type": "application/json",
        "x-usage-client": client[0],
        "x-usage-signature": sign(client[1], body),
    }
    response = handler(http_api_event("POST", path, body, headers), LambdaContext())
    results.put({**response, "body": json.loads(response["body"])})


def invoke_concurrently(
    env: dict[str, str], path: str, body: bytes, client: tuple[str, str], instances: int
) -> list[dict[str, Any]]:
    """The same request sent by ``instances`` processes at the same moment; their responses."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Barrier(instances)
    results = ctx.Queue()
    processes = [ctx.Process(target=_instance, args=(env, path, body, client, go, results)) for _ in range(instances)]
    for process in processes:
        process.start()
    responses = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    return responses


def _one_request(env: dict[str, str], path: str, body: bytes, client: tuple[str, str], timeout_seconds: float) -> None:
    os.environ.update(env)
    from usage_reporter.auth import sign

    headers = {
        "content-type": "application/json",
        "x-usage-client": client[0],
        "x-usage-signature": sign(client[1], body),
    }
    load_handler("ingest")(http_api_event("POST", path, body, headers), LambdaContext(timeout_seconds=timeout_seconds))


def start_instance(
    env: dict[str, str], path: str, body: bytes, client: tuple[str, str], *, timeout_seconds: float
) -> multiprocessing.process.BaseProcess:
    """One Lambda instance handling one request in its own process (for a test to kill mid-call)."""
    process = multiprocessing.get_context("spawn").Process(
        target=_one_request, args=(env, path, body, client, timeout_seconds)
    )
    process.start()
    return process
