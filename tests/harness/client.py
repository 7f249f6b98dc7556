"""Send a signed request to the service, or print the equivalent curl command (with the callers' client
library, ``clients/python``).

python -m tests.harness.client '{"idempotency_key": "k1", "subscription_item": "si_demo", "quantity": 2}'
python -m tests.harness.client --curl '{"idempotency_key": "k1", ...}'
python -m tests.harness.client --path /v1/usage/batch '{"records": [...]}'
python -m tests.harness.client --retry '{...}'   # with the library's retry rules (409 in progress, 503, network)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from usage_reporter_client import ConnectionFailed, UsageReporterClient, post_signed
from usage_reporter_client import signed_headers as _signed_headers

from .lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

TIMEOUT_SECONDS = 60


def signed_headers(body: bytes, client_id: str, secret: str) -> dict[str, str]:
    return _signed_headers(body, client_id, secret)


def curl_command(url: str, path: str, body: bytes, client_id: str, secret: str) -> str:
    lines = [f"curl -sS -i -X POST {shlex.quote(url + path)}"]
    lines += [f"  -H {shlex.quote(f'{k}: {v}')}" for k, v in signed_headers(body, client_id, secret).items()]
    lines.append(f"  --data-binary {shlex.quote(body.decode())}")
    return " \\\n".join(lines)


def send(url: str, path: str, body: bytes, client_id: str, secret: str) -> tuple[int, dict[str, str], bytes]:
    """One signed POST, not retried: the status, the headers (names as sent) and the raw body."""
    response = post_signed(url + path, body, client_id, secret, timeout=TIMEOUT_SECONDS)
    return response.status, dict(response.headers), response.body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("body", nargs="?", help="JSON body (default: a demo record)")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--path", default="/v1/usage")
    parser.add_argument("--client", default=DEMO_CLIENT_ID)
    parser.add_argument("--secret", default=DEMO_CLIENT_SECRET)
    parser.add_argument("--curl", action="store_true", help="print a signed curl command instead of sending")
    parser.add_argument("--retry", action="store_true", help="retry as the client library does (same bytes)")
    args = parser.parse_args()
    demo = {"idempotency_key": "order-1001-api-calls", "subscription_item": "si_demo", "quantity": 3}
    body = (args.body or json.dumps(demo)).encode()
    if args.curl:
        print(curl_command(args.url, args.path, body, args.client, args.secret))
        return
    if args.retry:
        client = UsageReporterClient(args.url, args.client, args.secret, timeout=TIMEOUT_SECONDS)
        try:
            response = client.post(args.path, body)
        except ConnectionFailed as exc:
            sys.exit(str(exc))
        status, headers, raw = response.status, dict(response.headers), response.body
    else:
        status, headers, raw = send(args.url, args.path, body, args.client, args.secret)
    replayed = " (replayed)" if headers.get("Idempotent-Replayed") else ""
    print(f"HTTP {status}{replayed}")
    try:
        print(json.dumps(json.loads(raw), indent=2))
    except ValueError:
        print(raw.decode(errors="replace"))
    sys.exit(0 if status < 500 else 1)


if __name__ == "__main__":
    main()
