"""What a replay says: the summary of the predicted timeline, and how far it is from the
observed one. Consumes a ReplayResult; renders nothing.

For a trace whose matmuls took 100 cycles each where the model predicts 90, the opcode row
reads bias -10.0 %, MAPE 10.0 %, p50 and p95 absolute error 10 cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tracekit.analysis.figures import accounts, engine_figures, opcode_figures
from tracekit.replay.run import ReplayResult

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
    `divergent`: the TOP_DIVERGENT instructions whose predicted end is furthest from the
    observed end: id, engine, opcode, layer, observed_start, observed_end, start, end,
    end_error (predicted minus observed end, cycles, both measured from their first start).
    """

    observed_makespan: int
    predicted_makespan: int
    makespan_error_pct: float | None
    opcodes: pl.DataFrame
    divergent: pl.DataFrame


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


def correlate(result: ReplayResult) -> Correlation | None:
    """None when the trace has no observed timing to compare with."""
    if not result.observed:
        return None
    t = result.timeline
    origin = int(t["observed_start"].min())
    t = t.with_columns(
        (pl.col("observed_end") - pl.col("observed_start")).alias("observed"),
        (pl.col("end") - (pl.col("observed_end") - origin)).alias("end_error"))
    observed_makespan = int(t["observed_end"].max()) - origin
    error = (pl.col("duration") - pl.col("observed")).abs()
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
    divergent = (t.with_columns(pl.col("end_error").abs().alias("_abs"))
                 .sort(["_abs", "id"], descending=[True, False]).head(TOP_DIVERGENT)
                 .select("id", "engine", "opcode", "layer", "observed_start", "observed_end",
                         "start", "end", "end_error"))
    predicted = result.makespan
    return Correlation(
        observed_makespan=observed_makespan, predicted_makespan=predicted,
        makespan_error_pct=((predicted - observed_makespan) / observed_makespan * 100
                            if observed_makespan else None),
        opcodes=opcodes, divergent=divergent)
