"""Values and names a store cannot hold are refused before anything is written (API.md sections 1 and 2)."""

from __future__ import annotations

import pytest

from .._store import BaseStore
from ..errors import SerializationError, StoreError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import UNSUPPORTED, Security


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

    def test_unsupported_attribute_name(self, store: BaseStore) -> None:
        rec = Security(ssm_id="x")
        rec[1] = "int attribute name"  # type: ignore[index]
        with pytest.raises(SerializationError):
            store.put(rec)
        self.assert_holds(store, Security, [], among=["x"])

    def test_bad_namespace(self) -> None:
        with pytest.raises((StoreError, ValueError)):
            self.make(namespace=0)
