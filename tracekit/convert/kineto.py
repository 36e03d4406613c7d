"""The PyTorch profiler's (Kineto's) conventions, applied to a Chrome trace's slices: which
slices are work, on which engine, and which dependencies the profiler records without saying
so. The rules are in docs/kineto.md; the Chrome importer (chrome.py) calls `kineto_tables`.

    CPU thread 7:  aten::add [0-10] { cudaLaunchKernel [2-5] }    cudaStreamSynchronize [12-30]
    GPU stream 7:                        add_kernel [6-25]   Stream Sync marker [12-30]

gives (nesting depth) the pieces aten::add [0-2] and [5-10] on cpu/thread 0, the launch
[2-5] on cpu/thread 0/d1, add_kernel [6-25] on gpu/stream 7 and the synchronisation [30-30]
on cpu/thread 0 (a blocking call is waiting, not work); dependencies
aten::add -> launch -> aten::add (nesting), launch -> add_kernel (correlation) and
add_kernel -> cudaStreamSynchronize (the sync).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import polars as pl

from tracekit.convert.events import FLOAT, INT, OTHER

from tracekit.trace.schema import EdgeKind
from tracekit.trace.summary import natural_key

if TYPE_CHECKING:
    from tracekit.convert.chrome import Nesting, _Events, _Slices


class Profile(StrEnum):
    """Which producer's conventions an import follows: auto detects Kineto from the trace's
    metadata."""

    AUTO = "auto"
    KINETO = "kineto"
    GENERIC = "generic"


KINETO_KEYS = ("schemaVersion", "deviceProperties", "distributedInfo")
"""Top-level keys of a Kineto trace file (beside traceEvents)."""
CONTEXT_CATS = frozenset({"Trace", "user_annotation", "gpu_user_annotation"})
"""Slices that are context (the profiler's span, annotations), never work."""
GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
SYNC_CAT = "cuda_sync"
LAUNCH_CATS = frozenset({"cuda_runtime", "cuda_driver"})
DEVICE_SYNC_CALLS = frozenset({"cudaDeviceSynchronize", "hipDeviceSynchronize"})
"""Blocking calls that wait for every stream, linked by name when a trace has no cuda_sync
markers (older profilers, ROCm)."""
KINETO_ARGS = ("correlation", "stream", "device", "wait_on_stream",
               "wait_on_cuda_event_record_corr_id", "cuda_sync_kind")
CONTEXT, GPU, SYNC, CPU = range(4)
ORPHAN = "flow ends with no start dropped"
FAN_OUT = "flow ends sharing one start kept"
DANGLING = "flow starts with no end dropped"


def is_kineto(doc_keys: Sequence[str], tail: Iterable[Any]) -> bool:
    """Whether a trace looks written by the PyTorch profiler: its top-level metadata, or the
    profiler's own span among the last events (`tail`)."""
    if any(key in doc_keys for key in KINETO_KEYS):
        return True
    return any(type(e) is dict and e.get("cat") == "Trace" and e.get("ph") == "X"
               and str(e.get("name", "")).startswith("PyTorch Profiler") for e in tail)


@numba.njit(cache=True, nogil=True)
def _pieces(thread, ts, end):  # pragma: no cover - compiled
    """Split nested slices into pieces that tile each thread's time. Rows sorted by (thread,
    ts, -end): a slice's own time between its children is a piece of it; a child that outlives
    its parent (microsecond rounding) is clipped to it. Returns per piece (row, start, end,
    depth) and per row its top-level ancestor and depth."""
    n = ts.size
    p_row = np.empty(2 * n + 1, dtype=np.int64)
    p_start = np.empty(2 * n + 1, dtype=np.float64)
    p_end = np.empty(2 * n + 1, dtype=np.float64)
    p_depth = np.empty(2 * n + 1, dtype=np.int64)
    top = np.empty(n, dtype=np.int64)
    depth = np.empty(n, dtype=np.int64)
    stack = np.empty(n + 1, dtype=np.int64)
    stack_end = np.empty(n + 1, dtype=np.float64)
    sp = 0
    k = 0
    cursor = 0.0
    for i in range(n + 1):
        last = i == n
        new_thread = last or (i > 0 and thread[i] != thread[i - 1])
        while sp > 0 and (new_thread or stack_end[sp - 1] <= ts[i]):
            e = stack_end[sp - 1]
            if e > cursor:
                p_row[k], p_start[k], p_end[k], p_depth[k] = stack[sp - 1], cursor, e, sp - 1
                k += 1
                cursor = e
            sp -= 1
        if last:
            break
        if sp > 0:
            r = stack[sp - 1]
            if ts[i] > cursor:
                p_row[k], p_start[k], p_end[k], p_depth[k] = r, cursor, ts[i], sp - 1
                k += 1
            top[i] = top[r]
            stack_end[sp] = min(end[i], stack_end[sp - 1])
        else:
            top[i] = i
            stack_end[sp] = end[i]
        depth[i] = sp
        stack[sp] = i
        sp += 1
        cursor = ts[i]
    return p_row[:k], p_start[:k], p_end[:k], p_depth[:k], top, depth


def _tolerant_pairs(key: np.ndarray, ts: np.ndarray, phase: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(source, end) positions of each flow step in (key, ts, phase) order, phase 0 start, 1
    step, 2 end: an end binds to the latest start or step of its id at or before its ts (a
    start wins a tie with an end listed first), so one start may fan out to many ends. Counts:
    orphan ends, fan-out ends, starts that no end follows."""
    order = np.lexsort((phase, ts, key))
    key, phase = key[order], phase[order]
    n = key.size
    pos = np.arange(n)
    opener = np.where(phase != 2, pos, -1)
    first_of_key = np.r_[True, key[1:] != key[:-1]] if n else np.zeros(0, bool)
    # Latest opener at or before each row, not crossing into another key.
    group_start = np.maximum.accumulate(np.where(first_of_key, pos, 0)) if n else pos
    last_open = np.maximum.accumulate(opener) if n else opener
    prev_open = np.r_[-1, last_open[:-1]] if n else opener
    prev_open = np.where(prev_open >= group_start, prev_open, -1)
    closing = phase != 0
    orphan = closing & (prev_open < 0)
    ends = np.flatnonzero(closing & ~orphan)
    src = prev_open[ends]
    uses = np.bincount(src, minlength=n) if n else np.zeros(0, np.int64)
    fanned = int((uses[src] > 1).sum()) if src.size else 0
    dangling = int(((phase == 0) & (uses == 0)).sum())
    return order[src], order[ends], {ORPHAN: int(orphan.sum()), FAN_OUT: fanned,
                                     DANGLING: dangling}


def _lookup(keys: np.ndarray, values: np.ndarray, key: np.ndarray, valid: np.ndarray
            ) -> np.ndarray:
    """values[i] for each `key` equal to keys[i] (keys sorted and distinct), -1 where no key
    is or where `valid` is False."""
    if keys.size == 0:
        return np.full(key.size, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
    return np.where(valid & (keys[pos] == key), values[pos], -1)


def _equal_to_any(ev: _Events, rows: np.ndarray, key: str, values: set[int]) -> np.ndarray:
    """Whether each row's field `key` equals (as Python compares numbers) one of `values`."""
    out = np.zeros(rows.size, dtype=bool)
    if not values or not rows.size:
        return out
    kind, payload = ev.table.raw(rows, key)
    small = np.array(sorted(v for v in values if -(2**63) <= v < 2**63), dtype=np.int64)
    is_int = kind == INT
    out[is_int] = np.isin(payload[is_int], small)
    as_float = payload.view(np.float64)
    whole = (kind == FLOAT) & (np.floor(as_float) == as_float) & (np.abs(as_float) < 2.0**63)
    out[whole] = np.isin(as_float[whole].astype(np.int64), small)
    # Other floats, bools and integers past int64, one by one.
    odd = (((kind == FLOAT) & ~whole) | (kind == OTHER)) & (ev.table.texts(rows, key) < 0)
    for k in np.flatnonzero(odd).tolist():
        v = ev.table.decode(int(kind[k]), int(payload[k]))
        out[k] = type(v) in (int, float, bool) and v in values
    return out


def _flow_keys(ev: _Events, rows: np.ndarray, to_sync: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Which flow events pair (those with an id, or id2 where there is no id, that are not
    read as syncs) and for those a key per (cat, name, id), numbered by first appearance."""
    from tracekit.convert.chrome import _flow_ids

    table = ev.table
    kind, payload = table.raw(rows, "id")
    id_text = table.texts(rows, "id")
    cat, name = table.texts(rows, "cat"), table.texts(rows, "name")
    if (table.has(rows, "id").all() and ((kind == INT) | (id_text >= 0)).all()
            and ((cat >= 0) | (table.raw(rows, "cat")[0] == 0)).all()
            and ((name >= 0) | (table.raw(rows, "name")[0] == 0)).all()):
        keep = ~to_sync
        is_int = kind[keep] == INT
        key = (np.where(is_int, payload[keep], id_text[keep]), is_int, name[keep], cat[keep])
        del kind, payload, id_text, cat, name
        # Group equal keys by a stable sort: each group's first position is its first
        # appearance; groups are numbered in that order.
        order = np.lexsort(key)
        same = np.zeros(order.size, dtype=bool)  # as the previous in that order
        same[1:] = True
        for part in key:
            ranked = part[order]
            same[1:] &= ranked[1:] == ranked[:-1]
        new = ~same
        del key, is_int, same, ranked
        first = order[new]
        group = np.cumsum(new) - 1
        del new
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        out = np.empty(order.size, dtype=np.int64)
        out[order] = rank[group]
        return out, keep
    # Ids or names of other types: compared as Python does.
    fl_id = _flow_ids(ev, rows)
    keep = np.array([v is not None for v in fl_id], bool) & ~to_sync
    keys: dict[Any, int] = {}
    setdefault = keys.setdefault
    fl_key = [setdefault((c, m, i), len(keys)) for c, m, i, w in zip(
        ev.get(rows, "cat"), ev.get(rows, "name"), fl_id, keep.tolist(), strict=True) if w]
    return np.array(fl_key, dtype=np.int64), keep


def kineto_tables(ev: _Events, ph: np.ndarray, threads: dict[tuple[Any, Any], int],
                  slices: _Slices, nesting: Nesting, cycles_per_us: float,
                  notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Instructions, deps and the manifest's extra.chrome fields of a Kineto trace. The event
    table's columns are released once read (`EventTable.release`)."""
    from tracekit.convert.chrome import (
        MAX_CYCLES,
        WORK_ARGS,
        ChromeTraceError,
        Nesting,
        _arg_ints_at,
        _bind_ends,
        _text_series,
        _thread_labels,
        categorical,
        _thread_lookup,
        clean_text,
        return_freed_memory,
    )

    table = ev.table
    n = slices.event.size
    # Per slice arrays are kept narrow (codes in 32 bits, kinds in 8): a million-event trace
    # holds several of them at once.
    cat_code = table.texts(slices.event, "cat").astype(np.int32)
    name_code = table.texts(slices.event, "name").astype(np.int32)

    def codes(texts: Iterable[str]) -> list[int]:
        """The codes of those of `texts` some row holds."""
        return [c for c in map(table.code_of, texts) if c >= 0]

    kind = np.full(n, CPU, dtype=np.int8)
    kind[np.isin(cat_code, codes(GPU_CATS))] = GPU
    kind[np.isin(cat_code, codes([SYNC_CAT]))] = SYNC
    kind[np.isin(cat_code, codes(CONTEXT_CATS))] = CONTEXT
    # Other work on a GPU stream's thread is GPU work too.
    gpu_threads = np.unique(slices.thread[kind == GPU])
    kind[(kind == CPU) & np.isin(slices.thread, gpu_threads)] = GPU
    scale = cycles_per_us

    # Context: the profiler's span and the annotations, as named windows.
    context = np.flatnonzero(kind == CONTEXT)
    is_work = (kind == CPU) | (kind == GPU)
    if not is_work.any():
        raise ChromeTraceError(f"{ev.source}: no CPU or GPU work in this PyTorch profiler "
                               f"trace, only annotations and markers; there is nothing to "
                               f"import as instructions. Pass --profile generic to import "
                               f"every slice.")
    origin = float(slices.ts.min(initial=np.inf, where=is_work))
    del is_work

    def cycles(t: np.ndarray) -> np.ndarray:
        return np.rint((t - origin) * scale)

    windows = sorted(
        ({"name": clean_text(name), "cat": cat if type(cat) is str else None,
          "start": int(cycles(slices.ts[i:i + 1])[0]),
          "end": int(cycles(slices.end[i:i + 1])[0])}
         for i, name, cat in zip(context.tolist(), ev.get(slices.event[context], "name"),
                                 ev.get(slices.event[context], "cat"), strict=True)
         if type(name) is str),
        key=lambda w: (w["start"], -w["end"], w["name"]))

    # Engines: CPU threads numbered by first appearance, GPU streams by their number.
    labels = _thread_labels(ev, ph, threads)
    inverse = {code: key for key, code in threads.items()}
    cpu_rows = np.flatnonzero(kind == CPU)
    first_seen = np.full(len(threads), np.inf)
    np.minimum.at(first_seen, slices.thread[cpu_rows], slices.ts[cpu_rows])
    first_ts = {t: float(first_seen[t]) for t in np.unique(slices.thread[cpu_rows]).tolist()}
    cpu_rank = {t: k for k, t in enumerate(sorted(
        first_ts, key=lambda t: (first_ts[t], str(inverse[t][0]), str(inverse[t][1]))))}
    gpu_rows = np.flatnonzero(kind == GPU)

    def int_arg(row: int, key: str) -> Any:
        value = ev.value(int(slices.event[row]), f"args.{key}")
        return value if type(value) is int else None

    # A GPU slice's stream: (args.device, else pid; args.stream, else tid), numbered by first
    # appearance; the rows of one (thread, device, stream) make the key once.
    parts = [slices.thread[gpu_rows]]
    for key in ("device", "stream"):
        value, valid = table.int_keys(slices.event[gpu_rows], f"args.{key}")
        parts += [valid.astype(np.int64), value]
    _, g_first, g_inverse = np.unique(np.stack(parts), axis=1, return_index=True,
                                      return_inverse=True)
    stream_code_of: dict[tuple[Any, Any], int] = {}
    group_stream = np.empty(g_first.size, dtype=np.int64)
    for g in np.argsort(g_first, kind="stable").tolist():
        i = int(gpu_rows[g_first[g]])
        pid, tid = inverse[int(slices.thread[i])]
        device, stream = int_arg(i, "device"), int_arg(i, "stream")
        key = (device if device is not None else pid, stream if stream is not None else tid)
        group_stream[g] = stream_code_of.setdefault(key, len(stream_code_of))
    stream_keys = list(stream_code_of)
    gpu_stream = np.full(n, -1, dtype=np.int32)
    gpu_stream[gpu_rows] = group_stream[g_inverse.reshape(-1)]
    del parts, value, valid, g_first, g_inverse, group_stream
    devices = sorted({d for d, _ in stream_keys}, key=str)

    def gpu_engine(device: Any, stream: Any) -> str:
        return (f"gpu/stream {stream}" if len(devices) <= 1
                else f"gpu {device}/stream {stream}")

    # CPU pieces (nesting) and GPU slices, whole.
    order = cpu_rows[np.lexsort((slices.event[cpu_rows], -slices.end[cpu_rows],
                                 slices.ts[cpu_rows], slices.thread[cpu_rows]))]
    p_pos, p_start, p_end, p_depth, top_pos, depth_pos = _pieces(
        slices.thread[order], slices.ts[order], slices.end[order])
    p_row = order[p_pos]
    top_row = order[top_pos]
    del p_pos, top_pos
    if nesting is Nesting.TOP:
        tops = np.unique(top_row)
        p_row, p_start, p_end = tops, slices.ts[tops], slices.end[tops]
        p_depth = np.zeros(tops.size, dtype=np.int64)
        chain_len = 0
    else:
        chain_len = p_row.size
        # A slice whose children cover it has no piece of its own: a zero-length one at its
        # start keeps it (and the edges that reach it).
        has_piece = np.zeros(n, dtype=bool)
        has_piece[p_row] = True
        missing = cpu_rows[~has_piece[cpu_rows]]
        del has_piece
        depth = np.zeros(n, dtype=np.int32)
        depth[order] = depth_pos
        p_row = np.r_[p_row, missing]
        p_start = np.r_[p_start, slices.ts[missing]]
        p_end = np.r_[p_end, slices.ts[missing]]
        p_depth = np.r_[p_depth, depth[missing]]
        del depth, missing
    del depth_pos
    piece_row = np.r_[p_row, gpu_rows]
    piece_start = np.r_[p_start, slices.ts[gpu_rows]]
    piece_end = np.r_[p_end, slices.end[gpu_rows]]
    piece_depth = np.r_[p_depth if nesting is Nesting.DEPTH else np.zeros(p_row.size, np.int32),
                        np.zeros(gpu_rows.size, np.int32)].astype(np.int32)
    del p_row, p_start, p_end, p_depth

    # First and last piece of each slice (edges leave a slice's last piece, enter its first).
    m = piece_row.size
    by_start = np.lexsort((piece_start, piece_row))
    first_piece = np.full(n, -1, dtype=np.int32 if m < 2**31 else np.int64)
    last_piece = np.full(n, -1, dtype=first_piece.dtype)
    first_piece[piece_row[by_start[::-1]]] = by_start[::-1]
    last_piece[piece_row[by_start]] = by_start
    if nesting is Nesting.TOP:
        first_piece[order] = first_piece[top_row].copy()
        last_piece[order] = first_piece[order]
    del order, top_row, by_start

    return_freed_memory()
    counts: Counter[str] = Counter()
    edges: list[tuple[np.ndarray, np.ndarray, str]] = []

    # 1. Flows, tolerantly paired; both ends bound to work slices.
    kept = (kind == CPU) | (kind == GPU)
    fl = np.flatnonzero(np.isin(ph, ("s", "t", "f")))
    # Flows to the cuda_sync markers (id = the marker's correlation) are read as syncs below.
    sync_rows = np.flatnonzero(kind == SYNC)
    sync_ids = {c for c in ev.get(slices.event[sync_rows], "args.correlation")
                if type(c) is int}
    to_sync = _equal_to_any(ev, fl, "id", sync_ids)
    flow = _flow_keys(ev, fl, to_sync)
    with_id = flow[1]
    counts["flow events to sync markers read as syncs"] = int(to_sync.sum())
    counts["flow events without an id"] = int(fl.size - with_id.sum() - to_sync.sum())
    fl = fl[with_id] if fl.size else fl
    has_flow_in = np.zeros(n, dtype=bool)
    if fl.size:
        fl_key = flow[0]
        fl_ts = ev.numbers(fl, "ts", "flow event")
        fl_thread = _thread_lookup(ev, fl, threads)
        fl_ph = ph[fl]
        phase = np.select([fl_ph == "s", fl_ph == "t"], [0, 1], 2).astype(np.int64)
        e_code = table.code_of("e")
        bp_e = (table.texts(fl, "bp") == e_code) & (e_code >= 0)
        mode = ((fl_ph == "f") & ~bp_e).astype(np.int64)
        src_pos, dst_pos, flow_counts = _tolerant_pairs(fl_key, fl_ts, phase)
        counts.update(flow_counts)
        bound = _bind_ends(slices, kept, fl_thread, fl_ts, mode, np.full(fl.size, -1))
        a, b = bound[src_pos], bound[dst_pos]
        unbound = (a < 0) | (b < 0)
        counts["flows with an end on no work slice"] = int(unbound.sum())
        a, b = a[~unbound], b[~unbound]
        same = a == b
        counts["flows within one slice"] = int(same.sum())
        a, b = a[~same], b[~same]
        edges.append((a, b, EdgeKind.DATA.value))
        has_flow_in[b] = True
        counts["flow edges"] = int(a.size)
        del fl_key, fl_ts, fl_thread, fl_ph, phase, bp_e, mode, bound, src_pos, dst_pos
    del flow, to_sync, fl, with_id

    return_freed_memory()
    # 2. Launches by correlation where no flow reached the GPU work: a correlation's call is
    # its first CPU runtime call.
    corr_key, corr_ok = table.int_keys(slices.event, "args.correlation")
    calls = cpu_rows[corr_ok[cpu_rows] & np.isin(cat_code[cpu_rows], codes(LAUNCH_CATS))]
    call_keys, call_first = np.unique(corr_key[calls], return_index=True)
    call_rows = calls[call_first]
    # The call of each GPU slice's and sync marker's correlation (-1: none).
    gpu_call, sync_call = (_lookup(call_keys, call_rows, corr_key[rows], corr_ok[rows])
                           for rows in (gpu_rows, sync_rows))
    del calls, call_first, corr_key, corr_ok, call_keys
    launched = gpu_call >= 0
    # Each GPU slice's launch time (its own start where no call launched it).
    launch_ts = slices.ts[gpu_rows]
    launch_ts[launched] = slices.ts[gpu_call[launched]]
    linked = launched & ~has_flow_in[gpu_rows]
    counts["launch edges by correlation"] = int(linked.sum())
    edges.append((gpu_call[linked], gpu_rows[linked], EdgeKind.DATA.value))
    del gpu_call, launched, linked, has_flow_in

    # GPU work per stream in start order, and in launch order, for the syncs.
    s_count = len(stream_keys)
    by_start = np.lexsort((slices.event[gpu_rows], slices.ts[gpu_rows], gpu_stream[gpu_rows]))
    by_start_rows = gpu_rows[by_start]
    s_ptr = np.searchsorted(gpu_stream[by_start_rows], np.arange(s_count + 1))
    start_ts = slices.ts[by_start_rows]
    # Launch order, ties in start order (as argmax and argmin pick the first).
    within = np.lexsort((launch_ts[by_start], gpu_stream[by_start_rows]))
    by_launch_rows = by_start_rows[within]
    launch_sorted = launch_ts[by_start][within]
    del by_start, within, launch_ts
    streams_of_device: dict[Any, list[tuple[Any, Any]]] = defaultdict(list)
    for key in stream_keys:
        streams_of_device[key[0]].append(key)

    def last_started(key: tuple[Any, Any], t: float) -> int:
        s = stream_code_of.get(key)
        if s is None:
            return -1
        lo, hi = s_ptr[s], s_ptr[s + 1]
        k = int(np.searchsorted(start_ts[lo:hi], t, side="right")) - 1
        return int(by_start_rows[lo + k]) if k >= 0 else -1

    def last_launched(key: tuple[Any, Any], t: float) -> int:
        s = stream_code_of.get(key)
        if s is None:
            return -1
        lo, hi = s_ptr[s], s_ptr[s + 1]
        k = int(np.searchsorted(launch_sorted[lo:hi], t, side="left"))
        if k == 0:
            return -1
        k = int(np.searchsorted(launch_sorted[lo:hi], launch_sorted[lo + k - 1], side="left"))
        return int(by_launch_rows[lo + k])

    def first_launched(key: tuple[Any, Any], t: float) -> int:
        s = stream_code_of.get(key)
        if s is None:
            return -1
        lo, hi = s_ptr[s], s_ptr[s + 1]
        k = int(np.searchsorted(launch_sorted[lo:hi], t, side="right"))
        return int(by_launch_rows[lo + k]) if lo + k < hi else -1

    # 3. Synchronisation: the CPU call waits for the GPU work its marker names.
    call_of: dict[Any, int] = {}
    if sync_rows.size:
        # The calls that recorded the events the syncs name, by correlation.
        named = _equal_to_any(ev, slices.event[call_rows], "args.correlation", {
            int(v) for v in ev.get(slices.event[sync_rows],
                                   "args.wait_on_cuda_event_record_corr_id")
            if type(v) in (int, bool) or (type(v) is float and v.is_integer())})
        call_of = dict(zip(ev.get(slices.event[call_rows[named]], "args.correlation"),
                           call_rows[named].tolist(), strict=True))
    waits_a: list[int] = []
    waits_b: list[int] = []
    cross_a: list[int] = []
    cross_b: list[int] = []
    sync_event = slices.event[sync_rows]
    sync_args = ev.args(sync_event, ("cuda_sync_kind", "wait_on_cuda_event_record_corr_id",
                                     "wait_on_stream"))
    sync_names = ev.get(sync_event, "name")
    sync_call = sync_call.tolist()
    for k, i in enumerate(sync_rows.tolist()):
        sync_kind = sync_args["cuda_sync_kind"][k] or sync_names[k]
        pid, tid = inverse[int(slices.thread[i])]
        device, stream = int_arg(i, "device"), int_arg(i, "stream")
        device = device if device is not None else pid
        call = sync_call[k] if sync_call[k] >= 0 else None
        if sync_kind == "Stream Wait Event":
            record = call_of.get(sync_args["wait_on_cuda_event_record_corr_id"][k])
            src_stream = sync_args["wait_on_stream"][k]
            dst_stream = stream if stream is not None else tid
            if record is None or call is None:
                counts["stream waits whose calls are not in the trace"] += 1
                continue
            src = last_launched((device, src_stream), float(slices.ts[record]))
            dst = first_launched((device, dst_stream), float(slices.ts[call]))
            if src >= 0 and dst >= 0:
                cross_a.append(src)
                cross_b.append(dst)
            else:
                counts["stream waits with no GPU work on a side"] += 1
            continue
        if call is None:
            counts["sync markers whose calls are not in the trace"] += 1
            continue
        if sync_kind == "Event Sync":
            record = call_of.get(sync_args["wait_on_cuda_event_record_corr_id"][k])
            waited = ([last_launched((device, sync_args["wait_on_stream"][k]),
                                     float(slices.ts[record]))] if record is not None else [])
        elif sync_kind == "Stream Sync":
            waited = [last_started((device, stream if stream is not None else tid),
                                   float(slices.end[i]))]
        else:  # Context Sync, and any other kind: every stream of the device
            waited = [last_started(key, float(slices.end[i]))
                      for key in streams_of_device.get(device, [])]
        waited = [w for w in waited if w >= 0]
        if not waited:
            counts["syncs with no GPU work to wait for"] += 1
        waits_a += waited
        waits_b += [call] * len(waited)
    if sync_rows.size == 0:
        named = cpu_rows[np.isin(name_code[cpu_rows], codes(DEVICE_SYNC_CALLS))]
        for i in named.tolist():
            waited = [last_started(key, float(slices.end[i])) for key in stream_keys]
            waited = [w for w in waited if w >= 0]
            waits_a += waited
            waits_b += [i] * len(waited)
            counts["device syncs linked by name"] += 1
    counts["sync waits"] = len(waits_a)
    counts["stream wait edges"] = len(cross_a)
    edges.append((np.array(waits_a, np.int64), np.array(waits_b, np.int64),
                  EdgeKind.DATA.value))
    edges.append((np.array(cross_a, np.int64), np.array(cross_b, np.int64),
                  EdgeKind.DATA.value))
    del kept, call_rows, call_of

    # A blocking call is the CPU waiting (as HTA weighs it): its piece shrinks to its end, and
    # the time before is a gap charged to the GPU work it waited for (or to the thread's own
    # order when that work had already ended).
    if waits_a and nesting is not Nesting.TOP:
        calls = np.unique(np.array(waits_b, np.int64))
        first = first_piece[calls]
        counts["blocking calls counted as waiting"] = int(calls.size)
        piece_start[first] = piece_end[first]
        del calls, first

    return_freed_memory()
    # Instructions: one per piece, on the engine of its (stream) or (thread, depth).
    cpu_label = {t: f"cpu/thread {k}" for t, k in cpu_rank.items()}
    on_gpu = kind[piece_row] == GPU
    span = int(piece_depth.max(initial=0)) + 2
    group_of = (np.where(on_gpu, gpu_stream[piece_row], slices.thread[piece_row]) * span
                + np.where(on_gpu, 0, piece_depth + 1))
    del on_gpu
    groups, group_inverse = np.unique(group_of, return_inverse=True)
    del group_of
    group_names = []
    for a, d in zip((groups // span).tolist(), (groups % span - 1).tolist(), strict=True):
        if d < 0:
            group_names.append(gpu_engine(*stream_keys[a]))
        else:
            group_names.append(cpu_label[a] if d == 0 else f"{cpu_label[a]}/d{d}")
    distinct = sorted(set(group_names), key=natural_key)
    rank = {e: j for j, e in enumerate(distinct)}
    engine_code = np.array([rank[e] for e in group_names], dtype=np.int32)[
        group_inverse.reshape(-1)]
    del group_inverse
    start = cycles(piece_start)
    del piece_start
    end = cycles(piece_end)
    del piece_end
    if end.size and end.max() >= MAX_CYCLES:
        raise ChromeTraceError(f"{ev.source}: the trace spans {end.max():.3g} cycles at "
                               f"{scale:g} cycles per µs, past what int64 cycles hold; pass a "
                               f"smaller --cycles-per-us.")
    start, end = start.astype(np.int64), end.astype(np.int64)
    # ids in (start, depth, engine, event) order (lexsort is stable: then piece order).
    order_ids = np.lexsort((slices.event[piece_row], engine_code, piece_depth, start))
    ids = np.empty(m, dtype=np.int64)
    ids[order_ids] = np.arange(m)
    by_engine = np.lexsort((ids, engine_code))
    per_engine = np.bincount(engine_code, minlength=len(distinct))
    seq = np.empty(m, dtype=np.int64)
    seq[by_engine] = np.arange(m) - np.repeat(np.cumsum(per_engine) - per_engine,
                                              per_engine[per_engine > 0])
    del by_engine

    engines: dict[str, dict[str, Any]] = {}
    _, engine_first = np.unique(engine_code, return_index=True)
    for k in engine_first.tolist():
        e = distinct[int(engine_code[k])]
        r = int(piece_row[k])
        pid, tid = inverse[int(slices.thread[r])]
        engines[e] = {"pid": pid, "tid": tid, "name": labels[int(slices.thread[r])]}
        if kind[r] == GPU:
            device, stream = stream_keys[int(gpu_stream[r])]
            engines[e].update(device=device, stream=stream)
        else:
            engines[e]["depth"] = int(piece_depth[k])

    return_freed_memory()
    # Dependencies, built before the instruction table so that the arrays they need are gone
    # before it is made. Nesting: consecutive pieces of a thread on different engines
    # (depths) are linked.
    src_p: list[np.ndarray] = []
    dst_p: list[np.ndarray] = []
    kind_p: list[np.ndarray] = []
    edge_kinds = [EdgeKind.DATA.value, EdgeKind.ORDER.value]
    if nesting is Nesting.DEPTH and chain_len > 1:
        th = slices.thread[piece_row[:chain_len]]
        chain_depth = piece_depth[:chain_len]
        step = np.flatnonzero((th[1:] == th[:-1]) & (chain_depth[1:] != chain_depth[:-1]))
        del th, chain_depth
        src_p.append(step)
        dst_p.append(step + 1)
        kind_p.append(np.full(step.size, 1, dtype=np.int8))
        counts["nesting links"] = int(step.size)
        del step
    for a, b, k in edges:
        if a.size:
            src_p.append(last_piece[a])
            dst_p.append(first_piece[b])
            kind_p.append(np.full(a.size, edge_kinds.index(k), dtype=np.int8))
    del edges, last_piece
    if src_p:
        sp, dp, kp = np.concatenate(src_p), np.concatenate(dst_p), np.concatenate(kind_p)
    else:
        sp = dp = np.zeros(0, np.int64)
        kp = np.zeros(0, np.int8)
    del src_p, dst_p, kind_p
    ok = (sp >= 0) & (dp >= 0)
    src, dst, kp = ids[sp[ok]], ids[dp[ok]], kp[ok]
    del sp, dp, ok, ids
    forward = dst > src
    counts["edges pointing back in time dropped"] = int((~forward).sum())
    src, dst, kp = src[forward], dst[forward], kp[forward]
    del forward
    # The first of each (src, dst), in order.
    keep = np.sort(np.unique(src * max(m, 1) + dst, return_index=True)[1])
    deps = pl.DataFrame([pl.Series("src", src[keep]), pl.Series("dst", dst[keep]),
                         categorical("kind", kp[keep].astype(np.int32), edge_kinds)])
    del src, dst, kp, keep

    return_freed_memory()
    # The instruction table in id order (order_ids lists the pieces by id); work args on a
    # slice's first piece only. Each column is made from numpy arrays polars takes without
    # a copy, and its sources are dropped as it is made.
    row_by_id = piece_row[order_ids]
    del piece_row, piece_depth
    is_first = first_piece[row_by_id] == order_ids
    del first_piece
    work_args = [_arg_ints_at(table, slices.event[row_by_id], key, is_first)
                 for key in WORK_ARGS]
    del is_first
    # The last field read: the event columns are released before the table is made.
    table.release()
    columns = [pl.Series("id", np.arange(m, dtype=np.int64)),
               categorical("engine", engine_code[order_ids], distinct),
               pl.Series("seq", seq[order_ids])]
    del engine_code, seq
    columns.append(_text_series(table, name_code[row_by_id], "opcode"))
    del name_code
    columns += [pl.Series("start", start[order_ids]), pl.Series("end", end[order_ids])]
    del start, end, order_ids
    columns += work_args
    del work_args
    columns.append(_text_series(table, cat_code[row_by_id], "layer"))
    del cat_code, row_by_id
    table_out = pl.DataFrame(columns)
    del columns

    report = {key: int(v) for key, v in sorted(counts.items()) if v}
    if report:
        notes.append("PyTorch profiler trace: " + "; ".join(
            f"{v:,} {key}" for key, v in report.items()) + ".")
    if sync_rows.size + context.size:
        notes.append(f"{context.size:,} annotation(s) and profiler span(s) kept as windows, "
                     f"{sync_rows.size:,} cuda_sync marker(s) read as dependencies; neither "
                     f"is work.")
    extra = {"format": "chrome", "profile": Profile.KINETO.value, "nesting": nesting.value,
             "cycles_per_us": scale, "origin_us": origin,
             "engines": dict(sorted(engines.items(), key=lambda kv: natural_key(kv[0]))),
             "windows": windows, "import_report": report}
    json.dumps(extra, allow_nan=False)  # the manifest must hold it
    return table_out, deps, extra
