"""`ss.from_config` and `ss.from_url`: every scheme built on a real server, every option checked as it is built.

Only the plugin's entry point is faked (no package installs one here); every store is real.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

import stockstore as ss
from stockstore.backends import (
    MemcacheStore,
    MemoryStore,
    RedisHashStore,
    RedisMsgpackStore,
    SqlStore,
    ThreadLocalStore,
)
from stockstore.errors import StoreError


class Item(ss.Record):
    __stockstore_keys__: ClassVar = ["k"]


def roundtrip(store: ss.BaseStore) -> None:
    with store:
        store.put(Item(k="x", v=1.5))
        got = store.get(Item, "x")
        assert type(got) is Item
        assert got == Item(k="x", v=1.5)
        store.delete(Item, "x")


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


# ---------------------------------------------------------------------------- every scheme


def test_memory_and_threadlocal(namespace: str) -> None:
    store = ss.from_config(f"memory://?namespace={namespace}&max_items=5&lifetime=30")
    assert type(store) is MemoryStore
    assert (store.namespace, store.max_items) == (namespace, 5)
    roundtrip(store)
    store = ss.from_config([{"url": "threadlocal://", "max_items": 3, "namespace": namespace}])
    assert type(store) is ThreadLocalStore
    assert (store.namespace, store.max_items) == (namespace, 3)
    roundtrip(store)


def test_sqlite_file(sqlite_file: str, namespace: str) -> None:
    store = ss.from_config({"tiers": [{"url": sqlite_file, "lifetime": 60, "chunk_size": 7}], "namespace": namespace})
    assert type(store) is SqlStore
    assert (store.namespace, store.chunk_size) == (namespace, 7)
    roundtrip(store)


@pytest.mark.postgresql
def test_postgresql(postgresql_url: str, namespace: str) -> None:
    store = ss.from_config(f"{postgresql_url}?namespace={namespace}&sslmode=disable&application_name=cfg")
    assert type(store) is SqlStore
    assert store.namespace == namespace
    assert store.engine.url.query == {"sslmode": "disable", "application_name": "cfg"}
    roundtrip(store)


@pytest.mark.mysql
def test_mysql(mysql_url: str, namespace: str) -> None:
    store = ss.from_config([f"{mysql_url}?namespace={namespace}&charset=utf8mb4&retries=3"])
    assert type(store) is SqlStore
    assert (store.namespace, store.retries) == (namespace, 3)
    roundtrip(store)


@pytest.mark.redis
@pytest.mark.parametrize(("layout", "cls"), [("msgpack", RedisMsgpackStore), ("hash", RedisHashStore)])
def test_redis_both_layouts(redis_url: str, namespace: str, layout: str, cls: type) -> None:
    store = ss.from_config(
        {
            "tiers": [{"url": f"{redis_url}?layout={layout}&socket_keepalive=true", "chunk_size": 9}],
            "namespace": namespace,
        }
    )
    assert type(store) is cls
    assert (store.namespace, store.chunk_size) == (namespace, 9)
    roundtrip(store)


@pytest.mark.memcached
def test_memcache(memcached_server: str, namespace: str) -> None:
    store = ss.from_config(f"memcache://{memcached_server}?namespace={namespace}&cas_retries=4")
    assert type(store) is MemcacheStore
    assert (store.namespace, store.cas_retries) == (namespace, 4)
    roundtrip(store)


# ---------------------------------------------------------------------------- chains


@pytest.mark.redis
def test_a_chain_from_a_list_and_from_a_mapping(redis_url: str, sqlite_file: str, namespace: str) -> None:
    chain = ss.from_config([f"memory://?lifetime=30&namespace={namespace}", f"{sqlite_file}?namespace={namespace}"])
    assert type(chain) is ss.ChainedStore
    assert [type(t) for t in chain.tiers] == [MemoryStore, SqlStore]
    roundtrip(chain)

    chain = ss.from_config(
        {
            "tiers": [
                {"url": "memory://", "lifetime": 30},
                {"url": redis_url, "layout": "hash", "namespace": f"{namespace}-r"},
                {"url": sqlite_file},
            ],
            "namespace": namespace,
            "tombstone_ttl": 5,
            "retries": 1,
        }
    )
    assert type(chain) is ss.ChainedStore
    assert [type(t) for t in chain.tiers] == [MemoryStore, RedisHashStore, SqlStore]
    assert [t.namespace for t in chain.tiers] == [namespace, f"{namespace}-r", namespace]  # a tier's own wins
    assert (chain.tombstone_ttl, chain.retries) == (5, 1)
    roundtrip(chain)


def test_stockstore_url_is_tiers_separated_by_whitespace(sqlite_file: str, namespace: str) -> None:
    chain = ss.from_config(f"  memory://?namespace={namespace}\n\t{sqlite_file}?namespace={namespace} ")
    assert [type(t) for t in chain.tiers] == [MemoryStore, SqlStore]  # type: ignore[attr-defined]
    roundtrip(chain)


def test_a_namespace_in_a_sql_url_is_used(sqlite_file: str) -> None:
    with ss.from_url(f"{sqlite_file}?namespace=a") as a, ss.from_url(f"{sqlite_file}?namespace=b") as b:
        a.put(Item(k="x", v=1.0))
        assert b.get(Item, "x") is None
        assert b.count(Item) == 0
        with ss.from_url(sqlite_file, namespace="a") as again:
            assert again.get(Item, "x") == Item(k="x", v=1.0)


# ---------------------------------------------------------------------------- errors


def refusal(config: Any, match: str) -> StoreError:
    with pytest.raises(StoreError, match=match) as info:
        ss.from_config(config)
    assert type(info.value) is StoreError
    return info.value


def schemes(redis: str = "redis://127.0.0.1:1/0", memcache: str = "127.0.0.1:1") -> list[str]:
    # Nothing listens on port 1: every refusal comes before any connection.
    return [
        "memory://",
        "threadlocal://",
        "sqlite:///:memory:",
        "postgresql://u@127.0.0.1:1/x",
        "mysql+pymysql://u@127.0.0.1:1/x",
        redis,
        f"{redis}?layout=hash",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        f"memcache://{memcache}",
    ]


@pytest.mark.parametrize("url", schemes())
def test_a_misspelt_option_is_refused_by_name_on_every_scheme(url: str) -> None:
    joined = "&" if "?" in url else "?"
    error = refusal(f"{url}{joined}lifetme=5", r"unknown option 'lifetme'.*did you mean 'lifetime'\?")
    assert "namespace" in str(error)  # and the valid ones are listed
    refusal([{"url": url, "nmespace": "x"}], r"unknown option 'nmespace'.*did you mean 'namespace'\?")


@pytest.mark.parametrize("url", schemes())
@pytest.mark.parametrize(
    ("option", "value"), [("lifetime", "soon"), ("lifetime", "nan"), ("namespace", ""), ("timeout", "-1")]
)
def test_a_bad_value_is_refused_by_name(url: str, option: str, value: str) -> None:
    if option == "timeout" and url.startswith(("memory", "threadlocal")):
        option = "max_items"
    joined = "&" if "?" in url else "?"
    refusal(f"{url}{joined}{option}={value}", f"bad value for option '{option}'")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ([{"url": "memory://", "lifetime": "30s"}], "bad value for option 'lifetime'"),
        ([{"url": "memory://", "max_items": True}], "bad value for option 'max_items'"),
        ([{"url": "memory://", "max_items": 2.5}], "bad value for option 'max_items'"),
        ([{"url": "memory://", "namespace": 7}], "bad value for option 'namespace'"),
        ({"tiers": ["memory://", "memory://"], "tombstone_tl": 1}, "unknown configuration key 'tombstone_tl'"),
        ({"tiers": ["memory://", "memory://"], "lease_for": -1}, "lease_for"),
        ({"tiers": ["memory://"], "retries": 1}, "need two tiers"),
        ({"tier": ["memory://"]}, "unknown configuration key 'tier'"),
        ({"namespace": "x"}, "needs 'tiers'"),
        ([], "non-empty list"),
        ("", "non-empty list"),
        ([{"lifetime": 3}], "tier 1 is neither a URL nor a mapping"),
        (["memory://", 7], "tier 2 is neither"),
        ([{"url": "memory://?namespace=a", "namespace": "b"}], "'namespace' is given both"),
        ("memory://?namespace=a&namespace=b", "'namespace' is given twice"),
        ("redis://127.0.0.1:1/0?layout=json", "bad value for option 'layout'.*'hash'"),
        ("redis://127.0.0.1:1/0?socket_timeout=soon", "bad value for redis-py's option 'socket_timeout'"),
        ("memory://somewhere", "takes no location"),
    ],
)
def test_configuration_errors_name_what_is_wrong(config: Any, match: str) -> None:
    refusal(config, match)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (
            "sqllite:///x.db",
            r"no stockstore backend for URL scheme 'sqllite' \(did you mean 'sqlite'\?\); known: .*redis",
        ),
        ("memcached://h:1", r"'memcached' \(did you mean 'memcache'\?\)"),
        ("redis+sentinel://h:1", "did you mean 'redis\\+cluster'"),
        ("redis:/host", "malformed store URL of scheme 'redis'"),
        ("redis//host", "malformed store URL"),
        ("redis://host:port/0", "bad port"),
        ("redis+cluster://a:1,b:x", "bad port"),
        ("redis://[::1/0", "IPv6"),
        ("memory://?namespace", "malformed query"),
    ],
)
def test_a_bad_url_raises_a_store_error_never_a_drivers(url: str, match: str) -> None:
    refusal(url, match)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2secret@127.0.0.1:1/0?lifetme=1",
        "redis://user:hunter2?secret@127.0.0.1:1/0",
        "postgresql://u:hunter2secret@127.0.0.1:1/x?lifetme=1",
        "mysql+pymysql://u:hunter2secret@127.0.0.1:1/x?nmespace=1",
        "redis+cluster://u:hunter2secret@127.0.0.1:1,127.0.0.1:x",
        "redis:/u:hunter2secret@host",
    ],
)
def test_messages_never_echo_a_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        ss.from_config(url)
    told = [str(info.value), repr(info.value), *getattr(info.value, "__notes__", [])]
    assert not any("hunter2" in text for text in told), told


# ---------------------------------------------------------------------------- plugins


class PluginStore(MemoryStore):
    """A third party's store: its own location and query options in the URL, keyword options as its constructor says."""

    def __init__(self, url: str, *, namespace: str = "stockstore", lifetime: Any = None, shards: int = 1) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime)
        self.url, self.shards = url, shards


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's ``stockstore.backends`` entry point ``plug = test_config:PluginStore``."""
    real = importlib.metadata.entry_points
    point = importlib.metadata.EntryPoint("plug", f"{__name__}:PluginStore", "stockstore.backends")

    def entry_points(**select: Any) -> Any:
        if select == {"group": "stockstore.backends"}:
            return importlib.metadata.EntryPoints([point])
        return real(**select)

    monkeypatch.setattr("stockstore._url.entry_points", entry_points)


def test_a_plugin_gets_its_url_without_our_options_and_parsed_keywords(plugin: None) -> None:
    store = ss.from_config([{"url": "plug://here/there?mine=1&namespace=n&lifetime=2.5", "shards": 3}])
    assert type(store) is PluginStore
    assert store.url == "plug://here/there?mine=1"
    assert (store.namespace, store.lifetime, store.shards) == ("n", 2.5, 3)


def test_a_plugins_scheme_is_listed_and_its_options_checked(plugin: None) -> None:
    refusal("plu://x", r"did you mean 'plug'\?.*known: .*plug")
    refusal(
        [{"url": "plug://x", "shard": 3}], r"unknown option 'shard'.*did you mean 'shards'\?.*valid options: .*shards"
    )
    refusal("plug://x?lifetime=soon", "bad value for option 'lifetime'")


def test_from_url_still_takes_keyword_options() -> None:
    store = ss.from_url("memory://?lifetime=3", namespace="k", max_items=2)
    assert (store.namespace, store.max_items) == ("k", 2)  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match=re.escape("unknown option 'clok'")):
        ss.from_url("memory://", clok=1)
