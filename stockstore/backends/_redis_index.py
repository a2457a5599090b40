"""The Redis stores' index values and query ranges: byte forms whose order is the query order.

Every indexed attribute of a family is one sorted set of score 0 (redis.lua's
``i:z``), whose members are `index_value` followed by the record's key, so that
``ZRANGE ... BYLEX`` over a range of values answers a condition, in value then
key order.  `merged` turns a query's conditions into those ranges.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .._query import Condition, Indexed

_DOUBLE = struct.Struct(">d")
_WORD = struct.Struct(">Q")
_SIGN = 1 << 63


def index_value(value: Indexed) -> bytes:
    """An index value's byte form: byte order is the query order (redis.lua's ``i:z`` members).

    A rank first (bool 0, number 1, str 2, the order of `_query.sort_key`), then:
    a bool's byte; a number's double with its bits turned so bytes sort as numbers
    (``-0.0`` as ``0.0``) and the exact remainder of an int beyond 2**53 over that
    double, so ints and floats compare exactly as numbers; a str's UTF-8 with its NUL
    bytes escaped (``\0\1``), ended by ``\0\0``.  Each form is prefix-free, so a
    member ``value .. key`` sorts by value, then by key.
    """
    if type(value) is bool:
        return b"\x00\x01" if value else b"\x00\x00"
    if type(value) is str:
        return b"\x02" + _escaped(value) + b"\x00\x00"
    rounded = float(value) + 0.0  # + 0.0: -0.0 is 0.0
    (bits,) = _WORD.unpack(_DOUBLE.pack(rounded))
    bits = bits ^ (2**64 - 1) if bits & _SIGN else bits | _SIGN
    rest = value - int(rounded) if type(value) is int else 0
    return b"\x01" + _WORD.pack(bits) + _WORD.pack(rest + _SIGN)


def _escaped(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\x01")


def _ranges(condition: Condition) -> tuple[list[tuple[bytes, bytes]], bool]:
    """A condition as ``ZRANGE BYLEX`` bounds over its attribute's members; and whether it is one value."""
    op, value = condition.op, condition.value
    if op == "startswith":
        start = b"\x02" + _escaped(value)
        return [(b"[" + start, b"(" + start + b"\xff")], False
    if op in ("eq", "in"):
        values = list(dict.fromkeys(index_value(v) for v in (value if op == "in" else (value,))))
        return [(b"[" + v, b"(" + v + b"\xff") for v in values], len(values) == 1
    held = index_value(value)
    if op == "ne":
        return [(b"-", b"(" + held), (b"(" + held + b"\xff", b"+")], False
    rank, above = held[:1], bytes([held[0] + 1])
    bounds = {
        "gt": (b"(" + held + b"\xff", b"(" + above),
        "gte": (b"[" + held, b"(" + above),
        "lt": (b"[" + rank, b"(" + held),
        "lte": (b"[" + rank, b"(" + held + b"\xff"),
    }
    return [bounds[op]], False


def merged(conditions: Sequence[Condition]) -> list[tuple[str, list[tuple[bytes, bytes]], bool]]:
    """The conditions as (attribute, BYLEX ranges, one value?), one range per attribute where they allow.

    Conditions of one attribute that are each one range (``price__gte`` and
    ``price__lte``) become their intersection: the script then reads that range
    alone, instead of both half-open ranges and the intersection of their keys.
    """
    out: list[tuple[str, list[tuple[bytes, bytes]], bool]] = []
    narrowed: dict[str, int] = {}  # attribute -> its one-range entry in out
    for condition in conditions:
        ranges, single = _ranges(condition)
        at = narrowed.get(condition.attr)
        if len(ranges) == 1 and at is not None:
            (low, high), ((other_low, other_high),) = ranges[0], out[at][1]
            out[at] = (
                condition.attr,
                [(_tighter(low, other_low, b"-", 1), _tighter(high, other_high, b"+", -1))],
                False,
            )
            continue
        if len(ranges) == 1:
            narrowed[condition.attr] = len(out)
        out.append((condition.attr, ranges, single))
    return out


def _tighter(a: bytes, b: bytes, open_end: bytes, sign: int) -> bytes:
    """The tighter of two ``BYLEX`` bounds of one side: the higher minimum (*sign* 1) or the lower maximum (-1)."""
    if a == open_end or b == open_end:
        return b if a == open_end else a
    if a[1:] != b[1:]:
        return a if (a[1:] > b[1:]) == (sign > 0) else b
    return a if a[:1] == b"(" else b  # at the same value, an exclusive bound is the tighter
