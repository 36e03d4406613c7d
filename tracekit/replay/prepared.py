"""A replay prepared once and run many times: the trace read, its graph derived, the engines'
queues, the successor lists and the model's durations worked out once, so that each what-if
replay or design-space point pays only for what it changes and for the kernel.

    prepared = Prepared(trace, machine)                       # read, derive, durations
    prepared.replay()                                         # == replay(trace, machine)
    faster = prepared.factors([("engine", "tensor", 0.5)])    # tensor twice as fast
    prepared.measure(factor=faster).makespan                  # no timeline frame built

`replay` returns the same `ReplayResult` as `tracekit.replay.run.replay` (which runs through
this class); `measure` returns only the figures a sweep keeps (`Measure`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numba
import numpy as np
import polars as pl

from tracekit.errors import ManifestError
from tracekit.replay.engine import replay_kernel, transfer_contention
from tracekit.replay.graph import KINDS, ORDER, SEMAPHORE, Graph, csr, derive
from tracekit.replay.machine import Machine, builtin_machine
from tracekit.replay.run import (
    MAX_CYCLES,
    Mode,
    ReplayError,
    ReplayResult,
    _cycles,
    _engine_queues,
    _stuck,
    model_durations,
    name_codes,
    per_pair,
    warmup_factors,
)
from tracekit.replay.semaphores import Released, log_counts
from tracekit.trace.bundle import Trace
from tracekit.trace.summary import natural_key

COLUMNS = ["id", "engine", "seq", "opcode", "start", "end", "elements", "bytes", "flops",
           "layer"]
"""The instruction columns a replay reads."""

BINDING_KINDS = pl.Enum([k.value for k in KINDS])
"""The type of the timeline's binding_kind column (one byte a row)."""

WORK = ("elements", "bytes", "flops")
"""The instruction columns the latency model reads."""

SCALE_GROUPS = ("engine", "opcode", "layer")
"""The columns a duration factor can select instructions by."""


class Lap(Protocol):
    def lap(self, stage: str) -> None: ...


class _NoClock:
    def lap(self, stage: str) -> None:
        pass


@dataclass(frozen=True)
class Measure:
    """One replay's figures without its timeline. `makespan`: cycles; per engine of
    `Prepared.engines` (natural order): `busy`, cycles without HBM contention (as
    `tracekit.analysis.figures` counts busy), and `critical`, cycles on the critical path
    (the chain of binding predecessors back from the instruction that ends last, lowest id on
    a tie, each step counting its cycles after the previous step's end, as
    `tracekit.analysis.critical_path` counts them); `contention`: cycles DMA transfers lost
    to HBM sharing, summed over every transfer."""

    makespan: int
    busy: np.ndarray
    critical: np.ndarray
    contention: int


class Prepared:
    """What every replay of one trace in one mode shares, worked out once: the instructions
    frame (times in the machine's cycles), the engine and opcode codes, the fixed dependency
    graph (`graph`: given, else derived), the engines' queues, the successor lists and the
    durations of `machine`'s latency model (or the trace's own in observed mode). A machine
    with another latency table gets its durations worked out again; one with another clock
    needs its own Prepared."""

    def __init__(self, trace: Trace, machine: Machine | None = None,
                 mode: Mode | str = Mode.MODEL, graph: Graph | None = None, *,
                 memory_deps: bool = False, clock: Lap | None = None) -> None:
        clock = clock or _NoClock()
        machine = machine or builtin_machine()
        mode = Mode(mode)
        frame = trace.read_instructions(COLUMNS)
        self.engine, self.engines = name_codes(frame["engine"], natural_key)
        self.opcode, self.opcodes = name_codes(frame["opcode"])
        clock.lap("read")
        # Ordered by the stored times; a timeline's semaphore edges are the replay's to decide.
        self.graph = graph.fixed if graph is not None else derive(trace, frame,
                                                                  memory=memory_deps)
        clock.lap("derive")
        notes: tuple[str, ...] = ()
        try:
            # The trace's times in the machine's cycles, which the model counts.
            frame = trace.in_cycles(frame, machine.clock_hz)
        except ManifestError as exc:
            if mode is Mode.OBSERVED:
                raise
            frame = frame.with_columns(pl.lit(None, pl.Int64).alias("start"),
                                       pl.lit(None, pl.Int64).alias("end"))
            notes = (f"{exc} The prediction is shown without a comparison to the observed "
                     f"timing.",)
        n = frame.height
        timed = frame["start"].null_count() == 0 and frame["end"].null_count() == 0 and n > 0
        if mode is Mode.OBSERVED:
            if not timed:
                untimed = max(frame["start"].null_count(), frame["end"].null_count())
                raise ReplayError(f"{trace.path}: --mode observed needs observed start and end "
                                  f"on every instruction, and this trace has "
                                  + (f"{untimed:,} untimed." if n else "no instructions.")
                                  + " Use --mode model.")
        self.trace, self.machine, self.mode, self.frame, self.notes = (trace, machine, mode,
                                                                       frame, notes)
        self.eng_ptr, self.eng_nodes = _engine_queues(self.engine, frame["seq"].to_numpy(),
                                                      len(self.engines))
        if mode is Mode.OBSERVED:
            setup = (frame["end"] - frame["start"]).to_numpy().astype(np.float64)
            nbytes = np.zeros(n)
        else:
            setup, nbytes = self._model(machine, frame)
        self.setup, self.nbytes = setup, nbytes
        # The work and seq columns have served (durations, queues): a replay does not keep
        # them (`work` reads them again for what needs them).
        self.frame = frame.drop(*WORK, "seq")
        # Successor lists: the same counting sort as the predecessor CSR, keyed by source.
        g = self.graph
        self.succ = g.successors()
        self.node_engine = self.engine
        self._lanes: dict[tuple[int, ...], Lanes] = {}
        self._spent = False
        clock.lap("durations")

    @property
    def n(self) -> int:
        return self.frame.height

    @cached_property
    def work(self) -> pl.DataFrame:
        """`frame` with the work columns (elements, bytes, flops) beside it, read again from
        the trace: the frame does not keep them once the durations are worked out."""
        return self.frame.hstack(self.trace.read_instructions(list(WORK)))

    def _model(self, machine: Machine, frame: pl.DataFrame | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The latency model's set-up or compute cycles and DMA bytes, warm-up included
        (work columns from `frame`, else `work`)."""
        setup, nbytes = model_durations(self.engine, self.opcode, self.opcodes,
                                        self.work if frame is None else frame, machine,
                                        self.engines)
        warm = warmup_factors(self.engine, self.opcode, self.opcodes, machine, self.engines,
                              self.eng_ptr, self.eng_nodes)
        if warm is not None:
            setup, nbytes = setup * warm, nbytes * warm
        return setup, nbytes

    @cached_property
    def sbuf_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row the lowest and one past the highest SBUF partition its memory accesses
        cover (-1 for both when it has none, or the trace has no memory table)."""
        lo = np.full(self.n, -1, dtype=np.int64)
        hi = np.full(self.n, -1, dtype=np.int64)
        if not self.trace.has_table("memory"):
            return lo, hi
        mem = (self.trace.read("memory", ["inst", "space", "partition", "partitions"])
               .filter((pl.col("space").cast(pl.String) == "sbuf")
                       & pl.col("partition").is_not_null())
               .group_by("inst")
               .agg(pl.col("partition").min().alias("lo"),
                    (pl.col("partition") + pl.col("partitions").fill_null(1)).max()
                    .alias("hi")))
        ids = self.frame["id"].to_numpy()
        order = np.argsort(ids, kind="stable")
        inst = mem["inst"].to_numpy()
        place = np.searchsorted(ids, inst, sorter=order)
        known = place < ids.size
        known[known] = ids[order[place[known]]] == inst[known]
        rows = order[place[known]]
        lo[rows] = mem["lo"].to_numpy()[known]
        hi[rows] = mem["hi"].to_numpy()[known]
        return lo, hi

    def lanes(self, machine: Machine) -> Lanes | None:
        """The kernel's engines when a DMA queue of `machine` may have several transfers in
        flight (None when none may, or the mode is observed): such a queue runs as
        min(max_in_flight, its transfers) lanes, its k-th transfer on lane k mod lanes, each
        lane in the queue's order; the engine-order edge from a transfer to the next becomes
        one from the transfer `lanes` places before (at most that many in flight)."""
        if self.mode is Mode.OBSERVED:
            return None
        sizes = np.diff(self.eng_ptr)
        count = np.array([max(1, min(machine.in_flight(e), int(n)))
                          for e, n in zip(self.engines, sizes, strict=True)], dtype=np.int64)
        if (count == 1).all():
            return None
        key = tuple(count.tolist())
        if key not in self._lanes:
            self._lanes[key] = _make_lanes(self.graph, self.eng_ptr, self.eng_nodes,
                                           self.node_engine, count)
        return self._lanes[key]

    def conflicts(self, machine: Machine
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The kernel's conflict arguments under `machine`: per row its conflict stretch, SBUF
        range, and the factor it got (all 1, for the kernel to fill); None when the machine
        stretches nothing (or the mode is observed)."""
        if self.mode is Mode.OBSERVED or not machine.conflicts:
            return None
        stretch = per_pair(machine, self.engines, self.opcodes,
                           "conflict_stretch")[self.engine, self.opcode]
        return (stretch, *self.sbuf_ranges, np.ones(self.n))

    def factors(self, changes: Iterable[tuple[str, str, float]]) -> np.ndarray:
        """A duration factor per instruction: the product of the factors of the (group, name,
        factor) changes that select it (group engine, opcode or layer). A name no instruction
        has is a KeyError naming it (the caller words the error)."""
        factor = np.ones(self.n)
        for group, name, value in changes:
            hit = self.selects(group, name)
            factor[hit] *= value
        return factor

    def selects(self, group: str, name: str) -> np.ndarray:
        """The rows whose `group` column (engine, opcode or layer) is `name`; KeyError when
        there are none."""
        hit = (self.frame[group].cast(pl.String) == name).fill_null(False)
        if not hit.any():
            names = sorted(self.frame[group].cast(pl.String).drop_nulls().unique().to_list(),
                           key=natural_key)
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20:,} more"
                                             if len(names) > 20 else "")
            raise KeyError(f"no instruction has {group} {name!r}; the trace's {group}s are "
                           f"{shown}" if names else f"no instruction has {group} {name!r}; "
                           f"the trace has no {group} names")
        return hit.to_numpy()

    def durations(self, machine: Machine) -> tuple[np.ndarray, np.ndarray]:
        """Set-up or compute cycles and DMA bytes per instruction under `machine` (the
        prepared ones unless its latency table differs)."""
        base = self.machine
        if machine.clock_hz != base.clock_hz:
            raise ReplayError(f"{machine.source}: a clock of {machine.clock_hz:g} Hz, but the "
                              f"replay was prepared at {base.clock_hz:g} Hz; prepare the "
                              f"trace again for this machine.")
        if self.mode is Mode.OBSERVED or (machine.engines == base.engines
                                          and machine.opcodes == base.opcodes):
            return self.setup, self.nbytes
        return self._model(machine)

    def _kernel(  # type: ignore[no-untyped-def]
            self, machine: Machine | None, factor: np.ndarray | None, clock: Lap | None = None):
        clock = clock or _NoClock()
        if self._spent:
            raise RuntimeError("this Prepared replay ran as the last one (replay(last=True))")
        machine = machine or self.machine
        setup, nbytes = self.durations(machine)
        if factor is not None:
            # What-if: a factor per instruction on its duration (a DMA's set-up and bytes
            # alike).
            factor = np.asarray(factor, dtype=np.float64)
            setup, nbytes = setup * factor, nbytes * factor
        engines, engine = self.engines, self.engine
        caps = np.array([machine.queue_bandwidth(e) for e in engines], dtype=np.float64)
        kind_latency = np.zeros(len(KINDS))
        kind_latency[SEMAPHORE] = machine.semaphore_latency
        kind_latency[[i for i in range(len(KINDS)) if i not in (ORDER, SEMAPHORE)]] = \
            machine.data_latency
        if not np.all(np.isfinite(setup)) or np.any(setup > MAX_CYCLES):
            worst = int(np.argmax(np.where(np.isfinite(setup), setup, np.inf)))
            raise ReplayError(
                f"{machine.source}: the latency model gives instruction "
                f"{int(self.frame['id'][worst])} ({engines[engine[worst]]} "
                f"{self.opcodes[self.opcode[worst]]}) a duration of {setup[worst]:g} cycles; "
                f"check that engine's latency parameters.")
        graph, sems, n = self.graph, self.graph.sems, self.n
        succ_ptr, succ_dst, succ_kind = self.succ
        conflicts = self.conflicts(machine)
        lanes = self.lanes(machine)
        queues = (len(engines), self.eng_ptr, self.eng_nodes, self.node_engine, graph.ptr,
                  succ_ptr, succ_dst, succ_kind)
        extra: tuple = conflicts or ()
        kernel_caps = caps
        if lanes is not None:
            graph = lanes.graph
            queues = (lanes.group.size, lanes.eng_ptr, lanes.eng_nodes, lanes.node_engine,
                      graph.ptr, *lanes.succ)
            kernel_caps = caps[lanes.group]
            extra = (*(conflicts or (None, None, None, None)), lanes.group, caps.copy())
        monotone, index = sems.monotone, np.int32 if max(n, sems.size) < 2**31 - 1 else np.int64
        clock.lap("durations")  # the checks of the durations and the kernel's arguments
        out = replay_kernel(
            *queues, kind_latency, setup, nbytes, kernel_caps,
            machine.hbm_bytes_per_cycle, sems.ptr, sems.node, sems.sem, sems.op, sems.value,
            sems.cond, sems.log_ptr, float(machine.semaphore_latency), monotone, index,
            *extra)
        clock.lap("kernel")  # the kernel alone: what bench_replay's instructions/s divide
        (start, end, bind, bind_kind, completed, done, log, arrived, upto, count,
         blocked) = out
        if lanes is not None:  # a queue is blocked when one of its lanes is
            blocked = np.bincount(lanes.group, weights=blocked, minlength=len(engines)) > 0
        if conflicts is not None:  # the stretch each got, on its set-up and bytes
            setup, nbytes = setup * conflicts[3], nbytes * conflicts[3]
        released = Released(log=log, log_count=log_counts(sems, log, arrived),
                            arrived=arrived, upto=upto)
        if completed < n:
            stuck = _stuck(self.trace, self.frame, graph, end, self.eng_ptr, self.eng_nodes,
                           engines, count, blocked)
            stuck.done, stuck.released = done, released
            raise stuck
        if n and not end.max() < MAX_CYCLES:
            raise ReplayError(f"{machine.source}: the replay's times pass {MAX_CYCLES:.0e} "
                              f"cycles; a bandwidth or latency in the machine is far out of "
                              f"scale.")
        return machine, start, end, bind, bind_kind, done, released, setup, nbytes, caps, graph

    def replay(self, machine: Machine | None = None, factor: np.ndarray | None = None, *,
               clock: Lap | None = None, last: bool = False) -> ReplayResult:
        """The full replay under `machine` (default: the prepared one) with each duration
        multiplied by `factor` (one per instruction, None: unchanged), exactly as
        `tracekit.replay.run.replay` gives it. `last`: no replay follows, so what only
        replays need (successor lists, durations) is let go before the timeline is built,
        which lowers the peak memory of a single replay."""
        clock = clock or _NoClock()
        (machine, start, end, bind, bind_kind, done, released, setup, nbytes,
         caps, graph) = self._kernel(machine, factor, clock)
        if last:
            self._spent = True
            del self.succ, self.setup, self.nbytes
            self._lanes.clear()
        frame = self.frame
        start_c, end_c, duration, lost = _whole_cycles(start, end, setup, nbytes, caps,
                                                       self.engine)
        del start, end, setup, nbytes
        has_bind = pl.Series(bind >= 0)
        timeline = pl.DataFrame({
            "id": frame["id"],
            "engine": frame["engine"],
            "opcode": frame["opcode"],
            "layer": frame["layer"],
            "start": start_c,
            "end": end_c,
            "duration": duration,
            "binding_id": pl.Series(graph.ids[np.maximum(bind, 0)]).set(~has_bind, None),
            "binding_kind": pl.Series([k.value for k in KINDS], dtype=BINDING_KINDS).gather(
                pl.Series(np.maximum(bind_kind, 0)).cast(pl.UInt32)).set(~has_bind, None),
            "contention": lost,
            "observed_start": frame["start"],
            "observed_end": frame["end"],
        })
        clock.lap("timeline")
        return ReplayResult(trace=self.trace, machine=machine, mode=self.mode, fixed=graph,
                            timeline=timeline, notes=self.notes, done=done, released=released,
                            queues=(self.eng_ptr, self.eng_nodes))

    def transfer_cycles(self, machine: Machine | None = None) -> np.ndarray:
        """Per row, the cycles a DMA transfer spends moving its bytes in the replay under
        `machine` (after its set-up, HBM sharing included; 0 for the rest)."""
        (_, start, end, _, _, _, _, setup, nbytes, _, _) = self._kernel(machine, None)
        return np.where(nbytes > 0, end - start - setup, 0.0)

    @property
    def positions(self) -> np.ndarray:
        """Per row, its place in its engine's queue (0 for the first)."""
        position = np.empty(self.n, dtype=np.int64)
        position[self.eng_nodes] = (np.arange(self.eng_nodes.size)
                                    - np.repeat(self.eng_ptr[:-1], np.diff(self.eng_ptr)))
        return position

    def measure(self, machine: Machine | None = None, factor: np.ndarray | None = None
                ) -> Measure:
        """The makespan, busy and critical-path cycles per engine and the HBM contention of
        the replay under `machine` with `factor` (see `replay`), without its timeline."""
        (_, start, end, bind, _, _, _, setup, nbytes, caps, _) = self._kernel(machine, factor)
        start_c, end_c = _cycles(start), _cycles(end)
        lost = _lost(start, end, setup, nbytes, caps, self.engine)
        span = end_c - start_c
        # In-order engines: no two spans of one engine overlap, so each instruction's busy is
        # its span less its contention (figures.accounts, on a replayed timeline).
        busy = span - np.minimum(np.maximum(lost, 0), np.maximum(span, 0))
        n_eng = len(self.engines)
        per_engine = np.bincount(self.engine, weights=busy.astype(np.float64),
                                 minlength=n_eng).astype(np.int64)
        critical = (_critical(start_c, end_c, bind.astype(np.int64), self.node_engine, n_eng)
                    if self.n else np.zeros(n_eng, dtype=np.int64))
        makespan = int(end_c.max()) if self.n else 0
        return Measure(makespan=makespan, busy=per_engine, critical=critical,
                       contention=int(lost.sum()))


@dataclass(frozen=True)
class Lanes:
    """The kernel's engines when queues have several transfers in flight (`Prepared.lanes`):
    per lane its queue (`group`, an engine code); the lanes' queues (eng_ptr, eng_nodes); per
    row its lane (node_engine); the graph with the engine-order edges between lanes' transfers
    (its `succ` lists beside it)."""

    group: np.ndarray
    eng_ptr: np.ndarray
    eng_nodes: np.ndarray
    node_engine: np.ndarray
    graph: Graph
    succ: tuple[np.ndarray, np.ndarray, np.ndarray]


def _make_lanes(graph: Graph, eng_ptr: np.ndarray, eng_nodes: np.ndarray,
                node_engine: np.ndarray, count: np.ndarray) -> Lanes:
    n = node_engine.size
    first = np.r_[0, np.cumsum(count)]  # each engine's first lane
    position = np.empty(n, dtype=np.int64)
    position[eng_nodes] = np.arange(eng_nodes.size) - np.repeat(eng_ptr[:-1], np.diff(eng_ptr))
    lane = first[node_engine] + position % count[node_engine]
    group = np.repeat(np.arange(count.size), count)
    # Each lane's rows in queue order: by lane, then position (eng_nodes is in queue order).
    order = eng_nodes[np.argsort(lane[eng_nodes], kind="stable")]
    lane_ptr = np.zeros(group.size + 1, dtype=np.int64)
    lane_ptr[1:] = np.cumsum(np.bincount(lane, minlength=group.size))
    # Engine-order edges of a split queue: from the transfer `count` places before.
    dst = graph.destinations()
    split = count[node_engine] > 1
    drop = (graph.kind == ORDER) & split[dst] & (node_engine[graph.src] == node_engine[dst])
    queue_at = eng_nodes  # queue_at[eng_ptr[e] + k]: engine e's k-th row
    later = np.flatnonzero(split & (position >= count[node_engine]))
    before = queue_at[eng_ptr[node_engine[later]] + position[later] - count[node_engine[later]]]
    src = np.r_[graph.src[~drop], before]
    dst = np.r_[dst[~drop], later]
    kind = np.r_[graph.kind[~drop], np.full(later.size, ORDER, dtype=np.int8)]
    ptr, out_src, out_kind = csr(n, src, dst, kind)
    lanes_graph = Graph(ids=graph.ids, ptr=ptr, src=out_src, kind=out_kind, sems=graph.sems)
    return Lanes(group=group, eng_ptr=lane_ptr, eng_nodes=order.astype(np.int32),
                 node_engine=lane.astype(np.int32), graph=lanes_graph,
                 succ=csr(n, dst, src, kind))


@numba.njit(cache=True, nogil=True)
def _whole_cycles(start, end, setup, nbytes, caps, engine):  # pragma: no cover - compiled
    """The timeline's start, end, duration and contention columns in one pass: times as
    whole cycles rounded up (`_cycles`), and the cycles each transfer lost to HBM sharing
    (`_lost`), with no temporary of n rows."""
    n = start.size
    start_c = np.empty(n, dtype=np.int64)
    end_c = np.empty(n, dtype=np.int64)
    duration = np.empty(n, dtype=np.int64)
    lost = np.zeros(n, dtype=np.int64)
    for i in range(n):
        start_c[i] = np.int64(np.ceil(start[i] - 1e-6))
        end_c[i] = np.int64(np.ceil(end[i] - 1e-6))
        duration[i] = end_c[i] - start_c[i]
        if nbytes[i] > 0:
            waited = (end[i] - (start[i] + setup[i])) - nbytes[i] / caps[engine[i]]
            lost[i] = np.int64(np.ceil(max(waited, 0.0) - 1e-6))
    return start_c, end_c, duration, lost


def _lost(start: np.ndarray, end: np.ndarray, setup: np.ndarray, nbytes: np.ndarray,
          caps: np.ndarray, engine: np.ndarray) -> np.ndarray:
    """Cycles each transfer lost to HBM sharing, whole cycles rounded up (the timeline's
    `contention` column)."""
    contention = transfer_contention(start, end, setup, nbytes, caps, engine)
    return np.ceil(np.maximum(contention, 0.0) - 1e-6).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _critical(start, end, bind, engine, n_eng):  # pragma: no cover - compiled
    """Cycles per engine on the chain of binding predecessors back from the instruction that
    ends last (lowest row on a tie); each step counts its cycles after the end of the step
    before it (the first, after the earliest start)."""
    out = np.zeros(n_eng, dtype=np.int64)
    last = 0
    for i in range(end.size):
        if end[i] > end[last]:
            last = i
    origin = start.min()
    node = last
    steps = 0
    while node >= 0 and steps < end.size:
        before = bind[node]
        reached = end[before] if before >= 0 else origin
        counted = end[node] - max(start[node], reached)
        if counted > 0:
            out[engine[node]] += counted
        node = before
        steps += 1
    return out
