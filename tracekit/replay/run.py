"""Replay a trace: derive its graph, take durations from the machine model or the trace, run the
compiled replay, and return the predicted timeline as a polars frame.

    result = replay(open_trace("sample_traces/gemm"))            # built-in trn-like machine
    result.timeline.filter(pl.col("binding_kind") == "semaphore")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from enum import StrEnum

import numba
import numpy as np
import polars as pl

from tracekit import __version__, progress
from tracekit.errors import TracekitError
from tracekit.replay.graph import (
    MEMORY,
    SEMAPHORE,
    Graph,
    queue_order,
)
from tracekit.replay.machine import Machine, engine_kind
from tracekit.replay.semaphores import (
    COND_NAMES,
    SET,
    SUB,
    WAIT,
    Released,
    holds,
    observed_release,
    window_edge_count,
    window_edges,
)
from tracekit.trace.bundle import Trace, write_trace
from tracekit.trace.manifest import Producer

MAX_CYCLES = 2.0**62
"""Times past this no longer fit the int64 cycle columns of a timeline."""


class Mode(StrEnum):
    MODEL = "model"
    OBSERVED = "observed"


class ReplayError(TracekitError):
    """The trace cannot be replayed as asked (no timing for observed mode, say)."""


class ReplayStuck(TracekitError):
    """The replay stopped with instructions that can never start: a deadlock or a cycle.

    `stuck`: each stuck engine's first unfinished instruction: id, engine, opcode; for one
    blocked on a semaphore its number (sem), cond, the value it needs and the count it reached,
    and the engines whose changes of it never came (behind); else the unfinished instructions
    it depends on (blockers). `done`: the rows (graph order) that finished, in the order they
    did; `released`: the semaphores' history up to the stop."""

    exit_code = 3

    def __init__(self, message: str, stuck: pl.DataFrame, done: np.ndarray | None = None,
                 released: Released | None = None) -> None:
        super().__init__(message)
        self.stuck = stuck
        self.done = done
        self.released = released


@dataclass(frozen=True)
class ReplayResult:
    """The predicted timeline and what produced it.

    `timeline` columns, one row per instruction in id order:
    id, engine, opcode, layer; start, end, duration (cycles, predicted);
    binding_id (the predecessor whose end decided the start, null when nothing did) and
    binding_kind (its edge kind: order, semaphore, data, memory); contention (cycles a DMA
    transfer lost to HBM sharing); observed_start, observed_end (the trace's times in the
    machine's cycles, `Trace.in_cycles`; null when untimed, or timed in a time without a
    clock).
    `fixed`: the trace's dependency graph as the trace fixes it; `graph`, with the semaphore
    edges the replay decided (`queues`: the engines' queues, eng_ptr and eng_nodes).
    `notes`: what the replay could not do, for the report (a comparison with times it cannot
    convert to cycles). `done`: graph rows in the order they finished (an order every
    happens-before relation of the trace agrees with); `released`: each semaphore's changes in
    the order they arrived, with the counts they left.
    """

    trace: Trace
    machine: Machine
    mode: Mode
    fixed: Graph
    timeline: pl.DataFrame
    notes: tuple[str, ...] = ()
    done: np.ndarray | None = None
    released: Released | None = None
    queues: tuple[np.ndarray, np.ndarray] | None = None

    @cached_property
    def graph(self) -> Graph:
        """The dependency graph with the semaphore edges the replay decided, worked out when
        first asked for (what-if replays that only need the makespan never pay for it)."""
        if self.released is None or self.queues is None:
            return self.fixed
        return resolve(self.fixed, self.released, *self.queues)

    @property
    def makespan(self) -> int:
        return int(self.timeline["end"].max() or 0)

    @property
    def edges(self) -> int:
        """The edges of `graph`, counted without building it when it is not built yet."""
        if "graph" in self.__dict__ or self.released is None or self.queues is None \
                or self.fixed.sems.size == 0:
            return self.graph.edges
        eng_ptr, eng_nodes = self.queues
        node_engine = np.empty(self.fixed.nodes, dtype=np.int64)
        node_engine[eng_nodes] = np.repeat(np.arange(eng_ptr.size - 1), np.diff(eng_ptr))
        return self.fixed.edges + window_edge_count(self.fixed.sems, self.released,
                                                    node_engine)

    @property
    def clock_hz(self) -> float:
        """The clock whose cycles the timeline counts: the machine's (observed times are
        converted to its cycles, `Trace.in_cycles`)."""
        return self.machine.clock_hz

    @property
    def observed(self) -> bool:
        return self.timeline["observed_end"].null_count() == 0 and self.timeline.height > 0


def _engine_queues(engine: np.ndarray, seq: np.ndarray, n_eng: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    order = queue_order(engine, seq)
    ptr = np.zeros(n_eng + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(engine, minlength=n_eng))
    return ptr, order.astype(np.int32 if order.size < 2**31 - 1 else np.int64, copy=False)


def model_durations(engine_code: np.ndarray, opcode_code: np.ndarray, opcodes: list[str],
                    work: pl.DataFrame, machine: Machine, engines: list[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Set-up or compute cycles per instruction from the latency model, and the bytes each DMA
    transfer moves through the contention model (0 for compute). The model's coefficients are
    looked up once per (engine, opcode) pair and gathered per instruction. Warm-up and
    conflicts are not in these (`warmup_factors`, the kernel's `stretch`)."""
    coeff = np.array([[machine.latency(e, op).coefficients for op in opcodes]
                      for e in engines],
                     dtype=np.float64).reshape(len(engines), max(len(opcodes), 1), 6)
    is_dma = np.array([engine_kind(e) == "dma" for e in engines], dtype=np.bool_)
    elements, nbytes, flops = (
        (work[k].fill_null(0) if work[k].null_count() else work[k]).to_numpy()
        for k in ("elements", "bytes", "flops"))
    return _durations(coeff, engine_code, opcode_code, elements, nbytes, flops, is_dma)


@numba.njit(cache=True, nogil=True)
def _durations(coeff, engine, opcode, elements, nbytes, flops, is_dma):  # pragma: no cover
    """model_durations per instruction, in one pass (no temporaries of n rows)."""
    n = engine.size
    setup = np.empty(n)
    moved = np.zeros(n)
    for i in range(n):
        e, o = engine[i], opcode[i]
        b = float(nbytes[i])
        setup[i] = (coeff[e, o, 0] + coeff[e, o, 1] * float(elements[i]) + coeff[e, o, 2] * b
                    + coeff[e, o, 3] * float(flops[i]))
        if coeff[e, o, 5] > 0 and b > 0:  # descriptors of so many bytes, rounded up
            setup[i] += coeff[e, o, 4] * np.ceil(b / coeff[e, o, 5])
        if is_dma[engine[i]]:
            moved[i] = b
    return setup, moved


def name_codes(series: pl.Series, key: object = None) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k-1 of a name column (int32) and its k distinct names, sorted by `key`."""
    if series.dtype != pl.Categorical:
        series = series.cast(pl.String).cast(pl.Categorical)
    distinct = series.unique().drop_nulls()
    names = distinct.cast(pl.String).to_list()
    order = sorted(range(len(names)), key=lambda i: key(names[i]) if key else names[i])
    physical = distinct.to_physical().to_numpy().astype(np.int64)
    lut = np.zeros(int(physical.max(initial=0)) + 1, dtype=np.int32)
    lut[physical[order]] = np.arange(len(order))
    return lut[series.to_physical().fill_null(0).to_numpy()], [names[i] for i in order]


def per_pair(machine: Machine, engines: list[str], opcodes: list[str], field: str
             ) -> np.ndarray:
    """A latency entry's `field` for every (engine, opcode) code pair."""
    return np.array([[getattr(machine.latency(e, op), field) for op in opcodes]
                     for e in engines], dtype=np.float64).reshape(len(engines),
                                                                 max(len(opcodes), 1))


def warmup_factors(engine_code: np.ndarray, opcode_code: np.ndarray, opcodes: list[str],
                   machine: Machine, engines: list[str], eng_ptr: np.ndarray,
                   eng_nodes: np.ndarray) -> np.ndarray | None:
    """Per instruction its warm-up factor (`warmup_factor` for the first `warmup_count` of its
    engine's queue, else 1); None when the machine has no warm-up."""
    if not machine.warms_up:
        return None
    count = per_pair(machine, engines, opcodes, "warmup_count")
    factor = per_pair(machine, engines, opcodes, "warmup_factor")
    position = np.empty(eng_nodes.size, dtype=np.int64)
    position[eng_nodes] = np.arange(eng_nodes.size) - np.repeat(eng_ptr[:-1], np.diff(eng_ptr))
    e, o = engine_code, opcode_code
    return np.where(position < count[e, o], factor[e, o], 1.0)


def replay(trace: Trace, machine: Machine | None = None, mode: Mode | str = Mode.MODEL,
           graph: Graph | None = None, timings: dict[str, float] | None = None, *,
           memory_deps: bool = False,
           scale: Callable[[pl.DataFrame], np.ndarray] | None = None) -> ReplayResult:
    """Replay `trace` on `machine` (the built-in default if None), with memory edges too when
    `memory_deps`. `scale`, given the instructions frame (id, engine, opcode, layer, ...),
    returns a duration factor per instruction (what-if analyses). In model mode durations come
    from the machine's latency model and DMA bytes share HBM; in observed mode every duration,
    DMA included, is the trace's own (its contention already happened), so only the
    dependencies move instructions. `timings`, if given, receives the seconds spent in each
    stage (read, derive, durations, kernel, timeline)."""
    with progress.step(f"replaying {trace.path}", total=len(STAGES)) as step:
        return _replay(trace, machine, mode, graph, _Stopwatch(timings, step), memory_deps,
                       scale)


STAGES = ("read", "derive", "durations", "kernel", "timeline")
"""The stages of a replay (its `timings` and its progress)."""


def _replay(trace: Trace, machine: Machine | None, mode: Mode | str, graph: Graph | None,
            clock: _Stopwatch, memory_deps: bool,
            scale: Callable[[pl.DataFrame], np.ndarray] | None) -> ReplayResult:
    # The work is a Prepared replay's (tracekit.replay.prepared), which what-if analyses and
    # sweeps keep to replay again; imported here, as it builds on this module.
    from tracekit.replay.prepared import Prepared

    prepared = Prepared(trace, machine, mode, graph, memory_deps=memory_deps, clock=clock)
    factor = None if scale is None else scale(prepared.frame)
    return prepared.replay(factor=factor, clock=clock, last=True)


class _Stopwatch:
    """Seconds per stage into a caller's dict (when given one), and each stage done as a
    step of the replay's progress."""

    def __init__(self, into: dict[str, float] | None, step: progress.Step) -> None:
        self.into = into
        self.step = step
        self.last = time.perf_counter()
        self.done: set[str] = set()

    def lap(self, stage: str) -> None:
        """The time since the last lap, added to `stage` (a stage may be lapped in parts);
        its progress step advances once."""
        now = time.perf_counter()
        if self.into is not None:
            self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.last = now
        if stage not in self.done:
            self.done.add(stage)
            self.step.advance()


def _cycles(times: np.ndarray) -> np.ndarray:
    """Float event times as integer cycles, rounded up (absorbing float error)."""
    return np.ceil(times - 1e-6).astype(np.int64)


def resolve(graph: Graph, released: Released, eng_ptr: np.ndarray, eng_nodes: np.ndarray
            ) -> Graph:
    """`graph` with the semaphore edges a timeline decided (each released wait's window,
    `tracekit.replay.semaphores`). `eng_ptr`, `eng_nodes`: the engines' queues."""
    return _resolve(graph, released, eng_ptr, eng_nodes)[0]


def _resolve(graph: Graph, released: Released, eng_ptr: np.ndarray, eng_nodes: np.ndarray
             ) -> tuple[Graph, np.ndarray]:
    """`resolve`, and each semaphore row's binder (`window_edges`)."""
    sems = graph.sems
    if sems.size == 0:
        empty = np.zeros(0, np.int64)
        return graph.with_edges(empty, empty, SEMAPHORE), empty
    node_engine = np.empty(graph.nodes, dtype=np.int64)
    node_engine[eng_nodes] = np.repeat(np.arange(eng_ptr.size - 1), np.diff(eng_ptr))
    src, dst, binder = window_edges(sems, released, node_engine)
    return graph.with_edges(src, dst, SEMAPHORE), binder


@dataclass(frozen=True)
class Observed:
    """The observed timeline's semaphores: the graph with its semaphore edges, the changes in
    observed order (`released`), and the wait rows whose condition never holds in that
    order (`never`: rows of graph.sems)."""

    graph: Graph
    released: Released
    never: np.ndarray


def observed(graph: Graph, frame: pl.DataFrame) -> Observed:
    """The semaphores of the observed timeline: changes counted in order of observed end, each
    wait released by what had arrived at its observed start. `frame`: id, engine, seq,
    start, end in graph row order, every instruction timed."""
    engine, engines = name_codes(frame["engine"])
    released = observed_release(graph.sems, frame["start"].to_numpy(), frame["end"].to_numpy())
    resolved, binder = _resolve(graph, released,
                                *_engine_queues(engine, frame["seq"].to_numpy(), len(engines)))
    return Observed(resolved, released, np.flatnonzero(binder == -2))


def observed_graph(graph: Graph, frame: pl.DataFrame) -> Graph:
    """`graph` with the semaphore edges of the observed timeline (`observed`)."""
    return observed(graph, frame).graph


def _stuck(trace: Trace, frame: pl.DataFrame, graph: Graph, end: np.ndarray,
           eng_ptr: np.ndarray, eng_nodes: np.ndarray, engines: list[str], count: np.ndarray,
           blocked: np.ndarray) -> ReplayStuck:
    """The report of a replay that cannot finish: each stuck engine's first unfinished
    instruction in its queue (by seq) and what it waits for: the semaphores whose condition
    does not hold (the count reached, the value needed, and the engines whose changes of that
    semaphore have not happened), or the unfinished instructions it depends on."""
    undone = end < 0
    sems = graph.sems
    rows = []
    for e in range(eng_ptr.size - 1):  # one step per engine, not per instruction
        queue = eng_nodes[eng_ptr[e]:eng_ptr[e + 1]]
        waiting = np.flatnonzero(undone[queue])
        if not waiting.size:
            continue
        node = int(queue[waiting[0]])
        inst_id = int(graph.ids[node])
        head = {"id": inst_id, "engine": engines[e], "opcode": str(frame["opcode"][node]),
                "sem": None, "cond": None, "value": None, "count": None, "behind": None,
                "blockers": None, "monotone": None}
        if blocked[e]:
            for r in range(sems.ptr[node], sems.ptr[node + 1]):
                s = int(sems.sem[r])
                if sems.op[r] != WAIT or holds(count[s], sems.cond[r], sems.value[r]):
                    continue
                changers = np.flatnonzero((sems.sem == s) & (sems.op != WAIT))
                late = sems.node[changers][undone[sems.node[changers]]]
                behind = sorted({engines[int(i)] for i in engine_of(late, eng_ptr, eng_nodes)})
                only_up = not np.any((sems.sem == s) & ((sems.op == SUB) | (sems.op == SET)))
                rows.append({**head, "sem": int(sems.numbers[s]),
                             "cond": COND_NAMES[sems.cond[r]], "value": int(sems.value[r]),
                             "count": int(count[s]), "behind": behind, "monotone": only_up})
        else:
            blockers = [int(graph.ids[p]) for p in graph.preds(node) if end[p] < 0]
            rows.append({**head, "blockers": blockers})
    stuck = pl.DataFrame(rows, schema={
        "id": pl.Int64, "engine": pl.String, "opcode": pl.String, "sem": pl.Int64,
        "cond": pl.String, "value": pl.Int64, "count": pl.Int64,
        "behind": pl.List(pl.String), "blockers": pl.List(pl.Int64), "monotone": pl.Boolean})
    lines = []
    for row in stuck.iter_rows(named=True):
        where = f"  {row['engine']}: instruction {row['id']} ({row['opcode']})"
        if row["sem"] is None:
            lines.append(f"{where} waits for unfinished instruction(s) "
                         f"{', '.join(map(str, row['blockers'][:5]))}")
            continue
        lines.append(f"{where} {wait_text(row)}")
    memory = bool((graph.kind == MEMORY).any())
    waits = stuck["sem"].is_not_null().any()
    cycle = "" if waits else (
        " (a dependency cycle: no instruction is blocked on a semaphore"
        + ("; memory edges take part, so the accesses' program order may disagree with the "
           "trace's synchronisation: retry without --memory-deps" if memory else "") + ")")
    n_engines = stuck["engine"].n_unique()
    message = (f"{trace.path}: the replay cannot finish: {int(undone.sum()):,} instructions "
               f"on {n_engines} engine(s) never run{cycle}.\n" + "\n".join(lines)
               + "\nThe trace records a run that could not have finished: check the "
                 "producer's semaphore values and dependencies.")
    return ReplayStuck(message, stuck)


def wait_text(row: dict) -> str:
    """What a blocked wait (a row of ReplayStuck.stuck) waits for, in words."""
    want = (f"to reach {row['value']}" if row["cond"] != "eq"
            else f"to be exactly {row['value']}")
    if row["behind"]:
        why = (f"its changes still to come are on {', '.join(row['behind'])}, blocked "
               f"themselves")
    elif row.get("monotone"):
        why = f"its signals add up to {row['count']}"
    else:
        why = "no change of it is still to come"
    return (f"waits for semaphore {row['sem']} {want}; the count reached {row['count']}, and "
            f"{why}")


def engine_of(nodes: np.ndarray, eng_ptr: np.ndarray, eng_nodes: np.ndarray) -> np.ndarray:
    """The engine code of each of `nodes`, from the engines' queues."""
    code = np.empty(eng_nodes.size, dtype=np.int64)
    code[eng_nodes] = np.repeat(np.arange(eng_ptr.size - 1), np.diff(eng_ptr))
    return code[nodes]


def write_predicted(result: ReplayResult, path: str | os.PathLike[str], *,
                    overwrite: bool = False) -> Trace:
    """Write the predicted timeline as a bundle: the trace's tables with start and end
    replaced by the replay's, and the replay's parameters in the manifest."""
    source = result.trace
    predicted = result.timeline.select("id", pl.col("start").alias("p_start"),
                                       pl.col("end").alias("p_end"))
    instructions = (source.read("instructions")
                    .join(predicted, on="id", how="left", maintain_order="left")
                    .with_columns(pl.col("p_start").alias("start"), pl.col("p_end").alias("end"))
                    .drop("p_start", "p_end"))
    optional = {name: source.read(name) for name in ("semaphores", "memory", "deps")
                if source.has_table(name)}
    m = source.manifest
    extra = {**m.extra, "replay": {
        "source": str(source.path), "source_workload": m.workload,
        "machine": result.machine.name, "mode": result.mode.value,
        "makespan": result.makespan}}
    return write_trace(path, instructions, **optional, workload=m.workload,
                       producer=Producer("tracekit.replay", __version__),
                       machine=result.machine.name, clock_hz=result.machine.clock_hz,
                       created=None, extra=extra, overwrite=overwrite)
