"""The rules every store obeys so that a `ChainedStore` never serves stale data: pure decisions, no I/O.

Versions.  Every record carries a version; a store that may be a source of truth
stores ``max(new, held + 1)`` (`stored_version`), so versions grow per key whatever
the writers' clocks say.  A cache keeps a fill only if it is newer than what it
holds (`fill_lands`), so a read that fetched an old version before a write cannot
put it back after the write.

Tombstones.  An invalidation leaves a record without payload (`tombstone`) that
keeps the newest version seen, so older fills are refused until it expires.
Readers never see tombstones.

Expiry.  A copy whose expiry has passed is not live: never returned, holding no
alternate key.  It still counts for versions: an expired newer copy refuses an
older fill too.  Only a fill of the very same version refreshes it.

Alternate keys.  Each alternate-key value is held by at most one live record.  A
write that wants a value another live record holds is refused (`plan_write`); a
fill takes the value over and drops the other record, since the fill is newer
and its source of truth has already moved the value (`plan_fill`).

Memory and SQL stores, and the unit-based default every minimal backend inherits
(`stockstore._units`), decide with these functions.  The Redis stores decide in a
Lua script on the server (stockstore/backends/redis.lua), the one other copy;
the conformance kit (`stockstore.testing`) holds every store to the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ._entry import Entry, Stored
from ._keys import Family

Slot = tuple[int, bytes]
"""An alternate-key value: the key's index in ``__stockstore_keys__`` (1 for the first alternate) and its encoding."""


class Held(Protocol):
    """What a store holds under a key, as far as the rules look: a `Stored`, or a backend's own row."""

    @property
    def version(self) -> int: ...

    def live(self, now_ms: float) -> bool:
        """A record (not a tombstone) whose expiry, if any, is after *now_ms*."""

    def expired(self, now_ms: float) -> bool:
        """A record (not a tombstone) whose expiry has passed."""


def stored_version(held: Held | None, version: int) -> int:
    """The version a write of *version* stores over *held* (tombstones and expired copies count)."""
    return version if held is None or held.version < version else held.version + 1


def fill_lands(held: Held | None, entry: Stored, now_ms: float) -> bool:
    """Whether a cache keeps a fill of *entry* where it holds *held*.

    Only a newer version lands.  An expired copy of this very version is
    refreshed, else a tier whose own lifetime ran out would never cache the
    record again; a tombstone of it still refuses it.
    """
    if held is None or held.version < entry.version:
        return True
    return held.version == entry.version and held.expired(now_ms)


def tombstone(key: bytes, held: Held | None, version: int, until_ms: int) -> Entry:
    """What an invalidation of *key* leaves: no payload, no alternate key, kept until *until_ms*.

    Its version is at least *version* and at least what was held, so a fill
    older than either is refused.
    """
    floor = version if held is None else max(version, held.version)
    return Entry(None, floor, until_ms, key, ())


def slots(entry: Entry) -> list[Slot]:
    """The alternate-key values *entry* holds."""
    return [(index, alt) for index, alt in enumerate(entry.alternates, 1) if alt is not None]


def holds(record: Entry | None, slot: Slot, now_ms: float) -> bool:
    """Whether *record* is live and holds the alternate-key value *slot*."""
    if record is None or not record.live(now_ms):
        return False
    index, alt = slot
    return len(record.alternates) >= index and record.alternates[index - 1] == alt


@dataclass
class Plan:
    """What one atomic write or fill changes in a store, decided from what it held."""

    outcomes: list[Entry | None]
    """Aligned with the entries: each as stored (its version decided), or ``None`` where not applied."""
    records: dict[bytes, Entry | None] = field(default_factory=dict)
    """The records to store, by key, in order; ``None``: remove that record."""
    released: dict[Slot, bytes] = field(default_factory=dict)
    """Alternate-key values whose holder in the store is not their holder after: slot -> that holder."""
    refused: list[bytes] = field(default_factory=list)
    """Keys of the entries not written because another live record holds one of their alternate keys."""
    problem: str = ""
    """Why they were refused."""


class _Claims:
    """Which live record holds each alternate-key value, as a plan's decisions go."""

    def __init__(self, holders: Mapping[Slot, tuple[bytes, bool]]) -> None:
        self.holders = holders
        self.claims = {slot: key for slot, (key, live) in holders.items() if live}
        self.owned: dict[bytes, set[Slot]] = {}
        for slot, key in self.claims.items():
            self.owned.setdefault(key, set()).add(slot)

    def taken(self, key: bytes, wanted: Sequence[Slot]) -> bool:
        """Whether another live record holds one of these values."""
        return any(self.claims.get(slot, key) != key for slot in wanted)

    def take(self, entry: Entry, wanted: Sequence[Slot], now_ms: float) -> None:
        """*entry* replaces its record: its old values are free, its new ones its own if it is live."""
        self.forget(entry.key)
        if entry.live(now_ms) and wanted:
            self.claims.update((slot, entry.key) for slot in wanted)
            self.owned[entry.key] = set(wanted)

    def forget(self, key: bytes) -> None:
        for slot in self.owned.pop(key, ()):
            del self.claims[slot]

    def released(self) -> dict[Slot, bytes]:
        return {slot: holder for slot, (holder, _) in self.holders.items() if self.claims.get(slot, holder) != holder}


def plan_write(
    family: Family,
    entries: Sequence[Entry],
    held: Mapping[bytes, Held | None],
    holders: Mapping[Slot, tuple[bytes, bool]],
    now_ms: float,
) -> Plan:
    """A source's write of whole records (keys unique), in order.

    *held* is what the store holds under each entry's key, tombstones and expired
    copies included; *holders* gives, for each alternate-key value the entries
    hold, the record holding it in the store and whether that record is live.
    An entry whose value another live record holds (in the store, or an earlier
    entry) is refused; the others are stored with versions that grow per key.
    """
    plan = Plan([])
    claims = _Claims(holders)
    for entry in entries:
        wanted = slots(entry)
        if claims.taken(entry.key, wanted):
            plan.outcomes.append(None)
            plan.refused.append(entry.key)
            plan.problem = f"{family.name}: an alternate key {list(family.keys[1:])} is already held by another record"
            continue
        claims.take(entry, wanted, now_ms)
        version = stored_version(held.get(entry.key), entry.version)
        stored = entry if version == entry.version else replace(entry, version=version)
        plan.records[entry.key] = stored
        plan.outcomes.append(stored)
    plan.released = claims.released()
    return plan


def plan_fill(
    family: Family,
    entries: Sequence[Entry],
    held: Mapping[bytes, Held | None],
    holders: Mapping[Slot, tuple[bytes, bool]],
    now_ms: float,
) -> Plan:
    """A cache's fill (keys unique): each entry lands only where `fill_lands`.

    *held* and *holders* as for `plan_write`.  A cache yields alternate-key values
    to the newer record it is filled with: a live record holding one is removed
    (its source of truth has moved the value on).  An expired holder holds none.
    """
    plan = Plan([])
    claims = _Claims(holders)
    current: dict[bytes, Held | None] = dict(held)
    for entry in entries:
        if not fill_lands(current.get(entry.key), entry, now_ms):
            plan.outcomes.append(None)
            continue
        wanted = slots(entry)
        for slot in wanted:
            other = claims.claims.get(slot)
            if other is not None and other != entry.key:
                claims.forget(other)
                current[other] = None
                plan.records[other] = None
        claims.take(entry, wanted, now_ms)
        current[entry.key] = entry
        plan.records[entry.key] = entry
        plan.outcomes.append(entry)
    plan.released = claims.released()
    return plan
