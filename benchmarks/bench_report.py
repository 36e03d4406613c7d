"""Benchmark of `tracekit report`: the HTML page of generated GEMM traces of about 1M and 10M
instructions, against `tracekit analyze --format json` of the same trace in the same run.

    python benchmarks/bench_report.py                 # 1M and 10M
    python benchmarks/bench_report.py --sizes 1e6     # 1M only

Each command runs in a fresh process (peak memory is its own max RSS), after one warm-up run
that fills numba's cache:
- baseline: `tracekit analyze TRACE --format json` (the report's figures are analyze's, so its
  own cost is the difference);
- report: `tracekit report TRACE -o page.html` (analyze, the figures over time, the engine
  timeline binned past 200,000 instructions, one more replay for model against observed on
  a timed trace, and the page).
Targets (issue 16): at 10M the report within 30 s and 1 GB of the analysis and at most 15 MB
of HTML; at 1M within 5 s of the analysis. Each size ends with the machine's load average,
since wall time doubles when other work shares the CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import gemm_bundle, peak_bytes, run_phase


def phase(name: str, bundle: Path, out: Path) -> dict[str, float]:
    """One tracekit command in this process, its stdout discarded."""
    from tracekit.cli.app import app

    args = {"analyze": ["-q", "analyze", str(bundle), "-f", "json"],
            "report": ["-q", "report", str(bundle), "-o", str(out), "--force"]}[name]
    real = sys.stdout
    start = time.perf_counter()
    with open(os.devnull, "w") as sink:
        sys.stdout = sink
        try:
            app(args, standalone_mode=False)
        finally:
            sys.stdout = real
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_bytes": peak_bytes(),
            "html_bytes": out.stat().st_size if name == "report" else 0}


def _run(name: str, bundle: Path, out: Path) -> dict[str, float]:
    return run_phase(__file__, "--phase", name, "--bundle", str(bundle), "--out", str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7",
                        help="comma-separated instruction counts (1e6 and/or 1e7)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.bundle, args.out)))
        return
    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-report-"))
    try:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            bundle, page = folder / f"gemm-{size}", folder / f"gemm-{size}.html"
            gemm_bundle(bundle, size)
            _run("report", bundle, page)  # warms numba's cache
            base = _run("analyze", bundle, page)
            r = _run("report", bundle, page)
            over, more = r["seconds"] - base["seconds"], r["peak_bytes"] - base["peak_bytes"]
            print(f"\n{size:,} instructions (GEMM, timed: the observed timeline)")
            print(f"  baseline     {base['seconds']:6.2f} s  {size / base['seconds']:>12,.0f} "
                  f"inst/s  peak {base['peak_bytes'] / 2**30:.2f} GiB  (analyze -f json)")
            print(f"  report       {r['seconds']:6.2f} s  {size / r['seconds']:>12,.0f} inst/s  "
                  f"peak {r['peak_bytes'] / 2**30:.2f} GiB  HTML {r['html_bytes'] / 2**20:.1f} "
                  f"MiB")
            print(f"  over analyze {over:+6.2f} s  peak {more / 2**30:+.2f} GiB")
            limit = 30 if size >= 10_000_000 else 5
            ok = [over <= limit, *((more <= 1e9, r["html_bytes"] <= 15e6)
                                   if size >= 10_000_000 else ())]
            what = [f"<= {limit} s over analyze",
                    *(("<= 1 GB over analyze", "<= 15 MB HTML") if size >= 10_000_000 else ())]
            print("  targets      " + ", ".join(f"{w}: {'met' if m else 'MISSED'}"
                                              for w, m in zip(what, ok, strict=True)))
            print(f"  machine      load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
                  f"CPUs")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
