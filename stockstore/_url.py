"""`from_url`: a thin table from URL scheme to store class, and every option checked as the store is built.

A URL's query mixes stockstore's own options (``namespace``, ``lifetime``, ...)
with its driver's (redis-py's ``socket_timeout``, libpq's ``sslmode``).  Ours
are parsed by a small typed table and taken out; what is left must be an option
the driver documents, or the URL is refused now -- not at the first read, as a
driver's ``TypeError`` far from the typo.  Messages name the option, never the
URL: it may hold a password.
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._store import BaseStore
from .errors import StoreError

# A kind checks one option's value, text from a URL or a typed value from a config, and
# returns what the constructor takes; ValueError (with what was expected) if it is bad.
Kind = Callable[[Any], Any]


def _text(value: Any) -> str:
    if type(value) is not str or not value:
        raise ValueError("expected a non-empty string")
    return value


def _number(value: Any) -> float | int:
    """A finite number, from text or as it is (bool is no number here)."""
    if type(value) is str:
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value  # type: ignore[no-any-return]


def _seconds(value: Any) -> float | int:
    seconds = _number(value)
    if not seconds > 0:
        raise ValueError("expected a positive number of seconds")
    return seconds


def _whole(value: Any, least: int) -> int:
    if type(value) is str and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if type(value) is not int or value < least:
        raise ValueError(f"expected a whole number >= {least}")
    return value


def _positive(value: Any) -> int:
    return _whole(value, 1)


def _count(value: Any) -> int:
    return _whole(value, 0)


def _lifetime(value: Any) -> Any:
    """Seconds from a URL; from a config also what ``lifetime=`` takes (a callable, a timedelta, ...)."""
    if value is None or callable(value) or type(value) in (dt.timedelta, dt.datetime):
        return value
    return _number(value)


_REDIS_LAYOUTS = {"msgpack": "RedisMsgpackStore", "hash": "RedisHashStore"}


def _layout(value: Any) -> str:
    if value not in _REDIS_LAYOUTS:
        raise ValueError(f"expected one of {sorted(_REDIS_LAYOUTS)}")
    return value  # type: ignore[no-any-return]


_COMMON: dict[str, Kind] = {"namespace": _text, "lifetime": _lifetime}
_IN_PROCESS = {**_COMMON, "max_items": _positive}
_MEMCACHE = {
    **_COMMON,
    "timeout": _seconds,
    "connect_timeout": _seconds,
    "cas_retries": _positive,
    "chunk_size": _positive,
    "max_value_size": _positive,
}
_REDIS = {
    **_COMMON,
    "layout": _layout,
    "chunk_size": _positive,
    "timeout": _seconds,
    "connect_timeout": _seconds,
    "retries": _count,
    "cas_retries": _positive,
}
_SQL = {
    **_COMMON,
    "timeout": _seconds,
    "transaction_timeout": _seconds,
    "chunk_size": _positive,
    "retries": _count,
}

# The built-in schemes (before any "+driver"): what builds the store, and stockstore's own options.
_BUILTIN = ("memory", "threadlocal", "memcache", "redis", "rediss", "sqlite", "postgresql", "mysql", "mariadb")


def known_schemes() -> list[str]:
    """Every scheme `from_url` takes: the built-in ones and those of installed plugins."""
    return sorted({*_BUILTIN, *_plugins()})


def from_url(url: str, **options: Any) -> BaseStore:
    """Build a store from a URL; *options* go to the store's constructor.

    ``memory://`` and ``threadlocal://`` take no location; SQL URLs are SQLAlchemy
    URLs (``sqlite:///file.db``, ``postgresql+psycopg://...``); Redis URLs are
    redis-py's, plus ``redis+cluster://h1:p1,h2:p2`` and ``?layout=hash`` for
    `RedisHashStore`.  ``?namespace=`` and ``?lifetime=`` (seconds) work on every
    scheme, with the other options of each store; an option no one takes raises
    `StoreError` naming it.  Other packages add schemes through the
    ``stockstore.backends`` entry-point group (docs/extending.md).
    """
    scheme = _scheme(url)
    base = scheme.split("+", 1)[0]
    if base not in _BUILTIN:
        return _from_plugin(url, scheme, options)
    table = _table(scheme)
    if base in ("memory", "threadlocal", "memcache") and "+" in scheme:
        raise StoreError(f"no stockstore backend for URL scheme {scheme!r}{_suggest(base)}")
    if base in ("sqlite", "postgresql", "mysql", "mariadb"):
        return _sql(url, scheme, table, options)
    parts = urlsplit(url)
    query, rest = _split_query(scheme, parts.query, table)
    given = _merge(scheme, table, query, options)
    if base in ("memory", "threadlocal"):
        if parts.netloc or parts.path.strip("/"):
            raise StoreError(f"{scheme}:// takes no location, only ?options; {_valid(table)}")
        _refuse(scheme, rest, table)
        name = "MemoryStore" if base == "memory" else "ThreadLocalStore"
        return _class(f"stockstore.backends.memory:{name}")(**given)
    if base == "memcache":
        _refuse(scheme, rest, table)
        return _class("stockstore.backends.memcache:MemcacheStore")(urlunsplit(parts._replace(query="")), **given)
    return _redis(parts, scheme, given, rest, table)


# ---------------------------------------------------------------------------- the schemes


def _redis(
    parts: Any, scheme: str, given: dict[str, Any], rest: list[tuple[str, str]], table: Mapping[str, Kind]
) -> BaseStore:
    """A Redis store: our options out, redis-py's documented ones left in the URL, any other refused."""
    cluster = scheme.partition("+")[2]
    if cluster not in ("", "cluster"):
        raise StoreError(f"no stockstore backend for URL scheme {scheme!r}; did you mean 'redis+cluster'?")
    hosts = parts.netloc.rpartition("@")[2]
    for node in hosts.split(",") if cluster else [hosts]:
        _, colon, port = node.rpartition("]")[2].rpartition(":")
        if colon and not port.strip().isdigit():
            raise StoreError(f"bad port in a {scheme}:// URL: expected host:port, the port a number")
    connection = importlib.import_module("redis.connection")
    driver = _redis_options(scheme, connection)
    for name, text in rest:
        if name not in driver:
            raise StoreError(
                f"unknown option {name!r} in a {scheme}:// URL{_suggest(name, [*table, *driver])}; "
                f"stockstore's: {', '.join(sorted(table))}; redis-py's: {', '.join(sorted(driver))}"
            )
        parse = connection.URL_QUERY_ARGUMENT_PARSERS.get(name)
        try:
            if parse is not None:
                parse(text)
        except (TypeError, ValueError):
            raise StoreError(f"bad value for redis-py's option {name!r} in a {scheme}:// URL: {text!r:.40}") from None
    layout = given.pop("layout", "msgpack")
    url = urlunsplit(parts._replace(query=urlencode(rest)))
    return _class(f"stockstore.backends.redis:{_REDIS_LAYOUTS[layout]}")(url, **given)


def _redis_options(scheme: str, connection: Any) -> set[str]:
    """The query options redis-py documents for its URLs: those it parses, and TLS's for rediss://."""
    names = {*connection.URL_QUERY_ARGUMENT_PARSERS, "client_name", "lib_name", "lib_version"}
    if scheme.startswith("rediss"):
        names |= {n for n in inspect.signature(connection.SSLConnection).parameters if n.startswith("ssl_")}
    return names


def _sql(url: str, scheme: str, table: Mapping[str, Kind], options: Mapping[str, Any]) -> BaseStore:
    """A SqlStore: the URL parsed as SqlStore parses it, our options out, the driver's checked by name."""
    sql = importlib.import_module("stockstore.backends.sql")
    parsed = sql._url(url)  # its errors are written not to repeat a password
    ours = {name: value for name, value in parsed.query.items() if name in table}
    # SQLAlchemy drops an empty "?namespace=": refused here, not silently the default.
    for name, text in parse_qsl(url.rpartition("?")[2], keep_blank_values=True):
        if name in table and not text:
            _check(scheme, name, text, table)
    for name, value in ours.items():
        if not isinstance(value, str):
            raise StoreError(f"option {name!r} is given twice in a {scheme}:// URL")
    given = _merge(scheme, table, {n: _check(scheme, n, v, table) for n, v in ours.items()}, options)
    parsed = parsed.difference_update_query(ours)
    driver = _sql_driver_options(parsed.get_backend_name(), parsed.get_driver_name())
    for name in parsed.query:
        if name not in driver:
            raise StoreError(
                f"unknown option {name!r} in a {scheme}:// URL{_suggest(name, [*table, *driver])}; "
                f"stockstore's: {', '.join(sorted(table))}; the driver's: {', '.join(sorted(driver))}"
            )
    return _class("stockstore.backends.sql:SqlStore")(parsed, **given)


def _sql_driver_options(backend: str, driver: str) -> set[str]:
    """The query options SQLAlchemy hands each supported driver: sqlite3's, libpq's, PyMySQL's."""
    if backend == "sqlite":
        # sqlite3.connect's, and with uri=true the SQLite URI parameters.
        return {"isolation_level", "detect_types", "check_same_thread", "cached_statements", "uri"} | {
            "mode",
            "cache",
            "immutable",
            "nolock",
            "psow",
            "vfs",
            "modeof",
        }
    if driver == "psycopg":
        pq = importlib.import_module("psycopg.pq")
        return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    if driver == "pymysql":
        connections = importlib.import_module("pymysql.connections")
        return {n for n in inspect.signature(connections.Connection).parameters if n not in ("conv", "cursorclass")}
    return set()  # SqlStore refuses any other driver, by name


def _from_plugin(url: str, scheme: str, options: Mapping[str, Any]) -> BaseStore:
    """A plugin's store: ``cls(url_without_our_options, namespace=..., lifetime=..., **options)``.

    Its own query options stay in the URL for it to read; keyword options must be
    keyword parameters of its constructor.
    """
    cls = _plugin(scheme)
    parts = urlsplit(url)
    given, rest = _split_query(scheme, parts.query, _COMMON)
    accepted = _keywords(cls)
    for name, value in options.items():
        if accepted is not None and name not in accepted:
            raise StoreError(
                f"unknown option {name!r} for a {scheme}:// store{_suggest(name, accepted)}; {_valid(accepted)}"
            )
        if name in given:
            raise StoreError(f"option {name!r} is given both in the {scheme}:// URL and as a keyword option")
        given[name] = _check(scheme, name, value, _COMMON) if name in _COMMON else value
    store = cls(urlunsplit(parts._replace(query=urlencode(rest))), **given)
    if not isinstance(store, BaseStore):
        raise StoreError(f"the {scheme}:// plugin made a {type(store).__qualname__}, not a stockstore store")
    return store


def _plugin(scheme: str) -> Any:
    plugins = _plugins()
    if scheme not in plugins:
        raise StoreError(
            f"no stockstore backend for URL scheme {scheme!r}{_suggest(scheme)}; known: {', '.join(known_schemes())}"
        )
    return plugins[scheme].load()


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="stockstore.backends")}


def _keywords(cls: Any) -> set[str] | None:
    """The keyword parameters of *cls*'s constructor; ``None`` if it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}


# ---------------------------------------------------------------------------- parsing and checking


def _scheme(url: Any) -> str:
    """The URL's scheme, lower-case, once the URL is seen to have the form ``scheme://...``."""
    if not isinstance(url, str):
        raise StoreError(f"a store URL is a string, not {type(url).__qualname__}")
    scheme, sep, _ = url.partition("://")
    if not sep or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) is None:
        start = url.partition(":")[0]  # a scheme, if anything: a password comes after "//"
        shown = f" of scheme {start!r}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", start) else ""
        raise StoreError(
            f"malformed store URL{shown}: expected scheme://[location][?options], "
            "e.g. redis://host:6379/0 or sqlite:///path.db"
        )
    try:
        urlsplit(url)
    except ValueError:  # an unbalanced "[" of an IPv6 host; its message would quote the URL
        raise StoreError(f"malformed {scheme}:// URL: an IPv6 host needs both [ and ]") from None
    return scheme.lower()


def _table(scheme: str) -> Mapping[str, Kind]:
    base = scheme.split("+", 1)[0]
    if base in ("memory", "threadlocal"):
        return _IN_PROCESS
    if base == "memcache":
        return _MEMCACHE
    if base in ("redis", "rediss"):
        return _REDIS
    return _SQL


def _split_query(scheme: str, query: str, table: Mapping[str, Kind]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Our options from a query string, checked; and the rest, in order."""
    if "@" in query:
        # The '@' that ends a password, after a '?' or '#' the password held unencoded.
        raise StoreError(f"a {scheme}:// URL with '@' after its '?': percent-encode ? # @ in a password (%3F %23 %40)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:  # its message quotes the field
        raise StoreError(f"malformed query in a {scheme}:// URL: expected name=value&name=value") from None
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, text in pairs:
        if name not in table:
            rest.append((name, text))
        elif name in ours:
            raise StoreError(f"option {name!r} is given twice in a {scheme}:// URL")
        else:
            ours[name] = _check(scheme, name, text, table)
    return ours, rest


def _check(scheme: str, name: str, value: Any, table: Mapping[str, Kind]) -> Any:
    try:
        return table[name](value)
    except ValueError as exc:
        raise StoreError(f"bad value for option {name!r} of a {scheme}:// store: {value!r:.40} ({exc})") from None


def _merge(
    scheme: str, table: Mapping[str, Kind], query: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """The URL's options with the keyword ones, each checked; an option given both ways raises."""
    _refuse(scheme, [(name, "") for name in options if name not in table], table)
    for name in options:
        if name in query:
            raise StoreError(f"option {name!r} is given both in the {scheme}:// URL and as a keyword option")
    return {**query, **{name: _check(scheme, name, value, table) for name, value in options.items()}}


def _refuse(scheme: str, rest: Iterable[tuple[str, str]], table: Iterable[str]) -> None:
    for name, _ in rest:
        raise StoreError(f"unknown option {name!r} for a {scheme}:// store{_suggest(name, table)}; {_valid(table)}")


def _valid(names: Iterable[str]) -> str:
    return f"valid options: {', '.join(sorted(names))}"


def _suggest(word: str, choices: Iterable[str] | None = None) -> str:
    close = difflib.get_close_matches(word, list(known_schemes() if choices is None else choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _class(target: str) -> Callable[..., BaseStore]:
    module, _, name = target.partition(":")
    cls: Callable[..., BaseStore] = getattr(importlib.import_module(module), name)
    return cls
