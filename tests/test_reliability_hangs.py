"""Hung servers: every call fails within the configured timeout, never hangs (docs/reliability.md, 11).

A hung server keeps its connections open and answers nothing: redis-server and
memcached are stopped with SIGSTOP, PostgreSQL (shared, so never signalled) is reached
through a `FaultProxy` that stalls.  Each test runs the three call kinds at once, each
on a store of its own that has already connected: ``get``, ``batch_put`` of 5,000
records and ``patch``, with the store's default timeouts and with small explicit ones,
and publishes how long each took to fail.  For Redis (small timeouts) the same calls
also go through a chain whose source (SQLite) is fine: they must succeed, in bounded time.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from faults import Attempt, FaultProxy, publish
from memcached_servers import MemcachedProcess
from memcached_servers import memcached_processes as memcached_processes  # the fixture
from redis_servers import RedisProcess
from redis_servers import redis_process as redis_process  # the fixture

import stockstore as ss
from stockstore.backends import MemcacheStore, MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.errors import BackendUnavailableError

pytestmark = pytest.mark.slow


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


CALLS: dict[str, Callable[[ss.BaseStore], Any]] = {
    "get": lambda store: store.get(Security, "k0"),
    "batch_put_5000": lambda store: store.batch_put([Security(ssm_id=f"k{i}", v=i) for i in range(5000)]),
    "patch": lambda store: store.patch(Security, "k1", {"v": -1}),
}

# Explicit small timeouts, per backend; {} is the store's defaults.
SMALL = {
    "redis": {"timeout": 0.25, "connect_timeout": 0.25, "retries": 0},
    "memcached": {"timeout": 0.25, "connect_timeout": 0.25},
    "postgresql": {"timeout": 2.0, "transaction_timeout": 1.0},  # psycopg connects within 2 s at the least
}
DEFAULTS = {
    "redis": {"timeout": 2.0, "retries": 2},
    "memcached": {"timeout": 2.0},
    "postgresql": {"timeout": 10.0, "transaction_timeout": 30.0},
}


def bound(backend: str, options: dict[str, Any]) -> float:
    """The longest a call may take to fail against a hung server, by each store's own documentation.

    Redis: ``(retries + 1) * timeout`` plus at most 0.5 s of backoff a retry;
    memcached: one ``timeout``; SQL: ``transaction_timeout + timeout`` (the cut
    transaction, then a reconnect that times out), as docs/backends.md says.  Plus
    half a second of slack for a shared two-core machine (a second for SQL: two timers).
    """
    settings = {**DEFAULTS[backend], **options}
    if backend == "redis":
        return (settings["retries"] + 1) * settings["timeout"] + 0.5 * settings["retries"] + 0.5
    if backend == "postgresql":
        return float(settings["transaction_timeout"] + settings["timeout"]) + 1.0
    return float(settings["timeout"]) + 0.5


def _call(name: str, store: ss.BaseStore) -> Callable[[], Any]:
    kind = CALLS[name.removeprefix("chain:")]
    return lambda: kind(store)


def measure(
    stores: dict[str, ss.BaseStore], hang: Callable[[], None], unhang: Callable[[], None], limit: float
) -> dict[str, Any]:
    """Run every call kind at once against the hung server; each one's outcome and seconds.

    A call still running at *limit* is reported as hung; the server is then released
    (or the proxy closed) so that the call ends before the test does.
    """
    for store in stores.values():  # connected, tables made, scripts loaded: only the hang is new
        store.put(Security(ssm_id="k1", v=0))
        store.get(Security, "k0")
    # What earlier tests left on the heap is collected now rather than in a pause during the
    # calls (in one whole-suite run every call here came 0.6 s late, alone they never do).
    gc.collect()
    hang()
    attempts = {name: Attempt(_call(name, store), name) for name, store in stores.items()}
    started = time.monotonic()
    outcomes: dict[str, Any] = {}
    for name, attempt in attempts.items():
        finished = attempt.wait(max(0.0, started + limit - time.monotonic()))
        outcomes[name] = (attempt.error, attempt.seconds) if finished else ("hung", None)
    unhang()
    for attempt in attempts.values():
        attempt.wait(30)
    return outcomes


def judge(backend: str, setting: str, outcomes: dict[str, Any], limit: float) -> None:
    seconds = {name: None if s is None else round(s, 2) for name, (_, s) in outcomes.items()}
    errors = {n: "ok" if e is None else e if e == "hung" else type(e).__name__ for n, (e, _) in outcomes.items()}
    publish(
        "11-hung-server", backend=backend, timeouts=setting, bound_s=round(limit, 2), seconds=seconds, outcome=errors
    )
    direct = {n: o for n, o in outcomes.items() if not n.startswith("chain:")}
    hung = [n for n, (e, _) in direct.items() if e == "hung"]
    assert not hung, f"{backend} ({setting} timeouts): {hung} still running after {limit + 3:.1f} s: {seconds}"
    late = {n: seconds[n] for n, (_, s) in direct.items() if s is not None and s > limit}
    assert not late, f"{backend} ({setting} timeouts): calls took longer than the bound {limit:.2f} s: {late}"
    wrong = {n: errors[n] for n, (e, _) in direct.items() if not isinstance(e, BackendUnavailableError)}
    assert not wrong, f"{backend} ({setting} timeouts): expected BackendUnavailableError, got {wrong}"


@pytest.mark.redis
@pytest.mark.parametrize("setting", ["default", "small"])
def test_11_a_hung_redis_fails_every_call_within_its_timeout(
    setting: str, redis_process: RedisProcess, tmp_path: Path, namespace: str
) -> None:
    options = SMALL["redis"] if setting == "small" else {}
    limit = bound("redis", options)
    stores: dict[str, ss.BaseStore] = {
        n: RedisMsgpackStore(redis_process.url, namespace=namespace, **options) for n in CALLS
    }
    # The same calls through a chain whose source is fine: they succeed.  With the small timeouts
    # only: with the defaults a chain write waits twice the 7.5 s bound, too long for every run.
    for name in CALLS if setting == "small" else ():
        stores[f"chain:{name}"] = ss.ChainedStore(
            [
                MemoryStore(namespace=namespace),
                RedisMsgpackStore(redis_process.url, namespace=namespace, **options),
                SqlStore(f"sqlite:///{tmp_path / name}.db", namespace=namespace),
            ]
        )
    # A chain write meets the hung tier once for the write and once to invalidate (then leaves it alone).
    chain_limit = limit * 2
    waited = chain_limit if setting == "small" else limit
    outcomes = measure(stores, redis_process.pause, redis_process.resume, waited + 3)
    try:
        judge("redis", setting, outcomes, limit)
        chained = {n: o for n, o in outcomes.items() if n.startswith("chain:")}
        slow = {n: s for n, (e, s) in chained.items() if e is not None or s is None or s > chain_limit}
        assert not slow, f"chain over a hung Redis tier: calls failed or took over {chain_limit:.1f} s: {chained}"
    finally:
        for store in stores.values():
            store.close()


@pytest.mark.memcached
@pytest.mark.parametrize("setting", ["default", "small"])
def test_11_a_hung_memcached_fails_every_call_within_its_timeout(
    setting: str, memcached_processes: list[MemcachedProcess], namespace: str
) -> None:
    server = memcached_processes[0]
    options = SMALL["memcached"] if setting == "small" else {}
    limit = bound("memcached", options)
    stores: dict[str, ss.BaseStore] = {n: MemcacheStore([server.server], namespace=namespace, **options) for n in CALLS}
    outcomes = measure(stores, server.pause, server.resume, limit + 3)
    try:
        judge("memcached", setting, outcomes, limit)
    finally:
        for store in stores.values():
            store.close()


@pytest.fixture
def stalling_postgresql(postgresql_url: str) -> Iterator[tuple[str, FaultProxy]]:
    """The session's PostgreSQL database behind a proxy of this test's own."""
    url = sa.make_url(postgresql_url)
    with FaultProxy(url.port or 5432) as proxy:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy


@pytest.mark.postgresql
@pytest.mark.parametrize("setting", ["default", "small"])
def test_11_a_hung_postgresql_fails_every_call_within_its_timeout(
    setting: str, stalling_postgresql: tuple[str, FaultProxy], namespace: str
) -> None:
    url, proxy = stalling_postgresql
    options = SMALL["postgresql"] if setting == "small" else {}
    limit = bound("postgresql", options)
    stores: dict[str, ss.BaseStore] = {n: SqlStore(url, namespace=namespace, **options) for n in CALLS}
    outcomes = measure(stores, proxy.stall, proxy.close, limit + 3)
    try:
        judge("postgresql", setting, outcomes, limit)
    finally:
        for store in stores.values():
            store.close()
