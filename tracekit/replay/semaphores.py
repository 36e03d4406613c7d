"""Semaphores as counters: the table in the form the compiled replay reads, and what a timeline
(replayed or observed) says about which operations released each wait.

A semaphore is a counter that starts at 0. `signal` adds its value, `sub` subtracts it and
`set` replaces the count, each when its instruction ends plus the machine's semaphore latency;
changes arriving at one instant are all applied before any wait looks at the count. A `wait`
lets its instruction start at the first moment, once the instruction is otherwise ready (its
engine free, its other dependencies done), at which the count satisfies its condition: count
>= value (`ge`, the default) or count == value (`eq`); an instruction with several waits needs
all of them at once. Which signal releases a wait is therefore decided by the timeline, not
fixed beforehand.

Worked example (latency 12): vector `act` ends at 148 and tensor `mm` at 64, each signalling
semaphore 0; scalar `exp` waits for 2. The count is 1 at 76 and 2 at 160: `exp` starts at 160,
released by the vector's signal, its binding constraint.

What a timeline records for each released wait is its *window*: the changes of its semaphore
that arrived since the previous release of a wait on the same semaphore by the same engine, up
to the one after which the condition held without a break until the release (its binder).
Those become the wait's `semaphore` edges: every signal the count needed, not only the last
one, so that slack and the critical path see each of them (a signal that ends later would
have moved the wait). For the example, the window of `exp` holds both signals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.trace.schema import SemOp, WaitCond

WAIT, SIGNAL, SUB, SET = range(4)
"""Codes of the semaphore operations (SemOp order)."""
GE, EQ = range(2)
"""Codes of the wait conditions (WaitCond order)."""

OP_NAMES: tuple[str, ...] = tuple(op.value for op in SemOp)
COND_NAMES: tuple[str, ...] = tuple(c.value for c in WaitCond)


@dataclass(frozen=True)
class SemTable:
    """The semaphores table as arrays, one entry per row, the rows grouped by instruction in
    graph row (id) order and in table order within one: instruction i's entries are
    ptr[i]:ptr[i + 1]. Every "row" of this module and of the replay's history is an entry here.

    `node`: the row of the instruction (graph row); `sem`: dense semaphore code 0..S-1, whose
    number in the trace is `numbers[code]`; `op`: WAIT, SIGNAL, SUB or SET; `value`; `cond`:
    GE or EQ (GE on every non-wait row). `log_ptr`: each semaphore's place in an
    arrival log of its changes (signal, sub, set): semaphore s owns log_ptr[s]:log_ptr[s + 1].
    """

    node: np.ndarray
    sem: np.ndarray
    op: np.ndarray
    value: np.ndarray
    cond: np.ndarray
    numbers: np.ndarray
    ptr: np.ndarray
    log_ptr: np.ndarray

    @property
    def size(self) -> int:
        return int(self.node.size)

    @property
    def semaphores(self) -> int:
        return int(self.numbers.size)

    @property
    def monotone(self) -> bool:
        """Whether counts only grow and every wait is >=: then whether a wait is ever released
        does not depend on the order of signals."""
        return bool(np.all((self.op == WAIT) | (self.op == SIGNAL)) and np.all(self.cond == GE))

    @staticmethod
    def empty(n: int) -> SemTable:
        zero = np.zeros(0, dtype=np.int64)
        return SemTable(zero, zero, np.zeros(0, np.int8), zero, np.zeros(0, np.int8), zero,
                        np.zeros(n + 1, dtype=np.int64), np.zeros(1, dtype=np.int64))

    @staticmethod
    def from_frame(sems: pl.DataFrame, node: np.ndarray, n: int) -> SemTable:
        """From the semaphores table (inst, sem, op, value, cond) and the graph row of each
        row's instruction; `n` instructions."""
        op = _enum_codes(sems["op"], OP_NAMES)
        cond = (_enum_codes(sems["cond"], COND_NAMES) if "cond" in sems.columns
                else np.zeros(sems.height, dtype=np.int8))
        return SemTable.from_arrays(node, sems["sem"].to_numpy(), op,
                                    sems["value"].to_numpy().astype(np.int64, copy=False),
                                    cond, n)

    @staticmethod
    def from_parquet(path: Path, ids: np.ndarray, what: str) -> SemTable:
        """From a semaphores table file as it is on disk (a bundle of the current schema),
        read a row group at a time: each group's columns go straight into the table's
        arrays, the enum columns as their dictionary codes, so no frame of the whole table
        (tens of bytes a row) is ever held. `ids`: the instructions' ids in row order;
        `what` names the file in the error of a row naming no instruction."""
        from tracekit.replay.graph import positions  # graph builds on this module

        n = ids.size
        names = pq.read_schema(path).names
        source = pq.ParquetFile(path, read_dictionary=[c for c in ("op", "cond") if c in names])
        columns = ["inst", "sem", "op", "value", *(["cond"] if "cond" in names else [])]
        m = source.metadata.num_rows
        index = np.int32 if max(n, m) < 2**31 - 1 else np.int64
        node = np.empty(m, dtype=index)
        raw = np.empty(m, dtype=index if _fits(source, names.index("sem"), index) else np.int64)
        op = np.empty(m, dtype=np.int8)
        value = np.empty(m, dtype=np.int64)
        cond = np.zeros(m, dtype=np.int8)
        at = 0
        for group in range(source.metadata.num_row_groups):
            table = source.read_row_group(group, columns=columns)
            rows = slice(at, at + table.num_rows)
            node[rows] = positions(ids, _integers(table.column("inst")), what)
            raw[rows] = _integers(table.column("sem"))
            op[rows] = _dictionary_codes(table.column("op"), OP_NAMES)
            value[rows] = _integers(table.column("value"))
            if "cond" in columns:
                cond[rows] = _dictionary_codes(table.column("cond"), COND_NAMES)
            at += table.num_rows
            del table
        return SemTable.from_arrays(node, raw, op, value, cond, n)

    @staticmethod
    def from_arrays(node: np.ndarray, raw: np.ndarray, op: np.ndarray, value: np.ndarray,
                    cond: np.ndarray, n: int) -> SemTable:
        """From the table's columns as arrays: per row its instruction's graph row, semaphore
        number, op and cond codes and value (int64); `n` instructions. The arrays may be
        reused (`raw` becomes the semaphore codes when it has the table's index type)."""
        m = node.size
        if raw.size and raw.min() >= 0 and raw.max() <= 4 * raw.size + 1024:
            # Small numbers, as semaphores have: a presence table, no sort.
            present = np.bincount(raw) > 0
            numbers, place = np.flatnonzero(present), np.cumsum(present) - 1
        else:
            numbers, raw = np.unique(raw, return_inverse=True)
            place = np.arange(numbers.size)
        index = np.int32 if max(n, numbers.size, m) < 2**31 - 1 else np.int64
        node = node.astype(index, copy=False)
        sem = raw.astype(index, copy=False)
        if not sem.flags.writeable:  # a frame's own buffer
            sem = sem.copy()
        ptr, changes, grouped = _codes(node, sem, place.astype(index), op, cond, n,
                                       numbers.size)
        if grouped:
            # Rows already grouped by instruction (producers write them so): the columns
            # serve as they are.
            out = (node, sem, op, value, cond)
        else:
            out = _grouped(node, ptr, sem, op, value, cond)
        log_ptr = np.r_[0, np.cumsum(changes)].astype(np.int64)
        return SemTable(*out, numbers=numbers.astype(np.int64), ptr=ptr, log_ptr=log_ptr)


def _fits(source: pq.ParquetFile, column: int, dtype: type[np.integer]) -> bool:
    """Whether every row group's statistics say column `column` holds values from 0 to the
    largest of `dtype` (False when a group has no statistics)."""
    top = np.iinfo(dtype).max
    for group in range(source.metadata.num_row_groups):
        stats = source.metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or not 0 <= stats.min <= stats.max <= top:
            return False
    return True


def _integers(column: pa.ChunkedArray) -> np.ndarray:
    """An integer column of a row group as int64 (nulls, which validation refuses, as 0)."""
    if column.null_count:
        column = pc.fill_null(column, 0)
    return column.to_numpy().astype(np.int64, copy=False)


def _dictionary_codes(column: pa.ChunkedArray, names: tuple[str, ...]) -> np.ndarray:
    """Codes (places in `names`) of an enum column read as a dictionary (or plain strings):
    nulls and unknown names are code 0, as `_enum_codes` gives them."""
    parts = []
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        lut = np.array([names.index(v) if v in names else 0
                        for v in chunk.dictionary.to_pylist()] or [0], dtype=np.int8)
        codes = lut[pc.fill_null(chunk.indices, 0).to_numpy()]
        if chunk.null_count:
            codes[chunk.is_null().to_numpy(zero_copy_only=False)] = 0
        parts.append(codes)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)


def _enum_codes(series: pl.Series, names: tuple[str, ...]) -> np.ndarray:
    """Codes (places in `names`) of an enum column, by its few distinct values (nulls and
    unknown names: code 0, which validation reports)."""
    if series.dtype != pl.Categorical:
        series = series.cast(pl.String).cast(pl.Categorical)
    distinct = series.unique().drop_nulls()
    physical = distinct.to_physical().to_numpy().astype(np.int64)
    lut = np.zeros(int(physical.max(initial=0)) + 1, dtype=np.int8)
    for code, name in zip(physical, distinct.cast(pl.String).to_list(), strict=True):
        lut[code] = names.index(name) if name in names else 0
    return lut[series.to_physical().fill_null(0).to_numpy()]


@numba.njit(cache=True, nogil=True)
def _codes(node, sem, place, op, cond, n, n_sem):  # pragma: no cover - compiled
    """One pass over the rows: semaphore numbers become codes in place (place[number]), cond
    is GE on every non-wait; returns each instruction's place in the grouping by instruction
    (ptr), the changes (non-waits) per semaphore code, and whether the rows are grouped by
    instruction already (instructions never decrease)."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    changes = np.zeros(n_sem, dtype=np.int64)
    grouped = True
    for r in range(node.size):
        code = place[sem[r]]
        sem[r] = code
        if op[r] != WAIT:
            cond[r] = GE
            changes[code] += 1
        ptr[node[r] + 1] += 1
        if r > 0 and node[r] < node[r - 1]:
            grouped = False
    for i in range(n):
        ptr[i + 1] += ptr[i]
    return ptr, changes, grouped


@numba.njit(cache=True, nogil=True)
def _grouped(node, ptr, sem, op, value, cond):  # pragma: no cover - compiled
    """The rows grouped by instruction (a counting sort that keeps table order) at the places
    `ptr` gives: node, sem, op, value and cond in that order."""
    m = node.size
    fill = ptr[:-1].copy()
    out_node = np.empty(m, dtype=node.dtype)
    out_sem = np.empty(m, dtype=sem.dtype)
    out_op = np.empty(m, dtype=np.int8)
    out_value = np.empty(m, dtype=np.int64)
    out_cond = np.empty(m, dtype=np.int8)
    for r in range(m):
        j = fill[node[r]]
        fill[node[r]] += 1
        out_node[j] = node[r]
        out_sem[j] = sem[r]
        out_op[j] = op[r]
        out_value[j] = value[r]
        out_cond[j] = cond[r]
    return out_node, out_sem, out_op, out_value, out_cond


@numba.njit(cache=True, inline="always")
def apply(count, op, value):  # pragma: no cover - compiled
    """The count after a change."""
    if op == SIGNAL:
        return count + value
    if op == SUB:
        return count - value
    return value  # SET


@numba.njit(cache=True, inline="always")
def holds(count, cond, value):  # pragma: no cover - compiled
    return count == value if cond == EQ else count >= value


@dataclass(frozen=True)
class Released:
    """What a timeline says of the semaphores: the changes of each semaphore in arrival order
    (`log`: rows of the table, semaphore s at SemTable.log_ptr[s]:..., `arrived` of them;
    `log_count`: the count after each), and for each wait row how many changes of its
    semaphore had arrived when its instruction started (`upto`, -1 for a wait never
    released)."""

    log: np.ndarray
    log_count: np.ndarray
    arrived: np.ndarray
    upto: np.ndarray


def window_edges(table: SemTable, released: Released, node_engine: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The semaphore edges (src, dst graph rows) of every released wait's window (module
    docstring), and per row its binder's place in its semaphore's log (-1: none in its
    window, or not a released wait; -2: a wait whose condition never holds, which only an
    observed timeline can show). `node_engine`: each graph row's engine code. A wait's chain
    is its engine's waits on its semaphore; the waits are taken in instruction (id) order,
    which in a valid bundle is queue order on every engine, so each comes after the previous
    wait of its chain. The edges come grouped by destination, in ascending order."""
    n_eng = int(node_engine.max(initial=-1)) + 1
    binder, total = _binders(table.node, table.sem, table.value, table.cond, table.op,
                             table.log_ptr, released.log_count, released.arrived,
                             released.upto, node_engine, n_eng, table.semaphores)
    src, dst = _window_edges(table.node, table.sem, table.value, table.cond, table.op,
                             table.log_ptr, released.log, released.log_count, released.upto,
                             node_engine, n_eng, table.semaphores, binder, total)
    return src, dst, binder


def window_edge_count(table: SemTable, released: Released, node_engine: np.ndarray) -> int:
    """How many semaphore edges `window_edges` would give, without building them."""
    n_eng = int(node_engine.max(initial=-1)) + 1
    return int(_binders(table.node, table.sem, table.value, table.cond, table.op,
                        table.log_ptr, released.log_count, released.arrived, released.upto,
                        node_engine, n_eng, table.semaphores)[1])


def binder_ends(table: SemTable, released: Released, node_engine: np.ndarray,
                end: np.ndarray) -> np.ndarray:
    """Per graph row, the latest end among the changes of its waits' windows (`window_edges`)
    in that timeline, without building the edges: a log is in arrival order, so each window's
    latest change is its binder. The minimum int64 for a row with none. `end`: per graph row
    (int64); `node_engine`: each row's engine code."""
    n_eng = int(node_engine.max(initial=-1)) + 1
    binder, _ = _binders(table.node, table.sem, table.value, table.cond, table.op,
                         table.log_ptr, released.log_count, released.arrived, released.upto,
                         node_engine, n_eng, table.semaphores)
    return _binder_ends(table.node, table.sem, table.log_ptr, released.log, binder,
                        np.asarray(end, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _binder_ends(node, sem, log_ptr, log, binder, end):  # pragma: no cover - compiled
    out = np.full(end.size, np.iinfo(np.int64).min, dtype=np.int64)
    for r in range(node.size):
        if binder[r] >= 0:
            at = end[node[log[log_ptr[sem[r]] + binder[r]]]]
            if at > out[node[r]]:
                out[node[r]] = at
    return out


@numba.njit(cache=True, nogil=True)
def _binders(node, sem, value, cond, op, log_ptr, log_count, arrived, upto, node_engine,
             n_eng, n_sem):  # pragma: no cover - compiled
    """Each wait row's binder (window_edges), and the number of window edges."""
    m = node.size
    binder = np.full(m, -1, dtype=np.int64)
    covered = np.full(n_eng * n_sem, -1, dtype=np.int64)  # per chain, the log place covered
    total = 0
    for r in range(m):
        if op[r] != WAIT or upto[r] < 0:
            continue  # not a wait, or never released
        s = sem[r]
        chain = node_engine[node[r]] * n_sem + s
        before = covered[chain]
        base = log_ptr[s]
        k = upto[r] - 1
        held = holds(log_count[base + k] if k >= 0 else 0, cond[r], value[r])
        if held:
            # Held when it started: since the change after which it held without a break.
            # Changes up to `before` are covered by the previous wait of the chain already.
            while k > before and holds(log_count[base + k], cond[r], value[r]):
                k -= 1
            b = k + 1
            if k == before and holds(log_count[base + k] if k >= 0 else 0, cond[r], value[r]):
                b = -1  # held before the window: no change of it was needed
        else:
            # Not satisfied when it started (an observed timeline that contradicts the
            # semaphore): the first later change after which it holds, if any (else -2).
            b = -2
            for j in range(upto[r], arrived[s]):
                if holds(log_count[base + j], cond[r], value[r]):
                    b = j
                    break
        binder[r] = b
        if b > before:
            covered[chain] = b
            total += b - before
        elif b >= 0 and not held:
            total += 1
    return binder, total


@numba.njit(cache=True, nogil=True)
def _window_edges(node, sem, value, cond, op, log_ptr, log, log_count, upto, node_engine,
                  n_eng, n_sem, binder, total):  # pragma: no cover - compiled
    """The window edges of the binders, in row order (so grouped by destination)."""
    src = np.empty(total, dtype=np.int64)
    dst = np.empty(total, dtype=np.int64)
    covered = np.full(n_eng * n_sem, -1, dtype=np.int64)
    e = 0
    for r in range(node.size):
        if op[r] != WAIT or upto[r] < 0:
            continue
        s = sem[r]
        chain = node_engine[node[r]] * n_sem + s
        before = covered[chain]
        b = binder[r]
        lo, hi = 0, 0
        if b > before:
            covered[chain] = b
            lo, hi = before + 1, b + 1
        elif b >= 0:
            k = upto[r] - 1
            if not holds(log_count[log_ptr[s] + k] if k >= 0 else 0, cond[r], value[r]):
                # Started before the change it needed, which an earlier wait of its chain
                # covers: the edge all the same, so that the contradiction shows.
                lo, hi = b, b + 1
        for j in range(lo, hi):
            src[e] = node[log[log_ptr[s] + j]]
            dst[e] = node[r]
            e += 1
    return src, dst


def observed_release(table: SemTable, start: np.ndarray, end: np.ndarray) -> Released:
    """What the observed timeline says of the semaphores: changes arrive at their
    instruction's observed end (ties in table order), and a wait sees every change that
    arrived at or before its instruction's observed start. `start`, `end`: per graph row."""
    changes = np.flatnonzero(table.op != WAIT)
    # By end (a stable sort: ties in row order; ends mostly rise with the rows already),
    # then grouped by semaphore keeping that order.
    by_end = changes[np.argsort(end[table.node[changes]], kind="stable")]
    # Rows in the table's index type, as the replay's log holds them: the kernels that read
    # a log compile once for both timelines.
    log = by_end[counting_order(table.sem[by_end], table.semaphores)].astype(table.node.dtype)
    arrived = np.diff(table.log_ptr)
    log_count = log_counts(table, log, arrived)
    upto = _upto(table.sem, table.op, table.node, table.log_ptr, log, end, start)
    return Released(log=log, log_count=log_count, arrived=arrived, upto=upto)


@numba.njit(cache=True, nogil=True)
def counting_order(key, buckets):  # pragma: no cover - compiled
    """The stable order of integer keys 0..buckets-1 (a counting sort)."""
    start = np.zeros(buckets + 1, dtype=np.int64)
    for k in key:
        start[k + 1] += 1
    for b in range(buckets):
        start[b + 1] += start[b]
    order = np.empty(key.size, dtype=np.int64)
    for i in range(key.size):
        order[start[key[i]]] = i
        start[key[i]] += 1
    return order


def log_counts(table: SemTable, log: np.ndarray, arrived: np.ndarray) -> np.ndarray:
    """The count after each arrived change of each semaphore's log (`log`, `arrived`: as in
    Released; the places past `arrived` are 0)."""
    return _counts(table.op, table.value, table.log_ptr, log, arrived)


@numba.njit(cache=True, nogil=True)
def _counts(op, value, log_ptr, log, arrived):  # pragma: no cover - compiled
    log_count = np.zeros(log.size, dtype=np.int64)
    for s in range(log_ptr.size - 1):
        count = 0
        for k in range(log_ptr[s], log_ptr[s] + arrived[s]):
            count = apply(count, op[log[k]], value[log[k]])
            log_count[k] = count
    return log_count


@numba.njit(cache=True, nogil=True)
def _upto(sem, op, node, log_ptr, log, end, start):  # pragma: no cover - compiled
    """Per wait row, the changes of its semaphore that ended at or before its start (the
    first change ending after it), searched from the previous wait of the semaphore's answer:
    waits on a semaphore mostly start in row order, so that is a few steps each."""
    log_end = np.empty(log.size)
    for k in range(log.size):
        log_end[k] = end[node[log[k]]]
    upto = np.full(sem.size, -1, dtype=log.dtype)  # as the replay's upto
    hint = log_ptr[:-1].copy()
    for r in range(sem.size):
        if op[r] == WAIT:
            s = sem[r]
            hint[s] = upper_from(log_end, log_ptr[s], log_ptr[s + 1], start[node[r]], hint[s])
            upto[r] = hint[s] - log_ptr[s]
    return upto


@numba.njit(cache=True, inline="always")
def upper_from(a, lo, hi, x, hint):  # pragma: no cover - compiled
    """The first index in [lo, hi) whose a[] is > x (hi if none), a non-decreasing, searched
    outward from `hint` (the answer for a nearby x): a gallop of a few steps when x moved
    little, where a binary search would cross the whole range each time."""
    h = min(max(hint, lo), hi)
    if h == lo or a[h - 1] <= x:  # the answer is h or above
        left, step = h, 1
        while True:
            probe = left + step - 1
            if probe >= hi:
                right = hi
                break
            if a[probe] > x:
                right = probe
                break
            left = probe + 1
            step *= 2
    else:  # a[h - 1] > x: the answer is below h
        right, step = h - 1, 1
        while True:
            probe = right - step
            if probe < lo:
                left = lo
                break
            if a[probe] <= x:
                left = probe + 1
                break
            right = probe
            step *= 2
    while left < right:  # the answer is in [left, right]
        mid = (left + right) // 2
        if a[mid] <= x:
            left = mid + 1
        else:
            right = mid
    return left
