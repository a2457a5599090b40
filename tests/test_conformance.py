"""The conformance suite: API.md sections 1, 2 and 4, written once, run on every backend.

Every test takes the parametrised ``store`` (or ``store_factory``) fixture from
conftest.py. A new backend joins by adding one fixture entry to ``BACKENDS`` there;
nothing in this file changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from conftest import FakeClock, StoreFactory

import stockstore as ss
from stockstore.errors import BatchError, InvalidKeyError, SerializationError, StoreError
from stockstore.testing import assert_record, assert_same, expected

# ---------------------------------------------------------------------------- storable classes


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(ss.Record):
    """Composite primary key and one alternate key."""

    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


class Bond(Security):
    pass


class Callable_(Bond):
    pass


class Equity(Security):
    pass


class InitCounter:
    calls = 0


@dataclasses.dataclass
class Quote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol", ("exchange", "ticker")]
    symbol: str
    exchange: str
    ticker: str
    price: float

    def __post_init__(self) -> None:
        InitCounter.calls += 1


@dataclasses.dataclass(frozen=True)
class FrozenQuote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: Any

    def __post_init__(self) -> None:
        InitCounter.calls += 1


@dataclasses.dataclass(slots=True)
class SlotQuote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: Any

    def __post_init__(self) -> None:
        InitCounter.calls += 1


class Plain:
    __stockstore_keys__: ClassVar[list[Any]] = ["ident"]

    def __init__(self, ident: Any, **attrs: Any) -> None:
        InitCounter.calls += 1
        self.ident = ident
        vars(self).update(attrs)


class Counter(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["n"]


# ---------------------------------------------------------------------------- values

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
NEG = dt.timezone(-dt.timedelta(hours=9, minutes=45))

VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int_zero": 0,
    "int_one": 1,
    "float_one": 1.0,
    "float_zero": 0.0,
    "neg_zero": -0.0,
    "nan": math.nan,
    "neg_nan": -math.nan,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "float_max": 1.7976931348623157e308,
    "float_subnormal": 5e-324,
    "float_third": 1 / 3,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "int64_neg_max": -(2**63 - 1),
    "int_2_62_plus_1": 2**62 + 1,
    "str_empty": "",
    "str_unicode": "é€😀\u200b\x00 :*{\n",
    "bytes_empty": b"",
    "bytes": bytes(range(256)),
    "datetime_naive": dt.datetime(2024, 2, 29, 23, 59, 58, 999999),
    "datetime_utc": dt.datetime(2024, 2, 29, 23, 59, 58, 1, tzinfo=UTC),
    "datetime_ist": dt.datetime(1999, 12, 31, 12, 0, tzinfo=IST),
    "datetime_negative_offset": dt.datetime(1970, 1, 1, tzinfo=NEG),
    "datetime_min": dt.datetime.min,
    "datetime_max": dt.datetime.max,
    "date": dt.date(2024, 2, 29),
    "date_min": dt.date.min,
    "decimal": decimal.Decimal("1.10"),
    "decimal_neg_zero": decimal.Decimal("-0.00"),
    "decimal_nan": decimal.Decimal("NaN"),
    "decimal_inf": decimal.Decimal("-Infinity"),
    "decimal_exponent": decimal.Decimal("1E+30"),
    "decimal_long": decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
    "list_empty": [],
    "dict_empty": {},
    "tuple": (1, 1.0, "1", (2, (3,))),
    "nested": {"a": [1, 2.0, {"b": [None, True, b"x", {"c": -0.0}]}], "": {"": []}, "d": dt.date(2000, 1, 1)},
    "list_mixed": [1, 1.0, True, None, "1", b"1", decimal.Decimal("1"), dt.date(2001, 1, 1)],
}


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def _unsupported() -> dict[str, Any]:
    values: dict[str, Any] = {
        "set": {1, 2},
        "frozenset": frozenset(),
        "object": object(),
        "int_2_63": 2**63,
        "int_below_min": -(2**63) - 1,
        "dict_int_keys": {1: "a"},
        "dict_tuple_keys": {(1,): "a"},
        "complex": 1j,
        "bytearray": bytearray(b"x"),
        "int_enum": Colour.RED,
        "str_subclass": Text("x"),
        "timedelta": dt.timedelta(1),
        "time": dt.time(1),
        "nested_set": {"a": [1, {"b": {2}}]},
        "nested_big_int": [[2**64]],
        "nested_int_key": {"a": {"b": {3: 4}}},
        "record": Security(ssm_id="x"),
        "function": len,
    }
    try:
        import numpy as np
    except ImportError:  # numpy is optional; its scalars are tested where it is installed
        return values
    values.update(
        {
            "numpy_float64": np.float64(1.0),
            "numpy_int64": np.int64(1),
            "numpy_bool": np.bool_(True),
            "numpy_array": np.zeros(2),
        }
    )
    return values


UNSUPPORTED = _unsupported()

HOSTILE_KEYS: list[Any] = [
    "",
    " ",
    "a b",
    ":",
    "a:b",
    "*",
    "a*",
    "{",
    "{a}",
    "}",
    "\n",
    "a\nb",
    "\r\n",
    "\x00",
    "a\x00b",
    "é",
    "e\u0301",
    "😀",
    "'",
    '"',
    "';DROP TABLE x;--",
    "%",
    "_",
    "\\",
    "/",
    "NULL",
    "None",
    "1",
    "01",
    "1.0",
    "-1",
    "x" * 5000,
    "ü" * 3000,
    1,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**31,
    2**32,
]


def _snapshot(store: ss.BaseStore, cls: type, keys: list[Any]) -> list[Any]:
    return store.batch_get(cls, keys)


def _make(cls: type, key: Any, price: Any) -> Any:
    if cls is Security:
        return Security(ssm_id=key, price=price)
    if cls is Quote:
        return Quote(symbol=key, exchange="X", ticker=f"T{key}", price=price)
    if cls is Plain:
        return Plain(key, price=price)
    return cls(symbol=key, price=price)


STORABLE = [Security, Quote, FrozenQuote, SlotQuote, Plain]


# ---------------------------------------------------------------------------- tests


class TestPutGet:
    @pytest.mark.parametrize("name", list(VALUES))
    def test_value_round_trips_with_its_type(self, store: ss.BaseStore, name: str) -> None:
        store.put(Security(ssm_id="x", value=VALUES[name]))
        got = store.get(Security, "x")
        assert got is not None
        assert type(got) is Security
        assert_same(got["value"], expected(VALUES[name]))

    def test_every_value_in_one_wide_record(self, store: ss.BaseStore) -> None:
        sec = Security(ssm_id="wide", **VALUES, **{f"a{i}": i / 7 for i in range(300)})
        store.put(sec)
        assert_record(store.get(Security, "wide"), sec)

    @pytest.mark.parametrize("cls", STORABLE, ids=lambda c: c.__name__)
    def test_class_comes_back_without_init(self, store: ss.BaseStore, cls: type) -> None:
        obj = _make(cls, "s1", 1.5)
        calls = InitCounter.calls
        store.put(obj)
        got = store.get(cls, "s1")
        assert InitCounter.calls == calls, "__init__ / __post_init__ ran while storing or rebuilding"
        assert_record(got, obj)

    def test_plain_class_whose_init_raises(self, store: ss.BaseStore) -> None:
        class Hostile:
            __stockstore_keys__: ClassVar[list[Any]] = ["k"]

            def __init__(self) -> None:
                raise AssertionError("__init__ must not be called")

        obj = object.__new__(Hostile)
        obj.k, obj.v = "k", [1.0]  # type: ignore[attr-defined]
        store.put(obj)
        assert_record(store.get(Hostile, "k"), obj)

    def test_awkward_attribute_names(self, store: ss.BaseStore) -> None:
        names = ["", " ", "ssm_id ", "SSM_ID", "a" * 300, "é", "\x00", "__class__", "__dict__", "0", "a.b", "k:v"]
        rec = Security(ssm_id="x", **{name: i for i, name in enumerate(names)})
        store.put(rec)
        assert_record(store.get(Security, "x"), rec)
        store.patch(Security, "x", {n: -1.0 for n in names})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", **{n: -1.0 for n in names}))

    def test_put_replaces_the_whole_record(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="x", a=1, b=2))
        store.put(Security(ssm_id="x", c=3.0))
        assert_record(store.get(Security, "x"), Security(ssm_id="x", c=3.0))
        assert store.count(Security) == 1

    def test_missing_is_none(self, store: ss.BaseStore) -> None:
        assert store.get(Security, "nope") is None
        assert store.get(Listing, ("X", "T")) is None
        assert store.get(Listing, {"isin": "I"}) is None

    def test_each_get_is_a_new_object(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="x", a=[1]))
        first, second = store.get(Security, "x"), store.get(Security, "x")
        assert first is not None
        assert second is not None
        assert first is not second
        assert first["a"] is not second["a"]

    def test_delete_by_object_and_by_key(self, store: ss.BaseStore) -> None:
        a, b = Security(ssm_id="a"), Security(ssm_id="b")
        store.batch_put([a, b])
        store.delete(a)
        store.delete(Security, "b")
        assert store.get(Security, "a") is None
        assert store.get(Security, "b") is None
        assert store.count(Security) == 0
        store.delete(Security, "b")  # absent is fine
        store.delete(a)

    def test_delete_by_alternate_key(self, store: ss.BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="I"))
        store.delete(Listing, {"isin": "I"})
        assert store.get(Listing, ("X", "T")) is None

    def test_other_records_untouched(self, store: ss.BaseStore) -> None:
        keep = Security(ssm_id="keep", v=1.0)
        store.put(keep)
        store.put(Security(ssm_id="x"))
        store.delete(Security, "x")
        assert_record(store.get(Security, "keep"), keep)

    def test_context_manager(self, store_factory: StoreFactory) -> None:
        with store_factory() as store:
            store.put(Security(ssm_id="x"))
            assert store.get(Security, "x") is not None


class TestBatches:
    def test_batch_get_aligned_with_none_for_missing(self, store: ss.BaseStore) -> None:
        recs = [Security(ssm_id=f"s{i}", v=float(i)) for i in range(50)]
        store.batch_put(recs)
        keys = ["s3", "missing", "s49", "s3", "s0", "also-missing"]
        got = store.batch_get(Security, keys)
        assert len(got) == len(keys)
        by_id = {r["ssm_id"]: r for r in recs}
        for key, obj in zip(keys, got, strict=True):
            if key in by_id:
                assert_record(obj, by_id[key])
            else:
                assert obj is None
        assert got[0] is not got[3]

    def test_batch_get_mixes_key_forms(self, store: ss.BaseStore) -> None:
        a = Listing(exchange="X", ticker="A", isin="IA")
        b = Listing(exchange="X", ticker="B", isin="IB")
        store.batch_put([a, b])
        got = store.batch_get(Listing, [("X", "A"), {"isin": "IB"}, {"exchange": "X", "ticker": "B"}, {"isin": "IZ"}])
        assert_record(got[0], a)
        assert_record(got[1], b)
        assert_record(got[2], b)
        assert got[3] is None

    def test_empty_batches(self, store: ss.BaseStore) -> None:
        store.batch_put([])
        assert store.batch_get(Security, []) == []
        assert store.batch_delete([]) == 0
        assert store.batch_delete(Security, []) == 0
        store.batch_patch(Security, [])
        assert store.count(Security) == 0

    def test_last_duplicate_in_a_batch_wins(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id="x", v=1), Security(ssm_id="x", v=2)])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", v=2))
        assert store.count(Security) == 1

    def test_batch_of_mixed_families(self, store: ss.BaseStore) -> None:
        objs = [Security(ssm_id="x"), Quote("q", "X", "T", 1.0), Bond(ssm_id="b"), Listing(exchange="E", ticker="T")]
        store.batch_put(objs)
        assert_record(store.get(Security, "x"), objs[0])
        assert_record(store.get(Quote, "q"), objs[1])
        assert_record(store.get(Security, "b"), objs[2])
        assert_record(store.get(Listing, ("E", "T")), objs[3])
        assert store.batch_delete(objs) == 4

    def test_batch_delete_counts_only_existing(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id=f"s{i}") for i in range(5)])
        assert store.batch_delete(Security, ["s0", "s1", "nope", "s1"]) == 2
        assert store.batch_delete([Security(ssm_id="s2"), Security(ssm_id="nope")]) == 1
        assert sorted(store.keys(Security)) == ["s3", "s4"]
        assert store.batch_delete(Security, ["s0", "s2"]) == 0

    def test_large_batch(self, store: ss.BaseStore) -> None:
        recs = [Security(ssm_id=i, **{f"a{j}": i * j / 3 for j in range(20)}) for i in range(2000)]
        store.batch_put(recs)
        assert store.count(Security) == len(recs)
        got = store.batch_get(Security, range(2000))
        for obj, want in zip(got, recs, strict=True):
            assert_record(obj, want)
        assert store.batch_delete(Security, range(0, 2000, 2)) == 1000
        assert sorted(store.keys(Security)) == list(range(1, 2000, 2))

    @pytest.mark.parametrize("bad", ["set", "int_2_63", "dict_int_keys", "nested_set"])
    def test_unencodable_batch_writes_nothing(self, store: ss.BaseStore, bad: str) -> None:
        old = Security(ssm_id="s0", v="old")
        store.put(old)
        batch = [Security(ssm_id="s0", v="new"), Security(ssm_id="s1"), Security(ssm_id="s2", v=UNSUPPORTED[bad])]
        with pytest.raises(SerializationError):
            store.batch_put(batch)
        assert_record(store.get(Security, "s0"), old)
        assert store.get(Security, "s1") is None
        assert store.count(Security) == 1

    @pytest.mark.parametrize("bad_key", [None, 1.0, True, 2**63, b"k", ("a",)], ids=repr)
    def test_invalid_key_in_batch_writes_nothing(self, store: ss.BaseStore, bad_key: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store.batch_put([Security(ssm_id="s0"), Security(ssm_id=bad_key)])
        assert store.count(Security) == 0

    def test_alternate_key_conflict_fails_only_that_item(self, store: ss.BaseStore) -> None:
        holder = Listing(exchange="X", ticker="A", isin="TAKEN")
        store.put(holder)
        batch = [
            Listing(exchange="X", ticker="B", isin="IB"),
            Listing(exchange="X", ticker="C", isin="TAKEN"),
            Listing(exchange="X", ticker="D"),
        ]
        with pytest.raises(BatchError) as info:
            store.batch_put(batch)
        assert info.value.failed == [("X", "C")]
        assert_record(store.get(Listing, ("X", "B")), batch[0])
        assert_record(store.get(Listing, ("X", "D")), batch[2])
        assert store.get(Listing, ("X", "C")) is None
        assert_record(store.get(Listing, {"isin": "TAKEN"}), holder)


class TestPatch:
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

    def test_patch_sets_adds_and_keeps_everything_else(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="x", a1=0.42, a2=-1.3, **self.KEPT))
        store.patch(Security, "x", {"a1": 9.99, "new_attr": 4.3, "nested": [1]})
        want = Security(ssm_id="x", a1=9.99, a2=-1.3, **{**self.KEPT, "new_attr": 4.3, "nested": [1]})
        assert_record(store.get(Security, "x"), want)

    def test_patch_creates_a_missing_record(self, store: ss.BaseStore) -> None:
        store.patch(Security, "new", {"a1": 1.0})
        assert_record(store.get(Security, "new"), Security(ssm_id="new", a1=1.0))
        store.patch(Listing, ("X", 7), {"v": 1})
        assert_record(store.get(Listing, ("X", 7)), Listing(exchange="X", ticker=7, v=1))

    def test_patch_by_key_mapping(self, store: ss.BaseStore) -> None:
        store.patch(Security, {"ssm_id": "x"}, {"a": 1})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))

    def test_patch_keeps_the_stored_subclass(self, store: ss.BaseStore) -> None:
        store.put(Bond(ssm_id="b", coupon=0.05))
        store.patch(Security, "b", {"coupon": 0.06})
        assert_record(store.get(Security, "b"), Bond(ssm_id="b", coupon=0.06))

    def test_patch_a_dataclass(self, store: ss.BaseStore) -> None:
        store.put(Quote("q", "X", "T", 1.0))
        store.patch(Quote, "q", {"price": 2.0})
        assert_record(store.get(Quote, "q"), Quote("q", "X", "T", 2.0))

    def test_patch_with_the_same_key_value_is_fine(self, store: ss.BaseStore) -> None:
        store.patch(Security, "x", {"ssm_id": "x", "a": 1})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))

    def test_patch_cannot_change_the_primary_key(self, store: ss.BaseStore) -> None:
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
        assert store.count(Listing) == 0

    @pytest.mark.parametrize("bad", ["set", "int_2_63", "dict_int_keys", "object"])
    def test_unencodable_patch_changes_nothing(self, store: ss.BaseStore, bad: str) -> None:
        store.put(Security(ssm_id="x", a=1))
        with pytest.raises(SerializationError):
            store.patch(Security, "x", {"a": 2, "b": UNSUPPORTED[bad]})
        with pytest.raises(SerializationError):
            store.batch_patch(Security, [{"ssm_id": "y", "a": 2}, {"ssm_id": "x", "b": UNSUPPORTED[bad]}])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=1))
        assert store.get(Security, "y") is None

    def test_batch_patch_upserts_each(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id=f"s{i}", a=i, b=-0.0) for i in range(10)])
        store.batch_patch(Security, [{"ssm_id": f"s{i}", "a": i * 1.5, "c": "new"} for i in range(5, 15)])
        for i in range(15):
            want = Security(ssm_id=f"s{i}", a=i, b=-0.0) if i < 5 else Security(ssm_id=f"s{i}", a=i * 1.5, c="new")
            if 5 <= i < 10:
                want["b"] = -0.0
            assert_record(store.get(Security, f"s{i}"), want)

    def test_batch_patch_merges_repeated_keys(self, store: ss.BaseStore) -> None:
        store.batch_patch(Security, [{"ssm_id": "x", "a": 1}, {"ssm_id": "x", "b": 2}, {"ssm_id": "x", "a": 3}])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a=3, b=2))

    def test_batch_patch_composite_key(self, store: ss.BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="I", v=1.0))
        store.batch_patch(Listing, [{"exchange": "X", "ticker": "T", "v": 2.0}])
        assert_record(store.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="T", isin="I", v=2.0))

    def test_patch_alternate_key_moves_the_index(self, store: ss.BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="OLD"))
        store.patch(Listing, ("X", "T"), {"isin": "NEW"})
        assert store.get(Listing, {"isin": "OLD"}) is None
        assert_record(store.get(Listing, {"isin": "NEW"}), Listing(exchange="X", ticker="T", isin="NEW"))
        store.put(Listing(exchange="X", ticker="U", isin="OLD"))  # the old value is free again

    def test_patch_into_a_held_alternate_key_is_refused(self, store: ss.BaseStore) -> None:
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

    def test_concurrent_patches_of_different_attributes_lose_nothing(self, store: ss.BaseStore, backend: str) -> None:
        if backend == "threadlocal":
            pytest.skip("threads do not share a ThreadLocalStore")
        store.put(Counter(n=1))

        def patch_round(t: int, r: int) -> None:
            store.patch(Counter, 1, {f"t{t}": r})
            store.batch_patch(Counter, [{"n": 1, f"u{t}": r}, {"n": 2, f"u{t}": r}])

        _run_concurrently(patch_round)
        last = {f"t{t}": ROUNDS - 1 for t in range(THREADS)}
        both = {f"u{t}": ROUNDS - 1 for t in range(THREADS)}
        assert_record(store.get(Counter, 1), Counter(n=1, **last, **both))
        assert_record(store.get(Counter, 2), Counter(n=2, **both))

    def test_the_concurrency_test_has_teeth(self) -> None:
        """A naive get-then-put patch loses updates under the same load."""
        store = ss.backends.MemoryStore()
        store.put(Counter(n=1))

        def naive_round(t: int, r: int) -> None:
            current = store.get(Counter, 1)
            time.sleep(0.0005)  # the window a real backend's round trip opens
            store.put(Counter({**(current or {}), f"t{t}": r}))

        _run_concurrently(naive_round)
        got = store.get(Counter, 1)
        assert got is not None
        assert dict(got) != {"n": 1, **{f"t{t}": ROUNDS - 1 for t in range(THREADS)}}


THREADS, ROUNDS = 8, 30


def _run_concurrently(one_round: Callable[[int, int], None]) -> None:
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


class TestLifetimes:
    def test_number_of_seconds(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=10)
        store.put(Security(ssm_id="x"))
        clock.tick(9.5)
        assert store.get(Security, "x") is not None
        clock.tick(1)
        self._assert_gone(store, "x")

    def test_float_seconds(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=0.5)
        store.put(Security(ssm_id="x"))
        clock.tick(0.25)
        assert store.get(Security, "x") is not None
        clock.tick(0.5)
        self._assert_gone(store, "x")

    @pytest.mark.parametrize(
        "make",
        [
            lambda now: 100,
            lambda now: 100.0,
            lambda now: dt.timedelta(seconds=100),
            lambda now: dt.datetime.fromtimestamp(now + 100, UTC).replace(tzinfo=None),
            lambda now: dt.datetime.fromtimestamp(now + 100, IST),
        ],
        ids=["int", "float", "timedelta", "naive-datetime-is-utc", "aware-datetime"],
    )
    def test_callable_lifetime(
        self, store_factory: StoreFactory, clock: FakeClock, make: Callable[[float], Any]
    ) -> None:
        seen: list[Any] = []

        def lifetime(obj: Any) -> Any:
            seen.append(obj)
            return make(clock.now) if obj["short"] else None

        store = store_factory(lifetime=lifetime)
        store.batch_put([Security(ssm_id="short", short=True), Security(ssm_id="long", short=False)])
        assert {type(o) for o in seen} == {Security}
        assert {o["ssm_id"] for o in seen} >= {"short", "long"}
        clock.tick(99)
        assert store.get(Security, "short") is not None
        clock.tick(2)
        self._assert_gone(store, "short")
        clock.tick(10 * 365 * 86400)
        assert_record(store.get(Security, "long"), Security(ssm_id="long", short=False))

    @pytest.mark.parametrize(
        "lifetime",
        [
            0,
            0.0,
            -1,
            -0.001,
            dt.timedelta(0),
            dt.timedelta(seconds=-5),
            lambda obj: 0,
            lambda obj: -3.5,
            lambda obj: dt.timedelta(days=-1),
            lambda obj: dt.datetime(2000, 1, 1),
            lambda obj: dt.datetime(2000, 1, 1, tzinfo=UTC),
        ],
        ids=["0", "0.0", "-1", "-ms", "td0", "td-5", "f0", "f-3.5", "f-td", "f-naive-past", "f-aware-past"],
    )
    def test_expired_lifetime_is_not_kept_and_removes_the_old_copy(
        self, store_factory: StoreFactory, lifetime: Any
    ) -> None:
        static = store_factory(lifetime=lifetime)
        static.put(Security(ssm_id="new"))
        self._assert_gone(static, "new")
        static.batch_put([Security(ssm_id="b1"), Security(ssm_id="b2")])
        self._assert_gone(static, "b1")

        def only_when_asked(obj: Any) -> Any:
            if not obj.get("expire"):
                return None
            return lifetime(obj) if callable(lifetime) else lifetime

        store = store_factory(lifetime=only_when_asked)
        store.batch_put([Security(ssm_id="old", v=1), Security(ssm_id="b", v=1)])
        store.put(Listing(exchange="X", ticker="T", isin="I"))
        store.put(Security(ssm_id="old", v=2, expire=True))
        self._assert_gone(store, "old")
        store.batch_put([Security(ssm_id="b", v=2, expire=True), Security(ssm_id="c")])
        self._assert_gone(store, "b")
        assert sorted(store.keys(Security)) == ["c"]
        store.put(Listing(exchange="X", ticker="T", isin="I", expire=True))
        assert store.get(Listing, {"isin": "I"}) is None
        assert store.get(Listing, ("X", "T")) is None

    def test_past_absolute_datetime(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        past = dt.datetime.fromtimestamp(clock.now - 1, UTC)
        store = store_factory(lifetime=lambda obj: past)
        store.put(Security(ssm_id="x"))
        self._assert_gone(store, "x")

    @pytest.mark.parametrize("days", [31, 400, 365 * 50])
    def test_long_lifetimes(self, store_factory: StoreFactory, clock: FakeClock, days: int) -> None:
        store = store_factory(lifetime=dt.timedelta(days=days))
        store.put(Security(ssm_id="x"))
        clock.tick((days - 1) * 86400)
        assert store.get(Security, "x") is not None
        clock.tick(2 * 86400)
        self._assert_gone(store, "x")

    def test_static_datetime_lifetime(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=dt.datetime.fromtimestamp(clock.now + 60, UTC).replace(tzinfo=None))
        store.put(Security(ssm_id="x"))
        clock.tick(59)
        assert store.get(Security, "x") is not None
        clock.tick(2)
        self._assert_gone(store, "x")

    def test_expired_alternate_key_is_free(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=lambda obj: 10 if obj["ticker"] == "A" else None)
        store.put(Listing(exchange="X", ticker="A", isin="I"))
        clock.tick(11)
        assert store.get(Listing, {"isin": "I"}) is None
        store.put(Listing(exchange="X", ticker="B", isin="I"))
        assert_record(store.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="B", isin="I"))

    def test_expired_does_not_count_for_delete_or_clear(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=lambda obj: 10 if obj["short"] else None)
        store.batch_put([Security(ssm_id=i, short=i < 3) for i in range(6)])
        clock.tick(11)
        assert store.batch_delete(Security, [0, 1, 3]) == 1
        assert store.clear(Security) == 2

    def test_patch_of_an_expired_record_starts_afresh(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=lambda obj: 10 if obj.get("short") else None)
        store.put(Security(ssm_id="x", short=True, old=1))
        clock.tick(11)
        store.patch(Security, "x", {"short": False})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", short=False))

    def test_invalid_lifetime_is_refused(self, store_factory: StoreFactory) -> None:
        for bad in ["10", math.nan, object()]:
            with pytest.raises((StoreError, TypeError, ValueError)):
                store_factory(lifetime=bad)

    @staticmethod
    def _assert_gone(store: ss.BaseStore, key: Any) -> None:
        assert store.get(Security, key) is None
        assert store.batch_get(Security, [key]) == [None]
        assert key not in list(store.keys(Security))
        assert store.count(Security) == len(list(store.keys(Security)))
        assert store.batch_delete(Security, [key]) == 0


class TestKeys:
    def test_hostile_key_values_never_collide(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id=k, k=k) for k in HOSTILE_KEYS])
        for key, got in zip(HOSTILE_KEYS, store.batch_get(Security, HOSTILE_KEYS), strict=True):
            assert got is not None, f"lost {key!r:.40}"
            assert_same(got["k"], key)
            assert_same(got["ssm_id"], key)
        listed = list(store.keys(Security))
        assert len(listed) == len(HOSTILE_KEYS)
        assert {(type(k), k) for k in listed} == {(type(k), k) for k in HOSTILE_KEYS}
        assert store.count(Security) == len(HOSTILE_KEYS)

    def test_hostile_composite_and_alternate_keys(self, store: ss.BaseStore) -> None:
        parts = ["a", "a:", ":a", "", ":", "\x00", "*", 1, "1"]
        recs = [Listing(exchange=e, ticker=t, isin=f"{e!r}|{t!r}") for e in parts for t in parts]
        store.batch_put(recs)
        assert store.count(Listing) == len(recs)
        for rec in recs:
            assert_record(store.get(Listing, (rec["exchange"], rec["ticker"])), rec)
            assert_record(store.get(Listing, {"isin": rec["isin"]}), rec)

    def test_str_and_int_keys_differ(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="1", v="str"))
        store.put(Security(ssm_id=1, v="int"))
        assert_same(store.get(Security, "1")["v"], "str")  # type: ignore[index]
        assert_same(store.get(Security, 1)["v"], "int")  # type: ignore[index]
        assert sorted(store.keys(Security), key=repr) == sorted(["1", 1], key=repr)
        store.delete(Security, 1)
        assert store.get(Security, 1) is None
        assert store.get(Security, "1") is not None

    @pytest.mark.parametrize("bad", [True, False, 1.0, math.nan, None, b"x", 2**63, -(2**63) - 1, ["x"], Text("x")])
    def test_bad_key_values_are_refused(self, store: ss.BaseStore, bad: Any) -> None:
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
        assert store.count(Security) == 0
        assert store.count(Listing) == 0

    def test_bad_key_shapes_are_refused(self, store: ss.BaseStore) -> None:
        for key in [("X",), ("X", "T", "U"), "X", {"exchange": "X"}, {"isin": "I", "exchange": "X"}, {"nope": 1}]:
            with pytest.raises(InvalidKeyError):
                store.get(Listing, key)
        with pytest.raises(InvalidKeyError):
            store.put(Listing(exchange="X"))
        with pytest.raises(InvalidKeyError):
            store.put(Security(other="x"))

    def test_composite_keys_are_tuples(self, store: ss.BaseStore) -> None:
        recs = [Listing(exchange=e, ticker=t) for e in ["X", "Y"] for t in ["A", 1]]
        store.batch_put(recs)
        assert sorted(store.keys(Listing), key=repr) == sorted([(r["exchange"], r["ticker"]) for r in recs], key=repr)
        assert all(type(k) is tuple for k in store.keys(Listing))
        assert_record(store.get(Listing, ("Y", 1)), recs[3])
        assert_record(store.get(Listing, {"ticker": 1, "exchange": "Y"}), recs[3])
        assert store.get(Listing, ("Y", "1")) is None

    def test_get_by_alternate_key(self, store: ss.BaseStore) -> None:
        q = Quote("AAPL", "XNAS", "AAPL", 1.5)
        store.put(q)
        assert_record(store.get(Quote, {"exchange": "XNAS", "ticker": "AAPL"}), q)
        assert_record(store.get(Quote, {"symbol": "AAPL"}), q)
        assert store.get(Quote, {"exchange": "XNAS", "ticker": "MSFT"}) is None

    def test_changing_an_alternate_key_frees_the_old_value(self, store: ss.BaseStore) -> None:
        store.put(Quote("A", "X", "T1", 1.0))
        store.put(Quote("A", "X", "T2", 1.0))
        assert store.get(Quote, {"exchange": "X", "ticker": "T1"}) is None
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T2"}), Quote("A", "X", "T2", 1.0))
        other = Quote("B", "X", "T1", 2.0)
        store.put(other)
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T1"}), other)

    def test_unset_alternate_key_is_not_indexed(self, store: ss.BaseStore) -> None:
        store.batch_put([Listing(exchange="X", ticker="A"), Listing(exchange="X", ticker="B", isin=None)])
        assert store.count(Listing) == 2
        store.put(Listing(exchange="X", ticker="A", isin="I"))
        store.put(Listing(exchange="X", ticker="A"))
        store.put(Listing(exchange="X", ticker="C", isin="I"))  # freed by the put above

    def test_two_records_cannot_hold_one_alternate_key(self, store: ss.BaseStore) -> None:
        first = Quote("A", "X", "T", 1.0)
        store.put(first)
        with pytest.raises(InvalidKeyError):
            store.put(Quote("B", "X", "T", 2.0))
        assert store.get(Quote, "B") is None
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T"}), first)

    def test_two_records_in_one_batch_cannot_hold_one_alternate_key(self, store: ss.BaseStore) -> None:
        with pytest.raises(BatchError) as info:
            store.batch_put([Quote("A", "X", "T", 1.0), Quote("B", "X", "T", 2.0)])
        assert len(info.value.failed) == 1
        (failed,) = info.value.failed
        assert failed in ("A", "B")
        assert store.count(Quote) == 1
        assert store.get(Quote, failed) is None

    def test_deleted_record_frees_its_alternate_key(self, store: ss.BaseStore) -> None:
        store.put(Quote("A", "X", "T", 1.0))
        store.delete(Quote, {"exchange": "X", "ticker": "T"})
        store.put(Quote("B", "X", "T", 2.0))
        assert_record(store.get(Quote, {"exchange": "X", "ticker": "T"}), Quote("B", "X", "T", 2.0))

    def test_keys_count_clear(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id=i) for i in range(25)] + [Listing(exchange="X", ticker="T")])
        assert sorted(store.keys(Security)) == list(range(25))
        assert store.count(Security) == 25
        assert store.clear(Security) == 25
        assert store.count(Security) == 0
        assert list(store.keys(Security)) == []
        assert store.get(Security, 3) is None
        assert store.count(Listing) == 1
        assert store.clear(Security) == 0

    def test_undeclared_class_is_refused(self, store: ss.BaseStore) -> None:
        class Loose:
            pass

        obj = Loose()
        obj.k = "x"  # type: ignore[attr-defined]
        with pytest.raises(InvalidKeyError):
            store.put(obj)
        with pytest.raises(InvalidKeyError):
            store.get(Loose, "x")


class TestErrors:
    @pytest.mark.parametrize("name", list(UNSUPPORTED))
    def test_unsupported_value_raises_before_writing(self, store: ss.BaseStore, name: str) -> None:
        store.put(Security(ssm_id="x", v="old"))
        with pytest.raises(SerializationError):
            store.put(Security(ssm_id="x", v=UNSUPPORTED[name]))
        with pytest.raises(SerializationError):
            store.put(Security(ssm_id="y", v=UNSUPPORTED[name]))
        assert_record(store.get(Security, "x"), Security(ssm_id="x", v="old"))
        assert store.get(Security, "y") is None

    def test_unsupported_attribute_name(self, store: ss.BaseStore) -> None:
        rec = Security(ssm_id="x")
        rec[1] = "int attribute name"  # type: ignore[index]
        with pytest.raises(SerializationError):
            store.put(rec)
        assert store.count(Security) == 0

    def test_error_tree(self) -> None:
        assert issubclass(InvalidKeyError, ValueError)
        assert issubclass(SerializationError, TypeError)
        assert issubclass(ss.errors.BackendUnavailableError, ConnectionError)
        for err in (InvalidKeyError, SerializationError, BatchError, ss.errors.BackendUnavailableError):
            assert issubclass(err, StoreError)
        assert issubclass(ss.errors.UnsupportedOperationError, StoreError)

    def test_bad_namespace(self, store_factory: StoreFactory) -> None:
        with pytest.raises((StoreError, ValueError)):
            store_factory(namespace=0)  # type: ignore[arg-type]


class TestPolymorphism:
    def test_get_base_returns_the_subclass(self, store: ss.BaseStore) -> None:
        objs = [Security(ssm_id="s"), Bond(ssm_id="b", coupon=0.05), Callable_(ssm_id="c"), Equity(ssm_id="e")]
        store.batch_put(objs)
        for obj, got in zip(objs, store.batch_get(Security, ["s", "b", "c", "e"]), strict=True):
            assert_record(got, obj)

    def test_subclass_shares_the_base_key_space(self, store: ss.BaseStore) -> None:
        store.put(Security(ssm_id="x", v=1))
        store.put(Bond(ssm_id="x", v=2))
        assert store.count(Security) == 1
        assert_record(store.get(Security, "x"), Bond(ssm_id="x", v=2))

    def test_get_sub_is_none_for_other_classes(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id="s"), Bond(ssm_id="b"), Callable_(ssm_id="c"), Equity(ssm_id="e")])
        assert store.batch_get(Bond, ["s", "b", "c", "e"])[0] is None
        assert [type(o) for o in store.batch_get(Bond, ["b", "c"])] == [Bond, Callable_]
        assert store.get(Bond, "e") is None
        assert store.get(Equity, "b") is None
        assert store.get(Callable_, "b") is None

    def test_keys_count_clear_of_a_subclass(self, store: ss.BaseStore) -> None:
        store.batch_put(
            [Security(ssm_id=f"s{i}") for i in range(3)]
            + [Bond(ssm_id=f"b{i}") for i in range(4)]
            + [Callable_(ssm_id="c")]
            + [Equity(ssm_id="e")]
        )
        assert sorted(store.keys(Bond)) == ["b0", "b1", "b2", "b3", "c"]
        assert store.count(Bond) == 5
        assert store.count(Equity) == 1
        assert store.count(Security) == 9
        assert store.clear(Bond) == 5
        assert sorted(store.keys(Security)) == ["e", "s0", "s1", "s2"]
        assert store.clear(Equity) == 1
        assert store.count(Security) == 3

    def test_delete_through_a_subclass_key(self, store: ss.BaseStore) -> None:
        store.put(Bond(ssm_id="b"))
        store.delete(Security, "b")
        assert store.get(Bond, "b") is None


class TestIsolation:
    def test_mutating_the_put_object_changes_nothing(self, store: ss.BaseStore) -> None:
        inner: list[Any] = [1, {"a": 2}]
        obj = Security(ssm_id="x", inner=inner)
        store.put(obj)
        obj["inner"].append(3)
        inner[1]["a"] = 99
        obj["new"] = 1
        assert_record(store.get(Security, "x"), Security(ssm_id="x", inner=[1, {"a": 2}]))

    def test_mutating_the_got_object_changes_nothing(self, store: ss.BaseStore) -> None:
        store.put(Quote("q", "X", "T", 1.0))
        store.put(Security(ssm_id="x", inner=[1, {"a": 2}]))
        got = store.get(Security, "x")
        assert got is not None
        got["inner"][1]["a"] = 99
        got["inner"].append(3)
        got["extra"] = True
        q = store.get(Quote, "q")
        assert q is not None
        q.price = 2.0
        assert_record(store.get(Security, "x"), Security(ssm_id="x", inner=[1, {"a": 2}]))
        assert_record(store.get(Quote, "q"), Quote("q", "X", "T", 1.0))
        again = store.batch_get(Security, ["x", "x"])
        again[0]["inner"].append(4)  # type: ignore[index]
        assert_same(again[1]["inner"], [1, {"a": 2}])  # type: ignore[index]

    @pytest.mark.parametrize("other", ["other", "t:*{\n x ü", "x" * 40])
    def test_namespaces_do_not_see_each_other(self, store_factory: StoreFactory, namespace: str, other: str) -> None:
        mine, theirs = store_factory(), store_factory(namespace=f"{namespace}{other}")
        mine.batch_put(
            [Security(ssm_id="a", v=1), Security(ssm_id="b", v=1), Listing(exchange="X", ticker="T", isin="I")]
        )
        theirs.batch_put([Security(ssm_id="b", v=2), Security(ssm_id="c", v=2)])
        theirs.put(Listing(exchange="Y", ticker="T", isin="I"))  # the same alternate key is fine elsewhere
        assert sorted(mine.keys(Security)) == ["a", "b"]
        assert sorted(theirs.keys(Security)) == ["b", "c"]
        assert_same(mine.get(Security, "b")["v"], 1)  # type: ignore[index]
        assert_same(theirs.get(Security, "b")["v"], 2)  # type: ignore[index]
        assert theirs.get(Security, "a") is None
        assert_record(mine.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="T", isin="I"))
        assert theirs.clear(Security) == 2
        assert mine.count(Security) == 2
        assert mine.batch_delete(Security, ["a", "b", "c"]) == 2
        assert_record(theirs.get(Listing, {"isin": "I"}), Listing(exchange="Y", ticker="T", isin="I"))

    def test_same_namespace_shares_data(self, store_factory: StoreFactory, backend: str) -> None:
        if backend in ("memory", "threadlocal"):
            pytest.skip("in-process stores hold their own records")
        first, second = store_factory(), store_factory()
        first.put(Security(ssm_id="x", v=1))
        assert_record(second.get(Security, "x"), Security(ssm_id="x", v=1))


class TestInProcess:
    """The in-process stores' own options (not part of the shared contract)."""

    def test_max_items_evicts_the_least_recently_used(self) -> None:
        store = ss.backends.MemoryStore(max_items=3)
        store.batch_put([Security(ssm_id=k) for k in "abc"])
        assert store.get(Security, "a") is not None  # "b" is now the least recently used
        store.put(Security(ssm_id="d"))
        assert store.get(Security, "b") is None
        assert sorted(store.keys(Security)) == ["a", "c", "d"]

    def test_max_items_must_be_positive(self) -> None:
        for bad in [0, -1, 1.5]:
            with pytest.raises(ValueError, match="max_items"):
                ss.backends.MemoryStore(max_items=bad)  # type: ignore[arg-type]

    def test_threads_do_not_share_a_thread_local_store(self) -> None:
        store = ss.backends.ThreadLocalStore()
        store.put(Security(ssm_id="main"))
        seen: list[Any] = []
        worker = threading.Thread(target=lambda: seen.append(store.get(Security, "main")))
        worker.start()
        worker.join()
        assert seen == [None]
        assert store.get(Security, "main") is not None
