"""tracekit: store, validate, replay and mine instruction and memory traces of ML accelerators.

The Python API returns polars frames; the `tracekit` command line is built on the same calls.
"""

from importlib.metadata import PackageNotFoundError, version

from tracekit.errors import TracekitError
from tracekit.trace import (
    Trace,
    TraceBuilder,
    ValidationReport,
    open_trace,
    validate,
    write_trace,
)

try:
    __version__ = version("tracekit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Trace",
    "TraceBuilder",
    "TracekitError",
    "ValidationReport",
    "__version__",
    "open_trace",
    "validate",
    "write_trace",
]
