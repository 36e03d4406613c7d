"""Calibration: fit the latency model of every (engine kind, opcode) to observed durations and
write a machine file that `tracekit replay --machine` accepts, and say how well each fit
predicts durations it was not fitted to.

Each fit is duration = fixed + per_element * elements + per_byte * bytes + per_flop * flops,
over the work columns that vary within the group, by iteratively reweighted least squares with
Huber weights (outliers such as warm-up or a stuck instruction pull little), coefficients kept
non-negative. For DMA the replay moves the bytes itself under HBM sharing, so the set-up is
fitted to the observed time minus the replay's own transfer time. Worked example: matmuls
observed at 64 + flops / 32768 cycles plus noise fit to fixed ~ 64, per_flop ~ 3.05e-5.

One instruction in five (a fixed hash of its id, `held_out`) is kept out of the fit, and the
fit is judged on those: R2, mean absolute percentage error and median absolute error, per
group and over all. A group whose held-out R2 is below R2_WARN gets a warning (its duration is
not linear in its work); so does one whose every instance has the same work (the fit is one
number, R2 is not defined) when its held-out MAPE passes MAPE_WARN.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.replay.machine import MAX_PARAMETER, Latency, Machine, engine_kind, parse_machine
from tracekit.replay.prepared import Prepared
from tracekit.replay.run import replay
from tracekit.trace.bundle import Trace
from tracekit.trace.names import map_names, shortened

WORK = ("elements", "bytes", "flops")
COEFF = {"elements": "per_element", "bytes": "per_byte", "flops": "per_flop"}
HUBER_K = 1.345
HELD_OUT_EVERY = 5
"""One instruction in this many is held out of the fit (20 %)."""
R2_WARN = 0.5
"""A held-out R2 below this is a poor fit."""
MAPE_WARN = 20.0
"""For a group of one shape (R2 undefined): a held-out MAPE above this, in %, is a poor fit."""
FIT_COLUMNS = ("fixed_cycles", "per_element", "per_byte", "per_flop", "per_descriptor",
               "descriptor_bytes", "warmup_count", "warmup_factor", "conflict_stretch")
"""The fitted terms and effects of each group, columns of Calibration.fits."""
ALL = "(all)"
"""The engine and opcode of a warning about every fit together."""


class CalibrationError(TracekitError):
    """Nothing to fit: an untimed trace, or no instructions."""


@dataclass(frozen=True)
class FitWarning:
    """A group whose fit predicts its held-out durations poorly, and what that means (engine
    and opcode ALL: the fits together)."""

    engine: str
    opcode: str
    message: str


@dataclass(frozen=True)
class HeldOut:
    """The fits against every held-out instruction at once: samples, r2 (null when fewer than
    two samples or their durations do not vary), mape_pct (%), median_abs_error (cycles);
    the last two null without samples. `every`: one instruction in this many is held out."""

    samples: int
    r2: float | None
    mape_pct: float | None
    median_abs_error: float | None
    every: int = HELD_OUT_EVERY


@dataclass(frozen=True)
class Calibration:
    """The fitted machine, one row per fit, the held-out figures over all and the warnings.

    `fits`: engine (kind), opcode, samples (instructions of the group), held_out (of them, kept
    out of the fit; 0 when the group is too small to spare any: it is fitted on all and its
    held-out columns are null), fixed_cycles, per_element, per_byte, per_flop; fit_r2 (on the
    samples fitted), held_out_r2, held_out_mape_pct (mean absolute percentage error, %),
    held_out_median_abs_error (cycles). An R2 is null where the fit predicts one duration for
    every sample (the group's work never varies: there is no variance for it to explain, and
    the MAPE says how good it is) or the durations do not vary. Sorted by engine, opcode. The
    effects fitted (per_descriptor, descriptor_bytes, warmup_count, warmup_factor,
    conflict_stretch) are columns too, and the predictions judged include them.

    `validation` (None when no trace was held out): one row per unseen trace: trace,
    workload, how (holdout: given with --holdout; fold: fitted on the other traces),
    instructions, mape_before_pct and mape_after_pct (per-instruction MAPE of replayed
    durations on the base and the fitted machine, %), makespan_error_before_pct and
    makespan_error_after_pct (replayed against observed, signed, %). `by_opcode`: engine,
    opcode, instructions, mape_before_pct, mape_after_pct over the unseen traces.
    """

    machine: Machine
    fits: pl.DataFrame
    held_out: HeldOut
    warnings: tuple[FitWarning, ...]
    validation: pl.DataFrame | None = None
    by_opcode: pl.DataFrame | None = None

    @property
    def worse(self) -> list[str]:
        """What is worse on the unseen traces than with the base machine: the mean MAPE, the
        mean absolute makespan error (empty when nothing was held out, or nothing is
        worse)."""
        v = self.validation
        if v is None or v.height == 0:
            return []
        out = []
        before, after = v["mape_before_pct"].mean(), v["mape_after_pct"].mean()
        if after > before:
            out.append(f"per-instruction MAPE {after:.1f} % against the base machine's "
                       f"{before:.1f} %")
        before = v["makespan_error_before_pct"].abs().mean()
        after = v["makespan_error_after_pct"].abs().mean()
        if after > before:
            out.append(f"makespan error {after:.1f} % against the base machine's {before:.1f} %")
        return out


def held_out(ids: np.ndarray) -> np.ndarray:
    """Whether each instruction is held out of the fit: splitmix64's finaliser of its id, modulo
    HELD_OUT_EVERY, is 0. Fixed, so the split is the same on every run; about one in five."""
    z = np.asarray(ids, dtype=np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z % np.uint64(HELD_OUT_EVERY) == 0


def _r2(y: np.ndarray, predicted: np.ndarray) -> float | None:
    """1 - residual / total sum of squares; None when it says nothing (see Calibration)."""
    if y.size < 2 or np.ptp(predicted) <= 1e-9 * max(float(np.abs(predicted).max()), 1.0):
        return None
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1 - float(((y - predicted) ** 2).sum()) / ss_tot if ss_tot > 0 else None


def _mape(y: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(np.mean(np.abs(predicted - y) / np.maximum(y, 1)) * 100) if y.size else None


def _median_abs(y: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(np.median(np.abs(predicted - y))) if y.size else None


def _warning(kind: str, opcode: str, varying: list[str], r2: float | None,
             mape: float | None, typical: float) -> FitWarning | None:
    """The warning a group's held-out figures call for, if any. `typical`: the mean duration
    the model predicts for the held-out instructions (cycles)."""
    if mape is None:
        return None
    if r2 is not None and r2 < R2_WARN:
        work = " and ".join(varying)
        form = (f"a set-up{f' linear in {work}' if work else ''} plus the replay's transfer "
                f"time under HBM sharing" if kind == "dma" else
                f"linear in {work}" if work else "a constant")
        return FitWarning(kind, opcode, (
            f"{kind} {shortened(opcode)}: held-out R2 {r2:.3f} (below {R2_WARN:g}; MAPE {mape:.1f} %): "
            f"its duration is not {form}, so the model will mispredict it; check for "
            f"contention or data-dependent latency."))
    if r2 is None and mape > MAPE_WARN:
        return FitWarning(kind, opcode, (
            f"{kind} {shortened(opcode)}: every instance has the same work, yet held-out durations are "
            f"{mape:.1f} % off the model's {typical:,.0f} cycles on average (above "
            f"{MAPE_WARN:g} %): its latency depends on something the model does not see, so "
            f"the model will mispredict it; check for contention or data-dependent latency."))
    return None


def _huber_fit(x: np.ndarray, y: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Robust least squares with non-negative coefficients (fixed first)."""
    weights = np.ones(y.size)
    coef = np.zeros(x.shape[1])
    active = np.ones(x.shape[1], dtype=bool)
    for _ in range(iterations):
        sw = np.sqrt(weights)
        coef = np.zeros(x.shape[1])
        sol, *_ = np.linalg.lstsq(x[:, active] * sw[:, None], y * sw, rcond=None)
        coef[active] = sol
        if (coef < 0).any():  # drop a negative term and refit (a simple active-set step)
            active &= coef >= 0
            continue
        residual = y - x @ coef
        scale = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 1e-9
        r = np.abs(residual) / (HUBER_K * scale)
        weights = np.where(r <= 1, 1.0, 1.0 / np.maximum(r, 1e-12))
    return np.maximum(coef, 0.0)


@dataclass(frozen=True)
class _Observed:
    """One trace's instructions as the fit sees them: the prepared replay (engine codes,
    queues, SBUF ranges) and per row the observed duration, its queue position and whether it
    started while another engine's instruction was under way on overlapping SBUF partitions
    (in the observed timeline)."""

    prepared: Prepared
    duration: np.ndarray
    position: np.ndarray
    conflicted: np.ndarray


def _observe(trace: Trace, base: Machine) -> _Observed:
    prepared = Prepared(trace, base)
    frame = prepared.frame
    if frame.height == 0 or frame["start"].null_count() == frame.height:
        raise CalibrationError(f"{trace.path}: the trace has no observed timing to fit; "
                               f"calibration needs a timed trace (from RTL or a timed "
                               f"model).")
    start = frame["start"].fill_null(-1).to_numpy().astype(np.float64)
    end = frame["end"].fill_null(-1).to_numpy().astype(np.float64)
    timed = (start >= 0) & (end >= 0)
    lo, hi = prepared.sbuf_ranges
    return _Observed(prepared, np.where(timed, end - start, np.nan), prepared.positions,
                     _conflicted(start, end, timed, lo, hi, prepared.engine,
                                 len(prepared.engines)))


def _conflicted(start: np.ndarray, end: np.ndarray, timed: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, engine: np.ndarray, n_eng: int) -> np.ndarray:
    """Whether each instruction started while another engine's instruction on overlapping
    SBUF partitions was under way (one that started at the same time counts when its engine
    comes first, as in the replay). Engines are in order, so per other engine one search."""
    out = np.zeros(start.size, dtype=bool)
    has = timed & (lo >= 0)
    for o in range(n_eng):
        mine = np.flatnonzero(has & (engine == o))
        if mine.size == 0:
            continue
        order = mine[np.argsort(start[mine], kind="stable")]
        s_o = start[order]
        k = np.searchsorted(s_o, start, side="right") - 1
        ok = has & (engine != o) & (k >= 0)
        j = order[np.maximum(k, 0)]
        ok &= (end[j] > start) & ((start[j] < start) | (engine > o))
        ok &= (lo[j] < hi) & (lo < hi[j])
        out |= ok
    return out


WARMUP_SCAN = 16
"""Queue positions looked at for warm-up; instructions past them fit the latencies."""
WARMUP_MIN = 0.10
"""A leading position whose durations are this much above the fit (median) is warming up."""
STRETCH_MIN = 0.02
"""Conflicted instructions this much slower than the others (median) get a conflict stretch."""
MIN_SAMPLES = 5
"""The fewest instructions an effect is fitted on."""
DESCRIPTOR_SIZES = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
"""Descriptor sizes tried for a transfer's set-up (bytes)."""
ROUNDS = 2
"""Fits, each taking DMA transfer times from a replay on the previous fit's machine."""


def calibrate(traces: list[Trace], base: Machine, holdout: list[Trace] | None = None,
              folds: bool = True) -> Calibration:
    """Fit `base`'s latency model and effects to the observed durations of `traces`, and
    judge the fit on traces it never saw: `holdout` when given, else (with `folds` and two or
    more traces) each trace in turn, fitted on the others (the machine written is the fit to
    all)."""
    if not traces:
        raise CalibrationError("no traces to fit.")
    observed = [_observe(t, base) for t in traces]
    result = _fit(observed, base)
    checks: list[pl.DataFrame] = []
    opcode_checks: list[pl.DataFrame] = []
    if holdout:
        for trace in holdout:
            row, ops = _check(trace, base, result.machine, "holdout")
            checks.append(row)
            opcode_checks.append(ops)
    elif folds and len(traces) > 1:
        for i, trace in enumerate(traces):
            fold = _fit([o for j, o in enumerate(observed) if j != i], base).machine
            row, ops = _check(trace, base, fold, "fold")
            checks.append(row)
            opcode_checks.append(ops)
    if not checks:
        return result
    validation = pl.concat(checks)
    by_opcode = (pl.concat(opcode_checks)
                 .group_by("engine", "opcode")
                 .agg(pl.col("instructions").sum(),
                      *[((pl.col(c) * pl.col("instructions")).sum()
                         / pl.col("instructions").sum()).alias(c)
                        for c in ("mape_before_pct", "mape_after_pct")])
                 .sort("engine", "opcode"))
    return dataclasses.replace(result, validation=validation, by_opcode=by_opcode)


def _fit(observed: list[_Observed], base: Machine) -> Calibration:
    """The fit to the observed traces: latencies on the instructions past warm-up and
    without conflicts, then the effects from the ratios of the rest to the fit."""
    machine = base
    effects: dict[str, dict[str, float | int]] = {}
    for _ in range(ROUNDS):
        # The replay's own transfer times under the latest fit (its effects off, so they
        # are the unstretched times the fit's factors multiply).
        transfer = np.concatenate([o.prepared.transfer_cycles(_without_effects(machine))
                                   for o in observed])
        result, effects = _fit_once(observed, base, transfer, effects)
        machine = result.machine
    return result


def _fit_once(observed: list[_Observed], base: Machine, transfer: np.ndarray,
              known: dict[str, dict[str, float | int]]
              ) -> tuple[Calibration, dict[str, dict[str, float | int]]]:
    """One round of the fit: latencies on the instructions past warm-up, their observed
    durations divided by the stretch of the previous round (`known`, per engine kind; the
    first round fits on the unconflicted only), then the effects from the ratios."""
    frames = []
    for k, o in enumerate(observed):
        p = o.prepared
        frames.append(p.work.select(
            "id", "engine", "opcode", *[pl.col(w).fill_null(0).cast(pl.Float64) for w in WORK])
            .with_columns(pl.lit(k).alias("trace"), pl.Series("observed", o.duration),
                          pl.Series("position", o.position),
                          pl.Series("conflicted", o.conflicted)))
    data = pl.concat(frames).with_columns(pl.Series("transfer", transfer))
    data = data.with_columns(map_names(data["engine"], engine_kind, pl.String).alias("kind")
                             ).filter(pl.col("observed").is_not_nan())
    data = data.with_columns(pl.when(pl.col("kind") == "dma").then(pl.col("transfer"))
                             .otherwise(0.0).alias("transfer"))
    stretch_of = {kind: float(fx["conflict_stretch"]) for kind, fx in known.items()}
    data = data.with_columns(
        pl.col("kind").replace_strict(stretch_of, default=None, return_dtype=pl.Float64)
        .alias("known_stretch"))
    latencies: dict[tuple[str, str], Latency] = {}
    predicted = np.zeros(data.height)  # set-up or computation, without effects
    group_rows: dict[tuple[str, str], np.ndarray] = {}
    kinds = data["kind"].to_numpy()
    for (kind, opcode), group in sorted(data.with_row_index("_row").group_by(["kind", "opcode"]),
                                        key=lambda g: (g[0][0], g[0][1])):
        rows = group["_row"].to_numpy()
        group_rows[(kind, opcode)] = rows
        latency, p = _fit_group(kind, opcode, group, base)
        latencies[(kind, opcode)] = latency
        predicted[rows] = p
    total = predicted + data["transfer"].to_numpy()
    ratio = data["observed"].to_numpy() / np.maximum(total, 1e-9)
    position = data["position"].to_numpy()
    conflicted = data["conflicted"].to_numpy()
    test = held_out(data["id"].to_numpy())
    effects = _all_effects(kinds, ratio, position, conflicted, test)
    opcodes = {key: dataclasses.replace(latency, **effects[key[0]])
               for key, latency in latencies.items()}
    # With the effects: what the model predicts for each instruction (for the figures).
    factor = np.ones(data.height)
    for kind, fx in effects.items():
        mine = kinds == kind
        factor[mine & (position < fx["warmup_count"])] *= fx["warmup_factor"]
        factor[mine & conflicted] *= fx["conflict_stretch"]
    modelled = total * factor
    return _report(data, group_rows, opcodes, modelled, test, base, effects), effects


def _fit_group(kind: str, opcode: str, group: pl.DataFrame, base: Machine
               ) -> tuple[Latency, np.ndarray]:
    """The latency of one (engine kind, opcode) fitted on its clean instructions (past
    warm-up, no conflict, not held out), and its prediction (without effects) for every
    instruction of the group."""
    known = group["known_stretch"].to_numpy()
    conflicted = group["conflicted"].to_numpy()
    if np.isnan(known).any():  # first round: no stretch to take out, fit the unconflicted
        usable = ~conflicted
        scale = np.ones(conflicted.size)
    else:
        usable = np.ones(conflicted.size, dtype=bool)
        scale = np.where(conflicted, known, 1.0)
    y = (group["observed"].to_numpy() / scale - group["transfer"].to_numpy()).clip(0)
    varying = [w for w in WORK if group[w].n_unique() > 1]
    # A work size that never varies in the samples cannot be fitted: keep the base
    # machine's cost per unit for it (so the fit extrapolates to other shapes) and fit the
    # rest on what remains.
    prior = base.latency(kind, opcode)
    kept = {COEFF[w]: getattr(prior, COEFF[w]) for w in WORK if w not in varying}
    offset = sum(kept[COEFF[w]] * group[w].to_numpy() for w in WORK if w not in varying)
    offset = np.asarray(offset, dtype=np.float64) * np.ones(y.size)
    test = held_out(group["id"].to_numpy())
    clean = ~test & (group["position"].to_numpy() >= WARMUP_SCAN) & usable
    if clean.sum() < MIN_SAMPLES:
        clean = ~test if (~test).sum() >= 1 else np.ones(y.size, dtype=bool)
    columns = ["fixed_cycles", *[COEFF[w] for w in varying]]
    x = np.column_stack([np.ones(y.size)] + [group[w].to_numpy() for w in varying])
    coef = _huber_fit(x[clean], (y - offset)[clean])
    fitted = {**kept, **dict(zip(columns, coef.tolist(), strict=True))}
    latency = Latency(**{k: float(v) for k, v in fitted.items()})
    predicted = x @ coef + offset
    if kind == "dma" and "bytes" in varying:
        # Descriptors of a fixed size, the count rounded up, in place of a cost per byte,
        # where that fits the clean set-ups clearly better.
        nbytes = group["bytes"].to_numpy()
        others = [w for w in varying if w != "bytes"]
        loss = _loss(y[clean] - offset[clean] - predicted[clean] + offset[clean])
        for size in DESCRIPTOR_SIZES:
            xd = np.column_stack([np.ones(y.size), np.ceil(nbytes / size)]
                                 + [group[w].to_numpy() for w in others])
            cd = _huber_fit(xd[clean], (y - offset)[clean])
            pd = xd @ cd + offset
            candidate = _loss(y[clean] - pd[clean])
            if candidate < 0.99 * loss:
                loss = candidate
                terms = dict(zip(["fixed_cycles", "per_descriptor", *[COEFF[w] for w in others]],
                                 cd.tolist(), strict=True))
                latency = Latency(**{**kept, **{k: float(v) for k, v in terms.items()},
                                     "per_byte": 0.0, "descriptor_bytes": size})
                predicted = pd
    return latency, predicted


def _loss(residual: np.ndarray) -> float:
    return float(np.mean(np.abs(residual))) if residual.size else 0.0


def _all_effects(kinds: np.ndarray, ratio: np.ndarray, position: np.ndarray,
                 conflicted: np.ndarray, test: np.ndarray) -> dict[str, dict[str, float | int]]:
    """The effects of each engine kind (`_effects`); a kind whose conflict stretch cannot be
    told apart from its latency (too few conflicted or unconflicted instructions) takes the
    stretch of all kinds together, and so does `default`, for the engines no trace shows."""
    fit = ~test
    pooled = _stretch(ratio[fit], position[fit], conflicted[fit])
    effects = {kind: _effects(ratio[kinds == kind], position[kinds == kind],
                              conflicted[kinds == kind], fit[kinds == kind], pooled or 1.0)
               for kind in sorted(set(kinds.tolist()))}
    warm = [fx for fx in effects.values() if fx["warmup_count"]]
    effects["default"] = {
        "warmup_count": int(np.median([fx["warmup_count"] for fx in warm])) if warm else 0,
        "warmup_factor": float(np.median([fx["warmup_factor"] for fx in warm])) if warm
        else 1.0, "conflict_stretch": pooled or 1.0}
    return effects


def _stretch(ratio: np.ndarray, position: np.ndarray, conflicted: np.ndarray) -> float | None:
    """The median ratio of conflicted instructions past warm-up over the unconflicted ones'
    (1 when it is within STRETCH_MIN of 1; None when either side has too few)."""
    late = position >= WARMUP_SCAN
    if (late & conflicted).sum() < MIN_SAMPLES or (late & ~conflicted).sum() < MIN_SAMPLES:
        return None
    value = float(np.median(ratio[late & conflicted]) / np.median(ratio[late & ~conflicted]))
    # Beyond the noise of the medians too (durations that follow no model have no stretch).
    noise = 3 * _spread(ratio[late]) / math.sqrt(min((late & conflicted).sum(),
                                                     (late & ~conflicted).sum()))
    return value if value > 1 + max(STRETCH_MIN, noise) else 1.0


def _spread(ratio: np.ndarray) -> float:
    """The scatter of ratios around their median (the median absolute deviation, scaled to
    a normal distribution's sigma)."""
    if ratio.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(ratio - np.median(ratio))))


def _effects(ratio: np.ndarray, position: np.ndarray, conflicted: np.ndarray, fit: np.ndarray,
             pooled: float) -> dict[str, float | int]:
    """Warm-up and conflict stretch of one engine kind from its observed-to-fitted ratios:
    the stretch is `_stretch` of the instructions not held out (`fit`; `pooled` where that
    cannot tell); warm-up covers the leading queue positions whose median ratio (the stretch
    taken out) is WARMUP_MIN or more above 1, and its factor is their median. Every
    instruction at those positions counts (the few there are: one per engine and trace)."""
    found = _stretch(ratio[fit], position[fit], conflicted[fit])
    stretch = pooled if found is None else found
    unstretched = np.where(conflicted, ratio / stretch, ratio)
    # A warming position stands out of the scatter of the rest (3 sigma), not only by
    # WARMUP_MIN.
    threshold = 1 + max(WARMUP_MIN, 3 * _spread(unstretched[fit & (position >= WARMUP_SCAN)]))
    count = 0
    while count < WARMUP_SCAN:
        at = unstretched[position == count]
        if at.size == 0 or np.median(at) < threshold:
            break
        count += 1
    factor = float(np.median(unstretched[position < count])) if count else 1.0
    return {"warmup_count": count if factor != 1.0 else 0, "warmup_factor": factor,
            "conflict_stretch": stretch}


def _report(data: pl.DataFrame, group_rows: dict[tuple[str, str], np.ndarray],
            opcodes: dict[tuple[str, str], Latency], modelled: np.ndarray, test: np.ndarray,
            base: Machine, effects: dict[str, dict[str, float | int]]) -> Calibration:
    """The fitted machine, and the figures of each group and of all on the held-out
    instructions."""
    y_all = data["observed"].to_numpy()
    rows, warnings = [], []
    for (kind, opcode), idx in group_rows.items():
        latency = opcodes[(kind, opcode)]
        group = data[idx]
        varying = [w for w in WORK if group[w].n_unique() > 1]
        y, p, t = y_all[idx], modelled[idx], test[idx]
        if t.all():
            t = np.zeros(t.size, dtype=bool)
        r2, mape = _r2(y[t], p[t]), _mape(y[t], p[t])
        found = _warning(kind, opcode, varying, r2, mape, float(p[t].mean()) if t.any() else 0)
        if found is not None:
            warnings.append(found)
        rows.append({"engine": kind, "opcode": opcode, "samples": int(y.size),
                     "held_out": int(t.sum()),
                     **{k: getattr(latency, k) for k in FIT_COLUMNS},
                     "fit_r2": _r2(y[~t], p[~t]), "held_out_r2": r2,
                     "held_out_mape_pct": mape,
                     "held_out_median_abs_error": _median_abs(y[t], p[t])})
    for (kind, opcode), latency in opcodes.items():
        for value in latency.coefficients:
            if not math.isfinite(value) or value > MAX_PARAMETER:
                raise CalibrationError(
                    f"the fit of {kind} {shortened(opcode)} gives a coefficient of {value:g}, beyond what "
                    f"a machine file can hold; check that trace's timestamps.")
    # A base entry for a concrete engine and a fitted opcode would win over the fit (the more
    # specific entry is looked up first): the fit replaces it.
    kept = {(e, op): v for (e, op), v in base.opcodes.items()
            if (engine_kind(e), op) not in opcodes or e == engine_kind(e)}
    # The effects found for each engine kind hold for its opcodes no trace showed too (the
    # engine-wide entries), and those of all kinds for the engines no trace showed.
    engines = {name: dataclasses.replace(
        latency, **effects.get(engine_kind(name), effects["default"]))
        for name, latency in base.engines.items()}
    for kind in effects:
        if kind not in engines:
            engines[kind] = dataclasses.replace(base.latency(kind, ""), **effects[kind])
    kept = {key: dataclasses.replace(latency, **effects.get(engine_kind(key[0]),
                                                           effects["default"]))
            for key, latency in kept.items()}
    machine = Machine(**{**base.__dict__, "name": f"{base.name}-calibrated",
                         "engines": engines, "opcodes": {**kept, **opcodes},
                         "source": "<calibrated>"})
    tested = np.zeros(test.size, dtype=bool)
    for idx in group_rows.values():
        if not test[idx].all():
            tested[idx] = test[idx]
    y_t, p_t = y_all[tested], modelled[tested]
    overall = HeldOut(samples=int(y_t.size), r2=_r2(y_t, p_t), mape_pct=_mape(y_t, p_t),
                      median_abs_error=_median_abs(y_t, p_t))
    if overall.r2 is not None and overall.r2 < R2_WARN:
        warnings.append(FitWarning(ALL, ALL, (
            f"over all {overall.samples:,} held-out instructions the fits reach an R2 of only "
            f"{overall.r2:.3f} (below {R2_WARN:g}; MAPE {overall.mape_pct:.1f} %): the latency "
            f"model does not describe this trace's durations; replays on the fitted machine "
            f"will mispredict them.")))
    fits = pl.DataFrame(rows, schema={
        "engine": pl.String, "opcode": pl.String, "samples": pl.Int64, "held_out": pl.Int64,
        **{k: (pl.Int64 if k in ("descriptor_bytes", "warmup_count") else pl.Float64)
           for k in FIT_COLUMNS},
        "fit_r2": pl.Float64, "held_out_r2": pl.Float64,
        "held_out_mape_pct": pl.Float64, "held_out_median_abs_error": pl.Float64})
    return Calibration(machine=machine, fits=fits, held_out=overall, warnings=tuple(warnings))


def _without_effects(machine: Machine) -> Machine:
    """The machine with warm-up and conflict stretch off."""
    off = {"warmup_count": 0, "warmup_factor": 1.0, "conflict_stretch": 1.0}
    return Machine(**{**machine.__dict__,
                      "engines": {k: dataclasses.replace(v, **off)
                                  for k, v in machine.engines.items()},
                      "opcodes": {k: dataclasses.replace(v, **off)
                                  for k, v in machine.opcodes.items()}})


def prediction_errors(trace: Trace, machine: Machine) -> tuple[pl.DataFrame, float, float]:
    """How `machine` predicts a timed trace: per instruction the absolute percentage error of
    its replayed duration against the observed one (`ape`, with engine kind and opcode;
    observed durations under 1 cycle count as 1), the MAPE over them (%) and the makespan
    error ((replayed - observed) / observed, %)."""
    t = replay(trace, machine).timeline.filter(pl.col("observed_end").is_not_null())
    observed = (t["observed_end"] - t["observed_start"]).cast(pl.Float64)
    ape = ((t["duration"] - observed).abs() / observed.clip(1.0)) * 100
    span = int(t["observed_end"].max() - t["observed_start"].min())
    makespan = int(t["end"].max()) - int(t["start"].min())
    frame = pl.DataFrame({"engine": map_names(t["engine"], engine_kind, pl.String),
                          "opcode": t["opcode"], "ape": ape})
    return frame, float(ape.mean()), (makespan - span) / max(span, 1) * 100


def _check(trace: Trace, base: Machine, fitted: Machine, how: str
           ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One unseen trace's errors under the base and the fitted machine: a row of the
    validation table, and its per-opcode MAPE before and after."""
    before, mape_before, span_before = prediction_errors(trace, base)
    after, mape_after, span_after = prediction_errors(trace, fitted)
    row = pl.DataFrame([{"trace": str(trace.path), "workload": trace.manifest.workload,
                         "how": how, "instructions": before.height,
                         "mape_before_pct": mape_before, "mape_after_pct": mape_after,
                         "makespan_error_before_pct": span_before,
                         "makespan_error_after_pct": span_after}])
    ops = (before.with_columns(after["ape"].alias("after"))
           .group_by("engine", "opcode")
           .agg(pl.len().alias("instructions"), pl.col("ape").mean().alias("mape_before_pct"),
                pl.col("after").mean().alias("mape_after_pct")))
    return row, ops.with_columns(pl.col("instructions").cast(pl.Int64),
                                 pl.col("opcode").cast(pl.String))


def _number(value: float) -> str:
    return repr(float(value))


def _string(text: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(text, ensure_ascii=False)


def machine_toml(machine: Machine, note: str = "") -> str:
    """The TOML text of a machine, in the format `load_machine` reads."""
    lines = [f"name = {_string(machine.name)}"]
    if note:
        lines.append(f"description = {_string(note)}")
    lines += [f"clock_hz = {_number(machine.clock_hz)}", "", "[hbm]",
              f"bytes_per_cycle = {_number(machine.hbm_bytes_per_cycle)}", "", "[dma]",
              f"bytes_per_cycle = {_number(machine.dma_bytes_per_cycle)}"]
    if machine.queue_bytes_per_cycle:
        lines += ["", "[dma.queues]"] + [f"{_string(q)} = {_number(v)}"
                                         for q, v in sorted(machine.queue_bytes_per_cycle.items())]
    lines += ["", "[latency]", f"semaphore = {_number(machine.semaphore_latency)}",
              f"data = {_number(machine.data_latency)}", "", "[semaphores]",
              f"counter_bits = {machine.semaphore_bits}", "", "[memory]",
              f"partitions = {machine.partitions}",
              f"sbuf_partition_bytes = {machine.sbuf_partition_bytes}",
              f"psum_partition_bytes = {machine.psum_partition_bytes}"]

    def latency_lines(latency: Latency) -> list[str]:
        lines = [f"{k} = {_number(getattr(latency, k))}" for k in
                 ("fixed_cycles", "per_element", "per_byte", "per_flop")]
        # The effects only where they are on, so a machine without them reads as before.
        if latency.descriptor_bytes:
            lines += [f"per_descriptor = {_number(latency.per_descriptor)}",
                      f"descriptor_bytes = {latency.descriptor_bytes}"]
        if latency.warmup_count:
            lines += [f"warmup_count = {latency.warmup_count}",
                      f"warmup_factor = {_number(latency.warmup_factor)}"]
        if latency.conflict_stretch != 1.0:
            lines.append(f"conflict_stretch = {_number(latency.conflict_stretch)}")
        if latency.max_in_flight != 1:
            lines.append(f"max_in_flight = {latency.max_in_flight}")
        return lines

    engines = sorted(set(machine.engines) | {e for e, _ in machine.opcodes})
    for engine in engines:
        lines += ["", f"[engines.{_string(engine)}]"]
        if engine in machine.engines:
            lines += latency_lines(machine.engines[engine])
        for (e, opcode), latency in sorted(machine.opcodes.items()):
            if e == engine:
                lines += ["", f"[engines.{_string(engine)}.opcodes.{_string(opcode)}]",
                          *latency_lines(latency)]
    text = "\n".join(lines) + "\n"
    parse_machine(tomllib.loads(text), "<calibrated machine>")  # it must load back as written
    return text
