"""Benchmark of `tracekit analyze`'s core and of `tracekit sensitivity`.

    python benchmarks/bench_analyze.py                 # analyze at 1M and 10M, sensitivity at 1M

Each measurement in a fresh process (peak memory is its own):
- analyze core: open, replay, stall accounting, critical path and slack (what `tracekit
  analyze` computes before the sensitivity ranking) on generated GEMMs;
- sensitivity at 1M: one replay per engine, opcode, layer and bandwidth on one derived graph;
- baseline, same run: the replay alone (`tracekit replay`'s work), so the analyses' own cost
  is the difference.
Targets (issue 5): analyze on 10M in <= 15 s and <= 5 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import gemm_bundle, peak_bytes, run_phase


def phase(name: str, bundle: Path) -> dict[str, float]:
    import tracekit
    from tracekit.analysis.critical_path import critical_path
    from tracekit.analysis.stalls import stall_table
    from tracekit.analysis.timelines import Source, timeline
    from tracekit.analysis.whatif import sensitivity
    from tracekit.replay.machine import builtin_machine
    from tracekit.replay.run import replay

    machine = builtin_machine()
    start = time.perf_counter()
    trace = tracekit.open_trace(bundle)
    out: dict[str, float] = {}
    if name == "analyze":
        t = timeline(trace, machine, Source.REPLAYED)
        out["replay"] = time.perf_counter() - start
        mark = time.perf_counter()
        stall_table(t.frame)
        out["stalls"] = time.perf_counter() - mark
        mark = time.perf_counter()
        critical_path(t.frame, t.graph, t.kind_latency)
        out["critical_path"] = time.perf_counter() - mark
        out["n"] = t.frame.height
    elif name == "replay":
        out["n"] = replay(trace, machine).timeline.height
    elif name == "sensitivity":
        out["rows"] = sensitivity(trace, machine).height
    out["seconds"] = time.perf_counter() - start
    out["peak_bytes"] = peak_bytes()
    return out


def _run(name: str, bundle: Path) -> dict[str, float]:
    return run_phase(__file__, "--phase", name, "--bundle", str(bundle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.bundle)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-analyze-"))
    try:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            bundle = folder / f"gemm-{size}"
            gemm_bundle(bundle, size)
            _run("replay", bundle)  # warm the numba cache
            base = _run("replay", bundle)
            r = _run("analyze", bundle)
            n = int(r["n"])
            print(f"\n{n:,} instructions")
            print(f"  analyze      {r['seconds']:6.2f} s  {n / r['seconds']:>12,.0f} inst/s  "
                  f"peak {r['peak_bytes'] / 2**30:.2f} GiB  (replay {r['replay']:.2f} s, "
                  f"stalls {r['stalls']:.2f} s, critical path + slack "
                  f"{r['critical_path']:.2f} s)")
            print(f"  baseline     {base['seconds']:6.2f} s  {n / base['seconds']:>12,.0f} "
                  f"inst/s  peak {base['peak_bytes'] / 2**30:.2f} GiB  (replay alone)")
            if size <= 1_000_000:
                s = _run("sensitivity", bundle)
                print(f"  sensitivity  {s['seconds']:6.2f} s  for {int(s['rows'])} replays "
                      f"({s['seconds'] / max(s['rows'], 1):.2f} s each)  peak "
                      f"{s['peak_bytes'] / 2**30:.2f} GiB")
            if size >= 10_000_000:
                ok = r["seconds"] <= 15 and r["peak_bytes"] <= 5e9
                print(f"  target       <= 15 s and <= 5 GB: {'met' if ok else 'MISSED'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
