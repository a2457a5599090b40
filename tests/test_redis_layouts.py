"""Both Redis layouts in one namespace (issue 10, item 8).

A ``?layout=hash`` service (`RedisHashStore`) and a default one (`RedisMsgpackStore`)
writing the same family in the same namespace used to break each other: ``keys``,
``count``, ``get``, ``get_frame`` and even ``clear`` failed on both with "a value under
a stockstore key is not a stockstore record", and only a manual ``DEL`` helped.  Each
layout now reads, patches, overwrites, deletes, lists and clears the other's records;
a value of neither layout stays a `SerializationError` that names its key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from stockstore._entry import Stored
from stockstore._keys import Family, encode_key, family_of
from stockstore.backends import RedisHashStore, RedisMsgpackStore
from stockstore.backends.redis import _header
from stockstore.errors import SerializationError
from stockstore.testing import assert_record
from stockstore.testing._records import Listing, Security

pytestmark = pytest.mark.redis

Pair = tuple[RedisMsgpackStore, RedisHashStore]


@pytest.fixture(params=["server", pytest.param("cluster", marks=pytest.mark.redis_cluster)])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """A msgpack store and a hash store over one namespace, on one server or a cluster."""
    url = request.getfixturevalue("redis_cluster_url" if request.param == "cluster" else "redis_url")
    namespace = f"t{uuid.uuid4().hex[:12]}"
    with RedisMsgpackStore(url, namespace=namespace) as blobs, RedisHashStore(url, namespace=namespace) as hashes:
        yield blobs, hashes


def _mixed(pair: Pair) -> dict[int, Security]:
    """Keys 0-9 written by the msgpack store, 10-19 by the hash store, then 0 and 10 overwritten by the other."""
    blobs, hashes = pair
    blobs.batch_put([Security(ssm_id=i, v=f"m{i}", x=1.5) for i in range(10)])
    hashes.batch_put([Security(ssm_id=i, v=f"h{i}", x=2.5) for i in range(10, 20)])
    hashes.put(Security(ssm_id=0, v="h0", x=3.5))
    blobs.put(Security(ssm_id=10, v="m10", x=4.5))
    want = {i: Security(ssm_id=i, v=f"m{i}", x=1.5) for i in range(10)}
    want |= {i: Security(ssm_id=i, v=f"h{i}", x=2.5) for i in range(10, 20)}
    want[0], want[10] = Security(ssm_id=0, v="h0", x=3.5), Security(ssm_id=10, v="m10", x=4.5)
    return want


class TestReadingTheOtherLayout:
    def test_get_and_batch_get(self, pair: Pair) -> None:
        want = _mixed(pair)
        for store in pair:
            for key, record in want.items():
                assert_record(store.get(Security, key), record)
            *got, missing = store.batch_get(Security, [*want, 99])
            for record, expected in zip(got, want.values(), strict=True):
                assert_record(record, expected)
            assert missing is None

    def test_keys_count_and_frames(self, pair: Pair) -> None:
        pytest.importorskip("pandas")
        want = _mixed(pair)
        for store in pair:
            assert sorted(store.keys(Security)) == sorted(want)
            assert store.count(Security) == len(want)
            frame = store.get_frame(Security)
            assert sorted(frame.index) == sorted(want)
            assert {k: frame.loc[k, "v"] for k in want} == {k: r["v"] for k, r in want.items()}
            some = store.get_frame(Security, keys=[0, 1, 10, 11])
            assert list(some["x"]) == [want[k]["x"] for k in (0, 1, 10, 11)]

    def test_wide_records_and_their_row_schemas(self, pair: Pair) -> None:
        """The msgpack layout stores wide records as rows, behind a schema record it keeps as a string."""
        blobs, hashes = pair
        wide = Security(ssm_id="w", **{f"a{i}": float(i) for i in range(20)})
        blobs.put(wide)
        assert_record(hashes.get(Security, "w"), wide)
        hashes.put(Security(ssm_id="w2", **{f"a{i}": float(-i) for i in range(20)}))
        assert_record(blobs.get(Security, "w2"), Security(ssm_id="w2", **{f"a{i}": float(-i) for i in range(20)}))
        hashes.put(wide)
        assert_record(blobs.get(Security, "w"), wide)


class TestWritingOverTheOtherLayout:
    @pytest.mark.parametrize("writer", [0, 1], ids=["msgpack_patches", "hash_patches"])
    def test_patch(self, pair: Pair, writer: int) -> None:
        want = _mixed(pair)
        store = pair[writer]
        store.patch(Security, 1, {"w": 1})
        store.patch(Security, 11, {"w": 1})
        store.batch_patch(Security, [{"ssm_id": k, "w": 2} for k in (0, 2, 10, 12)])
        for k, w in {1: 1, 11: 1, 0: 2, 2: 2, 10: 2, 12: 2}.items():
            want[k] = Security({**want[k], "w": w})
        for reader in pair:
            for key, record in want.items():
                assert_record(reader.get(Security, key), record)

    def test_put_and_alternate_keys(self, pair: Pair) -> None:
        blobs, hashes = pair
        blobs.put(Listing(exchange="X", ticker="A", isin="I1"))
        hashes.put(Listing(exchange="X", ticker="B", isin="I2"))
        hashes.put(Listing(exchange="X", ticker="A", isin="I3"))  # over the msgpack layout's record
        blobs.patch(Listing, ("X", "B"), {"isin": "I4"})  # over the hash layout's record
        for store in pair:
            assert store.get(Listing, {"isin": "I1"}) is None
            assert store.get(Listing, {"isin": "I2"}) is None
            assert_record(store.get(Listing, {"isin": "I3"}), Listing(exchange="X", ticker="A", isin="I3"))
            assert_record(store.get(Listing, {"isin": "I4"}), Listing(exchange="X", ticker="B", isin="I4"))

    def test_a_patch_whose_record_changed_layout_since_it_was_read(self, pair: Pair) -> None:
        """The hash layout patches only changed fields; a string there by then is read again and written whole."""
        _, hashes = pair
        hashes.put(Security(ssm_id="x", a=1, b=2))
        name = hashes._record_keys(family_of(Security), [encode_key(("x",))])[0]
        fetch, calls = hashes._fetch, []

        def swapped(family: Family, keys: Sequence[bytes]) -> list[Stored | None]:
            held = fetch(family, keys)
            if not calls:  # meanwhile the other layout stores the same record (the same version)
                [stored] = held
                assert stored is not None
                assert stored.payload is not None
                client: Any = hashes._client
                client.delete(name)
                client.set(name, _header(stored.version, stored.expires_ms) + stored.payload)
            calls.append(keys)
            return held

        hashes._fetch = swapped  # type: ignore[method-assign]
        hashes.patch(Security, "x", {"a": 10})
        assert len(calls) == 2
        for store in pair:
            assert_record(store.get(Security, "x"), Security(ssm_id="x", a=10, b=2))


class TestDeletingAndClearing:
    def test_delete(self, pair: Pair) -> None:
        want = _mixed(pair)
        blobs, hashes = pair
        assert blobs.delete(Security, 11) is None
        assert hashes.delete(Security, 1) is None
        assert blobs.batch_delete(Security, [0, 12]) == 2
        assert hashes.batch_delete(Security, [10, 2]) == 2
        gone = {0, 1, 2, 10, 11, 12}
        for store in pair:
            assert sorted(store.keys(Security)) == sorted(set(want) - gone)
            assert store.batch_get(Security, sorted(gone)) == [None] * len(gone)

    @pytest.mark.parametrize("clearer", [0, 1], ids=["msgpack_clears", "hash_clears"])
    def test_clear(self, pair: Pair, clearer: int) -> None:
        want = _mixed(pair)
        assert pair[clearer].clear(Security) == len(want)
        for store in pair:
            assert list(store.keys(Security)) == []
            assert store.count(Security) == 0
            assert store.clear(Security) == 0


@pytest.mark.parametrize("kind", ["list", "set", "zset", "stream"])
def test_a_value_of_neither_layout_names_its_key(redis_url: str, kind: str) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    raw = redis.Redis.from_url(redis_url)
    name = f"{namespace}:Security:r:x"
    {
        "list": lambda: raw.rpush(name, b"a"),
        "set": lambda: raw.sadd(name, b"a"),
        "zset": lambda: raw.zadd(name, {b"a": 1.0}),
        "stream": lambda: raw.xadd(name, {b"a": b"b"}),
    }[kind]()
    try:
        for cls in (RedisMsgpackStore, RedisHashStore):
            with cls(redis_url, namespace=namespace) as store:
                for call in (
                    lambda: store.get(Security, "x"),
                    lambda: store.batch_get(Security, ["x", "y"]),
                    lambda: store.patch(Security, "x", {"v": 1}),
                    lambda: list(store.keys(Security)),
                    lambda: store.delete(Security, "x"),
                ):
                    with pytest.raises(SerializationError, match=f"{name}.*{kind}"):
                        call()
        assert raw.type(name) == kind.encode()  # left as it was
    finally:
        raw.delete(name)
        raw.close()


def test_a_string_that_is_no_record_names_its_key_to_the_hash_layout(redis_url: str) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    raw = redis.Redis.from_url(redis_url)
    name = f"{namespace}:Security:r:x"
    raw.set(name, b"not a record")
    try:
        with RedisHashStore(redis_url, namespace=namespace) as store:
            with pytest.raises(SerializationError, match=name):
                store.get(Security, "x")
            assert list(store.keys(Security)) == []
    finally:
        raw.delete(name)
        raw.close()
