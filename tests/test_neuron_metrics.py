"""Neuron Explorer's Summary metrics recomputed from an imported profile's bundle
(tracekit.analysis.neuron_metrics), on a tiny bundle built in code with known values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tracekit

from tracekit.analysis.neuron_metrics import summary_metrics, union_ticks
from tracekit.cli.app import app
from tracekit.cli.render import records
from tracekit.trace.builder import TraceBuilder
from tracekit.trace.bundle import Trace, write_trace

METADATA = {"tensor_engine_num_rows": 128, "tensor_engine_num_cols": 128,
            "tensor_engine_clock_freq": 1.0, "neuroncore_clock_freq": 1.0,
            "hbm_ddr_bandwidth": 1e11}


def profile(path: Path, summary: dict[str, Any] | None = None,
            execution: dict[str, Any] | None = None, time_unit: str = "ns") -> Trace:
    """Two tensor cores (one matmul overlapping a transpose on core 0), a vector engine with
    an ACTIVATE and a NOP, two DMA queues; every time in ns."""
    b = TraceBuilder("ne", clock_hz=1e9)
    b.inst("tensor", "MATMUL", 0, 100, flops=2 * 128 * 128 * 100)
    b.inst("tensor", "MATMUL.TRANSPOSE", 50, 150, flops=1000)
    b.inst("p1.tensor", "MATMUL", 300, 400, flops=5000)
    b.inst("vector", "ACTIVATE", 0, 40)
    b.inst("vector", "NOP", 500, 900)
    load = b.inst("dma.qSyncIO0", "DMA", 10, 60, bytes=4096)
    store = b.inst("dma.qSyncIO1", "DMA", 20, 80, bytes=2048)
    b.access(load, "hbm", "read", 0, 4096)
    b.access(load, "sbuf", "write", 0, 32, partition=0, partitions=128)
    b.access(store, "sbuf", "read", 0, 16, partition=0, partitions=128)
    b.access(store, "hbm", "write", 8192, 2048)
    extra = {"execution": {"index": 0, "start_ns": 0, "end_ns": 1000}
             if execution is None else execution,
             "metadata": METADATA,
             "counters": {"hbm_read_bytes": 1904, "hbm_write_bytes": 1952,
                          "adjusted_flops": 3_282_800 * 2},
             "summary": summary or {}}
    frames = b.frames()
    return write_trace(path, frames.pop("instructions"), **frames, workload="ne", clock_hz=1e9,
                       time_unit=time_unit, extra={"neuron_explorer": extra}, created=None)


def figures(trace: Trace) -> dict[str, Any]:
    frame = summary_metrics(trace)
    assert frame is not None
    return {row["metric"]: row for row in frame.to_dicts()}


def test_figures_from_known_values(tmp_path: Path) -> None:
    got = figures(profile(tmp_path / "b"))
    value = {metric: row["tracekit"] for metric, row in got.items()}
    assert value["total_time"] == 1000 and got["total_time"]["from"] == "execution"
    assert value["total_exec_time"] == 400  # the NOP at 500..900 is left out
    assert value["total_active_time"] == 650  # [0,150) + [300,400) + [500,900)
    assert value["total_active_time_percent"] == pytest.approx(65.0)
    # tensor: [0,100) and [50,150) overlap (150 active, 200 summed), p1.tensor adds 100
    assert value["tensor_engine_instruction_time"] == 300
    assert value["tensor_engine_active_time"] == 250
    assert value["tensor_engine_instruction_count"] == 3
    assert value["vector_engine_active_time"] == 440
    assert "scalar_engine_active_time" not in value  # no scalar engine in the profile
    assert value["matmul_instruction_count"] == 3
    assert (value["activate_instruction_count"], value["activate_instruction_time"]) == (
        1, 40)
    assert value["hardware_flops"] == 3_276_800 + 1000 + 5000
    assert value["transpose_flops"] == 1000
    assert value["adjusted_hardware_flops"] == 6_565_600
    assert got["adjusted_hardware_flops"]["from"] == "counters"
    peak = 2 * 128 * 128 * 1e9
    assert value["hfu_estimated_percent"] == pytest.approx(3_282_800 / (peak * 1e-6) * 100)
    assert got["total_time"]["unit"] == "ns" and got["hardware_flops"]["unit"] == "flops"
    assert value["mfu_inst_estimated_percent"] == pytest.approx(
        3_281_800 / (peak * 1e-6) * 100)
    # bytes: the transfers' sides (an SBUF row's size times its partitions) + the counters
    assert (value["hbm_read_bytes"], value["hbm_write_bytes"]) == (6000, 4000)
    assert (value["sbuf_read_bytes"], value["sbuf_write_bytes"]) == (2048, 4096)
    assert got["hbm_read_bytes"]["from"] == "tables+counters"
    assert got["sbuf_read_bytes"]["from"] == "tables"
    assert value["mm_arithmetic_intensity"] == pytest.approx(3_281_800 / 10_000)
    assert value["mbu_estimated_percent"] == pytest.approx(10_000 / 1e-6 / 1e11 * 100)
    assert value["dma_active_time"] == 70  # [10,60) and [20,80)
    assert value["dma_transfer_time"] == 110
    assert (value["dma_transfer_count"], value["dma_transfer_total_bytes"],
            value["dma_transfer_average_bytes"]) == (2, 6144, 3072)
    assert all(row["recorded"] is None and row["difference"] is None for row in got.values())


def test_each_figure_next_to_the_recorded_one(tmp_path: Path) -> None:
    got = figures(profile(tmp_path / "b", summary={
        "total_time": 1e-6, "tensor_engine_active_time": 2.5e-7, "dma_transfer_count": 3,
        "transpose_flops": None, "model_flops": 1e9}))
    assert (got["total_time"]["difference"], got["tensor_engine_active_time"]["difference"]) \
        == (0.0, 0.0)
    assert got["dma_transfer_count"]["difference"] == -1
    assert got["dma_transfer_count"]["difference_pct"] == pytest.approx(-100 / 3)
    # NaN, as Neuron Explorer writes it, is kept as null in the manifest (JSON has no NaN)
    assert got["transpose_flops"]["recorded"] is None
    assert "model_flops" not in got  # needs HLO statistics no table holds


def test_without_an_execution_span_total_time_is_the_trace_span(tmp_path: Path) -> None:
    got = figures(profile(tmp_path / "b", execution={}))
    assert got["total_time"]["tracekit"] == 900 and got["total_time"]["from"] == "tables"


def test_only_imported_profiles_have_them(tmp_path: Path) -> None:
    b = TraceBuilder("plain")
    b.inst("tensor", "matmul", 0, 10)
    assert summary_metrics(b.write(tmp_path / "plain")) is None
    assert summary_metrics(profile(tmp_path / "cycles", time_unit="cycles")) is None


def test_union_of_intervals() -> None:
    import polars as pl

    frame = pl.DataFrame({"g": ["a", "a", "a", "b", "b"], "start": [0, 5, 20, 7, 7],
                          "end": [10, 8, 30, 9, 7]})
    assert union_ticks(frame, "g") == {"a": 20, "b": 2}
    assert union_ticks(frame, None) == {0: 20}


def test_analyze_shows_them_and_json_agrees(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    profile(bundle, summary={"total_time": 1e-6})
    text = CliRunner().invoke(app, ["analyze", str(bundle)])
    assert text.exit_code == 0, text.output
    assert "device profile summary (Neuron Explorer's metrics, observed times)" in text.output
    assert "tensor_engine_active_time" in text.output
    result = CliRunner().invoke(app, ["analyze", str(bundle), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["metric"]: row for row in json.loads(result.output)["device_summary"]}
    frame = summary_metrics(tracekit.open_trace(bundle))
    assert frame is not None
    assert rows == {row["metric"]: row for row in records(frame)}  # JSON rounds to 3 decimals
    assert rows["total_time"]["recorded"] == 1000 and rows["total_time"]["difference"] == 0


# --- against the Summary a profile records ----------------------------------------------------


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from neuron_profiles import tiny_bundle, two_core_bundle

    from tracekit.workloads.generate import generate

    folder = tmp_path_factory.mktemp("workloads")
    out = {"tiny": tiny_bundle(folder / "tiny")}
    generate("gemm", folder / "gemm", params={"m": 256, "n": 256, "k": 512})
    generate("attention", folder / "attention", params={})
    out["gemm"], out["attention"] = folder / "gemm", folder / "attention"
    out["two-core"] = two_core_bundle(tracekit.open_trace(out["attention"]), folder / "two")
    return out


@pytest.mark.parametrize(("name", "options"), [
    ("tiny", {}), ("gemm", {"split": 2}), ("attention", {"clock_ghz": 1.4}),
    ("two-core", {}), ("gemm", {"float_type": "float64"})])
def test_recomputed_figures_equal_the_recorded_summary(
        tmp_path: Path, workloads: dict[str, Path], name: str, options: dict[str, Any]) -> None:
    """The fixture writer computes its Summary row from the rows it writes, by Neuron
    Explorer's recipes and with its own code; `analyze` recomputes each figure from the
    imported bundle. They agree to the precision the Summary holds (float32 by default)."""
    import pyarrow as pa
    from neuron_profiles import write_profile

    from tracekit.convert.neuron_explorer import convert

    if options.get("float_type") == "float64":
        options = {**options, "float_type": pa.float64()}
    profile = write_profile(workloads[name], tmp_path / "profile", **options)
    convert(profile.path, tmp_path / "bundle")
    got = figures(tracekit.open_trace(tmp_path / "bundle"))
    compared = {metric: row for metric, row in got.items() if row["recorded"] is not None}
    precision = 1e-12 if "float_type" in options else 1e-6
    assert len(compared) >= 28, sorted(set(got) - set(compared))
    for metric, row in compared.items():
        assert row["tracekit"] == pytest.approx(row["recorded"], rel=precision, abs=1e-9), \
            metric
    assert {"total_time", "tensor_engine_active_time", "hfu_estimated_percent",
            "mbu_estimated_percent", "dma_active_time", "dma_transfer_count",
            "hbm_read_bytes"} <= set(compared)


def test_without_the_transfers_sides_no_byte_figures(tmp_path: Path,
                                                     workloads: dict[str, Path]) -> None:
    from neuron_profiles import write_profile

    from tracekit.convert.neuron_explorer import convert

    profile = write_profile(workloads["tiny"], tmp_path / "profile", aggregated=False)
    convert(profile.path, tmp_path / "bundle")
    got = figures(tracekit.open_trace(tmp_path / "bundle"))
    assert not {"hbm_read_bytes", "sbuf_write_bytes", "mbu_estimated_percent"} & set(got)
    assert got["dma_active_time"]["tracekit"] == got["dma_active_time"]["recorded"]


def test_a_profile_of_several_executions_shows_no_recorded_values(
        tmp_path: Path, workloads: dict[str, Path]) -> None:
    from neuron_profiles import write_profile

    from tracekit.convert.neuron_explorer import convert

    profile = write_profile(workloads["tiny"], tmp_path / "profile", executions=2)
    convert(profile.path, tmp_path / "bundle", execution=1)
    got = figures(tracekit.open_trace(tmp_path / "bundle"))
    assert all(row["recorded"] is None for row in got.values())
    assert got["total_time"]["tracekit"] == 450  # execution 1's own span


def test_bugs_leave_out_what_a_profile_does_not_record(tmp_path: Path,
                                                        workloads: dict[str, Path]) -> None:
    """A profile records no memory ranges of compute instructions and waits only where the
    operands show them: dead writes and leaked semaphores would be artefacts of the import."""
    from neuron_profiles import write_profile

    from tracekit.analysis.signatures import (
        check_dead_writes,
        find_bugs,
        skipped_checks,
    )
    from tracekit.convert.neuron_explorer import convert
    from tracekit.replay.machine import builtin_machine

    profile = write_profile(workloads["gemm"], tmp_path / "profile")
    convert(profile.path, tmp_path / "bundle")
    trace = tracekit.open_trace(tmp_path / "bundle")
    assert trace.manifest.extra["coverage"] == {"memory": "dma-only",
                                                "semaphore_waits": "partial"}
    assert skipped_checks(trace) == {check_dead_writes}
    codes = {f.code.value for f in find_bugs(trace, builtin_machine())}
    assert not codes & {"dead-write", "semaphore-leak"}, codes
    assert skipped_checks(tracekit.open_trace(workloads["gemm"])) == frozenset()
