"""The bundles of `sample_traces/`, defined once: `python sample_traces/regenerate.py` writes
them, and a test regenerates them to check that the checked-in copies are current.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit.workloads.generate import generate
from tracekit.workloads.lowering import Tiling


@dataclass(frozen=True)
class Sample:
    name: str
    workload: str
    shows: str
    params: dict[str, Any] = field(default_factory=dict)
    inject: tuple[str, ...] = ()
    untimed: bool = False
    tiling: Tiling = Tiling()
    seed: int = 7


SAMPLES: tuple[Sample, ...] = (
    Sample("gemm", "gemm", "a clean 2048 x 2048 x 4096 GEMM over four DMA queues with double "
           "buffering: the reference for the other samples",
           {"m": 2048, "n": 2048, "k": 4096}),
    Sample("gemm_faults", "gemm", "the same GEMM with a missing semaphore wait (a read-before-"
           "write race on SBUF) and one DMA queue four times slower",
           {"m": 2048, "n": 2048, "k": 4096}, inject=("missing-wait", "slow-queue")),
    Sample("mlp", "mlp", "a 3-layer MLP (1024 -> 2048 -> 2048 -> 512, batch 1024, GELU) with "
           "layers fc1..fc3 for attribution",
           {"widths": (1024, 2048, 2048, 512), "batch": 1024, "activation": "gelu"}),
    Sample("mlp_faults", "mlp", "the MLP with a wait that no signal reaches (deadlock: the "
           "trace stops there) and signals nobody consumes (semaphore leak)",
           {"widths": (1024, 2048, 2048, 512), "batch": 1024, "activation": "gelu"},
           inject=("deadlock", "sem-leak")),
    Sample("attention", "attention", "an attention block (sequence 1024, 8 heads of 128): "
           "QK^T, a softmax on the vector and scalar engines, PV",
           {"seq": 1024, "heads": 8, "head_dim": 128}),
    Sample("attention_faults", "attention", "the attention block with a timestamp that "
           "precedes its producer's end, a stuck instruction and an SBUF access past capacity",
           {"seq": 1024, "heads": 8, "head_dim": 128},
           inject=("timestamp-skew", "stuck-engine", "oob")),
    Sample("conv2d", "conv2d", "a 3x3 convolution (8 x 64 x 56 x 56 -> 128 channels) lowered as "
           "im2col matmuls, with single buffering",
           {"batch": 8, "c": 64, "h": 56, "w": 56, "filters": 128, "r": 3, "s": 3,
            "stride": 1},
           tiling=Tiling(double_buffer=False)),
    Sample("layernorm_untimed", "layernorm", "a functional-only trace (no timing) of a layer "
           "norm over 65536 rows of 1024",
           {"rows": 65536, "hidden": 1024}, untimed=True),
)


def write_sample(sample: Sample, folder: str | os.PathLike[str]) -> Path:
    path = Path(folder) / sample.name
    generate(sample.workload, path, params=sample.params, tiling=sample.tiling,
             seed=sample.seed, untimed=sample.untimed, inject=sample.inject, overwrite=True)
    return path


def readme() -> str:
    lines = ["# sample_traces", "",
             "Bundles made by tracekit's own workload generator "
             "(`python sample_traces/regenerate.py` rewrites them all; a test checks they are "
             "current). Each manifest's `extra.generator` records the parameters, the timing "
             "effects and the ground truth of injected faults.", ""]
    lines += [f"- `{s.name}`: {s.shows}." for s in SAMPLES]
    return "\n".join(lines) + "\n"


def write_all(folder: str | os.PathLike[str]) -> None:
    for sample in SAMPLES:
        write_sample(sample, folder)
    (Path(folder) / "README.md").write_text(readme(), encoding="utf-8")
