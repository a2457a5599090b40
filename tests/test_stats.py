"""`store.stats()`: counters checked against the calls made, per tier in a chain, thread-safe; spans when traced."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import stockstore as ss
from stockstore import _stats
from stockstore.backends import MemoryStore, SqlStore


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def counters(stats: dict[str, Any]) -> dict[str, int]:
    return {name: stats[name] for name in _stats.COUNTERS}


def test_a_store_counts_what_it_was_asked() -> None:
    store = MemoryStore()
    store.batch_put([Security(ssm_id=f"S{i}", a=1.0) for i in range(10)])
    store.batch_get(Security, [f"S{i}" for i in range(12)])
    store.get(Security, "missing")
    store.patch(Security, "S1", {"a": 2.0})
    store.batch_patch(Security, [{"ssm_id": "S2", "a": 3.0}, {"ssm_id": "S3", "a": 4.0}])
    assert store.batch_delete(Security, ["S4", "S5", "missing"]) == 2
    stats = store.stats()
    assert stats["store"] == repr(store)
    assert counters(stats) == {
        "hits": 10,
        "misses": 3,
        "writes": 13,
        "deletes": 2,
        "fills": 0,
        "invalidations": 0,
        "errors": 0,
    }
    latency = stats["latency_ms"]
    assert {op: figures["calls"] for op, figures in latency.items()} == {"delete": 1, "patch": 2, "read": 2, "write": 1}
    for figures in latency.values():
        assert 0 <= figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]


def test_a_call_that_raises_counts_as_an_error() -> None:
    store = MemoryStore()
    store.put(Security(ssm_id="A", name="x"))
    with pytest.raises(ss.errors.SerializationError):
        store.incr(Security, "A", "name", 1)
    stats = store.stats()
    assert stats["errors"] == 1
    assert stats["writes"] == 1  # the put; the refused increment wrote nothing


def test_a_chain_counts_each_tiers_hits_misses_fills_and_invalidations() -> None:
    source = SqlStore("sqlite://")
    cache = MemoryStore()
    chain = ss.ChainedStore([cache, source])
    chain.batch_put([Security(ssm_id=f"S{i}", a=1.0) for i in range(5)])  # written to the source, filled above
    cold = MemoryStore()
    other = ss.ChainedStore([cold, source])
    other.batch_get(Security, ["S0", "S1", "S9"])  # cold misses all 3; the source has 2, filled into cold
    other.batch_get(Security, ["S0", "S1"])  # now cold hits both
    chain.delete(Security, "S0")  # the source deletes, the cache is invalidated
    mine = chain.stats()
    assert counters(mine["tiers"][0]) == {
        "hits": 0,
        "misses": 0,
        "writes": 0,
        "deletes": 0,
        "fills": 5,
        "invalidations": 1,
        "errors": 0,
    }
    theirs = other.stats()
    assert counters(theirs)["hits"] == 4
    assert counters(theirs)["misses"] == 1
    assert counters(theirs["tiers"][0]) == {
        "hits": 2,
        "misses": 3,
        "writes": 0,
        "deletes": 0,
        "fills": 2,
        "invalidations": 0,
        "errors": 0,
    }
    # One SqlStore under both chains: its counters hold what both asked of it.
    assert counters(source.stats()) == {
        "hits": 2,
        "misses": 1,
        "writes": 5,
        "deletes": 1,
        "fills": 0,
        "invalidations": 0,
        "errors": 0,
    }
    assert [t["store"] for t in mine["tiers"]] == [repr(cache), repr(source)]
    assert source.stats()["latency_ms"]["read"]["calls"] == 1


@pytest.mark.redis
def test_a_failed_tier_is_counted_once_in_its_stats_and_in_tier_failures() -> None:
    redis_store = ss.backends.RedisMsgpackStore("redis://127.0.0.1:1/0", timeout=0.2, connect_timeout=0.2, retries=0)
    chain = ss.ChainedStore([redis_store, MemoryStore()], retries=0)
    chain.put(Security(ssm_id="A", a=1.0))  # the source takes it; the Redis tier fails its fill
    assert chain.get(Security, "A") == Security(ssm_id="A", a=1.0)
    assert redis_store.stats()["errors"] == sum(chain.tier_failures) >= 1


def test_counters_lose_nothing_under_threads() -> None:
    store = MemoryStore()
    store.put(Security(ssm_id="A", a=1.0))

    def work() -> None:
        for _ in range(500):
            store.batch_get(Security, ["A", "B"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = store.stats()
    assert (stats["hits"], stats["misses"]) == (4000, 4000)
    assert stats["latency_ms"]["read"]["calls"] == 4000


@pytest.fixture
def spans() -> Iterator[Any]:
    """Spans exported in memory while a test runs (opentelemetry-sdk), the tracer looked for afresh."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _stats._tracer = provider.get_tracer("stockstore")
    yield exporter
    _stats._tracer = None  # looked for afresh by the next timed call; the global provider was never set


def test_each_timed_call_is_a_span_when_opentelemetry_is_there(spans: Any) -> None:
    store = MemoryStore(namespace="traced")
    store.put(Security(ssm_id="A", a=1.0))
    store.get(Security, "A")
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["stockstore.write", "stockstore.read"]
    assert finished[1].attributes["stockstore.store"] == "MemoryStore"
    assert finished[1].attributes["stockstore.namespace"] == "traced"


def test_without_opentelemetry_nothing_is_imported_and_calls_work() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if it were not installed
        "import stockstore as ss\n"
        "from stockstore import _stats\n"
        "class S(ss.Record):\n"
        "    __stockstore_keys__ = ['k']\n"
        "s = ss.backends.MemoryStore(); s.put(S(k='a')); s.get(S, 'a')\n"
        "assert _stats._tracer is False, _stats._tracer\n"
        "assert s.stats()['hits'] == 1\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
