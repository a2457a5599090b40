"""Redis indexes at scale: find vs the same ZRANGE by hand, batch_put with and without indexes, reset.

Needs a private redis-server on port 47200 (it is FLUSHALLed):
``redis-server --port 47200 --save "" --appendonly no --daemonize yes``; then
``python benchmarks/redis_find.py 100000``.
"""

import time, statistics, sys
from typing import Any, ClassVar
import redis
import stockstore as ss
from stockstore.backends import RedisMsgpackStore
from stockstore._keys import family_of

N = int(sys.argv[1]); W = 200
class Sec(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
    __stockstore_indexes__: ClassVar[list[str]] = ["sector", "rating", "price"]
class SecPlain(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]
r = redis.Redis(port=47200); r.flushall()
s = RedisMsgpackStore("redis://127.0.0.1:47200/0", namespace="b")
def rec(cls, i):
    o = cls(ssm_id=f"S{i:07d}", sector=f"sec{i % (N // 10000)}", rating=i % 7, price=float(i % 1000))
    for j in range(W): o[f"f{j}"] = float(i + j)
    return o
plain = [rec(SecPlain, i) for i in range(N)]
idx = [rec(Sec, i) for i in range(N)]
t = time.perf_counter(); s.batch_put(plain); tp = time.perf_counter() - t
t = time.perf_counter(); s.batch_put(idx); ti = time.perf_counter() - t
print(f"batch_put {N} x {W} floats: plain {tp:.2f}s, 3 indexed attrs {ti:.2f}s, ratio {ti/tp:.2f}")
def best(f, n=7):
    out = []
    for _ in range(n):
        t = time.perf_counter(); v = f(); out.append(time.perf_counter() - t)
    return min(out), statistics.median(out), v
fam = family_of(Sec); p = s._prefix(fam)
a = best(lambda: list(s.find(Sec, sector="sec3")))
print(f"find(sector=) {len(a[2])} keys: best {a[0]*1000:.1f} ms, median {a[1]*1000:.1f} ms")
# by hand: ZRANGE BYLEX of the same members + strip (the minimum a hand-written index query does)
from stockstore.backends.redis import index_value
v = index_value("sec3")
h = best(lambda: [m[len(v):] for m in r.zrange(p + "i:z:sector", b"[" + v, b"(" + v + b"\xff", bylex=True)])
print(f"by hand ZRANGE BYLEX: best {h[0]*1000:.1f} ms median {h[1]*1000:.1f} ms; ratio {a[0]/h[0]:.2f}")
# a plain SMEMBERS of an equivalent set
r.sadd("hand:set", *h[2])
sm = best(lambda: r.smembers("hand:set"))
print(f"SMEMBERS of a set of those keys: best {sm[0]*1000:.1f} ms; find/SMEMBERS ratio {a[0]/sm[0]:.2f}")
c = best(lambda: s.find(Sec, sector="sec3").count()); print(f"count {c[2]}: {c[0]*1000:.2f} ms")
o = best(lambda: list(s.find(Sec, sector="sec3", price__lt=500).order_by("-price")[:100]), 3)
print(f"sector + price range, ordered, first 100: best {o[0]*1000:.1f} ms")
new = [rec(Sec, i + 10**6) for i in range(N)]
r.config_set("slowlog-log-slower-than", 0); r.slowlog_reset()
t = time.perf_counter(); s.reset(Sec, new); tr = time.perf_counter() - t
slow = max(e["duration"] for e in r.slowlog_get(1000)); 
print(f"reset of {N}: {tr:.2f}s in all; longest single command (the switch) {slow/1000:.0f} ms")
