"""The compiled kernels (numba) on a command's first run after an install: each kernel is
compiled when a command first calls it, for the argument types it gets, and numba caches it
(`cache=True`: in `__pycache__` beside its module, or under NUMBA_CACHE_DIR); later runs load
it in milliseconds. A command compiles only the kernels it uses. What compiles is reported as
it happens, from numba's own compile events, so a first run says that it is compiling and how
long that took, and a run that finds everything cached says nothing:

    with kernels.announced(print) as compiled:   # "compiling kernels ..." at the first one
        tracekit.replay("sample_traces/gemm")
    compiled.kernels, compiled.seconds           # ['tracekit.replay.graph.csr', ...], 6.2
    # and at the end: "tracekit: kernels compiled in 6.2 s (15 kernels)"

This module imports numba only inside `announced`, so the command line can import it freely.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FIRST_RUN = ("tracekit: compiling kernels: the first run after an install compiles the "
             "kernels a command uses (once; numba caches them for later runs)...")


@dataclass
class Compiled:
    """What numba compiled while `announced` watched: the kernels called from Python, by
    qualified name (module.function, once per type signature, in the order they compiled),
    and the seconds spent compiling them (wall time, with the helpers they call)."""

    kernels: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Watch:
    """Follows numba's compile events: a compile may start others (helpers, numba's own
    functions); the outermost one is timed. numba compiles one function at a time."""

    def __init__(self, compiled: Compiled, tell: Callable[[str], None] | None) -> None:
        self.compiled = compiled
        self.tell = tell
        self.depth = 0
        self.started = 0.0

    def start(self) -> None:
        if self.depth == 0:
            if self.tell is not None and not self.compiled.kernels:
                self.tell(FIRST_RUN)
            self.started = time.perf_counter()
        self.depth += 1

    def end(self, function: Any) -> None:
        self.depth -= 1
        if self.depth == 0:  # a kernel called from Python, not one of its helpers
            self.compiled.kernels.append(f"{function.__module__}.{function.__qualname__}")
            self.compiled.seconds += time.perf_counter() - self.started


@contextmanager
def announced(tell: Callable[[str], None] | None) -> Iterator[Compiled]:
    """Watch numba compile inside: `tell` (None: nobody) a line when the first kernel starts
    compiling, and one with the time it took at the end, if anything compiled."""
    from numba.core import event

    compiled = Compiled()
    watch = _Watch(compiled, tell)

    class Listener(event.Listener):
        def on_start(self, e: event.Event) -> None:
            watch.start()

        def on_end(self, e: event.Event) -> None:
            watch.end(e.data["dispatcher"].py_func)

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        yield compiled
    finally:
        event.unregister("numba:compile", listener)
        if tell is not None and compiled.kernels:
            count = len(compiled.kernels)
            tell(f"tracekit: kernels compiled in {compiled.seconds:.1f} s ({count} kernel"
                 f"{'' if count == 1 else 's'})")
