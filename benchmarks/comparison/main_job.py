"""The main job's scaling: `stockstore bench`'s store step at a small and a large N, and how much rate the large keeps.

`stockstore bench` stores N securities with `batch_put` in calls of 10,000 on its
embedded default, memory over a SQLite file (`stockstore._bench.open_store`).  This
runs that step at two sizes on the same generated records (the small run stores the
first of them), each run in a fresh namespace and a fresh file, the sizes
interleaved when repeated, and checks each: the count, and a sample read back
exactly.  The figure is the large run's records/s over the small run's.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from stockstore import BaseStore
from stockstore._bench import (
    CHUNK,
    CheckFailed,
    Progress,
    Security,
    _chunks,
    difference,
    fresh_namespace,
    generate,
    no_progress,
    open_store,
)
from stockstore.errors import StoreError

from .report import Failure

SAMPLE = 1000  # records read back after each run and checked
STORE = "memory over a SQLite file (stockstore bench's default)"


@dataclass
class MainJob:
    """The median seconds of the store step at each size."""

    sizes: tuple[int, int]
    repeat: int
    seconds: tuple[float, float] | None = None  # None if a run failed
    store: str = STORE
    failures: list[Failure] = field(default_factory=list)

    @property
    def rates(self) -> tuple[float, float] | None:
        if self.seconds is None:
            return None
        small, large = (n / s if s > 0 else float("inf") for n, s in zip(self.sizes, self.seconds, strict=True))
        return small, large

    @property
    def ratio(self) -> float | None:
        """Records/s at the large size over records/s at the small one: higher is better, 1.0 keeps it all."""
        rates = self.rates
        return None if rates is None else rates[1] / rates[0]


def run_main_job(
    sizes: tuple[int, int], *, attrs: int, seed: int, repeat: int = 1, progress: Progress = no_progress
) -> MainJob:
    """Time `stockstore bench`'s store step at both *sizes*, *repeat* times each, interleaved."""
    job = MainJob(sizes, repeat)
    records = generate(max(sizes), attrs, seed, progress)
    runs: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeat):
        for size in sizes:
            try:
                runs[size].append(_store_step(records[:size], seed, progress))
            except (CheckFailed, StoreError, OSError) as exc:
                check, detail = (exc.check, exc.detail) if isinstance(exc, CheckFailed) else ("store", repr(exc))
                job.failures.append(Failure(f"main job at {size:,}", check, detail))
                return job
    small, large = (statistics.median(runs[size]) for size in sizes)
    job.seconds = (small, large)
    return job


def _store_step(records: list[Security], seed: int, progress: Progress) -> float:
    """The seconds `stockstore bench`'s store step takes for *records*, on a fresh default store; checked after."""
    with tempfile.TemporaryDirectory(prefix="stockstore-main-job-") as directory:
        store = open_store([], db=Path(directory) / "bench.db", namespace=fresh_namespace())
        with store, progress(f"main job: store {len(records):,}", len(records)) as advance:
            gc.collect()  # untimed, as every step of the comparison starts
            started = time.perf_counter()
            for chunk in _chunks(records, CHUNK):
                store.batch_put(chunk)
                advance(len(chunk))
            seconds = time.perf_counter() - started
            _check(store, records, seed)
    return seconds


def _check(store: BaseStore, records: list[Security], seed: int) -> None:
    count = store.count(Security)
    if count != len(records):
        raise CheckFailed("main job count", f"{count} records, expected {len(records)}")
    sample = random.Random(seed + 3).sample(range(len(records)), min(SAMPLE, len(records)))
    got = store.batch_get(Security, [records[i]["ssm_id"] for i in sample])
    for i, record in zip(sample, got, strict=True):
        problem = difference(record, records[i])
        if problem is not None:
            raise CheckFailed("main job read", f"{records[i]['ssm_id']}: {problem}")
