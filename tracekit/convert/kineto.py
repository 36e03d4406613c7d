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


def kineto_tables(ev: _Events, ph: np.ndarray, threads: dict[tuple[Any, Any], int],
                  slices: _Slices, nesting: Nesting, cycles_per_us: float,
                  notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Instructions, deps and the manifest's extra.chrome fields of a Kineto trace."""
    from tracekit.convert.chrome import (
        MAX_CYCLES,
        WORK_ARGS,
        ChromeTraceError,
        Nesting,
        _arg_ints,
        _bind_ends,
        _flow_ids,
        _thread_labels,
        clean_text,
        clean_texts,
    )

    n = slices.event.size
    cats = ev.get(slices.event, "cat")
    names = ev.get(slices.event, "name")
    args = ev.args(slices.event, KINETO_ARGS + WORK_ARGS)
    cat_arr = np.array([c if type(c) is str else "" for c in cats], dtype=object)
    kind = np.full(n, CPU, dtype=np.int64)
    kind[np.isin(cat_arr, list(GPU_CATS))] = GPU
    kind[cat_arr == SYNC_CAT] = SYNC
    kind[np.isin(cat_arr, list(CONTEXT_CATS))] = CONTEXT
    # Other work on a GPU stream's thread is GPU work too.
    gpu_threads = np.unique(slices.thread[kind == GPU])
    kind[(kind == CPU) & np.isin(slices.thread, gpu_threads)] = GPU
    scale = cycles_per_us

    # Context: the profiler's span and the annotations, as named windows.
    context = np.flatnonzero(kind == CONTEXT)
    work = np.flatnonzero((kind == CPU) | (kind == GPU))
    if work.size == 0:
        raise ChromeTraceError(f"{ev.source}: no CPU or GPU work in this PyTorch profiler "
                               f"trace, only annotations and markers; there is nothing to "
                               f"import as instructions. Pass --profile generic to import "
                               f"every slice.")
    origin = float(slices.ts[work].min())

    def cycles(t: np.ndarray) -> np.ndarray:
        return np.rint((t - origin) * scale)

    windows = sorted(
        ({"name": clean_text(names[i]), "cat": cats[i] if type(cats[i]) is str else None, "start": int(cycles(slices.ts[i:i + 1])[0]),
          "end": int(cycles(slices.end[i:i + 1])[0])} for i in context.tolist()
         if type(names[i]) is str),
        key=lambda w: (w["start"], -w["end"], w["name"]))

    # Engines: CPU threads numbered by first appearance, GPU streams by their number.
    labels = _thread_labels(ev, ph, threads)
    inverse = {code: key for key, code in threads.items()}
    cpu_rows = np.flatnonzero(kind == CPU)
    cpu_threads = np.unique(slices.thread[cpu_rows])
    first_ts = {int(t): float(slices.ts[cpu_rows][slices.thread[cpu_rows] == t].min())
                for t in cpu_threads.tolist()}
    cpu_rank = {t: k for k, t in enumerate(sorted(
        first_ts, key=lambda t: (first_ts[t], str(inverse[t][0]), str(inverse[t][1]))))}
    gpu_rows = np.flatnonzero(kind == GPU)
    stream_of = [s if type(s) is int else None for s in args["stream"]]
    device_of = [d if type(d) is int else None for d in args["device"]]
    gpu_key: dict[int, tuple[Any, Any]] = {}
    for i in gpu_rows.tolist():
        pid, tid = inverse[int(slices.thread[i])]
        gpu_key[i] = (device_of[i] if device_of[i] is not None else pid,
                      stream_of[i] if stream_of[i] is not None else tid)
    devices = sorted({d for d, _ in gpu_key.values()}, key=str)

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
    depth = np.zeros(n, dtype=np.int64)
    depth[order] = depth_pos
    if nesting is Nesting.TOP:
        tops = np.unique(top_row)
        p_row, p_start, p_end = tops, slices.ts[tops], slices.end[tops]
        p_depth = np.zeros(tops.size, dtype=np.int64)
        chain_len = 0
    else:
        chain_len = p_row.size
        # A slice whose children cover it has no piece of its own: a zero-length one at its
        # start keeps it (and the edges that reach it).
        missing = np.setdiff1d(cpu_rows, p_row)
        p_row = np.r_[p_row, missing]
        p_start = np.r_[p_start, slices.ts[missing]]
        p_end = np.r_[p_end, slices.ts[missing]]
        p_depth = np.r_[p_depth, depth[missing]]
    piece_row = np.r_[p_row, gpu_rows]
    piece_start = np.r_[p_start, slices.ts[gpu_rows]]
    piece_end = np.r_[p_end, slices.end[gpu_rows]]
    piece_depth = np.r_[p_depth if nesting is Nesting.DEPTH else np.zeros(p_row.size, np.int64),
                        np.zeros(gpu_rows.size, np.int64)]

    # First and last piece of each slice (edges leave a slice's last piece, enter its first).
    m = piece_row.size
    by_start = np.lexsort((piece_start, piece_row))
    first_piece = np.full(n, -1, dtype=np.int64)
    last_piece = np.full(n, -1, dtype=np.int64)
    first_piece[piece_row[by_start[::-1]]] = by_start[::-1]
    last_piece[piece_row[by_start]] = by_start
    if nesting is Nesting.TOP:
        first_piece[order] = first_piece[top_row].copy()
        last_piece[order] = first_piece[order]

    counts: Counter[str] = Counter()
    edges: list[tuple[np.ndarray, np.ndarray, str]] = []

    # 1. Flows, tolerantly paired; both ends bound to work slices.
    kept = (kind == CPU) | (kind == GPU)
    fl = np.flatnonzero(np.isin(ph, ("s", "t", "f")))
    # Flows to the cuda_sync markers (id = the marker's correlation) are read as syncs below.
    sync_ids = {c for c, k in zip(args["correlation"], kind.tolist(), strict=True)
                if k == SYNC and type(c) is int}
    raw_id = ev.get(fl, "id")
    to_sync = np.array([type(v) in (int, float, bool) and v in sync_ids for v in raw_id], bool)
    fl_id = _flow_ids(ev, fl)
    with_id = np.array([v is not None for v in fl_id], bool) & ~to_sync
    counts["flow events to sync markers read as syncs"] = int(to_sync.sum())
    counts["flow events without an id"] = int(fl.size - with_id.sum() - to_sync.sum())
    fl = fl[with_id] if fl.size else fl
    fl_id = [v for v, w in zip(fl_id, with_id.tolist(), strict=True) if w]
    has_flow_in = np.zeros(n, dtype=bool)
    if fl.size:
        keys: dict[Any, int] = {}
        setdefault = keys.setdefault
        fl_key = np.array([setdefault((c, m, i), len(keys)) for c, m, i in zip(
            ev.get(fl, "cat"), ev.get(fl, "name"), fl_id, strict=True)], dtype=np.int64)
        fl_ts = ev.numbers(fl, "ts", "flow event")
        fl_thread = np.array([threads.get(key, -1) for key in zip(
            ev.get(fl, "pid"), ev.get(fl, "tid"), strict=True)], dtype=np.int64)
        phase = np.array([("s", "t", "f").index(p) for p in ph[fl].tolist()], dtype=np.int64)
        mode = ((ph[fl] == "f") & ~np.array([b == "e" for b in ev.get(fl, "bp")], dtype=bool)
                ).astype(np.int64)
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

    # 2. Launches by correlation where no flow reached the GPU work.
    corr = [c if type(c) is int else None for c in args["correlation"]]
    launch_of: dict[int, int] = {}
    for i in cpu_rows.tolist():
        c = corr[i]
        if c is not None and cat_arr[i] in LAUNCH_CATS:
            launch_of.setdefault(c, i)
    launch_ts = slices.ts.copy()
    la, lb = [], []
    for i in gpu_rows.tolist():
        c = corr[i]
        call = launch_of.get(c) if c is not None else None
        if call is None:
            continue
        launch_ts[i] = slices.ts[call]
        if not has_flow_in[i]:
            la.append(call)
            lb.append(i)
    counts["launch edges by correlation"] = len(la)
    edges.append((np.array(la, np.int64), np.array(lb, np.int64), EdgeKind.DATA.value))

    # GPU work per stream in start order, and in launch order, for the syncs.
    by_stream: dict[tuple[Any, Any], np.ndarray] = {}
    streams_of_device: dict[Any, list[tuple[Any, Any]]] = defaultdict(list)
    for i in gpu_rows.tolist():
        by_stream.setdefault(gpu_key[i], [])  # type: ignore[arg-type]
        by_stream[gpu_key[i]].append(i)  # type: ignore[attr-defined]
    for key in list(by_stream):
        rows = np.array(by_stream[key], dtype=np.int64)
        by_stream[key] = rows[np.lexsort((slices.event[rows], slices.ts[rows]))]
        streams_of_device[key[0]].append(key)

    def last_started(key: tuple[Any, Any], t: float) -> int:
        rows = by_stream.get(key)
        if rows is None:
            return -1
        k = int(np.searchsorted(slices.ts[rows], t, side="right")) - 1
        return int(rows[k]) if k >= 0 else -1

    def last_launched(key: tuple[Any, Any], t: float) -> int:
        rows = by_stream.get(key)
        if rows is None:
            return -1
        before = rows[launch_ts[rows] < t]
        return int(before[np.argmax(launch_ts[before])]) if before.size else -1

    def first_launched(key: tuple[Any, Any], t: float) -> int:
        rows = by_stream.get(key)
        if rows is None:
            return -1
        after = rows[launch_ts[rows] > t]
        return int(after[np.argmin(launch_ts[after])]) if after.size else -1

    # 3. Synchronisation: the CPU call waits for the GPU work its marker names.
    call_of: dict[int, int] = {}
    for i in cpu_rows.tolist():
        if corr[i] is not None and cat_arr[i] in LAUNCH_CATS:
            call_of.setdefault(corr[i], i)
    waits_a, waits_b, cross_a, cross_b = [], [], [], []
    sync_rows = np.flatnonzero(kind == SYNC)
    for i in sync_rows.tolist():
        sync_kind = args["cuda_sync_kind"][i] or names[i]
        pid, tid = inverse[int(slices.thread[i])]
        device = device_of[i] if device_of[i] is not None else pid
        call = call_of.get(corr[i]) if corr[i] is not None else None
        if sync_kind == "Stream Wait Event":
            record = call_of.get(args["wait_on_cuda_event_record_corr_id"][i])
            src_stream = args["wait_on_stream"][i]
            dst_stream = stream_of[i] if stream_of[i] is not None else tid
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
            record = call_of.get(args["wait_on_cuda_event_record_corr_id"][i])
            waited = ([last_launched((device, args["wait_on_stream"][i]),
                                     float(slices.ts[record]))] if record is not None else [])
        elif sync_kind == "Stream Sync":
            waited = [last_started((device, stream_of[i] if stream_of[i] is not None else tid),
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
        for i in cpu_rows.tolist():
            if names[i] in DEVICE_SYNC_CALLS:
                waited = [last_started(key, float(slices.end[i])) for key in by_stream]
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

    # A blocking call is the CPU waiting (as HTA weighs it): its piece shrinks to its end, and
    # the time before is a gap charged to the GPU work it waited for (or to the thread's own
    # order when that work had already ended).
    if waits_a and nesting is not Nesting.TOP:
        calls = np.unique(np.array(waits_b, np.int64))
        first = first_piece[calls]
        counts["blocking calls counted as waiting"] = int(calls.size)
        piece_start[first] = piece_end[first]

    # Instructions: one per piece.
    engine_names = []
    cpu_label = {t: f"cpu/thread {k}" for t, k in cpu_rank.items()}
    for k in range(m):
        r = int(piece_row[k])
        if kind[r] == GPU:
            engine_names.append(gpu_engine(*gpu_key[r]))
        else:
            base = cpu_label[int(slices.thread[r])]
            d = int(piece_depth[k])
            engine_names.append(base if d == 0 else f"{base}/d{d}")
    distinct = sorted(set(engine_names), key=natural_key)
    rank = {e: j for j, e in enumerate(distinct)}
    engine_code = np.array([rank[e] for e in engine_names], dtype=np.int64)
    start = cycles(piece_start)
    end = cycles(piece_end)
    if end.size and end.max() >= MAX_CYCLES:
        raise ChromeTraceError(f"{ev.source}: the trace spans {end.max():.3g} cycles at "
                               f"{scale:g} cycles per µs, past what int64 cycles hold; pass a "
                               f"smaller --cycles-per-us.")
    start, end = start.astype(np.int64), end.astype(np.int64)
    event = slices.event[piece_row]
    order_ids = np.lexsort((np.arange(m), event, engine_code, piece_depth, start))
    ids = np.empty(m, dtype=np.int64)
    ids[order_ids] = np.arange(m)
    by_engine = np.lexsort((ids, engine_code))
    per_engine = np.bincount(engine_code, minlength=len(distinct))
    seq = np.empty(m, dtype=np.int64)
    seq[by_engine] = np.arange(m) - np.repeat(np.cumsum(per_engine) - per_engine,
                                              per_engine[per_engine > 0])
    # Work args on a slice's first piece only.
    is_first = first_piece[piece_row] == np.arange(m)
    work_cols = {key: _arg_ints([v if f else None for v, f in zip(
        [args[key][r] for r in piece_row.tolist()], is_first.tolist(), strict=True)], key)
        for key in WORK_ARGS}
    table = pl.DataFrame({
        "id": ids,
        "engine": pl.Series([distinct[c] for c in engine_code.tolist()], dtype=pl.String),
        "seq": seq,
        "opcode": pl.Series(clean_texts([names[r] for r in piece_row.tolist()]),
                            dtype=pl.String),
        "start": start,
        "end": end,
        **work_cols,
        "layer": pl.Series(clean_texts([cats[r] if type(cats[r]) is str else None
                                        for r in piece_row.tolist()]), dtype=pl.String),
    })

    # Nesting: consecutive pieces of a thread on different engines (depths) are linked.
    src_p: list[np.ndarray] = []
    dst_p: list[np.ndarray] = []
    kinds: list[str] = []
    if nesting is Nesting.DEPTH and chain_len > 1:
        chain = np.arange(chain_len)
        th = slices.thread[piece_row[chain]]
        step = (th[1:] == th[:-1]) & (piece_depth[chain][1:] != piece_depth[chain][:-1])
        src_p.append(chain[:-1][step])
        dst_p.append(chain[1:][step])
        kinds += [EdgeKind.ORDER.value] * int(step.sum())
        counts["nesting links"] = int(step.sum())
    for a, b, k in edges:
        if a.size:
            src_p.append(last_piece[a])
            dst_p.append(first_piece[b])
            kinds += [k] * a.size
    if src_p:
        sp, dp = np.concatenate(src_p), np.concatenate(dst_p)
    else:
        sp = dp = np.zeros(0, np.int64)
    ok = (sp >= 0) & (dp >= 0)
    deps = pl.DataFrame({"src": ids[sp[ok]], "dst": ids[dp[ok]],
                         "kind": np.array(kinds, dtype=object)[ok] if kinds else []},
                        schema={"src": pl.Int64, "dst": pl.Int64, "kind": pl.String})
    forward = deps["dst"] > deps["src"]
    counts["edges pointing back in time dropped"] = int((~forward).sum())
    deps = deps.filter(forward).unique(subset=["src", "dst"], keep="first",
                                       maintain_order=True)

    engines: dict[str, dict[str, Any]] = {}
    for k in range(m):
        e = engine_names[k]
        if e in engines:
            continue
        r = int(piece_row[k])
        pid, tid = inverse[int(slices.thread[r])]
        engines[e] = {"pid": pid, "tid": tid, "name": labels[int(slices.thread[r])]}
        if kind[r] == GPU:
            engines[e].update(device=gpu_key[r][0], stream=gpu_key[r][1])
        else:
            engines[e]["depth"] = int(piece_depth[k])
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
    return table.sort("id"), deps, extra
