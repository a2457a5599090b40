"""What every capability of the suite shares: the flags, the per-test fixtures, making stores, reading what is held.

`BackendSuite` (in ``_suite.py``) documents the flags and the one method a subclass writes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import UnsupportedOperationError
from ._clock import FakeClock


def typed(key: Any) -> Any:
    """*key* with the type of each part, so ``1``, ``"1"`` and ``True`` never compare equal."""
    if type(key) is tuple:
        return tuple((type(part), part) for part in key)
    return (type(key), key)


class SuiteBase:
    """The base of every capability class: flags (documented on `BackendSuite`), fixtures, helpers."""

    lists_keys: bool = True
    finds: bool = True
    counts_cleared: bool = True
    grows_versions: bool = True
    gives_fill_tokens: bool = False
    shares_namespace_between_instances: bool = True
    shared_between_threads: bool = True
    largest_record_size: int | None = None
    largest_record_error: str = ""

    namespace: str
    clock: FakeClock

    def make_store(self, **options: Any) -> BaseStore:
        """A new store of the backend under test, built with *options* (see `BackendSuite`)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must define make_store(self, **options) returning a new store of its "
            "backend, with options (namespace=, lifetime=, clock=) passed on to BaseStore.__init__"
        )

    @pytest.fixture(autouse=True)
    def _stockstore_test(self, request: pytest.FixtureRequest) -> None:
        """A namespace no other test or run uses, and a fake clock starting at the real time (whole seconds)."""
        self.namespace = f"t{uuid.uuid4().hex[:16]}"
        self.clock = FakeClock(float(int(time.time())))
        self._test_node = request.node

    def make(
        self, *, namespace: Any = None, lifetime: Any = None, clock: Callable[[], float] | None = None
    ) -> BaseStore:
        """A store from `make_store`, in the test's namespace and on its clock unless told otherwise.

        Every store made is closed when the test ends, before any fixture of the test is
        torn down (the server a store talks to included).
        """
        store = self.make_store(
            namespace=self.namespace if namespace is None else namespace,
            lifetime=lifetime,
            clock=self.clock if clock is None else clock,
        )
        self._test_node.addfinalizer(store.close)
        return store

    @pytest.fixture
    def store(self) -> BaseStore:
        """One store in the test's namespace, on the test's clock."""
        return self.make()

    def stored_state(self, store: BaseStore, cls: type, key: Any) -> object:
        """What *store* holds for one record, below the public API; ``None`` (the default) to check nothing more.

        The hostile-input tests read it for every bystander record before and after each
        hostile call, and require it unchanged (the public API is always checked too).
        Override it to compare what your backend really holds: the stored bytes, version
        and expiry of the record of *cls* whose primary key is *key*.
        """
        return None

    # ------------------------------------------------------------------ checking what is held

    def cleared(self, count: int) -> int:
        """What `clear` of a class that declares its keys returns after removing *count* records."""
        return count if self.counts_cleared else 0

    def assert_holds(self, store: BaseStore, cls: type, want: Iterable[Any], *, among: Iterable[Any] = ()) -> None:
        """*store* holds records of *cls* under exactly the primary keys *want*.

        A store that lists its keys must list exactly *want* (type and value) and count as
        many.  One that cannot (`lists_keys` false) must refuse both with
        `UnsupportedOperationError`, and is asked instead with `batch_get`: every key of
        *want* must be held, and none of *among* (the other keys the test wrote).
        """
        want = list(want)
        if self.lists_keys:
            listed = list(store.keys(cls))
            assert sorted(map(typed, listed), key=repr) == sorted(map(typed, want), key=repr), (
                f"{cls.__qualname__}: listed {listed!r:.200}, want {want!r:.200}"
            )
            assert store.count(cls) == len(want)
            return
        with pytest.raises(UnsupportedOperationError):
            list(store.keys(cls))
        with pytest.raises(UnsupportedOperationError):
            store.count(cls)
        wanted = {typed(k) for k in want}
        others = [k for k in among if typed(k) not in wanted]
        got = store.batch_get(cls, [*want, *others])
        missing = [k for k, obj in zip(want, got, strict=False) if obj is None]
        extra = [k for k, obj in zip(others, got[len(want) :], strict=True) if obj is not None]
        assert missing == [], f"{cls.__qualname__}: not held: {missing!r:.200}"
        assert extra == [], f"{cls.__qualname__}: held, but should not be: {extra!r:.200}"
