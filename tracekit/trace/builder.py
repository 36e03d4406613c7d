"""A builder of tiny bundles in code, for tests, examples and bug reports.

    b = TraceBuilder("tiny")
    load = b.inst("dma.q0", "dma_load", 0, 40, bytes=4096, layer="fc1")
    mm = b.inst("tensor", "matmul", 45, 90, elements=128 * 128, layer="fc1")
    b.signal(load, sem=0)
    b.wait(mm, sem=0, value=1)
    b.write(tmp_path / "tiny")

Ids and per-engine seq numbers are assigned in call order unless given, which is also how a
test builds a bundle that breaks a rule on purpose (`validate=False` writes it anyway). Rows are
kept in Python lists: this is for traces of tens of rows, not for real workloads.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.trace.bundle import Trace, file_sha256, write_trace
from tracekit.trace.manifest import Producer
from tracekit.trace.schema import MANIFEST_FILE, TABLES, ColumnType, TableSpec

FIXED_CREATED = "2026-01-01T00:00:00Z"
"""The builder's default creation stamp, so that equal builds give equal bytes."""


def _frame(spec: TableSpec, rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {c.name: pl.Int64 if c.type is ColumnType.INT64 else pl.String
              for c in spec.columns}
    return pl.DataFrame({name: [r.get(name) for r in rows] for name in schema},
                        schema=schema, strict=False)


class TraceBuilder:
    """Collects instructions, semaphore operations, memory accesses and edges row by row."""

    def __init__(self, workload: str = "tiny", *, clock_hz: float | None = None,
                 machine: str | None = None) -> None:
        self.workload = workload
        self.clock_hz = clock_hz
        self.machine = machine
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self._next_id = 0
        self._next_seq: dict[str, int] = defaultdict(int)

    def inst(self, engine: str, opcode: str, start: int | None = None, end: int | None = None,
             *, elements: int | None = None, bytes: int | None = None,  # noqa: A002
             flops: int | None = None, layer: str | None = None, pc: int | None = None,
             id: int | None = None, seq: int | None = None) -> int:  # noqa: A002
        """Add an instruction; returns its id."""
        inst_id = self._next_id if id is None else id
        self._next_id = max(self._next_id, inst_id + 1)
        if seq is None:
            seq = self._next_seq[engine]
        self._next_seq[engine] = max(self._next_seq[engine], seq + 1)
        self.rows["instructions"].append({
            "id": inst_id, "engine": engine, "seq": seq, "opcode": opcode, "start": start,
            "end": end, "elements": elements, "bytes": bytes, "flops": flops, "layer": layer,
            "pc": pc,
        })
        return inst_id

    def wait(self, inst: int, sem: int, value: int, cond: str | None = None) -> None:
        """`inst` starts once semaphore `sem`'s count is >= `value` (`cond="eq"`: == value)."""
        self.rows["semaphores"].append({"inst": inst, "sem": sem, "op": "wait", "value": value,
                                        "cond": cond})

    def signal(self, inst: int, sem: int, value: int = 1) -> None:
        """`inst` adds `value` to semaphore `sem` when it ends."""
        self.rows["semaphores"].append({"inst": inst, "sem": sem, "op": "signal",
                                        "value": value})

    def sub(self, inst: int, sem: int, value: int = 1) -> None:
        """`inst` subtracts `value` from semaphore `sem` when it ends."""
        self.rows["semaphores"].append({"inst": inst, "sem": sem, "op": "sub", "value": value})

    def set(self, inst: int, sem: int, value: int = 0) -> None:
        """`inst` sets semaphore `sem`'s count to `value` when it ends."""
        self.rows["semaphores"].append({"inst": inst, "sem": sem, "op": "set", "value": value})

    def access(self, inst: int, space: str, access: str, addr: int, size: int,
               partition: int | None = None, partitions: int | None = None) -> None:
        """A memory access range of `inst`; on-chip spaces take a partition range."""
        self.rows["memory"].append({"inst": inst, "space": space, "access": access,
                                    "addr": addr, "size": size, "partition": partition,
                                    "partitions": partitions})

    def dep(self, src: int, dst: int, kind: str = "data") -> None:
        """`dst` cannot start before `src` has ended."""
        self.rows["deps"].append({"src": src, "dst": dst, "kind": kind})

    def frames(self) -> dict[str, pl.DataFrame]:
        """The tables built so far: instructions always, the optional ones when they have rows."""
        return {name: _frame(TABLES[name], rows) for name, rows in self.rows.items()
                if rows or TABLES[name].required}

    def write(self, path: str | os.PathLike[str], *, validate: bool = True,
              overwrite: bool = False, created: str = FIXED_CREATED,
              extra: dict[str, Any] | None = None) -> Trace:
        """Write the bundle (see `write_trace`); `validate=False` keeps broken rows as given."""
        frames = self.frames()
        return write_trace(
            path, frames.pop("instructions"), **frames, workload=self.workload,
            producer=Producer("tracekit.builder"), machine=self.machine,
            clock_hz=self.clock_hz, created=created, extra=extra, overwrite=overwrite,
            validate=validate,
        )


def replace_table_file(bundle: str | os.PathLike[str], table: str, data: pa.Table,
                       *, metadata: dict[str, str] | None = None) -> None:
    """Overwrite one table file of a bundle with `data` exactly as given (any columns, any
    types) and record its new rows, size and sha256 in the manifest.

    For tests of the column and type rules, which the writer itself never breaks. `metadata`
    replaces the file's key-value metadata (pass {} to write none).
    """
    folder = Path(bundle)
    spec = TABLES[table]
    if metadata is not None:
        data = data.replace_schema_metadata(metadata)
    pq.write_table(data, folder / spec.file)
    manifest_path = folder / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["tables"][table] = {
        "file": spec.file,
        "rows": data.num_rows,
        "bytes": (folder / spec.file).stat().st_size,
        "sha256": file_sha256(folder / spec.file),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
