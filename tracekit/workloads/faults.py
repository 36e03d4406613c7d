"""Fault injection with ground truth: each fault changes the program or its observed timing the
way a real bug would, and returns a record of what it did (kind, instruction ids, addresses)
that the manifest keeps, so analyses can be scored against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from tracekit.workloads.lowering import SBUF_PARTITION_BYTES
from tracekit.workloads.program import SIGNAL, WAIT, Lowered
from tracekit.workloads.timing import satisfying_signals


class Fault(StrEnum):
    MISSING_WAIT = "missing-wait"
    DEADLOCK = "deadlock"
    SEM_LEAK = "sem-leak"
    SLOW_QUEUE = "slow-queue"
    STUCK_ENGINE = "stuck-engine"
    TIMESTAMP_SKEW = "timestamp-skew"
    OOB = "oob"


SLOW_QUEUE_FACTOR = 4.0
STUCK_FACTOR = 50.0
DEADLOCK_EXCESS = 1_000_000
LEAKED_SIGNALS = 3


@dataclass
class TimingChanges:
    """What faults ask of the reference timing: slowed engines and stretched instructions."""

    slow_engine: dict[int, float]
    stretch: dict[int, float]


def _pick(rng: np.random.Generator, candidates: np.ndarray, what: str) -> int:
    if candidates.size == 0:
        raise ValueError(f"the workload has no {what} to inject this fault into")
    # Prefer the middle of the program, where the machine is in steady state.
    middle = candidates[candidates.size // 4: max(candidates.size * 3 // 4, candidates.size // 4
                                                  + 1)]
    return int(rng.choice(middle))


def _opcode_rows(prog: Lowered, opcode: str) -> np.ndarray:
    if opcode not in prog.opcodes:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(prog.inst["opcode"] == prog.opcodes.index(opcode))


def _mem_of(prog: Lowered, inst: int) -> list[dict[str, Any]]:
    rows = np.flatnonzero(prog.mem["inst"] == inst)
    spaces, accesses = ("hbm", "sbuf", "psum"), ("read", "write")
    return [{"space": spaces[prog.mem["space"][r]], "access": accesses[prog.mem["access"][r]],
             "addr": int(prog.mem["addr"][r]), "size": int(prog.mem["size"][r]),
             "partition": int(prog.mem["partition"][r]) if prog.mem["partition"][r] >= 0
             else None,
             "partitions": int(prog.mem["partitions"][r]) if prog.mem["partitions"][r] >= 0
             else None} for r in rows]


def _unordered_load_wait(prog: Lowered, rng: np.random.Generator) -> tuple[int, int, int]:
    """A matmul (or, without matmuls, a compute instruction), the row of its wait on a DMA
    load, and that load, such that nothing else orders the load before the matmul: dropping
    the wait leaves a read-before-write race on the SBUF tile. Every wait points back in
    program order, so the only other path would be another wait of the matmul on the load
    itself or on a later instruction of the load's queue (a later transfer, or the load's
    signal that a semaphore reset has landed)."""
    ptr, src = satisfying_signals(prog)
    sems, engine = prog.sems, prog.inst["engine"]
    loads = {prog.opcodes.index(o) for o in ("dma_load", "dma_im2col") if o in prog.opcodes}
    is_load = np.isin(prog.inst["opcode"], list(loads))
    wait_rows = np.flatnonzero(sems["op"] == WAIT)  # in the same order as the CSR's entries
    # Consumers of loads: matmuls, or the first compute step of a row tile in row-wise work.
    matmuls = _opcode_rows(prog, "matmul")
    if matmuls.size == 0:
        matmuls = np.flatnonzero(~np.array([e.startswith("dma.") for e in prog.engines])[
            prog.inst["engine"]])
    order = rng.permutation(matmuls)
    for consumer in order[np.argsort(np.abs(order - matmuls.mean()) if order.size else order,
                                     kind="stable")]:
        producers = src[ptr[consumer]:ptr[consumer + 1]]
        rows = wait_rows[np.searchsorted(sems["inst"][wait_rows], consumer):][:producers.size]
        for i, (row, producer) in enumerate(zip(rows, producers, strict=True)):
            if producer < 0 or not is_load[producer]:
                continue
            covered = (engine[producers] == engine[producer]) & (producers >= producer)
            covered[i] = False
            if not covered.any():
                return int(consumer), int(row), int(producer)
    raise ValueError("the workload has no matmul whose load can lose its wait without "
                     "another order (use more DMA queues)")


def inject_program_fault(prog: Lowered, fault: Fault, rng: np.random.Generator,
                         timing: TimingChanges) -> dict[str, Any]:
    """Apply a fault that changes the program (or asks the timing for a change); returns its
    ground truth. Timestamp skew is applied after timing by `inject_skew`."""
    sems, mem = prog.sems, prog.mem
    if fault is Fault.MISSING_WAIT:
        consumer, row, producer = _unordered_load_wait(prog, rng)
        record = {"kind": fault.value, "instructions": [producer, consumer],
                  "consumer": consumer, "producer": producer,
                  "sem": int(sems["sem"][row]), "value": int(sems["value"][row]),
                  "producer_memory": _mem_of(prog, producer),
                  "consumer_memory": _mem_of(prog, consumer)}
        keep = np.ones(sems["inst"].size, dtype=bool)
        keep[row] = False
        prog.sems = {k: v[keep] for k, v in sems.items()}
        return record
    if fault is Fault.DEADLOCK:
        waits = np.flatnonzero(sems["op"] == WAIT)
        row = _pick(rng, waits, "semaphore wait")
        sems["value"][row] += DEADLOCK_EXCESS
        inst = int(sems["inst"][row])
        return {"kind": fault.value, "instructions": [inst], "sem": int(sems["sem"][row]),
                "value": int(sems["value"][row]),
                "engine": prog.engines[prog.inst["engine"][inst]]}
    if fault is Fault.SEM_LEAK:
        signallers = _opcode_rows(prog, "matmul")
        if signallers.size == 0:
            signallers = np.arange(prog.size)
        chosen = np.sort(rng.choice(signallers, size=min(LEAKED_SIGNALS, signallers.size),
                                    replace=False))
        sem = prog.semaphores
        prog.semaphores += 1
        extra = {"inst": chosen.astype(np.int64), "sem": np.full(chosen.size, sem),
                 "op": np.full(chosen.size, SIGNAL, dtype=np.int8),
                 "value": np.ones(chosen.size, dtype=np.int64)}
        merged = {k: np.concatenate([sems[k], extra[k]]) for k in sems}
        perm = np.lexsort((merged["sem"], merged["op"], merged["inst"]))
        prog.sems = {k: v[perm] for k, v in merged.items()}
        return {"kind": fault.value, "instructions": [int(i) for i in chosen], "sem": sem,
                "signals": int(chosen.size)}
    if fault is Fault.SLOW_QUEUE:
        used = set(np.unique(prog.inst["engine"]).tolist())
        queues = [i for i, e in enumerate(prog.engines) if e.startswith("dma.") and i in used]
        queue = int(rng.choice(queues))
        timing.slow_engine[queue] = SLOW_QUEUE_FACTOR
        on_queue = np.flatnonzero(prog.inst["engine"] == queue)
        return {"kind": fault.value, "engine": prog.engines[queue],
                "factor": SLOW_QUEUE_FACTOR, "instructions": [int(i) for i in on_queue[:5]],
                "instruction_count": int(on_queue.size)}
    if fault is Fault.STUCK_ENGINE:
        computes = np.flatnonzero(~np.array([e.startswith("dma.") for e in prog.engines])[
            prog.inst["engine"]])
        inst = _pick(rng, computes, "compute instruction")
        timing.stretch[inst] = timing.stretch.get(inst, 1.0) * STUCK_FACTOR
        return {"kind": fault.value, "instructions": [inst], "factor": STUCK_FACTOR,
                "engine": prog.engines[prog.inst["engine"][inst]]}
    if fault is Fault.OOB:
        sbuf_rows = np.flatnonzero(mem["space"] == 1)
        row = _pick(rng, sbuf_rows, "SBUF access")
        size = int(mem["size"][row])
        mem["addr"][row] = SBUF_PARTITION_BYTES - max(size // 2, 1)
        inst = int(mem["inst"][row])
        return {"kind": fault.value, "instructions": [inst], "space": "sbuf",
                "addr": int(mem["addr"][row]), "size": size,
                "partition": int(mem["partition"][row]),
                "partitions": int(mem["partitions"][row]),
                "capacity_per_partition": SBUF_PARTITION_BYTES}
    raise ValueError(f"{fault.value} is applied after timing")


def inject_skew(prog: Lowered, start: np.ndarray, end: np.ndarray,
                rng: np.random.Generator) -> dict[str, Any]:
    """Move one consumer's observed start before the end of the producer it waits on."""
    ptr, src = satisfying_signals(prog)
    has_wait = np.flatnonzero((ptr[1:] > ptr[:-1]) & (start >= 0))
    producers = src[ptr[has_wait]]
    ran = (producers >= 0) & (start[np.maximum(producers, 0)] >= 0)
    consumer = _pick(rng, has_wait[ran], "instruction that waits on a producer")
    producer = int(src[ptr[consumer]])
    skew = max(1, int((end[producer] - start[producer]) // 2))
    start[consumer] = end[producer] - skew
    end[consumer] = max(int(end[consumer]), int(start[consumer]))
    return {"kind": Fault.TIMESTAMP_SKEW.value, "instructions": [producer, consumer],
            "producer": producer, "consumer": consumer, "producer_end": int(end[producer]),
            "consumer_start": int(start[consumer])}
