"""`from_url`: a thin table from URL scheme to store class."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._store import BaseStore
from .errors import StoreError

# scheme (before any "+driver") -> "module:Class"; the class receives the URL as its "where".
_SCHEMES = {
    "memory": "stockstore.backends.memory:MemoryStore",
    "threadlocal": "stockstore.backends.memory:ThreadLocalStore",
    "sqlite": "stockstore.backends.sql:SqlStore",
    "postgresql": "stockstore.backends.sql:SqlStore",
    "mysql": "stockstore.backends.sql:SqlStore",
    "mariadb": "stockstore.backends.sql:SqlStore",
    "memcache": "stockstore.backends.memcache:MemcacheStore",
    "redis": "stockstore.backends.redis:RedisMsgpackStore",
    "rediss": "stockstore.backends.redis:RedisMsgpackStore",
}
_REDIS_LAYOUTS = {"msgpack": "RedisMsgpackStore", "hash": "RedisHashStore"}

# stockstore's own query options, and their types; Redis URLs hand every other option to redis-py.
_IN_PROCESS_OPTIONS: dict[str, Callable[[str], Any]] = {"namespace": str, "lifetime": float, "max_items": int}
_REDIS_OPTIONS: dict[str, Callable[[str], Any]] = {
    "namespace": str,
    "lifetime": float,
    "layout": str,
    "chunk_size": int,
    "timeout": float,
    "connect_timeout": float,
    "retries": int,
}


def from_url(url: str, **options: Any) -> BaseStore:
    """Build a store from a URL; *options* go to the store's constructor.

    ``memory://`` and ``threadlocal://`` take no location; SQL URLs are
    SQLAlchemy URLs (``sqlite:///file.db``, ``postgresql+psycopg://...``); Redis URLs
    are redis-py's, plus ``redis+cluster://h1:p1,h2:p2`` and ``?layout=hash`` for
    `RedisHashStore`.  Other packages add schemes through the ``stockstore.backends``
    entry-point group.
    """
    scheme = urlsplit(url).scheme.lower()
    target = _SCHEMES.get(scheme.split("+", 1)[0])
    if target is None:
        plugins = {ep.name: ep for ep in entry_points(group="stockstore.backends")}
        if scheme not in plugins:
            raise StoreError(f"no stockstore backend for URL scheme {scheme!r}")
        return plugins[scheme].load()(url, **options)  # type: ignore[no-any-return]
    module, _, name = target.partition(":")
    if scheme in ("memory", "threadlocal"):
        parts = urlsplit(url)
        if parts.netloc or parts.path.strip("/"):
            raise StoreError(f"{scheme}:// takes no location, only ?options")
        own, _ = _own_options(scheme, parts.query, _IN_PROCESS_OPTIONS, strict=True)
        return _class(module, name)(**own, **options)  # type: ignore[no-any-return]
    if module.endswith(".redis"):
        parts = urlsplit(url)
        own, rest = _own_options(scheme, parts.query, _REDIS_OPTIONS, strict=False)
        layout = own.pop("layout", "msgpack")
        if layout not in _REDIS_LAYOUTS:
            raise StoreError(f"unknown Redis layout {layout!r}; known: {sorted(_REDIS_LAYOUTS)}")
        url = urlunsplit(parts._replace(query=urlencode(rest)))
        return _class(module, _REDIS_LAYOUTS[layout])(url, **own, **options)  # type: ignore[no-any-return]
    return _class(module, name)(url, **options)  # type: ignore[no-any-return]


def _class(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _own_options(
    scheme: str, query: str, known: dict[str, Callable[[str], Any]], *, strict: bool
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """stockstore's options from a query string, typed; the rest (an error if *strict*).

    Messages name the option, never the URL: it may hold credentials.
    """
    own: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name not in known:
            if strict:
                raise StoreError(f"unknown option {name!r} in a {scheme}:// URL; known: {sorted(known)}")
            rest.append((name, text))
            continue
        try:
            own[name] = known[name](text)
        except ValueError as exc:
            raise StoreError(f"bad value for option {name!r} in a {scheme}:// URL: {text!r}") from exc
    return own, rest
