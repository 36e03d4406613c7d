"""The machine description's model effects (warm-up, descriptor-granular transfers, SBUF
partition conflicts): exact replays of tiny traces, their errors, and their absence by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

import tracekit
from tracekit.cli.app import app
from tracekit.replay.machine import Latency, MachineError, parse_machine
from tracekit.replay.run import replay
from tracekit.trace.builder import TraceBuilder

from test_replay import machine_dict, rows


def machine(engines: dict[str, Any], **kwargs: Any):  # type: ignore[no-untyped-def]
    return parse_machine(machine_dict(engines=engines, **kwargs), "test.toml")


def test_effects_are_off_by_default() -> None:
    entry = machine({"tensor": {"fixed_cycles": 10.0}}).latency("tensor", "mm")
    assert entry == Latency(fixed_cycles=10.0)
    assert (entry.per_descriptor, entry.descriptor_bytes, entry.warmup_count,
            entry.warmup_factor, entry.conflict_stretch) == (0.0, 0, 0, 1.0, 1.0)
    m = machine({"tensor": {"fixed_cycles": 10.0}})
    assert not m.warms_up and not m.conflicts


def test_descriptors_round_up(tmp_path: Path) -> None:
    b = TraceBuilder("desc")
    small = b.inst("dma.q0", "dma_load", bytes=4096)
    odd = b.inst("dma.q0", "dma_load", bytes=4097)
    trace = b.write(tmp_path / "t")
    m = machine({"dma": {"fixed_cycles": 10.0, "per_descriptor": 2.0,
                         "descriptor_bytes": 512}}, dma=4096.0, hbm=4096.0)
    got = rows(replay(trace, m))
    # set-up 10 + 2 per 512-byte descriptor (8, then 9), then the bytes at 4096 B/cycle
    assert got[small]["duration"] == 10 + 16 + 1
    assert got[odd]["start"] == got[small]["end"]
    assert got[odd]["end"] - got[odd]["start"] == 10 + 18 + 2  # 4097 bytes: 2 cycles (1.0002)


def test_warmup_takes_the_first_instructions_of_each_engine(tmp_path: Path) -> None:
    b = TraceBuilder("warm")
    mms = [b.inst("tensor", "mm") for _ in range(4)]
    adds = [b.inst("vector", "add") for _ in range(2)]
    trace = b.write(tmp_path / "t")
    m = machine({"tensor": {"fixed_cycles": 64.0, "warmup_count": 2, "warmup_factor": 1.5},
                 "vector": {"fixed_cycles": 10.0}})
    got = rows(replay(trace, m))
    assert [got[i]["duration"] for i in mms] == [96, 96, 64, 64]
    assert [got[i]["duration"] for i in adds] == [10, 10]  # vector has no warm-up


def test_warmup_scales_a_transfer_set_up_and_bytes(tmp_path: Path) -> None:
    b = TraceBuilder("warmdma")
    first = b.inst("dma.q0", "dma_load", bytes=1000)
    second = b.inst("dma.q0", "dma_load", bytes=1000)
    trace = b.write(tmp_path / "t")
    m = machine({"dma": {"fixed_cycles": 10.0, "warmup_count": 1, "warmup_factor": 2.0}},
                dma=10.0, hbm=100.0)
    got = rows(replay(trace, m))
    assert got[first]["duration"] == 2 * (10 + 100)
    assert got[second]["duration"] == 10 + 100
    assert got[first]["contention"] == 0  # warm-up is not HBM contention


def conflict_trace(tmp_path: Path, other_partition: int) -> tuple[tracekit.Trace, int, int]:
    """A DMA load into partitions 0-63 (set-up 10, 1000 bytes at 10 B/cycle: 10 to 110 with
    a 10-cycle set-up) and a vector op on partitions other_partition.. +64 after a 20-cycle
    scalar op, so it starts at 20 while the load is under way."""
    b = TraceBuilder("conflict")
    load = b.inst("dma.q0", "dma_load", bytes=1000)
    b.access(load, "sbuf", "write", 0, 1000, partition=0, partitions=64)
    pre = b.inst("scalar", "act")
    op = b.inst("vector", "add")
    b.access(op, "sbuf", "read", 0, 100, partition=other_partition, partitions=64)
    b.signal(pre, 0)
    b.wait(op, 0, 1)
    return b.write(tmp_path / f"c{other_partition}"), load, op


@pytest.mark.parametrize("partition, stretched", [(32, True), (64, False)])
def test_conflict_stretches_the_instruction_that_starts(tmp_path: Path, partition: int,
                                                        stretched: bool) -> None:
    trace, load, op = conflict_trace(tmp_path, partition)
    m = machine({"default": {"fixed_cycles": 20.0},
                 "vector": {"fixed_cycles": 100.0, "conflict_stretch": 1.25},
                 "dma": {"fixed_cycles": 10.0}}, dma=10.0, hbm=100.0)
    got = rows(replay(trace, m))
    assert got[op]["start"] == 20
    assert got[op]["duration"] == (125 if stretched else 100)
    assert got[load]["duration"] == 110  # the one under way keeps its time
    base = machine({"default": {"fixed_cycles": 20.0}, "vector": {"fixed_cycles": 100.0},
                    "dma": {"fixed_cycles": 10.0}}, dma=10.0, hbm=100.0)
    assert rows(replay(trace, base))[op]["duration"] == 100


def test_conflict_with_a_ready_time_in_the_future(tmp_path: Path) -> None:
    """A vector op whose ready time comes after the event that made it ready (a semaphore
    latency) is looked at when it starts: the load has ended by then, so no stretch."""
    trace, load, op = conflict_trace(tmp_path, 0)
    m = machine({"default": {"fixed_cycles": 20.0},
                 "vector": {"fixed_cycles": 100.0, "conflict_stretch": 1.25},
                 "dma": {"fixed_cycles": 10.0}}, dma=10.0, hbm=100.0, semaphore=95.0)
    got = rows(replay(trace, m))
    assert got[op]["start"] == 115 and got[load]["end"] == 110
    assert got[op]["duration"] == 100


def test_conflict_stretches_a_transfer_without_counting_it_as_contention(
        tmp_path: Path) -> None:
    b = TraceBuilder("dmaconflict")
    op = b.inst("vector", "add")
    b.access(op, "sbuf", "read", 0, 100, partition=0, partitions=128)
    b.inst("dma.q0", "dma_load", bytes=0)  # the load starts at 10, the vector op under way
    load = b.inst("dma.q0", "dma_load", bytes=1000)
    b.access(load, "sbuf", "write", 0, 1000, partition=0, partitions=128)
    trace = b.write(tmp_path / "t")
    m = machine({"vector": {"fixed_cycles": 500.0},
                 "dma": {"fixed_cycles": 10.0, "conflict_stretch": 2.0}}, dma=10.0, hbm=100.0)
    got = rows(replay(trace, m))
    assert got[load]["start"] == 10
    assert got[load]["duration"] == 2 * (10 + 100)
    assert got[load]["contention"] == 0


def test_instructions_starting_together_take_engine_order(tmp_path: Path) -> None:
    """At one time instructions start in engine order (as the reference's do): the load on
    dma.q0 starts first and is not stretched; the vector op, after it, is."""
    b = TraceBuilder("together")
    op = b.inst("vector", "add")
    b.access(op, "sbuf", "read", 0, 100, partition=0, partitions=128)
    load = b.inst("dma.q0", "dma_load", bytes=1000)
    b.access(load, "sbuf", "write", 0, 1000, partition=0, partitions=128)
    trace = b.write(tmp_path / "t")
    m = machine({"vector": {"fixed_cycles": 500.0, "conflict_stretch": 1.5},
                 "dma": {"fixed_cycles": 10.0, "conflict_stretch": 2.0}}, dma=10.0, hbm=100.0)
    got = rows(replay(trace, m))
    assert got[load]["duration"] == 110
    assert got[op]["duration"] == 750


@pytest.mark.parametrize("entry, key, fragment", [
    ({"warmup_count": 2.5}, "engines.tensor.warmup_count", "whole number"),
    ({"warmup_count": -1}, "engines.tensor.warmup_count", "non-negative"),
    ({"warmup_factor": 0}, "engines.tensor.warmup_factor", "positive"),
    ({"conflict_stretch": "x"}, "engines.tensor.conflict_stretch", "must be a number"),
    ({"per_descriptor": 2.0}, "engines.tensor.descriptor_bytes", "go together"),
    ({"descriptor_bytes": 512}, "engines.tensor.per_descriptor", "go together"),
    ({"warmup_cnt": 2}, "engines.tensor", "unknown key"),
    ({"warmup_factor": 30.0}, "engines.tensor.warmup_count", "missing"),
    ({"warmup_count": 4}, "engines.tensor.warmup_factor", "missing"),
    ({"descriptor_bytes": 0, "per_descriptor": 2.0}, "engines.tensor.descriptor_bytes",
     "above 0"),
])
def test_bad_effect_keys_name_file_and_key(entry: dict[str, Any], key: str,
                                           fragment: str) -> None:
    with pytest.raises(MachineError, match=rf"^test\.toml: {key}: .*{fragment}"):
        machine({"tensor": {"fixed_cycles": 1.0, **entry}})


def test_cli_reports_a_bad_effect_key_without_traceback(tmp_path: Path) -> None:
    text = (Path(tracekit.__file__).parent / "replay" / "machines" / "trn-like.toml"
            ).read_text(encoding="utf-8").replace("[engines.tensor]",
                                                  "[engines.tensor]\nwarmup_count = 1.5")
    (tmp_path / "m.toml").write_text(text, encoding="utf-8")
    b = TraceBuilder("x")
    b.inst("tensor", "mm")
    b.write(tmp_path / "t")
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "t"), "--machine",
                                      str(tmp_path / "m.toml")])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "engines.tensor.warmup_count" in result.stderr and "m.toml" in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("sample", ["gemm", "attention", "conv2d"])
def test_replay_properties_hold_with_every_effect_on(sample: str) -> None:
    """On trn-like-effects: engines stay in order, every edge of the resolved graph is
    respected (semaphore edges with their latency), and the run is no shorter than on the
    default machine (every effect only lengthens)."""
    import numpy as np

    from tracekit.replay.graph import SEMAPHORE
    from tracekit.replay.machine import builtin_machine

    trace = tracekit.open_trace(Path(__file__).resolve().parents[1] / "sample_traces" / sample)
    machine = builtin_machine("trn-like-effects")
    result = replay(trace, machine)
    t = result.timeline
    start, end = t["start"].to_numpy(), t["end"].to_numpy()
    graph = result.graph
    dst = graph.destinations()
    lag = np.where(graph.kind == SEMAPHORE, int(machine.semaphore_latency), 0)
    assert (start[dst] >= end[graph.src] + lag - 1).all()  # -1: times rounded up apart
    by_engine = t.sort("engine", "start").group_by("engine", maintain_order=True).agg(
        (pl.col("start").shift(-1) >= pl.col("end")).drop_nulls().all().alias("ordered"))
    assert by_engine["ordered"].all()
    plain = replay(trace, builtin_machine())
    assert result.makespan >= plain.makespan


def test_transfers_in_flight_share_the_queue(tmp_path: Path) -> None:
    """The machine docstring's example: two transfers of set-up 96 and 6400 bytes on a queue
    of 64 B/cycle end at 392 one at a time; with two in flight both set up from 0, share
    32 B/cycle each from 96 and end at 296."""
    b = TraceBuilder("inflight")
    first = b.inst("dma.q0", "dma_load", bytes=6400)
    second = b.inst("dma.q0", "dma_load", bytes=6400)
    trace = b.write(tmp_path / "t")
    one = machine({"dma": {"fixed_cycles": 96.0}}, dma=64.0, hbm=1000.0)
    two = machine({"dma": {"fixed_cycles": 96.0, "max_in_flight": 2}}, dma=64.0, hbm=1000.0)
    got = rows(replay(trace, one))
    assert (got[first]["end"], got[second]["end"]) == (196, 392)
    result = replay(trace, two)
    got = rows(result)
    assert (got[first]["start"], got[second]["start"]) == (0, 0)
    assert (got[first]["end"], got[second]["end"]) == (296, 296)
    assert got[second]["contention"] == 100  # shared with its own queue's other transfer


def test_in_flight_limit_holds_and_queues_share_hbm(tmp_path: Path) -> None:
    """Three transfers on a queue allowing 2 in flight: the third starts when the first ends;
    beside another queue, all share HBM (200 B/cycle) and each queue its own 64 B/cycle."""
    b = TraceBuilder("inflight3")
    q0 = [b.inst("dma.q0", "dma_load", bytes=6400) for _ in range(3)]
    q1 = b.inst("dma.q1", "dma_load", bytes=6400)
    trace = b.write(tmp_path / "t")
    m = machine({"dma": {"fixed_cycles": 0.0, "max_in_flight": 2}}, dma=64.0, hbm=100.0)
    got = rows(replay(trace, m))
    # Max-min fair from 0: q0's two transfers reach its 64 B/cycle at 32 each, q1 takes the
    # 36 left of HBM's 100 and ends at 6400 / 36 = 177.8; q0's pair then still has 32 each
    # (their queue's limit) and ends at 200, when the third starts, alone: 300.
    assert got[q1]["end"] == 178
    assert [got[i]["end"] for i in q0] == [200, 200, 300]
    assert got[q0[2]]["start"] == 200


def test_bad_in_flight_keys_name_file_and_key() -> None:
    with pytest.raises(MachineError, match=r"^test\.toml: engines\.tensor\.max_in_flight: "
                                           r".*only a DMA queue"):
        machine({"tensor": {"fixed_cycles": 1.0, "max_in_flight": 2}})
    with pytest.raises(MachineError, match=r"engines\.dma\.opcodes\.dma_load\.max_in_flight: "
                                           r".*not of an opcode"):
        machine({"dma": {"opcodes": {"dma_load": {"max_in_flight": 2}}}})
    with pytest.raises(MachineError, match=r"engines\.dma\.max_in_flight: .*at least 1"):
        machine({"dma": {"max_in_flight": 0}})


def test_replay_properties_hold_with_transfers_in_flight() -> None:
    """gemm on trn-like-effects with two transfers in flight per queue: every edge of the
    replay's graph (the lanes' order edges included) is respected, no queue ever has more
    than two transfers under way, and the run is no longer than with one."""
    import dataclasses

    import numpy as np

    from tracekit.replay.graph import SEMAPHORE
    from tracekit.replay.machine import builtin_machine

    trace = tracekit.open_trace(Path(__file__).resolve().parents[1] / "sample_traces" / "gemm")
    base = builtin_machine("trn-like-effects")
    engines = dict(base.engines)
    engines["dma"] = dataclasses.replace(engines["dma"], max_in_flight=2)
    result = replay(trace, dataclasses.replace(base, engines=engines))
    t = result.timeline
    start, end = t["start"].to_numpy(), t["end"].to_numpy()
    graph = result.graph
    dst = graph.destinations()
    lag = np.where(graph.kind == SEMAPHORE, int(base.semaphore_latency), 0)
    assert (start[dst] >= end[graph.src] + lag - 1).all()
    for engine, rows_ in t.group_by("engine"):
        if not str(engine[0]).startswith("dma."):
            continue
        events = np.r_[rows_["start"].to_numpy(), rows_["end"].to_numpy()]
        steps = np.r_[np.ones(rows_.height), -np.ones(rows_.height)]
        order = np.lexsort((steps, events))  # at one time, ends first
        assert np.cumsum(steps[order]).max() <= 2
    assert result.makespan <= replay(trace, base).makespan
