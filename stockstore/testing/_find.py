"""Finding records by indexed attributes, replacing a family at once, counters and removing attributes.

Every expectation here is written out by hand or computed by the plain Python
filters below, never by stockstore's own query code.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from .. import UNSET
from .._record import Record
from .._store import BaseStore
from ..errors import InvalidKeyError, QueryError, SerializationError, StoreError, UnsupportedOperationError
from ._base import SuiteBase, typed
from ._records import Security


class Stock(Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector", "price", "rating", "active"]


class Etf(Stock):
    pass


class Coded(Record):
    """A family with an alternate key, to reset."""

    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id", "isin"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector"]


SECTORS = ["tech", "fin", "util", "energy"]


def stocks(n: int = 30) -> list[Stock]:
    """Keys S00..S29 (one length: their stored order is alphabetical); a few lack or spoil an attribute."""
    out = []
    for i in range(n):
        stock = Stock(ssm_id=f"S{i:02d}", sector=SECTORS[i % 4], price=float(i % 10) + 0.5, rating=i % 7)
        if i % 5 == 0:
            stock["price"] = i % 10  # an int among the floats: compares as a number
        if i == 7:
            del stock["sector"]
        if i == 11:
            stock["price"] = None  # held, but no number: in no price filter
        if i == 13:
            stock["price"] = math.nan
        if i % 3 == 0:
            stock["active"] = i % 2 == 0
        out.append(stock)
    return out


def _number(value: Any) -> bool:
    return type(value) in (int, float) and not (type(value) is float and math.isnan(value))


def plain(op: str, want: Any) -> Callable[[Any], bool]:
    """The filter *op* written out plainly, for a held value (``_ABSENT`` where the record lacks it)."""

    def same(held: Any, value: Any) -> bool:
        if type(held) is bool or type(value) is bool:
            return type(held) is type(value) and held == value
        if _number(held) and _number(value):
            return bool(held == value)
        return type(held) is str and type(value) is str and held == value

    def ordered(held: Any) -> bool:
        if type(held) is bool:
            return False
        if _number(want):
            return (
                _number(held) and {"gt": held > want, "gte": held >= want, "lt": held < want, "lte": held <= want}[op]
            )
        return (
            type(held) is str and {"gt": held > want, "gte": held >= want, "lt": held < want, "lte": held <= want}[op]
        )

    def test(held: Any) -> bool:
        if held is _ABSENT or not (type(held) in (str, bool) or _number(held)):
            return False
        if op == "eq":
            return same(held, want)
        if op == "ne":
            return not same(held, want)
        if op == "in":
            return any(same(held, v) for v in want)
        if op == "startswith":
            return type(held) is str and held.startswith(want)
        return ordered(held)

    return test


_ABSENT = object()


def expected(records: list[Stock], **filters: Any) -> list[str]:
    """The keys, in key order, of the records passing every filter."""
    tests = []
    for name, value in filters.items():
        attr, _, op = name.partition("__")
        tests.append((attr, plain(op or "eq", value)))
    keep = [r for r in records if all(test(r.get(attr, _ABSENT)) for attr, test in tests)]
    return sorted(r["ssm_id"] for r in keep)


class FindTests(SuiteBase):
    """``find``, ``reset``, ``incr`` and ``UNSET`` (documented gap: ``finds``)."""

    def finding(self) -> None:
        if not self.finds:
            pytest.skip("finds is false: find and reset raise UnsupportedOperationError here")

    # ------------------------------------------------------------------ find

    def test_find_by_each_operator(self, store: BaseStore) -> None:
        self.finding()
        records = stocks()
        store.batch_put(records)
        cases: list[dict[str, Any]] = [
            {"sector": "tech"},
            {"sector__ne": "tech"},
            {"sector__in": ["fin", "util", "nowhere"]},
            {"sector__startswith": "en"},
            {"sector__gt": "fin"},
            {"sector__lte": "fin"},
            {"price": 3},
            {"price": 3.5},
            {"price__gt": 4},
            {"price__gte": 4.0},
            {"price__lt": 2.5},
            {"price__lte": 2},
            {"price__ne": 0.5},
            {"price__in": [0, 1.5, 9]},
            {"rating": 3, "sector": "util"},
            {"rating__gte": 2, "rating__lt": 5, "price__gt": 1.0},
            {"price__gt": 2, "price__lte": 7.5},  # two bounds of one attribute: one range
            {"price__gte": 3.5, "price__lt": 3.5},  # an empty range
            {"price__gte": 3, "price__lte": 3, "rating__ne": 3},
            {"sector__gte": "e", "sector__lt": "u", "sector__startswith": "t"},
            {"active": True},
            {"active": False},
            {"active__ne": True},
            {"rating": 1.0},  # an int held, a float asked: equal numbers
            {"sector": 1},  # a number asked of strings: nothing
            {"price": "3.5"},  # a string asked of numbers: nothing
        ]
        for filters in cases:
            found = list(store.find(Stock, **filters))
            assert [typed(k) for k in sorted(found)] == [typed(k) for k in expected(records, **filters)], filters

    def test_a_record_without_the_attribute_or_with_none_or_nan_matches_no_filter_on_it(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks())
        assert "S07" not in list(store.find(Stock, sector__ne="tech"))  # no sector at all
        for filters in ({"price__ne": 1.5}, {"price__gte": -1e308}, {"price__lt": math.inf}):
            found = list(store.find(Stock, **filters))
            assert {"S11", "S13"}.isdisjoint(found), filters

    def test_find_without_filters_finds_every_record(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks())
        assert sorted(store.find(Stock)) == [f"S{i:02d}" for i in range(30)]
        assert store.find(Stock).count() == 30

    def test_order_by_ascending_and_descending_ties_by_key_absent_last(self, store: BaseStore) -> None:
        self.finding()
        records = stocks(20)
        store.batch_put(records)
        priced = [r for r in records if _number(r.get("price"))]
        unpriced = sorted(r["ssm_id"] for r in records if not _number(r.get("price")))
        up = [r["ssm_id"] for r in sorted(priced, key=lambda r: (r["price"], r["ssm_id"]))]
        down = [r["ssm_id"] for r in sorted(priced, key=lambda r: (-r["price"], r["ssm_id"]))]
        assert list(store.find(Stock).order_by("price")) == up + unpriced
        assert list(store.find(Stock).order_by("-price")) == down + unpriced
        ranged = [r for r in priced if 2 <= r["price"] <= 7.5]
        want = [r["ssm_id"] for r in sorted(ranged, key=lambda r: (r["price"], r["ssm_id"]))]
        assert list(store.find(Stock, price__gte=2, price__lte=7.5).order_by("price")) == want
        assert list(store.find(Stock, price__gte=2, price__lte=7.5).order_by("price")[1:4]) == want[1:4]
        assert list(store.find(Stock, price__gte=2).order_by("-price")[:2]) == down[:2]
        by_two = sorted(records, key=lambda r: (r["rating"], -r["price"] if _number(r.get("price")) else 1e9))
        got = list(store.find(Stock, price__gte=0).order_by("rating", "-price"))
        assert got == [r["ssm_id"] for r in by_two if _number(r.get("price"))]

    def test_slices_are_offset_and_limit_and_queries_run_again(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks())
        query = store.find(Stock, rating__gte=1).order_by("-rating")
        everything = list(query)
        assert len(everything) == query.count() == 30 - 5  # ratings 0 at i = 0, 7, 14, 21, 28
        assert list(query[3:9]) == everything[3:9]
        assert list(query[3:9][2:4]) == everything[5:7]
        assert list(query[20:]) == everything[20:]
        assert list(query[:0]) == []
        assert query[3:9].count() == 6
        assert query[20:100].count() == 5
        assert query[4] == everything[4]
        with pytest.raises(IndexError):
            query[25]
        for bad in (slice(-3, None), slice(0, 10, 2)):
            with pytest.raises(QueryError):
                query[bad]
        store.delete(Stock, everything[0])
        assert list(query) == everything[1:]  # a query is lazy: each run asks again

    def test_objects_come_in_order_and_frame_too(self, store: BaseStore) -> None:
        self.finding()
        records = {r["ssm_id"]: r for r in stocks()}
        store.batch_put(records.values())
        query = store.find(Stock, sector="util").order_by("-rating")  # no NaN among them: records compare equal
        keys = list(query)
        objects = query.objects()
        assert [o["ssm_id"] for o in objects] == keys
        assert all(type(o) is Stock and o == records[o["ssm_id"]] for o in objects)
        pytest.importorskip("pandas")
        frame = query.frame(columns=["rating"])
        assert list(frame.index) == keys
        assert list(frame["rating"]) == [records[k]["rating"] for k in keys]

    def test_find_of_a_subclass_finds_only_its_records(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put([Stock(ssm_id="A", sector="tech"), Etf(ssm_id="B", sector="tech"), Etf(ssm_id="C")])
        assert sorted(store.find(Stock, sector="tech")) == ["A", "B"]
        assert list(store.find(Etf, sector="tech")) == ["B"]
        assert store.find(Etf).count() == 2
        assert [type(o) for o in store.find(Stock, sector="tech").objects()] == [Stock, Etf]

    def test_query_errors(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks(3))
        bad: list[Callable[[], Any]] = [
            lambda: store.find(Stock, volume=3),  # not indexed
            lambda: store.find(Security, sector="tech"),  # a family with no index
            lambda: store.find(Stock, price__near=3),
            lambda: store.find(Stock, sector=["tech"]),
            lambda: store.find(Stock, sector__in="tech"),
            lambda: store.find(Stock, sector__startswith=3),
            lambda: store.find(Stock, price=math.nan),
            lambda: store.find(Stock).order_by("volume"),
            lambda: store.find(Stock).order_by(),
        ]
        for call in bad:
            with pytest.raises(QueryError) as caught:
                call()
            assert isinstance(caught.value, StoreError)
            assert isinstance(caught.value, ValueError)
        with pytest.raises(QueryError, match="reindex"):
            store.find(Stock, volume=3)

    # ------------------------------------------------------------------ indexes follow the records

    def test_indexes_follow_put_patch_incr_unset_and_delete(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks(8))
        store.put(Stock(ssm_id="S00", sector="util", price=100.0))
        assert "S00" not in list(store.find(Stock, sector="tech"))
        assert list(store.find(Stock, price__gte=50)) == ["S00"]
        store.patch(Stock, "S01", {"sector": "tech"})
        assert "S01" in list(store.find(Stock, sector="tech"))
        assert list(store.find(Stock, rating=5)) == ["S05"]
        store.incr(Stock, "S05", "rating", 1)
        assert list(store.find(Stock, rating=5)) == []
        assert list(store.find(Stock, rating=6)) == ["S05", "S06"]
        store.patch(Stock, "S06", {"rating": UNSET})
        assert list(store.find(Stock, rating=6)) == ["S05"]
        assert "S06" not in list(store.find(Stock, rating__ne=1))
        store.batch_patch(Stock, [{"ssm_id": "S02", "price": 60}, {"ssm_id": "S03", "price": 70.0}])
        assert list(store.find(Stock, price__gte=50).order_by("price")) == ["S02", "S03", "S00"]
        store.delete(Stock, "S03")
        store.batch_delete(Stock, ["S02"])
        assert list(store.find(Stock, price__gte=50)) == ["S00"]
        assert store.find(Stock, price__gte=50).count() == 1

    def test_indexes_follow_clear_and_expiry(self) -> None:
        self.finding()
        store = self.make(lifetime=lambda r: 10 if r["ssm_id"] < "S04" else None)
        store.batch_put(stocks(8))
        assert store.find(Stock, rating__lt=100).count() == 8
        self.clock.tick(11)
        assert list(store.find(Stock, rating__lt=100)) == [f"S{i:02d}" for i in range(4, 8)]
        assert store.find(Stock).count() == 4
        assert store.clear(Stock) == self.cleared(4)
        assert list(store.find(Stock)) == []
        assert store.find(Stock, sector="tech").count() == 0

    def test_find_matches_plain_python_after_random_writes(self, store: BaseStore) -> None:
        """Seeded: random puts, patches, increments, removals and deletes, then random queries."""
        self.finding()
        rng = random.Random(1207)
        held: dict[str, Stock] = {}
        values: list[Any] = ["a", "ab", "b", "", "\u00e9", 0, 1, -1, 2.5, 1.0, -0.0, 1e300, True, False, None]

        def attrs() -> dict[str, Any]:
            return {name: rng.choice(values) for name in ("sector", "price", "rating") if rng.random() < 0.8}

        for _ in range(300):
            key = f"K{rng.randrange(60):02d}"
            move = rng.random()
            if move < 0.4:
                held[key] = Stock(ssm_id=key, **attrs())
                store.put(held[key])
            elif move < 0.6:
                changes = attrs()
                if key in held and rng.random() < 0.3:
                    changes["sector"] = UNSET
                store.patch(Stock, key, changes)
                record = held.setdefault(key, Stock(ssm_id=key))
                for name, change in changes.items():
                    if change is UNSET:
                        record.pop(name, None)
                    else:
                        record[name] = change
            elif move < 0.75:
                if type(held.get(key, Stock()).get("rating", 0)) in (int, float):
                    got = store.incr(Stock, key, "rating", 2)
                    record = held.setdefault(key, Stock(ssm_id=key))
                    record["rating"] = record.get("rating", 0) + 2
                    assert got == record["rating"]
            else:
                store.delete(Stock, key)
                held.pop(key, None)
        records = list(held.values())
        for _ in range(60):
            attr = rng.choice(["sector", "price", "rating"])
            op = rng.choice(["eq", "ne", "in", "gt", "gte", "lt", "lte", "startswith"])
            if op == "startswith":
                value: Any = rng.choice(["", "a", "b"])
            elif op == "in":
                value = rng.sample([v for v in values if v is not None], 3)
            else:
                value = rng.choice([v for v in values if v is not None])
            if op in ("gt", "gte", "lt", "lte") and type(value) is bool:
                continue
            name = attr if op == "eq" else f"{attr}__{op}"
            assert sorted(store.find(Stock, **{name: value})) == expected(records, **{name: value}), name

    def test_indexes_stay_exact_under_concurrent_patches(self, store: BaseStore) -> None:
        """Threads patch the indexed attributes of a few records at once; the index then agrees with every record."""
        self.finding()
        if not self.shared_between_threads:
            pytest.skip("shared_between_threads is false: each thread sees its own records")
        keys = [f"K{i}" for i in range(12)]
        store.batch_put([Stock(ssm_id=k, sector="start", rating=0) for k in keys])
        increments: list[int] = []  # list.append is atomic: one entry per increment made

        def work(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(60):
                key = rng.choice(keys)
                if rng.random() < 0.5:
                    store.patch(Stock, key, {"sector": rng.choice(SECTORS)})
                else:
                    store.incr(Stock, key, "rating", 1)
                    increments.append(1)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        records = [r for r in store.batch_get(Stock, keys) if r is not None]
        assert sum(r["rating"] for r in records) == len(increments), "an increment was lost"
        for sector in ["start", *SECTORS]:
            assert sorted(store.find(Stock, sector=sector)) == sorted(
                r["ssm_id"] for r in records if r["sector"] == sector
            )
        for rating in range(0, 60):
            want = sorted(r["ssm_id"] for r in records if r["rating"] == rating)
            assert sorted(store.find(Stock, rating=rating)) == want

    # ------------------------------------------------------------------ reset

    def test_reset_replaces_every_record_and_counts_them(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put(stocks(10))
        new = [Stock(ssm_id=f"N{i}", sector="new", price=float(i)) for i in range(5)]
        assert store.reset(Stock, [*new, Etf(ssm_id="N9", sector="new")]) == 6
        assert sorted(store.keys(Stock)) == ["N0", "N1", "N2", "N3", "N4", "N9"]
        assert store.count(Stock) == 6
        assert store.get(Stock, "S01") is None
        assert store.get(Stock, "N2") == new[2]
        assert type(store.get(Stock, "N9")) is Etf
        assert list(store.find(Stock, sector="tech")) == []
        assert store.find(Stock, sector="new").count() == 6
        assert store.reset(Stock, []) == 0
        assert list(store.keys(Stock)) == []

    def test_reset_checks_everything_before_changing_anything(self, store: BaseStore) -> None:
        self.finding()
        store.batch_put([Coded(ssm_id="A", isin="X1"), Coded(ssm_id="B", isin="X2")])
        with pytest.raises(InvalidKeyError):
            store.reset(Coded, [Coded(ssm_id="C", isin="X9"), Coded(ssm_id="D", isin="X9")])
        with pytest.raises(SerializationError):
            store.reset(Coded, [Coded(ssm_id="C", isin="X8"), Coded(ssm_id="D", isin="X7", bad=object())])
        with pytest.raises(UnsupportedOperationError):
            store.reset(Etf, [])
        assert sorted(store.keys(Coded)) == ["A", "B"]
        assert store.reset(Coded, [Coded(ssm_id="C", isin="X1")]) == 1
        assert store.get(Coded, {"isin": "X1"}) == Coded(ssm_id="C", isin="X1")
        assert store.get(Coded, {"isin": "X2"}) is None

    def test_find_and_reset_work_or_are_refused_as_finds_says(self, store: BaseStore) -> None:
        store.put(Stock(ssm_id="A", sector="tech"))
        if self.finds:
            assert list(store.find(Stock, sector="tech")) == ["A"]
            assert store.reset(Stock, [Stock(ssm_id="B", sector="tech")]) == 1
            assert list(store.find(Stock, sector="tech")) == ["B"]
            return
        with pytest.raises(UnsupportedOperationError):
            list(store.find(Stock, sector="tech"))
        with pytest.raises(UnsupportedOperationError):
            store.reset(Stock, [])
        assert store.get(Stock, "A") == Stock(ssm_id="A", sector="tech")

    # ------------------------------------------------------------------ incr and UNSET

    def test_incr_keeps_ints_and_floats_and_starts_at_zero(self, store: BaseStore) -> None:
        store.put(Stock(ssm_id="A", hits=1, weight=0.5, name="x", flag=True))
        got = store.incr(Stock, "A", "hits", 2)
        assert (type(got), got) == (int, 3)
        got = store.incr(Stock, "A", "weight", 2)
        assert (type(got), got) == (float, 2.5)
        got = store.incr(Stock, "A", "new")
        assert (type(got), got) == (int, 1)
        got = store.incr(Stock, "B", "level", 0.25)  # a missing record starts at 0 too
        assert (type(got), got) == (float, 0.25)
        assert store.get(Stock, "B") == Stock(ssm_id="B", level=0.25)
        got = store.incr(Stock, "A", "hits", -10)
        assert (type(got), got) == (int, -7)
        assert store.get(Stock, "A") == Stock(ssm_id="A", hits=-7, weight=2.5, name="x", flag=True, new=1)

    def test_incr_refuses_what_is_no_number_and_overflow(self, store: BaseStore) -> None:
        store.put(Stock(ssm_id="A", name="x", flag=True, big=2**63 - 2))
        for attr, amount in (("name", 1), ("flag", 1), ("big", 5), ("hits", True), ("hits", "1"), ("hits", None)):
            with pytest.raises(SerializationError):
                store.incr(Stock, "A", attr, amount)  # type: ignore[arg-type]
        assert store.incr(Stock, "A", "big", 1) == 2**63 - 1
        with pytest.raises(InvalidKeyError):
            store.incr(Stock, "A", "ssm_id", 1)
        assert store.get(Stock, "A") == Stock(ssm_id="A", name="x", flag=True, big=2**63 - 1)

    def test_incr_from_threads_loses_nothing(self, store: BaseStore) -> None:
        if not self.shared_between_threads:
            pytest.skip("shared_between_threads is false: each thread sees its own records")

        def work() -> None:
            for _ in range(100):
                store.incr(Stock, "A", "hits", 1)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.get(Stock, "A") == Stock(ssm_id="A", hits=400)

    def test_unset_removes_an_attribute(self, store: BaseStore) -> None:
        store.put(Stock(ssm_id="A", sector="tech", price=1.5, **{f"f{i}": float(i) for i in range(40)}))
        store.patch(Stock, "A", {"sector": UNSET, "f3": UNSET, "f4": 9.5})
        want = Stock(ssm_id="A", price=1.5, **{f"f{i}": float(i) for i in range(40) if i != 3})
        want["f4"] = 9.5
        got = store.get(Stock, "A")
        assert got == want
        assert {"sector", "f3"}.isdisjoint(got or {})
        store.patch(Stock, "A", {"missing": UNSET})
        assert store.get(Stock, "A") == want
        store.batch_patch(Stock, [{"ssm_id": "A", "price": UNSET}])
        assert "price" not in (store.get(Stock, "A") or {})
        with pytest.raises(InvalidKeyError):
            store.patch(Stock, "A", {"ssm_id": UNSET})

    def test_unset_frees_an_alternate_key(self, store: BaseStore) -> None:
        store.put(Coded(ssm_id="A", isin="X1"))
        store.patch(Coded, "A", {"isin": UNSET})
        assert store.get(Coded, {"isin": "X1"}) is None
        store.put(Coded(ssm_id="B", isin="X1"))
        assert store.get(Coded, {"isin": "X1"}) == Coded(ssm_id="B", isin="X1")
