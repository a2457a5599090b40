"""``stockstore import`` and ``stockstore export``: a family to and from CSV, Parquet and JSON lines.

CSV and Parquet are tables: read with pandas, whose type inference decides (ints
stay ints, floats floats, text str; CSV floats are read back bit for bit), and
written with `put_frame`, so a table means what it means there: an empty cell of a
float column is a NaN attribute, of any other column a ``None`` one.  The key
columns are read as ``--key-type`` says (str by default: ``00123`` stays text).
JSON lines are records as they stand: one object per line, an attribute absent
where the object has no such name, ``NaN`` a float.

Import goes chunk by chunk; a Ctrl-C waits for the chunk under way, then reports
how many records were written and the last key, and exits with 130.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from ._cli_data import (
    FORMATS,
    chunk_at_a_time,
    chunks,
    file_format,
    key_names,
    open_store,
    progress,
    record_class,
    shown_key,
    store_errors,
    store_options,
    to_json,
)
from .errors import StoreError

_DEFAULT_CHUNK = 10_000


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise click.ClickException("CSV and Parquet need pandas: pip install 'stockstore[pandas]'") from exc
    return pandas


def _parquet() -> Any:
    try:
        import pyarrow.parquet
    except ImportError as exc:
        raise click.ClickException("Parquet needs pyarrow: pip install 'stockstore[parquet]'") from exc
    return pyarrow.parquet


def _read(fmt: str, path: Path, cls: type, names: tuple[str, ...], key_type: str, size: int) -> Iterator[Any]:
    """The file's records, chunk by chunk: DataFrames (CSV, Parquet) or lists of records (JSON lines)."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as lines:
            numbered = ((n, line) for n, line in enumerate(lines, 1) if line.strip())
            for chunk in chunks(numbered, size):
                yield [cls(_object(n, line)) for n, line in chunk]
        return
    pd = _pandas()
    if fmt == "csv":
        dtypes = dict.fromkeys(names, "int64" if key_type == "int" else str)
        exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}  # pandas 3: always
        with pd.read_csv(path, chunksize=size, dtype=dtypes, **exact) as reader:
            yield from reader
        return
    for batch in _parquet().ParquetFile(path).iter_batches(batch_size=size):
        yield batch.to_pandas()


def _object(number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise click.ClickException(f"line {number} is not JSON: {exc}") from None
    if type(value) is not dict:
        raise click.ClickException(f"line {number} holds a {type(value).__name__}, not a JSON object (a record)")
    return value


def _total(fmt: str, path: Path) -> int | None:
    return int(_parquet().ParquetFile(path).metadata.num_rows) if fmt == "parquet" else None


def _last_key(batch: Any, names: tuple[str, ...]) -> Any:
    if isinstance(batch, list):
        row: Any = batch[-1]
    else:
        row = batch.iloc[-1]
    values = tuple(row[name] for name in names)
    return values[0] if len(values) == 1 else values


@click.command("import")
@store_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="[default: from the FILE's extension]")
@click.option(
    "--key-type", type=click.Choice(["str", "int"]), default="str", show_default=True, help="The key columns' type."
)
@click.option("--chunk", type=click.IntRange(min=1), default=_DEFAULT_CHUNK, show_default=True, help="Records a write.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(family: str, urls: tuple[str, ...], namespace: str | None, key: str, fmt: str | None, key_type: str,
            chunk: int, file: Path) -> None:  # fmt: skip
    """Store every record of FILE (CSV, Parquet or JSON lines) as a FAMILY record, replacing any of the same key.

    Ctrl-C stops once the chunk under way is written and reports what was.
    """
    names = key_names(key)
    cls = record_class(family, names)
    fmt = file_format(fmt, file)
    written, last = 0, None
    with open_store(urls, namespace) as store, store_errors(names), progress(_total(fmt, file), "import") as bar:
        try:
            for batch in _read(fmt, file, cls, names, key_type, chunk):
                with chunk_at_a_time():
                    try:
                        store.batch_put(batch) if isinstance(batch, list) else store.put_frame(cls, batch)
                    except StoreError as exc:
                        exc.add_note(f"({written:,} records were written before this chunk)")
                        raise
                    written, last = written + len(batch), _last_key(batch, names)
                bar.update(len(batch))
        except KeyboardInterrupt:
            after = "" if last is None else f", the last {shown_key(last)}"
            click.echo(f"interrupted: {written:,} {family} records were written{after}", err=True)
            sys.exit(130)
    click.echo(f"imported {written:,} {family} records from {file}")


@click.command()
@store_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="[default: from the output file's extension]")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file; - for stdout."
)
@click.option("--chunk", type=click.IntRange(min=1), default=_DEFAULT_CHUNK, show_default=True, help="Records a read.")
def export(family: str, urls: tuple[str, ...], namespace: str | None, key: str, fmt: str | None, output: Path,
           chunk: int) -> None:  # fmt: skip
    """Write every record of FAMILY to a CSV, Parquet or JSON-lines file, key attributes first."""
    names = key_names(key)
    cls = record_class(family, names)
    stdout = str(output) == "-"
    fmt = file_format(fmt, None if stdout else output)
    if stdout and fmt == "parquet":
        raise click.UsageError("Parquet goes to a file: give -o FILE")
    with open_store(urls, namespace) as store, store_errors(names):
        keys = list(store.keys(cls))
        with progress(len(keys), "export") as bar:
            if fmt == "jsonl":
                with _opened(output, stdout) as out:
                    for part in chunks(keys, chunk):
                        for record in store.batch_get(cls, part):
                            if record is not None:  # deleted meanwhile
                                out.write(to_json(dict(record)) + "\n")
                        bar.update(len(part))
                return
            pd = _pandas()
            frames = []
            for part in chunks(keys, chunk):
                frames.append(store.get_frame(cls, keys=part))
                bar.update(len(part))
    table = pd.concat(frames).reset_index() if frames else pd.DataFrame(columns=list(names))
    if fmt == "csv":
        with _opened(output, stdout) as out:
            table.to_csv(out, index=False)
    else:
        _parquet()
        table.to_parquet(output, index=False)


@contextlib.contextmanager
def _opened(output: Path, stdout: bool) -> Iterator[TextIO]:
    if stdout:
        yield sys.stdout
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        yield out


COMMANDS = [import_, export]
