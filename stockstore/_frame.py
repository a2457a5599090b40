"""DataFrames in and out of a store: what `BaseStore.put_frame` and `BaseStore.get_frame` do.

`put_frame` writes one record per row.  The frame's float and int columns go
into each record's *row* (see `_codec`): a chunk's values are laid out in one
little-endian numpy array and each record takes its slice of bytes, behind the
id of a schema that names those columns once for every record.  What else a
row holds (its key attributes, strings, bools, datetimes, objects) goes in the
record's map, as the Python values the codec stores.  No dict of all of a
row's attributes is ever built, unless a callable lifetime needs the object.

`get_frame` reads payloads in chunks; the row records of one schema are decoded
together, with ``np.frombuffer`` over their joined bytes, and records written
any other way one by one.  Columns are assembled once at the end, so a column
float64 in every record comes back float64, bit for bit.

Imported on first use (`stockstore._store._frames`): pandas and numpy are the
extra ``stockstore[pandas]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import msgpack
import numpy as np
import pandas as pd

from . import _codec
from ._entry import Entry, Stored, versions
from ._keys import Family, KeyValue, check_key_part, encode_key
from ._record import rebuild
from ._writer import Encoded
from .errors import InvalidKeyError, SerializationError

T = TypeVar("T")
_INT64_MAX = 2**63 - 1
# Values a cell may hold as they are; numpy scalars, Timestamps and missing markers are converted.
_PLAIN = frozenset({str, float, int, bool, type(None), bytes})

# ---------------------------------------------------------------------------- put_frame


class Frame:
    """A frame checked whole and split into map columns (Python values) and row columns (numpy)."""

    def __init__(self, family: Family, cls: type, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise SerializationError(f"put_frame takes a pandas DataFrame, not {type(df).__qualname__}")
        self.family, self.cls = family, cls
        self.tag = family.tag(cls)
        named = _named_columns(df)
        key_names = {name for key in family.keys for name in key}
        for name in family.primary:
            if name not in named:
                raise InvalidKeyError(
                    f"{family.name}: key attribute {name!r} is neither a column nor a named index level of the frame"
                )
        self.map_names: list[str] = []
        self.map_values: list[list[Any]] = []
        row_columns: list[tuple[str, str, np.ndarray]] = []
        for name, values in named.items():
            kind = _row_kind(name, values)
            if kind is not None and name not in key_names:  # key attributes stay in the map (_codec.decode_head)
                row_columns.append((name, kind, values.to_numpy()))
            else:
                self.map_names.append(name)
                self.map_values.append(_python_values(name, values))
        self.schema = _codec.row_schema([(n, k) for n, k, _ in row_columns]) if row_columns else None
        self.row_arrays = [(kind, array) for _, kind, array in row_columns]
        self.row_block = _row_block(df, row_columns)
        # What every record's payload starts with, and each map attribute's packed name.
        packer = _codec.packer()
        map_header = packer.pack_map_header(len(self.map_names))
        self.map_head = b"\x92" + packer.pack(self.tag) + map_header
        self.row_head = _codec.row_head(self.tag) + map_header
        self.map_packed = [packer.pack(name) for name in self.map_names]

        by_name = dict(zip(self.map_names, self.map_values, strict=True))
        primary = [by_name[name] for name in family.primary]
        for name, values in zip(family.primary, primary, strict=True):
            _check_key_values(family, name, values)
        keys = [encode_key(values) for values in zip(*primary, strict=True)]
        self.alternates: list[tuple[bytes | None, ...]] | None = None
        if len(family.keys) > 1:
            names = [n for key in family.keys[1:] for n in key if n in by_name]
            columns = [by_name[n] for n in names]
            rows = zip(*columns, strict=True) if columns else ((),) * len(keys)
            self.alternates = [family.alternates_of(dict(zip(names, row, strict=True))) for row in rows]
        # The last row of a key wins, as in batch_put.
        latest = dict(zip(keys, range(len(keys)), strict=True))
        self.rows: np.ndarray | None = None
        if len(latest) < len(keys):
            self.rows = np.fromiter(latest.values(), dtype=np.intp, count=len(latest))
            keys = list(latest)
        self.keys = keys

    def objects(self) -> Iterator[Any]:
        """Each row as an object of the frame's class, in the order of `keys` (what a callable lifetime sees)."""
        rows = range(len(self.keys)) if self.rows is None else self.rows.tolist()
        names = [*self.map_names, *(() if self.schema is None else self.schema.names)]
        columns = [*self.map_values, *(array.tolist() for _, array in self.row_arrays)]
        for i in rows:
            yield rebuild(self.cls, dict(zip(names, (values[i] for values in columns), strict=True)))

    def encode(self, start: int, stop: int, expiries: Sequence[int | None], now_ms: float) -> Encoded:
        """Entries for the records of ``keys[start:stop]``, and the keys whose expiry has already passed.

        *expiries* are the records' expiries (checked before anything is written), aligned with `keys`.
        """
        part: slice | list[int] = slice(start, stop) if self.rows is None else self.rows[start:stop].tolist()
        columns = [_take(values, part) for values in self.map_values]
        keys = self.keys[start:stop]
        alternates = None if self.alternates is None else _take(self.alternates, part)
        # Each record's map, packed a cell at a time behind its name: no dict per record.
        packer = _codec.packer()
        cells = [[name + packer.pack(v) for v in values] for name, values in zip(self.map_packed, columns, strict=True)]
        maps = cells[0] if len(cells) == 1 else [b"".join(row) for row in zip(*cells, strict=True)]

        schema = self.schema
        if schema is None:
            head, prefix, width = self.map_head, b"", 0
            raw = memoryview(b"")
        else:
            head, prefix, width = self.row_head, schema.prefix, schema.row.size
            # One little-endian array for the chunk, a row's values contiguous: each record takes a slice.
            if self.row_block is not None:
                block = np.ascontiguousarray(self.row_block[part])
            else:
                block = np.empty((len(keys), len(self.row_arrays)), dtype="<f8")
                as_int = block.view("<i8")
                for j, (kind, array) in enumerate(self.row_arrays):
                    (block if kind == "f8" else as_int)[:, j] = array[part]
            raw = block.data.cast("B")

        live: list[Entry] = []
        expired: list[bytes] = []
        first = versions.take(len(keys))  # the chunk's versions at once: one lock and one clock read, not one a record
        for i, (key, expires) in enumerate(zip(keys, expiries[start:stop], strict=True)):
            if expires is not None and expires <= now_ms:
                expired.append(key)  # "not kept here": put replaces, so the old record goes
                continue
            payload = b"".join((head, maps[i], prefix, raw[i * width : (i + 1) * width]))
            live.append(Entry(payload, first + i, expires, key, () if alternates is None else alternates[i]))
        return live, expired


def _row_block(df: pd.DataFrame, row_columns: list[tuple[str, str, np.ndarray]]) -> np.ndarray | None:
    """The frame's values as one 2-D float64 array, if every column is a float row column.

    A chunk's rows are then laid out with one numpy call (a slice, or one copy of
    it), not one call a column: numpy lets go of the GIL in each call, and 200 of
    them a chunk handed it to the writer thread 200 times, most of put_frame's time.
    """
    if not row_columns or any(kind != "f8" for _, kind, _ in row_columns):
        return None
    if [name for name, _, _ in row_columns] != list(df.columns):
        return None
    values: np.ndarray = df.to_numpy()  # a view where the frame holds one float64 block
    return values if values.dtype == np.dtype("<f8") else None


def _take(values: list[T], part: slice | list[int]) -> list[T]:
    return values[part] if isinstance(part, slice) else [values[i] for i in part]


def _named_columns(df: pd.DataFrame) -> dict[str, Any]:
    """The frame's named index levels and its columns, by attribute name (as ``reset_index`` would)."""
    named: dict[str, Any] = {}
    levels = [(name, df.index.get_level_values(i)) for i, name in enumerate(df.index.names) if name is not None]
    for name, values in [*levels, *df.items()]:  # items(), a column a position: five times faster than iloc
        if type(name) is not str:
            raise SerializationError(
                f"attribute names are str; the frame names a column or level {name!r:.80} "
                f"({type(name).__qualname__}): rename it, e.g. df.columns = df.columns.map(str)"
            )
        if name in named:
            raise SerializationError(f"the frame names {name!r:.80} twice (columns and named index levels)")
        named[name] = values
    return named


def _row_kind(name: str, values: Any) -> str | None:
    """``"f8"`` or ``"i8"`` for a column the row can hold exactly, else ``None`` (a map column)."""
    dtype = values.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "fiu":
        return None
    if dtype.kind == "f":
        if dtype.itemsize > 8:
            raise SerializationError(f"column {name!r}: {dtype} cannot be stored exactly (float64 at most)")
        return "f8"  # float16 and float32 widen exactly
    if dtype.kind == "u" and dtype.itemsize == 8 and len(values) and values.max() > _INT64_MAX:
        raise SerializationError(f"column {name!r}: uint64 values above the 64-bit signed range")
    return "i8"


def _python_values(name: str, values: Any) -> list[Any]:
    """A map column's cells as the Python values the codec stores; anything else raises here."""
    dtype = values.dtype
    kind = dtype.kind if isinstance(dtype, np.dtype) else None
    if kind in ("m", "c", "V"):
        raise SerializationError(f"column {name!r}: {dtype} values cannot be stored (see Values in the docs)")
    if kind == "f" and dtype.itemsize > 8:
        raise SerializationError(f"column {name!r}: {dtype} cannot be stored exactly (float64 at most)")
    cells: list[Any]
    if kind is not None:
        cells = values.tolist()  # numpy scalars become Python ones, datetime64 becomes Timestamps
    else:
        # An extension dtype (str, Int64, boolean, category, tz-aware datetimes...): its
        # missing marker (NaN, NA, NaT) is None here, a stored None.
        cells = values.astype(object).tolist()
        for i in np.flatnonzero(np.asarray(values.isna())).tolist():
            cells[i] = None
    if not _PLAIN.issuperset(map(type, cells)):
        cells = [_cell(name, cell) for cell in cells]
    try:
        _codec.check_value(cells)
    except SerializationError as exc:
        raise SerializationError(f"column {name!r}: {exc}") from None
    return cells


def _cell(name: str, value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
        if value is pd.NaT:
            return None
    if isinstance(value, pd.Timestamp):
        if value.nanosecond:
            raise SerializationError(f"column {name!r}: {value} has nanoseconds; a datetime.datetime stops at µs")
        return value.to_pydatetime()
    if isinstance(value, np.timedelta64):
        raise SerializationError(f"column {name!r}: timedelta values cannot be stored (see Values in the docs)")
    if isinstance(value, np.generic):
        return value.item()  # np.float64 -> float, np.int64 -> int, np.bool_ -> bool, np.str_ -> str
    return value  # the codec's check decides


def _check_key_values(family: Family, name: str, values: Sequence[Any]) -> None:
    if set(map(type, values)) <= {str}:
        return
    for value in values:
        if value is None:
            raise InvalidKeyError(f"{family.name}: primary key attribute {name!r} is missing in a row")
        check_key_part(name, value)  # NaN in a key column is a float: refused


# ---------------------------------------------------------------------------- get_frame


def wanted_columns(columns: Iterable[str] | None) -> list[str] | None:
    """*columns* checked: str attribute names, each once; ``None`` for every attribute."""
    if columns is None:
        return None
    if isinstance(columns, str):
        raise SerializationError("columns takes a list of attribute names, not one str")
    wanted = list(dict.fromkeys(columns))
    if not all(type(c) is str for c in wanted):
        raise SerializationError("columns takes str attribute names")
    return wanted


class _Rows(NamedTuple):
    """The row records of one schema in one chunk: their rows in the frame and their values."""

    row: _codec.Row
    at: slice | np.ndarray  # rows of the frame (a slice when consecutive, as they mostly are)
    words: np.ndarray  # 8-byte words, a record's a row: (records, words before the values + columns)
    first: int  # the column of `words` that holds the row's first value


class Page(NamedTuple):
    """How to read a backend's page of raw stored values (`Gather.take_page`)."""

    cut: int  # bytes of a name before the key's text
    header: int  # bytes of a stored value before the record
    live: Callable[[np.ndarray], np.ndarray]
    """Which headers (a row a value) are those of live records as they are (False: leave it to the backend)."""
    as_is: np.ndarray  # by byte value: True for the characters a str key is spelled with as it is in names

    @staticmethod
    def spelled_as_is(plain: Callable[[str], bool]) -> np.ndarray:
        """The `as_is` table of a backend's test of key texts spelled as they are (a test a character at a time)."""
        return np.array([b < 128 and plain(chr(b)) for b in range(256)], dtype=bool)


class _Template(NamedTuple):
    """How the stored values of one size and name size hold a row record of one layout (`Gather.take_page`).

    Such a value is that layout's record for its key if it has the template's bytes at
    *same* (the tag, the map's header and primary key name, the key's msgpack header,
    the row's header, schema id and bitmap), its name's key text at ``key_at`` and the
    row's values from ``values_at``.
    """

    same: np.ndarray  # positions in the value
    expected: np.ndarray  # the template's bytes there
    key_at: int
    values_at: int


class Gather:
    """Records read chunk by chunk, kept as they came (row values as numpy words) until the frame is built.

    *schema_of* finds a row record's schema by id (`stockstore._schemas.Shelf.get`); *recover*
    is what to read instead of a copy that cannot be read (`BaseStore._recover`, bound to the family).
    """

    def __init__(
        self,
        family: Family,
        cls: type,
        wanted: list[str] | None,
        schema_of: _codec.SchemaOf,
        recover: Callable[[bytes, Stored, Exception], Stored | None],
    ) -> None:
        self.family, self.cls, self.schema_of, self.recover = family, cls, schema_of, recover
        self.wanted = None if wanted is None else frozenset(wanted)
        self.order: dict[str, None] = dict.fromkeys(wanted or ())  # the columns, in first-seen order
        self.primary = frozenset(family.primary)  # the index already
        # Keys asked for only by alternate keys: their records must still hold one of them.
        self.alternates: dict[bytes, list[tuple[int, tuple[KeyValue, ...]]]] = {}
        self.n = 0  # the frame's rows so far
        self.rows: list[_Rows] = []
        self.values: dict[str, tuple[list[int], list[Any]]] = {}  # map values by name: (rows, values)
        self.classes: dict[str, bool] = {}
        # The rows' primary keys, as the records hold them: a list per key attribute.
        self.index: list[list[KeyValue]] = [[] for _ in family.primary]
        # Pages read whole (`take_page`): their records' values go straight into one block,
        # allocated once for the records `reserve` announced, rows in the order taken.
        self.capacity = 0
        self.block: np.ndarray | None = None
        self.block_row: _codec.Row | None = None  # what every record of the block holds
        self.block_runs: list[tuple[int, int]] = []  # (first row of the frame, records): runs of the block's rows
        self.templates: dict[tuple[int, int], _Template | None] = {}  # by value size and name size
        # How row records whose map holds their one primary key attribute alone begin: their
        # tag's row head, then that one-entry map's header and name; then comes the key value.
        self.heads: dict[bytes, str] = {}
        self.by_head = len(family.primary) == 1

    def want(self, refs: Sequence[tuple[int, tuple[KeyValue, ...]]], primaries: Sequence[bytes | None]) -> list[bytes]:
        """The primary keys to read for parsed key references and their look-ups, once each, in order.

        A record asked for only by alternate keys must still hold one when it is read.
        """
        wanted: dict[bytes, bool] = {}  # True when asked for by its primary key
        for (index, values), key in zip(refs, primaries, strict=True):
            if key is not None:
                wanted[key] = wanted.get(key, False) or index == 0
                if index:
                    self.alternates.setdefault(key, []).append((index, values))
        for key, by_primary in wanted.items():
            if by_primary:
                self.alternates.pop(key, None)
        return list(wanted)

    def take(self, chunk: Sequence[bytes], found: Sequence[Stored | None]) -> None:
        """Keep the records read for *chunk* (aligned; ``None`` where missing)."""
        wanted, values = self.wanted, self.values
        groups: dict[bytes, tuple[_codec.Row, list[int], list[bytes]]] = {}  # by schema id and bitmap
        for key, stored in zip(chunk, found, strict=True):
            parsed = None
            while stored is not None and stored.payload is not None:
                try:
                    parsed = self._parse(key, stored.payload)
                    break
                except (SerializationError, InvalidKeyError) as exc:
                    stored = self.recover(key, stored, exc)
            if parsed is None:
                continue
            tag, attrs, body, columns = parsed
            if not self.classes[tag] or (key in self.alternates and not self._still_holds(key, attrs)):
                continue
            row = self.n
            self.n += 1
            for values_of, name in zip(self.index, self.family.primary, strict=True):
                values_of.append(attrs[name])
            if body is not None and columns is not None:
                mark = body[: columns.offset]
                group = groups.get(mark)
                if group is None:
                    group = groups[mark] = (columns, [], [])
                    if wanted is None:  # the columns in the record's order
                        order = _codec.attribute_order(columns, mark, attrs)
                        self.order.update(dict.fromkeys(n for n in order if n not in self.primary))
                group[1].append(row)
                group[2].append(body)
            for name, value in attrs.items():
                if (name in self.primary) if wanted is None else (name not in wanted):
                    continue
                column = values.get(name)
                if column is None:
                    column = values[name] = ([], [])
                    self.order.setdefault(name)
                column[0].append(row)
                column[1].append(value)
        for columns, rows, bodies in groups.values():
            words = np.frombuffer(b"".join(bodies), dtype="<u8").reshape(len(bodies), -1)
            consecutive = rows[-1] - rows[0] + 1 == len(rows)
            at = slice(rows[0], rows[-1] + 1) if consecutive else np.array(rows, dtype=np.intp)
            self.rows.append(_Rows(columns, at, words, columns.offset // 8))

    def reserve(self, records: int) -> None:
        """Make room for up to *records* more records read by `take_page` (before the first page)."""
        self.capacity += records

    def take_page(self, names: Sequence[bytes], values: Sequence[bytes | None], page: Page) -> list[int]:
        """Keep the records of a page of raw stored values that one layout reads at once; the positions left.

        *names* are the backend's names of the records and *values* what it holds
        there (``None``: nothing); *page* says how to read them.  A value is kept
        here only if it is a row record whose map holds its one primary key alone,
        spelled as its name spells it, byte for byte the layout of a value of its
        size the full parse accepted: its values go straight into one block, no
        dict or object per record.  The caller reads the positions left the
        ordinary way (`take`).
        """
        positions = range(len(names))
        if not self.by_head or self.capacity <= self._used():
            return list(positions)
        shapes: dict[tuple[int, int], tuple[list[int], list[bytes]]] = {}
        left: list[int] = []
        for i, value in enumerate(values):
            if value is None:
                left.append(i)
                continue
            shape = shapes.get((len(value), len(names[i])))
            if shape is None:
                shape = shapes[len(value), len(names[i])] = ([], [])
            shape[0].append(i)
            shape[1].append(value)
        # The largest group first: the first template learnt sets the block's columns for good,
        # so the page's common layout, not whichever came first in SCAN's order, gets the block.
        for (size, name_size), (picked, blobs) in sorted(shapes.items(), key=lambda s: -len(s[1][0])):
            if self.capacity - self._used() < len(picked):
                left += picked
                continue
            raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(picked), size)
            ok = page.live(raw[:, : page.header])
            live = np.flatnonzero(ok)
            template = None if not len(live) else self._template(names[picked[live[0]]], blobs[live[0]], page)
            if template is None:
                left += picked
                continue
            texts = np.frombuffer(b"".join([names[i] for i in picked]), dtype=np.uint8).reshape(len(picked), name_size)
            texts = texts[:, page.cut :]
            ok &= (raw[:, template.same] == template.expected).all(axis=1)
            ok &= (raw[:, template.key_at : template.key_at + texts.shape[1]] == texts).all(axis=1)
            ok &= page.as_is[texts].all(axis=1)
            taken = picked if ok.all() else [i for i, good in zip(picked, ok.tolist(), strict=True) if good]
            if len(taken) < len(picked):
                left += [i for i, good in zip(picked, ok.tolist(), strict=True) if not good]
            if not taken:
                continue
            words = raw[:, template.values_at :].view("<u8")
            assert self.block is not None
            used = self._used()
            self.block[used : used + len(taken)] = words if len(taken) == len(picked) else words[ok]
            self.block_runs.append((self.n, len(taken)))
            self.n += len(taken)
            self.index[0].extend([names[i][page.cut :].decode("ascii") for i in taken])
        return sorted(left)

    def _used(self) -> int:
        return sum(count for _, count in self.block_runs)

    def _template(self, name: bytes, value: bytes, page: Page) -> _Template | None:
        """The template of values of this size and name size, learnt from *value* (live) if it is a fit record.

        It is parsed in full, as `take` would; a value that does not parse teaches
        nothing (the ordinary reading deals with it), one of another shape leaves
        its size to the ordinary reading for good.
        """
        shape = (len(value), len(name))
        if shape in self.templates:
            return self.templates[shape]
        text, header = name[page.cut :], page.header
        if not text or not page.as_is[np.frombuffer(text, dtype=np.uint8)].all():
            return None
        key, payload = encode_key((text.decode("ascii"),)), value[header:]
        try:
            tag, attrs, body, row = self._parse(key, payload)
        except (SerializationError, InvalidKeyError):
            return None
        self.templates[shape] = None
        if body is None or row is None or len(attrs) != 1 or not self.classes[tag]:
            return None
        head = _codec.row_head(tag) + b"\x81" + _codec.pack(self.family.primary[0]) + key[1:]
        if not payload.startswith(head) or not payload.endswith(body) or len(body) != row.size:
            return None
        if self.block_row is None:
            self.block_row = row
            self.block = np.empty((self.capacity, len(row.columns)), dtype="<u8")
        elif self.block_row.columns != row.columns:
            return None
        if self.wanted is None:  # the columns in the record's order
            order = _codec.attribute_order(row, body[: row.offset], attrs)
            self.order.update(dict.fromkeys(n for n in order if n not in self.primary))
        key_at = header + len(head) - len(text)
        values_at = len(value) - len(body) + row.offset
        same = np.r_[header:key_at, key_at + len(text) : values_at]
        template = _Template(same, np.frombuffer(value, dtype=np.uint8)[same], key_at, values_at)
        self.templates[shape] = template
        return template

    def _parse(self, key: bytes, payload: bytes) -> tuple[str, dict[str, Any], bytes | None, _codec.Row | None]:
        """A record's tag, map attributes, row body and what the row holds (a row record's values stay undecoded).

        Raises for a record that cannot be read, or that is another key's (a copied value).
        """
        if self.by_head and _codec.is_row_record(payload):
            for head, tag in self.heads.items():
                if payload.startswith(head):
                    found = self._parse_by_head(key, payload, len(head))
                    if found is not None:
                        return tag, found[0], found[1], found[2]
        body = row = None
        if _codec.is_row_record(payload):
            tag, attrs, body = _codec.split_row(payload)
            row = _codec.row_in(body, self.schema_of, attrs)
        else:
            tag, attrs = _codec.decode_record(payload, self.schema_of)
        if not self.family.owns(attrs, key):
            raise self.family.not_owned(tag, attrs)
        if tag not in self.classes:
            self.classes[tag] = self.family.class_for(tag, self.cls) is not None
        if self.by_head and body is not None and len(attrs) == 1 and len(self.heads) < 8:
            name = self.family.primary[0]
            self.heads[_codec.row_head(tag) + b"\x81" + _codec.pack(name)] = tag
        return tag, attrs, body, row

    def _parse_by_head(self, key: bytes, payload: bytes, at: int) -> tuple[dict[str, Any], bytes, _codec.Row] | None:
        """A row record that begins with a known head, read without unpacking it, or ``None`` if it is not so simple.

        Its map must hold exactly this key's value, byte for byte (the key as `encode_key`
        spelled it, so it is this key's record); then comes the row, whose body is checked
        as any row's.  Anything else is left to the full parse.
        """
        value = key[1:]  # a one-value key: msgpack's array header, then the value
        end = at + len(value)
        if key[:1] != b"\x91" or payload[at:end] != value:
            return None
        body = _codec.row_from(payload, end)
        if body is None:
            return None
        # The value's bytes are the key's own, so they unpack to a str or an int without a check.
        return {self.family.primary[0]: msgpack.unpackb(value)}, body, _codec.row_in(body, self.schema_of, ())

    def _still_holds(self, key: bytes, attrs: dict[str, Any]) -> bool:
        """Whether a record asked for by alternate keys still holds one (it may have moved on, as in batch_get)."""
        return any(self.family.key_values(index, attrs.get) == values for index, values in self.alternates[key])

    def frame(self) -> pd.DataFrame:
        n = self.n
        index = self._index()
        if self.block is not None and self.block_row is not None and self.block_runs:
            self.rows.append(_Rows(self.block_row, self._block_rows(), self.block[: self._used()], 0))
        names = list(self.order)
        # What each column holds in rows: the kinds, and how many records.
        row_kinds: dict[str, set[str]] = {}
        row_count: dict[str, int] = {}
        for rows in self.rows:
            for name, kind in rows.row.columns:
                row_kinds.setdefault(name, set()).add(kind)
                row_count[name] = row_count.get(name, 0) + len(rows.words)
        counts = {name: row_count.get(name, 0) + len(self.values.get(name, ((), ()))[0]) for name in names}
        kinds = {name: self._kind(row_kinds.get(name, set()), counts[name] == n, name) for name in names}
        parts = []
        other = {name: self._objects(name, n, kind) for name, kind in kinds.items() if kind not in ("f8", "i8")}
        if other:
            parts.append(pd.DataFrame(other, index=index))
        for kind in ("f8", "i8"):
            mine = [name for name in names if kinds[name] == kind]
            if mine:
                gaps = any(counts[name] < n for name in mine)  # only float columns have gaps: NaN there
                block = self._block(mine, kind, n, gaps)
                parts.append(pd.DataFrame(block, index=index, columns=mine, copy=False))
        if not parts:
            return pd.DataFrame(index=index)
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
        if list(frame.columns) != names:
            frame = frame[names]
        return frame

    def _kind(self, row_kinds: set[str], complete: bool, name: str) -> str:
        """``"f8"``, ``"i8"``, ``"bool"`` or ``"object"``: what every value of the column is."""
        types = set(map(type, self.values.get(name, ((), ()))[1]))
        if row_kinds <= {"f8"} and types <= {float}:
            return "f8"  # a record without the attribute is NaN there
        if row_kinds <= {"i8"} and types <= {int} and complete:
            return "i8"  # (an int column with gaps stays object: float64 would round big ints)
        if not row_kinds and types == {bool} and complete:
            return "bool"
        return "object"

    def _block(self, names: list[str], kind: str, n: int, gaps: bool) -> np.ndarray:
        """The (rows, columns) block of these columns of one kind, which the frame takes as its own, uncopied.

        Rows, not columns, first: each record's values are copied as one run of
        memory, where a (columns, rows) block would scatter every value.
        """
        if not gaps and len(self.rows) == 1:
            rows = self.rows[0]
            if (
                isinstance(rows.at, slice)
                and rows.at == slice(0, n)
                and list(rows.row.names) == names
                and rows.words.flags.writeable  # (the user may write to the frame)
                and not any(self.values.get(name) for name in names)
            ):  # the one block of every record (`take_page`'s): the frame's as it is
                return rows.words[:, rows.first : rows.first + len(names)].view("<" + kind)
        slot = {name: j for j, name in enumerate(names)}
        block = np.full((n, len(names)), np.nan) if gaps else np.empty((n, len(names)), dtype="<" + kind)
        for rows in self.rows:
            pairs = [(slot[name], c) for c, (name, _) in enumerate(rows.row.columns, rows.first) if name in slot]
            if not pairs:
                continue
            dest, src = (list(side) for side in zip(*pairs, strict=True))
            words = rows.words.view("<" + kind)
            if dest == list(range(dest[0], dest[-1] + 1)) and src == list(range(src[0], src[-1] + 1)):
                # The common case: the schema's columns in frame order, its records consecutive.
                block[rows.at, dest[0] : dest[-1] + 1] = words[:, src[0] : src[-1] + 1]
            else:
                at = np.arange(n)[rows.at] if isinstance(rows.at, slice) else rows.at
                block[np.ix_(at, dest)] = words[:, src]
        for name, j in slot.items():
            rows_, values = self.values.get(name, ((), ()))
            if rows_:
                block[list(rows_), j] = np.array(values, dtype=block.dtype)
        return block

    def _objects(self, name: str, n: int, kind: str) -> np.ndarray:
        rows, values = self.values.get(name, ([], []))
        if kind == "bool":
            out = np.empty(n, dtype=bool)
            out[rows] = values
            return out
        cells: list[Any] = [None] * n
        for group in self.rows:
            for c, (column, column_kind) in enumerate(group.row.columns, group.first):
                if column == name:
                    at = range(n)[group.at] if isinstance(group.at, slice) else group.at.tolist()
                    for row, value in zip(at, group.words[:, c].view("<" + column_kind).tolist(), strict=True):
                        cells[row] = value
        for row, value in zip(rows, values, strict=True):
            cells[row] = value
        return np.fromiter(cells, dtype=object, count=n)  # pandas infers str and datetime columns from it

    def _index(self) -> pd.Index:
        primary = self.family.primary
        if len(primary) == 1:
            return pd.Index(self.index[0], name=primary[0])
        if not self.n:
            return pd.MultiIndex.from_arrays([[] for _ in primary], names=list(primary))
        return pd.MultiIndex.from_tuples(list(zip(*self.index, strict=True)), names=list(primary))

    def _block_rows(self) -> slice | np.ndarray:
        """The frame's rows of the block's records, in the block's order."""
        runs = self.block_runs
        if all(start == previous + count for (previous, count), (start, _) in itertools.pairwise(runs)):
            first = self.block_runs[0][0]
            return slice(first, first + self._used())
        return np.concatenate([np.arange(start, start + count) for start, count in self.block_runs])
