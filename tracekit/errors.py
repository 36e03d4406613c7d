"""The one exception family of tracekit: library code raises these, the CLI maps them to exit codes.

Every message says what is wrong, where (file, table, key) and what to do about it, so the CLI can
print it as is.
"""

from __future__ import annotations


class TracekitError(Exception):
    """Base of every error tracekit raises on bad input or use; the CLI exits 1 on these."""

    exit_code = 1


class TraceNotFoundError(TracekitError):
    """The path given as a trace bundle does not exist, is a file, or holds no manifest."""


class ManifestError(TracekitError):
    """manifest.json cannot be read, is not JSON, or lacks a field that reading depends on."""


class SchemaVersionError(TracekitError):
    """The bundle's schema version is unknown to this tracekit, or has no upgrade path."""


class TableReadError(TracekitError):
    """A Parquet file of the bundle is missing, corrupt or truncated."""


class TraceExistsError(TracekitError):
    """Writing would replace an existing bundle and the caller did not ask for that."""


class TableDataError(TracekitError):
    """Data handed to the writer does not fit the schema (missing column, uncastable type)."""


class OutputError(TracekitError):
    """A report or other output file cannot be written where the user asked."""


class InvalidTraceError(TracekitError):
    """A bundle failed validation; carries the report so callers can show every finding."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


def first_line(exc: BaseException) -> str:
    """The first line of an underlying library error, for quoting inside a tracekit message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
