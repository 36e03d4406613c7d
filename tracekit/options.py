"""The choices and defaults that the library and the command line's help both use, in a module
that imports nothing heavy: `tracekit COMMAND --help` shows them without loading numba, polars
or pyarrow. The library modules that use them take them from here."""

from __future__ import annotations

from enum import StrEnum


class TimelineChoice(StrEnum):
    """What --timeline asks for: auto is the trace's own timing when it has it."""

    AUTO = "auto"
    OBSERVED = "observed"
    REPLAYED = "replayed"


MAX_BARS = 200_000
"""Instructions drawn one by one in a report's engine timeline; past that, binned occupancy."""

DEFAULT_LINK_TOLERANCE_NS = 1000
"""How far (ns) a Neuron Explorer semaphore update may lie from the instruction time it is
linked to."""
