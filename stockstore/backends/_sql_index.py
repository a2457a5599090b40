"""How `SqlStore` keeps index values in a side table so that SQL comparisons give the query rules.

A family that declares ``__stockstore_indexes__`` gets a side table beside its own
(`SqlStore._side_table`): one row per (record, indexed attribute it holds), written and
removed in the transaction that writes or removes the record.  A value is kept so
that the database's own comparisons give the query rules of `stockstore._query`:

  kind  0 bool, 1 number, 2 str: the rank bools < numbers < strs of one attribute
  num   a bool as 0/1; a number as the nearest double, ...
  adj   ... and what the double misses of an int (|adj| <= 1024 within 64 bits):
        (num, adj) in lexicographic order is the exact numeric order of ints and
        floats alike, past 2**53 too.  Infinities are (+-max double, +-2): MariaDB
        stores no infinity.
  sv    a str's UTF-8 bytes (lone surrogates passed through), their first 255:
        bytes compare as code points, on every database, whatever its collation
  sx    all of them, where there are more than 255 (an index entry has a size limit)
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
from typing import Any

import sqlalchemy as sa

from .._query import Condition, Indexed

_KIND_BOOL, _KIND_NUMBER, _KIND_STR = 0, 1, 2
_MAX_DOUBLE = sys.float_info.max
_STR_ROOM = 255  # bytes of a str kept in the indexed column sv
_ADJ_ROOM = 2**62  # a query value's adj past this compares as this: stored ints never come near


def _number(value: int | float) -> tuple[float, int]:
    """The (num, adj) pair of a number: lexicographic order of pairs is the exact order of numbers."""
    if type(value) is float:
        if math.isinf(value):
            return (_MAX_DOUBLE, 2) if value > 0 else (-_MAX_DOUBLE, -2)
        return value + 0.0, 0  # -0.0 is 0.0
    try:
        near = float(value)
    except OverflowError:  # only a query value: past every finite double, short of infinity
        return (_MAX_DOUBLE, 1) if value > 0 else (-_MAX_DOUBLE, -1)
    adj = int(value) - int(near)
    if abs(near) == _MAX_DOUBLE:  # between the largest double and infinity's (max, 2)
        adj = (adj > 0) - (adj < 0)
    return near, max(-_ADJ_ROOM, min(_ADJ_ROOM, adj))


def text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _after(prefix: bytes) -> bytes:
    """The least byte string greater than every one starting with *prefix* (UTF-8 holds no 0xFF byte)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@functools.lru_cache(maxsize=1024)
def attr_code(name: str) -> int:
    """The side table's id of an indexed attribute name: 63 bits of its digest (names never reach SQL text)."""
    return int.from_bytes(hashlib.sha256(text(name)).digest()[:8], "big") >> 1


def index_row(ident: bytes, key: bytes, expires_ms: int | None, name: str, value: Indexed) -> dict[str, Any]:
    """The side row of one indexed attribute of the record *key* (digest *ident*), expiring with it."""
    row: dict[str, Any] = {"id": ident, "attr": attr_code(name), "num": None, "adj": None, "sv": None, "sx": None}
    row.update(key=key, expires_ms=expires_ms)
    if type(value) is bool:
        row.update(kind=_KIND_BOOL, num=float(value), adj=0)
    elif type(value) is str:
        data = text(value)
        row.update(kind=_KIND_STR, sv=data[:_STR_ROOM], sx=data if len(data) > _STR_ROOM else None)
    else:
        num, adj = _number(value)  # type: ignore[arg-type]
        row.update(kind=_KIND_NUMBER, num=num, adj=adj)
    return row


def _equals(side: sa.FromClause, value: Indexed) -> sa.ColumnElement[bool]:
    """*side*'s value equals *value* (`_query`'s equality): never NULL for a row of the side table."""
    c = side.c
    if type(value) is bool:
        return sa.and_(c.kind == _KIND_BOOL, c.num == float(value))
    if type(value) is str:
        data = text(value)
        if len(data) < _STR_ROOM:  # a longer str's sv is _STR_ROOM bytes: never this
            return sa.and_(c.kind == _KIND_STR, c.sv == data)
        if len(data) == _STR_ROOM:
            return sa.and_(c.kind == _KIND_STR, c.sv == data, c.sx.is_(None))
        return sa.and_(c.kind == _KIND_STR, c.sv == data[:_STR_ROOM], sa.func.coalesce(c.sx, c.sv) == data)
    num, adj = _number(value)  # type: ignore[arg-type]
    return sa.and_(c.kind == _KIND_NUMBER, c.num == num, c.adj == adj)


def condition(side: sa.FromClause, condition: Condition) -> sa.ColumnElement[bool]:
    """One filter of a query over the side-table rows of its attribute (joined: a record without it never passes)."""
    c, op, value = side.c, condition.op, condition.value
    if op == "eq":
        return _equals(side, value)
    if op == "ne":
        return sa.not_(_equals(side, value))
    if op == "in":
        return sa.or_(*(_equals(side, v) for v in value)) if value else sa.false()
    if op == "startswith":
        data = text(value)
        if not data:
            return c.kind == _KIND_STR
        if len(data) <= _STR_ROOM:  # the indexed prefix starts with it exactly when the whole str does
            return sa.and_(c.kind == _KIND_STR, c.sv >= data, c.sv < _after(data))
        whole = sa.func.coalesce(c.sx, c.sv)
        return sa.and_(c.kind == _KIND_STR, c.sv == data[:_STR_ROOM], whole >= data, whole < _after(data))
    if type(value) is str:
        data = text(value)
        head, whole = data[:_STR_ROOM], sa.func.coalesce(c.sx, c.sv)
        # The indexed prefix narrows the range (prefixes are in the order of the whole), the whole decides.
        narrow = c.sv >= head if op in ("gt", "gte") else c.sv <= head
        exact = {"gt": whole > data, "gte": whole >= data, "lt": whole < data, "lte": whole <= data}[op]
        return sa.and_(c.kind == _KIND_STR, narrow, exact)
    num, adj = _number(value)
    if op in ("gt", "gte"):
        tie = c.adj > adj if op == "gt" else c.adj >= adj
        return sa.and_(c.kind == _KIND_NUMBER, c.num >= num, sa.or_(c.num > num, tie))
    tie = c.adj < adj if op == "lt" else c.adj <= adj
    return sa.and_(c.kind == _KIND_NUMBER, c.num <= num, sa.or_(c.num < num, tie))


def ordering(side: sa.FromClause, kinds: set[int | None]) -> tuple[list[Any], list[Any]]:
    """What orders records by the value of *side*'s attribute: what puts absent values last, then the value's columns.

    The first stays ascending both ways, the second turn round for a descending
    order.  *kinds*: the `pinned` kinds of the filters on the attribute; none
    for one only sorted on.  Where a filter leaves one kind, the value's
    columns alone order it: the index's own order, so a ``LIMIT`` reads no more
    rows than it returns.
    """
    c = side.c
    pinned = kinds - {None}
    if pinned == {_KIND_STR}:
        return [], [c.sv, sa.func.coalesce(c.sx, c.sv)]  # the first bytes order the whole
    if pinned and _KIND_STR not in pinned:
        return [], [c.num, c.adj]
    last = [] if kinds else [c.kind.is_(None)]  # a filtered attribute is never absent
    return last, [c.kind, c.num, c.adj, sa.func.coalesce(c.sx, c.sv)]


def pinned(condition: Condition) -> int | None:
    """The one kind of value *condition* passes, if it passes one only (``__ne`` and ``__in`` may pass any)."""
    op, value = condition.op, condition.value
    if op in ("ne", "in"):
        return None
    if op == "startswith" or type(value) is str:
        return _KIND_STR
    return _KIND_BOOL if op == "eq" and type(value) is bool else _KIND_NUMBER
