"""Traces timed in ps, ns or us: every analysis that sets observed times beside the machine's
cycles converts them at the manifest's clock, and says how to fix a trace without a clock.

The same GEMM is written twice at 1 GHz, once in cycles and once in picoseconds (each time
times 1,000): replay, the observed timeline, calibration and the Perfetto export must not tell
them apart."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.calibrate import calibrate
from tracekit.analysis.replay_report import correlate, summarize_replay
from tracekit.analysis.timelines import Source, timeline
from tracekit.cli.app import app
from tracekit.convert.perfetto import export_perfetto
from tracekit.errors import ManifestError
from tracekit.replay.machine import builtin_machine
from tracekit.replay.run import Mode, replay
from tracekit.trace.bundle import write_trace

SAMPLE = Path(__file__).resolve().parent.parent / "sample_traces" / "gemm"


def _twin(trace: tracekit.Trace, path: Path, *, factor: int, time_unit: str,
          clock_hz: float | None) -> tracekit.Trace:
    """`trace` rewritten with start and end times `factor` in `time_unit` at `clock_hz`."""
    tables = {name: trace.read(name) for name in ("semaphores", "memory", "deps")
              if trace.has_table(name)}
    inst = trace.read("instructions").with_columns(pl.col("start") * factor,
                                                   pl.col("end") * factor)
    return write_trace(path, inst, **tables, workload=trace.manifest.workload,
                       producer=trace.manifest.producer, clock_hz=clock_hz,
                       time_unit=time_unit, created=None)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[tracekit.Trace, tracekit.Trace]:
    folder = tmp_path_factory.mktemp("units")
    sample = tracekit.open_trace(SAMPLE)
    cycles = _twin(sample, folder / "cycles", factor=1, time_unit="cycles", clock_hz=1e9)
    ps = _twin(sample, folder / "ps", factor=1000, time_unit="ps", clock_hz=1e9)
    return cycles, ps


def test_replay_compares_in_cycles(pair: tuple[tracekit.Trace, tracekit.Trace]) -> None:
    cycles, ps = (replay(t, builtin_machine()) for t in pair)
    assert cycles.timeline.equals(ps.timeline)
    assert ps.observed and ps.notes == ()
    a, b = correlate(cycles), correlate(ps)
    assert a is not None and b is not None
    assert (a.observed_makespan, a.predicted_makespan) == (b.observed_makespan,
                                                          b.predicted_makespan)
    assert a.opcodes.equals(b.opcodes)
    assert a.divergent_duration.equals(b.divergent_duration)
    assert a.divergent_wait.equals(b.divergent_wait)
    assert summarize_replay(cycles).engines.equals(summarize_replay(ps).engines)
    observed = [replay(t, builtin_machine(), Mode.OBSERVED).timeline for t in pair]
    assert observed[0].equals(observed[1])


def test_observed_timeline_calibration_and_export_in_cycles(
        pair: tuple[tracekit.Trace, tracekit.Trace], tmp_path: Path) -> None:
    lines = [timeline(t, builtin_machine(), Source.OBSERVED).frame for t in pair]
    assert lines[0].equals(lines[1])
    fits = [calibrate([t], builtin_machine()).fits for t in pair]
    assert fits[0].equals(fits[1])
    for t, name in zip(pair, ("cycles.json", "ps.json"), strict=True):
        export_perfetto(t, tmp_path / name, replay=True, critical_path=True)
    assert (tmp_path / "cycles.json").read_bytes() == (tmp_path / "ps.json").read_bytes()


def test_a_time_without_a_clock(tmp_path: Path) -> None:
    sample = tracekit.open_trace(SAMPLE)
    ns = _twin(sample, tmp_path / "ns", factor=1, time_unit="ns", clock_hz=None)
    # Model mode still replays; it says why there is no comparison.
    result = replay(ns, builtin_machine())
    assert not result.observed and correlate(result) is None
    (note,) = result.notes
    assert "start and end are in ns and the manifest has no clock_hz" in note
    with pytest.raises(ManifestError, match="Add clock_hz"):
        replay(ns, builtin_machine(), Mode.OBSERVED)
    runner = CliRunner()
    done = runner.invoke(app, ["replay", str(ns.path)])
    assert done.exit_code == 0 and "warning: " in done.stderr and "Add clock_hz" in done.stderr
    for args in (["replay", str(ns.path), "--mode", "observed"],
                 ["analyze", str(ns.path), "--timeline", "observed"]):
        done = runner.invoke(app, args)
        assert done.exit_code == 1, args
        assert "manifest.json: start and end are in ns" in done.stderr
        assert "Traceback" not in done.output


def test_checks_and_choices_in_cycles(tmp_path: Path) -> None:
    """Ping-pong sets busy time against the semaphore latency in cycles; diff's auto timeline
    replays traces it cannot convert; a time past 64-bit cycles is refused with the fix."""
    from tracekit.analysis.timelines import choose_source
    from tracekit.analysis.signatures import PING_PONG_WAITS, Code, find_bugs
    from tracekit.trace.builder import TraceBuilder

    b = TraceBuilder("t")
    t = 0
    for k in range(PING_PONG_WAITS + 1):  # 10 cycles of work per wait: 10,000 ps at 1 GHz
        s = b.inst("scalar", "act", t, t + 10)
        b.signal(s, 0)
        v = b.inst("vector", "copy", t + 22, t + 32)
        b.wait(v, 0, k + 1)
        t += 40
    sample = b.write(tmp_path / "cycles")
    ps = _twin(sample, tmp_path / "ps", factor=1000, time_unit="ps", clock_hz=1e9)
    # In the machine's cycles: the sample's are taken as its own (no clock in its manifest);
    # 10,000 ps are 14 cycles at the machine's 1.4 GHz.
    for trace, busy in ((sample, 10), (ps, 14)):
        (f,) = [f for f in find_bugs(trace, builtin_machine())
                if f.code is Code.SEMAPHORE_PING_PONG]
        assert f"a median of {busy} busy cycles between waits" in f.message
    no_clock = _twin(sample, tmp_path / "ns", factor=1, time_unit="ns", clock_hz=None)
    assert choose_source(sample, ps, choice="auto") is Source.OBSERVED
    assert choose_source(sample, no_clock, choice="auto") is Source.REPLAYED
    huge = _twin(sample, tmp_path / "huge", factor=10**13, time_unit="us", clock_hz=1.4e9)
    with pytest.raises(ManifestError, match="past what 64-bit cycle counts hold"):
        replay(huge, builtin_machine(), Mode.OBSERVED)
    assert "past what 64-bit cycle counts hold" in replay(huge, builtin_machine()).notes[0]
    done = CliRunner().invoke(app, ["analyze", str(huge.path), "--timeline", "observed"])
    assert done.exit_code == 1 and "Traceback" not in done.output
