"""The validation rules of the trace bundle contract: a code, a severity, what the rule demands
and how to fix a bundle that breaks it. Validation, the CLI and the exported contract in
`schemas/` all read this one catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """An error makes a bundle invalid; a warning does so only under `--strict`."""

    ERROR = "error"
    WARNING = "warning"


class Rule(StrEnum):
    """Stable codes of the validation rules, as printed by `tracekit validate`."""

    SCHEMA_VERSION = "schema-version"
    MANIFEST_FIELD = "manifest-field"
    TABLE_MISSING = "table-missing"
    TABLE_UNREADABLE = "table-unreadable"
    FILE_HASH = "file-hash"
    ROW_COUNT = "row-count"
    PARQUET_METADATA = "parquet-metadata"
    COLUMN_MISSING = "column-missing"
    DUPLICATE_COLUMN = "duplicate-column"
    COLUMN_TYPE = "column-type"
    NOT_NULL = "not-null"
    UNIQUE_ID = "unique-id"
    ENGINE_SEQ_UNIQUE = "engine-seq-unique"
    ENGINE_SEQ_ORDER = "engine-seq-order"
    TIMING_PAIR = "timing-pair"
    END_BEFORE_START = "end-before-start"
    DANGLING_REFERENCE = "dangling-reference"
    ENUM_VALUE = "enum-value"
    NEGATIVE_VALUE = "negative-value"
    PARTITION_RANGE = "partition-range"
    SELF_DEPENDENCY = "self-dependency"
    WAIT_CONDITION = "wait-condition"
    UNKNOWN_COLUMN = "unknown-column"
    UNLISTED_FILE = "unlisted-file"
    PARTIAL_TIMING = "partial-timing"
    OUTSIDE_LINK = "outside-link"


@dataclass(frozen=True)
class RuleInfo:
    """What a rule demands (`summary`), which tables it applies to, and how to fix a breach."""

    severity: Severity
    tables: tuple[str, ...]
    summary: str
    fix: str


_ALL = ("instructions", "semaphores", "memory", "deps")

RULES: dict[Rule, RuleInfo] = {
    Rule.SCHEMA_VERSION: RuleInfo(
        Severity.ERROR, (),
        "The manifest's schema_version is one this tracekit reads (older ones are upgraded).",
        "Write schema_version 2, or upgrade tracekit for a bundle from a newer producer."),
    Rule.MANIFEST_FIELD: RuleInfo(
        Severity.ERROR, (),
        "manifest.json has every field with the right type: workload, producer, clock_hz, "
        "time_unit, and a {file, rows, bytes, sha256} entry per table.",
        "Correct the named manifest field, or re-export the bundle with its producer."),
    Rule.TABLE_MISSING: RuleInfo(
        Severity.ERROR, _ALL,
        "instructions.parquet exists, and so does every file the manifest lists.",
        "Restore the missing file, or re-export the bundle."),
    Rule.TABLE_UNREADABLE: RuleInfo(
        Severity.ERROR, _ALL,
        "Every table file is a readable Parquet file.",
        "The file is truncated or corrupt: re-export the bundle from its producer."),
    Rule.FILE_HASH: RuleInfo(
        Severity.ERROR, _ALL,
        "Every table file's size and sha256 match the manifest.",
        "The file changed after it was written: restore it, or re-export the bundle so that "
        "the manifest records the new contents."),
    Rule.ROW_COUNT: RuleInfo(
        Severity.ERROR, _ALL,
        "Every table file holds as many rows as the manifest records.",
        "Re-export the bundle so that the manifest and the files agree."),
    Rule.PARQUET_METADATA: RuleInfo(
        Severity.WARNING, _ALL,
        "Every table file carries the key-value metadata tracekit.table and "
        "tracekit.schema_version, agreeing with the manifest.",
        "Write the two keys into each Parquet file's key-value metadata (the schema "
        "contract's README.md says how; `python -m tracekit.trace.contract DIR` writes the "
        "contract into DIR)."),
    Rule.COLUMN_MISSING: RuleInfo(
        Severity.ERROR, _ALL,
        "Every non-nullable column of the schema is present (nullable ones may be left out).",
        "Add the column; the schema contract's TABLE.json lists every column with its type "
        "(`python -m tracekit.trace.contract DIR` writes the contract into DIR)."),
    Rule.DUPLICATE_COLUMN: RuleInfo(
        Severity.ERROR, _ALL,
        "Every column name appears once in a table file.",
        "Write each column once; rename or drop the copies."),
    Rule.COLUMN_TYPE: RuleInfo(
        Severity.ERROR, _ALL,
        "Every column has its schema type: integers (any width that fits int64) for int64 "
        "columns, strings or dictionary-encoded strings for string and enum columns.",
        "Write the column with the type that the schema contract's TABLE.json gives "
        "(`python -m tracekit.trace.contract DIR` writes the contract into DIR)."),
    Rule.NOT_NULL: RuleInfo(
        Severity.ERROR, _ALL,
        "Non-nullable columns hold no nulls.",
        "Fill the named column on the listed rows."),
    Rule.UNIQUE_ID: RuleInfo(
        Severity.ERROR, ("instructions",),
        "Instruction ids are unique.",
        "Give every instruction its own id."),
    Rule.ENGINE_SEQ_UNIQUE: RuleInfo(
        Severity.ERROR, ("instructions",),
        "(engine, seq) is unique: no two instructions share a slot of one in-order queue.",
        "Number each engine's instructions 0, 1, 2, ... in issue order."),
    Rule.ENGINE_SEQ_ORDER: RuleInfo(
        Severity.ERROR, ("instructions",),
        "Inside each engine, seq increases with id.",
        "Assign ids in issue order, or renumber seq to follow id within each engine."),
    Rule.TIMING_PAIR: RuleInfo(
        Severity.ERROR, ("instructions",),
        "start and end are both set or both null on each instruction.",
        "Set both times, or neither for an untimed instruction."),
    Rule.END_BEFORE_START: RuleInfo(
        Severity.ERROR, ("instructions",),
        "end >= start.",
        "Check the producer's timestamps; end is the exclusive completion cycle."),
    Rule.DANGLING_REFERENCE: RuleInfo(
        Severity.ERROR, ("semaphores", "memory", "deps"),
        "Every semaphores.inst, memory.inst, deps.src and deps.dst names an existing "
        "instructions.id.",
        "Drop the rows of instructions that are not in the trace, or add those instructions."),
    Rule.ENUM_VALUE: RuleInfo(
        Severity.ERROR, ("semaphores", "memory", "deps"),
        "Enumerated columns hold legal values: op in {wait, signal, sub, set}; cond in {ge, eq}; "
        "space in {hbm, sbuf, psum}; access in {read, write}; kind in {order, semaphore, data, "
        "memory, resource}.",
        "Map the producer's names onto the legal values (lower case)."),
    Rule.NEGATIVE_VALUE: RuleInfo(
        Severity.ERROR, ("instructions", "semaphores", "memory"),
        "Sizes, counts, addresses and semaphore numbers are non-negative: elements, bytes, "
        "flops, sem, value, addr, size, partition, partitions.",
        "Write the absolute quantity; a size is never negative."),
    Rule.PARTITION_RANGE: RuleInfo(
        Severity.ERROR, ("memory",),
        "SBUF and PSUM accesses give partition and partitions (>= 1); HBM accesses leave both "
        "null.",
        "Give on-chip accesses their partition range; leave it null for HBM."),
    Rule.SELF_DEPENDENCY: RuleInfo(
        Severity.ERROR, ("deps",),
        "No instruction depends on itself (src != dst).",
        "Drop the self-edges; an instruction is always ordered after itself."),
    Rule.WAIT_CONDITION: RuleInfo(
        Severity.ERROR, ("semaphores",),
        "cond is set only on wait rows (signal, sub and set rows leave it null).",
        "Clear cond on the listed rows, or make them waits if a condition was meant."),
    Rule.UNKNOWN_COLUMN: RuleInfo(
        Severity.WARNING, _ALL,
        "Tables hold only the schema's columns (others are ignored by every reader).",
        "Drop the column, or rename it to the schema column it was meant to be."),
    Rule.UNLISTED_FILE: RuleInfo(
        Severity.WARNING, (),
        "The bundle folder holds only the manifest and the files it lists.",
        "Remove the stray file, or re-export the bundle so that the manifest lists it."),
    Rule.PARTIAL_TIMING: RuleInfo(
        Severity.WARNING, ("instructions",),
        "A trace is timed throughout or untimed throughout.",
        "Emit times for every instruction, or for none (a functional-only trace)."),
    Rule.OUTSIDE_LINK: RuleInfo(
        Severity.ERROR, (),
        "No file of the bundle is a symbolic link to something outside the bundle folder.",
        "Copy the linked file into the bundle in place of the link (`cp --remove-destination "
        "TARGET LINK`), or re-export the bundle."),
}
