"""The timelines analyses run on: a replay's prediction, or the trace's observed timing with
bindings inferred from its dependency graph. Both come with the graph and edge latencies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from tracekit.analysis.stalls import observed_timeline
from tracekit.options import TimelineChoice
from tracekit.replay.graph import KINDS, ORDER, SEMAPHORE, Graph, derive
from tracekit.replay.machine import Machine
from tracekit.replay.run import ReplayError, ReplayResult, observed_graph, replay
from tracekit.trace.bundle import Trace


class Source(StrEnum):
    REPLAYED = "replayed"
    OBSERVED = "observed"


def choose_source(*traces: Trace, choice: TimelineChoice | str = TimelineChoice.AUTO
                  ) -> Source:
    """The timeline to analyse `traces` on (the same for all, so that they compare). auto:
    observed when every trace is fully timed (in cycles, or in a time with the clock to turn
    it into cycles), else replayed."""
    choice = TimelineChoice(choice)
    if choice is not TimelineChoice.AUTO:
        return Source(choice.value)
    for trace in traces:
        if trace.manifest.cycles_per_tick() is None:
            return Source.REPLAYED
        times = trace.read("instructions", ["start", "end"])
        if times.height == 0 or times["start"].null_count() or times["end"].null_count():
            return Source.REPLAYED
    return Source.OBSERVED


@dataclass(frozen=True)
class Timeline:
    """A timeline (the columns of ReplayResult.timeline, at least id, engine, opcode, layer,
    start, end, duration, binding_id, binding_kind, contention), its graph and the cycles of
    latency of each edge kind (indexed by edge kind code)."""

    frame: pl.DataFrame
    graph: Graph
    kind_latency: np.ndarray
    source: Source
    replayed: ReplayResult | None = None
    """The model replay behind a replayed timeline."""


def clock_of(trace: Trace, machine: Machine, source: Source) -> float | None:
    """The clock whose cycles a timeline counts: the machine's (the trace's times are
    converted to its cycles); None for an observed timeline of a trace in cycles whose clock
    the manifest does not give (its cycles are taken as the machine's, of a clock not
    known)."""
    if source is Source.OBSERVED and trace.manifest.clock_hz is None:
        return None
    return machine.clock_hz


def kind_latencies(machine: Machine) -> np.ndarray:
    latency = np.full(len(KINDS), machine.data_latency)
    latency[ORDER] = 0.0
    latency[SEMAPHORE] = machine.semaphore_latency
    return latency


def timeline(trace: Trace, machine: Machine, source: Source | str,
             replayed: ReplayResult | None = None) -> Timeline:
    """The replayed (model mode) or observed timeline of `trace`, in the machine's cycles
    (observed times converted, `Trace.in_cycles`). `replayed`: the trace's model-mode
    replay on `machine` when the caller has run it already."""
    source = Source(source)
    latency = kind_latencies(machine)
    if source is Source.REPLAYED:
        result = replay(trace, machine) if replayed is None else replayed
        return Timeline(result.timeline, result.graph, latency, source, result)
    frame = trace.read_instructions(["id", "engine", "seq", "opcode", "layer", "start", "end"])
    if frame.height == 0 or frame["start"].null_count() or frame["end"].null_count():
        raise ReplayError(f"{trace.path}: the observed timeline needs start and end on every "
                          f"instruction; this trace is (partly) untimed. Analyse the replayed "
                          f"timeline instead (--timeline replayed).")
    # Ordered by the stored times, which rounding can tie; semaphores counted in their order.
    graph = observed_graph(derive(trace, frame), frame)
    return Timeline(observed_timeline(trace.in_cycles(frame, machine.clock_hz).drop("seq"),
                                      graph, latency),
                    graph, latency, source)
