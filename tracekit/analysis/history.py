"""Questions put to a nightly history: what moved between a regressed workload's run and its
baseline run, which runs the history holds, and one workload's figures run by run.

A history of two runs of a suite whose mlp took the slow-queue fault in the second lists as

    run_id  started              suite  workloads  passed  regressions  errors
    r1      2026-03-01 02:00:00  t      2          2       0            0
    r2      2026-03-02 02:00:00  t      2          1       1            0

mlp's trend reads makespan 18,149 in r1 and 35,513 in r2 (+17,364 cycles, +95.67 % against
the run before), and `explain` says where those cycles went along the two critical paths:
dma.q2 +24,055, dma.q0 -4,528, ... (the parts add up to the +17,364), layers fc1 +9,331 and
fc2 +8,033, and the finding r2 has that r1 had not: slow-engine (a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tracekit.analysis.nightly import RESULTS, NightlyRun, Status, SuiteError, read_history


class HistoryError(SuiteError):
    """A folder that is not a nightly history, or a question it holds no answer to."""


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


# --- the runs a history holds --------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """A history folder and every row of its runs (HISTORY_SCHEMA)."""

    folder: Path
    rows: pl.DataFrame


def open_history(folder: Path) -> History:
    """The history in `folder`; HistoryError when there is none."""
    fix = ("Give the folder `tracekit nightly` writes its runs to (its --history, else the "
           "suite's history key, else ./tracekit-history).")
    if not folder.exists():
        raise HistoryError(f"{folder}: no such folder. {fix}")
    if not folder.is_dir():
        raise HistoryError(f"{folder}: is a file, not a history folder. {fix}")
    rows = read_history(folder)
    if rows.height == 0:
        raise HistoryError(f"{folder}: not a nightly history: it holds no run "
                           f"({RESULTS}). {fix}")
    return History(folder=folder, rows=rows)


def _of_suite(history: History, suite: str | None) -> pl.DataFrame:
    if suite is None:
        return history.rows
    mine = history.rows.filter(pl.col("suite") == suite)
    if mine.height == 0:
        known = ", ".join(sorted(set(history.rows["suite"].to_list())))
        raise HistoryError(f"{history.folder}: no run of suite {suite!r}; the suites there "
                           f"are {known}. Pass one of them to --suite.")
    return mine


def runs(history: History, suite: str | None = None) -> pl.DataFrame:
    """One row per run (of `suite`, when given), oldest first: run_id, date, started (UTC,
    ISO 8601), suite, workloads, then passed, regressions and errors (workloads by status)."""
    def count(status: Status) -> pl.Expr:
        return (pl.col("status") == status.value).sum().cast(pl.Int64)

    return (_of_suite(history, suite).group_by("run_id")
            .agg(pl.col("date").first(), pl.col("started").first(), pl.col("suite").first(),
                 pl.len().cast(pl.Int64).alias("workloads"),
                 count(Status.PASS).alias("passed"), count(Status.REGRESSION).alias("regressions"),
                 count(Status.ERROR).alias("errors"))
            .sort("started", "run_id"))


def workload_trend(history: History, workload: str, suite: str | None = None) -> pl.DataFrame:
    """`workload`'s rows (of `suite`, when given), oldest first: run_id, started, suite,
    status, makespan (cycles), change and change_pct (against the workload's run before in
    the same suite: null when either has no makespan, one's makespan is not known to be in
    cycles, or its trace held another workload), delta_pct (against the baseline run, as
    nightly compared them) and baseline_run, replay_makespan, stall_cycles, instructions,
    errors and warnings (findings by severity), trace and trace_sha256."""
    rows = _of_suite(history, suite)
    mine = rows.filter(pl.col("workload") == workload).sort("started", "run_id")
    if mine.height == 0:
        known = ", ".join(sorted(set(rows["workload"].to_list())))
        where = f" of suite {suite!r}" if suite else ""
        raise HistoryError(f"{history.folder}: no run{where} has workload {workload!r}; the "
                           f"workloads there are {known}. Pass one of them to --workload.")
    # A makespan is in cycles unless an older row kept an observed one in the trace's unit.
    cycles = ((pl.col("makespan_unit") == "cycles") | (pl.col("timeline") != "observed")
              | (pl.col("time_unit") == "cycles")).fill_null(False)
    before = pl.col("makespan").shift(1).over("suite")
    same = (cycles & cycles.shift(1).over("suite")
            & (pl.col("workload_name") == pl.col("workload_name").shift(1).over("suite")))
    change = pl.when(same.fill_null(False)).then(pl.col("makespan") - before)
    return (mine.with_columns(change.alias("change"))
            .with_columns(pl.when(before > 0).then(100.0 * pl.col("change") / before)
                          .alias("change_pct"))
            .select("run_id", "started", "suite", "status", "makespan", "change", "change_pct",
                    "delta_pct", "baseline_run", "replay_makespan", "stall_cycles",
                    "instructions", "errors", "warnings", "trace", "trace_sha256"))
