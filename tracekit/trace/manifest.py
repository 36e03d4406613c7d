"""manifest.json of a trace bundle: what produced it, its clock, and the row count and sha256 of
every table file. One checker (`manifest_problems`) serves both reading and validation.

    {
      "schema_version": 1,
      "workload": "gemm_256x256x256",
      "producer": {"name": "tracekit.workloads", "version": "0.1.0"},
      "machine": "trn-like",
      "clock_hz": 1400000000,
      "time_unit": "cycles",
      "created": "2026-11-26T00:00:00Z",
      "tables": {"instructions": {"file": "instructions.parquet", "rows": 12,
                                  "bytes": 4417, "sha256": "9f2c..."}},
      "extra": {}
    }
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tracekit.errors import ManifestError, first_line
from tracekit.trace.schema import MANIFEST_FILE, TABLES


class TimeUnit(StrEnum):
    """Unit of the integer `start` and `end` columns."""

    CYCLES = "cycles"
    PS = "ps"
    NS = "ns"
    US = "us"


SECONDS_PER_TICK: Mapping[TimeUnit, float] = MappingProxyType(
    {TimeUnit.PS: 1e-12, TimeUnit.NS: 1e-9, TimeUnit.US: 1e-6})
"""Seconds in one tick of each unit of time (cycles take the manifest's clock)."""


MAX_CLOCK_HZ = 1.0e12
"""The fastest clock a manifest may give (1 THz): beyond it clock_hz is a unit mistake, and
times in ps, ns or us would turn into cycle counts past what 64-bit integers hold."""


MANIFEST_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("schema_version", "integer, required",
     "Schema version of the bundle; this tracekit writes 1."),
    ("workload", "string, required", "Name of the workload or kernel traced."),
    ("producer", "object {name, version}, required",
     "The program that wrote the bundle; a plain string is read as the name."),
    ("machine", "string or null", "Name of the machine the trace was taken on or modelled for."),
    ("clock_hz", "number > 0 and <= 1e12, or null",
     "Clock of the machine: turns cycles into time, and times in ps, ns or us into the cycles "
     "the machine model counts (comparing such times with a replay needs it)."),
    ("time_unit", "string, default \"cycles\"",
     "Unit of start and end: cycles, ps, ns or us."),
    ("created", "string or null", "When the bundle was written, ISO 8601 in UTC."),
    ("tables", "object, required",
     "Table name -> {file, rows, bytes, sha256}: the file name, its row count, its size in "
     "bytes and the sha256 of its bytes. instructions is required."),
    ("extra", "object", "Producer-specific facts (generator parameters, injected faults)."),
)
"""The manifest's fields, documented once; `schemas/README.md` is generated from this."""


@dataclass(frozen=True)
class Producer:
    """The program that wrote the bundle (a functional model, an RTL testbench, an importer)."""

    name: str
    version: str = ""


@dataclass(frozen=True)
class TableEntry:
    """One table file as recorded when it was written."""

    file: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest. `extra` holds producer-specific facts (generator parameters,
    injected faults) as plain JSON values."""

    schema_version: int
    workload: str
    producer: Producer
    tables: dict[str, TableEntry]
    machine: str | None = None
    clock_hz: float | None = None
    time_unit: TimeUnit = TimeUnit.CYCLES
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cycles_per_tick(self, clock_hz: float | None = None) -> float | None:
        """Cycles of a clock at `clock_hz` (the machine's; default: the trace's own) in one
        tick of the start and end columns. For cycles: 1 at the trace's own clock (or when
        the manifest has none), else clock_hz / the trace's clock (a 1 GHz trace's cycle is
        1.4 cycles at 1.4 GHz); for ps, ns and us: the clock times the tick's seconds (1 ns at
        1.4 GHz is 1.4 cycles), or None when the manifest has no clock."""
        if self.time_unit is TimeUnit.CYCLES:
            return clock_hz / self.clock_hz if clock_hz and self.clock_hz else 1.0
        if not self.clock_hz:
            return None
        return (clock_hz or self.clock_hz) * SECONDS_PER_TICK[self.time_unit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "workload": self.workload,
            "producer": {"name": self.producer.name, "version": self.producer.version},
            "machine": self.machine,
            "clock_hz": self.clock_hz,
            "time_unit": self.time_unit.value,
            "created": self.created,
            "tables": {
                name: {"file": t.file, "rows": t.rows, "bytes": t.bytes, "sha256": t.sha256}
                for name, t in self.tables.items()
            },
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> Manifest:
        """Parse a manifest already upgraded to the current schema version."""
        problems = manifest_problems(data)
        if problems:
            listing = "; ".join(f"{key}: {what}" for key, what in problems)
            raise ManifestError(
                f"{source}: invalid manifest ({listing}). Fix these fields, or re-export the "
                f"bundle with its producer."
            )
        producer = data["producer"]
        if isinstance(producer, str):
            producer = {"name": producer}
        return cls(
            schema_version=int(data["schema_version"]),
            workload=data["workload"],
            producer=Producer(name=producer["name"], version=str(producer.get("version", ""))),
            tables={
                name: TableEntry(file=t["file"], rows=t["rows"], bytes=t["bytes"],
                                 sha256=t["sha256"])
                for name, t in data["tables"].items()
            },
            machine=data.get("machine"),
            clock_hz=data.get("clock_hz"),
            time_unit=TimeUnit(data.get("time_unit", TimeUnit.CYCLES.value)),
            created=data.get("created"),
            extra=dict(data.get("extra") or {}),
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """A non-negative integer (not a bool), as row counts and byte sizes must be."""
    return _is_int(value) and value >= 0


def is_sha256(value: Any) -> bool:
    """64 lowercase hex digits, as the manifest writes a sha256."""
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def _finite(number: int | float) -> bool:
    """Whether a JSON number is a finite float (an integer of 400 digits is not)."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def manifest_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every field of a current-version manifest that is missing or malformed, as (key, what)."""
    problems: list[tuple[str, str]] = []
    if not _is_int(data.get("schema_version")):
        problems.append(("schema_version", "must be an integer"))
    if not isinstance(data.get("workload"), str) or not data.get("workload"):
        problems.append(("workload", "must be a non-empty string"))
    producer = data.get("producer")
    if isinstance(producer, dict):
        if not isinstance(producer.get("name"), str) or not producer.get("name"):
            problems.append(("producer.name", "must be a non-empty string"))
        if "version" in producer and not isinstance(producer["version"], str):
            problems.append(("producer.version", "must be a string"))
    elif not (isinstance(producer, str) and producer):
        problems.append(("producer", "must be an object {name, version} or a non-empty string"))
    if data.get("machine") is not None and not isinstance(data["machine"], str):
        problems.append(("machine", "must be a string or null"))
    clock = data.get("clock_hz")
    if clock is not None and (isinstance(clock, bool) or not isinstance(clock, int | float)
                              or not _finite(clock) or clock <= 0):
        problems.append(("clock_hz", "must be a positive number or null"))
    elif clock is not None and clock > MAX_CLOCK_HZ:
        problems.append(("clock_hz", f"is {clock:.3g} Hz, past {MAX_CLOCK_HZ:.0e} (1 THz): give "
                                     f"the clock in Hz (1.4 GHz is 1.4e9)"))
    unit = data.get("time_unit", TimeUnit.CYCLES.value)
    if not isinstance(unit, str) or unit not in {u.value for u in TimeUnit}:
        legal = ", ".join(u.value for u in TimeUnit)
        problems.append(("time_unit", f"is {unit!r}; must be one of {legal}"))
    if data.get("created") is not None and not isinstance(data["created"], str):
        problems.append(("created", "must be an ISO 8601 string or null"))
    if data.get("extra") is not None and not isinstance(data["extra"], dict):
        problems.append(("extra", "must be an object"))
    tables = data.get("tables")
    if not isinstance(tables, dict):
        problems.append(("tables", "must be an object mapping table name to its file entry"))
        return problems
    for name, entry in tables.items():
        key = f"tables.{name}"
        if name not in TABLES:
            problems.append((key, f"unknown table; schema tables are {', '.join(TABLES)}"))
            continue
        if not isinstance(entry, dict):
            problems.append((key, "must be an object {file, rows, bytes, sha256}"))
            continue
        if entry.get("file") != TABLES[name].file:
            problems.append((f"{key}.file", f"must be {TABLES[name].file!r}"))
        for count in ("rows", "bytes"):
            if not is_count(entry.get(count)):
                problems.append((f"{key}.{count}", "must be a non-negative integer"))
        if not is_sha256(entry.get("sha256")):
            problems.append((f"{key}.sha256", "must be 64 lowercase hex digits"))
    return problems


def read_manifest_json(bundle: Path) -> dict[str, Any]:
    """The raw manifest of `bundle` as a dict; ManifestError when it is not a JSON object."""
    path = bundle / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror}).") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: the manifest is not UTF-8 text; it must be JSON.") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{path}: the manifest is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). Restore it from the producer or re-export the bundle."
        ) from exc
    except (ValueError, RecursionError) as exc:  # absurd numbers or nesting
        raise ManifestError(
            f"{path}: the manifest cannot be read as JSON ({first_line(exc)}). Restore it from "
            f"the producer or re-export the bundle."
        ) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the manifest must be a JSON object, not "
                            f"{type(data).__name__}.")
    return data
