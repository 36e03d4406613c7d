"""The discrete-event replay over a dependency graph, compiled with numba.

Each engine is an in-order queue. An instruction is ready at the latest end (plus edge latency)
of its predecessors; its engine is free by then, since the previous instruction on the engine
is one of them (an order edge). It starts then, unless it waits on semaphores: those are
counters evaluated during the replay (`tracekit.replay.semaphores` has the semantics), and an
instruction with waits starts at the first moment from its ready time on at which every one of
its waits holds. The instruction that decided the start (a predecessor, or the semaphore change
that made the waits hold) is its binding constraint. A compute instruction then runs for its
duration. A DMA transfer first runs its set-up, then moves its bytes under the contention model:

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

from tracekit.replay.semaphores import EQ, WAIT, apply

INF = np.inf
IDLE, RUNNING, MOVING, PARKED, BLOCKED = 0, 1, 2, 3, 4
"""Engine phases: nothing to do; running a set-up or computation; moving a transfer's bytes;
holding an instruction with waits until its ready time; holding one whose waits do not hold."""
SEMAPHORE_KIND = 1
"""The edge kind code of semaphore edges (graph.SEMAPHORE)."""


@numba.njit(cache=True, inline="always")
def _next_change(at, row, completed, done_order, sem_ptr, sem_op):  # pragma: no cover
    """The queued change from (at, row) on: `row`, a semaphore row of instruction
    done_order[at], or a later change row of it or of an instruction finished after it; `at`
    equals `completed` when none is queued. Inlined into the kernel (no call, no reference
    counting)."""
    while at < completed:
        stop = sem_ptr[done_order[at] + 1]
        while row < stop:
            if sem_op[row] != WAIT:
                return at, row
            row += 1
        at += 1
        if at < completed:
            row = sem_ptr[done_order[at]]
    return at, row


@numba.njit(cache=True, inline="always")
def _arrive(s, seq, at, row, completed, count, log, log_ptr, arrived, last_seq, done_order,
            sem_ptr, sem_op, sem_value):  # pragma: no cover - compiled
    """Change `row` (of semaphore `s`) arrives: the count moves, the change is logged as
    semaphore s's next and as the seq-th of all, and the queue moves on (`_next_change`).
    Returns the next seq, and the queue's (at, row). Inlined into the kernel."""
    count[s] = apply(count[s], sem_op[row], sem_value[row])
    log[log_ptr[s] + arrived[s]] = row
    arrived[s] += 1
    last_seq[s] = seq
    at, row = _next_change(at, row + 1, completed, done_order, sem_ptr, sem_op)
    return seq + 1, at, row


@numba.njit(cache=True, inline="always")
def _fill_groups(n_eng, phase, caps, group, group_cap, hbm_bw, rate,
                 settled):  # pragma: no cover - compiled
    """Max-min fair rates (progressive filling) for the transfers moving bytes when a queue
    has several in flight: each at most its lane's cap, the transfers of one queue (`group`)
    together at most its bandwidth (`group_cap`), all together at most the HBM bandwidth.
    Every round raises every unsettled rate by the largest equal step no limit forbids, then
    settles the transfers a limit now holds."""
    left_group = group_cap.copy()
    in_group = np.zeros(group_cap.size, dtype=np.int64)
    left = hbm_bw
    active = 0
    for e in range(n_eng):
        if phase[e] == MOVING:
            active += 1
    while active > 0:
        in_group[:] = 0
        for e in range(n_eng):
            if phase[e] == MOVING and not settled[e]:
                in_group[group[e]] += 1
        step = left / active
        for g in range(group_cap.size):
            if in_group[g] > 0:
                step = min(step, left_group[g] / in_group[g])
        for e in range(n_eng):
            if phase[e] == MOVING and not settled[e]:
                step = min(step, caps[e] - rate[e])
        step = max(step, 0.0)
        for e in range(n_eng):
            if phase[e] == MOVING and not settled[e]:
                rate[e] += step
                left_group[group[e]] -= step
        left -= step * active
        for e in range(n_eng):
            if phase[e] == MOVING and not settled[e] and (
                    rate[e] >= caps[e] * (1 - 1e-12)
                    or left_group[group[e]] <= 1e-12 * group_cap[group[e]]
                    or left <= 1e-12 * hbm_bw):
                settled[e] = True
                active -= 1


@numba.njit(cache=True, inline="always")
def _stretched(e, node, t, stretch, part_lo, part_hi, got, mult, phase, current, until,
               start, nbytes, n_eng, group):  # pragma: no cover - compiled
    """The factor on instruction `node`, starting now (t) on engine `e`: its conflict stretch
    when another engine's instruction under way (started, not ending now) covers SBUF
    partitions its own range overlaps, else 1; kept as the engine's `mult` for its bytes.
    Instructions starting at one time start in engine order: one that started now on a later
    engine (settled first) did not see this one, and is stretched now if it would have."""
    f = 1.0
    lo, hi = part_lo[node], part_hi[node]
    given = stretch[node]
    if lo >= 0:
        for o in range(n_eng):
            if o == e or (phase[o] != RUNNING and phase[o] != MOVING):
                continue
            if group is not None:
                if group[o] == group[e]:
                    continue  # another transfer of the same queue
            other = current[o]
            if part_lo[other] < 0 or start[other] > t or part_lo[other] >= hi \
                    or lo >= part_hi[other]:
                continue
            if until[o] <= t and (phase[o] == MOVING or nbytes[other] == 0):
                continue  # ends now: ends come first
            if start[other] == t and o > e:
                if mult[o] == 1.0 and stretch[other] != 1.0 and phase[o] == RUNNING:
                    mult[o] = got[other] = stretch[other]
                    until[o] = t + (until[o] - t) * stretch[other]
                continue
            f = given
    got[node] = f  # what it was given, for its contention figure
    mult[e] = f
    return f


@numba.njit(cache=True, nogil=True)
def replay_kernel(n_eng, eng_ptr, eng_nodes, node_engine, pred_ptr, succ_ptr, succ_dst,
                  succ_kind, kind_latency, setup, nbytes, caps, hbm_bw, sem_ptr, sem_node,
                  sem_code, sem_op, sem_value, sem_cond, log_ptr, sem_latency, monotone,
                  index, stretch=None, part_lo=None, part_hi=None, got=None, group=None,
                  group_cap=None):  # pragma: no cover
    """Replay; returns start, end, binding predecessor and its edge kind, the number of
    instructions completed (less than n when the replay is stuck; start and end are -1 for
    the others), the order in which they completed, what `semaphores.Released` needs (the
    changes' arrival log, the number arrived per semaphore, and per wait row the changes
    arrived when it started), the final counts, and which engines ended blocked on a wait.
    A transfer's contention follows from its times: end - (start + set-up) - bytes / its
    queue's bandwidth, exactly as the loop computes its times.

    The semaphore rows are a SemTable's entries (grouped by instruction): node i's rows are
    sem_ptr[i]:sem_ptr[i + 1] of sem_node, sem_code, ...; `bind`, `done_order`, `log` and
    `upto` hold rows as `index` (int32 when the sizes allow). Memory is the kernel's largest
    cost after the loop itself (the first touch of each page), so it allocates only what it
    returns and what the loop needs: the ready time lives in `start` until the instruction
    starts, and the queue of changes on their way is the completion order itself.

    An instruction whose predecessors have all finished is the head of its engine's queue and
    the engine is idle. Without waits it starts at once, at its ready time (possibly later
    than now). With waits, its conditions are looked at for its ready time: at once when the
    counts cannot change before then (`monotone`: counts only grow and waits are >=, so what
    holds now holds then; or no change can arrive before then), else at that time (the
    engine is parked until then). It starts at its ready time if they hold, else it blocks
    until a change arrives after which they all hold, and starts then, bound by that change's
    instruction (a semaphore edge). Changes arrive at their instruction's end plus
    `sem_latency`, in end order; they are events only while a blocked engine waits on their
    semaphore, and are otherwise applied, in order, as the events around them come. At one
    time, arrivals come first, then engines by code.

    The semaphore logic and the water-filling are written out in this loop rather than in
    helper functions: each call of a compiled helper that takes arrays pays reference counting
    on every array, which at tens of millions of calls costs more than the replay itself
    (`_arrive` and `_next_change` are inlined by numba, which has no such cost).

    SBUF partition conflicts (`tracekit.replay.machine`), when `stretch` is given: per
    instruction the factor on its set-up (or computation) and bytes when it starts while
    another engine's instruction under way covers an overlapping range of SBUF partitions
    [part_lo, part_hi) (part_lo -1: none). Such an instruction starts only at an event of its
    own (parked until its ready time, like one with waits), so the engines under way are
    known when it starts; `got` receives the factor each got (1 when nothing overlapped). Without `stretch` (None) numba compiles these branches away: the
    default replay runs exactly the code it runs without the effect.

    Transfers in flight (`tracekit.replay.machine`), when `group` is given: a DMA queue that
    may have several transfers in flight runs as that many engines (lanes) whose transfers
    share the queue's bandwidth: `group` is each engine's queue and `group_cap` each queue's
    bandwidth, and the rates come from a progressive filling under the three limits
    (`_fill_groups`). Without `group` (None) these branches are compiled away as well.
    """
    n = node_engine.size
    m = sem_code.size
    start = np.zeros(n)  # each one's ready time until it starts
    end = np.empty(n)  # written as each finishes (-1 for the rest when stuck, at the end)
    bind = np.full(n, -1, dtype=index)
    bind_kind = np.full(n, -1, dtype=np.int8)
    done_order = np.empty(n, dtype=index)
    pending = np.empty(n, dtype=np.int32)
    for i in range(n):
        pending[i] = pred_ptr[i + 1] - pred_ptr[i]
    n_sem = log_ptr.size - 1
    count = np.zeros(n_sem, dtype=np.int64)
    arrived = np.zeros(n_sem, dtype=np.int64)
    last_seq = np.full(n_sem, -1, dtype=np.int64)  # arrival number of each one's last change
    watch = np.zeros(n_sem, dtype=np.int64)  # blocked engines waiting on each semaphore
    log = np.full(log_ptr[n_sem], -1, dtype=index)
    upto = np.full(m, -1, dtype=index)
    seq = 0  # changes arrived so far
    # The changes on their way, in arrival order: change row `ch` of instruction
    # done_order[ch_i], then the later change rows of the instructions finished after it
    # (none when ch_i == completed). Each arrives at its instruction's end + sem_latency.
    ch_i = 0
    ch = 0
    phase = np.zeros(n_eng, dtype=np.int8)
    current = np.full(n_eng, -1, dtype=np.int64)
    until = np.zeros(n_eng)  # when a running, parked or moving engine's next event comes
    remaining = np.zeros(n_eng)  # a moving transfer's bytes left at moved_at
    moved_at = np.zeros(n_eng)
    rate = np.zeros(n_eng)
    settled = np.zeros(n_eng, dtype=np.bool_)
    mult = np.ones(n_eng)  # the conflict stretch of each engine's current instruction
    # Engines whose head became ready: a stack of (engine) to settle, see below.
    fresh = np.empty(n_eng, dtype=np.int64)
    n_fresh = 0
    for e in range(n_eng):
        if eng_ptr[e] < eng_ptr[e + 1]:
            node = eng_nodes[eng_ptr[e]]
            if pending[node] == 0:
                current[e] = node
                fresh[n_fresh] = e
                n_fresh += 1
    t = 0.0
    completed = 0
    rerate = False  # transfers moving bytes contend and changed: share the HBM bandwidth again
    wanted = 0.0  # the summed bandwidth of the queues moving bytes
    arrival_now = False  # a change a blocked engine waits on has just been applied
    finishing = False  # the replay is over (or stuck): what is on its way arrives, and stop
    while True:
        if rerate:
            # Water-filling: each moving transfer gets at most its queue's bandwidth; the
            # HBM bandwidth is split equally, and what a capped transfer cannot use is split
            # among the others. Each transfer's bytes left are brought up to now, and its
            # finish time follows from its new rate.
            rerate = False
            unassigned = 0
            for e in range(n_eng):
                if phase[e] == MOVING:
                    remaining[e] -= rate[e] * (t - moved_at[e])
                    moved_at[e] = t
                    unassigned += 1
                    settled[e] = False
                rate[e] = 0.0
            if group is not None:
                _fill_groups(n_eng, phase, caps, group, group_cap, hbm_bw, rate, settled)
            if group is None:
                if wanted <= hbm_bw:
                    for e in range(n_eng):
                        if phase[e] == MOVING:
                            rate[e] = caps[e]
                else:
                    left = hbm_bw
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
            for e in range(n_eng):
                if phase[e] == MOVING:
                    until[e] = t + remaining[e] / rate[e] if rate[e] > 0 else INF
        # The changes that have arrived by now (every one, once the replay is over).
        limit = INF if finishing else t
        while ch_i < completed and end[done_order[ch_i]] + sem_latency <= limit:
            s = sem_code[ch]
            arrival_now = arrival_now or watch[s] > 0
            seq, ch_i, ch = _arrive(s, seq, ch_i, ch, completed, count, log, log_ptr, arrived,
                                    last_seq, done_order, sem_ptr, sem_op, sem_value)
        if finishing:
            break
        if arrival_now:
            # The blocked engines whose waits now all hold start now, bound by the latest
            # change arrived on one of their semaphores.
            arrival_now = False
            for e in range(n_eng):
                if phase[e] != BLOCKED:
                    continue
                node = current[e]
                ok = True
                by = -1
                by_seq = -1
                for k in range(sem_ptr[node], sem_ptr[node + 1]):
                    if sem_op[k] == WAIT:
                        s = sem_code[k]
                        c, v = count[s], sem_value[k]
                        if (c != v) if sem_cond[k] == EQ else (c < v):
                            ok = False
                        if arrived[s] > 0 and last_seq[s] > by_seq:
                            by, by_seq = log[log_ptr[s] + arrived[s] - 1], last_seq[s]
                if not ok:
                    continue
                for k in range(sem_ptr[node], sem_ptr[node + 1]):
                    if sem_op[k] == WAIT:
                        watch[sem_code[k]] -= 1
                        upto[k] = arrived[sem_code[k]]
                if by >= 0 and t > start[node]:
                    bind[node] = sem_node[by]
                    bind_kind[node] = SEMAPHORE_KIND
                if stretch is not None:
                    if part_lo[node] >= 0 and start[node] > t:
                        phase[e] = PARKED  # looked at again when it starts
                        until[e] = start[node]
                        continue
                start[node] = max(t, start[node])
                phase[e] = RUNNING
                until[e] = start[node] + setup[node]
                if stretch is not None:
                    until[e] = t + _stretched(e, node, t, stretch, part_lo, part_hi, got, mult,
                                              phase, current, until, start, nbytes,
                                              n_eng, group) * setup[node]
        # Settle the engines whose head just became ready (at its ready time, maybe later than
        # now): start it, park it until its ready time, or block it on its waits.
        while n_fresh > 0:
            n_fresh -= 1
            e = fresh[n_fresh]
            node = current[e]
            at = start[node]
            has_wait = False
            ok = True
            for k in range(sem_ptr[node], sem_ptr[node + 1]):
                if sem_op[k] == WAIT:
                    has_wait = True
                    c, v = count[sem_code[k]], sem_value[k]
                    if (c != v) if sem_cond[k] == EQ else (c < v):
                        ok = False
            if stretch is not None:
                if part_lo[node] >= 0 and at > t:
                    phase[e] = PARKED  # settled again at its ready time, when it starts
                    until[e] = at
                    continue
            if not has_wait:
                phase[e] = RUNNING
                until[e] = at + setup[node]
                if stretch is not None:
                    until[e] = at + _stretched(e, node, t, stretch, part_lo, part_hi, got, mult,
                                               phase, current, until, start, nbytes,
                                               n_eng, group) * setup[node]
                continue
            # The counts at `at` are the counts now when they only grow (for what holds), or
            # when no change can arrive by then: none queued, and one not yet queued comes
            # from an end still to come, at t + sem_latency at the earliest.
            if not (monotone or (at < t + sem_latency
                                 and (ch_i == completed
                                      or end[done_order[ch_i]] + sem_latency > at))):
                phase[e] = PARKED
                until[e] = at
                continue
            for k in range(sem_ptr[node], sem_ptr[node + 1]):
                if sem_op[k] == WAIT:
                    if ok:
                        upto[k] = arrived[sem_code[k]]
                    else:
                        watch[sem_code[k]] += 1
            if ok:
                phase[e] = RUNNING
                until[e] = at + setup[node]
                if stretch is not None:
                    until[e] = at + _stretched(e, node, t, stretch, part_lo, part_hi, got, mult,
                                               phase, current, until, start, nbytes,
                                               n_eng, group) * setup[node]
            else:
                phase[e] = BLOCKED
        if completed == n:
            finishing = True
            continue
        best = INF
        best_e = -1
        for e in range(n_eng):
            if phase[e] != IDLE and phase[e] != BLOCKED and until[e] < best:
                best, best_e = until[e], e
        # Changes due by the next engine event are applied; the first one a blocked engine
        # waits on is an event of its own, with everything arriving at its time.
        arrival = INF
        while ch_i < completed and end[done_order[ch_i]] + sem_latency <= best:
            s = sem_code[ch]
            if watch[s] > 0:
                arrival = end[done_order[ch_i]] + sem_latency
                break
            seq, ch_i, ch = _arrive(s, seq, ch_i, ch, completed, count, log, log_ptr, arrived,
                                    last_seq, done_order, sem_ptr, sem_op, sem_value)
        if best_e < 0 and arrival == INF:
            finishing = True  # stuck: unfinished instructions wait on what never comes
            continue
        now = min(best, arrival)
        if now > t:
            t = now
        if arrival <= best:
            continue  # the arrival is applied, and looked at, at the top of the loop
        e = best_e
        node = current[e]
        if phase[e] == PARKED:
            # Its ready time: looked at again with the counts of now.
            start[node] = t
            fresh[n_fresh] = e
            n_fresh += 1
            phase[e] = IDLE
            continue
        if phase[e] == RUNNING and nbytes[node] > 0:
            phase[e] = MOVING
            remaining[e] = nbytes[node]
            if stretch is not None:
                remaining[e] = nbytes[node] * mult[e]
            moved_at[e] = t
            wanted = 0.0
            for q in range(n_eng):
                if phase[q] == MOVING:
                    wanted += caps[q]
            if wanted <= hbm_bw:  # no contention: every transfer moves at its queue's rate
                rate[e] = caps[e]
                until[e] = t + nbytes[node] / caps[e]
                if stretch is not None:
                    until[e] = t + remaining[e] / caps[e]
            else:
                rate[e] = 0.0
                rerate = True
            if group is not None:  # its queue's other transfers share with it
                rate[e] = 0.0
                rerate = True
            continue
        if phase[e] == MOVING:
            rerate = wanted > hbm_bw  # the others' shares change
            if group is not None:
                rerate = True
            wanted = 0.0
            for q in range(n_eng):
                if phase[q] == MOVING and q != e:
                    wanted += caps[q]
            remaining[e] = 0.0
            rate[e] = 0.0
        phase[e] = IDLE
        current[e] = -1
        end[node] = t
        done_order[completed] = node
        completed += 1
        if ch_i == completed - 1:  # nothing was queued: its changes (if any) come next
            ch_i, ch = _next_change(ch_i, sem_ptr[node], completed, done_order, sem_ptr,
                                    sem_op)
        for k in range(succ_ptr[node], succ_ptr[node + 1]):
            s = succ_dst[k]
            when = t + kind_latency[succ_kind[k]]
            if bind[s] < 0 or when > start[s]:
                start[s] = when
                bind[s] = node
                bind_kind[s] = succ_kind[k]
            pending[s] -= 1
            if pending[s] == 0:
                current[node_engine[s]] = s
                fresh[n_fresh] = node_engine[s]
                n_fresh += 1
    if completed < n:  # stuck: the unfinished never started
        finished = np.zeros(n, dtype=np.bool_)
        for k in range(completed):
            finished[done_order[k]] = True
        for i in range(n):
            if not finished[i]:
                start[i] = -1.0
                end[i] = -1.0
    blocked = np.zeros(n_eng, dtype=np.bool_)
    for e in range(n_eng):
        blocked[e] = phase[e] == BLOCKED or phase[e] == PARKED
    return (start, end, bind, bind_kind, completed, done_order[:completed], log,
            arrived, upto, count, blocked)


@numba.njit(cache=True, nogil=True)
def transfer_contention(start, end, setup, nbytes, caps, engine):  # pragma: no cover
    """Per instruction, the cycles a transfer spent beyond its set-up and its bytes at its
    queue's bandwidth: what it waited for HBM (0 for compute). The kernel's own arithmetic on
    its own times, so exactly what the contention model gave it."""
    out = np.zeros(start.size)
    for i in range(start.size):
        if nbytes[i] > 0:
            out[i] = (end[i] - (start[i] + setup[i])) - nbytes[i] / caps[engine[i]]
    return out
