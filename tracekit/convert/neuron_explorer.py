"""Import a Neuron Explorer device profile (the folder of Parquet tables that `neuron-explorer
view` writes, schema 7.x) as a trace bundle, one bundle per execution, with an import report of
what was and was not reconstructed, and a machine description from its Metadata.

Worked example: a profile whose tables hold

    Instruction          id 7: Tensor MATMUL [1310, 1700) pc 3, operands "... $S[4]>=1"
                         id 9: Sync   DMA_TRIGGER [900, 950) pc 0
    DmaPacketAggregated  id 2: queue qSyncIO0, op read, [960, 1300), 4096 bytes,
                         source [INPUT] read_offset [0x100], dest [SB] write_offset [0x0],
                         write_sbuf_partitions 0-1, semaphore_id "S[4] (qSyncIO0)"
    Flow                 Instruction 9 -> DmaPacketAggregated 2 (FLOW_DEPENDENCE)
    SemaphoreUpdate      S[4] = 1 at 1302 from AXI (sem_inc)

imports (times relative to the first start, 900) as

    id engine        opcode       start  end   bytes
     0 dma.qSyncIO0  DMA.read        60  400   4096
     1 sync          DMA_TRIGGER      0   50
     2 tensor        MATMUL         410  800
    deps: 1 -> 0 (data); semaphores: 0 signals S4 by 1 (AXI, linked by semaphore_id),
    2 waits for S4 >= 1 (the observed count was 1 at 1310, so the wait is kept);
    memory: 0 reads hbm [region of the variable + 0x100, 4096 bytes), writes sbuf partitions
    0-1 at 0 (2048 bytes each).

The rules (`/work/notes/ne-design.md` fixed them for every part of issue 15):

- Tables are `NAME.parquet` or `NAME_<n>.parquet` parts (all parts, in number order); columns
  are read by name, only those used, and every optional column may be absent. Metadata's
  profile_schema_version is read first: only MAJOR 7 is read.
- Executions: ExecutionInfo rows; rows belong to an execution by start time within
  [execution_start_ts, execution_end_ts]. No ExecutionInfo or one row: the whole profile.
  Times are ns from the execution's start (else the first start among its rows).
- Engines: Instruction.engine lower-cased with the glossary's aliases (pe, act, dve, pool, sp);
  DMA transfers on `dma.<queue_name>`; with several physical cores, `p<core>.` before each.
  Ids are dense in (engine, seq) order; seq by (start, pc or block_id, source id).
- Instructions: opcode verbatim (`.TRANSPOSE` appended for tensor_instruction_type TRANSPOSE);
  flops raw_flops; bytes the sum of the hbm/sbuf/psum counters; elements tensor_elements; layer
  the first of layer, hlo_name, nki_source_location, bir_debug_info_source_location. DMA
  transfers from DmaPacketAggregated, else DmaPacket grouped by packet_aggregation_id; opcode
  DMA, DMA.<op> or DMA.TRANSPOSE; bytes transfer_bytes.
- deps: Flow (FLOW_DEPENDENCE, DGE_TRIGGER or null: data; ANTI or OUTPUT: memory), dropped
  when an end is not imported or the observed times contradict it; a transfer with no Flow
  edge takes one from the instruction that starts at its `trigger` and ends at its
  `completion` (same core).
- semaphores: SemaphoreUpdate values become signal/sub (the change from the semaphore's
  previous value in the execution, from 0) or set (sem_wr_imm), linked to the instruction of
  the update's engine whose end (timing complete) or start (read) is nearest, within the
  tolerance (ties: the earlier time, then the lower id); AXI updates to the DMA transfer whose
  semaphore_id names the semaphore and whose end is nearest. Waits are parsed from operands
  (else compiler_operands): `$S[k]>=v`, `$S[k]>v` (>= v+1), `$S[k]==v` (eq), kept only if the
  observed count (the last update at or before the instruction's start) satisfies them.
  Several cores: semaphore numbers are core * 1,000,000 + n.
- memory: DMA transfers only; the read side from `source`, the write side from `dest` (SB:
  sbuf, INPUT/OUTPUT/VIRTUAL: hbm). HBM: each variable (sorted by name) owns a region of 2**40
  bytes, addr = region + the parsed offset. SBUF: addr = offset, one row per contiguous run of
  the partition list, size = transfer bytes / partitions. Compute instructions record no
  addresses: their byte counters go to the report.

Bad profiles raise NeuronProfileError naming the file, table and column and the fix.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import TracekitError, TraceExistsError
from tracekit.trace.bundle import atomic_file, write_trace
from tracekit.trace.manifest import Producer, TimeUnit

KNOWN_MAJORS = (7,)
"""Schema MAJOR versions this importer reads (7.x.y: Neuron SDK 2.31 and 2.32)."""

DEFAULT_LINK_TOLERANCE_NS = 1000
"""How far (ns) a semaphore update may lie from the instruction time it is linked to."""

CORE_STRIDE = 1_000_000
"""Semaphore numbers of physical core c start at c * CORE_STRIDE when a profile has several."""

REGION_BYTES = 2**40
"""The HBM address space each DMA variable (tensor) gets: offsets are relative to it."""

ENGINE_ALIASES = {"pe": "tensor", "act": "scalar", "dve": "vector", "pool": "gpsimd",
                  "sp": "sync"}
SPACE_OF_LABEL = {"SB": "sbuf", "INPUT": "hbm", "OUTPUT": "hbm", "VIRTUAL": "hbm"}
COUNTER_COLUMNS = ("hbm_read_bytes", "hbm_write_bytes", "sbuf_read_bytes", "sbuf_write_bytes",
                   "psum_read_bytes", "psum_write_bytes", "spill_save_bytes",
                   "spill_reload_bytes")
BYTE_COLUMNS = COUNTER_COLUMNS[:6]
LAYER_COLUMNS = ("layer", "hlo_name", "nki_source_location", "bir_debug_info_source_location")
WAIT_PATTERN = r"\$S\[\s*(\d+)\s*\]\s*(>=|==|>)\s*(\d+)"
EVENT_OPS = ("evt_set", "evt_clr")
SKIPPED_OPS = ("none", "unknown")
SET_OP = "sem_wr_imm"

SRC_INSTRUCTION, SRC_TRANSFER, SRC_PACKET_GROUP = 0, 1, 2
SOURCE_NAMES = ("Instruction", "DmaPacketAggregated", "DmaPacket groups")


class NeuronProfileError(TracekitError):
    """A Neuron Explorer profile folder that cannot be imported: an unknown schema version, a
    missing required table or column, a column of the wrong type, a corrupt file, nulls where
    values are needed, several executions and none chosen."""


class Kind(StrEnum):
    INT = "integer"
    FLOAT = "number"
    STR = "string"
    BOOL = "boolean"


_POLARS = {Kind.INT: pl.Int64, Kind.FLOAT: pl.Float64, Kind.STR: pl.String,
           Kind.BOOL: pl.Boolean}


@dataclass(frozen=True)
class Col:
    """A column the importer reads: its kind and whether the import needs it."""

    name: str
    kind: Kind
    required: bool = False


def _cols(required: dict[str, Kind], optional: dict[str, Kind]) -> tuple[Col, ...]:
    return (tuple(Col(n, k, True) for n, k in required.items())
            + tuple(Col(n, k) for n, k in optional.items()))


I, F, S, B = Kind.INT, Kind.FLOAT, Kind.STR, Kind.BOOL
INSTRUCTION_COLS = _cols(
    {"id": I, "start_ts": I, "end_ts": I, "engine": S, "opcode": S},
    {"duration_ns": I, "pcore_idx": I, "pc": I, "operands": S, "compiler_operands": S,
     "tensor_instruction_type": S, "raw_flops": I, "tensor_elements": I,
     **dict.fromkeys(LAYER_COLUMNS, S), **dict.fromkeys(COUNTER_COLUMNS, I),
     "adjusted_flops": I, "adjusted_flops_transpose": I})
TRANSFER_COLS = _cols(
    {"id": I, "start_ts": I, "end_ts": I, "queue_name": S},
    {"duration_ns": I, "pcore_idx": I, "block_id": I, "op": S, "is_transpose_mode": B,
     "transfer_bytes": I, "read_bytes": I, "write_bytes": I, "variable": S, "source": S,
     "dest": S, "semaphore_id": S, "read_offset": S, "write_offset": S,
     "read_sbuf_partitions": S, "write_sbuf_partitions": S, "trigger": I, "completion": I})
PACKET_COLS = _cols(
    {"id": I, "start_ts": I, "end_ts": I, "packet_aggregation_id": I},
    {"duration_ns": I, "pcore_idx": I, "transfer_bytes": I, "queue_name": S, "queue_idx": I})
SEMAPHORE_COLS = _cols(
    {"timestamp": I, "id": S, "value": I},
    {"update_source": S, "update_operation_type": S, "update_trigger_timing": S,
     "pcore_idx": I})
FLOW_COLS = _cols({"in_id": I, "out_id": I, "in_table": S, "out_table": S},
                  {"dependency_type": S})
EXECUTION_COLS = _cols({"execution_index": I},
                       {"neff_name": S, "execution_start_ts": I, "execution_end_ts": I})
NEFF_COLS = _cols({}, {"network_name": S})

FLOW_TABLES = {"instruction": "Instruction", "dma_block": "DmaPacketAggregated",
               "dmapacketaggregated": "DmaPacketAggregated", "dma_packet": "DmaPacket",
               "dmapacket": "DmaPacket"}
"""Flow's in_table/out_table names (lower-cased) and the table each means."""


# --- reading -------------------------------------------------------------------------------


def table_files(folder: Path, name: str) -> list[Path]:
    """The files of table `name`: NAME.parquet and NAME_<n>.parquet, in number order (not
    NAMEOther.parquet: DmaPacket is not DmaPacketAggregated)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:_([0-9]+))?\.parquet$")
    found = []
    for path in folder.iterdir():
        if (m := pattern.match(path.name)) and path.is_file():
            found.append((-1 if m.group(1) is None else int(m.group(1)), path.name, path))
    return [p for *_, p in sorted(found)]


def _kind_ok(kind: Kind, arrow_type: pa.DataType) -> bool:
    if pa.types.is_null(arrow_type):
        return True
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if kind is Kind.INT:
        return pa.types.is_integer(arrow_type)
    if kind is Kind.FLOAT:
        return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    if kind is Kind.BOOL:
        return pa.types.is_boolean(arrow_type)
    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_string_view(arrow_type))


def _file_schema(path: Path, table: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise NeuronProfileError(
            f"{path}: table {table}: not a readable Parquet file ({_first_line(exc)}). "
            f"Re-run `neuron-explorer view` to write the profile again, or remove the "
            f"damaged file.") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(folder: Path, table: str, cols: tuple[Col, ...], *,
               required: bool = False) -> pl.DataFrame | None:
    """The named columns of every part of `table`, concatenated in part order; None when the
    table has no file and is not required. Optional columns absent from a part are null;
    NeuronProfileError for a missing required table or column, a wrong type, a corrupt file
    or nulls in a required column."""
    files = table_files(folder, table)
    if not files:
        if required:
            raise NeuronProfileError(
                f"{folder}: no {table}.parquet (nor {table}_0.parquet, ...): table {table} is "
                f"required. Pass the folder `neuron-explorer view --output-format parquet` "
                f"wrote (it holds Metadata.parquet and Instruction.parquet).")
        return None
    frames = []
    for path in files:
        schema = _file_schema(path, table)
        present = []
        for col in cols:
            if col.name not in schema.names:
                if col.required:
                    raise NeuronProfileError(
                        f"{path}: table {table} has no column {col.name}, which the import "
                        f"needs. Re-write the profile with a neuron-explorer of schema 7.x, "
                        f"or add the column.")
                continue
            found = schema.field(col.name).type
            if not _kind_ok(col.kind, found):
                raise NeuronProfileError(
                    f"{path}: table {table}, column {col.name}: expected {col.kind.value} "
                    f"values, found {found}. Write the column with the type of schema 7.x "
                    f"(or drop it if it is optional).")
            present.append(col.name)
        try:
            frame = pl.read_parquet(path, columns=present)
        except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
            raise NeuronProfileError(
                f"{path}: table {table}: cannot be read ({_first_line(exc)}). Re-run "
                f"`neuron-explorer view` to write the profile again.") from None
        frames.append(frame.select(
            pl.col(c.name).cast(_POLARS[c.kind]) if c.name in present
            else pl.lit(None, _POLARS[c.kind]).alias(c.name) for c in cols))
    data = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
    for col in cols:
        if col.required and (nulls := data[col.name].null_count()):
            rows = data.with_row_index("row").filter(pl.col(col.name).is_null())["row"]
            shown = ", ".join(str(r) for r in rows.head(5).to_list())
            raise NeuronProfileError(
                f"{files[0] if len(files) == 1 else folder / (table + '_*.parquet')}: table "
                f"{table}, column {col.name}: {nulls:,} null value(s) (rows {shown}"
                f"{', ...' if nulls > 5 else ''}); the import needs a value on every row. "
                f"Fill them, or drop those rows.")
    return data


def read_metadata(folder: Path) -> tuple[str, dict[str, Any], Path]:
    """Metadata's schema version (checked first: NeuronProfileError for an unknown MAJOR) and
    its one row as a dict of every column."""
    if not folder.is_dir():
        raise NeuronProfileError(f"{folder}: {'is a file, not' if folder.exists() else 'no such'}"
                                 f" folder. Pass the folder of Parquet files that "
                                 f"`neuron-explorer view` wrote.")
    files = table_files(folder, "Metadata")
    if not files:
        raise NeuronProfileError(
            f"{folder}: no Metadata.parquet: table Metadata is required (it holds "
            f"profile_schema_version and the clocks). Pass the folder of Parquet files that "
            f"`neuron-explorer view` wrote.")
    path = files[0]
    version_frame = read_table(folder, "Metadata",
                               (Col("profile_schema_version", Kind.STR, True),), required=True)
    assert version_frame is not None
    if version_frame.height == 0:
        raise NeuronProfileError(f"{path}: table Metadata has no row. Re-run `neuron-explorer "
                                 f"view` to write the profile again.")
    version = version_frame["profile_schema_version"][0]
    m = re.match(r"^\s*(\d+)(?:\.\d+)*\s*$", version)
    known = ", ".join(f"{k} ({k}.x.y)" for k in KNOWN_MAJORS)
    if m is None:
        raise NeuronProfileError(
            f"{path}: table Metadata, column profile_schema_version: {version!r} is not "
            f"MAJOR.MINOR.PATCH; this tracekit reads major version {known}.")
    if int(m.group(1)) not in KNOWN_MAJORS:
        raise NeuronProfileError(
            f"profile schema version {version} ({path}, profile_schema_version): this "
            f"tracekit reads major version {known}; a new MAJOR renames, removes or retypes "
            f"columns. Process the capture with a neuron-explorer that writes schema 7.x "
            f"(Neuron SDK 2.31 or 2.32), or use a tracekit that reads {m.group(1)}.x.")
    try:
        whole = pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed")
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise NeuronProfileError(f"{path}: table Metadata: cannot be read "
                                 f"({_first_line(exc)}).") from None
    row = whole.row(0, named=True)
    return version, row, path


def _meta_number(meta: dict[str, Any], name: str, path: Path, *,
                 required: bool) -> float | None:
    value = meta.get(name)
    if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
        raise NeuronProfileError(f"{path}: table Metadata, column {name}: expected a number, "
                                 f"found {type(value).__name__} {value!r}. Write it as in "
                                 f"schema 7.x.")
    if value is None or not math.isfinite(value) or value <= 0:
        if required:
            raise NeuronProfileError(
                f"{path}: table Metadata, column {name}: "
                f"{'missing' if name not in meta else 'no positive value'}; the import needs "
                f"it (the NeuronCore clock sets the bundle's clock_hz). Write the profile "
                f"with a neuron-explorer of schema 7.x.")
        return None
    return float(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """The number, string and boolean columns of a one-row table, NaN as null."""
    return {k: _json_value(v) for k, v in row.items()
            if v is None or isinstance(v, (bool, int, float, str))}


# --- executions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """The execution a bundle holds: rows starting in [start_ts, end_ts] (None: unbounded)."""

    index: int
    neff_name: str | None
    start_ts: int | None
    end_ts: int | None
    count: int
    table_rows: int | None = None


def choose_execution(folder: Path, execution: int | None) -> Execution:
    info = read_table(folder, "ExecutionInfo", EXECUTION_COLS)
    if info is None or info.height == 0:
        if execution not in (None, 0):
            raise NeuronProfileError(f"{folder}: the profile has no ExecutionInfo table, so "
                                     f"it is one execution, index 0; --execution {execution} "
                                     f"does not exist.")
        return Execution(0, None, None, None, 1, None if info is None else 0)
    info = info.sort("execution_index")
    if info.height == 1:
        row = info.row(0, named=True)
        if execution is not None and execution != row["execution_index"]:
            raise NeuronProfileError(f"{folder}: the profile holds one execution, index "
                                     f"{row['execution_index']}; --execution {execution} "
                                     f"does not exist.")
        return Execution(row["execution_index"], row["neff_name"], None, None, 1, 1)
    listing = "; ".join(
        f"{r['execution_index']}: {r['neff_name'] or '-'}, "
        f"{_span(r['execution_start_ts'], r['execution_end_ts'])}"
        for r in info.iter_rows(named=True))
    if execution is None:
        raise NeuronProfileError(f"{folder}: the profile holds {info.height} executions "
                                 f"({listing}). Choose one with --execution N; each becomes "
                                 f"its own bundle.")
    match = info.filter(pl.col("execution_index") == execution)
    if match.height == 0:
        raise NeuronProfileError(f"{folder}: no execution {execution}; the profile holds "
                                 f"{listing}.")
    row = match.row(0, named=True)
    return Execution(execution, row["neff_name"], row["execution_start_ts"],
                     row["execution_end_ts"], info.height, info.height)


def _span(start: int | None, end: int | None) -> str:
    if start is None or end is None:
        return "times not recorded"
    return f"{start:,} to {end:,} ns"


def _in_window(column: str, execution: Execution) -> pl.Expr:
    expr = pl.lit(True)
    if execution.start_ts is not None:
        expr = expr & (pl.col(column) >= execution.start_ts)
    if execution.end_ts is not None:
        expr = expr & (pl.col(column) <= execution.end_ts)
    return expr


# --- compiled passes -----------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def nearest_in_groups(bounds, keys, q_group, q_time, tolerance):  # pragma: no cover - compiled
    """The position in `keys` nearest to each query's time within its group (-1: the group is
    empty or nothing lies within `tolerance`). Rows are sorted by (group, key, id); group g is
    keys[bounds[g]:bounds[g+1]]. A tie in distance goes to the earlier key; equal keys to the
    first row (the lowest id)."""
    out = np.full(q_time.size, -1, dtype=np.int64)
    for j in range(q_time.size):
        g = q_group[j]
        if g < 0:
            continue
        lo, hi = bounds[g], bounds[g + 1]
        if lo == hi:
            continue
        t = q_time[j]
        p = lo + np.searchsorted(keys[lo:hi], t, side="left")
        best = -1
        dist = 0
        if p < hi:
            best = p
            dist = keys[p] - t
        if p > lo:
            before = keys[p - 1]
            if best < 0 or t - before <= dist:
                best = lo + np.searchsorted(keys[lo:hi], before, side="left")
                dist = t - before
        if dist <= tolerance:
            out[j] = best
    return out


@numba.njit(cache=True, nogil=True)
def last_at_or_before(bounds, keys, q_group, q_time):  # pragma: no cover - compiled
    """The position of the last key <= each query's time within its group (-1: none). Rows
    sorted by (group, key, order); group g is keys[bounds[g]:bounds[g+1]]."""
    out = np.full(q_time.size, -1, dtype=np.int64)
    for j in range(q_time.size):
        g = q_group[j]
        if g < 0:
            continue
        lo, hi = bounds[g], bounds[g + 1]
        p = lo + np.searchsorted(keys[lo:hi], q_time[j], side="right") - 1
        if p >= lo:
            out[j] = p
    return out


def _bounds(groups: np.ndarray, count: int) -> np.ndarray:
    """Offsets of each group code 0..count-1 in `groups` (sorted)."""
    return np.searchsorted(groups, np.arange(count + 1, dtype=np.int64)).astype(np.int64)


def link_nearest(candidates: pl.DataFrame, queries: pl.DataFrame, tolerance: int) -> pl.Series:
    """For each query (columns g: group key, t: time) the `id` of the candidate (columns g,
    key, id) of the same group whose key is nearest to t, within `tolerance`; null where none.
    Ties: the earlier key, then the lower id."""
    if candidates.height == 0 or queries.height == 0:
        return pl.Series("inst", [None] * queries.height, dtype=pl.Int64)
    codes = candidates.select(pl.col("g").unique().sort()).with_row_index("code")
    cand = (candidates.join(codes, on="g", how="inner")
            .sort(["code", "key", "id"]))
    qcode = queries.select("g").join(codes, on="g", how="left", maintain_order="left")["code"]
    pos = nearest_in_groups(
        _bounds(cand["code"].cast(pl.Int64).to_numpy(), codes.height),
        cand["key"].to_numpy(), qcode.cast(pl.Int64).fill_null(-1).to_numpy(),
        queries["t"].to_numpy(), np.int64(tolerance))
    ids = cand["id"].to_numpy()
    found = pos >= 0
    result = np.where(found, ids[np.maximum(pos, 0)], 0)
    return pl.Series("inst", result, dtype=pl.Int64).set(pl.Series(~found), None) \
        if (~found).any() else pl.Series("inst", result, dtype=pl.Int64)


def count_at(chain: pl.DataFrame, queries: pl.DataFrame) -> pl.Series:
    """For each query (sem, t) the value of the last chain row (sem, ts, value) at or before t,
    0 when there is none: the observed count of the semaphore at that time."""
    if queries.height == 0:
        return pl.Series("count", [], dtype=pl.Int64)
    if chain.height == 0:
        return pl.Series("count", np.zeros(queries.height, dtype=np.int64))
    codes = chain.select(pl.col("sem").unique().sort()).with_row_index("code")
    rows = chain.join(codes, on="sem", how="inner").sort(["code", "ts", "order"])
    qcode = queries.select("sem").join(codes, on="sem", how="left",
                                       maintain_order="left")["code"]
    pos = last_at_or_before(_bounds(rows["code"].cast(pl.Int64).to_numpy(), codes.height),
                            rows["ts"].to_numpy(),
                            qcode.cast(pl.Int64).fill_null(-1).to_numpy(),
                            queries["t"].to_numpy())
    values = rows["value"].to_numpy()
    return pl.Series("count", np.where(pos >= 0, values[np.maximum(pos, 0)], 0))


# --- parsing of text columns ---------------------------------------------------------------


def parse_waits(operands: pl.Series) -> pl.DataFrame:
    """The semaphore conditions in operand text, one row per condition: row (index into
    `operands`), sem, value, cond (ge or eq). `$S[k]>=v` is >= v, `$S[k]>v` is >= v + 1,
    `$S[k]==v` is == v; other text is ignored."""
    found = (pl.DataFrame({"text": operands}).with_row_index("row")
             .select("row", pl.col("text").str.extract_all(WAIT_PATTERN).alias("m"))
             .explode("m").drop_nulls("m"))
    op = pl.col("m").str.extract(WAIT_PATTERN, 2)
    return found.select(
        pl.col("row").cast(pl.Int64),
        sem=pl.col("m").str.extract(WAIT_PATTERN, 1).cast(pl.Int64),
        value=pl.col("m").str.extract(WAIT_PATTERN, 3).cast(pl.Int64)
        + (op == ">").cast(pl.Int64),
        cond=pl.when(op == "==").then(pl.lit("eq")).otherwise(pl.lit("ge")))


def semaphore_number(text: pl.Expr) -> pl.Expr:
    """n of `S[n]` (the form DmaPacketAggregated.semaphore_id shows), or of a bare integer."""
    return pl.coalesce(text.str.extract(r"S\[\s*(\d+)\s*\]", 1),
                       text.str.extract(r"^\s*(\d+)\s*$", 1)).cast(pl.Int64)


def parse_offset(text: pl.Expr) -> pl.Expr:
    """The first number of an offset like `[0x2000]` or `[512, 0]` (hex or decimal)."""
    token = text.str.extract(r"(0[xX][0-9a-fA-F]+|\d+)", 1)
    return (pl.when(token.str.starts_with("0x") | token.str.starts_with("0X"))
            .then(token.str.slice(2).str.to_integer(base=16, strict=False))
            .otherwise(token.str.to_integer(base=10, strict=False)))


def location_space(label: pl.Expr) -> pl.Expr:
    """The memory space of a DMA location label (`[SB]`, `[[INPUT]]`, ...); null if unknown."""
    bare = label.str.replace_all(r"[\[\]\s]", "").str.to_uppercase()
    return bare.replace_strict(SPACE_OF_LABEL, default=None, return_dtype=pl.String)


def partition_runs(lists: pl.DataFrame) -> pl.DataFrame:
    """Contiguous runs of SBUF partition lists: `lists` has columns row and text (`0,1`,
    `0-15`, `0-3,8-11`); returns row, partition (first of the run), partitions (its length)
    and total (partitions in the whole list). Rows whose text holds no partition are left
    out."""
    item = r"^(\d+)(?:-(\d+))?$"
    items = (lists.select("row", pl.col("text").str.replace_all(r"[\[\]\s]", "")
                          .str.split(",").alias("item"))
             .explode("item").filter(pl.col("item").str.len_chars() > 0)
             .select("row", lo=pl.col("item").str.extract(item, 1).cast(pl.Int64),
                     hi=pl.coalesce(pl.col("item").str.extract(item, 2),
                                    pl.col("item").str.extract(item, 1)).cast(pl.Int64)))
    bad = items.filter(pl.col("lo").is_null() | (pl.col("hi") < pl.col("lo")))["row"].unique()
    items = items.filter(~pl.col("row").is_in(bad.implode())).sort(["row", "lo", "hi"])
    runs = (items.with_columns(reach=pl.col("hi").cum_max().over("row"))
            .with_columns(new=(pl.col("lo") > pl.col("reach").shift(1).over("row") + 1)
                          .fill_null(True))
            .with_columns(run=pl.col("new").cast(pl.Int64).cum_sum())
            .group_by("row", "run", maintain_order=True)
            .agg(partition=pl.col("lo").min(), last=pl.col("hi").max())
            .with_columns(partitions=pl.col("last") - pl.col("partition") + 1))
    return (runs.with_columns(total=pl.col("partitions").sum().over("row"))
            .select("row", "partition", "partitions", "total"))


def engine_name(engine: pl.Expr) -> pl.Expr:
    """Instruction.engine as a tracekit engine: lower case, glossary aliases resolved."""
    low = engine.str.strip_chars().str.to_lowercase()
    return low.replace(ENGINE_ALIASES)


def union_ns(start: np.ndarray, end: np.ndarray) -> int:
    """Length of the union of intervals [start, end)."""
    if start.size == 0:
        return 0
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], s.size) - 1
    return int((reach[last] - s[first]).clip(min=0).sum())


# --- the import report -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    """What `convert` reconstructed from a profile and what it left out, with counts.

    Every mapping is ordered and holds plain numbers, so `to_dict()` is stable JSON.
    """

    profile: str
    bundle: str
    machine_file: str | None
    schema_version: str
    execution: dict[str, Any]
    tables_read: dict[str, int]
    tables_missing: tuple[str, ...]
    instructions: dict[str, int]
    engines: dict[str, int]
    edges: dict[str, int]
    edges_dropped: dict[str, int]
    semaphores: dict[str, int]
    semaphore_links: dict[str, int]
    semaphores_dropped: dict[str, int]
    waits: dict[str, int]
    waits_dropped: dict[str, int]
    memory: dict[str, int]
    counters: dict[str, int | None]
    checks: dict[str, int]
    notes: tuple[str, ...] = field(default=())

    @property
    def total_instructions(self) -> int:
        return sum(self.instructions.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "bundle": self.bundle, "machine_file": self.machine_file,
            "schema_version": self.schema_version, "execution": self.execution,
            "tables": {"read": self.tables_read, "missing": list(self.tables_missing)},
            "instructions": {"by_source": self.instructions, "total": self.total_instructions},
            "engines": self.engines,
            "edges": {"by_source": self.edges, "dropped": self.edges_dropped},
            "semaphores": {"by_op": self.semaphores, "by_link": self.semaphore_links,
                           "dropped": self.semaphores_dropped},
            "waits": {**self.waits, "dropped": self.waits_dropped},
            "memory": self.memory, "counters": self.counters, "checks": self.checks,
            "notes": list(self.notes),
        }

    def manifest_dict(self) -> dict[str, Any]:
        """The report as kept in the manifest (the paths of this run left out)."""
        out = self.to_dict()
        for key in ("profile", "bundle", "machine_file"):
            out.pop(key)
        return out

    def rows_by_source(self) -> pl.DataFrame:
        """what (instructions, edges, semaphores, waits, memory), source, rows."""
        rows = [("instructions", k, v) for k, v in self.instructions.items()]
        rows += [("edges", k, v) for k, v in self.edges.items()]
        rows += [("semaphores", k, v) for k, v in self.semaphores.items()]
        rows += [("semaphore links", k, v) for k, v in self.semaphore_links.items()]
        rows += [("waits", k, v) for k, v in self.waits.items()]
        rows += [("memory", k, v) for k, v in self.memory.items()]
        return pl.DataFrame(rows, schema={"what": pl.String, "source": pl.String,
                                          "rows": pl.Int64}, orient="row")

    def dropped(self) -> pl.DataFrame:
        """what, reason, rows: everything read and not imported, and why."""
        rows = [("edges", k, v) for k, v in self.edges_dropped.items()]
        rows += [("semaphore updates", k, v) for k, v in self.semaphores_dropped.items()]
        rows += [("waits", k, v) for k, v in self.waits_dropped.items()]
        return pl.DataFrame(rows, schema={"what": pl.String, "reason": pl.String,
                                          "rows": pl.Int64}, orient="row")

    def engines_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"engine": list(self.engines),
                             "instructions": list(self.engines.values())},
                            schema={"engine": pl.String, "instructions": pl.Int64})

    def counters_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"counter": list(self.counters), "value": list(self.counters.values())},
                            schema={"counter": pl.String, "value": pl.Int64})

    def checks_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"check": list(self.checks), "rows": list(self.checks.values())},
                            schema={"check": pl.String, "rows": pl.Int64})


def _counts(series: pl.Series, order: tuple[str, ...] = ()) -> dict[str, int]:
    """Value counts of a string series as an ordered dict: `order` first, then by name."""
    if series.len() == 0:
        return {}
    counts = dict(series.value_counts().iter_rows())
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return {k: int(counts[k]) for k in keys if counts[k]}


def _nonzero(mapping: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in mapping.items() if v}


# --- the conversion --------------------------------------------------------------------------


@dataclass
class _Dropped:
    """Counters of rows left out, by reason, in insertion order."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + int(n)


def _transfers_from_packets(packets: pl.DataFrame) -> pl.DataFrame:
    """DMA transfers formed from packets grouped by packet_aggregation_id: first start, last
    end, summed bytes, the first packet's queue and core."""
    return (packets.sort(["packet_aggregation_id", "start_ts", "id"])
            .group_by("packet_aggregation_id", maintain_order=True)
            .agg(start_ts=pl.col("start_ts").min(), end_ts=pl.col("end_ts").max(),
                 pcore_idx=pl.col("pcore_idx").drop_nulls().first(),
                 transfer_bytes=pl.col("transfer_bytes").sum(),
                 queue_name=pl.col("queue_name").drop_nulls().first(),
                 queue_idx=pl.col("queue_idx").drop_nulls().first())
            .rename({"packet_aggregation_id": "id"})
            .with_columns(queue_name=pl.coalesce(
                pl.col("queue_name"), pl.lit("q") + pl.col("queue_idx").cast(pl.String),
                pl.lit("unknown"))))


def convert(profile_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
            execution: int | None = None, machine_out: str | os.PathLike[str] | None = None,
            link_tolerance_ns: int = DEFAULT_LINK_TOLERANCE_NS,
            overwrite: bool = False) -> ImportReport:
    """Import the Neuron Explorer profile in folder `profile_dir` as a bundle at `out` (written
    atomically and validated), one execution of it (`execution`: its execution_index; needed
    when the profile holds several), and with `machine_out` a machine description from its
    Metadata. Returns the import report; NeuronProfileError on a bad profile."""
    folder = Path(profile_dir)
    target = Path(out)
    machine_path = None if machine_out is None else Path(machine_out)
    if link_tolerance_ns < 0:
        raise NeuronProfileError(f"link tolerance {link_tolerance_ns} ns: must be 0 or more.")
    if target.exists() and not overwrite:
        raise TraceExistsError(f"{target}: already exists. Choose another path or pass "
                               f"--force to replace it.")
    if machine_path is not None:
        if machine_path.exists() and not overwrite:
            raise TraceExistsError(f"{machine_path}: already exists. Choose another path "
                                   f"(--machine-out) or pass --force to replace it.")
        if machine_path.resolve() == target.resolve():
            raise NeuronProfileError(f"{machine_path}: the machine description would replace "
                                     f"the bundle. Choose another --machine-out.")
        if not machine_path.resolve().parent.is_dir():
            raise NeuronProfileError(f"{machine_path.parent}: no such folder for the machine "
                                     f"description. Create it or choose another "
                                     f"--machine-out.")
    version, meta, meta_path = read_metadata(folder)
    clock_ghz = _meta_number(meta, "neuroncore_clock_freq", meta_path, required=True)
    assert clock_ghz is not None
    chosen = choose_execution(folder, execution)
    built = _Build(folder, chosen, link_tolerance_ns)
    built.run()
    machine_text = machine_toml(meta, meta_path)
    report = built.report(str(folder), str(target),
                          None if machine_path is None else str(machine_path), version)
    extra = {"neuron_explorer": {
        "schema_version": version,
        "execution": built.execution_record(),
        "metadata": _plain(meta),
        "counters": report.counters,
        **({"summary": built.summary} if built.summary is not None else {}),
        "import": report.manifest_dict()}}
    workload = (meta.get("profile_name") or built.network_name or folder.resolve().name
                or "neuron-profile")
    explorer = meta.get("explorer_version")

    def write() -> None:
        write_trace(target, built.instructions,
                    semaphores=built.semaphores if built.semaphores.height else None,
                    memory=built.memory if built.memory.height else None,
                    deps=built.deps if built.deps.height else None,
                    workload=str(workload),
                    producer=Producer("neuron-explorer",
                                      explorer if isinstance(explorer, str) else ""),
                    machine=meta.get("instance_type") if isinstance(
                        meta.get("instance_type"), str) else None,
                    clock_hz=clock_ghz * 1e9, time_unit=TimeUnit.NS, created=None,
                    extra=extra, overwrite=overwrite)

    if machine_path is None:
        write()
        return report
    try:
        with atomic_file(machine_path) as temporary:
            temporary.write_text("", encoding="utf-8")  # an unwritable folder fails here
            write()
            temporary.write_text(machine_text, encoding="utf-8")
    except OSError as exc:
        raise NeuronProfileError(f"{machine_path}: cannot write the machine description "
                                 f"({exc.strerror or exc}).") from None
    return report


class _Build:
    """The tables of one execution, built step by step, and the counts for the report."""

    def __init__(self, folder: Path, execution: Execution, tolerance: int) -> None:
        self.folder = folder
        self.execution = execution
        self.tolerance = tolerance
        self.tables_read: dict[str, int] = {}
        self.missing: list[str] = []
        self.notes: list[str] = []
        self.edges_dropped = _Dropped()
        self.sem_dropped = _Dropped()
        self.waits_dropped = _Dropped()
        self.checks: dict[str, int] = {}
        self.summary: dict[str, Any] | None = None
        self.network_name: str | None = None
        self.origin = 0
        self.end_ns = 0
        if execution.table_rows is None:
            self.missing.append("ExecutionInfo")
        else:
            self.tables_read["ExecutionInfo"] = execution.table_rows

    def _read(self, table: str, cols: tuple[Col, ...], *, required: bool = False
              ) -> pl.DataFrame | None:
        data = read_table(self.folder, table, cols, required=required)
        if data is None:
            self.missing.append(table)
        else:
            self.tables_read[table] = data.height
        return data

    # ---- the steps

    def run(self) -> None:
        inst = self._read("Instruction", INSTRUCTION_COLS, required=True)
        assert inst is not None
        transfers = self._read("DmaPacketAggregated", TRANSFER_COLS)
        packets = self._read("DmaPacket", PACKET_COLS)
        self.dma_source = SRC_TRANSFER
        if transfers is None and packets is not None:
            self.dma_source = SRC_PACKET_GROUP
            transfers = _transfers_from_packets(packets)
            self.notes.append("DmaPacketAggregated is missing: DMA transfers are DmaPacket "
                              "rows grouped by packet_aggregation_id (no source, dest, "
                              "semaphore or trigger fields).")
        self._check_times(inst, "Instruction")
        if transfers is not None and self.dma_source == SRC_TRANSFER:
            self._check_times(transfers, "DmaPacketAggregated")
        if packets is not None:
            self._check_times(packets, "DmaPacket")
        cores = pl.concat([inst.select("pcore_idx")]
                          + ([transfers.select("pcore_idx")] if transfers is not None else []))
        self.multicore = cores["pcore_idx"].drop_nulls().n_unique() > 1
        if self.multicore and (nulls := cores["pcore_idx"].null_count()):
            self.notes.append(f"{nulls:,} instruction or DMA row(s) of a profile with several "
                              f"physical cores have no pcore_idx: counted as core 0.")
        self._compute(inst)
        self._transfers(transfers)
        self._finish_instructions()
        self._counters(inst, packets)
        self._deps(packets)
        self._semaphores()
        self._memory()
        self._extras()

    def _check_times(self, frame: pl.DataFrame, table: str) -> None:
        bad = frame.with_row_index("row").filter(pl.col("end_ts") < pl.col("start_ts"))
        if bad.height:
            rows = ", ".join(str(r) for r in bad["row"].head(5).to_list())
            raise NeuronProfileError(
                f"{table_files(self.folder, table)[0]}: table {table}, columns start_ts and "
                f"end_ts: end_ts < start_ts on {bad.height:,} row(s) (rows {rows}). Check the "
                f"capture; every event must end at or after its start.")

    def _core(self) -> pl.Expr:
        return pl.col("pcore_idx").fill_null(0)

    def _qualified(self, name: pl.Expr) -> pl.Expr:
        if not self.multicore:
            return name
        return pl.lit("p") + self._core().cast(pl.String) + pl.lit(".") + name

    def _compute(self, inst: pl.DataFrame) -> None:
        window = inst.filter(_in_window("start_ts", self.execution))
        self.outside = inst.height - window.height
        self.inst_all = inst.select("id", "start_ts")  # every id of the table, for Flow
        if "duration_ns" in inst.columns:
            self.checks["Instruction duration_ns != end_ts - start_ts"] = int(window.filter(
                pl.col("duration_ns") != pl.col("end_ts") - pl.col("start_ts")).height)
        counters = [pl.col(c) for c in BYTE_COLUMNS]
        transpose = pl.col("tensor_instruction_type").str.to_uppercase() == "TRANSPOSE"
        bare = engine_name(pl.col("engine"))
        self.compute = window.select(
            src=pl.lit(SRC_INSTRUCTION, pl.Int64), sid=pl.col("id"),
            core=self._core(), bare=bare, engine=self._qualified(bare),
            t0=pl.col("start_ts"), t1=pl.col("end_ts"), tie=pl.col("pc").fill_null(-1),
            opcode=pl.when(transpose.fill_null(False))
            .then(pl.col("opcode") + ".TRANSPOSE").otherwise(pl.col("opcode")),
            elements=pl.col("tensor_elements"),
            bytes=pl.when(pl.any_horizontal(c.is_not_null() for c in counters))
            .then(pl.sum_horizontal(counters)).otherwise(None).cast(pl.Int64),
            flops=pl.col("raw_flops"),
            layer=pl.coalesce([pl.col(c) for c in LAYER_COLUMNS]),
            pc=pl.col("pc"),
            operands=pl.col("operands"), compiler_operands=pl.col("compiler_operands"),
            **{c: pl.col(c) for c in (*COUNTER_COLUMNS, "adjusted_flops",
                                      "adjusted_flops_transpose")})

    def _transfers(self, transfers: pl.DataFrame | None) -> None:
        if transfers is None:
            self.dma = None
            return
        window = transfers.filter(_in_window("start_ts", self.execution))
        self.outside += transfers.height - window.height
        self.dma_all = transfers.select("id")
        if self.dma_source == SRC_TRANSFER:
            if "duration_ns" in transfers.columns:
                self.checks["DmaPacketAggregated duration_ns != end_ts - start_ts"] = int(
                    window.filter(pl.col("duration_ns")
                                  != pl.col("end_ts") - pl.col("start_ts")).height)
            op = pl.col("op").str.strip_chars()
            opcode = (pl.when(pl.col("is_transpose_mode").fill_null(False))
                      .then(pl.lit("DMA.TRANSPOSE"))
                      .when(op.is_not_null() & (op.str.len_chars() > 0))
                      .then(pl.lit("DMA.") + op).otherwise(pl.lit("DMA")))
            tie = pl.col("block_id").fill_null(-1)
        else:
            opcode, tie = pl.lit("DMA"), pl.lit(-1, pl.Int64)
        bare = pl.lit("dma.") + pl.col("queue_name")
        self.dma = window.select(
            src=pl.lit(self.dma_source, pl.Int64), sid=pl.col("id"), core=self._core(),
            bare=bare, engine=self._qualified(bare), t0=pl.col("start_ts"),
            t1=pl.col("end_ts"), tie=tie, opcode=opcode,
            elements=pl.lit(None, pl.Int64), bytes=pl.col("transfer_bytes"),
            flops=pl.lit(None, pl.Int64), layer=pl.lit(None, pl.String),
            pc=pl.lit(None, pl.Int64))
        if self.dma_source == SRC_TRANSFER:
            self.dma_extra = window.select(
                sid=pl.col("id"), sem_n=semaphore_number(pl.col("semaphore_id")),
                trigger=pl.col("trigger"), completion=pl.col("completion"),
                variable=pl.col("variable"), source=pl.col("source"), dest=pl.col("dest"),
                read_offset=pl.col("read_offset"), write_offset=pl.col("write_offset"),
                read_sbuf_partitions=pl.col("read_sbuf_partitions"),
                write_sbuf_partitions=pl.col("write_sbuf_partitions"),
                read_bytes=pl.col("read_bytes"), write_bytes=pl.col("write_bytes"),
                transfer_bytes=pl.col("transfer_bytes"))
        else:
            self.dma_extra = None

    def _finish_instructions(self) -> None:
        cols = ["src", "sid", "core", "bare", "engine", "t0", "t1", "tie", "opcode",
                "elements", "bytes", "flops", "layer", "pc"]
        parts = [self.compute.select(cols)] + ([self.dma] if self.dma is not None else [])
        rows = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        starts = rows["t0"]
        if self.execution.start_ts is not None:
            self.origin = int(self.execution.start_ts)
            if rows.height and starts.min() < self.origin:  # pragma: no cover - filtered
                self.origin = int(starts.min())
        else:
            self.origin = int(starts.min()) if rows.height else 0
        ends = rows["t1"]
        self.end_ns = (int(self.execution.end_ts) - self.origin
                       if self.execution.end_ts is not None
                       else (int(ends.max()) - self.origin if rows.height else 0))
        rows = (rows.sort(["engine", "t0", "tie", "src", "sid"])
                .with_row_index("id").with_columns(pl.col("id").cast(pl.Int64)))
        self.rows = rows
        self.instructions = rows.select(
            "id", "engine", seq=pl.int_range(pl.len(), dtype=pl.Int64).over("engine"),
            opcode="opcode", start=pl.col("t0") - self.origin, end=pl.col("t1") - self.origin,
            elements="elements", bytes="bytes", flops="flops", layer="layer", pc="pc")
        viol = rows.filter(pl.col("src") == SRC_INSTRUCTION).select(
            (pl.col("pc") < pl.col("pc").shift(1).over("engine")).sum())
        self.checks["pc lower than the one before on its engine"] = int(viol.item() or 0)
        self.ids = rows.select("src", "sid", "id", "core", "bare", "t0", "t1")

    def _counters(self, inst: pl.DataFrame, packets: pl.DataFrame | None) -> None:
        c = self.compute
        sums = c.select([pl.col(n).sum() for n in COUNTER_COLUMNS])
        counters: dict[str, int | None] = {
            n: (int(sums[n][0]) if c[n].null_count() < c.height else None)
            for n in COUNTER_COLUMNS}
        matmul = c.filter((pl.col("bare") == "tensor")
                          & pl.col("opcode").str.starts_with("MATMUL"))
        for name in ("adjusted_flops", "adjusted_flops_transpose"):
            counters[name] = (int(matmul[name].sum()) if matmul[name].null_count()
                              < matmul.height else None)
        if packets is not None:
            p = packets.filter(_in_window("start_ts", self.execution))
            counters["dma_packets"] = p.height
            counters["dma_packet_bytes"] = int(p["transfer_bytes"].sum())
            counters["dma_packet_active_ns"] = union_ns(p["start_ts"].to_numpy(),
                                                        p["end_ts"].to_numpy())
            if "duration_ns" in packets.columns:
                self.checks["DmaPacket duration_ns != end_ts - start_ts"] = int(p.filter(
                    pl.col("duration_ns") != pl.col("end_ts") - pl.col("start_ts")).height)
            self.packet_map = packets.select(pid=pl.col("id"),
                                             sid=pl.col("packet_aggregation_id"))
        else:
            self.packet_map = None
        self.counters = counters

    # ---- deps

    def _endpoint(self, flow: pl.DataFrame, side: str) -> pl.DataFrame:
        """Flow's `side` (in or out) resolved: table (canonical), id (bundle id or null), why
        (null, or the reason it does not resolve)."""
        table = pl.col(f"{side}_table").str.strip_chars().str.to_lowercase().replace_strict(
            FLOW_TABLES, default=None, return_dtype=pl.String)
        ends = flow.select(table.alias("table"), pl.col(f"{side}_id").alias("raw"))
        # A DmaPacket id names its transfer.
        if self.packet_map is not None:
            ends = ends.join(self.packet_map, left_on="raw", right_on="pid", how="left",
                             maintain_order="left")
        else:
            ends = ends.with_columns(sid=pl.lit(None, pl.Int64))
        ends = ends.with_columns(
            sid=pl.when(pl.col("table") == "DmaPacket").then(pl.col("sid"))
            .otherwise(pl.col("raw")),
            src=pl.col("table").replace_strict(
                {"Instruction": SRC_INSTRUCTION, "DmaPacketAggregated": self.dma_source,
                 "DmaPacket": self.dma_source}, default=None, return_dtype=pl.Int64))
        ends = ends.join(self.ids.select("src", "sid", "id"), on=["src", "sid"], how="left",
                         maintain_order="left")
        known_inst = self.inst_all.select(sid="id", k=pl.lit(True))
        known_dma = (self.dma_all.select(sid="id", k=pl.lit(True))
                     if self.dma is not None else None)
        ends = ends.join(known_inst, on="sid", how="left", maintain_order="left").rename(
            {"k": "in_inst"})
        if known_dma is not None:
            ends = ends.join(known_dma, on="sid", how="left", maintain_order="left").rename(
                {"k": "in_dma"})
        else:
            ends = ends.with_columns(in_dma=pl.lit(None, pl.Boolean))
        exists = (pl.when(pl.col("table") == "Instruction").then(pl.col("in_inst"))
                  .otherwise(pl.col("in_dma")).fill_null(False))
        why = (pl.when(pl.col("table").is_null()).then(pl.lit("names a table not imported"))
               .when(pl.col("id").is_not_null()).then(pl.lit(None, pl.String))
               .when((pl.col("table") == "DmaPacket") & pl.col("sid").is_null())
               .then(pl.lit("names a DmaPacket row not in the profile"))
               .when(exists).then(pl.lit("names a row of another execution"))
               .otherwise(pl.lit("names a row not in the profile")))
        return ends.select("id", why.alias("why"))

    def _deps(self, packets: pl.DataFrame | None) -> None:
        flow = self._read("Flow", FLOW_COLS)
        times = self.ids.select("id", "t0", "t1")
        kept = pl.DataFrame(schema={"src": pl.Int64, "dst": pl.Int64, "kind": pl.String})
        flow_count = 0
        if flow is not None and flow.height:
            a, b = self._endpoint(flow, "in"), self._endpoint(flow, "out")
            dtype = flow["dependency_type"].str.to_uppercase()
            memory_kind = (dtype.str.contains("ANTI") | dtype.str.contains("OUTPUT"))
            edges = pl.DataFrame({"src": a["id"], "dst": b["id"], "why_a": a["why"],
                                  "why_b": b["why"], "mem": memory_kind}).select(
                "src", "dst", why=pl.coalesce("why_a", "why_b"),
                kind=pl.when(pl.col("mem").fill_null(False)).then(pl.lit("memory"))
                .otherwise(pl.lit("data")))
            for reason, n in _counts(edges["why"].drop_nulls()).items():
                self.edges_dropped.add(reason, n)
            edges = edges.filter(pl.col("why").is_null()).drop("why")
            self.edges_dropped.add("self edge", edges.filter(
                pl.col("src") == pl.col("dst")).height)
            edges = edges.filter(pl.col("src") != pl.col("dst"))
            edges = (edges.join(times.rename({"id": "src", "t1": "src_end"}).drop("t0"),
                                on="src", maintain_order="left")
                     .join(times.rename({"id": "dst", "t0": "dst_start"}).drop("t1"),
                           on="dst", maintain_order="left"))
            late = pl.col("dst_start") < pl.col("src_end")
            self.edges_dropped.add("contradicted by observed times",
                                   edges.filter(late).height)
            edges = edges.filter(~late).select("src", "dst", "kind")
            before = edges.height
            edges = edges.unique(["src", "dst"], keep="first", maintain_order=True)
            self.edges_dropped.add("duplicate", before - edges.height)
            kept = edges
            flow_count = edges.height
        fallback = 0
        if self.dma_extra is not None:
            into = kept.select(pl.col("dst").unique())
            need = (self.ids.filter(pl.col("src") == SRC_TRANSFER)
                    .join(self.dma_extra.select("sid", "trigger", "completion"), on="sid")
                    .filter(pl.col("trigger").is_not_null()
                            & pl.col("completion").is_not_null()
                            & ~pl.col("id").is_in(into["dst"].implode())))
            compute = self.ids.filter(pl.col("src") == SRC_INSTRUCTION).select(
                "core", trigger="t0", completion="t1", src="id")
            matched = (need.join(compute, on=["core", "trigger", "completion"], how="inner")
                       .sort(["id", "src"]))
            ambiguous = matched.group_by("id").len().filter(pl.col("len") > 1).height
            if ambiguous:
                self.notes.append(f"{ambiguous:,} DMA transfer(s) have several instructions "
                                  f"at their trigger/completion times: linked to the "
                                  f"lowest id.")
            matched = matched.unique("id", keep="first", maintain_order=True)
            self.edges_dropped.add("no instruction at trigger/completion (fallback)",
                                   need.height - matched.height)
            late = pl.col("t0") < pl.col("completion")
            self.edges_dropped.add("contradicted by observed times (fallback)",
                                   matched.filter(late).height)
            matched = matched.filter(~late).select("src", dst="id", kind=pl.lit("data"))
            fallback = matched.height
            kept = pl.concat([kept, matched], how="vertical")
        self.edges = {"Flow": flow_count, "trigger fallback": fallback}
        self.deps = kept.sort(["dst", "src"])

    # ---- semaphores

    def _sem_number(self, n: pl.Expr) -> pl.Expr:
        if not self.multicore:
            return n
        return self._core() * CORE_STRIDE + n

    def _semaphores(self) -> None:
        updates = self._read("SemaphoreUpdate", SEMAPHORE_COLS)
        ops = []
        self.sem_links = {"engine-time": 0, "axi-semaphore-id": 0}
        chain = pl.DataFrame(schema={"sem": pl.Int64, "ts": pl.Int64, "order": pl.Int64,
                                     "value": pl.Int64})
        if updates is not None:
            window = updates.filter(_in_window("timestamp", self.execution)).with_row_index(
                "order").with_columns(pl.col("order").cast(pl.Int64))
            optype = pl.col("update_operation_type").str.strip_chars().str.to_lowercase()
            u = window.with_columns(
                n=semaphore_number(pl.col("id")), optype=optype,
                source=engine_name(pl.col("update_source")),
                timing=pl.col("update_trigger_timing").str.strip_chars().str.to_lowercase(),
                core=self._core())
            self.sem_dropped.add("semaphore id not of the form S[n]",
                                 u.filter(pl.col("n").is_null()).height)
            u = u.filter(pl.col("n").is_not_null()).with_columns(sem=self._sem_number(
                pl.col("n")))
            events = pl.col("optype").is_in(EVENT_OPS).fill_null(False)
            self.sem_dropped.add("event (evt_set, evt_clr), not a counter",
                                 u.filter(events).height)
            u = (u.filter(~events).sort(["sem", "timestamp", "order"])
                 .with_columns(delta=pl.col("value")
                               - pl.col("value").shift(1).over("sem").fill_null(0)))
            chain = u.select("sem", ts="timestamp", order="order", value="value")
            skipped = pl.col("optype").is_in(SKIPPED_OPS).fill_null(False)
            self.sem_dropped.add("operation none or unknown", u.filter(skipped).height)
            u = u.filter(~skipped)
            is_set = (pl.col("optype") == SET_OP).fill_null(False)
            self.sem_dropped.add("no change of value", u.filter(
                ~is_set & (pl.col("delta") == 0)).height)
            u = u.filter(is_set | (pl.col("delta") != 0)).with_columns(
                op=pl.when(is_set).then(pl.lit("set"))
                .when(pl.col("delta") > 0).then(pl.lit("signal")).otherwise(pl.lit("sub")),
                amount=pl.when(is_set).then(pl.col("value")).otherwise(pl.col("delta").abs()))
            ops.append(self._link(u))
        self.sem_chain = chain
        waits = self._waits(chain)
        signals = (pl.concat(ops, how="vertical") if ops
                   else pl.DataFrame(schema={"inst": pl.Int64, "sem": pl.Int64,
                                             "op": pl.String, "value": pl.Int64}))
        self.sem_ops = _counts(signals["op"], ("signal", "sub", "set"))
        rows = pl.concat([signals.with_columns(cond=pl.lit(None, pl.String)), waits],
                         how="vertical")
        self.semaphores = rows.sort(["inst", "sem", "op"], maintain_order=True)

    def _link(self, u: pl.DataFrame) -> pl.DataFrame:
        """The signal/sub/set rows of semaphore updates `u`, each linked to its instruction
        (rows that link to none are dropped and counted)."""
        axi = pl.col("source") == "axi"
        self.sem_dropped.add("no update_source", u.filter(pl.col("source").is_null()).height)
        u = u.filter(pl.col("source").is_not_null())
        by_engine = u.filter(~axi).with_columns(
            side=(pl.col("timing") == "read").fill_null(False).cast(pl.Int64))
        by_axi = u.filter(axi)
        rows = self.ids.filter(pl.col("src") == SRC_INSTRUCTION)
        wanted = by_engine.select("core", pl.col("source").alias("bare"), "side").unique()
        cand = rows.join(wanted.select("core", "bare").unique(), on=["core", "bare"])
        cand = pl.concat([
            cand.filter(pl.col("bare").is_in(
                wanted.filter(pl.col("side") == s)["bare"].implode()))
            .select(g=pl.struct(pl.col("core"), pl.col("bare"), pl.lit(s).alias("side")),
                    key=pl.col("t1" if s == 0 else "t0"), id="id")
            for s in (0, 1)], how="vertical")
        q = by_engine.select(g=pl.struct(pl.col("core"), pl.col("source").alias("bare"),
                                         pl.col("side")), t="timestamp")
        linked = by_engine.with_columns(link_nearest(cand, q, self.tolerance).alias("inst"))
        missing_engine = ~pl.struct(pl.col("core"), pl.col("source").alias("bare")).is_in(
            rows.select(pl.struct("core", "bare")).to_series().unique().implode())
        self.sem_dropped.add("no instruction on the update's engine",
                             linked.filter(missing_engine).height)
        self.sem_dropped.add(f"no instruction within {self.tolerance} ns (engine time)",
                             linked.filter(~missing_engine & pl.col("inst").is_null()).height)
        linked = linked.filter(pl.col("inst").is_not_null())
        self.sem_links["engine-time"] = linked.height
        parts = [linked]
        if by_axi.height:
            if self.dma_extra is None:
                self.sem_dropped.add("AXI update, no DMA transfer names semaphores",
                                     by_axi.height)
            else:
                named = (self.ids.filter(pl.col("src") == SRC_TRANSFER)
                         .join(self.dma_extra.select("sid", "sem_n"), on="sid")
                         .filter(pl.col("sem_n").is_not_null()))
                cand = named.select(g=pl.struct("core", "sem_n"), key="t1", id="id")
                q = by_axi.select(g=pl.struct(pl.col("core"), pl.col("n").alias("sem_n")),
                                  t="timestamp")
                got = by_axi.with_columns(link_nearest(cand, q, self.tolerance).alias("inst"))
                self.sem_dropped.add(f"no DMA transfer naming the semaphore within "
                                     f"{self.tolerance} ns (AXI)",
                                     got.filter(pl.col("inst").is_null()).height)
                got = got.filter(pl.col("inst").is_not_null())
                self.sem_links["axi-semaphore-id"] = got.height
                parts.append(got)
        return pl.concat([p.select("inst", "sem", "op", value="amount") for p in parts],
                         how="vertical")

    def _waits(self, chain: pl.DataFrame) -> pl.DataFrame:
        c = self.compute.select("sid", "core", "t0", "operands", "compiler_operands").join(
            self.ids.filter(pl.col("src") == SRC_INSTRUCTION).select("sid", "id"), on="sid",
            maintain_order="left")
        runtime = parse_waits(c["operands"])
        has = pl.Series(np.zeros(c.height, dtype=bool))
        if runtime.height:
            has = has.scatter(runtime["row"].unique().to_numpy(), True)
        compiled = parse_waits(c["compiler_operands"])
        compiled = compiled.filter(~pl.col("row").is_in(
            pl.Series(np.flatnonzero(has.to_numpy())).implode()))
        found = pl.concat([runtime, compiled], how="vertical")
        parsed = found.height
        found = found.join(c.with_row_index("row").select(
            pl.col("row").cast(pl.Int64), "id", "core", "t0"), on="row", maintain_order="left")
        found = found.with_columns(sem=self._sem_number(pl.col("sem")))
        before = found.height
        found = found.unique(["id", "sem", "value", "cond"], keep="first", maintain_order=True)
        self.waits_dropped.add("duplicate", before - found.height)
        count = count_at(chain, found.select("sem", t="t0"))
        ok = np.where(found["cond"].to_numpy() == "eq", count.to_numpy() == found["value"]
                      .to_numpy(), count.to_numpy() >= found["value"].to_numpy())
        self.waits_dropped.add("contradicted by observed counts", int((~ok).sum()))
        kept = found.filter(pl.Series(ok))
        self.waits = {"parsed": parsed, "kept": kept.height}
        return kept.select(inst="id", sem="sem", op=pl.lit("wait"), value="value",
                           cond=pl.when(pl.col("cond") == "eq").then(pl.lit("eq"))
                           .otherwise(pl.lit(None, pl.String)))

    # ---- memory

    def _memory(self) -> None:
        empty = pl.DataFrame(schema={"inst": pl.Int64, "space": pl.String,
                                     "access": pl.String, "addr": pl.Int64, "size": pl.Int64,
                                     "partition": pl.Int64, "partitions": pl.Int64})
        self.memory_counts: dict[str, int] = {}
        if self.dma_extra is None or self.dma_extra.height == 0:
            self.memory = empty
            return
        d = self.dma_extra.join(self.ids.filter(pl.col("src") == SRC_TRANSFER)
                                .select("sid", "id"), on="sid", maintain_order="left")
        variables = d["variable"].fill_null("").unique().sort()
        regions = pl.DataFrame({"variable": variables,
                                "base": np.arange(variables.len(), dtype=np.int64)
                                * REGION_BYTES})
        d = d.with_columns(variable=pl.col("variable").fill_null("")).join(
            regions, on="variable", maintain_order="left")
        parts = []
        unknown = 0
        unparsed = 0
        for access, label, offset, plist, side_bytes in (
                ("read", "source", "read_offset", "read_sbuf_partitions", "read_bytes"),
                ("write", "dest", "write_offset", "write_sbuf_partitions", "write_bytes")):
            side = d.select("id", "base", space=location_space(pl.col(label)),
                            label=pl.col(label), off=parse_offset(pl.col(offset)),
                            plist=pl.col(plist),
                            size=pl.coalesce(pl.col(side_bytes), pl.col("transfer_bytes")),
                            total=pl.col("transfer_bytes"))
            unknown += side.filter(pl.col("space").is_null()).height
            side = side.filter(pl.col("space").is_not_null())
            unparsed += side.filter(pl.col("off").is_null()).height
            side = side.filter(pl.col("off").is_not_null())
            hbm = side.filter(pl.col("space") == "hbm").select(
                inst="id", space="space", access=pl.lit(access),
                addr=pl.col("base") + pl.col("off"), size=pl.col("size").fill_null(0),
                partition=pl.lit(None, pl.Int64), partitions=pl.lit(None, pl.Int64))
            sb = side.filter(pl.col("space") == "sbuf").with_row_index("row").with_columns(
                pl.col("row").cast(pl.Int64))
            runs = partition_runs(sb.select("row", text=pl.col("plist").fill_null("")))
            unparsed += sb.height - runs["row"].n_unique()
            sbuf = (runs.rename({"total": "total_parts"})
                    .join(sb.select("row", "id", "off", "total"), on="row",
                          maintain_order="left")
                    .select(inst="id", space=pl.lit("sbuf"), access=pl.lit(access),
                            addr="off",
                            size=pl.max_horizontal(pl.col("total").fill_null(0)
                                                   // pl.col("total_parts"), pl.lit(1)),
                            partition="partition", partitions="partitions"))
            parts += [hbm, sbuf]
        memory = pl.concat([empty, *[p.cast(empty.schema) for p in parts]], how="vertical")
        self.memory = memory.sort(["inst", "access", "space", "partition", "addr"],
                                  maintain_order=True, nulls_last=False)
        self.memory_counts = {
            "hbm rows": memory.filter(pl.col("space") == "hbm").height,
            "sbuf rows": memory.filter(pl.col("space") == "sbuf").height,
            "unknown location labels": unknown,
            "offset or partitions not parsed": unparsed,
            "variables (hbm regions)": variables.len()}

    # ---- the rest

    def _extras(self) -> None:
        warnings = read_table(self.folder, "Warning", ())
        if warnings is None:
            self.missing.append("Warning")
        else:
            files = table_files(self.folder, "Warning")
            self.tables_read["Warning"] = sum(pq.ParquetFile(f).metadata.num_rows
                                              for f in files)
        self.checks["profile Warning rows"] = self.tables_read.get("Warning", 0)
        summary_files = table_files(self.folder, "Summary")
        if summary_files:
            try:
                summary = pl.concat([pl.read_parquet(f) for f in summary_files],
                                    how="diagonal_relaxed")
            except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
                raise NeuronProfileError(f"{summary_files[0]}: table Summary: cannot be read "
                                         f"({_first_line(exc)}).") from None
            self.tables_read["Summary"] = summary.height
            if summary.height == 1:
                self.summary = _plain(summary.row(0, named=True))
            else:
                self.notes.append(f"Summary holds {summary.height} rows, not one: not kept.")
        else:
            self.missing.append("Summary")
        neff = self._read("NeffHeader", NEFF_COLS)
        if neff is not None and neff.height:
            self.network_name = neff["network_name"].drop_nulls().first()
        self.checks["rows outside the execution"] = self.outside

    def execution_record(self) -> dict[str, Any]:
        e = self.execution
        return {"index": e.index, "neff_name": e.neff_name, "start_ns": self.origin,
                "end_ns": self.origin + self.end_ns, "of": e.count}

    def report(self, profile: str, bundle: str, machine: str | None,
               version: str) -> ImportReport:
        instructions = {SOURCE_NAMES[SRC_INSTRUCTION]: self.compute.height}
        if self.dma is not None:
            instructions[SOURCE_NAMES[self.dma_source]] = self.dma.height
        engines = dict(self.instructions.group_by("engine").len().sort("engine").iter_rows())
        table_order = ("Metadata", "ExecutionInfo", "Instruction", "DmaPacketAggregated",
                       "DmaPacket", "Flow", "SemaphoreUpdate", "Summary", "NeffHeader",
                       "Warning")
        missing = tuple(t for t in table_order if t in self.missing
                        and t not in ("NeffHeader",))
        return ImportReport(
            profile=profile, bundle=bundle, machine_file=machine, schema_version=version,
            execution=self.execution_record(),
            tables_read={t: self.tables_read[t] for t in table_order if t in self.tables_read},
            tables_missing=missing, instructions=instructions,
            engines={str(k): int(v) for k, v in engines.items()},
            edges=self.edges, edges_dropped=self.edges_dropped.counts,
            semaphores=self.sem_ops, semaphore_links=self.sem_links,
            semaphores_dropped=self.sem_dropped.counts,
            waits=self.waits, waits_dropped=self.waits_dropped.counts,
            memory=self.memory_counts, counters=self.counters, checks=self.checks,
            notes=tuple(self.notes))


# --- the machine description ---------------------------------------------------------------

_DEFAULTS = """\
[latency]                        # defaults of tracekit's trn-like machine, not measured
semaphore = 12.0
data = 0.0

[semaphores]
counter_bits = 16

[memory]                         # defaults of trn-like, not measured
partitions = 128
sbuf_partition_bytes = 196608
psum_partition_bytes = 16384

[engines.default]                # defaults of trn-like, not measured
fixed_cycles = 16.0

[engines.vector]
fixed_cycles = 48.0
per_element = 0.0078125

[engines.scalar]
fixed_cycles = 56.0
per_element = 0.0078125

[engines.gpsimd]
fixed_cycles = 80.0
per_element = 0.015625

[engines.dma]                    # defaults of trn-like, not measured
fixed_cycles = 96.0
per_byte = 0.00390625
"""


def machine_toml(meta: dict[str, Any], path: Path) -> str:
    """A machine description (for `tracekit replay --machine`) from Metadata: the clock, the
    Tensor Engine's array and clock, the HBM and per-queue DMA bandwidths; the rest are the
    trn-like machine's defaults, marked as such. Values Metadata lacks fall back to trn-like
    with a comment."""
    clock_ghz = _meta_number(meta, "neuroncore_clock_freq", path, required=True)
    assert clock_ghz is not None
    clock_hz = clock_ghz * 1e9
    name = meta.get("instance_type") if isinstance(meta.get("instance_type"), str) \
        and meta.get("instance_type") else "neuron-explorer-import"
    rows = _meta_number(meta, "tensor_engine_num_rows", path, required=False)
    cols = _meta_number(meta, "tensor_engine_num_cols", path, required=False)
    tensor_ghz = _meta_number(meta, "tensor_engine_clock_freq", path, required=False)
    hbm = _meta_number(meta, "hbm_ddr_bandwidth", path, required=False)
    dma = _meta_number(meta, "dma_ddr_bandwidth", path, required=False)
    engines = _meta_number(meta, "num_dma_engines_per_neuroncore", path, required=False)
    lines = [
        "# Made by `tracekit convert neuron-explorer` from the profile's Metadata.",
        "# Replay the imported bundle with it: tracekit replay BUNDLE --machine THIS",
        f"name = {_toml_str(name)}",
        f"description = {_toml_str('Neuron Explorer profile of ' + name)}",
        f"clock_hz = {clock_hz!r}    # neuroncore_clock_freq {clock_ghz:g} GHz", ""]
    if hbm is not None:
        lines += ["[hbm]", f"bytes_per_cycle = {hbm / clock_hz!r}    # hbm_ddr_bandwidth "
                           f"{hbm:g} B/s / clock_hz"]
    else:
        lines += ["[hbm]", "bytes_per_cycle = 192.0    # trn-like default: Metadata has no "
                           "hbm_ddr_bandwidth"]
    lines.append("")
    if dma is not None and engines is not None:
        lines += ["[dma]", f"bytes_per_cycle = {dma / (clock_hz * engines)!r}    # per queue: "
                           f"dma_ddr_bandwidth {dma:g} B/s / (clock_hz x "
                           f"{engines:g} num_dma_engines_per_neuroncore)"]
    else:
        lines += ["[dma]", "bytes_per_cycle = 64.0    # trn-like default: Metadata has no "
                           "dma_ddr_bandwidth or num_dma_engines_per_neuroncore"]
    lines.append("")
    lines.append(_DEFAULTS)
    lines.append("[engines.tensor]")
    lines.append("fixed_cycles = 64.0               # trn-like default, not measured")
    if rows is not None and cols is not None and tensor_ghz is not None:
        lines.append(f"per_flop = {clock_ghz / (2 * rows * cols * tensor_ghz)!r}    # "
                     f"neuroncore clock / (2 x {rows:g} x {cols:g} x tensor clock "
                     f"{tensor_ghz:g} GHz)")
    else:
        lines.append("per_flop = 3.0517578125e-05    # trn-like default: Metadata lacks the "
                     "tensor array or clock")
    text = "\n".join(lines) + "\n"
    from tracekit.replay.machine import parse_machine

    parse_machine(tomllib.loads(text), str(path))  # the description replay will read
    return text


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
