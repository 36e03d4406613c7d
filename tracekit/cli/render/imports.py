"""The reports of importers: what an import reconstructed, by source, and what it dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from tracekit.cli.render.base import Fact, fact

if TYPE_CHECKING:
    from tracekit.convert.neuron_explorer import ImportReport

NEURON_TITLE = "Neuron Explorer import"


def neuron_import_parts(report: ImportReport
                        ) -> tuple[list[Fact], list[tuple[str, pl.DataFrame, dict[str, str]]]]:
    """The head and the titled tables of a Neuron Explorer import report."""
    e = report.execution
    execution = (f"{e['index']} of {e['of']}" + (f" ({e['neff_name']})" if e["neff_name"]
                                                  else "")
                 + f", {e['end_ns'] - e['start_ns']:,} ns from {e['start_ns']:,} ns")
    head = [fact("profile", report.profile), fact("bundle", report.bundle),
            fact("machine_file", report.machine_file, label="machine file"),
            fact("schema_version", report.schema_version, label="schema version"),
            fact("execution", e, execution),
            fact("instructions", report.total_instructions),
            fact("tables_missing", list(report.tables_missing),
                 ", ".join(report.tables_missing) or "none", label="tables missing")]
    head += [fact(f"note_{i}", note, label="note") for i, note in enumerate(report.notes, 1)]
    sections = [
        ("Reconstructed, by source", report.rows_by_source(),
         {"what": "", "source": "", "rows": ","}),
        ("Dropped, by reason", report.dropped(), {"what": "", "reason": "", "rows": ","}),
        ("Engines", report.engines_frame(), {"engine": "", "instructions": ","}),
        ("Byte and FLOP counters (compute instructions have no addresses)",
         report.counters_frame(), {"counter": "", "value": ","}),
        ("Checks", report.checks_frame(), {"check": "", "rows": ","}),
    ]
    return head, sections


def neuron_import_json(report: ImportReport) -> dict[str, Any]:
    return report.to_dict()
