"""put_frame / get_frame throughput, Redis memory per record and peak RSS: the figures of docs/frames.md.

    .venv/bin/python benchmarks/frames.py                     # 100,000 x 200 float64 on each store
    .venv/bin/python benchmarks/frames.py --peak 500000       # peak RSS of put_frame and of batch_put

Stores: `RedisMsgpackStore` on ``--redis`` (a fresh namespace, cleared afterwards),
`SqlStore` on a temporary SQLite file, and ``ChainedStore([MemoryStore(),
RedisMsgpackStore, SqlStore])``.  Every frame read back is checked bit for bit.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

import stockstore as ss
from stockstore._keys import encode_key, family_of
from stockstore._store import SCHEMAS
from stockstore.backends import MemoryStore, RedisMsgpackStore, SqlStore


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[str]] = ["ssm_id"]


def make_frame(n: int, attrs: int, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).standard_normal((n, attrs))
    frame = pd.DataFrame(values, columns=[f"a{i}" for i in range(attrs)])
    frame.index = pd.Index([f"S{i:08d}" for i in range(n)], name="ssm_id")
    return frame


def timed(what: str, n: int, call: Callable[[], Any]) -> Any:
    gc.collect()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    print(f"  {what:<22} {n / seconds:>10,.0f} records/s  ({seconds:.2f} s)")
    return result


def check(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.loc[want.index, list(want.columns)]
    same = np.array_equal(got.to_numpy().view("<u8"), want.to_numpy().view("<u8"))
    if not same or list(got.index) != list(want.index):
        raise SystemExit("a frame read back differs from the frame written")


@contextmanager
def stores(redis_url: str) -> Iterator[list[tuple[str, ss.BaseStore]]]:
    made: list[ss.BaseStore] = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqlStore(f"sqlite:///{Path(tmp) / 'frames.db'}")
        chain_sqlite = SqlStore(f"sqlite:///{Path(tmp) / 'chain.db'}")
        redis = RedisMsgpackStore(redis_url, namespace=f"bench-{uuid.uuid4().hex[:12]}")
        chain_redis = RedisMsgpackStore(redis_url, namespace=f"bench-{uuid.uuid4().hex[:12]}")
        chain = ss.ChainedStore([MemoryStore(), chain_redis, chain_sqlite])
        made = [redis, sqlite, chain]
        try:
            yield [("RedisMsgpackStore", redis), ("SqlStore (SQLite)", sqlite), ("ChainedStore", chain)]
        finally:
            for store in (redis, chain_redis):
                store.clear(Security)
                store.clear(SCHEMAS.root)
            for store in made:
                store.close()


def redis_bytes_per_record(store: RedisMsgpackStore, frame: pd.DataFrame, sample: int = 200) -> tuple[float, float]:
    """``MEMORY USAGE`` of a sample of records, and the mean length of their Redis key names."""
    keys = [encode_key((k,)) for k in frame.index[:: max(1, len(frame) // sample)]]
    names = store._record_keys(family_of(Security), keys)
    usage = [store._client.memory_usage(name, samples=0) for name in names]
    return float(np.mean([u for u in usage if u is not None])), float(np.mean([len(n) for n in names]))


def measure(store: ss.BaseStore, frame: pd.DataFrame) -> None:
    n, keys = len(frame), list(frame.index)
    timed("put_frame", n, lambda: store.put_frame(Security, frame))
    check(timed("get_frame()", n, lambda: store.get_frame(Security)), frame)
    check(timed("get_frame(keys)", n, lambda: store.get_frame(Security, keys=keys)), frame)
    if isinstance(store, RedisMsgpackStore):
        per_record, key_length = redis_bytes_per_record(store, frame)
        raw = 8 * len(frame.columns) + key_length
        print(f"  Redis MEMORY USAGE     {per_record:>10,.0f} bytes/record  ({per_record / raw:.2f}x values + key)")


def throughput(n: int, attrs: int, redis_url: str) -> None:
    frame = make_frame(n, attrs)
    print(f"{n:,} records x {attrs} float64 ({frame.to_numpy().nbytes / 1e6:,.0f} MB of values)")
    with stores(redis_url) as named:
        for name, store in named:
            print(name)
            measure(store, frame)


def _kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def _peak_of(what: str, n: int, size: int, call: Callable[[], Any]) -> None:
    """Peak resident memory of the process during *call*, next to the *size* of its input."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) starts again from here
    before = _kib("VmRSS")
    timed(what, n, call)
    peak = _kib("VmHWM")
    print(f"  input                  {size / 2**20:>8,.0f} MiB")
    print(f"  RSS before             {before / 2**10:>8,.0f} MiB")
    print(f"  peak RSS during        {peak / 2**10:>8,.0f} MiB  ({peak * 1024 / size:.2f}x the input)")
    print(f"  growth over the input  {(peak - before) / 2**10:>8,.0f} MiB")


def peak_rss(n: int, attrs: int, redis_url: str) -> None:
    """Peak resident memory of one put_frame, then of one batch_put of the same rows as records."""
    frame = make_frame(n, attrs)
    store = RedisMsgpackStore(redis_url, namespace=f"bench-{uuid.uuid4().hex[:12]}")
    try:
        print(f"{n:,} x {attrs} float64, put_frame of a DataFrame (index included)")
        size = int(frame.memory_usage(index=True, deep=True).sum())
        _peak_of("put_frame", n, size, functools.partial(store.put_frame, Security, frame))
        store.clear(Security)
        records = [Security(ssm_id=key, **row) for key, row in zip(frame.index, frame.to_dict("records"), strict=True)]
        del frame  # not counted in the peak of batch_put
        one = records[0]
        each = sys.getsizeof(one) + sum(sys.getsizeof(v) for v in one.values())
        size = sys.getsizeof(records) + len(records) * each  # sys.getsizeof, as stockstore bench --compare
        print(f"{n:,} x {attrs} float64, batch_put of Record objects (sys.getsizeof estimate)")
        _peak_of("batch_put", n, size, functools.partial(store.batch_put, records))
    finally:
        store.clear(Security)
        store.clear(SCHEMAS.root)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="records (default 100,000)")
    parser.add_argument("--attrs", type=int, default=200, help="float64 attributes per record (default 200)")
    parser.add_argument("--redis", default=os.environ.get("STOCKSTORE_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--peak", type=int, metavar="N", help="measure peak RSS of a put_frame and a batch_put of N records instead"
    )
    args = parser.parse_args()
    if args.peak:
        peak_rss(args.peak, args.attrs, args.redis)
    else:
        throughput(args.n, args.attrs, args.redis)


if __name__ == "__main__":
    main()
