"""DataFrames: put_frame and get_frame, bit-exact, and their rows as ordinary records (see the Frames page).

Every test here takes the `needs_pandas` fixture: it skips unless pandas and numpy (the
``stockstore[pandas]`` extra) are installed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest

from .. import _codec
from .._chained import ChainedStore
from .._record import Record
from .._store import BaseStore
from ..errors import InvalidKeyError, SerializationError, StoreError, UnsupportedOperationError
from ._base import SuiteBase
from ._exact import assert_same

try:
    import numpy as np
    import pandas as pd
except ImportError:  # the extra is not installed: every test here skips (`needs_pandas`) before using them
    pass


class Security(Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Bond(Security):
    pass


class Listing(Record):
    """Composite primary key and one alternate key."""

    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


@dataclasses.dataclass
class Quote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: float


def floats(*bits: int) -> Any:
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
    """The bit patterns of float64 *values*."""
    got: list[int] = np.asarray(values, dtype="<f8").view("<u8").tolist()
    return got


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


class FrameTests(SuiteBase):
    @pytest.fixture
    def needs_pandas(self) -> None:
        """Skips the test unless pandas and numpy (the ``stockstore[pandas]`` extra) are installed."""
        pytest.importorskip("numpy")
        pytest.importorskip("pandas")

    def read_frame(self, store: BaseStore, cls: type, keys: Sequence[Any], **options: Any) -> pd.DataFrame:
        """``get_frame(cls)`` (every record), which must hold exactly *keys*, in the order of *keys*.

        A store that cannot list keys must refuse ``get_frame(cls)``; it is asked for *keys* instead.
        """
        if self.lists_keys:
            frame = store.get_frame(cls, **options)
        else:
            with pytest.raises(UnsupportedOperationError):
                store.get_frame(cls, **options)
            frame = store.get_frame(cls, keys=keys, **options)
        assert sorted(frame.index) == sorted(keys)
        return frame.loc[list(keys)] if len(frame) else frame

    # ------------------------------------------------------------------ round trips

    def test_float_and_int_columns_bit_exact(self, needs_pandas: None, store: BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = self.read_frame(store, Security, list(df.index))
        assert_frame_exact(got, df)
        assert got.index.name == "ssm_id"
        assert got["a0"].dtype == np.float64
        assert got["n"].dtype == np.int64

    def test_a_fresh_process_reads_the_schema_from_the_store(
        self, needs_pandas: None, store: BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        forget_schemas(monkeypatch)
        assert_frame_exact(self.read_frame(store, Security, list(df.index)), df)
        forget_schemas(monkeypatch)
        record = store.get(Security, "S4")
        assert record is not None
        assert bits([record["a0"]]) == [SPECIAL_BITS[4]]

    def test_records_written_below_a_chain_fill_its_tiers(
        self, needs_pandas: None, store: BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Upper tiers may decode what they are filled with (a Redis hash, a callable lifetime)."""
        source = store.tiers[-1] if isinstance(store, ChainedStore) else store
        source.put_frame(Security, numeric_frame())
        forget_schemas(monkeypatch)
        assert_frame_exact(self.read_frame(store, Security, list(numeric_frame().index)), numeric_frame())
        if isinstance(store, ChainedStore):
            assert store.tier_failures == [0] * len(store.tiers)
            for tier in store.tiers:
                forget_schemas(monkeypatch)
                assert_frame_exact(tier.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())

    @pytest.mark.parametrize("where", ["index", "column"])
    def test_key_as_index_or_column(self, needs_pandas: None, store: BaseStore, where: str) -> None:
        df = numeric_frame()
        put = df if where == "index" else df.reset_index()
        if where == "column":
            put.index = pd.RangeIndex(100, 100 + len(put))  # unnamed: not an attribute
        store.put_frame(Security, put)
        assert_frame_exact(self.read_frame(store, Security, list(df.index)), df)

    def test_int_keys(self, needs_pandas: None, store: BaseStore) -> None:
        df = pd.DataFrame({"ssm_id": np.arange(5, dtype=np.int64) * 2**40, "a": np.linspace(0, 1, 5)})
        store.put_frame(Security, df)
        got = self.read_frame(store, Security, df["ssm_id"].tolist())
        assert got.index.dtype == np.int64
        assert_same(store.get(Security, 2**41), Security(ssm_id=2**41, a=0.5))

    def test_composite_key_is_a_multiindex(
        self, needs_pandas: None, store: BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        index = pd.MultiIndex.from_tuples(
            [("XNAS", "AAPL"), ("XNYS", "IBM"), ("XNAS", "MSFT")], names=["exchange", "ticker"]
        )
        df = pd.DataFrame({"isin": ["I1", "I2", "I3"], "px": [1.5, -0.0, np.inf]}, index=index)
        store.put_frame(Listing, df)
        got = self.read_frame(store, Listing, list(index))
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

    def test_object_bool_and_datetime_columns(self, needs_pandas: None, store: BaseStore) -> None:
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
        got = self.read_frame(store, Security, ["A", "B", "C"])
        assert got["flag"].dtype == bool
        assert got["flag"].tolist() == [True, False, True]
        assert got["name"].tolist()[:2] == ["Apple", "Bé ☃"]
        assert got["when"].dtype == "datetime64[us]"
        assert got["when"].iloc[0] == pd.Timestamp("2024-01-02 03:04:05.123456")
        assert got["day"].tolist() == [dt.date(2024, 1, 2), None, dt.date(1, 1, 1)]
        assert got["maybe"].tolist() == [1, None, -(2**63)]  # an int column with a gap stays exact

    def test_columns_subset_in_the_order_asked(self, needs_pandas: None, store: BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = self.read_frame(store, Security, list(df.index), columns=["a1", "n", "never"])
        assert list(got.columns) == ["a1", "n", "never"]
        assert bits(got["a1"]) == bits(df["a1"])
        assert got["n"].tolist() == df["n"].tolist()
        assert got["never"].isna().all()

    def test_keys_subset_leaves_out_what_is_missing(self, needs_pandas: None, store: BaseStore) -> None:
        df = numeric_frame()
        store.put_frame(Security, df)
        got = store.get_frame(Security, keys=["S3", "missing", "S1", {"ssm_id": "S3"}])
        assert list(got.index) == ["S3", "S1"]
        assert got["n"].tolist() == [INT_EXTREMES[3], INT_EXTREMES[1]]
        empty = store.get_frame(Security, keys=["missing"])
        assert len(empty) == 0
        assert empty.index.name == "ssm_id"

    def test_last_row_of_a_key_wins(self, needs_pandas: None, store: BaseStore) -> None:
        df = pd.DataFrame({"ssm_id": ["x", "y", "x"], "v": [1.0, 2.0, 3.0]})
        store.put_frame(Security, df)
        assert_same(store.get(Security, "x"), Security(ssm_id="x", v=3.0))
        assert_same(store.get(Security, "y"), Security(ssm_id="y", v=2.0))

    def test_an_empty_frame_writes_nothing(self, needs_pandas: None, store: BaseStore) -> None:
        store.put_frame(Security, numeric_frame().iloc[:0])
        assert store.get_frame(Security, keys=["S0"]).empty

    def test_a_frame_of_a_dataclass(self, needs_pandas: None, store: BaseStore) -> None:
        store.put_frame(Quote, pd.DataFrame({"symbol": ["AAPL"], "price": [189.5]}))
        assert store.get(Quote, "AAPL") == Quote("AAPL", 189.5)
        got = store.get_frame(Quote, keys=["AAPL"])
        assert got.loc["AAPL", "price"] == 189.5

    # ------------------------------------------------------------------ ordinary records

    def test_a_fresh_process_patches_frame_rows(
        self, needs_pandas: None, store: BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
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
        self, needs_pandas: None, store: BaseStore, monkeypatch: pytest.MonkeyPatch
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
        self.assert_holds(store, Security, list(df.index))
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

    def test_dict_written_records_read_as_a_frame(self, needs_pandas: None, store: BaseStore) -> None:
        store.batch_put(
            [
                Security(ssm_id="d1", a0=float(floats(SPECIAL_BITS[2])[0]), n=-(2**63), s="x", mixed=1),
                Security(ssm_id="d2", a0=-0.0, n=2**63 - 1, s="y", mixed=1.5),
            ]
        )
        store.put_frame(Security, pd.DataFrame({"ssm_id": ["f1"], "a0": [np.inf], "n": [7], "s": ["z"], "mixed": [2]}))
        got = self.read_frame(store, Security, ["d1", "d2", "f1"])
        assert bits(got["a0"]) == [SPECIAL_BITS[2], 0x8000000000000000, 0x7FF0000000000000]
        assert got["n"].dtype == np.int64
        assert got["n"].tolist() == [-(2**63), 2**63 - 1, 7]
        assert got["s"].tolist() == ["x", "y", "z"]
        assert got["mixed"].dtype == object
        assert [type(v) for v in got["mixed"]] == [int, float, int]  # each value as stored

    def test_records_without_an_attribute_read_as_nan_there(self, needs_pandas: None, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id="a", x=1.5), Security(ssm_id="b", y=2)])
        got = store.get_frame(Security, keys=["a", "b"])
        assert got["x"].dtype == np.float64
        assert bits(got["x"])[0] == bits([1.5])[0]
        assert np.isnan(got.loc["b", "x"])
        assert got["y"].tolist() == [None, 2]  # an int column with a gap stays object, exact

    def test_polymorphism(self, needs_pandas: None, store: BaseStore) -> None:
        store.put_frame(Bond, numeric_frame(3, prefix="B"))
        store.put_frame(Security, numeric_frame(2, prefix="S"))
        assert type(store.get(Security, "B1")) is Bond
        bonds = self.read_frame(store, Bond, ["B0", "B1", "B2"])
        assert list(bonds.index) == ["B0", "B1", "B2"]
        everything = store.get_frame(Security, keys=["B0", "S0", "S1"])
        assert list(everything.index) == ["B0", "S0", "S1"]
        assert list(store.get_frame(Bond, keys=["B0", "S0"]).index) == ["B0"]
        if self.lists_keys:
            assert sorted(store.get_frame(Bond).index) == ["B0", "B1", "B2"]
            assert len(store.get_frame(Security)) == 5
        else:
            with pytest.raises(UnsupportedOperationError):
                store.get_frame(Security)

    # ------------------------------------------------------------------ lifetimes

    def test_a_static_lifetime(self, needs_pandas: None) -> None:
        store = self.make(lifetime=60)
        store.put_frame(Security, numeric_frame())
        self.clock.tick(59)
        assert len(store.get_frame(Security, keys=["S0", "S1"])) == 2
        self.clock.tick(2)
        assert store.get(Security, "S0") is None
        assert store.get_frame(Security, keys=["S0", "S1"]).empty

    def test_a_callable_lifetime_gets_each_record(self, needs_pandas: None) -> None:
        seen: list[Any] = []

        def lifetime(obj: Any) -> Any:
            seen.append(obj)
            return obj["ttl"] if obj["ttl"] >= 0 else None

        store = self.make(lifetime=lifetime)
        df = pd.DataFrame(
            {"ssm_id": ["short", "long", "never", "gone"], "ttl": [10.0, 100.0, -1.0, 0.0], "n": [1, 2, 3, 4]}
        )
        store.put_frame(Security, df)
        assert {type(o) for o in seen} == {Security}
        assert_same(next(dict(o) for o in seen if o["ssm_id"] == "long"), {"ssm_id": "long", "ttl": 100.0, "n": 2})
        assert store.get(Security, "gone") is None  # a lifetime already over: not kept
        self.clock.tick(11)
        assert list(store.get_frame(Security, keys=df["ssm_id"]).index) == ["long", "never"]
        self.clock.tick(100)
        assert list(store.get_frame(Security, keys=df["ssm_id"]).index) == ["never"]

    def test_a_lifetime_that_fails_fails_the_frame_before_anything_is_written(self, needs_pandas: None) -> None:
        def lifetime(obj: Any) -> Any:
            if obj["ssm_id"] == "K4321":
                raise ValueError("no lifetime for this one")
            return 60

        store = self.make(lifetime=lifetime)
        keys = [f"K{i:04d}" for i in range(5000)]  # several chunks
        df = pd.DataFrame({"v": np.arange(5000, dtype=float)}, index=pd.Index(keys, name="ssm_id"))
        with pytest.raises(StoreError, match="K4321"):
            store.put_frame(Security, df)
        assert store.get_frame(Security, keys=keys).empty

    def test_schemas_outlive_the_store_lifetime(self, needs_pandas: None, monkeypatch: pytest.MonkeyPatch) -> None:
        store = self.make(lifetime=60)
        store.put_frame(Security, numeric_frame())
        self.clock.tick(61)
        store.put_frame(Security, numeric_frame())  # the schema is not written again by this store
        self.clock.tick(40)  # the first write's schema would have expired 40 s ago
        forget_schemas(monkeypatch)
        assert_frame_exact(store.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())

    # ------------------------------------------------------------------ errors

    @pytest.mark.parametrize("name", list(BAD_FRAMES))
    def test_a_bad_frame_raises_before_anything_is_written(
        self, needs_pandas: None, store: BaseStore, name: str
    ) -> None:
        make, error = BAD_FRAMES[name]
        with pytest.raises(error):
            store.put_frame(Security, make())
        assert store.get_frame(Security, keys=[*GOOD, "a", 1]).empty

    def test_not_a_frame(self, needs_pandas: None, store: BaseStore) -> None:
        with pytest.raises(SerializationError):
            store.put_frame(Security, {"ssm_id": ["a"]})

    @pytest.mark.parametrize("columns", ["a0", [1]], ids=["a-str", "not-str"])
    def test_columns_must_be_names(self, needs_pandas: None, store: BaseStore, columns: Any) -> None:
        with pytest.raises(SerializationError):
            store.get_frame(Security, keys=["x"], columns=columns)
