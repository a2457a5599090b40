"""The `store` fixture every conformance test runs over, and the fake clock.

A new backend joins the suite by adding one entry to ``BACKENDS`` below: a name, a
function that builds the store from ``(request, namespace=, lifetime=, clock=)``, and the
markers of the server it needs. Nothing else changes; every test in
``test_conformance.py`` then runs against it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from memcached_servers import memcache_builder, memcached_server, memcached_two_servers  # noqa: F401 -- fixtures
from redis_servers import redis_cluster_url, redis_tls_url, redis_url  # noqa: F401 -- fixtures

import stockstore as ss
from stockstore.backends import MemoryStore, ThreadLocalStore
from stockstore.testing import FakeClock


class StoreFactory(Protocol):
    def __call__(
        self, *, namespace: str | None = None, lifetime: Any = None, clock: Callable[[], float] | None = None
    ) -> ss.BaseStore: ...


Builder = Callable[..., ss.BaseStore]


def _sql(kind: str) -> Builder:
    def build(request: pytest.FixtureRequest, *, namespace: str, lifetime: Any, clock: Callable[[], float]) -> Any:
        from stockstore.backends import SqlStore

        url = request.getfixturevalue(f"{kind}_url")
        return SqlStore(url, namespace=namespace, lifetime=lifetime, clock=clock)

    return build


def _memory(request: pytest.FixtureRequest, **options: Any) -> ss.BaseStore:
    return MemoryStore(**options)


def _threadlocal(request: pytest.FixtureRequest, **options: Any) -> ss.BaseStore:
    return ThreadLocalStore(**options)


def _directory(request: pytest.FixtureRequest, **options: Any) -> ss.BaseStore:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
    from directory_store import DirectoryStore

    return DirectoryStore(request.getfixturevalue("tmp_path_factory").getbasetemp() / "directory-store", **options)


def _chain_memory_sqlite(
    request: pytest.FixtureRequest, *, namespace: str, lifetime: Any, clock: Callable[[], float]
) -> ss.BaseStore:
    source = _sql("sqlite")(request, namespace=namespace, lifetime=lifetime, clock=clock)
    return ss.ChainedStore([MemoryStore(namespace=namespace, lifetime=lifetime, clock=clock), source], clock=clock)


def _chain_memory_memcache_sqlite(
    request: pytest.FixtureRequest, *, namespace: str, lifetime: Any, clock: Callable[[], float]
) -> ss.BaseStore:
    from stockstore.backends import MemcacheStore

    options: dict[str, Any] = {"namespace": namespace, "lifetime": lifetime, "clock": clock}
    memcache = MemcacheStore([request.getfixturevalue("memcached_server")], **options)
    source = _sql("sqlite")(request, **options)
    return ss.ChainedStore([MemoryStore(**options), memcache, source], clock=clock)


def _redis(layout: str, fixture: str) -> Builder:
    def build(request: pytest.FixtureRequest, **options: Any) -> ss.BaseStore:
        from stockstore.backends import RedisHashStore, RedisMsgpackStore

        cls = RedisHashStore if layout == "hash" else RedisMsgpackStore
        return cls(request.getfixturevalue(fixture), **options)

    return build


def _redis_namespace_user(layout: str) -> Builder:
    """A store over TLS whose ACL user may touch only its namespace's keys and run no KEYS or FLUSH*."""

    def build(request: pytest.FixtureRequest, *, namespace: str, **options: Any) -> ss.BaseStore:
        import redis

        from stockstore.backends import RedisHashStore, RedisMsgpackStore
        from stockstore.backends.redis import quote

        url = request.getfixturevalue("redis_tls_url")
        cls = RedisHashStore if layout == "hash" else RedisMsgpackStore
        if not isinstance(namespace, str):  # the store itself must refuse it
            return cls(url, namespace=namespace, **options)
        user, password = f"u{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        with redis.Redis.from_url(url) as admin:
            admin.acl_setuser(
                user, enabled=True, passwords=[f"+{password}"], keys=[f"{quote(namespace, safe='')}:*"],
                commands=["+@all", "-@dangerous", "+info"],
            )  # fmt: skip
        return cls(url.replace("rediss://", f"rediss://{user}:{password}@"), namespace=namespace, **options)

    return build


def _chain_memory_redis_sqlite(layout: str) -> Builder:
    def build(request: pytest.FixtureRequest, **options: Any) -> ss.BaseStore:
        tiers = [
            MemoryStore(**options),
            _redis(layout, "redis_url")(request, **options),
            _sql("sqlite")(request, **options),
        ]
        return ss.ChainedStore(tiers, clock=options["clock"])

    return build


BACKENDS: list[Any] = [
    pytest.param(_memory, id="memory"),
    pytest.param(_threadlocal, id="threadlocal"),
    pytest.param(_directory, id="directory"),
    pytest.param(_sql("sqlite"), id="sqlite"),
    pytest.param(_sql("postgresql"), id="postgresql", marks=pytest.mark.postgresql),
    pytest.param(_sql("mysql"), id="mysql", marks=pytest.mark.mysql),
    pytest.param(_chain_memory_sqlite, id="chain-memory-sqlite"),
    pytest.param(memcache_builder("memcached_server"), id="memcache", marks=pytest.mark.memcached),
    pytest.param(memcache_builder("memcached_two_servers"), id="memcache-2servers", marks=pytest.mark.memcached),
    pytest.param(_chain_memory_memcache_sqlite, id="chain-memory-memcache-sqlite", marks=pytest.mark.memcached),
    pytest.param(_redis("msgpack", "redis_url"), id="redis-msgpack", marks=pytest.mark.redis),
    pytest.param(_redis("hash", "redis_url"), id="redis-hash", marks=pytest.mark.redis),
    pytest.param(_redis("msgpack", "redis_cluster_url"), id="redis-msgpack-cluster", marks=pytest.mark.redis_cluster),
    pytest.param(_redis("hash", "redis_cluster_url"), id="redis-hash-cluster", marks=pytest.mark.redis_cluster),
    pytest.param(_redis_namespace_user("msgpack"), id="redis-tls-acl", marks=pytest.mark.redis),
    pytest.param(_redis_namespace_user("hash"), id="redishash-tls-acl", marks=pytest.mark.redis),
    pytest.param(_chain_memory_redis_sqlite("msgpack"), id="chain-memory-redis-sqlite", marks=pytest.mark.redis),
    pytest.param(_chain_memory_redis_sqlite("hash"), id="chain-memory-redishash-sqlite", marks=pytest.mark.redis),
]


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str]:
    # Imported late: tests/sql_databases.py is only needed by SQL-backed params.
    from sql_databases import sql_database

    with sql_database(kind) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    with _database("sqlite") as url:
        yield url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with _database("postgresql") as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    with _database("mysql") as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real time, so absolute datetimes mean what they say."""
    return FakeClock(float(int(time.time())))


@pytest.fixture
def namespace() -> str:
    """A namespace no other test or run uses."""
    return f"t{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, namespace: str, clock: FakeClock) -> Iterator[StoreFactory]:
    """Builds stores of the parametrised backend; each test's stores share its namespace and fake clock."""
    build: Builder = request.param
    made: list[ss.BaseStore] = []

    def factory(
        *, namespace: str | None = None, lifetime: Any = None, clock: Callable[[], float] | None = None
    ) -> ss.BaseStore:
        store = build(
            request,
            namespace=default_namespace if namespace is None else namespace,
            lifetime=lifetime,
            clock=default_clock if clock is None else clock,
        )
        made.append(store)
        return store

    default_namespace, default_clock = namespace, clock
    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> ss.BaseStore:
    """One store of each backend, in the test's own namespace, on the test's fake clock."""
    return store_factory()


@pytest.fixture
def backend(request: pytest.FixtureRequest, store_factory: StoreFactory) -> str:
    """The id of the backend param, for the few tests one backend cannot run."""
    build = request.node.callspec.params["store_factory"]
    return next(str(p.id) for p in BACKENDS if p.values[0] is build)
