"""The timelines analyses run on: a replay's prediction, or the trace's observed timing with
bindings inferred from its dependency graph. Both come with the graph and edge latencies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from tracekit.analysis.stalls import observed_timeline
from tracekit.replay.graph import KINDS, ORDER, SEMAPHORE, Graph, derive
from tracekit.replay.machine import Machine
from tracekit.replay.run import ReplayError, ReplayResult, observed_graph, replay
from tracekit.trace.bundle import Trace


class Source(StrEnum):
    REPLAYED = "replayed"
    OBSERVED = "observed"


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


def kind_latencies(machine: Machine) -> np.ndarray:
    latency = np.full(len(KINDS), machine.data_latency)
    latency[ORDER] = 0.0
    latency[SEMAPHORE] = machine.semaphore_latency
    return latency


def timeline(trace: Trace, machine: Machine, source: Source | str,
             replayed: ReplayResult | None = None) -> Timeline:
    """The replayed (model mode) or observed timeline of `trace`, in cycles (observed times
    in ps, ns or us converted at the manifest's clock). `replayed`: the trace's model-mode
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
    return Timeline(observed_timeline(trace.in_cycles(frame).drop("seq"), graph, latency),
                    graph, latency, source)
