"""What a replay says: the summary of the predicted timeline, and how far it is from the
observed one. Consumes a ReplayResult; renders nothing.

For a trace whose matmuls took 100 cycles each where the model predicts 90, the opcode row
reads bias -10.0 %, MAPE 10.0 %, p50 and p95 absolute error 10 cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from tracekit.analysis.figures import accounts, engine_figures, opcode_figures
from tracekit.replay.graph import Graph
from tracekit.replay.run import ReplayResult, observed_graph
from tracekit.replay.semaphores import Released, binder_ends, observed_release

TOP_OPCODES = 10
TOP_DIVERGENT = 10


@dataclass(frozen=True)
class ReplaySummary:
    """The predicted timeline at a glance.

    `engines`: `figures.engine_figures` (busy, HBM contention, waiting, idle, FLOP
    utilization, achieved bandwidth per engine; natural engine order); `hbm`: the achieved
    HBM bandwidth. `opcodes`: `figures.opcode_figures`, the TOP_OPCODES largest.
    """

    makespan: int
    seconds: float | None
    instructions: int
    ipc: float
    engines: pl.DataFrame
    hbm: dict[str, float | int]
    opcodes: pl.DataFrame


@dataclass(frozen=True)
class Correlation:
    """Predicted against observed timing.

    `opcodes`: opcode, instructions, observed_mean and predicted_mean (cycles per
    instruction), bias_pct (summed predicted over summed observed durations, minus 1, in %;
    null when nothing was observed to take time), mape_pct (mean absolute percentage error of
    durations, over instructions observed to take time; null if none did), p50_abs_error and
    p95_abs_error (cycles). Largest observed time first.
    `divergent_duration`: the TOP_DIVERGENT instructions whose predicted duration is furthest
    from the observed one: id, engine, opcode, layer, observed_duration,
    predicted_duration, duration_error (predicted minus observed duration, cycles).
    `divergent_wait`: the TOP_DIVERGENT instructions whose predicted wait is furthest from the
    observed one: id, engine, opcode, layer, observed_wait, predicted_wait, wait_error
    (predicted minus observed wait, cycles). See `waits` for what a wait is.
    Both list only instructions with a non-zero error, largest |error| first, ties by id. Both
    errors are local: an instruction that only moved because something before it took longer
    (the drift accumulated since the start) keeps its duration and its wait and is not listed.
    """

    observed_makespan: int
    predicted_makespan: int
    makespan_error_pct: float | None
    opcodes: pl.DataFrame
    divergent_duration: pl.DataFrame
    divergent_wait: pl.DataFrame


def summarize_replay(result: ReplayResult) -> ReplaySummary:
    t = result.timeline
    makespan = result.makespan
    acc = accounts(t)
    engines, hbm = engine_figures(t, result.trace.read_instructions(["id", "flops", "bytes"]),
                                  result.machine, acc)
    clock = result.clock_hz
    return ReplaySummary(
        makespan=makespan, seconds=makespan / clock if clock else None,
        instructions=t.height, ipc=t.height / makespan if makespan else 0.0,
        engines=engines, hbm=hbm, opcodes=opcode_figures(t, acc).head(TOP_OPCODES))


def waits(graph: Graph, start: np.ndarray, end: np.ndarray,
          released: Released | None = None, node_engine: np.ndarray | None = None
          ) -> np.ndarray:
    """The wait before each instruction of a timeline: its start minus its ready time, the
    latest end among its predecessors in `graph` (its engine predecessor, its data and memory
    producers, and the signal that released its semaphore waits in that timeline), or the
    timeline's first start when it has none. Cycles, per graph row; `start`, `end`: per graph
    row. A wait is local: it holds the edge latency and whatever else delayed the start once
    the instruction could go, and a delay earlier in the run, which moves an instruction and
    its predecessors alike, leaves it unchanged. With `released` (and each row's engine code,
    `node_engine`), `graph` is the fixed graph and the semaphore predecessors are read from
    that timeline's semaphore history (`semaphores.binder_ends`), not from edges.

    For load 0-40 -> (semaphore) matmul 52-100 -> (order) matmul 100-150 the waits are 0, 12
    and 0."""
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    ready = np.full(start.size, start.min() if start.size else 0, dtype=np.int64)
    has = np.flatnonzero(np.diff(graph.ptr) > 0)
    if has.size:
        ready[has] = np.maximum(np.maximum.reduceat(end[graph.src], graph.ptr[has]),
                                ready[has])
    if released is not None and node_engine is not None and graph.sems.size:
        ready = np.maximum(ready, binder_ends(graph.sems, released, node_engine, end))
    return start - ready


def _node_engine(result: ReplayResult) -> np.ndarray:
    """Each graph row's engine code, from the replay's queues."""
    eng_ptr, eng_nodes = result.queues  # type: ignore[misc]
    out = np.empty(result.timeline.height, dtype=np.int64)
    out[eng_nodes] = np.repeat(np.arange(eng_ptr.size - 1), np.diff(eng_ptr))
    return out


def _predicted_waits(result: ReplayResult) -> np.ndarray:
    t = result.timeline
    if result.queues is None or result.released is None:
        return waits(result.graph, t["start"].to_numpy(), t["end"].to_numpy())
    return waits(result.fixed, t["start"].to_numpy(), t["end"].to_numpy(), result.released,
                 _node_engine(result))


def _observed_waits(result: ReplayResult) -> np.ndarray:
    """`waits` of the observed timeline, its semaphore predecessors those of the observed
    order (which signal released each wait there)."""
    t = result.timeline
    start, end = t["observed_start"].to_numpy(), t["observed_end"].to_numpy()
    if result.queues is None:
        seq = result.trace.read_instructions(["seq"])["seq"].to_numpy()
        frame = t.select("id", "engine", pl.Series("seq", seq),
                         pl.col("observed_start").alias("start"),
                         pl.col("observed_end").alias("end"))
        return waits(observed_graph(result.fixed, frame), start, end)
    released = observed_release(result.fixed.sems, start, end)
    return waits(result.fixed, start, end, released, _node_engine(result))


def _largest(t: pl.DataFrame, error: str, columns: list[str]) -> pl.DataFrame:
    """The TOP_DIVERGENT rows of `t` (in id order) with the largest non-zero |error|, ties by
    id: one pass over the error column, not a sort of the frame."""
    rows = _top(np.abs(t[error].to_numpy().astype(np.int64)), TOP_DIVERGENT)
    return t[rows].select("id", "engine", "opcode", "layer", *columns, error)


@numba.njit(cache=True, nogil=True)
def _top(size, k):  # pragma: no cover - compiled
    """The rows of the k largest non-zero values, largest first, ties by row."""
    best = np.zeros(k, dtype=np.int64)
    row = np.full(k, -1, dtype=np.int64)
    held = 0
    for i in range(size.size):
        v = size[i]
        if v == 0 or (held == k and v <= best[k - 1]):
            continue
        j = min(held, k - 1)
        while j > 0 and best[j - 1] < v:  # after the equal ones: ties keep row order
            best[j] = best[j - 1]
            row[j] = row[j - 1]
            j -= 1
        best[j] = v
        row[j] = i
        held = min(held + 1, k)
    return row[:held]


def correlate(result: ReplayResult) -> Correlation | None:
    """None when the trace has no observed timing to compare with."""
    if not result.observed:
        return None
    t = result.timeline
    origin = int(t["observed_start"].min())
    t = t.with_columns(
        (pl.col("observed_end") - pl.col("observed_start")).alias("observed"),
        pl.Series("wait", _predicted_waits(result)),
        pl.Series("observed_wait", _observed_waits(result)))
    t = t.with_columns((pl.col("duration") - pl.col("observed")).alias("duration_error"),
                       (pl.col("wait") - pl.col("observed_wait")).alias("wait_error"))
    observed_makespan = int(t["observed_end"].max()) - origin
    error = pl.col("duration_error").abs()
    opcodes = (t.group_by("opcode")
               .agg(pl.len().cast(pl.Int64).alias("instructions"),
                    pl.col("observed").mean().alias("observed_mean"),
                    pl.col("duration").mean().alias("predicted_mean"),
                    pl.when(pl.col("observed").sum() > 0)
                    .then((pl.col("duration").sum() / pl.col("observed").sum() - 1) * 100)
                    .alias("bias_pct"),
                    (error / pl.col("observed")).filter(pl.col("observed") > 0).mean()
                    .mul(100).alias("mape_pct"),
                    error.quantile(0.5, "nearest").alias("p50_abs_error"),
                    error.quantile(0.95, "nearest").alias("p95_abs_error"),
                    pl.col("observed").sum().alias("_weight"))
               .sort(["_weight", "opcode"], descending=[True, False]).drop("_weight"))
    predicted = result.makespan
    return Correlation(
        observed_makespan=observed_makespan, predicted_makespan=predicted,
        makespan_error_pct=((predicted - observed_makespan) / observed_makespan * 100
                            if observed_makespan else None),
        opcodes=opcodes,
        divergent_duration=_largest(
            t.rename({"observed": "observed_duration", "duration": "predicted_duration"}),
            "duration_error", ["observed_duration", "predicted_duration"]),
        divergent_wait=_largest(t.rename({"wait": "predicted_wait"}), "wait_error",
                                ["observed_wait", "predicted_wait"]))
