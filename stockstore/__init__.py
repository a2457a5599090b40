"""stockstore: wide analytics records in tiered storage, written once and read back exactly."""

from __future__ import annotations

from . import backends, errors
from ._chained import ChainedStore
from ._config import from_config
from ._record import UNSET, Record
from ._store import BaseStore
from ._url import from_url

__all__ = ["BaseStore", "ChainedStore", "Record", "UNSET", "backends", "errors", "from_config", "from_url"]
__version__ = "0.1.0"
