"""The Python API (tracekit.api, the calls on `tracekit`): its reports hold what the commands
print, take a trace and a machine in every form they accept, and refuse bad input with
tracekit's errors. Run on the bundled samples and on tiny TraceBuilder bundles."""

from __future__ import annotations

import html
import json
import types
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.calibrate import machine_toml
from tracekit.api import ArgumentError
from tracekit.cli.app import app
from tracekit.errors import InvalidTraceError, TracekitError
from tracekit.replay.machine import builtin_machine

ROOT = Path(__file__).resolve().parent.parent
GEMM = "sample_traces/gemm"          # timed: the observed timeline by default
FAULTS = "sample_traces/gemm_faults"  # the same workload with a race and a slow DMA queue
UNTIMED = "sample_traces/layernorm_untimed"
CLI_WIDTH = 160  # the CLI's console width when stdout is not a terminal


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample paths as the README gives them, relative to the repository root: the reports
    name the trace as given, so the API and the CLI see the same path."""
    monkeypatch.chdir(ROOT)


def cli(*args: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == exit_code, result.output
    return result.stdout


def content_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# --- the reports are what the commands print ---------------------------------------------------


def test_replay_makespan_is_the_commands() -> None:
    report = tracekit.replay(GEMM)
    data = json.loads(cli("replay", GEMM, "-f", "json"))
    assert report.makespan == data["makespan_cycles"]
    assert report.makespan == report.head["makespan_cycles"]
    assert report.makespan == report.timeline["end"].max()
    assert report.correlation is not None
    assert report.correlation.observed_makespan == \
        data["correlation"]["observed_makespan_cycles"]
    assert report.correlation.predicted_makespan == report.makespan
    engines = {row["engine"]: row["busy_cycles"] for row in data["engines"]}
    assert dict(report.engines.select("engine", "busy_cycles").iter_rows()) == engines


def test_stalls_report_is_the_commands_text() -> None:
    report = tracekit.stalls(GEMM)
    text = cli("stalls", GEMM)
    assert report.text(width=CLI_WIDTH) == text
    assert content_lines(repr(report)) == content_lines(text)
    assert str(report) == repr(report)


@pytest.mark.parametrize("command", ["stalls", "critical-path", "analyze", "replay", "whatif"])
def test_markdown_is_the_commands(command: str) -> None:
    calls: dict[str, Any] = {
        "stalls": (lambda: tracekit.stalls(GEMM), ()),
        "critical-path": (lambda: tracekit.critical_path(GEMM), ()),
        "analyze": (lambda: tracekit.analyze(GEMM), ()),
        "replay": (lambda: tracekit.replay(GEMM), ()),
        "whatif": (lambda: tracekit.whatif(GEMM, scale={"engine": {"tensor": 0.5}}),
                   ("--scale", "engine=tensor:0.5")),
    }
    call, options = calls[command]
    assert call().markdown() == cli(command, GEMM, *options, "-f", "md")


def test_head_is_the_commands_json_head() -> None:
    report = tracekit.stalls(GEMM)
    data = json.loads(cli("stalls", GEMM, "-f", "json"))
    rows = data.pop("stalls")
    assert report.head == data
    assert [{**row, "pct": round(row["pct"], 3)} for row in report.stalls.to_dicts()] == rows
    assert report.head["timeline"] == "observed"  # timed throughout: the trace's own timing


def test_head_names_the_timeline_analysed() -> None:
    assert tracekit.stalls(GEMM, timeline="replayed").head["timeline"] == "replayed"
    assert tracekit.stalls(UNTIMED).head["timeline"] == "replayed"  # nothing observed


def test_whatif_is_the_commands() -> None:
    report = tracekit.whatif(GEMM, scale={"engine": {"tensor": 0.5}})
    data = json.loads(cli("whatif", GEMM, "--scale", "engine=tensor:0.5", "-f", "json"))
    assert (report.base_makespan, report.makespan) == (data["base_makespan_cycles"],
                                                      data["makespan_cycles"])
    assert report.base_makespan == tracekit.replay(GEMM).makespan
    assert report.makespan < report.base_makespan
    tensor = report.engines.filter(engine="tensor").row(0, named=True)
    assert tensor["busy_after"] * 2 == tensor["busy_base"]  # twice as fast
    assert report.text(width=CLI_WIDTH) == cli("whatif", GEMM, "--scale", "engine=tensor:0.5")


def test_bugs_findings_are_the_commands() -> None:
    report = tracekit.bugs(FAULTS)
    data = json.loads(cli("bugs", FAULTS, "-f", "json", exit_code=3))  # an error finding
    assert report.findings.to_dicts() == data["findings"]
    assert "race-raw" in report.findings["code"].to_list()
    assert report.head["findings"] == report.findings.height


def test_diff_of_two_runs() -> None:
    same = tracekit.diff(GEMM, GEMM)
    assert (same.head["delta_cycles"], same.regression) == (0, False)
    slower = tracekit.diff(GEMM, FAULTS)
    assert slower.regression
    assert slower.head["base_makespan_cycles"] == tracekit.analyze(GEMM).makespan
    assert slower.head["cand_makespan_cycles"] == tracekit.analyze(FAULTS).makespan
    # The change attributed along the two critical paths adds up to the makespan change.
    assert slower.diff.attribution_engine["delta"].sum() == slower.diff.delta
    cli("diff", GEMM, FAULTS, exit_code=3)


def test_analyze_and_critical_path_share_the_timeline() -> None:
    analysis = tracekit.analyze(GEMM)
    path = tracekit.critical_path(GEMM)
    assert analysis.makespan == path.makespan == analysis.head["makespan_cycles"]
    assert analysis.makespan == tracekit.replay(GEMM).correlation.observed_makespan
    assert_frame_equal(analysis.path.by_engine, path.path.by_engine)
    assert_frame_equal(analysis.stalls, tracekit.stalls(GEMM).stalls)
    # Every engine's stall rows sum to the makespan.
    sums = analysis.stalls.group_by("engine").agg(pl.col("cycles").sum())["cycles"]
    assert sums.to_list() == [analysis.makespan] * sums.len()
    on_path = path.path.steps["id"].implode()
    assert not path.near_critical["id"].is_in(on_path).any()
    assert (path.near_critical["slack"] < path.makespan // 100).all()


def test_sensitivity_report_says_why_a_faster_part_slows_the_run() -> None:
    report = tracekit.sensitivity(GEMM)
    slower = report.ranking.filter(pl.col("gained") < 0)
    assert slower.height > 0  # on gemm a faster DMA queue makes more HBM contention
    why = report.section("why a faster part makes the run longer")
    assert why["name"].to_list() == slower["name"].to_list()
    text = " ".join(repr(report).split())  # the report's wrapping undone
    for line in why["why"]:
        assert " ".join(line.split()) in text
    assert report.ranking.height == len(json.loads(
        cli("sensitivity", GEMM, "-f", "json"))["ranking"])


# --- the notebook view ---------------------------------------------------------------------------


def test_html_shows_the_head_and_every_table() -> None:
    report = tracekit.analyze(GEMM)
    page = report._repr_html_()
    assert page.count("<table") == 1 + len(report.sections)  # the head, then each table
    for title, _, _ in report.sections:
        assert f"<h4>{html.escape(title)}</h4>" in page
    assert "<th style='text-align:left'>timeline</th>" in page
    # Every row and whole texts: the last stall row, the longest finding message.
    assert page.count("&quot;tensor/semaphore&quot;") == report.stalls.filter(
        cause="tensor/semaphore").height
    longest = max(report.findings["message"], key=len)
    assert len(longest) > 100
    assert html.escape(longest) in page


def test_section_by_title() -> None:
    report = tracekit.critical_path(GEMM)
    assert_frame_equal(report.section("by engine"), report.path.by_engine)
    with pytest.raises(KeyError, match="by engine, by opcode, by layer"):
        report.section("by unit")


# --- what the calls take ---------------------------------------------------------------------


def test_a_path_and_an_opened_trace_give_the_same_report() -> None:
    opened = tracekit.open_trace(GEMM)
    assert_frame_equal(tracekit.replay(opened).timeline, tracekit.replay(GEMM).timeline)
    by_path, by_trace = tracekit.critical_path(GEMM), tracekit.critical_path(opened)
    assert_frame_equal(by_path.path.steps, by_trace.path.steps)
    assert repr(by_path) == repr(by_trace)


def test_a_machine_by_name_file_or_object(tmp_path: Path) -> None:
    machine = builtin_machine("small-core")
    toml = tmp_path / "small.toml"
    toml.write_text(machine_toml(machine), encoding="utf-8")
    makespans = {tracekit.replay(GEMM, given).makespan
                 for given in ("small-core", toml, str(toml), machine)}
    assert len(makespans) == 1
    assert makespans != {tracekit.replay(GEMM).makespan}  # the machine was used
    assert tracekit.whatif(GEMM, machine, set={"hbm_bandwidth": 1e6}).base_makespan \
        in makespans


def test_an_invalid_bundle_is_refused(tmp_path: Path) -> None:
    b = tracekit.TraceBuilder("dangling")
    a = b.inst("tensor", "matmul", 0, 10)
    b.inst("tensor", "matmul", 10, 20)
    b.dep(a, 99, "data")  # no instruction 99
    bundle = tmp_path / "bad"
    b.write(bundle, validate=False)
    calls = [tracekit.replay, tracekit.analyze, tracekit.stalls, tracekit.critical_path,
             tracekit.bugs, tracekit.sensitivity,
             lambda t: tracekit.whatif(t, scale={"engine": {"tensor": 0.5}}),
             lambda t: tracekit.diff(t, t)]
    for call in calls:
        with pytest.raises(InvalidTraceError, match=str(bundle)) as caught:
            call(bundle)
        assert caught.value.report.errors  # the findings, as `tracekit validate` lists them


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: tracekit.replay(GEMM, mode="fast"), "mode 'fast' is not one of model, observed"),
    (lambda: tracekit.sensitivity(GEMM, mode="fast"), "mode 'fast'"),
    (lambda: tracekit.whatif(GEMM, mode="fast", set={"hbm_bandwidth": 1}), "mode 'fast'"),
    (lambda: tracekit.stalls(GEMM, timeline="model"),
     "timeline 'model' is not one of auto, observed, replayed"),
    (lambda: tracekit.diff(GEMM, GEMM, timeline="model"), "timeline 'model'"),
    (lambda: tracekit.whatif(GEMM), "whatif needs a change"),
])
def test_a_bad_argument_is_a_tracekit_error(call: Any, needle: str) -> None:
    with pytest.raises(ArgumentError, match=needle) as caught:
        call()
    assert isinstance(caught.value, TracekitError)
    assert isinstance(caught.value, ValueError)


def test_a_machine_or_trace_of_another_type_is_named() -> None:
    with pytest.raises(TypeError, match="machine: a built-in name, a machine TOML path or a "
                                        "Machine, not dict"):
        tracekit.whatif(GEMM, {"engine": {"tensor": 0.5}})  # scale= forgotten
    with pytest.raises(TypeError, match="trace: a bundle's path or an opened Trace, not int"):
        tracekit.stalls(42)  # type: ignore[arg-type]


def test_replay_is_a_package_and_a_call() -> None:
    import tracekit.replay.run as run

    assert isinstance(tracekit.replay, types.ModuleType)
    assert callable(tracekit.replay)
    assert tracekit.replay.run is run
    result = run.replay(tracekit.open_trace(GEMM))
    assert result.makespan == tracekit.replay(GEMM).makespan
