"""Tiers that never lie, second round: the defects independent probes found (issue 10), on real servers.

Each test is one item of docs/reliability.md's second table, numbered as there, and
fails on the code before its fix.  Items held by the shipped conformance kit for every
backend (epoch expiries, lifetime range, lifetimes checked before a batch writes) are
in `stockstore.testing`; the Redis and SQL ones of their own are in tests/test_redis.py
and tests/test_sql.py.  `publish` prints what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from faults import publish

import stockstore as ss
from stockstore.backends import MemoryStore, RedisMsgpackStore, SqlStore
from stockstore.errors import StoreError
from stockstore.testing import FakeClock, assert_record


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'source.db'}"


# ---------------------------------------------------------------------------- 4. a patch renews the source's lifetime


def test_4_a_patch_through_a_chain_renews_the_source_lifetime(tmp_path: Path, clock: FakeClock) -> None:
    """[Memory(0.5 s), Sql(lifetime=2 s)]: put at t0, patch at t0+1.5 s, get at t0+2.5 s finds the patched record."""
    source = SqlStore(sqlite_url(tmp_path), lifetime=2.0, clock=clock)
    chain = ss.ChainedStore([MemoryStore(lifetime=0.5, clock=clock), source], clock=clock)
    chain.batch_put([Security(ssm_id=f"S{i}", v=0) for i in range(100)])
    clock.tick(1.5)
    chain.batch_patch(Security, [{"ssm_id": f"S{i}", "v": 1} for i in range(100)])
    clock.tick(1.0)
    got = chain.batch_get(Security, [f"S{i}" for i in range(100)])
    kept = sum(1 for r in got if r is not None)
    alone = SqlStore(sqlite_url(tmp_path), lifetime=2.0, clock=clock)
    publish("r2-4-patch-renews-lifetime", kept_through_chain=kept, of=100)
    assert kept == 100, f"{100 - kept} patched records expired with their put's lifetime"
    assert_record(got[7], Security(ssm_id="S7", v=1))
    assert_record(alone.get(Security, "S7"), Security(ssm_id="S7", v=1))
    clock.tick(1.1)  # the patch's own lifetime (2 s) is over
    assert chain.get(Security, "S7") is None
    chain.close()
    alone.close()


# ---------------------------------------------------------------------------- 5. tier lifetimes checked first


@pytest.mark.redis
def test_5_a_cache_tier_lifetime_that_fails_fails_the_write_before_the_source(
    redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    def hour_but_not_s3333(obj: Any) -> float:
        if obj["ssm_id"] == "S3333" and obj["v"] == 2:
            raise ValueError("no lifetime for S3333 at v2")
        return 3600.0

    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    cache = RedisMsgpackStore(redis_url, namespace=namespace, lifetime=hour_but_not_s3333, clock=clock)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    keys = [f"S{i:04d}" for i in range(5000)]
    chain.batch_put([Security(ssm_id=k, v=1) for k in keys])
    with pytest.raises(StoreError, match="S3333") as failed:  # several chunks: before, 2,000 were written
        chain.batch_put([Security(ssm_id=k, v=2) for k in keys])
    # Nothing was written anywhere: the source and every tier still hold v1, all alike.
    at_source = [r["v"] for r in source.batch_get(Security, keys)]
    cached = [r["v"] if r else None for r in cache.batch_get(Security, keys)]
    through = [r["v"] for r in chain.batch_get(Security, keys)]
    publish(
        "r2-5-tier-lifetime-fails",
        error=type(failed.value).__name__,
        source_changed=sum(v != 1 for v in at_source),
        cache_differs_from_source=sum(c != s for c, s in zip(cached, at_source, strict=True)),
    )
    assert at_source == [1] * 5000
    assert cached == [1] * 5000
    assert through == [1] * 5000
    chain.close()
    cache.close()
    source.close()


@pytest.mark.redis
def test_5_a_read_never_fails_because_a_fill_could_not_be_made(
    redis_url: str, tmp_path: Path, namespace: str, clock: FakeClock
) -> None:
    def failing(obj: Any) -> float:
        raise ValueError("this tier's lifetime always fails")

    source = SqlStore(sqlite_url(tmp_path), namespace=namespace, clock=clock)
    source.batch_put([Security(ssm_id=f"S{i}", v=i) for i in range(200)])
    cache = RedisMsgpackStore(redis_url, namespace=namespace, lifetime=failing, clock=clock)
    chain = ss.ChainedStore([MemoryStore(namespace=namespace, clock=clock), cache, source], clock=clock)
    got = chain.batch_get(Security, [f"S{i}" for i in range(200)])
    assert [r["v"] if r else None for r in got] == list(range(200))
    assert chain.tier_failures[1] >= 1, "the fill that could not be made is counted"
    assert cache.batch_get(Security, ["S0", "S199"]) == [None, None]
    assert_record(chain.get(Security, "S5"), Security(ssm_id="S5", v=5))  # the memory tier was filled
    publish("r2-5-read-with-failing-fill", read=len([r for r in got if r]), tier_failures=chain.tier_failures)
    chain.close()
    cache.close()
    source.close()
