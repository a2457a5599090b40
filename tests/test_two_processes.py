"""Processes patching different attributes of the same records at once lose nothing.

Each process builds its own store from URLs (``ss.from_url``, chained top to bottom
when there are several), so this is the cross-process guarantee of API.md's
``patch`` ("concurrent patches of different attributes never lose each other"),
which in-process locks cannot fake.  A backend joins with one entry in ``STORES``:
the name of a fixture that yields its URLs.  `test_a_naive_patch_loses_updates` shows
the test has teeth: the same load through a get-then-put patch loses changes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

import stockstore as ss
from stockstore.testing import assert_record

pytestmark = pytest.mark.slow

STORES = [
    pytest.param("sqlite_url", id="sqlite"),
    pytest.param("postgresql_url", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql_url", id="mysql", marks=pytest.mark.mysql),
    pytest.param("redis_url", id="redis-msgpack", marks=pytest.mark.redis),
    pytest.param("redis_hash_url", id="redis-hash", marks=pytest.mark.redis),
    pytest.param("redis_cluster_url", id="redis-msgpack-cluster", marks=pytest.mark.redis_cluster),
    pytest.param("memcache_url", id="memcache-2servers", marks=pytest.mark.memcached),
    pytest.param("memory_redis_sqlite", id="chain-memory-redis-sqlite", marks=pytest.mark.redis),
    pytest.param("memory_memcache_postgresql", id="chain-memory-memcache-postgresql", marks=pytest.mark.memcached),
]

PROCESSES, RECORDS, ROUNDS = 4, 50, 20
ATTRIBUTES = [f"p{n}" for n in range(PROCESSES)]


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def _open(urls: Sequence[str], namespace: str) -> ss.BaseStore:
    tiers = [ss.from_url(url, namespace=namespace) for url in urls]
    return tiers[0] if len(tiers) == 1 else ss.ChainedStore(tiers)


def _patch(store: ss.BaseStore, attribute: str, r: int) -> None:
    store.batch_patch(Security, [{"ssm_id": i, attribute: r} for i in range(RECORDS)])
    store.patch(Security, r % RECORDS, {f"{attribute}_single": r})


def _naive_patch(store: ss.BaseStore, attribute: str, r: int) -> None:
    """What `patch` must not be: read the records, change them here, put them back."""
    current = store.batch_get(Security, range(RECORDS))
    store.batch_put([Security({**(c or {"ssm_id": i}), attribute: r}) for i, c in enumerate(current)])


def _worker(urls: Sequence[str], namespace: str, attribute: str, start: Any, naive: bool) -> None:
    """One process's share: every round, patch *attribute* of every record (and one record alone)."""
    with _open(urls, namespace) as store:
        store.get(Security, 0)  # connected and ready before the start line
        start.wait()
        for r in range(ROUNDS):
            (_naive_patch if naive else _patch)(store, attribute, r)


def _run_all(workers: Sequence[Any]) -> None:
    """Start the worker processes, wait for them (bounded), and require each to have succeeded."""
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)
    assert [w.exitcode for w in workers] == [0] * len(workers)


def _race(urls: Sequence[str], *, naive: bool = False) -> list[Security | None]:
    """Run PROCESSES workers at once on fresh records; what the store holds afterwards."""
    namespace = f"t{uuid.uuid4().hex}"
    with _open(urls, namespace) as store:
        store.batch_put([Security(ssm_id=i, keep=1.0) for i in range(RECORDS)])
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(PROCESSES, timeout=120)  # all patch at the same time, not one after another
        _run_all(
            [
                context.Process(target=_worker, args=(list(urls), namespace, attribute, start, naive))
                for attribute in ATTRIBUTES
            ]
        )
    # A fresh store: this process's own memory tier still holds what it put (the documented
    # limit of in-process tiers); every shared tier must already hold the final records.
    with _open(urls, namespace) as fresh:
        return fresh.batch_get(Security, range(RECORDS))


@pytest.fixture
def redis_hash_url(redis_url: str) -> str:
    return f"{redis_url}?layout=hash"


@pytest.fixture
def memcache_url(memcached_two_servers: list[str]) -> str:
    return "memcache://" + ",".join(memcached_two_servers)


@pytest.fixture
def memory_redis_sqlite(redis_url: str, sqlite_url: str) -> list[str]:
    return ["memory://?lifetime=5", redis_url, sqlite_url]


@pytest.fixture
def memory_memcache_postgresql(memcache_url: str, postgresql_url: str) -> list[str]:
    return ["memory://?lifetime=5", memcache_url, postgresql_url]


@pytest.fixture(params=STORES)
def urls(request: pytest.FixtureRequest) -> list[str]:
    value = request.getfixturevalue(request.param)
    return [value] if isinstance(value, str) else list(value)


def test_processes_patching_different_attributes_lose_nothing(urls: list[str]) -> None:
    for i, got in enumerate(_race(urls)):
        want = Security(ssm_id=i, keep=1.0, **{a: ROUNDS - 1 for a in ATTRIBUTES})
        if i < ROUNDS:
            want.update({f"{a}_single": i for a in ATTRIBUTES})
        assert_record(got, want)


@pytest.mark.parametrize("fixture", ["sqlite_url", pytest.param("redis_url", marks=pytest.mark.redis)])
def test_a_naive_patch_loses_updates(fixture: str, request: pytest.FixtureRequest) -> None:
    def complete(record: Security | None) -> bool:
        return record is not None and all(record.get(a) == ROUNDS - 1 for a in ATTRIBUTES)

    got = _race([request.getfixturevalue(fixture)], naive=True)
    assert not all(map(complete, got)), "a get-then-put patch lost nothing: the race above has no teeth"


# ---------------------------------------------------------------------------- incr


class Counter(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["name"]


INCREMENTS = 1000


def _incr_worker(urls: Sequence[str], namespace: str, start: Any) -> None:
    with _open(urls, namespace) as store:
        store.get(Counter, "hits")
        start.wait()
        for _ in range(INCREMENTS):
            store.incr(Counter, "hits", "n", 1)


def test_processes_incrementing_one_counter_lose_nothing(urls: list[str]) -> None:
    namespace = f"t{uuid.uuid4().hex}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES, timeout=120)
    _run_all([context.Process(target=_incr_worker, args=(list(urls), namespace, start)) for _ in range(PROCESSES)])
    with _open(urls, namespace) as fresh:
        assert_record(fresh.get(Counter, "hits"), Counter(name="hits", n=PROCESSES * INCREMENTS))


# ---------------------------------------------------------------------------- reset

# Stores whose every tier is shared between processes: an in-process tier of a reader
# may serve the old records until its lifetime ends (the documented limit of chains).
RESET_STORES = [
    *(p for p in STORES if p.id in ("sqlite", "postgresql", "mysql") or p.id.startswith("redis-")),
    pytest.param("redis_sqlite", id="chain-redis-sqlite", marks=pytest.mark.redis),
]


class Listed(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["gen"]


DATASETS = {"A": 600, "B": 400}  # two sizes: every count tells which one a reader saw
SWITCHES = 60  # at most: the switching stops once the readers have seen both datasets


def _dataset(gen: str) -> list[Listed]:
    return [Listed(ssm_id=f"{gen}{i:04d}", gen=gen, x=float(i)) for i in range(DATASETS[gen])]


def _resetter(urls: Sequence[str], namespace: str, start: Any, enough: Any, done: Any) -> None:
    """Switch between the datasets until the readers have seen both, ending on A (an even number of switches)."""
    with _open(urls, namespace) as store:
        start.wait()
        for n in range(SWITCHES):
            store.reset(Listed, _dataset("B" if n % 2 == 0 else "A"))
            if n % 2 and enough.is_set():
                break
    done.set()


def _reader(urls: Sequence[str], namespace: str, start: Any, done: Any, seen: Any) -> None:
    """Read every way while the datasets switch; each read must be all of one dataset."""
    sample = [f"A{i:04d}" for i in range(0, 600, 60)] + [f"B{i:04d}" for i in range(0, 400, 40)]
    with _open(urls, namespace) as store:
        start.wait()
        while not done.is_set():
            keys = sorted(store.keys(Listed))
            assert keys in ([r["ssm_id"] for r in _dataset("A")], [r["ssm_id"] for r in _dataset("B")]), keys[:3]
            assert store.count(Listed) in DATASETS.values()
            for gen, size in DATASETS.items():  # each query whole: none, or all of its dataset
                assert store.find(Listed, gen=gen).count() in (0, size)
                assert len(list(store.find(Listed, gen=gen))) in (0, size)
            got = store.batch_get(Listed, sample)
            held = {key[0] for key, record in zip(sample, got, strict=True) if record is not None}
            assert len(held) == 1, held
            seen.put(keys[0][0])


@pytest.fixture
def redis_sqlite(redis_url: str, sqlite_url: str) -> list[str]:
    return [redis_url, sqlite_url]


@pytest.mark.parametrize("fixture", RESET_STORES)
def test_readers_in_another_process_see_old_or_new_never_a_mix(fixture: str, request: pytest.FixtureRequest) -> None:
    value = request.getfixturevalue(fixture)
    urls = [value] if isinstance(value, str) else list(value)
    namespace = f"t{uuid.uuid4().hex}"
    with _open(urls, namespace) as store:
        assert store.reset(Listed, _dataset("A")) == DATASETS["A"]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3, timeout=120)
    enough, done, seen = context.Event(), context.Event(), context.Queue()
    workers = [
        context.Process(target=_resetter, args=(urls, namespace, start, enough, done)),
        *(context.Process(target=_reader, args=(urls, namespace, start, done, seen)) for _ in range(2)),
    ]
    for w in workers:
        w.start()
    gens = set()
    while any(w.is_alive() for w in workers) or not seen.empty():
        with contextlib.suppress(queue.Empty):
            gens.add(seen.get(timeout=0.1))
        if gens == {"A", "B"}:
            enough.set()
    for w in workers:
        w.join(240)
    assert [w.exitcode for w in workers] == [0] * 3
    assert gens == {"A", "B"}, "the readers never saw a switch: the race has no teeth"
    with _open(urls, namespace) as fresh:
        assert sorted(fresh.keys(Listed)) == [r["ssm_id"] for r in _dataset("A")]  # an even number of switches
