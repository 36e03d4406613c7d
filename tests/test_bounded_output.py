"""Bounded reports (issue 19): JSON lists at most `LISTED` rows of each ranking, and
`critical-path --full` writes every path step and near-critical instruction as Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

import tracekit
from tracekit.cli import render
from tracekit.cli.app import app
from tracekit.cli.commands.analyses import LISTED

ROOT = Path(__file__).resolve().parents[1]
GEMM = ROOT / "sample_traces" / "gemm"
runner = CliRunner()


def test_full_lists_agree_with_the_json(tmp_path: Path) -> None:
    full = tmp_path / "full.parquet"
    result = runner.invoke(app, ["critical-path", str(GEMM), "-f", "json", "--full", str(full)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    table = pl.read_parquet(full)
    path = table.filter(pl.col("list") == "path")
    near = table.filter(pl.col("list") == "near_critical")
    assert data["steps"] == data["path_listed"] == path.height == len(data["path"]) < LISTED
    assert path["id"].to_list() == [s["id"] for s in data["path"]]
    assert path["rank"].to_list() == list(range(path.height))
    assert path["counted"].sum() + path["gap"].sum() == data["makespan_cycles"]
    assert (path["slack"] == 0).all()
    listed = data["near_critical"]["instructions"]
    assert data["near_critical"]["count"] == near.height == len(listed)
    assert near.select("id", "slack", "engine", "opcode", "start", "end").to_dicts() == [
        {k: row[k] for k in ("id", "slack", "engine", "opcode", "start", "end")}
        for row in listed]
    assert near["slack"].is_sorted() and (near["slack"] > 0).all()


def test_a_long_path_is_cut_to_its_longest_steps_in_path_order() -> None:
    report = tracekit.critical_path(GEMM)
    steps = report.path.steps
    data = render.critical_path_to_dict(report.path, 5)
    assert (data["steps"], data["path_listed"], len(data["path"])) == (steps.height, 5, 5)
    longest = set(steps.sort(["duration", "id"], descending=[True, False])["id"][:5])
    ids = [s["id"] for s in data["path"]]
    assert set(ids) == longest
    place = {i: k for k, i in enumerate(steps["id"].to_list())}
    assert ids == sorted(ids, key=place.__getitem__)


def test_an_existing_full_file_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full.parquet"
    full.write_bytes(b"keep")
    result = runner.invoke(app, ["critical-path", str(GEMM), "--full", str(full)])
    assert result.exit_code == 1
    assert "already exists" in result.stderr and full.read_bytes() == b"keep"
    result = runner.invoke(app, ["critical-path", str(GEMM), "--full", str(full), "--force"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(full).height > 0


def test_a_full_file_not_named_parquet_is_refused(tmp_path: Path) -> None:
    """--full writes Parquet only: a .csv name is a usage error, and nothing is written."""
    full = tmp_path / "full.csv"
    result = runner.invoke(app, ["critical-path", str(GEMM), "--full", str(full)])
    assert result.exit_code == 2
    assert "--full writes a Parquet table; name the file with .parquet" in result.stderr
    assert list(tmp_path.iterdir()) == []
