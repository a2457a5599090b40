"""benchmarks/compare.py, which `stockstore bench --compare` runs: every backend's rows, and checks with teeth.

Small runs (2,000 securities x 20 floats, the legacy baseline on 200) against a
redis-server of the test session, and the SQL and main-job parts on a few hundred
records; what is asserted is the tables' structure, the targets table and the
checks, never a timing.  The harness lives beside the package, so this module puts
benchmarks/ on sys.path to import it; tests/test_cli.py checks that the command runs it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import redis
from redis_servers import free_port

import stockstore as ss
from stockstore.backends import MemoryStore

# The harness lives beside the package, in benchmarks/, which only this puts on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compare as harness
import sql_scale as sql_script
from comparison import baselines, targets
from comparison.baselines import BASELINE, HSET, LEGACY, MSET, Mset, PipelinedHash, PlainMsgpack
from comparison.contenders import (
    CHAIN,
    HASH_STORE,
    KEY_LAST,
    MSGPACK_STORE,
    SQLITE_STORE,
    Contender,
    StoreContender,
    key_last,
)
from comparison.main_job import MainJob
from comparison.report import Failure, RedisMemory, Report, Row, Settings, render
from comparison.runner import FRAME_STEPS, STEPS, run_compare
from comparison.sql_scale import Chunk, SqlScale, run_sql_scale

from stockstore._bench import Security, generate

SMALL = ["--n", "2000", "--attrs", "20", "--legacy-n", "200"]
REDIS_BACKENDS = [BASELINE, LEGACY, MSET, HSET, MSGPACK_STORE, KEY_LAST, HASH_STORE, CHAIN]
LOCAL_BACKENDS = ["MemoryStore", SQLITE_STORE]
NO_FRAMES = (LEGACY, HSET)  # the baselines without a frame path
# Records per step of a SMALL run: get random is 1,000 and patch is bounded by n (or legacy-n).
RECORDS = {"store": 2000, "get random": 1000, "get all": 2000, "patch": 2000, "list+delete": 2000}
LEGACY_RECORDS = dict.fromkeys(STEPS, 200)
FRAMES_BUILT_IN = hasattr(ss.BaseStore, "put_frame") and hasattr(ss.BaseStore, "get_frame")


@dataclass(frozen=True)
class Run:
    """What one run of the harness's command line printed, and its exit code."""

    exit_code: int
    output: str
    errors: str


def compare(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    exit_code = harness.main(["--no-progress", *args])
    out, err = capsys.readouterr()
    return Run(exit_code, out, err)


def markdown_rows(output: str, after: str = "") -> list[dict[str, str]]:
    """The rows of the first Markdown table in *output* after the text *after*, as header -> cell."""
    lines = output[output.index(after) + len(after) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    head, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in table[:1] + table[2:])
    return [dict(zip(head, cells, strict=True)) for cells in rows]


def targets_table(output: str) -> dict[str, dict[str, str]]:
    """The targets table at the end of a Markdown report: step -> its row."""
    return {row["step"]: row for row in markdown_rows(output, after="\ntargets (issue 11)")}


def bench_keys(url: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return list(client.scan_iter(match="bench-*"))


def small(**options: Any) -> Settings:
    return Settings(**{"n": 300, "attrs": 5, "get_n": 50, "patch_n": 40, **options})


# ---------------------------------------------------------------------------- the whole field


@pytest.mark.redis
def test_small_run_prints_every_backends_rows_with_ratios(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    result = compare(capsys, *SMALL, "--redis", redis_url, "--markdown")

    assert result.exit_code == 0, result.output
    rows = markdown_rows(result.output)
    backends = REDIS_BACKENDS + LOCAL_BACKENDS
    stores = [b for b in backends if not b.startswith("(")]
    frame_backends = [BASELINE, MSET] + (stores if FRAMES_BUILT_IN else [])
    frame_backends = [b for b in backends if b in frame_backends]
    expected = [(step, b) for step in STEPS for b in backends]
    expected += [(step, b) for step in FRAME_STEPS for b in frame_backends]
    assert [(r["step"], r["backend"]) for r in rows] == expected
    for row in rows:
        records = (LEGACY_RECORDS if row["backend"] == LEGACY else RECORDS).get(row["step"], 2000)
        assert int(row["records"].replace(",", "")) == records, row
        assert float(row["seconds"]) >= 0.0
        hashes = row["backend"] in (HSET, HASH_STORE)
        if hashes and row["step"] in FRAME_STEPS:
            assert (row["best plain"], row["vs best"]) == ("-", "-")  # no hand-written hash frame path
        else:
            assert row["best plain"] in ((HSET,) if hashes else (BASELINE, MSET)), row
            assert float(row["vs best"]) > 0.0, row
        if row["backend"] == row["best plain"]:
            assert row["vs best"] == "1.00"
        assert int(row["peak RSS MB"].replace(",", "")) > 0  # Linux lets the run reset the peak per step
    for step in (*STEPS, *FRAME_STEPS):  # the best of (a) and (c) is the faster of the two, step by step
        a, c = (next(r for r in rows if r["step"] == step and r["backend"] == b) for b in (BASELINE, MSET))
        rates = {b: int(r["records/s"].replace(",", "")) for b, r in ((BASELINE, a), (MSET, c))}
        if rates[BASELINE] != rates[MSET]:  # as printed, rounded
            assert a["best plain"] == c["best plain"] == max(rates, key=rates.__getitem__)
    memory = result.output.split("Redis memory:")[1]
    for backend in REDIS_BACKENDS:
        cells = r"\| +[\d,]+ \| +[\d,]+ \| +\d+\.\d\d \| +[\d,]+ \|"
        assert re.search(rf"^\| {re.escape(backend)} +{cells}$", memory, re.M), backend
    assert re.search(r"^- code: [0-9a-f]{7,}", result.output, re.M)
    assert "- peak RSS of the whole run: " in result.output
    assert "every check passed (10 backends)" in result.output
    assert bench_keys(redis_url) == []  # every namespace cleaned up

    found = targets_table(result.output)
    assert list(found) == [
        "RedisMsgpackStore.batch_put, key first",
        "RedisMsgpackStore.batch_put, key last",
        "RedisMsgpackStore.batch_get of all",
        "RedisMsgpackStore.put_frame",
        "RedisMsgpackStore.get_frame() of everything",
        "RedisHashStore.batch_put",
        "RedisMsgpackStore keys + batch_delete of everything",
        "chain memory > Redis > SQLite batch_put",
        "SqlStore.batch_put on SQLite, worst chunk",
        "SqlStore.batch_put on PostgreSQL, worst chunk",
        "main job (stockstore bench's store step), records/s kept",
        "peak RSS of RedisMsgpackStore.batch_put",
    ]
    measured = [*list(found.values())[:8], found["peak RSS of RedisMsgpackStore.batch_put"]]
    for row in measured:
        assert re.fullmatch(r"\d+\.\d\dx", row["ratio"]), row
        assert row["at"] == "2,000"
        assert row["met?"] in ("yes", "NO", "yes*", "NO*"), row
    assert found["RedisHashStore.batch_put"]["against"] == HSET
    assert found["chain memory > Redis > SQLite batch_put"]["against"] == SQLITE_STORE
    assert found["RedisMsgpackStore.put_frame"]["target"] == "<= 1.20x at 50,000"
    assert found["RedisMsgpackStore.put_frame"]["met?"].endswith("*")  # measured at 2,000, stated at 50,000
    assert found["SqlStore.batch_put on SQLite, worst chunk"]["met?"] == "not run: add --sql-n 500000"
    assert found["main job (stockstore bench's store step), records/s kept"]["met?"] == (
        "not run: add --main-job 50000 500000"
    )


@pytest.mark.redis
def test_the_terminal_table_is_aligned(redis_url: str) -> None:
    with harness.open_contenders(redis_url=redis_url, legacy_n=50) as (contenders, notes):
        report = run_compare(contenders[:2], small(), notes=notes)
    text = render(report)
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split() == [
        *("step", "backend", "records", "seconds", "records/s", "best", "plain", "vs", "best", "peak", "RSS", "MB")
    ]
    assert [line.split("  ")[0] for line in table[1 : 1 + 2 * len(STEPS) : 2]] == list(STEPS)
    assert len({len(line) for line in table}) == 1


@pytest.mark.redis
def test_a_store_that_has_frames_gets_frame_rows(redis_url: str) -> None:
    pytest.importorskip("pandas")
    with harness.open_contenders(redis_url=redis_url, legacy_n=50) as (contenders, _):
        report = run_compare([contenders[0], StoreContender("framed", lambda ns: FramedStore(namespace=ns))], small())
    assert report.failures == []
    frames = [(r.step, r.backend) for r in report.rows if r.step in FRAME_STEPS]
    assert frames == [(step, who) for step in FRAME_STEPS for who in (BASELINE, "framed")]
    assert all(report.ratio(r) is not None for r in report.rows)


# ---------------------------------------------------------------------------- checks with teeth


class LossyBaseline(PlainMsgpack):
    """Baseline (a) as someone might write it: msgpack floats as float32."""

    def store(self, records: Any) -> None:
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            pipe.set(self.prefix + record["ssm_id"], msgpack.packb(dict(record), use_single_float=True))
        pipe.execute()


@pytest.mark.redis
def test_a_lossy_baseline_fails_its_check_and_the_rest_still_runs(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    lossy = LossyBaseline(client)
    memory = StoreContender("MemoryStore", lambda namespace: MemoryStore(namespace=namespace))
    report = run_compare([lossy, memory], small())
    client.close()

    assert [(f.backend, f.step) for f in report.failures] == [(BASELINE, "get random")]
    assert re.fullmatch(r"SEC\d{10}: attribute 'a0' is .* \(float\), expected .* \(float\)", report.failures[0].detail)
    assert [r.step for r in report.rows if r.backend == "MemoryStore"] == [
        *STEPS,
        *(FRAME_STEPS if FRAMES_BUILT_IN else ()),
    ]
    assert [r.step for r in report.rows if r.backend == BASELINE] == ["store"]  # the step it passed
    assert all(report.ratio(r) is None for r in report.rows if r.step != "store")  # no baseline, no ratios
    assert bench_keys(redis_url) == []  # the failed run was cleaned up


class PatchIgnored(MemoryStore):
    """Acknowledges patches and applies none."""

    def batch_patch(self, cls: type, patches: Iterable[Mapping[str, Any]]) -> None:
        list(patches)


@pytest.mark.redis
def test_a_wrong_backend_fails_the_check_and_exits_1(
    capsys: pytest.CaptureFixture[str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = harness.open_contenders

    @contextlib.contextmanager
    def with_a_broken_one(**options: Any) -> Iterator[tuple[list[Contender], list[str]]]:
        with real(**options) as (contenders, notes):
            broken = StoreContender("broken", lambda namespace: PatchIgnored(namespace=namespace))
            yield [*contenders[:1], broken], notes

    monkeypatch.setattr(harness, "open_contenders", with_a_broken_one)
    result = compare(capsys, *SMALL, "--redis", redis_url)

    assert result.exit_code == 1, result.output
    assert re.search(r"^check failed: broken: patch check: SEC\d{10}: attribute 'a0' is", result.errors, re.M)
    assert re.search(rf"^store +{re.escape(BASELINE)} +2,000 ", result.output, re.M)
    assert re.search(r"^get all +broken +2,000 ", result.output, re.M)  # its steps before the failure are kept
    assert not re.search(r"^patch +broken", result.output, re.M)
    assert "every check passed" not in result.output


class FramedStore(MemoryStore):
    """A store with ``put_frame``/``get_frame`` as API.md describes them, written plainly for the test."""

    def put_frame(self, cls: type, frame: Any) -> None:
        records = frame.reset_index().to_dict("records")
        self.batch_put([cls(record) for record in records])

    def get_frame(self, cls: type) -> Any:
        import pandas as pd

        records = self.batch_get(cls, list(self.keys(cls)))
        return pd.DataFrame.from_records([dict(r) for r in records if r is not None], index="ssm_id")


class FrameNudged(FramedStore):
    """Returns one value of the frame one ulp off."""

    def get_frame(self, cls: type) -> Any:
        frame = super().get_frame(cls)
        frame.iloc[7, 3] = math.nextafter(frame.iloc[7, 3], math.inf)
        return frame


def test_a_wrong_frame_fails_the_frame_check() -> None:
    pytest.importorskip("pandas")
    report = run_compare([StoreContender("nudged", lambda namespace: FrameNudged(namespace=namespace))], small())
    assert [(f.backend, f.step) for f in report.failures] == [("nudged", "get frame (all)")]
    assert re.fullmatch(r"SEC\d{10}: attribute 'a3' is .*, expected .*", report.failures[0].detail)


# ---------------------------------------------------------------------------- without servers


def test_without_redis_the_rest_is_compared_and_the_run_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = compare(capsys, *SMALL, "--redis", nowhere, "--markdown")

    assert result.exit_code == 0, result.output
    assert f"Redis at {nowhere} is unreachable" in result.output
    rows = markdown_rows(result.output)
    assert sorted({r["backend"] for r in rows}) == LOCAL_BACKENDS
    assert [r["step"] for r in rows if r["backend"] == "MemoryStore"][: len(STEPS)] == list(STEPS)
    assert {(r["best plain"], r["vs best"]) for r in rows} == {("-", "-")}
    assert "Redis memory" not in result.output
    assert "every check passed (2 backends)" in result.output
    assert targets_table(result.output)["RedisMsgpackStore.batch_put, key first"]["met?"] == "not in this run"


def test_an_unreachable_postgresql_is_skipped_with_a_note() -> None:
    url = f"postgresql://someone:secret@127.0.0.1:{free_port()}/nothing"
    with harness.open_contenders(redis_url=None, postgresql_url=url) as (contenders, notes):
        assert [c.name for c in contenders] == LOCAL_BACKENDS
    assert len(notes) == 1
    assert notes[0].startswith(f"SqlStore on postgresql://127.0.0.1:{url.rsplit(':', 1)[1]} is unavailable")
    assert "secret" not in notes[0]


@pytest.mark.postgresql
def test_postgresql_joins_the_field(postgresql_url: str) -> None:
    with harness.open_contenders(redis_url=None, postgresql_url=postgresql_url) as (contenders, notes):
        assert [c.name for c in contenders] == [*LOCAL_BACKENDS, "SqlStore postgresql"]
        report = run_compare(contenders[-1:], small(), notes=notes)
    assert report.failures == []
    assert [r.step for r in report.rows][: len(STEPS)] == list(STEPS)
    import sqlalchemy as sa

    from stockstore.backends import SqlStore

    with SqlStore(postgresql_url) as probe:  # every table of the run's namespace is gone, frame schemas too
        assert [t for t in sa.inspect(probe.engine).get_table_names() if t.startswith("ss_bench_")] == []


def test_repeats_report_one_median_row_per_step() -> None:
    memory = StoreContender("MemoryStore", lambda namespace: MemoryStore(namespace=namespace))
    report = run_compare([memory], small(repeat=3))
    assert [r.step for r in report.rows][: len(STEPS)] == list(STEPS)
    assert len(report.rows) == len({r.step for r in report.rows})
    assert report.failures == []


@pytest.mark.parametrize(
    ("measured", "why"),
    [
        (RedisMemory("x", 100, 1000.0, 990.0, 100), None),
        (RedisMemory("x", 100, 1000.0, None, 100), None),
        (RedisMemory("x", 100, 1000.0, 990.0, 101), None),  # a schema key, say
        (RedisMemory("x", 100, 1000.0, 990.0, 89), "the server's key count grew by 89, not 100"),
        (RedisMemory("x", 100_000, 1000.0, 990.0, 200_000), "the server's key count grew by 200,000, not 100,000"),
        (RedisMemory("x", 100, -475.0, 600.0, 100), "-475 B/record against 600 B of MEMORY USAGE a key"),
        (RedisMemory("x", 100, 1783.0, 3180.0, 100), "1,783 B/record against 3,180 B of MEMORY USAGE a key"),
    ],
)
def test_redis_memory_moved_by_another_client_is_flagged(measured: RedisMemory, why: str | None) -> None:
    assert measured.disturbed() == why


def test_report_ratio_is_records_per_second_over_the_best_baseline_of_the_layout() -> None:
    report = Report(Settings(n=10))
    a, c, d = Row(BASELINE, "store", 1000, 2.0), Row(MSET, "store", 1000, 1.0), Row(HSET, "store", 1000, 4.0)
    legacy = Row(LEGACY, "store", 100, 4.0)
    blob, hashes = Row("blob", "store", 1000, 1.25), Row("hashes", "store", 1000, 5.0)
    only_a = Row(BASELINE, "get all", 10, 1.0)
    report.rows = [a, legacy, c, d, blob, hashes, only_a, Row("blob", "get all", 10, 2.0), Row("x", "patch", 10, 1.0)]
    report.layouts = {HSET: "hash", "hashes": "hash"}

    assert report.best(blob) is c  # (c) MSET is the faster of (a) and (c) here
    assert report.ratio(blob) == pytest.approx(1000 / 1.25 / 1000)
    assert report.ratio(a) == pytest.approx(0.5)  # a baseline is measured against the best too
    assert report.ratio(legacy) == pytest.approx(25 / 1000)  # (b) is never the bar
    assert report.best(hashes) is d
    assert report.ratio(hashes) == pytest.approx(0.8)
    assert report.best(report.rows[7]) is only_a  # the best of those that ran the step
    assert report.ratio(report.rows[7]) == pytest.approx(0.5)
    assert report.ratio(report.rows[8]) is None  # no baseline ran the step


@pytest.mark.parametrize(
    "args",
    [
        ["--repeat", "0"],
        ["--legacy-n", "0"],
        ["--attrs", "1"],
        ["--n", "many"],
        ["--store", "memory://"],
        ["--sql-n", "0"],
        ["--main-job", "50000"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "run_compare", lambda *a, **k: pytest.fail("ran despite a usage error"))
    with pytest.raises(SystemExit) as exited:
        harness.main(args)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the new contenders


def test_key_last_builds_the_same_records_with_the_key_last() -> None:
    records = generate(3, 4, 1)
    shaped = key_last(records)
    for before, after in zip(records, shaped, strict=True):
        assert type(after) is Security
        assert next(iter(before)) == "ssm_id"  # the generator puts the key first
        assert list(after) == [*list(before)[1:], "ssm_id"]
        assert all(after[name] is before[name] for name in before)  # the same values, not copies


class KeyOrders(MemoryStore):
    """Remembers the attribute order of every record it was given to store."""

    orders: list[list[str]]

    def batch_put(self, objs: Iterable[Any]) -> None:
        objs = list(objs)
        self.orders.extend(list(obj) for obj in objs)
        super().batch_put(objs)


def test_the_key_last_contender_stores_its_records_key_last() -> None:
    orders: list[list[str]] = []

    def build(namespace: str) -> KeyOrders:
        store = KeyOrders(namespace=namespace)
        store.orders = orders
        return store

    report = run_compare([StoreContender("key last", build, shape=key_last)], small())
    assert report.failures == []  # and every read of it was checked
    assert len(orders) == 300
    assert {order[-1] for order in orders} == {"ssm_id"}


def lossy_msgpack() -> SimpleNamespace:
    """msgpack as someone might call it: floats as float32."""
    return SimpleNamespace(packb=lambda obj: msgpack.packb(obj, use_single_float=True), unpackb=msgpack.unpackb)


@pytest.mark.redis
@pytest.mark.parametrize("baseline", [Mset, PipelinedHash])
def test_a_lossy_new_baseline_fails_its_check(
    redis_url: str, baseline: type[Mset | PipelinedHash], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baselines, "msgpack", lossy_msgpack())  # the baselines' msgpack only, not stockstore's
    with redis.Redis.from_url(redis_url) as client:
        who = baseline(client)
        report = run_compare([who], small())
    assert [(f.backend, f.step) for f in report.failures] == [(who.name, "get random")]
    assert re.fullmatch(r"SEC\d{10}: attribute 'a\d' is .* \(float\), expected .* \(float\)", report.failures[0].detail)
    assert bench_keys(redis_url) == []


class LossyColumns(Mset):
    """Baseline (c) storing its frame rows as float32."""

    def store_frame(self, frame: Any) -> None:
        super().store_frame(frame.astype("float32").astype("float64"))


@pytest.mark.redis
def test_a_lossy_columnar_frame_fails_the_frame_check(redis_url: str) -> None:
    pytest.importorskip("pandas")
    with redis.Redis.from_url(redis_url) as client:
        report = run_compare([LossyColumns(client)], small())
    assert [(f.backend, f.step) for f in report.failures] == [(MSET, "get frame (all)")]
    assert [r.step for r in report.rows] == [*STEPS, "store frame"]
    assert bench_keys(redis_url) == []


# ---------------------------------------------------------------------------- SQL at scale, the main job


def test_sql_scale_times_every_chunk_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    scale = run_sql_scale(250, attrs=5, seed=1, chunk=100, repeat=2)

    assert scale.failures == []
    assert scale.raw == {"sqlite": "sqlite3 executemany"}
    assert [(c.database, c.index, c.rows_after) for c in scale.chunks] == [
        ("sqlite", 1, 100),
        ("sqlite", 2, 200),
        ("sqlite", 3, 250),
    ]
    assert all(c.store_seconds > 0 and c.raw_seconds > 0 for c in scale.chunks)
    assert list(tmp_path.iterdir()) == []  # both database files removed


def test_a_lossy_raw_sql_baseline_fails_its_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "msgpack", lossy_msgpack())
    scale = run_sql_scale(200, attrs=5, seed=1, chunk=100)
    assert [(f.backend, f.step) for f in scale.failures] == [("sqlite", "sqlite3 executemany read")]
    assert scale.chunks == []
    assert targets.sql_outcomes(scale)[0].verdict() == "failed a check"


@pytest.mark.postgresql
def test_sql_scale_on_postgresql_leaves_no_table(postgresql_url: str) -> None:
    scale = run_sql_scale(250, attrs=5, seed=1, chunk=100, sqlite=False, postgresql_url=postgresql_url)
    assert scale.failures == []
    assert scale.raw == {"postgresql": "psycopg COPY"}
    assert [(c.database, c.rows_after) for c in scale.chunks] == [("postgresql", n) for n in (100, 200, 250)]
    import sqlalchemy as sa

    from stockstore.backends import SqlStore

    with SqlStore(postgresql_url) as probe:
        names = sa.inspect(probe.engine).get_table_names()
    assert [t for t in names if t.startswith(("ss_bench_", "raw_bench_"))] == []


def test_the_sql_scale_script_prints_every_chunk_and_its_targets(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = sql_script.main(["--n", "250", "--chunk", "100", "--attrs", "5", "--no-progress", "--markdown"])
    out = capsys.readouterr().out

    assert exit_code == 0, out
    chunks = markdown_rows(out, after="SQL at scale")
    assert [(r["database"], r["chunk"], r["rows after"]) for r in chunks] == [
        ("sqlite", "1", "100"),
        ("sqlite", "2", "200"),
        ("sqlite", "3", "250"),
        ("sqlite", "all", "250"),
    ]
    assert all(float(r["time ratio"]) > 0 for r in chunks)
    found = markdown_rows(out, after="\ntargets (issue 11)")
    assert re.fullmatch(r"SqlStore\.batch_put on SQLite, worst chunk \(chunk [123] of 3, 100 each\)", found[0]["step"])
    assert found[1]["step"] == "SqlStore.batch_put on PostgreSQL, worst chunk"
    assert found[0]["met?"] in ("yes*", "NO*")
    assert found[1]["met?"] == "not run: add --postgresql"


def test_compare_adds_the_sql_and_main_job_parts_to_its_targets(capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = compare(
        capsys,
        *("--n", "300", "--attrs", "5", "--redis", nowhere, "--markdown"),
        *("--sql-n", "250", "--sql-chunk", "100", "--main-job", "200", "100"),
    )

    assert result.exit_code == 0, result.output
    job = markdown_rows(result.output, after="\nmain job:")
    assert [r["records"] for r in job] == ["100", "200"]  # the two sizes, smaller first
    assert "records/s at 200 over records/s at 100: " in result.output
    found = targets_table(result.output)
    sqlite = next(row for step, row in found.items() if step.startswith("SqlStore.batch_put on SQLite"))
    assert re.fullmatch(r"\d+\.\d\dx", sqlite["ratio"])
    assert sqlite["against"] == "sqlite3 executemany"
    main = found["main job (stockstore bench's store step), records/s kept"]
    assert re.fullmatch(r"\d+\.\d\d", main["ratio"])
    assert main["at"] == "100 -> 200"
    assert main["target"] == ">= 0.85 at 50,000 -> 500,000"
    assert main["met?"] in ("yes*", "NO*")


class LosesOne(MemoryStore):
    """Drops the last record of every batch it is given."""

    def batch_put(self, objs: Iterable[Any]) -> None:
        super().batch_put(list(objs)[:-1])


def test_a_main_job_that_loses_a_record_fails_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import comparison.main_job

    monkeypatch.setattr(comparison.main_job, "open_store", lambda urls, *, db, namespace: LosesOne(namespace=namespace))
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = compare(capsys, "--n", "100", "--attrs", "5", "--redis", nowhere, "--main-job", "50", "100")

    assert result.exit_code == 1
    assert "check failed: main job at 50: main job count: 49 records, expected 50" in result.errors
    assert "every check passed" not in result.output


# ---------------------------------------------------------------------------- targets


def test_targets_say_met_or_not_against_what_and_at_what_size() -> None:
    n = 50_000
    report = Report(Settings(n=n))
    report.input_bytes = 1_000_000_000
    report.rows = [
        Row(BASELINE, "store", n, 5.0),
        Row(MSET, "store", n, 4.0),
        Row(MSGPACK_STORE, "store", n, 4.4, peak_rss=1_500_000_000),
        Row(KEY_LAST, "store", n, 3.9),
        Row(HSET, "store", n, 10.0),
        Row(HASH_STORE, "store", n, 13.0),
        Row(CHAIN, "store", n, 6.0),
        Row(SQLITE_STORE, "store", n, 5.0),
        Row(MSET, "store frame", n, 1.0),
        Row(MSGPACK_STORE, "store frame", n, 1.1),
        Row(MSET, "get frame (all)", n, 1.0),
        Row(MSGPACK_STORE, "get frame (all)", n, 1.4),
    ]
    report.layouts = {HSET: "hash", HASH_STORE: "hash"}
    report.failures = [Failure(MSGPACK_STORE, "get all", "SEC0000000001: missing")]
    report.sql = SqlScale(
        500_000,
        50_000,
        1,
        raw={"sqlite": "sqlite3 executemany"},
        chunks=[Chunk("sqlite", 1, 50_000, 1.2, 1.0), Chunk("sqlite", 2, 100_000, 1.5, 1.0)],
    )
    report.main_job = MainJob((50_000, 500_000), 1, seconds=(5.0, 55.0))

    found = {t.step: t for t in targets.outcomes(report)}
    expect = {
        "RedisMsgpackStore.batch_put, key first": (MSET, "50,000", 1.1, "NO"),
        "RedisMsgpackStore.batch_put, key last": (MSET, "50,000", 3.9 / 4.0, "yes"),
        "RedisMsgpackStore.batch_get of all": ("the best plain baseline", None, None, "failed a check"),
        "RedisMsgpackStore.put_frame": (MSET, "50,000", 1.1, "yes"),  # stated at 50,000: no star
        "RedisMsgpackStore.get_frame() of everything": (MSET, "50,000", 1.4, "yes*"),  # stated at 500,000
        "RedisHashStore.batch_put": (HSET, "50,000", 1.3, "NO"),
        "RedisMsgpackStore keys + batch_delete of everything": (
            "the best plain baseline",
            None,
            None,
            "failed a check",  # a step after the one it failed
        ),
        "chain memory > Redis > SQLite batch_put": (SQLITE_STORE, "50,000", 1.2, "NO"),
        "SqlStore.batch_put on SQLite, worst chunk (chunk 2 of 2, 50,000 each)": (
            "sqlite3 executemany",
            "500,000",
            1.5,
            "NO",  # measured at the size the target names
        ),
        "SqlStore.batch_put on PostgreSQL, worst chunk": ("psycopg COPY", None, None, "not run: add --postgresql"),
        "main job (stockstore bench's store step), records/s kept": (
            "its records/s at the small N",
            "50,000 -> 500,000",
            50 / 55,
            "yes",
        ),
        "peak RSS of RedisMsgpackStore.batch_put": ("the input records' size", "50,000", 1.5, "yes*"),
    }
    assert list(found) == list(expect)
    for step, (against, at, ratio, verdict) in expect.items():
        got = found[step]
        assert (got.against, got.at, got.verdict()) == (against, at, verdict), step
        assert got.ratio == (None if ratio is None else pytest.approx(ratio)), step


@pytest.mark.redis
def test_frame_ratio_times_both_frame_steps(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    """benchmarks/frame_ratio.py: the frame steps alone, store next to (c), every read checked, nothing left behind."""
    import frame_ratio

    with redis.Redis.from_url(redis_url) as client:
        before = client.dbsize()
        assert frame_ratio.main(["--n", "300", "--attrs", "20", "--repeat", "2", "--redis", redis_url]) == 0
        assert client.dbsize() == before
    out = capsys.readouterr().out
    runs = [line.split()[2] for line in out.splitlines() if line.startswith("run ")]
    assert sorted(runs) == sorted([MSET.split()[0], MSGPACK_STORE] * 2), out
    assert "put_frame    median" in out, out
    assert "get_frame()  median" in out, out
