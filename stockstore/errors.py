"""The errors stockstore raises, all under one root.

    StoreError
    ├── InvalidKeyError(ValueError)           bad key value, missing key attribute,
    │                                         alternate key held by another record
    ├── SerializationError(TypeError)         a value the codec cannot store exactly,
    │                                         or stored bytes it cannot read
    ├── BackendUnavailableError(ConnectionError)  server down or unreachable; the driver
    │                                         error is chained as ``__cause__``
    ├── BatchError                            a batch applied only in part; ``.failed``
    │                                         lists the primary keys not applied
    ├── StoreClosedError(RuntimeError)        the store (or chain) was closed
    ├── QueryError(ValueError)                a find() filter or order no index can
    │                                         answer, or an index never built
    └── UnsupportedOperationError             the backend cannot do this (memcached
                                              cannot list keys)

Each error also subclasses the builtin a caller would naturally catch, so
``except ValueError`` around a bad key keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BackendUnavailableError",
    "BatchError",
    "InvalidKeyError",
    "QueryError",
    "SerializationError",
    "StoreClosedError",
    "StoreError",
    "UnsupportedOperationError",
]


class StoreError(Exception):
    """Root of every error stockstore raises on purpose."""


class InvalidKeyError(StoreError, ValueError):
    """A key is malformed, missing, of the wrong type, or already held by another record."""


class SerializationError(StoreError, TypeError):
    """A value cannot be encoded exactly, or stored bytes cannot be decoded."""


class BackendUnavailableError(StoreError, ConnectionError):
    """The backend could not be reached or failed; the driver's error is chained."""


class StoreClosedError(StoreError, RuntimeError):
    """The store was closed, and refuses every call after it."""


class QueryError(StoreError, ValueError):
    """A query filters or sorts on an attribute that is not indexed, or with a value no index holds."""


class UnsupportedOperationError(StoreError, NotImplementedError):
    """The backend cannot perform this operation at all (a documented gap)."""


class BatchError(StoreError):
    """A batch was applied only in part.

    ``failed`` holds the primary-key values (scalars, or tuples for composite
    keys, as ``keys()`` yields them) of the items that were *not* applied;
    every other item was applied.  The first underlying error is chained.
    """

    def __init__(self, message: str, failed: Sequence[Any]) -> None:
        super().__init__(message)
        self.failed: list[Any] = list(failed)
