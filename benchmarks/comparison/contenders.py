"""What every contender of a comparison does (`Contender`), and a stockstore store as one.

A contender is one way of doing the scenario's operations: a stockstore store
(`StoreContender`, built afresh for every run) or a hand-written baseline
(`comparison.baselines`).  Each run writes in a fresh namespace and leaves nothing
behind, neither Redis keys nor SQL tables.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stockstore import BaseStore, ChainedStore
from stockstore._bench import Security, _chunks, fresh_namespace

if TYPE_CHECKING:
    import redis

PIPELINE = 1000  # commands per pipeline round trip in baseline (a), and keys per MGET / DEL / SCAN COUNT


class Contender(ABC):
    """One way of doing the scenario's operations: a baseline, or a stockstore store.

    `open` starts a run in a fresh namespace, `close` ends it.  *limit* caps the
    records it is given (the legacy baseline's ``legacy_n``); *redis* is the server
    whose ``used_memory`` the store step grows, if any.
    """

    name: str
    limit: int | None = None
    redis: redis.Redis | None = None

    @abstractmethod
    def open(self) -> None:
        """Start a run in a namespace of its own."""

    @abstractmethod
    def close(self) -> None:
        """End the run; what it wrote is already deleted."""

    @abstractmethod
    def store(self, records: Sequence[Security]) -> None: ...

    @abstractmethod
    def get(self, ids: Sequence[str]) -> list[Security | None]: ...

    @abstractmethod
    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        """Set the attributes of each mapping (which holds ``ssm_id``), keeping the others."""

    @abstractmethod
    def list_ids(self) -> list[Any]: ...

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Delete these securities; how many existed."""

    @abstractmethod
    def remaining(self) -> int:
        """How many securities the namespace still holds."""

    def key_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern of the Redis keys this run writes (used only when *redis* is set)."""
        raise NotImplementedError

    def frames_missing(self) -> str | None:
        """Why this contender has no frame rows, or ``None`` if it has them (asked after `open`)."""
        return "no frame path"

    def store_frame(self, frame: Any) -> None:
        raise NotImplementedError

    def get_frame(self) -> Any:
        raise NotImplementedError


class StoreContender(Contender):
    """A stockstore store, built afresh by *build(namespace)* for every run."""

    def __init__(self, name: str, build: Callable[[str], BaseStore], *, redis: redis.Redis | None = None) -> None:
        self.name = name
        self.build = build
        self.redis = redis
        self._store: BaseStore | None = None

    @property
    def db(self) -> BaseStore:
        if self._store is None:
            raise RuntimeError(f"{self.name} is not open")
        return self._store

    def open(self) -> None:
        self.namespace = fresh_namespace()
        self._store = self.build(self.namespace)

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with store:
                _drop_tables(store)
            if self.redis is not None:
                # A chain's deletes leave tombstones in its Redis tier until tombstone_ttl (60 s); they
                # would shrink the used_memory growth measured for the next contender as they expire.
                # The namespace is fresh and glob-safe: every key under it is this run's.
                for keys in _chunks(list(self.redis.scan_iter(match=f"{self.namespace}:*", count=PIPELINE)), PIPELINE):
                    self.redis.delete(*keys)

    def key_pattern(self) -> str:
        return f"{self.namespace}:*"  # fresh_namespace() is glob-safe and stays as it is in key names

    def store(self, records: Sequence[Security]) -> None:
        self.db.batch_put(records)

    def get(self, ids: Sequence[str]) -> list[Security | None]:
        return self.db.batch_get(Security, ids)

    def patch(self, patches: Sequence[Mapping[str, Any]]) -> None:
        self.db.batch_patch(Security, patches)

    def list_ids(self) -> list[Any]:
        return list(self.db.keys(Security))

    def delete(self, ids: Sequence[str]) -> int:
        return self.db.batch_delete(Security, ids)

    def remaining(self) -> int:
        return self.db.count(Security)

    def frames_missing(self) -> str | None:
        # Checked at run time, so the frame rows appear as soon as the store has the methods.
        missing = [name for name in ("put_frame", "get_frame") if not hasattr(self.db, name)]
        return f"no {' or '.join(missing)}" if missing else None

    # Typed as Any: the methods are looked up at run time (frames_missing), whichever
    # BaseStore this runs against.
    def store_frame(self, frame: Any) -> None:
        db: Any = self.db
        db.put_frame(Security, frame)

    def get_frame(self) -> Any:
        db: Any = self.db
        return db.get_frame(Security)


def _drop_tables(store: BaseStore) -> None:
    """Drop every table a SQL tier made for this run's fresh namespace.

    Not only Security's: a store may keep families of its own there (``put_frame``
    keeps frame schemas).  They are found by the readable prefix of their names,
    ``ss_<namespace>_``, which only this run's random namespace produces.
    """
    try:
        import sqlalchemy as sa

        from stockstore.backends import SqlStore
    except ImportError:  # then no tier can be a SqlStore
        return
    for tier in store.tiers if isinstance(store, ChainedStore) else [store]:
        if isinstance(tier, SqlStore):
            # fresh_namespace() is lowercase letters, digits and one "-", which becomes "_".
            prefix = tier.table_name(Security)[: len("ss_") + len(tier.namespace) + 1]
            for name in sa.inspect(tier.engine).get_table_names():
                if name.startswith(prefix):
                    sa.Table(name, sa.MetaData()).drop(tier.engine, checkfirst=True)
