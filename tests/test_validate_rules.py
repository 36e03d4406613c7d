"""Every rule of `tracekit.trace.rules.Rule`, each broken on purpose in an otherwise valid bundle.

Row numbers are 0-based in file order; see conftest.py for the fixture's rows. Where a breakage
can only break one rule, the test asserts that exactly that rule is reported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from conftest import (
    append,
    build_valid_trace,
    edit,
    edit_manifest,
    read_table,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracekit.errors import TracekitError
from tracekit.trace.builder import TraceBuilder, replace_table_file
from tracekit.trace.bundle import file_sha256
from tracekit.trace.rules import RULES, Rule, Severity
from tracekit.trace.validate import Finding, ValidationReport, _IdIndex, validate

MakeBundle = Callable[..., Path]


# --- helpers -------------------------------------------------------------------------------


def describe(report: ValidationReport) -> str:
    return "\n".join(f"{f.rule.value} table={f.table} file={f.file} column={f.column} "
                     f"count={f.count} rows={f.rows}: {f.message}" for f in report.findings)


def only_finding(report: ValidationReport, rule: Rule) -> Finding:
    """The report's single finding, which must be of `rule`."""
    assert report.rules_broken() == {rule}, describe(report)
    assert len(report.findings) == 1, describe(report)
    return report.findings[0]


def the_finding(report: ValidationReport, rule: Rule, **where: Any) -> Finding:
    """The one finding of `rule` (optionally also matching table=, column=, ...)."""
    found = [f for f in report.findings if f.rule is rule
             and all(getattr(f, key) == value for key, value in where.items())]
    assert len(found) == 1, describe(report)
    return found[0]


def set_column(bundle: Path, table: str, column: str, values: pa.Array) -> None:
    """Rewrite one table file with `column` replaced by `values` (a nullable field of any type),
    keeping the other columns and the tracekit key-value metadata."""
    data = read_table(bundle, table)
    index = data.schema.get_field_index(column)
    data = data.set_column(index, pa.field(column, values.type, nullable=True), values)
    replace_table_file(bundle, table, data)


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def record_file_in_manifest(bundle: Path, table: str) -> None:
    """Make the manifest's bytes and sha256 of `table` match the file as it is now."""
    path = bundle / f"{table}.parquet"

    def change(m: dict[str, Any]) -> None:
        m["tables"][table].update(bytes=path.stat().st_size, sha256=file_sha256(path))

    edit_manifest(bundle, change)


# --- the valid fixture ---------------------------------------------------------------------


def test_valid_fixture_has_no_findings(valid_bundle: Path) -> None:
    report = validate(valid_bundle)
    assert report.findings == (), describe(report)
    assert report.ok() and report.ok(strict=True)
    assert report.path == valid_bundle
    assert report.to_dict()["valid"] is True


def test_valid_trace_in_shuffled_file_order_has_no_findings(make_bundle: MakeBundle) -> None:
    def reverse_rows(b: TraceBuilder) -> None:
        for rows in b.rows.values():
            rows.reverse()

    report = validate(make_bundle(reverse_rows))
    assert report.findings == (), describe(report)


def test_omitting_nullable_columns_is_valid(valid_bundle: Path) -> None:
    data = read_table(valid_bundle, "instructions").drop_columns(["layer", "pc", "flops"])
    replace_table_file(valid_bundle, "instructions", data)
    report = validate(valid_bundle)
    assert report.findings == (), describe(report)


def test_every_rule_of_the_catalogue_is_tested_here() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    mentioned = set(re.findall(r"Rule\.([A-Z_]+)", source))
    assert {rule.name for rule in Rule} <= mentioned
    assert set(RULES) == set(Rule)


# --- schema-version ------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "says"), [
    (99, "newer than this tracekit understands"),
    (0, "not a known tracekit schema version"),
    ("1", "it must be an integer"),
    (True, "it must be an integer"),
    (None, "it must be an integer"),
])
def test_schema_version(valid_bundle: Path, version: Any, says: str) -> None:
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=version))
    finding = only_finding(validate(valid_bundle), Rule.SCHEMA_VERSION)
    assert finding.severity is Severity.ERROR
    assert finding.file == "manifest.json"
    assert finding.table is None and finding.column is None
    assert says in finding.message
    assert repr(version) in finding.message or str(version) in finding.message


def test_schema_version_missing_key(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m.pop("schema_version"))
    finding = only_finding(validate(valid_bundle), Rule.SCHEMA_VERSION)
    assert finding.file == "manifest.json"


def _limit_memory() -> None:  # runs in the child process before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS to contain a failure")
def test_schema_version_far_below_the_first_is_reported_promptly(valid_bundle: Path) -> None:
    # A version far below 1 is as unknown as 0 is. Validated in a child process with 3 GiB of
    # address space, so that a validator which enumerates every version in between fails
    # this test instead of exhausting the machine's memory.
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=-10**12))
    code = ("import json, sys; from tracekit.trace.validate import validate; "
            "r = validate(sys.argv[1]); "
            "print(json.dumps([[f.rule.value, f.file] for f in r.findings]))")
    proc = subprocess.run([sys.executable, "-c", code, str(valid_bundle)], capture_output=True,
                          text=True, timeout=300, check=False, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [["schema-version", "manifest.json"]]


def test_unknown_schema_version_skips_the_tables(valid_bundle: Path) -> None:
    # The tables of a bundle of unknown version are not judged by the current rules.
    (valid_bundle / "memory.parquet").write_bytes(b"not parquet")
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=3))
    only_finding(validate(valid_bundle), Rule.SCHEMA_VERSION)


# --- manifest-field ------------------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key)


def _table_entry(table: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["tables"][table].update({key: value})


@pytest.mark.parametrize(("change", "message"), [
    (_set("clock_hz", -1.0e9), "clock_hz must be a positive number or null"),
    (_set("clock_hz", 0), "clock_hz must be a positive number or null"),
    (_set("clock_hz", "fast"), "clock_hz must be a positive number or null"),
    (_drop("workload"), "workload must be a non-empty string"),
    (_set("workload", ""), "workload must be a non-empty string"),
    (_drop("producer"), "producer must be an object {name, version} or a non-empty string"),
    (_set("time_unit", "minutes"), "time_unit is 'minutes'"),
    (_set("extra", [1, 2]), "extra must be an object"),
    (_table_entry("deps", "file", "edges.parquet"), "tables.deps.file must be 'deps.parquet'"),
    (_table_entry("deps", "rows", "5"), "tables.deps.rows must be a non-negative integer"),
    (_table_entry("memory", "sha256", 12), "tables.memory.sha256 must be 64 lowercase hex"),
], ids=["clock-negative", "clock-zero", "clock-string", "workload-missing", "workload-empty",
        "producer-missing", "time-unit", "extra-list", "table-file", "rows-string",
        "sha256-int"])
def test_manifest_field(valid_bundle: Path, change: Callable[[dict[str, Any]], None],
                        message: str) -> None:
    edit_manifest(valid_bundle, change)
    finding = only_finding(validate(valid_bundle), Rule.MANIFEST_FIELD)
    assert finding.severity is Severity.ERROR
    assert finding.file == "manifest.json"
    assert finding.table is None
    assert finding.message.startswith(message)


def test_manifest_field_uppercase_sha256_is_not_a_modified_file(valid_bundle: Path) -> None:
    # The digest is the file's true sha256, only in upper case: the manifest field is malformed
    # (manifest-field), but the file was not modified, so file-hash must not claim it was.
    edit_manifest(valid_bundle, lambda m: m["tables"]["memory"].update(
        sha256=m["tables"]["memory"]["sha256"].upper()))
    finding = only_finding(validate(valid_bundle), Rule.MANIFEST_FIELD)
    assert finding.message.startswith("tables.memory.sha256 must be 64 lowercase hex digits")


def test_manifest_field_unknown_table(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m["tables"].update(
        registers={"file": "registers.parquet", "rows": 0, "bytes": 0, "sha256": "0" * 64}))
    finding = only_finding(validate(valid_bundle), Rule.MANIFEST_FIELD)
    assert finding.message.startswith("tables.registers unknown table")


# --- table-missing -------------------------------------------------------------------------


def test_table_missing_instructions_not_in_manifest(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m["tables"].pop("instructions"))
    (valid_bundle / "instructions.parquet").unlink()
    finding = only_finding(validate(valid_bundle), Rule.TABLE_MISSING)
    assert finding.table == "instructions"
    assert finding.file == "manifest.json"


def test_table_missing_instructions_not_in_manifest_but_file_present(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m["tables"].pop("instructions"))
    report = validate(valid_bundle)
    assert report.rules_broken() == {Rule.TABLE_MISSING, Rule.UNLISTED_FILE}, describe(report)
    assert the_finding(report, Rule.TABLE_MISSING).file == "manifest.json"
    assert the_finding(report, Rule.UNLISTED_FILE).file == "instructions.parquet"


@pytest.mark.parametrize("table", ["instructions", "semaphores", "memory", "deps"])
def test_table_missing_listed_file_deleted(valid_bundle: Path, table: str) -> None:
    (valid_bundle / f"{table}.parquet").unlink()
    finding = only_finding(validate(valid_bundle), Rule.TABLE_MISSING)
    assert finding.severity is Severity.ERROR
    assert finding.table == table
    assert finding.file == f"{table}.parquet"
    assert "listed in the manifest but missing" in finding.message


# --- table-unreadable and file-hash --------------------------------------------------------


@pytest.mark.parametrize("table", ["instructions", "memory"])
def test_table_unreadable_garbage_with_matching_hash(valid_bundle: Path, table: str) -> None:
    (valid_bundle / f"{table}.parquet").write_bytes(b"this is not a parquet file\n" * 20)
    record_file_in_manifest(valid_bundle, table)
    finding = only_finding(validate(valid_bundle), Rule.TABLE_UNREADABLE)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.message.startswith("not a readable Parquet file")


def test_table_unreadable_empty_file(valid_bundle: Path) -> None:
    (valid_bundle / "deps.parquet").write_bytes(b"")
    record_file_in_manifest(valid_bundle, "deps")
    finding = only_finding(validate(valid_bundle), Rule.TABLE_UNREADABLE)
    assert finding.file == "deps.parquet"


def test_truncated_file_breaks_file_hash_and_table_unreadable(valid_bundle: Path) -> None:
    path = valid_bundle / "memory.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = validate(valid_bundle)
    assert report.rules_broken() == {Rule.FILE_HASH, Rule.TABLE_UNREADABLE}, describe(report)
    assert len(report.findings) == 2
    size = the_finding(report, Rule.FILE_HASH, table="memory", file="memory.parquet")
    assert f"{len(data) // 2:,} bytes" in size.message and f"{len(data):,}" in size.message
    the_finding(report, Rule.TABLE_UNREADABLE, table="memory", file="memory.parquet")


def test_file_hash_one_byte_changed_same_size(valid_bundle: Path) -> None:
    # Upper-case one letter of the footer's created_by text ("parquet-cpp-arrow version ..."):
    # the file still reads, only its bytes and so its sha256 changed.
    path = valid_bundle / "deps.parquet"
    offset = path.read_bytes().find(b"parquet-cpp")
    assert offset > 0
    size = path.stat().st_size
    flip_byte(path, offset, 0x20)
    assert path.stat().st_size == size
    finding = only_finding(validate(valid_bundle), Rule.FILE_HASH)
    assert finding.severity is Severity.ERROR
    assert finding.table == "deps" and finding.file == "deps.parquet"
    assert "sha256" in finding.message


def test_file_hash_byte_flipped_in_the_middle(valid_bundle: Path) -> None:
    path = valid_bundle / "instructions.parquet"
    flip_byte(path, path.stat().st_size // 2)
    report = validate(valid_bundle)
    finding = the_finding(report, Rule.FILE_HASH)
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert "sha256" in finding.message
    assert not report.ok()


def test_file_hash_rewritten_file_of_other_size(valid_bundle: Path) -> None:
    # Same rows and metadata, written without compression: a different size than the manifest's.
    import pyarrow.parquet as pq

    path = valid_bundle / "semaphores.parquet"
    before = path.stat().st_size
    pq.write_table(pq.read_table(path), path, compression="none")
    assert path.stat().st_size != before
    finding = only_finding(validate(valid_bundle), Rule.FILE_HASH)
    assert finding.file == "semaphores.parquet"
    assert "truncated or rewritten" in finding.message


# --- row-count -----------------------------------------------------------------------------


def test_row_count(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m["tables"]["deps"].update(rows=9))
    finding = only_finding(validate(valid_bundle), Rule.ROW_COUNT)
    assert finding.severity is Severity.ERROR
    assert finding.table == "deps" and finding.file == "deps.parquet"
    assert finding.message == "the file holds 5 rows; the manifest says 9"


# --- parquet-metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [
    {},
    {"tracekit.table": "memory"},
    {"tracekit.table": "deps", "tracekit.schema_version": "2"},
    {"tracekit.table": "memory", "tracekit.schema_version": "1"},
], ids=["none", "no-version", "wrong-table", "wrong-version"])
def test_parquet_metadata(valid_bundle: Path, metadata: dict[str, str]) -> None:
    replace_table_file(valid_bundle, "memory", read_table(valid_bundle, "memory"),
                       metadata=metadata)
    report = validate(valid_bundle)
    finding = only_finding(report, Rule.PARQUET_METADATA)
    assert finding.severity is Severity.WARNING
    assert finding.table == "memory" and finding.file == "memory.parquet"
    assert report.ok() and not report.ok(strict=True)


# --- column-missing, column-type, unknown-column -------------------------------------------


@pytest.mark.parametrize(("table", "column"), [
    ("instructions", "engine"), ("instructions", "id"), ("semaphores", "op"),
    ("memory", "addr"), ("deps", "dst"),
])
def test_column_missing(valid_bundle: Path, table: str, column: str) -> None:
    replace_table_file(valid_bundle, table, read_table(valid_bundle, table).drop_columns([column]))
    finding = only_finding(validate(valid_bundle), Rule.COLUMN_MISSING)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert f"required column {column!r}" in finding.message


def _as_text(values: list[Any]) -> pa.Array:
    return pa.array([str(v) for v in values], pa.string())


def _as_numbers(values: list[Any]) -> pa.Array:
    return pa.array(range(len(values)), pa.int64())


@pytest.mark.parametrize(("table", "column", "convert", "shown"), [
    ("instructions", "start", lambda v: pa.array(v, pa.float64()), "double"),
    ("instructions", "start", _as_text, "string"),
    ("instructions", "id", lambda v: pa.array(v, pa.uint64()), "uint64"),
    ("instructions", "seq", _as_text, "string"),
    ("instructions", "engine", _as_numbers, "int64"),
    ("semaphores", "op", _as_numbers, "int64"),
    ("memory", "size", lambda v: pa.array(v, pa.float64()), "double"),
])
def test_column_type(valid_bundle: Path, table: str, column: str,
                     convert: Callable[[list[Any]], pa.Array], shown: str) -> None:
    values = convert(read_table(valid_bundle, table).column(column).to_pylist())
    set_column(valid_bundle, table, column, values)
    finding = only_finding(validate(valid_bundle), Rule.COLUMN_TYPE)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert f"column {column!r} is {shown}" in finding.message


@pytest.mark.parametrize(("column", "arrow_type"), [
    ("start", pa.int32()), ("seq", pa.uint32()), ("id", pa.int16()),
    ("engine", pa.string()), ("engine", pa.large_string()),
])
def test_column_type_accepts_other_integer_and_string_encodings(
        valid_bundle: Path, column: str, arrow_type: pa.DataType) -> None:
    data = read_table(valid_bundle, "instructions")
    set_column(valid_bundle, "instructions", column, data.column(column).cast(arrow_type))
    report = validate(valid_bundle)
    assert report.findings == (), describe(report)


@pytest.mark.parametrize("table", ["instructions", "deps"])
def test_unknown_column_is_a_warning(valid_bundle: Path, table: str) -> None:
    data = read_table(valid_bundle, table)
    replace_table_file(valid_bundle, table,
                       data.append_column("comment", pa.array(["x"] * data.num_rows)))
    report = validate(valid_bundle)
    finding = only_finding(report, Rule.UNKNOWN_COLUMN)
    assert finding.severity is Severity.WARNING
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == "comment"
    assert report.ok() is True
    assert report.ok(strict=True) is False
    assert report.warnings == (finding,) and report.errors == ()


# --- not-null ------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "column", "null_rows"), [
    ("instructions", "engine", (4,)),
    ("instructions", "opcode", (1, 6)),
    ("instructions", "id", (2,)),        # instruction 2 is referenced by no other table
    ("semaphores", "op", (1, 3)),
    ("memory", "addr", (5,)),
    ("deps", "kind", (0,)),
    ("deps", "src", (2,)),
])
def test_not_null(valid_bundle: Path, table: str, column: str,
                  null_rows: tuple[int, ...]) -> None:
    values = read_table(valid_bundle, table).column(column).to_pylist()
    for row in null_rows:
        values[row] = None
    is_int = isinstance(next(v for v in values if v is not None), int)
    array = pa.array(values, pa.int64() if is_int else pa.string())
    set_column(valid_bundle, table, column, array if is_int else array.dictionary_encode())
    finding = only_finding(validate(valid_bundle), Rule.NOT_NULL)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert finding.count == len(null_rows)
    assert finding.rows == null_rows


def test_writer_reports_a_null_in_a_required_column_as_a_tracekit_error(tmp_path: Path) -> None:
    # write_trace promises an InvalidTraceError (a TracekitError) instead of a bad bundle; a raw
    # pyarrow exception would escape the CLI's error handling as a traceback.
    b = build_valid_trace()
    b.rows["instructions"][4]["engine"] = None
    with pytest.raises(TracekitError):
        b.write(tmp_path / "null-engine")
    assert not (tmp_path / "null-engine").exists()


# --- unique-id, engine-seq-unique, engine-seq-order ----------------------------------------


def test_unique_id(make_bundle: MakeBundle) -> None:
    finding = only_finding(validate(make_bundle(edit("instructions", 2, id=0))), Rule.UNIQUE_ID)
    assert finding.severity is Severity.ERROR
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 2
    assert finding.rows == (0, 2)
    assert finding.examples == ("id=0 engine=dma.q0 seq=0", "id=0 engine=dma.q0 seq=1")


def test_engine_seq_unique(make_bundle: MakeBundle) -> None:
    # Instructions 0 and 2 both take slot 0 of dma.q0.
    report = validate(make_bundle(edit("instructions", 2, seq=0)))
    finding = only_finding(report, Rule.ENGINE_SEQ_UNIQUE)
    assert finding.severity is Severity.ERROR
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 2
    assert finding.rows == (0, 2)


def test_engine_seq_order(make_bundle: MakeBundle) -> None:
    # On dma.q0, instruction 0 has seq 1 and the later instruction 2 has seq 0.
    report = validate(make_bundle(edit("instructions", 0, seq=1), edit("instructions", 2, seq=0)))
    finding = only_finding(report, Rule.ENGINE_SEQ_ORDER)
    assert finding.severity is Severity.ERROR
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 1
    assert finding.rows == (2,)


def test_engine_seq_order_rows_are_file_rows_when_ids_are_unsorted(
        make_bundle: MakeBundle) -> None:
    # Instructions stored in reverse: instruction i is file row 6 - i. Swapping the seq of
    # instructions 0 and 2 (dma.q0) puts instruction 2, file row 4, out of order.
    def reverse_and_swap(b: TraceBuilder) -> None:
        rows = b.rows["instructions"]
        rows[0]["seq"], rows[2]["seq"] = rows[2]["seq"], rows[0]["seq"]
        rows.reverse()

    finding = only_finding(validate(make_bundle(reverse_and_swap)), Rule.ENGINE_SEQ_ORDER)
    assert finding.count == 1
    assert finding.rows == (4,)


def test_engine_seq_order_is_reported_even_where_the_slot_is_also_duplicated(
        make_bundle: MakeBundle) -> None:
    # vector engine, by id: seq 0, 3, 1, 1. Two instructions share slot 1 (engine-seq-unique),
    # and seq also drops from 3 to 1 (engine-seq-order): renumbering the duplicate alone would
    # not make the trace valid, so both rules must be reported.
    mods = [append("instructions", id=7 + i, engine="vector", seq=seq, opcode="add",
                   start=240 + i, end=241 + i) for i, seq in enumerate([0, 3, 1, 1])]
    report = validate(make_bundle(*mods))
    assert report.rules_broken() == {Rule.ENGINE_SEQ_UNIQUE, Rule.ENGINE_SEQ_ORDER}, \
        describe(report)
    assert the_finding(report, Rule.ENGINE_SEQ_UNIQUE).rows == (9, 10)
    assert 9 in the_finding(report, Rule.ENGINE_SEQ_ORDER).rows


# --- timing-pair, end-before-start, partial-timing -----------------------------------------


def test_timing_pair_every_instruction_lacks_end(make_bundle: MakeBundle) -> None:
    def drop_ends(b: TraceBuilder) -> None:
        for row in b.rows["instructions"]:
            row["end"] = None

    finding = only_finding(validate(make_bundle(drop_ends)), Rule.TIMING_PAIR)
    assert finding.severity is Severity.ERROR
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 7
    assert finding.rows == (0, 1, 2, 3, 4)


def test_timing_pair_one_instruction_is_not_also_partial_timing(make_bundle: MakeBundle) -> None:
    # A half-timed row is a timing-pair error only; partial-timing counts fully untimed rows.
    report = validate(make_bundle(edit("instructions", 4, end=None)))
    assert report.rules_broken() == {Rule.TIMING_PAIR}, describe(report)
    pair = the_finding(report, Rule.TIMING_PAIR)
    assert (pair.count, pair.rows) == (1, (4,))
    assert pair.examples == ("id=4 engine=tensor start=130 end=null",)


def test_duplicate_column(valid_bundle: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(valid_bundle / "deps.parquet")
    doubled = pa.Table.from_arrays([*table.columns, table["src"]],
                                   names=[*table.column_names, "src"])
    replace_table_file(valid_bundle, "deps", doubled, metadata=table.schema.metadata)
    report = validate(valid_bundle)
    assert report.rules_broken() == {Rule.DUPLICATE_COLUMN}, describe(report)
    finding = the_finding(report, Rule.DUPLICATE_COLUMN)
    assert (finding.table, finding.column) == ("deps", "src")
    assert "appears 2 times" in finding.message


def test_timing_pair_when_the_end_column_is_left_out(valid_bundle: Path) -> None:
    # `end` is nullable, so a file may omit it; it then reads as null on every row, while
    # `start` is set on every row: each instruction has only one of start and end.
    replace_table_file(valid_bundle, "instructions",
                       read_table(valid_bundle, "instructions").drop_columns(["end"]))
    finding = only_finding(validate(valid_bundle), Rule.TIMING_PAIR)
    assert finding.count == 7
    assert finding.rows == (0, 1, 2, 3, 4)


def test_end_before_start(make_bundle: MakeBundle) -> None:
    finding = only_finding(validate(make_bundle(edit("instructions", 4, end=120))),
                           Rule.END_BEFORE_START)
    assert finding.severity is Severity.ERROR
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 1
    assert finding.rows == (4,)
    assert finding.examples == ("id=4 engine=tensor start=130 end=120",)
    assert finding.message == "1 row where end < start"


def test_end_equal_to_start_is_fine(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("instructions", 4, end=130)))
    assert report.findings == (), describe(report)


def test_partial_timing_is_a_warning(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("instructions", 5, start=None, end=None)))
    finding = only_finding(report, Rule.PARTIAL_TIMING)
    assert finding.severity is Severity.WARNING
    assert finding.table == "instructions" and finding.file == "instructions.parquet"
    assert finding.count == 1 and finding.rows == (5,)
    assert "6 rows are timed" in finding.message
    assert report.ok() and not report.ok(strict=True)


def test_untimed_trace_is_not_partial(make_bundle: MakeBundle) -> None:
    def untime(b: TraceBuilder) -> None:
        for row in b.rows["instructions"]:
            row["start"] = row["end"] = None

    report = validate(make_bundle(untime))
    assert report.findings == (), describe(report)


# --- dangling-reference --------------------------------------------------------------------


@pytest.mark.parametrize(("table", "row", "column", "value"), [
    ("semaphores", 3, "inst", 99),
    ("semaphores", 0, "inst", 7),     # one above the largest id
    ("memory", 3, "inst", -1),        # one below the smallest id
    ("memory", 7, "inst", 1000),
    ("deps", 3, "src", 7),
    ("deps", 1, "dst", 100),
])
def test_dangling_reference(make_bundle: MakeBundle, table: str, row: int, column: str,
                            value: int) -> None:
    report = validate(make_bundle(edit(table, row, **{column: value})))
    finding = only_finding(report, Rule.DANGLING_REFERENCE)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert finding.count == 1
    assert finding.rows == (row,)
    assert f"{column}={value}" in finding.examples[0].split()


def test_dangling_reference_in_several_columns(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("deps", 0, src=50), edit("deps", 4, src=51, dst=52),
                                  edit("semaphores", 6, inst=53), edit("memory", 2, inst=54)))
    assert report.rules_broken() == {Rule.DANGLING_REFERENCE}, describe(report)
    found = {(f.table, f.column): (f.count, f.rows) for f in report.findings}
    assert found == {
        ("semaphores", "inst"): (1, (6,)),
        ("memory", "inst"): (1, (2,)),
        ("deps", "src"): (2, (0, 4)),
        ("deps", "dst"): (1, (4,)),
    }


SPARSE = 10**12


def sparse_ids(b: TraceBuilder) -> None:
    """Instruction i gets id i * 10**12, in every table: ids too far apart for a bitmap."""
    for row in b.rows["instructions"]:
        row["id"] *= SPARSE
    for table, columns in (("semaphores", ["inst"]), ("memory", ["inst"]),
                           ("deps", ["src", "dst"])):
        for row in b.rows[table]:
            for column in columns:
                row[column] *= SPARSE


def test_sparse_ids_use_the_hash_lookup() -> None:
    ids = pl.Series("id", [i * SPARSE for i in range(7)])
    assert _IdIndex(ids)._bitmap is None
    assert _IdIndex(pl.Series("id", list(range(7))))._bitmap is not None


def test_sparse_ids_valid(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(sparse_ids))
    assert report.findings == (), describe(report)


@pytest.mark.parametrize(("table", "row", "column", "value"), [
    ("semaphores", 3, "inst", SPARSE + 1),      # between two ids
    ("memory", 0, "inst", 7 * SPARSE),          # beyond the largest
    ("deps", 2, "src", -SPARSE),                # below the smallest
    ("deps", 4, "dst", 3),
])
def test_dangling_reference_sparse_ids(make_bundle: MakeBundle, table: str, row: int,
                                       column: str, value: int) -> None:
    report = validate(make_bundle(sparse_ids, edit(table, row, **{column: value})))
    finding = only_finding(report, Rule.DANGLING_REFERENCE)
    assert finding.table == table and finding.column == column
    assert finding.count == 1
    assert finding.rows == (row,)


# --- enum-value ----------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "row", "column", "value"), [
    ("semaphores", 3, "op", "post"),
    ("semaphores", 2, "op", "WAIT"),
    ("memory", 0, "space", "dram"),
    ("memory", 1, "access", "rw"),
    ("deps", 2, "kind", "control"),
])
def test_enum_value(make_bundle: MakeBundle, table: str, row: int, column: str,
                    value: str) -> None:
    finding = only_finding(validate(make_bundle(edit(table, row, **{column: value}))),
                           Rule.ENUM_VALUE)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert finding.count == 1
    assert finding.rows == (row,)
    assert repr(value) in finding.message


def test_enum_value_counts_every_row(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("deps", 0, kind="ctrl"), edit("deps", 3, kind="ctrl"),
                                  edit("deps", 4, kind="Data")))
    finding = only_finding(report, Rule.ENUM_VALUE)
    assert finding.count == 3
    assert finding.rows == (0, 3, 4)


# --- negative-value ------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "row", "column"), [
    ("instructions", 0, "bytes"),
    ("instructions", 3, "elements"),
    ("instructions", 4, "flops"),
    ("semaphores", 2, "sem"),
    ("semaphores", 2, "value"),
    ("memory", 7, "addr"),
    ("memory", 7, "size"),
    ("memory", 3, "partition"),
])
def test_negative_value(make_bundle: MakeBundle, table: str, row: int, column: str) -> None:
    finding = only_finding(validate(make_bundle(edit(table, row, **{column: -5}))),
                           Rule.NEGATIVE_VALUE)
    assert finding.severity is Severity.ERROR
    assert finding.table == table and finding.file == f"{table}.parquet"
    assert finding.column == column
    assert finding.count == 1
    assert finding.rows == (row,)
    assert f"{column}=-5" in finding.examples[0].split()


def test_negative_partitions_is_also_a_bad_partition_range(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("memory", 3, partitions=-5)))
    assert report.rules_broken() == {Rule.NEGATIVE_VALUE, Rule.PARTITION_RANGE}, describe(report)
    negative = the_finding(report, Rule.NEGATIVE_VALUE)
    assert (negative.table, negative.column, negative.count, negative.rows) == \
        ("memory", "partitions", 1, (3,))
    assert the_finding(report, Rule.PARTITION_RANGE).rows == (3,)


def test_zero_is_not_negative(make_bundle: MakeBundle) -> None:
    report = validate(make_bundle(edit("instructions", 0, bytes=0), edit("semaphores", 0, sem=0),
                                  edit("memory", 7, addr=0, size=0)))
    assert report.findings == (), describe(report)


# --- partition-range -----------------------------------------------------------------------


@pytest.mark.parametrize(("row", "values"), [
    (1, {"partitions": None}),                    # sbuf without partitions
    (3, {"partition": None}),                     # psum without partition
    (5, {"partition": None, "partitions": None}),  # sbuf with neither
    (0, {"partition": 0}),                        # hbm with partition
    (7, {"partitions": 4}),                       # hbm with partitions
    (2, {"partitions": 0}),                       # sbuf with zero partitions
])
def test_partition_range(make_bundle: MakeBundle, row: int, values: dict[str, Any]) -> None:
    finding = only_finding(validate(make_bundle(edit("memory", row, **values))),
                           Rule.PARTITION_RANGE)
    assert finding.severity is Severity.ERROR
    assert finding.table == "memory" and finding.file == "memory.parquet"
    assert finding.count == 1
    assert finding.rows == (row,)


def test_partition_range_when_the_partition_columns_are_left_out(valid_bundle: Path) -> None:
    # partition and partitions are nullable, so a file may omit them; they then read as null,
    # which memory rows 1-6 (sbuf and psum) may not be.
    data = read_table(valid_bundle, "memory").drop_columns(["partition", "partitions"])
    replace_table_file(valid_bundle, "memory", data)
    finding = only_finding(validate(valid_bundle), Rule.PARTITION_RANGE)
    assert finding.count == 6
    assert finding.rows == (1, 2, 3, 4, 5)


# --- self-dependency -----------------------------------------------------------------------


def test_self_dependency(make_bundle: MakeBundle) -> None:
    finding = only_finding(validate(make_bundle(edit("deps", 2, dst=3))), Rule.SELF_DEPENDENCY)
    assert finding.severity is Severity.ERROR
    assert finding.table == "deps" and finding.file == "deps.parquet"
    assert finding.count == 1
    assert finding.rows == (2,)
    assert finding.examples == ("src=3 dst=3",)


# --- wait-condition ------------------------------------------------------------------------


def test_wait_condition_only_on_waits(make_bundle: MakeBundle) -> None:
    # Row 0 is a signal; row 2 a wait, where a condition is legal.
    report = validate(make_bundle(edit("semaphores", 0, cond="eq"),
                                  edit("semaphores", 2, cond="eq")))
    finding = only_finding(report, Rule.WAIT_CONDITION)
    assert finding.severity is Severity.ERROR
    assert finding.table == "semaphores" and finding.file == "semaphores.parquet"
    assert finding.count == 1
    assert finding.rows == (0,)
    assert finding.examples == ("inst=0 sem=0 op=signal value=1 cond=eq",)


def test_wait_condition_values(make_bundle: MakeBundle) -> None:
    finding = only_finding(validate(make_bundle(edit("semaphores", 2, cond="gt"))),
                           Rule.ENUM_VALUE)
    assert finding.column == "cond" and finding.rows == (2,)
    assert "legal: ge, eq" in finding.message


# --- unlisted-file -------------------------------------------------------------------------


def test_unlisted_file_stray(valid_bundle: Path) -> None:
    (valid_bundle / "notes.txt").write_text("scratch\n")
    report = validate(valid_bundle)
    finding = only_finding(report, Rule.UNLISTED_FILE)
    assert finding.severity is Severity.WARNING
    assert finding.file == "notes.txt" and finding.table is None
    assert report.ok() and not report.ok(strict=True)


def test_unlisted_file_table_not_in_manifest(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m["tables"].pop("semaphores"))
    finding = only_finding(validate(valid_bundle), Rule.UNLISTED_FILE)
    assert finding.file == "semaphores.parquet"


# --- all findings of one run ---------------------------------------------------------------


def test_all_broken_rules_are_reported_in_one_run(make_bundle: MakeBundle) -> None:
    bundle = make_bundle(edit("instructions", 4, end=120), edit("deps", 2, kind="control"),
                         edit("deps", 4, dst=5))
    edit_manifest(bundle, lambda m: m.update(clock_hz=-1))
    (bundle / "stray.bin").write_bytes(b"\0")
    report = validate(bundle)
    assert [f.rule for f in report.findings] == [
        Rule.MANIFEST_FIELD, Rule.UNLISTED_FILE, Rule.END_BEFORE_START, Rule.ENUM_VALUE,
        Rule.SELF_DEPENDENCY,
    ], describe(report)
    assert the_finding(report, Rule.END_BEFORE_START).rows == (4,)
    assert the_finding(report, Rule.ENUM_VALUE).rows == (2,)
    assert the_finding(report, Rule.SELF_DEPENDENCY).rows == (4,)
    assert the_finding(report, Rule.UNLISTED_FILE).file == "stray.bin"
    assert (len(report.errors), len(report.warnings)) == (4, 1)
    assert not report.ok()
    summary = report.to_dict()
    assert (summary["valid"], summary["errors"], summary["warnings"]) == (False, 4, 1)


def test_rows_lists_at_most_five_rows_while_count_is_complete(make_bundle: MakeBundle) -> None:
    # Seven self-edges appended after the five valid edges: deps rows 5 to 11.
    self_edges = [append("deps", src=i, dst=i, kind="order") for i in range(7)]
    finding = only_finding(validate(make_bundle(*self_edges)), Rule.SELF_DEPENDENCY)
    assert finding.count == 7
    assert finding.rows == (5, 6, 7, 8, 9)
    assert len(finding.examples) == 5
    assert finding.examples[0] == "src=0 dst=0"
    assert finding.message.startswith("7 rows ")
    assert finding.to_dict()["rows"] == [5, 6, 7, 8, 9]


def test_fix_text_comes_from_the_catalogue(make_bundle: MakeBundle) -> None:
    finding = only_finding(validate(make_bundle(edit("instructions", 4, end=120))),
                           Rule.END_BEFORE_START)
    assert finding.fix == RULES[Rule.END_BEFORE_START].fix
    assert finding.to_dict()["fix"] == finding.fix


# --- property: engine-seq rules against a brute-force oracle --------------------------------

ENGINES = ["tensor", "vector", "dma.q0"]


@st.composite
def engine_seq_rows(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """(id, engine, seq) rows in file order: unique ids in random order, and seq either a valid
    numbering (increasing with id, with gaps) with a few random overwrites, or fully random."""
    n = draw(st.integers(1, 10))
    ids = draw(st.lists(st.integers(-5, 10**6), min_size=n, max_size=n, unique=True))
    engines = draw(st.lists(st.sampled_from(ENGINES), min_size=n, max_size=n))
    if draw(st.booleans()):
        seqs = [0] * n
        per_engine: dict[str, list[int]] = defaultdict(list)
        for i in range(n):
            per_engine[engines[i]].append(i)
        for rows in per_engine.values():
            seq = draw(st.integers(0, 2))
            for i in sorted(rows, key=lambda r: ids[r]):
                seqs[i] = seq
                seq += draw(st.integers(1, 2))
        for _ in range(draw(st.integers(0, 2))):
            seqs[draw(st.integers(0, n - 1))] = draw(st.integers(0, 6))
    else:
        seqs = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    return list(zip(ids, engines, seqs, strict=True))


def oracle(rows: list[tuple[int, str, int]]) -> tuple[bool, bool, bool]:
    """(strictly increasing in every engine, (engine, seq) unique, some seq drops)."""
    by_engine: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for inst_id, engine, seq in rows:
        by_engine[engine].append((inst_id, seq))
    increasing, drops = True, False
    for members in by_engine.values():
        seqs = [seq for _, seq in sorted(members)]
        for before, after in zip(seqs, seqs[1:]):
            increasing &= after > before
            drops |= after < before
    unique = len({(engine, seq) for _, engine, seq in rows}) == len(rows)
    return increasing, unique, drops


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(rows=[(7, "vector", 0), (8, "vector", 3), (9, "vector", 1), (10, "vector", 1)])
@example(rows=[(0, "tensor", 0), (1, "tensor", 0), (2, "tensor", 1)])
@example(rows=[(2, "tensor", 0), (0, "tensor", 1), (1, "vector", 0)])
@given(rows=engine_seq_rows())
def test_engine_seq_rules_match_a_brute_force_oracle(rows: list[tuple[int, str, int]]) -> None:
    b = TraceBuilder("prop")
    for inst_id, engine, seq in rows:
        b.inst(engine, "op", 0, 1, id=inst_id, seq=seq)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle"
        b.write(path, validate=False)
        report = validate(path)
    broken = report.rules_broken()
    increasing, unique, drops = oracle(rows)
    assert broken <= {Rule.ENGINE_SEQ_ORDER, Rule.ENGINE_SEQ_UNIQUE}, describe(report)
    assert bool(broken) == (not increasing), describe(report)
    assert (Rule.ENGINE_SEQ_UNIQUE in broken) == (not unique), describe(report)
    assert (Rule.ENGINE_SEQ_ORDER in broken) == drops, describe(report)
    if not unique:
        slots = Counter((engine, seq) for _, engine, seq in rows)
        shared = [i for i, (_, engine, seq) in enumerate(rows) if slots[engine, seq] > 1]
        finding = the_finding(report, Rule.ENGINE_SEQ_UNIQUE)
        assert finding.count == len(shared)
        assert finding.rows == tuple(shared[:5])


def test_property_oracle_itself() -> None:
    assert oracle([(0, "a", 0), (5, "a", 2), (1, "b", 0)]) == (True, True, False)
    assert oracle([(0, "a", 1), (5, "a", 1)]) == (False, False, False)
    assert oracle([(5, "a", 0), (0, "a", 1)]) == (False, True, True)



def test_bit_rot_in_a_data_page_is_a_finding_not_a_crash(valid_bundle: Path) -> None:
    # Bytes the review's fuzzing found to panic polars' reader; pyarrow reports them.
    path = valid_bundle / "instructions.parquet"
    data = bytearray(path.read_bytes())
    for offset in range(200, min(len(data) - 100, 1200), 97):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    report = validate(valid_bundle)
    assert Rule.FILE_HASH in report.rules_broken()
    assert not report.ok()


def test_batched_reading_gives_the_same_findings(make_bundle: MakeBundle,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Tables other than instructions are validated in batches; findings must not depend on
    # where the batches split (counts summed, first rows numbered in the file, values merged).
    bundle = make_bundle(edit("memory", 1, addr=-1), edit("memory", 6, size=-5),
                         edit("memory", 7, addr=-2), edit("deps", 2, kind="control"),
                         edit("deps", 4, kind="bogus"), edit("semaphores", 5, inst=99))
    whole = validate(bundle)
    import importlib

    module = importlib.import_module("tracekit.trace.validate")
    monkeypatch.setattr(module, "BATCH_ROWS", 2)
    batched = validate(bundle)
    assert batched.findings == whole.findings
    negative = [f for f in whole.findings if f.rule is Rule.NEGATIVE_VALUE and f.column == "addr"]
    assert (negative[0].count, negative[0].rows) == (2, (1, 7))
    enum = the_finding(whole, Rule.ENUM_VALUE)
    assert "'bogus', 'control'" in enum.message and enum.rows == (2, 4)


# --- not-null, as open_trace sees it (issue 18) --------------------------------------------


@pytest.mark.parametrize("column", ["opcode", "id", "seq", "engine"])
def test_open_trace_refuses_a_null_in_a_required_column(valid_bundle: Path, column: str) -> None:
    # One null opcode, id or seq made `export perfetto` write invalid JSON; a null engine raised
    # AttributeError. open_trace now refuses them from the footer's statistics (Rule.NOT_NULL).
    from tracekit.errors import TableReadError
    from tracekit.trace.bundle import open_trace

    values = read_table(valid_bundle, "instructions").column(column).to_pylist()
    values[2] = None
    is_int = column in ("id", "seq")
    array = pa.array(values, pa.int64() if is_int else pa.string())
    set_column(valid_bundle, "instructions", column,
               array if is_int else array.dictionary_encode())
    with pytest.raises(TableReadError, match=rf"1 in {column}\) \[not-null\]"):
        open_trace(valid_bundle)


# --- outside-link (issue 18) ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory.parquet", "manifest.json"])
def test_outside_link(valid_bundle: Path, tmp_path: Path, name: str) -> None:
    # A link to a valid Parquet file outside the bundle passed validate and every command.
    from tracekit.errors import TableReadError
    from tracekit.trace.bundle import open_trace

    outside = tmp_path / f"outside-{name}"
    (valid_bundle / name).rename(outside)
    (valid_bundle / name).symlink_to(outside)
    finding = the_finding(validate(valid_bundle), Rule.OUTSIDE_LINK)
    assert finding.severity is Severity.ERROR and finding.file == name
    assert str(outside) in finding.message
    with pytest.raises(TableReadError, match=r"outside the bundle \[outside-link\]"):
        open_trace(valid_bundle)


def test_a_link_inside_the_bundle_is_no_outside_link(valid_bundle: Path) -> None:
    (valid_bundle / "notes.txt").write_text("x")
    (valid_bundle / "link.txt").symlink_to(valid_bundle / "notes.txt")
    assert Rule.OUTSIDE_LINK not in validate(valid_bundle).rules_broken()


def test_absurd_clock_is_a_manifest_field(valid_bundle: Path) -> None:
    # time_unit us with clock_hz 1e300 passed validate and was refused later by export.
    edit_manifest(valid_bundle, lambda m: m.update(time_unit="us", clock_hz=1e300))
    finding = only_finding(validate(valid_bundle), Rule.MANIFEST_FIELD)
    assert "clock_hz is 1e+300 Hz, past 1e+12 (1 THz)" in finding.message
