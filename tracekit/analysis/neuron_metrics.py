"""Neuron Explorer's Summary metrics, recomputed from an imported device profile's tables, each
next to the value the profile recorded (`tracekit convert neuron-explorer` keeps the profile's
Summary row, its Metadata and its per-instruction byte counters in the manifest's
extra.neuron_explorer).

    metric                        unit   tracekit  recorded  difference  difference_pct  from
    total_time                    ns      123,400   123,400           0            0.00  execution
    tensor_engine_active_time     ns       98,113    98,113           0            0.00  tables
    hfu_estimated_percent         %          41.2      41.2           0            0.00  tables

Times are in ns (Neuron Explorer's Summary records seconds; they are shown in ns here so that
a JSON report keeps them exact). Definitions follow Neuron Explorer's documentation:

- total_time: the execution's span (ExecutionInfo start to end), else first start to last end;
  every `_percent` of a time is over it. total_exec_time: first start to last end, leaving out
  the set-up and tear-down opcodes of `SETUP_OPCODES`. total_active_time: the time at least one
  instruction or transfer runs.
- E_engine_instruction_time: the sum of engine E's instruction durations (overlaps counted
  twice); E_engine_active_time: the time E runs at least one (the union); with several
  physical cores, the union over the cores (so the percent stays at most 100).
- hardware_flops: the flops of the tensor engine's MATMUL instructions, transposes included;
  transpose_flops: those of MATMUL.TRANSPOSE (0 when there are none, where AWS's scripts
  show NaN: JSON has no NaN); hfu = hardware_flops / (peak x total_time); mfu_inst =
  (hardware - transpose) / (peak x total_time), peak = 2 x rows x cols x the tensor
  engine's clock.
- hbm_read_bytes etc.: the DMA transfers' sides in the memory table (an on-chip row's size
  times its partitions) plus the profile's per-instruction byte counters of compute
  instructions, where it has them (whether Neuron Explorer's counters already include the
  DMA traffic is not documented; this takes them as separate); mbu = (HBM read + write) /
  total_time / the HBM bandwidth. Left out when the transfers' sides are unknown (a profile
  without DmaPacketAggregated).
- DMA: transfers are the instructions on dma.* queues. dma_active_time and dma_packet_time
  are over the profile's DmaPacket rows (their union and their summed durations, kept at
  import), as Neuron Explorer defines them; without packets, the union of the transfers.

The recorded values are those of the profile's Summary row, shown for a profile of one
execution only (the row covers all of them). `from` says where each figure comes from:
`tables` (tracekit's tables), `execution` (the execution's span), `counters` (the profile's
figures kept at import), or both.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from tracekit.replay.machine import engine_kind
from tracekit.trace.bundle import Trace
from tracekit.trace.manifest import TimeUnit

KEY = "neuron_explorer"
SETUP_OPCODES = frozenset({
    "NOP", "SET_ORDERING_MODE", "EVENT_SEMAPHORE", "EVENT_SEMAPHORE_RANGE_CLEAR", "NOTIFY",
    "COMPARE_BRANCH", "DRAIN", "WRITE", "TENSOR_LOAD", "MODIFY_POOL_CONFIG"})
"""Opcodes Neuron Explorer's total_exec_time leaves out."""
NS_PER_TICK = {TimeUnit.PS: 1e-3, TimeUnit.NS: 1.0, TimeUnit.US: 1e3}
ENGINES = ("tensor", "vector", "scalar", "gpsimd", "sync")
COUNTERS = ("hbm_read_bytes", "hbm_write_bytes", "sbuf_read_bytes", "sbuf_write_bytes",
            "psum_read_bytes", "psum_write_bytes", "spill_save_bytes", "spill_reload_bytes")
COLUMNS = {"metric": pl.String, "unit": pl.String, "tracekit": pl.Float64,
           "recorded": pl.Float64, "difference": pl.Float64, "difference_pct": pl.Float64,
           "from": pl.String}
FORMATS = {"metric": "", "unit": "", "tracekit": ".6g", "recorded": ".6g", "difference": ".3g",
           "difference_pct": ".2f", "from": ""}
"""How `analyze` prints the table."""


def imported(trace: Trace) -> dict[str, Any] | None:
    """The manifest's extra.neuron_explorer of an imported device profile, else None."""
    extra = trace.manifest.extra.get(KEY)
    return extra if isinstance(extra, dict) else None


def union_ticks(frame: pl.DataFrame, by: str | None) -> dict[Any, int]:
    """Per group of `by` (or all rows under None), the time at least one of the rows' [start,
    end) intervals covers, in ticks: intervals sorted by start, each adds what it reaches
    past the furthest end before it."""
    if by is None:
        frame, by = frame.with_columns(_all=pl.lit(0)), "_all"
    covered = (frame.sort([by, "start"])
               .with_columns(reach=pl.col("end").cum_max().shift(1).over(by))
               .with_columns(adds=(pl.col("end") - pl.max_horizontal("start", "reach"))
                             .clip(lower_bound=0))
               .group_by(by).agg(pl.col("adds").sum()))
    return dict(covered.iter_rows())


def summary_metrics(trace: Trace) -> pl.DataFrame | None:
    """The Summary metrics of an imported device profile (module docstring), None for any
    other trace or an untimed one."""
    extra = imported(trace)
    if extra is None or trace.manifest.time_unit is TimeUnit.CYCLES:
        return None
    per_tick = NS_PER_TICK[trace.manifest.time_unit]
    inst = trace.read_instructions(["engine", "opcode", "start", "end", "bytes", "flops"])
    if inst.height == 0 or inst["start"].null_count():
        return None
    kinds = {name: engine_kind(name) for name in inst["engine"].unique().to_list()}
    inst = inst.with_columns(
        kind=pl.col("engine").cast(pl.String).replace_strict(kinds, return_dtype=pl.String),
        opcode=pl.col("opcode").cast(pl.String).str.to_uppercase(),  # as Neuron Explorer
        duration=pl.col("end") - pl.col("start"))
    metadata = extra.get("metadata") or {}
    counters = extra.get("counters") or {}
    execution = extra.get("execution") or {}
    # A profile's Summary covers all its executions: next to one execution's figures it would
    # mislead, so it is shown only for a profile of one.
    recorded = (extra.get("summary") or {}) if execution.get("of", 1) == 1 else {}
    rows: list[tuple[str, str, float | None, str]] = []

    def add(metric: str, unit: str, value: float | None, source: str = "tables") -> None:
        rows.append((metric, unit, value, source))

    span_ticks = (execution.get("end_ns", 0) - execution.get("start_ns", 0)
                  if isinstance(execution.get("end_ns"), int | float)
                  and isinstance(execution.get("start_ns"), int | float) else None)
    if span_ticks and span_ticks > 0:
        total = float(span_ticks)
        add("total_time", "ns", total, "execution")
    else:
        total = (int(inst["end"].max()) - int(inst["start"].min())) * per_tick
        add("total_time", "ns", total)

    def share(nanos: float) -> float | None:
        return nanos / total * 100 if total > 0 else None

    work = inst.filter(~pl.col("opcode").is_in(list(SETUP_OPCODES)))
    add("total_exec_time", "ns",
        (int(work["end"].max()) - int(work["start"].min())) * per_tick if work.height else 0.0)
    active = union_ticks(inst, None).get(0, 0) * per_tick
    add("total_active_time", "ns", active)
    add("total_active_time_percent", "%", share(active))

    unions = {kind: ticks * per_tick for kind, ticks in union_ticks(inst, "kind").items()}
    by_kind = {kind: (n, time) for kind, n, time in inst.group_by("kind").agg(
        pl.len(), pl.col("duration").sum()).iter_rows()}
    for engine in ENGINES:
        if engine not in by_kind:
            continue
        count, busy = by_kind[engine]
        add(f"{engine}_engine_instruction_time", "ns", busy * per_tick)
        add(f"{engine}_engine_active_time", "ns", unions[engine])
        add(f"{engine}_engine_active_time_percent", "%", share(unions[engine]))
        add(f"{engine}_engine_instruction_count", "", count)

    base = pl.col("opcode").str.split(".").list.first()
    matmul = inst.filter((pl.col("kind") == "tensor") & (base == "MATMUL"))
    add("matmul_instruction_count", "", matmul.height)
    activate = inst.filter(pl.col("opcode").is_in(["ACTIVATE", "ACTIVATE_QUANTIZE"]))
    add("activate_instruction_time", "ns", int(activate["duration"].sum()) * per_tick)
    add("activate_instruction_count", "", activate.height)

    hardware = float(matmul["flops"].sum())
    transpose = float(matmul.filter(pl.col("opcode").str.ends_with(".TRANSPOSE"))["flops"].sum())
    add("hardware_flops", "flops", hardware)
    add("transpose_flops", "flops", transpose)
    for metric, name in (("adjusted_hardware_flops", "adjusted_flops"),
                         ("adjusted_transpose_flops", "adjusted_flops_transpose")):
        if name in counters:
            add(metric, "flops", counters[name], "counters")
    useful = hardware - transpose
    peak = _peak_flops(metadata)
    if peak and total > 0:
        add("hfu_estimated_percent", "%", hardware / (peak * total / 1e9) * 100)
        add("mfu_inst_estimated_percent", "%", useful / (peak * total / 1e9) * 100)

    # Bytes: the DMA transfers' sides in the memory table, plus the profile's per-instruction
    # counters of compute instructions where it has them.
    moved_by = _memory_bytes(trace)
    dma = inst.filter(pl.col("kind") == "dma")
    # Without the transfers' sides (a profile without DmaPacketAggregated has none) the bytes
    # would leave the DMA traffic out: no figure rather than a wrong one.
    for name in COUNTERS if moved_by or dma.height == 0 else ():
        space, access = name.split("_")[:2]
        table = moved_by.get((space, access))
        counted = counters.get(name)
        if table is None and counted is None:
            continue
        add(name, "bytes", (table or 0) + (counted or 0),
            "tables" if counted is None else "counters" if table is None else
            "tables+counters")
    hbm = [value for metric, _, value, _ in rows if metric in ("hbm_read_bytes",
                                                                "hbm_write_bytes")]
    moved = float(sum(hbm))
    if hbm and moved > 0:
        add("mm_arithmetic_intensity", "flops/byte", useful / moved)
        bandwidth = _number(metadata, "hbm_ddr_bandwidth")
        if total > 0:
            add("achieved_hbm_bandwidth", "bytes/s", moved / total * 1e9)
            if bandwidth:
                add("mbu_estimated_percent", "%", moved / total * 1e9 / bandwidth * 100)

    if "dma_packet_active_ns" in counters:  # Neuron Explorer's: the union of its packets
        add("dma_active_time", "ns", counters["dma_packet_active_ns"], "counters")
        add("dma_active_time_percent", "%", share(counters["dma_packet_active_ns"]),
            "counters")
    elif dma.height:
        dma_active = union_ticks(dma, None)[0] * per_tick
        add("dma_active_time", "ns", dma_active)
        add("dma_active_time_percent", "%", share(dma_active))
    if "dma_packet_ns" in counters:
        add("dma_packet_time", "ns", counters["dma_packet_ns"], "counters")
    if dma.height:
        add("dma_transfer_time", "ns", int(dma["duration"].sum()) * per_tick)
        add("dma_transfer_count", "", dma.height)
        moved = int(dma["bytes"].fill_null(0).sum())
        add("dma_transfer_total_bytes", "bytes", moved)
        add("dma_transfer_average_bytes", "bytes", moved / dma.height)

    frame = pl.DataFrame(
        [(metric, unit, None if value is None else float(value),
          _recorded(recorded, metric, unit), source) for metric, unit, value, source in rows],
        schema={k: v for k, v in COLUMNS.items() if not k.startswith("difference")},
        orient="row")
    difference = pl.col("tracekit") - pl.col("recorded")
    return frame.with_columns(
        difference=difference,
        difference_pct=pl.when(pl.col("recorded") != 0)
        .then(difference / pl.col("recorded") * 100)).select(list(COLUMNS))


def _memory_bytes(trace: Trace) -> dict[tuple[str, str], int]:
    """Bytes of the memory table per (space, access): an on-chip row's size times its
    partitions."""
    if not trace.has_table("memory"):
        return {}
    memory = trace.read("memory")
    return {(space, access): int(moved) for space, access, moved in memory.group_by(
        pl.col("space").cast(pl.String), pl.col("access").cast(pl.String)).agg(
        (pl.col("size") * pl.col("partitions").fill_null(1)).sum()).iter_rows()}


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0 else None


def _peak_flops(metadata: dict[str, Any]) -> float | None:
    """The tensor engine's peak flops per second: 2 x rows x cols x its clock (GHz)."""
    rows, cols = (_number(metadata, "tensor_engine_num_rows"),
                  _number(metadata, "tensor_engine_num_cols"))
    clock = (_number(metadata, "tensor_engine_clock_freq")
             or _number(metadata, "neuroncore_clock_freq"))
    return 2 * rows * cols * clock * 1e9 if rows and cols and clock else None


def _recorded(summary: dict[str, Any], metric: str, unit: str) -> float | None:
    """The profile's own value, times in ns (Summary records seconds: rounded to the ps, which
    gives back the whole ns Neuron Explorer counted)."""
    value = summary.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(value * 1e9, 3) if unit == "ns" else float(value)
