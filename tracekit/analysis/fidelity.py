"""Fidelity of the model against the reference generator: the machine that expresses the
reference's timing, what-if predictions checked against the reference run at the changed
configuration, and the workloads a calibration is fitted on and judged on.

    reference_machine(ReferenceTiming())        # == the built-in trn-like-effects
    whatif_matrix([Workload("gemm", {...})], folder)

A what-if cell: the trace generated at the reference's default timing is replayed with one
change (a machine parameter set, or a group's durations scaled), and the predicted makespan is
compared with the makespan of the same workload and seed generated at the reference timing so
changed. Worked example: gemm with HBM halved: the replay of the default trace on a machine of
96 B/cycle predicts 1,020,000 cycles; the reference at hbm_bytes_per_cycle = 96 runs 1,000,000;
error +2.0 %.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tracekit.analysis.whatif import Change, changed_machine, selects
from tracekit.replay.machine import Latency, Machine
from tracekit.replay.prepared import Prepared
from tracekit.trace.bundle import Trace
from tracekit.workloads.generate import generate
from tracekit.workloads.lowering import Tiling
from tracekit.workloads.timing import ReferenceTiming


def reference_machine(timing: ReferenceTiming, name: str = "trn-like-effects") -> Machine:
    """The machine whose replay reproduces the reference timing `timing` up to its jitter:
    the same latencies, descriptors, warm-up, conflict stretch, bandwidths and latency."""
    effects = {"warmup_count": timing.warmup_count, "warmup_factor": timing.warmup_factor,
               "conflict_stretch": timing.conflict_stretch}
    engines = {
        "default": Latency(fixed_cycles=16.0, **effects),
        "tensor": Latency(fixed_cycles=timing.matmul_fixed,
                          per_flop=1.0 / timing.matmul_flops_per_cycle, **effects),
        "vector": Latency(fixed_cycles=timing.vector_fixed,
                          per_element=1.0 / timing.vector_elements_per_cycle, **effects),
        "scalar": Latency(fixed_cycles=timing.scalar_fixed,
                          per_element=1.0 / timing.scalar_elements_per_cycle, **effects),
        "gpsimd": Latency(fixed_cycles=timing.gpsimd_fixed,
                          per_element=1.0 / timing.gpsimd_elements_per_cycle, **effects),
        "dma": Latency(fixed_cycles=timing.desc_base, per_descriptor=timing.desc_cycles,
                       descriptor_bytes=timing.desc_bytes, **effects),
    }
    return Machine(name=name, clock_hz=timing.clock_hz,
                   hbm_bytes_per_cycle=timing.hbm_bytes_per_cycle,
                   dma_bytes_per_cycle=timing.queue_bytes_per_cycle,
                   semaphore_latency=timing.sem_latency, data_latency=0.0, partitions=128,
                   sbuf_partition_bytes=196608, psum_partition_bytes=16384, engines=engines,
                   source="<reference timing>")


@dataclass(frozen=True)
class Workload:
    """A workload to generate: its name, parameters and seed, and the label of its rows."""

    workload: str
    params: dict[str, Any]
    seed: int = 7
    label: str = ""
    tiling: Tiling = Tiling()

    @property
    def name(self) -> str:
        return self.label or self.workload

    def generate(self, folder: str | os.PathLike[str], timing: ReferenceTiming | None = None,
                 suffix: str = "") -> Trace:
        """The workload's trace at `timing` (the default reference timing if None), in
        `folder`/NAME`suffix`."""
        return generate(self.workload, Path(folder) / f"{self.name}{suffix}",
                        params=self.params, seed=self.seed, tiling=self.tiling,
                        timing=timing or ReferenceTiming(), overwrite=True)


CALIBRATION_FIT = (
    Workload("gemm", {"m": 2048, "n": 2048, "k": 4096}),
    Workload("mlp", {"widths": (1024, 2048, 2048, 512), "batch": 1024}),
)
"""What issue 17 calibrates on: the gemm and mlp samples' shapes."""
CALIBRATION_UNSEEN = (
    Workload("attention", {"seq": 1024, "heads": 8, "head_dim": 128}),
    Workload("conv2d", {"batch": 8, "c": 64, "h": 56, "w": 56, "filters": 128, "r": 3, "s": 3,
                        "stride": 1}, tiling=Tiling(double_buffer=False)),
    Workload("layernorm", {"rows": 16384, "hidden": 1024}),
    Workload("gemm", {"m": 1024, "n": 1536, "k": 2048}, seed=11, label="gemm-other"),
    Workload("mlp", {"widths": (768, 1536, 512), "batch": 512}, seed=12, label="mlp-other"),
)
"""What the calibration is judged on: the other workloads, and gemm and mlp of other shapes
and seeds (conv2d single-buffered, as its sample is)."""


@dataclass(frozen=True)
class WhatIfCase:
    """One change, as the reference takes it (`timing`: ReferenceTiming fields) and as the
    replay does (`sets`: whatif parameters; `scale`: duration factors)."""

    name: str
    timing: dict[str, float]
    sets: dict[str, float] = field(default_factory=dict)
    scale: tuple[Change, ...] = ()


def whatif_cases(base: ReferenceTiming | None = None) -> tuple[WhatIfCase, ...]:
    """The checked changes: HBM bandwidth halved and doubled, DMA queue bandwidth doubled, the
    tensor engine twice as fast, the semaphore latency doubled."""
    t = base or ReferenceTiming()
    return (
        WhatIfCase("hbm_bandwidth x0.5", {"hbm_bytes_per_cycle": t.hbm_bytes_per_cycle / 2},
                   {"hbm_bandwidth": t.hbm_bytes_per_cycle / 2}),
        WhatIfCase("hbm_bandwidth x2", {"hbm_bytes_per_cycle": t.hbm_bytes_per_cycle * 2},
                   {"hbm_bandwidth": t.hbm_bytes_per_cycle * 2}),
        WhatIfCase("dma_bandwidth x2",
                   {"queue_bytes_per_cycle": t.queue_bytes_per_cycle * 2},
                   {"dma_bandwidth": t.queue_bytes_per_cycle * 2}),
        WhatIfCase("tensor x2 faster", {"matmul_fixed": t.matmul_fixed / 2,
                                        "matmul_flops_per_cycle": t.matmul_flops_per_cycle * 2},
                   scale=(Change("engine", "tensor", 0.5),)),
        WhatIfCase("semaphore_latency x2", {"sem_latency": t.sem_latency * 2},
                   {"semaphore_latency": t.sem_latency * 2}),
    )


def observed_makespan(trace: Trace) -> int:
    frame = trace.read("instructions", ["start", "end"])
    return int(frame["end"].max() - frame["start"].min())


def whatif_matrix(workloads: list[Workload], folder: str | os.PathLike[str],
                  machine: Machine | None = None,
                  cases: tuple[WhatIfCase, ...] | None = None) -> pl.DataFrame:
    """Each workload under each case. Columns: workload, change, reference (the reference's
    makespan at the changed configuration, cycles), predicted (the replay's, of the trace
    generated at the default configuration, with the change), error_pct ((predicted -
    reference) / reference, %), base_reference and base_predicted (both without the change).
    `machine`: the replay's (default: `reference_machine` of the default timing)."""
    folder = Path(folder)
    timing = ReferenceTiming()
    machine = machine or reference_machine(timing)
    rows = []
    for w in workloads:
        trace = w.generate(folder, timing, "-base")
        prepared = Prepared(trace, machine)
        base_predicted = prepared.measure().makespan
        base_reference = observed_makespan(trace)
        for i, case in enumerate(cases or whatif_cases(timing)):
            changed = w.generate(folder, dataclasses.replace(timing, **case.timing), f"-{i}")
            factor = _factors(prepared, case.scale)
            predicted = prepared.measure(changed_machine(machine, case.sets), factor).makespan
            reference = observed_makespan(changed)
            rows.append((w.name, case.name, reference, predicted,
                         (predicted - reference) / reference * 100, base_reference,
                         base_predicted))
    return pl.DataFrame(rows, schema={
        "workload": pl.String, "change": pl.String, "reference": pl.Int64,
        "predicted": pl.Int64, "error_pct": pl.Float64, "base_reference": pl.Int64,
        "base_predicted": pl.Int64}, orient="row")


def _factors(prepared: Prepared, scale: tuple[Change, ...]) -> np.ndarray | None:
    """The duration factors of `scale`; a group the trace does not have (a layer norm has no
    tensor engine) changes nothing."""
    factor = np.ones(prepared.n)
    for c in scale:
        try:
            factor[selects(prepared.frame, c.group, c.name)] *= c.factor
        except KeyError:
            continue
    return factor if scale else None
