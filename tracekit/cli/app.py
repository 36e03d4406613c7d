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


def main() -> None:
    """Entry point of the `tracekit` script and `python -m tracekit`."""
    app()
