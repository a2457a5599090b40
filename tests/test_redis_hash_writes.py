"""`RedisHashStore`'s staged writes on a single server (issue 11): plain HSETs, one script and one transaction a chunk.

Each record's hash goes to a staging key with a plain ``HSET``; one script call
decides every record of the chunk from its header (versions, alternate keys,
expiry) and renames the staged hash over the record, or drops it; ``MULTI``/``EXEC``
around the chunk keeps each record's write one atomic step.  What the conformance
suite cannot see from outside: the commands sent, staging keys left behind, and
readers racing the writes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from stockstore import _codec
from stockstore._entry import Entry
from stockstore._keys import Family, encode_key, family_of
from stockstore.backends import RedisHashStore
from stockstore.backends.redis import _META, _VERSION
from stockstore.errors import BatchError, InvalidKeyError, SerializationError
from stockstore.testing import assert_record
from stockstore.testing._records import Listing, Security

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisHashStore]:
    with RedisHashStore(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}", chunk_size=50) as store:
        yield store


def _staging(raw: redis.Redis, store: RedisHashStore) -> list[bytes]:
    return sorted(raw.scan_iter(match=f"{store.namespace}:*s:*", count=1000))


def test_a_chunk_is_one_transaction_of_plain_hsets_and_one_script_call(
    store: RedisHashStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[str]] = []
    real = store._send

    def counting(commands: Sequence[tuple[Any, ...]], *, packed: bool = False) -> list[Any]:
        sent.append([str(c[0]) for c in commands])
        return real(commands, packed=packed)

    monkeypatch.setattr(store, "_send", counting)
    store.batch_put([Security(ssm_id=i, **{f"a{j}": float(j) for j in range(5)}) for i in range(120)])  # no row schema
    # No script call per record, and none with the records' fields in its arguments.
    assert sent == [["MULTI", "DEL", *["HSET"] * n, "EVAL", "EXEC"] for n in (50, 50, 20)]
    assert_record(store.get(Security, 119), Security(ssm_id=119, **{f"a{j}": float(j) for j in range(5)}))


def test_a_write_replaces_the_whole_hash_and_leaves_no_staging_key(store: RedisHashStore, raw: redis.Redis) -> None:
    store.batch_put([Security(ssm_id=i, old=1.0, kept="x") for i in range(60)])
    store.batch_put([Security(ssm_id=i, new=2.0, kept="y") for i in range(60)])
    name = f"{store.namespace}:Security:r:#7"
    assert set(raw.hkeys(name)) == {_META, b"ssm_id", b"new", b"kept"}  # "old" went with the old record
    assert_record(store.get(Security, 7), Security(ssm_id=7, new=2.0, kept="y"))
    assert _staging(raw, store) == []


def test_fields_left_in_a_staging_key_never_reach_a_record(store: RedisHashStore, raw: redis.Redis) -> None:
    """A transaction that failed half-way (a script error) may leave a staged hash: the next write starts afresh."""
    stage = f"{store.namespace}:Security:s:{{{store.namespace}:Security:r:#1}}"
    raw.hset(stage, mapping={"stale": b"\xc3", "a": b"\x01"})
    store.put(Security(ssm_id=1, a=2.5))
    assert_record(store.get(Security, 1), Security(ssm_id=1, a=2.5))
    assert _staging(raw, store) == []


def test_refused_records_drop_their_staged_hash(store: RedisHashStore, raw: redis.Redis) -> None:
    """An alternate key held by another live record, a key of neither layout's type: refused, nothing staged stays."""
    store.put(Listing(exchange="X", ticker="A", isin="I1"))
    with pytest.raises(BatchError) as caught:
        store.batch_put([Listing(exchange="X", ticker="B", isin="I1"), Listing(exchange="X", ticker="C", isin="I2")])
    assert caught.value.failed == [("X", "B")]
    assert type(caught.value.__cause__) is InvalidKeyError
    assert store.get(Listing, ("X", "B")) is None
    assert_record(store.get(Listing, ("X", "C")), Listing(exchange="X", ticker="C", isin="I2"))
    foreign = f"{store.namespace}:Security:r:f"
    raw.rpush(foreign, b"theirs")
    with pytest.raises(SerializationError, match="holds a list"):
        store.put(Security(ssm_id="f", a=1.0))
    assert raw.lrange(foreign, 0, -1) == [b"theirs"]
    assert _staging(raw, store) == []


def test_versions_grow_per_key_and_expiry_applies(store: RedisHashStore, raw: redis.Redis) -> None:
    """An older writer's version is stored as the held one + 1 (`stored_version`), in the header renamed in."""
    family: Family = family_of(Security)
    key = encode_key((5,))
    name = f"{store.namespace}:Security:r:#5"
    assert store._write(family, [_entry(family, key, 1_000_000, None, a=1.0)], 0) == [1_000_000]
    assert store._write(family, [_entry(family, key, 10, 4_102_444_800_000, a=2.0)], 0) == [1_000_001]
    meta = raw.hget(name, _META)
    assert meta is not None
    assert _VERSION.unpack_from(meta)[0] == 1_000_001
    assert raw.pttl(name) > 0
    assert_record(store.get(Security, 5), Security(ssm_id=5, a=2.0))
    assert store._write(family, [_entry(family, key, 2_000_000, None, b=3.0)], 0) == [2_000_000]
    assert raw.pttl(name) == -1  # "never" after all: the renamed-in hash carries no expiry
    assert_record(store.get(Security, 5), Security(ssm_id=5, b=3.0))


def _entry(family: Family, key: bytes, version: int, expires_ms: int | None, **attrs: Any) -> Entry:
    payload = _codec.encode_record(family.tag(Security), {"ssm_id": 5, **attrs})
    return Entry(payload, version, expires_ms, key, ())


def test_readers_never_see_half_a_record(store: RedisHashStore, raw: redis.Redis) -> None:
    """Records flip between two field sets while a reader reads them whole: every read is one set or the other."""
    _readers_see_whole_records(store, raw)


def test_the_reader_race_catches_a_write_without_its_transaction(store: RedisHashStore, raw: redis.Redis) -> None:
    """The race above has teeth: the same staged writes sent without MULTI/EXEC show half-written records."""

    def untransacted(commands: Sequence[tuple[Any, ...]], **options: Any) -> list[Any]:
        if commands[0] != ("MULTI",):
            return real(commands, **options)
        # The script's key is each record's own: a naive writer deletes it, then writes the fields.
        names = [c[1].split("{", 1)[1][:-1] for c in commands if c[0] == "HSET"]
        naive = [("DEL", *names), *((c[0], name, *c[2:]) for c, name in zip(commands[2:-2], names, strict=True))]
        real(naive)
        return [[[[1, 1]] * len(names)]]  # EXEC's reply, ending with the script's: every record written

    real = store._send
    store._send = untransacted  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="half"):
        _readers_see_whole_records(store, raw)


def _readers_see_whole_records(store: RedisHashStore, raw: redis.Redis) -> None:
    names = [f"{store.namespace}:Security:r:#{i}" for i in range(50)]
    sets = [{f"a{j}": float(j) for j in range(100)}, {f"b{j}": -float(j) for j in range(100)}]
    fields = [{n.encode() for n in s} | {_META, b"ssm_id"} for s in sets]
    store.batch_put([Security(ssm_id=i, **sets[0]) for i in range(50)])
    stop = threading.Event()
    seen: list[set[bytes]] = []

    def read() -> None:
        while not stop.is_set():
            pipe = raw.pipeline(transaction=False)
            for name in names:
                pipe.hkeys(name)
            seen.extend(set(keys) for keys in pipe.execute())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for flip in range(1, 41):
            store.batch_put([Security(ssm_id=i, **sets[flip % 2]) for i in range(50)])
    finally:
        stop.set()
        reader.join()
    half = [keys for keys in seen if keys not in fields]
    assert seen
    assert not half, f"{len(half)} reads of {len(seen)} saw half a record"
