"""`tracekit diff`: exact figures on tiny pairs built in code, and generated pairs whose cause
is known (a slowed DMA queue, double buffering switched off, identical runs)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.diff import DiffError, diff, profile
from tracekit.analysis.timelines import Source
from tracekit.cli.app import app
from tracekit.replay.machine import builtin_machine
from tracekit.trace.builder import TraceBuilder
from tracekit.workloads.generate import generate
from tracekit.workloads.lowering import Tiling

GEMM = {"m": 256, "n": 512, "k": 512}


def _pair(tmp_path: Path, slow: int) -> tuple[Path, Path]:
    """load (0-100) -> matmul (112-212, semaphore) on both; the candidate's load is `slow`
    cycles longer and its matmul starts that much later."""
    paths = []
    for name, extra in (("base", 0), ("cand", slow)):
        b = TraceBuilder("tiny")
        load = b.inst("dma.q0", "dma_load", 0, 100 + extra, bytes=4096, layer="l0", pc=1)
        mm = b.inst("tensor", "matmul", 112 + extra, 212 + extra, flops=1000, layer="l1", pc=2)
        b.signal(load, 0)
        b.wait(mm, 0, 1)
        paths.append(b.write(tmp_path / name).path)
    return paths[0], paths[1]


def _diff(base: Path, cand: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    m = builtin_machine()
    return diff(profile(tracekit.open_trace(base), m, Source.OBSERVED),
                profile(tracekit.open_trace(cand), m, Source.OBSERVED), **kwargs)


def test_tiny_pair_exact(tmp_path: Path) -> None:
    base, cand = _pair(tmp_path, 50)
    d = _diff(base, cand)
    assert (d.base_makespan, d.cand_makespan, d.delta) == (212, 262, 50)
    assert d.delta_pct == pytest.approx(50 / 212 * 100) and d.regression
    assert d.attribution_engine.select("engine", "base", "cand", "delta",
                                       "share_pct").rows() == [("dma.q0", 100, 150, 50, 100.0)]
    assert d.attribution_layer.rows()[0][:4] == ("l0", 100, 150, 50)
    assert d.by_engine.filter(pl.col("engine") == "dma.q0").select(
        "busy_base", "busy_cand", "busy_delta").row(0) == (100, 150, 50)
    assert d.alignment == "pc and occurrence" and (d.matched, d.only_base, d.only_cand) == (
        2, 0, 0)
    assert d.changed.select("key", "base_id", "cand_id", "base", "cand", "delta",
                            "start_shift").rows() == [("pc 1 #0", 0, 0, 100, 150, 50, 0)]
    assert d.new_findings.height == 0 and d.resolved_findings.height == 0
    assert not _diff(base, cand, threshold_pct=30.0).regression


def test_alignment_without_pc_uses_layer_opcode_occurrence(tmp_path: Path) -> None:
    paths = []
    for name, ops in (("base", ["a", "b", "a"]), ("cand", ["a", "a", "c"])):
        b = TraceBuilder("tiny")
        t = 0
        for op in ops:
            b.inst("vector", op, t, t + 10, layer="x")
            t += 10
        paths.append(b.write(tmp_path / name).path)
    d = _diff(*paths)
    assert d.alignment == "layer, opcode and occurrence"
    assert (d.matched, d.only_base, d.only_cand) == (2, 1, 1)  # a#0, a#1 | b#0 | c#0
    assert d.by_opcode.filter(pl.col("opcode") == "b").select(
        "instructions_base", "instructions_cand", "instructions_delta").row(0) == (1, 0, -1)


def test_slowed_dma_queue_is_blamed(tmp_path: Path) -> None:
    base = generate("gemm", tmp_path / "base", params=GEMM, seed=3)
    cand = generate("gemm", tmp_path / "cand", params=GEMM, seed=3, inject=["slow-queue"])
    (fault,) = cand.manifest.extra["generator"]["faults"]
    d = _diff(base.path, cand.path)
    assert d.delta > 0 and d.regression
    assert d.attribution_engine["engine"][0] == fault["engine"]
    assert d.attribution_engine["delta"].sum() == d.delta
    assert d.attribution_layer["delta"].sum() == d.delta
    # The layer fed by that queue takes the change; the slowed queue's own busy time grew.
    assert d.attribution_layer.filter(pl.col("layer") == "gemm")["delta"].item() > 0
    top = d.by_engine.sort("busy_delta", descending=True)
    assert top["engine"][0] == fault["engine"]
    assert d.changed["engine"][0] == fault["engine"]
    assert "slow-engine" in d.new_findings["code"].to_list()


def test_double_buffering_off_is_blamed_on_dma_waits(tmp_path: Path) -> None:
    base = generate("gemm", tmp_path / "base", params=GEMM, seed=1)
    cand = generate("gemm", tmp_path / "cand", params=GEMM, seed=1,
                    tiling=Tiling(double_buffer=False))
    d = _diff(base.path, cand.path)
    assert d.delta > 0
    # The loads no longer overlap the matmuls: the critical path gains DMA time ...
    on_path = d.attribution_engine.filter(pl.col("engine").str.starts_with("dma."))
    assert on_path["share_pct"].sum() > 90
    # ... and the compute engines' waits on the DMA queues grow by about the makespan change.
    compute_on_dma = d.stall_causes.filter(
        pl.col("engine").is_in(["tensor", "vector", "scalar", "gpsimd"])
        & pl.col("cause").str.starts_with("dma."))["delta"].sum()
    assert compute_on_dma == pytest.approx(d.delta, rel=0.1)
    assert d.attribution_engine["delta"].sum() == d.delta


def test_identical_traces_cli(tmp_path: Path) -> None:
    base = generate("gemm", tmp_path / "base", params=GEMM, seed=2)
    runner = CliRunner()
    result = runner.invoke(app, ["diff", str(base.path), str(base.path), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["delta_cycles"] == 0 and data["regression"] is False
    assert all(r["busy_delta"] == 0 and r["stall_delta"] == 0 for r in data["by_engine"])
    assert data["attribution_by_engine"] == [] and data["attribution_by_layer"] == []
    assert data["changed_instructions"] == [] and data["stall_causes"] == []
    assert data["new_findings"] == [] and data["resolved_findings"] == []
    text = runner.invoke(app, ["diff", str(base.path), str(base.path)])
    assert text.exit_code == 0 and text.stdout.startswith("ok: makespan")


def test_cli_regression_exit_and_formats(tmp_path: Path) -> None:
    base, cand = _pair(tmp_path, 50)
    runner = CliRunner()
    result = runner.invoke(app, ["diff", str(base), str(cand)])
    assert result.exit_code == 3
    assert result.stdout.splitlines()[0] == (
        "REGRESSION: makespan 212 -> 262 cycles (+50, +23.58%; threshold 2%)")
    assert runner.invoke(app, ["diff", str(base), str(cand), "--threshold", "30"]).exit_code == 0
    # A speed-up is never a regression.
    assert runner.invoke(app, ["diff", str(cand), str(base)]).exit_code == 0
    junit = runner.invoke(app, ["diff", str(base), str(cand), "--format", "junit"])
    suite = ET.fromstring(junit.stdout)
    (case,) = suite.findall("testcase")
    assert suite.get("failures") == "1" and case.get("name") == "tiny: makespan"
    assert "dma.q0: +50 cycles (100.0% of the change)" in case.find("failure").text
    md = runner.invoke(app, ["diff", str(base), str(cand), "--format", "md"])
    assert "## makespan change by engine (critical path)" in md.stdout
    assert "| dma.q0 | 100 | 150 | +50 | 100.0 |" in md.stdout
    again = runner.invoke(app, ["diff", str(base), str(cand), "--format", "md"])
    assert again.stdout == md.stdout


def test_cli_refuses_different_workloads_and_bad_input(tmp_path: Path) -> None:
    base, _ = _pair(tmp_path, 0)
    b = TraceBuilder("other")
    b.inst("vector", "copy", 0, 10)
    other = b.write(tmp_path / "other").path
    runner = CliRunner()
    refused = runner.invoke(app, ["diff", str(base), str(other)])
    assert refused.exit_code == 1
    assert "is workload 'tiny' but" in refused.stderr and "--force" in refused.stderr
    assert runner.invoke(app, ["diff", str(base), str(other), "--force"]).exit_code in (0, 3)
    with pytest.raises(DiffError):
        _diff(base, other)
    missing = runner.invoke(app, ["diff", str(base), str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "nope" in missing.stderr
    bad = runner.invoke(app, ["diff", str(base), str(base), "--timeline", "sideways"])
    assert bad.exit_code == 2
    untimed = TraceBuilder("tiny")
    untimed.inst("vector", "copy")
    path = untimed.write(tmp_path / "untimed").path
    observed = runner.invoke(app, ["diff", str(base), str(path), "--timeline", "observed"])
    assert observed.exit_code == 1 and "untimed" in observed.stderr


def test_null_layers_are_one_group_in_the_attribution(tmp_path: Path) -> None:
    paths = []
    for name, extra in (("base", 0), ("cand", 50)):
        b = TraceBuilder("tiny")
        load = b.inst("dma.q0", "dma_load", 0, 100 + extra, bytes=4096)
        mm = b.inst("tensor", "matmul", 112 + extra, 212 + extra, flops=1000)
        b.signal(load, 0)
        b.wait(mm, 0, 1)
        paths.append(b.write(tmp_path / name).path)
    d = _diff(*paths)
    assert d.attribution_layer.select("layer", "base", "cand", "delta", "share_pct").rows() == [
        ("(none)", 200, 250, 50, 100.0)]


def test_findings_are_matched_across_runs_by_what_they_are_about(tmp_path: Path) -> None:
    base = generate("gemm", tmp_path / "base", params=GEMM, seed=1)
    cand = generate("gemm", tmp_path / "cand", params=GEMM, seed=1, inject=["slow-queue"])
    d = _diff(base.path, cand.path)
    # The reload summary is the same finding in both runs though its example ids moved.
    assert "redundant-reload" not in d.new_findings["code"].to_list()
    assert d.resolved_findings.height == 0
    # A bandwidth error over all queues is new even when a queue-scope one with the same
    # instruction was there before.
    paths = []
    for name, nbytes in (("b", 12_800), ("c", 25_600)):
        b = TraceBuilder("bw")
        b.inst("dma.q1", "dma_load", 0, 100, bytes=nbytes)
        paths.append(b.write(tmp_path / name).path)
    d = _diff(*paths)
    assert d.new_findings.select("code").to_series().to_list() == ["bandwidth-beyond-physics"]
    assert d.new_findings["message"][0].startswith("all DMA queues")


def test_alignment_keys_do_not_collide(tmp_path: Path) -> None:
    paths = []
    for name in ("base", "cand"):
        b = TraceBuilder("tiny")
        b.inst("vector", "c", 0, 10, layer="a#b")
        b.inst("vector", "b#c", 10, 20, layer="a")
        paths.append(b.write(tmp_path / name).path)
    d = _diff(*paths)
    assert (d.matched, d.only_base, d.only_cand) == (2, 0, 0)


def test_replayed_busy_and_stall_match_the_stall_table(tmp_path: Path) -> None:
    trace = tracekit.open_trace(Path(__file__).resolve().parent.parent / "sample_traces"
                                / "attention")
    p = profile(trace, builtin_machine(), Source.REPLAYED, findings=False)
    per_engine = p.instructions.group_by("engine").agg(pl.col("duration").sum(),
                                                       pl.col("wait").sum())
    table = p.stalls.group_by("engine", "bucket").agg(pl.col("cycles").sum())
    for engine, busy, wait in per_engine.iter_rows():
        got = dict(table.filter(pl.col("engine") == engine).select("bucket", "cycles")
                   .iter_rows())
        assert (busy, wait) == (got.get("busy", 0), got.get("waiting", 0)), engine


def test_empty_base_and_bad_threshold_are_refused(tmp_path: Path) -> None:
    empty = TraceBuilder("tiny").write(tmp_path / "empty").path
    base, _ = _pair(tmp_path, 0)
    runner = CliRunner()
    result = runner.invoke(app, ["diff", str(empty), str(base)])
    assert result.exit_code == 1 and "has no instructions" in result.stderr
    for bad in ("nan", "inf"):
        refused = runner.invoke(app, ["diff", str(base), str(base), "--threshold", bad])
        assert refused.exit_code == 2, bad
