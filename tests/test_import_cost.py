"""``import stockstore`` loads no driver, nor pytest: a subprocess proves it on a clean interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

DRIVERS = ["redis", "sqlalchemy", "pymemcache", "pandas", "numpy", "psycopg", "pymysql"]
# Nor what the conformance suite needs: stockstore.testing is imported only by tests.
NOT_LOADED = [*DRIVERS, "pytest", "_pytest"]

PROBE = """
import json, sys
import stockstore
from stockstore.backends import MemoryStore, ThreadLocalStore
store = MemoryStore()
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules() -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


def test_import_loads_no_driver() -> None:
    loaded = loaded_modules()
    assert "stockstore.backends.memory" in loaded  # the probe did reach the backend
    heavy = {m for m in loaded if m.split(".")[0] in NOT_LOADED}
    assert heavy == set()
    assert "stockstore.testing" not in loaded


def test_the_probe_would_notice_a_driver() -> None:
    """The check has teeth: importing a driver in the same probe is seen."""
    code = PROBE.replace("store = MemoryStore()", "import sqlalchemy")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "sqlalchemy" in set(json.loads(out))


def test_the_probe_would_notice_the_test_kit() -> None:
    """The same for the test kit: importing it in the probe loads pytest, and is seen."""
    code = PROBE.replace("store = MemoryStore()", "from stockstore.testing import BackendSuite")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert {"pytest", "stockstore.testing"} <= set(json.loads(out))


def test_the_kit_helpers_need_no_pytest() -> None:
    """`FakeClock` and the strict comparisons come without pytest; only `BackendSuite` needs it."""
    code = PROBE.replace("store = MemoryStore()", "from stockstore.testing import FakeClock, assert_same")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(json.loads(out))
    assert "stockstore.testing" in loaded
    assert {m for m in loaded if m.split(".")[0] in NOT_LOADED} == set()
