"""Stall accounting: every cycle of every engine, from the first start in the trace to the last
end, in exactly one bucket.

    tensor  busy     matmul            1,179,648   (its instructions' durations)
    tensor  waiting  dma.q1/semaphore    512,300   (gaps before instructions whose start was
                                                    decided by a signal from dma.q1)
    tensor  idle     before first            612   (before its first instruction)
    tensor  idle     after last              840   (after its last)

A gap before an instruction is charged to its binding predecessor: on a replayed timeline the
replay's binding constraint; on an observed timeline its latest-finishing predecessor in the
dependency graph. A DMA transfer's cycles lost to HBM sharing (replay only) are charged to
"waiting / hbm". Observed instructions that overlap on one engine are clipped so no cycle
counts twice. The buckets of each engine sum to the makespan exactly.
"""

from __future__ import annotations

from enum import StrEnum

import numba
import numpy as np
import polars as pl

from tracekit.analysis.figures import accounts, codes, group_sums, rows_of
from tracekit.replay.graph import KINDS, ORDER, Graph


class Bucket(StrEnum):
    BUSY = "busy"
    WAITING = "waiting"
    IDLE = "idle"


HBM_CAUSE = "hbm"
UNEXPLAINED = "unexplained"
"""A gap no dependency accounts for (nothing bound the start, or only the engine's own order)."""
BEFORE, AFTER = "before first", "after last"


def observed_timeline(frame: pl.DataFrame, graph: Graph,
                      kind_latency: np.ndarray | None = None) -> pl.DataFrame:
    """An observed timeline in the replay's columns: binding = the predecessor whose end plus
    edge latency (`kind_latency`, cycles per edge kind code; 0 if None) is latest (ties: the
    predecessor listed first in the graph), contention 0.

    `frame`: id, engine, opcode, layer, start, end in id order (graph row order).
    """
    end = frame["end"].to_numpy().astype(np.float64)
    latency = np.zeros(len(KINDS)) if kind_latency is None else kind_latency
    bind, kind = _bindings(graph.ptr, graph.src, graph.kind, end,
                           np.asarray(latency, dtype=np.float64))
    has = bind >= 0
    return frame.with_columns(
        (pl.col("end") - pl.col("start")).alias("duration"),
        pl.Series("binding_id", graph.ids[np.maximum(bind, 0)]).set(pl.Series(~has), None),
        pl.Series("binding_kind", [k.value for k in KINDS])[np.maximum(kind, 0)]
        .set(pl.Series(~has), None),
        pl.lit(0, dtype=pl.Int64).alias("contention"),
    )


@numba.njit(cache=True, nogil=True)
def _bindings(ptr, src, kind, end, latency):  # pragma: no cover - compiled
    """Per row, its predecessor (CSR `ptr`, `src`, `kind`) of the latest end plus edge
    latency, the first listed on a tie, and that edge's kind (-1 for both without one)."""
    n = ptr.size - 1
    bind = np.full(n, -1, dtype=np.int64)
    bind_kind = np.full(n, -1, dtype=np.int64)
    for row in range(n):
        best = -np.inf
        for k in range(ptr[row], ptr[row + 1]):
            ready = end[src[k]] + latency[kind[k]]
            if bind[row] < 0 or ready > best:
                best = ready
                bind[row] = src[k]
                bind_kind[row] = kind[k]
    return bind, bind_kind


def stall_table(timeline: pl.DataFrame) -> pl.DataFrame:
    """Per engine, the makespan split into buckets.

    Columns: engine (str); bucket (busy, waiting, idle); cause (the opcode for busy; the
    producing engine and edge kind as "engine/kind", or "hbm", for waiting; "before first" or
    "after last" for idle; "unexplained" for a gap no dependency accounts for); cycles (int);
    pct (of the makespan). Sorted by engine, bucket, cycles descending, cause. Every engine's
    cycles sum to the makespan.

    The cycles come instruction by instruction from `figures.accounts`, summed per engine and
    cause; only the summary is built as a frame.
    """
    t = timeline.sort("id") if not timeline["id"].is_sorted() else timeline
    n = t.height
    if n == 0:
        return pl.DataFrame(schema={"engine": pl.String, "bucket": pl.String,
                                    "cause": pl.String, "cycles": pl.Int64, "pct": pl.Float64})
    acc = accounts(t)
    engines, engine = acc.engines, acc.engine.astype(np.int64)
    opcode, opcodes = codes(t["opcode"])
    ids = t["id"].to_numpy()
    bind_ids = t["binding_id"].fill_null(-1).to_numpy()
    has = bind_ids >= 0
    bind = np.full(n, -1, dtype=np.int64)
    bind[has] = rows_of(ids, bind_ids[has])
    bind_kind = kind_codes(t["binding_kind"])
    n_eng, n_op, n_kind = len(engines), len(opcodes), len(KINDS)

    def summed(key: np.ndarray, values: np.ndarray, space: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """The keys (0..space-1) that occur and the values summed per key: counted on an
        accumulator of `space` where that is not much more than the rows, else on the
        distinct keys (never engines x engines when that is large)."""
        if space <= 4 * key.size + 1024:
            count = np.bincount(key, minlength=space)
            keys = np.flatnonzero(count)
            return keys, group_sums(key, values, space)[keys]
        keys, inverse = np.unique(key, return_inverse=True)
        return keys, group_sums(inverse, values, keys.size)

    # A gap is charged to its binding predecessor's engine and edge kind; with no binding, or
    # only the engine's own order, it is unexplained.
    explained = (bind >= 0) & (bind_kind >= 0) & (bind_kind != ORDER)
    busy_key, busy = summed(engine * n_op + opcode, acc.busy, n_eng * n_op)
    wait_key, waiting = summed(
        (engine * (n_eng * n_kind) + engine[np.maximum(bind, 0)] * n_kind + bind_kind)[explained],
        acc.wait[explained], n_eng * n_eng * n_kind)
    per_engine = np.arange(n_eng, dtype=np.int64)
    hbm = np.bincount(engine, weights=acc.contention.astype(np.float64),
                      minlength=n_eng).astype(np.int64)
    unexplained = np.bincount(engine, weights=np.where(explained, 0, acc.wait).astype(np.float64),
                              minlength=n_eng).astype(np.int64)
    seen = np.flatnonzero(np.bincount(engine, minlength=n_eng) > 0)
    names = pl.Series(engines, dtype=pl.String)
    kind_names = [k.value for k in KINDS]
    wait_producer = (wait_key // n_kind) % n_eng
    parts = [
        (busy_key // n_op, Bucket.BUSY,
         pl.Series(opcodes, dtype=pl.String).gather(busy_key % n_op), busy),
        (per_engine, Bucket.WAITING, pl.repeat(HBM_CAUSE, n_eng, eager=True), hbm),
        (wait_key // (n_eng * n_kind), Bucket.WAITING,
         names.gather(wait_producer) + "/" + pl.Series(kind_names).gather(wait_key % n_kind),
         waiting),
        (per_engine, Bucket.WAITING, pl.repeat(UNEXPLAINED, n_eng, eager=True), unexplained),
        (seen, Bucket.IDLE, pl.repeat(BEFORE, seen.size, eager=True),
         acc.first[seen] - acc.origin),
        (seen, Bucket.IDLE, pl.repeat(AFTER, seen.size, eager=True),
         acc.horizon - acc.last[seen]),
    ]
    table = pl.concat([
        pl.DataFrame({"_e": np.asarray(e, dtype=np.int64),
                      "bucket": pl.repeat(bucket.value, len(e), eager=True, dtype=pl.String),
                      "cause": pl.Series(cause, dtype=pl.String),
                      "cycles": np.asarray(cycles, dtype=np.int64)})
        for e, bucket, cause, cycles in parts])
    makespan = max(acc.makespan, 1)
    table = (table.filter(pl.col("cycles") > 0)
             .sort(["_e", "bucket", "cycles", "cause"], descending=[False, False, True, False]))
    return table.select(names.gather(table["_e"]).alias("engine"), "bucket", "cause", "cycles",
                        (pl.col("cycles") / makespan * 100).alias("pct"))


def kind_codes(kinds: pl.Series) -> np.ndarray:
    """Edge kind codes (indexes into KINDS) of a column of edge kind names; -1 for null."""
    names = [k.value for k in KINDS]
    if kinds.dtype == pl.String or kinds.dtype == pl.Categorical:
        coded = kinds.cast(pl.String).cast(pl.Enum(names), strict=False)
        if coded.null_count() == kinds.null_count():  # every name is a kind
            return coded.to_physical().cast(pl.Int64).fill_null(-1).to_numpy()
    return (kinds.cast(pl.String).replace_strict({k: i for i, k in enumerate(names)},
                                                 default=-1, return_dtype=pl.Int64)
            .fill_null(-1).to_numpy())
