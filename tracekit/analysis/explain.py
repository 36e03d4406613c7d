"""Why a what-if moved the makespan against the change: a faster part that makes the run slower,
or a slower one that makes it faster. Compares the two replays' own figures (HBM contention
per DMA queue and on the critical path, and the engines the critical path runs on); renders
nothing but the sentence that states them.

Worked example (sample_traces/gemm, four DMA queues of 64 B/cycle on 192 B/cycle of HBM):

    engine dma.q0 10 % faster makes the run 2,978 cycles longer: HBM contention +39,192
    cycles on the other queues dma.q1, dma.q2, dma.q3 (169,950 -> 209,142), +13,023 cycles
    on dma.q0 itself (56,666 -> 69,689) and +13,022 cycles on the critical path (56,650 ->
    69,672); the critical path moved off dma.q0 (-426,501 cycles) onto dma.q1 (+426,087
    cycles)

dma.q0's transfers, shorter, overlap more of the other queues' transfers and share HBM with
them; the queue the run now waits on lost more to contention than dma.q0 saved.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tracekit.analysis.critical_path import critical_path
from tracekit.analysis.figures import accounts, rows_of
from tracekit.analysis.timelines import kind_latencies
from tracekit.replay.run import ReplayResult
from tracekit.trace.summary import natural_key

NAMES_LISTED = 4
"""Engines named one by one in a sentence; more are counted."""


def engine_change(base: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """Per engine of two timelines of one trace (ReplayResult.timeline), before and after a
    change: engine, busy_base and busy_after, contention_base and contention_after (cycles,
    as `figures.accounts` counts them: busy is without HBM contention). Natural engine
    order."""
    def figures(t: pl.DataFrame, suffix: str) -> pl.DataFrame:
        acc = accounts(t)
        return pl.DataFrame({
            "engine": acc.engines,
            f"busy_{suffix}": np.bincount(acc.engine, weights=acc.busy.astype(np.float64),
                                          minlength=len(acc.engines)).astype(np.int64),
            f"contention_{suffix}": np.bincount(
                acc.engine, weights=acc.contention.astype(np.float64),
                minlength=len(acc.engines)).astype(np.int64)})

    table = figures(base, "base").join(figures(after, "after"), on="engine", how="full",
                                       coalesce=True)
    order = sorted(range(table.height), key=lambda i: natural_key(table["engine"][i]))
    return table[order].select("engine", "busy_base", "busy_after", "contention_base",
                               "contention_after")


def _names(engines: list[str]) -> str:
    engines = sorted(engines, key=natural_key)
    if len(engines) > NAMES_LISTED:
        return f"{len(engines)} queues"
    return ", ".join(engines)


PathFigures = tuple[dict[str, int], int]


def path_figures(result: ReplayResult) -> PathFigures:
    """Cycles of the critical path per engine (and edge latency or unexplained gap), and the
    HBM contention of its steps."""
    t = result.timeline
    path = critical_path(t, result.graph, kind_latencies(result.machine))
    steps = rows_of(t["id"].to_numpy(), path.steps["id"].to_numpy())
    return (dict(path.by_engine.select("engine", "cycles").iter_rows()),
            int(t["contention"].to_numpy()[steps].sum()))


def counter_intuitive(faster: bool | None, base: int, after: int) -> bool:
    """Whether a change made the run move against its direction (`faster`: the change speeds a
    part up; None: a mix of both, which has no direction)."""
    if faster is None:
        return False
    return after > base if faster else after < base


def why(what: str, base: ReplayResult, after: ReplayResult, touched: set[str],
        base_path: PathFigures | None = None) -> str:
    """The sentence that says, with the replays' figures, why `what` (the change, in words:
    "engine dma.q0 10 % faster") moved the makespan from `base` to `after`. `touched`: the
    engines whose instructions the change acts on; HBM contention on the other queues is told
    apart. `base_path`: `path_figures(base)`, when the caller has it. Only the figures that
    moved the same way as the makespan are given."""
    delta = after.makespan - base.makespan
    sign = 1 if delta > 0 else -1
    engines = engine_change(base.timeline, after.timeline).fill_null(0)
    queues = engines.filter((pl.col("contention_base") > 0) | (pl.col("contention_after") > 0))
    changed = pl.col("engine").is_in(sorted(touched))
    others, own = queues.filter(~changed), queues.filter(changed)
    path_was, lost_was = path_figures(base) if base_path is None else base_path
    path_now, lost_now = path_figures(after)
    contention = []
    for where, was, now in (
            (("on the other queues " if own.height else "on ")
             + _names(others["engine"].to_list()),
             int(others["contention_base"].sum()), int(others["contention_after"].sum())),
            (f"on {_names(own['engine'].to_list())} "
             + ("itself" if own.height == 1 else "themselves"),
             int(own["contention_base"].sum()), int(own["contention_after"].sum())),
            ("on the critical path", lost_was, lost_now)):
        if (now - was) * sign > 0:
            contention.append(f"{now - was:+,} cycles {where} ({was:,} -> {now:,})")
    reasons = []
    if contention:
        reasons.append("HBM contention " + ", ".join(contention[:-1])
                       + (" and " if len(contention) > 1 else "") + contention[-1])
    # The engines whose share of the critical path shrank and grew most (ties by name).
    moved = sorted((path_now.get(k, 0) - path_was.get(k, 0), k)
                   for k in set(path_was) | set(path_now))
    down, up = moved[0], moved[-1]
    if down[0] < 0 and up[0] > 0:
        reasons.append(f"the critical path moved off {down[1]} ({down[0]:+,} cycles) onto "
                       f"{up[1]} ({up[0]:+,} cycles)")
    elif (up if sign > 0 else down)[0] * sign > 0:
        step = up if sign > 0 else down
        reasons.append(f"the critical path spends {step[0]:+,} cycles on {step[1]}")
    word = "longer" if delta > 0 else "shorter"
    return (f"{what} makes the run {abs(delta):,} cycles {word}: "
            + ("; ".join(reasons) if reasons else "no figure of the two replays accounts for "
               "it"))
