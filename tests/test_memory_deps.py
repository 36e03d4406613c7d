"""Memory edges: exact on hand-made accesses, and happens-before-complete against a brute-force
oracle on random accesses (every conflicting pair ordered by a path of memory edges, and every
memory edge joining a conflicting pair)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.replay.graph import derive, memory_conflicts, memory_edges
from tracekit.replay.run import replay
from tracekit.trace.builder import TraceBuilder
from tracekit.trace.schema import EdgeKind


def _edges(trace: tracekit.Trace) -> set[tuple[int, int]]:
    return set(derive(trace, memory=True).edge_frame(EdgeKind.MEMORY)
               .select("src", "dst").iter_rows())


def test_raw_war_waw_on_2d_ranges(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    w1 = b.inst("dma.q0", "dma_load")
    r2 = b.inst("tensor", "matmul")
    w3 = b.inst("vector", "copy")
    w4 = b.inst("vector", "copy")
    w5 = b.inst("gpsimd", "iota")
    b.access(w1, "sbuf", "write", 0, 256, 0, 128)    # partitions 0-127, bytes 0-255
    b.access(r2, "sbuf", "read", 128, 64, 0, 64)     # inside w1: read-after-write
    b.access(w3, "sbuf", "write", 0, 64, 64, 64)     # overlaps w1 only: write-after-write
    b.access(w4, "sbuf", "write", 128, 64, 0, 64)    # r2 read it since: write-after-read
    b.access(w5, "sbuf", "write", 64, 64, 64, 64)    # partitions 64-127 bytes 64-127: w1 only
    trace = b.write(tmp_path / "t")
    assert _edges(trace) == {(w1, r2), (w1, w3), (r2, w4), (w1, w5)}


def test_disjoint_partitions_and_spaces_do_not_conflict(tmp_path: Path) -> None:
    b = TraceBuilder("m")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("dma.q1", "dma_load")
    d = b.inst("tensor", "matmul")
    b.access(a, "sbuf", "write", 0, 64, 0, 64)
    b.access(c, "sbuf", "write", 0, 64, 64, 64)      # same bytes, other partitions
    b.access(d, "psum", "write", 0, 64, 0, 64)       # same numbers, other space
    b.access(a, "hbm", "read", 0, 64)
    b.access(c, "hbm", "read", 0, 64)                # two reads never conflict
    assert _edges(b.write(tmp_path / "t")) == set()


def test_memory_deps_close_the_missing_wait_race() -> None:
    trace = tracekit.open_trace(Path(__file__).resolve().parent.parent / "sample_traces"
                                / "gemm_faults")
    fault = next(f for f in trace.manifest.extra["generator"]["faults"]
                 if f["kind"] == "missing-wait")
    without = replay(trace).timeline
    with_memory = replay(trace, memory_deps=True).timeline
    consumer = pl.col("id") == fault["consumer"]
    producer_end = with_memory.filter(pl.col("id") == fault["producer"])["end"].item()
    assert with_memory.filter(consumer)["start"].item() >= producer_end
    assert (fault["producer"], fault["consumer"]) in _edges(trace) or \
        nx.has_path(nx.DiGraph(list(_edges(trace))), fault["producer"], fault["consumer"])
    assert without.height == with_memory.height


accesses = st.lists(
    st.tuples(st.integers(0, 7),                       # instruction
              st.sampled_from(["hbm", "sbuf"]),
              st.booleans(),                           # write?
              st.integers(0, 12), st.integers(1, 6),   # addr, size
              st.integers(0, 3), st.integers(1, 3)),   # partition, partitions
    min_size=1, max_size=30)


def _memory(rows: list[tuple]) -> pl.DataFrame:
    """A memory table of (instruction, space, write?, addr, size, partition, partitions)."""
    return pl.DataFrame(
        [{"inst": i, "space": sp, "access": "write" if w else "read", "addr": a, "size": s,
          "partition": p if sp == "sbuf" else None, "partitions": k if sp == "sbuf" else None}
         for i, sp, w, a, s, p, k in rows],
        schema={"inst": pl.Int64, "space": pl.String, "access": pl.String, "addr": pl.Int64,
                "size": pl.Int64, "partition": pl.Int64, "partitions": pl.Int64})


@settings(max_examples=60, deadline=None)
@given(accesses)
def test_every_conflict_is_ordered_and_every_edge_is_a_conflict(rows) -> None:  # type: ignore[no-untyped-def]
    memory = _memory(rows)
    src, dst = memory_edges(memory, np.arange(8))
    graph = nx.DiGraph()
    graph.add_nodes_from(range(8))
    graph.add_edges_from(zip(src.tolist(), dst.tolist(), strict=True))

    def overlap(x, y):  # type: ignore[no-untyped-def]
        _, sx, _, ax, zx, px, kx = x
        _, sy, _, ay, zy, py, ky = y
        if sx != sy or ax >= ay + zy or ay >= ax + zx:
            return False
        return sx == "hbm" or (px < py + ky and py < px + kx)

    conflicts = {(x[0], y[0]) for x in rows for y in rows
                 if x[0] < y[0] and (x[2] or y[2]) and overlap(x, y)}
    for i, j in conflicts:
        assert nx.has_path(graph, i, j), (i, j)
    for i, j in zip(src.tolist(), dst.tolist(), strict=True):
        assert i < j and (i, j) in conflicts


@settings(max_examples=80, deadline=None)
@given(accesses)
def test_reread_matches_a_byte_by_byte_replay(rows) -> None:  # type: ignore[no-untyped-def]
    # Instructions in id order, each one's reads before its writes; a read is a re-read when
    # every byte (partition x byte) of it has a reader other than its own instruction since
    # the byte's last write.
    memory = _memory(rows)
    reread = memory_conflicts(memory, np.arange(8)).reread

    def cells(row):  # type: ignore[no-untyped-def]
        _, sp, _, a, z, p, k = row
        parts = range(p, p + k) if sp == "sbuf" else [0]
        return [(sp, q, b) for q in parts for b in range(a, a + z)]

    readers: dict[tuple, set[int]] = {}
    expected = [False] * len(rows)
    for inst in range(8):
        mine = [r for r in range(len(rows)) if rows[r][0] == inst]
        for r in (r for r in mine if not rows[r][2]):
            expected[r] = all(readers.get(c, set()) - {inst} for c in cells(rows[r]))
            for c in cells(rows[r]):
                readers.setdefault(c, set()).add(inst)
        for r in (r for r in mine if rows[r][2]):
            for c in cells(rows[r]):
                readers[c] = set()
    assert reread.tolist() == expected


def test_program_order_is_observed_start_not_id_across_engines(tmp_path: Path) -> None:
    # ids order instructions only within an engine: here the DMA (id 5) writes before the
    # matmul (id 3) reads, which the semaphore and the timestamps both say.
    b = TraceBuilder("m")
    mm = b.inst("tensor", "matmul", 100, 200, id=3, flops=1 << 20)
    load = b.inst("dma.q0", "dma_load", 0, 90, id=5, bytes=4096)
    b.signal(load, 0)
    b.wait(mm, 0, 1)
    b.access(load, "sbuf", "write", 0, 64, 0, 128)
    b.access(mm, "sbuf", "read", 0, 64, 0, 128)
    trace = b.write(tmp_path / "t")
    assert _edges(trace) == {(load, mm)}
    assert replay(trace, memory_deps=True).timeline.height == 2


def test_fan_in_past_the_initial_edge_buffer() -> None:
    # One write, 200 readers, one write: 200 read-after-write and 200 write-after-read edges,
    # more than the sweep's first buffer holds.
    rows = ([(0, "write")] + [(i, "read") for i in range(1, 201)] + [(201, "write")])
    memory = pl.DataFrame({"inst": [i for i, _ in rows], "space": ["hbm"] * len(rows),
                           "access": [a for _, a in rows], "addr": [0] * len(rows),
                           "size": [10] * len(rows), "partition": [None] * len(rows),
                           "partitions": [None] * len(rows)},
                          schema={"inst": pl.Int64, "space": pl.String, "access": pl.String,
                                  "addr": pl.Int64, "size": pl.Int64, "partition": pl.Int64,
                                  "partitions": pl.Int64})
    src, dst = memory_edges(memory, np.arange(202))
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) == (
        {(0, i) for i in range(1, 201)} | {(i, 201) for i in range(1, 201)})
