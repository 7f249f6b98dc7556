"""``python -m tests.harness.fake_stripe``: serve the fake Stripe API until interrupted."""

from __future__ import annotations

import argparse
import threading

from .fake import FakeStripe


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake Stripe API.")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_fake")
    parser.add_argument("--items", default="si_demo,si_demo2", help="comma-separated subscription items that exist")
    parser.add_argument("--meters", default="api_calls", help="comma-separated event names of sum meters")
    parser.add_argument("--customers", default="cus_demo,cus_demo2", help="comma-separated customers that exist")
    args = parser.parse_args()
    fake = FakeStripe(api_key=args.api_key, subscription_items=tuple(args.items.split(",")))
    for event_name in filter(None, args.meters.split(",")):
        fake.add_meter(event_name)
    fake.add_customers(*filter(None, args.customers.split(",")))
    print(f"fake Stripe at {fake.start(port=args.port)} (ledger: GET /_fake/ledger)", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
