"""A subclass is stored under its base class's keys and comes back as itself (see Values in Concepts)."""

from __future__ import annotations

import pytest

from .._store import BaseStore
from ..errors import UnsupportedOperationError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import Bond, Callable_, Equity, Security


class PolymorphismTests(SuiteBase):
    def test_get_base_returns_the_subclass(self, store: BaseStore) -> None:
        objs = [Security(ssm_id="s"), Bond(ssm_id="b", coupon=0.05), Callable_(ssm_id="c"), Equity(ssm_id="e")]
        store.batch_put(objs)
        for obj, got in zip(objs, store.batch_get(Security, ["s", "b", "c", "e"]), strict=True):
            assert_record(got, obj)

    def test_subclass_shares_the_base_key_space(self, store: BaseStore) -> None:
        store.put(Security(ssm_id="x", v=1))
        store.put(Bond(ssm_id="x", v=2))
        self.assert_holds(store, Security, ["x"])
        assert_record(store.get(Security, "x"), Bond(ssm_id="x", v=2))

    def test_get_sub_is_none_for_other_classes(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id="s"), Bond(ssm_id="b"), Callable_(ssm_id="c"), Equity(ssm_id="e")])
        assert store.batch_get(Bond, ["s", "b", "c", "e"])[0] is None
        assert [type(o) for o in store.batch_get(Bond, ["b", "c"])] == [Bond, Callable_]
        assert store.get(Bond, "e") is None
        assert store.get(Equity, "b") is None
        assert store.get(Callable_, "b") is None

    def test_keys_count_clear_of_a_subclass(self, store: BaseStore) -> None:
        records = (
            [Security(ssm_id=f"s{i}") for i in range(3)]
            + [Bond(ssm_id=f"b{i}") for i in range(4)]
            + [Callable_(ssm_id="c")]
            + [Equity(ssm_id="e")]
        )
        store.batch_put(records)
        if not self.lists_keys:  # clear(Subclass) needs the subclass's keys too
            for call in (lambda: list(store.keys(Bond)), lambda: store.count(Bond), lambda: store.clear(Bond)):
                with pytest.raises(UnsupportedOperationError):
                    call()
            for rec, got in zip(records, store.batch_get(Security, [r["ssm_id"] for r in records]), strict=True):
                assert_record(got, rec)
            return
        assert sorted(store.keys(Bond)) == ["b0", "b1", "b2", "b3", "c"]
        assert store.count(Bond) == 5
        assert store.count(Equity) == 1
        assert store.count(Security) == 9
        assert store.clear(Bond) == 5
        assert sorted(store.keys(Security)) == ["e", "s0", "s1", "s2"]
        assert store.clear(Equity) == 1
        assert store.count(Security) == 3

    def test_delete_through_a_subclass_key(self, store: BaseStore) -> None:
        store.put(Bond(ssm_id="b"))
        store.delete(Security, "b")
        assert store.get(Bond, "b") is None
