"""DataFrames (API.md section 6): what the conformance suite cannot show.

put_frame and get_frame on every backend are part of `stockstore.testing.BackendSuite`
(stockstore/testing/_frames.py, run on each backend by tests/test_conformance.py).  Here:
memcached's gap, failed chunks, chains reading and writing frames through their tiers,
the memory a row record costs in Redis, and the missing extra.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import stockstore as ss
from stockstore._entry import Entry
from stockstore._keys import Family, encode_key, family_of
from stockstore._schemas import SCHEMAS
from stockstore.backends import MemoryStore
from stockstore.errors import BackendUnavailableError, BatchError, SerializationError, UnsupportedOperationError
from stockstore.testing import assert_same
from stockstore.testing._frames import Security, assert_frame_exact, forget_schemas, numeric_frame

# ---------------------------------------------------------------------------- memcached


@pytest.mark.memcached
def test_memcached_cannot_list_every_record(memcached_server: str, namespace: str) -> None:
    """Like keys(), get_frame(cls) of every record raises; with keys it works."""
    from stockstore.backends import MemcacheStore

    with MemcacheStore([memcached_server], namespace=namespace) as store:
        store.put_frame(Security, numeric_frame())
        with pytest.raises(UnsupportedOperationError):
            store.get_frame(Security)
        assert_frame_exact(store.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())


# ---------------------------------------------------------------------------- failed chunks


class Chunked(MemoryStore):
    """Writes three records at a time and fails the chunks of user records it is told to."""

    put_chunk = 3

    def __init__(self, fail: Sequence[int] = ()) -> None:
        super().__init__()
        self.chunks: list[list[Any]] = []
        self.fail = set(fail)

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        if family.name != SCHEMAS.name:
            self.chunks.append([e.key for e in entries])
            if len(self.chunks) - 1 in self.fail:
                raise BackendUnavailableError("chunk lost")
        return super()._write(family, entries, now_ms)


def test_a_failed_chunk_names_itself_and_everything_after_it() -> None:
    store = Chunked(fail=[1])
    df = pd.DataFrame({"ssm_id": [f"k{i}" for i in range(8)], "v": np.arange(8.0)})
    with pytest.raises(BatchError) as info:
        store.put_frame(Security, df)
    assert info.value.failed == ["k3", "k4", "k5", "k6", "k7"]
    assert isinstance(info.value.__cause__, BackendUnavailableError)
    assert sorted(store.keys(Security)) == ["k0", "k1", "k2"]


def test_a_failed_first_chunk_is_the_error_itself() -> None:
    store = Chunked(fail=[0])
    with pytest.raises(BackendUnavailableError):
        store.put_frame(Security, pd.DataFrame({"ssm_id": ["a", "b", "c", "d"], "v": 1.0}))
    assert store.count(Security) == 0


# ---------------------------------------------------------------------------- chains


class TestChained:
    def test_a_frame_read_fills_the_upper_tiers_schema_first(
        self, sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from stockstore.backends import SqlStore

        top, source = MemoryStore(namespace=namespace), SqlStore(sqlite_url, namespace=namespace)
        chain = ss.ChainedStore([top, source])
        source.put_frame(Security, numeric_frame())  # written below the chain's back
        forget_schemas(monkeypatch)
        assert_frame_exact(chain.get_frame(Security).loc[numeric_frame().index], numeric_frame())
        # The memory tier now holds the records and their schema, as any read fills it.
        forget_schemas(monkeypatch)
        assert_frame_exact(top.get_frame(Security, keys=list(numeric_frame().index)), numeric_frame())
        source.close()

    def test_put_frame_writes_the_source_first_then_the_tiers(self, sqlite_url: str, namespace: str) -> None:
        from stockstore.backends import SqlStore

        top, source = MemoryStore(namespace=namespace, lifetime=30), SqlStore(sqlite_url, namespace=namespace)
        chain = ss.ChainedStore([top, source])
        chain.put_frame(Security, numeric_frame())
        for tier in (top, source):
            assert_frame_exact(tier.get_frame(Security).loc[numeric_frame().index], numeric_frame())
        source.close()


# ---------------------------------------------------------------------------- Redis memory


@pytest.mark.redis
def test_a_row_record_costs_little_more_than_its_floats_in_redis(redis_url: str) -> None:
    import redis

    from stockstore.backends import RedisMsgpackStore

    namespace = f"t{uuid.uuid4().hex[:16]}"
    store = RedisMsgpackStore(redis_url, namespace=namespace)
    try:
        values = np.random.default_rng(1).standard_normal((1, 200))
        df = pd.DataFrame(
            values, columns=[f"attribute_{i:03d}" for i in range(200)], index=pd.Index(["US0378331005"], name="ssm_id")
        )
        store.put_frame(Security, df)
        floats = {c: float(df[c].iloc[0]) for c in df.columns}
        store.put(Security(ssm_id="US0378331006", **floats))  # wide: a row record too
        store.put(Security(ssm_id="US0378331007", **floats, note="x"))  # a str last: a row record still
        row_key, dict_key, str_last_key = store._record_keys(
            family_of(Security), [encode_key((f"US037833100{i}",)) for i in (5, 6, 7)]
        )
        with redis.Redis.from_url(redis_url) as client:
            row_bytes, dict_bytes, str_last_bytes = (
                client.memory_usage(k, samples=0) for k in (row_key, dict_key, str_last_key)
            )
        assert row_bytes <= 1.25 * (200 * 8 + len(row_key)), row_bytes
        assert dict_bytes <= 1.25 * (200 * 8 + len(dict_key)), dict_bytes
        assert str_last_bytes <= dict_bytes + 16, (str_last_bytes, dict_bytes)
        # A patch that changes a float and adds an attribute keeps the record a row of its schema.
        store.patch(Security, "US0378331005", {"attribute_001": 0.5, "added": 1.0})
        with redis.Redis.from_url(redis_url) as client:
            patched_bytes = client.memory_usage(row_key, samples=0)
        assert patched_bytes <= row_bytes + 32, (patched_bytes, row_bytes)
        want = {"ssm_id": "US0378331005", **floats, "attribute_001": 0.5, "added": 1.0}
        assert store.get(Security, "US0378331005") == want
    finally:
        store.clear(Security)
        store.close()


class Sparse(ss.Record):
    """A class of its own: the schemas its records make are the test's alone."""

    __stockstore_keys__: ClassVar[list[str]] = ["ssm_id"]


@pytest.mark.redis
def test_records_lacking_attributes_at_random_add_one_schema_to_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 records each lacking 5% of 200 attributes: one schema key, not 5,000; every record compact and exact."""
    import random

    import redis

    from stockstore.backends import RedisMsgpackStore

    rng = random.Random(5)
    names = [f"attribute_{i:03d}" for i in range(200)]
    records = [
        Sparse({**{a: rng.random() for a in names if rng.random() >= 0.05}, "ssm_id": f"S{n:05d}"})
        for n in range(5_000)
    ]
    namespace = f"t{uuid.uuid4().hex[:16]}"
    store = RedisMsgpackStore(redis_url, namespace=namespace)
    try:
        store.batch_put(records)
        with redis.Redis.from_url(redis_url) as client:
            found = client.scan_iter(match=f"{namespace}*", count=1000)
            stored = [k for k in found if not k.endswith(b":p")]  # the families' marks aside
            used = sum(client.memory_usage(k, samples=0) for k in stored[:200]) / min(200, len(stored))
        assert len(stored) == 5_000 + 1  # the records and one schema
        assert used < 1.25 * (190 * 8 + 60) + 32, used  # ~190 floats, the key name and a 32-byte bitmap
        fresh = RedisMsgpackStore(redis_url, namespace=namespace)  # knows the schema only from the store
        forget_schemas(monkeypatch)
        got = fresh.batch_get(Sparse, [r["ssm_id"] for r in records])
        for record, back in zip(records, got, strict=True):
            assert back is not None
            assert list(back) == list(record)
            assert_same(dict(back), dict(record))
        fresh.close()
    finally:
        store.clear(Sparse)
        store.close()


class Paged(ss.Record):
    """A class of its own for the tests of `get_frame()` of everything on Redis."""

    __stockstore_keys__: ClassVar[list[str]] = ["ssm_id"]


def paged_frame(keys: Sequence[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((len(keys), 20)), columns=[f"a{i}" for i in range(20)])
    frame["n"] = rng.integers(-(2**62), 2**62, len(keys))
    frame.index = pd.Index(list(keys), name="ssm_id")
    return frame


@pytest.fixture
def paged(redis_url: str) -> Iterator[tuple[Any, Any]]:
    """A RedisMsgpackStore of pages of 100 records and a raw client of its Redis; the namespace is cleared after."""
    import redis

    from stockstore.backends import RedisMsgpackStore

    store = RedisMsgpackStore(redis_url, namespace=f"t{uuid.uuid4().hex[:16]}", chunk_size=100)
    client = redis.Redis.from_url(redis_url)
    try:
        yield store, client
    finally:
        store.clear(Paged)
        store.close()
        client.close()


def name_of(store: Any, key: Any) -> str:
    [name] = store._record_keys(family_of(Paged), [encode_key((key,))])
    return str(name)


@pytest.mark.redis
def test_get_frame_of_everything_on_redis_reads_a_layout_once_and_the_rest_as_before(
    paged: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages mixing what the fast reading takes and what it leaves read as `get_frame(keys=...)` reads them.

    Frame rows of one layout (most), the same expired, a stale copy of another server
    run, other key lengths, an int key, sparse wide records and narrow ones: the
    records of one layout are parsed once, not one by one, and the frame is the
    ordinary reading's, bit for bit.
    """
    from stockstore import _frame
    from stockstore.backends import RedisMsgpackStore

    store, client = paged
    main = [f"S{i:03d}" for i in range(250)]
    store.put_frame(Paged, paged_frame(main, 1))
    store.put_frame(Paged, paged_frame([f"T{i}" for i in range(5)], 2))  # another key length
    with RedisMsgpackStore(client, namespace=store.namespace, lifetime=60) as lasting:
        lasting.put_frame(Paged, paged_frame([f"E{i:03d}" for i in range(10)], 3))  # expired when read below
    rng = np.random.default_rng(4)
    sparse = [  # wide records each lacking one attribute: rows with presence bitmaps
        Paged({**{f"a{j}": float(rng.random()) for j in range(20) if j != i}, "ssm_id": f"D{i:03d}"}) for i in range(8)
    ]
    store.batch_put([*sparse, Paged(ssm_id="N000", a0=1.5, n=3), Paged(ssm_id=12345, a0=2.5, n=4)])
    stale = name_of(store, "S007")
    value = client.get(stale)
    client.set(stale, value[:17] + b"\x01" * 8 + value[25:])  # a fill's stamp of another server run
    keys: list[Any] = [*main, *(f"T{i}" for i in range(5)), *(f"E{i:03d}" for i in range(10))]
    keys += [f"D{i:03d}" for i in range(8)] + ["N000", 12345]

    parsed = 0
    parse = _frame.Gather._parse

    def counted(self: Any, key: bytes, payload: bytes) -> Any:
        nonlocal parsed
        parsed += 1
        return parse(self, key, payload)

    with RedisMsgpackStore(client, namespace=store.namespace, clock=lambda: time.time() + 120, chunk_size=100) as later:
        want = later.get_frame(Paged, keys=keys)  # the ordinary reading, record by record
        monkeypatch.setattr(_frame.Gather, "_parse", counted)
        got = later.get_frame(Paged)
    assert set(got.index) == set(keys) - {"S007", *(f"E{i:03d}" for i in range(10))}
    assert parsed < 40, parsed  # 249 frame rows of one layout: a few parsed, not each
    assert list(got.columns) == list(want.columns)
    assert_frame_exact(got.loc[list(want.index)], want)


@pytest.mark.redis
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda value: value[:8] + b"N" + (1).to_bytes(8, "big") + value[17:],  # "never" with an expiry
        lambda value: (2**62 + 1).to_bytes(8, "big") + value[8:],  # a version past the bound
    ],
    ids=["never-with-expiry", "version-too-big"],
)
def test_get_frame_of_everything_on_redis_refuses_a_bad_header_and_names_the_key(
    paged: tuple[Any, Any], corrupt: Callable[[bytes], bytes]
) -> None:
    store, client = paged
    store.put_frame(Paged, paged_frame([f"S{i:03d}" for i in range(250)], 1))
    bad = name_of(store, "S123")
    client.set(bad, corrupt(client.get(bad)))
    with pytest.raises(SerializationError, match="S123"):
        store.get_frame(Paged)


@pytest.mark.redis
def test_get_frame_of_everything_on_redis_is_one_writable_block(paged: tuple[Any, Any]) -> None:
    """Frame rows of one layout come back as the block they were read into: bit for bit, the user's to change."""
    store, _ = paged
    want = paged_frame([f"S{i:03d}" for i in range(250)], 1).drop(columns="n")
    store.put_frame(Paged, want)
    got = store.get_frame(Paged)
    assert_frame_exact(got.loc[list(want.index)], want)
    got.iloc[0, 0] = 0.5
    assert got.iloc[0, 0] == 0.5


# ---------------------------------------------------------------------------- the extra


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # "import pandas" raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "stockstore._frame")
    monkeypatch.delattr(ss, "_frame")  # else "from . import _frame" finds the loaded module
    with pytest.raises(ImportError, match=r"pip install 'stockstore\[pandas\]'"):
        MemoryStore().get_frame(Security)
