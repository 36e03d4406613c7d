"""`tracekit report`: one self-contained HTML page of figures of a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracekit.cli.app import (
    EXIT_FINDING,
    MachineOpt,
    Opt,
    TimelineOpt,
    TraceArg,
    app,
    handles_errors,
    refuse_to_replace,
    status,
)
from tracekit.options import MAX_BARS, TimelineChoice

MaxBarsOpt = Annotated[int, Opt("--max-bars", min=1, help="Instructions drawn one by one in "
                                "the engine timeline; past that, each lane's busy cycles per "
                                "bin.")]


def check_output(output: Path, force: bool) -> None:
    """Refuse an output that exists (without --force), is a folder or has no folder."""
    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; give a file name such as "
                                 f"report.html", param_hint="--output")
    refuse_to_replace(output, force)
    if not output.resolve().parent.is_dir():
        raise typer.BadParameter(f"{output.parent} is not a folder", param_hint="--output")


@app.command()
@handles_errors
def report(
    trace: TraceArg,
    output: Annotated[Path, Opt("--output", "-o", help="HTML file to write.",
                                show_default=False)],
    machine: MachineOpt = None,
    timeline: TimelineOpt = TimelineChoice.AUTO,
    from_cycle: Annotated[int | None, Opt("--from", help="Draw the engine timeline's "
                                          "instructions that overlap [FROM, TO) one by one, "
                                          "in machine cycles of the timeline shown (the "
                                          "page's axis; not the trace's stored units that "
                                          "analyze's --from takes).",
                                          show_default=False)] = None,
    to_cycle: Annotated[int | None, Opt("--to", help="End of the window (cycles, "
                                        "exclusive).", show_default=False)] = None,
    max_bars: MaxBarsOpt = MAX_BARS,
    force: Annotated[bool, Opt("--force", help="Replace an existing file.")] = False,
) -> None:
    """One HTML page of figures that opens offline: the engine timeline with the critical
    path, utilization and DMA and HBM bandwidth over time, stalls per engine, the critical
    path by engine and layer, top opcodes, model against observed and the bug findings, each
    with the command whose JSON holds its numbers."""
    from tracekit.report.pages import trace_page
    from tracekit.report.render import page_html
    from tracekit.trace.bundle import write_text_atomic

    check_output(output, force)
    with status("building the report"):
        page = trace_page(trace, machine, timeline=timeline, start=from_cycle, end=to_cycle,
                          max_bars=max_bars, machine_arg=machine)
        text = page_html(page)
    write_text_atomic(output, text)  # never a half-written page
    typer.echo(f"wrote {output}: {len(text.encode('utf-8')):,} bytes, "
               f"{len(page.figures)} figures", err=True)
    if page.stuck is not None:  # as analyze exits on a run that cannot finish
        typer.echo(f"error: {page.stuck} The page shows the trace as recorded and the "
                   f"findings.", err=True)
        raise typer.Exit(EXIT_FINDING)
