"""`tracekit convert scalesim`: SCALE-Sim runs imported as bundles and machine descriptions.

The runs are real SCALE-Sim 3.0.0 output in tests/data/scalesim/runs.tar.xz (rebuilt by
regenerate.py there): the five reference runs of ../shared/external/scalesim and held-out ones
with other GEMM shapes, arrays (4x4 to 32x32), dataflows, bandwidths (1 to 16 words/cycle and
calc mode), SRAM sizes and two three-layer runs. On each: the array's stall cycles and Compute
Util on the observed timeline equal SCALE-Sim's, the burst copies that reproduce its read
stalls (echoes) fit its timeline exactly, and the replay in model mode with the converted
machine predicts Total Cycles (incl. prefetch) within 3 %. Four runs end on read stalls that no
echo can reproduce (tracekit/convert/scalesim.py, "Limit"): they are expected to miss, and to be
short by the second wait SCALE-Sim charges the last such stall. A tiny run written out
here checks the import row by row; copies of it broken on purpose check every error path
through the command line.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import assert_failed_cleanly
from typer.testing import CliRunner, Result

from tracekit.analysis.array import array_table
from tracekit.analysis.signatures import find_bugs
from tracekit.analysis.timelines import timeline
from tracekit.cli.app import app
from tracekit.convert.scalesim import (
    BandwidthMode,
    Dataflow,
    Echo,
    EchoPlan,
    GemmLayer,
    ScaleSimConfig,
    ScaleSimError,
    ScaleSimImport,
    TraceTable,
    convert_scalesim,
    echo_plan,
    fold_layer,
    miss_steps,
    read_config,
    shadow_engine,
    step_macs,
)
from tracekit.replay.machine import load_machine, parse_machine
from tracekit.replay.run import replay
from tracekit.trace.validate import validate

DATA = Path(__file__).parent / "data" / "scalesim"
ARCHIVE = DATA / "runs.tar.xz"
with tarfile.open(ARCHIVE) as _tar:
    RUNS = sorted({name.split("/")[0] for name in _tar.getnames()})
REFERENCE = ("gemm64x48x80_16x16_ws_user_bw4", "gemm64x48x80_16x16_os_user_bw4",
             "gemm64x48x80_16x16_is_calc", "gemm96x64x128_16x16_ws_user_bw8",
             "gemm80x80x48_8x8_os_user_bw2")
UNECHOED = {
    # Runs whose last read stall no echo reproduces: SCALE-Sim serves it at 2 E - T (its burst's
    # end E reflected about the time T the step asked for it), and the steps an echo would have
    # to absorb outnumber the hit steps after it, or T follows a drain's end.
    "gemm160x12x128_16x16_ws_user_bw12_sram32-32-32":
        "its one read stall (step 1,324) needs 1,328 hit steps after it to be echoed; 323 follow",
    "gemm32x128x32_16x16_is_user_bw4_sram4-4-4":
        "its last read stall (step 546) is reflected about the end of the drain step 521 waited "
        "for",
    "gemm72x24x40_16x16_ws_user_bw8_sram4-4-4":
        "its last read stall (step 644) needs 153 hit steps after it to be echoed; 63 follow",
    "gemm100x48x128_32x16_ws_user_bw16":
        "its last read stall (step 2,043) needs 571 hit steps after it to be echoed; 92 follow",
}

runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scalesim")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.fixture(scope="module")
def imported(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each run converted once (lazily), with its machine."""
    out = tmp_path_factory.mktemp("bundles")
    cache: dict[str, Any] = {}

    def get(name: str) -> tuple[ScaleSimImport, Any]:
        if name not in cache:
            result = convert_scalesim(runs / name, out / name)
            cache[name] = (result, parse_machine(tomllib.loads(result.machine_toml), name))
        return cache[name]

    return {"get": get}


def test_archive_holds_the_reference_runs_and_held_out_ones() -> None:
    assert set(REFERENCE) <= set(RUNS)
    assert set(UNECHOED) <= set(RUNS)
    assert len(RUNS) >= 60
    assert ARCHIVE.stat().st_size < 2_000_000


def predicted_and_reported(result: ScaleSimImport, machine: Any) -> tuple[int, int]:
    """The replay's Total Cycles (incl. prefetch), and SCALE-Sim's: the makespan less one cycle
    per layer (the last write's own)."""
    layers = len(result.layers)
    return (replay(result.trace, machine).makespan - layers,
            sum(s.report.total_cycles_incl_prefetch for s in result.layers))


def assert_echoes_fit(result: ScaleSimImport, machine: Any) -> None:
    """Every echo's copies run back to back from the end of its anchor to the start of its
    step on SCALE-Sim's timeline, take as long under the machine as they do there, never
    overlap on a shadow queue, and are not array work."""
    inst = result.trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    shadow = inst.filter(pl.col("engine").str.starts_with("shadow."))
    assert shadow["opcode"].cast(pl.String).unique().to_list() in ([], ["burst_shadow"])
    for row in shadow.iter_rows(named=True):
        cost = machine.latency(row["engine"], "burst_shadow")
        assert cost.fixed_cycles + cost.per_byte * row["bytes"] == pytest.approx(
            row["end"] - row["start"])
        assert row["flops"] is None
    per_queue = shadow.sort("engine", "start")
    assert (per_queue["start"].shift(-1) >= per_queue["end"]).filter(
        per_queue["engine"] == per_queue["engine"].shift(-1)).all()
    deps = result.trace.read("deps").join(inst.select(pl.col("id").alias("src"), "end"),
                                          on="src").join(
        inst.select(pl.col("id").alias("dst"), "start"), on="dst")
    ids = shadow["id"].implode()
    touching = deps.filter(pl.col("src").is_in(ids) | pl.col("dst").is_in(ids))
    assert (touching["start"] == touching["end"]).all()


def assert_import_exact(result: ScaleSimImport, machine: Any) -> None:
    """Stall cycles and Compute Util per layer, from analyze's array figures on the observed
    timeline, and the observed makespan less one cycle per layer: SCALE-Sim's own; the echoes
    fit that timeline."""
    trace = result.trace
    observed = timeline(trace, machine, "observed")
    table = array_table(trace, observed.frame)
    assert table is not None
    per_layer = table.filter(pl.col("layer") != "all")
    assert per_layer["layer"].to_list() == [s.layer.name for s in result.layers]
    assert per_layer["stall_cycles"].to_list() == [s.report.stall_cycles for s in result.layers]
    assert per_layer["compute_util_pct"].to_list() == pytest.approx(
        [s.report.compute_util_pct for s in result.layers], rel=1e-12)
    assert int(observed.frame["end"].max()) - len(result.layers) == \
        sum(s.report.total_cycles_incl_prefetch for s in result.layers)
    assert_echoes_fit(result, machine)


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=UNECHOED[name]))
    if name in UNECHOED else name for name in RUNS])
def test_run_matches_scalesim(name: str, imported: dict[str, Any]) -> None:
    result, machine = imported["get"](name)
    if name not in UNECHOED:   # checked for those in the test below, which cannot fail by 3 %
        assert_import_exact(result, machine)
    predicted, reported = predicted_and_reported(result, machine)
    assert abs(predicted - reported) < 0.03 * reported, \
        f"{name}: predicted {predicted:,}, reported {reported:,}"


@pytest.mark.parametrize("name", sorted(UNECHOED))
def test_unechoed_runs_are_short_by_the_last_unechoed_wait(name: str,
                                                           imported: dict[str, Any]) -> None:
    """The replay waits once for the data of a stall no echo reproduces, SCALE-Sim twice: a run
    that ends on such a stall is short by the second wait, half its stall cycles (less the few
    cycles the replay runs late everywhere)."""
    result, machine = imported["get"](name)
    assert_import_exact(result, machine)
    predicted, reported = predicted_and_reported(result, machine)
    (layer,) = result.layers
    half = layer.unechoed[-1][1] / 2
    assert half - 8 <= reported - predicted <= half


def test_reference_runs_are_what_the_shared_folder_reports() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "external" / "scalesim"
    if not shared.is_dir():
        pytest.skip("../shared/external/scalesim is not beside the repository")
    with tarfile.open(ARCHIVE) as tar:
        for name in REFERENCE:
            member = tar.extractfile(f"{name}/COMPUTE_REPORT.csv")
            assert member is not None
            assert member.read() == (shared / name / "COMPUTE_REPORT.csv").read_bytes()


def test_bundle_is_valid_and_deterministic(imported: dict[str, Any], tmp_path: Path,
                                           runs: Path) -> None:
    result, _ = imported["get"]("gemm64x48x80_16x16_ws_user_bw4")
    assert validate(result.trace.path).ok(strict=True)
    convert_scalesim(runs / "gemm64x48x80_16x16_ws_user_bw4", tmp_path / "again")
    for name in ("manifest.json", "instructions.parquet", "deps.parquet", "memory.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == \
            (result.trace.path / name).read_bytes()


def test_machine_toml_describes_the_config(imported: dict[str, Any], tmp_path: Path) -> None:
    result, _ = imported["get"]("gemm80x80x48_8x8_os_user_bw2")
    path = tmp_path / "m.toml"
    path.write_text(result.machine_toml, encoding="utf-8")
    machine = load_machine(path)
    assert machine.queue_bandwidth("dma.q0") == 10.0      # IfmapSRAMBankBandwidth
    assert machine.queue_bandwidth("dma.q1") == 10.0      # FilterSRAMBankBandwidth
    assert machine.queue_bandwidth("dma.q2") == 2.0       # Bandwidth
    assert machine.queue_bandwidth("dma.q3") == 2.0
    assert machine.hbm_bytes_per_cycle == 24.0
    assert machine.latency("tensor", "matmul").per_element == 1.0
    assert machine.latency("dma.q0", "dma_load").fixed_cycles == 1.0
    assert machine.latency("dma.q2", "dma_store").fixed_cycles == 0.0
    assert (machine.partitions, machine.sbuf_partition_bytes, machine.psum_partition_bytes) == \
        (2, 80 * 48, 80 * 80)
    assert not [e for e in tomllib.loads(result.machine_toml)["engines"] if "shadow" in e]
    calc, _ = imported["get"]("gemm64x48x80_16x16_is_calc")
    text = tomllib.loads(calc.machine_toml)
    assert text["dma"]["queues"]["dma.q2"] == 16.0       # calc mode: ArrayWidth words/cycle
    assert text["engines"]["dma"]["opcodes"]["dma_load"]["fixed_cycles"] == 0.0


def test_multi_layer_run_is_chained(imported: dict[str, Any]) -> None:
    result, machine = imported["get"]("mlp3_8x8_ws_user_bw4_sram4")
    assert [s.layer.name for s in result.layers] == ["fc1", "fc2", "fc3"]
    inst = result.trace.read("instructions")
    deps = result.trace.read("deps")
    # Each later layer's prefetches wait for the instruction that ends the layer before.
    first_loads = inst.filter(pl.col("opcode") == "dma_load").group_by("layer", "engine").agg(
        pl.col("id").min())
    chained = deps.join(first_loads.rename({"id": "dst"}), on="dst")
    assert sorted(chained["layer"].cast(pl.String).unique().to_list()) == ["fc2", "fc3"]
    pcs = inst.filter(pl.col("engine") == "tensor")["pc"].to_numpy()
    assert np.all(np.diff(pcs) > 0)   # program positions run on across layers


# --- the import row by row, on a tiny run -----------------------------------------------------

TINY = "gemm2x2x3_2x2_os_user_bw1_sram1-1-1"
TINY_FILES = {
    "COMPUTE_REPORT.csv": "LayerID, Total Cycles (incl. prefetch), Total Cycles, Stall Cycles, "
                          "Overall Util %, Mapping Efficiency %, Compute Util %,\n"
                          "0, 8, 4, 0, 75.0, 100.0, 60.0,\n",
    "layer0/IFMAP_DRAM_TRACE.csv": "-1.0,0.0,1.0,3.0,2.0,4.0,5.0,-1.0,-1.0,-1.0,-1.0\n",
    "layer0/FILTER_DRAM_TRACE.csv": "-1.0,10000000.0,10000001.0,10000003.0,10000002.0,"
                                    "10000004.0,10000005.0,-1.0,-1.0,-1.0,-1.0\n",
    "layer0/OFMAP_DRAM_TRACE.csv": "4.0,20000002.0\n5.0,20000000.0\n6.0,20000003.0\n"
                                   "7.0,20000001.0\n",
    "layer0/IFMAP_SRAM_TRACE.csv": "1,0,-1\n2,1,3\n3,2,4\n4,-1,5\n5,-1,-1\n",
    "layer0/FILTER_SRAM_TRACE.csv": "1,10000000,-1\n2,10000001,10000003\n3,10000002,10000004\n"
                                    "4,-1,10000005\n5,-1,-1\n",
    "layer0/OFMAP_SRAM_TRACE.csv": "0,-1,-1\n1,-1,-1\n2,20000002,-1\n3,20000000,20000003\n"
                                   "4,-1,20000001\n",
    f"inputs/{TINY}.csv": "Layer Name, M, N, K,\nL0, 2, 2, 3,\n",
    f"inputs/{TINY}.cfg": (
        f"[general]\nrun_name = {TINY}\n\n[architecture_presets]\nArrayHeight: 2\n"
        "ArrayWidth: 2\nIfmapSramSzkB: 1\nFilterSramSzkB: 1\nOfmapSramSzkB: 1\n"
        "IfmapOffset: 0\nFilterOffset: 10000000\nOfmapOffset: 20000000\nBandwidth : 1\n"
        "Dataflow : os\n\n[layout]\nIfmapCustomLayout: False\nIfmapSRAMBankBandwidth: 10\n"
        "FilterCustomLayout: False\nFilterSRAMBankBandwidth: 10\n\n[sparsity]\n"
        "SparsitySupport : false\n\n[run_presets]\nInterfaceBandwidth: USER\n"
        "UseRamulatorTrace: False\n"),
}


def tiny_run(folder: Path, **changes: str | None) -> Path:
    """The tiny run (SCALE-Sim's own output for a 2x2x3 GEMM on a 2x2 os array), with files
    replaced (a string) or removed (None) by `changes`."""
    run = folder / TINY
    for name, text in {**TINY_FILES, **changes}.items():
        if text is not None:
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_text(text, encoding="utf-8")
    return run


def test_tiny_run_row_by_row(tmp_path: Path) -> None:
    result = convert_scalesim(tiny_run(tmp_path), tmp_path / "out")
    inst = result.trace.read("instructions").with_columns(pl.col(pl.Categorical).cast(pl.String))
    assert inst.rows() == [
        # id engine seq opcode start end elements bytes flops layer pc
        (0, "dma.q0", 0, "dma_load", 0, 1, 6, 10, None, "L0", None),    # 1 row x 10 words
        (1, "dma.q1", 0, "dma_load", 0, 1, 6, 10, None, "L0", None),
        (2, "tensor", 0, "matmul", 1, 6, 5, 16, 24, "L0", 0),           # 5 steps, 12 MACs
        (3, "dma.q3", 0, "dma_store", 5, 9, 4, 4, None, "L0", None),    # the final flush
    ]
    deps = result.trace.read("deps").with_columns(pl.col("kind").cast(pl.String))
    assert deps.rows() == [(0, 2, "data"), (1, 2, "data"), (2, 3, "data")]
    memory = result.trace.read("memory").with_columns(pl.col(pl.Categorical).cast(pl.String))
    assert memory.rows() == [
        (0, "hbm", "read", 0, 6, None, None), (0, "sbuf", "write", 0, 6, 0, 1),
        (1, "hbm", "read", 10_000_000, 6, None, None), (1, "sbuf", "write", 0, 6, 1, 1),
        (2, "psum", "write", 0, 4, 0, 1), (2, "sbuf", "read", 0, 6, 0, 1),
        (2, "sbuf", "read", 0, 6, 1, 1),
        (3, "hbm", "write", 20_000_000, 4, None, None), (3, "psum", "read", 0, 4, 0, 1),
    ]
    (layer,) = result.layers
    assert (layer.steps, layer.stall_cycles, layer.total_cycles_incl_prefetch, layer.macs,
            layer.window_cycles) == (5, 0, 8, 12, 5)
    assert layer.compute_util_pct == pytest.approx(60.0)
    assert result.trace.manifest.extra["array"] == {
        "engine": "tensor", "rows": 2, "cols": 2, "window_cycles": {"L0": 5},
        "window": "cycles of SCALE-Sim's folds per layer (Compute Util's denominator)"}
    machine = parse_machine(tomllib.loads(result.machine_toml), "tiny")
    # Model: the 1-row prefetches take 1 + 1 cycles, 5 steps, then 4 words at 1 word/cycle.
    assert replay(result.trace, machine).makespan == 2 + 5 + 4


def test_fold_geometry_and_macs() -> None:
    def cfg(dataflow: Dataflow) -> ScaleSimConfig:
        return ScaleSimConfig("x", 4, 3, 1, 1, 1, dataflow, BandwidthMode.USER, 1, (10, 10))

    layer = GemmLayer("L", m=10, n=7, k=5)
    for dataflow, (t, steps, window, count) in {
            Dataflow.OS: (5, 5 + 4 + 3 - 2, 5 + 4 + 3 - 2, 3 * 3),
            Dataflow.WS: (10, 8 + 3 + 10 - 2, 8 + 6 + 10 - 3, 2 * 3),
            Dataflow.IS: (7, 8 + 3 + 7 - 2, 8 + 6 + 7 - 3, 2 * 4)}.items():
        folds = fold_layer(layer, cfg(dataflow))
        assert (folds.t, folds.steps, folds.window, folds.count) == (t, steps, window, count)
        macs = step_macs(folds).reshape(folds.count, folds.steps)
        assert macs.sum(axis=1).tolist() == (folds.rows_used * folds.cols_used * t).tolist()
        assert int(macs.sum()) == 10 * 7 * 5
        assert macs.max() <= 4 * 3


def scalesim_serve(cycle: int, ends: list[int]) -> int:
    """When SCALE-Sim (read_buffer.service_reads) serves a step demanded at `cycle` whose
    misses issue bursts ending at `ends`: off = 1 (the hit latency), and per burst
    pot = end - (cycle + off), off += pot, and again when pot > 0."""
    off = 1
    for end in ends:
        pot = end - (cycle + off)
        off += pot + max(pot, 0)
    return cycle + off


def test_miss_steps_follow_scalesims_arithmetic() -> None:
    demand = np.arange(11)
    ends = [-1, 6, 20, 30, 44]
    served = demand[:-1] + 1
    served[3] = scalesim_serve(3, [6])             # waits twice the 2 cycles burst 1 needs
    served[5] = scalesim_serve(5, [20, 30])        # two bursts: 34, then back to 30
    served[7] = scalesim_serve(7, [44])
    assert served[3:8].tolist() == [8, 5, 30, 7, 80]
    table = TraceTable(Path("IFMAP_SRAM_TRACE.csv"), served, np.zeros((10, 1), np.int64))
    assert miss_steps(table, np.array(ends), demand).tolist() == [0, 3, 5, 5, 7]
    # A burst that ends just when its step wants it (pot = 0) leaves no mark: it goes to the
    # step demanded the cycle before it ends.
    table = TraceTable(Path("IFMAP_SRAM_TRACE.csv"), demand[:-1] + 1, np.zeros((10, 1), np.int64))
    assert miss_steps(table, np.array([-1, 8]), demand).tolist() == [0, 7]
    # A burst that ended long before its miss pulls the stamp back (pot < 0).
    served = demand[:-1] + 1
    served[6] = scalesim_serve(6, [2])
    assert served[6] == 2
    table = TraceTable(Path("IFMAP_SRAM_TRACE.csv"), served, np.zeros((10, 1), np.int64))
    assert miss_steps(table, np.array([-1, 2]), demand).tolist() == [0, 6]
    # A stamp no run of bursts explains is an inconsistent trace.
    served[6] = 3
    table = TraceTable(Path("IFMAP_SRAM_TRACE.csv"), served, np.zeros((10, 1), np.int64))
    with pytest.raises(ScaleSimError, match="line 7: the step served at cycle 3 matches no"):
        miss_steps(table, np.array([-1, 2]), demand)


def test_echo_plan_pairs_two_reflections() -> None:
    """Bursts of 20 rows (one every 21 cycles): step 12 misses burst 1 (ends at 20) at T = 13
    and is served at 27; step 16 misses burst 2 (ends at 41) at T = 31, served at 51 =
    2 x 41 - 31 = 8 + 2 x 21 + 1: after step 7 (it ends at 8), two copies of burst 2, then step
    16. Step 12, reflected about the array's start with 12 steps before it and 3 after, stays
    unechoed."""
    demand = np.r_[np.arange(13), np.arange(27, 31), np.arange(51, 55)]
    served = demand[:-1] + 1
    served[12], served[16] = scalesim_serve(12, [20]), scalesim_serve(30, [41])
    assert (served[12], served[16]) == (27, 51) == (demand[13], demand[17])
    plan = echo_plan(demand, {"ifmap": served, "filter": demand[:-1] + 1}, demand[:-1],
                     {"ifmap": np.array([-1, 20, 41]), "filter": np.array([-1])},
                     {"ifmap": np.array([0, 12, 16]), "filter": np.array([0])})
    assert plan.echoes == (Echo(16, ("step", "", 7), (("ifmap", 2), ("ifmap", 2)), 8),)
    assert plan.unechoed == (12,)


def test_echo_plan_second_burst_after_the_first_arrived() -> None:
    """Step 5's misses issue burst 1, ended at 3, and burst 2, ending at 14: SCALE-Sim serves it
    at 2 x 14 - 3 = 25, a period of burst 2 (11 cycles) after burst 2 ends: one copy of burst 2
    after burst 2, then step 7 (25 + 2: the copy's set-up and the last row's own cycle)."""
    demand = np.r_[np.arange(6), np.arange(25, 32)]
    served = demand[:-1] + 1
    served[5] = scalesim_serve(5, [3, 14])
    assert served[5] == 25 == demand[6]
    plan = echo_plan(demand, {"ifmap": served, "filter": demand[:-1] + 1}, demand[:-1],
                     {"ifmap": np.array([-1, 3, 14]), "filter": np.array([-1])},
                     {"ifmap": np.array([0, 5, 5]), "filter": np.array([0])})
    assert plan == EchoPlan((Echo(7, ("burst", "ifmap", 2), (("ifmap", 2),), 15),), ())


def test_reference_run_echoes(imported: dict[str, Any]) -> None:
    """gemm96x64x128_16x16_ws_user_bw8 (module docstring): every second ifmap stall is echoed,
    the first by two copies of burst 2 from the end of step 379 to the start of step 1152."""
    result, machine = imported["get"]("gemm96x64x128_16x16_ws_user_bw8")
    (layer,) = result.layers
    assert layer.echoes == 5
    assert [step for step, _ in layer.unechoed] == [766, 1507, 2288, 3038, 3779]
    inst = result.trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    deps = result.trace.read("deps")
    first = inst.filter(pl.col("engine") == shadow_engine("ifmap", 0)).row(0, named=True)
    (anchor,) = deps.filter(pl.col("dst") == first["id"])["src"].to_list()
    assert inst.filter(pl.col("id") == anchor).select(pl.col("pc") + pl.col("elements")).item() \
        == 380
    (second,) = deps.filter(pl.col("src") == first["id"])["dst"].to_list()
    (target,) = deps.filter(pl.col("src") == second)["dst"].to_list()
    assert inst.filter(pl.col("id") == target).select("engine", "pc").row(0) == ("tensor", 1152)
    assert first["bytes"] == 820 * 10
    assert machine.latency(first["engine"], "burst_shadow").per_byte == 0.1


@pytest.mark.parametrize("name", ["gemm96x64x128_16x16_ws_user_bw8",
                                  "gemm72x32x96_16x32_os_user_bw5_sram16-2-4"])
def test_bugs_find_nothing_in_echoes(name: str, imported: dict[str, Any]) -> None:
    result, machine = imported["get"](name)
    for finding in find_bugs(result.trace, machine):
        assert not any(e.startswith("shadow.") for e in finding.engines), finding.message


def test_read_config(runs: Path) -> None:
    name = "gemm96x64x128_16x16_ws_user_bw8"
    assert read_config(runs / name / "inputs" / f"{name}.cfg") == ScaleSimConfig(
        run_name=name, array_rows=16, array_cols=16, ifmap_sram_kb=16, filter_sram_kb=16,
        ofmap_sram_kb=16, dataflow=Dataflow.WS, bandwidth_mode=BandwidthMode.USER,
        write_bandwidth=8, read_bandwidth=(10, 10), offsets=(0, 10_000_000, 20_000_000))
    name = "gemm64x48x80_16x16_is_calc"
    calc = read_config(runs / name / "inputs" / f"{name}.cfg")
    assert (calc.bandwidth_mode, calc.write_bandwidth, calc.read_bandwidth) == \
        (BandwidthMode.CALC, 16, (10, 10))


# --- the command line -------------------------------------------------------------------------


def test_cli_convert_then_replay_and_analyze(tmp_path: Path, runs: Path) -> None:
    name = "gemm64x48x80_16x16_ws_user_bw4"
    out = tmp_path / "ws"
    result = run("convert", "scalesim", runs / name, "-o", out)
    assert result.exit_code == 0, result.output
    machine = tmp_path / "ws.machine.toml"
    assert f"wrote {out}: " in result.stdout and str(machine) in result.stdout
    assert load_machine(machine).name == f"scalesim-{name}"
    replayed = run("replay", out, "--machine", machine, "--mode", "model", "-f", "json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["makespan_cycles"] - 1 == pytest.approx(3953, rel=0.03)
    analyzed = run("analyze", out, "--machine", machine, "--timeline", "observed", "-f", "json")
    assert analyzed.exit_code == 0, analyzed.output
    (array,) = json.loads(analyzed.stdout)["array"]
    assert (array["layer"], array["stall_cycles"], array["macs"]) == ("L0", 0, 64 * 48 * 80)
    assert array["compute_util_pct"] == pytest.approx(51.2, abs=1e-3)
    # JSON output, and --machine-out.
    again = run("convert", "scalesim", runs / name, "-o", tmp_path / "b", "--machine-out",
                tmp_path / "m.toml", "-f", "json")
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["machine"] == str(tmp_path / "m.toml")
    assert data["layers"][0]["reported_total_cycles_incl_prefetch"] == 3953
    md = run("convert", "scalesim", runs / name, "-o", tmp_path / "c", "-f", "md")
    assert md.exit_code == 0, md.output
    assert md.stdout.startswith(f"# SCALE-Sim run {name}\n\n- **trace**: {tmp_path / 'c'}\n")
    assert "\n| L0 | 1,650 | 0 | 0 | 3,953 | 3,953 | 51.20 | 51.20 |\n" in md.stdout


def test_cli_finds_inputs_beside_the_run(tmp_path: Path, runs: Path) -> None:
    """The reference layout: RUN/ next to inputs/RUN.cfg and inputs/RUN.csv."""
    name = "gemm64x48x80_16x16_os_user_bw4"
    shutil.copytree(runs / name, tmp_path / "runs" / name)
    (tmp_path / "runs" / "inputs").mkdir()
    for found in (tmp_path / "runs" / name / "inputs").iterdir():
        found.rename(tmp_path / "runs" / "inputs" / found.name)
    (tmp_path / "runs" / name / "inputs").rmdir()
    result = run("convert", "scalesim", tmp_path / "runs" / name, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output


def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.machine.toml").exists()
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(("changes", "needles"), [
    ({"COMPUTE_REPORT.csv": None}, ["COMPUTE_REPORT.csv: no such file", "point at the run"]),
    ({"COMPUTE_REPORT.csv": "LayerID, Total\n0, 8, 4,\n"}, ["COMPUTE_REPORT.csv: line 2"]),
    ({"layer0/IFMAP_SRAM_TRACE.csv": None}, ["IFMAP_SRAM_TRACE.csv: missing"]),
    ({"layer0/IFMAP_SRAM_TRACE.csv": "1,0,-1\n2,1,3\n3,2,x\n4,-1,5\n5,-1,-1\n"},
     ["IFMAP_SRAM_TRACE.csv: not a SCALE-Sim trace", "Re-run SCALE-Sim"]),
    ({"layer0/IFMAP_SRAM_TRACE.csv": "1,0,-1\n2,1,3\n3,2.5,4\n4,-1,5\n5,-1,-1\n"},
     ["IFMAP_SRAM_TRACE.csv: line 3: a value that is not a whole number"]),
    ({"layer0/IFMAP_SRAM_TRACE.csv": "1,0,-1\n2,1,3\n3,2,4\n4,-1,5\n"},
     ["IFMAP_SRAM_TRACE.csv: 4 array steps, but", "folds onto a 2x2 os array"]),
    ({"layer0/FILTER_SRAM_TRACE.csv": "1,10000000\n2,10000001\n3,10000002\n4,-1\n5,-1\n"},
     ["FILTER_SRAM_TRACE.csv: line 1: 1 lanes"]),
    ({"layer0/OFMAP_DRAM_TRACE.csv": "4.0,20000002.0\n5.0,20000000.0\n6.0,20000001.0\n"
                                     "7.0,20000003.0\n"},
     ["OFMAP_DRAM_TRACE.csv: the DRAM writes", "in order"]),
    ({"layer0/OFMAP_DRAM_TRACE.csv": ""}, ["OFMAP_DRAM_TRACE.csv: empty"]),
    ({"COMPUTE_REPORT.csv": TINY_FILES["COMPUTE_REPORT.csv"].replace("0, 8, 4, 0,", "0, 8, 4, 3,")},
     ["COMPUTE_REPORT.csv: layer 0: Stall Cycles is 3, but the traces give 0"]),
    ({"COMPUTE_REPORT.csv": TINY_FILES["COMPUTE_REPORT.csv"].replace("60.0,", "61.0,")},
     ["Compute Util is 61 %"]),
    ({f"inputs/{TINY}.cfg": None}, ["cannot find the run's .cfg file", "--config"]),
    ({f"inputs/{TINY}.cfg": TINY_FILES[f"inputs/{TINY}.cfg"].replace("Dataflow : os\n", "")},
     [".cfg: [architecture_presets] has no Dataflow"]),
    ({f"inputs/{TINY}.cfg": TINY_FILES[f"inputs/{TINY}.cfg"].replace("ArrayHeight: 2",
                                                                      "ArrayHeight: two")},
     ["ArrayHeight = 'two' is not a whole number"]),
    ({f"inputs/{TINY}.cfg": TINY_FILES[f"inputs/{TINY}.cfg"].replace(
        "SparsitySupport : false", "SparsitySupport : true")}, ["SparsitySupport is on"]),
    ({f"inputs/{TINY}.csv": "Layer Name, M, N, K,\nL0, 2, 2,\n"},
     [f"{TINY}.csv: line 2: expected 'name, M, N, K'", "--topology"]),
    ({f"inputs/{TINY}.csv": "Layer Name, M, N, K,\nL0, 2, 3, 3,\n"},
     ["IFMAP_SRAM_TRACE.csv", "folds onto a 2x2 os array"]),
])
def test_cli_bad_input(tmp_path: Path, changes: dict[str, str | None],
                       needles: list[str]) -> None:
    source = tiny_run(tmp_path, **changes)
    result = run("convert", "scalesim", source, "-o", tmp_path / "out")
    assert_failed_cleanly(result, 1, *needles)
    _no_output(tmp_path)


CFG = TINY_FILES[f"inputs/{TINY}.cfg"]


@pytest.mark.parametrize(("changes", "needles"), [
    # issue 18: each of these raised (InterpolationMissingOptionError, OverflowError), tried to
    # allocate exabytes, or imported a mangled address with a RuntimeWarning and exit 0.
    ({f"inputs/{TINY}.cfg": CFG.replace("Bandwidth : 1", "Bandwidth : %(foo)s")},
     ["Bandwidth = '%(foo)s' is not a whole number"]),
    ({f"inputs/{TINY}.cfg": CFG.replace("ArrayHeight: 2", "ArrayHeight: 99999999999999999999")},
     ["ArrayHeight = 99,999,999,999,999,999,999; tracekit takes at most 65,536"]),
    ({f"inputs/{TINY}.csv": "Layer Name, M, N, K,\nL0, 9223372036854775807, 32, 16,\n"},
     ["line 2: expected 'name, M, N, K' with positive whole numbers below 2**53"]),
    ({f"inputs/{TINY}.csv": "Layer Name, M, N, K,\nL0, 4503599627370496, 32, 16,\n"},
     ["5 array steps, but L0 (4503599627370496x32x16)", "36,028,797,018,963,968 x"]),
    ({"layer0/IFMAP_DRAM_TRACE.csv": "-1.0,0.0,1.0,3.0,2.0,4.0,5.0,-1.0,-1.0,-1.0,1e300\n"},
     ["IFMAP_DRAM_TRACE.csv: line 1: a value that is not a whole number below 2**53"]),
])
def test_cli_hostile_sizes_refused(tmp_path: Path, changes: dict[str, str | None],
                                   needles: list[str]) -> None:
    source = tiny_run(tmp_path, **changes)
    assert_failed_cleanly(run("convert", "scalesim", source, "-o", tmp_path / "out"), 1, *needles)
    _no_output(tmp_path)


def test_cli_bad_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_failed_cleanly(run("convert", "scalesim", tmp_path / "nope", "-o", out), 1,
                          "nope: no such folder", "COMPUTE_REPORT.csv")
    (tmp_path / "file").write_text("x")
    assert_failed_cleanly(run("convert", "scalesim", tmp_path / "file", "-o", out), 1,
                          "file: is a file, not folder")
    _no_output(tmp_path)


def test_cli_refuses_to_replace_without_force(tmp_path: Path) -> None:
    source = tiny_run(tmp_path)
    assert run("convert", "scalesim", source, "-o", tmp_path / "out").exit_code == 0
    assert_failed_cleanly(run("convert", "scalesim", source, "-o", tmp_path / "out"), 1,
                          "out.machine.toml: already exists", "--force")
    (tmp_path / "out.machine.toml").unlink()
    assert_failed_cleanly(run("convert", "scalesim", source, "-o", tmp_path / "out"), 1,
                          "out: already exists", "--force")
    assert not (tmp_path / "out.machine.toml").exists()   # nothing half-written
    assert run("convert", "scalesim", source, "-o", tmp_path / "out", "--force").exit_code == 0
    assert_failed_cleanly(run("convert", "scalesim", source, "-o", tmp_path / "x",
                              "--machine-out", tmp_path / "no" / "m.toml"), 1, "no such folder")


def test_array_table_of_a_declared_array(tmp_path: Path) -> None:
    """analyze's array figures on a trace built by hand: a window declared per layer, or
    the busy cycles when the trace declares none; the gap before a layer's first instruction
    is not a stall."""
    from tracekit.trace.builder import TraceBuilder

    b = TraceBuilder("arr")
    load = b.inst("dma.q0", "dma_load", 0, 10, bytes=64, layer="a")
    first = b.inst("tensor", "matmul", 10, 20, elements=10, flops=2 * 160, layer="a")
    b.inst("tensor", "matmul", 25, 35, elements=10, flops=2 * 80, layer="a")
    b.inst("tensor", "matmul", 50, 60, elements=10, flops=2 * 40, layer="b")
    b.dep(load, first)
    declared = {"engine": "tensor", "rows": 4, "cols": 4, "window_cycles": {"a": 25}}
    trace = b.write(tmp_path / "t", extra={"array": declared})
    frame = trace.read("instructions")
    table = array_table(trace, frame)
    assert table is not None
    assert table.select("layer", "macs", "window_cycles", "busy_cycles", "stall_cycles").rows() == [
        ("a", 240, 25, 20, 5), ("b", 40, 10, 10, 0), ("all", 280, 35, 30, 5)]
    assert table["compute_util_pct"].to_list() == pytest.approx(
        [100 * 240 / (16 * 25), 100 * 40 / (16 * 10), 100 * 280 / (16 * 35)])
    plain = TraceBuilder("plain")
    plain.inst("tensor", "matmul", 0, 10, flops=2)
    assert array_table(plain.write(tmp_path / "p"), frame) is None
