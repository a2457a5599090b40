"""The data commands (get, keys, count, delete, import, export) on real stores, through CliRunner and as a process.

Records are written here with the test's own classes; the command knows the family
only by name, and in a subprocess does not define those classes at all.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import stockstore as ss
from stockstore.backends import SqlStore

ROOT = Path(__file__).resolve().parent.parent


class Security(ss.Record):
    __stockstore_keys__: ClassVar = ["ssm_id"]


class USSecurity(Security):
    """A subclass: stored under Security's family with its own class tag."""


class Quote(ss.Record):
    __stockstore_keys__: ClassVar = [("exchange", "ticker")]


class Counted(ss.Record):
    __stockstore_keys__: ClassVar = ["id"]


@pytest.fixture(scope="module")
def cli() -> types.ModuleType:
    import stockstore.cli as module

    return module


@pytest.fixture
def url(tmp_path: Path, namespace: str) -> str:
    return f"sqlite:///{tmp_path / 'data.db'}?namespace={namespace}"


def run(cli: types.ModuleType, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


def same(got: Any, want: Any) -> bool:
    """Equal in type and value; floats by bit pattern (NaN, -0.0)."""
    if type(got) is not type(want):
        return False
    if type(want) is float:
        return struct.pack("<d", got) == struct.pack("<d", want)
    return bool(got == want)


def random_floats(n: int, seed: int) -> list[float]:
    """Floats of every kind: random bit patterns (no NaN: a table's NaN is its empty cell), and the edges."""
    rng = random.Random(seed)
    edges = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), 0.1 + 0.2]
    out = []
    while len(out) < n:
        value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if not math.isnan(value):
            out.append(value)
    return edges + out[: n - len(edges)]


def securities(n: int) -> list[Security]:
    floats = random_floats(n * 2, 3)
    return [
        Security(ssm_id=f"{i:05d}", a1=floats[2 * i], a2=floats[2 * i + 1], n=i * 10**12, s=f's{i},"q"\n')
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- stats


def test_stats_reads_a_sample_twice_and_shows_each_tier(cli: types.ModuleType, url: str) -> None:
    with ss.from_url(url) as store:
        store.batch_put([Security(ssm_id=f"S{i:03d}", a1=float(i)) for i in range(30)])
    result = run(cli, "stats", "Security", "--url", "memory://", "--url", url, "--sample", "20", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["hits"], figures["misses"]) == (40, 0)
    memory, sql = figures["tiers"]
    # Cold: the memory tier misses all 20 and is filled from SQL; warm: it has them all.
    assert (memory["hits"], memory["misses"], memory["fills"]) == (20, 20, 20)
    assert (sql["hits"], sql["misses"]) == (20, 0)
    assert sql["latency_ms"]["read"]["calls"] == 1
    text = run(cli, "stats", "Security", "--url", "memory://", "--url", url, "--sample", "5").output.splitlines()
    assert text[0] == "read 5 Security records twice"
    assert text[2].startswith("tier 0: <MemoryStore namespace=")
    assert "5 hits, 5 misses, 5 fills, 0 errors, read p50" in text[2]
    assert text[3].startswith("tier 1: <SqlStore sqlite:///")
    assert "5 hits, 0 misses" in text[3]


# ---------------------------------------------------------------------------- get, keys, count, delete


def test_get_keys_count_delete(cli: types.ModuleType, url: str) -> None:
    with ss.from_url(url) as store:
        store.batch_put([Security(ssm_id="A", a1=0.1, n=3), USSecurity(ssm_id="B", a1=float("nan"), when="x")])
    result = run(cli, "count", "Security", "--url", url)
    assert (result.exit_code, result.output) == (0, "2\n")
    assert json.loads(run(cli, "count", "Security", "--url", url, "--json").output) == {"count": 2}
    assert sorted(run(cli, "keys", "Security", "--url", url).output.split()) == ["A", "B"]
    assert sorted(json.loads(run(cli, "keys", "Security", "--url", url, "--json").output)) == ["A", "B"]

    result = run(cli, "get", "Security", "A", "B", "--url", url)
    assert result.exit_code == 0
    assert (
        result.output
        == "A\n  ssm_id = 'A'\n  a1 = 0.1\n  n = 3\nB  (USSecurity)\n  ssm_id = 'B'\n  a1 = nan\n  when = 'x'\n"
    )
    result = run(cli, "get", "Security", "B", "Z", "--url", url, "--json")
    assert result.exit_code == 1  # Z is not there
    got = json.loads(result.stdout)
    assert got[1] is None
    assert got[0]["when"] == "x"
    assert math.isnan(got[0]["a1"])
    assert "no Security Z" in result.stderr

    result = run(cli, "delete", "Security", "A", "Z", "--url", url)
    assert (result.exit_code, result.output) == (0, "deleted 1 of 2 Security records\n")
    assert run(cli, "count", "Security", "--url", url).output == "1\n"


def test_a_composite_key_and_int_keys(cli: types.ModuleType, url: str) -> None:
    with ss.from_url(url) as store:
        store.put(Quote(exchange="XNAS", ticker="AAPL", price=1.5))
        store.put(Counted(id=42, hits=1))
    result = run(cli, "get", "Quote", "--key", "exchange,ticker", "XNAS", "AAPL", "--url", url, "--json")
    assert json.loads(result.output) == [{"exchange": "XNAS", "ticker": "AAPL", "price": 1.5}]
    assert run(cli, "keys", "Quote", "--key", "exchange,ticker", "--url", url).output == "XNAS\tAAPL\n"
    assert run(cli, "get", "Quote", "--key", "exchange,ticker", "XNAS", "--url", url).exit_code == 2
    assert run(cli, "get", "Counted", "--key", "id", "42", "--url", url).exit_code == 1  # '42' is not 42
    result = run(cli, "get", "Counted", "--key", "id", "--key-type", "int", "42", "--url", url, "--json")
    assert json.loads(result.output) == [{"id": 42, "hits": 1}]


def test_the_store_comes_from_stockstore_url_and_errors_say_what_to_do(cli: types.ModuleType, url: str) -> None:
    with ss.from_url(url) as store:
        store.put(Security(ssm_id="A"))
    assert run(cli, "count", "Security", env={"STOCKSTORE_URL": f"memory:// {url}"}).output == "1\n"
    result = run(cli, "count", "Security", env={"STOCKSTORE_URL": ""})
    assert result.exit_code == 2
    assert "give --url URL" in result.output
    result = run(cli, "count", "Security", "--url", "sqllite:///x.db")
    assert result.exit_code == 2
    assert "did you mean 'sqlite'?" in result.output
    result = run(cli, "get", "Security", "A", "--key", "id", "--url", url)
    assert result.exit_code == 1
    assert "give --key ATTR" in result.output


def test_namespace_option(cli: types.ModuleType, tmp_path: Path) -> None:
    where = f"sqlite:///{tmp_path / 'ns.db'}"
    with ss.from_url(where, namespace="mine") as store:
        store.put(Security(ssm_id="A"))
    assert run(cli, "count", "Security", "--url", where).output == "0\n"
    assert run(cli, "count", "Security", "--url", where, "--namespace", "mine").output == "1\n"


# ---------------------------------------------------------------------------- import and export


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_then_import_is_exact(cli: types.ModuleType, url: str, tmp_path: Path, fmt: str) -> None:
    written = securities(500)
    with ss.from_url(url) as store:
        store.batch_put(written)
    path = tmp_path / f"out.{fmt}"
    result = run(cli, "export", "Security", "--url", url, "-o", str(path), "--chunk", "64")
    assert result.exit_code == 0, result.output
    other = url.replace("namespace=", "namespace=again")
    result = run(cli, "import", "Security", str(path), "--url", other, "--chunk", "100")
    assert (result.exit_code, result.output) == (0, f"imported 500 Security records from {path}\n")
    with ss.from_url(other) as store:
        for want in written:
            got = store.get(Security, want["ssm_id"])
            assert got is not None
            assert set(got) == set(want)
            for name, value in want.items():
                assert same(got[name], value), (want["ssm_id"], name, got[name], value)


def test_import_infers_types_as_pandas_does(cli: types.ModuleType, url: str, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("ssm_id,price,qty,name,maybe\n00123,1.5,3,x,\n00124,,4,,2.5\n")
    assert run(cli, "import", "Security", str(path), "--url", url).exit_code == 0
    with ss.from_url(url) as store:
        first, second = store.batch_get(Security, ["00123", "00124"])
    assert first is not None
    assert second is not None
    assert [same(first[a], v) for a, v in [("price", 1.5), ("qty", 3), ("name", "x")]] == [True] * 3
    assert math.isnan(first["maybe"])  # an empty cell of a float column: NaN, as put_frame stores it
    assert math.isnan(second["price"])
    assert second["name"] is None  # of a text column: None


def test_jsonl_lines_are_records_as_they_stand(cli: types.ModuleType, url: str, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"ssm_id": "A", "x": NaN, "l": [1, 2.0]}\n\n{"ssm_id": "B", "y": null}\n')
    assert run(cli, "import", "Security", str(path), "--url", url).exit_code == 0
    with ss.from_url(url) as store:
        a, b = store.batch_get(Security, ["A", "B"])
    assert a is not None
    assert math.isnan(a["x"])
    assert a["l"] == [1, 2.0]
    assert type(a["l"][1]) is float
    assert b == Security(ssm_id="B", y=None)
    path.write_text('{"ssm_id": "C"}\n[1]\n')
    result = run(cli, "import", "Security", str(path), "--url", url, "--format", "jsonl")
    assert result.exit_code == 1
    assert "line 2 holds a list" in result.output


def test_a_ctrl_c_during_import_reports_what_was_written(
    cli: types.ModuleType, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"ssm_id": f"K{i:04d}", "v": i / 7}) + "\n" for i in range(1000)))
    real = ss.BaseStore.batch_put
    calls = []

    def interrupted(self: ss.BaseStore, objs: Any) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(self, objs)

    monkeypatch.setattr(ss.BaseStore, "batch_put", interrupted)
    result = CliRunner().invoke(cli.main, ["import", "Security", str(path), "--url", url, "--chunk", "100"])
    assert result.exit_code == 130
    assert "interrupted: 300 Security records were written, the last K0299" in result.stderr
    monkeypatch.undo()
    with ss.from_url(url) as store:
        assert store.count(Security) == 300


# ---------------------------------------------------------------------------- as a process


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stockstore", *args]


def environment(url: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "STOCKSTORE_URL": url}


@pytest.mark.redis
def test_a_process_reads_classes_it_does_not_define(redis_url: str, tmp_path: Path, namespace: str) -> None:
    url = f"{redis_url}?namespace={namespace} sqlite:///{tmp_path / 'p.db'}?namespace={namespace}"
    with ss.from_config(url) as store:
        store.batch_put([USSecurity(ssm_id="B", a1=-0.0), Security(ssm_id="A", a1=2.5)])
    done = subprocess.run(
        command("get", "Security", "A", "B", "--json"),
        env=environment(url),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    a, b = json.loads(done.stdout)
    assert a == {"ssm_id": "A", "a1": 2.5}
    assert same(b["a1"], -0.0)


@pytest.mark.redis
def test_sigint_mid_import_reports_exactly_what_the_store_holds(redis_url: str, tmp_path: Path, namespace: str) -> None:
    database = tmp_path / "big.db"
    url = f"{redis_url}?namespace={namespace} sqlite:///{database}?namespace={namespace}"
    path = tmp_path / "big.csv"
    pd.DataFrame(
        {"ssm_id": [f"S{i:07d}" for i in range(400_000)], **{f"a{j}": [j / 3] * 400_000 for j in range(20)}}
    ).to_csv(path, index=False)
    process = subprocess.Popen(
        command("import", "Security", str(path), "--chunk", "5000"),
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with SqlStore(f"sqlite:///{database}", namespace=namespace) as source:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if source.count(Security) > 0:
                    break
            except ss.errors.StoreError:
                pass  # the table is not there yet
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, (out, err)
        told = err.split("interrupted: ")[1]
        written = int(told.split(" ")[0].replace(",", ""))
        assert 0 < written < 400_000
        assert source.count(Security) == written
        assert told.split("the last ")[1].strip() == f"S{written - 1:07d}"
    with ss.from_config(url) as store:
        assert store.count(Security) == written
