"""`from_url`: a thin table from URL scheme to store class."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._store import BaseStore
from .errors import StoreError

# scheme -> "module:Class"; the class receives the whole URL as its "where".
_SCHEMES = {
    "memory": "stockstore.backends.memory:MemoryStore",
    "threadlocal": "stockstore.backends.memory:ThreadLocalStore",
    "sqlite": "stockstore.backends.sql:SqlStore",
    "postgresql": "stockstore.backends.sql:SqlStore",
    "mysql": "stockstore.backends.sql:SqlStore",
    "mariadb": "stockstore.backends.sql:SqlStore",
    "memcache": "stockstore.backends.memcache:MemcacheStore",
}
# Query options an in-process URL may carry (memory://?max_items=1000), and their types.
_IN_PROCESS_OPTIONS: dict[str, Callable[[str], Any]] = {"namespace": str, "lifetime": float, "max_items": int}


def from_url(url: str, **options: Any) -> BaseStore:
    """Build a store from a URL; *options* go to the store's constructor.

    ``memory://`` and ``threadlocal://`` take no location; SQL URLs are
    SQLAlchemy URLs (``sqlite:///file.db``, ``postgresql+psycopg://...``).
    Other packages add schemes through the ``stockstore.backends`` entry-point group.
    """
    scheme = urlsplit(url).scheme.lower()
    target = _SCHEMES.get(scheme.split("+", 1)[0])
    if target is None:
        plugins = {ep.name: ep for ep in entry_points(group="stockstore.backends")}
        if scheme not in plugins:
            raise StoreError(f"no stockstore backend for URL scheme {scheme!r}")
        cls = plugins[scheme].load()
    else:
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
    if scheme in ("memory", "threadlocal"):
        return cls(**_query_options(url), **options)  # type: ignore[no-any-return]
    return cls(url, **options)  # type: ignore[no-any-return]


def _query_options(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.netloc or parts.path.strip("/"):
        raise StoreError(f"{parts.scheme}:// takes no location, only ?options: {url!r}")
    options: dict[str, Any] = {}
    for name, text in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        if name not in _IN_PROCESS_OPTIONS:
            raise StoreError(f"unknown option {name!r} in {url!r}; known: {sorted(_IN_PROCESS_OPTIONS)}")
        try:
            options[name] = _IN_PROCESS_OPTIONS[name](text)
        except ValueError as exc:
            raise StoreError(f"bad value for option {name!r} in {url!r}: {text!r}") from exc
    return options
