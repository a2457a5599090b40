"""Redis memory per record for each stockstore layout: ``INFO memory`` before and after.

    python benchmarks/redis_memory.py redis://127.0.0.1:6379/0 --n 100000 --attrs 200

Use a server with nothing else running on it: the figure is the growth of
``used_memory`` while the records are written, divided by their number.
"""

from __future__ import annotations

import argparse
import random
import uuid
from typing import Any, ClassVar

import msgpack
import redis

import stockstore as ss
from stockstore.backends import RedisHashStore, RedisMsgpackStore


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--attrs", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(1)
    names = [f"a{j}" for j in range(args.attrs)]
    records = [Security(ssm_id=f"SEC{i:010d}", **{n: rng.random() for n in names}) for i in range(args.n)]
    raw_floats = 8 * args.attrs
    client = redis.Redis.from_url(args.url)
    print(f"{args.n:,} records x {args.attrs} floats; raw float64 payload {raw_floats} bytes a record")
    print(f"{'layout':<28} {'bytes/record':>12} {'x raw floats':>12}")

    def measure(label: str, write: object) -> None:
        before = used_memory(client)
        write()  # type: ignore[operator]
        per_record = (used_memory(client) - before) / args.n
        print(f"{label:<28} {per_record:>12,.0f} {per_record / raw_floats:>12.2f}")

    for cls in (RedisMsgpackStore, RedisHashStore):
        namespace = f"mem{uuid.uuid4().hex[:8]}"
        store = cls(args.url, namespace=namespace)
        measure(cls.__name__, lambda store=store: store.batch_put(records))
        store.clear(Security)
        store.close()
    prefix = f"plain{uuid.uuid4().hex[:8]}"

    def plain() -> None:
        pipe = client.pipeline(transaction=False)
        for i, rec in enumerate(records):
            pipe.set(f"{prefix}:{rec['ssm_id']}", msgpack.packb(dict(rec)))
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()

    measure("plain redis-py SET msgpack", plain)
    for batch in range(0, args.n, 1000):
        client.delete(*[f"{prefix}:{r['ssm_id']}" for r in records[batch : batch + 1000]])


if __name__ == "__main__":
    main()
