"""The two baselines of a comparison, written plainly with redis-py and msgpack, without stockstore.

They are what a user would write by hand, so the report says what the library costs
or saves next to them:

(a) the best plain approach: a redis-py pipeline of ``SET key msgpack.packb(dict)`` in
    chunks of 1000, ``MGET`` + ``msgpack.unpackb`` to read, a read-modify-write patch,
    ``SCAN`` + ``DEL`` to list and delete.  Every ratio is to (a)'s rate for the same step.
(b) the legacy approach: one ``HSET`` of the attributes as strings per security and
    one ``HGETALL`` per read, no pipeline, so a round trip a record.  It is slow, so it
    runs on its own, smaller record count (``legacy_n``), shown in its rows.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from stockstore._bench import Security, _chunks, fresh_namespace

from .contenders import PIPELINE, Contender

if TYPE_CHECKING:
    import redis
    from redis.typing import EncodableT

BASELINE = "(a) redis-py+msgpack"
LEGACY = "(b) legacy HSET"


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
        return importlib.import_module("pandas").DataFrame.from_records(records, index="ssm_id")


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
