"""Fresh SQL databases for the tests: a SQLite file, or a new database on a real server.

``STOCKSTORE_TEST_POSTGRESQL_URL`` / ``STOCKSTORE_TEST_MYSQL_URL`` name an admin URL
(a user that may create databases); without them the local servers are used
(``postgres@127.0.0.1:5432``, ``root@127.0.0.1:3306``). Each session creates
``stockstore_test_<random>`` there and drops it at the end, so runs never see each
other's data. An unreachable server skips the tests, unless ``CI`` or
``STOCKSTORE_REQUIRE_SERVERS`` is set: then the environment promised it, and they fail.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

ENV = {"postgresql": "STOCKSTORE_TEST_POSTGRESQL_URL", "mysql": "STOCKSTORE_TEST_MYSQL_URL"}
LOCAL = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
# The kinds of database a test runs on, as parameters of a fixture that asks for `<kind>_url`.
KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
# The drivers SqlStore gives a driverless URL (see docs/backends.md).
DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("STOCKSTORE_REQUIRE_SERVERS"))


def admin_url(kind: str) -> sa.URL:
    """The URL tests connect with to create databases on the *kind* server."""
    url = sa.make_url(os.environ.get(ENV[kind]) or LOCAL[kind])
    return url.set(drivername=DRIVERS.get(url.drivername, url.drivername))


@contextlib.contextmanager
def sql_database(kind: str) -> Iterator[str]:
    """A SQLAlchemy URL string of an empty database of *kind* ("sqlite", "postgresql", "mysql")."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="stockstore-") as directory:
            yield f"sqlite:///{Path(directory) / 'stockstore.db'}"
        return
    admin = admin_url(kind)
    name = f"stockstore_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")  # a name made here, not user input
    except sa.exc.OperationalError as exc:
        engine.dispose()
        message = f"no {kind} server at {admin.render_as_string(hide_password=True)}: {exc.orig}"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""  # PostgreSQL 13+: ends leftover sessions
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        engine.dispose()
