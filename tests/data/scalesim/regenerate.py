"""Rebuild runs.tar.xz, the SCALE-Sim runs the SCALE-Sim import is tested on, by running
SCALE-Sim again on each run's own inputs/ (and on new runs given with --add).

SCALE-Sim is not a tracekit dependency; install it in a virtual environment of its own:

    python3 -m venv /tmp/scalesim && /tmp/scalesim/bin/pip install scalesim==3.0.0 'numpy<2.4'
    python tests/data/scalesim/regenerate.py --scalesim-python /tmp/scalesim/bin/python \\
        [--add 64,48,80,16,16,ws,user,4,16,16,16 ...] [--pack FOLDER ...]

A new run (--add M,N,K,ROWS,COLS,DATAFLOW,user|calc,BANDWIDTH,IFMAP_KB,FILTER_KB,OFMAP_KB) gets
the config of the reference runs in ../shared/external/scalesim with those values, and a name
in their scheme. --pack adds run folders as they are (each with its inputs/). SCALE-Sim is
deterministic: a rebuilt run must report what it reported before, or the script stops. The
archive is written with sorted names, zero times and owners, so equal runs give equal bytes.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE / "runs.tar.xz"
LAYOUT = HERE / "scalesim_layout.csv"
KEEP = ("COMPUTE_REPORT.csv", "BANDWIDTH_REPORT.csv", "DETAILED_ACCESS_REPORT.csv")

CONFIG = """[general]
run_name = {name}

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:   {ifmap_kb}
FilterSramSzkB:  {filter_kb}
OfmapSramSzkB:   {ofmap_kb}
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : {bandwidth}
Dataflow : {dataflow}
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""


def new_run(spec: str, into: Path) -> Path:
    """A run folder holding only inputs/, for SPEC."""
    m, n, k, rows, cols, dataflow, mode, bandwidth, ifmap_kb, filter_kb, ofmap_kb = \
        spec.split(",")
    name = f"gemm{m}x{n}x{k}_{rows}x{cols}_{dataflow}_{mode}" + \
        (f"_bw{bandwidth}" if mode == "user" else "")
    if (ifmap_kb, filter_kb, ofmap_kb) != ("16", "16", "16"):
        name += f"_sram{ifmap_kb}-{filter_kb}-{ofmap_kb}"
    run = into / name
    (run / "inputs").mkdir(parents=True)
    (run / "inputs" / f"{name}.cfg").write_text(CONFIG.format(
        name=name, rows=rows, cols=cols, ifmap_kb=ifmap_kb, filter_kb=filter_kb,
        ofmap_kb=ofmap_kb, bandwidth=bandwidth, dataflow=dataflow, mode=mode.upper()))
    (run / "inputs" / f"{name}.csv").write_text(f"Layer Name, M, N, K,\nL0, {m}, {n}, {k},\n")
    return run


def simulate(run: Path, python: str) -> None:
    """Run SCALE-Sim on run/inputs and put its reports and traces in run."""
    config = next((run / "inputs").glob("*.cfg"))
    topology = next((run / "inputs").glob("*.csv"))
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "layouts" / "conv_nets").mkdir(parents=True)
        shutil.copy(LAYOUT, Path(work) / "layouts" / "conv_nets" / "test.csv")
        subprocess.run([python, "-m", "scalesim.scale", "-c", str(config), "-t", str(topology),
                        "-i", "gemm", "-p", "out"], cwd=work, check=True, capture_output=True)
        out = next((Path(work) / "out").iterdir())
        before = (run / "COMPUTE_REPORT.csv").read_text() if \
            (run / "COMPUTE_REPORT.csv").exists() else None
        if before is not None and before != (out / "COMPUTE_REPORT.csv").read_text():
            sys.exit(f"{run.name}: SCALE-Sim now reports something else; not replacing it.")
        for old in run.glob("layer*"):
            shutil.rmtree(old)
        for item in out.iterdir():
            if item.is_dir() and item.name.startswith("layer"):
                shutil.copytree(item, run / item.name)
            elif item.name in KEEP:
                shutil.copy(item, run / item.name)


def pack(runs: Path, archive: Path) -> None:
    """Write every run folder under `runs` into `archive`, byte-reproducibly."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(runs.rglob("*")):
            if path.is_file():
                info = tarfile.TarInfo(path.relative_to(runs).as_posix())
                data = path.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    import lzma
    archive.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scalesim-python", help="Python of a venv with scalesim==3.0.0")
    parser.add_argument("--add", action="append", default=[], help="a new run's SPEC")
    parser.add_argument("--pack", action="append", default=[], type=Path,
                        help="a run folder (with inputs/) to add as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        if ARCHIVE.exists():
            with tarfile.open(ARCHIVE) as tar:
                tar.extractall(runs, filter="data")
        for folder in args.pack:
            shutil.copytree(folder, runs / folder.name, dirs_exist_ok=True)
        for spec in args.add:
            new_run(spec, runs)
        if args.scalesim_python:
            for run in sorted(p for p in runs.iterdir() if p.is_dir()):
                simulate(run, args.scalesim_python)
        pack(runs, ARCHIVE)
    print(f"wrote {ARCHIVE} ({ARCHIVE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
