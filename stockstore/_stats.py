"""What a store was asked and how it answered: counters and latencies per store, and optional tracing spans.

Every store keeps one `Stats`.  A store's own calls count in it, and so do the
calls a `ChainedStore` makes on it as a tier (hits, misses, fills,
invalidations), so ``tier.stats()`` is that tier's part of the chain's work.
Counters only grow; latencies are kept for the last `SAMPLES` calls of each
operation, so percentiles follow what the store does now, in bounded memory.

With ``opentelemetry-api`` installed (extra ``stockstore[otel]``), each timed
operation is also a span named ``stockstore.<operation>``; without it, nothing
is imported and a timed call costs a clock reading and a lock.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

COUNTERS = ("hits", "misses", "writes", "deletes", "fills", "invalidations", "errors")
SAMPLES = 4096  # latencies kept per operation


class Stats:
    """Thread-safe counters and recent latencies of one store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._latencies: dict[str, deque[float]] = {}
        self._calls: dict[str, int] = {}

    def add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    @contextlib.contextmanager
    def timed(self, operation: str, store: object, *, errors: bool = True) -> Iterator[None]:
        """Time one call of *operation* (a span too, with OpenTelemetry); an exception counts as an error if *errors*.

        A `ChainedStore` times its calls on a tier with *errors* false: it counts a
        tier's failures itself, once each, with those that are not timed.
        """
        started = time.perf_counter()
        try:
            with _span(operation, store):
                yield
        except BaseException:
            if errors:
                self.add("errors")
            raise
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self._latencies.setdefault(operation, deque(maxlen=SAMPLES)).append(seconds)
                self._calls[operation] = self._calls.get(operation, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters, and per operation its calls and the p50/p90/p99/max of its recent latencies in ms."""
        with self._lock:
            counts = dict(self._counts)
            latencies = {op: list(times) for op, times in self._latencies.items()}
            calls = dict(self._calls)
        out: dict[str, Any] = counts
        out["latency_ms"] = {op: _summary(times, calls[op]) for op, times in sorted(latencies.items())}
        return out


def _summary(seconds: list[float], calls: int) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    if len(ms) == 1:
        p50 = p90 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p90, p99 = cuts[49], cuts[89], cuts[98]
    return {"calls": calls, "p50": p50, "p90": p90, "p99": p99, "max": ms[-1]}


_tracer: Any = None  # opentelemetry's tracer once looked for; False: not installed


def _span(operation: str, store: object) -> contextlib.AbstractContextManager[Any]:
    global _tracer
    if _tracer is None:
        try:
            import opentelemetry.trace
        except ImportError:
            _tracer = False
        else:
            _tracer = opentelemetry.trace.get_tracer("stockstore")
    if _tracer is False:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        f"stockstore.{operation}",
        attributes={"stockstore.store": type(store).__name__, "stockstore.namespace": getattr(store, "namespace", "")},
    )
