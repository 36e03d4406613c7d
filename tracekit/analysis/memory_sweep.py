"""The memory table as the bug checks read it: in batches of rows, never whole, its conflicts
swept in chunks of instructions, so that a trace of any length is checked in bounded memory.

The sweep is the one of `tracekit.replay.graph.memory_conflicts` (same cells, same edges, same
re-reads): in each space the range boundaries cut the accesses into elementary cells, and the
accesses are swept in program order, each cell keeping its last writer and the readers since.
Example: instruction 1 writes SBUF partitions 0-127 bytes 0-255, instruction 2 reads
partitions 0-63 bytes 128-191: edge 1 -> 2 (read after write); a third instruction writing
partitions 64-127 bytes 0-63 conflicts with neither.

Two passes over the table's row groups:

1. `scan_memory`: the boundaries of every space's ranges, each instruction's number of
   accesses, which instructions each row group holds, the rows out of bounds, the HBM loads,
   and which instructions write (for the dead-write check);
2. `sweep_memory`: the accesses in program order, a chunk of instructions at a time (about
   `chunk_rows` accesses). A chunk reads the row groups that hold its instructions and have
   not been read; their rows of later chunks wait in memory for their turn (up to
   `chunk_rows` of them; past that a row group is read again when its turn comes). The cells'
   state carries from chunk to chunk, so nothing depends on the chunk size. The conflicts go
   to the caller in batches as they are found; the re-reads of HBM are counted as each chunk
   is done (`Reloads`).

`dead_write_bytes` reads the row groups of the instructions whose writes nobody reads, when
there are any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from tracekit.analysis import table_batches
from tracekit.analysis.table_batches import BATCH_ROWS, NULL_CODE, codes, ints
from tracekit.replay.graph import RAW, SPACES, WAR, WAW, GraphError
from tracekit.trace.bundle import Trace
from tracekit.trace.schema import TABLES

CHUNK_ROWS = 1 << 22
"""Accesses swept per chunk of instructions, and at most held for later chunks: each takes 26
bytes (a 10M-instruction GEMM has 23M accesses: six chunks of about 100 MB)."""

FLUSH_EDGES = 1 << 20
"""Conflicts handed to the caller at a time."""

HBM, SBUF, PSUM = (SPACES.index(s) for s in ("hbm", "sbuf", "psum"))
READ, WRITE = 0, 1
"""Codes of the space and access columns (`table_batches.codes`: places in SPACES and in
(read, write))."""

WRITES, WRITES_SBUF = 1, 2
"""Bits of `MemoryScan.writes`: the instruction writes memory other than PSUM (any space the
trace names but PSUM), and it writes SBUF."""

Consumer = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
"""Takes a batch of conflicts: src, dst (instruction rows, src earlier in program order) and
kind (RAW, WAR or WAW; a pair conflicting in several ways has its lowest code)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""Fibonacci hashing: bits of a value times 2**64 / golden ratio spread it over a table of a
power of two slots (up to 2**32)."""


@dataclass(frozen=True)
class Batch:
    """Some rows of the memory table as arrays: `first`, the table row of the first; inst
    (ids, nulls as the lowest int64), space and access codes, addr, size, partition,
    partitions (nulls as 0), and which of the last four are not null."""

    first: int
    inst: np.ndarray
    space: np.ndarray
    access: np.ndarray
    addr: np.ndarray
    size: np.ndarray
    partition: np.ndarray
    partitions: np.ndarray
    has_addr: np.ndarray
    has_size: np.ndarray
    has_partition: np.ndarray
    has_partitions: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.inst.size)

    def columns(self) -> tuple[np.ndarray, ...]:
        """The arrays the compiled passes take, in their order."""
        return (self.space, self.access, self.addr, self.has_addr, self.size, self.has_size,
                self.partition, self.has_partition, self.partitions, self.has_partitions)


COLUMNS = [c.name for c in TABLES["memory"].columns]


def batches(trace: Trace, row_groups: list[int] | None = None,
            batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """The memory table's rows (of the given row groups, in order), a batch at a time."""
    for first, batch in table_batches.batches(trace, "memory", COLUMNS, row_groups,
                                              batch_rows):
        inst, _ = ints(batch, "inst", np.iinfo(np.int64).min)
        addr, has_addr = ints(batch, "addr")
        size, has_size = ints(batch, "size")
        partition, has_partition = ints(batch, "partition")
        partitions, has_partitions = ints(batch, "partitions")
        yield Batch(first, inst, codes(batch, "space", SPACES),
                    codes(batch, "access", ("read", "write")), addr, size, partition,
                    partitions, has_addr, has_size, has_partition, has_partitions)


def _rows_of(ids: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instruction rows of ids `inst`, and which name an instruction (`replay.graph.positions`
    without its error)."""
    if ids.size and ids[0] == 0 and ids[-1] == ids.size - 1:
        found = (inst >= 0) & (inst < ids.size)
        return np.where(found, inst, 0), found
    pos = np.minimum(np.searchsorted(ids, inst), max(ids.size - 1, 0))
    found = ids[pos] == inst if ids.size else np.zeros(inst.size, dtype=bool)
    return pos, found


@dataclass(frozen=True)
class MemoryScan:
    """Pass 1 over the memory table (`scan_memory`).

    `rows`: rows of the table; `group_lo`, `group_hi`: per row group, the lowest and highest
    instruction row among its non-empty accesses (lo > hi: none), `group_rows` its rows;
    `bounds`: per space (SPACES), the distinct byte and partition boundaries of its non-empty
    accesses, ascending (HBM is flat: partitions [0, 1]); `accesses`: per instruction row, its
    non-empty accesses; `writes`: per instruction row, the bits WRITES and WRITES_SBUF;
    `loads`, `loaded_bytes`: HBM reads of more than 0 bytes; `out_of_bounds`: the rows past the
    machine's SBUF or PSUM (the table's columns, space and access as text, sorted); `error`:
    rows naming no instruction (raised by the sweep, which needs them)."""

    rows: int
    group_lo: np.ndarray
    group_hi: np.ndarray
    group_rows: np.ndarray
    bounds: tuple[tuple[np.ndarray, np.ndarray], ...]
    accesses: np.ndarray
    writes: np.ndarray
    loads: int
    loaded_bytes: int
    out_of_bounds: pl.DataFrame
    error: GraphError | None

    def groups_of(self, rows: np.ndarray) -> np.ndarray:
        """The row groups that may hold accesses of these instruction rows (sorted)."""
        return np.flatnonzero(np.searchsorted(rows, self.group_hi, side="right")
                              > np.searchsorted(rows, self.group_lo, side="left"))


class _Tables:
    """Open-addressing hash tables of int64 keys, several in one array so that a probe reads
    one cache line: table t holds slots[offset[t]:offset[t + 1]] (a power of two of them),
    each a key and its value (-1: empty); `count[t]` keys. As a set of distinct values the
    value is 0; as a map, the key's code."""

    def __init__(self, sizes: list[int]) -> None:
        self.offset = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self.slots = np.full((int(self.offset[-1]), 2), -1, dtype=np.int64)
        self.count = np.zeros(len(sizes), dtype=np.int64)

    def sizes(self) -> np.ndarray:
        return np.diff(self.offset)

    def keys(self, t: int) -> np.ndarray:
        """Table t's keys, ascending."""
        part = self.slots[self.offset[t]:self.offset[t + 1]]
        return np.sort(part[part[:, 1] >= 0, 0])

    def grow(self) -> None:
        """Twice the slots for each table at least half full, keys and values kept."""
        sizes = self.sizes()
        grown = _Tables([int(z) * 2 if 2 * c + 8 >= z else int(z)
                         for z, c in zip(sizes, self.count, strict=True)])
        for t in range(sizes.size):
            part = self.slots[self.offset[t]:self.offset[t + 1]]
            full = part[part[:, 1] >= 0]
            _insert(grown.slots, grown.offset, t, full[:, 0].copy(), full[:, 1].copy())
        grown.count[:] = self.count
        self.offset, self.slots = grown.offset, grown.slots

    def room(self) -> np.ndarray:
        """Keys each table takes before it is half full (less a margin)."""
        return self.sizes() // 2 - 4 - self.count

    @staticmethod
    def of(values: list[np.ndarray]) -> _Tables:
        """Maps from each array's values to their places in it (at most a quarter full)."""
        tables = _Tables([1 << max(int(4 * v.size).bit_length(), 4) for v in values])
        for t, v in enumerate(values):
            _insert(tables.slots, tables.offset, t, v, np.arange(v.size, dtype=np.int64))
            tables.count[t] = v.size
        return tables


@numba.njit(cache=True)
def _slot(slots, offset, t, key):  # pragma: no cover - compiled
    """The slot of `key` in table t, or the empty slot where it goes."""
    base, mask = offset[t], offset[t + 1] - offset[t] - 1
    h = np.int64(((np.uint64(key) * _GOLDEN) >> np.uint64(32)) & np.uint64(mask))
    while slots[base + h, 1] >= 0 and slots[base + h, 0] != key:
        h = (h + 1) & mask
    return base + h


@numba.njit(cache=True, nogil=True)
def _insert(slots, offset, t, keys, values):  # pragma: no cover - compiled
    for k in range(keys.size):
        h = _slot(slots, offset, t, keys[k])
        slots[h, 0], slots[h, 1] = keys[k], values[k]


@numba.njit(cache=True)
def _extent(space, addr, has_addr, size, has_size, partition, has_partition, partitions,
            has_partitions):  # pragma: no cover - compiled
    """A row's byte range [addr, stop) and partitions [lo, hi) (HBM: [0, 1)), and whether it
    is a non-empty access of a known space (the rows the sweep takes)."""
    stop = addr + size
    lo, hi = 0, 1
    if space != HBM:
        lo = partition if has_partition else 0
        hi = lo + (partitions if has_partitions else 0)
    return stop, lo, hi, space >= 0 and has_addr and has_size and stop > addr and hi > lo


@numba.njit(cache=True, nogil=True)
def _scan(r, row, found, space, access, addr, has_addr, size, has_size, partition,
          has_partition, partitions, has_partitions, sbuf_bytes, psum_bytes, n_parts,
          accesses, writes, slots, offset, count, totals, over):  # pragma: no cover - compiled
    """Pass 1 over a batch from row r: accesses, writes, the distinct values (tables 2s: bytes
    of space s, 2s + 1: its partitions), totals (lowest and highest instruction row of an
    access, HBM loads and their bytes), `over` (out of bounds). Returns the row it stopped at:
    the batch's end, or earlier when a table is half full (the caller grows it)."""
    room = np.empty(count.size, dtype=np.int64)
    for t in range(count.size):
        room[t] = (offset[t + 1] - offset[t]) // 2 - 4
    while r < row.size:
        for t in range(count.size):
            if count[t] >= room[t]:
                return r
        s = space[r]
        if s == HBM and access[r] == READ and has_size[r] and size[r] > 0:
            totals[2] += 1
            totals[3] += size[r]
        if s == SBUF or s == PSUM:
            capacity = sbuf_bytes if s == SBUF else psum_bytes
            over[r] = ((has_addr[r] and has_size[r] and addr[r] + size[r] > capacity)
                       or (has_partition[r] and has_partitions[r]
                           and partition[r] + partitions[r] > n_parts))
        if found[r]:
            i = row[r]
            if access[r] == WRITE and s != PSUM and s != NULL_CODE:
                writes[i] |= WRITES | (WRITES_SBUF if s == SBUF else 0)
            stop, lo, hi, keep = _extent(s, addr[r], has_addr[r], size[r], has_size[r],
                                         partition[r], has_partition[r], partitions[r],
                                         has_partitions[r])
            if keep:
                accesses[i] += 1
                totals[0] = min(totals[0], i)
                totals[1] = max(totals[1], i)
                for t, v in ((2 * s, addr[r]), (2 * s, stop), (2 * s + 1, lo),
                             (2 * s + 1, hi)):
                    if t % 2 == 0 or s != HBM:
                        h = _slot(slots, offset, t, v)
                        if slots[h, 1] < 0:
                            slots[h, 0], slots[h, 1] = v, 0
                            count[t] += 1
        r += 1
    return r


def scan_memory(trace: Trace, ids: np.ndarray, sbuf_bytes: int, psum_bytes: int,
                partitions: int, batch_rows: int = BATCH_ROWS) -> MemoryScan:
    """Pass 1 (module docstring) over `trace`'s memory table; `ids`: the instruction ids in
    row order (sorted); the machine's bytes per partition of SBUF and PSUM and its
    partitions, for the rows out of bounds."""
    n = ids.size
    accesses = np.zeros(n, dtype=np.int32 if n < 2**31 - 1 else np.int64)
    writes = np.zeros(n, dtype=np.uint8)
    sets = _Tables([1 << 10] * (2 * len(SPACES)))
    groups = table_batches.row_groups(trace, "memory")
    group_lo, group_hi = np.full(groups.size, n, np.int64), np.full(groups.size, -1, np.int64)
    bad_rows, bad_ids = 0, np.zeros(0, dtype=np.int64)
    loads = loaded_bytes = 0
    out: list[pl.DataFrame] = []
    for g in range(groups.size):
        totals = np.array([n, -1, 0, 0], dtype=np.int64)
        for b in batches(trace, [g], batch_rows):
            row, found = _rows_of(ids, b.inst)
            if not found.all():
                bad_rows += int((~found).sum())
                bad_ids = np.unique(np.r_[bad_ids, b.inst[~found]])[:6]
            over = np.zeros(b.rows, dtype=bool)
            r = 0
            while r < b.rows:
                r = _scan(r, row, found, *b.columns(), sbuf_bytes, psum_bytes, partitions,
                          accesses, writes, sets.slots, sets.offset, sets.count, totals, over)
                if r < b.rows:
                    sets.grow()
            if over.any():
                out.append(_rows_frame(b, np.flatnonzero(over)))
        group_lo[g], group_hi[g] = totals[0], totals[1]
        loads += int(totals[2])
        loaded_bytes += int(totals[3])
    error = None
    if bad_rows:
        error = GraphError(
            f"{trace.path}: memory.inst: {bad_rows:,} row(s) name no instruction (ids "
            f"{', '.join(map(str, bad_ids[:5]))}{' ...' if bad_ids.size > 5 else ''}). Run "
            f"`tracekit validate` on the trace; drop those rows or add the instructions.")
    bounds = tuple((sets.keys(2 * s), np.array([0, 1], np.int64) if s == HBM
                    else sets.keys(2 * s + 1)) for s in range(len(SPACES)))
    frame = (pl.concat(out) if out else _rows_frame(None, None)).sort(
        "inst", "addr", "partition", "size", "partitions", "space", "access")
    return MemoryScan(sum(int(r) for r in groups), group_lo, group_hi, groups, bounds,
                      accesses, writes, loads, loaded_bytes, frame, error)


_ROWS_SCHEMA = {"inst": pl.Int64, "space": pl.String, "access": pl.String, "addr": pl.Int64,
                "size": pl.Int64, "partition": pl.Int64, "partitions": pl.Int64}


def _rows_frame(b: Batch | None, rows: np.ndarray | None) -> pl.DataFrame:
    """Rows of a batch as the table's columns (space and access as text, nulls kept)."""
    if b is None or rows is None:
        return pl.DataFrame(schema=_ROWS_SCHEMA)

    def names(codes: np.ndarray, values: tuple[str, ...]) -> list[str | None]:
        return [values[c] if c >= 0 else None for c in codes[rows]]

    def ints(values: np.ndarray, present: np.ndarray) -> list[int | None]:
        return [int(v) if p else None for v, p in zip(values[rows], present[rows],
                                                       strict=True)]

    return pl.DataFrame({
        "inst": b.inst[rows], "space": names(b.space, SPACES),
        "access": names(b.access, ("read", "write")), "addr": ints(b.addr, b.has_addr),
        "size": ints(b.size, b.has_size), "partition": ints(b.partition, b.has_partition),
        "partitions": ints(b.partitions, b.has_partitions)}, schema=_ROWS_SCHEMA)


@dataclass(frozen=True)
class Reloads:
    """What the sweep counts of HBM re-reads (reads whose every byte another instruction has
    read since it was last written): how many (`again`) and their bytes (`again_bytes`); the
    range re-read most often (`top`: addr, size and how many re-reads; None without
    re-reads) and how many reads of it there are (`times`); per instruction row whether it
    re-reads (`reloading`)."""

    again: int
    again_bytes: int
    top: tuple[int, int, int] | None
    times: int
    reloading: np.ndarray


class _Rows:
    """Accesses in the sweep's form, held in arrays of a fixed capacity: table row, rank,
    space, write, cells [p0, p1) x [b0, b1)."""

    def __init__(self, capacity: int, index: type[np.integer]) -> None:
        self.row = np.empty(capacity, dtype=index)
        self.rank = np.empty(capacity, dtype=index)
        self.space = np.empty(capacity, dtype=np.int8)
        self.write = np.empty(capacity, dtype=np.bool_)
        self.cells = np.empty((4, capacity), dtype=np.int32)
        self.size = np.zeros(1, dtype=np.int64)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.row, self.rank, self.space, self.write, self.cells, self.size


def sweep_memory(trace: Trace, scan: MemoryScan, ids: np.ndarray, start: np.ndarray | None,
                 consume: Consumer, chunk_rows: int = CHUNK_ROWS,
                 batch_rows: int = BATCH_ROWS) -> Reloads:
    """Pass 2 (module docstring): the conflicts of `memory_conflicts`, handed to `consume` in
    batches as the sweep finds them, in program order of their destination, and the HBM
    re-reads. Program order: observed `start` order (ties by id) when given, else id order.
    GraphError when a row names no instruction."""
    if scan.error is not None:
        raise scan.error
    n = ids.size
    index = np.int32 if max(n + FLUSH_EDGES, scan.rows) < 2**31 - 1 else np.int64
    by_rank = (np.arange(n, dtype=index) if start is None
               else np.argsort(np.asarray(start), kind="stable").astype(index))
    rank = np.empty(n, dtype=index)
    rank[by_rank] = np.arange(n, dtype=index)
    n_bytes = np.array([max(b.size - 1, 1) for b, _ in scan.bounds], dtype=np.int64)
    n_parts = np.array([max(p.size - 1, 1) for _, p in scan.bounds], dtype=np.int64)
    first_cell = np.r_[0, np.cumsum(n_bytes * n_parts)].astype(np.int64)
    maps = _Tables.of([values for pair in scan.bounds for values in pair])
    last_writer = np.full(first_cell[-1], -1, dtype=index)
    reader_head = np.full(first_cell[-1], -1, dtype=np.int64)
    pool_inst = np.empty(max(min(chunk_rows, scan.rows), 1024), dtype=index)
    pool_next = np.empty(pool_inst.size, dtype=np.int64)
    state = np.array([0, -1, 0], dtype=np.int64)  # pool entries used, free list head, free
    seen = np.full(n, -1, dtype=index)
    slot = np.full(n, -1, dtype=index)
    # Room for a flush's worth of edges and one more instruction's (one edge per source at
    # most): pages never written cost nothing.
    room = FLUSH_EDGES + n
    src, dst = np.empty(room, dtype=index), np.empty(room, dtype=index)
    kind = np.empty(room, dtype=np.int8)
    waiting = _Rows(chunk_rows, index)  # rows of later chunks, from row groups read
    read = np.zeros(scan.group_rows.size, dtype=bool)  # row groups whose rows were all taken
    hbm = scan.bounds[HBM][0]
    ranges = _Tables([1 << 10])  # HBM ranges read (key b0 * len(hbm) + b1): their numbers
    counts = np.zeros((2, 1 << 10), dtype=np.int64)  # per range: re-reads, reads
    totals = np.zeros(2, dtype=np.int64)  # re-reads, their bytes
    reloading = np.zeros(n, dtype=bool)
    for lo, hi in _chunks(scan.accesses, by_rank, chunk_rows):
        rows = int(_total(scan.accesses, by_rank[lo:hi]))
        if rows == 0:
            continue
        chunk = _Rows(rows, index)
        _take_waiting(*waiting.arrays(), *chunk.arrays(), lo, hi)
        members = np.sort(by_rank[lo:hi])
        for g in scan.groups_of(members[scan.accesses[members] > 0]):
            if read[g]:
                continue
            carry = int(waiting.size[0]) + int(scan.group_rows[g]) <= waiting.row.size
            for b in batches(trace, [int(g)], batch_rows):
                row, found = _rows_of(ids, b.inst)
                _take(b.first, row, found, *b.columns(), rank, lo, hi, maps.slots, maps.offset,
                      *chunk.arrays(), carry, *waiting.arrays())
            read[g] = carry
        del members
        ptr, grouped = _group(chunk.rank[:rows], lo, hi - lo)
        reread = np.zeros(rows, dtype=bool)
        k = 0
        while k < hi - lo:
            k, edges = _sweep(k, hi - lo, by_rank[lo:hi], ptr, grouped, chunk.row,
                              chunk.space, chunk.write, chunk.cells, n_bytes, first_cell,
                              last_writer, reader_head, pool_inst, pool_next, state, seen,
                              slot, src, dst, kind, reread, FLUSH_EDGES)
            if edges:
                consume(src[:edges], dst[:edges], kind[:edges])
            elif k < hi - lo:  # the pool of readers is full: twice the room
                pool_inst = np.concatenate([pool_inst, np.empty_like(pool_inst)])
                pool_next = np.concatenate([pool_next, np.empty_like(pool_next)])
        del ptr, grouped
        # The chunk's HBM reads: re-reads, and reads per range (cells b0, b1 name a range).
        a = 0
        while a < rows:
            a = _count_ranges(a, rows, chunk.space, chunk.write, chunk.cells, chunk.rank,
                              reread, hbm, by_rank, ranges.slots, ranges.offset, ranges.count,
                              counts, totals, reloading)
            if a < rows:
                ranges.grow()
                counts = np.concatenate([counts, np.zeros_like(counts)], axis=1)
        del chunk, reread
    top, times = None, 0
    used = int(ranges.count[0])
    if used and counts[0, :used].any():
        # The range re-read most often (then the lowest address, the smallest size).
        part = ranges.slots[ranges.slots[:, 1] >= 0]
        key, slot = part[:, 0], part[:, 1]
        b0, b1 = key // hbm.size, key % hbm.size
        addr, size = hbm[b0], hbm[b1] - hbm[b0]
        best = np.lexsort((size, addr, -counts[0, slot]))[0]
        top = (int(addr[best]), int(size[best]), int(counts[0, slot[best]]))
        times = int(counts[1, slot[best]])
    again, again_bytes = int(totals[0]), int(totals[1])
    return Reloads(again, again_bytes, top, times, reloading)


@numba.njit(cache=True, nogil=True)
def _count_ranges(a, rows, space, write, cells, rank, reread, hbm, by_rank, slots, offset,
                  count, counts, totals, reloading):  # pragma: no cover - compiled
    """From access a on, the chunk's HBM reads: per range (numbered in table 0 of slots by
    key b0 * len(hbm) + b1) its re-reads and reads (counts), the re-reads and their bytes
    (totals), which instructions re-read. Returns where it stopped: `rows`, or earlier when
    the table is half full (the caller grows it and `counts`)."""
    room = (offset[1] - offset[0]) // 2 - 4
    while a < rows:
        if space[a] == HBM and not write[a]:
            if count[0] >= room:
                return a
            h = _slot(slots, offset, 0, cells[2, a] * hbm.size + cells[3, a])
            if slots[h, 1] < 0:
                slots[h, 0], slots[h, 1] = cells[2, a] * hbm.size + cells[3, a], count[0]
                count[0] += 1
            number = slots[h, 1]
            counts[1, number] += 1
            if reread[a]:
                counts[0, number] += 1
                totals[0] += 1
                totals[1] += hbm[cells[3, a]] - hbm[cells[2, a]]
                reloading[by_rank[rank[a]]] = True
        a += 1
    return a


@numba.njit(cache=True, nogil=True)
def _total(accesses, rows):  # pragma: no cover - compiled
    total = 0
    for i in rows:
        total += accesses[i]
    return total


def _chunks(accesses: np.ndarray, by_rank: np.ndarray, chunk_rows: int
            ) -> list[tuple[int, int]]:
    """Ranks [lo, hi) of consecutive instructions in program order whose accesses add up to
    at most `chunk_rows` (or one instruction that has more)."""
    cuts = _cuts(accesses, by_rank, chunk_rows)
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))


@numba.njit(cache=True, nogil=True)
def _cuts(accesses, by_rank, chunk_rows):  # pragma: no cover - compiled
    cuts = [0]
    rows = 0
    for k in range(by_rank.size):
        a = accesses[by_rank[k]]
        if rows > 0 and rows + a > chunk_rows:
            cuts.append(k)
            rows = 0
        rows += a
    cuts.append(by_rank.size)
    return np.array(cuts, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _take(first, row, found, space, access, addr, has_addr, size, has_size, partition,
          has_partition, partitions, has_partitions, rank, lo, hi, slots, offset, c_row, c_rank, c_space, c_write, c_cells, c_size, carry, w_row, w_rank, w_space,
          w_write, w_cells, w_size):  # pragma: no cover - compiled
    """The batch's accesses of instructions of ranks [lo, hi) into the chunk's arrays (c_*),
    with `carry` those of later ranks into the waiting ones (w_*); cells from the
    boundaries' hash tables."""
    for r in range(row.size):
        if not found[r]:
            continue
        k = rank[row[r]]
        if k < lo or (k >= hi and not carry):
            continue
        stop, p_lo, p_hi, keep = _extent(space[r], addr[r], has_addr[r], size[r], has_size[r],
                                         partition[r], has_partition[r], partitions[r],
                                         has_partitions[r])
        if not keep:
            continue
        s = space[r]
        t = 2 * s
        b0 = slots[_slot(slots, offset, t, addr[r]), 1]
        b1 = slots[_slot(slots, offset, t, stop), 1]
        p0, p1 = 0, 1
        if s != HBM:
            p0 = slots[_slot(slots, offset, t + 1, p_lo), 1]
            p1 = slots[_slot(slots, offset, t + 1, p_hi), 1]
        if k < hi:
            _put(c_row, c_rank, c_space, c_write, c_cells, c_size, first + r, k, s,
                 access[r] == WRITE, p0, p1, b0, b1)
        else:
            _put(w_row, w_rank, w_space, w_write, w_cells, w_size, first + r, k, s,
                 access[r] == WRITE, p0, p1, b0, b1)


@numba.njit(cache=True)
def _put(o_row, o_rank, o_space, o_write, o_cells, o_size, row, rank, space, write, p0, p1,
         b0, b1):  # pragma: no cover - compiled
    j = o_size[0]
    o_size[0] += 1
    o_row[j], o_rank[j], o_space[j], o_write[j] = row, rank, space, write
    o_cells[0, j], o_cells[1, j], o_cells[2, j], o_cells[3, j] = p0, p1, b0, b1


@numba.njit(cache=True, nogil=True)
def _take_waiting(w_row, w_rank, w_space, w_write, w_cells, w_size, c_row, c_rank, c_space,
                  c_write, c_cells, c_size, lo, hi):  # pragma: no cover - compiled
    """The waiting accesses of ranks [lo, hi) into the chunk; the others keep waiting, in
    order."""
    kept = 0
    for a in range(w_size[0]):
        if w_rank[a] < hi:
            j = c_size[0]
            c_size[0] += 1
            c_row[j], c_rank[j], c_space[j], c_write[j] = (w_row[a], w_rank[a], w_space[a],
                                                           w_write[a])
            for d in range(4):
                c_cells[d, j] = w_cells[d, a]
        else:
            w_row[kept], w_rank[kept], w_space[kept], w_write[kept] = (w_row[a], w_rank[a],
                                                                       w_space[a], w_write[a])
            for d in range(4):
                w_cells[d, kept] = w_cells[d, a]
            kept += 1
    w_size[0] = kept


@numba.njit(cache=True, nogil=True)
def _group(rank, lo, size):  # pragma: no cover - compiled
    """The chunk's accesses grouped by rank - lo (a stable counting sort): rank lo + k's are
    grouped[ptr[k]:ptr[k + 1]], in the order they came (table order, but for rows that
    waited: the order of one instruction's reads, or of its writes, changes nothing)."""
    ptr = np.zeros(size + 1, dtype=np.int64)
    for k in rank:
        ptr[k - lo + 1] += 1
    for k in range(size):
        ptr[k + 1] += ptr[k]
    fill = ptr[:-1].copy()
    grouped = np.empty(rank.size, dtype=np.int64)
    for a in range(rank.size):
        grouped[fill[rank[a] - lo]] = a
        fill[rank[a] - lo] += 1
    return ptr, grouped


@numba.njit(cache=True, nogil=True)
def _sweep(k, stop, members, ptr, grouped, row, space, is_write, cells, n_bytes, first_cell,
           last_writer, reader_head, pool_inst, pool_next, state, seen, slot, src, dst, kind,
           reread, flush):  # pragma: no cover - compiled
    """Sweep the chunk's instructions k..stop-1 (`members`: their rows in program order),
    each one's reads (in table order) before its writes: a read depends on its cells' last
    writer, a write on the readers since and on the last writer. Each instruction's conflicts
    keep one edge per source, of the lowest kind (`slot[q]`: where the edge from q to this
    instruction is in the buffers, -1 for none); `seen[q]`: the last access (table row) with
    an edge from q. The readers of each cell since its last write are linked lists in
    pool_inst / pool_next, freed entries in a free list; state: entries used, free list head,
    free entries. Sets reread[a] of a read whose every cell another instruction has read
    since the cell's last write.

    Returns (next instruction, edges in src/dst/kind): it stops after `flush` edges, and before
    an instruction whose reads the pool has no room for (stop not reached, no edges)."""
    used, free_head, free = state[0], state[1], state[2]
    edges = 0
    while k < stop and edges < flush:
        need = 0
        for g in range(ptr[k], ptr[k + 1]):
            a = grouped[g]
            if not is_write[a]:
                need += (cells[1, a] - cells[0, a]) * (cells[3, a] - cells[2, a])
        if pool_inst.size - used + free < need:
            break
        i = members[k]
        first = edges
        for writes in (False, True):
            for g in range(ptr[k], ptr[k + 1]):
                a = grouped[g]
                if is_write[a] != writes:
                    continue
                access = row[a]
                base, width = first_cell[space[a]], n_bytes[space[a]]
                read_before = True
                for p in range(cells[0, a], cells[1, a]):
                    for b in range(cells[2, a], cells[3, a]):
                        c = base + p * width + b
                        w = last_writer[c]
                        if not writes:
                            if w >= 0 and w != i and seen[w] != access:
                                seen[w] = access
                                edges = _emit(w, i, RAW, slot, src, dst, kind, edges)
                            head = reader_head[c]
                            # Another reader since the last write: at the head, or after this
                            # instruction's own entry (each instruction enters a list once).
                            read_before = read_before and head >= 0 and (
                                pool_inst[head] != i or pool_next[head] >= 0)
                            if head < 0 or pool_inst[head] != i:
                                if free > 0:
                                    e = free_head
                                    free_head = pool_next[e]
                                    free -= 1
                                else:
                                    e = used
                                    used += 1
                                pool_inst[e] = i
                                pool_next[e] = head
                                reader_head[c] = e
                            continue
                        r = reader_head[c]
                        tail = -1
                        while r >= 0:
                            q = pool_inst[r]
                            if q != i and seen[q] != access:
                                seen[q] = access
                                edges = _emit(q, i, WAR, slot, src, dst, kind, edges)
                            tail = r
                            free += 1
                            r = pool_next[r]
                        if tail >= 0:  # the readers' entries join the free list
                            pool_next[tail] = free_head
                            free_head = reader_head[c]
                        elif w >= 0 and w != i and seen[w] != access:
                            seen[w] = access
                            edges = _emit(w, i, WAW, slot, src, dst, kind, edges)
                        reader_head[c] = -1
                        last_writer[c] = i
                if not writes:
                    reread[a] = read_before
        for e in range(first, edges):  # the next instruction starts without edges
            slot[src[e]] = -1
        k += 1
    state[0], state[1], state[2] = used, free_head, free
    return k, edges


@numba.njit(cache=True)
def _emit(q, i, code, slot, src, dst, kind, edges):  # pragma: no cover - compiled
    """Record a conflict of `code` from q to i: a new edge, or a lower kind for the one from q
    that i has. Returns the number of edges."""
    if slot[q] >= 0:
        kind[slot[q]] = min(kind[slot[q]], code)
        return edges
    src[edges], dst[edges], kind[edges] = q, i, code
    slot[q] = edges
    return edges + 1


def dead_write_bytes(trace: Trace, scan: MemoryScan, ids: np.ndarray, dead: np.ndarray,
                     batch_rows: int = BATCH_ROWS) -> pl.DataFrame:
    """Per instruction whose writes nobody reads (`dead`, per instruction row), the bytes of
    its writes to memory other than PSUM (size times partitions, 1 when null): inst, bytes,
    by inst. Reads the row groups that hold those instructions."""
    rows = np.flatnonzero(dead)
    parts: list[pl.DataFrame] = []
    for g in scan.groups_of(rows):
        for b in batches(trace, [int(g)], batch_rows):
            row, found = _rows_of(ids, b.inst)
            mine = np.flatnonzero(found & (b.access == WRITE) & (b.space != PSUM)
                                  & (b.space != NULL_CODE) & dead[row])
            if mine.size:
                per_partition = np.where(b.has_partitions[mine], b.partitions[mine], 1)
                parts.append(pl.DataFrame({"row": row[mine],
                                           "bytes": b.size[mine] * per_partition}))
    frame = (pl.concat(parts) if parts else pl.DataFrame(schema={"row": pl.Int64,
                                                                 "bytes": pl.Int64}))
    frame = frame.group_by("row").agg(pl.col("bytes").sum()).sort("row")
    return pl.DataFrame({"inst": ids[frame["row"].to_numpy()], "bytes": frame["bytes"]},
                        schema={"inst": pl.Int64, "bytes": pl.Int64})
