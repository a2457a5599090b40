"""Row schemas kept in a store, as records of stockstore's own, so any process can read row records.

A row record (see `stockstore._codec`) names its schema by id only; the schema
itself is written to the store once, before the first record that uses it, and
read back by a process that meets an id it does not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import ClassVar, Protocol

from . import _codec, _writer
from ._entry import Entry, PartialWrite, Stored, versions
from ._keys import Family, encode_key, family_of
from ._record import Record
from .errors import SerializationError


class _Schema(Record):
    """A row schema as a record.

    Its family name has a ``:``, which no class's ``__qualname__`` has, so it can
    never meet a user's records; it is keyed by the schema id in hex and never expires.
    """

    __qualname__ = "stockstore:schema"
    __stockstore_keys__: ClassVar[list[str]] = ["id"]


SCHEMAS = family_of(_Schema)


class Holder(Protocol):
    """What a `Shelf` needs of its store."""

    def _now(self) -> tuple[float, float]: ...

    def _errors(self) -> contextlib.AbstractContextManager[None]: ...

    def _read(self, family: Family, keys: Sequence[bytes], now_ms: float) -> list[Stored | None]: ...

    def _write(self, family: Family, entries: Sequence[Entry], now_ms: float) -> list[int]: ...

    def _recover(self, family: Family, key: bytes, stored: Stored, error: Exception) -> Stored | None: ...


class SchemaMissingError(SerializationError):
    """A row record's schema is neither known in this process nor in its store."""


class Shelf:
    """One store's row schemas: the ones it has written, and how it finds the others."""

    def __init__(self, store: Holder) -> None:
        self._store = store
        self.saved: set[bytes] = set()  # ids of the schemas this store has written

    def get(self, schema_id: bytes) -> _codec.RowSchema:
        """The row schema of this id: known in this process, or read from the store.

        Read through the store's `_read`, so a `ChainedStore` asks its tiers in turn
        and fills the ones above, as for any record.
        """
        try:
            return _codec.known_schema(schema_id)
        except _codec.UnknownSchemaError:
            pass
        store = self._store
        key = encode_key((schema_id.hex(),))
        _, now_ms = store._now()
        with store._errors():
            [stored] = store._read(SCHEMAS, [key], now_ms)
        while stored is not None and stored.payload is not None:
            try:
                return _schema_of(schema_id, stored.payload)
            except SerializationError as exc:  # a garbled copy: a chain reads it again below
                stored = store._recover(SCHEMAS, key, stored, exc)
        raise SchemaMissingError(
            f"row schema {schema_id.hex()} is not in this store (memcached may have evicted it; "
            "written through a ChainedStore, the tiers below still hold it)"
        )

    def save(self, schema: _codec.RowSchema, *, again: bool = False) -> None:
        """Write *schema* as a record before any row record that uses it: once per store, unless *again*."""
        if schema.id in self.saved and not again:
            return
        store = self._store
        key = schema.id.hex()
        payload = _codec.pack((SCHEMAS.tag(_Schema), {"id": key, "schema": schema.data}))
        _, now_ms = store._now()
        try:
            with store._errors():
                store._write(SCHEMAS, [Entry(payload, versions.next(), None, encode_key((key,)), ())], now_ms)
        except PartialWrite as exc:  # the one record was not written: its own error
            failure = _writer.failure([(SCHEMAS, exc.failed)], exc, 1, "schema not written", single=True)
            raise failure from failure.__cause__
        self.saved.add(schema.id)

    def learn(self, payloads: Iterable[bytes | None]) -> None:
        """Make the schemas of these records known in this process (see `ChainedStore._read`)."""
        for payload in payloads:
            if payload is not None and _codec.is_row_record(payload):
                self.get(_codec.split_row(payload)[2][: _codec.SCHEMA_ID_SIZE])


def _schema_of(schema_id: bytes, payload: bytes) -> _codec.RowSchema:
    """The schema a stored schema record holds, checked against its id."""
    _, attrs = _codec.decode_record(payload)
    data = attrs.get("schema")
    if type(data) is not bytes:
        raise SerializationError(f"stored row schema {schema_id.hex()} is not a stockstore schema")
    schema = _codec.load_schema(data)
    if schema.id != schema_id:
        raise SerializationError(f"stored row schema {schema_id.hex()} does not match its id")
    return schema
