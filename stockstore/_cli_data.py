"""The ``stockstore`` data commands: get, keys, count, delete, import and export records of a family by name.

The command has none of its users' classes: it makes a `Record` class named after
the family, with the key attributes ``--key`` names (stored records do not carry
them), and lets it read records of every class of that family as attributes
(`adopt_classes`).  The store comes from ``--url`` (repeated: tiers, top first) or
``STOCKSTORE_URL`` (tiers separated by whitespace), through `from_config`.

JSON output (``--json``, ``export --format jsonl``) writes floats as Python's json
module does: the shortest text that reads back to the same bits, and NaN, Infinity
and -Infinity as those bare words, which Python, pandas and jq read, strict JSON
parsers not.  Values JSON has no type for are written as text: datetimes and dates
in ISO 8601, decimals as written, bytes as hex.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import click
from tqdm import tqdm

from ._config import from_config
from ._keys import adopt_classes
from ._record import Record
from ._store import BaseStore
from .errors import StoreError

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("csv", "parquet", "jsonl")
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@functools.cache
def record_class(family: str, key: tuple[str, ...]) -> type[Record]:
    """A `Record` class standing for *family*, whose primary key is the attributes *key*.

    A family is stored under its root class's ``__qualname__``; records of its
    subclasses read as instances of subclasses made on the fly, named as stored.
    """
    declared: list[Any] = [key[0] if len(key) == 1 else key]
    cls = type(
        family.rpartition(".")[2],
        (Record,),
        {"__stockstore_keys__": declared, "__qualname__": family, "__module__": __name__},
    )
    adopt_classes(cls)
    return cls


# ---------------------------------------------------------------------------- options every data command takes


def store_options(command: F) -> F:
    """``--url``, ``--namespace`` and ``--key``, the family argument, and a ``store`` and ``cls`` for the command."""
    for option in reversed(
        [
            click.argument("family"),
            click.option(
                "--url",
                "urls",
                multiple=True,
                metavar="URL",
                help="A tier, top first; repeat to chain.  [default: $STOCKSTORE_URL, tiers separated by spaces]",
            ),
            click.option("--namespace", default=None, help="Every tier's namespace, unless its URL sets one."),
            click.option(
                "--key",
                "key",
                default="ssm_id",
                show_default=True,
                metavar="ATTR[,ATTR...]",
                help="The family's primary-key attribute(s); records do not store their names.",
            ),
        ]
    ):
        command = option(command)
    return command


def open_store(urls: Sequence[str], namespace: str | None) -> BaseStore:
    """The store of ``--url`` or ``STOCKSTORE_URL``, or a usage error saying which to give."""
    tiers = list(urls) or os.environ.get("STOCKSTORE_URL", "").split()
    if not tiers:
        raise click.UsageError("no store: give --url URL (repeat it to chain tiers) or set STOCKSTORE_URL")
    config: dict[str, Any] = {"tiers": tiers}
    if namespace is not None:
        config["namespace"] = namespace
    try:
        return from_config(config)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    except StoreError as exc:
        raise click.BadParameter(_told(exc), param_hint="'--url' / STOCKSTORE_URL") from exc


def _told(exc: BaseException) -> str:
    return " ".join([str(exc), *getattr(exc, "__notes__", ())])


def key_names(key: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in key.split(","))
    if not all(names):
        raise click.BadParameter("expected attribute names separated by commas", param_hint="'--key'")
    return names


@contextlib.contextmanager
def store_errors(key: tuple[str, ...]) -> Iterator[None]:
    """A `StoreError` as a one-line message and exit code 1, with a hint when ``--key`` looks wrong."""
    try:
        yield
    except StoreError as exc:
        hint = ""
        if f"has no {'/'.join(key)} attribute" in str(exc):
            hint = f" (are the records keyed by another attribute than {','.join(key)!r}? give --key ATTR)"
        raise click.ClickException(f"{type(exc).__name__}: {_told(exc)}{hint}") from exc


def parse_keys(values: Sequence[str], key: tuple[str, ...], key_type: str) -> list[Any]:
    """Command-line key values as keys: taken *len(key)* at a time for a composite key."""
    if len(values) % len(key):
        raise click.UsageError(f"the key {','.join(key)} has {len(key)} parts: give KEY values in groups of {len(key)}")
    typed: list[Any] = []
    for text in values:
        try:
            typed.append(int(text) if key_type == "int" else text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an int", param_hint="KEY") from None
    if len(key) == 1:
        return typed
    return [tuple(typed[i : i + len(key)]) for i in range(0, len(typed), len(key))]


# ---------------------------------------------------------------------------- JSON


def plain(value: Any) -> Any:
    """*value* as JSON can hold it (see the module docstring)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"no JSON form for {type(value).__qualname__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=plain, ensure_ascii=False)


def shown_key(value: Any) -> str:
    return "\t".join(map(str, value)) if type(value) is tuple else str(value)


# ---------------------------------------------------------------------------- progress and interrupts


def progress(total: int | None, desc: str) -> tqdm:
    """A bar on stderr for long work, shown only on a terminal and after a second."""
    return tqdm(
        total=total, desc=desc, unit="rec", unit_scale=True, delay=1.0, leave=False, file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )  # fmt: skip


@contextlib.contextmanager
def chunk_at_a_time() -> Iterator[None]:
    """Let a first Ctrl-C wait for the chunk under way, so that what was written is known exactly.

    A second Ctrl-C interrupts at once.  Only the main thread receives signals;
    elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def file_format(given: str | None, path: Path | None) -> str:
    if given is not None:
        return given
    found = _EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if found is None:
        raise click.UsageError(f"give --format ({'|'.join(FORMATS)}): the file's extension does not say")
    return found


# ---------------------------------------------------------------------------- commands

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
key_type_option = click.option(
    "--key-type",
    type=click.Choice(["str", "int"]),
    default="str",
    show_default=True,
    help="The type of the KEY values (a key 42 and a key '42' are different records).",
)


@click.command()
@store_options
@key_type_option
@json_option
@click.argument("values", nargs=-1, required=True, metavar="KEY...")
def get(family: str, urls: tuple[str, ...], namespace: str | None, key: str, key_type: str, as_json: bool,
        values: tuple[str, ...]) -> None:  # fmt: skip
    """Print the records of FAMILY under these KEYs, attribute by attribute.

    With --json, a JSON list aligned with the KEYs, null where there is none.
    The exit code is 1 if any KEY has no record.
    """
    names = key_names(key)
    keys = parse_keys(values, names, key_type)
    with open_store(urls, namespace) as store, store_errors(names):
        records = store.batch_get(record_class(family, names), keys)
    if as_json:
        click.echo(to_json([None if r is None else dict(r) for r in records]))
    for wanted, record in zip(keys, records, strict=True):
        if record is None:
            click.echo(f"no {family} {shown_key(wanted)}", err=True)
        elif not as_json:
            kind = type(record).__qualname__
            click.echo(f"{shown_key(wanted)}{'' if kind == family else f'  ({kind})'}")
            for name, value in record.items():
                click.echo(f"  {name} = {value!r}")
    if None in records:
        sys.exit(1)


@click.command()
@store_options
@json_option
def keys(family: str, urls: tuple[str, ...], namespace: str | None, key: str, as_json: bool) -> None:
    """Print every primary key of FAMILY, one a line (a composite key's parts separated by tabs)."""
    names = key_names(key)
    with open_store(urls, namespace) as store, store_errors(names):
        found = store.keys(record_class(family, names))
        if as_json:
            click.echo(to_json([list(k) if type(k) is tuple else k for k in found]))
        else:
            for value in found:
                click.echo(shown_key(value))


@click.command()
@store_options
@json_option
def count(family: str, urls: tuple[str, ...], namespace: str | None, key: str, as_json: bool) -> None:
    """Print how many records FAMILY holds."""
    names = key_names(key)
    with open_store(urls, namespace) as store, store_errors(names):
        held = store.count(record_class(family, names))
    click.echo(to_json({"count": held}) if as_json else str(held))


@click.command()
@store_options
@key_type_option
@json_option
@click.argument("values", nargs=-1, required=True, metavar="KEY...")
def delete(family: str, urls: tuple[str, ...], namespace: str | None, key: str, key_type: str, as_json: bool,
           values: tuple[str, ...]) -> None:  # fmt: skip
    """Delete the records of FAMILY under these KEYs (absent ones are fine) and print how many there were."""
    names = key_names(key)
    keys = parse_keys(values, names, key_type)
    with open_store(urls, namespace) as store, store_errors(names):
        deleted = store.batch_delete(record_class(family, names), keys)
    click.echo(to_json({"deleted": deleted}) if as_json else f"deleted {deleted} of {len(keys)} {family} records")


@click.command()
@store_options
@json_option
@click.option(
    "--sample", type=click.IntRange(min=1), default=1000, show_default=True, help="How many of FAMILY's keys to read."
)
def stats(family: str, urls: tuple[str, ...], namespace: str | None, key: str, as_json: bool, sample: int) -> None:
    """Read a sample of FAMILY's records through the tiers, twice, and print each tier's figures.

    The first read finds the caches as they are, the second as the first left
    them: hits and misses per tier show where records are served from, fills what
    the reads put into the caches, and the read latencies what each tier costs.
    With --json, the whole of ``stats()``: the store's, and each tier's under "tiers".
    """
    names = key_names(key)
    with open_store(urls, namespace) as store, store_errors(names):
        cls = record_class(family, names)
        wanted = list(islice(store.keys(cls), sample))
        for _ in range(2):
            store.batch_get(cls, wanted)
        figures = store.stats()
    if as_json:
        click.echo(to_json(figures))
        return
    rows = [("", figures), *((f"tier {n}: ", tier) for n, tier in enumerate(figures.get("tiers", ())))]
    click.echo(f"read {len(wanted)} {family} records twice")
    for label, one in rows:
        read = one["latency_ms"].get("read")
        latency = "" if read is None else f", read p50 {read['p50']:.2f} ms, p99 {read['p99']:.2f} ms"
        click.echo(
            f"{label}{one['store']}: {one['hits']} hits, {one['misses']} misses, {one['fills']} fills, "
            f"{one['errors']} errors{latency}"
        )


COMMANDS = [get, keys, count, delete, stats]
