"""The reference workload generator: lower a workload, time it, inject faults, write a bundle.

    generate("gemm", out, params={"m": 512, "n": 512, "k": 512}, seed=1)

gives a bundle whose manifest `extra.generator` records the workload, its parameters, the
tiling, the seed, the timing effects and their parameters, and the ground truth of every
injected fault. The same arguments give byte-identical bundles. `plan` checks the same
arguments and counts the instructions without lowering (what `tracekit generate --dry-run`
prints).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from tracekit import __version__, progress
from tracekit.trace.bundle import Trace, write_trace
from tracekit.trace.manifest import Producer
from tracekit.trace.schema import Access, MemSpace, SemOp
from tracekit.workloads.faults import (
    Fault,
    TimingChanges,
    inject_program_fault,
    inject_skew,
)
from tracekit.workloads.lowering import ELEM, Counter, Lowerer, Tiling
from tracekit.workloads.params import (
    Attention,
    Conv2d,
    Gemm,
    LayerNorm,
    Mlp,
    WorkloadError,
    and_list,
    as_name,
    defaulted,
    value_text,
    workload_params,
)
from tracekit.workloads.program import Lowered
from tracekit.workloads.timing import ReferenceTiming, observe


def lower(params: Any, tiling: Tiling, layer: str | None = None) -> Lowered:
    """The program of one workload."""
    low = Lowerer(tiling)
    _build(params, low, layer)
    return low.prog.finish()


def count_instructions(params: Any, tiling: Tiling) -> int:
    """The number of instructions `lower` gives, from the tile arithmetic alone (no program is
    built). ValueError on a shape the lowering refuses (a row that does not fit SBUF)."""
    counter = Counter(tiling)
    _build(params, counter, None)
    return counter.instructions


def _build(params: Any, low: Lowerer | Counter, layer: str | None) -> None:
    """A workload's layers, in program order, as calls on a Lowerer (or a Counter)."""
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
        image = params.batch * params.c * params.h * params.w * ELEM
        x = low.alloc(image)
        kk = params.c * params.r * params.s
        wgt = low.alloc(kk * params.filters * ELEM)
        low.gemm(params.batch * ho * wo, params.filters, kk, a_addr=x, b_addr=wgt,
                 layer=layer or "conv", evacuate="relu", a_load="dma_im2col",
                 a_size=image)
    elif isinstance(params, LayerNorm):
        x = low.alloc(params.rows * params.hidden * ELEM)
        low.rowwise(params.rows, params.hidden,
                    [("vector", "bn_stats", 1), ("vector", "bn_aggr", 1),
                     ("scalar", "normalize", 1)], in_addr=x, layer=layer or "layernorm")


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


@dataclass(frozen=True)
class Plan:
    """What `generate` will lower, checked: the workload's parameters (defaults filled in),
    which of them the caller left to their defaults, the tiling, the faults, and the number
    of instructions, counted from the lowering's tile arithmetic without building them."""

    workload: str
    params: Any
    defaulted: tuple[str, ...]
    tiling: Tiling
    faults: tuple[Fault, ...]
    untimed: bool
    instructions: int

    def describe(self) -> str:
        """The shape in one line, e.g. `gemm m=100 n=512 k=512, tiles 128x512x128, 4 DMA
        queues, double-buffered; n and k defaulted`: every parameter with its value, the
        tiles of the GEMMs after clamping (layernorm has none), and what was defaulted or
        clamped."""
        t = self.tiling
        values = " ".join(f"{name}={value_text(value)}"
                          for name, value in asdict(self.params).items())
        parts = [f"{self.workload} {values}"]
        has_gemm = not isinstance(self.params, LayerNorm)
        tiles = t.tiles()
        if has_gemm:
            parts.append("tiles " + "x".join(str(v) for v in tiles))
        parts.append(f"{t.dma_queues} DMA queue{'s' if t.dma_queues != 1 else ''}, "
                     f"{'double' if t.double_buffer else 'single'}-buffered")
        notes = [f"{and_list(list(self.defaulted))} defaulted"] if self.defaulted else []
        if has_gemm:
            notes += [f"{name} {asked} clamped to {used}" for name, asked, used in zip(
                ("tile_m", "tile_n", "tile_k"), (t.tile_m, t.tile_n, t.tile_k), tiles,
                strict=True) if asked != used]
        return "; ".join([", ".join(parts), *notes])


def plan(workload: str, *, params: dict[str, Any] | None = None, tiling: Tiling | None = None,
         untimed: bool = False, inject: list[str] | tuple[str, ...] = (),
         spell: Callable[[str], str] = as_name) -> Plan:
    """Check what `generate` is asked for and size it, without lowering: WorkloadError on an
    unknown workload, a value out of range, a bad tiling or fault; ParameterError on a
    parameter the workload does not take. `spell` writes parameter names in messages."""
    given = params or {}
    record = workload_params(workload, given, spell)
    tiling = tiling or Tiling()
    if min(tiling.tile_m, tiling.tile_n, tiling.tile_k, tiling.dma_queues,
           tiling.epoch_steps) < 1:
        raise WorkloadError("tile sizes, the number of DMA queues and the steps per "
                            "synchronisation epoch must be positive.")
    try:
        faults = tuple(Fault(f) for f in inject)
    except ValueError as exc:
        raise WorkloadError(f"unknown fault {exc.args[0].split()[0]}; choose from "
                            f"{', '.join(f.value for f in Fault)}.") from None
    if untimed and {Fault.SLOW_QUEUE, Fault.STUCK_ENGINE, Fault.TIMESTAMP_SKEW} & set(faults):
        raise WorkloadError("slow-queue, stuck-engine and timestamp-skew change timing; they "
                            "need a timed trace (drop --untimed).")
    try:
        count = count_instructions(record, tiling)
    except ValueError as exc:
        raise WorkloadError(f"{workload}: {exc}.") from None
    return Plan(workload, record, defaulted(workload, given), tiling, faults, untimed, count)


def generate(workload: str, path: str | os.PathLike[str], *, params: dict[str, Any] | None = None,
             tiling: Tiling | None = None, seed: int = 0, untimed: bool = False,
             inject: list[str] | tuple[str, ...] = (), layer: str | None = None,
             timing: ReferenceTiming | None = None, overwrite: bool = False) -> Trace:
    """Generate a workload's trace bundle at `path` (see the module docstring); it holds
    `plan(...).instructions` instructions."""
    planned = plan(workload, params=params, tiling=tiling, untimed=untimed, inject=inject)
    # Progress: lowering, timing, then each table written (counted in instructions).
    stage = progress.step(f"generating {planned.instructions:,} instructions", total=5)
    with stage as steps:
        return _generate(workload, path, planned, seed, untimed, layer, timing, overwrite, steps)


def _generate(workload: str, path: str | os.PathLike[str], planned: Plan, seed: int,
              untimed: bool, layer: str | None, timing: ReferenceTiming | None,
              overwrite: bool, steps: progress.Step) -> Trace:
    record, tiling, faults = planned.params, planned.tiling, planned.faults
    timing = timing or ReferenceTiming()
    rng = np.random.default_rng([seed, 1])
    changes = TimingChanges(slow_engine={}, stretch={})
    truth: dict[int, dict[str, Any]] = {}  # by position in `inject`, to report in that order
    try:
        prog = lower(record, tiling, layer)
        steps.advance()
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
    steps.advance()
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
        steps.advance()
        return frame

    def table(build: Callable[[Lowered], pl.DataFrame]) -> Callable[[], pl.DataFrame]:
        def built() -> pl.DataFrame:
            frame = build(prog)
            steps.advance()
            return frame
        return built

    # Tables are built one at a time as the writer asks for them, from arrays they consume.
    return write_trace(path, instructions, semaphores=table(semaphores_frame),
                       memory=table(memory_frame), workload=name,
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


