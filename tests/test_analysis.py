"""Stall accounting and critical path: exact on tiny traces, invariants on random graphs and on
every sample trace, and the critical path against networkx's longest path."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.critical_path import critical_path
from tracekit.analysis.stalls import stall_table
from tracekit.analysis.timelines import Source, kind_latencies, timeline
from tracekit.cli.app import app
from tracekit.replay.machine import Machine, builtin_machine, parse_machine
from tracekit.trace.builder import TraceBuilder
from tracekit.workloads.samples import SAMPLES

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_traces"


def _machine(sem_latency: float = 12.0) -> Machine:
    return parse_machine({
        "name": "t", "clock_hz": 1e9, "hbm": {"bytes_per_cycle": 1e6},
        "dma": {"bytes_per_cycle": 1e6}, "latency": {"semaphore": sem_latency},
        "memory": {"partitions": 128, "sbuf_partition_bytes": 1024,
                   "psum_partition_bytes": 1024},
        "engines": {"default": {"per_element": 1.0}}}, "test")


def _sums_to_makespan(table: pl.DataFrame, makespan: int) -> None:
    per_engine = table.group_by("engine").agg(pl.col("cycles").sum())
    assert per_engine["cycles"].to_list() == [makespan] * per_engine.height, per_engine


def _tiny(tmp_path: Path) -> tracekit.Trace:
    b = TraceBuilder("tiny")
    load = b.inst("dma.q0", "dma_load", 0, 40, elements=40)
    mm = b.inst("tensor", "matmul", 52, 100, elements=48)
    store = b.inst("tensor", "store", 100, 140, elements=40)
    b.signal(load, 0)
    b.wait(mm, 0, 1)
    return b.write(tmp_path / "tiny"), (load, mm, store)


def test_exact_critical_path_and_stalls_on_a_tiny_trace(tmp_path: Path) -> None:
    trace, (load, mm, store) = _tiny(tmp_path)
    for source in Source:
        t = timeline(trace, _machine(12.0), source)
        path = critical_path(t.frame, t.graph, t.kind_latency)
        assert path.makespan == 140
        assert path.steps["id"].to_list() == [load, mm, store]
        assert path.steps["gap"].to_list() == [0, 12, 0]
        assert path.steps["edge_kind"].to_list() == [None, "semaphore", "order"]
        assert dict(path.by_engine.select("engine", "cycles").iter_rows()) == {
            "tensor": 88, "dma.q0": 40, "(edge latency)": 12}
        assert path.slack["slack"].to_list() == [0, 0, 0]
        stalls = stall_table(t.frame)
        assert stalls.filter(pl.col("engine") == "tensor").select(
            "bucket", "cause", "cycles").rows() == [
            ("busy", "matmul", 48), ("busy", "store", 40), ("idle", "before first", 52)]
        assert stalls.filter(pl.col("engine") == "dma.q0").select(
            "bucket", "cause", "cycles").rows() == [
            ("busy", "dma_load", 40), ("idle", "after last", 100)]


def test_slack_of_an_off_path_instruction(tmp_path: Path) -> None:
    b = TraceBuilder("slack")
    a = b.inst("vector", "add", elements=10)      # 0-10, feeds nothing
    c = b.inst("tensor", "matmul", elements=100)  # 0-100, the makespan
    trace = b.write(tmp_path / "t")
    t = timeline(trace, _machine(), Source.REPLAYED)
    path = critical_path(t.frame, t.graph, t.kind_latency)
    assert path.steps["id"].to_list() == [c]
    assert dict(path.slack.select("id", "slack").iter_rows()) == {a: 90, c: 0}


@pytest.mark.parametrize("sample", [s.name for s in SAMPLES])
def test_stall_buckets_sum_to_the_makespan_on_every_sample(sample: str) -> None:
    trace = tracekit.open_trace(SAMPLE_DIR / sample)
    sources = [Source.REPLAYED]
    if trace.manifest.extra["generator"]["timing"] is not None and sample != "mlp_faults":
        sources.append(Source.OBSERVED)
    for source in sources:
        try:
            t = timeline(trace, builtin_machine(), source)
        except tracekit.TracekitError:
            assert sample == "mlp_faults"  # deadlocked: replay stops, by design
            continue
        makespan = int(t.frame["end"].max() - t.frame["start"].min())
        _sums_to_makespan(stall_table(t.frame), makespan)


@st.composite
def random_trace(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(2, 25))
    engines = [draw(st.sampled_from(["tensor", "vector", "scalar", "gpsimd"])) for _ in range(n)]
    sizes = [draw(st.integers(0, 50)) for _ in range(n)]
    waits = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=n))
    return engines, sizes, [(a, b) for a, b in waits if a < b]


@settings(max_examples=40, deadline=None)
@given(random_trace())
def test_random_graphs_stalls_sum_and_path_matches_networkx(case) -> None:  # type: ignore[no-untyped-def]
    engines, sizes, waits = case
    import tempfile

    b = TraceBuilder("random")
    for engine, size in zip(engines, sizes, strict=True):
        b.inst(engine, "op", elements=size)
    for k, (a, c) in enumerate(waits):
        b.signal(a, k)
        b.wait(c, k, 1)
    with tempfile.TemporaryDirectory() as folder:
        trace = b.write(Path(folder) / "t")
        machine = _machine(7.0)
        t = timeline(trace, machine, Source.REPLAYED)
        makespan = int(t.frame["end"].max() - t.frame["start"].min())
        _sums_to_makespan(stall_table(t.frame), makespan)
        path = critical_path(t.frame, t.graph, kind_latencies(machine))
        # Oracle: longest path where an edge costs its source's duration plus its latency.
        g = nx.DiGraph()
        duration = dict(zip(t.frame["id"].to_list(), t.frame["duration"].to_list(),
                            strict=True))
        lat = kind_latencies(machine)
        for src, dst, kind in t.graph.edge_frame().iter_rows():
            from tracekit.replay.graph import KINDS

            weight = duration[src] + lat[[k.value for k in KINDS].index(kind)]
            if not g.has_edge(src, dst) or g[src][dst]["weight"] < weight:
                g.add_edge(src, dst, weight=weight)
        for node, d in duration.items():
            g.add_edge(node, "sink", weight=d)
        expected = nx.dag_longest_path_length(g, weight="weight")
        assert path.makespan == expected == int(path.steps["duration"].sum()
                                                + path.steps["gap"].sum())
        assert int(np.min(path.slack["slack"].to_numpy())) >= 0


def test_cli_stalls_and_critical_path(tmp_path: Path) -> None:
    trace, _ = _tiny(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["stalls", str(trace.path), "--timeline", "observed"])
    assert result.exit_code == 0, result.output
    assert "before first" in result.stdout
    result = runner.invoke(app, ["critical-path", str(trace.path), "--format", "json",
                                 "--timeline", "observed"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.stdout)
    assert data["makespan_cycles"] == 140 and data["steps"] == 3
    result = runner.invoke(app, ["stalls", str(trace.path), "--timeline", "sideways"])
    assert result.exit_code == 2
    untimed = TraceBuilder("u")
    untimed.inst("tensor", "matmul")
    untimed.write(tmp_path / "u")
    result = runner.invoke(app, ["stalls", str(tmp_path / "u"), "--timeline", "observed"])
    assert result.exit_code == 1 and "untimed" in result.stderr
