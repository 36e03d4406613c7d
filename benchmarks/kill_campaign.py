"""kill -9 at random points of every writing command (issue 18): after each kill the previous
output must be whole or the new one whole, never neither; after the next run of the same
command no temporary entry may be left beside the output.

    .venv/bin/python benchmarks/kill_campaign.py --kills 60 --seed 18

Writing commands: generate -o, replay -o, convert scalesim -o, export perfetto -o. Each round
writes a first output, then starts the command again with --force and kills it after a random
delay within its usual run time, checks the output, runs the command to completion and checks
that nothing hidden is left beside the output. The summary is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
TRACEKIT = [sys.executable, "-m", "tracekit", "-q"]


def whole(kind: str, path: Path, versions: list[bytes]) -> str:
    """'old', 'new' or 'neither'."""
    if kind == "file":
        if not path.is_file():
            return "neither"
        data = path.read_bytes()
        return "old" if data == versions[0] else "new" if data in versions else "neither"
    from tracekit.trace.validate import validate

    try:
        ok = validate(path).ok()
    except Exception:  # noqa: BLE001 - no bundle there
        return "neither"
    if not ok:
        return "neither"
    manifest = (path / "manifest.json").read_bytes()
    return "old" if manifest == versions[0] else "new"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tracekit-kill-"))
    subprocess.run(TRACEKIT + ["generate", "gemm", "--m", "256", "--n", "256", "--k", "256",
                               "-o", str(work / "src")], check=True, stdout=subprocess.DEVNULL)
    from test_convert_scalesim import tiny_run

    run = tiny_run(work / "ss")
    commands = {
        "generate": ("bundle", ["generate", "mlp", "-o", "{out}", "--force"]),
        "replay": ("bundle", ["replay", str(work / "src"), "-o", "{out}", "--force"]),
        "convert scalesim": ("bundle", ["convert", "scalesim", str(run), "-o", "{out}",
                                        "--force"]),
        "export perfetto": ("file", ["export", "perfetto", str(work / "src"), "-o", "{out}",
                                     "--force"]),
    }
    results: dict[str, dict[str, int]] = {}
    stray: list[str] = []
    for name, (kind, template) in commands.items():
        out = work / name.replace(" ", "-") / ("out.json" if kind == "file" else "out")
        out.parent.mkdir()
        argv = [a.replace("{out}", str(out)) for a in template]
        began = time.perf_counter()
        subprocess.run(TRACEKIT + argv, check=True, stdout=subprocess.DEVNULL)
        duration = time.perf_counter() - began
        first = out.read_bytes() if kind == "file" else (out / "manifest.json").read_bytes()
        tally = results.setdefault(name, {"kills": 0, "old": 0, "new": 0, "neither": 0})
        for _ in range(args.kills // len(commands) + 1):
            proc = subprocess.Popen(TRACEKIT + argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, duration * 1.1))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            tally["kills"] += 1
            versions = [first]
            if kind == "file" and out.is_file() and out.read_bytes() != first:
                versions.append(out.read_bytes())  # a complete new export (same bytes)
            tally[whole(kind, out, versions)] += 1
            # The next run to the same place cleans what the kill left.
            subprocess.run(TRACEKIT + argv, check=True, stdout=subprocess.DEVNULL)
            left = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
            stray += [f"{name}: {p}" for p in left]
            first = out.read_bytes() if kind == "file" else (out / "manifest.json").read_bytes()
    summary = {"kills": sum(t["kills"] for t in results.values()),
               "neither": sum(t["neither"] for t in results.values()),
               "stray_after_next_run": len(stray), "by_command": results,
               "stray_examples": stray[:5]}
    print(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
