"""The reference workload generator: lower a workload, time it, inject faults, write a bundle.

    generate("gemm", out, params={"m": 512, "n": 512, "k": 512}, seed=1)

gives a bundle whose manifest `extra.generator` records the workload, its parameters, the
tiling, the seed, the timing effects and their parameters, and the ground truth of every
injected fault. The same arguments give byte-identical bundles.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from tracekit import __version__
from tracekit.errors import TracekitError
from tracekit.trace.bundle import Trace, write_trace
from tracekit.trace.manifest import Producer
from tracekit.trace.schema import Access, MemSpace, SemOp
from tracekit.workloads.faults import (
    Fault,
    TimingChanges,
    inject_program_fault,
    inject_skew,
)
from tracekit.workloads.lowering import ELEM, Lowerer, Tiling
from tracekit.workloads.program import Lowered
from tracekit.workloads.timing import ReferenceTiming, observe


class WorkloadError(TracekitError):
    """Unknown workload, parameter out of range, or a fault the workload cannot host."""


@dataclass(frozen=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n]."""

    m: int = 512
    n: int = 512
    k: int = 512


@dataclass(frozen=True)
class Mlp:
    """A stack of fully connected layers: widths[0] -> widths[1] -> ... on `batch` rows."""

    widths: tuple[int, ...] = (512, 1024, 1024, 256)
    batch: int = 256
    activation: str = "relu"


@dataclass(frozen=True)
class Attention:
    """Per head: S = Q K^T, P = softmax(S), O = P V."""

    seq: int = 256
    heads: int = 2
    head_dim: int = 64


@dataclass(frozen=True)
class Conv2d:
    """A convolution lowered as an im2col matmul: [n*ho*wo, c*r*s] @ [c*r*s, k]."""

    n: int = 1
    c: int = 64
    h: int = 28
    w: int = 28
    k: int = 64
    r: int = 3
    s: int = 3
    stride: int = 1


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation over `hidden` of `rows` rows."""

    rows: int = 2048
    hidden: int = 1024


WORKLOADS: dict[str, type] = {"gemm": Gemm, "mlp": Mlp, "attention": Attention,
                              "conv2d": Conv2d, "layernorm": LayerNorm}
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


def workload_params(workload: str, given: dict[str, Any]) -> Any:
    """The parameter record of `workload` from the options given; WorkloadError on a name the
    workload does not take or a value out of range."""
    if workload not in WORKLOADS:
        raise WorkloadError(f"unknown workload {workload!r}; choose one of "
                            f"{', '.join(WORKLOADS)}.")
    cls = WORKLOADS[workload]
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise WorkloadError(f"{workload} takes {', '.join(sorted(names))}; not "
                            f"{', '.join(unknown)}.")
    params = cls(**given)
    for f in fields(params):
        value = getattr(params, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if f.name != "activation" and any(not isinstance(v, int) or v < 1 for v in values):
            raise WorkloadError(f"{workload}: {f.name} must be a positive integer, not "
                                f"{value!r}.")
    if isinstance(params, Mlp):
        if len(params.widths) < 2:
            raise WorkloadError("mlp: widths needs at least two values (input and output).")
        if params.activation not in ACTIVATIONS:
            raise WorkloadError(f"mlp: activation must be one of {', '.join(ACTIVATIONS)}.")
    if isinstance(params, Conv2d) and (params.h < params.r or params.w < params.s):
        raise WorkloadError("conv2d: the kernel (r, s) is larger than the image (h, w).")
    return params


def lower(params: Any, tiling: Tiling, layer: str | None = None) -> Lowered:
    """The program of one workload."""
    low = Lowerer(tiling)
    if isinstance(params, Gemm):
        a = low.alloc(params.m * params.k * ELEM)
        b = low.alloc(params.k * params.n * ELEM)
        low.gemm(params.m, params.n, params.k, a_addr=a, b_addr=b, layer=layer or "gemm",
                 evacuate="copy")
    elif isinstance(params, Mlp):
        x = low.alloc(params.batch * params.widths[0] * ELEM)
        depth = len(params.widths) - 1
        for i, (w_in, w_out) in enumerate(zip(params.widths, params.widths[1:], strict=False)):
            w = low.alloc(w_in * w_out * ELEM)
            x = low.gemm(params.batch, w_out, w_in, a_addr=x, b_addr=w,
                         layer=f"{layer or 'fc'}{i + 1}", pc_base=100 * i,
                         evacuate=params.activation if i < depth - 1 else "copy")
    elif isinstance(params, Attention):
        size = params.seq * params.head_dim * ELEM
        for h in range(params.heads):
            q, k, v = low.alloc(size), low.alloc(size), low.alloc(size)
            name = f"{layer or 'attn'}.h{h}"
            s = low.gemm(params.seq, params.seq, params.head_dim, a_addr=q, b_addr=k,
                         layer=f"{name}.qk", evacuate="copy", pc_base=0)
            p = low.rowwise(params.seq, params.seq,
                            [("vector", "reduce_max", 1), ("scalar", "exp", 1),
                             ("vector", "reduce_sum", 1), ("vector", "scale", 1)],
                            in_addr=s, layer=f"{name}.softmax", pc_base=100)
            low.gemm(params.seq, params.head_dim, params.seq, a_addr=p, b_addr=v,
                     layer=f"{name}.pv", evacuate="copy", pc_base=200)
    elif isinstance(params, Conv2d):
        ho = (params.h - params.r) // params.stride + 1
        wo = (params.w - params.s) // params.stride + 1
        image = params.n * params.c * params.h * params.w * ELEM
        x = low.alloc(image)
        kk = params.c * params.r * params.s
        wgt = low.alloc(kk * params.k * ELEM)
        low.gemm(params.n * ho * wo, params.k, kk, a_addr=x, b_addr=wgt,
                 layer=layer or "conv", evacuate="relu", a_load="dma_im2col",
                 a_size=image)
    elif isinstance(params, LayerNorm):
        x = low.alloc(params.rows * params.hidden * ELEM)
        low.rowwise(params.rows, params.hidden,
                    [("vector", "bn_stats", 1), ("vector", "bn_aggr", 1),
                     ("scalar", "normalize", 1)], in_addr=x, layer=layer or "layernorm")
    return low.prog.finish()


def _categorical(codes: np.ndarray, names: tuple[str, ...] | list[str]) -> pl.Series:
    """Integer codes (-1 for null) as a categorical column of `names`."""
    mask = codes < 0
    indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask if mask.any()
                       else None)
    return pl.from_arrow(pa.DictionaryArray.from_arrays(indices, list(names) or [""]))


def _nullable(values: np.ndarray) -> pl.Series:
    return pl.Series(values).set(pl.Series(values < 0), None) if (values < 0).any() \
        else pl.Series(values)


def instructions_frame(prog: Lowered, start: np.ndarray | None,
                       end: np.ndarray | None) -> pl.DataFrame:
    """The instructions table; consumes the program's instruction columns."""
    inst = prog.inst
    n = prog.size
    untimed = pl.Series([None] * n, dtype=pl.Int64)
    return pl.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "engine": _categorical(inst.pop("engine"), prog.engines),
        "seq": inst.pop("seq"),
        "opcode": _categorical(inst.pop("opcode"), prog.opcodes),
        "start": untimed if start is None else _nullable(start),
        "end": untimed if end is None else _nullable(end),
        "elements": _nullable(inst.pop("elements")),
        "bytes": _nullable(inst.pop("bytes")),
        "flops": _nullable(inst.pop("flops")),
        "layer": _categorical(inst.pop("layer"), prog.layers),
        "pc": _nullable(inst.pop("pc")),
    })


def semaphores_frame(prog: Lowered) -> pl.DataFrame:
    """The semaphores table; consumes the program's semaphore rows."""
    sems = prog.sems
    return pl.DataFrame({
        "inst": sems.pop("inst"), "sem": sems.pop("sem"),
        "op": _categorical(sems.pop("op"), [o.value for o in SemOp]),
        "value": sems.pop("value"),
    })


def memory_frame(prog: Lowered) -> pl.DataFrame:
    """The memory table; consumes the program's memory rows."""
    mem = prog.mem
    return pl.DataFrame({
        "inst": mem.pop("inst"),
        "space": _categorical(mem.pop("space"), [s.value for s in MemSpace]),
        "access": _categorical(mem.pop("access"), [a.value for a in Access]),
        "addr": mem.pop("addr"), "size": mem.pop("size"),
        "partition": _nullable(mem.pop("partition")),
        "partitions": _nullable(mem.pop("partitions")),
    })


def generate(workload: str, path: str | os.PathLike[str], *, params: dict[str, Any] | None = None,
             tiling: Tiling | None = None, seed: int = 0, untimed: bool = False,
             inject: list[str] | tuple[str, ...] = (), layer: str | None = None,
             timing: ReferenceTiming | None = None, overwrite: bool = False) -> Trace:
    """Generate a workload's trace bundle at `path` (see the module docstring)."""
    record = workload_params(workload, params or {})
    tiling = tiling or Tiling()
    if min(tiling.tile_m, tiling.tile_n, tiling.tile_k, tiling.dma_queues,
           tiling.epoch_steps) < 1:
        raise WorkloadError("tile sizes, the number of DMA queues and the steps per "
                            "synchronisation epoch must be positive.")
    timing = timing or ReferenceTiming()
    try:
        faults = [Fault(f) for f in inject]
    except ValueError as exc:
        raise WorkloadError(f"unknown fault {exc.args[0].split()[0]}; choose from "
                            f"{', '.join(f.value for f in Fault)}.") from None
    if untimed and {Fault.SLOW_QUEUE, Fault.STUCK_ENGINE, Fault.TIMESTAMP_SKEW} & set(faults):
        raise WorkloadError("slow-queue, stuck-engine and timestamp-skew change timing; they "
                            "need a timed trace (drop --untimed).")
    rng = np.random.default_rng([seed, 1])
    changes = TimingChanges(slow_engine={}, stretch={})
    truth: dict[int, dict[str, Any]] = {}  # by position in `inject`, to report in that order
    try:
        prog = lower(record, tiling, layer)
        for i, fault in enumerate(faults):
            if fault is not Fault.TIMESTAMP_SKEW:
                truth[i] = inject_program_fault(prog, fault, rng, changes)
        start = end = None
        if not untimed:
            start, end = observe(prog, timing, seed, changes.slow_engine, changes.stretch)
            for i, fault in enumerate(faults):
                if fault is Fault.TIMESTAMP_SKEW:
                    truth[i] = inject_skew(prog, start, end, rng)
    except ValueError as exc:
        raise WorkloadError(f"{workload}: {exc}.") from None
    extra = {"generator": {
        "workload": workload,
        "params": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in asdict(record).items()},
        "tiling": asdict(tiling),
        "seed": seed,
        "timing": None if untimed else {
            "model": "in-order engines, semaphore waits, DMA queues sharing HBM bandwidth",
            "effects": ["jitter", "dma_descriptor_overhead", "sbuf_partition_conflicts",
                        "warmup"],
            "parameters": timing.to_dict()},
        "faults": [truth[i] for i in sorted(truth)],
    }}
    name = f"{workload}_" + "x".join(str(v) for v in _shape(record))
    timed = [start, end]
    del start, end

    def instructions() -> pl.DataFrame:
        frame = instructions_frame(prog, timed[0], timed[1])
        timed.clear()  # release the observed times once they are in the frame
        return frame

    # Tables are built one at a time as the writer asks for them, from arrays they consume.
    return write_trace(path, instructions, semaphores=lambda: semaphores_frame(prog),
                       memory=lambda: memory_frame(prog), workload=name,
                       producer=Producer("tracekit.workloads", __version__),
                       machine="trn-like", clock_hz=timing.clock_hz, created=None,
                       extra=extra, overwrite=overwrite)


def _shape(params: Any) -> list[int]:
    out: list[int] = []
    for value in asdict(params).values():
        if isinstance(value, (list, tuple)):
            out.extend(value)
        elif isinstance(value, int):
            out.append(value)
    return out


