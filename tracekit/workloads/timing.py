"""The generator's reference timing: what the "RTL" observed. A first-order latency model plus
effects a first-order model does not capture, so that fitting a model to it is a real problem.

Worked example (no effects): a 4096-byte DMA load on an idle machine takes
desc_base + desc_cycles * ceil(4096 / desc_bytes) + 4096 / min(queue_bw, hbm_bw) cycles; a
matmul waiting on it starts sem_latency cycles after the load ends, and its engine's next
instruction starts when it ends (engines are in-order).

An event loop over in-order engines, compiled with numba: each instruction starts when its
engine is free and every semaphore wait is satisfied (the end of the change that brings the
count to the wait's value, counted in program order from the last reset, plus the semaphore
latency: `satisfying_signals`). A DMA transfer first processes its descriptors
(desc_base + desc_cycles per descriptor), then moves its bytes sharing HBM fluidly: at every
moment each transfer moving bytes gets at most its queue's bandwidth, and the HBM bandwidth is
split max-min fairly among them (what a capped transfer cannot use goes to the others), worked
out again whenever a transfer starts or stops moving; so the summed rate never exceeds the HBM
bandwidth. Worked example: three queues of 64 B/cycle on 96 B/cycle of HBM move 3200 bytes each
from the same moment: 32 B/cycle each, all done after 100 cycles; if one had only 1600 bytes,
it would be done at 50, and the other two would then move their last 1600 bytes at 48 B/cycle,
done at 83.3. At one moment, what ends comes before what starts. Effects:

- jitter: every duration times a seeded log-normal factor (sigma `jitter`);
- DMA descriptor overhead: `desc_cycles` per `desc_bytes` descriptor, so it grows in steps;
- SBUF partition conflicts: an instruction that starts while another engine's instruction on
  overlapping SBUF partitions is under way is stretched by `conflict_stretch`;
- warm-up: the first `warmup_count` instructions of each engine take `warmup_factor` times longer.

Jitter, conflicts and warm-up multiply a computation's duration, and a transfer's descriptor
time and bytes alike. A computation takes whole cycles; a transfer's end, and what starts from
it, can fall between cycles, and every time is rounded up to a whole cycle at the end.

A wait no change can satisfy blocks its engine: it and everything after it on that engine, and
everything waiting on those, never run (start and end stay unset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numba
import numpy as np

from tracekit.trace.summary import natural_key
from tracekit.workloads.program import NULL, SET, SIGNAL, SUB, WAIT, Lowered

UNSATISFIABLE = -2
"""Marks a wait whose value no change on its semaphore reaches."""


@dataclass(frozen=True)
class ReferenceTiming:
    """Parameters of the reference machine and of the effects on top of it (cycles, bytes)."""

    clock_hz: float = 1.4e9
    matmul_fixed: float = 64.0
    matmul_flops_per_cycle: float = 2 * 128 * 128
    vector_fixed: float = 48.0
    vector_elements_per_cycle: float = 128.0
    scalar_fixed: float = 56.0
    scalar_elements_per_cycle: float = 128.0
    gpsimd_fixed: float = 80.0
    gpsimd_elements_per_cycle: float = 64.0
    queue_bytes_per_cycle: float = 64.0
    hbm_bytes_per_cycle: float = 192.0
    sem_latency: float = 12.0
    desc_base: float = 96.0
    desc_cycles: float = 2.0
    desc_bytes: int = 512
    jitter: float = 0.04
    conflict_stretch: float = 1.15
    warmup_count: int = 4
    warmup_factor: float = 1.6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def satisfying_signals(prog: Lowered) -> tuple[np.ndarray, np.ndarray]:
    """Per instruction, the instructions whose changes satisfy its waits, as CSR
    (ptr, src) over instruction ids; src is UNSATISFIABLE for a wait no change reaches.

    The changes of a semaphore count in program order (the lowering gives every semaphore one
    signalling engine, so that is also the order its signals arrive in, and orders its resets
    against them). A wait sees the count from the last `set` of its semaphore on an earlier
    instruction (from 0 if none) and depends on the first change after which the count
    reaches its value, before the next set: a wait for 2 after a set to 0 and signals by a,
    b, c depends on b.
    """
    n = prog.size
    sems = prog.sems
    if not sems:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    inst, sem, op = sems["inst"], sems["sem"], sems["op"]
    changes = np.flatnonzero(op != WAIT)
    changes = changes[np.lexsort((inst[changes], sem[changes]))]  # ties: table order
    waits = np.flatnonzero(op == WAIT)
    w_inst = inst[waits]
    if np.any(w_inst[1:] < w_inst[:-1]):
        waits = waits[np.argsort(w_inst, kind="stable")]
    src = _bind(inst, sem, op, sems["value"], changes, waits,
                int(sem.max(initial=-1)) + 1)
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(inst[waits], minlength=n))
    return ptr, src


@numba.njit(cache=True, nogil=True)
def _bind(inst, sem, op, value, changes, waits, n_sem):  # pragma: no cover - compiled
    """For each wait row (`waits`), the instruction of the change that satisfies it
    (`satisfying_signals`). `changes`: the change rows by semaphore, then instruction."""
    m = changes.size
    ptr = np.zeros(n_sem + 1, dtype=np.int64)
    for k in range(m):
        ptr[sem[changes[k]] + 1] += 1
    for s in range(n_sem):
        ptr[s + 1] += ptr[s]
    # Per change: the first change of its segment (from a set to the next), one past its
    # last, and the segment's highest count so far (non-decreasing: binary-searchable).
    seg_lo = np.empty(m, dtype=np.int64)
    seg_hi = np.empty(m, dtype=np.int64)
    peak = np.empty(m, dtype=np.int64)
    for s in range(n_sem):
        count = 0
        lo = ptr[s]
        for k in range(ptr[s], ptr[s + 1]):
            r = changes[k]
            if op[r] == SET:
                count = value[r]
                lo = k
            elif op[r] == SIGNAL:
                count += value[r]
            elif op[r] == SUB:
                count -= value[r]
            peak[k] = count if k == lo or count > peak[k - 1] else peak[k - 1]
            seg_lo[k] = lo
        hi = ptr[s + 1]
        for k in range(ptr[s + 1] - 1, ptr[s] - 1, -1):
            seg_hi[k] = hi
            if op[changes[k]] == SET:
                hi = k
    src = np.full(waits.size, UNSATISFIABLE, dtype=np.int64)
    for i in range(waits.size):
        r = waits[i]
        s = sem[r]
        if s >= n_sem or ptr[s] == ptr[s + 1]:
            continue
        a, b = ptr[s], ptr[s + 1]  # the changes on earlier instructions: [ptr[s], a)
        while a < b:
            mid = (a + b) // 2
            if inst[changes[mid]] < inst[r]:
                a = mid + 1
            else:
                b = mid
        k = a - 1 if a > ptr[s] else ptr[s]
        lo, hi = seg_lo[k], seg_hi[k]
        while lo < hi:  # the first change of the segment whose peak reaches the value
            mid = (lo + hi) // 2
            if peak[mid] < value[r]:
                lo = mid + 1
            else:
                hi = mid
        if lo < seg_hi[k]:
            src[i] = inst[changes[lo]]
    return src


def base_durations(prog: Lowered, t: ReferenceTiming) -> np.ndarray:
    """First-order compute durations by engine kind (DMA durations are set in the pass)."""
    inst = prog.inst
    elements = np.maximum(inst["elements"], 0).astype(np.float64)
    flops = np.maximum(inst["flops"], 0).astype(np.float64)
    kind = np.array([_engine_kind(e) for e in prog.engines])[inst["engine"]]
    dur = np.zeros(prog.size)
    dur = np.where(kind == "tensor", t.matmul_fixed + flops / t.matmul_flops_per_cycle, dur)
    dur = np.where(kind == "vector", t.vector_fixed + elements / t.vector_elements_per_cycle,
                   dur)
    dur = np.where(kind == "scalar", t.scalar_fixed + elements / t.scalar_elements_per_cycle,
                   dur)
    dur = np.where(kind == "gpsimd", t.gpsimd_fixed + elements / t.gpsimd_elements_per_cycle,
                   dur)
    return np.where(kind == "other", 16.0, dur)


def _engine_kind(engine: str) -> str:
    if engine.startswith("dma."):
        return "dma"
    return engine if engine in ("tensor", "vector", "scalar", "gpsimd") else "other"


def sbuf_partition_ranges(prog: Lowered) -> tuple[np.ndarray, np.ndarray]:
    """Per instruction the lowest and one-past-highest SBUF partition it touches (-1 if none)."""
    lo = np.full(prog.size, NULL, dtype=np.int64)
    hi = np.full(prog.size, NULL, dtype=np.int64)
    mem = prog.mem
    if mem:
        sbuf = mem["space"] == 1  # MemSpace order: hbm, sbuf, psum
        inst = mem["inst"][sbuf]  # sorted: memory rows are in instruction order
        if inst.size:
            first = mem["partition"][sbuf].astype(np.int64)
            last = first + mem["partitions"][sbuf]
            starts = np.flatnonzero(np.r_[True, inst[1:] != inst[:-1]])
            owners = inst[starts]
            lo[owners] = np.minimum.reduceat(first, starts)
            hi[owners] = np.maximum.reduceat(last, starts)
    return lo, hi


def observe(prog: Lowered, timing: ReferenceTiming, seed: int,
            slow_engine: dict[int, float] | None = None,
            stretch: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Observed (start, end) per instruction, -1 where the instruction never ran.

    `slow_engine` maps an engine code to a factor its durations (DMA: its bandwidth) are
    slowed by; `stretch` maps an instruction id to a factor on its duration (faults).
    """
    inst = prog.inst
    n_engines = len(prog.engines)
    is_dma_engine = np.array([e.startswith("dma.") for e in prog.engines])
    is_dma = is_dma_engine[inst["engine"]]
    rng = np.random.default_rng(seed)
    jitter = np.exp(rng.normal(0.0, timing.jitter, prog.size))
    for i, factor in (stretch or {}).items():
        jitter[i] *= factor
    slow = np.ones(n_engines)
    for e, factor in (slow_engine or {}).items():
        slow[e] = factor
    wait_ptr, wait_src = satisfying_signals(prog)
    lo, hi = sbuf_partition_ranges(prog)
    return _replay(inst["engine"].astype(np.int64), is_dma, is_dma_engine,
                   base_durations(prog, timing), np.maximum(inst["bytes"], 0).astype(np.int64),
                   wait_ptr, wait_src, lo, hi, jitter, slow, n_engines, timing.sem_latency,
                   timing.queue_bytes_per_cycle, timing.hbm_bytes_per_cycle, timing.desc_base,
                   timing.desc_cycles, timing.desc_bytes, timing.conflict_stretch,
                   timing.warmup_count, timing.warmup_factor,
                   np.array(sorted(range(n_engines), key=lambda e: natural_key(prog.engines[e])),
                            dtype=np.int64))


IDLE, RUNNING, MOVING = 0, 1, 2
"""Engine phases of the reference: nothing under way; a computation or a transfer's
descriptor set-up under way; a transfer's bytes moving."""


@numba.njit(cache=True, nogil=True)
def _replay(engine, is_dma, is_dma_engine, base, nbytes, wait_ptr, wait_src, part_lo, part_hi,
            jitter, slow, n_engines, sem_latency, queue_bw, hbm_bw, desc_base, desc_cycles,
            desc_bytes, conflict_stretch, warmup_count, warmup_factor,
            engine_order):  # pragma: no cover
    """The reference's event loop (module docstring): at each event time, what ends comes
    first (in engine order), then the HBM shares are worked out again if the transfers moving
    bytes changed, then each idle engine whose next instruction is ready starts it (in engine
    order: `engine_order`, the engines by name in natural order, as the replay takes them).
    Times are exact (fractions of a cycle where a transfer's share made them so) and
    rounded up to whole cycles at the end."""
    n = engine.size
    # Each engine's instructions in program order.
    eng_ptr = np.zeros(n_engines + 1, dtype=np.int64)
    for i in range(n):
        eng_ptr[engine[i] + 1] += 1
    for e in range(n_engines):
        eng_ptr[e + 1] += eng_ptr[e]
    fill = eng_ptr[:-1].copy()
    queue = np.empty(n, dtype=np.int64)
    for i in range(n):
        queue[fill[engine[i]]] = i
        fill[engine[i]] += 1
    start = np.full(n, -1.0)
    end = np.full(n, -1.0)
    head = eng_ptr[:-1].copy()  # each engine's next instruction (place in `queue`)
    phase = np.zeros(n_engines, dtype=np.int8)
    current = np.full(n_engines, -1, dtype=np.int64)
    free = np.zeros(n_engines)  # when each engine's last instruction ended
    until = np.zeros(n_engines)
    remaining = np.zeros(n_engines)
    moved_at = np.zeros(n_engines)
    rate = np.zeros(n_engines)
    cap = np.zeros(n_engines)
    settled = np.zeros(n_engines, dtype=np.bool_)
    factor = np.ones(n_engines)  # the current instruction's stretch, warm-up and jitter
    started = np.zeros(n_engines, dtype=np.int64)
    blocked = np.zeros(n_engines, dtype=np.bool_)
    ready = np.zeros(n_engines)
    for e in range(n_engines):
        cap[e] = queue_bw / slow[e]
    t = 0.0
    while True:
        # When each idle engine's next instruction can start (inf: not known yet).
        best = np.inf
        for e in range(n_engines):
            ready[e] = np.inf
            if phase[e] != IDLE or blocked[e] or head[e] == eng_ptr[e + 1]:
                if phase[e] != IDLE and until[e] < best:
                    best = until[e]
                continue
            i = queue[head[e]]
            r = free[e]
            for k in range(wait_ptr[i], wait_ptr[i + 1]):
                j = wait_src[k]
                if j < 0:
                    blocked[e] = True  # no change reaches the value: never runs
                    r = np.inf
                    break
                if end[j] < 0:
                    r = np.inf  # its signal has not come yet
                    break
                if end[j] + sem_latency > r:
                    r = end[j] + sem_latency
            ready[e] = r
            if r < best:
                best = r
        if best == np.inf:
            break
        t = max(t, best)
        # What ends now: a set-up gives way to moving bytes, the rest finish.
        rerate = False
        for e in range(n_engines):
            if phase[e] == IDLE or until[e] > t:
                continue
            i = current[e]
            if phase[e] == RUNNING and is_dma[i] and nbytes[i] > 0:
                phase[e] = MOVING
                remaining[e] = nbytes[i] * factor[e]
                moved_at[e] = t
                rerate = True
                continue
            if phase[e] == MOVING:
                rerate = True
            phase[e] = IDLE
            end[i] = t
            free[e] = t
            head[e] += 1
            current[e] = -1
        if rerate:
            # Fluid sharing: max-min fair (water-filling), each transfer at most its queue's
            # bandwidth, the HBM bandwidth split among the transfers moving bytes now.
            unassigned = 0
            for e in range(n_engines):
                if phase[e] == MOVING:
                    remaining[e] -= rate[e] * (t - moved_at[e])
                    moved_at[e] = t
                    unassigned += 1
                    settled[e] = False
                rate[e] = 0.0
            left = hbm_bw
            while unassigned > 0:
                fair = left / unassigned
                capped = False
                for e in range(n_engines):
                    if phase[e] == MOVING and not settled[e] and cap[e] <= fair:
                        rate[e] = cap[e]
                        left -= cap[e]
                        settled[e] = True
                        unassigned -= 1
                        capped = True
                if not capped:
                    for e in range(n_engines):
                        if phase[e] == MOVING and not settled[e]:
                            rate[e] = fair
                            settled[e] = True
                    unassigned = 0
            for e in range(n_engines):
                if phase[e] == MOVING:
                    until[e] = t + max(remaining[e], 0.0) / rate[e]
        # What starts now, in engine order; an idle engine made ready by an end just now is
        # looked at in the next round (at this same time).
        for e in engine_order:
            if phase[e] != IDLE or ready[e] > t or head[e] == eng_ptr[e + 1]:
                continue
            i = queue[head[e]]
            f = jitter[i]
            if started[e] < warmup_count:
                f *= warmup_factor
            if part_lo[i] >= 0:
                for o in range(n_engines):
                    c = current[o]
                    if o != e and phase[o] != IDLE and part_lo[c] >= 0 and \
                            part_lo[c] < part_hi[i] and part_lo[i] < part_hi[c]:
                        f *= conflict_stretch
                        break
            start[i] = t
            current[e] = i
            started[e] += 1
            factor[e] = f
            phase[e] = RUNNING
            if is_dma[i]:
                descriptors = (nbytes[i] + desc_bytes - 1) // desc_bytes
                until[e] = t + (desc_base + desc_cycles * descriptors) * f
            else:
                until[e] = t + max(1.0, np.ceil(base[i] * slow[e] * f))
    out_start = np.full(n, -1, dtype=np.int64)
    out_end = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if end[i] >= 0:
            out_start[i] = np.int64(np.ceil(start[i] - 1e-6))
            out_end[i] = np.int64(np.ceil(end[i] - 1e-6))
    return out_start, out_end
