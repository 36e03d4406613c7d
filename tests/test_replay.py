"""The replay engine: the machine TOML format, the dependency graph, exact replays on hand-built
traces (semaphore and order edges, HBM contention with water-filling), properties on random
DAGs (hypothesis), a networkx longest-path oracle, observed mode on generated traces, stuck
replays, the `replay` and `machines` commands, and the correlation numbers.

Machines here are built from a dict (`machine_dict`) with round numbers, so that every expected
start and end below is computed by hand in the test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import tracekit
from tracekit.analysis.replay_report import correlate, summarize_replay
from tracekit.cli.app import app
from tracekit.replay.graph import derive
from tracekit.replay.machine import (
    BUILTIN,
    Latency,
    Machine,
    MachineError,
    builtin_machine,
    builtin_machines,
    engine_kind,
    load_machine,
    parse_machine,
    resolve_machine,
)
from tracekit.replay.run import (
    ReplayError,
    ReplayResult,
    ReplayStuck,
    observed_graph,
    replay,
    write_predicted,
)
from tracekit.trace.builder import TraceBuilder
from tracekit.trace.bundle import Trace, open_trace
from tracekit.trace.schema import EdgeKind
from tracekit.trace.validate import validate
from tracekit.workloads.generate import generate
from tracekit.workloads.timing import ReferenceTiming

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MACHINES = sorted((REPO / "replay" / "machines").glob("*.toml"))

runner = CliRunner()


# --- helpers ---------------------------------------------------------------------------------


def machine_dict(*, hbm: float = 100.0, dma: float = 40.0, semaphore: float = 0.0,
                 data: float = 0.0, engines: dict[str, Any] | None = None,
                 queues: dict[str, float] | None = None) -> dict[str, Any]:
    """A machine document: HBM and per-queue DMA bandwidth (bytes/cycle), semaphore and data
    edge latency (cycles) and the [engines] tables (default: every engine 10 cycles, DMA set-up
    0)."""
    doc: dict[str, Any] = {
        "name": "test",
        "clock_hz": 1.0e9,
        "hbm": {"bytes_per_cycle": hbm},
        "dma": {"bytes_per_cycle": dma},
        "latency": {"semaphore": semaphore, "data": data},
        "memory": {"partitions": 128, "sbuf_partition_bytes": 196608,
                   "psum_partition_bytes": 16384},
        "engines": engines if engines is not None else {"default": {"fixed_cycles": 10.0},
                                                         "dma": {}},
    }
    if queues is not None:
        doc["dma"]["queues"] = queues
    return doc


def make_machine(**kwargs: Any) -> Machine:
    return parse_machine(machine_dict(**kwargs), "test")


def with_queue_caps(machine: Machine, caps: dict[str, float]) -> Machine:
    """The machine with per-queue bandwidths set directly (not through [dma.queues])."""
    return dataclasses.replace(machine, queue_bytes_per_cycle=dict(caps))


def write(b: TraceBuilder, path: Path, *, valid: bool = True) -> Trace:
    return b.write(path, validate=valid, overwrite=True)


def rows(result: ReplayResult) -> dict[int, dict[str, Any]]:
    """Timeline rows by instruction id."""
    return {row["id"]: row for row in result.timeline.iter_rows(named=True)}


def edges(trace: Trace, kind: EdgeKind | None = None) -> set[tuple[int, int, str]]:
    return set(derive(trace).edge_frame(kind).iter_rows())


def ceil_cycles(value: Fraction | int) -> int:
    return math.ceil(value)


def run_cli(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_exit(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# --- 1. machine format -----------------------------------------------------------------------


def test_builtin_machine_loads() -> None:
    m = builtin_machine()
    assert BUILTIN == "trn-like"
    assert m.name == "trn-like"
    assert (m.hbm_bytes_per_cycle, m.dma_bytes_per_cycle) == (192.0, 64.0)
    assert m.semaphore_latency == 12.0
    assert m.latency("tensor", "matmul").fixed_cycles == 64.0
    assert m.latency("dma.q7", "dma_load") == Latency(fixed_cycles=96.0, per_byte=0.00390625)
    assert m.latency("someengine", "op") == Latency(fixed_cycles=16.0)
    assert "trn-like" in builtin_machines()
    assert resolve_machine(None) == m
    assert resolve_machine("trn-like") == m


def test_a_physical_core_prefix_is_not_part_of_the_engine_kind() -> None:
    m = builtin_machine()
    assert [engine_kind(e) for e in ("p1.tensor", "p0.dma.qSyncIO0", "dma.q3", "tensor",
                                     "pool", "p1x.tensor", "pe")] == [
        "tensor", "dma", "dma", "tensor", "pool", "p1x.tensor", "pe"]
    assert m.latency("p1.tensor", "matmul") == m.latency("tensor", "matmul")
    assert m.latency("p0.dma.qSyncIO0", "DMA") == m.latency("dma.q0", "DMA")


@pytest.mark.parametrize("path", EXAMPLE_MACHINES, ids=lambda p: p.name)
def test_example_machine_files_load(path: Path) -> None:
    m = load_machine(path)
    assert m.name == path.stem
    assert m.source == str(path)
    assert m.hbm_bytes_per_cycle > 0 and m.dma_bytes_per_cycle > 0
    assert resolve_machine(str(path)) == m


def test_example_trn_like_is_a_copy_of_the_builtin() -> None:
    example = load_machine(REPO / "replay" / "machines" / "trn-like.toml")
    assert dataclasses.replace(example, source="x") == dataclasses.replace(builtin_machine(),
                                                                           source="x")


@pytest.mark.parametrize("path", EXAMPLE_MACHINES, ids=lambda p: p.name)
def test_every_example_machine_is_a_builtin_name(path: Path) -> None:
    # The files users copy are also names `--machine` takes, for a pip user without the
    # repository: the same file, shipped in the package.
    from importlib import resources

    assert path.stem in builtin_machines()
    shipped = resources.files("tracekit.replay.machines") / path.name
    assert shipped.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    assert dataclasses.replace(load_machine(path), source="x") == dataclasses.replace(
        builtin_machine(path.stem), source="x")
    result = run_cli("replay", REPO / "sample_traces" / "gemm", "--machine", path.stem)
    assert result.exit_code == 0, result.output
    assert path.stem in result.stdout


def _trn_text() -> str:
    return (REPO / "replay" / "machines" / "trn-like.toml").read_text(encoding="utf-8")


def _sub(old: str, new: str) -> Any:
    def change(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)
    return change


@pytest.mark.parametrize(("change", "needles"), [
    (_sub('name = "trn-like"\n', ""), ["name"]),
    (_sub("[hbm]\nbytes_per_cycle = 192.0", "[hbm]\nbytes_per_cycle = -192.0"),
     ["hbm.bytes_per_cycle", "-192"]),
    (_sub("[dma]\nbytes_per_cycle = 64.0", "[dma]\nbytes_per_cycle = -1.0"),
     ["dma.bytes_per_cycle"]),
    (_sub("clock_hz = 1.4e9\n", "clock_hz = 1.4e9\ncolour = \"red\"\n"), ["colour"]),
    (_sub("[engines.tensor]\nfixed_cycles", "[engines.tensor]\nfixd_cycles"),
     ["engines.tensor", "fixd_cycles"]),
    (_sub("[engines.tensor]\nfixed_cycles = 64.0", '[engines.tensor]\nfixed_cycles = "64"'),
     ["engines.tensor.fixed_cycles", "number"]),
    (_sub("clock_hz = 1.4e9", 'clock_hz = "fast"'), ["clock_hz", "number"]),
    (_sub("[latency]\nsemaphore = 12.0", "[latency]\nsemaphore = true"),
     ["latency.semaphore"]),
    (_sub("[hbm]\n", "[hbm\n"), ["TOML"]),
    (lambda text: "name = \"again\"\n" + text, ["TOML"]),
], ids=["missing-name", "negative-hbm", "negative-dma", "unknown-top-key",
        "unknown-latency-key", "string-latency", "string-clock", "bool-semaphore",
        "bad-toml", "duplicate-key"])
def test_machine_errors_name_file_and_key(tmp_path: Path, change: Any,
                                          needles: list[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(change(_trn_text()), encoding="utf-8")
    with pytest.raises(MachineError) as info:
        load_machine(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_machine_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(MachineError, match="no such machine file") as info:
        load_machine(path)
    assert str(path) in str(info.value)
    with pytest.raises(MachineError):
        resolve_machine(str(path))
    with pytest.raises(MachineError, match="no built-in machine"):
        builtin_machine("no-such-machine")


def test_parse_machine_errors_name_source_and_key() -> None:
    doc = machine_dict()
    del doc["hbm"]
    with pytest.raises(MachineError, match=r"^src\.toml: hbm: missing table"):
        parse_machine(doc, "src.toml")
    doc = machine_dict(engines={"tensor": {"opcodes": {"matmul": {"per_flops": 1.0}}}})
    with pytest.raises(MachineError, match=r"engines\.tensor\.opcodes\.matmul.*per_flops"):
        parse_machine(doc, "src.toml")
    with pytest.raises(MachineError, match=r"dma\.queues"):
        parse_machine(machine_dict(queues={"dma.q1": -5.0}), "src.toml")


def test_latency_lookup_precedence() -> None:
    m = make_machine(engines={
        "default": {"fixed_cycles": 1.0},
        "dma": {"fixed_cycles": 2.0, "opcodes": {"dma_load": {"fixed_cycles": 5.0}}},
        "dma.q1": {"fixed_cycles": 3.0, "opcodes": {"dma_load": {"fixed_cycles": 6.0}}},
        "tensor": {"fixed_cycles": 4.0, "per_flop": 0.5},
    })
    assert m.latency("dma.q1", "dma_load").fixed_cycles == 6.0   # engine + opcode
    assert m.latency("dma.q0", "dma_load").fixed_cycles == 5.0   # kind + opcode
    assert m.latency("dma.q1", "dma_store").fixed_cycles == 3.0  # engine
    assert m.latency("dma.q0", "dma_store").fixed_cycles == 2.0  # kind
    assert m.latency("vector", "add").fixed_cycles == 1.0        # default
    assert m.latency("tensor", "matmul") == Latency(fixed_cycles=4.0, per_flop=0.5)
    assert make_machine(engines={}).latency("tensor", "matmul") == Latency()


def test_latency_formula_and_precedence_in_replay(tmp_path: Path) -> None:
    m = make_machine(engines={
        "default": {"fixed_cycles": 1.0},
        "dma": {"fixed_cycles": 2.0, "opcodes": {"dma_load": {"fixed_cycles": 5.0}}},
        "dma.q1": {"fixed_cycles": 3.0, "opcodes": {"dma_load": {"fixed_cycles": 6.0}}},
        "tensor": {"fixed_cycles": 10.0, "per_element": 0.5, "per_byte": 0.25,
                   "per_flop": 0.125},
    })
    b = TraceBuilder()
    ids = [b.inst("dma.q1", "dma_load"), b.inst("dma.q0", "dma_load"),
           b.inst("dma.q1", "dma_store"), b.inst("dma.q0", "dma_store"),
           b.inst("vector", "add"),
           b.inst("tensor", "matmul", elements=8, bytes=16, flops=32)]
    r = rows(replay(write(b, tmp_path / "t"), m))
    # no bytes: a DMA is its set-up only; dma.q1 runs 6 then 3, dma.q0 5 then 2
    assert [r[i]["duration"] for i in ids] == [6, 5, 3, 2, 1, 10 + 4 + 4 + 4]
    assert [r[i]["end"] for i in ids] == [6, 5, 9, 7, 1, 22]


def test_dma_queue_bandwidth_override_parses(tmp_path: Path) -> None:
    # the format's own example: [dma.queues] "dma.q3" = 16.0
    m = make_machine(queues={"dma.q3": 16.0})
    assert m.queue_bandwidth("dma.q3") == 16.0
    assert m.queue_bandwidth("dma.q0") == 40.0
    path = tmp_path / "queues.toml"
    path.write_text(_trn_text().replace("[dma]\nbytes_per_cycle = 64.0",
                                        '[dma]\nbytes_per_cycle = 64.0\n[dma.queues]\n'
                                        '"dma.q3" = 16.0'), encoding="utf-8")
    assert load_machine(path).queue_bandwidth("dma.q3") == 16.0


# --- 2. graph --------------------------------------------------------------------------------


def test_order_edges_follow_seq_per_engine(tmp_path: Path) -> None:
    b = TraceBuilder()
    b.inst("tensor", "matmul", seq=2)   # 0
    b.inst("tensor", "matmul", seq=0)   # 1
    b.inst("vector", "add")             # 2
    b.inst("tensor", "matmul", seq=1)   # 3
    b.inst("vector", "add")             # 4
    trace = write(b, tmp_path / "t", valid=False)
    assert edges(trace) == {(1, 3, "order"), (3, 0, "order"), (2, 4, "order")}
    g = derive(trace)
    assert g.nodes == 5 and g.edges == 3
    assert list(g.preds(0)) == [3] and list(g.preds(3)) == [1] and list(g.preds(1)) == []
    assert list(g.ids) == [0, 1, 2, 3, 4]


def _two_signals(timed: bool) -> TraceBuilder:
    """A (dma.q0) and B (dma.q1) each signal sem 0 by 1; W2 waits for 2, W1 for 1. Timed: B
    ends (50) before A (100)."""
    b = TraceBuilder()
    a = b.inst("dma.q0", "dma_load", *((0, 100) if timed else (None, None)), bytes=64)
    bb = b.inst("dma.q1", "dma_load", *((0, 50) if timed else (None, None)), bytes=64)
    w2 = b.inst("tensor", "matmul", *((112, 150) if timed else (None, None)))
    w1 = b.inst("vector", "add", *((62, 90) if timed else (None, None)))
    b.signal(a, 0)
    b.signal(bb, 0)
    b.wait(w2, 0, 2)
    b.wait(w1, 0, 1)
    return b


def replayed_edges(trace: Trace, machine: Machine | None = None) -> set[tuple[int, int, str]]:
    """The semaphore edges the model replay decided (each released wait's window)."""
    graph = replay(trace, machine or make_machine()).graph
    return set(graph.edge_frame(EdgeKind.SEMAPHORE).iter_rows())


def observed_edges(trace: Trace) -> set[tuple[int, int, str]]:
    """The semaphore edges of the observed timeline (changes counted by observed end)."""
    frame = trace.read("instructions", ["id", "engine", "seq", "start", "end"]).sort("id")
    graph = observed_graph(derive(trace, frame), frame)
    return set(graph.edge_frame(EdgeKind.SEMAPHORE).iter_rows())


def test_derive_fixes_no_semaphore_edge(tmp_path: Path) -> None:
    # Which signal releases a wait is decided by a timeline, not by the graph.
    trace = write(_two_signals(timed=False), tmp_path / "t", valid=False)
    assert edges(trace, EdgeKind.SEMAPHORE) == set()
    g = derive(trace)
    assert g.sems.size == 4 and not g.resolved


def test_semaphore_edges_of_the_replay_untimed(tmp_path: Path) -> None:
    trace = write(_two_signals(timed=False), tmp_path / "t", valid=False)
    # A and B end together (64 bytes at 40 B/cycle each); A's end is taken first (dma.q0
    # before dma.q1). W1 (>= 1) needs A alone; W2 (>= 2) needs both: its window holds both.
    assert replayed_edges(trace) == {(0, 3, "semaphore"), (0, 2, "semaphore"),
                                     (1, 2, "semaphore")}


def test_semaphore_edges_count_signals_by_observed_end(tmp_path: Path) -> None:
    trace = write(_two_signals(timed=True), tmp_path / "t", valid=False)
    # B (id 1) ends first (50): it releases W1 at 62; W2 at 112 needs B and A.
    assert observed_edges(trace) == {(1, 3, "semaphore"), (1, 2, "semaphore"),
                                     (0, 2, "semaphore")}


def test_semaphore_signals_ending_together_count_in_table_order(tmp_path: Path) -> None:
    b = _two_signals(timed=True)
    b.rows["instructions"][0].update(start=0, end=50)   # A and B both end at 50
    trace = write(b, tmp_path / "t", valid=False)
    assert observed_edges(trace) == {(0, 3, "semaphore"), (0, 2, "semaphore"),
                                     (1, 2, "semaphore")}


def test_semaphore_edges_per_semaphore_and_values(tmp_path: Path) -> None:
    b = TraceBuilder()
    s1 = b.inst("dma.q0", "dma_load", 0, 10)   # 0: sem 3 += 2 at 10
    s2 = b.inst("dma.q0", "dma_load", 10, 20)  # 1: sem 5 += 1 at 20
    s3 = b.inst("dma.q1", "dma_load", 0, 30)   # 2: sem 3 += 1 at 30
    w = [b.inst("tensor", "matmul", 40 + 10 * k, 50 + 10 * k) for k in range(4)]  # 3..6
    b.signal(s1, 3, 2)
    b.signal(s2, 5, 1)
    b.signal(s3, 3, 1)
    b.wait(w[0], 3, 1)   # s1 (count 2)
    b.wait(w[1], 3, 2)   # held already when w[0] started: no edge of its own (order from w[0])
    b.wait(w[2], 3, 3)   # s3
    b.wait(w[3], 5, 1)   # s2
    trace = write(b, tmp_path / "t", valid=False)
    assert observed_edges(trace) == {(0, 3, "semaphore"), (2, 5, "semaphore"),
                                     (1, 6, "semaphore")}


def test_sub_and_set_count_in_the_observed_order(tmp_path: Path) -> None:
    b = TraceBuilder()
    first = b.inst("dma.q0", "dma_load", 0, 10)
    down = b.inst("dma.q1", "dma_load", 10, 20)
    up = b.inst("dma.q2", "dma_load", 20, 30)
    wait = b.inst("tensor", "matmul", 40, 50)
    reset = b.inst("vector", "copy", 50, 55)
    zero = b.inst("scalar", "act", 60, 70)
    b.signal(first, 0, 2)     # 2 at 10
    b.sub(down, 0, 1)         # 1 at 20
    b.signal(up, 0, 2)        # 3 at 30
    b.wait(wait, 0, 3, cond="eq")
    b.set(reset, 0, 0)        # 0 at 55
    b.wait(zero, 0, 0, cond="eq")
    trace = write(b, tmp_path / "t")
    # == 3 held from `up` on; the window since the start holds all three changes. == 0 holds
    # from the set on; scalar never waited on sem 0 before, so its window starts at the start.
    assert observed_edges(trace) == {(first, wait, "semaphore"), (down, wait, "semaphore"),
                                     (up, wait, "semaphore")} | {
        (k, zero, "semaphore") for k in (first, down, up, reset)}


def test_data_edges_from_deps_keep_their_kind(tmp_path: Path) -> None:
    b = TraceBuilder()
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("tensor", "matmul")
    d = b.inst("vector", "add")
    b.dep(a, c, "data")
    b.dep(a, d, "memory")
    b.dep(c, d, "resource")
    trace = write(b, tmp_path / "t", valid=False)
    assert edges(trace) == {(0, 1, "data"), (0, 2, "memory"), (1, 2, "resource")}
    assert edges(trace, EdgeKind.DATA) == {(0, 1, "data")}
    assert edges(trace, EdgeKind.ORDER) == set()


def test_graph_csr_sorted_by_dst_kind_src(tmp_path: Path) -> None:
    b = TraceBuilder()
    x = b.inst("dma.q0", "dma_load")    # 0
    y = b.inst("dma.q1", "dma_load")    # 1
    z = b.inst("vector", "add")         # 2
    t0 = b.inst("tensor", "matmul")     # 3
    t1 = b.inst("tensor", "matmul")     # 4: order from 3, semaphore from 1, data from 2 and 0
    b.signal(y, 0)
    b.wait(t1, 0, 1)
    b.dep(z, t1, "data")
    b.dep(x, t1, "data")
    b.dep(x, t0, "memory")
    trace = write(b, tmp_path / "t", valid=False)
    g = replay(trace, make_machine()).graph  # the semaphore edge 1 -> 4 decided by the replay
    assert list(g.ptr) == [0, 0, 0, 0, 1, 5]
    assert list(g.preds(t1)) == [3, 1, 0, 2]
    assert [EdgeKind(e) for e in
            g.edge_frame().filter(pl.col("dst") == t1)["kind"].to_list()] == [
        EdgeKind.ORDER, EdgeKind.SEMAPHORE, EdgeKind.DATA, EdgeKind.DATA]
    frame = g.edge_frame()
    assert frame.columns == ["src", "dst", "kind"]
    assert frame.height == g.edges == 5
    for kind in EdgeKind:
        sub = g.edge_frame(kind)
        assert set(sub["kind"].to_list()) <= {kind.value}
        assert sub.height == frame.filter(pl.col("kind") == kind.value).height
    assert g.edge_frame(EdgeKind.RESOURCE).height == 0


def test_unsatisfied_waits_listed_with_the_count_reached(tmp_path: Path) -> None:
    b = TraceBuilder()
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("dma.q1", "dma_load")
    w = b.inst("tensor", "matmul")
    v = b.inst("vector", "add")
    ok = b.inst("scalar", "act")
    b.signal(a, 0)
    b.signal(c, 0)
    b.wait(w, 0, 3)      # only 2 ever signalled
    b.wait(v, 7, 1)      # nothing signals sem 7
    b.wait(ok, 0, 2)     # satisfied by both
    trace = write(b, tmp_path / "t", valid=False)
    with pytest.raises(ReplayStuck) as info:
        replay(trace, make_machine())
    stuck = info.value.stuck
    assert stuck.select("id", "engine", "sem", "cond", "value", "count").rows() == [
        (w, "tensor", 0, "ge", 3, 2), (v, "vector", 7, "ge", 1, 0)]
    assert stuck["behind"].to_list() == [[], []]
    assert "instruction 2 (matmul) waits for semaphore 0 to reach 3; the count reached 2, " \
           "and its signals add up to 2" in str(info.value)
    assert sorted(info.value.done.tolist()) == [a, c, ok]


def test_waits_without_any_signal(tmp_path: Path) -> None:
    """A semaphores table of waits only (no signal anywhere): the replay is stuck on the wait
    and says so."""
    b = TraceBuilder()
    w = b.inst("tensor", "matmul")
    b.inst("vector", "add")
    b.wait(w, 0, 1)
    trace = write(b, tmp_path / "t", valid=False)
    assert derive(trace).sems.semaphores == 1
    with pytest.raises(ReplayStuck, match="semaphore 0"):
        replay(trace, make_machine())


# --- 3. exact replays ------------------------------------------------------------------------


def test_semaphore_chain_across_three_engines(tmp_path: Path) -> None:
    lat = 7.0
    m = make_machine(semaphore=lat, engines={"tensor": {"fixed_cycles": 10.0},
                                             "vector": {"fixed_cycles": 20.0},
                                             "scalar": {"fixed_cycles": 30.0}})
    b = TraceBuilder()
    a = b.inst("tensor", "matmul")
    c = b.inst("vector", "add")
    d = b.inst("scalar", "act")
    free = b.inst("scalar", "act")   # after d on scalar: an order edge
    b.signal(a, 0)
    b.wait(c, 0, 1)
    b.signal(c, 1)
    b.wait(d, 1, 1)
    r = rows(replay(write(b, tmp_path / "t"), m))
    assert (r[a]["start"], r[a]["end"]) == (0, 10)
    assert (r[c]["start"], r[c]["end"]) == (10 + 7, 17 + 20)
    assert (r[d]["start"], r[d]["end"]) == (37 + 7, 44 + 30)
    assert (r[free]["start"], r[free]["end"]) == (74, 104)
    assert (r[a]["binding_id"], r[a]["binding_kind"]) == (None, None)
    assert (r[c]["binding_id"], r[c]["binding_kind"]) == (a, "semaphore")
    assert (r[d]["binding_id"], r[d]["binding_kind"]) == (c, "semaphore")
    assert (r[free]["binding_id"], r[free]["binding_kind"]) == (d, "order")


def test_order_edges_back_to_back_with_zero_latency(tmp_path: Path) -> None:
    m = make_machine(semaphore=50.0, engines={
        "tensor": {"fixed_cycles": 0.0, "per_element": 1.0}})
    b = TraceBuilder()
    ids = [b.inst("tensor", "matmul", elements=e) for e in (10, 20, 30)]
    result = replay(write(b, tmp_path / "t"), m)
    r = rows(result)
    assert [(r[i]["start"], r[i]["end"]) for i in ids] == [(0, 10), (10, 30), (30, 60)]
    assert [r[i]["binding_id"] for i in ids] == [None, ids[0], ids[1]]
    assert [r[i]["binding_kind"] for i in ids] == [None, "order", "order"]
    assert result.makespan == 60
    assert result.timeline["contention"].to_list() == [0, 0, 0]


def test_independent_instructions_start_at_zero(tmp_path: Path) -> None:
    b = TraceBuilder()
    ids = [b.inst(e, "op") for e in ("tensor", "vector", "scalar", "gpsimd")]
    result = replay(write(b, tmp_path / "t"), make_machine())
    t = result.timeline
    assert t["id"].to_list() == ids
    assert t["start"].to_list() == [0] * 4
    assert t["end"].to_list() == [10] * 4
    assert t["binding_id"].null_count() == 4
    assert t["binding_kind"].null_count() == 4
    assert t["observed_start"].null_count() == 4
    assert result.makespan == 10


def test_data_latency_and_latest_predecessor_binds(tmp_path: Path) -> None:
    m = make_machine(semaphore=5.0, data=3.0, engines={
        "default": {"fixed_cycles": 0.0, "per_element": 1.0}})
    b = TraceBuilder()
    a = b.inst("tensor", "matmul", elements=40, layer="l0")   # 0..40
    c = b.inst("vector", "add", elements=30, layer="l0")      # 0..30
    d = b.inst("scalar", "act", elements=10, layer="l1")      # max(40+3, 30+5) = 43
    e = b.inst("gpsimd", "iota", elements=10)                 # max(40+5, 30+3) = 45
    b.dep(a, d, "data")
    b.signal(c, 0)
    b.wait(d, 0, 1)
    b.signal(a, 1)
    b.wait(e, 1, 1)
    b.dep(c, e, "memory")
    result = replay(write(b, tmp_path / "t"), m)
    r = rows(result)
    assert (r[d]["start"], r[d]["end"], r[d]["binding_id"], r[d]["binding_kind"]) == \
        (43, 53, a, "data")
    assert (r[e]["start"], r[e]["end"], r[e]["binding_id"], r[e]["binding_kind"]) == \
        (45, 55, a, "semaphore")
    assert r[d]["layer"] == "l1" and r[e]["layer"] is None
    assert result.timeline.columns == [
        "id", "engine", "opcode", "layer", "start", "end", "duration", "binding_id",
        "binding_kind", "contention", "observed_start", "observed_end"]


def test_equal_predecessors_bind_deterministically(tmp_path: Path) -> None:
    """Two predecessors end at the same time: at equal times lower engine codes go first, and
    the first to decide the start keeps the binding."""
    b = TraceBuilder()
    x = b.inst("vector", "add")    # 0..10, engine code after tensor
    y = b.inst("tensor", "mm")     # 0..10
    z = b.inst("scalar", "act")
    b.dep(x, z, "data")
    b.dep(y, z, "data")
    r = rows(replay(write(b, tmp_path / "t"), make_machine()))
    assert r[z]["start"] == 10
    # natural engine order: scalar, tensor, vector -> tensor (y) ends first at t=10
    assert r[z]["binding_id"] == y


# --- 4. HBM contention -----------------------------------------------------------------------

Q, H, B = 40, 100, 6000


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_equal_transfers_share_hbm(tmp_path: Path, n: int) -> None:
    b = TraceBuilder()
    ids = [b.inst(f"dma.q{q}", "dma_load", bytes=B) for q in range(n)]
    result = replay(write(b, tmp_path / "t"), make_machine(hbm=H, dma=Q))
    expected = Fraction(n * B, H) if n * Q > H else Fraction(B, Q)
    alone = Fraction(B, Q)
    # 150, 150, 180, 240
    assert expected == {1: 150, 2: 150, 3: 180, 4: 240}[n]
    for row in result.timeline.iter_rows(named=True):
        assert row["id"] in ids
        assert (row["start"], row["end"]) == (0, ceil_cycles(expected))
        assert row["contention"] == ceil_cycles(expected - alone)


def test_equal_transfers_fractional_finish(tmp_path: Path) -> None:
    """The module's worked example with two queues: 2 * 3200 / 96 = 66.67 -> cycle 67."""
    b = TraceBuilder()
    for q in range(3):
        b.inst(f"dma.q{q}", "dma_load", bytes=3200)
    t = replay(write(b, tmp_path / "t3"), make_machine(hbm=96.0, dma=64.0)).timeline
    assert t["end"].to_list() == [100, 100, 100]
    assert t["contention"].to_list() == [50, 50, 50]
    b = TraceBuilder()
    for q in range(2):
        b.inst(f"dma.q{q}", "dma_load", bytes=3200)
    t = replay(write(b, tmp_path / "t2"), make_machine(hbm=96.0, dma=64.0)).timeline
    assert t["end"].to_list() == [67, 67]
    assert t["contention"].to_list() == [17, 17]


def test_water_filling_with_a_capped_queue(tmp_path: Path) -> None:
    """HBM 60, queues 40 but dma.q0 capped at 10; three transfers of 1000 bytes at once.
    Fair share 20 > 10: q0 gets its cap, q1 and q2 split the other 50 (25 each, under their
    cap of 40). q1, q2 end at 1000 / 25 = 40; q0 has moved 400 by then, alone its rate stays
    at its cap: 600 / 10 more -> 100."""
    m = with_queue_caps(make_machine(hbm=60.0, dma=40.0), {"dma.q0": 10.0})
    b = TraceBuilder()
    q0, q1, q2 = (b.inst(f"dma.q{q}", "dma_load", bytes=1000) for q in range(3))
    r = rows(replay(write(b, tmp_path / "t"), m))
    assert (r[q0]["end"], r[q1]["end"], r[q2]["end"]) == (100, 40, 40)
    # contention: transfer time - bytes / own queue bandwidth
    assert (r[q0]["contention"], r[q1]["contention"], r[q2]["contention"]) == (0, 15, 15)


def test_water_filling_cap_above_fair_share(tmp_path: Path) -> None:
    """HBM 100, queues 40, dma.q2 capped at 10: q2 gets 10, the others 40 each (their own cap,
    below the 45 they could have): 90 of 100 in use, nobody slowed but by its own cap."""
    m = with_queue_caps(make_machine(hbm=100.0, dma=40.0), {"dma.q2": 10.0})
    b = TraceBuilder()
    ids = [b.inst(f"dma.q{q}", "dma_load", bytes=1200) for q in range(3)]
    r = rows(replay(write(b, tmp_path / "t"), m))
    assert [r[i]["end"] for i in ids] == [30, 30, 120]
    assert [r[i]["contention"] for i in ids] == [0, 0, 0]


def test_rates_recomputed_when_a_transfer_leaves(tmp_path: Path) -> None:
    """HBM 100, queues 80: 2000 and 6000 bytes share 50/50 until t = 40, then the second moves
    its last 4000 at its cap 80 -> 90."""
    b = TraceBuilder()
    a = b.inst("dma.q0", "dma_load", bytes=2000)
    c = b.inst("dma.q1", "dma_load", bytes=6000)
    r = rows(replay(write(b, tmp_path / "t"), make_machine(hbm=100.0, dma=80.0)))
    assert (r[a]["end"], r[c]["end"]) == (40, 90)
    assert (r[a]["contention"], r[c]["contention"]) == (40 - 25, 90 - 75)


def test_dma_set_up_before_its_bytes_move(tmp_path: Path) -> None:
    """HBM 60, queues 40, 1200 bytes each; dma.q0 has a 15-cycle set-up, dma.q1 none. q1 moves
    alone at 40 for 15 cycles (600 bytes), then both at 30: q1's last 600 take 20 -> 35; q0
    has moved 600 by then and ends its last 600 alone at 40: 15 more -> 50."""
    m = make_machine(hbm=60.0, dma=40.0, engines={"dma": {}, "dma.q0": {"fixed_cycles": 15.0}})
    b = TraceBuilder()
    q0 = b.inst("dma.q0", "dma_load", bytes=1200)
    q1 = b.inst("dma.q1", "dma_load", bytes=1200)
    r = rows(replay(write(b, tmp_path / "t"), m))
    assert (r[q0]["start"], r[q0]["end"]) == (0, 50)
    assert (r[q1]["start"], r[q1]["end"]) == (0, 35)
    assert (r[q0]["contention"], r[q1]["contention"]) == ((50 - 15) - 30, 35 - 30)


def test_compute_bytes_do_not_use_hbm(tmp_path: Path) -> None:
    m = make_machine(hbm=10.0, dma=10.0, engines={"tensor": {"fixed_cycles": 5.0}, "dma": {}})
    b = TraceBuilder()
    mm = b.inst("tensor", "matmul", bytes=10**6)
    ld = b.inst("dma.q0", "dma_load", bytes=100)
    r = rows(replay(write(b, tmp_path / "t"), m))
    assert (r[mm]["end"], r[mm]["contention"]) == (5, 0)
    assert (r[ld]["end"], r[ld]["contention"]) == (10, 0)


# --- 5. properties on random DAGs ------------------------------------------------------------

ENGINE_POOL = ("tensor", "vector", "dma.q0", "dma.q1", "dma.q2")
PROP_SEM, PROP_DATA = 7.0, 3.0


def _prop_machine() -> Machine:
    m = make_machine(hbm=60.0, dma=40.0, semaphore=PROP_SEM, data=PROP_DATA, engines={
        "default": {"fixed_cycles": 4.0, "per_element": 0.37},
        "tensor": {"fixed_cycles": 9.0, "per_element": 0.5,
                   "opcodes": {"transpose": {"fixed_cycles": 3.0, "per_element": 0.25}}},
        "dma": {"fixed_cycles": 5.0, "per_byte": 0.01},
        "dma.q1": {"fixed_cycles": 0.0},
    })
    return with_queue_caps(m, {"dma.q2": 15.0})


PROP_MACHINE = _prop_machine()


@st.composite
def random_dags(draw: st.DrawFn) -> TraceBuilder:
    """2-5 engines (DMA queues among them), 2-14 instructions in program order; semaphore
    pairs and data deps always point from an earlier instruction to a later one."""
    engines = draw(st.lists(st.sampled_from(ENGINE_POOL), min_size=2, max_size=5, unique=True))
    n = draw(st.integers(2, 14))
    b = TraceBuilder("prop")
    for _ in range(n):
        engine = draw(st.sampled_from(engines))
        if engine.startswith("dma."):
            b.inst(engine, draw(st.sampled_from(["dma_load", "dma_store"])),
                   bytes=draw(st.integers(0, 8000)))
        else:
            b.inst(engine, draw(st.sampled_from(["matmul", "transpose", "add"])),
                   elements=draw(st.integers(0, 300)))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=2 * n))
    sem = 0
    for i, j in pairs:
        if i == j:
            continue
        src, dst = min(i, j), max(i, j)
        if draw(st.booleans()):
            value = draw(st.integers(1, 3))
            b.signal(src, sem, value)
            b.wait(dst, sem, value)
            sem += 1
        else:
            b.dep(src, dst, "data")
    return b


def _replay_built(b: TraceBuilder, machine: Machine = PROP_MACHINE) -> ReplayResult:
    with tempfile.TemporaryDirectory() as tmp:
        trace = b.write(Path(tmp) / "t", validate=False)
        return replay(trace, machine)


def _setup(machine: Machine, row: dict[str, Any], elements: int | None, nbytes: int | None
           ) -> float:
    lat = machine.latency(row["engine"], row["opcode"])
    return (lat.fixed_cycles + lat.per_element * (elements or 0)
            + lat.per_byte * (nbytes or 0))


PROP = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(random_dags())
def test_prop_starts_after_predecessors(b: TraceBuilder) -> None:
    result = _replay_built(b)
    t = result.timeline
    start, end = t["start"].to_numpy(), t["end"].to_numpy()
    g = result.graph
    latency = {"order": 0, "semaphore": int(PROP_SEM), "data": int(PROP_DATA)}
    frame = g.edge_frame()
    ready = np.zeros(g.nodes, dtype=np.int64)
    for src, dst, kind in frame.iter_rows():
        assert start[dst] >= end[src] + latency[kind], (src, dst, kind)
        ready[dst] = max(ready[dst], end[src] + latency[kind])
    # tight: every instruction starts at the latest of those bounds (0 without predecessors)
    assert list(start) == list(ready)
    for row in t.iter_rows(named=True):
        if row["binding_id"] is None:
            assert row["start"] == 0 and g.preds(row["id"]).size == 0
        else:
            bound = end[row["binding_id"]] + latency[row["binding_kind"]]
            assert bound == row["start"]
            assert (row["binding_id"], row["id"], row["binding_kind"]) in set(frame.iter_rows())


@PROP
@given(random_dags())
def test_prop_no_overlap_on_an_engine(b: TraceBuilder) -> None:
    result = _replay_built(b)
    info = pl.DataFrame(b.rows["instructions"]).select("id", "seq", "elements", "bytes")
    t = result.timeline.join(info, on="id").sort("engine", "seq")
    for _, group in t.group_by("engine"):
        group = group.sort("seq")
        s, e = group["start"].to_list(), group["end"].to_list()
        assert all(e[k] <= s[k + 1] for k in range(len(s) - 1)), group
    for row in t.iter_rows(named=True):
        setup = _setup(PROP_MACHINE, row, row["elements"], row["bytes"])
        if row["engine"].startswith("dma.") and (row["bytes"] or 0) > 0:
            alone = row["bytes"] / PROP_MACHINE.queue_bandwidth(row["engine"])
            assert row["duration"] >= math.ceil(setup + alone - 1e-6) - 1
            assert row["contention"] >= 0
        else:
            assert row["contention"] == 0
            assert abs(row["duration"] - setup) <= 1


@PROP
@given(random_dags())
def test_prop_replay_is_deterministic(b: TraceBuilder) -> None:
    first, second = _replay_built(b), _replay_built(b)
    assert first.timeline.equals(second.timeline)
    assert first.makespan == second.makespan


@PROP
@given(random_dags())
def test_prop_dma_rate_never_exceeds_hbm(b: TraceBuilder) -> None:
    """Bytes of the transfers whose byte-moving interval lies inside [t0, t1] fit in
    H * (t1 - t0), for every pair of event times (1 cycle of slack per interval end for the
    rounding of the integer timeline); and no transfer beats its own queue's bandwidth."""
    result = _replay_built(b)
    info = pl.DataFrame(b.rows["instructions"]).select("id", "elements", "bytes")
    t = result.timeline.join(info, on="id")
    transfers = []
    for row in t.iter_rows(named=True):
        if row["engine"].startswith("dma.") and (row["bytes"] or 0) > 0:
            moving = row["start"] + _setup(PROP_MACHINE, row, row["elements"], row["bytes"])
            transfers.append((moving, row["end"], row["bytes"], row["engine"]))
            cap = PROP_MACHINE.queue_bandwidth(row["engine"])
            assert row["bytes"] <= cap * (row["end"] - moving + 1) + 1e-6
    hbm = PROP_MACHINE.hbm_bytes_per_cycle
    points = sorted({p for a, z, _, _ in transfers for p in (a, z)})
    for i, t0 in enumerate(points):
        for t1 in points[i + 1:]:
            inside = sum(nb for a, z, nb, _ in transfers if a >= t0 and z <= t1)
            assert inside <= hbm * (t1 - t0 + 2) + 1e-6, (t0, t1, inside)
    if transfers:
        total = sum(nb for *_, nb, _ in transfers)
        assert total <= hbm * (max(z for _, z, _, _ in transfers) + 1)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.data())
def test_oracle_longest_path(data: st.DataObject) -> None:
    """One instruction per engine, data edges only, latency 0, no DMA: the makespan is the
    longest path with node weights = durations."""
    n = data.draw(st.integers(1, 10))
    durations = data.draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                               max_size=3 * n))
    dag_edges = {(min(i, j), max(i, j)) for i, j in pairs if i != j}
    b = TraceBuilder("oracle")
    for i, d in enumerate(durations):
        b.inst(f"pe{i}", "op", elements=d)
    for i, j in sorted(dag_edges):
        b.dep(i, j, "data")
    m = make_machine(semaphore=100.0, data=0.0,
                     engines={"default": {"fixed_cycles": 0.0, "per_element": 1.0}})
    result = _replay_built(b, m)
    g = nx.DiGraph()
    g.add_node("sink")
    for i, d in enumerate(durations):
        g.add_edge(i, "sink", weight=d)
    for i, j in dag_edges:
        g.add_edge(i, j, weight=durations[i])
    assert result.makespan == nx.dag_longest_path_length(g)
    assert result.timeline["duration"].to_list() == durations


# --- 7. observed mode on generated traces ----------------------------------------------------

CLEAN = ReferenceTiming(jitter=0, conflict_stretch=1, warmup_factor=1, desc_cycles=0)
WORKLOADS = {
    "gemm": {"m": 256, "n": 384, "k": 256},
    "mlp": {"widths": (128, 256, 128), "batch": 128},
    "attention": {"seq": 128, "heads": 2, "head_dim": 64},
}


@pytest.mark.parametrize("timing", [CLEAN, ReferenceTiming()], ids=["clean", "default"])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_observed_mode_reproduces_generated_timing(tmp_path: Path, workload: str,
                                                   timing: ReferenceTiming) -> None:
    trace = generate(workload, tmp_path / workload, params=WORKLOADS[workload], seed=5,
                     timing=timing)
    result = replay(trace, mode="observed")
    t = result.timeline
    assert t.height > 8
    assert t["start"].to_list() == t["observed_start"].to_list()
    assert t["end"].to_list() == t["observed_end"].to_list()
    assert result.makespan == t["observed_end"].max()
    assert result.observed
    corr = correlate(result)
    assert corr is not None
    assert corr.makespan_error_pct == 0.0
    assert corr.divergent_duration.height == corr.divergent_wait.height == 0


def test_model_mode_close_to_generated_gemm(tmp_path: Path) -> None:
    trace = generate("gemm", tmp_path / "gemm", params={"m": 512, "n": 512, "k": 512}, seed=1)
    result = replay(trace)
    t = result.timeline
    observed = t["observed_end"].max() - t["observed_start"].min()
    assert abs(result.makespan - observed) <= 0.25 * observed, (result.makespan, observed)


# --- 8. stuck replays ------------------------------------------------------------------------


def _unreachable_wait() -> TraceBuilder:
    b = TraceBuilder("stuck")
    load = b.inst("dma.q0", "dma_load", bytes=64)
    mm = b.inst("tensor", "matmul")
    b.inst("tensor", "matmul")
    b.signal(load, 4)
    b.wait(mm, 4, 2)
    return b


def test_stuck_on_an_unreachable_wait(tmp_path: Path) -> None:
    trace = write(_unreachable_wait(), tmp_path / "t", valid=False)
    with pytest.raises(ReplayStuck) as info:
        replay(trace, make_machine())
    message = str(info.value)
    assert info.value.exit_code == 3
    for needle in ("tensor", "instruction 1", "matmul", "semaphore 4", "reach 2",
                   "add up to 1", str(trace.path)):
        assert needle in message, message
    assert info.value.stuck["id"].to_list() == [1]
    assert "cycle" not in message


def test_stuck_report_takes_the_engines_first_instruction_by_seq(tmp_path: Path) -> None:
    """On an in-order engine the first instruction that never runs is the one with the lowest
    seq, whatever its id: here id 2 (seq 0) waits for a semaphore nothing reaches, and id 1
    (seq 1) only waits behind it."""
    b = TraceBuilder("stuck")
    load = b.inst("dma.q0", "dma_load", bytes=64)
    b.inst("tensor", "matmul", seq=1)
    blocked = b.inst("tensor", "matmul", seq=0)
    b.signal(load, 4)
    b.wait(blocked, 4, 2)
    trace = write(b, tmp_path / "t", valid=False)
    with pytest.raises(ReplayStuck) as info:
        replay(trace, make_machine())
    assert info.value.stuck["id"].to_list() == [blocked]
    assert f"tensor: instruction {blocked} (matmul) waits for semaphore 4 to reach 2" in \
        str(info.value)


def test_stuck_on_a_dependency_cycle(tmp_path: Path) -> None:
    b = TraceBuilder("cycle")
    a = b.inst("tensor", "matmul")
    c = b.inst("vector", "add")
    b.inst("scalar", "act")          # free: runs
    b.dep(a, c, "data")
    b.dep(c, a, "data")
    trace = write(b, tmp_path / "t", valid=False)
    with pytest.raises(ReplayStuck, match="cycle") as info:
        replay(trace, make_machine())
    message = str(info.value)
    assert "tensor: instruction 0" in message and "vector: instruction 1" in message
    assert sorted(info.value.stuck["id"].to_list()) == [0, 1]


def test_stuck_cli_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write(_unreachable_wait(), path, valid=False)
    result = run_cli("replay", path)
    assert_clean_exit(result, 3, "semaphore 4", "instruction 1")
    assert result.stdout == ""


def test_observed_mode_needs_timing(tmp_path: Path) -> None:
    b = TraceBuilder()
    b.inst("tensor", "matmul")
    path = tmp_path / "t"
    trace = write(b, path)
    with pytest.raises(ReplayError, match="observed"):
        replay(trace, mode="observed")
    assert_clean_exit(run_cli("replay", path, "--mode", "observed"), 1, "--mode model")


# --- 9. CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "gemm"
    generate("gemm", path, params={"m": 256, "n": 256, "k": 256}, seed=2)
    return path


@pytest.fixture
def untimed_bundle(tmp_path: Path) -> Path:
    b = TraceBuilder("untimed")
    a = b.inst("dma.q0", "dma_load", bytes=4000)
    c = b.inst("tensor", "matmul", flops=2 * 128**3)
    b.signal(a, 0)
    b.wait(c, 0, 1)
    write(b, tmp_path / "u")
    return tmp_path / "u"


def test_cli_replay_text(timed_bundle: Path) -> None:
    result = run_cli("replay", timed_bundle)
    assert result.exit_code == 0, result.output
    expected = replay(open_trace(timed_bundle)).makespan
    out = result.stdout
    assert "makespan" in out and f"{expected:,} cycles" in out
    for engine in ("tensor", "dma.q0"):
        assert engine in out
    assert "correlation" in out and "observed makespan" in out


def test_cli_replay_text_untimed(untimed_bundle: Path) -> None:
    result = run_cli("replay", untimed_bundle)
    assert result.exit_code == 0, result.output
    assert "makespan" in result.stdout and "correlation" not in result.stdout


def test_cli_replay_json(timed_bundle: Path, untimed_bundle: Path) -> None:
    result = run_cli("replay", timed_bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["makespan_cycles"] == replay(open_trace(timed_bundle)).makespan
    assert doc["machine"] == "trn-like" and doc["mode"] == "model"
    assert doc["correlation"]["observed_makespan_cycles"] > 0
    assert {e["engine"] for e in doc["engines"]} >= {"tensor", "dma.q0"}
    untimed = json.loads(run_cli("replay", untimed_bundle, "-f", "json").stdout)
    assert untimed["correlation"] is None
    assert untimed["makespan_cycles"] == replay(open_trace(untimed_bundle)).makespan


def test_cli_replay_json_is_byte_identical(timed_bundle: Path) -> None:
    first = run_cli("replay", timed_bundle, "--format", "json")
    second = run_cli("replay", timed_bundle, "--format", "json")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout_bytes == second.stdout_bytes


def test_cli_replay_markdown(timed_bundle: Path) -> None:
    result = run_cli("replay", timed_bundle, "--format", "md")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Replay")
    assert "makespan" in result.stdout


def test_cli_replay_output_bundle(timed_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "predicted"
    result = run_cli("replay", timed_bundle, "-o", out)
    assert result.exit_code == 0, result.output
    assert validate(out).ok(), validate(out).to_dict()
    predicted = replay(open_trace(timed_bundle)).timeline
    written = open_trace(out).read("instructions").sort("id")
    assert written["id"].to_list() == predicted["id"].to_list()
    assert written["start"].to_list() == predicted["start"].to_list()
    assert written["end"].to_list() == predicted["end"].to_list()
    again = run_cli("replay", timed_bundle, "-o", out)
    assert_clean_exit(again, 1)
    assert run_cli("replay", timed_bundle, "-o", out, "--force").exit_code == 0


def test_write_predicted_records_replay(tmp_path: Path, untimed_bundle: Path) -> None:
    # 4000 bytes at 40 B/cycle -> 100; the matmul waits 5 more, runs 10
    result = replay(open_trace(untimed_bundle), make_machine(semaphore=5.0))
    written = write_predicted(result, tmp_path / "p")
    assert written.read("instructions").sort("id")["start"].to_list() == [0, 105]
    assert written.read("instructions").sort("id")["end"].to_list() == [100, 115]
    assert written.manifest.extra["replay"]["makespan"] == result.makespan == 115
    assert written.manifest.extra["replay"]["machine"] == "test"


def test_cli_replay_machine_file_and_builtin(timed_bundle: Path) -> None:
    path = REPO / "replay" / "machines" / "small-core.toml"
    by_file = json.loads(run_cli("replay", timed_bundle, "--machine", path, "-f", "json").stdout)
    assert by_file["machine"] == "small-core"
    assert by_file["makespan_cycles"] == replay(open_trace(timed_bundle),
                                                load_machine(path)).makespan
    builtin = run_cli("replay", timed_bundle, "-m", "trn-like", "-f", "json")
    assert json.loads(builtin.stdout)["makespan_cycles"] == \
        replay(open_trace(timed_bundle)).makespan
    assert_clean_exit(run_cli("replay", timed_bundle, "-m", "nope.toml"), 1,
                      "no such machine file")


def test_cli_replay_bad_mode(timed_bundle: Path) -> None:
    result = run_cli("replay", timed_bundle, "--mode", "fast")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_cli_machines() -> None:
    text = run_cli("machines")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert any(line.startswith("trn-like (default):") for line in lines), text.stdout
    listed = json.loads(run_cli("machines", "--format", "json").stdout)
    assert [m["name"] for m in listed if m["default"]] == ["trn-like"]
    assert {m["name"] for m in listed} == set(builtin_machines())


# --- 10. correlation -------------------------------------------------------------------------


def test_correlation_numbers_exact(tmp_path: Path) -> None:
    b = TraceBuilder("corr")
    b.inst("tensor", "matmul", 0, 100)
    b.inst("tensor", "matmul", 100, 300)
    m = make_machine(engines={"tensor": {"opcodes": {"matmul": {"fixed_cycles": 90.0}}}})
    result = replay(write(b, tmp_path / "t"), m)
    assert result.timeline["duration"].to_list() == [90, 90]
    corr = correlate(result)
    assert corr is not None
    assert (corr.observed_makespan, corr.predicted_makespan) == (300, 180)
    assert corr.makespan_error_pct == pytest.approx(-40.0)
    row = corr.opcodes.row(0, named=True)
    assert corr.opcodes.height == 1
    assert row["opcode"] == "matmul" and row["instructions"] == 2
    assert row["observed_mean"] == pytest.approx(150.0)
    assert row["predicted_mean"] == pytest.approx(90.0)
    assert row["bias_pct"] == pytest.approx((180 / 300 - 1) * 100)     # -40 %
    assert row["mape_pct"] == pytest.approx((10 / 100 + 110 / 200) / 2 * 100)  # 32.5 %
    # absolute errors 10 and 110. The percentiles are observed errors (no interpolation): the
    # 95th is 110; with two values the median is a tie, the lower (nearest rank) or the upper.
    assert row["p50_abs_error"] in (10, 110)
    assert row["p95_abs_error"] == 110
    assert corr.divergent_duration["id"].to_list() == [1, 0]
    assert corr.divergent_duration["duration_error"].to_list() == [90 - 200, 90 - 100]
    assert corr.divergent_wait.height == 0  # each starts as its predecessor ends, both times
    summary = summarize_replay(result)
    assert summary.makespan == 180 and summary.instructions == 2
    assert summary.engines.row(0, named=True) == {
        "engine": "tensor", "instructions": 2, "busy_cycles": 180, "busy_pct": 100.0,
        "contention_cycles": 0, "waiting_cycles": 0, "idle_cycles": 0, "flops": 0,
        "flop_util_pct": None, "bytes": 0, "bandwidth": None, "bandwidth_pct": None}


def test_divergence_is_local_not_drift(tmp_path: Path) -> None:
    """B took 50 cycles longer than modelled, E started 30 cycles after it could: those two
    diverge. C, D and F only drift (they start 50 or 80 cycles late, as their predecessors
    end late) and are not listed, though F's end is the furthest off (-80)."""
    b = TraceBuilder("drift")
    b.inst("tensor", "matmul", 0, 100)                    # A
    b.inst("tensor", "matmul", 100, 250)                  # B: 150 observed, 100 modelled
    c = b.inst("tensor", "matmul", 250, 350)              # C: drifts 50
    d = b.inst("vector", "add", 362, 372)                 # D: 12 after C's signal, as modelled
    b.inst("tensor", "matmul", 380, 480)                  # E: waits 30 after C, modelled 0
    b.inst("tensor", "matmul", 480, 580)                  # F: drifts 80
    b.signal(c, sem=0)
    b.wait(d, sem=0, value=1)
    m = make_machine(semaphore=12.0, engines={
        "tensor": {"opcodes": {"matmul": {"fixed_cycles": 100.0}}},
        "vector": {"fixed_cycles": 10.0}})
    result = replay(write(b, tmp_path / "t"), m)
    assert result.timeline["start"].to_list() == [0, 100, 200, 312, 300, 400]
    corr = correlate(result)
    assert corr is not None
    assert corr.divergent_duration.select("id", "observed_duration", "predicted_duration",
                                          "duration_error").rows() == [(1, 150, 100, -50)]
    assert corr.divergent_wait.select("id", "observed_wait", "predicted_wait",
                                      "wait_error").rows() == [(4, 30, 0, -30)]
    from tracekit.analysis.calibrate import machine_toml

    (tmp_path / "m.toml").write_text(machine_toml(m), encoding="utf-8")
    text = run_cli("replay", tmp_path / "t", "--machine", tmp_path / "m.toml", "--format",
                   "json")
    data = json.loads(text.stdout)["correlation"]
    assert [r["id"] for r in data["largest_duration_errors"]] == [1]
    assert [r["id"] for r in data["largest_wait_errors"]] == [4]


def test_correlation_percentiles_three_matmuls(tmp_path: Path) -> None:
    """Observed 100, 200 and 300 cycles, predicted 90 each: errors 10, 110, 210 cycles."""
    b = TraceBuilder("corr")
    for k in range(3):
        b.inst("tensor", "matmul", 100 * k * (k + 1) // 2, 100 * (k + 1) * (k + 2) // 2)
    m = make_machine(engines={"tensor": {"fixed_cycles": 90.0}})
    corr = correlate(replay(write(b, tmp_path / "t"), m))
    assert corr is not None
    row = corr.opcodes.row(0, named=True)
    assert row["bias_pct"] == pytest.approx((270 / 600 - 1) * 100)          # -55 %
    assert row["mape_pct"] == pytest.approx((0.1 + 0.55 + 0.7) / 3 * 100)  # 45 %
    assert (row["p50_abs_error"], row["p95_abs_error"]) == (110, 210)
    assert (corr.observed_makespan, corr.predicted_makespan) == (600, 270)


def test_correlation_docstring_example(tmp_path: Path) -> None:
    b = TraceBuilder("corr")
    b.inst("tensor", "matmul", 0, 100)
    b.inst("tensor", "matmul", 100, 200)
    b.inst("vector", "add", 0, 10)
    m = make_machine(engines={"tensor": {"fixed_cycles": 90.0}, "vector": {"fixed_cycles": 10.0}})
    corr = correlate(replay(write(b, tmp_path / "t"), m))
    assert corr is not None
    assert corr.opcodes["opcode"].to_list() == ["matmul", "add"]   # largest observed first
    mm = corr.opcodes.row(0, named=True)
    assert mm["bias_pct"] == pytest.approx(-10.0)
    assert mm["mape_pct"] == pytest.approx(10.0)
    assert (mm["p50_abs_error"], mm["p95_abs_error"]) == (10, 10)
    add = corr.opcodes.row(1, named=True)
    assert (add["bias_pct"], add["mape_pct"], add["p50_abs_error"]) == (0.0, 0.0, 0)


def test_no_correlation_without_timing(untimed_bundle: Path) -> None:
    result = replay(open_trace(untimed_bundle))
    assert not result.observed
    assert correlate(result) is None


# --- review fixes -----------------------------------------------------------------------------


def test_dangling_reference_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    from tracekit.replay.graph import GraphError

    b = TraceBuilder("bad")
    a = b.inst("tensor", "matmul")
    b.inst("vector", "copy")
    b.dep(a, 99, "data")
    bundle = tmp_path / "bad"
    b.write(bundle, validate=False)
    with pytest.raises(GraphError, match=r"deps.dst: 1 row\(s\) name no instruction \(ids 99\)"):
        replay(tracekit.open_trace(bundle))
    # The CLI refuses the bundle before replaying it, with validation's finding and rows.
    result = CliRunner().invoke(app, ["replay", str(bundle)])
    assert result.exit_code == 1 and "not a valid trace bundle" in result.stderr
    assert "[dangling-reference]" in result.stderr and "dst=99" in result.stderr
    assert "Traceback" not in result.output


def test_sparse_ids_do_not_map_a_bad_reference_to_a_neighbour(tmp_path: Path) -> None:
    from tracekit.replay.graph import GraphError

    b = TraceBuilder("bad")
    b.inst("tensor", "matmul", id=0)
    b.inst("tensor", "matmul", id=10)
    b.inst("vector", "copy", id=20)
    b.dep(0, 15, "data")
    b.write(tmp_path / "bad", validate=False)
    with pytest.raises(GraphError, match="ids 15"):
        replay(tracekit.open_trace(tmp_path / "bad"))


def test_an_opcode_only_engine_table_keeps_the_default_latency() -> None:
    from tracekit.replay.machine import parse_machine

    doc = {"name": "x", "clock_hz": 1e9, "hbm": {"bytes_per_cycle": 100.0},
           "dma": {"bytes_per_cycle": 10.0}, "latency": {"semaphore": 0.0},
           "memory": {"partitions": 128, "sbuf_partition_bytes": 1024,
                      "psum_partition_bytes": 1024},
           "engines": {"default": {"fixed_cycles": 16.0},
                       "tensor": {"opcodes": {"transpose": {"fixed_cycles": 5.0}}}}}
    machine = parse_machine(doc, "x")
    assert machine.latency("tensor", "matmul").fixed_cycles == 16.0
    assert machine.latency("tensor", "transpose").fixed_cycles == 5.0


def test_absurd_machine_numbers_are_refused() -> None:
    from tracekit.replay.machine import MachineError, parse_machine

    doc = {"name": "x", "clock_hz": 1e9, "hbm": {"bytes_per_cycle": 1e-320},
           "dma": {"bytes_per_cycle": 10.0}, "latency": {},
           "memory": {"partitions": 128, "sbuf_partition_bytes": 1024,
                      "psum_partition_bytes": 1024}, "engines": {}}
    with pytest.raises(MachineError, match="hbm.bytes_per_cycle: .* outside the range"):
        parse_machine(doc, "x")


def test_zero_observed_durations_give_null_bias_not_minus_100(tmp_path: Path) -> None:
    from tracekit.analysis.replay_report import correlate

    b = TraceBuilder("zero")
    b.inst("tensor", "matmul", 0, 0)
    b.inst("tensor", "matmul", 0, 0)
    result = replay(b.write(tmp_path / "t"), mode="observed")
    row = correlate(result).opcodes.row(0, named=True)
    assert row["bias_pct"] is None and row["mape_pct"] is None


def test_output_may_not_replace_the_trace_it_replays(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    b.inst("tensor", "matmul", 0, 10, flops=1)
    b.write(tmp_path / "t")
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "t"), "-o",
                                      str(tmp_path / "t"), "--force"])
    assert result.exit_code == 2
    assert tracekit.validate(tmp_path / "t").ok()


@pytest.mark.parametrize("sample", ["gemm", "attention_faults", "mlp"])
def test_waits_from_the_semaphore_history_equal_waits_over_the_edges(sample: str) -> None:
    """The divergence tables read each wait's semaphore predecessor from the timeline's
    history (its binder) instead of building the semaphore edges: the same waits, on the
    replayed and on the observed timeline."""
    from tracekit.analysis.replay_report import (
        _node_engine,
        _observed_waits,
        _predicted_waits,
        waits,
    )
    from tracekit.replay.run import observed_graph

    trace = tracekit.open_trace(Path(__file__).resolve().parents[1] / "sample_traces" / sample)
    result = replay(trace)
    t = result.timeline
    node_engine = _node_engine(result)
    assert np.array_equal(_predicted_waits(result, node_engine),
                          waits(result.graph, t["start"].to_numpy(), t["end"].to_numpy()))
    seq = trace.read_instructions(["seq"])["seq"]
    frame = t.select("id", "engine", seq, pl.col("observed_start").alias("start"),
                     pl.col("observed_end").alias("end"))
    edges = waits(observed_graph(result.fixed, frame), frame["start"].to_numpy(),
                  frame["end"].to_numpy())
    assert np.array_equal(_observed_waits(result, node_engine), edges)
    assert (edges != 0).any()


@pytest.mark.parametrize("sample", ["gemm", "mlp"])
def test_edges_are_counted_without_building_the_graph(sample: str) -> None:
    trace = tracekit.open_trace(Path(__file__).resolve().parents[1] / "sample_traces" / sample)
    result = replay(trace)
    counted = result.edges
    assert "graph" not in result.__dict__  # not built to count
    assert counted == result.graph.edges > result.fixed.edges


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 6))
def test_largest_errors_by_one_pass_equal_a_sort(values: list[int], k: int) -> None:
    from tracekit.analysis.replay_report import _top

    want = [i for i in sorted(range(len(values)), key=lambda i: (-values[i], i))
            if values[i] != 0][:k]
    assert _top(np.array(values, dtype=np.int64), k).tolist() == want
