"""What a comparison measures besides time: this process's peak RSS per step, the records' size, Redis memory.

The peak RSS of each step is had by resetting the kernel's high-water mark before it
(Linux); elsewhere only the whole run's peak is known.  Redis memory is measured two
ways, so that a figure moved by another client of the server shows.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import resource
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stockstore._bench import Security

if TYPE_CHECKING:
    import redis

SAMPLE = 1000  # keys whose MEMORY USAGE is averaged


class PeakRss:
    """Peak resident memory of this process, per step where Linux lets us reset the peak.

    Writing ``5`` to /proc/self/clear_refs resets VmHWM (the peak RSS in
    /proc/self/status), so the peak read after a step is that step's.  The reset
    also resets ``ru_maxrss``, so the whole run's peak is the highest peak read.
    """

    def __init__(self) -> None:
        self.run_peak = self._hwm() or 0
        self.per_step = self._reset()

    @staticmethod
    def _hwm() -> int | None:
        with contextlib.suppress(OSError):
            found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
            if found:
                return int(found[1]) * 1024
        return None

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def start(self) -> None:
        if self.per_step:
            self.run_peak = max(self.run_peak, self._hwm() or 0)
            self._reset()

    def step_peak(self) -> int | None:
        if not self.per_step:
            return None
        peak = self._hwm() or 0
        self.run_peak = max(self.run_peak, peak)
        return peak

    def whole_run(self) -> int:
        if self.per_step:
            return max(self.run_peak, self._hwm() or 0)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def records_size(records: Sequence[Security]) -> int:
    """What *records* take as Python objects, estimated with `sys.getsizeof`.

    One record's dict, id and values, times the number of records (they all have
    the same shape), plus the list and the attribute names they share.
    """
    if not records:
        return sys.getsizeof(records)
    one = records[0]
    each = sys.getsizeof(one) + sum(sys.getsizeof(value) for value in one.values())
    return sys.getsizeof(records) + len(records) * each + sum(sys.getsizeof(name) for name in one)


def used_memory(client: redis.Redis) -> tuple[int, int]:
    """The server's ``used_memory`` (INFO memory) in bytes, and how many keys it holds."""
    return int(client.info("memory")["used_memory"]), int(client.dbsize())


def key_usage(client: redis.Redis, pattern: str, sample: int = SAMPLE) -> float | None:
    """The mean ``MEMORY USAGE`` of up to *sample* keys matching *pattern*, nested values counted in full.

    Unlike the growth of ``used_memory`` it cannot be moved by other clients, so it
    tells whether that figure was disturbed; it leaves out the keyspace's own table.
    """
    keys = list(itertools.islice(client.scan_iter(match=pattern, count=sample), sample))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = [size for size in pipe.execute() if size is not None]
    return statistics.fmean(sizes) if sizes else None
