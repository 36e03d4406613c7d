"""Architectural bug signatures: patterns in a trace that a hardware or compiler bug leaves.

Each signature has a stable code, a severity and a hint; `find_bugs` runs them all and returns
one finding per occurrence with its evidence. For a wait on semaphore 3 for value 9 whose
signals only ever add up to 4, the finding reads

    error  deadlock-wait  instruction 120 on tensor waits for semaphore 3 to reach 9; its
                          signals add up to 4   (instructions [120], engines [tensor])

Every check is vectorized over the trace's tables (or compiled); codes are documented with
examples in analysis/signatures.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numba
import numpy as np
import polars as pl

from tracekit.replay.graph import KINDS, ORDER, SEMAPHORE, Graph, derive, kahn_order
from tracekit.replay.machine import Machine
from tracekit.trace.bundle import Trace

MAX_SEMAPHORE_COUNT = 65535
"""Counts past this overflow a 16-bit hardware semaphore."""

EXAMPLES = 5
"""Occurrences of one code reported individually; the rest are counted in the last one."""

OUTLIER_FACTOR = 5
STUCK_FACTOR = 20
SLOW_FACTOR = 1.5
"""Latency signatures: an instruction over OUTLIER_FACTOR (STUCK_FACTOR) times the median of its
peers; an engine whose median over SLOW_FACTOR times its peers' for the same work."""


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


@dataclass(frozen=True)
class Finding:
    """One occurrence: what, where (instruction ids, engines, cycles, addresses) and a hint."""

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
    """What the checks read: the trace's tables once, its graph and the machine."""

    trace: Trace
    machine: Machine
    graph: Graph
    instructions: pl.DataFrame
    timed: bool
    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)

    def read(self, table: str) -> pl.DataFrame:
        """A whole table, read once however many checks use it."""
        if table not in self.tables:
            self.tables[table] = self.trace.read(table)
        return self.tables[table]

    def add(self, code: Code, message: str, **evidence: tuple) -> None:
        info = SIGNATURES[code]
        self.findings.append(Finding(code, info.severity, message, info.hint, **evidence))


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
        Severity.WARNING, f"A semaphore whose count passes {MAX_SEMAPHORE_COUNT}.",
        "Counts that only grow overflow the hardware counter: reset or reuse semaphores."),
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
        Severity.ERROR, f"An instruction taking over {STUCK_FACTOR}x the median of its peers: "
                        f"its engine was stuck on it.",
        "A hang resolved by a timeout, a lost completion, or a livelock in the engine."),
    Code.SLOW_ENGINE: Signature(
        Severity.WARNING, f"An engine or queue whose instructions take over {SLOW_FACTOR}x as "
                          f"long as the same work on its peers.",
        "A mis-configured or throttled DMA queue, or an engine running at a lower clock."),
}

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
    waits = ctx.graph.unsatisfied
    if waits.height:
        engine_of = ctx.instructions.select(pl.col("id").alias("inst"),
                                            pl.col("engine").cast(pl.String))
        rows = waits.join(engine_of, on="inst", how="left").sort("inst", "sem")
        _capped(ctx, Code.DEADLOCK_WAIT, rows, lambda r: (
            f"instruction {r['inst']} on {r['engine']} waits for semaphore {r['sem']} to "
            f"reach {r['value']}; its signals add up to {r['signalled']}",
            {"instructions": (r["inst"],), "engines": (r["engine"],)}))
    members = cycle_members(ctx.graph)
    if members.size:
        ids = ctx.graph.ids[members]
        engines = ctx.instructions.filter(pl.col("id").is_in(pl.Series(ids).implode()))[
            "engine"].cast(pl.String).unique().sort().to_list()
        ctx.add(Code.DEADLOCK_CYCLE, f"{ids.size:,} instructions on {len(engines)} engine(s) "
                f"wait on each other in a cycle", instructions=_ids(ids[:20]),
                engines=tuple(engines))


def cycle_members(graph: Graph) -> np.ndarray:
    """Rows on dependency cycles: what Kahn's algorithm cannot order, less what only hangs
    below a cycle (trimmed backwards)."""
    dst = np.repeat(np.arange(graph.nodes), np.diff(graph.ptr))
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
    if not ctx.trace.has_table("semaphores"):
        return
    sems = ctx.read("semaphores")
    per_sem = (sems.group_by("sem")
               .agg((pl.col("op") == "wait").sum().alias("waits"),
                    pl.col("value").filter(pl.col("op") == "signal").sum().alias("signalled"),
                    pl.col("inst").filter(pl.col("op") == "signal").sort().alias("signallers"))
               .sort("sem"))
    leaks = per_sem.filter((pl.col("waits") == 0) & (pl.col("signalled") > 0))
    _capped(ctx, Code.SEMAPHORE_LEAK, leaks, lambda r: (
        f"semaphore {r['sem']} is signalled {len(r['signallers'])} time(s) (adding "
        f"{r['signalled']}) and never waited on",
        {"instructions": _ids(r["signallers"][:EXAMPLES])}))
    over = per_sem.filter(pl.col("signalled") > MAX_SEMAPHORE_COUNT)
    _capped(ctx, Code.SEMAPHORE_OVERFLOW, over, lambda r: (
        f"semaphore {r['sem']} reaches a count of {r['signalled']:,}",
        {"instructions": _ids(r["signallers"][-1:])}))


def check_timing(ctx: Context) -> None:
    if not ctx.timed:
        return
    inst = ctx.instructions
    negative = inst.filter(pl.col("end") < pl.col("start"))
    _capped(ctx, Code.NEGATIVE_DURATION, negative, lambda r: (
        f"instruction {r['id']} on {r['engine']} ends at {r['end']:,}, before its start "
        f"{r['start']:,}", {"instructions": (r["id"],), "engines": (str(r["engine"]),),
                            "cycles": (r["start"], r["end"])}))
    g = ctx.graph
    # A partly timed trace (a run that deadlocked) is checked where both ends are timed.
    start = inst["start"].fill_null(np.iinfo(np.int64).max).to_numpy()
    end = inst["end"].fill_null(np.iinfo(np.int64).min).to_numpy()
    dst = np.repeat(np.arange(g.nodes), np.diff(g.ptr))
    early = np.flatnonzero(start[dst] < end[g.src])
    if early.size == 0:
        return
    engine = inst["engine"].cast(pl.String)
    # One finding per pair: a dependency edge (semaphore, data) says more than engine order,
    # and the graph lists a pair's edges by kind, order first, so the last one is kept.
    frame = pl.DataFrame({
        "src": g.ids[g.src[early]], "dst": g.ids[dst[early]],
        "kind": pl.Series([k.value for k in KINDS])[g.kind[early].astype(np.int64)],
        "src_end": end[g.src[early]], "dst_start": start[dst[early]],
        "src_engine": engine.gather(g.src[early]), "dst_engine": engine.gather(dst[early]),
    }).unique(["src", "dst"], keep="last", maintain_order=True).sort("dst", "src")
    for code, rows in ((Code.ENGINE_OVERLAP, frame.filter(pl.col("kind") == KINDS[ORDER].value)),
                       (Code.START_BEFORE_DEPENDENCY,
                        frame.filter(pl.col("kind") != KINDS[ORDER].value))):
        _capped(ctx, code, rows, lambda r: (
            f"instruction {r['dst']} on {r['dst_engine']} starts at {r['dst_start']:,}, "
            f"{r['src_end'] - r['dst_start']:,} cycles before instruction {r['src']} on "
            f"{r['src_engine']} ({r['kind']} edge) ends at {r['src_end']:,}",
            {"instructions": (r["src"], r["dst"]), "engines": (r["src_engine"], r["dst_engine"]),
             "cycles": (r["src_end"], r["dst_start"])}))


def check_bounds(ctx: Context) -> None:
    if not ctx.trace.has_table("memory"):
        return
    m = ctx.machine
    mem = ctx.read("memory").with_columns(pl.col("space").cast(pl.String))
    capacity = pl.when(pl.col("space") == "sbuf").then(m.sbuf_partition_bytes).otherwise(
        m.psum_partition_bytes)
    bad = mem.filter(pl.col("space").is_in(["sbuf", "psum"]) & (
        (pl.col("addr") + pl.col("size") > capacity)
        | (pl.col("partition") + pl.col("partitions") > m.partitions))).sort("inst", "addr")
    _capped(ctx, Code.OUT_OF_BOUNDS, bad, lambda r: (
        f"instruction {r['inst']} {r['access']}s {r['space'].upper()} bytes "
        f"{r['addr']:,}..{r['addr'] + r['size']:,} of partitions "
        f"{r['partition']}..{r['partition'] + r['partitions'] - 1}, past "
        f"{m.sbuf_partition_bytes if r['space'] == 'sbuf' else m.psum_partition_bytes:,} "
        f"bytes x {m.partitions} partitions",
        {"instructions": (r["inst"],),
         "addresses": (f"{r['space']}:{r['addr']}+{r['size']}@p{r['partition']}"
                       f"x{r['partitions']}",)}))


def check_latency(ctx: Context) -> None:
    """Robust statistics per peer group (engine kind, opcode, elements, bytes, flops)."""
    if not ctx.timed:
        return
    from tracekit.replay.machine import engine_kind

    t = ctx.trace.read("instructions", ["id", "engine", "opcode", "start", "end", "elements",
                                        "bytes", "flops"]).drop_nulls(["start", "end"])
    kinds = {e: engine_kind(e) for e in t["engine"].cast(pl.String).unique().to_list()}
    t = t.with_columns(pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
                       (pl.col("end") - pl.col("start")).alias("duration"),
                       pl.col("engine").cast(pl.String).replace_strict(kinds).alias("kind"))
    peers = ["kind", "opcode", "elements", "bytes", "flops"]
    t = t.with_columns(pl.col("duration").median().over(peers).alias("median"),
                       pl.len().over(peers).alias("peers"))
    t = t.with_columns((pl.col("duration") - pl.col("median")).abs().median().over(peers)
                       .alias("mad"))
    outside = (pl.col("peers") >= 8) & (pl.col("duration") > pl.col("median")
                                        + 10 * 1.4826 * pl.col("mad") + 1)
    # Too few peers for statistics: the machine's latency model is the reference instead.
    m = ctx.machine
    pairs = t.select("engine", "opcode").unique().sort("engine", "opcode")
    model = pl.DataFrame(
        [{"engine": e, "opcode": o, **{k: getattr(m.latency(e, o), k) for k in
                                       ("fixed_cycles", "per_element", "per_byte", "per_flop")},
          "per_moved": 1.0 / m.queue_bandwidth(e) if kinds[e] == "dma" else 0.0}
         for e, o in pairs.iter_rows()],
        schema={"engine": pl.String, "opcode": pl.String, "fixed_cycles": pl.Float64,
                "per_element": pl.Float64, "per_byte": pl.Float64, "per_flop": pl.Float64,
                "per_moved": pl.Float64})
    t = t.join(model, on=["engine", "opcode"], how="left", maintain_order="left").with_columns(
        (pl.col("fixed_cycles") + pl.col("per_element") * pl.col("elements").fill_null(0)
         + (pl.col("per_byte") + pl.col("per_moved")) * pl.col("bytes").fill_null(0)
         + pl.col("per_flop") * pl.col("flops").fill_null(0)).alias("modelled"))
    reference = pl.when(pl.col("peers") >= 8).then(pl.col("median")).otherwise(
        pl.col("modelled"))
    stuck = t.filter((outside | (pl.col("peers") < 8))
                     & (pl.col("duration") > STUCK_FACTOR * reference)
                     & (pl.col("duration") - reference > 1000))
    t = t.with_columns(reference.alias("median"))
    slow = t.filter(outside & (pl.col("duration") > OUTLIER_FACTOR * pl.col("median"))
                    & ~pl.col("id").is_in(stuck["id"].implode()))
    for code, rows in ((Code.ENGINE_STUCK, stuck), (Code.LATENCY_OUTLIER, slow)):
        _capped(ctx, code, rows.sort(pl.col("duration") / pl.col("median"), "id",
                                     descending=[True, False]), lambda r: (
            f"instruction {r['id']} ({r['opcode']}) on {r['engine']} took {r['duration']:,} "
            f"cycles, {r['duration'] / max(r['median'], 1):,.0f}x the median of its "
            f"{r['peers']} peers", {"instructions": (r["id"],), "engines": (r["engine"],),
                                    "cycles": (r["duration"], int(r["median"]))}))
    # A whole engine slower than its peers: how much longer than the model its instructions
    # take (a per-work measure that needs no identical peers), against the other engines of
    # its kind.
    by_engine = (t.filter(pl.col("modelled") > 0)
                 .group_by("engine").agg((pl.col("duration") / pl.col("modelled")).median()
                                         .alias("own"), pl.len().alias("n"),
                                         pl.col("kind").first())
                 .filter(pl.col("n") >= 2)
                 .with_columns(pl.col("own").median().over("kind").alias("typical"),
                               pl.len().over("kind").alias("engines"))
                 .with_columns((pl.col("own") / pl.col("typical")).alias("ratio"))
                 .filter((pl.col("engines") >= 2) & (pl.col("ratio") > SLOW_FACTOR))
                 .sort("engine"))
    _capped(ctx, Code.SLOW_ENGINE, by_engine, lambda r: (
        f"{r['engine']} takes {r['ratio']:.1f}x as long as other {r['kind']} engines for the "
        f"same work ({r['n']:,} instructions)", {"engines": (r["engine"],)}))


def check_races(ctx: Context) -> None:
    """Conflicting accesses (each to its nearest conflict in program order) that no
    happens-before path orders, by vector clocks over the engines."""
    if not ctx.trace.has_table("memory"):
        return
    from tracekit.replay.graph import RAW, WAR, memory_edges
    from tracekit.replay.run import name_codes

    g, inst = ctx.graph, ctx.instructions
    start = (inst["start"].to_numpy() if inst["start"].null_count() == 0 else None)
    src, dst, kind = memory_edges(ctx.read("memory"), g.ids, start,
                                  f"{ctx.trace.path}: memory.inst", with_kind=True)
    if src.size == 0:
        return
    engine, engines = name_codes(inst["engine"])
    position = np.empty(g.nodes, dtype=np.int64)  # 1-based place in the engine's queue
    order = np.lexsort((inst["seq"].to_numpy(), engine))
    starts = np.r_[0, np.cumsum(np.bincount(engine, minlength=len(engines)))]
    position[order] = np.arange(g.nodes) - starts[engine[order]] + 1
    hb_src, hb_dst, n_total = _happens_before_edges(ctx, g)
    from tracekit.replay.graph import csr

    ptr, pred, _ = csr(n_total, hb_src, hb_dst, np.zeros(hb_src.size, dtype=np.int8))
    # Virtual nodes (semaphore counts) get an extra engine column that no access reads.
    engine_all = np.r_[engine, np.full(n_total - g.nodes, len(engines))]
    position_all = np.r_[position, np.zeros(n_total - g.nodes, dtype=np.int64)]
    clocks = _vector_clocks(kahn_order(n_total, hb_src, hb_dst), len(engines) + 1, ptr, pred,
                            engine_all, position_all)
    ordered = (clocks[dst, engine[src]] >= position[src]) | (
        clocks[src, engine[dst]] >= position[dst])
    racy = np.flatnonzero(~ordered)
    if racy.size == 0:
        return
    names = np.array(engines)
    frame = pl.DataFrame({"a": g.ids[src[racy]], "b": g.ids[dst[racy]], "kind": kind[racy],
                          "ea": names[engine[src[racy]]], "eb": names[engine[dst[racy]]]}
                         ).sort("b", "a")
    words = {RAW: ("reads", "wrote", Code.RACE_RAW), WAR: ("writes", "reads", Code.RACE_WAR)}
    for code_kind in (0, 1, 2):
        rows = frame.filter(pl.col("kind") == code_kind)
        verb_b, verb_a, code = words.get(code_kind, ("writes", "wrote", Code.RACE_WAW))
        _capped(ctx, code, rows, lambda r, vb=verb_b, va=verb_a: (
            f"instruction {r['b']} on {r['eb']} {vb} memory that instruction {r['a']} on "
            f"{r['ea']} {va}, and nothing orders the two",
            {"instructions": (r["a"], r["b"]), "engines": (r["ea"], r["eb"])}))


def _happens_before_edges(ctx: Context, g: Graph) -> tuple[np.ndarray, np.ndarray, int]:
    """The graph's edges for happens-before, with every semaphore edge replaced by the full
    count: a wait for v follows *all* signals counted up to the v-th, not only the last one.
    Each semaphore gets a chain of virtual nodes, one per signal in count order (node k joins
    node k-1 and the k-th signal); a wait follows the node of the signal that satisfies it."""
    dst = np.repeat(np.arange(g.nodes), np.diff(g.ptr))
    keep = g.kind != SEMAPHORE
    srcs, dsts = [g.src[keep]], [dst[keep]]
    n_total = g.nodes
    if ctx.trace.has_table("semaphores"):
        sems = ctx.read("semaphores")
        node = np.searchsorted(g.ids, sems["inst"].to_numpy())
        sem = sems["sem"].to_numpy()
        value = sems["value"].to_numpy()
        is_signal = (sems["op"] == "signal").to_numpy()
        end = ctx.instructions["end"].to_numpy(allow_copy=True)
        timed = ctx.instructions["end"].null_count() == 0
        rank = end[node] if timed else node
        sig = np.flatnonzero(is_signal)
        sig = sig[np.lexsort((node[sig], rank[sig], sem[sig]))]
        virtual = g.nodes + np.arange(sig.size)
        same = np.r_[False, sem[sig][1:] == sem[sig][:-1]]
        srcs += [node[sig], virtual[:-1][same[1:]]]
        dsts += [virtual, virtual[1:][same[1:]]]
        cum = np.cumsum(value[sig])
        group_first = np.searchsorted(sem[sig], sem[sig], side="left")
        before = np.where(group_first > 0, cum[np.maximum(group_first - 1, 0)], 0)
        waits = np.flatnonzero(~is_signal & (value > 0))
        lo = np.searchsorted(sem[sig], sem[waits], side="left")
        hi = np.searchsorted(sem[sig], sem[waits], side="right")
        base = np.where(lo < hi, before[np.minimum(lo, max(sig.size - 1, 0))], 0)
        pos = np.searchsorted(cum, base + value[waits], side="left")
        ok = (pos >= lo) & (pos < hi)
        srcs.append(virtual[pos[ok]])
        dsts.append(node[waits[ok]])
        n_total += sig.size
    return (np.concatenate(srcs).astype(np.int64), np.concatenate(dsts).astype(np.int64),
            n_total)


@numba.njit(cache=True, nogil=True)
def _vector_clocks(order, n_eng, pred_ptr, pred_src, engine,
                   position):  # pragma: no cover - compiled
    """clock[i, e]: the last position on engine e that happens before or is instruction i,
    over the nodes in topological `order` (nodes of a cycle keep zeros)."""
    clock = np.zeros((engine.size, n_eng), dtype=np.int32)
    for node in order:
        for k in range(pred_ptr[node], pred_ptr[node + 1]):
            p = pred_src[k]
            for e in range(n_eng):
                if clock[p, e] > clock[node, e]:
                    clock[node, e] = clock[p, e]
        clock[node, engine[node]] = position[node]
    return clock


CHECKS: tuple[Callable[[Context], None], ...] = (check_deadlocks, check_semaphores,
                                                 check_timing, check_bounds, check_latency,
                                                 check_races)


def find_bugs(trace: Trace, machine: Machine) -> list[Finding]:
    """Every signature's findings, most severe first, then in the order of CHECKS."""
    inst = trace.read("instructions", ["id", "engine", "seq", "opcode", "start", "end"]).sort(
        "id")
    timed = inst.height > inst["start"].null_count()
    ctx = Context(trace=trace, machine=machine, graph=derive(trace, inst), instructions=inst,
                  timed=timed)
    for check in CHECKS:
        check(ctx)
    return sorted(ctx.findings, key=lambda f: -f.severity.rank)


def findings_frame(findings: list[Finding]) -> pl.DataFrame:
    """Findings as a frame: code, severity, message, hint, instructions (list of ids),
    engines, cycles (list of cycle stamps), addresses (list of "space:addr+size@pNxK")."""
    return pl.DataFrame(
        [{"code": f.code.value, "severity": f.severity.value, "message": f.message,
          "hint": f.hint, "instructions": list(f.instructions), "engines": list(f.engines),
          "cycles": list(f.cycles), "addresses": list(f.addresses)} for f in findings],
        schema={"code": pl.String, "severity": pl.String, "message": pl.String,
                "hint": pl.String, "instructions": pl.List(pl.Int64),
                "engines": pl.List(pl.String), "cycles": pl.List(pl.Int64),
                "addresses": pl.List(pl.String)})

