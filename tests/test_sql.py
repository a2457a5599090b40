"""SqlStore on SQLite and real PostgreSQL / MariaDB servers: what the conformance suite cannot show.

Table names for awkward namespaces and families, SQL text free of key values and
attribute names, statement counts of large batches, racing table creation and
inserts, engine ownership, unreachable servers without leaked passwords, exact
values through patches, lazy expiry, keyset pages, in-memory SQLite from threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sql_databases import DRIVERS, KINDS

import stockstore as ss
from stockstore import _query
from stockstore._codec import encode_record
from stockstore._entry import Entry
from stockstore._keys import encode_key, family_of
from stockstore._query import Condition, Search
from stockstore._schemas import _Schema
from stockstore.backends import SqlStore
from stockstore.backends import sql as sql_backend
from stockstore.backends.base import PartialWrite
from stockstore.backends.sql import table_name
from stockstore.errors import BackendUnavailableError, BatchError, InvalidKeyError, StoreError
from stockstore.testing import assert_record, assert_same


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id", "isin"]


class Plain(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["k"]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest) -> str:
    """A database of each kind, for the whole session (tests keep apart by namespace)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def make(url: str, namespace: str) -> Iterator[Callable[..., SqlStore]]:
    """Builds SqlStores on ``url`` in the test's namespace; all closed at the end."""
    made: list[SqlStore] = []

    def build(**options: Any) -> SqlStore:
        store = SqlStore(url, **{"namespace": namespace, **options})
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


@pytest.fixture
def store(make: Callable[..., SqlStore]) -> SqlStore:
    return make()


@contextlib.contextmanager
def statements(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement text, parameters) the engine sends while the block runs.

    PostgreSQL's ``COPY`` goes to the driver past SQLAlchemy's events: it is
    recorded here with its rows as its parameters.
    """
    seen: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    def copy(conn: sa.Connection, statement: str, types: list[str], rows: Any) -> None:
        rows = list(rows)
        if conn.engine is engine:
            seen.append((statement, rows))
        copy_rows(conn, statement, types, rows)

    copy_rows = sql_backend._copy
    sa.event.listen(engine, "before_cursor_execute", listen)
    sql_backend._copy = copy
    try:
        yield seen
    finally:
        sql_backend._copy = copy_rows
        sa.event.remove(engine, "before_cursor_execute", listen)


def _values(params: Any) -> Iterator[Any]:
    """Every scalar in a (nested) structure of bound parameters, binary ones as bytes."""
    if isinstance(params, dict):
        params = list(params.values())
    if isinstance(params, list | tuple):
        for p in params:
            yield from _values(p)
    else:
        params = getattr(params, "obj", params)  # psycopg wraps bytes in Binary
        yield bytes(params) if isinstance(params, memoryview | bytearray) else params


def _rows(store: SqlStore, cls: type) -> int:
    """How many rows the family's table holds, live or not."""
    table = sa.table(store.table_name(cls))
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# ---------------------------------------------------------------------------- identifiers and SQL text


def _family(qualname: str) -> type:
    return type("Fam", (ss.Record,), {"__stockstore_keys__": ["k"], "__qualname__": qualname})


NAMESPACES = ["stockstore", "STOCKSTORE", "Stockstore", "a" * 300, "é€😀", "x;DROP TABLE y", "a b", "a_b", "a-b", "_"]
FAMILIES = ["Security", "security", "SECURITY", "B" * 200, "test_x.<locals>.Row", "Ünï.Côdé", "a_b", "a.b"]


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [("postgresql://u@127.0.0.1/db", "psycopg", "postgresql"), ("mysql://u@127.0.0.1/db", "pymysql", "mysql")],
)
def test_a_missing_driver_names_its_extra(monkeypatch: pytest.MonkeyPatch, url: str, driver: str, extra: str) -> None:
    """Each database's driver is in an extra of its own: `sql` alone is SQLAlchemy, which SQLite needs."""
    monkeypatch.setitem(sys.modules, driver, None)  # importing it fails, as if it were not installed
    with pytest.raises(ImportError, match=rf"^SqlStore on \w+ needs '{driver}': pip install 'stockstore\[{extra}\]'$"):
        SqlStore(url)


def test_table_names_are_short_lowercase_and_distinct() -> None:
    names = {table_name(ns, fam) for ns in NAMESPACES for fam in FAMILIES}
    assert len(names) == len(NAMESPACES) * len(FAMILIES)
    for name in names:
        assert re.fullmatch(r"ss_[a-z0-9_]*_[0-9a-f]{20}", name), name
        assert len(name.encode("ascii")) <= 63
    assert table_name("ns", "Security").startswith("ss_ns_security_")


def test_awkward_namespaces_and_families_make_valid_tables(url: str, namespace: str) -> None:
    families = [_family(f) for f in FAMILIES]
    stores = [SqlStore(url, namespace=namespace + ns) for ns in NAMESPACES[:6]]
    try:
        for i, store in enumerate(stores):
            store.batch_put([cls(k="x", n=i, f=j) for j, cls in enumerate(families)])
        for i, store in enumerate(stores):
            for j, cls in enumerate(families):
                assert_record(store.get(cls, "x"), cls(k="x", n=i, f=j))
                assert store.count(cls) == 1
        wanted = {s.table_name(cls) for s in stores for cls in families}
        assert len(wanted) == len(stores) * len(families)
        assert wanted <= set(sa.inspect(stores[0].engine).get_table_names())
    finally:
        for store in stores:
            store.close()


HOSTILE = [
    "';DROP TABLE ss_x;--MARK",
    '" OR 1=1 --MARK',
    "Robert'); DROP TABLE students;--MARK",
    "MARK\x00\n\\%s?:1",
    "MARK" + "é" * 50,
]


def test_no_key_value_or_attribute_name_reaches_the_sql_text(store: SqlStore) -> None:
    recs = [Security({"ssm_id": k, "isin": k + "-isin", k + "-attr": k}) for k in HOSTILE]
    with statements(store.engine) as seen:
        store.batch_put(recs)
        store.batch_patch(Security, [{"ssm_id": k, "MARK'attr\"; --": 1.5} for k in HOSTILE])
        got = store.batch_get(Security, HOSTILE)
        by_isin = [store.get(Security, {"isin": k + "-isin"}) for k in HOSTILE]
        listed = list(store.keys(Security))
        assert store.batch_delete(Security, HOSTILE[:2]) == 2
    for rec, one, two in zip(recs, got, by_isin, strict=True):
        want = Security({**rec, "MARK'attr\"; --": 1.5})
        assert_record(one, want)
        assert_record(two, want)
    assert sorted(listed) == sorted(HOSTILE)
    assert store.count(Security) == len(HOSTILE) - 2
    texts = [text for text, _ in seen]
    assert texts, "the listener saw nothing"
    assert not [t for t in texts if "MARK" in t or "DROP" in t]
    # The values did travel, as bound parameters.
    sent = set(_values([params for _, params in seen]))
    assert {encode_key((k,)) for k in HOSTILE} <= sent


def test_large_batches_cost_a_few_statements(make: Callable[..., SqlStore]) -> None:
    store = make()
    n = 2000
    store.put(Security(ssm_id="warm-up"))  # the table is created outside the counts
    recs = [Security(ssm_id=i, isin=f"I{i}", **{f"a{j}": i / (j + 1) for j in range(20)}) for i in range(n)]
    counts: dict[str, int] = {}
    for name, call in [
        ("batch_put new", lambda: store.batch_put(recs)),
        ("batch_put again", lambda: store.batch_put(recs)),
        ("batch_get", lambda: store.batch_get(Security, range(n))),
        ("batch_patch", lambda: store.batch_patch(Security, [{"ssm_id": i, "a0": -0.0} for i in range(n)])),
        ("batch_get by isin", lambda: store.batch_get(Security, [{"isin": f"I{i}"} for i in range(n)])),
        ("batch_delete", lambda: store.batch_delete(Security, range(n))),
    ]:
        with statements(store.engine) as seen:
            call()
        counts[name] = len(seen)
    assert all(1 <= c <= 12 for c in counts.values()), counts
    assert store.count(Security) == 1


def test_keys_pages_hold_no_connection_between_pages(make: Callable[..., SqlStore], url: str) -> None:
    store = make(chunk_size=7)
    store.batch_put([Plain(k=i) for i in range(30)])
    pool = store.engine.pool
    seen_out: list[int] = []
    with statements(store.engine) as seen:
        listed = []
        for key in store.keys(Plain):
            listed.append(key)
            if not url.startswith("sqlite"):
                seen_out.append(pool.checkedout())  # type: ignore[attr-defined]
    assert sorted(listed) == list(range(30))
    assert len([t for t, _ in seen if t.lstrip().upper().startswith("SELECT")]) == 5  # 7+7+7+7+2
    assert all(n == 0 for n in seen_out)


# ---------------------------------------------------------------------------- concurrency


def _at_once(work: Callable[[int], None], threads: int) -> list[BaseException]:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def test_stores_created_at_once_all_find_the_table(url: str) -> None:
    for _ in range(3):
        namespace = f"race{uuid.uuid4().hex[:8]}"
        stores = [SqlStore(url, namespace=namespace) for _ in range(6)]
        try:
            assert _at_once(lambda i, stores=stores: stores[i].put(Plain(k=i)), len(stores)) == []
            assert sorted(stores[0].keys(Plain)) == list(range(len(stores)))
        finally:
            for store in stores:
                store.close()


def test_racing_inserts_of_new_records_are_retried_and_whole(make: Callable[..., SqlStore]) -> None:
    stores = [make() for _ in range(4)]
    for round_ in range(4):
        keys = [f"r{round_}-{i}" for i in range(200)]

        def put(i: int, keys: list[str] = keys) -> None:
            stores[i].batch_put([Plain(k=k, writer=i, a=i, b=i) for k in keys])

        assert _at_once(put, len(stores)) == []
        got = stores[0].batch_get(Plain, keys)
        for key, obj in zip(keys, got, strict=True):
            assert obj is not None
            writer = obj["writer"]
            assert_record(obj, Plain(k=key, writer=writer, a=writer, b=writer))  # one writer's whole record


def test_racing_claims_of_one_alternate_key_one_wins(make: Callable[..., SqlStore]) -> None:
    stores = [make() for _ in range(3)]
    for round_ in range(5):
        isin = f"ISIN{round_}"
        results: list[Any] = [None] * len(stores)

        def claim(i: int, isin: str = isin, results: list[Any] = results) -> None:
            try:
                stores[i].put(Security(ssm_id=f"{isin}-{i}", isin=isin))
                results[i] = "won"
            except InvalidKeyError:
                results[i] = "refused"

        assert _at_once(claim, len(stores)) == []
        assert sorted(results) == ["refused", "refused", "won"]
        winner = results.index("won")
        assert_record(stores[0].get(Security, {"isin": isin}), Security(ssm_id=f"{isin}-{winner}", isin=isin))


BATCHES = [
    [("a", "X"), ("b", "Y")],
    [("a", "Y"), ("b", "X")],  # a swap: "a" asks for Y while "b" holds it, and "b" keeps X for "a"
    [("a", "Z"), ("b", "X"), ("c", "Y")],  # moves: each value is free by the time it is asked for
    [("d", "Z"), ("a", "W")],  # "a" still holds Z when "d" asks for it
    [("e", "V"), ("f", "V"), ("a", "Z")],  # two new records want one value: the first wins
    [("b", None), ("g", "X")],
]


def _outcome(store: ss.BaseStore, batch: list[tuple[str, str | None]]) -> list[Any]:
    try:
        store.batch_put([Security(ssm_id=k, isin=v) for k, v in batch])
    except BatchError as exc:
        return sorted(exc.failed)
    return []


def test_alternate_keys_in_batches_behave_as_in_memory(store: SqlStore) -> None:
    """Entries claim alternate keys in batch order, exactly as MemoryStore (the reference) does."""
    reference = ss.backends.MemoryStore()
    values = sorted({v for batch in BATCHES for _, v in batch if v is not None})
    for batch in BATCHES:
        assert _outcome(store, batch) == _outcome(reference, batch), batch
        for value in values:
            assert store.get(Security, {"isin": value}) == reference.get(Security, {"isin": value}), (batch, value)
    assert sorted(store.keys(Security)) == sorted(reference.keys(Security)) == list("abceg")
    assert _outcome(store, BATCHES[1]) == ["a", "b"]


# ---------------------------------------------------------------------------- values, lifetimes, layout

EXACT: dict[str, Any] = {
    "nan": math.nan,
    "neg_zero": -0.0,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "float_one": 1.0,
    "int_one": 1,
    "true": True,
    "when": dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC),
    "blob": bytes(range(256)),
}


def test_exact_values_survive_a_patch_of_other_attributes(store: SqlStore) -> None:
    store.put(Plain(k="x", **EXACT))
    store.patch(Plain, "x", {"other": 2.5})
    store.batch_patch(Plain, [{"k": "x", "more": [1, 1.0]}])
    got = store.get(Plain, "x")
    assert_record(got, Plain(k="x", **EXACT, other=2.5, more=[1, 1.0]))
    assert got is not None
    assert_same(got["float_one"], 1.0)
    assert_same(got["int_one"], 1)


def test_megabyte_keys_and_large_records(store: SqlStore) -> None:
    long_keys = ["k" * 2**20, "k" * (2**20 - 1) + "l"]
    store.batch_put([Plain(k=key, blob=b"\xff" * (4 * 2**20), n=i) for i, key in enumerate(long_keys)])
    got = store.batch_get(Plain, long_keys)
    for i, (key, obj) in enumerate(zip(long_keys, got, strict=True)):
        assert_record(obj, Plain(k=key, blob=b"\xff" * (4 * 2**20), n=i))
    assert sorted(store.keys(Plain)) == sorted(long_keys)


def test_lifetimes_follow_the_store_clock_not_the_database(make: Callable[..., SqlStore]) -> None:
    now = [time.time() - 100 * 365 * 86400]  # a century ago: the database's clock would say long expired
    store = make(lifetime=10, clock=lambda: now[0])
    store.put(Plain(k="x"))
    assert_record(store.get(Plain, "x"), Plain(k="x"))
    now[0] += 9.9
    assert store.count(Plain) == 1
    now[0] += 0.2
    assert store.get(Plain, "x") is None
    assert store.count(Plain) == 0


def test_expired_rows_are_removed_lazily(make: Callable[..., SqlStore]) -> None:
    now = [1_000_000.0]
    store = make(lifetime=10, clock=lambda: now[0])
    store.batch_put([Plain(k=i) for i in range(4)])
    now[0] += 11
    assert store.count(Plain) == 0
    assert _rows(store, Plain) == 4  # nothing sweeps expired rows
    store.put(Plain(k=0, v=1))  # a write to the same key replaces the row
    assert _rows(store, Plain) == 4
    assert store.batch_delete(Plain, [1]) == 0  # deleted, not counted
    assert _rows(store, Plain) == 3
    assert store.clear(Plain) == 1  # only the live one counts
    assert _rows(store, Plain) == 0


def test_a_table_of_another_layout_is_refused(url: str, namespace: str) -> None:
    one = type("Asset", (ss.Record,), {"__stockstore_keys__": ["k", "isin"], "__qualname__": "Asset"})
    two = type("Asset", (ss.Record,), {"__stockstore_keys__": ["k", "isin", "cusip"], "__qualname__": "Asset"})
    with SqlStore(url, namespace=namespace) as first:
        first.put(one(k="x", isin="I"))
    with SqlStore(url, namespace=namespace) as second, pytest.raises(StoreError, match="alternate key"):
        second.put(two(k="y", isin="J", cusip="C"))


def test_a_write_that_fails_carries_no_record_bytes(store: SqlStore) -> None:
    store.put(Plain(k="x"))
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {store.table_name(Plain)}"))
    with pytest.raises(BackendUnavailableError) as info:
        store.put(Plain(k="SECRETKEY", v="SECRETVALUE"))
    chain = [info.value, info.value.__cause__]
    assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    for exc in chain:
        assert "SECRET" not in str(exc)
        assert "SECRET" not in repr(exc)


# ---------------------------------------------------------------------------- engines, URLs, errors


def test_a_given_engine_is_left_open_and_a_built_one_is_disposed(url: str, namespace: str) -> None:
    engine = sa.create_engine(url)
    given = SqlStore(engine, namespace=namespace)
    given.put(Plain(k="x"))
    assert_record(given.get(Plain, "x"), Plain(k="x"))
    given_pool = engine.pool
    given.close()
    assert engine.pool is given_pool
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    engine.dispose()

    built = SqlStore(url, namespace=namespace)
    assert_record(built.get(Plain, "x"), Plain(k="x"))
    built_pool = built.engine.pool
    built.close()
    assert built.engine.pool is not built_pool  # dispose() replaced the pool, closing its connections
    assert built_pool.checkedin() == 0  # type: ignore[attr-defined]


def test_from_url_builds_a_sql_store(url: str, namespace: str) -> None:
    store = ss.from_url(url, namespace=namespace)
    assert isinstance(store, SqlStore)
    store.put(Plain(k="u"))
    assert_record(store.get(Plain, "u"), Plain(k="u"))
    store.close()


@pytest.mark.parametrize(
    ("where", "driver"),
    [
        ("postgresql://u@db.example/x", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/x", "postgresql+psycopg"),
        ("mysql://u@db.example/x", "mysql+pymysql"),
        ("mariadb://u@db.example/x", "mariadb+pymysql"),
        ("sqlite://", "sqlite"),
    ],
)
def test_driverless_urls_get_the_tested_drivers(where: str, driver: str) -> None:
    with SqlStore(where) as store:  # engines connect lazily: nothing is reached here
        assert store.engine.url.drivername == driver


@pytest.mark.parametrize(
    "where", ["postgresql+asyncpg://u@h/x", "mysql+mysqldb://u@h/x", "oracle://u@h/x", "not a url", ""]
)
def test_unsupported_urls_are_refused(where: str) -> None:
    with pytest.raises(StoreError):
        SqlStore(where)


@pytest.mark.parametrize(
    "options", [{"chunk_size": 0}, {"chunk_size": 1.5}, {"retries": -1}, {"timeout": 0}, {"timeout": "1"}]
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        SqlStore("sqlite://", **options)


def test_unknown_options_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        SqlStore("sqlite://", chunksize=10)  # type: ignore[call-arg]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield silent.getsockname()[1]


@pytest.mark.parametrize(
    "where",
    [
        "postgresql+psycopg://u:secret@127.0.0.1:1/x",
        "mysql+pymysql://u:secret@127.0.0.1:1/x",
        "postgresql://u:secret@127.0.0.1:{silent}/x",  # accepted, never answered: only the timeout ends the wait
    ],
)
def test_unreachable_server_fails_fast_without_the_password(
    where: str, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = SqlStore(where.format(silent=silent_port), timeout=2)
    assert "secret" not in repr(store)
    assert "***" in repr(store)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        store.put(Plain(k="x"))
    assert time.monotonic() - started < 8
    with pytest.raises(BackendUnavailableError):
        store.get(Plain, "x")
    cause = info.value.__cause__
    assert isinstance(cause, sa.exc.DBAPIError)
    for text in (str(info.value), repr(info.value), str(cause), repr(cause), caplog.text):
        assert "secret" not in text
    store.close()


# An '@' with ':', '/', '#', '?' around it, and at either end: each piece is distinctive enough
# that any four characters of it found in a message, a repr or a log line are a leak.
AT_PASSWORDS = ["se@cret", "Qx7a@Zk9b:Wv4c/Jm5d#Rt6e?Yp8f", "@Lead1ng", "Trail1ng@", "Tw0x@@Dbl2", "Pq3r/St4u@Vw5x"]


def _leaks(password: str, texts: list[str]) -> list[str]:
    """The pieces (four characters or the whole) of *password* found in *texts*."""
    pieces = {password} | {password[i : i + 4] for i in range(len(password) - 3)}
    return sorted(p for p in pieces for t in texts if p in t)


def _told(error: BaseException) -> list[str]:
    """str and repr of *error* and of every error chained to it."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def _refusal(build: Callable[[], Any]) -> StoreError:
    with pytest.raises(StoreError) as info:
        build()
    return info.value


@pytest.mark.parametrize("password", AT_PASSWORDS)
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql", "mariadb"])
@pytest.mark.parametrize("port", [1, 5432, 3306])  # nothing there, PostgreSQL, MariaDB: refused before either
def test_a_password_with_an_unencoded_at_is_refused_without_a_trace_of_it(
    password: str, scheme: str, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy ends the password at its first '@' and reads the rest as the host name."""
    caplog.set_level(logging.DEBUG)
    where = f"{scheme}://user:{password}@127.0.0.1:{port}/db"
    errors = [_refusal(lambda: SqlStore(where)), _refusal(lambda: ss.from_url(where))]
    try:
        engine = sa.create_engine(where.replace(scheme, DRIVERS.get(scheme, scheme), 1))
    except ValueError:
        pass  # SQLAlchemy itself cannot parse it (a port of "Wv4c/Jm5d#Rt6e?Yp8f")
    else:
        errors.append(_refusal(lambda: SqlStore(engine)))
        engine.dispose()
    for error in errors:
        assert type(error) is StoreError
        assert "%40" in str(error)
        assert _leaks(password, [*_told(error), caplog.text]) == []


@pytest.mark.parametrize("password", AT_PASSWORDS)
def test_a_password_with_an_encoded_or_given_at_never_shows(password: str, caplog: pytest.LogCaptureFixture) -> None:
    """Percent-encoded, or given to URL.create, the password is whole and hidden."""
    caplog.set_level(logging.DEBUG)
    encoded = f"postgresql://user:{quote(password, safe='')}@127.0.0.1:1/db"
    created = sa.URL.create("postgresql+psycopg", "user", password, "127.0.0.1", 1, "db")
    for where in (encoded, created):
        store = SqlStore(where, timeout=2)
        assert store.engine.url.password == password
        assert store.engine.url.host == "127.0.0.1"
        with pytest.raises(BackendUnavailableError) as info:
            store.put(Plain(k="x"))
        store.close()
        assert _leaks(password, [repr(store), *_told(info.value), caplog.text]) == []


@pytest.mark.mysql
def test_a_refused_login_never_shows_the_password(mysql_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = AT_PASSWORDS[1]
    url = sa.make_url(mysql_url).set(username="stockstore_nobody", password=password)
    with SqlStore(url) as store:
        with pytest.raises(BackendUnavailableError) as info:
            store.put(Plain(k="x"))
        assert "Access denied" in str(info.value)
        assert _leaks(password, [repr(store), *_told(info.value), caplog.text]) == []


# ---------------------------------------------------------------------------- SQLite


def test_sqlite_file_is_in_wal_mode_and_writes_begin_immediate(sqlite_url: str, namespace: str) -> None:
    with SqlStore(sqlite_url, namespace=namespace) as store:
        store.put(Plain(k="x"))
        with statements(store.engine) as seen:
            store.put(Plain(k="y"))
            store.get(Plain, "y")
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    begins = [t for t, _ in seen if t.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_in_memory_sqlite_from_several_threads() -> None:
    with SqlStore("sqlite://") as store, SqlStore("sqlite://") as other:
        store.put(Plain(k="shared", v=0))

        def work(i: int) -> None:
            for r in range(20):
                store.put(Plain(k=f"t{i}-{r}", v=r))
                store.patch(Plain, "shared", {f"t{i}": r})
                assert_record(store.get(Plain, f"t{i}-{r}"), Plain(k=f"t{i}-{r}", v=r))

        assert _at_once(work, 8) == []
        assert store.count(Plain) == 1 + 8 * 20
        assert_record(store.get(Plain, "shared"), Plain(k="shared", v=0, **{f"t{i}": 19 for i in range(8)}))
        assert other.count(Plain) == 0  # each sqlite:// store is a database of its own


def test_in_memory_sqlite_engine_without_a_static_pool_is_refused() -> None:
    engine = sa.create_engine("sqlite://")  # SingletonThreadPool: a database per thread
    with pytest.raises(StoreError, match="StaticPool"):
        SqlStore(engine)
    engine.dispose()


# ---------------------------------------------------------------------------- as a cache tier


NOW_MS = 1_000_000_000_000.0
OPS_KEYS = st.sampled_from(["a", "b", "c"])
OPS_ISINS = st.sampled_from(["X", "Y", None])
OPS_VERSIONS = st.integers(1, 4)
OPS_EXPIRES = st.sampled_from([None, int(NOW_MS) - 1, int(NOW_MS) + 1000])
ITEMS = st.lists(st.tuples(OPS_KEYS, OPS_ISINS, OPS_VERSIONS, OPS_EXPIRES), max_size=4, unique_by=lambda t: t[0])
OPS = st.one_of(
    st.tuples(st.just("fill"), ITEMS),
    st.tuples(st.just("write"), ITEMS),
    st.tuples(st.just("invalidate"), st.lists(OPS_KEYS, max_size=3, unique=True), OPS_VERSIONS),
    st.tuples(st.just("remove"), st.lists(OPS_KEYS, max_size=3, unique=True)),
)


def _entries(store: ss.BaseStore, items: list[Any]) -> list[Entry]:
    family = family_of(Security)
    out = []
    for key, isin, version, expires in items:
        record = Security(ssm_id=key, isin=isin, v=version)
        payload = encode_record(family.tag(Security), dict(record))
        out.append(Entry(payload, version, expires, encode_key((key,)), family.alternates_of(record)))
    return out


def _apply_op(store: ss.BaseStore, op: tuple[Any, ...]) -> Any:
    """One primitive call, as ChainedStore makes it; returns what can be compared."""
    family = family_of(Security)
    if op[0] == "fill":
        return store._fill(family, _entries(store, op[1]), NOW_MS)
    if op[0] == "write":
        try:
            return store._write(family, _entries(store, op[1]), NOW_MS)
        except PartialWrite as exc:
            return sorted(exc.failed)
    keys = [encode_key((k,)) for k in op[1]]
    if op[0] == "invalidate":
        return store._invalidate(family, keys, op[2], int(NOW_MS) + 5000)
    return store._remove(family, keys, NOW_MS)


def _visible(store: ss.BaseStore) -> tuple[Any, ...]:
    family = family_of(Security)
    keys = [encode_key((k,)) for k in "abc"]
    read = [None if s is None else (s.payload, s.version, s.expires_ms) for s in store._read(family, keys, NOW_MS)]
    isins = [encode_key((v,)) for v in "XY"]
    return tuple(read), tuple(store._resolve(family, 1, isins, NOW_MS)), sorted(store._scan(family, NOW_MS))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=6))
# A fill whose expired record displaces the holder of its alternate key, then hands it back.
@example(ops=[("fill", [("a", "X", 1, None)]), ("fill", [("b", "X", 1, int(NOW_MS) - 1), ("a", "X", 1, None)])])
def test_primitives_agree_with_memory(url: str, ops: list[tuple[Any, ...]]) -> None:
    """Fills, writes, invalidations and removes (what a chain asks of a tier) do what MemoryStore does."""
    reference = ss.backends.MemoryStore()
    with SqlStore(url, namespace=f"p{uuid.uuid4().hex[:12]}") as store:
        for op in ops:
            assert _apply_op(store, op) == _apply_op(reference, op), op
            assert _visible(store) == _visible(reference), op


def test_sql_store_as_an_upper_tier(url: str, namespace: str) -> None:
    with SqlStore(url, namespace=namespace + "-cache") as cache:
        source = ss.backends.MemoryStore()
        chain = ss.ChainedStore([cache, source])
        chain.batch_put([Security(ssm_id="a", isin="X"), Security(ssm_id="b", isin="Y")])
        assert_record(cache.get(Security, {"isin": "X"}), Security(ssm_id="a", isin="X"))
        chain.batch_put([Security(ssm_id="a", isin="Z"), Security(ssm_id="c", isin="X")])
        assert_record(cache.get(Security, {"isin": "X"}), Security(ssm_id="c", isin="X"))
        chain.delete(Security, "b")
        assert cache.get(Security, "b") is None
        assert_record(chain.get(Security, {"isin": "Z"}), Security(ssm_id="a", isin="Z"))


@pytest.mark.parametrize(
    ("kind", "port"),
    [
        pytest.param("postgresql", 5432, marks=pytest.mark.postgresql),
        pytest.param("mysql", 3306, marks=pytest.mark.mysql),
    ],
)
def test_a_server_that_stops_answering_mid_session_fails_within_the_deadline(
    kind: str, port: int, request: pytest.FixtureRequest, namespace: str
) -> None:
    """A connection already open, then nothing answers (a stall, not a refusal): cut, not waited on forever."""
    from faults import FaultProxy

    url = sa.make_url(request.getfixturevalue(f"{kind}_url"))
    with FaultProxy(port) as proxy:
        store = SqlStore(url.set(port=proxy.port), namespace=namespace, timeout=2, transaction_timeout=1.5)
        store.put(Plain(k="x", v=1))
        proxy.stall()
        for call in (
            lambda: store.get(Plain, "x"),
            lambda: store.put(Plain(k="y")),
            lambda: store.patch(Plain, "x", {"v": 2}),
        ):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                call()
            assert time.monotonic() - started < 1.5 + 2 + 1  # the cut transaction, then a reconnect's timeout
        proxy.forward()
        assert_record(store.get(Plain, "x"), Plain(k="x", v=1))  # and it recovers on fresh connections
        store.close()


# ---------------------------------------------------------------------- SQLite batches: a few transactions


class SmallChunks(SqlStore):
    """A SqlStore writing three records a chunk, failing the chunks (from 0) it is told to."""

    put_chunk = 3

    def __init__(self, *args: Any, fail: Sequence[int] = (), **options: Any) -> None:
        super().__init__(*args, **options)
        self.fail = set(fail)
        self.chunks = 0

    def _write(self, family: Any, entries: Sequence[Entry], now_ms: float) -> list[int]:
        written = super()._write(family, entries, now_ms)
        if family.name == family_of(Plain).name:
            self.chunks += 1
            if self.chunks - 1 in self.fail:
                raise StoreError("chunk lost")
        return written


def _begins(seen: list[tuple[str, Any]]) -> int:
    return sum(text.strip().upper() == "BEGIN IMMEDIATE" for text, _ in seen)


def test_a_sqlite_batch_commits_every_so_many_records_not_every_chunk(
    sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmallChunks(sqlite_url, namespace=namespace) as store:
        store.put(Plain(k=-1))  # the table is made outside the counts
        with statements(store.engine) as seen:
            store.batch_put([Plain(k=i, v=float(i)) for i in range(8)])  # chunks of 3, 3, 2
        assert _begins(seen) == 1
        monkeypatch.setattr(sql_backend, "_SQLITE_BATCH", 5)
        with statements(store.engine) as seen:
            store.batch_put([Plain(k=i, v=-float(i)) for i in range(8)])
        assert _begins(seen) == 2  # after 6 records, then the last 2
        assert_same(store.batch_get(Plain, range(8)), [Plain(k=i, v=-float(i)) for i in range(8)])


def test_a_failed_chunk_takes_back_and_names_every_chunk_of_its_transaction(
    sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [Plain(k=i) for i in range(8)]
    with SmallChunks(sqlite_url, namespace=namespace, fail=[1]) as store:
        with pytest.raises(BatchError) as caught:
            store.batch_put(records)
        assert sorted(caught.value.failed) == list(range(8))  # chunk 0 was in the transaction chunk 1 lost
        assert store.count(Plain) == 0
    monkeypatch.setattr(sql_backend, "_SQLITE_BATCH", 3)  # a commit after every chunk
    with SmallChunks(sqlite_url, namespace=namespace, fail=[1]) as store:
        with pytest.raises(BatchError) as caught:
            store.batch_put(records)
        assert sorted(caught.value.failed) == list(range(3, 8))
        assert sorted(store.keys(Plain)) == [0, 1, 2]


class SmallChain(ss.ChainedStore):
    """A chain writing three records a chunk, as `SmallChunks` does."""

    put_chunk = 3


def test_a_chain_over_a_sqlite_file_writes_a_batch_in_its_sources_transaction(sqlite_url: str, namespace: str) -> None:
    # Committed chunk by chunk, the id index's pages were written again with every chunk.
    top = ss.backends.MemoryStore(namespace=namespace)
    with SmallChunks(sqlite_url, namespace=namespace) as source, SmallChain([top, source]) as chain:
        chain.put(Plain(k=-1))  # the table is made outside the counts
        records = [Plain(k=i, v=float(i)) for i in range(8)]  # chunks of 3, 3, 2
        with statements(source.engine) as seen:
            chain.batch_put(records)
        assert _begins(seen) == 1
        assert_same(top.batch_get(Plain, range(8)), records)  # every fill made, after the commit
        assert_same(source.batch_get(Plain, range(8)), records)


def test_a_chained_batch_commits_every_eighth_of_its_records_for_the_fills_waiting(
    sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fills run beside the next chunks' writes, not all after the batch's one commit."""
    monkeypatch.setattr(sql_backend, "_SQLITE_FILLED_LEAST", 1)
    records = [Plain(k=i, v=float(i)) for i in range(24)]  # chunks of 3: a commit after each
    top = ss.backends.MemoryStore(namespace=namespace)
    with SmallChunks(sqlite_url, namespace=namespace) as source, SmallChain([top, source]) as chain:
        chain.put(Plain(k=-1))  # the table is made outside the counts
        with statements(source.engine) as seen:
            chain.batch_put(records)
        assert _begins(seen) == 8
        assert_same(top.batch_get(Plain, range(24)), records)
        with statements(source.engine) as seen:
            source.batch_put(records)  # alone, nothing waits for its commits
        assert _begins(seen) == 1


def test_a_chain_fills_its_caches_with_what_its_source_committed_only(
    sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [Plain(k=i, v=float(i)) for i in range(8)]
    top = ss.backends.MemoryStore(namespace=namespace)
    with SmallChunks(sqlite_url, namespace=namespace, fail=[1]) as source, SmallChain([top, source]) as chain:
        top.batch_put([Plain(k=i, v=-1.0) for i in range(8)])  # older copies: a failed batch leaves them be
        with pytest.raises(BatchError) as caught:
            chain.batch_put(records)
        assert sorted(caught.value.failed) == list(range(8))  # chunk 0 was in the transaction chunk 1 lost
        assert source.count(Plain) == 0
        assert_same(top.batch_get(Plain, range(8)), [Plain(k=i, v=-1.0) for i in range(8)])  # no fill of chunk 0
    monkeypatch.setattr(sql_backend, "_SQLITE_BATCH", 3)  # a commit after every chunk
    top = ss.backends.MemoryStore(namespace=namespace)
    with SmallChunks(sqlite_url, namespace=namespace, fail=[1]) as source, SmallChain([top, source]) as chain:
        with pytest.raises(BatchError) as caught:
            chain.batch_put(records)
        assert sorted(caught.value.failed) == list(range(3, 8))
        assert_same(top.batch_get(Plain, range(8)), [*records[:3], *[None] * 5])  # chunk 0's fill, once committed
        assert sorted(source.keys(Plain)) == [0, 1, 2]


def test_a_row_schema_met_in_a_later_chunk_is_saved_during_the_batch(sqlite_url: str, namespace: str) -> None:
    # The second family's row schema is saved while the first family's chunk is written, its
    # transaction open: waiting for that transaction's lock would fail (busy timeout, no retries).
    plain = [Plain(k=i, **{f"a{j}": i + j / 7 for j in range(20)}) for i in range(3)]
    other = [Security(ssm_id=i, isin=f"I{i}", **{f"b{j}": -i - j / 7 for j in range(30)}) for i in range(3)]
    with SmallChunks(sqlite_url, namespace=namespace, timeout=1.0, retries=0) as store:
        store.batch_put([*plain, *other])
        assert_same(store.batch_get(Plain, range(3)), plain)
        assert_same(store.batch_get(Security, range(3)), other)
        assert store.count(_Schema) == 2


# ---------------------------------------------------------------------------- indexes: find, reindex, reset


class Quote(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["k"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector", "price", "flag"]


# Values where a careless index goes wrong: ints past 2**53 next to their nearest double,
# infinities, -0.0, bools next to 0 and 1, strs past the indexed prefix, code-point order.
HARD: list[Any] = [
    2**53,
    2**53 + 1,
    float(2**53),
    2**63 - 1,
    -(2**63),
    float(2**63),
    0,
    -0.0,
    1,
    True,
    False,
    1.5,
    math.inf,
    -math.inf,
    1e308,
    "",
    "a",
    "ab",
    "\uffff",
    "\U0001f600",
    "\ud800",
    "x" * 300,
    "x" * 300 + "a",
    "x" * 254 + "é",
    None,
    math.nan,
]


def _records(store: SqlStore, cls: type) -> list[tuple[bytes, Any]]:
    """Every live record, decoded, read as the default `_find` reads them (no index)."""
    family = family_of(cls)
    return list(store._records_of(family, family.root, store.clock() * 1000))


SOME = [2**53 + 1, True, 0, "ab", "x" * 300]  # the searches checked after each write


def _searches(values: Sequence[Any]) -> Iterator[Search]:
    for attr in ("sector", "price", "flag"):
        for value in values:
            if _query.indexed(value) is None:
                continue
            yield Search((Condition(attr, "eq", value),))
            yield Search((Condition(attr, "ne", value),))
            if type(value) is not bool:
                for op in ("gt", "gte", "lt", "lte"):
                    yield Search((Condition(attr, op, value),))
                    # Ordered by the attribute it filters: by the value's columns alone (one kind left).
                    yield Search((Condition(attr, op, value),), order=((attr, op in ("gt", "lt")),), stop=7)
            if type(value) is str:
                yield Search((Condition(attr, "startswith", value),))
        yield Search(order=((attr, False),))
        yield Search((Condition(attr, "ne", values[0]),), order=((attr, True),), start=1)  # every kind left
        yield Search(order=((attr, True), ("price", False)), start=3, stop=11)
    yield Search((Condition("price", "in", (2**53 + 1, "a", True, -0.0)),), order=(("sector", True),))


def _agree(store: SqlStore, cls: type, values: Sequence[Any] = HARD) -> None:
    """Every search over *values* finds and counts what the rules say; no side row outlives its record.

    Nor does one hold another key or expiry than its record's: a query that filters reads them there.
    """
    family = family_of(cls)
    now_ms = store.clock() * 1000
    records = _records(store, cls)
    for search in _searches(values):
        want = _query.run(search, records)
        assert store._find(family, search, now_ms) == want, search
        assert store._count_found(family, search, now_ms) == len(want), search
    columns = ("id", "key", "expires_ms")
    side = sa.table(_side_name(store, cls), *map(sa.column, columns))
    table = sa.table(store.table_name(cls), *map(sa.column, columns), sa.column("payload"))
    holds = sa.exists().where(
        table.c.id == side.c.id,
        table.c.payload.is_not(None),
        table.c.key == side.c.key,
        table.c.expires_ms.is_not_distinct_from(side.c.expires_ms),
    )
    orphans = sa.select(sa.func.count()).select_from(side).where(~holds.select_from(table))
    with store.engine.connect() as conn:
        assert conn.execute(orphans).scalar_one() == 0


def _side_name(store: SqlStore, cls: type) -> str:
    return "sy" + store.table_name(cls)[2:]


def _quotes(values: Sequence[Any], prefix: str = "q") -> list[Quote]:
    out = []
    for i, value in enumerate(values):
        q = Quote(k=f"{prefix}{i:03d}", price=value, sector=values[(i * 7) % len(values)])
        if i % 3:
            q["flag"] = values[(i * 5) % len(values)]
        out.append(q)
    return out


def test_find_answers_hard_values_exactly_as_the_rules(store: SqlStore) -> None:
    store.batch_put(_quotes(HARD))
    _agree(store, Quote)


def test_indexes_follow_every_write_path(make: Callable[..., SqlStore], clock: Any) -> None:
    store = make(clock=clock, lifetime=lambda r: 5 if r["k"].endswith("7") else None)
    family = family_of(Quote)
    store.batch_put(_quotes(HARD))
    _agree(store, Quote, SOME)
    store.put(Quote(k="q001", price=2**53 + 1, sector="zz"))
    store.patch(Quote, "q002", {"price": "now a str", "flag": ss.UNSET})
    assert store.incr(Quote, "q000", "price", 1) == 2**53 + 1  # the nearest double stays; the remainder moves
    store.incr(Quote, "new", "price", 2**53)
    store.batch_patch(Quote, [{"k": "q004", "sector": ss.UNSET}, {"k": "q005", "sector": True}])
    store.delete(Quote, "q006")
    store.batch_delete(Quote, ["q008", "q009", "absent"])
    _agree(store, Quote, SOME)
    clock.tick(6)  # the records ending in 7 expire: still in their table, never found
    _agree(store, Quote, SOME)
    # A chain's upper tier: fills (old versions refused) and invalidations (tombstones).
    now_ms = clock() * 1000
    fresh = store._read(family, [encode_key(("q010",))], now_ms)[0]
    assert fresh is not None
    entry = Entry(
        encode_record("Quote", Quote(k="q010", price=-1, sector="filled")),
        fresh.version + 1,
        None,
        encode_key(("q010",)),
        (),
    )
    stale = Entry(encode_record("Quote", Quote(k="q011", price=-2)), 1, None, encode_key(("q011",)), ())
    store._fill(family, [entry, stale], now_ms)
    store._invalidate(family, [encode_key(("q012",)), encode_key(("q999",))], 2**60, int(now_ms) + 60_000)
    assert list(store.find(Quote, sector="filled")) == ["q010"]
    assert "q012" not in list(store.find(Quote))
    _agree(store, Quote, SOME)
    store.batch_put(_quotes(HARD * 120, prefix="big"))  # 3,120 records: several chunks, a SQLite _Batch, COPY
    _agree(store, Quote, SOME)
    assert store.clear(Quote) > 3000
    _agree(store, Quote, SOME)
    side = sa.table(_side_name(store, Quote))
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(side)).scalar_one() == 0


def test_a_family_without_indexes_never_touches_a_side_table(store: SqlStore) -> None:
    store.put(Plain(k="warm-up"))
    with statements(store.engine) as seen:
        store.batch_put([Plain(k=f"p{i}", v=i) for i in range(3000)])
        store.patch(Plain, "p1", {"v": ss.UNSET})
        store.incr(Plain, "p2", "v", 1)
        store.delete(Plain, "p3")
        assert list(store.find(Plain)[:2]) == ["p0", "p1"]
        store.reset(Plain, [Plain(k="r")])
        store.clear(Plain)
    text = " ".join(statement for statement, _ in seen)
    assert "sy_" not in text
    assert "stockstore_indexes" not in text


def test_an_index_declared_after_records_were_stored_raises_until_reindex(url: str, namespace: str) -> None:
    def declare(indexes: list[str]) -> type:
        return type("Late", (ss.Record,), {"__stockstore_keys__": ["k"], "__stockstore_indexes__": indexes})

    with SqlStore(url, namespace=namespace) as store:
        before = declare([])
        store.batch_put([before(k=f"k{i}", sector="tech" if i % 2 else "fin", price=i) for i in range(50)])
    with SqlStore(url, namespace=namespace) as store:
        later = declare(["sector"])
        store.put(later(k="k100", sector="tech"))  # written with its index: still not every record
        with pytest.raises(ss.errors.QueryError, match=r"'sector'.*store\.reindex\(Late\)"):
            list(store.find(later, sector="tech"))
        with pytest.raises(ss.errors.QueryError, match="reindex"):
            store.find(later).order_by("sector").count()
        assert list(store.find(later)[:2]) == ["k0", "k1"]  # no index asked: answered
        store.reindex(later)
        assert store.find(later, sector="tech").count() == 26
        assert list(store.find(later, sector="fin"))[:2] == ["k0", "k2"]  # stored-key order: shorter first
        even_later = declare(["sector", "price"])
        with pytest.raises(ss.errors.QueryError, match="'price'"):
            store.find(even_later, price__gt=3).count()
        store.reindex(even_later)
        assert store.find(even_later, price__gt=3, sector="tech").count() == 23
    # A process that keeps only "sector" takes back the "built" mark of "price": it would not keep it.
    with SqlStore(url, namespace=namespace) as other:
        other.put(declare(["sector"])(k="k200", sector="tech", price=1000))
    with SqlStore(url, namespace=namespace) as store:
        with pytest.raises(ss.errors.QueryError, match="'price'"):
            store.find(even_later, price__gt=3).count()
        assert store.find(even_later, sector="tech").count() == 27


def test_find_reads_through_the_side_table_index(url: str, namespace: str) -> None:
    with SqlStore(url, namespace=namespace) as store:
        store.batch_put(_quotes(HARD * 40))
        family = family_of(Quote)
        search = Search((Condition("price", "gte", 2**53), Condition("sector", "eq", "a")), order=(("price", True),))
        captured: list[str] = []
        with statements(store.engine) as seen:
            store._find(family, search, store.clock() * 1000)
        captured = [s for s, _ in seen if s.lstrip().upper().startswith("SELECT") and "sy_" in s]
        (query,) = captured
        params = next(p for s, p in seen if s == query)
        with store.engine.connect() as conn:
            if store.engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + query, params))
                assert "USING COVERING INDEX yn_" in plan, plan  # the family table is never read
                assert f"SCAN {_side_name(store, Quote)}" not in plan, plan
            elif store.engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = " ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + query, params))
                assert re.search(r"Index (Only )?Scan using y[nv]_", plan), plan
                assert f"Seq Scan on {_side_name(store, Quote)}" not in plan, plan
            else:
                rows = conn.exec_driver_sql("EXPLAIN " + query, params).mappings().all()
                side = [r for r in rows if r["key"] is not None and r["table"] in ("i0", "i1")]
                assert len(side) == 2, rows
                assert all(r["type"] != "ALL" for r in side), rows


def test_reset_is_seen_whole_by_a_concurrent_reader(make: Callable[..., SqlStore]) -> None:
    writer, reader = make(), make()
    old = [Quote(k=f"old{i:04d}", sector="old", price=i) for i in range(3000)]
    new = [Quote(k=f"new{i:04d}", sector="new", price=-i) for i in range(2000)]
    writer.reset(Quote, old)
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            total = reader.count(Quote)
            tagged = reader.find(Quote, sector__in=["old", "new"]).count()
            keys = list(reader.find(Quote, price__gte=-(10**9))[:5])
            if total not in (3000, 2000) or tagged not in (3000, 2000):
                problems.append(f"count {total}, find {tagged}")
            if len({k[:3] for k in keys}) != 1:
                problems.append(f"keys {keys}")
            seen.append((total, tagged, len(keys)))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(6):
            writer.reset(Quote, new if n % 2 == 0 else old)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:5]
    assert {t for t, _, _ in seen} == {3000, 2000}, "the reader never saw a switch"
    assert sorted(reader.keys(Quote))[:1] == ["old0000"]


@pytest.mark.parametrize("option", ["namespace=foo", "lifetime=5"])
def test_stockstore_options_in_a_url_given_to_sqlstore_itself_are_refused(option: str, tmp_path: Path) -> None:
    """SQLAlchemy would hand them to the driver or drop them: the store says where they go instead."""
    with pytest.raises(StoreError, match="keyword arguments, not in its URL"):
        SqlStore(f"sqlite:///{tmp_path / 'x.db'}?{option}")
    with ss.from_url(f"sqlite:///{tmp_path / 'x.db'}?{option}") as store:  # from_url takes them out and uses them
        assert store.namespace == ("foo" if option.startswith("namespace") else "stockstore")
