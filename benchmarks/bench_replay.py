"""Benchmark of `tracekit replay`: read, derive the graph, replay and summarise generated GEMM
traces of about 1M and 10M instructions.

    python benchmarks/bench_replay.py                 # 1M and 10M
    python benchmarks/bench_replay.py --sizes 1e6     # 1M only

Each measurement runs in a fresh process (peak memory is its own max RSS):
- compile: the first replay with an empty numba cache (the one-off cost after install);
- end to end with a warm cache: open, read, derive, replay, summary -- the CLI's work;
- the replay kernel alone, as instructions per second;
- baseline, in the same run at 1M: networkx's dag_longest_path_length over the same graph,
  built from the same edges with each edge weighted by its source's duration (the way existing
  trace analyzers compute critical paths), timed from the edge arrays to the answer.
Targets (issue 13, semaphores evaluated during the replay): end to end on 10M in <= 8 s, the
kernel >= 10M instructions/s, peak memory <= 4 GB. Each size ends with the machine's load
average, since wall time doubles when other work shares the CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import gemm_bundle, peak_bytes, run_phase


def phase(name: str, bundle: Path) -> dict[str, float]:
    import tracekit
    from tracekit.analysis.replay_report import summarize_replay
    from tracekit.replay.run import replay

    if name == "compile":
        from tracekit.trace.builder import TraceBuilder

        b = TraceBuilder("tiny")
        load = b.inst("dma.q0", "dma_load", bytes=4096)
        mm = b.inst("tensor", "matmul", flops=1 << 20)
        b.signal(load, 0)
        b.wait(mm, 0, 1)
        tiny = bundle.parent / "tiny"
        b.write(tiny, overwrite=True)
        start = time.perf_counter()
        replay(tracekit.open_trace(tiny))
        return {"seconds": time.perf_counter() - start}
    if name == "e2e":
        timings: dict[str, float] = {}
        start = time.perf_counter()
        trace = tracekit.open_trace(bundle)
        result = replay(trace, timings=timings)
        summarize_replay(result)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_bytes": peak_bytes(), "n": result.timeline.height,
                "edges": result.graph.edges, **{f"t_{k}": v for k, v in timings.items()}}
    if name == "networkx":
        import networkx as nx
        import numpy as np

        trace = tracekit.open_trace(bundle)
        result = replay(trace)
        graph, duration = result.graph, result.timeline["duration"].to_numpy()
        dst = np.repeat(np.arange(graph.nodes), np.diff(graph.ptr))
        src = graph.src
        start = time.perf_counter()
        g = nx.DiGraph()
        g.add_nodes_from(range(graph.nodes))
        g.add_weighted_edges_from(zip(src.tolist(), dst.tolist(),
                                      duration[src].tolist(), strict=True))
        nx.dag_longest_path_length(g)
        return {"seconds": time.perf_counter() - start, "peak_bytes": peak_bytes()}
    raise SystemExit(f"unknown phase {name}")


def _run(name: str, bundle: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    return run_phase(__file__, "--phase", name, "--bundle", str(bundle), env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7",
                        help="comma-separated instruction counts (1e6 and/or 1e7)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.bundle)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-replay-"))
    try:
        cache = folder / "numba-cache"
        compile_run = _run("compile", folder / "none", {**os.environ,
                                                        "NUMBA_CACHE_DIR": str(cache)})
        print(f"first replay with an empty numba cache (compile): "
              f"{compile_run['seconds']:.2f} s")
        for size in (int(float(s)) for s in args.sizes.split(",")):
            bundle = folder / f"gemm-{size}"
            gemm_bundle(bundle, size)
            _run("e2e", bundle)  # warms the package's own numba cache
            r = _run("e2e", bundle)
            n = int(r["n"])
            print(f"\n{n:,} instructions, {int(r['edges']):,} edges")
            print(f"  end to end   {r['seconds']:6.2f} s  {n / r['seconds']:>12,.0f} inst/s  "
                  f"peak {r['peak_bytes'] / 2**30:.2f} GiB  (open, read, derive, replay, "
                  f"summary)")
            stages = ", ".join(f"{k[2:]} {v:.2f} s" for k, v in r.items() if k.startswith("t_"))
            print(f"  stages       {stages}")
            print(f"  kernel       {r['t_kernel']:6.2f} s  {n / r['t_kernel']:>12,.0f} inst/s")
            if size <= 1_000_000:
                nx_run = _run("networkx", bundle)
                print(f"  baseline     {nx_run['seconds']:6.2f} s  "
                      f"{n / nx_run['seconds']:>12,.0f} inst/s  (networkx longest path "
                      f"only; {nx_run['seconds'] / r['seconds']:.1f}x our end to end)")
            if size >= 10_000_000:
                ok = (r["seconds"] <= 8, n / r["t_kernel"] >= 10e6, r["peak_bytes"] <= 4e9)
                print("  targets      " + ", ".join(
                    f"{what}: {'met' if met else 'MISSED'}" for what, met in
                    zip(("<= 8 s", ">= 10M inst/s kernel", "<= 4 GB"), ok, strict=True)))
            print(f"  machine      load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
                  f"CPUs")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
