"""Records to bytes and back: msgpack with a few ext types, never pickle.

Every backend stores the same bytes, so a record read from SQL and filled into
Redis is bit-for-bit the record that was written.  msgpack keeps float64 bits
(NaN, ±inf, -0.0), tells ``1`` from ``1.0`` and carries 64-bit ints; the few
types it lacks travel as ext types holding their canonical text form, which
their own constructors parse back exactly.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from .errors import SerializationError

_EXT_DATETIME = 1
_EXT_DATE = 2
_EXT_DECIMAL = 3

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Types that need no look inside: msgpack packs them exactly as they are.
_LEAVES = frozenset({float, str, bool, type(None), bytes})
# Types carried as ext types (see _default).
_EXTS = frozenset({dt.datetime, dt.date, decimal.Decimal})


def _default(obj: Any) -> Any:
    # Called by the packer (strict_types) for anything that is not exactly a
    # msgpack-native type.  check_value has refused everything else already,
    # subclasses such as IntEnum, numpy.float64 or a str subclass included.
    kind = type(obj)
    if kind is tuple:
        return list(obj)
    if kind is dt.datetime:
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if kind is dt.date:
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if kind is decimal.Decimal:
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    raise SerializationError(f"cannot store a value of type {kind.__qualname__}: {obj!r:.80}")


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        text = data.decode()
        if code == _EXT_DATETIME:
            return dt.datetime.fromisoformat(text)
        if code == _EXT_DATE:
            return dt.date.fromisoformat(text)
        if code == _EXT_DECIMAL:
            return decimal.Decimal(text)
    except (ValueError, decimal.InvalidOperation) as exc:
        raise SerializationError(f"corrupt ext value (code {code})") from exc
    raise SerializationError(f"unknown msgpack ext code {code}")


def check_value(value: Any) -> None:
    """Raise `SerializationError` unless *value* round-trips exactly.

    Complete: a value that passes always packs, so a batch can be checked whole
    before any of it is encoded and sent.  msgpack itself would take ints up to
    2**64-1, non-str dict keys, bytearray and subclasses of its types; the
    contract promises none of them.
    """
    kind = type(value)
    if kind in _LEAVES or kind in _EXTS:
        return
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise SerializationError(f"int out of the 64-bit signed range: {value}")
    elif kind is dict:
        check_attributes(value)
    elif kind is list or kind is tuple:
        if not _LEAVES.issuperset(map(type, value)):
            for item in value:
                check_value(item)
    else:
        raise SerializationError(f"cannot store a value of type {kind.__qualname__}: {value!r:.80}")


def check_attributes(attrs: Mapping[Any, Any]) -> None:
    """Check a mapping of attribute name to value (see `check_value`).

    Wide flat records are checked in bulk, at C speed, by the set of their types.
    """
    if not set(map(type, attrs)) <= {str}:
        bad = next(k for k in attrs if type(k) is not str)
        raise SerializationError(f"attribute and dict keys must be str, not {type(bad).__qualname__}: {bad!r:.80}")
    if not _LEAVES.issuperset(map(type, attrs.values())):
        for item in attrs.values():
            check_value(item)


_packer_options: dict[str, Any] = {"default": _default, "strict_types": True, "use_bin_type": True}


def pack(obj: Any) -> bytes:
    """Pack an already-checked value."""
    try:
        return msgpack.packb(obj, **_packer_options)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(str(exc)) from exc


def unpack(data: bytes) -> Any:
    """Unpack stored bytes; anything malformed is a `SerializationError`."""
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True, use_list=True)
    except SerializationError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise SerializationError(f"stored bytes are not a valid stockstore value: {exc}") from exc


def encode_record(tag: str, attrs: Mapping[str, Any]) -> bytes:
    """Encode one record: its class tag and its attributes."""
    check_attributes(attrs)
    return pack((tag, attrs))


def split_record(data: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """A record's class tag and its attributes as ``(name, encoded value)`` pairs.

    Values stay encoded (their exact bytes, sliced out without building them), so a
    backend can store one attribute per field and `join_record` can put them back.
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != 2:
            raise ValueError("not a pair")
        tag = unpacker.unpack()
        pairs: list[tuple[str, bytes]] = []
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            start = unpacker.tell()
            unpacker.skip()
            if type(name) is not str:
                raise ValueError("attribute name is not a str")
            pairs.append((name, data[start : unpacker.tell()]))
        if type(tag) is not str or unpacker.tell() != len(data):
            raise ValueError("not a record")
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise SerializationError(f"stored bytes are not a stockstore record: {exc}") from exc
    return tag, pairs


def join_record(tag: str, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The record bytes for a tag and ``(UTF-8 name, encoded value)`` pairs (see `split_record`)."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [b"\x92", packer.pack(tag), packer.pack_map_header(len(pairs))]
    try:
        for name, value in pairs:
            parts.append(packer.pack(name.decode()))
            parts.append(value)
    except UnicodeDecodeError as exc:
        raise SerializationError("stored attribute name is not UTF-8: not a stockstore record") from exc
    return b"".join(parts)


def decode_record(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode bytes written by `encode_record` into (class tag, attributes)."""
    obj = unpack(data)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not str or type(obj[1]) is not dict:
        raise SerializationError("stored bytes are not a stockstore record")
    return obj[0], obj[1]
