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

from tracekit.replay.graph import KINDS, Graph, GraphError, csr, kahn_order


@dataclass(frozen=True)
class CriticalPath:
    """`steps`: the path in time order: id, engine, opcode, layer, start, end, duration
    (cycles), edge_kind (the edge into the step, null for the first), gap (cycles between the
    previous step's end and this start, 0 when they overlap), counted (the step's cycles not
    overlapping the previous step). Sum of counted and gap = makespan.
    `by_engine`, `by_opcode`, `by_layer`: group, cycles on the path (counted), pct (of the
    makespan); gaps are listed as "(edge latency)" up to the edge's latency and
    "(unexplained gap)" beyond it.
    `slack`: id, slack (cycles, >= 0), critical (slack == 0).
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
def _latest_ends(order, succ_ptr, succ_dst, succ_kind, kind_latency, start, end,
                 makespan):  # pragma: no cover - compiled
    """Latest end of each node that keeps the makespan: min over successors of (their latest
    start - edge latency), over the nodes in reverse topological `order`."""
    latest = np.full(start.size, makespan, dtype=np.float64)
    for idx in range(order.size - 1, -1, -1):
        node = order[idx]
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            candidate = latest[s] - (end[s] - start[s]) - kind_latency[succ_kind[k]]
            if candidate < latest[node]:
                latest[node] = candidate
    return latest


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
    latency_of = {k.value: float(kind_latency[i]) for i, k in enumerate(KINDS)}
    # An observed step that overlaps earlier ones counts only its part after all of them.
    reached = pl.col("end").cum_max().shift(1).fill_null(int(origin))
    steps = steps.with_columns(reached.alias("_reached")).with_columns(
        (pl.col("start") - pl.col("_reached")).clip(0).alias("gap"),
        (pl.col("end") - pl.max_horizontal("start", "_reached")).clip(0).alias("counted"),
    ).drop("_reached").with_columns(
        # Of a gap, the edge's own latency is expected; any more is unexplained waiting.
        pl.min_horizontal("gap", pl.col("edge_kind").replace_strict(
            latency_of, default=0.0, return_dtype=pl.Float64).fill_null(0.0).cast(pl.Int64))
        .alias("latency"),
    ).with_columns((pl.col("gap") - pl.col("latency")).alias("unexplained"))
    makespan = int(horizon - origin)

    def share(key: str) -> pl.DataFrame:
        # Grouped on the names' codes; only the distinct names become strings.
        parts = steps.group_by(key).agg(pl.col("counted").sum().alias("cycles")).with_columns(
            pl.col(key).cast(pl.String))
        gaps = pl.DataFrame({key: ["(edge latency)", "(unexplained gap)"],
                             "cycles": [int(steps["latency"].sum()),
                                        int(steps["unexplained"].sum())]})
        return (pl.concat([parts, gaps.cast(parts.schema)])
                .filter(pl.col("cycles") > 0)
                .with_columns((pl.col("cycles") / max(makespan, 1) * 100).alias("pct"))
                .sort(["cycles", key], descending=[True, False]))

    dst = graph.destinations()
    succ_ptr, succ_dst, succ_kind = csr(graph.nodes, dst, graph.src, graph.kind)
    order = kahn_order(graph.nodes, graph.src, dst)
    if order.size < graph.nodes:
        raise GraphError(f"{graph.nodes - order.size:,} instructions depend on each other in "
                         f"a cycle, so no critical path exists; `tracekit bugs` lists the "
                         f"cycle (deadlock-cycle).")
    latest = _latest_ends(order, succ_ptr, succ_dst, succ_kind, kind_latency, start, end,
                          horizon)
    # On an observed timeline whose gaps are shorter than the machine's edge latencies (or
    # whose timestamps contradict a dependency) the backward pass goes below zero: such
    # instructions are as critical as can be, and their slack is reported as 0.
    slack = np.maximum(np.rint(latest - end), 0).astype(np.int64)
    return CriticalPath(
        makespan=makespan, steps=steps.drop("latency", "unexplained"),
        by_engine=share("engine"), by_opcode=share("opcode"), by_layer=share("layer"),
        slack=pl.DataFrame({"id": ids, "slack": slack, "critical": slack == 0}))
