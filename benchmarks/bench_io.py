"""Benchmark of the trace bundle's I/O: write, open and validate a synthetic bundle.

    python benchmarks/bench_io.py                      # 10M instructions, 16M deps, 5M sems
    python benchmarks/bench_io.py --instructions 1e6   # smaller

Each phase runs in a fresh process, so its peak memory (max RSS) is its own. Next to each
tracekit phase the same process measures a baseline that does the least possible work on the
same data, so the overhead of tracekit is visible on any machine:

    write     write_trace (conform, dictionary-encode, hash, manifest, atomic rename)
              vs. pyarrow.parquet.write_table of the same tables with default options
    open      open_trace + collecting the instructions frame
              vs. polars.read_parquet of instructions.parquet
    validate  validate() with every rule
              vs. polars.read_parquet of every table (the I/O any check needs)

Rates are instructions per second (the bundle's instruction count over the phase's time).
Targets (issue 2, on a 2-core machine): validate 10M in <= 5 s and <= 3 GB; write in <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from common import peak_bytes, run_phase

ENGINES = ["tensor", "vector", "scalar", "gpsimd", "sync"] + [f"dma.q{i}" for i in range(8)]
OPCODES = {"tensor": ["matmul", "transpose"], "vector": ["tensor_tensor", "reduce", "copy"],
           "scalar": ["activation", "exp"], "gpsimd": ["iota", "select"], "sync": ["barrier"]}


def _categorical(codes: np.ndarray, names: list[str]) -> pl.Series:
    return pl.from_arrow(pa.DictionaryArray.from_arrays(codes.astype(np.int32), names))


def synthetic_tables(n: int, n_deps: int, n_sems: int, seed: int = 0) -> dict[str, pl.DataFrame]:
    """A valid bundle's tables with realistic shapes, built with NumPy in a few seconds."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    engine = rng.choice(len(ENGINES), size=n, p=[0.2, 0.15, 0.1, 0.05, 0.02] + [0.06] * 8)
    order = np.argsort(engine, kind="stable")
    counts = np.bincount(engine, minlength=len(ENGINES))
    seq = np.empty(n, dtype=np.int64)
    seq[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    is_dma = engine >= 5
    op_names = sorted({op for ops in OPCODES.values() for op in ops} | {"dma_load", "dma_store"})
    op_of = {name: i for i, name in enumerate(op_names)}
    opcode = np.empty(n, dtype=np.int32)
    for e, name in enumerate(ENGINES):
        choices = [op_of[o] for o in OPCODES.get(name, ["dma_load", "dma_store"])]
        rows = engine == e
        opcode[rows] = rng.choice(choices, size=int(rows.sum()))
    start = ids * 3 + rng.integers(0, 3, n)
    duration = rng.integers(1, 64, n)
    size = rng.integers(64, 1 << 16, n)
    instructions = pl.DataFrame({
        "id": ids,
        "engine": _categorical(engine, ENGINES),
        "seq": seq,
        "opcode": _categorical(opcode, op_names),
        "start": start,
        "end": start + duration,
        "elements": pl.Series(np.where(is_dma, 0, size)).set(pl.Series(is_dma), None),
        "bytes": pl.Series(size * 2).set(pl.Series(~is_dma), None),
        "flops": pl.Series(np.where(engine == 0, size * 256, 0)),
        "layer": _categorical((ids * 64 // max(n, 1)).astype(np.int32),
                              [f"layer{i:02d}" for i in range(64)]),
        "pc": ids % 100_000,
    })
    dst = np.sort(rng.integers(1, n, n_deps))
    src = np.maximum(dst - rng.integers(1, 2048, n_deps), 0)
    deps = pl.DataFrame({
        "src": src, "dst": dst,
        "kind": _categorical(rng.choice(3, size=n_deps, p=[0.6, 0.3, 0.1]),
                             ["order", "data", "memory"]),
    })
    inst = np.sort(rng.integers(0, n, n_sems))
    semaphores = pl.DataFrame({
        "inst": inst,
        "sem": rng.integers(0, 32, n_sems),
        "op": _categorical((np.arange(n_sems) % 2).astype(np.int32), ["wait", "signal"]),
        "value": np.ones(n_sems, dtype=np.int64),
    })
    return {"instructions": instructions, "deps": deps, "semaphores": semaphores}



def phase(name: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run one phase in this process and return its seconds and peak RSS."""
    import pyarrow.parquet as pq

    import tracekit

    bundle = folder / "bundle"
    if name in ("write", "write-baseline"):
        tables = synthetic_tables(args.instructions, args.deps, args.sems)
        start = time.perf_counter()
        if name == "write":
            tracekit.write_trace(bundle, tables.pop("instructions"), **tables,
                                 workload="synthetic", overwrite=True, validate=False)
        else:
            out = folder / "baseline"
            out.mkdir(exist_ok=True)
            for table, frame in tables.items():
                pq.write_table(frame.to_arrow(), out / f"{table}.parquet")
        seconds = time.perf_counter() - start
    elif name == "open":
        start = time.perf_counter()
        trace = tracekit.open_trace(bundle)
        trace.instructions.collect()
        seconds = time.perf_counter() - start
    elif name == "open-baseline":
        start = time.perf_counter()
        pl.read_parquet(bundle / "instructions.parquet")
        seconds = time.perf_counter() - start
    elif name == "validate":
        start = time.perf_counter()
        report = tracekit.validate(bundle)
        seconds = time.perf_counter() - start
        if report.findings:
            raise SystemExit(f"synthetic bundle has findings: {report.findings}")
    elif name == "validate-baseline":
        start = time.perf_counter()
        for table in ("instructions", "deps", "semaphores"):
            pl.read_parquet(bundle / f"{table}.parquet")
        seconds = time.perf_counter() - start
    else:
        raise SystemExit(f"unknown phase {name}")
    return {"seconds": seconds, "peak_bytes": peak_bytes()}


def _run_phase(name: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    return run_phase(__file__, "--phase", name, "--dir", str(folder), "--instructions",
                     str(args.instructions), "--deps", str(args.deps), "--sems", str(args.sems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=lambda s: int(float(s)), default=10_000_000)
    parser.add_argument("--deps", type=lambda s: int(float(s)), default=None)
    parser.add_argument("--sems", type=lambda s: int(float(s)), default=None)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.deps = args.deps if args.deps is not None else args.instructions * 16 // 10
    args.sems = args.sems if args.sems is not None else args.instructions // 2
    if args.phase:
        print(json.dumps(phase(args.phase, args.dir, args)))
        return

    folder = Path(tempfile.mkdtemp(prefix="tracekit-bench-io-"))
    try:
        print(f"bundle: {args.instructions:,} instructions, {args.deps:,} deps, "
              f"{args.sems:,} semaphore rows; each phase in a fresh process")
        header = (f"{'phase':<9} {'tracekit s':>10} {'inst/s':>12} {'peak MiB':>9}   "
                  f"{'baseline s':>10} {'inst/s':>12} {'peak MiB':>9}  baseline")
        print(header)
        baselines = {"write": "pyarrow write_table, default options",
                     "open": "polars read_parquet(instructions)",
                     "validate": "polars read_parquet(every table)"}
        results = {}
        for name, what in baselines.items():
            ours = _run_phase(name, folder, args)
            base = _run_phase(f"{name}-baseline", folder, args)
            results[name] = ours
            n = args.instructions
            print(f"{name:<9} {ours['seconds']:>10.2f} {n / ours['seconds']:>12,.0f} "
                  f"{ours['peak_bytes'] / 2**20:>9,.0f}   {base['seconds']:>10.2f} "
                  f"{n / base['seconds']:>12,.0f} {base['peak_bytes'] / 2**20:>9,.0f}  {what}")
        size = sum(f.stat().st_size for f in (folder / "bundle").iterdir())
        print(f"bundle size on disk: {size / 2**20:,.0f} MiB")
        if args.instructions == 10_000_000:
            v, w = results["validate"], results["write"]
            print(f"targets: validate <= 5 s: {v['seconds']:.2f} s "
                  f"{'met' if v['seconds'] <= 5 else 'MISSED'}; validate <= 3 GB peak: "
                  f"{v['peak_bytes'] / 2**30:.2f} GB "
                  f"{'met' if v['peak_bytes'] <= 3 * 2**30 else 'MISSED'}; write <= 5 s: "
                  f"{w['seconds']:.2f} s {'met' if w['seconds'] <= 5 else 'MISSED'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
