"""Reading a Neuron Explorer profile folder: the tables the import uses (split files joined,
columns by name, types checked), Metadata with its schema version first, and the execution a
bundle holds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import TracekitError, first_line

KNOWN_MAJORS = (7,)
"""Schema MAJOR versions this importer reads (7.x.y: Neuron SDK 2.31 and 2.32)."""

COUNTER_COLUMNS = ("hbm_read_bytes", "hbm_write_bytes", "sbuf_read_bytes", "sbuf_write_bytes",
                   "psum_read_bytes", "psum_write_bytes", "spill_save_bytes",
                   "spill_reload_bytes")
"""Instruction's per-space byte counters, summed into the import report."""
BYTE_COLUMNS = COUNTER_COLUMNS[:6]
"""The counters an instruction's `bytes` adds up (hbm, sbuf, psum; read and write)."""
LAYER_COLUMNS = ("layer", "hlo_name", "nki_source_location", "bir_debug_info_source_location")
"""Where an instruction's layer comes from: the first that is not null."""

class NeuronProfileError(TracekitError):
    """A Neuron Explorer profile folder that cannot be imported: an unknown schema version, a
    missing required table or column, a column of the wrong type, a corrupt file, nulls where
    values are needed, several executions and none chosen."""


class Kind(StrEnum):
    """The kind of values a column must hold (any integer width counts as an integer)."""

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
            f"{path}: table {table}: not a readable Parquet file ({first_line(exc)}). "
            f"Re-run `neuron-explorer view` to write the profile again, or remove the "
            f"damaged file.") from None


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
                f"{path}: table {table}: cannot be read ({first_line(exc)}). Re-run "
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
                                 f"({first_line(exc)}).") from None
    row = whole.row(0, named=True)
    return version, row, path


def meta_number(meta: dict[str, Any], name: str, path: Path, *,
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


def plain_values(row: dict[str, Any]) -> dict[str, Any]:
    """The number, string and boolean columns of a one-row table, NaN as null."""
    return {k: _json_value(v) for k, v in row.items()
            if v is None or isinstance(v, (bool, int, float, str))}


# --- executions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """The execution a bundle holds, as ExecutionInfo records it (times in profile ns, None
    when not recorded). With `bounded`, only rows starting in [start_ts, end_ts] belong to it
    (the profile holds several); otherwise every row does. `count`: executions in the
    profile; `table_rows`: ExecutionInfo's rows (None: no such table)."""

    index: int
    neff_name: str | None
    start_ts: int | None
    end_ts: int | None
    count: int
    table_rows: int | None
    bounded: bool = False


def choose_execution(folder: Path, execution: int | None) -> Execution:
    """The execution to import: `execution` (an execution_index), which must be given when
    ExecutionInfo lists several. No ExecutionInfo, or one row: the whole profile."""
    info = read_table(folder, "ExecutionInfo", EXECUTION_COLS)
    if info is None or info.height == 0:
        if execution not in (None, 0):
            raise NeuronProfileError(f"{folder}: the profile has no ExecutionInfo rows, so "
                                     f"it is one execution, index 0; --execution {execution} "
                                     f"does not exist.")
        return Execution(0, None, None, None, 1, None if info is None else 0)
    info = info.sort("execution_index")
    listing = "; ".join(
        f"{r['execution_index']}: {r['neff_name'] or '-'}, "
        f"{_span(r['execution_start_ts'], r['execution_end_ts'])}"
        for r in info.iter_rows(named=True))
    if info.height == 1:
        row = info.row(0, named=True)
        if execution is not None and execution != row["execution_index"]:
            raise NeuronProfileError(f"{folder}: the profile holds one execution ({listing}); "
                                     f"--execution {execution} does not exist.")
        return Execution(row["execution_index"], row["neff_name"], row["execution_start_ts"],
                         row["execution_end_ts"], 1, 1)
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
                     row["execution_end_ts"], info.height, info.height, bounded=True)


def _span(start: int | None, end: int | None) -> str:
    if start is None or end is None:
        return "times not recorded"
    return f"{start:,} to {end:,} ns"


def in_window(column: str, execution: Execution) -> pl.Expr | None:
    """Rows of `execution` by the time in `column`; None when every row belongs to it."""
    if not execution.bounded:
        return None
    expr = pl.lit(True)
    if execution.start_ts is not None:
        expr = expr & (pl.col(column) >= execution.start_ts)
    if execution.end_ts is not None:
        expr = expr & (pl.col(column) <= execution.end_ts)
    return expr


def rows_of(frame: pl.DataFrame, column: str, execution: Execution) -> pl.DataFrame:
    """The rows of `frame` that belong to `execution` (no copy when all do)."""
    keep = in_window(column, execution)
    return frame if keep is None else frame.filter(keep)
