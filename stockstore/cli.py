"""The ``stockstore`` command: a click group whose subcommands are thin shells over library code.

``stockstore bench`` runs the securities analyst's morning (`stockstore._bench`)
and prints its timings.  Only the console script imports this module, so
``import stockstore`` never pays for click or tqdm.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import click
    from tqdm import tqdm
except ImportError as exc:  # pragma: no cover -- exercised in a subprocess by the tests
    raise ImportError(
        f"the stockstore command needs {exc.name!r}: pip install 'stockstore[cli]'", name=exc.name
    ) from exc

from . import _bench
from .errors import BackendUnavailableError, StoreError


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
) -> None:
    """Time the analyst's morning on a store, checking every step.

    Store N securities, get some back, patch a few thousand, list and delete
    them all; print time and records/s per step.  Every read is checked
    exactly against the generated data; the exit code is 1 if any check
    fails.  The run writes only in its own namespace and deletes what it
    wrote, also after a failed check.
    """
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
