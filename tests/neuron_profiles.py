"""Test-only writer: a timed tracekit bundle written as a Neuron Explorer device profile folder
(processed-profile Parquet, schema 7.4.0, as digested in ../shared/external/neuron-explorer/
SCHEMA.md), plus small hand-made profiles with each documented oddity.

    profile = write_profile(bundle, tmp_path / "prof", engine_case="UPPER", split=2)
    convert(profile.path, tmp_path / "out")          # should give the bundle back

How a bundle maps onto the tables (the converter maps them back, ne-design.md):

- compute engines -> `Instruction` rows (engine in the profile's casing: lower, Title, UPPER or
  the glossary aliases PE/ACT/DVE/POOL/SP; `id` = 2 * bundle id + 1; opcode verbatim, except
  `X.TRANSPOSE` -> opcode X with tensor_instruction_type TRANSPOSE; flops -> raw_flops and
  adjusted_flops; elements -> tensor_elements; bytes -> the per-space counters, split like the
  instruction's memory rows when they add up to it, else all in sbuf_read_bytes);
- `dma.<q>` engines -> `DmaPacketAggregated` rows (queue_name q, op = the bundle opcode, ids
  0, 2, 4, ... in (queue, seq) order, block_id = seq) with 1..max_packets overlapping
  `DmaPacket` rows each (the first starts with the transfer, the last ends with it);
- semaphore signal/sub/set -> `SemaphoreUpdate` rows at the signalling instruction's end, value =
  the absolute count after the update, update_source the engine (or AXI for a DMA queue); a
  DMA transfer names only its first signalled semaphore in `semaphore_id`, so further AXI
  updates of that transfer cannot be linked (`Profile.unlinkable_axi` counts them);
- waits of compute instructions -> operands text `$S[k]>=v` (`==` for eq waits); a DMA transfer
  has no operands, so each of its waits becomes a `Flow` edge from the instruction whose update
  made the condition hold (and, when that is a compute instruction, `trigger`/`completion`);
  bundle deps -> `Flow` edges too (memory -> ANTI_DEPENDENCE, any other kind -> FLOW_DEPENDENCE);
- times: cycles of the profile's clock -> ns (`round(cycles / neuroncore_clock_freq)`; exact at
  the default 1.0 GHz); engines named `pN.<engine>` go to physical core N (pcore_idx) and their
  semaphores are written as `S[sem % 1_000_000]`;
- `executions=2` writes the workload twice, the second copy shifted by the first's span plus a
  gap, with two `ExecutionInfo` rows; `Summary` holds figures computed here from the written
  rows by the recipes of SUMMARY-METRICS.md (`summary_row`), independently of the converter.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import tracekit
from tracekit.trace.builder import TraceBuilder
from tracekit.trace.bundle import Trace

SCHEMA_VERSION = "7.4.0"
SEM_CORE_STRIDE = 1_000_000
"""Semaphore numbers of core p in a bundle with several physical cores: p * stride + n."""

# Every column of the tables the writer produces, as `name:type:required` (SCHEMA.md, 7.4.0).
SCHEMA_TEXT = {
    "Metadata": (
        "profile_schema_version:string:Y ntff_version:int32:Y num_physical_cores:int32:Y "
        "vnc_enabled:bool:Y first_hw_timestamp:int64:Y last_hw_timestamp:int64:Y first_ts:string:Y "
        "last_ts:string:Y dma_ddr_bandwidth:float:Y num_dma_engines_per_neuroncore:int32:Y "
        "hbm_ddr_bandwidth:float:Y tensor_engine_num_rows:int64:Y tensor_engine_num_cols:int64:Y "
        "tensor_engine_clock_freq:float:Y vector_engine_clock_freq:float:Y "
        "vector_engine_num_channels:int64:Y scalar_engine_clock_freq:float:Y "
        "scalar_engine_num_channels:int64:Y gpsimd_engine_clock_freq:float:Y "
        "gpsimd_engine_num_channels:int64:Y neuroncore_clock_freq:float:Y ticks_per_nanosec:int64:Y "
        "instance_type:string:N runtime_version:string:N collectives_version:string:N "
        "driver_version:string:N explorer_version:string:N compiler_version:string:N "
        "neuroncore_idx:int64:N neuron_device_idx:int64:N ultraserver_id:int64:N "
        "ultraserver_type:string:N ultraserver_size:int32:N ultraserver_instance_index:int32:N "
        "s3_bucket_path:string:N profile_name:string:N explorer_build_time:string:N "
        "is_simulation:bool:N "
    ),
    "Instruction": (
        "start_ts:int64:Y end_ts:int64:Y duration_ns:int64:Y engine:string:Y "
        "timeline_track:string:N pcore_idx:int64:N opcode:string:Y operands:string:Y "
        "compiler_opcode:string:N compiler_operands:string:N id:int64:Y pc:int64:Y "
        "compiler_pc:int64:N penguin_id:string:N raw_penguin_id:int64:N bir_id:string:Y "
        "raw_bir_id:int64:N bir_instruction_name:string:N kernel_instruction_name:string:N "
        "crc_in:int64:N crc_out:int64:N evt_wait_time_ns:int64:N hlo_attrs:string:N "
        "hlo_name:string:N raw_hlo_id:int64:N raw_framework_id:int64:N layer:string:N "
        "stack_frame_ids:string:N nki_source_location:string:N "
        "bir_debug_info_source_location:string:N dma_trigger_start_ts:int64:N "
        "dma_trigger_end_ts:int64:N dma_wait_time_ns:int64:N instruction_chain:string:N "
        "hbm_read_bytes:int64:N hbm_write_bytes:int64:N sbuf_read_bytes:int64:N "
        "sbuf_write_bytes:int64:N spill_save_bytes:int64:N spill_reload_bytes:int64:N "
        "psum_read_bytes:int64:N psum_write_bytes:int64:N psum_read_sbuf_write_bytes:int64:N "
        "input_queue_bytes:int64:N output_queue_bytes:int64:N weight_queue_bytes:int64:N "
        "performance_mode:string:N tensor_instruction_type:string:N tensor_elements:int64:N "
        "raw_flops:int64:N adjusted_flops:int64:N tensor_elements_transpose:int64:N "
        "flops_transpose:int64:N adjusted_flops_transpose:int64:N scalar_activation_fn:string:N "
    ),
    "DmaPacket": (
        "start_ts:int64:Y end_ts:int64:Y duration_ns:int64:Y pcore_idx:int64:N id:int64:Y "
        "packet_idx:int32:Y packet_aggregation_id:int64:Y engine_idx:int64:N read_bytes:int64:Y "
        "write_bytes:int64:Y transfer_bytes:int64:Y throughput:float:Y queue_type:string:Y "
        "variable:string:N queue_name:string:N queue_idx:int64:N crc:int64:Y "
    ),
    "DmaPacketAggregated": (
        "start_ts:int64:Y end_ts:int64:Y duration_ns:int64:Y id:int64:Y pcore_idx:int64:N "
        "block_id:int32:Y queue_idx:int64:Y queue_name:string:Y queue_type:string:N op:string:Y "
        "variable:string:Y read_bytes:int64:Y write_bytes:int64:Y transfer_bytes:int64:Y "
        "throughput:float:Y source:string:Y dest:string:Y semaphore_id:string:Y "
        "modular_flow_function:string:N read_sbuf_partitions:string:Y "
        "read_num_sbuf_partitions:int32:Y read_shape:string:Y read_offset:string:Y "
        "read_steps:string:Y write_sbuf_partitions:string:Y write_num_sbuf_partitions:int32:Y "
        "write_shape:string:Y write_offset:string:Y write_steps:string:Y is_transpose_mode:bool:N "
        "transpose_element_size:string:N transpose_shape:string:N transpose_from_shape:string:N "
        "transpose_to_shape:string:N transpose_unroll_factor:string:N trigger:int64:N "
        "completion:int64:N "
    ),
    "SemaphoreUpdate": (
        "timestamp:int64:Y id:string:Y value:int32:Y update_source:string:N "
        "double_set_or_clear:bool:N update_mode:int32:N update_operation_type:string:N "
        "update_trigger_timing:string:N pcore_idx:int64:N "
    ),
    "Flow": (
        "in_id:int64:Y out_id:int64:Y in_table:string:Y out_table:string:Y dependency_type:string:N "
        "gap_time:int64:N "
    ),
    "ExecutionInfo": (
        "execution_index:int32:Y neff_name:string:N execution_start_ts:int64:N "
        "execution_end_ts:int64:N num_subgraphs:int32:N row_count:int64:N "
    ),
    "Summary": (
        "total_time:float:N neuroncore_cycle_count:int64:N model_flops:int64:N "
        "hardware_flops:int64:N transpose_flops:int64:N adjusted_hardware_flops:int64:N "
        "adjusted_transpose_flops:int64:N mm_arithmetic_intensity:float:N "
        "peak_flops_bandwidth_ratio:float:N trace_count:int64:N event_count:int64:N "
        "total_row_count:int64:N dma_active_cycles:int64:N dma_active_time:float:N "
        "dma_active_time_percent:float:N static_dma_active_time:float:N "
        "dynamic_dma_active_time_percent:float:N static_dma_active_time_percent:float:N "
        "dma_transfer_average_bytes:float:N dma_packet_time:float:N dma_transfer_time:float:N "
        "dma_transfer_count:int64:N dma_transfer_total_bytes:int64:N dma_queue_count:int64:N "
        "inputs_and_weights_size_bytes:int64:N inputs_outputs_weights_size_bytes:int64:N "
        "weight_size_bytes:int64:N static_dma_packet_count:int64:N static_dma_size:int64:N "
        "dynamic_dma_packet_percent:float:N static_dma_packet_percent:float:N "
        "dynamic_dma_size_percent:float:N static_dma_size_percent:float:N "
        "mbu_estimated_percent:float:N mbu_min_read_util_percent:float:N hbm_write_bytes:int64:N "
        "hbm_read_bytes:int64:N sbuf_write_bytes:int64:N sbuf_read_bytes:int64:N "
        "spill_save_bytes:int64:N spill_reload_bytes:int64:N psum_write_bytes:int64:N "
        "psum_read_bytes:int64:N psum_read_sbuf_write_count:int64:N "
        "psum_read_sbuf_write_bytes:int64:N input_queue_bytes:int64:N output_queue_bytes:int64:N "
        "weight_queue_bytes:int64:N software_dynamic_dma_active_time:float:N "
        "software_dynamic_dma_active_time_percent:float:N software_dynamic_dma_packet_count:int64:N "
        "software_dynamic_dma_size:int64:N software_dynamic_dma_packet_percent:float:N "
        "software_dynamic_dma_size_percent:float:N hardware_dynamic_dma_active_time:float:N "
        "hardware_dynamic_dma_active_time_percent:float:N hardware_dynamic_dma_packet_count:int64:N "
        "hardware_dynamic_dma_size:int64:N hardware_dynamic_dma_packet_percent:float:N "
        "hardware_dynamic_dma_size_percent:float:N tensor_engine_instruction_time:float:N "
        "tensor_engine_active_time:float:N tensor_engine_active_time_percent:float:N "
        "tensor_engine_instruction_count:int64:N matmul_instruction_count:int64:N "
        "mfu_estimated_percent:float:N mfu_max_achievable_estimated_percent:float:N "
        "mfu_hlo_estimated_percent:float:N mfu_hlo_max_achievable_estimated_percent:float:N "
        "mfu_inst_estimated_percent:float:N mfu_inst_max_achievable_estimated_percent:float:N "
        "hfu_estimated_percent:float:N vector_engine_instruction_time:float:N "
        "vector_engine_active_time:float:N vector_engine_active_time_percent:float:N "
        "vector_engine_instruction_count:int64:N scalar_engine_instruction_time:float:N "
        "scalar_engine_active_time:float:N scalar_engine_active_time_percent:float:N "
        "scalar_engine_instruction_count:int64:N activate_instruction_time:float:N "
        "activate_instruction_count:int64:N sync_engine_instruction_time:float:N "
        "sync_engine_active_time:float:N sync_engine_active_time_percent:float:N "
        "sync_engine_instruction_count:int64:N gpsimd_engine_instruction_time:float:N "
        "gpsimd_engine_active_time:float:N gpsimd_engine_active_time_percent:float:N "
        "gpsimd_engine_instruction_count:int64:N cc_op_time:float:N cc_op_active_time:float:N "
        "cc_op_active_time_percent:float:N cc_op_count:int64:N cc_cores_instruction_time:float:N "
        "cc_cores_instruction_active_time:float:N cc_cores_instruction_active_time_percent:float:N "
        "cc_cores_instruction_count:int64:N total_exec_time:float:N total_active_time:float:N "
        "total_active_time_percent:float:N "
    ),
    "NeffHeader": (
        "network_name:string:N uuid:string:N hash:string:N enabled_features:string:N "
        "header_size:int64:N data_size:int64:N major_version:int64:N minor_version:int64:N "
        "package_version:string:N build_version:string:N cc_participant_count:int64:N "
        "neuroncore_count:int64:N logical_neuroncore_count:int64:N pcore_count_per_lnc:int64:N "
    ),
    "Warning": (
        "message:string:Y category:string:Y "
    ),
    "SchemaFields": (
        "table_name:string:Y table_description:string:Y field_name:string:Y "
        "field_description:string:Y field_example:string:N field_type:string:Y "
        "field_required:bool:Y field_format:string:N field_unit:string:N field_minimum:float:N "
        "field_maximum:float:N field_enum_values:string:N "
    ),
}

TABLES = tuple(SCHEMA_TEXT)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """int64, int32, string, bool or float, as SCHEMA.md gives them."""
    required: bool


def columns(table: str) -> tuple[Column, ...]:
    """The columns of a table, in SCHEMA.md's order."""
    out = []
    for item in SCHEMA_TEXT[table].split():
        name, kind, req = item.split(":")
        out.append(Column(name, kind, req == "Y"))
    return tuple(out)


def arrow_type(kind: str, float_type: pa.DataType = pa.float32()) -> pa.DataType:
    """The Parquet type of a SCHEMA.md type. `float` is OpenAPI's single-precision format; the
    digest does not say whether the tool writes it as float or double (float_type)."""
    return {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
            "bool": pa.bool_(), "float": float_type}[kind]


ENGINE_TITLE = {"tensor": "Tensor", "vector": "Vector", "scalar": "Scalar", "gpsimd": "GpSimd",
                "sync": "Sync"}
ENGINE_ALIAS = {"tensor": "PE", "vector": "DVE", "scalar": "ACT", "gpsimd": "POOL", "sync": "SP"}
ENGINE_CASES = ("lower", "Title", "UPPER", "alias")
SETUP_OPCODES = frozenset({"NOP", "SET_ORDERING_MODE", "EVENT_SEMAPHORE",
                           "EVENT_SEMAPHORE_RANGE_CLEAR", "NOTIFY", "COMPARE_BRANCH", "DRAIN",
                           "WRITE", "TENSOR_LOAD", "MODIFY_POOL_CONFIG"})
"""Opcodes Summary.total_exec_time ignores (SUMMARY-METRICS.md)."""

DEFAULT_METADATA: dict[str, Any] = {
    "ntff_version": 6, "ticks_per_nanosec": 1,
    "dma_ddr_bandwidth": 2.0e11, "num_dma_engines_per_neuroncore": 16,
    "hbm_ddr_bandwidth": 4.0e11, "tensor_engine_num_rows": 128, "tensor_engine_num_cols": 128,
    "tensor_engine_clock_freq": 1.4, "vector_engine_clock_freq": 1.4,
    "vector_engine_num_channels": 128, "scalar_engine_clock_freq": 1.4,
    "scalar_engine_num_channels": 128, "gpsimd_engine_clock_freq": 1.4,
    "gpsimd_engine_num_channels": 8, "instance_type": "trn1.2xlarge",
    "runtime_version": "2.25.0", "driver_version": "2.21.0", "explorer_version": "2.31.0",
    "compiler_version": "2.18.0", "neuroncore_idx": 0, "neuron_device_idx": 0,
    "first_ts": "2026-01-01T00:00:00Z", "last_ts": "2026-01-01T00:00:01Z",
    "is_simulation": False,
}


def engine_name(engine: str, case: str) -> str:
    """A compute engine's name as a profile writes it."""
    if case == "lower":
        return engine.lower()
    if case == "UPPER":
        return engine.upper()
    if case == "alias":
        return ENGINE_ALIAS.get(engine, engine.upper())
    if case == "Title":
        return ENGINE_TITLE.get(engine, engine[:1].upper() + engine[1:])
    raise ValueError(f"engine_case {case!r}: one of {', '.join(ENGINE_CASES)}")


@dataclass(frozen=True)
class Options:
    """What `write_profile` writes; every field is a keyword of it."""

    clock_ghz: float = 1.0
    """Metadata.neuroncore_clock_freq: bundle cycles are cycles of this clock."""
    engine_case: str = "Title"
    split: int | Mapping[str, int] = 1
    """Parts per table (Name_0.parquet, Name_1.parquet, ...); 1 writes Name.parquet."""
    optional_columns: bool = True
    """False leaves every optional (req N) column out of every table."""
    drop_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    executions: int = 1
    execution_gap_ns: int = 1000
    origin_ns: int = 0
    """Added to every timestamp (profile time of the first execution's start)."""
    execution_info: bool = True
    aggregated: bool = True
    """False: no DmaPacketAggregated (transfers only as DmaPacket rows)."""
    packets: bool = True
    flow: bool = True
    flow_tables: str = "aws"
    """Flow table names: aws (Instruction, DmaPacketAggregated, DmaPacket) or schema
    (instruction, dma_block, dma_packet)."""
    semaphore_updates: bool = True
    summary: bool = True
    max_packets: int = 3
    wait_syntax: str = ">="
    """How a >= wait is written: `>=` ($S[k]>=v) or `>` ($S[k]>v-1)."""
    schema_version: str = SCHEMA_VERSION
    float_type: pa.DataType = pa.float32()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    warnings: Sequence[tuple[str, str]] = ()
    profile_name: str | None = None


@dataclass(frozen=True)
class Profile:
    """A written profile: its folder, the tables as written (before splitting), and facts the
    tests check the import report against."""

    path: Path
    tables: dict[str, pa.Table] = field(repr=False)
    options: Options
    instructions: int
    transfers: int
    packets: int
    flow_edges: int
    semaphore_updates: int
    unlinkable_axi: int
    """AXI updates of a semaphore the transfer's semaphore_id does not name."""
    compute_waits: int
    dma_waits: int
    """Waits of DMA transfers, written as Flow edges (or dropped when none made them hold)."""
    summary: dict[str, Any] | None

    def frame(self, table: str) -> pl.DataFrame:
        return pl.from_arrow(self.tables[table])  # type: ignore[return-value]


# --- the bundle's rows, prepared -------------------------------------------------------------

_CORE = re.compile(r"^p(\d+)\.(.+)$")


def _instructions(trace: Trace, clock_ghz: float) -> pl.DataFrame:
    inst = trace.read("instructions").with_columns(
        pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
        pl.col("layer").cast(pl.String))
    if inst["start"].null_count() or inst["end"].null_count():
        raise ValueError("write_profile needs a timed bundle (start and end on every row)")
    cores = inst["engine"].str.extract(r"^p(\d+)\.", 1).cast(pl.Int64)
    base = inst["engine"].str.replace(r"^p\d+\.", "")
    ns = [pl.col(c).truediv(clock_ghz).round(0).cast(pl.Int64).alias(f"{c}_ns")
          for c in ("start", "end")]
    return inst.with_columns(cores.fill_null(0).alias("pcore"), base.alias("base"),
                             base.str.starts_with("dma.").alias("is_dma"),
                             *ns).sort("engine", "seq")


def _memory_by_inst(trace: Trace) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if trace.has_table("memory"):
        mem = trace.read("memory").with_columns(pl.col("space").cast(pl.String),
                                                pl.col("access").cast(pl.String))
        for row in mem.iter_rows(named=True):
            out[row["inst"]].append(row)
    return out


def _row_bytes(row: dict[str, Any]) -> int:
    return row["size"] * (row["partitions"] or 1)


def _counters(bytes_: int | None, mem: list[dict[str, Any]]) -> dict[str, int | None]:
    """The six per-space counters of a compute instruction: its memory rows when they add up to
    its bytes, else all of it as SBUF reads; all null when bytes is null."""
    names = [f"{s}_{a}_bytes" for s in ("hbm", "sbuf", "psum") for a in ("read", "write")]
    out: dict[str, int | None] = dict.fromkeys(names)
    if bytes_ is None:
        return out
    sums: dict[str, int] = defaultdict(int)
    for row in mem:
        sums[f"{row['space']}_{row['access']}_bytes"] += _row_bytes(row)
    if sum(sums.values()) == bytes_:
        out.update(sums)
    else:
        out["sbuf_read_bytes"] = bytes_
    return out


def _label(space: str | None, access: str) -> str:
    if space == "hbm":
        return "[INPUT]" if access == "read" else "[OUTPUT]"
    if space == "sbuf":
        return "[SB]"
    if space == "psum":
        return "[PSUM]"
    return "[UNKNOWN]"


def _partitions(row: dict[str, Any] | None) -> tuple[str, int]:
    if row is None or row["space"] == "hbm" or row["partition"] is None:
        return "", 0
    first, n = row["partition"], row["partitions"] or 1
    return (f"{first}" if n == 1 else f"{first}-{first + n - 1}"), n


def _shape(row: dict[str, Any] | None) -> str:
    if row is None:
        return "[]"
    if row["space"] == "hbm":
        return f"[{row['size']}]"
    return f"[{row['partitions'] or 1}, {row['size']}]"


# --- semaphores -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Update:
    ts: int
    core: int
    sem: int          # as written: S[sem]
    op: str           # signal | sub | set
    value: int        # the bundle's value
    inst: int         # bundle id of the signaller
    order: int        # row order in the bundle


def _sem_number(sem: int, multi_core: bool) -> int:
    return sem % SEM_CORE_STRIDE if multi_core else sem


def _apply(count: int, op: str, value: int) -> int:
    return count + value if op == "signal" else count - value if op == "sub" else value


def _holds(count: int, cond: str | None, value: int) -> bool:
    return count == value if cond == "eq" else count >= value


def _binder(updates: list[_Update], start: int, cond: str | None, value: int) -> int | None:
    """The signaller whose update made a wait's condition hold for good before `start` (None
    when it held from the beginning or did not hold)."""
    count, holds, binder = 0, _holds(0, cond, value), None
    for u in updates:
        if u.ts > start:
            break
        count = _apply(count, u.op, u.value)
        now = _holds(count, cond, value)
        if now and not holds:
            binder = u.inst
        elif not now:
            binder = None
        holds = now
    return binder if holds else None


# --- one execution's tables ------------------------------------------------------------------


def _execution_rows(trace: Trace, opts: Options) -> dict[str, list[dict[str, Any]]]:
    """The rows of one copy of the workload, times in ns from the execution's start, ids from 0
    (shifted per execution by the caller)."""
    inst = _instructions(trace, opts.clock_ghz)
    multi_core = inst["pcore"].n_unique() > 1 or bool(inst["engine"].str.contains(r"^p\d+\.").any())
    memory = _memory_by_inst(trace)
    rows_by_id = {r["id"]: r for r in inst.iter_rows(named=True)}
    sems = (trace.read("semaphores").with_columns(pl.col("op").cast(pl.String),
                                                  pl.col("cond").cast(pl.String))
            if trace.has_table("semaphores") else None)

    # Updates, in time order per semaphore; absolute values after each.
    updates: dict[tuple[int, int], list[_Update]] = defaultdict(list)
    signals_of: dict[int, list[int]] = defaultdict(list)
    waits: list[dict[str, Any]] = []
    if sems is not None:
        for order, s in enumerate(sems.iter_rows(named=True)):
            row = rows_by_id[s["inst"]]
            n = _sem_number(s["sem"], multi_core)
            if s["op"] == "wait":
                waits.append({**s, "sem": n, "core": row["pcore"]})
                continue
            u = _Update(row["end_ns"], row["pcore"], n, s["op"], s["value"], s["inst"], order)
            updates[(row["pcore"], n)].append(u)
            if s["op"] == "signal":
                signals_of[s["inst"]].append(n)
    for key in updates:
        updates[key].sort(key=lambda u: (u.ts, u.order))

    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    case = opts.engine_case

    # Transfers: ids 0, 2, 4... in (engine, seq) order; queue_idx per core in name order.
    dma = inst.filter(pl.col("is_dma"))
    queues = sorted(set(zip(dma["pcore"].to_list(), dma["base"].to_list(), strict=True)))
    queue_idx = {q: i for i, q in enumerate(queues)}
    transfer_id = {r["id"]: 2 * k for k, r in enumerate(dma.iter_rows(named=True))}
    ne_id = {r["id"]: 2 * r["id"] + 1 for r in inst.iter_rows(named=True) if not r["is_dma"]}

    def ref(bid: int) -> tuple[str, int]:
        return ("dma", transfer_id[bid]) if bid in transfer_id else ("inst", ne_id[bid])

    # Waits: operand text for compute instructions, Flow edges for DMA transfers.
    wait_text: dict[int, list[str]] = defaultdict(list)
    edges: dict[tuple[tuple[str, int], tuple[str, int]], str] = {}
    trigger: dict[int, int] = {}
    dma_waits = 0
    for w in waits:
        row = rows_by_id[w["inst"]]
        if not row["is_dma"]:
            op = "==" if w["cond"] == "eq" else opts.wait_syntax
            v = w["value"] - 1 if op == ">" else w["value"]
            wait_text[w["inst"]].append(f"$S[{w['sem']}]{op}{v}")
            continue
        dma_waits += 1
        src = _binder(updates.get((w["core"], w["sem"]), []), row["start_ns"], w["cond"],
                      w["value"])
        if src is None:
            continue
        edges.setdefault((ref(src), ref(w["inst"])), "FLOW_DEPENDENCE")
        if not rows_by_id[src]["is_dma"]:
            best = trigger.get(w["inst"])
            if best is None or rows_by_id[src]["end_ns"] > rows_by_id[best]["end_ns"]:
                trigger[w["inst"]] = src
    if trace.has_table("deps"):
        deps = trace.read("deps").with_columns(pl.col("kind").cast(pl.String))
        for d in deps.iter_rows(named=True):
            kind = "ANTI_DEPENDENCE" if d["kind"] == "memory" else "FLOW_DEPENDENCE"
            edges.setdefault((ref(d["src"]), ref(d["dst"])), kind)

    for r in inst.iter_rows(named=True):
        if r["is_dma"]:
            continue
        opcode, kind = r["opcode"], None
        if r["base"] == "tensor":
            kind = "REGULAR"
        if opcode.endswith(".TRANSPOSE"):
            opcode, kind = opcode[: -len(".TRANSPOSE")], "TRANSPOSE"
        incs = [f"$S[{n}]++@complete" for n in signals_of.get(r["id"], [])]
        text = " ".join(wait_text.get(r["id"], []) + incs)
        transpose = kind == "TRANSPOSE"
        on_tensor = r["base"] == "tensor"
        out["Instruction"].append({
            "start_ts": r["start_ns"], "end_ts": r["end_ns"],
            "duration_ns": r["end_ns"] - r["start_ns"],
            "engine": engine_name(r["base"], case), "timeline_track": engine_name(r["base"],
                                                                                  "Title"),
            "pcore_idx": r["pcore"], "opcode": opcode, "operands": text,
            "compiler_opcode": opcode, "compiler_operands": text, "id": ne_id[r["id"]],
            "pc": r["pc"], "compiler_pc": r["pc"], "bir_id": f"sg0000:{r['id']}",
            "raw_bir_id": r["id"], "layer": r["layer"],
            **_counters(r["bytes"], memory.get(r["id"], [])),
            "tensor_instruction_type": kind, "tensor_elements": r["elements"],
            "raw_flops": r["flops"], "adjusted_flops": r["flops"],
            "tensor_elements_transpose": (r["elements"] if transpose else 0) if on_tensor
            else None,
            "flops_transpose": (r["flops"] if transpose else 0) if on_tensor else None,
            "adjusted_flops_transpose": (r["flops"] if transpose else 0) if on_tensor
            else None,
            "_bundle_id": r["id"],
        })

    for r in dma.iter_rows(named=True):
        tid = transfer_id[r["id"]]
        q = r["base"][len("dma."):]
        mem = memory.get(r["id"], [])
        rd = next((m for m in mem if m["access"] == "read"), None)
        wr = next((m for m in mem if m["access"] == "write"), None)
        nbytes = r["bytes"] or 0
        d = r["end_ns"] - r["start_ns"]
        opcode = r["opcode"].lower()
        qtype = "output" if "store" in opcode else "input" if "load" in opcode else "data"
        sig = signals_of.get(r["id"], [])
        trig = trigger.get(r["id"])
        rparts, rn = _partitions(rd)
        wparts, wn = _partitions(wr)
        out["DmaPacketAggregated"].append({
            "start_ts": r["start_ns"], "end_ts": r["end_ns"], "duration_ns": d, "id": tid,
            "pcore_idx": r["pcore"], "block_id": r["seq"],
            "queue_idx": queue_idx[(r["pcore"], r["base"])], "queue_name": q,
            "queue_type": qtype, "op": r["opcode"],
            "variable": "hbm" if any(m["space"] == "hbm" for m in mem) else "unknown",
            "read_bytes": nbytes, "write_bytes": nbytes, "transfer_bytes": nbytes,
            "throughput": nbytes / (d * 1e-9) if d else 0.0,
            "source": _label(rd["space"] if rd else None, "read"),
            "dest": _label(wr["space"] if wr else None, "write"),
            "semaphore_id": f"S[{sig[0]}] ({q})" if sig else None,
            "modular_flow_function": "sg0000:0",
            "read_sbuf_partitions": rparts, "read_num_sbuf_partitions": rn,
            "read_shape": _shape(rd), "read_offset": f"[{hex(rd['addr']) if rd else '0x0'}]",
            "read_steps": "[1]",
            "write_sbuf_partitions": wparts, "write_num_sbuf_partitions": wn,
            "write_shape": _shape(wr), "write_offset": f"[{hex(wr['addr']) if wr else '0x0'}]",
            "write_steps": "[1]", "is_transpose_mode": False,
            "trigger": rows_by_id[trig]["start_ns"] if trig is not None else None,
            "completion": rows_by_id[trig]["end_ns"] if trig is not None else None,
            "_bundle_id": r["id"],
        })
        k = max(1, min(1 + r["seq"] % opts.max_packets, d // 2 if d >= 2 else 1))
        for i in range(k):
            s = r["start_ns"] + (i * d) // (2 * k)
            e = r["end_ns"] - ((k - 1 - i) * d) // (2 * k)
            b = nbytes // k + (nbytes % k if i == k - 1 else 0)
            out["DmaPacket"].append({
                "start_ts": s, "end_ts": e, "duration_ns": e - s, "pcore_idx": r["pcore"],
                "id": len(out["DmaPacket"]), "packet_idx": i, "packet_aggregation_id": tid,
                "engine_idx": (queue_idx[(r["pcore"], r["base"])] + i) % 16,
                "read_bytes": b, "write_bytes": b, "transfer_bytes": b,
                "throughput": b / ((e - s) * 1e-9) if e > s else 0.0, "queue_type": qtype,
                "variable": out["DmaPacketAggregated"][-1]["variable"], "queue_name": q,
                "queue_idx": queue_idx[(r["pcore"], r["base"])],
                "crc": (tid * 2654435761 + i) % 65536,
            })

    for key in sorted(updates):
        count = 0
        for u in updates[key]:
            count = _apply(count, u.op, u.value)
            row = rows_by_id[u.inst]
            optype = {"signal": "sem_inc" if u.value == 1 else "sem_add_imm",
                      "sub": "sem_dec" if u.value == 1 else "sem_sub_imm",
                      "set": "sem_wr_imm"}[u.op]
            out["SemaphoreUpdate"].append({
                "timestamp": u.ts, "id": f"S[{u.sem}]", "value": count,
                "update_source": "AXI" if row["is_dma"] else engine_name(row["base"], case),
                "double_set_or_clear": False, "update_mode": 1,
                "update_operation_type": optype, "update_trigger_timing": "complete",
                "pcore_idx": u.core, "_order": u.order,
                "_axi_unlinkable": row["is_dma"] and signals_of[u.inst][:1] != [u.sem],
            })
    out["SemaphoreUpdate"].sort(key=lambda x: (x["timestamp"], x["_order"]))

    start_of = {("inst", ne_id[b]): rows_by_id[b] for b in ne_id}
    start_of.update({("dma", transfer_id[b]): rows_by_id[b] for b in transfer_id})
    for (src, dst), kind in sorted(edges.items(), key=lambda e: (e[0][1], e[0][0])):
        out["Flow"].append({"in_id": src[1], "out_id": dst[1], "_in": src[0], "_out": dst[0],
                            "dependency_type": kind,
                            "gap_time": start_of[dst]["start_ns"] - start_of[src]["end_ns"]})
    out["_counts"] = [{"compute_waits": len(waits) - dma_waits, "dma_waits": dma_waits,
                       "multi_core": multi_core}]
    return out


# --- the profile ----------------------------------------------------------------------------

_FLOW_NAMES = {"aws": {"inst": "Instruction", "dma": "DmaPacketAggregated", "packet": "DmaPacket"},
               "schema": {"inst": "instruction", "dma": "dma_block", "packet": "dma_packet"}}


def _shift(rows: dict[str, list[dict[str, Any]]], dt: int,
           ids: Mapping[str, int]) -> dict[str, list[dict[str, Any]]]:
    """One execution's rows moved by `dt` ns, with ids moved by `ids[kind]`."""
    times = {"Instruction": ("start_ts", "end_ts"),
             "DmaPacketAggregated": ("start_ts", "end_ts", "trigger", "completion"),
             "DmaPacket": ("start_ts", "end_ts"), "SemaphoreUpdate": ("timestamp",)}
    id_cols = {"Instruction": {"id": "inst"}, "DmaPacketAggregated": {"id": "dma"},
               "DmaPacket": {"id": "packet", "packet_aggregation_id": "dma"}}
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in rows.items():
        moved = []
        for row in rows:
            row = dict(row)
            for col in times.get(table, ()):
                if row.get(col) is not None:
                    row[col] += dt
            for col, kind in id_cols.get(table, {}).items():
                row[col] += ids[kind]
            if table == "Flow":
                row["in_id"] += ids[row["_in"]]
                row["out_id"] += ids[row["_out"]]
            moved.append(row)
        out[table] = moved
    return out


def _frame(table: str, rows: list[dict[str, Any]], opts: Options) -> pa.Table:
    """Rows as an Arrow table with exactly SCHEMA.md's columns and types."""
    drop = set(opts.drop_columns.get(table, ()))
    cols = [c for c in columns(table) if (c.required or opts.optional_columns)
            and c.name not in drop]
    schema = pa.schema([pa.field(c.name, arrow_type(c.type, opts.float_type)) for c in cols])
    return pa.table({c.name: pa.array([r.get(c.name) for r in rows],
                                      arrow_type(c.type, opts.float_type)) for c in cols},
                    schema=schema)


def _union_ns(intervals: Iterable[tuple[int, int]]) -> int:
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0)


def _canonical_engine(name: str) -> str:
    low = name.lower()
    return {v.lower(): k for k, v in ENGINE_ALIAS.items()}.get(low, low)


def summary_row(inst: list[dict[str, Any]], transfers: list[dict[str, Any]],
                packets: list[dict[str, Any]], updates: list[dict[str, Any]],
                metadata: Mapping[str, Any], span: tuple[int, int]) -> dict[str, Any]:
    """Summary figures computed from the written rows by SUMMARY-METRICS.md's recipes. `span`:
    the execution span in ns that total_time stands for (first execution start to last
    execution end). Figures the recipes cannot give (model FLOPs, NEFF sizes, collectives,
    roofline ratios) are left null. Engines of both physical cores count together: times and
    counts are summed, active time is the union."""
    total_ns = span[1] - span[0]
    total = total_ns / 1e9
    clock = float(metadata["neuroncore_clock_freq"]) * 1e9
    peak = (2 * metadata["tensor_engine_num_rows"] * metadata["tensor_engine_num_cols"]
            * float(metadata["tensor_engine_clock_freq"]) * 1e9)
    hbm_bw = float(metadata["hbm_ddr_bandwidth"])

    def pct(part: float) -> float:
        return 100.0 * part / total if total else 0.0

    row: dict[str, Any] = {"total_time": total,
                           "neuroncore_cycle_count": round(total * clock)}
    by_engine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in inst:
        by_engine[_canonical_engine(r["engine"])].append(r)
    for e in ("tensor", "vector", "scalar", "sync", "gpsimd"):
        rows = by_engine.get(e, [])
        active = _union_ns((r["start_ts"], r["end_ts"]) for r in rows) / 1e9
        row[f"{e}_engine_instruction_time"] = sum(r["duration_ns"] for r in rows) / 1e9
        row[f"{e}_engine_active_time"] = active
        row[f"{e}_engine_active_time_percent"] = pct(active)
        row[f"{e}_engine_instruction_count"] = len(rows)
    tensor = by_engine.get("tensor", [])
    matmuls = [r for r in tensor if r["opcode"].upper().startswith("MATMUL")]
    row["matmul_instruction_count"] = sum(r["opcode"].upper() == "MATMUL" for r in inst)
    activates = [r for r in inst if r["opcode"].upper() in ("ACTIVATE", "ACTIVATE_QUANTIZE")]
    row["activate_instruction_time"] = sum(r["duration_ns"] for r in activates) / 1e9
    row["activate_instruction_count"] = len(activates)
    hw = sum(r.get("raw_flops") or 0 for r in matmuls)
    tr = sum(r.get("raw_flops") or 0 for r in matmuls
             if r.get("tensor_instruction_type") == "TRANSPOSE")
    row.update(hardware_flops=hw, transpose_flops=tr, adjusted_hardware_flops=hw,
               adjusted_transpose_flops=tr)
    row["hfu_estimated_percent"] = 100.0 * hw / (peak * total) if total else 0.0
    row["mfu_inst_estimated_percent"] = 100.0 * (hw - tr) / (peak * total) if total else 0.0

    def counter(name: str) -> int:
        return sum(r.get(name) or 0 for r in inst)

    def dma_side(labels: tuple[str, ...], col: str) -> int:
        return sum(t["read_bytes" if col == "source" else "write_bytes"] for t in transfers
                   if t[col].strip("[]") in labels)

    hbm = ("INPUT", "OUTPUT", "VIRTUAL")
    row["hbm_read_bytes"] = counter("hbm_read_bytes") + dma_side(hbm, "source")
    row["hbm_write_bytes"] = counter("hbm_write_bytes") + dma_side(hbm, "dest")
    row["sbuf_read_bytes"] = counter("sbuf_read_bytes") + dma_side(("SB",), "source")
    row["sbuf_write_bytes"] = counter("sbuf_write_bytes") + dma_side(("SB",), "dest")
    row["psum_read_bytes"] = counter("psum_read_bytes")
    row["psum_write_bytes"] = counter("psum_write_bytes")
    hbm_bytes = row["hbm_read_bytes"] + row["hbm_write_bytes"]
    row["mbu_estimated_percent"] = 100.0 * hbm_bytes / total / hbm_bw if total else 0.0
    row["mm_arithmetic_intensity"] = (hw - tr) / hbm_bytes if hbm_bytes else None

    active = _union_ns((p["start_ts"], p["end_ts"]) for p in packets) / 1e9
    packet_bytes = sum(p["transfer_bytes"] for p in packets)
    row.update(
        dma_active_time=active, dma_active_cycles=round(active * clock),
        dma_active_time_percent=pct(active), static_dma_active_time=active,
        static_dma_active_time_percent=pct(active), dynamic_dma_active_time_percent=0.0,
        dma_packet_time=sum(p["duration_ns"] for p in packets) / 1e9,
        dma_transfer_time=sum(t["duration_ns"] for t in transfers) / 1e9,
        dma_transfer_count=len(transfers),
        dma_transfer_total_bytes=sum(p["transfer_bytes"] for p in packets
                                     if p["queue_type"] != "instruction"
                                     and p["transfer_bytes"] > 4),
        dma_transfer_average_bytes=packet_bytes / len(transfers) if transfers else 0.0,
        static_dma_packet_count=len(packets), static_dma_size=packet_bytes,
        static_dma_packet_percent=100.0 if packets else 0.0,
        static_dma_size_percent=100.0 if packet_bytes else 0.0,
        dynamic_dma_packet_percent=0.0, dynamic_dma_size_percent=0.0)
    for kind in ("software_dynamic", "hardware_dynamic"):
        row.update({f"{kind}_dma_active_time": 0.0, f"{kind}_dma_active_time_percent": 0.0,
                    f"{kind}_dma_packet_count": 0, f"{kind}_dma_size": 0,
                    f"{kind}_dma_packet_percent": 0.0, f"{kind}_dma_size_percent": 0.0})
    for qtype, name in (("input", "input_queue_bytes"), ("output", "output_queue_bytes"),
                        ("data", "weight_queue_bytes")):
        row[name] = sum(t["transfer_bytes"] for t in transfers if t["queue_type"] == qtype)
    row["event_count"] = len(updates)
    work = [(r["start_ts"], r["end_ts"]) for r in inst
            if r["opcode"].upper() not in SETUP_OPCODES]
    work += [(p["start_ts"], p["end_ts"]) for p in packets]
    row["total_exec_time"] = ((max(e for _, e in work) - min(s for s, _ in work)) / 1e9
                              if work else 0.0)
    everything = [(r["start_ts"], r["end_ts"]) for r in inst]
    everything += [(p["start_ts"], p["end_ts"]) for p in packets]
    row["total_active_time"] = _union_ns(everything) / 1e9
    row["total_active_time_percent"] = pct(row["total_active_time"])
    return row


def write_profile(source: str | os.PathLike[str] | Trace | TraceBuilder,
                  out_dir: str | os.PathLike[str], **options: Any) -> Profile:
    """Write `source` (a timed bundle, its path or a TraceBuilder) as a Neuron Explorer profile
    folder at `out_dir` (created; must not exist). Options: the fields of `Options`."""
    opts = Options(**options)
    if opts.engine_case not in ENGINE_CASES:
        raise ValueError(f"engine_case {opts.engine_case!r}: one of {', '.join(ENGINE_CASES)}")
    out = Path(out_dir)
    if isinstance(source, TraceBuilder):
        source.write(out.with_name(out.name + ".bundle"))
        source = out.with_name(out.name + ".bundle")
    trace = source if isinstance(source, Trace) else tracekit.open_trace(source)
    one = _execution_rows(trace, opts)
    counts = one.pop("_counts")[0]
    last_end = max([r["end_ts"] for t in ("Instruction", "DmaPacketAggregated")
                    for r in one.get(t, [])], default=0)
    period = last_end + opts.execution_gap_ns
    stride = {"inst": 2 * (max([r["_bundle_id"] for r in one.get("Instruction", [])],
                               default=0) + 1),
              "dma": 2 * len(one.get("DmaPacketAggregated", [])),
              "packet": len(one.get("DmaPacket", []))}
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    executions = []
    for e in range(opts.executions):
        start = opts.origin_ns + e * period
        moved = _shift(one, start, {k: e * v for k, v in stride.items()})
        for table, table_rows in moved.items():
            rows[table].extend(table_rows)
        executions.append({"execution_index": e,
                           "neff_name": f"{trace.manifest.workload}.neff",
                           "execution_start_ts": start, "execution_end_ts": start + last_end,
                           "num_subgraphs": 1,
                           "row_count": sum(len(v) for v in one.values())})

    for table in ("Instruction", "DmaPacketAggregated", "DmaPacket"):
        rows[table].sort(key=lambda r: (r["start_ts"], r["id"]))
    # Flow table names; without DmaPacketAggregated, edges name the transfer's first packet.
    names = _FLOW_NAMES[opts.flow_tables]
    first_packet = {p["packet_aggregation_id"]: p["id"] for p in reversed(rows["DmaPacket"])}
    for f in rows["Flow"]:
        for side, col in (("_in", "in"), ("_out", "out")):
            if f[side] == "dma" and not opts.aggregated:
                f[f"{col}_id"] = first_packet[f[f"{col}_id"]]
                f[f"{col}_table"] = names["packet"]
            else:
                f[f"{col}_table"] = names[f[side]]

    cores = sorted({r["pcore_idx"] for t in ("Instruction", "DmaPacketAggregated")
                    for r in rows[t]})
    stamps = [r[c] for t in ("Instruction", "DmaPacket", "DmaPacketAggregated")
              for r in rows[t] for c in ("start_ts", "end_ts")]
    metadata = {**DEFAULT_METADATA, "profile_schema_version": opts.schema_version,
                "num_physical_cores": len(cores) if counts["multi_core"] else 1,
                "vnc_enabled": bool(counts["multi_core"]),
                "first_hw_timestamp": min(stamps, default=0),
                "last_hw_timestamp": max(stamps, default=0),
                "neuroncore_clock_freq": opts.clock_ghz,
                "profile_name": opts.profile_name or trace.manifest.workload,
                **opts.metadata}
    written: dict[str, list[dict[str, Any]]] = {
        "Metadata": [metadata],
        "Instruction": rows["Instruction"],
        "NeffHeader": [{"network_name": trace.manifest.workload, "major_version": 2}],
    }
    if opts.aggregated:
        written["DmaPacketAggregated"] = rows["DmaPacketAggregated"]
    if opts.packets or not opts.aggregated:
        written["DmaPacket"] = rows["DmaPacket"]
    if opts.flow:
        written["Flow"] = rows["Flow"]
    if opts.semaphore_updates:
        written["SemaphoreUpdate"] = rows["SemaphoreUpdate"]
    if opts.execution_info:
        written["ExecutionInfo"] = executions
    if opts.warnings:
        written["Warning"] = [{"message": m, "category": c} for m, c in opts.warnings]
    summary = None
    if opts.summary:
        span = (executions[0]["execution_start_ts"], executions[-1]["execution_end_ts"])
        summary = summary_row(rows["Instruction"], rows["DmaPacketAggregated"],
                              rows["DmaPacket"], rows["SemaphoreUpdate"], metadata, span)
        written["Summary"] = [summary]
    written["SchemaFields"] = [
        {"table_name": t, "table_description": "", "field_name": c.name,
         "field_description": "", "field_example": None,
         "field_type": {"int64": "integer", "int32": "integer", "string": "string",
                        "bool": "boolean", "float": "number"}[c.type],
         "field_required": c.required,
         "field_format": c.type if c.type in ("int64", "int32", "float") else None}
        for t in written for c in columns(t)]

    out.mkdir(parents=True, exist_ok=False)
    tables = {t: _frame(t, r, opts) for t, r in written.items()}
    for t, table in tables.items():
        parts = opts.split if isinstance(opts.split, int) else opts.split.get(t, 1)
        write_table(out, t, table, parts)
    updates = rows["SemaphoreUpdate"] if opts.semaphore_updates else []
    return Profile(
        path=out, tables=tables, options=opts, instructions=len(rows["Instruction"]),
        transfers=len(rows["DmaPacketAggregated"]), packets=len(rows["DmaPacket"]),
        flow_edges=len(rows["Flow"]) if opts.flow else 0, semaphore_updates=len(updates),
        unlinkable_axi=sum(u["_axi_unlinkable"] for u in updates),
        compute_waits=counts["compute_waits"] * opts.executions,
        dma_waits=counts["dma_waits"] * opts.executions, summary=summary)


def write_table(folder: Path, table: str, data: pa.Table, parts: int = 1) -> list[Path]:
    """`data` as Name.parquet, or split in `parts` numbered files Name_0.parquet, ..."""
    if parts <= 1:
        pq.write_table(data, folder / f"{table}.parquet")
        return [folder / f"{table}.parquet"]
    size = math.ceil(data.num_rows / parts) if data.num_rows else 0
    paths = []
    for i in range(parts):
        path = folder / f"{table}_{i}.parquet"
        pq.write_table(data.slice(i * size, size), path)
        paths.append(path)
    return paths


def table_files(folder: Path, table: str) -> list[Path]:
    """The files of a table: Name.parquet or Name_N.parquet (not tables sharing the prefix)."""
    pattern = re.compile(rf"^{re.escape(table)}(_[0-9]+)?\.parquet$")
    return sorted(p for p in folder.iterdir() if pattern.match(p.name))


def read_profile_table(folder: Path, table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in table_files(folder, table)])


def replace_table(folder: Path, table: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite a table of a written profile as one file, changed by `change`."""
    data = change(read_profile_table(folder, table))
    for p in table_files(folder, table):
        p.unlink()
    pq.write_table(data, folder / f"{table}.parquet")


def set_column(data: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return data.set_column(data.schema.get_field_index(name), name, values)


# --- a tiny workload with known numbers, and the odd profiles -------------------------------

def tiny_bundle(path: Path) -> Path:
    """A 7-instruction workload whose profile figures are easy to compute by hand:

        id engine        opcode            start end  bytes flops    waits     signals
        0  dma.qSyncIO0  dma_load              0 100  8192             -        S0
        1  dma.qSyncIO1  dma_load             10 120  4096             -        S0
        2  tensor        MATMUL              130 230      - 4194304  S0>=2     S1
        3  tensor        MATMUL.TRANSPOSE    230 260      - 1048576    -       S1
        4  scalar        ACTIVATE            272 300  65536     -    S1>=2     S2
        5  dma.qSyncIO0  dma_store           312 412  8192           S2>=1     S3, S4
        6  vector        TENSOR_COPY         424 450      -     -    S3==1      -

    Packets: transfer 0 and 1 one each, transfer 5 (block 1) two: [312, 387) and [337, 412).
    """
    b = TraceBuilder("tiny-ne", clock_hz=1e9)
    ld0 = b.inst("dma.qSyncIO0", "dma_load", 0, 100, bytes=8192)
    ld1 = b.inst("dma.qSyncIO1", "dma_load", 10, 120, bytes=4096)
    mm = b.inst("tensor", "MATMUL", 130, 230, elements=16384, flops=4194304, layer="fc1", pc=0)
    tp = b.inst("tensor", "MATMUL.TRANSPOSE", 230, 260, elements=4096, flops=1048576,
                layer="fc1", pc=1)
    act = b.inst("scalar", "ACTIVATE", 272, 300, elements=16384, bytes=65536, layer="fc1",
                 pc=0)
    st = b.inst("dma.qSyncIO0", "dma_store", 312, 412, bytes=8192)
    cp = b.inst("vector", "TENSOR_COPY", 424, 450, elements=128, layer="fc2", pc=0)
    b.signal(ld0, 0)
    b.signal(ld1, 0)
    b.wait(mm, 0, 2)
    b.signal(mm, 1)
    b.signal(tp, 1)
    b.wait(act, 1, 2)
    b.signal(act, 2)
    b.wait(st, 2, 1)
    b.signal(st, 3)
    b.signal(st, 4)
    b.wait(cp, 3, 1, cond="eq")
    b.access(ld0, "hbm", "read", 0x1000, 8192)
    b.access(ld0, "sbuf", "write", 0, 64, partition=0, partitions=128)
    b.access(ld1, "hbm", "read", 0x4000, 4096)
    b.access(ld1, "sbuf", "write", 512, 32, partition=0, partitions=128)
    b.access(act, "psum", "read", 0, 256, partition=0, partitions=128)
    b.access(act, "sbuf", "write", 1024, 256, partition=0, partitions=128)
    b.access(st, "sbuf", "read", 1024, 64, partition=0, partitions=128)
    b.access(st, "hbm", "write", 0x10000, 8192)
    b.write(path)
    return path


def odd_missing_aggregated(bundle: Path, out: Path) -> Profile:
    """Only DmaPacket: transfers must be formed from packet_aggregation_id."""
    return write_profile(bundle, out, aggregated=False)


def odd_flow_gaps(bundle: Path, out: Path) -> Profile:
    """Flow without any edge into a DMA transfer: the trigger/completion fallback must stand
    in where the triggering instruction is a compute one."""
    prof = write_profile(bundle, out)
    replace_table(out, "Flow", lambda t: t.filter(pc.not_equal(
        t["out_table"], "DmaPacketAggregated")))
    return prof


def odd_optional_nulls(bundle: Path, out: Path) -> Profile:
    """Every optional column of Instruction, DmaPacketAggregated, SemaphoreUpdate and Flow
    present but null (pcore_idx, raw_flops, layer, counters, trigger, update_source...)."""
    prof = write_profile(bundle, out)
    for table in ("Instruction", "DmaPacketAggregated", "SemaphoreUpdate", "Flow"):
        optional = [c.name for c in columns(table) if not c.required]

        def nulls(t: pa.Table, optional: list[str] = optional) -> pa.Table:
            for name in optional:
                t = set_column(t, name, pa.nulls(t.num_rows, t.schema.field(name).type))
            return t

        replace_table(out, table, nulls)
    return prof


def odd_schema_version(bundle: Path, out: Path, version: str = "12.0.1") -> Profile:
    return write_profile(bundle, out, schema_version=version)


def odd_corrupt(bundle: Path, out: Path, table: str = "Instruction") -> Profile:
    """`table`'s file cut to half its bytes."""
    prof = write_profile(bundle, out)
    path = out / f"{table}.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return prof


def odd_missing_column(bundle: Path, out: Path, table: str = "Instruction",
                       column: str = "engine") -> Profile:
    return write_profile(bundle, out, drop_columns={table: [column]})


def odd_wrong_type(bundle: Path, out: Path, table: str = "Instruction",
                   column: str = "start_ts") -> Profile:
    """`column` written as strings ("130" instead of 130)."""
    prof = write_profile(bundle, out)
    replace_table(out, table, lambda t: set_column(t, column, t[column].cast(pa.string())))
    return prof


def odd_required_nulls(bundle: Path, out: Path, table: str = "Instruction",
                       column: str = "start_ts", rows: Sequence[int] = (1, 3)) -> Profile:
    """Nulls in a required column the converter needs, on `rows` (file order)."""
    prof = write_profile(bundle, out)

    def blank(t: pa.Table) -> pa.Table:
        values = t[column].to_pylist()
        for i in rows:
            values[i] = None
        return set_column(t, column, pa.array(values, t.schema.field(column).type))

    replace_table(out, table, blank)
    return prof


def odd_without(bundle: Path, out: Path, table: str) -> Profile:
    """A profile missing `table` altogether (Metadata or Instruction: must be refused)."""
    prof = write_profile(bundle, out)
    for p in table_files(out, table):
        p.unlink()
    return prof


def odd_two_executions(bundle: Path, out: Path) -> Profile:
    return write_profile(bundle, out, executions=2)


def two_core_bundle(trace: Trace, path: Path) -> Path:
    """`trace` run on two physical cores at once: every engine as p0.<engine> and
    p1.<engine>, core 1's semaphores numbered 1_000_000 + n, each core's copy its own ids."""
    inst = trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    n = int(inst["id"].max()) + 1
    copies = {name: [] for name in ("instructions", "semaphores", "memory", "deps")}
    for core in (0, 1):
        copies["instructions"].append(inst.with_columns(
            (pl.lit(f"p{core}.") + pl.col("engine")).alias("engine"),
            pl.col("id") + core * n))
        for name, cols in (("semaphores", ("inst",)), ("memory", ("inst",)),
                           ("deps", ("src", "dst"))):
            if trace.has_table(name):
                frame = trace.read(name).with_columns(pl.col(c) + core * n for c in cols)
                if name == "semaphores":
                    frame = frame.with_columns(pl.col("sem") + core * SEM_CORE_STRIDE)
                copies[name].append(frame)
    frames = {k: pl.concat(v, how="vertical_relaxed") for k, v in copies.items() if v}
    tracekit.write_trace(path, frames.pop("instructions"), **frames,
                         workload=trace.manifest.workload, producer="tests.neuron_profiles",
                         clock_hz=trace.manifest.clock_hz, created=None)
    return path


def copy_profile(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
