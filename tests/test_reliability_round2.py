"""Tiers that never lie, second round: the defects independent probes found (issue 10), on real servers.

Each test is one item of docs/reliability.md's second table, numbered as there, and
fails on the code before its fix.  Items held by the shipped conformance kit for every
backend (epoch expiries, lifetime range, lifetimes checked before a batch writes) are
in `stockstore.testing`; the Redis and SQL ones of their own are in tests/test_redis.py
and tests/test_sql.py.  `publish` prints what was measured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from faults import publish
from memcached_servers import MemcachedProcess
from memcached_servers import memcached_processes as memcached_processes  # the fixture
from redis_servers import RedisProcess
from redis_servers import redis_process as redis_process  # the fixture

import stockstore as ss
from stockstore import _codec
from stockstore._keys import encode_key, family_of
from stockstore._schemas import SCHEMAS
from stockstore.backends import MemcacheStore, MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.backends.base import Entry
from stockstore.errors import StoreError
from stockstore.testing import FakeClock, assert_record


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'source.db'}"


# ---------------------------------------------------------------------------- 4. a patch renews the source's lifetime


def test_4_a_patch_through_a_chain_renews_the_source_lifetime(tmp_path: Path, clock: FakeClock) -> None:
    """[Memory(0.5 s), Sql(lifetime=2 s)]: put at t0, patch at t0+1.5 s, get at t0+2.5 s finds the patched record."""
    source = SqlStore(sqlite_url(tmp_path), lifetime=2.0, clock=clock)
    chain = ss.ChainedStore([MemoryStore(lifetime=0.5, clock=clock), source], clock=clock)
    chain.batch_put([Security(ssm_id=f"S{i}", v=0) for i in range(100)])
    clock.tick(1.5)
    chain.batch_patch(Security, [{"ssm_id": f"S{i}", "v": 1} for i in range(100)])
    clock.tick(1.0)
    got = chain.batch_get(Security, [f"S{i}" for i in range(100)])
    kept = sum(1 for r in got if r is not None)
    alone = SqlStore(sqlite_url(tmp_path), lifetime=2.0, clock=clock)
    publish("r2-4-patch-renews-lifetime", kept_through_chain=kept, of=100)
    assert kept == 100, f"{100 - kept} patched records expired with their put's lifetime"
    assert_record(got[7], Security(ssm_id="S7", v=1))
    assert_record(alone.get(Security, "S7"), Security(ssm_id="S7", v=1))
    clock.tick(1.1)  # the patch's own lifetime (2 s) is over
    assert chain.get(Security, "S7") is None
    chain.close()
    alone.close()


# ---------------------------------------------------------------------------- 5. tier lifetimes checked first


@pytest.mark.redis
def test_5_a_cache_tier_lifetime_that_fails_fails_the_write_before_the_source(
    redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    def hour_but_not_s3333(obj: Any) -> float:
        if obj["ssm_id"] == "S3333" and obj["v"] == 2:
            raise ValueError("no lifetime for S3333 at v2")
        return 3600.0

    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    cache = RedisMsgpackStore(redis_url, namespace=namespace, lifetime=hour_but_not_s3333, clock=clock)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    keys = [f"S{i:04d}" for i in range(5000)]
    chain.batch_put([Security(ssm_id=k, v=1) for k in keys])
    with pytest.raises(StoreError, match="S3333") as failed:  # several chunks: before, 2,000 were written
        chain.batch_put([Security(ssm_id=k, v=2) for k in keys])
    # Nothing was written anywhere: the source and every tier still hold v1, all alike.
    at_source = [r["v"] for r in source.batch_get(Security, keys)]
    cached = [r["v"] if r else None for r in cache.batch_get(Security, keys)]
    through = [r["v"] for r in chain.batch_get(Security, keys)]
    publish(
        "r2-5-tier-lifetime-fails",
        error=type(failed.value).__name__,
        source_changed=sum(v != 1 for v in at_source),
        cache_differs_from_source=sum(c != s for c, s in zip(cached, at_source, strict=True)),
    )
    assert at_source == [1] * 5000
    assert cached == [1] * 5000
    assert through == [1] * 5000
    chain.close()
    cache.close()
    source.close()


@pytest.mark.redis
def test_5_a_read_never_fails_because_a_fill_could_not_be_made(
    redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    def failing(obj: Any) -> float:
        raise ValueError("this tier's lifetime always fails")

    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    source.batch_put([Security(ssm_id=f"S{i}", v=i) for i in range(200)])
    cache = RedisMsgpackStore(redis_url, namespace=namespace, lifetime=failing, clock=clock)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    got = chain.batch_get(Security, [f"S{i}" for i in range(200)])
    assert [r["v"] if r else None for r in got] == list(range(200))
    assert chain.tier_failures[1] >= 1, "the fill that could not be made is counted"
    assert cache.batch_get(Security, ["S0", "S199"]) == [None, None]
    assert_record(chain.get(Security, "S5"), Security(ssm_id="S5", v=5))  # the memory tier was filled
    publish("r2-5-read-with-failing-fill", read=len([r for r in got if r]), tier_failures=chain.tier_failures)
    chain.close()
    cache.close()
    source.close()


# ---------------------------------------------------------------------------- 3, 7. copies a cache cannot read


@pytest.mark.redis
def test_7_copies_a_cache_tier_cannot_read_are_misses_refilled_from_below(
    redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    """Another key's value copied under a key (3), and a garbled payload, in the Redis tier of a chain (7)."""
    import redis

    keys = [f"S{i:04d}" for i in range(1000)]
    records = [Security({f"a{j}": i + j / 7 for j in range(50)}, ssm_id=k) for i, k in enumerate(keys)]
    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    cache = RedisMsgpackStore(redis_url, namespace=namespace, clock=clock)
    writer = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    writer.batch_put(records)

    raw = redis.Redis.from_url(redis_url)
    family = family_of(Security)
    copied, garbled = cache._record_keys(family, [encode_key(("S0007",)), encode_key(("S0500",))])
    raw.set(copied, raw.get(cache._record_keys(family, [encode_key(("S0003",))])[0]))  # S0003's bytes under S0007
    value = raw.get(garbled)
    raw.set(garbled, value[:30] + bytes(b ^ 0x5A for b in value[30:60]) + value[60:])  # the header kept

    reader = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    got = reader.batch_get(Security, keys)  # a fresh process: its memory tier is empty
    wrong = [k for k, g, r in zip(keys, got, records, strict=True) if g is None or dict(g) != dict(r)]
    publish("r2-7-unreadable-cache-copies", wrong=len(wrong), of=len(keys), tier_failures=reader.tier_failures)
    assert wrong == []
    assert reader.tier_failures[1] == 2, "both copies were counted"
    assert_record(cache.get(Security, "S0007"), records[7])  # dropped, and refilled from below
    assert_record(cache.get(Security, "S0500"), records[500])
    frame = reader.get_frame(Security, keys=keys)
    assert frame.loc["S0007", "a1"] == records[7]["a1"]
    assert frame.loc["S0500", "a49"] == records[500]["a49"]
    for store in (reader, writer, cache, source):
        store.close()


def test_7_a_garbled_schema_copy_in_a_memory_tier_is_dropped(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    source = SqlStore(sqlite_url(tmp_path), clock=clock)
    memory = MemoryStore(clock=clock)
    chain = ss.ChainedStore([memory, source], clock=clock)
    df = pd.DataFrame(np.arange(300.0).reshape(100, 3), columns=["a", "b", "c"])
    df.index = pd.Index([f"S{i}" for i in range(100)], name="ssm_id")
    chain.put_frame(Security, df)
    monkeypatch.setattr(_codec, "_schemas", {})  # a process that has not met the schema
    chain.get(Security, "S1")  # the schema is read through the chain: the memory tier now holds a copy
    (slot,) = [s for s in memory._state.records if s[0] == SCHEMAS.name]
    held = memory._state.records[slot]
    memory._state.records[slot] = Entry(held.payload[:-5] + b"\x00" * 5, held.version, None, held.key, ())
    monkeypatch.setattr(_codec, "_schemas", {})
    got = chain.get_frame(Security, keys=list(df.index))
    publish("r2-7-garbled-schema-copy", rows=len(got), tier_failures=chain.tier_failures)
    assert got.to_numpy().tolist() == df.to_numpy().tolist()
    assert chain.tier_failures[0] == 1
    assert memory._state.records[slot].payload == held.payload  # refilled from below
    chain.close()


# ---------------------------------------------------------------------------- 2. late fills after a copy is lost


class _HeldRead(MemoryStore):
    """A source of truth whose reads can be held after they have read: a reader delayed by the network."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.hold = threading.Event()
        self.have_read = threading.Event()
        self.go = threading.Event()

    def _read(self, family: Any, keys: Any, now_ms: float) -> Any:
        got = super()._read(family, keys, now_ms)
        if self.hold.is_set() and family.name == "Security":
            self.have_read.set()
            self.go.wait(10)
        return got


def late_fill(chain: ss.ChainedStore, source: _HeldRead, keys: list[str], lose: Callable[[], None]) -> list[Any]:
    """A reader reads *keys* (v1) from the source and is held; a writer writes v2; the tier loses v2; the reader fills.

    Returns what the chain serves afterwards.
    """
    source.hold.set()
    reader = threading.Thread(target=chain.batch_get, args=(Security, keys))
    reader.start()
    assert source.have_read.wait(10)
    source.hold.clear()
    chain.batch_put([Security(ssm_id=k, v=2) for k in keys])  # the writer: v2 at the source and in the caches
    lose()
    source.go.set()
    reader.join(10)
    return chain.batch_get(Security, keys)


def assert_fresh(figure: str, tier: str, got: list[Any], in_cache: list[Any], **scenario: str) -> None:
    """Every record served, and every copy *tier* holds, is v2; the counts are published as *figure*."""
    stale = sum(1 for r in got if r is None or r["v"] != 2)
    stale_cached = sum(1 for r in in_cache if r is not None and r["v"] != 2)
    publish(figure, **scenario, stale=stale, **{f"stale_in_{tier}": stale_cached}, of=len(got))
    assert stale == 0
    assert stale_cached == 0


def test_2_a_late_fill_never_lands_after_an_eviction(clock: FakeClock) -> None:
    keys = [f"S{i}" for i in range(500)]
    source = _HeldRead(clock=clock)
    source.batch_put([Security(ssm_id=k, v=1) for k in keys])
    tier = MemoryStore(max_items=1000, clock=clock)
    chain = ss.ChainedStore([tier, source], clock=clock)

    def evict() -> None:  # other records push every copy of v2 out of the tier
        tier.batch_put([Security(ssm_id=f"other{i}") for i in range(1000)])

    got = late_fill(chain, source, keys, evict)
    stale = sum(1 for r in got if r is None or r["v"] != 2)
    publish("r2-2-late-fill-after-eviction", tier="MemoryStore(max_items)", stale=stale, of=len(keys))
    assert stale == 0


def _redis_chain(url: str, source: _HeldRead, clock: FakeClock) -> tuple[ss.ChainedStore, RedisMsgpackStore]:
    cache = RedisMsgpackStore(url, namespace=source.namespace, clock=clock, timeout=5)
    return ss.ChainedStore([cache, source], clock=clock, lease_for=0), cache


@pytest.mark.redis
@pytest.mark.parametrize("loss", ["eviction", "flush", "restart"])
def test_2_a_late_fill_never_lands_in_redis_after_it_lost_the_newer_copy(
    redis_process: RedisProcess, clock: FakeClock, loss: str
) -> None:
    """A reader's fill of v1, held while a writer puts v2; the v2 copies evicted, flushed or lost to a restart."""
    import redis

    keys = [f"S{i}" for i in range(500)]
    source = _HeldRead(clock=clock)
    source.batch_put([Security(ssm_id=k, v=1) for k in keys])
    chain, cache = _redis_chain(redis_process.url, source, clock)
    raw = redis.Redis.from_url(redis_process.url)

    def lose() -> None:
        if loss == "flush":
            raw.flushdb()
        elif loss == "restart":
            redis_process.restart(snapshot=False)
        else:  # allkeys-lru under a small maxmemory, then other data: the records go first (least used)
            raw.config_set("maxmemory-policy", "allkeys-lru")
            raw.config_set("maxmemory", str(raw.info("memory")["used_memory"] + 256 * 1024))
            for i in range(400):
                raw.set(f"filler:{i}", b"x" * 8192)

    got = late_fill(chain, source, keys, lose)
    if loss == "eviction":
        raw.config_set("maxmemory", "0")
    assert_fresh("r2-2-late-fill-in-redis", "redis", got, cache.batch_get(Security, keys), loss=loss)
    chain.close()
    raw.close()


# ---------------------------------------------------------------------------- 6. row schemas a Redis store loses


@pytest.mark.redis
@pytest.mark.parametrize("loss", ["flush", "restart", "eviction"])
def test_6_a_redis_store_loses_no_record_to_a_lost_schema(redis_process: RedisProcess, loss: str) -> None:
    """Wide records written after the schema is gone stay readable; one whose schema is evicted is a miss."""
    import redis

    raw = redis.Redis.from_url(redis_process.url)
    namespace = "r2-6"
    writer = RedisMsgpackStore(redis_process.url, namespace=namespace, timeout=5)
    wide = [Security(ssm_id=f"S{i}", **{f"a{j}": i + j / 3 for j in range(100)}) for i in range(20_000)]
    writer.batch_put(wide[:100])
    schema_keys = [k for k in raw.scan_iter(match=f"{namespace}:*schema*:r:*")]  # the records, not the family's mark
    assert len(schema_keys) == 1
    if loss == "flush":
        raw.flushdb()
    elif loss == "restart":
        redis_process.restart(snapshot=False)
    else:
        raw.delete(*schema_keys)  # what allkeys-lru does to a key nobody reads
    writer.batch_put(wide)  # the same writer: it saved the schema once before
    monkey = pytest.MonkeyPatch()
    monkey.setattr(_codec, "_schemas", {})  # a fresh process, that must read the schema from Redis
    try:
        reader = RedisMsgpackStore(redis_process.url, namespace=namespace, timeout=5)
        got = reader.batch_get(Security, [r["ssm_id"] for r in wide])
        readable = sum(1 for g, r in zip(got, wide, strict=True) if g is not None and dict(g) == dict(r))
        raw.delete(*[k for k in raw.scan_iter(match=f"{namespace}:*schema*")])  # evicted under the readers now
        monkey.setattr(_codec, "_schemas", {})
        after = RedisMsgpackStore(redis_process.url, namespace=namespace, timeout=5)
        misses = after.batch_get(Security, ["S1", "S2"])
        left = after.count(Security)
    finally:
        monkey.undo()
    publish("r2-6-schema-lost", loss=loss, readable=readable, of=len(wide), after_eviction=misses, listed_after=left)
    assert readable == len(wide)
    assert misses == [None, None], "a record whose schema is gone is a miss"
    assert left == len(wide) - 2, "and the records read as misses are dropped, so listing agrees"
    for store in (writer, reader, after):
        store.close()
    raw.close()


@pytest.mark.memcached
@pytest.mark.parametrize("loss", ["flush", "restart"])
def test_2_a_late_fill_never_lands_in_memcached_after_it_lost_the_newer_copy(
    memcached_processes: list[MemcachedProcess], clock: FakeClock, loss: str
) -> None:
    server = memcached_processes[0]
    keys = [f"S{i}" for i in range(500)]
    source = _HeldRead(clock=clock)
    source.batch_put([Security(ssm_id=k, v=1) for k in keys])
    cache = MemcacheStore([server.server], clock=clock, timeout=5)
    chain = ss.ChainedStore([cache, source], clock=clock)

    def lose() -> None:
        if loss == "flush":
            cache._client.flush_all(noreply=False)
        else:
            server.restart()

    got = late_fill(chain, source, keys, lose)
    assert_fresh("r2-2-late-fill-in-memcached", "memcached", got, cache.batch_get(Security, keys), loss=loss)
    chain.close()
