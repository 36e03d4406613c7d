"""Every engine figure defined once (`tracekit.analysis.figures`): exact values on a tiny trace,
the same values through every command that reports them, and the glossary that defines them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from tracekit.analysis.figures import GLOSSARY, engine_figures, glossary_markdown
from tracekit.cli.app import app
from tracekit.replay.machine import parse_machine
from tracekit.replay.run import replay
from tracekit.trace.builder import TraceBuilder
from tracekit.workloads.generate import generate

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _machine_doc() -> dict[str, Any]:
    """HBM 60 B/cycle shared by queues of 40 B/cycle; the tensor engine does 100 FLOPs a
    cycle; DMA set-up 0; no latency on edges."""
    return {"name": "figures", "clock_hz": 1.0e9, "hbm": {"bytes_per_cycle": 60.0},
            "dma": {"bytes_per_cycle": 40.0}, "latency": {"semaphore": 0.0, "data": 0.0},
            "memory": {"partitions": 128, "sbuf_partition_bytes": 196608,
                       "psum_partition_bytes": 16384},
            "engines": {"default": {"fixed_cycles": 10.0}, "dma": {},
                        "tensor": {"per_flop": 0.01}}}


def _tiny(path: Path) -> Path:
    """Two 400-byte loads at once on two queues (30 B/cycle each of the shared 60: 13.3
    cycles, 10 of them at their own 40 B/cycle), then a matmul of 1,000 FLOPs (10 cycles)
    waiting for both."""
    b = TraceBuilder("figures", clock_hz=None)
    a = b.inst("dma.q0", "dma_load", bytes=400)
    c = b.inst("dma.q1", "dma_load", bytes=400)
    mm = b.inst("tensor", "matmul", flops=1000)
    b.signal(a, 0)
    b.signal(c, 0)
    b.wait(mm, 0, 2)
    b.write(path)
    return path


def test_engine_figures_exact(tmp_path: Path) -> None:
    import tracekit

    machine = parse_machine(_machine_doc(), "figures")
    trace = tracekit.open_trace(_tiny(tmp_path / "t"))
    result = replay(trace, machine)
    # Ends at 13.3 (cycle 14) for the loads, 23.3 (cycle 24) for the matmul.
    assert result.timeline["end"].to_list() == [14, 14, 24]
    engines, hbm = engine_figures(result.timeline,
                                  trace.read_instructions(["id", "flops", "bytes"]), machine)
    rows = {r["engine"]: r for r in engines.iter_rows(named=True)}
    for queue in ("dma.q0", "dma.q1"):
        assert rows[queue] == pytest.approx({
            "engine": queue, "instructions": 1, "busy_cycles": 10, "busy_pct": 10 / 24 * 100,
            "contention_cycles": 4, "waiting_cycles": 0, "idle_cycles": 10, "flops": 0,
            "flop_util_pct": None, "bytes": 400, "bandwidth": 400 / 24,
            "bandwidth_pct": 400 / 24 / 40 * 100})
    assert rows["tensor"] == pytest.approx({
        "engine": "tensor", "instructions": 1, "busy_cycles": 10, "busy_pct": 10 / 24 * 100,
        "contention_cycles": 0, "waiting_cycles": 0, "idle_cycles": 14, "flops": 1000,
        "flop_util_pct": 1000 / (24 * 100) * 100, "bytes": 0, "bandwidth": None,
        "bandwidth_pct": None})
    assert hbm == pytest.approx({"bytes": 800, "bandwidth": 800 / 24,
                                 "bandwidth_pct": 800 / 24 / 60 * 100})
    # Every engine's cycles fall in exactly one bucket.
    total = engines.select(pl.sum_horizontal("busy_cycles", "contention_cycles",
                                             "waiting_cycles", "idle_cycles"))
    assert total.to_series().to_list() == [24, 24, 24]


def _json(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def untimed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GEMM without observed times: every command's auto timeline is the replayed one."""
    path = tmp_path_factory.mktemp("figures") / "gemm"
    generate("gemm", path, params={"m": 256, "n": 512, "k": 512}, untimed=True, seed=3)
    return path


def test_every_command_reports_the_same_figures(untimed: Path, tmp_path: Path) -> None:
    bundle = str(untimed)
    replayed = _json("replay", bundle, "-f", "json")
    analyzed = _json("analyze", bundle, "-f", "json")
    stalls = pl.DataFrame(_json("stalls", bundle, "-f", "json")["stalls"])
    path = _json("critical-path", bundle, "-f", "json")
    diffed = _json("diff", bundle, bundle, "-f", "json")
    assert analyzed["timeline"] == stalls_timeline(bundle) == path["timeline"] == "replayed"
    suite = tmp_path / "suite.toml"
    suite.write_text(f'name = "figures"\n[[workloads]]\ntrace = "{untimed}"\n')
    done = runner.invoke(app, ["nightly", str(suite), "--history", str(tmp_path / "h"),
                               "--run-id", "r1", "--workers", "1"])
    assert done.exit_code == 0, done.output
    night = pl.read_parquet(next((tmp_path / "h").glob("date=*/run=r1/results.parquet")))

    makespan = replayed["makespan_cycles"]
    assert makespan == analyzed["makespan_cycles"] == path["makespan_cycles"]
    assert makespan == diffed["base_makespan_cycles"] == night["makespan"][0]

    by_engine = {r["engine"]: r for r in replayed["engines"]}
    assert by_engine == {r["engine"]: r for r in analyzed["engines"]}
    bucket = stalls.group_by("engine", "bucket", "cause").agg(pl.col("cycles").sum())

    def stalled(engine: str, which: str, hbm: bool | None = None) -> int:
        rows = bucket.filter((pl.col("engine") == engine) & (pl.col("bucket") == which))
        if hbm is not None:
            rows = rows.filter((pl.col("cause") == "hbm") == hbm)
        return int(rows["cycles"].sum())

    diff_busy = {r["engine"]: r["busy_base"] for r in diffed["by_engine"]}
    night_busy = {e["engine"]: e["busy_pct"] for e in night["engines"][0]}
    for name, row in by_engine.items():
        assert row["busy_cycles"] == stalled(name, "busy") == diff_busy[name]
        assert row["contention_cycles"] == stalled(name, "waiting", hbm=True)
        assert row["waiting_cycles"] == stalled(name, "waiting", hbm=False)
        assert row["idle_cycles"] == stalled(name, "idle")
        assert round(row["busy_pct"], 3) == pytest.approx(night_busy[name])
        assert (row["busy_cycles"] + row["contention_cycles"] + row["waiting_cycles"]
                + row["idle_cycles"]) == makespan
    assert night["stall_cycles"][0] == sum(r["contention_cycles"] + r["waiting_cycles"]
                                           for r in by_engine.values())
    assert replayed["hbm"] == analyzed["hbm"]
    assert replayed["hbm"]["bytes"] == sum(r["bytes"] for r in by_engine.values()) > 0


def stalls_timeline(bundle: str) -> str:
    return _json("stalls", bundle, "-f", "json")["timeline"]


def test_glossary_document_is_the_glossary() -> None:
    assert (ROOT / "docs" / "glossary.md").read_text() == glossary_markdown()
    names = [name for name, _, _ in GLOSSARY]
    for figure in ("makespan", "busy", "HBM contention", "waiting", "stall", "idle",
                   "FLOP utilization", "achieved bandwidth"):
        assert figure in names
    assert "docs/glossary.md" in (ROOT / "README.md").read_text()
