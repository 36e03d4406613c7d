"""Happens-before over engine order, explicit dependencies and semaphores counted in every
legal order: the order the race check may rely on.

A wait is ordered after a change of its semaphore only when, in every order of execution the
trace allows, the wait could not have been satisfied without that change. For a `ge` wait on a
semaphore that only counts up, that is when the signals not ordered after the wait, less that
one and the ones after it on its engine, cannot reach the value. Example: engine A writes X and
signals s, engine B signals s, engine C waits for s >= 1 and reads X. B's signal alone
satisfies C, so nothing orders C after A: a race. With a wait for s >= 2 both signals are
needed, C follows A, and there is no race.

Clocks: `clock[i, e]` is the last place (1-based) in engine e's queue that happens before
instruction i or is i itself (0: none); a happens before b iff clock[b, engine(a)] >=
place(a). Instructions are visited in an order every legal execution agrees with (the model
replay's completion order), each merging its predecessors' clocks and, for each wait, the
clock of the change it needs on each engine. Which changes may come before a wait depends on
what the wait happens before, so the pass repeats until nothing changes; each pass only adds
orders that hold in every execution.

The rules, per wait W on semaphore s (changes of s on engine f are a queue: in any execution
a prefix of them has arrived):

- possible changes on f: those not after W (before the first place on f that W happens
  before); definite ones: those that surely arrived before W started. A change lands at its
  instruction's end plus the semaphore latency, so happening before W is not enough (the next
  instruction of an engine may start before its predecessor's change lands): a second clock,
  `arrived`, holds what a chain through a semaphore wait guarantees (everything that happens
  before a change W needs ended before that change did, so its changes landed first);
- `set`: a set that may or may not precede W makes W's count unknown: no order through s
  (conservative, and W is flagged order-dependent). Otherwise the count starts from the value
  of a definite set (the largest, if several engines set s) and changes that happen before
  any definite set are overwritten;
- upper bound of the count: base + possible adds - definite subs (subs are not subtracted
  when s has sets); W (ge or eq) needs the k-th add on f when the bound without it and its
  successors on f is below the value;
- lower bound for an `eq` wait: definite adds - possible subs; W needs the k-th sub on f when
  the bound without it and its successors on f is above the value (only when s has no set);
- a wait on a semaphore that only counts up with all its signals on one engine needs the
  prefix of signals that first reaches its value: exact in one pass.

Exactness: for semaphores that only count up (signals and ge waits), the rule misses orders
that hold only through a disjunction (W needs one of two signals, each of which follows A);
`exact_order` settles such a pair by running the trace with A held back. For sub, set and eq
the rule is sound but not complete, and a race found through them says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from tracekit.replay.graph import Graph
from tracekit.replay.semaphores import (
    EQ,
    SET,
    SIGNAL,
    SUB,
    WAIT,
    SemTable,
    holds,
    upper_from,
)

MAX_PASSES = 32
"""Passes of the clock computation before it settles for what it has (sound either way)."""


@dataclass(frozen=True)
class HappensBefore:
    """Vector clocks (`clock`, rows are graph rows, int32), each row's engine code and 1-based
    place in its engine's queue, whether the semaphore rule was exact for every wait
    (`exact`: only signals and ge waits), and per semaphore row whether its wait may or may
    not be released depending on the order of changes (`order_dependent`)."""

    clock: np.ndarray
    engine: np.ndarray
    position: np.ndarray
    exact: bool
    order_dependent: np.ndarray
    converged: bool

    def ordered(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether a happens before b or b before a, pairwise."""
        return _ordered(self.clock, self.engine, self.position, a, b)


@numba.njit(cache=True, nogil=True)
def _ordered(clock, engine, position, a, b):  # pragma: no cover - compiled
    out = np.empty(a.size, dtype=np.bool_)
    for k in range(a.size):
        out[k] = (clock[b[k], engine[a[k]]] >= position[a[k]]
                  or clock[a[k], engine[b[k]]] >= position[b[k]])
    return out


def happens_before(graph: Graph, engine: np.ndarray, queue: np.ndarray, n_eng: int,
                   visit: np.ndarray) -> HappensBefore:
    """Clocks over `graph`'s edges other than semaphore and memory edges, and its semaphores
    counted in every legal order. `engine`: each row's engine code; `queue`: rows in queue
    order (each engine's by seq, engine after engine); `visit`: the rows that can run, in an
    order every legal execution agrees with (the model replay's completion order)."""
    from tracekit.replay.graph import MEMORY, SEMAPHORE

    n = graph.nodes
    counts = np.bincount(engine, minlength=n_eng)
    eng_ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
    position = np.empty(n, dtype=np.int32)
    position[queue] = (np.arange(n) - np.repeat(eng_ptr[:-1], counts) + 1).astype(np.int32)
    keep = (graph.kind != SEMAPHORE) & (graph.kind != MEMORY)
    if keep.all():  # a trace's fixed graph: its lists serve as they are
        pred_ptr, pred_src = graph.ptr, np.asarray(graph.src, dtype=np.int64)
    else:
        dst = graph.destinations()[keep]
        pred_ptr = np.zeros(n + 1, dtype=np.int64)
        pred_ptr[1:] = np.cumsum(np.bincount(dst, minlength=n))
        pred_src = graph.src[keep].astype(np.int64)  # sorted by dst already (CSR order)
    del keep
    sems = graph.sems
    groups = _Groups.of(sems, engine, position)
    clock = np.zeros((n, n_eng), dtype=np.int32)
    # Which changes surely arrived before each instruction starts matters only for sets, subs
    # and == waits; a trace of signals and >= waits needs no second clock.
    track = not sems.monotone
    arrived = np.zeros((n if track else 1, n_eng), dtype=np.int32)
    flagged = np.zeros(sems.size, dtype=np.bool_)
    # The general rule (sets, subs, == waits, several signalling engines) only when a
    # semaphore needs it: without it (None) numba compiles that part of the kernel away.
    general = None if groups.simple.all() else groups.simple
    converged = _clocks(np.asarray(visit, dtype=np.int64), pred_ptr, pred_src,
                        np.asarray(engine, dtype=np.int64),
                        position, np.asarray(queue, dtype=np.int64), eng_ptr, sems.ptr,
                        sems.sem, sems.op, sems.value, sems.cond, groups.sem_ptr,
                        groups.ptr, groups.engine, groups.pos, groups.node, groups.op,
                        groups.value, groups.adds, groups.subs, groups.sets, groups.last_set,
                        groups.simple, groups.adding, clock, arrived, track, flagged,
                        MAX_PASSES, general)
    return HappensBefore(clock=clock, engine=engine, position=position, exact=sems.monotone,
                         order_dependent=flagged, converged=converged)


@dataclass(frozen=True)
class _Groups:
    """The changes of each semaphore grouped by engine, each group in queue order: semaphore s
    owns groups sem_ptr[s]:sem_ptr[s + 1]; group g holds elements ptr[g]:ptr[g + 1] (engine
    `engine[g]`), each with its 1-based place, instruction row, op and value. Prefix sums
    over the whole array (adds, subs: values; sets: how many), `last_set[k]`: the last set
    at or before element k in its group (-1: none); `simple`: per semaphore, only signals
    on one engine; `adding`: per semaphore, how many engines signal it."""

    sem_ptr: np.ndarray
    ptr: np.ndarray
    engine: np.ndarray
    pos: np.ndarray
    node: np.ndarray
    op: np.ndarray
    value: np.ndarray
    adds: np.ndarray
    subs: np.ndarray
    sets: np.ndarray
    last_set: np.ndarray
    simple: np.ndarray
    adding: np.ndarray

    @staticmethod
    def of(sems: SemTable, engine: np.ndarray, position: np.ndarray) -> _Groups:
        n_eng = int(engine.max(initial=0)) + 1
        if sems.semaphores * n_eng <= 4 * sems.size + 1024:
            # By (semaphore, engine) in one counting pass over the table, which is in
            # instruction order, so queue order on each engine; unless ids are out of queue
            # order (an invalid bundle), then the sort below.
            m = int(np.count_nonzero(sems.op != WAIT))
            index = np.int32 if max(m, position.size) < 2**31 - 1 else np.int64
            elements = (np.empty(m, index), np.empty(m, position.dtype), np.empty(m, np.int8),
                        np.empty(m, np.int64), np.zeros(m + 1, np.int64),
                        np.zeros(m + 1, np.int64), np.zeros(m + 1, index),
                        np.full(m, -1, index))
            node, pos, op, value, adds, subs, sets, last_set = elements
            in_order, sem_ptr, ptr, g_engine, simple, adding = _counted_changes(
                sems.node, sems.sem, sems.op, sems.value, sems.cond, engine, position,
                sems.semaphores, n_eng, *elements)
            if in_order:
                return _Groups(sem_ptr, ptr, g_engine, pos, node, op, value, adds, subs, sets,
                               last_set, simple, adding)
            del elements, node, pos, op, value, adds, subs, sets, last_set
        rows = np.flatnonzero(sems.op != WAIT)
        node = sems.node[rows]
        order = np.lexsort((position[node], engine[node], sems.sem[rows]))
        return _Groups(*_grouped_changes(rows[order], sems.node, sems.sem, sems.op, sems.value,
                                         sems.cond, engine, position, sems.semaphores))


@numba.njit(cache=True, nogil=True)
def _counted_changes(node, sem, op, value, cond, engine, position, n_sem, n_eng, g_node,
                     g_pos, g_op, g_value, adds, subs, sets,
                     last_set):  # pragma: no cover - compiled
    """`_Groups.of` by a counting sort on (semaphore, engine), the table read in order: the
    changes of each key scattered to their place (into g_*), then the prefix sums in one pass
    (adds, subs, sets, last_set). Returns whether each key's changes came in queue order (if
    not, the rest is unfinished), and sem_ptr, ptr, engine, simple, adding."""
    n_keys = n_sem * n_eng
    start = np.zeros(n_keys + 1, dtype=np.int64)
    for r in range(sem.size):
        if op[r] != WAIT:
            start[sem[r] * n_eng + engine[node[r]] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    m = start[n_keys]
    fill = start[:-1].copy()
    in_order = True
    for r in range(sem.size):
        if op[r] == WAIT:
            continue
        i = node[r]
        k = sem[r] * n_eng + engine[i]
        j = fill[k]
        if j > start[k] and position[i] < g_pos[j - 1]:
            in_order = False
            break
        fill[k] += 1
        g_node[j], g_pos[j], g_op[j], g_value[j] = i, position[i], op[r], value[r]
    ptr = np.empty(n_keys + 1, dtype=np.int64)
    g_engine = np.empty(n_keys, dtype=np.int64)
    sem_ptr = np.zeros(n_sem + 1, dtype=np.int64)
    adding = np.zeros(n_sem, dtype=np.int64)
    n_groups = 0
    if in_order:
        for key in range(n_keys):
            a, b = start[key], start[key + 1]
            if a == b:
                continue
            ptr[n_groups] = a
            g_engine[n_groups] = key % n_eng
            n_groups += 1
            sem_ptr[key // n_eng + 1] += 1
            for k in range(a, b):
                adds[k + 1] = adds[k] + (g_value[k] if g_op[k] == SIGNAL else 0)
                subs[k + 1] = subs[k] + (g_value[k] if g_op[k] == SUB else 0)
                sets[k + 1] = sets[k] + (g_op[k] == SET)
                last_set[k] = k if g_op[k] == SET else (last_set[k - 1] if k > a else -1)
            if adds[b] > adds[a]:
                adding[key // n_eng] += 1
    ptr[n_groups] = m
    for s in range(n_sem):
        sem_ptr[s + 1] += sem_ptr[s]
    # Only signals, >= waits, and one signalling engine: the prefix rule is exact at once.
    only_up = np.ones(n_sem, dtype=np.bool_)
    for r in range(sem.size):
        if op[r] == SUB or op[r] == SET or (op[r] == WAIT and cond[r] == EQ):
            only_up[sem[r]] = False
    simple = np.zeros(n_sem, dtype=np.bool_)
    for s in range(n_sem):
        simple[s] = only_up[s] and sem_ptr[s + 1] - sem_ptr[s] <= 1
    return (in_order, sem_ptr, ptr[:n_groups + 1].copy(), g_engine[:n_groups].copy(), simple,
            adding)


@numba.njit(cache=True, nogil=True)
def _grouped_changes(rows, node, sem, op, value, cond, engine, position,
                     n_sem):  # pragma: no cover - compiled
    """`_Groups.of` over the change rows in group order, in one pass each: the groups and
    their elements, the prefix sums, the last sets, and the per-semaphore flags."""
    m = rows.size
    g_node = np.empty(m, dtype=np.int64)
    g_pos = np.empty(m, dtype=np.int64)
    g_op = np.empty(m, dtype=np.int8)
    g_value = np.empty(m, dtype=np.int64)
    adds = np.zeros(m + 1, dtype=np.int64)
    subs = np.zeros(m + 1, dtype=np.int64)
    sets = np.zeros(m + 1, dtype=np.int64)
    last_set = np.full(m, -1, dtype=np.int64)
    starts = np.empty(m + 1, dtype=np.int64)
    n_groups = 0
    for k in range(m):
        r = rows[k]
        i = node[r]
        if k == 0 or sem[r] != sem[rows[k - 1]] or engine[i] != engine[node[rows[k - 1]]]:
            starts[n_groups] = k
            n_groups += 1
        g_node[k], g_pos[k], g_op[k], g_value[k] = i, position[i], op[r], value[r]
        adds[k + 1] = adds[k] + (value[r] if op[r] == SIGNAL else 0)
        subs[k + 1] = subs[k] + (value[r] if op[r] == SUB else 0)
        sets[k + 1] = sets[k] + (op[r] == SET)
        last_set[k] = k if op[r] == SET else (last_set[k - 1] if k > 0 and
                                              starts[n_groups - 1] < k else -1)
    starts[n_groups] = m
    ptr = starts[:n_groups + 1].copy()
    g_engine = np.empty(n_groups, dtype=np.int64)
    sem_ptr = np.zeros(n_sem + 1, dtype=np.int64)
    adding = np.zeros(n_sem, dtype=np.int64)
    for g in range(n_groups):
        first = rows[ptr[g]]
        g_engine[g] = engine[node[first]]
        sem_ptr[sem[first] + 1] += 1
        if adds[ptr[g + 1]] > adds[ptr[g]]:
            adding[sem[first]] += 1
    for s in range(n_sem):
        sem_ptr[s + 1] += sem_ptr[s]
    # Only signals, >= waits, and one signalling engine: the prefix rule is exact at once.
    only_up = np.ones(n_sem, dtype=np.bool_)
    for r in range(sem.size):
        if op[r] == SUB or op[r] == SET or (op[r] == WAIT and cond[r] == EQ):
            only_up[sem[r]] = False
    simple = np.zeros(n_sem, dtype=np.bool_)
    for s in range(n_sem):
        simple[s] = only_up[s] and sem_ptr[s + 1] - sem_ptr[s] <= 1
    return (sem_ptr, ptr, g_engine, g_pos, g_node, g_op, g_value, adds, subs, sets, last_set,
            simple, adding)


@numba.njit(cache=True, inline="always")
def _upper_near(a, lo, hi, x, hints, kind, g, e):  # pragma: no cover - compiled
    """The first index in [lo, hi) whose a[] is > x (`upper_from`), searched from
    hints[kind, g, e], the answer of the previous search of this kind for group g by engine
    e's waits, which then becomes this answer: along a chain of waits the answers move a
    little at a time."""
    hints[kind, g, e] = upper_from(a, lo, hi, x, hints[kind, g, e])
    return hints[kind, g, e]


@numba.njit(cache=True, inline="always")
def _first_after(clock, queue, lo, hi, eng_w, pos_w):  # pragma: no cover - compiled
    """The 1-based place of the first instruction of an engine's queue (rows queue[lo:hi])
    that instruction (eng_w, pos_w) happens before, by the clocks so far; hi - lo + 1 if
    none."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if clock[queue[mid], eng_w] >= pos_w:
            b = mid
        else:
            a = mid + 1
    return a - lo + 1


@numba.njit(cache=True, nogil=True)
def _clocks(visit, pred_ptr, pred_src, engine, position, queue, eng_ptr, sem_ptr,
            sem_sem, sem_op, sem_value, sem_cond, g_sem_ptr, g_ptr, g_engine, g_pos, g_node,
            g_op, g_value, adds, subs, sets, last_set, simple, adding, clock, arrived, track,
            flagged, max_passes, general):  # pragma: no cover - compiled
    """The passes of `happens_before`; returns whether the last pass changed nothing.
    `general` None: every semaphore is `simple`, and the general rule is compiled away."""
    n_eng = clock.shape[1]
    c = np.zeros(n_eng, dtype=np.int32)
    ac = np.zeros(n_eng, dtype=np.int32)
    c_prev = np.zeros(n_eng, dtype=np.int32)
    ac_prev = np.zeros(n_eng, dtype=np.int32)
    n_groups = g_ptr.size - 1
    hb_idx = np.zeros(max(n_groups, 1), dtype=np.int64)
    after_idx = np.zeros(max(n_groups, 1), dtype=np.int64)
    lo_idx = np.zeros(max(n_groups, 1), dtype=np.int64)
    seen = np.full(clock.shape[0], -1, dtype=np.int32)  # the pass that last visited each node
    # Each search's previous answer, per kind of search, group and waiting engine.
    hints = np.zeros((8, max(n_groups, 1), n_eng), dtype=np.int64)
    for p in range(max_passes):
        changed = False
        # Whether this pass read a clock not final for this pass: a node visited later (where
        # a wait's successors begin on another engine, or a change visited after its wait).
        # Without one, the pass saw everything it depends on and a second pass would agree.
        looked_ahead = False
        flagged[:] = False
        for node in visit:
            seen[node] = p
            e_w = engine[node]
            for e in range(n_eng):
                c[e] = clock[node, e]
                ac[e] = arrived[node, e] if track else 0
            for k in range(pred_ptr[node], pred_ptr[node + 1]):
                q = pred_src[k]
                for e in range(n_eng):
                    if clock[q, e] > c[e]:
                        c[e] = clock[q, e]
                    if track and arrived[q, e] > ac[e]:
                        ac[e] = arrived[q, e]
            c[e_w] = position[node]
            # A wait's rule reads the clocks the node's other waits add to: go over them until
            # they settle (a node has few waits).
            rounds = 0
            while True:
                for e in range(n_eng):
                    c_prev[e] = c[e]
                    ac_prev[e] = ac[e]
                for k in range(sem_ptr[node], sem_ptr[node + 1]):
                    flagged[k] = False
                reads_clocks = False  # whether a rule read c or ac (the simple one does not)
                for k in range(sem_ptr[node], sem_ptr[node + 1]):
                    r = k
                    if sem_op[r] != WAIT:
                        continue
                    s = sem_sem[r]
                    v = sem_value[r]
                    ga, gb = g_sem_ptr[s], g_sem_ptr[s + 1]
                    if gb == ga:
                        continue
                    if simple[s]:
                        # Signals on one engine: the first prefix that reaches v.
                        a, b = g_ptr[ga], g_ptr[ga + 1]
                        if v <= 0:
                            continue
                        j = _upper_near(adds, a + 1, b + 1, adds[a] + v - 1, hints, 0, ga,
                                        e_w) - 1
                        if j < b:
                            _merge(c, ac, clock, g_node[j], track)
                            looked_ahead = looked_ahead or seen[g_node[j]] != p
                        continue
                    if general is None:
                        continue  # not reached: every semaphore is simple
                    # Per engine of s: definite changes [g_ptr, hb), possible [lo, after).
                    reads_clocks = True
                    has_sets = sets[g_ptr[gb]] - sets[g_ptr[ga]] > 0
                    unknown = False
                    for g in range(ga, gb):
                        a, b = g_ptr[g], g_ptr[g + 1]
                        f = g_engine[g]
                        if f == e_w:
                            # Its own engine: its own changes (at its end) and later ones come
                            # after it; earlier ones have arrived only when a chain through a
                            # semaphore says so (the arrival clock), not by queue order alone.
                            after_idx[g] = _upper_near(g_pos, a, b, position[node] - 1, hints,
                                                       1, g, e_w)
                            hb_idx[g] = _upper_near(g_pos, a, after_idx[g], ac[f], hints, 2, g,
                                                    e_w)
                        else:
                            hb_idx[g] = _upper_near(g_pos, a, b, ac[f] if track else c[f],
                                                    hints, 3, g, e_w)
                            # Where the wait's successors begin on f matters for a set there
                            # (before or after the wait?), and for what f's adds and subs give
                            # the others; a lone engine of adds needs only its own prefix.
                            matters = (sets[b] - sets[a] > 0 or adding[s] > 1
                                       or (sem_cond[r] == EQ and subs[b] - subs[a] > 0))
                            if matters:
                                looked_ahead = True
                                place = _first_after(clock, queue, eng_ptr[f], eng_ptr[f + 1],
                                                     e_w, position[node])
                                after_idx[g] = _upper_near(g_pos, a, b, place - 1, hints, 4, g,
                                                           e_w)
                            else:
                                after_idx[g] = b
                        if sets[after_idx[g]] - sets[hb_idx[g]] > 0:
                            unknown = True  # a set that may or may not precede the wait
                    base = 0
                    for g in range(ga, gb):
                        lo_idx[g] = g_ptr[g]
                    if has_sets:
                        # Definite sets: the count starts from one of them, and whatever happens
                        # before any of them is overwritten.
                        for g in range(ga, gb):
                            if hb_idx[g] > g_ptr[g] and last_set[hb_idx[g] - 1] >= 0:
                                ls = last_set[hb_idx[g] - 1]
                                base = max(base, g_value[ls])
                                looked_ahead = looked_ahead or seen[g_node[ls]] != p
                                for h in range(ga, gb):
                                    wiped = _upper_near(g_pos, g_ptr[h], g_ptr[h + 1],
                                                        clock[g_node[ls], g_engine[h]],
                                                        hints, 5, h, e_w)
                                    if wiped > lo_idx[h]:
                                        lo_idx[h] = wiped
                                if ls + 1 > lo_idx[g]:
                                    lo_idx[g] = ls + 1
                    if unknown:
                        flagged[r] = True
                        continue
                    cond_eq = sem_cond[r] == EQ
                    if cond_eq:
                        for g in range(ga, gb):
                            if hb_idx[g] < after_idx[g]:
                                flagged[r] = True  # a change that may land on either side
                    upper = base
                    for g in range(ga, gb):
                        upper += adds[max(after_idx[g], lo_idx[g])] - adds[lo_idx[g]]
                        if not has_sets:
                            upper -= subs[hb_idx[g]] - subs[g_ptr[g]]
                    for g in range(ga, gb):
                        a = lo_idx[g]
                        b = max(after_idx[g], a)
                        others = upper - (adds[b] - adds[a])
                        need = v - others
                        if need <= 0 or adds[b] - adds[a] < need:
                            continue
                        j = _upper_near(adds, a + 1, b + 1, adds[a] + need - 1, hints, 6, g,
                                        e_w) - 1
                        if j < b:
                            _merge(c, ac, clock, g_node[j], track)
                            looked_ahead = looked_ahead or seen[g_node[j]] != p
                    if cond_eq and not has_sets:
                        lower = 0
                        for g in range(ga, gb):
                            lower += adds[hb_idx[g]] - adds[g_ptr[g]]
                            lower -= subs[after_idx[g]] - subs[g_ptr[g]]
                        for g in range(ga, gb):
                            a, b = g_ptr[g], after_idx[g]
                            others = lower + (subs[b] - subs[a])
                            # Sub k needed when others - subs[a..k) > v: the last such k.
                            excess = others - v
                            if excess <= 0:
                                continue
                            j = _upper_near(subs, a, b + 1, subs[a] + excess - 1, hints, 7, g,
                                            e_w) - 1
                            # subs[j] - subs[a] < excess: the sub at element j (if one) is needed
                            while j >= a and j < b and g_op[j] != SUB:
                                j -= 1
                            if a <= j < b:
                                _merge(c, ac, clock, g_node[j], track)
                                looked_ahead = looked_ahead or seen[g_node[j]] != p
                rounds += 1
                same = True
                for e in range(n_eng):
                    same = same and c[e] == c_prev[e] and ac[e] == ac_prev[e]
                if same or not reads_clocks or rounds >= sem_ptr[node + 1] - sem_ptr[node]:
                    break
            c[e_w] = position[node]
            for e in range(n_eng):
                if c[e] != clock[node, e]:
                    changed = True
                    clock[node, e] = c[e]
                if track and ac[e] != arrived[node, e]:
                    changed = True
                    arrived[node, e] = ac[e]
        if not changed or not looked_ahead:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _merge(c, ac, clock, q, track):  # pragma: no cover - compiled
    """Merge the clock of q, a change the wait needs, into the wait's clock `c` and (what
    happens before q ended before q did, so its changes arrived before q's) into its arrival
    clock `ac`."""
    for e in range(c.size):
        if clock[q, e] > c[e]:
            c[e] = clock[q, e]
        if track and clock[q, e] > ac[e]:
            ac[e] = clock[q, e]


def exact_order(graph: Graph, held: int, runnable: np.ndarray) -> np.ndarray:
    """What can run when instruction `held` never does, on a trace whose semaphores only
    count up (signals and ge waits): the largest set of instructions, one run that executes
    every instruction it can. An instruction outside it, that can run otherwise (`runnable`),
    happens after `held` in every legal order."""
    from tracekit.replay.graph import MEMORY, SEMAPHORE, csr

    keep = (graph.kind != SEMAPHORE) & (graph.kind != MEMORY)
    dst = graph.destinations()[keep]
    succ_ptr, succ, _ = csr(graph.nodes, dst, graph.src[keep].astype(np.int64),
                            graph.kind[keep])
    sems = graph.sems
    return _closure(graph.nodes, succ_ptr, succ.astype(np.int64), np.bincount(
        dst, minlength=graph.nodes).astype(np.int64), sems.ptr, sems.sem, sems.op,
        sems.value, sems.cond, sems.semaphores, held, runnable)


@numba.njit(cache=True, nogil=True)
def _closure(n, succ_ptr, succ, indeg, sem_ptr, sem_sem, sem_op, sem_value,
             sem_cond, n_sem, held, runnable):  # pragma: no cover - compiled
    """Run every instruction that can run (counts only grow, so the order does not matter),
    never `held`; instructions whose predecessors are done but whose waits do not hold are
    parked and looked at again whenever a count changes."""
    pending = indeg.copy()
    count = np.zeros(n_sem, dtype=np.int64)
    ran = np.zeros(n, dtype=np.bool_)
    work = np.empty(n, dtype=np.int64)
    parked = np.empty(n, dtype=np.int64)
    n_parked = 0
    top = 0
    for i in range(n):
        if pending[i] == 0 and runnable[i] and i != held:
            work[top] = i
            top += 1
    while top > 0 or n_parked > 0:
        progress = False
        while top > 0:
            top -= 1
            i = work[top]
            ok = True
            for k in range(sem_ptr[i], sem_ptr[i + 1]):
                r = k
                if sem_op[r] == WAIT and not holds(count[sem_sem[r]], sem_cond[r],
                                                   sem_value[r]):
                    ok = False
            if not ok:
                parked[n_parked] = i
                n_parked += 1
                continue
            ran[i] = True
            progress = True
            for k in range(sem_ptr[i], sem_ptr[i + 1]):
                r = k
                if sem_op[r] == SIGNAL:
                    count[sem_sem[r]] += sem_value[r]
            for k in range(succ_ptr[i], succ_ptr[i + 1]):
                s = succ[k]
                pending[s] -= 1
                if pending[s] == 0 and runnable[s] and s != held:
                    work[top] = s
                    top += 1
        if not progress:
            break
        for k in range(n_parked):  # counts changed: look at the parked ones again
            work[top] = parked[k]
            top += 1
        n_parked = 0
    return ran
