"""A third party proves a backend with `stockstore.testing.BackendSuite` alone (API.md section 8).

Their test file, in a directory of their own with no conftest and a strict pytest.ini
(``--strict-markers``, ``filterwarnings = error``), subclasses the suite for `SqlStore`
on a SQLite file there; pytest runs it in a subprocess, and the whole contract passes.
Run again with pandas and numpy shadowed as not installed, only the frame tests skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stockstore.testing._records import UNSUPPORTED

PYTEST_INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings =
    error
"""

THEIR_TESTS = """\
import pytest

from stockstore.backends import SqlStore
from stockstore.testing import BackendSuite


class TestMyStore(BackendSuite):
    def make_store(self, **options):
        return SqlStore({url!r}, **options)
"""

# The stale late fill ChainedStore exists to prevent: this _fill compares versions with live
# copies only, so an older version lands over a newer copy that has expired.
LATE_FILL_TESTS = """\
from stockstore.backends import SqlStore
from stockstore.testing import BackendSuite


class LateFillStore(SqlStore):
    def _fill(self, family, entries, now_ms):
        held = self._read(family, [e.key for e in entries], now_ms)
        fresh = [e for e, h in zip(entries, held) if h is None or h.version < e.version]
        if fresh:
            self._write(family, fresh, now_ms)


class TestLateFillStore(BackendSuite):
    def make_store(self, **options):
        return LateFillStore({url!r}, **options)
"""

# The kit's tests of fill tokens, which skip for a store that gives none (gives_fill_tokens = False).
TOKEN_TESTS = 5

# The kit's tests of numpy scalars as values, which skip without numpy.
NUMPY_SCALAR_TESTS = 1

# Shadows a real package in the second run: importing it fails as if it were not installed.
MISSING = 'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'


def run_their_suite(
    directory: Path, *, without_pandas: bool = False, tests: str = THEIR_TESTS, options: tuple[str, ...] = ()
) -> dict[str, int]:
    """Write their project into *directory*, run pytest on it, and return the summary's counts."""
    directory.mkdir()
    (directory / "pytest.ini").write_text(PYTEST_INI)
    (directory / "test_my_store.py").write_text(tests.format(url=f"sqlite:///{directory / 'store.db'}"))
    path = [str(Path(__file__).parent.parent)]  # this checkout's stockstore, as if installed for them
    if without_pandas:
        shadows = directory / "shadows"
        shadows.mkdir()
        for name in ("pandas", "numpy"):
            (shadows / f"{name}.py").write_text(MISSING.format(name=name))
        path.insert(0, str(shadows))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYTEST", "PYTHON"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", *options, "test_my_store.py"],
        cwd=directory,
        env={**env, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?([\w ,]+) in [\d.]+s( \([\d:]+\))? ?=*", summary), output[-3000:]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    assert done.returncode == (1 if counts.get("failed") else 0), output[-3000:]
    counts.update((f"FAILED {name}", 1) for name in re.findall(r"^FAILED \S+::(\w+)", done.stdout, re.MULTILINE))
    return counts


@pytest.fixture(scope="module")
def with_pandas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The outcome of their run, with every extra installed."""
    return run_their_suite(tmp_path_factory.mktemp("kit") / "theirs")


@pytest.mark.slow
def test_a_third_party_backend_passes_the_whole_suite(with_pandas: dict[str, int]) -> None:
    assert with_pandas.get("passed", 0) > 200, with_pandas
    # Nothing failed or warned; the one gap skipped is the default's: no fill tokens (SqlStore loses nothing).
    assert with_pandas == {"passed": with_pandas["passed"], "skipped": TOKEN_TESTS}, with_pandas


@pytest.mark.slow
def test_without_pandas_only_the_frame_tests_skip(with_pandas: dict[str, int], tmp_path: Path) -> None:
    without = run_their_suite(tmp_path / "theirs", without_pandas=True)
    assert without.get("failed", 0) == 0, without
    assert without.keys() == {"passed", "skipped"}, without
    numpy_values = sum(name.startswith("numpy_") for name in UNSUPPORTED)  # numpy scalars to refuse: none here
    everything = with_pandas["passed"] + with_pandas["skipped"]
    assert without["passed"] + without["skipped"] == everything - numpy_values, (without, with_pandas)
    frame_tests = without["skipped"] - TOKEN_TESTS - NUMPY_SCALAR_TESTS
    assert 20 < frame_tests < with_pandas["passed"] // 4, without  # the frame tests, and only they


@pytest.mark.slow
def test_a_backend_whose_fill_lands_over_an_expired_newer_copy_fails(tmp_path: Path) -> None:
    late = run_their_suite(tmp_path / "theirs", tests=LATE_FILL_TESTS, options=("-k", "fill or tombstone or tier"))
    assert late.get("failed", 0) >= 1, late
    assert "FAILED test_an_older_fill_never_replaces_an_expired_newer_copy" in late, late
    assert "FAILED test_an_older_fill_never_replaces_a_newer_copy" not in late, late  # live copies are compared
