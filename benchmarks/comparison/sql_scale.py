"""The SQL stores at the mission's scale: `SqlStore.batch_put` next to the raw driver, chunk by chunk as tables grow.

N records go in chunks (50,000 by default) into an empty table twice: through
`SqlStore.batch_put`, and through the hand-written baseline of the same database
(`baselines.RawSqlite`, `baselines.RawCopy`).  The two alternate chunk by chunk, so
both tables grow side by side under the same load, and every chunk is timed on its
own: the question is whether the store's cost per chunk grows with its table
where the driver's stays flat.  After the last chunk both are checked: the count,
and a random sample of records read back exactly (floats bit for bit).  Repeats
start from empty tables; `SqlScale` holds each chunk's median times.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stockstore import BaseStore
from stockstore._bench import (
    CheckFailed,
    Progress,
    Security,
    _chunks,
    difference,
    fresh_namespace,
    generate,
    no_progress,
)
from stockstore.errors import StoreError

from .baselines import RawCopy, RawSql, RawSqlite
from .contenders import drop_tables
from .report import Failure, safe_url

DEFAULT_CHUNK = 50_000
SAMPLE = 1000  # records read back from each table and checked


@dataclass(frozen=True)
class Chunk:
    """One chunk's median times: `SqlStore.batch_put` and the raw driver, into tables of the same size."""

    database: str
    index: int  # from 1
    rows_after: int  # what each table holds once the chunk is in
    store_seconds: float
    raw_seconds: float

    @property
    def ratio(self) -> float:
        """SqlStore's time over the raw driver's: lower is better, 1.0 is as fast."""
        return self.store_seconds / self.raw_seconds if self.raw_seconds > 0 else float("inf")


@dataclass
class SqlScale:
    """What the SQL part found: the chunks of each database, and what failed or was skipped."""

    n: int
    chunk: int
    repeat: int
    raw: dict[str, str] = field(default_factory=dict)  # database -> the raw baseline's name
    unavailable: list[str] = field(default_factory=list)  # databases that could not be reached (see notes)
    chunks: list[Chunk] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, database: str) -> list[Chunk]:
        return [c for c in self.chunks if c.database == database]

    def worst(self, database: str) -> Chunk | None:
        """The chunk where SqlStore is furthest behind the raw driver."""
        return max(self.of(database), key=lambda c: c.ratio, default=None)


def run_sql_scale(
    n: int,
    *,
    attrs: int,
    seed: int,
    chunk: int = DEFAULT_CHUNK,
    repeat: int = 1,
    sqlite: bool = True,
    postgresql_url: str | None = None,
    progress: Progress = no_progress,
) -> SqlScale:
    """Store *n* generated records in chunks of *chunk* on SQLite (if *sqlite*) and PostgreSQL (if a URL).

    A database that cannot be reached is skipped with a note; a failed check or an
    error is recorded in `SqlScale.failures` and that database's other repeats are
    skipped.  Tables and files are removed afterwards.
    """
    scale = SqlScale(n, chunk, repeat)
    databases = (["sqlite"] if sqlite else []) + (["postgresql"] if postgresql_url else [])
    records = generate(n, attrs, seed, progress)
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    out: set[str] = set()  # databases skipped or failed: their other repeats do not run
    for _ in range(repeat):
        for database in databases:
            if database in out:
                continue
            with contextlib.ExitStack() as stack:
                try:
                    store, raw = _open(database, postgresql_url, stack)
                except _errors() as exc:
                    out.add(database)
                    scale.unavailable.append(database)
                    where = "a temporary file" if database == "sqlite" else safe_url(postgresql_url or "")
                    why = " ".join(str(exc).split())  # libpq's messages run over several lines
                    scale.notes.append(f"{database} on {where} is unavailable ({type(exc).__name__}: {why}): skipped")
                    continue
                scale.raw[database] = raw.name
                try:
                    with progress(f"{database}: SqlStore and {raw.name}", n) as advance:
                        for index, part in enumerate(_chunks(records, chunk), 1):
                            pair = (
                                _timed(functools.partial(store.batch_put, part)),
                                _timed(functools.partial(raw.put, part)),
                            )
                            times.setdefault((database, index), []).append(pair)
                            advance(len(part))
                    _check(store, raw, records, seed)
                except (CheckFailed, *_errors()) as exc:
                    out.add(database)
                    if isinstance(exc, CheckFailed):
                        scale.failures.append(Failure(database, exc.check, exc.detail))
                    else:
                        scale.failures.append(Failure(database, "store", f"{type(exc).__name__}: {exc}"))
    failed = {f.backend for f in scale.failures}
    for (database, index), pairs in times.items():  # in the order run: database by database, chunk by chunk
        if database not in failed:
            store_seconds = statistics.median(p[0] for p in pairs)
            raw_seconds = statistics.median(p[1] for p in pairs)
            scale.chunks.append(Chunk(database, index, min(index * chunk, n), store_seconds, raw_seconds))
    return scale


def _open(database: str, postgresql_url: str | None, stack: contextlib.ExitStack) -> tuple[BaseStore, RawSql]:
    """A fresh SqlStore and raw table on *database*, closed and removed when *stack* closes."""
    from stockstore.backends import SqlStore

    if database == "sqlite":
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stockstore-sql-scale-")))
        url = f"sqlite:///{directory / 'store.db'}"
        raw: RawSql = RawSqlite(directory / "raw.db")
    else:
        url = postgresql_url or ""
        raw = RawCopy(url)
    stack.callback(raw.close)
    store = stack.enter_context(SqlStore(url, namespace=fresh_namespace()))
    stack.callback(drop_tables, store)  # runs before the store's close
    # Untimed, as the raw table is made and connected to before its first chunk: count() makes
    # the store's table and opens its connection, so chunk 1 times writing alone on both sides.
    store.count(Security)
    return store, raw


def _timed(work: Callable[[], object]) -> float:
    gc.collect()  # untimed: a collection the previous chunk made due lands here, not in the next call
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _check(store: BaseStore, raw: RawSql, records: Sequence[Security], seed: int) -> None:
    """Both tables hold every record, and a random sample of them reads back exactly."""
    sample = random.Random(seed + 2).sample(range(len(records)), min(SAMPLE, len(records)))
    ids = [records[i]["ssm_id"] for i in sample]
    for who, count, got in (
        ("SqlStore", store.count(Security), store.batch_get(Security, ids)),
        (raw.name, raw.count(), raw.get(ids)),
    ):
        if count != len(records):
            raise CheckFailed(f"{who} count", f"{count} records, expected {len(records)}")
        for i, record in zip(sample, got, strict=True):
            problem = difference(record, records[i])
            if problem is not None:
                raise CheckFailed(f"{who} read", f"{records[i]['ssm_id']}: {problem}")


def _errors() -> tuple[type[Exception], ...]:
    """What a database may raise that fails its part (and not the whole run)."""
    errors: tuple[type[Exception], ...] = (StoreError, OSError, sqlite3.Error)
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SQLAlchemyError

        errors += (SQLAlchemyError,)
    with contextlib.suppress(ImportError):
        import psycopg

        errors += (psycopg.Error,)
    return errors
