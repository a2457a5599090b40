"""Store backends, imported on first use so ``import stockstore`` loads no driver.

``stockstore.backends.RedisMsgpackStore`` imports redis only when touched; a
missing driver raises an ImportError naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .memcache import MemcacheStore
    from .memory import MemoryStore, ThreadLocalStore
    from .redis import RedisHashStore, RedisMsgpackStore
    from .sql import SqlStore

__all__ = ["MemcacheStore", "MemoryStore", "RedisHashStore", "RedisMsgpackStore", "SqlStore", "ThreadLocalStore"]

# class name -> (module, extra that provides its driver)
_WHERE = {
    "MemoryStore": ("memory", None),
    "ThreadLocalStore": ("memory", None),
    "SqlStore": ("sql", "sql"),
    "MemcacheStore": ("memcache", "memcache"),
    "RedisHashStore": ("redis", "redis"),
    "RedisMsgpackStore": ("redis", "redis"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, extra = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        if extra is None or exc.name is None or exc.name.startswith(__name__):
            raise
        raise ImportError(f"{name} needs {exc.name!r}: pip install 'stockstore[{extra}]'", name=exc.name) from exc
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
