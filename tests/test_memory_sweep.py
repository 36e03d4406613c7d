"""The bug checks' memory sweep (`tracekit.analysis.memory_sweep`): the same conflicts and
re-reads as the in-memory sweep of `replay.graph.memory_conflicts`, whatever the chunk of
instructions, the batch of rows and the row groups of the file; the first pass's rows out of
bounds; and `bugs` findings that do not depend on the chunk size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.analysis.memory_sweep import (
    WRITES,
    WRITES_SBUF,
    dead_write_bytes,
    scan_memory,
    sweep_memory,
)
from tracekit.analysis.signatures import find_bugs
from tracekit.errors import TracekitError
from tracekit.replay.graph import RAW, WAR, WAW, GraphError, memory_conflicts
from tracekit.replay.machine import builtin_machine
from tracekit.trace.builder import TraceBuilder

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_traces"
MACHINE = builtin_machine()


def _scan(trace: tracekit.Trace, ids: np.ndarray, batch_rows: int = 1 << 20):
    m = MACHINE
    return scan_memory(trace, ids, m.sbuf_partition_bytes, m.psum_partition_bytes,
                       m.partitions, batch_rows)


def _regroup(trace: tracekit.Trace, rows_per_group: int) -> tracekit.Trace:
    """The same bundle with its memory table cut into row groups of `rows_per_group`."""
    path = trace.path / "memory.parquet"
    pq.write_table(pq.read_table(path), path, row_group_size=rows_per_group)
    return tracekit.open_trace(trace.path, verify=False)


def _swept(trace: tracekit.Trace, chunk_rows: int, batch_rows: int):
    """The sweep's conflicts (src, dst, kind in program order of src, then dst, as
    memory_conflicts sorts them) and its re-read totals."""
    inst = trace.read_instructions(["id", "start"])
    ids = inst["id"].to_numpy()
    start = inst["start"].to_numpy() if inst["start"].null_count() == 0 else None
    found: list[tuple[np.ndarray, ...]] = []
    reloads = sweep_memory(trace, _scan(trace, ids, batch_rows), ids, start,
                           lambda a, b, k: found.append((a.copy(), b.copy(), k.copy())),
                           chunk_rows, batch_rows)
    if found:
        src, dst, kind = (np.concatenate(c).astype(np.int64) for c in zip(*found, strict=True))
    else:
        src = dst = kind = np.zeros(0, dtype=np.int64)
    by_rank = np.arange(ids.size) if start is None else np.argsort(start, kind="stable")
    rank = np.empty(ids.size, dtype=np.int64)
    rank[by_rank] = np.arange(ids.size)
    order = np.lexsort((rank[dst], rank[src]))
    return src[order], dst[order], kind[order], reloads


def _expected(trace: tracekit.Trace):
    """The in-memory sweep's conflicts, and its re-reads totalled as the reload check did."""
    inst = trace.read_instructions(["id", "start"])
    ids = inst["id"].to_numpy()
    start = inst["start"].to_numpy() if inst["start"].null_count() == 0 else None
    memory = trace.read("memory")
    ref = memory_conflicts(memory, ids, start)
    again = memory.filter(pl.Series(ref.reread)).filter(pl.col("space") == "hbm")
    top = None
    times = 0
    if again.height:
        row = (again.group_by("addr", "size").agg(pl.len().alias("n"))
               .sort("n", "addr", "size", descending=[True, False, False]).row(0, named=True))
        top = (row["addr"], row["size"], row["n"])
        times = memory.filter((pl.col("space") == "hbm") & (pl.col("access") == "read")
                              & (pl.col("addr") == row["addr"])
                              & (pl.col("size") == row["size"])).height
    reloading = np.zeros(ids.size, dtype=bool)
    reloading[np.searchsorted(ids, again["inst"].to_numpy())] = True
    return ref, again.height, int(again["size"].sum()), top, times, reloading


def _check_same(trace: tracekit.Trace, chunk_rows: int, batch_rows: int) -> None:
    ref, again, again_bytes, top, times, reloading = _expected(trace)
    src, dst, kind, got = _swept(trace, chunk_rows, batch_rows)
    assert src.tolist() == ref.src.tolist()
    assert dst.tolist() == ref.dst.tolist()
    assert kind.tolist() == ref.kind.tolist()
    assert (got.again, got.again_bytes, got.top, got.times) == (again, again_bytes, top, times)
    assert got.reloading.tolist() == reloading.tolist()


def test_edges_of_the_module_example(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    w1 = b.inst("dma.q0", "dma_load")
    r2 = b.inst("tensor", "matmul")
    w3 = b.inst("vector", "copy")
    b.access(w1, "sbuf", "write", 0, 256, 0, 128)
    b.access(r2, "sbuf", "read", 128, 64, 0, 64)
    b.access(w3, "sbuf", "write", 0, 64, 64, 64)
    src, dst, kind, _ = _swept(b.write(tmp_path / "t"), 1, 1)
    # w3 overlaps w1's bytes 0-63 of partitions 64-127, which r2 does not read: a rewrite.
    assert list(zip(src.tolist(), dst.tolist(), kind.tolist(), strict=True)) == [
        (w1, r2, RAW), (w1, w3, WAW)]


def test_war_keeps_the_lowest_kind_and_rereads_count(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    load = b.inst("dma.q0", "dma_load")
    again = b.inst("dma.q1", "dma_load")
    store = b.inst("dma.q2", "dma_store")
    b.access(load, "hbm", "read", 4096, 1024)
    b.access(again, "hbm", "read", 4096, 1024)  # read by another since the last write
    b.access(store, "hbm", "read", 4096, 512)   # a read and a write of one instruction:
    b.access(store, "hbm", "write", 4096, 1024)  # reads precede its writes
    src, dst, kind, got = _swept(b.write(tmp_path / "t"), 2, 1)
    assert list(zip(src.tolist(), dst.tolist(), kind.tolist(), strict=True)) == [
        (load, store, WAR), (again, store, WAR)]
    # Two ranges re-read once each: the tie goes to the lower address, then the smaller size.
    assert (got.again, got.again_bytes, got.top, got.times) == (2, 1536, (4096, 512, 1), 1)
    assert got.reloading.tolist() == [False, True, True]


@pytest.mark.parametrize("sample", ["gemm", "mlp_faults", "attention_faults",
                                    "layernorm_untimed"])
@pytest.mark.parametrize("chunk_rows, batch_rows, group_rows",
                         [(1 << 22, 1 << 20, None), (97, 1 << 20, None), (500, 64, 700),
                          (1, 333, 1000)])
def test_samples_swept_in_chunks_as_in_memory(tmp_path: Path, sample: str, chunk_rows: int,
                                              batch_rows: int, group_rows: int | None) -> None:
    """Chunks of one instruction's accesses up to the whole table, batches of 64 rows and row
    groups of 700: timed samples (program order by start, which ids do not follow across
    engines) and an untimed one (id order)."""
    import shutil

    shutil.copytree(SAMPLE_DIR / sample, tmp_path / sample)
    trace = tracekit.open_trace(tmp_path / sample)
    if group_rows is not None:
        trace = _regroup(trace, group_rows)
    _check_same(trace, chunk_rows, batch_rows)


SPACES_ST = st.sampled_from(["hbm", "sbuf", "psum"])


@st.composite
def _accesses(draw: st.DrawFn) -> tuple[list, list, bool, bool]:
    n = draw(st.integers(1, 12))
    timed = draw(st.booleans())
    insts = [(draw(st.sampled_from(["tensor", "vector", "dma.q0", "dma.q1"])),
              draw(st.integers(0, 40)) if timed else None) for _ in range(n)]
    rows = [(draw(st.integers(0, n - 1)), draw(SPACES_ST),
             draw(st.sampled_from(["read", "write"])), draw(st.integers(0, 6)) * 32,
             draw(st.sampled_from([0, 32, 64, 96])), draw(st.integers(0, 3)) * 32,
             draw(st.sampled_from([1, 32, 64])))
            for _ in range(draw(st.integers(0, 30)))]
    return insts, rows, timed, draw(st.booleans())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_accesses(), chunk_rows=st.integers(1, 8), batch_rows=st.integers(1, 9),
       group_rows=st.integers(1, 9))
def test_random_accesses_swept_in_chunks_as_in_memory(
        tmp_path_factory: pytest.TempPathFactory, case: tuple, chunk_rows: int,
        batch_rows: int, group_rows: int) -> None:
    """Overlapping 2-D ranges, empty ones, ids with gaps, start ties and any order of rows:
    any chunk, batch and row group size gives the in-memory sweep's edges and re-reads."""
    insts, rows, timed, gaps = case
    b = TraceBuilder("r")
    ids = []
    for k, (engine, start) in enumerate(insts):
        ids.append(b.inst(engine, "copy", start, None if start is None else start + 5,
                          id=3 * k + 7 if gaps else None))
    for inst, space, access, addr, size, part, parts in rows:
        on_chip = space != "hbm"
        b.access(ids[inst], space, access, addr, size, part if on_chip else None,
                 parts if on_chip else None)
    trace = b.write(tmp_path_factory.mktemp("r") / "t")
    if rows:
        trace = _regroup(trace, group_rows)
    if not trace.has_table("memory"):
        return
    _check_same(trace, chunk_rows, batch_rows)


def test_scan_out_of_bounds_writes_and_dead_bytes(tmp_path: Path) -> None:
    m = MACHINE
    b = TraceBuilder("m")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("vector", "copy")
    d = b.inst("tensor", "matmul")
    b.access(a, "sbuf", "write", m.sbuf_partition_bytes - 64, 128, 0, 2)  # past the bytes
    b.access(a, "hbm", "read", 0, 128)
    b.access(c, "sbuf", "read", 0, 64, m.partitions - 1, 2)  # past the partitions
    b.access(c, "hbm", "write", 64, 64)
    b.access(d, "psum", "write", 0, 64, 0, 128)  # PSUM writes are not counted as writes
    trace = _regroup(b.write(tmp_path / "t", validate=False), 2)
    ids = np.array([a, c, d])
    scan = _scan(trace, ids, batch_rows=1)
    assert scan.out_of_bounds.select("inst", "space", "access", "addr").rows() == [
        (a, "sbuf", "write", m.sbuf_partition_bytes - 64), (c, "sbuf", "read", 0)]
    assert scan.writes.tolist() == [WRITES | WRITES_SBUF, WRITES, 0]
    assert scan.accesses.tolist() == [2, 2, 1]
    assert (scan.loads, scan.loaded_bytes) == (1, 128)
    dead = dead_write_bytes(trace, scan, ids, np.array([True, True, False]), batch_rows=1)
    assert dead.rows() == [(a, 256), (c, 64)]


def test_rows_naming_no_instruction_are_one_error(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    a = b.inst("dma.q0", "dma_load")
    b.access(a, "hbm", "read", 0, 64)
    for missing in (12, 9, 12):
        b.access(missing, "hbm", "read", 0, 64)
    trace = _regroup(b.write(tmp_path / "t", validate=False), 1)
    scan = _scan(trace, np.array([a]), batch_rows=1)
    with pytest.raises(GraphError) as raised:
        sweep_memory(trace, scan, np.array([a]), None, lambda *_: None)
    assert "memory.inst: 3 row(s) name no instruction (ids 9, 12)" in str(raised.value)
    assert isinstance(raised.value, TracekitError)


@pytest.mark.parametrize("sample", ["gemm_faults", "mlp_faults", "attention_faults"])
def test_findings_do_not_depend_on_the_chunk(sample: str) -> None:
    trace = tracekit.open_trace(SAMPLE_DIR / sample)
    whole = find_bugs(trace, MACHINE)
    assert find_bugs(trace, MACHINE, chunk_rows=1) == whole
    assert find_bugs(trace, MACHINE, chunk_rows=257) == whole


def test_a_damaged_memory_table_is_a_read_error(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    a = b.inst("dma.q0", "dma_load")
    b.access(a, "hbm", "read", 0, 64)
    trace = b.write(tmp_path / "t")
    path = trace.path / "memory.parquet"
    path.write_bytes(path.read_bytes()[:40] + b"\0" * 200 + path.read_bytes()[240:])
    trace = tracekit.open_trace(trace.path, verify=False)
    with pytest.raises(TracekitError, match="memory.parquet"):
        find_bugs(trace, MACHINE)
