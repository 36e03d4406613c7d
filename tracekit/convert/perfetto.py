"""Export a trace's timelines as Chrome trace event JSON, which the Perfetto UI and
chrome://tracing open: a slice per instruction on a track per engine, DMA bandwidth counters
and flow arrows along the critical path.

The instruction load (dma.q0, cycles 0-40, 4096 bytes, layer fc1) becomes the event

    {"name":"dma_load","cat":"dma","ph":"X","ts":0,"dur":40,"pid":1,"tid":3,
     "args":{"id":0,"engine":"dma.q0","seq":0,"layer":"fc1","bytes":4096}}

(thread 3 being named "dma.q0" by a thread_name metadata event).

Conventions (the file's `otherData.tracekit` records them too):

- Time: the format's `ts` and `dur` are microseconds; tracekit writes the trace's cycles there
  unchanged, so the viewer's ruler reads 1 µs per cycle and integers survive exactly (a trace
  timed in ps, ns or us is first converted to cycles at its clock).
  `otherData.tracekit.clock_hz` turns cycles into seconds.
- Processes: one per timeline. pid 1 is the observed timing; with `replay` pid 2 is the model
  replay's prediction. An untimed trace has no observed timing: its model replay is exported
  alone (pid 1, "predicted"). A partly timed trace exports its timed instructions.
- Threads: one per engine, named after it, compute engines first (tensor, vector, scalar,
  gpsimd, sync, then others), then the DMA queues in natural order. Instructions that overlap
  on one engine go to extra lanes "ENGINE [lane 2]", ..., so that the slices of every thread
  nest properly. Thread ids are unique across processes.
- Slices ("X"): name = opcode, cat = compute or dma; args = id, engine, seq, and whichever of
  layer, pc, elements, bytes, flops, binding_id, binding_kind, contention (> 0) are known.
- Counters ("C"): "DMA bandwidth (bytes/cycle)", one series per DMA queue: the bytes moved per
  cycle, averaged over bins of a fixed width (about 1000 over the exported span, 1, 2 or 5
  times a power of ten cycles), a transfer's bytes spread evenly over its duration. An event is
  written where a value changes, and a closing one of zeros at the end of the span.
- Flows ("s", "f" with bp "e"): the trace's dependencies (cat dependency) on the observed
  timeline, and with `critical_path` an arrow from each instruction of a timeline's critical
  path to the next (cat critical_path); each end in the middle of its slice so that it binds
  to that slice; args.edge is the kind of the edge. `convert chrome` reads the dependencies
  back (and, from older exports without them, the critical path's arrows).
- `start`/`end` keep the instructions that overlap the window [start, end) whole; max_events
  keeps the events before the cycle where the count would pass it. Past WARN_EVENTS events (the
  viewers slow to a halt around a million) the result carries a warning naming both options.
- The file is written to a temporary file beside the target and renamed into place; equal
  input gives equal bytes. A name ending in .gz is gzip-compressed (level 1, for speed;
  Perfetto opens it).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from tracekit import __version__
from tracekit.analysis.figures import bandwidth_over_time as bandwidth
from tracekit.analysis.figures import nice_width as _nice_width
from tracekit.convert.lanes import lowest_free_lane
from tracekit.errors import TracekitError
from tracekit.replay.graph import GraphError
from tracekit.replay.machine import Machine, builtin_machine, engine_kind
from tracekit.trace.bundle import Trace, atomic_file
from tracekit.trace.names import KEPT, SHOWN, map_names, shortened
from tracekit.trace.summary import natural_key

FORMAT = 1
"""Version of the `otherData.tracekit` record, which the importer checks."""

WARN_EVENTS = 1_000_000
"""Past this many events the Perfetto UI and chrome://tracing become unusably slow."""

COUNTER_BINS = 1000
"""Target number of bins of the DMA bandwidth counters over the exported span."""

COUNTER_NAME = "DMA bandwidth (bytes/cycle)"
FLOW_NAME = "critical path"
FLOW_CAT = "critical_path"
DEP_NAME = "dependency"
DEP_CAT = "dependency"
COMPUTE_ORDER = ("tensor", "vector", "scalar", "gpsimd", "sync")
CHUNK_ROWS = 250_000
"""Slices formatted and written per step, which bounds the memory of the text."""

INSTRUCTION_COLUMNS = ("id", "engine", "seq", "opcode", "layer", "pc", "elements", "bytes",
                       "flops", "start", "end")
OPTIONAL_ARGS = ("layer", "pc", "elements", "bytes", "flops", "binding_id", "binding_kind",
                 "contention")
"""Slice args written when not null, in this order after id, engine and seq."""


class ExportError(TracekitError):
    """The trace cannot be exported as asked (bad window, too small an event cap, bad path)."""


@dataclass(frozen=True)
class TimelineView:
    """One timeline to export as a process.

    `frame`: one row per instruction: id, engine, seq, opcode, layer, pc, elements, bytes,
    flops, start, end (cycles), and optionally binding_id, binding_kind, contention (cycles).
    `path`: the critical path in time order (id, edge_kind: the edge into the step), or None.
    `deps`: the trace's dependency edges (src, dst, kind) to draw as flows, or None.
    """

    name: str
    label: str
    frame: pl.DataFrame
    path: pl.DataFrame | None = None
    deps: pl.DataFrame | None = None


@dataclass(frozen=True)
class ExportResult:
    """What was written: event counts by kind (metadata events count in `events` only), the
    timelines (process names in pid order), the cycle at which max_events cut the export (None
    when it did not) and warnings for the user."""

    path: Path
    events: int
    slices: int
    flows: int
    counters: int
    timelines: tuple[str, ...]
    cut_at: int | None
    warnings: tuple[str, ...] = field(default=())


# --- gathering the timelines -----------------------------------------------------------------


def export_perfetto(trace: Trace, output: str | os.PathLike[str], *,
                    machine: Machine | None = None, replay: bool = False,
                    critical_path: bool = False, start: int | None = None,
                    end: int | None = None, max_events: int | None = None,
                    bin_cycles: int | None = None,
                    warn_events: int | None = None) -> ExportResult:
    """Export `trace` to `output` (see the module docstring): its observed timeline, and with
    `replay` the prediction of `machine` (built-in default if None) beside it; with
    `critical_path` each timeline's critical path as flow arrows. `bin_cycles` fixes the
    counters' bin width; `warn_events` the warning threshold (default WARN_EVENTS)."""
    machine = machine or builtin_machine()
    views, notes = timeline_views(trace, machine, replay=replay, critical_path=critical_path)
    meta = {"workload": trace.manifest.workload, "clock_hz": trace.manifest.clock_hz,
            "machine": machine.name if any(v.name == "predicted" for v in views) else None}
    result = write_chrome_trace(views, output, meta=meta, start=start, end=end,
                                max_events=max_events, bin_cycles=bin_cycles,
                                warn_events=warn_events)
    return replace(result, warnings=tuple(notes) + result.warnings)


def timeline_views(trace: Trace, machine: Machine, *, replay: bool, critical_path: bool
                   ) -> tuple[list[TimelineView], list[str]]:
    """The timelines to export and notes on what was left out: the observed one when the trace
    is timed, the model replay's with `replay` or when it is untimed."""
    from tracekit.analysis.critical_path import critical_path as find_path
    from tracekit.analysis.timelines import Source, kind_latencies, timeline
    from tracekit.replay.run import replay as run_replay

    inst = trace.in_cycles(trace.read_instructions(list(INSTRUCTION_COLUMNS)))
    if inst.height == 0:
        raise ExportError(f"{trace.path}: the trace has no instructions; there is nothing to "
                          f"export.")
    timed = pl.col("start").is_not_null() & pl.col("end").is_not_null()
    n_timed = inst.select(timed.sum()).item()
    views: list[TimelineView] = []
    notes: list[str] = []

    def path_of(frame: pl.DataFrame, graph: Any) -> pl.DataFrame:
        try:
            steps = find_path(frame, graph, kind_latencies(machine)).steps
        except GraphError as exc:  # a dependency cycle
            raise ExportError(f"{trace.path}: no critical path ({exc}); export without "
                              f"--critical-path, or run `tracekit bugs {trace.path}`.") from None
        return steps.select("id", "edge_kind")

    if n_timed:
        observed, path = inst.filter(timed), None
        if n_timed < inst.height:
            notes.append(f"{inst.height - n_timed:,} of {inst.height:,} instructions have no "
                         f"timing (they never ran, or were not traced) and are left out of "
                         f"the observed timeline.")
            if critical_path:
                notes.append("no critical path on the observed timeline: it needs timing on "
                             "every instruction.")
        elif critical_path:
            chosen = timeline(trace, machine, Source.OBSERVED)
            path = path_of(chosen.frame, chosen.graph)
            observed = observed.join(chosen.frame.select("id", "binding_id", "binding_kind"),
                                     on="id", how="left", maintain_order="left")
        deps = (trace.read("deps", ["src", "dst", "kind"]).with_columns(
            pl.col("kind").cast(pl.String)) if trace.has_table("deps") else None)
        views.append(TimelineView("observed", "observed timing", observed, path, deps))
    else:
        notes.append("the trace is untimed: exported the model replay's predicted timeline "
                     f"({machine.name}) instead of an observed one.")
    if replay or not n_timed:
        result = run_replay(trace, machine)
        predicted = inst.drop("start", "end").join(
            result.timeline.select("id", "start", "end", "binding_id", "binding_kind",
                                   "contention"),
            on="id", how="left", maintain_order="left")
        path = path_of(result.timeline, result.graph) if critical_path else None
        views.append(TimelineView("predicted", f"predicted by the model replay "
                                  f"({machine.name})", predicted, path))
    return views, notes


# --- building the events ---------------------------------------------------------------------


def engine_order(engines: list[str]) -> list[str]:
    """Compute engines first (the known ones in machine order, then others), then DMA queues,
    each group in natural order (dma.q2 before dma.q10)."""
    def key(name: str) -> tuple[int, int, tuple[tuple[int, int | str], ...]]:
        if engine_kind(name) == "dma":
            return (2, 0, natural_key(name))
        if name in COMPUTE_ORDER:
            return (0, COMPUTE_ORDER.index(name), ())
        return (1, 0, natural_key(name))
    return sorted(engines, key=key)


def nice_width(span: int, bins: int = COUNTER_BINS) -> int:
    """The counters' bin width: `figures.nice_width` over COUNTER_BINS bins."""
    return _nice_width(span, bins)


def _num(value: float) -> str:
    """A JSON number: integers without a fraction, others in Python's shortest repr."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _json_names(column: pl.Series, limit: int = SHOWN) -> pl.Series:
    """Each row's name (String, Categorical or Enum) as the JSON string literal of its
    shortened form (`names.shortened`), each distinct name escaped once and given to the rows
    by its code; null stays null."""
    return map_names(column, lambda name: json.dumps(shortened(name, limit)), pl.String)


def _is_dma(column: pl.Series) -> pl.Series:
    """Whether each row's engine is a DMA queue (looked at once per distinct name)."""
    return map_names(column, lambda name: name.startswith("dma."), pl.Boolean)


@dataclass
class _Process:
    """The events of one timeline before formatting."""

    pid: int
    view: TimelineView
    slices: pl.DataFrame  # the view's frame inside the window, plus dur
    flows: pl.DataFrame  # a, b: source and destination rows of slices; kind: edge into b
    counters: list[tuple[int, dict[str, float]]]  # (ts, {queue: bytes/cycle})
    width: int | None  # the counters' bin width in cycles


def _window(frame: pl.DataFrame, start: int | None, end: int | None) -> pl.DataFrame:
    """The instructions overlapping [start, end) (a zero-length one: inside it), whole."""
    keep = pl.lit(True)
    if end is not None:
        keep = keep & (pl.col("start") < end)
    if start is not None:
        keep = keep & ((pl.col("end") > start) | (pl.col("start") >= start))
    return frame.filter(keep)


def _counters(slices: pl.DataFrame, lo: int, hi: int, width: int
              ) -> list[tuple[int, dict[str, float]]]:
    dma = slices.filter(_is_dma(slices["engine"]).fill_null(False))
    if dma.height == 0 or hi <= lo:
        return []
    queues = engine_order(dma["engine"].unique().drop_nulls().cast(pl.String).to_list())
    rows = []
    for queue in queues:
        part = dma.filter(pl.col("engine") == queue)
        rows.append(np.round(bandwidth(part["start"].to_numpy(), part["end"].to_numpy(),
                                       part["bytes"].fill_null(0).to_numpy(), lo, hi, width), 3))
    values = np.vstack(rows)
    changed = np.r_[True, np.any(values[:, 1:] != values[:, :-1], axis=0)]
    # A series per queue, named as its slices' args name the engine (every event repeats it).
    series = [shortened(queue) for queue in queues]
    out = [(lo + width * int(k), {q: float(values[i, k]) for i, q in enumerate(series)})
           for k in np.flatnonzero(changed)]
    out.append((hi, dict.fromkeys(series, 0.0)))
    return out


def _process(pid: int, view: TimelineView, start: int | None, end: int | None,
             bin_cycles: int | None) -> _Process:
    slices = _window(view.frame, start, end).sort("start", "id")
    slices = slices.with_columns((pl.col("end") - pl.col("start")).alias("dur"))
    schema = {"a": pl.Int64, "b": pl.Int64, "kind": pl.String, "cat": pl.String}
    flows = pl.DataFrame(schema=schema)
    ids = slices["id"].to_numpy()
    by_id = np.argsort(ids, kind="stable")

    def rows_of(wanted: np.ndarray) -> np.ndarray:
        """Rows of instructions among the exported slices (-1: not exported)."""
        at = np.minimum(np.searchsorted(ids[by_id], wanted), max(ids.size - 1, 0))
        return np.where(ids[by_id][at] == wanted, by_id[at], -1) if ids.size else \
            np.full(wanted.size, -1)

    if view.deps is not None and view.deps.height and slices.height:
        flows = pl.DataFrame({"a": rows_of(view.deps["src"].to_numpy()),
                              "b": rows_of(view.deps["dst"].to_numpy()),
                              "kind": view.deps["kind"], "cat": DEP_CAT}, schema=schema).filter(
            (pl.col("a") >= 0) & (pl.col("b") >= 0))
    if view.path is not None and view.path.height > 1 and slices.height:
        row = rows_of(view.path["id"].to_numpy())
        kinds = view.path["edge_kind"].cast(pl.String).fill_null("order")
        flows = pl.concat([flows, pl.DataFrame(
            {"a": row[:-1], "b": row[1:], "kind": kinds[1:], "cat": FLOW_CAT},
            schema=schema).filter((pl.col("a") >= 0) & (pl.col("b") >= 0))])
    counters: list[tuple[int, dict[str, float]]] = []
    width = None
    if slices.height:
        lo = start if start is not None else int(slices["start"].min())  # type: ignore[arg-type]
        hi = end if end is not None else int(slices["end"].max())  # type: ignore[arg-type]
        width = bin_cycles or nice_width(hi - lo)
        counters = _counters(slices, lo, hi, width)
    return _Process(pid, view, slices, flows, counters, width if counters else None)


def _flow_keys(p: _Process) -> np.ndarray:
    """The time of each flow for the cap: the later of its two ends (slice middles)."""
    mid = p.slices["start"].to_numpy() + p.slices["dur"].to_numpy() / 2
    return np.maximum(mid[p.flows["a"].to_numpy()], mid[p.flows["b"].to_numpy()])


def _cut(processes: list[_Process], budget: int) -> float | None:
    """The time before which at most `budget` slice, counter and flow events fall (a flow's
    two events at the later of its ends), or None when everything fits."""
    keys = [p.slices["start"].to_numpy() for p in processes]
    keys += [np.array([ts for ts, _ in p.counters], dtype=np.float64) for p in processes]
    keys += [np.repeat(_flow_keys(p), 2) for p in processes]
    every = np.sort(np.concatenate([k.astype(np.float64) for k in keys]))
    if every.size <= budget:
        return None
    return float(every[budget])


def _apply_cut(p: _Process, cut: float) -> _Process:
    keep = p.slices["start"] < cut
    kept_rows = np.cumsum(keep.to_numpy()) - 1
    flows = p.flows.filter(pl.Series(_flow_keys(p) < cut))
    flows = flows.with_columns(pl.Series("a", kept_rows[flows["a"].to_numpy()]),
                               pl.Series("b", kept_rows[flows["b"].to_numpy()]))
    counters = [(ts, values) for ts, values in p.counters if ts < cut]
    return _Process(p.pid, p.view, p.slices.filter(keep), flows, counters, p.width)


def _threads(p: _Process, first_tid: int) -> tuple[pl.DataFrame, list[tuple[int, str, int]]]:
    """Each slice's tid, and the threads (tid, name, sort index) in sort order: one per
    (engine, lane), numbered from `first_tid`."""
    s = p.slices
    if s.height == 0:
        return s.with_columns(pl.lit(0, dtype=pl.Int64).alias("tid")), []
    order = engine_order(s["engine"].unique().drop_nulls().cast(pl.String).to_list())
    place = {name: i for i, name in enumerate(order)}
    rank = map_names(s["engine"], place.__getitem__, pl.Int64).fill_null(len(order)).to_numpy()
    start, end = s["start"].to_numpy(), s["end"].to_numpy()
    by = np.lexsort((s["id"].to_numpy(), end, start, rank))
    lane = np.empty(s.height, dtype=np.int64)
    lane[by] = lowest_free_lane(rank[by], start[by], end[by])
    code = rank * (int(lane.max()) + 1) + lane
    pairs, inverse = np.unique(code, return_inverse=True)
    width = int(lane.max()) + 1
    # A track is named once (its metadata event), with the name whole up to names.KEPT.
    named = [shortened(name, KEPT) for name in order] + ["(null)"]
    threads = [(first_tid + i, named[c // width] if c % width == 0
                else f"{named[c // width]} [lane {c % width + 1}]", i)
               for i, c in enumerate(pairs.tolist())]
    return s.with_columns(pl.Series("tid", first_tid + inverse.astype(np.int64))), threads


def _slice_text(s: pl.DataFrame, pid: int) -> pl.Expr:
    """One JSON object per slice, keys in a fixed order."""
    def opt(name: str, value: pl.Expr) -> pl.Expr:
        return pl.concat_str([pl.lit(f',"{name}":'), value])

    def text(name: str) -> pl.Expr:
        return pl.lit(_json_names(s[name]))

    def num(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.String)

    optional = []
    for name in OPTIONAL_ARGS:
        if name not in s.columns:
            continue
        if name in ("layer", "binding_kind"):
            optional.append(opt(name, text(name)))
        elif name == "contention":
            optional.append(opt(name, pl.when(pl.col(name) > 0).then(num(name))))
        else:
            optional.append(opt(name, num(name)))
    def required(value: pl.Expr) -> pl.Expr:
        # A value every slice has: JSON null should one be missing (validation refuses such
        # traces; the file stays valid JSON whatever reaches it).
        return value.fill_null(pl.lit("null"))

    is_dma = pl.lit(_is_dma(s["engine"]).fill_null(False))
    return pl.concat_str([
        pl.lit('{"name":'), required(text("opcode")),
        pl.lit(',"cat":"'), pl.when(is_dma).then(pl.lit("dma")).otherwise(pl.lit("compute")),
        pl.lit('","ph":"X","ts":'), required(num("start")), pl.lit(',"dur":'),
        required(num("dur")), pl.lit(f',"pid":{pid},"tid":'), required(num("tid")),
        pl.lit(',"args":{"id":'), required(num("id")), pl.lit(',"engine":'),
        required(text("engine")), pl.lit(',"seq":'), required(num("seq")), *optional,
        pl.lit("}}"),
    ], ignore_nulls=True)


def _meta_events(pid: int, view: TimelineView, threads: list[tuple[int, str, int]]
                 ) -> list[str]:
    def event(name: str, args: dict[str, Any], tid: int | None = None) -> str:
        tid_part = "" if tid is None else f',"tid":{tid}'
        return (f'{{"name":{json.dumps(name)},"ph":"M","pid":{pid}{tid_part},'
                f'"args":{_compact(args)}}}')

    out = [event("process_name", {"name": view.name}),
           event("process_labels", {"labels": view.label}),
           event("process_sort_index", {"sort_index": pid})]
    for tid, name, index in threads:
        out.append(event("thread_name", {"name": name}, tid))
        out.append(event("thread_sort_index", {"sort_index": index}, tid))
    return out


def _counter_events(pid: int, counters: list[tuple[int, dict[str, float]]]) -> list[str]:
    return [f'{{"name":{json.dumps(COUNTER_NAME)},"ph":"C","ts":{ts},"pid":{pid},"args":'
            f'{{{",".join(f"{json.dumps(q)}:{_num(v)}" for q, v in values.items())}}}}}'
            for ts, values in counters]


def _flow_events(pid: int, s: pl.DataFrame, flows: pl.DataFrame, first_id: int
                 ) -> pl.DataFrame:
    """Two events per flow, "s" at the middle of its source slice and "f" (bp "e") at the
    middle of its destination, interleaved, as one column of JSON texts."""
    start, dur, tid = (s[c].to_numpy() for c in ("start", "dur", "tid"))

    def mid(rows: np.ndarray) -> pl.Series:  # start + dur / 2, exact
        return pl.DataFrame({"s": start[rows], "d": dur[rows]}).select(pl.concat_str([
            (pl.col("s") + pl.col("d") // 2).cast(pl.String),
            pl.when(pl.col("d") % 2 == 1).then(pl.lit(".5")).otherwise(pl.lit(""))])
        ).to_series()

    a, b = flows["a"].to_numpy(), flows["b"].to_numpy()
    frame = pl.DataFrame({
        "id": np.arange(first_id, first_id + flows.height, dtype=np.int64),
        "kind": flows["kind"], "ts_s": mid(a), "ts_f": mid(b), "tid_s": tid[a],
        "tid_f": tid[b], "head": pl.Series(flows["cat"]).replace_strict(
            {DEP_CAT: f'{{"name":"{DEP_NAME}","cat":"{DEP_CAT}","id":',
             FLOW_CAT: f'{{"name":"{FLOW_NAME}","cat":"{FLOW_CAT}","id":'},
            return_dtype=pl.String)})
    common = pl.concat_str([pl.col("head"),
                            pl.col("id").cast(pl.String), pl.lit(',"args":{"edge":'),
                            pl.lit(_json_names(frame["kind"])), pl.lit("},")])
    return frame.select(pl.concat_list(
        pl.concat_str([common, pl.lit('"ph":"s","ts":'), pl.col("ts_s"),
                       pl.lit(f',"pid":{pid},"tid":'), pl.col("tid_s").cast(pl.String),
                       pl.lit("}")]),
        pl.concat_str([common, pl.lit('"ph":"f","bp":"e","ts":'), pl.col("ts_f"),
                       pl.lit(f',"pid":{pid},"tid":'), pl.col("tid_f").cast(pl.String),
                       pl.lit("}")]),
    ).alias("event")).explode("event")


# --- writing ---------------------------------------------------------------------------------


class _EventWriter:
    """Writes `{"otherData": ..., "traceEvents": [` then events separated by commas."""

    def __init__(self, sink: IO[bytes], other: dict[str, Any]) -> None:
        self.sink = sink
        self.count = 0
        head = _compact({"tracekit": other})
        sink.write(f'{{"otherData":{head},\n"traceEvents":[\n'.encode())

    def write(self, events: list[str]) -> None:
        if not events:
            return
        text = ",\n".join(events)
        self.sink.write(((",\n" if self.count else "") + text).encode())
        self.count += len(events)

    def write_column(self, frame: pl.DataFrame) -> None:
        """Write a one-column frame of event texts through polars' CSV writer (unquoted, one
        per line), much faster than joining them in Python."""
        if frame.height == 0:
            return
        if self.count:
            self.sink.write(b",\n")
        buffer = io.BytesIO()
        frame.head(frame.height - 1).write_csv(buffer, include_header=False,
                                               quote_style="never", line_terminator=",\n")
        buffer.write(frame.item(frame.height - 1, 0).encode())
        self.sink.write(buffer.getbuffer())
        self.count += frame.height

    def close(self) -> None:
        self.sink.write(b"\n]}\n")


def write_chrome_trace(views: list[TimelineView], output: str | os.PathLike[str], *,
                       meta: dict[str, Any], start: int | None = None, end: int | None = None,
                       max_events: int | None = None, bin_cycles: int | None = None,
                       warn_events: int | None = None) -> ExportResult:
    """Format `views` as Chrome trace event JSON at `output`, atomically, replacing a file
    there (see the module docstring). `meta` (workload, clock_hz, machine) goes into
    otherData.tracekit."""
    out = Path(output)
    if start is not None and end is not None and start >= end:
        raise ExportError(f"the window [{start:,}, {end:,}) is empty: --from must be less than "
                          f"--to.")
    if max_events is not None and max_events < 1:
        raise ExportError(f"--max-events must be at least 1, got {max_events}.")
    if bin_cycles is not None and bin_cycles < 1:
        raise ExportError(f"the counter bin width must be at least 1 cycle, got {bin_cycles}.")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: the folder {out.parent} does not exist; create it or choose "
                          f"another output path.")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give a file name such as trace.json.")
    threshold = WARN_EVENTS if warn_events is None else warn_events
    processes = [_process(pid, view, start, end, bin_cycles)
                 for pid, view in enumerate(views, start=1)]

    cut = None
    if max_events is not None:
        # Metadata events per process: 3, plus 2 per thread (an upper bound after a cut).
        n_meta = sum(3 + 2 * len(_threads(p, 1)[1]) for p in processes)
        if max_events <= n_meta:
            raise ExportError(f"--max-events {max_events:,} leaves no room for instructions: "
                              f"the process and thread names alone take {n_meta:,} events. "
                              f"Raise it, or narrow the window with --from/--to.")
        cut_time = _cut(processes, max_events - n_meta)
        if cut_time is not None:
            processes = [_apply_cut(p, cut_time) for p in processes]
            cut = math.ceil(cut_time)

    other = {"format": FORMAT, "producer": f"tracekit {__version__}",
             "time_unit": "cycles", "ts_per_cycle": 1,
             "note": "ts and dur are cycles: 1 us on the viewer's ruler = 1 cycle",
             "counter_bin_cycles": next((p.width for p in processes if p.width), None),
             "window": [start, end], "cut_at": cut, **meta,
             "timelines": [{"pid": p.pid, "name": p.view.name, "label": p.view.label}
                           for p in processes]}
    slices = flows = counters = 0
    with atomic_file(out) as temporary:
        with open(temporary, "wb") as raw:
            sink: IO[bytes] = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                              compresslevel=1)  # type: ignore[assignment]
                               if out.name.endswith(".gz") else raw)
            tid, flow_id, bodies = 1, 1, []
            for p in processes:
                s, threads = _threads(p, tid)
                tid += len(threads)
                bodies.append((p, s, threads))
            writer = _EventWriter(sink, other)
            for p, _s, threads in bodies:
                writer.write(_meta_events(p.pid, p.view, threads))
            for p, s, _threads_ in bodies:
                for offset in range(0, s.height, CHUNK_ROWS):
                    chunk = s.slice(offset, CHUNK_ROWS)
                    writer.write_column(chunk.select(_slice_text(chunk, p.pid)))
                slices += s.height
            for p, _s, _threads_ in bodies:
                writer.write(_counter_events(p.pid, p.counters))
                counters += len(p.counters)
            for p, s, _threads_ in bodies:
                writer.write_column(_flow_events(p.pid, s, p.flows, flow_id))
                flow_id += p.flows.height
                flows += p.flows.height
            writer.close()
            if sink is not raw:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
    events = writer.count
    warnings = []
    if cut is not None:
        warnings.append(f"capped at --max-events {max_events:,}: exported the events before "
                        f"cycle {cut:,} ({events:,} events). Choose the part to see with "
                        f"--from/--to.")
    if events > threshold:
        warnings.append(f"{out} holds {events:,} events; the Perfetto UI and chrome://tracing "
                        f"slow down badly past about {threshold:,}. Export a window with "
                        f"--from CYCLE --to CYCLE, or cap it with --max-events N.")
    return ExportResult(path=out, events=events, slices=slices, flows=2 * flows,
                        counters=counters, timelines=tuple(p.view.name for p in processes),
                        cut_at=cut, warnings=tuple(warnings))

