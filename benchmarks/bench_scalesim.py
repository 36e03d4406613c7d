"""Benchmark of `tracekit convert scalesim`: import a large SCALE-Sim run.

    python benchmarks/bench_scalesim.py                  # 48 layers of a test run, ~270k steps
    python benchmarks/bench_scalesim.py --layers 200     # larger
    python benchmarks/bench_scalesim.py --run RUN_DIR    # a SCALE-Sim run of your own

By default the run is made from one of the test runs (tests/data/scalesim/runs.tar.xz,
gemm80x32x128_8x8_os_user_bw3_sram2-2-2: an 8x8 output-stationary array that stalls on reads
and writes) by giving its layer to SCALE-Sim's output N times: N identical layers, as SCALE-Sim
writes them for a topology that repeats one GEMM. Each phase runs in a fresh process, so its
peak memory (max RSS) is its own:

    convert   convert_scalesim: read the config, topology, report and the six traces of every
              layer, rebuild SCALE-Sim's events, write the bundle (validated)
    baseline  polars.read_csv of the same trace files (the least any importer must do)

Rates: instructions written per second, and trace rows (array steps plus DRAM rows) read per
second; the baseline's instruction rate is the same instruction count over its time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import polars as pl
from common import peak_bytes, run_phase

ARCHIVE = Path(__file__).resolve().parents[1] / "tests" / "data" / "scalesim" / "runs.tar.xz"
SOURCE = "gemm80x32x128_8x8_os_user_bw3_sram2-2-2"


def build_run(folder: Path, layers: int) -> Path:
    """A SCALE-Sim run of `layers` copies of SOURCE's layer, with its inputs."""
    with tarfile.open(ARCHIVE) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"{SOURCE}/")]
        tar.extractall(folder / "source", members=members, filter="data")
    source = folder / "source" / SOURCE
    run = folder / f"{SOURCE}_x{layers}"
    (run / "inputs").mkdir(parents=True)
    topology = (source / "inputs" / f"{SOURCE}.csv").read_text().splitlines()
    (run / "inputs" / f"{run.name}.csv").write_text(
        "\n".join([topology[0]] + [topology[1].replace("L0", f"L{i}", 1)
                                   for i in range(layers)]) + "\n")
    config = (source / "inputs" / f"{SOURCE}.cfg").read_text()
    (run / "inputs" / f"{run.name}.cfg").write_text(config.replace(SOURCE, run.name))
    report = (source / "COMPUTE_REPORT.csv").read_text().splitlines()
    (run / "COMPUTE_REPORT.csv").write_text(
        "\n".join([report[0]] + [report[1].replace("0,", f"{i},", 1) for i in range(layers)])
        + "\n")
    for i in range(layers):
        shutil.copytree(source / "layer0", run / f"layer{i}")
    return run


def trace_files(run: Path) -> list[Path]:
    return sorted(run.glob("layer*/*_TRACE.csv"))


def phase(name: str, run: Path, out: Path) -> dict[str, float]:
    """Run one phase in this process: its seconds, peak RSS, and what it made."""
    if name == "convert":
        from tracekit.convert.scalesim import convert_scalesim

        start = time.perf_counter()
        result = convert_scalesim(run, out, overwrite=True)
        seconds = time.perf_counter() - start
        made = {"instructions": result.trace.manifest.tables["instructions"].rows,
                "steps": sum(s.steps for s in result.layers)}
    elif name == "baseline":
        start = time.perf_counter()
        rows = 0
        for path in trace_files(run):
            rows += pl.read_csv(path, has_header=False).height
        seconds = time.perf_counter() - start
        made = {"rows": rows}
    else:
        raise SystemExit(f"unknown phase {name}")
    return {"seconds": seconds, "peak_bytes": peak_bytes(), **made}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--run", type=Path, help="a SCALE-Sim run folder to import instead")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.run, args.out)))
        return

    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-scalesim-"))
    try:
        run = args.run or build_run(folder, args.layers)
        files = trace_files(run)
        size = sum(f.stat().st_size for f in files)
        ours = run_phase(__file__, "--phase", "convert", "--run", str(run), "--out",
                         str(folder / "bundle"))
        base = run_phase(__file__, "--phase", "baseline", "--run", str(run))
        n, rows = ours["instructions"], base["rows"]
        print(f"run: {run.name}: {ours['steps']:,} array steps, {rows:,} trace rows in "
              f"{len(files)} files ({size / 2**20:,.0f} MiB of CSV) -> {n:,} instructions; "
              f"each phase in a fresh process")
        print(f"{'phase':<9} {'seconds':>8} {'inst/s':>11} {'rows/s':>12} {'peak MiB':>9}")
        for label, result in (("convert", ours), ("baseline", base)):
            print(f"{label:<9} {result['seconds']:>8.2f} {n / result['seconds']:>11,.0f} "
                  f"{rows / result['seconds']:>12,.0f} {result['peak_bytes'] / 2**20:>9,.0f}")
        print("baseline: polars read_csv of the same trace files")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
