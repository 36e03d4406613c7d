"""`tracekit sweep`: exact figures on a tiny trace built here, the seeded sample, the Pareto front
and the axes' influence on hand-made tables, agreement with `whatif`, the same bytes whichever
way the points are run, and every kind of bad input refused cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import tracekit
from conftest import assert_failed_cleanly
from tracekit.analysis.sweep import (
    Axis,
    SweepError,
    choose_points,
    influence,
    load_grid_file,
    pareto_front,
    parse_grid,
    value_indices,
)
from tracekit.cli.app import app
from tracekit.trace.builder import TraceBuilder

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"

MACHINE = """
name = "sweep-test"
clock_hz = 1.0e9
[hbm]
bytes_per_cycle = 64.0
[dma]
bytes_per_cycle = 64.0
[latency]
semaphore = 0.0
data = 0.0
[memory]
partitions = 128
sbuf_partition_bytes = 196608
psum_partition_bytes = 16384
[engines.tensor]
fixed_cycles = 100.0
[engines.dma]
fixed_cycles = 0.0
per_byte = 0.0
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A matmul of 100 cycles (id 0) and an independent transfer of 6400 bytes (id 1): 100
    cycles at 64 B/cycle of HBM, 200 at 32."""
    folder = tmp_path_factory.mktemp("sweep")
    b = TraceBuilder("tiny-sweep")
    b.inst("tensor", "matmul", flops=1 << 20)
    b.inst("dma.q0", "dma_load", bytes=6400)
    b.write(folder / "tiny")
    machine = folder / "machine.toml"
    machine.write_text(MACHINE, encoding="utf-8")
    return folder / "tiny", machine


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_a_two_by_two_grid_exactly(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    trace, machine = tiny
    out = tmp_path / "s.parquet"
    result = run("sweep", str(trace), "-m", str(machine), "--grid", "hbm_bandwidth=32,64",
                 "--grid", "engine=tensor:1,3", "-o", str(out), "--workers", "1",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    assert table.columns == ["point", "hbm_bandwidth", "engine=tensor", "makespan",
                             "busy_dma.q0", "busy_tensor", "contention", "binding_engine"]
    assert table.rows() == [
        (0, 32.0, 1.0, 200, 100, 100, 100, "dma.q0"),  # busy is without HBM contention
        (1, 32.0, 3.0, 300, 100, 300, 100, "tensor"),
        (2, 64.0, 1.0, 100, 100, 100, 0, "tensor"),  # a tie: the lower id ends the path
        (3, 64.0, 3.0, 300, 100, 300, 0, "tensor"),
    ]
    report = json.loads(result.stdout)
    assert report["points"] == 4 and report["base_makespan_cycles"] == 100
    assert report["best_makespan_cycles"] == 100
    # hbm_bandwidth: means 250 and 200 (range 50); engine=tensor: 150 and 300 (range 150).
    assert report["matters_most"] == "engine=tensor"
    assert [r["axis"] for r in report["axes"]] == ["engine=tensor", "hbm_bandwidth"]
    assert [r["range"] for r in report["axes"]] == [150.0, 50.0]
    assert "pareto_front" not in report and report["cost"] is None


def test_grid_file_weights_give_a_cost_and_a_front(tiny: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    trace, machine = tiny
    grid = tmp_path / "grid.toml"
    grid.write_text('[axes]\nhbm_bandwidth = [32, 64]\n"engine=tensor" = [1, 3]\n'
                    '[cost]\nhbm_bandwidth = [1, 2]\n"engine=tensor" = [2, 1]\n',
                    encoding="utf-8")
    report = tracekit.sweep(trace, machine=machine, grid_file=grid)
    assert report.table["cost"].to_list() == [3.0, 2.0, 4.0, 3.0]
    # (makespan, cost): 0 (200, 3), 1 (300, 2), 2 (100, 4), 3 (300, 3): 3 is beaten by 0.
    assert report.front["point"].to_list() == [1, 0, 2]
    assert report.front.columns == report.table.columns
    # --cost replaces it with an expression over the columns.
    again = tracekit.sweep(trace, machine=machine, grid_file=grid,
                           cost='hbm_bandwidth / 32 + "engine=tensor"')
    assert again.table["cost"].to_list() == [2.0, 4.0, 3.0, 5.0]
    assert "Pareto front" in again.markdown() and "engine=tensor" in str(again)


def test_pareto_front_on_a_hand_made_table() -> None:
    table = pl.DataFrame({"point": [0, 1, 2, 3, 4, 5, 6],
                          "cost": [1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0],
                          "makespan": [900, 800, 800, 700, 750, 500, 500]})
    front = pareto_front(table)
    # 0 is beaten by 1 (same cost, faster); 2 by 1; 4 by 3; 5 and 6 tie and both stay.
    assert front["point"].to_list() == [1, 3, 5, 6]


def test_influence_on_a_hand_made_table() -> None:
    # The module docstring's example.
    table = pl.DataFrame({"point": [0, 1, 2, 3], "hbm_bandwidth": [96.0, 96.0, 192.0, 192.0],
                          "engine=tensor": [1.0, 0.5, 1.0, 0.5],
                          "makespan": [1200, 1180, 900, 610]})
    ranked = influence(table, ["hbm_bandwidth", "engine=tensor"])
    assert ranked.rows() == [("hbm_bandwidth", 2, 192.0, 755.0, 1190.0, 435.0),
                             ("engine=tensor", 2, 0.5, 895.0, 1050.0, 155.0)]


def test_sampling_is_seeded_and_distinct() -> None:
    axes = [Axis("hbm_bandwidth", "parameter", "hbm_bandwidth", tuple(range(1, 101))),
            Axis("engine=tensor", "engine", "tensor", tuple(np.linspace(0.1, 2, 50)))]
    first = choose_points(axes, 40, seed=7)
    assert first.tolist() == choose_points(axes, 40, seed=7).tolist()
    assert first.tolist() != choose_points(axes, 40, seed=8).tolist()
    assert np.unique(first).size == 40 and first.min() >= 0 and first.max() < 5000
    assert first.tolist() == sorted(first.tolist())
    assert choose_points(axes[:1], 500, seed=7).tolist() == list(range(100))
    hbm, tensor = value_indices(axes, np.array([0, 49, 50, 4999]))
    assert hbm.tolist() == [0, 0, 1, 99] and tensor.tolist() == [0, 49, 0, 49]


def test_a_sampled_sweep_is_the_same_twice(tiny: tuple[Path, Path]) -> None:
    trace, machine = tiny
    grid = ["hbm_bandwidth=16,32,48,64,80", "engine=tensor:0.5,1,2,3"]
    one = tracekit.sweep(trace, grid, machine, samples=6, seed=3)
    two = tracekit.sweep(trace, grid, machine, samples=6, seed=3)
    assert one.table.equals(two.table) and one.table.height == 6
    assert "6 of 20 (sampled with seed 3)" in str(one)


@pytest.mark.parametrize("name", ["mlp", "conv2d"])
def test_a_point_agrees_with_whatif(name: str) -> None:
    trace = SAMPLES / name
    report = tracekit.sweep(trace, ["engine=tensor:1,0.5", "hbm_bandwidth=96,384"])
    for row in report.table.iter_rows(named=True):
        check = tracekit.whatif(trace, scale={"engine": {"tensor": row["engine=tensor"]}},
                                set={"hbm_bandwidth": row["hbm_bandwidth"]})
        assert row["makespan"] == check.makespan
        assert report.result.base_makespan == check.base_makespan
    # And through the command line.
    result = run("whatif", str(trace), "--scale", "engine=tensor:0.5", "--set",
                 "hbm_bandwidth=96", "--format", "json")
    assert json.loads(result.stdout)["makespan_cycles"] == \
        report.table.filter(pl.col("point") == 2)["makespan"][0]


def test_same_bytes_in_process_on_local_processes_and_on_dask(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    trace = str(SAMPLES / "mlp")
    grid = ["--grid", "hbm_bandwidth=96,192,384", "--grid", "engine=tensor:1,0.5",
            "--grid", "semaphore_latency=12,48"]

    def sweep_with(folder: str, *how: str) -> tuple[bytes, dict]:
        out = tmp_path / folder / "sweep.parquet"
        out.parent.mkdir()
        result = run("sweep", trace, *grid, "-o", str(out), "--format", "json", *how)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        report.pop("output")
        return out.read_bytes(), report

    expected = sweep_with("inline", "--workers", "1")
    assert sweep_with("local2", "--workers", "2") == expected
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      processes=False, dashboard_address=None) as cluster:
            got = sweep_with(f"dask{workers}", "--scheduler", cluster.scheduler_address,
                             "--workers", str(workers + 1))
        assert got == expected


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--grid", "l2_bandwidth=1,2"], 1, ["unknown axis 'l2_bandwidth'", "hbm_bandwidth",
                                         "engine=NAME"]),
    (["--grid", "engine=tensor:1,abc"], 1, ["engine=tensor", "'abc' is not a number"]),
    (["--grid", "hbm_bandwidth=0,96"], 1, ["hbm_bandwidth", "outside"]),
    (["--grid", "engine=tensor:1,1"], 1, ["lists the value 1 twice"]),
    (["--grid", "hbm_bandwidth="], 1, ["has no values"]),
    (["--grid", "engine=tensor"], 1, ["GROUP=NAME:F1,F2"]),
    (["--grid", "engine=gpsimd:1,2"], 1, ["no engine 'gpsimd'", "dma.q0, tensor"]),
    (["--grid", "hbm_bandwidth=32", "--grid", "hbm_bandwidth=64"], 1, ["given twice"]),
    ([], 2, ["--grid"]),
    (["--grid", "hbm_bandwidth=32", "--cost", "nope + 1"], 1, ["--cost 'nope + 1'",
                                                              "the columns are point"]),
    (["--grid", "hbm_bandwidth=32", "--mode", "fast"], 1, ["mode 'fast'"]),
])
def test_bad_input_is_refused_cleanly(tiny: tuple[Path, Path], tmp_path: Path,
                                      args: list[str], code: int, needles: list[str]) -> None:
    trace, machine = tiny
    out = tmp_path / "s.parquet"
    result = run("sweep", str(trace), "-m", str(machine), "-o", str(out), "--workers", "1",
                 *args)
    assert_failed_cleanly(result, code, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_an_existing_output_is_kept_unless_forced(tiny: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    trace, machine = tiny
    out = tmp_path / "s.parquet"
    out.write_bytes(b"keep me")
    args = ["sweep", str(trace), "-m", str(machine), "-o", str(out), "--workers", "1",
            "--grid", "hbm_bandwidth=32,64"]
    assert_failed_cleanly(run(*args), 1, "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    assert run(*args, "--force").exit_code == 0
    assert pl.read_parquet(out).height == 2


@pytest.mark.parametrize(("text", "needle"), [
    ("[axes]\n", "must list at least one axis"),
    ("[axes]\nhbm_bandwidth = 96\n", "must be a list"),
    ("[axes]\nhbm_bandwidth = [96]\n[cost]\nhbm_bandwidth = [1, 2]\n", "must list 1 finite"),
    ("[axes]\nhbm_bandwidth = [96]\n[cost]\ndma_bandwidth = [1]\n", "names no axis"),
    ("[axes]\nhbm_bandwidth = [96]\n[weights]\n", "not a grid file key"),
    ("[axes\n", "not valid TOML"),
])
def test_grid_file_errors(tmp_path: Path, text: str, needle: str) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(text, encoding="utf-8")
    with pytest.raises(SweepError, match=needle):
        load_grid_file(grid)


def test_parse_grid_spellings() -> None:
    assert parse_grid("engine=dma.q0:1,0.5") == Axis("engine=dma.q0", "engine", "dma.q0",
                                                    (1.0, 0.5))
    assert parse_grid("semaphore_latency=0,24").values == (0.0, 24.0)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_trace_whose_replay_is_stuck_exits_3_as_replay_does(tmp_path: Path,
                                                              workers: str) -> None:
    """The same exit code and message as `tracekit replay` gives, in process or from a worker,
    and no output."""
    b = TraceBuilder("stuck")
    one = b.inst("tensor", "mm")
    two = b.inst("vector", "act")
    b.signal(one, 0)
    b.wait(two, 0, 2)
    b.write(tmp_path / "stuck")
    out = tmp_path / "s.parquet"
    replayed = run("replay", str(tmp_path / "stuck"))
    assert replayed.exit_code == 3
    result = run("sweep", str(tmp_path / "stuck"), "--grid", "hbm_bandwidth=32,64", "-o",
                 str(out), "--workers", workers)
    assert_failed_cleanly(result, 3, "waits for semaphore 0 to reach 2")
    assert result.stderr == replayed.stderr
    assert not out.exists()
