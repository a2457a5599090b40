"""Redis stores: `RedisMsgpackStore` (a string per record) and `RedisHashStore` (a hash per record).

Both lay keys out the same way (docs/backends.md has the full picture)::

    <namespace>:<family>:r:<key>      the record
    <namespace>:{<family>}:r:<key>    ... of a family with alternate keys (one hash slot)
    <namespace>:{<family>}:a<i>:<alt> pointer from alternate key i to the record's <key>
    <namespace>:{<family>}:x:<key>    the record's list of its pointers
    <namespace>:<family>:l:<key>      a chain's read lease on the key (seconds; see ChainedStore)
    <namespace>:<family>:s:{<record>} a hash being written (RedisHashStore), inside the write's transaction only
    <namespace>:<family>:p            the family's mark (a single server): "1" while it holds only live records

Namespace and family are percent-encoded and key values written as readable,
percent-encoded text (``#`` marks an int, ``,`` separates composite parts), so no key
value can make another record's key, a glob that matches other records in ``SCAN
MATCH``, a hash tag, or a key outside the namespace.  Every write of a record is one
Lua script (stockstore/backends/redis.lua) that updates the record and its pointers
together and never decodes user values; batches go in pipelines of *chunk_size*
records, which cost a round trip per node on a cluster.  As the names are the same,
both layouts may share a namespace: each reads (and overwrites) a string as a
`RedisMsgpackStore` record and a hash as a `RedisHashStore` one.

A family that declares ``__stockstore_indexes__`` keeps its indexes beside its records
(``<prefix>i:...``, listed in redis.lua), changed by the same script call as the record
on every write path, so they are always in step.  Each attribute is a sorted set of
``index_value(v) + encoded key`` members (`_redis_index`), all of score 0: byte order is the query
order, exact for ints and floats alike, so a filter is a ``ZRANGE BYLEX`` range and
ties come in key order.  `find` is one script (mode ``Q``) that first drops entries
expired by the client's clock, then intersects, orders and slices; nothing is
scanned.  On a cluster an indexed family's keys share a hash tag: one shard holds
the whole family.  `reset` stages the new records under ``<prefix>n:`` and switches
them in with one script (mode ``S``), which blocks the server for a rename per
record.  docs/backends.md has the costs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import random
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import msgpack
import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from .. import _codec
from .._keys import FIXSTR_KEY, encode_key
from .._lifetime import Lifetime
from .._query import Search
from .._schemas import SchemaMissingError
from .._writer import chunks as _chunks
from ..errors import (
    BackendUnavailableError,
    InvalidKeyError,
    QueryError,
    SerializationError,
    StoreError,
    UnsupportedOperationError,
)
from . import _redis_index as _index
from . import _redis_wire as _wire
from .base import BaseStore, Entry, Family, Merge, PartialWrite, Stored

if TYPE_CHECKING:
    import numpy as np

    from .._frame import Gather

logger = logging.getLogger(__name__)

Client = redis.Redis | RedisCluster
_Item = tuple[str, Sequence[Any]]  # a record's key name and its argument group for the script
_Patched = list[tuple[Entry, "int | StoreError"]]  # entries written by a patch, each with its outcome

_SCRIPT = files(__package__).joinpath("redis.lua").read_text()
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()  # EVALSHA's name of it; loaded when a server says NOSCRIPT
# version, whether the record expires (_EXPIRES or _NEVER), expiry in epoch ms (0 when never), server-run stamp
_HEADER = struct.Struct(">QBq8s")
_EXPIRES, _NEVER = ord("E"), ord("N")  # a flag of its own: every expiry is a number a record may have, 0 too
_LATEST_EXPIRY = 2**53 - 1  # the script's numbers are doubles; later expiries (past the year 287,000) are kept as this
_MAX_VERSION = 2**62  # microseconds for the next hundred thousand years; room for + 1 below 2**64
_SOURCE = bytes(8)  # the stamp of a source of truth's own writes; fills carry the server's run (redis.lua)
_VERSION = struct.Struct(">Q")
_TOKEN_END = struct.Struct(">q")  # when a fill token ends, epoch ms: after its 16 random bytes
_META = b"\xff"  # the hash layout's header field: never a UTF-8 attribute name
_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


def _header(version: int, expires_ms: int | None) -> bytes:
    """The header a source of truth writes (redis.lua reads it): the version, then the expiry or "never"."""
    if expires_ms is None:
        return _HEADER.pack(version, _NEVER, 0, _SOURCE)
    return _HEADER.pack(version, _EXPIRES, _bounded(expires_ms), _SOURCE)


def _bounded(expires_ms: int) -> int:
    """*expires_ms* within what the header (and the script) holds exactly: ±(2**53 - 1)."""
    if -_LATEST_EXPIRY <= expires_ms <= _LATEST_EXPIRY:
        return expires_ms
    return _LATEST_EXPIRY if expires_ms > 0 else -_LATEST_EXPIRY


def _text(value: str) -> str:
    return value if _safe(value) else quote(value, safe="")


def _safe(text: str) -> bool:
    """Whether *text* is spelled as it is in key names; runs for every key listed or deleted, so letters first."""
    return (text.isalnum() and text.isascii()) or _SAFE.fullmatch(text) is not None


def key_text(key: bytes) -> str:
    """The readable, injective text of an encoded key inside Redis key names.

    *key* comes from `encode_key`, so it is unpacked as it is (`decode_key` would
    check it against foreign bytes, twice the cost of every Redis call).
    """
    if len(key) >= 2 and key[0] == 0x91 and 0xA0 <= key[1] <= 0xBF and len(key) == key[1] - 0xA0 + 2:
        tail = key[2:]  # one str of fewer than 32 bytes, the common key
        if tail.isalnum():  # ASCII letters and digits (bytes.isalnum): spelled as it is
            return tail.decode()
    values: tuple[str | int, ...] = msgpack.unpackb(key, use_list=False)
    if len(values) == 1:  # most keys: no generator to join
        return _part(values[0])
    return ",".join(map(_part, values))


def _key_of_name(tail: bytes, parts: int) -> bytes:
    """The encoded key of a listed Redis name's *tail* (after ``r:``): `key_bytes`, without decoding the common key."""
    if parts == 1 and len(tail) < 32 and tail.isalnum():  # ASCII letters and digits: a str spelled as it is
        return FIXSTR_KEY[len(tail)] + tail
    return key_bytes(tail.decode(), parts)


def _part(value: str | int) -> str:
    return f"#{value}" if type(value) is int else _text(value)  # type: ignore[arg-type]


def key_bytes(text: str, parts: int | None = None) -> bytes:
    """The encoded key behind `key_text`'s *text*, of *parts* values if given.

    A name stockstore never writes raises `SerializationError`.
    """
    try:
        if parts in (None, 1) and _safe(text):  # one str key, spelled as it is: nothing to parse
            return encode_key((text,))
        values = tuple(int(p[1:]) if p.startswith("#") else unquote(p, errors="strict") for p in text.split(","))
        key = encode_key(values)
        valid = key_text(key) == text  # the one spelling key_text makes ("#1_0", "%61", "#+1" are not)
        valid = valid and (parts is None or len(values) == parts)
    except (ValueError, OverflowError, StoreError):
        valid = False
    if not valid:
        raise SerializationError(f"a Redis key name {text[:80]!r} is not a stockstore key")
    return key


class _RedisStore(BaseStore):
    """What both Redis layouts share: client, key names, scripts, pipelines, listing."""

    _layout: ClassVar[str]  # "m" or "h", the script's name for the layout

    def __init__(
        self,
        client_or_url: str | Client,
        *,
        namespace: str = "stockstore",
        lifetime: Lifetime = None,
        clock: Callable[[], float] = time.time,
        chunk_size: int = 1000,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
        retries: int = 2,
        cas_retries: int = 50,
    ) -> None:
        super().__init__(namespace=namespace, lifetime=lifetime, clock=clock)
        for name, value in (("chunk_size", chunk_size), ("cas_retries", cas_retries)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        self.chunk_size = chunk_size
        self.cas_retries = cas_retries
        self._owned = isinstance(client_or_url, str)
        if isinstance(client_or_url, str):
            with self._errors():  # a cluster client connects as it is made
                self._client: Client = _client_from_url(client_or_url, timeout, connect_timeout, retries)
        elif isinstance(client_or_url, Client):
            if client_or_url.get_encoder().decode_responses:
                raise ValueError("a Redis client with decode_responses=True would corrupt binary records")
            self._client = client_or_url
        else:
            raise TypeError(f"expected a Redis URL or client, not {type(client_or_url).__qualname__}")
        self._cluster = isinstance(self._client, RedisCluster)
        self._solo = "" if self._cluster else "+"  # redis.lua: on a single server the family's mark is kept
        self._prefixes: dict[str, str] = {}
        self._built: set[str] = set()  # families whose declared indexes this store has seen built
        self._marking: set[str] = set()  # families this store tried to mark (`_ensure_marked`)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r}>"

    def _schemas_may_vanish(self) -> bool:
        return True  # a FLUSHDB, a restart without persistence, an eviction: saved again with every chunk

    def _recover(self, family: Family, key: bytes, stored: Stored, error: Exception) -> Stored | None:
        """A record whose row schema is gone (evicted, flushed) is a miss, and is dropped; any other error raises.

        Redis is a cache even where it is a store of its own: what it lost, it lost.
        """
        if not isinstance(error, SchemaMissingError):
            return super()._recover(family, key, stored, error)
        logger.warning("%r dropped a %s record whose row schema is gone: %s", self, family.name, error)
        with self._errors():
            self._remove(family, [key], self.clock() * 1000)
        return None

    def _close(self) -> None:
        """Close the client if this store built it from a URL."""
        if self._owned:
            self._client.close()

    # ------------------------------------------------------------------ key names

    def _prefix(self, family: Family) -> str:
        prefix = self._prefixes.get(family.name)
        if prefix is None:
            name = _text(family.name)
            # A family with alternate keys keeps all its keys in one hash slot, so one script
            # can change a record and its pointers together on a cluster too.
            # So does an indexed family on a cluster: its index changes with each record, in one script.
            tagged = len(family.keys) > 1 or (self._cluster and bool(family.indexes))
            prefix = f"{_text(self.namespace)}:{{{name}}}:" if tagged else f"{_text(self.namespace)}:{name}:"

            self._prefixes[family.name] = prefix
        return prefix

    def _record_keys(self, family: Family, keys: Sequence[bytes]) -> list[str]:
        prefix = self._prefix(family) + "r:"
        return [prefix + key_text(k) for k in keys]

    # ------------------------------------------------------------------ commands

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BackendUnavailableError(f"Redis failed: {type(exc).__name__}: {exc}") from exc

    def _pipeline(self, commands: Sequence[tuple[Any, ...]], *, packed: bool = False) -> list[Any]:
        """Send *commands* in one pipeline (one per master on a cluster); replies aligned, errors in place.

        Scripts a server has lost (a restart, a failover) are loaded again and the
        affected commands re-sent.  *packed* as for `_send`.
        """
        replies = self._send(commands, packed=packed)
        lost = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if lost:
            again = [commands[i] for i in lost]
            self._load_script(again)
            for i, reply in zip(lost, self._send(again, packed=packed), strict=True):
                replies[i] = reply
        return replies

    def _send(self, commands: Sequence[tuple[Any, ...]], *, packed: bool = False) -> list[Any]:
        """Send *commands* in one pipeline; replies aligned, errors in place.

        *packed*: commands whose replies redis-py would not convert (writes, the
        record script), values maybe in pieces (`_redis_wire.Arg`), packed by
        `_redis_wire` on one server.
        """
        if packed and _wire.sendable(self._client):
            return _wire.send(self._client, commands)
        if packed:
            commands = [_wire.joined(c) for c in commands]
        if self._cluster:
            return self._send_to_masters(commands)
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    def _send_to_masters(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each master's share of *commands* in a pipeline of its own, sent without retries.

        A master that refuses, times out or cuts a reply fails its own commands, at the
        cost of one timeout; the others are answered as usual.  redis-py's cluster
        pipeline would instead re-send every failed command on its own, a timeout each.
        After a failure or a ``MOVED`` the slot table is read again (a replica may have
        taken over) and the moved commands are sent once more; ``ASK`` (a slot being
        migrated) goes through the cluster client, which follows it.  A cluster that
        answers ``CLUSTERDOWN`` or ``TRYAGAIN`` refuses those commands: errors in place.
        """
        cluster: Any = self._client
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        for attempt in range(2):
            failed = self._send_by_master(commands, pending, replies)
            moved = [p for p in pending if isinstance(replies[p], MovedError)]
            if failed or moved:
                with contextlib.suppress(RedisError, RedisClusterException, OSError):  # the next call tries again
                    cluster.nodes_manager.initialize()
            if attempt or not moved:
                break
            pending = moved
        for position, reply in enumerate(replies):
            if type(reply) is AskError:
                try:
                    replies[position] = cluster.execute_command(*commands[position])
                except (RedisError, RedisClusterException, OSError) as exc:
                    replies[position] = exc
        return replies

    def _send_by_master(self, commands: Sequence[tuple[Any, ...]], positions: list[int], replies: list[Any]) -> bool:
        """Send the commands at *positions*, a pipeline per master; replies into *replies*; whether a master failed."""
        cluster: Any = self._client
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for position in positions:
            node = _node_of(cluster, commands[position])
            if node is None:
                replies[position] = RedisClusterException("no master is known for the key's hash slot")
            else:
                by_node.setdefault(node.name, (node, []))[1].append(position)
        failed = False
        for node, mine in by_node.values():
            pipe = cluster.get_redis_connection(node).pipeline(transaction=False)
            for position in mine:
                pipe.execute_command(*commands[position])
            try:
                answers = pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:  # outcomes unknown: the caller counts them as failed
                answers, failed = [exc] * len(mine), True
            for position, answer in zip(mine, answers, strict=True):
                replies[position] = answer
        return failed

    def _load_script(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Load the record script on the server, or on the cluster masters these commands went to."""
        if not self._cluster:
            self._client.script_load(_SCRIPT)
            return
        cluster: Any = self._client
        masters = {node.name: node for node in (_node_of(cluster, c) for c in commands) if node is not None}
        for node in masters.values():
            with contextlib.suppress(RedisError, OSError):  # the commands fail again, with their own error
                cluster.get_redis_connection(node).script_load(_SCRIPT)

    def _item(
        self,
        family: Family,
        key: bytes,
        *,
        expected: bytes | None = None,
        alternates: Sequence[bytes | None] | None = None,
        body: Sequence[_wire.Arg] = (),
        index: Sequence[bytes] = (),
        prefix: str | None = None,
    ) -> _Item:
        """One record's key and argument group for the record script (redis.lua documents them).

        *expected* goes to the guarded modes, *alternates* to the modes that write
        pointers, *body* (its header first) to every mode that stores something.
        """
        prefix = prefix or self._prefix(family)
        me = key_text(key)
        group: list[Any] = [] if expected is None else [expected]
        if alternates is not None and len(family.keys) > 1:
            pointers = [""] * (len(family.keys) - 1)
            for n, alt in enumerate(alternates, 1):
                pointers[n - 1] = "" if alt is None else f"{prefix}a{n}:{key_text(alt)}"
            group += pointers
        if body:
            group += body if self._layout == "m" else [len(body), *body]
        group += index
        return prefix + "r:" + me, group

    def _index_args(self, family: Family, entry: Entry) -> list[bytes]:
        """What a write gives the script for a record of an indexed family: its key, then each index value."""
        if not family.indexes:
            return []
        values = self._indexed(family, entry)
        return [entry.key, *(b"" if (v := values[a]) is None else _index.index_value(v) for a in family.indexes)]

    def _head(
        self, family: Family, mode: str, now_ms: float, index: int = 0, prefix: str | None = None
    ) -> tuple[Any, ...]:
        """The script's ARGV before the records (redis.lua): layout, mode, clock, prefix, keys, indexes."""
        attrs = () if mode in "glr" else self._index_names(family)
        return (
            self._layout + self._solo,
            mode,
            int(now_ms),
            prefix or self._prefix(family),
            index or len(family.keys) - 1,
            len(attrs),
            *attrs,
        )

    def _index_names(self, family: Family) -> tuple[str, ...]:
        return tuple(_text(a) for a in family.indexes)

    def _run(
        self,
        family: Family,
        mode: str,
        items: Sequence[_Item],
        now_ms: float,
        index: int = 0,
        prefix: str | None = None,
    ) -> list[Any]:
        """Run the record script over *items* in one pipeline; replies (or errors) aligned with them.

        One script call takes the whole chunk on a single server; a cluster needs
        one call per hash slot, sent in one pipeline, so a round trip per node.
        """
        head = self._head(family, mode, now_ms, index, prefix)
        if not self._cluster:  # the common case, without grouping a chunk's records one by one
            args = [arg for _, group in items for arg in group]
            command = ("EVALSHA", _SHA, len(items), *(name for name, _ in items), *head, *args)
            (reply,) = self._pipeline([command], packed=True)
            return [reply] * len(items) if isinstance(reply, Exception) else list(reply)
        groups: dict[int, list[int]] = {}
        for position, (name, _) in enumerate(items):
            groups.setdefault(key_slot(name.encode()), []).append(position)
        commands = []
        for positions in groups.values():
            args = [arg for p in positions for arg in items[p][1]]
            commands.append(("EVALSHA", _SHA, len(positions), *(items[p][0] for p in positions), *head, *args))
        replies: list[Any] = [None] * len(items)
        for positions, reply in zip(groups.values(), self._pipeline(commands, packed=True), strict=True):
            for index, p in enumerate(positions):
                replies[p] = reply if isinstance(reply, Exception) else reply[index]
        return replies

    def _outcome(self, family: Family, reply: Any, what: str) -> int | StoreError:
        """One record's script reply: the stored version, 0 if refused, or the error that kept it out."""
        try:
            reply = self._check(reply, what)
        except StoreError as exc:
            return exc
        if reply == -1:
            held = list(family.keys[1:])
            return InvalidKeyError(f"{family.name}: an alternate key {held} is already held by another record")
        return 0 if reply == 0 else int(reply[1])

    def _check(self, reply: Any, what: str) -> Any:
        if isinstance(reply, ResponseError):
            text = str(reply)
            if text.startswith("FOREIGN "):  # the script's reply for a key of neither layout's type
                _, kind, name = text.split(" ", 2)
                raise _foreign(name, kind)
            if "WRONGTYPE" in text:
                raise SerializationError(f"a value under a stockstore key is not a stockstore record ({what})")
        if isinstance(reply, Exception):
            raise reply
        return reply

    # ------------------------------------------------------------------ layout

    def _fetch(self, family: Family, keys: Sequence[bytes]) -> list[Stored | None]:
        """What is held under these keys, tombstones and expired copies included."""
        raise NotImplementedError

    def _fetch_by_script(self, family: Family, names: list[str]) -> list[Stored | None]:
        """Read *names* in either layout with the script: on a cluster it judges each copy's server run on its node."""
        out: list[Stored | None] = []
        for name, reply in zip(names, self._run(family, "g", [(name, []) for name in names], 0), strict=True):
            held = self._check(reply, "read")
            out.append(None if held is None else self._parse(name, held, None))
        return out

    def _parse(self, name: str, held: bytes | list[bytes] | dict[bytes, bytes], run: bytes | None) -> Stored | None:
        """A record as read in either layout: a string (``bytes``), or a hash's fields (flat or a dict)."""
        try:
            if isinstance(held, bytes):
                stored = _stored(held, run)
                mine = self._layout == "m"
            else:
                fields = held if isinstance(held, dict) else dict(zip(held[::2], held[1::2], strict=True))
                stored = RedisHashStore._from_hash(fields, run)
                mine = self._layout == "h"
        except SerializationError as exc:
            raise _unreadable(name, exc) from None
        if stored is None or mine:
            return stored
        return _OtherLayout(stored.payload, stored.version, stored.expires_ms)

    def _other_layouts(self, names: list[str]) -> list[Stored | None]:
        """What *names* hold, whichever layout's type each key is; None where nothing is.

        The rare path of a single server's reads, for keys this layout's own command
        could not read (``MGET`` answers nil for a hash, ``HGETALL`` WRONGTYPE for a
        string): their ``TYPE`` s, then each read as its layout's, in one pipeline with the
        ``INFO`` of the server run they must be of.  A key of another type raises
        `SerializationError` naming it.
        """
        kinds = [self._check(t, "read") for t in self._pipeline([("TYPE", n) for n in names])]
        reads: list[tuple[Any, ...]] = []
        for name, kind in zip(names, kinds, strict=True):
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "string":
                reads.append(("GET", name))
            elif kind == "hash":
                reads.append(("HGETALL", name))
            elif kind != "none":
                raise _foreign(name, kind)
        if not reads:
            return [None] * len(names)
        *replies, info = self._pipeline([*reads, ("INFO", "server")])
        run = _run_of(self._check(info, "read"))
        held = {command[1]: self._check(reply, "read") for command, reply in zip(reads, replies, strict=True)}
        out: list[Stored | None] = []
        for name in names:
            value = held.get(name)
            out.append(None if value is None or value == {} else self._parse(name, value, run))  # gone meanwhile
        return out

    def _body(self, entry: Entry) -> tuple[_wire.Arg, ...]:
        """The script's body arguments for a whole record."""
        raise NotImplementedError

    def _patch_body(self, current: Stored | None, entry: Entry) -> tuple[str, tuple[_wire.Arg, ...]]:
        """The mode and body that turn *current* (as read) into *entry*."""
        return "c", self._body(entry)

    # ------------------------------------------------------------------ primitives

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]:
        return [s if s is not None and s.live(now_ms) else None for s in self._fetch(family, keys)]

    def _resolve(self, family: Family, index: int, keys: Sequence[bytes], now_ms: float) -> list[bytes | None]:
        prefix = f"{self._prefix(family)}a{index}:"
        out: list[bytes | None] = []
        for chunk in _chunks(keys, self.chunk_size):
            items: list[_Item] = [(prefix + key_text(alt), []) for alt in chunk]
            for reply in self._run(family, "r", items, now_ms, index):
                holder = self._check(reply, "read")
                out.append(
                    None if holder is None else key_bytes(holder.decode("utf-8", "replace"), len(family.primary))
                )
        return out

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        self._ensure_built(family)
        self._ensure_marked(family)
        stored: list[int] = []
        failed: dict[bytes, StoreError] = {}
        for done, chunk in enumerate(_chunks(entries, self.chunk_size)):
            try:
                replies = self._write_chunk(family, chunk, now_ms)
            except (RedisError, OSError) as exc:
                # Outcomes unknown from here on: every remaining entry counts as not applied.
                failed.update((e.key, _unavailable(exc)) for e in entries[done * self.chunk_size :])
                break
            for entry, reply in zip(chunk, replies, strict=True):
                outcome = self._outcome(family, reply, "write")
                if isinstance(outcome, StoreError):
                    failed[entry.key] = outcome
                stored.append(outcome if isinstance(outcome, int) else 0)
        if failed:
            raise PartialWrite.of(failed)
        return stored

    def _write_chunk(self, family: Family, chunk: Sequence[Entry], now_ms: float) -> list[Any]:
        """Write one chunk of whole records (mode ``w``); the script's replies (or errors), aligned."""
        items = [
            self._item(family, e.key, alternates=e.alternates, body=self._body(e), index=self._index_args(family, e))
            for e in chunk
        ]
        return self._run(family, "w", items, now_ms)

    def _remove(self, family: Family, keys: Sequence[bytes], now_ms: float) -> int:
        """Delete in script calls of a chunk each (mode ``d``), all in one pipeline on a single server.

        There each call answers how many of its records were live: in a marked family
        (redis.lua's MARK) that is what its ``UNLINK`` counted, with no header read.
        """
        if not self._cluster:
            head = self._head(family, "d", now_ms)
            names = self._record_keys(family, keys)
            commands = [("EVALSHA", _SHA, len(c), *c, *head) for c in _chunks(names, self.chunk_size)]
            return sum(int(self._check(reply, "delete")) for reply in self._pipeline(commands))
        removed = 0
        for chunk in _chunks(self._record_keys(family, keys), self.chunk_size):
            replies = self._run(family, "d", [(name, ()) for name in chunk], now_ms)
            removed += sum(self._check(r, "delete") for r in replies)
        return removed

    def _patch(self, family: Family, keys: Sequence[bytes], merge: Merge, now_ms: float) -> list[Entry]:
        """Read, merge here (exactly, with the codec), write back only if nothing changed meanwhile.

        The write is one script per record guarded by the version read, so a
        concurrent write in between is never lost: that record is read and merged
        again, up to *cas_retries* times.  A chunk costs two round trips; the writes
        of one chunk go out on a writer thread while the next chunk is read and merged.
        """
        self._ensure_built(family)
        merged: dict[bytes, Entry] = {}
        failed: dict[bytes, StoreError] = {}
        pending = list(dict.fromkeys(keys))
        for attempt in range(self.cas_retries):
            pending = self._patch_round(family, pending, merge, now_ms, merged, failed)
            if not pending:
                break
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))  # let the other writer finish
        for key in pending:
            failed[key] = StoreError(f"{family.name} record kept changing; gave up after {self.cas_retries} tries")
        if failed:
            raise PartialWrite.of(failed)
        return [merged[k] for k in keys]

    def _patch_round(
        self,
        family: Family,
        keys: list[bytes],
        merge: Merge,
        now_ms: float,
        merged: dict[bytes, Entry],
        failed: dict[bytes, StoreError],
    ) -> list[bytes]:
        """One read-merge-write pass over *keys*, a chunk at a time; the keys that changed meanwhile."""
        chunks = list(_chunks(keys, self.chunk_size))
        contended: list[bytes] = []
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(1)) if len(chunks) > 1 else None
            writing: Future[_Patched] | None = None
            for chunk in chunks:
                planned = self._plan_patch(family, chunk, merge, now_ms, failed)
                if writing is not None:
                    contended.extend(self._settle_patch(writing.result(), merged, failed))
                if pool is None:
                    contended.extend(self._settle_patch(self._write_patch(family, planned, now_ms), merged, failed))
                else:
                    writing = pool.submit(self._write_patch, family, planned, now_ms)
            if writing is not None:
                contended.extend(self._settle_patch(writing.result(), merged, failed))
        return contended

    def _plan_patch(
        self, family: Family, keys: list[bytes], merge: Merge, now_ms: float, failed: dict[bytes, StoreError]
    ) -> dict[str, list[tuple[Entry, _Item]]]:
        """Read *keys* and merge each: the guarded writes to make, by script mode."""
        planned: dict[str, list[tuple[Entry, _Item]]] = {}
        for key, current in zip(keys, self._fetch(family, keys), strict=True):
            live = current if current is not None and current.live(now_ms) else None
            try:
                entry = merge(key, live)
            except StoreError as exc:  # a record it cannot read, a lifetime that fails: that key alone
                failed[key] = exc
                continue
            expected = b"" if current is None else _VERSION.pack(current.version)
            mode, body = self._patch_body(live, entry)
            item = self._item(
                family,
                key,
                expected=expected,
                alternates=entry.alternates,
                body=body,
                index=self._index_args(family, entry),
            )
            planned.setdefault(mode, []).append((entry, item))
        return planned

    def _write_patch(self, family: Family, planned: dict[str, list[tuple[Entry, _Item]]], now_ms: float) -> _Patched:
        """Send the guarded writes; each entry with its outcome (see `_outcome`)."""
        done: _Patched = []
        for mode, plans in planned.items():
            replies = self._run(family, mode, [item for _, item in plans], now_ms)
            for (entry, _), reply in zip(plans, replies, strict=True):
                done.append((entry, self._outcome(family, reply, "patch")))
        return done

    @staticmethod
    def _settle_patch(done: _Patched, merged: dict[bytes, Entry], failed: dict[bytes, StoreError]) -> list[bytes]:
        contended: list[bytes] = []
        for entry, outcome in done:
            if isinstance(outcome, StoreError):
                failed[entry.key] = outcome
            elif outcome:
                merged[entry.key] = replace(entry, version=outcome)
            else:
                contended.append(entry.key)
        return contended

    def _fill(self, family: Family, entries: Sequence[Entry], now_ms: float) -> None:
        self._ensure_built(family)
        items = [
            self._item(family, e.key, alternates=e.alternates, body=self._body(e), index=self._index_args(family, e))
            for e in entries
        ]
        self._cache_writes(family, "f", [e.key for e in entries], items, now_ms)

    def _watch(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bytes]:
        """Fill tokens (`BaseStore._watch`): ``SET`` of a random token with a ``PX``, a chunk a round trip.

        The token key is in the record's hash slot, so the script checks it with the
        record; an eviction or a restart loses it, and the watched fill with it.
        """
        now_ms = int(self.clock() * 1000)
        ends = _TOKEN_END.pack(now_ms + ttl_ms)  # by the store's clock, as expiries are
        names = [self._token_key(family, k) for k in keys]
        tokens: list[bytes] = []
        for chunk in _chunks(names, self.chunk_size):
            # A token in place stays (NX): every watcher gets it, the first fill uses it up.
            commands = [
                command
                for name in chunk
                for command in (("SET", name, os.urandom(16) + ends, "NX", "PX", ttl_ms), ("GET", name))
            ]
            if not self._cluster:  # before any token: a marked family holds none (redis.lua: MARK)
                commands.insert(0, ("DEL", self._mark(family)))
            replies = self._pipeline(commands)
            if not self._cluster:
                self._check(replies.pop(0), "watch")
            for held in (self._check(reply, "watch") for reply in replies[1::2]):
                live = held is not None and _TOKEN_END.unpack_from(held, 16)[0] > now_ms
                tokens.append(held[:16] if live else os.urandom(16))  # gone already: a token nothing holds
        return tokens

    def _fill_watched(self, family: Family, entries: Sequence[Entry], tokens: Sequence[bytes], now_ms: float) -> None:
        self._ensure_built(family)
        items = [
            self._item(
                family,
                e.key,
                expected=t,
                alternates=e.alternates,
                body=self._body(e),
                index=self._index_args(family, e),
            )
            for e, t in zip(entries, tokens, strict=True)
        ]
        self._cache_writes(family, "F", [e.key for e in entries], items, now_ms)

    def _token_key(self, family: Family, key: bytes) -> str:
        """The name of a record's fill token, in the record's hash slot (as redis.lua's ``token_key``)."""
        prefix = self._prefix(family)
        if "{" in prefix:
            return f"{prefix}t:{key_text(key)}"
        return f"{prefix}t:{{{prefix}r:{key_text(key)}}}"

    def _invalidate(self, family: Family, keys: Sequence[bytes], version: int, until_ms: int) -> None:
        items = [self._item(family, k, body=(_header(version, until_ms),)) for k in keys]
        self._cache_writes(family, "i", keys, items, self.clock() * 1000)

    def _cache_writes(
        self, family: Family, mode: str, keys: Sequence[bytes], items: list[_Item], now_ms: float
    ) -> None:
        """A chain's fills or tombstones, a chunk a call; the keys they failed for raise `PartialWrite`.

        On a cluster a node that is down fails its own keys only, so a chain
        bypasses those and keeps the rest of the tier.
        """
        failed: dict[bytes, StoreError] = {}
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start : start + self.chunk_size]
            replies = self._run(family, mode, chunk, now_ms)
            for key, reply in zip(keys[start : start + self.chunk_size], replies, strict=True):
                try:
                    self._check(reply, mode)
                except (RedisError, OSError) as exc:
                    failed[key] = _unavailable(exc)
                except StoreError as exc:
                    failed[key] = exc
        if failed:
            raise PartialWrite.of(failed)

    def _lease(self, family: Family, keys: Sequence[bytes], ttl_ms: int) -> list[bool]:
        """``SET NX PX`` of each key's lease (``<prefix>l:<key>``), a chunk a round trip."""
        taken: list[bool] = []
        for chunk in _chunks(self._lease_keys(family, keys), self.chunk_size):
            replies = self._pipeline([("SET", name, b"", "NX", "PX", ttl_ms) for name in chunk])
            taken += [self._check(reply, "lease") is True for reply in replies]
        return taken

    def _end_leases(self, family: Family, keys: Sequence[bytes]) -> None:
        for chunk in _chunks(self._lease_keys(family, keys), self.chunk_size):
            commands = [("DEL", name) for name in chunk] if self._cluster else [("DEL", *chunk)]
            for reply in self._pipeline(commands):
                self._check(reply, "release")

    def _lease_keys(self, family: Family, keys: Sequence[bytes]) -> list[str]:
        prefix = self._prefix(family) + "l:"
        return [prefix + key_text(k) for k in keys]

    def _scan(self, family: Family, now_ms: float) -> Iterator[bytes]:
        """Every live key: ``SCAN MATCH`` over the family's records (never ``KEYS``), headers checked.

        On a single server each page is one round trip (`_page`), with no header
        read where the family is marked (redis.lua's MARK).  A family whose index is
        built lists from it instead, in one script call: a `reset` switching meanwhile
        shows the old keys or the new, never some of each.
        """
        if family.indexes:
            with contextlib.suppress(QueryError):  # an index never built: listed by SCAN
                yield from self._find(family, Search(), now_ms)
                return
        prefix = self._prefix(family) + "r:"
        cut, parts = len(prefix), len(family.primary)
        if not self._cluster:
            cursor, marked = 0, True
            while True:
                cursor, names, marked = self._page(family, cursor, marked, now_ms)
                for name in names:
                    yield _key_of_name(name[cut:], parts)
                if not cursor:
                    return
        found = self._client.scan_iter(match=prefix + "*", count=self.chunk_size)
        for chunk in _chunks((k.decode() for k in found), self.chunk_size):
            # One script call a chunk tells which are live (not tombstones, not expired).
            for name, live in zip(chunk, self._run(family, "l", [(n, ()) for n in chunk], now_ms), strict=True):
                if live == 1 or self._check(live, "scan"):  # 0, or an error that _check raises
                    yield key_bytes(name[cut:], parts)

    def _page(self, family: Family, cursor: int, marked: bool, now_ms: float) -> tuple[int, list[bytes], bool]:
        """One page of live record names on a single server: the next cursor, the names, whether marked.

        While the family is *marked*, the mark and a plain ``SCAN`` go in one
        transaction, and a marked page is all live; else (and from then on) the
        script scans the page and checks each header (mode ``L``).
        """
        if marked:
            pipe: Any = self._client.pipeline(transaction=True)
            pipe.get(self._mark(family)).scan(cursor, match=self._prefix(family) + "r:*", count=self.chunk_size)
            mark, (after, names) = pipe.execute()
            if mark == b"1":
                return int(after), names, True
        command = ("EVALSHA", _SHA, 0, *self._head(family, "L", now_ms), cursor, self.chunk_size)
        after, *names = self._check(self._pipeline([command])[0], "scan")
        return int(after), names, False

    def _count(self, family: Family, now_ms: float) -> int:
        """A family whose index is built is counted from it, in one script call (see `_scan`)."""
        if family.indexes:
            with contextlib.suppress(QueryError):
                return self._count_found(family, Search(), now_ms)
        return super()._count(family, now_ms)

    def _clear(self, family: Family, now_ms: float) -> int:
        removed = 0
        for chunk in _chunks(self._scan_all(family), self.chunk_size):
            removed += self._remove(family, chunk, now_ms)
        if family.indexes:  # records Redis expired already are in no SCAN: their index entries go here
            self._sweep(family, now_ms, set())
        return removed

    def _scan_all(self, family: Family) -> Iterator[bytes]:
        prefix = self._prefix(family) + "r:"
        for name in self._client.scan_iter(match=prefix + "*", count=self.chunk_size):
            yield key_bytes(name.decode()[len(prefix) :], len(family.primary))

    def _mark(self, family: Family) -> str:
        return self._prefix(family) + "p"

    def _ensure_marked(self, family: Family) -> None:
        """Mark the family (redis.lua's MARK) if it is empty at this store's first write to it, on a single server.

        A nonce of this store's goes in the mark (``NX``: not over a mark or another
        store's nonce), then a ``SCAN`` looks for any record or fill token; if there is
        none, mode ``P`` turns the nonce into the mark, unless a write of a tombstone,
        a fill, a token or an expiring record took it away meanwhile (else the nonce
        goes).  Every record there then was written as a live one, so listing and
        deleting read no header.
        """
        if self._cluster or family.name in self._marking:
            return
        self._marking.add(family.name)
        nonce = os.urandom(16).hex()
        if not self._client.set(self._mark(family), nonce, nx=True, px=60_000):
            return
        found = self._client.scan_iter(match=self._prefix(family) + "[rt]:*", count=10 * self.chunk_size)
        empty = "1" if next(iter(found), None) is None else ""
        # EVAL: once per family and store, maybe before the script is loaded.
        self._client.eval(_SCRIPT, 0, *self._head(family, "P", 0), nonce, empty)

    # ------------------------------------------------------------------ indexes

    def _ensure_built(self, family: Family) -> None:
        """Mark a family's indexes built when it has no records yet: from then on every write keeps them.

        Once per family and store: one ``HMGET`` of the family's ``i:m``, and, for a
        family no index was ever written for, a ``SCAN`` until its first record.  A family
        that already holds records stays unbuilt until `reindex`, so queries refuse it.
        """
        if not family.indexes or family.name in self._built:
            return
        prefix = self._prefix(family)
        names = self._index_names(family)
        held = self._client.hmget(prefix + "i:m", list(names))
        if all(h is not None for h in held):
            self._built.add(family.name)
            return
        if not self._client.exists(prefix + "i:k") and next(self._scan_all(family), None) is None:
            self._client.hset(prefix + "i:m", mapping=dict.fromkeys(names, 1))
            self._built.add(family.name)

    def _find(self, family: Family, search: Search, now_ms: float) -> list[bytes]:
        """The query script (mode ``Q`` of redis.lua) over the family's index: one call, nothing scanned."""
        if not family.indexes:
            return super()._find(family, search, now_ms)
        return list(self._query(family, search, now_ms, counting=False))

    def _count_found(self, family: Family, search: Search, now_ms: float) -> int:
        if not family.indexes:
            return super()._count_found(family, search, now_ms)
        return int(self._query(family, search, now_ms, counting=True))

    def _query(self, family: Family, search: Search, now_ms: float, *, counting: bool) -> Any:
        self._ensure_built(family)
        if family.name not in self._built:
            held = self._client.hmget(self._prefix(family) + "i:m", list(self._index_names(family)))
            missing = [a for a, h in zip(family.indexes, held, strict=True) if h is None]
            raise QueryError(
                f"{family.name}: the index of {missing} was never built for the records already stored; "
                f"call store.reindex({family.name}) once"
            )
        position = {attr: n for n, attr in enumerate(family.indexes, 1)}
        limit = -1 if search.stop is None else search.stop - search.start
        conditions = _index.merged(search.conditions)
        args: list[Any] = [search.start, limit, int(counting), len(conditions)]
        for attr, ranges, _ in conditions:
            args += [position[attr], len(ranges), *(bound for pair in ranges for bound in pair)]
        args.append(len(search.order))
        for attr, descending in search.order:
            args += [position[attr], int(descending)]
        args.append(int(len(conditions) == 1 and conditions[0][2]))
        head = self._head(family, "Q", now_ms)
        (reply,) = self._pipeline([("EVALSHA", _SHA, 1, self._prefix(family) + "i:m", *head, *args)], packed=True)
        return self._check(reply, "find")

    def _reindex(self, family: Family, now_ms: float) -> None:
        """Index every record held (``SCAN``, read, then mode ``X`` a chunk a call), drop what is gone, mark built.

        Each record is indexed only if it still has the version read: one written
        meanwhile was indexed by its own write.  Indexes of attributes no longer
        declared are removed.
        """
        if not family.indexes:
            return
        prefix = self._prefix(family)
        names = set(self._index_names(family))
        held: list[bytes] = self._client.hkeys(prefix + "i:m")  # type: ignore[assignment]
        for attr in (a.decode() for a in held):
            if attr not in names:
                self._client.unlink(prefix + "i:z:" + attr, prefix + "i:v:" + attr)
                self._client.hdel(prefix + "i:m", attr)
        seen: set[bytes] = set()
        for chunk in _chunks(self._scan_read(family, now_ms), self.chunk_size):
            items: list[_Item] = []
            for key, stored in chunk:
                seen.add(key)
                entry = Entry(stored.payload, stored.version, stored.expires_ms, key, ())
                items.append(
                    (prefix + "r:" + key_text(key), [_VERSION.pack(stored.version), *self._index_args(family, entry)])
                )
            for reply in self._run(family, "X", items, now_ms):
                self._check(reply, "reindex")
        self._sweep(family, now_ms, seen)
        self._client.hset(prefix + "i:m", mapping=dict.fromkeys(names, 1))
        self._built.add(family.name)

    def _sweep(self, family: Family, now_ms: float, keep: set[bytes]) -> None:
        """Drop the index entries of records no longer live, among those the index names but *keep* does not."""
        prefix = self._prefix(family)
        blank = [b""] * (2 + len(family.indexes))
        held: dict[bytes, bytes] = self._client.hgetall(prefix + "i:k")  # type: ignore[assignment]
        gone = [me.decode() for me, key in held.items() if key not in keep]
        for chunk in _chunks(gone, self.chunk_size):
            for reply in self._run(family, "X", [(prefix + "r:" + me, blank) for me in chunk], now_ms):
                self._check(reply, "clear")

    def _reset(self, family: Family, chunks: Iterable[list[Entry]], now_ms: float) -> int:
        """Stage the new records beside the old, then switch in one script (mode ``S`` of redis.lua).

        The new records, their alternate-key pointers and their index are written
        under the staging prefix ``<prefix>n:``, where no read looks; the switch then
        ``UNLINK`` s the old ones and ``RENAME`` s the staged ones into place, atomically.
        The switch blocks the server for a ``RENAME`` per record; it finds the names in the
        family's index where that is built, else with a ``SCAN`` of the keyspace (docs/backends.md).
        """
        prefix = self._prefix(family)
        if self._cluster and "{" not in prefix:
            raise UnsupportedOperationError(
                f"{self!r}: reset of {family.name} on a Redis Cluster needs the family in one hash slot: "
                f"declare __stockstore_indexes__ (or an alternate key) on {family.name}"
            )
        stage = prefix + "n:"
        leftovers = [name for name in self._client.scan_iter(match=stage + "*", count=self.chunk_size)]
        for part in _chunks(leftovers, 500):  # an earlier reset that failed part-way
            self._client.unlink(*part)
        # The switch is made only while this token is staged, and takes it away: a switch sent
        # again (a retry after its reply was lost, say to a timeout) would otherwise find nothing
        # staged and remove the dataset it had just put in place.
        token = os.urandom(16).hex()
        self._client.set(stage + "t", token)
        staged: set[bytes] = set()
        for chunk in chunks:
            for part in _chunks(chunk, self.chunk_size):
                items = [
                    self._item(
                        family,
                        e.key,
                        alternates=e.alternates,
                        body=self._body(e),
                        index=self._index_args(family, e),
                        prefix=stage,
                    )
                    for e in part
                ]
                for entry, reply in zip(part, self._run(family, "w", items, now_ms, prefix=stage), strict=True):
                    outcome = self._outcome(family, reply, "reset")
                    if isinstance(outcome, StoreError):
                        raise outcome
                    if not outcome:
                        raise StoreError(f"reset of {family.name}: {entry.key!r} was refused while staged")
                    staged.add(entry.key)
        head = self._head(family, "S", now_ms)
        (reply,) = self._pipeline([("EVALSHA", _SHA, 1, prefix + "i:m", *head, stage, token)])
        count = int(self._check(reply, "reset"))
        if count < 0 and self._client.get(prefix + "sw") == token.encode():
            count = len(staged)  # switched already, by this call's first try (its reply was lost)
        elif count < 0:
            raise StoreError(
                f"reset of {family.name} was not switched: another reset of it took the staging over; "
                "reset from one process at a time"
            )
        if family.indexes:
            self._built.add(family.name)
        return count


class RedisMsgpackStore(_RedisStore):
    """Records in Redis, one string per record: ``RedisMsgpackStore("redis://localhost:6379/0")``.

    The value is a 25-byte header (version, expiry, server run) followed by the codec's bytes;
    the key expires with the record (``PXAT``).  The compact, fast layout.
    *client_or_url* is a ``redis.Redis`` / ``redis.cluster.RedisCluster`` (left
    open by `close`) or a ``redis://``, ``rediss://`` or ``redis+cluster://`` URL.
    """

    _layout = "m"

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]:
        """Plain ``MSET`` a chunk (``SET ... PX`` for a record that expires), with no script.

        A family without alternate keys needs nothing but the value, so a write is
        a plain write: a script would cost the server ten times a ``SET``.  The
        writer's versions are kept as they are (they grow per process); the
        ``max(new, old + 1)`` of `SqlStore` and the alternate-key pointers need
        the script, which families with alternate keys still use.
        """
        if len(family.keys) > 1 or family.indexes:
            return super()._write(family, entries, now_ms)
        self._ensure_marked(family)
        failed: dict[bytes, StoreError] = {}
        for done, chunk in enumerate(_chunks(entries, self.chunk_size)):
            lasting: list[Any] = []
            commands: list[tuple[Any, ...]] = []
            owners: list[list[Entry]] = []
            for entry, name in zip(chunk, self._record_keys(family, [e.key for e in chunk]), strict=True):
                value = (_header(entry.version, entry.expires_ms), entry.payload)
                if entry.expires_ms is None:
                    lasting += (name, value)
                else:
                    ttl = math.ceil(entry.expires_ms - now_ms)
                    if not 0 < ttl <= _LATEST_EXPIRY:  # expired already (Redis wants 1 at the least), or far off
                        ttl = max(1, min(ttl, _LATEST_EXPIRY))
                    commands.append(("SET", name, value, "PX", ttl))
                    owners.append([entry])
            if lasting and self._cluster:  # MSET wants one hash slot; the cluster pipeline routes SETs
                commands += [("SET", name, value) for name, value in zip(lasting[::2], lasting[1::2], strict=True)]
                owners += [[e] for e in chunk if e.expires_ms is None]
            elif lasting:
                commands.append(("MSET", *lasting))
                owners.append([e for e in chunk if e.expires_ms is None])
            if len(lasting) < 2 * len(chunk) and not self._cluster:  # first: a marked family has none that expire
                commands.insert(0, ("DEL", self._mark(family)))
                owners.insert(0, list(chunk))
            try:
                replies = self._send(commands, packed=True)
            except (RedisError, OSError) as exc:
                # Outcomes unknown from here on: every remaining entry counts as not applied.
                failed.update((e.key, _unavailable(exc)) for e in entries[done * self.chunk_size :])
                break
            for group, reply in zip(owners, replies, strict=True):
                if isinstance(reply, Exception):
                    error = _unavailable(reply)
                    failed.update((e.key, error) for e in group)
        if failed:
            raise PartialWrite.of(failed)
        return [e.version for e in entries]

    def _fetch(self, family: Family, keys: Sequence[bytes]) -> list[Stored | None]:
        names = self._record_keys(family, keys)
        if self._cluster:
            return self._fetch_by_script(family, names)
        out: list[Stored | None] = []
        for chunk in _chunks(names, self.chunk_size):
            out.extend(self._mget(chunk))
        return out

    def _mget(self, names: list[str]) -> list[Stored | None]:
        values, run = self._mget_raw(names)
        return self._stored_values(names, values, run)

    def _mget_raw(self, names: Sequence[str | bytes]) -> tuple[list[bytes | None], bytes]:
        """``MGET`` *names*, then ``INFO`` on the same connection: the values, and the run their copies must be of."""
        values, info = self._pipeline([("MGET", *names), ("INFO", "server")])
        return self._check(values, "read"), _run_of(self._check(info, "read"))

    def _stored_values(self, names: list[str], values: list[bytes | None], run: bytes) -> list[Stored | None]:
        """What an ``MGET`` of *names* read, as records (`_stored`).

        ``MGET`` answers nil for a key of another type too: one ``EXISTS`` over the nils
        tells misses from the rest, which are read as the other layout's (`_other_layouts`).
        """
        try:
            out = [None if v is None else _stored(v, run) for v in values]
        except SerializationError as exc:  # the hot path names no key: find the one
            name = next(n for n, v in zip(names, values, strict=True) if v is not None and _fails(v))
            raise _unreadable(name, exc) from None
        misses = [i for i, v in enumerate(values) if v is None]
        if misses and self._check(self._pipeline([("EXISTS", *(names[i] for i in misses))])[0], "read"):
            for i, stored in zip(misses, self._other_layouts([names[i] for i in misses]), strict=True):
                # A string there now was written after the MGET: a miss, as the MGET saw it.
                out[i] = stored if isinstance(stored, _OtherLayout) else None
        return out

    def _scan_read(self, family: Family, now_ms: float) -> Iterator[tuple[bytes, Stored]]:
        """``SCAN`` the family's records and ``MGET`` each page of names as it comes: one pass."""
        if self._cluster:
            yield from super()._scan_read(family, now_ms)
            return
        prefix = self._prefix(family) + "r:"
        found = self._client.scan_iter(match=prefix + "*", count=self.chunk_size)
        for chunk in _chunks((k.decode() for k in found), self.chunk_size):
            for name, stored in zip(chunk, self._mget(chunk), strict=True):
                if stored is not None and stored.live(now_ms):  # None: deleted since the SCAN
                    yield key_bytes(name[len(prefix) :], len(family.primary)), stored

    def _read_frame(self, family: Family, gather: Gather, now_ms: float) -> None:
        """``SCAN`` the family's records, then ``MGET`` them a page at a time into *gather* (`Gather.take_page`).

        The names are listed first, so that the frame's block is allocated once.  A
        page's values whose headers `_live_headers` passes go to the block as they
        are; *gather* leaves the rest (nils, tombstones, expired or stale copies,
        other shapes, copies under another key) to `_stored_values`, as `_scan_read`.
        """
        if self._cluster:
            super()._read_frame(family, gather, now_ms)
            return
        from .._frame import Page  # pandas is in use already

        prefix = self._prefix(family) + "r:"
        cut, parts = len(prefix), len(family.primary)
        names: list[bytes] = list(self._client.scan_iter(match=prefix + "*", count=self.chunk_size))
        gather.reserve(len(names))
        as_is = Page.spelled_as_is(_safe)
        for chunk in _chunks(names, self.chunk_size):
            values, run = self._mget_raw(chunk)
            live = functools.partial(_live_headers, run=run, now_ms=now_ms)
            page = Page(len(prefix.encode()), _HEADER.size, live, as_is)
            left = gather.take_page(chunk, values, page)
            if not left:
                continue
            texts = [chunk[i].decode() for i in left]
            pairs = [
                (key_bytes(name[cut:], parts), stored)
                for name, stored in zip(texts, self._stored_values(texts, [values[i] for i in left], run), strict=True)
                if stored is not None and stored.live(now_ms)  # None: deleted since the SCAN
            ]
            gather.take([key for key, _ in pairs], [stored for _, stored in pairs])

    def _body(self, entry: Entry) -> tuple[_wire.Arg, ...]:
        assert entry.payload is not None
        return ((_header(entry.version, entry.expires_ms), entry.payload),)  # one value in two pieces


class RedisHashStore(_RedisStore):
    """Records in Redis, one hash per record, one field per attribute.

    Each field holds that attribute's value encoded with the codec, so types
    round-trip; the field ``"\\xff"`` (never a UTF-8 name) holds the header and the
    stored class.  Other tools can read single attributes with ``HGET``; a patch
    writes only the fields that changed.  Attribute order is not kept (Redis hashes
    are unordered), and the layout costs more memory than `RedisMsgpackStore`
    (docs/performance.md).
    """

    _layout = "h"

    def _fetch(self, family: Family, keys: Sequence[bytes]) -> list[Stored | None]:
        names = self._record_keys(family, keys)
        if self._cluster:
            return self._fetch_by_script(family, names)
        out: list[Stored | None] = []
        for chunk in _chunks(names, self.chunk_size):
            # In one MULTI: a chunk is read whole before or after a `reset` switches, never across.
            *_, done, info = self._pipeline(
                [("MULTI",), *(("HGETALL", n) for n in chunk), ("EXEC",), ("INFO", "server")]
            )
            replies = self._check(done, "read")
            run = _run_of(self._check(info, "read"))
            strings: list[int] = []  # WRONGTYPE: the other layout's records, read on their own
            for name, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
                    strings.append(len(out))
                    out.append(None)
                else:
                    out.append(self._parse(name, self._check(reply, "read"), run))
            if strings:
                for i, stored in zip(strings, self._other_layouts([names[i] for i in strings]), strict=True):
                    out[i] = stored if isinstance(stored, _OtherLayout) else None  # a hash now: written since
        return out

    def _write_chunk(self, family: Family, chunk: Sequence[Entry], now_ms: float) -> list[Any]:
        """One transaction a chunk: each record's hash ``HSET`` to its staging key, then one script call.

        The script (layout ``H`` of redis.lua) decides each record as it always does
        (versions ``max(new, old + 1)``, alternate keys, expiry) from its header alone
        and ``RENAME`` s the staged hash over the record, or drops it where refused;
        ``MULTI``/``EXEC`` around it all keeps the write of a record one atomic step.
        The 200 fields of a wide record then cost Redis a plain ``HSET``, where inside
        the script each passed through Lua's arguments and a call of its own: about
        twice the server's time.  On a cluster a transaction holds one hash slot, so
        there each slot's records go through the script whole, as before.
        """
        if self._cluster:
            return super()._write_chunk(family, chunk, now_ms)
        prefix = self._prefix(family)
        names: list[str] = []
        stages: list[str] = []
        args: list[Any] = []
        staged: list[tuple[Any, ...]] = []
        for entry in chunk:
            body = self._body(entry)
            name, group = self._item(family, entry.key, alternates=entry.alternates)
            stage = _stage_key(prefix, name)
            names.append(name)
            stages.append(stage)
            args += group
            args.append(body[0])
            args += self._index_args(family, entry)
            staged.append(("HSET", stage, _META, *body))
        head = ("H+", *self._head(family, "w", now_ms)[1:])
        # EVAL, not EVALSHA: a script the server lost would fail inside the transaction, after the HSETs.
        script = ("EVAL", _SCRIPT, len(names), *names, *head, *args)
        done = self._pipeline([("MULTI",), ("DEL", *stages), *staged, script, ("EXEC",)])[-1]
        replies = done[-1] if isinstance(done, list) else done  # EXEC's reply, or why it ran nothing
        return [replies] * len(chunk) if isinstance(replies, Exception) else list(replies)

    @staticmethod
    def _from_hash(fields: dict[bytes, bytes], run: bytes | None) -> Stored | None:
        if not fields:
            return None
        meta = fields.pop(_META, None)
        if meta is None or len(meta) < _HEADER.size:
            raise SerializationError("a hash without a RedisHashStore header")
        version, flag, expires, stamp = _HEADER.unpack_from(meta)
        if version > _MAX_VERSION or (flag != _EXPIRES and (flag != _NEVER or expires)):
            raise SerializationError("a hash without a RedisHashStore header")
        if run is not None and stamp not in (_SOURCE, run):
            return None  # a cached copy from before the server restarted
        payload = None
        if len(meta) > _HEADER.size:
            try:
                tag = meta[_HEADER.size :].decode("utf-8")
            except UnicodeDecodeError:
                raise SerializationError("a hash whose header names no stockstore class") from None
            payload = _codec.join_record(tag, list(fields.items()))
        return Stored(payload, version, expires if flag == _EXPIRES else None)

    def _body(self, entry: Entry) -> tuple[bytes, ...]:
        assert entry.payload is not None
        tag, fields = _codec.record_fields(entry.payload)
        return (_header(entry.version, entry.expires_ms) + tag.encode(), *fields)

    def _patch_body(self, current: Stored | None, entry: Entry) -> tuple[str, tuple[bytes, ...]]:
        if current is None or current.payload is None or type(current) is _OtherLayout:
            return "c", self._body(entry)  # a whole record, also over a string of the other layout
        assert entry.payload is not None
        held = dict(_codec.split_record(current.payload)[1])
        tag, pairs = _codec.split_record(entry.payload)
        if not held.keys() <= {name for name, _ in pairs}:
            return "c", self._body(entry)  # an attribute removed (UNSET): written whole, so its field goes
        meta = _header(entry.version, entry.expires_ms) + tag.encode()
        changed = (
            part
            for name, value in pairs
            if held.get(name) != value
            for part in (name.encode("utf-8", "surrogatepass"), value)
        )
        return "p", (meta, *changed)


@dataclass(slots=True)
class _OtherLayout(Stored):
    """A record read from the other layout's type (both may share a namespace): a patch writes it whole."""


def _stored(value: bytes, run: bytes | None) -> Stored | None:
    """What a stored value holds; ``None`` for a cached copy of another server run than *run*.

    *run* ``None``: judged already (by the script, on a cluster).
    """
    if len(value) < _HEADER.size:
        raise SerializationError("a string without a RedisMsgpackStore header")
    version, flag, expires, stamp = _HEADER.unpack_from(value)
    # Versions are microseconds: far from the bound, and with room for + 1.  A flag that is
    # neither (a value of another format, the 0 of an earlier stockstore's header) is refused.
    if version > _MAX_VERSION or (flag != _EXPIRES and (flag != _NEVER or expires)):
        raise SerializationError("a string without a RedisMsgpackStore header")
    if run is not None and stamp not in (_SOURCE, run):
        return None  # filled before the server restarted (an old snapshot, a promoted replica)
    payload = value[_HEADER.size :] if len(value) > _HEADER.size else None
    return Stored(payload, version, expires if flag == _EXPIRES else None)


def _live_headers(heads: np.ndarray, run: bytes, now_ms: float) -> np.ndarray:
    """Which of these stored headers (`_HEADER`, a row each) `_stored` reads as live records of server run *run*.

    `_stored`'s rules and `Stored.live`'s, for a page at once: a header they would
    refuse, or read as a tombstone's or a stale copy's, is False (left to `_stored`).
    """
    import numpy as np  # only for frames: numpy is the pandas extra's

    fields = np.ascontiguousarray(heads).view(np.dtype([("v", ">u8"), ("f", "u1"), ("e", ">i8"), ("s", ">u8")]))[:, 0]
    expires = fields["e"]
    lasting = ((fields["f"] == _NEVER) & (expires == 0)) | ((fields["f"] == _EXPIRES) & (expires > now_ms))
    stamp = fields["s"]
    ours = (stamp == int.from_bytes(_SOURCE, "big")) | (stamp == int.from_bytes(run, "big"))
    live: np.ndarray = (fields["v"] <= _MAX_VERSION) & lasting & ours
    return live


def _fails(value: bytes) -> bool:
    """Whether `_stored` refuses *value* (to find the one of a page that did)."""
    try:
        _stored(value, None)
    except SerializationError:
        return True
    return False


def _unreadable(name: str, exc: SerializationError) -> SerializationError:
    return SerializationError(
        f"the Redis key {name!r} holds no stockstore record ({exc}; both layouts read strings as "
        "RedisMsgpackStore's records and hashes as RedisHashStore's): delete the key or use another namespace"
    )


def _foreign(name: str, kind: str) -> SerializationError:
    return SerializationError(
        f"the Redis key {name!r} holds a {kind}, not a stockstore record: RedisMsgpackStore keeps a record as a "
        "string, RedisHashStore as a hash; delete the key or use another namespace"
    )


def _stage_key(prefix: str, name: str) -> str:
    """Where a staged write puts record *name*'s hash, in its hash slot (as redis.lua's ``stage_key``)."""
    if "{" in prefix:
        return f"{prefix}s:{name[len(prefix) + 2 :]}"
    return f"{prefix}s:{{{name}}}"


def _node_of(cluster: Any, command: tuple[Any, ...]) -> ClusterNode | None:
    """The cluster master a command's (first) key lives on, from the client's slot table (None: not known)."""
    try:
        node: ClusterNode = cluster.get_node_from_key(command[3] if command[0] == "EVALSHA" else command[1])
    except (RedisError, RedisClusterException):
        return None
    return node


def _run_of(info: dict[str, Any]) -> bytes:
    """The stamp of the server run an ``INFO server`` reply comes from (see redis.lua)."""
    return bytes.fromhex(str(info["run_id"])[:16])


def _unavailable(exc: BaseException) -> BackendUnavailableError:
    error = BackendUnavailableError(f"Redis failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _client_from_url(url: str, timeout: float, connect_timeout: float, retries: int) -> Client:
    """A client with explicit timeouts and a bounded `Retry` (redis-py's default retries 10 times).

    Options in the URL's query string win, as in ``redis.Redis.from_url``.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
    parts = urlsplit(url)
    scheme, _, cluster = parts.scheme.partition("+")
    if scheme not in ("redis", "rediss") or cluster not in ("", "cluster"):
        raise StoreError(f"expected a redis://, rediss:// or redis+cluster:// URL, got scheme {parts.scheme!r}")
    if not cluster:
        return redis.Redis.from_url(url, retry=retry, **options)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = [h.strip() for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise StoreError("a redis+cluster:// URL names no node")
    first = urlunsplit((scheme, f"{userinfo}@{nodes[0]}" if userinfo else nodes[0], parts.path, parts.query, ""))
    startup = []
    for node in nodes[1:]:
        host, _, port = node.rpartition(":")
        startup.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    # Made with one retry at the least: as it is made, the client asks its default node (the
    # first master) for COMMAND, and that master may be the one that is down.  Then the store's own.
    made = Retry(ExponentialBackoff(cap=0.5, base=0.05), max(retries, 1))
    cluster_client = RedisCluster(url=first, startup_nodes=startup, retry=made, **options)
    cluster_client.set_retry(retry)
    return cluster_client
