"""tracekit: store, validate, replay and mine instruction and memory traces of ML accelerators.

The Python API returns polars frames; the `tracekit` command line is built on the same calls.

Every name below is imported on first use (PEP 562), so that `import tracekit` and
`tracekit --version` load neither numba nor polars nor pyarrow; `tracekit.open_trace(...)`,
`from tracekit import analyze` and `dir(tracekit)` work as if they had been imported up front.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tracekit.errors import TracekitError

__version__ = "0.1.0"
"""The one place the version is written (pyproject.toml reads it from here)."""

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from tracekit import replay
    from tracekit.api import (
        analyze,
        bugs,
        critical_path,
        diff,
        sensitivity,
        stalls,
        sweep,
        whatif,
    )
    from tracekit.trace import (
        Trace,
        TraceBuilder,
        ValidationReport,
        open_trace,
        validate,
        write_trace,
    )

_LAZY = {
    **dict.fromkeys(("Trace", "TraceBuilder", "ValidationReport", "open_trace", "validate",
                     "write_trace"), "tracekit.trace"),
    # The commands as calls returning report objects (tracekit.api).
    **dict.fromkeys(("analyze", "bugs", "critical_path", "diff", "sensitivity", "stalls",
                     "sweep", "whatif"), "tracekit.api"),
}
"""Each public name and the module it comes from. `tracekit.replay` is the package, callable
as the API's replay (`tracekit/replay/__init__.py`)."""

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


def __getattr__(name: str) -> Any:
    if name == "replay":
        value: Any = importlib.import_module("tracekit.replay")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'tracekit' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    """The public names, imported yet or not, and the subpackages loaded so far."""
    loaded = {name for name, value in globals().items()
              if isinstance(value, ModuleType) and value.__name__.startswith("tracekit.")}
    return sorted({*__all__, *loaded})
