"""In-process stores: `MemoryStore` (shared by threads) and `ThreadLocalStore` (one per thread).

Both keep the codec's bytes, never the caller's objects, so mutating what you
put or got changes nothing stored, and a memory tier returns exactly what a
SQL or Redis tier would.

``find`` is answered from in-process indexes (`_Index`), built for a family on
its first query and kept in step by every change after it, under the store's lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from .. import _query
from .._lifetime import Lifetime
from .._query import Condition, Indexed, Search
from ..errors import InvalidKeyError
from .base import (
    BaseStore,
    Entry,
    Family,
    Merge,
    PartialWrite,
    Plan,
    Slot,
    Stored,
    holds,
    plan_fill,
    plan_write,
    slots,
    tombstone,
)

_Slot = tuple[str, bytes]  # (family name, encoded primary key)
_TOKENS_KEPT = 100_000  # fill tokens held before those past their end are dropped
_tokens = itertools.count(1)  # fill tokens: never two alike in this process


_ABOVE_KEYS = b"\xff"  # sorts after every encoded key (a msgpack array never starts with 0xff)


class _Index:
    """One family's indexes: per attribute, the keys of each value, and numbers and strings in order.

    A search takes the candidates of each condition from them, intersects them
    smallest first, and checks every candidate against the conditions exactly.
    """

    def __init__(self, attrs: Iterable[str]) -> None:
        self.values: dict[bytes, dict[str, Indexed]] = {}  # every record's key -> the values it holds
        self.equal: dict[str, dict[tuple[int, Indexed], set[bytes]]] = {a: {} for a in attrs}
        self.ordered: dict[str, SortedList] = {a: SortedList() for a in attrs}  # (rank, value, key)

    def add(self, key: bytes, values: Mapping[str, Indexed | None]) -> None:
        self.discard(key)
        mine = self.values[key] = {a: v for a, v in values.items() if v is not None}
        for attr, value in mine.items():
            self.equal[attr].setdefault(_kind(value), set()).add(key)
            if type(value) is not bool:
                self.ordered[attr].add((_kind(value)[0], value, key))

    def discard(self, key: bytes) -> None:
        for attr, value in self.values.pop(key, {}).items():
            keys = self.equal[attr][_kind(value)]
            keys.discard(key)
            if not keys:
                del self.equal[attr][_kind(value)]
            if type(value) is not bool:
                self.ordered[attr].discard((_kind(value)[0], value, key))

    def candidates(self, condition: Condition) -> set[bytes]:
        """Keys that may pass *condition*, a superset of those that do."""
        attr, op, value = condition.attr, condition.op, condition.value
        equal = self.equal[attr]
        if op == "eq":
            return set(equal.get(_kind(value), ()))
        if op == "in":
            return set().union(*(equal.get(_kind(v), ()) for v in value))
        if op == "ne":
            return set().union(*equal.values())
        if op == "startswith":
            end = _after_prefix(value)
            return {k for _, _, k in self.ordered[attr].irange((2, value), (2, end) if end else (3,))}
        rank = 2 if type(value) is str else 1
        low = (rank, value) if op in ("gt", "gte") else (rank,)
        high = (rank, value, _ABOVE_KEYS) if op in ("lt", "lte") else (rank + 1,)
        return {k for _, _, k in self.ordered[attr].irange(low, high)}

    def find(self, search: Search, live: Callable[[bytes], bool]) -> list[bytes]:
        if search.conditions:
            pools = sorted((self.candidates(c) for c in search.conditions), key=len)
            keys = pools[0].intersection(*pools[1:])
        else:
            keys = set(self.values)
        found = [
            (key, self.values[key])
            for key in keys
            if live(key) and all(c.matches(self.values[key].get(c.attr)) for c in search.conditions)
        ]
        found.sort(key=_query.sort_key(search.order))
        return [key for key, _ in found[search.start : search.stop]]


def _kind(value: Indexed) -> tuple[int, Indexed]:
    """How a value is told apart in an index: bools (0) never equal numbers (1); strings are 2."""
    return (0 if type(value) is bool else 2 if type(value) is str else 1, value)


def _after_prefix(prefix: str) -> str | None:
    """The least string greater than every string starting with *prefix*; ``None``: there is none."""
    while prefix and ord(prefix[-1]) == 0x10FFFF:
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


@dataclass
class _State:
    """One store's records, alternate-key index, query indexes and lock."""

    records: OrderedDict[_Slot, Entry] = field(default_factory=OrderedDict)  # oldest first, for LRU
    alternates: dict[tuple[str, int, bytes], bytes] = field(default_factory=dict)  # -> primary key
    tokens: dict[_Slot, tuple[bytes, float]] = field(default_factory=dict)  # fill tokens and when they end (ms)
    indexes: dict[str, _Index] = field(default_factory=dict)  # family name -> its indexes, once queried
    lock: threading.RLock = field(default_factory=threading.RLock)


class MemoryStore(BaseStore):
    """Records in this process's memory, safe to share between threads.

    ``max_items`` bounds the number of records kept, evicting the least
    recently used; ``clock`` is injectable so tests can tick time.
    """

    def __init__(
        self,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        max_items: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime, clock=clock)
        if max_items is not None and (type(max_items) is not int or max_items < 1):
            raise ValueError(f"max_items must be a positive int or None, not {max_items!r}")
        self.max_items = max_items
        self._shared = _State()

    @property
    def _state(self) -> _State:
        return self._shared

    # ---- helpers, called with the lock held

    def _unindex(self, state: _State, name: str, entry: Entry) -> None:
        for index, alt in enumerate(entry.alternates, 1):
            if alt is not None and state.alternates.get((name, index, alt)) == entry.key:
                del state.alternates[(name, index, alt)]

    def _set(self, state: _State, family: Family, entry: Entry, now_ms: float) -> None:
        slot = (family.name, entry.key)
        state.tokens.pop(slot, None)  # any change of the record takes its fill token away
        old = state.records.pop(slot, None)
        if old is not None:
            self._unindex(state, family.name, old)
        state.records[slot] = entry
        if entry.live(now_ms):  # an expired record holds no alternate key
            for index, alt in slots(entry):
                state.alternates[(family.name, index, alt)] = entry.key
        found = state.indexes.get(family.name)
        if found is not None:
            if entry.payload is None:
                found.discard(entry.key)
            else:
                found.add(entry.key, self._indexed(family, entry))
        while self.max_items is not None and len(state.records) > self.max_items:
            (name, _), evicted = state.records.popitem(last=False)
            self._unindex(state, name, evicted)
            if name in state.indexes:
                state.indexes[name].discard(evicted.key)

    def _drop(self, state: _State, family: Family, key: bytes) -> Entry | None:
        state.tokens.pop((family.name, key), None)
        old = state.records.pop((family.name, key), None)
        if old is not None:
            self._unindex(state, family.name, old)
            if family.name in state.indexes:
                state.indexes[family.name].discard(key)
        return old

    def _index(self, state: _State, family: Family) -> _Index:
        """The family's indexes, built from its records on first use."""
        found = state.indexes.get(family.name)
        if found is None:
            found = _Index(family.indexes)
            for (name, key), entry in state.records.items():
                if name == family.name and entry.payload is not None:
                    found.add(key, self._indexed(family, entry))
            state.indexes[family.name] = found
        return found

    def _held(self, state: _State, family: Family, entries: Sequence[Entry]) -> dict[bytes, Stored | None]:
        return {e.key: state.records.get((family.name, e.key)) for e in entries}

    def _holders(
        self, state: _State, family: Family, entries: Sequence[Entry], now_ms: float
    ) -> dict[Slot, tuple[bytes, bool]]:
        """The record holding each alternate-key value of *entries*, and whether it is live (see `_rules`)."""
        out: dict[Slot, tuple[bytes, bool]] = {}
        for entry in entries:
            for slot in slots(entry):
                holder = state.alternates.get((family.name, *slot))
                record = None if holder is None else state.records.get((family.name, holder))
                if record is not None and slot in slots(record):
                    out[slot] = (record.key, record.live(now_ms))
        return out

    def _apply(self, state: _State, family: Family, plan: Plan, now_ms: float) -> None:
        for key, record in plan.records.items():
            if record is None:
                self._drop(state, family, key)
            else:
                self._set(state, family, record, now_ms)

    # ---- primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        state = self._state
        out: list[Stored | None] = []
        with state.lock:
            for key in keys:
                entry = state.records.get((family.name, key))
                if entry is not None and entry.live(now_ms):
                    state.records.move_to_end((family.name, key))
                    out.append(entry)
                else:
                    out.append(None)
        return out

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        state = self._state
        out: list[bytes | None] = []
        with state.lock:
            for alt in keys:
                key = state.alternates.get((family.name, index, alt))
                entry = None if key is None else state.records.get((family.name, key))
                out.append(key if holds(entry, (index, alt), now_ms) else None)
        return out

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        state = self._state
        with state.lock:
            held, holders = self._held(state, family, entries), self._holders(state, family, entries, now_ms)
            plan = plan_write(family, entries, held, holders, now_ms)
            self._apply(state, family, plan, now_ms)
        if plan.refused:
            raise PartialWrite(plan.refused, InvalidKeyError(plan.problem))
        return [0 if e is None else e.version for e in plan.outcomes]

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        state = self._state
        with state.lock:
            return sum(1 for key in keys if (old := self._drop(state, family, key)) is not None and old.live(now_ms))

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        state = self._state
        with state.lock:
            merged = []
            for key in keys:
                current = state.records.get((family.name, key))
                merged.append(merge(key, current if current is not None and current.live(now_ms) else None))
            # Merged first, written second: a corrupt record fails the batch before any write.
            held, holders = self._held(state, family, merged), self._holders(state, family, merged, now_ms)
            plan = plan_write(family, merged, held, holders, now_ms)
            self._apply(state, family, plan, now_ms)
        if plan.refused:
            raise PartialWrite(plan.refused, InvalidKeyError(plan.problem))
        return [e for e in plan.outcomes if e is not None]

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        state = self._state
        with state.lock:
            held, holders = self._held(state, family, entries), self._holders(state, family, entries, now_ms)
            self._apply(state, family, plan_fill(family, entries, held, holders, now_ms), now_ms)

    def _watch(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bytes]:
        """Fill tokens (see `BaseStore._watch`): an eviction (``max_items``) loses a copy behind a chain's back."""
        state = self._state
        until = self.clock() * 1000 + ttl_ms
        with state.lock:
            if len(state.tokens) > _TOKENS_KEPT:  # the tokens of reads that never filled: dropped once over
                now_ms = self.clock() * 1000
                for slot in [s for s, (_, end) in state.tokens.items() if end <= now_ms]:
                    del state.tokens[slot]
            now_ms = self.clock() * 1000
            taken = []
            for key in keys:
                held = state.tokens.get((family.name, key))
                if held is None or held[1] <= now_ms:  # none in place: a new one
                    held = state.tokens[(family.name, key)] = (next(_tokens).to_bytes(8, "big"), until)
                taken.append(held[0])
        return taken

    def _fill_watched(self, family: Family, entries: Sequence[Entry], tokens: Sequence[bytes], now_ms: float) -> None:
        state = self._state
        with state.lock:
            mine = []
            for entry, token in zip(entries, tokens, strict=True):
                held = state.tokens.pop((family.name, entry.key), None)
                if held is not None and held[0] == token and held[1] > now_ms:
                    mine.append(entry)
            self._fill(family, mine, now_ms)

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        state = self._state
        with state.lock:
            for key in keys:
                self._set(state, family, tombstone(key, self._drop(state, family, key), version, until_ms), 0)

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        state = self._state
        with state.lock:
            keys = [key for (name, key), e in state.records.items() if name == family.name and e.live(now_ms)]
        return iter(keys)

    def _find(self, family: Family, search: Search, now_ms: float) -> list[bytes]:
        state = self._state
        with state.lock:

            def live(key: bytes) -> bool:
                entry = state.records.get((family.name, key))
                return entry is not None and entry.live(now_ms)

            return self._index(state, family).find(search, live)

    def _reindex(self, family: Family, now_ms: float) -> None:
        state = self._state
        with state.lock:
            state.indexes.pop(family.name, None)
            self._index(state, family)

    def _reset(self, family: Family, chunks: Iterable[list[Entry]], now_ms: float) -> int:
        """The new records are encoded first, then swapped in under the lock: readers see old or new."""
        entries = [entry for chunk in chunks for entry in chunk]
        state = self._state
        with state.lock:
            for slot in [slot for slot in state.records if slot[0] == family.name]:
                self._drop(state, family, slot[1])
            plan = plan_write(family, entries, {}, {}, now_ms)
            self._apply(state, family, plan, now_ms)
        return sum(1 for e in plan.outcomes if e is not None and e.live(now_ms))

    def _clear(self, family: Family, now_ms: float) -> int:
        state = self._state
        with state.lock:
            slots = [slot for slot in state.records if slot[0] == family.name]
            dropped = [self._drop(state, family, key) for _, key in slots]
            return sum(1 for old in dropped if old is not None and old.live(now_ms))


class ThreadLocalStore(MemoryStore):
    """A `MemoryStore` whose records each thread sees only for itself.

    Useful as a lock-free-feeling first tier for worker threads; records put by
    one thread are invisible to the others.
    """

    def __init__(
        self,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        max_items: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime, max_items=max_items, clock=clock)
        self._local = threading.local()

    def _writes_from_any_thread(self) -> bool:
        return False  # a writer thread would write into its own records, not the caller's

    @property
    def _state(self) -> _State:
        try:
            return self._local.state  # type: ignore[no-any-return]
        except AttributeError:
            self._local.state = _State()
            return self._local.state  # type: ignore[no-any-return]
