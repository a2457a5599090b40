"""The SQL stores at the mission's scale: `SqlStore.batch_put` next to the raw driver, chunk by chunk as tables grow.

    .venv/bin/python benchmarks/sql_scale.py --n 500000                  # SQLite, chunks of 50,000
    .venv/bin/python benchmarks/sql_scale.py --n 250000 --postgresql postgresql://postgres@127.0.0.1:5432/postgres

SQLite: `SqlStore.batch_put` against ``sqlite3`` ``executemany`` of msgpack blobs (WAL,
``synchronous=NORMAL``); PostgreSQL: against psycopg ``COPY`` of the same blobs; each
into an empty table of a primary-key blob and a blob payload, the two alternating
chunk by chunk, every chunk timed, both tables checked after the last
(``comparison/sql_scale.py``).  Prints each chunk's median times and their ratio,
then the issue's SQL targets.  ``compare.py --sql-n N`` runs the same and adds it to
the whole comparison's report.  Exit code 1 if a check failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compare import at_least, progress_bars
from comparison import targets
from comparison.report import lines_text, provenance, render_sql, render_targets, safe_url
from comparison.sql_scale import DEFAULT_CHUNK, run_sql_scale

from stockstore._bench import DEFAULT_SEED, PATCHED


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/sql_scale.py",
        description="Time SqlStore.batch_put against the raw driver chunk by chunk as the table grows.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=at_least(1), default=500_000, help="records to store")
    parser.add_argument("--chunk", type=at_least(1), default=DEFAULT_CHUNK, help="records per batch_put / raw call")
    parser.add_argument("--attrs", type=at_least(len(PATCHED)), default=200, help="float attributes each")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random data")
    parser.add_argument("--postgresql", metavar="URL", help="also PostgreSQL, against psycopg COPY")
    parser.add_argument("--no-sqlite", action="store_true", help="leave SQLite out")
    parser.add_argument("--repeat", type=at_least(1), default=1, help="runs of each; the medians are printed")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-progress", action="store_true", help="show no progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the SQL part of *argv* (default: the command line), print it; 1 if a check failed, else 0."""
    options = parse_args(argv)
    facts = [  # before the run, as compare.py's header: the time it started, the code it measures
        f"sql scale: {options.n:,} securities x {options.attrs} floats in chunks of {options.chunk:,}, "
        f"seed {options.seed}, repeat {options.repeat}",
        *provenance(),
        *([f"postgresql: {safe_url(options.postgresql)}"] if options.postgresql else []),
    ]
    scale = run_sql_scale(
        options.n,
        attrs=options.attrs,
        seed=options.seed,
        chunk=options.chunk,
        repeat=options.repeat,
        sqlite=not options.no_sqlite,
        postgresql_url=options.postgresql,
        progress=progress_bars(not options.no_progress and sys.stderr.isatty()),
    )
    parts = [
        lines_text([*facts, *(f"note: {note}" for note in scale.notes)], options.markdown),
        render_sql(scale, options.markdown),
        render_targets(targets.sql_outcomes(scale), options.markdown),
    ]
    print("\n\n".join(parts))
    for failure in scale.failures:
        print(f"check failed: {failure.backend}: {failure.step}: {failure.detail}", file=sys.stderr)
    return 1 if scale.failures else 0


if __name__ == "__main__":
    sys.exit(main())
