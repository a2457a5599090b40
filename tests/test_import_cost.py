"""``import stockstore`` loads no driver: a subprocess proves it on a clean interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

DRIVERS = ["redis", "sqlalchemy", "pymemcache", "pandas", "numpy", "psycopg", "pymysql"]

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
    heavy = {m for m in loaded if m.split(".")[0] in DRIVERS}
    assert heavy == set()


def test_the_probe_would_notice_a_driver() -> None:
    """The check has teeth: importing a driver in the same probe is seen."""
    code = PROBE.replace("store = MemoryStore()", "import sqlalchemy")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "sqlalchemy" in set(json.loads(out))
