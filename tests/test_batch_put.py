"""How BaseStore.batch_put streams a large batch: check everything, then encode and write chunk by chunk.

Pure logic of the base class, on MemoryStore subclasses that count or fail chunks;
every backend's own `_write` is exercised by the conformance suite.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

import stockstore as ss
from stockstore._entry import Entry
from stockstore._keys import Family
from stockstore.backends import MemoryStore
from stockstore.errors import BackendUnavailableError, BatchError, SerializationError
from stockstore.testing import assert_record


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Quote(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]


class Chunked(MemoryStore):
    """Writes three records at a time, remembers each chunk, and fails the chunks it is told to."""

    put_chunk = 3

    def __init__(self, fail: Sequence[int] = (), error: type[Exception] = BackendUnavailableError) -> None:
        super().__init__()
        self.chunks: list[list[Any]] = []
        self.fail, self.error = set(fail), error

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        self.chunks.append([e.key for e in entries])
        if len(self.chunks) - 1 in self.fail:
            raise self.error("chunk lost")
        return super()._write(family, entries, now_ms)


def test_a_batch_is_written_a_chunk_at_a_time() -> None:
    store = Chunked()
    store.batch_put([Security(ssm_id=i) for i in range(8)])
    assert [len(c) for c in store.chunks] == [3, 3, 2]
    assert store.count(Security) == 8


def test_one_bad_record_anywhere_writes_nothing() -> None:
    store = Chunked()
    batch = [Security(ssm_id=i, v=1.0) for i in range(8)] + [Security(ssm_id=8, v={1, 2})]
    with pytest.raises(SerializationError):
        store.batch_put(batch)
    assert store.chunks == []
    assert store.count(Security) == 0


def test_a_failed_chunk_names_itself_and_everything_after_it() -> None:
    store = Chunked(fail=[1])
    with pytest.raises(BatchError) as info:
        store.batch_put([Security(ssm_id=i) for i in range(8)] + [Quote(symbol="q")])
    assert info.value.failed == [3, 4, 5, 6, 7, "q"]
    assert isinstance(info.value.__cause__, BackendUnavailableError)
    assert sorted(store.keys(Security)) == [0, 1, 2]
    assert store.count(Quote) == 0


def test_a_failed_first_chunk_is_the_error_itself() -> None:
    store = Chunked(fail=[0])
    with pytest.raises(BackendUnavailableError):
        store.batch_put([Security(ssm_id=i) for i in range(8)])
    assert store.count(Security) == 0


def test_the_last_record_of_a_key_wins_across_chunks() -> None:
    store = Chunked()
    store.batch_put([Security(ssm_id=i % 4, v=i) for i in range(10)])
    assert store.count(Security) == 4
    for key in range(4):
        assert_record(store.get(Security, key), Security(ssm_id=key, v=max(i for i in range(10) if i % 4 == key)))


def test_a_chunk_takes_consecutive_versions_newer_than_any_before() -> None:
    from stockstore._entry import versions

    written: list[list[int]] = []

    class Versions(Chunked):
        def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
            written.append([e.version for e in entries])
            return super()._write(family, entries, now_ms)

    before = versions.next()
    Versions().batch_put([Security(ssm_id=i) for i in range(5)])  # two chunks: 3 and 2
    first, second = written
    assert first == list(range(first[0], first[0] + 3))
    assert first[0] > before
    assert second == list(range(second[0], second[0] + 2))
    assert second[0] > first[-1]
    assert versions.next() > second[-1]


def test_checking_a_batch_leaves_the_garbage_collector_no_object_per_record() -> None:
    """A full collection walks every value of every record it meets: the check leaves it nothing per record.

    One tuple per checked record (the old way) set off a full collection in every
    batch of wide records, a tenth of the batch's time on Redis.
    """
    records = [Security(ssm_id=f"S{i}", **{f"a{j}": j + 0.5 for j in range(20)}) for i in range(5_000)]
    store = MemoryStore()
    gc.collect()
    before = len(gc.get_objects())
    chunks = store._put_chunks(records)
    assert len(gc.get_objects()) - before < 100
    assert sum(len(keys) for _, keys, _ in chunks) == 5_000
