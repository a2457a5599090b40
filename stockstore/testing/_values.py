"""put, get and delete of one record; every value type round-trips with its type (see Values in Concepts)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from .._record import attributes_of
from .._store import BaseStore
from ._base import SuiteBase
from ._exact import assert_record, assert_same, expected
from ._records import STORABLE, VALUES, InitCounter, Listing, Security, make_storable, numpy_scalars


class PutGetTests(SuiteBase):
    @pytest.mark.parametrize("name", list(VALUES))
    def test_value_round_trips_with_its_type(self, store: BaseStore, name: str) -> None:
        store.put(Security(ssm_id="x", value=VALUES[name]))
        got = store.get(Security, "x")
        assert got is not None
        assert type(got) is Security
        assert_same(got["value"], expected(VALUES[name]))

    def test_every_value_in_one_wide_record(self, store: BaseStore) -> None:
        sec = Security(ssm_id="wide", **VALUES, **{f"a{i}": i / 7 for i in range(300)})
        store.put(sec)
        assert_record(store.get(Security, "wide"), sec)

    def test_wide_records_come_back_in_their_attribute_order(self, store: BaseStore) -> None:
        """The key last, a str among the floats, floats missing: each record reads back in its own order."""
        floats = {f"a{i}": i / 7 for i in range(40)}
        missing = {name: value for name, value in floats.items() if name not in ("a3", "a17", "a39")}
        records = [
            Security(**floats, ssm_id="last"),
            Security(**dict(list(floats.items())[:20]), ssm_id="middle", note="n", **dict(list(floats.items())[20:])),
            Security(ssm_id="first", **floats),
            Security(ssm_id="sparse", **missing),
            Security(**missing, ssm_id="sparse last", n=1),
        ]
        store.batch_put(records)
        got = store.batch_get(Security, [r["ssm_id"] for r in records])
        for record, back in zip(records, got, strict=True):
            assert_record(back, record)
            assert list(attributes_of(back)) == list(record), f"{record['ssm_id']}: attribute order"
        store.patch(Security, "last", {"a5": -0.0, "added": "x"})
        patched = store.get(Security, "last")
        assert list(attributes_of(patched)) == [*floats, "ssm_id", "added"]
        assert_record(patched, Security(**{**floats, "a5": -0.0}, ssm_id="last", added="x"))
        store.patch(Security, "sparse", {"a17": 1.5})  # a missing float between others: it comes last, as in a dict
        assert list(attributes_of(store.get(Security, "sparse"))) == ["ssm_id", *missing, "a17"]

    def test_numpy_scalars_come_back_as_the_python_values_they_equal(self, store: BaseStore) -> None:
        """Through put, batch_put, patch and batch_patch; top level and nested; in wide records too (rows)."""
        np = pytest.importorskip("numpy")
        scalars = numpy_scalars(np)
        given = {name: value for name, (value, _) in scalars.items()}
        want = {name: python for name, (_, python) in scalars.items()}
        store.put(Security(ssm_id="one", **given, nested=[given, tuple(given.values())]))
        assert_record(store.get(Security, "one"), Security(ssm_id="one", **want, nested=[want, list(want.values())]))
        floats = {f"a{i}": np.float64(i / 7) for i in range(40)}
        python_floats = {f"a{i}": i / 7 for i in range(40)}
        store.batch_put([Security(ssm_id=f"w{n}", **floats, **given) for n in range(3)])
        for n, got in enumerate(store.batch_get(Security, ["w0", "w1", "w2"])):
            assert_record(got, Security(ssm_id=f"w{n}", **python_floats, **want))
        store.patch(Security, "w0", {"a3": np.float32(0.1), "new": np.int16(7)})
        store.patch(Security, "created", given)
        store.batch_patch(Security, [{"ssm_id": "w1", "a5": given["float64_nan_payload"]}, {"ssm_id": "made", **given}])
        after = {**python_floats, **want}
        assert_record(store.get(Security, "w0"), Security(ssm_id="w0", **{**after, "a3": want["float32"]}, new=7))
        assert_record(store.get(Security, "created"), Security(ssm_id="created", **want))
        assert_record(store.get(Security, "w1"), Security(ssm_id="w1", **{**after, "a5": want["float64_nan_payload"]}))
        assert_record(store.get(Security, "made"), Security(ssm_id="made", **want))

    @pytest.mark.parametrize("cls", STORABLE, ids=lambda c: c.__name__)
    def test_class_comes_back_without_init(self, store: BaseStore, cls: type) -> None:
        obj = make_storable(cls, "s1", 1.5)
        calls = InitCounter.calls
        store.put(obj)
        got = store.get(cls, "s1")
        assert InitCounter.calls == calls, "__init__ / __post_init__ ran while storing or rebuilding"
        assert_record(got, obj)

    def test_plain_class_whose_init_raises(self, store: BaseStore) -> None:
        class Hostile:
            __stockstore_keys__: ClassVar[list[Any]] = ["k"]

            def __init__(self) -> None:
                raise AssertionError("__init__ must not be called")

        obj = object.__new__(Hostile)
        obj.k, obj.v = "k", [1.0]  # type: ignore[attr-defined]
        store.put(obj)
        assert_record(store.get(Hostile, "k"), obj)

    def test_awkward_attribute_names(self, store: BaseStore) -> None:
        names = ["", " ", "ssm_id ", "SSM_ID", "a" * 300, "é", "\x00", "__class__", "__dict__", "0", "a.b", "k:v"]
        rec = Security(ssm_id="x", **{name: i for i, name in enumerate(names)})
        store.put(rec)
        assert_record(store.get(Security, "x"), rec)
        store.patch(Security, "x", {n: -1.0 for n in names})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", **{n: -1.0 for n in names}))

    def test_put_replaces_the_whole_record(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="x", a=1, b=2))
        store.put(Security(ssm_id="x", c=3.0))
        assert_record(store.get(Security, "x"), Security(ssm_id="x", c=3.0))
        self.assert_holds(store, Security, ["x"])

    def test_missing_is_none(self, store: BaseStore) -> None:
        assert store.get(Security, "nope") is None
        assert store.get(Listing, ("X", "T")) is None
        assert store.get(Listing, {"isin": "I"}) is None

    def test_each_get_is_a_new_object(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="x", a=[1]))
        first, second = store.get(Security, "x"), store.get(Security, "x")
        assert first is not None
        assert second is not None
        assert first is not second
        assert first["a"] is not second["a"]

    def test_delete_by_object_and_by_key(self, store: BaseStore) -> None:
        a, b = Security(ssm_id="a"), Security(ssm_id="b")
        store.batch_put([a, b])
        store.delete(a)
        store.delete(Security, "b")
        assert store.get(Security, "a") is None
        assert store.get(Security, "b") is None
        self.assert_holds(store, Security, [], among=["a", "b"])
        store.delete(Security, "b")  # absent is fine
        store.delete(a)

    def test_delete_by_alternate_key(self, store: BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", isin="I"))
        store.delete(Listing, {"isin": "I"})
        assert store.get(Listing, ("X", "T")) is None

    def test_other_records_untouched(self, store: BaseStore) -> None:
        keep = Security(ssm_id="keep", v=1.0)
        store.put(keep)
        store.put(Security(ssm_id="x"))
        store.delete(Security, "x")
        assert_record(store.get(Security, "keep"), keep)

    def test_context_manager(self) -> None:
        with self.make() as store:
            store.put(Security(ssm_id="x"))
            assert store.get(Security, "x") is not None
