"""Exchange with other tools: export to Perfetto, import Chrome traces, SCALE-Sim runs and
Neuron Explorer device profiles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tracekit.cli.app import (
    MachineOpt,
    Opt,
    ReportFormat,
    ReportFormatOpt,
    TraceArg,
    convert_app,
    export_app,
    handles_errors,
    open_bundle,
    refuse_to_replace,
    status,
    stdout_console,
)
from tracekit.options import DEFAULT_LINK_TOLERANCE_NS


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
    from tracekit.cli import render
    from tracekit.convert.perfetto import export_perfetto as run_export
    from tracekit.replay.machine import resolve_machine

    refuse_to_replace(output, force)
    with status(f"writing {output}"):
        result = run_export(open_bundle(trace), output, machine=resolve_machine(machine),
                            replay=with_replay, critical_path=critical_path, start=from_cycle,
                            end=to_cycle, max_events=max_events)
    for warning in result.warnings:
        typer.echo(f"warning: {render.printable(warning)}", err=True)
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
    profile: Annotated[str, Opt(help="The producer's conventions: auto (the PyTorch "
                                     "profiler's when the file's metadata says so), kineto "
                                     "or generic.")] = "auto",
    max_depth: Annotated[int, Opt("--max-depth", help="Refuse JSON nested deeper than this "
                                  "(levels of arrays and objects; at most 500).")] = 64,
    max_bytes: Annotated[str | None, Opt(
        "--max-bytes", help="Refuse a file whose JSON (after decompression) is larger, e.g. "
        "8G or 500M (default: half the machine's memory, at most 64G).",
        show_default=False)] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing bundle.")] = False,
) -> None:
    """Import Chrome trace event JSON (PyTorch profiler, simulators, `tracekit export
    perfetto`): slices become instructions, threads engines, flow events dependencies."""
    from tracekit.cli import render
    from tracekit.convert.chrome import Nesting
    from tracekit.convert.chrome import convert_chrome as run_convert
    from tracekit.convert.jsonstream import parse_size
    from tracekit.convert.kineto import Profile

    if nesting not in {n.value for n in Nesting}:
        raise typer.BadParameter(f"{nesting!r} is not one of depth, top, leaf",
                                 param_hint="--nesting")
    if profile not in {p.value for p in Profile}:
        raise typer.BadParameter(f"{profile!r} is not one of auto, kineto, generic",
                                 param_hint="--profile")
    limit = parse_size(max_bytes) if max_bytes is not None else None
    refuse_to_replace(output, force)  # before reading what may be a large file
    with status(f"importing {source}"):
        trace, notes = run_convert(source, output, cycles_per_us=cycles_per_us,
                                   nesting=Nesting(nesting), workload=workload,
                                   overwrite=force, profile=Profile(profile),
                                   max_depth=max_depth, max_bytes=limit)
    for note in notes:
        typer.echo(f"note: {render.printable(note)}", err=True)
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
    import polars as pl

    from tracekit.cli import render
    from tracekit.convert.scalesim import import_scalesim

    with status(f"importing {run}"):
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
    render.print_table(stdout_console(), "\nlayers (found in the traces, and as SCALE-Sim reported)",
                       layers, layer_cols)


@convert_app.command("neuron-explorer")
@handles_errors
def convert_neuron_explorer(
    profile: Annotated[Path, typer.Argument(help="Profile folder: the Parquet tables "
                                            "`neuron-explorer view` wrote (Metadata.parquet, "
                                            "Instruction.parquet, ...).", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Bundle folder to write.",
                                show_default=False)],
    execution: Annotated[int | None, Opt(
        "--execution", min=0, help="The execution to import (ExecutionInfo's "
        "execution_index); needed when the profile holds several, one bundle each.",
        show_default=False)] = None,
    machine_out: Annotated[Path | None, Opt(
        "--machine-out", help="Also write a machine description from the profile's Metadata "
        "(clock, tensor array, HBM and DMA bandwidths), for `tracekit replay --machine`.",
        show_default=False)] = None,
    link_tolerance: Annotated[int, Opt(
        "--link-tolerance", min=0, metavar="NS", help="How far (ns) a semaphore update may "
        "lie from the instruction it is linked to.")] = DEFAULT_LINK_TOLERANCE_NS,
    force: Annotated[bool, Opt("--force", help="Replace an existing bundle and machine "
                                               "file.")] = False,
    format: ReportFormatOpt = ReportFormat.TEXT,  # noqa: A002
) -> None:
    """Import a Neuron Explorer device profile (schema 7.x): Instruction rows become
    instructions, DMA transfers instructions on a dma.QUEUE engine each, Flow rows dependencies,
    SemaphoreUpdate rows signals linked by time, operand conditions waits; prints what was
    reconstructed and what was dropped, and why."""
    from tracekit.cli import render
    from tracekit.convert.neuron_explorer import convert

    refuse_to_replace(output, force)
    with status(f"importing {profile}"):
        report = convert(profile, output, execution=execution, machine_out=machine_out,
                         link_tolerance_ns=link_tolerance, overwrite=force)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(render.neuron_import_json(report)))
        return
    head, sections = render.neuron_import_parts(report)
    if format is ReportFormat.MD:
        sys.stdout.write(render.sections_markdown(render.NEURON_TITLE, head, sections))
        return
    typer.echo(f"wrote {output}: {report.total_instructions:,} instructions, "
               f"{report.total_edges:,} dependencies, {report.total_semaphore_rows:,} "
               f"semaphore operations, {report.total_memory_rows:,} memory ranges")
    if machine_out is not None:
        typer.echo(f"wrote {machine_out}: replay with `tracekit replay {output} --machine "
                   f"{machine_out}`")
    render.print_sections(stdout_console(), render.NEURON_TITLE, head, sections)
