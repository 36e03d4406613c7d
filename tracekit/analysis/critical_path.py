"""The critical path of a timeline and every instruction's slack.

Following binding constraints back from the instruction that ends last gives the chain that
decided the makespan. For load (0-40) -> matmul (52-100, bound by the load's signal with a
12-cycle semaphore latency) -> store (100-140, bound by engine order), the path is
load, matmul, store: 40 + 12 + 48 + 40 = 140 cycles = the makespan, of which the semaphore
latency is 12. Slack is the latest an instruction could end without moving the makespan,
minus when it ends (a backward pass over the dependency graph with the same edge latencies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from tracekit.replay.graph import Graph, csr


@dataclass(frozen=True)
class CriticalPath:
    """`steps`: the path in time order: id, engine, opcode, layer, start, end, duration
    (cycles), edge_kind (the edge into the step, null for the first), gap (cycles between the
    previous step's end and this start: edge latency).
    `by_engine`, `by_opcode`, `by_layer`: group, cycles on the path (durations), pct (of the
    makespan); gaps are listed as group "(edge latency)".
    `slack`: id, slack (cycles), critical (slack == 0).
    """

    makespan: int
    steps: pl.DataFrame
    by_engine: pl.DataFrame
    by_opcode: pl.DataFrame
    by_layer: pl.DataFrame
    slack: pl.DataFrame

    def near_critical(self, threshold: int) -> pl.DataFrame:
        """Instructions off the path whose slack is under `threshold` cycles: id, slack."""
        on_path = self.steps["id"].implode()
        return (self.slack.filter((pl.col("slack") < threshold) & ~pl.col("id").is_in(on_path))
                .select("id", "slack").sort("slack", "id"))


@numba.njit(cache=True, nogil=True)
def _walk(bind_row, last):  # pragma: no cover - compiled
    out = np.empty(bind_row.size, dtype=np.int64)
    k = 0
    node = last
    while node >= 0 and k < bind_row.size:
        out[k] = node
        k += 1
        node = bind_row[node]
    return out[:k][::-1].copy()


@numba.njit(cache=True, nogil=True)
def _latest_ends(n, succ_ptr, succ_dst, succ_kind, kind_latency, start, end,
                 makespan):  # pragma: no cover - compiled
    """Latest end of each node that keeps the makespan: min over successors of (their latest
    start - edge latency), processed in reverse topological order (Kahn's algorithm)."""
    indeg = np.zeros(n, dtype=np.int64)
    for k in range(succ_dst.size):
        indeg[succ_dst[k]] += 1
    order = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for i in range(n):
        if indeg[i] == 0:
            order[tail] = i
            tail += 1
    while head < tail:
        node = order[head]
        head += 1
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            indeg[s] -= 1
            if indeg[s] == 0:
                order[tail] = s
                tail += 1
    latest = np.full(n, makespan, dtype=np.float64)
    for idx in range(tail - 1, -1, -1):
        node = order[idx]
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            candidate = latest[s] - (end[s] - start[s]) - kind_latency[succ_kind[k]]
            if candidate < latest[node]:
                latest[node] = candidate
    return latest, tail


def critical_path(timeline: pl.DataFrame, graph: Graph,
                  kind_latency: np.ndarray) -> CriticalPath:
    """The critical path and slack of a timeline (replayed or observed) over `graph`, whose
    rows are the timeline's rows (id order)."""
    t = timeline
    ids = graph.ids
    start = t["start"].to_numpy().astype(np.float64)
    end = t["end"].to_numpy().astype(np.float64)
    origin = float(start.min()) if start.size else 0.0
    horizon = float(end.max()) if end.size else 0.0
    bind_ids = t["binding_id"].fill_null(-1).to_numpy()
    bind_row = np.where(bind_ids >= 0, np.searchsorted(ids, np.maximum(bind_ids, 0)), -1)
    last = int(np.lexsort((ids, -end))[0]) if end.size else -1
    rows = _walk(bind_row.astype(np.int64), last) if last >= 0 else np.zeros(0, np.int64)
    steps = t[rows].select("id", "engine", "opcode", "layer", "start", "end", "duration",
                           pl.col("binding_kind").alias("edge_kind"))
    steps = steps.with_columns(
        (pl.col("start") - pl.col("end").shift(1)).fill_null(pl.col("start") - int(origin))
        .alias("gap"))
    makespan = int(horizon - origin)

    def share(key: str) -> pl.DataFrame:
        parts = steps.group_by(pl.col(key).cast(pl.String).alias(key)).agg(
            pl.col("duration").sum().alias("cycles"))
        gaps = pl.DataFrame({key: ["(edge latency)"], "cycles": [int(steps["gap"].sum())]})
        return (pl.concat([parts, gaps.cast(parts.schema)])
                .filter(pl.col("cycles") > 0)
                .with_columns((pl.col("cycles") / max(makespan, 1) * 100).alias("pct"))
                .sort(["cycles", key], descending=[True, False]))

    dst = np.repeat(np.arange(graph.nodes), np.diff(graph.ptr))
    succ_ptr, succ_dst, succ_kind = csr(graph.nodes, dst, graph.src, graph.kind)
    latest, visited = _latest_ends(graph.nodes, succ_ptr, succ_dst, succ_kind, kind_latency,
                                   start, end, horizon)
    if visited < graph.nodes:
        raise ValueError("the dependency graph has a cycle; no critical path exists")
    slack = np.rint(latest - end).astype(np.int64)
    return CriticalPath(
        makespan=makespan, steps=steps, by_engine=share("engine"),
        by_opcode=share("opcode"), by_layer=share("layer"),
        slack=pl.DataFrame({"id": ids, "slack": slack, "critical": slack <= 0}))
