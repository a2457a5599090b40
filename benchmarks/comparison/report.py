"""What a comparison found (`Report`: its settings, rows, Redis memory, failures) and how it is printed.

`render` prints one table grouped by step, so that each contender sits next to
the plain baselines doing the same thing, each with its ratio to the best of them;
then Redis memory, the SQL stores at scale and the main job's scaling where they
ran, notes, and last the issue's targets, met or not (`comparison.targets`).
`describe` writes the header that says what ran where, with the code revision, so
a pasted result can be traced back.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import stockstore
from stockstore._bench import DEFAULT_SEED, PATCHED

from . import targets
from .baselines import BEST_OF, LEGACY
from .measure import SAMPLE

if TYPE_CHECKING:
    from .finding import Finding
    from .main_job import MainJob
    from .sql_scale import SqlScale


@dataclass(frozen=True)
class Settings:
    """What a comparison runs: sizes as in ``stockstore bench``, plus the legacy cap and repeats."""

    n: int = 100_000
    attrs: int = 200
    get_n: int = 1_000
    patch_n: int = 10_000
    seed: int = DEFAULT_SEED
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.n < 1 or self.attrs < len(PATCHED) or self.get_n < 0 or self.patch_n < 0 or self.repeat < 1:
            raise ValueError(f"need n >= 1, attrs >= {len(PATCHED)}, get_n >= 0, patch_n >= 0, repeat >= 1")


@dataclass(frozen=True)
class Row:
    """One timed step of one contender (the median of its repeats)."""

    backend: str
    step: str
    records: int
    seconds: float
    peak_rss: int | None = None  # bytes: the process's peak resident memory during the step

    @property
    def rate(self) -> float:
        """Records per second (infinite for a step too quick for the clock)."""
        return self.records / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class RedisMemory:
    """What a contender's records take in Redis, measured around and after its store step."""

    backend: str
    records: int
    bytes_per_record: float  # growth of used_memory over the store step, divided by records
    key_usage: float | None  # mean MEMORY USAGE of a sample of its keys
    keys_added: int  # growth of the server's key count over the store step

    def disturbed(self) -> str | None:
        """Why the used_memory figure looks moved by other clients, or ``None``."""
        # A layout may add a few keys of its own (a schema, say), never one a record more.
        if abs(self.keys_added - self.records) > max(10, self.records // 100):
            return f"the server's key count grew by {self.keys_added:,}, not {self.records:,}"
        if self.key_usage is not None and abs(self.bytes_per_record - self.key_usage) > 0.25 * self.key_usage:
            return f"{self.bytes_per_record:,.0f} B/record against {self.key_usage:,.0f} B of MEMORY USAGE a key"
        return None


@dataclass(frozen=True)
class Failure:
    """A contender that failed a check (or raised): the others still ran."""

    backend: str
    step: str
    detail: str


@dataclass
class Report:
    """Everything a comparison found; `render` prints it."""

    settings: Settings
    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    memory: list[RedisMemory] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    input_bytes: int = 0
    peak_rss: int = 0
    layouts: dict[str, str] = field(default_factory=dict)  # backend -> the layout of baselines it is judged by
    sql: SqlScale | None = None
    main_job: MainJob | None = None
    finding: Finding | None = None

    def row(self, backend: str, step: str) -> Row | None:
        return next((r for r in self.rows if r.backend == backend and r.step == step), None)

    def best(self, row: Row) -> Row | None:
        """The fastest plain baseline of *row*'s layout (`BEST_OF`) for the same step; ``None`` if none ran it."""
        candidates = [self.row(name, row.step) for name in BEST_OF[self.layouts.get(row.backend, "blob")]]
        return max((r for r in candidates if r is not None), key=lambda r: r.rate, default=None)

    def ratio(self, row: Row) -> float | None:
        """*row*'s records/s over the best baseline's (`best`) for the same step: higher is faster."""
        base = self.best(row)
        if base is None or base.rate in (0.0, float("inf")) or row.rate == float("inf"):
            return None
        return row.rate / base.rate

    @property
    def all_failures(self) -> list[Failure]:
        """The field's failures and those of the SQL and main-job parts."""
        parts = [*(self.sql.failures if self.sql else []), *(self.main_job.failures if self.main_job else [])]
        if self.finding is not None:
            parts += [Failure(b.name, "finding", f) for b in self.finding.backends for f in b.failures]
        return [*self.failures, *parts]


def describe(settings: Settings, *, legacy_n: int | None, redis_url: str | None) -> list[str]:
    """The lines that say what ran where: sizes, machine, code revision, Redis server."""
    lines = [
        f"compare: {settings.n:,} securities x {settings.attrs} floats, get {min(settings.get_n, settings.n):,}, "
        f"patch {min(settings.patch_n, settings.n):,}, seed {settings.seed}, repeat {settings.repeat}"
        + ("" if legacy_n is None else f"; {LEGACY} on {min(legacy_n, settings.n):,}"),
        *provenance(),
    ]
    if redis_url is not None:
        lines.append(f"redis: {safe_url(redis_url)}")
    return lines


def provenance() -> list[str]:
    """The machine, Python, the time and the code revision measured."""
    lines = [
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ]
    code = revision()
    if code is not None:
        lines.append(f"code: {code}")
    return lines


def revision() -> str | None:
    """``git rev-parse --short HEAD`` of the stockstore measured, and whether its checkout has uncommitted changes.

    Asked where the imported package lives, not where this script does: the code measured
    is the package's, and an editable install may import it from another checkout.
    """
    here = Path(stockstore.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head} with uncommitted changes" if dirty else head


def render(report: Report, *, markdown: bool = False) -> str:
    """The comparison as text: header, the table of steps, Redis memory, the parts that ran, notes, targets.

    One table, grouped by step so each contender sits next to the baselines doing the
    same thing; ``vs best`` is records/s over the records/s of the best plain baseline
    of its layout (named in ``best plain``), higher is faster.  The targets come last,
    as time ratios (lower is better), as the issue states them.  With *markdown*,
    Markdown tables and a bullet list of the rest.
    """
    per_step = any(r.peak_rss is not None for r in report.rows)
    head = ["step", "backend", "records", "seconds", "records/s", "best plain", "vs best"]
    table = [head + (["peak RSS MB"] if per_step else [])]
    for r in report.rows:
        ratio, best = report.ratio(r), report.best(r)
        cells = [r.step, r.backend, f"{r.records:,}", f"{r.seconds:.3f}", f"{r.rate:,.0f}"]
        cells += ["-" if best is None else best.backend, "-" if ratio is None else f"{ratio:.2f}"]
        if per_step:
            cells.append("-" if r.peak_rss is None else mb(r.peak_rss))
        table.append(cells)
    raw = 8 * report.settings.attrs
    memory = [["layout", "records", "used_memory B/record", f"x raw float64 ({raw:,} B)", "MEMORY USAGE B/key"]]
    memory += [
        [
            m.backend,
            f"{m.records:,}",
            f"{m.bytes_per_record:,.0f}",
            f"{m.bytes_per_record / raw:.2f}",
            "-" if m.key_usage is None else f"{m.key_usage:,.0f}",
        ]
        for m in report.memory
    ]
    facts = [
        *report.header,
        f"input: {report.settings.n:,} records, about {mb(report.input_bytes)} MB as Python objects "
        f"(sys.getsizeof); raw float64 payload {mb(report.settings.n * raw)} MB",
        f"peak RSS of the whole run: {mb(report.peak_rss)} MB",
    ]
    legend = (
        "vs best: records/s over the records/s of the best plain baseline of the same layout for the same step "
        "(named in best plain: (a) or (c) for whole records, (d) for hashes), higher is faster"
    )
    if per_step:
        legend += "; peak RSS: this process's high-water mark during the step, the input records included"
    parts = [lines_text(facts, markdown), table_text(table, markdown, left=2), legend]
    if len(memory) > 1:
        title = (
            "Redis memory: growth of used_memory (INFO memory) over the store step per record, "
            f"and the mean MEMORY USAGE of {SAMPLE:,} of the keys"
        )
        parts.append(_titled(title, table_text(memory, markdown, left=1), markdown))
    if report.sql is not None:
        parts.append(render_sql(report.sql, markdown))
    if report.main_job is not None:
        parts.append(render_main_job(report.main_job, markdown))
    if report.finding is not None:
        from .finding import render_finding

        parts.append(render_finding(report.finding, markdown))
    notes = [*report.notes, *(report.sql.notes if report.sql else [])]
    if notes:
        parts.append(lines_text([f"note: {note}" for note in notes], markdown))
    parts.append(render_targets(targets.outcomes(report), markdown))
    return "\n\n".join(parts)


def render_sql(scale: SqlScale, markdown: bool) -> str:
    """The SQL part: every chunk's median times, SqlStore next to the raw driver, and their time ratio."""
    title = (
        f"SQL at scale: {scale.n:,} records in chunks of {scale.chunk:,} into empty tables, SqlStore.batch_put "
        f"next to the raw driver chunk by chunk, medians of {scale.repeat}; "
        "time ratio = SqlStore's seconds / the raw driver's, lower is better"
    )
    rows = [["database", "raw driver", "chunk", "rows after", "SqlStore s", "raw s", "time ratio"]]
    for database in dict.fromkeys(c.database for c in scale.chunks):
        chunks, raw_name = scale.of(database), scale.raw[database]
        for c in chunks:
            times = [f"{c.store_seconds:.3f}", f"{c.raw_seconds:.3f}", f"{c.ratio:.2f}"]
            rows.append([database, raw_name, str(c.index), f"{c.rows_after:,}", *times])
        store, raw = sum(c.store_seconds for c in chunks), sum(c.raw_seconds for c in chunks)
        total = f"{store / raw:.2f}" if raw > 0 else "-"
        rows.append([database, raw_name, "all", f"{chunks[-1].rows_after:,}", f"{store:.3f}", f"{raw:.3f}", total])
    body = table_text(rows, markdown, left=2) if len(rows) > 1 else "(no database ran)"
    return _titled(title, body, markdown)


def render_main_job(job: MainJob, markdown: bool) -> str:
    """The main job at its two sizes, and the records/s the large one keeps."""
    title = (
        f"main job: stockstore bench's store step (batch_put in calls of 10,000) on {job.store}, "
        f"medians of {job.repeat}"
    )
    if job.seconds is None or job.rates is None or job.ratio is None:
        return _titled(title, "(failed: see the check below)", markdown)
    rows = [["records", "seconds", "records/s"]]
    rows += [[f"{n:,}", f"{s:.3f}", f"{r:,.0f}"] for n, s, r in zip(job.sizes, job.seconds, job.rates, strict=True)]
    kept = f"records/s at {job.sizes[1]:,} over records/s at {job.sizes[0]:,}: {job.ratio:.2f}"
    return _titled(title, table_text(rows, markdown, left=0) + "\n\n" + kept, markdown)


def render_targets(found: Sequence[targets.Outcome], markdown: bool) -> str:
    """The issue's targets, one row each (`targets.outcomes`), with the verdict."""
    title = (
        "targets (issue 11): ratio x = stockstore's time per record / the baseline's, lower is better, against the "
        "best plain baseline of its layout unless named; the main job's ratio is records/s kept, higher is better; "
        "peak RSS is over the input records' size (sys.getsizeof)"
    )
    rows = [["step", "against", "at", "ratio", "target", "met?"]]
    for t in found:
        ratio = "-" if t.ratio is None else f"{t.ratio:.2f}{t.unit}"
        target = f"{t.op} {t.limit:.2f}{t.unit}" + ("" if t.stated_at is None else f" at {t.stated_at}")
        rows.append([t.step, t.against, t.at or "-", ratio, target, t.verdict()])
    text = table_text(rows, markdown, left=2)
    if any(t.elsewhere for t in found):
        text += "\n\n* measured at another size than the target's: indicative only"
    return _titled(title, text, markdown)


def _titled(title: str, body: str, markdown: bool) -> str:
    return title + ("\n\n" if markdown else "\n") + body


def mb(size: float) -> str:
    """*size* bytes in MB (10**6), to a tenth below 10."""
    return f"{size / 1e6:,.1f}" if size < 1e7 else f"{size / 1e6:,.0f}"


def lines_text(lines: Sequence[str], markdown: bool) -> str:
    return "\n".join(f"- {line}" if markdown else line for line in lines)


def table_text(rows: Sequence[Sequence[str]], markdown: bool, *, left: int) -> str:
    """*rows* aligned, the first *left* columns to the left and the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> list[str]:
        return [
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]

    if not markdown:
        return "\n".join("  ".join(line(row)).rstrip() for row in rows)
    rule = [("-" * (w - 1) + ":") if i >= left else "-" * w for i, w in enumerate(widths)]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in [line(rows[0]), rule, *map(line, rows[1:])])


def safe_url(url: str) -> str:
    """*url* without its user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
