"""The trace bundle's table schemas, defined once: every other copy (Arrow schemas, the JSON
contract in `schemas/`, the docs) is derived from the specs in this module.

A bundle (schema v2) is a directory holding `manifest.json` and one Parquet file per table:

    instructions.parquet  required   one row per executed instruction
    semaphores.parquet    optional   one row per semaphore wait or signal
    memory.parquet        optional   one row per memory access range
    deps.parquet          optional   explicit dependency edges known to the producer

Column names follow DESIGN section 3 unchanged, so that producers, analyses and the design read
alike. Times are integer cycles of the clock named in the manifest; `end` is exclusive, so an
instruction's duration is `end - start`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl
import pyarrow as pa

SCHEMA_VERSION = 2
"""The schema version this tracekit writes. Readers upgrade older bundles step by step
(version 2 added the semaphore operations sub and set, and the wait condition `cond`)."""

MANIFEST_FILE = "manifest.json"

# Keys of the Parquet key-value metadata that tie each file to its table and schema version.
PARQUET_KEY_VERSION = "tracekit.schema_version"
PARQUET_KEY_TABLE = "tracekit.table"


class SemOp(StrEnum):
    """What a semaphore row does. A semaphore is a counter that starts at 0; signal, sub and set
    change it when their instruction ends (plus the machine's semaphore latency); a wait holds
    its instruction until the count satisfies `cond` against `value`."""

    WAIT = "wait"
    SIGNAL = "signal"
    SUB = "sub"
    SET = "set"


class WaitCond(StrEnum):
    """The condition of a wait: count >= value (the default when `cond` is null), or ==."""

    GE = "ge"
    EQ = "eq"


SEMAPHORE_SEMANTICS = (
    "A semaphore is a counter that starts at 0. `signal` adds its value, `sub` subtracts it "
    "and `set` replaces the count, each when its instruction ends plus the machine's "
    "semaphore latency; changes arriving at one instant are all applied before any wait "
    "looks at the count. A `wait` lets its instruction start at the first moment, once the "
    "instruction is otherwise ready (its engine free, its other dependencies done), at which "
    "the count satisfies its condition: count >= value (`ge`, the default) or count == value "
    "(`eq`); an instruction with several waits needs all of them at once. Which signal "
    "releases a wait is therefore decided by the timeline, not fixed beforehand.")
"""The semaphore semantics, stated once: the contract's README and the replay's module
docstring (`tracekit.replay.semaphores`, checked by a test) carry this text."""


class MemSpace(StrEnum):
    """Memory spaces: off-chip HBM (flat bytes) and the 2-D on-chip SBUF and PSUM."""

    HBM = "hbm"
    SBUF = "sbuf"
    PSUM = "psum"


ON_CHIP_SPACES = (MemSpace.SBUF, MemSpace.PSUM)
"""Spaces addressed as a range of partitions times a byte range within each partition."""


class Access(StrEnum):
    """Direction of a memory access."""

    READ = "read"
    WRITE = "write"


class EdgeKind(StrEnum):
    """Why one instruction depends on another (DESIGN section 4)."""

    ORDER = "order"
    SEMAPHORE = "semaphore"
    DATA = "data"
    MEMORY = "memory"
    RESOURCE = "resource"


class ColumnType(StrEnum):
    """Logical column types of the contract; each maps to one Arrow storage type."""

    INT64 = "int64"
    STRING = "string"
    ENUM = "enum"


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table: its type, whether it may be null, what it means and its unit."""

    name: str
    type: ColumnType
    nullable: bool
    meaning: str
    unit: str | None = None
    values: tuple[str, ...] = ()
    non_negative: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """Storage type in Parquet: int64, or dictionary-encoded strings for names and enums."""
        if self.type is ColumnType.INT64:
            return pa.int64()
        return pa.dictionary(pa.int32(), pa.string())

    @property
    def polars_type(self) -> pl.DataType:
        """Type of the column in the frames that `open_trace` returns."""
        if self.type is ColumnType.INT64:
            return pl.Int64()
        return pl.Categorical()


@dataclass(frozen=True)
class TableSpec:
    """One table of the bundle: its file, whether it is required, and its columns in order."""

    name: str
    required: bool
    description: str
    columns: tuple[ColumnSpec, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns)

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema written to Parquet, with the table and version as metadata."""
        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        return pa.schema(
            fields,
            metadata={PARQUET_KEY_VERSION: str(SCHEMA_VERSION), PARQUET_KEY_TABLE: self.name},
        )

    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.polars_type for c in self.columns})


def _enum_values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


INSTRUCTIONS = TableSpec(
    name="instructions",
    required=True,
    description="One row per executed instruction, on every engine and DMA queue.",
    columns=(
        ColumnSpec("id", ColumnType.INT64, False,
                   "Unique instruction id, increasing in issue order within each engine. "
                   "Ids need not be dense."),
        ColumnSpec("engine", ColumnType.STRING, False,
                   "In-order queue that executed the instruction: tensor, vector, scalar, gpsimd, "
                   "sync, or dma.q0, dma.q1, ... (one name per in-order queue)."),
        ColumnSpec("seq", ColumnType.INT64, False,
                   "Position in the engine's in-order queue; unique within an engine and "
                   "increasing with id."),
        ColumnSpec("opcode", ColumnType.STRING, False,
                   "Operation, such as matmul, activation, dma_load."),
        ColumnSpec("start", ColumnType.INT64, True,
                   "Observed issue time; null in a functional (untimed) trace. Set together "
                   "with end.", unit="cycles"),
        ColumnSpec("end", ColumnType.INT64, True,
                   "Observed completion time, exclusive (duration = end - start); end >= start. "
                   "Null when start is null.", unit="cycles"),
        ColumnSpec("elements", ColumnType.INT64, True,
                   "Data elements processed, the work size of per-element latency.",
                   unit="elements", non_negative=True),
        ColumnSpec("bytes", ColumnType.INT64, True,
                   "Bytes moved (DMA) or touched.", unit="bytes", non_negative=True),
        ColumnSpec("flops", ColumnType.INT64, True,
                   "Floating-point operations performed.", unit="flops", non_negative=True),
        ColumnSpec("layer", ColumnType.STRING, True,
                   "Network layer or operator that generated the instruction, for attribution."),
        ColumnSpec("pc", ColumnType.INT64, True,
                   "Program position, stable across runs of one program; aligns instructions "
                   "when two runs are compared."),
    ),
)

SEMAPHORES = TableSpec(
    name="semaphores",
    required=False,
    description="One row per semaphore operation performed by an instruction.",
    columns=(
        ColumnSpec("inst", ColumnType.INT64, False,
                   "Id of the instruction performing the operation (instructions.id)."),
        ColumnSpec("sem", ColumnType.INT64, False, "Semaphore number.", non_negative=True),
        ColumnSpec("op", ColumnType.ENUM, False,
                   "wait: the instruction starts at the first moment, once it is otherwise "
                   "ready, at which the semaphore's count satisfies cond against value; "
                   "signal: adds value, sub: subtracts value, set: sets the count to value, "
                   "each when the instruction ends (plus the machine's semaphore latency). "
                   "A semaphore's count starts at 0.",
                   values=_enum_values(SemOp)),
        ColumnSpec("value", ColumnType.INT64, False,
                   "Count to wait for, amount to add or subtract, or count to set.",
                   unit="count", non_negative=True),
        ColumnSpec("cond", ColumnType.ENUM, True,
                   "A wait's condition: ge (count >= value; the default when null) or eq "
                   "(count == value). Null on signal, sub and set rows. Added in version 2.",
                   values=_enum_values(WaitCond)),
    ),
)

MEMORY = TableSpec(
    name="memory",
    required=False,
    description="One row per memory access range of an instruction. HBM ranges are flat byte "
                "ranges; SBUF and PSUM ranges are a range of partitions times a byte range "
                "within each partition.",
    columns=(
        ColumnSpec("inst", ColumnType.INT64, False,
                   "Id of the accessing instruction (instructions.id)."),
        ColumnSpec("space", ColumnType.ENUM, False, "Memory space.",
                   values=_enum_values(MemSpace)),
        ColumnSpec("access", ColumnType.ENUM, False, "Direction of the access.",
                   values=_enum_values(Access)),
        ColumnSpec("addr", ColumnType.INT64, False,
                   "First byte: an HBM byte address, or the byte offset within each partition "
                   "for SBUF and PSUM.", unit="bytes", non_negative=True),
        ColumnSpec("size", ColumnType.INT64, False,
                   "Bytes accessed (per partition for SBUF and PSUM).", unit="bytes",
                   non_negative=True),
        ColumnSpec("partition", ColumnType.INT64, True,
                   "First partition of an SBUF or PSUM range; null for HBM.", unit="partition",
                   non_negative=True),
        ColumnSpec("partitions", ColumnType.INT64, True,
                   "Number of partitions of an SBUF or PSUM range (>= 1); null for HBM.",
                   unit="partitions", non_negative=True),
    ),
)

DEPS = TableSpec(
    name="deps",
    required=False,
    description="Dependency edges the producer knows: dst cannot start before src has ended.",
    columns=(
        ColumnSpec("src", ColumnType.INT64, False, "Producing instruction (instructions.id)."),
        ColumnSpec("dst", ColumnType.INT64, False, "Dependent instruction (instructions.id)."),
        ColumnSpec("kind", ColumnType.ENUM, False, "Why dst depends on src.",
                   values=_enum_values(EdgeKind)),
    ),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (INSTRUCTIONS, SEMAPHORES, MEMORY, DEPS)}
"""Every table of the schema, in the order they are documented and written."""

REFERENCES: tuple[tuple[str, str], ...] = (
    ("semaphores", "inst"),
    ("memory", "inst"),
    ("deps", "src"),
    ("deps", "dst"),
)
"""Columns that must name an existing instructions.id."""


def duplicate_names(file_schema: pa.Schema) -> list[str]:
    """Column names that a file's schema holds more than once, in first-seen order."""
    names = file_schema.names
    return [n for n in dict.fromkeys(names) if names.count(n) > 1]


def column_type_ok(col: ColumnSpec, arrow_type: pa.DataType) -> bool:
    """Whether a file's Arrow type can be read as the column's logical type: any signed
    integer or uint8..uint32 for int64; plain, large, view or dictionary-encoded strings for
    string and enum columns; an all-null column for nullable ones."""
    if col.nullable and pa.types.is_null(arrow_type):
        return True
    if col.type is ColumnType.INT64:
        return pa.types.is_signed_integer(arrow_type) or arrow_type in (
            pa.uint8(), pa.uint16(), pa.uint32())
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_string_view(arrow_type))


def table_spec(name: str) -> TableSpec:
    """The spec of table `name`; KeyError for a name that the schema does not have."""
    return TABLES[name]
