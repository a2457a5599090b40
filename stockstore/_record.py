"""What can be stored: `Record`, and turning any storable object into attributes and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SerializationError


class Record(dict[str, Any]):
    """A dict of attributes for wide, open-ended records.

    Subclass it and declare the keys::

        class Security(ss.Record):
            __stockstore_keys__ = ["ssm_id"]

        sec = Security(ssm_id="US0378331005", a1=0.42)
        sec["a1"]
    """

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({dict.__repr__(self)})"


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def attributes_of(obj: Any) -> Mapping[str, Any]:
    """The attributes to store for *obj*, to read, never to change.

    A dict record is its own attributes: a batch of wide records is not copied.
    """
    if isinstance(obj, dict):
        return obj
    attrs: dict[str, Any] = {}
    for name in _slot_names(type(obj)):
        if hasattr(obj, name):
            attrs[name] = getattr(obj, name)
    try:
        attrs.update(vars(obj))
    except TypeError:
        if not attrs:
            raise SerializationError(f"{type(obj).__qualname__} instances have no attributes to store") from None
    return attrs


def rebuild(cls: type, attrs: dict[str, Any]) -> Any:
    """An instance of *cls* holding *attrs*, made without calling ``__init__``.

    *attrs* must be a fresh dict: it becomes the instance's own state.
    """
    obj: Any
    if issubclass(cls, dict):
        obj = cls.__new__(cls)
        dict.update(obj, attrs)
        return obj
    obj = object.__new__(cls)
    state = getattr(obj, "__dict__", None)
    slots = set(_slot_names(cls))
    for name, value in attrs.items():
        if state is None or name in slots:
            # object.__setattr__ also gets past a frozen dataclass's __setattr__
            object.__setattr__(obj, name, value)
        else:
            state[name] = value
    return obj


class _Unset:
    """The type of `UNSET`: one instance, which survives pickling and copying as itself."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "stockstore.UNSET"

    def __reduce__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET = _Unset()
"""The value to give an attribute in ``patch`` to remove it from the record."""


class Increment:
    """A patch change that adds *amount* to the attribute as held (``incr``), decided inside the atomic patch."""

    __slots__ = ("amount", "result")

    def __init__(self, amount: int | float) -> None:
        self.amount = amount
        self.result: int | float = amount
        """The value the attribute was given, set each time a merge applies it (the last is the one kept)."""
