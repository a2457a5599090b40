"""Stores made of named units: what a minimal backend keeps, and the plans that read and change them.

A minimal backend (docs/extending.md) keeps opaque *units* of bytes under short
ASCII *names*, per family: one unit per record (its key, version, expiry,
payload and alternate keys) and one per alternate-key value (the key of the
record holding it).  `BaseStore` runs the plans below over four primitives:
`_load` units by name, `_save` changes while `_locked`, and list `_names`.

The plans are generators that never do I/O themselves: each ``yield`` hands
out the names it needs loaded and receives their units (``None`` where there
is none), and a plan that changes the store returns the changes to save with
its result.  So the same plans can be driven by a synchronous store or by an
asyncio one, and every decision is the one `stockstore._rules` makes for the
other stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import TypeAlias, TypeVar

import msgpack

from . import _rules
from ._entry import Entry, Merge, Stored
from ._keys import Family
from ._rules import Slot
from .errors import SerializationError

R = TypeVar("R")
Units: TypeAlias = list[bytes | None]
Changes: TypeAlias = dict[str, bytes | None]
"""Units to store by name; ``None``: remove the unit."""
Plan: TypeAlias = Generator[list[str], Units, R]
"""Yields the names it needs loaded, is sent their units, returns its result."""
Change: TypeAlias = tuple[Changes, R]
"""What a plan that changes the store returns: the changes to save, and its result."""
Pointers: TypeAlias = dict[Slot, "bytes | None"]
"""Alternate-key values, each with the key of the record its unit points at (``None``: no unit)."""

_RECORD = "r"
_POINTER = "a"


def record_name(key: bytes) -> str:
    """The name of the unit of the record under *key*: ``r`` and a digest, safe as a file name."""
    return _RECORD + hashlib.blake2b(key, digest_size=16).hexdigest()


def pointer_name(slot: Slot) -> str:
    """The name of the unit of an alternate-key value: ``a<index>-`` and a digest."""
    index, alt = slot
    return f"{_POINTER}{index}-{hashlib.blake2b(alt, digest_size=16).hexdigest()}"


def is_record_name(name: str) -> bool:
    return name.startswith(_RECORD)


def encode_record(entry: Entry) -> bytes:
    """A record's unit: it carries its own key, so a unit found under another name is never taken for it."""
    return _pack([_RECORD, entry.key, entry.version, entry.expires_ms, entry.payload, list(entry.alternates)])


def decode_record(unit: bytes | None, key: bytes | None = None) -> Entry | None:
    """The record in *unit*; one of another key than *key* (a copied or corrupt unit) raises."""
    if unit is None:
        return None
    try:
        kind, held, version, expires_ms, payload, alternates = msgpack.unpackb(unit, raw=False)
        valid = (
            kind == _RECORD
            and type(held) is bytes
            and type(version) is int
            and (expires_ms is None or type(expires_ms) is int)
            and (payload is None or type(payload) is bytes)
            and type(alternates) is list
            and all(alt is None or type(alt) is bytes for alt in alternates)
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        valid = False
    if not valid:
        raise SerializationError("a stored unit is not a stockstore record")
    if key is not None and held != key:
        raise SerializationError("a stored record is under the name of another key")
    return Entry(payload, version, expires_ms, held, tuple(alternates))


def encode_pointer(slot: Slot, holder: bytes) -> bytes:
    return _pack([_POINTER, slot[0], slot[1], holder])


def _pack(value: list[object]) -> bytes:
    packed: bytes = msgpack.packb(value)
    return packed


def decode_pointer(unit: bytes | None, slot: Slot) -> bytes | None:
    """The key of the record an alternate-key value points at, checked to be this value's."""
    if unit is None:
        return None
    try:
        kind, index, alt, holder = msgpack.unpackb(unit, raw=False)
        valid = kind == _POINTER and (index, alt) == slot and type(holder) is bytes
    except (ValueError, TypeError, msgpack.UnpackException):
        valid = False
    if not valid:
        raise SerializationError("a stored unit is not a stockstore alternate key")
    return holder  # type: ignore[no-any-return]


def live(stored: Stored | None, now_ms: float) -> Stored | None:
    return stored if stored is not None and stored.live(now_ms) else None


# ---------------------------------------------------------------------------- reads


def read(keys: Sequence[bytes], now_ms: float) -> Plan[list[Stored | None]]:
    units = yield [record_name(k) for k in keys]
    return [live(decode_record(u, k), now_ms) for k, u in zip(keys, units, strict=True)]


def resolve(index: int, alts: Sequence[bytes], now_ms: float) -> Plan[list[bytes | None]]:
    wanted = [(index, alt) for alt in alts]
    units = yield [pointer_name(s) for s in wanted]
    holders = [decode_pointer(u, s) for s, u in zip(wanted, units, strict=True)]
    named = [h for h in holders if h is not None]
    records = dict(zip(named, map(decode_record, (yield [record_name(h) for h in named]), named), strict=True))
    return [
        h if h is not None and _rules.holds(records[h], s, now_ms) else None
        for h, s in zip(holders, wanted, strict=True)
    ]


def scan(names: Iterable[str], now_ms: float) -> Plan[list[bytes]]:
    """The live keys among the record units of *names* (a chunk of what `_names` lists)."""
    mine = [n for n in names if is_record_name(n)]
    units = yield mine
    records = [decode_record(u) for u in units]
    return [r.key for r in records if r is not None and r.live(now_ms)]


# ---------------------------------------------------------------------------- changes


def write(family: Family, entries: Sequence[Entry], now_ms: float) -> Plan[Change[_rules.Plan]]:
    records, pointers = yield from _state([e.key for e in entries], [s for e in entries for s in _rules.slots(e)])
    plan = _rules.plan_write(family, entries, records, _holders(records, pointers, now_ms), now_ms)
    return _changes(records, pointers, plan.records, now_ms), plan


def fill(family: Family, entries: Sequence[Entry], now_ms: float) -> Plan[Change[_rules.Plan]]:
    records, pointers = yield from _state([e.key for e in entries], [s for e in entries for s in _rules.slots(e)])
    plan = _rules.plan_fill(family, entries, records, _holders(records, pointers, now_ms), now_ms)
    return _changes(records, pointers, plan.records, now_ms), plan


def patch(family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> Plan[Change[_rules.Plan]]:
    """Merge each record as it is held (``None`` where missing or expired), then write the results."""
    units = yield [record_name(k) for k in keys]
    merged = [merge(k, live(decode_record(u, k), now_ms)) for k, u in zip(keys, units, strict=True)]
    return (yield from write(family, merged, now_ms))


def invalidate(keys: Sequence[bytes], version: int, until_ms: int, now_ms: float) -> Plan[Change[None]]:
    records, pointers = yield from _state(keys, [])
    after = {k: _rules.tombstone(k, records.get(k), version, until_ms) for k in keys}
    return _changes(records, pointers, after, now_ms), None


def remove(keys: Sequence[bytes], now_ms: float) -> Plan[Change[int]]:
    records, pointers = yield from _state(keys, [])
    gone = sum(1 for k in keys if live(records.get(k), now_ms) is not None)
    return _changes(records, pointers, dict.fromkeys(keys), now_ms), gone


def clear(names: Sequence[str], now_ms: float) -> Plan[Change[int]]:
    """Remove every unit of *names* (all the family's); how many live records there were."""
    live_keys = yield from scan(names, now_ms)
    return dict.fromkeys(names), len(live_keys)


def _state(keys: Sequence[bytes], wanted: Sequence[Slot]) -> Plan[tuple[dict[bytes, Entry | None], Pointers]]:
    """What an update needs: the records of *keys* and of whoever holds the *wanted* values.

    Also every value those records hold, with the key its unit points at
    (``None``: no unit), so that `_changes` can keep every pointer in step.
    """
    wanted = list(dict.fromkeys(wanted))
    units = yield [record_name(k) for k in keys] + [pointer_name(s) for s in wanted]
    records = {k: decode_record(u, k) for k, u in zip(keys, units[: len(keys)], strict=True)}
    pointers: dict[Slot, bytes | None] = {
        s: decode_pointer(u, s) for s, u in zip(wanted, units[len(keys) :], strict=True)
    }
    others = list(dict.fromkeys(h for h in pointers.values() if h is not None and h not in records))
    if others:
        records.update(zip(others, map(decode_record, (yield [record_name(h) for h in others]), others), strict=True))
    held = [s for r in records.values() if r is not None for s in _rules.slots(r) if s not in pointers]
    held = list(dict.fromkeys(held))
    if held:
        pointers.update(zip(held, map(decode_pointer, (yield [pointer_name(s) for s in held]), held), strict=True))
    return records, pointers


def _holders(
    records: Mapping[bytes, Entry | None], pointers: Pointers, now_ms: float
) -> dict[Slot, tuple[bytes, bool]]:
    """Each value whose unit points at a record that holds it, with whether that record is live (for `_rules`)."""
    out: dict[Slot, tuple[bytes, bool]] = {}
    for slot, holder in pointers.items():
        record = None if holder is None else records.get(holder)
        if record is not None and slot in _rules.slots(record):
            out[slot] = (record.key, record.live(now_ms))
    return out


def _changes(
    before: Mapping[bytes, Entry | None], pointers: Pointers, after: Mapping[bytes, Entry | None], now_ms: float
) -> Changes:
    """The units to save for records *after* (``None``: removed), every loaded value pointing at its live holder."""
    changes: Changes = {record_name(k): None if r is None else encode_record(r) for k, r in after.items()}
    final = {**before, **after}
    owners = {s: r.key for r in final.values() if r is not None and r.live(now_ms) for s in _rules.slots(r)}
    for slot, holder in pointers.items():
        owner = owners.get(slot)
        if owner != holder:
            changes[pointer_name(slot)] = None if owner is None else encode_pointer(slot, owner)
    return changes


def reset(family: Family, names: Sequence[str], entries: Sequence[Entry], now_ms: float) -> Plan[Change[int]]:
    """Remove every unit of *names* (all the family's) and store *entries* (keys unique) in their place."""
    yield from ()
    plan = _rules.plan_write(family, entries, {}, {}, now_ms)
    pointers: Pointers = {s: None for e in entries for s in _rules.slots(e)}
    changes: Changes = dict.fromkeys(names)
    changes.update(_changes({}, pointers, plan.records, now_ms))
    return changes, sum(1 for e in plan.outcomes if e is not None and e.live(now_ms))
