"""Architectural bug signatures: patterns in a trace that a hardware or compiler bug leaves.

Each signature has a stable code, a severity and a hint; `find_bugs` runs them all and returns
one finding per occurrence with its evidence. For a wait on semaphore 3 for value 9 whose
signals only ever add up to 4, the model replay gets stuck there, and the finding reads

    error  deadlock-wait  instruction 120 on tensor waits for semaphore 3 to reach 9; the
                          count reached 4, and its signals add up to 4
                          (instructions [120], engines [tensor])

Every check is vectorized over the trace's tables (or compiled); codes are documented with
examples in analysis/signatures.md.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise

import numba
import numpy as np
import polars as pl

from tracekit import progress
from tracekit.analysis.happens_before import HappensBefore, exact_order, happens_before
from tracekit.analysis.table_batches import read_ints
from tracekit.analysis.memory_sweep import (
    CHUNK_ROWS,
    WRITES,
    WRITES_SBUF,
    MemoryScan,
    Reloads,
    dead_write_bytes,
    scan_memory,
    sweep_memory,
)
from tracekit.replay.graph import (
    KINDS,
    ORDER,
    SEMAPHORE,
    Graph,
    derive,
    kahn_order,
    positions,
    sorted_unique,
)
from tracekit.replay.machine import Machine
from tracekit.replay.run import Observed, ReplayResult, ReplayStuck, wait_text
from tracekit.replay.semaphores import (
    EQ,
    OP_NAMES,
    SET,
    SIGNAL,
    SUB,
    WAIT,
    Released,
    SemTable,
)
from tracekit.trace.bundle import Trace
from tracekit.trace.names import shortened, shortened_column

CONFIRM_BUDGET = 32
"""Instructions held back, at most, to settle by exact runs the races that the counting rule
of `happens_before` cannot prove ordered on semaphores signalled from several engines."""

EXAMPLES = 5
"""Occurrences of one code reported individually; the rest are counted in the last one."""

OUTLIER_FACTOR = 5
STUCK_FACTOR = 20
STUCK_CYCLES = 1000
SLOW_FACTOR = 1.5
"""Latency signatures: an instruction over OUTLIER_FACTOR (STUCK_FACTOR, and by at least
STUCK_CYCLES) times the median of its peers; an engine whose median over SLOW_FACTOR times its
peers' for the same work."""

BANDWIDTH_SLACK = 0.10
BANDWIDTH_GRACE_CYCLES = 2
"""Bandwidth beyond physics: bytes in a window over (1 + BANDWIDTH_SLACK) times the bandwidth,
by more than BANDWIDTH_GRACE_CYCLES cycles' worth, or ticks' worth for a trace timed in a
coarser unit (timestamps are whole ticks)."""

SMALL_DMA_SHARE = 0.1
"""A queue is reported when this share of its transfers cost more set-up than moving."""

PING_PONG_FACTOR = 4
PING_PONG_WAITS = 16
"""Ping-pong: at least PING_PONG_WAITS waits with a median of under PING_PONG_FACTOR times the
semaphore latency of busy cycles between consecutive waits."""


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 2, "warning": 1, "info": 0}[self.value]


class Code(StrEnum):
    DEADLOCK_WAIT = "deadlock-wait"
    DEADLOCK_CYCLE = "deadlock-cycle"
    SEMAPHORE_LEAK = "semaphore-leak"
    SEMAPHORE_OVERFLOW = "semaphore-overflow"
    SEMAPHORE_ORDER_DEPENDENT = "semaphore-order-dependent"
    START_BEFORE_DEPENDENCY = "start-before-dependency"
    ENGINE_OVERLAP = "engine-overlap"
    NEGATIVE_DURATION = "negative-duration"
    OUT_OF_BOUNDS = "out-of-bounds"
    RACE_RAW = "race-raw"
    RACE_WAR = "race-war"
    RACE_WAW = "race-waw"
    LATENCY_OUTLIER = "latency-outlier"
    ENGINE_STUCK = "engine-stuck"
    SLOW_ENGINE = "slow-engine"
    BANDWIDTH_BEYOND_PHYSICS = "bandwidth-beyond-physics"
    REDUNDANT_RELOAD = "redundant-reload"
    DEAD_WRITE = "dead-write"
    SMALL_DMA = "small-dma"
    SEMAPHORE_PING_PONG = "semaphore-ping-pong"


@dataclass(frozen=True)
class Finding:
    """One occurrence: what, where (instruction ids, engines, cycles, addresses) and a hint.
    `cycles`: times and durations as the trace records them (cycles, or ticks of the
    manifest's time_unit)."""

    code: Code
    severity: Severity
    message: str
    hint: str
    instructions: tuple[int, ...] = ()
    engines: tuple[str, ...] = ()
    cycles: tuple[int, ...] = ()
    addresses: tuple[str, ...] = ()


@dataclass
class Context:
    """What the checks read: the trace's instructions once, its graph, the machine, and what
    several checks share (the semaphores' totals, the memory table's passes)."""

    trace: Trace
    machine: Machine
    graph: Graph
    instructions: pl.DataFrame
    timed: bool
    run: ModelRun
    """The model replay: what finished and in which order, the semaphores' history, and what
    blocked it if it got stuck."""
    semaphores: SemaphoreTotals | None
    """What the semaphore checks read of the semaphores table (None without the table)."""
    chunk_rows: int = CHUNK_ROWS
    findings: list[Finding] = field(default_factory=list)
    _hb: HappensBefore | None = None
    _hb_future: Future[HappensBefore] | None = None
    _memory: MemoryScan | None = None
    read_after: np.ndarray | None = None
    overwritten: np.ndarray | None = None
    """Per graph row, from the race check's memory sweep: whether another instruction reads
    what it wrote, and whether a write replaces some of it with no read in between."""
    reloads: Reloads | None = None
    """From the same sweep: HBM reads of bytes that another instruction has read since they
    were last written."""
    _queues: tuple[np.ndarray, list[str], np.ndarray] | None = None
    _work: Work | None = None

    def queues(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Each graph row's engine code, the engine names, and the rows in queue order (each
        engine's instructions by seq, engine after engine); worked out once for the checks
        that walk the queues."""
        if self._queues is None:
            from tracekit.replay.graph import queue_order
            from tracekit.replay.run import name_codes

            engine, engines = name_codes(self.instructions["engine"])
            self._queues = engine, engines, queue_order(engine,
                                                        self.instructions["seq"].to_numpy())
        return self._queues

    def times(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Observed start and end by graph row (int64, 0 where null), and where each is
        recorded."""
        inst = self.instructions
        start, end = inst["start"], inst["end"]
        if start.null_count() == 0 and end.null_count() == 0:
            every = np.ones(inst.height, dtype=bool)
            return start.to_numpy(), end.to_numpy(), every, every
        return (start.fill_null(0).to_numpy(), end.fill_null(0).to_numpy(),
                start.is_not_null().to_numpy(), end.is_not_null().to_numpy())

    def opcodes(self) -> tuple[np.ndarray, list[str]]:
        """Each graph row's opcode code, and the opcode names (sorted)."""
        from tracekit.replay.run import name_codes

        return name_codes(self.instructions["opcode"])

    def work(self) -> Work:
        """The instructions' work columns in the table's row order (`Work`), read once for
        the checks that use them and let go after the last (`find_bugs`)."""
        if self._work is None:
            self._work = Work.read(self.trace, self.graph.ids)
        return self._work

    def let_go_of_work(self) -> None:
        self._work = None

    def let_go_of_timeline(self) -> None:
        """The timeline's semaphore edges and history are read by TIMELINE_READERS only:
        once they have run, the graph without them and the run without its history do."""
        self.graph = self.graph.fixed
        self.run = replace(self.run, released=None, graph=None)

    def happens_before(self) -> HappensBefore:
        """Happens-before over the trace's fixed edges and its semaphores counted in every
        legal order (`tracekit.analysis.happens_before`), worked out once."""
        if self._hb is None:
            self._hb = (self._hb_future.result() if self._hb_future is not None
                        else self._happens_before())
        return self._hb

    def start_happens_before(self) -> None:
        """Start working out `happens_before` on a second thread: its passes are compiled
        code that releases the GIL, so the checks that do not need it run meanwhile (on a
        10M-instruction trace both take seconds)."""
        self.queues()  # shared with the checks: worked out before the thread starts
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="happens-before")
        self._hb_future = pool.submit(self._happens_before)
        pool.shutdown(wait=False)  # the thread ends with its one task

    def _happens_before(self) -> HappensBefore:
        engine, engines, order = self.queues()
        return happens_before(self.graph.fixed, engine, order, len(engines),
                              self._visit_order())

    def _visit_order(self) -> np.ndarray:
        """The rows that can run in some legal order, in an order every legal execution agrees
        with: what the model replay ran, in the order it did, then (when the replay got stuck
        on semaphores that do not only count up, where another order may run more) the rest
        that the fixed edges let run, in topological order."""
        done = self.run.done
        if self.run.stuck is None or self.graph.sems.monotone:
            return done
        fixed = self.graph.fixed
        ran = np.zeros(fixed.nodes, dtype=bool)
        ran[done] = True
        rest = kahn_order(fixed.nodes, fixed.src, fixed.destinations())
        return np.concatenate([done, rest[~ran[rest]].astype(done.dtype)])

    def never_run(self) -> np.ndarray:
        """Per graph row, whether it runs in no legal order: the model replay's stuck part
        when its semaphores only count up (the same in every order), else what a cycle of
        fixed edges holds up (another order of changes may release what the replay did not:
        conservative)."""
        can = np.zeros(self.graph.nodes, dtype=bool)
        can[self._visit_order()] = True
        return ~can

    def memory(self) -> MemoryScan:
        """The first pass over the memory table (`memory_sweep.scan_memory`), made once."""
        if self._memory is None:
            m = self.machine
            self._memory = scan_memory(self.trace, self.graph.ids, m.sbuf_partition_bytes,
                                       m.psum_partition_bytes, m.partitions)
        return self._memory

    def add(self, code: Code, message: str, **evidence: tuple) -> None:
        info = SIGNATURES[code]
        self.findings.append(Finding(code, info.severity, message, info.hint, **evidence))

    def cycles_per_tick(self) -> float | None:
        """Machine cycles per tick of the trace's start and end (None: a time without a
        clock), at the machine's clock."""
        return self.trace.manifest.cycles_per_tick(self.machine.clock_hz)

    def observed_start(self) -> np.ndarray | None:
        """Observed starts by graph row, or None unless every instruction has one."""
        start = self.instructions["start"]
        return start.to_numpy() if start.null_count() == 0 else None

    def program_rank(self) -> np.ndarray:
        """Each graph row's place in program order: observed start order when every
        instruction is timed (ids order instructions only within an engine), else id order."""
        start = self.observed_start()
        rank = np.arange(self.graph.nodes, dtype=np.int64)
        if start is not None:
            rank[np.lexsort((rank.copy(), start))] = np.arange(self.graph.nodes)
        return rank


@dataclass(frozen=True)
class Work:
    """The instructions' work columns as the table's rows have them (the checks that add up
    floats over them do so in that order): `rows`, each row's graph row (None when the table
    is in id order, the usual case); elements, bytes and flops (0 where null) and where they
    are recorded."""

    rows: np.ndarray | None
    elements: np.ndarray
    has_elements: np.ndarray
    bytes: np.ndarray
    has_bytes: np.ndarray
    flops: np.ndarray
    has_flops: np.ndarray

    @staticmethod
    def read(trace: Trace, ids: np.ndarray) -> Work:
        columns = read_ints(trace, "instructions", ["id", "elements", "bytes", "flops"])
        file_ids = columns.pop("id")[0]
        rows = None if np.array_equal(file_ids, ids) else positions(ids, file_ids)
        return Work(rows, *columns["elements"], *columns["bytes"], *columns["flops"])

    def graph_rows(self) -> np.ndarray:
        return np.arange(self.bytes.size) if self.rows is None else self.rows

    def by_graph_row(self) -> tuple[np.ndarray, ...]:
        """elements, has_elements, bytes, has_bytes, flops, has_flops by graph row."""
        columns = (self.elements, self.has_elements, self.bytes, self.has_bytes, self.flops,
                   self.has_flops)
        if self.rows is None:
            return columns
        out = tuple(np.empty_like(c) for c in columns)
        for o, c in zip(out, columns, strict=True):
            o[self.rows] = c
        return out


@dataclass(frozen=True)
class Signature:
    severity: Severity
    summary: str
    hint: str


SIGNATURES: dict[Code, Signature] = {
    Code.DEADLOCK_WAIT: Signature(
        Severity.ERROR, "A semaphore wait for a value its signals never reach.",
        "A missing or miscounted signal, or a wait value off by the number of producers."),
    Code.DEADLOCK_CYCLE: Signature(
        Severity.ERROR, "Instructions that wait on each other in a cycle.",
        "Two engines each waiting for the other: check the order of waits and signals."),
    Code.SEMAPHORE_LEAK: Signature(
        Severity.WARNING, "A semaphore that is signalled but never waited on.",
        "A consumer lost its wait (a possible race), or a signal left over from refactoring."),
    Code.SEMAPHORE_OVERFLOW: Signature(
        Severity.WARNING, "A semaphore whose count, in the model replay, passes what the "
                          "machine's counter holds (semaphores.counter_bits, 16 by default) "
                          "or falls below zero.",
        "Counts that only grow overflow the hardware counter: reset (set) or decrement (sub) "
        "semaphores between iterations; a count below zero is a sub without its signal."),
    Code.SEMAPHORE_ORDER_DEPENDENT: Signature(
        Severity.WARNING, "A wait whose release depends on the order of its semaphore's "
                          "changes: a set, a sub, or (for an == wait) any change that nothing "
                          "orders before or after the wait.",
        "The program's correctness depends on timing: order the reset or decrement against "
        "the wait (a semaphore or dependency between them), or wait with >= on a counter "
        "that only grows."),
    Code.START_BEFORE_DEPENDENCY: Signature(
        Severity.ERROR, "An instruction observed to start before a producer it depends on "
                        "ended.",
        "Timestamps from different clock domains, a trace merge error, or a real ordering "
        "bug in the hardware's synchronisation."),
    Code.ENGINE_OVERLAP: Signature(
        Severity.ERROR, "Two instructions of one in-order engine observed running at once.",
        "A timestamp error, or the engine is not in-order as the trace says."),
    Code.NEGATIVE_DURATION: Signature(
        Severity.ERROR, "An instruction observed to end before it starts.",
        "Swapped or wrapped timestamps in the producer."),
    Code.OUT_OF_BOUNDS: Signature(
        Severity.ERROR, "An SBUF or PSUM access past the memory's capacity (bytes per "
                        "partition, or partitions).",
        "An address computation or tiling bug in the compiler: the access wraps or "
        "corrupts another tile."),
    Code.RACE_RAW: Signature(
        Severity.ERROR, "A read of memory written by another instruction that nothing orders "
                        "before it (no happens-before path through engine order, semaphores "
                        "or deps).",
        "A missing semaphore wait between producer and consumer: the read can see stale data."),
    Code.RACE_WAR: Signature(
        Severity.ERROR, "A write over memory another instruction reads, with no happens-before "
                        "order between them.",
        "A buffer reused before its reader is done: a missing wait on the reader's signal."),
    Code.RACE_WAW: Signature(
        Severity.ERROR, "Two writes to overlapping memory with no happens-before order.",
        "Two producers of one buffer without synchronisation: the final contents depend on "
        "timing."),
    Code.LATENCY_OUTLIER: Signature(
        Severity.WARNING, f"An instruction taking over {OUTLIER_FACTOR}x the median of its "
                          f"peers (same engine kind, opcode and work size) and far outside their "
                          f"spread.",
        "Contention, a retried transfer, or a slow path in the hardware for this case."),
    Code.ENGINE_STUCK: Signature(
        Severity.ERROR, f"An instruction taking over {STUCK_FACTOR}x the median of its peers "
                        f"(or the machine model's time, with fewer than 8 peers): its engine "
                        f"was stuck on it.",
        "A hang resolved by a timeout, a lost completion, or a livelock in the engine."),
    Code.SLOW_ENGINE: Signature(
        Severity.WARNING, f"An engine or queue whose instructions take over {SLOW_FACTOR}x as "
                          f"long as the same work on its peers.",
        "A mis-configured or throttled DMA queue, or an engine running at a lower clock."),
    Code.BANDWIDTH_BEYOND_PHYSICS: Signature(
        Severity.ERROR, "DMA transfers moving more bytes within a window of cycles than the "
                        "machine's HBM bandwidth (all queues) or a queue's bandwidth allows.",
        "Timestamps that squeeze transfers (a wrong clock or a merge error), byte counts that "
        "are not what moved, or a machine description with the wrong bandwidth."),
    Code.REDUNDANT_RELOAD: Signature(
        Severity.INFO, "HBM bytes loaded again with no write to them in between.",
        "The data could stay on chip between uses: a larger tile, a different loop order, or "
        "keeping the earlier copy in SBUF."),
    Code.DEAD_WRITE: Signature(
        Severity.WARNING, "A write nobody reads: SBUF bytes never read before being "
                          "overwritten or the end, HBM bytes overwritten before any read.",
        "Wasted work or bandwidth: a tile loaded or computed and never used, or a store "
        "repeated; or a consumer that reads the wrong address."),
    Code.SMALL_DMA: Signature(
        Severity.WARNING, f"A DMA queue where at least {SMALL_DMA_SHARE:.0%} of the transfers "
                          f"are so small that their set-up takes longer than moving the bytes.",
        "Coalesce transfers into fewer, larger descriptors, or move whole tiles at once."),
    Code.SEMAPHORE_PING_PONG: Signature(
        Severity.WARNING, f"An engine waiting on semaphores at least {PING_PONG_WAITS} times "
                          f"with a median of under {PING_PONG_FACTOR}x the semaphore latency of "
                          f"work between waits.",
        "Fine-grained synchronisation: batch the work between waits (larger tiles, fewer "
        "signals), or let one signal cover several tiles."),
}

def shown_names(names: list[str]) -> np.ndarray:
    """Names for messages and evidence, each `names.shortened`, as an array to index by code
    (objects: a fixed-width string array would hold every name at the longest's width)."""
    out = np.empty(len(names), dtype=object)
    out[:] = [shortened(name) for name in names]
    return out


def _ids(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values)  # type: ignore[union-attr]


def _capped(ctx: Context, code: Code, frame: pl.DataFrame,
            describe: Callable[[dict], tuple[str, dict]]) -> None:
    """Report the first EXAMPLES rows of `frame` one by one; summarise the rest in one."""
    for row in frame.head(EXAMPLES).iter_rows(named=True):
        message, evidence = describe(row)
        ctx.add(code, message, **evidence)
    if frame.height > EXAMPLES:
        ctx.add(code, f"and {frame.height - EXAMPLES:,} more of the same")


def check_deadlocks(ctx: Context) -> None:
    """The run's stuck waits, and cycles of the trace's fixed edges. The run is the model
    replay (a count that never comes in the model's order: since counts that only grow reach
    the same values in every order, a stuck wait on such a semaphore is stuck in every
    order), or for a trace timed throughout the run it records (a wait whose count never
    comes in the observed order)."""
    stuck = ctx.run.stuck
    if stuck is not None:
        waits = stuck.filter(pl.col("sem").is_not_null()).sort("id")
        _capped(ctx, Code.DEADLOCK_WAIT, waits, lambda r: (
            f"instruction {r['id']} on {shortened(r['engine'])} "
            f"{wait_text({**r, 'behind': [shortened(e) for e in r['behind'] or []]})}",
            {"instructions": (r["id"],),
             "engines": tuple(shortened(e) for e in (r["engine"], *r["behind"]))}))
    members = cycle_members(ctx.graph.fixed)
    if members.size:
        ids = ctx.graph.ids[members]
        engines = sorted(shortened(e) for e in ctx.instructions.filter(
            pl.col("id").is_in(pl.Series(ids).implode()))["engine"].unique().drop_nulls()
            .cast(pl.String).to_list())
        ctx.add(Code.DEADLOCK_CYCLE, f"{ids.size:,} instructions on {len(engines)} engine(s) "
                f"wait on each other in a cycle", instructions=_ids(ids[:20]),
                engines=tuple(engines))


def cycle_members(graph: Graph) -> np.ndarray:
    """Rows on dependency cycles: what Kahn's algorithm cannot order, less what only hangs
    below a cycle (trimmed backwards)."""
    dst = graph.destinations()
    left = np.ones(graph.nodes, dtype=bool)
    left[kahn_order(graph.nodes, graph.src, dst)] = False
    keep = left[graph.src] & left[dst]
    if not keep.any():
        return np.zeros(0, dtype=np.int64)
    # Reverse direction: drop leftovers with no leftover successor, repeatedly.
    on_cycle = left.copy()
    on_cycle[kahn_order(graph.nodes, dst[keep], graph.src[keep])] = False
    return np.flatnonzero(on_cycle & left)


def check_semaphores(ctx: Context) -> None:
    if ctx.semaphores is None:
        return
    leaks = ctx.semaphores.leaks.filter(pl.lit(not partial(ctx.trace, "semaphore_waits",
                                                           "partial")))
    _capped(ctx, Code.SEMAPHORE_LEAK, leaks, lambda r: (
        f"semaphore {r['sem']} is signalled {r['signals']} time(s) (adding "
        f"{r['signalled']}) and never waited on", {"instructions": _ids(r["first"])}))
    extremes = _count_extremes(ctx.graph.sems, ctx.run.released)
    if extremes.height == 0:
        return
    ceiling = ctx.machine.semaphore_max
    over = extremes.filter((pl.col("highest") > ceiling) | (pl.col("lowest") < 0))
    bits = ctx.machine.semaphore_bits

    def describe(r: dict) -> tuple[str, dict]:
        inst = int(ctx.graph.ids[r["at_highest" if r["highest"] > ceiling else "at_lowest"]])
        if r["highest"] > ceiling:
            what = (f"reaches a count of {r['highest']:,} in the model replay, past the "
                    f"{bits}-bit counter's {ceiling:,}")
        else:
            what = f"falls to {r['lowest']:,} in the model replay: a sub below zero"
        return f"semaphore {r['sem']} {what}", {"instructions": (inst,)}

    _capped(ctx, Code.SEMAPHORE_OVERFLOW, over, describe)


def _count_extremes(sems: SemTable, released: Released | None) -> pl.DataFrame:
    """Per semaphore with changes in the replay: its number, the highest and lowest count it
    took, and the rows of the instructions whose change made each."""
    if released is None or sems.size == 0 or released.log.size == 0:
        return pl.DataFrame()
    highest, at_high, lowest, at_low = _extremes(sems.log_ptr, released.log,
                                                 released.log_count, released.arrived,
                                                 sems.node)
    seen = released.arrived > 0
    return pl.DataFrame({"sem": sems.numbers[seen], "highest": highest[seen],
                         "at_highest": at_high[seen], "lowest": lowest[seen],
                         "at_lowest": at_low[seen]})


@numba.njit(cache=True, nogil=True)
def _extremes(log_ptr, log, log_count, arrived, node):  # pragma: no cover - compiled
    n_sem = log_ptr.size - 1
    highest = np.zeros(n_sem, dtype=np.int64)
    lowest = np.zeros(n_sem, dtype=np.int64)
    at_high = np.zeros(n_sem, dtype=np.int64)
    at_low = np.zeros(n_sem, dtype=np.int64)
    for s in range(n_sem):
        for k in range(log_ptr[s], log_ptr[s] + arrived[s]):
            if k == log_ptr[s] or log_count[k] > highest[s]:
                highest[s], at_high[s] = log_count[k], node[log[k]]
            if k == log_ptr[s] or log_count[k] < lowest[s]:
                lowest[s], at_low[s] = log_count[k], node[log[k]]
    return highest, at_high, lowest, at_low


@dataclass(frozen=True)
class SemaphoreTotals:
    """What the semaphore checks read of the semaphores table, worked out once it is read so
    that it need not be kept: the semaphores signalled and never waited on (`leaks`: sem
    number, waits, signalled (the signals' values added up), signals, first (the EXAMPLES
    lowest ids of signalling instructions), by number), and per graph row whether it waits
    for a value above 0 (`waiting`)."""

    leaks: pl.DataFrame
    waiting: np.ndarray


def semaphore_totals(table: pl.DataFrame, sems: SemTable, ids: np.ndarray) -> SemaphoreTotals:
    """`SemaphoreTotals` of the semaphores `table` (inst, sem, op, value, ...), from its
    arrays in `sems` (the graph's) when every op is a name the schema knows, else from the
    table itself (an unvalidated trace: an unknown op counts as neither wait nor signal)."""
    distinct = table["op"].unique()
    if distinct.null_count() or not distinct.cast(pl.String).is_in(list(OP_NAMES)).all():
        signal = pl.col("op") == "signal"
        leaks = (table.group_by("sem")
                 .agg((pl.col("op") == "wait").sum().alias("waits"),
                      pl.col("value").filter(signal).sum().alias("signalled"),
                      signal.sum().alias("signals"),
                      pl.col("inst").filter(signal).bottom_k(EXAMPLES).sort().alias("first"))
                 .filter((pl.col("waits") == 0) & (pl.col("signalled") > 0)).sort("sem"))
        waiting = np.zeros(ids.size, dtype=bool)
        waiting[positions(ids, table.filter((pl.col("op") == "wait") & (pl.col("value") > 0))[
            "inst"].to_numpy())] = True
        return SemaphoreTotals(leaks, waiting)
    waits, signals, signalled = _per_semaphore(sems.sem, sems.op, sems.value, sems.semaphores)
    leak = np.flatnonzero((waits == 0) & (signalled > 0))
    rows = (np.flatnonzero((sems.op == SIGNAL) & np.isin(sems.sem, leak)) if leak.size
            else np.zeros(0, dtype=np.int64))
    first = (pl.DataFrame({"sem": sems.sem[rows], "inst": ids[sems.node[rows]]})
             .group_by("sem").agg(pl.col("inst").bottom_k(EXAMPLES).sort().alias("first")))
    leaks = (pl.DataFrame({"code": leak, "sem": sems.numbers[leak], "waits": waits[leak],
                           "signalled": signalled[leak], "signals": signals[leak]},
                          schema={"code": pl.Int64, "sem": pl.Int64, "waits": pl.UInt32,
                                  "signalled": pl.Int64, "signals": pl.UInt32})
             .join(first.select(pl.col("sem").cast(pl.Int64).alias("code"), "first"),
                   on="code", how="left").drop("code")
             .sort("sem"))
    waiting = np.zeros(ids.size, dtype=bool)
    waiting[sems.node[(sems.op == WAIT) & (sems.value > 0)]] = True
    return SemaphoreTotals(leaks, waiting)


@numba.njit(cache=True, nogil=True)
def _per_semaphore(sem, op, value, n_sem):  # pragma: no cover - compiled
    """Per semaphore code: its waits, its signals and their values added up."""
    waits = np.zeros(n_sem, dtype=np.int64)
    signals = np.zeros(n_sem, dtype=np.int64)
    signalled = np.zeros(n_sem, dtype=np.int64)
    for r in range(sem.size):
        if op[r] == WAIT:
            waits[sem[r]] += 1
        elif op[r] == SIGNAL:
            signals[sem[r]] += 1
            signalled[sem[r]] += value[r]
    return waits, signals, signalled


def check_order_dependent(ctx: Context) -> None:
    """Waits whose release the order of their semaphore's changes decides (only semaphores
    with sub, set or == waits can have them)."""
    g = ctx.graph
    if g.sems.size == 0 or g.sems.monotone:
        return
    flagged = np.flatnonzero(ctx.happens_before().order_dependent)
    if flagged.size == 0:
        return
    sems = g.sems
    engine, engines, _ = ctx.queues()
    node = sems.node[flagged]
    frame = pl.DataFrame({
        "id": g.ids[node], "engine": shown_names(engines)[engine[node]],
        "sem": sems.numbers[sems.sem[flagged]],
        "cond": np.where(sems.cond[flagged] == EQ, "==", ">="),
        "value": sems.value[flagged]}).sort("id", "sem")
    _capped(ctx, Code.SEMAPHORE_ORDER_DEPENDENT, frame, lambda r: (
        f"instruction {r['id']} on {r['engine']} waits for semaphore {r['sem']} "
        f"{r['cond']} {r['value']}, and a change of it that nothing orders before or after "
        f"the wait decides whether (and when) it is released",
        {"instructions": (r["id"],), "engines": (r["engine"],)}))


def check_timing(ctx: Context) -> None:
    if not ctx.timed:
        return
    inst = ctx.instructions
    negative = inst.filter(pl.col("end") < pl.col("start"))
    _capped(ctx, Code.NEGATIVE_DURATION, negative, lambda r: (
        f"instruction {r['id']} on {shortened(str(r['engine']))} ends at {r['end']:,}, before "
        f"its start {r['start']:,}", {"instructions": (r["id"],),
                                      "engines": (shortened(str(r["engine"])),),
                            "cycles": (r["start"], r["end"])}))
    g = ctx.graph
    # A partly timed trace (a run that deadlocked) is checked where both ends are timed.
    start, end, has_start, has_end = ctx.times()
    # A profiler's timestamps are rounded (to 1 us in a Chrome trace): an overlap within that
    # is no evidence; and a profiler records a launch and the work it launches asynchronously,
    # so work may start before its launch call returns (not before the call starts).
    resolution, asynchronous = _recorded_timing(ctx)
    early = _early_edges(g.ptr, g.src, g.kind, start, end, has_start, has_end, resolution,
                         asynchronous)
    if early.size == 0:
        return
    dst = np.searchsorted(g.ptr, early, side="right") - 1
    engine = inst["engine"]
    unit = ctx.trace.manifest.time_unit.value
    # One finding per pair: a dependency edge (semaphore, data) says more than engine order,
    # and the graph lists a pair's edges by kind, order first, so the last one is kept.
    frame = pl.DataFrame({
        "src": g.ids[g.src[early]], "dst": g.ids[dst],
        "kind": pl.Series([k.value for k in KINDS])[g.kind[early].astype(np.int64)],
        "src_end": end[g.src[early]], "dst_start": start[dst],
        "src_engine": shortened_column(engine.gather(g.src[early])),
        "dst_engine": shortened_column(engine.gather(dst)),
    }).unique(["src", "dst"], keep="last", maintain_order=True).sort("dst", "src")
    for code, rows in ((Code.ENGINE_OVERLAP, frame.filter(pl.col("kind") == KINDS[ORDER].value)),
                       (Code.START_BEFORE_DEPENDENCY,
                        frame.filter(pl.col("kind") != KINDS[ORDER].value))):
        _capped(ctx, code, rows, lambda r: (
            f"instruction {r['dst']} on {r['dst_engine']} starts at {r['dst_start']:,}, "
            f"{r['src_end'] - r['dst_start']:,} {unit} before instruction {r['src']} on "
            f"{r['src_engine']} ({r['kind']} edge) ends at {r['src_end']:,}",
            {"instructions": (r["src"], r["dst"]), "engines": (r["src_engine"], r["dst_engine"]),
             "cycles": (r["src_end"], r["dst_start"])}))


@numba.njit(cache=True, nogil=True)
def _early_edges(ptr, src, kind, start, end, has_start, has_end, resolution,
                 asynchronous):  # pragma: no cover - compiled
    """The edges (places in src) whose destination starts before their source ends, where
    both are recorded: by more than `resolution` when it is above 0, and with `asynchronous`
    not counting a dependency (not engine order) whose destination starts no earlier than its
    source (less the resolution; a source without a start is no such case)."""
    found = []
    for j in range(ptr.size - 1):
        if not has_start[j]:
            continue
        for k in range(ptr[j], ptr[j + 1]):
            i = src[k]
            if not has_end[i] or start[j] >= end[i]:
                continue
            if resolution > 0 and not np.float64(end[i]) - np.float64(start[j]) > resolution:
                continue
            if (asynchronous and kind[k] != ORDER and has_start[i]
                    and np.float64(start[j]) >= np.float64(start[i]) - resolution):
                continue
            found.append(k)
    return np.array(found, dtype=np.int64)


def _recorded_timing(ctx: Context) -> tuple[float, bool]:
    """How the trace's times were recorded: the resolution of its timestamps in its own unit
    (0: exact) and whether it is a profiler's record of asynchronous launches (a Chrome trace
    import: 1 us per timestamp tick; a PyTorch profiler's: asynchronous)."""
    chrome = ctx.trace.manifest.extra.get("chrome")
    if not isinstance(chrome, dict) or chrome.get("format") != "chrome":
        return 0.0, False
    per_us = chrome.get("cycles_per_us")
    resolution = float(per_us) if isinstance(per_us, int | float) and per_us > 0 else 0.0
    return resolution, chrome.get("profile") == "kineto"


def check_bounds(ctx: Context) -> None:
    if not ctx.trace.has_table("memory"):
        return
    m = ctx.machine
    bad = ctx.memory().out_of_bounds  # found by the first pass over the table
    _capped(ctx, Code.OUT_OF_BOUNDS, bad, lambda r: (
        f"instruction {r['inst']} {_VERBS.get(r['access'], 'accesses')} {r['space'].upper()} "
        f"bytes {r['addr']:,}..{r['addr'] + r['size']:,} of "
        + ("unstated partitions" if r["partition"] is None or r["partitions"] is None else
           f"partitions {r['partition']}..{r['partition'] + r['partitions'] - 1}")
        + f", past {m.sbuf_partition_bytes if r['space'] == 'sbuf' else m.psum_partition_bytes:,}"
        f" bytes x {m.partitions} partitions",
        {"instructions": (r["inst"],),
         "addresses": (f"{r['space']}:{r['addr']}+{r['size']}@p{_or_unknown(r['partition'])}"
                       f"x{_or_unknown(r['partitions'])}",)}))


_VERBS = {"read": "reads", "write": "writes"}


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def check_latency(ctx: Context) -> None:
    """Robust statistics per peer group (engine kind, opcode, elements, bytes, flops); where a
    group is too small for statistics, the machine's latency model is the reference."""
    if not ctx.timed:
        return
    from tracekit.replay.machine import engine_kind

    start, end, has_start, has_end = ctx.times()
    timed = has_start & has_end
    engine, engines, _ = ctx.queues()
    opcode, opcodes = ctx.opcodes()
    kinds = sorted({engine_kind(e) for e in engines})
    kind_of = np.array([kinds.index(engine_kind(e)) for e in engines], dtype=np.int64)
    work = ctx.work().by_graph_row()  # elements, has, bytes, has, flops, has
    group = _peer_groups(kind_of, engine, opcode, *work, timed)
    median, mad, peers = _peer_stats(group, start, end)
    per_tick = ctx.cycles_per_tick()
    coefficients = _coefficients(ctx, engines, opcodes, _pairs(engine, opcode, len(opcodes),
                                                                timed))
    floor = STUCK_CYCLES / per_tick if per_tick else STUCK_CYCLES  # in the trace's unit
    # A median at the timestamps' resolution (or zero) is rounding, not a reference; and the
    # machine's latency model says nothing of a profiler's CPU calls and GPU kernels.
    resolution, profiler = _recorded_timing(ctx)
    stuck, slow, modelled = _outliers(group, median, mad, peers, start, end, engine, opcode,
                                      len(opcodes), coefficients, work[0], work[2], work[4],
                                      np.nan if per_tick is None else per_tick, resolution,
                                      profiler, floor, STUCK_FACTOR, OUTLIER_FACTOR)
    names, ops = shown_names(engines), shown_names(opcodes)
    unit = ctx.trace.manifest.time_unit.value  # of durations, medians and the model's reference
    for code, rows in ((Code.ENGINE_STUCK, stuck), (Code.LATENCY_OUTLIER, slow)):
        few = peers[group[rows]] < 8
        found = pl.DataFrame({
            "id": ctx.graph.ids[rows], "engine": names[engine[rows]],
            "opcode": ops[opcode[rows]], "duration": end[rows] - start[rows],
            "reference": np.where(few, modelled[rows], median[group[rows]]),
            "peers": peers[group[rows]], "model": few}).sort(
                pl.col("duration") / pl.col("reference"), "id", descending=[True, False])
        _capped(ctx, code, found, lambda r: (
            f"instruction {r['id']} ({r['opcode']}) on {r['engine']} took {r['duration']:,} "
            f"{unit}, {r['duration'] / (r['reference'] or 1):,.0f}x "
            + (f"the {_amount(r['reference'])} {unit} of the machine's latency model (too few "
               f"peers for statistics: {r['peers']})" if r["model"] else
               f"the median of its {r['peers']:,} peers"),
            {"instructions": (r["id"],), "engines": (r["engine"],),
             "cycles": (r["duration"], round(r["reference"]))}))
    # A whole engine slower than its peers: how much longer than the model its instructions
    # take (a per-work measure that needs no identical peers), against the other engines of
    # its kind.
    timed_work = np.flatnonzero(modelled > 0)  # timed, with a model (not NaN)
    by_engine = (pl.DataFrame({"engine": engine[timed_work],
                               "ratio": (end[timed_work] - start[timed_work])
                               / modelled[timed_work]})
                 .group_by("engine").agg(pl.col("ratio").median().alias("own"),
                                         pl.len().alias("n"))
                 .filter(pl.col("n") >= 2))
    by_engine = (by_engine.with_columns(
                     pl.Series("name", engines, pl.String).gather(by_engine["engine"]),
                     pl.Series("kind", kinds, pl.String).gather(kind_of[by_engine["engine"]]))
                 .with_columns(pl.col("own").median().over("kind").alias("typical"),
                               pl.len().over("kind").alias("engines"))
                 .with_columns((pl.col("own") / pl.col("typical")).alias("ratio"))
                 .filter((pl.col("engines") >= 2) & (pl.col("ratio") > SLOW_FACTOR))
                 .sort("name"))
    _capped(ctx, Code.SLOW_ENGINE, by_engine, lambda r: (
        f"{r['name']} takes {r['ratio']:.1f}x as long as other {r['kind']} engines for the "
        f"same work ({r['n']:,} instructions)", {"engines": (r["name"],)}))


def _amount(value: float) -> str:
    """A duration for a message: whole numbers, or three significant digits below 10 (a
    model's cycles can be a fraction of a microsecond)."""
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3g}"


def _coefficients(ctx: Context, engines: list[str], opcodes: list[str],
                  present: np.ndarray) -> np.ndarray:
    """Per (engine, opcode) pair (engine * len(opcodes) + opcode) that is `present`, the
    latency model's fixed cycles and cycles per element, per byte (a DMA queue's also at its
    bandwidth) and per flop."""
    from tracekit.replay.machine import engine_kind

    m = ctx.machine
    coefficients = np.zeros((4, present.size))
    for p in np.flatnonzero(present):
        e, o = divmod(int(p), len(opcodes))
        lat = m.latency(engines[e], opcodes[o])
        moved = 1.0 / m.queue_bandwidth(engines[e]) if engine_kind(engines[e]) == "dma" else 0.0
        coefficients[:, p] = (lat.fixed_cycles, lat.per_element, lat.per_byte + moved,
                              lat.per_flop)
    return coefficients


@numba.njit(cache=True, nogil=True)
def _pairs(engine, opcode, n_opcodes, rows):  # pragma: no cover - compiled
    """Which (engine, opcode) pairs the `rows` (a mask) have."""
    present = np.zeros(max(engine.max() + 1, 1) * max(n_opcodes, 1) if engine.size else 1,
                       dtype=np.bool_)
    for r in range(engine.size):
        if rows[r]:
            present[engine[r] * n_opcodes + opcode[r]] = True
    return present


@numba.njit(cache=True, nogil=True)
def _peer_groups(kind_of, engine, opcode, elements, has_elements, nbytes, has_bytes, flops,
                 has_flops, timed):  # pragma: no cover - compiled
    """Each timed instruction's peer group (0, 1, ... in order of first appearance; -1 when
    untimed): equal engine kind, opcode, elements, bytes and flops (a missing value equal
    only to a missing one), through an open-addressing hash table of each group's first
    instruction, doubled when half full."""
    n = engine.size
    first = np.full(1024, -1, dtype=np.int64)
    group = np.full(n, -1, dtype=np.int32)
    groups = 0
    for r in range(n):
        if not timed[r]:
            continue
        if 2 * groups >= first.size:
            grown = np.full(2 * first.size, -1, dtype=np.int64)
            for q in first:
                if q >= 0:
                    slot = _peer_hash(kind_of[engine[q]], opcode[q], elements[q],
                                      has_elements[q], nbytes[q], has_bytes[q], flops[q],
                                      has_flops[q], grown.size)
                    while grown[slot] >= 0:
                        slot = (slot + 1) & (grown.size - 1)
                    grown[slot] = q
            first = grown
        slot = _peer_hash(kind_of[engine[r]], opcode[r], elements[r], has_elements[r],
                          nbytes[r], has_bytes[r], flops[r], has_flops[r], first.size)
        while True:
            q = first[slot]
            if q < 0:
                first[slot] = r
                group[r] = groups
                groups += 1
                break
            if (kind_of[engine[q]] == kind_of[engine[r]] and opcode[q] == opcode[r]
                    and has_elements[q] == has_elements[r] and has_bytes[q] == has_bytes[r]
                    and has_flops[q] == has_flops[r]
                    and (elements[q] == elements[r] or not has_elements[r])
                    and (nbytes[q] == nbytes[r] or not has_bytes[r])
                    and (flops[q] == flops[r] or not has_flops[r])):
                group[r] = group[q]
                break
            slot = (slot + 1) & (first.size - 1)
    return group


@numba.njit(cache=True)
def _peer_hash(kind, opcode, elements, has_elements, nbytes, has_bytes, flops, has_flops,
               size):  # pragma: no cover - compiled
    h = np.uint64(kind * 1000003 + opcode)
    for v, present in ((elements, has_elements), (nbytes, has_bytes), (flops, has_flops)):
        h = (h ^ np.uint64(v if present else -1)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(size - 1))


@numba.njit(cache=True, nogil=True)
def _peer_stats(group, start, end):  # pragma: no cover - compiled
    """Per peer group: the median duration, the median absolute deviation from it (medians
    of an even count: the mean of the two middle values), and the group's size."""
    groups = group.max() + 1 if group.size else 0
    ptr = np.zeros(groups + 1, dtype=np.int64)
    for g in group:
        if g >= 0:
            ptr[g + 1] += 1
    for g in range(groups):
        ptr[g + 1] += ptr[g]
    fill = ptr[:-1].copy()
    order = np.empty(ptr[groups], dtype=np.int32)
    for r in range(group.size):
        if group[r] >= 0:
            order[fill[group[r]]] = r
            fill[group[r]] += 1
    median = np.empty(groups)
    mad = np.empty(groups)
    for g in range(groups):
        members = order[ptr[g]:ptr[g + 1]]
        values = np.empty(members.size)
        for k in range(members.size):
            values[k] = end[members[k]] - start[members[k]]
        median[g] = np.median(values)
        mad[g] = np.median(np.abs(values - median[g]))
    return median, mad, ptr[1:] - ptr[:-1]


@numba.njit(cache=True, nogil=True)
def _outliers(group, median, mad, peers, start, end, engine, opcode, n_opcodes,
              coefficients, elements, nbytes, flops, per_tick, resolution, profiler, floor,
              stuck_factor, outlier_factor):  # pragma: no cover - compiled
    """The timed instructions stuck and those slow (outliers) by `check_latency`'s rules, and
    each instruction's duration by the latency model (NaN without a clock, or untimed)."""
    stuck, slow = [], []
    modelled = np.full(group.size, np.nan)
    for r in range(group.size):
        g = group[r]
        if g < 0:
            continue
        p = engine[r] * n_opcodes + opcode[r]
        modelled[r] = (coefficients[0, p] + coefficients[1, p] * elements[r]
                       + coefficients[2, p] * nbytes[r]
                       + coefficients[3, p] * flops[r]) / per_tick
        duration = end[r] - start[r]
        many = peers[g] >= 8
        outside = many and duration > median[g] + 10 * 1.4826 * mad[g] + 1
        reference = median[g] if many else modelled[r]
        usable = median[g] > resolution if many else not profiler
        is_stuck = (usable and (outside or not many) and duration > stuck_factor * reference
                    and duration - reference > floor)
        is_slow = usable and outside and duration > outlier_factor * median[g] and not is_stuck
        if profiler:
            # A profiler's host call or kernel far slower than its peers is warm-up
            # (autotuning, a first allocation, lazy initialisation), not an engine stuck.
            is_slow, is_stuck = is_slow or is_stuck, False
        if is_stuck:
            stuck.append(r)
        if is_slow:
            slow.append(r)
    return np.array(stuck, dtype=np.int64), np.array(slow, dtype=np.int64), modelled


def check_bandwidth(ctx: Context) -> None:
    """DMA bytes moved inside a window of cycles beyond what the machine's HBM (all queues) or
    one queue can move in it. A transfer counts in a window only when it starts and ends
    inside it, so no assumption about its rate over time is made: 400,000 bytes moved by
    transfers that all ran within cycles 1,000..2,000 need 400 bytes per cycle."""
    per_tick = ctx.cycles_per_tick()
    if not ctx.timed or per_tick is None:
        return  # the machine's cycles cannot be compared with the trace's times
    from tracekit.replay.machine import engine_kind

    unit = ctx.trace.manifest.time_unit.value
    w = ctx.work()
    start, end, has_start, has_end = ctx.times()
    codes, engines, _ = ctx.queues()
    rows = w.graph_rows()
    # Transfers in the table's order (the peak rate sums floats in the order of time, ties
    # in that order): bytes moved, times recorded and not reversed, on a DMA queue.
    queues = [k for k, e in enumerate(engines) if engine_kind(e) == "dma"]
    is_queue = np.zeros(len(engines), dtype=bool)
    is_queue[queues] = True
    picked = np.flatnonzero(w.has_bytes & (w.bytes > 0) & has_start[rows] & has_end[rows]
                            & (end[rows] >= start[rows]) & is_queue[codes[rows]])
    rows = rows[picked]
    ids, queue, nbytes = ctx.graph.ids[rows], codes[rows], w.bytes[picked]
    first, last = start[rows], end[rows]
    m = ctx.machine
    names = shown_names(engines)
    # The replay's model too sends every DMA byte through HBM.
    scopes = [("all DMA queues", np.arange(rows.size), m.hbm_bytes_per_cycle,
               "the machine's HBM bandwidth")] + [
        (f"queue {shortened(engines[q])}", np.flatnonzero(queue == q), m.queue_bandwidth(engines[q]),
         "the queue's bandwidth") for q in queues]
    for scope, at, limit, what in scopes:
        if at.size == 0:
            continue
        a, b, moving = first[at], last[at], nbytes[at].astype(np.float64)
        allowed = limit * (1 + BANDWIDTH_SLACK) * per_tick  # bytes per tick of the trace
        if _peak_rate(a, b, moving) <= allowed:
            continue  # no window can hold more: the exact search is not needed
        lo, hi, moved = _densest_window(a, b, moving, allowed)
        # Timestamps are whole ticks: a window can be short by up to a tick at each end.
        grace = max(allowed, allowed / per_tick) * BANDWIDTH_GRACE_CYCLES
        if moved - allowed * (hi - lo) <= grace:
            continue
        inside = at[(a >= lo) & (b <= hi)]
        inside = inside[np.lexsort((ids[inside], first[inside]))]
        rate = moved / max(hi - lo, 1) / per_tick
        ctx.add(Code.BANDWIDTH_BEYOND_PHYSICS,
                f"{scope}: {inside.size:,} transfers moved {int(moved):,} bytes within "
                f"{unit} {lo:,}..{hi:,}, {rate:,.1f} bytes/cycle, over {what} of "
                f"{limit:,.1f} bytes/cycle", instructions=_ids(ids[inside[:20]]),
                engines=tuple(sorted(set(names[queue[inside]].tolist()))), cycles=(lo, hi))


def _peak_rate(start: np.ndarray, end: np.ndarray, nbytes: np.ndarray) -> float:
    """The highest sum of average rates (bytes / duration) of the transfers under way at any
    moment: an upper bound of the bytes per cycle inside any window, since each transfer's
    bytes are its average rate integrated over its life. Infinite for a zero-length transfer
    that moves bytes."""
    length = end - start
    if (length <= 0).any():
        return float("inf")
    rate = nbytes / length
    # One integer key per event: twice the time, plus one for a start, so that at one
    # instant the ends come first; ties in the order of the events (ends, then starts).
    times = np.concatenate([2 * end, 2 * start + 1])
    low, span = int(times.min()), int(times.max()) - int(times.min()) + 1
    if span < (2**62) // times.size:
        # The key and the event's number in one integer: a plain sort gives the stable order.
        keys = (times - low) * times.size + np.arange(times.size)
        del times
        keys.sort(kind="stable")  # (runs: each queue's events come in time order)
        return float(_peak_of_sorted(keys, rate))
    steps = np.concatenate([-rate, rate])
    return float(np.cumsum(steps[np.argsort(times, kind="stable")]).max())


@numba.njit(cache=True, nogil=True)
def _peak_of_sorted(keys, rate):  # pragma: no cover - compiled
    """The highest running sum of the events' rates (-rate at an end, +rate at a start) in
    the order of `keys` (each time * events + event number: ends 0..m-1, starts m..2m-1),
    added up one by one as np.cumsum does."""
    events, m = keys.size, rate.size
    total, peak = 0.0, -np.inf
    for key in keys:
        e = key % events
        total += -rate[e] if e < m else rate[e - m]
        peak = max(peak, total)
    return peak


def _densest_window(start: np.ndarray, end: np.ndarray, nbytes: np.ndarray,
                    rate: float) -> tuple[int, int, float]:
    """The window [lo, hi] that maximises (bytes of transfers inside it) - rate * (hi - lo),
    and those bytes. Windows start at a transfer's start and end at a transfer's end."""
    candidates = sorted_unique(start)
    by_end = np.lexsort((start, end))
    slot = np.searchsorted(candidates, start)
    best_end = _sweep_windows(candidates.astype(np.float64), slot[by_end], end[by_end],
                              nbytes[by_end], rate)
    hi = int(end[by_end][best_end])
    # The best start for that end: bytes inside [a, hi] for every candidate a, vectorized.
    done = end <= hi
    s_sorted = np.sort(start[done])
    b_sorted = nbytes[done][np.argsort(start[done], kind="stable")]
    after = np.r_[np.cumsum(b_sorted[::-1])[::-1], 0.0]  # bytes of transfers starting >= a
    a = candidates[candidates <= hi]
    inside = after[np.searchsorted(s_sorted, a, side="left")]
    pick = int(np.argmax(inside - rate * (hi - a)))
    return int(a[pick]), hi, float(inside[pick])


@numba.njit(cache=True, nogil=True)
def _sweep_windows(candidates, slot, end, nbytes, rate):  # pragma: no cover - compiled
    """Over transfers in end order, a lazy max segment tree holding, per candidate start a,
    (bytes of the transfers so far that start at or after a) + rate * a; the best window
    ending at transfer t's end is the tree's max over a <= end minus rate * end. Returns the
    transfer whose end closes the best window."""
    h = 1
    while (1 << h) < candidates.size:
        h += 1
    n = 1 << h  # a power of two: every node covers one contiguous run of candidates
    tree = np.full(2 * n, -np.inf)
    lazy = np.zeros(n)
    for i in range(candidates.size):
        tree[n + i] = rate * candidates[i]
    for p in range(n - 1, 0, -1):
        tree[p] = max(tree[2 * p], tree[2 * p + 1])
    best, best_t = -np.inf, 0
    for t in range(end.size):
        # add nbytes[t] to every candidate a <= start[t]: slots [0, slot[t]]
        lo, hi = n, slot[t] + 1 + n
        l0, r0 = lo, hi
        while lo < hi:
            if lo & 1:
                tree[lo] += nbytes[t]
                if lo < n:
                    lazy[lo] += nbytes[t]
                lo += 1
            if hi & 1:
                hi -= 1
                tree[hi] += nbytes[t]
                if hi < n:
                    lazy[hi] += nbytes[t]
            lo >>= 1
            hi >>= 1
        for p in (l0, r0 - 1):
            while p > 1:
                p >>= 1
                tree[p] = max(tree[2 * p], tree[2 * p + 1]) + lazy[p]
        # max over candidates a <= end[t]
        q_hi = np.searchsorted(candidates, end[t], side="right")
        lo, hi = n, q_hi + n
        for p in (lo, hi - 1):
            for s in range(h, 0, -1):
                i = p >> s
                if lazy[i] != 0:
                    for c in (2 * i, 2 * i + 1):
                        tree[c] += lazy[i]
                        if c < n:
                            lazy[c] += lazy[i]
                    lazy[i] = 0
        value = -np.inf
        while lo < hi:
            if lo & 1:
                value = max(value, tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                value = max(value, tree[hi])
            lo >>= 1
            hi >>= 1
        if value - rate * end[t] > best:
            best, best_t = value - rate * end[t], t
    return best_t


def check_reloads(ctx: Context) -> None:
    """HBM bytes loaded again with no write to them in between: the bytes could have stayed on
    chip (or the tiling could reuse them). From the race check's memory sweep: a read whose
    every byte another instruction has read since the byte was last written (a
    read-modify-write in between counts as a write)."""
    totals = ctx.reloads
    if totals is None or totals.again == 0 or totals.top is None:
        return  # no memory table (so no sweep), or no re-read
    scan = ctx.memory()
    # The first 20 instructions that reload, in program order.
    reloading = np.flatnonzero(totals.reloading)
    rank = ctx.program_rank()[reloading]
    pick = np.argpartition(rank, 19)[:20] if rank.size > 20 else np.arange(rank.size)
    first = ctx.graph.ids[reloading[pick[np.argsort(rank[pick])]]]
    addr, size, n = totals.top
    ctx.add(Code.REDUNDANT_RELOAD,
            f"{totals.again:,} of {scan.loads:,} HBM loads ({totals.again_bytes:,} of "
            f"{scan.loaded_bytes:,} bytes) re-read bytes loaded before with no write in "
            f"between; the range re-read most often, {addr:#x}+{size:,}, was re-read "
            f"{n:,} time(s) and loaded {totals.times:,} time(s) as that exact range",
            instructions=_ids(first), addresses=(f"hbm:{addr}+{size}",))


def check_dead_writes(ctx: Context) -> None:
    """Writes nobody reads: SBUF writes never read before they are overwritten or the trace
    ends, and HBM writes overwritten before any read. PSUM writes are left out: matmuls
    accumulate into it, so a write followed by a write there is the normal case. Per
    instruction, from the race check's sweep: an instruction counts as read when anything it
    wrote is read."""
    if not ctx.trace.has_table("memory"):
        return
    if ctx.read_after is None or ctx.overwritten is None:
        return  # no memory conflicts were swept (the race check found no memory table)
    g = ctx.graph
    writes = ctx.memory().writes
    dead = _dead(writes, ctx.read_after, ctx.overwritten)
    if not dead.any():
        return
    rows = dead_write_bytes(ctx.trace, ctx.memory(), g.ids, dead)  # inst, bytes, by inst
    dead_node = positions(g.ids, rows["inst"].to_numpy())
    inst = ctx.instructions
    rows = rows.with_columns(pl.Series("sbuf", (writes[dead_node] & WRITES_SBUF) > 0),
                             pl.Series("overwritten", ctx.overwritten[dead_node]),
                             shortened_column(inst["engine"].gather(dead_node)),
                             shortened_column(inst["opcode"].gather(dead_node)))
    _capped(ctx, Code.DEAD_WRITE, rows, lambda r: (
        f"instruction {r['inst']} ({r['opcode']}) on {r['engine']} writes {r['bytes']:,} "
        + (f"SBUF bytes that are {'overwritten' if r['overwritten'] else 'left'} before "
           f"anything reads them" if r["sbuf"] else
           "HBM bytes that are overwritten, in part or whole, before anything reads them"),
        {"instructions": (r["inst"],), "engines": (r["engine"],)}))


def _dead(writes: np.ndarray, read_after: np.ndarray | None,
          overwritten: np.ndarray | None) -> np.ndarray:
    """Per graph row, whether it writes and nobody reads what it wrote, and it writes SBUF
    or its write is overwritten (`MemoryScan.writes` and the race check's sweep)."""
    assert read_after is not None and overwritten is not None
    sbuf = (writes & WRITES_SBUF) > 0
    return ((writes & WRITES) > 0) & ~read_after & (sbuf | overwritten)


def check_small_dma(ctx: Context) -> None:
    """DMA queues where many transfers are too small to pay for their set-up: the set-up
    (the machine's fixed + per-byte cycles) takes longer than moving the bytes."""
    from tracekit.replay.machine import engine_kind

    w = ctx.work()
    moving = np.flatnonzero(w.has_bytes & (w.bytes > 0))  # in the table's order
    rows = w.graph_rows()[moving]
    codes, engines, _ = ctx.queues()
    opcode_codes, opcodes = ctx.opcodes()
    engine, opcode = codes[rows], opcode_codes[rows]
    m = ctx.machine
    # Per (engine, opcode) pair of a DMA queue: fixed and per-byte set-up cycles, and cycles
    # per byte moved.
    pair = engine * len(opcodes) + opcode
    cost = np.full((3, len(engines) * len(opcodes)), np.nan)
    for p in np.flatnonzero(np.bincount(pair, minlength=cost.shape[1])):
        e, o = divmod(int(p), len(opcodes))
        if engine_kind(engines[e]) == "dma":
            lat = m.latency(engines[e], opcodes[o])
            cost[:, p] = (lat.fixed_cycles, lat.per_byte,
                          1.0 / min(m.queue_bandwidth(engines[e]), m.hbm_bytes_per_cycle))
    queued = ~np.isnan(cost[0, pair])
    if not queued.any():
        return
    pair, nbytes = pair[queued], w.bytes[moving][queued]
    fixed, per_byte, per_moved = (c[pair] for c in cost)
    dma = pl.DataFrame({"queue": engine[queued], "bytes": nbytes, "fixed": fixed,
                        "per_byte": per_byte, "per_moved": per_moved,
                        "setup": fixed + per_byte * nbytes, "moving": per_moved * nbytes})
    per_queue = (dma.group_by("queue")
                 .agg(pl.len().alias("transfers"),
                      (pl.col("setup") > pl.col("moving")).sum().alias("small"),
                      pl.col("bytes").filter(pl.col("setup") > pl.col("moving")).sum()
                      .alias("small_bytes"),
                      pl.col("setup").filter(pl.col("setup") > pl.col("moving")).sum()
                      .alias("setup_cycles"),
                      (pl.col("fixed") / (pl.col("per_moved") - pl.col("per_byte"))).max()
                      .alias("break_even"), (pl.col("per_moved") > pl.col("per_byte")).all()
                      .alias("helps"))
                 # When the per-byte set-up costs as much as moving a byte, no size pays off
                 # and larger transfers would not help: nothing to report.
                 .filter((pl.col("small") >= SMALL_DMA_SHARE * pl.col("transfers"))
                         & pl.col("helps")))
    per_queue = per_queue.with_columns(
        pl.Series("engine", engines, pl.String).gather(per_queue["queue"])).sort("engine")
    per_queue = per_queue.with_columns(shortened_column(per_queue["engine"]))
    _capped(ctx, Code.SMALL_DMA, per_queue, lambda r: (
        f"{r['engine']}: {r['small']:,} of {r['transfers']:,} transfers move under "
        f"{r['break_even']:,.0f} bytes, so their set-up ({r['setup_cycles']:,.0f} cycles in "
        f"all) takes longer than moving their {r['small_bytes']:,} bytes",
        {"engines": (r["engine"],)}))


def check_ping_pong(ctx: Context) -> None:
    """Engines that wait on semaphores over and over with little work in between: each wait
    costs at least the semaphore latency, so the engine spends its time synchronising."""
    per_tick = ctx.cycles_per_tick()
    if not (ctx.timed and ctx.trace.has_table("semaphores")) or per_tick is None:
        return  # without a clock the work cannot be set against the latency in cycles

    assert ctx.semaphores is not None
    g = ctx.graph
    engine, engines, order = ctx.queues()
    start, end, has_start, has_end = ctx.times()
    # Each engine's timed instructions in queue order; a stretch runs from one waiting
    # instruction to the next, and its busy cycles are the work between those two waits.
    order, bounds = _stretches(order, engine, ctx.semaphores.waiting, has_start & has_end)
    if order.size == 0:
        return  # no timed instruction after a wait
    work = np.add.reduceat((end[order] - start[order]) * per_tick, bounds)  # cycles
    owner = engine[order[bounds]]  # grouped by engine, as the queue order is
    limit = PING_PONG_FACTOR * ctx.machine.semaphore_latency
    rows = []
    cuts = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1, owner.size]
    for lo, hi in pairwise(cuts):
        median = float(np.median(work[lo:hi]))
        if hi - lo >= PING_PONG_WAITS and median < limit:
            rows.append({"engine": engines[owner[lo]], "code": int(owner[lo]),
                         "waits": int(hi - lo), "median": median,
                         "examples": g.ids[order[bounds[lo:hi][:EXAMPLES]]].tolist()})
    per_engine = pl.DataFrame(rows, schema={"engine": pl.String, "code": pl.Int64,
                                            "waits": pl.Int64, "median": pl.Float64,
                                            "examples": pl.List(pl.Int64)}).sort("engine")
    if per_engine.height == 0:
        return
    # Whose signals the reported engines wait on: their semaphore edges, counted per pair of
    # engines that occurs (never engines x engines), most first (then by name), three at most.
    on_sem = g.kind == SEMAPHORE
    waiter = engine[g.destinations()[on_sem]].astype(np.int64)
    signaller = engine[g.src[on_sem]].astype(np.int64)
    n_eng = len(engines)
    pair, count = np.unique(waiter * n_eng + signaller, return_counts=True)
    partners = []
    for e in per_engine["code"].to_list():
        lo, hi = np.searchsorted(pair, [e * n_eng, (e + 1) * n_eng])
        others = [(int(p % n_eng), int(c)) for p, c in zip(pair[lo:hi], count[lo:hi],
                                                             strict=True) if p % n_eng != e]
        ranked = sorted(others, key=lambda kc: (-kc[1], engines[kc[0]]))[:3]
        partners.append([shortened(engines[k]) for k, _ in ranked] or None)
    per_engine = per_engine.with_columns(pl.Series("partner", partners,
                                                   dtype=pl.List(pl.String)),
                                         shortened_column(per_engine["engine"]))
    _capped(ctx, Code.SEMAPHORE_PING_PONG, per_engine, lambda r: (
        f"{r['engine']} waits on semaphores {r['waits']:,} times with a median of "
        f"{r['median']:,.0f} busy cycles between waits (semaphore latency "
        f"{ctx.machine.semaphore_latency:g} cycles); it waits mostly on "
        f"{', '.join(r['partner'] or ['itself'])}",
        {"instructions": _ids(r["examples"]),
         "engines": (r["engine"], *(r["partner"] or []))}))


@numba.njit(cache=True, nogil=True)
def _stretches(order, engine, waits, timed):  # pragma: no cover - compiled
    """Of the rows in queue order (`order`), the timed ones from each engine's first waiting
    instruction on, and where each stretch starts among them: at each waiting instruction,
    the stretch holding it and the instructions after it on its engine up to the next."""
    kept = np.empty(order.size, dtype=np.int64)
    bounds = np.empty(order.size, dtype=np.int64)
    n_kept = n_bounds = 0
    current = -1  # the engine whose instructions are being walked
    waited = False  # whether that engine has had a waiting instruction yet
    for i in order:
        if not timed[i]:
            continue
        if engine[i] != current:
            current, waited = engine[i], False
        if waits[i]:
            waited = True
            bounds[n_bounds] = n_kept
            n_bounds += 1
        if waited:
            kept[n_kept] = i
            n_kept += 1
    return kept[:n_kept].copy(), bounds[:n_bounds].copy()


def check_races(ctx: Context) -> None:
    """Conflicting accesses (each to its nearest conflict in program order) that no
    happens-before path orders (`tracekit.analysis.happens_before`: engine order, deps, and
    semaphores counted in every legal order); instructions the model replay never ran (behind
    a deadlock) take no part. The memory table is swept in chunks (`memory_sweep`), each batch
    of conflicts checked against happens-before as it comes."""
    if not ctx.trace.has_table("memory"):
        return
    from tracekit.replay.graph import RAW, WAR, WAW

    g = ctx.graph
    # What the dead-write check needs of the same sweep: whose writes someone reads, and
    # whose are overwritten with no read in between.
    read_after = np.zeros(g.nodes, dtype=bool)
    overwritten = np.zeros(g.nodes, dtype=bool)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ordering: list = []  # happens-before and what can run, made at the first conflicts

    def consume(src: np.ndarray, dst: np.ndarray, kind: np.ndarray) -> None:
        read_after[src[kind == RAW]] = True
        overwritten[src[kind == WAW]] = True
        if not ordering:
            ordering.extend((ctx.happens_before(), ~ctx.never_run()))
        hb, runnable = ordering
        racy = np.flatnonzero(~hb.ordered(src, dst))
        racy = racy[runnable[src[racy]] & runnable[dst[racy]]]
        if racy.size:
            found.append((src[racy].astype(np.int64), dst[racy].astype(np.int64),
                          kind[racy].astype(np.int64)))

    ctx.reloads = sweep_memory(ctx.trace, ctx.memory(), g.ids, ctx.observed_start(), consume,
                               ctx.chunk_rows)
    ctx.read_after, ctx.overwritten = read_after, overwritten
    if not found:
        return
    hb, runnable = ordering
    src, dst, kind = (np.concatenate(c) for c in zip(*found, strict=True))
    # In program order of the source, then of the destination (the held-back runs below
    # settle the first pairs in that order, within their budget).
    rank = ctx.program_rank()
    order = np.lexsort((rank[dst], rank[src]))
    src, dst, kind = src[order], dst[order], kind[order]
    if hb.exact and not _single_signaller(g.sems, hb.engine):
        unsettled = ~_confirmed_ordered(g, src, dst, runnable)
        src, dst, kind = src[unsettled], dst[unsettled], kind[unsettled]
    if src.size == 0:
        return
    engine, engines, _ = ctx.queues()
    names = shown_names(engines)
    frame = pl.DataFrame({"a": g.ids[src], "b": g.ids[dst], "kind": kind,
                          "ea": names[engine[src]], "eb": names[engine[dst]]}).sort("b", "a")
    caveat = "" if hb.exact and hb.converged else (
        " (a semaphore with sub, set or == waits takes part, which tracekit orders "
        "conservatively: check whether it orders the two)")
    words = {RAW: ("reads", "wrote", Code.RACE_RAW), WAR: ("writes", "reads", Code.RACE_WAR)}
    for code_kind in (RAW, WAR, WAW):
        rows = frame.filter(pl.col("kind") == code_kind)
        verb_b, verb_a, code = words.get(code_kind, ("writes", "wrote", Code.RACE_WAW))
        _capped(ctx, code, rows, lambda r, vb=verb_b, va=verb_a: (
            f"instruction {r['b']} on {r['eb']} {vb} memory that instruction {r['a']} on "
            f"{r['ea']} {va}, and nothing orders the two{caveat}",
            {"instructions": (r["a"], r["b"]), "engines": (r["ea"], r["eb"])}))


def _single_signaller(sems: SemTable, engine: np.ndarray) -> bool:
    """Whether every semaphore is signalled from one engine at most (then the counting rule
    is exact without held-back runs)."""
    changes = sems.op != WAIT
    if not changes.any():
        return True
    sem, eng = sems.sem[changes], engine[sems.node[changes]]
    lowest = np.full(sems.semaphores, np.iinfo(np.int64).max)
    highest = np.full(sems.semaphores, -1)
    np.minimum.at(lowest, sem, eng)
    np.maximum.at(highest, sem, eng)
    return bool(np.all((highest < 0) | (lowest == highest)))


def _confirmed_ordered(g: Graph, a: np.ndarray, b: np.ndarray,
                       runnable: np.ndarray) -> np.ndarray:
    """For pairs the counting rule leaves unordered on a trace whose semaphores only count up:
    whether an exact run with one of the two held back shows that the other always follows it
    (`exact_order`). At most CONFIRM_BUDGET instructions are held back; pairs past that stay
    unordered (reported)."""
    ordered = np.zeros(a.size, dtype=bool)
    cache: dict[int, np.ndarray] = {}
    for k in range(a.size):
        for first, second in ((int(a[k]), int(b[k])), (int(b[k]), int(a[k]))):
            if first not in cache:
                if len(cache) >= CONFIRM_BUDGET:
                    continue
                cache[first] = exact_order(g.fixed, first, runnable)
            if not cache[first][second]:
                ordered[k] = True
                break
    return ordered


CHECKS: tuple[Callable[[Context], None], ...] = (
    check_deadlocks, check_semaphores, check_order_dependent, check_timing, check_bounds,
    check_latency, check_races, check_bandwidth, check_reloads, check_dead_writes,
    check_small_dma, check_ping_pong)

COVERAGE: dict[tuple[str, str], tuple[Callable[[Context], None], ...]] = {
    ("memory", "dma-only"): (check_dead_writes,),
}
"""Checks left out when the manifest's extra.coverage says the trace does not record what they
need: a write looks dead when the reads of compute instructions are not recorded (a device
profile import records only its DMA transfers' ranges). With semaphore_waits "partial" (waits
only where a profile's operand text shows them), `check_semaphores` leaves out its leaks."""


def partial(trace: Trace, what: str, level: str) -> bool:
    """Whether the manifest's extra.coverage says `what` is recorded only at `level`."""
    coverage = trace.manifest.extra.get("coverage")
    return isinstance(coverage, dict) and coverage.get(what) == level


def skipped_checks(trace: Trace) -> frozenset[Callable[[Context], None]]:
    """The checks COVERAGE leaves out for this trace."""
    return frozenset(check for (what, level), checks in COVERAGE.items()
                     if partial(trace, what, level) for check in checks)


RUN_ORDER: tuple[Callable[[Context], None], ...] = (
    check_deadlocks, check_semaphores, check_timing, check_ping_pong, check_bounds,
    check_latency, check_bandwidth, check_small_dma, check_order_dependent, check_races,
    check_reloads, check_dead_writes)
"""CHECKS in the order they run. First the readers of the timeline's semaphore edges and
history (TIMELINE_READERS), which are then let go; then happens-before starts on a second
thread, and the checks that do not need it run meanwhile, those that do as late as they can.
Findings are reported in CHECKS order all the same."""

TIMELINE_READERS = frozenset({check_semaphores, check_timing, check_ping_pong})
"""The checks that read the timeline's semaphore edges (`Context.graph`) or the semaphores'
history (`ModelRun.released`); `find_bugs` lets those go once they have run."""

WORK_READERS = frozenset({check_latency, check_bandwidth, check_small_dma})
"""The checks that read `Context.work`; it goes once they have run."""


@dataclass(frozen=True)
class ModelRun:
    """What the checks need of the model replay: the graph rows that finished, in the order
    they did; the semaphores' history; the stuck engines' first instructions (ReplayStuck's
    frame), None when the replay finished; and the replay's graph (with its semaphore edges)
    when it finished."""

    done: np.ndarray
    released: Released | None
    stuck: pl.DataFrame | None
    graph: Graph | None


def model_run(trace: Trace, machine: Machine, graph: Graph,
              replayed: ReplayResult | None = None,
              stuck: ReplayStuck | None = None) -> ModelRun:
    """The trace replayed on the machine's model, stuck or not (or what the caller has of it:
    `replayed`, a model-mode replay, or `stuck`, the error of one that got stuck)."""
    from tracekit.replay.run import Mode, replay

    if stuck is not None and stuck.done is not None:
        return ModelRun(stuck.done, stuck.released, stuck.stuck, None)
    if replayed is None or replayed.mode is not Mode.MODEL or replayed.done is None:
        try:
            replayed = replay(trace, machine, Mode.MODEL, graph=graph)
        except ReplayStuck as exc:
            assert exc.done is not None
            return ModelRun(exc.done, exc.released, exc.stuck, None)
    assert replayed.done is not None
    return ModelRun(replayed.done, replayed.released, None, replayed.graph)


def observed_run(seen: Observed, inst: pl.DataFrame) -> ModelRun:
    """A run to check a trace timed throughout against: the run it records. Every instruction
    ran, in the order of its observed start (an order every happens-before relation agrees
    with where the timestamps respect it; where they do not, the timing checks say so and the
    happens-before passes repeat); the semaphores count in observed order, and a wait whose
    condition never holds in that order is the deadlock of this run."""
    start, end = inst["start"].to_numpy(), inst["end"].to_numpy()
    rows = np.arange(inst.height)
    sems = seen.graph.sems
    never = seen.never
    stuck = None
    if never.size:
        released = seen.released
        s = sems.sem[never]
        last = released.arrived[s] - 1  # the count after its last change, 0 without one
        padded = np.r_[released.log_count, 0]
        count = padded[np.where(last >= 0, sems.log_ptr[s] + last, padded.size - 1)]
        node = sems.node[never]
        only_up = np.ones(sems.semaphores, dtype=bool)
        only_up[sems.sem[(sems.op == SUB) | (sems.op == SET)]] = False
        stuck = pl.DataFrame({
            "id": inst["id"].to_numpy()[node],
            "engine": shortened_column(inst["engine"].gather(node)),
            "opcode": shortened_column(inst["opcode"].gather(node)),
            "sem": sems.numbers[s], "cond": np.where(sems.cond[never] == EQ, "eq", "ge"),
            "value": sems.value[never], "count": count,
            "behind": [[] for _ in range(never.size)], "monotone": only_up[s]},
            schema_overrides={"behind": pl.List(pl.String)})
    return ModelRun(np.lexsort((rows, end, start)), seen.released, stuck, seen.graph)


def find_bugs(trace: Trace, machine: Machine, graph: Graph | None = None,
              replayed: ReplayResult | None = None,
              stuck: ReplayStuck | None = None, *,
              chunk_rows: int = CHUNK_ROWS) -> list[Finding]:
    """Every signature's findings, most severe first, then in the order of CHECKS. `graph`:
    the trace's dependency graph when the caller has derived it already (a timeline's);
    `replayed`: the trace's model-mode replay on `machine`, when the caller has run it, or
    `stuck`, the error of that replay when it got stuck. `chunk_rows`: memory accesses swept
    at a time (`memory_sweep`; the findings do not depend on it)."""
    from tracekit.replay.run import observed

    # The instructions are read once for several checks, each column made contiguous (one
    # at a time: a whole-frame copy doubles the memory) so that it passes to NumPy without a
    # copy each time.
    inst = trace.read_instructions(["id", "engine", "seq", "opcode", "start", "end"])
    inst = pl.DataFrame([inst.to_series(k).rechunk() for k in range(inst.width)])
    timed = inst.height > inst["start"].null_count()
    # The semaphores table is read once, for the graph and for what the semaphore checks
    # need of it (`SemaphoreTotals`), and let go.
    table = trace.read("semaphores") if trace.has_table("semaphores") else None
    fixed = derive(trace, inst, semaphores=table) if graph is None else graph.fixed
    totals = None if table is None else semaphore_totals(table, fixed.sems, fixed.ids)
    del table
    # The timeline the checks of timing and synchronisation read: the observed one when the
    # trace is timed throughout, else the model's.
    if inst.height and inst["start"].null_count() == 0 and inst["end"].null_count() == 0:
        seen = observed(fixed, inst)
        timeline_graph = seen.graph
        run = (observed_run(seen, inst) if replayed is None and stuck is None
               else model_run(trace, machine, fixed, replayed, stuck))
    else:
        run = model_run(trace, machine, fixed, replayed, stuck)
        timeline_graph = run.graph if run.graph is not None else fixed
    skipped = skipped_checks(trace)
    ctx = Context(trace=trace, machine=machine, graph=timeline_graph, instructions=inst,
                  timed=timed, run=run, semaphores=totals, chunk_rows=chunk_rows)
    found: dict[Callable[[Context], None], list[Finding]] = {}
    timeline = max(RUN_ORDER.index(check) for check in TIMELINE_READERS)
    work = max(RUN_ORDER.index(check) for check in WORK_READERS)
    with progress.step("checking bug signatures", total=len(RUN_ORDER)) as step:
        for place, check in enumerate(RUN_ORDER):
            ctx.findings = found[check] = []
            if check not in skipped:
                check(ctx)
            if place == timeline:
                ctx.let_go_of_timeline()
                ctx.start_happens_before()
            if place == work:
                ctx.let_go_of_work()
            step.advance()
    return sorted((f for check in CHECKS for f in found[check]), key=lambda f: -f.severity.rank)


def findings_frame(findings: list[Finding]) -> pl.DataFrame:
    """Findings as a frame: code, severity, message, hint, instructions (list of ids),
    engines, cycles (list of times, in the trace's time unit), addresses (list of
    "space:addr+size@pNxK")."""
    return pl.DataFrame(
        [{"code": f.code.value, "severity": f.severity.value, "message": f.message,
          "hint": f.hint, "instructions": list(f.instructions), "engines": list(f.engines),
          "cycles": list(f.cycles), "addresses": list(f.addresses)} for f in findings],
        schema={"code": pl.String, "severity": pl.String, "message": pl.String,
                "hint": pl.String, "instructions": pl.List(pl.Int64),
                "engines": pl.List(pl.String), "cycles": pl.List(pl.Int64),
                "addresses": pl.List(pl.String)})

