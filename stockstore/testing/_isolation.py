"""What a store returns is never shared state, and namespaces never see each other (see the store API in Concepts)."""

from __future__ import annotations

from typing import Any

import pytest

from .._store import BaseStore
from ._base import SuiteBase
from ._exact import assert_record, assert_same
from ._records import Listing, Quote, Security


class IsolationTests(SuiteBase):
    def test_mutating_the_put_object_changes_nothing(self, store: BaseStore) -> None:
        inner: list[Any] = [1, {"a": 2}]
        obj = Security(ssm_id="x", inner=inner)
        store.put(obj)
        obj["inner"].append(3)
        inner[1]["a"] = 99
        obj["new"] = 1
        assert_record(store.get(Security, "x"), Security(ssm_id="x", inner=[1, {"a": 2}]))

    def test_mutating_the_got_object_changes_nothing(self, store: BaseStore) -> None:
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
    def test_namespaces_do_not_see_each_other(self, other: str) -> None:
        mine, theirs = self.make(), self.make(namespace=f"{self.namespace}{other}")
        mine.batch_put(
            [Security(ssm_id="a", v=1), Security(ssm_id="b", v=1), Listing(exchange="X", ticker="T", isin="I")]
        )
        theirs.batch_put([Security(ssm_id="b", v=2), Security(ssm_id="c", v=2)])
        theirs.put(Listing(exchange="Y", ticker="T", isin="I"))  # the same alternate key is fine elsewhere
        self.assert_holds(mine, Security, ["a", "b"], among=["c"])
        self.assert_holds(theirs, Security, ["b", "c"], among=["a"])
        assert_same(mine.get(Security, "b")["v"], 1)  # type: ignore[index]
        assert_same(theirs.get(Security, "b")["v"], 2)  # type: ignore[index]
        assert theirs.get(Security, "a") is None
        assert_record(mine.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="T", isin="I"))
        assert theirs.clear(Security) == self.cleared(2)
        self.assert_holds(mine, Security, ["a", "b"], among=["c"])
        assert mine.batch_delete(Security, ["a", "b", "c"]) == 2
        assert_record(theirs.get(Listing, {"isin": "I"}), Listing(exchange="Y", ticker="T", isin="I"))

    def test_same_namespace_shares_data(self) -> None:
        if not self.shares_namespace_between_instances:
            pytest.skip("shares_namespace_between_instances is false: each store holds its own records")
        first, second = self.make(), self.make()
        first.put(Security(ssm_id="x", v=1))
        assert_record(second.get(Security, "x"), Security(ssm_id="x", v=1))
