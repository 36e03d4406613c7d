"""The language-neutral contract for trace producers, generated from the schema in code.

`schemas/` at the top of the repository holds one JSON file per table and a README; they are
written by `python -m tracekit.trace.contract schemas`, and a test fails when the checked-in
files differ from what the code generates (`--check` does the same from the shell).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tracekit.trace.manifest import MANIFEST_FIELDS
from tracekit.trace.rules import RULES
from tracekit.trace.schema import (
    MANIFEST_FILE,
    PARQUET_KEY_TABLE,
    PARQUET_KEY_VERSION,
    SCHEMA_VERSION,
    SEMAPHORE_SEMANTICS,
    TABLES,
    ColumnSpec,
    ColumnType,
    TableSpec,
)

GENERATED_NOTE = ("Generated from tracekit/trace/schema.py by `python -m tracekit.trace.contract "
                  "schemas`; do not edit by hand.")

_ARROW_TYPE = {  # spelled out rather than str(pa type), whose format varies across pyarrow
    ColumnType.INT64: "int64",
    ColumnType.STRING: "dictionary<int32, string>",
    ColumnType.ENUM: "dictionary<int32, string>",
}

_PARQUET_TYPE = {
    ColumnType.INT64: "INT64",
    ColumnType.STRING: "BYTE_ARRAY (STRING), dictionary-encoded",
    ColumnType.ENUM: "BYTE_ARRAY (STRING), dictionary-encoded",
}


def _column(col: ColumnSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": col.name,
        "type": col.type.value,
        "arrow_type": _ARROW_TYPE[col.type],
        "parquet_type": _PARQUET_TYPE[col.type],
        "nullable": col.nullable,
        "meaning": col.meaning,
        "unit": col.unit,
    }
    if col.values:
        doc["values"] = list(col.values)
    if col.non_negative:
        doc["minimum"] = 0
    return doc


def table_document(spec: TableSpec) -> dict[str, Any]:
    """The JSON contract of one table: columns with types and meaning, and its rules."""
    return {
        "$comment": GENERATED_NOTE,
        "table": spec.name,
        "file": spec.file,
        "schema_version": SCHEMA_VERSION,
        "required": spec.required,
        "description": spec.description,
        "parquet_metadata": {PARQUET_KEY_TABLE: spec.name,
                             PARQUET_KEY_VERSION: str(SCHEMA_VERSION)},
        "columns": [_column(c) for c in spec.columns],
        "rules": [
            {"code": rule.value, "severity": info.severity.value, "rule": info.summary}
            for rule, info in RULES.items() if spec.name in info.tables
        ],
    }


def readme() -> str:
    lines = [
        f"# Trace bundle schema, version {SCHEMA_VERSION}",
        "",
        f"<!-- {GENERATED_NOTE} -->",
        "",
        "The contract for programs that write tracekit bundles: functional models, RTL "
        "testbenches, converters, in any language. A bundle is a folder holding "
        f"`{MANIFEST_FILE}` and one Parquet file per table. Each `<table>.json` here lists the "
        "table's columns (name, type, nullability, meaning, unit) and the rules "
        "`tracekit validate` checks on it.",
        "",
        "## Tables",
        "",
        "| table | file | required | holds |",
        "|---|---|---|---|",
    ]
    for spec in TABLES.values():
        lines.append(f"| {spec.name} | `{spec.file}` | {'yes' if spec.required else 'no'} | "
                     f"{spec.description} |")
    lines += [
        "",
        "Types: `int64` columns accept any signed integer width, or uint8 to uint32; `string` "
        "and `enum` columns accept plain or dictionary-encoded UTF-8 strings (tracekit writes "
        "dictionary-encoded ones). Nullable columns may be left out of a file entirely; they "
        "then read as null. Times are integer ticks of `time_unit` (cycles unless stated); "
        "`end` is exclusive, so a duration is `end - start`.",
        "",
        "Each Parquet file carries two key-value metadata entries: "
        f"`{PARQUET_KEY_TABLE}` (the table name) and `{PARQUET_KEY_VERSION}` "
        f"(`\"{SCHEMA_VERSION}\"`).",
        "",
    ]
    for spec in TABLES.values():
        lines += [
            f"### {spec.name}",
            "",
            "| column | type | nullable | unit | meaning |",
            "|---|---|---|---|---|",
        ]
        for col in spec.columns:
            kind = col.type.value + (f" ({', '.join(col.values)})" if col.values else "")
            lines.append(f"| `{col.name}` | {kind} | {'yes' if col.nullable else 'no'} | "
                         f"{col.unit or ''} | {col.meaning} |")
        lines.append("")
    lines += [
        "## Semaphores",
        "",
        SEMAPHORE_SEMANTICS,
        "",
        "A version-1 bundle (no `cond`, only wait and signal) reads as version 2 with every "
        "wait `ge`: the same meaning.",
        "",
        f"## {MANIFEST_FILE}",
        "",
        "| field | type | meaning |",
        "|---|---|---|",
    ]
    for name, kind, meaning in MANIFEST_FIELDS:
        lines.append(f"| `{name}` | {kind} | {meaning} |")
    lines += [
        "",
        "## Rules",
        "",
        "`tracekit validate BUNDLE` checks every rule and lists every breach with the rule's "
        "code, the file, the number of offending rows and the first five of them. Errors make "
        "a bundle invalid; warnings do so under `--strict`.",
        "",
        "| code | severity | rule | fix |",
        "|---|---|---|---|",
    ]
    for rule, info in RULES.items():
        lines.append(f"| `{rule.value}` | {info.severity.value} | {info.summary} | {info.fix} |")
    lines += [
        "",
        "## Versions",
        "",
        "Versions only ever add columns or tables. tracekit reads a bundle of an older version "
        "by upgrading it in memory, one explicit step per version (`tracekit/trace/upgrade.py`); "
        "a bundle of a newer version is refused with a message to upgrade tracekit.",
        "",
    ]
    return "\n".join(lines)


def contract_files() -> dict[str, str]:
    """File name -> exact text of every file of the contract."""
    files = {f"{name}.json": json.dumps(table_document(spec), indent=2) + "\n"
             for name, spec in TABLES.items()}
    files["README.md"] = readme()
    return files


def stale_files(folder: Path) -> list[str]:
    """Names of contract files in `folder` that are missing or differ from the code."""
    return [name for name, text in contract_files().items()
            if not (folder / name).is_file()
            or (folder / name).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check the schema contract files.")
    parser.add_argument("folder", type=Path, help="the folder to write the contract into "
                        "(or, with --check, to compare with it)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the folder differs from the code instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.folder)
        for name in stale:
            print(f"{args.folder / name}: differs from the schema in code", file=sys.stderr)
        return 1 if stale else 0
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, text in contract_files().items():
        (args.folder / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
