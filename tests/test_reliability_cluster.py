"""Redis Cluster nodes lost under load (docs/reliability.md, 8 and 12).

Each test starts a cluster of its own (the session's cluster is shared by other
tests; these kill its nodes): 3 masters for a partial batch against a cluster that
has lost one master (8), 3 masters and 3 replicas for a failover (12).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import redis.cluster
from faults import Attempt, publish
from redis_servers import RedisCluster, RedisProcess

import stockstore as ss
from stockstore._codec import decode_record
from stockstore._keys import encode_key, family_of
from stockstore.backends import MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.backends.redis import _HEADER
from stockstore.errors import BackendUnavailableError, BatchError, StoreError

pytestmark = [pytest.mark.redis_cluster, pytest.mark.slow]


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def node_of(store: RedisMsgpackStore, cluster: RedisCluster, key: int) -> RedisProcess:
    """The cluster node serving *key*'s record."""
    name = store._record_keys(family_of(Security), [encode_key((key,))])[0]
    port = store._client.get_node_from_key(name).port  # type: ignore[union-attr]
    return next(n for n in cluster.nodes if n.port == port)


def gen_of(record: Any) -> int | None:
    return None if record is None else int(record["gen"])


# ---------------------------------------------------------------------------- 8. a cluster node down


@pytest.fixture
def three_masters() -> Iterator[RedisCluster]:
    # Without full coverage the live masters go on serving their slots when one is gone.
    cluster = RedisCluster(masters=3, args=("--cluster-require-full-coverage", "no"))
    try:
        yield cluster
    finally:
        cluster.close()


def raw_gens(client: redis.cluster.RedisCluster, namespace: str, keys: list[int]) -> dict[int, int | None]:
    """The generation each record holds on the cluster, read with plain ``GET`` s (not through stockstore).

    Names follow docs/backends.md's key layout; a value is a header and the codec's bytes.
    """
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("GET", f"{namespace}:Security:r:#{key}")
    out: dict[int, int | None] = {}
    for key, value in zip(keys, pipe.execute(), strict=True):
        payload = None if value is None else value[_HEADER.size :]
        out[key] = int(decode_record(payload)[1]["gen"]) if payload else None
    return out


def test_8_a_batch_against_a_cluster_missing_a_master_fails_what_it_may_not_have_applied(
    three_masters: RedisCluster, namespace: str
) -> None:
    """Scenario 8: the source of truth is a cluster one master of which is dead (no replica).

    Every key on the dead node must be in ``BatchError.failed``; every key left out
    must be applied; read through the chain, every key on a live master returns what
    the source holds (the new value or the old one, never the cached old one over a
    new one), and can be read at all: the live masters go on serving their slots;
    also by a store made while the master is down.
    """
    records = 3000
    options: dict[str, Any] = {"namespace": namespace, "timeout": 0.5, "connect_timeout": 0.5, "retries": 0}
    source = RedisMsgpackStore(three_masters.url, **options)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace), source])
    chain.batch_put([Security(ssm_id=i, gen=1) for i in range(records)])
    assert [gen_of(r) for r in chain.batch_get(Security, range(records))] == [1] * records
    # The client's default node: a store made while it is down must still work (see the end).
    default_port = source._client.get_default_node().port  # type: ignore[union-attr]
    dead = next(n for n in three_masters.nodes if n.port == default_port)
    on_dead = {i for i in range(records) if node_of(source, three_masters, i) is dead}
    alive = [i for i in range(records) if i not in on_dead]
    witness = next(n for n in three_masters.nodes if n is not dead)
    dead.kill()

    attempt = Attempt(lambda: chain.batch_put([Security(ssm_id=i, gen=2) for i in range(records)]), "batch")
    assert attempt.wait(60), "batch_put against a cluster with a dead master did not return in 60 s"
    error = attempt.error
    assert isinstance(error, BatchError | BackendUnavailableError), f"expected a BatchError, got {error!r}"
    failed = set(error.failed) if isinstance(error, BatchError) else set(range(records))

    with redis.cluster.RedisCluster(host="127.0.0.1", port=witness.port) as client:
        truth = raw_gens(client, namespace, alive)
    reads: dict[str, int] = {"as_source": 0, "differs": 0, "error": 0}
    errors: list[str] = []
    for i in alive[::10]:  # one in ten, one call each: a failing key fails alone
        try:
            got = gen_of(chain.get(Security, i))
        except StoreError as exc:
            reads["error"] += 1
            errors.append(str(exc))
            continue
        reads["as_source" if got == truth[i] else "differs"] += 1
    dead_reads: dict[str, int] = {"old": 0, "new": 0, "unavailable": 0}
    for i in sorted(on_dead)[:100]:
        try:
            dead_reads["new" if gen_of(chain.get(Security, i)) == 2 else "old"] += 1
        except StoreError:
            dead_reads["unavailable"] += 1
    figures = {
        "records": records, "on_dead_node": len(on_dead), "error": type(error).__name__, "failed": len(failed),
        "failed_but_applied": sum(1 for i in failed if truth.get(i) == 2),
        "acknowledged_not_applied": sum(1 for i in alive if i not in failed and truth[i] != 2),
        "live_master_keys_read_through_chain": reads, "dead_master_keys_read_through_chain": dead_reads,
    }  # fmt: skip
    publish("8-partial-batch-cluster-node-down", **figures)
    assert on_dead <= failed, f"{len(on_dead - failed)} keys of the dead master are missing from BatchError.failed"
    assert figures["acknowledged_not_applied"] == 0, "keys left out of BatchError.failed were not applied"
    assert reads["differs"] == 0, (
        f"{reads['differs']} keys read through the chain differ from the source of truth: the cache kept the old "
        "value of a key whose write reached the source"
    )
    assert dead_reads["new"] == 0, "a key of the dead master read back as the new value, which it never got"
    assert reads["error"] == 0, (
        f"{reads['error']} of {len(alive[::10])} reads of keys on live masters failed: {errors[0]}"
    )
    # Another process starting now: a store made while the master is down serves the others' keys.
    with RedisMsgpackStore(three_masters.url, **options) as fresh:
        assert [gen_of(r) for r in fresh.batch_get(Security, alive[:50])] == [truth[i] for i in alive[:50]]
        with pytest.raises(BackendUnavailableError):
            fresh.get(Security, min(on_dead))
    chain.close()


def test_11_a_hung_cluster_master_fails_only_its_keys_within_the_timeout(
    three_masters: RedisCluster, namespace: str
) -> None:
    """Scenario 11 on a cluster: one master stopped with SIGSTOP (connections open, no answers).

    Every call returns within a few timeouts (one per *chunk_size* commands for that
    master, and one for reading the slot table again); a batch fails exactly the keys
    of the hung master, and keys on the others are written and read as usual.
    """
    records, timeout = 2000, 0.5
    options: dict[str, Any] = {"namespace": namespace, "timeout": timeout, "connect_timeout": timeout, "retries": 0}
    store = RedisMsgpackStore(three_masters.url, **options)
    store.batch_put([Security(ssm_id=i, gen=1) for i in range(records)])
    hung = node_of(store, three_masters, 0)
    on_hung = {i for i in range(records) if node_of(store, three_masters, i) is hung}
    live_key = next(i for i in range(records) if i not in on_hung)
    calls: dict[str, Callable[[], Any]] = {
        "batch_put_2000": lambda: store.batch_put([Security(ssm_id=i, gen=2) for i in range(records)]),
        "get_live_master": lambda: store.get(Security, live_key),
        "get_hung_master": lambda: store.get(Security, 0),
        "batch_get_2000": lambda: store.batch_get(Security, range(records)),
        "patch_hung_master": lambda: store.patch(Security, 0, {"gen": 3}),
    }
    hung.pause()
    try:
        attempts = {}
        for name, call in calls.items():  # one after the other: each pays its own timeouts
            attempts[name] = attempt = Attempt(call, name)
            assert attempt.wait(60), f"{name} against a hung cluster master did not return in 60 s"
    finally:
        hung.resume()
    outcomes = {
        name: {"seconds": round(a.seconds or 0, 2), "error": type(a.error).__name__} for name, a in attempts.items()
    }
    publish("11-hung-cluster-master", records=records, on_hung_master=len(on_hung), timeout=timeout, calls=outcomes)
    limit = 6 * timeout
    slow = {name: o["seconds"] for name, o in outcomes.items() if o["seconds"] > limit}
    assert not slow, f"calls took longer than {limit} s against a hung master: {slow}"
    error = attempts["batch_put_2000"].error
    assert isinstance(error, BatchError), f"expected a BatchError, got {error!r}"
    assert set(error.failed) == on_hung, "BatchError.failed is not exactly the keys of the hung master"
    assert attempts["get_live_master"].error is None
    assert gen_of(attempts["get_live_master"].result) == 2, "a key of a live master was not written"
    for name in ("get_hung_master", "batch_get_2000", "patch_hung_master"):
        assert isinstance(attempts[name].error, BackendUnavailableError), f"{name}: {attempts[name].error!r}"
    store.close()


# ---------------------------------------------------------------------------- 12. failover


@pytest.fixture
def cluster_with_replicas() -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters=3, replicas=1, args=("--cluster-node-timeout", "1000"))
    try:
        yield cluster
    finally:
        cluster.close()


class Writer:
    """Writes generation after generation of *keys* through *store* until stopped; records what was acknowledged."""

    def __init__(self, store: ss.BaseStore, keys: range) -> None:
        self.store, self.keys = store, keys
        self.acked: dict[int, int] = {}
        self.attempted = self.acknowledged = self.rounds_failed = 0
        self.ack_times: list[float] = []  # when each round acknowledged in full returned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        for gen in range(1, 100_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            self.attempted += len(self.keys)
            try:
                self.store.batch_put([Security(ssm_id=i, gen=gen) for i in self.keys])
                failed: set[int] = set()
            except BatchError as exc:
                failed = set(exc.failed)
            except StoreError:
                failed = set(self.keys)
            if failed:
                self.rounds_failed += 1
            done = [i for i in self.keys if i not in failed]
            self.acked.update((i, gen) for i in done)
            self.acknowledged += len(done)
            if not failed:
                self.ack_times.append(time.monotonic())
            time.sleep(0.01)

    def first_ack_after(self, moment: float) -> float | None:
        """Seconds from *moment* to the first round acknowledged in full after it."""
        later = [t for t in self.ack_times if t > moment]
        return round(later[0] - moment, 2) if later else None


def test_12_a_master_killed_and_its_replica_promoted_service_resumes(
    cluster_with_replicas: RedisCluster, tmp_path: Path, namespace: str
) -> None:
    """Scenario 12: SIGKILL a master while writes run; the cluster fails over; measure what was lost.

    Redis replicates asynchronously: a write the master acknowledged just before it died
    may never have reached the replica that replaces it.  Direct writes to the cluster
    can be lost that way (published, not asserted: Redis does not promise otherwise).
    Through a chain over SQL, the cluster is a cache: nothing older than acknowledged
    may be read back, by the writing chain or a fresh one.
    """
    cluster = cluster_with_replicas
    options: dict[str, Any] = {"namespace": namespace, "timeout": 0.5, "connect_timeout": 0.5, "retries": 1}
    direct = RedisMsgpackStore(cluster.url, **options)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"

    def open_chain() -> ss.ChainedStore:
        tiers = [MemoryStore(namespace=namespace, lifetime=0.5), RedisMsgpackStore(cluster.url, **options)]
        return ss.ChainedStore([*tiers, SqlStore(source_url, namespace=namespace)])

    chain = open_chain()
    writers = {"direct": Writer(direct, range(0, 300)), "chain": Writer(chain, range(1000, 1300))}
    for w in writers.values():
        w.start()
    time.sleep(1.5)
    victim = node_of(direct, cluster, 0)
    killed_at = time.monotonic()
    victim.kill()
    cluster.wait_failover(victim)  # the replica is promoted
    failover = time.monotonic() - killed_at
    time.sleep(1.5)
    for w in writers.values():
        w.stop()

    keys = list(writers["direct"].keys)
    held = [gen_of(r) for r in direct.batch_get(Security, keys)]
    acked = writers["direct"].acked
    lost = [k for k, h in zip(keys, held, strict=True) if k in acked and (h is None or h < acked[k])]
    time.sleep(0.6)  # past the chain's memory lifetime
    chain_keys = list(writers["chain"].keys)
    chain_acked = writers["chain"].acked

    def stale_through(store: ss.BaseStore) -> int:
        got = [gen_of(r) for r in store.batch_get(Security, chain_keys)]
        return sum(
            1 for k, g in zip(chain_keys, got, strict=True) if k in chain_acked and (g is None or g < chain_acked[k])
        )

    writer_stale = stale_through(chain)
    with open_chain() as fresh:
        fresh_stale = stale_through(fresh)
        fresh.put(Security(ssm_id="after", gen=1))
        resumed = gen_of(fresh.get(Security, "after")) == 1 and gen_of(direct.get(Security, "after")) == 1
    publish(
        "12-cluster-failover", failover_seconds=round(failover, 2),
        writes={n: {"attempted": w.attempted, "acknowledged": w.acknowledged, "failed_rounds": w.rounds_failed,
                    "first_ack_after_kill_s": w.first_ack_after(killed_at)} for n, w in writers.items()},
        direct_lost_or_old=len(lost), direct_lost_keys=lost[:10], chain_stale_writer=writer_stale,
        chain_stale_fresh=fresh_stale,
    )  # fmt: skip
    assert all(w.first_ack_after(killed_at) is not None for w in writers.values()), "writes never resumed"
    assert resumed, "a chain over the cluster does not work after the failover"
    assert writer_stale == 0, f"the writing chain read {writer_stale} records older than acknowledged after failover"
    assert fresh_stale == 0, f"a fresh chain read {fresh_stale} records older than acknowledged after failover"
    chain.close()
    direct.close()
