"""MemcacheStore on real memcached servers: what the conformance suite cannot show.

The conformance suite certifies the real store with its documented gaps declared
(``lists_keys = False``, ``counts_cleared = False``: tests/test_conformance.py); here
its gaps, limits and failure modes are checked on their own: keys/count raise, clear
by generation, hostile and huge keys, the item size limit, 30-day expiry and a dead
node (tests/test_two_processes.py has two processes patching at once).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from memcached_servers import MemcachedProcess
from pymemcache.client.base import Client

import stockstore as ss
from stockstore._keys import family_of
from stockstore.backends import MemcacheStore
from stockstore.errors import BackendUnavailableError, BatchError, SerializationError, UnsupportedOperationError

pytestmark = pytest.mark.memcached


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


@pytest.fixture
def store(memcached_server: str) -> Iterator[MemcacheStore]:
    with MemcacheStore([memcached_server], namespace=f"t{uuid.uuid4().hex}") as store:
        yield store


def test_keys_and_count_are_unsupported(store: MemcacheStore) -> None:
    store.put(Security(ssm_id="a"))
    with pytest.raises(UnsupportedOperationError):
        list(store.keys(Security))
    with pytest.raises(UnsupportedOperationError):
        store.count(Security)


def test_clear_drops_the_family_and_returns_zero(memcached_server: str, store: MemcacheStore) -> None:
    store.batch_put([Security(ssm_id=i) for i in range(20)] + [Listing(exchange="X", ticker="T", isin="I")])
    with MemcacheStore([memcached_server], namespace=store.namespace + "-other") as other:
        other.put(Security(ssm_id=1))
        assert store.clear(Security) == 0  # memcached cannot count what it dropped (documented)
        assert store.batch_get(Security, range(20)) == [None] * 20
        assert store.get(Listing, {"isin": "I"}) is not None
        assert other.get(Security, 1) is not None
    store.put(Security(ssm_id=3, v=1))
    assert store.get(Security, 3) == Security(ssm_id=3, v=1)


def test_an_evicted_generation_never_brings_old_records_back(memcached_server: str, store: MemcacheStore) -> None:
    store.put(Security(ssm_id="old"))
    store.clear(Security)
    raw = Client(memcached_server, default_noreply=False)
    gen_key = store._item_key("gen", "Security")
    before = int(raw.get(gen_key))
    store.put(Security(ssm_id="kept", v=1))
    assert raw.delete(gen_key) is True  # as if memcached had evicted it
    assert store.get(Security, "kept") is None  # lost from the cache, as evicted data is
    assert store.get(Security, "old") is None
    assert int(raw.get(gen_key)) > before
    raw.close()


def test_every_server_keeps_the_generation_and_the_largest_wins(memcached_two_servers: list[str]) -> None:
    """A server that was away comes back holding an older generation (and the items under it): never read."""
    raws = [Client(server, default_noreply=False) for server in memcached_two_servers]
    with MemcacheStore(memcached_two_servers, namespace=f"t{uuid.uuid4().hex}") as store:
        store.batch_put([Security(ssm_id=i, v=1) for i in range(40)])
        gen_key = store._item_key("gen", "Security")
        first = [int(raw.get(gen_key)) for raw in raws]
        assert first[0] == first[1]
        behind = raws[1]
        store._move_on(family_of(Security))  # what a failed invalidation does
        assert behind.set(gen_key, str(first[1]).encode()) is True  # as if that server had been away meanwhile
        assert store.batch_get(Security, range(40)) == [None] * 40  # the items of before are dropped on both
        assert int(behind.get(gen_key)) == first[0] + 1  # and the server left behind is brought up
        assert behind.delete(gen_key) is True  # lost (a restart, an eviction): filled in from the other
        assert store.get(Security, 0) is None
        assert int(behind.get(gen_key)) == first[0] + 1
    for raw in raws:
        raw.close()


HOSTILE = ["", " ", "a b", "a\nb", "\r\n", "\x00", "a\x00b", "é", "😀", "ü" * 300, "x" * 250, "x" * 251, 1, "1"]


def test_hostile_and_huge_keys_never_collide(store: MemcacheStore) -> None:
    # The record holds its key, so half a megabyte is about the longest key that fits an item.
    keys: list[Any] = [*HOSTILE, "k" * (512 * 1024), "k" * (512 * 1024 - 1) + "l"]
    store.batch_put([Security(ssm_id=k, n=i) for i, k in enumerate(keys)])
    got = store.batch_get(Security, keys)
    assert [g["n"] if g is not None else None for g in got] == list(range(len(keys)))
    assert all(
        g is not None and g["ssm_id"] == k and type(g["ssm_id"]) is type(k) for g, k in zip(got, keys, strict=True)
    )


def test_hostile_alternate_keys(store: MemcacheStore) -> None:
    store.batch_put([Listing(exchange="X", ticker=str(i), isin=k) for i, k in enumerate(HOSTILE) if type(k) is str])
    for i, k in enumerate(HOSTILE):
        if type(k) is str:
            assert store.get(Listing, {"isin": k}) == Listing(exchange="X", ticker=str(i), isin=k)


def test_too_large_value_is_a_clear_error_and_writes_nothing(store: MemcacheStore) -> None:
    store.put(Security(ssm_id="big", v=1))
    with pytest.raises(SerializationError, match=r"'big'.*item limit"):
        store.put(Security(ssm_id="big", blob=b"x" * (2 * 1024 * 1024)))
    with pytest.raises(SerializationError, match="'huge'"):
        store.batch_put([Security(ssm_id="small"), Security(ssm_id="huge", blob=b"x" * (2 * 1024 * 1024))])
    with pytest.raises(SerializationError, match="'big'"):
        store.patch(Security, "big", {"blob": b"x" * (2 * 1024 * 1024)})
    assert store.get(Security, "big") == Security(ssm_id="big", v=1)
    assert store.get(Security, "small") is None


def test_just_under_the_limit_is_stored(store: MemcacheStore) -> None:
    store.put(Security(ssm_id="fits", blob=b"x" * (1000 * 1000)))
    got = store.get(Security, "fits")
    assert got is not None
    assert got["blob"] == b"x" * (1000 * 1000)


@pytest.mark.parametrize("days", [29, 31, 90, 365 * 20, 365 * 50])
def test_lifetimes_beyond_thirty_days_are_kept(memcached_server: str, days: int) -> None:
    """memcached reads an expiry over 30 days as a unix time; the store converts it."""
    with MemcacheStore([memcached_server], namespace=f"t{uuid.uuid4().hex}", lifetime=days * 86400) as store:
        store.put(Security(ssm_id="x"))
        time.sleep(1.1)  # a relative expiry misread as a unix time in 1970 would be gone by now
        assert store.get(Security, "x") == Security(ssm_id="x")


def test_expiry_is_exact_to_the_millisecond(memcached_server: str) -> None:
    now = [time.time()]
    with MemcacheStore([memcached_server], namespace=f"t{uuid.uuid4().hex}", lifetime=5, clock=lambda: now[0]) as s:
        s.put(Security(ssm_id="x"))
        now[0] += 4.999
        assert s.get(Security, "x") is not None
        now[0] += 0.002
        assert s.get(Security, "x") is None


def test_from_url_owns_its_client_and_a_given_client_stays_open(memcached_server: str) -> None:
    store = ss.from_url(f"memcache://{memcached_server}", namespace=f"t{uuid.uuid4().hex}")
    assert isinstance(store, MemcacheStore)
    store.put(Security(ssm_id="u"))
    assert store.get(Security, "u") == Security(ssm_id="u")
    store.close()
    client = Client(memcached_server, default_noreply=False)
    with MemcacheStore(client, namespace=f"t{uuid.uuid4().hex}") as given:
        given.put(Security(ssm_id="c"))
    assert client.set("still-open", b"1") is True
    client.close()


@pytest.mark.parametrize("url", ["memcache://", "memcache://h:port", "memcache://h:1/path", "memcache://h:1?x=1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ss.errors.StoreError):
        MemcacheStore(url)


def test_unreachable_server_is_backend_unavailable() -> None:
    store = MemcacheStore(["127.0.0.1:1"], timeout=0.5, connect_timeout=0.5)
    with pytest.raises(BackendUnavailableError) as info:
        store.put(Security(ssm_id="x"))
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(BackendUnavailableError):
        store.get(Security, "x")


def test_a_dead_node_makes_writes_and_reads_raise() -> None:
    """pymemcache's HashClient would answer False/"miss" for a dead node; the store raises instead."""
    nodes = [MemcachedProcess(), MemcachedProcess()]
    try:
        store = MemcacheStore([n.server for n in nodes], namespace="dead-node", timeout=1, connect_timeout=1)
        keys = list(range(40))
        store.batch_put([Security(ssm_id=k, v=0) for k in keys])
        nodes[1].stop()
        for attempt in range(3):  # every call, not only the first after the failure
            with pytest.raises((BackendUnavailableError, BatchError)):
                store.batch_put([Security(ssm_id=k, v=attempt + 1) for k in keys])
            with pytest.raises((BackendUnavailableError, BatchError)):
                store.batch_patch(Security, [{"ssm_id": k, "w": attempt} for k in keys])
            with pytest.raises(BackendUnavailableError):
                store.batch_get(Security, keys)
        store.close()
    finally:
        for n in nodes:
            n.stop()


def test_two_servers_share_the_records(memcached_two_servers: list[str]) -> None:
    namespace = f"t{uuid.uuid4().hex}"
    with MemcacheStore(memcached_two_servers, namespace=namespace) as store:
        store.batch_put([Security(ssm_id=i) for i in range(200)])
        per_node = []
        for server in memcached_two_servers:
            raw = Client(server, default_noreply=False)
            per_node.append(int(raw.stats()[b"curr_items"]))
            raw.close()
        assert all(n > 20 for n in per_node)  # both nodes hold a share
        assert store.batch_get(Security, range(200)) == [Security(ssm_id=i) for i in range(200)]
