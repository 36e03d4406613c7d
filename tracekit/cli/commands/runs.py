"""The commands across runs: diff, nightly and history."""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tracekit import progress
from tracekit.cli.app import (
    EXIT_FINDING,
    EXIT_INPUT,
    MachineOpt,
    Opt,
    ReportFormat,
    ReportFormatOpt,
    app,
    handles_errors,
    open_bundle,
    status,
    stdout_console,
)
from tracekit.options import TimelineChoice


class DiffFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MD = "md"
    JUNIT = "junit"
    HTML = "html"


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
    output: Annotated[Path | None, Opt("--output", "-o", help="HTML file to write (with "
                                       "--format html).", show_default=False)] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace an existing --output "
                                   "file.")] = False,
) -> None:
    """What changed between two runs of a workload: the makespan, per layer, engine and
    opcode, the makespan change attributed along the critical paths, the instructions that
    changed most and new or resolved findings. Exits 3 past --threshold. --format html -o
    FILE writes a page of figures: both timelines aligned, the change as a waterfall by
    engine and layer, the stall causes that moved, new and resolved findings."""
    from tracekit.analysis.diff import check_comparable, diff, profile
    from tracekit.analysis.timelines import choose_source
    from tracekit.cli import render
    from tracekit.cli.render.base import Text
    from tracekit.replay.machine import resolve_machine

    if not math.isfinite(threshold):
        raise typer.BadParameter(f"{threshold} is not a finite percentage",
                                 param_hint="--threshold")
    if (format is DiffFormat.HTML) != (output is not None):
        raise typer.BadParameter("--format html writes a file: give both --format html and "
                                 "-o FILE (the other formats print to stdout)",
                                 param_hint="--output")
    if output is not None:
        from tracekit.cli.commands.report import check_output

        check_output(output, overwrite)
        _diff_page(base, cand, output, machine, timeline, threshold, force)
        return
    chosen = resolve_machine(machine)
    traces = open_bundle(base), open_bundle(cand)
    check_comparable(*traces, force=force)  # before the expensive part
    source = choose_source(*traces, choice=timeline)
    with status("profiling both runs"), progress.step("runs profiled", total=2) as done:
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
        console = stdout_console()
        console.print(Text(render.diff_verdict(result)))
        render.print_sections(console, "", head, sections)
    if result.regression:
        raise typer.Exit(EXIT_FINDING)


def _diff_page(base: Path, cand: Path, output: Path, machine: str | None,
               timeline: TimelineChoice, threshold: float, force: bool) -> None:
    """`diff --format html -o FILE`: the page, then exit 3 past the threshold."""
    from tracekit.cli import render
    from tracekit.report.render import page_html
    from tracekit.report.runs import diff_page
    from tracekit.trace.bundle import write_text_atomic

    with status("profiling both runs"):
        page, result = diff_page(base, cand, machine, timeline=timeline,
                                 threshold_pct=threshold, force=force, machine_arg=machine)
        text = page_html(page)
    write_text_atomic(output, text)
    typer.echo(f"{render.diff_verdict(result)}\nwrote {output}: "
               f"{len(text.encode('utf-8')):,} bytes", err=True)
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
    report: Annotated[Path | None, Opt("--report", help="Folder for summary.md, junit.xml, "
                                       "index.html and the regressions' diff pages "
                                       "(default: HISTORY/reports/RUN_ID).",
                                       show_default=False)] = None,
) -> None:
    """Run a suite of workloads (replay, analyze and bugs on each, in parallel), append the
    results to the history, compare each workload with its baseline and write a Markdown
    summary with a trend table, JUnit XML and index.html (each workload's makespan over the
    history, regressions marked and linked to their diff-NAME.html pages). Exits 3 on any regression, 1 when a workload
    could not run."""
    from tracekit.analysis.history import explain
    from tracekit.analysis.nightly import check_writable, load_suite, trend
    from tracekit.analysis.nightly import nightly as run_nightly
    from tracekit.cli import render
    from tracekit.report.render import page_html
    from tracekit.report.runs import nightly_pages
    from tracekit.trace.bundle import write_text_atomic

    suite = load_suite(suite_file)
    folder = history or suite.history or Path("tracekit-history")
    if report is not None and report.exists() and not report.is_dir():
        raise typer.BadParameter(f"{report} is a file; --report needs a folder",
                                 param_hint="--report")
    # Both folders are checked before any workload runs, so no result is lost at the end.
    check_writable(report if report is not None else folder / "reports", "reports")
    with status(f"running {len(suite.workloads)} workload(s)"):
        run = run_nightly(suite, folder, scheduler=scheduler, workers=workers, run_id=run_id)
    for note in run.notes:
        typer.echo(f"warning: {render.printable(note)}", err=True)
    out = report or folder / "reports" / run.rows["run_id"][0]
    explained = explain(run)
    summary = render.nightly_markdown(run, trend(run), explained)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.md", summary)
    write_text_atomic(out / "junit.xml", render.nightly_junit(run, explained))
    with status("writing index.html and the regressions' diff pages"):
        for name, page in nightly_pages(run).items():
            write_text_atomic(out / name, page_html(page))
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
    from tracekit.cli import render

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
        render.print_table(stdout_console(), f"{title} ({table.height} run(s), oldest first)",
                           shown, shown_cols)
