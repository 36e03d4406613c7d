"""Analyses whose cost follows the trace's size, not the square of its engine count or the
number of distinct names (issue 18): 1,000 engines took 13.8 s and 1.3 GB in `stalls`, 3,000
took 136 s, 10,000 ran out of memory; `sensitivity` replayed once per distinct name (6,272
opcodes never finished)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.stalls import stall_table
from tracekit.analysis.whatif import GROUP_LIMIT, rank_changes, sensitivity
from tracekit.cli.app import app
from tracekit.replay.machine import resolve_machine
from tracekit.trace.bundle import write_trace

runner = CliRunner()


def wide(tmp_path: Path, n: int, *, engines: bool) -> tracekit.Trace:
    """With `engines`: n engines e0..e(n-1), each running one instruction early and one late;
    the late one of every third engine waits on a signal of the next engine's early one (so
    there are n / 3 waiting pairs). Else one engine running n instructions of n opcodes."""
    if engines:
        i = np.arange(n, dtype=np.int64)
        instructions = pl.DataFrame({
            "id": np.r_[i, n + i], "engine": [f"e{k}" for k in range(n)] * 2,
            "seq": np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)],
            "opcode": ["add"] * (2 * n),
            "start": np.r_[20 * i, 20 * (n + i)], "end": np.r_[20 * i, 20 * (n + i)] + 10})
        waiting = i[: n - 1: 3]
        semaphores = pl.DataFrame({
            "inst": np.r_[waiting + 1, n + waiting], "sem": np.r_[waiting, waiting],
            "op": ["signal"] * waiting.size + ["wait"] * waiting.size,
            "value": np.ones(2 * waiting.size, dtype=np.int64)})
        return write_trace(tmp_path / "wide", instructions, semaphores=semaphores,
                           workload="wide", created=None)
    ids = np.arange(n, dtype=np.int64)
    instructions = pl.DataFrame({
        "id": ids, "engine": ["vector"] * n, "seq": ids,
        "opcode": [f"op{k}" for k in range(n)], "start": ids * 10, "end": ids * 10 + 10})
    return write_trace(tmp_path / "wide", instructions, workload="wide", created=None)


def test_stalls_of_10000_engines_take_the_pairs_that_occur(tmp_path: Path) -> None:
    trace = wide(tmp_path, 10_000, engines=True)
    line = tracekit.api.choose(trace, None, "auto", tables=None).line
    began = time.perf_counter()
    table = stall_table(line.frame)
    assert time.perf_counter() - began < 5
    waits = table.filter(pl.col("bucket") == "waiting", pl.col("cause").str.ends_with("/semaphore"))
    assert waits.height == 3_333   # one producer per waiting engine, not 10,000 x 10,000
    assert waits.row(0, named=True)["cause"] == "e1/semaphore"
    sums = table.group_by("engine").agg(pl.col("cycles").sum())["cycles"].unique().to_list()
    assert sums == [int(line.frame["end"].max())]


def test_sensitivity_ranks_the_busiest_groups_only_by_default(tmp_path: Path) -> None:
    trace = wide(tmp_path, 2_000, engines=False)
    machine = resolve_machine(None)
    began = time.perf_counter()
    ranked = rank_changes(trace, machine)
    assert time.perf_counter() - began < 30
    opcodes = ranked.table.filter(pl.col("group") == "opcode")
    assert opcodes.height == GROUP_LIMIT and ranked.skipped == 2_000 - GROUP_LIMIT
    everything = rank_changes(trace, machine, limit=None)
    assert everything.skipped == 0
    assert everything.table.filter(pl.col("group") == "opcode").height == 2_000


def test_sensitivity_limit_keeps_the_most_busy_time(tmp_path: Path) -> None:
    from tracekit.trace.builder import TraceBuilder

    b = TraceBuilder("busy")
    for i in range(GROUP_LIMIT + 5):
        b.inst("vector", f"op{i:03d}", elements=100_000 * (1 + i))   # op054: the busiest
    trace = b.write(tmp_path / "busy")
    ranked = rank_changes(trace, resolve_machine(None))
    names = set(ranked.table.filter(pl.col("group") == "opcode")["name"])
    assert names == {f"op{i:03d}" for i in range(5, GROUP_LIMIT + 5)}
    assert ranked.skipped == 5
    assert sensitivity(trace, resolve_machine(None)).filter(
        pl.col("group") == "opcode").height == GROUP_LIMIT + 5   # the library call: all


@pytest.mark.parametrize("command", ["analyze", "sensitivity"])
def test_cli_says_how_many_groups_were_skipped(tmp_path: Path, command: str) -> None:
    trace = wide(tmp_path, 300, engines=False)
    result = runner.invoke(app, [command, str(trace.path), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert '"sensitivity_skipped": 250' in result.stdout
    every = runner.invoke(app, [command, str(trace.path), "-f", "json", "--all-groups"])
    assert every.exit_code == 0 and "sensitivity_skipped" not in every.stdout
