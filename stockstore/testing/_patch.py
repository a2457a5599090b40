"""patch and batch_patch: set and add attributes, keep the rest, atomically per record."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import BatchError, InvalidKeyError, SerializationError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import IST, UNSUPPORTED, Bond, Counter, Listing, Quote, Security

THREADS, ROUNDS = 8, 30


def run_concurrently(one_round: Callable[[int, int], None]) -> None:
    """Run ``one_round(thread, round)`` ROUNDS times on each of THREADS threads at once."""
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for r in range(ROUNDS):
                one_round(t, r)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


class PatchTests(SuiteBase):
    KEPT: dict[str, Any] = {  # noqa: RUF012 -- read-only table of awkward values
        "one_float": 1.0,
        "one_int": 1,
        "neg_zero": -0.0,
        "big": 2**62 + 1,
        "nan": math.nan,
        "empty": {},
        "raw": b"\x00\xff",
        "nested": {"a": [1, {"b": 2.5}]},
        "when": dt.datetime(2020, 1, 1, tzinfo=IST),
        "dec": decimal.Decimal("-0.00"),
        "nothing": None,
    }

    def test_patch_sets_adds_and_keeps_everything_else(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="x", a1=0.42, a2=-1.3, **self.KEPT))
        store.patch(Security, "x", {"a1": 9.99, "new_attr": 4.3, "nested": [1]})
        want = Security(ssm_id="x", a1=9.99, a2=-1.3, **{**self.KEPT, "new_attr": 4.3, "nested": [1]})
        assert_record(store.get(Security, "x"), want)

    def test_patch_creates_a_missing_record(self, store: BaseStore) -> None:
        store.patch(Security, "new", {"a1": 1.0})
        assert_record(store.get(Security, "new"), Security(ssm_id="new", a1=1.0))
        store.patch(Listing, ("X", 7), {"v": 1})
        assert_record(store.get(Listing, ("X", 7)), Listing(exchange="X", ticker=7, v=1))

    def test_patch_by_key_mapping(self, store: BaseStore) -> None:
        store.patch(Security, {"ssm_id": "x"}, {"a": 1})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))

    def test_patch_keeps_the_stored_subclass(self, store: BaseStore) -> None:
        store.put(Bond(ssm_id="b", coupon=0.05))
        store.patch(Security, "b", {"coupon": 0.06})
        assert_record(store.get(Security, "b"), Bond(ssm_id="b", coupon=0.06))

    def test_patch_a_dataclass(self, store: BaseStore) -> None:
        store.put(Quote("q", "X", "T", 1.0))
        store.patch(Quote, "q", {"price": 2.0})
        assert_record(store.get(Quote, "q"), Quote("q", "X", "T", 2.0))

    def test_patch_with_the_same_key_value_is_fine(self, store: BaseStore) -> None:
        store.patch(Security, "x", {"ssm_id": "x", "a": 1})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))

    def test_patch_cannot_change_the_primary_key(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="x", a=1))
        with pytest.raises(InvalidKeyError):
            store.patch(Security, "x", {"ssm_id": "y"})
        store.put(Security(ssm_id=1))
        for same_but_not_the_key in [True, 1.0, "1"]:
            with pytest.raises(InvalidKeyError):
                store.patch(Security, 1, {"ssm_id": same_but_not_the_key})
        assert_record(store.get(Security, 1), Security(ssm_id=1))
        with pytest.raises(InvalidKeyError):
            store.batch_patch(Listing, [{"exchange": "X", "ticker": "T", "a": 1}, {"exchange": "X", "a": 2}])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))
        assert store.get(Security, "y") is None
        self.assert_holds(store, Listing, [], among=[("X", "T")])

    @pytest.mark.parametrize("bad", ["set", "int_2_63", "dict_int_keys", "object"])
    def test_unencodable_patch_changes_nothing(self, store: BaseStore, bad: str) -> None:
        store.put(Security(ssm_id="x", a=1))
        with pytest.raises(SerializationError):
            store.patch(Security, "x", {"a": 2, "b": UNSUPPORTED[bad]})
        with pytest.raises(SerializationError):
            store.batch_patch(Security, [{"ssm_id": "y", "a": 2}, {"ssm_id": "x", "b": UNSUPPORTED[bad]}])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))
        assert store.get(Security, "y") is None

    def test_batch_patch_upserts_each(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id=f"s{i}", a=i, b=-0.0) for i in range(10)])
        store.batch_patch(Security, [{"ssm_id": f"s{i}", "a": i * 1.5, "c": "new"} for i in range(5, 15)])
        for i in range(15):
            want = Security(ssm_id=f"s{i}", a=i, b=-0.0) if i < 5 else Security(ssm_id=f"s{i}", a=i * 1.5, c="new")
            if 5 <= i < 10:
                want["b"] = -0.0
            assert_record(store.get(Security, f"s{i}"), want)

    def test_batch_patch_merges_repeated_keys(self, store: BaseStore) -> None:
        store.batch_patch(Security, [{"ssm_id": "x", "a": 1}, {"ssm_id": "x", "b": 2}, {"ssm_id": "x", "a": 3}])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=3, b=2))

    def test_batch_patch_composite_key(self, store: BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="I", v=1.0))
        store.batch_patch(Listing, [{"exchange": "X", "ticker": "T", "v": 2.0}])
        assert_record(store.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="T", isin="I", v=2.0))

    def test_patch_alternate_key_moves_the_index(self, store: BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="OLD"))
        store.patch(Listing, ("X", "T"), {"isin": "NEW"})
        assert store.get(Listing, {"isin": "OLD"}) is None
        assert_record(store.get(Listing, {"isin": "NEW"}), Listing(exchange="X", ticker="T", isin="NEW"))
        store.put(Listing(exchange="X", ticker="U", isin="OLD"))  # the old value is free again

    def test_patch_into_a_held_alternate_key_is_refused(self, store: BaseStore) -> None:
        store.batch_put([Listing(exchange="X", ticker="A", isin="IA"), Listing(exchange="X", ticker="B", isin="IB")])
        with pytest.raises(InvalidKeyError):
            store.patch(Listing, ("X", "B"), {"isin": "IA"})
        with pytest.raises(BatchError) as info:
            store.batch_patch(
                Listing,
                [{"exchange": "X", "ticker": "B", "isin": "IA"}, {"exchange": "X", "ticker": "C", "v": 1}],
            )
        assert info.value.failed == [("X", "B")]
        assert_record(store.get(Listing, {"isin": "IB"}), Listing(exchange="X", ticker="B", isin="IB"))
        assert_record(store.get(Listing, ("X", "C")), Listing(exchange="X", ticker="C", v=1))

    def test_concurrent_patches_of_different_attributes_lose_nothing(self, store: BaseStore) -> None:
        if not self.shared_between_threads:
            pytest.skip("shared_between_threads is false: each thread sees its own records")
        store.put(Counter(n=1))

        def patch_round(t: int, r: int) -> None:
            store.patch(Counter, 1, {f"t{t}": r})
            store.batch_patch(Counter, [{"n": 1, f"u{t}": r}, {"n": 2, f"u{t}": r}])

        run_concurrently(patch_round)
        last = {f"t{t}": ROUNDS - 1 for t in range(THREADS)}
        both = {f"u{t}": ROUNDS - 1 for t in range(THREADS)}
        assert_record(store.get(Counter, 1), Counter(n=1, **last, **both))
        assert_record(store.get(Counter, 2), Counter(n=2, **both))
