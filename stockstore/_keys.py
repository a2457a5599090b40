"""Class families, their declared keys, and the injective byte form of key values.

A *family* is the class that declares ``__stockstore_keys__`` together with all
its subclasses: they share one key space, so ``get(Base, k)`` finds a stored
``Sub``.  Key values are encoded as msgpack arrays, which is injective (``"1"``
and ``1`` differ, every string is length-prefixed) and opaque to every backend:
no key value ever reaches a server as text it could interpret.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from .errors import InvalidKeyError, QueryError, SerializationError, StoreError

KeyValue = str | int
_INT64 = range(-(2**63), 2**63)


def check_key_part(name: str, value: Any) -> None:
    """Raise `InvalidKeyError` unless *value* may be part of a key."""
    kind = type(value)
    if kind is str:
        return
    if kind is int and value in _INT64:
        return
    if kind is int:
        raise InvalidKeyError(f"key attribute {name!r} is out of the 64-bit signed range: {value}")
    raise InvalidKeyError(
        f"key attribute {name!r} must be str or int, not {kind.__qualname__}: {value!r:.80}{_key_advice(value)}"
    )


def _key_advice(value: Any) -> str:
    """How to make a key value of a subclass, or a numpy integer, the str or int it stands for.

    Not done silently: a key is compared by type (``1`` is not ``"1"``), so its type is the caller's to choose.
    """
    if isinstance(value, str):
        return "; convert with str()"
    numpy_int = type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and type(value.item()) is int
    if numpy_int or (isinstance(value, int) and not isinstance(value, bool)):
        return "; convert with int()"
    return ""


# msgpack's head of a one-value tuple holding a str of n < 32 bytes: the common key
FIXSTR_KEY = [bytes((0x91, 0xA0 + n)) for n in range(32)]


def encode_key(values: tuple[KeyValue, ...]) -> bytes:
    """The byte form of an already-checked key tuple."""
    if len(values) == 1 and type(value := values[0]) is str and len(value) < 32 and value.isascii():
        return FIXSTR_KEY[len(value)] + value.encode()  # msgpack's bytes, for a third of the packer's time
    try:
        packed: bytes = (getattr(_local, "packer", None) or _new_packer()).pack(values)
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form, so no key
        raise InvalidKeyError(f"a key value is not valid Unicode: {exc}") from None
    return packed


def short_str(data: bytes) -> str | None:
    """The one str of fewer than 32 bytes that *data* encodes, the common key; ``None`` for any other key.

    Canonical as it stands, once it is UTF-8: other bytes of that shape raise `SerializationError`.
    """
    if len(data) >= 2 and data[0] == 0x91 and 0xA0 <= data[1] <= 0xBF and len(data) == data[1] - 0xA0 + 2:
        try:
            return data[2:].decode()
        except UnicodeDecodeError:
            raise SerializationError("stored key is not a stockstore key") from None
    return None


def decode_key(data: bytes) -> tuple[KeyValue, ...]:
    """The key tuple behind `encode_key`'s bytes; any other bytes raise `SerializationError`.

    Keys come back from servers (SQL's key column, memcached's pointers), where another
    program may have written anything: only the exact bytes `encode_key` makes of a
    valid key are accepted, so a listed key is always one a read can find.
    """
    text = short_str(data)
    if text is not None:
        return (text,)
    try:
        values: Any = msgpack.unpackb(data, use_list=False, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):  # not msgpack, or a str not UTF-8
        values = None
    valid = type(values) is tuple and len(values) > 0
    if valid:
        for value in values:
            if type(value) is not str and (type(value) is not int or value not in _INT64):
                valid = False
                break
        else:
            packer = getattr(_local, "packer", None) or _new_packer()
            valid = packer.pack(values) == data  # else another encoding of the same values
    if not valid:
        raise SerializationError("stored key is not a stockstore key")
    return values  # type: ignore[no-any-return]


_local = threading.local()


def _new_packer() -> msgpack.Packer:
    """This thread's packer for `encode_key` and `decode_key`, which run for every key: one per call costs more."""
    packer = _local.packer = msgpack.Packer()
    return packer


@dataclass(frozen=True)
class Family:
    """Everything stockstore knows about one storable class family."""

    name: str
    root: type
    keys: tuple[tuple[str, ...], ...]  # keys[0] is the primary key

    @property
    def primary(self) -> tuple[str, ...]:
        return self.keys[0]

    @cached_property
    def indexes(self) -> tuple[str, ...]:
        """The root's ``__stockstore_indexes__``, checked: the distinct attribute names ``find`` filters on."""
        declared = getattr(self.root, "__stockstore_indexes__", ())
        if isinstance(declared, str) or not isinstance(declared, (list, tuple)):
            raise QueryError(f"{self.name}.__stockstore_indexes__ must be a list of attribute names, not {declared!r}")
        if not all(type(n) is str and n for n in declared) or len(set(declared)) != len(declared):
            raise QueryError(f"{self.name}.__stockstore_indexes__ must name distinct attributes: {declared!r}")
        return tuple(declared)

    def tag(self, cls: type) -> str:
        """How a concrete class is named inside its family's stored records."""
        return cls.__qualname__

    def class_for(self, tag: str, wanted: type) -> type | None:
        """The class stored as *tag*, if it is *wanted* or a subclass of it.

        Only classes already defined in this process are considered (no import
        is ever driven by stored data).  Unknown tags raise.
        """
        if wanted.__qualname__ == tag:  # the common case, without walking subclasses
            return wanted
        for cls in _subtree(wanted):
            if cls.__qualname__ == tag:
                return cls
        if wanted is not self.root and any(c.__qualname__ == tag for c in _subtree(self.root)):
            return None
        if self.root in _adopting:
            return _adopt(self.root, tag) if wanted is self.root else None
        others = {f.name for c, f in list(_families.items()) if c.__qualname__ == tag and f.name != self.name}
        if others:
            raise SerializationError(
                f"the stored record is a {tag!r}, of family {min(others)!r}, not of family {self.name!r}"
            )
        raise SerializationError(
            f"the stored record is of class {tag!r}, which is not defined in this process (as a class of family "
            f"{self.name!r}): import the module that defines it before reading"
        )

    def public_key(self, values: tuple[KeyValue, ...]) -> Any:
        """A primary key as users see it: a scalar, or a tuple for a composite key.

        *values* come from a server: a key of another arity is not one of this family's.
        """
        if len(values) != len(self.primary):
            raise SerializationError(
                f"stored key of {len(values)} part(s) in {self.name}, whose key has {len(self.primary)}"
            )
        return values[0] if len(values) == 1 else values

    def key_values(self, index: int, get: Any) -> tuple[KeyValue, ...] | None:
        """Read key *index* from an attribute getter; ``None`` if an alternate key is unset.

        The primary key must be complete; an alternate key whose attributes are
        missing or ``None`` is simply not indexed (as a NULL in a SQL UNIQUE column).
        """
        names = self.keys[index]
        if len(names) == 1:  # the common case, without a generator
            value = get(names[0])
            if value is None and index:
                return None
            if value is None:
                raise InvalidKeyError(f"{self.name}: primary key attribute {names[0]!r} is missing")
            check_key_part(names[0], value)
            return (value,)
        values = tuple(get(name) for name in names)
        if index and any(v is None for v in values):
            return None
        for name, value in zip(names, values, strict=True):
            if value is None:
                raise InvalidKeyError(f"{self.name}: primary key attribute {name!r} is missing")
            check_key_part(name, value)
        return values

    def primary_of(self, attrs: Mapping[str, Any]) -> tuple[KeyValue, ...]:
        values = self.key_values(0, attrs.get)
        assert values is not None  # the primary key is never optional
        return values

    def owns(self, attrs: Mapping[str, Any], key: bytes) -> bool:
        """Whether a record with these attributes is the one stored under *key* (its encoded primary key).

        Checked on every read: a stored record carries its own key, so another
        record's bytes copied under *key* are never taken for its record.
        """
        try:
            return encode_key(tuple([attrs[name] for name in self.keys[0]])) == key
        except (KeyError, TypeError, ValueError, StoreError):  # missing, or no key value at all
            return False

    def not_owned(self, tag: str, attrs: Mapping[str, Any]) -> SerializationError:
        """The error for a record (of class *tag*) read under a key that `owns` says is not its own."""
        held = tuple(attrs.get(name) for name in self.primary)
        if all(value is None for value in held):
            return SerializationError(
                f"the stored record, a {tag!r}, has no {'/'.join(self.primary)} attribute: a record of another family?"
            )
        value = held[0] if len(held) == 1 else held
        return SerializationError(
            f"the stored record, a {tag!r}, is the one of {value!r:.80}: copied from another key?"
        )

    def alternates_of(self, attrs: Mapping[str, Any]) -> tuple[bytes | None, ...]:
        """Encoded alternate keys of a record, aligned with ``keys[1:]``."""
        out: list[bytes | None] = []
        for index in range(1, len(self.keys)):
            values = self.key_values(index, attrs.get)
            out.append(None if values is None else encode_key(values))
        return tuple(out)

    def parse_key(self, key: Any) -> tuple[int, tuple[KeyValue, ...]]:
        """Turn a user's key into (index of the declared key, values).

        Accepted: a mapping naming exactly one declared key's attributes, a bare
        value for a one-attribute primary key, or a tuple for a composite one.
        """
        if type(key) is str and len(self.keys[0]) == 1:  # the common case: nothing to check
            return 0, (key,)
        if isinstance(key, Mapping):
            names = set(key)
            for index, declared in enumerate(self.keys):
                if names == set(declared):
                    values = tuple(key[n] for n in declared)
                    for name, value in zip(declared, values, strict=True):
                        check_key_part(name, value)
                    return index, values
            raise InvalidKeyError(f"{self.name}: {sorted(names)} is not a declared key; declared: {list(self.keys)}")
        values = key if type(key) is tuple else (key,)
        if len(values) != len(self.primary):
            raise InvalidKeyError(
                f"{self.name}: primary key {self.primary} needs {len(self.primary)} value(s), got {key!r:.80}"
            )
        for name, value in zip(self.primary, values, strict=True):
            check_key_part(name, value)
        return 0, values


def _subtree(cls: type) -> Iterator[type]:
    yield cls
    sub: type
    for sub in cls.__subclasses__():
        yield from _subtree(sub)


_families: dict[type, Family] = {}
_lock = threading.Lock()
_adopting: set[type] = set()  # roots that read records of any class of their family (`adopt_classes`)


def adopt_classes(root: type) -> None:
    """Let *root* read the records of every class of its family, also classes this process does not define.

    The ``stockstore`` command knows a family only by its name: a record another
    program stored as a subclass (say ``USSecurity`` under ``Security``) must still
    show, as its attributes.  Such a class is made on first read as a subclass of
    *root* with the stored name, and found like any other thereafter.  Nothing is
    imported: stored data still never drives an import.
    """
    with _lock:
        _adopting.add(root)


def _adopt(root: type, tag: str) -> type:
    with _lock:
        for cls in _subtree(root):  # made meanwhile by another thread
            if cls.__qualname__ == tag:
                return cls
        return type(tag.rpartition(".")[2], (root,), {"__qualname__": tag, "__module__": root.__module__})


def family_of(cls: type) -> Family:
    """The family of a storable class (cached)."""
    try:
        return _families[cls]
    except KeyError:
        pass
    if not isinstance(cls, type):
        raise InvalidKeyError(f"expected a storable class, got {cls!r:.80}")
    roots = [c for c in cls.__mro__ if "__stockstore_keys__" in vars(c)]
    if not roots:
        raise InvalidKeyError(f"{cls.__qualname__} declares no __stockstore_keys__")
    root = roots[-1]
    declared = vars(root)["__stockstore_keys__"]
    if isinstance(declared, str) or not declared:
        raise InvalidKeyError(f"{root.__qualname__}.__stockstore_keys__ must be a non-empty list")
    keys = []
    for entry in declared:
        names = (entry,) if isinstance(entry, str) else tuple(entry) if isinstance(entry, (tuple, list)) else ()
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise InvalidKeyError(f"{root.__qualname__}.__stockstore_keys__: bad entry {entry!r}")
        keys.append(names)
    if len(set(keys)) != len(keys):
        raise InvalidKeyError(f"{root.__qualname__}.__stockstore_keys__ declares a key twice")
    family = Family(name=root.__qualname__, root=root, keys=tuple(keys))
    with _lock:
        return _families.setdefault(cls, family)
