"""The Python API for notebooks and scripts: one call per command, each taking a bundle path or
an opened trace and a machine (built-in name, TOML file or Machine; default trn-like), and
returning a report object that holds polars frames, prints as the command's text report and
shows as HTML tables in a notebook.

    import tracekit
    r = tracekit.replay("sample_traces/gemm")
    r.engines                                  # a polars frame: busy, contention, bandwidth...
    tracekit.analyze("sample_traces/gemm").stalls

The reports are what the `tracekit` commands print (the CLI renders these objects), and every
figure in them is defined once (`tracekit.analysis.figures`, docs/glossary.md).
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from rich.console import Console

from tracekit import progress
from tracekit.analysis.critical_path import CriticalPath
from tracekit.analysis.replay_report import Correlation, ReplaySummary
from tracekit.analysis.timelines import Source, Timeline, TimelineChoice
from tracekit.cli import render
from tracekit.cli.render import Fact, fact
from tracekit.errors import TracekitError
from tracekit.replay.machine import Machine
from tracekit.replay.run import Mode, ReplayResult
from tracekit.trace.bundle import Trace

TraceLike = str | os.PathLike[str] | Trace
MachineLike = str | os.PathLike[str] | Machine | None
Section = tuple[str, pl.DataFrame, dict[str, str]]

STALL_COLS = {"engine": "", "bucket": "", "cause": "", "cycles": ",", "pct": ".2f"}
GROUP_COLS = {"cycles": ",", "pct": ".2f"}
FINDING_COLS = {"severity": "", "code": "", "message": "", "evidence": ""}
HTML_TEXT_LIMIT = 10_000
"""Characters of a text cell the HTML tables show (a finding's message or evidence)."""


REPLAY_TABLES = ("instructions", "semaphores", "deps")
"""The tables a replay reads (and the analyses of its timeline)."""


E = TypeVar("E", bound=StrEnum)


class ArgumentError(TracekitError, ValueError):
    """A call's argument is not one it takes (a mode, a timeline, a what-if without a change);
    the message names what it takes."""


def _member(kind: type[E], value: E | str, what: str) -> E:
    """`value` as a member of the enum `kind`; ArgumentError naming the members if it is not
    one."""
    try:
        return kind(value)
    except ValueError:
        raise ArgumentError(f"{what} {value!r} is not one of "
                            f"{', '.join(m.value for m in kind)}") from None


def mode_of(mode: Mode | str) -> Mode:
    return _member(Mode, mode, "mode")


def timeline_of(timeline: TimelineChoice | str) -> TimelineChoice:
    return _member(TimelineChoice, timeline, "timeline")


def trace_of(trace: TraceLike, tables: Collection[str] | None = None) -> Trace:
    """An opened trace: `trace` itself, or the bundle at that path, refused with its findings
    (InvalidTraceError) when it breaks a rule of the tables the call reads (`tables`; None:
    every table) or a file's hash does not match: a quick check, so large traces stay
    fast."""
    from tracekit.trace.bundle import open_trace
    from tracekit.trace.validate import require_valid

    if isinstance(trace, Trace):
        return trace
    if not isinstance(trace, str | os.PathLike):
        raise TypeError(f"trace: a bundle's path or an opened Trace, not "
                        f"{type(trace).__name__}")
    with progress.step(f"validating {trace}"):
        require_valid(trace, tables=tables)
    return open_trace(trace, verify=False)  # verified just now


def machine_of(machine: MachineLike) -> Machine:
    from tracekit.replay.machine import resolve_machine

    if isinstance(machine, Machine):
        return machine
    if machine is not None and not isinstance(machine, str | os.PathLike):
        raise TypeError(f"machine: a built-in name, a machine TOML path or a Machine, not "
                        f"{type(machine).__name__}")
    return resolve_machine(machine)


@dataclass(frozen=True)
class Report:
    """What every report has: a title, its head (which trace, timeline, machine, clock, and
    the main figures) and titled tables. `str()`/`repr()`: the text report; in a notebook,
    HTML tables; `markdown()`: the Markdown report; `head`: the head as a dict."""

    title: str
    facts: list[Fact]
    sections: list[Section]
    heading: str = ""
    """The Markdown report's title (default: `title`)."""

    @property
    def head(self) -> dict[str, Any]:
        return render.facts_json(self.facts)

    def section(self, title: str) -> pl.DataFrame:
        """The table of that title."""
        for name, frame, _ in self.sections:
            if name == title:
                return frame
        raise KeyError(f"no table {title!r}; the tables are "
                       f"{', '.join(name for name, _, _ in self.sections)}")

    def text(self, width: int = 120) -> str:
        out = io.StringIO()
        console = Console(file=out, width=width, highlight=False, soft_wrap=True,
                          color_system=None)
        render.print_sections(console, self.title, self.facts, self.sections)
        return out.getvalue()

    def markdown(self) -> str:
        return render.sections_markdown(self.heading or self.title, self.facts, self.sections)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(f.label)}</th>"
                       f"<td style='text-align:left'>{html.escape(f.text)}</td></tr>"
                       for f in self.facts if f.key not in render.JSON_ONLY)
        parts = [f"<h3>{html.escape(self.title)}</h3><table>{rows}</table>"]
        # Every row and the whole of every text, as the text report shows them (polars
        # would show ten rows and 30 characters of a finding's message).
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=HTML_TEXT_LIMIT):
            for name, frame, cols in self.sections:
                shown = frame.select([c for c in cols if c in frame.columns])
                parts.append(f"<h4>{html.escape(name)}</h4>{shown._repr_html_()}")
        return "".join(parts)


@dataclass(frozen=True, repr=False)
class ReplayReport(Report):
    """`replay`: the predicted timeline and its figures. `result`: the replay itself (its
    `timeline` frame and `graph`); `engines`, `opcodes`; `correlation` with the observed
    timing when the trace is timed (else None)."""

    result: ReplayResult = field(default=None)  # type: ignore[assignment]
    summary: ReplaySummary = field(default=None)  # type: ignore[assignment]
    correlation: Correlation | None = None

    @property
    def timeline(self) -> pl.DataFrame:
        return self.result.timeline

    @property
    def engines(self) -> pl.DataFrame:
        return self.summary.engines

    @property
    def opcodes(self) -> pl.DataFrame:
        return self.summary.opcodes

    @property
    def makespan(self) -> int:
        return self.summary.makespan

    def markdown(self) -> str:
        return render.replay_markdown(self.result, self.summary, self.correlation)


def replay(trace: TraceLike, machine: MachineLike = None, *, mode: str = "model",
           memory_deps: bool = False) -> ReplayReport:
    """Replay through the timing model (`tracekit replay`): mode "model" (durations from the
    machine's latency model) or "observed" (the trace's own durations)."""
    from tracekit.analysis.replay_report import correlate, summarize_replay
    from tracekit.replay.run import replay as run_replay

    chosen_mode = mode_of(mode)
    tables = (*REPLAY_TABLES, "memory") if memory_deps else REPLAY_TABLES
    result = run_replay(trace_of(trace, tables), machine_of(machine), chosen_mode,
                        memory_deps=memory_deps)
    summary, correlation = summarize_replay(result), correlate(result)
    facts, sections = render.replay_parts(result, summary, correlation)
    return ReplayReport(f"Replay of {result.trace.manifest.workload}", facts, sections,
                        result=result, summary=summary, correlation=correlation)


@dataclass(frozen=True)
class Chosen:
    """A timeline the way --timeline picked it, with its trace, machine and report head."""

    line: Timeline
    trace: Trace
    machine: Machine
    facts: list[Fact]

    @property
    def clock_hz(self) -> float | None:
        from tracekit.analysis.timelines import clock_of

        return clock_of(self.trace, self.machine, self.line.source)


@dataclass(frozen=True)
class WindowChoice:
    """What --window NAME [--instance K] or --from/--to ask for (all None: the whole trace)."""

    name: str | None = None
    instance: int = 0
    start: int | None = None
    end: int | None = None


def choose(trace: TraceLike, machine: MachineLike = None,
           timeline: TimelineChoice | str = TimelineChoice.AUTO,
           tables: Collection[str] | None = REPLAY_TABLES,
           window: WindowChoice | None = None) -> Chosen:
    """The timeline to analyse: auto is the trace's own timing when every instruction is
    timed, else the model's replay. `tables`: what the caller reads (`trace_of`). `window`:
    the part of the trace to analyse (analysis/windows.py)."""
    from tracekit.analysis.timelines import choose_source
    from tracekit.analysis.timelines import timeline as make_timeline
    from tracekit.analysis.windows import resolve_window, window_trace

    choice = timeline_of(timeline)
    opened, resolved = trace_of(trace, tables), machine_of(machine)
    chosen = (resolve_window(opened, window.name, window.instance, window.start, window.end)
              if window is not None else None)
    if chosen is not None:
        opened = window_trace(opened, chosen)
    source = choose_source(opened, choice=choice)
    line = make_timeline(opened, resolved, source)
    facts = render.timeline_facts(opened, resolved, source.value)
    if chosen is not None:
        facts.append(fact("window", chosen.label))
    return Chosen(line, opened, resolved, facts)


@dataclass(frozen=True, repr=False)
class StallReport(Report):
    """`stalls`: every engine's cycles split into busy (by opcode), waiting (by cause) and
    idle (`stalls`, the frame)."""

    stalls: pl.DataFrame = field(default=None)  # type: ignore[assignment]


def stalls(trace: TraceLike, machine: MachineLike = None, *,
           timeline: str = "auto", window: WindowChoice | None = None) -> StallReport:
    """Where the time went (`tracekit stalls`), in `window` when given."""
    from tracekit.analysis.stalls import stall_table

    chosen = choose(trace, machine, timeline, window=window)
    table = stall_table(chosen.line.frame)
    return StallReport("stalls", chosen.facts,
                       [("stalls (every engine sums to the makespan)", table, STALL_COLS)],
                       f"Stalls of {chosen.trace.path}", stalls=table)


@dataclass(frozen=True, repr=False)
class CriticalPathReport(Report):
    """`critical_path`: the chain that decided the makespan (`path`: its steps, slack, and
    composition by engine, opcode and layer), and the near-critical instructions."""

    path: CriticalPath = field(default=None)  # type: ignore[assignment]
    near_critical: pl.DataFrame = field(default=None)  # type: ignore[assignment]

    @property
    def makespan(self) -> int:
        return self.path.makespan


def critical_path(trace: TraceLike, machine: MachineLike = None, *, timeline: str = "auto",
                  near_pct: float = 1.0, steps: int = 15,
                  window: WindowChoice | None = None) -> CriticalPathReport:
    """What limits the runtime (`tracekit critical-path`); near-critical: off the path with
    slack under `near_pct` % of the makespan; `steps`: longest steps in the report; `window`:
    the part of the trace to look at."""
    from tracekit.analysis.critical_path import critical_path as find_path
    from tracekit.analysis.figures import rows_of

    chosen = choose(trace, machine, timeline, window=window)
    line = chosen.line
    path = find_path(line.frame, line.graph, line.kind_latency)
    near = path.near_critical(max(1, int(path.makespan * near_pct / 100)))
    rows = rows_of(line.frame["id"].to_numpy(), near["id"].to_numpy())
    near = pl.concat([near, line.frame[rows].select("engine", "opcode", "layer", "start",
                                                    "end")], how="horizontal")
    facts = [*chosen.facts, render.makespan_fact(path.makespan, chosen.clock_hz),
             *_untraced_gap_facts(path, chosen),
             fact("steps", path.steps.height),
             fact("zero_slack_instructions", int(path.slack["critical"].sum()),
                  label="zero-slack instructions"),
             fact("near_critical", near.height,
                  label=f"near-critical (slack under {near_pct:g} %)")]
    longest = path.steps.sort(["duration", "id"], descending=[True, False]).head(steps)
    sections = [("by engine", path.by_engine, {"engine": "", **GROUP_COLS}),
                ("by opcode", path.by_opcode, {"opcode": "", **GROUP_COLS}),
                ("by layer", path.by_layer, {"layer": "", **GROUP_COLS}),
                (f"longest {longest.height} steps", longest,
                 {"id": "", "engine": "", "opcode": "", "layer": "", "start": ",",
                  "duration": ",", "edge_kind": ""})]
    return CriticalPathReport("critical path", facts, sections,
                              f"Critical path of {chosen.trace.path}", path=path,
                              near_critical=near)


def _untraced_gap_facts(path: CriticalPath, chosen: Chosen) -> list[Fact]:
    """On the observed timeline of an imported Chrome or PyTorch profiler trace, the time on
    the path when none of its traced work runs (a thread waiting in a call the profiler did
    not record, say): tracekit counts it, while profiler tools such as HTA weigh such gaps
    zero and may so pick another path."""
    gap = int(path.steps["gap"].sum())
    if (chosen.line.source is not Source.OBSERVED or gap == 0
            or "chrome" not in chosen.trace.manifest.extra):
        return []
    clock = chosen.clock_hz
    time = f", {gap / clock * 1e6:,.3f} us" if clock else ""
    return [fact("untraced_gap_cycles", gap,
                 f"{gap:,} cycles ({gap / max(path.makespan, 1) * 100:.1f} % of the path"
                 f"{time}): no traced work of the path runs then; tools that weigh such "
                 f"gaps zero (HTA) may find a longer chain of work elsewhere",
                 label="untraced gaps")]


@dataclass(frozen=True, repr=False)
class BugReport(Report):
    """`bugs`: the bug signatures found (`findings`: code, severity, message, hint and the
    evidence lists), most severe first."""

    findings: pl.DataFrame = field(default=None)  # type: ignore[assignment]


def bugs(trace: TraceLike, machine: MachineLike = None) -> BugReport:
    """Architectural bug signatures (`tracekit bugs`)."""
    from tracekit.analysis.signatures import find_bugs, findings_frame
    from tracekit.analysis.timelines import choose_source

    opened, resolved = trace_of(trace), machine_of(machine)
    frame = findings_frame(find_bugs(opened, resolved))
    # The checks of timing read the trace's own timeline when it is timed throughout.
    source = choose_source(opened)
    facts = [*render.timeline_facts(opened, resolved, source.value),
             fact("findings", frame.height, render.findings_summary(frame))]
    return BugReport("bug signatures", facts,
                     [("findings", render.with_evidence(frame), FINDING_COLS)],
                     f"Bug signatures of {opened.path}", findings=frame)


@dataclass(frozen=True, repr=False)
class Analysis(Report):
    """`analyze`: the engine figures (`engines`, `hbm`), `stalls`, the critical path (`path`),
    the top of the `sensitivity` ranking, the `findings` and the timeline's `makespan`; for an
    imported device profile, Neuron Explorer's Summary metrics recomputed next to the recorded
    ones (`device_summary`, else None)."""

    engines: pl.DataFrame = field(default=None)  # type: ignore[assignment]
    array: pl.DataFrame | None = None
    device_summary: pl.DataFrame | None = None
    hbm: Mapping[str, float | int] = field(default_factory=dict)
    stalls: pl.DataFrame = field(default=None)  # type: ignore[assignment]
    path: CriticalPath = field(default=None)  # type: ignore[assignment]
    sensitivity: pl.DataFrame = field(default=None)  # type: ignore[assignment]
    findings: pl.DataFrame = field(default=None)  # type: ignore[assignment]
    line: Timeline | None = None

    @property
    def makespan(self) -> int:
        return self.path.makespan


def skipped_fact(skipped: int) -> list[Fact]:
    """The head line saying how many groups sensitivity did not replay (none when it replayed
    every one)."""
    from tracekit.analysis.whatif import GROUP_LIMIT

    if not skipped:
        return []
    return [fact("sensitivity_skipped", skipped, label="sensitivity", text=(
        f"the {GROUP_LIMIT} engines, opcodes and layers with the most busy time each; "
        f"{skipped:,} others not replayed (--all-groups replays every one)"))]


def analyze(trace: TraceLike, machine: MachineLike = None, *, timeline: str = "auto",
            top: int = 5, window: WindowChoice | None = None,
            all_groups: bool = False) -> Analysis:
    """One report (`tracekit analyze`): engine figures, stalls, the critical path, the top
    `top` of the sensitivity ranking (of the busiest groups; `all_groups`: of every one) and
    the bug signatures."""
    from tracekit.analysis.array import array_table
    from tracekit.analysis.critical_path import critical_path as find_path
    from tracekit.analysis.figures import engine_figures
    from tracekit.analysis.neuron_metrics import FORMATS, summary_metrics
    from tracekit.analysis.signatures import find_bugs, findings_frame
    from tracekit.analysis.stalls import stall_table
    from tracekit.analysis.whatif import GROUP_LIMIT, rank_changes

    # the signatures read every table
    chosen = choose(trace, machine, timeline, tables=None, window=window)
    line, opened, resolved = chosen.line, chosen.trace, chosen.machine
    stall = stall_table(line.frame)
    path = find_path(line.frame, line.graph, line.kind_latency)
    mode = Mode.OBSERVED if line.source is Source.OBSERVED else Mode.MODEL
    # The sensitivity replays and the signatures share the timeline's dependency graph.
    ranked = rank_changes(opened, resolved, mode, graph=line.graph,
                          limit=None if all_groups else GROUP_LIMIT)
    ranking = ranked.table.head(top)
    findings = findings_frame(find_bugs(opened, resolved, line.graph, line.replayed))
    engines, hbm = engine_figures(line.frame, opened.read_instructions(["id", "flops", "bytes"]),
                                  resolved)
    sections: list[Section] = [
        ("engines (cycles)", engines, render.ENGINE_COLS),
        ("stalls", stall, STALL_COLS),
        ("critical path by engine", path.by_engine, {"engine": "", **GROUP_COLS}),
        ("critical path by layer", path.by_layer, {"layer": "", **GROUP_COLS}),
        (f"sensitivity (top {top}"
         + (", the trace's own durations)" if mode is Mode.OBSERVED else ")"), ranking,
         {"group": "", "name": "", "gained": ",", "gained_pct": ".2f"}),
        ("bug signatures", render.with_evidence(findings), FINDING_COLS)]
    array = array_table(opened, line.frame)
    if array is not None:  # the trace declares a systolic array: its utilization and stalls
        sections.insert(1, ("array", array, {
            "engine": "", "layer": "", "rows": "", "cols": "", "macs": ",",
            "window_cycles": ",", "compute_util_pct": ".2f", "busy_cycles": ",",
            "stall_cycles": ","}))
    device = summary_metrics(opened)  # an imported device profile: its own Summary's figures
    if device is not None:
        sections.insert(1, ("device profile summary (Neuron Explorer's metrics, observed "
                            "times)", device, FORMATS))
    facts = [*chosen.facts, render.makespan_fact(path.makespan, chosen.clock_hz),
             render.hbm_fact(hbm, resolved), fact("critical_path_steps", path.steps.height),
             *skipped_fact(ranked.skipped)]
    return Analysis("analysis", facts, sections, f"Analysis of {opened.path}", engines=engines,
                    array=array, device_summary=device,
                    hbm=hbm, stalls=stall, path=path, sensitivity=ranking, findings=findings,
                    line=line)


@dataclass(frozen=True, repr=False)
class WhatIfReport(Report):
    """`whatif`: the makespan before and after the changes, each engine's busy and HBM
    contention in both runs (`engines`), and `why` the run moved against the changes (None
    when it did not)."""

    base_makespan: int = 0
    makespan: int = 0
    engines: pl.DataFrame = field(default=None)  # type: ignore[assignment]
    why: str | None = None
    result: Any = None
    """The `analysis.whatif.WhatIf` behind the report."""

    def markdown(self) -> str:
        # As `tracekit whatif -f md` titles its table.
        return render.sections_markdown(self.heading, self.facts, [
            (name[0].upper() + name[1:], frame, cols) for name, frame, cols in self.sections])


def whatif(trace: TraceLike, machine: MachineLike = None, *,
           scale: Mapping[str, Mapping[str, float]] | None = None,
           set: Mapping[str, float] | None = None,  # noqa: A002
           mode: str = "model") -> WhatIfReport:
    """Replay with changed durations or machine parameters (`tracekit whatif`). `scale`:
    {group: {name: factor}}, group engine, opcode or layer (0.5: twice as fast); `set`:
    machine parameters (hbm_bandwidth, dma_bandwidth, semaphore_latency, data_latency)."""
    from tracekit.analysis.whatif import parse_scale, parse_set
    from tracekit.analysis.whatif import whatif as run_whatif

    chosen_mode, resolved = mode_of(mode), machine_of(machine)
    if not scale and not set:
        raise ArgumentError("whatif needs a change: scale={\"engine\": {\"tensor\": 0.5}} "
                            "(group engine, opcode or layer) or set={\"hbm_bandwidth\": 384}")
    scales = [f"{group}={name}:{factor}" for group, names in (scale or {}).items()
              for name, factor in names.items()]
    settings = [f"{name}={value}" for name, value in (set or {}).items()]
    changes = [parse_scale(text) for text in scales]
    sets = dict(parse_set(text) for text in settings)
    opened = trace_of(trace, REPLAY_TABLES)
    result = run_whatif(opened, resolved, changes, sets, chosen_mode)
    head = render.replay_facts(opened, resolved, mode)
    return WhatIfReport(
        "what-if", render.whatif_facts(scales, settings, result, head),
        [("by engine (base, and after the change)", result.engines,
          render.WHATIF_ENGINE_COLS)], f"What-if on {opened.path}",
        base_makespan=result.base_makespan, makespan=result.makespan,
        engines=result.engines, why=result.why, result=result)


@dataclass(frozen=True, repr=False)
class SensitivityReport(Report):
    """`sensitivity`: every engine, opcode, layer and bandwidth 10 % faster in turn
    (`ranking`: group, name, makespan, gained, gained_pct, the change of HBM contention, and
    why where the run got longer; most gained first). The report lists every row, and the
    why of each change that made the run longer."""

    ranking: pl.DataFrame = field(default=None)  # type: ignore[assignment]


def sensitivity(trace: TraceLike, machine: MachineLike = None, *,
                mode: str = "model", all_groups: bool = False) -> SensitivityReport:
    """Which 10 % speed-up buys the most (`tracekit sensitivity`): of the busiest engines,
    opcodes and layers (`all_groups`: of every one)."""
    from tracekit.analysis.whatif import GROUP_LIMIT, rank_changes

    chosen_mode = mode_of(mode)
    opened, resolved = trace_of(trace, REPLAY_TABLES), machine_of(machine)
    ranked = rank_changes(opened, resolved, chosen_mode,
                          limit=None if all_groups else GROUP_LIMIT)
    table = ranked.table
    facts = [*render.replay_facts(opened, resolved, mode), *skipped_fact(ranked.skipped),
             fact("speedup", 10, "10 % faster, in turn")]
    sections: list[Section] = [("makespan gained, 10 % faster each in turn", table,
                                render.SENSITIVITY_COLS)]
    why = table.filter(pl.col("why").is_not_null()).select("group", "name", "gained", "why")
    if why.height:  # what the command prints below its table
        sections.append((render.WHY_TITLE, why,
                         {"group": "", "name": "", "gained": ",", "why": ""}))
    return SensitivityReport("sensitivity", facts, sections, f"Sensitivity of {opened.path}",
                             ranking=table)


@dataclass(frozen=True, repr=False)
class DiffReport(Report):
    """`diff`: what changed between two runs (`diff`: the facts and frames of
    `tracekit.analysis.diff.Diff`; `regression`: slower than the threshold)."""

    diff: Any = None

    @property
    def regression(self) -> bool:
        return bool(self.diff.regression)


def diff(base: TraceLike, cand: TraceLike, machine: MachineLike = None, *,
         timeline: str = "auto", threshold_pct: float = 2.0, force: bool = False
         ) -> DiffReport:
    """Two runs of one workload compared (`tracekit diff`)."""
    from tracekit.analysis.diff import check_comparable, profile
    from tracekit.analysis.diff import diff as run_diff
    from tracekit.analysis.timelines import choose_source

    choice = timeline_of(timeline)
    resolved = machine_of(machine)
    traces = trace_of(base), trace_of(cand)
    check_comparable(*traces, force=force)
    source = choose_source(*traces, choice=choice)
    result = run_diff(*(profile(t, resolved, source) for t in traces),
                      threshold_pct=threshold_pct, force=force)
    facts, sections = render.diff_sections(
        result, render.timeline_facts(traces[0], resolved, source.value))
    return DiffReport(f"Diff of {result.workload}", facts, sections, diff=result)


@dataclass(frozen=True, repr=False)
class SweepReport(Report):
    """`sweep`: every point of a design-space grid replayed (`table`: point, one column per
    axis, makespan, busy_<engine>, contention, binding_engine, cost when defined; see
    `tracekit.analysis.sweep.Sweep`), the `best` points, the Pareto `front` over (makespan,
    cost) (None without a cost), each axis's `influence` on the makespan and the axis that
    `matters_most`."""

    result: Any = None
    """The `analysis.sweep.Sweep` behind the report."""

    @property
    def table(self) -> pl.DataFrame:
        return self.result.table

    @property
    def best(self) -> pl.DataFrame:
        return self.result.best

    @property
    def front(self) -> pl.DataFrame | None:
        return self.result.front

    @property
    def influence(self) -> pl.DataFrame:
        return self.result.influence

    @property
    def matters_most(self) -> str:
        return self.result.matters_most


def sweep(trace: TraceLike, grid: Collection[str] | Mapping[str, Collection[float]] = (),
          machine: MachineLike = None, *, grid_file: str | os.PathLike[str] | None = None,
          mode: str = "model", samples: int | None = None, seed: int = 0,
          cost: str | None = None, scheduler: str | None = None, workers: int | None = 1,
          output: str | os.PathLike[str] | None = None, overwrite: bool = False
          ) -> SweepReport:
    """Replay every point of a design-space grid (`tracekit sweep`). `grid`: axes as the
    command line gives them ("hbm_bandwidth=96,192", "engine=tensor:1,0.5") or as
    {axis: values} ({"hbm_bandwidth": [96, 192], "engine=tensor": [1, 0.5]}); `grid_file`: a
    TOML file of axes and cost weights; `samples`, `seed`: a seeded sample of the grid;
    `cost`: a column or expression for the Pareto front; `workers` (default 1: in this
    process) or `scheduler` (tcp://HOST:PORT of a Dask cluster); `output`: write the table as
    Parquet there."""
    from tracekit.analysis.sweep import (
        axis_of,
        check_output,
        load_grid_file,
        parse_grid,
        write_table,
    )
    from tracekit.analysis.sweep import sweep as run_sweep

    chosen_mode = mode_of(mode)
    axes = load_grid_file(grid_file) if grid_file is not None else []
    if isinstance(grid, Mapping):
        axes += [axis_of(name, list(values), f"grid[{name!r}]") for name, values in grid.items()]
    else:
        axes += [parse_grid(text) for text in grid]
    if output is not None:
        check_output(Path(output), overwrite)
    opened, resolved = trace_of(trace, REPLAY_TABLES), machine_of(machine)
    result = run_sweep(opened, resolved, axes, mode=chosen_mode, samples=samples, seed=seed,
                       cost=cost, scheduler=scheduler, workers=workers)
    if output is not None:
        write_table(result, output, overwrite=overwrite)
    return _sweep_report(result, opened, resolved, chosen_mode.value, output)


SWEEP_FORMATS = {"point": "", "makespan": ",", "binding_engine": "", "cost": "g"}


def _sweep_report(result: Any, trace: Trace, machine: Machine, mode: str,
                  output: str | os.PathLike[str] | None) -> SweepReport:
    table, base = result.table, result.base_makespan
    count = table.height
    best = result.best.row(0, named=True)
    ranking = result.influence
    top = ranking.row(0, named=True)
    sampled = (f"sampled with seed {result.seed}" if count < result.space
               else "the whole grid")
    facts = [*render.replay_facts(trace, machine, mode),
             fact("points", count, f"{count:,} of {result.space:,} ({sampled})"),
             fact("axes", [a.name for a in result.axes],
                  ", ".join(f"{a.name} ({len(a.values)} values)" for a in result.axes)),
             fact("base_makespan_cycles", base, f"{base:,} cycles (the machine unchanged)"),
             fact("best_makespan_cycles", best["makespan"],
                  f"{best['makespan']:,} cycles at point {best['point']} "
                  f"({(best['makespan'] - base) / max(base, 1) * 100:+.2f} %)"),
             fact("matters_most", top["axis"],
                  f"{top['axis']} (mean makespan {top['lowest_mean']:,.0f} to "
                  f"{top['highest_mean']:,.0f} cycles over its values, a range of "
                  f"{top['range']:,.0f}"
                  + (")" if count == result.space else
                     "; an estimate: on a sample the means are over the points drawn, not "
                     "averaged over the other axes; sweep the whole grid to rank the axes)")),
             fact("cost", result.cost, result.cost or "none (give --cost or weights in the "
                                                        "grid file for a Pareto front)")]
    if output is not None:
        facts.append(fact("output", str(output)))
    point_cols = {"point": "", **{a.name: "g" for a in result.axes}, "makespan": ",",
                  "binding_engine": ""}
    if "cost" in table.columns:
        point_cols["cost"] = "g"
    sections: list[Section] = [(f"best {result.best.height} points", result.best, point_cols)]
    front = result.front
    if front is not None:
        sections.append((f"Pareto front over (makespan, cost), {front.height} points", front,
                         point_cols))
    sections.append(("axes by their makespan range" + (
        "" if count == result.space else " (estimated from the sample)"), ranking,
                     {"axis": "", "values": "", "best_value": "g", "lowest_mean": ",.0f",
                      "highest_mean": ",.0f", "range": ",.0f"}))
    return SweepReport("sweep", facts, sections, f"Sweep of {trace.path}", result=result)
