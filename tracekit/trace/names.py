"""Names from traces (engines, opcodes, layers) in outputs: a name of any length is kept once
(a dictionary code per row), and every output that repeats a name shows it shortened to a
bounded form, so that no output or memory grows with rows times name length.

    shortened("void at::native::elementwise_kernel<128, 4, ...>" (15,234 chars), 120)
    -> 'void at::native::elementwise_kernel<128, 4, at::nat…[15,234 chars #3f2a9c1e]…, int)>'

A name up to the limit is unchanged. A longer one keeps its head and its tail around a marker
with its length and a hash of the whole, so that two long names that differ only in the middle
stay apart. The limits: SHOWN for what people read (terminal, Markdown, HTML, messages,
Perfetto slices), KEPT for JSON reports; Parquet outputs keep names whole (dictionary-encoded,
each distinct name stored once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import polars as pl

SHOWN = 200
"""Characters of a name shown to people (text, Markdown, HTML, messages, Perfetto slices)."""

KEPT = 4096
"""Characters of a name kept in JSON reports; real kernel names (C++ templates from a
profiler, often 10-20 thousand characters) are longer and keep their head and tail."""

_NAME_TYPES = (pl.String, pl.Categorical)


def shortened(name: str, limit: int = SHOWN) -> str:
    """`name` if it has at most `limit` characters, else its head and tail around a marker
    with its length and hash, `limit` characters in all (module docstring)."""
    if len(name) <= limit:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    marker = f"…[{len(name):,} chars #{digest}]…"
    room = max(limit - len(marker), 2)
    head = room * 2 // 3
    return name[:head] + marker + name[len(name) - (room - head):]


def is_name_column(dtype: pl.DataType) -> bool:
    """Whether a column of this type holds names (strings, dictionary-coded or not)."""
    return dtype in _NAME_TYPES or isinstance(dtype, pl.Enum)


def shortened_column(column: pl.Series, limit: int = SHOWN) -> pl.Series:
    """A name column (String, Categorical or Enum) as String with every name `shortened`.
    Dictionary-coded names are looked at once per distinct name and each row gets the short
    form by its code, so the cost is rows x `limit`, never rows x name length."""
    if column.dtype == pl.String:
        if (column.str.len_chars().max() or 0) <= limit:  # type: ignore[operator]
            return column
        column = column.cast(pl.Categorical)
    distinct = column.unique().drop_nulls()
    names = distinct.cast(pl.String)
    if (names.str.len_chars().max() or 0) <= limit:  # type: ignore[operator]
        return column.cast(pl.String)
    short = [shortened(name, limit) for name in names.to_list()]
    return column.to_physical().replace_strict(
        distinct.to_physical(), pl.Series(short, dtype=pl.String), default=None,
        return_dtype=pl.String).alias(column.name)


NAME_COLUMNS = frozenset({"engine", "opcode", "layer", "name", "cause", "key", "window",
                          "src_engine", "dst_engine", "ea", "eb"})
"""String columns of report frames that hold names (a dictionary-coded column always does);
other text columns (messages, hints) are sentences, shown whole."""


def shortened_names(frame: pl.DataFrame, limit: int = SHOWN) -> pl.DataFrame:
    """`frame` with its name columns (Categorical or Enum, and String ones in NAME_COLUMNS)
    as String of shortened names (`shortened_column`); other columns unchanged."""
    columns = [name for name, dtype in frame.schema.items()
               if is_name_column(dtype) and (dtype != pl.String or name in NAME_COLUMNS)]
    if not columns:
        return frame
    return frame.with_columns([shortened_column(frame[c], limit) for c in columns])


def map_names(column: pl.Series, function: Callable[[str], Any],
              dtype: pl.DataType) -> pl.Series:
    """`function` of each row's name (null stays null), called once per distinct name and
    given to the rows by their codes (no row's name is copied)."""
    coded = column if column.dtype != pl.String else column.cast(pl.Categorical)
    distinct = coded.unique().drop_nulls()
    values = pl.Series([function(name) for name in distinct.cast(pl.String).to_list()],
                       dtype=dtype)
    return coded.to_physical().replace_strict(distinct.to_physical(), values, default=None,
                                              return_dtype=dtype).alias(column.name)
