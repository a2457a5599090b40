"""Cold start: many readers missing the same keys at once (docs/reliability.md, 13).

The source of truth is a `SqlStore` subclass that counts the keys it is asked to
read.  Within one process, threads missing the same keys at once must cause one
source read per key (single flight); across processes, the chains' leases in their
shared Redis tier must keep the load near one read per key too.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from faults import publish

import stockstore as ss
from stockstore._entry import Stored
from stockstore._keys import Family, encode_key, family_of
from stockstore.backends import MemoryStore, RedisMsgpackStore, SqlStore

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# Scaled down from 20 processes x 100,000 keys to fit a two-core machine and the time budget.
PROCESSES, PROCESS_KEYS = 20, 5_000
THREADS, THREAD_KEYS = 8, 10_000


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class CountingSqlStore(SqlStore):
    """The source of truth, counting the keys it is asked to read; *delay* makes each read slow."""

    def __init__(self, *args: Any, delay: float = 0.0, **options: Any) -> None:
        super().__init__(*args, **options)
        self.delay = delay
        self.keys_read = self.reads = 0
        self._count_lock = threading.Lock()

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        with self._count_lock:
            self.keys_read += len(keys)
            self.reads += 1
        if self.delay:
            time.sleep(self.delay)  # every reader that starts meanwhile misses too
        return super()._read(family, keys, now_ms)


def _chain(
    redis_url: str, source_url: str, namespace: str, delay: float = 0.0, lease_for: float = 5.0
) -> ss.ChainedStore:
    return ss.ChainedStore(
        [
            MemoryStore(namespace=namespace),
            RedisMsgpackStore(redis_url, namespace=namespace),
            CountingSqlStore(source_url, namespace=namespace, delay=delay),
        ],
        lease_for=lease_for,
    )


def _seed(source_url: str, namespace: str, keys: int) -> None:
    with SqlStore(source_url, namespace=namespace) as source:  # at the source only: every cache is cold
        source.batch_put([Security(ssm_id=i, v=float(i)) for i in range(keys)])


def _cold_reader(redis_url: str, source_url: str, namespace: str, start: Any, results: Any) -> None:
    """One process: connect, wait for the others, read every key once; report the source's load."""
    with _chain(redis_url, source_url, namespace) as chain:
        chain.get(Security, -1)  # connected (and the table found) before the start line
        source = chain.tiers[-1]
        assert isinstance(source, CountingSqlStore)
        source.keys_read = source.reads = 0
        start.wait()
        started = time.monotonic()
        got = chain.batch_get(Security, range(PROCESS_KEYS))
        right = sum(1 for i, r in enumerate(got) if r is not None and r["v"] == float(i))
        results.put((source.keys_read, right, time.monotonic() - started))


def test_13_processes_missing_the_same_keys_at_once(redis_url: str, tmp_path: Path, namespace: str) -> None:
    """Scenario 13, across processes: leases in the shared Redis keep the source's load near 1x (20x without)."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    _seed(source_url, namespace, PROCESS_KEYS)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES, timeout=120)
    results = context.Queue()
    readers = [
        context.Process(target=_cold_reader, args=(redis_url, source_url, namespace, start, results))
        for _ in range(PROCESSES)
    ]
    for reader in readers:
        reader.start()
    try:
        outcomes = [results.get(timeout=180) for _ in readers]
    finally:
        for reader in readers:
            reader.join(30)
            if reader.is_alive():
                reader.kill()
    source_reads = sum(o[0] for o in outcomes)
    publish(
        "13-cold-start-processes", processes=PROCESSES, keys=PROCESS_KEYS, source_key_reads=source_reads,
        load_factor=round(source_reads / PROCESS_KEYS, 2), slowest_reader_s=round(max(o[2] for o in outcomes), 2),
    )  # fmt: skip
    assert [w.exitcode for w in readers] == [0] * PROCESSES
    assert [o[1] for o in outcomes] == [PROCESS_KEYS] * PROCESSES, "a reader got wrong or missing records"
    # 1x when every leaseholder fills within lease_for; a holder slower than that is read around.
    assert source_reads <= 2 * PROCESS_KEYS, f"the source was read {source_reads / PROCESS_KEYS:.1f}x"


@pytest.mark.parametrize(("keys", "call"), [(THREAD_KEYS, "batch_get"), (1, "get")])
def test_13_threads_missing_the_same_keys_cause_one_source_read_each(
    keys: int, call: str, redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Scenario 13, within a process: THREADS threads missing the same keys at once -> one source read per key."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    _seed(source_url, namespace, keys)
    chain = _chain(redis_url, source_url, namespace, delay=0.3)
    chain.get(Security, -1)
    source = chain.tiers[-1]
    assert isinstance(source, CountingSqlStore)
    source.keys_read = source.reads = 0
    start = threading.Barrier(THREADS, timeout=30)
    right: list[int] = []

    def read() -> None:
        start.wait()
        got = chain.batch_get(Security, range(keys)) if call == "batch_get" else [chain.get(Security, 0)]
        right.append(sum(1 for i, r in enumerate(got) if r is not None and r["v"] == float(i)))

    threads = [threading.Thread(target=read, name=f"reader-{n}") for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    publish(
        "13-cold-start-threads", threads=THREADS, keys=keys, call=call, source_key_reads=source.keys_read,
        source_calls=source.reads,
    )  # fmt: skip
    assert right == [keys] * THREADS, "a thread got wrong or missing records"
    assert source.keys_read == keys, (
        f"{THREADS} threads missing the same {keys} key(s) at once read {source.keys_read} keys from the source "
        f"of truth ({source.reads} reads), not {keys}"
    )
    chain.close()


@pytest.mark.parametrize("lease_for", [5.0, 0.0], ids=["leases", "no-leases"])
def test_13_two_chains_missing_the_same_keys_read_each_from_the_source_once(
    lease_for: float, redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """Two chains (two processes' views: no single flight between them) miss the same keys at once.

    With leases in their shared Redis tier, one chain reads each key from the source and
    the other waits for its fill; without (``lease_for=0``) each reads every key.
    """
    keys = 1000
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    _seed(source_url, namespace, keys)
    chains = [_chain(redis_url, source_url, namespace, delay=0.3, lease_for=lease_for) for _ in range(2)]
    sources = []
    for chain in chains:
        chain.get(Security, -1)
        source = chain.tiers[-1]
        assert isinstance(source, CountingSqlStore)
        source.keys_read = source.reads = 0
        sources.append(source)
    start = threading.Barrier(len(chains), timeout=30)
    right: dict[int, int] = {}

    def read(n: int) -> None:
        start.wait()
        got = chains[n].batch_get(Security, range(keys))
        right[n] = sum(1 for i, r in enumerate(got) if r is not None and r["v"] == float(i))

    threads = [threading.Thread(target=read, args=(n,), name=f"chain-{n}") for n in range(len(chains))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    source_reads = sum(s.keys_read for s in sources)
    publish("13-cold-start-two-chains", lease_for=lease_for, keys=keys, source_key_reads=source_reads)
    assert right == {0: keys, 1: keys}, "a chain got wrong or missing records"
    assert source_reads == (keys if lease_for else 2 * keys)
    for chain in chains:
        chain.close()


def test_13_a_lease_nobody_ends_delays_a_read_by_lease_for_at_most(
    redis_url: str, tmp_path: Path, namespace: str
) -> None:
    """A process that dies holding leases: the others read the source themselves once ``lease_for`` is over."""
    keys = 10
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    _seed(source_url, namespace, keys)
    chain = _chain(redis_url, source_url, namespace, lease_for=0.5)
    chain.get(Security, -1)
    chain.tiers[1]._lease(family_of(Security), [encode_key((i,)) for i in range(keys)], 60_000)  # never ended
    source = chain.tiers[-1]
    assert isinstance(source, CountingSqlStore)
    source.keys_read = 0
    started = time.monotonic()
    got = chain.batch_get(Security, range(keys))
    took = time.monotonic() - started
    assert [r["v"] if r is not None else None for r in got] == [float(i) for i in range(keys)]
    assert 0.5 <= took < 2.0, f"the read took {took:.2f} s, not lease_for (0.5 s) and a little"
    assert source.keys_read == keys
    chain.close()
