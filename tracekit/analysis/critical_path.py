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

from tracekit.analysis.figures import rows_of
from tracekit.replay.graph import KINDS, Graph, GraphError, kahn_order


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
        """Instructions off the path whose slack is under `threshold` cycles: id, slack;
        least slack first, ties by id."""
        ids, slack = self.slack["id"].to_numpy(), self.slack["slack"].to_numpy()
        near = slack < threshold
        near[rows_of(ids, self.steps["id"].to_numpy())] = False
        rows = np.flatnonzero(near)
        rows = rows[np.argsort(slack[rows], kind="stable")]  # rows, and so ids, in order
        return pl.DataFrame({"id": ids[rows], "slack": slack[rows]},
                            schema={"id": pl.Int64, "slack": pl.Int64})


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
def _latest_ends_back(ptr, src, kind, kind_latency, start, end,
                      makespan):  # pragma: no cover - compiled
    """Latest end of each node that keeps the makespan: min over its successors of (their
    latest start - edge latency). Over the predecessor lists (CSR `ptr`, `src`, `kind`),
    without successor lists: each node, once final (its successors all seen, in reverse
    topological order), lowers its predecessors' latest ends. The topological order is row
    order when every edge points forward (the usual case), else a depth-first post-order.
    The second result is False, and the first unfinished, when the graph has a cycle."""
    n = ptr.size - 1
    latest = np.full(n, makespan, dtype=np.float64)
    forward = True
    for node in range(n):
        for k in range(ptr[node], ptr[node + 1]):
            if src[k] >= node:
                forward = False
        if not forward:
            break
    order = np.arange(n)
    if not forward:
        state = np.zeros(n, dtype=np.int8)  # 0 unseen, 1 on the stack, 2 done
        stack = np.empty(n, dtype=np.int64)
        edge = np.empty(n, dtype=np.int64)
        done = 0
        for root in range(n):
            if state[root] != 0:
                continue
            depth = 1
            stack[0], edge[0], state[root] = root, ptr[root], 1
            while depth > 0:
                node, k = stack[depth - 1], edge[depth - 1]
                if k < ptr[node + 1]:
                    edge[depth - 1] = k + 1
                    pred = src[k]
                    if state[pred] == 1:
                        return latest, False  # a cycle
                    if state[pred] == 0:
                        stack[depth], edge[depth], state[pred] = pred, ptr[pred], 1
                        depth += 1
                else:
                    state[node] = 2
                    order[done] = node
                    done += 1
                    depth -= 1
    for idx in range(n - 1, -1, -1):
        node = order[idx]
        reach = latest[node] - (end[node] - start[node])
        for k in range(ptr[node], ptr[node + 1]):
            candidate = reach - kind_latency[kind[k]]
            if candidate < latest[src[k]]:
                latest[src[k]] = candidate
    return latest, True


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
    bind_row = np.full(bind_ids.size, -1, dtype=np.int64)
    bound = bind_ids >= 0
    bind_row[bound] = rows_of(ids, bind_ids[bound])
    del bind_ids, bound
    # The instruction that ends last, the lowest id on a tie (rows are in id order).
    last = int(np.argmax(end)) if end.size else -1
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

    latest, acyclic = _latest_ends_back(graph.ptr, graph.src, graph.kind,
                                        np.asarray(kind_latency, dtype=np.float64), start,
                                        end, horizon)
    if not acyclic:
        dst = graph.destinations()
        order = kahn_order(graph.nodes, graph.src, dst)  # counts what the cycle holds up
        raise GraphError(f"{graph.nodes - order.size:,} instructions depend on each other in "
                         f"a cycle, so no critical path exists; `tracekit bugs` lists the "
                         f"cycle (deadlock-cycle).")
    # On an observed timeline whose gaps are shorter than the machine's edge latencies (or
    # whose timestamps contradict a dependency) the backward pass goes below zero: such
    # instructions are as critical as can be, and their slack is reported as 0.
    slack = np.maximum(np.rint(latest - end), 0).astype(np.int64)
    return CriticalPath(
        makespan=makespan, steps=steps.drop("latency", "unexplained"),
        by_engine=share("engine"), by_opcode=share("opcode"), by_layer=share("layer"),
        slack=pl.DataFrame({"id": ids, "slack": slack, "critical": slack == 0}))
