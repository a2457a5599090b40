"""An expiry at the Unix epoch is an expiry, never "no expiry" (issue 10, item 1).

A lifetime may end at the epoch (``datetime(1970, 1, 1)``, aware or naive), or before
it: that record has expired.  Redis used to store "never" as an expiry of 0 and
memcached as ``2**63 - 1``, so records with those expiries lived forever there, a
chain's cache tier among them.  Here every path that carries an expiry into Redis
(both layouts, one server and a cluster) and memcached: put, patch, a chain's fills
and its tombstones, and expiries at the edges of what each header can hold.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stockstore as ss
from stockstore._codec import encode_record
from stockstore._entry import Entry
from stockstore._keys import encode_key, family_of
from stockstore.backends import MemcacheStore, MemoryStore, RedisHashStore, RedisMsgpackStore, SqlStore
from stockstore.errors import StoreError, UnsupportedOperationError
from stockstore.testing import assert_record
from stockstore.testing._records import Security

EPOCHS = {
    "aware": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    "naive": dt.datetime(1970, 1, 1),
    "before": dt.datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC),  # -1 ms
}
STORES = ["msgpack", "hash", "msgpack-cluster", "hash-cluster", "memcached"]
MARKS = {"msgpack": "redis", "hash": "redis", "memcached": "memcached"}

Make = Callable[..., ss.BaseStore]


def _params(names: list[str]) -> list[Any]:
    marks = {name: getattr(pytest.mark, MARKS.get(name, "redis_cluster")) for name in names}
    return [pytest.param(name, marks=marks[name], id=name) for name in names]


@pytest.fixture(params=_params(STORES))
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """Stores of one kind, all in one fresh namespace: ``make(lifetime=...)``."""
    kind = str(request.param)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    made: list[ss.BaseStore] = []
    if kind == "memcached":
        server = request.getfixturevalue("memcached_server")

        def build(**options: Any) -> ss.BaseStore:
            return MemcacheStore([server], namespace=namespace, **options)

    else:
        url = request.getfixturevalue("redis_cluster_url" if kind.endswith("cluster") else "redis_url")
        cls = RedisHashStore if kind.startswith("hash") else RedisMsgpackStore

        def build(**options: Any) -> ss.BaseStore:
            return cls(url, namespace=namespace, **options)

    def tracked(**options: Any) -> ss.BaseStore:
        store = build(**options)
        made.append(store)
        return store

    yield tracked
    for store in made:
        store.close()


def _gone(store: ss.BaseStore, keys: list[Any]) -> None:
    """No call sees these records: not get, batch_get, keys or count."""
    assert [store.get(Security, k) for k in keys] == [None] * len(keys)
    assert store.batch_get(Security, keys) == [None] * len(keys)
    try:
        listed = set(store.keys(Security))
    except UnsupportedOperationError:  # memcached lists nothing
        return
    assert not listed & set(keys), listed
    assert store.count(Security) == len(listed)


@pytest.mark.parametrize("epoch", list(EPOCHS.values()), ids=list(EPOCHS))
class TestLifetimeAtTheEpoch:
    def test_put(self, make: Make, epoch: dt.datetime) -> None:
        timed = make(lifetime=lambda obj: epoch)
        timed.put(Security(ssm_id="x", v=1))
        timed.batch_put([Security(ssm_id=i, v=1) for i in range(20)])
        _gone(timed, ["x", *range(20)])
        _gone(make(), ["x", *range(20)])

    def test_patch_of_held_records(self, make: Make, epoch: dt.datetime) -> None:
        plain, timed = make(), make(lifetime=lambda obj: epoch)
        plain.batch_put([Security(ssm_id=i, v=1) for i in range(20)])
        timed.patch(Security, 0, {"v": 2})
        timed.batch_patch(Security, [{"ssm_id": i, "v": 2} for i in range(1, 20)])
        _gone(plain, list(range(20)))
        _gone(timed, list(range(20)))

    def test_patch_that_creates_records(self, make: Make, epoch: dt.datetime) -> None:
        timed = make(lifetime=lambda obj: epoch)
        timed.patch(Security, "new", {"v": 2})
        timed.batch_patch(Security, [{"ssm_id": i, "v": 2} for i in range(20)])
        _gone(make(), ["new", *range(20)])

    def test_a_static_datetime_lifetime(self, make: Make, epoch: dt.datetime) -> None:
        plain = make()
        plain.put(Security(ssm_id="x", v=1))
        make(lifetime=epoch).patch(Security, "x", {"v": 2})
        _gone(plain, ["x"])


@pytest.mark.parametrize("seconds", [1e13, 1e17], ids=["past_2**53_ms", "past_2**64_ms"])
def test_a_lifetime_past_what_a_header_holds(make: Make, seconds: float) -> None:
    """Beyond the end of 9999 (and so beyond what a header holds): refused before anything is written."""
    with pytest.raises(StoreError, match="9999"):
        make(lifetime=seconds)
    timed = make(lifetime=lambda obj: seconds if obj["ssm_id"] == 3 else None)
    with pytest.raises(StoreError, match="9999"):
        timed.batch_put([Security(ssm_id=i, v=1) for i in range(5)])
    with pytest.raises(StoreError, match="9999"):
        timed.patch(Security, 3, {"v": 3})
    assert make().batch_get(Security, range(5)) == [None] * 5


class TestExpiriesTheChainHandsATier:
    """A chain fills its tiers (and leaves tombstones) with the source's own expiry."""

    def test_fills_at_and_before_the_epoch_are_expired(self, make: Make) -> None:
        store = make()
        family, now_ms = family_of(Security), time.time() * 1000
        payload = encode_record("Security", {"ssm_id": "x", "v": 1})
        for n, expires in enumerate([0, -1, 1, -(2**40), int(now_ms) - 1]):
            key = encode_key((f"k{n}",))
            store._fill(family, [Entry(payload, 1000 + n, expires, key, ())], now_ms)
            assert store._read(family, [key], now_ms) == [None], expires
        _gone(store, [f"k{n}" for n in range(5)])

    def test_a_tombstone_until_the_epoch_leaves_nothing_behind(self, make: Make) -> None:
        """A tombstone kept with no expiry would refuse every older fill, and hold memory, for ever."""
        store = make()
        if isinstance(store, MemcacheStore):
            pytest.skip("memcached keeps an item for a second at the least; its header never took 0 for never")
        family, key = family_of(Security), encode_key(("x",))
        store._invalidate(family, [key], 2000, 0)
        time.sleep(0.01)
        name = store._record_keys(family, [key])[0]  # type: ignore[attr-defined]
        assert store._client.exists(name) == 0  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "expires", [2**53 - 1, 2**53, 2**63 - 2, 2**63 - 1, 2**63, 2**64, 10**30], ids=lambda e: f"{e:#x}"
    )
    def test_far_expiries_stay_expiries(self, make: Make, expires: int) -> None:
        """Near and past the largest expiry a header holds: live, with an expiry (the largest it holds)."""
        store = make()
        family, key, now_ms = family_of(Security), encode_key(("x",)), time.time() * 1000
        payload = encode_record("Security", {"ssm_id": "x", "v": 1})
        store._fill(family, [Entry(payload, 1000, expires, key, ())], now_ms)
        [held] = store._read(family, [key], now_ms)
        assert held is not None
        latest = _latest_expiry(store)
        assert held.expires_ms == min(expires, latest)
        assert_record(store.get(Security, "x"), Security(ssm_id="x", v=1))

    def test_the_far_past_is_expired(self, make: Make) -> None:
        store = make()
        family, key, now_ms = family_of(Security), encode_key(("x",)), time.time() * 1000
        payload = encode_record("Security", {"ssm_id": "x", "v": 1})
        for n, expires in enumerate([-(2**53) + 1, -(2**53), -(2**63), -(2**64), -(10**30)]):
            store._fill(family, [Entry(payload, 1000 + n, expires, key, ())], now_ms)
            assert store._read(family, [key], now_ms) == [None], expires


def _latest_expiry(store: ss.BaseStore) -> int:
    """The largest expiry the store's header holds; a later one is kept as this (docs/backends.md)."""
    from stockstore.backends import memcache, redis

    return int((memcache if isinstance(store, MemcacheStore) else redis)._LATEST_EXPIRY)


@pytest.mark.parametrize("epoch", [EPOCHS["aware"], EPOCHS["naive"]], ids=["aware", "naive"])
@pytest.mark.parametrize("middle", _params(["msgpack", "hash", "msgpack-cluster", "memcached"]))
def test_a_chain_serves_nothing_its_source_expired(
    request: pytest.FixtureRequest, sqlite_url: str, epoch: dt.datetime, middle: str
) -> None:
    """memory > Redis or memcached > SQL, the source's lifetime at the epoch: no tier serves a record."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    if middle == "memcached":
        tier: ss.BaseStore = MemcacheStore([request.getfixturevalue("memcached_server")], namespace=namespace)
    else:
        url = request.getfixturevalue("redis_cluster_url" if middle.endswith("cluster") else "redis_url")
        tier = (RedisHashStore if middle.startswith("hash") else RedisMsgpackStore)(url, namespace=namespace)
    source = SqlStore(sqlite_url, namespace=namespace, lifetime=lambda obj: epoch)
    with ss.ChainedStore([MemoryStore(namespace=namespace), tier, source]) as chain:
        chain.batch_put([Security(ssm_id=i, v=1) for i in range(2000)])
        assert chain.batch_get(Security, range(2000)) == [None] * 2000
        assert tier.batch_get(Security, range(2000)) == [None] * 2000
        chain.batch_patch(Security, [{"ssm_id": i, "v": 2} for i in range(2000)])
        assert chain.batch_get(Security, range(2000)) == [None] * 2000
        assert tier.batch_get(Security, range(2000)) == [None] * 2000
