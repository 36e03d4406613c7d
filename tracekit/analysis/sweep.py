"""Design-space sweeps: every point of a grid of machine parameters and duration factors
replayed on one prepared trace (`tracekit.replay.prepared`), in parallel on local processes or
a Dask cluster, as a table with one row per point, and the summary of that table: the best
points, the Pareto front over (makespan, cost) and the axis that matters most.

A grid of `hbm_bandwidth=96,192` and `engine=tensor:1,0.5` has four points, numbered in mixed
radix with the first axis slowest:

    point  hbm_bandwidth  engine=tensor  makespan  binding_engine  cost
    0      96             1.0            1,200     dma.q0          2.0
    1      96             0.5            1,180     dma.q0          3.0
    2      192            1.0              900     tensor          3.0
    3      192            0.5              610     tensor          4.0

With weights hbm_bandwidth = [1, 2] and engine=tensor = [1, 2] in the grid file, cost is the
sum of the weights of each point's values (second column above). The Pareto front is points
0, 2 and 3: point 1 is beaten by point 2, as costly and faster; none of the other three is
beaten on both figures. The axis that matters most is the one whose values move the mean
makespan most: hbm_bandwidth's means are 1,190 (96) and 755 (192), a range of 435 cycles;
engine=tensor's are 1,050 and 895, a range of 155; so hbm_bandwidth.

Axes reuse the what-if vocabulary (`tracekit.analysis.whatif`): the machine parameters
hbm_bandwidth, dma_bandwidth (bytes/cycle), semaphore_latency, data_latency (cycles), and
duration factors of an engine, opcode or layer (0.5: twice as fast). A point's figures do not
depend on which worker ran it or when: the table is sorted by point, so the same input gives
the same bytes.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tracekit.analysis.whatif import GROUPS, PARAMETERS, changed_machine, selects
from tracekit.errors import OutputError, TraceExistsError, TracekitError
from tracekit.replay.machine import MAX_PARAMETER, MIN_POSITIVE, Machine
from tracekit.replay.run import Mode
from tracekit.tomlfiles import read_toml
from tracekit.trace.bundle import Trace

MAX_POINTS = 2**62
"""The largest design space a sweep numbers (a point is an int64)."""

BEST = 5
"""Best points the summary lists."""


class SweepError(TracekitError):
    """A grid, grid file, cost or output a sweep cannot use; the message names it and the
    fix."""


class SweepStuck(SweepError):
    """A point's replay cannot finish (a deadlock or a cycle, `ReplayStuck`): exit 3, as
    `tracekit replay` exits on the same trace."""

    exit_code = 3


def _valid_axes() -> str:
    return (f"the machine parameters {', '.join(PARAMETERS)} (NAME=V1,V2,...) and duration "
            f"factors {', '.join(f'{g}=NAME' for g in GROUPS)} (GROUP=NAME:F1,F2,..., 0.5 "
            f"twice as fast)")


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: `name` as the grid gives it and as its table column is
    called (hbm_bandwidth, engine=tensor); `group` engine, opcode or layer and `target` the
    group's name for a duration factor, else group "parameter" and `target` the parameter;
    `values` in the order given; `weights`, a cost per value (None: no cost)."""

    name: str
    group: str
    target: str
    values: tuple[float, ...]
    weights: tuple[float, ...] | None = None

    @property
    def is_parameter(self) -> bool:
        return self.group == "parameter"


def axis_of(name: str, values: list[Any], where: str) -> Axis:
    """An axis from its name (hbm_bandwidth, engine=tensor) and values; SweepError naming
    `where` (--grid TEXT, FILE: axes.NAME) on an unknown axis or a bad value."""
    if name in PARAMETERS:
        group, target = "parameter", name
        low = MIN_POSITIVE if name.endswith("bandwidth") else 0.0
    else:
        group, _, target = name.partition("=")
        group, target = group.strip(), target.strip()
        if group not in GROUPS or not target:
            raise SweepError(f"{where}: unknown axis {name!r}; the axes are {_valid_axes()}.")
        name, low = f"{group}={target}", MIN_POSITIVE
    if not values:
        raise SweepError(f"{where}: axis {name} has no values; give at least one.")
    numbers = []
    for value in values:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise SweepError(f"{where}: axis {name}: {value!r} is not a number.") from None
        if not (math.isfinite(number) and low <= number <= MAX_PARAMETER):
            what = "factor" if group in GROUPS else "value"
            raise SweepError(f"{where}: axis {name}: the {what} {value!r} is outside "
                             f"{low:g} to {MAX_PARAMETER:g}.")
        numbers.append(number)
    if len(set(numbers)) < len(numbers):
        twice = next(v for v in numbers if numbers.count(v) > 1)
        raise SweepError(f"{where}: axis {name} lists the value {twice:g} twice; give each "
                         f"value once.")
    return Axis(name, group, target, tuple(numbers))


def parse_grid(text: str) -> Axis:
    """'hbm_bandwidth=96,192,384' or 'engine=tensor:1,0.5' -> an Axis."""
    where = f"--grid {text!r}"
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep:
        raise SweepError(f"{where}: expected NAME=V1,V2,... or GROUP=NAME:F1,F2,...; the axes "
                         f"are {_valid_axes()}.")
    if name in PARAMETERS:
        return axis_of(name, _split(rest), where)
    target, sep, values = rest.rpartition(":")
    if name not in GROUPS:
        raise SweepError(f"{where}: unknown axis {name!r}; the axes are {_valid_axes()}.")
    if not sep or not target.strip():
        raise SweepError(f"{where}: a duration factor axis is GROUP=NAME:F1,F2,..., such as "
                         f"engine=tensor:1,0.5.")
    return axis_of(f"{name}={target.strip()}", _split(values), where)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


GRID_KEYS = {"axes", "cost"}


def load_grid_file(path: str | os.PathLike[str]) -> list[Axis]:
    """Axes from a grid TOML file, with their cost weights:

        [axes]
        hbm_bandwidth = [96, 192, 384]
        "engine=tensor" = [1.0, 0.5]

        [cost]                               # optional: a weight per value, in order
        hbm_bandwidth = [1.0, 1.6, 2.5]
        "engine=tensor" = [1.0, 1.8]

    A point's cost is the sum of the weights of its values (an axis without weights adds
    nothing)."""
    path = Path(path)
    data = read_toml(path, "grid", SweepError)
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise SweepError(f"{path}: {unknown[0]} is not a grid file key; the keys are "
                         f"[axes] and [cost].")
    axes_doc, cost_doc = data.get("axes"), data.get("cost", {})
    if not isinstance(axes_doc, dict) or not axes_doc:
        raise SweepError(f"{path}: [axes] must list at least one axis, such as "
                         f"hbm_bandwidth = [96, 192].")
    if not isinstance(cost_doc, dict):
        raise SweepError(f"{path}: [cost] must be a table of weights per axis.")
    axes = []
    for name, values in axes_doc.items():
        if not isinstance(values, list):
            raise SweepError(f"{path}: axes.{name} must be a list of values, such as [1, 0.5].")
        axes.append(axis_of(name, values, f"{path}: axes.{name}"))
    names = {a.name: i for i, a in enumerate(axes)}
    for key, weights in cost_doc.items():
        canonical = axis_of(key, [1], f"{path}: cost.{key}").name if key not in names else key
        if canonical not in names:
            raise SweepError(f"{path}: cost.{key} names no axis of [axes]; the axes are "
                             f"{', '.join(names)}.")
        axis = axes[names[canonical]]
        if (not isinstance(weights, list) or len(weights) != len(axis.values)
                or not all(isinstance(w, int | float) and not isinstance(w, bool)
                           and math.isfinite(w) for w in weights)):
            raise SweepError(f"{path}: cost.{key} must list {len(axis.values)} finite "
                             f"number(s), one weight per value of the axis.")
        axes[names[canonical]] = Axis(axis.name, axis.group, axis.target, axis.values,
                                      tuple(float(w) for w in weights))
    return axes


def check_axes(axes: list[Axis], trace: Trace) -> None:
    """No axis twice, at least one, and every duration factor names an engine, opcode or
    layer the trace has (SweepError listing the trace's names)."""
    if not axes:
        raise SweepError("the grid is empty: give at least one --grid NAME=VALUES (or "
                         "--grid-file); the axes are " + _valid_axes() + ".")
    seen: set[str] = set()
    for axis in axes:
        if axis.name in seen:
            raise SweepError(f"axis {axis.name} is given twice; give each axis once (its "
                             f"values in one list).")
        seen.add(axis.name)
    groups = sorted({a.group for a in axes if not a.is_parameter})
    if not groups:
        return
    names = trace.read_instructions(groups)
    for axis in axes:
        if axis.is_parameter:
            continue
        have = names[axis.group].cast(pl.String).drop_nulls().unique().sort().to_list()
        if axis.target not in have:
            shown = ", ".join(have[:20]) + (" ..." if len(have) > 20 else "")
            raise SweepError(f"axis {axis.name}: the trace has no {axis.group} "
                             f"{axis.target!r}; its {axis.group}s are {shown}.")


def space_size(axes: list[Axis]) -> int:
    size = 1
    for axis in axes:
        size *= len(axis.values)
    return size


def choose_points(axes: list[Axis], samples: int | None, seed: int) -> np.ndarray:
    """The points to replay, ascending: every point of the grid, or with `samples` a sample
    of that many distinct points drawn with numpy's PCG64 seeded by `seed` (the same seed,
    the same points; the whole grid when it has no more points than asked)."""
    size = space_size(axes)
    if size > MAX_POINTS:
        raise SweepError(f"the grid has {size:.3g} points, more than a sweep can number "
                         f"({MAX_POINTS:.3g}); give fewer axes or values.")
    if samples is not None and samples < 1:
        raise SweepError(f"--samples {samples}: give at least 1.")
    if samples is None or samples >= size:
        return np.arange(size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, size=samples, replace=False).astype(np.int64))


def value_indices(axes: list[Axis], points: np.ndarray) -> list[np.ndarray]:
    """Each axis's value index at each point (mixed radix, the first axis slowest)."""
    out = []
    rest = np.asarray(points, dtype=np.int64).copy()
    for axis in reversed(axes):
        out.append(rest % len(axis.values))
        rest //= len(axis.values)
    return out[::-1]


# --- the work of one batch of points (runs in a worker) -----------------------------------------


def run_batch(trace_path: str, manifest_sha256: str, machine: Machine, mode: str,
              axes: list[Axis], points: list[int], with_base: bool) -> dict[str, Any]:
    """Replay `points` of the grid on one prepared trace. Plain values only, so any executor
    can ship the result; an error is returned as its message, never raised."""
    from tracekit.replay.run import ReplayStuck

    try:
        return {"error": None, **_batch(trace_path, manifest_sha256, machine, mode, axes,
                                        points, with_base)}
    except ReplayStuck as exc:
        return {"error": str(exc), "stuck": True}
    except TracekitError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported as the sweep's error, not a traceback
        return {"error": f"internal error in a sweep worker: {type(exc).__name__}: {exc}"}


def _batch(trace_path: str, manifest_sha256: str, machine: Machine, mode: str,
           axes: list[Axis], points: list[int], with_base: bool) -> dict[str, Any]:
    from tracekit.replay.prepared import Prepared
    from tracekit.trace.bundle import file_sha256, open_trace
    from tracekit.trace.schema import MANIFEST_FILE

    trace = open_trace(trace_path, verify=False)
    if file_sha256(trace.path / MANIFEST_FILE) != manifest_sha256:
        raise SweepError(f"{trace_path}: the trace a worker opened is not the one the sweep "
                         f"validated (its manifest differs); give workers the same bundle.")
    prepared = Prepared(trace, machine, mode)
    masks = {a.name: selects(prepared.frame, a.group, a.target) for a in axes
             if not a.is_parameter}
    index = value_indices(axes, np.asarray(points, dtype=np.int64))
    out: dict[str, list[Any]] = {"makespan": [], "busy": [], "critical": [],
                                 "contention": []}
    for k in range(len(points)):
        sets, factor = {}, None
        for axis, idx in zip(axes, index, strict=True):
            value = axis.values[int(idx[k])]
            if axis.is_parameter:
                sets[axis.target] = value
            elif value != 1.0:
                if factor is None:
                    factor = np.ones(prepared.n)
                factor[masks[axis.name]] *= value
        m = prepared.measure(changed_machine(machine, sets), factor)
        out["makespan"].append(m.makespan)
        out["busy"].append(m.busy.tolist())
        out["critical"].append(m.critical.tolist())
        out["contention"].append(m.contention)
    base = prepared.measure() if with_base else None
    return {"engines": prepared.engines, "points": list(points), **out,
            "base_makespan": None if base is None else base.makespan}


# --- the sweep ----------------------------------------------------------------------------------


def _slots(scheduler: str | None, workers: int | None) -> int:
    """Batches to split the points into: --workers, else the local CPU count (at most 8, as
    `nightly`) or the Dask cluster's threads."""
    if workers:
        return workers
    if scheduler is None:
        return min(os.cpu_count() or 1, 8)
    from distributed import default_client

    return max(sum(default_client().nthreads().values()), 1)


@dataclass(frozen=True)
class Sweep:
    """A sweep's table and summary.

    `table`, one row per point, ascending: point (its number in the grid, mixed radix, the
    first axis slowest), one column per axis (its value), makespan (cycles), busy_<engine>
    for every engine of the trace (cycles without HBM contention, as
    `tracekit.analysis.figures` counts busy), contention (cycles DMA transfers lost to HBM
    sharing, summed), binding_engine (the engine with the most cycles on the point's critical
    path, the chain of binding predecessors back from the instruction that ends last; the
    first in engine order on a tie), cost (when defined: the grid file's weights summed, or
    the --cost expression).
    `best`: the points of least makespan (ties by point), at most BEST.
    `front`: the Pareto front over (makespan, cost): the points no other point beats on both
    (as cheap and as fast, and better on one), by cost; None without a cost.
    `influence`: per axis, the mean makespan at each of its values, the lowest and the
    highest of those means, and their difference (range, cycles): the makespan range
    attributable to the axis alone (its main effect, averaged over the other axes' values);
    most first. `base_makespan`: the machine unchanged. `space`: points in the grid."""

    axes: tuple[Axis, ...]
    table: pl.DataFrame
    engines: tuple[str, ...]
    base_makespan: int
    space: int
    samples: int | None
    seed: int
    cost: str | None

    @property
    def best(self) -> pl.DataFrame:
        return self.table.sort("makespan", "point").head(BEST)

    @property
    def front(self) -> pl.DataFrame | None:
        return None if self.cost is None else pareto_front(self.table)

    @property
    def influence(self) -> pl.DataFrame:
        return influence(self.table, [a.name for a in self.axes])

    @property
    def matters_most(self) -> str:
        return str(self.influence["axis"][0])


def pareto_front(table: pl.DataFrame, cost: str = "cost",
                 makespan: str = "makespan") -> pl.DataFrame:
    """The rows of `table` on the Pareto front of (`makespan`, `cost`), both to minimise: a
    row is on it when no row has a makespan and a cost at most its own with one of them
    less. Rows with equal figures are all on it or all off. Sorted by cost, then makespan,
    then point."""
    by_cost = (table.group_by(cost).agg(pl.col(makespan).min().alias("_least"))
               .sort(cost)
               .with_columns(pl.col("_least").cum_min().shift(1).alias("_before")))
    keep = by_cost.filter(pl.col("_before").is_null() | (pl.col("_least") < pl.col("_before")))
    return (table.join(keep.select(cost, "_least"), on=cost, how="inner")
            .filter(pl.col(makespan) == pl.col("_least")).drop("_least")
            .sort(cost, makespan, "point"))


def influence(table: pl.DataFrame, axes: list[str]) -> pl.DataFrame:
    """Per axis: values (how many), best_value (the value of least mean makespan, the first
    on a tie), lowest_mean and highest_mean (cycles, the mean makespan at its best and worst
    value), range (their difference). Largest range first, ties in axis order. The means
    average over the other axes only on a whole grid; on a sample (`--samples`) each value's
    mean is over the points the sample drew for it, so the ranges are estimates that the
    summary marks as such."""
    rows = []
    for order, axis in enumerate(axes):
        means = (table.group_by(axis).agg(pl.col("makespan").mean().alias("mean"))
                 .sort("mean", axis))
        low, high = float(means["mean"][0]), float(means["mean"].max())  # type: ignore[arg-type]
        rows.append({"axis": axis, "values": means.height,
                     "best_value": float(means[axis][0]), "lowest_mean": low,
                     "highest_mean": high, "range": high - low, "_order": order})
    frame = pl.DataFrame(rows, schema={"axis": pl.String, "values": pl.Int64,
                                       "best_value": pl.Float64, "lowest_mean": pl.Float64,
                                       "highest_mean": pl.Float64, "range": pl.Float64,
                                       "_order": pl.Int64})
    return frame.sort(["range", "_order"], descending=[True, False]).drop("_order")


def sweep(trace: Trace, machine: Machine, axes: list[Axis], *, mode: Mode | str = Mode.MODEL,
          samples: int | None = None, seed: int = 0, cost: str | None = None,
          scheduler: str | None = None, workers: int | None = None,
          pool: cf.Executor | None = None) -> Sweep:
    """Replay every chosen point of the grid (`choose_points`) and tabulate it (`Sweep`).
    The points are split into as many batches as there are workers (each prepares the trace
    once); with one worker and no scheduler or `pool` they run in this process, else on
    `pool` or on `nightly.executor(scheduler, workers)`. `cost`: a column of the table or a
    polars SQL expression over its columns (axis columns with other characters than letters,
    digits and _ in double quotes); default: the grid file's weights, if any."""
    from tracekit.trace.bundle import file_sha256
    from tracekit.trace.schema import MANIFEST_FILE

    mode = Mode(mode)
    check_axes(axes, trace)
    points = choose_points(axes, samples, seed)
    sha = file_sha256(trace.path / MANIFEST_FILE)
    args = (str(trace.path.absolute()), sha, machine, mode.value, axes)
    if pool is None and scheduler is None and workers == 1:
        results = [run_batch(*args, points.tolist(), True)]
    elif pool is not None:
        results = _on(pool, args, points, workers or 1)
    else:
        from tracekit.analysis.nightly import executor

        with executor(scheduler, workers) as own:
            results = _on(own, args, points, _slots(scheduler, workers))
    for r in results:
        if r["error"] is not None:
            raise (SweepStuck if r.get("stuck") else SweepError)(r["error"])
    return _tabulate(axes, results, len(points), samples, seed, cost)


def _on(pool: cf.Executor, args: tuple[Any, ...], points: np.ndarray, slots: int
        ) -> list[dict[str, Any]]:
    """The batches on `pool`, results in batch order (whichever finishes first)."""
    from tracekit import progress

    batches = [b for b in np.array_split(points, max(1, min(slots, points.size))) if b.size]
    futures = [pool.submit(run_batch, *args, b.tolist(), i == 0)
               for i, b in enumerate(batches)]
    results = []
    with progress.step(f"replaying {points.size:,} point(s) in {len(batches)} batch(es)",
                       total=len(batches)) as done:
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a lost worker is the sweep's error
                results.append({"error": f"a sweep worker failed: {type(exc).__name__}: "
                                         f"{exc}"})
            done.advance()
    return results


def _tabulate(axes: list[Axis], results: list[dict[str, Any]], count: int,
              samples: int | None, seed: int, cost: str | None) -> Sweep:
    engines = results[0]["engines"]
    points = np.concatenate([np.asarray(r["points"], dtype=np.int64) for r in results])
    busy = np.array([row for r in results for row in r["busy"]], dtype=np.int64
                    ).reshape(count, len(engines))
    critical = np.array([row for r in results for row in r["critical"]], dtype=np.int64
                        ).reshape(count, len(engines))
    index = value_indices(axes, points)
    columns: dict[str, pl.Series] = {"point": pl.Series("point", points, pl.Int64)}
    for axis, idx in zip(axes, index, strict=True):
        columns[axis.name] = pl.Series(axis.name, np.asarray(axis.values)[idx], pl.Float64)
    columns["makespan"] = pl.Series("makespan", [m for r in results for m in r["makespan"]],
                                    pl.Int64)
    for e, name in enumerate(engines):
        columns[f"busy_{name}"] = pl.Series(f"busy_{name}", busy[:, e], pl.Int64)
    columns["contention"] = pl.Series("contention",
                                      [c for r in results for c in r["contention"]], pl.Int64)
    binding = np.argmax(critical, axis=1) if engines else np.zeros(count, np.int64)
    columns["binding_engine"] = pl.Series(
        "binding_engine", [engines[b] if critical[i, b] > 0 else None
                           for i, b in enumerate(binding)], pl.String)
    weighted = [a for a in axes if a.weights is not None]
    if weighted:
        total = np.zeros(count)
        for axis, idx in zip(axes, index, strict=True):
            if axis.weights is not None:
                total += np.asarray(axis.weights)[idx]
        columns["cost"] = pl.Series("cost", total, pl.Float64)
    table = pl.DataFrame(list(columns.values())).sort("point")
    cost_text = "the grid file's weights" if weighted else None
    if cost is not None:
        table = with_cost(table, cost)
        cost_text = cost
    base = next(r["base_makespan"] for r in results if r.get("base_makespan") is not None)
    return Sweep(axes=tuple(axes), table=table, engines=tuple(engines), base_makespan=base,
                 space=space_size(axes), samples=samples, seed=seed, cost=cost_text)


def with_cost(table: pl.DataFrame, cost: str) -> pl.DataFrame:
    """`table` with its cost column set to `cost`: a column's name or a polars SQL
    expression over the columns; SweepError naming the columns when it cannot be
    evaluated to a number per point."""
    columns = ", ".join(c if c.isidentifier() else f'"{c}"' for c in table.columns)
    try:
        expr = pl.col(cost) if cost in table.columns else pl.sql_expr(cost)
        values = table.select(expr.cast(pl.Float64).alias("cost"))["cost"]
    except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"--cost {cost!r}: not a column or an expression over the columns "
                         f"({first}); the columns are {columns}.") from None
    if values.len() != table.height or values.null_count() or not values.is_finite().all():
        raise SweepError(f"--cost {cost!r}: does not give a finite number at every point; "
                         f"the columns are {columns}.")
    return table.with_columns(values)


def write_table(result: Sweep, path: str | os.PathLike[str], *, overwrite: bool = False
                ) -> Path:
    """Write the sweep's table as Parquet at `path`, atomically (a temporary file renamed into
    place); TraceExistsError when it exists and not `overwrite`."""
    from tracekit.trace.bundle import atomic_file

    path = Path(path)
    check_output(path, overwrite)
    try:
        with atomic_file(path) as temporary:
            result.table.write_parquet(temporary)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc}).") from None
    return path


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that exists (unless `overwrite`) or has no folder."""
    if path.exists() and not overwrite:
        raise TraceExistsError(f"{path}: already exists. Choose another path or pass --force "
                               f"to replace it.")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name such as sweep.parquet.")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"{path}: the folder {path.absolute().parent} does not exist; "
                          f"create it or choose another path.")
