"""`tracekit export perfetto`: exact events on tiny traces, a checker of the trace event format's
rules applied to the export of every sample trace, flow arrows against the critical path, the
window and event cap, the warning, atomic and deterministic output, and every error path."""

from __future__ import annotations

import bisect
import gzip
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import assert_failed_cleanly, build_valid_trace
from typer.testing import CliRunner, Result

import tracekit
from tracekit.analysis.critical_path import critical_path
from tracekit.analysis.timelines import Source, kind_latencies, timeline
from tracekit.cli.app import app
from tracekit.convert import perfetto
from tracekit.convert.perfetto import (
    COUNTER_NAME,
    ExportError,
    bandwidth,
    engine_order,
    export_perfetto,
    nice_width,
)
from tracekit.replay.machine import builtin_machine
from tracekit.replay.run import replay
from tracekit.trace.builder import TraceBuilder

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if (p / "manifest.json").is_file())
STUCK = {"mlp_faults"}  # its model replay deadlocks, as the fault intends

runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def load(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


# --- a checker of the trace event format ------------------------------------------------------

METADATA = {"process_name": ("name", str), "process_labels": ("labels", str),
            "process_sort_index": ("sort_index", int), "thread_name": ("name", str),
            "thread_sort_index": ("sort_index", int)}


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_trace_events(doc: Any) -> list[str]:
    """Every breach of the trace event format's rules (as the Perfetto UI and chrome://tracing
    read it) in a JSON document: phases, required fields and their types per phase, flow
    start and end ids matching and binding to a slice, slices nesting properly on each
    (pid, tid), thread names for every track. An empty list means the document passes."""
    problems: list[str] = []
    if isinstance(doc, dict):
        events = doc.get("traceEvents")
    else:
        events = doc
    if not isinstance(events, list):
        return ["traceEvents is not an array"]
    slices: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    flows: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    named_threads: set[tuple[int, int]] = set()
    pid_of_tid: dict[int, int] = {}
    for i, e in enumerate(events):
        where = f"event {i}"
        if not isinstance(e, dict):
            problems.append(f"{where}: not an object")
            continue
        ph = e.get("ph")
        if ph not in {"X", "M", "C", "s", "f"}:
            problems.append(f"{where}: phase {ph!r} is not one this exporter should write")
            continue
        if type(e.get("pid")) is not int:
            problems.append(f"{where}: pid missing or not an integer")
        if ph in {"X", "s", "f"} or (ph == "M" and e.get("name", "").startswith("thread")):
            if type(e.get("tid")) is not int:
                problems.append(f"{where}: tid missing or not an integer")
                continue
            previous = pid_of_tid.setdefault(e["tid"], e["pid"])
            if previous != e["pid"]:
                problems.append(f"{where}: tid {e['tid']} used in pids {previous} and "
                                f"{e['pid']}")
        if not isinstance(e.get("name"), str):
            problems.append(f"{where}: name missing or not a string")
        if ph != "M" and not _is_number(e.get("ts")):
            problems.append(f"{where}: ts missing or not a number")
            continue
        if ph == "X":
            if not _is_number(e.get("dur")) or e["dur"] < 0:
                problems.append(f"{where}: dur missing, not a number or negative")
                continue
            if "args" in e and not isinstance(e["args"], dict):
                problems.append(f"{where}: args is not an object")
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
        elif ph == "M":
            if e.get("name") not in METADATA:
                problems.append(f"{where}: unknown metadata event {e.get('name')!r}")
                continue
            key, kind = METADATA[e["name"]]
            args = e.get("args")
            if not isinstance(args, dict) or type(args.get(key)) is not kind:
                problems.append(f"{where}: {e['name']} needs args.{key} ({kind.__name__})")
            if e["name"] == "thread_name":
                named_threads.add((e["pid"], e["tid"]))
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(
                    _is_number(v) for v in args.values()):
                problems.append(f"{where}: a counter needs numeric args")
        else:
            if not isinstance(e.get("cat"), str) or "id" not in e:
                problems.append(f"{where}: a flow event needs cat and id")
                continue
            if ph == "f" and e.get("bp") != "e":
                problems.append(f"{where}: flow end without bp 'e' binds to the next slice")
            flows[(e["cat"], e["id"])].append({**e, "index": i})
    for track, spans in slices.items():
        if track not in named_threads:
            problems.append(f"track {track}: no thread_name metadata")
        stack: list[float] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            if stack and end > stack[-1]:
                problems.append(f"track {track}: slice [{start}, {end}) overlaps its "
                                f"enclosing slice ending at {stack[-1]} without nesting")
            stack.append(end)
    index = SliceIndex(events)
    for key, ends in flows.items():
        phases = sorted(e["ph"] for e in ends)
        if phases != ["f", "s"]:
            problems.append(f"flow {key}: phases {phases}, expected one s and one f")
            continue
        for e in ends:
            if index.enclosing(e) is None:
                problems.append(f"flow {key}: its {e['ph']} binds to no slice")
    return problems


class SliceIndex:
    """The X events of a document by (pid, tid), sorted by ts, to find the slice a flow event
    binds to: the innermost one whose span holds its ts."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            if e.get("ph") == "X" and _is_number(e.get("ts")) and _is_number(e.get("dur")):
                tracks[(e.get("pid"), e.get("tid"))].append(e)
        self.tracks = {k: sorted(v, key=lambda e: (e["ts"], -e["dur"])) for k, v in
                       tracks.items()}
        self.starts = {k: [e["ts"] for e in v] for k, v in self.tracks.items()}

    def enclosing(self, flow: dict[str, Any]) -> dict[str, Any] | None:
        key = (flow["pid"], flow["tid"])
        slices = self.tracks.get(key, [])
        k = bisect.bisect_right(self.starts.get(key, []), flow["ts"]) - 1
        while k >= 0:  # the latest start that still holds ts is the innermost
            if slices[k]["ts"] + slices[k]["dur"] >= flow["ts"]:
                return slices[k]
            k -= 1
        return None


def flow_pairs(doc: dict[str, Any], pid: int, cat: str = "critical_path"
               ) -> list[tuple[int, int]]:
    """(source id, destination id) of each flow arrow of process `pid` (of category `cat`:
    the critical path's, or the trace's dependencies), in flow id order."""
    events = doc["traceEvents"]
    index = SliceIndex(events)
    by_id: dict[int, dict[str, int]] = defaultdict(dict)
    for e in events:
        if e["ph"] in ("s", "f") and e["pid"] == pid and e["cat"] == cat:
            slice_ = index.enclosing(e)
            assert slice_ is not None
            by_id[e["id"]][e["ph"]] = slice_["args"]["id"]
    return [(ends["s"], ends["f"]) for _, ends in sorted(by_id.items())]


def consecutive(ids: list[int]) -> list[tuple[int, int]]:
    return list(zip(ids[:-1], ids[1:], strict=True))


def test_checker_catches_breaches() -> None:
    good = {"traceEvents": [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "t"}},
        {"name": "a", "ph": "X", "ts": 0, "dur": 10, "pid": 1, "tid": 1, "args": {"id": 0}},
        {"name": "b", "ph": "X", "ts": 2, "dur": 3, "pid": 1, "tid": 1, "args": {"id": 1}},
        {"name": "p", "cat": "c", "ph": "s", "id": 1, "ts": 1, "pid": 1, "tid": 1},
        {"name": "p", "cat": "c", "ph": "f", "bp": "e", "id": 1, "ts": 3, "pid": 1, "tid": 1},
    ]}
    assert check_trace_events(good) == []
    bad = json.loads(json.dumps(good))
    bad["traceEvents"][2]["dur"] = 30          # b overlaps a without nesting
    bad["traceEvents"][4]["id"] = 2            # flow 1 has no end, flow 2 no start
    bad["traceEvents"].append({"name": "x", "ph": "X", "ts": "0", "dur": 1, "pid": 1,
                               "tid": 1})
    problems = check_trace_events(bad)
    assert any("without nesting" in p for p in problems)
    assert sum("expected one s and one f" in p for p in problems) == 2
    assert any("ts missing or not a number" in p for p in problems)


# --- exact events on the tiny trace -------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> tracekit.Trace:
    return build_valid_trace().write(tmp_path / "tiny")


def test_tiny_trace_exact_events(tiny: tracekit.Trace, tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    result = export_perfetto(tiny, out, critical_path=True)
    doc = load(out)
    assert check_trace_events(doc) == []
    events = doc["traceEvents"]
    meta = doc["otherData"]["tracekit"]
    assert (meta["format"], meta["time_unit"], meta["ts_per_cycle"], meta["clock_hz"],
            meta["workload"]) == (1, "cycles", 1, 1.0e9, "tiny-mlp")
    threads = [(e["tid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"]
    # Compute engines first, then the DMA queues.
    assert threads == [(1, "tensor"), (2, "scalar"), (3, "dma.q0"), (4, "dma.q1")]
    assert [e["args"]["name"] for e in events if e["name"] == "process_name"] == ["observed"]
    x = {e["args"]["id"]: e for e in events if e["ph"] == "X"}
    assert x[0] == {"name": "dma_load", "cat": "dma", "ph": "X", "ts": 0, "dur": 40, "pid": 1,
                    "tid": 3, "args": {"id": 0, "engine": "dma.q0", "seq": 0, "layer": "fc1",
                                       "bytes": 4096}}
    assert x[3] == {"name": "matmul", "cat": "compute", "ph": "X", "ts": 80, "dur": 50,
                    "pid": 1, "tid": 1,
                    "args": {"id": 3, "engine": "tensor", "seq": 0, "layer": "fc1",
                             "elements": 16384, "flops": 4194304, "binding_id": 1,
                             "binding_kind": "semaphore"}}
    # Bytes per cycle, 1-cycle bins over 0-240: 4096 B in 40 or 50 cycles.
    counters = [(e["ts"], e["args"]) for e in events if e["ph"] == "C"]
    assert all(e["name"] == COUNTER_NAME for e in events if e["ph"] == "C")
    assert counters == [(0, {"dma.q0": 102.4, "dma.q1": 81.92}),
                        (50, {"dma.q0": 102.4, "dma.q1": 0}),
                        (80, {"dma.q0": 0, "dma.q1": 0}),
                        (200, {"dma.q0": 0, "dma.q1": 102.4}),
                        (240, {"dma.q0": 0, "dma.q1": 0})]
    # The critical path: load on dma.q1 -> matmul -> matmul -> activation -> store.
    assert flow_pairs(doc, 1) == [(1, 3), (3, 4), (4, 5), (5, 6)]
    flows = [e for e in events if e["ph"] in "sf" and e["cat"] == "critical_path"]
    assert [(e["ph"], e["ts"], e["tid"], e["args"]["edge"]) for e in flows[:2]] == [
        ("s", 25, 4, "semaphore"), ("f", 105, 1, "semaphore")]
    # The trace's own dependencies are flows too (cat dependency).
    assert flow_pairs(doc, 1, "dependency") == sorted(
        tiny.read("deps").select("src", "dst").rows())
    assert (result.slices, result.flows, result.counters, result.events) == (7, 18, 5, 41)
    assert result.timelines == ("observed",) and result.warnings == ()


def test_replay_adds_a_predicted_process(tiny: tracekit.Trace, tmp_path: Path) -> None:
    out = tmp_path / "both.json"
    result = export_perfetto(tiny, out, replay=True, critical_path=True)
    doc = load(out)
    assert check_trace_events(doc) == []
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["name"] == "process_name"}
    assert names == {1: "observed", 2: "predicted"}
    assert result.timelines == ("observed", "predicted")
    predicted = replay(tiny)
    x2 = {e["args"]["id"]: e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 2}
    for row in predicted.timeline.iter_rows(named=True):
        assert (x2[row["id"]]["ts"], x2[row["id"]]["dur"]) == (row["start"], row["duration"])
    path = critical_path(predicted.timeline, predicted.graph,
                         kind_latencies(builtin_machine())).steps["id"].to_list()
    assert flow_pairs(doc, 2) == consecutive(path)
    # Thread ids are unique across the two processes.
    tids = {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert len({tid for _, tid in tids}) == len(tids) == 8


def test_overlapping_instructions_go_to_lanes(tmp_path: Path) -> None:
    b = TraceBuilder("overlap")
    b.inst("tensor", "matmul", 0, 100)
    b.inst("tensor", "matmul", 50, 120)     # overlaps the first: a second lane
    b.inst("tensor", "matmul", 100, 130)    # fits on the first lane again
    b.inst("tensor", "matmul", 100, 100)    # zero length at the first lane's end
    trace = b.write(tmp_path / "overlap")
    out = tmp_path / "overlap.json"
    export_perfetto(trace, out)
    doc = load(out)
    assert check_trace_events(doc) == []
    threads = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
               if e["name"] == "thread_name"}
    assert threads == {1: "tensor", 2: "tensor [lane 2]"}
    lane = {e["args"]["id"]: threads[e["tid"]] for e in doc["traceEvents"] if e["ph"] == "X"}
    assert lane == {0: "tensor", 1: "tensor [lane 2]", 2: "tensor", 3: "tensor"}


def test_untimed_trace_exports_the_model_replay(tmp_path: Path) -> None:
    b = TraceBuilder("untimed")
    b.inst("dma.q0", "dma_load", bytes=4096)
    b.inst("tensor", "matmul", elements=128)
    trace = b.write(tmp_path / "untimed")
    out = tmp_path / "untimed.json"
    result = export_perfetto(trace, out, critical_path=True)
    assert result.timelines == ("predicted",)
    assert any("untimed" in w for w in result.warnings)
    doc = load(out)
    assert check_trace_events(doc) == []
    assert [e["args"]["name"] for e in doc["traceEvents"]
            if e["name"] == "process_name"] == ["predicted"]


def test_engine_order_and_bins() -> None:
    assert engine_order(["dma.q10", "pe", "dma.q2", "sync", "tensor", "vector"]) == [
        "tensor", "vector", "sync", "pe", "dma.q2", "dma.q10"]
    assert [nice_width(s) for s in (0, 999, 1000, 1001, 2500, 4_000_001)] == [
        1, 1, 1, 2, 5, 5000]


def test_bandwidth_bins_exact() -> None:
    # One transfer of 100 B over cycles 5-15 (10 B/cycle) across bins of 10 from 0 to 30, a
    # zero-length one of 30 B at cycle 20, and one of 60 B over 12-42 clipped at 30.
    start = np.array([5, 20, 12])
    end = np.array([15, 20, 42])
    nbytes = np.array([100, 30, 60])
    got = bandwidth(start, end, nbytes, 0, 30, 10)
    assert got.tolist() == pytest.approx([5.0, 5.0 + 1.6, 3.0 + 2.0])
    assert bandwidth(np.array([0]), np.array([4]), np.array([8]), 0, 10, 10).tolist() == [0.8]


# --- every sample trace -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_exports_pass_the_format_checker(name: str, tmp_path: Path) -> None:
    trace = tracekit.open_trace(SAMPLES / name)
    out = tmp_path / f"{name}.json"
    result = export_perfetto(trace, out, replay=name not in STUCK, critical_path=True)
    doc = load(out)
    assert check_trace_events(doc) == []
    events = doc["traceEvents"]
    assert result.events == len(events)
    instructions = trace.read("instructions")
    timed = instructions["start"].null_count() == 0
    machine = builtin_machine()
    pid = 1
    if instructions["start"].null_count() < instructions.height:
        observed = instructions.filter(pl.col("start").is_not_null())
        ids = sorted(e["args"]["id"] for e in events if e["ph"] == "X" and e["pid"] == pid)
        assert ids == sorted(observed["id"].to_list())
        if timed:
            chosen = timeline(trace, machine, Source.OBSERVED)
            path = critical_path(chosen.frame, chosen.graph, chosen.kind_latency)
            assert flow_pairs(doc, pid) == consecutive(path.steps["id"].to_list())
        else:
            assert flow_pairs(doc, pid) == []
        pid += 1
    if name not in STUCK:
        predicted = replay(trace, machine)
        path = critical_path(predicted.timeline, predicted.graph, kind_latencies(machine))
        assert flow_pairs(doc, pid) == consecutive(path.steps["id"].to_list())
        # Every slice is in its process once, with the predicted timing.
        x = {e["args"]["id"]: (e["ts"], e["dur"]) for e in events
             if e["ph"] == "X" and e["pid"] == pid}
        assert x == dict(zip(predicted.timeline["id"].to_list(),
                             zip(predicted.timeline["start"].to_list(),
                                 predicted.timeline["duration"].to_list(), strict=True),
                             strict=True))


# --- window, cap and warning ------------------------------------------------------------------


def test_window_keeps_overlapping_instructions_whole(tiny: tracekit.Trace,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "window.json"
    result = export_perfetto(tiny, out, critical_path=True, start=60, end=190)
    doc = load(out)
    assert check_trace_events(doc) == []
    x = {e["args"]["id"]: (e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X"}
    # 2 (40-80), 3 (80-130), 4 (130-180), 5 (180-200); not 0, 1 (end by 50) or 6 (from 200).
    assert x == {2: (40, 40), 3: (80, 50), 4: (130, 50), 5: (180, 20)}
    # Arrows only between exported instructions: 1 -> 3 is gone.
    assert flow_pairs(doc, 1) == [(3, 4), (4, 5)]
    counters = [e["ts"] for e in doc["traceEvents"] if e["ph"] == "C"]
    assert counters[0] == 60 and counters[-1] == 190
    assert doc["otherData"]["tracekit"]["window"] == [60, 190]
    assert result.cut_at is None


def test_max_events_cuts_at_a_cycle_and_warns(tmp_path: Path) -> None:
    trace = tracekit.open_trace(SAMPLES / "gemm")
    out = tmp_path / "capped.json"
    result = export_perfetto(trace, out, critical_path=True, max_events=500)
    doc = load(out)
    assert check_trace_events(doc) == []
    events = doc["traceEvents"]
    assert len(events) == result.events <= 500
    assert result.cut_at is not None
    assert all(e["ts"] < result.cut_at for e in events if e["ph"] in "XC")
    # Everything that starts before the cut is there.
    starts = trace.read("instructions")["start"]
    assert result.slices == int((starts < result.cut_at).sum())
    assert len(result.warnings) == 1
    assert "--max-events 500" in result.warnings[0] and "--from/--to" in result.warnings[0]


def test_warning_past_the_event_threshold(tiny: tracekit.Trace, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    result = export_perfetto(tiny, tmp_path / "a.json", warn_events=10)
    assert len(result.warnings) == 1
    assert "holds 33 events" in result.warnings[0]
    assert "--from CYCLE --to CYCLE" in result.warnings[0]
    assert "--max-events N" in result.warnings[0]
    assert export_perfetto(tiny, tmp_path / "b.json", warn_events=33).warnings == ()
    monkeypatch.setattr(perfetto, "WARN_EVENTS", 10)
    cli = run("export", "perfetto", tiny.path, "-o", tmp_path / "c.json")
    assert cli.exit_code == 0, cli.output
    assert "warning:" in cli.stderr and "--max-events" in cli.stderr


# --- output -----------------------------------------------------------------------------------


def test_same_input_same_bytes(tiny: tracekit.Trace, tmp_path: Path) -> None:
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    export_perfetto(tiny, first, replay=True, critical_path=True)
    export_perfetto(tiny, second, replay=True, critical_path=True)
    assert first.read_bytes() == second.read_bytes()
    compressed = tmp_path / "three.json.gz"
    export_perfetto(tiny, compressed, replay=True, critical_path=True)
    assert gzip.decompress(compressed.read_bytes()) == first.read_bytes()
    export_perfetto(tiny, tmp_path / "four.json.gz", replay=True, critical_path=True)
    assert (tmp_path / "four.json.gz").read_bytes() == compressed.read_bytes()


def test_a_failed_write_leaves_nothing(tiny: tracekit.Trace, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")

    def broken(*args: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(perfetto, "_slice_text", broken)
    with pytest.raises(RuntimeError):
        export_perfetto(tiny, out)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "tiny"]


# --- command line -----------------------------------------------------------------------------


def test_cli_export(tiny: tracekit.Trace, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    result = run("export", "perfetto", tiny.path, "-o", out, "--replay", "--critical-path")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"wrote {out}: 72 events (14 slices, 26 flow events, 10 counter "
                             f"events; timelines: observed, predicted)\n")
    assert check_trace_events(load(out)) == []
    again = run("export", "perfetto", tiny.path, "-o", out, "--from", "0", "--to", "100",
                "--max-events", "40", "--force")
    assert again.exit_code == 0, again.output


def test_cli_errors(tiny: tracekit.Trace, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    assert_failed_cleanly(run("export", "perfetto", tmp_path / "nope", "-o", out), 1,
                          "nope: no such file or folder")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", out, "--from", "100",
                              "--to", "100"), 1, "window [100, 100) is empty")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", tmp_path / "no" / "e.json"),
                          1, "does not exist")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", out, "--max-events", "5"),
                          1, "--max-events 5 leaves no room", "--from/--to")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", out, "--max-events", "0"),
                          2)
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", out, "--machine", "nope"),
                          1, "nope")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", tmp_path), 1,
                          "already exists")
    assert not out.exists()
    out.write_text("keep")
    assert_failed_cleanly(run("export", "perfetto", tiny.path, "-o", out), 1,
                          "already exists", "--force")
    assert out.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "tiny"]


def test_stuck_replay_is_an_error(tmp_path: Path) -> None:
    result = run("export", "perfetto", SAMPLES / "mlp_faults", "-o", tmp_path / "x.json",
                 "--replay")
    assert_failed_cleanly(result, 3, "cannot finish")
    assert not (tmp_path / "x.json").exists()


def test_library_errors(tiny: tracekit.Trace, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="counter bin width"):
        export_perfetto(tiny, tmp_path / "x.json", bin_cycles=0)
    with pytest.raises(ExportError, match="is a folder"):
        export_perfetto(tiny, tmp_path)
    empty = TraceBuilder("empty").write(tmp_path / "empty")
    with pytest.raises(ExportError, match="no instructions"):
        export_perfetto(empty, tmp_path / "x.json")


def test_null_values_still_give_valid_json(tmp_path: Path) -> None:
    # issue 18: a null opcode, id or seq reaching the exporter wrote `{"name":,"cat":...`.
    from tracekit.convert.perfetto import TimelineView, write_chrome_trace

    frame = pl.DataFrame({"id": [0, None, 2], "engine": ["tensor", "tensor", "vector"],
                          "seq": [0, 1, None], "opcode": [None, "mm", "add"],
                          "start": [0, 5, 0], "end": [5, 9, 3]},
                         schema_overrides={"engine": pl.Categorical, "opcode": pl.Categorical})
    out = tmp_path / "t.json"
    write_chrome_trace([TimelineView("observed", "observed", frame, None)], out, meta={})
    events = json.loads(out.read_text())["traceEvents"]
    slices = sorted(str((e["name"], e["args"]["id"], e["args"]["seq"]))
                    for e in events if e["ph"] == "X")
    assert slices == ["('add', 2, None)", "('mm', None, 1)", "(None, 0, 0)"]
