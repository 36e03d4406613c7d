"""Reports across runs: `diff`, the nightly summary and JUnit, and `history`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from tracekit.cli.render.base import (
    Fact,
    _md_row,
    fact,
    facts_json,
    records,
)

if TYPE_CHECKING:
    from tracekit.analysis.diff import Diff
    from tracekit.analysis.history import Explanation
    from tracekit.analysis.nightly import NightlyRun


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
