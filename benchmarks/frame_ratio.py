"""`RedisMsgpackStore.put_frame` and `get_frame()` of everything next to baseline (c), alone, at any size.

    .venv/bin/python benchmarks/frame_ratio.py --n 500000 --repeat 3 --redis redis://127.0.0.1:6379/0

The comparison (`compare.py`) runs every step of every contender, too long at
500,000 records, where the `get_frame()` target is set.  This runs only the two
frame steps of `RedisMsgpackStore` and of baseline (c) (`comparison.baselines.Mset`:
``MSET`` of each row's float64 bytes, ``SCAN`` + ``MGET`` + ``np.frombuffer``), in
one process over one frame of N x ATTRS random float64, the contenders' order
alternating between repeats.  Every frame read back is checked bit for bit (untimed).
It prints each run's seconds and the ratios store / baseline: per run and of the medians.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import redis
from comparison.baselines import Mset
from comparison.contenders import MSGPACK_STORE, Contender, StoreContender
from comparison.runner import _Frame

from stockstore import BaseStore
from stockstore.backends import RedisMsgpackStore

STEPS = ("put_frame", "get_frame()")


def make_frame(n: int, attrs: int, seed: int) -> _Frame:
    """N x ATTRS standard normal float64 (with the runner's check), index ``ssm_id``: made directly, no records.

    The DataFrame is built as `comparison.runner._Frame.of` builds it, from a copy of
    the values, so that pandas lays its columns out as in the comparison (and as a
    user's frame made from an array is): a column's values contiguous.
    """
    values = np.random.default_rng(seed).standard_normal((n, attrs))
    ids = [f"S{i:09d}" for i in range(n)]
    names = [f"a{j}" for j in range(attrs)]
    frame = pd.DataFrame(values.copy(), index=pd.Index(ids, name="ssm_id"), columns=names)
    return _Frame(ids, names, values, frame)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def run_once(who: Contender, frame: _Frame) -> tuple[float, float]:
    """Seconds of the contender's ``store_frame`` and ``get_frame``; the frame read is checked, then deleted."""
    who.open()
    try:
        put, _ = timed(lambda: who.store_frame(frame.frame))
        get, got = timed(who.get_frame)
        problem = frame.difference(got)
        del got
        if problem is not None:
            raise SystemExit(f"{who.name}: the frame read back differs: {problem}")
    finally:
        if isinstance(who, Mset):
            who.delete(frame.ids)
        who.close()
    return put, get


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="records (rows of the frame)")
    parser.add_argument("--attrs", type=int, default=200, help="float64 columns")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender, interleaved")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args(argv)

    def build(namespace: str) -> BaseStore:
        return RedisMsgpackStore(options.redis, namespace=namespace, timeout=60.0)  # as compare.py builds it

    client = redis.Redis.from_url(options.redis)
    frame = make_frame(options.n, options.attrs, options.seed)
    field: list[Contender] = [Mset(client), StoreContender(MSGPACK_STORE, build, redis=client)]
    seconds: dict[str, list[tuple[float, float]]] = {who.name: [] for who in field}
    try:
        for run in range(options.repeat):
            for who in field if run % 2 == 0 else field[::-1]:
                seconds[who.name].append(run_once(who, frame))
                put, get = seconds[who.name][-1]
                print(f"run {run + 1}  {who.name:<18} put_frame {put:8.3f} s   get_frame() {get:8.3f} s", flush=True)
    finally:
        client.close()
    base, mine = seconds[field[0].name], seconds[field[1].name]
    print(f"\n{options.n:,} x {options.attrs} float64, {options.repeat} run(s)", end="; ")
    print(f"ratio = {MSGPACK_STORE} / {field[0].name}")
    for i, step in enumerate(STEPS):
        runs = ", ".join(f"{m[i] / b[i]:.2f}" for b, m in zip(base, mine, strict=True))
        median = statistics.median(m[i] for m in mine) / statistics.median(b[i] for b in base)
        print(f"  {step:<12} median {median:.2f}x   per run: {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
