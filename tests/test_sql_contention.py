"""Four processes patching overlapping batches of the same records: no call fails, nothing is lost.

The cross-process half of docs/backends.md's "Transactions": batches lock their rows
in id order, so concurrent batches never deadlock, on SQLite, PostgreSQL and
MariaDB.  Each process patches an attribute of its own with its call counter, over
its own subsets of 400 shared keys (half of them new at first, so the patches also
create records): overlapping, unequal sets of rows, as real batches are.  Every
`BackendUnavailableError` or `BatchError` counts, and the final records show whether
every acknowledged patch landed.  Published as scenario 15 of docs/reliability.md.

`test_a_batch_waits_for_no_row_it_does_not_write` pins the cause down on the servers:
while another transaction holds one record's row, every write primitive over most
of the other records finishes at once.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from faults import Attempt, publish
from sql_databases import KINDS

import stockstore as ss
from stockstore._codec import encode_record
from stockstore._entry import Entry
from stockstore._keys import encode_key, family_of
from stockstore.backends import SqlStore
from stockstore.errors import BackendUnavailableError, BatchError

pytestmark = pytest.mark.slow

PROCESSES, KEYS, CALLS = 4, 400, 36


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id", "isin"]


def _subset(process: int, call: int) -> list[int]:
    """The keys of one call: 100 to 400 of the shared keys, the same in every run."""
    rng = random.Random(f"{process}/{call}")
    return rng.sample(range(KEYS), rng.randint(100, KEYS))


class _Retries(logging.Handler):
    """Counts the transactions SqlStore ran again (its DEBUG line per retry)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen[record.getMessage()] += 1


def _worker(url: str, namespace: str, process: int, start: Any, results: Any) -> None:
    """Patch ``p<process>`` = call number over each call's keys; report what was acknowledged."""
    retries = _Retries()
    logger = logging.getLogger("stockstore.backends.sql")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(retries)
    acknowledged: dict[int, int] = {}  # key -> the last call acknowledged for it
    failed: dict[int, list[int]] = {}  # key -> calls that raised (their outcome is unknown)
    errors: list[str] = []
    with SqlStore(url, namespace=namespace) as store:
        store.get(Security, 0)  # connected and ready before the start line
        start.wait()
        began = time.perf_counter()
        for call in range(CALLS):
            keys = _subset(process, call)
            try:
                store.batch_patch(Security, [{"ssm_id": k, f"p{process}": call} for k in keys])
            except (BackendUnavailableError, BatchError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                for k in keys:
                    failed.setdefault(k, []).append(call)
            else:
                acknowledged.update(dict.fromkeys(keys, call))
        seconds = time.perf_counter() - began
    results.put((process, acknowledged, failed, errors, dict(retries.seen), seconds))


@pytest.mark.parametrize("kind", KINDS)
def test_processes_patching_overlapping_batches_never_fail_or_lose(kind: str, request: pytest.FixtureRequest) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    namespace = f"t{uuid.uuid4().hex[:16]}"
    with SqlStore(url, namespace=namespace) as store:
        store.batch_put([Security(ssm_id=k, isin=f"XS{k:010d}", keep=1.0) for k in range(0, KEYS, 2)])
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES, timeout=120)
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(url, namespace, n, start, results)) for n in range(PROCESSES)]
    for w in workers:
        w.start()
    reports = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    with SqlStore(url, namespace=namespace) as store:
        final = dict(zip(range(KEYS), store.batch_get(Security, range(KEYS)), strict=True))
        count = store.count(Security)
    lost = 0  # (key, process) pairs whose acknowledged patch is not in the record
    for process, acknowledged, failed, _, _, _ in reports:
        for k, call in acknowledged.items():
            record = final[k]
            got = None if record is None else record.get(f"p{process}")
            later = [c for c in failed.get(k, []) if c > call]  # a failed call may have landed after all
            if got != call and got not in later:
                lost += 1
    errors = [e for report in reports for e in report[3]]
    retried: Counter[str] = Counter()
    for report in reports:
        retried.update(report[4])
    publish(
        "15-overlapping-batch-patches",
        database=kind,
        calls=PROCESSES * CALLS,
        errors=len(errors),
        lost=lost,
        retried=sum(retried.values()),
        retried_after=dict(retried),
        seconds=round(max(r[5] for r in reports), 1),
        first_errors=errors[:3],
    )
    assert errors == []
    assert lost == 0
    assert count == KEYS  # every key was patched by some call, and created once
    for k, record in final.items():
        assert record is not None
        assert (record.get("isin"), record.get("keep")) == ((f"XS{k:010d}", 1.0) if k % 2 == 0 else (None, None))


# ---------------------------------------------------------------------------- no wait for a row not written


def _id(key: int) -> bytes:
    return hashlib.sha256(encode_key((key,))).digest()


def _entries(keys: list[int], version: int, isin: Callable[[int], str]) -> list[Entry]:
    family = family_of(Security)
    out = []
    for k in keys:
        record = Security(ssm_id=k, isin=isin(k), filled=True)
        payload = encode_record(family.tag(Security), dict(record))
        out.append(Entry(payload, version, None, encode_key((k,)), family.alternates_of(record)))
    return out


@pytest.mark.parametrize("kind", [k for k in KINDS if k.id != "sqlite"])  # SQLite: one writer at a time
def test_a_batch_waits_for_no_row_it_does_not_write(kind: str, request: pytest.FixtureRequest) -> None:
    """Another transaction holds one record's row: batches over three quarters of the others finish at once.

    A batch that waited for a row it does not write, while holding rows it does,
    is half of a deadlock: two batches over overlapping sets of rows would each
    wait for the other.
    """
    url = str(request.getfixturevalue(f"{kind}_url"))
    family = family_of(Security)
    held_key = 5
    others = [k for k in range(KEYS) if k != held_key]
    some = [k for k in others if k % 4]  # 3 in 4, existing and (past 300) new ones
    now_ms = time.time() * 1000
    with SqlStore(url, namespace=f"t{uuid.uuid4().hex[:16]}") as store:
        store.batch_put([Security(ssm_id=k, isin=f"XS{k}") for k in range(300)])
        calls: dict[str, Callable[[], Any]] = {
            "batch_put": lambda: store.batch_put([Security(ssm_id=k, isin=f"XS{k}", put=1) for k in some]),
            "batch_patch": lambda: store.batch_patch(Security, [{"ssm_id": k, "patched": 1} for k in some]),
            # A fill newer than every record, moving each alternate key to the next record
            # (the record holding it is removed), and an invalidation, as a chain's upper tier sees them.
            "fill": lambda: store._fill(family, _entries(some, 2**62, lambda k: f"XS{k + 1}"), now_ms),
            "invalidate": lambda: store._invalidate(family, [encode_key((k,)) for k in some], 2**62 + 1, 2**62),
            "batch_delete": lambda: store.batch_delete(Security, some),
        }
        table = sa.table(store.table_name(Security), sa.column("id"))
        lock = sa.select(table.c.id).where(table.c.id == _id(held_key)).with_for_update()
        waited = []
        holder = sa.create_engine(url)
        try:
            for name, call in calls.items():
                with holder.connect() as conn:
                    assert len(conn.execute(lock).all()) == 1  # held until this connection rolls back
                    attempt = Attempt(call, name)
                    if not attempt.wait(5.0):
                        waited.append(name)
                conn.close()  # rolled back: a call that waited goes through now
                assert attempt.wait(30.0)
                assert attempt.error is None, (name, attempt.error)
        finally:
            holder.dispose()
        assert waited == []
