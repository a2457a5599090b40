"""Every stockstore backend next to two plain redis-py baselines: the figures of docs/performance.md.

    .venv/bin/python benchmarks/compare.py                     # N=100,000 x 200 floats, Redis on 127.0.0.1:6379
    .venv/bin/python benchmarks/compare.py --markdown --postgresql postgresql://postgres@127.0.0.1:5432/postgres

``stockstore bench --compare`` runs this script with the same options.

One process, one data set, the same operations on every contender: store all N
securities, get 1,000 random ones, get all, patch 10,000, list and delete all (and,
where a store has ``put_frame``/``get_frame`` and pandas is installed, store and read
the same data as a DataFrame).  Two baselines are written plainly here, without
stockstore, so the numbers say what the library costs or saves:

(a) the best plain approach: a redis-py pipeline of ``SET key msgpack.packb(dict)`` in
    chunks of 1000, ``MGET`` + ``msgpack.unpackb`` to read, a read-modify-write patch,
    ``SCAN`` + ``DEL`` to list and delete.  Every ratio is to (a)'s rate for the same step.
(b) the legacy approach: one ``HSET`` of the attributes as strings per security and
    one ``HGETALL`` per read, no pipeline, so a round trip a record.  It is slow, so it
    runs on its own, smaller record count (``legacy_n``), shown in its rows.

Every read is checked exactly (`stockstore._bench.difference`: types by identity,
floats bit for bit), also the baselines'; a contender that fails a check is reported
and the others still run, and the exit code is 1.  `open_contenders` builds the field,
`run_compare` runs it, `render` prints the result, `main` is the command line.  Drivers
(redis, SQLAlchemy, pandas) are imported only when a run needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib
import itertools
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgpack
from tqdm import tqdm

import stockstore
from stockstore import BaseStore, ChainedStore
from stockstore._bench import (
    ADDED,
    CHUNK,
    DEFAULT_SEED,
    PATCHED,
    Advance,
    CheckFailed,
    Progress,
    Security,
    _check_listing,
    _chunks,
    difference,
    fresh_namespace,
    generate,
    no_progress,
)
from stockstore.errors import StoreError

if TYPE_CHECKING:
    import redis
    from redis.typing import EncodableT

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_LEGACY_N = 10_000
PIPELINE = 1000  # commands per pipeline round trip in baseline (a), and keys per MGET / DEL / SCAN COUNT
STEPS = ("store", "get random", "get all", "patch", "list+delete")
FRAME_STEPS = ("store frame", "get frame (all)")
BASELINE = "(a) redis-py+msgpack"
LEGACY = "(b) legacy HSET"


# ---------------------------------------------------------------------------- contenders


class Contender(ABC):
    """One way of doing the scenario's operations: a baseline, or a stockstore store.

    `open` starts a run in a fresh namespace, `close` ends it.  *limit* caps the
    records it is given (the legacy baseline's ``legacy_n``); *redis* is the server
    whose ``used_memory`` the store step grows, if any.
    """

    name: str
    limit: int | None = None
    redis: redis.Redis | None = None

    @abstractmethod
    def open(self) -> None:
        """Start a run in a namespace of its own."""

    @abstractmethod
    def close(self) -> None:
        """End the run; what it wrote is already deleted."""

    @abstractmethod
    def store(self, records: Sequence[Security]) -> None: ...

    @abstractmethod
    def get(self, ids: Sequence[str]) -> list[Security | None]: ...

    @abstractmethod
    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        """Set the attributes of each mapping (which holds ``ssm_id``), keeping the others."""

    @abstractmethod
    def list_ids(self) -> list[Any]: ...

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Delete these securities; how many existed."""

    @abstractmethod
    def remaining(self) -> int:
        """How many securities the namespace still holds."""

    def key_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern of the Redis keys this run writes (used only when *redis* is set)."""
        raise NotImplementedError

    def frames_missing(self) -> str | None:
        """Why this contender has no frame rows, or ``None`` if it has them (asked after `open`)."""
        return "no frame path"

    def store_frame(self, frame: Any) -> None:
        raise NotImplementedError

    def get_frame(self) -> Any:
        raise NotImplementedError


class StoreContender(Contender):
    """A stockstore store, built afresh by *build(namespace)* for every run."""

    def __init__(self, name: str, build: Callable[[str], BaseStore], *, redis: redis.Redis | None = None) -> None:
        self.name = name
        self.build = build
        self.redis = redis
        self._store: BaseStore | None = None

    @property
    def db(self) -> BaseStore:
        if self._store is None:
            raise RuntimeError(f"{self.name} is not open")
        return self._store

    def open(self) -> None:
        self.namespace = fresh_namespace()
        self._store = self.build(self.namespace)

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with store:
                _drop_tables(store)
            if self.redis is not None:
                # A chain's deletes leave tombstones in its Redis tier until tombstone_ttl (60 s); they
                # would shrink the used_memory growth measured for the next contender as they expire.
                # The namespace is fresh and glob-safe: every key under it is this run's.
                for keys in _chunks(list(self.redis.scan_iter(match=f"{self.namespace}:*", count=PIPELINE)), PIPELINE):
                    self.redis.delete(*keys)

    def key_pattern(self) -> str:
        return f"{self.namespace}:*"  # fresh_namespace() is glob-safe and stays as it is in key names

    def store(self, records: Sequence[Security]) -> None:
        self.db.batch_put(records)

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        return self.db.batch_get(Security, ids)

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        self.db.batch_patch(Security, patches)

    def list_ids(self) -> list[Any]:
        return list(self.db.keys(Security))

    def delete(self, ids: Sequence[str]) -> int:
        return self.db.batch_delete(Security, ids)

    def remaining(self) -> int:
        return self.db.count(Security)

    def frames_missing(self) -> str | None:
        # Checked at run time, so the frame rows appear as soon as the store has the methods.
        missing = [name for name in ("put_frame", "get_frame") if not hasattr(self.db, name)]
        return f"no {' or '.join(missing)}" if missing else None

    # Typed as Any: the methods are looked up at run time (frames_missing), whichever
    # BaseStore this runs against.
    def store_frame(self, frame: Any) -> None:
        db: Any = self.db
        db.put_frame(Security, frame)

    def get_frame(self) -> Any:
        db: Any = self.db
        return db.get_frame(Security)


def _drop_tables(store: BaseStore) -> None:
    """Drop every table a SQL tier made for this run's fresh namespace.

    Not only Security's: a store may keep families of its own there (``put_frame``
    keeps frame schemas).  They are found by the readable prefix of their names,
    ``ss_<namespace>_``, which only this run's random namespace produces.
    """
    try:
        import sqlalchemy as sa

        from stockstore.backends import SqlStore
    except ImportError:  # then no tier can be a SqlStore
        return
    for tier in store.tiers if isinstance(store, ChainedStore) else [store]:
        if isinstance(tier, SqlStore):
            # fresh_namespace() is lowercase letters, digits and one "-", which becomes "_".
            prefix = tier.table_name(Security)[: len("ss_") + len(tier.namespace) + 1]
            for name in sa.inspect(tier.engine).get_table_names():
                if name.startswith(prefix):
                    sa.Table(name, sa.MetaData()).drop(tier.engine, checkfirst=True)


class _RedisBaseline(Contender):
    """What both plain baselines share: a redis-py client and a key prefix per run."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.redis = client
        self.prefix = ""

    def open(self) -> None:
        # fresh_namespace() is letters, digits and "-": no glob character for SCAN MATCH.
        self.prefix = f"{fresh_namespace()}:{type(self).__name__.strip('_').lower()}:"

    def close(self) -> None:
        """Nothing to do: the client outlives the runs (`open_contenders` closes it)."""

    def _keys(self, ids: Sequence[str]) -> list[str]:
        return [self.prefix + i for i in ids]

    def key_pattern(self) -> str:
        return self.prefix + "*"

    def _scan(self) -> Iterator[bytes]:
        return self.client.scan_iter(match=self.key_pattern(), count=PIPELINE)

    def list_ids(self) -> list[Any]:
        cut = len(self.prefix)
        return [key.decode()[cut:] for key in self._scan()]

    def remaining(self) -> int:
        return sum(1 for _ in self._scan())


class PlainMsgpack(_RedisBaseline):
    """Baseline (a): pipelined ``SET`` of ``msgpack.packb(dict)``, ``MGET`` to read; no stockstore."""

    name = BASELINE

    def store(self, records: Sequence[Security]) -> None:
        for chunk in _chunks(records, PIPELINE):
            pipe = self.client.pipeline(transaction=False)
            for record in chunk:
                pipe.set(self.prefix + record["ssm_id"], msgpack.packb(dict(record)))
            pipe.execute()

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        out: list[Security | None] = []
        for chunk in _chunks(ids, PIPELINE):
            blobs = self.client.mget(self._keys(chunk))
            out.extend(None if blob is None else Security(msgpack.unpackb(blob)) for blob in blobs)
        return out

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        # A plain read-modify-write: not atomic per record, which stockstore's patch is.
        for chunk in _chunks(patches, PIPELINE):
            keys = self._keys([p["ssm_id"] for p in chunk])
            pipe = self.client.pipeline(transaction=False)
            for key, blob, changes in zip(keys, self.client.mget(keys), chunk, strict=True):
                record = {} if blob is None else msgpack.unpackb(blob)
                record.update(changes)
                pipe.set(key, msgpack.packb(record))
            pipe.execute()

    def delete(self, ids: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for chunk in _chunks(ids, PIPELINE):
            pipe.delete(*self._keys(chunk))
        return sum(pipe.execute())

    def frames_missing(self) -> str | None:
        return None

    def store_frame(self, frame: Any) -> None:
        names = frame.columns.tolist()
        rows = zip(frame.index.tolist(), frame.to_numpy().tolist(), strict=True)
        for chunk in _chunks(list(rows), PIPELINE):
            pipe = self.client.pipeline(transaction=False)
            for ssm_id, values in chunk:
                pipe.set(
                    self.prefix + ssm_id, msgpack.packb({"ssm_id": ssm_id, **dict(zip(names, values, strict=True))})
                )
            pipe.execute()

    def get_frame(self) -> Any:
        keys = list(self._scan())  # "all" means listing first, as get_frame(cls) must too
        records: list[dict[str, Any]] = []
        for chunk in _chunks(keys, PIPELINE):
            records.extend(msgpack.unpackb(blob) for blob in self.client.mget(chunk) if blob is not None)
        return _pandas().DataFrame.from_records(records, index="ssm_id")


def _str(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


class LegacyHash(_RedisBaseline):
    """Baseline (b): one ``HSET`` of string fields per security, one ``HGETALL`` per read, no pipeline."""

    name = LEGACY

    def store(self, records: Sequence[Security]) -> None:
        for record in records:
            fields: dict[EncodableT, EncodableT] = {k: repr(v) for k, v in record.items() if k != "ssm_id"}
            self.client.hset(self.prefix + record["ssm_id"], mapping=fields)

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        out: list[Security | None] = []
        for ssm_id in ids:
            fields = self.client.hgetall(self.prefix + ssm_id)
            # Every attribute of the bench is a float; the legacy layout only knows strings.
            record = Security(ssm_id=ssm_id, **{_str(k): float(v) for k, v in fields.items()})
            out.append(record if fields else None)
        return out

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        for changes in patches:
            fields: dict[EncodableT, EncodableT] = {k: repr(v) for k, v in changes.items() if k != "ssm_id"}
            self.client.hset(self.prefix + changes["ssm_id"], mapping=fields)

    def delete(self, ids: Sequence[str]) -> int:
        return sum(self.client.delete(key) for key in self._keys(ids))

    def frames_missing(self) -> str | None:
        return "reads record by record; no frame path"


@contextlib.contextmanager
def open_contenders(
    *,
    redis_url: str | None = DEFAULT_REDIS,
    postgresql_url: str | None = None,
    legacy_n: int = DEFAULT_LEGACY_N,
) -> Iterator[tuple[list[Contender], list[str]]]:
    """The field of a comparison and notes on what could not run, e.g. an unreachable Redis.

    Yields ``(contenders, notes)``: the baselines and Redis stores on *redis_url* (when
    reachable), MemoryStore, SqlStore on a temporary SQLite file (and on
    *postgresql_url*), and a chain memory -> Redis msgpack -> SQLite.  The temporary
    file and the clients are removed and closed on exit.
    """
    notes: list[str] = []
    contenders: list[Contender] = []
    with contextlib.ExitStack() as stack:
        client = None if redis_url is None else _redis_client(redis_url, notes)
        if client is not None:
            stack.callback(client.close)
            legacy = LegacyHash(client)
            legacy.limit = legacy_n
            contenders += [PlainMsgpack(client), legacy]
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
            contenders.append(StoreContender("RedisMsgpackStore", redis_store("msgpack"), redis=client))
            contenders.append(StoreContender("RedisHashStore", redis_store("hash"), redis=client))
            if sqlite_url is not None:
                tiers = (memory, redis_store("msgpack"), sql_store(sqlite_url))
                contenders.append(
                    StoreContender(
                        "chain mem>redis>sqlite",
                        lambda namespace: ChainedStore([build(namespace) for build in tiers]),
                        redis=client,
                    )
                )
        contenders.append(StoreContender("MemoryStore", memory))
        if sqlite_url is not None:
            contenders.append(StoreContender("SqlStore sqlite", sql_store(sqlite_url)))
        if postgresql_url is not None and sqlite_url is not None and _sql_reachable(postgresql_url, notes):
            contenders.append(StoreContender("SqlStore postgresql", sql_store(postgresql_url)))
        yield contenders, notes


def _redis_client(url: str, notes: list[str]) -> redis.Redis | None:
    """A client of the Redis at *url* if it answers, else ``None`` and a note saying what is skipped."""
    skipped = f"skipped {BASELINE}, {LEGACY}, RedisMsgpackStore, RedisHashStore and the chain"
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
        notes.append(f"Redis at {_safe_url(url)} is unreachable ({type(exc).__name__}: {exc}): {skipped}")
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
        notes.append(f"SqlStore on {_safe_url(url)} is unavailable ({type(exc).__name__}: {exc}): skipped")
        return False


def _safe_url(url: str) -> str:
    """*url* without its user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# ---------------------------------------------------------------------------- measuring


def _pandas() -> Any:
    """pandas, imported only once a frame row runs (it is an optional extra)."""
    return importlib.import_module("pandas")


def _pandas_missing() -> str | None:
    try:
        importlib.import_module("pandas")
        importlib.import_module("numpy")
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install 'stockstore[pandas]')"
    return None


class _Rss:
    """Peak resident memory of this process, per step where Linux lets us reset the peak.

    Writing ``5`` to /proc/self/clear_refs resets VmHWM (the peak RSS in
    /proc/self/status), so the peak read after a step is that step's.  The reset
    also resets ``ru_maxrss``, so the whole run's peak is the highest peak read.
    """

    def __init__(self) -> None:
        self.run_peak = self._hwm() or 0
        self.per_step = self._reset()

    @staticmethod
    def _hwm() -> int | None:
        with contextlib.suppress(OSError):
            found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
            if found:
                return int(found[1]) * 1024
        return None

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def start(self) -> None:
        if self.per_step:
            self.run_peak = max(self.run_peak, self._hwm() or 0)
            self._reset()

    def step_peak(self) -> int | None:
        if not self.per_step:
            return None
        peak = self._hwm() or 0
        self.run_peak = max(self.run_peak, peak)
        return peak

    def whole_run(self) -> int:
        if self.per_step:
            return max(self.run_peak, self._hwm() or 0)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def records_size(records: Sequence[Security]) -> int:
    """What *records* take as Python objects, estimated with `sys.getsizeof`.

    One record's dict, id and values, times the number of records (they all have
    the same shape), plus the list and the attribute names they share.
    """
    if not records:
        return sys.getsizeof(records)
    one = records[0]
    each = sys.getsizeof(one) + sum(sys.getsizeof(value) for value in one.values())
    return sys.getsizeof(records) + len(records) * each + sum(sys.getsizeof(name) for name in one)


def used_memory(client: redis.Redis) -> tuple[int, int]:
    """The server's ``used_memory`` (INFO memory) in bytes, and how many keys it holds."""
    return int(client.info("memory")["used_memory"]), int(client.dbsize())


def key_usage(client: redis.Redis, pattern: str, sample: int = PIPELINE) -> float | None:
    """The mean ``MEMORY USAGE`` of up to *sample* keys matching *pattern*, nested values counted in full.

    Unlike the growth of ``used_memory`` it cannot be moved by other clients, so it
    tells whether that figure was disturbed; it leaves out the keyspace's own table.
    """
    keys = list(itertools.islice(client.scan_iter(match=pattern, count=PIPELINE), sample))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = [size for size in pipe.execute() if size is not None]
    return statistics.fmean(sizes) if sizes else None


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Settings:
    """What a comparison runs: sizes as in ``stockstore bench``, plus the legacy cap and repeats."""

    n: int = 100_000
    attrs: int = 200
    get_n: int = 1_000
    patch_n: int = 10_000
    seed: int = DEFAULT_SEED
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.n < 1 or self.attrs < len(PATCHED) or self.get_n < 0 or self.patch_n < 0 or self.repeat < 1:
            raise ValueError(f"need n >= 1, attrs >= {len(PATCHED)}, get_n >= 0, patch_n >= 0, repeat >= 1")


@dataclass(frozen=True)
class Row:
    """One timed step of one contender (the median of its repeats)."""

    backend: str
    step: str
    records: int
    seconds: float
    peak_rss: int | None = None  # bytes: the process's peak resident memory during the step

    @property
    def rate(self) -> float:
        """Records per second (infinite for a step too quick for the clock)."""
        return self.records / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class RedisMemory:
    """What a contender's records take in Redis, measured around and after its store step."""

    backend: str
    records: int
    bytes_per_record: float  # growth of used_memory over the store step, divided by records
    key_usage: float | None  # mean MEMORY USAGE of a sample of its keys
    keys_added: int  # growth of the server's key count over the store step

    def disturbed(self) -> str | None:
        """Why the used_memory figure looks moved by other clients, or ``None``."""
        # A layout may add a few keys of its own (a schema, say), never one a record more.
        if abs(self.keys_added - self.records) > max(10, self.records // 100):
            return f"the server's key count grew by {self.keys_added:,}, not {self.records:,}"
        if self.key_usage is not None and abs(self.bytes_per_record - self.key_usage) > 0.25 * self.key_usage:
            return f"{self.bytes_per_record:,.0f} B/record against {self.key_usage:,.0f} B of MEMORY USAGE a key"
        return None


@dataclass(frozen=True)
class Failure:
    """A contender that failed a check (or raised): the others still ran."""

    backend: str
    step: str
    detail: str


@dataclass
class Report:
    """Everything a comparison found; `render` prints it."""

    settings: Settings
    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    memory: list[RedisMemory] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    input_bytes: int = 0
    peak_rss: int = 0

    def ratio(self, row: Row) -> float | None:
        """*row*'s records/s over baseline (a)'s for the same step; ``None`` without (a)."""
        base = next((r for r in self.rows if r.backend == BASELINE and r.step == row.step), None)
        if base is None or base.rate in (0.0, float("inf")) or row.rate == float("inf"):
            return None
        return row.rate / base.rate


@dataclass(frozen=True)
class _Plan:
    """The records a contender gets and the same random choices for every contender of that size."""

    records: Sequence[Security]
    by_id: Mapping[str, Security]
    get_ids: list[str]
    patches: list[dict[str, Any]]


def _plan(records: Sequence[Security], settings: Settings) -> _Plan:
    by_id = {record["ssm_id"]: record for record in records}
    ids = list(by_id)
    rng = random.Random(settings.seed + 1)
    get_ids = rng.sample(ids, min(settings.get_n, len(ids)))
    draw = rng.random
    patches = [
        {"ssm_id": key, **{name: draw() for name in (*PATCHED, ADDED)}}
        for key in rng.sample(ids, min(settings.patch_n, len(ids)))
    ]
    return _Plan(records, by_id, get_ids, patches)


@dataclass
class _Frame:
    """The records as a DataFrame (index ``ssm_id``, one float64 column per attribute) and the expected values."""

    ids: list[str]
    names: list[str]
    values: Any  # numpy float64 array, rows in the order of ids
    frame: Any

    @classmethod
    def of(cls, records: Sequence[Security], attrs: int) -> _Frame:
        pd, np = _pandas(), importlib.import_module("numpy")
        names = [f"a{j}" for j in range(attrs)]
        flat = itertools.chain.from_iterable((record[name] for name in names) for record in records)
        values = np.fromiter(flat, dtype=np.float64, count=len(records) * attrs).reshape(len(records), attrs)
        ids = [record["ssm_id"] for record in records]
        frame = pd.DataFrame(values.copy(), index=pd.Index(ids, name="ssm_id"), columns=names)
        return cls(ids, names, values, frame)

    def difference(self, got: Any) -> str | None:
        """The first way the frame *got* differs from the records, or ``None`` if it holds them exactly."""
        pd, np = _pandas(), importlib.import_module("numpy")
        if not isinstance(got, pd.DataFrame):
            return f"got {type(got).__qualname__}, not a DataFrame"
        if got.index.name != "ssm_id":
            return f"the index is named {got.index.name!r}, not 'ssm_id'"
        if not got.index.is_unique:
            return f"the index holds {got.index[got.index.duplicated()][0]!r} twice"
        ids = set(self.ids)
        if len(got) != len(ids) or set(got.index) != ids:
            missing = sorted(ids - set(got.index))
            return f"{missing[0]!r} is missing" if missing else f"{len(got)} rows, expected {len(ids)}"
        if set(got.columns) != set(self.names):
            extra, missing = sorted(set(got.columns) - set(self.names)), sorted(set(self.names) - set(got.columns))
            return f"unexpected column {extra[0]!r}" if extra else f"column {missing[0]!r} is missing"
        for name in self.names:
            if got[name].dtype != np.float64:
                return f"column {name!r} is {got[name].dtype}, not float64"
        values = np.ascontiguousarray(got.loc[self.ids, self.names].to_numpy(), dtype=np.float64)
        wrong = np.argwhere(values.view(np.uint64) != self.values.view(np.uint64))
        if len(wrong):
            row, column = (int(i) for i in wrong[0])
            return (
                f"{self.ids[row]}: attribute {self.names[column]!r} is {values[row, column]!r}, "
                f"expected {self.values[row, column]!r}"
            )
        return None


class _Clock:
    """One step's stopwatch: only the blocks under `timed` count, so checks in between stay untimed.

    The peak RSS is read at the end of each timed block, so what an untimed
    check allocates after the last one is not charged to the step either.
    """

    def __init__(self, rss: _Rss) -> None:
        self.rss = rss
        self.seconds = 0.0
        self.peak: int | None = None

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - started
        self.peak = self.rss.step_peak()


class _Runner:
    """Runs one contender through the steps, timing, checking and measuring; one method per step.

    A step's row is kept only once its checks have passed.
    """

    def __init__(self, who: Contender, plan: _Plan, progress: Progress, rss: _Rss) -> None:
        self.who = who
        self.plan = plan
        self.progress = progress
        self.rss = rss
        self.rows: list[Row] = []
        self.memory: RedisMemory | None = None
        self.current = "store"  # the step running, to name it when a contender raises
        self.advance: Advance = no_progress_advance

    @contextlib.contextmanager
    def _step(self, step: str, records: int) -> Iterator[_Clock]:
        self.current = step
        # Every step starts with the collector in the same state: a full collection that the
        # garbage of earlier steps made due (100,000 records are a large heap to walk) lands
        # here, untimed, not in whichever contender's step allocates next.
        gc.collect()
        self.rss.start()
        clock = _Clock(self.rss)
        with self.progress(f"{self.who.name}: {step}", records) as advance:
            self.advance = advance
            yield clock
        self.rows.append(Row(self.who.name, step, records, clock.seconds, clock.peak))

    def run(self, frame: _Frame | None) -> None:
        ids = list(self.plan.by_id)
        self.store()
        self.get("get random", self.plan.get_ids, self.plan.by_id, chunk=len(self.plan.get_ids) or 1)
        # Chunk by chunk, each checked and dropped, so 500,000 records are never held twice.
        self.get("get all", ids, self.plan.by_id)
        self.patch()
        self.list_and_delete(ids)
        if frame is not None:
            self.frames(frame)

    def store(self) -> None:
        who, n = self.who, len(self.plan.records)
        with self._step("store", n) as clock:
            before = None if who.redis is None else used_memory(who.redis)
            for chunk in _chunks(self.plan.records):
                with clock.timed():
                    who.store(chunk)
                self.advance(len(chunk))
        if who.redis is not None and before is not None:
            (used, keys), usage = used_memory(who.redis), key_usage(who.redis, who.key_pattern())
            self.memory = RedisMemory(who.name, n, (used - before[0]) / n, usage, keys - before[1])

    def get(self, step: str, ids: Sequence[str], want: Mapping[str, Mapping[str, Any]], *, chunk: int = CHUNK) -> None:
        with self._step(step, len(ids)) as clock:
            for keys in _chunks(ids, chunk):
                with clock.timed():
                    got = self.who.get(keys)
                _check(step, keys, got, want)
                self.advance(len(keys))

    def patch(self) -> None:
        patches = self.plan.patches
        with self._step("patch", len(patches)) as clock:
            for chunk in _chunks(patches):
                with clock.timed():
                    self.who.patch(chunk)
                self.advance(len(chunk))
            want = {p["ssm_id"]: {**self.plan.by_id[p["ssm_id"]], **p} for p in patches}
            for keys in _chunks([p["ssm_id"] for p in patches]):
                _check("patch check", keys, self.who.get(keys), want)

    def list_and_delete(self, ids: list[str]) -> None:
        with self._step("list+delete", len(ids)) as clock:
            with clock.timed():
                listed = self.who.list_ids()
                deleted = sum(self.who.delete(keys) for keys in _chunks(listed))
            _check_listing(ids, listed)
            if deleted != len(ids):
                raise CheckFailed("delete", f"{deleted} reported deleted, expected {len(ids)}")
            left = self.who.remaining()
            if left != 0:
                raise CheckFailed("delete", f"{left} securities left after deleting every one")

    def frames(self, frame: _Frame) -> None:
        with self._step("store frame", len(frame.ids)) as clock, clock.timed():
            self.who.store_frame(frame.frame)
        with self._step("get frame (all)", len(frame.ids)) as clock:
            with clock.timed():
                got = self.who.get_frame()
            problem = frame.difference(got)
            del got  # a frame of 500,000 x 200 floats: not kept past its check
            if problem is not None:
                raise CheckFailed("get frame (all)", problem)
        self.who.delete(frame.ids)


def no_progress_advance(n: int) -> None:
    """An `Advance` that shows nothing."""


def _check(
    check: str, ids: Sequence[str], got: Sequence[Security | None], want: Mapping[str, Mapping[str, Any]]
) -> None:
    if len(got) != len(ids):
        raise CheckFailed(check, f"{len(got)} results for {len(ids)} keys")
    for key, record in zip(ids, got, strict=True):
        problem = difference(record, want[key])
        if problem is not None:
            raise CheckFailed(check, f"{key}: {problem}")


def run_compare(
    contenders: Sequence[Contender],
    settings: Settings | None = None,
    *,
    header: Sequence[str] = (),
    notes: Sequence[str] = (),
    progress: Progress = no_progress,
) -> Report:
    """Run every contender through the steps *settings.repeat* times, in one process.

    The repeats are interleaved (every contender once, then every contender again),
    so a slow minute on a shared machine hits them alike; the report holds the
    median of each step.  A failed check or an error of one contender is recorded
    in `Report.failures` (the steps it passed keep their rows), what it wrote is
    deleted, and the others go on.
    """
    settings = settings or Settings()
    report = Report(settings, header=list(header), notes=list(notes))
    rss = _Rss()
    records = generate(settings.n, settings.attrs, settings.seed, progress)
    report.input_bytes = records_size(records)
    frame, no_frames = _frames(contenders, records, settings, report)
    plans: dict[int, _Plan] = {}
    rows: list[Row] = []
    memory: list[RedisMemory] = []
    failing: tuple[type[Exception], ...] = (CheckFailed, *_errors())
    for _ in range(settings.repeat):
        for who in contenders:
            if any(f.backend == who.name for f in report.failures):
                continue
            size = min(settings.n, who.limit or settings.n)
            if size not in plans:
                plans[size] = _plan(records[:size], settings)
            plan = plans[size]
            runner = _Runner(who, plan, progress, rss)
            try:
                who.open()
            except failing as exc:
                report.failures.append(Failure(who.name, "open", f"{type(exc).__name__}: {exc}"))
                continue
            try:
                missing = None if frame is None else who.frames_missing()
                if missing is not None and who.name not in no_frames.setdefault(missing, []):
                    no_frames[missing].append(who.name)
                runner.run(None if missing else frame)
            except failing as exc:
                if isinstance(exc, CheckFailed):
                    report.failures.append(Failure(who.name, exc.check, exc.detail))
                else:
                    report.failures.append(Failure(who.name, runner.current, f"{type(exc).__name__}: {exc}"))
                _clean_up(who, plan, report)
            finally:
                with contextlib.suppress(*failing):
                    who.close()
            # A failed run keeps the rows of the steps it passed, as `stockstore bench` does.
            rows += runner.rows
            memory += [runner.memory] if runner.memory is not None else []
    report.rows = _medians(rows, [who.name for who in contenders])
    for who in contenders:
        mine = [m for m in memory if m.backend == who.name]
        if mine:
            usages = [m.key_usage for m in mine if m.key_usage is not None]
            median = RedisMemory(
                who.name,
                mine[0].records,
                statistics.median(m.bytes_per_record for m in mine),
                statistics.median(usages) if usages else None,
                int(statistics.median(m.keys_added for m in mine)),
            )
            report.memory.append(median)
        for m in mine:
            if (why := m.disturbed()) is not None:
                report.notes.append(
                    f"Redis memory of {who.name} looks disturbed by another client ({why}): trust MEMORY USAGE"
                )
    report.notes += [f"frame rows skipped for {', '.join(names)}: {reason}" for reason, names in no_frames.items()]
    report.peak_rss = rss.whole_run()
    return report


def _medians(rows: Sequence[Row], backends: Sequence[str]) -> list[Row]:
    """One row per step and backend, in step order: the median time and the highest peak of its runs."""
    out = []
    for step in (*STEPS, *FRAME_STEPS):
        for backend in backends:
            runs = [r for r in rows if r.backend == backend and r.step == step]
            if runs:
                peaks = [r.peak_rss for r in runs if r.peak_rss is not None]
                seconds = statistics.median(r.seconds for r in runs)
                out.append(Row(backend, step, runs[0].records, seconds, max(peaks) if peaks else None))
    return out


def _frames(
    contenders: Sequence[Contender], records: Sequence[Security], settings: Settings, report: Report
) -> tuple[_Frame | None, dict[str, list[str]]]:
    """The DataFrame of the frame rows, or ``None`` and why every contender skips them."""
    missing = _pandas_missing()
    if missing is not None:
        return None, {missing: [who.name for who in contenders]}
    frame = _Frame.of(records, settings.attrs)
    report.header.append(
        f"frame: the same records as a DataFrame of {_mb(frame.frame.memory_usage(deep=True).sum())} MB"
    )
    return frame, {}


def _errors() -> tuple[type[Exception], ...]:
    """What a contender may raise that fails it (and not the whole run)."""
    errors: tuple[type[Exception], ...] = (StoreError, OSError)
    with contextlib.suppress(ImportError):
        from redis import RedisError

        errors += (RedisError,)
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SQLAlchemyError  # dropping a run's table is plain SQLAlchemy

        errors += (SQLAlchemyError,)
    return errors


def _clean_up(who: Contender, plan: _Plan, report: Report) -> None:
    """Delete what a failed contender may have written; a failing clean-up becomes a note."""
    try:
        for chunk in _chunks(list(plan.by_id)):
            who.delete(chunk)
    except _errors() as exc:
        report.notes.append(f"cleaning up after {who.name} failed too: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------- output


def describe(settings: Settings, *, legacy_n: int | None, redis_url: str | None) -> list[str]:
    """The lines that say what ran where: sizes, machine, code revision, Redis server."""
    lines = [
        f"compare: {settings.n:,} securities x {settings.attrs} floats, get {min(settings.get_n, settings.n):,}, "
        f"patch {min(settings.patch_n, settings.n):,}, seed {settings.seed}, repeat {settings.repeat}"
        + ("" if legacy_n is None else f"; {LEGACY} on {min(legacy_n, settings.n):,}"),
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ]
    code = revision()
    if code is not None:
        lines.append(f"code: {code}")
    if redis_url is not None:
        lines.append(f"redis: {_safe_url(redis_url)}")
    return lines


def revision() -> str | None:
    """``git rev-parse --short HEAD`` of the stockstore measured, and whether its checkout has uncommitted changes.

    Asked where the imported package lives, not where this script does: the code measured
    is the package's, and an editable install may import it from another checkout.
    """
    here = Path(stockstore.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head} with uncommitted changes" if dirty else head


def render(report: Report, *, markdown: bool = False) -> str:
    """The comparison as text: header, the table of steps, Redis memory, notes.

    One table, grouped by step so each contender sits next to baseline (a) doing the
    same thing; ``vs (a)`` is records/s over (a)'s records/s, higher is faster.
    With *markdown*, Markdown tables and a bullet list of the rest.
    """
    per_step = any(r.peak_rss is not None for r in report.rows)
    head = ["step", "backend", "records", "seconds", "records/s", "vs (a)", *(["peak RSS MB"] if per_step else [])]
    table = [head]
    for r in report.rows:
        ratio = report.ratio(r)
        cells = [r.step, r.backend, f"{r.records:,}", f"{r.seconds:.3f}", f"{r.rate:,.0f}"]
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        if per_step:
            cells.append("-" if r.peak_rss is None else _mb(r.peak_rss))
        table.append(cells)
    raw = 8 * report.settings.attrs
    memory = [["layout", "records", "used_memory B/record", f"x raw float64 ({raw:,} B)", "MEMORY USAGE B/key"]]
    memory += [
        [
            m.backend,
            f"{m.records:,}",
            f"{m.bytes_per_record:,.0f}",
            f"{m.bytes_per_record / raw:.2f}",
            "-" if m.key_usage is None else f"{m.key_usage:,.0f}",
        ]
        for m in report.memory
    ]
    facts = [
        *report.header,
        f"input: {report.settings.n:,} records, about {_mb(report.input_bytes)} MB as Python objects "
        f"(sys.getsizeof); raw float64 payload {_mb(report.settings.n * raw)} MB",
        f"peak RSS of the whole run: {_mb(report.peak_rss)} MB",
    ]
    legend = "vs (a): records/s over (a)'s records/s for the same step, higher is faster"
    if per_step:
        legend += "; peak RSS: this process's high-water mark during the step, the input records included"
    parts = [_lines(facts, markdown), _table(table, markdown, left=2), legend]
    if len(memory) > 1:
        title = (
            "Redis memory: growth of used_memory (INFO memory) over the store step per record, "
            f"and the mean MEMORY USAGE of {PIPELINE:,} of the keys"
        )
        parts.append(title + ("\n\n" if markdown else "\n") + _table(memory, markdown, left=1))
    if report.notes:
        parts.append(_lines([f"note: {note}" for note in report.notes], markdown))
    return "\n\n".join(parts)


def _mb(size: float) -> str:
    """*size* bytes in MB (10**6), to a tenth below 10."""
    return f"{size / 1e6:,.1f}" if size < 1e7 else f"{size / 1e6:,.0f}"


def _lines(lines: Sequence[str], markdown: bool) -> str:
    return "\n".join(f"- {line}" if markdown else line for line in lines)


def _table(rows: Sequence[Sequence[str]], markdown: bool, *, left: int) -> str:
    """*rows* aligned, the first *left* columns to the left and the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> list[str]:
        return [
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]

    if not markdown:
        return "\n".join("  ".join(line(row)).rstrip() for row in rows)
    rule = [("-" * (w - 1) + ":") if i >= left else "-" * w for i, w in enumerate(widths)]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in [line(rows[0]), rule, *map(line, rows[1:])])


# ---------------------------------------------------------------------------- the command line


def _at_least(low: int) -> Callable[[str], int]:
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
    parser.add_argument("--n", type=_at_least(1), default=default.n, help="securities to store")
    parser.add_argument("--attrs", type=_at_least(len(PATCHED)), default=default.attrs, help="float attributes each")
    parser.add_argument("--patch-n", type=_at_least(0), default=default.patch_n, help="securities to patch (at most N)")
    parser.add_argument("--get-n", type=_at_least(0), default=default.get_n, help="securities to get (at most N)")
    parser.add_argument("--seed", type=int, default=default.seed, help="seed of the random data")
    parser.add_argument("--redis", metavar="URL", default=DEFAULT_REDIS, help="the Redis of the baselines and stores")
    parser.add_argument("--postgresql", metavar="URL", help="also SqlStore on this PostgreSQL")
    parser.add_argument(
        "--legacy-n", type=_at_least(1), default=DEFAULT_LEGACY_N, help="securities for the legacy baseline (b)"
    )
    parser.add_argument(
        "--repeat", type=_at_least(1), default=default.repeat, help="runs of each backend; the medians are printed"
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
    print(render(report, markdown=options.markdown))
    for failure in report.failures:
        print(f"check failed: {failure.backend}: {failure.step}: {failure.detail}", file=sys.stderr)
    if report.failures:
        return 1
    print(f"\nevery check passed ({len({r.backend for r in report.rows})} backends)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
