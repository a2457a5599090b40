"""Values and names a store cannot hold are refused before anything is written (see Values in Concepts, and Errors)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import SerializationError, StoreError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import UNSUPPORTED, Listing, Security


class ErrorTests(SuiteBase):
    @pytest.mark.parametrize("name", list(UNSUPPORTED))
    def test_unsupported_value_raises_before_writing(self, store: BaseStore, name: str) -> None:
        store.put(Security(ssm_id="x", v="old"))
        with pytest.raises(SerializationError):
            store.put(Security(ssm_id="x", v=UNSUPPORTED[name]))
        with pytest.raises(SerializationError):
            store.put(Security(ssm_id="y", v=UNSUPPORTED[name]))
        assert_record(store.get(Security, "x"), Security(ssm_id="x", v="old"))
        assert store.get(Security, "y") is None

    def test_a_refused_value_in_a_large_batch_names_its_record_and_attribute(self, store: BaseStore) -> None:
        """One bad value among 20,000 records: the error says which record, where in it, and what to do."""
        batch = [Security(ssm_id=f"S{n}", px={"close": [1.0, 2.0, 3.0]}) for n in range(20_000)]
        batch[13_517]["px"]["close"].append({1.5})
        with pytest.raises(SerializationError) as raised:
            store.batch_put(batch)
        assert str(raised.value) == (
            "Security 'S13517': attribute 'px'['close'][3]: cannot store a value of type set: {1.5}; "
            "convert with sorted() or list()"
        )
        self.assert_holds(store, Security, [], among=["S0", "S13516", "S13517", "S19999"])

    def test_a_refused_value_in_a_patch_names_its_record(self, store: BaseStore) -> None:
        store.put(Listing(exchange="X", ticker="T", n=1))
        with pytest.raises(SerializationError, match=r"^Listing \('X', 'T'\): attribute 'age': .*\.total_seconds\(\)$"):
            store.patch(Listing, ("X", "T"), {"age": dt.timedelta(1)})
        patches: list[dict[str, Any]] = [{"ssm_id": "a", "v": 1}, {"ssm_id": "b", "v": [1, 2**64]}]
        with pytest.raises(SerializationError, match=r"^Security 'b': attribute 'v'\[1\]: int out of the 64-bit"):
            store.batch_patch(Security, patches)
        assert_record(store.get(Listing, ("X", "T")), Listing(exchange="X", ticker="T", n=1))
        self.assert_holds(store, Security, [], among=["a", "b"])

    def test_unsupported_attribute_name(self, store: BaseStore) -> None:
        rec = Security(ssm_id="x")
        rec[1] = "int attribute name"  # type: ignore[index]
        with pytest.raises(SerializationError):
            store.put(rec)
        self.assert_holds(store, Security, [], among=["x"])

    def test_bad_namespace(self) -> None:
        with pytest.raises((StoreError, ValueError)):
            self.make(namespace=0)
