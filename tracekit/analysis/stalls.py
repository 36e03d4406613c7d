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

from tracekit.replay.graph import KINDS, Graph


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
    dst = np.repeat(np.arange(graph.nodes), np.diff(graph.ptr))
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
    pct (of the makespan). Sorted by engine, bucket,
    cycles descending, cause. Every engine's cycles sum to the makespan.
    """
    t = timeline.select("id", pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
                        "start", "end", "binding_id", "binding_kind", "contention")
    origin, horizon = int(t["start"].min()), int(t["end"].max())
    makespan = horizon - origin
    producer = t.select(pl.col("id").alias("binding_id"),
                        pl.col("engine").alias("producer"))
    t = (t.join(producer, on="binding_id", how="left", maintain_order="left")
         .sort("engine", "start", "id")
         .with_columns(pl.col("end").cum_max().shift(1).over("engine").alias("prev_end")))
    # Clip each instruction to the part after everything before it on its engine ended.
    t = t.with_columns(
        pl.max_horizontal("start", pl.col("prev_end").fill_null(origin)).alias("from"),
    ).with_columns(
        pl.max_horizontal("end", "from").alias("to"),
        (pl.col("from") - pl.col("prev_end")).clip(0).fill_null(0).alias("gap"),
    ).with_columns(
        (pl.col("to") - pl.col("from")).alias("span"),
        pl.col("contention").clip(0).alias("lost"),
    ).with_columns(pl.min_horizontal("lost", "span").alias("lost"))
    busy = t.select("engine", pl.lit(Bucket.BUSY.value).alias("bucket"),
                    pl.col("opcode").alias("cause"), (pl.col("span") - pl.col("lost"))
                    .alias("cycles"))
    hbm = t.select("engine", pl.lit(Bucket.WAITING.value).alias("bucket"),
                   pl.lit(HBM_CAUSE).alias("cause"), pl.col("lost").alias("cycles"))
    waiting = t.filter(pl.col("prev_end").is_not_null()).select(
        "engine", pl.lit(Bucket.WAITING.value).alias("bucket"),
        pl.when(pl.col("binding_kind").is_null() | (pl.col("binding_kind") == "order"))
        .then(pl.lit(UNEXPLAINED))
        .otherwise(pl.col("producer") + "/" + pl.col("binding_kind")).alias("cause"),
        pl.col("gap").alias("cycles"))
    edges = t.group_by("engine").agg(pl.col("start").min().alias("first"),
                                     pl.col("to").max().alias("last"))
    idle = pl.concat([
        edges.select("engine", pl.lit(Bucket.IDLE.value).alias("bucket"),
                     pl.lit(BEFORE).alias("cause"), (pl.col("first") - origin).alias("cycles")),
        edges.select("engine", pl.lit(Bucket.IDLE.value).alias("bucket"),
                     pl.lit(AFTER).alias("cause"), (horizon - pl.col("last")).alias("cycles")),
    ])
    table = (pl.concat([busy, hbm, waiting, idle])
             .group_by("engine", "bucket", "cause").agg(pl.col("cycles").sum())
             .filter(pl.col("cycles") > 0)
             .with_columns((pl.col("cycles") / max(makespan, 1) * 100).alias("pct"))
             .sort(["engine", "bucket", "cycles", "cause"],
                   descending=[False, False, True, False]))
    return table
