"""The baselines of a comparison, written plainly with redis-py, sqlite3, psycopg and msgpack, without stockstore.

They are what a user would write by hand, so the report says what the library costs
or saves next to them.  In Redis:

(a) a redis-py pipeline of ``SET key msgpack.packb(dict)`` in chunks of 1,000, ``MGET`` +
    ``msgpack.unpackb`` to read, a read-modify-write patch, ``SCAN`` + ``DEL`` to list and
    delete; frames as one such ``SET`` per row.
(b) the legacy approach: one ``HSET`` of the attributes as strings per security and
    one ``HGETALL`` per read, no pipeline, so a round trip a record.  It is slow, so it
    runs on its own, smaller record count (``legacy_n``), shown in its rows.  A
    reference only: never the baseline a ratio is taken against.
(c) ``MSET`` of ``msgpack.packb(record)`` in chunks of 2,000, ``MGET`` + ``msgpack.unpackb``,
    ``SCAN`` + ``DEL``; frames columnar: ``MSET`` of each row's float64 bytes
    (``row.tobytes()``), read back with ``MGET`` + ``np.frombuffer``.
(d) the hash layout by hand: a pipeline of ``HSET key mapping={name: msgpack.packb(value)}``
    per record, ``HGETALL`` to read, ``HSET`` of the changed fields to patch.

A store's ratio is taken against the faster of the baselines of its layout for the
same step (`BEST_OF`): (a) or (c) for the stores of whole records, (d) for
`RedisHashStore`.  For the SQL stores at scale (`comparison.sql_scale`):
`RawSqlite`, ``sqlite3`` ``executemany`` of msgpack blobs, and `RawCopy`, psycopg
``COPY`` of the same blobs, each into a table of a primary-key blob and a blob payload.
"""

from __future__ import annotations

import importlib
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from stockstore._bench import Security, _chunks, fresh_namespace

from .contenders import PIPELINE, Contender

if TYPE_CHECKING:
    import redis
    from redis.typing import EncodableT

BASELINE = "(a) pipelined SET"
LEGACY = "(b) legacy HSET"
MSET = "(c) MSET"
HSET = "(d) pipelined HSET"
MSET_CHUNK = 2000  # keys per MSET / MGET / DEL and SCAN COUNT in (c), as the issue states the baseline
# layout -> the baselines whose best is the bar for that layout's stores, step by step
BEST_OF = {"blob": (BASELINE, MSET), "hash": (HSET,)}


class _RedisBaseline(Contender):
    """What the plain Redis baselines share: a redis-py client, a key prefix per run, SCAN + DEL."""

    chunk = PIPELINE  # keys per MGET, DEL and SCAN COUNT, commands per pipeline

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
        return self.client.scan_iter(match=self.key_pattern(), count=self.chunk)

    def _ids(self, keys: Sequence[bytes]) -> list[str]:
        cut = len(self.prefix)
        return [key.decode()[cut:] for key in keys]

    def list_ids(self) -> list[Any]:
        return self._ids(list(self._scan()))

    def delete(self, ids: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for chunk in _chunks(ids, self.chunk):
            pipe.delete(*self._keys(chunk))
        return sum(pipe.execute())

    def remaining(self) -> int:
        return sum(1 for _ in self._scan())


class PlainMsgpack(_RedisBaseline):
    """Baseline (a): pipelined ``SET`` of ``msgpack.packb(dict)``, ``MGET`` to read; no stockstore."""

    name = BASELINE

    def _set(self, blobs: dict[str, bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, blob in blobs.items():
            pipe.set(key, blob)
        pipe.execute()

    def store(self, records: Sequence[Security]) -> None:
        for chunk in _chunks(records, self.chunk):
            self._set({self.prefix + record["ssm_id"]: msgpack.packb(dict(record)) for record in chunk})

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        out: list[Security | None] = []
        for chunk in _chunks(ids, self.chunk):
            blobs = self.client.mget(self._keys(chunk))
            out.extend(None if blob is None else Security(msgpack.unpackb(blob)) for blob in blobs)
        return out

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        # A plain read-modify-write: not atomic per record, which stockstore's patch is.
        for chunk in _chunks(patches, self.chunk):
            keys = self._keys([p["ssm_id"] for p in chunk])
            merged = {}
            for key, blob, changes in zip(keys, self.client.mget(keys), chunk, strict=True):
                record = {} if blob is None else msgpack.unpackb(blob)
                record.update(changes)
                merged[key] = msgpack.packb(record)
            self._set(merged)

    def frames_missing(self) -> str | None:
        return None

    def store_frame(self, frame: Any) -> None:
        names = frame.columns.tolist()
        rows = list(zip(frame.index.tolist(), frame.to_numpy().tolist(), strict=True))
        for chunk in _chunks(rows, self.chunk):
            self._set(
                {
                    self.prefix + ssm_id: msgpack.packb({"ssm_id": ssm_id, **dict(zip(names, values, strict=True))})
                    for ssm_id, values in chunk
                }
            )

    def get_frame(self) -> Any:
        keys = list(self._scan())  # "all" means listing first, as get_frame(cls) must too
        records: list[dict[str, Any]] = []
        for chunk in _chunks(keys, self.chunk):
            records.extend(msgpack.unpackb(blob) for blob in self.client.mget(chunk) if blob is not None)
        return importlib.import_module("pandas").DataFrame.from_records(records, index="ssm_id")


class Mset(PlainMsgpack):
    """Baseline (c): ``MSET`` of ``msgpack.packb(record)`` in chunks of 2,000; frames as rows of float64 bytes."""

    name = MSET
    chunk = MSET_CHUNK

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.columns: list[str] = []

    def _set(self, blobs: dict[str, bytes]) -> None:
        self.client.mset(blobs)

    def store(self, records: Sequence[Security]) -> None:
        for chunk in _chunks(records, self.chunk):
            self._set({self.prefix + record["ssm_id"]: msgpack.packb(record) for record in chunk})

    def store_frame(self, frame: Any) -> None:
        np = importlib.import_module("numpy")
        self.columns = frame.columns.tolist()  # a row's bytes do not say their columns: the user keeps them
        values = np.ascontiguousarray(frame.to_numpy(), dtype=np.float64)
        keys = self._keys(frame.index.tolist())
        for start in range(0, len(keys), self.chunk):
            self._set({key: values[i].tobytes() for i, key in enumerate(keys[start : start + self.chunk], start)})

    def get_frame(self) -> Any:
        np, pd = importlib.import_module("numpy"), importlib.import_module("pandas")
        keys = list(self._scan())  # "all" means listing first, as get_frame(cls) must too
        blobs: list[bytes] = []
        for chunk in _chunks(keys, self.chunk):
            blobs.extend(self.client.mget(chunk))
        values = np.frombuffer(b"".join(blobs), dtype=np.float64).reshape(len(keys), len(self.columns))
        return pd.DataFrame(values, index=pd.Index(self._ids(keys), name="ssm_id"), columns=self.columns)


class PipelinedHash(_RedisBaseline):
    """Baseline (d): a pipeline of ``HSET`` of msgpack-packed fields per record, ``HGETALL`` to read."""

    name = HSET
    layout = "hash"

    def _hset(self, changes: Sequence[Mapping[str, Any]]) -> None:
        for chunk in _chunks(changes, self.chunk):
            pipe = self.client.pipeline(transaction=False)
            for record in chunk:
                fields: dict[EncodableT, EncodableT] = {k: msgpack.packb(v) for k, v in record.items() if k != "ssm_id"}
                pipe.hset(self.prefix + record["ssm_id"], mapping=fields)
            pipe.execute()

    def store(self, records: Sequence[Security]) -> None:
        self._hset(records)

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        self._hset(patches)  # field writes: atomic per field, as a hash layout's patch is

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        out: list[Security | None] = []
        for chunk in _chunks(ids, self.chunk):
            pipe = self.client.pipeline(transaction=False)
            for key in self._keys(chunk):
                pipe.hgetall(key)
            for ssm_id, fields in zip(chunk, pipe.execute(), strict=True):
                record = Security(ssm_id=ssm_id)
                record.update((name.decode(), msgpack.unpackb(value)) for name, value in fields.items())
                out.append(record if fields else None)
        return out


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


# ---------------------------------------------------------------------------- SQL, raw


class RawSql(ABC):
    """A table of ``id`` (the ``ssm_id``'s bytes, primary key) and ``payload`` (``msgpack.packb(record)``)."""

    name: str
    table = "records"

    @abstractmethod
    def put(self, records: Sequence[Security]) -> None:
        """Insert *records*, packing each, in one transaction."""

    @abstractmethod
    def _select(self, ids: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """``(id, payload)`` of those of *ids* the table holds."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @staticmethod
    def _rows(records: Sequence[Security]) -> list[tuple[bytes, bytes]]:
        return [(record["ssm_id"].encode(), msgpack.packb(record)) for record in records]

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        rows = self._select([i.encode() for i in ids])
        found = {bytes(key): Security(msgpack.unpackb(payload)) for key, payload in rows}
        return [found.get(i.encode()) for i in ids]


class RawSqlite(RawSql):
    """``sqlite3`` ``executemany`` of ``INSERT OR REPLACE`` in one transaction per call; WAL, ``synchronous=NORMAL``."""

    name = "sqlite3 executemany"

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are begun explicitly
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"CREATE TABLE {self.table} (id BLOB PRIMARY KEY, payload BLOB NOT NULL)")

    def put(self, records: Sequence[Security]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(f"INSERT OR REPLACE INTO {self.table} (id, payload) VALUES (?, ?)", self._rows(records))
        self.db.execute("COMMIT")

    def _select(self, ids: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"SELECT id, payload FROM {self.table} WHERE id IN ({marks})", ids).fetchall()

    def count(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        self.db.close()  # the file goes with the run's temporary directory


class RawCopy(RawSql):
    """psycopg ``COPY ... FROM STDIN (FORMAT BINARY)`` of the blobs, one transaction per call.

    The table is named after a fresh namespace and dropped by `close`.
    """

    name = "psycopg COPY"

    def __init__(self, url: str) -> None:
        import psycopg
        import sqlalchemy as sa

        # A SQLAlchemy URL such as postgresql+psycopg://... as the libpq URI psycopg takes.
        conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.db = psycopg.connect(conninfo)
        self.table = "raw_" + fresh_namespace().replace("-", "_")
        self.db.execute(f"CREATE TABLE {self.table} (id bytea PRIMARY KEY, payload bytea NOT NULL)")
        self.db.commit()

    def put(self, records: Sequence[Security]) -> None:
        statement = f"COPY {self.table} (id, payload) FROM STDIN (FORMAT BINARY)"
        with self.db.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["bytea", "bytea"])
            for row in self._rows(records):
                copy.write_row(row)
        self.db.commit()

    def _select(self, ids: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        rows = self.db.execute(f"SELECT id, payload FROM {self.table} WHERE id = ANY(%s)", [list(ids)]).fetchall()
        self.db.commit()
        return rows

    def count(self) -> int:
        (count,) = self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone() or (0,)
        self.db.commit()
        return int(count)

    def close(self) -> None:
        try:
            self.db.rollback()
            self.db.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.db.commit()
        finally:
            self.db.close()
