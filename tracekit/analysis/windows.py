"""Analysis windows: one annotation instance of an imported profile, or a time range, as the
part of a trace an analysis looks at (the way HTA restricts its critical path to a step).

A window [from, to] keeps the instructions that start inside it and the work they hand to
another engine that starts after it (a kernel launched in the step but run after it ends; of
a PyTorch profiler import, only GPU streams' work is handed off):
for a step [100, 200] with a launch at 150 and its kernel at 210, both are kept; a kernel at
90 launched before the step is not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from tracekit.errors import TracekitError
from tracekit.trace.bundle import Trace


class WindowError(TracekitError):
    """A window that names no annotation of the trace, or an empty or inverted range."""


@dataclass(frozen=True)
class Window:
    """A named or given range of the trace's stored times (start and end inclusive)."""

    label: str
    start: int | None
    end: int | None


def annotations(trace: Trace) -> list[dict[str, Any]]:
    """The annotation windows an import recorded (name, cat, start, end), in time order."""
    chrome = trace.manifest.extra.get("chrome")
    found = chrome.get("windows") if isinstance(chrome, dict) else None
    if not isinstance(found, list):
        return []
    return [w for w in found if isinstance(w, dict) and isinstance(w.get("name"), str)
            and type(w.get("start")) is int and type(w.get("end")) is int]


def _device_engines(trace: Trace) -> list[str]:
    """The engines an import marked as devices (a PyTorch profiler trace's GPU streams)."""
    chrome = trace.manifest.extra.get("chrome")
    engines = chrome.get("engines") if isinstance(chrome, dict) else None
    if not isinstance(engines, dict):
        return []
    return sorted(name for name, info in engines.items()
                  if isinstance(info, dict) and "stream" in info)


def resolve_window(trace: Trace, name: str | None = None, instance: int = 0,
                   start: int | None = None, end: int | None = None) -> Window | None:
    """The window `--window NAME [--instance K]` or `--from/--to` ask for (None: none). NAME
    matches an annotation exactly, else as a part of its name (ProfilerStep matches
    ProfilerStep#3); instance K is the K-th match in time order, from 0."""
    if name is None:
        if start is None and end is None:
            return None
        if start is not None and end is not None and start > end:
            raise WindowError(f"the window [{start:,}, {end:,}] is inverted: --from must be "
                              f"at most --to.")
        return Window(f"[{'' if start is None else f'{start:,}'}, "
                      f"{'' if end is None else f'{end:,}'}]", start, end)
    if start is not None or end is not None:
        raise WindowError("--window and --from/--to both choose the window; pass one of them.")
    found = annotations(trace)
    if not found:
        raise WindowError(f"{trace.path}: records no annotations to choose a window from "
                          f"(only PyTorch profiler imports do); give the range with "
                          f"--from/--to instead.")
    matches = [w for w in found if w["name"] == name] or [w for w in found if name in w["name"]]
    if not matches:
        shown = sorted({w["name"] for w in found})
        listing = ", ".join(shown[:8]) + (f" and {len(shown) - 8:,} more" if len(shown) > 8
                                          else "")
        raise WindowError(f"{trace.path}: no annotation named {name!r}; it has {listing}.")
    if not 0 <= instance < len(matches):
        raise WindowError(f"{trace.path}: {name!r} has {len(matches):,} instance(s) "
                          f"(0 to {len(matches) - 1:,}); --instance {instance} is not one.")
    chosen = matches[instance]
    return Window(f"{chosen['name']} (instance {instance})", chosen["start"], chosen["end"])


def window_trace(trace: Trace, window: Window) -> Trace:
    """`trace` seen through `window`: its instructions in the window (see the module
    docstring) and the rows of the other tables that refer only to them."""
    inst = trace.read("instructions", ["id", "engine", "start"])
    inside = pl.lit(True)
    if window.start is not None:
        inside = inside & (pl.col("start") >= window.start)
    if window.end is not None:
        inside = inside & (pl.col("start") <= window.end)
    base = inst.filter(inside & pl.col("start").is_not_null())
    keep = base["id"]
    if window.end is not None and trace.has_table("deps"):
        deps = trace.read("deps", ["src", "dst", "kind"]).filter(
            pl.col("kind").cast(pl.String) != "order")
        handed = (deps.join(base.select(pl.col("id").alias("src"),
                                        pl.col("engine").alias("src_engine")), on="src")
                  .join(inst.select(pl.col("id").alias("dst"), pl.col("engine"),
                                    pl.col("start")), on="dst")
                  .filter((pl.col("start") > window.end)
                          & (pl.col("engine") != pl.col("src_engine"))))
        devices = _device_engines(trace)
        if devices:  # a profile that says which engines run handed-off work (GPU streams)
            handed = handed.filter(pl.col("engine").cast(pl.String).is_in(devices))
        keep = pl.concat([keep, handed["dst"]]).unique().sort()
    if keep.len() == 0:
        raise WindowError(f"{trace.path}: no instruction starts in the window {window.label}; "
                          f"choose another (`tracekit info {trace.path}` gives the time span).")
    ids = keep.implode()
    frames = dict(trace.frames)
    frames["instructions"] = trace.table("instructions").filter(pl.col("id").is_in(ids))
    if trace.has_table("deps"):
        frames["deps"] = trace.table("deps").filter(pl.col("src").is_in(ids)
                                                    & pl.col("dst").is_in(ids))
    for name in ("semaphores", "memory"):
        if trace.has_table(name):
            frames[name] = trace.table(name).filter(pl.col("inst").is_in(ids))
    return replace(trace, frames=frames)
