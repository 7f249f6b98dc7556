"""``python -m tests.harness.bench.cost [--from out.json] [--memory 512]`` (``make cost``): the AWS bill per million
records, from what a bench run measured (durations, CPU time, counted calls, log bytes, item sizes).

For each kind (usage records, meter events), sent one per request or in batches (the largest batch the run
measured: 100 by default), it prices every AWS line a record touches: API Gateway (HTTP API), Lambda
(requests and arm64 duration at ``--memory``), DynamoDB on-demand, SQS, CloudWatch Logs and X-Ray; EMF
metrics and X-Ray's reservoir cost per month, not per record, and are shown apart. Stripe's own fees are
not AWS costs and are left out.

Durations are the bench's, measured locally against moto and a fake Stripe that answers in the run's
latency (50 ms): real DynamoDB and Stripe latencies change the duration line (a line below says by how much).
Memory sizes: Lambda gives a function CPU in proportion to its memory (one vCPU at 1,769 MB). The bench
measured each request's CPU seconds and its wall time; at another size the CPU seconds are stretched by
1,769 / MB (never shrunk: this Python work runs on one core at a time) and the waiting is left as it is.
That assumes one core of the bench machine is worth one Lambda vCPU; it is an estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import DEFAULT_JSON

# One place for every price: us-east-1 list prices as given in the bench's issue, with the pages they are
# published on. Check them there before relying on a figure; free tiers are ignored except where stated.
PRICES: dict[str, Any] = {
    "region": "us-east-1",
    "as_of": "2026-11-23",
    "source": "AWS list prices, entered by hand in PRICES in tests/harness/bench/cost.py; not fetched",
    "api_gateway_http_request": {
        "usd": 1.00 / 1e6,
        "unit": "request (first 300 million a month; $0.90 per million after)",
        "url": "https://aws.amazon.com/api-gateway/pricing/",
    },
    "lambda_request": {"usd": 0.20 / 1e6, "unit": "invocation", "url": "https://aws.amazon.com/lambda/pricing/"},
    "lambda_arm64_gb_second": {
        "usd": 0.0000133334,
        "unit": "GB-second, arm64 (first tier), billed per 1 ms",
        "url": "https://aws.amazon.com/lambda/pricing/",
    },
    "dynamodb_write_request_unit": {
        "usd": 0.625 / 1e6,
        "unit": "write request unit, on-demand (an item up to 1 KB)",
        "url": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    },
    "dynamodb_read_request_unit": {
        "usd": 0.125 / 1e6,
        "unit": "read request unit, on-demand (a strongly consistent read up to 4 KB)",
        "url": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    },
    "sqs_request": {"usd": 0.40 / 1e6, "unit": "standard queue request", "url": "https://aws.amazon.com/sqs/pricing/"},
    "logs_ingested_gb": {
        "usd": 0.50,
        "unit": "GB ingested (standard log class)",
        "url": "https://aws.amazon.com/cloudwatch/pricing/",
    },
    "custom_metric_month": {
        "usd": 0.30,
        "unit": "custom metric a month (first 10,000; each name and dimension set is one)",
        "url": "https://aws.amazon.com/cloudwatch/pricing/",
    },
    "xray_trace_recorded": {
        "usd": 5.00 / 1e6,
        "unit": "trace recorded (first 100,000 a month free)",
        "url": "https://aws.amazon.com/xray/pricing/",
    },
}
GB = 1024**3
ONE_VCPU_MB = 1769  # Lambda's memory size with one full vCPU
MEMORY_SIZES = (256, 512, 1024, 1769)
# Lambda's own lines per invocation (START, END, REPORT with X-Ray's ids): about 370 bytes, an assumption.
PLATFORM_LOG_BYTES = 370
PLATFORM_LOG_EVENTS = 3
LOG_EVENT_OVERHEAD_BYTES = 26  # what CloudWatch Logs counts per event on top of its message
# X-Ray's default sampling rule, which Lambda applies with Tracing: Active: 1 request a second, then 5%.
XRAY_SAMPLED_FRACTION = 0.05
XRAY_RESERVOIR_PER_MONTH = 86400 * 30  # 1 trace a second, every second of a month, at most
XRAY_FREE_TRACES = 100_000


def usd(name: str) -> float:
    return float(PRICES[name]["usd"])


@dataclass(frozen=True)
class Mode:
    """A kind of record, sent one per request or in batches: what one request (invocation) does."""

    kind: str  # usage_record | meter_event
    label: str
    records: int  # records per request
    wall_seconds: float  # the handler's duration, median
    cpu_seconds: float  # its CPU time, median
    calls: dict[str, Any]  # counted AWS calls and Stripe requests, for this request
    log: dict[str, Any]  # the service's log output for this request

    def duration(self, memory_mb: int) -> float:
        """The estimated duration at ``memory_mb`` (see the module docstring)."""
        stretch = max(1.0, ONE_VCPU_MB / memory_mb)
        return self.wall_seconds + self.cpu_seconds * (stretch - 1)


def modes(run: dict[str, Any]) -> list[Mode]:
    warm = run["warm"]
    calls = {(c["kind"], c["scenario"]): c for c in run["calls"].values()}
    logs = {(entry["kind"], entry["scenario"]): entry for entry in run["logs"].values()}
    size = max(run["options"]["batch_sizes"])
    names = {"usage_record": "usage record", "meter_event": "meter event"}
    found = []
    for kind, name in names.items():
        single = warm[kind]["service"]
        found.append(
            Mode(
                kind,
                f"{name}, one per request",
                1,
                single["seconds"]["median"],
                single["cpu_seconds"]["median"],
                calls[(kind, "single")],
                logs[(kind, "single")],
            )
        )
        batch = warm["batches"][kind][str(size)]
        found.append(
            Mode(
                kind,
                f"{name}, batches of {size}",
                size,
                batch["seconds"]["median"],
                batch["cpu_seconds"]["median"],
                calls[(kind, "batch")],
                logs[(kind, "batch")],
            )
        )
    return found


@dataclass(frozen=True)
class Line:
    item: str
    per_request: str
    usd_per_million_records: float


def write_units(item_bytes: int) -> int:
    return max(1, math.ceil(item_bytes / 1024))


def lines(mode: Mode, run: dict[str, Any], memory_mb: int) -> list[Line]:
    per_record = 1e6 / mode.records  # requests per million records
    sizes = run["dynamodb_item_bytes"]
    prefix = "usage-record" if mode.kind == "usage_record" else "meter-event"
    lock = sizes.get(f"{prefix} (lock)", 1024)
    plan = sizes.get(f"delivery-plan#{prefix}", 1024)
    answer = sizes.get(f"{prefix} (answer)", 1024)
    aws: dict[str, int] = mode.calls["aws"]
    puts = aws.get("dynamodb:PutItem", 0)
    updates = aws.get("dynamodb:UpdateItem", 0) + aws.get("dynamodb:DeleteItem", 0)
    reads = sum(aws.get(f"dynamodb:{op}", 0) for op in ("GetItem", "Query", "Scan", "BatchGetItem"))
    # A PutItem is the lock or the plan (half each); an UpdateItem is billed on the larger item: the answer.
    wru = puts * (write_units(lock) + write_units(plan)) / 2 + updates * write_units(answer)
    sqs = sum(n for name, n in aws.items() if name.startswith("sqs:"))

    billed = math.ceil(mode.duration(memory_mb) * 1000) / 1000
    gb_seconds = memory_mb / 1024 * billed
    log_events = mode.log["events"] + PLATFORM_LOG_EVENTS + 1  # + the API's access log line
    log_bytes = (
        mode.log["bytes"] + PLATFORM_LOG_BYTES + run["access_log_line_bytes"] + log_events * LOG_EVENT_OVERHEAD_BYTES
    )
    return [
        Line("API Gateway HTTP API", "1 request", usd("api_gateway_http_request") * per_record),
        Line("Lambda requests", "1 invocation", usd("lambda_request") * per_record),
        Line(
            f"Lambda duration (arm64, {memory_mb} MB)",
            f"{billed * 1000:.0f} ms billed = {gb_seconds:.4f} GB-s",
            usd("lambda_arm64_gb_second") * gb_seconds * per_record,
        ),
        Line(
            "DynamoDB writes (on-demand)",
            f"{wru:g} WRU ({puts} PutItem, {updates} UpdateItem)",
            usd("dynamodb_write_request_unit") * wru * per_record,
        ),
        Line("DynamoDB reads (on-demand)", f"{reads} RRU", usd("dynamodb_read_request_unit") * reads * per_record),
        Line("SQS", f"{sqs} requests", usd("sqs_request") * sqs * per_record),
        Line(
            "CloudWatch Logs ingestion",
            f"{log_bytes:,} B ({mode.log['bytes']:,} service, {mode.log['emf_bytes']:,} of it EMF)",
            usd("logs_ingested_gb") * log_bytes / GB * per_record,
        ),
        Line(
            f"X-Ray ({XRAY_SAMPLED_FRACTION:.0%} of requests traced)",
            f"{XRAY_SAMPLED_FRACTION:g} trace",
            usd("xray_trace_recorded") * XRAY_SAMPLED_FRACTION * per_record,
        ),
    ]


def total(mode: Mode, run: dict[str, Any], memory_mb: int) -> float:
    return sum(line.usd_per_million_records for line in lines(mode, run, memory_mb))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([row[0].ljust(widths[0]), *rest]) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def mode_table(mode: Mode, run: dict[str, Any], memory_mb: int) -> str:
    found = lines(mode, run, memory_mb)
    rows = [[line.item, line.per_request, f"${line.usd_per_million_records:,.2f}"] for line in found]
    rows.append(["total", "", f"${sum(line.usd_per_million_records for line in found):,.2f}"])
    stripe = sum(mode.calls["stripe"].values())
    title = (
        f"{mode.label}: {mode.records} record{'s' if mode.records > 1 else ''} per request, "
        f"{mode.wall_seconds * 1000:.0f} ms measured ({mode.cpu_seconds * 1000:.0f} ms CPU), "
        f"{stripe} Stripe request{'s' if stripe != 1 else ''} (Stripe's fees not included)"
    )
    return title + "\n" + table(["item", "per request", "per million records"], rows)


def memory_table(run: dict[str, Any], found: list[Mode]) -> tuple[str, int, str]:
    """Duration and cost at each memory size; the recommended size and why."""
    single = next(m for m in found if m.kind == "usage_record" and m.records == 1)
    batch = next(m for m in found if m.kind == "usage_record" and m.records > 1)
    cold = run["cold"]["service"]
    cold_wall, cold_cpu = float(cold["seconds"]["median"]), float(cold["cpu_seconds"]["median"])

    def cold_at(memory: int) -> float:
        return cold_wall + cold_cpu * (max(1.0, ONE_VCPU_MB / memory) - 1)

    rows = []
    costs = {}
    for memory in MEMORY_SIZES:
        costs[memory] = total(single, run, memory)
        rows.append(
            [
                f"{memory} MB ({min(1.0, memory / ONE_VCPU_MB):.2f} vCPU)",
                f"{single.duration(memory) * 1000:.0f} ms",
                f"{batch.duration(memory):.2f} s",
                f"{cold_at(memory):.1f} s",
                f"${costs[memory]:,.2f}",
                f"${total(batch, run, memory):,.2f}",
            ]
        )
    cheap = min(costs, key=lambda memory: costs[memory])
    # The most CPU (lowest latency, shortest cold start) that costs at most 10% more than the cheapest size.
    chosen = max(memory for memory, cost in costs.items() if cost <= costs[cheap] * 1.10)

    if chosen == cheap:
        reason = f"{chosen} MB, the cheapest: every larger size costs over 10% more per million single usage records"
    else:
        reason = (
            f"{chosen} MB: ${costs[chosen]:,.2f} per million single usage records, "
            f"{costs[chosen] / costs[cheap] - 1:.0%} more than the cheapest size ({cheap} MB, ${costs[cheap]:,.2f}), "
            f"for warm requests of {single.duration(chosen) * 1000:.0f} ms instead of "
            f"{single.duration(cheap) * 1000:.0f} ms and a cold start of at most {cold_at(chosen):.1f} s instead of "
            f"{cold_at(cheap):.1f} s; the rule: the largest size within 10% of the cheapest, since the fixed "
            "per-request lines (API Gateway, DynamoDB writes, logs) dominate the bill and CPU is cheap next to them"
        )
    headers = [
        "MemorySize",
        "warm usage record (est.)",
        f"usage batch of {batch.records} (est.)",
        "cold start (est., upper bound)",
        "$/M records, single",
        f"$/M records, batches of {batch.records}",
    ]
    return table(headers, rows), chosen, reason


def fixed_monthly(run: dict[str, Any]) -> list[str]:
    metrics = run["custom_metrics"]
    reservoir = max(0, XRAY_RESERVOIR_PER_MONTH - XRAY_FREE_TRACES) * usd("xray_trace_recorded")
    return [
        f"- CloudWatch metrics (EMF): {len(metrics)} custom metrics seen in this run (name x dimension set; other "
        f"outcomes such as Queued, Rejected, Invalid add their own) x ${usd('custom_metric_month'):.2f} = "
        f"${len(metrics) * usd('custom_metric_month'):.2f} a month, whatever the volume. The EMF documents themselves "
        "are log lines, priced above under CloudWatch Logs.",
        f"- X-Ray: sampling assumed is X-Ray's default rule (Tracing: Active in template.yaml): the first request "
        f"each second, then {XRAY_SAMPLED_FRACTION:.0%} of the rest. The {XRAY_SAMPLED_FRACTION:.0%} is in the "
        f"tables; the one-a-second reservoir adds up to {XRAY_RESERVOIR_PER_MONTH:,} traces a month with steady "
        f"traffic: at most ${reservoir:,.2f} a month beyond the {XRAY_FREE_TRACES:,} free traces.",
        "- Not priced: Secrets Manager (2 secrets read once per instance and 5 minutes, $0.40 per secret a month), "
        "log storage after ingestion, data transfer to Stripe, free tiers other than X-Ray's.",
    ]


def render(run: dict[str, Any], memory_mb: int) -> str:
    found = modes(run)
    out = [
        f"AWS cost per million records, {PRICES['region']}, prices as of {PRICES['as_of']} ({PRICES['source']}; "
        "sources below), Lambda at "
        f"{memory_mb} MB; durations from a bench run of {run['date']} (fake Stripe answering in "
        f"{run['options']['latency'] * 1000:.0f} ms, moto for AWS)",
        "",
    ]
    for mode in found:
        out += [mode_table(mode, run, memory_mb), ""]
    single = found[0]
    extra = usd("lambda_arm64_gb_second") * memory_mb / 1024 * 0.1 * 1e6
    out.append(
        f"Stripe's real latency replaces the fake's {run['options']['latency'] * 1000:.0f} ms: each further 100 ms "
        f"a single record waits on Stripe adds ${extra:.2f} per million records at {memory_mb} MB "
        f"({single.label}: ${total(single, run, memory_mb):.2f} now)."
    )
    sizes = run["dynamodb_item_bytes"]
    out.append(
        "DynamoDB item sizes assumed, as measured in the run (1 WRU per KB, rounded up): "
        + ", ".join(f"{name} {size} B" for name, size in sizes.items())
        + ". A replay costs 1 WRU (its conditional PutItem fails but is billed)."
    )
    out.append(
        f"Log bytes per request: the service's own lines as the run printed them, plus Lambda's START/END/REPORT "
        f"(~{PLATFORM_LOG_BYTES} B, assumed), one API access log line in the template's format "
        f"({run['access_log_line_bytes']} B) and {LOG_EVENT_OVERHEAD_BYTES} B per log event."
    )
    out += ["", "Not per record, per month:", *fixed_monthly(run), ""]
    memory, _, reason = memory_table(run, found)
    cold = run["cold"]["service"]
    out += [
        "MemorySize: durations estimated from the measured wall and CPU times: CPU seconds stretched by 1769/MB "
        "below 1769 MB (Lambda's CPU share), waiting unchanged, nothing faster above (one core at a time). The cold "
        f"start stretches its {cold['cpu_seconds']['median']:.2f} s of CPU the same way: an upper bound if Lambda "
        "gives the init phase more CPU than the memory's share.",
        memory,
        f"Recommended: {reason} (template.yaml has {run['memory_size']} MB).",
        "",
        "Prices (one dict, tests/harness/bench/cost.py PRICES):",
    ]
    for name, price in PRICES.items():
        if isinstance(price, dict):
            out.append(f"- {name}: ${price['usd']:.10g} per {price['unit']} ({price['url']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_JSON, help=f"bench JSON ({DEFAULT_JSON})")
    parser.add_argument("--memory", type=int, help="Lambda MemorySize in MB (default: template.yaml's, as measured)")
    args = parser.parse_args(argv)
    if args.memory is not None and not 128 <= args.memory <= 10240:
        parser.error("--memory is 128 to 10240 MB")
    if not args.source.exists():
        sys.exit(f"no measurements at {args.source}: run `make bench` (or python -m tests.harness.bench) first")
    run = json.loads(args.source.read_text())
    print(render(run, args.memory or int(run["memory_size"])))


if __name__ == "__main__":
    main()
