"""Reports on a bundle itself: `validate` findings and `info`."""

from __future__ import annotations

import polars as pl
from rich.console import Console

from tracekit.cli.render.base import (
    _SEVERITY_STYLE,
    _count,
    _hz,
    _size,
    _table,
    Text,
    sections_markdown,
)
from tracekit.trace.manifest import TimeUnit
from tracekit.trace.names import shortened, shortened_names
from tracekit.trace.summary import TraceSummary, seconds
from tracekit.trace.validate import Finding, ValidationReport


def print_validation(console: Console, report: ValidationReport, strict: bool) -> None:
    errors, warnings = len(report.errors), len(report.warnings)
    verdict = "valid" if report.ok(strict) else "INVALID"
    head = Text()
    head.append(f"{verdict}: ", style="bold green" if report.ok(strict) else "bold red")
    head.append(f"{report.path}  ({errors} error{'s' * (errors != 1)}, "
                f"{warnings} warning{'s' * (warnings != 1)}"
                f"{', warnings count as errors (--strict)' if strict else ''})")
    console.print(head)
    print_findings_of(console, report.findings)


def print_findings_of(console: Console, findings: tuple[Finding, ...]) -> None:
    """Validation findings as `tracekit validate` shows them: rule, where, rows, fix."""
    for finding in findings:
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

def summary_facts(summary: TraceSummary) -> list[tuple[str, str]]:
    """The facts at the head of `tracekit info`, as (name, text)."""
    m = summary.trace.manifest
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
        ("clock", _hz(m.clock_hz)),
        ("created", m.created or "-"),
        ("instructions", f"{summary.instructions:,} ({summary.timing.value})"),
        ("time span", span_text),
    ]
    return rows


def print_summary(console: Console, summary: TraceSummary) -> None:
    m = summary.trace.manifest
    facts = _table(f"trace {summary.trace.path}", ("", "left"), ("", "left"))
    facts.show_header = False
    for key, value in summary_facts(summary):
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
            columns.append((f"summed durations ({m.time_unit.value})", "right"))
        out = _table(f"\n{title}", *columns)
        for row in shortened_names(frame).iter_rows(named=True):
            cells = [Text(row[key] if row[key] is not None else "(null)"),
                     _count(row["instructions"])]
            if timed:
                cells.append(_count(row["busy_cycles"]))
            out.add_row(*cells)
        console.print(out)
    if summary.windows.height:
        out = _table("\nwindows (select one with --window NAME [--instance K])",
                     ("window", "left"), ("instances", "right"),
                     (f"first instance ({m.time_unit.value})", "right"))
        for row in summary.windows.iter_rows(named=True):
            out.add_row(Text(shortened(row["window"])), _count(row["instances"]),
                        Text(f"{row['first_start']:,} .. {row['first_end']:,}"))
        console.print(out)

# --- markdown of validate and info --------------------------------------------------------------


def validation_markdown(report: ValidationReport, strict: bool) -> str:
    """The findings of `tracekit validate` as Markdown: the verdict, then one row each."""
    findings = pl.DataFrame([{
        "severity": f.severity.value, "rule": f.rule.value,
        "where": " column ".join(x for x in (f.file, f.column) if x),
        "count": f.count,
        "rows": ", ".join(str(r) for r in f.rows)
        + (f" (+{f.count - len(f.rows):,} more)" if f.rows and f.count > len(f.rows) else ""),
        "message": f.message, "fix": f.fix} for f in report.findings],
        schema={"severity": pl.String, "rule": pl.String, "where": pl.String,
                "count": pl.Int64, "rows": pl.String, "message": pl.String, "fix": pl.String})
    head = {"verdict": "valid" if report.ok(strict) else "INVALID",
            "errors": len(report.errors), "warnings": len(report.warnings),
            "strict": "yes (warnings count as errors)" if strict else "no"}
    return sections_markdown(f"Validation of {report.path}", head, [
        ("Findings", findings, {"severity": "", "rule": "", "where": "", "count": ",",
                                "rows": "", "message": "", "fix": ""})])


def summary_markdown(summary: TraceSummary) -> str:
    """`tracekit info` as Markdown: the facts, then the tables, engines and opcodes."""
    unit = summary.trace.manifest.time_unit.value
    tables = pl.DataFrame([{"table": t.name, "rows": t.rows, "size": _size(t.bytes)}
                           for t in summary.tables],
                          schema={"table": pl.String, "rows": pl.Int64, "size": pl.String})
    # The trace's own durations summed (not the glossary's busy, which counts overlaps once).
    summed = f"summed durations ({unit})"
    busy = {summed: ","} if summary.span_cycles is not None else {}
    return sections_markdown(f"Trace {summary.trace.path}", dict(summary_facts(summary)), [
        ("Tables", tables, {"table": "", "rows": ",", "size": ""}),
        *((title, frame.with_columns(pl.col(key).fill_null("(null)"))
           .rename({"busy_cycles": summed}), {key: "", "instructions": ",", **busy})
          for title, key, frame in (("Engines", "engine", summary.engines),
                                    ("Opcodes", "opcode", summary.opcodes))),
        *((("Windows (select one with --window NAME [--instance K])", summary.windows,
            {"window": "", "instances": ",", "first_start": ",", "first_end": ","}),)
          if summary.windows.height else ())])
