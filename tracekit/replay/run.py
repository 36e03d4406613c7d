"""Replay a trace: derive its graph, take durations from the machine model or the trace, run the
compiled replay, and return the predicted timeline as a polars frame.

    result = replay(open_trace("sample_traces/gemm"))            # built-in trn-like machine
    result.timeline.filter(pl.col("binding_kind") == "semaphore")
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.replay.engine import replay_kernel
from tracekit.replay.graph import KINDS, ORDER, SEMAPHORE, Graph, derive
from tracekit.replay.machine import Machine, builtin_machine, engine_kind
from tracekit.trace.bundle import Trace
from tracekit.trace.summary import natural_key


class Mode(StrEnum):
    MODEL = "model"
    OBSERVED = "observed"


class ReplayError(TracekitError):
    """The trace cannot be replayed as asked (no timing for observed mode, say)."""


class ReplayStuck(TracekitError):
    """The replay stopped with instructions that can never start: a deadlock or a cycle."""

    exit_code = 3

    def __init__(self, message: str, stuck: pl.DataFrame) -> None:
        super().__init__(message)
        self.stuck = stuck


@dataclass(frozen=True)
class ReplayResult:
    """The predicted timeline and what produced it.

    `timeline` columns, one row per instruction in id order:
    id, engine, opcode, layer; start, end, duration (cycles, predicted);
    binding_id (the predecessor whose end decided the start, null when nothing did) and
    binding_kind (its edge kind: order, semaphore, data, memory); contention (cycles a DMA
    transfer lost to HBM sharing); observed_start, observed_end (cycles, null when untimed).
    """

    trace: Trace
    machine: Machine
    mode: Mode
    graph: Graph
    timeline: pl.DataFrame

    @property
    def makespan(self) -> int:
        return int(self.timeline["end"].max() or 0)

    @property
    def observed(self) -> bool:
        return self.timeline["observed_end"].null_count() == 0 and self.timeline.height > 0


def _engine_queues(engine: np.ndarray, seq: np.ndarray, n_eng: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((seq, engine))
    ptr = np.zeros(n_eng + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(engine, minlength=n_eng))
    return ptr, order.astype(np.int64)


def model_durations(frame: pl.DataFrame, machine: Machine, engines: list[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Set-up or compute cycles per instruction from the latency model, and the bytes each DMA
    transfer moves through the contention model (0 for compute)."""
    pairs = frame.select("engine_code", "opcode").unique().sort("engine_code", "opcode")
    coeff = pl.DataFrame([
        {"engine_code": code, "opcode": op, **_as_dict(machine.latency(engines[code], op))}
        for code, op in pairs.iter_rows()
    ], schema={"engine_code": pl.Int64, "opcode": pl.String, "fixed_cycles": pl.Float64,
               "per_element": pl.Float64, "per_byte": pl.Float64, "per_flop": pl.Float64})
    joined = frame.join(coeff, on=["engine_code", "opcode"], how="left", maintain_order="left")
    setup = joined.select(
        pl.col("fixed_cycles")
        + pl.col("per_element") * pl.col("elements").fill_null(0)
        + pl.col("per_byte") * pl.col("bytes").fill_null(0)
        + pl.col("per_flop") * pl.col("flops").fill_null(0)).to_series().to_numpy()
    is_dma = np.array([engine_kind(e) == "dma" for e in engines])[
        frame["engine_code"].to_numpy()]
    nbytes = np.where(is_dma, frame["bytes"].fill_null(0).to_numpy(), 0).astype(np.float64)
    return setup.astype(np.float64), nbytes


def _as_dict(latency: object) -> dict[str, float]:
    return {k: getattr(latency, k) for k in ("fixed_cycles", "per_element", "per_byte",
                                             "per_flop")}


def replay(trace: Trace, machine: Machine | None = None, mode: Mode | str = Mode.MODEL,
           graph: Graph | None = None) -> ReplayResult:
    """Replay `trace` on `machine` (the built-in default if None)."""
    machine = machine or builtin_machine()
    mode = Mode(mode)
    frame = trace.read("instructions", ["id", "engine", "seq", "opcode", "start", "end",
                                        "elements", "bytes", "flops", "layer"]).sort("id")
    frame = frame.with_columns(pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String))
    engines = sorted(frame["engine"].unique().to_list(), key=natural_key)
    frame = frame.with_columns(
        pl.col("engine").replace_strict({e: i for i, e in enumerate(engines)},
                                        return_dtype=pl.Int64).alias("engine_code"))
    graph = graph or derive(trace)
    n, n_eng = frame.height, len(engines)
    engine = frame["engine_code"].to_numpy()
    timed = frame["start"].null_count() == 0 and frame["end"].null_count() == 0 and n > 0
    if mode is Mode.OBSERVED:
        if not timed:
            raise ReplayError(f"{trace.path}: --mode observed needs observed start and end on "
                              f"every instruction, and this trace has "
                              f"{frame['start'].null_count():,} untimed. Use --mode model.")
        setup = (frame["end"] - frame["start"]).to_numpy().astype(np.float64)
        nbytes = np.zeros(n)
    else:
        setup, nbytes = model_durations(frame, machine, engines)
    caps = np.array([machine.queue_bandwidth(e) for e in engines], dtype=np.float64)
    eng_ptr, eng_nodes = _engine_queues(engine, frame["seq"].to_numpy(), n_eng)
    succ_order = np.argsort(graph.src, kind="stable")
    dst_of_edge = np.repeat(np.arange(n), np.diff(graph.ptr))
    succ_ptr = np.zeros(n + 1, dtype=np.int64)
    succ_ptr[1:] = np.cumsum(np.bincount(graph.src, minlength=n))
    kind_latency = np.zeros(len(KINDS))
    kind_latency[SEMAPHORE] = machine.semaphore_latency
    kind_latency[[i for i in range(len(KINDS)) if i not in (ORDER, SEMAPHORE)]] = \
        machine.data_latency
    start, end, bind, bind_kind, contention, completed = replay_kernel(
        n_eng, eng_ptr, eng_nodes, engine.astype(np.int64), graph.ptr, succ_ptr,
        dst_of_edge[succ_order].astype(np.int64), graph.kind[succ_order].astype(np.int64),
        kind_latency, setup, nbytes, caps, machine.hbm_bytes_per_cycle)
    if completed < n:
        raise _stuck(trace, frame, graph, end)
    start_c, end_c = _cycles(start), _cycles(end)
    has_bind = bind >= 0
    timeline = pl.DataFrame({
        "id": frame["id"],
        "engine": frame["engine"],
        "opcode": frame["opcode"],
        "layer": frame["layer"].cast(pl.String),
        "start": start_c,
        "end": end_c,
        "duration": end_c - start_c,
        "binding_id": pl.Series(graph.ids[np.maximum(bind, 0)]).set(
            pl.Series(~has_bind), None),
        "binding_kind": pl.Series([k.value for k in KINDS])[
            np.maximum(bind_kind, 0).astype(np.int64)].set(pl.Series(~has_bind), None),
        "contention": np.ceil(np.maximum(contention, 0.0) - 1e-6).astype(np.int64),
        "observed_start": frame["start"],
        "observed_end": frame["end"],
    })
    return ReplayResult(trace=trace, machine=machine, mode=mode, graph=graph,
                        timeline=timeline)


def _cycles(times: np.ndarray) -> np.ndarray:
    """Float event times as integer cycles, rounded up (absorbing float error)."""
    return np.ceil(times - 1e-6).astype(np.int64)


def _stuck(trace: Trace, frame: pl.DataFrame, graph: Graph, end: np.ndarray) -> ReplayStuck:
    """The report of a replay that cannot finish: each stuck engine's first unstarted or
    unfinished instruction and what it waits for."""
    undone = end < 0
    stuck = frame.filter(pl.Series(undone)).group_by("engine_code", maintain_order=True).first()
    stuck = stuck.sort("engine_code").select("id", "engine", "opcode", "layer")
    waits = graph.unsatisfied
    lines = []
    for row in stuck.iter_rows(named=True):
        unsat = waits.filter(pl.col("inst") == row["id"])
        if unsat.height:
            w = unsat.row(0, named=True)
            why = (f"waits for semaphore {w['sem']} to reach {w['value']}, but its signals "
                   f"only ever add up to {w['signalled']}")
        else:
            node = int(np.searchsorted(graph.ids, row["id"]))
            blockers = [int(graph.ids[p]) for p in graph.preds(node) if end[p] < 0]
            why = f"waits for unfinished instruction(s) {', '.join(map(str, blockers[:5]))}"
        lines.append(f"  {row['engine']}: instruction {row['id']} ({row['opcode']}) {why}")
    cycle = "" if waits.height else " (a dependency cycle: no wait is unsatisfiable)"
    message = (f"{trace.path}: the replay cannot finish: {int(undone.sum()):,} instructions "
               f"on {stuck.height} engine(s) never run{cycle}.\n" + "\n".join(lines)
               + "\nThe trace records a run that could not have finished: check the "
                 "producer's semaphore values and dependencies.")
    return ReplayStuck(message, stuck)
