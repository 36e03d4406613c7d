"""Shared fixtures: one small, valid trace bundle built with TraceBuilder, and helpers that build
the same bundle with a modification (to break one rule on purpose) or edit a written bundle.

The valid trace, one row per line; instruction ids equal their row numbers in instructions.parquet:

    id engine  seq opcode      start end
    0  dma.q0  0   dma_load      0    40   loads a tile HBM -> SBUF, signals sem 0
    1  dma.q1  0   dma_load      0    50   signals sem 0
    2  dma.q0  1   dma_load     40    80   (referenced by no other table)
    3  tensor  0   matmul       80   130   waits for sem 0 == 2, SBUF -> PSUM
    4  tensor  1   matmul      130   180   signals sem 1
    5  scalar  0   activation  180   200   waits for sem 1, PSUM -> SBUF, signals sem 2
    6  dma.q1  1   dma_store   200   240   waits for sem 2, SBUF -> HBM
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import Result

from tracekit.trace.builder import TraceBuilder
from tracekit.trace.schema import MANIFEST_FILE

WORKLOAD = "tiny-mlp"

Modification = Callable[[TraceBuilder], None]


def assert_failed_cleanly(result: Result, exit_code: int, *needles: str) -> None:
    """Exit `exit_code` through SystemExit (no stray exception), no traceback anywhere, and the
    message naming the problem on stderr."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def build_valid_trace() -> TraceBuilder:
    """The builder of the valid fixture trace (see the module docstring)."""
    b = TraceBuilder(WORKLOAD, clock_hz=1.0e9)
    load_a = b.inst("dma.q0", "dma_load", 0, 40, bytes=4096, layer="fc1")
    load_b = b.inst("dma.q1", "dma_load", 0, 50, bytes=4096, layer="fc1")
    b.inst("dma.q0", "dma_load", 40, 80, bytes=4096, layer="fc2")
    mm0 = b.inst("tensor", "matmul", 80, 130, elements=128 * 128, flops=2 * 128**3, layer="fc1")
    mm1 = b.inst("tensor", "matmul", 130, 180, elements=128 * 128, flops=2 * 128**3, layer="fc1")
    act = b.inst("scalar", "activation", 180, 200, elements=128 * 128, layer="fc1")
    store = b.inst("dma.q1", "dma_store", 200, 240, bytes=4096, layer="fc1")

    b.signal(load_a, sem=0)          # semaphores row 0
    b.signal(load_b, sem=0)          # row 1
    b.wait(mm0, sem=0, value=2)      # row 2
    b.signal(mm1, sem=1)             # row 3
    b.wait(act, sem=1, value=1)      # row 4
    b.signal(act, sem=2)             # row 5
    b.wait(store, sem=2, value=1)    # row 6

    b.access(load_a, "hbm", "read", 0, 4096)                                # memory row 0
    b.access(load_a, "sbuf", "write", 0, 64, partition=0, partitions=64)    # row 1
    b.access(mm0, "sbuf", "read", 0, 64, partition=0, partitions=64)        # row 2
    b.access(mm0, "psum", "write", 0, 512, partition=0, partitions=128)     # row 3
    b.access(act, "psum", "read", 0, 512, partition=0, partitions=128)      # row 4
    b.access(act, "sbuf", "write", 1024, 64, partition=0, partitions=128)   # row 5
    b.access(store, "sbuf", "read", 1024, 64, partition=0, partitions=128)  # row 6
    b.access(store, "hbm", "write", 8192, 4096)                             # row 7

    b.dep(load_a, mm0, "data")        # deps row 0
    b.dep(load_b, mm0, "semaphore")   # row 1
    b.dep(mm0, mm1, "order")          # row 2
    b.dep(mm1, act, "semaphore")      # row 3
    b.dep(act, store, "data")         # row 4
    return b


def edit(table: str, row: int, **values: Any) -> Modification:
    """A modification that overwrites some columns of one row (0-based, in file order)."""

    def apply(b: TraceBuilder) -> None:
        b.rows[table][row].update(values)

    return apply


def append(table: str, **values: Any) -> Modification:
    """A modification that appends one row to a table (missing columns are null)."""

    def apply(b: TraceBuilder) -> None:
        b.rows[table].append(dict(values))

    return apply


@pytest.fixture
def builder() -> TraceBuilder:
    return build_valid_trace()


@pytest.fixture
def valid_bundle(tmp_path: Path) -> Path:
    """The valid fixture trace, written (and validated by the writer) to tmp_path/valid."""
    path = tmp_path / "valid"
    build_valid_trace().write(path)
    return path


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Factory: the fixture trace with modifications applied in order, written without
    validation to a fresh folder under tmp_path. `make_bundle(edit("instructions", 4, end=1))`."""
    made = 0

    def make(*modifications: Modification) -> Path:
        nonlocal made
        made += 1
        b = build_valid_trace()
        for modify in modifications:
            modify(b)
        path = tmp_path / f"bundle{made}"
        b.write(path, validate=False)
        return path

    return make


# --- editing written bundles --------------------------------------------------------------


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load manifest.json, let `change` mutate the dict in place, write it back."""
    manifest = read_manifest(bundle)
    change(manifest)
    write_manifest(bundle, manifest)


def read_table(bundle: Path, table: str) -> pa.Table:
    """A table file exactly as stored (Arrow types and key-value metadata included)."""
    return pq.read_table(bundle / f"{table}.parquet")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current output (review the diff)")
