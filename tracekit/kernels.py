"""The compiled kernels (numba) on the first run after an install: compiled once, together,
on a tiny trace, so that the first real command says what it is doing and how long it took,
and later runs load them from numba's cache (`__pycache__` beside each module)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def compiled() -> bool:
    """Whether the kernels are in numba's cache already (judged by the replay kernel's cache
    index; every command that replays needs it). True when numba's cache cannot be asked."""
    from tracekit.replay.engine import replay_kernel

    try:
        index = Path(replay_kernel._cache._cache_file._index_path)  # noqa: SLF001
    except AttributeError:  # another numba: nothing to say
        return True
    return index.exists()


def compile_all() -> float:
    """Compile and cache the kernels of replay, analyze (stalls, critical path, sensitivity,
    bug signatures), report (figures over time) and diff on a tiny generated GEMM; the
    seconds it took."""
    from tracekit import api
    from tracekit.analysis.figures import accounts, busy_over_time
    from tracekit.workloads.generate import generate

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tracekit-compile-") as folder:
        trace = generate("gemm", Path(folder) / "tiny",
                         params={"m": 128, "n": 512, "k": 256})
        api.replay(trace)
        api.analyze(trace, timeline="replayed")
        observed = api.analyze(trace, timeline="observed").line
        if observed is not None:  # `tracekit report`'s timeline and utilization over time
            acc = accounts(observed.frame)
            busy_over_time(observed.frame, acc, acc.origin, acc.horizon, 1000)
        api.diff(trace, trace)
    return time.perf_counter() - start
