"""Every figure tracekit reports about a timeline, defined once: the commands (replay, analyze,
stalls, diff, nightly) and their JSON take them from here, and GLOSSARY says what each means.

Each engine's cycles, from the timeline's first start to its last end (the makespan), fall in
exactly one of busy, HBM contention, waiting and idle:

    dma.q0   busy 1,779,024   contention 56,666   waiting 401,200   idle 127,120
             (sum: the makespan, 2,364,010 cycles)

An instruction's span on its engine runs from the later of its start and the end of the
engine's previous work to its end (instructions that overlap on one engine on an observed
timeline are clipped, so no cycle counts twice). A DMA transfer's cycles lost to HBM sharing
(the contention a replay models; an observed timeline cannot tell them apart) are its HBM
contention; the rest of its span is busy. The gap before its span is waiting, charged to
what bound its start; the time before an engine's first instruction and after its last is idle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl

from tracekit.replay.graph import queue_order
from tracekit.replay.machine import Machine, engine_kind
from tracekit.trace.summary import natural_key

GLOSSARY: tuple[tuple[str, str, str], ...] = (
    ("makespan", "cycles",
     "From the timeline's first start to its last end, in the machine's cycles: on a "
     "replayed timeline the model's; on an observed one the trace's times converted at its "
     "own clock (a trace in cycles without a clock is taken to count the machine's)."),
    ("busy", "cycles",
     "Per engine, the cycles its instructions execute: each instruction's span (from the "
     "later of its start and the end of the engine's previous work, to its end; overlaps "
     "on one engine counted once) less its HBM contention."),
    ("busy % (utilization)", "% of the makespan", "busy / makespan * 100, per engine."),
    ("HBM contention", "cycles",
     "Per DMA queue, the cycles its transfers waited for HBM bandwidth shared with other "
     "queues: a replayed transfer's duration beyond its set-up and its bytes at the queue's "
     "bandwidth. 0 on an observed timeline, whose durations include it. Never busy."),
    ("waiting", "cycles",
     "Per engine, the gaps between its instructions, each charged to the instruction's "
     "binding predecessor: the producer engine and edge kind (semaphore, data, memory), or "
     "unexplained when only the engine's own order bound it. Without HBM contention."),
    ("stall", "cycles",
     "Per engine, waiting + HBM contention: the cycles it was held up within its work. The "
     "stall table's waiting bucket lists both (HBM contention as cause hbm); diff's stall "
     "columns and nightly's stall_cycles are this sum."),
    ("idle", "cycles",
     "Per engine, before its first instruction and after its last, within the makespan. "
     "busy + HBM contention + waiting + idle = makespan on every engine."),
    ("FLOP utilization", "% of peak",
     "Per engine with a FLOP rate in the machine (per_flop latency), FLOPs executed / "
     "(makespan * peak FLOPs per cycle) * 100; peak = 1 / per_flop."),
    ("achieved bandwidth", "bytes/cycle (HBM: also GB/s at the machine's clock)",
     "Per DMA queue, the bytes its transfers moved / makespan, and as % of the queue's "
     "bandwidth in the machine; for HBM, all DMA bytes / makespan, as % of the machine's HBM "
     "bandwidth."),
    ("utilization over time", "% of each bin",
     "Per engine, the busy cycles that fall in each bin of the timeline (an instruction's "
     "busy cycles are the first part of its span, its HBM contention the rest) / the bin's "
     "width * 100. The busy cycles of an engine's bins add up to its busy; `tracekit report` "
     "draws it, and the engine timeline's binned occupancy is the same count."),
    ("bandwidth over time", "bytes/cycle in each bin",
     "Per DMA queue, each transfer's bytes spread evenly over its span [start, end) (all in "
     "its start's bin when it takes no time), summed per bin / the bin's width; HBM's is the "
     "sum over the queues. Weighted by bin width, the bins average to the achieved bandwidth; "
     "`tracekit report` and `export perfetto`'s counters draw it."),
    ("device profile summary", "Neuron Explorer's (times in ns)",
     "On a device profile imported from Neuron Explorer, `analyze` recomputes its Summary "
     "metrics from the bundle's observed times (engine active time: the union of an engine's "
     "instructions, tracekit's busy on an observed timeline; HFU and MFU against the tensor "
     "engine's peak over the execution's span; DMA totals; HBM bytes from the profile's own "
     "counters) next to the value the profile recorded; tracekit/analysis/neuron_metrics.py "
     "defines each."),
)
"""(figure, unit, definition) for every figure on an engine; docs/glossary.md renders it."""

@dataclass(frozen=True)
class Accounts:
    """The timeline's cycles instruction by instruction (rows in the timeline's id order):
    busy, contention (HBM), wait (the gap before its span), and per engine (codes into
    `engines`, natural order) the first start and last end; `origin` and `horizon`: the
    timeline's first start and last end."""

    busy: np.ndarray
    contention: np.ndarray
    wait: np.ndarray
    engine: np.ndarray
    engines: list[str]
    first: np.ndarray
    last: np.ndarray
    origin: int
    horizon: int

    @property
    def makespan(self) -> int:
        return self.horizon - self.origin


def accounts(timeline: pl.DataFrame) -> Accounts:
    """Busy, HBM contention and wait of every instruction of `timeline` (id, engine, start,
    end, contention; sorted by id)."""
    engine, engines = codes(timeline["engine"], natural_key)
    start = _int64(timeline["start"])
    end = _int64(timeline["end"])
    lost = _int64(timeline["contention"].fill_null(0))
    # Rows go in (engine, start) order: row order itself when every engine's starts rise
    # along the rows (an in-order engine's replayed timeline), else sorted.
    busy, contention, wait, first, last, ordered = _account(
        np.zeros(0, dtype=np.int64), engine, start, end, lost, len(engines))
    if not ordered:
        busy, contention, wait, first, last, _ = _account(
            queue_order(engine, start), engine, start, end, lost, len(engines))
    return Accounts(busy=busy, contention=contention, wait=wait, engine=engine,
                    engines=engines, first=first, last=last,
                    origin=int(start.min()) if start.size else 0,
                    horizon=int(end.max()) if end.size else 0)


@numba.njit(cache=True, nogil=True)
def _account(order, engine, start, end, lost, n_eng):  # pragma: no cover - compiled
    """`accounts` over the rows in (engine, start) order: `order`, or row order when it is
    empty, which gives up (the last result False) at a row that starts before the previous
    row of its engine."""
    n = start.size
    busy = np.zeros(n, dtype=np.int64)
    contention = np.zeros(n, dtype=np.int64)
    wait = np.zeros(n, dtype=np.int64)
    first = np.zeros(n_eng, dtype=np.int64)
    last = np.zeros(n_eng, dtype=np.int64)
    previous = np.zeros(n_eng, dtype=np.int64)  # each engine's previous start
    seen = np.zeros(n_eng, dtype=np.bool_)  # times may be negative: no sentinel values
    by_order = order.size > 0
    for k in range(n):
        i = order[k] if by_order else k
        e = engine[i]
        if not by_order and seen[e] and start[i] < previous[e]:
            return busy, contention, wait, first, last, False
        previous[e] = start[i]
        if not seen[e]:  # first on its engine: the time before it is idle
            seen[e] = True
            begin = start[i]
            first[e] = start[i]
        else:
            begin = max(start[i], last[e])
            wait[i] = begin - last[e]
        span = max(end[i], begin) - begin
        contention[i] = min(max(lost[i], 0), span)
        busy[i] = span - contention[i]
        last[e] = begin + span
    return busy, contention, wait, first, last, True


def engine_figures(timeline: pl.DataFrame, work: pl.DataFrame, machine: Machine,
                   acc: Accounts | None = None
                   ) -> tuple[pl.DataFrame, dict[str, float | int]]:
    """Per engine (natural order): instructions, busy_cycles, busy_pct, contention_cycles,
    waiting_cycles, idle_cycles, flops, flop_util_pct (null without a FLOP rate), bytes (DMA
    queues), bandwidth (bytes/cycle), bandwidth_pct (of the queue's); and HBM's: bytes,
    bandwidth, bandwidth_pct. `timeline` as for `accounts` (`acc`, if the caller has them);
    `work`: flops and bytes of the same instructions, in the same order."""
    acc = accounts(timeline) if acc is None else acc
    n_eng, span = len(acc.engines), max(acc.makespan, 1)
    flops = work["flops"].fill_null(0).to_numpy().astype(np.float64)
    moved = work["bytes"].fill_null(0).to_numpy().astype(np.float64)
    is_dma = np.array([engine_kind(e) == "dma" for e in acc.engines], dtype=bool)

    def per_engine(values: np.ndarray) -> np.ndarray:
        return np.bincount(acc.engine, weights=values, minlength=n_eng)

    count = np.bincount(acc.engine, minlength=n_eng)
    busy, contention, waiting = (per_engine(a.astype(np.float64)).astype(np.int64)
                                 for a in (acc.busy, acc.contention, acc.wait))
    present = count > 0
    idle = np.where(present, (acc.first - acc.origin) + (acc.horizon - acc.last), span)
    engine_flops = per_engine(flops)
    engine_bytes = np.where(is_dma, per_engine(moved), 0.0)
    # Each engine's distinct opcodes: the (engine, opcode) code pairs present, counted once
    # (names cast per row would be 10M strings at 10M instructions).
    opcode, opcodes = codes(timeline["opcode"])
    pairs = np.flatnonzero(np.bincount(acc.engine.astype(np.int64) * max(len(opcodes), 1)
                                       + opcode, minlength=n_eng * len(opcodes)))
    ran: dict[str, list[str]] = {}
    for pair in pairs.tolist():  # in code order: each engine's opcodes sorted by name
        ran.setdefault(acc.engines[pair // len(opcodes)], []).append(
            opcodes[pair % len(opcodes)])
    peak = [_peak_flops(machine, name, ran.get(name, [])) for name in acc.engines]
    caps = [machine.queue_bandwidth(name) if dma else None
            for name, dma in zip(acc.engines, is_dma, strict=True)]
    frame = pl.DataFrame({
        "engine": acc.engines,
        "instructions": count.astype(np.int64),
        "busy_cycles": busy,
        "busy_pct": busy / span * 100,
        "contention_cycles": contention,
        "waiting_cycles": waiting,
        "idle_cycles": idle.astype(np.int64),
        "flops": engine_flops.astype(np.int64),
        "flop_util_pct": [None if p is None else f / (span * p) * 100
                          for f, p in zip(engine_flops, peak, strict=True)],
        "bytes": engine_bytes.astype(np.int64),
        "bandwidth": [float(b) / span if c else None
                      for b, c in zip(engine_bytes, caps, strict=True)],
        "bandwidth_pct": [float(b) / span / c * 100 if c else None
                          for b, c in zip(engine_bytes, caps, strict=True)],
    }, schema_overrides={"flop_util_pct": pl.Float64, "bandwidth": pl.Float64,
                         "bandwidth_pct": pl.Float64})
    total = float(engine_bytes.sum())
    hbm = {"bytes": int(total), "bandwidth": total / span,
           "bandwidth_pct": total / span / machine.hbm_bytes_per_cycle * 100}
    return frame, hbm


def opcode_figures(timeline: pl.DataFrame, acc: Accounts) -> pl.DataFrame:
    """Per opcode: instructions, busy_cycles (as on the engines), share_pct (of all busy
    cycles); largest first, ties by name."""
    total = max(int(acc.busy.sum()), 1)
    opcode, opcodes = codes(timeline["opcode"])
    return (pl.DataFrame({"opcode": pl.Series(opcodes, dtype=pl.String),
                          "instructions": np.bincount(opcode, minlength=len(opcodes))
                          .astype(np.int64),
                          "busy_cycles": group_sums(opcode, acc.busy, len(opcodes))})
            .with_columns((pl.col("busy_cycles") / total * 100).alias("share_pct"))
            .sort(["busy_cycles", "opcode"], descending=[True, False]))


def codes(series: pl.Series, key: Callable[[str], Any] | None = None
          ) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k-1 (int32; -1 for null) of a name column and its k distinct names, sorted
    by `key` (by name when None): `replay.run.name_codes`'s codes of the names, worked out on
    the categorical's physical codes in one pass."""
    if series.dtype != pl.Categorical:
        series = series.cast(pl.String).cast(pl.Categorical)
    physical = series.to_physical()
    if physical.len() == physical.null_count():
        return np.full(physical.len(), -1, dtype=np.int32), []
    size = int(physical.max()) + 1  # type: ignore[arg-type]
    values = physical.fill_null(size).to_numpy() if physical.has_nulls() else \
        physical.to_numpy()
    first = _first_rows(values, size + 1)[:size]  # (code `size`: the nulls)
    present = np.flatnonzero(first >= 0)
    names = series.gather(first[present]).cast(pl.String).to_list()
    order = sorted(range(len(names)), key=lambda i: key(names[i]) if key else names[i])
    lut = np.full(size + 1, -1, dtype=np.int32)
    lut[present[order]] = np.arange(len(order), dtype=np.int32)
    return lut[values], [names[i] for i in order]


@numba.njit(cache=True, nogil=True)
def _first_rows(physical, size):  # pragma: no cover - compiled
    """The first row of each physical code (-1 for codes no row has)."""
    first = np.full(size, -1, dtype=np.int64)
    for row in range(physical.size):
        if first[physical[row]] < 0:
            first[physical[row]] = row
    return first


def group_sums(code: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Integer sums of `values` per code 0..k-1 (exact, unlike a float bincount)."""
    return _group_sums(np.asarray(code), np.asarray(values, dtype=np.int64), k)


@numba.njit(cache=True, nogil=True)
def _group_sums(code, values, k):  # pragma: no cover - compiled
    out = np.zeros(k, dtype=np.int64)
    for i in range(code.size):
        out[code[i]] += values[i]
    return out


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The rows of the ids `wanted` in the sorted `ids` (an offset when ids are dense, the
    usual case; a binary search else). Every wanted id must be one of `ids`."""
    if ids.size and int(ids[-1]) - int(ids[0]) + 1 == ids.size:
        return wanted - ids[0]
    return np.searchsorted(ids, wanted)


def _int64(series: pl.Series) -> np.ndarray:
    """An integer column without nulls as int64 (without a copy when it is one already)."""
    values = series.to_numpy()
    return values if values.dtype == np.int64 else values.astype(np.int64)


def nice_width(span: int, bins: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten cycles that covers `span` in `bins` bins."""
    raw = max(span, 1) / bins
    if raw <= 1:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * power >= raw:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def busy_over_time(timeline: pl.DataFrame, acc: Accounts, lo: int, hi: int,
                   width: int) -> np.ndarray:
    """Busy cycles per engine (rows: `acc.engines`) in each bin [lo + k*width, ...) up to
    `hi` (columns), as int64: an instruction's busy cycles are the first part of its span on
    its engine (which ends at its end), its HBM contention the rest. Over the whole timeline
    (lo, hi = acc.origin, acc.horizon) each row sums to the engine's busy cycles.
    `timeline`: the frame `acc` was made from (its `end` column is read)."""
    width = max(int(width), 1)
    bins = max(-(-(hi - lo) // width), 1)
    end = timeline["end"].to_numpy().astype(np.int64)
    begin = end - acc.busy - acc.contention  # the span starts there (0 cycles: no matter)
    return _occupancy(acc.engine.astype(np.int64), begin, begin + acc.busy, int(lo), int(hi),
                      width, bins, len(acc.engines))


@numba.njit(cache=True, nogil=True)
def _occupancy(engine, begin, stop, lo, hi, width, bins, n_eng):  # pragma: no cover - compiled
    out = np.zeros((n_eng, bins), dtype=np.int64)
    for i in range(engine.size):
        s = max(begin[i], lo)
        e = min(stop[i], hi)
        k = (s - lo) // width
        while s < e:
            edge = min(lo + (k + 1) * width, e)
            out[engine[i], k] += edge - s
            s = edge
            k += 1
    return out


def bandwidth_over_time(start: np.ndarray, end: np.ndarray, nbytes: np.ndarray, lo: int,
                        hi: int, width: int) -> np.ndarray:
    """Bytes per cycle of a set of transfers in each bin [lo + k*width, ...) up to hi, each
    transfer's bytes spread evenly over [start, end) (all in its start's bin when end ==
    start). Every term is local to a bin, so idle bins are exactly 0."""
    nb = max(-(-(hi - lo) // width), 1)
    edges = np.minimum(lo + width * np.arange(nb + 1, dtype=np.int64), hi)
    inside = (end > lo) & (start < hi) | (start == end) & (start >= lo) & (start < hi)
    s, e, b = start[inside], end[inside], nbytes[inside].astype(np.float64)
    cs, ce = np.clip(s, lo, hi), np.clip(e, lo, hi)
    first = np.minimum((cs - lo) // width, nb - 1)
    last = np.minimum(np.maximum(ce - 1 - lo, 0) // width, nb - 1)
    total = np.zeros(nb + 1)
    point = e == s
    np.add.at(total, first[point], b[point])
    dur = (e - s).astype(np.float64)
    rate = np.where(point, 0.0, b / np.where(point, 1.0, dur))
    one = ~point & (first == last)
    np.add.at(total, first[one], rate[one] * (ce[one] - cs[one]))
    many = ~point & (first < last)
    f, la, r = first[many], last[many], rate[many]
    np.add.at(total, f, r * (edges[f + 1] - cs[many]))
    np.add.at(total, la, r * (ce[many] - edges[la]))
    # Bins strictly between the first and last are covered whole: a difference array of rates.
    full = np.zeros(nb + 1)
    np.add.at(full, f + 1, r)
    np.add.at(full, la, -r)
    total[:nb] += np.cumsum(full)[:nb] * np.diff(edges)
    return total[:nb] / np.maximum(np.diff(edges), 1)


def _peak_flops(machine: Machine, engine: str, opcodes: list[str]) -> float | None:
    """The engine's peak FLOPs per cycle: 1 / per_flop at its fastest opcode among those it
    ran (None when none has a FLOP rate)."""
    rates = [1.0 / lat.per_flop for lat in (machine.latency(engine, op) for op in opcodes)
             if lat.per_flop > 0]
    return max(rates) if rates else None


def glossary_markdown() -> str:
    """docs/glossary.md: GLOSSARY as a Markdown table."""
    lines = ["# Glossary", "",
             "Every figure tracekit reports about an engine, as `replay`, `analyze`, `stalls`, "
             "`diff`, `nightly` and their JSON compute it (`tracekit.analysis.figures`).", "",
             "| figure | unit | definition |", "|---|---|---|"]
    lines += [f"| {name} | {unit} | {text} |" for name, unit, text in GLOSSARY]
    return "\n".join(lines) + "\n"
