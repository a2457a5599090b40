"""`stockstore bench`: the scenario's checks have teeth, and the command's exit codes mean what they say.

The scenario (`stockstore._bench`) is tested as a function on small stores, including
deliberately broken ones; the command through click's `CliRunner` and, once, through
the installed console script.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import re
import subprocess
import sys
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import stockstore
from stockstore import _bench
from stockstore._bench import CheckFailed, Security, StepResult, generate, render, run_scenario
from stockstore._keys import family_of
from stockstore.backends import MemoryStore
from stockstore.errors import BackendUnavailableError

STEPS = ["store", "get batch", "get single", "patch", "patch check", "list", "delete"]
SMALL = ["--n", "2000", "--attrs", "20", "--patch-n", "500"]
SMALL_RECORDS = {
    "store": 2000,
    "get batch": 1000,
    "get single": _bench.SINGLE_GETS,
    "patch": 500,
    "patch check": 500,
    "list": 2000,
    "delete": 2000,
}
ROW = re.compile(r"^(?P<step>[a-z][a-z ]*?)\s+(?P<records>[\d,]+)\s+(?P<seconds>\d+\.\d{3})\s+(?P<rate>[\d,]+|inf)$")


@pytest.fixture(scope="module")
def cli() -> types.ModuleType:
    """`stockstore.cli`, imported by the tests that need it (only the console script does otherwise)."""
    import stockstore.cli as module

    return module


def table(output: str) -> dict[str, tuple[int, float, str]]:
    """The bench table's rows in *output*: step -> (records, seconds, records/s as printed)."""
    rows = {}
    for line in output.splitlines():
        if (m := ROW.match(line)) is not None:
            rows[m["step"]] = (int(m["records"].replace(",", "")), float(m["seconds"]), m["rate"])
    return rows


def assert_full_table(output: str) -> None:
    rows = table(output)
    assert list(rows) == STEPS, output
    for step, (records, seconds, rate) in rows.items():
        assert records == SMALL_RECORDS[step], step
        assert seconds >= 0.0
        assert rate == "inf" or int(rate.replace(",", "")) > 0


def bench(cli: types.ModuleType, *args: str) -> Result:
    return CliRunner().invoke(cli.main, ["bench", "--no-progress", *args])


# ---------------------------------------------------------------------------- the scenario


class RecordingProgress:
    """A `Progress` that remembers, per step, the total announced and the advances made."""

    def __init__(self) -> None:
        self.steps: dict[str, tuple[int, list[int]]] = {}

    @contextlib.contextmanager
    def __call__(self, step: str, total: int) -> Iterator[_bench.Advance]:
        advances: list[int] = []
        self.steps[step] = (total, advances)
        yield advances.append


def test_scenario_times_every_step_and_leaves_nothing_behind() -> None:
    store = MemoryStore()
    results = run_scenario(store, n=2000, attrs=20, patch_n=500, get_n=1000, seed=7)
    assert [r.step for r in results] == STEPS
    assert {r.step: r.records for r in results} == SMALL_RECORDS
    assert all(type(r.seconds) is float and r.seconds >= 0.0 for r in results)
    assert store.count(Security) == 0
    assert list(store.keys(Security)) == []


def test_clean_up_deletes_only_what_the_run_wrote() -> None:
    """Someone else's security in the namespace fails the listing check, and survives the clean-up."""
    store = MemoryStore()
    theirs = Security(ssm_id="THEIRS", a0=-0.0)
    store.put(theirs)
    with pytest.raises(CheckFailed, match="'THEIRS' was never stored") as failed:
        run_scenario(store, n=300, attrs=3, patch_n=100, get_n=50, seed=1)
    assert failed.value.check == "list"
    assert list(store.keys(Security)) == ["THEIRS"]
    kept = store.get(Security, "THEIRS")
    assert kept == theirs
    assert kept is not None
    assert math.copysign(1.0, kept["a0"]) == -1.0


def test_bounds_patch_and_get_by_n() -> None:
    results = run_scenario(MemoryStore(), n=5, attrs=2, patch_n=10_000, get_n=1_000, seed=1)
    assert {r.step: r.records for r in results} == {
        "store": 5,
        "get batch": 5,
        "get single": 5,
        "patch": 5,
        "patch check": 5,
        "list": 5,
        "delete": 5,
    }


def test_progress_advances_to_each_steps_total() -> None:
    progress = RecordingProgress()
    run_scenario(MemoryStore(), n=25_001, attrs=2, patch_n=12_345, get_n=3, seed=1, progress=progress)
    # Batched steps advance chunk by chunk, so a bar moves during a long step.
    assert progress.steps["store"] == (25_001, [10_000, 10_000, 5_001])
    assert progress.steps["patch"] == (12_345, [10_000, 2_345])
    for step, (total, advances) in progress.steps.items():
        assert sum(advances) == total, step
    assert set(progress.steps) == {"generate", "store", "get batch", "patch", "patch check", "list", "delete"}


def test_generated_data_is_seeded_and_exactly_float() -> None:
    first, again, other = generate(3, 4, 11), generate(3, 4, 11), generate(3, 4, 12)
    assert [s["ssm_id"] for s in first] == ["SEC0000000001", "SEC0000000002", "SEC0000000003"]
    assert first == again
    assert first != other
    assert all(type(s) is Security and list(s) == ["ssm_id", "a0", "a1", "a2", "a3"] for s in first)
    assert all(type(s[f"a{j}"]) is float for s in first for j in range(4))


@pytest.mark.parametrize(
    "options", [{"n": 0}, {"attrs": 1}, {"patch_n": -1}, {"get_n": -1}], ids=lambda o: next(iter(o))
)
def test_rejects_impossible_sizes(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="need n >= 1"):
        run_scenario(MemoryStore(), **options)


# ---------------------------------------------------------------------------- broken stores


class PatchCorruptsValue(MemoryStore):
    """Applies each patch, then also nudges ``a5`` of the first patched record by one ulp."""

    def batch_patch(self, cls: type, patches: Iterable[Mapping[str, Any]]) -> None:
        patches = list(patches)
        super().batch_patch(cls, patches)
        victim = self.get(Security, patches[0]["ssm_id"])
        assert victim is not None
        super().patch(Security, victim["ssm_id"], {"a5": math.nextafter(victim["a5"], math.inf)})


class PatchCorruptsType(MemoryStore):
    """Applies each patch, then turns ``a5`` of the first patched record into an *equal* Decimal."""

    def batch_patch(self, cls: type, patches: Iterable[Mapping[str, Any]]) -> None:
        patches = list(patches)
        super().batch_patch(cls, patches)
        victim = self.get(Security, patches[0]["ssm_id"])
        assert victim is not None
        as_decimal = decimal.Decimal(victim["a5"])
        assert as_decimal == victim["a5"]  # == alone would call this unchanged
        super().patch(Security, victim["ssm_id"], {"a5": as_decimal})


class PatchIgnored(MemoryStore):
    """Acknowledges patches and applies none."""

    def batch_patch(self, cls: type, patches: Iterable[Mapping[str, Any]]) -> None:
        list(patches)


class PutLosesOne(MemoryStore):
    """Silently drops SEC0000000007 from every batch_put."""

    def batch_put(self, objs: Iterable[Any]) -> None:
        super().batch_put([o for o in objs if o["ssm_id"] != "SEC0000000007"])


class ListsAStranger(MemoryStore):
    """keys() yields an id that was never stored."""

    def keys(self, cls: type) -> Iterator[Any]:
        yield from super().keys(cls)
        yield "SEC9999999999"


class DeleteUndercounts(MemoryStore):
    """Deletes everything asked but reports one fewer per call."""

    def batch_delete(self, objs_or_cls: Any, keys: Iterable[Any] | None = None) -> int:
        return super().batch_delete(objs_or_cls, keys) - 1


class CountNeverDrops(MemoryStore):
    """count() still reports what was stored before the deletes."""

    def count(self, cls: type) -> int:
        return super().count(cls) or 2000


@pytest.mark.parametrize(
    ("store_cls", "check", "detail", "timed_before"),
    [
        (PatchCorruptsValue, "patch check", r"SEC\d{10}: attribute 'a5' is .* \(float\), expected .* \(float\)", 4),
        (PatchCorruptsType, "patch check", r"SEC\d{10}: attribute 'a5' is .* \(Decimal\), expected .* \(float\)", 4),
        (PatchIgnored, "patch check", r"SEC\d{10}: attribute 'a0' is", 4),
        (PutLosesOne, "get batch", r"^SEC0000000007: missing$", 2),
        (ListsAStranger, "list", r"'SEC9999999999' was never stored", 6),
        (DeleteUndercounts, "delete", r"reported 1999 deleted, expected 2000", 7),
        (CountNeverDrops, "count", r"count\(\) is 2000", 7),
    ],
    ids=lambda p: p.__name__ if isinstance(p, type) else None,
)
def test_a_broken_store_fails_the_check_it_breaks_and_is_cleaned_up(
    store_cls: type[MemoryStore], check: str, detail: str, timed_before: int
) -> None:
    store = store_cls()
    with pytest.raises(CheckFailed) as failed:
        run_scenario(store, n=2000, attrs=20, patch_n=500, get_n=2000, seed=3)
    assert failed.value.check == check
    assert re.search(detail, failed.value.detail), failed.value.detail
    assert [r.step for r in failed.value.results] == STEPS[:timed_before]
    assert not isinstance(failed.value, stockstore.errors.StoreError)
    # What the run wrote is gone even though a check failed.
    assert MemoryStore.count(store, Security) == 0


class PutUnreachable(MemoryStore):
    """A server that goes away after the first batch."""

    def batch_put(self, objs: Iterable[Any]) -> None:
        if MemoryStore.count(self, Security):
            raise BackendUnavailableError("connection refused")
        super().batch_put(objs)


def test_a_store_error_propagates_and_the_run_still_cleans_up() -> None:
    store = PutUnreachable()
    with pytest.raises(BackendUnavailableError):
        run_scenario(store, n=25_000, attrs=2, seed=1)
    assert MemoryStore.count(store, Security) == 0


# ---------------------------------------------------------------------------- the command


def test_small_run_on_memory_exits_0_and_prints_every_step(cli: types.ModuleType) -> None:
    result = bench(cli, "--store", "memory://", *SMALL)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("store: <MemoryStore namespace='bench-")
    assert_full_table(result.output)
    assert "deleted 2,000 securities; every check passed" in result.output


def test_console_script_runs_the_bench(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "stockstore"
    done = subprocess.run(
        [str(script), "bench", "--store", "memory://", *SMALL],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert_full_table(done.stdout)
    assert done.stderr == ""  # not a terminal: no progress bars
    assert not (tmp_path / ".stockstore").exists()  # --store given: the embedded default is not made


def test_each_run_gets_a_fresh_namespace_unless_told(cli: types.ModuleType) -> None:
    first, second = bench(cli, "--store", "memory://", "--n", "10"), bench(cli, "--store", "memory://", "--n", "10")
    namespaces = [re.search(r"namespace='([^']+)'", r.output) for r in (first, second)]
    assert namespaces[0] is not None
    assert namespaces[1] is not None
    assert namespaces[0][1] != namespaces[1][1]
    mine = bench(cli, "--store", "memory://", "--n", "10", "--namespace", "mine")
    assert mine.exit_code == 0, mine.output
    assert "namespace='mine'" in mine.output


def test_several_stores_are_chained_top_to_bottom(cli: types.ModuleType) -> None:
    result = bench(cli, "--store", "memory://", "--store", "threadlocal://", "--n", "100", "--patch-n", "10")
    assert result.exit_code == 0, result.output
    assert re.match(
        r"store: <ChainedStore \[<MemoryStore namespace='(bench-\w+)'>, <ThreadLocalStore namespace='\1'>\]>",
        result.output,
    )


def test_embedded_default_is_memory_over_sqlite(cli: types.ModuleType, tmp_path: Path) -> None:
    """Needs `SqlStore` (stockstore.backends.sql)."""
    from stockstore.backends import SqlStore

    db = tmp_path / "bench.db"
    # Someone's data in the same file: a run must neither see nor remove it.
    with SqlStore(f"sqlite:///{db}") as theirs:
        theirs.put(Security(ssm_id="SEC0000000001", a0=-0.0))

    result = bench(cli, "--db", str(db), *SMALL)

    assert result.exit_code == 0, result.output
    assert re.match(r"store: <ChainedStore \[<MemoryStore namespace='bench-\w+'>, <SqlStore", result.output)
    assert_full_table(result.output)
    with SqlStore(f"sqlite:///{db}") as theirs:
        assert list(theirs.keys(Security)) == ["SEC0000000001"]
        kept = theirs.get(Security, "SEC0000000001")
        assert kept is not None
        assert math.copysign(1.0, kept["a0"]) == -1.0


def test_embedded_default_file_lives_under_dot_stockstore(
    cli: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs `SqlStore` (stockstore.backends.sql)."""
    monkeypatch.chdir(tmp_path)
    result = bench(cli, "--n", "50", "--patch-n", "5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".stockstore" / "bench.db").is_file()


def test_a_failed_check_exits_1_and_names_it(cli: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PatchCorruptsValue()
    opened: list[tuple[Sequence[str], str]] = []

    def open_store(urls: Sequence[str], *, db: Path, namespace: str) -> stockstore.BaseStore:
        opened.append((urls, namespace))
        return store

    monkeypatch.setattr(_bench, "open_store", open_store)
    result = bench(cli, "--store", "memory://", *SMALL)

    assert result.exit_code == 1, result.output
    assert [urls for urls, _ in opened] == [("memory://",)]
    assert re.search(r"check failed: patch check: SEC\d{10}: attribute 'a5' is", result.output)
    assert list(table(result.output)) == STEPS[:4]  # the steps timed before the failure
    assert "every check passed" not in result.output
    assert store._closed  # the command closes the store it opened; the run cleaned up before that:
    assert list(store._scan(family_of(Security), 0)) == []


def test_a_store_error_exits_1_with_its_message(cli: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench, "open_store", lambda urls, *, db, namespace: PutUnreachable())
    result = bench(cli, "--n", "25000", "--attrs", "2")
    assert result.exit_code == 1, result.output
    assert "BackendUnavailableError: connection refused" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--n", "0"],
        ["--n", "many"],
        ["--attrs", "1"],
        ["--patch-n", "-1"],
        ["--bogus"],
        ["--store", "nosuch://"],
        ["--store", "memory://?max_items=lots"],
        ["--store", "memory://", "--db", "x.db"],
        ["--compare", "--store", "memory://"],
        ["--compare", "--db", "x.db"],
        ["--compare", "--namespace", "mine"],
        ["--compare", "--repeat", "0"],
        ["--compare", "--legacy-n", "0"],
        ["--sql-n", "1000"],
        ["--main-job", "10", "20"],
        ["--redis", "redis://127.0.0.1:1/0"],
        ["--markdown"],
        ["--repeat", "2"],
        ["--legacy-n", "5"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(cli: types.ModuleType, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench, "run_scenario", lambda *a, **k: pytest.fail("ran despite a usage error"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran the comparison despite a usage error"))
    result = bench(cli, *args)
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output


# ---------------------------------------------------------------------------- --compare: benchmarks/compare.py


def test_compare_is_the_harness_of_the_checkout(cli: types.ModuleType) -> None:
    checkout = Path(stockstore.__file__).resolve().parents[1]
    assert checkout / "benchmarks" / "compare.py" == cli._HARNESS
    assert cli._HARNESS.is_file()


def test_compare_runs_the_harness_with_the_options_given(
    cli: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    harness = tmp_path / "compare.py"
    harness.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\nsys.exit(3)\n")
    monkeypatch.setattr(cli, "_HARNESS", harness)
    given = ["--n", "500", "--repeat", "3", "--markdown", "--redis", "redis://h:1/2", "--no-progress", "--seed", "7"]
    given += ["--sql-n", "500000", "--main-job", "50000", "500000"]

    result = CliRunner().invoke(cli.main, ["bench", "--compare", *given])

    assert result.exit_code == 3, result.output  # the harness's exit code
    forwarded = json.loads(capfd.readouterr().out)  # printed by the child, on the real stdout
    # In the command's own order; options left at their default are the harness's to choose.
    assert forwarded == [
        *("--n", "500", "--seed", "7", "--no-progress"),
        *("--redis", "redis://h:1/2", "--repeat", "3", "--markdown"),
        *("--sql-n", "500000", "--main-job", "50000", "500000"),
    ]


def test_compare_without_the_checkout_names_the_file_to_get(
    cli: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_HARNESS", tmp_path / "benchmarks" / "compare.py")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a harness that is not there"))
    result = CliRunner().invoke(cli.main, ["bench", "--compare", "--n", "10"])
    assert result.exit_code == 1, result.output
    assert "Error: --compare runs benchmarks/compare.py of a stockstore source checkout" in result.output
    assert f"there is none at {tmp_path / 'benchmarks' / 'compare.py'}" in result.output


def test_console_script_runs_the_comparison(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "stockstore"
    nowhere = "redis://127.0.0.1:1/0"  # no Redis: the local stores only, and quickly
    done = subprocess.run(
        [str(script), "bench", "--compare", "--n", "200", "--attrs", "5", "--redis", nowhere],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compare: 200 securities x 5 floats, get 200, patch 200, seed 20240601, repeat 1")
    assert f"note: Redis at {nowhere} is unreachable" in done.stdout
    assert done.stdout.endswith("\nevery check passed (2 backends)\n")


def test_render_aligns_columns() -> None:
    text = render([StepResult("store", 100_000, 3.5), StepResult("get single", 10, 0.0)])
    lines = text.splitlines()
    assert lines[0].split() == ["step", "records", "seconds", "records/s"]
    assert lines[1].split() == ["store", "100,000", "3.500", "28,571"]
    assert lines[2].split() == ["get", "single", "10", "0.000", "inf"]
    assert len({len(line) for line in lines}) == 1


# ---------------------------------------------------------------------------- import cost and the extra


def probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)


def test_importing_the_cli_loads_no_driver() -> None:
    done = probe("import json, sys; import stockstore.cli; print(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "click" in loaded  # the probe did import the CLI
    assert {m for m in loaded if m.split(".")[0] in {"redis", "sqlalchemy", "pymemcache", "pandas", "numpy"}} == set()


@pytest.mark.parametrize("missing", ["click", "tqdm"])
def test_without_the_extra_the_import_error_names_it(missing: str) -> None:
    done = probe(f"import sys; sys.modules[{missing!r}] = None; import stockstore.cli")
    assert done.returncode != 0
    assert f"the stockstore command needs {missing!r}: pip install 'stockstore[cli]'" in done.stderr


@pytest.mark.parametrize(
    ("got", "want", "problem"),
    [
        (0.0, -0.0, "attribute 'a' is 0.0 (float), expected -0.0 (float)"),
        (-0.0, 0.0, "attribute 'a' is -0.0 (float), expected 0.0 (float)"),
        (math.nan, math.nan, None),
        (1, 1.0, "attribute 'a' is 1 (int), expected 1.0 (float)"),
        (True, 1, "attribute 'a' is True (bool), expected 1 (int)"),
        (decimal.Decimal("0.25"), 0.25, "(Decimal), expected 0.25 (float)"),  # equal by ==
        (math.nextafter(0.1, 1.0), 0.1, "attribute 'a' is 0.10000000000000002 (float), expected 0.1 (float)"),
        (0.1, 0.1, None),
    ],
)
def test_difference_is_type_for_type_and_bit_for_bit(got: Any, want: Any, problem: str | None) -> None:
    found = _bench.difference(Security(ssm_id="X", a=got), {"ssm_id": "X", "a": want})
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.endswith(problem)


def test_difference_names_missing_and_extra_attributes() -> None:
    want = {"ssm_id": "X", "a0": 1.5}
    assert _bench.difference(None, want) == "missing"
    assert _bench.difference(Security(ssm_id="X"), want) == "attribute 'a0' is missing"
    assert _bench.difference(Security(ssm_id="X", a0=1.5, zz=2), want) == "unexpected attribute 'zz' = 2 (int)"
