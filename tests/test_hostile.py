"""Bytes stockstore never wrote, and credentials that must never leak.

Hostile input on every backend (megabyte keys, awkward names, deep and huge values,
wrong key types) is part of `stockstore.testing.BackendSuite`
(stockstore/testing/_hostile.py, run on each backend by tests/test_conformance.py).
Here, two parts that need the real servers' own commands:

* Foreign bytes under the very keys and rows stockstore uses, written with the raw
  driver on the real servers: every call raises `SerializationError` (or, where the
  docs say so, sees nothing), never another exception, never runs stored code, never
  allocates what a header merely claims.
* Credentials in URLs never show in a store's ``repr``, its errors (their whole
  chain and traceback) or its log lines, whether the server is down, silent or
  refuses the login.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import pickle
import socket
import struct
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from sql_databases import KINDS

import stockstore as ss
from stockstore._codec import encode_record
from stockstore._keys import encode_key, family_of
from stockstore.errors import BackendUnavailableError, BatchError, SerializationError, StoreError
from stockstore.testing import assert_record
from stockstore.testing._records import Listing, Security

# ---------------------------------------------------------------------------- foreign bytes


EXPLOSIONS: list[str] = []


def _exploded() -> None:
    EXPLOSIONS.append("stored bytes were unpickled")


class Bomb:
    """Unpickling this calls `_exploded`: proof that stored bytes were run as code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exploded, ())


class Sub(Security):
    pass


def _record(attrs: dict[str, Any], tag: str = "Security") -> bytes:
    return msgpack.packb([tag, attrs], use_bin_type=True)  # type: ignore[no-any-return]


_X = b"\xa6ssm_id\xa1x"  # the map entry ssm_id="x"
_VALID = encode_record("Security", {"ssm_id": "x", "v": [1.5, "text", dt.datetime(2000, 1, 1)], "w": b"bytes"})
# One attribute's encoded value that is not one valid stockstore value.
FOREIGN_VALUES: dict[str, bytes] = {
    "empty": b"",
    "reserved_byte": b"\xc1",
    "two_values": b"\x01\x02",
    "truncated_str": b"\xa5ab",
    "pickle": pickle.dumps(Bomb()),
    "int_map_key": msgpack.packb({1: 2}),
    "unknown_ext": msgpack.packb(msgpack.ExtType(42, b"x")),
    "msgpack_timestamp_ext": b"\xd6\xff\x00\x00\x00\x00",  # msgpack's own ext -1
    "row_ext_as_value": msgpack.packb(msgpack.ExtType(4, bytes(24))),
    "bad_datetime": msgpack.packb(msgpack.ExtType(1, b"not a date")),
    "bad_datetime_offset": msgpack.packb(msgpack.ExtType(1, b"2000-01-01T00:00:00 1e400")),
    "bad_date": msgpack.packb(msgpack.ExtType(2, b"\xff\xfe")),
    "bad_decimal": msgpack.packb(msgpack.ExtType(3, b"1.2.3")),
    "str32_of_4gb": b"\xdb\xff\xff\xff\xff",
    "bin32_of_4gb": b"\xc6\xff\xff\xff\xff",
    "array32_of_4g": b"\xdd\xff\xff\xff\xff",
    "map32_of_4g": b"\xdf\xff\xff\xff\xff",
    "ext32_of_4gb": b"\xc9\xff\xff\xff\xff\x01",
    "deep": b"\x91" * 100_000,
}
# Whole records (the bytes after a backend's header, or SQL's payload column) that are not
# stockstore records: each value above in an attribute, and more.
FOREIGN_RECORDS: dict[str, bytes] = {
    **{f"value_{name}": b"\x92\xa8Security\x82" + _X + b"\xa1v" + value for name, value in FOREIGN_VALUES.items()},
    "empty": b"",
    "random": bytes((i * 151 + 7) % 256 for i in range(64)),
    "text": b"hello, I am not a record",
    "json": b'{"ssm_id": "x", "v": 1}',
    "pickle": pickle.dumps(Bomb()),
    "msgpack_scalar": msgpack.packb(1),
    "msgpack_map": msgpack.packb({"ssm_id": "x"}),
    "msgpack_triple": msgpack.packb(["Security", {"ssm_id": "x"}, 1]),
    "wrong_tag_type": msgpack.packb([1, {"ssm_id": "x"}]),
    "undefined_class": _record({"ssm_id": "x"}, tag="os.system"),
    "row_of_unknown_schema": b"\x93\xa8Security\x81" + _X + msgpack.packb(msgpack.ExtType(4, bytes(32))),
    "str32_tag_of_4gb": b"\x92\xdb\xff\xff\xff\xff",
    "map32_of_4g": b"\x92\xa8Security\xdf\xff\xff\xff\xff",
    "array32_of_4g": b"\xdd\xff\xff\xff\xff",
    "deep": b"\x92\xa8Security\x81\xa1v" + b"\x91" * 100_000,
    "trailing_bytes": _record({"ssm_id": "x"}) + b"\x00",
    **{f"truncated_{n}": _VALID[:n] for n in sorted({1, 2, 5, len(_VALID) // 2, len(_VALID) - 1})},
}


@contextlib.contextmanager
def _bounded_memory(limit: int = 16 * 1024 * 1024) -> Iterator[None]:
    """Fail if the block allocates more than *limit* bytes at its peak (a 4 GB header must not)."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak allocation {peak} bytes"


def _exercise(
    store: ss.BaseStore,
    plant: Callable[[], Any],
    *,
    absent: bool | None = False,
    lists: bool = True,
    patchable: bool = False,
) -> None:
    """Every call on the foreign key "x" raises SerializationError, or (*absent*) sees nothing there.

    *absent* ``None``: either, call by call.  *plant* puts the foreign value back before
    each call.  ``delete`` may remove it and ``keys`` may list it (or raise
    SerializationError); a *patchable* record (of a class this process does not define,
    which a patch keeps) may be patched; nothing raises anything else, allocates what a
    header claims, or unpickles.  "ok" stays as it was.
    """
    store.put(Security(ssm_id="ok", v=1))
    reads: dict[str, Callable[[], Any]] = {
        "get": lambda: store.get(Security, "x"),
        "get_by_mapping": lambda: store.get(Security, {"ssm_id": "x"}),
        "get_subclass": lambda: store.get(Sub, "x"),
        "batch_get": lambda: store.batch_get(Security, ["ok", "x", "missing"])[1:],
        "patch": lambda: store.patch(Security, "x", {"v": 2}),
        "batch_patch": lambda: store.batch_patch(Security, [{"ssm_id": "x", "v": 2}]),
    }
    for name, call in reads.items():
        plant()
        with _bounded_memory():
            if absent:
                got = call()
                assert got in (None, [None, None]), f"{name}: {got!r:.80}"
                continue
            try:
                got = call()
            except (SerializationError, BatchError) as exc:
                error: StoreError = exc
            else:
                if (patchable or absent is None) and "patch" in name:
                    continue
                if absent is None and got in (None, [None, None]):
                    continue
                pytest.fail(f"{name} raised nothing: {got!r:.80}")
        if isinstance(error, BatchError):  # a backend that patches record by record: "x" was not applied
            assert name == "batch_patch", f"{name}: {error!r}"
            assert error.failed == ["x"]
            assert isinstance(error.__cause__, SerializationError), repr(error.__cause__)
    # Calls that may also succeed, and what they may then answer.
    others: dict[str, tuple[Callable[[], Any], Callable[[Any], bool]]] = {
        "delete": (lambda: store.delete(Security, "x"), lambda got: got is None),
        "batch_delete": (lambda: store.batch_delete(Security, ["x", "ok"]), lambda got: got in (1, 2)),
    }
    if lists:
        others.update(
            {
                "keys": (lambda: set(store.keys(Security)), lambda got: got in ({"ok"}, {"ok", "x"})),
                "keys_of_a_subclass": (lambda: list(store.keys(Sub)), lambda got: got == []),
                "count": (lambda: store.count(Security), lambda got: got in (1, 2)),
            }
        )
    for name, (call, fine) in others.items():
        plant()
        with _bounded_memory():
            try:
                got = call()
            except SerializationError:
                got = ...
        assert got is ... or fine(got), f"{name}: {got!r:.80}"
        store.put(Security(ssm_id="ok", v=1))
    assert_record(store.get(Security, "ok"), Security(ssm_id="ok", v=1))
    assert EXPLOSIONS == []


def _assert_survives_versions(store: ss.BaseStore, plant: Callable[[], Any]) -> None:
    """A record under a foreign header: reads give it or raise SerializationError, so do writes; nothing else."""
    for name, call in {
        "get": lambda: store.get(Security, "x"),
        "patch": lambda: store.patch(Security, "x", {"v": 2}),
        "put": lambda: store.put(Security(ssm_id="x", v=3)),
        "delete": lambda: store.delete(Security, "x"),
    }.items():
        plant()
        try:
            got = call()
        except SerializationError:
            continue
        if name == "get":
            assert_record(got, Security(ssm_id="x", v=1))
        elif name in ("patch", "put"):
            assert_record(store.get(Security, "x"), Security(ssm_id="x", v=2 if name == "patch" else 3))


# -- Redis


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[Any]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        yield client


def _redis_store(layout: str, url: str, namespace: str) -> Any:
    from stockstore.backends import RedisHashStore, RedisMsgpackStore

    return (RedisHashStore if layout == "hash" else RedisMsgpackStore)(url, namespace=namespace)


def _redis_name(store: Any, key: Any = "x", cls: type = Security) -> str:
    """The Redis key of a record (a percent-encoded, readable key name)."""
    return str(store._record_keys(family_of(cls), [encode_key(key if type(key) is tuple else (key,))])[0])


def _redis_header(version: int = 1) -> bytes:
    """The header a source of truth writes for a record that never expires."""
    from stockstore.backends.redis import _header

    return bytes(_header(version, None))


def _redis_header_size() -> int:
    from stockstore.backends.redis import _HEADER

    return int(_HEADER.size)


# Hash fields stockstore never writes, given the header: ids, and the fields for that header.
FOREIGN_HASHES: dict[str, Callable[[bytes], dict[bytes, bytes]]] = {
    "short_header": lambda h: {b"\xff": h[:-1]},
    "tag_not_utf8": lambda h: {b"\xff": h + b"\xff\xfe", b"v": b"\x01"},
    "tag_cut_utf8": lambda h: {b"\xff": h + b"\xc3", b"v": b"\x01"},
    "undefined_class": lambda h: {b"\xff": h + b"os.system", b"ssm_id": b"\xa1x"},
    "name_not_utf8": lambda h: {b"\xff": h + b"Security", b"\xff\xfe": b"\x01"},
    "no_meta": lambda h: {b"ssm_id": b"\xa1x", b"v": b"\x01"},
}


@pytest.mark.redis
class TestForeignBytesInRedis:
    @pytest.fixture(params=["msgpack", "hash"])
    def layout(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def redis_store(self, layout: str, redis_url: str, namespace: str) -> Iterator[Any]:
        with _redis_store(layout, redis_url, namespace) as store:
            yield store

    @pytest.fixture
    def msgpack_store(self, redis_url: str, namespace: str) -> Iterator[Any]:
        with _redis_store("msgpack", redis_url, namespace) as store:
            yield store

    @pytest.fixture
    def hash_store(self, redis_url: str, namespace: str) -> Iterator[Any]:
        with _redis_store("hash", redis_url, namespace) as store:
            yield store

    @pytest.mark.parametrize("case", list(FOREIGN_RECORDS))
    def test_foreign_record_behind_a_live_header(self, msgpack_store: Any, raw_redis: Any, case: str) -> None:
        name, payload = _redis_name(msgpack_store), FOREIGN_RECORDS[case]
        # A header and nothing after it is a tombstone: absent, as documented.  A row record whose
        # schema Redis does not hold reads as absent (a miss, and dropped); a patch of it fails.
        _exercise(
            msgpack_store,
            lambda: raw_redis.set(name, _redis_header() + payload),
            absent=None if case == "row_of_unknown_schema" else payload == b"",
            patchable=case == "undefined_class",
        )

    @pytest.mark.parametrize("case", list(FOREIGN_VALUES))
    def test_foreign_field_value_in_a_record_hash(self, hash_store: Any, raw_redis: Any, case: str) -> None:
        from stockstore.backends.redis import _META

        name = _redis_name(hash_store)
        fields = {_META: _redis_header() + b"Security", b"ssm_id": b"\xa1x", b"v": FOREIGN_VALUES[case]}
        _exercise(hash_store, lambda: (raw_redis.delete(name), raw_redis.hset(name, mapping=fields)))

    @pytest.mark.parametrize("case", list(FOREIGN_HASHES))
    def test_foreign_record_hash(self, hash_store: Any, raw_redis: Any, case: str) -> None:
        name, fields = _redis_name(hash_store), FOREIGN_HASHES[case](_redis_header())
        plant = lambda: (raw_redis.delete(name), raw_redis.hset(name, mapping=fields))  # noqa: E731
        _exercise(hash_store, plant, patchable=case == "undefined_class")

    def test_a_header_alone_is_a_tombstone(self, redis_store: Any, raw_redis: Any, layout: str) -> None:
        from stockstore.backends.redis import _META

        name, header = _redis_name(redis_store), _redis_header()
        if layout == "msgpack":
            _exercise(redis_store, lambda: raw_redis.set(name, header), absent=True)
        else:
            _exercise(redis_store, lambda: (raw_redis.delete(name), raw_redis.hset(name, _META, header)), absent=True)

    @pytest.mark.parametrize("expires", [0, 2**40 + 1], ids=["never", "expiring"])
    @pytest.mark.parametrize("payload", [b"", _record({"ssm_id": "x", "v": 1})], ids=["tombstone", "record"])
    def test_a_header_of_the_earlier_format(
        self, redis_store: Any, raw_redis: Any, layout: str, expires: int, payload: bytes
    ) -> None:
        """An earlier stockstore's header (``>QQ8s``, an expiry of 0 for "never") is refused, never misread."""
        from stockstore.backends.redis import _META

        name, header = _redis_name(redis_store), struct.pack(">QQ8s", 1, expires, bytes(8))
        if layout == "msgpack":
            _exercise(redis_store, lambda: raw_redis.set(name, header + payload))
            return
        fields = {_META: header + (b"Security" if payload else b""), b"ssm_id": b"\xa1x"}
        _exercise(redis_store, lambda: (raw_redis.delete(name), raw_redis.hset(name, mapping=fields)))

    @pytest.mark.parametrize(
        "value", [b"", b"short", bytes(15), bytes(range(40)), b"\xff" * 64, bytes(7) + b"\x7f" + bytes(40)], ids=repr
    )
    def test_foreign_strings(self, redis_store: Any, raw_redis: Any, layout: str, value: bytes) -> None:
        """No magic number: a header is what its bytes say, and one that says "expired" (or "not this
        server's") is absent; shorter than a header, or a string where a hash belongs, always fails."""
        name = _redis_name(redis_store)
        if layout == "hash" or len(value) < _redis_header_size():
            _exercise(redis_store, lambda: raw_redis.set(name, value))
            return
        _exercise(redis_store, lambda: raw_redis.set(name, value), absent=None)

    @pytest.mark.parametrize("version", [2**64 - 1, 2**63, 2**53 + 1])
    def test_a_header_whose_version_cannot_grow(
        self, redis_store: Any, raw_redis: Any, layout: str, version: int
    ) -> None:
        """Every write stores the held version + 1: a foreign header at the top must not crash it."""
        from stockstore.backends.redis import _META

        name, header = _redis_name(redis_store), _redis_header(version)
        if layout == "msgpack":
            plant = lambda: raw_redis.set(name, header + _record({"ssm_id": "x", "v": 1}))  # noqa: E731
        else:
            fields = {_META: header + b"Security", b"ssm_id": b"\xa1x", b"v": b"\x01"}
            plant = lambda: (raw_redis.delete(name), raw_redis.hset(name, mapping=fields))  # noqa: E731
        _assert_survives_versions(redis_store, plant)

    @pytest.mark.parametrize("kind", ["list", "set", "zset", "hash", "string", "stream"])
    def test_another_type_under_a_record_key(self, redis_store: Any, raw_redis: Any, layout: str, kind: str) -> None:
        if (kind, layout) in (("hash", "hash"), ("string", "msgpack")):
            pytest.skip("the layout's own type (tested above)")
        name = _redis_name(redis_store)
        writes: dict[str, Callable[[], Any]] = {
            "list": lambda: raw_redis.rpush(name, b"a", b"b"),
            "set": lambda: raw_redis.sadd(name, b"a"),
            "zset": lambda: raw_redis.zadd(name, {b"a": 1.0}),
            "hash": lambda: raw_redis.hset(name, b"a", b"b"),
            "string": lambda: raw_redis.set(name, bytes(40)),
            "stream": lambda: raw_redis.xadd(name, {b"a": b"b"}),
        }
        _exercise(redis_store, lambda: (raw_redis.delete(name), writes[kind]()))

    def test_a_truncated_stockstore_record(self, redis_store: Any, raw_redis: Any, layout: str) -> None:
        """The store's own bytes, cut short (a header alone is a tombstone; a shorter class tag, a class
        this process does not define, which a patch keeps)."""
        redis_store.put(Security(ssm_id="x", v=[1.5, "text", dt.datetime(2000, 1, 1)], w=b"bytes"))
        name, size = _redis_name(redis_store), _redis_header_size()
        if layout == "msgpack":
            value = raw_redis.get(name)
            for cut in sorted({size - 1, size, size + 1, size + 2, size + 4, len(value) // 2, len(value) - 1}):
                _exercise(redis_store, lambda c=cut: raw_redis.set(name, value[:c]), absent=cut == size)
            return
        held = raw_redis.hgetall(name)
        for field, value in held.items():
            cuts = {size - 1, size, size + 1, size + 4} if field == b"\xff" else {0, 1, len(value) // 2, len(value) - 1}
            for cut in sorted(c for c in cuts if c < len(value)):
                mangled = {**held, field: value[:cut]}
                _exercise(
                    redis_store,
                    lambda m=mangled: (raw_redis.delete(name), raw_redis.hset(name, mapping=m)),
                    absent=field == b"\xff" and cut == size,
                    patchable=field == b"\xff" and cut > size,
                )

    @pytest.mark.parametrize(
        "part",
        [
            "#abc",
            "#",
            "#1_000",
            "# 1",
            "#+1",
            "#01",
            "#-0",
            "#\u0661",  # an Arabic-Indic digit one: int() takes it
            "#99999999999999999999",
            "%FF",
            "%",
            "%2a",
            "%61",
            "a%41",
            "a,b",
            "#1,#2",
        ],
    )
    def test_key_names_stockstore_never_writes(self, redis_store: Any, raw_redis: Any, part: str) -> None:
        """A copy of a real record under a key name no key value has: listing never shows it as a key."""
        prefix = _redis_name(redis_store, "p")[: -len("p")]
        redis_store.put(Security(ssm_id="ok", v=1))
        raw_redis.restore(prefix + part, 0, raw_redis.dump(_redis_name(redis_store, "ok")))
        for name, call in {
            "keys": lambda: list(redis_store.keys(Security)),
            "keys_of_a_subclass": lambda: list(redis_store.keys(Sub)),
            "count": lambda: redis_store.count(Security),
        }.items():
            try:
                got = call()
            except SerializationError:
                continue
            assert got == {"keys": ["ok"], "keys_of_a_subclass": [], "count": 1}[name], f"{name}: {got!r}"
        try:
            redis_store.clear(Security)
        except SerializationError:
            return
        assert raw_redis.exists(_redis_name(redis_store, "ok")) == 0

    def test_the_other_layout_in_one_namespace(self, redis_url: str, namespace: str) -> None:
        """Not foreign: each layout reads and overwrites the other's records, the row schema a msgpack
        store saves before its first wide record included (tests/test_redis_layouts.py has the rest)."""
        wide = Security(ssm_id="x", **{f"a{i}": float(i) for i in range(20)})
        with (
            _redis_store("msgpack", redis_url, namespace) as blobs,
            _redis_store("hash", redis_url, namespace) as hashes,
        ):
            blobs.put(wide)
            assert_record(hashes.get(Security, "x"), wide)
            hashes.put(Security(ssm_id="x", v=1))
            assert_record(blobs.get(Security, "x"), Security(ssm_id="x", v=1))

    @pytest.mark.parametrize("holder", [b"\xff\xfe", b"#abc", b"%FF", b"#99999999999999999999", b"a"], ids=repr)
    def test_a_foreign_alternate_key_pointer(
        self, redis_url: str, raw_redis: Any, layout: str, namespace: str, holder: bytes
    ) -> None:
        """A pointer (and the record and list it names) that stockstore never wrote."""
        with _redis_store(layout, redis_url, namespace) as store:
            real = Listing(exchange="X", ticker="T", isin="I")
            store.put(real)
            prefix = store._prefix(family_of(Listing)).encode()
            pointer = prefix + b"a1:FOREIGN"
            raw_redis.set(pointer, holder)
            raw_redis.restore(prefix + b"r:" + holder, 0, raw_redis.dump(_redis_name(store, ("X", "T"), Listing)))
            raw_redis.hset(prefix + b"x:" + holder, b"1", pointer)
            for call in (
                lambda: store.get(Listing, {"isin": "FOREIGN"}),
                lambda: store.batch_get(Listing, [{"isin": "FOREIGN"}, ("X", "T")])[0],
            ):
                try:
                    got = call()
                except SerializationError:
                    continue
                assert got is None
            assert_record(store.get(Listing, {"isin": "I"}), real)

    def test_a_huge_declared_length_allocates_nothing(self, redis_store: Any, raw_redis: Any, layout: str) -> None:
        from stockstore.backends.redis import _META

        name = _redis_name(redis_store)
        for case in FOREIGN_RECORDS if layout == "msgpack" else FOREIGN_VALUES:
            if "4g" not in case:
                continue
            if layout == "msgpack":
                raw_redis.set(name, _redis_header() + FOREIGN_RECORDS[case])
            else:
                raw_redis.delete(name)
                raw_redis.hset(name, mapping={_META: _redis_header() + b"Security", b"v": FOREIGN_VALUES[case]})
            with _bounded_memory(2 * 1024 * 1024), pytest.raises(SerializationError):
                redis_store.get(Security, "x")


# -- memcached


@pytest.mark.memcached
class TestForeignBytesInMemcached:
    @pytest.fixture
    def raw_memcache(self, memcached_server: str) -> Iterator[Any]:
        from pymemcache.client.base import Client

        host, _, port = memcached_server.rpartition(":")
        client = Client((host, int(port)), default_noreply=False)
        yield client
        client.close()

    @pytest.fixture
    def mc_store(self, memcached_server: str, namespace: str) -> Iterator[Any]:
        from stockstore.backends import MemcacheStore

        with MemcacheStore([memcached_server], namespace=namespace) as store:
            yield store

    @staticmethod
    def _item(store: Any, key: Any = "x") -> str:
        family = family_of(Security)
        return str(store._record_keys(family, store._generation(family), [encode_key((key,))])[0])

    @staticmethod
    def _absent(store: Any, value: bytes) -> bool:
        """Whether the header in *value* reads as a tombstone or an expired record (of a version stores write)."""
        if len(value) < 17:
            return False
        version, flag, expires = struct.unpack_from(">qBq", value)
        header = 0 <= version < 2**63 - 1 and (flag == ord("E") or (flag == ord("N") and expires == 0))
        live = flag == ord("N") or expires > store.clock() * 1000
        return header and (len(value) == 17 or not live)

    @pytest.mark.parametrize("case", list(FOREIGN_RECORDS))
    def test_foreign_record_behind_a_live_header(self, mc_store: Any, raw_memcache: Any, case: str) -> None:
        from stockstore.backends.memcache import _HEADER, _NEVER

        item, value = self._item(mc_store), _HEADER.pack(1, _NEVER, 0) + FOREIGN_RECORDS[case]
        absent, patchable = len(value) == _HEADER.size, case == "undefined_class"
        _exercise(mc_store, lambda: raw_memcache.set(item, value), absent=absent, lists=False, patchable=patchable)

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b"short",
            bytes(16),
            bytes(range(40)),
            b"\xff" * 64,
            bytes(8) + b"E" + b"\xff" * 8 + b"x",  # expired (at -1 ms)
            bytes(8) + b"N" + b"\xff" * 8 + b"x",  # "never", with an expiry all the same
            struct.pack(">qq", 1, 2**63 - 1) + _record({"ssm_id": "x"}),  # an earlier stockstore's "never"
            struct.pack(">qq", 1, 2**41) + _record({"ssm_id": "x"}),  # ... and its expiry (in 2039)
        ],
        ids=repr,
    )
    def test_foreign_values(self, mc_store: Any, raw_memcache: Any, value: bytes) -> None:
        """With no magic number, a header is what its bytes say: one that reads "expired" is absent (as expired)."""
        item = self._item(mc_store)
        _exercise(mc_store, lambda: raw_memcache.set(item, value), absent=self._absent(mc_store, value), lists=False)

    @pytest.mark.parametrize("version", [2**63 - 1, -1, -(2**63)])
    def test_a_header_whose_version_cannot_grow(self, mc_store: Any, raw_memcache: Any, version: int) -> None:
        """Every write stores the held version + 1: a foreign header at the top must not crash it."""
        from stockstore.backends.memcache import _HEADER, _NEVER

        item = self._item(mc_store)
        value = _HEADER.pack(version, _NEVER, 0) + _record({"ssm_id": "x", "v": 1})
        _assert_survives_versions(mc_store, lambda: raw_memcache.set(item, value))

    def test_a_value_stored_with_pickle_flags_is_never_unpickled(self, mc_store: Any, memcached_server: str) -> None:
        """pymemcache's pickle serde marks values by their flags; stockstore's client has no deserializer."""
        from pymemcache.client.base import Client
        from pymemcache.serde import pickle_serde

        host, _, port = memcached_server.rpartition(":")
        pickler = Client((host, int(port)), serde=pickle_serde, default_noreply=False)
        item = self._item(mc_store)
        value, flags = pickle_serde.serialize(item, Bomb())
        assert flags != 0
        try:
            _exercise(mc_store, lambda: pickler.set(item, Bomb()), absent=self._absent(mc_store, value), lists=False)
        finally:
            pickler.close()

    @pytest.mark.parametrize("value", [b"garbage", b"", b"1e9", b"\xff", b"12abc"], ids=repr)
    def test_a_foreign_generation_counter(self, mc_store: Any, raw_memcache: Any, value: bytes) -> None:
        """The per-family generation item holds a decimal number; anything else is not stockstore's."""
        mc_store.put(Security(ssm_id="ok", v=1))
        gen_key = mc_store._item_key("gen", family_of(Security).name)
        held = raw_memcache.get(gen_key)
        raw_memcache.set(gen_key, value)
        for call in (
            lambda: mc_store.get(Security, "ok"),
            lambda: mc_store.batch_get(Security, ["ok"]),
            lambda: mc_store.put(Security(ssm_id="y")),
            lambda: mc_store.patch(Security, "ok", {"v": 2}),
            lambda: mc_store.delete(Security, "ok"),
        ):
            with pytest.raises(SerializationError, match="generation"):
                call()
        raw_memcache.set(gen_key, held)
        assert_record(mc_store.get(Security, "ok"), Security(ssm_id="ok", v=1))

    def test_a_foreign_alternate_key_pointer(self, mc_store: Any, raw_memcache: Any) -> None:
        real = Listing(exchange="X", ticker="T", isin="I")
        mc_store.put(real)
        family = family_of(Listing)
        pointer = mc_store._alt_key(family, mc_store._generation(family), 1, encode_key(("FOREIGN",)))
        for holder in [b"\xff", b"", encode_key(("X", "T")), b"\x00" * 40, b"\xdd\xff\xff\xff\xff"]:
            raw_memcache.set(pointer, holder)
            with _bounded_memory():
                assert mc_store.get(Listing, {"isin": "FOREIGN"}) is None
        assert_record(mc_store.get(Listing, {"isin": "I"}), real)


# -- SQL


@pytest.fixture(params=KINDS)
def sql_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="module", params=KINDS)
def shared_sql_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One store (and table) per database for the module: creating tables is what costs."""
    from stockstore.backends import SqlStore

    url = request.getfixturevalue(f"{request.param}_url")
    with SqlStore(url, namespace=f"t{uuid.uuid4().hex[:16]}") as store:
        yield store


class TestForeignBytesInSql:
    @pytest.fixture
    def sql_store(self, shared_sql_store: Any) -> Iterator[Any]:
        """The shared store holding "ok" alone at the start of each test, and emptied after it."""
        shared_sql_store.put(Security(ssm_id="ok", v=1))
        yield shared_sql_store
        with shared_sql_store.engine.begin() as conn:
            conn.execute(shared_sql_store._table(family_of(Security)).delete())

    @staticmethod
    def _upsert(store: Any, key: bytes, payload: bytes | None, *, ident: bytes | None = None) -> None:
        """Write a row of Security's table with SQLAlchemy Core, as another program would."""
        table = store._table(family_of(Security))
        ident = hashlib.sha256(key).digest() if ident is None else ident
        with store.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.id == ident))
            conn.execute(table.insert().values(id=ident, key=key, payload=payload, version=1, expires_ms=None))

    @pytest.mark.parametrize("case", list(FOREIGN_RECORDS))
    def test_foreign_payload_in_a_record_row(self, sql_store: Any, case: str) -> None:
        plant = lambda: self._upsert(sql_store, encode_key(("x",)), FOREIGN_RECORDS[case])  # noqa: E731
        _exercise(sql_store, plant, patchable=case == "undefined_class")

    def test_a_null_payload_is_a_tombstone(self, sql_store: Any) -> None:
        _exercise(sql_store, lambda: self._upsert(sql_store, encode_key(("x",)), None), absent=True)

    @pytest.mark.parametrize(
        "key",
        [
            b"",
            b"\xc1",
            b"\x91\xa1\xff",  # not UTF-8
            b"\x91\xa1ax",  # trailing bytes
            msgpack.packb("x"),  # not an array
            msgpack.packb([]),
            msgpack.packb([1.5]),
            msgpack.packb([b"x"]),
            msgpack.packb([None]),
            msgpack.packb([[1]]),
            msgpack.packb([2**64 - 1]),
            msgpack.packb(["a", "b"]),  # a composite key in a one-attribute family
            b"\x91\xcc\x01",  # the int 1, not in its shortest form
            b"\x91\xd9\x01x",  # "x", not in its shortest form
            b"\x91\xc7\x01\x05x",  # an ext value
            b"\x91\xdb\xff\xff\xff\xff",  # a 4 GB str
        ],
        ids=repr,
    )
    def test_foreign_key_bytes_are_never_listed(self, sql_store: Any, key: bytes) -> None:
        self._upsert(sql_store, key, _record({"ssm_id": "x"}))
        with _bounded_memory():
            try:
                listed = list(sql_store.keys(Security))
            except SerializationError:
                listed = ["ok"]
        assert listed == ["ok"], f"listed {listed!r}"
        assert_record(sql_store.get(Security, "ok"), Security(ssm_id="ok", v=1))

    def test_a_row_whose_id_is_not_the_digest_of_its_key(self, sql_store: Any) -> None:
        """A row get() can never find must not be listed as if it could."""
        self._upsert(sql_store, encode_key(("y",)), _record({"ssm_id": "y"}), ident=bytes(32))
        assert sql_store.get(Security, "y") is None
        try:
            listed = list(sql_store.keys(Security))
        except SerializationError:
            listed = ["ok"]
        assert listed == ["ok"], f"listed {listed!r}"

    def test_a_foreign_table_under_the_store_table_name(self, sql_url: str, namespace: str) -> None:
        import sqlalchemy as sa

        from stockstore.backends import SqlStore

        with SqlStore(sql_url, namespace=namespace) as store:
            name = store.table_name(Security)
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, note VARCHAR(20))")
                conn.exec_driver_sql(f"INSERT INTO {name} VALUES (1, 'theirs')")
            try:
                for call in (
                    lambda: store.put(Security(ssm_id="x")),
                    lambda: store.get(Security, "x"),
                    lambda: list(store.keys(Security)),
                ):
                    with pytest.raises(StoreError, match="has columns"):
                        call()
                with store.engine.connect() as conn:
                    assert conn.execute(sa.text(f"SELECT id, note FROM {name}")).all() == [(1, "theirs")]
            finally:
                with store.engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE {name}")


# ---------------------------------------------------------------------------- credentials

SECRET = "secret-pw"


def _exceptions(error: BaseException) -> list[BaseException]:
    """*error* and every exception reachable through ``__cause__`` / ``__context__`` (and groups)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or any(exc is s for s in seen):
            continue
        seen.append(exc)
        todo += [exc.__cause__, exc.__context__, *getattr(exc, "exceptions", ())]
    return seen


def assert_no_secret(error: BaseException | None, caplog: pytest.LogCaptureFixture, *stores: Any) -> None:
    texts = {f"repr of {s!r}": repr(s) for s in stores}
    if error is not None:
        for exc in _exceptions(error):
            texts[f"str of {type(exc).__qualname__}"] = str(exc)
            texts[f"repr of {type(exc).__qualname__}"] = repr(exc)
            texts[f"args of {type(exc).__qualname__}"] = repr(exc.args)
            texts[f"notes of {type(exc).__qualname__}"] = repr(getattr(exc, "__notes__", ()))
        texts["traceback"] = "".join(traceback.format_exception(error))
    texts["log"] = caplog.text
    for record in caplog.records:
        texts[f"log record {record.name}"] = f"{record.getMessage()} {record.args!r} {record.exc_text}"
    leaks = [where for where, text in texts.items() if SECRET in text]
    assert leaks == [], f"{SECRET!r} shows in {leaks}"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield silent.getsockname()[1]


def _options(url: str) -> dict[str, Any]:
    if url.startswith("redis"):
        return {"timeout": 1.0, "connect_timeout": 1.0, "retries": 0}
    return {"timeout": 1.0}


CREDENTIAL_URLS = [
    pytest.param("redis://user:{secret}@127.0.0.1:{port}/0", id="redis"),
    pytest.param("rediss://user:{secret}@127.0.0.1:{port}/0", id="rediss"),
    pytest.param("redis+cluster://user:{secret}@127.0.0.1:{port}", id="redis-cluster"),
    pytest.param("redis://user:{secret}@127.0.0.1:{port}/0?layout=hash", id="redis-hash"),
    pytest.param("postgresql://u:{secret}@127.0.0.1:{port}/x", id="postgresql"),
    pytest.param("mysql+pymysql://u:{secret}@127.0.0.1:{port}/x", id="mysql"),
    pytest.param("memcache://u:{secret}@127.0.0.1:{port}", id="memcache"),
]


def _fail(build: Callable[[], ss.BaseStore], made: list[Any]) -> BaseException:
    """Build a store and use it; the error it raises (building included)."""
    try:
        store = build()
        made.append(store)
        store.put(Security(ssm_id="x"))
        store.get(Security, "x")
    except Exception as exc:
        return exc
    pytest.fail("the store worked")


class TestCredentials:
    @pytest.mark.parametrize("target", ["closed", "silent"])
    @pytest.mark.parametrize("template", CREDENTIAL_URLS)
    def test_unreachable_server(
        self,
        template: str,
        target: str,
        closed_port: int,
        silent_port: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        url = template.format(secret=SECRET, port=closed_port if target == "closed" else silent_port)
        made: list[Any] = []
        started = time.monotonic()
        error = _fail(lambda: ss.from_url(url, **_options(url)), made)
        assert time.monotonic() - started < 10, "a timeout of 1 s did not bound the wait"
        try:
            chained = [ss.ChainedStore([ss.backends.MemoryStore(), *made])] if made else []
            assert_no_secret(error, caplog, *made, *chained)
            if template.startswith("memcache"):
                assert isinstance(error, StoreError), repr(error)
                return
            assert isinstance(error, BackendUnavailableError), (
                f"{type(error).__module__}.{type(error).__qualname__}: {error}"
            )
        finally:
            for store in made:
                store.close()

    @pytest.mark.parametrize("template", CREDENTIAL_URLS)
    def test_store_classes_built_directly(
        self, template: str, closed_port: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        url = template.format(secret=SECRET, port=closed_port).replace("?layout=hash", "")
        from stockstore.backends import MemcacheStore, RedisHashStore, SqlStore

        cls: Any = (
            RedisHashStore if url.startswith("redis") else MemcacheStore if url.startswith("memcache") else SqlStore
        )
        made: list[Any] = []
        error = _fail(lambda: cls(url, **_options(url)), made)
        try:
            assert_no_secret(error, caplog, *made)
            assert isinstance(error, StoreError), f"{type(error).__module__}.{type(error).__qualname__}: {error}"
        finally:
            for store in made:
                store.close()

    @pytest.mark.redis
    @pytest.mark.parametrize("fixture", ["redis_url", "redis_tls_url"])
    def test_redis_refuses_the_password(
        self, request: pytest.FixtureRequest, fixture: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        import redis

        url: str = request.getfixturevalue(fixture)
        user, right = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        with redis.Redis.from_url(url) as admin:
            admin.acl_setuser(user, enabled=True, passwords=[f"+{right}"], keys=["*"], commands=["+@all"])
            try:
                caplog.set_level(logging.DEBUG)
                scheme, _, rest = url.partition("://")
                for layout in ("msgpack", "hash"):
                    wrong = f"{scheme}://{user}:{SECRET}@{rest}{'&' if '?' in rest else '?'}layout={layout}"
                    made: list[Any] = []
                    error = _fail(lambda w=wrong: ss.from_url(w, retries=0), made)
                    assert_no_secret(error, caplog, *made)
                    assert isinstance(error, BackendUnavailableError), repr(error)
                    for store in made:
                        store.close()
                # The right password works, and shows nowhere either.
                good = f"{scheme}://{user}:{right}@{rest}"
                with ss.from_url(good) as store:
                    store.put(Security(ssm_id="x"))
                    assert right not in repr(store)
                    assert right not in repr(ss.ChainedStore([ss.backends.MemoryStore(), store]))
                    store.delete(Security, "x")
                assert right not in caplog.text
            finally:
                admin.acl_deluser(user)

    @pytest.mark.redis_cluster
    def test_redis_cluster_refuses_the_password(self, redis_cluster_url: str, caplog: pytest.LogCaptureFixture) -> None:
        import redis

        nodes = redis_cluster_url.removeprefix("redis+cluster://").split(",")
        user, right = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        admins = [redis.Redis(host=n.rpartition(":")[0], port=int(n.rpartition(":")[2])) for n in nodes]
        try:
            for admin in admins:  # ACLs are per node
                admin.acl_setuser(user, enabled=True, passwords=[f"+{right}"], keys=["*"], commands=["+@all"])
            caplog.set_level(logging.DEBUG)
            wrong = f"redis+cluster://{user}:{SECRET}@{','.join(nodes)}"
            made: list[Any] = []
            error = _fail(lambda: ss.from_url(wrong, retries=0), made)
            assert_no_secret(error, caplog, *made)
            assert isinstance(error, BackendUnavailableError), f"{type(error).__module__}.{type(error).__qualname__}"
            for store in made:
                store.close()
        finally:
            for admin in admins:
                admin.acl_deluser(user)
                admin.close()

    @pytest.mark.postgresql
    def test_postgresql_refuses_the_login(self, postgresql_url: str, caplog: pytest.LogCaptureFixture) -> None:
        """A role that may not log in: the server refuses it whatever its authentication method."""
        import sqlalchemy as sa

        admin = sa.make_url(postgresql_url)
        role = f"u{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN PASSWORD '{uuid.uuid4().hex}'")  # made here
            caplog.set_level(logging.DEBUG)
            url = admin.set(username=role, password=SECRET).render_as_string(hide_password=False)
            made: list[Any] = []
            error = _fail(lambda: ss.from_url(url, timeout=2), made)
            assert_no_secret(error, caplog, *made, ss.ChainedStore([ss.backends.MemoryStore(), *made]))
            assert isinstance(error, BackendUnavailableError), repr(error)
            for store in made:
                store.close()
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
            engine.dispose()

    @pytest.mark.mysql
    def test_mariadb_refuses_the_password(self, mysql_url: str, caplog: pytest.LogCaptureFixture) -> None:
        import sqlalchemy as sa

        admin = sa.make_url(mysql_url)
        user = f"u{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{uuid.uuid4().hex}'")
            caplog.set_level(logging.DEBUG)
            url = admin.set(username=user, password=SECRET).render_as_string(hide_password=False)
            made: list[Any] = []
            error = _fail(lambda: ss.from_url(url, timeout=2), made)
            assert_no_secret(error, caplog, *made, ss.ChainedStore([ss.backends.MemoryStore(), *made]))
            assert isinstance(error, BackendUnavailableError), repr(error)
            for store in made:
                store.close()
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
            engine.dispose()

    @pytest.mark.parametrize(
        "where",
        [
            "memcache://u:{secret}@127.0.0.1:1",
            "memcache://127.0.0.1:1,u:{secret}@127.0.0.1:2",
            "memcache://u:{secret}@127.0.0.1:1/path",
            ["127.0.0.1:1", "u:{secret}@127.0.0.1:2"],
        ],
        ids=["url", "second_server", "with_path", "list"],
    )
    def test_memcache_takes_no_credentials(self, where: Any, caplog: pytest.LogCaptureFixture) -> None:
        """memcached has no password here: one in the URL is refused, never sent to DNS as a host name."""
        from stockstore.backends import MemcacheStore

        caplog.set_level(logging.DEBUG)
        where = where.format(secret=SECRET) if isinstance(where, str) else [w.format(secret=SECRET) for w in where]
        with pytest.raises(StoreError) as info:
            MemcacheStore(where)
        assert_no_secret(info.value, caplog)

    def test_a_failing_tier_logs_no_secret(self, closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
        """A chain logs a failed cache tier at WARNING, with the tier's repr: no password in it."""
        caplog.set_level(logging.DEBUG)
        url = f"redis://user:{SECRET}@127.0.0.1:{closed_port}/0"
        tier = ss.from_url(url, **_options(url))
        source = ss.backends.MemoryStore()
        with ss.ChainedStore([tier, source]) as chain:
            chain.put(Security(ssm_id="x", v=1))
            assert_record(chain.get(Security, "x"), Security(ssm_id="x", v=1))
            assert chain.tier_failures[0] >= 1
            assert any(r.levelno == logging.WARNING for r in caplog.records)
            assert_no_secret(None, caplog, chain, tier)
