"""The discrete-event replay over a dependency graph, compiled with numba.

Each engine is an in-order queue. An instruction is ready at the latest end (plus edge latency)
of its predecessors; its engine is free by then, since the previous instruction on the engine
is one of them (an order edge). It starts then, unless it waits on semaphores: those are
counters evaluated during the replay (`tracekit.replay.semaphores` has the semantics), and an
instruction with waits starts at the first moment from its ready time on at which every one of
its waits holds. The instruction that decided the start (a predecessor, or the semaphore change
that made the waits hold) is its binding constraint. A compute instruction then runs for its duration. A DMA transfer first runs its set-up, then
moves its bytes under the contention model:

    HBM contention (max-min fair sharing): every transfer moving bytes gets at most its queue's
    bandwidth; the HBM bandwidth is split equally among the transfers, and a share a capped
    transfer cannot use is split among the others (water-filling). Rates are recomputed
    whenever a transfer joins or leaves, so the summed rate never exceeds the HBM bandwidth.

Worked example: three queues of 64 B/cycle on 96 B/cycle of HBM each move 3200 bytes at
once: each gets 32 B/cycle and all three finish at 100 cycles (3 * 3200 / 96), not at 50.

Events are taken in time order, at equal times semaphore changes first, then the lower engine
code first, which makes the replay, and which of several equal predecessors binds,
deterministic. When no event remains but instructions are unfinished, the replay is stuck: the
engines whose head instruction is blocked on a wait, and what they wait for, are its report.
"""

from __future__ import annotations

import numba
import numpy as np

from tracekit.replay.semaphores import WAIT, apply, holds

INF = np.inf
IDLE, RUNNING, MOVING, PARKED, BLOCKED = 0, 1, 2, 3, 4
"""Engine phases: nothing to do; running a set-up or computation; moving a transfer's bytes;
holding an instruction with waits until its ready time; holding one whose waits do not hold."""
SEMAPHORE_KIND = 1
"""The edge kind code of semaphore edges (graph.SEMAPHORE)."""


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
def replay_kernel(n_eng, eng_ptr, eng_nodes, node_engine, pred_ptr, succ_ptr, succ_dst,
                  succ_kind, kind_latency, setup, nbytes, caps, hbm_bw, sem_ptr, sem_rows,
                  sem_node, sem_code, sem_op, sem_value, sem_cond, log_ptr, sem_latency,
                  monotone):  # pragma: no cover - compiled
    """Replay; returns start, end, binding predecessor and its edge kind, contention cycles,
    the number of instructions completed (less than n when the replay is stuck), the order in
    which they completed, and what `semaphores.Released` holds (the changes' arrival log, the
    count after each, the number arrived per semaphore, and per wait row the changes arrived
    when it started), the final counts, and which engines ended blocked on a wait.

    An instruction whose predecessors have all finished is the head of its engine's queue and
    the engine is idle. Without waits it starts at once, at its ready time (possibly later
    than now). With waits, its conditions are looked at for its ready time: at once when the
    counts cannot change before then (`monotone`: counts only grow and waits are >=, so what
    holds now holds then; or no change can arrive before then), else at that time (the
    engine is parked until then). It starts at its ready time if they hold, else it blocks
    until a change arrives after which they all hold, and starts then, bound by that change's
    instruction (a semaphore edge). Changes arrive at their instruction's end plus
    `sem_latency`, in end order; they are events only while a blocked engine waits on their
    semaphore. At one time, arrivals come first,
    then engines by code. Changes no blocked engine waits on need no event: they are
    applied, in order, as the events around them come.
    """
    n = node_engine.size
    m = sem_code.size
    start = np.full(n, -1.0)
    end = np.full(n, -1.0)
    ready = np.zeros(n)
    bind = np.full(n, -1, dtype=np.int64)
    bind_kind = np.full(n, -1, dtype=np.int8)
    contention = np.zeros(n)
    done_order = np.empty(n, dtype=np.int64)
    pending = np.empty(n, dtype=np.int64)
    for i in range(n):
        pending[i] = pred_ptr[i + 1] - pred_ptr[i]
    waits = np.zeros(n, dtype=np.bool_)
    for r in range(m):
        if sem_op[r] == WAIT:
            waits[sem_node[r]] = True
    n_sem = log_ptr.size - 1
    count = np.zeros(n_sem, dtype=np.int64)
    arrived = np.zeros(n_sem, dtype=np.int64)
    last_seq = np.full(n_sem, -1, dtype=np.int64)
    log = np.full(log_ptr[n_sem], -1, dtype=np.int64)
    log_count = np.zeros(log_ptr[n_sem], dtype=np.int64)
    upto = np.full(m, -1, dtype=np.int64)
    fifo_row = np.empty(log_ptr[n_sem], dtype=np.int64)
    fifo_time = np.empty(log_ptr[n_sem])
    fifo = np.zeros(2, dtype=np.int64)  # head, tail
    watch = np.zeros(n_sem, dtype=np.int64)  # blocked engines waiting on each semaphore
    phase = np.zeros(n_eng, dtype=np.int8)
    current = np.full(n_eng, -1, dtype=np.int64)
    until = np.zeros(n_eng)
    remaining = np.zeros(n_eng)
    moving_since = np.zeros(n_eng)
    rate = np.zeros(n_eng)
    settled = np.zeros(n_eng, dtype=np.bool_)
    t = 0.0
    for e in range(n_eng):
        if eng_ptr[e] < eng_ptr[e + 1]:
            node = eng_nodes[eng_ptr[e]]
            if pending[node] == 0:
                _head(node, e, t, 0.0, waits, monotone, sem_latency, fifo,
                                   fifo_time, sem_ptr, sem_rows, sem_code, sem_op, sem_value,
                                   sem_cond, count, arrived, upto, start, phase, current,
                                   until, setup, watch)
    completed = 0
    while completed < n:
        best = INF
        best_e = -1
        for e in range(n_eng):
            if phase[e] == RUNNING or phase[e] == PARKED:
                when = until[e]
            elif phase[e] == MOVING:
                when = t + remaining[e] / rate[e] if rate[e] > 0 else INF
            else:
                continue
            if when < best:
                best, best_e = when, e
        # Changes no blocked engine waits on are applied as they come, with no event of
        # their own: nothing looks at their counts before the next event.
        while fifo[0] < fifo[1] and fifo_time[fifo[0]] <= best and \
                watch[sem_code[fifo_row[fifo[0]]]] == 0:
            _drain_one(fifo, fifo_row, sem_code, sem_op, sem_value, count, log_ptr, log,
                       log_count, arrived, last_seq)
        arrival = fifo_time[fifo[0]] if fifo[0] < fifo[1] and \
            watch[sem_code[fifo_row[fifo[0]]]] > 0 else INF
        if best_e < 0 and arrival == INF:
            break  # stuck: unfinished instructions wait on something that never comes
        now = min(best, arrival)
        if now > t:
            for e in range(n_eng):
                if phase[e] == MOVING:
                    remaining[e] -= rate[e] * (now - t)
            t = now
        if arrival <= best:
            # Every change arriving now, then the blocked engines whose waits now hold.
            _drain(t, fifo, fifo_row, fifo_time, sem_code, sem_op, sem_value, count, log_ptr,
                   log, log_count, arrived, last_seq)
            for e in range(n_eng):
                if phase[e] == BLOCKED:
                    node = current[e]
                    if _satisfied(node, sem_ptr, sem_rows, sem_code, sem_op, sem_value,
                                  sem_cond, count):
                        # Bound by the latest change now arrived on one of its semaphores.
                        by = _latest_change(node, sem_ptr, sem_rows, sem_code, sem_op,
                                            log_ptr, log, arrived, last_seq)
                        if by >= 0 and t > ready[node]:
                            bind[node] = sem_node[by]
                            bind_kind[node] = SEMAPHORE_KIND
                        _start(node, e, max(t, ready[node]), sem_ptr, sem_rows, sem_code,
                               sem_op, arrived, upto, start, phase, until, setup)
                        _watch(node, -1, sem_ptr, sem_rows, sem_code, sem_op, watch)
            continue
        e = best_e
        node = current[e]
        if phase[e] == PARKED:
            _drain(t, fifo, fifo_row, fifo_time, sem_code, sem_op, sem_value, count, log_ptr,
                   log, log_count, arrived, last_seq)
            if _satisfied(node, sem_ptr, sem_rows, sem_code, sem_op, sem_value, sem_cond,
                          count):
                _start(node, e, t, sem_ptr, sem_rows, sem_code, sem_op, arrived, upto, start,
                       phase, until, setup)
            else:
                phase[e] = BLOCKED
                _watch(node, 1, sem_ptr, sem_rows, sem_code, sem_op, watch)
            continue
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
        done_order[completed] = node
        completed += 1
        for k in range(sem_ptr[node], sem_ptr[node + 1]):
            r = sem_rows[k]
            if sem_op[r] != WAIT:
                fifo_row[fifo[1]] = r
                fifo_time[fifo[1]] = t + sem_latency
                fifo[1] += 1
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            when = t + kind_latency[succ_kind[k]]
            if bind[s] < 0 or when > ready[s]:
                ready[s] = when
                bind[s] = node
                bind_kind[s] = succ_kind[k]
            pending[s] -= 1
            if pending[s] == 0:
                if waits[s]:
                    _drain(t, fifo, fifo_row, fifo_time, sem_code, sem_op, sem_value, count,
                           log_ptr, log, log_count, arrived, last_seq)
                _head(s, node_engine[s], t, ready[s], waits, monotone, sem_latency, fifo,
                      fifo_time, sem_ptr, sem_rows, sem_code, sem_op, sem_value, sem_cond,
                      count, arrived, upto, start, phase, current, until, setup, watch)
    _drain(INF, fifo, fifo_row, fifo_time, sem_code, sem_op, sem_value, count, log_ptr, log,
           log_count, arrived, last_seq)
    blocked = np.zeros(n_eng, dtype=np.bool_)
    for e in range(n_eng):
        blocked[e] = phase[e] == BLOCKED or phase[e] == PARKED
    return (start, end, bind, bind_kind, contention, completed, done_order[:completed], log,
            log_count, arrived, upto, count, blocked)


@numba.njit(cache=True, inline="always")
def _head(node, e, t, at, waits, monotone, sem_latency, fifo, fifo_time, sem_ptr, sem_rows,
          sem_code, sem_op, sem_value, sem_cond, count, arrived, upto, start, phase, current,
          until, setup, watch):  # pragma: no cover - compiled
    """`node`, whose predecessors are done, becomes engine e's current instruction, ready at
    `at` (changes arrived by `t` applied): it starts, is parked until `at`, or blocks."""
    current[e] = node
    if not waits[node]:
        start[node] = at
        phase[e] = RUNNING
        until[e] = at + setup[node]
        return
    # The counts at `at` are the counts now when they only grow (for what holds), or when no
    # change can arrive by then: none queued, and a change not yet queued comes from an end
    # still to come, at t + sem_latency at the earliest.
    settled = monotone or (at < t + sem_latency
                           and (fifo[0] == fifo[1] or fifo_time[fifo[0]] > at))
    if not settled:
        phase[e] = PARKED
        until[e] = at
    elif _satisfied(node, sem_ptr, sem_rows, sem_code, sem_op, sem_value, sem_cond, count):
        _start(node, e, at, sem_ptr, sem_rows, sem_code, sem_op, arrived, upto, start, phase,
               until, setup)
    else:
        phase[e] = BLOCKED
        _watch(node, 1, sem_ptr, sem_rows, sem_code, sem_op, watch)


@numba.njit(cache=True, inline="always")
def _watch(node, delta, sem_ptr, sem_rows, sem_code, sem_op, watch):  # pragma: no cover
    """Count `node`'s engine in (or out of) the blocked watchers of its waits' semaphores."""
    for k in range(sem_ptr[node], sem_ptr[node + 1]):
        r = sem_rows[k]
        if sem_op[r] == WAIT:
            watch[sem_code[r]] += delta


@numba.njit(cache=True, inline="always")
def _drain(limit, fifo, fifo_row, fifo_time, sem_code, sem_op, sem_value, count, log_ptr, log,
           log_count, arrived, last_seq):  # pragma: no cover - compiled
    """Apply the queued changes arriving at or before `limit`, in arrival order."""
    while fifo[0] < fifo[1] and fifo_time[fifo[0]] <= limit:
        _drain_one(fifo, fifo_row, sem_code, sem_op, sem_value, count, log_ptr, log, log_count,
                   arrived, last_seq)


@numba.njit(cache=True, inline="always")
def _drain_one(fifo, fifo_row, sem_code, sem_op, sem_value, count, log_ptr, log, log_count,
               arrived, last_seq):  # pragma: no cover - compiled
    """Apply the first queued change."""
    r = fifo_row[fifo[0]]
    s = sem_code[r]
    count[s] = apply(count[s], sem_op[r], sem_value[r])
    slot = log_ptr[s] + arrived[s]
    log[slot] = r
    log_count[slot] = count[s]
    arrived[s] += 1
    last_seq[s] = fifo[0]
    fifo[0] += 1


@numba.njit(cache=True, inline="always")
def _satisfied(node, sem_ptr, sem_rows, sem_code, sem_op, sem_value, sem_cond,
               count):  # pragma: no cover - compiled
    """Whether every wait of `node` holds for the current counts."""
    for k in range(sem_ptr[node], sem_ptr[node + 1]):
        r = sem_rows[k]
        if sem_op[r] == WAIT and not holds(count[sem_code[r]], sem_cond[r], sem_value[r]):
            return False
    return True


@numba.njit(cache=True, inline="always")
def _latest_change(node, sem_ptr, sem_rows, sem_code, sem_op, log_ptr, log, arrived,
                   last_seq):  # pragma: no cover - compiled
    """The row of the change that arrived last (`last_seq`: per semaphore, the sequence number
    of its last arrival), of those on the semaphores `node` waits on; -1 if none arrived."""
    best, best_seq = -1, -1
    for k in range(sem_ptr[node], sem_ptr[node + 1]):
        r = sem_rows[k]
        if sem_op[r] == WAIT:
            s = sem_code[r]
            if arrived[s] > 0 and last_seq[s] > best_seq:
                best, best_seq = log[log_ptr[s] + arrived[s] - 1], last_seq[s]
    return best


@numba.njit(cache=True, inline="always")
def _start(node, e, t, sem_ptr, sem_rows, sem_code, sem_op, arrived, upto, start, phase,
           until, setup):  # pragma: no cover - compiled
    """Start `node` on engine `e` at `t`, noting how many changes each of its waits' semaphores
    had seen."""
    for k in range(sem_ptr[node], sem_ptr[node + 1]):
        r = sem_rows[k]
        if sem_op[r] == WAIT:
            upto[r] = arrived[sem_code[r]]
    start[node] = t
    phase[e] = RUNNING
    until[e] = t + setup[node]
