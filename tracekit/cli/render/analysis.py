"""Reports of the analyses: what-if, sensitivity, calibration, stalls, the critical path and
the bug signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
from rich.console import Console

from tracekit.analysis.critical_path import CriticalPath
from tracekit.cli.render.base import (
    _SEVERITY_STYLE,
    Fact,
    _cells,
    _md_row,
    _table,
    fact,
    facts_json,
    facts_markdown,
    print_facts,
    print_sections,
    print_table,
    records,
    Text,
    printable,
    sections_markdown,
)
from tracekit.trace.rules import Severity

if TYPE_CHECKING:
    from tracekit.analysis.calibrate import Calibration
    from tracekit.analysis.whatif import WhatIf


# --- what-if, sensitivity and calibration ------------------------------------------------------

WHATIF_ENGINE_COLS = {"engine": "", "busy_base": ",", "busy_after": ",",
                      "contention_base": ",", "contention_after": ","}
SENSITIVITY_COLS = {"group": "", "name": "", "makespan": ",", "gained": ",",
                    "gained_pct": ".2f", "contention_delta": "+,"}
WHY_TITLE = "why a faster part makes the run longer"
COEFFICIENTS = ("fixed_cycles", "per_element", "per_byte", "per_flop", "per_descriptor",
                "warmup_factor", "conflict_stretch")
FITS_TITLE = "fits (R2: - where the fit predicts one duration for all)"
CALIBRATION_COLS = {"engine": "", "opcode": "", "samples": ",", "held_out": ",",
                    "fixed_cycles": ",.2f", "per_element": ".6f", "per_byte": ".6f",
                    "per_flop": ".3e", "per_descriptor": ".2f", "descriptor_bytes": ",",
                    "warmup_count": ",", "warmup_factor": ".3f", "conflict_stretch": ".3f",
                    "fit_r2": ".3f", "held_out_r2": ".3f",
                    "held_out_mape_pct": ".1f", "held_out_median_abs_error": ",.0f"}
VALIDATION_TITLE = "unseen traces: per-instruction MAPE and makespan error, base -> fitted"
VALIDATION_COLS = {"workload": "", "how": "", "instructions": ",", "mape_before_pct": ".1f",
                   "mape_after_pct": ".1f", "makespan_error_before_pct": "+.2f",
                   "makespan_error_after_pct": "+.2f"}
BY_OPCODE_TITLE = "unseen traces by opcode: per-instruction MAPE, base -> fitted"
BY_OPCODE_COLS = {"engine": "", "opcode": "", "instructions": ",", "mape_before_pct": ".1f",
                  "mape_after_pct": ".1f"}


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
                         for w in calibration.warnings],
            **({} if calibration.validation is None else {
                "validation": records(calibration.validation.drop("trace").with_columns(
                    pl.Series("trace", calibration.validation["trace"]))),
                "by_opcode": records(calibration.by_opcode),
                "worse": calibration.worse})}


def _warnings_frame(calibration: Calibration) -> pl.DataFrame:
    return pl.DataFrame([(w.engine, w.opcode, w.message) for w in calibration.warnings],
                        schema={"engine": pl.String, "opcode": pl.String,
                                "warning": pl.String}, orient="row")


def _fit_cols(calibration: Calibration) -> dict[str, str]:
    """The fits' columns, the descriptor ones only when a fit has descriptors."""
    fits = calibration.fits
    if fits.height and (fits["descriptor_bytes"] > 0).any():
        return CALIBRATION_COLS
    return {k: v for k, v in CALIBRATION_COLS.items()
            if k not in ("per_descriptor", "descriptor_bytes")}


def calibration_markdown(calibration: Calibration, output: str, traces: list[str]) -> str:
    sections = [(FITS_TITLE.capitalize(), calibration.fits, _fit_cols(calibration))]
    if calibration.validation is not None:
        sections += [(VALIDATION_TITLE.capitalize(), calibration.validation, VALIDATION_COLS),
                     (BY_OPCODE_TITLE.capitalize(), calibration.by_opcode, BY_OPCODE_COLS)]
    if calibration.warnings:
        sections.append(("Warnings", _warnings_frame(calibration),
                         {"engine": "", "opcode": "", "warning": ""}))
    return sections_markdown(f"Calibration to {', '.join(traces)}",
                             calibration_head(calibration, output, traces), sections)


def print_calibration(console: Console, calibration: Calibration, output: str,
                      traces: list[str]) -> None:
    print_facts(console, "calibration", [fact(key, value) for key, value in
                                         calibration_head(calibration, output, traces).items()])
    print_table(console, f"\n{FITS_TITLE}", calibration.fits, _fit_cols(calibration))
    if calibration.validation is not None:
        print_table(console, f"\n{VALIDATION_TITLE}", calibration.validation, VALIDATION_COLS)
        print_table(console, f"\n{BY_OPCODE_TITLE}", calibration.by_opcode, BY_OPCODE_COLS)

# --- stalls and critical path -------------------------------------------------------------------


def print_stalls(console: Console, table: pl.DataFrame) -> None:
    cols = {"engine": "", "bucket": "", "cause": "", "cycles": ",", "pct": ".2f"}
    out = _table("stalls (every engine's cycles sum to the makespan)",
                 *[(c if c != "pct" else "%", "left" if not f else "right")
                   for c, f in cols.items()])
    for cells in _cells(table, cols):
        out.add_row(*[Text(c) for c in cells])
    console.print(out)


def critical_path_to_dict(path: CriticalPath, listed: int | None = None) -> dict[str, Any]:
    """The path's JSON: its figures and its steps in order; with `listed`, at most that many
    steps, the longest ones (still in path order), and `path_listed` says how many."""
    steps = path.steps
    if listed is not None and steps.height > listed:
        steps = steps.with_row_index("_place").sort(
            ["duration", "_place"], descending=[True, False]).head(listed).sort(
            "_place").drop("_place")
    return {"makespan_cycles": path.makespan,
            "steps": path.steps.height,
            "zero_slack_instructions": int(path.slack["critical"].sum()),
            "by_engine": records(path.by_engine), "by_opcode": records(path.by_opcode),
            "by_layer": records(path.by_layer), "path_listed": steps.height,
            "path": records(steps)}


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
    lines = [f"# Bug signatures of {printable(trace)}", "", *facts_markdown(head), ""]
    if frame.height:
        lines += ["| severity | code | message | evidence |", "|---|---|---|---|"]
        lines += [_md_row([r["severity"], r["code"], r["message"], _evidence(r)])
                  for r in frame.iter_rows(named=True)]
    return "\n".join(lines) + "\n"
