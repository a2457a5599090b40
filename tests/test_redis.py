"""The Redis stores on real servers: what the conformance suite cannot see from outside.

Key layout and escaping, expiry on the server, patches that leave every other
attribute byte for byte, listing without ``KEYS``, client ownership, timeouts
against a server that never answers, and data not written by stockstore.
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
import redis
from faults import FaultProxy
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis_servers import key_names

import stockstore as ss
from stockstore._keys import encode_key, family_of
from stockstore.backends import MemoryStore, RedisHashStore, RedisMsgpackStore, SqlStore
from stockstore.backends import _redis_wire as _wire
from stockstore.backends.redis import _SCRIPT, _header, _key_of_name, key_bytes, key_text
from stockstore.errors import BackendUnavailableError, SerializationError, StoreError
from stockstore.testing import assert_record, assert_same

pytestmark = pytest.mark.redis

LAYOUTS = [RedisMsgpackStore, RedisHashStore]


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


@pytest.fixture(params=LAYOUTS, ids=["msgpack", "hash"])
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    with request.param(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        yield store


class TestKeyLayout:
    def test_keys_are_readable(self, store: Any, raw: redis.Redis) -> None:
        store.batch_put([Security(ssm_id="US0378331005"), Security(ssm_id=42), Listing(exchange="XNAS", ticker="AAPL")])
        ns = store.namespace
        assert key_names(raw, ns, marks=True) == {
            f"{ns}:Security:r:US0378331005",
            f"{ns}:Security:r:#42",
            f"{ns}:{{Listing}}:r:XNAS,AAPL",
            f"{ns}:Security:p",  # each family's mark: written into empty, it holds live records only
            f"{ns}:{{Listing}}:p",
        }

    def test_alternate_keys_are_pointers_in_the_records_slot(self, store: Any, raw: redis.Redis) -> None:
        store.put(Listing(exchange="XNAS", ticker="AAPL", isin="US0378331005"))
        ns = store.namespace
        pointer = f"{ns}:{{Listing}}:a1:US0378331005"
        assert raw.get(pointer) == b"XNAS,AAPL"
        slots = {key_slot(name.encode()) for name in key_names(raw, ns)}
        assert len(slots) == 1
        store.patch(Listing, ("XNAS", "AAPL"), {"isin": "NEW"})
        assert raw.get(pointer) is None
        assert raw.get(f"{ns}:{{Listing}}:a1:NEW") == b"XNAS,AAPL"

    @pytest.mark.parametrize(
        "key",
        ["*", "a*", "?", "[a-z]", "\\", "{x}", "}{", ":", "a:b", "#1", "%", "%2A", ",", " ", "\n", "\x00", "é😀", ""],
    )
    def test_hostile_key_values_are_escaped(self, store: Any, raw: redis.Redis, key: str) -> None:
        store.batch_put([Security(ssm_id=key, v=1), Security(ssm_id="plain", v=2)])
        (name,) = key_names(raw, store.namespace) - {f"{store.namespace}:Security:r:plain"}
        suffix = name.removeprefix(f"{store.namespace}:Security:r:")
        assert not set(suffix) & set("*?[]\\{}:, \n\x00#") or suffix.startswith("#")
        assert suffix.isascii()
        assert key_bytes(suffix) == ss._keys.encode_key((key,))  # type: ignore[attr-defined]
        # The escaped name is a literal in SCAN MATCH: it finds exactly this record.
        assert [k.decode() for k in raw.scan_iter(match=name)] == [name]

    @given(st.text(st.characters(max_codepoint=127), max_size=40) | st.text(max_size=40))
    def test_the_common_keys_shortcuts_spell_it_as_the_parser_does(self, value: str) -> None:
        key = ss._keys.encode_key((value,))  # type: ignore[attr-defined]
        assert key_text(key) == (value if value.isalnum() and value.isascii() else quote(value, safe=""))
        assert _key_of_name(key_text(key).encode(), 1) == key_bytes(key_text(key), 1) == key

    def test_key_text_is_injective_for_awkward_tuples(self) -> None:
        tuples = [("a,b",), ("a", "b"), ("",), ("", ""), (1,), ("1",), ("#1",), (-1, "x"), ("x", -1), ("%2C",), (",",)]
        texts = [key_text(ss._keys.encode_key(t)) for t in tuples]  # type: ignore[attr-defined]
        assert len(set(texts)) == len(texts)
        assert [key_bytes(t) for t in texts] == [ss._keys.encode_key(t) for t in tuples]  # type: ignore[attr-defined]

    def test_awkward_namespace_stays_inside_its_prefix(self, redis_url: str, raw: redis.Redis) -> None:
        base = f"t{uuid.uuid4().hex[:12]}"
        with (
            RedisMsgpackStore(redis_url, namespace=base) as plain,
            RedisMsgpackStore(redis_url, namespace=base + ":*{x}") as awkward,
        ):
            plain.put(Security(ssm_id="a"))
            awkward.put(Security(ssm_id="b"))
            assert key_names(raw, base) == {f"{base}:Security:r:a"}
            assert key_names(raw, base + "%3A%2A%7Bx%7D") == {f"{base}%3A%2A%7Bx%7D:Security:r:b"}
            assert list(plain.keys(Security)) == ["a"]
            assert plain.clear(Security) == 1
            assert list(awkward.keys(Security)) == ["b"]


class TestServerSide:
    def test_lifetime_is_redis_expiry(self, store: Any, raw: redis.Redis) -> None:
        timed = type(store)(raw, namespace=store.namespace, lifetime=100)
        timed.put(Security(ssm_id="x", a=1.0))
        name = f"{store.namespace}:Security:r:x"
        assert 99_000 < raw.pttl(name) <= 100_001  # whole ms, rounded up: never early
        # A store without a lifetime keeps the record's expiry on patch ...
        time.sleep(0.05)
        store.patch(Security, "x", {"a": 2.0})
        assert 95_000 < raw.pttl(name) < 99_990
        # ... one with a lifetime applies it afresh, in the same atomic step.
        type(store)(raw, namespace=store.namespace, lifetime=500).patch(Security, "x", {"a": 3.0})
        assert 499_000 < raw.pttl(name) <= 500_001
        store.put(Security(ssm_id="x"))
        assert raw.pttl(name) == -1

    def test_patch_created_record_gets_its_expiry_with_the_write(self, store: Any, raw: redis.Redis) -> None:
        timed = type(store)(raw, namespace=store.namespace, lifetime=60)
        timed.batch_patch(Security, [{"ssm_id": f"s{i}", "a": 1.0} for i in range(20)])
        assert all(50_000 < raw.pttl(f"{store.namespace}:Security:r:s{i}") <= 60_001 for i in range(20))

    # Values Redis' Lua cmsgpack would turn into something else.
    LOSSY: ClassVar[dict[str, Any]] = {
        "one": 1.0,
        "neg_zero": -0.0,
        "above_2_53": 2**53 + 1,
        "big": 2**62 + 1,
        "int64_max": 2**63 - 1,
        "empty_map": {},
        "empty_list": [],
        "raw": b"\x00\xff",
        "nan": math.nan,
        "nested": {"a": [1, {"b": -0.0, "c": b""}], "d": {}},
    }

    def test_patch_leaves_every_other_attribute_as_it_was(self, store: Any, raw: redis.Redis) -> None:
        store.put(Security(ssm_id="x", a1=0.5, **self.LOSSY))
        name = f"{store.namespace}:Security:r:x"
        before = raw.hgetall(name) if isinstance(store, RedisHashStore) else None
        store.patch(Security, "x", {"a1": 9.99, "new_attr": 4.3})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", a1=9.99, new_attr=4.3, **self.LOSSY))
        if before is not None:  # the hash layout writes only the changed fields
            after = raw.hgetall(name)
            assert {k: v for k, v in after.items() if k not in (b"\xff", b"a1", b"new_attr")} == {
                k: v for k, v in before.items() if k not in (b"\xff", b"a1")
            }

    def test_listing_never_uses_keys(self, store: Any, raw: redis.Redis) -> None:
        def keys_calls() -> int:
            return int(raw.info("commandstats").get("cmdstat_keys", {}).get("calls", 0))

        before = keys_calls()
        store.batch_put([Security(ssm_id=i) for i in range(2500)])
        assert sorted(store.keys(Security)) == list(range(2500))
        assert store.count(Security) == 2500
        assert store.clear(Security) == 2500
        assert keys_calls() == before

    def test_a_delete_counts_a_key_named_twice_once(self, store: Any) -> None:
        # SCAN may name a key twice, and clear deletes what it names a page at a time: one script call.
        store.batch_put([Security(ssm_id=i) for i in range(3)])
        twice = encode_key((1,))
        assert store._remove(family_of(Security), [twice, encode_key((0,)), twice], store.clock() * 1000) == 2
        assert list(store.keys(Security)) == [2]

    def test_a_chunk_of_more_keys_than_lua_unpacks_is_deleted_whole(self, store: Any, raw: redis.Redis) -> None:
        # A delete drops its chunk's records and fill tokens together: 10,000 names, more than unpack takes.
        big = type(store)(raw, namespace=store.namespace, chunk_size=5000)
        big.batch_put([Security(ssm_id=i) for i in range(5000)])
        assert big.count(Security) == 5000
        assert big.batch_delete(Security, range(5001)) == 5000
        assert key_names(raw, store.namespace) == set()

    def test_batches_cost_a_round_trip_a_chunk(self, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        store = RedisMsgpackStore(redis_url, namespace=f"t{uuid.uuid4().hex[:12]}", chunk_size=500)
        store.put(Security(ssm_id="warm"))
        store.patch(Security, "warm", {"w": 1})  # the script loaded: a fresh server's NOSCRIPT is no round trip here
        sent: list[str] = []
        real = store._send

        def counting(commands: Any, **options: Any) -> list[Any]:
            sent.append(" ".join(sorted({str(c[0]) for c in commands})))
            return real(commands, **options)

        monkeypatch.setattr(store, "_send", counting)
        store.batch_put([Security(ssm_id=i, v=1.0) for i in range(2000)])
        assert sent == ["MSET"] * 4
        sent.clear()
        assert len([r for r in store.batch_get(Security, range(2000)) if r is not None]) == 2000
        assert sent == ["INFO MGET"] * 4  # and on the same connection, which server run answered
        sent.clear()
        store.batch_patch(Security, [{"ssm_id": i, "w": 2} for i in range(2000)])
        # A read and a guarded write a chunk (the writes overlap the next chunk's read).
        assert sorted(sent) == ["EVALSHA"] * 4 + ["INFO MGET"] * 4
        assert store.get(Security, 1999) == Security(ssm_id=1999, v=1.0, w=2)
        store.close()

    def test_foreign_values_are_serialization_errors(self, store: Any, raw: redis.Redis) -> None:
        name = f"{store.namespace}:Security:r:x"
        for foreign in (
            lambda: raw.set(name, b"not ours"),
            lambda: raw.hset(name, "f", "v"),
            lambda: raw.rpush(name, 1),
        ):
            raw.delete(name)
            foreign()
            with pytest.raises(SerializationError):
                store.get(Security, "x")
        raw.delete(name)
        raw.set(name, b"\x00" * 16 + b"\xc1")  # a header and bytes msgpack never writes
        if isinstance(store, RedisMsgpackStore):
            with pytest.raises(SerializationError):
                store.get(Security, "x")
        raw.delete(name)


class TestFamilyMark:
    """A family written into empty is marked, and its listing and deletes read no header (redis.lua: MARK).

    Every write that could put anything but a live record under the family's keys takes
    the mark away first, so `keys` and `batch_delete` stay exact: each test below fails
    if that write kept the mark.
    """

    @staticmethod
    def mark(store: Any, raw: redis.Redis) -> Any:
        return raw.get(f"{store.namespace}:Security:p")

    def test_a_marked_family_is_listed_and_deleted_without_a_header_read(self, store: Any, raw: redis.Redis) -> None:
        store.batch_put([Security(ssm_id=i, v=1.0) for i in range(300)])
        assert self.mark(store, raw) == b"1"
        raw.config_resetstat()
        assert sorted(store.keys(Security)) == list(range(300))
        assert store.batch_delete(Security, range(301)) == 300
        read = set(raw.info("commandstats")) & {"cmdstat_getrange", "cmdstat_hget", "cmdstat_get"}
        assert read == {"cmdstat_get"}  # the mark's, once a call: no record's header
        assert key_names(raw, store.namespace) == set()

    def test_a_chains_tombstone_takes_the_mark_away(self, store: Any, raw: redis.Redis) -> None:
        store.batch_put([Security(ssm_id=i) for i in range(3)])
        source = MemoryStore(namespace=store.namespace)
        source.batch_put([Security(ssm_id=i) for i in range(3)])
        ss.ChainedStore([type(store)(raw, namespace=store.namespace), source]).delete(Security, 0)
        assert raw.exists(f"{store.namespace}:Security:r:#0") == 1  # the tier's tombstone
        assert self.mark(store, raw) is None
        assert sorted(store.keys(Security)) == [1, 2]
        assert store.batch_delete(Security, [0, 1, 2]) == 2

    def test_a_chains_fill_takes_the_mark_away(self, store: Any, raw: redis.Redis) -> None:
        store.put(Security(ssm_id="a"))
        source = MemoryStore(namespace=store.namespace)
        source.put(Security(ssm_id="b"))
        assert ss.ChainedStore([type(store)(raw, namespace=store.namespace), source]).get(Security, "b") is not None
        assert raw.exists(f"{store.namespace}:Security:r:b") == 1  # filled: a copy of this server run only
        assert self.mark(store, raw) is None

    def test_a_record_that_expires_takes_the_mark_away(self, store: Any, raw: redis.Redis) -> None:
        now = [time.time()]
        timed = type(store)(raw, namespace=store.namespace, lifetime=60, clock=lambda: now[0])
        store.put(Security(ssm_id="a"))
        timed.put(Security(ssm_id="x"))
        assert self.mark(store, raw) is None
        now[0] += 120  # expired by the store's clock, still held by Redis
        assert list(timed.keys(Security)) == ["a"]
        assert timed.batch_delete(Security, ["a", "x"]) == 1

    def test_a_reset_to_records_that_expire_takes_the_mark_away(self, store: Any, raw: redis.Redis) -> None:
        now = [time.time()]
        timed = type(store)(raw, namespace=store.namespace, lifetime=60, clock=lambda: now[0])
        store.put(Security(ssm_id="a"))
        assert self.mark(store, raw) == b"1"
        assert timed.reset(Security, [Security(ssm_id="x")]) == 1
        assert self.mark(store, raw) is None
        now[0] += 120
        assert list(timed.keys(Security)) == []
        assert timed.batch_delete(Security, ["x"]) == 0

    def test_a_family_holding_a_tombstone_at_the_first_write_is_not_marked(self, store: Any, raw: redis.Redis) -> None:
        raw.set(f"{store.namespace}:Security:r:t", _header(1, None))  # as a cache tier leaves it
        store.put(Security(ssm_id="a"))
        assert self.mark(store, raw) is None
        assert list(store.keys(Security)) == ["a"]
        assert store.batch_delete(Security, ["a", "t"]) == 1

    def test_a_write_between_nonce_and_mark_keeps_the_family_unmarked(self, store: Any, raw: redis.Redis) -> None:
        raw.set(f"{store.namespace}:Security:p", "nonce")  # a store's, put before it scans the family
        type(store)(raw, namespace=store.namespace, lifetime=60).put(Security(ssm_id="x"))
        assert raw.eval(_SCRIPT, 0, *store._head(family_of(Security), "P", 0), "nonce", "1") == 0
        assert self.mark(store, raw) is None


class TestClients:
    def test_a_given_client_stays_open_a_url_client_is_closed(self, redis_url: str) -> None:
        client = redis.Redis.from_url(redis_url)
        with RedisMsgpackStore(client) as store:
            store.put(Security(ssm_id="x"))
        assert client.ping()
        built = RedisMsgpackStore(redis_url)
        pool = built._client.connection_pool  # type: ignore[union-attr]
        built.get(Security, "x")
        built.close()
        assert pool._created_connections == 0 or not pool._in_use_connections

    def test_decode_responses_is_refused(self, redis_url: str) -> None:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisMsgpackStore(redis.Redis.from_url(redis_url, decode_responses=True))

    def test_hiredis_parses_replies(self, store: Any) -> None:
        from redis.utils import HIREDIS_AVAILABLE

        assert HIREDIS_AVAILABLE

    def test_from_url(self, redis_url: str) -> None:
        namespace = f"t{uuid.uuid4().hex[:12]}"
        with ss.from_url(f"{redis_url}?layout=hash&namespace={namespace}&chunk_size=7") as store:
            assert type(store) is RedisHashStore
            assert (store.namespace, store.chunk_size) == (namespace, 7)
            store.put(Security(ssm_id="x", v=1.5))
        with ss.from_url(redis_url, namespace=namespace) as store:
            assert type(store) is RedisMsgpackStore
            assert store.get(Security, "x") == Security(ssm_id="x", v=1.5)  # the other layout's record, read
        with pytest.raises(StoreError, match="layout"):
            ss.from_url(f"{redis_url}?layout=json")

    def test_acl_user_and_password(self, redis_url: str, raw: redis.Redis) -> None:
        user = f"u{uuid.uuid4().hex[:8]}"
        raw.acl_setuser(user, enabled=True, passwords=["+s3cret-pw"], keys=["*"], commands=["+@all"])
        try:
            host = redis_url.removeprefix("redis://")
            with RedisMsgpackStore(f"redis://{user}:s3cret-pw@{host}") as store:
                store.put(Security(ssm_id="x"))
                assert store.get(Security, "x") is not None
            with pytest.raises(BackendUnavailableError) as info:
                RedisMsgpackStore(f"redis://{user}:wrong-pw@{host}", retries=0).get(Security, "x")
            assert "wrong-pw" not in str(info.value)
            assert "wrong-pw" not in repr(info.value)
        finally:
            raw.acl_deluser(user)

    def test_unreachable_server(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = RedisMsgpackStore(f"redis://127.0.0.1:{port}/0", timeout=0.2, connect_timeout=0.2, retries=1)
        with pytest.raises(BackendUnavailableError) as info:
            store.put(Security(ssm_id="x"))
        assert isinstance(info.value.__cause__, redis.RedisError)

    @pytest.mark.parametrize("retries", [0, 2])
    def test_a_server_that_never_answers_fails_within_the_bound(self, retries: int) -> None:
        """Connections are accepted (by the kernel's backlog) and never answered."""
        timeout = 0.3
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            store = RedisMsgpackStore(url, timeout=timeout, connect_timeout=timeout, retries=retries)
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                store.batch_put([Security(ssm_id=i) for i in range(5000)])
            took = time.monotonic() - started
        # (retries + 1) attempts of one timeout each, plus backoff of at most 0.5 s a retry.
        assert timeout * (retries + 1) * 0.9 <= took <= timeout * (retries + 1) + 0.5 * retries + 0.5


def test_fills_carry_this_server_runs_stamp_and_use_up_the_fill_tokens(store: Any, raw: redis.Redis) -> None:
    """A chunk of fills: each copy's header is stamped with the run (bytes 18 to 25), each token goes.

    The stamp is written in place on a string record, the tokens are deleted together at
    the end of the call: a watched fill of a token a fill took is refused.
    """
    family = family_of(Security)
    source = MemoryStore()
    source.batch_put([Security(ssm_id=i, v=float(i)) for i in range(5)])
    entries = [source._state.records[(family.name, encode_key((i,)))] for i in range(5)]
    tokens = store._watch(family, [e.key for e in entries], 60_000)
    store._fill(family, entries, time.time() * 1000)
    run = bytes.fromhex(raw.info("server")["run_id"][:16])
    for i in range(5):
        name = f"{store.namespace}:Security:r:#{i}"
        held = raw.get(name) if raw.type(name) == b"string" else raw.hget(name, b"\xff")
        assert held is not None
        assert held[17:25] == run
        assert raw.exists(store._token_key(family, entries[i].key)) == 0
    newer = [replace(e, version=e.version + 1, payload=entries[0].payload) for e in entries]
    store._fill_watched(family, newer, tokens, time.time() * 1000)
    assert [r["v"] for r in store.batch_get(Security, range(5))] == [0.0, 1.0, 2.0, 3.0, 4.0]


class TestWire:
    """The write path's own packing of ``MSET`` (`stockstore.backends._redis_wire`)."""

    @given(st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=10), st.integers(-(2**63), 2**63 - 1))))
    def test_a_command_is_packed_as_redis_py_packs_it(self, args: list[Any]) -> None:
        pieces = tuple(a for a in args if isinstance(a, bytes))
        command = ("MSET", *args, pieces)  # a value in pieces goes as their bytes joined
        expected = b"".join(redis.connection.PythonRespSerializer(6000, _utf8).pack(*_wire.joined(command)))
        assert _wire.pack([command, ("PING",)]) == expected + b"*1\r\n$4\r\nPING\r\n"

    def test_an_error_reply_takes_its_commands_place(self, raw: redis.Redis) -> None:
        name = f"t{uuid.uuid4().hex[:12]}"
        replies = _wire.send(raw, [("SET", name, (b"not ", b"a number")), ("INCR", name), ("GET", name)])
        assert replies[0] == b"OK"
        assert isinstance(replies[1], redis.ResponseError)
        assert replies[2] == b"not a number"
        raw.delete(name)

    def test_a_write_whose_reply_was_cut_is_sent_again_on_a_new_connection(self, redis_url: str) -> None:
        class CutOnce(FaultProxy):
            def _drop_all(self) -> None:
                super()._drop_all()
                self.forward()  # the next connection is relayed whole

        with CutOnce(int(redis_url.rsplit(":", 1)[1].split("/")[0])) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}/0"
            with RedisMsgpackStore(url, namespace=f"t{uuid.uuid4().hex[:12]}", retries=1, timeout=5) as store:
                store.put(Security(ssm_id="warm", v=1.0))
                proxy.cut_after(3)  # "+OK" of the MSET never arrives whole: the client retries (MSET twice is one)
                store.batch_put([Security(ssm_id=i, v=float(i)) for i in range(3000)])
                assert store.count(Security) == 3001
                assert store.get(Security, 2999) == Security(ssm_id=2999, v=2999.0)

    def test_a_single_connection_client_writes_through_its_own_connection(self, redis_url: str) -> None:
        client = redis.Redis.from_url(redis_url, single_connection_client=True)
        with RedisMsgpackStore(client, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
            store.batch_put([Security(ssm_id=i, v=float(i)) for i in range(1500)])
            assert store.get(Security, 1499) == Security(ssm_id=1499, v=1499.0)
        client.close()


def _utf8(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.mark.redis_cluster
class TestCluster:
    def test_alternate_key_families_live_in_one_slot_others_spread(self, redis_cluster_url: str) -> None:
        with RedisMsgpackStore(redis_cluster_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
            client = store._client
            assert isinstance(client, RedisCluster)
            store.batch_put([Security(ssm_id=i) for i in range(300)])
            store.batch_put([Listing(exchange="X", ticker=i, isin=f"I{i}") for i in range(50)])
            nodes = {
                client.get_node_from_key(k.decode()).name  # type: ignore[union-attr]
                for k in client.scan_iter(match=f"{store.namespace}:Security:*")
            }
            assert len(nodes) == 3
            slots = {client.keyslot(k) for k in client.scan_iter(match=f"{store.namespace}:{{Listing}}:*")}
            assert len(slots) == 1
            assert_same(store.count(Security), 300)
            assert store.get(Listing, {"isin": "I7"}) == Listing(exchange="X", ticker=7, isin="I7")

    def test_leases_are_taken_once_and_ended_on_every_master(self, redis_cluster_url: str) -> None:
        with RedisMsgpackStore(redis_cluster_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
            family, keys = family_of(Security), [encode_key((i,)) for i in range(300)]
            assert store._lease(family, keys, 60_000) == [True] * 300
            assert store._lease(family, [*keys[:10], encode_key((-1,))], 60_000) == [*[False] * 10, True]
            store._end_leases(family, keys)  # one DEL a key: they live on all three masters
            assert store._lease(family, keys, 60_000) == [True] * 300
            store._end_leases(family, [*keys, encode_key((-1,))])

    def test_commands_answered_moved_go_again_to_the_master_a_fresh_slot_table_names(
        self, redis_cluster_url: str
    ) -> None:
        with RedisMsgpackStore(redis_cluster_url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
            client: Any = store._client
            store.put(Security(ssm_id=-1))
            first = client.get_primaries()[0]
            cache = client.nodes_manager.slots_cache
            for slot in cache:
                cache[slot] = [first]  # as if every slot had moved to one master since the table was read
            store.batch_put([Security(ssm_id=i, v=1) for i in range(300)])
            assert [r["v"] if r else None for r in store.batch_get(Security, range(300))] == [1] * 300
            names = store._record_keys(family_of(Security), [encode_key((i,)) for i in range(300)])
            assert len({client.get_node_from_key(name).name for name in names}) == 3  # the table was read again


def test_the_namespace_user_of_the_conformance_suite_is_really_confined(redis_tls_url: str) -> None:
    """The ``TestRedis*TlsAcl`` stores of the conformance suite have teeth: outside its namespace, nothing."""
    from redis_servers import namespace_user_url

    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = RedisMsgpackStore(namespace_user_url(redis_tls_url, namespace), namespace=namespace)
    store.put(Security(ssm_id="x"))
    client = store._client
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("elsewhere:Security:r:x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.keys(f"{namespace}:*")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushdb()
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    store.close()


def test_copies_from_before_a_restart_are_never_served(sqlite_url: str) -> None:
    """A cache tier restarted from an old snapshot holds old copies: no chain may take them for current."""
    from redis_servers import RedisProcess

    server = RedisProcess()
    namespace = f"t{uuid.uuid4().hex[:12]}"
    try:

        def chain() -> ss.ChainedStore:
            return ss.ChainedStore(
                [RedisMsgpackStore(server.url, namespace=namespace), SqlStore(sqlite_url, namespace=namespace)]
            )

        writer = chain()
        writer.batch_put([Security(ssm_id=i, v=1) for i in range(50)])
        writer.batch_get(Security, range(50))  # every record cached in Redis
        redis.Redis(port=server.port).save()  # the snapshot: version 1 everywhere
        writer.batch_put([Security(ssm_id=i, v=2) for i in range(50)])
        assert [r["v"] for r in chain().batch_get(Security, range(50))] == [2] * 50  # type: ignore[index]
        server.kill()
        assert server.start()  # loads the snapshot: Redis holds version 1 again
        raw = redis.Redis(port=server.port)
        assert raw.exists(f"{namespace}:Security:r:#0") == 1
        with RedisMsgpackStore(server.url, namespace=namespace) as tier:
            assert tier.batch_get(Security, range(50)) == [None] * 50  # the old copies count as absent
        # A second process's chain (nothing of this process's state) and the writer's own both read 2.
        assert [r["v"] for r in chain().batch_get(Security, range(50))] == [2] * 50  # type: ignore[index]
        assert [r["v"] for r in writer.batch_get(Security, range(50))] == [2] * 50  # type: ignore[index]
        raw.close()
        writer.close()
    finally:
        server.close()
