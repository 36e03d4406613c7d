"""What-if and sensitivity: replay with changed durations or machine parameters and report
the makespan gained.

    whatif(trace, machine, [Change("engine", "tensor", 0.5)])   # tensor twice as fast
    sensitivity(trace, machine)                                 # every group 10 % faster

A change scales the durations of a group (an engine, an opcode or a layer; a DMA's set-up and
bytes alike) or sets a machine parameter (hbm_bandwidth, dma_bandwidth, semaphore_latency,
data_latency). Sensitivity makes each engine, each opcode, each layer and the DMA and HBM
bandwidths 10 % faster in turn and ranks them by cycles gained. The graph is derived once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.replay.graph import Graph, derive
from tracekit.replay.machine import MAX_PARAMETER, MIN_POSITIVE, Machine
from tracekit.replay.run import Mode, replay
from tracekit.trace.bundle import Trace

GROUPS = ("engine", "opcode", "layer")
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


def _scaler(changes: list[Change]):  # type: ignore[no-untyped-def]
    def scale(frame: pl.DataFrame) -> np.ndarray:
        factor = np.ones(frame.height)
        for change in changes:
            hit = (frame[change.group].cast(pl.String) == change.name).fill_null(False)
            if not hit.any():
                raise WhatIfError(f"no instruction has {change.group} {change.name!r}.")
            factor[hit.to_numpy()] *= change.factor
        return factor
    return scale


@dataclass(frozen=True)
class WhatIf:
    base_makespan: int
    makespan: int

    @property
    def gained(self) -> int:
        return self.base_makespan - self.makespan

    @property
    def change_pct(self) -> float:
        return (self.makespan - self.base_makespan) / max(self.base_makespan, 1) * 100


def whatif(trace: Trace, machine: Machine, changes: list[Change],
           sets: dict[str, float] | None = None, mode: Mode = Mode.MODEL,
           graph: Graph | None = None) -> WhatIf:
    """The makespan before and after the changes."""
    graph = graph or derive(trace)
    base = replay(trace, machine, mode, graph=graph).makespan
    after = replay(trace, changed_machine(machine, sets or {}), mode, graph=graph,
                   scale=_scaler(changes) if changes else None).makespan
    return WhatIf(base_makespan=base, makespan=after)


def sensitivity(trace: Trace, machine: Machine, mode: Mode = Mode.MODEL,
                speedup: float = SPEEDUP, graph: Graph | None = None) -> pl.DataFrame:
    """Each group and bandwidth made `speedup` faster in turn, ranked by what it buys.
    `graph`: the trace's dependency graph when the caller has derived it already.

    Columns: group (engine, opcode, layer or parameter), name, makespan (cycles after the
    change), gained (cycles), gained_pct (of the base makespan). Most gained first, ties by
    group and name.
    """
    graph = derive(trace) if graph is None else graph
    base = replay(trace, machine, mode, graph=graph)
    rows = []
    for group in GROUPS:
        for name in sorted(base.timeline[group].cast(pl.String).drop_nulls().unique().to_list()):
            after = replay(trace, machine, mode, graph=graph,
                           scale=_scaler([Change(group, name, 1 - speedup)])).makespan
            rows.append((group, name, after))
    if mode is Mode.MODEL:
        for name, field in (("dma_bandwidth", "dma_bytes_per_cycle"),
                            ("hbm_bandwidth", "hbm_bytes_per_cycle")):
            faster = getattr(machine, field) / (1 - speedup)
            after = replay(trace, changed_machine(machine, {name: faster}), mode,
                           graph=graph).makespan
            rows.append(("parameter", name, after))
    table = pl.DataFrame(rows, schema={"group": pl.String, "name": pl.String,
                                       "makespan": pl.Int64}, orient="row")
    return (table.with_columns((base.makespan - pl.col("makespan")).alias("gained"))
            .with_columns((pl.col("gained") / max(base.makespan, 1) * 100).alias("gained_pct"))
            .sort(["gained", "group", "name"], descending=[True, False, False]))
