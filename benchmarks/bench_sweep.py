"""Benchmark of `tracekit sweep`: 100 grid points (10 HBM bandwidths x 10 tensor-engine
duration factors) on a generated GEMM of about 1M instructions.

    python benchmarks/bench_sweep.py                  # 2 workers, the issue's target
    python benchmarks/bench_sweep.py --workers 1      # in one process

Each measurement runs in a fresh process:
- the sweep: `tracekit.sweep` as the command runs it (validate, prepare once per worker,
  replay every point, tabulate), with the Parquet table written; peak memory of the main
  process and of the largest worker;
- baseline, in the same run: one `tracekit whatif` process with one change, timed as a whole
  process (start-up, validation, read, derive, two replays), times 100: what 100 separate
  what-if runs would cost.
Target (issue 17): at most 60 s on 2 cores. The load average is printed before and after,
since the machine is shared and wall time grows with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import gemm_bundle, peak_bytes, run_phase

HBM = "hbm_bandwidth=48,64,96,128,160,192,256,320,384,512"
TENSOR = "engine=tensor:0.25,0.4,0.5,0.6,0.75,0.9,1,1.25,1.5,2"


def phase(bundle: Path, workers: int) -> dict[str, float]:
    import tracekit

    out = bundle.parent / "sweep.parquet"
    start = time.perf_counter()
    report = tracekit.sweep(bundle, [HBM, TENSOR], workers=workers, output=out,
                            overwrite=True)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"seconds": seconds, "points": report.table.height, "peak_bytes": peak_bytes(),
            "worker_peak_bytes": children, "matters_most": report.matters_most,
            "best": int(report.best["makespan"][0])}


def whatif_seconds(bundle: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tracekit", "--quiet", "whatif", str(bundle),
                    "--scale", "engine=tensor:0.5", "--set", "hbm_bandwidth=384",
                    "--format", "json"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.bundle, args.workers)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-sweep-"))
    try:
        bundle = folder / "gemm-1M"
        gemm_bundle(bundle, 1_000_000)
        whatif_seconds(bundle)  # warms numba's cache and the file cache
        load_before = os.getloadavg()[0]
        one = whatif_seconds(bundle)
        env = {**os.environ, "TRACEKIT_QUIET": "1"}
        r = run_phase(__file__, "--phase", "--bundle", str(bundle), "--workers",
                      str(args.workers), env=env)
        load_after = os.getloadavg()[0]
        points = int(r["points"])
        print(f"sweep of {points} points on a 1M-instruction GEMM, {args.workers} worker(s)")
        print(f"  sweep        {r['seconds']:6.1f} s  {points / r['seconds']:6.2f} points/s  "
              f"peak {r['peak_bytes'] / 2**30:.2f} GiB main, "
              f"{r['worker_peak_bytes'] / 2**30:.2f} GiB largest worker")
        print(f"  baseline     {one * points:6.1f} s  {1 / one:6.2f} points/s  (one `tracekit "
              f"whatif` process: {one:.2f} s, times {points}; the sweep is "
              f"{one * points / r['seconds']:.1f}x faster)")
        print(f"  result       best makespan {r['best']:,} cycles; matters most: "
              f"{r['matters_most']}")
        print(f"  target       <= 60 s: {'met' if r['seconds'] <= 60 else 'MISSED'}")
        print(f"  machine      load average {load_before:.1f} before, {load_after:.1f} after, "
              f"on {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
