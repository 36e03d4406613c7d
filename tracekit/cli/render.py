"""Formatting of reports for the terminal (rich) and for scripts (JSON). Only formats: every
figure shown here was computed by the library.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracekit.trace.manifest import TimeUnit
from tracekit.trace.rules import Severity
from tracekit.trace.summary import TraceSummary, seconds
from tracekit.trace.validate import ValidationReport


def to_json(data: Any) -> str:
    """Stable JSON: fixed key order as built, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{num_bytes:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow"}


def print_validation(console: Console, report: ValidationReport, strict: bool) -> None:
    errors, warnings = len(report.errors), len(report.warnings)
    verdict = "valid" if report.ok(strict) else "INVALID"
    head = Text()
    head.append(f"{verdict}: ", style="bold green" if report.ok(strict) else "bold red")
    head.append(f"{report.path}  ({errors} error{'s' * (errors != 1)}, "
                f"{warnings} warning{'s' * (warnings != 1)}"
                f"{', warnings count as errors (--strict)' if strict else ''})")
    console.print(head)
    for finding in report.findings:
        line = Text("\n")
        line.append(f"{finding.severity.value} ", style=_SEVERITY_STYLE[finding.severity])
        line.append(f"[{finding.rule.value}]", style="bold")
        where = finding.file or ""
        if finding.column:
            where += f" column {finding.column}"
        line.append(f" {where}: {finding.message}" if where else f" {finding.message}")
        console.print(line)
        if finding.rows:
            more = finding.count - len(finding.rows)
            rows = ", ".join(str(r) for r in finding.rows) + (f" (+{more:,} more)" if more else "")
            console.print(Text(f"    rows: {rows}"))
            for example in finding.examples:
                console.print(Text(f"      {example}"))
        console.print(Text(f"    fix: {finding.fix}", style="dim"))


def _table(title: str, *columns: tuple[str, str]) -> Table:
    table = Table(title=Text(title), title_justify="left", title_style="bold", box=None,
                  pad_edge=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table


def print_summary(console: Console, summary: TraceSummary) -> None:
    m = summary.trace.manifest
    facts = _table(f"trace {summary.trace.path}", ("", "left"), ("", "left"))
    facts.show_header = False
    span = summary.span_cycles
    span_seconds = None if span is None else seconds(span, m.clock_hz, m.time_unit)
    span_text = "-" if span is None else (
        f"{summary.span_start:,} .. {summary.span_end:,} ({span:,} {m.time_unit.value}"
        + ("" if span_seconds is None or m.time_unit is not TimeUnit.CYCLES
           else f", {span_seconds * 1e6:,.3f} us") + ")")
    rows = [
        ("workload", m.workload),
        ("producer", f"{m.producer.name} {m.producer.version}".strip()),
        ("schema version", str(m.schema_version)),
        ("machine", m.machine or "-"),
        ("clock", f"{m.clock_hz / 1e6:,.1f} MHz" if m.clock_hz else "-"),
        ("created", m.created or "-"),
        ("instructions", f"{summary.instructions:,} ({summary.timing.value})"),
        ("time span", span_text),
    ]
    for key, value in rows:
        facts.add_row(Text(key), Text(value))
    console.print(facts)

    tables = _table("\ntables", ("table", "left"), ("rows", "right"), ("size", "right"))
    for t in summary.tables:
        tables.add_row(Text(t.name), _count(t.rows), _size(t.bytes))
    console.print(tables)

    timed = summary.span_cycles is not None
    for title, key, frame in (("engines", "engine", summary.engines),
                              ("opcodes", "opcode", summary.opcodes)):
        columns = [(key, "left"), ("instructions", "right")]
        if timed:
            columns.append((f"busy {m.time_unit.value}", "right"))
        out = _table(f"\n{title}", *columns)
        for row in frame.iter_rows(named=True):
            cells = [Text(row[key] if row[key] is not None else "(null)"),
                     _count(row["instructions"])]
            if timed:
                cells.append(_count(row["busy_cycles"]))
            out.add_row(*cells)
        console.print(out)
