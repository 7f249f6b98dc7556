"""The bench's tables: every figure beside its floor or baseline, then the calls each request makes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .options import SERVE_CLIENTS

STRIPE_TEST_LIMIT = 25  # requests/s in test mode (Stripe's documented default; live: 100)
STRIPE_LIVE_LIMIT = 100
IMPORT_ROW_MIN_SECONDS = 0.005  # import groups below this on both sides are left out


def seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "—"


def table(headers: Sequence[str], rows: Sequence[Sequence[str] | str]) -> str:
    """An aligned, markdown-ish table; a row given as a string is a section heading."""
    cells = [list(headers)] + [list(r) for r in rows if not isinstance(r, str)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([row[0].ljust(widths[0]), *rest]) + " |"

    inner = sum(widths) + 3 * (len(widths) - 1)
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        out.append(f"| {row.ljust(inner)} |" if isinstance(row, str) else line(row))
    return "\n".join(out)


Rows = list[Sequence[str] | str]


def main_table(run: dict[str, Any]) -> str:
    rows = [*_cold_rows(run), *_warm_rows(run), *_batch_rows(run), *_serve_rows(run)]
    return table(["figure", "service", "floor / baseline", "ratio"], rows)


def _pair(label: str, service: float, floor: float) -> list[str]:
    return [label, seconds(service), seconds(floor), ratio(service, floor)]


def _cold_rows(run: dict[str, Any]) -> Rows:
    cold = run["cold"]
    svc, flo = cold["service"], cold["floor"]
    pyc = "packages precompiled" if run["bytecode"]["any"] else "no .pyc: compiled at each start"
    rows: Rows = [
        f"1. cold start, spawn -> first answer ({run['options']['rounds']} fresh processes per side, alternating; "
        f"{pyc})"
    ]
    for stat in ("best", "median"):
        rows.append(_pair(f"cold start, {stat}", svc["seconds"][stat], flo["seconds"][stat]))
    rss_s, rss_f = svc["peak_rss_mb"]["median"], flo["peak_rss_mb"]["median"]
    rows.append(["peak RSS (VmHWM), median", f"{rss_s:.0f} MB", f"{rss_f:.0f} MB", ratio(rss_s, rss_f)])
    if "holder_rss_mb" in cold:
        rows.extend(_holder_rss_rows(cold["holder_rss_mb"]))
    rows.append(_pair("CPU time to first answer, median", svc["cpu_seconds"]["median"], flo["cpu_seconds"]["median"]))
    if "precompiled" in cold:
        pre_s = cold["precompiled"]["service"]["seconds"]["median"]
        pre_f = cold["precompiled"]["floor"]["seconds"]["median"]
        rows.append(_pair("cold start with precompiled .pyc (as sam build makes the layer), median", pre_s, pre_f))
        saved = svc["seconds"]["median"] - pre_s, flo["seconds"]["median"] - pre_f
        rows.append(_pair("  saved by precompiling, median (about 0 where the packages had bytecode already)", *saved))
        if "imports_precompiled" in cold:
            rows.extend(_holder_rows(cold["imports_precompiled"], pre_s, pre_f))
    for label, field in (
        ("  interpreter start (spawn -> child's first line)", "startup_seconds"),
        ("  handler import (floor: import boto3, stripe)", "load_seconds"),
        ("  first call (floor: clients + its 4 calls)", "call_seconds"),
    ):
        rows.append(_pair(label, svc[field]["median"], flo[field]["median"]))
    if "imports" in cold:
        rows.extend(_import_rows(cold.get("imports_precompiled") or cold["imports"], cold["imports"]))
    return rows


# What the service imports beyond the floor's boto3 and stripe, and what each gives it.
HOLDERS = {
    "pydantic": "strict validation naming each field, the typed configuration",
    "Powertools": "routing, the OpenAPI document, idempotency, structured logs, EMF metrics",
    "the service's own code": "with its pydantic models, built as they are imported",
}


def _holder_rows(imports: dict[str, dict[str, dict[str, float]]], service: float, floor: float) -> Rows:
    """Which dependencies hold the cold start above the floor: their import time (precompiled, as in Lambda),
    and the precompiled cold start without it."""
    held = {group: sum(phase.get(group, 0.0) for phase in imports["service"].values()) for group in HOLDERS}
    rows: Rows = []
    for group, why in HOLDERS.items():
        rows.append([f"  held by {group} imports ({why})", seconds(held[group]), "—", "—"])
    rows.append(
        _pair(
            "  precompiled cold start less those imports (-X importtime overstates them a little), median",
            service - sum(held.values()),
            floor,
        )
    )
    return rows


def _holder_rss_rows(rss: dict[str, float]) -> Rows:
    """Peak RSS of a process importing boto3 and stripe, and what importing each holder adds to it."""
    base = rss["boto3 + stripe"]
    rows: Rows = [["  peak RSS of a process importing boto3 + stripe only", f"{base:.0f} MB", "—", "—"]]
    for holder, megabytes in rss.items():
        if holder != "boto3 + stripe":
            rows.append([f"    + {holder}", f"+{megabytes - base:.1f} MB", "—", "—"])
    return rows


def _warm_rows(run: dict[str, Any]) -> Rows:
    warm = run["warm"]
    usage = warm["usage_record"]
    service, floor = usage["service"], usage["floor"]
    latency = run["options"]["latency"]
    rows: Rows = [
        f"2. warm, one usage record ({service['seconds']['n']} per side, alternating, one warm process; "
        f"Stripe answers in {seconds(latency)})"
    ]
    for stat in ("median", "best"):
        rows.append(_pair(f"usage record, {stat}", service["seconds"][stat], floor["seconds"][stat]))
    rows.append(
        _pair(
            "  of which not Stripe (median - Stripe's latency)",
            service["seconds"]["median"] - latency,
            floor["seconds"]["median"] - latency,
        )
    )
    cpu = service["cpu_seconds"]["median"], floor["cpu_seconds"]["median"]
    rows.append(_pair("  CPU time per record, median", *cpu))
    meter_single = warm["meter_event"]["service"]["seconds"]["median"]
    rows.append(["meter event (single, v1), median", seconds(meter_single), "—", "—"])
    return rows


def _batch_rows(run: dict[str, Any]) -> Rows:
    warm = run["warm"]
    rows: Rows = [
        f"3. batches vs one record: batch time / single-record time (median of {run['options']['batch_rounds']} "
        f"rounds; usage records {run['batch_concurrency']} in parallel, meter events: "
        f"{run['meter_event_batch_api']})"
    ]
    singles = {
        "usage_record": warm["usage_record"]["service"]["seconds"]["median"],
        "meter_event": warm["meter_event"]["service"]["seconds"]["median"],
    }
    sizes = sorted(run["options"]["batch_sizes"])
    names = {"usage_record": "usage records", "meter_event": "meter events"}
    for kind, per_size in warm["batches"].items():
        for size in sizes:
            batch = per_size[str(size)]["seconds"]["median"]
            per_record = batch / size / singles[kind]
            rows.append(
                [
                    f"{names[kind]}, batch of {size} (vs 1 record)",
                    seconds(batch),
                    seconds(singles[kind]),
                    f"{ratio(batch, singles[kind])} ({per_record:.2f}x/record)",
                ]
            )
    for kind, per_size in warm["batches"].items():
        biggest = per_size[str(sizes[-1])]
        if biggest.get("moto_cpu_seconds") is not None:
            busy, wall = biggest["moto_cpu_seconds"], biggest["seconds"]["median"]
            label = f"  moto's CPU during the {names[kind]} batch of {sizes[-1]} (vs its wall time)"
            rows.append([label, seconds(busy), seconds(wall), f"{busy / wall:.0%} busy"])
    for size in sizes:
        stats = warm["batches"]["usage_record"][str(size)]
        rate = stats["usage_records_per_second"]
        rows.append(
            [
                f"Stripe requests/s, usage batch of {size} (paced: 25/s; {stats['stripe_max_in_flight']} in flight)",
                f"{rate:.0f}/s",
                f"{STRIPE_TEST_LIMIT}/s test ({STRIPE_LIVE_LIMIT} live)",
                f"{ratio(rate, STRIPE_TEST_LIMIT)} test, {ratio(rate, STRIPE_LIVE_LIMIT)} live",
            ]
        )
    return rows


def _serve_rows(run: dict[str, Any]) -> Rows:
    serve = run["serve"]
    rows: Rows = ["4. local API (local_api.serve: one Lambda instance), usage records/s with N concurrent clients"]
    base = serve[str(SERVE_CLIENTS[0])]["records_per_second"]
    for clients in SERVE_CLIENTS:
        level = serve[str(clients)]
        rate = level["records_per_second"]
        retried = level.get("connection_retries", 0)
        rows.append(
            [
                f"{clients} client{'s' if clients > 1 else ''} ({level['records']} records, "
                f"median latency {seconds(level['latency']['median'])}"
                + (f"; {retried} dropped connection{'s' if retried > 1 else ''} retried)" if retried else ")"),
                f"{rate:.1f}/s",
                f"{base:.1f}/s (1 client)" if clients > 1 else "—",
                ratio(rate, base) if clients > 1 else "—",
            ]
        )
    one = serve[str(SERVE_CLIENTS[0])]["latency"]["median"]
    handler = run["warm"]["usage_record"]["service"]["seconds"]["median"]
    rows.append(
        [
            "  1 client's median latency over the in-process handler's (the local API's own cost)",
            seconds(one - handler),
            seconds(handler),
            ratio(one, handler),
        ]
    )
    return rows


def _import_total(
    imports: dict[str, dict[str, dict[str, float]]], role: str, group: str | None = None, phase: str | None = None
) -> float:
    phases = [phase] if phase else ["before_call", "in_call"]
    return sum(
        value for p in phases for name, value in imports[role].get(p, {}).items() if group is None or name == group
    )


def _import_rows(
    imports: dict[str, dict[str, dict[str, float]]], compiling: dict[str, dict[str, dict[str, float]]]
) -> Rows:
    """Import time by package group from ``imports`` (precompiled when the run has it), and the total of the
    ``compiling`` processes (the ones that wrote the bytecode)."""

    def total(role: str, group: str | None = None, phase: str | None = None) -> float:
        return _import_total(imports, role, group, phase)

    groups = {name for role in imports.values() for phase in role.values() for name in phase}
    ranked = sorted(groups, key=lambda g: -max(total("service", g), total("floor", g)))
    rows: Rows = []
    compiled = _import_total(compiling, "service"), _import_total(compiling, "floor")
    rows.append(_pair("  imports, total (python -X importtime, 1 process each, compiling)", *compiled))
    if imports is not compiling:
        rows.append(
            _pair(
                "  imports, total (python -X importtime, precompiled, median by group)",
                total("service"),
                total("floor"),
            )
        )
    in_call = total("service", phase="in_call"), total("floor", phase="in_call")
    rows.append(_pair("    of which inside the first call (lazy imports)", *in_call))
    for group in ranked:
        a, b = total("service", group), total("floor", group)
        if max(a, b) < IMPORT_ROW_MIN_SECONDS:
            continue
        lazy = total("service", group, "in_call")
        note = f" ({seconds(lazy)} in the first call)" if lazy >= IMPORT_ROW_MIN_SECONDS else ""
        rows.append([f"    import {group}{note}", seconds(a), seconds(b) if b else "—", ratio(a, b) if b else "—"])
    return rows


# -- calls --------------------------------------------------------------------------------------------


def minimum(scenario: str, kind: str, records: int, batch_api: str) -> dict[str, Any]:
    """The least a request needs by the design (not by this implementation): DynamoDB writes and reads,
    secret reads, Stripe requests (SQS: none on the happy path), and why."""
    if scenario == "replay":
        return {
            "writes": 1,
            "reads": 0,
            "secrets": 0,
            "stripe": 0,
            "why": "the lock's conditional PutItem fails and returns the stored answer "
            "(ReturnValuesOnConditionCheckFailure: no GetItem); a failed conditional write still costs a write "
            "unit; Stripe is not called",
        }
    writes = 3 * records
    if scenario == "first":
        return {
            "writes": writes,
            "reads": 0,
            "secrets": 2,
            "stripe": 1,
            "why": "as a usage record, plus the two secrets (client secrets to authenticate, the Stripe key): "
            "read once per instance and SECRETS_CACHE_SECONDS, not per record",
        }
    if scenario == "single":
        stripe_call = (
            "POST /v1/subscription_items/{si}/usage_records"
            if kind == "usage_record"
            else ("POST /v1/billing/meter_events")
        )
        return {
            "writes": writes,
            "reads": 0,
            "secrets": 0,
            "stripe": 1,
            "why": "lock PutItem + plan PutItem + answer UpdateItem = 3 writes: the lock and the answer are "
            "Powertools' idempotency record, the plan is the write-ahead that makes a second processing send the "
            f"same request; 0 SQS on success; 1 Stripe request ({stripe_call})",
        }
    if kind == "usage_record" or batch_api == "v1":
        stripe, how = records, "Stripe has no batch endpoint here: 1 request per record"
    else:
        stripe, how = 1, "1 v2 meter event stream request for the batch (and a session, once per 15 min per instance)"
    return {
        "writes": writes,
        "reads": 0,
        "secrets": 0,
        "stripe": stripe,
        "why": "3 writes per record, each its own dedup record and plan (a conditional write cannot go in "
        f"BatchWriteItem; TransactWriteItems costs 2 units per item); {how}",
    }


_READS = ("GetItem", "Query", "Scan", "BatchGetItem")
_WRITES = ("PutItem", "UpdateItem", "DeleteItem")


def dynamodb_counts(aws: dict[str, int]) -> tuple[int, int]:
    reads = sum(n for name, n in aws.items() if name.startswith("dynamodb:") and name.split(":")[1] in _READS)
    writes = sum(n for name, n in aws.items() if name.startswith("dynamodb:") and name.split(":")[1] in _WRITES)
    return reads, writes


def calls_table(run: dict[str, Any]) -> str:
    rows: Rows = []
    notes = []
    for index, (scenario, counted) in enumerate(run["calls"].items(), start=1):
        aws: dict[str, int] = counted["aws"]
        records = counted["records"]
        reads, writes = dynamodb_counts(aws)
        dynamo = ", ".join(
            f"{name.split(':')[1]} {n}" for name, n in sorted(aws.items()) if name.startswith("dynamodb:")
        )
        if records > 1:
            dynamo += f" ({(reads + writes) / records:g}/record)"
        sqs = sum(n for name, n in aws.items() if name.startswith("sqs:"))
        secrets = sum(n for name, n in aws.items() if name.startswith("secretsmanager:"))
        stripe_total = sum(counted["stripe"].values())
        stripe = ", ".join(f"{endpoint} {n}" for endpoint, n in sorted(counted["stripe"].items())) or "0"
        least = minimum(counted["scenario"], counted["kind"], records, run["meter_event_batch_api"])
        wanted = (
            f"{least['writes']} W + {least['reads']} R, 0 SQS, {least['secrets']} secrets, {least['stripe']} Stripe"
        )
        extra = {
            "DynamoDB writes": writes - least["writes"],
            "DynamoDB reads": reads - least["reads"],
            "SQS": sqs,
            "secrets": secrets - least["secrets"],
            "Stripe": stripe_total - least["stripe"],
        }
        over = [f"+{n} {what}" for what, n in extra.items() if n > 0]
        verdict = ", ".join(over) if over else "at minimum"
        notes.append(f"  [{index}] {scenario}: {least['why']}")
        rows.append([f"[{index}] {scenario}", dynamo or "0", str(sqs), str(secrets), stripe, wanted, verdict])
    headers = ["request", "DynamoDB (counted)", "SQS", "secrets", "Stripe (counted)", "design minimum", "vs minimum"]
    sessions = run["warm"].get("stripe_sessions_created", 0)
    footer = [
        "",
        "Why these minimums (W: DynamoDB writes, R: reads; AWS calls counted with botocore's before-call event on",
        "the service's own clients, Stripe requests from the fake Stripe's request log):",
        *notes,
        f"  Meter event stream sessions created in the whole run: {sessions} (once per instance per 15 minutes).",
    ]
    return table(headers, rows) + "\n" + "\n".join(footer)


def render(run: dict[str, Any]) -> str:
    items = ", ".join(f"{name} {size} B" for name, size in run["dynamodb_item_bytes"].items())
    load = run["load_average"]
    rss = run["cold"]["service"]["ru_maxrss_mb"]["median"], run["cold"]["floor"]["ru_maxrss_mb"]["median"]
    return "\n".join(
        [
            main_table(run),
            "",
            calls_table(run),
            "",
            f"DynamoDB item sizes (median): {items}",
            f"Custom metrics (EMF) seen in this run: {len(run['custom_metrics'])}",
            "Peak RSS is the child's VmHWM: its ru_maxrss carries the parent's over fork and exec on Linux "
            f"({rss[0]:.0f} MB / {rss[1]:.0f} MB here).",
            "Locally, AWS is moto (in its own process) and Stripe a fake answering after the latency above: ratios "
            "are the figures to read, absolute times are this machine's. The local API runs one instance (a lock), "
            "so more clients queue; API Gateway would start more instances.",
            f"Run took {run['seconds']:.0f} s on {run['cpus']} CPUs, load average {load['start']} at the start, "
            f"{load['end']} at the end (Python {run['python']}).",
        ]
    )
