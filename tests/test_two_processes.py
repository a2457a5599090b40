"""Two processes patching different attributes of the same records at once lose nothing.

Each process builds its own store with ``ss.from_url(url, namespace=...)``, so this
is the cross-process guarantee of API.md's ``patch`` ("concurrent patches of
different attributes never lose each other"), which in-process locks cannot fake.
A backend joins with one entry in ``URLS``: the name of a session fixture that
yields its URL.
"""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any, ClassVar

import pytest
from exact import assert_record

import stockstore as ss

pytestmark = pytest.mark.slow

URLS = [
    pytest.param("sqlite_url", id="sqlite"),
    pytest.param("postgresql_url", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql_url", id="mysql", marks=pytest.mark.mysql),
]

RECORDS, ROUNDS = 50, 20


class Security(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


def _patch_attribute(url: str, namespace: str, attribute: str, start: Any) -> None:
    """One process's share: a batch_patch of every record and a single patch of one, each round."""
    with ss.from_url(url, namespace=namespace) as store:
        store.count(Security)  # connected and ready before the start line
        start.wait()
        for r in range(ROUNDS):
            store.batch_patch(Security, [{"ssm_id": i, attribute: r} for i in range(RECORDS)])
            store.patch(Security, r % RECORDS, {f"{attribute}_single": r})


@pytest.fixture(params=URLS)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def test_two_processes_patching_different_attributes_lose_nothing(url: str) -> None:
    namespace = f"t{uuid.uuid4().hex}"
    with ss.from_url(url, namespace=namespace) as store:
        store.batch_put([Security(ssm_id=i, keep=1.0) for i in range(RECORDS)])
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(2, timeout=120)  # both patch at the same time, not one after the other
        workers = [context.Process(target=_patch_attribute, args=(url, namespace, name, start)) for name in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(240)
        assert [w.exitcode for w in workers] == [0, 0]
        for i, got in enumerate(store.batch_get(Security, range(RECORDS))):
            want = Security(ssm_id=i, keep=1.0, a=ROUNDS - 1, b=ROUNDS - 1)
            if i < ROUNDS:
                want.update(a_single=i, b_single=i)
            assert_record(got, want)
