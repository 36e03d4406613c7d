"""Packing of overlapping slices into lanes, shared by the Chrome importer (nesting depths)
and the Perfetto exporter (extra lanes of one engine).

Slices (0-10), (2-5), (6-12) of one group get lanes 0, 1, 1: the second starts while lane 0
is busy; the third starts after lane 1's slice ended.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def lowest_free_lane(group, start, end):  # pragma: no cover - compiled
    """Lowest free lane of each slice, rows sorted by (group, start, ...): a lane is free once
    its last slice has ended (at or before this start), so slices on one lane never
    overlap."""
    n = start.size
    lane = np.zeros(n, dtype=np.int64)
    busy = np.empty(n + 1, dtype=np.float64)
    used = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            used = 0
        k = 0
        while k < used and busy[k] > start[i]:
            k += 1
        if k == used:
            used += 1
        busy[k] = end[i]
        lane[i] = k
    return lane
