"""Benchmark of the workload generator: lower, time and write a GEMM of about 10M instructions.

    python benchmarks/bench_generate.py                    # ~10M instructions
    python benchmarks/bench_generate.py --k 12800          # ~1M

Runs in a fresh process per measurement so that peak memory (max RSS) is the generator's own.
Baseline, measured in the same run on the same machine: writing the finished bundle's tables
again with plain pyarrow (read back from the bundle, written with default options) -- the floor
of producing that much Parquet at all. Target (issue 3): 10M instructions with their semaphore
and memory rows in <= 60 s and <= 4 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import peak_bytes, run_phase


def measure(name: str, folder: Path, k: int) -> dict[str, float]:
    import pyarrow.parquet as pq

    from tracekit.workloads.generate import generate

    bundle = folder / "bundle"
    start = time.perf_counter()
    if name == "generate":
        trace = generate("gemm", bundle, params={"m": 16384, "n": 16384, "k": k},
                         overwrite=True)
        rows = {t: e.rows for t, e in trace.manifest.tables.items()}
    else:
        tables = {t: pq.read_table(bundle / f"{t}.parquet")
                  for t in ("instructions", "semaphores", "memory")}
        start = time.perf_counter()
        for t, table in tables.items():
            pq.write_table(table, folder / f"baseline-{t}.parquet")
        rows = {t: table.num_rows for t, table in tables.items()}
    return {"seconds": time.perf_counter() - start, "peak_bytes": peak_bytes(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=104_000,
                        help="inner dimension of the 16384 x 16384 x K GEMM (104000: ~10M)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(measure(args.phase, args.dir, args.k)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-gen-"))
    try:
        results = {}
        for phase in ("generate", "baseline"):
            results[phase] = run_phase(__file__, "--phase", phase, "--dir", str(folder),
                                       "--k", str(args.k))
        rows = results["generate"]["rows"]
        n = rows["instructions"]
        print(f"gemm 16384 x 16384 x {args.k}: {n:,} instructions, "
              f"{rows['semaphores']:,} semaphore rows, {rows['memory']:,} memory rows")
        for phase, what in (("generate", "lower + time + write + validate"),
                            ("baseline", "pyarrow write_table of the same tables")):
            r = results[phase]
            print(f"{phase:<9} {r['seconds']:>7.2f} s  {n / r['seconds']:>12,.0f} inst/s  "
                  f"peak {r['peak_bytes'] / 2**30:5.2f} GiB  ({what})")
        g = results["generate"]
        if n >= 9_000_000:
            print(f"target <= 60 s: {'met' if g['seconds'] <= 60 else 'MISSED'}; "
                  f"<= 4 GB: {'met' if g['peak_bytes'] <= 4e9 else 'MISSED'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
