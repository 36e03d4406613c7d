"""The dependency graph of a trace, derived with vectorized NumPy and kept as a predecessor CSR
sorted by destination.

For instructions 0 (tensor matmul), 1 (tensor matmul) and 2 (dma.q0 store, deps row 1 -> 2):
edges 0 -> 1 (order) and 1 -> 2 (data); `preds(1)` is [0] and `preds(2)` is [1].

- order: each instruction after the previous one (by seq) on its in-order engine;
- data: the producer's explicit edges from deps.parquet (their own kind kept);
- memory (on request): conflicting accesses in program order.

Semaphores are counters evaluated in time, so which signal releases a wait is not an edge fixed
here: `derive` keeps the semaphores table as arrays (`Graph.sems`), and a timeline adds the
semaphore edges it decided (`Graph.with_edges`): the replay in the model's order, the observed
timeline in the observed order (`tracekit.replay.semaphores`).

Rows are instruction positions 0..n-1 in id order (`ids` maps them back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
import polars as pl

from tracekit.errors import TracekitError
from tracekit.replay.semaphores import SemTable
from tracekit.trace.bundle import Trace
from tracekit.trace.schema import EdgeKind

KINDS: tuple[EdgeKind, ...] = tuple(EdgeKind)
"""Edge kind codes: index into this tuple."""

ORDER, SEMAPHORE, DATA, MEMORY, RESOURCE = range(5)


@dataclass(frozen=True)
class Graph:
    """Predecessor CSR: the edges into node j are `src[ptr[j]:ptr[j+1]]`, of kinds
    `kind[...]` (codes of KINDS), sorted by (dst, kind, src). `sems`: the semaphores table as
    arrays (empty without the table); `base`: for a graph with a timeline's semaphore edges
    (`with_edges`), the graph as the trace fixes it, which a replay starts from."""

    ids: np.ndarray
    ptr: np.ndarray
    src: np.ndarray
    kind: np.ndarray
    sems: SemTable
    base: Graph | None = None

    @property
    def resolved(self) -> bool:
        """Whether a timeline's semaphore edges are in (`with_edges`)."""
        return self.base is not None

    @property
    def fixed(self) -> Graph:
        """The graph as the trace fixes it, without a timeline's semaphore edges."""
        return self if self.base is None else self.base

    def with_edges(self, src: np.ndarray, dst: np.ndarray, kind: int) -> Graph:
        """The fixed graph with edges src -> dst (rows) of one kind added: resolved."""
        fixed = self.fixed
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        if dst.size > 1 and np.any(dst[1:] < dst[:-1]):
            order = np.argsort(dst, kind="stable")
            src, dst = src[order], dst[order]
        ptr, out_src, out_kind = _merged(fixed.ptr, fixed.src, fixed.kind, src, dst, kind)
        return Graph(ids=fixed.ids, ptr=ptr, src=out_src, kind=out_kind, sems=fixed.sems,
                     base=fixed)

    @property
    def nodes(self) -> int:
        return int(self.ids.size)

    @property
    def edges(self) -> int:
        return int(self.src.size)

    def destinations(self) -> np.ndarray:
        """Each edge's destination row, beside `src` (the node whose predecessors hold it)."""
        return np.repeat(np.arange(self.nodes), np.diff(self.ptr))

    def successors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Successor lists: (ptr, dst, kind), the edges out of node i at ptr[i]:ptr[i + 1],
        each group in (kind, dst) order; exactly `csr(nodes, destinations(), src, kind)`
        without the destinations array. Node numbers int32 when they fit."""
        index = np.int32 if self.nodes < 2**31 - 1 else np.int64
        return _transposed(self.ptr, self.src, self.kind, np.zeros(0, dtype=index))

    def edge_frame(self, kind: EdgeKind | None = None) -> pl.DataFrame:
        """Edges as (src, dst, kind) in instruction ids, optionally of one kind only."""
        dst = self.destinations()
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
        # Engine codes are small: a counting sort groups them and keeps id order, which is
        # key order in every valid bundle; a full sort only when it is not.
        index = np.int32 if engine.size < 2**31 - 1 else np.int64
        order, in_order = _by_engine(np.asarray(engine), np.asarray(key),
                                     np.zeros(0, dtype=index))
        if in_order:
            return order
    return np.lexsort((np.arange(engine.size), key, engine))


@numba.njit(cache=True, nogil=True)
def _by_engine(engine, key, like):  # pragma: no cover - compiled
    """Rows grouped by engine code in row order (of the type of `like`), and whether `key`
    never falls between two consecutive rows of one engine."""
    start = np.zeros(engine.max() + 2, dtype=np.int64)
    for e in engine:
        start[e + 1] += 1
    for e in range(start.size - 1):
        start[e + 1] += start[e]
    order = np.empty(engine.size, dtype=like.dtype)
    last = np.full(start.size - 1, -1, dtype=np.int64)  # each engine's previous row
    in_order = True
    for r in range(engine.size):
        e = engine[r]
        order[start[e]] = r
        start[e] += 1
        if last[e] >= 0 and key[r] < key[last[e]]:
            in_order = False
        last[e] = r
    return order, in_order


def order_edges(engine: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of consecutive instructions on each engine, by seq."""
    order = queue_order(engine, seq)
    same = engine[order][1:] == engine[order][:-1]
    return order[:-1][same], order[1:][same]


def derive(trace: Trace, instructions: pl.DataFrame | None = None, *,
           memory: bool = False, semaphores: pl.DataFrame | None = None) -> Graph:
    """The dependency graph of an opened trace as far as the trace fixes it (order and data
    edges, and with `memory` the memory edges of `memory_edges`), with its semaphores table.
    `instructions`, if the caller has read them (id, engine, seq, start), sorted by id;
    `semaphores`, the table if the caller has read it."""
    inst = (trace.read_instructions(["id", "engine", "seq", "start", "end"])
            if instructions is None else instructions)
    ids = inst["id"].to_numpy()
    n = ids.size
    srcs, dsts, kinds = [], [], []

    src, dst = order_edges(_codes(inst["engine"]), inst["seq"].to_numpy())
    srcs.append(src)
    dsts.append(dst)
    kinds.append(np.full(src.size, ORDER, dtype=np.int8))

    sems = SemTable.empty(n)
    if trace.has_table("semaphores"):
        what = f"{trace.path}: semaphores.inst"
        file = trace.file_of("semaphores") if semaphores is None else None
        if file is not None:
            sems = SemTable.from_parquet(file, ids, what)
        else:
            table = trace.read("semaphores") if semaphores is None else semaphores
            sems = SemTable.from_frame(table, positions(ids, table["inst"].to_numpy(), what), n)
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
    return Graph(ids=ids, ptr=ptr, src=src, kind=kind, sems=sems)


@numba.njit(cache=True, nogil=True)
def kahn_order(n, src, dst):  # pragma: no cover - compiled
    """A topological order of nodes 0..n-1 over the edges src -> dst (Kahn's algorithm, ties in
    node order); nodes on or behind a cycle are left out, so a short result means a cycle.
    Node numbers keep the type of `dst` (int32 halves the memory of a big graph)."""
    return kahn_successors(n, src, dst)[0]


@numba.njit(cache=True, nogil=True)
def kahn_successors(n, src, dst):  # pragma: no cover - compiled
    """`kahn_order`, and the successor lists it walks (a CSR: the successors of node i are
    succ[ptr[i]:ptr[i + 1]], in edge order), for a caller that walks them too."""
    indeg = np.zeros(n, dtype=dst.dtype)
    succ_ptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(src.size):
        indeg[dst[k]] += 1
        succ_ptr[src[k] + 1] += 1
    for i in range(n):
        succ_ptr[i + 1] += succ_ptr[i]
    fill = succ_ptr[:-1].copy()
    succ = np.empty(src.size, dtype=dst.dtype)
    for k in range(src.size):
        succ[fill[src[k]]] = dst[k]
        fill[src[k]] += 1
    order = np.empty(n, dtype=dst.dtype)
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
    return order[:tail], succ_ptr, succ


@numba.njit(cache=True, nogil=True)
def csr(n, src, dst, kind):  # pragma: no cover - compiled
    """Edges grouped by `dst` (a CSR: ptr, then the `src` and `kind` of each), by counting
    sort, each group's few edges then insertion-sorted by (kind, src): linear time where a
    general sort of all edges is not. With the roles swapped it gives successor lists. The
    `src` it returns keeps the type of the given one."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    for d in dst:
        ptr[d + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    out_src = np.empty(src.size, dtype=src.dtype)
    out_kind = np.empty(src.size, dtype=np.int8)
    for k in range(src.size):
        slot = fill[dst[k]]
        out_src[slot] = src[k]
        out_kind[slot] = kind[k]
        fill[dst[k]] += 1
    _by_kind_and_node(ptr, out_src, out_kind)
    return ptr, out_src, out_kind


@numba.njit(cache=True, inline="always")
def _by_kind_and_node(ptr, nodes, kind):  # pragma: no cover - compiled
    """Each CSR group ptr[i]:ptr[i + 1] of (nodes, kind) put in (kind, node) order in place: an
    insertion sort, as groups hold few edges. Inlined into its callers."""
    for group in range(ptr.size - 1):
        for a in range(ptr[group] + 1, ptr[group + 1]):
            v, kd = nodes[a], kind[a]
            b = a - 1
            while b >= ptr[group] and (kind[b] > kd or (kind[b] == kd and nodes[b] > v)):
                nodes[b + 1] = nodes[b]
                kind[b + 1] = kind[b]
                b -= 1
            nodes[b + 1] = v
            kind[b + 1] = kd


@numba.njit(cache=True, nogil=True)
def _transposed(ptr, src, kind, like):  # pragma: no cover - compiled
    """The predecessor CSR (ptr, src, kind) turned into successor lists (`Graph.successors`),
    node numbers of the type of `like`."""
    n = ptr.size - 1
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(src.size):
        out_ptr[src[k] + 1] += 1
    for i in range(n):
        out_ptr[i + 1] += out_ptr[i]
    fill = out_ptr[:-1].copy()
    out_dst = np.empty(src.size, dtype=like.dtype)
    out_kind = np.empty(src.size, dtype=np.int8)
    for j in range(n):  # destinations ascending: each group fills in dst order
        for k in range(ptr[j], ptr[j + 1]):
            slot = fill[src[k]]
            out_dst[slot] = j
            out_kind[slot] = kind[k]
            fill[src[k]] += 1
    _by_kind_and_node(out_ptr, out_dst, out_kind)  # then (kind, dst) order
    return out_ptr, out_dst, out_kind


@numba.njit(cache=True, nogil=True)
def _merged(ptr, src, kind, add_src, add_dst, add_kind):  # pragma: no cover - compiled
    """The CSR (ptr, src, kind) with edges add_src -> add_dst (sorted by add_dst) of kind
    `add_kind` added, each group in (kind, src) order as `csr` gives it: one pass, no
    scatter of all the edges again."""
    n = ptr.size - 1
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    out_src = np.empty(src.size + add_src.size, dtype=np.int64)
    out_kind = np.empty(src.size + add_src.size, dtype=np.int8)
    w = 0
    j = 0
    for node in range(n):
        first = w
        for a in range(ptr[node], ptr[node + 1]):
            out_src[w] = src[a]
            out_kind[w] = kind[a]
            w += 1
        while j < add_dst.size and add_dst[j] == node:
            s, kd = add_src[j], add_kind
            b = w - 1
            while b >= first and (out_kind[b] > kd or (out_kind[b] == kd and out_src[b] > s)):
                out_src[b + 1] = out_src[b]
                out_kind[b + 1] = out_kind[b]
                b -= 1
            out_src[b + 1] = s
            out_kind[b + 1] = kd
            w += 1
            j += 1
        out_ptr[node + 1] = w
    return out_ptr, out_src, out_kind


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values in ascending order, by one sort (np.unique's hashing is several
    times slower on tens of millions of integers)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


RAW, WAR, WAW = 0, 1, 2
"""Codes of memory conflicts: read-after-write, write-after-read, write-after-write."""

SPACES = ("hbm", "sbuf", "psum")
"""Memory spaces in the order of their space codes in `memory_conflicts`; rows of any other space
conflict with nothing."""


def memory_edges(memory: pl.DataFrame, ids: np.ndarray, start: np.ndarray | None = None,
                 what: str = "memory.inst") -> tuple[np.ndarray, np.ndarray]:
    """Read-after-write, write-after-read and write-after-write edges (src, dst) between
    instructions whose access ranges overlap, each to the nearest conflicting access in
    program order. See `memory_conflicts`."""
    found = memory_conflicts(memory, ids, start, what)
    return found.src, found.dst


class Conflicts(NamedTuple):
    """What the sweep of `memory_conflicts` finds: edges src -> dst (rows of the instructions)
    of kind RAW, WAR or WAW, and per memory row whether it is a read of bytes that another
    instruction has read since they were last written (all of them; False for writes)."""

    src: np.ndarray
    dst: np.ndarray
    kind: np.ndarray
    reread: np.ndarray


def memory_conflicts(memory: pl.DataFrame, ids: np.ndarray, start: np.ndarray | None = None,
                     what: str = "memory.inst") -> Conflicts:
    """Read-after-write, write-after-read and write-after-write edges between instructions
    whose access ranges overlap, each to the nearest conflicting access in program order:
    observed start order when the trace is timed (ids order instructions only within an
    engine), id order when it is not.

    A sort-and-sweep over the ranges, not a comparison of all pairs: in each space the range
    boundaries are sorted into elementary cells (partition segments x byte segments for SBUF
    and PSUM, byte segments for HBM), and the accesses are swept in program order, each cell
    keeping its last writer and the readers since: a read depends on the cell's last writer, a
    write on the readers since and on the last writer. Example: instruction 1 writes SBUF
    partitions 0-127 bytes 0-255, instruction 2 reads partitions 0-63 bytes 128-191: edge
    1 -> 2; a third instruction writing partitions 64-127 bytes 0-63 conflicts with neither.
    A read whose every cell has had a reader other than its own instruction since the cell's
    last write is a re-read.

    Edges (src, dst: rows of `ids`; kind: RAW, WAR or WAW, int64) are sorted by the program
    order of src, then of dst; a pair conflicting in several ways keeps its lowest code.
    """
    n = ids.size
    inst = memory["inst"]
    dense = n > 0 and ids[0] == 0 and ids[-1] == n - 1
    if inst.len() and not (dense and inst.null_count() == 0 and 0 <= inst.min() and
                           inst.max() < n):
        positions(ids, inst.to_numpy(), what)  # every row names an instruction, or an error
    # Row, rank and edge numbers as int32 when they fit: half the memory of the sweep.
    index = np.int32 if max(n, memory.height) < 2**31 - 1 else np.int64
    # The k-th instruction in program order; edges always point from lower to higher rank.
    by_rank = (np.arange(n, dtype=index) if start is None
               else np.argsort(np.asarray(start), kind="stable").astype(index))
    row, inst, space, write, *cells = _accesses(memory, ids, index)
    reads, writes = _touches(write, *cells[:4])
    # Room for every edge, so the sweep never grows a buffer: a read adds at most one reader
    # and one edge per cell, each reader at most one edge (to the next write of its cell), a
    # write at most one edge per cell from the last writer. Pages never written cost nothing.
    room = 2 * reads + writes
    pool = np.empty(reads, dtype=index if reads < 2**31 - 1 else np.int64)
    src, kind = np.empty(room, dtype=index), np.empty(room, dtype=np.int8)
    again = np.zeros(row.size, dtype=bool)
    ends = _sweep(by_rank, inst, space, write, *cells, pool, np.empty_like(pool), src, kind,
                  again, np.int32 if room < 2**31 - 1 else np.int64)
    del inst, space, write, cells, pool
    reread = np.zeros(memory.height, dtype=bool)
    reread[row] = again
    return Conflicts(*_by_source(by_rank, src, kind, ends), reread)


def _accesses(memory: pl.DataFrame, ids: np.ndarray,
              index: type[np.integer]) -> tuple[np.ndarray, ...]:
    """The non-empty accesses of each space, space after space (in row order within one):
    their rows in `memory` and instruction rows (both of type `index`), space codes (SPACES),
    writes, and elementary cells: partition segments [p0, p1) and byte segments [b0, b1) as
    int32 codes; then each space's number of byte segments and first cell."""
    rows = memory.height
    row, inst = np.empty(rows, dtype=index), np.empty(rows, dtype=index)
    space = np.empty(rows, dtype=np.int8)
    write = np.empty(rows, dtype=bool)
    p0, p1, b0, b1 = (np.empty(rows, dtype=np.int32) for _ in range(4))
    n_bytes = np.ones(len(SPACES), dtype=np.int64)
    n_cells = np.ones(len(SPACES), dtype=np.int64)
    done = 0
    for code, name in enumerate(SPACES):
        hbm = name == "hbm"  # flat: one partition
        columns = ["inst", (pl.col("access") == "write").fill_null(False).alias("write"), "addr",
                   (pl.col("addr") + pl.col("size")).alias("stop")]
        keep = pl.col("stop") > pl.col("addr")
        if not hbm:
            lo = pl.col("partition").fill_null(0)
            columns += [lo.alias("lo"), (lo + pl.col("partitions").fill_null(0)).alias("hi")]
            keep = keep & (pl.col("hi") > pl.col("lo"))
        part = (memory.lazy().with_row_index("row").filter(pl.col("space") == name)
                .select("row", *columns).filter(keep).collect())
        if part.height == 0:
            continue
        at = slice(done, done + part.height)
        done += part.height
        row[at] = part["row"].to_numpy()
        inst[at] = positions(ids, part["inst"].to_numpy())
        space[at] = code
        write[at] = part["write"].to_numpy()
        byte_bounds, b0[at], b1[at] = _segments(part["addr"].to_numpy(), part["stop"].to_numpy())
        n_bytes[code] = max(byte_bounds.size - 1, 1)
        if hbm:
            p0[at], p1[at] = 0, 1
            n_cells[code] = n_bytes[code]
        else:
            part_bounds, p0[at], p1[at] = _segments(part["lo"].to_numpy(), part["hi"].to_numpy())
            n_cells[code] = n_bytes[code] * max(part_bounds.size - 1, 1)
    return (row[:done], inst[:done], space[:done], write[:done], p0[:done], p1[:done],
            b0[:done], b1[:done], n_bytes, np.r_[0, np.cumsum(n_cells)])


def _segments(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct boundaries of ranges [lo, hi) in ascending order, and each range's first
    and past-last segment between them (int32 codes: positions in the boundaries)."""
    first, last = min(int(lo.min()), int(hi.min())), max(int(lo.max()), int(hi.max()))
    if last - first <= 2 * lo.size + 1024:  # a table no bigger than the input
        return _dense_segments(lo, hi, first, last)
    return _hashed_segments(lo, hi)


@numba.njit(cache=True, nogil=True)
def _dense_segments(lo, hi, first, last):  # pragma: no cover - compiled
    """`_segments` for values within a short span: a presence table, no sort."""
    code = np.zeros(last - first + 1, dtype=np.int32)
    for k in range(lo.size):
        code[lo[k] - first] = 1
        code[hi[k] - first] = 1
    bounds = np.empty(code.sum(), dtype=lo.dtype)
    distinct = 0
    for v in range(code.size):
        if code[v]:
            bounds[distinct] = first + v
            code[v] = distinct
            distinct += 1
    lo_code = np.empty(lo.size, dtype=np.int32)
    hi_code = np.empty(hi.size, dtype=np.int32)
    for k in range(lo.size):
        lo_code[k] = code[lo[k] - first]
        hi_code[k] = code[hi[k] - first]
    return bounds, lo_code, hi_code


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""Fibonacci hashing: the top bits of a value times 2**64 / golden ratio spread it over a
table of a power of two slots."""


@numba.njit(cache=True, nogil=True)
def _hashed_segments(lo, hi):  # pragma: no cover - compiled
    """`_segments` for values spread wide (few distinct among many, like HBM addresses): each
    value numbered in order of first appearance through an open-addressing hash table, then
    renumbered in value order by a sort of the distinct values alone."""
    bits = 10
    slots = np.full(1 << bits, -1, dtype=np.int32)  # number of the value kept there
    distinct = np.empty(1 << (bits - 1), dtype=lo.dtype)  # values, in order of appearance
    found = 0
    ids = np.empty(lo.size + hi.size, dtype=np.int32)
    for k in range(ids.size):
        v = lo[k] if k < lo.size else hi[k - lo.size]
        if 2 * found >= slots.size:  # keep the table at most half full: twice the slots
            bits += 1
            slots = np.full(1 << bits, -1, dtype=np.int32)
            for d in range(found):
                h = np.int64((np.uint64(distinct[d]) * _GOLDEN) >> np.uint64(64 - bits))
                while slots[h] >= 0:
                    h = (h + 1) & (slots.size - 1)
                slots[h] = d
            distinct = np.concatenate((distinct, np.empty_like(distinct)))
        h = np.int64((np.uint64(v) * _GOLDEN) >> np.uint64(64 - bits))
        while slots[h] >= 0 and distinct[slots[h]] != v:
            h = (h + 1) & (slots.size - 1)
        if slots[h] < 0:
            slots[h] = found
            distinct[found] = v
            found += 1
        ids[k] = slots[h]
    order = np.argsort(distinct[:found])
    place = np.empty(found, dtype=np.int32)
    for rank in range(found):  # a loop: `place[order] = np.arange(found)` compiles 2 s more
        place[order[rank]] = rank
    codes = place[ids]
    return distinct[:found][order], codes[:lo.size], codes[lo.size:]


@numba.njit(cache=True, nogil=True)
def _touches(is_write, p0, p1, b0, b1):  # pragma: no cover - compiled
    """How many cells the reads touch, and how many the writes."""
    reads, writes = 0, 0
    for a in range(is_write.size):
        cells = (p1[a] - p0[a]) * (b1[a] - b0[a])
        if is_write[a]:
            writes += cells
        else:
            reads += cells
    return reads, writes


@numba.njit(cache=True, nogil=True)
def _sweep(by_rank, inst, space, is_write, p0, p1, b0, b1, n_bytes, first_cell, pool_rank,
           pool_next, src, kind, again, edge_index):  # pragma: no cover - compiled
    """The sweep of `memory_conflicts` over the rows of every space at once (their cells
    apart), in ranks: the edges into the k-th instruction come from src[ends[k]:ends[k + 1]]
    (ranks), of kind[...]; returns `ends` (of type `edge_index`). Sets again[a] for a read
    whose every cell another instruction has read since the cell's last write.

    Instructions are visited in program order (`by_rank`), each one's reads (in row order)
    before its writes; an access adds one edge per source instruction however many cells
    they share, the first conflict met in its cells giving the kind; the accesses of one
    instruction then keep one edge per source, of the lowest kind. `pool_rank` and
    `pool_next` hold the readers since each cell's last write, as linked lists.
    """
    n, rows = by_rank.size, inst.size
    ptr = np.zeros(n + 1, dtype=inst.dtype)  # rows grouped by instruction, in row order
    for a in range(rows):
        ptr[inst[a] + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    grouped = np.empty(rows, dtype=inst.dtype)
    for a in range(rows):
        grouped[fill[inst[a]]] = a
        fill[inst[a]] += 1
    last_writer = np.full(first_cell[-1], -1, dtype=by_rank.dtype)
    reader_head = np.full(first_cell[-1], -1, dtype=pool_next.dtype)
    used = 0
    seen = np.full(n, -1, dtype=inst.dtype)  # the last access with an edge from this rank
    slot = np.full(n, -1, dtype=edge_index)  # where that edge is in the buffers
    ends = np.zeros(n + 1, dtype=edge_index)
    edges = 0
    for me in range(n):
        i = by_rank[me]
        mine = edges  # edges from here on end at `me`
        for writes in (False, True):
            for g in range(ptr[i], ptr[i + 1]):
                a = grouped[g]
                if is_write[a] != writes:
                    continue
                base, width = first_cell[space[a]], n_bytes[space[a]]
                read_before = True
                for p in range(p0[a], p1[a]):
                    for b in range(b0[a], b1[a]):
                        c = base + p * width + b
                        w = last_writer[c]
                        if not writes:
                            if w >= 0 and w != me and seen[w] != a:
                                seen[w] = a
                                edges = _emit(w, RAW, mine, slot, src, kind, edges)
                            head = reader_head[c]
                            # Another reader since the last write: at the head, or after this
                            # instruction's own entry (each rank enters a cell's list once).
                            read_before = read_before and head >= 0 and (
                                pool_rank[head] != me or pool_next[head] >= 0)
                            if head < 0 or pool_rank[head] != me:
                                pool_rank[used] = me
                                pool_next[used] = head
                                reader_head[c] = used
                                used += 1
                            continue
                        r = reader_head[c]
                        had_readers = r >= 0
                        while r >= 0:
                            q = pool_rank[r]
                            if q != me and seen[q] != a:
                                seen[q] = a
                                edges = _emit(q, WAR, mine, slot, src, kind, edges)
                            r = pool_next[r]
                        if not had_readers and w >= 0 and w != me and seen[w] != a:
                            seen[w] = a
                            edges = _emit(w, WAW, mine, slot, src, kind, edges)
                        reader_head[c] = -1
                        last_writer[c] = me
                again[a] = read_before and not writes
        ends[me + 1] = edges
    return ends


@numba.njit(cache=True, nogil=True)
def _by_source(by_rank, src, kind, ends):  # pragma: no cover - compiled
    """The sweep's edges (ranks, by destination) as rows of the instructions, sorted by source
    rank then destination rank (a stable counting sort), all int64."""
    n = by_rank.size
    start = np.zeros(n + 1, dtype=ends.dtype)
    for e in range(ends[n]):
        start[src[e] + 1] += 1
    for k in range(n):
        start[k + 1] += start[k]
    out_src = np.empty(ends[n], dtype=np.int64)
    out_dst = np.empty(ends[n], dtype=np.int64)
    out_kind = np.empty(ends[n], dtype=np.int64)
    for me in range(n):
        for e in range(ends[me], ends[me + 1]):
            j = start[src[e]]
            start[src[e]] += 1
            out_src[j] = by_rank[src[e]]
            out_dst[j] = by_rank[me]
            out_kind[j] = kind[e]
    return out_src, out_dst, out_kind


@numba.njit(cache=True, inline="always")
def _emit(q, code, mine, slot, src, kind, edges):  # pragma: no cover - compiled
    """Record a conflict of `code` from rank q to the instruction being swept, whose edges
    start at `mine`: a new edge, or a lower kind for the one from q it has. Returns the number
    of edges. (No buffer grows here: a reassigned array in the sweep's loops halves its
    speed.)"""
    if slot[q] >= mine:
        kind[slot[q]] = min(kind[slot[q]], code)
        return edges
    src[edges], kind[edges] = q, code
    slot[q] = edges
    return edges + 1
