"""Bug signatures: each code on a tiny hand-built trace, the generator's injected faults found
with their ground-truth instruction ids, and clean traces without error findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import tracekit
from tracekit.analysis.signatures import Code, Severity, find_bugs
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
    assert found == {Code.OUT_OF_BOUNDS: [(a,), (c,)]}


def test_semaphore_overflow(tmp_path: Path) -> None:
    b = TraceBuilder("t")
    a = b.inst("dma.q0", "dma_load")
    c = b.inst("tensor", "matmul")
    b.signal(a, 0, 70_000)
    b.wait(c, 0, 70_000)
    assert _codes(b.write(tmp_path / "t")) == {Code.SEMAPHORE_OVERFLOW: [(a,)]}


@pytest.mark.parametrize("sample", [s.name for s in SAMPLES if not s.inject])
def test_clean_samples_have_no_findings(sample: str) -> None:
    assert find_bugs(tracekit.open_trace(SAMPLE_DIR / sample), builtin_machine()) == []


FAULT_CODES = {"deadlock": Code.DEADLOCK_WAIT, "sem-leak": Code.SEMAPHORE_LEAK,
               "timestamp-skew": Code.START_BEFORE_DEPENDENCY, "oob": Code.OUT_OF_BOUNDS,
               "missing-wait": Code.RACE_RAW, "stuck-engine": Code.ENGINE_STUCK,
               "slow-queue": Code.SLOW_ENGINE}
WORKLOADS = {"gemm": {"m": 384, "n": 512, "k": 384},
             "mlp": {"widths": (256, 384, 128), "batch": 256},
             "attention": {"seq": 256, "heads": 2, "head_dim": 64},
             "conv2d": {"n": 1, "c": 32, "h": 28, "w": 28, "k": 64},
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
    assert codes == {"deadlock-wait", "semaphore-leak"}
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


def test_detection_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Recall per (workload, fault) over two seeds, and error-severity false positives on the
    clean runs; printed for the closing note."""
    lines = ["workload    " + " ".join(f"{f:>14}" for f in FAULT_CODES) + "  clean FP"]
    total_hits = total = false_positives = 0
    for workload, params in sorted(WORKLOADS.items()):
        cells = []
        for fault, code in FAULT_CODES.items():
            hits = 0
            for seed in (3, 4):
                trace = generate(workload, tmp_path / f"{workload}-{fault}-{seed}",
                                 params=params, seed=seed, inject=[fault])
                hits += code in _codes(trace)
            cells.append(f"{hits}/2")
            total_hits += hits
            total += 2
        clean = generate(workload, tmp_path / f"{workload}-clean", params=params, seed=3)
        fp = [f for f in find_bugs(clean, builtin_machine()) if f.severity is Severity.ERROR]
        false_positives += len(fp)
        lines.append(f"{workload:<11} " + " ".join(f"{c:>14}" for c in cells) + f"  {len(fp)}")
    lines.append(f"recall {total_hits}/{total}, error-severity false positives on clean runs: "
                 f"{false_positives}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert total_hits == total and false_positives == 0
