"""What the store primitives take and return: encoded records with their version and expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BackendUnavailableError


# Not frozen: a frozen dataclass is three times slower to make, and a batch makes one
# per record.  Treat them as immutable all the same (``dataclasses.replace`` for changes).
@dataclass(slots=True)
class Stored:
    """What a backend holds for one primary key.

    ``payload`` is the codec's bytes, or ``None`` for a tombstone: a marker
    left by an invalidation so that a late, older fill cannot land (see
    `BaseStore._fill`).  Readers never see tombstones.
    """

    payload: bytes | None
    version: int
    expires_ms: int | None

    def live(self, now_ms: float) -> bool:
        return self.payload is not None and (self.expires_ms is None or self.expires_ms > now_ms)

    def expired(self, now_ms: float) -> bool:
        """A record (not a tombstone) whose expiry has passed."""
        return self.payload is not None and self.expires_ms is not None and self.expires_ms <= now_ms


@dataclass(slots=True)
class Entry(Stored):
    """A write: the stored unit plus the keys a backend indexes it under."""

    key: bytes  # encoded primary key
    alternates: tuple[bytes | None, ...]  # encoded alternate keys, None where unset
    indexed: Mapping[str, Any] | None = None
    """The values of the family's indexed attributes (`BaseStore._indexed`), where the writer had them at hand."""


Merge = Callable[[bytes, Stored | None], Entry]
"""What a patch primitive calls per key with the live record held (``None``: missing or expired)."""


class PartialWrite(Exception):
    """Raised by a write primitive when some entries were not applied.

    ``failed`` holds their encoded primary keys; the public method turns it into
    `BatchError` (or, for a single-record call, re-raises ``__cause__``).
    ``unknown`` is the part of ``failed`` whose outcome is unknown (a reply lost
    with its connection): those may have been applied after all, where the rest
    were refused.  `ChainedStore` invalidates the unknown ones, not the refused.
    """

    def __init__(self, failed: Iterable[bytes], cause: BaseException, unknown: Iterable[bytes] = ()) -> None:
        super().__init__(str(cause))
        self.failed = list(failed)
        self.unknown = list(unknown)
        self.__cause__ = cause

    @classmethod
    def of(cls, failures: Mapping[bytes, BaseException]) -> PartialWrite:
        """One for these keys and why each failed; an unavailable backend leaves the outcome unknown."""
        unknown = [key for key, error in failures.items() if isinstance(error, BackendUnavailableError)]
        return cls(failures, next(iter(failures.values())), unknown)


class VersionClock:
    """Record versions: microseconds since the epoch, strictly increasing in-process.

    A source of truth stores ``max(new, old + 1)``, so versions also grow per
    key across processes whatever their clocks say; caches compare them to
    refuse a fill older than what they already hold.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        return self.take(1)

    def take(self, count: int) -> int:
        """The first of *count* consecutive versions, all newer than any handed out before."""
        with self._lock:
            first = max(self._last + 1, time.time_ns() // 1000)
            self._last = first + count - 1
            return first


versions = VersionClock()
