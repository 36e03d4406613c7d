"""Progress on stderr: a line every few seconds in a log, nothing with --quiet, nothing on
stdout, and the first run after an install says it compiles the kernels and how long that
took."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
def first_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`tracekit replay` calls a kernel that is not compiled yet (a fresh numba function, not
    cached) before replaying: the first run compiles it, later runs find it compiled."""
    import numba

    from tracekit import api

    @numba.njit
    def fresh(x):  # pragma: no cover - compiled
        return x + 1

    calls: list[int] = []
    real = api.replay

    def replay(*args: object, **kwargs: object) -> object:
        calls.append(fresh(len(calls)))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(api, "replay", replay)
    return calls


def test_the_first_run_says_it_compiles_once(first_run: list[int]) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["replay", GEMM])
    assert first.exit_code == 0, first.output
    told = first.stderr.splitlines()
    assert told[0] == kernels.FIRST_RUN
    assert re.fullmatch(r"tracekit: kernels compiled in \d+\.\d s \(1 kernel\)", told[-1])
    assert "compil" not in first.stdout
    again = runner.invoke(app, ["replay", GEMM])
    assert "compil" not in again.stderr and first_run == [1, 2]
    assert again.stdout == first.stdout


def test_quiet_says_nothing(first_run: list[int]) -> None:
    result = CliRunner().invoke(app, ["--quiet", "replay", GEMM])
    assert result.exit_code == 0 and result.stderr == ""
    assert first_run == [1]  # compiled all the same, silently


def test_what_compiles_is_recorded_with_its_time() -> None:
    import numba

    @numba.njit
    def twice(x):  # pragma: no cover - compiled
        return 2 * x

    lines: list[str] = []
    with kernels.announced(lines.append) as compiled:
        assert twice(3) == 6 and twice(4.5) == 9.0  # two signatures: two compiles
        assert twice(5) == 10  # compiled already
    assert compiled.kernels == [f"{__name__}.{twice.__qualname__}"] * 2
    assert compiled.seconds > 0
    assert lines == [kernels.FIRST_RUN,
                     f"tracekit: kernels compiled in {compiled.seconds:.1f} s (2 kernels)"]
    with kernels.announced(lines.append) as again:
        twice(6)
    assert again.kernels == [] and len(lines) == 2  # nothing compiled: nothing said


def test_a_real_first_run_compiles_and_caches_what_replay_uses(tmp_path: Path) -> None:
    # An empty numba cache, as after an install: the first run says it compiles and how long
    # it took; the second loads every kernel from the cache (it compiles nothing, so each
    # kernel replay uses is cachable and called with the same types each run).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    command = [sys.executable, "-m", "tracekit", "replay", GEMM, "-f", "json"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith(kernels.FIRST_RUN + "\n")
    assert re.search(r"^tracekit: kernels compiled in \d+\.\d s \(\d+ kernels\)$",
                     first.stderr, re.MULTILINE)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0 and "compil" not in second.stderr
    assert second.stdout == first.stdout
