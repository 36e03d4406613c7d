"""The trace bundle: schema, reading and writing, validation, and a builder for tiny bundles."""

from tracekit.trace.builder import TraceBuilder
from tracekit.trace.bundle import Trace, open_trace, write_trace
from tracekit.trace.manifest import Manifest, Producer, TableEntry, TimeUnit
from tracekit.trace.rules import RULES, Rule, Severity
from tracekit.trace.schema import SCHEMA_VERSION, TABLES
from tracekit.trace.validate import Finding, ValidationReport, require_valid, validate

__all__ = [
    "RULES",
    "SCHEMA_VERSION",
    "TABLES",
    "Finding",
    "Manifest",
    "Producer",
    "Rule",
    "Severity",
    "TableEntry",
    "TimeUnit",
    "Trace",
    "TraceBuilder",
    "ValidationReport",
    "open_trace",
    "require_valid",
    "validate",
    "write_trace",
]
