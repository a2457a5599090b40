"""Strict comparison for the conformance suite and stockstore's own tests: type and value, floats by bit pattern.

``==`` hides exactly the bugs a store can have (``1 == 1.0 == True``, ``0.0 == -0.0``,
``nan != nan``, a naive datetime turning aware), so every round-trip check goes through
`assert_same`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from typing import Any

from .._record import attributes_of


def expected(value: Any) -> Any:
    """What a store gives back for *value*: tuples become lists, everything else stays."""
    if type(value) in (list, tuple):
        return [expected(v) for v in value]
    if type(value) is dict:
        return {k: expected(v) for k, v in value.items()}
    return value


def difference(got: Any, want: Any, path: str = "value") -> str | None:
    """Where *got* differs from *want* in type or value, or ``None`` if they are the same."""
    if type(got) is not type(want):
        return f"{path}: type {type(got).__qualname__} != {type(want).__qualname__} ({got!r:.60} vs {want!r:.60})"
    if type(want) is float:
        same = struct.pack("<d", got) == struct.pack("<d", want)
    elif type(want) is decimal.Decimal:
        same = str(got) == str(want)
    elif type(want) is dt.datetime:
        same = (got.tzinfo is None) == (want.tzinfo is None) and got.utcoffset() == want.utcoffset() and got == want
    elif type(want) is list:
        if len(got) != len(want):
            return f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if (why := difference(g, w, f"{path}[{i}]")) is not None:
                return why
        return None
    elif type(want) is dict:
        if set(got) != set(want):
            return f"{path}: keys {sorted(got)!r:.80} != {sorted(want)!r:.80}"
        for k in want:
            if (why := difference(got[k], want[k], f"{path}[{k!r}]")) is not None:
                return why
        return None
    else:
        same = got == want
    return None if same else f"{path}: {got!r:.80} != {want!r:.80}"


def assert_same(got: Any, want: Any) -> None:
    """Fail unless *got* equals *want* in type and value (floats bit for bit)."""
    why = difference(got, want)
    assert why is None, why


def assert_record(got: Any, want: Any) -> None:
    """Fail unless *got* is a stored copy of the object *want*: same class, same attributes."""
    assert got is not None, f"expected a {type(want).__qualname__}, got None"
    assert type(got) is type(want), f"{type(got).__qualname__} is not {type(want).__qualname__}"
    assert got is not want
    assert_same(dict(attributes_of(got)), expected(dict(attributes_of(want))))
