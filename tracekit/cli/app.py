"""The `tracekit` command line: thin Typer commands over the library. Library errors become exit
codes here and only here: 0 ok, 1 error in input or use, 2 usage, 3 regression or finding.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import polars as pl
import typer
from rich.console import Console
from rich.text import Text

import tracekit
from tracekit import api, progress
from tracekit.analysis.timelines import TimelineChoice
from tracekit.cli import render
from tracekit.errors import InvalidTraceError, TraceExistsError, TracekitError
from tracekit.trace.bundle import Trace, write_text_atomic
from tracekit.trace.summary import summarize
from tracekit.trace.validate import ValidationReport
from tracekit.trace.validate import validate as validate_bundle

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_FINDING = 3

app = typer.Typer(
    name="tracekit",
    help="Store, validate, replay and mine instruction and memory traces of ML accelerators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
export_app = typer.Typer(help="Export traces to other tools' formats.", no_args_is_help=True,
                         rich_markup_mode=None)
convert_app = typer.Typer(help="Import other tools' output as trace bundles.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(export_app, name="export")
app.add_typer(convert_app, name="convert")


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


class ReportFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MD = "md"


P = ParamSpec("P")
R = TypeVar("R")


def _stdout() -> Console:
    # Piped output gets a fixed width, so reports are the same bytes whatever the terminal.
    return Console(highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else 160)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn tracekit's errors into a one-line message on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        reporter = _reporter()
        try:
            with progress.listening(reporter):
                return command(*args, **kwargs)
        except InvalidTraceError as exc:
            # The bundle breaks rules of the tables the command reads: every error, as
            # `tracekit validate` shows it, on stderr.
            typer.echo(f"error: {exc}", err=True)
            report = exc.report
            if isinstance(report, ValidationReport):
                render.print_findings_of(Console(stderr=True, highlight=False, soft_wrap=True),
                                         report.errors)
            raise typer.Exit(exc.exit_code) from None
        except TracekitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        finally:
            if reporter is not None:
                reporter.close()

    return wrapper


_QUIET = {"on": os.environ.get("TRACEKIT_QUIET", "") not in ("", "0")}
"""--quiet (or TRACEKIT_QUIET=1): no progress on stderr."""


def _reporter() -> progress.BarReporter | progress.LineReporter | None:
    """Progress on stderr: bars on a terminal, a line every few seconds in a log."""
    if _QUIET["on"]:
        return None
    if sys.stderr.isatty():
        return progress.BarReporter(Console(stderr=True))
    return progress.LineReporter(lambda line: typer.echo(line, err=True))


def _compile_once() -> None:
    """On the first run after an install, compile the kernels, saying so and how long it
    took (once: numba caches them)."""
    from tracekit import kernels

    if kernels.compiled():
        return
    if not _QUIET["on"]:
        typer.echo("tracekit: first run after install: compiling the replay and analysis "
                   "kernels (once; they are cached for every later run)...", err=True)
    with progress.step("compiling kernels"), progress.listening(None):
        seconds = kernels.compile_all()  # its own steps are the tiny trace's: not told
    if not _QUIET["on"]:
        typer.echo(f"tracekit: kernels compiled in {seconds:.1f} s", err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tracekit {tracekit.__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr "
                                        "(also TRACEKIT_QUIET=1).")] = False,
) -> None:
    """tracekit: traces of ML accelerators, validated, replayed and mined. Long steps show
    their progress on stderr (bars on a terminal, a line every few seconds in a log)."""
    if quiet:
        _QUIET["on"] = True


TraceArg = Annotated[Path, typer.Argument(help="Trace bundle folder (holds manifest.json).",
                                          show_default=False)]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


@app.command()
@handles_errors
def validate(
    trace: TraceArg,
    format: Annotated[ReportFormat, typer.Option("--format", "-f",  # noqa: A002
                                                 help="Output format.")] = ReportFormat.TEXT,
    strict: Annotated[bool, typer.Option("--strict",
                                         help="Treat warnings as errors.")] = False,
) -> None:
    """Check a bundle against every rule of the schema; exit 1 when it breaks one."""
    report = validate_bundle(trace)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(report.to_dict(strict)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.validation_markdown(report, strict))
    else:
        render.print_validation(_stdout(), report, strict)
    if not report.ok(strict):
        raise typer.Exit(EXIT_INPUT)


@app.command()
@handles_errors
def info(
    trace: TraceArg,
    format: Annotated[ReportFormat, typer.Option("--format", "-f",  # noqa: A002
                                                 help="Output format.")] = ReportFormat.TEXT,
) -> None:
    """Show what a bundle holds: producer, instructions per engine and opcode, time span."""
    summary = summarize(_open(trace, ()))
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(summary.to_dict()))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.summary_markdown(summary))
    else:
        render.print_summary(_stdout(), summary)


Opt = typer.Option

REPLAY_TABLES = api.REPLAY_TABLES


def _open(path: Path, tables: Collection[str] | None = None) -> Trace:
    """Open a bundle for a command, refusing an invalid one (InvalidTraceError, exit 1, with
    the findings): a quick check of the rules of the tables the command reads (`tables`; None:
    every table), and of every file's size and sha256."""
    return api.trace_of(path, tables)


@contextmanager
def _status(message: str) -> Iterator[None]:
    """A long step of a command (its progress on stderr); the kernels compiled first on the
    first run after an install."""
    _compile_once()
    with progress.step(message):
        yield


@app.command()
@handles_errors
def replay(
    trace: TraceArg,
    machine: Annotated[str | None, Opt(
        "--machine", "-m", help="Machine TOML file or built-in name (default: trn-like).",
        show_default=False)] = None,
    mode: Annotated[str, Opt(help="model: durations from the machine's latency model; "
                                  "observed: from the trace.")] = "model",
    output: Annotated[Path | None, Opt("--output", "-o", help="Write the predicted timeline "
                                       "as a bundle here.", show_default=False)] = None,
    format: Annotated[ReportFormat, Opt("--format", "-f",  # noqa: A002
                                        help="Output format.")] = ReportFormat.TEXT,
    force: Annotated[bool, Opt("--force", help="Replace an existing output bundle.")] = False,
    memory_deps: Annotated[bool, Opt("--memory-deps", help="Also order conflicting memory "
                                     "accesses (read-after-write, write-after-read, "
                                     "write-after-write on overlapping ranges).")] = False,
) -> None:
    """Replay a trace through the timing model: makespan, engine use, and (for a timed
    trace) how far the prediction is from what was observed."""
    from tracekit.replay.run import Mode, write_predicted

    if mode not in {m.value for m in Mode}:
        raise typer.BadParameter(f"{mode!r} is not one of model, observed",
                                 param_hint="--mode")
    if output is not None:
        _refuse_to_replace(output, force)
    if output is not None and output.resolve() == trace.resolve():
        raise typer.BadParameter("the output would replace the trace being replayed; choose "
                                 "another path", param_hint="--output")
    with _status("deriving dependencies and replaying"):
        report = api.replay(trace, machine, mode=mode, memory_deps=memory_deps)
    result, summary, correlation = report.result, report.summary, report.correlation
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    if output is not None:
        with _status(f"writing {output}"):
            write_predicted(result, output, overwrite=force)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(render.replay_to_dict(result, summary, correlation)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.replay_markdown(result, summary, correlation))
    else:
        render.print_replay(_stdout(), result, summary, correlation)


def _refuse_to_replace(output: Path, force: bool) -> None:
    """TraceExistsError when `output` exists and --force was not given."""
    if output.exists() and not force:
        raise TraceExistsError(f"{output}: already exists. Choose another path or pass "
                               f"--force to replace it.")


TimelineOpt = Annotated[TimelineChoice, Opt(
    "--timeline", help="auto: the trace's own timing when every instruction is timed, else "
                       "the model's prediction; observed: the trace's own timing; replayed: "
                       "the model's prediction.")]
MachineOpt = Annotated[str | None, Opt("--machine", "-m", help="Machine TOML file or built-in "
                                       "name (default: trn-like).", show_default=False)]


ReportFormatOpt = Annotated[ReportFormat, Opt("--format", "-f", help="Output format.")]


@app.command()
@handles_errors
def stalls(trace: TraceArg, machine: MachineOpt = None,
           timeline: TimelineOpt = TimelineChoice.AUTO,
           format: ReportFormatOpt = ReportFormat.TEXT) -> None:  # noqa: A002
    """Where the time went: every engine's cycles split into busy (by opcode), waiting (by the
    producer and edge that held it) and idle."""
    with _status("stalls"):
        report = api.stalls(trace, machine, timeline=timeline)
    _emit(report, format, {"stalls": report.stalls})


def _emit(report: api.Report, format: ReportFormat,  # noqa: A002
          tables: dict[str, pl.DataFrame]) -> None:
    """A report in the chosen format: JSON is the head and `tables` as records."""
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**report.head, **{key: render.records(frame)
                                                           for key, frame in tables.items()}}))
    elif format is ReportFormat.MD:
        sys.stdout.write(report.markdown())
    else:
        render.print_sections(_stdout(), report.title, report.facts, report.sections)


@app.command("critical-path")
@handles_errors
def critical_path_command(
    trace: TraceArg, machine: MachineOpt = None, timeline: TimelineOpt = TimelineChoice.AUTO,
    steps: Annotated[int, Opt(min=0, help="Longest steps to list in text output.")] = 15,
    near: Annotated[float, Opt(min=0.0, help="Near-critical: slack under this % of the "
                                             "makespan.")] = 1.0,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """What limits the runtime: the chain of instructions that decided the makespan, its
    composition by engine, opcode and layer, and how many instructions have no slack."""
    with _status("critical path"):
        report = api.critical_path(trace, machine, timeline=timeline, near_pct=near,
                                   steps=steps)
    path = report.path
    if format is ReportFormat.JSON:
        data = {**report.head, **render.critical_path_to_dict(path)}
        data["near_critical"] = {"threshold_pct": near,
                                 "instructions": render.records(report.near_critical)}
        sys.stdout.write(render.to_json(data))
    else:
        _emit(report, format, {})


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
    from tracekit.analysis.whatif import parse_scale, parse_set
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
    with _status("replaying twice"):
        report = api.whatif(trace, machine, scale=by_group, set=sets, mode=mode)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({
            **report.head, **render.whatif_head(str(trace), scale or [], set_ or [],
                                                report.result),
            "why": report.why, "engines": render.records(report.engines)}))
    elif format is ReportFormat.MD:
        sys.stdout.write(report.markdown())
    else:
        render.print_sections(_stdout(), report.title, report.facts, report.sections)


@app.command()
@handles_errors
def sensitivity(
    trace: TraceArg, machine: MachineOpt = None,
    top: Annotated[int, Opt(min=0, help="Rows to show in text and md output.")] = 15,
    mode: Annotated[str, Opt(help="model or observed durations.")] = "model",
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Which 10 % speed-up buys the most: every engine, opcode, layer and the DMA and HBM
    bandwidths made 10 % faster in turn, ranked by makespan gained; where a faster part makes
    the run longer, why (HBM contention, the critical path's move)."""
    from tracekit.replay.run import Mode

    if mode not in {m.value for m in Mode}:
        raise typer.BadParameter(f"{mode!r} is not one of model, observed", param_hint="--mode")
    with _status("replaying each change"):
        report = api.sensitivity(trace, machine, mode=mode)
    table = report.ranking
    head = [f for f in report.facts if f.key != "speedup"]  # the renderers add that line
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**render.facts_json(head), "speedup_pct": 10,
                                         "ranking": render.records(table)}))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.sensitivity_markdown(str(trace), 10, table, top, head))
    else:
        render.print_sensitivity(_stdout(), 10, table, top, head)


@app.command()
@handles_errors
def calibrate(
    traces: Annotated[list[Path], typer.Argument(help="Timed trace bundles to fit.",
                                                 show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Machine TOML file to write.",
                                show_default=False)],
    machine: MachineOpt = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing file.")] = False,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Fit the latency model to observed durations and write a machine file for replay. One
    instruction in five (by a fixed hash of its id) is held out of the fit and the fits are
    judged on those; a poor fit is a warning on stderr."""
    from tracekit.analysis.calibrate import calibrate as run_calibrate
    from tracekit.analysis.calibrate import machine_toml
    from tracekit.replay.machine import resolve_machine

    _refuse_to_replace(output, force)
    if not output.resolve().parent.is_dir():
        raise typer.BadParameter(f"{output.parent} is not a folder", param_hint="--output")
    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; give a file name such as "
                                 f"fitted.toml", param_hint="--output")
    with _status("fitting"):
        result = run_calibrate([_open(t, REPLAY_TABLES) for t in traces],
                               resolve_machine(machine))
    text = machine_toml(result.machine, f"fitted by tracekit calibrate to {len(traces)} "
                                        f"trace(s)")
    write_text_atomic(output, text)  # never a half-written machine file
    for warning in result.warnings:
        typer.echo(f"warning: {warning.message}", err=True)
    args = (result, str(output), [str(t) for t in traces])
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(render.calibration_to_dict(*args)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.calibration_markdown(*args))
    else:
        render.print_calibration(_stdout(), *args)


@app.command()
@handles_errors
def analyze(
    trace: TraceArg, machine: MachineOpt = None, timeline: TimelineOpt = TimelineChoice.AUTO,
    top: Annotated[int, Opt(min=0, help="Sensitivity rows to show.")] = 5,
    format: Annotated[ReportFormat, Opt("--format", "-f",  # noqa: A002
                                        help="Output format.")] = ReportFormat.TEXT,
) -> None:
    """One report: the engine figures (busy, HBM contention, waiting, idle, FLOP utilization,
    achieved bandwidth), stalls, the critical path, the top of the sensitivity ranking and the
    bug signatures found."""
    with _status("analysing"):
        report = api.analyze(trace, machine, timeline=timeline, top=top)
    tables = {"engines": report.engines, "array": report.array, "stalls": report.stalls,
              "critical_path_by_engine": report.path.by_engine,
              "critical_path_by_layer": report.path.by_layer,
              "sensitivity": report.sensitivity, "findings": report.findings}
    _emit(report, format, {key: frame for key, frame in tables.items() if frame is not None})


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
    from tracekit.analysis.signatures import Severity

    with _status("looking for bug signatures"):
        report = api.bugs(trace, machine)
    frame = report.findings
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**report.head, "findings": frame.to_dicts()}))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.findings_markdown(str(trace), frame, report.facts))
    else:
        render.print_facts(_stdout(), "bugs", report.facts)
        render.print_findings(_stdout(), frame)
    threshold = Severity(fail_on.value).rank
    if any(Severity(s).rank >= threshold for s in frame["severity"]):
        raise typer.Exit(EXIT_FINDING)


class DiffFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MD = "md"
    JUNIT = "junit"


@app.command("diff")
@handles_errors
def diff_command(
    base: Annotated[Path, typer.Argument(help="Base trace bundle (the reference run).",
                                         show_default=False)],
    cand: Annotated[Path, typer.Argument(help="Candidate trace bundle (the new run).",
                                         show_default=False)],
    machine: MachineOpt = None,
    threshold: Annotated[float, Opt("--threshold", min=0.0, help="Slowdown of the makespan, "
                                    "in percent, past which the diff exits 3.")] = 2.0,
    timeline: Annotated[TimelineChoice, Opt(
        "--timeline", help="auto: the traces' own timing when both are timed throughout, else "
                           "the model's prediction for both; observed; replayed.")]
    = TimelineChoice.AUTO,
    format: Annotated[DiffFormat, Opt("--format", "-f",  # noqa: A002
                                      help="Output format.")] = DiffFormat.TEXT,
    force: Annotated[bool, Opt("--force", help="Compare traces of different workloads.")]
    = False,
) -> None:
    """What changed between two runs of a workload: the makespan, per layer, engine and
    opcode, the makespan change attributed along the critical paths, the instructions that
    changed most and new or resolved findings. Exits 3 past --threshold."""
    from tracekit.analysis.diff import check_comparable, diff, profile
    from tracekit.analysis.timelines import choose_source
    from tracekit.replay.machine import resolve_machine

    if not math.isfinite(threshold):
        raise typer.BadParameter(f"{threshold} is not a finite percentage",
                                 param_hint="--threshold")
    chosen = resolve_machine(machine)
    traces = _open(base), _open(cand)
    check_comparable(*traces, force=force)  # before the expensive part
    source = choose_source(*traces, choice=timeline)
    with _status("profiling both runs"), progress.step("runs profiled", total=2) as done:
        profiles = []
        for t in traces:
            profiles.append(profile(t, chosen, source))
            done.advance()
        result = diff(*profiles, threshold_pct=threshold, force=force)
    timeline_head = render.timeline_facts(traces[0], chosen, source.value)
    head, sections = render.diff_sections(result, timeline_head)
    if format is DiffFormat.JSON:
        sys.stdout.write(render.to_json(render.diff_json(result, timeline_head)))
    elif format is DiffFormat.MD:
        sys.stdout.write(render.sections_markdown(f"Diff of {result.workload}", head,
                                                  sections))
    elif format is DiffFormat.JUNIT:
        sys.stdout.write(render.diff_junit(result))
    else:
        console = _stdout()
        console.print(Text(render.diff_verdict(result)))
        render.print_sections(console, "", head, sections)
    if result.regression:
        raise typer.Exit(EXIT_FINDING)


@app.command()
@handles_errors
def nightly(
    suite_file: Annotated[Path, typer.Argument(metavar="SUITE", help=(
        "Suite TOML file: one [[workloads]] table per workload with trace = \"PATH or GLOB\" "
        "(a bundle folder, or a glob of them; relative to the file) and optionally name, "
        "threshold_pct, baseline; at the top optionally name, machine, threshold_pct, "
        "baseline (\"last-pass\" or a run id), trend_runs, history."), show_default=False)],
    history: Annotated[Path | None, Opt("--history", help="History folder (default: the "
                                        "suite's history key, else ./tracekit-history).",
                                        show_default=False)] = None,
    scheduler: Annotated[str | None, Opt("--scheduler", help="Dask scheduler address "
                                         "(tcp://HOST:PORT); default: local processes.",
                                         show_default=False)] = None,
    workers: Annotated[int | None, Opt("--workers", min=1, help="Local worker processes "
                                       "(default: the CPU count, at most 8).",
                                       show_default=False)] = None,
    run_id: Annotated[str | None, Opt("--run-id", help="Name of this run in the history "
                                      "(default: the UTC time).", show_default=False)] = None,
    report: Annotated[Path | None, Opt("--report", help="Folder for summary.md and junit.xml "
                                       "(default: HISTORY/reports/RUN_ID).",
                                       show_default=False)] = None,
) -> None:
    """Run a suite of workloads (replay, analyze and bugs on each, in parallel), append the
    results to the history, compare each workload with its baseline and write a Markdown
    summary with a trend table and JUnit XML. Exits 3 on any regression, 1 when a workload
    could not run."""
    from tracekit.analysis.history import explain
    from tracekit.analysis.nightly import load_suite, trend
    from tracekit.analysis.nightly import nightly as run_nightly

    suite = load_suite(suite_file)
    folder = history or suite.history or Path("tracekit-history")
    if report is not None and report.exists() and not report.is_dir():
        raise typer.BadParameter(f"{report} is a file; --report needs a folder",
                                 param_hint="--report")
    with _status(f"running {len(suite.workloads)} workload(s)"):
        run = run_nightly(suite, folder, scheduler=scheduler, workers=workers, run_id=run_id)
    out = report or folder / "reports" / run.rows["run_id"][0]
    explained = explain(run)
    summary = render.nightly_markdown(run, trend(run), explained)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.md", summary)
    write_text_atomic(out / "junit.xml", render.nightly_junit(run, explained))
    sys.stdout.write(summary)
    typer.echo(f"\nhistory: {run.saved}\nreports: {out}", err=True)
    if run.regressions:
        raise typer.Exit(EXIT_FINDING)
    if run.errors:
        raise typer.Exit(EXIT_INPUT)


@app.command()
@handles_errors
def history(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="History folder of `tracekit "
                                           "nightly` (its --history).", show_default=False)],
    workload: Annotated[str | None, Opt("--workload", "-w", help="Show this workload's "
                                        "figures run by run.", show_default=False)] = None,
    suite: Annotated[str | None, Opt("--suite", help="Only the runs of this suite (a history "
                                     "can hold several).", show_default=False)] = None,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """The runs in a nightly history: id, start time, suite and workloads by status; with
    --workload, that workload's makespan and other figures in each run, with the change
    against the run before."""
    from tracekit.analysis.history import open_history, runs, workload_trend

    held = open_history(folder)
    if workload is None:
        title, table, cols = f"History {folder}", runs(held, suite), render.HISTORY_RUN_COLS
    else:
        title, cols = f"Trend of {workload} in {folder}", render.HISTORY_TREND_COLS
        table = workload_trend(held, workload, suite)
    head = {"history": str(folder), "workload": workload, "suite": suite}
    head = {k: v for k, v in head.items() if v is not None}
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**head, "runs": render.records(table)}))
        return
    shown, shown_cols = render.history_table(table, cols)
    if format is ReportFormat.MD:
        facts = [render.fact(key, value) for key, value in {**head, "runs": table.height}.items()]
        sys.stdout.write(render.sections_markdown(title, facts, [
            ("Runs, oldest first", shown, shown_cols)]))
    else:
        render.print_table(_stdout(), f"{title} ({table.height} run(s), oldest first)",
                           shown, shown_cols)


@app.command()
@handles_errors
def machines(format: ReportFormatOpt = ReportFormat.TEXT) -> None:  # noqa: A002
    """List the machine descriptions built into tracekit."""
    from tracekit.replay.machine import BUILTIN, builtin_machines

    found = builtin_machines()
    listed = [{"name": name, "default": name == BUILTIN, "description": text}
              for name, text in found.items()]
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(listed))
        return
    if format is ReportFormat.MD:
        sys.stdout.write(render.sections_markdown("Built-in machines", {"default": BUILTIN}, [
            ("Machines", pl.DataFrame([{**m, "default": "yes" if m["default"] else ""}
                                       for m in listed]),
             {"name": "", "default": "", "description": ""})]))
        return
    for name, text in found.items():
        mark = " (default)" if name == BUILTIN else ""
        typer.echo(f"{name}{mark}: {text}")


from tracekit.workloads.params import WORKLOADS, param_help  # noqa: E402 (generate's help)


@app.command()
@handles_errors
def generate(
    workload: Annotated[str, typer.Argument(
        help=f"One of {', '.join(WORKLOADS)}.", show_default=False)],
    output: Annotated[Path | None, Opt("--output", "-o", help="Bundle folder to write "
                                       "(required unless --dry-run).",
                                       show_default=False)] = None,
    m: Annotated[int | None, Opt(help=param_help("m"), show_default=False)] = None,
    n: Annotated[int | None, Opt(help=param_help("n"), show_default=False)] = None,
    k: Annotated[int | None, Opt(help=param_help("k"), show_default=False)] = None,
    widths: Annotated[str | None, Opt(help=param_help("widths"), show_default=False)] = None,
    batch: Annotated[int | None, Opt(help=param_help("batch"), show_default=False)] = None,
    activation: Annotated[str | None, Opt(help=param_help("activation"),
                                          show_default=False)] = None,
    seq: Annotated[int | None, Opt(help=param_help("seq"), show_default=False)] = None,
    heads: Annotated[int | None, Opt(help=param_help("heads"), show_default=False)] = None,
    head_dim: Annotated[int | None, Opt(help=param_help("head_dim"),
                                        show_default=False)] = None,
    c: Annotated[int | None, Opt(help=param_help("c"), show_default=False)] = None,
    h: Annotated[int | None, Opt(help=param_help("h"), show_default=False)] = None,
    w: Annotated[int | None, Opt(help=param_help("w"), show_default=False)] = None,
    filters: Annotated[int | None, Opt(help=param_help("filters"), show_default=False)] = None,
    r: Annotated[int | None, Opt(help=param_help("r"), show_default=False)] = None,
    s: Annotated[int | None, Opt(help=param_help("s"), show_default=False)] = None,
    stride: Annotated[int | None, Opt(help=param_help("stride"), show_default=False)] = None,
    rows: Annotated[int | None, Opt(help=param_help("rows"), show_default=False)] = None,
    hidden: Annotated[int | None, Opt(help=param_help("hidden"), show_default=False)] = None,
    tile_m: Annotated[int, Opt(help="Tile rows (<= 128).")] = 128,
    tile_n: Annotated[int, Opt(help="Tile columns (<= 512).")] = 512,
    tile_k: Annotated[int, Opt(help="Tile depth (<= 128).")] = 128,
    dma_queues: Annotated[int, Opt(help="Number of DMA queues.")] = 4,
    double_buffer: Annotated[bool, Opt("--double-buffer/--no-double-buffer",
                                       help="Double-buffer SBUF tiles.")] = True,
    layer: Annotated[str | None, Opt(help="Layer name (prefix) for attribution.")] = None,
    seed: Annotated[int, Opt(help="Seed of the timing jitter and of fault placement.")] = 0,
    untimed: Annotated[bool, Opt("--untimed", help="Functional trace: no start/end.")] = False,
    inject: Annotated[list[str] | None, Opt(
        help="Fault to inject (repeatable): missing-wait, deadlock, sem-leak, slow-queue, "
             "stuck-engine, timestamp-skew, oob.")] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing bundle.")] = False,
    dry_run: Annotated[bool, Opt("--dry-run", help="Check the options and print the shape and "
                                 "the number of instructions, counted without generating "
                                 "them; write nothing (where faults land is only decided "
                                 "when generating).")] = False,
) -> None:
    """Generate a workload's trace with the reference functional model and timing. Parameters
    a workload takes and that are not given take their defaults; the line printed names
    every value used."""
    from tracekit.workloads.generate import generate as generate_bundle
    from tracekit.workloads.generate import plan
    from tracekit.workloads.lowering import Tiling
    from tracekit.workloads.params import option

    given = {"m": m, "n": n, "k": k, "batch": batch, "activation": activation, "seq": seq,
             "heads": heads, "head_dim": head_dim, "c": c, "h": h, "w": w,
             "filters": filters, "r": r, "s": s, "stride": stride, "rows": rows,
             "hidden": hidden}
    params = {key: value for key, value in given.items() if value is not None}
    if widths is not None:
        try:
            params["widths"] = tuple(int(x) for x in widths.split(","))
        except ValueError:
            raise typer.BadParameter(f"{widths!r} is not a comma-separated list of integers",
                                     param_hint="--widths") from None
    if output is None and not dry_run:
        raise typer.BadParameter("give the bundle folder to write (or --dry-run to write "
                                 "nothing)", param_hint="'--output' / '-o'")
    tiling = Tiling(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, dma_queues=dma_queues,
                    double_buffer=double_buffer)
    planned = plan(workload, params=params, tiling=tiling, untimed=untimed,
                   inject=inject or [], spell=option)
    if output is not None:
        _refuse_to_replace(output, force)  # before generating what may take minutes
    if dry_run:
        where = f"write {output}:" if output is not None else "generate"
        typer.echo(f"would {where} {planned.instructions:,} instructions "
                   f"({planned.describe()}); nothing written")
        return
    trace = generate_bundle(workload, output, params=params, tiling=tiling, seed=seed,
                            untimed=untimed, inject=inject or [], layer=layer, overwrite=force)
    rows_written = trace.manifest.tables["instructions"].rows
    typer.echo(f"wrote {trace.path}: {rows_written:,} instructions ({planned.describe()})")


@export_app.command("perfetto")
@handles_errors
def export_perfetto(
    trace: TraceArg,
    output: Annotated[Path, Opt("--output", "-o", help="Chrome trace JSON file to write (a "
                                "name ending in .gz is compressed).", show_default=False)],
    with_replay: Annotated[bool, Opt("--replay", help="Also replay the trace through the "
                                     "timing model: the predicted timeline as a second "
                                     "process beside the observed one.")] = False,
    critical_path: Annotated[bool, Opt("--critical-path", help="Flow arrows along each "
                                       "timeline's critical path.")] = False,
    from_cycle: Annotated[int | None, Opt("--from", help="Export only the instructions that "
                                          "overlap [FROM, TO) (cycles).",
                                          show_default=False)] = None,
    to_cycle: Annotated[int | None, Opt("--to", help="End of the window (cycles, "
                                        "exclusive).", show_default=False)] = None,
    max_events: Annotated[int | None, Opt("--max-events", min=1, help="Keep the events "
                                          "before the cycle where their count would pass N.",
                                          show_default=False)] = None,
    machine: MachineOpt = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing file.")] = False,
) -> None:
    """Chrome trace event JSON for the Perfetto UI and chrome://tracing: a track per engine,
    a slice per instruction, DMA bandwidth counters, the critical path as flow arrows. Times
    are cycles (1 us on the viewer's ruler = 1 cycle)."""
    from tracekit.convert.perfetto import export_perfetto as run_export
    from tracekit.replay.machine import resolve_machine

    _refuse_to_replace(output, force)
    with _status(f"writing {output}"):
        result = run_export(_open(trace), output, machine=resolve_machine(machine),
                            replay=with_replay, critical_path=critical_path, start=from_cycle,
                            end=to_cycle, max_events=max_events)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {output}: {result.events:,} events ({result.slices:,} slices, "
               f"{result.flows:,} flow events, {result.counters:,} counter events; "
               f"timelines: {', '.join(result.timelines)})")


@convert_app.command("chrome")
@handles_errors
def convert_chrome(
    source: Annotated[Path, typer.Argument(help="Chrome trace event JSON file (.json or "
                                           ".json.gz).", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Bundle folder to write.",
                                show_default=False)],
    cycles_per_us: Annotated[float | None, Opt(
        "--cycles-per-us", help="Cycles per microsecond of ts (default 1000, i.e. 1 GHz; "
        "tracekit's own exports: exact cycles).", show_default=False)] = None,
    nesting: Annotated[str, Opt(help="Slices nested on one thread: depth (each depth its own "
                                     "engine), top (outermost only) or leaf (innermost "
                                     "only).")] = "depth",
    workload: Annotated[str | None, Opt(help="Workload name for the manifest (default: from "
                                        "the file).", show_default=False)] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing bundle.")] = False,
) -> None:
    """Import Chrome trace event JSON (PyTorch profiler, simulators, `tracekit export
    perfetto`): slices become instructions, threads engines, flow events dependencies."""
    from tracekit.convert.chrome import Nesting
    from tracekit.convert.chrome import convert_chrome as run_convert

    if nesting not in {n.value for n in Nesting}:
        raise typer.BadParameter(f"{nesting!r} is not one of depth, top, leaf",
                                 param_hint="--nesting")
    _refuse_to_replace(output, force)  # before reading what may be a large file
    with _status(f"importing {source}"):
        trace, notes = run_convert(source, output, cycles_per_us=cycles_per_us,
                                   nesting=Nesting(nesting), workload=workload,
                                   overwrite=force)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    tables = trace.manifest.tables
    deps = tables["deps"].rows if "deps" in tables else 0
    typer.echo(f"wrote {trace.path}: {tables['instructions'].rows:,} instructions, {deps:,} "
               f"dependencies ({trace.manifest.workload})")


@convert_app.command("scalesim")
@handles_errors
def convert_scalesim(
    run: Annotated[Path, typer.Argument(help="SCALE-Sim run folder (holds COMPUTE_REPORT.csv "
                                        "and layer0/).", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Bundle folder to write.",
                                show_default=False)],
    machine_out: Annotated[Path | None, Opt(
        "--machine-out", help="Machine TOML to write (default: OUTPUT.machine.toml beside "
        "the bundle).", show_default=False)] = None,
    config: Annotated[Path | None, Opt(
        "--config", help="The run's .cfg (default: RUN_NAME.cfg in the run folder, its "
        "inputs/ or ../inputs/).", show_default=False)] = None,
    topology: Annotated[Path | None, Opt(
        "--topology", help="The run's GEMM topology .csv (default: found like the config).",
        show_default=False)] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing bundle and machine "
                                               "file.")] = False,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Import a SCALE-Sim run: array steps become instructions, DRAM reads and writes DMA
    transfers, SRAM and DRAM addresses memory rows; its config becomes a machine description
    for `tracekit replay OUTPUT --machine OUTPUT.machine.toml --mode model`."""
    from tracekit.convert.scalesim import import_scalesim

    with _status(f"importing {run}"):
        imported, machine_path = import_scalesim(run, output, machine_out=machine_out,
                                                 config=config, topology=topology,
                                                 overwrite=force)
    tables = imported.trace.manifest.tables
    layers = pl.DataFrame([{
        "layer": s.layer.name, "steps": s.steps, "stall_cycles": s.stall_cycles,
        "reported_stall_cycles": s.report.stall_cycles,
        "total_cycles_incl_prefetch": s.total_cycles_incl_prefetch,
        "reported_total_cycles_incl_prefetch": s.report.total_cycles_incl_prefetch,
        "compute_util_pct": s.compute_util_pct,
        "reported_compute_util_pct": s.report.compute_util_pct} for s in imported.layers])
    head = {"trace": str(imported.trace.path), "machine": str(machine_path),
            "instructions": tables["instructions"].rows, "deps": tables["deps"].rows,
            "memory": tables["memory"].rows}
    layer_cols = {"layer": "", "steps": ",", "stall_cycles": ",", "reported_stall_cycles": ",",
                  "total_cycles_incl_prefetch": ",", "reported_total_cycles_incl_prefetch": ",",
                  "compute_util_pct": ".2f", "reported_compute_util_pct": ".2f"}
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**head, "layers": render.records(layers)}))
        return
    if format is ReportFormat.MD:
        sys.stdout.write(render.sections_markdown(
            f"SCALE-Sim run {imported.config.run_name}", head,
            [("Layers (found in the traces, and as SCALE-Sim reported)", layers, layer_cols)]))
        return
    typer.echo(f"wrote {imported.trace.path}: {tables['instructions'].rows:,} instructions, "
               f"{tables['deps'].rows:,} dependencies, {tables['memory'].rows:,} memory "
               f"ranges ({imported.config.run_name})")
    typer.echo(f"wrote {machine_path}: replay with `tracekit replay {imported.trace.path} "
               f"--machine {machine_path} --mode model`")
    render.print_table(_stdout(), "\nlayers (found in the traces, and as SCALE-Sim reported)",
                       layers, layer_cols)


def main() -> None:
    """Entry point of the `tracekit` script and `python -m tracekit`."""
    app()
