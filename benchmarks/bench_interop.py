"""Benchmark of the Chrome/Perfetto interop: export a generated GEMM of about a million
instructions as trace event JSON, and import that JSON back as a bundle.

    python benchmarks/bench_interop.py                   # 1M instructions
    python benchmarks/bench_interop.py --size 1e7        # 10M
    python benchmarks/bench_interop.py --only kineto     # the Kineto import alone

Each phase runs in a fresh process, so its peak memory (max RSS) is its own. Next to each
tracekit phase the same run measures a baseline doing the least a plain-Python tool would:

    export       export_perfetto (observed timeline: slices, DMA counters, thread metadata)
                 vs. json.dumps of an equivalent list of event dicts (one per instruction,
                 built before the clock starts) to a file
    export-full  export_perfetto with --replay --critical-path (replay, observed and predicted
                 critical paths, twice the slices, flow arrows); no baseline
    import       convert_chrome of the export (parse, pair, nest, bind flows, write the bundle)
                 vs. json.load of the same file
    kineto       convert_chrome of a PyTorch-profiler-shaped trace of 1M events (nested CPU
                 ops, launches, kernels on two streams, ac2g flows, stream syncs) vs. json.load
                 of the same file. Targets (issue 20): at most 15 s and at most 3x the file's
                 size in memory. Peak memory is given against the file's size twice: the
                 whole process's, and beyond the peak of the same import of a 1,000-event
                 trace (the fixed cost of the libraries, numba's compiled passes, the Parquet
                 writer and the bundle's validation, which no input size changes).

Rates are instructions per second (the bundle's instruction count over the phase's time), events
per second for the Kineto import. Each measurement runs in a fresh process; the load average is
printed next to it (timings under load are noisy: repeat with --repeat and take the best).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import os
from pathlib import Path

from common import GEMM_K, gemm_bundle, peak_bytes, run_phase


def _events(bundle: Path) -> list[dict]:
    """The export's slice events as plain dicts: what a naive exporter would build."""
    import tracekit

    frame = tracekit.open_trace(bundle).read("instructions").sort("start", "id")
    engines = {name: tid for tid, name in enumerate(sorted(frame["engine"].cast(str).unique()),
                                                    start=1)}
    events = []
    for row in frame.iter_rows(named=True):
        args = {"id": row["id"], "engine": row["engine"], "seq": row["seq"]}
        for key in ("layer", "pc", "elements", "bytes", "flops"):
            if row[key] is not None:
                args[key] = row[key]
        events.append({"name": row["opcode"], "cat": "compute", "ph": "X", "ts": row["start"],
                       "dur": row["end"] - row["start"], "pid": 1,
                       "tid": engines[row["engine"]], "args": args})
    return events


def kineto_trace(path: Path, events: int) -> None:
    """A PyTorch profiler (Kineto) shaped trace of about `events` events, written as a
    stream: per step an aten op holding a launch (with its ac2g flow pair and its kernel on
    one of two streams), and every 50th step a stream synchronisation with its marker."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"schemaVersion": 1, "deviceProperties": [], "traceEvents": [\n')
        fh.write('{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": '
                 '"thread 1 (python)"}}')
        ts, corr, written = 0, 0, 1
        while written < events:
            corr += 1
            stream = 7 + 13 * (corr % 2)
            rows = [
                {"ph": "X", "cat": "cpu_op", "name": f"aten::op{corr % 97}", "pid": 1, "tid": 1,
                 "ts": ts, "dur": 9, "args": {"External id": corr}},
                {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                 "tid": 1, "ts": ts + 2, "dur": 4, "args": {"correlation": corr}},
                {"ph": "s", "id": corr, "pid": 1, "tid": 1, "ts": ts + 2, "cat": "ac2g",
                 "name": "ac2g"},
                {"ph": "X", "cat": "kernel", "name": f"kernel_{corr % 31}", "pid": 0,
                 "tid": stream, "ts": ts + 5, "dur": 6,
                 "args": {"correlation": corr, "stream": stream, "device": 0}},
                {"ph": "f", "id": corr, "pid": 0, "tid": stream, "ts": ts + 5, "cat": "ac2g",
                 "name": "ac2g", "bp": "e"}]
            if corr % 50 == 0:
                corr += 1
                rows += [
                    {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize",
                     "pid": 1, "tid": 1, "ts": ts + 10, "dur": 3, "args": {"correlation": corr}},
                    {"ph": "X", "cat": "cuda_sync", "name": "Stream Sync", "pid": 0,
                     "tid": stream, "ts": ts + 10, "dur": 3,
                     "args": {"correlation": corr, "stream": stream, "device": 0,
                              "cuda_sync_kind": "Stream Sync"}}]
            fh.write("".join(",\n" + json.dumps(r) for r in rows))
            written += len(rows)
            ts += 14
        fh.write("\n]}\n")


def phase(name: str, folder: Path, size: int) -> dict[str, float]:
    """Run one phase in this process and return its seconds and peak RSS. Each phase imports
    only what it uses: a json.load baseline is plain Python's."""
    bundle, exported = folder / "bundle", folder / "export.json"
    if name == "export-baseline":
        events = _events(bundle)
        start = time.perf_counter()
        with open(folder / "baseline.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"traceEvents": events}))
        seconds = time.perf_counter() - start
    elif name in ("export", "export-full"):
        import tracekit
        from tracekit.convert.perfetto import export_perfetto

        start = time.perf_counter()
        full = name == "export-full"
        result = export_perfetto(tracekit.open_trace(bundle),
                                 folder / ("full.json" if full else "export.json"),
                                 replay=full, critical_path=full)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_bytes": peak_bytes(), "events": result.events,
                "bytes": result.path.stat().st_size}
    elif name == "import":
        from tracekit.convert.chrome import convert_chrome

        start = time.perf_counter()
        convert_chrome(exported, folder / "imported", overwrite=True)
        seconds = time.perf_counter() - start
    elif name == "import-baseline":
        start = time.perf_counter()
        with open(exported, encoding="utf-8") as fh:
            json.load(fh)
        seconds = time.perf_counter() - start
    elif name in ("kineto", "kineto-tiny"):
        from tracekit.convert.chrome import convert_chrome

        source = folder / ("kineto.json" if name == "kineto" else "tiny.json")
        start = time.perf_counter()
        convert_chrome(source, folder / name, overwrite=True)
        seconds = time.perf_counter() - start
    elif name == "kineto-baseline":
        start = time.perf_counter()
        with open(folder / "kineto.json", encoding="utf-8") as fh:
            json.load(fh)
        seconds = time.perf_counter() - start
    elif name == "kineto-prepare":
        kineto_trace(folder / "kineto.json", size)
        kineto_trace(folder / "tiny.json", 1000)
        return {"seconds": 0.0, "peak_bytes": peak_bytes()}
    elif name == "prepare":
        gemm_bundle(bundle, size)
        return {"seconds": 0.0, "peak_bytes": peak_bytes()}
    else:
        raise SystemExit(f"unknown phase {name}")
    return {"seconds": seconds, "peak_bytes": peak_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=lambda s: int(float(s)), default=1_000_000,
                        choices=sorted(GEMM_K), help="about this many instructions")
    parser.add_argument("--only", choices=["gemm", "kineto"], help="run one part")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure the Kineto import this many times (best time shown)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.dir, args.size)))
        return

    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-interop-"))
    try:
        if args.only != "kineto":
            gemm_part(folder, args.size)
        if args.only != "gemm":
            kineto_part(folder, args.size, args.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def gemm_part(folder: Path, size: int) -> None:
    run_phase(__file__, "--phase", "prepare", "--dir", str(folder), "--size", str(size))
    import tracekit

    n = tracekit.open_trace(folder / "bundle").manifest.tables["instructions"].rows
    print(f"GEMM of {n:,} instructions; each phase in a fresh process")
    print(f"{'phase':<11} {'tracekit s':>10} {'inst/s':>12} {'peak MiB':>9}   "
          f"{'baseline s':>10} {'inst/s':>12} {'peak MiB':>9}  baseline")
    baselines = {"export": "json.dumps of a list of event dicts",
                 "export-full": None,
                 "import": "json.load of the exported file"}
    for name, what in baselines.items():
        ours = run_phase(__file__, "--phase", name, "--dir", str(folder))
        line = (f"{name:<11} {ours['seconds']:>10.2f} {n / ours['seconds']:>12,.0f} "
                f"{ours['peak_bytes'] / 2**20:>9,.0f}   ")
        if what is not None:
            base = run_phase(__file__, "--phase", f"{name}-baseline", "--dir", str(folder))
            line += (f"{base['seconds']:>10.2f} {n / base['seconds']:>12,.0f} "
                     f"{base['peak_bytes'] / 2**20:>9,.0f}  {what}")
        else:
            line += f"{'':>10} {'':>12} {'':>9}  (replay and critical paths included)"
        print(line + f"  (load {os.getloadavg()[0]:.1f})")
        if "events" in ours:
            print(f"{'':<11} {ours['events']:,} events, {ours['bytes'] / 2**20:,.0f} MiB")


def kineto_part(folder: Path, size: int, repeat: int) -> None:
    """The Kineto import of a trace of `size` events against json.load of the same file, with
    the targets of issue 20 (15 s, 3x the file's size in memory)."""
    run_phase(__file__, "--phase", "kineto-prepare", "--dir", str(folder), "--size", str(size))
    file_bytes = (folder / "kineto.json").stat().st_size
    mib = 2**20
    print(f"\nKineto-shaped trace of {size:,} events, {file_bytes / mib:,.0f} MiB of JSON; "
          f"each measurement in a fresh process, on {os.cpu_count()} CPUs")
    print(f"{'measurement':<26} {'s':>7} {'events/s':>11} {'peak MiB':>9} {'x file':>7} "
          f"{'load':>5}")
    tiny = run_phase(__file__, "--phase", "kineto-tiny", "--dir", str(folder))
    runs = []
    for _ in range(max(repeat, 1)):
        for name in ("kineto", "kineto-baseline"):
            load = os.getloadavg()[0]
            got = run_phase(__file__, "--phase", name, "--dir", str(folder))
            runs.append((name, got))
            what = ("convert chrome (Kineto)" if name == "kineto"
                    else "json.load (baseline)")
            print(f"{what:<26} {got['seconds']:>7.2f} {size / got['seconds']:>11,.0f} "
                  f"{got['peak_bytes'] / mib:>9,.0f} {got['peak_bytes'] / file_bytes:>7.2f} "
                  f"{load:>5.1f}")
    print(f"{'import of 1,000 events':<26} {tiny['seconds']:>7.2f} {'':>11} "
          f"{tiny['peak_bytes'] / mib:>9,.0f} {'':>7} {'':>5}  (the fixed cost)")
    best = min((got for name, got in runs if name == "kineto"), key=lambda g: g["seconds"])
    peak = max(got["peak_bytes"] for name, got in runs if name == "kineto")
    beyond = (peak - tiny["peak_bytes"]) / file_bytes
    print(f"target: at most 15 s (best {best['seconds']:.2f} s: "
          f"{'met' if best['seconds'] <= 15 else 'NOT met'}); at most 3x the file in memory "
          f"(peak {peak / file_bytes:.2f}x the file in all, {beyond:.2f}x beyond the fixed "
          f"cost: {'met' if beyond <= 3 else 'NOT met'} beyond it, "
          f"{'met' if peak <= 3 * file_bytes else 'NOT met'} in all)")


if __name__ == "__main__":
    main()
