"""Fault injection on real servers: API.md section 5 (chaining) while servers fail.

Each test kills, stalls or restarts a real server, or cuts its replies through
tests/faults.py's `FaultProxy`, at a moment it chooses, then checks what the chain
returns against the source of truth.  Scenario numbers are those of
docs/reliability.md, which also has the figures measured here (`publish` prints them).
This file holds the scenarios on one Redis and one SQL database: a failed source
write (1), a cache tier dying during writes (2), cache writes of unknown outcome (3),
late fills (4, 5), partial batches (8), lifetimes carried upward (9) and the atomic
patch-with-expiry (10).  The others are in tests/test_reliability_*.py.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import sqlalchemy as sa
from faults import Attempt, FaultProxy, publish
from redis_servers import RedisProcess
from redis_servers import redis_process as redis_process  # the fixture

import stockstore as ss
from stockstore._entry import Entry
from stockstore._keys import Family, encode_key
from stockstore.backends import MemoryStore, RedisHashStore, RedisMsgpackStore, SqlStore
from stockstore.errors import BackendUnavailableError, BatchError, InvalidKeyError
from stockstore.testing import FakeClock

CHAINED = "stockstore.chain"


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["lid", "isin"]


# ---------------------------------------------------------------------------- helpers


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'source.db'}"


def port_of(url: str) -> int:
    port = sa.make_url(url.replace("redis://", "redis+x://")).port
    assert port is not None
    return port


def redis_snapshot(client: redis.Redis, namespace: str) -> dict[bytes, bytes | None]:
    """Every key of the namespace with its serialized value (DUMP: any type, byte for byte)."""
    return {k: client.dump(k) for k in client.scan_iter(match=f"{namespace}:*", count=1000)}  # type: ignore[misc]


def memory_snapshot(store: MemoryStore) -> dict[Any, Any]:
    """What a memory tier holds, tombstones included: payload, version, expiry, alternate keys."""
    state = store._state
    with state.lock:
        return {slot: (e.payload, e.version, e.expires_ms, e.alternates) for slot, e in state.records.items()}


class Calls:
    """Counts the calls of one primitive of one tier instance (and the keys it was asked for)."""

    def __init__(self, tier: ss.BaseStore, primitive: str) -> None:
        self.count = 0
        self.keys: list[bytes] = []
        inner = getattr(tier, primitive)

        def counted(family: Family, keys_or_entries: Sequence[Any], *args: Any) -> Any:
            self.count += 1
            self.keys.extend(k if isinstance(k, bytes) else k.key for k in keys_or_entries)
            return inner(family, keys_or_entries, *args)

        setattr(tier, primitive, counted)


class GatedRedis(RedisMsgpackStore):
    """A real Redis tier whose next fill made on the gated thread waits until the test releases it.

    That is how the tests put a read-miss's fill (or a write's propagation) exactly
    where the race they attack needs it.
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.gated: int | None = None  # the thread ident whose next fill waits
        self.arrived = threading.Event()
        self.release = threading.Event()

    def gate_this_thread(self) -> None:
        self.gated = threading.get_ident()

    def _wait_if_gated(self) -> None:
        if threading.get_ident() == self.gated:
            self.gated = None
            self.arrived.set()
            if not self.release.wait(30):
                raise AssertionError("the test never released the gated fill")

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self._wait_if_gated()
        super()._fill(family, entries, now_ms)

    def _fill_watched(self, family: Family, entries: Sequence[Entry], tokens: Sequence[bytes], now_ms: float) -> None:
        self._wait_if_gated()  # a read-miss's fill
        super()._fill_watched(family, entries, tokens, now_ms)


def value_of(record: Any) -> Any:
    return None if record is None else record.get("v")


# ---------------------------------------------------------------------------- 1. a failed source write


SOURCE_FAILURES = [
    pytest.param("postgresql-down", marks=pytest.mark.postgresql),
    pytest.param("postgresql-cut", marks=pytest.mark.postgresql),
    pytest.param("postgresql-stalled", marks=[pytest.mark.postgresql, pytest.mark.slow]),
    "sqlite-locked",
    "constraint",
]


@contextlib.contextmanager
def failing_source(failure: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Any]:
    """A working source of truth, and a callable that makes it fail the way *failure* says.

    Yields ``(source, break_it, repair, expected_error, bound_seconds)``.
    """
    if failure.startswith("postgresql"):
        url = sa.make_url(request.getfixturevalue("postgresql_url"))
        with FaultProxy(url.port or 5432) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            source = SqlStore(proxied, namespace=namespace, timeout=1, transaction_timeout=1)
            action = {"postgresql-down": proxy.close, "postgresql-cut": lambda: proxy.cut_after(0)}
            # A stalled server: connections stay open and nothing answers.
            try:  # bound: transaction_timeout + a reconnect's timeout (psycopg: at least 2 s), plus 1 s
                yield source, action.get(failure, proxy.stall), proxy.close, BackendUnavailableError, 4.0
            finally:
                source.close()
        return
    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, timeout=0.3, retries=1)
    if failure == "constraint":
        try:
            yield source, lambda: None, lambda: None, (InvalidKeyError, BatchError), 5.0
        finally:
            source.close()
        return
    holder = sqlite3.connect(tmp_path / "source.db", isolation_level=None, check_same_thread=False)
    try:
        # Another connection holds the write lock; the store's busy timeout is 0.3 s.
        lock, unlock = (lambda: holder.execute("BEGIN IMMEDIATE")), (lambda: holder.execute("ROLLBACK"))
        yield source, lock, unlock, BackendUnavailableError, 5.0
    finally:
        holder.close()
        source.close()


def _security_writes(chain: ss.ChainedStore) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("put", lambda: chain.put(Security(ssm_id=0, v=2))),
        ("batch_put", lambda: chain.batch_put([Security(ssm_id=i, v=2) for i in range(10)])),
        ("patch", lambda: chain.patch(Security, 1, {"v": 2})),
        ("batch_patch", lambda: chain.batch_patch(Security, [{"ssm_id": i, "v": 2} for i in range(10)])),
        ("delete", lambda: chain.delete(Security, 2)),
        ("batch_delete", lambda: chain.batch_delete(Security, list(range(10)))),
    ]


def _conflicting_writes(chain: ss.ChainedStore) -> list[tuple[str, Callable[[], Any]]]:
    # Record 0 holds isin I0: every write below asks the source for I0 for another record.
    return [
        ("put", lambda: chain.put(Listing(lid=1, isin="I0", v=2))),
        ("batch_put", lambda: chain.batch_put([Listing(lid=1, isin="I0", v=2), Listing(lid=2, isin="I0", v=2)])),
        ("patch", lambda: chain.patch(Listing, 1, {"isin": "I0", "v": 2})),
        ("batch_patch", lambda: chain.batch_patch(Listing, [{"lid": 1, "isin": "I0"}, {"lid": 2, "isin": "I0"}])),
    ]


@pytest.mark.redis
@pytest.mark.parametrize("failure", SOURCE_FAILURES)
def test_1_a_failed_source_write_raises_and_touches_no_cache(
    failure: str, request: pytest.FixtureRequest, redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 1: writes go to the source first; if it fails, the call raises and no cache changes."""
    raw = redis.Redis.from_url(redis_url)
    with failing_source(failure, request, tmp_path, namespace) as (source, break_it, repair, expected, bound):
        memory = MemoryStore(namespace=namespace)
        cache = RedisMsgpackStore(redis_url, namespace=namespace)
        chain = ss.ChainedStore([memory, cache, source])
        conflict = failure == "constraint"
        cls: type = Listing if conflict else Security
        if conflict:
            chain.batch_put([Listing(lid=i, isin=f"I{i}", v=1) for i in range(10)])
        else:
            chain.batch_put([Security(ssm_id=i, v=1) for i in range(10)])
        assert [value_of(r) for r in chain.batch_get(cls, range(10))] == [1] * 10  # every tier holds v1
        before = (memory_snapshot(memory), redis_snapshot(raw, namespace))
        assert len(before[0]) == 10
        assert len(before[1]) >= 10

        break_it()
        outcomes: dict[str, str] = {}
        hung = None
        writes = _conflicting_writes(chain) if conflict else _security_writes(chain)
        if failure == "postgresql-stalled":
            writes = writes[:3]  # each waits out the store's timeouts: three are enough
        for name, write in writes:
            attempt = Attempt(write, name)
            if not attempt.wait(bound):
                hung = name
                repair()  # unstick it: the call must end before the test does
                attempt.wait(30)
                break
            outcomes[name] = f"{type(attempt.error).__name__} in {attempt.seconds:.2f}s"
            assert isinstance(attempt.error, expected), f"{failure}: {name} gave {attempt.error!r}, not {expected}"
        publish("1-source-write-fails", failure=failure, outcomes=outcomes, hung=hung)
        after = (memory_snapshot(memory), redis_snapshot(raw, namespace))
        assert after[0] == before[0], f"{failure}: the memory tier changed although the source write failed"
        assert after[1] == before[1], f"{failure}: the Redis tier changed although the source write failed"
        assert hung is None, (
            f"{failure}: {hung} did not return within {bound} s (SqlStore timeout=1, transaction_timeout=1): a "
            "write to a hung source of truth must fail within the store's timeouts"
        )
        repair()
        if not failure.startswith("postgresql"):  # the proxy is gone: the source is read through a new store
            assert [value_of(r) for r in chain.batch_get(cls, range(10))] == [1] * 10
        chain.close()
    raw.close()


# ---------------------------------------------------------------------------- 2. a cache tier dies during writes


@pytest.mark.redis
@pytest.mark.slow
def test_2_a_dead_cache_tier_is_bypassed_and_never_serves_the_old_value(
    redis_process: RedisProcess, tmp_path: Path, namespace: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario 2: Redis killed under writes; then back with its old snapshot, it must not serve it."""
    memory = MemoryStore(namespace=namespace, lifetime=5, clock=clock)
    cache = RedisMsgpackStore(redis_process.url, namespace=namespace, clock=clock, timeout=0.5, connect_timeout=0.5)
    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    chain = ss.ChainedStore([memory, cache, source], clock=clock)
    chain.batch_put([Security(ssm_id=i, v=1) for i in range(10)])
    redis_process.save()  # the snapshot it comes back with: v1 everywhere
    redis_process.kill()

    invalidations, reads = Calls(cache, "_invalidate"), Calls(cache, "_read")
    writes: list[tuple[str, Callable[[], Any]]] = [
        ("put", lambda: chain.put(Security(ssm_id=0, v=2))),
        ("patch", lambda: chain.patch(Security, 1, {"v": 2})),
        ("delete", lambda: chain.delete(Security, 2)),
        ("batch_put", lambda: chain.batch_put([Security(ssm_id=i, v=2) for i in (3, 4, 5)])),
        ("batch_patch", lambda: chain.batch_patch(Security, [{"ssm_id": i, "v": 2} for i in (6, 7)])),
        ("batch_delete", lambda: chain.batch_delete(Security, [8])),
    ]
    want = {0: 2, 1: 2, 2: None, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: None, 9: 1}
    tries: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger=CHAINED):
        for name, write in writes:
            started, before = time.monotonic(), invalidations.count
            write()  # the source took it: the call succeeds although Redis is dead
            seconds[name] = round(time.monotonic() - started, 3)
            tries[name] = invalidations.count - before
    warnings = [r for r in caplog.records if r.name == CHAINED and r.levelno >= logging.WARNING]
    publish("2-cache-tier-dies", invalidation_attempts=tries, write_seconds=seconds, warnings=len(warnings))
    # Counted and logged (a chain may stop trying a dead tier for a while: then the later
    # writes bypass their keys without a new failure to count).
    assert chain.tier_failures[1] >= 1, f"tier_failures={chain.tier_failures}: the failed tier is counted"
    assert chain.tier_failures[0] == chain.tier_failures[2] == 0
    assert warnings, "a tier failure is logged at WARNING by stockstore.chain"
    assert all(n <= chain.retries + 1 for n in tries.values()), f"invalidation attempts per write: {tries}"
    assert max(seconds.values()) < 5, f"write times with a dead tier: {seconds}"

    # Still down: the keys written are not asked of Redis any more (key 9 was not written).
    written = {encode_key((i,)) for i in range(9)}
    clock.tick(6)  # past the memory tier's lifetime
    reads.keys.clear()
    assert {i: value_of(r) for i, r in enumerate(chain.batch_get(Security, range(10)))} == want
    assert not written & set(reads.keys), f"bypassed keys were read from the dead tier: {reads.keys}"

    # Back, with the snapshot taken before the writes: Redis holds v1 for every key.  Read
    # until the chain uses the tier for those keys again (bounded), then three times more.
    redis_process.restart(snapshot=True)
    back = time.monotonic()
    stale: list[tuple[int, Any]] = []
    reused_after = None
    rounds = 0
    while time.monotonic() < back + 20 and (reused_after is None or rounds < 3):
        clock.tick(6)
        reads.keys.clear()
        got = {i: value_of(r) for i, r in enumerate(chain.batch_get(Security, range(10)))}
        stale += [(i, v) for i, v in got.items() if v != want[i]]
        if reused_after is None and written & set(reads.keys):
            reused_after = round(time.monotonic() - back, 2)
        rounds += reused_after is not None
        time.sleep(0.1)
    publish("2-cache-tier-dies", stale_reads_after_restart=len(stale), tier_reused_after_seconds=reused_after)
    assert not stale, f"after Redis came back with its old snapshot, the chain served old values: {stale}"
    assert reused_after is not None, "the chain never used the Redis tier again for the keys it bypassed (20 s)"
    chain.close()


# ---------------------------------------------------------------------------- 3. a cache write of unknown outcome


@pytest.mark.redis
@pytest.mark.parametrize("fault", ["reply-cut", "request-stalled"])
def test_3_a_cache_write_of_unknown_outcome_counts_as_not_applied(
    fault: str, redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 3: the fill reaches Redis and its reply is cut (or it never arrives): invalidate, never assume."""
    with FaultProxy(port_of(redis_url)) as proxy:
        cache = RedisMsgpackStore(
            f"redis://127.0.0.1:{proxy.port}/0", namespace=namespace, timeout=0.5, connect_timeout=0.5, retries=0
        )
        direct = RedisMsgpackStore(redis_url, namespace=namespace)
        # A short pause after failures: the test reads again once the chain uses the tier again.
        chain = ss.ChainedStore([cache, SqlStore(sqlite_url(tmp_path), namespace=namespace)], down_for=0.1)
        chain.put(Security(ssm_id="k", v=1))
        assert value_of(direct.get(Security, "k")) == 1
        fills, invalidations = Calls(cache, "_fill"), Calls(cache, "_invalidate")

        if fault == "reply-cut":
            proxy.cut_after(0)  # requests reach Redis, replies are dropped
        else:
            proxy.stall()  # nothing reaches Redis (until `forward`, like a late packet)
        started = time.monotonic()
        chain.put(Security(ssm_id="k", v=2))  # the source took it: the call succeeds
        took = time.monotonic() - started
        sent = fills.count, invalidations.count
        held = value_of(direct.get(Security, "k"))  # None: a tombstone (an invalidation got through)
        proxy.forward()
        time.sleep(1)  # the tier's pause after its failures is over: the chain repairs it on the next read
        got = [value_of(chain.get(Security, "k")) for _ in range(3)]
        publish(
            "3-cache-write-unknown", fault=fault, write_seconds=round(took, 3), fills_sent=sent[0],
            invalidations_sent=sent[1], redis_held_during_fault=held, reads_after=got,
        )  # fmt: skip
        assert chain.tier_failures[0] >= 1, "the failed fill is counted"
        assert sent[0] == 1, f"the chain set the value again {sent[0] - 1} time(s) after an unknown outcome"
        assert sent[1] >= 1, "a write of unknown outcome is invalidated, not assumed applied"
        if fault == "reply-cut":
            assert held in (2, None), f"the fill reached Redis: it holds v2 or a tombstone, not {held!r}"
        else:
            assert held == 1, f"set-up: a stalled request must not reach Redis, yet it holds {held!r}"
        assert got == [2, 2, 2], f"reads after a {fault} fill returned {got}"
        assert value_of(direct.get(Security, "k")) in (2, None), "Redis is left holding v1 after the repair"
        chain.close()
        direct.close()


# ---------------------------------------------------------------------------- 4. a read-miss fill racing a write


LATE_FILL_WRITES: dict[str, Callable[[ss.ChainedStore], None]] = {
    "put": lambda chain: chain.put(Security(ssm_id="k", v=2)),
    "patch": lambda chain: chain.patch(Security, "k", {"v": 2}),
    "delete": lambda chain: chain.delete(Security, "k"),
    "batch_put": lambda chain: chain.batch_put([Security(ssm_id="k", v=2), Security(ssm_id="other", v=2)]),
}


@pytest.mark.redis
@pytest.mark.parametrize("write", list(LATE_FILL_WRITES))
def test_4_a_late_read_miss_fill_never_lands(write: str, redis_url: str, tmp_path: Path, namespace: str) -> None:
    """Scenario 4: the reader reads v1 from SQL, the writer writes v2, then the reader's fill of v1 runs."""
    gated = GatedRedis(redis_url, namespace=namespace)
    source = SqlStore(sqlite_url(tmp_path), namespace=namespace)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace), gated, source])
    source.put(Security(ssm_id="k", v=1))  # at the source only: the caches are cold

    def read() -> Any:
        gated.gate_this_thread()
        return chain.get(Security, "k")

    reader = Attempt(read, "reader")
    assert gated.arrived.wait(10), "the reader never got to its fill"
    LATE_FILL_WRITES[write](chain)  # while the reader's fill of v1 waits
    gated.release.set()
    assert reader.wait(10)
    assert reader.error is None, reader.error
    want = None if write == "delete" else 2
    direct = RedisMsgpackStore(redis_url, namespace=namespace)
    got = [value_of(chain.get(Security, "k")) for _ in range(3)]
    in_redis = value_of(direct.get(Security, "k"))
    publish("4-late-fill", write=write, reader_got=value_of(reader.result), reads_after=got, redis_holds=in_redis)
    assert value_of(reader.result) == 1, "the reader began before the write: it returns v1"
    assert got == [want] * 3, f"after {write}, the late fill of v1 landed: reads returned {got}"
    assert in_redis in (want, None), f"Redis holds {in_redis!r}: the late fill of v1 landed there"
    chain.close()
    direct.close()


# ---------------------------------------------------------------------------- 5. two writers, opposite orders


@pytest.mark.redis
def test_5_two_writers_propagating_in_opposite_order_leave_the_newer_value(
    redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 5: A writes v1 to SQL, B writes v2 to SQL and the caches, then A's propagation of v1 runs."""
    shared = MemoryStore(namespace=namespace)
    gated = GatedRedis(redis_url, namespace=namespace)
    a = ss.ChainedStore([shared, gated, SqlStore(sqlite_url(tmp_path), namespace=namespace)])
    b = ss.ChainedStore(
        [shared, RedisMsgpackStore(redis_url, namespace=namespace), SqlStore(sqlite_url(tmp_path), namespace=namespace)]
    )
    a.put(Security(ssm_id="k", v=0, writer="a"))

    def write_a() -> None:
        gated.gate_this_thread()
        a.put(Security(ssm_id="k", v=1, writer="a"))

    writer_a = Attempt(write_a, "writer-a")
    assert gated.arrived.wait(10), "writer A never got to its propagation"
    b.put(Security(ssm_id="k", v=2, writer="b"))  # reaches the source after A, and the caches before A
    gated.release.set()
    assert writer_a.wait(10)
    assert writer_a.error is None, writer_a.error

    fresh = ss.ChainedStore([MemoryStore(namespace=namespace), RedisMsgpackStore(redis_url, namespace=namespace)])
    held = {
        "source": value_of(a.tiers[2].get(Security, "k")),
        "redis": value_of(fresh.tiers[1].get(Security, "k")),
        "memory": value_of(shared.get(Security, "k")),
        "chain a": value_of(a.get(Security, "k")),
        "chain b": value_of(b.get(Security, "k")),
    }
    publish("5-opposite-order", held=held)
    assert held == dict.fromkeys(held, 2), f"the older value won somewhere: {held}"
    for store in (a, b, fresh):
        store.close()


# ---------------------------------------------------------------------------- 8. partial batches


class CuttingSource(RedisMsgpackStore):
    """Redis as the source of truth, behind a proxy that drops the connection in the middle of a write.

    On its *at*-th `_write` call (one chunk of the chain's batch) the proxy is told to let
    *budget* reply bytes through and then cut every connection.
    """

    def __init__(self, *args: Any, proxy: FaultProxy, at: int, budget: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.proxy, self.at, self.budget, self.calls = proxy, at, budget, 0

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        self.calls += 1
        if self.calls == self.at:
            self.proxy.cut_after(self.budget)
        return super()._write(family, entries, now_ms)


@pytest.mark.redis
def test_8_a_connection_dropped_mid_pipeline_fails_every_unknown_item_and_invalidates_it(
    redis_url: str, namespace: str
) -> None:
    """Scenario 8: the source's connection drops in the middle of a batch's pipeline.

    The source is Redis with a lifetime, so a chunk is a pipeline of 1,000 ``SET ... PX``
    whose replies are cut after 2,500 bytes (half of them) on the second chunk of the
    chain's second 2,000-record chunk.  Every item whose outcome is unknown must be in
    ``BatchError.failed``, and the chain must then return what the source holds.
    """
    records = 6000
    with FaultProxy(port_of(redis_url)) as proxy:
        source = CuttingSource(
            f"redis://127.0.0.1:{proxy.port}/0", namespace=namespace, lifetime=3600, retries=0, timeout=1,
            proxy=proxy, at=0, budget=1000 * 5 + 2500,
        )  # fmt: skip
        chain = ss.ChainedStore([MemoryStore(namespace=namespace), source])
        chain.batch_put([Security(ssm_id=i, v=1) for i in range(records)])
        source.calls, source.at = 0, 2  # armed: the chain's second chunk is cut in the middle
        with pytest.raises(BatchError) as caught:
            chain.batch_put([Security(ssm_id=i, v=2) for i in range(records)])
        failed = set(caught.value.failed)
        proxy.forward()
        truth = [
            value_of(r) for r in RedisMsgpackStore(redis_url, namespace=namespace).batch_get(Security, range(records))
        ]
        got = [value_of(r) for r in chain.batch_get(Security, range(records))]
        applied_but_failed = sum(1 for i in failed if truth[i] == 2)
        lost_acknowledged = [i for i in range(records) if i not in failed and truth[i] != 2]
        differ = [(i, got[i], truth[i]) for i in range(records) if got[i] != truth[i]]
        publish(
            "8-partial-batch-cut", records=records, failed=len(failed), failed_but_applied=applied_but_failed,
            acknowledged_not_applied=len(lost_acknowledged), chain_differs_from_source=len(differ),
        )  # fmt: skip
        assert not lost_acknowledged, f"{len(lost_acknowledged)} items left out of BatchError.failed were not applied"
        assert all(truth[i] in (1, 2) for i in failed)
        assert not differ, (
            f"{len(differ)} of the {len(failed)} failed keys read through the chain differ from the source of truth "
            f"(chain, source): {differ[:3]}...; {applied_but_failed} of them reached the source although their "
            "reply was lost, and the chain did not invalidate the cache for them"
        )
        chain.close()


@pytest.mark.redis
def test_8_per_item_conflicts_at_the_source_fail_exactly_those_items(
    redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 8: a batch with alternate-key conflicts at the source: per-item outcomes, caches consistent."""
    chain = ss.ChainedStore(
        [
            MemoryStore(namespace=namespace),
            RedisMsgpackStore(redis_url, namespace=namespace),
            SqlStore(sqlite_url(tmp_path), namespace=namespace),
        ]
    )
    chain.batch_put([Listing(lid=i, isin=f"I{i}", v=1) for i in range(10)])
    assert [value_of(r) for r in chain.batch_get(Listing, range(10))] == [1] * 10
    batch = [Listing(lid=i, isin=f"I{i}", v=2) for i in range(10, 20)]
    batch += [Listing(lid=20, isin="I3", v=2), Listing(lid=5, isin="I5", v=2), Listing(lid=6, isin="I7", v=2)]
    with pytest.raises(BatchError) as caught:
        chain.batch_put(batch)
    assert sorted(caught.value.failed) == [6, 20]
    source = chain.tiers[2]
    truth = [value_of(r) for r in source.batch_get(Listing, range(21))]
    assert truth == [1] * 5 + [2, 1, 1, 1, 1] + [2] * 10 + [None]
    assert [value_of(r) for r in chain.batch_get(Listing, range(21))] == truth
    by_isin = chain.get(Listing, {"isin": "I7"})
    assert by_isin is not None
    assert (by_isin["lid"], by_isin["v"]) == (7, 1)
    chain.close()


# ---------------------------------------------------------------------------- 9. a fill never outlives its source


@pytest.mark.redis
@pytest.mark.parametrize("path", ["write", "read-fill", "patch"])
def test_9_a_filled_copy_expires_with_the_source_copy(
    path: str, redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    """Scenario 9: source lifetime 5 s, caches 60 s: once the source copy expires, nothing returns it."""
    memory = MemoryStore(namespace=namespace, lifetime=60, clock=clock)
    cache = RedisMsgpackStore(redis_url, namespace=namespace, lifetime=60, clock=clock)
    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, lifetime=5, clock=clock)
    chain = ss.ChainedStore([memory, cache, source], clock=clock)
    keys = ["a", "b"]
    if path == "write":
        chain.batch_put([Security(ssm_id=k, v=1) for k in keys])
    elif path == "patch":
        chain.batch_put([Security(ssm_id=k, v=1) for k in keys])
        clock.tick(3)
        chain.batch_patch(Security, [{"ssm_id": k, "v": 2} for k in keys])  # the source's 5 s start again
    else:
        source.batch_put([Security(ssm_id=k, v=1) for k in keys])
        clock.tick(3)
    assert all(r is not None for r in chain.batch_get(Security, keys))  # every tier holds a copy now
    clock.tick(5.5)
    held = {
        "chain": [chain.get(Security, k) for k in keys],
        "memory": memory.batch_get(Security, keys),
        "redis": cache.batch_get(Security, keys),
        "source": source.batch_get(Security, keys),
    }
    publish("9-fill-lifetime", path=path, live_copies={t: sum(r is not None for r in v) for t, v in held.items()})
    assert held == {t: [None, None] for t in held}, f"an expired record was resurrected: {held}"
    chain.close()


# ---------------------------------------------------------------------------- 10. patch and expiry, one step


LAYOUTS = {"msgpack": RedisMsgpackStore, "hash": RedisHashStore}


def _ttl_less(client: redis.Redis, namespace: str) -> tuple[int, list[bytes]]:
    """How many keys the namespace holds, and those without a TTL (PTTL -1)."""
    names = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
    return len(names), [n for n, ttl in zip(names, pipe.execute(), strict=True) if ttl == -1]


def _open_patcher(kind: str, url: str, directory: str, namespace: str) -> ss.BaseStore:
    if kind == "chain":
        return ss.ChainedStore(
            [
                MemoryStore(namespace=namespace),
                RedisMsgpackStore(url, namespace=namespace, lifetime=30),
                SqlStore(f"sqlite:///{directory}/source.db", namespace=namespace),
            ]
        )
    return LAYOUTS[kind](url, namespace=namespace, lifetime=30)


def _patch_until_killed(kind: str, url: str, directory: str, namespace: str, done: Any) -> None:
    """Patch new records (alone and in batches, with alternate keys too) until the parent kills us."""
    store = _open_patcher(kind, url, directory, namespace)
    for n in range(1_000_000):  # bounded: the parent kills it within seconds
        store.patch(Security, f"s{n}", {"v": n})
        store.batch_patch(Listing, [{"lid": 10 * n + i, "isin": f"I{10 * n + i}", "v": n} for i in range(10)])
        done.value = n + 1


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["msgpack", "hash", "chain"])
def test_10_a_record_created_by_patch_is_never_without_its_expiry(
    kind: str, redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 10: write and expiry are one step: right after a patch, and when the patcher is killed."""
    client = redis.Redis.from_url(redis_url)
    store = _open_patcher(kind, redis_url, str(tmp_path), namespace)
    store.patch(Security, "first", {"v": 1})
    store.patch(Listing, 1, {"isin": "X1", "v": 1})
    held, without = _ttl_less(client, namespace)
    assert held >= 2
    assert not without, f"right after a patch, {len(without)} of {held} keys have no TTL: {without}"
    store.close()

    spawn = multiprocessing.get_context("spawn")
    done = spawn.Value("q", 0)
    other = f"{namespace}k"
    patcher = spawn.Process(target=_patch_until_killed, args=(kind, redis_url, str(tmp_path), other, done))
    patcher.start()
    try:
        deadline = time.monotonic() + 30
        while done.value < 100 and patcher.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done.value >= 100, f"the patcher made only {done.value} rounds (exit code {patcher.exitcode})"
        time.sleep(0.013)  # somewhere inside a round
    finally:
        patcher.kill()
        patcher.join(10)
    held, without = _ttl_less(client, other)
    publish(
        "10-patch-expiry-atomic", kind=kind, rounds_before_kill=done.value, keys_checked=held, without_ttl=len(without)
    )
    assert held > 100
    assert not without, f"after SIGKILL, {len(without)} of {held} keys have no TTL: {without[:5]}"
    client.close()
