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

import json
import math
import tomllib
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.replay.machine import MAX_PARAMETER, Latency, Machine, engine_kind, parse_machine
from tracekit.replay.run import replay
from tracekit.trace.bundle import Trace

WORK = ("elements", "bytes", "flops")
COEFF = {"elements": "per_element", "bytes": "per_byte", "flops": "per_flop"}
HUBER_K = 1.345
HELD_OUT_EVERY = 5
"""One instruction in this many is held out of the fit (20 %)."""
R2_WARN = 0.5
"""A held-out R2 below this is a poor fit."""
MAPE_WARN = 20.0
"""For a group of one shape (R2 undefined): a held-out MAPE above this, in %, is a poor fit."""
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
    the MAPE says how good it is) or the durations do not vary. Sorted by engine, opcode.
    """

    machine: Machine
    fits: pl.DataFrame
    held_out: HeldOut
    warnings: tuple[FitWarning, ...]


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
                f"time under HBM sharing" if kind == "dma" else f"linear in {work}")
        return FitWarning(kind, opcode, (
            f"{kind} {opcode}: held-out R2 {r2:.3f} (below {R2_WARN:g}; MAPE {mape:.1f} %): "
            f"its duration is not {form}, so the model will mispredict it; check for "
            f"contention or data-dependent latency."))
    if r2 is None and mape > MAPE_WARN:
        return FitWarning(kind, opcode, (
            f"{kind} {opcode}: every instance has the same work, yet held-out durations are "
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


def calibrate(traces: list[Trace], base: Machine) -> Calibration:
    """Fit `base`'s latency model to the observed durations of `traces`."""
    frames = []
    transfer_only = _without_dma_setup(base)
    for trace in traces:
        frame = trace.read("instructions", ["id", "engine", "opcode", "start", "end", *WORK])
        if frame.height == 0 or frame["start"].null_count() == frame.height:
            raise CalibrationError(f"{trace.path}: the trace has no observed timing to fit; "
                                   f"calibration needs a timed trace (from RTL or a timed "
                                   f"model).")
        frame = trace.in_cycles(frame, base.clock_hz)  # the model counts its cycles
        # A DMA's observed time is set-up plus moving its bytes under HBM sharing; the replay
        # models the second part itself, so fit the set-up to what is left once the replay's
        # own transfer time (a replay with no set-up) is taken out.
        transfer = replay(trace, transfer_only).timeline.select(
            "id", pl.col("duration").cast(pl.Float64).alias("transfer"))
        frame = frame.join(transfer, on="id", how="left", maintain_order="left")
        frames.append(frame.drop_nulls(["start", "end"]))
    data = pl.concat(frames).with_columns(
        pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
        *[pl.col(w).fill_null(0).cast(pl.Float64) for w in WORK])
    is_dma = pl.col("engine").str.starts_with("dma.") | (pl.col("engine") == "dma")
    data = data.with_columns(
        ((pl.col("end") - pl.col("start")).cast(pl.Float64)
         - pl.when(is_dma).then(pl.col("transfer").fill_null(0)).otherwise(0)).clip(0)
        .alias("duration"))
    data = data.with_columns(pl.col("engine").map_elements(engine_kind, return_dtype=pl.String)
                             .alias("kind"))
    rows = []
    opcodes: dict[tuple[str, str], Latency] = {}
    tested: list[tuple[np.ndarray, np.ndarray]] = []  # each group's held-out y, prediction
    warnings = []
    for (kind, opcode), group in sorted(data.group_by(["kind", "opcode"]),
                                        key=lambda g: (g[0][0], g[0][1])):
        y = group["duration"].to_numpy()
        varying = [w for w in WORK if group[w].n_unique() > 1]
        # A work size that never varies in the samples cannot be fitted: keep the base
        # machine's cost per unit for it (so the fit extrapolates to other shapes) and fit the
        # rest on what remains.
        prior = base.latency(kind, opcode)
        kept = {COEFF[w]: getattr(prior, COEFF[w]) for w in WORK if w not in varying}
        offset = sum(kept[COEFF[w]] * group[w].to_numpy() for w in WORK if w not in varying)
        x = np.column_stack([np.ones(y.size)] + [group[w].to_numpy() for w in varying])
        test = held_out(group["id"].to_numpy())
        if test.all() or not test.any():  # too few to spare any: fit on all, test on none
            test = np.zeros(y.size, dtype=bool)
        fit = ~test
        coef = _huber_fit(x[fit], (y - offset)[fit])
        fitted = {**kept, **dict(zip(["fixed_cycles", *[COEFF[w] for w in varying]],
                                     coef.tolist(), strict=True))}
        latency = Latency(**{k: float(v) for k, v in fitted.items()})
        opcodes[(kind, opcode)] = latency
        # Quality against the observed durations themselves (the DMA transfer part added back).
        moved = group["transfer"].fill_null(0).to_numpy() if kind == "dma" else 0.0
        predicted = x @ coef + offset + moved
        y = y + moved
        y_test, p_test = y[test], predicted[test]
        tested.append((y_test, p_test))
        r2, mape = _r2(y_test, p_test), _mape(y_test, p_test)
        found = _warning(kind, opcode, varying, r2, mape,
                         float(p_test.mean()) if p_test.size else 0.0)
        if found is not None:
            warnings.append(found)
        rows.append({"engine": kind, "opcode": opcode, "samples": int(y.size),
                     "held_out": int(test.sum()),
                     "fixed_cycles": latency.fixed_cycles, "per_element": latency.per_element,
                     "per_byte": latency.per_byte, "per_flop": latency.per_flop,
                     "fit_r2": _r2(y[fit], predicted[fit]), "held_out_r2": r2,
                     "held_out_mape_pct": mape,
                     "held_out_median_abs_error": _median_abs(y_test, p_test)})
    for (kind, opcode), latency in opcodes.items():
        for value in (latency.fixed_cycles, latency.per_element, latency.per_byte,
                      latency.per_flop):
            if not math.isfinite(value) or value > MAX_PARAMETER:
                raise CalibrationError(
                    f"the fit of {kind} {opcode} gives a coefficient of {value:g}, beyond what "
                    f"a machine file can hold; check that trace's timestamps.")
    # A base entry for a concrete engine and a fitted opcode would win over the fit (the more
    # specific entry is looked up first): the fit replaces it.
    kept = {(e, op): v for (e, op), v in base.opcodes.items()
            if (engine_kind(e), op) not in opcodes or e == engine_kind(e)}
    machine = Machine(**{**base.__dict__, "name": f"{base.name}-calibrated",
                         "opcodes": {**kept, **opcodes}, "source": "<calibrated>"})
    y_all = np.concatenate([y for y, _ in tested])
    p_all = np.concatenate([p for _, p in tested])
    overall = HeldOut(samples=int(y_all.size), r2=_r2(y_all, p_all), mape_pct=_mape(y_all, p_all),
                      median_abs_error=_median_abs(y_all, p_all))
    if overall.r2 is not None and overall.r2 < R2_WARN:
        warnings.append(FitWarning(ALL, ALL, (
            f"over all {overall.samples:,} held-out instructions the fits reach an R2 of only "
            f"{overall.r2:.3f} (below {R2_WARN:g}; MAPE {overall.mape_pct:.1f} %): the latency "
            f"model does not describe this trace's durations; replays on the fitted machine "
            f"will mispredict them.")))
    fits = pl.DataFrame(rows, schema={
        "engine": pl.String, "opcode": pl.String, "samples": pl.Int64, "held_out": pl.Int64,
        "fixed_cycles": pl.Float64, "per_element": pl.Float64, "per_byte": pl.Float64,
        "per_flop": pl.Float64, "fit_r2": pl.Float64, "held_out_r2": pl.Float64,
        "held_out_mape_pct": pl.Float64, "held_out_median_abs_error": pl.Float64})
    return Calibration(machine=machine, fits=fits, held_out=overall, warnings=tuple(warnings))


def _without_dma_setup(machine: Machine) -> Machine:
    """The machine with every DMA set-up at zero: a replay on it times transfers alone."""
    engines = {k: (Latency() if engine_kind(k) == "dma" else v)
               for k, v in machine.engines.items()}
    engines.setdefault("dma", Latency())
    opcodes = {k: v for k, v in machine.opcodes.items() if engine_kind(k[0]) != "dma"}
    return Machine(**{**machine.__dict__, "engines": engines, "opcodes": opcodes})


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
        return [f"{k} = {_number(getattr(latency, k))}" for k in
                ("fixed_cycles", "per_element", "per_byte", "per_flop")]

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
