"""The nightly suite: every workload of a suite file replayed, analysed and checked for bug
signatures in parallel (local processes, or a Dask cluster through the same executor
interface), the results appended to a partitioned Parquet history, and each workload compared
with its baseline.

A suite of two workloads whose second run finds gemm 6% slower than its last passing run
(threshold 2%) gives

    workload  status      makespan    baseline   change
    gemm      regression  2,814,181   2,654,888  +6.00%
    mlp       pass        1,317,979   1,317,979  +0.00%

and the run exits 3. The history is one Parquet file per run,
`HISTORY/date=YYYY-MM-DD/run=RUN_ID/results.parquet` (hive-partitioned), written to a
temporary folder and renamed into place only when the run completes, so an interrupted run
leaves the history as it was.
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from tracekit.errors import TracekitError, first_line
from tracekit.progress import step
from tracekit.tomlfiles import read_toml
from tracekit.trace.bundle import clean_leftovers, leftover_name

LAST_PASS = "last-pass"
"""Baseline policy: the workload's most recent earlier run that passed."""


class SuiteError(TracekitError):
    """A suite file that cannot be read or breaks the format, or a history that cannot be
    used as asked."""


class Status(StrEnum):
    PASS = "pass"
    REGRESSION = "regression"
    ERROR = "error"


@dataclass(frozen=True)
class Workload:
    name: str
    trace: Path
    threshold_pct: float
    baseline: str


@dataclass(frozen=True)
class Suite:
    """A suite file's contents; paths resolved against the file's folder."""

    name: str
    path: Path
    machine: str | None
    threshold_pct: float
    baseline: str
    trend_runs: int
    history: Path | None
    workloads: tuple[Workload, ...]


SUITE_KEYS = {"name", "machine", "threshold_pct", "baseline", "trend_runs", "history",
              "workloads"}
WORKLOAD_KEYS = {"name", "trace", "threshold_pct", "baseline"}


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Read a suite TOML file (its format: `tracekit nightly --help`)."""
    path = Path(path)
    data = read_toml(path, "suite", SuiteError)
    # Absolute, so that the history records where each trace was and a worker elsewhere (a
    # Dask cluster) is not left to resolve a path against its own folder.
    where = path.absolute().parent

    def bad(key: str, why: str) -> SuiteError:
        return SuiteError(f"{path}: {key} {why}")

    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise bad(", ".join(unknown), f"is not a suite key; the keys are "
                                      f"{', '.join(sorted(SUITE_KEYS))}.")

    def number(table: dict[str, Any], key: str, default: float, label: str) -> float:
        value = table.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < 0):
            raise bad(label, f"must be a finite number >= 0, not {value!r}.")
        return float(value)

    def text(table: dict[str, Any], key: str, default: str | None, label: str) -> str | None:
        value = table.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise bad(label, f"must be a non-empty string, not {value!r}.")
        return value

    suite_name = text(data, "name", path.stem, "name") or path.stem
    threshold = number(data, "threshold_pct", 2.0, "threshold_pct")
    baseline = text(data, "baseline", LAST_PASS, "baseline") or LAST_PASS
    trend = number(data, "trend_runs", 7, "trend_runs")
    if trend < 1 or trend != int(trend):
        raise bad("trend_runs", f"must be a whole number >= 1, not {data['trend_runs']!r}.")
    machine = text(data, "machine", None, "machine")
    if machine is not None and (where / machine).exists():
        machine = str(where / machine)
    history = text(data, "history", None, "history")
    entries = data.get("workloads")
    if not isinstance(entries, list) or not entries:
        raise bad("workloads", "must list at least one workload: [[workloads]] tables with "
                               "a trace = \"PATH or GLOB\".")
    workloads: list[Workload] = []
    for i, entry in enumerate(entries):
        label = f"workloads[{i}]"
        if not isinstance(entry, dict):
            raise bad(label, "must be a table with trace = \"PATH or GLOB\".")
        extra = sorted(set(entry) - WORKLOAD_KEYS)
        if extra:
            raise bad(f"{label}.{extra[0]}", f"is not a workload key; the keys are "
                                             f"{', '.join(sorted(WORKLOAD_KEYS))}.")
        pattern = text(entry, "trace", None, f"{label}.trace")
        if pattern is None:
            raise bad(f"{label}.trace", "is missing: the path (or glob) of the trace bundle.")
        w_threshold = number(entry, "threshold_pct", threshold, f"{label}.threshold_pct")
        w_baseline = text(entry, "baseline", baseline, f"{label}.baseline") or baseline
        name = text(entry, "name", None, f"{label}.name")
        full = os.path.normpath(where / pattern)
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(full) if Path(p).is_dir())
            if not matches:
                raise bad(f"{label}.trace", f"{pattern!r} matches no folder under {where}.")
            workloads += [Workload(f"{name}/{m.name}" if name else m.name, m, w_threshold,
                                   w_baseline) for m in matches]
        else:
            # A missing or broken trace is that workload's error at run time, not the suite's.
            workloads.append(Workload(name or Path(pattern).name, Path(full), w_threshold,
                                      w_baseline))
    names = [w.name for w in workloads]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise bad("workloads", f"name {dupes[0]!r} more than once: give each a distinct "
                               f"name = \"...\".")
    return Suite(name=suite_name, path=path, machine=machine,
                 threshold_pct=threshold, baseline=baseline, trend_runs=int(trend),
                 history=(where / history) if history else None, workloads=tuple(workloads))


# --- one workload's job (runs in a worker process) ----------------------------------------------


def run_workload(name: str, trace: str, machine: str | None) -> dict[str, Any]:
    """Replay (model mode), analyse (observed timeline when timed, else the replay) and look
    for bug signatures. Plain values only, so any executor can ship the result. A trace that
    cannot be read gives "error" with the message; one whose run cannot finish (a deadlock or
    a cycle) gives "stuck" with the replay's report, and its findings. Nothing is raised."""
    try:
        return {"workload": name, "trace": trace, "error": None, "stuck": None,
                **_measure(trace, machine)}
    except TracekitError as exc:
        return {"workload": name, "trace": trace, "error": str(exc), "stuck": None}
    except Exception as exc:  # noqa: BLE001 - one workload's bug must not stop the others
        return {"workload": name, "trace": trace, "stuck": None,
                "error": f"internal error: {type(exc).__name__}: {exc}"}


def _measure(trace_path: str, machine_spec: str | None) -> dict[str, Any]:
    from tracekit.analysis.critical_path import critical_path
    from tracekit.analysis.timelines import choose_source
    from tracekit.analysis.signatures import find_bugs
    from tracekit.analysis.stalls import stall_table
    from tracekit.analysis.timelines import timeline
    from tracekit.replay.machine import resolve_machine
    from tracekit.replay.run import ReplayStuck, replay
    from tracekit.trace.bundle import file_sha256, open_trace
    from tracekit.trace.validate import require_valid
    from tracekit.trace.schema import MANIFEST_FILE

    # Refused with its findings, as every command refuses an invalid bundle; the check
    # includes each table's sha256 against the manifest.
    require_valid(trace_path)
    trace = open_trace(trace_path, verify=False)
    sha256 = file_sha256(trace.path / MANIFEST_FILE)
    machine = resolve_machine(machine_spec)
    try:
        predicted = replay(trace, machine)
    except ReplayStuck as exc:
        return {"workload_name": trace.manifest.workload, "trace_sha256": sha256,
                "stuck": str(exc),
                "instructions": trace.manifest.tables["instructions"].rows,
                "findings": [{"code": f.code.value, "severity": f.severity.value,
                              "message": f.message}
                             for f in find_bugs(trace, machine, stuck=exc)]}
    source = choose_source(trace)
    line = timeline(trace, machine, source, predicted)  # replayed: the replay above
    path = critical_path(line.frame, line.graph, line.kind_latency)
    stalls = stall_table(line.frame)
    # The timeline's graph and the replay above, not a second derive and replay.
    findings = find_bugs(trace, machine, line.graph, replayed=predicted)
    busy = (stalls.filter(pl.col("bucket") == "busy").group_by("engine", maintain_order=True)
            .agg(pl.col("pct").sum()))
    waiting = int(stalls.filter(pl.col("bucket") == "waiting")["cycles"].sum())
    return {
        "workload_name": trace.manifest.workload,
        "trace_sha256": sha256,
        "timeline": source.value,
        "time_unit": trace.manifest.time_unit.value,
        "makespan_unit": "cycles",
        "instructions": trace.manifest.tables["instructions"].rows,
        "makespan": path.makespan,
        "replay_makespan": int(predicted.makespan),
        "stall_cycles": waiting,
        "engines": [{"engine": e, "busy_pct": round(p, 3)} for e, p in busy.iter_rows()],
        "critical_path": [{"group": g, "cycles": int(c)} for g, c, _ in
                          path.by_engine.iter_rows()],
        "critical_path_layers": [{"group": g, "cycles": int(c)} for g, c, _ in
                                 path.by_layer.iter_rows()],
        "findings": [{"code": f.code.value, "severity": f.severity.value,
                      "message": f.message} for f in findings],
    }


# --- executors ----------------------------------------------------------------------------------


@contextmanager
def executor(scheduler: str | None, workers: int | None) -> Iterator[cf.Executor]:
    """Local worker processes, or the Dask cluster at `scheduler` (tcp://HOST:PORT) through
    its concurrent.futures interface: the caller's code path is the same for both."""
    if scheduler is None:
        count = workers or min(os.cpu_count() or 1, 8)
        # spawn, not fork: polars' and numba's threads do not survive a fork.
        with cf.ProcessPoolExecutor(max_workers=count,
                                    mp_context=multiprocessing.get_context("spawn"),
                                    initializer=die_with_parent,
                                    initargs=(os.getpid(),)) as pool:
            yield pool
        return
    try:
        from distributed import Client
    except ImportError:
        raise SuiteError("--scheduler needs Dask's distributed package: "
                         "pip install 'tracekit[dask]'.") from None
    _reachable(scheduler)
    try:
        client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SuiteError(f"cannot reach the Dask scheduler at {scheduler}: {exc}. Check the "
                         f"address (tcp://HOST:PORT) and that the scheduler is running.") \
            from None
    # A lost scheduler is reported once, as the run's error (run_all); distributed's own
    # logging of it would print tracebacks.
    quiet = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with client.get_executor(pure=False) as pool:
            pool.scheduler = scheduler  # type: ignore[attr-defined]
            yield pool
    finally:
        try:
            client.close(timeout=5)
        except (OSError, TimeoutError, cf.CancelledError):
            pass  # the scheduler is gone already
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def die_with_parent(parent: int) -> None:
    """In a worker process: exit as soon as the process that started it is gone (killed with
    kill -9, say), so that no worker outlives its nightly run. Linux's parent-death signal
    where there is one, and a thread watching the parent's id everywhere."""
    import threading
    import time

    if sys.platform == "linux":
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (AttributeError, OSError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="tracekit-parent-watch", daemon=True).start()


def _reachable(scheduler: str) -> None:
    """Fail fast on a tcp:// address nothing listens on (the client would retry for its
    whole timeout)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(scheduler)
    if parts.scheme != "tcp":
        return
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 8786), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise SuiteError(f"cannot reach the Dask scheduler at {scheduler}: {exc}. Check the "
                         f"address (tcp://HOST:PORT) and that the scheduler is running.") \
            from None


def run_all(suite: Suite, pool: cf.Executor,
            progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every workload's job on `pool`, results in suite order. A job whose worker dies is
    that workload's error."""
    futures = [pool.submit(run_workload, w.name, str(w.trace), suite.machine)
               for w in suite.workloads]
    results = []
    with step(f"running {len(futures)} workload(s)", total=len(futures)) as done:
        for w, future in zip(suite.workloads, futures, strict=True):
            try:
                results.append(_result(w, future, suite.machine,
                                       getattr(pool, "scheduler", None)))
            except InfrastructureError:
                for pending in futures:
                    pending.cancel()
                raise
            done.advance()
            if progress:
                progress(w.name)
    return results


class InfrastructureError(SuiteError):
    """The cluster the suite ran on failed (its scheduler was lost): not any workload's
    fault, so the run is aborted and nothing is written to the history."""


def _result(w: Workload, future: cf.Future[dict[str, Any]], machine: str | None,
            scheduler: str | None = None) -> dict[str, Any]:
    """A workload's job's result, or its error. (The job itself never raises: an exception
    here is the executor's.)"""
    try:
        return future.result()
    except cf.process.BrokenProcessPool:
        # One worker died (the OOM killer, say) and took the pool with it: run this
        # workload again alone, so only the one that kills its worker is an error.
        return _alone(w, machine)
    except Exception as exc:  # noqa: BLE001 - a lost worker is one workload's failure
        if scheduler is not None and type(exc).__name__ != "KilledWorker":
            # The scheduler (or the connection to it) was lost: every pending job fails so,
            # whichever workload it was running.
            raise InfrastructureError(
                f"lost the Dask scheduler at {scheduler} while running workload {w.name} "
                f"({type(exc).__name__}: {first_line(exc)}); the run was aborted and nothing "
                f"was written to the history. Check the cluster and run nightly again.") \
                from None
        return {"workload": w.name, "trace": str(w.trace), "stuck": None,
                "error": f"worker failed: {type(exc).__name__}: {exc}"}


def _alone(w: Workload, machine: str | None) -> dict[str, Any]:
    with cf.ProcessPoolExecutor(max_workers=1,
                                mp_context=multiprocessing.get_context("spawn"),
                                initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        try:
            return pool.submit(run_workload, w.name, str(w.trace), machine).result()
        except Exception as exc:  # noqa: BLE001 - it died again: this workload's failure
            return {"workload": w.name, "trace": str(w.trace), "stuck": None,
                    "error": f"worker failed: {type(exc).__name__}: {exc}"}


# --- history ------------------------------------------------------------------------------------

HISTORY_SCHEMA = {
    "run_id": pl.String, "date": pl.String, "started": pl.String, "suite": pl.String,
    "workload": pl.String,
    "trace": pl.String, "trace_sha256": pl.String, "status": pl.String, "error": pl.String,
    "workload_name": pl.String,
    "timeline": pl.String, "time_unit": pl.String, "makespan_unit": pl.String,
    "instructions": pl.Int64, "makespan": pl.Int64,
    "replay_makespan": pl.Int64, "stall_cycles": pl.Int64,
    "engines": pl.List(pl.Struct({"engine": pl.String, "busy_pct": pl.Float64})),
    "critical_path": pl.List(pl.Struct({"group": pl.String, "cycles": pl.Int64})),
    "critical_path_layers": pl.List(pl.Struct({"group": pl.String, "cycles": pl.Int64})),
    "findings": pl.List(pl.Struct({"code": pl.String, "severity": pl.String,
                                   "message": pl.String})),
    "errors": pl.Int64, "warnings": pl.Int64, "stuck": pl.String, "baseline_run": pl.String,
    "baseline_makespan": pl.Int64, "delta_pct": pl.Float64, "threshold_pct": pl.Float64,
    "new_error_codes": pl.List(pl.String),
}
"""One row per workload per run. started: the run's UTC start (ISO 8601), which orders runs;
trace: the bundle's path, absolute (older rows hold it as the suite file resolved it, relative
to the folder nightly ran in when the suite file was given by a relative path);
trace_sha256: the sha256 of the bundle's manifest.json bytes (`sha256sum TRACE/manifest.json`),
which record every table file's sha256 (checked when the trace is opened), the clock and the
time unit, so it names the bundle's content and finds an archived copy again (null when the
trace could not be opened, and in rows written before it was recorded);
time_unit: of the trace's times; makespan: cycles of the analysed timeline (observed when the
trace is timed), makespan_unit "cycles" (null in rows written before observed times were
converted to cycles, when an observed makespan was in the trace's own unit);
replay_makespan: the model's prediction; stall_cycles: waiting cycles summed over engines;
critical_path, critical_path_layers: the critical path's cycles by engine and by layer (group,
cycles, the gaps as "(edge latency)" and "(unexplained gap)"; each sums to the makespan; the
layers null in rows written before they were recorded); errors, warnings: findings by
severity; delta_pct: makespan change against the baseline run; new_error_codes:
error-severity codes the baseline did not have; stuck: the replay's report when the run cannot
finish (no makespan then)."""


RESULTS = "date=*/run=*/results.parquet"
"""Each run's rows in a history folder (a glob)."""


QUARANTINE = "quarantine"
"""The history's subfolder where nightly moves a run whose results file it cannot read."""


def read_history(history: Path, quarantine: list[str] | None = None) -> pl.DataFrame:
    """Every completed run in `history` (empty with the schema when there is none). A results
    file that cannot be read is a SuiteError naming it; with `quarantine` (a list the messages
    are added to) its run folder is moved to HISTORY/quarantine/ instead and the others are
    read."""
    files = sorted(history.glob(RESULTS))
    if not files:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    frames = []
    for f in files:
        try:
            frame = pl.read_parquet(f)
            if not {"run_id", "suite", "workload"} <= set(frame.columns):
                raise ValueError("it has no run_id, suite and workload columns")
            # Columns added since the file was written read as null.
            frame = frame.with_columns([pl.lit(None, dtype).alias(name)
                                        for name, dtype in HISTORY_SCHEMA.items()
                                        if name not in frame.columns])
            frames.append(frame.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA))
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            if quarantine is None:
                raise SuiteError(f"{f}: not a results file of a tracekit nightly run "
                                 f"({first_line(exc)}); move that run folder out of the "
                                 f"history.") from None
            quarantine.append(_quarantine(history, f, first_line(exc)))
    return pl.concat(frames) if frames else pl.DataFrame(schema=HISTORY_SCHEMA)


def _quarantine(history: Path, results: Path, why: str) -> str:
    """Move the run folder of an unreadable results file to HISTORY/quarantine/; the message
    saying so."""
    run_folder = results.parent
    place = history / QUARANTINE / run_folder.parent.name / run_folder.name
    if place.exists():
        place = place.with_name(f"{place.name}.{uuid.uuid4().hex[:8]}")
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        run_folder.rename(place)
    except OSError as exc:
        raise SuiteError(f"{results}: not a results file of a tracekit nightly run ({why}), "
                         f"and it cannot be moved to {place.parent} ({exc.strerror}); move "
                         f"that run folder out of the history.") from None
    return (f"{results}: not a results file of a tracekit nightly run ({why}); its run folder "
            f"was moved to {place} and the run goes on without it.")


def check_writable(folder: Path, what: str) -> None:
    """SuiteError, before any work, when `folder` (or, if it does not exist yet, the folder
    it would be made in) cannot be written."""
    place = folder
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise SuiteError(f"{folder}: {place} is a file; {what} needs a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tracekit-probe-", dir=place)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SuiteError(f"{folder}: cannot write the {what} there ({exc.strerror}); nothing "
                         f"was run. Make {place} writable, or give another folder.") from None


STAGING = "run"
"""Name of the hidden staging folders of runs being written (.run.tmp-PID-UUID)."""


def write_run(history: Path, run: pl.DataFrame) -> Path:
    """Add one run's rows to the history atomically: written in a temporary folder beside the
    partitions, then renamed into place."""
    run_id, date = run["run_id"][0], run["date"][0]
    final = history / f"date={date}" / f"run={run_id}"
    if final.exists():
        raise SuiteError(f"{final}: run {run_id} is already in the history; give another "
                         f"--run-id.")
    history.mkdir(parents=True, exist_ok=True)
    # The staging folders of runs that were killed while writing are removed first.
    clean_leftovers(history / STAGING)
    staging = leftover_name(history / STAGING, "tmp")
    staging.mkdir()
    made_parent = not final.parent.exists()
    try:
        run.write_parquet(staging / "results.parquet")
        final.parent.mkdir(exist_ok=True)
        os.replace(staging, final)
    except BaseException:
        if made_parent and final.parent.exists() and not any(final.parent.iterdir()):
            final.parent.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# --- comparison ---------------------------------------------------------------------------------


@dataclass
class NightlyRun:
    """A completed run: its rows (HISTORY_SCHEMA) and the history before it."""

    suite: Suite
    rows: pl.DataFrame
    before: pl.DataFrame
    history: Path
    saved: Path | None = None
    reports: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What nightly did on its own (a corrupt results file quarantined)."""

    @property
    def regressions(self) -> int:
        return self.rows.filter(pl.col("status") == Status.REGRESSION.value).height

    @property
    def errors(self) -> int:
        return self.rows.filter(pl.col("status") == Status.ERROR.value).height


def _baseline(before: pl.DataFrame, suite: str, workload: str, workload_name: str | None,
              policy: str) -> dict[str, Any] | None:
    """The run to compare with: of the same suite and workload, and of the same traced
    workload (the manifest's name: a trace path now holding another kernel has no
    baseline)."""
    mine = before.filter((pl.col("suite") == suite) & (pl.col("workload") == workload)
                         & (pl.col("workload_name") == workload_name))
    if policy == LAST_PASS:
        mine = mine.filter(pl.col("status") == Status.PASS.value)
    else:
        mine = mine.filter(pl.col("run_id") == policy)
    if mine.height == 0:
        return None
    return mine.sort("started", "run_id").row(-1, named=True)


def _same_unit(base: dict[str, Any], result: dict[str, Any]) -> bool:
    """Whether the baseline's makespan is in cycles like the result's. A row from before
    makespans were converted (no makespan_unit) held the trace's own unit when its timeline
    was observed: cycles only for a trace timed in cycles (taken to be this one's unit)."""
    return (base["makespan_unit"] == "cycles" or base["timeline"] != "observed"
            or result.get("time_unit") == "cycles")


def compare(suite: Suite, results: list[dict[str, Any]], before: pl.DataFrame, run_id: str,
            date: str, started: str) -> pl.DataFrame:
    """Each result with its baseline and status, as history rows."""
    check_baselines(suite, before)
    rows = []
    for w, r in zip(suite.workloads, results, strict=True):
        row: dict[str, Any] = {key: None for key in HISTORY_SCHEMA}
        row.update({k: v for k, v in r.items() if k in HISTORY_SCHEMA})
        row.update(run_id=run_id, date=date, started=started, suite=suite.name,
                   threshold_pct=w.threshold_pct, new_error_codes=[])
        if r["error"] is not None:
            row["status"] = Status.ERROR.value
            rows.append(row)
            continue
        severities = [f["severity"] for f in r["findings"]]
        row.update(errors=severities.count("error"), warnings=severities.count("warning"))
        # A run that cannot finish is a regression whatever the baseline says.
        status = Status.REGRESSION if r["stuck"] else Status.PASS
        base = _baseline(before, suite.name, w.name, r["workload_name"], w.baseline)
        if base is not None:
            row.update(baseline_run=base["run_id"], baseline_makespan=base["makespan"])
            if base["makespan"] and r.get("makespan") is not None and _same_unit(base, r):
                row["delta_pct"] = 100.0 * (r["makespan"] - base["makespan"]) / base["makespan"]
            old = {f["code"] for f in base["findings"] or [] if f["severity"] == "error"}
            new = sorted({f["code"] for f in r["findings"] if f["severity"] == "error"} - old)
            row["new_error_codes"] = new
            if (row["delta_pct"] or 0.0) > w.threshold_pct or new:
                status = Status.REGRESSION
        row["status"] = status.value
        rows.append(row)
    return pl.DataFrame(rows, schema=HISTORY_SCHEMA)


def check_baselines(suite: Suite, before: pl.DataFrame) -> None:
    """Every pinned baseline names a run of this suite in the history."""
    runs = set(before.filter(pl.col("suite") == suite.name)["run_id"].to_list())
    for policy in sorted({w.baseline for w in suite.workloads} - {LAST_PASS}):
        if policy not in runs:
            raise SuiteError(f"{suite.path}: baseline = {policy!r} names no run of suite "
                             f"{suite.name!r} in the history; use a run id listed there or "
                             f"\"{LAST_PASS}\".")


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Run ids: folder-name safe, at most 64 characters."""
RESERVED_RUN_IDS = {"workload"}
"""Names the trend table uses for its own columns."""


def check_run_id(run_id: str) -> None:
    if not RUN_ID.fullmatch(run_id) or run_id in RESERVED_RUN_IDS:
        raise SuiteError(f"--run-id {run_id!r}: use 1 to 64 ASCII letters, digits, '.', '_' "
                         f"and '-', starting with a letter or digit (and not "
                         f"{', '.join(sorted(RESERVED_RUN_IDS))}).")


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def nightly(suite: Suite, history: Path, *, scheduler: str | None = None,
            workers: int | None = None, run_id: str | None = None, date: str | None = None,
            pool: cf.Executor | None = None,
            progress: Callable[[str], None] | None = None) -> NightlyRun:
    """Run the suite, compare with the history and append this run to it. The jobs run on
    `pool` when one is given, else on `executor(scheduler, workers)`."""
    from tracekit.replay.machine import resolve_machine

    now = datetime.now(UTC)
    run_id = run_id or new_run_id(now)
    check_run_id(run_id)
    date = date or now.strftime("%Y-%m-%d")
    if history.exists() and not history.is_dir():
        raise SuiteError(f"{history}: is a file; --history needs a folder (new or one that "
                         f"holds earlier runs).")
    check_writable(history, "history")
    notes: list[str] = []
    before = read_history(history, quarantine=notes)
    if before.filter(pl.col("run_id") == run_id).height:
        raise SuiteError(f"{history}: run {run_id} is already in the history; give another "
                         f"--run-id.")
    check_baselines(suite, before)
    # The suite's machine is everyone's: a bad one is the suite's error, found before any work.
    try:
        resolve_machine(suite.machine)
    except TracekitError as exc:
        raise SuiteError(f"{suite.path}: machine = {suite.machine!r}: {exc}") from None
    if pool is not None:
        results = run_all(suite, pool, progress)
    else:
        with executor(scheduler, workers) as own:
            results = run_all(suite, own, progress)
    rows = compare(suite, results, before, run_id, date, now.isoformat())
    run = NightlyRun(suite=suite, rows=rows, before=before, history=history, notes=notes)
    run.saved = write_run(history, rows)
    return run


# --- reports ------------------------------------------------------------------------------------


def trend(run: NightlyRun) -> pl.DataFrame:
    """Makespan per workload (rows) over the last `trend_runs` runs (columns, oldest first;
    "-" where a workload has no result)."""
    every = pl.concat([run.before.filter(pl.col("suite") == run.suite.name), run.rows])
    runs = (every.select("started", "run_id").unique().sort("started", "run_id")
            .tail(run.suite.trend_runs)["run_id"].to_list())
    names = [w.name for w in run.suite.workloads]
    recent = every.filter(pl.col("run_id").is_in(runs) & pl.col("workload").is_in(names))
    table = {"workload": names}
    for r in runs:
        got = dict(recent.filter(pl.col("run_id") == r).select("workload", "makespan")
                   .iter_rows())
        table[r] = [got.get(n) for n in names]
    return pl.DataFrame(table, schema={"workload": pl.String,
                                       **{r: pl.Int64 for r in runs}})
