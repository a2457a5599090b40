"""The ``stockstore`` command: a click group whose subcommands are thin shells over library code.

``stockstore bench`` runs the securities analyst's morning (`stockstore._bench`)
and prints its timings; ``stockstore bench --compare`` runs the comparison harness
of a source checkout, ``benchmarks/compare.py``, which is no part of the package.
Only the console script imports this module, so ``import stockstore`` never pays for
click or tqdm.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

try:
    import click
    from tqdm import tqdm
except ImportError as exc:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        f"the stockstore command needs {exc.name!r}: pip install 'stockstore[cli]'", name=exc.name
    ) from exc

from . import _bench
from .errors import BackendUnavailableError, StoreError

# The comparison harness, where a source checkout has it next to the package (an editable install).
_HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


@click.group()
@click.version_option(package_name="stockstore")
def main() -> None:
    """stockstore: wide analytics records in tiered storage."""


def _progress(disabled: bool) -> _bench.Progress:
    """Progress bars on stderr that appear only once a step has run for a second."""

    @contextlib.contextmanager
    def bar(step: str, total: int) -> Iterator[_bench.Advance]:
        with tqdm(
            total=total,
            desc=step,
            unit="rec",
            unit_scale=True,
            delay=1.0,
            leave=False,
            file=sys.stderr,
            disable=disabled,
        ) as shown:
            yield shown.update

    return bar


# Parameter -> option, for the options that belong to one mode of `bench` only.
_OPTION = {
    "urls": "--store",
    "db": "--db",
    "namespace": "--namespace",
    "redis_url": "--redis",
    "postgresql_url": "--postgresql",
    "legacy_n": "--legacy-n",
    "repeat": "--repeat",
    "markdown": "--markdown",
    "sql_n": "--sql-n",
    "sql_chunk": "--sql-chunk",
    "main_job": "--main-job",
    "find_n": "--find-n",
}


@main.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=100_000, show_default=True, help="Securities to store.")
@click.option("--attrs", type=click.IntRange(min=2), default=200, show_default=True, help="Float attributes each.")
@click.option(
    "--patch-n", type=click.IntRange(min=0), default=10_000, show_default=True, help="Securities to patch (at most N)."
)
@click.option(
    "--get-n", type=click.IntRange(min=0), default=1_000, show_default=True, help="Securities to batch_get (at most N)."
)
@click.option("--seed", type=int, default=_bench.DEFAULT_SEED, show_default=True, help="Seed of the random data.")
@click.option(
    "--store",
    "urls",
    multiple=True,
    metavar="URL",
    help="A tier, top to bottom; repeat to chain (memory://, sqlite:///f.db, redis://...). "
    "Default: memory over a SQLite file.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"SQLite file of the embedded default.  [default: {_bench.DEFAULT_DB}]",
)
@click.option("--namespace", default=None, help="Namespace to run in.  [default: a fresh random one]")
@click.option("--no-progress", is_flag=True, help="Show no progress bars.")
@click.option(
    "--compare",
    is_flag=True,
    help="Run every backend next to the best plain baselines a user writes by hand instead: "
    "benchmarks/compare.py of a source checkout, with these options (see docs/performance.md).",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    help="With --compare: the Redis of the baselines and Redis stores.  [default: redis://127.0.0.1:6379/0]",
)
@click.option("--postgresql", "postgresql_url", metavar="URL", help="With --compare: also SqlStore on this PostgreSQL.")
@click.option(
    "--legacy-n",
    type=click.IntRange(min=1),
    help="With --compare: securities for the slow legacy baseline (b).  [default: 10000]",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --compare: runs of each backend; the medians are printed.",
)
@click.option("--markdown", is_flag=True, help="With --compare: print Markdown tables.")
@click.option(
    "--sql-n",
    type=click.IntRange(min=1),
    help="With --compare: also store this many records in SqlStore next to the raw driver, chunk by chunk.",
)
@click.option(
    "--sql-chunk", type=click.IntRange(min=1), help="With --compare: records per chunk of --sql-n.  [default: 50000]"
)
@click.option(
    "--main-job",
    type=(click.IntRange(min=1), click.IntRange(min=1)),
    metavar="SMALL LARGE",
    help="With --compare: also time this command's store step at these two sizes (records/s kept).",
)
@click.option(
    "--find-n",
    type=click.IntRange(min=1),
    help="With --compare: also time find, count and reset on this many securities with 3 indexed attributes.",
)
def bench(
    n: int,
    attrs: int,
    patch_n: int,
    get_n: int,
    seed: int,
    urls: tuple[str, ...],
    db: Path | None,
    namespace: str | None,
    no_progress: bool,
    compare: bool,
    redis_url: str | None,
    postgresql_url: str | None,
    legacy_n: int | None,
    repeat: int,
    markdown: bool,
    sql_n: int | None,
    sql_chunk: int | None,
    main_job: tuple[int, int] | None,
    find_n: int | None,
) -> None:
    """Time the analyst's morning on a store, checking every step.

    Store N securities, get some back, patch a few thousand, list and delete
    them all; print time and records/s per step.  Every read is checked
    exactly against the generated data; the exit code is 1 if any check
    fails.  The run writes only in its own namespace and deletes what it
    wrote, also after a failed check.

    With --compare, every backend runs the same steps in one process, next
    to plain baselines written by hand with redis-py and msgpack: pipelined SET
    (a), the legacy HSET per security (b), MSET in chunks (c) and pipelined HSET
    (d); each ratio is against the best plain baseline of its layout, and the
    report ends with the speed targets, met or not.  This runs
    benchmarks/compare.py of a source checkout with the options given.
    """
    context = click.get_current_context()
    given = [name for name in _OPTION if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if compare:
        for name in set(given) & {"urls", "db", "namespace"}:
            raise click.UsageError(f"{_OPTION[name]} does not go with --compare: it picks its own stores")
        _run_comparison(context)
    for name in set(given) & {
        "redis_url",
        "postgresql_url",
        "legacy_n",
        "repeat",
        "markdown",
        "sql_n",
        "sql_chunk",
        "main_job",
        "find_n",
    }:
        raise click.UsageError(f"{_OPTION[name]} needs --compare")
    if db is not None and urls:
        raise click.UsageError("--db is the embedded default's SQLite file; with --store give a sqlite:/// URL instead")
    namespace = namespace or _bench.fresh_namespace()
    try:
        store = _bench.open_store(urls, db=db or _bench.DEFAULT_DB, namespace=namespace)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    except BackendUnavailableError as exc:
        raise click.ClickException(f"cannot reach the store: {exc}") from exc
    except (StoreError, TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--store'") from exc

    click.echo(f"store: {store!r}")
    click.echo(f"{n:,} securities x {attrs} floats, patch {min(patch_n, n):,}, get {min(get_n, n):,}, seed {seed}")
    progress = _progress(no_progress or not sys.stderr.isatty())
    with store:
        try:
            results = _bench.run_scenario(
                store, n=n, attrs=attrs, patch_n=patch_n, get_n=get_n, seed=seed, progress=progress
            )
        except _bench.CheckFailed as failed:
            click.echo(_bench.render(failed.results))
            click.echo(f"check failed: {failed}", err=True)
            for note in getattr(failed, "__notes__", ()):
                click.echo(note, err=True)
            sys.exit(1)
        except StoreError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    click.echo(_bench.render(results))
    deleted = next(r.records for r in results if r.step == "delete")
    click.echo(f"deleted {deleted:,} securities; every check passed")


def _run_comparison(context: click.Context) -> NoReturn:
    """``bench --compare``: run ``benchmarks/compare.py`` with the options given, and exit with its exit code.

    The harness and its hand-written baselines live beside the package, not in it; this
    keeps the command that docs and issues quote working from a checkout.  Options left
    at their default are not passed, so the harness's own defaults apply.
    """
    if not _HARNESS.is_file():
        raise click.ClickException(
            f"--compare runs benchmarks/compare.py of a stockstore source checkout, and there is none at {_HARNESS}: "
            "clone the stockstore repository and run 'python benchmarks/compare.py' in it "
            "(or 'pip install -e' the clone and run this again)"
        )
    args: list[str] = []
    for param in context.command.params:
        name = param.name or ""
        if name == "compare" or context.get_parameter_source(name) is click.core.ParameterSource.DEFAULT:
            continue
        is_flag = isinstance(param, click.Option) and param.is_flag
        value = context.params[name]
        args += [param.opts[0]] if is_flag else [param.opts[0], *map(str, value if type(value) is tuple else [value])]
    sys.exit(subprocess.run([sys.executable, str(_HARNESS), *args], check=False).returncode)
