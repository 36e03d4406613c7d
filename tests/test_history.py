"""What nightly says about a regression (the engines and layers that took the change along the
critical path, the new findings) and `tracekit history`: the runs of a history and one
workload's trend, in text, Markdown and JSON, on a real two-run history and on one written in
code; older results files without the trace's path and sha256; and every bad folder."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import assert_failed_cleanly
from typer.testing import CliRunner

from tracekit.analysis import nightly as nl
from tracekit.analysis.history import explain, explain_row
from tracekit.cli import render
from tracekit.cli.app import app
from tracekit.workloads.generate import generate

runner = CliRunner()
MLP = {"widths": (256, 384, 128), "batch": 256}


def _sha256(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A history of two runs of suite t: in r1 workloads mlp and same both run the mlp trace;
    in r2 mlp runs it with a slowed DMA queue and a missing wait (a race), same runs it as
    before. r1 runs through the library, r2 through the command line (from the suite's
    parent folder, by relative paths), both on threads."""
    root = tmp_path_factory.mktemp("real")
    generate("mlp", root / "mlp", params=MLP, seed=1)
    generate("mlp", root / "mlp_bad", params=MLP, seed=1, inject=["slow-queue", "missing-wait"])
    for run, trace in (("s1", "mlp"), ("s2", "mlp_bad")):
        (root / run).mkdir()
        (root / run / "suite.toml").write_text(
            f'name = "t"\n[[workloads]]\nname = "mlp"\ntrace = "../{trace}"\n'
            f'[[workloads]]\nname = "same"\ntrace = "../mlp"\n')
    history = root / "history"
    with ThreadPoolExecutor(2) as pool:
        nl.nightly(nl.load_suite(root / "s1" / "suite.toml"), history, run_id="r1", pool=pool)

    @contextmanager
    def threads(scheduler: str | None, workers: int | None) -> Iterator[ThreadPoolExecutor]:
        with ThreadPoolExecutor(2) as pool:
            yield pool

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nl, "executor", threads)
        patch.chdir(root)
        cli = runner.invoke(app, ["nightly", "s2/suite.toml", "--history", "history",
                                  "--run-id", "r2"])
    return {"root": root, "history": history, "cli": cli}


REGRESSION = (
    "makespan 20,668 -> 36,648 cycles (+77.32%, threshold 2%) against run r1; "
    "critical path +15,980 cycles: engines dma.q2 +24,469, dma.q0 -6,191, tensor -1,698, "
    "dma.q1 -496 (1 more: -104); layers fc1 +8,112, fc2 +7,868; "
    "new findings: race-raw (1 error), slow-engine (1 warning)")


def test_a_regression_names_what_moved_on_the_critical_path(real: dict[str, Any]) -> None:
    cli, history = real["cli"], real["history"]
    assert cli.exit_code == 3, cli.output
    needs_a_look = cli.stdout.split("## What needs a look\n\n")[1].split("\n\n")[0]
    assert needs_a_look == f"- **mlp** (regression): {REGRESSION}"  # and nothing on same
    assert (history / "reports" / "r2" / "summary.md").read_text() == cli.stdout
    junit = ET.parse(history / "reports" / "r2" / "junit.xml").getroot()
    failure = junit.find("testcase[@name='mlp']/failure")
    assert failure is not None and failure.get("message") == REGRESSION
    assert junit.find("testcase[@name='same']/failure") is None


def test_the_attribution_is_the_diffs(real: dict[str, Any]) -> None:
    """The shares stored in the history give what `tracekit diff` finds on the two traces."""
    from tracekit.analysis.diff import diff, profile
    from tracekit.analysis.timelines import choose_source
    from tracekit.replay.machine import resolve_machine
    from tracekit.trace.bundle import open_trace

    rows = nl.read_history(real["history"]).filter(pl.col("workload") == "mlp").sort("run_id")
    why = explain_row(rows.row(1, named=True), rows.row(0, named=True))
    traces = [open_trace(real["root"] / name) for name in ("mlp", "mlp_bad")]
    source = choose_source(*traces)
    d = diff(*(profile(t, resolve_machine(None), source, findings=False) for t in traces))
    assert why.delta == d.delta == 15_980 == int(why.engines["delta"].sum())
    assert why.engines.equals(d.attribution_engine)
    assert why.layers.equals(d.attribution_layer)
    assert why.layers["delta"].to_list() == [8_112, 7_868]
    assert why.new_findings.rows() == [("race-raw", "error", 1), ("slow-engine", "warning", 1)]


def test_rows_record_the_trace_path_and_sha256(real: dict[str, Any]) -> None:
    root = real["root"]
    rows = nl.read_history(real["history"]).sort("run_id", "workload")
    assert rows.select("run_id", "workload", "trace", "trace_sha256").rows() == [
        ("r1", "mlp", str(root / "mlp"), _sha256(root / "mlp")),
        ("r1", "same", str(root / "mlp"), _sha256(root / "mlp")),
        ("r2", "mlp", str(root / "mlp_bad"), _sha256(root / "mlp_bad")),
        ("r2", "same", str(root / "mlp"), _sha256(root / "mlp")),
    ]
    assert _sha256(root / "mlp") != _sha256(root / "mlp_bad")


def test_history_of_a_real_run(real: dict[str, Any]) -> None:
    history, root = real["history"], real["root"]
    started = dict(nl.read_history(history).select("run_id", "started").unique().rows())
    date = nl.read_history(history)["date"][0]
    listing = runner.invoke(app, ["history", str(history), "--format", "json"])
    assert listing.exit_code == 0, listing.output
    assert json.loads(listing.stdout) == {"history": str(history), "runs": [
        {"run_id": "r1", "date": date, "started": started["r1"], "suite": "t",
         "workloads": 2, "passed": 2, "regressions": 0, "errors": 0},
        {"run_id": "r2", "date": date, "started": started["r2"], "suite": "t",
         "workloads": 2, "passed": 1, "regressions": 1, "errors": 0}]}
    trend = runner.invoke(app, ["history", str(history), "--workload", "mlp", "-f", "json"])
    assert trend.exit_code == 0, trend.output
    common = {"suite": "t", "replay_makespan": 12_776, "instructions": 38}
    assert json.loads(trend.stdout) == {"history": str(history), "workload": "mlp", "runs": [
        {"run_id": "r1", "started": started["r1"], **common, "status": "pass",
         "makespan": 20_668, "change": None, "change_pct": None, "delta_pct": None,
         "baseline_run": None, "stall_cycles": 37_703, "errors": 0, "warnings": 0,
         "trace": str(root / "mlp"), "trace_sha256": _sha256(root / "mlp")},
        {"run_id": "r2", "started": started["r2"], **common, "status": "regression",
         "makespan": 36_648, "change": 15_980, "change_pct": 77.318, "delta_pct": 77.318,
         "baseline_run": "r1", "stall_cycles": 105_496, "errors": 1, "warnings": 1,
         "trace": str(root / "mlp_bad"), "trace_sha256": _sha256(root / "mlp_bad")}]}


# --- a history written in code ------------------------------------------------------------------

SUITE = "nightly|fast"  # a pipe, which Markdown cells must escape


def _row(run_id: str, workload: str, status: str, makespan: int | None,
         **values: Any) -> dict[str, Any]:
    day = {"r1": "01", "r2": "02", "r3": "03", "o1": "02"}[run_id]
    row: dict[str, Any] = {key: None for key in nl.HISTORY_SCHEMA}
    row.update(run_id=run_id, date=f"2026-03-{day}",
               started=f"2026-03-{day}T02:00:00.250000+00:00", suite=SUITE,
               workload=workload, status=status, makespan=makespan,
               workload_name=f"{workload}_k", timeline="observed", time_unit="cycles",
               makespan_unit="cycles", threshold_pct=2.0, new_error_codes=[], findings=[])
    if makespan is not None:
        row.update(replay_makespan=makespan - 100, stall_cycles=makespan // 4, instructions=10,
                   errors=0, warnings=0)
    row.update(values)
    return row


OLD_COLUMNS = ["trace", "trace_sha256", "critical_path_layers"]
FINDINGS = [{"code": "race-raw", "severity": "error",
             "message": "instruction 5 on tensor reads memory that instruction 4 on dma.q0 "
                        "wrote, and nothing orders the two"},
            {"code": "slow-engine", "severity": "warning",
             "message": "dma.q0 takes 3.0x as long as other dma engines for the same work (6 "
                        "instructions)"},
            {"code": "redundant-reload", "severity": "info",
             "message": "7 of 21 HBM loads re-read bytes loaded before"}]
OLD_FINDINGS = [{"code": "redundant-reload", "severity": "info",  # the same, other figures
                 "message": "6 of 20 HBM loads re-read bytes loaded before"},
                {"code": "slow-engine", "severity": "warning",  # the same code, another engine
                 "message": "tensor takes 2.5x as long as other tensor engines for the same "
                            "work (3 instructions)"}]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """Three runs of suite "nightly|fast", the first in an older results file without the
    trace's path and sha256 and the layers of the critical path: gemm passes, slows down by
    250 cycles in r2 (dma.q0 +300, tensor -50) with two new findings, and is back in r3; mlp
    passes, fails to run in r2, and passes 100 cycles faster in r3."""
    history = tmp_path / "history"
    r1 = [_row("r1", "gemm", "pass", 1_000, findings=OLD_FINDINGS,
               critical_path=[{"group": "tensor", "cycles": 600},
                              {"group": "dma.q0", "cycles": 400}]),
          _row("r1", "mlp", "pass", 2_000, critical_path=[{"group": "tensor", "cycles": 2_000}])]
    sha = "ab" * 32
    r2 = [_row("r2", "gemm", "regression", 1_250, baseline_run="r1", baseline_makespan=1_000,
               delta_pct=25.0, errors=1, warnings=1, new_error_codes=["race-raw"],
               findings=FINDINGS, trace="/archive/gemm", trace_sha256=sha,
               critical_path=[{"group": "dma.q0", "cycles": 700},
                              {"group": "tensor", "cycles": 550}],
               critical_path_layers=[{"group": "fc1", "cycles": 1_250}]),
          _row("r2", "mlp", "error", None, error="/archive/mlp: no such file or folder.",
               trace="/archive/mlp")]
    r3 = [_row("r3", "gemm", "pass", 1_000, baseline_run="r1", baseline_makespan=1_000,
               delta_pct=0.0, trace="/archive/gemm", trace_sha256="cd" * 32),
          _row("r3", "mlp", "pass", 1_900, baseline_run="r1", baseline_makespan=2_000,
               delta_pct=-5.0, trace="/archive/mlp", trace_sha256="ef" * 32)]
    for rows in (r1, r2, r3):
        nl.write_run(history, pl.DataFrame(rows, schema=nl.HISTORY_SCHEMA))
    (older,) = history.glob("date=*/run=r1/results.parquet")
    pl.read_parquet(older).drop(OLD_COLUMNS).write_parquet(older)
    return history


def test_an_older_history_without_path_and_sha256_loads(written: Path) -> None:
    rows = nl.read_history(written).sort("run_id", "workload")
    assert rows.filter(pl.col("run_id") == "r1").select(OLD_COLUMNS).null_count().row(0) == (
        2, 2, 2)
    assert rows["trace_sha256"].to_list() == [None, None, "ab" * 32, None, "cd" * 32,
                                              "ef" * 32]
    # r2 against the older r1: the engines moved; r1 recorded no layers, so none are named.
    why = explain_row(rows.row(2, named=True), rows.row(0, named=True))
    assert why.engines.select("engine", "base", "cand", "delta", "share_pct").rows() == [
        ("dma.q0", 400, 700, 300, 120.0), ("tensor", 600, 550, -50, -20.0)]
    assert why.layers.height == 0
    assert why.new_findings.rows() == [("race-raw", "error", 1), ("slow-engine", "warning", 1)]
    suite = nl.Suite(name=SUITE, path=written / "s.toml", machine=None, threshold_pct=2.0,
                     baseline=nl.LAST_PASS, trend_runs=7, history=written, workloads=())
    run = nl.NightlyRun(suite=suite, rows=rows.filter(pl.col("run_id") == "r2"),
                        before=rows.filter(pl.col("run_id") == "r1"), history=written)
    summary = render.nightly_markdown(run, nl.trend(run), explain(run))
    assert ("- **gemm** (regression): makespan 1,000 -> 1,250 cycles (+25.00%, threshold 2%) "
            "against run r1; critical path +250 cycles: engines dma.q0 +300, tensor -50; new "
            "findings: race-raw (1 error), slow-engine (1 warning)\n") in summary
    assert "- **mlp** (error): /archive/mlp: no such file or folder.\n" in summary


def test_history_lists_the_runs(written: Path) -> None:
    text = runner.invoke(app, ["history", str(written)])
    assert text.exit_code == 0, text.output
    assert text.stdout == f"""\
History {written} (3 run(s), oldest first)
run  started (UTC)        suite         workloads  passed  regressions  errors
r1   2026-03-01 02:00:00  nightly|fast          2       2            0       0
r2   2026-03-02 02:00:00  nightly|fast          2       0            1       1
r3   2026-03-03 02:00:00  nightly|fast          2       2            0       0
"""
    md = runner.invoke(app, ["history", str(written), "--format", "md"])
    assert md.exit_code == 0, md.output
    assert md.stdout == f"""\
# History {written}

- **history**: {written}
- **runs**: 3

## Runs, oldest first

| run | started (UTC) | suite | workloads | passed | regressions | errors |
|---|---|---|---:|---:|---:|---:|
| r1 | 2026-03-01 02:00:00 | nightly\\|fast | 2 | 2 | 0 | 0 |
| r2 | 2026-03-02 02:00:00 | nightly\\|fast | 2 | 0 | 1 | 1 |
| r3 | 2026-03-03 02:00:00 | nightly\\|fast | 2 | 2 | 0 | 0 |
"""
    js = runner.invoke(app, ["history", str(written), "--suite", SUITE, "--format", "json"])
    assert js.exit_code == 0, js.output
    assert json.loads(js.stdout) == {"history": str(written), "suite": SUITE, "runs": [
        {"run_id": f"r{i}", "date": f"2026-03-0{i}", "started": f"2026-03-0{i}T02:00:00.250000"
         f"+00:00", "suite": SUITE, "workloads": 2, "passed": passed, "regressions": regressed,
         "errors": failed} for i, passed, regressed, failed in ((1, 2, 0, 0), (2, 0, 1, 1),
                                                               (3, 2, 0, 0))]}


def test_history_of_a_workload(written: Path) -> None:
    """Change against the run before: none after a run with no makespan (mlp in r3)."""
    text = runner.invoke(app, ["history", str(written), "--workload", "gemm"])
    assert text.exit_code == 0, text.output
    # (rich pads the last column of a row to its width)
    assert "\n".join(line.rstrip() for line in text.stdout.split("\n")) == f"""\
Trend of gemm in {written} (3 run(s), oldest first)
run  started (UTC)        suite         status      makespan  change  change %  vs base %  \
baseline  replayed  stalls  errors  warnings  trace sha256
r1   2026-03-01 02:00:00  nightly|fast  pass           1,000       -         -          -  \
-              900     250       0         0  -
r2   2026-03-02 02:00:00  nightly|fast  regression     1,250    +250    +25.00     +25.00  \
r1           1,150     312       1         1  abababababab
r3   2026-03-03 02:00:00  nightly|fast  pass           1,000    -250    -20.00      +0.00  \
r1             900     250       0         0  cdcdcdcdcdcd
"""
    md = runner.invoke(app, ["history", str(written), "-w", "mlp", "-f", "md"])
    assert md.exit_code == 0, md.output
    assert md.stdout.endswith("""\
| run | started (UTC) | suite | status | makespan | change | change % | vs base % | \
baseline | replayed | stalls | errors | warnings | trace sha256 |
|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|
| r1 | 2026-03-01 02:00:00 | nightly\\|fast | pass | 2,000 | - | - | - | - | 1,900 | 500 | 0 | \
0 | - |
| r2 | 2026-03-02 02:00:00 | nightly\\|fast | error | - | - | - | - | - | - | - | - | - | - |
| r3 | 2026-03-03 02:00:00 | nightly\\|fast | pass | 1,900 | - | - | -5.00 | r1 | 1,800 | 475 | \
0 | 0 | efefefefefef |
""")
    js = runner.invoke(app, ["history", str(written), "-w", "mlp", "-f", "json"])
    assert js.exit_code == 0, js.output
    assert [(r["run_id"], r["makespan"], r["change"], r["change_pct"], r["trace"])
            for r in json.loads(js.stdout)["runs"]] == [
        ("r1", 2_000, None, None, None), ("r2", None, None, None, "/archive/mlp"),
        ("r3", 1_900, None, None, "/archive/mlp")]


def test_no_change_against_another_suite_kernel_or_unit(written: Path) -> None:
    from tracekit.analysis.history import open_history, workload_trend

    # A run of another suite between r2 and r3, with a gemm of its own.
    other = _row("o1", "gemm", "pass", 9_999, suite="other",
                 started="2026-03-02T03:00:00+00:00")
    nl.write_run(written, pl.DataFrame([other], schema=nl.HISTORY_SCHEMA))

    def changes(**r3: Any) -> list[int | None]:
        (path,) = written.glob("date=*/run=r3/results.parquet")
        pl.read_parquet(path).with_columns(**{k: pl.lit(v) for k, v in r3.items()}) \
            .write_parquet(path)
        trend = workload_trend(open_history(written), "gemm")
        assert trend["run_id"].to_list() == ["r1", "r2", "o1", "r3"]
        return trend["change"].to_list()

    assert changes() == [None, 250, None, -250]  # r3 against r2, not o1
    mine = workload_trend(open_history(written), "gemm", SUITE)
    assert mine["run_id"].to_list() == ["r1", "r2", "r3"]
    assert mine["change"].to_list() == [None, 250, -250]
    assert changes(workload_name="other_k") == [None, 250, None, None]
    # An older observed makespan kept in the trace's own unit (ns) is not compared.
    assert changes(workload_name="gemm_k", makespan_unit=None, time_unit="ns") == [
        None, 250, None, None]


@pytest.mark.parametrize(("args", "needle"), [
    (["missing"], "no such folder"),
    (["afile"], "is a file, not a history folder"),
    (["empty"], "not a nightly history: it holds no run"),
    (["history", "--workload", "conv"], "no run has workload 'conv'; the workloads there are "
                                        "gemm, mlp. Pass one of them to --workload."),
    (["history", "--suite", "t", "-w", "gemm"], "no run of suite 't'; the suites there are "
                                                 "nightly|fast."),
    (["history", "--suite", SUITE, "-w", "conv", "-f", "json"], "no run of suite "
                                                                "'nightly|fast' has workload"),
])
def test_bad_folders_and_names(written: Path, args: list[str], needle: str) -> None:
    root = written.parent
    (root / "afile").write_text("x")
    (root / "empty").mkdir()
    folder = root / args[0]
    result = runner.invoke(app, ["history", str(folder), *args[1:]])
    assert_failed_cleanly(result, 1, f"error: {folder}: ", needle)
    assert result.stdout == ""
    if args[0] in ("missing", "afile", "empty"):
        assert "tracekit nightly" in result.stderr  # how to find the right folder


def test_a_foreign_results_file(written: Path) -> None:
    foreign = written / "date=2026-01-01" / "run=x" / "results.parquet"
    foreign.parent.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(foreign)
    result = runner.invoke(app, ["history", str(written)])
    assert_failed_cleanly(result, 1, str(foreign), "not a results file",
                          "move that run folder out of the history")
