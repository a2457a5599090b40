"""The `stockstore bench` scenario: the securities analyst's morning, timed and checked.

Store N securities of wide float records, read some back, patch a few thousand,
list and delete everything — checking each step exactly (floats bit for bit,
types by identity), since a fast store that returns the wrong bytes is worth
nothing.  This module knows nothing of click or of the terminal: `run_scenario`
takes a store and a progress callback and returns the timings, so tests run it
on any store and `stockstore.cli` stays a thin shell of options and output.
"""

from __future__ import annotations

import contextlib
import random
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from ._chained import ChainedStore
from ._record import Record
from ._store import BaseStore
from ._url import from_url
from .errors import StoreError

DEFAULT_SEED = 20240601
DEFAULT_DB = Path(".stockstore") / "bench.db"
CHUNK = 10_000  # records per batch call: big enough to batch, small enough for a moving progress bar
SINGLE_GETS = 10  # the "handful" read one by one with get()
PATCHED = ("a0", "a1")  # existing attributes the patch step changes
ADDED = "new_attr"  # the attribute the patch step adds

T = TypeVar("T")


class Security(Record):
    """A security of the bench: ``ssm_id`` and float attributes ``a0 .. a{attrs-1}``."""

    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


@dataclass(frozen=True)
class StepResult:
    """One timed row of the bench table."""

    step: str
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records per second (infinite for a step too quick for the clock)."""
        return self.records / self.seconds if self.seconds > 0 else float("inf")


class CheckFailed(Exception):
    """A check of the scenario found a difference; the store is not to be trusted.

    Deliberately not a `StoreError`: the store raised nothing, it returned the
    wrong thing.  ``check`` names the check, ``detail`` the first difference
    (key and attribute), ``results`` the steps timed before it.
    """

    def __init__(self, check: str, detail: str, results: Sequence[StepResult] = ()) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail
        self.results = list(results)


Advance = Callable[[int], object]


class Progress(Protocol):
    """Opens a progress display for a step of *total* records; the context yields ``advance(n)``."""

    def __call__(self, step: str, total: int) -> contextlib.AbstractContextManager[Advance]: ...


@contextlib.contextmanager
def no_progress(step: str, total: int) -> Iterator[Advance]:
    """A `Progress` that shows nothing."""
    yield lambda n: None


def security_id(i: int) -> str:
    """The ``ssm_id`` of the *i*-th generated security: ``SEC0000000001`` for 1."""
    return f"SEC{i:010d}"


def generate(n: int, attrs: int, seed: int, progress: Progress = no_progress) -> list[Security]:
    """*n* securities with *attrs* random floats each, the same for the same seed."""
    rng = random.Random(seed)
    draw = rng.random
    names = [f"a{j}" for j in range(attrs)]
    out: list[Security] = []
    with progress("generate", n) as advance:
        for i in range(1, n + 1):
            sec = Security(ssm_id=security_id(i))
            sec.update(zip(names, [draw() for _ in names], strict=True))
            out.append(sec)
            if i % CHUNK == 0:
                advance(CHUNK)
        advance(n % CHUNK)
    return out


def open_store(urls: Sequence[str], *, db: Path = DEFAULT_DB, namespace: str) -> BaseStore:
    """The store the bench runs on: the *urls* as tiers top to bottom, or the embedded default.

    The embedded default is memory over a SQLite file at *db* (its directory is
    made if missing), so the bench needs no server.  Every tier gets *namespace*.
    """
    if not urls:
        from .backends import MemoryStore, SqlStore

        db.parent.mkdir(parents=True, exist_ok=True)
        source = SqlStore(f"sqlite:///{db.resolve()}", namespace=namespace)
        return ChainedStore([MemoryStore(namespace=namespace), source])
    tiers: list[BaseStore] = []
    try:
        for url in urls:
            tiers.append(from_url(url, namespace=namespace))
    except BaseException:
        for tier in tiers:
            tier.close()
        raise
    return tiers[0] if len(tiers) == 1 else ChainedStore(tiers)


def fresh_namespace() -> str:
    """A namespace no other run uses, so a bench never touches other data."""
    return f"bench-{uuid.uuid4().hex[:12]}"


def run_scenario(
    store: BaseStore,
    *,
    n: int = 100_000,
    attrs: int = 200,
    patch_n: int = 10_000,
    get_n: int = 1_000,
    seed: int = DEFAULT_SEED,
    progress: Progress = no_progress,
) -> list[StepResult]:
    """Run the analyst's morning on *store* and return one `StepResult` per timed step.

    *patch_n* and *get_n* are bounded by *n*.  Raises `CheckFailed` at the first
    check that fails; what the run wrote is deleted again either way (by its own
    ids, so other records in the namespace are left alone).  Store errors
    propagate unchanged.
    """
    if n < 1 or attrs < len(PATCHED) or patch_n < 0 or get_n < 0:
        raise ValueError(f"need n >= 1, attrs >= {len(PATCHED)}, patch_n >= 0, get_n >= 0")
    morning = _Morning(store, generate(n, attrs, seed, progress), random.Random(seed + 1), progress)
    try:
        morning.store()
        morning.get(min(get_n, n), min(SINGLE_GETS, n))
        morning.patch(min(patch_n, n))
        morning.list_and_delete()
    except BaseException as exc:
        if isinstance(exc, CheckFailed):
            exc.results = list(morning.results)
        morning.clean_up(exc)
        raise
    return morning.results


@dataclass
class _Morning:
    """The scenario's state between steps; one method per step, in the order they run."""

    db: BaseStore
    securities: list[Security]
    rng: random.Random
    progress: Progress
    results: list[StepResult] = field(default_factory=list)
    # What the store should hold now, by id; the generated records themselves are never changed.
    expected: dict[str, Mapping[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.expected = {sec["ssm_id"]: sec for sec in self.securities}

    @property
    def ids(self) -> list[str]:
        return list(self.expected)

    def _timed(self, step: str, records: int, started: float) -> None:
        self.results.append(StepResult(step, records, time.perf_counter() - started))

    def store(self) -> None:
        with self.progress("store", len(self.securities)) as advance:
            started = time.perf_counter()
            for chunk in _chunks(self.securities):
                self.db.batch_put(chunk)
                advance(len(chunk))
            self._timed("store", len(self.securities), started)

    def get(self, batch_n: int, single_n: int) -> None:
        wanted = self.rng.sample(self.ids, batch_n)
        got: list[Security | None] = []
        with self.progress("get batch", batch_n) as advance:
            started = time.perf_counter()
            for chunk in _chunks(wanted):
                got.extend(self.db.batch_get(Security, chunk))
                advance(len(chunk))
            self._timed("get batch", batch_n, started)
        self._check_records("get batch", wanted, got)

        wanted = self.rng.sample(self.ids, single_n)
        started = time.perf_counter()
        got = [self.db.get(Security, key) for key in wanted]
        self._timed("get single", single_n, started)
        self._check_records("get single", wanted, got)

    def patch(self, patch_n: int) -> None:
        wanted = self.rng.sample(self.ids, patch_n)
        draw = self.rng.random
        patches: list[dict[str, Any]] = [
            {"ssm_id": key, **{name: draw() for name in (*PATCHED, ADDED)}} for key in wanted
        ]
        with self.progress("patch", patch_n) as advance:
            started = time.perf_counter()
            for chunk in _chunks(patches):
                self.db.batch_patch(Security, chunk)
                advance(len(chunk))
            self._timed("patch", patch_n, started)
        for changes in patches:
            self.expected[changes["ssm_id"]] = {**self.expected[changes["ssm_id"]], **changes}

        got: list[Security | None] = []
        with self.progress("patch check", patch_n) as advance:
            # Unlike the get steps, the comparison is timed too: checking is this step's job.
            started = time.perf_counter()
            for keys in _chunks(wanted):
                got.extend(self.db.batch_get(Security, keys))
                advance(len(keys))
            self._check_records("patch check", wanted, got)
            self._timed("patch check", patch_n, started)

    def list_and_delete(self) -> None:
        ids = self.ids
        listed: list[Any] = []
        with self.progress("list", len(ids)) as advance:
            started = time.perf_counter()
            for key in self.db.keys(Security):
                listed.append(key)
                if len(listed) % CHUNK == 0:
                    advance(CHUNK)
            advance(len(listed) % CHUNK)
            self._timed("list", len(listed), started)
        _check_listing(ids, listed)

        deleted = 0
        with self.progress("delete", len(ids)) as advance:
            started = time.perf_counter()
            for chunk in _chunks(ids):
                deleted += self.db.batch_delete(Security, chunk)
                advance(len(chunk))
            self._timed("delete", deleted, started)
        if deleted != len(ids):
            raise CheckFailed("delete", f"batch_delete reported {deleted} deleted, expected {len(ids)}")
        left = self.db.count(Security)
        if left != 0:
            raise CheckFailed("count", f"count() is {left} after deleting every security, expected 0")

    def clean_up(self, exc: BaseException) -> None:
        """Delete what the run wrote, after a failure; a failing clean-up is noted on *exc*, not raised.

        Every id is deleted again, also after the delete step: absent ones are fine,
        and a store whose deletes failed a check may not have removed them all.
        """
        try:
            for chunk in _chunks(self.ids):
                self.db.batch_delete(Security, chunk)
        except StoreError as cleanup_error:
            exc.add_note(f"cleaning up the bench's records failed too: {cleanup_error}")

    def _check_records(self, check: str, keys: Sequence[str], got: Sequence[Security | None]) -> None:
        if len(got) != len(keys):
            raise CheckFailed(check, f"{len(got)} results for {len(keys)} keys")
        for key, record in zip(keys, got, strict=True):
            problem = difference(record, self.expected[key])
            if problem is not None:
                raise CheckFailed(check, f"{key}: {problem}")


def difference(got: Security | None, want: Mapping[str, Any]) -> str | None:
    """The first way *got* differs from the attributes *want*, or ``None`` if it is exact.

    Values must match type for type (``type(x) is float``) and floats bit for
    bit, so ``1 == 1.0`` and ``0.1 == Decimal(0.1)`` do not pass for the same.
    """
    if got is None:
        return "missing"
    if type(got) is not Security:
        return f"came back as {type(got).__qualname__}, not Security"
    for name, value in want.items():
        if name not in got:
            return f"attribute {name!r} is missing"
        other = got[name]
        # The fast way for the 20 million floats of a default run: equal non-zero floats
        # have one bit pattern; 0.0 == -0.0, NaN and every other type go the exact way.
        if type(other) is float and type(value) is float and other == value and value != 0.0:
            continue
        if not _same(other, value):
            return f"attribute {name!r} is {_show(other)}, expected {_show(value)}"
    extra = sorted(set(got) - set(want))
    if extra:
        return f"unexpected attribute {extra[0]!r} = {_show(got[extra[0]])}"
    return None


def _same(got: Any, want: Any) -> bool:
    if type(got) is not type(want):
        return False
    if type(want) is float:
        return struct.pack("<d", got) == struct.pack("<d", want)
    return bool(got == want)


def _show(value: Any) -> str:
    return f"{value!r:.60} ({type(value).__qualname__})"


def _check_listing(ids: Sequence[str], listed: Sequence[Any]) -> None:
    if len(listed) == len(ids) and set(listed) == set(ids):
        return
    wanted, seen = set(ids), set(listed)
    missing = [k for k in ids if k not in seen]
    unexpected = [k for k in listed if k not in wanted]
    if missing:
        detail = f"{missing[0]!r} is missing ({len(missing)} of {len(ids)} ids not listed)"
    elif unexpected:
        detail = f"{unexpected[0]!r} was never stored ({len(unexpected)} unexpected ids)"
    else:
        detail = f"{len(listed) - len(seen)} ids listed twice"
    raise CheckFailed("list", f"keys(Security): {detail}")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def render(results: Sequence[StepResult]) -> str:
    """The bench table: step, records, seconds, records/s, aligned."""
    rows = [("step", "records", "seconds", "records/s")]
    rows += [(r.step, f"{r.records:,}", f"{r.seconds:.3f}", f"{r.rate:,.0f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    ]
    return "\n".join(lines)
