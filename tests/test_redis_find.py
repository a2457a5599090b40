"""The Redis stores' server-side indexes: what the conformance suite cannot see from outside.

The index keys a family gets (and a family without indexes does not), queries that
never list the keyspace, the index in step with every write path (a chain's fills and
tombstones, Redis' own expiry), exact numbers beyond 2**53, the refusal to query an
index never built, and a reset that a concurrent reader sees whole or not at all.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis
from redis_servers import key_names

import stockstore as ss
from stockstore._chained import ChainedStore
from stockstore._keys import encode_key, family_of
from stockstore.backends import MemoryStore, RedisHashStore, RedisMsgpackStore
from stockstore.errors import QueryError

pytestmark = pytest.mark.redis

LAYOUTS = [RedisMsgpackStore, RedisHashStore]


class Quote(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector", "price", "rating"]


class Plain(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class HoldingBefore(ss.Record):
    """``Holding`` as first deployed: no index."""

    __qualname__ = "Holding"
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class HoldingAfter(ss.Record):
    """``Holding`` once ``sector`` is indexed: the same family, records already stored."""

    __qualname__ = "Holding"
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector"]


def quotes(n: int) -> list[Quote]:
    return [Quote(ssm_id=f"Q{i:04d}", sector=f"s{i % 5}", price=float(i), rating=i % 3) for i in range(n)]


@pytest.fixture(params=LAYOUTS, ids=["msgpack", "hash"])
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    with request.param(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        yield store


def test_an_indexed_family_has_its_index_keys_and_a_plain_one_none(store: Any, raw: redis.Redis) -> None:
    store.batch_put([*quotes(3), Plain(ssm_id="P")])
    ns = store.namespace
    index = {n for n in key_names(raw, ns) if ":i:" in n}
    assert index == {
        f"{ns}:Quote:i:{part}" for part in ("k", "a", "m", "z:sector", "v:sector", "z:price", "v:price")
    } | {f"{ns}:Quote:i:z:rating", f"{ns}:Quote:i:v:rating"}
    assert not any(n.startswith(f"{ns}:Plain:i:") for n in key_names(raw, ns))


def test_a_plain_family_pays_nothing(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No index look-up, no index keys; the msgpack layout keeps its script-free MSET."""
    with monkeypatch.context() as patched:
        patched.setattr(store._client, "hmget", _refuse)
        if isinstance(store, RedisMsgpackStore):
            patched.setattr(store, "_run", _refuse)
        store.batch_put([Plain(ssm_id=f"P{i}", x=i) for i in range(50)])
    assert store.count(Plain) == 50


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("called")


def test_queries_list_nothing_client_side(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store.batch_put(quotes(200))
    for name in ("_scan", "_scan_read", "_scan_all"):
        monkeypatch.setattr(store, name, _refuse)
    monkeypatch.setattr(store._client, "scan_iter", _refuse)
    monkeypatch.setattr(store._client, "scan", _refuse)
    assert list(store.find(Quote, sector="s1"))[:3] == ["Q0001", "Q0006", "Q0011"]
    assert store.find(Quote, sector="s1").count() == 40
    assert list(store.find(Quote, price__gte=10, price__lt=13, rating__ne=2)) == ["Q0010", "Q0012"]
    assert list(store.find(Quote).order_by("-rating", "price")[:3]) == ["Q0002", "Q0005", "Q0008"]
    assert store.find(Quote)[195:].count() == 5
    assert list(store.find(Quote, sector__startswith="s4", price__gt=180)) == ["Q0184", "Q0189", "Q0194", "Q0199"]


def test_numbers_are_exact_beyond_two_to_the_53(store: Any) -> None:
    big = 2**53
    store.batch_put(
        [
            Quote(ssm_id="A", price=big + 1),
            Quote(ssm_id="B", price=float(big)),
            Quote(ssm_id="C", price=big),
            Quote(ssm_id="D", price=2**63 - 1),
            Quote(ssm_id="E", price=-0.0),
            Quote(ssm_id="F", price=0),
        ]
    )
    assert list(store.find(Quote, price=big)) == ["B", "C"]
    assert list(store.find(Quote, price__gt=float(big))) == ["A", "D"]
    assert list(store.find(Quote, price__gte=big + 1).order_by("price")) == ["A", "D"]
    assert list(store.find(Quote, price=0.0)) == ["E", "F"]
    assert list(store.find(Quote).order_by("-price")) == ["D", "A", "B", "C", "E", "F"]


def test_the_index_follows_a_chains_fills_and_tombstones(store: Any) -> None:
    chain = ChainedStore([store, MemoryStore(namespace=store.namespace)])
    chain.batch_put(quotes(10))
    assert list(chain.get(Quote, "Q0003") for _ in range(1)) == [quotes(10)[3]]  # filled into the Redis tier
    assert "Q0003" in list(store.find(Quote, sector="s3"))
    chain.patch(Quote, "Q0003", {"sector": "s9"})  # a tombstone in the Redis tier: in no index
    assert "Q0003" not in list(store.find(Quote, sector="s3"))
    assert list(store.find(Quote, sector="s9")) in ([], ["Q0003"])
    chain.get(Quote, "Q0003")  # filled again, newer
    assert list(store.find(Quote, sector="s9")) == ["Q0003"]
    assert list(chain.find(Quote, sector="s9")) == ["Q0003"]


def test_the_index_forgets_what_redis_expired(redis_url: str, raw: redis.Redis) -> None:
    for layout in LAYOUTS:
        # A lifetime long enough for a loaded machine to write and count before it ends.
        with layout(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}", lifetime=1.0) as store:
            store.batch_put(quotes(20))
            store.put(Quote(ssm_id="Q0001", sector="s1"))  # a put renews
            assert store.find(Quote, sector="s1").count() == 4
            time.sleep(1.2)
            assert not any(":r:" in n for n in key_names(raw, store.namespace))  # gone by Redis' own expiry
            assert list(store.find(Quote, sector="s1")) == []
            assert store.find(Quote).count() == 0
            prefix = store._prefix(ss.backends.base.Family("Quote", Quote, (("ssm_id",),)))
            assert raw.hlen(prefix + "i:k") == 0
            assert raw.zcard(prefix + "i:z:sector") == 0


def test_an_index_never_built_is_refused_until_reindex(store: Any) -> None:
    store.batch_put([HoldingBefore(ssm_id=f"H{i}", sector="a" if i % 2 else "b") for i in range(10)])
    with pytest.raises(QueryError, match=r"reindex\(Holding\)"):
        store.find(HoldingAfter, sector="a").count()
    store.put(HoldingAfter(ssm_id="H1", sector="c"))  # a write keeps the index, but it is still not whole
    with pytest.raises(QueryError, match="reindex"):
        list(store.find(HoldingAfter))
    store.delete(HoldingBefore, "H3")
    store.reindex(HoldingAfter)
    assert list(store.find(HoldingAfter, sector="a")) == ["H5", "H7", "H9"]
    assert list(store.find(HoldingAfter, sector="c")) == ["H1"]
    assert store.find(HoldingAfter).count() == 9
    other = type(store)(store._client, namespace=store.namespace)  # another process: the index is built
    assert other.find(HoldingAfter, sector="b").count() == 5


def test_clear_and_delete_empty_the_index(store: Any, raw: redis.Redis) -> None:
    store.batch_put(quotes(30))
    store.batch_delete(Quote, ["Q0000", "Q0005"])
    assert store.find(Quote, sector="s0").count() == 4
    assert store.clear(Quote) == 28
    index = {n for n in key_names(raw, store.namespace) if ":i:" in n}
    assert index == {f"{store.namespace}:Quote:i:m"}


def test_reset_is_seen_whole_or_not_at_all(store: Any) -> None:
    """A reader thread, all through a reset of 3,000 records, sees only the old set or only the new."""
    n = 3000
    store.batch_put(quotes(n))
    new = [Quote(ssm_id=f"N{i:04d}", sector="new", price=-float(i)) for i in range(n)]
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            old_count = store.find(Quote, sector__startswith="s").count()
            new_count = store.find(Quote, sector="new").count()
            pair = store.batch_get(Quote, ["Q0007", "N0007"])
            seen.append((old_count, new_count, sum(p is not None for p in pair)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert store.reset(Quote, new) == n
    finally:
        time.sleep(0.05)
        stop.set()
        reader.join()
    assert store.find(Quote).count() == n
    assert store.count(Quote) == n
    assert seen
    assert all(pair == 1 for _, _, pair in seen)
    for old_count, new_count, _ in seen:  # each query alone is one script: a whole set
        assert old_count in (0, n)
        assert new_count in (0, n)
    assert seen[-1][:2] == (0, n)
    assert list(store.find(Quote).order_by("price")[:2]) == ["N2999", "N2998"]


def test_reset_leaves_no_staged_key_behind(store: Any, raw: redis.Redis) -> None:
    store.batch_put(quotes(50))
    store.reset(Quote, quotes(20))
    assert not any(":n:" in n for n in key_names(raw, store.namespace))
    assert store.find(Quote, rating=1).count() == 7


def test_a_switch_sent_again_after_its_reply_was_lost_keeps_the_new_dataset(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's retry after a timeout sends the switch twice: the second must change nothing."""
    store.batch_put(quotes(30))
    real = store._pipeline

    def twice(commands: Any, **options: Any) -> list[Any]:
        if any(c[0] == "EVALSHA" and "S" in c[3:8] for c in commands):
            real(commands, **options)  # done by the server, its reply lost
        return real(commands, **options)

    monkeypatch.setattr(store, "_pipeline", twice)
    assert store.reset(Quote, quotes(12)) == 12
    monkeypatch.undo()
    assert store.count(Quote) == 12
    assert store.find(Quote, rating=0).count() == 4


def test_a_reset_whose_staging_another_took_over_is_refused(store: Any, raw: redis.Redis) -> None:
    store.batch_put(quotes(5))
    real = store._pipeline

    def overtaken(commands: Any, **options: Any) -> list[Any]:
        if any(c[0] == "EVALSHA" and "S" in c[3:8] for c in commands):
            raw.set(store._prefix(ss.backends.base.Family("Quote", Quote, (("ssm_id",),))) + "n:t", "another")
        return real(commands, **options)

    store._pipeline = overtaken
    with pytest.raises(ss.errors.StoreError, match="another reset"):
        store.reset(Quote, quotes(3))
    store._pipeline = real
    assert store.count(Quote) == 5  # nothing switched


def test_the_switch_of_a_reset_reads_its_names_from_the_index(
    store: Any, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one step that blocks the server costs the family's size, not the keyspace's: no SCAN in it."""
    foreign = f"f{uuid.uuid4().hex[:12]}:"
    raw.mset({f"{foreign}{i}": b"x" for i in range(3000)})
    store.batch_put(quotes(40))
    stored = Quote(ssm_id="late", sector="s1", price=1.0, rating=1)
    store.put(stored)  # written after the index was built: in i:k by its own write
    monkeypatch.setattr(store._client, "scan_iter", lambda *a, **k: iter(()))  # no leftovers to look for
    before = _scans(raw)
    assert store.reset(Quote, quotes(25)) == 25
    assert _scans(raw) == before
    assert store.count(Quote) == 25
    assert store.get(Quote, "late") is None
    assert len([n for n in key_names(raw, store.namespace) if ":r:" in n]) == 25
    names = list(raw.scan_iter(match=f"{foreign}*", count=1000))
    for start in range(0, len(names), 1000):
        raw.unlink(*names[start : start + 1000])


def _scans(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


@pytest.mark.redis_cluster
@pytest.mark.parametrize("layout", LAYOUTS, ids=["msgpack", "hash"])
def test_on_a_cluster_an_indexed_family_is_one_hash_slot(layout: type, redis_cluster_url: str) -> None:
    with layout(redis_cluster_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        store.batch_put([*quotes(100), Plain(ssm_id="P")])
        assert store._prefix(ss.backends.base.Family("Quote", Quote, (("ssm_id",),))).endswith(":{Quote}:")
        assert list(store.find(Quote, sector="s2", price__lt=20)) == ["Q0002", "Q0007", "Q0012", "Q0017"]
        assert store.reset(Quote, quotes(10)) == 10
        assert store.find(Quote).count() == 10
        with pytest.raises(ss.errors.UnsupportedOperationError, match="one hash slot"):
            store.reset(Plain, [])


def test_a_key_twice_in_one_script_call_keeps_only_its_last_index_entries(redis_url: str) -> None:
    """The script adds a call's index entries together at its end; a key met again is flushed first.

    (A batch writes each key once; the string layout's script takes a key twice in a call.)
    """
    family = family_of(Quote)
    source = MemoryStore()
    entries = []
    for sector in ("first", "last"):
        source.put(Quote(ssm_id="Q1", sector=sector, price=1.0, rating=1))
        entries.append(source._state.records[(family.name, encode_key(("Q1",)))])
    with RedisMsgpackStore(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        store.put(Quote(ssm_id="Q0", sector="x", price=0.0, rating=0))  # the family's indexes in place and built
        store._write(family, entries, time.time() * 1000)  # one call, the same key twice
        assert list(store.find(Quote, sector="first")) == []
        assert list(store.find(Quote, sector="last")) == ["Q1"]
        assert sorted(store.find(Quote, price__gte=0.0)) == ["Q0", "Q1"]
        store.clear(Quote)
