"""The import report: what a Neuron Explorer import reconstructed, by source, and what it left
out, by reason. The CLI renders it as text, JSON or Markdown; the manifest keeps its JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass(frozen=True)
class ImportReport:
    """What `convert` reconstructed from a profile and what it left out, with counts.

    `instructions`: rows by source table (Instruction, DmaPacketAggregated or DmaPacket
    groups); `engines`: instructions per bundle engine; `edges`: deps by source (Flow, trigger
    fallback); `semaphores`: signal/sub/set rows by op, `semaphore_links` by link method
    (engine-time, axi-semaphore-id); `waits`: parsed and kept; `memory`: rows by space, unknown
    location labels, unparsed offsets or partition lists, variables; `counters`: summed byte
    and FLOP counters (null when the profile has none); `checks`: rows breaking the profile's
    own consistency (duration_ns, pc order), its Warning rows, rows outside the execution;
    `*_dropped`: rows read and not imported, by reason. Every mapping is ordered and holds
    plain numbers, so `to_dict()` is stable JSON.
    """

    profile: str
    bundle: str
    machine_file: str | None
    schema_version: str
    execution: dict[str, Any]
    tables_read: dict[str, int]
    tables_missing: tuple[str, ...]
    instructions: dict[str, int]
    engines: dict[str, int]
    edges: dict[str, int]
    edges_dropped: dict[str, int]
    semaphores: dict[str, int]
    semaphore_links: dict[str, int]
    semaphores_dropped: dict[str, int]
    waits: dict[str, int]
    waits_dropped: dict[str, int]
    memory: dict[str, int]
    counters: dict[str, int | None]
    checks: dict[str, int]
    notes: tuple[str, ...] = field(default=())

    @property
    def total_instructions(self) -> int:
        return sum(self.instructions.values())

    @property
    def total_edges(self) -> int:
        return sum(self.edges.values())

    @property
    def total_semaphore_rows(self) -> int:
        """Signal, sub, set and wait rows written."""
        return sum(self.semaphores.values()) + self.waits.get("kept", 0)

    @property
    def total_memory_rows(self) -> int:
        return self.memory.get("hbm rows", 0) + self.memory.get("sbuf rows", 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "bundle": self.bundle, "machine_file": self.machine_file,
            "schema_version": self.schema_version, "execution": self.execution,
            "tables": {"read": self.tables_read, "missing": list(self.tables_missing)},
            "instructions": {"by_source": self.instructions, "total": self.total_instructions},
            "engines": self.engines,
            "edges": {"by_source": self.edges, "dropped": self.edges_dropped},
            "semaphores": {"by_op": self.semaphores, "by_link": self.semaphore_links,
                           "dropped": self.semaphores_dropped},
            "waits": {**self.waits, "dropped": self.waits_dropped},
            "memory": self.memory, "counters": self.counters, "checks": self.checks,
            "notes": list(self.notes),
        }

    def manifest_dict(self) -> dict[str, Any]:
        """The report as kept in the manifest (the paths of this run left out)."""
        out = self.to_dict()
        for key in ("profile", "bundle", "machine_file"):
            out.pop(key)
        return out

    def rows_by_source(self) -> pl.DataFrame:
        """what (instructions, edges, semaphores, waits, memory), source, rows."""
        rows = [("instructions", k, v) for k, v in self.instructions.items()]
        rows += [("edges", k, v) for k, v in self.edges.items()]
        rows += [("semaphores", k, v) for k, v in self.semaphores.items()]
        rows += [("semaphore links", k, v) for k, v in self.semaphore_links.items()]
        rows += [("waits", k, v) for k, v in self.waits.items()]
        rows += [("memory", k, v) for k, v in self.memory.items()]
        return pl.DataFrame(rows, schema={"what": pl.String, "source": pl.String,
                                          "rows": pl.Int64}, orient="row")

    def dropped(self) -> pl.DataFrame:
        """what, reason, rows: everything read and not imported, and why."""
        rows = [("edges", k, v) for k, v in self.edges_dropped.items()]
        rows += [("semaphore updates", k, v) for k, v in self.semaphores_dropped.items()]
        rows += [("waits", k, v) for k, v in self.waits_dropped.items()]
        return pl.DataFrame(rows, schema={"what": pl.String, "reason": pl.String,
                                          "rows": pl.Int64}, orient="row")

    def engines_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"engine": list(self.engines),
                             "instructions": list(self.engines.values())},
                            schema={"engine": pl.String, "instructions": pl.Int64})

    def counters_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"counter": list(self.counters),
                             "value": list(self.counters.values())},
                            schema={"counter": pl.String, "value": pl.Int64})

    def checks_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"check": list(self.checks), "rows": list(self.checks.values())},
                            schema={"check": pl.String, "rows": pl.Int64})


def value_counts(series: pl.Series, order: tuple[str, ...] = ()) -> dict[str, int]:
    """Value counts of a string series as an ordered dict: `order` first, then by name."""
    if series.len() == 0:
        return {}
    counts = dict(series.value_counts().iter_rows())
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return {k: int(counts[k]) for k in keys if counts[k]}


