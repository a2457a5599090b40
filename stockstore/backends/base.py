"""Everything a backend author needs, in one public module (docs/extending.md).

A minimal backend subclasses `BaseStore` and implements four primitives over
opaque units of bytes: ``_load``, ``_save``, ``_locked`` and ``_names``.  It
inherits every other primitive, decided by the rules below.  A fast backend
overrides the store primitives (``_read``, ``_write``, ``_fill``, ...) on
`Entry` and `Stored` units instead, decides with the same rules, and proves
itself with ``stockstore.testing.BackendSuite``.

- `BaseStore`: the public API written once over the primitives.
- `Family`: a storable class family, its declared keys; primitives receive it.
- `Stored`, `Entry`: a stored record (payload, version, expiry) and a write of
  one (plus its encoded primary and alternate keys).
- `Merge`: the function a ``_patch`` calls per key with the current record.
- `PartialWrite`: what a write primitive raises when some entries were not applied.
- `Plan`, `Slot`, `plan_write`, `plan_fill`, `stored_version`, `fill_lands`,
  `tombstone`, `holds`, `slots`: the rules a `ChainedStore` depends on, as pure
  functions (see their docstrings).
"""

from __future__ import annotations

from .._entry import Entry, Merge, PartialWrite, Stored
from .._keys import Family
from .._rules import Plan, Slot, fill_lands, holds, plan_fill, plan_write, slots, stored_version, tombstone
from .._store import BaseStore

__all__ = [
    "BaseStore",
    "Entry",
    "Family",
    "Merge",
    "PartialWrite",
    "Plan",
    "Slot",
    "Stored",
    "fill_lands",
    "holds",
    "plan_fill",
    "plan_write",
    "slots",
    "stored_version",
    "tombstone",
]
