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

import numpy as np
import polars as pl

from tracekit.analysis.figures import accounts
from tracekit.replay.graph import KINDS, ORDER, Graph
from tracekit.replay.run import name_codes


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
    dst = graph.destinations()
    ready = end[graph.src] + latency[graph.kind.astype(np.int64)]
    order = np.lexsort((np.arange(graph.edges), -ready, dst))
    first = np.r_[True, dst[order][1:] != dst[order][:-1]] if order.size else np.zeros(0, bool)
    best = order[first]
    bind = np.full(graph.nodes, -1, dtype=np.int64)
    kind = np.full(graph.nodes, -1, dtype=np.int64)
    bind[dst[best]] = graph.src[best]
    kind[dst[best]] = graph.kind[best]
    has = bind >= 0
    return frame.with_columns(
        (pl.col("end") - pl.col("start")).alias("duration"),
        pl.Series("binding_id", graph.ids[np.maximum(bind, 0)]).set(pl.Series(~has), None),
        pl.Series("binding_kind", [k.value for k in KINDS])[np.maximum(kind, 0)]
        .set(pl.Series(~has), None),
        pl.lit(0, dtype=pl.Int64).alias("contention"),
    )


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
    engines, engine = acc.engines, acc.engine
    opcode, opcodes = name_codes(t["opcode"])
    ids = t["id"].to_numpy()
    bind_ids = t["binding_id"].fill_null(-1).to_numpy()
    has = bind_ids >= 0
    bind = np.full(n, -1, dtype=np.int64)
    bind[has] = np.searchsorted(ids, bind_ids[has])
    kinds = {k.value: i for i, k in enumerate(KINDS)}
    bind_kind = (t["binding_kind"].cast(pl.String).replace_strict(kinds, default=-1,
                                                                    return_dtype=pl.Int64)
                 .fill_null(-1).to_numpy())
    n_eng, n_op, n_kind = len(engines), len(opcodes), len(KINDS)

    def summed(key: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
        return np.bincount(key, weights=values.astype(np.float64),
                           minlength=size).astype(np.int64)

    busy = summed(engine * n_op + opcode, acc.busy, n_eng * n_op).reshape(n_eng, n_op)
    hbm = summed(engine, acc.contention, n_eng)
    # A gap is charged to its binding predecessor's engine and edge kind; with no binding, or
    # only the engine's own order, it is unexplained.
    explained = (bind >= 0) & (bind_kind >= 0) & (bind_kind != ORDER)
    cause = np.where(explained, engine[np.maximum(bind, 0)] * n_kind + bind_kind, -1)
    waiting = summed(engine * (n_eng * n_kind) + np.maximum(cause, 0),
                     np.where(explained, acc.wait, 0),
                     n_eng * n_eng * n_kind).reshape(n_eng, n_eng, n_kind)
    unexplained = summed(engine, np.where(explained, 0, acc.wait), n_eng)
    seen = np.bincount(engine, minlength=n_eng) > 0
    rows: list[tuple[str, str, str, int]] = []
    for e, name in enumerate(engines):
        rows += [(name, Bucket.BUSY.value, opcodes[o], int(busy[e, o])) for o in range(n_op)]
        rows.append((name, Bucket.WAITING.value, HBM_CAUSE, int(hbm[e])))
        rows += [(name, Bucket.WAITING.value, f"{engines[p]}/{KINDS[k].value}",
                  int(waiting[e, p, k])) for p in range(n_eng) for k in range(n_kind)]
        rows.append((name, Bucket.WAITING.value, UNEXPLAINED, int(unexplained[e])))
        if seen[e]:
            rows.append((name, Bucket.IDLE.value, BEFORE, int(acc.first[e] - acc.origin)))
            rows.append((name, Bucket.IDLE.value, AFTER, int(acc.horizon - acc.last[e])))
    makespan = max(acc.makespan, 1)
    table = pl.DataFrame(rows, schema={"engine": pl.String, "bucket": pl.String,
                                       "cause": pl.String, "cycles": pl.Int64}, orient="row")
    engine_rank = {name: i for i, name in enumerate(engines)}
    return (table.filter(pl.col("cycles") > 0)
            .with_columns((pl.col("cycles") / makespan * 100).alias("pct"),
                          pl.col("engine").replace_strict(engine_rank,
                                                          return_dtype=pl.Int64).alias("_e"))
            .sort(["_e", "bucket", "cycles", "cause"], descending=[False, False, True, False])
            .drop("_e"))
