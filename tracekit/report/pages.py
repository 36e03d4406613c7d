"""What an HTML page is (`Page`, `Figure`) and what the report of a trace shows: its head,
verdict lines and figures, every number taken from the report objects the JSON reports are
made of (`api.analyze`, `api.bugs`, the replay's correlation) and the one definition of each
figure (`analysis.figures`). Nothing here formats HTML (`render` does) and nothing is computed
a second way; the pages across runs (diff, nightly) are in `runs`.

A trace page of a timed GEMM holds, in order: the engine timeline, utilization over time, DMA
and HBM bandwidth over time, the stall breakdown, the critical path by engine and by layer,
top opcodes, the engine figures, the sensitivity ranking's top, model against observed (per
opcode, and a scatter of durations) and the findings; each figure names the command whose
JSON holds the same numbers (`Figure.command`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl

from tracekit import api, progress
from tracekit.analysis.figures import (
    accounts,
    bandwidth_over_time,
    busy_over_time,
    nice_width,
    opcode_figures,
)
from tracekit.cli import render
from tracekit.replay.machine import Machine, engine_kind
from tracekit.replay.run import ReplayStuck
from tracekit.report.lanes import MAX_BARS, Lanes, check_window, engine_lanes, window_of
from tracekit.trace.names import shortened, shortened_column, shortened_names

OVER_TIME_BINS = 400
"""Target number of bins of the figures over time (utilization, bandwidth)."""
SCATTER_POINTS = 4_000
"""Instructions in the scatter of predicted against observed durations (evenly spaced in id
order, and the most divergent ones)."""
TOP_OPCODES = 15
TOP_STALL_CAUSES = 20


class Kind(StrEnum):
    PLOTLY = "plotly"
    TIMELINE = "timeline"
    TABLE = "table"


@dataclass(frozen=True)
class Figure:
    """One figure of a page: `key` (its id in the page), `title`, `command` (the tracekit
    command whose output holds its numbers), `kind` and `spec`: for plotly, {"data": traces,
    "layout": ...}; for a timeline, `lanes`; for a table, {"columns": [(name, format)],
    "rows": records}; `note`: a sentence under the title."""

    key: str
    title: str
    command: str
    kind: Kind
    spec: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    lanes: Lanes | tuple[Lanes, Lanes] | None = None


@dataclass(frozen=True)
class Page:
    """A page: its title, head (label, text), verdict lines, figures and links (text, href)
    to other pages."""

    title: str
    head: list[tuple[str, str]]
    verdict: list[str]
    figures: list[Figure]
    links: list[tuple[str, str]] = field(default_factory=list)
    stuck: str | None = None
    """The replay's report when the run cannot finish (the page then shows what the trace
    recorded and the findings)."""


def command(*words: Any) -> str:
    """A shell command line, each word quoted as needed."""
    return " ".join(shlex.quote(str(w)) for w in words if w is not None and w != "")


def head_of(facts: list[render.Fact]) -> list[tuple[str, str]]:
    return [(f.label, f.text) for f in facts if f.key not in render.JSON_ONLY]


# --- a trace ------------------------------------------------------------------------------------


def trace_page(trace: api.TraceLike, machine: api.MachineLike = None, *,
               timeline: str = "auto", start: int | None = None, end: int | None = None,
               max_bars: int = MAX_BARS, machine_arg: str | None = None) -> Page:
    """The report of one trace (`tracekit report`): `start`, `end` the window of the engine
    timeline's detail (cycles of the timeline); `machine_arg`: the --machine given, for the
    reproducing commands."""
    check_window(start, end)  # before the analysis
    opened = api.trace_of(trace, None)
    resolved = api.machine_of(machine)
    chosen = api.timeline_of(timeline)
    try:
        with progress.step("analysing"):
            a = api.analyze(opened, resolved, timeline=chosen)
    except ReplayStuck as exc:
        return _stuck_page(opened, resolved, exc, start, end, max_bars, machine_arg)
    line = a.line
    assert line is not None
    frame = line.frame
    lo, hi = window_of(frame, start, end)
    path_str = str(opened.path)
    flags = [*(("--machine", machine_arg) if machine_arg else ()),
             "--timeline", line.source.value]

    def cli(name: str, *more: str) -> str:
        return command("tracekit", name, path_str, *flags, *more, "-f", "json")

    with progress.step("figures over time"):
        acc = accounts(frame)
        lanes = engine_lanes(frame, acc, a.path.steps, lo, hi, max_bars)
        work = opened.read_instructions(["id", "bytes"])
        over_time = _over_time(frame, acc, work, resolved)
    m = opened.manifest
    n = m.tables["instructions"].rows
    head = [("workload", m.workload),
            ("producer", f"{m.producer.name} {m.producer.version}".strip()),
            *head_of(a.facts), ("instructions", f"{n:,}")]
    window = ("" if (start, end) == (None, None)
              else f"; window [{lo:,}, {hi:,}) of the timeline (--from/--to)")
    drawn = (f"{lanes.instructions:,} instructions, each a bar" if not lanes.binned else
             f"{lanes.instructions:,} instructions, more than {max_bars:,}: each lane's busy "
             f"cycles per bin of {lanes.width:,} cycles (rerun with --from/--to for a "
             f"window's instructions one by one)")
    figures = [
        Figure("timeline", "Engine timeline", cli("analyze"), Kind.TIMELINE,
               note=f"{drawn}{window}; the critical path is marked in red. Wheel to zoom, "
                    f"drag to pan, double-click to reset. Busy per engine as in the "
                    f"engines table of analyze.",
               lanes=lanes),
        *(replace(f, command=cli("analyze")) for f in over_time),
        _stall_figure(a.stalls, cli("stalls")),
        _share_figure("critical-path-engine", "Critical path by engine", a.path.by_engine,
                      "engine", cli("critical-path")),
        _share_figure("critical-path-layer", "Critical path by layer", a.path.by_layer,
                      "layer", cli("critical-path")),
        _opcode_figure(opcode_figures(frame, acc).head(TOP_OPCODES), cli("stalls")),
        Figure("engines", "Engine figures", cli("analyze"), Kind.TABLE,
               {"columns": list(render.ENGINE_COLS.items()), "rows": render.records(a.engines)},
               note="Busy, HBM contention, waiting and idle sum to the makespan on every "
                    "engine (docs/glossary.md defines each figure)."),
        _sensitivity_figure(a.sensitivity, cli("analyze")),
    ]
    with progress.step("model against observed"):
        figures += _correlation(opened, resolved, line, path_str, machine_arg)
    figures.append(_findings_figure(a.findings, cli("analyze")))
    return Page(f"tracekit report: {m.workload}", head, _verdict(a, resolved), figures)


def _stuck_page(trace: Any, machine: Machine, stuck: ReplayStuck, start: int | None,
                end: int | None, max_bars: int, machine_arg: str | None) -> Page:
    """A run that cannot finish: no timeline to analyse, so the page shows the instructions
    the trace timed (its own timing, where it stops) and the findings of `tracekit bugs`."""
    report = api.bugs(trace, machine)
    path_str = str(trace.path)
    m = trace.manifest
    head = [("workload", m.workload),
            ("producer", f"{m.producer.name} {m.producer.version}".strip()),
            *head_of(report.facts), ("instructions", f"{m.tables['instructions'].rows:,}")]
    bugs_cli = command("tracekit", "bugs", path_str,
                       *(("--machine", machine_arg) if machine_arg else ()), "-f", "json")
    figures = []
    timed = (trace.read_instructions(["id", "engine", "opcode", "layer", "start", "end"])
             .filter(pl.col("start").is_not_null() & pl.col("end").is_not_null()))
    if timed.height:
        frame = trace.in_cycles(timed, machine.clock_hz).with_columns(
            pl.lit(0, dtype=pl.Int64).alias("contention"))
        lo, hi = window_of(frame, start, end)
        no_path = pl.DataFrame(schema={"start": pl.Int64, "end": pl.Int64,
                                       "engine": pl.String})
        lanes = engine_lanes(frame, accounts(frame), no_path, lo, hi, max_bars)
        figures.append(Figure(
            "timeline", "Engine timeline (as recorded, up to where the run stops)",
            command("tracekit", "export", "perfetto", path_str, "-o", "trace.json"),
            Kind.TIMELINE, lanes=lanes,
            note=f"The {timed.height:,} instructions the trace timed; the replay cannot "
                 f"finish, so there is no critical path. Wheel to zoom, drag to pan."))
    figures.append(_findings_figure(report.findings, bugs_cli))
    lines = str(stuck).splitlines()
    return Page(f"tracekit report: {m.workload}", head,
                [*lines, f"findings: {render.findings_summary(report.findings)}"], figures,
                stuck=lines[0] if lines else str(stuck))


def _verdict(a: api.Analysis, machine: Machine) -> list[str]:
    """What bounds the run, in analyze's figures: the critical path's largest parts, the
    busiest engine, HBM, the best 10 % speed-up, the findings."""
    lines = []
    parts = ", ".join(f"{shortened(r['engine'])} {r['pct']:.1f} %" for r in
                      a.path.by_engine.head(3).iter_rows(named=True))
    lines.append(f"critical path ({a.path.steps.height:,} steps): {parts} of the makespan")
    if a.engines.height:
        busiest = a.engines.sort(["busy_pct", "engine"], descending=[True, False]).row(
            0, named=True)
        lines.append(f"busiest engine: {shortened(busiest['engine'])}, busy "
                     f"{busiest['busy_pct']:.1f} % "
                     f"of the makespan")
    lines.append("HBM: " + render.hbm_text(a.hbm, machine.hbm_bytes_per_cycle,
                                           machine.clock_hz))
    if a.sensitivity.height:
        top = a.sensitivity.row(0, named=True)
        lines.append(f"most to gain: {top['group']} {shortened(top['name'])} 10 % faster gains "
                     f"{top['gained']:,} cycles ({top['gained_pct']:.2f} %)")
    lines.append(f"findings: {render.findings_summary(a.findings)}")
    return lines


def _edges(lo: int, hi: int, width: int) -> np.ndarray:
    bins = max(-(-(hi - lo) // width), 1)
    return np.minimum(lo + width * np.arange(bins + 1, dtype=np.int64), hi)


def _over_time(frame: pl.DataFrame, acc: Any, work: pl.DataFrame,
               machine: Machine) -> list[Figure]:
    """Utilization per engine, DMA queue and HBM bandwidth, over the whole timeline."""
    lo, hi = acc.origin, acc.horizon
    width = nice_width(hi - lo, OVER_TIME_BINS)
    edges = _edges(lo, hi, width)
    widths = np.maximum(np.diff(edges), 1)
    x = edges[:-1].tolist()
    busy = busy_over_time(frame, acc, lo, hi, width)
    order = engine_order_of(acc.engines)
    util = [{"type": "scatter", "mode": "lines", "line": {"shape": "hv", "width": 1},
             "name": shortened(name), "x": x, "y": (busy[i] / widths * 100).tolist(),
             "customdata": busy[i].tolist(),
             "hovertemplate": "%{y:.1f} % (%{customdata:,} busy cycles)"}
            for name, i in order]
    figures = [Figure(
        "utilization", "Utilization over time", "", Kind.PLOTLY,
        {"data": util, "layout": {"xaxis": {"title": {"text": "cycle"}},
                                  "yaxis": {"title": {"text": "busy % of the bin"},
                                            "range": [0, 105]}}},
        note=f"Busy cycles of each engine per bin of {width:,} cycles; an engine's bins add "
             f"up to its busy cycles in `tracekit analyze` (engines table).")]
    start = frame["start"].to_numpy().astype(np.int64)
    end = frame["end"].to_numpy().astype(np.int64)
    nbytes = work["bytes"].fill_null(0).to_numpy()
    queues = [(name, i) for name, i in order if engine_kind(name) == "dma"]
    if not queues:
        return figures
    lines, total = [], np.zeros(widths.size)
    for name, i in queues:
        mine = acc.engine == i
        rate = bandwidth_over_time(start[mine], end[mine], nbytes[mine], lo, hi, width)
        total += rate
        lines.append({"type": "scatter", "mode": "lines", "line": {"shape": "hv", "width": 1},
                      "name": shortened(name), "x": x, "y": rate.tolist(),
                      "hovertemplate": "%{y:,.1f} B/cycle"})
    limits = sorted({machine.queue_bandwidth(name) for name, _ in queues})
    lines += [_limit(x, hi, limit, f"queue limit {limit:,.0f} B/cycle") for limit in limits]
    hbm = [{"type": "scatter", "mode": "lines", "line": {"shape": "hv", "width": 1},
            "name": "HBM (all queues)", "x": x, "y": total.tolist(),
            "hovertemplate": "%{y:,.1f} B/cycle"},
           _limit(x, hi, machine.hbm_bytes_per_cycle,
                  f"HBM limit {machine.hbm_bytes_per_cycle:,.0f} B/cycle")]
    axes = {"xaxis": {"title": {"text": "cycle"}}, "yaxis": {"title": {"text": "bytes/cycle"},
                                                      "rangemode": "tozero"}}
    note = ("Each transfer's bytes spread over its span; weighted by bin width the bins "
            "average to the achieved bandwidth of `tracekit analyze` (engines table: B/cycle; "
            "head: HBM bandwidth).")
    return [*figures,
            Figure("dma-bandwidth", "DMA bandwidth over time", "", Kind.PLOTLY,
                   {"data": lines, "layout": axes}, note=note),
            Figure("hbm-bandwidth", "HBM bandwidth over time", "", Kind.PLOTLY,
                   {"data": hbm, "layout": axes}, note=note)]


def engine_order_of(engines: list[str]) -> list[tuple[str, int]]:
    """(name, index into `engines`) in lane order: compute engines, then DMA queues."""
    from tracekit.convert.perfetto import engine_order

    index = {name: i for i, name in enumerate(engines)}
    return [(name, index[name]) for name in engine_order(list(engines))]


def _limit(x: list[int], hi: int, value: float, name: str) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "name": name, "x": [x[0], hi],
            "y": [value, value], "line": {"dash": "dash", "width": 1, "color": "#b22222"},
            "hoverinfo": "name"}


_BUSY = ["#1f77b4", "#4c9bd6", "#2a5d8f", "#7fb8e6", "#17456e", "#5aa0c8"]
_WAIT = ["#ff7f0e", "#d62728", "#e6a23c", "#b5451b", "#f2b880", "#8c2d04", "#e377c2",
         "#c9533a"]
_IDLE = ["#c7c7c7", "#9e9e9e"]


STALL_CAUSES = 12
"""Causes per bucket that the stall figure draws apart; the rest form one part."""


def _stall_figure(stalls: pl.DataFrame, cli: str) -> Figure:
    """The stall table as bars stacked per engine: busy by opcode, waiting by cause, idle."""
    stalls = shortened_names(stalls)  # every bar part repeats the engines: drawn shortened
    engines = stalls["engine"].unique(maintain_order=True).to_list()
    traces = []
    palettes = {"busy": _BUSY, "waiting": _WAIT, "idle": _IDLE}
    for bucket in ("busy", "waiting", "idle"):
        part = stalls.filter(pl.col("bucket") == bucket)
        causes = (part.group_by("cause").agg(pl.col("cycles").sum())
                  .sort(["cycles", "cause"], descending=[True, False])["cause"].to_list())
        if len(causes) > STALL_CAUSES:
            # The largest causes each, the rest as one bar part: the bars still sum to the
            # makespan, and the legend stays readable on traces with thousands of opcodes.
            rest = causes[STALL_CAUSES - 1:]
            other = f"other ({len(rest):,} causes)"
            part = part.with_columns(pl.when(pl.col("cause").is_in(rest)).then(pl.lit(other))
                                     .otherwise(pl.col("cause")).alias("cause"))
            part = part.group_by("engine", "cause").agg(pl.col("cycles").sum())
            causes = [*causes[:STALL_CAUSES - 1], other]
        for k, cause in enumerate(causes):
            got = dict(part.filter(pl.col("cause") == cause).select("engine", "cycles")
                       .iter_rows())
            traces.append({"type": "bar", "name": f"{bucket}: {cause}", "x": engines,
                           "y": [got.get(e, 0) for e in engines],
                           "legendgroup": bucket,
                           "marker": {"color": palettes[bucket][k % len(palettes[bucket])]},
                           "hovertemplate": "%{x}: %{y:,} cycles"})
    return Figure("stalls", "Stall breakdown per engine", cli, Kind.PLOTLY,
                  {"data": traces, "layout": {"barmode": "stack",
                                              "yaxis": {"title": {"text": "cycles"}}}},
                  note="Every engine's cycles, busy (by opcode), waiting (by the producer and "
                       "edge that held it, or HBM) and idle: each bar is the makespan.")


def _share_figure(key: str, title: str, frame: pl.DataFrame, group: str, cli: str) -> Figure:
    return Figure(key, title, cli, Kind.PLOTLY, {
        "data": [{"type": "bar", "orientation": "h",
                  "y": shortened_column(frame[group]).fill_null("(none)").to_list(),
                  "x": frame["cycles"].to_list(), "customdata": frame["pct"].to_list(),
                  "hovertemplate": "%{y}: %{x:,} cycles (%{customdata:.2f} %)<extra></extra>"}],
        "layout": {"yaxis": {"autorange": "reversed"},
                   "xaxis": {"title": {"text": "cycles on the critical path"}}}},
        note="The chain of instructions that decided the makespan, its cycles by "
             f"{group} (gaps as edge latency or unexplained); the parts sum to the makespan.")


def _opcode_figure(opcodes: pl.DataFrame, cli: str) -> Figure:
    return Figure("opcodes", "Top opcodes by busy time", cli, Kind.PLOTLY, {
        "data": [{"type": "bar", "orientation": "h",
                  "y": shortened_column(opcodes["opcode"]).to_list(),
                  "x": opcodes["busy_cycles"].to_list(),
                  "customdata": opcodes["share_pct"].to_list(),
                  "hovertemplate": "%{y}: %{x:,} busy cycles (%{customdata:.2f} % of all "
                                   "busy)<extra></extra>"}],
        "layout": {"yaxis": {"autorange": "reversed"},
                   "xaxis": {"title": {"text": "busy cycles, all engines"}}}},
        note="Each opcode's busy cycles: the sum over engines of the stall table's busy rows "
             "of that opcode.")


def _sensitivity_figure(ranking: pl.DataFrame, cli: str) -> Figure:
    labels = [f"{g} {n}" for g, n in ranking.select("group", "name").iter_rows()]
    return Figure("sensitivity", "Most to gain: 10 % faster, in turn", cli, Kind.PLOTLY, {
        "data": [{"type": "bar", "orientation": "h", "y": labels,
                  "x": ranking["gained"].to_list(),
                  "customdata": ranking["gained_pct"].to_list(),
                  "hovertemplate": "%{y}: %{x:,} cycles (%{customdata:.2f} %)<extra></extra>"}],
        "layout": {"yaxis": {"autorange": "reversed"},
                   "xaxis": {"title": {"text": "makespan gained (cycles)"}}}},
        note="The top of the sensitivity ranking: the makespan gained when each part is 10 % "
             "faster (`tracekit sensitivity` lists every part).")


def _correlation(trace: Any, machine: Machine, line: Any, path: str,
                 machine_arg: str | None) -> list[Figure]:
    """Model against observed, when the trace is timed: per opcode, and a scatter of
    durations; the replay of the timeline when it is the model's, else one more replay."""
    from tracekit.analysis.replay_report import correlate
    from tracekit.analysis.timelines import Source, choose_source
    from tracekit.replay.run import replay

    if choose_source(trace) is not Source.OBSERVED:
        return []
    result = line.replayed if line.replayed is not None else replay(trace, machine)
    corr = correlate(result)
    if corr is None:
        return []
    cli = command("tracekit", "replay", path, *(("--machine", machine_arg) if machine_arg
                                                else ()), "-f", "json")
    ops = shortened_names(corr.opcodes)
    per_opcode = Figure("model-opcodes", "Model against observed, per opcode", cli, Kind.PLOTLY, {
        "data": [{"type": "bar", "name": "bias %", "x": ops["opcode"].to_list(),
                  "y": ops["bias_pct"].to_list(), "hovertemplate": "%{x}: bias %{y:.2f} %"},
                 {"type": "bar", "name": "MAPE %", "x": ops["opcode"].to_list(),
                  "y": ops["mape_pct"].to_list(), "hovertemplate": "%{x}: MAPE %{y:.2f} %"}],
        "layout": {"barmode": "group", "yaxis": {"title": {"text": "%"}}}},
        note=f"The model's makespan {corr.predicted_makespan:,} cycles against the observed "
             f"{corr.observed_makespan:,} ("
             + ("-" if corr.makespan_error_pct is None else f"{corr.makespan_error_pct:+.2f} %")
             + "); per opcode the bias (summed predicted over summed observed durations) and "
               "the mean absolute percentage error.")
    t = result.timeline.select(
        "id", "opcode",
        (pl.col("observed_end") - pl.col("observed_start")).alias("observed"),
        pl.col("duration").alias("predicted"))
    stride = max(t.height // SCATTER_POINTS, 1)
    divergent = corr.divergent_duration["id"].implode()
    shown = t.filter((pl.int_range(pl.len()) % stride == 0) | pl.col("id").is_in(divergent))
    top = float(max(shown["observed"].max() or 0, shown["predicted"].max() or 0))  # type: ignore[arg-type]
    traces = []
    for opcode in sorted(shown["opcode"].unique().drop_nulls().cast(pl.String).to_list()):
        part = shown.filter(pl.col("opcode") == opcode)
        traces.append({"type": "scatter", "mode": "markers", "name": shortened(opcode),
                       "x": part["observed"].to_list(), "y": part["predicted"].to_list(),
                       "customdata": part["id"].to_list(), "marker": {"size": 4},
                       "hovertemplate": "id %{customdata}: observed %{x:,}, predicted %{y:,}"})
    traces.append({"type": "scatter", "mode": "lines", "name": "predicted = observed",
                   "x": [0, top], "y": [0, top], "hoverinfo": "skip",
                   "line": {"dash": "dot", "width": 1, "color": "#555555"}})
    scatter = Figure("model-scatter", "Predicted against observed durations", cli,
                     Kind.PLOTLY, {"data": traces, "layout": {
                         "xaxis": {"title": {"text": "observed duration (cycles)"}},
                         "yaxis": {"title": {"text": "predicted duration (cycles)"}}}},
                     note=f"{shown.height:,} of {t.height:,} instructions ("
                          + ("all" if stride == 1 else f"one in {stride:,} in id order, and "
                                                       f"the most divergent ones") + ").")
    return [per_opcode, scatter]


def _findings_figure(findings: pl.DataFrame, cli: str) -> Figure:
    rows = render.with_evidence(findings).select(
        "severity", "code", "message",
        pl.col("instructions").list.head(12).cast(pl.List(pl.String)).list.join(", ")
        .alias("instructions"), "hint", "evidence")
    return Figure("findings", "Bug findings", cli, Kind.TABLE, {
        "columns": [("severity", ""), ("code", ""), ("message", ""),
                    ("instructions", ""), ("hint", ""), ("evidence", "")],
        "rows": render.records(rows)},
        note=f"{render.findings_summary(findings)}; `tracekit bugs` explains each code "
             f"(analysis/signatures.md). instructions: the first 12 ids of the finding's "
             f"evidence (its message says how many it concerns).")
