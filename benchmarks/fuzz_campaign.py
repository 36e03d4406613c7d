"""Hostile-input campaign (issue 18): thousands of broken bundles, manifests and SCALE-Sim runs
through every command, each in its own process, reporting tracebacks, hangs (a timeout), wrong
successes and peak memory against the input's size.

    .venv/bin/python benchmarks/fuzz_campaign.py --cases 1000 --jobs 2 --seed 18

A case fails when its command prints a traceback or an internal error, runs past the timeout,
exits 0 on a bundle that `validate` refuses (commands that validate every table: validate,
analyze, bugs) or on a SCALE-Sim run given a value that is not an exact whole number, or peaks
above 3x the input's size plus 1 GiB. The summary is printed as JSON; --keep DIR keeps the
failing inputs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
TRACEKIT = [sys.executable, "-m", "tracekit", "-q"]
sys.path.insert(0, str(ROOT / "tests"))

HOSTILE_VALUES = [None, -1, 0, 2**63, 10**400, 1e300, float("inf"), "", "x" * 100_000,
                  "\x1b[2J", "a\ud800", [], {}, [[[[[[]]]]]], True, "cycles", "us", 1e-300]
HOSTILE_TEXT = ["1e300", "-5", "99999999999999999999", "nan", "%(x)s", "", "0.5", "1e20",
                "-1", "9223372036854775807", "inf", "x" * 10_000]
BUNDLE_COMMANDS = [["validate"], ["info"], ["replay"], ["stalls"], ["critical-path"],
                   ["analyze"], ["bugs"], ["sensitivity"], ["export", "perfetto"]]
VALIDATING = {"validate", "analyze", "bugs"}


@dataclass
class Case:
    kind: str
    what: str
    folder: Path
    command: list[str]
    must_fail: bool


def _rewrite_hash(bundle: Path, table: str) -> None:
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / f"{table}.parquet").read_bytes()
    manifest["tables"][table].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def mutate_bundle(base: Path, out: Path, rng: random.Random) -> str:
    shutil.copytree(base, out)
    choice = rng.randrange(8)
    manifest_path = out / "manifest.json"
    if choice == 0:  # a manifest field set to a hostile value
        manifest = json.loads(manifest_path.read_text())
        key = rng.choice(["schema_version", "workload", "producer", "clock_hz", "time_unit",
                          "tables", "extra", "machine", "created"])
        value = rng.choice(HOSTILE_VALUES)
        manifest[key] = value
        try:
            manifest_path.write_text(json.dumps(manifest), encoding="utf-8",
                                     errors="surrogatepass")
        except (ValueError, OverflowError):
            manifest_path.write_text("{")
        return f"manifest {key}={str(value)[:40]!r}"
    if choice == 1:  # a table entry's field
        manifest = json.loads(manifest_path.read_text())
        table = rng.choice(list(manifest["tables"]))
        key = rng.choice(["rows", "bytes", "sha256", "file"])
        manifest["tables"][table][key] = rng.choice(HOSTILE_VALUES[:10] + ["../../etc/passwd"])
        manifest_path.write_text(json.dumps(manifest))
        return f"manifest tables.{table}.{key}"
    if choice == 2:  # raw manifest bytes
        data = bytearray(manifest_path.read_bytes())
        how = rng.randrange(3)
        if how == 0:
            data = data[: rng.randrange(len(data))]
        elif how == 1:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = b"[" * rng.choice([10, 10_000, 100_000])
        manifest_path.write_bytes(bytes(data))
        return f"manifest bytes {how}"
    tables = [p.stem for p in out.glob("*.parquet")]
    table = rng.choice(tables)
    path = out / f"{table}.parquet"
    if choice == 3:  # table bytes flipped or cut, the manifest updated or not
        data = bytearray(path.read_bytes())
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        if rng.random() < 0.7:
            _rewrite_hash(out, table)
        return f"{table} bytes"
    t = pq.read_table(path)
    column = rng.choice(t.column_names)
    index = t.schema.get_field_index(column)
    values = t.column(column).to_pylist()
    field = t.schema.field(index)
    if choice == 4:  # nulls
        rows = range(len(values)) if rng.random() < 0.3 else rng.sample(
            range(len(values)), k=max(1, len(values) // 50))
        for r in rows:
            values[r] = None
        what = f"{table}.{column} nulls"
    elif choice == 5:  # hostile values of the column's type
        is_int = pa.types.is_integer(field.type)
        pool = ([-1, 2**63 - 1, -(2**63), 0] if is_int
                else ["\x1b[2J\x1b[H", "x" * (1 << 20), "", "a\u202eb", "dma.q0"])
        for r in rng.sample(range(len(values)), k=max(1, min(7, len(values)))):
            values[r] = rng.choice(pool)
        what = f"{table}.{column} hostile values"
    elif choice == 6:  # rows duplicated or shuffled
        order = list(range(len(values)))
        rng.shuffle(order)
        t = t.take(pa.array(order[: max(1, len(order) - rng.randrange(3))] + order[:3]))
        pq.write_table(t, path)
        _rewrite_hash(out, table)
        return f"{table} rows shuffled and duplicated"
    else:  # a link out of the bundle
        outside = out.parent / f"{out.name}-outside.parquet"
        shutil.copy(path, outside)
        path.unlink()
        path.symlink_to(outside)
        return f"{table} linked outside"
    array = pa.array(values, type=field.type.value_type
                     if pa.types.is_dictionary(field.type) else field.type)
    t = t.set_column(index, field.with_nullable(True).with_type(array.type), array)
    pq.write_table(t, path)
    _rewrite_hash(out, table)
    return what


def mutate_scalesim(base: Path, out: Path, rng: random.Random) -> tuple[str, bool]:
    shutil.copytree(base, out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    path = rng.choice(files)
    text = path.read_text()
    if rng.random() < 0.1:
        path.unlink()
        return f"{path.name} removed", True
    cells = [i for i, c in enumerate(text) if c.isdigit()]
    if not cells:
        return "nothing", False
    at = rng.choice(cells)
    end = at
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    value = rng.choice(HOSTILE_TEXT)
    path.write_text(text[:at] + value + text[end:])
    inexact = path.name.endswith("TRACE.csv") and value in (
        "1e300", "nan", "inf", "0.5", "1e20", "99999999999999999999", "%(x)s", "x" * 10_000)
    return f"{path.relative_to(out)}: {text[at:end]!r} -> {value[:20]!r}", inexact


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(case: Case, timeout: float) -> dict[str, object]:
    began = time.perf_counter()
    env = {**os.environ, "TRACEKIT_QUIET": "1", "PYTHONWARNINGS": ""}
    proc = subprocess.Popen(["/usr/bin/time", "-f", "MAXRSS_KB %M", *TRACEKIT, *case.command],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=case.folder)
    hang = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        hang = True
    text = err.decode("utf-8", "replace")
    lines = text.rstrip().splitlines()
    rss = int(lines[-1].split()[1]) * 1024 if lines and lines[-1].startswith("MAXRSS_KB") else 0
    text = "\n".join(line for line in lines if not line.startswith("MAXRSS_KB"))
    size = size_of(case.folder)
    return {"peak_bytes": rss, "over_memory": rss > 3 * size + (1 << 30),"kind": case.kind, "what": case.what, "command": " ".join(case.command),
            "exit": proc.returncode, "seconds": round(time.perf_counter() - began, 2),
            "hang": hang, "traceback": "Traceback" in text or "internal error" in text,
            "warning": "Warning" in text, "stderr": text[-600:],
            "must_fail": case.must_fail, "input_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tracekit-fuzz-"))
    base = work / "base"
    subprocess.run(TRACEKIT + ["generate", "gemm", "--m", "128", "--n", "128", "--k", "128",
                               "-o", str(base)], check=True, stdout=subprocess.DEVNULL)
    from test_convert_scalesim import TINY, tiny_run  # the tiny SCALE-Sim run of the tests

    scalesim = tiny_run(work / "scalesim-base")
    from tracekit.trace.validate import validate

    cases = []
    for i in range(args.cases):
        folder = work / f"case{i:05d}"
        folder.mkdir()
        if rng.random() < 0.8:
            what = mutate_bundle(base, folder / "t", rng)
            command = rng.choice(BUNDLE_COMMANDS)
            try:
                invalid = not validate(folder / "t").ok()
            except BaseException:  # noqa: BLE001 - no bundle to check, or a panic
                invalid = True
            must_fail = invalid and command[0] in VALIDATING
            args_ = [*command, "t"] + (["-o", "out.json"] if command[0] == "export" else [])
            cases.append(Case("bundle", what, folder, args_, must_fail))
        else:
            what, inexact = mutate_scalesim(scalesim, folder / TINY, rng)
            cases.append(Case("scalesim", what, folder,
                              ["convert", "scalesim", TINY, "-o", "out"], inexact))
    print(f"{len(cases)} cases in {work}; running with {args.jobs} jobs", file=sys.stderr)
    began = time.perf_counter()
    results = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for n, result in enumerate(pool.map(lambda c: run(c, args.timeout), cases), 1):
            results.append(result)
            if n % 100 == 0:
                print(f"  {n} done, {time.perf_counter() - began:.0f} s", file=sys.stderr)
    bad = {
        "tracebacks": [r for r in results if r["traceback"]],
        "hangs": [r for r in results if r["hang"]],
        "wrong_successes": [r for r in results if r["must_fail"] and r["exit"] == 0],
        "warnings": [r for r in results if r["warning"]],
        "other_exit_codes": [r for r in results if r["exit"] not in (0, 1, 2, 3)],
        "over_memory": [r for r in results if r["over_memory"]],
    }
    summary = {
        "cases": len(results), "seconds": round(time.perf_counter() - began),
        "by_kind": {k: sum(r["kind"] == k for r in results) for k in ("bundle", "scalesim")},
        "by_command": {c: sum(r["command"] == c for r in results)
                       for c in sorted({r["command"] for r in results})},
        "exit_codes": {str(e): sum(r["exit"] == e for r in results)
                       for e in sorted({r["exit"] for r in results})},
        **{k: len(v) for k, v in bad.items()},
        "peak_memory_mib_max": round(max(r["peak_bytes"] for r in results) / 2**20),
        "peak_over_input_max": round(max(r["peak_bytes"] / max(r["input_bytes"], 1)
                                         for r in results)),
        "input_bytes_max": max(r["input_bytes"] for r in results),
        "examples": {k: v[:5] for k, v in bad.items() if v},
    }
    print(json.dumps(summary, indent=2, default=str))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for r in (r for v in bad.values() for r in v):
            print(r, file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
