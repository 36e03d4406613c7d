"""The dependency graph of a trace, derived with vectorized NumPy and kept as a predecessor CSR
sorted by destination.

For instructions 0 (dma.q0 load, signals sem 0), 1 (tensor matmul, waits sem 0 >= 1) and
2 (tensor matmul): edges 0 -> 1 (semaphore) and 1 -> 2 (order); `preds(1)` is [0] and
`preds(2)` is [1].

- order: each instruction after the previous one (by seq) on its in-order engine;
- semaphore: a wait for value v on semaphore s after the signal that first brings s's count to
  v, signals counted in order of observed end (by id when untimed); a wait no signal satisfies
  is recorded in `unsatisfied`, not an edge;
- data: the producer's explicit edges from deps.parquet (their own kind kept).

Rows are instruction positions 0..n-1 in id order (`ids` maps them back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.trace.bundle import Trace
from tracekit.trace.schema import EdgeKind

KINDS: tuple[EdgeKind, ...] = tuple(EdgeKind)
"""Edge kind codes: index into this tuple."""

ORDER, SEMAPHORE, DATA, MEMORY, RESOURCE = range(5)


@dataclass(frozen=True)
class Graph:
    """Predecessor CSR: the edges into node j are `src[ptr[j]:ptr[j+1]]`, of kinds
    `kind[...]` (codes of KINDS), sorted by (dst, kind, src)."""

    ids: np.ndarray
    ptr: np.ndarray
    src: np.ndarray
    kind: np.ndarray
    unsatisfied: pl.DataFrame

    @property
    def nodes(self) -> int:
        return int(self.ids.size)

    @property
    def edges(self) -> int:
        return int(self.src.size)

    def edge_frame(self, kind: EdgeKind | None = None) -> pl.DataFrame:
        """Edges as (src, dst, kind) in instruction ids, optionally of one kind only."""
        dst = np.repeat(np.arange(self.nodes), np.diff(self.ptr))
        frame = pl.DataFrame({
            "src": self.ids[self.src], "dst": self.ids[dst],
            "kind": pl.Series([k.value for k in KINDS])[self.kind.astype(np.int64)],
        })
        return frame if kind is None else frame.filter(pl.col("kind") == kind.value)

    def preds(self, node: int) -> np.ndarray:
        return self.src[self.ptr[node]:self.ptr[node + 1]]


def _codes(series: pl.Series) -> np.ndarray:
    """Integer codes of a name column (equal names, equal codes)."""
    if series.dtype != pl.Categorical:
        series = series.cast(pl.String).cast(pl.Categorical)
    return series.to_physical().to_numpy().astype(np.int64)


def _group_first(sorted_keys: np.ndarray) -> np.ndarray:
    """For each element of a sorted array, the index of the first element equal to it."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.repeat(starts, np.diff(np.r_[starts, sorted_keys.size]))


class GraphError(TracekitError):
    """The trace's tables cannot form a dependency graph (a reference to no instruction)."""


def positions(ids: np.ndarray, values: np.ndarray, what: str = "a reference") -> np.ndarray:
    """Row positions of instruction ids in the sorted `ids` (the identity when ids are
    0..n-1, the usual case); GraphError when a value names no instruction."""
    values = np.asarray(values, dtype=np.int64)
    if ids.size and ids[0] == 0 and ids[-1] == ids.size - 1:
        found = (values >= 0) & (values < ids.size)
        pos = values
    else:
        pos = np.minimum(np.searchsorted(ids, values), max(ids.size - 1, 0))
        found = ids[pos] == values if ids.size else np.zeros(values.size, dtype=bool)
    if not found.all():
        bad = np.unique(values[~found])
        raise GraphError(
            f"{what}: {int((~found).sum()):,} row(s) name no instruction (ids "
            f"{', '.join(map(str, bad[:5]))}{' ...' if bad.size > 5 else ''}). Run "
            f"`tracekit validate` on the trace; drop those rows or add the instructions.")
    return pos


def queue_order(engine: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rows sorted by (engine, key), ties in row (id) order: with key = seq, every engine's
    in-order queue one after the other."""
    if engine.size and 0 <= engine.min() and engine.max() < 2**15:
        # Engine codes are small: a stable radix sort groups them and keeps id order, which is
        # key order in every valid bundle; a full sort only when it is not.
        order = np.argsort(engine.astype(np.int16), kind="stable")
        same = engine[order][1:] == engine[order][:-1]
        if not np.any(same & (key[order][1:] < key[order][:-1])):
            return order
    return np.lexsort((np.arange(engine.size), key, engine))


def order_edges(engine: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of consecutive instructions on each engine, by seq."""
    order = queue_order(engine, seq)
    same = engine[order][1:] == engine[order][:-1]
    return order[:-1][same], order[1:][same]


def semaphore_edges(inst: np.ndarray, sem: np.ndarray, is_signal: np.ndarray,
                    value: np.ndarray, signal_rank: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst) for waits satisfied by counting, and the rows of unsatisfied waits.

    `inst` are node positions; `signal_rank` orders the signals (observed end, then id).
    """
    if sem.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    # Semaphore numbers index their groups directly unless they are sparse (or negative).
    if sem.min() >= 0 and sem.max() <= 4 * sem.size + 1024:
        sem_code = sem
    else:
        _, sem_code = np.unique(sem, return_inverse=True)
    src, ok = _count(*(np.asarray(a, dtype=np.int64) for a in (sem_code, inst)), is_signal,
                     *(np.asarray(a, dtype=np.int64) for a in (value, signal_rank)))
    waits = np.flatnonzero(~is_signal & (value > 0))
    good = ok[waits]
    return src[waits[good]], np.asarray(inst[waits[good]], dtype=np.int64), waits[~good]


@numba.njit(cache=True, nogil=True)
def _count(sem, inst, is_signal, value, rank):  # pragma: no cover - compiled
    """For every row that is a wait, the instruction whose signal brings its semaphore's count
    to the wait's value (signals counted in (rank, inst) order), and whether there is one.

    Signals are grouped per semaphore by a counting sort that keeps row order; a group is
    re-sorted only if its ranks are not already in order. Each wait then binary-searches the
    cumulative count of its semaphore's group.
    """
    n_sem = sem.max() + 1 if sem.size else 0
    ptr = np.zeros(n_sem + 1, dtype=np.int64)
    for r in range(sem.size):
        if is_signal[r]:
            ptr[sem[r] + 1] += 1
    for s in range(n_sem):
        ptr[s + 1] += ptr[s]
    fill = ptr[:-1].copy()
    rows = np.empty(ptr[-1], dtype=np.int64)
    for r in range(sem.size):
        if is_signal[r]:
            rows[fill[sem[r]]] = r
            fill[sem[r]] += 1
    cum = np.empty(rows.size, dtype=np.int64)
    for s in range(n_sem):
        lo, hi = ptr[s], ptr[s + 1]
        in_order = True
        for k in range(lo + 1, hi):
            a, b = rows[k - 1], rows[k]
            if rank[b] < rank[a] or (rank[b] == rank[a] and inst[b] < inst[a]):
                in_order = False
                break
        if not in_order:
            group = rows[lo:hi].copy()
            keys = np.empty(group.size, dtype=np.float64)
            order = np.argsort(inst[group], kind="mergesort")
            group = group[order]
            for k in range(group.size):
                keys[k] = rank[group[k]]
            order = np.argsort(keys, kind="mergesort")
            rows[lo:hi] = group[order]
        total = 0
        for k in range(lo, hi):
            total += value[rows[k]]
            cum[k] = total
    src = np.full(sem.size, -1, dtype=np.int64)
    ok = np.zeros(sem.size, dtype=np.bool_)
    last = ptr[:-1].copy()  # where the previous wait on each semaphore was found
    for r in range(sem.size):
        if is_signal[r] or value[r] <= 0:
            continue
        s = sem[r]
        lo, hi = ptr[s], ptr[s + 1]
        v = value[r]
        if hi == lo or cum[hi - 1] < v:
            continue
        # Waits mostly ask for the next few counts: gallop forward from the last answer, then
        # binary-search the bracket found.
        a = last[s]
        if cum[a] >= v:
            a, b = lo, a
        else:
            step = 1
            b = a + step
            while b < hi - 1 and cum[b] < v:
                a = b
                step *= 2
                b = min(a + step, hi - 1)
            b = min(b, hi - 1)
        while a < b:
            mid = (a + b) // 2
            if cum[mid] >= v:
                b = mid
            else:
                a = mid + 1
        last[s] = a
        src[r] = inst[rows[a]]
        ok[r] = True
    return src, ok


def derive(trace: Trace, instructions: pl.DataFrame | None = None, *,
           memory: bool = False) -> Graph:
    """The dependency graph of an opened trace (order, semaphore and data edges, and with
    `memory` the memory edges of `memory_edges`). `instructions`, if the caller has read them
    (id, engine, seq, end), sorted by id."""
    inst = (trace.read("instructions", ["id", "engine", "seq", "start", "end"]).sort("id")
            if instructions is None else instructions)
    ids = inst["id"].to_numpy()
    n = ids.size
    srcs, dsts, kinds = [], [], []

    src, dst = order_edges(_codes(inst["engine"]), inst["seq"].to_numpy())
    srcs.append(src)
    dsts.append(dst)
    kinds.append(np.full(src.size, ORDER, dtype=np.int8))

    unsatisfied = pl.DataFrame(schema={"inst": pl.Int64, "sem": pl.Int64, "value": pl.Int64,
                                       "signalled": pl.Int64})
    if trace.has_table("semaphores"):
        sems = trace.read("semaphores")
        node = positions(ids, sems["inst"].to_numpy(), f"{trace.path}: semaphores.inst")
        is_signal = (sems["op"] == "signal").to_numpy()
        end = inst["end"].to_numpy(allow_copy=True)
        rank = node if inst["end"].null_count() else end[node]
        src, dst, bad = semaphore_edges(node, sems["sem"].to_numpy(), is_signal,
                                        sems["value"].to_numpy(), rank)
        srcs.append(src)
        dsts.append(dst)
        kinds.append(np.full(src.size, SEMAPHORE, dtype=np.int8))
        if bad.size:
            totals = sems.filter(pl.col("op") == "signal").group_by("sem").agg(
                pl.col("value").sum().alias("signalled"))
            unsatisfied = (sems[bad].select("inst", "sem", "value")
                           .join(totals, on="sem", how="left")
                           .with_columns(pl.col("signalled").fill_null(0))
                           .sort("inst", "sem"))
    if trace.has_table("deps"):
        deps = trace.read("deps")
        srcs.append(positions(ids, deps["src"].to_numpy(), f"{trace.path}: deps.src"))
        dsts.append(positions(ids, deps["dst"].to_numpy(), f"{trace.path}: deps.dst"))
        codes = {k.value: i for i, k in enumerate(KINDS)}
        kinds.append(deps["kind"].cast(pl.String).replace_strict(codes).to_numpy()
                     .astype(np.int8))

    if memory and trace.has_table("memory"):
        order = (inst["start"].to_numpy() if "start" in inst.columns
                 and inst["start"].null_count() == 0 else None)
        src, dst = memory_edges(trace.read("memory"), ids, order, f"{trace.path}: memory.inst")
        srcs.append(src)
        dsts.append(dst)
        kinds.append(np.full(src.size, MEMORY, dtype=np.int8))
    src = np.concatenate(srcs).astype(np.int64, copy=False)
    dst = np.concatenate(dsts).astype(np.int64, copy=False)
    kind = np.concatenate(kinds)
    ptr, src, kind = csr(n, src, dst, kind)
    return Graph(ids=ids, ptr=ptr, src=src, kind=kind, unsatisfied=unsatisfied)


@numba.njit(cache=True, nogil=True)
def kahn_order(n, src, dst):  # pragma: no cover - compiled
    """A topological order of nodes 0..n-1 over the edges src -> dst (Kahn's algorithm, ties in
    node order); nodes on or behind a cycle are left out, so a short result means a cycle."""
    indeg = np.zeros(n, dtype=np.int64)
    succ_ptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(src.size):
        indeg[dst[k]] += 1
        succ_ptr[src[k] + 1] += 1
    for i in range(n):
        succ_ptr[i + 1] += succ_ptr[i]
    fill = succ_ptr[:-1].copy()
    succ = np.empty(src.size, dtype=np.int64)
    for k in range(src.size):
        succ[fill[src[k]]] = dst[k]
        fill[src[k]] += 1
    order = np.empty(n, dtype=np.int64)
    head, tail = 0, 0
    for i in range(n):
        if indeg[i] == 0:
            order[tail] = i
            tail += 1
    while head < tail:
        node = order[head]
        head += 1
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ[k]
            indeg[s] -= 1
            if indeg[s] == 0:
                order[tail] = s
                tail += 1
    return order[:tail]


@numba.njit(cache=True, nogil=True)
def csr(n, src, dst, kind):  # pragma: no cover - compiled
    """Edges grouped by `dst` (a CSR: ptr, then the `src` and `kind` of each), by counting
    sort, each group's few edges then insertion-sorted by (kind, src): linear time where a
    general sort of all edges is not. With the roles swapped it gives successor lists."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    for d in dst:
        ptr[d + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    out_src = np.empty(src.size, dtype=np.int64)
    out_kind = np.empty(src.size, dtype=np.int8)
    for k in range(src.size):
        slot = fill[dst[k]]
        out_src[slot] = src[k]
        out_kind[slot] = kind[k]
        fill[dst[k]] += 1
    for node in range(n):
        for a in range(ptr[node] + 1, ptr[node + 1]):
            s, kd = out_src[a], out_kind[a]
            b = a - 1
            while b >= ptr[node] and (out_kind[b] > kd or (out_kind[b] == kd and
                                                           out_src[b] > s)):
                out_src[b + 1] = out_src[b]
                out_kind[b + 1] = out_kind[b]
                b -= 1
            out_src[b + 1] = s
            out_kind[b + 1] = kd
    return ptr, out_src, out_kind


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values in ascending order, by one sort (np.unique's hashing is several
    times slower on tens of millions of integers)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


RAW, WAR, WAW = 0, 1, 2
"""Codes of memory conflicts: read-after-write, write-after-read, write-after-write."""


def memory_edges(memory: pl.DataFrame, ids: np.ndarray, start: np.ndarray | None = None,
                 what: str = "memory.inst", with_kind: bool = False) -> tuple[np.ndarray, ...]:
    """Read-after-write, write-after-read and write-after-write edges between instructions
    whose access ranges overlap, each to the nearest conflicting access in program order:
    observed start order when the trace is timed (ids order instructions only within an
    engine), id order when it is not.

    A sort-and-sweep over the ranges, not a comparison of all pairs: in each space the range
    boundaries are sorted into elementary cells (partition segments x byte segments for SBUF
    and PSUM, byte segments for HBM), and the accesses are swept in id order, each cell keeping
    its last writer and the readers since: a read depends on the cell's last writer, a write on
    the readers since and on the last writer. Example: instruction 1 writes SBUF partitions
    0-127 bytes 0-255, instruction 2 reads partitions 0-63 bytes 128-191: edge 1 -> 2; a third
    instruction writing partitions 64-127 bytes 0-63 conflicts with neither.
    """
    found = [np.zeros((0, 3), dtype=np.int64)]
    inst_all = positions(ids, memory["inst"].to_numpy(), what)
    # Rank of each instruction in program order; edges always point from lower to higher.
    if start is None:
        rank_of = np.arange(ids.size, dtype=np.int64)
    else:
        rank_of = np.empty(ids.size, dtype=np.int64)
        rank_of[np.lexsort((np.arange(ids.size), start))] = np.arange(ids.size)
    by_rank = np.argsort(rank_of)
    space_all = memory["space"].cast(pl.String).to_numpy()
    for space in ("hbm", "sbuf", "psum"):
        rows = np.flatnonzero(space_all == space)
        if rows.size == 0:
            continue
        part = memory[rows]
        addr = part["addr"].to_numpy()
        stop = addr + part["size"].to_numpy()
        if space == "hbm":
            p_lo = np.zeros(rows.size, dtype=np.int64)
            p_hi = np.ones(rows.size, dtype=np.int64)
        else:
            p_lo = part["partition"].fill_null(0).to_numpy()
            p_hi = p_lo + part["partitions"].fill_null(0).to_numpy()
        keep = (stop > addr) & (p_hi > p_lo)
        b_bounds = sorted_unique(np.concatenate([addr[keep], stop[keep]]))
        p_bounds = sorted_unique(np.concatenate([p_lo[keep], p_hi[keep]]))
        is_write = (part["access"].cast(pl.String) == "write").to_numpy()
        inst = rank_of[inst_all[rows]]
        order = np.lexsort((is_write, inst))  # by instruction, its reads before its writes
        order = order[keep[order]]
        found.append(_sweep(
            inst[order].astype(np.int64), is_write[order],
            np.searchsorted(p_bounds, p_lo[order]), np.searchsorted(p_bounds, p_hi[order]),
            np.searchsorted(b_bounds, addr[order]), np.searchsorted(b_bounds, stop[order]),
            max(b_bounds.size - 1, 1), max(p_bounds.size - 1, 1)))
    edges = np.concatenate(found)
    key = (edges[:, 0] * np.int64(ids.size) + edges[:, 1]) * 4 + edges[:, 2]
    key = sorted_unique(key)  # per pair, the lowest conflict code first
    pair = key // 4
    first = np.r_[True, pair[1:] != pair[:-1]] if pair.size else np.zeros(0, dtype=bool)
    pair, kind = pair[first], key[first] % 4
    src, dst = by_rank[pair // ids.size], by_rank[pair % ids.size]
    return (src, dst, kind) if with_kind else (src, dst)


@numba.njit(cache=True, nogil=True)
def _sweep(inst, is_write, p0, p1, b0, b1, n_bytes, n_parts):  # pragma: no cover - compiled
    n_cells = n_bytes * n_parts
    last_writer = np.full(n_cells, -1, dtype=np.int64)
    reader_head = np.full(n_cells, -1, dtype=np.int64)
    read_touches = 0
    for a in range(inst.size):
        if not is_write[a]:
            read_touches += (p1[a] - p0[a]) * (b1[a] - b0[a])
    pool_inst = np.empty(read_touches, dtype=np.int64)
    pool_next = np.empty(read_touches, dtype=np.int64)
    used = 0
    out = np.empty((max(inst.size, 16), 3), dtype=np.int64)  # src, dst, RAW/WAR/WAW
    edges = 0
    seen = np.full(inst.max() + 1 if inst.size else 1, -1, dtype=np.int64)
    for a in range(inst.size):
        me = inst[a]
        for p in range(p0[a], p1[a]):
            for b in range(b0[a], b1[a]):
                c = p * n_bytes + b
                w = last_writer[c]
                if not is_write[a]:
                    if w >= 0 and w != me and seen[w] != a:
                        seen[w] = a  # one edge per source and access, however many cells
                        out, edges = _push(out, edges, w, me, RAW)
                    head = reader_head[c]
                    if head < 0 or pool_inst[head] != me:
                        pool_inst[used] = me
                        pool_next[used] = head
                        reader_head[c] = used
                        used += 1
                else:
                    r = reader_head[c]
                    had_readers = r >= 0
                    while r >= 0:
                        q = pool_inst[r]
                        if q != me and seen[q] != a:
                            seen[q] = a
                            out, edges = _push(out, edges, q, me, WAR)
                        r = pool_next[r]
                    if not had_readers and w >= 0 and w != me and seen[w] != a:
                        seen[w] = a
                        out, edges = _push(out, edges, w, me, WAW)
                    reader_head[c] = -1
                    last_writer[c] = me
    return out[:edges]


@numba.njit(cache=True, inline="always")
def _push(out, edges, src, dst, kind):  # pragma: no cover - compiled
    """Append the edge src -> dst of `kind` (a row of `out`), doubling `out` when full."""
    if edges == out.shape[0]:
        bigger = np.empty((out.shape[0] * 2, 3), dtype=out.dtype)
        bigger[:edges] = out
        out = bigger
    out[edges, 0] = src
    out[edges, 1] = dst
    out[edges, 2] = kind
    return out, edges + 1
