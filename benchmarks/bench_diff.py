"""Benchmark of `tracekit diff`: two generated GEMMs of ~1M instructions, the candidate with a
slowed DMA queue.

    python benchmarks/bench_diff.py                  # ~1M instructions per trace

Each measurement in a fresh process. Baseline from the same run: one `tracekit analyze`-like
profile of a single trace without signatures (observed timeline, stalls and critical path),
the floor of a diff that must profile both runs. Target (issue 7): <= 10 s at 1M.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import gemm_bundle, peak_bytes, run_phase


def measure(name: str, base: Path, cand: Path) -> dict[str, float]:
    import tracekit
    from tracekit.analysis.diff import check_comparable, choose_source, diff, profile
    from tracekit.replay.machine import builtin_machine

    machine = builtin_machine()
    start = time.perf_counter()
    if name == "diff":
        traces = tracekit.open_trace(base), tracekit.open_trace(cand)
        check_comparable(*traces)
        source = choose_source(*traces, "auto")
        result = diff(*(profile(t, machine, source) for t in traces))
        found = result.delta
    else:
        found = profile(tracekit.open_trace(base), machine, "observed", findings=False).makespan
    return {"seconds": time.perf_counter() - start, "peak_bytes": peak_bytes(),
            "value": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cand", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(measure(args.phase, args.base, args.cand)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-diff-"))
    try:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            base = folder / f"base-{size}"
            cand = folder / f"cand-{size}"
            n = gemm_bundle(base, size).manifest.tables["instructions"].rows
            gemm_bundle(cand, size, inject=("slow-queue",))
            paths = ("--base", str(base), "--cand", str(cand))
            run_phase(__file__, "--phase", "diff", *paths)  # warm numba's cache
            ours = run_phase(__file__, "--phase", "diff", *paths)
            floor = run_phase(__file__, "--phase", "profile", *paths)
            print(f"\n2 x {n:,} instructions (candidate: one DMA queue slowed 4x)")
            print(f"  diff       {ours['seconds']:6.2f} s  {2 * n / ours['seconds']:>12,.0f} "
                  f"inst/s  peak {ours['peak_bytes'] / 2**30:.2f} GiB  (makespan change "
                  f"{int(ours['value']):+,} cycles)")
            print(f"  baseline   {floor['seconds']:6.2f} s  {n / floor['seconds']:>12,.0f} "
                  f"inst/s  peak {floor['peak_bytes'] / 2**30:.2f} GiB  (profile of one trace, "
                  f"no signatures)")
            if size <= 1_000_000:
                ok = ours["seconds"] <= 10
                print(f"  target     <= 10 s: {'met' if ok else 'MISSED'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
