"""What a bench run measures, and how much of it (a light module: read before the slow imports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BATCH_SIZES = (10, 50, 100)
SERVE_CLIENTS = (1, 4, 16)
DEFAULT_JSON = Path(__file__).resolve().parents[3] / ".bench.json"  # this checkout's last run: bench writes, cost reads


@dataclass(frozen=True)
class Options:
    rounds: int = 5  # fresh processes per side for cold starts (and as many with precompiled bytecode)
    warm: int = 40  # warm single usage records per side (half as many single meter events)
    batch_rounds: int = 3  # batches per size and kind
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    serve_records: int = 48  # records per concurrency level through the local API
    latency: float = 0.05  # the fake Stripe's answer time, seconds
    importtime: bool = True  # one more cold process per side under ``python -X importtime``
