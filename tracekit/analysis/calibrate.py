"""Calibration: fit the latency model of every (engine kind, opcode) to observed durations and
write a machine file that `tracekit replay --machine` accepts.

Each fit is duration = fixed + per_element * elements + per_byte * bytes + per_flop * flops,
over the work columns that vary within the group, by iteratively reweighted least squares with
Huber weights (outliers such as warm-up or a stuck instruction pull little), coefficients kept
non-negative. For DMA the replay moves the bytes itself under HBM sharing, so the set-up is
fitted to the observed time minus the replay's own transfer time. Worked example: matmuls
observed at 64 + flops / 32768 cycles plus noise fit to fixed ~ 64, per_flop ~ 3.05e-5.
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


class CalibrationError(TracekitError):
    """Nothing to fit: an untimed trace, or no instructions."""


@dataclass(frozen=True)
class Calibration:
    """The fitted machine and one row per fit.

    `fits`: engine (kind), opcode, samples, fixed_cycles, per_element, per_byte, per_flop,
    r2 (of the fit on its samples), mape_pct (mean absolute percentage error, %).
    """

    machine: Machine
    fits: pl.DataFrame


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
        frame = trace.in_cycles(frame)  # the model's parameters are in cycles
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
        coef = _huber_fit(x, y - offset)
        fitted = {**kept, **dict(zip(["fixed_cycles", *[COEFF[w] for w in varying]],
                                     coef.tolist(), strict=True))}
        latency = Latency(**{k: float(v) for k, v in fitted.items()})
        opcodes[(kind, opcode)] = latency
        # Quality against the observed durations themselves (the DMA transfer part added back).
        moved = group["transfer"].fill_null(0).to_numpy() if kind == "dma" else 0.0
        predicted = x @ coef + offset + moved
        y = y + moved
        ss_res = float(((y - predicted) ** 2).sum())
        ss_tot = float(((y - y.mean()) ** 2).sum())
        rows.append({"engine": kind, "opcode": opcode, "samples": int(y.size),
                     "fixed_cycles": latency.fixed_cycles, "per_element": latency.per_element,
                     "per_byte": latency.per_byte, "per_flop": latency.per_flop,
                     "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0,
                     "mape_pct": float(np.mean(np.abs(predicted - y) / np.maximum(y, 1)) * 100)})
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
    return Calibration(machine=machine, fits=pl.DataFrame(rows))


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
