"""Bug signatures: each code on a tiny hand-built trace, the generator's injected faults found
with their ground-truth instruction ids, and clean traces without error findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.signatures import (
    CHECKS,
    PING_PONG_WAITS,
    RUN_ORDER,
    Code,
    Severity,
    _densest_window,
    _peak_rate,
    check_dead_writes,
    check_races,
    check_reloads,
    find_bugs,
)
from tracekit.cli.app import app
from tracekit.replay.machine import builtin_machine
from tracekit.trace.builder import TraceBuilder
from tracekit.workloads.generate import generate
from tracekit.workloads.samples import SAMPLES

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_traces"


def _codes(trace: tracekit.Trace) -> dict[Code, list[tuple[int, ...]]]:
    out: dict[Code, list[tuple[int, ...]]] = {}
    for f in find_bugs(trace, builtin_machine()):
        out.setdefault(f.code, []).append(f.instructions)
    return out


def test_deadlock_wait_and_semaphore_leak(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("tensor", "matmul")
    d = b.inst("vector", "copy")
    b.signal(a, 0)
    b.wait(c, 0, 2)        # only one signal of 1 ever arrives
    b.signal(d, 5)         # nobody waits on semaphore 5
    found = _codes(b.write(tmp_path / "t"))
    assert found == {Code.DEADLOCK_WAIT: [(c,)], Code.SEMAPHORE_LEAK: [(d,)]}


def test_deadlock_cycle_names_only_the_cycle(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("tensor", "matmul")
    c = b.inst("vector", "copy")
    after = b.inst("scalar", "exp")
    b.dep(a, c)
    b.dep(c, a)
    b.dep(c, after)        # blocked by the cycle, not on it
    found = find_bugs(b.write(tmp_path / "t", validate=False), builtin_machine())
    cycle = [f for f in found if f.code is Code.DEADLOCK_CYCLE]
    assert len(cycle) == 1 and set(cycle[0].instructions) == {a, c}
    assert cycle[0].severity is Severity.ERROR


def test_impossible_timing(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load", 0, 100)
    c = b.inst("tensor", "matmul", 50, 150)   # waits on a, starts before it ends
    d = b.inst("tensor", "matmul", 140, 200)  # overlaps c on an in-order engine
    e = b.inst("vector", "copy", 30, 20)      # ends before it starts
    b.signal(a, 0)
    b.wait(c, 0, 1)
    found = _codes(b.write(tmp_path / "t", validate=False))
    assert found[Code.START_BEFORE_DEPENDENCY] == [(a, c)]
    assert found[Code.ENGINE_OVERLAP] == [(c, d)]
    assert found[Code.NEGATIVE_DURATION] == [(e,)]


def test_latency_signatures(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    t = 0
    copies = []
    for duration in [100] * 10 + [1000, 3000]:  # 12 peers, median 100, no spread
        copies.append(b.inst("vector", "copy", t, t + duration, elements=1024))
        t += duration
    # Two matmuls are too few peers: the machine's model (64 cycles) is the reference.
    b.inst("tensor", "matmul", 0, 64, flops=0)
    stuck_alone = b.inst("tensor", "matmul", 64, 5064, flops=0)
    for queue, duration in (("dma.q0", 176), ("dma.q1", 176), ("dma.q2", 528)):
        for k in range(4):  # the model's 176 cycles per 4,096-byte load; dma.q2 takes 3x
            b.inst(queue, "dma_load", 1000 * k, 1000 * k + duration, bytes=4096)
    findings = find_bugs(b.write(tmp_path / "t"), builtin_machine())
    found = {c: [f for f in findings if f.code is c]
             for c in (Code.ENGINE_STUCK, Code.LATENCY_OUTLIER, Code.SLOW_ENGINE)}
    assert [(f.instructions, f.message, f.cycles) for f in found[Code.ENGINE_STUCK]] == [
        ((stuck_alone,), f"instruction {stuck_alone} (matmul) on tensor took 5,000 cycles, 78x "
                         f"the 64 cycles of the machine's latency model (too few peers for "
                         f"statistics: 2)", (5000, 64)),
        ((copies[11],), f"instruction {copies[11]} (copy) on vector took 3,000 cycles, 30x the "
                        f"median of its 12 peers", (3000, 100))]
    assert [(f.instructions, f.message) for f in found[Code.LATENCY_OUTLIER]] == [
        ((copies[10],), f"instruction {copies[10]} (copy) on vector took 1,000 cycles, 10x the "
                        f"median of its 12 peers")]
    assert [(f.engines, f.message) for f in found[Code.SLOW_ENGINE]] == [
        (("dma.q2",), "dma.q2 takes 3.0x as long as other dma engines for the same work "
                      "(4 instructions)")]


def test_ordered_through_a_chain_is_not_a_timing_finding(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load", 0, 100)
    c = b.inst("tensor", "matmul", 112, 150)
    d = b.inst("vector", "copy", 162, 170)
    b.signal(a, 0)
    b.wait(c, 0, 1)
    b.signal(c, 1)
    b.wait(d, 1, 1)
    assert _codes(b.write(tmp_path / "t")) == {}


def test_out_of_bounds(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("tensor", "matmul")
    b.access(a, "sbuf", "write", 196_600, 64, 0, 128)   # past 192 KiB per partition
    b.access(c, "psum", "write", 0, 64, 100, 64)        # partitions 100..163 of 128
    b.access(c, "sbuf", "read", 0, 64, 0, 128)          # fine
    found = _codes(b.write(tmp_path / "t"))
    # Nothing reads the bytes the load wrote out of bounds: a dead write as well.
    assert found == {Code.OUT_OF_BOUNDS: [(a,), (c,)], Code.DEAD_WRITE: [(a,)]}
    # A row without its partitions (which validation reports) is still described.
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    b.access(a, "sbuf", "write", 196_600, 64)
    (f,) = _findings(b.write(tmp_path / "bad", validate=False), Code.OUT_OF_BOUNDS)
    assert f.message == (f"instruction {a} writes SBUF bytes 196,600..196,664 of unstated "
                         f"partitions, past 196,608 bytes x 128 partitions")


def test_semaphore_overflow(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("tensor", "matmul")
    b.signal(a, 0, 70_000)
    b.wait(c, 0, 70_000)
    assert _codes(b.write(tmp_path / "t")) == {Code.SEMAPHORE_OVERFLOW: [(a,)]}


@pytest.mark.parametrize("sample", [s.name for s in SAMPLES if not s.inject])
def test_clean_samples_have_no_findings(sample: str) -> None:
    """Only the information that tiles are loaded more than once (the samples' tilings reload
    operands by design); no error or warning."""
    found = find_bugs(tracekit.open_trace(SAMPLE_DIR / sample), builtin_machine())
    assert [f.code for f in found] == ([Code.REDUNDANT_RELOAD] if sample != "layernorm_untimed"
                                       else [])


FAULT_CODES = {"deadlock": Code.DEADLOCK_WAIT, "sem-leak": Code.SEMAPHORE_LEAK,
               "timestamp-skew": Code.START_BEFORE_DEPENDENCY, "oob": Code.OUT_OF_BOUNDS,
               "missing-wait": Code.RACE_RAW, "stuck-engine": Code.ENGINE_STUCK,
               "slow-queue": Code.SLOW_ENGINE}
WORKLOADS = {"gemm": {"m": 384, "n": 512, "k": 384},
             "mlp": {"widths": (256, 384, 128), "batch": 256},
             "attention": {"seq": 256, "heads": 2, "head_dim": 64},
             "conv2d": {"batch": 1, "c": 32, "h": 28, "w": 28, "filters": 64},
             "layernorm": {"rows": 512, "hidden": 256}}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
@pytest.mark.parametrize("seed", [1, 2])
def test_injected_faults_are_found_with_their_instructions(tmp_path: Path, workload: str,
                                                           seed: int) -> None:
    for fault, code in FAULT_CODES.items():
        trace = generate(workload, tmp_path / f"{fault}", params=WORKLOADS[workload],
                         seed=seed, inject=[fault])
        truth = trace.manifest.extra["generator"]["faults"][0]
        found = _codes(trace)
        assert code in found, (workload, fault, found)
        if fault in ("timestamp-skew", "missing-wait"):
            expected = (truth["producer"], truth["consumer"])
            assert expected in found[code], (workload, fault, found[code])
        elif fault == "slow-queue":
            engines = [f.engines for f in find_bugs(trace, builtin_machine())
                       if f.code is Code.SLOW_ENGINE]
            assert (truth["engine"],) in engines, (workload, engines)
        elif fault == "sem-leak":
            assert set(found[code][0]) == set(truth["instructions"])
        else:
            assert (truth["instructions"][0],) in found[code], (workload, fault, found[code])
    combined = generate(workload, tmp_path / "all", params=WORKLOADS[workload], seed=seed,
                        inject=["missing-wait", "sem-leak", "oob", "slow-queue"])
    assert {Code.RACE_RAW, Code.SEMAPHORE_LEAK, Code.OUT_OF_BOUNDS,
            Code.SLOW_ENGINE} <= set(_codes(combined))


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["bugs", str(SAMPLE_DIR / "gemm")]).exit_code == 0
    result = runner.invoke(app, ["bugs", str(SAMPLE_DIR / "mlp_faults"), "--format", "json"])
    assert result.exit_code == 3
    import json

    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert codes == {"deadlock-wait", "semaphore-leak", "redundant-reload"}
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    b.signal(a, 3)
    b.write(tmp_path / "leak")
    assert runner.invoke(app, ["bugs", str(tmp_path / "leak")]).exit_code == 0
    assert runner.invoke(app, ["bugs", str(tmp_path / "leak"),
                               "--fail-on", "warning"]).exit_code == 3


def test_race_far_apart_in_time_but_unordered_is_found(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    write = b.inst("dma.q0", "dma_load", 0, 10)
    read = b.inst("tensor", "matmul", 1_000_000, 1_000_010)  # much later, but nothing orders it
    b.access(write, "sbuf", "write", 0, 64, 0, 128)
    b.access(read, "sbuf", "read", 32, 64, 64, 64)
    found = find_bugs(b.write(tmp_path / "t"), builtin_machine())
    assert [(f.code, f.instructions) for f in found] == [(Code.RACE_RAW, (write, read))]


def test_race_kinds(tmp_path: Path) -> None:
    # Nothing orders these engines: a write, a read of it, a write over what was read; and,
    # elsewhere, two writes of one tile with no read between them.
    b = TraceBuilder("t")
    w = b.inst("dma.q0", "dma_load", 0, 10)
    r = b.inst("tensor", "matmul", 20, 30)
    w2 = b.inst("vector", "copy", 40, 50)
    for i, access in ((w, "write"), (r, "read"), (w2, "write")):
        b.access(i, "sbuf", access, 0, 64, 0, 128)
    a = b.inst("dma.q1", "dma_load", 0, 10)
    c = b.inst("dma.q2", "dma_load", 20, 30)
    for i in (a, c):
        b.access(i, "sbuf", "write", 1024, 64, 0, 128)
    found = find_bugs(b.write(tmp_path / "t"), builtin_machine())
    races = [(f.code, f.instructions, f.engines, f.message) for f in found
             if f.code in (Code.RACE_RAW, Code.RACE_WAR, Code.RACE_WAW)]
    assert races == [
        (Code.RACE_RAW, (w, r), ("dma.q0", "tensor"), f"instruction {r} on tensor reads memory "
         f"that instruction {w} on dma.q0 wrote, and nothing orders the two"),
        (Code.RACE_WAR, (r, w2), ("tensor", "vector"), f"instruction {w2} on vector writes "
         f"memory that instruction {r} on tensor reads, and nothing orders the two"),
        (Code.RACE_WAW, (a, c), ("dma.q1", "dma.q2"), f"instruction {c} on dma.q2 writes memory "
         f"that instruction {a} on dma.q1 wrote, and nothing orders the two")]


def test_race_close_in_time_but_ordered_through_three_engines_is_not(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    write = b.inst("dma.q0", "dma_load", 0, 10)
    relay = b.inst("vector", "copy", 12, 13)
    read = b.inst("tensor", "matmul", 15, 16)
    b.signal(write, 0)
    b.wait(relay, 0, 1)
    b.signal(relay, 1)
    b.wait(read, 1, 1)
    b.access(write, "sbuf", "write", 0, 64, 0, 128)
    b.access(read, "sbuf", "read", 0, 64, 0, 128)
    assert find_bugs(b.write(tmp_path / "t"), builtin_machine()) == []


def test_a_count_covers_every_signal_not_only_the_last(tmp_path: Path) -> None:
    # The reader waits for the count of two signals: both writers happen before it, even
    # though the semaphore edge names only the second.
    b = TraceBuilder("t")
    w1 = b.inst("dma.q0", "dma_load", 0, 10)
    w2 = b.inst("dma.q1", "dma_load", 0, 20)
    read = b.inst("tensor", "matmul", 32, 40)
    b.signal(w1, 0)
    b.signal(w2, 0)
    b.wait(read, 0, 2)
    b.access(w1, "sbuf", "write", 0, 64, 0, 64)
    b.access(w2, "sbuf", "write", 0, 64, 64, 64)
    b.access(read, "sbuf", "read", 0, 64, 0, 128)
    assert find_bugs(b.write(tmp_path / "t"), builtin_machine()) == []


FAULT_FAMILY = {"deadlock": {Code.DEADLOCK_WAIT, Code.DEADLOCK_CYCLE},
                "timestamp-skew": {Code.START_BEFORE_DEPENDENCY, Code.ENGINE_OVERLAP,
                                   Code.NEGATIVE_DURATION},
                "oob": {Code.OUT_OF_BOUNDS},
                "missing-wait": {Code.RACE_RAW, Code.RACE_WAR, Code.RACE_WAW},
                "stuck-engine": {Code.ENGINE_STUCK}, "sem-leak": set(), "slow-queue": set()}
"""Error-severity codes a fault explains; any other error finding on its trace is a false
positive."""


def test_detection_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per (workload, fault) over two seeds: recall (the fault's code found) and precision
    (error-severity findings the fault explains, of all error-severity findings), and
    error-severity findings on the clean runs; printed for the closing note."""
    lines = ["workload    " + " ".join(f"{f:>14}" for f in FAULT_CODES) + "  clean FP",
             "            " + " ".join(f"{'recall/prec.':>14}" for _ in FAULT_CODES)]
    total_hits = total = false_positives = explained = errors = 0
    for workload, params in sorted(WORKLOADS.items()):
        cells = []
        for fault, code in FAULT_CODES.items():
            hits = fault_explained = fault_errors = 0
            for seed in (3, 4):
                trace = generate(workload, tmp_path / f"{workload}-{fault}-{seed}",
                                 params=params, seed=seed, inject=[fault])
                found = find_bugs(trace, builtin_machine())
                hits += code in {f.code for f in found}
                wrong = [f for f in found if f.severity is Severity.ERROR]
                fault_errors += len(wrong)
                fault_explained += sum(f.code in FAULT_FAMILY[fault] for f in wrong)
            precision = fault_explained / fault_errors if fault_errors else 1.0
            cells.append(f"{hits}/2 {precision:.0%}")
            total_hits += hits
            total += 2
            explained += fault_explained
            errors += fault_errors
        clean = generate(workload, tmp_path / f"{workload}-clean", params=params, seed=3)
        fp = [f for f in find_bugs(clean, builtin_machine()) if f.severity is Severity.ERROR]
        false_positives += len(fp)
        lines.append(f"{workload:<11} " + " ".join(f"{c:>14}" for c in cells) + f"  {len(fp)}")
    lines.append(f"recall {total_hits}/{total}; precision {explained}/{errors} error-severity "
                 f"findings explained by the injected fault; error-severity false positives on "
                 f"clean runs: {false_positives}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert total_hits == total and false_positives == 0 and explained == errors


# --- bandwidth beyond physics and inefficiency ---------------------------------------------


def _findings(trace: tracekit.Trace, code: Code) -> list:
    return [f for f in find_bugs(trace, builtin_machine()) if f.code is code]


def test_bandwidth_beyond_hbm_across_queues(tmp_path: Path) -> None:
    """trn-like: 192 B/cycle of HBM, 64 per queue. Four queues each at their own limit move
    256 B/cycle together within cycles 1000..1100; three would be 192, at the limit."""
    b = TraceBuilder("t")
    early = b.inst("dma.q0", "dma_load", 0, 1000, bytes=6_400)  # slow, outside the window
    burst = [b.inst(f"dma.q{q}", "dma_load", 1000, 1100, bytes=6_400) for q in range(4)]
    (f,) = _findings(b.write(tmp_path / "four"), Code.BANDWIDTH_BEYOND_PHYSICS)
    assert f.instructions == tuple(burst) and early not in f.instructions
    assert f.cycles == (1000, 1100) and f.severity is Severity.ERROR
    assert "25,600 bytes within cycles 1,000..1,100, 256.0 bytes/cycle, over the machine's " \
           "HBM bandwidth of 192.0 bytes/cycle" in f.message
    assert f.message.startswith("all DMA queues: 4 transfers")
    b = TraceBuilder("t")
    for q in range(3):
        b.inst(f"dma.q{q}", "dma_load", 1000, 1100, bytes=6_400)
    assert _findings(b.write(tmp_path / "three"), Code.BANDWIDTH_BEYOND_PHYSICS) == []


def test_bandwidth_beyond_one_queue_and_instant_transfers(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    b.inst("dma.q1", "dma_load", 0, 100, bytes=6_400)           # 64 B/cycle: fine
    fast = b.inst("dma.q1", "dma_load", 200, 300, bytes=12_800)  # 128 B/cycle on one queue
    (f,) = _findings(b.write(tmp_path / "q"), Code.BANDWIDTH_BEYOND_PHYSICS)
    assert f.message.startswith("queue dma.q1: 1 transfers moved 12,800 bytes")
    assert f.instructions == (fast,) and f.engines == ("dma.q1",) and f.cycles == (200, 300)
    b = TraceBuilder("t")
    instant = b.inst("dma.q0", "dma_load", 50, 50, bytes=4_096)  # bytes in no time at all
    found = _findings(b.write(tmp_path / "i"), Code.BANDWIDTH_BEYOND_PHYSICS)
    assert [f.message.split(":")[0] for f in found] == ["all DMA queues", "queue dma.q0"]
    assert [f.instructions for f in found] == [(instant,), (instant,)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 40), st.integers(1, 5000)),
                min_size=1, max_size=25), st.floats(1.0, 200.0))
def test_densest_window_matches_brute_force(transfers: list, rate: float) -> None:
    """The compiled sweep finds the window maximising bytes inside minus rate x length,
    checked against every (start, end) pair."""
    start = np.array([s for s, _, _ in transfers], dtype=np.int64)
    end = start + np.array([d for _, d, _ in transfers], dtype=np.int64)
    nbytes = np.array([b for _, _, b in transfers], dtype=np.float64)
    best = max(nbytes[(start >= a) & (end <= z)].sum() - rate * (z - a)
               for a in start for z in end if z >= a)
    lo, hi, moved = _densest_window(start, end, nbytes, rate)
    assert moved == nbytes[(start >= lo) & (end <= hi)].sum()
    assert moved - rate * (hi - lo) == pytest.approx(best)


def test_redundant_reload(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    first = b.inst("dma.q0", "dma_load", 0, 10, bytes=4096)
    again = b.inst("dma.q0", "dma_load", 20, 30, bytes=4096)
    b.access(first, "hbm", "read", 0x1000, 4096)
    b.access(again, "hbm", "read", 0x1000, 4096)
    for i in (first, again):
        b.access(i, "sbuf", "write", 0, 32, 0, 128)
    reader = b.inst("tensor", "matmul", 40, 50)
    b.access(reader, "sbuf", "read", 0, 32, 0, 128)
    (f,) = _findings(b.write(tmp_path / "t"), Code.REDUNDANT_RELOAD)
    assert f.instructions == (again,) and f.addresses == ("hbm:4096+4096",)
    assert f.severity is Severity.INFO
    assert f.message.startswith("1 of 2 HBM loads (4,096 of 8,192 bytes)")
    # A store over part of the range in between: the second load is needed.
    b = TraceBuilder("t")
    first = b.inst("dma.q0", "dma_load", 0, 10)
    store = b.inst("dma.q1", "dma_store", 12, 18)
    again = b.inst("dma.q0", "dma_load", 20, 30)
    b.access(first, "hbm", "read", 0x1000, 4096)
    b.access(store, "hbm", "write", 0x1800, 16)
    b.access(again, "hbm", "read", 0x1000, 4096)
    assert _findings(b.write(tmp_path / "w"), Code.REDUNDANT_RELOAD) == []
    # A read-modify-write of the range in between is a write: no reload after it. An
    # instruction reading one range twice does not reload it either.
    b = TraceBuilder("t")
    first = b.inst("dma.q0", "dma_load", 0, 10)
    update = b.inst("dma.q1", "dma_accumulate", 12, 18)
    again = b.inst("dma.q0", "dma_load", 20, 30)
    b.access(first, "hbm", "read", 0x1000, 4096)
    b.access(update, "hbm", "read", 0x1000, 4096)
    b.access(update, "hbm", "write", 0x1000, 4096)
    b.access(again, "hbm", "read", 0x1000, 4096)
    b.access(again, "hbm", "read", 0x1000, 4096)
    (f,) = _findings(b.write(tmp_path / "rmw"), Code.REDUNDANT_RELOAD)
    assert f.instructions == (update,)  # its own read, before its write, re-reads `first`'s
    # Bytes count, not ranges: a load of bytes two earlier loads covered between them is a
    # reload; one that reaches past them is not.
    b = TraceBuilder("t")
    halves = [b.inst("dma.q0", "dma_load", 10 * k, 10 * k + 5) for k in range(2)]
    whole = b.inst("dma.q0", "dma_load", 20, 25)
    wider = b.inst("dma.q0", "dma_load", 30, 35)
    b.access(halves[0], "hbm", "read", 0x1000, 2048)
    b.access(halves[1], "hbm", "read", 0x1800, 2048)
    b.access(whole, "hbm", "read", 0x1000, 4096)
    b.access(wider, "hbm", "read", 0x1000, 4097)
    (f,) = _findings(b.write(tmp_path / "bytes"), Code.REDUNDANT_RELOAD)
    assert f.instructions == (whole,) and f.addresses == ("hbm:4096+4096",)
    assert f.message == ("1 of 4 HBM loads (4,096 of 12,289 bytes) re-read bytes loaded before "
                         "with no write in between; the range re-read most often, 0x1000+4,096, "
                         "was re-read 1 time(s) and loaded 1 time(s) as that exact range")


def test_dead_writes(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    lost = b.inst("dma.q0", "dma_load", 0, 10)     # overwritten before anyone reads it
    kept = b.inst("dma.q0", "dma_load", 10, 20)
    use = b.inst("tensor", "matmul", 30, 40)
    unused = b.inst("vector", "copy", 50, 60)       # SBUF bytes nobody ever reads
    acc = [b.inst("tensor", "matmul", t, t + 5) for t in (70, 80)]  # PSUM accumulation
    out = b.inst("dma.q1", "dma_store", 90, 95)     # an HBM output: read by nobody, fine
    redo = b.inst("dma.q1", "dma_store", 100, 105)  # HBM output stored over before a read
    redo2 = b.inst("dma.q1", "dma_store", 110, 115)
    b.access(lost, "sbuf", "write", 0, 64, 0, 128)
    b.access(kept, "sbuf", "write", 0, 64, 0, 128)
    b.access(use, "sbuf", "read", 0, 64, 0, 128)
    b.access(unused, "sbuf", "write", 1024, 64, 0, 128)
    for i in acc:
        b.access(i, "psum", "write", 0, 64, 0, 128)
    b.access(out, "hbm", "write", 0, 64)
    b.access(redo, "hbm", "write", 4096, 64)
    b.access(redo2, "hbm", "write", 4096, 64)
    found = _findings(b.write(tmp_path / "t"), Code.DEAD_WRITE)
    assert [f.instructions for f in found] == [(lost,), (unused,), (redo,)]
    assert [f.message.split(" that are ")[1] for f in found] == [
        "overwritten before anything reads them", "left before anything reads them",
        "overwritten, in part or whole, before anything reads them"]
    assert "writes 8,192 SBUF bytes" in found[0].message  # 64 bytes x 128 partitions


def test_small_dma(tmp_path: Path) -> None:
    """trn-like: 96 cycles of set-up plus 1/256 cycle per byte; moving takes 1/64 cycle per
    byte, so a transfer pays off from 96 / (1/64 - 1/256) = 8,192 bytes."""
    b = TraceBuilder("t")
    for _ in range(9):
        b.inst("dma.q0", "dma_load", bytes=65_536)
    b.inst("dma.q0", "dma_load", bytes=256)  # 1 in 10: reported
    for _ in range(10):
        b.inst("dma.q1", "dma_load", bytes=8_192)  # at break-even: fine
    (f,) = _findings(b.write(tmp_path / "t"), Code.SMALL_DMA)
    assert f.engines == ("dma.q0",) and f.severity is Severity.WARNING
    assert f.message == ("dma.q0: 1 of 10 transfers move under 8,192 bytes, so their set-up "
                         "(97 cycles in all) takes longer than moving their 256 bytes")


def test_semaphore_ping_pong(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    t = 0
    for k in range(PING_PONG_WAITS + 1):  # vector waits on scalar for every 10-cycle step
        s = b.inst("scalar", "act", t, t + 10)
        b.signal(s, 0)
        v = b.inst("vector", "copy", t + 22, t + 32)
        b.wait(v, 0, k + 1)
        t += 40
    (f,) = _findings(b.write(tmp_path / "t"), Code.SEMAPHORE_PING_PONG)
    assert f.engines == ("vector", "scalar")
    assert f.message == (f"vector waits on semaphores {PING_PONG_WAITS + 1:,} times with a "
                         f"median "
                         f"of 10 busy cycles between waits (semaphore latency 12 cycles); it "
                         f"waits mostly on scalar")
    b = TraceBuilder("t")
    t = 0
    for k in range(PING_PONG_WAITS + 1):  # the same with 1,000 cycles of work per wait
        s = b.inst("scalar", "act", t, t + 10)
        b.signal(s, 0)
        v = b.inst("vector", "copy", t + 22, t + 1022)
        b.wait(v, 0, k + 1)
        t += 1040
    assert _findings(b.write(tmp_path / "busy"), Code.SEMAPHORE_PING_PONG) == []


def test_ping_pong_with_signals_but_no_waits(tmp_path: Path) -> None:
    # Signals no instruction waits on (a semaphore leak) leave no stretch between waits.
    b = TraceBuilder("t")
    for k in range(3):
        b.signal(b.inst("scalar", "act", 10 * k, 10 * k + 5), 0)
    found = find_bugs(b.write(tmp_path / "t"), builtin_machine())
    assert [f.code for f in found] == [Code.SEMAPHORE_LEAK]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 40), st.integers(1, 5000)),
                min_size=1, max_size=25))
def test_peak_rate_bounds_every_window(transfers: list) -> None:
    """The pre-check's peak of summed average rates is never below the densest window's rate,
    so skipping the exact search when it is under the limit misses nothing."""
    start = np.array([s for s, _, _ in transfers], dtype=np.int64)
    end = start + np.array([d for _, d, _ in transfers], dtype=np.int64)
    nbytes = np.array([b for _, _, b in transfers], dtype=np.float64)
    densest = max(nbytes[(start >= a) & (end <= z)].sum() / (z - a)
                  for a in start for z in end if z > a)
    assert _peak_rate(start, end, nbytes) >= densest * (1 - 1e-9)


def test_small_dma_not_reported_when_no_size_pays_off(tmp_path: Path) -> None:
    """A machine whose per-byte set-up costs more than moving a byte: larger transfers would
    not help, so there is no break-even size to report."""
    from dataclasses import replace

    from tracekit.replay.machine import Latency

    b = TraceBuilder("t")
    for _ in range(10):
        b.inst("dma.q0", "dma_load", bytes=256)
    trace = b.write(tmp_path / "t")
    m = builtin_machine()
    assert [f.code for f in find_bugs(trace, m)] == [Code.SMALL_DMA]
    slow_setup = replace(m, engines={**m.engines, "dma": Latency(96.0, 0.0, 0.1, 0.0)})
    assert [f.code for f in find_bugs(trace, slow_setup)] == []


def test_bandwidth_in_the_trace_time_unit(tmp_path: Path) -> None:
    """Times in microseconds at 1.4 GHz: four 65,536-byte loads of 1 us each on one queue
    move about 47 bytes per cycle, under its 64; loads of 262,144 bytes break the limit."""
    from tracekit.trace.bundle import write_trace
    from tracekit.trace.manifest import Producer

    for nbytes, found in ((65_536, []), (262_144, ["queue dma.q0"])):
        b = TraceBuilder("t")
        for k in range(4):
            b.inst("dma.q0", "dma_load", 2 * k, 2 * k + 1, bytes=nbytes)
        frames = b.frames()
        trace = write_trace(tmp_path / str(nbytes), frames.pop("instructions"), **frames,
                            workload="t", producer=Producer("test"), clock_hz=1.4e9,
                            time_unit="us")
        got = [f for f in find_bugs(trace, builtin_machine())
               if f.code is Code.BANDWIDTH_BEYOND_PHYSICS]
        assert [f.message.split(":")[0] for f in got] == found
        if got:
            assert "within us 0..7, 107.0 bytes/cycle" in got[0].message  # 1 MiB in 7 us


def test_latency_in_the_trace_time_unit(tmp_path: Path) -> None:
    """Times in ns (taken at 2 GHz): the model's 64 cycles for a matmul are 46 ns at the
    machine's 1.4 GHz, and a matmul of 5,000 ns with one peer is stuck at 109x that; messages
    name the trace's unit."""
    from tracekit.trace.bundle import write_trace
    from tracekit.trace.manifest import Producer

    b = TraceBuilder("t")
    b.inst("tensor", "matmul", 0, 32, flops=0)
    stuck = b.inst("tensor", "matmul", 32, 5032, flops=0)
    frames = b.frames()
    trace = write_trace(tmp_path / "t", frames.pop("instructions"), **frames, workload="t",
                        producer=Producer("test"), clock_hz=2e9, time_unit="ns")
    (f,) = _findings(trace, Code.ENGINE_STUCK)
    assert f.instructions == (stuck,) and f.cycles == (5000, 46)
    assert f.message == (f"instruction {stuck} (matmul) on tensor took 5,000 ns, 109x the 46 ns "
                         f"of the machine's latency model (too few peers for statistics: 2)")


def test_an_instruction_behind_a_deadlock_races_with_nothing(tmp_path: Path) -> None:
    """The load waits for a count no signal reaches: it never runs, so its write cannot race
    with the matmul's read, though nothing orders the two."""
    b = TraceBuilder("t")
    load = b.inst("dma.q0", "dma_load")
    mm = b.inst("tensor", "matmul")
    b.wait(load, 0, 5)
    b.access(load, "sbuf", "write", 0, 64, 0, 128)
    b.access(mm, "sbuf", "read", 0, 64, 0, 128)
    assert _codes(b.write(tmp_path / "t")) == {Code.DEADLOCK_WAIT: [(load,)]}


def test_catalogue_lists_every_code_with_its_severity() -> None:
    """analysis/signatures.md is written by hand: one row per code, at the code's severity."""
    from tracekit.analysis.signatures import SIGNATURES

    catalogue = (SAMPLE_DIR.parent / "analysis" / "signatures.md").read_text(encoding="utf-8")
    rows = {}
    for line in catalogue.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = cells[1]
    assert rows == {code.value: SIGNATURES[code].severity.value for code in Code}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_unvalidated_traces_give_findings_or_a_tracekit_error(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """`bugs` does not validate first: broken rows (references to no instruction, negative
    sizes and values, missing times, partitions past the machine) give findings or a
    TracekitError, never a crash."""
    from tracekit.errors import TracekitError

    b = TraceBuilder("t")
    ids = []
    for _ in range(data.draw(st.integers(1, 10))):
        start = data.draw(st.none() | st.integers(-5, 60))
        end = None if start is None else data.draw(st.none() | st.integers(-5, 90))
        ids.append(b.inst(data.draw(st.sampled_from(["tensor", "vector", "dma.q0", "dma.q1"])),
                          data.draw(st.sampled_from(["dma_load", "matmul"])), start, end,
                          bytes=data.draw(st.sampled_from([None, -1, 0, 4096])),
                          elements=data.draw(st.sampled_from([None, -3, 128])),
                          seq=data.draw(st.sampled_from([None, 0, 1, -1]))))
    anyone = st.sampled_from(ids + [999])
    for _ in range(data.draw(st.integers(0, 6))):
        b.access(data.draw(anyone), data.draw(st.sampled_from(["hbm", "sbuf", "psum"])),
                 data.draw(st.sampled_from(["read", "write"])),
                 data.draw(st.sampled_from([-8, 0, 64, 10**12])),
                 data.draw(st.sampled_from([-1, 0, 64])),
                 data.draw(st.sampled_from([None, -1, 0, 120])),
                 data.draw(st.sampled_from([None, 0, 16, 200])))
    for _ in range(data.draw(st.integers(0, 5))):
        op = b.signal if data.draw(st.booleans()) else b.wait
        op(data.draw(anyone), data.draw(st.sampled_from([0, 1, -4])),
           data.draw(st.sampled_from([-2, 0, 1, 3])))
    trace = b.write(tmp_path_factory.mktemp("u") / "t", validate=False)
    try:
        found = find_bugs(trace, builtin_machine())
    except TracekitError:
        return
    assert all(isinstance(f.message, str) and f.message for f in found)


def test_checks_run_in_an_order_of_their_own_each_once() -> None:
    # find_bugs runs RUN_ORDER (the happens-before readers late, overlapping its thread) and
    # reports in CHECKS order (the goldens hold that): the same checks, each once, and the
    # race check before the checks that read its memory sweep.
    assert sorted(c.__name__ for c in RUN_ORDER) == sorted(c.__name__ for c in CHECKS)
    assert len(set(RUN_ORDER)) == len(RUN_ORDER)
    assert RUN_ORDER.index(check_races) < min(RUN_ORDER.index(check_reloads),
                                               RUN_ORDER.index(check_dead_writes))
