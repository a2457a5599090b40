"""A store and a plain dict, driven by the same random operations, must always agree."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import stockstore as ss
from stockstore.backends import MemoryStore
from stockstore.errors import InvalidKeyError
from stockstore.testing import assert_same, expected


class Row(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["k", "alt"]


KEYS = st.sampled_from(["a", "b", "", "a b", 1, "1", -(2**63)])
ALTS = st.sampled_from(["x", "y", 7])
NAMES = st.sampled_from(["f", "g", "h"])
VALUES = st.one_of(
    st.sampled_from([1.0, 1, -0.0, math.nan, math.inf, 2**63 - 1, True, None, "", b"\x00", {}, []]),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from([dt.datetime(2020, 1, 1), dt.date(2020, 1, 1), decimal.Decimal("-0.00")]),
    st.lists(st.integers(-5, 5), max_size=3),
    st.tuples(st.booleans(), st.floats(allow_nan=True)),
)
ATTRS = st.dictionaries(NAMES, VALUES, max_size=3)


def machine_for(make_store: Callable[[str], ss.BaseStore]) -> type[RuleBasedStateMachine]:
    class StoreVersusDict(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = make_store(f"s{uuid.uuid4().hex[:12]}")
            self.model: dict[Any, dict[str, Any]] = {}

        def teardown(self) -> None:
            self.store.close()

        def holder(self, alt: Any) -> tuple[type, Any] | None:
            """The model key of the record holding this alternate key value."""
            return next((k for k, attrs in self.model.items() if _same_key(attrs.get("alt"), alt)), None)

        @rule(key=KEYS, attrs=ATTRS, alt=st.none() | ALTS)
        def put(self, key: Any, attrs: dict[str, Any], alt: Any) -> None:
            record = {**attrs, "k": key, "alt": alt}
            other = None if alt is None else self.holder(alt)
            if other is not None and other != _model_key(key):
                with pytest.raises(InvalidKeyError):
                    self.store.put(Row(record))
                return
            self.store.put(Row(record))
            self.model[_model_key(key)] = expected(record)

        @rule(items=st.lists(st.tuples(KEYS, ATTRS), max_size=5))
        def batch_put(self, items: list[tuple[Any, dict[str, Any]]]) -> None:
            self.store.batch_put([Row({**attrs, "k": key}) for key, attrs in items])
            for key, attrs in items:
                self.model[_model_key(key)] = expected({**attrs, "k": key})

        @rule(key=KEYS, changes=ATTRS)
        def patch(self, key: Any, changes: dict[str, Any]) -> None:
            self.store.patch(Row, key, changes)
            current = self.model.setdefault(_model_key(key), {"k": key})
            current.update(expected(changes))

        @rule(items=st.lists(st.tuples(KEYS, ATTRS), max_size=5))
        def batch_patch(self, items: list[tuple[Any, dict[str, Any]]]) -> None:
            self.store.batch_patch(Row, [{**changes, "k": key} for key, changes in items])
            for key, changes in items:
                self.model.setdefault(_model_key(key), {"k": key}).update(expected(changes))

        @rule(key=KEYS)
        def delete(self, key: Any) -> None:
            self.store.delete(Row, key)
            self.model.pop(_model_key(key), None)

        @rule(keys=st.lists(KEYS, max_size=5))
        def batch_delete(self, keys: list[Any]) -> None:
            want = len({_model_key(k) for k in keys} & set(self.model))
            assert self.store.batch_delete(Row, keys) == want
            for key in keys:
                self.model.pop(_model_key(key), None)

        @rule()
        def clear(self) -> None:
            assert self.store.clear(Row) == len(self.model)
            self.model.clear()

        @rule(key=KEYS)
        def get(self, key: Any) -> None:
            self.check(self.store.get(Row, key), self.model.get(_model_key(key)))

        @rule(keys=st.lists(KEYS, max_size=6))
        def batch_get(self, keys: list[Any]) -> None:
            for got, key in zip(self.store.batch_get(Row, keys), keys, strict=True):
                self.check(got, self.model.get(_model_key(key)))

        @rule(alt=ALTS)
        def get_by_alternate(self, alt: Any) -> None:
            holder = self.holder(alt)
            self.check(self.store.get(Row, {"alt": alt}), None if holder is None else self.model[holder])

        @invariant()
        def listing_agrees(self) -> None:
            listed = list(self.store.keys(Row))
            assert sorted(map(_model_key, listed), key=repr) == sorted(self.model, key=repr)
            assert self.store.count(Row) == len(self.model)

        @staticmethod
        def check(got: Any, want: dict[str, Any] | None) -> None:
            if want is None:
                assert got is None
            else:
                assert type(got) is Row
                assert_same(dict(got), want)

    return StoreVersusDict


def _model_key(key: Any) -> tuple[type, Any]:
    """A dict key that keeps "1" and 1 apart."""
    return (type(key), key)


def _same_key(a: Any, b: Any) -> bool:
    return a is not None and _model_key(a) == _model_key(b)


SETTINGS = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_memory_store_agrees_with_a_dict() -> None:
    run_state_machine_as_test(machine_for(lambda ns: MemoryStore(namespace=ns)), settings=SETTINGS)


def test_chain_of_memory_agrees_with_a_dict() -> None:
    machine = machine_for(lambda ns: ss.ChainedStore([MemoryStore(lifetime=5), MemoryStore(namespace=ns)]))
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_sqlite_store_agrees_with_a_dict(sqlite_url: str) -> None:
    from stockstore.backends import SqlStore

    run_state_machine_as_test(machine_for(lambda ns: SqlStore(sqlite_url, namespace=ns)), settings=SETTINGS)


def test_chain_over_sqlite_agrees_with_a_dict(sqlite_url: str) -> None:
    from stockstore.backends import SqlStore

    machine = machine_for(lambda ns: ss.ChainedStore([MemoryStore(), SqlStore(sqlite_url, namespace=ns)]))
    run_state_machine_as_test(machine, settings=SETTINGS)
