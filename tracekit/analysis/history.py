"""Questions put to a nightly history: what moved between a regressed workload's run and its
baseline run.

When a suite's mlp takes the slow-queue fault in its second run, its makespan goes from 18,149
to 35,513 cycles (+17,364), and `explain` says where those cycles went along the two critical
paths: dma.q2 +24,055, dma.q0 -4,528, ... (the parts add up to the +17,364), layers fc1
+9,331 and fc2 +8,033, and the finding the second run has that the first had not:
slow-engine (a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from tracekit.analysis.nightly import NightlyRun, Status

# --- what moved against the baseline -------------------------------------------------------------

_PATH_SCHEMA = {"group": pl.String, "cycles": pl.Int64}
_FINDING_SCHEMA = {"code": pl.String, "severity": pl.String, "message": pl.String}


@dataclass(frozen=True)
class Explanation:
    """What moved between a workload's baseline run and this run.

    `engines`, `layers`: the makespan change split along the two runs' critical paths, as
    `diff.attribution` splits it: engine (or layer), base and cand cycles on the path, delta
    (cycles), share_pct (of the change); they add up to the change. Largest change first;
    empty when the two makespans cannot be compared (a run with no makespan, or an older one
    in another unit) and, for layers, when a run was recorded before layers were.
    `new_findings`: code, severity, count of this run's findings the baseline run did not
    have (the same code and message, numbers masked, as `tracekit diff` matches them; diff
    also matches the instructions, which the history does not keep); errors first, then
    warnings and infos, each by code.
    """

    workload: str
    baseline_run: str
    base_makespan: int | None
    makespan: int | None
    engines: pl.DataFrame
    layers: pl.DataFrame
    new_findings: pl.DataFrame

    @property
    def delta(self) -> int | None:
        """The makespan change (cycles) the attribution splits, None when there is none."""
        if self.engines.height == 0 or self.base_makespan is None or self.makespan is None:
            return None
        return self.makespan - self.base_makespan


def explain_row(row: dict[str, Any], base: dict[str, Any]) -> Explanation:
    """`row` against `base`, both history rows (HISTORY_SCHEMA) of one workload; the
    makespans are compared only when the nightly comparison did (row's delta_pct is set)."""
    from tracekit.analysis.diff import attribution, masked_message
    from tracekit.analysis.signatures import Severity

    comparable = (row["delta_pct"] is not None and row["makespan"] is not None
                  and base["makespan"] is not None)
    total = row["makespan"] - base["makespan"] if comparable else 0

    def split(column: str, key: str) -> pl.DataFrame:
        sides = [pl.DataFrame(r[column] or [], schema=_PATH_SCHEMA).rename({"group": key})
                 for r in (base, row)]
        out = attribution(key, *sides, total)
        recorded = base[column] is not None and row[column] is not None
        return out if comparable and recorded else out.clear()

    now = pl.DataFrame(row["findings"] or [], schema=_FINDING_SCHEMA)
    before = pl.DataFrame(base["findings"] or [], schema=_FINDING_SCHEMA)
    identity = pl.concat_str([pl.col("code"), masked_message()], separator="|")
    rank = {s.value: -s.rank for s in Severity}
    new = (now.filter(~identity.is_in(before.select(identity.alias("key"))["key"].implode()))
           .group_by("code", "severity").agg(pl.len().cast(pl.Int64).alias("count"))
           .sort(pl.col("severity").replace_strict(rank, default=1), "code")
           .select("code", "severity", "count"))
    return Explanation(workload=row["workload"], baseline_run=base["run_id"],
                       base_makespan=base["makespan"], makespan=row["makespan"],
                       engines=split("critical_path", "engine"),
                       layers=split("critical_path_layers", "layer"), new_findings=new)


def explain(run: NightlyRun) -> dict[str, Explanation]:
    """Every regressed workload of `run` that has a baseline run, by workload name."""
    out = {}
    for row in run.rows.filter((pl.col("status") == Status.REGRESSION.value)
                               & pl.col("baseline_run").is_not_null()).iter_rows(named=True):
        base = run.before.filter((pl.col("suite") == row["suite"])
                                 & (pl.col("workload") == row["workload"])
                                 & (pl.col("run_id") == row["baseline_run"]))
        out[row["workload"]] = explain_row(row, base.row(0, named=True))
    return out
