"""Semaphores as counters (schema version 2): `signal` adds, `sub` subtracts and `set` sets a
semaphore's count at its instruction's end plus the machine's semaphore latency; a wait (`ge`:
count >= value, `eq`: count == value) lets its instruction start at the first moment, once it
is otherwise ready, at which the condition holds.

Exact replays of tiny traces on the built-in machine, where every duration used here is a whole
number of cycles worked out from the machine's latency model (`cycles`); deadlocks in the
replay, in `find_bugs` and on the command line; a race that a fixed order of signals hides; and
properties on random traces (hypothesis): a released wait holds at its start and held no
earlier, the timeline depends neither on the row order of the semaphores table nor on the ids,
and the race check agrees with a brute-force enumeration of every execution order (`reachable`,
exactly for signal and ge, soundly for sub, set and eq). The oracle is tested on its own first
(hand-made cases, and graph reachability when there are no semaphores).
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from conftest import assert_failed_cleanly
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import tracekit
from tracekit.analysis.signatures import find_bugs
from tracekit.cli.app import app
from tracekit.replay.machine import builtin_machine
from tracekit.replay.run import ReplayResult, ReplayStuck, replay

MACHINE = builtin_machine()
LAT = 12
"""The built-in machine's semaphore latency, cycles (checked by the first test)."""

runner = CliRunner()


# --- helpers ---------------------------------------------------------------------------------


def cycles(engine: str, opcode: str, *, elements: int = 0, flops: int = 0) -> int:
    """An instruction's duration on the built-in machine, from its latency model (compute
    engines only, so no HBM sharing); every case used here is a whole number of cycles."""
    lat = MACHINE.latency(engine, opcode)
    value = lat.fixed_cycles + lat.per_element * elements + lat.per_flop * flops
    assert value == int(value), (engine, opcode, value)
    return int(value)


def rows(result: ReplayResult) -> dict[int, dict[str, Any]]:
    """Timeline rows by instruction id."""
    return {row["id"]: row for row in result.timeline.iter_rows(named=True)}


def binding(row: dict[str, Any]) -> tuple[int | None, str | None]:
    return row["binding_id"], row["binding_kind"]


def run_cli(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def deadlocks(trace: tracekit.Trace) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.code.value, tuple(f.instructions)) for f in find_bugs(trace, MACHINE)
            if f.code.value.startswith("deadlock-")]


def races(trace: tracekit.Trace) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.code.value, tuple(f.instructions)) for f in find_bugs(trace, MACHINE)
            if f.code.value.startswith("race-")]


def without(text: str, path: Path) -> str:
    """`text` with the bundle's path removed (a temporary path may hold any digits)."""
    return text.replace(str(path), "<trace>")


def test_builtin_machine_semaphore_latency() -> None:
    assert MACHINE.semaphore_latency == LAT
    assert MACHINE.data_latency == 0
    # the durations the exact tests below are built on
    assert cycles("tensor", "mm") == 64
    assert cycles("tensor", "mm", flops=2 * 128**3) == 64 + 128
    assert cycles("vector", "act", elements=12800) == 48 + 100
    assert cycles("scalar", "exp") == 56
    assert cycles("gpsimd", "iota") == 80


# --- 1. exact replays ------------------------------------------------------------------------


def test_example_scalar_waits_for_the_vector_and_the_tensor(tmp_path: Path) -> None:
    """The vector (148 cycles) ends after the tensor (64): the scalar waiting for 2 starts at
    the vector's end + 12, released by the vector."""
    b = tracekit.TraceBuilder("example")
    act = b.inst("vector", "act", elements=12800)
    mm = b.inst("tensor", "mm")
    exp = b.inst("scalar", "exp")
    b.signal(act, 0)
    b.signal(mm, 0)
    b.wait(exp, 0, 2)
    r = rows(replay(b.write(tmp_path / "t")))
    assert (r[act]["start"], r[act]["end"]) == (0, 148)
    assert (r[mm]["start"], r[mm]["end"]) == (0, 64)
    assert r[exp]["start"] == r[act]["end"] + LAT == 160
    assert r[exp]["end"] == 160 + 56
    assert binding(r[exp]) == (act, "semaphore")


@pytest.mark.parametrize("vector_first", [True, False], ids=["vector-id-first", "tensor-id-first"])
@pytest.mark.parametrize("later", ["vector", "tensor"])
def test_wait_for_two_is_released_by_the_later_signal(tmp_path: Path, later: str,
                                                      vector_first: bool) -> None:
    elements = 12800 if later == "vector" else 0     # vector 148 or 48 cycles
    flops = 2 * 128**3 if later == "tensor" else 0   # tensor 192 or 64 cycles
    b = tracekit.TraceBuilder("two")
    if vector_first:
        vec = b.inst("vector", "act", elements=elements)
        ten = b.inst("tensor", "mm", flops=flops)
    else:
        ten = b.inst("tensor", "mm", flops=flops)
        vec = b.inst("vector", "act", elements=elements)
    exp = b.inst("scalar", "exp")
    b.signal(vec, 0)
    b.signal(ten, 0)
    b.wait(exp, 0, 2)
    r = rows(replay(b.write(tmp_path / "t")))
    vec_end = cycles("vector", "act", elements=elements)
    ten_end = cycles("tensor", "mm", flops=flops)
    assert (r[vec]["start"], r[vec]["end"]) == (0, vec_end)
    assert (r[ten]["start"], r[ten]["end"]) == (0, ten_end)
    late, early = (vec, ten) if later == "vector" else (ten, vec)
    assert r[late]["end"] > r[early]["end"]    # the case this parameter set means to build
    assert r[exp]["start"] == max(r[vec]["end"], r[ten]["end"]) + LAT == max(vec_end,
                                                                             ten_end) + LAT
    assert r[exp]["end"] == r[exp]["start"] + cycles("scalar", "exp")
    assert binding(r[exp]) == (late, "semaphore")


def test_sub_then_eq_wait(tmp_path: Path) -> None:
    """Sem 0 goes 0 -> 3 (at 76) -> 2 (at 140). eq 2 waits for the sub; ge 3 and eq 3 hold in
    [76, 140): a ge 3 ready at 0 is released at 76, an eq 3 ready at 80 starts at once."""
    b = tracekit.TraceBuilder("sub")
    up = b.inst("tensor", "mm")         # 0..64, sem 0 += 3 at 76
    down = b.inst("tensor", "mm")       # 64..128, sem 0 -= 1 at 140
    eq2 = b.inst("scalar", "exp")
    ge3 = b.inst("vector", "act")
    lead = b.inst("gpsimd", "iota")     # 0..80
    eq3 = b.inst("gpsimd", "iota")      # ready at 80
    b.signal(up, 0, 3)
    b.sub(down, 0, 1)
    b.wait(eq2, 0, 2, cond="eq")
    b.wait(ge3, 0, 3, cond="ge")
    b.wait(eq3, 0, 3, cond="eq")
    r = rows(replay(b.write(tmp_path / "t")))
    assert (r[up]["end"], r[down]["start"], r[down]["end"]) == (64, 64, 128)
    assert r[eq2]["start"] == r[down]["end"] + LAT == 140
    assert binding(r[eq2]) == (down, "semaphore")
    assert r[ge3]["start"] == r[up]["end"] + LAT == 76
    assert binding(r[ge3]) == (up, "semaphore")
    # premise: the eq 3 instruction is ready while the count is 3
    assert r[up]["end"] + LAT <= r[lead]["end"] < r[down]["end"] + LAT
    assert r[eq3]["start"] == r[lead]["end"] == 80
    assert binding(r[eq3]) == (lead, "order")


def test_set_with_ge_and_eq_waits(tmp_path: Path) -> None:
    """Sem 1: +2 at 60, set to 5 at 76 (5, not 7). Sem 2: +7 at 140, set to 5 at 204."""
    b = tracekit.TraceBuilder("set")
    set5 = b.inst("tensor", "mm")        # 0..64: sem 1 = 5 at 76
    plus7 = b.inst("tensor", "mm")       # 64..128: sem 2 += 7 at 140
    down5 = b.inst("tensor", "mm")       # 128..192: sem 2 = 5 at 204
    plus2 = b.inst("vector", "act")      # 0..48: sem 1 += 2 at 60
    ge6 = b.inst("vector", "act")        # ready 48: sem 2 >= 6
    ge5 = b.inst("scalar", "exp")        # ready 0: sem 1 >= 5
    eq5 = b.inst("scalar", "exp")        # ready at ge5's end: sem 2 == 5
    ge2 = b.inst("gpsimd", "iota")       # ready 0: sem 1 >= 2
    b.set(set5, 1, 5)
    b.signal(plus7, 2, 7)
    b.set(down5, 2, 5)
    b.signal(plus2, 1, 2)
    b.wait(ge6, 2, 6)
    b.wait(ge5, 1, 5)
    b.wait(eq5, 2, 5, cond="eq")
    b.wait(ge2, 1, 2)
    r = rows(replay(b.write(tmp_path / "t")))
    assert [r[i]["end"] for i in (set5, plus7, down5, plus2)] == [64, 128, 192, 48]
    assert r[ge2]["start"] == r[plus2]["end"] + LAT == 60
    assert binding(r[ge2]) == (plus2, "semaphore")
    assert r[ge5]["start"] == r[set5]["end"] + LAT == 76
    assert binding(r[ge5]) == (set5, "semaphore")
    assert r[ge6]["start"] == r[plus7]["end"] + LAT == 140
    assert binding(r[ge6]) == (plus7, "semaphore")
    # premise: eq5 is ready (76 + 56 = 132) before sem 2 reaches 7, so it sees 0, 7, then 5
    assert r[ge5]["end"] == 132 < r[plus7]["end"] + LAT
    assert r[eq5]["start"] == r[down5]["end"] + LAT == 204
    assert binding(r[eq5]) == (down5, "semaphore")


def test_wait_eq_zero_after_a_set_to_zero(tmp_path: Path) -> None:
    """Sem 0: 1 at 76, 2 at 140, set to 0 at 204. An eq 0 ready at 0 starts at once; one ready
    at 148 (count 2) waits for the set; an eq 1 is released by the first signal."""
    b = tracekit.TraceBuilder("zero")
    one = b.inst("tensor", "mm")         # 0..64
    two = b.inst("tensor", "mm")         # 64..128
    reset = b.inst("tensor", "mm")       # 128..192
    lead = b.inst("vector", "act", elements=12800)   # 0..148
    late_eq0 = b.inst("vector", "act")
    early_eq0 = b.inst("scalar", "exp")
    eq1 = b.inst("gpsimd", "iota")
    b.signal(one, 0)
    b.signal(two, 0)
    b.set(reset, 0, 0)
    b.wait(late_eq0, 0, 0, cond="eq")
    b.wait(early_eq0, 0, 0, cond="eq")
    b.wait(eq1, 0, 1, cond="eq")
    r = rows(replay(b.write(tmp_path / "t")))
    assert [r[i]["end"] for i in (one, two, reset, lead)] == [64, 128, 192, 148]
    assert (r[early_eq0]["start"], *binding(r[early_eq0])) == (0, None, None)
    assert r[two]["end"] + LAT <= r[lead]["end"] < r[reset]["end"] + LAT   # premise: count 2
    assert r[late_eq0]["start"] == r[reset]["end"] + LAT == 204
    assert binding(r[late_eq0]) == (reset, "semaphore")
    assert r[eq1]["start"] == r[one]["end"] + LAT == 76
    assert binding(r[eq1]) == (one, "semaphore")


def test_several_waits_must_hold_at_one_moment(tmp_path: Path) -> None:
    """Sem 0 >= 1 from 76; sem 1 is 1 in [60, 108) and 2 from 108."""
    b = tracekit.TraceBuilder("both")
    s0 = b.inst("tensor", "mm")          # 0..64: sem 0 += 1 at 76
    first = b.inst("vector", "act")      # 0..48: sem 1 += 1 at 60
    second = b.inst("vector", "act")     # 48..96: sem 1 += 1 at 108
    w11 = b.inst("scalar", "exp")        # sem 0 >= 1 and sem 1 == 1: both hold at 76
    w12 = b.inst("gpsimd", "iota")       # sem 0 >= 1 and sem 1 == 2: both hold at 108
    b.signal(s0, 0)
    b.signal(first, 1)
    b.signal(second, 1)
    b.wait(w11, 0, 1)
    b.wait(w11, 1, 1, cond="eq")
    b.wait(w12, 1, 2, cond="eq")
    b.wait(w12, 0, 1)
    r = rows(replay(b.write(tmp_path / "t")))
    assert (r[s0]["end"], r[first]["end"], r[second]["end"]) == (64, 48, 96)
    assert r[w11]["start"] == r[s0]["end"] + LAT == 76
    assert binding(r[w11]) == (s0, "semaphore")
    assert r[w12]["start"] == r[second]["end"] + LAT == 108
    assert binding(r[w12]) == (second, "semaphore")


def _simultaneous(tmp_path: Path, case: str, vector_first: bool, rows_reversed: bool
                  ) -> dict[str, tuple[Any, ...]] | tuple[str, list[str]]:
    """The tensor (64 cycles) and the vector (48 + 16) both change sem 0 at 76: two signals
    (case "signals"; the scalar waits >= 2, the gpsimd == 2) or a set to 5 and a signal
    (case "set"; the scalar waits >= 5, the gpsimd == 6, which holds only if the set lands
    first). The outcome, by engine: each instruction's start, end, binding engine and kind,
    or the engines of the stuck instructions."""
    b = tracekit.TraceBuilder("tie")
    if vector_first:
        vec = b.inst("vector", "act", elements=2048)
        ten = b.inst("tensor", "mm")
    else:
        ten = b.inst("tensor", "mm")
        vec = b.inst("vector", "act", elements=2048)
    ge = b.inst("scalar", "exp")
    eq = b.inst("gpsimd", "iota")
    if case == "signals":
        changes = [lambda: b.signal(ten, 0), lambda: b.signal(vec, 0)]
        b.wait(ge, 0, 2)
        b.wait(eq, 0, 2, cond="eq")
    else:
        changes = [lambda: b.set(ten, 0, 5), lambda: b.signal(vec, 0)]
        b.wait(ge, 0, 5)
        b.wait(eq, 0, 6, cond="eq")
    for change in reversed(changes) if rows_reversed else changes:
        change()
    engine = {vec: "vector", ten: "tensor", ge: "scalar", eq: "gpsimd"}
    trace = b.write(tmp_path / f"{case}-{vector_first}-{rows_reversed}")
    try:
        r = rows(replay(trace))
    except ReplayStuck as stuck:
        return "stuck", sorted(engine[i] for i in stuck.stuck["id"].to_list())
    return {engine[i]: (row["start"], row["end"], engine.get(row["binding_id"]),
                        row["binding_kind"]) for i, row in r.items()}


@pytest.mark.parametrize("case", ["signals", "set"])
def test_changes_landing_together_do_not_depend_on_ids_or_row_order(tmp_path: Path,
                                                                     case: str) -> None:
    assert cycles("vector", "act", elements=2048) == cycles("tensor", "mm") == 64
    outcomes = [_simultaneous(tmp_path, case, vector_first, rows_reversed)
                for vector_first in (True, False) for rows_reversed in (False, True)]
    assert all(o == outcomes[0] for o in outcomes), outcomes
    if case == "signals":
        got = outcomes[0]
        assert isinstance(got, dict), got
        for waiter in ("scalar", "gpsimd"):
            start, _, by, kind = got[waiter]
            assert (start, kind) == (64 + LAT, "semaphore") and by in ("tensor", "vector")


def test_changes_at_one_instant_apply_before_any_wait(tmp_path: Path) -> None:
    """Two signals land at 76 together: the count goes from 0 to 2 at once, never 1."""
    b = tracekit.TraceBuilder("instant")
    ten = b.inst("tensor", "mm")
    vec = b.inst("vector", "act", elements=2048)
    eq1 = b.inst("scalar", "exp")
    b.signal(ten, 0)
    b.signal(vec, 0)
    b.wait(eq1, 0, 1, cond="eq")
    assert cycles("vector", "act", elements=2048) == cycles("tensor", "mm")
    with pytest.raises(ReplayStuck) as info:
        replay(b.write(tmp_path / "t"))
    assert info.value.stuck["id"].to_list() == [eq1]


def _first_signal_after_the_waiter() -> tuple[tracekit.TraceBuilder, int, int, int]:
    """Untimed: of the two signalling instructions the one with the lower id is on the
    waiter's own engine, right after it; the other, on the vector, releases the waiter.
    Counting signals in id order would make the waiter wait for the instruction behind it
    (the old false deadlock-cycle)."""
    b = tracekit.TraceBuilder("own-engine")
    waiter = b.inst("tensor", "mm")
    behind = b.inst("tensor", "mm")
    other = b.inst("vector", "act", elements=1280)  # 48 + 10 = 58 cycles
    b.signal(behind, 0)
    b.signal(other, 0)
    b.wait(waiter, 0, 1)
    return b, behind, waiter, other


def test_signal_listed_first_but_behind_the_waiter_is_no_deadlock(tmp_path: Path) -> None:
    b, behind, waiter, other = _first_signal_after_the_waiter()
    assert waiter < behind < other
    path = tmp_path / "t"
    trace = b.write(path)
    r = rows(replay(trace))
    assert r[other]["end"] == cycles("vector", "act", elements=1280) == 58
    assert r[waiter]["start"] == r[other]["end"] + LAT == 70
    assert binding(r[waiter]) == (other, "semaphore")
    assert r[behind]["start"] == r[waiter]["end"] == 70 + 64
    assert binding(r[behind]) == (waiter, "order")
    assert deadlocks(trace) == []
    result = run_cli("replay", path)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def _cycle() -> tuple[tracekit.TraceBuilder, dict[str, int]]:
    """tensor waits for sem 0, which the vector signals only after waiting for sem 1, which
    the tensor signals only after its wait: a true cycle. The scalar is free."""
    b = tracekit.TraceBuilder("cycle")
    ids = {"a_wait": b.inst("tensor", "mm"), "a_signal": b.inst("tensor", "mm"),
           "b_wait": b.inst("vector", "act"), "b_signal": b.inst("vector", "act"),
           "free": b.inst("scalar", "exp")}
    b.wait(ids["a_wait"], 0, 1)
    b.signal(ids["a_signal"], 1)
    b.wait(ids["b_wait"], 1, 1)
    b.signal(ids["b_signal"], 0)
    return b, ids


def test_semaphore_cycle_is_stuck(tmp_path: Path) -> None:
    b, ids = _cycle()
    path = tmp_path / "t"
    trace = b.write(path)
    with pytest.raises(ReplayStuck) as info:
        replay(trace)
    assert info.value.exit_code == 3
    assert set(info.value.stuck["id"].to_list()) == {ids["a_wait"], ids["b_wait"]}
    message = without(str(info.value), path)
    for needle in (f"instruction {ids['a_wait']}", f"instruction {ids['b_wait']}",
                   "semaphore 0", "semaphore 1"):
        assert needle in message, message
    found = deadlocks(trace)
    assert found, "no deadlock finding"
    assert {code for code, _ in found} <= {"deadlock-wait", "deadlock-cycle"}
    named = {i for _, insts in found for i in insts}
    assert {ids["a_wait"], ids["b_wait"]} <= named
    assert named <= {ids["a_wait"], ids["a_signal"], ids["b_wait"], ids["b_signal"]}
    result = run_cli("replay", path)
    assert_failed_cleanly(result, 3, f"instruction {ids['a_wait']}",
                          f"instruction {ids['b_wait']}", "semaphore 0", "semaphore 1")


def _unreachable() -> tuple[tracekit.TraceBuilder, int]:
    """Sem 7 gets 4 + 5 = 9 and the scalar waits for 11 (numbers that appear nowhere else)."""
    b = tracekit.TraceBuilder("unreachable")
    four = b.inst("tensor", "mm")
    five = b.inst("vector", "act")
    waiter = b.inst("scalar", "exp")
    b.inst("gpsimd", "iota")
    b.signal(four, 7, 4)
    b.signal(five, 7, 5)
    b.wait(waiter, 7, 11)
    return b, waiter


def _names_count_and_value(text: str) -> bool:
    return bool(re.search(r"\b9\b", text) and re.search(r"\b11\b", text))


def test_unreachable_count_is_stuck(tmp_path: Path) -> None:
    b, waiter = _unreachable()
    path = tmp_path / "t"
    trace = b.write(path)
    with pytest.raises(ReplayStuck) as info:
        replay(trace)
    assert info.value.stuck["id"].to_list() == [waiter]
    message = without(str(info.value), path)
    assert f"instruction {waiter}" in message and "semaphore 7" in message, message
    assert _names_count_and_value(message), message   # count reached 9, value needed 11
    assert deadlocks(trace) == [("deadlock-wait", (waiter,))]


def test_eq_window_closed_before_the_wait_is_ready_is_stuck(tmp_path: Path) -> None:
    """Sem 0 is 3 in [76, 140) and 2 after; the eq 3 instruction is ready at 148: it waits
    for a count that never comes back (the replay does not look back)."""
    b = tracekit.TraceBuilder("window")
    up = b.inst("tensor", "mm")
    down = b.inst("tensor", "mm")
    b.inst("vector", "act", elements=12800)          # 0..148: `late` is ready at 148
    late = b.inst("vector", "act")
    b.signal(up, 0, 3)
    b.sub(down, 0, 1)
    b.wait(late, 0, 3, cond="eq")
    # premise: the count is 2 from 64 + 64 + 12 = 140 on, before `late` is ready
    assert cycles("tensor", "mm") * 2 + LAT < cycles("vector", "act", elements=12800)
    trace = b.write(tmp_path / "t")
    with pytest.raises(ReplayStuck) as info:
        replay(trace)
    assert info.value.stuck["id"].to_list() == [late]
    assert f"instruction {late}" in str(info.value) and "semaphore 0" in str(info.value)


def _hidden_race(value: int) -> tuple[tracekit.TraceBuilder, int, int]:
    """The tensor writes X and signals s; the vector signals s too; the scalar waits for s to
    reach `value` and reads X. Timed so that the tensor's signal lands first."""
    b = tracekit.TraceBuilder("hidden")
    writer = b.inst("tensor", "mm", 0, 10)
    other = b.inst("vector", "act", 0, 50)
    reader = b.inst("scalar", "exp", 22, 30) if value == 1 else b.inst("scalar", "exp", 62, 70)
    b.signal(writer, 0)
    b.signal(other, 0)
    b.wait(reader, 0, value)
    b.access(writer, "sbuf", "write", 0, 64, partition=0, partitions=1)
    b.access(reader, "sbuf", "read", 0, 64, partition=0, partitions=1)
    return b, writer, reader


def test_race_hidden_by_a_fixed_signal_order_is_found(tmp_path: Path) -> None:
    # The vector's signal alone can release the reader: nothing orders the write before it.
    b, writer, reader = _hidden_race(1)
    path = tmp_path / "t"
    assert races(b.write(path)) == [("race-raw", (writer, reader))]
    result = run_cli("bugs", path, "--format", "json")
    assert result.exit_code == 3, result.output
    assert "race-raw" in result.stdout


def test_order_guaranteed_by_counting_is_no_race(tmp_path: Path) -> None:
    # Waiting for 2 needs both signals, the writer's among them.
    b, _, _ = _hidden_race(2)
    path = tmp_path / "t"
    assert races(b.write(path)) == []
    result = run_cli("bugs", path, "--format", "json")
    assert "race-" not in result.stdout, result.stdout


# --- 3. the command line on a deadlocked trace -----------------------------------------------


def _stale_count(*, reset_signal: bool) -> tuple[tracekit.TraceBuilder, dict[str, int]]:
    """dma.q0 signals sem 0, tensor waits for 1 and then resets it to 0; the next tensor
    instruction waits for 1 again and reads X, which dma.q0 writes before its second signal.
    The reset lands 12 cycles after its instruction ends, and the next instruction may start
    at that end, so the old count can release it before dma.q0 wrote X: a race, unless the
    reset is also signalled (sem 1) and the reader waits for that too."""
    b = tracekit.TraceBuilder("stale")
    ids = {"first": b.inst("dma.q0", "dma_load", bytes=64),
           "wait": b.inst("tensor", "mm"),
           "reset": b.inst("tensor", "mm"),
           "reader": b.inst("tensor", "mm"),
           "writer": b.inst("dma.q0", "dma_load", bytes=1 << 20)}
    b.signal(ids["first"], 0)
    b.wait(ids["wait"], 0, 1)
    b.set(ids["reset"], 0, 0)
    b.wait(ids["reader"], 0, 1)
    b.access(ids["reader"], "sbuf", "read", 0, 64, partition=0, partitions=1)
    b.access(ids["writer"], "sbuf", "write", 0, 64, partition=0, partitions=1)
    b.signal(ids["writer"], 0)
    if reset_signal:
        b.signal(ids["reset"], 1)
        b.wait(ids["reader"], 1, 1)
    return b, ids


def test_a_reset_not_yet_landed_leaves_a_stale_count(tmp_path: Path) -> None:
    b, ids = _stale_count(reset_signal=False)
    trace = b.write(tmp_path / "stale")
    # The model shows it: the reader starts on the stale count, before the writer ends.
    row = rows(replay(trace))
    assert row[ids["reader"]]["start"] == row[ids["reset"]]["end"]
    assert row[ids["reader"]]["start"] < row[ids["writer"]]["end"]
    # Untimed: program order is id order, the reader first, so the write comes "after" it.
    assert races(trace) == [("race-war", (ids["reader"], ids["writer"]))]
    codes = {f.code.value: f for f in find_bugs(trace, MACHINE)}
    assert codes["semaphore-order-dependent"].instructions == (ids["reader"],)


def test_a_reset_ordered_by_its_own_signal_leaves_no_race(tmp_path: Path) -> None:
    b, ids = _stale_count(reset_signal=True)
    trace = b.write(tmp_path / "ordered")
    row = rows(replay(trace))
    assert row[ids["reader"]]["start"] >= row[ids["writer"]]["end"] + 12
    assert races(trace) == []
    assert all(f.code.value != "semaphore-order-dependent" for f in find_bugs(trace, MACHINE))


def test_cli_replay_names_the_blocked_wait(tmp_path: Path) -> None:
    b, waiter = _unreachable()
    path = tmp_path / "t"
    b.write(path)
    result = run_cli("replay", path)
    assert_failed_cleanly(result, 3, f"instruction {waiter}", "semaphore 7")
    assert _names_count_and_value(without(result.stderr, path)), result.stderr


# --- the brute-force oracle ------------------------------------------------------------------


COMPUTE = ("tensor", "vector", "scalar", "gpsimd")
OPCODE = {"tensor": "matmul", "vector": "act", "scalar": "exp", "gpsimd": "iota"}
DURATIONS = (80, 80, 96, 112)
"""Durations of the random traces' instructions, cycles: each one every engine can take (see
`work`), so that instructions on different engines often end together."""


def work(engine: str, duration: int) -> dict[str, int]:
    """The elements or flops that take `duration` cycles on `engine` (built-in machine)."""
    fixed = {"tensor": 64, "vector": 48, "scalar": 56, "gpsimd": 80}[engine]
    if engine == "tensor":
        return {"flops": 32768 * (duration - fixed)}
    return {"elements": (64 if engine == "gpsimd" else 128) * (duration - fixed)}


def test_work_takes_its_duration() -> None:
    for engine in COMPUTE:
        for duration in DURATIONS:
            assert cycles(engine, OPCODE[engine], **work(engine, duration)) == duration
SemRow = tuple[int, int, str, int, str | None]   # inst, sem, op, value, cond


@dataclass(frozen=True)
class Prog:
    """A trace in the abstract: instruction i (its id) runs on engines[i] for durations[i]
    cycles (80 when not given), after the earlier instructions of its engine; semaphore rows
    (inst, sem, op, value, cond); data deps (src, dst); memory accesses (inst, "read" |
    "write") of one 64-byte SBUF range, partition 0."""

    engines: tuple[str, ...]
    durations: tuple[int, ...] = ()
    sems: tuple[SemRow, ...] = ()
    deps: tuple[tuple[int, int], ...] = ()
    memory: tuple[tuple[int, str], ...] = ()

    @property
    def n(self) -> int:
        return len(self.engines)

    def monotone(self) -> bool:
        """Signals and ge waits only: a count never goes down."""
        return all(op == "signal" or (op == "wait" and cond in (None, "ge"))
                   for _, _, op, _, cond in self.sems)

    def build(self, ids: list[int] | None = None,
              sem_order: list[int] | None = None) -> tracekit.TraceBuilder:
        """The trace, with instruction i given id ids[i] (each engine keeping its order) and
        the semaphores table's rows in `sem_order`."""
        ids = list(range(self.n)) if ids is None else ids
        seq: dict[int, int] = {}
        per_engine: dict[str, int] = defaultdict(int)
        for i, engine in enumerate(self.engines):
            seq[i] = per_engine[engine]
            per_engine[engine] += 1
        b = tracekit.TraceBuilder("prop")
        for i in sorted(range(self.n), key=lambda k: ids[k]):
            engine = self.engines[i]
            duration = self.durations[i] if self.durations else 80
            b.inst(engine, OPCODE[engine], id=ids[i], seq=seq[i], **work(engine, duration))
        order = range(len(self.sems)) if sem_order is None else sem_order
        for k in order:
            inst, sem, op, value, cond = self.sems[k]
            if op == "wait":
                b.wait(ids[inst], sem, value, cond=cond)
            else:
                getattr(b, op)(ids[inst], sem, value)
        for src, dst in self.deps:
            b.dep(ids[src], ids[dst])
        for inst, access in self.memory:
            b.access(ids[inst], "sbuf", access, 0, 64, partition=0, partitions=1)
        return b


def _apply(count: int, op: str, value: int) -> int:
    return count + value if op == "signal" else count - value if op == "sub" else value


def _holds(count: int, value: int, cond: str | None) -> bool:
    return count == value if cond == "eq" else count >= value


def reachable(prog: Prog) -> set[frozenset[int]]:
    """The sets of executed instructions over every reachable state, each instruction an
    atomic event: it may execute when it is next on its engine, its deps have executed and its
    waits hold on the counts (changes applied in execution order). A state is the position on
    each engine and each semaphore's count."""
    queues: dict[str, list[int]] = defaultdict(list)
    for i, engine in enumerate(prog.engines):
        queues[engine].append(i)
    engines = sorted(queues)
    where = {i: (k, p) for k, e in enumerate(engines) for p, i in enumerate(queues[e])}
    sem_ids = sorted({row[1] for row in prog.sems})
    slot = {s: k for k, s in enumerate(sem_ids)}
    waits: dict[int, list[tuple[int, int, str | None]]] = defaultdict(list)
    changes: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for inst, sem, op, value, cond in prog.sems:
        if op == "wait":
            waits[inst].append((slot[sem], value, cond))
        else:
            changes[inst].append((slot[sem], op, value))
    preds: dict[int, list[int]] = defaultdict(list)
    for src, dst in prog.deps:
        preds[dst].append(src)

    def done(pos: tuple[int, ...], i: int) -> bool:
        k, p = where[i]
        return pos[k] > p

    start = ((0,) * len(engines), (0,) * len(sem_ids))
    seen = {start}
    stack = [start]
    while stack:
        pos, count = stack.pop()
        for k, engine in enumerate(engines):
            if pos[k] == len(queues[engine]):
                continue
            i = queues[engine][pos[k]]
            if not all(done(pos, src) for src in preds[i]):
                continue
            if not all(_holds(count[s], value, cond) for s, value, cond in waits[i]):
                continue
            new = list(count)
            for s, op, value in changes[i]:
                new[s] = _apply(new[s], op, value)
            state = (pos[:k] + (pos[k] + 1,) + pos[k + 1:], tuple(new))
            if state not in seen:
                seen.add(state)
                stack.append(state)
    return {frozenset(queues[e][p] for k, e in enumerate(engines) for p in range(pos[k]))
            for pos, _ in seen}


def ordered(states: set[frozenset[int]], x: int, y: int) -> bool:
    """Whether every reachable state that has executed one of x, y has executed the same one
    of them first: every state with y has x, or every state with x has y."""
    return (all(x in s for s in states if y in s)
            or all(y in s for s in states if x in s))


def can_run(states: set[frozenset[int]], i: int) -> bool:
    return any(i in s for s in states)


def _writer_signals_reader_waits(*, extra_signal: bool = False, value: int = 1) -> Prog:
    """0 (tensor) writes and signals s; [1 (vector) signals s]; 2 (scalar) waits s >= value
    and reads."""
    sems: list[SemRow] = [(0, 0, "signal", 1, None), (2, 0, "wait", value, None)]
    if extra_signal:
        sems.append((1, 0, "signal", 1, None))
    return Prog(("tensor", "vector", "scalar"), sems=tuple(sems),
                memory=((0, "write"), (2, "read")))


def test_oracle_one_signaller_orders() -> None:
    states = reachable(_writer_signals_reader_waits())
    assert ordered(states, 0, 2) and ordered(states, 2, 0)
    assert can_run(states, 0) and can_run(states, 2)
    assert frozenset({2}) not in states and frozenset({0, 1, 2}) in states


def test_oracle_a_second_signaller_unorders() -> None:
    states = reachable(_writer_signals_reader_waits(extra_signal=True))
    assert not ordered(states, 0, 2)
    assert frozenset({1, 2}) in states    # the reader ran, released by the vector alone


def test_oracle_counting_both_signals_orders() -> None:
    states = reachable(_writer_signals_reader_waits(extra_signal=True, value=2))
    assert ordered(states, 0, 2)
    assert ordered(states, 1, 2)
    assert not ordered(states, 0, 1)      # the two signallers are free


def test_oracle_an_instruction_that_never_runs_is_ordered_with_everything() -> None:
    states = reachable(_writer_signals_reader_waits(extra_signal=True, value=3))
    assert not can_run(states, 2)
    assert can_run(states, 0) and can_run(states, 1)
    assert ordered(states, 0, 2) and ordered(states, 1, 2)
    assert max(states, key=len) == frozenset({0, 1})


def test_oracle_engine_order_and_deps_order() -> None:
    free = Prog(("tensor", "vector"))
    assert not ordered(reachable(free), 0, 1)
    assert reachable(free) == {frozenset(), frozenset({0}), frozenset({1}), frozenset({0, 1})}
    assert ordered(reachable(Prog(("tensor", "tensor"))), 0, 1)
    assert ordered(reachable(Prog(("tensor", "vector"), deps=((0, 1),))), 0, 1)
    # a dep cycle: neither runs
    assert reachable(Prog(("tensor", "vector"), deps=((0, 1), (1, 0)))) == {frozenset()}


def test_oracle_set_and_eq() -> None:
    """0 (tensor) writes, then 1 (tensor) sets s to 1; 2 (vector) adds 5; 3 (scalar) waits
    s == 1 and reads. Only the set makes the count 1 (0 + 5, 5 + ... never): the reader is
    ordered after the writer in every execution, and stuck when the add lands after the set."""
    prog = Prog(("tensor", "tensor", "vector", "scalar"),
                sems=((1, 0, "set", 1, None), (2, 0, "signal", 5, None),
                      (3, 0, "wait", 1, "eq")),
                memory=((0, "write"), (3, "read")))
    states = reachable(prog)
    assert ordered(states, 0, 3) and ordered(states, 1, 3)
    assert not ordered(states, 2, 3)
    assert frozenset({0, 1, 3}) in states              # read before the add
    assert frozenset({0, 1, 2, 3}) in states           # add, set, read
    # with the add after the set the count is 6: the reader never runs, as the add's
    # rows show when they come alone
    stuck = Prog(("tensor", "vector"), sems=((0, 0, "signal", 5, None),
                                             (1, 0, "wait", 1, "eq")))
    assert not can_run(reachable(stuck), 1)


def test_oracle_sub_can_close_a_ge_window() -> None:
    """0 adds 1, 1 (another engine) subtracts 1, 2 waits >= 1: it runs only between them."""
    prog = Prog(("tensor", "vector", "scalar"),
                sems=((0, 0, "signal", 1, None), (1, 0, "sub", 1, None),
                      (2, 0, "wait", 1, None)))
    states = reachable(prog)
    assert frozenset({0, 2}) in states and frozenset({0, 1, 2}) in states
    assert frozenset({1, 2}) not in states
    assert ordered(states, 0, 2) and not ordered(states, 1, 2)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_oracle_without_semaphores_is_graph_reachability(data: st.DataObject) -> None:
    """With engine order and deps only, x and y are ordered iff a path joins them (or one of
    them sits behind a dependency cycle and never runs)."""
    n = data.draw(st.integers(2, 7))
    on = tuple(data.draw(st.sampled_from(COMPUTE[:3])) for _ in range(n))
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                               max_size=4))
    deps = tuple(sorted({p for p in pairs if p[0] != p[1]}))    # cycles allowed
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(deps)
    for engine in set(on):
        mine = [i for i in range(n) if on[i] == engine]
        g.add_edges_from(zip(mine, mine[1:], strict=False))
    on_cycle = {i for part in nx.strongly_connected_components(g) if len(part) > 1
                for i in part}
    never = {i for i in g if i in on_cycle or any(a in on_cycle for a in nx.ancestors(g, i))}
    states = reachable(Prog(on, deps=deps))
    for x, y in combinations(range(n), 2):
        want = x in never or y in never or nx.has_path(g, x, y) or nx.has_path(g, y, x)
        assert ordered(states, x, y) == want, (x, y)
    assert {i for i in range(n) if not can_run(states, i)} == never


# --- 2. properties on random traces ----------------------------------------------------------

MAX_CHANGES = 8


@st.composite
def programs(draw: st.DrawFn, *, ops: tuple[str, ...] = ("signal", "sub", "set"),
             eq: bool = True, n_sems: int = 2, free_waits: bool = False,
             memory: bool = False) -> Prog:
    """2-4 compute engines, 2-12 instructions, up to 8 change rows (at most one per instruction
    and semaphore), waits, data deps from earlier to later instructions. Waits are chosen to
    hold when the instructions run one at a time in id order (so that order is a legal
    execution), except, with `free_waits`, some with any value. With `memory`, instruction X
    writes and Y reads or writes the same 64 SBUF bytes: the only conflicting pair."""
    engines = draw(st.lists(st.sampled_from(COMPUTE), min_size=2, max_size=4, unique=True))
    n = draw(st.integers(2, 12))
    on = tuple(draw(st.sampled_from(engines)) for _ in range(n))
    durations = tuple(draw(st.sampled_from(DURATIONS)) for _ in range(n))
    conds = [None, "ge", "eq"] if eq else [None, "ge"]
    count = [0] * n_sems
    sems: list[SemRow] = []
    changes = 0
    for i in range(n):
        for _ in range(draw(st.integers(0, 2))):
            sem = draw(st.integers(0, n_sems - 1))
            cond = draw(st.sampled_from(conds))
            c = count[sem]
            if free_waits and draw(st.booleans()):
                value = draw(st.integers(0, 4))
            elif cond == "eq" and c >= 0:
                value = c
            elif cond != "eq" and c >= 1:   # ge 0 always holds: not worth a row
                value = draw(st.one_of(st.just(c), st.integers(1, c)))
            else:
                continue
            sems.append((i, sem, "wait", value, cond))
        for sem in draw(st.lists(st.integers(0, n_sems - 1), max_size=2, unique=True)):
            if changes == MAX_CHANGES:
                break
            op = draw(st.sampled_from(ops))
            value = draw(st.integers(0 if op == "set" else 1, 3))
            sems.append((i, sem, op, value, None))
            count[sem] = _apply(count[sem], op, value)
            changes += 1
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3))
    deps = tuple(sorted({(min(p), max(p)) for p in pairs if p[0] != p[1]}))
    accesses: tuple[tuple[int, str], ...] = ()
    if memory:
        x, y = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        accesses = ((x, "write"), (y, draw(st.sampled_from(["read", "write"]))))
    return Prog(on, durations, tuple(sems), deps, accesses)


PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


def _replay_prog(prog: Prog, **build: Any) -> ReplayResult | ReplayStuck:
    with tempfile.TemporaryDirectory() as tmp:
        trace = prog.build(**build).write(Path(tmp) / "t", validate=False)
        try:
            return replay(trace)
        except ReplayStuck as stuck:
            return stuck


def _possible_counts(arrivals: list[tuple[int, str, int]], t: int) -> set[int]:
    """The counts a semaphore may have at time t, from its changes (arrival, op, value):
    every change arriving at or before t, instants in time order. Within one instant the order
    is the replay's choice, so every order is allowed: the last `set` of the instant and any
    subset of its adds and subtracts after it."""
    counts = {0}
    instants: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for when, op, value in arrivals:
        if when <= t:
            instants[when].append((op, value))
    for when in sorted(instants):
        sets = [v for op, v in instants[when] if op == "set"]
        deltas = [_apply(0, op, v) for op, v in instants[when] if op != "set"]
        if not sets:
            counts = {c + sum(deltas) for c in counts}
        else:
            tails = {sum(sub) for k in range(len(deltas) + 1) for sub in combinations(deltas, k)}
            counts = {v + d for v in sets for d in tails}
    return counts


KINDS = {"signal-ge": {"ops": ("signal",), "eq": False}, "any": {}}
"""Random traces of signals and ge waits only (where the race check is exact and id order
being a legal execution means the replay finishes), or of every operation and condition."""


@pytest.mark.parametrize("kind", sorted(KINDS))
@PROPS
@given(data=st.data())
def test_prop_released_waits_hold_at_their_start_and_not_before(kind: str,
                                                               data: st.DataObject) -> None:
    prog = data.draw(programs(**KINDS[kind]))
    result = _replay_prog(prog)
    if isinstance(result, ReplayStuck):
        # In a monotone trace an instruction that could run once stays runnable, and id order
        # is a legal execution of every generated trace: its replay cannot get stuck.
        assert not prog.monotone(), f"stuck: {result}"
        event("stuck")
        return
    r = rows(result)
    arrivals: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for inst, sem, op, value, _ in prog.sems:
        if op != "wait":
            arrivals[sem].append((r[inst]["end"] + LAT, op, value))
    changers = {(inst, sem) for inst, sem, op, _, _ in prog.sems if op != "wait"}
    previous: dict[str, int] = {}
    for i in range(prog.n):
        engine = prog.engines[i]
        ready = max([0, *([r[previous[engine]]["end"]] if engine in previous else []),
                     *(r[src]["end"] + int(MACHINE.data_latency)
                       for src, dst in prog.deps if dst == i)])
        previous[engine] = i
        start = r[i]["start"]
        waits = [(sem, value, cond) for inst, sem, op, value, cond in prog.sems
                 if inst == i and op == "wait"]
        assert start >= ready, (i, start, ready)
        if not waits:
            assert start == ready, (i, start, ready)
            continue
        for sem, value, cond in waits:
            possible = _possible_counts(arrivals[sem], start)
            assert any(_holds(c, value, cond) for c in possible), \
                (i, sem, value, cond, start, possible)
        waited = {sem for sem, _, _ in waits}
        candidates = {ready} | {when for sem in waited for when, _, _ in arrivals[sem]
                                if ready <= when < start}
        for t in sorted(candidates):
            if t >= start:
                continue
            surely = all(all(_holds(c, value, cond) for c in _possible_counts(arrivals[sem], t))
                         for sem, value, cond in waits)
            assert not surely, f"instruction {i} could start at {t}, started at {start}"
        if start > ready:
            event("released by a semaphore")
            assert r[i]["binding_kind"] == "semaphore", r[i]
            releaser = r[i]["binding_id"]
            assert any((releaser, sem) in changers and r[releaser]["end"] + LAT == start
                       for sem in waited), (i, r[i])


def _relabel(prog: Prog, shuffled: list[int]) -> list[int]:
    """New ids: a permutation of 0..n-1 that keeps each engine's instructions in id order."""
    ids = [0] * prog.n
    for engine in set(prog.engines):
        mine = [i for i in range(prog.n) if prog.engines[i] == engine]
        for i, new in zip(mine, sorted(shuffled[i] for i in mine), strict=True):
            ids[i] = new
    return ids


@pytest.mark.parametrize("kind", sorted(KINDS))
@PROPS
@given(data=st.data())
def test_prop_timeline_ignores_semaphore_row_order_and_ids(kind: str,
                                                           data: st.DataObject) -> None:
    prog = data.draw(programs(**KINDS[kind]))
    sem_order = data.draw(st.permutations(range(len(prog.sems))))
    ids = _relabel(prog, data.draw(st.permutations(range(prog.n))))
    back = {new: old for old, new in enumerate(ids)}
    first = _replay_prog(prog)
    second = _replay_prog(prog, ids=ids, sem_order=sem_order)
    if isinstance(first, ReplayStuck):
        assert not prog.monotone(), f"stuck: {first}"
        event("stuck")
        assert isinstance(second, ReplayStuck), "only the relabelled trace replays"
        assert sorted(back[i] for i in second.stuck["id"].to_list()) == \
            sorted(first.stuck["id"].to_list())
        return
    assert not isinstance(second, ReplayStuck), f"only the relabelled trace is stuck: {second}"
    keys = ("engine", "opcode", "start", "end", "duration", "binding_kind", "contention")
    want = {row["id"]: row for row in first.timeline.iter_rows(named=True)}
    assert second.timeline["id"].to_list() == sorted(ids)
    for row in second.timeline.iter_rows(named=True):
        old = back[row["id"]]
        assert {k: row[k] for k in keys} == {k: want[old][k] for k in keys}, (old, row)
        bound = None if row["binding_id"] is None else back[row["binding_id"]]
        assert bound == want[old]["binding_id"], (old, row)


def _pair_races(prog: Prog) -> list[tuple[str, tuple[int, ...]]]:
    (x, _), (y, _) = prog.memory
    with tempfile.TemporaryDirectory() as tmp:
        trace = prog.build().write(Path(tmp) / "t", validate=False)
        found = races(trace)
    assert all(set(insts) == {x, y} for _, insts in found), found   # the only conflicting pair
    return found


MISSED_RACES = {
    # tensor: 0 signals s, then 1 waits s == 1 and writes X; vector: 2 signals s and reads X.
    # If the vector goes first, it reads X and the count passes 1 before the writer waits.
    "eq-window": Prog(("tensor", "tensor", "vector"),
                      sems=((0, 0, "signal", 1, None), (1, 0, "wait", 1, "eq"),
                            (2, 0, "signal", 1, None)),
                      memory=((1, "write"), (2, "read"))),
    # 0 writes X unsynchronised; 1 waits s >= 2 and reads X; 2 adds 2, 3 subtracts 1. The
    # replay lands both changes at 92 together (count 1: the reader is stuck there), but when
    # the add lands first the reader runs.
    "stuck-in-the-replay-only": Prog(("tensor", "vector", "scalar", "gpsimd"),
                                     sems=((1, 0, "wait", 2, None), (2, 0, "signal", 2, None),
                                           (3, 0, "sub", 1, None)),
                                     memory=((0, "write"), (1, "read"))),
}
"""Races in sub, set and eq traces that the replay's own order of changes does not show."""


@pytest.mark.parametrize("name", sorted(MISSED_RACES))
def test_races_the_replay_order_does_not_show_are_found(name: str) -> None:
    prog = MISSED_RACES[name]
    (x, _), (y, _) = prog.memory
    states = reachable(prog)
    assert not ordered(states, x, y)    # the oracle's verdict: some execution runs one alone
    found = _pair_races(prog)
    assert found, f"no race reported between {x} and {y}"
    assert {code for code, _ in found} <= {"race-raw", "race-war"}, found


RACES = settings(max_examples=100, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@RACES
@given(programs(ops=("signal",), eq=False, free_waits=True, memory=True))
def test_prop_race_check_is_exact_for_signals_and_ge(prog: Prog) -> None:
    (x, _), (y, y_access) = prog.memory
    states = reachable(prog)
    race = not ordered(states, x, y) and can_run(states, x) and can_run(states, y)
    event("race" if race else "ordered" if can_run(states, x) and can_run(states, y)
          else "never runs")
    found = _pair_races(prog)
    assert bool(found) == race, (found, sorted(map(sorted, states)))
    codes = {code for code, _ in found}
    assert codes <= ({"race-waw"} if y_access == "write" else {"race-raw", "race-war"}), codes


@pytest.mark.parametrize("free_waits", [False, True], ids=["runs-in-id-order", "free-waits"])
@RACES
@given(data=st.data())
def test_prop_race_check_is_sound_for_sub_set_and_eq(free_waits: bool,
                                                     data: st.DataObject) -> None:
    prog = data.draw(programs(free_waits=free_waits, memory=True))
    (x, _), (y, _) = prog.memory
    states = reachable(prog)
    race = not ordered(states, x, y) and can_run(states, x) and can_run(states, y)
    event("race" if race else "ordered" if can_run(states, x) and can_run(states, y)
          else "never runs")
    if race:
        assert _pair_races(prog), sorted(map(sorted, states))


def test_a_timed_trace_is_checked_against_the_run_it_records(tmp_path: Path) -> None:
    # Timed throughout: the observed order is the run. A wait whose count never comes in it
    # is its deadlock (here the waiter was recorded as running all the same: a broken trace).
    b = tracekit.TraceBuilder("timed")
    one = b.inst("dma.q0", "dma_load", 0, 50, bytes=64)
    two = b.inst("dma.q1", "dma_load", 0, 60, bytes=64)
    waiter = b.inst("tensor", "mm", 80, 150)
    fine = b.inst("vector", "act", 80, 120)
    b.signal(one, 0)
    b.signal(two, 0)
    b.wait(waiter, 0, 3)
    b.wait(fine, 0, 2)
    trace = b.write(tmp_path / "timed")
    found = [f for f in find_bugs(trace, MACHINE) if f.code.value.startswith("deadlock-")]
    assert [(f.code.value, f.instructions) for f in found] == [("deadlock-wait", (waiter,))]
    assert "to reach 3; the count reached 2, and its signals add up to 2" in found[0].message
    assert run_cli("bugs", tmp_path / "timed").exit_code == 3


@PROPS
@given(data=st.data())
def test_prop_waits_from_the_history_equal_waits_over_the_window_edges(
        data: st.DataObject) -> None:
    """replay_report reads each wait's semaphore predecessor from the replay's history (the
    binder, the latest change of its window) instead of the window edges: the same waits,
    with sets, subs and == waits too."""
    import numpy as np

    from tracekit.analysis.replay_report import _node_engine, _predicted_waits, waits

    result = _replay_prog(data.draw(programs()))
    if isinstance(result, ReplayStuck):
        return
    t = result.timeline
    assert np.array_equal(_predicted_waits(result, _node_engine(result)),
                          waits(result.graph, t["start"].to_numpy(), t["end"].to_numpy()))
