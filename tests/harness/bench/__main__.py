"""``python -m tests.harness.bench`` (``make bench``): the service beside a floor, measured in one run.

Everything runs locally against a moto server built from template.yaml (in a process of its own) and the fake
Stripe answering every request after ``--latency`` seconds (50 ms, in this process); the service runs in child
processes, as Lambda instances would:

1. cold start (spawn -> first answer), peak RSS and where the time goes (``-X importtime``), the service's
   handler beside a floor that imports only boto3 and stripe and makes the same calls, in ``--rounds`` fresh
   processes per side, alternating, as the environment's bytecode is (no .pyc here, as in a sam-built layer)
   and again with precompiled bytecode, where the import time goes with it (the median of as many processes
   under ``-X importtime``), and the peak RSS that importing pydantic, Powertools and the handler adds to a
   process that imports boto3 and stripe: what holds the service above the floor;
2. one usage record in a warm process (many records, distinct keys) beside the floor's warm calls;
3. batches of 10, 50 and 100 usage records and meter events against one record, and the Stripe request
   rate a usage batch reaches;
4. usage records per second through the local API (``local_api.serve``) with 1, 4 and 16 clients;
5. the AWS calls (counted on the service's own clients) and Stripe requests of each kind of request, next
   to the least the design needs.

Prints one table of figures (``figure | service | floor / baseline | ratio``) and the call counts, and writes
every measurement as JSON (``--json``) for the cost model: ``python -m tests.harness.bench.cost``.
This is a script, not a test: nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .moto_process import MotoProcess
from .options import DEFAULT_JSON, Options


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, not {text!r}") from None
    if not values or not all(1 <= value <= 100 for value in values):
        raise argparse.ArgumentTypeError(f"batch sizes are 1 to 100, not {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Options()
    parser.add_argument("--rounds", type=positive, default=defaults.rounds, help="cold processes per side (5)")
    parser.add_argument("--warm", type=positive, default=defaults.warm, help="warm records per side (40)")
    parser.add_argument("--batch-rounds", type=positive, default=defaults.batch_rounds, help="rounds per batch (3)")
    parser.add_argument(
        "--serve-records", type=positive, default=defaults.serve_records, help="records per client count (48)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=sizes,
        default=",".join(map(str, Options().batch_sizes)),
        help="comma-separated batch sizes, 1 to 100 (10,50,100)",
    )
    parser.add_argument("--latency", type=float, default=defaults.latency, help="fake Stripe latency, s (0.05)")
    parser.add_argument("--no-importtime", action="store_true", help="skip the -X importtime processes")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"measurements file ({DEFAULT_JSON})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    moto = MotoProcess()  # now: it starts while this process imports the rest
    from .measure import Bench
    from .report import render

    options = Options(
        rounds=args.rounds,
        warm=args.warm,
        batch_rounds=args.batch_rounds,
        batch_sizes=args.batch_sizes,
        serve_records=args.serve_records,
        latency=args.latency,
        importtime=not args.no_importtime,
    )

    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[bench {time.monotonic() - started:5.1f} s] {message}", file=sys.stderr, flush=True)

    say("starting moto and the fake Stripe")
    run = Bench(options, say, moto).run()
    say("done")
    print(render(run))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=1, sort_keys=True))
    print(f"\nMeasurements: {args.json} (dollars: python -m tests.harness.bench.cost --from {args.json})")


if __name__ == "__main__":
    main()
