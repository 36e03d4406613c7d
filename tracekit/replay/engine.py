"""The discrete-event replay over a dependency graph, compiled with numba.

Each engine is an in-order queue. An instruction starts at the latest end (plus edge latency) of
its predecessors; its engine is free by then, since the previous instruction on the engine is
one of them (an order edge). The instruction that decided the start is its binding predecessor.
A compute instruction then runs for its duration. A DMA transfer first runs its set-up, then
moves its bytes under the contention model:

    HBM contention (max-min fair sharing): every transfer moving bytes gets at most its queue's
    bandwidth; the HBM bandwidth is split equally among the transfers, and a share a capped
    transfer cannot use is split among the others (water-filling). Rates are recomputed
    whenever a transfer joins or leaves, so the summed rate never exceeds the HBM bandwidth.

Worked example: three queues of 64 B/cycle on 96 B/cycle of HBM each move 3200 bytes at
once: each gets 32 B/cycle and all three finish at 100 cycles (3 * 3200 / 96), not at 50.

Events are taken in time order, at equal times the lower engine code first, which makes the
replay, and which of several equal predecessors binds, deterministic.
When no event remains but instructions are unfinished, the replay stops and reports them.
"""

from __future__ import annotations

import numba
import numpy as np

INF = np.inf
IDLE, RUNNING, MOVING = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def _rates(phase, caps, hbm_bw, rate, settled):  # pragma: no cover - compiled
    """Water-filling of the HBM bandwidth over the engines whose transfer is moving bytes
    (`settled` is scratch space, one flag per engine)."""
    n_eng = phase.size
    left = hbm_bw
    unassigned = 0
    for e in range(n_eng):
        rate[e] = 0.0
        settled[e] = False
        if phase[e] == MOVING:
            unassigned += 1
    while unassigned > 0:
        fair = left / unassigned
        capped = False
        for e in range(n_eng):
            if phase[e] == MOVING and not settled[e] and caps[e] <= fair:
                rate[e] = caps[e]
                left -= caps[e]
                settled[e] = True
                unassigned -= 1
                capped = True
        if not capped:
            for e in range(n_eng):
                if phase[e] == MOVING and not settled[e]:
                    rate[e] = fair
                    settled[e] = True
            unassigned = 0


@numba.njit(cache=True, nogil=True)
def replay_kernel(n_eng, eng_ptr, eng_nodes, node_engine, pred_ptr, never, succ_ptr, succ_dst,
                  succ_kind, kind_latency, setup, nbytes, caps, hbm_bw):  # pragma: no cover
    """Replay; returns start, end, binding predecessor and its edge kind, contention cycles
    and the number of instructions completed (less than n when the replay is stuck).
    `never[i]` counts waits of instruction i that nothing satisfies: it never starts.

    An instruction whose last predecessor has finished is the head of its engine's queue and
    the engine is idle, so it is started at once, at its ready time (possibly later than now):
    the only events are ends of set-ups and computations, and ends of transfers.
    """
    n = node_engine.size
    start = np.full(n, -1.0)
    end = np.full(n, -1.0)
    ready = np.zeros(n)
    bind = np.full(n, -1, dtype=np.int64)
    bind_kind = np.full(n, -1, dtype=np.int8)
    contention = np.zeros(n)
    pending = np.empty(n, dtype=np.int64)
    for i in range(n):
        pending[i] = pred_ptr[i + 1] - pred_ptr[i] + never[i]
    phase = np.zeros(n_eng, dtype=np.int8)
    current = np.full(n_eng, -1, dtype=np.int64)
    until = np.zeros(n_eng)
    remaining = np.zeros(n_eng)
    moving_since = np.zeros(n_eng)
    rate = np.zeros(n_eng)
    settled = np.zeros(n_eng, dtype=np.bool_)
    for e in range(n_eng):
        if eng_ptr[e] < eng_ptr[e + 1]:
            node = eng_nodes[eng_ptr[e]]
            if pending[node] == 0:
                start[node] = 0.0
                current[e] = node
                phase[e] = RUNNING
                until[e] = setup[node]
    t = 0.0
    completed = 0
    while completed < n:
        best = INF
        best_e = -1
        for e in range(n_eng):
            if phase[e] == RUNNING:
                when = until[e]
            elif phase[e] == MOVING:
                when = t + remaining[e] / rate[e] if rate[e] > 0 else INF
            else:
                continue
            if when < best:
                best, best_e = when, e
        if best_e < 0:
            break  # stuck: unfinished instructions wait on something that never ends
        if best > t:
            for e in range(n_eng):
                if phase[e] == MOVING:
                    remaining[e] -= rate[e] * (best - t)
            t = best
        e = best_e
        node = current[e]
        if phase[e] == RUNNING and nbytes[node] > 0:
            phase[e] = MOVING
            remaining[e] = nbytes[node]
            moving_since[e] = t
            _rates(phase, caps, hbm_bw, rate, settled)
            continue
        if phase[e] == MOVING:
            contention[node] = (t - moving_since[e]) - nbytes[node] / caps[e]
            phase[e] = IDLE
            remaining[e] = 0.0
            _rates(phase, caps, hbm_bw, rate, settled)
        phase[e] = IDLE
        current[e] = -1
        end[node] = t
        completed += 1
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            when = t + kind_latency[succ_kind[k]]
            if bind[s] < 0 or when > ready[s]:
                ready[s] = when
                bind[s] = node
                bind_kind[s] = succ_kind[k]
            pending[s] -= 1
            if pending[s] == 0:
                es = node_engine[s]
                start[s] = ready[s]
                current[es] = s
                phase[es] = RUNNING
                until[es] = ready[s] + setup[s]
    return start, end, bind, bind_kind, contention, completed
