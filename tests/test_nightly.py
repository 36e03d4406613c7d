"""`tracekit nightly`: suites run twice into one history, regressions against the last passing
run or a pinned one, a corrupt workload that does not stop the others, an interrupted run that
leaves the history as it was, the same through a Dask LocalCluster, and every suite-file
error."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tracekit.analysis import nightly as nl
from tracekit.analysis.history import explain
from tracekit.cli.app import app
from tracekit.workloads.generate import generate

GEMM = {"m": 256, "n": 512, "k": 512}
runner = CliRunner()


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small workloads, and a slowed variant of the first to swap in."""
    root = tmp_path_factory.mktemp("traces")
    generate("gemm", root / "gemm", params=GEMM, seed=1)
    generate("mlp", root / "mlp", params={"widths": (256, 384, 128), "batch": 256}, seed=1)
    generate("gemm", root / "gemm_slow", params=GEMM, seed=1, inject=["slow-queue"])
    return root


def _suite(folder: Path, traces: Path, extra: str = "", gemm: str = "gemm") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.toml").write_text(f"""
name = "t"
threshold_pct = 2.0
{extra}
[[workloads]]
name = "gemm"
trace = "{traces / gemm}"

[[workloads]]
trace = "{traces / 'mlp'}"
""")
    return folder / "suite.toml"


def _run(suite: Path, history: Path, run_id: str, *more: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["nightly", str(suite), "--history", str(history),
                               "--run-id", run_id, "--workers", "2", *more])


def _junit(history: Path, run_id: str) -> ET.Element:
    return ET.parse(history / "reports" / run_id / "junit.xml").getroot()


def test_two_runs_one_history(tmp_path: Path, traces: Path) -> None:
    suite = _suite(tmp_path, traces)
    history = tmp_path / "history"
    first = _run(suite, history, "r1")
    assert first.exit_code == 0, first.output
    second = _run(suite, history, "r2")
    assert second.exit_code == 0, second.output
    rows = nl.read_history(history)
    assert rows.height == 4 and sorted(set(rows["run_id"])) == ["r1", "r2"]
    assert sorted(p.name for p in (history / f"date={rows['date'][0]}").iterdir()) == [
        "run=r1", "run=r2"]
    r2 = rows.filter(pl.col("run_id") == "r2").sort("workload")
    assert r2["baseline_run"].to_list() == ["r1", "r1"]
    assert r2["delta_pct"].to_list() == [0.0, 0.0] and set(r2["status"]) == {"pass"}
    suite_el = _junit(history, "r2")
    cases = suite_el.findall("testcase")
    assert [c.get("name") for c in cases] == ["gemm", "mlp"]
    assert suite_el.get("tests") == "2" and suite_el.get("failures") == "0"
    summary = (history / "reports" / "r2" / "summary.md").read_text()
    assert summary == second.stdout
    assert "| workload | r1 | r2 |" in summary  # the trend over both runs
    assert "| gemm | pass |" in summary


def test_regression_against_last_pass_and_pinned(tmp_path: Path, traces: Path) -> None:
    """Through the library with threads (the comparison is what is tested here; the
    executors are tested through the CLI above and below)."""
    from concurrent.futures import ThreadPoolExecutor

    from tracekit.cli import render

    history = tmp_path / "history"

    def run(folder: str, run_id: str, **kwargs: str) -> nl.NightlyRun:
        suite = nl.load_suite(_suite(tmp_path / folder, traces, **kwargs))
        return nl.nightly(suite, history, run_id=run_id, pool=pool)

    with ThreadPoolExecutor(2) as pool:
        assert run("a", "r1").regressions == 0
        slow = run("b", "r2", gemm="gemm_slow")
        assert (slow.regressions, slow.errors) == (1, 0)
        row = slow.rows.filter(pl.col("workload") == "gemm").row(0, named=True)
        assert row["status"] == "regression" and row["baseline_run"] == "r1"
        assert row["delta_pct"] > 2.0 and row["new_error_codes"] == []
        summary = render.nightly_markdown(slow, nl.trend(slow), explain(slow))
        assert "## What needs a look" in summary
        assert "; new findings: slow-engine (1 warning)\n" in summary  # no new error
        junit = ET.fromstring(render.nightly_junit(slow, explain(slow)))
        failure = junit.find("testcase[@name='gemm']/failure")
        assert failure is not None and "against run r1" in failure.get("message")
        assert junit.find("testcase[@name='mlp']/failure") is None
        # The failed run is not gemm's baseline: the next run compares it with r1 again.
        back = run("c", "r3")
        assert back.regressions == 0
        assert back.rows.sort("workload")["baseline_run"].to_list() == ["r1", "r2"]
        # A pinned baseline: the slow run itself, so the fast trace is a speed-up.
        pinned = run("d", "r4", extra='baseline = "r2"')
        assert pinned.regressions == 0
        assert pinned.rows.sort("workload")["baseline_run"].to_list() == ["r2", "r2"]
        assert pinned.rows.sort("workload")["delta_pct"][0] < 0
        with pytest.raises(nl.SuiteError, match="baseline = 'nope' names no run"):
            run("e", "r5", extra='baseline = "nope"')
    assert nl.read_history(history)["run_id"].unique().sort().to_list() == [
        "r1", "r2", "r3", "r4"]
    assert nl.trend(pinned).columns == ["workload", "r1", "r2", "r3", "r4"]


def test_corrupt_workload_does_not_stop_the_others(tmp_path: Path, traces: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(traces / "gemm", broken)
    (broken / "instructions.parquet").write_bytes(b"PAR1 not really")
    suite = _suite(tmp_path, traces, gemm=str(broken))  # an absolute path stays as it is
    result = _run(suite, tmp_path / "history", "r1")
    assert result.exit_code == 1, result.output
    rows = nl.read_history(tmp_path / "history").sort("workload")
    assert rows["status"].to_list() == ["error", "pass"]
    assert "instructions.parquet" in rows["error"][0]
    case = _junit(tmp_path / "history", "r1").find("testcase[@name='gemm']/error")
    assert case is not None and "instructions.parquet" in case.get("message")


def test_interrupted_run_leaves_history_as_it_was(tmp_path: Path, traces: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    suite = _suite(tmp_path, traces)
    history = tmp_path / "history"
    assert _run(suite, history, "r1").exit_code == 0
    before = sorted(str(p.relative_to(history)) for p in history.rglob("*"))

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(nl.os, "replace", interrupted)
    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(KeyboardInterrupt):
            nl.nightly(nl.load_suite(suite), history, run_id="r2", pool=pool)
        # On a fresh history no empty partition folder is left behind either.
        with pytest.raises(KeyboardInterrupt):
            nl.nightly(nl.load_suite(suite), tmp_path / "fresh", run_id="f1", pool=pool)
    monkeypatch.undo()
    after = sorted(str(p.relative_to(history)) for p in history.rglob("*"))
    assert after == before
    assert set(nl.read_history(history)["run_id"]) == {"r1"}
    assert list((tmp_path / "fresh").rglob("*")) == []


def test_same_code_path_through_dask(tmp_path: Path, traces: Path) -> None:
    distributed = pytest.importorskip("distributed")
    suite = _suite(tmp_path, traces)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        history = tmp_path / "history"
        first = _run(suite, history, "d1", "--scheduler", cluster.scheduler_address)
        assert first.exit_code == 0, first.output
        second = _run(suite, history, "d2", "--scheduler", cluster.scheduler_address)
        assert second.exit_code == 0, second.output
    rows = nl.read_history(history)
    assert rows.height == 4
    assert set(rows.filter(pl.col("run_id") == "d2")["baseline_run"]) == {"d1"}
    assert len(_junit(history, "d2").findall("testcase")) == 2
    # The same figures as local processes.
    local = _run(suite, tmp_path / "local", "l1")
    assert local.exit_code == 0
    cols = ["workload", "makespan", "replay_makespan", "stall_cycles", "errors", "warnings"]
    assert (nl.read_history(tmp_path / "local").sort("workload").select(cols)
            .equals(rows.filter(pl.col("run_id") == "d1").sort("workload").select(cols)))


def test_unreachable_scheduler(tmp_path: Path, traces: Path) -> None:
    pytest.importorskip("distributed")
    result = _run(_suite(tmp_path, traces), tmp_path / "h", "x", "--scheduler",
                  "tcp://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the Dask scheduler" in result.stderr
    assert not (tmp_path / "h").exists() or not list((tmp_path / "h").rglob("*.parquet"))


@pytest.mark.parametrize(("text", "message"), [
    ("name = [", "not valid TOML"),
    ("colour = 1\n[[workloads]]\ntrace = 'x'", "colour is not a suite key"),
    ("name = 'x'", "workloads must list at least one workload"),
    ("[[workloads]]\nname = 'a'", "workloads[0].trace is missing"),
    ("[[workloads]]\ntrace = 'x'\nspeed = 2", "workloads[0].speed is not a workload key"),
    ("[[workloads]]\ntrace = 'nothing-*'", "matches no folder"),
    ("threshold_pct = -1\n[[workloads]]\ntrace = 'x'", "threshold_pct must be a finite number"),
    ("threshold_pct = nan\n[[workloads]]\ntrace = 'x'", "threshold_pct must be a finite number"),
    ("name = 5\n[[workloads]]\ntrace = 'x'", "name must be a non-empty string"),
    ("trend_runs = 0\n[[workloads]]\ntrace = 'x'", "trend_runs must be a whole number"),
    ("[[workloads]]\ntrace = 'a/x'\n[[workloads]]\ntrace = 'b/x'", "name 'x' more than once"),
])
def test_suite_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    result = runner.invoke(app, ["nightly", str(path), "--history", str(tmp_path / "h")])
    assert result.exit_code == 1, result.output
    assert message in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "h").exists()


def test_missing_suite_and_duplicate_run_id(tmp_path: Path, traces: Path) -> None:
    missing = runner.invoke(app, ["nightly", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "no such suite file" in missing.stderr
    suite = _suite(tmp_path, traces)
    assert _run(suite, tmp_path / "h", "same").exit_code == 0
    again = _run(suite, tmp_path / "h", "same")
    assert again.exit_code == 1 and "already in the history" in again.stderr
    for bad_id in ("../escape", "workload", "x" * 65, "ünïcode"):
        bad = _run(suite, tmp_path / "h", bad_id)
        assert bad.exit_code == 1 and "letters, digits" in bad.stderr, bad_id
    runs = sorted(p.name for p in (tmp_path / "h").glob("date=*/run=*"))
    assert runs == ["run=same"]


def test_sample_suite_parses() -> None:
    suite = nl.load_suite(Path(__file__).resolve().parent.parent / "analysis" / "suites"
                          / "sample.toml")
    names = [w.name for w in suite.workloads]
    assert names == ["gemm", "mlp", "attention", "conv2d", "layernorm_untimed",
                     "faulted/attention_faults", "faulted/gemm_faults"]
    assert all(os.path.isdir(w.trace) for w in suite.workloads)
    assert suite.workloads[2].threshold_pct == 3.0 and suite.baseline == nl.LAST_PASS


def _thread_run(suite_file: Path, history: Path, run_id: str) -> nl.NightlyRun:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        return nl.nightly(nl.load_suite(suite_file), history, run_id=run_id, pool=pool)


def test_baselines_and_trend_stay_within_a_suite(tmp_path: Path, traces: Path) -> None:
    """Two suites sharing one history, both with a workload named gemm on different traces:
    neither is compared with the other's runs."""
    history = tmp_path / "history"
    a = _suite(tmp_path / "a", traces)
    b = tmp_path / "b" / "suite.toml"
    b.parent.mkdir()
    sample = Path(__file__).resolve().parent.parent / "sample_traces" / "gemm"
    b.write_text(f'name = "other"\n[[workloads]]\nname = "gemm"\ntrace = "{sample}"\n')
    _thread_run(a, history, "a1")
    run = _thread_run(b, history, "b1")
    assert run.rows["baseline_run"].to_list() == [None] and run.regressions == 0
    assert nl.trend(run).columns == ["workload", "b1"]
    # A trace path that now holds another workload has no baseline either.
    a.write_text(a.read_text().replace(str(traces / "gemm"), str(sample)))
    again = _thread_run(a, history, "a2")
    assert again.rows.filter(pl.col("workload") == "gemm")["baseline_run"].to_list() == [None]


def test_deadlocked_workload_is_a_regression_with_its_findings(tmp_path: Path,
                                                                traces: Path) -> None:
    stuck = Path(__file__).resolve().parent.parent / "sample_traces" / "mlp_faults"
    suite = _suite(tmp_path, traces, gemm=str(stuck))
    run = _thread_run(suite, tmp_path / "h", "r1")
    row = run.rows.filter(pl.col("workload") == "gemm").row(0, named=True)
    assert row["status"] == "regression" and row["makespan"] is None
    assert "never run" in row["stuck"] and row["errors"] >= 1
    assert "deadlock-wait" in {f["code"] for f in row["findings"]}
    from tracekit.cli import render

    summary = render.nightly_markdown(run, nl.trend(run), explain(run))
    assert "the run cannot finish" in summary
    failure = (ET.fromstring(render.nightly_junit(run, explain(run)))
               .find("testcase[@name='gemm']/failure"))
    assert failure is not None and failure.get("message").startswith("the run cannot finish")
    cli = _run(suite, tmp_path / "h", "r2")  # through the command line: a regression exits 3
    assert cli.exit_code == 3, cli.output
    assert "**gemm** (regression): the run cannot finish" in cli.stdout


def test_suite_errors_found_before_any_work(tmp_path: Path, traces: Path) -> None:
    suite = _suite(tmp_path, traces, extra='machine = "trn-lik"')
    result = _run(suite, tmp_path / "h", "r1")
    assert result.exit_code == 1 and str(suite) in result.stderr and "trn-lik" in result.stderr
    assert not list((tmp_path / "h").rglob("*.parquet"))
    (tmp_path / "afile").write_text("x")
    as_history = _run(_suite(tmp_path, traces), tmp_path / "afile", "r1")
    assert as_history.exit_code == 1 and "is a file" in as_history.stderr
    as_report = _run(_suite(tmp_path, traces), tmp_path / "h2", "r1", "--report",
                     str(tmp_path / "afile"))
    assert as_report.exit_code == 2 and not (tmp_path / "h2").exists()


def test_foreign_and_older_history_files(tmp_path: Path, traces: Path) -> None:
    history = tmp_path / "history"
    suite = _suite(tmp_path, traces)
    _thread_run(suite, history, "r1")
    # An older results file without a column added since reads with nulls there.
    (older,) = history.glob("date=*/run=r1/results.parquet")
    pl.read_parquet(older).drop("new_error_codes").write_parquet(older)
    assert nl.read_history(history)["new_error_codes"].null_count() == 2
    foreign = history / "date=2026-01-01" / "run=x" / "results.parquet"
    foreign.parent.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(foreign)
    # issue 18: one corrupt results file blocked every later run; it is quarantined with a
    # message, and the run goes on.
    result = _run(suite, history, "r2")
    assert result.exit_code == 0, result.output
    assert str(foreign) in result.stderr and "not a results file" in result.stderr
    assert "moved to" in result.stderr and "Traceback" not in result.output
    assert (history / "quarantine" / "date=2026-01-01" / "run=x" / "results.parquet").exists()
    assert sorted(nl.read_history(history)["run_id"].unique()) == ["r1", "r2"]
    garbage = history / "date=2026-01-02" / "run=y" / "results.parquet"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"PAR1 not really")
    assert _run(suite, history, "r3").exit_code == 0
    assert (history / "quarantine" / "date=2026-01-02" / "run=y").is_dir()


def test_a_dead_worker_fails_only_its_workload(tmp_path: Path, traces: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool whose worker died fails every pending future; each of those workloads is run
    again alone, so only one that kills its worker again is an error."""
    import concurrent.futures as cf

    class Broken(cf.Executor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            future: cf.Future = cf.Future()
            future.set_exception(cf.process.BrokenProcessPool("a worker died"))
            return future

    suite = nl.load_suite(_suite(tmp_path, traces))
    results = nl.run_all(suite, Broken())
    assert [r["error"] for r in results] == [None, None]
    assert all(r["makespan"] > 0 for r in results)


def test_an_untimed_workload_is_replayed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracekit.analysis.timelines as timelines
    import tracekit.replay.run as run

    calls = []
    real = run.replay

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0].path)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "replay", counted)
    monkeypatch.setattr(timelines, "replay", counted)
    untimed = Path(__file__).resolve().parent.parent / "sample_traces" / "layernorm_untimed"
    measured = nl._measure(str(untimed), None)
    assert measured["timeline"] == "replayed" and len(calls) == 1
    assert measured["makespan"] == measured["replay_makespan"]


def test_an_older_observed_makespan_in_the_trace_unit_is_not_compared(tmp_path: Path,
                                                                       traces: Path) -> None:
    # The gemm again, timed in ps at 1 GHz; a history row written before observed times
    # were converted held its makespan in ps: it is no baseline for a makespan in cycles.
    from tracekit.trace.bundle import open_trace, write_trace

    gemm = open_trace(traces / "gemm")
    tables = {n: gemm.read(n) for n in ("semaphores", "memory", "deps") if gemm.has_table(n)}
    write_trace(tmp_path / "ps", gemm.read("instructions").with_columns(
        pl.col("start") * 1000, pl.col("end") * 1000), **tables,
        workload=gemm.manifest.workload, producer=gemm.manifest.producer, clock_hz=1e9,
        time_unit="ps", created=None)
    suite = tmp_path / "suite.toml"
    suite.write_text(f'name = "t"\n[[workloads]]\nname = "gemm"\ntrace = "{tmp_path / "ps"}"\n')
    history = tmp_path / "history"
    first = _thread_run(suite, history, "r1")
    assert first.rows["time_unit"].to_list() == ["ps"]
    (older,) = history.glob("date=*/run=r1/results.parquet")
    old = pl.read_parquet(older)
    old.drop("makespan_unit").with_columns(pl.col("makespan") // 2).write_parquet(older)
    second = _thread_run(suite, history, "r2").rows.row(0, named=True)
    assert second["baseline_run"] == "r1" and second["delta_pct"] is None
    assert second["status"] == "pass" and second["makespan"] == old["makespan"][0]


@pytest.mark.parametrize("which", ["history", "report"])
def test_unwritable_folders_are_refused_before_any_work(tmp_path: Path, traces: Path,
                                                      which: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 18: a read-only history raised PermissionError after every workload ran, and a
    # read-only --report folder lost summary.md and junit.xml. (The folder is made
    # unwritable by refusing the probe file, which works as root too.)
    locked = tmp_path / "locked"
    locked.mkdir()
    real = nl.tempfile.mkstemp

    def mkstemp(*args: object, dir: str | Path | None = None, **kwargs: object):  # noqa: A002
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(nl.tempfile, "mkstemp", mkstemp)
    history = locked / "h" if which == "history" else tmp_path / "h"
    extra = ["--report", str(locked / "r")] if which == "report" else []
    began = time.perf_counter()
    result = _run(_suite(tmp_path, traces), history, "r1", *extra)
    assert result.exit_code == 1, result.output
    assert "there (Permission denied); nothing was run" in result.stderr
    assert time.perf_counter() - began < 5 and "Traceback" not in result.output
    assert not list(tmp_path.glob("**/date=*"))


def test_a_lost_scheduler_aborts_the_run(tmp_path: Path, traces: Path) -> None:
    """A Dask job that fails other than by its worker being killed means the scheduler went
    away: an infrastructure failure that aborts the run, not N workload errors."""
    import concurrent.futures as cf

    class Lost(cf.Executor):
        scheduler = "tcp://127.0.0.1:1"

        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            future: cf.Future = cf.Future()
            future.set_exception(cf.CancelledError("scheduler connection lost"))
            return future

    suite = nl.load_suite(_suite(tmp_path, traces))
    with pytest.raises(nl.InfrastructureError, match="lost the Dask scheduler at "
                       "tcp://127.0.0.1:1 while running workload gemm"):
        nl.run_all(suite, Lost())
    with pytest.raises(nl.InfrastructureError):
        nl.nightly(suite, tmp_path / "h", pool=Lost())
    assert not list((tmp_path / "h").glob("date=*"))


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    """kill -9 of nightly left its spawned workers running; they watch their parent now."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing, os, sys, time\n"
        "from tracekit.analysis.nightly import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'),"
        " initializer=die_with_parent, initargs=(os.getpid(),))\n"
        "    pids = [pool.submit(os.getpid).result() for _ in range(4)]\n"
        "    print(' '.join(map(str, set(pids))), flush=True)\n"
        "    time.sleep(60)\n")
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as parent:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _running(p)]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")
