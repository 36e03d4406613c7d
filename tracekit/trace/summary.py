"""What a bundle holds, at a glance: the facts behind `tracekit info`.

For a bundle with two DMA loads and a matmul, `summarize` gives engines
[dma.q0: 2 instructions, tensor: 1], opcodes [dma_load: 2, matmul: 1], the time span from the
first start to the last end, and each table's rows and bytes. Computed with polars group-bys.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import polars as pl

from tracekit.trace.bundle import Trace
from tracekit.trace.manifest import SECONDS_PER_TICK, TimeUnit


class Timing(StrEnum):
    """Whether instructions carry observed times: all of them, some, or none (functional)."""

    TIMED = "timed"
    PARTIAL = "partial"
    UNTIMED = "untimed"


@dataclass(frozen=True)
class TableInfo:
    name: str
    file: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class TraceSummary:
    """Counts and extent of one bundle.

    `engines` columns: engine (str), instructions (count), busy_cycles (sum of end - start over
    timed instructions, cycles; 0 when untimed). Natural order of engine names (dma.q2 before
    dma.q10).
    `opcodes` columns: opcode (str), instructions (count), busy_cycles (cycles). Most frequent
    first, ties by name.
    `windows`: the annotation windows an import recorded (a profiler's steps and annotations,
    which `--window NAME` selects): window (name), instances, first_start, first_end (of its
    first instance, in the trace's time unit); in order of first start.
    """

    trace: Trace
    instructions: int
    timing: Timing
    span_start: int | None
    span_end: int | None
    tables: tuple[TableInfo, ...]
    engines: pl.DataFrame
    opcodes: pl.DataFrame
    windows: pl.DataFrame

    @property
    def span_cycles(self) -> int | None:
        if self.span_start is None or self.span_end is None:
            return None
        return self.span_end - self.span_start

    def to_dict(self) -> dict[str, Any]:
        m = self.trace.manifest
        cycles = self.span_cycles
        return {
            "path": str(self.trace.path),
            "workload": m.workload,
            "producer": {"name": m.producer.name, "version": m.producer.version},
            "schema_version": m.schema_version,
            "machine": m.machine,
            "clock_hz": m.clock_hz,
            "time_unit": m.time_unit.value,
            "created": m.created,
            "instructions": self.instructions,
            "timing": self.timing.value,
            "span": None if cycles is None else {
                "start": self.span_start, "end": self.span_end, "length": cycles,
                "seconds": seconds(cycles, m.clock_hz, m.time_unit),
            },
            "tables": [{"name": t.name, "file": t.file, "rows": t.rows, "bytes": t.bytes}
                       for t in self.tables],
            "engines": self.engines.to_dicts(),
            "opcodes": self.opcodes.to_dicts(),
            "windows": self.windows.to_dicts(),
        }


def seconds(ticks: int, clock_hz: float | None, unit: TimeUnit) -> float | None:
    """`ticks` of `unit` in seconds; None for cycles of an unknown clock (or a clock so slow
    the result is not a finite number)."""
    if unit is not TimeUnit.CYCLES:
        return ticks * SECONDS_PER_TICK[unit]
    if not clock_hz:
        return None
    value = ticks / clock_hz
    return value if math.isfinite(value) else None


def natural_key(name: str | None) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value (dma.q2 before dma.q10); a missing name
    (in a bundle that breaks the not-null rule) sorts last."""
    if name is None:
        return ((2, ""),)
    return tuple((0, int(part)) if part.isascii() and part.isdigit() else (1, part)
                 for part in re.split(r"([0-9]+)", name) if part) + ((3, name),)


def summarize(trace: Trace) -> TraceSummary:
    """Count instructions per engine and opcode, and find the time span, of an opened bundle."""
    frame = trace.read("instructions", ["engine", "opcode", "start", "end"])
    duration = (pl.col("end") - pl.col("start")).fill_null(0)
    totals = frame.select(
        pl.len().alias("n"),
        (pl.col("start").is_not_null() & pl.col("end").is_not_null()).sum().alias("timed"),
        pl.col("start").min().alias("first"),
        pl.col("end").max().alias("last"),
    ).row(0, named=True)
    timed = totals["timed"]
    timing = (Timing.UNTIMED if timed == 0 else
              Timing.TIMED if timed == totals["n"] else Timing.PARTIAL)

    def counts(key: str) -> pl.DataFrame:
        return (frame.group_by(key)
                .agg(pl.len().cast(pl.Int64).alias("instructions"),
                     duration.sum().cast(pl.Int64).alias("busy_cycles"))
                .with_columns(pl.col(key).cast(pl.String)))

    engines = counts("engine")
    order = sorted(range(engines.height), key=lambda i: natural_key(engines["engine"][i]))
    engines = engines[order] if engines.height else engines
    opcodes = counts("opcode").sort(["instructions", "opcode"], descending=[True, False],
                                    nulls_last=True)
    tables = tuple(TableInfo(name=name, file=e.file, rows=e.rows, bytes=e.bytes)
                   for name, e in trace.manifest.tables.items())
    return TraceSummary(
        trace=trace, instructions=totals["n"], timing=timing,
        span_start=totals["first"] if timing is not Timing.UNTIMED else None,
        span_end=totals["last"] if timing is not Timing.UNTIMED else None,
        tables=tables, engines=engines, opcodes=opcodes, windows=windows_of(trace),
    )


def windows_of(trace: Trace) -> pl.DataFrame:
    """`TraceSummary.windows` of a bundle."""
    from tracekit.analysis.windows import annotations

    found = pl.DataFrame(annotations(trace), schema={"name": pl.String, "start": pl.Int64,
                                                     "end": pl.Int64}, strict=False)
    return (found.sort("start", "end", "name")
            .group_by("name", maintain_order=True)
            .agg(pl.len().cast(pl.Int64).alias("instances"),
                 pl.col("start").first().alias("first_start"),
                 pl.col("end").first().alias("first_end"))
            .rename({"name": "window"}))
