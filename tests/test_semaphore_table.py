"""The semaphores table as the replay holds it (`SemTable`): read from the file a row group at
a time (`from_parquet`, what `derive` does on an opened bundle) it equals the table built from
the whole frame (`from_frame`), whatever the row order, row groups, column encodings, nulls
and semaphore numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.replay.graph import GraphError, derive, positions
from tracekit.replay.semaphores import COND_NAMES, OP_NAMES, SemTable

FIELDS = ("node", "sem", "op", "value", "cond", "numbers", "ptr", "log_ptr")


def _write(path: Path, rows: list[tuple[int, int, str, int, str | None]], *,
           dictionary: bool, group_rows: int, with_cond: bool = True) -> pl.DataFrame:
    inst, sem, op, value, cond = (list(c) for c in zip(*rows, strict=True)) if rows else \
        ([], [], [], [], [])
    columns = {"inst": pa.array(inst, pa.int64()), "sem": pa.array(sem, pa.int64()),
               "op": pa.array(op, pa.string()), "value": pa.array(value, pa.int64())}
    if with_cond:
        columns["cond"] = pa.array(cond, pa.string())
    if dictionary:
        columns = {k: (v.dictionary_encode() if pa.types.is_string(v.type) else v)
                   for k, v in columns.items()}
    pq.write_table(pa.table(columns), path, row_group_size=group_rows)
    frame = pl.read_parquet(path).with_columns(
        pl.col(c).cast(pl.String).cast(pl.Categorical) for c in ("op", "cond") if c in columns)
    return frame


def _same(a: SemTable, b: SemTable) -> None:
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


rows_strategy = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from([0, 1, 5, 2**40]),
              st.sampled_from(OP_NAMES), st.integers(0, 4),
              st.sampled_from([*COND_NAMES, None])),
    max_size=40)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, dictionary=st.booleans(), group_rows=st.integers(1, 9),
       with_cond=st.booleans())
def test_file_read_in_row_groups_equals_the_frame(tmp_path_factory: pytest.TempPathFactory,
                                                  rows: list, dictionary: bool,
                                                  group_rows: int, with_cond: bool) -> None:
    path = tmp_path_factory.mktemp("sems") / "semaphores.parquet"
    frame = _write(path, rows, dictionary=dictionary, group_rows=group_rows,
                   with_cond=with_cond)
    ids = np.arange(10, dtype=np.int64)
    from_file = SemTable.from_parquet(path, ids, "semaphores.inst")
    node = positions(ids, frame["inst"].to_numpy())
    _same(from_file, SemTable.from_frame(frame, node, 10))
    # Rows end up grouped by instruction, table order within one.
    assert np.all(np.diff(from_file.node) >= 0)


def test_rows_out_of_order_are_grouped_with_their_values(tmp_path: Path) -> None:
    path = tmp_path / "semaphores.parquet"
    rows = [(2, 7, "signal", 1, None), (0, 3, "wait", 2, "eq"), (2, 3, "set", 4, None),
            (1, 7, "wait", 1, None), (0, 7, "sub", 9, "eq")]
    _write(path, rows, dictionary=True, group_rows=2)
    table = SemTable.from_parquet(path, np.arange(3, dtype=np.int64), "x")
    assert table.node.tolist() == [0, 0, 1, 2, 2]
    assert table.numbers.tolist() == [3, 7]
    assert table.sem.tolist() == [0, 1, 1, 1, 0]
    assert [OP_NAMES[o] for o in table.op] == ["wait", "sub", "wait", "signal", "set"]
    assert table.value.tolist() == [2, 9, 1, 1, 4]
    # A change's cond is >= whatever the file says; a null cond is >=.
    assert [COND_NAMES[c] for c in table.cond] == ["eq", "ge", "ge", "ge", "ge"]
    assert table.ptr.tolist() == [0, 2, 3, 5]
    assert table.log_ptr.tolist() == [0, 1, 3]  # sem 3: one change (set); sem 7: two


def test_a_row_naming_no_instruction_is_named(tmp_path: Path) -> None:
    path = tmp_path / "semaphores.parquet"
    _write(path, [(0, 0, "signal", 1, None), (12, 0, "wait", 1, None)], dictionary=True,
           group_rows=1)
    with pytest.raises(GraphError, match=r"semaphores.inst: 1 row\(s\) name no instruction "
                                         r"\(ids 12\)"):
        SemTable.from_parquet(path, np.arange(3, dtype=np.int64), "semaphores.inst")


def test_derive_reads_the_file_only_while_the_frame_is_the_files_own(tmp_path: Path) -> None:
    """An opened bundle's semaphores come from the file; a window's filtered frame (or an
    upgraded one) is read through its frame, and both give the same table."""
    b = tracekit.TraceBuilder("t")
    one = b.inst("tensor", "mm")
    two = b.inst("vector", "act")
    three = b.inst("scalar", "exp")
    b.signal(one, 4)
    b.signal(two, 4)
    b.wait(three, 4, 2)
    b.write(tmp_path / "t")
    trace = tracekit.open_trace(tmp_path / "t")
    assert trace.file_of("semaphores") == tmp_path / "t" / "semaphores.parquet"
    from dataclasses import replace

    filtered = replace(trace, frames={**trace.frames,
                                      "semaphores": trace.table("semaphores").filter(True)})
    assert filtered.file_of("semaphores") is None
    _same(derive(trace).sems, derive(filtered).sems)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1),
                                   st.integers(0, 4)), max_size=40))))
def test_successor_lists_equal_the_csr_of_the_reversed_edges(case: tuple) -> None:
    """`Graph.successors` transposes the predecessor CSR without a destinations array: the
    same lists, in the same (kind, dst) order, as sorting the reversed edges."""
    from tracekit.replay.graph import Graph, csr

    n, edges = case
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    kind = np.array([e[2] for e in edges], dtype=np.int8)
    ptr, in_src, in_kind = csr(n, src, dst, kind)
    graph = Graph(ids=np.arange(n), ptr=ptr, src=in_src, kind=in_kind,
                  sems=SemTable.empty(n))
    expected = csr(n, dst, src, kind)
    for got, want in zip(graph.successors(), expected, strict=True):
        assert got.tolist() == want.tolist()
