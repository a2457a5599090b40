"""Records to bytes and back: msgpack with a few ext types, never pickle.

Every backend stores the same bytes, so a record read from SQL and filled into
Redis is bit-for-bit the record that was written.  msgpack keeps float64 bits
(NaN, ±inf, -0.0), tells ``1`` from ``1.0`` and carries 64-bit ints; the few
types it lacks travel as ext types holding their canonical text form, which
their own constructors parse back exactly.

A record is the msgpack array ``[tag, attributes]``, or a *row record*
``[tag, attributes, row]``: ``row`` is ext type 4 holding a 16-byte schema id
and then the row's values packed little-endian (``<f8``, ``<i8``) in the order
of that `RowSchema`.  A schema is the ordered list of (name, kind) of those
columnar attributes; its id is the BLAKE2b-128 digest of its msgpack bytes, so
a schema never changes and the process-wide cache of schemas by id never goes
stale.  Attribute names then cost nothing per record.  Stores keep schemas as
records of their own (see `stockstore._schemas`).

`put_frame` writes every column in every row, after the map's attributes.  Wide
dict records use *ordered* schemas: every attribute of the class has its place,
floats in the row and the rest (keys, strings) in the map, and a presence bitmap
after the id says which columns a row holds.  So a record reads back in its own
order wherever its key sits, and records lacking some attributes share a schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import hashlib
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import countOf, itemgetter
from typing import Any

import msgpack

from .errors import SerializationError

_EXT_DATETIME = 1
_EXT_DATE = 2
_EXT_DECIMAL = 3
_EXT_ROW = 4  # a row record's values (see the module docstring)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Types that need no look inside: msgpack packs them exactly as they are.
_LEAVES = frozenset({float, str, bool, type(None), bytes})
# Types carried as ext types (see _default).
_EXTS = frozenset({dt.datetime, dt.date, decimal.Decimal})


def _default(obj: Any) -> Any:
    # Called by the packer for what msgpack has no type of.  check_value has refused
    # everything else already, subclasses such as IntEnum or numpy.float64 included
    # (`plain` turns numpy scalars into Python values before the check).
    kind = type(obj)
    if kind is dt.datetime:
        offset = obj.utcoffset()
        if offset is None:
            return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
        # The offset in microseconds, not in isoformat: CPython 3.11 parses "+00:00:00.000001" as UTC.
        naive = obj.replace(tzinfo=None).isoformat()
        return msgpack.ExtType(_EXT_DATETIME, f"{naive} {offset // dt.timedelta(microseconds=1)}".encode())
    if kind is dt.date:
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if kind is decimal.Decimal:
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    raise SerializationError(f"cannot store a value of type {kind.__qualname__}: {obj!r:.80}")


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        text = data.decode()
        if code == _EXT_DATETIME:
            naive, _, offset = text.partition(" ")
            when = dt.datetime.fromisoformat(naive)
            if not offset:
                return when
            return when.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=int(offset))))
        if code == _EXT_DATE:
            return dt.date.fromisoformat(text)
        if code == _EXT_DECIMAL:
            return decimal.Decimal(text)
    except (ValueError, decimal.InvalidOperation) as exc:
        raise SerializationError(f"corrupt ext value (code {code})") from exc
    raise SerializationError(f"unknown msgpack ext code {code}")


_MAX_DEPTH = 500  # levels of nested lists and dicts; msgpack itself stops at 511


def check_value(value: Any) -> None:
    """Raise `SerializationError` unless *value* round-trips exactly.

    Complete: a value that passes always packs, so a batch can be checked whole
    before any of it is encoded and sent.  msgpack itself would take ints up to
    2**64-1, non-str dict keys, bytearray and subclasses of its types; the
    contract promises none of them.  Nested values are walked with a stack of
    our own, so depth meets a clear limit, never Python's recursion limit.
    """
    _walk([value], 0)


def check_attributes(attrs: Mapping[Any, Any]) -> None:
    """Check a mapping of attribute name to value (see `check_value`).

    Wide flat records are checked in bulk, at C speed: the names by joining them,
    the values by the set of their types.
    """
    _check_names(attrs)
    if not _LEAVES.issuperset(map(type, attrs.values())):
        _walk(attrs.values(), 1)


def _check_names(mapping: Mapping[Any, Any]) -> None:
    try:
        "".join(mapping)  # every name a str; one of a str subclass is stored as the str it is
    except TypeError:
        bad = next(k for k in mapping if not isinstance(k, str))
        message = f"attribute and dict keys must be str, not {type(bad).__qualname__}: {bad!r:.80}; convert with str()"
        raise SerializationError(message) from None


def _walk(values: Iterable[Any], depth: int) -> None:
    """Check *values*, found *depth* containers deep, and everything inside them."""
    pending = [(values, depth)]
    while pending:
        items, level = pending.pop()
        for value in items:
            kind = type(value)
            if kind in _LEAVES or kind in _EXTS:
                continue
            if kind is int:
                if not _INT64_MIN <= value <= _INT64_MAX:
                    raise SerializationError(
                        f"int out of the 64-bit signed range: {value}; store it as a str or a decimal.Decimal"
                    )
                continue
            if kind is not dict and kind is not list and kind is not tuple:
                raise SerializationError(
                    f"cannot store a value of type {kind.__qualname__}: {value!r:.80}; {_advice(value)}"
                )
            if level >= _MAX_DEPTH:
                raise SerializationError(f"a value is nested deeper than {_MAX_DEPTH} levels; flatten it")
            if kind is dict:
                _check_names(value)
                value = value.values()
            if not _LEAVES.issuperset(map(type, value)):
                pending.append((value, level + 1))


def _advice(value: Any) -> str:
    """What to do with a value of a type the codec refuses, for its error message."""
    module = type(value).__module__.partition(".")[0]
    dimensions: Any = getattr(value, "ndim", 0)  # an array's, a Series' or a DataFrame's; a scalar's is 0
    if module in ("numpy", "pandas") and dimensions:
        return "use put_frame for a DataFrame, or store a list (.tolist())"
    if isinstance(value, enum.Enum) and not isinstance(value, (int, float, str)):
        return "store its .value"
    for base in (bool, int, float, str, bytes):  # a subclass (IntEnum, a str subclass, numpy.longdouble's float)
        if isinstance(value, base):
            return f"convert with {base.__name__}()"
    if isinstance(value, dt.datetime):  # a subclass, such as pandas.Timestamp
        return "convert to a datetime.datetime (pandas: .to_pydatetime())"
    if isinstance(value, dt.date):
        return "convert to a datetime.date"
    if isinstance(value, dt.timedelta):
        return "convert with .total_seconds()"
    if isinstance(value, dt.time):
        return "convert with .isoformat()"
    if isinstance(value, (set, frozenset)):
        return "convert with sorted() or list()"
    if isinstance(value, (bytearray, memoryview)):
        return "convert with bytes()"
    if isinstance(value, complex):
        return "store .real and .imag as floats"
    if isinstance(value, Mapping):
        return "convert with dict()"
    if isinstance(value, Sequence):
        return "convert with list()"
    return "convert with float(), int() or str()"


def plain(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """*attrs* with every numpy scalar in it, at any depth, made the Python value it equals; ``None`` if it has none.

    numpy's bool_, integers and floats are what analysts' values are; they come
    back as the ``bool``, ``int`` or ``float`` they equal (``.item()`` is exact:
    a float32 becomes the float of the same value, a float64 keeps its bits).
    Called only once a check has refused *attrs*, so records without numpy values
    cost nothing; numpy is never imported: if it is not loaded, no numpy scalar exists.
    Other numpy types (longdouble, complex, datetime64, arrays) are left for the check to refuse.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    scalars = (numpy.bool_, numpy.integer, numpy.floating)
    found = False

    def convert(value: Any, depth: int) -> Any:
        nonlocal found
        kind = type(value)
        if kind in _LEAVES:
            return value
        if isinstance(value, scalars):
            item = value.item()
            if type(item) in (bool, int, float):
                found = True
                return item
            return value
        if depth >= _MAX_DEPTH:  # the check refuses it: no need to go deeper, nor past the recursion limit
            return value
        if kind is dict:
            out = {}
            for key, inner in value.items():
                out[key] = convert(inner, depth + 1)
            return out
        if kind is list or kind is tuple:
            items = []
            for inner in value:
                items.append(convert(inner, depth + 1))
            return items
        return value

    converted = {name: convert(value, 1) for name, value in attrs.items()}
    return converted if found else None


def locate(attrs: Mapping[Any, Any], error: SerializationError) -> tuple[str, SerializationError]:
    """Where in *attrs*, which a check refused with *error*, the first refused value is, and why.

    The path reads ``'px'['close'][3]``: the attribute, then dict keys and list
    indexes; ``""`` for an attribute name that is no str.  Each step checks the
    values one level down as `check_attributes` does, so the path and the reason
    agree with the check; called only once it failed.
    """
    try:
        _check_names(attrs)
    except SerializationError as exc:
        return "", exc
    path, items, level = "", iter(attrs.items()), 1
    while True:
        for key, value in items:
            try:
                _walk([value], level)
            except SerializationError as exc:
                path, error = path + (f"[{key!r}]" if path else repr(key)), exc
                break
        else:
            return path, error
        items = iter(value.items() if type(value) is dict else enumerate(value) if type(value) in (list, tuple) else ())
        level += 1


def _check_decoded(value: Any) -> None:
    """Refuse what msgpack decodes but stockstore never writes (foreign bytes).

    msgpack reads ext type -1 as its own Timestamp, uint64s past int64, and bytes
    as map keys; `check_value` finds each.  Flat records pass in bulk.
    """
    if type(value) is dict and _DECODED.issuperset(map(type, value.values())):
        try:
            "".join(value)
        except TypeError:
            raise SerializationError("stored bytes are not a stockstore record: a name is not a str") from None
        return
    try:
        check_attributes(value) if type(value) is dict else check_value(value)
    except SerializationError as exc:
        raise SerializationError(f"stored bytes are not a stockstore record: {exc}") from None


_DECODED = _LEAVES | _EXTS  # what a decoded value is, when nothing inside needs a look

# Not strict_types: check_value has refused every subclass already, and a Record (a dict
# subclass) then packs as the map it is, without a copy.
# A lone surrogate (say from surrogateescape) is kept as it is, both ways.
_packer_options: dict[str, Any] = {"default": _default, "use_bin_type": True, "unicode_errors": "surrogatepass"}


def pack(obj: Any) -> bytes:
    """Pack an already-checked value."""
    try:
        return msgpack.packb(obj, **_packer_options)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(str(exc)) from exc


def packer() -> msgpack.Packer:
    """A packer with `pack`'s options, to pack many small checked values in one thread.

    ``msgpack.packb`` makes a packer (and its buffer) per call, which costs more
    than packing a short str.
    """
    return msgpack.Packer(**_packer_options)


def unpack(data: bytes) -> Any:
    """Unpack one stored value; anything malformed, or that stockstore never writes, is a `SerializationError`."""
    value = _unpack(data)
    try:
        check_value(value)
    except SerializationError as exc:
        raise SerializationError(f"stored bytes are not a stockstore value: {exc}") from None
    return value


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data, ext_hook=_ext_hook, raw=False, strict_map_key=True, use_list=True, unicode_errors="surrogatepass"
        )
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
    A row record's values are encoded one by one: its schema must be known in this
    process (`UnknownSchemaError` otherwise), and `join_record` makes an ordinary
    record of the same attributes.
    """
    tag, pairs, row = _split(data)
    if row is not None:
        # A row record's values become attributes of their own, encoded as a map would hold them.
        found, body = row
        names = [name for name, _ in pairs]
        pairs.extend((name, pack(value)) for name, value in _row_values(body, found))
        if found.order is not None:  # every attribute in its place
            place = {name: i for i, name in enumerate(attribute_order(found, body[: found.offset], names))}
            pairs.sort(key=lambda pair: place[pair[0]])
    return tag, pairs


def record_fields(data: bytes) -> tuple[str, list[bytes]]:
    """A record's class tag and its attributes flat: UTF-8 name, encoded value, name, value, ...

    `split_record`'s pairs in the same order, for a store of one field per
    attribute (a Redis hash), at a fraction of its cost on a wide record: a row's
    values are packed by one packer, and its names (encoded) and their order are
    worked out once per row and map shape, not pair by pair.
    """
    tag, pairs, row = _split(data)
    if row is None:
        return tag, [part for name, value in pairs for part in (name.encode("utf-8", "surrogatepass"), value)]
    found, body = row
    names, take = _fields_in_order(found, body[: found.offset], tuple(name for name, _ in pairs))
    values = [value for _, value in pairs]
    values += map(packer().pack, found.row.unpack_from(body, found.offset))
    fields: list[bytes] = [b""] * (2 * len(names))
    fields[0::2] = names
    fields[1::2] = take(values)
    return tag, fields


def _fields_in_order(row: Row, mark: bytes, names: tuple[str, ...]) -> tuple[tuple[bytes, ...], _Take]:
    """For a row and the names of its record's map: every name in the record's order, encoded, and
    what takes the map's values then the row's into that order (`attribute_order`, remembered)."""
    shape = (mark, names)
    found = _field_orders.get(shape)
    if found is None:
        place = {name: i for i, name in enumerate((*names, *row.names))}
        order = [place[name] for name in attribute_order(row, mark, names)]
        encoded = tuple(name.encode("utf-8", "surrogatepass") for name in attribute_order(row, mark, names))
        take: _Take = itemgetter(*order) if len(order) > 1 else lambda values: tuple(values[i] for i in order)
        if len(_field_orders) >= _ROWS_MAX:
            _field_orders.clear()
        found = _field_orders[shape] = encoded, take
    return found


_Take = Callable[[list[bytes]], Sequence[bytes]]
_field_orders: dict[tuple[bytes, tuple[str, ...]], tuple[tuple[bytes, ...], _Take]] = {}


def _split(data: bytes) -> tuple[str, list[tuple[str, bytes]], tuple[Row, bytes] | None]:
    """A record's tag, its map's ``(name, encoded value)`` pairs and, if a row record, its checked row and body."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1), unicode_errors="surrogatepass"
    )
    unpacker.feed(data)
    found: tuple[Row, bytes] | None = None
    try:
        size = unpacker.read_array_header()
        if size not in (2, 3):
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
        if size == 3:
            row = unpacker.unpack()
            if type(row) is not msgpack.ExtType or row.code != _EXT_ROW:
                raise ValueError("not a row")
            found = row_in(row.data, known_schema, {name for name, _ in pairs}), row.data
        if type(tag) is not str or unpacker.tell() != len(data):
            raise ValueError("not a record")
    except SerializationError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise SerializationError(f"stored bytes are not a stockstore record: {exc}") from exc
    return tag, pairs, found


def join_record(tag: str, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The record bytes for a tag and ``(UTF-8 name, encoded value)`` pairs (see `split_record`)."""
    packer = msgpack.Packer(**_packer_options)
    parts = [b"\x92", packer.pack(tag), packer.pack_map_header(len(pairs))]
    try:
        for name, value in pairs:
            parts.append(packer.pack(name.decode("utf-8", "surrogatepass")))
            parts.append(value)
    except UnicodeDecodeError as exc:
        raise SerializationError("stored attribute name is not UTF-8: not a stockstore record") from exc
    return b"".join(parts)


def decode_record(data: bytes, schema_of: SchemaOf | None = None) -> tuple[str, dict[str, Any]]:
    """Decode a record into (class tag, attributes).

    A row record's values join its map's attributes, after them; *schema_of*
    finds its schema by id (default: `known_schema`, this process's schemas only).
    """
    if data[:1] == _ROW_RECORD:  # one byte's look: ordinary records decode as fast as ever
        tag, attrs, body = split_row(data)
        row = row_in(body, schema_of or known_schema, attrs)
        # A copy of a dict of exactly these names, in their order, filled in: no growing a dict name by name.
        out = attribute_order(row, body[: row.offset], attrs).copy()
        out.update(attrs)
        out.update(_row_values(body, row))
        return tag, out
    obj = _unpack(data)  # checked below, from the attributes on (the envelope is no level of theirs)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not str or type(obj[1]) is not dict:
        raise SerializationError("stored bytes are not a stockstore record")
    _check_decoded(obj[1])
    return obj[0], obj[1]


def decode_head(data: bytes) -> tuple[str, dict[str, Any]]:
    """A record's class tag and the attributes of its map, without resolving a row's schema.

    For an ordinary record that is every attribute; a row record keeps every key
    attribute in its map (`put_frame` never puts one in the row), so alternate
    keys can be read from this alone.
    """
    if data[:1] == _ROW_RECORD:
        tag, attrs, _ = split_row(data)
        return tag, attrs
    return decode_record(data)


# ---------------------------------------------------------------------------- row records

_ROW_RECORD = b"\x93"  # a msgpack array of three: only row records start so ([tag, attrs] is 0x92)
SCHEMA_ID_SIZE = 16
_KINDS = {"f8": "d", "i8": "q"}  # row column kind -> struct code, 8 bytes little-endian each
_IN_MAP = "m"  # an ordered schema's column whose values a record keeps in its map: it only holds the place
_ROWS_MAX = 1024  # presence bitmaps' rows remembered; past that the cache starts over


class UnknownSchemaError(SerializationError):
    """A row record names a schema this process does not know (yet): find it, then decode again."""

    def __init__(self, schema_id: bytes) -> None:
        super().__init__(f"row record of unknown schema {schema_id.hex()}")
        self.schema_id = schema_id


@dataclass(frozen=True, eq=False)
class Row:
    """What one row body holds: which values, where, and the place of the record's attributes.

    A schema without a bitmap has one row, with every column; an ordered schema
    has one for each presence bitmap its records carry (`row_of`).
    """

    columns: tuple[tuple[str, str], ...]  # (name, kind) of the row's values, in order
    names: tuple[str, ...]
    name_set: frozenset[str]
    slots: Mapping[str, tuple[int, str]]  # name -> (offset of its value in the body, kind)
    row: struct.Struct  # the values
    offset: int  # of the first value in the body: after the schema id and the bitmap, a multiple of 8
    order: tuple[str, ...] | None  # every attribute's place (an ordered schema's), else None: the map's first

    @property
    def size(self) -> int:
        """Bytes of the body: the id, the bitmap and the values."""
        return self.offset + self.row.size


@dataclass(frozen=True, eq=False)
class RowSchema:
    """The columns of row records: (name, kind) pairs in order, and their layout.

    Content-addressed: ``id`` is the digest of ``data``, the schema's msgpack
    bytes, which is what a store keeps.  Build one with `row_schema` (every
    column in every row, after the map's attributes: `put_frame`'s),
    `ordered_schema` (a presence bitmap says which columns a row holds, and the
    columns kept in the map hold their place in the attribute order: wide dict
    records') or `load_schema`; each id has one instance per process.
    """

    columns: tuple[tuple[str, str], ...]  # as stored, those of kind "m" included
    data: bytes
    id: bytes
    full: Row  # a row that holds every row column
    bitmap: int  # bytes of the presence bitmap after the id (0: none)
    position: Mapping[str, int]  # name -> its place among all columns
    prefix: bytes  # what precedes a full row's values in a record: the ext header and the id

    @property
    def names(self) -> tuple[str, ...]:
        """The row columns' names, in order."""
        return self.full.names

    @property
    def name_set(self) -> frozenset[str]:
        return self.full.name_set

    @property
    def row(self) -> struct.Struct:
        """A full row's values."""
        return self.full.row

    @property
    def size(self) -> int:
        """Bytes of a full row's ext body: the id and the values."""
        return self.full.size


SchemaOf = Callable[[bytes], RowSchema]

_schemas: dict[bytes, RowSchema] = {}  # by id; never stale, so never invalidated
_rows: dict[bytes, Row] = {}  # by schema id and bitmap


def row_schema(columns: Sequence[tuple[str, str]]) -> RowSchema:
    """The schema of these ``(name, kind)`` columns (kind ``"f8"`` or ``"i8"``), known process-wide."""
    columns = tuple((name, kind) for name, kind in columns)
    return _register(columns, pack([list(c) for c in columns]), ordered=False)


def ordered_schema(columns: Sequence[tuple[str, str]]) -> RowSchema:
    """The ordered schema of these columns: kind ``"f8"`` or ``"i8"`` in rows, ``"m"`` in maps."""
    columns = tuple((name, kind) for name, kind in columns)
    return _register(columns, pack({"order": [list(c) for c in columns]}), ordered=True)  # names as records keep them


def load_schema(data: bytes) -> RowSchema:
    """The schema whose stored bytes are *data*, known process-wide; malformed bytes raise."""
    parsed = unpack(data)
    ordered = type(parsed) is dict and list(parsed) == ["order"]
    if ordered:
        parsed = parsed["order"]
    if type(parsed) is not list or not all(type(c) is list and len(c) == 2 for c in parsed):
        raise SerializationError("stored bytes are not a stockstore row schema")
    return _register(tuple((name, kind) for name, kind in parsed), data, ordered=ordered)


def _register(columns: tuple[tuple[str, str], ...], data: bytes, *, ordered: bool) -> RowSchema:
    names = [name for name, _ in columns]
    if not columns or not all(type(n) is str for n in names) or len(set(names)) != len(names):
        raise SerializationError("a row schema needs distinct str names")
    kinds = {*_KINDS, _IN_MAP} if ordered else set(_KINDS)
    if not all(type(k) is str and k in kinds for _, k in columns):
        raise SerializationError(f"a row schema's kinds are {sorted(kinds)}")
    schema_id = hashlib.blake2b(data, digest_size=SCHEMA_ID_SIZE).digest()
    known = _schemas.get(schema_id)
    if known is not None:
        return known
    in_row = tuple(c for c in columns if c[1] != _IN_MAP)
    bitmap = 8 * -(-len(in_row) // 64) if ordered else 0  # whole words, so that values stay 8-aligned
    full = _row(in_row, SCHEMA_ID_SIZE + bitmap, tuple(names) if ordered else None)
    position = {name: i for i, name in enumerate(names)}
    prefix = _ext_header(full.size) + schema_id
    schema = RowSchema(columns, data, schema_id, full, bitmap, position, prefix)
    return _schemas.setdefault(schema_id, schema)


def _row(columns: tuple[tuple[str, str], ...], offset: int, order: tuple[str, ...] | None) -> Row:
    names = tuple(name for name, _ in columns)
    slots = {name: (offset + 8 * i, kind) for i, (name, kind) in enumerate(columns)}
    layout = struct.Struct("<" + "".join(_KINDS[k] for _, k in columns))
    return Row(columns, names, frozenset(names), slots, layout, offset, order)


@functools.lru_cache(maxsize=4096)
def _ext_header(size: int) -> bytes:
    """The msgpack header of a row's ext value of *size* bytes."""
    return msgpack.packb(msgpack.ExtType(_EXT_ROW, bytes(size)))[:-size]  # type: ignore[no-any-return]


def row_of(schema: RowSchema, body: bytes) -> Row:
    """The row a body of *schema* holds: the full one, or the columns its presence bitmap names."""
    if not schema.bitmap:
        return schema.full
    mark = body[: SCHEMA_ID_SIZE + schema.bitmap]
    row = _rows.get(mark)
    if row is None:
        bits = int.from_bytes(mark[SCHEMA_ID_SIZE:], "little")
        columns = schema.full.columns
        if len(mark) != SCHEMA_ID_SIZE + schema.bitmap or bits >> len(columns):
            raise SerializationError("corrupt row record: its presence bitmap does not fit its schema")
        present = tuple(c for i, c in enumerate(columns) if bits >> i & 1)
        row = _row(present, SCHEMA_ID_SIZE + schema.bitmap, schema.full.order)
        if len(_rows) >= _ROWS_MAX:
            _rows.clear()
        _rows[mark] = row
    return row


def is_row_record(data: bytes) -> bool:
    """Whether *data* is a row record (else an ordinary one, or not a record at all)."""
    return data[:1] == _ROW_RECORD


def known_schema(schema_id: bytes) -> RowSchema:
    """The schema of this id if this process has seen it, else `UnknownSchemaError`."""
    try:
        return _schemas[schema_id]
    except KeyError:
        raise UnknownSchemaError(schema_id) from None


def row_head(tag: str) -> bytes:
    """How every row record of class *tag* begins; then come its map, ``schema.prefix`` and values."""
    return _ROW_RECORD + pack(tag)


def encode_row_record(tag: str, attrs: Mapping[str, Any], schema: RowSchema, values: bytes) -> bytes:
    """A row record of a schema without a bitmap: *attrs* in its map, *values* (``schema.row`` packed) in its row."""
    check_attributes(attrs)
    if schema.bitmap or len(values) != schema.row.size or not schema.name_set.isdisjoint(attrs):
        raise SerializationError("row values do not fit the schema, or repeat a map attribute")
    return b"".join((row_head(tag), pack(attrs), schema.prefix, values))


def attribute_order(row: Row, mark: bytes, names: Iterable[str]) -> dict[str, None]:
    """The attributes of a row record, in their order, for a row and the names in its map.

    Without an order, the map's attributes come first; with one, every attribute
    takes its place in it, and those the order lacks (added by a patch) come last.
    *mark* is the body's id and bitmap; the answer is remembered and must not be changed.
    """
    names = tuple(names)
    shape = (mark, names)
    template = _templates.get(shape)
    if template is None:
        if row.order is None:
            template = dict.fromkeys((*names, *row.names))
        else:
            present = row.name_set.union(names)
            template = dict.fromkeys(name for name in row.order if name in present)
            template.update(dict.fromkeys(names))
        if len(_templates) >= _ROWS_MAX:
            _templates.clear()
        _templates[shape] = template
    return template


_templates: dict[tuple[bytes, tuple[str, ...]], dict[str, None]] = {}  # (id and bitmap, map names) -> all names


# ---------------------------------------------------------------------------- wide records as rows

_WIDE = 16  # float attributes, at the least, for a record to be worth a row
_RUNS_MAX = 8  # runs of floats taken by slices; past that, one at a time
_LAYOUTS_MAX = 4096  # distinct (tag, names) shapes remembered; past that the cache starts over
_SCHEMAS_PER_TAG = 64  # ordered schemas one class's records may make in a process; past that, new shapes stay plain
_layouts: dict[tuple[str, tuple[str, ...]], WideLayout | None] = {}
_recent: dict[str, WideLayout] = {}  # by tag: the layout its last record had
_lineages: dict[str, _Lineage] = {}  # by tag
_lineage_lock = threading.Lock()


Target = tuple[RowSchema, bytes]  # a schema to write with, and what precedes a row's values (`WideLayout.target`)


@dataclass(eq=False)
class _Lineage:
    """The ordered schema one class's wide records are written with now, grown as new shapes come.

    Every shape seen is merged into it (`_merge`), so the records of a family
    share one schema whatever attributes each lacks, and a batch's records are
    written with the schema of all its shapes.
    """

    schema: RowSchema
    made: set[bytes]  # ids of the schemas it has had


@dataclass(eq=False)
class WideLayout:
    """How wide records of one shape (tag, attribute names in order) are written as row records.

    Float attributes go into the row, the others (keys, strings) into the map;
    the schema keeps every name's place, so the record reads back in its order.
    """

    names: tuple[str, ...]
    positions: tuple[int, ...]  # of the row's values among the record's
    floats: Callable[[list[Any]], list[Any]]  # the row's values, from the list of the record's values
    others: tuple[str, ...]  # names of the map's attributes
    row: struct.Struct
    start: bytes  # how its records begin (`row_head`)
    lineage: _Lineage
    fitted: RowSchema  # the schema the shape fitted when first seen
    prefixes: dict[bytes, bytes | None]  # schema id -> ext header, id and bitmap; None: the shape does not fit

    def target(self) -> Target:
        """The schema to write with, and what precedes the values: its class's newest if the shape fits it."""
        schema = self.lineage.schema
        prefix = self.prefixes.get(schema.id, b"")
        if prefix == b"":
            prefix = self.prefixes[schema.id] = _prefix(schema, self.names, self.positions)
        if prefix is None:
            schema = self.fitted
            prefix = self.prefixes[schema.id]
            assert prefix is not None  # the shape fitted it
        return schema, prefix


Wide = tuple[WideLayout, bytes]  # a checked wide record's layout, and its row's values packed (`check_wide`)


def check_wide(tag: str, attrs: Mapping[str, Any]) -> Wide | None:
    """Check *attrs* as `check_attributes` does; return the row layout they fit and their row, if any.

    Wide records of one shape are checked in one pass over their values: the
    names were checked when the shape was first seen (its layout is remembered
    per tag and names), the row's values need only be floats, the few others
    are checked as usual.  A record that does not fit is checked the usual way.
    Records of a batch mostly share one shape, so the class's last layout is
    tried first: comparing the names costs less than hashing them.  The row's
    values are packed here, while the type check has them in the CPU's cache:
    in a batch of 200-float records spread over memory, reading each float
    object once more to pack it later cost as much as the check.
    """
    if len(attrs) < _WIDE:
        check_attributes(attrs)
        return None
    names = tuple(attrs)
    layout = _recent.get(tag)
    if layout is None or layout.names != names:
        layout = _layouts.get((tag, names))
    if layout is not None:
        floats = layout.floats(list(attrs.values()))
        if countOf(map(type, floats), float) == len(floats):
            others = [attrs[name] for name in layout.others]
            if not _LEAVES.issuperset(map(type, others)):
                _walk(others, 1)
            _recent[tag] = layout
            return layout, layout.row.pack(*floats)
        check_attributes(attrs)
        return None
    check_attributes(attrs)
    layout = _layout_of((tag, names), attrs)
    return None if layout is None else (layout, layout.row.pack(*layout.floats(list(attrs.values()))))


def _layout_of(shape: tuple[str, tuple[str, ...]], attrs: Mapping[str, Any]) -> WideLayout | None:
    """The layout of a checked record of a shape not seen yet (or a layout-less one), remembered."""
    if shape in _layouts:
        return None
    tag, names = shape
    positions = tuple(i for i, value in enumerate(attrs.values()) if type(value) is float)
    layout = None
    if len(positions) >= _WIDE:
        kinds = ["m"] * len(names)
        for i in positions:
            kinds[i] = "f8"
        with _lineage_lock:
            lineage = _lineages.get(tag)
            if lineage is None:
                schema = ordered_schema(list(zip(names, kinds, strict=True)))
                lineage = _lineages[tag] = _Lineage(schema, {schema.id})
            prefix = _prefix(lineage.schema, names, positions)
            if prefix is None and len(lineage.made) < _SCHEMAS_PER_TAG:
                merged = _merge(names, kinds, lineage.schema.columns)
                # Names that churn would grow it for ever: past twice the shape's, it starts over from the shape.
                own = list(zip(names, kinds, strict=True))
                lineage.schema = ordered_schema(merged if len(merged) <= 2 * len(names) else own)
                lineage.made.add(lineage.schema.id)
                prefix = _prefix(lineage.schema, names, positions)
        if prefix is not None:
            others = tuple(name for name, kind in zip(names, kinds, strict=True) if kind == "m")
            row = struct.Struct(f"<{len(positions)}d")
            layout = WideLayout(
                names,
                positions,
                _taker(positions),
                others,
                row,
                row_head(tag),
                lineage,
                lineage.schema,
                {lineage.schema.id: prefix},
            )
    if len(_layouts) >= _LAYOUTS_MAX:
        _layouts.clear()
    _layouts[shape] = layout
    return layout


def _prefix(schema: RowSchema, names: Sequence[str], positions: Sequence[int]) -> bytes | None:
    """What precedes a row of *schema* for records of these names with floats at *positions*.

    ``None`` unless the names keep the schema's order and each float has a row column.
    """
    place = schema.position
    last = -1
    for name in names:
        at = place.get(name, -1)
        if at <= last:
            return None
        last = at
    slots = schema.full.slots
    bits = 0
    for i in positions:
        slot = slots.get(names[i])
        if slot is None or slot[1] != "f8":
            return None
        bits |= 1 << (slot[0] - SCHEMA_ID_SIZE - schema.bitmap) // 8
    size = SCHEMA_ID_SIZE + schema.bitmap + 8 * len(positions)
    return _ext_header(size) + schema.id + bits.to_bytes(schema.bitmap, "little")


def _merge(names: Sequence[str], kinds: Sequence[str], columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Columns for a new shape and an ordered schema's: the new shape's order, the others after their neighbours.

    The newest shape has the last word, so the order follows what records say now;
    a column only the schema has comes right after the column it followed there.
    """
    mine = dict(zip(names, kinds, strict=True))
    after: dict[str | None, list[tuple[str, str]]] = {}
    anchor = None
    for name, kind in columns:
        if name in mine:
            anchor = name
        else:
            after.setdefault(anchor, []).append((name, kind))
    merged = list(after.get(None, ()))
    for name, kind in mine.items():
        merged.append((name, kind))
        merged.extend(after.get(name, ()))
    return merged


def encode_wide(attrs: Mapping[str, Any], wide: Wide, packer: msgpack.Packer, target: Target) -> bytes:
    """*attrs*, for which `check_wide` returned *wide*, as a row record of *target*; *packer* from `packer`."""
    layout, row = wide
    head = {name: attrs[name] for name in layout.others}
    return b"".join((layout.start, packer.pack(head), target[1], row))


def _taker(positions: tuple[int, ...]) -> Callable[[list[Any]], list[Any]]:
    """What takes the values at *positions* from a record's list of values: slices of its runs.

    A list's slice is a copy in C; a key among the floats splits them into two runs.
    """
    runs: list[slice] = []
    for position in positions:
        if runs and runs[-1].stop == position:
            runs[-1] = slice(runs[-1].start, position + 1)
        else:
            runs.append(slice(position, position + 1))
    if len(runs) == 1:
        (run,) = runs
        return lambda values: values[run]
    if len(runs) <= _RUNS_MAX:
        return lambda values: list(chain.from_iterable([values[run] for run in runs]))
    take = itemgetter(*positions)
    return lambda values: list(take(values))


def patch_row(data: bytes, changes: Mapping[str, Any]) -> tuple[dict[str, Any], bytes] | None:
    """The row record *data* with *changes* (checked) applied, without decoding its row.

    Changed row values are overwritten in place; other changes join the map.
    Returns the new map attributes (every key attribute is there) and the record,
    or ``None`` if *data* is no row record, a change does not fit its column
    (a float column takes floats only, an int column ints), or adds an attribute
    whose place in the record's order is taken (the record is then written anew).
    """
    if data[:1] != _ROW_RECORD:
        return None
    tag, attrs, body = split_row(data)
    schema = known_schema(body[:SCHEMA_ID_SIZE])
    row = row_of(schema, body)
    if len(body) != row.size or not row.name_set.isdisjoint(attrs):
        raise SerializationError("corrupt row record: its row does not fit its schema, or repeats a map attribute")
    values = bytearray(body)
    for name, value in changes.items():
        slot = row.slots.get(name)
        if slot is None:
            if row.order is not None and name not in attrs and name in schema.position:
                return None
            attrs[name] = value
        elif type(value) is (float if slot[1] == "f8" else int):
            _VALUE[slot[1]].pack_into(values, slot[0], value)
        else:
            return None
    return attrs, b"".join((row_head(tag), pack(attrs), _ext_header(len(values)), values))


_VALUE = {kind: struct.Struct("<" + code) for kind, code in _KINDS.items()}


class _Slot:
    """Where the row stood in a row record being unpacked (see `split_row`)."""


_SLOT = _Slot()


def split_row(data: bytes) -> tuple[str, dict[str, Any], bytes]:
    """A row record's class tag, map attributes and row body (schema id, then values), unresolved."""
    bodies: list[bytes] = []

    def hook(code: int, body: bytes) -> Any:
        if code == _EXT_ROW:
            bodies.append(body)
            return _SLOT
        return _ext_hook(code, body)

    try:
        obj = msgpack.unpackb(
            data, ext_hook=hook, raw=False, strict_map_key=True, use_list=True, unicode_errors="surrogatepass"
        )
    except SerializationError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise SerializationError(f"stored bytes are not a stockstore record: {exc}") from exc
    # Exactly one row, in third place (a second one hidden in the map would be corrupt).
    if type(obj) is not list or len(obj) != 3 or obj[2] is not _SLOT or len(bodies) != 1:
        raise SerializationError("stored bytes are not a stockstore row record")
    if type(obj[0]) is not str or type(obj[1]) is not dict or len(bodies[0]) < SCHEMA_ID_SIZE:
        raise SerializationError("stored bytes are not a stockstore row record")
    _check_decoded(obj[1])
    return obj[0], obj[1], bodies[0]


_EXT_WIDTHS = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext 8, 16, 32 -> bytes of the length (a row is never 1 to 16 bytes)


def row_from(data: bytes, at: int) -> bytes | None:
    """The body of the row ext value that starts at *at* and ends *data*, or ``None`` if there is none such."""
    width = _EXT_WIDTHS.get(data[at]) if at < len(data) else None
    if width is None or data[at + 1 + width] != _EXT_ROW:
        return None
    start = at + 2 + width
    return data[start:] if int.from_bytes(data[at + 1 : at + 1 + width], "big") == len(data) - start else None


def row_in(body: bytes, schema_of: SchemaOf, taken: Iterable[str]) -> Row:
    """The checked row of a body: its schema found by *schema_of*, its size right, no name also in *taken*."""
    row = row_of(schema_of(body[:SCHEMA_ID_SIZE]), body)
    if len(body) != row.size:
        raise SerializationError(f"corrupt row record: {len(body)} bytes for a row of {len(row.columns)} values")
    if not row.name_set.isdisjoint(taken):
        raise SerializationError("corrupt row record: an attribute is both in its map and in its row")
    return row


def _row_values(body: bytes, row: Row) -> zip[tuple[str, Any]]:
    """A row body's (name, value) pairs; struct keeps every float's bits (NaN payloads, -0.0)."""
    return zip(row.names, row.row.unpack_from(body, row.offset), strict=True)
