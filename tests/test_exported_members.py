"""The public surface is one sorted list per public module, and nothing public hides outside it."""

from __future__ import annotations

import importlib
import types

import pytest

import stockstore
import stockstore.errors
import stockstore.testing

# Public submodules named in API.md; every other submodule is `_`-prefixed.
PUBLIC_SUBMODULES = {"backends", "errors"}
# Public too, but imported only by the console script (it needs click) and by tests (the
# conformance suite needs pytest): never in __all__.
ON_DEMAND = {"cli", "testing"}


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not (isinstance(value, types.ModuleType) and name not in PUBLIC_SUBMODULES)
        and name not in ON_DEMAND
        and getattr(value, "__module__", module.__name__).startswith("stockstore")
    }


@pytest.mark.parametrize("module", [stockstore, stockstore.errors, stockstore.testing], ids=lambda m: m.__name__)
def test_all_is_complete_and_sorted(module: types.ModuleType) -> None:
    exported = module.__all__
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for name in exported:  # (first: a name imported on first use is then in the module too)
        assert getattr(module, name) is not None
    assert set(exported) == public_names(module)


def test_top_level_names_of_the_contract() -> None:
    assert {"BaseStore", "ChainedStore", "Record", "UNSET", "backends", "errors", "from_config", "from_url"} <= set(
        stockstore.__all__
    )
    assert set(stockstore.errors.__all__) == {
        "BackendUnavailableError",
        "BatchError",
        "InvalidKeyError",
        "QueryError",
        "SerializationError",
        "StoreClosedError",
        "StoreError",
        "UnsupportedOperationError",
    }


def test_a_backend_author_finds_everything_in_backends_base() -> None:
    base = importlib.import_module("stockstore.backends.base")
    assert base.__all__ == sorted(base.__all__)
    for name in base.__all__:
        assert getattr(base, name) is not None
    wanted = {"BaseStore", "Entry", "Family", "Merge", "PartialWrite", "Stored", "plan_fill", "plan_write"}
    assert wanted <= set(base.__all__)
    assert base.BaseStore is stockstore.BaseStore


def test_submodules_are_private_or_listed() -> None:
    modules = {name for name, value in vars(stockstore).items() if isinstance(value, types.ModuleType)}
    assert {m for m in modules if not m.startswith("_")} <= PUBLIC_SUBMODULES | ON_DEMAND


def test_the_test_kit_names_of_the_contract() -> None:
    assert stockstore.testing.BackendSuite.__name__ == "BackendSuite"
    assert dir(stockstore.testing) == sorted(stockstore.testing.__all__)
    with pytest.raises(AttributeError):
        stockstore.testing.NoSuchName  # noqa: B018 -- the attribute access is the test


def test_backends_are_listed_and_sorted() -> None:
    assert stockstore.backends.__all__ == sorted(stockstore.backends.__all__)
    assert dir(stockstore.backends) == sorted(stockstore.backends.__all__)
    assert stockstore.backends.MemoryStore.__name__ == "MemoryStore"
    with pytest.raises(AttributeError):
        stockstore.backends.NoSuchStore  # noqa: B018 -- the attribute access is the test
