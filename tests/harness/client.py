"""Send a signed request to the service, or print the equivalent curl command.

python -m tests.harness.client '{"idempotency_key": "k1", "subscription_item": "si_demo", "quantity": 2}'
python -m tests.harness.client --curl '{"idempotency_key": "k1", ...}'
python -m tests.harness.client --path /v1/usage/batch '{"records": [...]}'
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import urllib.error
import urllib.request

from usage_reporter.auth import sign

from .lambda_runtime import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET


def signed_headers(body: bytes, client_id: str, secret: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Usage-Client": client_id, "X-Usage-Signature": sign(secret, body)}


def curl_command(url: str, path: str, body: bytes, client_id: str, secret: str) -> str:
    lines = [f"curl -sS -i -X POST {shlex.quote(url + path)}"]
    lines += [f"  -H {shlex.quote(f'{k}: {v}')}" for k, v in signed_headers(body, client_id, secret).items()]
    lines.append(f"  --data-binary {shlex.quote(body.decode())}")
    return " \\\n".join(lines)


def send(url: str, path: str, body: bytes, client_id: str, secret: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url + path, data=body, method="POST", headers=signed_headers(body, client_id, secret)
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("body", nargs="?", help="JSON body (default: a demo record)")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--path", default="/v1/usage")
    parser.add_argument("--client", default=DEMO_CLIENT_ID)
    parser.add_argument("--secret", default=DEMO_CLIENT_SECRET)
    parser.add_argument("--curl", action="store_true", help="print a signed curl command instead of sending")
    args = parser.parse_args()
    demo = {"idempotency_key": "order-1001-api-calls", "subscription_item": "si_demo", "quantity": 3}
    body = (args.body or json.dumps(demo)).encode()
    if args.curl:
        print(curl_command(args.url, args.path, body, args.client, args.secret))
        return
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
