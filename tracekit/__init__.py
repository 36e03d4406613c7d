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

# The commands as calls returning report objects (tracekit.api); `tracekit.replay`, the
# package, is callable as the API's replay.
from tracekit import replay  # noqa: E402
from tracekit.api import (  # noqa: E402
    analyze,
    bugs,
    critical_path,
    diff,
    sensitivity,
    stalls,
    sweep,
    whatif,
)

__all__ = [
    "Trace",
    "analyze",
    "bugs",
    "critical_path",
    "diff",
    "replay",
    "sensitivity",
    "stalls",
    "sweep",
    "whatif",
    "TraceBuilder",
    "TracekitError",
    "ValidationReport",
    "__version__",
    "open_trace",
    "validate",
    "write_trace",
]
