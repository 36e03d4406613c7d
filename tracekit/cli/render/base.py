"""What every report shares: JSON, the report head (`Fact`: trace, timeline, machine, clocks,
the main figures) in one style, and titled tables for the terminal and Markdown."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text as RichText

from tracekit.replay.machine import Machine
from tracekit.trace.bundle import Trace
from tracekit.trace.names import KEPT, SHOWN, shortened_names
from tracekit.trace.rules import Severity


_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")
_UNPRINTABLE_OR_NEWLINE = re.compile(f"{_UNPRINTABLE.pattern[:-1]}\n]")


def printable(text: str, newlines: bool = False) -> str:
    """`text` safe for a terminal: control characters (escape sequences that would clear the
    screen or move the cursor, C1 codes, bidirectional overrides, lone surrogates) written as
    Python escapes (`\x1b`, `\u202e`); newlines kept only with `newlines`. Names come from
    traces, which anyone can write."""
    pattern = _UNPRINTABLE if newlines else _UNPRINTABLE_OR_NEWLINE
    return pattern.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace")
                       .decode("ascii"), text)


class Text(RichText):
    """rich's Text with `printable` applied to every string put in it (newlines kept: the
    reports' own line breaks); every text report builds its lines with this class."""

    def __init__(self, text: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(printable(text, newlines=True), *args, **kwargs)

    def append(self, text: Any, style: Any = None) -> Text:
        if isinstance(text, str):
            text = printable(text, newlines=True)
        super().append(text, style)
        return self


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

def _table(title: str, *columns: tuple[str, str]) -> Table:
    table = Table(title=Text(title), title_justify="left", title_style="bold", box=None,
                  pad_edge=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table

def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with floats rounded to 3 decimals, for stable JSON; names longer than
    `names.KEPT` shortened (from their codes: no row's long name is copied)."""
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            for row in shortened_names(frame, KEPT).iter_rows(named=True)]

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
    return [f"- **{f.label}**: {printable(f.text)}" for f in facts if f.key not in JSON_ONLY]


JSON_ONLY = {"machine_clock_hz", "trace_clock_hz"}
"""Head keys the text and Markdown reports state within another line."""


def _cells(frame: pl.DataFrame, formats: dict[str, str]) -> list[list[str]]:
    """The cells of the columns in `formats` as text; names as people read them
    (`names.shortened`)."""
    out = []
    for row in shortened_names(frame.select(list(formats)), SHOWN).iter_rows(named=True):
        cells = []
        for name, fmt in formats.items():
            value = row[name]
            cells.append("-" if value is None else format(value, fmt) if fmt
                         else printable(str(value)))
        out.append(cells)
    return out

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

def hbm_text(hbm: dict[str, float | int], limit: float, clock_hz: float) -> str:
    """The achieved HBM bandwidth against the machine's, as the reports print it."""
    return (f"{hbm['bandwidth']:,.1f} B/cycle, {hbm['bandwidth'] * clock_hz / 1e9:,.1f} GB/s "
            f"({hbm['bandwidth_pct']:.1f} % of the machine's {limit:,.0f} B/cycle; "
            f"{hbm['bytes']:,} bytes)")


def _md_row(cells: list[str]) -> str:
    """A markdown table row, with pipes inside cells escaped."""
    return "| " + " | ".join(printable(c).replace("|", "\\|") for c in cells) + " |"

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
    lines = [f"# {printable(title)}", "", *facts_markdown(facts)]
    for name, frame, cols in sections:
        lines += ["", f"## {printable(name)}", "", _md_row([_header(c) for c in cols]),
                  "|" + "|".join("---" if not f else "---:" for f in cols.values()) + "|"]
        lines += [_md_row(cells) for cells in _cells(frame, cols)]
    return "\n".join(lines) + "\n"
