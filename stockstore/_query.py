"""Finding records by indexed attributes: what a filter means, in one place.

`parse` turns ``find(cls, sector="tech", price__gte=10)`` into `Condition`\\ s,
refusing what no index answers; `Search` is a whole query (conditions, order,
slice).  The rules every backend answers by:

- Only attributes in the family's ``__stockstore_indexes__`` filter or sort.
- Indexed values are ``str``, numbers (``int`` and ``float`` compare as numbers)
  and ``bool`` (equal only to a bool).  A record without the attribute, or
  holding ``None``, NaN or any other value there, matches no filter on it
  (``__ne`` included, as SQL's NULL) and sorts after every other record.
- Strings compare by code point (the order of their UTF-8 bytes).
- Results come in the order asked for, ties (and a query with no order) in the
  order of the records' stored keys, so slices of one query never overlap.

`run` answers a search over decoded records in Python: the default every store
inherits, and the reference the conformance kit compares native indexes with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._keys import Family
from ._writer import public_keys
from .errors import QueryError

if TYPE_CHECKING:
    import pandas as pd

    from ._store import BaseStore

T = TypeVar("T")

OPERATORS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "startswith")
_RANGES = {"gt", "gte", "lt", "lte"}

Indexed = str | int | float | bool
"""A value an index holds (see `indexed`)."""


def indexed(value: Any) -> Indexed | None:
    """The value an index holds for an attribute value; ``None``: the record is not in the index."""
    kind = type(value)
    if kind is str or kind is bool or kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float and not math.isnan(value):
        return value  # type: ignore[no-any-return]
    return None


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter: ``attr`` ``op`` ``value`` (for ``in``, a tuple of values)."""

    attr: str
    op: str
    value: Any

    def matches(self, held: Any) -> bool:
        """Whether an attribute value *held* (already through `indexed`; ``None``: absent) passes."""
        if held is None:
            return False
        op, value = self.op, self.value
        if op == "eq":
            return _equal(held, value)
        if op == "ne":
            return not _equal(held, value)
        if op == "in":
            return any(_equal(held, v) for v in value)
        if op == "startswith":
            return type(held) is str and held.startswith(value)
        if _number(value) != _number(held) or type(held) is bool or (type(value) is str) != (type(held) is str):
            return False
        if op == "gt":
            return held > value  # type: ignore[no-any-return]
        if op == "gte":
            return held >= value  # type: ignore[no-any-return]
        if op == "lt":
            return held < value  # type: ignore[no-any-return]
        return held <= value  # type: ignore[no-any-return]


def _equal(held: Indexed, value: Indexed) -> bool:
    if type(held) is bool or type(value) is bool:
        return type(held) is type(value) and held == value
    return ((_number(held) and _number(value)) or type(held) is type(value)) and held == value


@dataclass(frozen=True, slots=True)
class Search:
    """A whole query: conditions (ANDed), order (attribute, descending?), and a slice."""

    conditions: tuple[Condition, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()
    start: int = 0
    stop: int | None = None

    def sliced(self, start: int, stop: int | None) -> Search:
        """This search's results from *start* to *stop* (relative to its own slice)."""
        begin = self.start + start
        end = None if stop is None else self.start + stop
        if self.stop is not None:
            end = self.stop if end is None else min(end, self.stop)
        return replace(self, start=begin, stop=end if end is None else max(end, begin))

    def attributes(self) -> set[str]:
        return {c.attr for c in self.conditions} | {attr for attr, _ in self.order}


def parse(family: Family, filters: Mapping[str, Any]) -> tuple[Condition, ...]:
    """The conditions of ``find``'s keyword filters; anything no index can answer raises `QueryError`."""
    indexes = family.indexes
    out = []
    for name, value in filters.items():
        attr, _, op = name.partition("__")
        op = op or "eq"
        if op not in OPERATORS:
            raise QueryError(f"{family.name}: unknown operator {op!r} in {name!r}; known: {', '.join(OPERATORS)}")
        _indexed_attr(family, indexes, attr)
        if op == "in":
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise QueryError(f"{family.name}: {name} takes a list of values, not {value!r:.80}")
            value = tuple(value)
            for item in value:
                _check_value(family, name, item)
        elif op == "startswith":
            if type(value) is not str:
                raise QueryError(f"{family.name}: {name} takes a str, not {value!r:.80}")
        else:
            _check_value(family, name, value)
            if op in _RANGES and type(value) is bool:
                raise QueryError(f"{family.name}: {name} compares numbers or strings, not a bool")
        out.append(Condition(attr, op, value))
    return tuple(out)


def parse_order(family: Family, attrs: Sequence[str]) -> tuple[tuple[str, bool], ...]:
    """``order_by``'s arguments: indexed attribute names, ``-`` first for descending."""
    if not attrs:
        raise QueryError(f"{family.name}: order_by needs at least one attribute")
    indexes = family.indexes
    out = []
    for name in attrs:
        if type(name) is not str:
            raise QueryError(f"{family.name}: order_by takes attribute names, not {name!r:.80}")
        attr = name.removeprefix("-")
        _indexed_attr(family, indexes, attr)
        out.append((attr, name.startswith("-")))
    return tuple(out)


def _indexed_attr(family: Family, indexes: tuple[str, ...], attr: str) -> None:
    if attr not in indexes:
        raise QueryError(
            f"{family.name}: {attr!r} is not indexed (indexed: {list(indexes)}); "
            f"add it to {family.name}.__stockstore_indexes__ and call store.reindex({family.name})"
        )


def _check_value(family: Family, name: str, value: Any) -> None:
    if type(value) not in (str, int, float, bool) or (type(value) is float and math.isnan(value)):
        raise QueryError(f"{family.name}: {name} compares with a str, int, float or bool, not {value!r:.80}")


def sort_key(order: tuple[tuple[str, bool], ...]) -> Callable[[tuple[bytes, Mapping[str, Indexed | None]]], Any]:
    """The sort key of (stored key, indexed values) pairs for *order*: absent values last, ties by stored key."""

    def key(pair: tuple[bytes, Mapping[str, Indexed | None]]) -> Any:
        stored, values = pair
        parts: list[Any] = []
        for attr, descending in order:
            held = values.get(attr)
            if held is None:
                parts.append((1, 0, 0))
                continue
            rank = 0 if type(held) is bool else 1 if _number(held) else 2
            # Descending: the rank and value turned around, absent records still last.
            if descending:
                parts.append((0, -rank, _Reversed(held)))
            else:
                parts.append((0, rank, held))
        parts.append(stored)
        return parts

    return key


class _Reversed:
    """A value that sorts the other way round (strings cannot be negated)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


def run(search: Search, records: Iterable[tuple[bytes, Mapping[str, Any]]]) -> list[bytes]:
    """The stored keys of the records (key, attributes) matching *search*, ordered and sliced."""
    attrs = search.attributes()
    rows = []
    for key, record in records:
        values = {a: indexed(record.get(a)) for a in attrs}
        if all(c.matches(values[c.attr]) for c in search.conditions):
            rows.append((key, values))
    rows.sort(key=sort_key(search.order))
    return [key for key, _ in rows[search.start : search.stop]]


class Query(Generic[T]):
    """A lazy, re-runnable query: ``store.find(cls, **filters)``; nothing runs until it is read.

    Iterating yields primary-key values (as ``keys()`` does); `count`, `objects`
    and `frame` run it too.  `order_by` and slicing return new queries: each is
    answered by the backend, offset and limit included.
    """

    def __init__(self, store: BaseStore, cls: type[T], family: Family, search: Search) -> None:
        self._store = store
        self._cls = cls
        self._family = family
        self._search = search

    def __repr__(self) -> str:
        return f"<Query {self._family.name} {self._search!r} in {self._store!r}>"

    def _keys(self) -> list[bytes]:
        return self._store._found_keys(self._cls, self._family, self._search)

    def __iter__(self) -> Iterator[Any]:
        return iter(public_keys(self._family, self._keys()))

    def count(self) -> int:
        """How many records match (within this query's slice), counted by the backend."""
        return self._store._found_count(self._cls, self._family, self._search)

    def order_by(self, *attrs: str) -> Query[T]:
        """A new query sorted by these indexed attributes (``"-price"``: descending); ties by stored key."""
        order = parse_order(self._family, attrs)
        return Query(self._store, self._cls, self._family, replace(self._search, order=order))

    @overload
    def __getitem__(self, item: int) -> Any: ...

    @overload
    def __getitem__(self, item: slice) -> Query[T]: ...

    def __getitem__(self, item: int | slice) -> Any:
        """``q[10:20]``: a new query of those results; ``q[3]``: the primary key of one."""
        if isinstance(item, slice):
            start, stop, step = item.start, item.stop, item.step
            if step not in (None, 1):
                raise QueryError(f"{self._family.name}: a query slices without a step, not {item!r}")
            for bound in (start, stop):
                if bound is not None and (type(bound) is not int or bound < 0):
                    raise QueryError(f"{self._family.name}: a query slices by non-negative ints, not {item!r}")
            search = self._search.sliced(start or 0, stop)
            return Query(self._store, self._cls, self._family, search)
        if type(item) is not int or item < 0:
            raise QueryError(f"{self._family.name}: a query is indexed by non-negative ints, not {item!r}")
        found = list(self[item : item + 1])
        if not found:
            raise IndexError(f"{self._family.name}: the query has no result {item}")
        return found[0]

    def objects(self) -> list[T]:
        """The matching records, in order, read as ``batch_get`` reads (through a chain's tiers).

        A record removed between the query and the read is left out.
        """
        keys = list(self)
        return [obj for obj in self._store.batch_get(self._cls, keys) if obj is not None]

    def frame(self, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """The matching records as a DataFrame indexed by primary key, in order (extra ``stockstore[pandas]``)."""
        return self._store.get_frame(self._cls, list(self), columns=columns)
