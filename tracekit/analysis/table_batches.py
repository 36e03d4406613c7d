"""A trace's table read in batches of rows straight into NumPy, with the columns' logical
types: what the bug checks read of the large tables without a whole polars copy of them.

    for first, batch in batches(trace, "memory", ["inst", "addr"]):
        values, present = ints(batch, "addr")     # int64, nulls as 0, and which are not null

Reading goes to the Parquet file, not through `Trace.read`: the tables read here (memory, and
the work columns of instructions) are the same in every schema version, as no upgrade step
changes them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import TableReadError, first_line
from tracekit.trace.bundle import Trace
from tracekit.trace.schema import TABLES

BATCH_ROWS = 1 << 20
"""Rows read at a time."""

NULL_CODE, OTHER_CODE = -2, -1
"""Codes of a null name and of a name outside the values asked for (`codes`)."""


def _damaged(trace: Trace, table: str, exc: Exception) -> TableReadError:
    path = trace.path / TABLES[table].file
    return TableReadError(f"{path}: cannot read the table ({first_line(exc)}). Run `tracekit "
                          f"validate {trace.path}` for details; re-export the bundle.")


def row_groups(trace: Trace, table: str) -> np.ndarray:
    """Rows of each row group of a table's file."""
    try:
        with pq.ParquetFile(trace.path / TABLES[table].file) as parquet:
            meta = parquet.metadata
            return np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)],
                            dtype=np.int64)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _damaged(trace, table, exc) from exc


def batches(trace: Trace, table: str, columns: list[str], groups: list[int] | None = None,
            batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of a table (of the given row groups, in order) a batch at a time, with the
    table row of each batch's first; columns the file lacks are left out of the batches
    (`ints` and `codes` read them as nulls)."""
    try:
        with pq.ParquetFile(trace.path / TABLES[table].file) as parquet:
            meta = parquet.metadata
            starts = np.r_[0, np.cumsum([meta.row_group(g).num_rows
                                         for g in range(meta.num_row_groups)])]
            present = [c for c in columns if c in set(parquet.schema_arrow.names)]
            for g in range(meta.num_row_groups) if groups is None else groups:
                first = int(starts[g])
                for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[g],
                                                  columns=present, use_threads=False):
                    yield first, batch
                    first += batch.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _damaged(trace, table, exc) from exc


def ints(batch: pa.RecordBatch, name: str, null: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An integer column of a batch as int64 (nulls as `null`) and which rows are not null."""
    n = batch.num_rows
    if name not in batch.schema.names:
        return np.full(n, null, np.int64), np.zeros(n, dtype=bool)
    column = batch.column(name)
    if pa.types.is_null(column.type):
        return np.full(n, null, np.int64), np.zeros(n, dtype=bool)
    if column.null_count:
        present = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        column = pc.fill_null(pc.cast(column, pa.int64()), null)
    else:
        present = np.ones(n, dtype=bool)
        column = pc.cast(column, pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64), present


def codes(batch: pa.RecordBatch, name: str, values: tuple[str, ...]) -> np.ndarray:
    """A name column of a batch as int8 codes: places in `values`, OTHER_CODE for another
    name, NULL_CODE for a null (dictionary columns by their few distinct names)."""
    if name not in batch.schema.names:
        return np.full(batch.num_rows, NULL_CODE, np.int8)
    return _codes(batch.column(name), values)


def _codes(column: pa.Array, values: tuple[str, ...]) -> np.ndarray:
    if pa.types.is_null(column.type):
        return np.full(len(column), NULL_CODE, np.int8)
    if pa.types.is_dictionary(column.type):
        lut = np.r_[_codes(column.dictionary, values), NULL_CODE].astype(np.int8)
        indices = pc.fill_null(column.indices, len(lut) - 1)
        return lut[np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)]
    place = pc.index_in(pc.cast(column, pa.string()), value_set=pa.array(values))
    out = np.asarray(pc.fill_null(place, OTHER_CODE).to_numpy(zero_copy_only=False),
                     dtype=np.int8)
    if column.null_count:
        out[~np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = (
            NULL_CODE)
    return out


def read_ints(trace: Trace, table: str, names: list[str], order: str | None = None,
              batch_rows: int = BATCH_ROWS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Whole integer columns of a table, each as (int64 values with nulls as 0, which are
    not null), in the order of column `order` when given (the rows sorted by it, stably)."""
    rows = int(row_groups(trace, table).sum())
    wanted = names if order is None or order in names else [*names, order]
    out = {name: (np.empty(rows, np.int64), np.empty(rows, dtype=bool)) for name in wanted}
    for first, batch in batches(trace, table, wanted, batch_rows=batch_rows):
        at = slice(first, first + batch.num_rows)
        for name in wanted:
            out[name][0][at], out[name][1][at] = ints(batch, name)
    if order is not None:
        key = out[order][0]
        if key.size > 1 and np.any(key[1:] < key[:-1]):
            by = np.argsort(key, kind="stable")
            out = {name: (values[by], present[by]) for name, (values, present) in out.items()}
        if order not in names:
            del out[order]
    return out
