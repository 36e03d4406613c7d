"""Systolic-array figures for a trace whose manifest declares its array (extra.array: the engine,
its rows and columns and, per layer, the cycles of its compute window): per layer, the MACs the
array did over the processing-element cycles of that window, and the cycles it stalled.

    engine  layer  rows  cols  macs     window_cycles  compute_util_pct  busy_cycles  stall_cycles
    tensor  L0       16    16  245,760          1,875             51.20        1,650             0

macs = half the flops of the layer's instructions on the engine; compute_util_pct = macs /
(rows x cols x window_cycles) x 100, the window being the producer's (a SCALE-Sim import
declares its folds' cycles, which makes this SCALE-Sim's Compute Util), or busy_cycles where it
declares none. busy_cycles: the cycles the engine spends on the layer's instructions;
stall_cycles: the cycles it waits between the layer's first and last instruction (SCALE-Sim's
Stall Cycles on an imported trace's observed timeline; the model's on a replayed one). With more
than one layer a last row, layer "all", sums them.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from tracekit.trace.bundle import Trace

COLUMNS = {"engine": pl.String, "layer": pl.String, "rows": pl.Int64, "cols": pl.Int64,
           "macs": pl.Int64, "window_cycles": pl.Int64, "compute_util_pct": pl.Float64,
           "busy_cycles": pl.Int64, "stall_cycles": pl.Int64}
ALL = "all"


def declared_array(trace: Trace) -> dict[str, Any] | None:
    """The manifest's extra.array, when it names an engine and positive rows and cols."""
    array = trace.manifest.extra.get("array")
    if not isinstance(array, dict) or not isinstance(array.get("engine"), str):
        return None
    if not all(isinstance(array.get(k), int) and array[k] > 0 for k in ("rows", "cols")):
        return None
    return array


def array_table(trace: Trace, timeline: pl.DataFrame) -> pl.DataFrame | None:
    """Rows as above for the declared array, or None if the trace declares none. `timeline`
    (id, engine, layer, start, end) is the timeline analysed."""
    array = declared_array(trace)
    if array is None:
        return None
    engine, pes = array["engine"], array["rows"] * array["cols"]
    windows = array.get("window_cycles")
    flops = trace.read("instructions", ["id", "flops"])
    steps = (timeline.filter(pl.col("engine") == engine)
             .select("id", pl.col("layer").cast(pl.String).fill_null(""), "start", "end")
             .join(flops, on="id", how="left")
             .sort("start", "id"))
    if steps.height == 0:
        return pl.DataFrame(schema=COLUMNS)
    # Cycles of each instruction not already covered by an earlier one (observed timelines may
    # overlap), and the gap before it when the previous one is of the same layer.
    steps = steps.with_columns(pl.col("end").cum_max().shift(1).alias("covered"),
                               (pl.col("layer") == pl.col("layer").shift(1)).alias("same"))
    steps = steps.with_columns(
        (pl.col("end") - pl.max_horizontal("start", pl.col("covered").fill_null(pl.col("start"))))
        .clip(0).alias("busy"),
        pl.when(pl.col("same")).then((pl.col("start") - pl.col("covered")).clip(0))
        .otherwise(0).alias("stall"))
    per_layer = (steps.group_by("layer", maintain_order=True)
                 .agg(pl.col("flops").sum().alias("flops"), pl.col("busy").sum(),
                      pl.col("stall").sum()))
    rows = []
    for layer, flop, busy, stall in per_layer.iter_rows():
        window = windows.get(layer) if isinstance(windows, dict) else (
            windows if isinstance(windows, int) and per_layer.height == 1 else None)
        window = window if isinstance(window, int) and window > 0 else busy
        rows.append((layer, int(flop or 0) // 2, window, busy, stall))
    if len(rows) > 1:
        rows.append((ALL, *(sum(r[i] for r in rows) for i in range(1, 5))))
    return pl.DataFrame([{
        "engine": engine, "layer": layer, "rows": array["rows"], "cols": array["cols"],
        "macs": macs, "window_cycles": window,
        "compute_util_pct": 100.0 * macs / (pes * window) if window else 0.0,
        "busy_cycles": busy, "stall_cycles": stall} for layer, macs, window, busy, stall in rows],
        schema=COLUMNS)
