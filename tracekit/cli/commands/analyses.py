"""The commands on a timeline: stalls, critical path, what-if, sensitivity, calibration,
analysis and bug signatures."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tracekit.cli.app import (
    EXIT_FINDING,
    FromOpt,
    InstanceOpt,
    MachineOpt,
    Opt,
    ReportFormat,
    ReportFormatOpt,
    TimelineOpt,
    ToOpt,
    TraceArg,
    WindowOpt,
    app,
    emit,
    handles_errors,
    open_bundle,
    refuse_to_replace,
    status,
    stdout_console,
)
from tracekit.options import TimelineChoice

if TYPE_CHECKING:
    from tracekit import api


@app.command()
@handles_errors
def stalls(trace: TraceArg, machine: MachineOpt = None,
           timeline: TimelineOpt = TimelineChoice.AUTO, window: WindowOpt = None,
           instance: InstanceOpt = 0, from_time: FromOpt = None, to_time: ToOpt = None,
           format: ReportFormatOpt = ReportFormat.TEXT) -> None:  # noqa: A002
    """Where the time went: every engine's cycles split into busy (by opcode), waiting (by the
    producer and edge that held it) and idle."""
    from tracekit import api

    with status("stalls"):
        report = api.stalls(trace, machine, timeline=timeline,
                            window=api.WindowChoice(window, instance, from_time, to_time))
    emit(report, format, {"stalls": report.stalls})

LISTED = 10_000
"""Rows of each list (path steps, near-critical instructions) that JSON reports hold; a longer
list is cut to its largest rows, and `--full` writes every one as Parquet."""


@app.command("critical-path")
@handles_errors
def critical_path_command(
    trace: TraceArg, machine: MachineOpt = None, timeline: TimelineOpt = TimelineChoice.AUTO,
    window: WindowOpt = None, instance: InstanceOpt = 0, from_time: FromOpt = None,
    to_time: ToOpt = None,
    steps: Annotated[int, Opt(min=0, help="Longest steps to list in text output.")] = 15,
    near: Annotated[float, Opt(min=0.0, help="Near-critical: slack under this % of the "
                                             "makespan.")] = 1.0,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
    full: Annotated[Path | None, Opt(
        "--full", help=f"Also write every path step and near-critical instruction to this "
                       f"Parquet file (column `list`: path or near_critical); JSON lists at "
                       f"most {LISTED:,} of each.", show_default=False)] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing --full file.")] = False,
) -> None:
    """What limits the runtime: the chain of instructions that decided the makespan, its
    composition by engine, opcode and layer, and how many instructions have no slack."""
    from tracekit import api
    from tracekit.cli import render

    if full is not None:
        if full.suffix.lower() != ".parquet":
            raise typer.BadParameter(f"{full}: --full writes a Parquet table; name the file "
                                     f"with .parquet (e.g. {full.with_suffix('.parquet')})",
                                     param_hint="--full")
        refuse_to_replace(full, force)
    with status("critical path"):
        report = api.critical_path(trace, machine, timeline=timeline, near_pct=near,
                                   steps=steps, window=api.WindowChoice(
                                       window, instance, from_time, to_time))
    path = report.path
    if full is not None:
        write_full_path(full, report)
    if format is ReportFormat.JSON:
        data = {**report.head, **render.critical_path_to_dict(path, LISTED)}
        data["near_critical"] = {
            "threshold_pct": near, "count": report.near_critical.height,
            "listed": min(report.near_critical.height, LISTED),
            "instructions": render.records(report.near_critical.head(LISTED))}
        sys.stdout.write(render.to_json(data))
    else:
        emit(report, format, {})


def write_full_path(path: Path, report: api.CriticalPathReport) -> None:
    """Every path step (in order) and near-critical instruction (least slack first) as one
    Parquet table, written atomically: list (path or near_critical), rank (place in its list),
    id, engine, opcode, layer, start, end, slack (0 on the path), and the path's step columns
    (duration, edge_kind, gap, counted; null for near-critical rows)."""
    import polars as pl

    from tracekit.trace.bundle import atomic_file

    ranked = [frame.with_columns(pl.lit(name).alias("list"),
                                 pl.int_range(pl.len(), dtype=pl.Int64).alias("rank"))
              for name, frame in (("path", report.path.steps.with_columns(
                  pl.lit(0, pl.Int64).alias("slack"))), ("near_critical", report.near_critical))]
    table = pl.concat(ranked, how="diagonal_relaxed")
    first = ["list", "rank", "id", "engine", "opcode", "layer", "start", "end", "slack"]
    table = table.select([*first, *[c for c in table.columns if c not in first]])
    with atomic_file(path) as temporary:
        table.write_parquet(temporary)


@app.command()
@handles_errors
def whatif(
    trace: TraceArg, machine: MachineOpt = None,
    scale: Annotated[list[str] | None, Opt(help="GROUP=NAME:FACTOR, e.g. engine=tensor:0.5 "
                                            "(repeatable; GROUP: engine, opcode, layer).")]
    = None,
    set_: Annotated[list[str] | None, Opt("--set", help="NAME=VALUE: hbm_bandwidth, "
                                          "dma_bandwidth (bytes/cycle), semaphore_latency, "
                                          "data_latency (cycles). Repeatable.")] = None,
    mode: Annotated[str, Opt(help="model or observed durations.")] = "model",
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Replay with changed durations or machine parameters: the new makespan and the change,
    each engine's busy and HBM contention cycles before and after, and, when the run moves
    against the change (a faster part, a longer run), why."""
    from tracekit import api
    from tracekit.analysis.whatif import parse_scale, parse_set
    from tracekit.cli import render
    from tracekit.replay.run import Mode

    changes = [parse_scale(text) for text in scale or []]
    sets = dict(parse_set(text) for text in set_ or [])
    if not changes and not sets:
        raise typer.BadParameter("give at least one --scale or --set", param_hint="--scale")
    if mode not in {m.value for m in Mode}:
        raise typer.BadParameter(f"{mode!r} is not one of model, observed", param_hint="--mode")
    by_group: dict[str, dict[str, float]] = {}
    for change in changes:
        by_group.setdefault(change.group, {})[change.name] = change.factor
    with status("replaying twice"):
        report = api.whatif(trace, machine, scale=by_group, set=sets, mode=mode)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({
            **report.head, **render.whatif_head(str(trace), scale or [], set_ or [],
                                                report.result),
            "why": report.why, "engines": render.records(report.engines)}))
    elif format is ReportFormat.MD:
        sys.stdout.write(report.markdown())
    else:
        render.print_sections(stdout_console(), report.title, report.facts, report.sections)


@app.command()
@handles_errors
def sensitivity(
    trace: TraceArg, machine: MachineOpt = None,
    top: Annotated[int, Opt(min=0, help="Rows to show in text and md output.")] = 15,
    mode: Annotated[str, Opt(help="model or observed durations.")] = "model",
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
    all_groups: Annotated[bool, Opt("--all-groups", help="Replay every engine, opcode and "
                                    "layer, not only the 50 of each with the most busy "
                                    "time.")] = False,
) -> None:
    """Which 10 % speed-up buys the most: every engine, opcode, layer and the DMA and HBM
    bandwidths made 10 % faster in turn, ranked by makespan gained; where a faster part makes
    the run longer, why (HBM contention, the critical path's move)."""
    from tracekit import api
    from tracekit.cli import render
    from tracekit.replay.run import Mode

    if mode not in {m.value for m in Mode}:
        raise typer.BadParameter(f"{mode!r} is not one of model, observed", param_hint="--mode")
    with status("replaying each change"):
        report = api.sensitivity(trace, machine, mode=mode, all_groups=all_groups)
    table = report.ranking
    head = [f for f in report.facts if f.key != "speedup"]  # the renderers add that line
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**render.facts_json(head), "speedup_pct": 10,
                                         "ranking": render.records(table)}))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.sensitivity_markdown(str(trace), 10, table, top, head))
    else:
        render.print_sensitivity(stdout_console(), 10, table, top, head)


@app.command()
@handles_errors
def calibrate(
    traces: Annotated[list[Path], typer.Argument(help="Timed trace bundles to fit.",
                                                 show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Machine TOML file to write.",
                                show_default=False)],
    machine: MachineOpt = None,
    holdout: Annotated[list[Path] | None, Opt(
        "--holdout", help="Timed traces to judge the fit on, never fitted (repeat the "
                          "option). Without it, two or more traces are judged each in turn, "
                          "fitted on the others.", show_default=False)] = None,
    folds: Annotated[bool, Opt("--folds/--no-folds",
                               help="Without --holdout: judge each trace fitted on the "
                                    "others.")] = True,
    allow_worse: Annotated[bool, Opt(
        "--allow-worse", help="Write the machine even when it predicts the unseen traces "
                              "worse than the base machine.")] = False,
    force: Annotated[bool, Opt("--force", help="Replace an existing file.")] = False,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Fit the latency model and its effects (warm-up, descriptors, SBUF conflicts) to
    observed durations and write a machine file for replay. One instruction in five (by a
    fixed hash of its id) is held out of the fit and the fits are judged on those; a poor fit
    is a warning on stderr. Traces the fit never saw (--holdout, or each trace in turn) are
    replayed on the base and the fitted machine; a fit worse there is not written (exit 1)
    unless --allow-worse."""
    from tracekit.analysis.calibrate import CalibrationError
    from tracekit.analysis.calibrate import calibrate as run_calibrate
    from tracekit.analysis.calibrate import machine_toml
    from tracekit.api import REPLAY_TABLES
    from tracekit.cli import render
    from tracekit.replay.machine import resolve_machine
    from tracekit.trace.bundle import write_text_atomic

    refuse_to_replace(output, force)
    if not output.resolve().parent.is_dir():
        raise typer.BadParameter(f"{output.parent} is not a folder", param_hint="--output")
    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; give a file name such as "
                                 f"fitted.toml", param_hint="--output")
    with status("fitting"):
        result = run_calibrate([open_bundle(t, REPLAY_TABLES) for t in traces],
                               resolve_machine(machine),
                               [open_bundle(t, REPLAY_TABLES) for t in holdout or []],
                               folds=folds)
    if result.worse and not allow_worse:
        raise CalibrationError(
            f"the fitted machine predicts the traces it did not see worse than the base "
            f"machine ({'; '.join(result.worse)}); {output} was not written. Fit on traces "
            f"more like the unseen ones, or pass --allow-worse to write it anyway.")
    text = machine_toml(result.machine, f"fitted by tracekit calibrate to {len(traces)} "
                                        f"trace(s)")
    write_text_atomic(output, text)  # never a half-written machine file
    for warning in result.warnings:
        typer.echo(f"warning: {render.printable(warning.message)}", err=True)
    args = (result, str(output), [str(t) for t in traces])
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(render.calibration_to_dict(*args)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.calibration_markdown(*args))
    else:
        render.print_calibration(stdout_console(), *args)


@app.command()
@handles_errors
def analyze(
    trace: TraceArg, machine: MachineOpt = None, timeline: TimelineOpt = TimelineChoice.AUTO,
    window: WindowOpt = None, instance: InstanceOpt = 0, from_time: FromOpt = None,
    to_time: ToOpt = None,
    top: Annotated[int, Opt(min=0, help="Sensitivity rows to show.")] = 5,
    format: Annotated[ReportFormat, Opt("--format", "-f",  # noqa: A002
                                        help="Output format.")] = ReportFormat.TEXT,
    all_groups: Annotated[bool, Opt("--all-groups", help="Sensitivity replays every engine, "
                                    "opcode and layer, not only the 50 of each with the most "
                                    "busy time.")] = False,
) -> None:
    """One report: the engine figures (busy, HBM contention, waiting, idle, FLOP utilization,
    achieved bandwidth), stalls, the critical path, the top of the sensitivity ranking and the
    bug signatures found."""
    from tracekit import api

    with status("analysing"):
        report = api.analyze(trace, machine, timeline=timeline, top=top,
                             window=api.WindowChoice(window, instance, from_time, to_time),
                             all_groups=all_groups)
    tables = {"engines": report.engines, "array": report.array,
              "device_summary": report.device_summary, "stalls": report.stalls,
              "critical_path_by_engine": report.path.by_engine,
              "critical_path_by_layer": report.path.by_layer,
              "sensitivity": report.sensitivity, "findings": report.findings}
    emit(report, format, {key: frame for key, frame in tables.items() if frame is not None})


class FailOn(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@app.command()
@handles_errors
def bugs(
    trace: TraceArg, machine: MachineOpt = None,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
    fail_on: Annotated[FailOn, Opt("--fail-on", help="Exit 3 when a finding of this "
                                   "severity or worse is present.")] = FailOn.ERROR,
) -> None:
    """Architectural bug signatures: races by happens-before, deadlocks, semaphore misuse,
    impossible timing, bandwidth beyond physics, latency outliers and stuck or slow engines,
    out-of-bounds accesses, and inefficiencies (reloads, dead writes, small DMAs, semaphore
    ping-pong), each with its evidence and a hint."""
    from tracekit import api
    from tracekit.analysis.signatures import Severity
    from tracekit.cli import render

    with status("looking for bug signatures"):
        report = api.bugs(trace, machine)
    frame = report.findings
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**report.head, "findings": frame.to_dicts()}))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.findings_markdown(str(trace), frame, report.facts))
    else:
        render.print_facts(stdout_console(), "bugs", report.facts)
        render.print_findings(stdout_console(), frame)
    threshold = Severity(fail_on.value).rank
    if any(Severity(s).rank >= threshold for s in frame["severity"]):
        raise typer.Exit(EXIT_FINDING)
