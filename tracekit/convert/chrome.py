"""Import Chrome trace event JSON (the PyTorch profiler's, many simulators', tracekit's own
export) as a trace bundle: slices become instructions, threads become engines, flow events
become dependencies.

    [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "stream 7"}},
     {"ph": "X", "name": "cudaLaunchKernel", "cat": "cuda_runtime", "pid": 1, "tid": 1,
      "ts": 10.0, "dur": 4.5},
     {"ph": "X", "name": "gemm", "cat": "kernel", "pid": 1, "tid": 7, "ts": 16.0, "dur": 20.0},
     {"ph": "s", "id": 3, "cat": "ac2g", "name": "ac2g", "pid": 1, "tid": 1, "ts": 10.0},
     {"ph": "f", "id": 3, "cat": "ac2g", "name": "ac2g", "pid": 1, "tid": 7, "ts": 16.0,
      "bp": "e"}]

at the default 1000 cycles per µs gives instruction 0 (engine "1/1", opcode cudaLaunchKernel,
layer cuda_runtime, cycles 0-4500), instruction 1 (engine "1/stream 7", opcode gemm, layer
kernel, cycles 6000-26000) and the dependency 0 -> 1 (kind data).

Rules:

- Input: an object with `traceEvents` (and optionally `otherData`), or a bare array (whose
  closing bracket may be missing, as the format allows); gzip-compressed files are read too.
  The file is read as a stream (jsonstream.py) into compact columns (events.py): at most
  `--max-depth` (64) levels of nesting and `--max-bytes` of JSON after decompression (half
  the machine's memory, at most 64 GiB), each refused with a message naming its flag.
- Slices: complete events (ph X) and B/E pairs, paired per (pid, tid) in time order. Instant
  events (i, I), counters, samples, async and object events are ignored and counted in the
  notes. name -> opcode; cat -> layer (the category is what such traces attribute time to:
  kernel, cpu_op, cuda_runtime, ...); args bytes, elements, flops (non-negative) and pc when
  integers; E events' args are not read.
- Time: cycles = (ts - the earliest slice's ts) x cycles_per_us (default 1000: 1 cycle = 1 ns,
  clock_hz 1e9), rounded to the nearest integer at both ends of each slice; the offset in µs
  goes to the manifest's extra.chrome.origin_us.
- Engines: one per thread, "PROCESS/THREAD" from the process_name and thread_name metadata
  (the pid or tid itself where a name is missing). Slices nested on one thread (a CPU op and
  the ops it calls) would break the engine's one-instruction-at-a-time rule; `nesting` decides:
  depth (default) keeps every slice and puts depth d > 0 on engine "PROCESS/THREAD/d{d}" (a
  slice goes to the lowest depth free at its start, so improperly overlapping slices also land
  on separate engines); top keeps the outermost slices; leaf keeps the slices inside which no
  other slice begins.
- Order: ids follow (start, depth, engine, position in the file); seq numbers each engine's
  instructions in that order.
- Flows: v1 events (s, t, f) with equal (cat, name, id) form a chain in time order: s and t
  bind to the innermost kept slice enclosing their ts on their thread, f likewise with bp "e"
  and otherwise to the next slice starting at or after its ts; each step of a chain becomes a
  deps row (kind data). X or B events with bind_id and flow_out / flow_in form chains the same
  way (bound to the event's own slice). A t or f whose id no s opened is an error; an s that no
  f closes, an end that binds to no slice, a self edge and an edge that goes back in time are
  dropped and counted in the notes.
- tracekit's own export (`otherData.tracekit`) is read exactly: the first timeline's slices
  (observed when present) with their args' id, engine, seq, layer, pc, elements, bytes and
  flops, ts and dur as cycles, the clock and workload from otherData, and the critical path's
  flows as deps of the edge kind they carry.

Bad input raises ChromeTraceError naming the file, the event's index in traceEvents and the fix.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import operator
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from itertools import repeat

from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from tracekit import __version__
from tracekit.convert.events import FLOAT, INT, EventTable
from tracekit.convert.jsonstream import DEFAULT_MAX_DEPTH, StreamError, read_document
from tracekit.convert.kineto import Profile, is_kineto, kineto_tables
from tracekit.convert.lanes import lowest_free_lane
from tracekit.errors import TracekitError
from tracekit.trace.bundle import Trace, write_trace
from tracekit.trace.manifest import Producer
from tracekit.trace.schema import INSTRUCTIONS, EdgeKind
from tracekit.trace.summary import natural_key

DEFAULT_CYCLES_PER_US = 1000.0
"""Cycles per microsecond of ts when neither the user nor the file says: 1 GHz."""

TRACEKIT_FORMAT = 1
MAX_CYCLES = 2**62
SLICE_PHASES = ("X", "B", "E")
FLOW_PHASES = ("s", "t", "f")
START, STEP, END = 0, 1, 2
ENCLOSING, NEXT = 0, 1
WORK_ARGS = ("pc", "elements", "bytes", "flops")


class ChromeTraceError(TracekitError):
    """A Chrome trace event file that cannot be imported: not JSON, no slices, a malformed
    event, unmatched B/E, a flow with an unknown id."""


class Nesting(StrEnum):
    """Which slices nested on one thread become instructions (see the module docstring)."""

    DEPTH = "depth"
    TOP = "top"
    LEAF = "leaf"


@dataclass(frozen=True)
class ChromeImport:
    """The tables and manifest fields of an imported file, and notes on what was dropped.

    `instructions`: the schema's instruction columns (start, end in cycles). `deps`: src, dst,
    kind. `extra`: the manifest's extra.chrome record.
    """

    instructions: pl.DataFrame
    deps: pl.DataFrame
    workload: str | None
    clock_hz: float
    extra: dict[str, Any]
    notes: tuple[str, ...]


# --- reading ---------------------------------------------------------------------------------


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of event dicts and field tuples are
    made: none of them forms a cycle, and each collection would walk them all again (it
    doubles the time of json.loads on a large trace). Restored on the way out."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_events(path: str | os.PathLike[str], *, max_depth: int = DEFAULT_MAX_DEPTH,
                max_bytes: int | None = None) -> tuple[EventTable, dict[str, Any]]:
    """The events of a Chrome trace event file as columns, read as a stream (see
    jsonstream.py), and the otherData object (with the top-level keys beside traceEvents under
    "_keys"). `max_depth` and `max_bytes` (default: half the machine's memory, at most 64
    GiB) bound the JSON's nesting and expanded size."""
    source = Path(path)
    try:
        with _gc_paused():
            doc = read_document(source, lambda: EventTable(str(source)), max_depth=max_depth,
                                max_bytes=max_bytes)
    except StreamError as exc:
        raise ChromeTraceError(str(exc)) from None
    if doc.not_array is not None:
        if doc.keys is not None:
            raise ChromeTraceError(f"{source}: traceEvents is a {doc.not_array}, not an array "
                                   f"of events.")
        doc = None
    if doc is None or (doc.sink is None and doc.keys is not None):
        raise ChromeTraceError(f"{source}: the JSON is neither an array of events nor an "
                               f"object with a traceEvents array; is it a Chrome trace event "
                               f"file?")
    table: EventTable = doc.sink
    table.finish()
    if not table.count:
        raise ChromeTraceError(f"{source}: holds no events; there is nothing to import.")
    other = dict(doc.other) if isinstance(doc.other, dict) else {}
    other["_keys"] = doc.keys or []
    return table, other


# --- compiled passes -------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _pair(thread, is_begin):  # pragma: no cover - compiled
    """Match E to B per thread, rows sorted by (thread, ts, file order). Returns the B row of
    each E row (-1 for B rows), a status (0 ok, 1 an E with no open B, 2 a B never ended)
    and the offending row."""
    n = thread.size
    partner = np.full(n, -1, dtype=np.int64)
    stack = np.empty(n + 1, dtype=np.int64)
    top = 0
    for i in range(n):
        if i > 0 and thread[i] != thread[i - 1] and top > 0:
            return partner, 2, stack[top - 1]
        if is_begin[i]:
            stack[top] = i
            top += 1
        else:
            if top == 0:
                return partner, 1, i
            top -= 1
            partner[i] = stack[top]
    if top > 0:
        return partner, 2, stack[top - 1]
    return partner, 0, -1


@numba.njit(cache=True, nogil=True)
def _bind(group_ptr, thread_groups, ts, end, ep_thread, ep_ts, ep_mode):  # pragma: no cover
    """The slice each flow end binds to (-1: none). Slices sorted by (thread, depth, ts);
    group g is rows group_ptr[g]:group_ptr[g+1]; thread t's groups (by depth) are
    thread_groups[t]:thread_groups[t+1]. ENCLOSING: the deepest slice with ts <= t <= end;
    NEXT: the slice starting first at or after t (the shallowest on a tie)."""
    out = np.full(ep_ts.size, -1, dtype=np.int64)
    for j in range(ep_ts.size):
        t = ep_thread[j]
        if t < 0:
            continue
        x = ep_ts[j]
        if ep_mode[j] == 0:
            for g in range(thread_groups[t + 1] - 1, thread_groups[t] - 1, -1):
                lo, hi = group_ptr[g], group_ptr[g + 1]
                k = lo + np.searchsorted(ts[lo:hi], x, side="right") - 1
                if k >= lo and end[k] >= x:
                    out[j] = k
                    break
        else:
            best = np.inf
            for g in range(thread_groups[t], thread_groups[t + 1]):
                lo, hi = group_ptr[g], group_ptr[g + 1]
                k = lo + np.searchsorted(ts[lo:hi], x, side="left")
                if k < hi and ts[k] < best:
                    best = ts[k]
                    out[j] = k
    return out


# --- field extraction ------------------------------------------------------------------------


class _Events:
    """Typed access to the fields of the rows (slices, B/E and flow events) of an EventTable,
    failing with the file and the offending event's index in traceEvents. Each field is
    gathered for many rows at once and its types checked as a set (C speed); only a failing
    check looks for the offending row."""

    def __init__(self, table: EventTable, source: str) -> None:
        self.table = table
        self.source = source

    def fail(self, row: int, what: str, fix: str) -> ChromeTraceError:
        return ChromeTraceError(f"{self.source}: event {self.table.event_index(int(row))}: {what}. "
                                f"{fix}")

    def get(self, idx: np.ndarray, key: str) -> list[Any]:
        return self.table.get(idx, key)

    def value(self, row: int, key: str) -> Any:
        return self.table.value(row, key)

    def args(self, idx: np.ndarray, keys: tuple[str, ...]) -> dict[str, list[Any]]:
        """args[key] of each row for each key (None where args is not an object or lacks
        the key)."""
        return {key: self.table.get(idx, f"args.{key}") for key in keys}

    def columns(self, idx: np.ndarray, *keys: str) -> dict[str, Sequence[Any]]:
        return {key: self.get(idx, key) for key in keys}

    def numbers(self, idx: np.ndarray, key: str, what: str,
                values: Sequence[Any] | None = None) -> np.ndarray:
        if values is None:
            array = self.table.floats(idx, key)
            if array is not None and np.isfinite(array).all():
                return array
            values = self.get(idx, key)
        if set(map(type, values)) <= {int, float}:
            try:
                array = np.array(values, dtype=np.float64)
            except OverflowError:
                array = np.array([math.inf])
            if np.isfinite(array).all():
                return array
        for k, v in enumerate(values):
            if type(v) not in (int, float) or not _finite(v):
                shown = "missing" if v is None else f"{json.dumps(v)}, not a finite number"
                raise self.fail(int(idx[k]), f'"{key}" is {shown}',
                                f"Every {what} needs a numeric {key} in microseconds.")
        raise AssertionError("unreachable")  # pragma: no cover

    def ids(self, idx: np.ndarray, key: str, what: str,
            values: Sequence[Any] | None = None) -> Sequence[Any]:
        values = self.get(idx, key) if values is None else values
        if not set(map(type, values)) <= {int, str}:
            k = next(k for k, v in enumerate(values) if type(v) not in (int, str))
            raise self.fail(int(idx[k]), f'"{key}" is missing or not an integer or string',
                            f"Every {what} needs a {key}.")
        return values

    def names(self, idx: np.ndarray, key: str, what: str,
              values: Sequence[Any] | None = None) -> Sequence[str]:
        values = self.get(idx, key) if values is None else values
        if not set(map(type, values)) <= {str}:
            k = next(k for k, v in enumerate(values) if type(v) is not str)
            raise self.fail(int(idx[k]), f'"{key}" is missing or not a string',
                            f"Every {what} needs a {key}.")
        return values


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _thread_groups(ev: _Events, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows grouped by equal (pid, tid): the row position of each group's first row and each
    row's group; None when a pid or tid is not an integer or a string."""
    dense = []
    for key in ("pid", "tid"):
        keys, valid = ev.table.int_keys(rows, key)
        text = ev.table.texts(rows, key)
        if not (valid | (text >= 0)).all():
            return None
        # Integers and strings apart (a string's code may equal an integer).
        if valid.all() or not valid.any():
            _, inverse = np.unique(np.where(valid, keys, text), return_inverse=True)
        else:
            _, inverse = np.unique(np.stack([valid.astype(np.int64),
                                             np.where(valid, keys, text)]),
                                   axis=1, return_inverse=True)
        dense.append(inverse.reshape(-1).astype(np.int64))
    pair = dense[0] * (int(dense[1].max(initial=0)) + 1) + dense[1]
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _thread_key(ev: _Events, row: int) -> tuple[Any, Any]:
    table = ev.table
    return tuple(table.decode(*(int(a[0]) for a in table.raw(np.array([row]), f)))
                 for f in ("pid", "tid"))  # type: ignore[return-value]


def _thread_codes(ev: _Events, rows: np.ndarray, what: str,
                  threads: dict[tuple[Any, Any], int]) -> np.ndarray:
    """The code in `threads` of each row's (pid, tid), new threads numbered in the order
    they first appear; the fields checked as `_Events.ids` does."""
    groups = _thread_groups(ev, rows)
    if groups is None:
        ev.ids(rows, "pid", what)
        ev.ids(rows, "tid", what)
        raise AssertionError("unreachable")  # pragma: no cover
    first, inverse = groups
    code = np.empty(first.size, dtype=np.int64)
    for k in np.argsort(first, kind="stable").tolist():
        code[k] = threads.setdefault(_thread_key(ev, int(rows[first[k]])), len(threads))
    return code[inverse]


def _thread_lookup(ev: _Events, rows: np.ndarray, threads: dict[tuple[Any, Any], int]
                   ) -> np.ndarray:
    """The code in `threads` of each row's (pid, tid), -1 where it is no slice's thread."""
    groups = _thread_groups(ev, rows)
    if groups is None:
        return np.array([threads.get(key, -1) for key in zip(
            ev.get(rows, "pid"), ev.get(rows, "tid"), strict=True)], dtype=np.int64)
    first, inverse = groups
    code = np.array([threads.get(_thread_key(ev, int(rows[k])), -1) for k in first.tolist()],
                    dtype=np.int64)
    return code[inverse]


def _arg_ints(values: Sequence[Any], key: str) -> pl.Series:
    """The values that are integers (or integral floats) in int64, and non-negative for the
    schema's non-negative columns (all but pc); others null."""
    low = 0 if INSTRUCTIONS.column(key).non_negative else -MAX_CYCLES
    if set(map(type, values)) <= {int, type(None)}:
        try:
            series = pl.Series(key, values, dtype=pl.Int64)
            return series.set(series < low, None) if (series < low).any() else series
        except (OverflowError, TypeError, pl.exceptions.PolarsError):
            pass
    out: list[int | None] = []
    for v in values:
        if type(v) is int and low <= v < MAX_CYCLES:
            out.append(v)
        elif type(v) is float and low <= v < MAX_CYCLES and v.is_integer():
            out.append(int(v))
        else:
            out.append(None)
    return pl.Series(key, out, dtype=pl.Int64)


def _arg_ints_at(table: EventTable, rows: np.ndarray, key: str,
                 keep: np.ndarray | None = None) -> pl.Series:
    """`_arg_ints` of args.KEY at `rows` (null where `keep` is False), with no Python object
    per row."""
    low = 0 if INSTRUCTIONS.column(key).non_negative else -MAX_CYCLES
    if not table.holds(f"args.{key}"):
        return pl.repeat(None, rows.size, dtype=pl.Int64, eager=True).alias(key)
    kind, payload = table.raw(rows, f"args.{key}")
    as_float = payload.view(np.float64)
    is_float = kind == FLOAT
    whole = np.zeros(rows.size, dtype=bool)
    whole[is_float] = ((as_float[is_float] >= low) & (as_float[is_float] < MAX_CYCLES)
                       & (np.floor(as_float[is_float]) == as_float[is_float]))
    values = np.where(kind == INT, payload, 0)
    values[whole] = as_float[whole].astype(np.int64)
    ok = ((kind == INT) & (payload >= low) & (payload < MAX_CYCLES)) | whole
    if keep is not None:
        ok &= keep
    series = pl.Series(key, values, dtype=pl.Int64)
    return series if ok.all() else series.set(pl.Series(~ok), None)


def _text_series(table: EventTable, codes: np.ndarray, name: str = "") -> pl.Series:
    """Strings by their codes (`EventTable.texts`; -1 null), lone surrogates replaced, as a
    categorical column (see `categorical`): each distinct string is made once."""
    values = table.text_values
    # Codes are below the number of distinct values: a table of those present, no sort.
    present = np.zeros(values.size + 1, dtype=bool)
    present[codes] = True  # -1 marks the last entry: null
    uniq = np.flatnonzero(present[:-1])
    dense = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
    dense[-1] = -1
    return categorical(name, dense[codes], clean_texts([values[c] for c in uniq.tolist()]))


def categorical(name: str, codes: np.ndarray, texts: Sequence[str]) -> pl.Series:
    """The strings `texts[code]` of `codes` (int32; -1 null) as a polars categorical column:
    four bytes a row where a string column takes sixteen, and the same bundle once written
    (the writer dictionary-encodes either)."""
    absent = codes < 0
    indices = pa.array(codes, type=pa.int32(), mask=absent if absent.any() else None)
    return pl.Series(name, pa.DictionaryArray.from_arrays(indices, pa.array(texts, pa.string())))


def _arg_strings(values: Sequence[Any]) -> pl.Series:
    """Strings as they are (lone surrogates replaced, see `clean_text`), anything else
    null."""
    if set(map(type, values)) <= {str, type(None)}:
        return pl.Series(clean_texts(values), dtype=pl.String)
    return pl.Series(clean_texts([v if type(v) is str else None for v in values]),
                     dtype=pl.String)


def clean_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold (a lone surrogate such as "\\ud800", which JSON
    allows) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def clean_texts(values: Sequence[Any]) -> list[Any]:
    """`clean_text` over strings (others as they are), fast when all are clean."""
    strings = [v for v in values if type(v) is str]
    try:
        "".join(strings).encode("utf-8")
        return list(values)
    except UnicodeEncodeError:
        return [clean_text(v) if type(v) is str else v for v in values]


# --- the conversion --------------------------------------------------------------------------


@dataclass
class _Slices:
    """Every slice of the file (X events, then B/E pairs): its event index (of the X or the B),
    thread code, ts and end (µs), and depth on its thread (filled in once known)."""

    event: np.ndarray
    thread: np.ndarray
    ts: np.ndarray
    end: np.ndarray
    depth: np.ndarray | None = None


def chrome_tables(events: Sequence[Any] | EventTable, other: dict[str, Any], source: str, *,
                  cycles_per_us: float | None = None,
                  nesting: Nesting | str = Nesting.DEPTH,
                  profile: Profile | str = Profile.AUTO) -> ChromeImport:
    """The instructions and deps of a Chrome trace's events (a list of decoded events, or the
    table `read_events` fills; see the module docstring)."""
    with _gc_paused():
        table = events if isinstance(events, EventTable) else EventTable.of(events, source)
        return _chrome_tables(table, other, source, cycles_per_us, Nesting(nesting),
                              Profile(profile))


def _chrome_tables(table: EventTable, other: dict[str, Any], source: str,
                   cycles_per_us: float | None, nesting: Nesting,
                   profile: Profile) -> ChromeImport:
    if cycles_per_us is not None and not (math.isfinite(cycles_per_us) and cycles_per_us > 0):
        raise ChromeTraceError(f"--cycles-per-us must be a positive number, got "
                               f"{cycles_per_us}.")
    ev = _Events(table, source)
    if table.first_not_object is not None:
        i, kind = table.first_not_object
        raise ChromeTraceError(f"{source}: event {i}: a {kind}, not an object. Every entry of "
                               f"traceEvents must be a JSON object.")
    if table.first_no_phase is not None:
        raise ChromeTraceError(f"{source}: event {table.first_no_phase}: no \"ph\" (phase). "
                               f"Give every event a phase such as \"X\".")
    ph = table.ph
    tk = other.get("tracekit")
    tracekit_pid = None
    if (isinstance(tk, dict) and tk.get("format") == TRACEKIT_FORMAT
            and isinstance(tk.get("timelines"), list) and tk["timelines"]
            and isinstance(tk["timelines"][0], dict)):
        tracekit_pid = tk["timelines"][0].get("pid")
        if type(tracekit_pid) not in (int, str):
            tracekit_pid = None
    if profile is Profile.AUTO:
        keys = other.get("_keys", [])
        profile = (Profile.KINETO if tracekit_pid is None and is_kineto(keys, table.tail)
                   else Profile.GENERIC)
    if profile is Profile.KINETO:
        tracekit_pid = None
    keep_event = np.ones(table.rows, dtype=bool)
    if tracekit_pid is not None:
        pids = ev.get(np.arange(table.rows), "pid")
        keep_event = np.fromiter(map(operator.eq, pids, repeat(tracekit_pid)), dtype=bool,
                                 count=table.rows)

    threads: dict[tuple[Any, Any], int] = {}
    slices = _collect_slices(ev, ph, keep_event, threads)
    if slices.event.size == 0:
        raise ChromeTraceError(f"{source}: no complete events (ph X) or B/E pairs; there is "
                               f"nothing to import as instructions.")
    ignored = (table.other_phases(tracekit_pid) if tracekit_pid is not None
               else table.other_phases())
    if tracekit_pid is not None:
        ignored.pop("C", None)  # the export's own bandwidth counters
    notes: list[str] = []

    # Depth of each slice on its thread, and which are kept.
    order = np.lexsort((slices.event, -slices.end, slices.ts, slices.thread))
    thread, ts, end = slices.thread[order], slices.ts[order], slices.end[order]
    depth_sorted = lowest_free_lane(thread, ts, end)
    # Whether another slice of its thread begins inside it (the next in this order does).
    inner_sorted = np.r_[(thread[1:] == thread[:-1]) & (ts[1:] < end[:-1]), False]
    depth = np.empty_like(depth_sorted)
    depth[order] = depth_sorted
    slices.depth = depth
    inner = np.empty_like(inner_sorted)
    inner[order] = inner_sorted
    del order, thread, ts, end, depth_sorted, inner_sorted
    if profile is Profile.KINETO:
        table, deps, extra = kineto_tables(
            ev, ph, threads, slices, nesting,
            cycles_per_us if cycles_per_us is not None else DEFAULT_CYCLES_PER_US, notes)
        ignored.pop("s", None)
        ignored.pop("f", None)
        extra["ignored_events"] = dict(sorted(ignored.items()))
        if ignored:
            listing = ", ".join(f"{n:,} ph {p!r}" for p, n in sorted(ignored.items()))
            notes.append(f"ignored events that are not slices or flows: {listing}.")
        scale = extra["cycles_per_us"]
        return ChromeImport(instructions=table, deps=deps, workload=None,
                            clock_hz=scale * 1e6, extra=extra, notes=tuple(notes))
    if tracekit_pid is not None or nesting is Nesting.DEPTH:
        kept = np.ones(depth.size, dtype=bool)
    elif nesting is Nesting.TOP:
        kept = depth == 0
    else:
        kept = ~inner
    if not kept.all():
        notes.append(f"--nesting {nesting.value}: {int((~kept).sum()):,} nested slices of "
                     f"{kept.size:,} left out.")

    flow_keep = keep_event
    if tracekit_pid is not None:
        # An export carries the trace's dependencies as flows of cat "dependency" (older
        # ones only the critical path's arrows): those are the deps when present.
        is_flow = np.isin(ph, FLOW_PHASES) & keep_event
        cats = np.array(ev.get(np.flatnonzero(is_flow), "cat"), dtype=object)
        if (cats == "dependency").any():
            flow_keep = keep_event.copy()
            flow_keep[np.flatnonzero(is_flow)[cats != "dependency"]] = False
    edges, edge_kind = _flows(ev, ph, flow_keep, threads, slices, kept, notes)
    rows = np.flatnonzero(kept)
    if tracekit_pid is not None:
        table, clock_hz, workload, extra = _tracekit_rows(ev, tk, slices, rows, cycles_per_us)
        ids = table["id"].to_numpy()
        table = table.sort("id")
    else:
        table, ids, clock_hz, extra = _generic_rows(ev, ph, threads, slices, rows, depth,
                                                    nesting, cycles_per_us)
        workload = None
    # Edges between kept slices, as instruction ids (table rows follow `rows`).
    position = np.full(slices.event.size, -1, dtype=np.int64)
    position[rows] = np.arange(rows.size)
    src, dst = position[edges[:, 0]], position[edges[:, 1]]
    deps = pl.DataFrame({"src": ids[src], "dst": ids[dst], "kind": edge_kind},
                        schema={"src": pl.Int64, "dst": pl.Int64, "kind": pl.String})
    if tracekit_pid is None and deps.height:
        forward = deps["dst"] > deps["src"]  # ids follow start time
        if not forward.all():
            notes.append(f"{int((~forward).sum()):,} flow(s) pointing back in time (or at "
                         f"their own slice) dropped.")
        deps = deps.filter(forward)
    deps = deps.unique(maintain_order=True)
    extra["ignored_events"] = dict(sorted(ignored.items()))
    if ignored:
        listing = ", ".join(f"{n:,} ph {p!r}" for p, n in sorted(ignored.items()))
        notes.append(f"ignored events that are not slices or flows: {listing}.")
    return ChromeImport(instructions=table, deps=deps, workload=workload,
                        clock_hz=clock_hz, extra=extra, notes=tuple(notes))


def _collect_slices(ev: _Events, ph: np.ndarray, keep: np.ndarray,
                    threads: dict[tuple[Any, Any], int]) -> _Slices:
    """X events, then B/E pairs matched per thread."""
    x = np.flatnonzero((ph == "X") & keep)
    what = 'complete event (ph "X")'
    ts = ev.numbers(x, "ts", what)
    dur = ev.numbers(x, "dur", what)
    if (dur < 0).any():
        bad = int(x[np.flatnonzero(dur < 0)[0]])
        raise ev.fail(bad, f'"dur" is negative ({ev.value(bad, "dur")})',
                      "A slice's duration is >= 0; check the producer's timestamps.")
    if not (ev.table.texts(x, "name") >= 0).all():
        ev.names(x, "name", what)
    x_thread = _thread_codes(ev, x, what, threads)

    be = np.flatnonzero(((ph == "B") | (ph == "E")) & keep)
    what = "B or E event"
    be_ts = ev.numbers(be, "ts", what)
    be_thread = _thread_codes(ev, be, what, threads)
    is_begin = ph[be] == "B"
    if not (ev.table.texts(be[is_begin], "name") >= 0).all():
        ev.names(be[is_begin], "name", 'begin event (ph "B")')
    order = np.lexsort((be, be_ts, be_thread))
    partner, status, bad = _pair(be_thread[order], is_begin[order])
    if status:
        event = int(be[order[bad]])
        pid, tid = ev.value(event, "pid"), ev.value(event, "tid")
        if status == 1:
            raise ev.fail(event, f'ph "E" ends no open slice on pid {pid}, tid {tid}',
                          "Every E needs an earlier B on the same thread: remove the stray E "
                          "or add its B.")
        raise ev.fail(event, f'ph "B" on pid {pid}, tid {tid} is never ended',
                      "Add its E event, or write the slice as one complete event (ph X).")
    ends = np.flatnonzero(partner >= 0)
    begins = partner[ends]
    b_event = be[order[begins]]
    return _Slices(
        event=np.concatenate([x, b_event]),
        thread=np.concatenate([x_thread, be_thread[order[begins]]]),
        ts=np.concatenate([ts, be_ts[order[begins]]]),
        end=np.concatenate([ts + dur, be_ts[order[ends]]]),
    )


def _flows(ev: _Events, ph: np.ndarray, keep: np.ndarray, threads: dict[tuple[Any, Any], int],
           slices: _Slices, kept: np.ndarray, notes: list[str]
           ) -> tuple[np.ndarray, list[str]]:
    """Edges (pairs of slice indices) and their kinds from v1 flow events and bind_id ties."""
    keys: dict[Any, int] = {}
    fl = np.flatnonzero(np.isin(ph, FLOW_PHASES) & keep)
    fl_id = _flow_ids(ev, fl)
    if None in fl_id:
        for k, i in enumerate(fl.tolist()):
            if fl_id[k] is None and ev.value(i, "id2") is None:
                raise ev.fail(i, f'flow event (ph "{ph[i]}") has no "id"',
                              "Give each flow's events the same id.")
    setdefault = keys.setdefault
    fl_key = np.array([setdefault(("v1", c, n, i), len(keys)) for c, n, i in zip(
        ev.get(fl, "cat"), ev.get(fl, "name"), fl_id, strict=True)], dtype=np.int64)
    fl_ts = ev.numbers(fl, "ts", "flow event")
    fl_thread = np.array([threads.get(key, -1) for key in zip(
        ev.ids(fl, "pid", "flow event"), ev.ids(fl, "tid", "flow event"), strict=True)],
        dtype=np.int64)
    fl_phase = np.array([("s", "t", "f").index(p) for p in ph[fl].tolist()], dtype=np.int64)
    fl_mode = np.where((ph[fl] == "f") & ~np.array([b == "e" for b in ev.get(fl, "bp")],
                                                   dtype=bool), NEXT, ENCLOSING).astype(np.int64)
    fl_kind = [k if k in EDGE_KINDS else EdgeKind.DATA.value for k in ev.get(fl, "args.edge")]

    # bind_id ties on slices (flow events v2): a flow_out starts, a flow_in ends, both steps.
    tied_arr = np.flatnonzero(ev.table.has(slices.event, "bind_id"))
    flow_in = ev.get(slices.event[tied_arr], "flow_in")
    flow_out = ev.get(slices.event[tied_arr], "flow_out")
    is_tied = np.array([bool(i or o) for i, o in zip(flow_in, flow_out, strict=True)], bool)
    tied_arr = tied_arr[is_tied] if tied_arr.size else tied_arr
    flow_in = [v for v, t in zip(flow_in, is_tied.tolist(), strict=True) if t]
    flow_out = [v for v, t in zip(flow_out, is_tied.tolist(), strict=True) if t]
    t_key = np.array([keys.setdefault(("v2", json.dumps(b)), len(keys)) for b in ev.get(
        slices.event[tied_arr], "bind_id")], dtype=np.int64)
    t_phase = np.array([STEP if i and o else END if i else START
                        for i, o in zip(flow_in, flow_out, strict=True)], dtype=np.int64)

    # Sort every flow end by (key, ts, file order) and chain consecutive ends.
    key = np.concatenate([fl_key, t_key])
    ts = np.concatenate([fl_ts, slices.ts[tied_arr]])
    phase = np.concatenate([fl_phase, t_phase])
    event = np.concatenate([fl, slices.event[tied_arr]])
    if key.size == 0:
        return np.zeros((0, 2), dtype=np.int64), []
    order = np.lexsort((event, ts, key))
    key, ts, phase, event = key[order], ts[order], phase[order], event[order]
    same_prev = np.r_[False, key[1:] == key[:-1]]
    opens = np.r_[False, phase[:-1] != END] & same_prev
    closing = phase != START
    orphan = closing & ~opens
    if orphan.any():
        bad = int(event[np.flatnonzero(orphan)[0]])
        raise ev.fail(bad, f'flow event (ph "{ph[bad]}") has an id that no flow '
                      f'start (ph "s" or flow_out) opened at or before its ts',
                      "Add the flow's start event with the same cat, name and id, or remove "
                      "this one.")
    dangling = (phase == START) & ~np.r_[closing[1:] & same_prev[1:], False]
    if dangling.any():
        notes.append(f"{int(dangling.sum()):,} flow start(s) that no flow end follows ignored.")

    # Bind each end to a kept slice.
    bound = _bind_ends(slices, kept,
                       np.concatenate([fl_thread, slices.thread[tied_arr]])[order], ts,
                       np.concatenate([fl_mode, np.zeros(tied_arr.size, np.int64)])[order],
                       np.concatenate([np.full(fl.size, -1), tied_arr])[order])
    pair = np.flatnonzero(closing)
    src, dst = bound[pair - 1], bound[pair]
    kinds = np.array(fl_kind + ["data"] * tied_arr.size, dtype=object)[order][pair]
    unbound = (src < 0) | (dst < 0)
    if unbound.any():
        notes.append(f"{int(unbound.sum()):,} flow(s) with an end on no slice ignored.")
    ok = ~unbound & (src != dst)
    return np.stack([src[ok], dst[ok]], axis=1), kinds[ok].tolist()


EDGE_KINDS = frozenset(k.value for k in EdgeKind)


def _flow_ids(ev: _Events, rows: np.ndarray) -> list[Any]:
    """A hashable form of each flow event's id (or id2 where it has no id); None where
    neither is there."""
    values = ev.get(rows, "id")
    if None in values:
        has_id = ev.table.has(rows, "id").tolist()
        id2 = ev.get(rows, "id2")
        values = [v if h else w for v, h, w in zip(values, has_id, id2, strict=True)]
    if set(map(type, values)) <= {int, str}:
        return values
    return [v if type(v) in (int, str) or v is None else json.dumps(v, sort_keys=True)
            for v in values]


def _bind_ends(slices: _Slices, kept: np.ndarray, thread: np.ndarray, ts: np.ndarray,
               mode: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The kept slice (index into slices) of each flow end: its own slice when it is tied to a
    kept one, else the search of `_bind` among the kept slices of its thread."""
    # Kept slices of one depth never overlap on a thread (see lowest_free_lane), so each (thread,
    # depth) group is sorted by both ts and end, and a binary search finds the candidate.
    assert slices.depth is not None
    rows = np.flatnonzero(kept)
    order = rows[np.lexsort((slices.ts[rows], slices.depth[rows], slices.thread[rows]))]
    th, dp = slices.thread[order], slices.depth[order]
    change = np.r_[True, (th[1:] != th[:-1]) | (dp[1:] != dp[:-1])]
    group_ptr = np.r_[np.flatnonzero(change), order.size].astype(np.int64)
    group_thread = th[change]
    n_threads = int(max(slices.thread.max(initial=0), thread.max(initial=0))) + 1
    thread_groups = np.searchsorted(group_thread, np.arange(n_threads + 1)).astype(np.int64)
    found = _bind(group_ptr, thread_groups, slices.ts[order], slices.end[order],
                  thread.astype(np.int64), ts.astype(np.float64), mode.astype(np.int64))
    bound = np.where(found >= 0, order[np.maximum(found, 0)], -1)
    direct = (own >= 0) & kept[np.maximum(own, 0)]
    return np.where(direct, own, bound)


def _tracekit_rows(ev: _Events, tk: dict[str, Any], slices: _Slices, rows: np.ndarray,
                   cycles_per_us: float | None
                   ) -> tuple[pl.DataFrame, float | None, str | None, dict[str, Any]]:
    """Instructions restored from the args of tracekit's own export, one row per slice of
    `rows` in that order."""
    idx = slices.event[rows]
    scale = cycles_per_us if cycles_per_us is not None else 1.0
    start = slices.ts[rows] * scale
    end = slices.end[rows] * scale
    if not (np.all(start == np.rint(start)) and np.all(end == np.rint(end))):
        bad = int(idx[np.flatnonzero((start != np.rint(start)) | (end != np.rint(end)))[0]])
        raise ev.fail(bad, "ts or dur is not a whole number of cycles in a file exported by "
                      "tracekit", "Re-export it with `tracekit export perfetto`, or pass "
                      "--cycles-per-us to scale it.")
    cols = ev.args(idx, ("id", "seq", "engine", "layer") + WORK_ARGS)
    for key, kind in (("id", int), ("seq", int), ("engine", str)):
        values = cols[key]
        if not set(map(type, values)) <= {kind}:
            k = next(k for k, v in enumerate(values) if type(v) is not kind)
            raise ev.fail(int(idx[k]), f"args.{key} is missing from a slice of tracekit's "
                          f"export", "Re-export the trace with `tracekit export perfetto`, or "
                          "delete otherData.tracekit to import it as a generic trace.")
    table = pl.DataFrame({
        "id": pl.Series(cols["id"], dtype=pl.Int64),
        "engine": pl.Series(clean_texts(cols["engine"]), dtype=pl.String),
        "seq": pl.Series(cols["seq"], dtype=pl.Int64),
        "opcode": pl.Series(clean_texts(ev.get(idx, "name")), dtype=pl.String),
        "start": np.rint(start).astype(np.int64),
        "end": np.rint(end).astype(np.int64),
        **{key: _arg_ints(cols[key], key) for key in WORK_ARGS},
        "layer": _arg_strings(cols["layer"]),
    })
    clock = tk.get("clock_hz")
    clock_hz = float(clock) * scale if isinstance(clock, int | float) and clock > 0 else None
    workload = tk.get("workload") if isinstance(tk.get("workload"), str) else None
    extra = {"format": "tracekit", "timeline": tk["timelines"][0].get("name"),
             "ts_per_cycle": 1.0 / scale}
    return table, clock_hz, workload, extra


def _generic_rows(ev: _Events, ph: np.ndarray, threads: dict[tuple[Any, Any], int],
                  slices: _Slices, rows: np.ndarray, depth: np.ndarray, nesting: Nesting,
                  cycles_per_us: float | None
                  ) -> tuple[pl.DataFrame, np.ndarray, float, dict[str, Any]]:
    """Instructions of a foreign trace, one row per slice of `rows`, in id order, and the id
    of each slice of `rows`: engines from thread names, times scaled to cycles."""
    scale = cycles_per_us if cycles_per_us is not None else DEFAULT_CYCLES_PER_US
    labels = _thread_labels(ev, ph, threads)
    idx = slices.event[rows]
    thread = slices.thread[rows]
    d = depth[rows] if nesting is Nesting.DEPTH else np.zeros(rows.size, dtype=np.int64)
    # Engines: one per (thread, depth) pair that occurs, numbered in natural order of name.
    pair_code = thread * (int(d.max(initial=0)) + 1) + d
    uniq, inverse = np.unique(pair_code, return_inverse=True)
    pairs = [(int(thread[k]), int(d[k])) for k in np.unique(pair_code, return_index=True)[1]]
    engine_of = {(t, k): labels[t] if k == 0 else f"{labels[t]}/d{k}" for t, k in pairs}
    names = sorted(set(engine_of.values()), key=natural_key)
    rank = {name: i for i, name in enumerate(names)}
    engine_code = np.array([rank[engine_of[p]] for p in pairs], dtype=np.int64)[
        inverse.reshape(-1)]
    origin = float(slices.ts[rows].min())
    start = np.rint((slices.ts[rows] - origin) * scale)
    end = np.rint((slices.end[rows] - origin) * scale)
    if end.max() >= MAX_CYCLES:
        raise ChromeTraceError(f"{ev.source}: the trace spans {end.max():.3g} cycles at "
                               f"{scale:g} cycles per µs, past what int64 cycles hold; pass a "
                               f"smaller --cycles-per-us.")
    start, end = start.astype(np.int64), end.astype(np.int64)
    # ids in (start, depth, engine, file order); seq in that order within each engine.
    order = np.lexsort((idx, engine_code, d, start))
    ids = np.empty(rows.size, dtype=np.int64)
    ids[order] = np.arange(rows.size)
    by_engine = np.lexsort((ids, engine_code))
    counts = np.bincount(engine_code, minlength=len(names))
    seq = np.empty(rows.size, dtype=np.int64)
    seq[by_engine] = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts,
                                                      counts[counts > 0])
    del by_engine
    idx = idx[order]  # the table in id order
    table = pl.DataFrame({
        "id": np.arange(rows.size, dtype=np.int64),
        "engine": categorical("engine", engine_code[order].astype(np.int32), names),
        "seq": seq[order],
        "opcode": _text_series(ev.table, ev.table.texts(idx, "name")),
        "start": start[order],
        "end": end[order],
        **{key: _arg_ints_at(ev.table, idx, key) for key in WORK_ARGS},
        "layer": _text_series(ev.table, ev.table.texts(idx, "cat")),
    })
    inverse = {v: k for k, v in threads.items()}
    engines = {engine_of[(t, k)]: {"pid": inverse[t][0], "tid": inverse[t][1], "depth": k}
               for t, k in pairs}
    extra = {"format": "chrome", "nesting": nesting.value, "cycles_per_us": scale,
             "origin_us": origin, "engines": dict(sorted(engines.items(),
                                                         key=lambda kv: natural_key(kv[0])))}
    return table, ids, scale * 1e6, extra


def _thread_labels(ev: _Events, ph: np.ndarray, threads: dict[tuple[Any, Any], int]
                   ) -> list[str]:
    """"PROCESS/THREAD" of each thread code from the M events (the raw pid or tid where a
    name is missing); labels that two threads share get their pid:tid appended."""
    process_names: dict[Any, str] = {}
    thread_names: dict[tuple[Any, Any], str] = {}
    for kind, pid, tid, name in ev.table.names:
        if kind == "process_name":
            process_names[pid] = name
        else:
            thread_names[(pid, tid)] = name
    labels = [""] * len(threads)
    for (pid, tid), code in threads.items():
        labels[code] = clean_text(f"{process_names.get(pid, str(pid))}/"
                                  f"{thread_names.get((pid, tid), str(tid))}")
    seen = Counter(labels)
    for (pid, tid), code in threads.items():
        if seen[labels[code]] > 1:
            labels[code] = f"{labels[code]} [{pid}:{tid}]"
    return labels


def convert_chrome(path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   cycles_per_us: float | None = None, nesting: Nesting | str = Nesting.DEPTH,
                   workload: str | None = None, overwrite: bool = False,
                   profile: Profile | str = Profile.AUTO, max_depth: int = DEFAULT_MAX_DEPTH,
                   max_bytes: int | None = None) -> tuple[Trace, tuple[str, ...]]:
    """Import the Chrome trace event file at `path` as a bundle at `output` (written
    atomically and validated) and return it with the notes on what was left out. The file is
    read as a stream within `max_depth` levels of nesting and `max_bytes` of JSON (see
    `read_events`)."""
    source = Path(path)
    events, other = read_events(source, max_depth=max_depth, max_bytes=max_bytes)
    return_freed_memory()
    result = chrome_tables(events, other, str(source), cycles_per_us=cycles_per_us,
                           nesting=nesting, profile=profile)
    del events  # the columns of the read, released before the bundle is written
    return_freed_memory()
    name = workload or result.workload or _stem(source)
    extra = {"chrome": {"source": source.name, **result.extra}}
    # The writer takes each table when it writes it, so that neither is held while the
    # bundle is validated.
    tables = {"instructions": result.instructions, "deps": result.deps}
    notes, clock_hz, has_deps = result.notes, result.clock_hz, bool(result.deps.height)
    del result
    trace = write_trace(output, lambda: tables.pop("instructions"),
                        deps=(lambda: tables.pop("deps")) if has_deps else None, workload=name,
                        producer=Producer("tracekit.convert.chrome", __version__),
                        clock_hz=clock_hz, created=None, extra=extra, overwrite=overwrite)
    return trace, notes


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim) between the phases
    of an import: the parse frees millions of small objects, and the passes after it arrays of
    a few MiB that glibc places in its heap; it keeps their pages for reuse, but the next
    arrays rarely fit the holes, which added about the file's size to the import's peak. A
    no-op where the C library has no malloc_trim."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json", ".trace", ".pt"):
        name = name.removesuffix(suffix)
    return name or path.name
