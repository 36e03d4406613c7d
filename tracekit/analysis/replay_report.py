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

from tracekit.analysis.figures import (
    _int64,
    accounts,
    codes,
    engine_figures,
    group_sums,
    opcode_figures,
)
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
    ready = _ready(graph.ptr, graph.src, end, int(start.min()) if start.size else 0)
    if released is not None and node_engine is not None and graph.sems.size:
        np.maximum(ready, binder_ends(graph.sems, released, node_engine, end), out=ready)
    return np.subtract(start, ready, out=ready)


@numba.njit(cache=True, nogil=True)
def _ready(ptr, src, end, first):  # pragma: no cover - compiled
    """Per row, the latest end among its predecessors (CSR `ptr`, `src`), at least `first`."""
    ready = np.empty(ptr.size - 1, dtype=np.int64)
    for row in range(ptr.size - 1):
        latest = first
        for k in range(ptr[row], ptr[row + 1]):
            if end[src[k]] > latest:
                latest = end[src[k]]
        ready[row] = latest
    return ready


def _node_engine(result: ReplayResult) -> np.ndarray:
    """Each graph row's engine code, from the replay's queues."""
    eng_ptr, eng_nodes = result.queues  # type: ignore[misc]
    out = np.empty(result.timeline.height, dtype=np.int64)
    out[eng_nodes] = np.repeat(np.arange(eng_ptr.size - 1), np.diff(eng_ptr))
    return out


def _predicted_waits(result: ReplayResult, node_engine: np.ndarray | None = None
                     ) -> np.ndarray:
    """`waits` of the replayed timeline (`node_engine`: `_node_engine(result)`, when the
    caller has it)."""
    t = result.timeline
    if result.queues is None or result.released is None:
        return waits(result.graph, t["start"].to_numpy(), t["end"].to_numpy())
    return waits(result.fixed, t["start"].to_numpy(), t["end"].to_numpy(), result.released,
                 _node_engine(result) if node_engine is None else node_engine)


def _observed_waits(result: ReplayResult, node_engine: np.ndarray | None = None
                    ) -> np.ndarray:
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
    return waits(result.fixed, start, end, released,
                 _node_engine(result) if node_engine is None else node_engine)


def _largest(t: pl.DataFrame, error: str, values: dict[str, np.ndarray]) -> pl.DataFrame:
    """The TOP_DIVERGENT rows of `t` (in id order) with the largest non-zero |error|, ties by
    id: one pass over the error column, not a sort of the frame. `values`: the columns to
    list after id, engine, opcode and layer, the error last (per row of `t`)."""
    rows = _top(np.abs(values[error]), TOP_DIVERGENT)
    return t[rows].select("id", "engine", "opcode", "layer").with_columns(
        pl.Series(name, column[rows], dtype=pl.Int64) for name, column in values.items())


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
    observed_start, observed_end = _int64(t["observed_start"]), _int64(t["observed_end"])
    duration = _int64(t["duration"])
    observed = observed_end - observed_start
    node_engine = None if result.queues is None else _node_engine(result)
    wait = _predicted_waits(result, node_engine)
    observed_wait = _observed_waits(result, node_engine)
    del node_engine
    duration_error = duration - observed
    wait_error = np.subtract(wait, observed_wait)
    origin = int(observed_start.min())
    observed_makespan = int(observed_end.max()) - origin
    del observed_start, observed_end
    predicted = result.makespan
    return Correlation(
        observed_makespan=observed_makespan, predicted_makespan=predicted,
        makespan_error_pct=((predicted - observed_makespan) / observed_makespan * 100
                            if observed_makespan else None),
        opcodes=_by_opcode(t["opcode"], observed, duration, np.abs(duration_error)),
        divergent_duration=_largest(t, "duration_error", {
            "observed_duration": observed, "predicted_duration": duration,
            "duration_error": duration_error}),
        divergent_wait=_largest(t, "wait_error", {
            "observed_wait": observed_wait, "predicted_wait": wait, "wait_error": wait_error}))


def _by_opcode(opcode: pl.Series, observed: np.ndarray, duration: np.ndarray,
               error: np.ndarray) -> pl.DataFrame:
    """Correlation.opcodes: per opcode (of the `opcode` column, per row) the instructions,
    the mean observed and predicted durations, bias, MAPE and the median and 95th percentile
    of the absolute duration `error`; largest observed time first. Sums and counts in one
    pass over the rows; the means of ratios and the percentiles on each opcode's rows, in row
    order, by polars' own mean and quantile (so that every figure is the one its group-by
    gives)."""
    code, names = codes(opcode)
    k = len(names)
    count = np.bincount(code, minlength=k).astype(np.int64)
    observed_sum, duration_sum = group_sums(code, observed, k), group_sums(code, duration, k)
    mape, p50, p95 = [], [], []
    for g, rows in enumerate(_group_rows(code, k)):
        mine, seen = error[rows], observed[rows]
        positive = seen > 0
        ratios = pl.Series(mine[positive] / seen[positive], dtype=pl.Float64)
        mean = ratios.mean() if ratios.len() else None
        mape.append(None if mean is None else mean * 100)  # type: ignore[operator]
        values = pl.Series(mine, dtype=pl.Int64)
        p50.append(values.quantile(0.5, "nearest"))
        p95.append(values.quantile(0.95, "nearest"))
    observed_f, duration_f = observed_sum.astype(np.float64), duration_sum.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = np.where(observed_sum > 0, (duration_f / observed_f - 1) * 100, np.nan)
    frame = pl.DataFrame({
        "opcode": pl.Series(names, dtype=opcode.dtype),
        "instructions": count,
        "observed_mean": observed_f / count,
        "predicted_mean": duration_f / count,
        "bias_pct": pl.Series(bias).fill_nan(None),
        "mape_pct": pl.Series(mape, dtype=pl.Float64),
        "p50_abs_error": pl.Series(p50, dtype=pl.Float64),
        "p95_abs_error": pl.Series(p95, dtype=pl.Float64),
        "_weight": observed_sum})
    return frame.sort(["_weight", "opcode"], descending=[True, False]).drop("_weight")


def _group_rows(code: np.ndarray, k: int) -> list[np.ndarray]:
    """Each code's rows, in row order: masks over the rows for a few codes, else index
    ranges of one stable ordering."""
    if k <= 16:
        return [code == g for g in range(k)]
    order = np.argsort(code.astype(np.int16 if k < 2**15 else np.int32), kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(code, minlength=k))]
    return [order[bounds[g]:bounds[g + 1]] for g in range(k)]
