"""The design-space sweep command: a grid of machine parameters and duration factors replayed
point by point, in parallel, into a Parquet table and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracekit.cli.app import (
    MachineOpt,
    Opt,
    ReportFormat,
    ReportFormatOpt,
    TraceArg,
    app,
    emit,
    handles_errors,
    refuse_to_replace,
    status,
)


@app.command()
@handles_errors
def sweep(
    trace: TraceArg,
    output: Annotated[Path, Opt("--output", "-o", help="Parquet file to write: one row per "
                                "point (point, one column per axis, makespan, busy_<engine>, "
                                "contention, binding_engine, cost).", show_default=False)],
    grid: Annotated[list[str] | None, Opt(
        "--grid", help="An axis and its values (repeatable): NAME=V1,V2,... for hbm_bandwidth, "
                       "dma_bandwidth (bytes/cycle), semaphore_latency, data_latency (cycles); "
                       "GROUP=NAME:F1,F2,... for the duration factors of an engine, opcode or "
                       "layer (engine=tensor:1,0.5; 0.5 twice as fast).",
        show_default=False)] = None,
    grid_file: Annotated[Path | None, Opt(
        "--grid-file", help="TOML file: [axes] NAME = [values] (\"engine=tensor\" = [1, 0.5]) "
                            "and optionally [cost] NAME = [a weight per value]; a point's "
                            "cost is the sum of its values' weights.", show_default=False)]
    = None,
    samples: Annotated[int | None, Opt("--samples", min=1, help="Replay this many points "
                                       "drawn at random from the grid (default: all).",
                                       show_default=False)] = None,
    seed: Annotated[int, Opt("--seed", min=0, help="Seed of --samples (the same seed, the "
                             "same points).")] = 0,
    machine: MachineOpt = None,
    mode: Annotated[str, Opt(help="model or observed durations.")] = "model",
    cost: Annotated[str | None, Opt(
        "--cost", help="The cost of the Pareto front: a column, or a SQL expression over the "
                       "columns (quote names such as \"engine=tensor\"); default: the grid "
                       "file's weights.", show_default=False)] = None,
    scheduler: Annotated[str | None, Opt("--scheduler", help="Dask scheduler address "
                                         "(tcp://HOST:PORT); default: local processes.",
                                         show_default=False)] = None,
    workers: Annotated[int | None, Opt("--workers", min=1, help="Local worker processes "
                                       "(default: the CPU count, at most 8; 1: in this "
                                       "process), or batches on the Dask cluster (default: "
                                       "its threads).", show_default=False)] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing output file.")] = False,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Design-space exploration: replay every point of a grid of machine parameters and
    duration factors (or a seeded sample of it) on one derived graph, in parallel, write one
    row per point as Parquet and report the best points, the Pareto front over (makespan,
    cost) and the axis whose values move the makespan most."""
    from tracekit import api
    from tracekit.analysis.sweep import check_output

    refuse_to_replace(output, force)
    check_output(output, force)
    if not grid and grid_file is None:
        raise typer.BadParameter("give at least one --grid NAME=VALUES or a --grid-file",
                                 param_hint="--grid")
    with status("sweeping"):
        report = api.sweep(trace, grid or [], machine, grid_file=grid_file, mode=mode,
                           samples=samples, seed=seed, cost=cost, scheduler=scheduler,
                           workers=workers, output=output, overwrite=force)
    front = report.front
    tables = {"best": report.best, **({"pareto_front": front} if front is not None else {}),
              "axes": report.influence}
    emit(report, format, tables)
