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

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from . import _writer
from ._codec import decode_head
from ._entry import Entry, Merge, PartialWrite, Stored, versions
from ._keys import Family
from ._query import Search
from ._store import BaseStore
from ._writer import BatchTransaction, Chunk, Encoded
from .errors import StoreError

logger = logging.getLogger("stockstore.chain")

_REPAIR_SHARE = 5000  # bypassed keys of other reads a read repairs at the most, on its way
_RESET_SHARE = 10_000  # old keys a reset tombstones in the cache tiers per call


class ChainedStore(BaseStore):
    """Tiers read top to bottom, written bottom (source of truth) to top.

    A failed cache tier never fails a write that reached the source of truth:
    the failure is logged, counted in ``tier_failures`` and that tier is
    bypassed for the affected keys until an invalidation of them succeeds.
    Keys read from the source are leased first in a shared tier, for at most
    *lease_for* seconds, so that processes missing them together read them once
    (docs/chaining.md).  The chain reads the time through *clock* (epoch
    seconds) and waits through *sleep*, so tests can drive both.
    """

    def __init__(
        self,
        tiers: Sequence[BaseStore],
        *,
        tombstone_ttl: float = 60.0,
        retries: int = 2,
        down_for: float = 1.0,
        lease_for: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        tiers = _check_tiers(tiers)
        super().__init__(clock=clock)
        self.tiers = tiers
        self.tombstone_ttl = tombstone_ttl
        self.retries = retries
        self.down_for = down_for
        if not lease_for >= 0:
            raise ValueError(f"lease_for must be a number of seconds >= 0, not {lease_for!r}")
        self.lease_for = lease_for
        self.sleep = sleep
        self.tier_failures = [0] * len(tiers)
        self._bypass: set[tuple[int, str, bytes]] = set()
        self._families: dict[str, Family] = {}  # the families in _bypass, by name
        self._down: dict[int, tuple[float, float]] = {}  # level -> (monotonic time to try again, next pause)
        self._flights: dict[tuple[str, bytes], Future[Stored | None]] = {}  # reads under way, by key
        self._floors: dict[str, int] = {}  # family -> version of its last clear
        self._lock = threading.Lock()
        self._beside = threading.local()  # fills: where a batch's chunk writes leave their fills (`_chunk_writes`)

    def __repr__(self) -> str:
        return f"<ChainedStore {self.tiers!r}>"

    def _writes_from_any_thread(self) -> bool:
        return all(tier._writes_from_any_thread() for tier in self.tiers)

    def _stores_rows(self) -> bool:
        return self._source._stores_rows()  # the source keeps the schemas; tiers above are filled from it

    def _lifetime_per_record(self) -> bool:
        return any(tier._lifetime_per_record() for tier in self.tiers)

    def _expiry(self, obj: Any, now: float, family: Family | None = None, key: bytes | None = None) -> int | None:
        """None: a chain has no lifetime of its own.  Its tiers' are checked here, before anything is written."""
        for tier in reversed(self.tiers):
            tier._expiry(obj, now, family, key)
        return None

    @property
    def _source(self) -> BaseStore:
        return self.tiers[-1]

    @property
    def _caches(self) -> list[tuple[int, BaseStore]]:
        """Upper tiers, nearest the source of truth first."""
        return list(reversed(list(enumerate(self.tiers[:-1]))))

    # ---- failed tiers: bypassed keys, and tiers left alone for a while

    def _bypassed(self, level: int, family: Family, key: bytes) -> bool:
        return (level, family.name, key) in self._bypass

    def _usable(self, level: int) -> bool:
        """Whether a cache tier may be asked: not failed, or failed long enough ago to try again."""
        down = self._down.get(level)
        return down is None or self.clock() >= down[0]

    def _tier_down(self, level: int) -> None:
        """Leave a failed tier alone for `down_for` seconds, twice as long each time it fails again."""
        with self._lock:
            pause = self._down.get(level, (0.0, self.down_for))[1]
            self._down[level] = (self.clock() + pause, min(max(pause, 0.001) * 2, 60.0))

    def _failed(self, level: int) -> None:
        """Count a failure of a cache tier: in ``tier_failures`` and in the tier's own `stats`."""
        with self._lock:
            self.tier_failures[level] += 1
        self.tiers[level]._stats.add("errors")

    def stats(self) -> dict[str, Any]:
        """The chain's own counters and latencies (see `BaseStore.stats`), and each tier's, top first, under ``tiers``.

        A tier's figures count what the chain did to it (hits and misses of its reads,
        fills, invalidations, failures) and whatever was asked of it directly.
        """
        return {**super().stats(), "tiers": [tier.stats() for tier in self.tiers]}

    def _tier_up(self, level: int) -> None:
        if level in self._down:
            with self._lock:
                self._down.pop(level, None)

    def _bypass_keys(self, level: int, family: Family, keys: Sequence[bytes]) -> None:
        with self._lock:
            self._families[family.name] = family
            self._bypass.update((level, family.name, k) for k in keys)

    def _repair(self, family: Family, keys: Sequence[bytes]) -> None:
        """Invalidate what failed tiers may hold stale: these keys first, then a bounded share of the rest.

        A key is read from a tier again only once its invalidation there succeeded.
        """
        if not self._bypass:
            return
        for level, tier in self._caches:
            if not self._usable(level):
                continue
            with self._lock:
                held = [(name, k) for lvl, name, k in self._bypass if lvl == level]
            mine = {k for name, k in held if name == family.name}
            stale = [k for k in keys if k in mine]
            asked = set(stale)
            rest = [(name, k) for name, k in held if name != family.name or k not in asked][:_REPAIR_SHARE]
            groups: dict[str, list[bytes]] = {family.name: stale}
            for name, k in rest:
                groups.setdefault(name, []).append(k)
            for name, group in groups.items():
                if group:
                    left = set(self._invalidate_tier(level, tier, self._families.get(name, family), group))
                    self._lift(level, name, [k for k in group if k not in left])

    def _lift(self, level: int, name: str, keys: Sequence[bytes]) -> None:
        if keys and self._bypass:
            with self._lock:
                self._bypass.difference_update((level, name, k) for k in keys)

    def _invalidate_tier(self, level: int, tier: BaseStore, family: Family, keys: Sequence[bytes]) -> list[bytes]:
        """Tombstone these keys in one tier; the keys it could not (all of them if the tier is down)."""
        until = int((self.clock() + self.tombstone_ttl) * 1000)
        version = versions.next()
        try:
            with tier._errors():
                tier._invalidate(family, keys, version, until)
            tier._stats.add("invalidations", len(keys))
        except PartialWrite as exc:  # some keys only (a cluster node down): the tier itself answers
            return exc.failed
        except StoreError:
            self._tier_down(level)
            return list(keys)
        self._tier_up(level)
        return []

    def _tier_failed(self, level: int, family: Family, keys: Sequence[bytes], exc: BaseException) -> None:
        """A cache tier write failed, or its outcome is unknown: invalidate (bounded retries), else bypass.

        Never the write again: a copy that may or may not have landed is made void.
        A tier that fails an invalidation too is left alone at once: trying it again
        would cost the write one more timeout of a hung server.
        """
        self._failed(level)
        tier = self.tiers[level]
        left = list(keys)
        for _ in range(self.retries):
            if not self._usable(level):
                break
            left = self._invalidate_tier(level, tier, family, left)
            if not left:
                logger.warning("tier %d (%r) failed a write and was invalidated: %s", level, tier, exc)
                return
        logger.warning(
            "tier %d (%r) failed a write; %d key(s) bypassed until repaired: %s", level, tier, len(left), exc
        )
        self._bypass_keys(level, family, left)
        if not isinstance(exc, PartialWrite):
            self._tier_down(level)

    def _fill_tier(self, level: int, family: Family, mine: Sequence[Entry], now: float) -> None:
        """Fill one cache tier with written entries (its lifetime applied); a tier left alone has them bypassed.

        The written versions are the newest there are, so a fill that lands also
        repairs a key bypassed there before.
        """
        tier = self.tiers[level]
        if not mine:
            return
        if not self._usable(level):
            self._bypass_keys(level, family, [e.key for e in mine])
            return
        failed: list[bytes] = []
        try:
            with tier._stats.timed("fill", tier, errors=False), tier._errors():
                tier._fill(family, mine, now * 1000)
            tier._stats.add("fills", len(mine))
        except PartialWrite as exc:  # some keys only (a cluster node down)
            failed = exc.failed
            self._tier_failed(level, family, failed, exc)
        except StoreError as exc:
            failed = [e.key for e in mine]
            self._tier_failed(level, family, failed, exc)
        else:
            self._tier_up(level)
        refused = set(failed)
        self._lift(level, family.name, [e.key for e in mine if e.key not in refused])

    def _lifetimes(self, family: Family, entries: Sequence[Entry], now: float) -> dict[int, list[int | None]]:
        """Each cache tier's expiry of each entry, aligned: its own lifetime, never past the entry's.

        Computed before anything is written: a lifetime that fails raises then (`BaseStore._expiry`).
        """
        return {
            level: [tier._apply_lifetime(family, e, now).expires_ms for e in entries] for level, tier in self._caches
        }

    def _propagate(
        self, family: Family, entries: Sequence[Entry], expiries: dict[int, list[int | None]], now: float
    ) -> None:
        """Carry written entries up the tiers, nearest the source first, each with its tier's expiry (aligned).

        On the way, a bounded share of keys bypassed before is repaired, so that a
        process that only writes repairs too.
        """
        self._repair(family, ())
        floor = self._floors.get(family.name, 0)
        for level, _ in self._caches:
            mine = [
                e if e.expires_ms == expires else replace(e, expires_ms=expires)
                for e, expires in zip(entries, expiries[level], strict=True)
                if e.version > floor
            ]
            self._fill_tier(level, family, mine, now)

    def _forget_flights(self, family: Family, keys: Sequence[bytes]) -> None:
        """A write: reads under way for these keys may have read the old value; none joins them now."""
        if self._flights:
            with self._lock:
                for key in keys:
                    self._flights.pop((family.name, key), None)

    # ---- primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        """Read through the tiers; keys another thread of this process is reading already are waited for.

        Single flight: threads missing the same keys at once cause one read of them
        from the tiers below, not one each.
        """
        mine: dict[bytes, Future[Stored | None]] = {}
        theirs: dict[bytes, Future[Stored | None]] = {}
        with self._lock:
            for key in keys:
                flight = self._flights.get((family.name, key))
                if flight is not None:
                    theirs[key] = flight
                elif key not in mine:
                    mine[key] = self._flights[(family.name, key)] = Future()
        try:
            found = self._read_tiers(family, list(mine), now_ms) if mine else {}
        except BaseException as exc:
            for flight in mine.values():
                flight.set_exception(exc)
            raise
        finally:
            with self._lock:
                for key, flight in mine.items():
                    if self._flights.get((family.name, key)) is flight:
                        del self._flights[(family.name, key)]
        for key, flight in mine.items():
            flight.set_result(found.get(key))
        got = {key: flight.result() for key, flight in theirs.items()}
        return [found[k] if k in found else got.get(k) for k in keys]

    def _read_tiers(self, family: Family, keys: Sequence[bytes], now_ms: float, below: int = -1) -> dict[bytes, Stored]:
        """Read *keys* from the tiers below level *below* (every tier by default), top to bottom.

        Each cache tier that misses a key is watched for it (`_watch`) before the
        tiers below are read: the fill it then gets lands only if nothing was written
        to the key there since, whatever the tier lost meanwhile (an eviction, a
        restart).  The tiers down to *below* are watched first: they are missing the keys.
        """
        self._repair(family, keys)
        tokens: _Tokens = {}
        for level in range(below + 1):
            self._watch_in(level, family, keys, tokens)
        found: dict[bytes, Stored] = {}
        missing = list(keys)
        for level, tier in enumerate(self.tiers[:-1]):
            if level <= below or not self._usable(level):
                continue
            ask = [k for k in missing if not self._bypassed(level, family, k)]
            if not ask:
                continue
            hits = self._read_cache(level, tier, family, ask, now_ms, tokens)
            if hits:
                found.update(hits)
                missing = [k for k in missing if k not in found]
            if not missing:
                return found
            self._watch_in(level, family, [k for k in ask if k not in hits], tokens)
        found.update(self._read_source(family, missing, now_ms, tokens))
        return found

    def _watch_in(self, level: int, family: Family, keys: Sequence[bytes], tokens: _Tokens) -> None:
        """Watch *keys* in a cache tier that will be filled with them; a tier without tokens is not watched."""
        tier = self.tiers[level]
        ask = [k for k in keys if not self._bypassed(level, family, k)]
        if not ask or not self._usable(level):
            return
        try:
            with tier._errors():
                taken = tier._watch(family, ask, max(1, int(self.tombstone_ttl * 500)))
        except StoreError as exc:  # watched for nothing: nothing is filled there by this read
            taken = []
            logger.warning("tier %d (%r) failed to watch keys for a fill: %s", level, tier, exc)
        if taken is not None:
            tokens.setdefault(level, {}).update(zip(ask, taken, strict=False))

    def _read_cache(
        self, level: int, tier: BaseStore, family: Family, keys: Sequence[bytes], now_ms: float, tokens: _Tokens
    ) -> dict[bytes, Stored]:
        """What a cache tier holds of *keys*, filled into the tiers above it; a tier that fails is a miss."""
        started = self.clock()
        try:
            with tier._stats.timed("read", tier, errors=False), tier._errors():
                got = tier._read(family, keys, now_ms)
        except StoreError as exc:
            # A cache that cannot answer is a miss: the tiers below still can.
            self._failed(level)
            self._tier_down(level)
            logger.warning("tier %d (%r) failed a read: %s", level, tier, exc)
            return {}
        self._tier_up(level)
        # Copies from before the last clear() are void, even if this tier missed the clear.
        floor = self._floors.get(family.name, 0)
        hits = [(k, s) for k, s in zip(keys, got, strict=True) if s is not None and s.version > floor]
        tier._stats.add("hits", len(hits))
        tier._stats.add("misses", len(keys) - len(hits))
        self._fill_from(family, level, hits, started, tokens)
        return {k: _Cached(s.payload, s.version, s.expires_ms, level) for k, s in hits}

    def _recover(self, family: Family, key: bytes, stored: Stored, error: Exception) -> Stored | None:
        """A cache tier's copy that cannot be read is a miss: dropped there, counted, logged, read again below.

        The copy is removed before the tiers below are read, so a write that lands
        meanwhile is not undone; what is read fills the tiers above as usual.
        """
        if not isinstance(stored, _Cached):
            return super()._recover(family, key, stored, error)  # the source's own copy: it raises
        level, tier = stored.level, self.tiers[stored.level]
        self._failed(level)
        logger.warning("tier %d (%r) held a copy of a %s it cannot read, dropped: %s", level, tier, family.name, error)
        now_ms = self.clock() * 1000
        try:
            with tier._errors():
                tier._remove(family, [key], now_ms)
        except StoreError:
            self._bypass_keys(level, family, [key])
        return self._read_tiers(family, [key], now_ms, below=level).get(key)

    def _read_source(
        self, family: Family, keys: Sequence[bytes], now_ms: float, tokens: _Tokens
    ) -> dict[bytes, Stored]:
        """Read *keys* from the source of truth and fill the tiers above, sharing the reads with other processes.

        Through the nearest tier that has leases (Redis): this process reads the keys
        it leased (unless that tier has them by now: a lease taken just after another
        process ended its own), waits for the fills of the keys other processes hold
        leases on (reading that tier until they land), and reads whatever is still
        missing when their leases are gone, or after `lease_for` seconds.  So processes
        missing the same keys at once read each from the source about once, not once each.
        """
        found: dict[bytes, Stored] = {}
        waited, pause = 0.0, 0.005
        pending = list(keys)
        while pending:
            lease, leased, held = self._take_leases(family, pending)
            try:
                if leased:  # filled by another process since this one missed them, and the lease ended?
                    assert lease is not None
                    found.update(self._read_cache(lease, self.tiers[lease], family, leased, now_ms, tokens))
                # The rest leased here, and the keys that cannot be waited for (bypassed in that tier).
                ask = [k for k in pending if k not in held and k not in found]
                found.update(self._read_from_source(family, ask, now_ms, tokens))
            finally:
                if leased:
                    assert lease is not None
                    self._end_leases_in(lease, family, leased)
            theirs = [k for k in pending if k in held]
            if not theirs:
                break
            if waited >= self.lease_for:
                found.update(self._read_from_source(family, theirs, now_ms, tokens))
                break
            self.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.1)
            assert lease is not None
            found.update(self._read_cache(lease, self.tiers[lease], family, theirs, now_ms, tokens))
            pending = [k for k in theirs if k not in found]
        return found

    def _take_leases(self, family: Family, keys: list[bytes]) -> tuple[int | None, list[bytes], set[bytes]]:
        """The tier leased in, the keys leased here, the keys another process holds a lease on."""
        if not self.lease_for or not keys:
            return None, [], set()
        for level, tier in self._caches:
            ask = [k for k in keys if not self._bypassed(level, family, k)]
            if not self._usable(level) or not ask:
                continue
            try:
                with tier._errors():
                    taken = tier._lease(family, ask, max(1, int(self.lease_for * 1000)))
            except StoreError as exc:
                self._failed(level)
                self._tier_down(level)
                logger.warning("tier %d (%r) failed to lease: %s", level, tier, exc)
                continue
            if taken is None:
                continue  # no leases there: the next tier up may have them
            leased = [k for k, mine in zip(ask, taken, strict=True) if mine]
            return level, leased, {k for k, mine in zip(ask, taken, strict=True) if not mine}
        return None, [], set()

    def _end_leases_in(self, level: int, family: Family, keys: Sequence[bytes]) -> None:
        try:
            with self.tiers[level]._errors():
                self.tiers[level]._end_leases(family, keys)
        except StoreError as exc:  # the leases run out on their own
            logger.warning("tier %d (%r) failed to release leases: %s", level, self.tiers[level], exc)

    def _read_from_source(
        self, family: Family, keys: Sequence[bytes], now_ms: float, tokens: _Tokens
    ) -> dict[bytes, Stored]:
        if not keys:
            return {}
        started = self.clock()
        source = self._source
        with source._stats.timed("read", source), source._errors():
            got = source._read(family, keys, now_ms)
        hits = [(k, s) for k, s in zip(keys, got, strict=True) if s is not None]
        source._stats.add("hits", len(hits))
        source._stats.add("misses", len(keys) - len(hits))
        self._fill_from(family, len(self.tiers) - 1, hits, started, tokens)
        return dict(hits)

    def _fill_from(
        self, family: Family, level: int, hits: list[tuple[bytes, Stored]], started: float, tokens: _Tokens
    ) -> None:
        """Fill the tiers above *level* with what it held (and their row schemas first)."""
        if hits and level:
            # A tier may decode what it is filled with (a hash layout, a callable lifetime):
            # the row schemas of these records are read first, and fill the tiers above first.
            try:
                self._schemas.learn(s.payload for _, s in hits)
            except StoreError as exc:  # the read answers all the same: reading the records will say what is wrong
                logger.warning("no read-fill of %s above tier %d: %s", family.name, level, exc)
                return
            self._fill_above(family, level, hits, started, tokens)

    def _fill_above(
        self, family: Family, level: int, hits: list[tuple[bytes, Stored]], started: float, tokens: _Tokens
    ) -> None:
        """Fill the tiers above *level* with what it held, each with its own lifetime.

        A tier watched for the keys (*tokens*) takes each only while its token is in place.
        """
        now = self.clock()
        if now - started > self.tombstone_ttl / 2:
            # A read this slow may predate a write whose tombstone has already gone.
            return
        floor = self._floors.get(family.name, 0)
        entries = []
        for k, s in hits:
            try:
                if s.version > floor:
                    entries.append(Entry(s.payload, s.version, s.expires_ms, k, _alternates(family, s)))
            except StoreError:  # a copy that cannot be read is not filled: reading it recovers it (`_recover`)
                continue
        for upper in range(level - 1, -1, -1):
            tier = self.tiers[upper]
            if not self._usable(upper):
                continue
            try:
                with tier._errors():
                    watched = tokens.get(upper)
                    ask = [
                        e
                        for e in entries
                        if not self._bypassed(upper, family, e.key) and (watched is None or e.key in watched)
                    ]
                    mine = [tier._apply_lifetime(family, e, now) for e in ask]
                    if not mine:
                        continue
                    if watched is None:
                        tier._fill(family, mine, now * 1000)
                    else:
                        tier._fill_watched(family, mine, [watched[e.key] for e in mine], now * 1000)
                tier._stats.add("fills", len(mine))
            except (StoreError, PartialWrite) as exc:
                # The read itself succeeded, and never fails for a fill (or a tier's lifetime)
                # that could not be made; a fill that may or may not have landed carried the
                # current version, so nothing stale can result.
                self._failed(upper)
                if not isinstance(exc, PartialWrite):
                    self._tier_down(upper)
                logger.warning("tier %d (%r) failed a read-fill: %s", upper, tier, exc)

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        # Alternate keys are resolved by the source of truth: an upper tier may
        # hold a record whose alternate key has since moved to another record.
        with self._source._errors():
            return self._source._resolve(family, index, keys, now_ms)

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        written, expiries = self._write_source(family, entries, now_ms)
        propagate = functools.partial(self._propagate, family, written, expiries, now_ms / 1000)
        beside: _Beside | None = getattr(self._beside, "fills", None)
        if beside is None:
            propagate()
        else:
            self._after_source(lambda: beside.fills.append(beside.pool.submit(propagate)))
        return [e.version for e in written]

    def _after_source(self, work: Callable[[], None]) -> None:
        """Run *work*, what follows a write to the source (fills, invalidations), once the source has committed it.

        That is now, unless the write is a chunk in the source's batch transaction: then
        when that commits, and never if it is rolled back.  A cache filled before, or a
        read let to fill it afresh, could keep what the source then took back.
        """
        beside: _Beside | None = getattr(self._beside, "fills", None)
        if beside is None or beside.batch is None:
            work()
        else:
            beside.batch.after_commit(work)

    @contextlib.contextmanager
    def _chunk_writes(self, now_ms: float, chunks: Sequence[Chunk]) -> Iterator[Callable[[Family, Encoded], None]]:
        """Each chunk's fills of the tiers above run on a thread of their own while the source writes the next.

        The fills run one at a time, in the order of the chunks, and the batch returns
        once every fill has ended, so a caller reads its own writes.  Tiers that keep
        records per thread (`ThreadLocalStore`) are filled by the writing thread, as before.
        Where the source offers a transaction the chunks share (a SQLite file), they are
        written in it, and each chunk's fills wait for the commit that holds it.
        """
        if len(chunks) < 2 or not self._caches or not all(t._writes_from_any_thread() for _, t in self._caches):
            with super()._chunk_writes(now_ms, chunks) as write:
                yield write
            return
        fills: list[Future[None]] = []
        with (
            ThreadPoolExecutor(1, thread_name_prefix="stockstore-fill") as pool,
            self._source._batch_transaction(chunks) as batch,
        ):

            def write_here(family: Family, encoded: Encoded) -> None:
                self._beside.fills = _Beside(pool, fills, batch)  # for `_write`, in the thread that runs it
                try:
                    self._write_encoded(family, encoded, now_ms)
                finally:
                    self._beside.fills = None

            def write(family: Family, encoded: Encoded) -> None:
                if batch is None:
                    write_here(family, encoded)
                else:
                    batch.chunk([e.key for e in encoded[0]] + encoded[1], lambda: write_here(family, encoded))

            yield write
        for fill in fills:
            fill.result()  # a tier's failure is handled there; anything else is raised here

    def _write_source(
        self, family: Family, entries: Sequence[Entry], now_ms: float
    ) -> tuple[list[Entry], dict[int, list[int | None]]]:
        """Write *entries* to the source; the entries as written (their versions) and every cache tier's expiries."""
        now = now_ms / 1000
        source = self._source
        failure: PartialWrite | None = None
        # The source's own expiry travels up with the entries: no cached copy may outlive it.
        entries = [source._apply_lifetime(family, e, now) for e in entries]
        expiries = self._lifetimes(family, entries, now)  # every tier's lifetime checked before anything is written
        try:
            with source._stats.timed("write", source), source._errors():
                stored = source._write(family, entries, now_ms)
            source._stats.add("writes", len(entries))
        except PartialWrite as exc:
            failure = exc
            stored = []
        keys = [e.key for e in entries]
        self._after_source(functools.partial(self._forget_flights, family, keys))
        if failure is not None:
            # The caches lose every key that may have changed: the ones applied (their versions
            # are not known here) and the ones of unknown outcome; the refused stay as they were.
            self._after_source(functools.partial(self._invalidate_caches, family, _may_have_changed(keys, failure)))
            raise failure
        return [replace(e, version=v) for e, v in zip(entries, stored, strict=True)], expiries

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        with self._source._errors():
            count = self._source._remove(family, keys, now_ms)
        self._source._stats.add("deletes", count)
        self._after_source(functools.partial(self._forget_flights, family, keys))
        self._after_source(functools.partial(self._invalidate_caches, family, keys))
        return count

    def _invalidate_caches(self, family: Family, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        for level, tier in self._caches:
            if not self._usable(level):
                self._bypass_keys(level, family, keys)
                continue
            left = self._invalidate_tier(level, tier, family, keys)
            if left:
                self._tier_failed(level, family, left, StoreError("invalidation failed"))

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        now = now_ms / 1000
        source = self._source

        expiries: dict[bytes, list[int | None]] = {}

        def merge_here(key: bytes, current: Stored | None) -> Entry:
            # A patch renews the source's lifetime, as on the source alone; every tier's
            # lifetime is checked here, before the source writes anything.
            entry = source._apply_lifetime(family, merge(key, current), now, renew=True)
            expiries[key] = [e[0] for e in self._lifetimes(family, [entry], now).values()]
            return entry

        try:
            with source._stats.timed("patch", source), source._errors():
                written = source._patch(family, keys, merge_here, now_ms)
            source._stats.add("writes", len(written))
        except PartialWrite as failure:
            self._forget_flights(family, keys)
            self._invalidate_caches(family, _may_have_changed(keys, failure))
            raise
        self._forget_flights(family, keys)
        levels = [level for level, _ in self._caches]
        by_level = {level: [expiries[e.key][n] for e in written] for n, level in enumerate(levels)}
        self._propagate(family, written, by_level, now)
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

    def _find(self, family: Family, search: Search, now_ms: float) -> list[bytes]:
        """Queries are answered by the source of truth; `Query.objects` then reads through the tiers."""
        with self._source._errors():
            return self._source._find(family, search, now_ms)

    def _count_found(self, family: Family, search: Search, now_ms: float) -> int:
        with self._source._errors():
            return self._source._count_found(family, search, now_ms)

    def _reindex(self, family: Family, now_ms: float) -> None:
        with self._source._errors():
            self._source._reindex(family, now_ms)

    def _reset(self, family: Family, chunks: Iterable[list[Entry]], now_ms: float) -> int:
        """The source replaces the family, once every cache tier holds tombstones in place of its old records.

        The tombstones are newer than the old records and older than the new ones
        (encoded as the source takes them): a fill of an old record read before the
        switch, in any process, is refused, so no tier serves an old record once the
        source has switched, and the new records fill the tiers as they are read.
        """
        self._floors[family.name] = versions.next()
        with self._source._errors():
            old = list(self._source._scan(family, now_ms))
        for part in _writer.chunks(old, _RESET_SHARE):
            self._invalidate_caches(family, part)
        with self._source._errors():
            count = self._source._reset(family, chunks, now_ms)
        self._forget_family(family)
        return count

    def _clear(self, family: Family, now_ms: float) -> int:
        with self._source._errors():
            count = self._source._clear(family, now_ms)
        # Fills already under way carry versions from before the clear: refuse them.
        self._floors[family.name] = versions.next()
        self._void_caches(family, now_ms)
        return count

    def _forget_family(self, family: Family) -> None:
        """Drop this process's reads of the family under way: what they read is from before a clear or reset."""
        with self._lock:
            for flight in [f for f in self._flights if f[0] == family.name]:
                del self._flights[flight]

    def _void_caches(self, family: Family, now_ms: float) -> None:
        """Clear the family from every cache tier after the source cleared it."""
        self._forget_family(family)
        for level, tier in self._caches:
            try:
                with tier._errors():
                    tier._clear(family, now_ms)
            except StoreError as exc:
                self._failed(level)
                logger.warning("tier %d (%r) failed to clear %s: %s", level, tier, family.name, exc)

    def _close(self) -> None:
        """Close every tier."""
        for tier in self.tiers:
            tier.close()


@dataclass(frozen=True)
class _Beside:
    """Where a batch's chunk writes leave their fills (see `ChainedStore._chunk_writes`)."""

    pool: ThreadPoolExecutor  # the batch's fill thread
    fills: list[Future[None]]  # the fills left to it
    batch: BatchTransaction | None  # the source's transaction the chunks share, if any


def _check_tiers(tiers: Sequence[BaseStore]) -> list[BaseStore]:
    """The tiers of a chain, each a store and none of them twice, nested chains included.

    A store in two tiers would fill and invalidate itself: a write's invalidation of
    the upper tier would remove what the source of truth below had just written.
    """
    if isinstance(tiers, (str, bytes)):
        raise TypeError(
            f"ChainedStore takes a list of stores, top tier first, not a {type(tiers).__name__}: "
            "stockstore.from_config([url, ...]) builds a chain from URLs"
        )
    tiers = list(tiers)
    if not tiers:
        raise TypeError("ChainedStore needs a non-empty sequence of stores, top tier first")
    for level, tier in enumerate(tiers):
        if not isinstance(tier, BaseStore):
            url = tier if isinstance(tier, str) else "memory://"
            raise TypeError(
                f"ChainedStore tier {level} is a {type(tier).__qualname__}, not a store: {tier!r:.80}; a tier must be "
                f"a store such as MemoryStore(), or build one from a URL with stockstore.from_url({url!r:.80})"
            )
    seen: dict[int, int] = {}
    for level, tier in enumerate(tiers):
        for store in _stores_in(tier):
            first = seen.setdefault(id(store), level)
            if first != level:
                raise ValueError(
                    f"ChainedStore tiers {first} and {level} hold the same store, {store!r:.200}: "
                    "each tier must be a distinct store"
                )
    return tiers


def _stores_in(tier: BaseStore) -> Iterator[BaseStore]:
    """*tier*, and every store inside it if it is a chain."""
    yield tier
    if isinstance(tier, ChainedStore):
        for inner in tier.tiers:
            yield from _stores_in(inner)


def _may_have_changed(keys: Sequence[bytes], failure: PartialWrite) -> list[bytes]:
    """The keys of a partly failed write the source may hold anew: all but the refused."""
    refused = set(failure.failed).difference(failure.unknown)
    return [k for k in keys if k not in refused]


def _alternates(family: Family, stored: Stored) -> tuple[bytes | None, ...]:
    if len(family.keys) == 1 or stored.payload is None:
        return ()
    return family.alternates_of(decode_head(stored.payload)[1])  # key attributes are in the map


_Tokens = dict[int, dict[bytes, bytes]]
"""A read's fill tokens: level -> key -> token, for the cache tiers that give them (`BaseStore._watch`)."""


@dataclass(slots=True)
class _Cached(Stored):
    """A copy read from a cache tier: `_recover` drops it from that *level* if it cannot be read."""

    level: int
