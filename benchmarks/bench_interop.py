"""Benchmark of the Chrome/Perfetto interop: export a generated GEMM of about a million
instructions as trace event JSON, and import that JSON back as a bundle.

    python benchmarks/bench_interop.py                   # 1M instructions
    python benchmarks/bench_interop.py --size 1e7        # 10M

Each phase runs in a fresh process, so its peak memory (max RSS) is its own. Next to each
tracekit phase the same run measures a baseline doing the least a plain-Python tool would:

    export       export_perfetto (observed timeline: slices, DMA counters, thread metadata)
                 vs. json.dumps of an equivalent list of event dicts (one per instruction,
                 built before the clock starts) to a file
    export-full  export_perfetto with --replay --critical-path (replay, observed and predicted
                 critical paths, twice the slices, flow arrows); no baseline
    import       convert_chrome of the export (parse, pair, nest, bind flows, write the bundle)
                 vs. json.load of the same file

Rates are instructions per second (the bundle's instruction count over the phase's time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
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


def phase(name: str, folder: Path, size: int) -> dict[str, float]:
    """Run one phase in this process and return its seconds and peak RSS."""
    import tracekit
    from tracekit.convert.chrome import convert_chrome
    from tracekit.convert.perfetto import export_perfetto

    bundle, exported = folder / "bundle", folder / "export.json"
    if name == "export-baseline":
        events = _events(bundle)
        start = time.perf_counter()
        with open(folder / "baseline.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"traceEvents": events}))
        seconds = time.perf_counter() - start
    elif name in ("export", "export-full"):
        start = time.perf_counter()
        full = name == "export-full"
        result = export_perfetto(tracekit.open_trace(bundle),
                                 folder / ("full.json" if full else "export.json"),
                                 replay=full, critical_path=full)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_bytes": peak_bytes(), "events": result.events,
                "bytes": result.path.stat().st_size}
    elif name == "import":
        start = time.perf_counter()
        convert_chrome(exported, folder / "imported", overwrite=True)
        seconds = time.perf_counter() - start
    elif name == "import-baseline":
        start = time.perf_counter()
        with open(exported, encoding="utf-8") as fh:
            json.load(fh)
        seconds = time.perf_counter() - start
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
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.dir, args.size)))
        return

    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-interop-"))
    try:
        run_phase(__file__, "--phase", "prepare", "--dir", str(folder), "--size",
                  str(args.size))
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
            print(line)
            if "events" in ours:
                print(f"{'':<11} {ours['events']:,} events, {ours['bytes'] / 2**20:,.0f} MiB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
