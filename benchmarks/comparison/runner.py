"""Running a comparison: every contender through the same steps, timed, every read checked, memory measured.

The repeats are interleaved and the medians kept, so a slow minute on a shared
machine hits every contender alike; a contender that fails a check or raises is
recorded and cleaned up, and the others go on.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import itertools
import random
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stockstore._bench import (
    ADDED,
    CHUNK,
    PATCHED,
    Advance,
    CheckFailed,
    Progress,
    Security,
    _check_listing,
    _chunks,
    difference,
    generate,
    no_progress,
)
from stockstore.errors import StoreError

from .contenders import Contender
from .measure import PeakRss, key_usage, records_size, used_memory
from .report import Failure, RedisMemory, Report, Row, Settings, mb

STEPS = ("store", "get random", "get all", "patch", "list+delete")
FRAME_STEPS = ("store frame", "get frame (all)")


@dataclass(frozen=True)
class _Plan:
    """The records a contender gets and the same random choices for every contender of that size."""

    records: Sequence[Security]
    by_id: Mapping[str, Security]
    get_ids: list[str]
    patches: list[dict[str, Any]]


def _plan(records: Sequence[Security], settings: Settings) -> _Plan:
    by_id = {record["ssm_id"]: record for record in records}
    ids = list(by_id)
    rng = random.Random(settings.seed + 1)
    get_ids = rng.sample(ids, min(settings.get_n, len(ids)))
    draw = rng.random
    patches = [
        {"ssm_id": key, **{name: draw() for name in (*PATCHED, ADDED)}}
        for key in rng.sample(ids, min(settings.patch_n, len(ids)))
    ]
    return _Plan(records, by_id, get_ids, patches)


@dataclass
class _Frame:
    """The records as a DataFrame (index ``ssm_id``, one float64 column per attribute) and the expected values."""

    ids: list[str]
    names: list[str]
    values: Any  # numpy float64 array, rows in the order of ids
    frame: Any

    @classmethod
    def of(cls, records: Sequence[Security], attrs: int) -> _Frame:
        pd, np = _pandas(), importlib.import_module("numpy")
        names = [f"a{j}" for j in range(attrs)]
        flat = itertools.chain.from_iterable((record[name] for name in names) for record in records)
        values = np.fromiter(flat, dtype=np.float64, count=len(records) * attrs).reshape(len(records), attrs)
        ids = [record["ssm_id"] for record in records]
        frame = pd.DataFrame(values.copy(), index=pd.Index(ids, name="ssm_id"), columns=names)
        return cls(ids, names, values, frame)

    def difference(self, got: Any) -> str | None:
        """The first way the frame *got* differs from the records, or ``None`` if it holds them exactly."""
        pd, np = _pandas(), importlib.import_module("numpy")
        if not isinstance(got, pd.DataFrame):
            return f"got {type(got).__qualname__}, not a DataFrame"
        if got.index.name != "ssm_id":
            return f"the index is named {got.index.name!r}, not 'ssm_id'"
        if not got.index.is_unique:
            return f"the index holds {got.index[got.index.duplicated()][0]!r} twice"
        ids = set(self.ids)
        if len(got) != len(ids) or set(got.index) != ids:
            missing = sorted(ids - set(got.index))
            return f"{missing[0]!r} is missing" if missing else f"{len(got)} rows, expected {len(ids)}"
        if set(got.columns) != set(self.names):
            extra, missing = sorted(set(got.columns) - set(self.names)), sorted(set(self.names) - set(got.columns))
            return f"unexpected column {extra[0]!r}" if extra else f"column {missing[0]!r} is missing"
        for name in self.names:
            if got[name].dtype != np.float64:
                return f"column {name!r} is {got[name].dtype}, not float64"
        values = np.ascontiguousarray(got.loc[self.ids, self.names].to_numpy(), dtype=np.float64)
        wrong = np.argwhere(values.view(np.uint64) != self.values.view(np.uint64))
        if len(wrong):
            row, column = (int(i) for i in wrong[0])
            return (
                f"{self.ids[row]}: attribute {self.names[column]!r} is {values[row, column]!r}, "
                f"expected {self.values[row, column]!r}"
            )
        return None


class _Clock:
    """One step's stopwatch: only the blocks under `timed` count, so checks in between stay untimed.

    The peak RSS is read at the end of each timed block, so what an untimed
    check allocates after the last one is not charged to the step either.
    """

    def __init__(self, rss: PeakRss) -> None:
        self.rss = rss
        self.seconds = 0.0
        self.peak: int | None = None

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - started
        self.peak = self.rss.step_peak()


class _Runner:
    """Runs one contender through the steps, timing, checking and measuring; one method per step.

    A step's row is kept only once its checks have passed.
    """

    def __init__(self, who: Contender, plan: _Plan, progress: Progress, rss: PeakRss) -> None:
        self.who = who
        self.plan = plan
        self.progress = progress
        self.rss = rss
        self.rows: list[Row] = []
        self.memory: RedisMemory | None = None
        self.current = "store"  # the step running, to name it when a contender raises
        self.advance: Advance = no_progress_advance

    @contextlib.contextmanager
    def _step(self, step: str, records: int) -> Iterator[_Clock]:
        self.current = step
        # Every step starts with the collector in the same state: a full collection that the
        # garbage of earlier steps made due (100,000 records are a large heap to walk) lands
        # here, untimed, not in whichever contender's step allocates next.
        gc.collect()
        self.rss.start()
        clock = _Clock(self.rss)
        with self.progress(f"{self.who.name}: {step}", records) as advance:
            self.advance = advance
            yield clock
        self.rows.append(Row(self.who.name, step, records, clock.seconds, clock.peak))

    def run(self, frame: _Frame | None) -> None:
        ids = list(self.plan.by_id)
        self.store()
        self.get("get random", self.plan.get_ids, self.plan.by_id, chunk=len(self.plan.get_ids) or 1)
        # Chunk by chunk, each checked and dropped, so 500,000 records are never held twice.
        self.get("get all", ids, self.plan.by_id)
        self.patch()
        self.list_and_delete(ids)
        if frame is not None:
            self.frames(frame)

    def store(self) -> None:
        who, n = self.who, len(self.plan.records)
        with self._step("store", n) as clock:
            before = None if who.redis is None else used_memory(who.redis)
            for chunk in _chunks(self.plan.records):
                batch = who.shaped(chunk)  # untimed: the records as that contender's user holds them
                with clock.timed():
                    who.store(batch)
                del batch
                self.advance(len(chunk))
        if who.redis is not None and before is not None:
            (used, keys), usage = used_memory(who.redis), key_usage(who.redis, who.key_pattern())
            self.memory = RedisMemory(who.name, n, (used - before[0]) / n, usage, keys - before[1])

    def get(self, step: str, ids: Sequence[str], want: Mapping[str, Mapping[str, Any]], *, chunk: int = CHUNK) -> None:
        with self._step(step, len(ids)) as clock:
            for keys in _chunks(ids, chunk):
                with clock.timed():
                    got = self.who.get(keys)
                _check(step, keys, got, want)
                self.advance(len(keys))

    def patch(self) -> None:
        patches = self.plan.patches
        with self._step("patch", len(patches)) as clock:
            for chunk in _chunks(patches):
                with clock.timed():
                    self.who.patch(chunk)
                self.advance(len(chunk))
            want = {p["ssm_id"]: {**self.plan.by_id[p["ssm_id"]], **p} for p in patches}
            for keys in _chunks([p["ssm_id"] for p in patches]):
                _check("patch check", keys, self.who.get(keys), want)

    def list_and_delete(self, ids: list[str]) -> None:
        with self._step("list+delete", len(ids)) as clock:
            with clock.timed():
                listed = self.who.list_ids()
                deleted = sum(self.who.delete(keys) for keys in _chunks(listed))
            _check_listing(ids, listed)
            if deleted != len(ids):
                raise CheckFailed("delete", f"{deleted} reported deleted, expected {len(ids)}")
            left = self.who.remaining()
            if left != 0:
                raise CheckFailed("delete", f"{left} securities left after deleting every one")

    def frames(self, frame: _Frame) -> None:
        with self._step("store frame", len(frame.ids)) as clock, clock.timed():
            self.who.store_frame(frame.frame)
        with self._step("get frame (all)", len(frame.ids)) as clock:
            with clock.timed():
                got = self.who.get_frame()
            problem = frame.difference(got)
            del got  # a frame of 500,000 x 200 floats: not kept past its check
            if problem is not None:
                raise CheckFailed("get frame (all)", problem)
        self.who.delete(frame.ids)


def no_progress_advance(n: int) -> None:
    """An `Advance` that shows nothing."""


def _check(
    check: str, ids: Sequence[str], got: Sequence[Security | None], want: Mapping[str, Mapping[str, Any]]
) -> None:
    if len(got) != len(ids):
        raise CheckFailed(check, f"{len(got)} results for {len(ids)} keys")
    for key, record in zip(ids, got, strict=True):
        problem = difference(record, want[key])
        if problem is not None:
            raise CheckFailed(check, f"{key}: {problem}")


def run_compare(
    contenders: Sequence[Contender],
    settings: Settings | None = None,
    *,
    header: Sequence[str] = (),
    notes: Sequence[str] = (),
    progress: Progress = no_progress,
) -> Report:
    """Run every contender through the steps *settings.repeat* times, in one process.

    The repeats are interleaved (every contender once, then every contender again),
    so a slow minute on a shared machine hits them alike; the report holds the
    median of each step.  A failed check or an error of one contender is recorded
    in `Report.failures` (the steps it passed keep their rows), what it wrote is
    deleted, and the others go on.
    """
    settings = settings or Settings()
    report = Report(settings, header=list(header), notes=list(notes))
    report.layouts = {who.name: who.layout for who in contenders}
    rss = PeakRss()
    records = generate(settings.n, settings.attrs, settings.seed, progress)
    report.input_bytes = records_size(records)
    frame, no_frames = _frames(contenders, records, settings, report)
    plans: dict[int, _Plan] = {}
    rows: list[Row] = []
    memory: list[RedisMemory] = []
    failing: tuple[type[Exception], ...] = (CheckFailed, *_errors())
    for _ in range(settings.repeat):
        for who in contenders:
            if any(f.backend == who.name for f in report.failures):
                continue
            size = min(settings.n, who.limit or settings.n)
            if size not in plans:
                plans[size] = _plan(records[:size], settings)
            plan = plans[size]
            runner = _Runner(who, plan, progress, rss)
            try:
                who.open()
            except failing as exc:
                report.failures.append(Failure(who.name, "open", f"{type(exc).__name__}: {exc}"))
                continue
            try:
                missing = None if frame is None else who.frames_missing()
                if missing is not None and who.name not in no_frames.setdefault(missing, []):
                    no_frames[missing].append(who.name)
                runner.run(None if missing else frame)
            except failing as exc:
                if isinstance(exc, CheckFailed):
                    report.failures.append(Failure(who.name, exc.check, exc.detail))
                else:
                    report.failures.append(Failure(who.name, runner.current, f"{type(exc).__name__}: {exc}"))
                _clean_up(who, plan, report)
            finally:
                with contextlib.suppress(*failing):
                    who.close()
            # A failed run keeps the rows of the steps it passed, as `stockstore bench` does.
            rows += runner.rows
            memory += [runner.memory] if runner.memory is not None else []
    report.rows = _medians(rows, [who.name for who in contenders])
    for who in contenders:
        mine = [m for m in memory if m.backend == who.name]
        if mine:
            usages = [m.key_usage for m in mine if m.key_usage is not None]
            median = RedisMemory(
                who.name,
                mine[0].records,
                statistics.median(m.bytes_per_record for m in mine),
                statistics.median(usages) if usages else None,
                int(statistics.median(m.keys_added for m in mine)),
            )
            report.memory.append(median)
        for m in mine:
            if (why := m.disturbed()) is not None:
                report.notes.append(
                    f"Redis memory of {who.name} looks disturbed by another client ({why}): trust MEMORY USAGE"
                )
    report.notes += [f"frame rows skipped for {', '.join(names)}: {reason}" for reason, names in no_frames.items()]
    report.peak_rss = rss.whole_run()
    return report


def _medians(rows: Sequence[Row], backends: Sequence[str]) -> list[Row]:
    """One row per step and backend, in step order: the median time and the highest peak of its runs."""
    out = []
    for step in (*STEPS, *FRAME_STEPS):
        for backend in backends:
            runs = [r for r in rows if r.backend == backend and r.step == step]
            if runs:
                peaks = [r.peak_rss for r in runs if r.peak_rss is not None]
                seconds = statistics.median(r.seconds for r in runs)
                out.append(Row(backend, step, runs[0].records, seconds, max(peaks) if peaks else None))
    return out


def _frames(
    contenders: Sequence[Contender], records: Sequence[Security], settings: Settings, report: Report
) -> tuple[_Frame | None, dict[str, list[str]]]:
    """The DataFrame of the frame rows, or ``None`` and why every contender skips them."""
    missing = _pandas_missing()
    if missing is not None:
        return None, {missing: [who.name for who in contenders]}
    frame = _Frame.of(records, settings.attrs)
    report.header.append(
        f"frame: the same records as a DataFrame of {mb(frame.frame.memory_usage(deep=True).sum())} MB"
    )
    return frame, {}


def _errors() -> tuple[type[Exception], ...]:
    """What a contender may raise that fails it (and not the whole run)."""
    errors: tuple[type[Exception], ...] = (StoreError, OSError)
    with contextlib.suppress(ImportError):
        from redis import RedisError

        errors += (RedisError,)
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SQLAlchemyError  # dropping a run's table is plain SQLAlchemy

        errors += (SQLAlchemyError,)
    return errors


def _clean_up(who: Contender, plan: _Plan, report: Report) -> None:
    """Delete what a failed contender may have written; a failing clean-up becomes a note."""
    try:
        for chunk in _chunks(list(plan.by_id)):
            who.delete(chunk)
    except _errors() as exc:
        report.notes.append(f"cleaning up after {who.name} failed too: {type(exc).__name__}: {exc}")


def _pandas() -> Any:
    """pandas, imported only once a frame row runs (it is an optional extra)."""
    return importlib.import_module("pandas")


def _pandas_missing() -> str | None:
    try:
        importlib.import_module("pandas")
        importlib.import_module("numpy")
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install 'stockstore[pandas]')"
    return None
