"""DataFrames (API.md section 6): put_frame and get_frame on every backend of the conformance suite.

Every test takes the parametrised ``store`` / ``store_factory`` fixture of conftest.py,
so it runs on memory, SQL, memcached, Redis (single, cluster, TLS) and the chains.
The suite's memcache stores list their keys on the test side (tests/memcached_servers.py);
a real `MemcacheStore` cannot, and its ``get_frame(cls)`` raises like ``keys()``
(`TestErrors.test_memcached_cannot_list_every_record`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from conftest import FakeClock, StoreFactory

import stockstore as ss
from stockstore import _codec
from stockstore._entry import Entry
from stockstore._keys import Family, encode_key, family_of
from stockstore._schemas import SCHEMAS
from stockstore.backends import MemoryStore
from stockstore.errors import (
    BackendUnavailableError,
    BatchError,
    InvalidKeyError,
    SerializationError,
    UnsupportedOperationError,
)
from stockstore.testing import assert_same


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Bond(Security):
    pass


class Listing(ss.Record):
    """Composite primary key and one alternate key."""

    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


@dataclasses.dataclass
class Quote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: float


def floats(*bits: int) -> np.ndarray:
    """float64 values made from their bit patterns, so no Python float ever touches them."""
    return np.array(bits, dtype="<u8").view("<f8")


# NaNs with payloads (quiet, negative, signalling), -0.0, ±inf, the smallest subnormal, ordinary values.
SPECIAL_BITS = [
    0x7FF8000000000000,
    0xFFF8000000000001,
    0x7FF0000000000001,
    0x7FF4000000DEADBE,
    0x8000000000000000,
    0x7FF0000000000000,
    0xFFF0000000000000,
    0x0000000000000001,
    0x3FF0000000000000,
    0xC00921FB54442D18,
]
INT_EXTREMES = [-(2**63), 2**63 - 1, 0, -1, 1, 2**53 + 1, -(2**53) - 1, 42, 7, 9]


def numeric_frame(n: int = len(SPECIAL_BITS), prefix: str = "S") -> pd.DataFrame:
    """A frame of float64 and int64 columns holding every awkward value, keyed by ``ssm_id`` as its index."""
    assert n <= len(SPECIAL_BITS)
    frame = pd.DataFrame(
        {
            "a0": floats(*SPECIAL_BITS[:n]),
            "n": np.array(INT_EXTREMES[:n], dtype=np.int64),
            "a1": floats(*reversed(SPECIAL_BITS[:n])),
        },
        index=pd.Index([f"{prefix}{i}" for i in range(n)], name="ssm_id"),
    )
    return frame


def bits(values: Any) -> list[int]:
    return np.asarray(values, dtype="<f8").view("<u8").tolist()  # type: ignore[no-any-return]


def read(store: ss.BaseStore, cls: type, keys: Sequence[Any], **options: Any) -> pd.DataFrame:
    """``get_frame(cls)`` (every record), in the order of *keys*."""
    frame = store.get_frame(cls, **options)
    assert sorted(frame.index) == sorted(keys)
    return frame.loc[list(keys)] if len(frame) else frame


def assert_frame_exact(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same index, columns and dtypes; float64 columns bit for bit."""
    assert list(got.index) == list(want.index)
    assert list(got.index.names) == list(want.index.names)
    assert sorted(got.columns) == sorted(want.columns)
    for name in want.columns:
        assert got[name].dtype == want[name].dtype, name
        if want[name].dtype == np.float64:
            assert bits(got[name]) == bits(want[name]), name
        else:
            assert got[name].tolist() == want[name].tolist(), name


def forget_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fresh process knows: no row schemas (they must come from the store)."""
    monkeypatch.setattr(_codec, "_schemas", {})


# ---------------------------------------------------------------------------- round trips


class TestRoundTrip:
    def test_float_and_int_columns_bit_exact(self, store: ss.BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = read(store, Security, list(df.index))
        assert_frame_exact(got, df)
        assert got.index.name == "ssm_id"
        assert got["a0"].dtype == np.float64
        assert got["n"].dtype == np.int64

    def test_a_fresh_process_reads_the_schema_from_the_store(
        self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        forget_schemas(monkeypatch)
        assert_frame_exact(read(store, Security, list(df.index)), df)
        forget_schemas(monkeypatch)
        record = store.get(Security, "S4")
        assert record is not None
        assert bits([record["a0"]]) == [SPECIAL_BITS[4]]

    def test_records_written_below_a_chain_fill_its_tiers(
        self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Upper tiers may decode what they are filled with (a Redis hash, a callable lifetime)."""
        source = store.tiers[-1] if isinstance(store, ss.ChainedStore) else store
        source.put_frame(Security, numeric_frame())
        forget_schemas(monkeypatch)
        assert_frame_exact(read(store, Security, list(numeric_frame().index)), numeric_frame())
        if isinstance(store, ss.ChainedStore):
            assert store.tier_failures == [0] * len(store.tiers)
            for tier in store.tiers:
                forget_schemas(monkeypatch)
                assert_frame_exact(tier.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())

    @pytest.mark.parametrize("where", ["index", "column"])
    def test_key_as_index_or_column(self, store: ss.BaseStore, where: str) -> None:
        df = numeric_frame()
        put = df if where == "index" else df.reset_index()
        if where == "column":
            put.index = pd.RangeIndex(100, 100 + len(put))  # unnamed: not an attribute
        store.put_frame(Security, put)
        assert_frame_exact(read(store, Security, list(df.index)), df)

    def test_int_keys(self, store: ss.BaseStore) -> None:
        df = pd.DataFrame({"ssm_id": np.arange(5, dtype=np.int64) * 2**40, "a": np.linspace(0, 1, 5)})
        store.put_frame(Security, df)
        got = read(store, Security, df["ssm_id"].tolist())
        assert got.index.dtype == np.int64
        assert_same(store.get(Security, 2**41), Security(ssm_id=2**41, a=0.5))

    def test_composite_key_is_a_multiindex(self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
        index = pd.MultiIndex.from_tuples(
            [("XNAS", "AAPL"), ("XNYS", "IBM"), ("XNAS", "MSFT")], names=["exchange", "ticker"]
        )
        df = pd.DataFrame({"isin": ["I1", "I2", "I3"], "px": [1.5, -0.0, np.inf]}, index=index)
        store.put_frame(Listing, df)
        got = read(store, Listing, list(index))
        assert isinstance(got.index, pd.MultiIndex)
        assert list(got.index.names) == ["exchange", "ticker"]
        assert list(got.index) == list(index)
        assert got["isin"].tolist() == ["I1", "I2", "I3"]
        assert bits(got["px"]) == bits(df["px"])
        # The alternate key is indexed like any record's, and found without the row's schema.
        forget_schemas(monkeypatch)
        by_isin = store.get_frame(Listing, keys=[{"isin": "I2"}, {"isin": "nope"}])
        assert list(by_isin.index) == [("XNYS", "IBM")]
        assert_same(
            dict(store.get(Listing, {"isin": "I3"}) or {}),
            {"exchange": "XNAS", "ticker": "MSFT", "isin": "I3", "px": np.inf},
        )

    def test_object_bool_and_datetime_columns(self, store: ss.BaseStore) -> None:
        aware = dt.timezone(dt.timedelta(hours=5, minutes=30))
        df = pd.DataFrame(
            {
                "ssm_id": ["A", "B", "C"],
                "name": ["Apple", "Bé ☃", None],
                "flag": [True, False, True],
                "when": pd.to_datetime(["2024-01-02 03:04:05.123456", "1999-12-31 00:00:00.000000", None]),
                "zoned": pd.to_datetime(["2024-01-02 03:04", "2024-06-01 00:00", "2024-12-31 00:00"]).tz_localize(
                    aware
                ),
                "obj": [decimal.Decimal("1.10"), b"\x00\xff", [1, "x", None]],
                "day": [dt.date(2024, 1, 2), None, dt.date(1, 1, 1)],
                "maybe": pd.array([1, None, -(2**63)], dtype="Int64"),
                "np_scalars": pd.Series([np.float64(0.5), np.int64(3), np.bool_(True)], dtype=object),
            }
        )
        store.put_frame(Security, df)
        record = store.get(Security, "A")
        assert_same(
            dict(record or {}),
            {
                "ssm_id": "A",
                "name": "Apple",
                "flag": True,
                "when": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
                "zoned": dt.datetime(2024, 1, 2, 3, 4, tzinfo=aware),
                "obj": decimal.Decimal("1.10"),
                "day": dt.date(2024, 1, 2),
                "maybe": 1,
                "np_scalars": 0.5,
            },
        )
        c = store.get(Security, "C")
        assert c is not None
        assert c["name"] is None
        assert c["when"] is None
        assert c["maybe"] == -(2**63)
        assert c["obj"] == [1, "x", None]
        b = store.get(Security, "B")
        assert b is not None
        assert b["maybe"] is None
        assert type(b["np_scalars"]) is int
        assert b["obj"] == b"\x00\xff"
        got = read(store, Security, ["A", "B", "C"])
        assert got["flag"].dtype == bool
        assert got["flag"].tolist() == [True, False, True]
        assert got["name"].tolist()[:2] == ["Apple", "Bé ☃"]
        assert got["when"].dtype == "datetime64[us]"
        assert got["when"].iloc[0] == pd.Timestamp("2024-01-02 03:04:05.123456")
        assert got["day"].tolist() == [dt.date(2024, 1, 2), None, dt.date(1, 1, 1)]
        assert got["maybe"].tolist() == [1, None, -(2**63)]  # an int column with a gap stays exact

    def test_columns_subset_in_the_order_asked(self, store: ss.BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = read(store, Security, list(df.index), columns=["a1", "n", "never"])
        assert list(got.columns) == ["a1", "n", "never"]
        assert bits(got["a1"]) == bits(df["a1"])
        assert got["n"].tolist() == df["n"].tolist()
        assert got["never"].isna().all()

    def test_keys_subset_leaves_out_what_is_missing(self, store: ss.BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = store.get_frame(Security, keys=["S3", "missing", "S1", {"ssm_id": "S3"}])
        assert list(got.index) == ["S3", "S1"]
        assert got["n"].tolist() == [INT_EXTREMES[3], INT_EXTREMES[1]]
        empty = store.get_frame(Security, keys=["missing"])
        assert len(empty) == 0
        assert empty.index.name == "ssm_id"

    def test_last_row_of_a_key_wins(self, store: ss.BaseStore) -> None:
        df = pd.DataFrame({"ssm_id": ["x", "y", "x"], "v": [1.0, 2.0, 3.0]})
        store.put_frame(Security, df)
        assert_same(store.get(Security, "x"), Security(ssm_id="x", v=3.0))
        assert_same(store.get(Security, "y"), Security(ssm_id="y", v=2.0))

    def test_an_empty_frame_writes_nothing(self, store: ss.BaseStore) -> None:
        store.put_frame(Security, numeric_frame().iloc[:0])
        assert store.get_frame(Security, keys=["S0"]).empty

    def test_a_frame_of_a_dataclass(self, store: ss.BaseStore) -> None:
        store.put_frame(Quote, pd.DataFrame({"symbol": ["AAPL"], "price": [189.5]}))
        assert store.get(Quote, "AAPL") == Quote("AAPL", 189.5)
        got = store.get_frame(Quote, keys=["AAPL"])
        assert got.loc["AAPL", "price"] == 189.5


# ---------------------------------------------------------------------------- ordinary records


class TestOrdinaryRecords:
    def test_a_fresh_process_patches_frame_rows(self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """A merge meets a schema it does not know: it is read from the store and the patch goes through."""
        df = numeric_frame()
        store.put_frame(Security, df)
        forget_schemas(monkeypatch)
        store.patch(Security, "S1", {"a0": 1.25})
        forget_schemas(monkeypatch)
        store.batch_patch(Security, [{"ssm_id": key, "extra": key} for key in df.index])
        got = store.get_frame(Security, keys=list(df.index))
        assert got["extra"].tolist() == list(df.index)
        assert bits(got["a0"]) == [bits([1.25])[0] if i == 1 else b for i, b in enumerate(SPECIAL_BITS)]
        assert bits(got["a1"]) == bits(df["a1"])
        assert got["n"].tolist() == INT_EXTREMES

    def test_frame_rows_for_get_batch_get_patch_keys_delete(
        self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        df = numeric_frame()
        df["name"] = [f"name{i}" for i in range(len(df))]
        store.put_frame(Security, df)
        forget_schemas(monkeypatch)  # a patch in a fresh process reads the schema first
        want = {"ssm_id": "S2", "name": "name2", "a0": float(df["a0"].iloc[2]), "n": INT_EXTREMES[2]}
        want["a1"] = float(df["a1"].iloc[2])
        got = store.get(Security, "S2")
        assert type(got) is Security
        assert_same(dict(got), want)
        assert [s is None for s in store.batch_get(Security, ["S0", "nope", "S9"])] == [False, True, False]
        store.patch(Security, "S2", {"a0": 9.5, "extra": "new"})
        assert_same(dict(store.get(Security, "S2") or {}), {**want, "a0": 9.5, "extra": "new"})
        store.batch_patch(Security, [{"ssm_id": "S3", "n": 5}, {"ssm_id": "S4", "a1": -1.0}])
        s3 = store.get(Security, "S3")
        assert s3 is not None
        assert s3["n"] == 5
        assert bits([s3["a0"]]) == [SPECIAL_BITS[3]]
        assert sorted(store.keys(Security)) == sorted(df.index)
        assert store.count(Security) == len(df)
        store.delete(Security, "S0")
        assert store.get(Security, "S0") is None
        # Patched records are ordinary ones now; the frame still reads them all together.
        got_frame = store.get_frame(Security, keys=list(df.index))
        assert list(got_frame.index) == list(df.index[1:])
        assert got_frame.loc["S2", "a0"] == 9.5
        assert got_frame.loc["S2", "extra"] == "new"
        assert got_frame["n"].dtype == np.int64
        assert got_frame.loc["S3", "n"] == 5
        assert bits(got_frame.loc[["S5", "S6"], "a0"]) == SPECIAL_BITS[5:7]

    def test_dict_written_records_read_as_a_frame(self, store: ss.BaseStore) -> None:
        store.batch_put(
            [
                Security(ssm_id="d1", a0=float(floats(SPECIAL_BITS[2])[0]), n=-(2**63), s="x", mixed=1),
                Security(ssm_id="d2", a0=-0.0, n=2**63 - 1, s="y", mixed=1.5),
            ]
        )
        store.put_frame(Security, pd.DataFrame({"ssm_id": ["f1"], "a0": [np.inf], "n": [7], "s": ["z"], "mixed": [2]}))
        got = read(store, Security, ["d1", "d2", "f1"])
        assert bits(got["a0"]) == [SPECIAL_BITS[2], 0x8000000000000000, 0x7FF0000000000000]
        assert got["n"].dtype == np.int64
        assert got["n"].tolist() == [-(2**63), 2**63 - 1, 7]
        assert got["s"].tolist() == ["x", "y", "z"]
        assert got["mixed"].dtype == object
        assert [type(v) for v in got["mixed"]] == [int, float, int]  # each value as stored

    def test_records_without_an_attribute_read_as_nan_there(self, store: ss.BaseStore) -> None:
        store.batch_put([Security(ssm_id="a", x=1.5), Security(ssm_id="b", y=2)])
        got = store.get_frame(Security, keys=["a", "b"])
        assert got["x"].dtype == np.float64
        assert bits(got["x"])[0] == bits([1.5])[0]
        assert np.isnan(got.loc["b", "x"])
        assert got["y"].tolist() == [None, 2]  # an int column with a gap stays object, exact

    def test_polymorphism(self, store: ss.BaseStore) -> None:
        store.put_frame(Bond, numeric_frame(3, prefix="B"))
        store.put_frame(Security, numeric_frame(2, prefix="S"))
        assert type(store.get(Security, "B1")) is Bond
        bonds = read(store, Bond, ["B0", "B1", "B2"])
        assert list(bonds.index) == ["B0", "B1", "B2"]
        everything = store.get_frame(Security, keys=["B0", "S0", "S1"])
        assert list(everything.index) == ["B0", "S0", "S1"]
        assert list(store.get_frame(Bond, keys=["B0", "S0"]).index) == ["B0"]
        assert sorted(store.get_frame(Bond).index) == ["B0", "B1", "B2"]
        assert len(store.get_frame(Security)) == 5


# ---------------------------------------------------------------------------- lifetimes


class TestLifetimes:
    def test_a_static_lifetime(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        store = store_factory(lifetime=60)
        store.put_frame(Security, numeric_frame())
        clock.tick(59)
        assert len(store.get_frame(Security, keys=["S0", "S1"])) == 2
        clock.tick(2)
        assert store.get(Security, "S0") is None
        assert store.get_frame(Security, keys=["S0", "S1"]).empty

    def test_a_callable_lifetime_gets_each_record(self, store_factory: StoreFactory, clock: FakeClock) -> None:
        seen: list[Any] = []

        def lifetime(obj: Any) -> Any:
            seen.append(obj)
            return obj["ttl"] if obj["ttl"] >= 0 else None

        store = store_factory(lifetime=lifetime)
        df = pd.DataFrame(
            {"ssm_id": ["short", "long", "never", "gone"], "ttl": [10.0, 100.0, -1.0, 0.0], "n": [1, 2, 3, 4]}
        )
        store.put_frame(Security, df)
        assert {type(o) for o in seen} == {Security}
        assert_same(next(dict(o) for o in seen if o["ssm_id"] == "long"), {"ssm_id": "long", "ttl": 100.0, "n": 2})
        assert store.get(Security, "gone") is None  # a lifetime already over: not kept
        clock.tick(11)
        assert list(store.get_frame(Security, keys=df["ssm_id"]).index) == ["long", "never"]
        clock.tick(100)
        assert list(store.get_frame(Security, keys=df["ssm_id"]).index) == ["never"]

    def test_schemas_outlive_the_store_lifetime(
        self, store_factory: StoreFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = store_factory(lifetime=60)
        store.put_frame(Security, numeric_frame())
        clock.tick(61)
        store.put_frame(Security, numeric_frame())  # the schema is not written again by this store
        clock.tick(40)  # the first write's schema would have expired 40 s ago
        forget_schemas(monkeypatch)
        assert_frame_exact(store.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())


# ---------------------------------------------------------------------------- errors


GOOD = [f"g{i}" for i in range(5)]


def six(bad: Any, good: Any = 1.0) -> list[Any]:
    """A column of five good values and a bad one, last: nothing of the good rows may be written either."""
    return [good] * 5 + [bad]


BAD_FRAMES: dict[str, tuple[Callable[[], pd.DataFrame], type[Exception]]] = {
    "timedelta": (
        lambda: pd.DataFrame({"ssm_id": [*GOOD, "a"], "v": pd.to_timedelta(six(2), unit="s")}),
        SerializationError,
    ),
    "complex": (lambda: pd.DataFrame({"ssm_id": [*GOOD, "a"], "v": six(1 + 2j, 1j)}), SerializationError),
    "set-in-object": (lambda: pd.DataFrame({"ssm_id": [*GOOD, "a"], "v": six({1, 2}, "x")}), SerializationError),
    "nanoseconds": (
        lambda: pd.DataFrame({"ssm_id": [*GOOD, "a"], "v": pd.to_datetime(six(10**18 + 1, 10**18), unit="ns")}),
        SerializationError,
    ),
    "uint64-too-big": (
        lambda: pd.DataFrame({"ssm_id": [*GOOD, "a"], "v": np.array(six(2**64 - 1, 1), dtype=np.uint64)}),
        SerializationError,
    ),
    "int-column-name": (lambda: pd.DataFrame({"ssm_id": GOOD, 0: 1.0}), SerializationError),
    "name-twice": (
        lambda: pd.DataFrame({"ssm_id": GOOD, "v": 1.0}, index=pd.Index(GOOD, name="v")),
        SerializationError,
    ),
    "nan-key": (lambda: pd.DataFrame({"ssm_id": six(np.nan, 1.0), "v": 1.0}), InvalidKeyError),
    "float-key": (lambda: pd.DataFrame({"ssm_id": six(1.5, 1.0), "v": 1.0}), InvalidKeyError),
    "missing-key": (lambda: pd.DataFrame({"ssm_id": [*GOOD, None], "v": 1.0}), InvalidKeyError),
    "no-key-column": (lambda: pd.DataFrame({"other": GOOD, "v": 1.0}), InvalidKeyError),
}


class TestErrors:
    @pytest.mark.parametrize("name", list(BAD_FRAMES))
    def test_a_bad_frame_raises_before_anything_is_written(self, store: ss.BaseStore, name: str) -> None:
        make, error = BAD_FRAMES[name]
        with pytest.raises(error):
            store.put_frame(Security, make())
        assert store.get_frame(Security, keys=[*GOOD, "a", 1]).empty

    def test_not_a_frame(self, store: ss.BaseStore) -> None:
        with pytest.raises(SerializationError):
            store.put_frame(Security, {"ssm_id": ["a"]})  # type: ignore[arg-type]

    @pytest.mark.memcached
    def test_memcached_cannot_list_every_record(self, memcached_server: str, namespace: str) -> None:
        """(The suite's memcache stores list keys on the test side; the real one cannot, like keys().)"""
        from stockstore.backends import MemcacheStore

        with MemcacheStore([memcached_server], namespace=namespace) as store:
            store.put_frame(Security, numeric_frame())
            with pytest.raises(UnsupportedOperationError):
                store.get_frame(Security)
            assert_frame_exact(store.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())

    @pytest.mark.parametrize("columns", ["a0", [1]], ids=["a-str", "not-str"])
    def test_columns_must_be_names(self, store: ss.BaseStore, columns: Any) -> None:
        with pytest.raises(SerializationError):
            store.get_frame(Security, keys=["x"], columns=columns)


# ---------------------------------------------------------------------------- streaming


class TestStreaming:
    def test_a_large_frame_goes_out_in_several_writes(
        self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        written: list[tuple[str, int]] = []
        write = store._write

        def counting(family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
            written.append((family.name, len(entries)))
            return write(family, entries, now_ms)

        monkeypatch.setattr(store, "_write", counting)
        n = 25_000
        rng = np.random.default_rng(7)
        df = pd.DataFrame(rng.standard_normal((n, 8)), columns=[f"a{i}" for i in range(8)])
        df.index = pd.Index([f"K{i:06d}" for i in range(n)], name="ssm_id")
        store.put_frame(Security, df)
        chunks = [size for name, size in written if name == "Security"]
        assert len(chunks) >= 3
        assert sum(chunks) == n
        assert max(chunks) <= store.put_chunk
        assert written[0] == (SCHEMAS.name, 1)  # the schema, before any row that uses it
        store.put_frame(Security, df.iloc[:10])
        assert [name for name, _ in written].count(SCHEMAS.name) == 1  # once per store
        keys = list(df.index[:: n // 50])
        got = store.get_frame(Security, keys=keys)
        assert (
            np.asarray(got.to_numpy()).view("<u8").tolist() == np.asarray(df.loc[keys].to_numpy()).view("<u8").tolist()
        )


class Chunked(MemoryStore):
    """Writes three records at a time and fails the chunks of user records it is told to."""

    put_chunk = 3

    def __init__(self, fail: Sequence[int] = ()) -> None:
        super().__init__()
        self.chunks: list[list[Any]] = []
        self.fail = set(fail)

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        if family.name != SCHEMAS.name:
            self.chunks.append([e.key for e in entries])
            if len(self.chunks) - 1 in self.fail:
                raise BackendUnavailableError("chunk lost")
        return super()._write(family, entries, now_ms)


def test_a_failed_chunk_names_itself_and_everything_after_it() -> None:
    store = Chunked(fail=[1])
    df = pd.DataFrame({"ssm_id": [f"k{i}" for i in range(8)], "v": np.arange(8.0)})
    with pytest.raises(BatchError) as info:
        store.put_frame(Security, df)
    assert info.value.failed == ["k3", "k4", "k5", "k6", "k7"]
    assert isinstance(info.value.__cause__, BackendUnavailableError)
    assert sorted(store.keys(Security)) == ["k0", "k1", "k2"]


def test_a_failed_first_chunk_is_the_error_itself() -> None:
    store = Chunked(fail=[0])
    with pytest.raises(BackendUnavailableError):
        store.put_frame(Security, pd.DataFrame({"ssm_id": ["a", "b", "c", "d"], "v": 1.0}))
    assert store.count(Security) == 0


# ---------------------------------------------------------------------------- chains


class TestChained:
    def test_a_frame_read_fills_the_upper_tiers_schema_first(
        self, sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from stockstore.backends import SqlStore

        top, source = MemoryStore(namespace=namespace), SqlStore(sqlite_url, namespace=namespace)
        chain = ss.ChainedStore([top, source])
        source.put_frame(Security, numeric_frame())  # written below the chain's back
        forget_schemas(monkeypatch)
        assert_frame_exact(chain.get_frame(Security).loc[numeric_frame().index], numeric_frame())
        # The memory tier now holds the records and their schema, as any read fills it.
        forget_schemas(monkeypatch)
        assert_frame_exact(top.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())
        source.close()

    def test_put_frame_writes_the_source_first_then_the_tiers(self, sqlite_url: str, namespace: str) -> None:
        from stockstore.backends import SqlStore

        top, source = MemoryStore(namespace=namespace, lifetime=30), SqlStore(sqlite_url, namespace=namespace)
        chain = ss.ChainedStore([top, source])
        chain.put_frame(Security, numeric_frame())
        for tier in (top, source):
            assert_frame_exact(tier.get_frame(Security).loc[numeric_frame().index], numeric_frame())
        source.close()


# ---------------------------------------------------------------------------- Redis memory


@pytest.mark.redis
def test_a_row_record_costs_little_more_than_its_floats_in_redis(redis_url: str) -> None:
    import redis

    from stockstore.backends import RedisMsgpackStore

    namespace = f"t{uuid.uuid4().hex[:16]}"
    store = RedisMsgpackStore(redis_url, namespace=namespace)
    try:
        values = np.random.default_rng(1).standard_normal((1, 200))
        df = pd.DataFrame(
            values, columns=[f"attribute_{i:03d}" for i in range(200)], index=pd.Index(["US0378331005"], name="ssm_id")
        )
        store.put_frame(Security, df)
        floats = {c: float(df[c].iloc[0]) for c in df.columns}
        store.put(Security(ssm_id="US0378331006", **floats))  # wide: a row record too
        store.put(Security(ssm_id="US0378331007", **floats, note="x"))  # a str last: an ordinary record
        row_key, dict_key, narrow_key = store._record_keys(
            family_of(Security), [encode_key((f"US037833100{i}",)) for i in (5, 6, 7)]
        )
        with redis.Redis.from_url(redis_url) as client:
            row_bytes, dict_bytes, narrow_bytes = (
                client.memory_usage(k, samples=0) for k in (row_key, dict_key, narrow_key)
            )
        assert row_bytes <= 1.25 * (200 * 8 + len(row_key)), row_bytes
        assert dict_bytes <= 1.25 * (200 * 8 + len(dict_key)), dict_bytes
        assert narrow_bytes > row_bytes * 1.5, (narrow_bytes, row_bytes)
        # A patch that changes a float and adds an attribute keeps the record a row of its schema.
        store.patch(Security, "US0378331005", {"attribute_001": 0.5, "added": 1.0})
        with redis.Redis.from_url(redis_url) as client:
            patched_bytes = client.memory_usage(row_key, samples=0)
        assert patched_bytes <= row_bytes + 32, (patched_bytes, row_bytes)
        want = {"ssm_id": "US0378331005", **floats, "attribute_001": 0.5, "added": 1.0}
        assert store.get(Security, "US0378331005") == want
    finally:
        store.clear(Security)
        store.close()


# ---------------------------------------------------------------------------- the extra


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # "import pandas" raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "stockstore._frame")
    monkeypatch.delattr(ss, "_frame")  # else "from . import _frame" finds the loaded module
    with pytest.raises(ImportError, match=r"pip install 'stockstore\[pandas\]'"):
        MemoryStore().get_frame(Security)
