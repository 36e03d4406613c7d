"""The `replay` report: its head, engine and opcode tables, and the correlation with the
observed timing."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console

from tracekit.analysis.replay_report import Correlation, ReplaySummary
from tracekit.cli.render.base import (
    Fact,
    fact,
    facts_json,
    hbm_fact,
    makespan_fact,
    print_sections,
    records,
    replay_facts,
    sections_markdown,
    timeline_facts,
)
from tracekit.replay.run import ReplayResult


# --- replay ----------------------------------------------------------------------------------

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
