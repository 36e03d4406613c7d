"""Progress on stderr: a line every few seconds in a log, nothing with --quiet, nothing on
stdout, and the first run after an install says it compiles the kernels and how long that
took."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracekit import kernels, progress
from tracekit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
GEMM = str(ROOT / "sample_traces" / "gemm")


def test_a_log_gets_a_line_every_few_seconds_and_one_at_the_end() -> None:
    lines: list[str] = []
    reporter = progress.LineReporter(lines.append, every=0.05)
    try:
        with progress.listening(reporter):
            with progress.step("replaying", total=4) as s:
                s.advance(2)
                time.sleep(0.17)
                s.advance(2)
            with progress.step("quick"):
                pass
    finally:
        reporter.close()
    assert len(lines) >= 3
    assert all(line.startswith("tracekit: replaying 50% 2/4 (") for line in lines[:-1])
    assert lines[-1].startswith("tracekit: replaying done 4/4 in ")
    assert not any("quick" in line for line in lines)  # ended before a line was due


def test_without_a_listener_a_step_says_nothing() -> None:
    with progress.step("alone", total=2) as s:
        s.advance()
    assert s.done == 1


@pytest.fixture
def first_run(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The kernels not in the cache yet; compiling them is recorded (and takes 2.5 s)."""
    calls: list[bool] = []
    monkeypatch.setattr(kernels, "compiled", lambda: bool(calls))

    def compile_all() -> float:
        calls.append(True)
        return 2.5

    monkeypatch.setattr(kernels, "compile_all", compile_all)
    return calls


def test_the_first_run_says_it_compiles_once(first_run: list[bool]) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["replay", GEMM])
    assert first.exit_code == 0, first.output
    assert "first run after install: compiling the replay and analysis kernels" in first.stderr
    assert "tracekit: kernels compiled in 2.5 s" in first.stderr
    assert "compil" not in first.stdout
    again = runner.invoke(app, ["replay", GEMM])
    assert "compil" not in again.stderr and first_run == [True]
    assert again.stdout == first.stdout


def test_quiet_says_nothing(first_run: list[bool]) -> None:
    result = CliRunner().invoke(app, ["--quiet", "replay", GEMM])
    assert result.exit_code == 0 and result.stderr == ""
    assert first_run == [True]  # compiled all the same, silently
