"""The `tracekit` command line: thin Typer commands over the library. Library errors become exit
codes here and only here: 0 ok, 1 error in input or use, 2 usage, 3 regression or finding.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

import tracekit
from tracekit.cli import render
from tracekit.errors import TracekitError
from tracekit.trace.bundle import open_trace
from tracekit.trace.summary import summarize
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


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


P = ParamSpec("P")
R = TypeVar("R")


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn tracekit's errors into a one-line message on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except TracekitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tracekit {tracekit.__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """tracekit: traces of ML accelerators, validated, replayed and mined."""


TraceArg = Annotated[Path, typer.Argument(help="Trace bundle folder (holds manifest.json).",
                                          show_default=False)]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


@app.command()
@handles_errors
def validate(
    trace: TraceArg,
    format: FormatOpt = Format.TEXT,  # noqa: A002
    strict: Annotated[bool, typer.Option("--strict",
                                         help="Treat warnings as errors.")] = False,
) -> None:
    """Check a bundle against every rule of the schema; exit 1 when it breaks one."""
    report = validate_bundle(trace)
    if format is Format.JSON:
        sys.stdout.write(render.to_json(report.to_dict(strict)))
    else:
        render.print_validation(_stdout(), report, strict)
    if not report.ok(strict):
        raise typer.Exit(EXIT_INPUT)


@app.command()
@handles_errors
def info(trace: TraceArg, format: FormatOpt = Format.TEXT) -> None:  # noqa: A002
    """Show what a bundle holds: producer, instructions per engine and opcode, time span."""
    summary = summarize(open_trace(trace))
    if format is Format.JSON:
        sys.stdout.write(render.to_json(summary.to_dict()))
    else:
        render.print_summary(_stdout(), summary)


Opt = typer.Option


@app.command()
@handles_errors
def generate(
    workload: Annotated[str, typer.Argument(
        help="gemm, mlp, attention, conv2d or layernorm.", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="Bundle folder to write.",
                                show_default=False)],
    m: Annotated[int | None, Opt(help="gemm: rows of A and C.")] = None,
    n: Annotated[int | None, Opt(help="gemm: columns of B and C; conv2d: batch.")] = None,
    k: Annotated[int | None, Opt(help="gemm: inner dimension; conv2d: filters.")] = None,
    widths: Annotated[str | None, Opt(help="mlp: layer widths, e.g. 512,1024,256.")] = None,
    batch: Annotated[int | None, Opt(help="mlp: rows per layer.")] = None,
    activation: Annotated[str | None, Opt(help="mlp: relu, gelu, silu or tanh.")] = None,
    seq: Annotated[int | None, Opt(help="attention: sequence length.")] = None,
    heads: Annotated[int | None, Opt(help="attention: heads.")] = None,
    head_dim: Annotated[int | None, Opt(help="attention: head dimension.")] = None,
    c: Annotated[int | None, Opt(help="conv2d: input channels.")] = None,
    h: Annotated[int | None, Opt(help="conv2d: image height.")] = None,
    w: Annotated[int | None, Opt(help="conv2d: image width.")] = None,
    r: Annotated[int | None, Opt(help="conv2d: kernel height.")] = None,
    s: Annotated[int | None, Opt(help="conv2d: kernel width.")] = None,
    stride: Annotated[int | None, Opt(help="conv2d: stride.")] = None,
    rows: Annotated[int | None, Opt(help="layernorm: rows.")] = None,
    hidden: Annotated[int | None, Opt(help="layernorm: hidden size.")] = None,
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
) -> None:
    """Generate a workload's trace with the reference functional model and timing."""
    from tracekit.workloads.generate import generate as generate_bundle
    from tracekit.workloads.lowering import Tiling

    given = {"m": m, "n": n, "k": k, "batch": batch, "activation": activation, "seq": seq,
             "heads": heads, "head_dim": head_dim, "c": c, "h": h, "w": w, "r": r, "s": s,
             "stride": stride, "rows": rows, "hidden": hidden}
    params = {key: value for key, value in given.items() if value is not None}
    if widths is not None:
        try:
            params["widths"] = tuple(int(x) for x in widths.split(","))
        except ValueError:
            raise typer.BadParameter(f"{widths!r} is not a comma-separated list of integers",
                                     param_hint="--widths") from None
    tiling = Tiling(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, dma_queues=dma_queues,
                    double_buffer=double_buffer)
    trace = generate_bundle(workload, output, params=params, tiling=tiling, seed=seed,
                            untimed=untimed, inject=inject or [], layer=layer, overwrite=force)
    rows_written = trace.manifest.tables["instructions"].rows
    typer.echo(f"wrote {trace.path}: {rows_written:,} instructions "
               f"({trace.manifest.workload})")


def main() -> None:
    """Entry point of the `tracekit` script and `python -m tracekit`."""
    app()
