"""Hostile input meets the command line (issue 18): names with terminal escape sequences are
printed escaped in every text report, an unexpected exception becomes one line and exit 1, and
no Python warning reaches a user's terminal."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracekit.cli import app as cli
from tracekit.trace import summary
from tracekit.trace.builder import TraceBuilder

runner = CliRunner()
HOSTILE = ("\x1b[2J\x1b[H", "op\x07\u202e", "l\x9b1m")
RAW = ("\x1b", "\x07", "\u202e", "\x9b")


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    b = TraceBuilder("w\x1b]0;title\x07", clock_hz=1e9)
    engine, opcode, layer = HOSTILE
    first = b.inst(engine, opcode, 0, 10, layer=layer)
    second = b.inst("tensor", "mm", 10, 20, layer=layer)
    b.signal(first, sem=0)
    b.wait(second, sem=0, value=1)
    return b.write(tmp_path / "hostile").path


@pytest.mark.parametrize("command", ["info", "validate", "stalls", "critical-path", "analyze",
                                     "bugs", "replay", "sensitivity"])
@pytest.mark.parametrize("form", ["text", "md"])
def test_names_are_printed_escaped(hostile: Path, command: str, form: str) -> None:
    # An engine named `\x1b[2J\x1b[H` cleared the screen in `tracekit info`.
    result = runner.invoke(cli.app, [command, str(hostile), "-f", form])
    assert result.exit_code == 0, result.output
    assert not [c for c in RAW if c in result.stdout]
    if command in ("info", "stalls"):
        assert "\\x1b[2J\\x1b[H" in result.stdout


def test_error_messages_are_printed_escaped(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["validate", str(tmp_path / "no\x1b[2Jpe")])
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "no\\x1b[2Jpe" in result.stderr


def test_an_unexpected_exception_is_one_line(hostile: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(trace: object) -> None:
        raise KeyError("engine")

    monkeypatch.setattr(summary, "summarize", broken)
    monkeypatch.setitem(cli._QUIET, "on", True)  # --quiet, undone after the test
    monkeypatch.setattr(sys, "argv", ["tracekit", "info", str(hostile)])
    result = runner.invoke(cli.app, ["info", str(hostile)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [
        f"internal error: KeyError: 'engine'; please report it with this command: "
        f"tracekit info {hostile}"]


def test_out_of_memory_is_an_error_message(hostile: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(trace: object) -> None:
        raise MemoryError

    monkeypatch.setattr(summary, "summarize", broken)
    result = runner.invoke(cli.app, ["info", str(hostile)])
    assert result.exit_code == 1 and result.stderr.startswith("error: out of memory.")


def test_known_failures_keep_their_message(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such file or folder" in result.stderr
    assert "internal error" not in result.stderr


def test_no_warning_reaches_the_terminal(hostile: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # numpy's RuntimeWarnings reached stderr; the CLI's entry point silences warnings (tests
    # turn them into errors instead).
    real = summary.summarize

    def noisy(trace: object) -> object:
        warnings.warn("invalid value encountered in cast", RuntimeWarning, stacklevel=1)
        return real(trace)  # type: ignore[arg-type]

    monkeypatch.setattr(summary, "summarize", noisy)
    monkeypatch.setattr(sys, "argv", ["tracekit", "info", str(hostile)])
    monkeypatch.setattr(sys, "warnoptions", [])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code in (0, None)
    assert "Warning" not in capsys.readouterr().err
