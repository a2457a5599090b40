"""Fixtures shared by the test files: servers, a fresh namespace, a fake clock.

The conformance suite itself ships in the package (`stockstore.testing.BackendSuite`);
tests/test_conformance.py certifies each of stockstore's own backends through it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from memcached_servers import memcached_server, memcached_two_servers  # noqa: F401 -- fixtures
from redis_servers import raw, redis_cluster_url, redis_tls_url, redis_url  # noqa: F401 -- fixtures

from stockstore.testing import FakeClock


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str]:
    # Imported late: tests/sql_databases.py is only needed by tests that use a SQL server.
    from sql_databases import sql_database

    with sql_database(kind) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    with _database("sqlite") as url:
        yield url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with _database("postgresql") as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    with _database("mysql") as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real time, so absolute datetimes mean what they say."""
    return FakeClock(float(int(time.time())))


@pytest.fixture
def namespace() -> str:
    """A namespace no other test or run uses."""
    return f"t{uuid.uuid4().hex[:16]}"
