"""stockstore's own backends, certified through the shipped conformance suite.

The contract is written once, in `stockstore.testing.BackendSuite`; here each backend
and each chain composition is one small subclass: its markers, its server, how to make
a store and its documented gaps.  `ProjectSuite` adds what only stockstore itself may
check (what a store holds, read through its primitives; put_frame's chunking), and a
few tests of the contract that need no backend close the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from redis_servers import namespace_user_url

import stockstore as ss
from stockstore._entry import Entry
from stockstore._keys import Family, encode_key, family_of
from stockstore._schemas import SCHEMAS
from stockstore.backends import MemoryStore, ThreadLocalStore
from stockstore.errors import BatchError, InvalidKeyError, SerializationError, StoreError
from stockstore.testing import BackendSuite
from stockstore.testing._patch import ROUNDS, THREADS, run_concurrently
from stockstore.testing._records import Counter, Security


class ProjectSuite(BackendSuite):
    """`BackendSuite` plus the checks only stockstore's own tests make: through the store's primitives."""

    def stored_state(self, store: ss.BaseStore, cls: type, key: Any) -> object:
        """The record's stored bytes, version and expiry, as the store's primitive reads them."""
        family = family_of(cls)
        [stored] = store._read(family, [encode_key(key if type(key) is tuple else (key,))], store.clock() * 1000)
        assert stored is not None, f"{cls.__name__} {key!r:.40} is not held"
        return (stored.payload, stored.version, stored.expires_ms)

    def test_a_large_frame_goes_out_in_several_writes(
        self, store: ss.BaseStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        np = pytest.importorskip("numpy")
        pd = pytest.importorskip("pandas")
        written: list[tuple[str, int]] = []
        write = store._write

        def counting(family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
            written.append((family.name, len(entries)))
            return write(family, entries, now_ms)

        monkeypatch.setattr(store, "_write", counting)
        n = 25_000
        rng = np.random.default_rng(7)
        df = pd.DataFrame(rng.standard_normal((n, 8)), columns=[f"a{i}" for i in range(8)])
        df.index = pd.Index([f"K{i:06d}" for i in range(n)], name="ssm_id")
        store.put_frame(Security, df)
        chunks = [size for name, size in written if name == "Security"]
        assert len(chunks) >= 3
        assert sum(chunks) == n
        assert max(chunks) <= store.put_chunk
        assert written[0] == (SCHEMAS.name, 1)  # the schema, before any row that uses it
        store.put_frame(Security, df.iloc[:10])
        # Once per store; with every chunk where the store may lose it (Redis).
        saved = [name for name, _ in written].count(SCHEMAS.name)
        assert saved == (len(chunks) + 1 if store._schemas_may_vanish() else 1)
        keys = list(df.index[:: n // 50])
        got = store.get_frame(Security, keys=keys)
        assert (
            np.asarray(got.to_numpy()).view("<u8").tolist() == np.asarray(df.loc[keys].to_numpy()).view("<u8").tolist()
        )


# ---------------------------------------------------------------------------- in-process


class TestMemory(ProjectSuite):
    shares_namespace_between_instances = False
    gives_fill_tokens = True  # max_items evicts

    def make_store(self, **options: Any) -> ss.BaseStore:
        return MemoryStore(**options)


class TestThreadLocal(ProjectSuite):
    shares_namespace_between_instances = False
    shared_between_threads = False
    gives_fill_tokens = True

    def make_store(self, **options: Any) -> ss.BaseStore:
        return ThreadLocalStore(**options)


class TestDirectoryExample(ProjectSuite):
    """examples/directory_store.py, docs/extending.md's backend of four primitives, proved by the kit."""

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.path = tmp_path_factory.getbasetemp() / "directory-store"  # one folder: stores share it

    def make_store(self, **options: Any) -> ss.BaseStore:
        from directory_store import DirectoryStore

        return DirectoryStore(self.path, **options)


# ---------------------------------------------------------------------------- SQL


class SqlSuite(ProjectSuite):
    url: str

    def make_store(self, **options: Any) -> ss.BaseStore:
        from stockstore.backends import SqlStore

        return SqlStore(self.url, **options)


class TestSqlite(SqlSuite):
    @pytest.fixture(autouse=True)
    def _server(self, sqlite_url: str) -> None:
        self.url = sqlite_url


@pytest.mark.postgresql
class TestPostgresql(SqlSuite):
    @pytest.fixture(autouse=True)
    def _server(self, postgresql_url: str) -> None:
        self.url = postgresql_url


@pytest.fixture(scope="session")
def mysql_max_allowed_packet(mysql_url: str) -> int:
    """The server's largest packet: MariaDB refuses a record that does not fit in one."""
    import sqlalchemy as sa

    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    finally:
        engine.dispose()


@pytest.mark.mysql
class TestMysql(SqlSuite):
    largest_record_error = "max_allowed_packet"

    @pytest.fixture(autouse=True)
    def _server(self, mysql_url: str, mysql_max_allowed_packet: int) -> None:
        self.url = mysql_url
        self.largest_record_size = mysql_max_allowed_packet


# ---------------------------------------------------------------------------- memcached


@pytest.mark.memcached
class TestMemcache(ProjectSuite):
    lists_keys = False
    finds = False
    counts_cleared = False
    gives_fill_tokens = True  # memcached evicts and restarts empty
    largest_record_error = "item limit"
    servers: list[str]

    @pytest.fixture(autouse=True)
    def _server(self, memcached_server: str) -> None:
        self.servers = [memcached_server]

    def make_store(self, **options: Any) -> ss.BaseStore:
        from stockstore.backends import MemcacheStore

        store = MemcacheStore(self.servers, **options)
        self.largest_record_size = store.max_value_size  # the store's own item limit
        return store


@pytest.mark.memcached
class TestMemcacheTwoServers(TestMemcache):
    @pytest.fixture(autouse=True)
    def _server(self, memcached_two_servers: list[str]) -> None:
        self.servers = memcached_two_servers


# ---------------------------------------------------------------------------- Redis


class RedisSuite(ProjectSuite):
    layout = "msgpack"
    gives_fill_tokens = True  # Redis evicts, flushes and restarts
    url: str

    def make_store(self, **options: Any) -> ss.BaseStore:
        from stockstore.backends import RedisHashStore, RedisMsgpackStore

        return (RedisHashStore if self.layout == "hash" else RedisMsgpackStore)(self.url, **options)


@pytest.mark.redis
class TestRedisMsgpack(RedisSuite):
    grows_versions = False  # for families without alternate keys: a plain MSET, no script

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> None:
        self.url = redis_url


@pytest.mark.redis
class TestRedisHash(TestRedisMsgpack):
    layout = "hash"
    grows_versions = True


@pytest.mark.redis_cluster
class TestRedisMsgpackCluster(RedisSuite):
    grows_versions = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_cluster_url: str) -> None:
        self.url = redis_cluster_url


@pytest.mark.redis_cluster
class TestRedisHashCluster(TestRedisMsgpackCluster):
    layout = "hash"
    grows_versions = True


@pytest.mark.redis
class TestRedisMsgpackTlsAcl(RedisSuite):
    """Over TLS, as a user who may touch only the namespace's keys and run no KEYS or FLUSH* (one user a store)."""

    grows_versions = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_tls_url: str) -> None:
        self.url = redis_tls_url

    def make_store(self, *, namespace: Any, **options: Any) -> ss.BaseStore:
        from stockstore.backends import RedisHashStore, RedisMsgpackStore

        cls = RedisHashStore if self.layout == "hash" else RedisMsgpackStore
        if not isinstance(namespace, str):  # the store itself must refuse it
            return cls(self.url, namespace=namespace, **options)
        return cls(namespace_user_url(self.url, namespace), namespace=namespace, **options)


@pytest.mark.redis
class TestRedisHashTlsAcl(TestRedisMsgpackTlsAcl):
    layout = "hash"
    grows_versions = True


# ---------------------------------------------------------------------------- chains


class TestChainMemorySqlite(ProjectSuite):
    @pytest.fixture(autouse=True)
    def _server(self, sqlite_url: str) -> None:
        self.url = sqlite_url

    def make_store(self, *, clock: Callable[[], float], **options: Any) -> ss.BaseStore:
        from stockstore.backends import SqlStore

        tiers = [MemoryStore(clock=clock, **options), SqlStore(self.url, clock=clock, **options)]
        return ss.ChainedStore(tiers, clock=clock)


@pytest.mark.memcached
class TestChainMemoryMemcacheSqlite(ProjectSuite):
    @pytest.fixture(autouse=True)
    def _server(self, memcached_server: str, sqlite_url: str) -> None:
        self.servers, self.url = [memcached_server], sqlite_url

    def make_store(self, *, clock: Callable[[], float], **options: Any) -> ss.BaseStore:
        from stockstore.backends import MemcacheStore, SqlStore

        tiers = [
            MemoryStore(clock=clock, **options),
            MemcacheStore(self.servers, clock=clock, **options),
            SqlStore(self.url, clock=clock, **options),
        ]
        return ss.ChainedStore(tiers, clock=clock)


@pytest.mark.redis
class TestChainMemoryRedisSqlite(ProjectSuite):
    layout = "msgpack"

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str, sqlite_url: str) -> None:
        self.redis_url, self.url = redis_url, sqlite_url

    def make_store(self, *, clock: Callable[[], float], **options: Any) -> ss.BaseStore:
        from stockstore.backends import RedisHashStore, RedisMsgpackStore, SqlStore

        redis_store = RedisHashStore if self.layout == "hash" else RedisMsgpackStore
        tiers = [
            MemoryStore(clock=clock, **options),
            redis_store(self.redis_url, clock=clock, **options),
            SqlStore(self.url, clock=clock, **options),
        ]
        return ss.ChainedStore(tiers, clock=clock)


@pytest.mark.redis
class TestChainMemoryRedisHashSqlite(TestChainMemoryRedisSqlite):
    layout = "hash"


# ---------------------------------------------------------------------------- the contract, without a backend


def test_error_tree() -> None:
    assert issubclass(InvalidKeyError, ValueError)
    assert issubclass(SerializationError, TypeError)
    assert issubclass(ss.errors.BackendUnavailableError, ConnectionError)
    for err in (InvalidKeyError, SerializationError, BatchError, ss.errors.BackendUnavailableError):
        assert issubclass(err, StoreError)
    assert issubclass(ss.errors.UnsupportedOperationError, StoreError)


def test_the_concurrency_test_has_teeth() -> None:
    """A naive get-then-put patch loses updates under the load of the suite's concurrent patch test."""
    store = MemoryStore()
    store.put(Counter(n=1))

    def naive_round(t: int, r: int) -> None:
        current = store.get(Counter, 1)
        time.sleep(0.0005)  # the window a real backend's round trip opens
        store.put(Counter({**(current or {}), f"t{t}": r}))

    run_concurrently(naive_round)
    got = store.get(Counter, 1)
    assert got is not None
    assert dict(got) != {"n": 1, **{f"t{t}": ROUNDS - 1 for t in range(THREADS)}}


class TestInProcess:
    """The in-process stores' own options (not part of the shared contract)."""

    def test_max_items_evicts_the_least_recently_used(self) -> None:
        store = MemoryStore(max_items=3)
        store.batch_put([Security(ssm_id=k) for k in "abc"])
        assert store.get(Security, "a") is not None  # "b" is now the least recently used
        store.put(Security(ssm_id="d"))
        assert store.get(Security, "b") is None
        assert sorted(store.keys(Security)) == ["a", "c", "d"]

    def test_max_items_must_be_positive(self) -> None:
        for bad in [0, -1, 1.5]:
            with pytest.raises(ValueError, match="max_items"):
                MemoryStore(max_items=bad)  # type: ignore[arg-type]

    def test_threads_do_not_share_a_thread_local_store(self) -> None:
        store = ThreadLocalStore()
        store.put(Security(ssm_id="main"))
        seen: list[Any] = []
        worker = threading.Thread(target=lambda: seen.append(store.get(Security, "main")))
        worker.start()
        worker.join()
        assert seen == [None]
        assert store.get(Security, "main") is not None
