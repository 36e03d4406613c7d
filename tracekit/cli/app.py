"""The `tracekit` command line: thin Typer commands over the library. Library errors become exit
codes here and only here: 0 ok, 1 error in input or use, 2 usage, 3 regression or finding.
This module holds the app, the options and helpers the commands share, and validate, info and
replay; the other commands are in `tracekit.cli.commands`.

Start-up is kept light: this module and the command modules import only typer and tracekit's
light modules at the top (`tracekit.options` holds the choices and defaults the help shows);
each command imports what it runs (the API, the renderers, polars) in its body, so
`tracekit --version` and `tracekit COMMAND --help` load neither numba, polars nor pyarrow
(`tests/test_startup.py`).
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

import tracekit
from tracekit import progress
from tracekit.errors import InvalidTraceError, TraceExistsError, TracekitError
from tracekit.options import TimelineChoice

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console

    from tracekit import api
    from tracekit.trace.bundle import Trace

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


def stdout_console() -> Console:
    from rich.console import Console

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
            from rich.console import Console

            from tracekit.cli import render
            from tracekit.trace.validate import ValidationReport

            typer.echo(f"error: {render.printable(str(exc), newlines=True)}", err=True)
            report = exc.report
            if isinstance(report, ValidationReport):
                render.print_findings_of(Console(stderr=True, highlight=False, soft_wrap=True),
                                         report.errors)
            raise typer.Exit(exc.exit_code) from None
        except TracekitError as exc:
            from tracekit.cli import render

            typer.echo(f"error: {render.printable(str(exc), newlines=True)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own: exit codes and usage errors
        except MemoryError:
            typer.echo("error: out of memory. The input is larger than this machine's memory "
                       "allows for this command; run it on a machine with more memory, or on "
                       "a part of the input.", err=True)
            raise typer.Exit(EXIT_INPUT) from None
        except (Exception, *_panics()) as exc:  # noqa: BLE001 - the last resort: one
            # line, never a traceback (polars' panics are BaseExceptions)
            typer.echo(internal_error(exc), err=True)
            raise typer.Exit(EXIT_INPUT) from None
        finally:
            if reporter is not None:
                reporter.close()

    return wrapper


def _panics() -> tuple[type[BaseException], ...]:
    """polars' PanicException (a BaseException) once polars is loaded: before that, no panic
    can have come from it."""
    polars = sys.modules.get("polars")
    return (polars.exceptions.PanicException,) if polars is not None else ()


def internal_error(exc: BaseException) -> str:
    """The one line an unexpected exception becomes: what it was, and the command to report
    it with."""
    from tracekit.cli import render
    from tracekit.errors import first_line

    command = shlex.join(["tracekit", *sys.argv[1:]])
    return render.printable(f"internal error: {type(exc).__name__}: {first_line(exc)}; please "
                            f"report it with this command: {command}")


_QUIET = {"on": os.environ.get("TRACEKIT_QUIET", "") not in ("", "0")}
"""--quiet (or TRACEKIT_QUIET=1): no progress on stderr."""


def _reporter() -> progress.BarReporter | progress.LineReporter | None:
    """Progress on stderr: bars on a terminal, a line every few seconds in a log."""
    if _QUIET["on"]:
        return None
    if sys.stderr.isatty():
        from rich.console import Console

        return progress.BarReporter(Console(stderr=True))
    return progress.LineReporter(lambda line: typer.echo(line, err=True))


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
    from tracekit.cli import render
    from tracekit.trace.validate import validate as validate_bundle

    report = validate_bundle(trace)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(report.to_dict(strict)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.validation_markdown(report, strict))
    else:
        render.print_validation(stdout_console(), report, strict)
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
    from tracekit.cli import render
    from tracekit.trace.summary import summarize

    summary = summarize(open_bundle(trace, ()))
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(summary.to_dict()))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.summary_markdown(summary))
    else:
        render.print_summary(stdout_console(), summary)


Opt = typer.Option


def open_bundle(path: Path, tables: Collection[str] | None = None) -> Trace:
    """Open a bundle for a command, refusing an invalid one (InvalidTraceError, exit 1, with
    the findings): a quick check of the rules of the tables the command reads (`tables`; None:
    every table), and of every file's size and sha256."""
    from tracekit import api

    return api.trace_of(path, tables)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A long step of a command (its progress on stderr), telling the kernels it compiles."""
    with compiles_told(), progress.step(message):
        yield


@contextmanager
def compiles_told() -> Iterator[None]:
    """The kernels compiled inside, on the first run after an install (`tracekit.kernels`),
    are told on stderr: that it compiles, then how long it took."""
    from tracekit import kernels

    tell = None if _QUIET["on"] else functools.partial(typer.echo, err=True)
    with kernels.announced(tell):
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
    from tracekit import api
    from tracekit.cli import render
    from tracekit.replay.run import Mode, write_predicted

    if mode not in {m.value for m in Mode}:
        raise typer.BadParameter(f"{mode!r} is not one of model, observed",
                                 param_hint="--mode")
    if output is not None:
        refuse_to_replace(output, force)
    if output is not None and output.resolve() == trace.resolve():
        raise typer.BadParameter("the output would replace the trace being replayed; choose "
                                 "another path", param_hint="--output")
    with status("deriving dependencies and replaying"):
        report = api.replay(trace, machine, mode=mode, memory_deps=memory_deps)
    result, summary, correlation = report.result, report.summary, report.correlation
    for note in result.notes:
        typer.echo(f"warning: {render.printable(note)}", err=True)
    if output is not None:
        with status(f"writing {output}"):
            write_predicted(result, output, overwrite=force)
    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json(render.replay_to_dict(result, summary, correlation)))
    elif format is ReportFormat.MD:
        sys.stdout.write(render.replay_markdown(result, summary, correlation))
    else:
        render.print_replay(stdout_console(), result, summary, correlation)


def refuse_to_replace(output: Path, force: bool) -> None:
    """TraceExistsError when `output` exists and --force was not given."""
    if output.exists() and not force:
        raise TraceExistsError(f"{output}: already exists. Choose another path or pass "
                               f"--force to replace it.")


TimelineOpt = Annotated[TimelineChoice, Opt(
    "--timeline", help="auto: the trace's own timing when every instruction is timed, else "
                       "the model's prediction; observed: the trace's own timing; replayed: "
                       "the model's prediction.")]
WindowOpt = Annotated[str | None, Opt(
    "--window", help="Analyse one annotation of an imported profile (a PyTorch profiler "
                     "trace's ProfilerStep#3, or any part of a name: ProfilerStep).",
    show_default=False)]
InstanceOpt = Annotated[int, Opt("--instance", min=0, help="Which instance of --window, in "
                                 "time order from 0.")]
FromOpt = Annotated[int | None, Opt("--from", help="Analyse the instructions starting at or "
                                    "after this time, in the trace's stored units (as "
                                    "`tracekit info` shows them; not the machine cycles "
                                    "reports print).",
                                    show_default=False)]
ToOpt = Annotated[int | None, Opt("--to", help="... and at or before this time (with the "
                                  "work they hand to other engines).", show_default=False)]
MachineOpt = Annotated[str | None, Opt("--machine", "-m", help="Machine TOML file or built-in "
                                       "name (default: trn-like).", show_default=False)]


ReportFormatOpt = Annotated[ReportFormat, Opt("--format", "-f", help="Output format.")]

def emit(report: api.Report, format: ReportFormat,  # noqa: A002
          tables: dict[str, pl.DataFrame]) -> None:
    """A report in the chosen format: JSON is the head and `tables` as records."""
    from tracekit.cli import render

    if format is ReportFormat.JSON:
        sys.stdout.write(render.to_json({**report.head, **{key: render.records(frame)
                                                           for key, frame in tables.items()}}))
    elif format is ReportFormat.MD:
        sys.stdout.write(report.markdown())
    else:
        render.print_sections(stdout_console(), report.title, report.facts, report.sections)


def main() -> None:
    """Entry point of the `tracekit` script and `python -m tracekit`."""
    if not sys.warnoptions:
        # No Python warning reaches a user's terminal (the test suite turns every warning into
        # an error instead, so none goes unnoticed); `python -W default -m tracekit` shows them.
        warnings.simplefilter("ignore")
    app()


# The command modules: importing them registers their commands on `app` (after replay, in the
# order `tracekit --help` lists them).
from tracekit.cli.commands import (  # noqa: E402
    analyses,
    interop,
    report,
    runs,
    sweeps,
    workloads,
)

COMMANDS = (analyses, sweeps, report, runs, workloads, interop)
