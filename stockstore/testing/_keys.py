"""Key values, composite and alternate keys, and listing: keys, count, clear (see Keys and Values in Concepts)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import BatchError, InvalidKeyError, UnsupportedOperationError
from ._base import SuiteBase
from ._exact import assert_record, assert_same
from ._records import HOSTILE_KEYS, Listing, Quote, Security, Text


class KeyTests(SuiteBase):
    def test_hostile_key_values_never_collide(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id=k, k=k) for k in HOSTILE_KEYS])
        for key, got in zip(HOSTILE_KEYS, store.batch_get(Security, HOSTILE_KEYS), strict=True):
            assert got is not None, f"lost {key!r:.40}"
            assert_same(got["k"], key)
            assert_same(got["ssm_id"], key)
        self.assert_holds(store, Security, HOSTILE_KEYS)

    def test_hostile_composite_and_alternate_keys(self, store: BaseStore) -> None:
        parts = ["a", "a:", ":a", "", ":", "\x00", "*", 1, "1"]
        recs = [Listing(exchange=e, ticker=t, isin=f"{e!r}|{t!r}") for e in parts for t in parts]
        store.batch_put(recs)
        self.assert_holds(store, Listing, [(r["exchange"], r["ticker"]) for r in recs])
        for rec in recs:
            assert_record(store.get(Listing, (rec["exchange"], rec["ticker"])), rec)
            assert_record(store.get(Listing, {"isin": rec["isin"]}), rec)

    def test_str_and_int_keys_differ(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="1", v="str"))
        store.put(Security(ssm_id=1, v="int"))
        assert_same(store.get(Security, "1")["v"], "str")  # type: ignore[index]
        assert_same(store.get(Security, 1)["v"], "int")  # type: ignore[index]
        self.assert_holds(store, Security, ["1", 1])
        store.delete(Security, 1)
        assert store.get(Security, 1) is None
        assert store.get(Security, "1") is not None

    @pytest.mark.parametrize("bad", [True, False, 1.0, math.nan, None, b"x", 2**63, -(2**63) - 1, ["x"], Text("x")])
    def test_bad_key_values_are_refused(self, store: BaseStore, bad: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store.put(Security(ssm_id=bad))
        with pytest.raises(InvalidKeyError):
            store.get(Security, bad)
        with pytest.raises(InvalidKeyError):
            store.batch_get(Security, ["ok", bad])
        with pytest.raises(InvalidKeyError):
            store.patch(Security, bad, {"a": 1})
        with pytest.raises(InvalidKeyError):
            store.delete(Security, bad)
        with pytest.raises(InvalidKeyError):
            store.put(Listing(exchange="X", ticker="T", isin=bad if bad is not None else 1.5))
        self.assert_holds(store, Security, [], among=["ok"])
        self.assert_holds(store, Listing, [], among=[("X", "T")])

    def test_bad_key_shapes_are_refused(self, store: BaseStore) -> None:
        for key in [("X",), ("X", "T", "U"), "X", {"exchange": "X"}, {"isin": "I", "exchange": "X"}, {"nope": 1}]:
            with pytest.raises(InvalidKeyError):
                store.get(Listing, key)
        with pytest.raises(InvalidKeyError):
            store.put(Listing(exchange="X"))
        with pytest.raises(InvalidKeyError):
            store.put(Security(other="x"))

    def test_composite_keys_are_tuples(self, store: BaseStore) -> None:
        recs = [Listing(exchange=e, ticker=t) for e in ["X", "Y"] for t in ["A", 1]]
        store.batch_put(recs)
        self.assert_holds(store, Listing, [(r["exchange"], r["ticker"]) for r in recs])
        if self.lists_keys:
            assert all(type(k) is tuple for k in store.keys(Listing))
        assert_record(store.get(Listing, ("Y", 1)), recs[3])
        assert_record(store.get(Listing, {"ticker": 1, "exchange": "Y"}), recs[3])
        assert store.get(Listing, ("Y", "1")) is None

    def test_get_by_alternate_key(self, store: BaseStore) -> None:
        q = Quote("AAPL", "XNAS", "AAPL", 1.5)
        store.put(q)
        assert_record(store.get(Quote, {"exchange": "XNAS", "ticker": "AAPL"}), q)
        assert_record(store.get(Quote, {"symbol": "AAPL"}), q)
        assert store.get(Quote, {"exchange": "XNAS", "ticker": "MSFT"}) is None

    def test_changing_an_alternate_key_frees_the_old_value(self, store: BaseStore) -> None:
        store.put(Quote("A", "X", "T1", 1.0))
        store.put(Quote("A", "X", "T2", 1.0))
        assert store.get(Quote, {"exchange": "X", "ticker": "T1"}) is None
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T2"}), Quote("A", "X", "T2", 1.0))
        other = Quote("B", "X", "T1", 2.0)
        store.put(other)
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T1"}), other)

    def test_unset_alternate_key_is_not_indexed(self, store: BaseStore) -> None:
        store.batch_put([Listing(exchange="X", ticker="A"), Listing(exchange="X", ticker="B", isin=None)])
        self.assert_holds(store, Listing, [("X", "A"), ("X", "B")])
        store.put(Listing(exchange="X", ticker="A", isin="I"))
        store.put(Listing(exchange="X", ticker="A"))
        store.put(Listing(exchange="X", ticker="C", isin="I"))  # freed by the put above

    def test_two_records_cannot_hold_one_alternate_key(self, store: BaseStore) -> None:
        first = Quote("A", "X", "T", 1.0)
        store.put(first)
        with pytest.raises(InvalidKeyError):
            store.put(Quote("B", "X", "T", 2.0))
        assert store.get(Quote, "B") is None
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T"}), first)

    def test_two_records_in_one_batch_cannot_hold_one_alternate_key(self, store: BaseStore) -> None:
        with pytest.raises(BatchError) as info:
            store.batch_put([Quote("A", "X", "T", 1.0), Quote("B", "X", "T", 2.0)])
        assert len(info.value.failed) == 1
        (failed,) = info.value.failed
        assert failed in ("A", "B")
        self.assert_holds(store, Quote, ["B" if failed == "A" else "A"], among=[failed])
        assert store.get(Quote, failed) is None

    def test_deleted_record_frees_its_alternate_key(self, store: BaseStore) -> None:
        store.put(Quote("A", "X", "T", 1.0))
        store.delete(Quote, {"exchange": "X", "ticker": "T"})
        store.put(Quote("B", "X", "T", 2.0))
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T"}), Quote("B", "X", "T", 2.0))

    def test_keys_count_clear(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id=i) for i in range(25)] + [Listing(exchange="X", ticker="T")])
        if self.lists_keys:
            assert sorted(store.keys(Security)) == list(range(25))
            assert store.count(Security) == 25
        else:
            with pytest.raises(UnsupportedOperationError):
                list(store.keys(Security))
            with pytest.raises(UnsupportedOperationError):
                store.count(Security)
        assert store.clear(Security) == self.cleared(25)
        self.assert_holds(store, Security, [], among=range(25))
        assert store.get(Security, 3) is None
        self.assert_holds(store, Listing, [("X", "T")])
        assert store.clear(Security) == 0

    def test_undeclared_class_is_refused(self, store: BaseStore) -> None:
        class Loose:
            pass

        obj = Loose()
        obj.k = "x"  # type: ignore[attr-defined]
        with pytest.raises(InvalidKeyError):
            store.put(obj)
        with pytest.raises(InvalidKeyError):
            store.get(Loose, "x")
