"""`tracekit convert chrome`: exact instructions and dependencies from tiny Chrome traces built in
code (complete events, B/E pairs, nesting, flows of both styles), the round trip through
`tracekit export perfetto` on generated traces, a critical path across threads, determinism,
and every error path through the command line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import assert_failed_cleanly, build_valid_trace
from typer.testing import CliRunner, Result

import tracekit
from tracekit.cli.app import app
from tracekit.convert.chrome import ChromeTraceError, Nesting, chrome_tables, convert_chrome
from tracekit.convert.perfetto import export_perfetto
from tracekit.trace.builder import TraceBuilder
from tracekit.workloads.generate import generate
from tracekit.workloads.lowering import Tiling

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"

runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def tables(events: list[dict[str, Any]], **options: Any) -> tuple[pl.DataFrame, list[tuple]]:
    """Instructions (id order, as plain strings) and deps rows of a list of events."""
    result = chrome_tables(events, {}, "t.json", **options)
    return result.instructions, result.deps.rows()


def X(name: str, tid: Any, ts: float, dur: float, pid: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, **extra}


def flow(ph: str, flow_id: Any, tid: Any, ts: float, pid: Any = 1, **extra: Any
         ) -> dict[str, Any]:
    return {"ph": ph, "id": flow_id, "cat": "ac2g", "name": "ac2g", "pid": pid, "tid": tid,
            "ts": ts, **extra}


# A PyTorch-like trace: a CPU op with a kernel launch nested in it, and two kernels on a GPU
# stream, the launches tied to their kernels by ac2g flows.
TORCH = [
    {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}},
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "stream 7"}},
    X("aten::linear", 1, 9.0, 20.0, cat="cpu_op"),
    X("cudaLaunchKernel", 1, 10.0, 4.5, cat="cuda_runtime"),
    X("gemm", 7, 16.0, 20.0, cat="kernel", args={"bytes": 100, "flops": 2.0e3}),
    {"ph": "B", "name": "cudaLaunchKernel", "cat": "cuda_runtime", "pid": 1, "tid": 1,
     "ts": 20.0},
    {"ph": "E", "pid": 1, "tid": 1, "ts": 22.0},
    X("relu", 7, 40.0, 5.0, cat="kernel"),
    flow("s", 3, 1, 10.0), flow("f", 3, 7, 16.0, bp="e"),
    flow("s", 4, 1, 20.0), flow("f", 4, 7, 40.0, bp="e"),
    {"ph": "i", "name": "mark", "pid": 1, "tid": 1, "ts": 12.0, "s": "t"},
]


def rows(frame: pl.DataFrame, *cols: str) -> list[tuple]:
    return frame.select(cols).rows()


def test_torch_like_trace_exact() -> None:
    result = chrome_tables(TORCH, {}, "torch.json")
    inst = result.instructions
    assert rows(inst, "id", "engine", "seq", "opcode", "layer", "start", "end") == [
        (0, "python/1", 0, "aten::linear", "cpu_op", 0, 20000),
        (1, "python/1/d1", 0, "cudaLaunchKernel", "cuda_runtime", 1000, 5500),
        (2, "python/stream 7", 0, "gemm", "kernel", 7000, 27000),
        (3, "python/1/d1", 1, "cudaLaunchKernel", "cuda_runtime", 11000, 13000),
        (4, "python/stream 7", 1, "relu", "kernel", 31000, 36000),
    ]
    assert rows(inst.filter(pl.col("id") == 2), "bytes", "flops", "elements", "pc") == [
        (100, 2000, None, None)]
    assert result.deps.rows() == [(1, 2, "data"), (3, 4, "data")]
    assert result.clock_hz == 1.0e9
    assert result.extra["origin_us"] == 9.0
    assert result.extra["engines"]["python/1/d1"] == {"pid": 1, "tid": 1, "depth": 1}
    assert result.extra["ignored_events"] == {"i": 1}
    assert result.notes == ("ignored events that are not slices or flows: 1 ph 'i'.",)


def test_nesting_top_and_leaf() -> None:
    inst, deps = tables(TORCH, nesting=Nesting.TOP)
    assert rows(inst, "id", "engine", "opcode") == [
        (0, "python/1", "aten::linear"), (1, "python/stream 7", "gemm"),
        (2, "python/stream 7", "relu")]
    assert deps == [(0, 1, "data"), (0, 2, "data")]   # launches bind to their outer op
    inst, deps = tables(TORCH, nesting="leaf")
    assert rows(inst, "id", "engine", "opcode") == [
        (0, "python/1", "cudaLaunchKernel"), (1, "python/stream 7", "gemm"),
        (2, "python/1", "cudaLaunchKernel"), (3, "python/stream 7", "relu")]
    assert deps == [(0, 1, "data"), (2, 3, "data")]


def test_deep_and_improper_nesting_get_their_own_engines() -> None:
    events = [X("a", 1, 0, 100), X("b", 1, 10, 50), X("c", 1, 20, 10), X("d", 1, 60, 10),
              X("e", 1, 90, 30)]  # e starts inside a and ends after it
    inst, _ = tables(events, cycles_per_us=1)
    assert rows(inst, "opcode", "engine", "start", "end") == [
        ("a", "1/1", 0, 100), ("b", "1/1/d1", 10, 60), ("c", "1/1/d2", 20, 30),
        ("d", "1/1/d1", 60, 70), ("e", "1/1/d1", 90, 120)]


def test_begin_end_pairs_per_thread() -> None:
    events = [
        {"ph": "B", "name": "outer", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "B", "name": "other", "pid": 1, "tid": 2, "ts": 1},
        {"ph": "B", "name": "inner", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 3},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 4},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 5},
        {"ph": "B", "name": "next", "pid": 1, "tid": 1, "ts": 5},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 6},
    ]
    inst, _ = tables(events, cycles_per_us=10)
    assert rows(inst, "opcode", "engine", "start", "end") == [
        ("outer", "1/1", 0, 50), ("other", "1/2", 10, 40), ("inner", "1/1/d1", 20, 30),
        ("next", "1/1", 50, 60)]


def test_cycles_per_us_rounds_each_end() -> None:
    events = [X("a", 1, 1000.0004, 0.0013), X("b", 1, 1000.002, 0.5)]
    inst, _ = tables(events)
    assert rows(inst, "start", "end") == [(0, 1), (2, 502)]
    inst, _ = tables(events, cycles_per_us=1.4e3)
    assert rows(inst, "start", "end") == [(0, 2), (2, 702)]


def test_flow_styles() -> None:
    events = [
        X("a", 1, 0, 10), X("b", 2, 20, 10), X("c", 3, 40, 10), X("d", 2, 60, 10),
        # v1 chain a -> b -> c through a step; the end binds to the next slice (no bp "e").
        flow("s", "x", 1, 5), flow("t", "x", 2, 25), flow("f", "x", 3, 35),
        # v2: c flow_out, d flow_in.
    ]
    events[2] |= {"bind_id": 9, "flow_out": True}
    events[3] |= {"bind_id": 9, "flow_in": True}
    _, deps = tables(events)
    assert deps == [(0, 1, "data"), (1, 2, "data"), (2, 3, "data")]


def test_flows_dropped_with_notes() -> None:
    events = [
        X("a", 1, 0, 30), X("b", 2, 20, 10),
        flow("s", 1, 1, 5),                                # no end: ignored
        flow("s", 2, 2, 25), flow("f", 2, 1, 26, bp="e"),  # b -> a, which started earlier
        flow("s", 3, 1, 50), flow("f", 3, 2, 60, bp="e"),  # its ends are on no slice
    ]
    result = chrome_tables(events, {}, "t.json")
    assert result.deps.height == 0
    assert result.notes == (
        "1 flow start(s) that no flow end follows ignored.",
        "1 flow(s) with an end on no slice ignored.",
        "1 flow(s) pointing back in time (or at their own slice) dropped.",
    )


def test_thread_names_that_collide_get_their_ids() -> None:
    events = [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "worker"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "worker"}},
        X("a", 1, 0, 1), X("b", 2, 0, 1), X("c", "t3", 0, 1, pid="gpu"),
    ]
    inst, _ = tables(events)
    assert sorted(inst["engine"].to_list()) == ["1/worker [1:1]", "1/worker [1:2]",
                                                "gpu/t3"]


# --- round trip ---------------------------------------------------------------------------------


def _same_instructions(back: tracekit.Trace, source: tracekit.Trace) -> None:
    got = back.read("instructions").sort("id")
    want = source.read("instructions").sort("id")
    assert got.equals(want)


@pytest.mark.parametrize("replayed", [False, True])
def test_round_trip_of_the_tiny_trace(tmp_path: Path, replayed: bool) -> None:
    source = build_valid_trace().write(tmp_path / "tiny")
    export_perfetto(source, tmp_path / "tiny.json", replay=replayed, critical_path=True)
    back, notes = convert_chrome(tmp_path / "tiny.json", tmp_path / "back")
    _same_instructions(back, source)
    assert notes == ()
    assert (back.manifest.workload, back.manifest.clock_hz) == ("tiny-mlp", 1.0e9)
    # The trace's dependencies, exported as flows, come back exactly (not the critical
    # path's arrows).
    assert sorted(back.read("deps").rows()) == sorted(source.read("deps").rows())
    assert tracekit.validate(back.path).ok()


def test_round_trip_of_generated_traces(tmp_path: Path) -> None:
    cases = {
        "gemm": generate("gemm", tmp_path / "gemm", params={"m": 256, "n": 512, "k": 384},
                         tiling=Tiling(dma_queues=3), seed=3),
        "attention": generate("attention", tmp_path / "att",
                              params={"seq": 256, "heads": 2, "head_dim": 64}, seed=5,
                              inject=["stuck-engine"]),
        "untimed": generate("mlp", tmp_path / "mlp", params={"widths": (256, 512, 128),
                                                             "batch": 128}, untimed=True),
    }
    for name, source in cases.items():
        out = tmp_path / f"{name}.json.gz"
        export_perfetto(source, out, critical_path=True)
        back, _ = convert_chrome(out, tmp_path / f"{name}-back")
        if name == "untimed":  # exported as its model replay: the same rows, predicted times
            got = back.read("instructions").drop("start", "end").sort("id")
            assert got.equals(source.read("instructions").drop("start", "end").sort("id"))
            assert back.read("instructions")["start"].null_count() == 0
        else:
            _same_instructions(back, source)
        assert back.manifest.workload == source.manifest.workload
        assert back.manifest.clock_hz == source.manifest.clock_hz


def test_round_trip_of_a_windowed_export_keeps_exactly_the_window(tmp_path: Path) -> None:
    source = build_valid_trace().write(tmp_path / "tiny")
    export_perfetto(source, tmp_path / "w.json", start=60, end=190)
    back, _ = convert_chrome(tmp_path / "w.json", tmp_path / "back")
    assert back.read("instructions")["id"].to_list() == [2, 3, 4, 5]


# --- the command line and the analyses on an import --------------------------------------------


def test_cli_convert_then_critical_path_crosses_threads(tmp_path: Path) -> None:
    source = write_json(tmp_path / "torch.json", {"traceEvents": TORCH,
                                                   "displayTimeUnit": "ms"})
    out = tmp_path / "torch"
    result = run("convert", "chrome", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: 5 instructions, 2 dependencies (torch)\n"
    assert "note: ignored events that are not slices or flows: 1 ph 'i'." in result.stderr
    assert run("validate", out).exit_code == 0
    path = run("critical-path", out, "--timeline", "observed", "-f", "json")
    assert path.exit_code == 0, path.output
    chain = json.loads(path.stdout)["path"]
    assert [(s["id"], s["engine"], s["edge_kind"]) for s in chain] == [
        (1, "python/1/d1", None), (2, "python/stream 7", "data"),
        (4, "python/stream 7", "order")]
    for command in ("stalls", "analyze"):
        assert run(command, out, "--timeline", "observed").exit_code == 0


def test_cli_options_and_input_forms(tmp_path: Path) -> None:
    events = [X("a", 1, 0.5, 2.0), X("b", 1, 3.0, 1.0)]
    bare = write_json(tmp_path / "bare.json", events)
    result = run("convert", "chrome", bare, "-o", tmp_path / "a", "--cycles-per-us", "2",
                 "--workload", "kernel7", "--nesting", "top")
    assert result.exit_code == 0, result.output
    trace = tracekit.open_trace(tmp_path / "a")
    assert trace.manifest.workload == "kernel7" and trace.manifest.clock_hz == 2.0e6
    assert rows(trace.read("instructions"), "start", "end") == [(0, 4), (5, 7)]
    # An array cut short (no closing bracket) is allowed by the format; gzip is read too.
    text = json.dumps(events)
    (tmp_path / "cut.json").write_text(text[:-1] + ",\n")
    (tmp_path / "z.json.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("cut.json", "z.json.gz"):
        result = run("convert", "chrome", tmp_path / name, "-o", tmp_path / f"{name}.out")
        assert result.exit_code == 0, result.output
    again = run("convert", "chrome", bare, "-o", tmp_path / "a", "--force")
    assert again.exit_code == 0, again.output


def test_same_input_same_bundle(tmp_path: Path) -> None:
    source = write_json(tmp_path / "torch.json", {"traceEvents": TORCH})
    a, _ = convert_chrome(source, tmp_path / "a")
    b, _ = convert_chrome(source, tmp_path / "b")
    for file in sorted(p.name for p in a.path.iterdir()):
        assert (a.path / file).read_bytes() == (b.path / file).read_bytes(), file


# --- errors -------------------------------------------------------------------------------------


BAD_EVENTS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "no events": ({"traceEvents": []}, ("holds no events",)),
    "not events": ({"traceEvents": {"a": 1}}, ("traceEvents is a dict",)),
    "not a trace": ({"events": []}, ("neither an array of events nor an object",)),
    "only metadata": ([{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1,
                        "args": {"name": "t"}}], ("no complete events",)),
    "not an object": ([X("a", 1, 0, 1), 5], ("event 1: a int, not an object",)),
    "no phase": ([X("a", 1, 0, 1), {"name": "b"}], ('event 1: no "ph"',)),
    "missing ts": ([X("a", 1, 0, 1), {"ph": "X", "name": "b", "pid": 1, "tid": 1, "dur": 1}],
                   ('event 1: "ts" is missing', "numeric ts")),
    "string ts": ([X("a", 1, "7", 1)], ('event 0: "ts" is "7", not a finite number',)),
    "missing dur": ([{"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 1}],
                    ('event 0: "dur" is missing',)),
    "negative dur": ([X("a", 1, 0, 1), X("b", 1, 5, -2)],
                     ('event 1: "dur" is negative (-2)', "check the producer")),
    "missing pid": ([{"ph": "X", "name": "b", "tid": 1, "ts": 1, "dur": 1}],
                    ('event 0: "pid" is missing',)),
    "missing name": ([{"ph": "X", "pid": 1, "tid": 1, "ts": 1, "dur": 1}],
                     ('event 0: "name" is missing',)),
    "unmatched E": ([X("a", 1, 0, 1), {"ph": "E", "pid": 1, "tid": 1, "ts": 3}],
                    ('event 1: ph "E" ends no open slice on pid 1, tid 1', "stray E")),
    "unmatched B": ([{"ph": "B", "name": "b", "pid": 1, "tid": 2, "ts": 3}],
                    ('event 0: ph "B" on pid 1, tid 2 is never ended', "Add its E")),
    "unknown flow id": ([X("a", 1, 0, 10), X("b", 2, 20, 10), flow("s", 1, 1, 5),
                         flow("f", 2, 2, 25, bp="e")],
                        ("event 3: flow event (ph \"f\") has an id that no flow start",)),
    "flow without id": ([X("a", 1, 0, 10), {"ph": "s", "pid": 1, "tid": 1, "ts": 5}],
                        ('event 1: flow event (ph "s") has no "id"',)),
    "tracekit args": ({"otherData": {"tracekit": {"format": 1, "timelines": [{"pid": 1}]}},
                       "traceEvents": [X("a", 1, 0, 10, args={"id": 0, "engine": "t"})]},
                      ("event 0: args.seq is missing from a slice of tracekit's export",)),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_input_fails_cleanly(case: str, tmp_path: Path) -> None:
    doc, needles = BAD_EVENTS[case]
    source = write_json(tmp_path / "bad.json", doc)
    out = tmp_path / "out"
    assert_failed_cleanly(run("convert", "chrome", source, "-o", out), 1, str(source),
                          *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_unreadable_files_fail_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "bad.json").write_text('{"traceEvents": [')
    assert_failed_cleanly(run("convert", "chrome", tmp_path / "bad.json", "-o", out), 1,
                          "bad.json: not JSON (line 1, column 18")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    assert_failed_cleanly(run("convert", "chrome", tmp_path / "bin.json", "-o", out), 1,
                          "not UTF-8")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08rubbish")
    assert_failed_cleanly(run("convert", "chrome", tmp_path / "bad.gz", "-o", out), 1,
                          "damaged gzip")
    assert_failed_cleanly(run("convert", "chrome", tmp_path / "none.json", "-o", out), 1,
                          "none.json: no such file")
    assert not out.exists()


def test_option_errors(tmp_path: Path) -> None:
    source = write_json(tmp_path / "t.json", [X("a", 1, 0, 1)])
    assert_failed_cleanly(run("convert", "chrome", source, "-o", tmp_path / "o", "--nesting",
                              "middle"), 2)
    assert_failed_cleanly(run("convert", "chrome", source, "-o", tmp_path / "o",
                              "--cycles-per-us", "0"), 1,
                          "--cycles-per-us must be a positive number")
    existing = TraceBuilder("x")
    existing.inst("tensor", "matmul", 0, 1)
    existing.write(tmp_path / "existing")
    assert_failed_cleanly(run("convert", "chrome", source, "-o", tmp_path / "existing"), 1,
                          "already exists", "--force")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ChromeTraceError, match="too large|past what int64"):
        chrome_tables([X("a", 1, 0, 1e18)], {}, "t.json")
