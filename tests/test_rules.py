"""The rules a ChainedStore depends on, held against every backend's primitives (to move into the kit)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from conftest import FakeClock, StoreFactory
from exact import assert_record

import stockstore as ss
from stockstore import _codec
from stockstore._entry import versions
from stockstore._keys import encode_key, family_of
from stockstore._record import attributes_of
from stockstore.backends import MemoryStore
from stockstore.backends.base import Entry


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ticker", "isin"]


def entry(obj: Any, version: int, expires_ms: int | None = None) -> Entry:
    """The write of *obj* as a source of truth would hand it to a cache tier."""
    family = family_of(type(obj))
    attrs = attributes_of(obj)
    payload = _codec.pack((family.tag(type(obj)), attrs))
    return Entry(payload, version, expires_ms, encode_key(family.primary_of(attrs)), family.alternates_of(attrs))


def now_ms(store: ss.BaseStore) -> float:
    return store.clock() * 1000


def fill(store: ss.BaseStore, *entries: Entry) -> None:
    family = family_of(Listing if entries[0].alternates else Security)
    with store._errors():
        store._fill(family, list(entries), now_ms(store))


def held_version(store: ss.BaseStore, cls: type, key: Any) -> int | None:
    [stored] = store._read(family_of(cls), [encode_key((key,))], now_ms(store))
    return None if stored is None else stored.version


class TestFills:
    def test_an_older_fill_never_replaces_a_newer_copy(self, store: ss.BaseStore) -> None:
        v1 = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=2.0), v1 + 1))
        fill(store, entry(Security(ssm_id="k", v=1.0), v1))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_an_older_fill_never_replaces_an_expired_newer_copy(self, store: ss.BaseStore, clock: FakeClock) -> None:
        v1 = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=2.0), v1 + 1, int(now_ms(store)) + 1000))
        clock.tick(2)
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=1.0), v1))
        assert store.get(Security, "k") is None, "a late fill of an older version landed over an expired newer copy"

    def test_an_expired_copy_is_refreshed_by_the_same_version(self, store: ss.BaseStore, clock: FakeClock) -> None:
        version = versions.next()
        fill(store, entry(Security(ssm_id="k", v=1.0), version, int(now_ms(store)) + 1000))
        clock.tick(2)
        fill(store, entry(Security(ssm_id="k", v=1.0), version, int(now_ms(store)) + 1000))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0))

    def test_a_live_copy_is_not_replaced_by_the_same_version(self, store: ss.BaseStore) -> None:
        version = versions.next()
        fill(store, entry(Security(ssm_id="k", v=1.0), version))
        fill(store, entry(Security(ssm_id="k", v=9.0), version))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0))

    def test_a_newer_fill_replaces(self, store: ss.BaseStore) -> None:
        v1 = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=1.0), v1))
        fill(store, entry(Security(ssm_id="k", v=2.0), v1 + 1))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))


class TestTombstones:
    def invalidate(self, store: ss.BaseStore, cls: type, keys: list[Any], version: int) -> None:
        until = int(now_ms(store)) + 60_000
        with store._errors():
            store._invalidate(family_of(cls), [encode_key((k,)) for k in keys], version, until)

    def test_a_tombstone_hides_the_record_and_refuses_fills_up_to_its_version(self, store: ss.BaseStore) -> None:
        v = versions.take(3)
        fill(store, entry(Security(ssm_id="k", v=0.0), v))
        self.invalidate(store, Security, ["k"], v + 1)
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=1.0), v + 1))
        fill(store, entry(Security(ssm_id="k", v=0.5), v))
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=2.0), v + 2))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_a_tombstone_keeps_the_newer_version_it_replaced(self, store: ss.BaseStore) -> None:
        v = versions.take(10)
        fill(store, entry(Security(ssm_id="k", v=9.0), v + 9))
        self.invalidate(store, Security, ["k"], v + 3)
        fill(store, entry(Security(ssm_id="k", v=8.0), v + 8))
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=10.0), v + 10))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=10.0))

    def test_a_tombstone_of_a_missing_record_refuses_older_fills(self, store: ss.BaseStore) -> None:
        v = versions.take(3)
        self.invalidate(store, Security, ["k"], v + 1)
        fill(store, entry(Security(ssm_id="k", v=0.0), v))
        assert store.get(Security, "k") is None

    def test_tombstones_are_not_records(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="a"))
        self.invalidate(store, Security, ["a", "b"], versions.next())
        assert store.batch_get(Security, ["a", "b"]) == [None, None]
        assert store.batch_delete(Security, ["a", "b"]) == 0

    def test_an_invalidation_frees_alternate_keys(self, store: ss.BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Listing(ticker="A", isin="I"), v))
        self.invalidate(store, Listing, ["A"], v)
        assert store.get(Listing, {"isin": "I"}) is None
        fill(store, entry(Listing(ticker="B", isin="I"), v + 1))
        assert_record(store.get(Listing, {"isin": "I"}), Listing(ticker="B", isin="I"))


class TestAlternateKeys:
    def test_a_fill_takes_an_alternate_key_over(self, store: ss.BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Listing(ticker="A", isin="I"), v))
        fill(store, entry(Listing(ticker="B", isin="I"), v + 1))
        assert_record(store.get(Listing, {"isin": "I"}), Listing(ticker="B", isin="I"))
        assert store.get(Listing, "A") is None, "the record that held the alternate key in this cache was kept"

    def test_an_expired_holder_gives_its_alternate_key_up(self, store: ss.BaseStore, clock: FakeClock) -> None:
        v = versions.take(2)
        fill(store, entry(Listing(ticker="A", isin="I"), v, int(now_ms(store)) + 1000))
        clock.tick(2)
        store.put(Listing(ticker="B", isin="I"))
        assert_record(store.get(Listing, {"isin": "I"}), Listing(ticker="B", isin="I"))


class TestSourceVersions:
    def test_a_write_stores_a_version_newer_than_any_held(self, store: ss.BaseStore, backend: str) -> None:
        if backend in ("redis-msgpack", "redis-msgpack-cluster", "redis-tls-acl"):
            pytest.skip("RedisMsgpackStore keeps the writer's versions for families without alternate keys")
        far = versions.next() + 10**12  # a writer whose clock is far ahead
        fill(store, entry(Security(ssm_id="k", v=1.0), far))
        store.put(Security(ssm_id="k", v=2.0))
        assert (held_version(store, Security, "k") or 0) > far
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_a_patch_stores_a_version_newer_than_the_record(self, store: ss.BaseStore) -> None:
        far = versions.next() + 10**12
        fill(store, entry(Security(ssm_id="k", v=1.0), far))
        store.patch(Security, "k", {"w": 2.0})
        assert (held_version(store, Security, "k") or 0) > far
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0, w=2.0))


class TestInAChain:
    def test_a_late_fill_after_a_write_through_this_tier_is_refused(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        tier = store_factory(lifetime=1.0)
        source = MemoryStore(namespace=tier.namespace, clock=clock)
        chain = ss.ChainedStore([tier, source], clock=clock)
        chain.put(Security(ssm_id="k", v=1.0))
        [old] = source._read(family_of(Security), [encode_key(("k",))], now_ms(source))  # a reader's read...
        assert old is not None
        chain.put(Security(ssm_id="k", v=2.0))  # ...then a writer's write...
        stale = Entry(old.payload, old.version, None, encode_key(("k",)), ())
        fill(tier, stale)  # ...then the reader's fill
        assert_record(chain.get(Security, "k"), Security(ssm_id="k", v=2.0))
        clock.tick(2)  # the tier's copy of v2 expires: the late fill must still be refused
        fill(tier, stale)
        assert_record(tier.get(Security, "k") or chain.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_as_the_source_of_truth(self, store: ss.BaseStore, clock: FakeClock) -> None:
        chain = ss.ChainedStore([MemoryStore(namespace=store.namespace, clock=clock), store], clock=clock)
        chain.batch_put([Security(ssm_id=f"s{i}", v=float(i)) for i in range(10)])
        chain.patch(Security, "s1", {"v": -1.0})
        chain.delete(Security, "s2")
        assert_record(chain.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
        assert chain.get(Security, "s2") is None
        assert_record(store.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
        assert store.get(Security, "s2") is None


class TestClose:
    CALLS: ClassVar[dict[str, Any]] = {
        "put": lambda s: s.put(Security(ssm_id="k")),
        "get": lambda s: s.get(Security, "k"),
        "delete": lambda s: s.delete(Security, "k"),
        "patch": lambda s: s.patch(Security, "k", {"v": 1.0}),
        "batch_put": lambda s: s.batch_put([]),
        "batch_get": lambda s: s.batch_get(Security, []),
        "batch_delete": lambda s: s.batch_delete(Security, []),
        "batch_patch": lambda s: s.batch_patch(Security, []),
        "keys": lambda s: s.keys(Security),
        "count": lambda s: s.count(Security),
        "clear": lambda s: s.clear(Security),
    }

    @pytest.mark.parametrize("call", list(CALLS))
    def test_a_closed_store_refuses_every_call(self, store: ss.BaseStore, call: str) -> None:
        store.put(Security(ssm_id="k"))
        store.close()
        with pytest.raises(ss.errors.StoreClosedError, match="closed"):
            self.CALLS[call](store)
        store.close()  # closing again is fine
