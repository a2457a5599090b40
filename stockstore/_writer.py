"""Batch writes, streamed: each chunk is encoded while the one before it is written.

Also what a write applied only in part raises (`failure`), for batches and patches alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from ._entry import Entry, PartialWrite
from ._keys import Family, decode_key, short_str
from .errors import BackendUnavailableError, BatchError, StoreError

T = TypeVar("T")

Encoded = tuple[list[Entry], list[bytes]]
"""A chunk's entries to write, and the keys whose lifetime has already ended (to remove)."""
Chunk = tuple[Family, list[bytes], Callable[[], Encoded]]
"""A chunk of a batch write: its family, its primary keys, and how to encode it."""


class BatchTransaction(Protocol):
    """A store's transaction shared by the chunks of one batch write (see `BaseStore._batch_transaction`).

    It commits after some chunks, not after each; a chunk that fails takes back every
    chunk since the last commit, and raises a `PartialWrite` naming all of their keys.
    """

    def chunk(self, keys: list[bytes], work: Callable[[], None]) -> None:
        """Run *work*, the writes of the chunk of *keys*, in the shared transaction (the next chunk, in order)."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run *callback* once what was written so far is committed; never, if it is taken back."""


def write_chunks(
    chunks: Sequence[Chunk],
    write: Callable[[Family, Encoded], None],
    *,
    threaded: bool,
    total: int,
    what: str,
    single: bool,
) -> None:
    """Encode and `write` *chunks* in order, the next one encoded while the last one is written.

    With *threaded* and several chunks, the writes run on one writer thread: it
    waits for the server with the GIL released, so the server's work overlaps the
    encoding of the next chunk (both cores busy).  A chunk that fails names itself
    and every chunk after it, encoded or not, in the error: none of those were
    written.  *total* and *what* word that error ("3 of 5000 records were not written").
    """
    with contextlib.ExitStack() as stack:
        pool = None
        if threaded and len(chunks) > 1:
            pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="stockstore-writer"))
        pending: tuple[int, Future[None]] | None = None
        for index, (family, _, encode) in enumerate(chunks):
            encoded = encode()
            if pending is not None:
                _settle(chunks, *pending, total, what, single=single)
            if pool is None:
                pending = (index, _run_now(write, family, encoded))
            else:
                pending = (index, pool.submit(write, family, encoded))
        if pending is not None:
            _settle(chunks, *pending, total, what, single=single)


def _settle(chunks: Sequence[Chunk], index: int, write: Future[None], total: int, what: str, *, single: bool) -> None:
    """Wait for the write of chunk *index*; if it failed, raise for it and every chunk after it."""
    try:
        write.result()
    except (PartialWrite, StoreError) as exc:
        if not isinstance(exc, PartialWrite) and index == 0:
            raise  # the primitive applied nothing, and nothing was written before it
        family, keys, _ = chunks[index]
        failed = [(family, exc.failed if isinstance(exc, PartialWrite) else keys)]
        failed += [(f, ks) for f, ks, _ in chunks[index + 1 :]]
        error = failure(failed, exc, total, what, single=single)
        if error is exc:
            raise
        raise error from error.__cause__


def _run_now(write: Callable[[Family, Encoded], None], family: Family, encoded: Encoded) -> Future[None]:
    """The write run here and now, as a finished future (what the writer thread would return)."""
    done: Future[None] = Future()
    try:
        write(family, encoded)
    except BaseException as exc:  # handed on through the future, as from the writer thread
        done.set_exception(exc)
    else:
        done.set_result(None)
    return done


def failure(
    failed: list[tuple[Family, list[bytes]]], exc: BaseException, total: int, what: str, *, single: bool
) -> BaseException:
    """What a write that was applied only in part raises; *failed* lists what was not applied.

    A single record raises the cause itself; so does a batch of which nothing is
    known to be applied because the backend was unreachable.  Anything else is a
    `BatchError` naming the keys not applied.
    """
    cause = exc.__cause__ if isinstance(exc, PartialWrite) else exc
    keys = [k for family, ks in failed for k in public_keys(family, ks)]
    if isinstance(cause, StoreError) and (
        single or (len(keys) == total and isinstance(cause, BackendUnavailableError))
    ):
        return cause
    error = BatchError(f"{len(keys)} of {total} {what}: {cause}", keys)
    error.__cause__ = cause
    return error


def public_keys(family: Family, keys: Iterable[bytes]) -> list[Any]:
    """Encoded primary keys as users see them (see `Family.public_key`).

    Thousands at a time (a listing, a query's answer): a key of one short str,
    most keys, is read without a tuple made and taken apart again.
    """
    if len(family.primary) != 1:
        return [family.public_key(decode_key(k)) for k in keys]
    out: list[Any] = []
    for key in keys:
        text = short_str(key)
        out.append(family.public_key(decode_key(key)) if text is None else text)
    return out


def public_key(family: Family, key: bytes) -> Any:
    """One encoded primary key as users see it, for a message: its bytes if they are no key."""
    try:
        return family.public_key(decode_key(key))
    except StoreError:
        return key


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """*items* in lists of *size* (the last one shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
