"""What-if and sensitivity: replay with changed durations or machine parameters and report
the makespan gained.

    whatif(trace, machine, [Change("engine", "tensor", 0.5)])   # tensor twice as fast
    sensitivity(trace, machine)                                 # every group 10 % faster

A change scales the durations of a group (an engine, an opcode or a layer; a DMA's set-up and
bytes alike) or sets a machine parameter (hbm_bandwidth, dma_bandwidth, semaphore_latency,
data_latency). Sensitivity makes each engine, each opcode, each layer and the DMA and HBM
bandwidths 10 % faster in turn and ranks them by cycles gained (by default only the
GROUP_LIMIT engines, opcodes and layers with the most busy time each). The trace is read, its graph
derived and its durations worked out once (`tracekit.replay.prepared`), and a change that
needs no timeline builds none.
Where a change moves the makespan against its direction (a faster DMA queue that slows the run
through HBM contention, say), the result says why, with the replays' figures
(`tracekit.analysis.explain`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl

from tracekit import progress
from tracekit.analysis.explain import (
    PathFigures,
    counter_intuitive,
    engine_change,
    path_figures,
    why,
)
from tracekit.analysis.figures import codes, group_sums
from tracekit.errors import TracekitError
from tracekit.replay.graph import Graph
from tracekit.replay.machine import MAX_PARAMETER, MIN_POSITIVE, Machine, engine_kind
from tracekit.replay.prepared import Measure, Prepared
from tracekit.replay.run import Mode, ReplayResult
from tracekit.trace.bundle import Trace
from tracekit.trace.names import shortened
from tracekit.trace.summary import natural_key

GROUPS = ("engine", "opcode", "layer")
GROUP_LIMIT = 50
"""Sensitivity replays at most this many engines, opcodes and layers each by default: those
with the most busy time (a 10 % speed-up of a part that is busy for little time buys at most
10 % of that time). Profiler imports have thousands of names; one replay each would take
minutes."""
PARAMETERS = {"hbm_bandwidth": "hbm_bytes_per_cycle", "dma_bandwidth": "dma_bytes_per_cycle",
              "semaphore_latency": "semaphore_latency", "data_latency": "data_latency"}
SPEEDUP = 0.10


class WhatIfError(TracekitError):
    """A change that names no group or parameter of the trace and machine."""


@dataclass(frozen=True)
class Change:
    """Scale the durations of `group` == `name` by `factor` (0.5: twice as fast)."""

    group: str
    name: str
    factor: float


def parse_scale(text: str) -> Change:
    """'engine=tensor:0.5' -> Change('engine', 'tensor', 0.5)."""
    try:
        group, rest = text.split("=", 1)
        name, factor = rest.rsplit(":", 1)
        change = Change(group.strip(), name.strip(), float(factor))
    except ValueError:
        raise WhatIfError(f"--scale {text!r}: expected GROUP=NAME:FACTOR, such as "
                          f"engine=tensor:0.5 (GROUP is {', '.join(GROUPS)}).") from None
    if change.group not in GROUPS:
        raise WhatIfError(f"--scale {text!r}: group must be one of {', '.join(GROUPS)}.")
    if not MIN_POSITIVE <= change.factor <= MAX_PARAMETER:
        raise WhatIfError(f"--scale {text!r}: the factor must be between {MIN_POSITIVE:g} and "
                          f"{MAX_PARAMETER:g}.")
    return change


def parse_set(text: str) -> tuple[str, float]:
    """'hbm_bandwidth=384' -> ('hbm_bandwidth', 384.0)."""
    try:
        name, value = text.split("=", 1)
        number = float(value)
    except ValueError:
        raise WhatIfError(f"--set {text!r}: expected NAME=VALUE, such as hbm_bandwidth=384.") \
            from None
    if name not in PARAMETERS:
        raise WhatIfError(f"--set {text!r}: NAME must be one of {', '.join(PARAMETERS)}.")
    low = MIN_POSITIVE if name.endswith("bandwidth") else 0.0
    if not low <= number <= MAX_PARAMETER:
        raise WhatIfError(f"--set {text!r}: the value must be between {low:g} and "
                          f"{MAX_PARAMETER:g}.")
    return name, number


def changed_machine(machine: Machine, sets: dict[str, float]) -> Machine:
    fields = {PARAMETERS[k]: v for k, v in sets.items()}
    if "dma_bytes_per_cycle" in fields:  # a new DMA bandwidth applies to every queue
        fields["queue_bytes_per_cycle"] = {}
    return dataclasses.replace(machine, **fields)


def factors(prepared: Prepared, changes: list[Change]) -> np.ndarray | None:
    """The duration factor of each instruction under `changes` (None when there are none):
    the product of the factors of the changes that select it. WhatIfError for a change that
    selects no instruction."""
    if not changes:
        return None
    factor = np.ones(prepared.n)
    try:
        for c in changes:
            factor[selects(prepared.frame, c.group, c.name)] *= c.factor
    except KeyError as exc:
        raise WhatIfError(f"{exc.args[0]}.") from None
    return factor


def selects(frame: pl.DataFrame, group: str, name: str) -> np.ndarray:
    """The rows of `frame` whose `group` column (engine, opcode or layer) is `name`, compared
    on the names' codes (no row's name is copied); KeyError listing the trace's names (the
    first 20, shortened) when there are none."""
    hit = (frame[group] == name).fill_null(False)
    if not hit.any():
        names = sorted(frame[group].unique().drop_nulls().cast(pl.String).to_list(),
                       key=natural_key)
        listed = ", ".join(shortened(n) for n in names[:20]) + (
            f" and {len(names) - 20:,} more" if len(names) > 20 else "")
        raise KeyError(f"no instruction has {group} {shortened(name)!r}; the trace's {group}s "
                       f"are {listed}" if names else f"no instruction has {group} "
                       f"{shortened(name)!r}; the trace has no {group} names")
    return hit.to_numpy()


def faster(changes: list[Change], sets: dict[str, float], machine: Machine) -> bool | None:
    """True when every change speeds a part up (a factor below 1, a higher bandwidth, a lower
    latency), False when every one slows one down, None for a mix or when nothing changes."""
    signs = {c.factor < 1 for c in changes if c.factor != 1}
    for name, value in sets.items():
        if name == "dma_bandwidth":  # replaces every queue's own bandwidth
            current = {machine.dma_bytes_per_cycle, *machine.queue_bytes_per_cycle.values()}
            signs |= {value > c for c in current if c != value}
        elif value != getattr(machine, PARAMETERS[name]):
            current = getattr(machine, PARAMETERS[name])
            signs.add(value > current if name.endswith("bandwidth") else value < current)
    return signs.pop() if len(signs) == 1 else None


def touched(timeline: pl.DataFrame, changes: list[Change], sets: dict[str, float]) -> set[str]:
    """The engines whose instructions the changes act on (a bandwidth: every DMA queue)."""
    engines: set[str] = set()
    for group in {change.group for change in changes}:
        runs_on = engines_of(timeline, group)
        for change in changes:
            if change.group == group:
                engines |= runs_on.get(change.name, set())
    if {"dma_bandwidth", "hbm_bandwidth"} & set(sets):
        engines |= {e for e in codes(timeline["engine"])[1] if engine_kind(e) == "dma"}
    return engines


def engines_of(timeline: pl.DataFrame, group: str) -> dict[str, set[str]]:
    """Each name of `group` (engine, opcode or layer; nulls left out): the engines its
    instructions run on. One pass over the codes of the two columns."""
    code, names = codes(timeline[group])
    engine, engine_names = codes(timeline["engine"])
    known = code >= 0
    pairs = np.flatnonzero(np.bincount(code[known].astype(np.int64) * len(engine_names)
                                       + engine[known],
                                       minlength=len(names) * len(engine_names)))
    out: dict[str, set[str]] = {name: set() for name in names}
    for pair in pairs.tolist():
        out[names[pair // len(engine_names)]].add(engine_names[pair % len(engine_names)])
    return {name: engines for name, engines in out.items() if engines}


def describe(changes: list[Change], sets: dict[str, float]) -> str:
    """The changes in the command line's words: "engine=dma.q0:0.9, hbm_bandwidth=384"."""
    return ", ".join([f"{c.group}={c.name}:{c.factor:g}" for c in changes]
                     + [f"{k}={v:g}" for k, v in sets.items()])


@dataclass(frozen=True)
class WhatIf:
    """The makespan before and after; `engines`: the per-engine figures of both replays
    (`explain.engine_change`); `why`: when the run moved against the changes (faster parts,
    longer run, or the reverse), the sentence that says why with the replays' figures, else
    None."""

    base_makespan: int
    makespan: int
    engines: pl.DataFrame
    why: str | None = None

    @property
    def gained(self) -> int:
        return self.base_makespan - self.makespan

    @property
    def change_pct(self) -> float:
        return (self.makespan - self.base_makespan) / max(self.base_makespan, 1) * 100


def whatif(trace: Trace, machine: Machine, changes: list[Change],
           sets: dict[str, float] | None = None, mode: Mode = Mode.MODEL,
           graph: Graph | None = None) -> WhatIf:
    """The makespan before and after the changes, and why when it moved against them."""
    sets = sets or {}
    prepared = Prepared(trace, machine, mode, graph)
    base = prepared.replay()
    after = prepared.replay(changed_machine(machine, sets), factors(prepared, changes))
    reason = None
    if counter_intuitive(faster(changes, sets, machine), base.makespan, after.makespan):
        reason = why(f"the change ({describe(changes, sets)})", base, after,
                     touched(base.timeline, changes, sets))
    return WhatIf(base_makespan=base.makespan, makespan=after.makespan,
                  engines=engine_change(base.timeline, after.timeline), why=reason)


class _Rows:
    """Sensitivity rows against one base replay: what each change touches (one pass per
    group), the base's HBM contention and its critical path (once, if a row needs it)."""

    def __init__(self, base: ReplayResult, speedup: float) -> None:
        self.base, self.speedup = base, speedup
        self.base_path: PathFigures | None = None
        self.contention = int(base.timeline["contention"].sum())

    def engines(self, group: str) -> dict[str, set[str]]:
        """Each name of `group` (engine, opcode or layer): the engines it runs on."""
        return engines_of(self.base.timeline, group)

    def row(self, group: str, name: str, after: Measure, replayed: Callable[[], ReplayResult],
            touched: set[str]) -> tuple[str, str, int, int, str | None]:
        """The makespan after, the change of HBM contention, and why when the faster part
        made the run longer (only then is the changed run's timeline built, by
        `replayed`)."""
        base = self.base
        contention = after.contention - self.contention
        reason = None
        if counter_intuitive(True, base.makespan, after.makespan):
            if self.base_path is None:
                self.base_path = path_figures(base)
            reason = why(f"{group} {name} {self.speedup * 100:g} % faster", base, replayed(),
                         touched, self.base_path)
        return group, name, after.makespan, contention, reason


@dataclass(frozen=True)
class Sensitivity:
    """The ranking (`table`, see `sensitivity`) and how many engines, opcodes and layers were
    not replayed because `limit` others had more busy time (`skipped`)."""

    table: pl.DataFrame
    skipped: int


def sensitivity(trace: Trace, machine: Machine, mode: Mode = Mode.MODEL,
                speedup: float = SPEEDUP, graph: Graph | None = None,
                limit: int | None = None) -> pl.DataFrame:
    """Each group and bandwidth made `speedup` faster in turn, ranked by what it buys (the
    table of `rank_changes`; by default every group)."""
    return rank_changes(trace, machine, mode, speedup, graph, limit).table


def _busiest(timeline: pl.DataFrame, group: str, names: dict[str, set[str]],
             limit: int | None) -> dict[str, set[str]]:
    """The `limit` names of `group` with the most busy time on `timeline` (ties by name)."""
    if limit is None or len(names) <= limit:
        return names
    code, every = codes(timeline[group])
    known = code >= 0
    span = (timeline["end"] - timeline["start"]).to_numpy()
    busy = (pl.DataFrame({"_name": every, "_busy": group_sums(code[known], span[known],
                                                              len(every))})
            .sort(["_busy", "_name"], descending=[True, False]).head(limit))
    return {name: names[name] for name in busy["_name"]}


def rank_changes(trace: Trace, machine: Machine, mode: Mode = Mode.MODEL,
                 speedup: float = SPEEDUP, graph: Graph | None = None,
                 limit: int | None = GROUP_LIMIT) -> Sensitivity:
    """Each group and bandwidth made `speedup` faster in turn, ranked by what it buys: of each
    group (engine, opcode, layer) the `limit` names with the most busy time (None: every
    name). `graph`: the trace's dependency graph when the caller has derived it already.

    Columns of the table: group (engine, opcode, layer or parameter), name, makespan (cycles
    after the change), gained (cycles), gained_pct (of the base makespan), contention_delta
    (the change of the cycles DMA transfers lose to HBM sharing, summed over the queues), why
    (for a change that makes the run longer, the sentence of `explain.why`; else null). Most
    gained first, ties by group and name.
    """
    prepared = Prepared(trace, machine, mode, graph)
    base = prepared.replay()
    make = _Rows(base, speedup)
    every = {group: make.engines(group) for group in GROUPS}
    groups = {group: _busiest(base.timeline, group, names, limit)
              for group, names in every.items()}
    skipped = sum(len(every[g]) - len(groups[g]) for g in GROUPS)
    parameters = ((("dma_bandwidth", "dma_bytes_per_cycle"),
                   ("hbm_bandwidth", "hbm_bytes_per_cycle")) if mode is Mode.MODEL else ())
    rows = []
    total = sum(len(engines) for engines in groups.values()) + len(parameters)
    with progress.step("replaying each change", total=total) as done:
        for group, engines in groups.items():
            code, names = codes(prepared.frame[group])
            where = {name: i for i, name in enumerate(names)}
            for name in sorted(engines):
                # (Prepared.factors for this one change, on the codes of the group)
                factor = np.where(code == where[name], 1 - speedup, 1.0)
                rows.append(make.row(group, name, prepared.measure(factor=factor),
                                     partial(prepared.replay, factor=factor), engines[name]))
                done.advance()
        for name, field in parameters:
            sets = {name: getattr(machine, field) / (1 - speedup)}
            changed = changed_machine(machine, sets)
            rows.append(make.row("parameter", name, prepared.measure(changed),
                                 partial(prepared.replay, changed),
                                 touched(base.timeline, [], sets)))
            done.advance()
    table = pl.DataFrame(rows, schema={"group": pl.String, "name": pl.String,
                                       "makespan": pl.Int64, "contention_delta": pl.Int64,
                                       "why": pl.String}, orient="row")
    table = (table.with_columns((base.makespan - pl.col("makespan")).alias("gained"))
             .with_columns((pl.col("gained") / max(base.makespan, 1) * 100).alias("gained_pct"))
             .select("group", "name", "makespan", "gained", "gained_pct", "contention_delta",
                     "why")
             .sort(["gained", "group", "name"], descending=[True, False, False]))
    return Sensitivity(table, skipped)
