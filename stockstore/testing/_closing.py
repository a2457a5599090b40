"""A closed store refuses every call (``close()``, ``with store:``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import StoreClosedError
from ._base import SuiteBase
from ._records import Security

CALLS: dict[str, Callable[[BaseStore], Any]] = {
    "put": lambda s: s.put(Security(ssm_id="k")),
    "get": lambda s: s.get(Security, "k"),
    "delete": lambda s: s.delete(Security, "k"),
    "patch": lambda s: s.patch(Security, "k", {"v": 1.0}),
    "batch_put": lambda s: s.batch_put([]),
    "batch_get": lambda s: s.batch_get(Security, []),
    "batch_delete": lambda s: s.batch_delete(Security, []),
    "batch_patch": lambda s: s.batch_patch(Security, []),
    "keys": lambda s: s.keys(Security),
    "count": lambda s: s.count(Security),
    "clear": lambda s: s.clear(Security),
}


class ClosingTests(SuiteBase):
    @pytest.mark.parametrize("call", list(CALLS))
    def test_a_closed_store_refuses_every_call(self, call: str) -> None:
        store = self.make()
        store.put(Security(ssm_id="k"))
        store.close()
        with pytest.raises(StoreClosedError, match="closed"):
            CALLS[call](store)
        store.close()  # closing again is fine

    def test_leaving_a_with_block_closes_the_store(self) -> None:
        with self.make() as store:
            store.put(Security(ssm_id="k"))
        with pytest.raises(StoreClosedError):
            store.get(Security, "k")
