"""The dependency graph of a trace, derived with vectorized NumPy and kept as a predecessor CSR
sorted by destination.

For instructions 0 (dma.q0 load, signals sem 0), 1 (tensor matmul, waits sem 0 >= 1) and
2 (tensor matmul): edges 0 -> 1 (semaphore) and 1 -> 2 (order); `preds(1)` is [0] and
`preds(2)` is [1].

- order: each instruction after the previous one (by seq) on its in-order engine;
- semaphore: a wait for value v on semaphore s after the signal that first brings s's count to
  v, signals counted in order of observed end (by id when untimed); a wait no signal satisfies
  is recorded in `unsatisfied`, not an edge;
- data: the producer's explicit edges from deps.parquet (their own kind kept).

Rows are instruction positions 0..n-1 in id order (`ids` maps them back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.trace.bundle import Trace
from tracekit.trace.schema import EdgeKind

KINDS: tuple[EdgeKind, ...] = tuple(EdgeKind)
"""Edge kind codes: index into this tuple."""

ORDER, SEMAPHORE, DATA, MEMORY, RESOURCE = range(5)


@dataclass(frozen=True)
class Graph:
    """Predecessor CSR: the edges into node j are `src[ptr[j]:ptr[j+1]]`, of kinds
    `kind[...]` (codes of KINDS), sorted by (dst, kind, src)."""

    ids: np.ndarray
    ptr: np.ndarray
    src: np.ndarray
    kind: np.ndarray
    unsatisfied: pl.DataFrame

    @property
    def nodes(self) -> int:
        return int(self.ids.size)

    @property
    def edges(self) -> int:
        return int(self.src.size)

    def edge_frame(self, kind: EdgeKind | None = None) -> pl.DataFrame:
        """Edges as (src, dst, kind) in instruction ids, optionally of one kind only."""
        dst = np.repeat(np.arange(self.nodes), np.diff(self.ptr))
        frame = pl.DataFrame({
            "src": self.ids[self.src], "dst": self.ids[dst],
            "kind": pl.Series([k.value for k in KINDS])[self.kind.astype(np.int64)],
        })
        return frame if kind is None else frame.filter(pl.col("kind") == kind.value)

    def preds(self, node: int) -> np.ndarray:
        return self.src[self.ptr[node]:self.ptr[node + 1]]


def _codes(series: pl.Series) -> np.ndarray:
    return series.cast(pl.String).cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)


def order_edges(engine: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of consecutive instructions on each engine, by seq."""
    order = np.lexsort((seq, engine))
    same = engine[order][1:] == engine[order][:-1]
    return order[:-1][same], order[1:][same]


def semaphore_edges(inst: np.ndarray, sem: np.ndarray, is_signal: np.ndarray,
                    value: np.ndarray, signal_rank: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst) for waits satisfied by counting, and the rows of unsatisfied waits.

    `inst` are node positions; `signal_rank` orders the signals (observed end, then id).
    """
    s_inst, s_sem, s_val = inst[is_signal], sem[is_signal], value[is_signal]
    order = np.lexsort((s_inst, signal_rank[is_signal], s_sem))
    s_inst, s_sem, s_val = s_inst[order], s_sem[order], s_val[order]
    cum = np.cumsum(s_val)
    first = np.searchsorted(s_sem, s_sem, side="left")
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0)
    wait_rows = np.flatnonzero(~is_signal)
    w_sem, w_val = sem[wait_rows], value[wait_rows]
    lo = np.searchsorted(s_sem, w_sem, side="left")
    hi = np.searchsorted(s_sem, w_sem, side="right")
    base = np.where(lo < hi, before[np.minimum(lo, max(s_sem.size - 1, 0))], 0)
    needed = w_val > 0
    pos = np.searchsorted(cum, base + w_val, side="left")
    ok = needed & (pos >= lo) & (pos < hi)
    unsatisfied = wait_rows[needed & ~ok]
    return s_inst[pos[ok]], inst[wait_rows[ok]], unsatisfied


def derive(trace: Trace) -> Graph:
    """The dependency graph of an opened trace (order, semaphore and data edges)."""
    inst = trace.read("instructions", ["id", "engine", "seq", "end"]).sort("id")
    ids = inst["id"].to_numpy()
    n = ids.size
    srcs, dsts, kinds = [], [], []

    src, dst = order_edges(_codes(inst["engine"]), inst["seq"].to_numpy())
    srcs.append(src)
    dsts.append(dst)
    kinds.append(np.full(src.size, ORDER, dtype=np.int8))

    unsatisfied = pl.DataFrame(schema={"inst": pl.Int64, "sem": pl.Int64, "value": pl.Int64,
                                       "signalled": pl.Int64})
    if trace.has_table("semaphores"):
        sems = trace.read("semaphores")
        node = np.searchsorted(ids, sems["inst"].to_numpy())
        is_signal = (sems["op"].cast(pl.String) == "signal").to_numpy()
        end = inst["end"].to_numpy(allow_copy=True)
        rank = node if inst["end"].null_count() else end[node]
        src, dst, bad = semaphore_edges(node, sems["sem"].to_numpy(), is_signal,
                                        sems["value"].to_numpy(), rank)
        srcs.append(src)
        dsts.append(dst)
        kinds.append(np.full(src.size, SEMAPHORE, dtype=np.int8))
        if bad.size:
            totals = sems.filter(pl.col("op") == "signal").group_by("sem").agg(
                pl.col("value").sum().alias("signalled"))
            unsatisfied = (sems[bad].select("inst", "sem", "value")
                           .join(totals, on="sem", how="left")
                           .with_columns(pl.col("signalled").fill_null(0))
                           .sort("inst", "sem"))
    if trace.has_table("deps"):
        deps = trace.read("deps")
        srcs.append(np.searchsorted(ids, deps["src"].to_numpy()))
        dsts.append(np.searchsorted(ids, deps["dst"].to_numpy()))
        codes = {k.value: i for i, k in enumerate(KINDS)}
        kinds.append(deps["kind"].cast(pl.String).replace_strict(codes).to_numpy()
                     .astype(np.int8))

    src = np.concatenate(srcs).astype(np.int64)
    dst = np.concatenate(dsts).astype(np.int64)
    kind = np.concatenate(kinds)
    order = np.lexsort((src, kind, dst))
    src, dst, kind = src[order], dst[order], kind[order]
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(dst, minlength=n))
    return Graph(ids=ids, ptr=ptr, src=src, kind=kind, unsatisfied=unsatisfied)
