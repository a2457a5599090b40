"""ChainedStore's own semantics (API.md section 5), on compositions built here.

The conformance suite already runs every public call through a chain; these tests
look inside the tiers: what each one is asked, what it holds, and what happens
when one of them fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

import stockstore as ss
from stockstore._entry import Entry, Stored
from stockstore._keys import Family, encode_key, family_of
from stockstore.backends import MemoryStore
from stockstore.backends.base import Merge
from stockstore.errors import BackendUnavailableError, InvalidKeyError
from stockstore.testing import FakeClock, assert_record


class Asset(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["aid", "isin"]


class Spy(ss.BaseStore):
    """Wraps a tier: records which keys each primitive is asked for, and fails on demand."""

    def __init__(self, inner: ss.BaseStore, name: str, log: list[tuple[str, str]]) -> None:
        super().__init__(namespace=inner.namespace, lifetime=inner.lifetime, clock=inner.clock)
        self.inner, self.name, self.log = inner, name, log
        self.asked: list[list[bytes]] = []
        self.failing: set[str] = set()

    def __repr__(self) -> str:
        return f"<Spy {self.name}>"

    def _call(self, primitive: str) -> None:
        self.log.append((self.name, primitive))
        if primitive in self.failing:
            raise BackendUnavailableError(f"{self.name}: {primitive} is down")

    def _errors(self) -> Any:
        return self.inner._errors()

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        self._call("read")
        self.asked.append(list(keys))
        return self.inner._read(family, keys, now_ms)

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        self._call("resolve")
        return self.inner._resolve(family, index, keys, now_ms)

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        self._call("write")
        return self.inner._write(family, entries, now_ms)

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        self._call("remove")
        return self.inner._remove(family, keys, now_ms)

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        self._call("patch")
        return self.inner._patch(family, keys, merge, now_ms)

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self._call("fill")
        self.inner._fill(family, entries, now_ms)

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        self._call("invalidate")
        self.inner._invalidate(family, keys, version, until_ms)

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        self._call("scan")
        return self.inner._scan(family, now_ms)

    def _clear(self, family: Family, now_ms: float) -> int:
        self._call("clear")
        return self.inner._clear(family, now_ms)

    def close(self) -> None:
        self.inner.close()


SourceFactory = Callable[..., ss.BaseStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_source(request: pytest.FixtureRequest, namespace: str, clock: FakeClock) -> Iterator[SourceFactory]:
    """Builds source-of-truth tiers: a MemoryStore, or a SqlStore on SQLite."""
    made: list[ss.BaseStore] = []

    def make(*, lifetime: Any = None) -> ss.BaseStore:
        if request.param == "memory":
            store: ss.BaseStore = MemoryStore(namespace=namespace, lifetime=lifetime, clock=clock)
        else:
            from stockstore.backends import SqlStore

            url = request.getfixturevalue("sqlite_url")
            store = SqlStore(url, namespace=namespace, lifetime=lifetime, clock=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def log() -> list[tuple[str, str]]:
    """The order in which the spied tiers were called, shared by all of them."""
    return []


@pytest.fixture
def top(clock: FakeClock, log: list[tuple[str, str]]) -> Spy:
    return Spy(MemoryStore(lifetime=60, clock=clock), "top", log)


@pytest.fixture
def middle(clock: FakeClock, log: list[tuple[str, str]]) -> Spy:
    return Spy(MemoryStore(lifetime=600, clock=clock), "middle", log)


@pytest.fixture
def source(make_source: SourceFactory, log: list[tuple[str, str]]) -> Spy:
    return Spy(make_source(), "source", log)


@pytest.fixture
def chain(top: Spy, middle: Spy, source: Spy, clock: FakeClock) -> ss.ChainedStore:
    """Three tiers: memory (60 s) over memory (600 s) over the source of truth."""
    return ss.ChainedStore([top, middle, source], clock=clock)


def _key(value: Any) -> bytes:
    return encode_key((value,))


def _family() -> Family:
    return family_of(Asset)


def _held(tier: Spy, aid: Any) -> Any:
    """What a tier itself holds for *aid* (bypassing the chain)."""
    return tier.inner.get(Asset, aid)


class TestReads:
    def test_read_through_fills_every_tier_above(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy
    ) -> None:
        rec = Asset(aid="a", v=1.0)
        source.inner.put(rec)
        assert _held(top, "a") is None
        assert_record(chain.get(Asset, "a"), rec)
        assert_record(_held(middle, "a"), rec)
        assert_record(_held(top, "a"), rec)
        source.asked.clear()
        assert_record(chain.get(Asset, "a"), rec)
        assert source.asked == []

    def test_hit_in_the_middle_fills_only_above(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy
    ) -> None:
        rec = Asset(aid="a")
        chain.put(rec)
        top.inner.clear(Asset)
        source.asked.clear()
        assert_record(chain.get(Asset, "a"), rec)
        assert source.asked == []
        assert_record(_held(top, "a"), rec)

    def test_batch_get_asks_each_tier_only_for_what_is_missing(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy
    ) -> None:
        chain.batch_put([Asset(aid=k) for k in "abcd"])
        top.inner.batch_delete(Asset, ["b", "c", "d"])
        middle.inner.batch_delete(Asset, ["c", "d"])
        for tier in (top, middle, source):
            tier.asked.clear()
        got = chain.batch_get(Asset, ["a", "b", "c", "d", "e"])
        assert [o["aid"] if o is not None else None for o in got] == ["a", "b", "c", "d", None]
        assert top.asked == [[_key(k) for k in "abcde"]]
        assert middle.asked == [[_key(k) for k in "bcde"]]
        assert source.asked == [[_key(k) for k in "cde"]]

    def test_filled_copy_never_outlives_the_source_copy(
        self, make_source: SourceFactory, clock: FakeClock, log: list[tuple[str, str]]
    ) -> None:
        top = MemoryStore(lifetime=3600, clock=clock)
        source = make_source(lifetime=lambda obj: obj["ttl"])
        chain = ss.ChainedStore([top, source], clock=clock)
        source.put(Asset(aid="a", ttl=10))
        chain.put(Asset(aid="b", ttl=10))
        assert chain.get(Asset, "a") is not None
        assert top.get(Asset, "a") is not None
        assert top.get(Asset, "b") is not None
        clock.tick(11)
        assert top.get(Asset, "a") is None
        assert top.get(Asset, "b") is None
        assert chain.batch_get(Asset, ["a", "b"]) == [None, None]

    def test_per_tier_lifetimes(self, make_source: SourceFactory, clock: FakeClock) -> None:
        top = MemoryStore(lifetime=5, clock=clock)
        middle = MemoryStore(lifetime=lambda obj: 50, clock=clock)
        source = make_source()
        chain = ss.ChainedStore([top, middle, source], clock=clock)
        rec = Asset(aid="a")
        chain.put(rec)
        clock.tick(6)
        assert top.get(Asset, "a") is None
        assert_record(middle.get(Asset, "a"), rec)
        assert_record(chain.get(Asset, "a"), rec)
        assert_record(top.get(Asset, "a"), rec)  # refilled with its own lifetime
        clock.tick(50)
        assert middle.get(Asset, "a") is None
        assert_record(chain.get(Asset, "a"), rec)
        clock.tick(10**7)
        assert_record(chain.get(Asset, "a"), rec)

    def test_failing_cache_read_is_a_logged_miss(
        self, chain: ss.ChainedStore, top: Spy, caplog: pytest.LogCaptureFixture
    ) -> None:
        rec = Asset(aid="a")
        chain.put(rec)
        top.failing.add("read")
        with caplog.at_level(logging.WARNING, logger="stockstore.chain"):
            assert_record(chain.get(Asset, "a"), rec)
        assert chain.tier_failures[0] == 1
        assert any("tier 0" in r.getMessage() for r in caplog.records)

    def test_failing_source_read_raises(self, chain: ss.ChainedStore, source: Spy) -> None:
        source.failing.add("read")
        with pytest.raises(BackendUnavailableError):
            chain.get(Asset, "a")

    def test_alternate_keys_are_resolved_by_the_source(self, chain: ss.ChainedStore, top: Spy) -> None:
        chain.put(Asset(aid="a", isin="I"))
        chain.put(Asset(aid="a", isin="J"))
        chain.put(Asset(aid="b", isin="I"))
        assert_record(chain.get(Asset, {"isin": "I"}), Asset(aid="b", isin="I"))
        assert_record(chain.get(Asset, {"isin": "J"}), Asset(aid="a", isin="J"))


class TestWrites:
    def test_writes_reach_the_source_first_then_caches_nearest_first(
        self, chain: ss.ChainedStore, log: list[tuple[str, str]]
    ) -> None:
        for write in (
            lambda: chain.put(Asset(aid="a")),
            lambda: chain.batch_put([Asset(aid="b")]),
            lambda: chain.patch(Asset, "a", {"v": 1}),
            lambda: chain.batch_patch(Asset, [{"aid": "b", "v": 1}]),
            lambda: chain.delete(Asset, "a"),
            lambda: chain.batch_delete(Asset, ["b"]),
        ):
            log.clear()
            write()
            tiers = [name for name, primitive in log if primitive not in ("read", "resolve")]
            assert tiers[0] == "source", log
            assert tiers.index("middle") < tiers.index("top"), log

    @pytest.mark.parametrize("primitive", ["write", "patch", "remove"])
    def test_failing_source_touches_no_cache(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy, primitive: str
    ) -> None:
        old = Asset(aid="a", v="old")
        chain.put(old)
        source.failing.add(primitive)
        top.log.clear()
        writes = {
            "write": [lambda: chain.put(Asset(aid="a", v="new")), lambda: chain.batch_put([Asset(aid="a", v="new")])],
            "patch": [
                lambda: chain.patch(Asset, "a", {"v": "new"}),
                lambda: chain.batch_patch(Asset, [{"aid": "a", "v": "new"}]),
            ],
            "remove": [lambda: chain.delete(Asset, "a"), lambda: chain.batch_delete(Asset, ["a"])],
        }[primitive]
        for write in writes:
            with pytest.raises(BackendUnavailableError):
                write()
        assert [name for name, _ in top.log if name != "source"] == []
        assert_record(_held(top, "a"), old)
        assert_record(_held(middle, "a"), old)
        assert chain.tier_failures == [0, 0, 0]

    @pytest.mark.parametrize("broken", [{"fill"}, {"fill", "invalidate"}])
    def test_failing_cache_tier_is_logged_counted_and_bypassed(
        self,
        chain: ss.ChainedStore,
        top: Spy,
        caplog: pytest.LogCaptureFixture,
        broken: set[str],
    ) -> None:
        chain.put(Asset(aid="a", v=1))
        assert _held(top, "a") is not None
        top.failing |= broken
        with caplog.at_level(logging.WARNING, logger="stockstore.chain"):
            chain.put(Asset(aid="a", v=2))
        assert chain.tier_failures[0] >= 1
        assert chain.tier_failures[1:] == [0, 0]
        assert [r.levelno for r in caplog.records if r.name == "stockstore.chain"][:1] == [logging.WARNING]
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=2))
        chain.patch(Asset, "a", {"v": 3})
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=3))
        chain.delete(Asset, "a")
        assert chain.get(Asset, "a") is None

    def test_bypass_is_lifted_once_the_tier_is_repaired(self, chain: ss.ChainedStore, top: Spy) -> None:
        chain.put(Asset(aid="a", v=1))
        top.failing |= {"fill", "invalidate"}
        chain.put(Asset(aid="a", v=2))
        assert_record(_held(top, "a"), Asset(aid="a", v=1))  # stale, and bypassed
        top.failing.clear()
        top.asked.clear()
        chain.down_for = 0.0  # the failed tier may be tried again at once
        chain._down.clear()
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=2))
        assert _held(top, "a") is None  # the stale copy was invalidated by the repair
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=2))
        assert top.asked == [[_key("a")], [_key("a")]]  # asked again: no longer bypassed
        chain.put(Asset(aid="a", v=3))
        assert_record(_held(top, "a"), Asset(aid="a", v=3))

    def test_a_failed_tier_is_left_alone_for_a_while(self, chain: ss.ChainedStore, top: Spy) -> None:
        """No waiting on a dead cache with every call: after a failure, it is skipped for down_for seconds."""
        chain.put(Asset(aid="a", v=1))
        top.failing |= {"fill", "invalidate", "read"}
        chain.put(Asset(aid="a", v=2))
        calls = len(top.log)
        for v in range(3, 8):
            chain.put(Asset(aid="a", v=v))
            assert_record(chain.get(Asset, "a"), Asset(aid="a", v=v))
        assert [p for name, p in top.log[calls:] if name == "top"] == []  # not asked once
        assert chain.tier_failures[0] == 1
        chain.down_for = 0.0
        chain._down.clear()
        top.failing.clear()
        top.asked.clear()
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=7))  # repaired on the way
        assert top.asked == [[_key("a")]]  # asked again: the bypass is lifted
        assert ("top", "invalidate") in top.log[calls:]

    def test_failing_cache_during_delete(self, chain: ss.ChainedStore, top: Spy) -> None:
        chain.put(Asset(aid="a"))
        top.failing.add("invalidate")
        chain.delete(Asset, "a")
        assert chain.get(Asset, "a") is None
        assert chain.tier_failures[0] >= 1

    def test_clear_reaches_every_tier(self, chain: ss.ChainedStore, top: Spy, middle: Spy) -> None:
        chain.batch_put([Asset(aid=i) for i in range(5)])
        assert chain.clear(Asset) == 5
        assert top.inner.count(Asset) == 0
        assert middle.inner.count(Asset) == 0
        assert chain.batch_get(Asset, range(5)) == [None] * 5

    def test_source_conflict_fills_nothing_stale(self, chain: ss.ChainedStore, top: Spy) -> None:
        chain.put(Asset(aid="a", isin="I"))
        chain.put(Asset(aid="b", v=1))
        with pytest.raises(InvalidKeyError):
            chain.put(Asset(aid="b", isin="I", v=2))
        assert_record(chain.get(Asset, "b"), Asset(aid="b", v=1))
        with pytest.raises(ss.errors.BatchError) as info:
            chain.batch_put([Asset(aid="b", isin="I"), Asset(aid="c", v=3)])
        assert info.value.failed == ["b"]
        assert_record(chain.get(Asset, "c"), Asset(aid="c", v=3))


class TestLateFill:
    """A read-miss that fetched an old version before a write must not land after it."""

    def _old_entry(self, chain: ss.ChainedStore, source: Spy, clock: FakeClock) -> Entry:
        stored = source._read(_family(), [_key("a")], clock() * 1000)[0]
        assert stored is not None
        return Entry(stored.payload, stored.version, stored.expires_ms, _key("a"), (None,))

    @pytest.mark.parametrize(
        "write",
        [
            lambda chain: chain.put(Asset(aid="a", v="new")),
            lambda chain: chain.batch_put([Asset(aid="a", v="new")]),
            lambda chain: chain.patch(Asset, "a", {"v": "new"}),
            lambda chain: chain.batch_patch(Asset, [{"aid": "a", "v": "new"}]),
        ],
        ids=["put", "batch_put", "patch", "batch_patch"],
    )
    def test_late_fill_after_a_write_is_refused(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy, clock: FakeClock, write: Any
    ) -> None:
        chain.put(Asset(aid="a", v="old"))
        top.inner.clear(Asset)
        middle.inner.clear(Asset)
        old = self._old_entry(chain, source, clock)
        write(chain)
        for tier in (top, middle):
            tier._fill(_family(), [old], clock() * 1000)
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v="new"))
        assert_record(_held(top, "a"), Asset(aid="a", v="new"))

    def test_late_fill_after_a_delete_is_refused(
        self, chain: ss.ChainedStore, top: Spy, middle: Spy, source: Spy, clock: FakeClock
    ) -> None:
        chain.put(Asset(aid="a", v="old"))
        old = self._old_entry(chain, source, clock)
        chain.delete(Asset, "a")
        for tier in (top, middle):
            tier._fill(_family(), [old], clock() * 1000)
        assert chain.get(Asset, "a") is None
        assert _held(top, "a") is None

    def test_late_fill_after_a_write_whose_cache_update_failed(
        self, chain: ss.ChainedStore, top: Spy, source: Spy, clock: FakeClock
    ) -> None:
        chain.put(Asset(aid="a", v="old"))
        old = self._old_entry(chain, source, clock)
        top.failing.add("fill")
        chain.put(Asset(aid="a", v="new"))
        top.failing.clear()
        top._fill(_family(), [old], clock() * 1000)
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v="new"))

    def test_late_fill_after_a_clear_is_refused(
        self, chain: ss.ChainedStore, top: Spy, source: Spy, clock: FakeClock
    ) -> None:
        chain.put(Asset(aid="a", v="old"))
        old = self._old_entry(chain, source, clock)
        chain.clear(Asset)
        top._fill(_family(), [old], clock() * 1000)
        assert chain.get(Asset, "a") is None


class TestNesting:
    def test_chains_nest(self, make_source: SourceFactory, clock: FakeClock) -> None:
        outer_top = MemoryStore(clock=clock)
        inner_top = MemoryStore(clock=clock)
        source = make_source()
        inner = ss.ChainedStore([inner_top, source], clock=clock)
        chain = ss.ChainedStore([outer_top, inner], clock=clock)
        rec = Asset(aid="a", isin="I", v=1.0)
        source.put(rec)
        assert_record(chain.get(Asset, {"isin": "I"}), rec)
        assert_record(outer_top.get(Asset, "a"), rec)
        assert_record(inner_top.get(Asset, "a"), rec)
        chain.patch(Asset, "a", {"v": 2.0})
        want = Asset(aid="a", isin="I", v=2.0)
        for store in (chain, inner, outer_top, inner_top, source):
            assert_record(store.get(Asset, "a"), want)
        chain.batch_put([Asset(aid=i) for i in range(3)])
        assert sorted(chain.keys(Asset), key=repr) == sorted(["a", 0, 1, 2], key=repr)
        assert chain.count(Asset) == 4
        assert chain.batch_delete(Asset, ["a", 0]) == 2
        for store in (chain, inner, outer_top, inner_top, source):
            assert store.get(Asset, "a") is None
        assert chain.clear(Asset) == 2
        assert inner_top.count(Asset) == 0

    def test_nested_chain_as_an_upper_tier(self, make_source: SourceFactory, clock: FakeClock) -> None:
        a, b = MemoryStore(clock=clock), MemoryStore(clock=clock)
        source = make_source()
        chain = ss.ChainedStore([ss.ChainedStore([a, b], clock=clock), source], clock=clock)
        rec = Asset(aid="x")
        source.put(rec)
        assert_record(chain.get(Asset, "x"), rec)
        assert_record(a.get(Asset, "x"), rec)
        assert_record(b.get(Asset, "x"), rec)
        chain.delete(Asset, "x")
        assert a.get(Asset, "x") is None
        assert chain.get(Asset, "x") is None

    def test_chain_takes_no_namespace_or_lifetime(self) -> None:
        with pytest.raises(TypeError):
            ss.ChainedStore([MemoryStore()], namespace="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            ss.ChainedStore([MemoryStore()], lifetime=5)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            ss.ChainedStore([])

    def test_each_tier_is_a_distinct_store(self) -> None:
        """A store twice would invalidate, as an upper tier, what it had just written as the source of truth."""
        m, source = MemoryStore(), MemoryStore()
        with pytest.raises(
            ValueError, match=r"^ChainedStore tiers 0 and 1 hold the same store, <MemoryStore .*distinct"
        ):
            ss.ChainedStore([m, m])
        with pytest.raises(ValueError, match=r"^ChainedStore tiers 0 and 2 hold the same store"):
            ss.ChainedStore([m, source, m])
        with pytest.raises(ValueError, match=r"^ChainedStore tiers 0 and 1 hold the same store"):
            ss.ChainedStore([m, ss.ChainedStore([MemoryStore(), m])])  # inside a nested chain too
        ss.ChainedStore([m, ss.ChainedStore([MemoryStore(), source])])  # distinct stores: fine

    def test_a_tier_that_is_not_a_store_says_what_a_tier_is(self) -> None:
        with pytest.raises(
            TypeError,
            match=r"^ChainedStore tier 0 is a str, not a store: 'memory://'; .*"
            r"MemoryStore\(\), or build one from a URL with stockstore.from_url\('memory://'\)$",
        ):
            ss.ChainedStore(["memory://", MemoryStore()])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"^ChainedStore tier 1 is a NoneType.*from_url\('memory://'\)$"):
            ss.ChainedStore([MemoryStore(), None])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"not a str: stockstore.from_config\(\[url, ...\]\) builds a chain"):
            ss.ChainedStore("memory://")  # type: ignore[arg-type]


class TestSingleFlight:
    """Threads of one process missing the same keys at once read them from the tiers below once."""

    @staticmethod
    def _slow_source(make_source: SourceFactory, log: list[tuple[str, str]], pause: float) -> Spy:
        source = Spy(make_source(), "source", log)
        read = source._read

        def slow_read(family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
            time.sleep(pause)  # long enough for every thread to arrive while the first one reads
            return read(family, keys, now_ms)

        source._read = slow_read  # type: ignore[method-assign]
        return source

    def test_concurrent_misses_read_the_source_once(
        self, make_source: SourceFactory, log: list[tuple[str, str]], clock: FakeClock
    ) -> None:
        source = self._slow_source(make_source, log, 0.3)
        source.inner.batch_put([Asset(aid=i, v=float(i)) for i in range(500)])
        chain = ss.ChainedStore([MemoryStore(clock=clock), source], clock=clock)
        results: list[list[Any]] = []
        threads = [
            threading.Thread(target=lambda: results.append(chain.batch_get(Asset, range(500)))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
        for got in results:
            assert [r["v"] for r in got] == [float(i) for i in range(500)]
        assert sum(len(keys) for keys in source.asked) == 500  # each key once, not 8 times

    def test_a_read_after_a_write_never_joins_an_older_read(
        self, make_source: SourceFactory, log: list[tuple[str, str]], clock: FakeClock
    ) -> None:
        source = self._slow_source(make_source, log, 0.5)
        source.inner.put(Asset(aid="a", v=1))
        chain = ss.ChainedStore([MemoryStore(clock=clock), source], clock=clock)
        early: list[Any] = []
        reader = threading.Thread(target=lambda: early.append(chain.get(Asset, "a")))
        reader.start()
        time.sleep(0.1)  # the reader's read of v1 is under way
        chain.put(Asset(aid="a", v=2))
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=2))  # not v1 from the flight under way
        reader.join()
        assert early[0]["v"] in (1, 2)
        assert_record(chain.get(Asset, "a"), Asset(aid="a", v=2))  # and the late fill of v1 did not land


# ---------------------------------------------------------------------------- fills beside the source


class Sec(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["sid"]


class Gate(MemoryStore):
    """A source whose chunk writes are counted, and a cache tier whose fills wait for the source's next write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.second = threading.Event()
        self.overlapped: list[bool] = []
        self.fill_threads: set[str] = set()

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        self.writes += 1
        if self.writes == 2:
            self.second.set()
        return super()._write(family, entries, now_ms)


class WaitingTier(MemoryStore):
    def __init__(self, source: Gate) -> None:
        super().__init__()
        self.source = source

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self.source.fill_threads.add(threading.current_thread().name)
        if not self.source.overlapped:  # the first chunk's fill: does the source go on meanwhile?
            self.source.overlapped.append(self.source.second.wait(timeout=5))
        super()._fill(family, entries, now_ms)


def test_a_batch_fills_the_tiers_above_while_the_source_writes_its_next_chunk() -> None:
    source = Gate()
    top = WaitingTier(source)
    chain = ss.ChainedStore([top, source])
    records = [Sec(sid=f"S{i}", v=float(i)) for i in range(3 * chain.put_chunk)]
    chain.batch_put(records)
    assert source.writes == 3
    assert source.overlapped == [True]  # the second chunk reached the source before the first one's fill ended
    assert source.fill_threads == {"stockstore-fill_0"}
    # The batch returned after every fill: the top tier holds every record.
    assert top.batch_get(Sec, [r["sid"] for r in records]) == records


def test_a_thread_local_tier_is_filled_by_the_writing_thread() -> None:
    top = ss.backends.ThreadLocalStore()
    chain = ss.ChainedStore([top, MemoryStore()])
    records = [Sec(sid=f"S{i}", v=float(i)) for i in range(3 * chain.put_chunk)]
    chain.batch_put(records)
    assert top.batch_get(Sec, [r["sid"] for r in records]) == records  # this thread's copies, all of them
