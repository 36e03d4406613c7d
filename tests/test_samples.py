"""sample_traces/ is current (regenerating gives the same bytes), valid, and small."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tracekit
from tracekit.trace.rules import Severity
from tracekit.workloads.samples import SAMPLES, readme, write_all

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_traces"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    write_all(folder)
    return folder


@pytest.mark.parametrize("sample", [s.name for s in SAMPLES])
def test_sample_is_current(sample: str, regenerated: Path) -> None:
    committed, fresh = SAMPLE_DIR / sample, regenerated / sample
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir())
    for name in names:
        old, new = (committed / name).read_bytes(), (fresh / name).read_bytes()
        if old == new:
            continue
        if name.endswith(".parquet"):
            # Parquet files name the writer's version; byte identity holds for one pyarrow
            # version, so under another one compare what the files hold.
            writers = {pq.ParquetFile(committed / name).metadata.created_by,
                       pq.ParquetFile(fresh / name).metadata.created_by}
            assert len(writers) == 2, (
                f"sample_traces/{sample}/{name} is stale: run `python sample_traces/"
                f"regenerate.py`")
            assert pq.read_table(committed / name).equals(pq.read_table(fresh / name))
        else:
            assert name == "manifest.json"
            strip = [json.loads(old), json.loads(new)]
            for manifest in strip:
                for entry in manifest["tables"].values():
                    entry.pop("bytes"), entry.pop("sha256")
            assert strip[0] == strip[1], f"sample_traces/{sample}/manifest.json is stale"


def test_sample_readme_is_current() -> None:
    assert (SAMPLE_DIR / "README.md").read_text(encoding="utf-8") == readme()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_is_valid_small_and_as_described(sample) -> None:  # type: ignore[no-untyped-def]
    path = SAMPLE_DIR / sample.name
    report = tracekit.validate(path)
    assert [f for f in report.findings if f.severity is Severity.ERROR] == []
    assert sum(f.stat().st_size for f in path.iterdir()) <= 2 * 2**20
    trace = tracekit.open_trace(path)
    rows = trace.manifest.tables["instructions"].rows
    assert 1_000 <= rows <= 100_000
    generator = trace.manifest.extra["generator"]
    assert [f["kind"] for f in generator["faults"]] == list(sample.inject)
    assert (generator["timing"] is None) is sample.untimed


def test_samples_cover_the_required_kinds() -> None:
    workloads = {s.workload for s in SAMPLES}
    assert {"gemm", "mlp", "attention", "conv2d"} <= workloads
    faulted = {s.workload for s in SAMPLES if s.inject}
    assert {s.workload for s in SAMPLES if not s.inject} >= faulted and len(faulted) >= 2
    assert any(s.untimed for s in SAMPLES)
    assert 6 <= len(SAMPLES) <= 8
