"""A prepared replay (`tracekit.replay.prepared`) gives what `replay` gives: the same timeline,
and `measure`'s makespan, busy, contention and critical-path cycles per engine equal the figures
of the full replay's timeline, for the base machine and for several changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tracekit.analysis.critical_path import critical_path
from tracekit.analysis.figures import accounts
from tracekit.analysis.timelines import kind_latencies
from tracekit.analysis.whatif import Change, changed_machine
from tracekit.replay.machine import builtin_machine
from tracekit.replay.prepared import Prepared
from tracekit.replay.run import replay
from tracekit.trace.bundle import open_trace

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"

CHANGES = [
    ({}, []),
    ({"hbm_bandwidth": 96.0}, []),
    ({"dma_bandwidth": 128.0}, []),
    ({"semaphore_latency": 40.0}, []),
    ({}, [Change("engine", "tensor", 0.5)]),
    ({"hbm_bandwidth": 384.0, "data_latency": 3.0},
     [Change("engine", "dma.q0", 0.7), Change("engine", "tensor", 2.0)]),
]


@pytest.mark.parametrize("name", ["gemm", "mlp", "attention", "conv2d"])
def test_measure_equals_the_full_replay(name: str) -> None:
    trace = open_trace(SAMPLES / name)
    machine = builtin_machine()
    prepared = Prepared(trace, machine)
    for sets, changes in CHANGES:
        changed = changed_machine(machine, sets)

        def scale(frame: pl.DataFrame, changes: list[Change] = changes) -> np.ndarray:
            factor = np.ones(frame.height)
            for c in changes:
                factor[(frame[c.group].cast(pl.String) == c.name).to_numpy()] *= c.factor
            return factor

        expected = replay(trace, changed, scale=scale if changes else None)
        factor = (prepared.factors((c.group, c.name, c.factor) for c in changes)
                  if changes else None)
        got = prepared.measure(changed, factor)
        again = prepared.replay(changed, factor)
        assert again.timeline.equals(expected.timeline)
        assert got.makespan == expected.makespan
        acc = accounts(expected.timeline)
        assert acc.engines == prepared.engines
        busy = np.bincount(acc.engine, weights=acc.busy.astype(np.float64),
                           minlength=len(acc.engines)).astype(np.int64)
        assert got.busy.tolist() == busy.tolist()
        assert got.contention == int(expected.timeline["contention"].sum())
        path = critical_path(expected.timeline, expected.graph, kind_latencies(changed))
        on_path = dict(path.by_engine.select("engine", "cycles").iter_rows())
        assert {e: int(c) for e, c in zip(prepared.engines, got.critical, strict=True)
                if c} == {e: c for e, c in on_path.items() if not e.startswith("(")}


def test_a_machine_with_another_latency_table_gets_its_own_durations() -> None:
    import dataclasses

    from tracekit.replay.machine import Latency

    trace = open_trace(SAMPLES / "mlp")
    machine = builtin_machine()
    slow = dataclasses.replace(machine, engines={**machine.engines,
                                                 "tensor": Latency(fixed_cycles=5000.0)})
    assert Prepared(trace, machine).measure(slow).makespan == replay(trace, slow).makespan


def test_a_name_no_instruction_has() -> None:
    prepared = Prepared(open_trace(SAMPLES / "mlp"))
    with pytest.raises(KeyError, match="no instruction has engine 'nope'"):
        prepared.factors([("engine", "nope", 0.5)])
