"""The commands on machines and workloads: the built-in machines, and generating traces."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tracekit.cli.app import (
    Opt,
    ReportFormat,
    ReportFormatOpt,
    app,
    compiles_told,
    handles_errors,
    refuse_to_replace,
)


@app.command()
@handles_errors
def machines(format: ReportFormatOpt = ReportFormat.TEXT) -> None:  # noqa: A002
    """List the machine descriptions built into tracekit."""
    import polars as pl

    from tracekit.cli import render
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
        refuse_to_replace(output, force)  # before generating what may take minutes
    if dry_run:
        where = f"write {output}:" if output is not None else "generate"
        typer.echo(f"would {where} {planned.instructions:,} instructions "
                   f"({planned.describe()}); nothing written")
        return
    with compiles_told():
        trace = generate_bundle(workload, output, params=params, tiling=tiling, seed=seed,
                                untimed=untimed, inject=inject or [], layer=layer,
                                overwrite=force)
    rows_written = trace.manifest.tables["instructions"].rows
    typer.echo(f"wrote {trace.path}: {rows_written:,} instructions ({planned.describe()})")
