"""`BaseStore`: the public API written once over a few backend primitives.

Public methods validate keys, encode records, resolve lifetimes and translate
errors.  A backend implements underscored primitives: four over opaque units of
bytes (a minimal backend), or the store primitives on encoded keys and `Entry` /
`Stored` units (a fast one), which take and return lists so that it can batch.
Their public home, with the types and rules they use, is `stockstore.backends.base`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _codec, _query, _rules, _units, _writer
from ._entry import Entry, Merge, PartialWrite, Stored, versions
from ._keys import Family, KeyValue, check_key_part, decode_key, encode_key, family_of
from ._lifetime import Lifetime, check_lifetime, expiry_ms
from ._query import Query, Search
from ._record import UNSET, Increment, attributes_of, rebuild
from ._schemas import SCHEMAS, Shelf
from ._stats import Stats
from ._writer import Chunk, Encoded
from .errors import InvalidKeyError, SerializationError, StoreClosedError, StoreError, UnsupportedOperationError

if TYPE_CHECKING:
    import pandas as pd

    from ._frame import Gather

T = TypeVar("T")
R = TypeVar("R")


class BaseStore:
    """Base class of every store; subclass it to add a backend (see docs/extending.md)."""

    #: Records a batch_put encodes and hands to `_write` at a time; a backend may chunk further.
    put_chunk: ClassVar[int] = 2_000

    def __init__(
        self,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if type(namespace) is not str or not namespace:
            raise InvalidKeyError(f"namespace must be a non-empty str, not {namespace!r:.80}")
        check_lifetime(lifetime)
        missing = _unimplemented(type(self))
        if missing:
            raise TypeError(
                f"{type(self).__qualname__} must implement {', '.join(missing)}, or override every store "
                "primitive built on them (docs/extending.md)"
            )
        self.namespace = namespace
        self.lifetime = lifetime
        self.clock = clock
        self._schemas = Shelf(self)
        self._stats = Stats()
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r}>"

    # ------------------------------------------------------------------ primitives
    #
    # A minimal backend implements the four unit primitives (`_load`, `_save`,
    # `_locked`, `_names`) and inherits every store primitive below, decided by
    # `stockstore._rules` through the plans of `stockstore._units`.  A fast backend
    # overrides the store primitives instead, and the conformance kit
    # (`stockstore.testing`) holds it to the same rules.  docs/extending.md has
    # each primitive's contract in full.

    def _load(self, family: Family, names: Sequence[str]) -> list[bytes | None]:
        """The units stored under these names, aligned; ``None`` where there is none."""
        raise NotImplementedError

    def _save(self, family: Family, changes: Mapping[str, bytes | None]) -> None:
        """Store these units by name (``None``: remove that unit); called only inside `_locked`.

        Each unit is replaced whole: a `_load` that runs meanwhile sees it before or after, never torn.
        """
        raise NotImplementedError

    def _locked(self, family: Family) -> contextlib.AbstractContextManager[None]:
        """Hold the family's lock: no other `_locked` of it runs meanwhile, in any thread or process sharing it."""
        raise NotImplementedError

    def _names(self, family: Family) -> Iterator[str]:
        """Every name under which a unit of the family is stored, in any order."""
        raise NotImplementedError

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        """The live records under these primary keys, aligned; ``None`` where missing or expired."""
        return self._follow(family, _units.read(keys, now_ms))

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        """Primary keys of the live records holding these values of alternate key *index* (1-based), aligned."""
        return self._follow(family, _units.resolve(index, keys, now_ms))

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        """Insert or replace whole records; return the versions stored, aligned (0 where refused).

        Keys in *entries* are unique.  A record's old alternate-key values are
        freed; a value held by another live record is a conflict: the entry is not
        written, and once the others are, `PartialWrite` names the refused ones.
        The version stored is `_rules.stored_version`: versions grow per key.
        """
        plan = self._change(family, _units.write(family, entries, now_ms))
        _refusals(plan)
        return [0 if e is None else e.version for e in plan.outcomes]

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        """Delete these records (and free their alternate keys); return how many were live."""
        return self._change(family, _units.remove(keys, now_ms))

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        """Atomically per key: read the current record, ``merge(key, current)``, write the result as `_write` does.

        ``current`` is ``None`` when missing or expired.  No concurrent write of
        the same key may land between the read and the write.  Return the
        entries written with their stored versions, aligned with *keys*; an entry
        refused (its alternate key is held) raises `PartialWrite` once the others are written.
        """
        plan = self._change(family, _units.patch(family, keys, merge, now_ms))
        _refusals(plan)
        return [e for e in plan.outcomes if e is not None]

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        """Store each entry only where `_rules.fill_lands` (tombstones and expired copies included).

        Used by `ChainedStore` on upper tiers: a late fill of an old version must
        never overwrite newer data.  A live record holding an entry's alternate-key
        value gives it up and is removed (`_rules.plan_fill`).
        """
        self._change(family, _units.fill(family, entries, now_ms))

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        """Replace these records by tombstones (`_rules.tombstone`) until *until_ms*, freeing their alternate keys."""
        self._change(family, _units.invalidate(keys, version, until_ms, self.clock() * 1000))

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        """Every live primary key of the family."""
        for names in _writer.chunks(self._names(family), 1000):
            yield from self._follow(family, _units.scan(names, now_ms))

    def _clear(self, family: Family, now_ms: float) -> int:
        """Remove every record of the family; return how many were live."""
        with self._locked(family):
            changes, count = self._follow(family, _units.clear(list(self._names(family)), now_ms))
            if changes:
                self._save(family, changes)
        return count

    def _follow(self, family: Family, plan: _units.Plan[R]) -> R:
        """Run a plan of `stockstore._units`: load the units it asks for until it returns."""
        try:
            names = next(plan)
            while True:
                names = plan.send(self._load(family, names) if names else [])
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _change(self, family: Family, plan: _units.Plan[_units.Change[R]]) -> R:
        """Run a plan that changes units, under the family's lock, and save its changes."""
        with self._locked(family):
            changes, result = self._follow(family, plan)
            if changes:
                self._save(family, changes)
        return result

    def _watch(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bytes] | None:
        """Give each key a fill token, kept *ttl_ms* at most; ``None`` (the default): this store gives none.

        A `ChainedStore` watches a cache tier for the keys it missed before reading
        them below; `_fill_watched` then stores each entry only while its token is
        in place.  Any other fill, invalidation or removal of the key takes the token
        away, and so does whatever the store loses (an eviction, a restart): a late
        fill of what was read before a write never lands, even once the newer copy
        is gone.  A key watched already keeps its token, which every watcher gets: the
        first fill uses it up (processes waiting on another's lease keep waiting for
        that fill).  A store that can lose copies behind a chain's back gives tokens.
        """
        return None

    def _fill_watched(self, family: Family, entries: Sequence[Entry], tokens: Sequence[bytes], now_ms: float) -> None:
        """`_fill` each entry only while its token (aligned) from `_watch` is in place; the token is used up."""
        raise NotImplementedError(f"{type(self).__qualname__} gives fill tokens (_watch) and must take them here")

    def _lease(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bool] | None:
        """Take a lease of *ttl_ms* on each key nobody holds one on: True where taken.

        `ChainedStore` processes that miss the same keys at once lease them in a
        shared tier, so that one of them reads each key from the source of truth
        and the others wait for its fill.  ``None`` (the default): this store has
        no leases other processes can see.
        """
        return None

    def _end_leases(self, family: Family, keys: Sequence[bytes]) -> None:
        """Give up leases taken with `_lease` (a lease that has expired meanwhile may be another's)."""

    def _count(self, family: Family, now_ms: float) -> int:
        return sum(1 for _ in self._scan(family, now_ms))

    def _scan_read(self, family: Family, now_ms: float) -> Iterator[tuple[bytes, Stored]]:
        """Every live record of the family with its key: `_scan`, then `_read` a chunk at a time.

        A backend that can read while it scans overrides it (`get_frame` of everything).
        """
        for chunk in _writer.chunks(self._scan(family, now_ms), 1000):
            for key, stored in zip(chunk, self._read(family, chunk, now_ms), strict=True):
                if stored is not None:
                    yield key, stored

    def _read_frame(self, family: Family, gather: Gather, now_ms: float) -> None:
        """Give every live record of the family to *gather* (`stockstore._frame.Gather`): `get_frame` of everything.

        The default takes `_scan_read` a chunk at a time; a backend that can hand
        over whole pages of stored bytes overrides it (`Gather.take_page`).
        """
        for pairs in _writer.chunks(self._scan_read(family, now_ms), self.put_chunk):
            gather.take([key for key, _ in pairs], [stored for _, stored in pairs])

    def _find(self, family: Family, search: Search, now_ms: float) -> list[bytes]:
        """The keys of the live records matching *search* (`stockstore._query`), in its order and slice.

        The default reads every record of the family and matches it here; a backend
        with indexes answers from them.
        """
        return _query.run(search, self._records_of(family, family.root, now_ms))

    def _count_found(self, family: Family, search: Search, now_ms: float) -> int:
        """How many keys `_find` returns for *search*; a backend with indexes counts without listing them."""
        return len(self._find(family, search, now_ms))

    def _reindex(self, family: Family, now_ms: float) -> None:
        """Build the family's declared indexes from the records stored; the default keeps none to build."""

    def _reset(self, family: Family, chunks: Iterable[list[Entry]], now_ms: float) -> int:
        """Replace every record of the family by the entries of *chunks* (keys unique); return how many are live.

        Readers see the old records or the new ones, never a mix.  The default,
        for a minimal backend, saves the whole change at once while `_locked`;
        a fast backend that overrides the store primitives overrides this too.
        """
        if _unimplemented(type(self)) or type(self)._save is BaseStore._save:
            raise UnsupportedOperationError(f"{self!r} cannot replace a family's records at once (reset)")
        entries = [entry for chunk in chunks for entry in chunk]
        with self._locked(family):
            changes, count = self._follow(family, _units.reset(family, list(self._names(family)), entries, now_ms))
            self._save(family, changes)
        return count

    def _indexed(self, family: Family, entry: Stored) -> dict[str, _query.Indexed | None]:
        """The values the family's indexes hold for a record (``None``: not in that index, or a tombstone).

        Taken from `Entry.indexed` where the writer set it, else decoded from the payload.
        """
        if entry.payload is None:
            return dict.fromkeys(family.indexes)
        attrs = getattr(entry, "indexed", None)
        if attrs is None:
            attrs = _codec.decode_record(entry.payload, self._schemas.get)[1]
        return {name: _query.indexed(attrs.get(name)) for name in family.indexes}

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """The one place a backend maps its driver's errors to `stockstore.errors`."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ helpers

    def _now(self) -> tuple[float, float]:
        now = self.clock()
        return now, now * 1000

    def _expiry(self, obj: Any, now: float, family: Family | None = None, key: bytes | None = None) -> int | None:
        """The expiry of *obj* (a record of *family* under *key*) under this store's lifetime.

        A callback that raises, or returns what is no lifetime, raises `StoreError`
        naming the record and this store.
        """
        try:
            return expiry_ms(self.lifetime, obj, now)
        except Exception as exc:
            record = (
                "" if family is None or key is None else f" of {family.name} {_writer.public_key(family, key)!r:.80}"
            )
            raise StoreError(f"the lifetime{record} in {self!r} failed: {type(exc).__name__}: {exc}") from exc

    def _lifetime_per_record(self) -> bool:
        """Whether a record's expiry depends on the record (a callable lifetime)."""
        return callable(self.lifetime)

    def _apply_lifetime(self, family: Family, entry: Entry, now: float, *, renew: bool = False) -> Entry:
        """*entry* with this store's lifetime applied, never outliving its own expiry.

        With *renew* (a patch at a chain's source of truth) the store's lifetime
        applies afresh, as on a patch of the store alone: its expiry replaces the
        entry's.  Row schemas never expire: the records that need them may live on.
        """
        if self.lifetime is None or entry.payload is None or family.name == SCHEMAS.name:
            return entry
        if callable(self.lifetime):
            tag, attrs = _codec.decode_record(entry.payload, self._schemas.get)
            obj: Any = rebuild(family.class_for(tag, family.root) or family.root, attrs)
        else:
            obj = None
        own = self._expiry(obj, now, family, entry.key)
        if renew:
            return entry if own == entry.expires_ms else replace(entry, expires_ms=own)
        if own is None or (entry.expires_ms is not None and entry.expires_ms <= own):
            return entry
        return replace(entry, expires_ms=own)

    def _decode(self, family: Family, cls: type, key: bytes, stored: Stored | None) -> Any:
        """The record of *cls* (or a subclass) held under *key*; ``None`` if missing or of another class."""
        decoded = self._decoded(family, key, stored)
        if decoded is None:
            return None
        tag, attrs = decoded
        try:
            found = family.class_for(tag, cls)
        except SerializationError as exc:
            raise self._unreadable(family, key, exc) from None
        return None if found is None else rebuild(found, attrs)

    def _decoded(self, family: Family, key: bytes, stored: Stored | None) -> tuple[str, dict[str, Any]] | None:
        """The class tag and attributes of the record *stored* under *key*; ``None`` if missing.

        A stored record carries its own key: one that is another key's (a copied value)
        or cannot be decoded raises `SerializationError` naming *key* -- or, in a chain,
        is dropped from the cache tier that held it and read again below (`_recover`).
        """
        while stored is not None and stored.payload is not None:
            try:
                tag, attrs = _codec.decode_record(stored.payload, self._schemas.get)
                if not family.owns(attrs, key):
                    raise family.not_owned(tag, attrs)
                return tag, attrs
            except (SerializationError, InvalidKeyError) as exc:
                stored = self._recover(family, key, stored, exc)
        return None

    def _recover(self, family: Family, key: bytes, stored: Stored, error: Exception) -> Stored | None:
        """What to read instead of a copy of *key* that could not be decoded; a store has nothing else: it raises.

        `ChainedStore` drops a cache tier's copy and reads the key again from the tiers below.
        """
        raise self._unreadable(family, key, error) from error

    def _unreadable(self, family: Family, key: bytes, error: Exception) -> SerializationError:
        detail = str(error).removeprefix("stored bytes are not a stockstore record: ")
        return SerializationError(
            f"{family.name} {_writer.public_key(family, key)!r:.80} in {self!r} cannot be read: {detail}; "
            "delete it, or write the record again"
        )

    def _lookup(
        self, family: Family, refs: Sequence[tuple[int, tuple[KeyValue, ...]]], now_ms: float
    ) -> list[bytes | None]:
        """Primary keys for parsed key references (any declared key), aligned."""
        out: list[bytes | None] = [None] * len(refs)
        by_index: dict[int, list[int]] = {}
        for pos, (index, values) in enumerate(refs):
            if index == 0:
                out[pos] = encode_key(values)
            else:
                by_index.setdefault(index, []).append(pos)
        for index, positions in by_index.items():
            with self._errors():
                found = self._resolve(family, index, [encode_key(refs[p][1]) for p in positions], now_ms)
            for pos, key in zip(positions, found, strict=True):
                out[pos] = key
        return out

    # ------------------------------------------------------------------ single records

    def put(self, obj: Any) -> None:
        """Insert or replace the whole record."""
        self._check_open()
        self._put_many([obj], single=True)

    def get(self, cls: type[T], key: Any) -> T | None:
        """The record of *cls* under *key* (any declared key), or ``None``."""
        self._check_open()
        return self.batch_get(cls, [key])[0]

    def delete(self, obj_or_cls: Any, key: Any = None) -> None:
        """Delete ``delete(obj)`` or ``delete(cls, key)``; a missing record is fine."""
        self._check_open()
        if key is None and not isinstance(obj_or_cls, type):
            self.batch_delete([obj_or_cls])
        else:
            self.batch_delete(obj_or_cls, [key])

    def patch(self, cls: type, key: Any, changes: Mapping[str, Any]) -> None:
        """Set these attributes, leaving every other one untouched; create the record if missing.

        *key* is the primary key (a bare value, a tuple, or a mapping).  Atomic
        per record: concurrent patches of different attributes never lose each other.
        """
        self._check_open()
        family = family_of(cls)
        index, values = family.parse_key(key)
        if index:
            raise InvalidKeyError(f"{family.name}: patch takes the primary key {family.primary}")
        self._patch_many(family, cls, {encode_key(values): self._changes(family, values, changes)}, single=True)

    # ------------------------------------------------------------------ batches

    def batch_put(self, objs: Iterable[Any]) -> None:
        """Insert or replace many records in few round trips.

        Everything is validated and encoded before anything is written.  If the
        backend fails part-way, `BatchError.failed` names what was not applied.
        """
        self._check_open()
        self._put_many(list(objs), single=False)

    def batch_get(self, cls: type[T], keys: Iterable[Any]) -> list[T | None]:
        """Records for *keys*, aligned; ``None`` where missing."""
        self._check_open()
        family = family_of(cls)
        refs = [family.parse_key(k) for k in _many_keys(family, keys, "batch_get", "get")]
        with self._stats.timed("read", self):
            _, now_ms = self._now()
            primaries = self._lookup(family, refs, now_ms)
            wanted = list(dict.fromkeys(k for k in primaries if k is not None))
            with self._errors():
                found = dict(zip(wanted, self._read(family, wanted, now_ms), strict=True))
            out: list[T | None] = []
            for (index, values), key in zip(refs, primaries, strict=True):
                obj = None if key is None else self._decode(family, cls, key, found.get(key))
                if obj is not None and index and family.key_values(index, attributes_of(obj).get) != values:
                    obj = None  # the alternate key moved on between look-up and read
                out.append(obj)
        hits = sum(1 for obj in out if obj is not None)
        self._stats.add("hits", hits)
        self._stats.add("misses", len(out) - hits)
        return out

    def batch_delete(self, objs_or_cls: Any, keys: Iterable[Any] | None = None) -> int:
        """Delete many records, ``batch_delete(objs)`` or ``batch_delete(cls, keys)``.

        Returns how many existed and were removed.
        """
        self._check_open()
        if keys is None:
            objs = list(objs_or_cls)
            total = 0
            for family, group in _group_by_family(objs):
                encoded = [encode_key(family.primary_of(attributes_of(o))) for o in group]
                total += self._remove_keys(family, encoded)
            return total
        family = family_of(objs_or_cls)
        wanted = list(_many_keys(family, keys, "batch_delete", "delete"))
        if len(family.keys[0]) == 1 and all(type(k) is str for k in wanted):
            # What parse_key and _lookup make of them, without two tuples kept a key: a batch of
            # those outlives the collector's young generations and sets off a full collection.
            encoded = [encode_key((k,)) for k in wanted]
        else:
            refs = [family.parse_key(k) for k in wanted]
            _, now_ms = self._now()
            encoded = [k for k in self._lookup(family, refs, now_ms) if k is not None]
        return self._remove_keys(family, encoded)

    def batch_patch(self, cls: type, patches: Iterable[Mapping[str, Any]]) -> None:
        """Patch many records; each mapping holds the primary key attributes and the changes."""
        self._check_open()
        family = family_of(cls)
        merged: dict[bytes, dict[str, Any]] = {}
        for mapping in patches:
            if not isinstance(mapping, Mapping):
                raise InvalidKeyError(f"batch_patch takes mappings, not {mapping!r:.80}")
            values = family.primary_of(mapping)
            changes = {k: v for k, v in mapping.items() if k not in family.primary}
            merged.setdefault(encode_key(values), {}).update(self._changes(family, values, changes))
        self._patch_many(family, cls, merged, single=False)

    def incr(self, cls: type, key: Any, attr: str, amount: int | float = 1) -> int | float:
        """Add *amount* to the attribute *attr* of the record under *key*, atomically; return the new value.

        Ints stay ints (64-bit: an overflow is refused), floats stay floats, an int
        plus a float is a float; a missing record or attribute starts at 0.
        """
        self._check_open()
        family = family_of(cls)
        index, values = family.parse_key(key)
        if index:
            raise InvalidKeyError(f"{family.name}: incr takes the primary key {family.primary}")
        if type(amount) not in (int, float):
            raise SerializationError(
                f"{family.name} {key!r:.80}: incr adds an int or a float, not {type(amount).__qualname__}: "
                f"{amount!r:.80}"
            )
        if type(attr) is not str or any(attr in names for names in family.keys):
            raise InvalidKeyError(f"{family.name}: incr adds to an attribute that is not part of a key, not {attr!r}")
        increment = Increment(amount)
        self._patch_many(family, cls, {encode_key(values): {attr: increment}}, single=True)
        return increment.result

    def reset(self, cls: type, objs: Iterable[Any]) -> int:
        """Replace every record of *cls* by *objs*, atomically; return how many records it now holds.

        Everything is checked before anything changes.  Readers, in any process,
        see the whole old dataset or the whole new one, never a mix.
        """
        self._check_open()
        family = family_of(cls)
        if cls is not family.root:
            raise UnsupportedOperationError(
                f"reset replaces a whole family: call it with {family.name}, not {cls.__qualname__}"
            )
        objs = list(objs)
        for obj in objs:
            if family_of(type(obj)).name != family.name:
                raise InvalidKeyError(f"reset of {family.name} got a record of another family: {obj!r:.80}")
        _, now_ms = self._now()
        chunks = self._put_chunks(objs)
        _held_once(family, objs)
        with self._stats.timed("reset", self), self._errors():
            count = self._reset(family, (encode()[0] for _, _, encode in chunks), now_ms)
        self._stats.add("writes", count)
        return count

    # ------------------------------------------------------------------ finding

    def find(self, cls: type[T], **filters: Any) -> Query[T]:
        """A lazy query of the records of *cls* whose indexed attributes pass every filter.

        ``find(Security, sector="tech", price__gte=10.0)``: filters by suffix are
        ``__ne``, ``__in``, ``__gt``, ``__gte``, ``__lt``, ``__lte`` and
        ``__startswith``, on attributes of ``__stockstore_indexes__`` only
        (else `QueryError`).  See docs/finding.md.
        """
        self._check_open()
        family = family_of(cls)
        return Query(self, cls, family, Search(_query.parse(family, filters)))

    def reindex(self, cls: type) -> None:
        """Build the indexes the family of *cls* declares from the records already stored.

        Needed once after adding a name to ``__stockstore_indexes__`` of a family
        that already has records; until then a query on it raises `QueryError`.
        """
        self._check_open()
        family = family_of(cls)
        _, now_ms = self._now()
        with self._errors():
            self._reindex(family, now_ms)

    def _found_keys(self, cls: type, family: Family, search: Search) -> list[bytes]:
        """Run a query of `find`: the backend answers for a whole family; a subclass is matched here."""
        self._check_open()
        _, now_ms = self._now()
        with self._stats.timed("find", self), self._errors():
            if cls is not family.root:
                return _query.run(search, self._records_of(family, cls, now_ms))
            return self._find(family, search, now_ms)

    def _found_count(self, cls: type, family: Family, search: Search) -> int:
        if cls is not family.root:
            return len(self._found_keys(cls, family, search))
        self._check_open()
        _, now_ms = self._now()
        with self._stats.timed("find", self), self._errors():
            return self._count_found(family, search, now_ms)

    def _records_of(self, family: Family, cls: type, now_ms: float) -> Iterator[tuple[bytes, Mapping[str, Any]]]:
        """Every live record of *cls* (subclasses included) with its key, decoded."""
        for key, stored in self._scan_read(family, now_ms):
            decoded = self._decoded(family, key, stored)
            if decoded is not None and (cls is family.root or family.class_for(decoded[0], cls) is not None):
                yield key, decoded[1]

    # ------------------------------------------------------------------ frames

    def put_frame(self, cls: type, df: pd.DataFrame) -> None:
        """Store one record of *cls* per row of *df* (extra ``stockstore[pandas]``).

        The key attributes are columns or named index levels; every other column is
        an attribute.  Float and int columns are written as compact row records
        (docs/frames.md), in chunks, as `batch_put` writes: everything is checked
        before anything is written, and `BatchError` names what was not.
        """
        self._check_open()
        frames = _frames()
        family = family_of(cls)
        frame = frames.Frame(family, cls, df)  # checked whole: nothing is written unless every row is valid
        if not frame.keys:
            return
        now, now_ms = self._now()
        # Lifetimes are part of the check: a callback that fails, fails before anything is written.
        if self._lifetime_per_record():
            expiries = [
                self._expiry(obj, now, family, key) for key, obj in zip(frame.keys, frame.objects(), strict=True)
            ]
        else:
            expiries = [self._expiry(None, now)] * len(frame.keys)
        chunks: list[Chunk] = []
        for start in range(0, len(frame.keys), self.put_chunk):
            stop = min(start + self.put_chunk, len(frame.keys))
            encode = functools.partial(frame.encode, start, stop, expiries, now_ms)
            if frame.schema is not None:  # kept in the store before the first record that needs it
                encode = functools.partial(self._with_schemas, [frame.schema], encode)
            chunks.append((family, frame.keys[start:stop], encode))
        self._write_chunks(chunks, now_ms, len(frame.keys), single=False)

    def get_frame(
        self, cls: type, keys: Iterable[Any] | None = None, columns: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """The records of *cls* as a DataFrame indexed by primary key (extra ``stockstore[pandas]``).

        *keys* (any declared key form, as for `batch_get`) defaults to every record
        of *cls*; keys not found are left out.  *columns* defaults to every attribute.
        Float and int attributes held by every record come back float64 / int64,
        bit for bit.
        """
        self._check_open()
        family = family_of(cls)
        if keys is not None:
            keys = _many_keys(family, keys, "get_frame", None)
        frames = _frames()
        recover = functools.partial(self._recover, family)
        gather = frames.Gather(family, cls, frames.wanted_columns(columns), self._schemas.get, recover)
        _, now_ms = self._now()
        if keys is None:
            with self._errors():
                self._read_frame(family, gather, now_ms)
            return gather.frame()
        refs = [family.parse_key(k) for k in keys]
        for chunk in _writer.chunks(gather.want(refs, self._lookup(family, refs, now_ms)), self.put_chunk):
            with self._errors():
                gather.take(chunk, self._read(family, chunk, now_ms))
        return gather.frame()

    # ------------------------------------------------------------------ listing

    def keys(self, cls: type) -> Iterator[Any]:
        """Every stored primary-key value of *cls*: a scalar, or a tuple for a composite key."""
        self._check_open()
        return self._keys(cls)

    def _keys(self, cls: type) -> Iterator[Any]:
        family = family_of(cls)
        _, now_ms = self._now()
        for chunk in _writer.chunks(self._scan_errors(family, now_ms), 1000):
            if cls is not family.root:
                chunk = self._of_class(family, cls, chunk, now_ms)
            yield from _writer.public_keys(family, chunk)

    def count(self, cls: type) -> int:
        """How many records of *cls* are stored."""
        self._check_open()
        family = family_of(cls)
        if cls is not family.root:
            return sum(1 for _ in self.keys(cls))
        _, now_ms = self._now()
        with self._errors():
            return self._count(family, now_ms)

    def clear(self, cls: type) -> int:
        """Remove every record of *cls* (subclasses included); return how many."""
        self._check_open()
        family = family_of(cls)
        _, now_ms = self._now()
        if cls is not family.root:
            keys = [encode_key(k if type(k) is tuple else (k,)) for k in self.keys(cls)]
            return self._remove_keys(family, keys)
        with self._errors():
            return self._clear(family, now_ms)

    # ------------------------------------------------------------------ observing

    def stats(self) -> dict[str, Any]:
        """What this store was asked since it was made: counters, and latencies of its recent calls.

        ``hits``/``misses`` count records read and not found, ``writes`` records
        written (put, patch, reset), ``deletes`` records removed, ``fills`` and
        ``invalidations`` what a `ChainedStore` did to it as a tier, ``errors`` calls
        that raised; ``latency_ms`` gives, per operation, its calls and the
        p50/p90/p99/max of the last 4,096 (docs/observing.md).  Thread-safe.
        """
        return {"store": repr(self), **self._stats.snapshot()}

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release what the store opened; every call after it raises `StoreClosedError` (closing again is fine)."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Release what the backend opened (clients it built from a URL); `close` calls it once."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed: make a new store to go on")

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals of the public methods

    def _scan_errors(self, family: Family, now_ms: float) -> Iterator[bytes]:
        with self._errors():
            yield from self._scan(family, now_ms)

    def _of_class(self, family: Family, cls: type, keys: list[bytes], now_ms: float) -> list[bytes]:
        with self._errors():
            stored = self._read(family, keys, now_ms)
        return [k for k, s in zip(keys, stored, strict=True) if self._decode(family, cls, k, s) is not None]

    def _changes(self, family: Family, values: tuple[KeyValue, ...], changes: Mapping[str, Any]) -> dict[str, Any]:
        changes = dict(changes)
        for name, value in zip(family.primary, values, strict=True):
            # Compared with the type: True == 1 and 1.0 == 1, but neither is the key 1.
            if name in changes and (type(changes[name]) is not type(value) or changes[name] != value):
                raise InvalidKeyError(f"{family.name}: patch cannot change primary key attribute {name!r}")
        for index in range(1, len(family.keys)):
            for name in family.keys[index]:
                if name in changes and changes[name] is not None and changes[name] is not UNSET:
                    check_key_part(name, changes[name])  # a bad key value is a key error, as for put
        # Complete: a batch either encodes or writes nothing.  UNSET and increments are no values.
        values_only = {k: v for k, v in changes.items() if v is not UNSET and type(v) is not Increment}
        checked, _ = _check_record(family, values, values_only, None)
        if checked is values_only:
            return changes
        return {k: checked.get(k, v) for k, v in changes.items()}

    def _put_many(self, objs: list[Any], *, single: bool) -> None:
        """Check every record, then encode and write them `put_chunk` records at a time.

        Nothing is written unless every record is valid (the codec's check is
        complete: what passes it always encodes), and memory holds the encoded
        bytes of about two chunks, never of the whole batch; only a wide
        record's float row is packed by the check (8 bytes a float, a fraction
        of the record's own size), as touching its floats twice costs more.
        """
        _, now_ms = self._now()
        self._write_chunks(self._put_chunks(objs), now_ms, len(objs), single=single)

    def _put_chunks(self, objs: list[Any]) -> list[Chunk]:
        """Every record checked, in chunks of `put_chunk` to encode (the last record of a key wins)."""
        now, now_ms = self._now()
        chunks: list[Chunk] = []
        rows = self._stores_rows()
        per_record = self._lifetime_per_record()
        fixed = None if per_record else self._expiry(None, now)
        for family, group in _group_by_family(objs):
            puts = _Puts()
            for obj in group:
                attrs = attributes_of(obj)
                values = family.primary_of(attrs)
                key = encode_key(values)
                # A bad key value is a key error, before the codec's check.
                alternates = family.alternates_of(attrs) if len(family.keys) > 1 else ()
                attrs, wide = _check_record(family, values, attrs, family.tag(type(obj)) if rows else None)
                # Lifetimes are part of the check: a callback that fails, fails before anything is written.
                expires = self._expiry(obj, now, family, key) if per_record else fixed
                puts.add(key, obj, attrs, alternates, wide, expires)
            for start in range(0, len(puts.keys), self.put_chunk):
                part = range(start, min(start + self.put_chunk, len(puts.keys)))
                encode = functools.partial(self._encode_puts, family, puts, part, now_ms)
                chunks.append((family, puts.keys[start : part.stop], encode))
        return chunks

    def _encode_puts(self, family: Family, puts: _Puts, part: range, now_ms: float) -> Encoded:
        live: list[Entry] = []
        expired: list[bytes] = []
        schemas: dict[bytes, _codec.RowSchema] = {}
        packer = _codec.packer()
        first = versions.take(len(part))  # one clock reading a chunk
        for n, at in enumerate(part):
            key, attrs, layout, expires = puts.keys[at], puts.attrs[at], puts.layouts[at], puts.expires[at]
            if expires is not None and expires <= now_ms:
                expired.append(key)  # an already-expired lifetime means "not kept here", and put replaces
                continue
            if layout is None:
                payload = _codec.pack((family.tag(type(puts.objs[at])), attrs))
            else:
                target = layout.target()
                schemas[target[0].id] = target[0]
                payload = _codec.encode_wide(attrs, (layout, puts.rows[at]), packer, target)
            indexed = attrs if family.indexes else None
            live.append(Entry(payload, first + n, expires, key, puts.alternates[at], indexed))
        return self._with_schemas(schemas.values(), lambda: (live, expired))

    def _with_schemas(self, schemas: Iterable[_codec.RowSchema], encode: Callable[[], Encoded]) -> Encoded:
        """A chunk, encoded, once the row schemas its records need are in the store.

        A store that may lose them behind its records' backs (`_schemas_may_vanish`:
        a flush, a restart, an eviction) writes them again with every chunk.
        """
        encoded = encode()
        for schema in schemas:
            self._schemas.save(schema, again=self._schemas_may_vanish())
        return encoded

    def _schemas_may_vanish(self) -> bool:
        """Whether the store may lose a row schema it kept (a flush, a restart, an eviction): no, by default."""
        return False

    def _stores_rows(self) -> bool:
        """Whether wide records are written as row records, their schema kept in this store.

        Yes where nothing evicts a schema behind the records' backs (memcached may).
        """
        return True

    def _write_encoded(self, family: Family, encoded: Encoded, now_ms: float) -> None:
        live, expired = encoded
        with self._errors():
            if expired:
                self._remove(family, expired, now_ms)
            if live:
                self._write(family, live, now_ms)

    def _write_chunks(self, chunks: Sequence[Chunk], now_ms: float, total: int, *, single: bool) -> None:
        """Write a batch's chunks, streamed (`_writer.write_chunks`)."""
        with self._stats.timed("write", self), self._chunk_writes(now_ms, chunks) as write:
            _writer.write_chunks(
                chunks,
                write,
                threaded=self._writes_from_any_thread(),
                total=total,
                what="records were not written",
                single=single,
            )
        self._stats.add("writes", sum(len(keys) for _, keys, _ in chunks))

    @contextlib.contextmanager
    def _chunk_writes(self, now_ms: float, chunks: Sequence[Chunk]) -> Iterator[Callable[[Family, Encoded], None]]:
        """How a batch of *chunks* writes each chunk; a `ChainedStore` fills its upper tiers beside the next one."""
        yield functools.partial(self._write_encoded, now_ms=now_ms)

    @contextlib.contextmanager
    def _batch_transaction(self, chunks: Sequence[Chunk]) -> Iterator[_writer.BatchTransaction | None]:
        """A transaction the writes of *chunks* share (a `ChainedStore` over this store writes through it).

        ``None``: each chunk's writes are transactions of their own (the default).
        """
        yield None

    def _writes_from_any_thread(self) -> bool:
        """Whether `_write` may run on another thread than the caller's (see `_write_chunks`)."""
        return True

    def _remove_keys(self, family: Family, keys: list[bytes]) -> int:
        if not keys:
            return 0
        _, now_ms = self._now()
        with self._stats.timed("delete", self), self._errors():
            removed = self._remove(family, list(dict.fromkeys(keys)), now_ms)
        self._stats.add("deletes", removed)
        return removed

    def _patch_many(self, family: Family, cls: type, changes: dict[bytes, dict[str, Any]], *, single: bool) -> None:
        if not changes:
            return
        now, now_ms = self._now()
        tag = family.tag(cls)
        missing: set[bytes] = set()  # ids of row schemas a merge met that this process did not know
        rows = self._stores_rows()
        unsaved: list[_codec.RowSchema] = []  # row schemas merges could not use: saved afterwards
        packer = _codec.packer()  # merges run one at a time, in this thread

        def merge(key: bytes, current: Stored | None) -> Entry:
            plain = not any(v is UNSET or type(v) is Increment for v in changes[key].values())
            if current is None or current.payload is None:
                stored_tag, attrs = tag, dict(zip(family.primary, decode_key(key), strict=True))
                version, expires = versions.next(), None
            else:
                version, expires = max(versions.next(), current.version + 1), current.expires_ms
                try:
                    # A row record takes the changes in place, undecoded: its schema is in this store.
                    patched = None
                    if plain and not callable(self.lifetime):
                        patched = _codec.patch_row(current.payload, changes[key])
                    if patched is not None:
                        if not family.owns(patched[0], key):
                            raise family.not_owned(tag, patched[0])
                        if self.lifetime is not None:
                            expires = self._expiry(None, now, family, key)  # a lifetime applies afresh to the patch
                        return Entry(patched[1], version, expires, key, family.alternates_of(patched[0]))
                    stored_tag, attrs = _codec.decode_record(current.payload)
                except _codec.UnknownSchemaError as exc:
                    missing.add(exc.schema_id)
                    raise
                except SerializationError as exc:
                    raise self._unreadable(family, key, exc) from None
                if not family.owns(attrs, key):  # a value copied from another key: never patched into this one
                    raise self._unreadable(family, key, family.not_owned(stored_tag, attrs))
            _apply_changes(family, key, attrs, changes[key])
            if self.lifetime is not None:
                # A lifetime applies afresh to the patched record; without one the expiry stays.
                obj = None
                if callable(self.lifetime):
                    obj = rebuild(family.class_for(stored_tag, family.root) or cls, dict(attrs))
                expires = self._expiry(obj, now, family, key)
            payload = None
            if rows:
                wide = _codec.check_wide(stored_tag, attrs)  # checked already: this finds the layout
                # Only a schema already in the store: none can be written from inside a backend's primitive.
                target = None if wide is None else wide[0].target()
                if wide is not None and target is not None and target[0].id in self._schemas.saved:
                    payload = _codec.encode_wide(attrs, wide, packer, target)
                elif target is not None:
                    unsaved.append(target[0])
            if payload is None:
                payload = _codec.pack((stored_tag, attrs))
            return Entry(payload, version, expires, key, family.alternates_of(attrs), attrs if family.indexes else None)

        # A merge runs inside the backend's primitive (a transaction, a lock), no place to read
        # a schema from the store: a row record of a schema this process does not know fails
        # its merge, the schema is read here, and what was not applied is patched again.
        # Each round learns a schema, so the rounds end.
        keys, partly = list(changes), False  # partly: some of the batch may have been applied
        while True:
            missing.clear()
            try:
                with self._stats.timed("patch", self), self._errors():
                    self._patch(family, keys, merge, now_ms)
                self._stats.add("writes", len(keys))
                # The row schemas merges wanted, saved now, so that later patches can use them.
                for schema in {s.id: s for s in unsaved}.values():
                    self._schemas.save(schema)
                return
            except (PartialWrite, StoreError) as exc:
                error: BaseException = exc
                if isinstance(exc, PartialWrite):
                    keys, partly = exc.failed, True
                elif not (missing or partly):
                    raise
            if missing:
                try:
                    for schema_id in missing:
                        self._schemas.get(schema_id)
                    continue
                except StoreError as unreadable:
                    error = unreadable
            if not partly:
                raise error
            failure = _writer.failure([(family, keys)], error, len(changes), "patches were not applied", single=single)
            raise failure from failure.__cause__


@dataclass(eq=False)
class _Puts:
    """A family's checked records of a batch_put, waiting to be encoded, as columns.

    A column per field, not a tuple per record: objects that outlive the check,
    one or more per record, made the garbage collector walk every record of the
    batch (each float of each) in a full collection, a tenth of a batch's time.
    The last record of a key takes the place of the first.
    """

    keys: list[bytes] = field(default_factory=list)
    objs: list[Any] = field(default_factory=list)
    attrs: list[Mapping[str, Any]] = field(default_factory=list)
    alternates: list[tuple[bytes | None, ...]] = field(default_factory=list)
    layouts: list[_codec.WideLayout | None] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)  # a wide record's packed row (`_codec.check_wide`), else b""
    expires: list[int | None] = field(default_factory=list)
    places: dict[bytes, int] = field(default_factory=dict)  # key -> its index in the columns

    def add(
        self,
        key: bytes,
        obj: Any,
        attrs: Mapping[str, Any],
        alternates: tuple[bytes | None, ...],
        wide: _codec.Wide | None,
        expires: int | None,
    ) -> None:
        layout, row = (None, b"") if wide is None else wide
        at = self.places.get(key)
        if at is None:
            self.places[key] = len(self.keys)
            self.keys.append(key)
            self.objs.append(obj)
            self.attrs.append(attrs)
            self.alternates.append(alternates)
            self.layouts.append(layout)
            self.rows.append(row)
            self.expires.append(expires)
        else:
            self.objs[at], self.attrs[at], self.alternates[at] = obj, attrs, alternates
            self.layouts[at], self.rows[at], self.expires[at] = layout, row, expires


def _apply_changes(family: Family, key: bytes, attrs: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply a patch's *changes* to the attributes of the record under *key*: values, `UNSET`, increments."""
    for name, value in changes.items():
        if value is UNSET:
            attrs.pop(name, None)
        elif type(value) is Increment:
            attrs[name] = value.result = _added(family, key, name, attrs.get(name, 0), value.amount)
        else:
            attrs[name] = value


def _added(family: Family, key: bytes, name: str, held: Any, amount: int | float) -> int | float:
    """*held* plus *amount*, as `BaseStore.incr` adds: numbers only, ints within 64 bits."""
    if type(held) not in (int, float):
        raise SerializationError(
            f"{family.name} {_writer.public_key(family, key)!r:.80}: attribute {name!r} holds a "
            f"{type(held).__qualname__}, not a number: incr adds to an int or a float only"
        )
    total: int | float = held + amount
    if type(total) is int and not -(2**63) <= total < 2**63:
        raise SerializationError(
            f"{family.name} {_writer.public_key(family, key)!r:.80}: attribute {name!r} would overflow 64 bits "
            f"({held} + {amount}); store it as a float to go on"
        )
    return total


def _held_once(family: Family, objs: Sequence[Any]) -> None:
    """Refuse a dataset (checked already) in which two records hold one alternate-key value: `reset` writes it whole."""
    if len(family.keys) == 1:
        return
    latest = {encode_key(family.primary_of(a)): family.alternates_of(a) for a in map(attributes_of, objs)}
    holders: dict[tuple[int, bytes], bytes] = {}
    for key, alternates in latest.items():
        for index, alt in enumerate(alternates, 1):
            if alt is not None and holders.setdefault((index, alt), key) != key:
                raise InvalidKeyError(
                    f"reset of {family.name}: {_writer.public_key(family, holders[(index, alt)])!r:.80} and "
                    f"{_writer.public_key(family, key)!r:.80} hold one value of the alternate key "
                    f"{family.keys[index]}; each value belongs to one record"
                )


def _many_keys(family: Family, keys: Iterable[Any], method: str, single: str | None) -> Iterable[Any]:
    """*keys*, unless it is one str or bytes: iterated, its characters would be looked up as keys, and miss.

    *single* is the method that takes one key instead, if there is one.
    """
    if isinstance(keys, (str, bytes)):
        one = "" if single is None else f"{single}({family.name}, {keys!r:.80}) or "
        named = "keys=" if single is None else ""
        raise TypeError(
            f"{method} takes an iterable of keys, not a {type(keys).__name__}: "
            f"use {one}{method}({family.name}, {named}[{keys!r:.80}])"
        )
    return keys


def _check_record(
    family: Family, values: tuple[KeyValue, ...], attrs: Mapping[str, Any], tag: str | None
) -> tuple[Mapping[str, Any], _codec.Wide | None]:
    """*attrs* checked, and their row layout and row: `_codec.check_wide` for a record of class *tag*, else no row.

    Attributes the codec refuses are checked again with their numpy scalars made
    Python values (`_codec.plain`), and those are what is stored; only then, so a
    record without any costs nothing more.  What is still refused raises a
    `SerializationError` naming the record (its family and primary key *values*),
    the attribute and what to do: in a batch of thousands, the one to fix.
    """
    try:
        return attrs, _check_attributes(attrs, tag)
    except SerializationError as exc:
        error = exc
    converted = _codec.plain(attrs)
    if converted is not None:
        try:
            return converted, _check_attributes(converted, tag)
        except SerializationError as exc:
            attrs, error = converted, exc
    path, error = _codec.locate(attrs, error)
    where = f"attribute {path:.200}: " if path else ""
    raise SerializationError(f"{family.name} {family.public_key(values)!r:.80}: {where}{error}") from None


def _check_attributes(attrs: Mapping[str, Any], tag: str | None) -> _codec.Wide | None:
    if tag is None:
        _codec.check_attributes(attrs)
        return None
    return _codec.check_wide(tag, attrs)


def _frames() -> Any:
    """The DataFrame module, imported on first use: ``import stockstore`` loads no pandas."""
    try:
        from . import _frame
    except ModuleNotFoundError as exc:
        if exc.name not in ("pandas", "numpy"):
            raise
        raise ImportError("put_frame and get_frame need pandas and numpy: pip install 'stockstore[pandas]'") from exc
    return _frame


_UNIT_PRIMITIVES = ("_load", "_save", "_locked", "_names")
_STORE_PRIMITIVES = ("_read", "_resolve", "_write", "_remove", "_patch", "_fill", "_invalidate", "_scan", "_clear")


def _unimplemented(cls: type) -> list[str]:
    """The unit primitives *cls* lacks, if it inherits a store primitive built on them."""
    if all(getattr(cls, name) is not getattr(BaseStore, name) for name in _STORE_PRIMITIVES):
        return []
    return [name for name in _UNIT_PRIMITIVES if getattr(cls, name) is getattr(BaseStore, name)]


def _refusals(plan: _rules.Plan) -> None:
    """Raise `PartialWrite` for the entries a plan refused (it was saved: the others are written)."""
    if plan.refused:
        raise PartialWrite(plan.refused, InvalidKeyError(plan.problem))


def _group_by_family(objs: Sequence[Any]) -> list[tuple[Family, list[Any]]]:
    groups: dict[str, tuple[Family, list[Any]]] = {}
    for obj in objs:
        family = family_of(type(obj))
        groups.setdefault(family.name, (family, []))[1].append(obj)
    return list(groups.values())
