"""The codec alone, per wide record: check and encode, then decode, next to msgpack's packb/unpackb.

One record of 200 float attributes and a str key, in three shapes: the key first, the
key last, and 5% of the floats missing at random (a new shape every record). Prints
microseconds per record (best of --repeat timeit runs) and the encoded size. No server:
this is the Python work a batch_put or batch_get does per record before any I/O.

    .venv/bin/python benchmarks/codec.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import itertools
import random
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import msgpack

from stockstore import _codec


def _encode(tag: str, attrs: dict[str, Any], packer: msgpack.Packer) -> bytes:
    """What batch_put does with one record: the check, then the row record (or plain msgpack)."""
    wide = _codec.check_wide(tag, attrs)
    if wide is None:
        return _codec.pack((tag, attrs))
    return _codec.encode_wide(attrs, wide, packer, wide[0].target())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20_000, help="records per timeit run")
    parser.add_argument("--repeat", type=int, default=5, help="timeit runs; the best is printed")
    args = parser.parse_args()
    rng = random.Random(1)
    names = [f"attribute_{i:03d}" for i in range(200)]
    sparse = [
        {"ssm_id": "US0378331005", **{n: rng.random() for n in names if rng.random() >= 0.05}} for _ in range(997)
    ]
    shapes: dict[str, Callable[[int], dict[str, Any]]] = {
        "key first": lambda _: {"ssm_id": "US0378331005", **{n: 0.5 + i for i, n in enumerate(names)}},
        "key last": lambda _: {**{n: 0.5 + i for i, n in enumerate(names)}, "ssm_id": "US0378331005"},
        "sparse (5% missing)": lambda i: sparse[i % len(sparse)],
    }
    print(f"{'shape':<20}{'check+encode us':>16}{'packb us':>9}{'decode us':>10}{'unpackb us':>11}", end="")
    print(f"{'bytes':>7}{'packb bytes':>12}")
    for label, make in shapes.items():
        records = [make(i) for i in range(len(sparse))]
        print(f"{label:<20}" + _measure(records, args.number, args.repeat))


def _measure(records: list[dict[str, Any]], number: int, repeat: int) -> str:
    """One shape's row: microseconds per record (best of *repeat* runs of *number*), then the sizes."""
    tag = f"Security{uuid.uuid4().hex[:8]}"  # a class of its own, as a process with one such class has
    packer = _codec.packer()
    for record in records:  # each shape seen once, as after a batch's first chunk
        _encode(tag, record, packer)
    cycle = itertools.cycle(records)
    data, plain = _encode(tag, records[0], packer), msgpack.packb(records[0])

    def best(work: Callable[[], object]) -> float:
        return min(timeit.repeat(work, number=number, repeat=repeat)) / number * 1e6

    encode = best(lambda: _encode(tag, next(cycle), packer))
    packb = best(lambda: msgpack.packb(next(cycle)))
    decode = best(lambda: _codec.decode_record(data))
    unpackb = best(lambda: msgpack.unpackb(plain))
    return f"{encode:>16.2f}{packb:>9.2f}{decode:>10.2f}{unpackb:>11.2f}{len(data):>7,}{len(plain):>12,}"


if __name__ == "__main__":
    main()
