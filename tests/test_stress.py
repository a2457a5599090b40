"""A bounded mixed run: writers, patchers and readers in several processes, through chains.

Every process has its own chain ``[MemoryStore(lifetime=1), RedisMsgpackStore,
SqlStore(PostgreSQL)]`` over one shared Redis and one shared database.  Writers
``batch_put`` records of their own and patchers ``batch_patch`` an attribute of their
own of shared records; each records, in shared memory, the sequence number it had
acknowledged for every key and when.  Readers read random keys and count a read as
stale when it is older than what was acknowledged before the read began; "beyond the
lifetime" when that acknowledgement is older than the memory tier's lifetime plus a
second (API.md section 5's documented limit bounds only the in-process tier, by its
lifetime).  Writers also read back what they wrote: their own chain must never be
stale (a patcher judges its own attribute).  After the writes stop and the lifetime
has passed, every process reads every key once more (target: 0 stale), and the source
of truth is checked for lost writes.  docs/reliability.md publishes the figures.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from typing import Any, ClassVar

import pytest
from faults import publish

import stockstore as ss
from stockstore.backends import MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.errors import BatchError, StoreError

pytestmark = [pytest.mark.stress, pytest.mark.redis, pytest.mark.postgresql]

DURATION = 20.0  # seconds of writes
LIFETIME = 1.0  # the memory tier's, in every process
WRITERS, PATCHERS, READERS = 2, 2, 2
PUT_KEYS, PATCH_KEYS = 200, 200  # writer w owns put keys w, w + WRITERS, ...; patchers share the patch keys
BATCH = 10


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def _chain(redis_url: str, sql_url: str, namespace: str) -> ss.ChainedStore:
    return ss.ChainedStore(
        [
            MemoryStore(namespace=namespace, lifetime=LIFETIME),
            RedisMsgpackStore(redis_url, namespace=namespace),
            SqlStore(sql_url, namespace=namespace),
        ]
    )


def _put_key(i: int) -> str:
    return f"w{i}"


def _patch_key(i: int) -> str:
    return f"p{i}"


class Shared:
    """What every process sees: acknowledged sequence numbers per key, and when they were acknowledged."""

    def __init__(self, context: Any) -> None:
        self.put_seq = context.Array("q", PUT_KEYS, lock=False)
        self.put_at = context.Array("d", PUT_KEYS, lock=False)
        self.patch_seq = context.Array("q", PATCH_KEYS * PATCHERS, lock=False)  # [patcher * PATCH_KEYS + key]
        self.patch_at = context.Array("d", PATCH_KEYS * PATCHERS, lock=False)
        self.stop = context.Event()
        self.start = context.Barrier(WRITERS + PATCHERS + READERS + 1, timeout=120)
        self.results = context.Queue()


class Stale:
    """Compares what a read returned with what was acknowledged before it began."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.reads = self.stale = self.beyond = 0

    def snapshot(
        self, puts: list[int], patches: list[int]
    ) -> tuple[list[tuple[int, float]], list[list[tuple[int, float]]]]:
        s = self.shared
        return (
            [(s.put_seq[k], s.put_at[k]) for k in puts],
            [
                [(s.patch_seq[j * PATCH_KEYS + k], s.patch_at[j * PATCH_KEYS + k]) for j in range(PATCHERS)]
                for k in patches
            ],
        )

    def judge(self, got: Any, wanted: list[tuple[str, int, float]], started: float) -> None:
        """*wanted*: (attribute, acknowledged sequence, when); a read older than any of them is stale."""
        self.reads += 1
        old = [(seq, at) for attr, seq, at in wanted if seq and (got is None or got.get(attr, 0) < seq)]
        if old:
            self.stale += 1
            if min(at for _, at in old) < started - LIFETIME - 1.0:
                self.beyond += 1

    def read(self, chain: ss.ChainedStore, puts: list[int], patches: list[int], only: int | None = None) -> None:
        """Read these keys; with *only*, judge the patched keys by that patcher's attribute alone."""
        put_acks, patch_acks = self.snapshot(puts, patches)
        started = time.time()
        got = chain.batch_get(Security, [_put_key(k) for k in puts] + [_patch_key(k) for k in patches])
        for record, (seq, at) in zip(got[: len(puts)], put_acks, strict=True):
            self.judge(record, [("seq", seq, at)], started)
        for record, acks in zip(got[len(puts) :], patch_acks, strict=True):
            wanted = [(f"p{j}", seq, at) for j, (seq, at) in enumerate(acks) if only is None or j == only]
            self.judge(record, wanted, started)

    def figures(self) -> dict[str, int]:
        return {"reads": self.reads, "stale": self.stale, "stale_beyond_lifetime": self.beyond}


def _final_check(chain: ss.ChainedStore, shared: Shared) -> dict[str, int]:
    """Once the writes have stopped and the lifetime has passed: every key, read once."""
    time.sleep(LIFETIME + 0.5)
    quiet = Stale(shared)
    quiet.read(chain, list(range(PUT_KEYS)), list(range(PATCH_KEYS)))
    return quiet.figures()


def _worker(role: str, n: int, redis_url: str, sql_url: str, namespace: str, shared: Shared) -> None:
    rng = random.Random(f"{role}{n}")
    counts = {"attempted": 0, "acknowledged": 0, "errors": 0}
    own = Stale(shared)  # a writer's reads of what it has just written, through its own chain
    others = Stale(shared)
    with _chain(redis_url, sql_url, namespace) as chain:
        chain.get(Security, "none")  # connected before the start line
        shared.start.wait()
        for seq in range(1, 1_000_000):  # bounded; the parent stops the run after DURATION
            if shared.stop.is_set():
                break
            if role == "reader":
                others.read(chain, rng.sample(range(PUT_KEYS), 10), rng.sample(range(PATCH_KEYS), 10))
                continue
            keys = rng.sample(range(n, PUT_KEYS, WRITERS) if role == "writer" else range(PATCH_KEYS), BATCH)
            counts["attempted"] += BATCH
            try:
                if role == "writer":
                    chain.batch_put([Security(ssm_id=_put_key(k), seq=seq, writer=n) for k in keys])
                else:
                    chain.batch_patch(Security, [{"ssm_id": _patch_key(k), f"p{n}": seq} for k in keys])
                failed: set[str] = set()
            except BatchError as exc:
                failed = set(exc.failed)
            except StoreError:
                failed = {_put_key(k) if role == "writer" else _patch_key(k) for k in keys}
            now = time.time()
            for k in keys:
                if (_put_key(k) if role == "writer" else _patch_key(k)) in failed:
                    counts["errors"] += 1
                    continue
                counts["acknowledged"] += 1
                if role == "writer":
                    shared.put_seq[k], shared.put_at[k] = seq, now
                else:
                    shared.patch_seq[n * PATCH_KEYS + k], shared.patch_at[n * PATCH_KEYS + k] = seq, now
            if role == "writer":
                own.read(chain, keys, [])
            else:  # the other patchers' attributes are other processes' writes
                own.read(chain, [], keys, only=n)
        final = _final_check(chain, shared)
    shared.results.put((role, n, counts, own.figures(), others.figures(), final))


def test_stress_mixed_processes_through_chains(redis_url: str, postgresql_url: str) -> None:
    namespace = f"t{uuid.uuid4().hex}"
    context = multiprocessing.get_context("spawn")
    shared = Shared(context)
    roles = [("writer", n) for n in range(WRITERS)] + [("patcher", n) for n in range(PATCHERS)]
    roles += [("reader", n) for n in range(READERS)]
    workers = [
        context.Process(target=_worker, args=(role, n, redis_url, postgresql_url, namespace, shared), name=f"{role}{n}")
        for role, n in roles
    ]
    for w in workers:
        w.start()
    try:
        shared.start.wait()
        started = time.monotonic()
        time.sleep(DURATION)
        shared.stop.set()
        results = [shared.results.get(timeout=60) for _ in workers]
        elapsed = time.monotonic() - started
    finally:
        shared.stop.set()
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    with SqlStore(postgresql_url, namespace=namespace) as source:
        puts = source.batch_get(Security, [_put_key(k) for k in range(PUT_KEYS)])
        patches = source.batch_get(Security, [_patch_key(k) for k in range(PATCH_KEYS)])
    lost = sum(1 for k, r in enumerate(puts) if shared.put_seq[k] and (r is None or r["seq"] < shared.put_seq[k]))
    lost += sum(
        1
        for k, r in enumerate(patches)
        for j in range(PATCHERS)
        if shared.patch_seq[j * PATCH_KEYS + k]
        and (r is None or r.get(f"p{j}", 0) < shared.patch_seq[j * PATCH_KEYS + k])
    )

    def total(index: int, name: str, roles: tuple[str, ...] = ("writer", "patcher", "reader")) -> int:
        return sum(r[index][name] for r in results if r[0] in roles)

    figures = {
        "seconds": round(elapsed, 1),
        "processes": {"writers": WRITERS, "patchers": PATCHERS, "readers": READERS},
        "writes_attempted": total(2, "attempted", ("writer", "patcher")),
        "writes_acknowledged": total(2, "acknowledged", ("writer", "patcher")),
        "writes_failed": total(2, "errors", ("writer", "patcher")),
        "lost_at_source": lost,
        "own_reads": total(3, "reads", ("writer", "patcher")),
        "own_reads_stale": total(3, "stale", ("writer", "patcher")),
        "other_reads": total(4, "reads", ("reader",)),
        "other_reads_stale": total(4, "stale", ("reader",)),
        "other_reads_stale_beyond_lifetime": total(4, "stale_beyond_lifetime", ("reader",)),
        "reads_after_writes_stopped": total(5, "reads"),
        "stale_after_writes_stopped": total(5, "stale"),
    }
    publish("stress", **figures)
    assert [w.exitcode for w in workers] == [0] * len(workers)
    assert figures["writes_acknowledged"] > 0
    assert lost == 0, f"{lost} acknowledged writes are not at the source of truth: {figures}"
    assert figures["own_reads_stale"] == 0, f"a process read back older than it had just written: {figures}"
    assert figures["other_reads_stale_beyond_lifetime"] == 0, f"stale beyond the memory lifetime: {figures}"
    assert figures["stale_after_writes_stopped"] == 0, f"stale reads once the writes had stopped: {figures}"
