"""What a performance engineer meets first: which timeline a report shows and on what clock
(its head, in every format), `--timeline auto`, clocks that differ between trace and machine,
and bundles refused before any analysis when they break a rule of what the command reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from tracekit.cli.app import app
from tracekit.trace.builder import TraceBuilder

ROOT = Path(__file__).resolve().parents[1]
GEMM = str(ROOT / "sample_traces" / "gemm")  # timed, in cycles at 1.4 GHz
runner = CliRunner()


def _run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code in (0, 3), result.output
    return result


@pytest.mark.parametrize("command", ["analyze", "stalls", "critical-path"])
def test_auto_is_the_trace_own_timing_and_every_format_says_so(command: str) -> None:
    data = json.loads(_run(command, GEMM, "-f", "json").stdout)
    assert (data["timeline"], data["machine"], data["time_unit"]) == ("observed", "trn-like",
                                                                      "cycles")
    assert data["trace_clock_hz"] == data["machine_clock_hz"] == 1.4e9
    replayed = json.loads(_run(command, GEMM, "-f", "json", "--timeline", "replayed").stdout)
    assert replayed["timeline"] == "replayed"
    text = _run(command, GEMM).stdout.splitlines()
    head = "\n".join(text[:6])
    assert "timeline" in head and "observed (the trace's own timing)" in head
    assert "trn-like (1.4 GHz)" in head and "cycles, trace clock 1.4 GHz" in head
    md = _run(command, GEMM, "-f", "md").stdout
    assert "- **timeline**: observed (the trace's own timing)" in md
    assert "- **trace time**: cycles, trace clock 1.4 GHz" in md


def test_the_observed_and_replayed_makespans_are_the_ones_replay_reports() -> None:
    replayed = json.loads(_run("replay", GEMM, "-f", "json").stdout)
    observed = json.loads(_run("analyze", GEMM, "-f", "json").stdout)
    model = json.loads(_run("analyze", GEMM, "-f", "json", "--timeline", "replayed").stdout)
    assert observed["makespan_cycles"] == replayed["correlation"]["observed_makespan_cycles"]
    assert model["makespan_cycles"] == replayed["makespan_cycles"]
    assert replayed["timeline"] == "replayed" and replayed["mode"] == "model"


def test_an_untimed_trace_is_replayed_under_auto(tmp_path: Path) -> None:
    b = TraceBuilder("untimed")
    b.inst("tensor", "matmul", flops=1 << 20)
    b.write(tmp_path / "u")
    data = json.loads(_run("stalls", str(tmp_path / "u"), "-f", "json").stdout)
    assert data["timeline"] == "replayed"
    bad = runner.invoke(app, ["stalls", str(tmp_path / "u"), "--timeline", "observed"])
    assert bad.exit_code == 1 and "untimed" in bad.stderr and "Traceback" not in bad.output
    typo = runner.invoke(app, ["stalls", str(tmp_path / "u"), "--timeline", "observd"])
    assert typo.exit_code == 2 and "observd" in typo.output


def _one_ghz(path: Path) -> Path:
    """Ten matmuls of 2,000 cycles back to back at 1 GHz: 20 us, whatever the machine."""
    b = TraceBuilder("clocks", clock_hz=1.0e9)
    previous = None
    for k in range(10):
        mm = b.inst("tensor", "matmul", 2000 * k, 2000 * (k + 1), flops=1 << 20)
        if previous is not None:
            b.dep(previous, mm)
        previous = mm
    b.write(path)
    return path


def test_trace_times_convert_at_the_trace_clock(tmp_path: Path) -> None:
    bundle = str(_one_ghz(tmp_path / "t"))
    info = json.loads(_run("info", bundle, "-f", "json").stdout)
    assert info["clock_hz"] == 1.0e9 and info["span"]["seconds"] == pytest.approx(20e-6)
    assert "20,000 cycles, 20.000 us" in _run("info", bundle).stdout
    # Every timeline counts the machine's cycles: the trace's 20,000 cycles at 1 GHz are
    # 28,000 at the machine's 1.4 GHz, 20 us either way (not 14.3 us: the trace's cycles
    # read at the machine's clock), and the mismatch of clocks is stated once.
    for command in (["replay", "--mode", "observed"], ["analyze"], ["critical-path"]):
        text = _run(command[0], bundle, *command[1:]).stdout
        assert "28,000 cycles (20.000 us)" in text, command
        assert text.count("trace 1 GHz, machine 1.4 GHz") == 1
    model = _run("replay", bundle).stdout
    assert "observed makespan  28,000 cycles (20.000 us)" in model
    data = json.loads(_run("replay", bundle, "-f", "json").stdout)
    assert data["correlation"]["observed_makespan_cycles"] == 28_000
    assert data["clocks"] == "differ"
    assert data["makespan_seconds"] == pytest.approx(data["makespan_cycles"] / 1.4e9)


def test_limits_are_the_machine_own_on_a_trace_of_another_clock(tmp_path: Path) -> None:
    """A DMA queue moving 64 bytes a trace cycle at 2.8 GHz moves 128 bytes a cycle of the
    1.4 GHz machine: twice its 64 B/cycle, which the figures and the bug check both see."""
    b = TraceBuilder("fast", clock_hz=2.8e9)
    b.inst("dma.q0", "dma_load", 0, 1000, bytes=64_000)
    b.write(tmp_path / "f")
    data = json.loads(_run("analyze", str(tmp_path / "f"), "-f", "json").stdout)
    (queue,) = data["engines"]
    assert data["makespan_cycles"] == 500 and queue["bandwidth"] == pytest.approx(128.0)
    assert queue["bandwidth_pct"] == pytest.approx(200.0)
    codes = [f["code"] for f in json.loads(
        _run("bugs", str(tmp_path / "f"), "-f", "json").stdout)["findings"]]
    assert codes == ["bandwidth-beyond-physics"]


def _null_engine(tmp_path: Path) -> Path:
    """The sample GEMM with one engine set to null and the manifest's hash fixed up to match:
    readable, hashes fine, but invalid."""
    import shutil

    bundle = tmp_path / "bad"
    shutil.copytree(GEMM, bundle)
    path = bundle / "instructions.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.col("id") == 5).then(None).otherwise(pl.col("engine"))
                       .alias("engine")).write_parquet(path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["tables"]["instructions"]
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry["bytes"] = path.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle


@pytest.mark.parametrize("command", [
    ["info"], ["replay"], ["analyze"], ["stalls"], ["critical-path"], ["bugs"],
    ["whatif", "--scale", "engine=tensor:0.5"], ["sensitivity"]])
def test_an_invalid_bundle_is_refused_with_its_findings(tmp_path: Path,
                                                        command: list[str]) -> None:
    bundle = _null_engine(tmp_path)
    result = runner.invoke(app, [command[0], str(bundle), *command[1:]])
    assert result.exit_code == 1, result.output
    assert "not a valid trace bundle" in result.stderr
    assert "[not-null] instructions.parquet column engine: 1 row with a null engine" \
        in result.stderr
    assert "rows: 5" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_an_invalid_bundle_is_refused_by_diff(tmp_path: Path) -> None:
    bundle = _null_engine(tmp_path)
    result = runner.invoke(app, ["diff", GEMM, str(bundle)])
    assert result.exit_code == 1 and "[not-null]" in result.stderr and result.stdout == ""
