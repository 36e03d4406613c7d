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


# --- what-if, sensitivity, calibration ------------------------------------------------------


def _two_engines(tmp_path: Path) -> tracekit.Trace:
    """tensor: two 50-cycle ops in a row (the makespan); vector: one 10-cycle op beside them."""
    b = TraceBuilder("two")
    b.inst("tensor", "matmul", elements=50)
    b.inst("tensor", "matmul", elements=50)
    b.inst("vector", "add", elements=10)
    return b.write(tmp_path / "two")


def test_whatif_gains_what_a_hand_calculation_says(tmp_path: Path) -> None:
    from tracekit.analysis.whatif import Change, whatif

    trace = _two_engines(tmp_path)
    machine = _machine()
    off_path = whatif(trace, machine, [Change("engine", "vector", 0.5)])
    assert (off_path.base_makespan, off_path.makespan, off_path.gained) == (100, 100, 0)
    halved = whatif(trace, machine, [Change("engine", "tensor", 0.5)])
    assert (halved.makespan, halved.gained) == (50, 50)
    assert halved.change_pct == pytest.approx(-50.0)


def test_sensitivity_ranks_the_critical_engine_first(tmp_path: Path) -> None:
    from tracekit.analysis.whatif import sensitivity

    table = sensitivity(_two_engines(tmp_path), _machine())
    gained = {(g, n): v for g, n, v in table.select("group", "name", "gained").iter_rows()}
    assert gained[("engine", "tensor")] == 10       # 10 % of the 100-cycle chain
    assert gained[("opcode", "matmul")] == 10
    assert gained[("engine", "vector")] == 0
    assert table.row(0, named=True)["gained"] == 10


def test_calibration_beats_the_default_on_unseen_shapes_and_seeds(tmp_path: Path) -> None:
    from tracekit.analysis.calibrate import calibrate, machine_toml
    from tracekit.replay.machine import load_machine
    from tracekit.replay.run import replay
    from tracekit.workloads.generate import generate

    fitted_on = [
        generate("gemm", tmp_path / "a", params={"m": 512, "n": 1024, "k": 768}, seed=1),
        generate("mlp", tmp_path / "b", params={"widths": (256, 512, 256), "batch": 256},
                 seed=2)]
    result = calibrate(fitted_on, builtin_machine())
    (tmp_path / "m.toml").write_text(machine_toml(result.machine), encoding="utf-8")
    calibrated = load_machine(tmp_path / "m.toml")
    unseen = generate("gemm", tmp_path / "c", params={"m": 768, "n": 512, "k": 1024}, seed=9)

    def errors(machine):  # type: ignore[no-untyped-def]
        r = replay(unseen, machine)
        t = r.timeline
        observed = t["observed_end"] - t["observed_start"]
        mape = float(((t["duration"] - observed).abs() / observed).mean())
        span = int(t["observed_end"].max() - t["observed_start"].min())
        return mape, abs(r.makespan - span) / span

    default_mape, default_span = errors(builtin_machine())
    fitted_mape, fitted_span = errors(calibrated)
    assert fitted_mape < default_mape
    assert fitted_span < default_span


def test_cli_whatif_sensitivity_calibrate_analyze(tmp_path: Path) -> None:
    import json

    runner = CliRunner()
    sample = str(SAMPLE_DIR / "mlp")
    result = runner.invoke(app, ["whatif", sample, "--scale", "engine=tensor:0.5",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gained_cycles"] > 0
    assert runner.invoke(app, ["whatif", sample]).exit_code == 2
    bad = runner.invoke(app, ["whatif", sample, "--scale", "engine=nosuch:0.5"])
    assert bad.exit_code == 1
    assert bad.stderr == ("error: no instruction has engine 'nosuch'; the trace's engines are "
                          "dma.q0, dma.q1, dma.q2, dma.q3, scalar, tensor, vector.\n")
    result = runner.invoke(app, ["sensitivity", sample, "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ranking"]
    out = tmp_path / "cal.toml"
    result = runner.invoke(app, ["calibrate", str(SAMPLE_DIR / "gemm"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["replay", sample, "--machine", str(out)]).exit_code == 0
    again = runner.invoke(app, ["calibrate", str(SAMPLE_DIR / "gemm"), "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    untimed = runner.invoke(app, ["calibrate", str(SAMPLE_DIR / "layernorm_untimed"), "-o",
                                  str(tmp_path / "u.toml")])
    assert untimed.exit_code == 1 and "no observed timing" in untimed.stderr
    for fmt, check in (("text", "stalls"), ("md", "# Analysis"), ("json", '"stalls"')):
        result = runner.invoke(app, ["analyze", sample, "--format", fmt])
        assert result.exit_code == 0, result.output
        assert check in result.stdout


def test_held_out_split_is_a_fixed_fifth_of_the_ids() -> None:
    from tracekit.analysis.calibrate import held_out

    assert held_out(np.arange(20)).astype(int).tolist() == [
        1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0]
    assert int(held_out(np.arange(100_000)).sum()) == 20_036
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any int64 id, and no overflow warning on the way
        assert held_out(np.array([-1, 2**62, 2**63 - 1])).tolist() == [False, True, False]


def _fits_trace(tmp_path: Path) -> tracekit.Trace:
    """vector add: exactly 10 + 2 cycles per element; scalar act: random durations over
    varying elements; gpsimd iota: random durations, all of one shape (64 elements)."""
    b = TraceBuilder("fits")
    rng = np.random.default_rng(7)
    t = 0
    for i in range(40):
        e = 8 * (i + 1)
        b.inst("vector", "add", t, t + 10 + 2 * e, elements=e)
        t += 10 + 2 * e
    for i in range(40):
        duration = int(rng.integers(100, 1000))
        b.inst("scalar", "act", t, t + duration, elements=8 * (i + 1))
        t += duration
    for _ in range(40):
        duration = int(rng.integers(100, 1000))
        b.inst("gpsimd", "iota", t, t + duration, elements=64)
        t += duration
    return b.write(tmp_path / "fits")


def test_calibration_judges_fits_on_held_out_instructions(tmp_path: Path) -> None:
    from tracekit.analysis.calibrate import calibrate, held_out

    trace = _fits_trace(tmp_path)
    result = calibrate([trace], builtin_machine())
    fits = {r["opcode"]: r for r in result.fits.iter_rows(named=True)}
    ids = trace.read("instructions", ["id", "opcode"])
    for opcode, row in fits.items():
        group = ids.filter(pl.col("opcode") == opcode)["id"].to_numpy()
        assert row["samples"] == 40
        assert row["held_out"] == int(held_out(group).sum()) > 0
    linear = fits["add"]  # perfectly linear: exact on the instructions it never saw
    assert (linear["fixed_cycles"], linear["per_element"]) == (pytest.approx(10.0),
                                                               pytest.approx(2.0))
    assert linear["held_out_r2"] == pytest.approx(1.0, abs=1e-12)
    assert linear["held_out_mape_pct"] == pytest.approx(0.0, abs=1e-9)
    assert fits["act"]["held_out_r2"] < 0.5
    assert fits["iota"]["held_out_r2"] is None  # one shape: a constant has nothing to explain
    assert fits["iota"]["held_out_mape_pct"] > 20
    assert [(w.engine, w.opcode) for w in result.warnings] == [("gpsimd", "iota"),
                                                               ("scalar", "act")]
    assert result.warnings[1].message.startswith(
        f"scalar act: held-out R2 {fits['act']['held_out_r2']:.3f} (below 0.5; MAPE ")
    assert "not linear in elements" in result.warnings[1].message
    assert "every instance has the same work" in result.warnings[0].message
    assert result.held_out.samples == sum(r["held_out"] for r in fits.values())


def test_calibration_of_linear_durations_warns_of_nothing(tmp_path: Path) -> None:
    from tracekit.analysis.calibrate import calibrate

    b = TraceBuilder("linear")
    for i in range(30):
        b.inst("vector", "add", 100 * i, 100 * i + 20 + i, elements=i)
    result = calibrate([b.write(tmp_path / "l")], builtin_machine())
    assert result.warnings == ()
    assert result.held_out.r2 == pytest.approx(1.0, abs=1e-12)
    out = tmp_path / "m.toml"
    cli = CliRunner().invoke(app, ["calibrate", str(tmp_path / "l"), "-o", str(out)])
    assert cli.exit_code == 0 and cli.stderr == "", cli.output


def test_cli_calibrate_warns_on_stderr_json_and_md(tmp_path: Path) -> None:
    import json

    _fits_trace(tmp_path)
    runner = CliRunner()
    out = {}
    for fmt in ("text", "json", "md"):
        machine = tmp_path / f"m-{fmt}.toml"
        result = runner.invoke(app, ["calibrate", str(tmp_path / "fits"), "-o", str(machine),
                                     "--format", fmt])
        assert result.exit_code == 0, result.output
        lines = result.stderr.splitlines()
        assert [line.split(":")[1].strip() for line in lines] == ["gpsimd iota", "scalar act"]
        assert all(line.startswith("warning: ") for line in lines)
        assert machine.exists()
        out[fmt] = result.stdout
    assert "## Warnings" in out["md"] and "| scalar | act | scalar act: held-out R2" in out["md"]
    assert "warning" not in out["text"]  # warnings go to stderr, the report to stdout
    data = json.loads(out["json"])
    assert [(w["engine"], w["opcode"]) for w in data["warnings"]] == [("gpsimd", "iota"),
                                                                      ("scalar", "act")]
    assert data["held_out"]["samples"] == sum(f["held_out"] for f in data["fits"])
    add = next(f for f in data["fits"] if f["opcode"] == "add")
    assert add["per_element"] == pytest.approx(2.0) and add["held_out_r2"] == 1.0


def _contending_queues(tmp_path: Path) -> tuple[tracekit.Trace, Machine]:
    """Two DMA queues of 64 B/cycle share 64 B/cycle of HBM. dma.q1 loads 64,000 bytes at
    0-1000 and signals the tensor's 1000-cycle matmul (1000-2000, the makespan). dma.q0
    pauses 1100 cycles (no bytes), then loads 6400 bytes at 1100-1200, after dma.q1 is done.
    dma.q0 10 % faster: its pause ends at 990, and its 5760 bytes share HBM with dma.q1's last
    640: both move at 32 B/cycle, dma.q1 ends at 1010 (10 cycles of contention), the matmul
    at 2010; dma.q0's load ends at 1090 (10 cycles of contention too)."""
    b = TraceBuilder("contend")
    b.inst("dma.q0", "pause")
    b.inst("dma.q0", "load", bytes=6400)
    load = b.inst("dma.q1", "load", bytes=64_000)
    mm = b.inst("tensor", "matmul")
    b.signal(load, 0)
    b.wait(mm, 0, 1)
    machine = parse_machine({
        "name": "contend", "clock_hz": 1e9, "hbm": {"bytes_per_cycle": 64.0},
        "dma": {"bytes_per_cycle": 64.0}, "latency": {"semaphore": 0.0},
        "memory": {"partitions": 128, "sbuf_partition_bytes": 1024,
                   "psum_partition_bytes": 1024},
        "engines": {"dma": {"opcodes": {"pause": {"fixed_cycles": 1100.0}}},
                    "tensor": {"fixed_cycles": 1000.0}}}, "test")
    return b.write(tmp_path / "contend"), machine


def test_sensitivity_explains_a_faster_queue_that_slows_the_run(tmp_path: Path) -> None:
    from tracekit.analysis.whatif import sensitivity

    trace, machine = _contending_queues(tmp_path)
    table = sensitivity(trace, machine)
    rows = {(r["group"], r["name"]): r for r in table.iter_rows(named=True)}
    q0 = rows[("engine", "dma.q0")]
    assert (q0["makespan"], q0["gained"], q0["contention_delta"]) == (2010, -10, 20)
    assert q0["why"] == (
        "engine dma.q0 10 % faster makes the run 10 cycles longer: HBM contention +10 cycles "
        "on the other queues dma.q1 (0 -> 10), +10 cycles on dma.q0 itself (0 -> 10) and +10 "
        "cycles on the critical path (0 -> 10); the critical path spends +10 cycles on dma.q1")
    tensor = rows[("engine", "tensor")]
    assert (tensor["gained"], tensor["why"]) == (100, None)
    assert table.row(table.height - 1, named=True)["gained"] < 0
    assert all(r["why"] is None for r in rows.values() if r["gained"] >= 0)


def test_whatif_explains_in_every_format(tmp_path: Path) -> None:
    import json

    from tracekit.analysis.calibrate import machine_toml
    from tracekit.analysis.whatif import Change, whatif

    trace, machine = _contending_queues(tmp_path)
    result = whatif(trace, machine, [Change("engine", "dma.q0", 0.9)])
    assert (result.base_makespan, result.makespan) == (2000, 2010)
    assert result.why is not None and result.why.startswith(
        "the change (engine=dma.q0:0.9) makes the run 10 cycles longer: HBM contention +10 "
        "cycles on the other queues dma.q1 (0 -> 10)")
    # Busy without the HBM contention (docs/glossary.md): dma.q0's 1,090 cycles after the
    # change are 1,080 moving at its own bandwidth and 10 waiting for HBM.
    assert result.engines.rows() == [("dma.q0", 1200, 1080, 0, 10),
                                     ("dma.q1", 1000, 1000, 0, 10),
                                     ("tensor", 1000, 1000, 0, 0)]
    slower = whatif(trace, machine, [Change("engine", "dma.q0", 1.1)])
    assert (slower.makespan, slower.why) == (2000, None)  # no faster part made it longer
    (tmp_path / "m.toml").write_text(machine_toml(machine), encoding="utf-8")
    args = ["whatif", str(trace.path), "-m", str(tmp_path / "m.toml"), "--scale",
            "engine=dma.q0:0.9", "--format"]
    runner = CliRunner()
    data = json.loads(runner.invoke(app, [*args, "json"]).stdout)
    assert data["why"] == result.why and data["gained_cycles"] == -10
    assert data["engines"][1] == {"engine": "dma.q1", "busy_base": 1000, "busy_after": 1000,
                                  "contention_base": 0, "contention_after": 10}
    md = runner.invoke(app, [*args, "md"]).stdout
    assert f"- **why**: {result.why}\n" in md
    assert "| dma.q1 | 1,000 | 1,000 | 0 | 10 |" in md
    text = runner.invoke(app, [*args, "text"]).stdout
    assert " ".join(text.split()).count(f"why {result.why}") == 1
    sens = runner.invoke(app, ["sensitivity", str(trace.path), "-m", str(tmp_path / "m.toml"),
                               "--top", "1"])
    assert sens.exit_code == 0, sens.output
    # The explanations are shown even for rows below --top.
    assert "why a faster part makes the run longer\n  engine dma.q0 10 % faster" in sens.stdout


# --- review fixes -----------------------------------------------------------------------------


def test_stalls_sum_with_negative_times(tmp_path: Path) -> None:
    b = TraceBuilder("neg")
    a = b.inst("tensor", "matmul", -10, -5)
    c = b.inst("tensor", "matmul", -3, 5)
    d = b.inst("vector", "add", 0, 20)
    b.dep(c, d, "data")
    _ = a
    t = timeline(b.write(tmp_path / "neg", validate=False), _machine(0.0), Source.OBSERVED)
    _sums_to_makespan(stall_table(t.frame), 30)


def test_observed_path_with_overlap_and_unexplained_gap(tmp_path: Path) -> None:
    b = TraceBuilder("overlap")
    b.inst("tensor", "matmul", 0, 100)
    b.inst("tensor", "matmul", 10, 50)
    b.inst("tensor", "matmul", 60, 150)
    t = timeline(b.write(tmp_path / "o", validate=False), _machine(0.0), Source.OBSERVED)
    path = critical_path(t.frame, t.graph, t.kind_latency)
    parts = dict(path.by_engine.select("engine", "cycles").iter_rows())
    assert sum(parts.values()) == path.makespan == 150
    assert path.by_engine["pct"].max() <= 100
    assert int(path.slack["slack"].min()) >= 0


def test_calibrated_machine_with_odd_names_loads_back(tmp_path: Path) -> None:
    from tracekit.analysis.calibrate import calibrate, machine_toml
    from tracekit.replay.machine import load_machine

    b = TraceBuilder("odd")
    for i in range(4):
        b.inst('ten"sor\\x', 'lo"ad|', i * 100, i * 100 + 50 + i, elements=10 + i)
    trace = b.write(tmp_path / "odd")
    text = machine_toml(calibrate([trace], builtin_machine()).machine)
    (tmp_path / "m.toml").write_text(text, encoding="utf-8")
    machine = load_machine(tmp_path / "m.toml")
    assert ('ten"sor\\x', 'lo"ad|') in machine.opcodes


def test_calibration_replaces_a_shadowing_engine_specific_entry(tmp_path: Path) -> None:
    import dataclasses

    from tracekit.analysis.calibrate import calibrate
    from tracekit.replay.machine import Latency

    base = builtin_machine()
    base = dataclasses.replace(base, opcodes={**base.opcodes,
                                              ("dma.q0", "dma_load"): Latency(5000.0)})
    fitted = calibrate([tracekit.open_trace(SAMPLE_DIR / "gemm")], base).machine
    assert ("dma.q0", "dma_load") not in fitted.opcodes
    assert fitted.latency("dma.q0", "dma_load").fixed_cycles < 1000


def test_cli_rejects_bad_outputs_and_values(tmp_path: Path) -> None:
    runner = CliRunner()
    sample = str(SAMPLE_DIR / "gemm")
    missing = runner.invoke(app, ["calibrate", sample, "-o", str(tmp_path / "no" / "m.toml")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    for bad in ("semaphore_latency=inf", "hbm_bandwidth=1e300", "dma_bandwidth=0"):
        result = runner.invoke(app, ["whatif", sample, "--set", bad])
        assert result.exit_code == 1 and "must be between" in result.stderr, bad
    result = runner.invoke(app, ["whatif", sample, "--scale", "engine=tensor:1e-300"])
    assert result.exit_code == 1
    assert runner.invoke(app, ["critical-path", sample, "--steps", "-1"]).exit_code == 2


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    b = TraceBuilder("pipe")
    b.inst("ten|sor", "mat|mul", 0, 10, elements=10)
    b.write(tmp_path / "p")
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "p"), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "| ten\\|sor | busy | mat\\|mul |" in result.stdout


def test_critical_path_of_a_cycle_is_a_clear_error(tmp_path: Path) -> None:
    from tracekit.cli.app import app

    b = TraceBuilder("cyc")
    x = b.inst("vector", "copy", 0, 10)
    y = b.inst("scalar", "act", 20, 30)
    b.dep(x, y)
    b.dep(y, x)
    b.write(tmp_path / "cyc", validate=False)
    result = CliRunner().invoke(app, ["critical-path", str(tmp_path / "cyc"),
                                      "--timeline", "observed"])
    assert result.exit_code == 1
    assert "2 instructions depend on each other in a cycle" in result.stderr
