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
