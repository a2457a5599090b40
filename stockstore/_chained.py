"""`ChainedStore`: write-through tiers over a source of truth.

The last tier is the source of truth.  Writes go there first, then to the
tiers above it, nearest first, as *conditional* fills: every record carries a
version the source of truth made strictly increasing per key, and a tier keeps
an incoming copy only if it is newer than what it holds.  Deletes and failed
updates leave versioned tombstones for ``tombstone_ttl`` seconds.  Together
these stop a read-miss that fetched an old version before a write from filling
it in after the write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from ._codec import decode_head
from ._entry import Entry, Stored, versions
from ._keys import Family
from ._store import BaseStore, Merge, PartialWrite
from .errors import StoreError

logger = logging.getLogger(__name__)


class ChainedStore(BaseStore):
    """Tiers read top to bottom, written bottom (source of truth) to top.

    A failed cache tier never fails a write that reached the source of truth:
    the failure is logged, counted in ``tier_failures`` and that tier is
    bypassed for the affected keys until an invalidation of them succeeds.
    """

    def __init__(
        self,
        tiers: Sequence[BaseStore],
        *,
        tombstone_ttl: float = 60.0,
        retries: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tiers = list(tiers)
        if not tiers or not all(isinstance(t, BaseStore) for t in tiers):
            raise TypeError("ChainedStore needs a non-empty sequence of stores")
        super().__init__(clock=clock)
        self.tiers = tiers
        self.tombstone_ttl = tombstone_ttl
        self.retries = retries
        self.tier_failures = [0] * len(tiers)
        self._bypass: set[tuple[int, str, bytes]] = set()
        self._floors: dict[str, int] = {}  # family -> version of its last clear
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ChainedStore {self.tiers!r}>"

    def _writes_from_any_thread(self) -> bool:
        return all(tier._writes_from_any_thread() for tier in self.tiers)

    def _stores_rows(self) -> bool:
        return self._source._stores_rows()  # the source keeps the schemas; tiers above are filled from it

    @property
    def _source(self) -> BaseStore:
        return self.tiers[-1]

    @property
    def _caches(self) -> list[tuple[int, BaseStore]]:
        """Upper tiers, nearest the source of truth first."""
        return list(reversed(list(enumerate(self.tiers[:-1]))))

    # ---- bypass bookkeeping

    def _bypassed(self, level: int, family: Family, key: bytes) -> bool:
        return (level, family.name, key) in self._bypass

    def _repair(self, family: Family, keys: Sequence[bytes]) -> None:
        """Retry invalidating keys a failed tier may hold stale; lift the bypass on success."""
        if not self._bypass:
            return
        for level, tier in self._caches:
            stale = [k for k in keys if self._bypassed(level, family, k)]
            if stale and self._invalidate_tier(level, tier, family, stale):
                with self._lock:
                    self._bypass.difference_update((level, family.name, k) for k in stale)

    def _invalidate_tier(self, level: int, tier: BaseStore, family: Family, keys: Sequence[bytes]) -> bool:
        until = int((self.clock() + self.tombstone_ttl) * 1000)
        version = versions.next()
        try:
            with tier._errors():
                tier._invalidate(family, keys, version, until)
        except StoreError:
            return False
        return True

    def _tier_failed(self, level: int, family: Family, keys: Sequence[bytes], exc: BaseException) -> None:
        """A cache tier write failed: invalidate (bounded retries), else bypass those keys."""
        self.tier_failures[level] += 1
        tier = self.tiers[level]
        for _ in range(self.retries):
            if self._invalidate_tier(level, tier, family, keys):
                logger.warning("tier %d (%r) failed a write and was invalidated: %s", level, tier, exc)
                return
        logger.warning(
            "tier %d (%r) failed a write; %d key(s) bypassed until repaired: %s", level, tier, len(keys), exc
        )
        with self._lock:
            self._bypass.update((level, family.name, k) for k in keys)

    def _propagate(self, family: Family, entries: Sequence[Entry], now: float) -> None:
        """Carry written entries up the tiers, nearest the source first, each with its own lifetime."""
        floor = self._floors.get(family.name, 0)
        entries = [e for e in entries if e.version > floor]
        for level, tier in self._caches:
            mine = [tier._apply_lifetime(family, e, now) for e in entries if not self._bypassed(level, family, e.key)]
            if not mine:
                continue
            try:
                with tier._errors():
                    tier._fill(family, mine, now * 1000)
            except StoreError as exc:
                self._tier_failed(level, family, [e.key for e in mine], exc)

    # ---- primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        self._repair(family, keys)
        found: dict[bytes, Stored] = {}
        missing = list(keys)
        for level, tier in enumerate(self.tiers):
            source = level == len(self.tiers) - 1
            ask = [k for k in missing if source or not self._bypassed(level, family, k)]
            if not ask:
                continue
            started = self.clock()
            try:
                with tier._errors():
                    got = tier._read(family, ask, now_ms)
            except StoreError as exc:
                if source:
                    raise
                # A cache that cannot answer is a miss: the tiers below still can.
                self.tier_failures[level] += 1
                logger.warning("tier %d (%r) failed a read: %s", level, tier, exc)
                continue
            # Upper-tier copies from before the last clear() are void, even if that tier missed the clear.
            floor = 0 if source else self._floors.get(family.name, 0)
            hits = [(k, s) for k, s in zip(ask, got, strict=True) if s is not None and s.version > floor]
            if hits:
                found.update(hits)
                if level:
                    # A tier may decode what it is filled with (a hash layout, a callable lifetime):
                    # the row schemas of these records are read first, and fill the tiers above first.
                    self._learn_schemas(s.payload for _, s in hits)
                self._fill_above(family, level, hits, started)
                hit_keys = {k for k, _ in hits}
                missing = [k for k in missing if k not in hit_keys]
            if not missing:
                break
        return [found.get(k) for k in keys]

    def _fill_above(self, family: Family, level: int, hits: list[tuple[bytes, Stored]], started: float) -> None:
        now = self.clock()
        if now - started > self.tombstone_ttl / 2:
            # A read this slow may predate a write whose tombstone has already gone.
            return
        floor = self._floors.get(family.name, 0)
        entries = [
            Entry(s.payload, s.version, s.expires_ms, k, _alternates(family, s)) for k, s in hits if s.version > floor
        ]
        for upper in range(level - 1, -1, -1):
            tier = self.tiers[upper]
            mine = [tier._apply_lifetime(family, e, now) for e in entries if not self._bypassed(upper, family, e.key)]
            if not mine:
                continue
            try:
                with tier._errors():
                    tier._fill(family, mine, now * 1000)
            except StoreError as exc:
                # The read itself succeeded; a fill that may or may not have landed
                # carried the current version, so nothing stale can result.
                self.tier_failures[upper] += 1
                logger.warning("tier %d (%r) failed a read-fill: %s", upper, tier, exc)

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        # Alternate keys are resolved by the source of truth: an upper tier may
        # hold a record whose alternate key has since moved to another record.
        with self._source._errors():
            return self._source._resolve(family, index, keys, now_ms)

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        now = now_ms / 1000
        source = self._source
        failure: PartialWrite | None = None
        # The source's own expiry travels up with the entries: no cached copy may outlive it.
        entries = [source._apply_lifetime(family, e, now) for e in entries]
        try:
            with source._errors():
                stored = source._write(family, entries, now_ms)
        except PartialWrite as exc:
            failure = exc
            failed = set(exc.failed)
            stored = [0 if e.key in failed else e.version for e in entries]
        written = [replace(e, version=v) for e, v in zip(entries, stored, strict=True) if v]
        if failure is not None:
            # Versions of the applied ones are unknown here: invalidate instead of filling.
            self._invalidate_caches(family, [e.key for e in written])
            raise failure
        self._propagate(family, written, now)
        return stored

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        with self._source._errors():
            count = self._source._remove(family, keys, now_ms)
        self._invalidate_caches(family, keys)
        return count

    def _invalidate_caches(self, family: Family, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        for level, tier in self._caches:
            if not self._invalidate_tier(level, tier, family, keys):
                self._tier_failed(level, family, keys, StoreError("invalidation failed"))

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        now = now_ms / 1000
        source = self._source

        def merge_here(key: bytes, current: Stored | None) -> Entry:
            return source._apply_lifetime(family, merge(key, current), now)

        try:
            with source._errors():
                written = source._patch(family, keys, merge_here, now_ms)
        except PartialWrite as exc:
            failed = set(exc.failed)
            self._invalidate_caches(family, [k for k in keys if k not in failed])
            raise
        self._propagate(family, written, now)
        return written

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        # As an upper tier of another chain, every tier here is a cache of that chain's source.
        for tier in reversed(self.tiers):
            with tier._errors():
                tier._fill(family, [tier._apply_lifetime(family, e, now_ms / 1000) for e in entries], now_ms)

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        for tier in reversed(self.tiers):
            with tier._errors():
                tier._invalidate(family, keys, version, until_ms)

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        with self._source._errors():
            yield from self._source._scan(family, now_ms)

    def _count(self, family: Family, now_ms: float) -> int:
        with self._source._errors():
            return self._source._count(family, now_ms)

    def _clear(self, family: Family, now_ms: float) -> int:
        with self._source._errors():
            count = self._source._clear(family, now_ms)
        # Fills already under way carry versions from before the clear: refuse them.
        self._floors[family.name] = versions.next()
        for level, tier in self._caches:
            try:
                with tier._errors():
                    tier._clear(family, now_ms)
            except StoreError as exc:
                self.tier_failures[level] += 1
                logger.warning("tier %d (%r) failed to clear %s: %s", level, tier, family.name, exc)
        return count

    def close(self) -> None:
        """Close every tier."""
        for tier in self.tiers:
            tier.close()


def _alternates(family: Family, stored: Stored) -> tuple[bytes | None, ...]:
    if len(family.keys) == 1 or stored.payload is None:
        return ()
    return family.alternates_of(decode_head(stored.payload)[1])  # key attributes are in the map
