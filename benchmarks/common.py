"""What the benchmarks share: peak memory of the running process, and running one phase of a
benchmark script in a fresh process (so each phase's peak memory is its own)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_bytes() -> int:
    """Max resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_phase(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run `script --phase ...` in a fresh Python and return the JSON it prints last."""
    done = subprocess.run([sys.executable, str(Path(script)), *args], check=True,
                          capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


GEMM_K = {1_000_000: 10_400, 10_000_000: 104_000}
"""k of the 16384 x 16384 x k GEMM that lowers to about that many instructions."""


def gemm_bundle(path: Path, size: int, inject: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Generate the benchmark GEMM of about `size` instructions (1M or 10M) at `path`."""
    from tracekit.workloads.generate import generate

    return generate("gemm", path, params={"m": 16384, "n": 16384, "k": GEMM_K[size]},
                    inject=list(inject))
