"""The import's vectorised helpers: linking by nearest time and observed counts (compiled), and
the parsers of the profile's text columns (wait conditions, semaphore names, offsets, location
labels, SBUF partition lists).

Linking by time: candidates (group, key, id) = (0, 100, 5), (0, 200, 6), (0, 200, 7); a query
(0, 150) is 50 from both 100 and 200 and goes to the earlier key, id 5; a query (0, 210) goes to
key 200 and, of the two rows there, to the lower id, 6; with a tolerance of 5, (0, 150) links to
nothing.
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl

ENGINE_ALIASES = {"pe": "tensor", "act": "scalar", "dve": "vector", "pool": "gpsimd",
                  "sp": "sync"}
"""The glossary's engine aliases: Tensor = PE, Vector = DVE, Scalar = ACT, GpSimd = POOL,
Sync = SP."""
SPACE_OF_LABEL = {"SB": "sbuf", "INPUT": "hbm", "OUTPUT": "hbm", "VIRTUAL": "hbm"}
"""DMA location labels (brackets stripped) and the memory space each names."""
WAIT_PATTERN = r"\$S\[\s*(\d+)\s*\]\s*(>=|==|>)\s*(\d+)"
"""A semaphore condition in operand text: `$S[k]>=v`, `$S[k]>v`, `$S[k]==v`."""


@numba.njit(cache=True, nogil=True)
def nearest_in_groups(bounds, keys, q_group, q_time, tolerance):  # pragma: no cover - compiled
    """The position in `keys` nearest to each query's time within its group (-1: the group is
    empty or nothing lies within `tolerance`). Rows are sorted by (group, key, id); group g is
    keys[bounds[g]:bounds[g+1]]. A tie in distance goes to the earlier key; equal keys to the
    first row (the lowest id)."""
    out = np.full(q_time.size, -1, dtype=np.int64)
    for j in range(q_time.size):
        g = q_group[j]
        if g < 0:
            continue
        lo, hi = bounds[g], bounds[g + 1]
        if lo == hi:
            continue
        t = q_time[j]
        p = lo + np.searchsorted(keys[lo:hi], t, side="left")
        best = -1
        dist = 0
        if p < hi:
            best = p
            dist = keys[p] - t
        if p > lo:
            before = keys[p - 1]
            if best < 0 or t - before <= dist:
                best = lo + np.searchsorted(keys[lo:hi], before, side="left")
                dist = t - before
        if dist <= tolerance:
            out[j] = best
    return out


@numba.njit(cache=True, nogil=True)
def last_at_or_before(bounds, keys, q_group, q_time):  # pragma: no cover - compiled
    """The position of the last key <= each query's time within its group (-1: none). Rows
    sorted by (group, key, order); group g is keys[bounds[g]:bounds[g+1]]."""
    out = np.full(q_time.size, -1, dtype=np.int64)
    for j in range(q_time.size):
        g = q_group[j]
        if g < 0:
            continue
        lo, hi = bounds[g], bounds[g + 1]
        p = lo + np.searchsorted(keys[lo:hi], q_time[j], side="right") - 1
        if p >= lo:
            out[j] = p
    return out


def _codes(groups: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense codes of candidate groups (sorted distinct values) and of the queries' groups
    (-1 where the candidates have no such group)."""
    distinct = np.unique(groups)
    codes = np.searchsorted(distinct, groups)
    pos = np.minimum(np.searchsorted(distinct, queries), max(distinct.size - 1, 0))
    q = np.where((distinct.size > 0) & (distinct[pos] == queries), pos, -1) \
        if distinct.size else np.full(queries.size, -1, dtype=np.int64)
    return codes.astype(np.int64), q.astype(np.int64), int(distinct.size)


def _sorted(group: np.ndarray, key: np.ndarray, tie: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = pl.DataFrame({"g": group, "k": key, "t": tie}).select(
        pl.arg_sort_by(["g", "k", "t"])).to_series().to_numpy()
    return group[order], key[order], order


def link_nearest(group: np.ndarray, key: np.ndarray, ident: np.ndarray, q_group: np.ndarray,
                 q_time: np.ndarray, tolerance: int) -> np.ndarray:
    """For each query (q_group, q_time) the `ident` of the candidate (group, key, ident) of the
    same group whose key is nearest to q_time, within `tolerance`; -1 where none. Ties: the
    earlier key, then the lower ident."""
    if group.size == 0 or q_group.size == 0:
        return np.full(q_group.size, -1, dtype=np.int64)
    codes, qcodes, count = _codes(group, q_group)
    codes, keys, order = _sorted(codes, key, ident)
    bounds = np.searchsorted(codes, np.arange(count + 1)).astype(np.int64)
    pos = nearest_in_groups(bounds, keys.astype(np.int64), qcodes,
                            q_time.astype(np.int64), np.int64(tolerance))
    ids = ident[order]
    return np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def count_at(sem: np.ndarray, ts: np.ndarray, order: np.ndarray, value: np.ndarray,
             q_sem: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """For each query (q_sem, q_time) the value of the last update (sem, ts, value; `order`
    breaks ties of ts) at or before q_time, 0 when there is none: the observed count."""
    if q_sem.size == 0 or sem.size == 0:
        return np.zeros(q_sem.size, dtype=np.int64)
    codes, qcodes, count = _codes(sem, q_sem)
    codes, keys, perm = _sorted(codes, ts, order)
    bounds = np.searchsorted(codes, np.arange(count + 1)).astype(np.int64)
    pos = last_at_or_before(bounds, keys.astype(np.int64), qcodes, q_time.astype(np.int64))
    values = value[perm]
    return np.where(pos >= 0, values[np.maximum(pos, 0)], 0)


def parse_waits(operands: pl.Series) -> pl.DataFrame:
    """The semaphore conditions in operand text, one row per condition: row (index into
    `operands`), sem, value, cond (ge or eq). `$S[k]>=v` is >= v, `$S[k]>v` is >= v + 1,
    `$S[k]==v` is == v; other text is ignored."""
    text = pl.DataFrame({"text": operands}).with_row_index("row")
    text = text.filter(pl.col("text").str.contains("$S[", literal=True))
    found = (text.select("row", pl.col("text").str.extract_all(WAIT_PATTERN).alias("m"))
             .explode("m").drop_nulls("m"))
    # One pass of the pattern per condition gives its three parts.
    parts = pl.col("m").str.extract_groups(WAIT_PATTERN)
    return found.select(pl.col("row").cast(pl.Int64), parts.alias("parts")).unnest(
        "parts").select(
        "row", sem=pl.col("1").cast(pl.Int64),
        value=pl.col("3").cast(pl.Int64) + (pl.col("2") == ">").cast(pl.Int64),
        cond=pl.when(pl.col("2") == "==").then(pl.lit("eq")).otherwise(pl.lit("ge")))


def semaphore_number(text: pl.Expr) -> pl.Expr:
    """n of `S[n]` (the form DmaPacketAggregated.semaphore_id shows), or of a bare integer."""
    return pl.coalesce(text.str.extract(r"S\[\s*(\d+)\s*\]", 1),
                       text.str.extract(r"^\s*(\d+)\s*$", 1)).cast(pl.Int64)


def parse_offset(text: pl.Expr) -> pl.Expr:
    """The first number of an offset like `[0x2000]` or `[512, 0]` (hex or decimal)."""
    token = text.str.extract(r"(0[xX][0-9a-fA-F]+|\d+)", 1)
    return (pl.when(token.str.starts_with("0x") | token.str.starts_with("0X"))
            .then(token.str.slice(2).str.to_integer(base=16, strict=False))
            .otherwise(token.str.to_integer(base=10, strict=False)))


def location_space(label: pl.Expr) -> pl.Expr:
    """The memory space of a DMA location label (`[SB]`, `[[INPUT]]`, ...); null if unknown."""
    bare = label.str.replace_all(r"[\[\]\s]", "").str.to_uppercase()
    return bare.replace_strict(SPACE_OF_LABEL, default=None, return_dtype=pl.String)


def partition_runs(texts: pl.Series) -> pl.DataFrame:
    """Contiguous runs of SBUF partition lists (`0,1`, `0-15`, `0-3,8-11`, `[0, 1]`): one row
    per run with text, partition (its first), partitions (its length) and total (partitions in
    the whole list). Texts that hold no partition, or a malformed item, give no row. Each
    distinct text is parsed once."""
    item = r"^(\d+)(?:-(\d+))?$"
    distinct = pl.DataFrame({"text": texts.unique().drop_nulls()})
    items = (distinct.select("text", pl.col("text").str.replace_all(r"[\[\]\s]", "")
                             .str.split(",").alias("item"))
             .explode("item").filter(pl.col("item").str.len_chars() > 0)
             .select("text", lo=pl.col("item").str.extract(item, 1).cast(pl.Int64),
                     hi=pl.coalesce(pl.col("item").str.extract(item, 2),
                                    pl.col("item").str.extract(item, 1)).cast(pl.Int64)))
    bad = items.filter(pl.col("lo").is_null() | (pl.col("hi") < pl.col("lo")))["text"]
    items = items.filter(~pl.col("text").is_in(bad.implode())).sort(["text", "lo", "hi"])
    runs = (items.with_columns(reach=pl.col("hi").cum_max().over("text"))
            .with_columns(new=(pl.col("lo") > pl.col("reach").shift(1).over("text") + 1)
                          .fill_null(True))
            .with_columns(run=pl.col("new").cast(pl.Int64).cum_sum())
            .group_by("text", "run", maintain_order=True)
            .agg(partition=pl.col("lo").min(), last=pl.col("hi").max())
            .with_columns(partitions=pl.col("last") - pl.col("partition") + 1))
    return (runs.with_columns(total=pl.col("partitions").sum().over("text"))
            .select("text", "partition", "partitions", "total"))


def engine_name(engine: pl.Expr) -> pl.Expr:
    """An engine name of the profile as tracekit names it: lower case, aliases resolved."""
    low = engine.str.strip_chars().str.to_lowercase()
    return low.replace(ENGINE_ALIASES)


def union_ns(start: np.ndarray, end: np.ndarray) -> int:
    """Length of the union of intervals [start, end)."""
    if start.size == 0:
        return 0
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], s.size) - 1
    return int((reach[last] - s[first]).clip(min=0).sum())
