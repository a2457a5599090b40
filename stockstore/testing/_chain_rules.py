"""The rules a `ChainedStore` depends on, held against the store's own primitives (see Extending).

A chain fills its cache tiers with what it read below them (``_fill``) and leaves
tombstones where it deleted or failed (``_invalidate``); its source of truth stores
versions that grow per key (``_write``, ``_patch``).  These tests call those
primitives as a chain does, with the records and versions a chain would hand over,
and check what the store then serves: a late, older fill never replaces a newer copy,
expired or not; tombstones refuse such fills and free alternate keys; a fill takes an
alternate key over; versions grow.  Then the store serves as a cache tier and as the
source of truth of a real chain.  The rules themselves are `stockstore.backends.base`'s
(`fill_lands`, `tombstone`, `stored_version`, `plan_fill`, `plan_write`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from .. import _codec
from .._chained import ChainedStore
from .._entry import versions
from .._keys import encode_key, family_of
from .._record import Record, attributes_of
from .._store import BaseStore
from ..backends.base import Entry
from ..backends.memory import MemoryStore
from ._base import SuiteBase
from ._exact import assert_record
from ._records import Security


class Ticker(Record):
    """A record with an alternate key, for the hand-over rules."""

    __stockstore_keys__: ClassVar[list[Any]] = ["ticker", "isin"]


def entry(obj: Any, version: int, expires_ms: int | None = None) -> Entry:
    """The record *obj* as a source of truth hands it to a cache tier, at *version*."""
    family = family_of(type(obj))
    attrs = attributes_of(obj)
    payload = _codec.pack((family.tag(type(obj)), attrs))
    return Entry(payload, version, expires_ms, encode_key(family.primary_of(attrs)), family.alternates_of(attrs))


def now_ms(store: BaseStore) -> int:
    return int(store.clock() * 1000)


def fill(store: BaseStore, *entries: Entry) -> None:
    """Fill *store* as a chain fills a cache tier (every entry of one family)."""
    family = family_of(Ticker if entries[0].alternates else Security)
    with store._errors():
        store._fill(family, list(entries), now_ms(store))


def invalidate(store: BaseStore, cls: type, keys: list[Any], version: int) -> None:
    """Leave tombstones of at least *version* for a minute, as a chain does where it deleted."""
    with store._errors():
        store._invalidate(family_of(cls), [encode_key((k,)) for k in keys], version, now_ms(store) + 60_000)


def held_version(store: BaseStore, cls: type, key: Any) -> int:
    with store._errors():
        [stored] = store._read(family_of(cls), [encode_key((key,))], now_ms(store))
    assert stored is not None, f"{cls.__qualname__} {key!r} is not held"
    return stored.version


class ChainRuleTests(SuiteBase):
    """The store as a chain's cache tier and source of truth."""

    # ------------------------------------------------------------------ fills

    def test_an_older_fill_never_replaces_a_newer_copy(self, store: BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=2.0), v + 1))
        fill(store, entry(Security(ssm_id="k", v=1.0), v))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_an_older_fill_never_replaces_an_expired_newer_copy(self, store: BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=2.0), v + 1, now_ms(store) + 1000))
        self.clock.tick(2)
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=1.0), v))  # read from the source before v2 was written
        assert store.get(Security, "k") is None, "a late fill of an older version landed over an expired newer copy"

    def test_an_expired_copy_is_refreshed_by_the_same_version(self, store: BaseStore) -> None:
        v = versions.next()
        fill(store, entry(Security(ssm_id="k", v=1.0), v, now_ms(store) + 1000))
        self.clock.tick(2)
        fill(store, entry(Security(ssm_id="k", v=1.0), v, now_ms(store) + 1000))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0))

    def test_a_live_copy_is_not_replaced_by_the_same_version(self, store: BaseStore) -> None:
        v = versions.next()
        fill(store, entry(Security(ssm_id="k", v=1.0), v))
        fill(store, entry(Security(ssm_id="k", v=9.0), v))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0))

    def test_a_newer_fill_replaces(self, store: BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Security(ssm_id="k", v=1.0), v))
        fill(store, entry(Security(ssm_id="k", v=2.0), v + 1))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    # ------------------------------------------------------------------ fill tokens

    def watch(self, store: BaseStore, *keys: Any, ttl_ms: int = 30_000) -> list[bytes]:
        if not self.gives_fill_tokens:
            pytest.skip("gives_fill_tokens is false: this store loses no copy behind a chain's back")
        with store._errors():
            tokens = store._watch(family_of(Security), [encode_key((k,)) for k in keys], ttl_ms)
        assert tokens is not None, "gives_fill_tokens is true, but _watch gives no tokens"
        assert len(tokens) == len(keys)
        return tokens

    def test_fill_tokens_are_given_as_declared(self, store: BaseStore) -> None:
        with store._errors():
            tokens = store._watch(family_of(Security), [encode_key(("k",))], 30_000)
        assert (tokens is not None) == self.gives_fill_tokens, "see gives_fill_tokens"

    def fill_watched(self, store: BaseStore, token: bytes, *entries: Entry) -> None:
        with store._errors():
            store._fill_watched(family_of(Security), list(entries), [token] * len(entries), now_ms(store))

    def test_a_watched_fill_lands_while_its_token_is_in_place(self, store: BaseStore) -> None:
        [token] = self.watch(store, "k")
        self.fill_watched(store, token, entry(Security(ssm_id="k", v=1.0), versions.next()))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0))

    @pytest.mark.parametrize("change", ["fill", "invalidate", "remove"])
    def test_a_watched_fill_is_refused_once_the_key_changed(self, store: BaseStore, change: str) -> None:
        """Taken away by a newer fill, an invalidation or a removal, even if that copy is gone again."""
        v = versions.take(3)
        [token] = self.watch(store, "k")
        if change == "fill":
            fill(store, entry(Security(ssm_id="k", v=2.0), v + 2))
        elif change == "invalidate":
            invalidate(store, Security, ["k"], v + 2)
        else:
            store.delete(Security, "k")
        store.delete(Security, "k")  # the newer copy (or tombstone) is lost, as an eviction would lose it
        self.fill_watched(store, token, entry(Security(ssm_id="k", v=1.0), v))
        assert store.get(Security, "k") is None, "a late fill landed though the key changed since it was watched"

    def test_a_token_is_used_once_and_not_past_its_time(self, store: BaseStore) -> None:
        v = versions.take(3)
        [token] = self.watch(store, "k")
        self.fill_watched(store, token, entry(Security(ssm_id="k", v=1.0), v))
        store.delete(Security, "k")
        self.fill_watched(store, token, entry(Security(ssm_id="k", v=2.0), v + 1))
        assert store.get(Security, "k") is None
        [late] = self.watch(store, "late", ttl_ms=1000)
        self.clock.tick(2)
        self.fill_watched(store, late, entry(Security(ssm_id="late", v=1.0), v + 2))
        assert store.get(Security, "late") is None

    # ------------------------------------------------------------------ tombstones

    def test_a_tombstone_hides_the_record_and_refuses_fills_up_to_its_version(self, store: BaseStore) -> None:
        v = versions.take(3)
        fill(store, entry(Security(ssm_id="k", v=0.0), v))
        invalidate(store, Security, ["k"], v + 1)
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=1.0), v + 1))
        fill(store, entry(Security(ssm_id="k", v=0.5), v))
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=2.0), v + 2))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_a_tombstone_keeps_the_newer_version_it_replaced(self, store: BaseStore) -> None:
        v = versions.take(11)
        fill(store, entry(Security(ssm_id="k", v=9.0), v + 9))
        invalidate(store, Security, ["k"], v + 3)
        fill(store, entry(Security(ssm_id="k", v=8.0), v + 8))
        assert store.get(Security, "k") is None
        fill(store, entry(Security(ssm_id="k", v=10.0), v + 10))
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=10.0))

    def test_a_tombstone_of_a_missing_record_refuses_older_fills(self, store: BaseStore) -> None:
        v = versions.take(2)
        invalidate(store, Security, ["k"], v + 1)
        fill(store, entry(Security(ssm_id="k", v=0.0), v))
        assert store.get(Security, "k") is None

    def test_tombstones_are_not_records(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="a"))
        invalidate(store, Security, ["a", "b"], versions.next())
        assert store.batch_get(Security, ["a", "b"]) == [None, None]
        assert store.batch_delete(Security, ["a", "b"]) == 0
        self.assert_holds(store, Security, [], among=["a", "b"])

    def test_an_invalidation_frees_alternate_keys(self, store: BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Ticker(ticker="A", isin="I"), v))
        invalidate(store, Ticker, ["A"], v)
        assert store.get(Ticker, {"isin": "I"}) is None
        fill(store, entry(Ticker(ticker="B", isin="I"), v + 1))
        assert_record(store.get(Ticker, {"isin": "I"}), Ticker(ticker="B", isin="I"))

    # ------------------------------------------------------------------ alternate keys

    def test_a_fill_takes_an_alternate_key_over_and_drops_the_stale_holder(self, store: BaseStore) -> None:
        v = versions.take(2)
        fill(store, entry(Ticker(ticker="A", isin="I"), v))
        fill(store, entry(Ticker(ticker="B", isin="I"), v + 1))
        assert_record(store.get(Ticker, {"isin": "I"}), Ticker(ticker="B", isin="I"))
        assert store.get(Ticker, "A") is None, "the record that held the alternate key in this cache was kept"

    def test_an_expired_holder_gives_its_alternate_key_up(self, store: BaseStore) -> None:
        fill(store, entry(Ticker(ticker="A", isin="I"), versions.next(), now_ms(store) + 1000))
        self.clock.tick(2)
        store.put(Ticker(ticker="B", isin="I"))
        assert_record(store.get(Ticker, {"isin": "I"}), Ticker(ticker="B", isin="I"))

    # ------------------------------------------------------------------ versions of a source of truth

    def test_a_write_stores_a_version_newer_than_any_held(self, store: BaseStore) -> None:
        if not self.grows_versions:
            pytest.skip("this store keeps the writer's versions (grows_versions = False)")
        far = versions.next() + 10**12  # written by a process whose clock is far ahead
        fill(store, entry(Security(ssm_id="k", v=1.0), far))
        store.put(Security(ssm_id="k", v=2.0))
        assert held_version(store, Security, "k") > far
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_a_patch_stores_a_version_newer_than_the_record(self, store: BaseStore) -> None:
        far = versions.next() + 10**12
        fill(store, entry(Security(ssm_id="k", v=1.0), far))
        store.patch(Security, "k", {"w": 2.0})
        assert held_version(store, Security, "k") > far
        assert_record(store.get(Security, "k"), Security(ssm_id="k", v=1.0, w=2.0))

    # ------------------------------------------------------------------ in a chain

    def test_as_a_cache_tier_a_late_fill_after_a_write_is_refused(self) -> None:
        """A reader reads v1 from the source, a writer writes v2 through the chain, then the reader fills v1."""
        tier = self.make(lifetime=1.0)
        source = MemoryStore(namespace=self.namespace, clock=self.clock)
        chain = ChainedStore([tier, source], clock=self.clock)
        chain.put(Security(ssm_id="k", v=1.0))
        [old] = source._read(family_of(Security), [encode_key(("k",))], now_ms(source))
        assert old is not None
        chain.put(Security(ssm_id="k", v=2.0))
        stale = Entry(old.payload, old.version, None, encode_key(("k",)), ())
        fill(tier, stale)
        assert_record(tier.get(Security, "k"), Security(ssm_id="k", v=2.0))
        self.clock.tick(2)  # the tier's copy of v2 expires: the late fill must still be refused
        fill(tier, stale)
        assert tier.get(Security, "k") is None
        assert_record(chain.get(Security, "k"), Security(ssm_id="k", v=2.0))

    def test_as_a_cache_tier_deletes_and_patches_reach_it(self) -> None:
        tier = self.make()
        chain = ChainedStore([tier, MemoryStore(namespace=self.namespace, clock=self.clock)], clock=self.clock)
        chain.batch_put([Security(ssm_id=f"s{i}", v=float(i)) for i in range(5)])
        chain.patch(Security, "s1", {"v": -1.0})
        chain.delete(Security, "s2")
        assert_record(tier.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
        assert tier.get(Security, "s2") is None
        assert_record(chain.get(Security, "s3"), Security(ssm_id="s3", v=3.0))

    def test_as_the_source_of_truth(self, store: BaseStore) -> None:
        cache = MemoryStore(namespace=self.namespace, clock=self.clock)
        chain = ChainedStore([cache, store], clock=self.clock)
        chain.batch_put([Security(ssm_id=f"s{i}", v=float(i)) for i in range(10)])
        chain.patch(Security, "s1", {"v": -1.0})
        chain.delete(Security, "s2")
        assert_record(chain.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
        assert chain.get(Security, "s2") is None
        assert_record(store.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
        assert store.get(Security, "s2") is None
        assert_record(cache.get(Security, "s1"), Security(ssm_id="s1", v=-1.0))
