"""`SqlStore`: records in SQLite, PostgreSQL or MariaDB/MySQL, through SQLAlchemy Core.

One table per (namespace, class family), created on first use::

    id          sha256(encoded primary key)   PRIMARY KEY (a digest: key values can be
                                              far longer than an index entry may be)
    key         encoded primary key           returned by keys() and alternate look-ups
    alt1..altN  sha256(encoded alternate key) UNIQUE, NULL where unset
    payload     the codec's bytes, opaque     NULL for a tombstone
    version     BIGINT                        grows per key (see ChainedStore)
    expires_ms  BIGINT NULL                   compared with the store's clock, never the database's

Attribute names never become column names and the record stays the codec's
bytes: per-attribute, JSON or REAL columns each lose NaN, -0.0, big ints or
types on some database.  Key values and attribute names only ever travel as
bound parameters.  Every write primitive is one transaction that locks the
rows it replaces (``SELECT ... FOR UPDATE`` in id order; ``BEGIN IMMEDIATE`` on
SQLite), decides in Python, then writes in a few batched statements that
reach no other row (MariaDB/MySQL: through the primary key); deadlocks,
serialization failures and racing inserts are retried.

A family that declares ``__stockstore_indexes__`` also gets a side table,
``sy_<the rest of its table's name>``: one row per (record, indexed attribute it
holds), changed by every write primitive in its own transaction (see "index values"
below for how a value is kept so that the database compares as `stockstore._query`
does).  A side row also carries its record's key and expiry, so a query that filters
never reads the family table's wide rows: `find` and `count` are one ``SELECT`` over
the side table, joined to itself once per further attribute, with ORDER BY / LIMIT /
OFFSET.  ``stockstore_indexes`` names the side tables' indexes that hold every
record: one declared after records were stored raises `QueryError` until `reindex`.
`reset` replaces every row (and side row) in one transaction: readers see the old
snapshot until it commits.  A family without indexes never touches a side table.
See docs/backends.md for the details.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import operator
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import msgpack
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from .._keys import family_of
from .._lifetime import Lifetime
from .._query import Search
from .._writer import Chunk, Encoded, write_chunks
from ..errors import BackendUnavailableError, InvalidKeyError, QueryError, SerializationError, StoreError
from . import _sql_index as _index
from .base import (
    BaseStore,
    Entry,
    Family,
    Merge,
    PartialWrite,
    Plan,
    Slot,
    Stored,
    plan_fill,
    plan_write,
    slots,
    tombstone,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")

# A driverless URL gets the driver stockstore is tested with.
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
_SUPPORTED = {("sqlite", "pysqlite"), ("postgresql", "psycopg"), ("mysql", "pymysql"), ("mariadb", "pymysql")}
_WRITE = "stockstore_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
_MYSQL = ("mysql", "mariadb")
_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL)  # MySQL's BLOB stops at 64 KB
_DIGEST = sa.LargeBinary(32).with_variant(mysql.BINARY(32), *_MYSQL)  # MySQL indexes no BLOB without a length
_PREFIX = sa.LargeBinary(255).with_variant(mysql.VARBINARY(255), *_MYSQL)  # an indexed str's first bytes
# serialization failure, deadlock, unique violation, and what a racing CREATE TABLE IF NOT EXISTS meets
_PG_RETRY = {"40001", "40P01", "23505", "42P07", "42710"}
_MYSQL_RETRY = {1213, 1205, 1062}  # deadlock, lock wait timeout, duplicate key
_SQLITE_RETRY = {"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"}
_BACKOFF = 0.01  # seconds; doubled per attempt, randomised
_NAME_ROOM = 63 - len("ss_") - len("_") - 20  # PostgreSQL truncates identifiers at 63 bytes
# A SQLite batch write commits once per this many records, not once per chunk (see _Batch).
_SQLITE_BATCH = 50_000
# ... or per this part of the batch (of this many records at the least), if less, while a
# chain's fills wait for the commits.
_SQLITE_FILLED_PARTS = 8
_SQLITE_FILLED_LEAST = 2_000
# SQLite's page cache per connection, in KiB (PRAGMA cache_size takes -KiB): room for the
# digest index of a million records, which a batch's random ids touch page by page.
_SQLITE_CACHE_KIB = 65_536

_engine_locks: weakref.WeakKeyDictionary[sa.Engine, threading.RLock] = weakref.WeakKeyDictionary()
_engine_locks_guard = threading.Lock()


def table_name(namespace: str, family: str) -> str:
    """The table of a (namespace, family) pair: ``ss_<readable prefix>_<digest>``.

    The prefix is for people reading the schema (lowercase ``[a-z0-9_]``,
    truncated); the digest of the exact pair keeps distinct pairs apart, so
    the name is always valid, at most 63 ASCII bytes and case-insensitive-safe.
    """
    digest = hashlib.sha256(msgpack.packb([namespace, family])).hexdigest()[:20]
    readable = re.sub(r"[^a-z0-9_]+", "_", f"{namespace}_{family}".lower())[:_NAME_ROOM]
    return f"ss_{readable}_{digest}"


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ids(keys: Iterable[bytes]) -> dict[bytes, bytes]:
    """Each key's row id, worked out once per write: a write needs it to lock, to decide and to insert."""
    return {key: hashlib.sha256(key).digest() for key in keys}


_COPY_TYPES = {sa.BigInteger: "int8", sa.SmallInteger: "int2", sa.Double: "float8"}  # else bytea
_RESET_CHUNK = 10_000  # records a reset inserts per statement (COPY: per stream)
_STATEMENT_ROOM = 4096  # an INSERT's text, its other columns and alternate keys, escaped
_MYSQL_ESCAPED = tuple(bytes([c]) for c in b"\x00\n\r\x1a'\"\\")  # what PyMySQL sends as two bytes


def _escaped_size(value: bytes) -> int:
    return len(value) + sum(value.count(c) for c in _MYSQL_ESCAPED)


def _quoted(name: str) -> str:
    """A table name stockstore made (``[a-z0-9_]``) as a quoted identifier."""
    return '"' + name + '"'


def _sibling(name: str, prefix: str) -> str:
    """A name beside the family table *name* (``ss_...``): the same length, another two-letter prefix."""
    return prefix + name[2:]


def _side_name(name: str) -> str:
    """The side table of the family table *name*, which ``stockstore_indexes`` names too.

    ``sy``: the side tables of earlier development builds (``sx``), without keys and
    expiries, are left alone, and their indexes count as never built.
    """
    return _sibling(name, "sy")


class _Held(NamedTuple):
    """A locked row as the write primitives need it."""

    version: int
    expires_ms: int | None
    filled: bool  # payload IS NOT NULL (False: a tombstone)
    payload: bytes | None  # fetched only when a merge needs it

    def live(self, now_ms: float) -> bool:
        return self.filled and (self.expires_ms is None or self.expires_ms > now_ms)

    def expired(self, now_ms: float) -> bool:
        return self.filled and self.expires_ms is not None and self.expires_ms <= now_ms


@dataclass
class _Plan:
    """What one write transaction changes."""

    delete: set[bytes] = field(default_factory=set)  # ids of rows removed
    release: dict[int, set[bytes]] = field(default_factory=dict)  # alt index -> ids whose column becomes NULL
    replace: dict[bytes, dict[str, Any]] = field(default_factory=dict)  # id -> new row, for rows locked
    insert: dict[bytes, dict[str, Any]] = field(default_factory=dict)  # id -> row, for ids not found
    index: list[dict[str, Any]] = field(default_factory=list)  # side-table rows of the records written


class _Batch:
    """One SQLite write transaction over the chunks of a batch write, committed every `_SQLITE_BATCH` records.

    Ids are digests, so a chunk's inserts land all over the id index, and SQLite
    writes every page a transaction changed to the WAL at its commit.  Committed per
    chunk of 2,000, a table of 500,000 rows took about 4 KB of index pages per
    record written (more than the record), growing with the table; committed per
    50,000, each index page is written about once per commit.

    The chunks' writes run on one thread of the batch's own, on one connection,
    inside ``BEGIN IMMEDIATE``: SQLite has one writer at a time, so once the
    transaction is open no racing insert or deadlock can occur and nothing in it
    is retried.  A chunk that fails rolls back every chunk since the last commit,
    and its `PartialWrite` names them all: nothing acknowledged is ever missing.
    A write from another thread of the batch (a row schema saved while the next
    chunk is encoded) runs between two chunks, on that thread: it commits what
    is pending, then runs in a transaction of its own, so a schema is stored
    before `Shelf` counts it as saved, and before any row that uses it.

    What must wait for a commit (a `ChainedStore` fills its caches only with what its
    source committed) is handed to `after_commit`; what a rollback takes back, it drops.
    While such work waits, the batch commits at least every eighth of its records, so
    that the fills run beside the next chunks' writes and the last ones left to wait
    for the final commit are few: committed per 50,000, a chain's batch of 30,000
    filled its caches only after the source had written everything.
    """

    def __init__(self, store: SqlStore, chunks: Sequence[Chunk]) -> None:
        self.store = store
        records = sum(len(keys) for _, keys, _ in chunks)
        self.filled_every = min(_SQLITE_BATCH, max(_SQLITE_FILLED_LEAST, records // _SQLITE_FILLED_PARTS))
        # After which chunks to commit: the last of the batch, and the last of each run of one family
        # (a PartialWrite names the keys of one family).
        self.ends = {i for i in range(len(chunks)) if i + 1 == len(chunks) or chunks[i + 1][0] is not chunks[i][0]}
        self.written = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="stockstore-sqlite-batch")
        self.conn: sa.Connection | None = None
        self.transaction: sa.RootTransaction | None = None
        self.pending: list[bytes] = []  # keys of the chunks written since the last commit
        self.committed: list[Callable[[], None]] = []  # what runs once they are committed

    def chunk(self, keys: list[bytes], work: Callable[[], None]) -> None:
        """Run *work*, the writes of the next chunk (of *keys*), in the batch's transaction, on its thread."""
        self.pool.submit(self._chunk, keys, work).result()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run *callback* (on the batch's thread) once what was written so far is committed."""
        self.committed.append(callback)

    def outside(self, work: Callable[[], R]) -> R:
        """Run *work*, a write of the batch's that is no chunk, between two chunks (see the class)."""
        return self.pool.submit(self._outside, work).result()

    def run(self, work: Callable[[sa.Connection], R]) -> R:
        """*work* in the open transaction (a chunk's statements, on the batch's thread)."""
        if self.conn is None:
            self.conn, self.transaction = self.store._begin()
        try:
            return work(self.conn)
        except BaseException:
            self._rollback()
            raise

    def _chunk(self, keys: list[bytes], work: Callable[[], None]) -> None:
        last = self.written in self.ends
        self.written += 1
        self.store._local.chunk = self
        try:
            work()
        except PartialWrite:  # refused alternate keys: the rest of the chunk is applied, as alone
            self._commit_or_fail(keys)
            raise
        except BaseException as error:
            raise self._failed(keys, error) from error
        finally:
            self.store._local.chunk = None
        self.pending += keys
        if last or len(self.pending) >= (self.filled_every if self.committed else _SQLITE_BATCH):
            self._commit_or_fail([])

    def _outside(self, work: Callable[[], R]) -> R:
        self._commit_or_fail([])
        return work()

    def _commit_or_fail(self, keys: list[bytes]) -> None:
        try:
            self.commit()
        except BaseException as error:
            raise self._failed(keys, error) from error

    def _failed(self, keys: list[bytes], error: BaseException) -> PartialWrite:
        """What a chunk that failed raises: its keys and those of the chunks rolled back with it."""
        self._rollback()
        cause = error.__cause__ if isinstance(error, PartialWrite) and error.__cause__ is not None else error
        failed, self.pending = [*self.pending, *keys], []
        return PartialWrite(failed, cause)

    def commit(self) -> None:
        """Commit what the batch wrote so far (on the batch's thread)."""
        conn, transaction, self.conn, self.transaction = self.conn, self.transaction, None, None
        if conn is None or transaction is None:
            return
        try:
            with self.store._errors():
                transaction.commit()
        except BaseException:
            self.committed = []
            raise
        finally:
            conn.close()  # a transaction that failed to commit is rolled back
        self.pending = []
        committed, self.committed = self.committed, []
        for callback in committed:
            callback()

    def _rollback(self) -> None:
        self.committed = []  # what waited for a commit that will not come
        conn, transaction, self.conn, self.transaction = self.conn, self.transaction, None, None
        if conn is not None and transaction is not None:
            try:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    transaction.rollback()
            finally:
                conn.close()

    def close(self) -> None:
        """End the batch: what an error outside the chunks (their encoding) left uncommitted is rolled back."""
        try:
            self.pool.submit(self._rollback).result()
        finally:
            self.pool.shutdown()


class SqlStore(BaseStore):
    """Records in a SQL database: ``SqlStore("postgresql://host/db")``, ``SqlStore("sqlite:///x.db")``.

    *url_or_engine* is a SQLAlchemy URL (string or ``URL``) or a ready
    ``Engine``, which `close` leaves open (a store that built its engine
    disposes of it).  A driverless ``postgresql://`` uses psycopg 3 and
    ``mysql://`` / ``mariadb://`` use PyMySQL.

    *timeout* bounds, in seconds, connecting to a server, waiting for a pooled
    connection, and (SQLite) waiting for another writer's lock.
    *transaction_timeout* bounds one transaction on a server: past it the
    connection is cut (a server that stopped answering would otherwise be waited
    for forever: libpq has no read timeout) and the call raises
    `BackendUnavailableError`.  *chunk_size* is the most ids per ``IN (...)``
    and rows per page of `keys`; *retries* bounds how often a transaction that
    met a deadlock, a serialization failure or a racing insert is run again.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | sa.Engine,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        transaction_timeout: float = 30.0,
        chunk_size: int = 1000,
        retries: int = 5,
    ) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime, clock=clock)
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, not {chunk_size!r}")
        if type(retries) is not int or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        for name, seconds in (("timeout", timeout), ("transaction_timeout", transaction_timeout)):
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
        self.transaction_timeout = transaction_timeout
        self.chunk_size = chunk_size
        self.retries = retries
        self.timeout = timeout
        if isinstance(url_or_engine, sa.Engine):
            _check_host(url_or_engine.url)
            self.engine = url_or_engine
            self._owned = False
        else:
            self.engine = _build_engine(_without_own_options(_url(url_or_engine)), timeout)
            self._owned = True
        dialect = self.engine.dialect
        _check_supported(dialect.name, dialect.driver)
        self._dialect = "mysql" if dialect.name in _MYSQL else dialect.name
        self._password = self.engine.url.password
        self._serial: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._work_engine = self.engine
        self._batches = False  # whether batch writes span chunks in one transaction (see _Batch)
        self._local = threading.local()  # .batch: the _Batch this thread writes in; .chunk: inside one of its chunks
        if self._dialect == "sqlite":
            self._serial = _prepare_sqlite(self.engine)
            self._batches = not _in_memory(self.engine.url) and not isinstance(self.engine.pool, StaticPool)
        elif not self._owned:
            # Connections of a given engine get READ COMMITTED on checkout (and back on return).
            self._work_engine = self.engine.execution_options(isolation_level="READ COMMITTED")
        self._max_packet: int | None = None  # MariaDB/MySQL's max_allowed_packet, read on first write
        self._metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        self._tables_lock = threading.Lock()
        self._sides: dict[str, sa.Table] = {}  # table name -> its side table, as defined here
        self._declared: set[tuple[str, tuple[str, ...]]] = set()  # (family, indexes) whose side table is in place
        self._meta: sa.Table | None = None

    def __repr__(self) -> str:
        return f"<SqlStore {self.engine.url.render_as_string(hide_password=True)} namespace={self.namespace!r}>"

    def _close(self) -> None:
        """Dispose of the engine if this store built it."""
        if self._owned:
            self.engine.dispose()

    def table_name(self, cls: type) -> str:
        """The name of the table holding *cls*'s family in this store's namespace."""
        return table_name(self.namespace, family_of(cls).name)

    # ------------------------------------------------------------------ transactions

    def _run(self, work: Callable[[sa.Connection], R], *, write: bool, alone: bool = False) -> R:
        """Run *work* in one transaction, again (up to *retries* times) after a transient conflict.

        A chunk of a SQLite batch runs in the batch's transaction instead, and another
        write of the batch's between two chunks (see `_Batch`).  Work *alone* (making
        a table) never shares a batch's transaction: what the batch wrote is committed
        first, so that a rollback cannot take back a table `_table` counts as made.
        """
        chunk: _Batch | None = getattr(self._local, "chunk", None)
        if chunk is not None and not alone:
            return chunk.run(work)
        if chunk is not None:
            chunk.commit()
            self._local.chunk = None
            try:
                return self._run(work, write=write)
            finally:
                self._local.chunk = chunk
        batch: _Batch | None = getattr(self._local, "batch", None)
        if write and batch is not None:
            return batch.outside(functools.partial(self._run, work, write=True))
        attempt = 0
        reconnected = False
        while True:
            try:
                with self._serial, self._work_engine.connect() as conn:
                    if write:
                        conn.execution_options(**{_WRITE: True})
                    with self._deadline(conn), conn.begin():
                        return work(conn)
            except sa.exc.DBAPIError as exc:
                # A pooled connection the server dropped (a restart) is found here, not pinged
                # before use: a ping at checkout would wait outside the transaction's deadline.
                # One fresh connection is tried; a server that keeps dropping them is down.
                reconnect = exc.connection_invalidated and not reconnected
                reconnected = reconnected or exc.connection_invalidated
                if attempt >= self.retries or not (_transient(exc) or reconnect):
                    raise
                logger.debug("retrying a %s transaction after %s", self._dialect, type(exc.orig).__name__)
            time.sleep(random.uniform(0, _BACKOFF * 2**attempt))
            attempt += 1

    def _begin(self) -> tuple[sa.Connection, sa.RootTransaction]:
        """A connection in an open write transaction (SQLite's ``BEGIN IMMEDIATE``), retried as `_run` is."""
        attempt = 0
        while True:
            conn = self._work_engine.connect()
            try:
                conn.execution_options(**{_WRITE: True})
                return conn, conn.begin()
            except sa.exc.DBAPIError as exc:
                conn.close()
                if attempt >= self.retries or not _transient(exc):
                    raise
            except BaseException:
                conn.close()
                raise
            time.sleep(random.uniform(0, _BACKOFF * 2**attempt))
            attempt += 1

    def _write_chunks(self, chunks: Sequence[Chunk], now_ms: float, total: int, *, single: bool) -> None:
        """A batch's chunks, written as `BaseStore` does; on a SQLite file, in a few transactions (see `_Batch`)."""
        with self._batch_transaction(chunks) as batch:
            if batch is None:
                super()._write_chunks(chunks, now_ms, total, single=single)
                return

            def write(family: Family, encoded: Encoded) -> None:
                keys = [e.key for e in encoded[0]] + encoded[1]
                batch.chunk(keys, lambda: self._write_encoded(family, encoded, now_ms))

            write_chunks(chunks, write, threaded=True, total=total, what="records were not written", single=single)

    @contextlib.contextmanager
    def _batch_transaction(self, chunks: Sequence[Chunk]) -> Iterator[_Batch | None]:
        """On a SQLite file, one `_Batch` for a batch of several chunks (written on one thread, in order)."""
        if not self._batches or len(chunks) < 2:
            yield None
            return
        batch = _Batch(self, chunks)
        self._local.batch = batch  # on the caller's thread: its other writes (row schemas) go between chunks
        try:
            yield batch
        finally:
            self._local.batch = None
            batch.close()

    @contextlib.contextmanager
    def _deadline(self, conn: sa.Connection) -> Iterator[None]:
        """Cut *conn*'s socket if the transaction runs past `transaction_timeout` (not SQLite: no server)."""
        if self._dialect == "sqlite":
            yield
            return
        cut = threading.Timer(self.transaction_timeout, _cut, (conn.connection.driver_connection,))
        cut.daemon = True
        cut.start()
        try:
            yield
        finally:
            cut.cancel()

    def _chunks(self, items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
        for start in range(0, len(items), self.chunk_size):
            yield items[start : start + self.chunk_size]

    # ------------------------------------------------------------------ tables

    def _table(self, family: Family) -> sa.Table:
        """The family's table, created (or found) on first use."""
        table = self._tables.get(family.name)
        if table is not None:
            return table
        with self._tables_lock:
            table = self._tables.get(family.name)
            if table is not None:
                return table
            name = table_name(self.namespace, family.name)
            alternates = len(family.keys) - 1
            table = sa.Table(
                name,
                self._metadata,
                sa.Column("id", _DIGEST, primary_key=True),
                sa.Column("key", _BLOB, nullable=False),
                *(sa.Column(f"alt{i}", _DIGEST, nullable=True, unique=True) for i in range(1, alternates + 1)),
                sa.Column("payload", _BLOB, nullable=True),
                sa.Column("version", sa.BigInteger, nullable=False),
                sa.Column("expires_ms", sa.BigInteger, nullable=True),
                mysql_engine="InnoDB",
                mariadb_engine="InnoDB",
            )

            def create(conn: sa.Connection) -> None:
                # Whether this creates it: asked only where it matters (a family that declares indexes).
                new = bool(family.indexes) and not sa.inspect(conn).has_table(name)
                # IF NOT EXISTS, and a racing CREATE on PostgreSQL (a unique violation) is retried.
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                found = {c["name"] for c in sa.inspect(conn).get_columns(name)}
                if found != set(table.columns.keys()):
                    raise StoreError(
                        f"table {name} of {family.name!r} has columns {sorted(found)}, but this class declares "
                        f"{alternates} alternate key(s): migrate the table or use another namespace"
                    )
                if new:  # no record yet: every index it declares is complete
                    self._create_side(conn, name)
                    self._mark_built(conn, _side_name(name), family.indexes)

            try:
                self._run(create, write=True, alone=True)
            except BaseException:
                self._metadata.remove(table)  # else the next call meets "already defined", not this error
                raise
            self._tables[family.name] = table
            return table

    def _side(self, family: Family) -> sa.Table | None:
        """The side table of the family's indexes, in place; ``None`` for a family that declares none.

        The first use of a declaration in this process also takes back the "built"
        mark of any index it does not declare: this process writes without keeping
        it, so a query on it must raise until `reindex`, never answer partly.
        """
        if not family.indexes:
            return None
        table = self._table(family)
        declaration = (family.name, family.indexes)
        if declaration in self._declared:
            return self._sides[table.name]

        def create(conn: sa.Connection) -> None:
            self._create_side(conn, table.name)
            meta = self._meta_table()
            kept = [_index.attr_code(n) for n in family.indexes]
            conn.execute(meta.delete().where(meta.c.tbl == _side_name(table.name), meta.c.attr.not_in(kept)))

        with self._tables_lock:
            self._run(create, write=True, alone=True)
            self._declared.add(declaration)
        return self._sides[table.name]

    def _side_table(self, name: str) -> sa.Table:
        """The side table of the family table *name*, as defined here (see the index values above)."""
        side = self._sides.get(name)
        if side is None:
            side = self._sides[name] = sa.Table(
                _side_name(name),
                self._metadata,
                sa.Column("id", _DIGEST, primary_key=True),
                sa.Column("attr", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("kind", sa.SmallInteger, nullable=False),
                sa.Column("num", sa.Double, nullable=True),
                sa.Column("adj", sa.BigInteger, nullable=True),
                sa.Column("sv", _PREFIX, nullable=True),
                sa.Column("sx", _BLOB, nullable=True),
                sa.Column("key", _BLOB, nullable=False),
                sa.Column("expires_ms", sa.BigInteger, nullable=True),
                mysql_engine="InnoDB",
                mariadb_engine="InnoDB",
            )
            # A filter is answered from the index alone, live rows and keys in key order included
            # (the order of ties); id last, to join a further attribute.  PostgreSQL's index
            # entries and MySQL's indexed BLOBs have a size limit, which a key has not:
            # there the keys are read from the rows found.
            keyed = [side.c.key] if self._dialect == "sqlite" else []
            after = [*keyed, side.c.expires_ms, side.c.id]
            sa.Index(_sibling(name, "yn"), side.c.attr, side.c.kind, side.c.num, side.c.adj, *after)
            sa.Index(_sibling(name, "yv"), side.c.attr, side.c.kind, side.c.sv, *after)
        return side

    def _meta_table(self) -> sa.Table:
        """``stockstore_indexes``: one row per (family table, index) that holds every record (is built)."""
        if self._meta is None:
            self._meta = sa.Table(
                "stockstore_indexes",
                self._metadata,
                sa.Column("tbl", sa.String(64), primary_key=True),
                sa.Column("attr", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("name", _BLOB, nullable=False),  # the attribute's name, for people reading the schema
                mysql_engine="InnoDB",
                mariadb_engine="InnoDB",
            )
        return self._meta

    def _create_side(self, conn: sa.Connection, name: str) -> None:
        """Create the side table of *name* and the metadata table, where missing."""
        side = self._side_table(name)
        conn.execute(sa.schema.CreateTable(side, if_not_exists=True))
        if conn.dialect.name == "mysql" and not getattr(conn.dialect, "is_mariadb", False):
            # MySQL has no CREATE INDEX IF NOT EXISTS.
            have = {i["name"] for i in sa.inspect(conn).get_indexes(side.name)}
            for index in side.indexes:
                if index.name not in have:
                    conn.execute(sa.schema.CreateIndex(index))
        else:
            for index in side.indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        conn.execute(sa.schema.CreateTable(self._meta_table(), if_not_exists=True))

    def _mark_built(self, conn: sa.Connection, name: str, attrs: Sequence[str]) -> None:
        """Record that the indexes *attrs* of the side table *name* hold every record."""
        meta = self._meta_table()
        codes = [_index.attr_code(a) for a in attrs]
        conn.execute(meta.delete().where(meta.c.tbl == name, meta.c.attr.in_(codes)))
        conn.execute(meta.insert(), [{"tbl": name, "attr": _index.attr_code(a), "name": _index.text(a)} for a in attrs])

    def _check_built(self, conn: sa.Connection, family: Family, table: sa.Table, attrs: set[str]) -> None:
        """Raise `QueryError` naming an attribute of *attrs* whose index was never built."""
        meta = self._meta_table()
        query = sa.select(meta.c.attr).where(meta.c.tbl == _side_name(table.name))
        built = set(conn.execute(query).scalars())
        missing = sorted(a for a in attrs if _index.attr_code(a) not in built)
        if missing:
            raise QueryError(
                f"{family.name}: the index of {missing[0]!r} was never built over the records stored before "
                f"it was declared: call store.reindex({family.name}) once"
            )

    # ------------------------------------------------------------------ SQL pieces

    @staticmethod
    def _live(table: sa.Table, now_ms: float) -> sa.ColumnElement[bool]:
        # Integer expiries: e > now_ms exactly when e > floor(now_ms).
        now = math.floor(now_ms)
        return sa.and_(table.c.payload.is_not(None), sa.or_(table.c.expires_ms.is_(None), table.c.expires_ms > now))

    def _lock(self, conn: sa.Connection, table: sa.Table, ids: Iterable[bytes], *, payload: bool) -> dict[bytes, _Held]:
        """Lock and read the existing rows of *ids*, in id order so that concurrent batches cannot deadlock.

        Only rows locked here are ever replaced or deleted; an id not found is
        inserted, so a row that another transaction inserted meanwhile makes
        the insert fail as a duplicate, and the whole transaction is retried.
        """
        held: dict[bytes, _Held] = {}
        if self._dialect == "mysql":
            columns = [table.c.id, table.c.version, table.c.expires_ms, table.c.payload.is_not(None)]
            for chunk in self._chunks(sorted(set(ids))):
                query = sa.select(*columns, *([table.c.payload] if payload else []))
                for row in conn.execute(query.where(table.c.id.in_(chunk)).order_by(table.c.id).with_for_update()):
                    held[row[0]] = _Held(row[1], row[2], bool(row[3]), row[4] if payload else None)
            return held
        # The same statement as the driver's own text: SQLAlchemy's bind processing and IN
        # expansion cost more than the look-up itself on batches of many thousand ids.
        quote = conn.dialect.identifier_preparer.quote
        names = "id, version, expires_ms, payload IS NOT NULL" + (", payload" if payload else "")
        select = f"SELECT {names} FROM {quote(table.name)}"
        for chunk in self._chunks(sorted(set(ids))):
            if self._dialect == "sqlite":
                marks = ", ".join("?" * len(chunk))
                rows = conn.exec_driver_sql(f"{select} WHERE id IN ({marks}) ORDER BY id", tuple(chunk))
            else:
                rows = conn.exec_driver_sql(f"{select} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (list(chunk),))
            for row in rows:
                held[bytes(row[0])] = _Held(row[1], row[2], bool(row[3]), row[4] if payload else None)
        return held

    def _holders(
        self, conn: sa.Connection, table: sa.Table, family: Family, entries: Sequence[Entry], now_ms: float
    ) -> dict[Slot, tuple[bytes, bool]]:
        """Lock the rows holding the alternate-key values of *entries*: each value's holder, and whether it is live."""
        by_index: dict[int, dict[bytes, bytes]] = {}  # index -> digest -> value
        for entry in entries:
            for index, alt in slots(entry):
                by_index.setdefault(index, {})[_digest(alt)] = alt
        out: dict[Slot, tuple[bytes, bool]] = {}
        for index, values in sorted(by_index.items()):
            column = table.c[f"alt{index}"]
            for chunk in self._chunks(sorted(values)):
                query = (
                    sa.select(table.c.key, column, table.c.expires_ms, table.c.payload.is_not(None).label("filled"))
                    .where(column.in_(chunk))
                    .order_by(table.c.id)
                    .with_for_update()
                )
                for row in conn.execute(_through_index(query, table, column.name)):
                    live = bool(row.filled) and (row.expires_ms is None or row.expires_ms > now_ms)
                    out[(index, values[row[1]])] = (row.key, live)
        return out

    def _apply(self, conn: sa.Connection, table: sa.Table, plan: _Plan, side: sa.Table | None) -> None:
        """Delete, release alternate keys, rewrite, insert: a few batched statements.

        No statement may wait for a row the transaction has not locked, or two batches
        over overlapping rows deadlock: MariaDB's ``DELETE ... WHERE id IN (...)`` over a
        good part of a table scans all of it, waiting for each row another transaction
        holds.  So there a replaced row is rewritten in place by one multi-row ``INSERT ...
        ON DUPLICATE KEY UPDATE`` (PyMySQL would send an executemany ``UPDATE`` row by
        row) and a removed one is deleted by its id alone; an ``UPDATE`` skips rows it does
        not match without waiting.  PostgreSQL rewrites in place too: a transaction waiting
        to lock a row it saw would skip one that was deleted (even though its id was
        re-inserted) and then collide with it.  SQLite, one writer at a time, deletes and
        re-inserts.

        The side table of a family's indexes (*side*) follows in the same transaction: the
        rows of every record deleted or rewritten go, those of every record written come.
        """
        if self._dialect == "mysql":
            self._check_packets(conn, table, [*plan.insert.values(), *plan.replace.values()])
        in_place = self._dialect != "sqlite"
        gone = plan.delete if in_place else plan.delete | set(plan.replace)
        if side is not None:
            self._delete(conn, side, sorted(plan.delete | set(plan.replace)))
        self._delete(conn, table, sorted(gone))
        for index, ids in sorted(plan.release.items()):
            for chunk in self._chunks(sorted(ids - gone)):
                conn.execute(table.update().where(table.c.id.in_(chunk)).values({f"alt{index}": None}))
        if in_place and plan.replace:
            self._rewrite(conn, table, [plan.replace[i] for i in sorted(plan.replace)])
        rows = plan.insert if in_place else {**plan.insert, **plan.replace}
        if rows:
            self._insert(conn, table, [rows[i] for i in sorted(rows)])
        if side is not None and plan.index:
            self._insert(conn, side, sorted(plan.index, key=lambda r: (r["id"], r["attr"])))

    def _insert(self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert *rows* (in id order) into *table*: the bulk of every batch write.

        SQLite gets one driver-level ``executemany`` of tuples and PostgreSQL a binary
        ``COPY``: SQLAlchemy's per-value bind processing and psycopg's per-row
        pipeline cost more than the database's own work on wide records.  A row
        another transaction inserted meanwhile fails the statement as a duplicate,
        as an ``INSERT`` would, and the transaction is retried.  MariaDB/MySQL keep
        SQLAlchemy's multi-row ``INSERT`` (sized by `_check_packets`).
        """
        if self._dialect == "mysql":
            conn.execute(table.insert(), rows)
            return
        names = [c.name for c in table.columns]
        quote = conn.dialect.identifier_preparer.quote
        target = f"{quote(table.name)} ({', '.join(quote(n) for n in names)})"
        values = list(map(operator.itemgetter(*names), rows))  # names: at least id, key, payload
        if self._dialect == "sqlite":
            conn.exec_driver_sql(f"INSERT INTO {target} VALUES ({', '.join('?' * len(names))})", values)
            return
        types = [_COPY_TYPES.get(type(c.type), "bytea") for c in table.columns]
        _copy(conn, f"COPY {target} FROM STDIN (FORMAT BINARY)", types, values)

    def _delete(self, conn: sa.Connection, table: sa.Table, ids: Sequence[bytes]) -> None:
        """Delete the rows of *ids* (sorted), which this transaction has locked (or their side-table rows)."""
        if self._dialect != "mysql":
            for chunk in self._chunks(ids):
                conn.execute(table.delete().where(table.c.id.in_(chunk)))
        elif ids:  # one row a statement: a DELETE takes no index hint (see _apply)
            conn.execute(table.delete().where(table.c.id == sa.bindparam("d_id")), [{"d_id": i} for i in ids])

    def _rewrite(self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite locked rows in place (in id order): their id and key stay, the rest changes."""
        names = [c.name for c in table.columns if c.name not in ("id", "key")]
        if self._dialect == "mysql":
            upsert = mysql.insert(table)
            conn.execute(upsert.on_duplicate_key_update({n: upsert.inserted[n] for n in names}), rows)
            return
        update = table.update().where(table.c.id == sa.bindparam("w_id"))
        update = update.values({n: sa.bindparam(f"w_{n}") for n in names})
        conn.execute(update, [{f"w_{n}": row[n] for n in ("id", *names)} for row in rows])

    def _check_packets(self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Refuse (`SerializationError`) a row whose INSERT would exceed the server's ``max_allowed_packet``.

        MariaDB/MySQL answer such a statement by dropping the connection, which would read
        as "server unavailable".  PyMySQL sends bytes escaped, one more byte per special
        one, and each row in a statement of its own once rows pass its ``max_stmt_length``.
        """
        if self._max_packet is None:
            self._max_packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        for row in rows:
            size = _STATEMENT_ROOM + sum(_escaped_size(row[c]) for c in ("id", "key", "payload") if row[c] is not None)
            if size > self._max_packet:
                raise SerializationError(
                    f"a record of {table.name} needs a statement of {size} bytes, over the server's "
                    f"max_allowed_packet of {self._max_packet} bytes"
                )

    def _row(self, family: Family, entry: Entry, now_ms: float, ident: bytes | None = None) -> dict[str, Any]:
        """The table row of *entry*; *ident*: its id, if the caller has it already."""
        row: dict[str, Any] = {
            "id": _digest(entry.key) if ident is None else ident,
            "key": entry.key,
            "payload": entry.payload,
            "version": entry.version,
            "expires_ms": entry.expires_ms,
        }
        if len(family.keys) > 1:
            row.update({f"alt{i}": None for i in range(1, len(family.keys))})
            if entry.live(now_ms):  # an expired row holds no alternate key: it can never be returned
                row.update({f"alt{index}": _digest(alt) for index, alt in slots(entry)})
        return row

    def _carry_out(
        self,
        conn: sa.Connection,
        table: sa.Table,
        family: Family,
        plan: Plan,
        locked: set[bytes],
        now_ms: float,
        side: sa.Table | None,
        indexed: dict[bytes, list[dict[str, Any]]] | None = None,
        ids: dict[bytes, bytes] | None = None,
    ) -> None:
        """Apply what `_rules` decided, over the rows locked (by id): a few batched statements.

        *indexed*: the side-table rows of entries, by key, worked out before the transaction;
        *ids*: row ids by key (`_ids`), where the caller has them.
        """
        rows = _Plan()
        ids = ids or {}
        for key, record in plan.records.items():
            ident = ids.get(key) or _digest(key)
            if record is None:
                rows.delete.add(ident)
                continue
            (rows.replace if ident in locked else rows.insert)[ident] = self._row(family, record, now_ms, ident)
            if side is not None and record.payload is not None:
                found = None if indexed is None else indexed.get(key)
                rows.index += self._index_rows(family, record) if found is None else found
        for (index, _), holder in plan.released.items():
            rows.release.setdefault(index, set()).add(_digest(holder))
        self._apply(conn, table, rows, side)

    def _index_rows(self, family: Family, entry: Entry) -> list[dict[str, Any]]:
        """The side-table rows of a record: one per indexed attribute it holds (none for a tombstone)."""
        if entry.payload is None:
            return []
        ident = _digest(entry.key)
        return [
            _index.index_row(ident, entry.key, entry.expires_ms, n, v)
            for n, v in self._indexed(family, entry).items()
            if v is not None
        ]

    def _indexes_of(self, family: Family, entries: Sequence[Entry]) -> dict[bytes, list[dict[str, Any]]] | None:
        """The side-table rows of *entries* by key, worked out before a transaction (decoding may read a schema)."""
        if not family.indexes:
            return None
        return {e.key: self._index_rows(family, e) for e in entries}

    def _write_locked(
        self,
        conn: sa.Connection,
        table: sa.Table,
        family: Family,
        entries: Sequence[Entry],
        held: dict[bytes, _Held],
        now_ms: float,
        side: sa.Table | None,
        ids: dict[bytes, bytes],
        indexed: dict[bytes, list[dict[str, Any]]] | None = None,
    ) -> Plan:
        """Write *entries* over the locked rows *held* (by id), in order, as `_rules.plan_write` decides.

        *ids*: the entries' row ids by key (`_ids`).
        """
        holders = self._holders(conn, table, family, entries, now_ms) if len(family.keys) > 1 else {}
        versions = {e.key: held.get(ids[e.key]) for e in entries}
        plan = plan_write(family, entries, versions, holders, now_ms)
        self._carry_out(conn, table, family, plan, set(held), now_ms, side, indexed, ids)
        return plan

    # ------------------------------------------------------------------ primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        if not keys:
            return []
        table = self._table(family)
        ids = {_digest(k): k for k in keys}

        def read(conn: sa.Connection) -> dict[bytes, Stored]:
            found: dict[bytes, Stored] = {}
            columns = (table.c.id, table.c.payload, table.c.version, table.c.expires_ms)
            for chunk in self._chunks(list(ids)):
                query = sa.select(*columns).where(table.c.id.in_(chunk), self._live(table, now_ms))
                for row in conn.execute(query):
                    found[ids[row.id]] = Stored(row.payload, row.version, row.expires_ms)
            return found

        found = self._run(read, write=False)
        return [found.get(k) for k in keys]

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        if not keys:
            return []
        table = self._table(family)
        column = table.c[f"alt{index}"]
        values = {_digest(k): k for k in keys}

        def resolve(conn: sa.Connection) -> dict[bytes, bytes]:
            found: dict[bytes, bytes] = {}
            for chunk in self._chunks(list(values)):
                query = sa.select(column, table.c.key).where(column.in_(chunk), self._live(table, now_ms))
                for row in conn.execute(query):
                    found[values[row[0]]] = row.key
            return found

        found = self._run(resolve, write=False)
        return [found.get(k) for k in keys]

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        table, side = self._table(family), self._side(family)
        indexed = self._indexes_of(family, entries)
        ids = _ids(e.key for e in entries)

        def write(conn: sa.Connection) -> Plan:
            held = self._lock(conn, table, ids.values(), payload=False)
            return self._write_locked(conn, table, family, entries, held, now_ms, side, ids, indexed)

        plan = self._run(write, write=True)
        if plan.refused:
            raise PartialWrite(plan.refused, InvalidKeyError(plan.problem))
        return [0 if e is None else e.version for e in plan.outcomes]

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        table, side = self._table(family), self._side(family)

        ids = _ids(keys)

        def patch(conn: sa.Connection) -> Plan:
            held = self._lock(conn, table, ids.values(), payload=True)
            merged = []
            for key in keys:
                old = held.get(ids[key])
                current = Stored(old.payload, old.version, old.expires_ms) if old and old.live(now_ms) else None
                merged.append(merge(key, current))
            # Merged first, written second: a record that fails to decode fails the batch before any write.
            return self._write_locked(conn, table, family, merged, held, now_ms, side, ids)

        plan = self._run(patch, write=True)
        if plan.refused:
            raise PartialWrite(plan.refused, InvalidKeyError(plan.problem))
        return [e for e in plan.outcomes if e is not None]

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        table, side = self._table(family), self._side(family)
        indexed = self._indexes_of(family, entries)
        ids = _ids(e.key for e in entries)

        def fill(conn: sa.Connection) -> None:
            held = self._lock(conn, table, ids.values(), payload=False)
            holders = self._holders(conn, table, family, entries, now_ms) if len(family.keys) > 1 else {}
            versions = {e.key: held.get(ids[e.key]) for e in entries}
            plan = plan_fill(family, entries, versions, holders, now_ms)
            self._carry_out(conn, table, family, plan, set(held), now_ms, side, indexed, ids)

        self._run(fill, write=True)

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        table, side = self._table(family), self._side(family)

        def invalidate(conn: sa.Connection) -> None:
            held = self._lock(conn, table, (_digest(k) for k in keys), payload=False)
            rows = _Plan()
            for key in keys:
                ident = _digest(key)
                row = self._row(family, tombstone(key, held.get(ident), version, until_ms), 0)
                (rows.replace if ident in held else rows.insert)[ident] = row
            self._apply(conn, table, rows, side)  # a tombstone is in no index

        self._run(invalidate, write=True)

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        if not keys:
            return 0
        table, side = self._table(family), self._side(family)
        ids = sorted({_digest(k) for k in keys})

        def remove(conn: sa.Connection) -> int:
            if self._dialect == "mysql":  # no DELETE ... IN (...) there (see _apply)
                held = self._lock(conn, table, ids, payload=False)
                if side is not None:
                    self._delete(conn, side, sorted(held))
                self._delete(conn, table, sorted(held))
                return sum(h.live(now_ms) for h in held.values())
            live = 0
            for chunk in self._chunks(ids):
                if side is not None:
                    conn.execute(side.delete().where(side.c.id.in_(chunk)))
                # Live rows first, to count them; then what is left (expired rows, tombstones).
                live += conn.execute(table.delete().where(table.c.id.in_(chunk), self._live(table, now_ms))).rowcount
                conn.execute(table.delete().where(table.c.id.in_(chunk)))
            return live

        return self._run(remove, write=True)

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        table = self._table(family)
        last: bytes | None = None

        def page(conn: sa.Connection) -> list[sa.Row[Any]]:
            query = sa.select(table.c.id, table.c.key).where(self._live(table, now_ms))
            if last is not None:
                query = query.where(table.c.id > last)
            return list(conn.execute(query.order_by(table.c.id).limit(self.chunk_size)))

        while True:
            # Each page is its own short transaction: no connection is held between pages.
            rows = self._run(page, write=False)
            for row in rows:
                if _digest(row.key) != row.id:  # a row stockstore never wrote: no read could find it
                    raise SerializationError(f"a row of {table.name} is not a stockstore record")
                yield row.key
            if len(rows) < self.chunk_size:
                return
            last = rows[-1].id

    def _count(self, family: Family, now_ms: float) -> int:
        table = self._table(family)
        query = sa.select(sa.func.count()).select_from(table).where(self._live(table, now_ms))
        return self._run(lambda conn: int(conn.execute(query).scalar_one()), write=False)

    def _clear(self, family: Family, now_ms: float) -> int:
        table, side = self._table(family), self._side(family)

        def clear(conn: sa.Connection) -> int:
            if side is not None:
                conn.execute(side.delete())
            live: int = conn.execute(table.delete().where(self._live(table, now_ms))).rowcount
            conn.execute(table.delete())
            return live

        return self._run(clear, write=True)

    # ------------------------------------------------------------------ finding, reindexing, resetting

    def _matching(
        self, conn: sa.Connection, family: Family, search: Search, now_ms: float
    ) -> tuple[sa.FromClause, list[sa.ColumnElement[bool]], list[sa.ColumnElement[Any]], sa.ColumnElement[Any]]:
        """The FROM, WHERE, ORDER BY and key column of a search.

        A search that filters reads the side table alone: the rows of its first
        filtered attribute, holding the key and expiry, joined by id to those of
        each further one (inner: a record without it passes no filter), and to
        those of an attribute only sorted on (outer: a record without it sorts
        last).  One that only sorts, or asks for everything, reads the family table.
        """
        table = self._table(family)
        attrs = search.attributes()
        if not attrs:
            return table, [self._live(table, now_ms)], [table.c.key.asc()], table.c.key
        side = self._side(family)
        if side is None:  # parse refuses an attribute not declared: a family declaring none has no attrs
            raise QueryError(f"{family.name} declares no __stockstore_indexes__")
        self._check_built(conn, family, table, attrs)
        filtered = sorted({c.attr for c in search.conditions})
        joined: dict[str, sa.FromClause] = {}
        source: sa.FromClause
        if filtered:
            first = joined[filtered[0]] = source = side.alias("i0")
            ident, key = first.c.id, first.c.key
            now = math.floor(now_ms)  # integer expiries: e > now_ms exactly when e > floor(now_ms)
            where = [first.c.attr == _index.attr_code(filtered[0])]
            where.append(sa.or_(first.c.expires_ms.is_(None), first.c.expires_ms > now))
        else:
            source, ident, key, where = table, table.c.id, table.c.key, [self._live(table, now_ms)]
        for attr in [*filtered, *sorted(attrs - set(filtered))]:
            if attr in joined:
                continue
            alias = joined[attr] = side.alias(f"i{len(joined)}")
            on = sa.and_(alias.c.id == ident, alias.c.attr == _index.attr_code(attr))
            source = source.join(alias, on, isouter=attr not in filtered)
        where += [_index.condition(joined[c.attr], c) for c in search.conditions]
        order: list[sa.ColumnElement[Any]] = []
        for attr, descending in search.order:
            kinds = {_index.pinned(c) for c in search.conditions if c.attr == attr}
            last, values = _index.ordering(joined[attr], kinds)
            order += [*last, *(k.desc() if descending else k.asc() for k in values)]
        order.append(key.asc())
        return source, where, order, key

    def _find(self, family: Family, search: Search, now_ms: float) -> list[bytes]:
        def find(conn: sa.Connection) -> list[bytes]:
            source, where, order, key = self._matching(conn, family, search, now_ms)
            query = sa.select(key).select_from(source).where(*where).order_by(*order)
            if search.stop is not None:
                query = query.limit(max(0, search.stop - search.start))
            if search.start:
                query = query.offset(search.start)
            return [bytes(k) for k in conn.execute(query).scalars().all()]

        return self._run(find, write=False)

    def _count_found(self, family: Family, search: Search, now_ms: float) -> int:
        def count(conn: sa.Connection) -> int:
            source, where, _, _ = self._matching(conn, family, search, now_ms)
            return int(conn.execute(sa.select(sa.func.count()).select_from(source).where(*where)).scalar_one())

        total = self._run(count, write=False)
        stop = total if search.stop is None else min(total, search.stop)
        return max(0, stop - search.start)

    def _reindex(self, family: Family, now_ms: float) -> None:
        """Build the family's indexes from its records, a page of ids at a time, then mark them built.

        Each page is read, decoded outside any transaction (a row schema may have to be
        read), then written in a transaction that locks the page's rows and rewrites the
        side rows of those still as read; a record written meanwhile got its side rows
        from its writer.  The indexes count as built only once every page is done.
        """
        side = self._side(family)
        if side is None:
            return
        table = self._table(family)
        last: bytes | None = None

        def page(conn: sa.Connection) -> list[sa.Row[Any]]:
            query = sa.select(table.c.id, table.c.key, table.c.payload, table.c.version, table.c.expires_ms)
            query = query.where(table.c.payload.is_not(None))
            if last is not None:
                query = query.where(table.c.id > last)
            return list(conn.execute(query.order_by(table.c.id).limit(self.chunk_size)))

        while True:
            rows = self._run(page, write=False)
            if not rows:
                break
            last = rows[-1].id
            read = {bytes(r.id): r.version for r in rows}
            indexed: list[dict[str, Any]] = []
            for r in rows:
                entry = Entry(bytes(r.payload), r.version, r.expires_ms, bytes(r.key), ())
                indexed += self._index_rows(family, entry)

            rewrite = functools.partial(self._reindex_page, table=table, side=side, read=read, indexed=indexed)
            self._run(rewrite, write=True)
            if len(rows) < self.chunk_size:
                break
        self._run(lambda conn: self._mark_built(conn, side.name, family.indexes), write=True)

    def _reindex_page(
        self,
        conn: sa.Connection,
        *,
        table: sa.Table,
        side: sa.Table,
        read: dict[bytes, int],
        indexed: list[dict[str, Any]],
    ) -> None:
        """Rewrite the side rows of a page of records (*read*: id -> version read) still as they were read."""
        held = self._lock(conn, table, read, payload=False)
        same = sorted(i for i, h in held.items() if h.filled and h.version == read[i])
        self._delete(conn, side, same)
        kept = set(same)
        rows = [r for r in indexed if r["id"] in kept]
        if rows:
            self._insert(conn, side, sorted(rows, key=lambda r: (r["id"], r["attr"])))

    def _reset(self, family: Family, chunks: Iterable[list[Entry]], now_ms: float) -> int:
        """Replace the family's records in one transaction: delete every row (and side row), insert the new.

        The dataset is encoded first, outside the transaction (encoding saves row
        schemas, in transactions of their own).  Readers meanwhile see the old rows
        (PostgreSQL's and InnoDB's snapshots, SQLite's WAL), then, at the commit, the new.
        """
        table, side = self._table(family), self._side(family)
        entries = [entry for chunk in chunks for entry in chunk]
        plan = plan_write(family, entries, {}, {}, now_ms)  # alternate keys held once: checked by reset
        records = [r for r in plan.records.values() if r is not None]
        live = sum(1 for r in records if r.live(now_ms))

        def reset(conn: sa.Connection) -> None:
            if side is not None:
                conn.execute(side.delete())
            conn.execute(table.delete())
            for start in range(0, len(records), _RESET_CHUNK):
                part = records[start : start + _RESET_CHUNK]
                rows = sorted((self._row(family, r, now_ms) for r in part), key=lambda r: r["id"])
                if self._dialect == "mysql":
                    self._check_packets(conn, table, rows)
                self._insert(conn, table, rows)
                indexed = [] if side is None else [i for r in part for i in self._index_rows(family, r)]
                if side is not None and indexed:
                    self._insert(conn, side, indexed)

        self._run(reset, write=True)
        if self._dialect == "postgresql":
            # A whole table replaced at once leaves the planner's statistics behind (autovacuum
            # catches up later): a join planned for the old table size took 35 s, not 0.1 s.
            names = ", ".join(_quoted(t.name) for t in (table, side) if t is not None)
            self._run(lambda conn: conn.exec_driver_sql(f"ANALYZE {names}"), write=True)
        return live

    # ------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except sa.exc.DBAPIError as exc:
            raise BackendUnavailableError(self._scrub(f"{self._dialect} failed: {_describe(exc.orig)}")) from exc
        except sa.exc.SQLAlchemyError as exc:  # e.g. no pooled connection within the timeout
            raise BackendUnavailableError(self._scrub(f"{self._dialect} failed: {_describe(exc)}")) from exc

    def _scrub(self, message: str) -> str:
        """A message without the password, should a driver ever repeat it."""
        return message.replace(self._password, "***") if self._password else message


# ---------------------------------------------------------------------- engines and driver errors


_AT_IN_PASSWORD = (
    "a SqlStore URL with an '@' in its password: percent-encode '@' in the password as %40 "
    "(postgresql://user:p%40ss@host/db), or pass sqlalchemy.URL.create(..., password=...)"
)


def _url(where: str | sa.URL) -> sa.URL:
    """*where* parsed, with stockstore's driver where it names none.

    Errors never repeat the URL, nor carry SQLAlchemy's error, even as a suppressed
    context: it quotes the URL, or a piece of the password as a port it could not read.
    """
    try:
        url: sa.URL | None = sa.make_url(where)
    except (sa.exc.ArgumentError, ValueError):
        url = None
    if url is None:
        if isinstance(where, str) and where.count("@") > 1:
            raise StoreError(_AT_IN_PASSWORD)
        raise StoreError("SqlStore needs a SQLAlchemy URL (sqlite:///path.db, postgresql://...) or an Engine")
    _check_host(url)
    driver = _DRIVERS.get(url.drivername)
    return url if driver is None else url.set(drivername=driver)


_OWN_OPTIONS = {"namespace", "lifetime"}  # stockstore's URL options (stockstore._url), taken out by from_url


def _without_own_options(url: sa.URL) -> sa.URL:
    """*url*, refused if it carries stockstore's own options: SQLAlchemy would hand them to the driver, or drop them."""
    own = sorted(_OWN_OPTIONS.intersection(url.query))
    if own:
        raise StoreError(
            f"SqlStore takes {', '.join(own)} as keyword arguments, not in its URL: "
            f"SqlStore(url, {own[0]}=...), or build the store with stockstore.from_url(url)"
        )
    return url


def _check_host(url: sa.URL) -> None:
    """Refuse a URL whose password held an unencoded '@'.

    SQLAlchemy ends the password at its first '@' and reads the rest as the host
    name, which then shows in ``repr`` and in every connection error.  No host name
    holds an '@', so one there is always a piece of the password.
    """
    if url.host is not None and "@" in url.host:
        raise StoreError(_AT_IN_PASSWORD)


def _through_index(query: sa.Select[Any], table: sa.Table, index: str) -> sa.Select[Any]:
    """*query* with MariaDB/MySQL told to read *table* through *index* (other databases ignore it).

    Given ``WHERE altN IN (...) ORDER BY id FOR UPDATE`` over a good part of a table,
    MariaDB scans the whole primary key to skip the sort, locking (and waiting for)
    rows it does not want.  The unnamed ``UNIQUE (altN)`` key is named after its column.
    """
    for name in _MYSQL:
        query = query.with_hint(table, f"FORCE INDEX ({index})", dialect_name=name)
    return query


def _check_supported(name: str, driver: str) -> None:
    if (name, driver) not in _SUPPORTED:
        raise StoreError(
            f"SqlStore works with sqlite, postgresql+psycopg and mysql/mariadb+pymysql, not {name}+{driver}"
        )


def _in_memory(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _build_engine(url: sa.URL, timeout: float) -> sa.Engine:
    """An engine with the options every store needs: hidden parameters, timeouts, READ COMMITTED."""
    name, driver = url.get_backend_name(), url.get_driver_name()
    _check_supported(name, driver)
    if name == "sqlite":
        connect_args: dict[str, Any] = {"timeout": timeout}  # sqlite3's busy timeout
        if not _in_memory(url):
            engine = sa.create_engine(url, hide_parameters=True, connect_args=connect_args)
            sa.event.listen(engine, "connect", _wal)
            return engine
        # One shared connection, or every thread would see a database of its own.
        connect_args["check_same_thread"] = False
        return sa.create_engine(url, hide_parameters=True, poolclass=StaticPool, connect_args=connect_args)
    if driver == "psycopg":
        connect_args = {"connect_timeout": max(2, math.ceil(timeout))}  # libpq's minimum and unit
    else:
        # PyMySQL waits for the server's greeting with its read_timeout, none by default: a
        # server that accepts and never answers would hang us.  Bounded for the handshake
        # only (see _unbounded_reads); bytes are sent as _binary'...'.
        connect_args = {"connect_timeout": timeout, "read_timeout": timeout, "binary_prefix": True}
    # READ COMMITTED: MariaDB's default REPEATABLE READ takes gap locks on missing keys, so
    # concurrent inserts of new records deadlock; rows are locked explicitly anyway.
    try:
        engine = sa.create_engine(
            url,
            hide_parameters=True,
            pool_timeout=timeout,
            isolation_level="READ COMMITTED",
            connect_args=connect_args,
        )
    except ModuleNotFoundError as exc:  # the driver, imported by SQLAlchemy here: name the extra that has it
        if exc.name != driver:
            raise
        extra = "postgresql" if driver == "psycopg" else "mysql"
        raise ImportError(
            f"SqlStore on {name} needs {driver!r}: pip install 'stockstore[{extra}]'", name=driver
        ) from exc
    if driver == "pymysql":
        sa.event.listen(engine, "connect", _unbounded_reads)
    return engine


def _unbounded_reads(dbapi_connection: Any, record: Any) -> None:
    """Once connected, PyMySQL reads without a timeout again: a statement may wait on row locks longer.

    PyMySQL has no public setter; its next read applies the attribute to the socket.
    """
    dbapi_connection._read_timeout = None


def _cut(driver_connection: Any) -> None:
    """Shut a hung connection's socket down: the call waiting on it fails at once (the pool drops it)."""
    pgconn = getattr(driver_connection, "pgconn", None)  # psycopg
    sock = getattr(driver_connection, "_sock", None)  # PyMySQL
    with contextlib.suppress(OSError, ValueError):
        if pgconn is not None:
            with socket.socket(fileno=os.dup(pgconn.socket)) as dup:  # shutting a duplicate shuts the socket
                dup.shutdown(socket.SHUT_RDWR)
        elif sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


def _copy(conn: sa.Connection, statement: str, types: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Run a psycopg ``COPY ... FROM STDIN`` of *rows* in *conn*'s transaction.

    The driver's errors are raised as SQLAlchemy's (`sa.exc.DBAPIError`), as for any
    statement, so that retries and `SqlStore._errors` see them; a connection that
    was cut or dropped is invalidated, and the pool never hands it out again.
    """
    import psycopg

    fairy = conn.connection
    driver_connection = fairy.driver_connection
    if not isinstance(driver_connection, psycopg.Connection):  # the dialect is postgresql+psycopg
        raise StoreError(f"COPY needs a psycopg connection, not {type(driver_connection).__name__}")
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        lost = conn.dialect.is_disconnect(exc, fairy.dbapi_connection, None)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost, dialect=conn.dialect
        ) from exc


def _wal(dbapi_connection: Any, record: Any) -> None:
    """File databases in WAL mode, readers never waiting for the writer; a page cache for the id index.

    SQLite's default cache (2 MB) holds a twentieth of the id index of 500,000 rows:
    a batch's random ids would push each index page out (writing it to the WAL)
    before the next id lands on it.  The cache grows only as pages are used.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    """SQLAlchemy's documented pysqlite recipe: emit BEGIN ourselves, IMMEDIATE for writes.

    pysqlite would begin only at the first write, after the reads a
    read-modify-write depends on; ``BEGIN IMMEDIATE`` takes the write lock
    first (waiting up to the busy timeout) so no other writer comes between.
    """
    dbapi_connection = conn.connection.driver_connection
    if dbapi_connection is not None and dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def _prepare_sqlite(engine: sa.Engine) -> contextlib.AbstractContextManager[Any]:
    """Install the transaction recipe; return the lock that one shared connection needs."""
    if not sa.event.contains(engine, "begin", _sqlite_begin):
        sa.event.listen(engine, "begin", _sqlite_begin)
    if isinstance(engine.pool, SingletonThreadPool) and _in_memory(engine.url):
        raise StoreError(
            "in-memory SQLite with a SingletonThreadPool gives each thread a database of its own: build the "
            "engine with poolclass=StaticPool and connect_args={'check_same_thread': False}, or use SqlStore('sqlite://')"
        )
    if not isinstance(engine.pool, StaticPool):
        return contextlib.nullcontext()
    with _engine_locks_guard:
        return _engine_locks.setdefault(engine, threading.RLock())


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock, serialization failure, busy database or racing insert: worth running again."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY:
        return True
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or name in _SQLITE_RETRY
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_RETRY


def _describe(exc: BaseException | None) -> str:
    """The error's first line: PostgreSQL's DETAIL lines quote key and column values."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
