"""Formatting of reports for the terminal (rich) and for scripts (JSON). Only formats: every
figure shown here was computed by the library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracekit.analysis.critical_path import CriticalPath
from tracekit.analysis.replay_report import Correlation, ReplaySummary
from tracekit.replay.machine import Machine
from tracekit.replay.run import ReplayResult
from tracekit.trace.bundle import Trace
from tracekit.trace.manifest import TimeUnit
from tracekit.trace.rules import Severity
from tracekit.trace.summary import TraceSummary, seconds
from tracekit.trace.validate import Finding, ValidationReport

if TYPE_CHECKING:
    from tracekit.analysis.calibrate import Calibration
    from tracekit.analysis.diff import Diff
    from tracekit.analysis.history import Explanation
    from tracekit.analysis.nightly import NightlyRun
    from tracekit.analysis.whatif import WhatIf


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


def _table(title: str, *columns: tuple[str, str]) -> Table:
    table = Table(title=Text(title), title_justify="left", title_style="bold", box=None,
                  pad_edge=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table


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
        for row in frame.iter_rows(named=True):
            cells = [Text(row[key] if row[key] is not None else "(null)"),
                     _count(row["instructions"])]
            if timed:
                cells.append(_count(row["busy_cycles"]))
            out.add_row(*cells)
        console.print(out)


# --- replay ----------------------------------------------------------------------------------


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with floats rounded to 3 decimals, for stable JSON."""
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            for row in frame.iter_rows(named=True)]


def replay_to_dict(result: ReplayResult, summary: ReplaySummary,
                   correlation: Correlation | None) -> dict[str, Any]:
    head = facts_json(timeline_facts(result.trace, result.machine, "replayed"))
    return {
        **head,
        "workload": result.trace.manifest.workload,
        "mode": result.mode.value,
        "instructions": summary.instructions,
        "edges": result.edges,
        "makespan_cycles": summary.makespan,
        "makespan_seconds": summary.seconds,
        "ipc": round(summary.ipc, 6),
        "engines": records(summary.engines),
        "hbm": summary.hbm,
        "top_opcodes": records(summary.opcodes),
        "correlation": None if correlation is None else {
            "observed_makespan_cycles": correlation.observed_makespan,
            "predicted_makespan_cycles": correlation.predicted_makespan,
            "makespan_error_pct": (None if correlation.makespan_error_pct is None
                                   else round(correlation.makespan_error_pct, 3)),
            "opcodes": records(correlation.opcodes),
            "largest_duration_errors": records(correlation.divergent_duration),
            "largest_wait_errors": records(correlation.divergent_wait),
        },
        "notes": list(result.notes),
    }


# --- report heads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One line of a report's head: its JSON key and value, and its label and formatted text
    for the text and Markdown reports (one style for every command)."""

    key: str
    value: Any
    label: str
    text: str


def fact(key: str, value: Any, text: str | None = None, label: str | None = None) -> Fact:
    """A head line; `text` defaults to the value with thousands separators, `label` to the
    key without its unit suffix and underscores."""
    if text is None:
        text = ("-" if value is None else f"{value:,}" if isinstance(value, int)
                and not isinstance(value, bool) else "yes" if value is True
                else "no" if value is False else str(value))
    if label is None:
        label = key
        for unit in ("_cycles", "_pct"):
            label = label.removesuffix(unit)
        label = label.replace("_", " ")
    return Fact(key, value, label, text)


def _hz(clock: float | None) -> str:
    return "-" if clock is None else f"{clock / 1e9:g} GHz"


def timeline_facts(trace: Trace, machine: Machine, source: str) -> list[Fact]:
    """What every report on a timeline states first: the trace, which timeline (the trace's
    own timing or the model's prediction), the machine, and the trace's time unit and clock
    (and, once, when the trace's clock and the machine's differ)."""
    m = trace.manifest
    shown = ("observed (the trace's own timing)" if source == "observed"
             else f"replayed (the model's prediction on {machine.name})")
    unit = m.time_unit.value
    time = (f"{unit}, trace clock {_hz(m.clock_hz)}" if m.clock_hz
            else f"{unit}, no clock in the manifest")
    facts = [fact("trace", str(trace.path)), fact("timeline", source, shown),
             fact("machine", machine.name, f"{machine.name} ({_hz(machine.clock_hz)})")]
    if m.machine and m.machine != machine.name:
        facts.append(fact("trace_machine", m.machine, label="recorded on", text=(
            f"{m.machine}, says the manifest; the figures use {machine.name}'s limits")))
    facts.append(fact("time_unit", unit, time, label="trace time"))
    if m.clock_hz and m.clock_hz != machine.clock_hz:
        facts.append(fact("clocks", "differ", label="clocks", text=(
            f"trace {_hz(m.clock_hz)}, machine {_hz(machine.clock_hz)}: every cycle shown "
            f"is the machine's; the trace's times are converted to them")))
    return [*facts, fact("machine_clock_hz", machine.clock_hz),
            fact("trace_clock_hz", m.clock_hz)]


def replay_facts(trace: Trace, machine: Machine, mode: str) -> list[Fact]:
    """The head of a report on replays (replay, whatif, sensitivity): `timeline_facts` of the
    replayed timeline, with what --mode gave the durations."""
    head = timeline_facts(trace, machine, "replayed")
    if mode == "observed":  # the trace's durations, the model's order
        head[1] = fact("timeline", "replayed", "replayed with the trace's own durations "
                       "(--mode observed)")
    return [*head[:3], fact("mode", mode), *head[3:]]


def makespan_fact(cycles: int, clock_hz: float | None) -> Fact:
    """The makespan in cycles, and in microseconds at the clock of the timeline's cycles."""
    time = "" if not clock_hz else f" ({cycles / clock_hz * 1e6:,.3f} us)"
    return fact("makespan_cycles", cycles, f"{cycles:,} cycles{time}")


def hbm_fact(hbm: dict[str, float | int], machine: Machine) -> Fact:
    return fact("hbm", hbm, hbm_text(hbm, machine.hbm_bytes_per_cycle, machine.clock_hz),
                label="HBM bandwidth")


def facts_json(facts: list[Fact]) -> dict[str, Any]:
    return {f.key: f.value for f in facts}


def print_facts(console: Console, title: str, facts: list[Fact]) -> None:
    """A report's head as a two-column table (label, text); the clocks are in the machine and
    time lines already."""
    table = _table(title, ("", "left"), ("", "left"))
    table.show_header = False
    for f in facts:
        if f.key not in JSON_ONLY:
            table.add_row(Text(f.label), Text(f.text))
    console.print(table)


def facts_markdown(facts: list[Fact]) -> list[str]:
    return [f"- **{f.label}**: {f.text}" for f in facts if f.key not in JSON_ONLY]


JSON_ONLY = {"machine_clock_hz", "trace_clock_hz"}
"""Head keys the text and Markdown reports state within another line."""


def _cells(frame: pl.DataFrame, formats: dict[str, str]) -> list[list[str]]:
    out = []
    for row in frame.iter_rows(named=True):
        cells = []
        for name, fmt in formats.items():
            value = row[name]
            cells.append("-" if value is None else format(value, fmt) if fmt else str(value))
        out.append(cells)
    return out


ENGINE_COLS = {"engine": "", "instructions": ",", "busy_cycles": ",", "busy_pct": ".1f",
               "contention_cycles": ",", "waiting_cycles": ",", "idle_cycles": ",",
               "flop_util_pct": ".1f", "bandwidth": ",.1f", "bandwidth_pct": ".1f"}
"""The engine figures (`figures.engine_figures`) as every report shows them."""
_OPCODE_COLS = {"opcode": "", "instructions": ",", "busy_cycles": ",", "share_pct": ".1f"}
_CORR_COLS = {"opcode": "", "instructions": ",", "observed_mean": ",.1f",
              "predicted_mean": ",.1f", "bias_pct": "+.1f", "mape_pct": ".1f",
              "p50_abs_error": ",.0f", "p95_abs_error": ",.0f"}
_DURATION_DIV_COLS = {"id": "", "engine": "", "opcode": "", "layer": "",
                      "observed_duration": ",", "predicted_duration": ",",
                      "duration_error": "+,"}
_WAIT_DIV_COLS = {"id": "", "engine": "", "opcode": "", "layer": "", "observed_wait": ",",
                  "predicted_wait": ",", "wait_error": "+,"}
DURATION_DIV_TITLE = "largest duration errors (predicted - observed duration)"
WAIT_DIV_TITLE = ("largest wait errors (wait = start - latest end of its predecessors in "
                  "its timeline; predicted - observed)")
_HEADERS = {"busy_pct": "busy %", "share_pct": "share %", "bias_pct": "bias %",
            "mape_pct": "MAPE %", "p50_abs_error": "p50 |err|", "p95_abs_error": "p95 |err|",
            "observed_mean": "observed", "predicted_mean": "predicted",
            "contention_cycles": "HBM contention", "busy_cycles": "busy",
            "waiting_cycles": "waiting", "idle_cycles": "idle",
            "flop_util_pct": "FLOP util %", "bandwidth": "B/cycle",
            "bandwidth_pct": "of queue %",
            "observed_duration": "observed", "predicted_duration": "predicted",
            "duration_error": "error", "observed_wait": "observed wait",
            "predicted_wait": "predicted wait", "wait_error": "error",
            "busy_after": "busy after", "contention_base": "HBM contention base",
            "contention_after": "HBM contention after",
            "contention_delta": "HBM contention change", "held_out": "held out",
            "fit_r2": "R2 fit", "held_out_r2": "R2 held out",
            "held_out_mape_pct": "MAPE % held out",
            "held_out_median_abs_error": "median |err| held out",
            "pct": "%", "gained_pct": "gained %",
            **{f"{c}_{s}": f"{'inst' if c == 'instructions' else c} {s}"
               for c in ("instructions", "busy", "stall") for s in ("base", "cand", "delta")},
            "base_id": "base id", "cand_id": "cand id", "start_shift": "start shift"}


def _header(name: str) -> str:
    return _HEADERS.get(name, name)


def _facts(summary: ReplaySummary, result: ReplayResult,
           correlation: Correlation | None) -> list[Fact]:
    facts = [*replay_facts(result.trace, result.machine, result.mode.value),
             fact("instructions", summary.instructions,
                  f"{summary.instructions:,} ({result.edges:,} edges)"),
             makespan_fact(summary.makespan, result.clock_hz),
             fact("ipc", round(summary.ipc, 6), f"{summary.ipc:.4f}", label="IPC"),
             hbm_fact(summary.hbm, result.machine)]
    if correlation is not None:
        observed = makespan_fact(correlation.observed_makespan, result.clock_hz)
        facts += [fact("observed_makespan_cycles", correlation.observed_makespan,
                       observed.text),
                  fact("makespan_error_pct", None if correlation.makespan_error_pct is None
                       else round(correlation.makespan_error_pct, 3),
                       "-" if correlation.makespan_error_pct is None
                       else f"{correlation.makespan_error_pct:+.2f} %")]
    return facts


def replay_parts(result: ReplayResult, summary: ReplaySummary, correlation: Correlation | None
                 ) -> tuple[list[Fact], list[tuple[str, pl.DataFrame, dict[str, str]]]]:
    """The replay report's head and titled tables (text, Markdown and the API's report)."""
    sections = [("engines (cycles)", summary.engines, ENGINE_COLS),
                ("top opcodes by time", summary.opcodes, _OPCODE_COLS)]
    if correlation is not None:
        sections += [("correlation by opcode (durations)", correlation.opcodes, _CORR_COLS),
                     (DURATION_DIV_TITLE, correlation.divergent_duration, _DURATION_DIV_COLS),
                     (WAIT_DIV_TITLE, correlation.divergent_wait, _WAIT_DIV_COLS)]
    notes = [fact("note", note) for note in result.notes]
    return [*_facts(summary, result, correlation), *notes], sections


def print_replay(console: Console, result: ReplayResult, summary: ReplaySummary,
                 correlation: Correlation | None) -> None:
    facts, sections = replay_parts(result, summary, correlation)
    print_sections(console, "replay", [f for f in facts if f.key != "note"], sections)


def replay_markdown(result: ReplayResult, summary: ReplaySummary,
                    correlation: Correlation | None) -> str:
    facts, sections = replay_parts(result, summary, correlation)
    return sections_markdown(f"Replay of {result.trace.manifest.workload}", facts,
                             [(title[0].upper() + title[1:], frame, cols)
                              for title, frame, cols in sections])


def hbm_text(hbm: dict[str, float | int], limit: float, clock_hz: float) -> str:
    """The achieved HBM bandwidth against the machine's, as the reports print it."""
    return (f"{hbm['bandwidth']:,.1f} B/cycle, {hbm['bandwidth'] * clock_hz / 1e9:,.1f} GB/s "
            f"({hbm['bandwidth_pct']:.1f} % of the machine's {limit:,.0f} B/cycle; "
            f"{hbm['bytes']:,} bytes)")


def _md_row(cells: list[str]) -> str:
    """A markdown table row, with pipes inside cells escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# --- what-if, sensitivity and calibration ------------------------------------------------------

WHATIF_ENGINE_COLS = {"engine": "", "busy_base": ",", "busy_after": ",",
                      "contention_base": ",", "contention_after": ","}
SENSITIVITY_COLS = {"group": "", "name": "", "makespan": ",", "gained": ",",
                    "gained_pct": ".2f", "contention_delta": "+,"}
WHY_TITLE = "why a faster part makes the run longer"
COEFFICIENTS = ("fixed_cycles", "per_element", "per_byte", "per_flop")
FITS_TITLE = "fits (R2: - where the fit predicts one duration for all)"
CALIBRATION_COLS = {"engine": "", "opcode": "", "samples": ",", "held_out": ",",
                    "fixed_cycles": ",.2f", "per_element": ".6f", "per_byte": ".6f",
                    "per_flop": ".3e", "fit_r2": ".3f", "held_out_r2": ".3f",
                    "held_out_mape_pct": ".1f", "held_out_median_abs_error": ",.0f"}


def whatif_head(trace: str, scale: list[str], sets: list[str], result: WhatIf
                ) -> dict[str, Any]:
    return {"trace": trace, "scale": scale, "set": sets,
            "base_makespan_cycles": result.base_makespan, "makespan_cycles": result.makespan,
            "gained_cycles": result.gained, "change_pct": round(result.change_pct, 3)}


def whatif_verdict(result: WhatIf) -> str:
    what = (f"{result.gained:,} cycles gained" if result.gained >= 0
            else f"{-result.gained:,} cycles lost")
    return (f"makespan {result.base_makespan:,} -> {result.makespan:,} cycles "
            f"({result.change_pct:+.2f} %, {what})")


def whatif_to_dict(trace: str, scale: list[str], sets: list[str], result: WhatIf,
                   head: list[Fact]) -> dict[str, Any]:
    return {**facts_json(head), **whatif_head(trace, scale, sets, result), "why": result.why,
            "engines": records(result.engines)}


def whatif_facts(scale: list[str], sets: list[str], result: WhatIf,
                 head: list[Fact]) -> list[Fact]:
    """The what-if report's head: the timeline facts, the changes, the verdict and why."""
    facts = [*head, fact("scale", scale, ", ".join(scale) or "-"),
             fact("set", sets, ", ".join(sets) or "-"),
             fact("result", whatif_verdict(result))]
    return facts + ([fact("why", result.why)] if result.why is not None else [])


def whatif_markdown(trace: str, scale: list[str], sets: list[str], result: WhatIf,
                    head: list[Fact]) -> str:
    return sections_markdown(f"What-if on {trace}", whatif_facts(scale, sets, result, head), [
        ("By engine (base, and after the change)", result.engines, WHATIF_ENGINE_COLS)])


def print_whatif(console: Console, scale: list[str], sets: list[str], result: WhatIf,
                 head: list[Fact]) -> None:
    print_sections(console, "what-if", whatif_facts(scale, sets, result, head), [
        ("by engine (base, and after the change)", result.engines, WHATIF_ENGINE_COLS)])


def _why_rows(table: pl.DataFrame) -> pl.DataFrame:
    return table.filter(pl.col("why").is_not_null()).select("group", "name", "gained", "why")


def sensitivity_markdown(trace: str, speedup_pct: float, table: pl.DataFrame,
                         top: int, head: list[Fact]) -> str:
    sections = [(f"Ranking (top {min(top, table.height)} of {table.height})", table.head(top),
                 SENSITIVITY_COLS)]
    why = _why_rows(table)
    if why.height:
        sections.append((WHY_TITLE.capitalize(), why,
                         {"group": "", "name": "", "gained": ",", "why": ""}))
    return sections_markdown(f"Sensitivity of {trace}", [
        *head, fact("speedup", speedup_pct, f"{speedup_pct:g} % faster, in turn")], sections)


def print_sensitivity(console: Console, speedup_pct: float, table: pl.DataFrame,
                      top: int, head: list[Fact]) -> None:
    print_facts(console, "sensitivity", [
        *head, fact("speedup", speedup_pct, f"{speedup_pct:g} % faster, in turn")])
    print_table(console, f"\nmakespan gained, {speedup_pct:g} % faster each in turn",
                table.head(top), SENSITIVITY_COLS)
    why = _why_rows(table)  # every one, also below the rows shown
    if why.height:
        console.print(Text(f"\n{WHY_TITLE}", style="bold"))
        for row in why.iter_rows(named=True):
            console.print(Text(f"  {row['why']}"))


def calibration_head(calibration: Calibration, output: str,
                     traces: list[str]) -> dict[str, Any]:
    """The facts above the fits table, formatted for reading."""
    held = calibration.held_out

    def figure(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    total = int(calibration.fits["samples"].sum()) if calibration.fits.height else 0
    return {"traces": ", ".join(traces), "machine written": output,
            "held out": f"{held.samples:,} of {total:,} instructions (one in "
                        f"{held.every}, by a fixed hash of the id), not fitted",
            "held-out R2": figure(held.r2, ".3f"),
            "held-out MAPE": f"{figure(held.mape_pct, '.1f')} %",
            "held-out median |err|": f"{figure(held.median_abs_error, ',.0f')} cycles"}


def calibration_to_dict(calibration: Calibration, output: str,
                        traces: list[str]) -> dict[str, Any]:
    held = calibration.held_out
    return {"machine": output, "traces": traces,
            "held_out": {"samples": held.samples,
                         **{k: None if v is None else round(v, 3)
                            for k, v in (("r2", held.r2), ("mape_pct", held.mape_pct),
                                         ("median_abs_error", held.median_abs_error))}},
            # The coefficients whole (records' rounding would turn a per_flop into 0.0).
            "fits": [{**row, **{k: calibration.fits[k][i] for k in COEFFICIENTS}}
                     for i, row in enumerate(records(calibration.fits))],
            "warnings": [{"engine": w.engine, "opcode": w.opcode, "message": w.message}
                         for w in calibration.warnings]}


def _warnings_frame(calibration: Calibration) -> pl.DataFrame:
    return pl.DataFrame([(w.engine, w.opcode, w.message) for w in calibration.warnings],
                        schema={"engine": pl.String, "opcode": pl.String,
                                "warning": pl.String}, orient="row")


def calibration_markdown(calibration: Calibration, output: str, traces: list[str]) -> str:
    sections = [(FITS_TITLE.capitalize(), calibration.fits, CALIBRATION_COLS)]
    if calibration.warnings:
        sections.append(("Warnings", _warnings_frame(calibration),
                         {"engine": "", "opcode": "", "warning": ""}))
    return sections_markdown(f"Calibration to {', '.join(traces)}",
                             calibration_head(calibration, output, traces), sections)


def print_calibration(console: Console, calibration: Calibration, output: str,
                      traces: list[str]) -> None:
    print_facts(console, "calibration", [fact(key, value) for key, value in
                                         calibration_head(calibration, output, traces).items()])
    print_table(console, f"\n{FITS_TITLE}", calibration.fits, CALIBRATION_COLS)


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
                                    ("Opcodes", "opcode", summary.opcodes)))])


# --- stalls and critical path -------------------------------------------------------------------


def print_stalls(console: Console, table: pl.DataFrame) -> None:
    cols = {"engine": "", "bucket": "", "cause": "", "cycles": ",", "pct": ".2f"}
    out = _table("stalls (every engine's cycles sum to the makespan)",
                 *[(c if c != "pct" else "%", "left" if not f else "right")
                   for c, f in cols.items()])
    for cells in _cells(table, cols):
        out.add_row(*[Text(c) for c in cells])
    console.print(out)


def critical_path_to_dict(path: CriticalPath) -> dict[str, Any]:
    return {"makespan_cycles": path.makespan,
            "steps": path.steps.height,
            "zero_slack_instructions": int(path.slack["critical"].sum()),
            "by_engine": records(path.by_engine), "by_opcode": records(path.by_opcode),
            "by_layer": records(path.by_layer), "path": records(path.steps)}


def print_critical_path(console: Console, path: CriticalPath, longest: int,
                        head: list[Fact]) -> None:
    print_facts(console, "critical path", [
        *head, fact("makespan_cycles", path.makespan, f"{path.makespan:,} cycles"),
        fact("steps", path.steps.height),
        fact("zero_slack_instructions", int(path.slack["critical"].sum()),
             label="zero-slack instructions")])
    for title, frame, key in (("by engine", path.by_engine, "engine"),
                              ("by opcode", path.by_opcode, "opcode"),
                              ("by layer", path.by_layer, "layer")):
        cols = {key: "", "cycles": ",", "pct": ".2f"}
        out = _table(f"\n{title}", *[(c if c != "pct" else "%", "left" if not f else "right")
                                     for c, f in cols.items()])
        for cells in _cells(frame, cols):
            out.add_row(*[Text(c) for c in cells])
        console.print(out)
    cols = {"id": "", "engine": "", "opcode": "", "layer": "", "start": ",", "duration": ",",
            "edge_kind": ""}
    top = path.steps.sort(["duration", "id"], descending=[True, False]).head(longest)
    out = _table(f"\nlongest {top.height} steps", *[(c, "left" if not f else "right")
                                                    for c, f in cols.items()])
    for cells in _cells(top, cols):
        out.add_row(*[Text(c) for c in cells])
    console.print(out)


def print_sections(console: Console, title: str, head: list[Fact],
                   sections: list[tuple[str, pl.DataFrame, dict[str, str]]]) -> None:
    """A report: its head, then its titled tables."""
    print_facts(console, title, head)
    for name, frame, cols in sections:
        print_table(console, f"\n{name}", frame, cols)


def print_table(console: Console, title: str, frame: pl.DataFrame,
                cols: dict[str, str]) -> None:
    """A frame as a rich table: `cols` maps each column shown to its format spec."""
    out = _table(title, *[(_header(c), "left" if not f else "right") for c, f in cols.items()])
    for cells in _cells(frame, cols):
        out.add_row(*[Text(c) for c in cells])
    console.print(out)


def sections_markdown(title: str, head: list[Fact] | dict[str, Any],
                      sections: list[tuple[str, pl.DataFrame, dict[str, str]]]) -> str:
    facts = [fact(k, v) for k, v in head.items()] if isinstance(head, dict) else head
    lines = [f"# {title}", "", *facts_markdown(facts)]
    for name, frame, cols in sections:
        lines += ["", f"## {name}", "", _md_row([_header(c) for c in cols]),
                  "|" + "|".join("---" if not f else "---:" for f in cols.values()) + "|"]
        lines += [_md_row(cells) for cells in _cells(frame, cols)]
    return "\n".join(lines) + "\n"


# --- bug signatures -----------------------------------------------------------------------------


def _evidence(row: dict[str, Any]) -> str:
    parts = []
    for key in ("instructions", "engines", "cycles", "addresses"):
        if row[key]:
            parts.append(f"{key} {', '.join(str(v) for v in row[key])}")
    return "; ".join(parts)


def with_evidence(frame: pl.DataFrame) -> pl.DataFrame:
    """Findings with their evidence lists joined into one `evidence` text column."""
    return frame.with_columns(pl.Series("evidence", [_evidence(r) for r in
                                                     frame.iter_rows(named=True)],
                                        dtype=pl.String))


def findings_summary(frame: pl.DataFrame) -> str:
    """'4 (1 error, 2 warning, 1 info)': findings by severity, most severe first."""
    if not frame.height:
        return "none"
    counts = dict(frame.group_by("severity").len().iter_rows())
    return f"{frame.height:,} (" + ", ".join(
        f"{counts[s]} {s}" for s in ("error", "warning", "info") if s in counts) + ")"


def print_findings(console: Console, frame: pl.DataFrame) -> None:
    """Every finding with its evidence and hint (the head, with their count, comes first)."""
    for row in frame.iter_rows(named=True):
        line = Text("\n")
        line.append(f"{row['severity']} ", style=_SEVERITY_STYLE.get(Severity(row["severity"]),
                                                                    "")
                    if row["severity"] in ("error", "warning") else "")
        line.append(f"[{row['code']}]", style="bold")
        line.append(f" {row['message']}")
        console.print(line)
        if _evidence(row):
            console.print(Text(f"    evidence: {_evidence(row)}"))
        console.print(Text(f"    hint: {row['hint']}", style="dim"))


def findings_markdown(trace: str, frame: pl.DataFrame, head: list[Fact]) -> str:
    lines = [f"# Bug signatures of {trace}", "", *facts_markdown(head), ""]
    if frame.height:
        lines += ["| severity | code | message | evidence |", "|---|---|---|---|"]
        lines += [_md_row([r["severity"], r["code"], r["message"], _evidence(r)])
                  for r in frame.iter_rows(named=True)]
    return "\n".join(lines) + "\n"


# --- diff ---------------------------------------------------------------------------------------

_GROUP_COLS = {f"{c}_{s}": "+," if s == "delta" else ","
               for c in ("instructions", "busy", "stall") for s in ("base", "cand", "delta")}


def diff_sections(d: Diff, timeline: list[Fact]
                  ) -> tuple[list[Fact], list[tuple[str, pl.DataFrame, dict[str, str]]]]:
    """The facts of a diff as a head and titled tables with their formats. `timeline`: the
    base trace's `timeline_facts` (the timeline both are analysed on, the machine, the time
    unit), of which the trace line gives way to the base and candidate lines."""
    head = [fact("workload", d.workload), fact("base", d.base), fact("candidate", d.cand),
            *(f for f in timeline if f.key != "trace"),
            fact("base_makespan_cycles", d.base_makespan, f"{d.base_makespan:,} cycles",
                 label="base makespan"),
            fact("cand_makespan_cycles", d.cand_makespan, f"{d.cand_makespan:,} cycles",
                 label="candidate makespan"),
            fact("delta_cycles", d.delta, f"{d.delta:+,} cycles", label="change"),
            fact("delta_pct", round(d.delta_pct, 3), f"{d.delta_pct:+.2f} %",
                 label="change %"),
            fact("threshold_pct", d.threshold_pct, f"{d.threshold_pct:g} %",
                 label="threshold"),
            fact("regression", d.regression), fact("alignment", d.alignment.value),
            fact("aligned_instructions", d.matched), fact("only_in_base", d.only_base),
            fact("only_in_candidate", d.only_cand)]
    attribution = {"base": ",", "cand": ",", "delta": "+,", "share_pct": ".1f"}
    finding_cols = {"severity": "", "code": "", "message": ""}
    sections = [
        ("makespan change by engine (critical path)", d.attribution_engine,
         {"engine": "", **attribution}),
        ("makespan change by layer (critical path)", d.attribution_layer,
         {"layer": "", **attribution}),
        ("by layer", d.by_layer, {"layer": "", **_GROUP_COLS}),
        ("by engine", d.by_engine, {"engine": "", **_GROUP_COLS}),
        ("by opcode", d.by_opcode, {"opcode": "", **_GROUP_COLS}),
        ("stall causes", d.stall_causes,
         {"engine": "", "cause": "", "base": ",", "cand": ",", "delta": "+,"}),
        ("instructions that changed most", d.changed,
         {"key": "", "base_id": "", "cand_id": "", "engine": "", "opcode": "", "layer": "",
          "base": ",", "cand": ",", "delta": "+,", "start_shift": "+,"}),
        ("new findings", d.new_findings, finding_cols),
        ("resolved findings", d.resolved_findings, finding_cols),
    ]
    return head, sections


def diff_json(d: Diff, timeline: list[Fact]) -> dict[str, Any]:
    """The diff as JSON-ready data, tables under snake_case keys."""
    head = facts_json(diff_sections(d, timeline)[0])
    tables = {"attribution_by_engine": d.attribution_engine,
              "attribution_by_layer": d.attribution_layer, "by_layer": d.by_layer,
              "by_engine": d.by_engine, "by_opcode": d.by_opcode,
              "stall_causes": d.stall_causes, "changed_instructions": d.changed,
              "new_findings": d.new_findings, "resolved_findings": d.resolved_findings}
    return {**head, "alignment": d.alignment.value,
            **{key: records(frame) for key, frame in tables.items()}}


def diff_verdict(d: Diff) -> str:
    word = "REGRESSION" if d.regression else "ok"
    return (f"{word}: makespan {d.base_makespan:,} -> {d.cand_makespan:,} cycles "
            f"({d.delta:+,}, {d.delta_pct:+.2f}%; threshold {d.threshold_pct:g}%)")


def diff_junit(d: Diff) -> str:
    """JUnit XML: one test case for the makespan, failed past the threshold."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name="tracekit diff", tests="1",
                       failures=str(int(d.regression)), errors="0")
    case = ET.SubElement(suite, "testcase", classname="tracekit.diff",
                         name=f"{d.workload}: makespan")
    if d.regression:
        failure = ET.SubElement(case, "failure", message=diff_verdict(d), type="regression")
        top = d.attribution_engine.head(3)
        failure.text = "\n".join(f"{r['engine']}: {r['delta']:+,} cycles "
                                 f"({r['share_pct']:.1f}% of the change)"
                                 for r in top.iter_rows(named=True))
    ET.SubElement(case, "system-out").text = diff_verdict(d)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


# --- nightly ------------------------------------------------------------------------------------


def _change(row: dict[str, Any]) -> str:
    return "-" if row["delta_pct"] is None else f"{row['delta_pct']:+.2f}%"


def nightly_markdown(run: NightlyRun, trend: pl.DataFrame,
                     explained: dict[str, Explanation]) -> str:
    """The run's summary: one row per workload, the details of regressions and errors (with
    what moved against the baseline, `explained` by workload), and the trend of makespans
    over the last runs."""
    rows = run.rows
    first = rows.row(0, named=True)
    counts = {s: rows.filter(pl.col("status") == s).height
              for s in ("pass", "regression", "error")}
    lines = [f"# Nightly {run.suite.name}: run {first['run_id']} ({first['date']})", "",
             f"- **machine**: {run.suite.machine or 'trn-like'} (makespans in its cycles)",
             "- **timeline**: each workload's own timing when it is timed throughout "
             "(observed), else the model's replay (replayed)", "",
             f"{rows.height} workload(s): {counts['pass']} passed, {counts['regression']} "
             f"regressed, {counts['error']} failed.", "",
             "| workload | status | timeline | makespan | baseline | change | threshold | "
             "errors | warnings | baseline run |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows.iter_rows(named=True):
        lines.append(_md_row([r["workload"], r["status"], r["timeline"] or "-",
                              _fmt(r["makespan"]), _fmt(r["baseline_makespan"]), _change(r),
                              f"{r['threshold_pct']:g}%", _fmt(r["errors"]),
                              _fmt(r["warnings"]), r["baseline_run"] or "none"]))
    details = [r for r in rows.iter_rows(named=True) if r["status"] != "pass"]
    if details:
        lines += ["", "## What needs a look", ""]
        for r in details:
            first, *rest = _reason(r, explained.get(r["workload"])).splitlines() or [""]
            lines.append(f"- **{r['workload']}** ({r['status']}): {first}")
            if rest:  # a multi-line error (a deadlock report, say) as a block under it
                lines += ["", *(f"      {line}" for line in rest), ""]
    lines += ["", f"## Trend (makespan, last {trend.width - 1} run(s))", "",
              _md_row(list(trend.columns)),
              "|---|" + "---:|" * (trend.width - 1)]
    for values in trend.iter_rows():
        lines.append(_md_row([values[0], *(_fmt(v) for v in values[1:])]))
    return "\n".join(lines) + "\n"


def _fmt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


TOP_GROUPS = 4
"""Engines and layers named in a regression's line; the rest are summed."""


def _moves(frame: pl.DataFrame, key: str) -> str:
    """"dma.q2 +24,055, dma.q0 -4,528 (2 more: -1,667)": the largest changes first."""
    shown = ", ".join(f"{r[key]} {r['delta']:+,}"
                      for r in frame.head(TOP_GROUPS).iter_rows(named=True))
    rest = frame.slice(TOP_GROUPS)
    return shown + (f" ({rest.height} more: {int(rest['delta'].sum()):+,})" if rest.height
                    else "")


def _explanation(why: Explanation) -> list[str]:
    parts = []
    if why.delta is not None:
        parts.append(f"critical path {why.delta:+,} cycles: engines "
                     f"{_moves(why.engines, 'engine')}")
        if why.layers.height:
            parts.append(f"layers {_moves(why.layers, 'layer')}")
    if why.new_findings.height:
        parts.append("new findings: " + ", ".join(
            f"{r['code']} ({r['count']} {r['severity']})"
            for r in why.new_findings.iter_rows(named=True)))
    return parts


def _reason(row: dict[str, Any], why: Explanation | None) -> str:
    if row["status"] == "error":
        return row["error"]
    parts = []
    if row["stuck"]:
        parts.append(f"the run cannot finish: {row['stuck']}")
    if row["delta_pct"] is not None and row["delta_pct"] > row["threshold_pct"]:
        parts.append(f"makespan {row['baseline_makespan']:,} -> {row['makespan']:,} cycles "
                     f"({_change(row)}, threshold {row['threshold_pct']:g}%) against run "
                     f"{row['baseline_run']}")
    if why is not None:
        parts += _explanation(why)  # the new findings include every new error code
    elif row["new_error_codes"]:
        parts.append(f"new error findings: {', '.join(row['new_error_codes'])}")
    return "; ".join(parts)


def nightly_junit(run: NightlyRun, explained: dict[str, Explanation]) -> str:
    """JUnit XML: one test case per workload; a regression is a failure (its message saying
    what moved against the baseline, `explained` by workload), a workload that could not run
    an error."""
    import xml.etree.ElementTree as ET

    rows = run.rows
    suite = ET.Element("testsuite", name=f"tracekit nightly {run.suite.name}",
                       tests=str(rows.height), failures=str(run.regressions),
                       errors=str(run.errors))
    for r in rows.iter_rows(named=True):
        case = ET.SubElement(suite, "testcase", classname=f"tracekit.nightly.{run.suite.name}",
                             name=r["workload"])
        if r["status"] == "regression":
            reason = _reason(r, explained.get(r["workload"]))
            failure = ET.SubElement(case, "failure", type="regression",
                                    message=reason.splitlines()[0])
            failure.text = reason
        elif r["status"] == "error":
            error = ET.SubElement(case, "error", type="workload",
                                  message=r["error"].splitlines()[0])
            error.text = r["error"]
        else:
            ET.SubElement(case, "system-out").text = (
                f"makespan {_fmt(r['makespan'])} cycles, change {_change(r)} against "
                f"{r['baseline_run'] or 'no baseline'}")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


# --- history ------------------------------------------------------------------------------------

HISTORY_RUN_COLS = {"run_id": "", "started": "", "suite": "", "workloads": ",", "passed": ",",
                    "regressions": ",", "errors": ","}
HISTORY_TREND_COLS = {"run_id": "", "started": "", "suite": "", "status": "", "makespan": ",",
                      "change": "+,", "change_pct": "+.2f", "delta_pct": "+.2f",
                      "baseline_run": "", "replay_makespan": ",", "stall_cycles": ",",
                      "errors": ",", "warnings": ",", "trace_sha256": ""}
_HISTORY_HEADERS = {"run_id": "run", "started": "started (UTC)", "change_pct": "change %",
                    "delta_pct": "vs base %", "baseline_run": "baseline",
                    "replay_makespan": "replayed", "stall_cycles": "stalls",
                    "trace_sha256": "trace sha256"}
"""Headers short enough for the trend to fit a 160-column terminal."""


def history_table(table: pl.DataFrame,
                  cols: dict[str, str]) -> tuple[pl.DataFrame, dict[str, str]]:
    """A history table for reading (text and Markdown): the columns of `cols` under their
    headers, the start time to the second ("2026-03-01 02:00:00", UTC as stored) and a
    trace's sha256 to its first 12 digits."""
    short = [pl.col("started").str.slice(0, 19).str.replace("T", " ")]
    if "trace_sha256" in cols:
        short.append(pl.col("trace_sha256").str.slice(0, 12))
    named = {c: _HISTORY_HEADERS.get(c, c) for c in cols}
    return (table.with_columns(short).select(list(cols)).rename(named),
            {named[c]: f for c, f in cols.items()})
