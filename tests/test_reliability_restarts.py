"""Cache servers killed in the middle of big batches, and coming back (docs/reliability.md, 6 and 7).

The chains here are ``[MemoryStore, Redis or memcached, SqlStore on SQLite]``.  A tier
wrapper kills the cache server (SIGKILL, from another thread, so that it lands in the
middle of a pipeline) once half of a 50,000-record batch has been filled into it.  The
batch must succeed or raise `BatchError` naming exactly what the source of truth did
not apply; then the server comes back, empty or from a snapshot taken before the
batch, and every key is read back and compared with what was acknowledged: by the
writing process's chain, and (for Redis back from a snapshot) by a second process's chain.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
from faults import publish
from memcached_servers import MemcachedProcess
from memcached_servers import memcached_processes as memcached_processes  # the fixture
from redis_servers import RedisProcess
from redis_servers import redis_process as redis_process  # the fixture

import stockstore as ss
from stockstore._entry import Entry
from stockstore._keys import Family
from stockstore.backends import MemcacheStore, MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.errors import BatchError
from stockstore.testing import FakeClock

pytestmark = pytest.mark.slow

RECORDS = 50_000
PIECE = 1000  # records a wrapped fill hands to the real one at a time


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Killer:
    """Kills a server from another thread once *at* records have gone into a tier (``None``: never)."""

    def __init__(self, server: RedisProcess | MemcachedProcess) -> None:
        self.server = server
        self.at: int | None = None
        self.filled = 0
        self.landed: int | None = None  # records filled when the kill was sent
        self._thread: threading.Thread | None = None

    def arm(self, at: int) -> None:
        self.at, self.filled = at, 0

    def fill(self, fill: Any, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        for start in range(0, len(entries), PIECE):
            if self.at is not None and self._thread is None and self.filled >= self.at:
                self.landed = self.filled
                self._thread = threading.Thread(target=self.server.kill, name="killer")
                self._thread.start()
            self.filled += len(entries[start : start + PIECE])
            fill(family, entries[start : start + PIECE], now_ms)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(30)


class KillingRedis(RedisMsgpackStore):
    def __init__(self, *args: Any, killer: Killer, **options: Any) -> None:
        super().__init__(*args, **options)
        self.killer = killer

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self.killer.fill(super()._fill, family, entries, now_ms)


class KillingMemcache(MemcacheStore):
    def __init__(self, *args: Any, killer: Killer, **options: Any) -> None:
        super().__init__(*args, **options)
        self.killer = killer

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self.killer.fill(super()._fill, family, entries, now_ms)


def gens(records: Sequence[Any]) -> list[int | None]:
    return [None if r is None else r["gen"] for r in records]


def stale(got: Sequence[int | None], acknowledged: Sequence[int]) -> list[int]:
    """Keys whose read is older than what was acknowledged (or missing)."""
    return [k for k, (g, a) in enumerate(zip(got, acknowledged, strict=True)) if g is None or g < a]


def read_in_another_process(cache_url: str, source_url: str, namespace: str, acknowledged: list[int]) -> list[int]:
    """A second process's chain, its memory tier short-lived: the keys it reads older than acknowledged."""
    with ss.ChainedStore(
        [
            MemoryStore(namespace=namespace, lifetime=1),
            ss.from_url(cache_url, namespace=namespace),
            SqlStore(source_url, namespace=namespace),
        ]
    ) as chain:
        return stale(gens(chain.batch_get(Security, range(len(acknowledged)))), acknowledged)


def run_batch(chain: ss.ChainedStore, op: str, gen: int) -> set[int]:
    """Write generation *gen* of every record; the keys the call says were not applied."""
    try:
        if op == "batch_put":
            chain.batch_put([Security(ssm_id=i, gen=gen, a=float(i)) for i in range(RECORDS)])
        else:
            chain.batch_patch(Security, [{"ssm_id": i, "gen": gen} for i in range(RECORDS)])
    except BatchError as exc:
        return set(exc.failed)
    return set()


def check_against_source(source: SqlStore, failed: set[int], gen: int) -> list[int]:
    """BatchError names exactly what was not applied: the acknowledged generations, checked at the source."""
    truth = gens(source.batch_get(Security, range(RECORDS)))
    acked_not_applied = [k for k in range(RECORDS) if k not in failed and truth[k] != gen]
    failed_but_applied = [k for k in failed if truth[k] == gen]
    assert not acked_not_applied, f"{len(acked_not_applied)} acknowledged records are not at the source"
    assert not failed_but_applied, f"{len(failed_but_applied)} records named in BatchError.failed were applied"
    return [gen if k not in failed else gen - 1 for k in range(RECORDS)]


def count_reads(cache: ss.BaseStore) -> list[int]:
    """A counter of the keys *cache* is asked for from now on (one-element list, bumped in place)."""
    asked = [0]
    read = cache._read

    def counted(family: Family, keys: Sequence[bytes], now_ms: float) -> Any:
        asked[0] += len(keys)
        return read(family, keys, now_ms)

    cache._read = counted  # type: ignore[method-assign]
    return asked


def until_used_again(asked: list[int], read: Callable[[], Any], limit: float = 20) -> float | None:
    """Call *read* until the cache tier is asked for keys again (a chain may leave a failed tier alone
    for a while); the seconds it took, or ``None`` after *limit*."""
    asked[0] = 0
    started = time.monotonic()
    while time.monotonic() < started + limit:
        read()
        if asked[0]:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def read_back(
    chain: ss.ChainedStore, cache: ss.BaseStore, acknowledged: list[int], clock: FakeClock
) -> dict[str, int | float | None]:
    """Read every key through the writing chain: at once, and past the memory lifetime once the cache is used again."""

    def stale_now() -> int:
        return len(stale(gens(chain.batch_get(Security, range(RECORDS))), acknowledged))

    def small_read() -> None:
        clock.tick(31)
        chain.batch_get(Security, range(100))

    counts: dict[str, int | float | None] = {"stale_at_once": stale_now()}
    # Past the memory tier's lifetime (the clock ticks in every read from here): reads reach
    # the cache tier once the chain uses it again, or the source.
    counts["cache_reused_after_s"] = until_used_again(count_reads(cache), small_read)
    clock.tick(31)
    counts["stale_once_cache_reused"] = stale_now()
    return counts


# ---------------------------------------------------------------------------- 6. Redis


@pytest.mark.redis
# A patch batch only with the harder return, to keep the run short: its invalidations are those of a put.
@pytest.mark.parametrize(
    ("op", "comes_back"), [("batch_put", "empty"), ("batch_put", "snapshot"), ("batch_patch", "snapshot")]
)
def test_6_redis_killed_in_the_middle_of_a_50k_batch(
    op: str, comes_back: str, redis_process: RedisProcess, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    """Scenario 6: SIGKILL Redis half-way through the batch; it comes back empty, or with an older snapshot."""
    killer = Killer(redis_process)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    memory = MemoryStore(namespace=namespace, lifetime=30, clock=clock)
    cache = KillingRedis(
        redis_process.url, namespace=namespace, clock=clock, timeout=1, connect_timeout=1, killer=killer
    )
    source = SqlStore(source_url, namespace=namespace, clock=clock)
    chain = ss.ChainedStore([memory, cache, source], clock=clock)
    assert not run_batch(chain, "batch_put", 0)
    redis_process.save()  # generation 0 of every record: what "snapshot" comes back with

    killer.arm(RECORDS // 2)
    started = time.monotonic()
    failed = run_batch(chain, op, 1)
    took = time.monotonic() - started
    killer.join()
    assert killer.landed is not None, "the kill never happened"
    acknowledged = check_against_source(source, failed, 1)

    redis_process.restart(snapshot=comes_back == "snapshot")
    held = sum(1 for _ in cache._client.scan_iter(match=f"{namespace}:*", count=5000))
    assert held == (RECORDS if comes_back == "snapshot" else 0), f"set-up: Redis came back holding {held} keys"
    other = None
    if comes_back == "snapshot":  # before the writer reads anything: Redis as it came back
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            other = len(
                pool.submit(read_in_another_process, redis_process.url, source_url, namespace, acknowledged).result(120)
            )
    mine = read_back(chain, cache, acknowledged, clock)
    publish(
        "6-redis-killed-mid-batch", op=op, comes_back=comes_back, records=RECORDS, killed_after=killer.landed,
        batch_seconds=round(took, 2), failed=len(failed), acknowledged=RECORDS - len(failed),
        tier_failures=chain.tier_failures, writer=mine, second_process_stale=other,
    )  # fmt: skip
    stale_keys = {k: v for k, v in mine.items() if k.startswith("stale")}
    assert stale_keys == dict.fromkeys(stale_keys, 0), (
        f"after Redis came back {comes_back}, the writing chain returned records older than acknowledged: {mine}"
    )
    assert mine["cache_reused_after_s"] is not None, "the chain never used the Redis tier again (20 s)"
    if other is not None:
        assert other == 0, (
            f"a second process's chain read {other} of {RECORDS} records older than acknowledged from a Redis that "
            "came back from an older snapshot (restart detection would make it 0)"
        )
    chain.close()


# ---------------------------------------------------------------------------- 6. memcached in the middle tier


@pytest.mark.memcached
def test_6_memcached_killed_in_the_middle_of_a_50k_batch(
    memcached_processes: list[MemcachedProcess], tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    """Scenario 6 with memcached as the middle tier: killed half-way, restarted empty on the same port."""
    server = memcached_processes[0]
    killer = Killer(server)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    memory = MemoryStore(namespace=namespace, lifetime=30, clock=clock)
    cache = KillingMemcache(
        [server.server], namespace=namespace, clock=clock, timeout=1, connect_timeout=1, killer=killer
    )
    source = SqlStore(source_url, namespace=namespace, clock=clock)
    chain = ss.ChainedStore([memory, cache, source], clock=clock)
    assert not run_batch(chain, "batch_put", 0)

    killer.arm(RECORDS // 2)
    started = time.monotonic()
    failed = run_batch(chain, "batch_put", 1)
    took = time.monotonic() - started
    killer.join()
    assert killer.landed is not None, "the kill never happened"
    acknowledged = check_against_source(source, failed, 1)

    server.restart()  # memcached keeps nothing: it can only come back empty (so no second process here)
    mine = read_back(chain, cache, acknowledged, clock)
    publish(
        "6-memcached-killed-mid-batch", records=RECORDS, killed_after=killer.landed, batch_seconds=round(took, 2),
        failed=len(failed), tier_failures=chain.tier_failures, writer=mine,
    )  # fmt: skip
    stale_keys = {k: v for k, v in mine.items() if k.startswith("stale")}
    assert stale_keys == dict.fromkeys(stale_keys, 0), f"the writing chain returned stale records: {mine}"
    chain.close()


# ---------------------------------------------------------------------------- 7. a memcached node leaves and rejoins


@pytest.mark.memcached
@pytest.mark.parametrize("how", ["killed-and-restarted", "paused-and-resumed"])
def test_7_a_memcached_node_that_rejoins_the_ring_serves_nothing_stale(
    how: str, memcached_processes: list[MemcachedProcess], tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    """Scenario 7: one node of a two-node ring dies (or hangs) during writes and comes back.

    Killed, it comes back empty.  Paused (SIGSTOP), it comes back *with the values it
    held*, which the writes made stale: neither the writing chain nor a fresh chain
    (another process's view) may serve them, before or after the writer uses the
    tier again: the failed invalidation moved the family's generation on.
    """
    servers = [p.server for p in memcached_processes]
    records = 400

    def open_chain() -> ss.ChainedStore:
        return ss.ChainedStore(
            [
                MemoryStore(namespace=namespace, lifetime=5, clock=clock),
                MemcacheStore(servers, namespace=namespace, clock=clock, timeout=0.3, connect_timeout=0.3),
                SqlStore(f"sqlite:///{tmp_path / 'source.db'}", namespace=namespace, clock=clock),
            ],
            clock=clock,
        )

    chain = open_chain()
    chain.batch_put([Security(ssm_id=i, gen=0) for i in range(records)])
    assert gens(chain.batch_get(Security, range(records))) == [0] * records
    node = memcached_processes[1]
    if how == "killed-and-restarted":
        node.kill()
    else:
        node.pause()
    started = time.monotonic()
    chain.batch_put([Security(ssm_id=i, gen=1) for i in range(records)])  # the source takes it
    chain.batch_patch(Security, [{"ssm_id": i, "gen": 2} for i in range(0, records, 2)])
    took = time.monotonic() - started
    acknowledged = [2 if i % 2 == 0 else 1 for i in range(records)]
    if how == "killed-and-restarted":
        node.restart()
    else:
        node.resume()

    def fresh_stale() -> int:
        with open_chain() as fresh:  # another process's view: an empty memory tier of its own
            return len(stale(gens(fresh.batch_get(Security, range(records))), acknowledged))

    def writer_stale() -> None:
        clock.tick(6)  # past the memory tier's lifetime
        seen.append(len(stale(gens(chain.batch_get(Security, range(records))), acknowledged)))

    seen: list[int] = []
    before_repair = fresh_stale()  # the node is back; the writer has not read since
    reused = until_used_again(count_reads(chain.tiers[1]), writer_stale)
    writer_stale()
    after_repair = fresh_stale()
    publish(
        "7-memcached-node-rejoins", how=how, records=records, write_seconds=round(took, 2),
        tier_failures=chain.tier_failures, writer_stale_per_read=seen, cache_reused_after_s=reused,
        fresh_chain_stale_before_writer_repaired=before_repair, fresh_chain_stale_after=after_repair,
    )  # fmt: skip
    assert not any(seen), f"the writing chain served values older than acknowledged after the node came back: {seen}"
    assert before_repair == 0, (
        f"another process read {before_repair} of {records} records older than acknowledged from the ring the "
        "node came back to, before the writer used it again"
    )
    assert reused is not None, "the writing chain never used the memcached tier again (20 s)"
    assert after_repair == 0, (
        f"once the writer has used the tier again, a fresh chain still read {after_repair} of {records} records "
        "older than acknowledged"
    )
    chain.close()
