"""Every stockstore backend next to plain baselines written by hand: the figures of docs/performance.md.

    .venv/bin/python benchmarks/compare.py                     # N=100,000 x 200 floats, Redis on 127.0.0.1:6379
    .venv/bin/python benchmarks/compare.py --markdown --postgresql postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/compare.py --n 500000 --sql-n 500000 --main-job 50000 500000  # every target

``stockstore bench --compare`` runs this script with the options it knows.

One process, one data set, the same operations on every contender: store all N
securities, get 1,000 random ones, get all, patch 10,000, list and delete all (and,
where a store has ``put_frame``/``get_frame`` and pandas is installed, store and read
the same data as a DataFrame).  Baselines written plainly with redis-py and msgpack,
without stockstore (``comparison/baselines.py``), say what the library costs or saves:
(a) pipelined ``SET`` and (c) ``MSET`` of msgpack blobs, the better of which is the bar
for every store of whole records, step by step; (d) pipelined ``HSET`` of packed fields,
the bar for `RedisHashStore`; (b) the legacy one ``HSET`` per security, a round trip a
record, on its own smaller record count (``--legacy-n``), for reference.
`RedisMsgpackStore` also stores the records built with their key attribute last.

With ``--sql-n``, the SQL stores are also timed against the raw drivers chunk by chunk
as their tables grow (``comparison/sql_scale.py``, also ``benchmarks/sql_scale.py``);
with ``--main-job``, ``stockstore bench``'s store step at two sizes
(``comparison/main_job.py``).  The report ends with the issue's targets, met or not.

Every read is checked exactly (`stockstore._bench.difference`: types by identity,
floats bit for bit), also the baselines'; a contender that fails a check is reported
and the others still run, and the exit code is 1.  This script builds the field
(`open_contenders`) and reads the command line; the package ``comparison`` next to it
holds the rest, a module per concept.  Drivers (redis, SQLAlchemy, pandas) are imported
only when a run needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from comparison.baselines import LegacyHash, Mset, PipelinedHash, PlainMsgpack
from comparison.contenders import (
    CHAIN,
    HASH_STORE,
    KEY_LAST,
    MSGPACK_STORE,
    SQLITE_STORE,
    Contender,
    StoreContender,
    key_last,
)
from comparison.finding import run_finding
from comparison.main_job import run_main_job
from comparison.report import Settings, describe, render, safe_url
from comparison.runner import run_compare
from comparison.sql_scale import DEFAULT_CHUNK, run_sql_scale
from tqdm import tqdm

from stockstore import BaseStore, ChainedStore
from stockstore._bench import PATCHED, Advance, Progress, no_progress
from stockstore.errors import StoreError

if TYPE_CHECKING:
    import redis

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_LEGACY_N = 10_000


# ---------------------------------------------------------------------------- the field


@contextlib.contextmanager
def open_contenders(
    *,
    redis_url: str | None = DEFAULT_REDIS,
    postgresql_url: str | None = None,
    legacy_n: int = DEFAULT_LEGACY_N,
) -> Iterator[tuple[list[Contender], list[str]]]:
    """The field of a comparison and notes on what could not run, e.g. an unreachable Redis.

    Yields ``(contenders, notes)``: the Redis baselines and stores on *redis_url* (when
    reachable, `RedisMsgpackStore` twice: also given its records key last),
    MemoryStore, SqlStore on a temporary SQLite file (and on *postgresql_url*), and a
    chain memory -> Redis msgpack -> SQLite.  The temporary file and the clients are
    removed and closed on exit.
    """
    notes: list[str] = []
    contenders: list[Contender] = []
    with contextlib.ExitStack() as stack:
        client = None if redis_url is None else _redis_client(redis_url, notes)
        if client is not None:
            stack.callback(client.close)
            legacy = LegacyHash(client)
            legacy.limit = legacy_n
            contenders += [PlainMsgpack(client), legacy, Mset(client), PipelinedHash(client)]
        sqlite_url = _sqlite_url(stack, notes)

        def redis_store(layout: str) -> Callable[[str], BaseStore]:
            def build(namespace: str) -> BaseStore:
                from stockstore.backends import RedisHashStore, RedisMsgpackStore

                cls = RedisHashStore if layout == "hash" else RedisMsgpackStore
                # A generous timeout: on a busy machine a chunk's script may take seconds, and a
                # benchmark should measure that, not fail over it.
                return cls(redis_url or DEFAULT_REDIS, namespace=namespace, timeout=60.0)

            return build

        def sql_store(url: str) -> Callable[[str], BaseStore]:
            def build(namespace: str) -> BaseStore:
                from stockstore.backends import SqlStore

                return SqlStore(url, namespace=namespace)

            return build

        def memory(namespace: str) -> BaseStore:
            from stockstore.backends import MemoryStore

            return MemoryStore(namespace=namespace)

        if client is not None:
            msgpack = redis_store("msgpack")
            contenders.append(StoreContender(MSGPACK_STORE, msgpack, redis=client))
            contenders.append(StoreContender(KEY_LAST, msgpack, redis=client, shape=key_last))
            contenders.append(StoreContender(HASH_STORE, redis_store("hash"), redis=client, layout="hash"))
            if sqlite_url is not None:
                tiers = (memory, msgpack, sql_store(sqlite_url))
                contenders.append(
                    StoreContender(
                        CHAIN,
                        lambda namespace: ChainedStore([build(namespace) for build in tiers]),
                        redis=client,
                    )
                )
        contenders.append(StoreContender("MemoryStore", memory))
        if sqlite_url is not None:
            contenders.append(StoreContender(SQLITE_STORE, sql_store(sqlite_url)))
        if postgresql_url is not None and sqlite_url is not None and _sql_reachable(postgresql_url, notes):
            contenders.append(StoreContender("SqlStore postgresql", sql_store(postgresql_url)))
        yield contenders, notes


def _redis_client(url: str, notes: list[str]) -> redis.Redis | None:
    """A client of the Redis at *url* if it answers, else ``None`` and a note saying what is skipped."""
    skipped = "skipped the Redis baselines, the Redis stores and the chain"
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        notes.append(f"redis-py is not installed (pip install 'stockstore[redis]'): {skipped}")
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        notes.append(f"Redis at {safe_url(url)} is unreachable ({type(exc).__name__}: {exc}): {skipped}")
        return None
    return client


def _sqlite_url(stack: contextlib.ExitStack, notes: list[str]) -> str | None:
    try:
        importlib.import_module("sqlalchemy")
    except ImportError:
        notes.append(
            "SQLAlchemy is not installed (pip install 'stockstore[sql]'): skipped the SQL stores and the chain"
        )
        return None
    directory = tempfile.mkdtemp(prefix="stockstore-compare-")
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    return f"sqlite:///{Path(directory) / 'compare.db'}"


def _sql_reachable(url: str, notes: list[str]) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from stockstore.backends import SqlStore

    try:
        with SqlStore(url) as store, store.engine.connect():
            return True
    except (StoreError, SQLAlchemyError, ImportError, ValueError) as exc:
        notes.append(f"SqlStore on {safe_url(url)} is unavailable ({type(exc).__name__}: {exc}): skipped")
        return False


# ---------------------------------------------------------------------------- the command line


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than *low*."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is smaller than {low}")
        return value

    parse.__name__ = "integer"  # what argparse calls the type when the text is not one
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``stockstore bench --compare``, with the same names and defaults."""
    default = Settings()
    parser = argparse.ArgumentParser(
        prog="benchmarks/compare.py",
        description="Run every stockstore backend next to plain redis-py baselines (see docs/performance.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=at_least(1), default=default.n, help="securities to store")
    parser.add_argument("--attrs", type=at_least(len(PATCHED)), default=default.attrs, help="float attributes each")
    parser.add_argument("--patch-n", type=at_least(0), default=default.patch_n, help="securities to patch (at most N)")
    parser.add_argument("--get-n", type=at_least(0), default=default.get_n, help="securities to get (at most N)")
    parser.add_argument("--seed", type=int, default=default.seed, help="seed of the random data")
    parser.add_argument("--redis", metavar="URL", default=DEFAULT_REDIS, help="the Redis of the baselines and stores")
    parser.add_argument("--postgresql", metavar="URL", help="also SqlStore on this PostgreSQL")
    parser.add_argument(
        "--legacy-n", type=at_least(1), default=DEFAULT_LEGACY_N, help="securities for the legacy baseline (b)"
    )
    parser.add_argument(
        "--repeat", type=at_least(1), default=default.repeat, help="runs of each backend; the medians are printed"
    )
    parser.add_argument(
        "--sql-n",
        type=at_least(1),
        metavar="N",
        help="also time SqlStore against the raw drivers on N records, chunk by chunk (see sql_scale.py)",
    )
    parser.add_argument(
        "--sql-chunk", type=at_least(1), default=DEFAULT_CHUNK, metavar="N", help="records per chunk of --sql-n"
    )
    parser.add_argument(
        "--main-job",
        type=at_least(1),
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="also time stockstore bench's store step at these two sizes (the issue's: 50000 500000)",
    )
    parser.add_argument(
        "--find-n",
        type=at_least(1),
        metavar="N",
        help="also time find, count and reset on N securities with 3 indexed attributes (see comparison/finding.py)",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-progress", action="store_true", help="show no progress bars")
    return parser.parse_args(argv)


def progress_bars(shown: bool) -> Progress:
    """Progress bars on stderr that appear only once a step has run for a second, if *shown*."""
    if not shown:
        return no_progress

    @contextlib.contextmanager
    def bar(step: str, total: int) -> Iterator[Advance]:
        with tqdm(
            total=total, desc=step, unit="rec", unit_scale=True, delay=1.0, leave=False, file=sys.stderr
        ) as drawn:
            yield drawn.update

    return bar


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison of *argv* (default: the command line), print it; 1 if a check failed, else 0."""
    options = parse_args(argv)
    settings = Settings(
        n=options.n,
        attrs=options.attrs,
        get_n=options.get_n,
        patch_n=options.patch_n,
        seed=options.seed,
        repeat=options.repeat,
    )
    header = describe(settings, legacy_n=options.legacy_n, redis_url=options.redis)
    progress = progress_bars(not options.no_progress and sys.stderr.isatty())
    with open_contenders(redis_url=options.redis, postgresql_url=options.postgresql, legacy_n=options.legacy_n) as (
        contenders,
        notes,
    ):
        report = run_compare(contenders, settings, header=header, notes=notes, progress=progress)
    shared = {"attrs": settings.attrs, "seed": settings.seed, "repeat": settings.repeat, "progress": progress}
    if options.sql_n is not None:
        report.sql = run_sql_scale(options.sql_n, chunk=options.sql_chunk, postgresql_url=options.postgresql, **shared)
    if options.main_job is not None:
        small, large = sorted(options.main_job)
        report.main_job = run_main_job((small, large), **shared)
    if options.find_n is not None:
        report.finding = run_finding(options.find_n, redis_url=options.redis, **shared)
    print(render(report, markdown=options.markdown))
    for failure in report.all_failures:
        print(f"check failed: {failure.backend}: {failure.step}: {failure.detail}", file=sys.stderr)
    if report.all_failures:
        return 1
    print(f"\nevery check passed ({len({r.backend for r in report.rows})} backends)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
