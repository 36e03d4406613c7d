"""The engine timeline of a report page: one lane per engine and DMA queue, each instruction a
bar, the critical path marked; past `max_bars` instructions, binned occupancy per lane.

For a window [0, 1,000) holding 3 instructions of 2 lanes and max_bars 200,000, the page gets
the 3 bars (start, end, lane, opcode, layer, id); with max_bars 2, it gets each lane's busy
cycles per bin instead (`figures.busy_over_time`), which add up to the lane's busy cycles in
the window: on the whole timeline, the busy of `tracekit analyze`'s engines table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.analysis.figures import Accounts, busy_over_time, nice_width
from tracekit.convert.perfetto import engine_order
from tracekit.errors import TracekitError
from tracekit.options import MAX_BARS
from tracekit.trace.names import map_names, shortened

TIMELINE_BINS = 2_000
"""Target number of bins of the binned timeline over its window."""


class WindowError(TracekitError):
    """A --from/--to window that is empty or holds no instruction."""


@dataclass(frozen=True)
class Lanes:
    """An engine timeline ready to draw, in the timeline's cycles.

    `names`: the lanes (compute engines, then DMA queues, in natural order); `lo`, `hi`: the
    window [lo, hi); `instructions`: how many overlap it. `bars` (detail: None when binned):
    id, start, end (cycles), lane (index into `names`), opcode and layer (indexes into
    `opcodes`, `layers`; layer -1 when null), sorted by lane, start, id. `busy` (binned: None
    in detail): busy cycles per lane (rows) and bin (columns) of `width` cycles from `lo`, the
    last bin cut at `hi`. `path`: the critical path's steps in the window merged per lane
    where they touch (in a binned timeline, where they are less than a bin apart): start, end,
    lane.
    """

    names: list[str]
    lo: int
    hi: int
    instructions: int
    opcodes: list[str]
    layers: list[str]
    bars: pl.DataFrame | None
    width: int | None
    busy: np.ndarray | None
    path: pl.DataFrame

    @property
    def binned(self) -> bool:
        return self.bars is None


def window_of(frame: pl.DataFrame, start: int | None, end: int | None) -> tuple[int, int]:
    """[lo, hi): the timeline's span, narrowed by --from (`start`) and --to (`end`);
    WindowError when it is empty or holds no instruction."""
    check_window(start, end)
    origin, horizon = int(frame["start"].min()), int(frame["end"].max())  # type: ignore[arg-type]
    lo = origin if start is None else start
    hi = horizon if end is None else end
    if hi <= lo or frame.filter(overlapping(lo, hi)).height == 0:
        raise WindowError(f"no instruction overlaps the window [{lo:,}, {hi:,}); the timeline "
                          f"runs from {origin:,} to {horizon:,} cycles. Choose --from and --to "
                          f"inside it.")
    return lo, hi


def check_window(start: int | None, end: int | None) -> None:
    """WindowError when --from is not less than --to."""
    if start is not None and end is not None and end <= start:
        raise WindowError(f"the window [{start:,}, {end:,}) is empty: --from must be less "
                          f"than --to.")


def overlapping(lo: int, hi: int) -> pl.Expr:
    """Instructions overlapping [lo, hi) (a zero-length one: inside it), as `export perfetto
    --from --to` keeps them."""
    return (pl.col("start") < hi) & ((pl.col("end") > lo) | (pl.col("start") >= lo))


def engine_lanes(frame: pl.DataFrame, acc: Accounts, steps: pl.DataFrame, lo: int, hi: int,
                 max_bars: int = MAX_BARS, bins: int = TIMELINE_BINS) -> Lanes:
    """The lanes of `frame` (a timeline: id, engine, opcode, layer, start, end, in id order;
    `acc` its accounts) in [lo, hi), with the critical path's `steps` (start, end, engine)."""
    names = engine_order(list(acc.engines))
    rank = {name: i for i, name in enumerate(names)}
    lane_of = np.array([rank[e] for e in acc.engines], dtype=np.int64)
    keep = frame.select(overlapping(lo, hi).alias("keep"))["keep"].to_numpy()
    count = int(keep.sum())
    part = frame.filter(pl.Series(keep))
    # Names are looked at once each (the rows carry codes) and drawn shortened.
    opcodes = sorted(part["opcode"].unique().drop_nulls().cast(pl.String).to_list())
    layers = sorted(part["layer"].unique().drop_nulls().cast(pl.String).to_list())
    on_path = steps.filter(overlapping(lo, hi))
    path = on_path.select("start", "end").with_columns(
        map_names(on_path["engine"], rank.__getitem__, pl.Int64).alias("lane"))
    shown = [shortened(n) for n in names]
    if count <= max_bars:
        opcode_at = {o: i for i, o in enumerate(opcodes)}
        layer_at = {y: i for i, y in enumerate(layers)}
        bars = part.select("id", "start", "end").with_columns(
            pl.Series("lane", lane_of[acc.engine[keep]]),
            map_names(part["opcode"], opcode_at.__getitem__, pl.Int64).alias("opcode"),
            map_names(part["layer"], layer_at.__getitem__, pl.Int64).fill_null(-1)
            .alias("layer")).sort("lane", "start", "id")
        return Lanes(shown, lo, hi, count, [shortened(o) for o in opcodes],
                     [shortened(y) for y in layers], bars, None, None, _merged(path, 0))
    width = nice_width(hi - lo, bins)
    by_engine = busy_over_time(frame, acc, lo, hi, width)
    busy = np.zeros_like(by_engine)
    busy[lane_of] = by_engine
    return Lanes(shown, lo, hi, count, [shortened(o) for o in opcodes],
                 [shortened(y) for y in layers], None, width, busy, _merged(path, width))


def _merged(path: pl.DataFrame, gap: int) -> pl.DataFrame:
    """Steps of one lane that follow each other within `gap` cycles as one segment."""
    if path.height == 0:
        return path.select(pl.col("start").cast(pl.Int64), pl.col("end").cast(pl.Int64),
                           pl.col("lane").cast(pl.Int64))
    ordered = path.sort("lane", "start", "end")
    reach = pl.col("end").cum_max().shift(1).over("lane")
    new = (reach.is_null() | (pl.col("start") > reach + gap)).cum_sum().alias("segment")
    return (ordered.with_columns(new)
            .group_by("segment", maintain_order=True)
            .agg(pl.col("start").min(), pl.col("end").max(), pl.col("lane").first())
            .select(pl.col("start").cast(pl.Int64), pl.col("end").cast(pl.Int64),
                    pl.col("lane").cast(pl.Int64)))
