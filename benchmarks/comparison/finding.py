"""Finding records at the mission's scale: `find`, `count` and `reset` next to the same queries written by hand.

N securities with the bench's float attributes plus three indexed ones (``sector``:
50 values, ``rating``: 20 ints, ``price``: a float) are stored in each backend twice:
as a family that declares the three indexes and as one that declares none, so the
cost of keeping indexes is the time ratio of the two ``batch_put``.  Then, on the
indexed family, and on a hand-written copy of the same data with its own indexes
(`HandRedis`: ``MSET`` of msgpack plus ``SADD``/``ZADD``; `HandSql`: a table with
indexed columns), the same four queries are timed:

- ``find(sector=...)``: every key of one sector (N/50);
- a price range of about 1,000 keys, ordered by price;
- ``count()`` of each.

Each query's keys are checked equal to the hand-written answer.  Last, ``reset``
replaces the whole dataset while a reader in another process reads one record in a
loop: the longest the reader waited for one read during the reset, next to the
longest before it, says whether readers were blocked; Redis's ``used_memory`` is
sampled meanwhile for the peak of the switch.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgpack

import stockstore as ss
from stockstore._bench import Progress, _chunks, fresh_namespace, generate, no_progress
from stockstore.errors import StoreError

from .report import lines_text, table_text

SECTORS, RATINGS = 50, 20
RANGE = 1000  # keys the price range finds
CHUNK = 2000  # records per MSET / executemany of the hand-written copies


class Indexed(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector", "rating", "price"]


class Plain(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def dataset(n: int, attrs: int, seed: int, progress: Progress) -> list[dict[str, Any]]:
    """The bench's securities with the three indexed attributes added (prices uniform in [0, n))."""
    rng = random.Random(seed + 11)
    out = []
    for record in generate(n, attrs, seed, progress):
        attributes = dict(record)
        attributes["sector"] = f"sector{rng.randrange(SECTORS):02d}"
        attributes["rating"] = rng.randrange(RATINGS)
        attributes["price"] = rng.random() * n
        out.append(attributes)
    return out


# ---------------------------------------------------------------------------- hand-written copies


class HandRedis:
    """The data by hand in Redis: ``MSET`` of msgpack, a set per sector, sorted sets of ratings and prices."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = f"hand-{fresh_namespace()}"

    def put(self, records: Sequence[dict[str, Any]]) -> None:
        p = self.prefix
        for chunk in _chunks(records, CHUNK):
            pipe = self.client.pipeline(transaction=False)
            pipe.mset({f"{p}:r:{r['ssm_id']}": msgpack.packb(r) for r in chunk})
            for r in chunk:
                pipe.sadd(f"{p}:sector:{r['sector']}", r["ssm_id"])
            pipe.zadd(f"{p}:rating", {r["ssm_id"]: r["rating"] for r in chunk})
            pipe.zadd(f"{p}:price", {r["ssm_id"]: r["price"] for r in chunk})
            pipe.execute()

    def sector(self, value: str) -> list[str]:
        return sorted(k.decode() for k in self.client.smembers(f"{self.prefix}:sector:{value}"))

    def prices(self, low: float, high: float) -> list[str]:
        found = self.client.zrangebyscore(f"{self.prefix}:price", low, high, start=0, num=RANGE)
        return [k.decode() for k in found]

    def count_sector(self, value: str) -> int:
        return int(self.client.scard(f"{self.prefix}:sector:{value}"))

    def count_prices(self, low: float, high: float) -> int:
        return int(self.client.zcount(f"{self.prefix}:price", low, high))

    def close(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=10_000):
            self.client.unlink(key)
        self.client.close()


class HandSqlite:
    """The data by hand in a SQLite file: key, msgpack payload and the three attributes in indexed columns."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE t (key TEXT PRIMARY KEY, payload BLOB, sector TEXT, rating INT, price REAL)")
        self.db.execute("CREATE INDEX t_sector ON t (sector, key)")
        self.db.execute("CREATE INDEX t_rating ON t (rating, key)")
        self.db.execute("CREATE INDEX t_price ON t (price, key)")

    def put(self, records: Sequence[dict[str, Any]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                ((r["ssm_id"], msgpack.packb(r), r["sector"], r["rating"], r["price"]) for r in records),
            )

    def sector(self, value: str) -> list[str]:
        return [k for (k,) in self.db.execute("SELECT key FROM t WHERE sector = ? ORDER BY key", (value,))]

    def prices(self, low: float, high: float) -> list[str]:
        query = "SELECT key FROM t WHERE price BETWEEN ? AND ? ORDER BY price, key LIMIT ?"
        return [k for (k,) in self.db.execute(query, (low, high, RANGE))]

    def count_sector(self, value: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM t WHERE sector = ?", (value,)).fetchone()[0])

    def count_prices(self, low: float, high: float) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM t WHERE price BETWEEN ? AND ?", (low, high)).fetchone()[0])

    def close(self) -> None:
        self.db.close()


Hand = HandRedis | HandSqlite


# ---------------------------------------------------------------------------- results


@dataclass
class Backend:
    """One backend's medians: seconds per step for stockstore and, where there is one, the hand-written copy."""

    name: str
    put_indexed: float = 0.0
    put_plain: float = 0.0
    queries: dict[str, tuple[float, float]] = field(default_factory=dict)  # step -> (stockstore, by hand)
    reset_seconds: float = 0.0
    longest_read_before: float = 0.0
    longest_read_during: float = 0.0
    peak_memory: tuple[int, int] | None = None  # Redis used_memory before the reset, and its peak during
    failures: list[str] = field(default_factory=list)


@dataclass
class Finding:
    n: int
    repeat: int
    backends: list[Backend] = field(default_factory=list)


# ---------------------------------------------------------------------------- the reader of the reset


def _reader(url: str, namespace: str, key: str, redis_url: str | None, out: Any, stop: Any, ready: Any) -> None:
    """Read one record in a loop until told to stop; report each read's latency (and Redis memory) as it goes."""
    store = ss.from_url(url, namespace=namespace)
    client = None
    if redis_url is not None:
        import redis

        client = redis.Redis.from_url(redis_url)
    ready.set()
    longest, memory = 0.0, 0
    last = time.perf_counter()
    while not stop.is_set():
        started = time.perf_counter()
        store.get(Indexed, key)
        longest = max(longest, time.perf_counter() - started)
        if client is not None:
            memory = max(memory, int(client.info("memory")["used_memory"]))
        if started - last > 0.05:
            out.put((longest, memory))
            longest, last = 0.0, started
    out.put((longest, memory))
    store.close()


@contextlib.contextmanager
def reading(url: str, namespace: str, key: str, redis_url: str | None) -> Iterator[Callable[[], tuple[float, int]]]:
    """A reader in another process; the callable yields the longest read and the highest memory since last asked."""
    context = multiprocessing.get_context("spawn")
    out, stop, ready = context.Queue(), context.Event(), context.Event()
    process = context.Process(target=_reader, args=(url, namespace, key, redis_url, out, stop, ready))
    process.start()
    ready.wait(60)

    def since() -> tuple[float, int]:
        longest, memory = 0.0, 0
        with contextlib.suppress(Exception):
            while True:
                read, used = out.get_nowait()
                longest, memory = max(longest, read), max(memory, used)
        return longest, memory

    try:
        yield since
    finally:
        stop.set()
        time.sleep(0.2)
        process.join(30)


# ---------------------------------------------------------------------------- the run


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


QUERY_CALLS = 5  # a query's time: the median of this many calls, after one call not timed


def _timed_query(work: Callable[[], Any]) -> tuple[float, Any]:
    """A query's time as a program that asks it again sees it: the first call's one-time costs left out.

    A statement compiled, a script loaded: both sides pay them once, and a single
    timed call of a few milliseconds measured mostly that, and the noise.
    """
    work()
    times, result = [], None
    for _ in range(QUERY_CALLS):
        seconds, result = _timed(work)
        times.append(seconds)
    return statistics.median(times), result


def _put(store: ss.BaseStore, cls: type, records: Sequence[dict[str, Any]]) -> None:
    for chunk in _chunks(records, 10_000):
        store.batch_put([cls(r) for r in chunk])


def measure(
    name: str,
    url: str,
    hand: Callable[[], Hand],
    records: list[dict[str, Any]],
    *,
    repeat: int,
    redis_url: str | None = None,
) -> Backend:
    """Every step of one backend, *repeat* times (medians), each run in fresh namespaces."""
    result = Backend(name)
    runs: dict[str, list[float]] = {}
    rng = random.Random(7)
    for _ in range(repeat):
        by_hand = hand()
        try:
            _run_once(url, by_hand, records, rng, redis_url, runs, result)
        finally:
            by_hand.close()
    median = {step: statistics.median(times) for step, times in runs.items()}
    result.put_plain, result.put_indexed = median["put plain"], median["put indexed"]
    result.reset_seconds = median.get("reset", math.nan)
    for step in QUERIES:
        result.queries[step] = (median[step], median[f"{step} by hand"])
    return result


QUERIES = ("find(sector=...)", "price range, ordered", "count(sector=...)", "count(price range)")


def _run_once(
    url: str,
    by_hand: Hand,
    records: list[dict[str, Any]],
    rng: random.Random,
    redis_url: str | None,
    runs: dict[str, list[float]],
    result: Backend,
) -> None:
    """One run of every step, in a fresh namespace; its times join *runs*, its failures *result*."""
    n = len(records)
    namespace = fresh_namespace()
    with ss.from_url(url, namespace=namespace) as store:
        runs.setdefault("put plain", []).append(_timed(lambda: _put(store, Plain, records))[0])
        store.clear(Plain)
        runs.setdefault("put indexed", []).append(_timed(lambda: _put(store, Indexed, records))[0])
        by_hand.put(records)
        sector = f"sector{rng.randrange(SECTORS):02d}"
        low = rng.random() * max(n - 2 * RANGE, 0)
        high = low + RANGE * 1.5  # about 1,500 prices: the first 1,000 are asked for
        steps: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            QUERIES[0]: (lambda: sorted(store.find(Indexed, sector=sector)), lambda: by_hand.sector(sector)),
            QUERIES[1]: (
                lambda: list(store.find(Indexed, price__gte=low, price__lte=high).order_by("price")[:RANGE]),
                lambda: by_hand.prices(low, high),
            ),
            QUERIES[2]: (lambda: store.find(Indexed, sector=sector).count(), lambda: by_hand.count_sector(sector)),
            QUERIES[3]: (
                lambda: store.find(Indexed, price__gte=low, price__lte=high).count(),
                lambda: by_hand.count_prices(low, high),
            ),
        }
        for step, (mine, theirs) in steps.items():
            seconds, got = _timed_query(mine)
            hand_seconds, want = _timed_query(theirs)
            if got != want:
                result.failures.append(f"{step}: stockstore found {str(got)[:80]}, by hand {str(want)[:80]}")
            runs.setdefault(step, []).append(seconds)
            runs.setdefault(f"{step} by hand", []).append(hand_seconds)
        with reading(url, namespace, records[0]["ssm_id"], redis_url) as since:
            time.sleep(1.0)
            before, memory_before = since()
            try:
                seconds, count = _timed(lambda: store.reset(Indexed, [Indexed(r) for r in reversed(records)]))
            except StoreError as exc:
                result.failures.append(f"reset: {exc!r}")
                return
            time.sleep(0.2)
            during, memory_peak = since()
        if count != n:
            result.failures.append(f"reset: {count} records, expected {n}")
        runs.setdefault("reset", []).append(seconds)
        result.longest_read_before = max(result.longest_read_before, before)
        result.longest_read_during = max(result.longest_read_during, during)
        if redis_url is not None:
            peak = max(memory_peak, result.peak_memory[1] if result.peak_memory else 0)
            result.peak_memory = (memory_before, peak)
        store.clear(Indexed)


def run_finding(
    n: int,
    *,
    attrs: int,
    seed: int,
    repeat: int = 1,
    redis_url: str | None = None,
    progress: Progress = no_progress,
) -> Finding:
    """The finding part of a comparison: Redis (if given) and SQLite, each against its hand-written copy."""
    finding = Finding(n, repeat)
    records = dataset(n, attrs, seed, progress)
    with tempfile.TemporaryDirectory(prefix="stockstore-finding-") as directory:
        if redis_url is not None:
            finding.backends.append(
                measure(
                    "RedisMsgpackStore",
                    redis_url,
                    lambda: HandRedis(redis_url),
                    records,
                    repeat=repeat,
                    redis_url=redis_url,
                )
            )
        paths = iter(range(1_000_000))
        finding.backends.append(
            measure(
                "SqlStore sqlite",
                f"sqlite:///{directory}/store.db",
                lambda: HandSqlite(Path(directory) / f"hand{next(paths)}.db"),
                records,
                repeat=repeat,
            )
        )
    return finding


def render_finding(finding: Finding, markdown: bool) -> str:
    """The finding part: the cost of indexes on writes, each query next to its hand-written twin, the reset."""
    title = (
        f"finding (issue 12): {finding.n:,} securities with 3 indexed attributes (sector: {SECTORS} values, "
        f"rating: {RATINGS}, price: a float); medians of {finding.repeat}; ratio = stockstore's time / by hand's"
    )
    rows = []
    for b in finding.backends:
        rows.append(
            [
                b.name,
                "batch_put indexed / not indexed",
                f"{b.put_indexed:.2f} s",
                f"{b.put_plain:.2f} s",
                f"{b.put_indexed / b.put_plain:.2f}x",
                "<= 1.5x",
            ]
        )
        for step, (mine, theirs) in b.queries.items():
            rows.append(
                [b.name, step, f"{mine * 1000:.1f} ms", f"{theirs * 1000:.1f} ms", f"{mine / theirs:.2f}x", "<= 1.5x"]
            )
        memory = ""
        if b.peak_memory is not None:
            before, peak = (m / 2**20 for m in b.peak_memory)
            memory = f"; Redis used_memory {before:,.0f} MiB before, peak {peak:,.0f} MiB"
        rows.append(
            [
                b.name,
                "reset of all",
                "failed" if math.isnan(b.reset_seconds) else f"{b.reset_seconds:.2f} s",
                "",
                "",
                f"longest read {b.longest_read_during * 1000:.0f} ms during, "
                f"{b.longest_read_before * 1000:.0f} ms before{memory}",
            ]
        )
    header = ["backend", "step", "stockstore", "by hand / not indexed", "ratio", "target / note"]
    parts = [title, table_text([header, *rows], markdown, left=2)]
    failures = [f"check failed: {b.name}: {f}" for b in finding.backends for f in b.failures]
    if failures:
        parts.append(lines_text(failures, markdown))
    return "\n\n".join(parts)
