"""`MemcacheStore`: records in memcached, on one server or several.

Every item is ``<17-byte header><codec payload>``: the header holds the
record's version and its exact expiry in milliseconds, or a flag that says it
never expires (memcached expires in whole seconds, so the header decides what
is live); a tombstone is the header alone.  Item keys are ``ss:`` +
base64url(sha256(msgpack([namespace, family, generation, kind, ...key
bytes]))): always 46 ASCII characters, whatever the key value holds, and
distinct inputs never share a key.

memcached cannot list its keys, so `keys` and `count` raise
`UnsupportedOperationError`.  `clear` bumps a per-(namespace, family)
*generation* number that is part of every item key: the old items become
unreachable and memcached evicts them in time.  It cannot know how many
records it dropped and returns 0.  See docs/backends.md for the details
(generation eviction, alternate-key uniqueness under concurrent writers).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import msgpack
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError, MemcacheServerError

from .._codec import decode_head
from .._entry import versions
from .._keys import decode_key
from .._lifetime import Lifetime
from ..errors import (
    BackendUnavailableError,
    InvalidKeyError,
    SerializationError,
    StoreError,
    UnsupportedOperationError,
)
from .base import BaseStore, Entry, Family, Merge, PartialWrite, Stored, fill_lands, slots, stored_version, tombstone

MemcacheClient: TypeAlias = Client | PooledClient | HashClient  # pymemcache ships no types: Any to mypy

_HEADER = struct.Struct(">qBq")  # version, whether the record expires (_EXPIRES or _NEVER), expiry in ms (0 when never)
_EXPIRES, _NEVER = ord("E"), ord("N")  # a flag of its own: every expiry is a number a record may have
_LATEST_EXPIRY = 2**63 - 1  # the header's largest: a later expiry is kept as this (and one before -this as -this)
_VERSION_LIMIT = 2**63 - 1  # versions stay below it, so that a write's + 1 still fits
_THIRTY_DAYS = 30 * 86400  # memcached reads a larger expiry as an absolute unix time
_TOKEN_END = struct.Struct(">q")  # when a fill token ends, epoch ms: after its 16 random bytes
_MEGABYTE = 1024 * 1024
_TOMBSTONE_SECONDS = 300  # how long a delete keeps refusing late, older cache fills


class MemcacheStore(BaseStore):
    """Records in memcached: ``MemcacheStore("memcache://h1:11211,h2:11211")``.

    *servers_or_client_or_url* is a ``memcache://`` URL, a list of
    ``"host:port"`` strings, or a ready pymemcache client (left open by
    `close`; a plain ``Client`` is not thread-safe, so share a ``PooledClient``
    or a ``HashClient(use_pooling=True)`` between threads).  A store that builds
    its client uses a ``PooledClient`` for one server and a ``HashClient`` for
    several, with replies awaited (``default_noreply=False``), *timeout* /
    *connect_timeout* seconds on every socket, and no silent failover: a node
    that fails raises `BackendUnavailableError` instead of answering "miss" or
    sending its keys to another node (where stale copies would come back later).

    *cas_retries* bounds the compare-and-set attempts of a contended patch;
    *chunk_size* the keys per multi-key command; *max_value_size* the largest
    item (memcached's ``-I``, 1 MB by default, less room for the key).
    """

    def __init__(
        self,
        servers_or_client_or_url: str | Sequence[str] | MemcacheClient,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
        cas_retries: int = 50,
        chunk_size: int = 500,
        max_value_size: int = _MEGABYTE - 1024,
    ) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime, clock=clock)
        for name, value in (("cas_retries", cas_retries), ("chunk_size", chunk_size)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        self.cas_retries = cas_retries
        self.chunk_size = chunk_size
        self.max_value_size = max_value_size
        if isinstance(servers_or_client_or_url, Client | PooledClient | HashClient):
            self._client: Any = servers_or_client_or_url
            self._owned = False
            return
        servers = _servers(servers_or_client_or_url)
        options: dict[str, Any] = {
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "default_noreply": False,
        }
        if len(servers) == 1:
            self._client = PooledClient(servers[0], **options)
        else:
            # pymemcache's failover answers "miss" (or False) for a failing node and then
            # rehashes its keys onto the others: every call here goes to the key's own node
            # and raises if it is down (retry_timeout < 0 retries it on every call; it is
            # never marked dead).
            self._client = HashClient(
                servers, use_pooling=True, ignore_exc=False, retry_attempts=2**62, retry_timeout=-1, **options
            )
        self._owned = True

    def __repr__(self) -> str:
        return f"<MemcacheStore namespace={self.namespace!r}>"

    def _stores_rows(self) -> bool:
        return False  # memcached may evict a schema and leave its rows unreadable

    def _close(self) -> None:
        """Close the client if this store built it."""
        if self._owned:
            self._client.close()

    # ------------------------------------------------------------------ item keys and values

    def _item_key(self, *parts: Any) -> str:
        digest = hashlib.sha256(msgpack.packb([self.namespace, *parts])).digest()
        return "ss:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _servers(self) -> list[Any]:
        """A client per server: a ring's own clients, else the one."""
        return list(self._client.clients.values()) if isinstance(self._client, HashClient) else [self._client]

    def _generation(self, family: Family) -> int:
        """The family's current generation: the largest any server that answers holds.

        Every server keeps a copy of it, so that a server that stopped answering
        and comes back still holding the items (and generation) of before cannot
        bring them back: `_move_on` moved the others past it, and the largest wins.
        A new generation is the current time in microseconds, so one re-created
        after eviction is larger than any earlier one (moves add 1 each) and never
        brings back items written before.
        """
        return self._generation_on(family)[0]

    def _generation_on(self, family: Family) -> tuple[int, list[Any]]:
        """The generation, and the servers that answered (each brought up to it if behind or empty)."""
        gen_key = self._item_key("gen", family.name)
        for _ in range(self.cas_retries):
            held: list[tuple[Any, int | None, Any]] = []  # server, its generation (None: none), cas token
            failure: BaseException | None = None
            for server in self._servers():
                try:
                    raw, token = server.gets(gen_key)
                except (MemcacheError, OSError) as exc:  # its keys fail on their own; the others still answer
                    failure = exc
                    continue
                held.append((server, None if raw is None else _generation_of(raw, family), token))
            if failure is not None and not held:
                raise failure
            known = [g for _, g, _ in held if g is not None]
            gen = max(known, default=time.time_ns() // 1000)  # real time, not self.clock: past older ones
            settled = True
            for server, had, token in held:
                if had is None:
                    settled &= server.add(gen_key, str(gen).encode(), expire=0, noreply=False) is True
                elif had < gen:  # a cas lost to a concurrent move is fine: it moved on
                    server.cas(gen_key, str(gen).encode(), token, expire=0, noreply=False)
            if settled:
                return gen, [server for server, _, _ in held]
        raise BackendUnavailableError(f"memcached neither kept nor returned the generation of {family.name}")

    def _move_on(self, family: Family) -> None:
        """Move the family to a new generation on every server that answers: its items of before are dropped."""
        gen, servers = self._generation_on(family)
        gen_key = self._item_key("gen", family.name)
        for server in servers:
            with contextlib.suppress(MemcacheError, OSError):  # one that stops now is passed by the others
                server.set(gen_key, str(gen + 1).encode(), expire=0, noreply=False)

    def _record_keys(self, family: Family, gen: int, keys: Sequence[bytes]) -> list[str]:
        return [self._item_key(family.name, gen, "r", key) for key in keys]

    def _alt_key(self, family: Family, gen: int, index: int, alt: bytes) -> str:
        return self._item_key(family.name, gen, "a", index, alt)

    def _expire(self, expires_ms: int | None, now_ms: float) -> int:
        """memcached's expiry for an item: relative seconds up to 30 days, else absolute unix time.

        Rounded up and one second late: the header's exact milliseconds decide liveness.
        """
        if expires_ms is None:
            return 0
        seconds = math.ceil((expires_ms - now_ms) / 1000) + 1
        if seconds <= _THIRTY_DAYS:
            return max(seconds, 1)
        absolute = math.ceil(expires_ms / 1000) + 1
        # memcached reads expiry as a signed 32-bit number: past 2038 it keeps the item
        # without expiry (evicted when memory is needed) and the header expires it.
        return absolute if absolute < 2**31 else 0

    def _check_size(self, family: Family, key: bytes, data: bytes) -> None:
        if len(data) > self.max_value_size:
            raise SerializationError(
                f"{family.name} record {family.public_key(decode_key(key))!r:.80} is {len(data)} bytes encoded, "
                f"over memcached's item limit of {self.max_value_size} bytes"
            )

    # ------------------------------------------------------------------ multi-key commands

    def _get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), self.chunk_size):
            found.update(self._client.get_many(keys[start : start + self.chunk_size]))
        return found

    def _gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, Any]]:
        found: dict[str, tuple[bytes, Any]] = {}
        for start in range(0, len(keys), self.chunk_size):
            found.update(self._client.gets_many(keys[start : start + self.chunk_size]))
        return found

    def _set_many(self, items: dict[str, tuple[bytes, int]]) -> list[str]:
        """Set items ``key -> (data, expire)``; return the keys memcached did not confirm."""
        by_expire: dict[int, dict[str, bytes]] = {}
        for key, (data, expire) in items.items():
            by_expire.setdefault(expire, {})[key] = data
        failed: list[str] = []
        for expire, group in by_expire.items():
            keys = list(group)
            for start in range(0, len(keys), self.chunk_size):
                chunk = {k: group[k] for k in keys[start : start + self.chunk_size]}
                failed.extend(self._client.set_many(chunk, expire=expire, noreply=False))
        return failed

    def _store(self, key: str, data: bytes, token: Any, expire: int) -> bool:
        """``add`` where nothing was held, ``cas`` against *token* otherwise; True only if stored."""
        if token is None:
            return self._client.add(key, data, expire=expire, noreply=False) is True
        return self._client.cas(key, data, token, expire=expire, noreply=False) is True

    def _cas_loop(
        self, keys: Sequence[str], decide: Callable[[int, Stored | None], tuple[bytes, int] | None]
    ) -> list[int]:
        """Compare-and-set each item: ``decide(position, held)`` gives ``(data, expire)`` or ``None`` to skip.

        Every position is decided first and stored second, so an error in
        *decide* leaves everything unwritten on the first pass.  Returns the
        positions still contended after *cas_retries* attempts.
        """
        pending = list(range(len(keys)))
        for attempt in range(self.cas_retries):
            held = self._gets_many([keys[p] for p in pending])
            plans: list[tuple[int, bytes, int, Any]] = []
            for pos in pending:
                data, token = held.get(keys[pos], (None, None))
                plan = decide(pos, None if data is None else _unpack(data))
                if plan is not None:
                    plans.append((pos, plan[0], plan[1], token))
            pending = [pos for pos, data, expire, token in plans if not self._store(keys[pos], data, token, expire)]
            if not pending:
                return []
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # let the other writer finish its round trip
        return pending

    # ------------------------------------------------------------------ alternate keys

    def _holds(self, family: Family, stored: Stored | None, index: int, alt: bytes, now_ms: float) -> bool:
        if stored is None or stored.payload is None or not stored.live(now_ms):
            return False
        return family.alternates_of(decode_head(stored.payload)[1])[index - 1] == alt

    def _claim(self, family: Family, gen: int, entry: Entry, now_ms: float, taken: dict[str, bytes]) -> bool:
        """Point each alternate value of *entry* at it; False if another live record holds one.

        ``add`` creates a free pointer; a pointer to a record that no longer holds
        the value is taken over with ``cas``.  Two writers racing for one value
        within a round trip can both win (docs/backends.md); the read re-check
        still never returns a record for a value it does not hold.
        """
        expire = self._expire(entry.expires_ms, now_ms)
        for index, alt in enumerate(entry.alternates, 1):
            if alt is None:
                continue
            akey = self._alt_key(family, gen, index, alt)
            if taken.setdefault(akey, entry.key) != entry.key:
                return False  # an earlier record of this batch holds it
            for _ in range(self.cas_retries):
                if self._client.add(akey, entry.key, expire=expire, noreply=False):
                    break
                holder, token = self._client.gets(akey)
                if holder is None:
                    continue
                if holder != entry.key:
                    raw = self._client.get(self._record_keys(family, gen, [holder])[0])
                    if self._holds(family, None if raw is None else _unpack(raw), index, alt, now_ms):
                        return False
                if self._client.cas(akey, entry.key, token, expire=expire, noreply=False):
                    break
            else:
                raise BackendUnavailableError(f"{family.name}: could not claim an alternate key (contended)")
        return True

    # ------------------------------------------------------------------ primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        if not keys:
            return []
        item_keys = self._record_keys(family, self._generation(family), keys)
        found = self._get_many(item_keys)
        out: list[Stored | None] = []
        for item_key in item_keys:
            data = found.get(item_key)
            stored = None if data is None else _unpack(data)
            out.append(stored if stored is not None and stored.live(now_ms) else None)
        return out

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        gen = self._generation(family)
        pointers = self._get_many([self._alt_key(family, gen, index, alt) for alt in keys])
        holders = [pointers.get(self._alt_key(family, gen, index, alt)) for alt in keys]
        records = self._read(family, [h for h in holders if h is not None], now_ms)
        by_holder = dict(zip([h for h in holders if h is not None], records, strict=True))
        return [
            h if h is not None and self._holds(family, by_holder[h], index, alt, now_ms) else None
            for h, alt in zip(holders, keys, strict=True)
        ]

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        for entry in entries:
            assert entry.payload is not None
            self._check_size(family, entry.key, _HEADER.size * b"\0" + entry.payload)
        gen = self._generation(family)
        taken: dict[str, bytes] = {}
        conflicts = {e.key for e in entries if e.alternates and not self._claim(family, gen, e, now_ms, taken)}
        item_keys = self._record_keys(family, gen, [e.key for e in entries])
        old = self._get_many(item_keys)
        stored: list[int] = []
        items: dict[str, tuple[bytes, int]] = {}
        for entry, item_key in zip(entries, item_keys, strict=True):
            if entry.key in conflicts:
                stored.append(0)
                continue
            held = _unpack(old[item_key]) if item_key in old else None
            entry = replace(entry, version=stored_version(held, entry.version))
            items[item_key] = (_pack(entry), self._expire(entry.expires_ms, now_ms))
            stored.append(entry.version)
        unstored = set(self._set_many(items))
        failed = [e.key for e, k in zip(entries, item_keys, strict=True) if e.key in conflicts or k in unstored]
        unknown = [e.key for e, k in zip(entries, item_keys, strict=True) if k in unstored]  # memcached may hold it
        if conflicts:
            problem = f"{family.name}: an alternate key {list(family.keys[1:])} is already held by another record"
            raise PartialWrite(failed, InvalidKeyError(problem), unknown)
        if failed:
            unconfirmed = BackendUnavailableError(f"memcached did not confirm {len(failed)} write(s)")
            raise PartialWrite(failed, unconfirmed, unknown)
        return stored

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        gen = self._generation(family)
        self._revoke(family, gen, keys)
        item_keys = self._record_keys(family, gen, keys)
        held = {k: _unpack(v) for k, v in self._get_many(item_keys).items()}
        # A tombstone rather than a delete: set_many confirms each key (delete_many never does).
        until_ms = int(now_ms) + _TOMBSTONE_SECONDS * 1000
        items = {
            k: (_pack(Stored(None, stored_version(s, versions.next()), until_ms)), _TOMBSTONE_SECONDS)
            for k, s in held.items()
        }
        failed = self._set_many(items)
        if failed:
            raise BackendUnavailableError(f"memcached did not confirm {len(failed)} of {len(items)} deletes")
        return sum(1 for s in held.values() if s.live(now_ms))

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        gen = self._generation(family)
        merged: dict[int, Entry] = {}
        refused: dict[int, StoreError] = {}
        taken: dict[str, bytes] = {}

        def decide(pos: int, held: Stored | None) -> tuple[bytes, int] | None:
            entry = merge(keys[pos], held if held is not None and held.live(now_ms) else None)
            entry = replace(entry, version=stored_version(held, entry.version))  # tombstones and expired copies too
            data = _pack(entry)
            try:
                self._check_size(family, entry.key, data)
            except SerializationError as exc:
                refused[pos] = exc
                return None
            if entry.alternates and not self._claim(family, gen, entry, now_ms, taken):
                refused[pos] = InvalidKeyError(f"{family.name}: an alternate key is already held by another record")
                return None
            merged[pos] = entry
            return data, self._expire(entry.expires_ms, now_ms)

        contended = self._cas_loop(self._record_keys(family, gen, keys), decide)
        if refused or contended:
            failed = sorted({*refused, *contended})
            cause = next(iter(refused.values()), None) or StoreError(
                f"{len(contended)} {family.name} record(s) kept changing; gave up after {self.cas_retries} attempts"
            )
            raise PartialWrite([keys[p] for p in failed], cause)
        return [merged[pos] for pos in range(len(keys))]

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        gen = self._generation(family)
        self._revoke(family, gen, [e.key for e in entries])
        self._fill_in(family, gen, entries, now_ms)

    def _watch(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bytes]:
        """Fill tokens (`BaseStore._watch`): an item per key, as memcached may evict a copy or restart.

        A token memcached does not keep is as good as taken away: its fill is refused.
        """
        now_ms = int(self.clock() * 1000)
        ends = _TOKEN_END.pack(now_ms + ttl_ms)  # by the store's clock, as expiries are
        names = self._token_keys(family, self._generation(family), keys)
        expire = max(1, math.ceil(ttl_ms / 1000)) + 1
        # A token in place stays: every watcher gets it, the first fill uses it up.  Two watchers
        # that both find none both write one; the last stays, and the other's fill is refused.
        held = self._get_many(names)
        fresh = [n for n in names if n not in held or _TOKEN_END.unpack_from(held[n], 16)[0] <= now_ms]
        if fresh:
            self._set_many({name: (os.urandom(16) + ends, expire) for name in fresh})
            held = self._get_many(names)
        return [
            held[n][:16] if n in held and _TOKEN_END.unpack_from(held[n], 16)[0] > now_ms else os.urandom(16)
            for n in names
        ]

    def _fill_watched(self, family: Family, entries: Sequence[Entry], tokens: Sequence[bytes], now_ms: float) -> None:
        """Fill the entries whose token is still the one given, then use the tokens up.

        Writers take tokens away before they write, so a write that comes between the
        check and the fill lands after it or refuses it by version.
        """
        gen = self._generation(family)
        names = self._token_keys(family, gen, [e.key for e in entries])
        held = self._get_many(names)
        mine = [e for e, t, n in zip(entries, tokens, names, strict=True) if _token_holds(held.get(n), t, now_ms)]
        self._revoke(family, gen, [e.key for e in mine])
        if mine:
            self._fill_in(family, gen, mine, now_ms)

    def _token_keys(self, family: Family, gen: int, keys: Sequence[bytes]) -> list[str]:
        return [self._item_key(family.name, gen, "t", key) for key in keys]

    def _revoke(self, family: Family, gen: int, keys: Sequence[bytes]) -> None:
        """Take these keys' fill tokens away: no watched fill of them lands any more."""
        names = self._token_keys(family, gen, keys)
        for start in range(0, len(names), self.chunk_size):
            self._client.delete_many(names[start : start + self.chunk_size], noreply=False)

    def _fill_in(self, family: Family, gen: int, entries: Sequence[Entry], now_ms: float) -> None:
        written: set[int] = set()

        def decide(pos: int, held: Stored | None) -> tuple[bytes, int] | None:
            entry = entries[pos]
            if not fill_lands(held, entry, now_ms):
                return None
            data = _pack(entry)
            if len(data) > self.max_value_size:
                data = _pack(Stored(None, entry.version, entry.expires_ms))  # too big to cache: refuse older fills
            written.add(pos)
            return data, self._expire(entry.expires_ms, now_ms)

        contended = self._cas_loop(self._record_keys(family, gen, [e.key for e in entries]), decide)
        # A cache yields alternate keys to the newer record it is filled with: the record that
        # held one here is stale (its source moved the value on) and is dropped (`_rules.plan_fill`).
        wanted = {
            self._alt_key(family, gen, *slot): (entries[pos].key, slot, entries[pos].expires_ms)
            for pos in sorted(written.difference(contended))
            for slot in slots(entries[pos])
        }
        before = self._get_many(list(wanted))
        others = {holder: wanted[pkey] for pkey, holder in before.items() if holder != wanted[pkey][0]}
        if others:
            names = self._record_keys(family, gen, list(others))
            held = self._get_many(names)
            stale = [
                name
                for name, (holder, (_, slot, _)) in zip(names, others.items(), strict=True)
                if name in held and self._holds(family, _unpack(held[name]), *slot, now_ms)
            ]
            for name in stale:
                self._client.delete(name, noreply=False)
        pointers = {pkey: (key, self._expire(expires_ms, now_ms)) for pkey, (key, _, expires_ms) in wanted.items()}
        if contended or self._set_many(pointers):
            raise BackendUnavailableError(f"memcached did not confirm a fill of {family.name}")

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        now_ms = self.clock() * 1000
        expire = self._expire(until_ms, now_ms)

        def decide(pos: int, held: Stored | None) -> tuple[bytes, int]:
            return _pack(tombstone(keys[pos], held, version, until_ms)), expire

        try:
            gen = self._generation(family)
            self._revoke(family, gen, keys)
            if self._cas_loop(self._record_keys(family, gen, keys), decide):
                raise BackendUnavailableError(f"memcached did not confirm an invalidation of {family.name}")
        except (MemcacheError, OSError, StoreError):
            # Old copies may be left on a server that stopped answering, and come back with it
            # (a pause, a partition) for other processes to read: drop every copy instead.
            with contextlib.suppress(MemcacheError, OSError, StoreError):
                self._move_on(family)
            raise

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        raise UnsupportedOperationError("memcached cannot list its keys: keys() and count() are not available")

    def _count(self, family: Family, now_ms: float) -> int:
        raise UnsupportedOperationError("memcached cannot list its keys: keys() and count() are not available")

    def _clear(self, family: Family, now_ms: float) -> int:
        """Move the family to a new generation; 0, since memcached cannot count what was dropped."""
        self._move_on(family)
        return 0

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except MemcacheServerError as exc:
            if "too large" in str(exc):
                raise SerializationError(f"memcached refused an item as too large: {exc}") from exc
            raise BackendUnavailableError(f"memcached failed: {exc}") from exc
        except (MemcacheError, OSError) as exc:  # socket timeouts and refused connections are OSErrors
            raise BackendUnavailableError(f"memcached is unavailable: {type(exc).__name__}: {exc}") from exc


def _token_holds(held: bytes | None, token: bytes, now_ms: float) -> bool:
    """Whether a fill token item is still *token*, and its end (after it) is to come."""
    return held is not None and held[:16] == token and _TOKEN_END.unpack_from(held, 16)[0] > now_ms


def _pack(stored: Stored) -> bytes:
    expires = stored.expires_ms
    if expires is None:
        head = _HEADER.pack(stored.version, _NEVER, 0)
    else:
        head = _HEADER.pack(stored.version, _EXPIRES, max(-_LATEST_EXPIRY, min(expires, _LATEST_EXPIRY)))
    return head + (stored.payload or b"")


def _unpack(data: bytes) -> Stored:
    if len(data) < _HEADER.size:
        raise SerializationError("memcached item is not a stockstore record")
    version, flag, expires = _HEADER.unpack_from(data)
    # Versions are microseconds since the epoch, with room to grow (writes add 1).  A flag that
    # is neither (another format, an earlier stockstore's header: its expiry's high byte) is refused.
    if not 0 <= version < _VERSION_LIMIT or (flag != _EXPIRES and (flag != _NEVER or expires)):
        raise SerializationError("memcached item is not a stockstore record")
    payload = data[_HEADER.size :] if len(data) > _HEADER.size else None
    return Stored(payload, version, expires if flag == _EXPIRES else None)


def _generation_of(raw: bytes, family: Family) -> int:
    """The generation number memcached holds for *family*: decimal digits, as `_generation` writes them."""
    if not raw.isdigit():  # ASCII digits only: int() would also take b" 1", b"+1" or b"1_0"
        raise SerializationError(f"the memcached item holding the generation of {family.name} is not a stockstore one")
    return int(raw)


def _servers(where: str | Sequence[str]) -> list[tuple[str, int]]:
    """``memcache://h1:p1,h2:p2`` or ``["h1:p1", ...]`` as (host, port) pairs; port 11211 by default.

    Messages never repeat the URL: a mistaken one may hold a password.
    """
    if isinstance(where, str):
        parts = urlsplit(where)
        if parts.scheme != "memcache" or parts.path.strip("/") or parts.query or parts.fragment:
            raise StoreError(
                f"expected memcache://host:port[,host:port...], got a {parts.scheme}:// URL of another form"
            )
        if "@" in parts.netloc:
            # Else "user:pw@host" would be looked up as a host name, password and all, in DNS.
            raise StoreError("memcache:// URLs take no user name or password (memcached has no authentication here)")
        where = parts.netloc.split(",")
    servers = []
    for server in where:
        host, colon, port = server.strip().rpartition(":")
        if not colon:
            host, port = port, "11211"
        if not host or not port.isdigit() or "@" in host:
            raise StoreError(f"bad memcached server {server.rpartition('@')[2]!r}: expected host:port")
        servers.append((host.strip("[]"), int(port)))
    if not servers:
        raise StoreError("no memcached server given")
    return servers
