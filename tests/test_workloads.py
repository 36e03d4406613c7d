"""The reference workload generator (tracekit.workloads): the arithmetic of the lowering, the
semaphore and engine semantics of the reference timing, memory sanity, validity,
determinism, fault injection with its ground truth, and errors (API and `tracekit generate`).

Every expected number is computed here from the shapes (tile counts, flops, bytes), never read
back from the library. Shapes are small so the whole module runs in a few seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner, Result

import tracekit
from tracekit.analysis.signatures import Code, Severity, find_bugs
from tracekit.cli.app import app
from tracekit.errors import TracekitError
from tracekit.replay.machine import builtin_machine
from tracekit.replay.run import replay
from tracekit.workloads.generate import WorkloadError, generate, plan
from tracekit.workloads.lowering import Tiling
from tracekit.workloads.params import (
    WORKLOADS,
    ParameterError,
    all_parameter_names,
    param_help,
    workload_params,
)
from tracekit.workloads.timing import ReferenceTiming

# --- machine constants (from the lowering's documentation) ---------------------------------

PARTITIONS = 128
SBUF_BYTES = 192 * 1024  # per partition
PSUM_BYTES = 16 * 1024  # per partition
ELEM = 2  # bf16
MAX_TM, MAX_TN, MAX_TK = 128, 512, 128
SEM_LATENCY = ReferenceTiming().sem_latency
SEED = 3

runner = CliRunner()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --- reading a generated bundle -------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """A bundle's tables collected, with the categorical columns as plain strings."""

    trace: tracekit.Trace
    inst: pl.DataFrame
    sems: pl.DataFrame
    mem: pl.DataFrame

    @property
    def extra(self) -> dict[str, Any]:
        return self.trace.manifest.extra["generator"]

    def faults(self) -> list[dict[str, Any]]:
        return self.extra["faults"]

    def of(self, opcode: str, layer: str | None = None) -> pl.DataFrame:
        rows = self.inst.filter(pl.col("opcode") == opcode)
        return rows if layer is None else rows.filter(pl.col("layer") == layer)

    def signals(self) -> pl.DataFrame:
        return self.sems.filter(pl.col("op") == "signal")

    def waits(self) -> pl.DataFrame:
        return self.sems.filter(pl.col("op") == "wait")

    def duration(self, inst: int) -> int:
        row = self.inst.row(inst, named=True)
        assert row["id"] == inst
        return row["end"] - row["start"]


def tables(trace: tracekit.Trace) -> Tables:
    reopened = tracekit.open_trace(trace.path)
    inst = reopened.instructions.collect().with_columns(
        pl.col("engine", "opcode", "layer").cast(pl.String))
    sems = reopened.semaphores.collect().with_columns(pl.col("op").cast(pl.String))
    mem = reopened.memory.collect().with_columns(pl.col("space", "access").cast(pl.String))
    assert inst["id"].to_list() == list(range(inst.height))
    return Tables(reopened, inst, sems, mem)


def gen(path: Path, workload: str, params: dict[str, Any], **kwargs: Any) -> Tables:
    return tables(generate(workload, path, params=params, **kwargs))


def file_bytes(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(bundle.iterdir())}


class SignalOracle:
    """Semaphore semantics, computed here: the changes of a semaphore (signals and resets to
    0) count in program order (instruction id order); a wait sees the signals after the last
    reset on an earlier instruction and before the next one (its "use"), and a wait for v is
    satisfied by the signal of its use that brings the count to v."""

    def __init__(self, t: Tables) -> None:
        changes = t.sems.filter(pl.col("op") != "wait").with_row_index().sort("inst", "index")
        assert set(changes["op"].to_list()) <= {"signal", "set"}
        assert (changes.filter(pl.col("op") == "set")["value"] == 0).all()
        self.by_sem: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for (sem,), group in changes.group_by(["sem"], maintain_order=True):
            self.by_sem[int(sem)] = (group["inst"].to_numpy(),
                                     (group["op"] == "set").to_numpy(),
                                     group["value"].to_numpy())

    def total(self, sem: int) -> int:
        """Everything ever signalled on `sem`."""
        if sem not in self.by_sem:
            return 0
        _, is_set, values = self.by_sem[sem]
        return int(values[~is_set].sum())

    def use(self, sem: int, inst: int) -> tuple[np.ndarray, np.ndarray]:
        """The signals a wait of instruction `inst` on `sem` counts, and the count after each."""
        if sem not in self.by_sem:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        insts, is_set, values = self.by_sem[sem]
        resets = np.flatnonzero(is_set)
        lo = max([r + 1 for r in resets if insts[r] < inst], default=0)
        hi = min([r for r in resets if r >= lo], default=insts.size)
        return insts[lo:hi], np.cumsum(values[lo:hi])

    def satisfier(self, sem: int, value: int, inst: int) -> int | None:
        insts, cum = self.use(sem, inst)
        hit = np.flatnonzero(cum >= value)
        return int(insts[hit[0]]) if hit.size else None


def overlaps(a_lo: int, a_hi: int, b_lo: int, b_hi: int) -> bool:
    return a_lo < b_hi and b_lo < a_hi


def sbuf_rows_overlap(r: dict[str, Any], s: dict[str, Any]) -> bool:
    return (overlaps(r["addr"], r["addr"] + r["size"], s["addr"], s["addr"] + s["size"])
            and overlaps(r["partition"], r["partition"] + r["partitions"],
                         s["partition"], s["partition"] + s["partitions"]))


# --- expected lowering arithmetic -----------------------------------------------------------


@dataclass(frozen=True)
class GemmPlan:
    """What the lowering of C[m, n] = A[m, k] @ B[k, n] must emit, from the shapes alone."""

    m: int
    n: int
    k: int
    tm: int = 128
    tn: int = 512
    tk: int = 128

    def __post_init__(self) -> None:  # tiles are clamped to the machine
        object.__setattr__(self, "tm", min(self.tm, MAX_TM))
        object.__setattr__(self, "tn", min(self.tn, MAX_TN))
        object.__setattr__(self, "tk", min(self.tk, MAX_TK))

    @property
    def grid(self) -> tuple[int, int, int]:
        return cdiv(self.m, self.tm), cdiv(self.n, self.tn), cdiv(self.k, self.tk)

    @property
    def matmuls(self) -> int:
        mt, nt, kt = self.grid
        return mt * nt * kt

    @property
    def out_tiles(self) -> int:
        mt, nt, _ = self.grid
        return mt * nt

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def load_bytes(self) -> int:
        mt, nt, _ = self.grid
        return (nt * self.m * self.k + mt * self.k * self.n) * ELEM

    @property
    def a_bytes(self) -> int:
        return self.grid[1] * self.m * self.k * ELEM

    @property
    def b_bytes(self) -> int:
        return self.grid[0] * self.k * self.n * ELEM

    @property
    def store_bytes(self) -> int:
        return self.m * self.n * ELEM

    def _sizes(self, total: int, tile: int) -> list[int]:
        return [min(tile, total - i * tile) for i in range(cdiv(total, tile))]

    def matmul_flops(self) -> list[int]:
        """Per matmul: 2 * rows * cols * depth of its (edge-trimmed) tile."""
        return sorted(2 * sm * sn * sk for sm, sn, sk in itertools.product(
            self._sizes(self.m, self.tm), self._sizes(self.n, self.tn),
            self._sizes(self.k, self.tk)))

    def load_sizes(self) -> list[int]:
        """Per load: an A tile (sk x sm) and a B tile (sk x sn) for every (mi, ni, ki)."""
        out = []
        for sm, sn, sk in itertools.product(self._sizes(self.m, self.tm),
                                            self._sizes(self.n, self.tn),
                                            self._sizes(self.k, self.tk)):
            out += [sk * sm * ELEM, sk * sn * ELEM]
        return sorted(out)

    def store_sizes(self) -> list[int]:
        return sorted(sm * sn * ELEM for sm, sn in itertools.product(
            self._sizes(self.m, self.tm), self._sizes(self.n, self.tn)))


def check_gemm(t: Tables, plan: GemmPlan, layer: str, evacuation: str,
               a_opcode: str = "dma_load", activation: str = "relu") -> None:
    """`evacuation` is "copy" (PSUM -> SBUF on the vector engine) or "activation" (on the scalar
    engine; its opcode is "activation" or the activation function's name)."""
    layer_rows = t.inst.filter(pl.col("layer") == layer)
    mm = t.of("matmul", layer)
    assert mm.height == plan.matmuls
    assert (mm["engine"] == "tensor").all()
    assert mm["flops"].sum() == plan.flops
    assert sorted(mm["flops"].to_list()) == plan.matmul_flops()
    # Everything on vector/scalar in a GEMM layer is an evacuation, one per output tile.
    ev = layer_rows.filter(pl.col("engine").is_in(["vector", "scalar"]))
    assert ev.height == plan.out_tiles
    if evacuation == "copy":
        assert set(ev["opcode"].to_list()) == {"copy"}
        assert set(ev["engine"].to_list()) == {"vector"}
    else:
        assert set(ev["opcode"].to_list()) <= {"activation", activation}
        assert set(ev["engine"].to_list()) == {"scalar"}
    assert sorted(ev["elements"].to_list()) == sorted(x // ELEM for x in plan.store_sizes())
    stores = t.of("dma_store", layer)
    assert stores.height == plan.out_tiles
    assert stores["bytes"].sum() == plan.store_bytes
    assert sorted(stores["bytes"].to_list()) == plan.store_sizes()
    loads = pl.concat([t.of("dma_load", layer), t.of(a_opcode, layer)]).unique("id")
    assert loads.height == 2 * plan.matmuls
    assert loads["bytes"].sum() == plan.load_bytes
    assert sorted(loads["bytes"].to_list()) == plan.load_sizes()
    assert all(e.startswith("dma.q") for e in pl.concat([loads, stores])["engine"].to_list())
    assert layer_rows.height == mm.height + ev.height + stores.height + loads.height


# --- 1. lowering arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize(("tiles", "expected_matmuls"), [
    ((128, 512, 128), 2 * 2 * 3),
    ((64, 256, 64), 4 * 3 * 5),
    ((256, 1024, 256), 2 * 2 * 3),  # clamped to 128 / 512 / 128
], ids=["default", "64-256-64", "clamped"])
def test_gemm_lowering_exact(tmp_path: Path, tiles: tuple[int, int, int],
                             expected_matmuls: int) -> None:
    m, n, k = 200, 700, 300
    tm, tn, tk = tiles
    t = gen(tmp_path / "g", "gemm", {"m": m, "n": n, "k": k},
            tiling=Tiling(tile_m=tm, tile_n=tn, tile_k=tk), untimed=True)
    plan = GemmPlan(m, n, k, tm, tn, tk)
    assert plan.matmuls == expected_matmuls
    assert plan.flops == 84_000_000
    check_gemm(t, plan, "gemm", "copy")
    # Literal values for the default tiling, as a check on the plan itself.
    if tiles == (128, 512, 128):
        assert t.of("dma_load")["bytes"].sum() == (2 * 200 * 300 + 2 * 300 * 700) * 2
        assert t.of("dma_store")["bytes"].sum() == 280_000
        assert t.of("copy").height == 4  # a GEMM evacuates with a vector copy
    assert t.inst.height == 2 * plan.matmuls + plan.matmuls + 2 * plan.out_tiles
    assert t.extra["params"] == {"m": m, "n": n, "k": k}
    assert t.extra["tiling"]["tile_m"] == tm


def test_mlp_lowering_exact(tmp_path: Path) -> None:
    widths, batch = (96, 160, 64), 40
    t = gen(tmp_path / "mlp", "mlp", {"widths": widths, "batch": batch}, untimed=True)
    expected_total = sum(2 * batch * a * b for a, b in itertools.pairwise(widths))
    assert expected_total == 2 * 40 * 96 * 160 + 2 * 40 * 160 * 64
    assert t.of("matmul")["flops"].sum() == expected_total
    assert set(t.inst["layer"].unique().to_list()) == {"fc1", "fc2"}
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        layer = f"fc{i + 1}"
        assert t.of("matmul", layer)["flops"].sum() == 2 * batch * w_in * w_out
        last = i == len(widths) - 2
        check_gemm(t, GemmPlan(batch, w_out, w_in), layer, "copy" if last else "activation")
    assert t.extra["params"]["widths"] == list(widths)


def test_mlp_three_layers_flops_and_order(tmp_path: Path) -> None:
    widths, batch = (64, 300, 200, 32), 150
    t = gen(tmp_path / "mlp", "mlp", {"widths": widths, "batch": batch,
                                      "activation": "gelu"}, untimed=True)
    layers = ["fc1", "fc2", "fc3"]
    for layer, (w_in, w_out) in zip(layers, itertools.pairwise(widths), strict=True):
        check_gemm(t, GemmPlan(batch, w_out, w_in), layer,
                   "copy" if layer == "fc3" else "activation", activation="gelu")
    # Program order follows the layers: every instruction of fc(i) precedes fc(i+1).
    spans = t.inst.group_by("layer").agg(lo=pl.col("id").min(), hi=pl.col("id").max())
    spans = {r["layer"]: (r["lo"], r["hi"]) for r in spans.iter_rows(named=True)}
    assert spans["fc1"][1] < spans["fc2"][0] and spans["fc2"][1] < spans["fc3"][0]


@pytest.mark.parametrize("shape", [
    {"batch": 1, "c": 8, "h": 10, "w": 10, "filters": 16, "r": 3, "s": 3, "stride": 1},
    {"batch": 1, "c": 8, "h": 10, "w": 10, "filters": 16, "r": 3, "s": 3, "stride": 2},
    {"batch": 2, "c": 16, "h": 20, "w": 20, "filters": 24, "r": 3, "s": 2, "stride": 2},
], ids=["stride1", "stride2", "multi-tile"])
def test_conv2d_lowering_exact(tmp_path: Path, shape: dict[str, int]) -> None:
    t = gen(tmp_path / "conv", "conv2d", shape, untimed=True)
    ho = (shape["h"] - shape["r"]) // shape["stride"] + 1
    wo = (shape["w"] - shape["s"]) // shape["stride"] + 1
    rows, depth = shape["batch"] * ho * wo, shape["c"] * shape["r"] * shape["s"]
    filters = shape["filters"]
    plan = GemmPlan(rows, filters, depth)
    assert t.of("matmul")["flops"].sum() == 2 * (shape["batch"] * ho * wo) * depth * filters
    check_gemm(t, plan, "conv", "activation", a_opcode="dma_im2col")
    im2col = t.of("dma_im2col")
    assert im2col.height == plan.matmuls  # every A tile is an im2col gather
    assert im2col["bytes"].sum() == plan.a_bytes
    assert t.of("dma_load")["bytes"].sum() == plan.b_bytes  # only the weights


def test_attention_lowering_exact(tmp_path: Path) -> None:
    seq, heads, hd = 96, 2, 32
    t = gen(tmp_path / "attn", "attention", {"seq": seq, "heads": heads, "head_dim": hd},
            untimed=True)
    assert t.of("matmul")["flops"].sum() == heads * (2 * seq * seq * hd + 2 * seq * hd * seq)
    row_tiles = cdiv(seq, PARTITIONS)
    steps = [("reduce_max", "vector"), ("exp", "scalar"), ("reduce_sum", "vector"),
             ("scale", "vector")]
    for h in range(heads):
        check_gemm(t, GemmPlan(seq, seq, hd), f"attn.h{h}.qk", "copy")
        check_gemm(t, GemmPlan(seq, hd, seq), f"attn.h{h}.pv", "copy")
        softmax = f"attn.h{h}.softmax"
        for opcode, engine in steps:
            rows = t.of(opcode, softmax)
            assert rows.height == row_tiles, (softmax, opcode)
            assert (rows["engine"] == engine).all()
            assert rows["flops"].sum() == seq * seq
        # Each row tile runs max -> exp -> sum -> scale, in program order.
        ids = [t.of(op, softmax)["id"].to_list() for op, _ in steps]
        for chain in zip(*ids, strict=True):
            assert list(chain) == sorted(chain)
        assert t.of("dma_load", softmax)["bytes"].sum() == seq * seq * ELEM
        assert t.of("dma_store", softmax)["bytes"].sum() == seq * seq * ELEM
        # qk -> softmax -> pv in program order.
        by_layer = t.inst.filter(pl.col("layer").str.starts_with(f"attn.h{h}."))
        first = {lay: by_layer.filter(pl.col("layer") == lay)["id"].min()
                 for lay in (f"attn.h{h}.qk", softmax, f"attn.h{h}.pv")}
        assert first[f"attn.h{h}.qk"] < first[softmax] < first[f"attn.h{h}.pv"]


def test_layernorm_lowering_exact(tmp_path: Path) -> None:
    rows, hidden = 300, 64
    t = gen(tmp_path / "ln", "layernorm", {"rows": rows, "hidden": hidden}, untimed=True)
    tiles = cdiv(rows, PARTITIONS)
    assert tiles == 3
    per_tile = sorted([128 * hidden * ELEM] * 2 + [(rows - 256) * hidden * ELEM])
    loads, stores = t.of("dma_load"), t.of("dma_store")
    assert loads.height == stores.height == tiles
    assert loads["bytes"].sum() == stores["bytes"].sum() == rows * hidden * ELEM
    assert sorted(loads["bytes"].to_list()) == sorted(stores["bytes"].to_list()) == per_tile
    for opcode in ("bn_stats", "bn_aggr", "normalize"):
        assert t.of(opcode).height == tiles
        assert t.of(opcode)["elements"].sum() == rows * hidden
    assert t.of("matmul").height == 0
    assert t.inst.height == tiles * 5


# --- clean traces shared by the semantic tests ----------------------------------------------

CLEAN: dict[str, tuple[str, dict[str, Any], Tiling]] = {
    "gemm": ("gemm", {"m": 200, "n": 700, "k": 300}, Tiling()),
    "gemm-small-tiles-1buf-2q": ("gemm", {"m": 200, "n": 300, "k": 200},
                                 Tiling(tile_m=64, tile_n=128, tile_k=64, dma_queues=2,
                                        double_buffer=False)),
    "mlp": ("mlp", {"widths": (96, 160, 64), "batch": 40}, Tiling()),
    "attention": ("attention", {"seq": 96, "heads": 2, "head_dim": 32}, Tiling()),
    "conv2d": ("conv2d", {"batch": 1, "c": 8, "h": 10, "w": 10, "filters": 16, "r": 3,
                          "s": 3, "stride": 1}, Tiling()),
    "layernorm": ("layernorm", {"rows": 300, "hidden": 64}, Tiling()),
    # Epochs of a few steps, so that small traces reset their semaphores as long ones do.
    "gemm-resets": ("gemm", {"m": 200, "n": 700, "k": 300}, Tiling(epoch_steps=2)),
    "attention-resets": ("attention", {"seq": 256, "heads": 2, "head_dim": 32},
                         Tiling(epoch_steps=1)),
    "layernorm-resets": ("layernorm", {"rows": 2048, "hidden": 64},
                         Tiling(epoch_steps=3, dma_queues=2)),
}
RESETS = [case for case in CLEAN if case.endswith("-resets")]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Tables]:
    """(case, timed) -> the clean trace, generated once per module with seed 1."""
    root = tmp_path_factory.mktemp("clean")
    out = {}
    for case, (workload, params, tiling) in CLEAN.items():
        for timed in (True, False):
            path = root / f"{case}-{'timed' if timed else 'untimed'}"
            out[case, timed] = gen(path, workload, params, tiling=tiling, seed=1,
                                   untimed=not timed)
    return out


# --- 2. semaphores and engines --------------------------------------------------------------


@pytest.mark.parametrize("timed", [True, False], ids=["timed", "untimed"])
@pytest.mark.parametrize("case", list(CLEAN))
def test_every_wait_is_satisfiable(clean: dict[tuple[str, bool], Tables], case: str,
                                   timed: bool) -> None:
    t = clean[case, timed]
    totals = t.signals().group_by("sem").agg(total=pl.col("value").sum())
    waits = t.waits().join(totals, on="sem", how="left").with_columns(
        pl.col("total").fill_null(0))
    assert waits.height > 0
    assert waits.filter(pl.col("value") > pl.col("total")).height == 0, waits
    # Within the signals a wait counts (those since the last reset before it).
    oracle = SignalOracle(t)
    for w in waits.iter_rows(named=True):
        assert oracle.satisfier(w["sem"], w["value"], w["inst"]) is not None, w
    assert (t.sems.filter(pl.col("op") != "set")["value"] > 0).all()


@pytest.mark.parametrize("case", list(CLEAN))
def test_waits_start_after_their_satisfying_signal(clean: dict[tuple[str, bool], Tables],
                                                   case: str) -> None:
    t = clean[case, True]
    oracle = SignalOracle(t)
    start = t.inst["start"].to_numpy()
    end = t.inst["end"].to_numpy()
    checked = 0
    for w in t.waits().iter_rows(named=True):
        src = oracle.satisfier(w["sem"], w["value"], w["inst"])
        assert src is not None
        assert src != w["inst"]
        assert start[w["inst"]] >= end[src] + SEM_LATENCY, (w, src)
        # The count on the semaphore, by the time the waiter starts, has really reached v:
        # the signals of its use that ended (plus the latency) before it add up to at least v.
        insts, cum = oracle.use(w["sem"], w["inst"])
        values = np.diff(np.concatenate([[0], cum]))
        arrived = values[end[insts] + SEM_LATENCY <= start[w["inst"]]].sum()
        assert arrived >= w["value"], w
        checked += 1
    assert checked == t.waits().height > 0


@pytest.mark.parametrize("case", list(CLEAN))
def test_engines_run_in_order(clean: dict[tuple[str, bool], Tables], case: str) -> None:
    t = clean[case, True]
    assert t.inst["start"].null_count() == 0 and t.inst["end"].null_count() == 0
    assert (t.inst["end"] >= t.inst["start"]).all()
    for (engine,), rows in t.inst.group_by(["engine"]):
        rows = rows.sort("seq")
        assert rows["seq"].to_list() == list(range(rows.height)), engine
        assert rows["id"].is_sorted(), engine  # seq follows program order
        start, end = rows["start"].to_numpy(), rows["end"].to_numpy()
        assert (start[1:] >= end[:-1]).all(), engine


@pytest.mark.parametrize("case", list(CLEAN))
def test_each_semaphore_is_signalled_from_one_engine(clean: dict[tuple[str, bool], Tables],
                                                     case: str) -> None:
    """Then its signals arrive in that engine's queue order in every execution. A semaphore
    that is reset is reset by the one engine that waits on it."""
    t = clean[case, False]
    rows = t.sems.join(t.inst.select("id", "engine"), left_on="inst", right_on="id")
    per_sem = rows.group_by("sem").agg(
        signallers=pl.col("engine").filter(pl.col("op") == "signal").n_unique(),
        resetters=pl.col("engine").filter(pl.col("op") == "set").unique(),
        waiters=pl.col("engine").filter(pl.col("op") == "wait").unique())
    assert (per_sem["signallers"] == 1).all(), per_sem.filter(pl.col("signallers") != 1)
    for row in per_sem.filter(pl.col("resetters").list.len() > 0).iter_rows(named=True):
        assert row["resetters"] == row["waiters"] and len(row["waiters"]) == 1, row
    assert set(rows["op"].to_list()) <= {"wait", "signal", "set"}
    assert (rows.filter(pl.col("op") != "wait")["value"] >= 0).all()


@pytest.mark.parametrize("case", RESETS)
def test_long_traces_reset_their_semaphores(clean: dict[tuple[str, bool], Tables],
                                            case: str) -> None:
    """Every reset sets a semaphore to 0 after its engine's last wait on the old signals, and
    the first signal and the first wait that count after it wait for it to land."""
    t = clean[case, False]
    sets = t.sems.filter(pl.col("op") == "set")
    assert sets.height > 0
    oracle = SignalOracle(t)
    for row in sets.iter_rows(named=True):
        sem, x = row["sem"], row["inst"]
        before, _ = oracle.use(sem, x)  # the signals the reset discards
        after, _ = oracle.use(sem, x + 1)  # the signals counted after it
        waits = t.waits().filter(pl.col("sem") == sem)
        previous = sets.filter((pl.col("sem") == sem) & (pl.col("inst") < x))["inst"].max()
        old = waits.filter(pl.col("inst").is_between((previous or -1) + 1, x))
        new = waits.filter(pl.col("inst") > x)
        # The old signals were all waited for, by x or before it on its engine.
        assert old.height and before.size and old["value"].max() == before.size, row
        if after.size == 0:
            continue
        # The new ones: signal and wait only after x, ordered after it through a semaphore
        # that x signals (its reset signal), unless on x's own engine.
        first_signal, first_wait = int(after[0]), int(new["inst"].min())
        assert x < first_signal < first_wait
        x_signals = set(t.signals().filter(pl.col("inst") == x)["sem"].to_list())
        for inst in (first_signal, first_wait):
            if inst == first_signal and t.inst["engine"][inst] == t.inst["engine"][x]:
                continue
            waited = wait_rows(t, inst)
            assert any(s in x_signals and oracle.satisfier(s, v, inst) == x
                       for s, v in waited), (row, inst, waited)


def test_resets_keep_counts_inside_the_counter(tmp_path: Path) -> None:
    """A GEMM of 1,024 k steps loads 512 tiles on each DMA queue: past an 8-bit counter if
    counts only grow, not with epochs of 64 steps."""
    machine = dataclasses.replace(builtin_machine(), semaphore_bits=8)
    params = {"m": 2048, "n": 1024, "k": 4096}
    assert GemmPlan(**params).matmuls == 1024
    highest = {}
    for epoch in (64, 10**6):
        trace = generate("gemm", tmp_path / str(epoch), params=params, seed=SEED,
                         tiling=Tiling(epoch_steps=epoch))
        found = {f.code for f in find_bugs(trace, machine) if f.severity is not Severity.INFO}
        assert (Code.SEMAPHORE_OVERFLOW in found) is (epoch > 1024), found
        if epoch == 64:
            assert found == set()
        highest[epoch] = int(replay(trace, machine).released.log_count.max())
    assert highest[10**6] == 512
    assert highest[64] <= 2 * 64  # at most two loads per step on one queue


@pytest.mark.parametrize("case", list(CLEAN))
def test_waits_hold_in_every_order(clean: dict[tuple[str, bool], Tables], case: str) -> None:
    """The model replay, with durations scaled at random (other legal orders of execution),
    runs every instruction and starts each waiting one no earlier than the signal its wait
    stands for (the oracle's) has landed: no wait is released by another signal, or by a
    count a reset has not cleared yet."""
    t = clean[case, False]
    oracle = SignalOracle(t)
    waits = t.waits()
    producers = np.array([oracle.satisfier(s, v, i) for s, v, i in zip(
        waits["sem"], waits["value"], waits["inst"], strict=True)])
    consumers = waits["inst"].to_numpy()
    machine = builtin_machine()
    for seed in range(4):
        factors = (np.random.default_rng(seed).choice([0.05, 1.0, 20.0], t.inst.height)
                   if seed else np.ones(t.inst.height))  # per instruction, in id order
        result = replay(t.trace, machine, scale=lambda _frame, f=factors: f)
        timeline = result.timeline.sort("id")
        start, end = timeline["start"].to_numpy(), timeline["end"].to_numpy()
        early = start[consumers] < end[producers] + machine.semaphore_latency
        assert not early.any(), (seed, consumers[early][:5], producers[early][:5])


# --- 3. memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CLEAN))
def test_memory_rows_fit_the_machine(clean: dict[tuple[str, bool], Tables], case: str) -> None:
    t = clean[case, True]
    mem = t.mem
    assert set(mem["inst"].to_list()) <= set(t.inst["id"].to_list())
    assert (mem["size"] > 0).all() and (mem["addr"] >= 0).all()
    for space, capacity in (("sbuf", SBUF_BYTES), ("psum", PSUM_BYTES)):
        rows = mem.filter(pl.col("space") == space)
        assert rows["partition"].null_count() == 0 and rows["partitions"].null_count() == 0
        assert (rows["partition"] >= 0).all() and (rows["partitions"] >= 1).all()
        assert (rows["partition"] + rows["partitions"] <= PARTITIONS).all()
        assert (rows["addr"] + rows["size"] <= capacity).all(), rows.filter(
            pl.col("addr") + pl.col("size") > capacity)
    hbm = mem.filter(pl.col("space") == "hbm")
    assert hbm.height > 0
    assert hbm["partition"].null_count() == hbm.height
    assert hbm["partitions"].null_count() == hbm.height
    # Every DMA touches HBM once and on-chip memory once; compute never touches HBM.
    dma = t.inst.filter(pl.col("engine").str.starts_with("dma."))["id"]
    assert set(hbm["inst"].to_list()) == set(dma.to_list())
    # Matmuls write PSUM; their inputs come from SBUF.
    mm = t.of("matmul")["id"]
    if mm.len():
        mm_rows = mem.filter(pl.col("inst").is_in(mm.implode()))
        assert set(mm_rows.filter(pl.col("access") == "write")["space"].to_list()) == {"psum"}
        assert set(mm_rows.filter(pl.col("access") == "read")["space"].to_list()) == {"sbuf"}


def _hbm_ranges(t: Tables, opcode: str, pc: int | None = None) -> list[tuple[int, int]]:
    rows = t.inst.filter(pl.col("opcode") == opcode)
    if pc is not None:
        rows = rows.filter(pl.col("pc") == pc)
    mem = t.mem.filter((pl.col("space") == "hbm") & pl.col("inst").is_in(rows["id"].implode()))
    return [(a, a + s) for a, s in zip(mem["addr"], mem["size"], strict=True)]


def _disjoint(xs: Iterable[tuple[int, int]], ys: Iterable[tuple[int, int]]) -> bool:
    ys = list(ys)
    return not any(overlaps(a, b, c, d) for a, b in xs for c, d in ys)


@pytest.mark.parametrize(("m", "n", "k"), [(256, 512, 256), (200, 700, 300), (64, 64, 300)],
                         ids=["tile-multiples", "ragged", "narrow"])
def test_gemm_hbm_tensors_do_not_overlap(tmp_path: Path, m: int, n: int, k: int) -> None:
    """A, B and C are three tensors: the HBM bytes the A loads read, the B loads read and the
    stores write are pairwise disjoint, and the reads of A (B) cover exactly m*k (k*n) elements
    once each."""
    t = gen(tmp_path / "g", "gemm", {"m": m, "n": n, "k": k}, untimed=True)
    # In a gemm the A loads carry pc 1 and the B loads pc 2 (lowering.py: pc_base + 1 / + 2).
    a, b = _hbm_ranges(t, "dma_load", 1), _hbm_ranges(t, "dma_load", 2)
    c = _hbm_ranges(t, "dma_store")
    assert len(a) == len(b) == GemmPlan(m, n, k).matmuls
    assert sum(hi - lo for lo, hi in set(a)) == m * k * ELEM
    assert sum(hi - lo for lo, hi in set(b)) == k * n * ELEM
    assert _disjoint(a, b), "A tile reads run into B"
    assert _disjoint(b, c), "B tile reads run into C"
    assert _disjoint(a, c), "A tile reads run into C"


def test_conv2d_im2col_reads_stay_inside_the_image(tmp_path: Path) -> None:
    shape = {"batch": 1, "c": 8, "h": 10, "w": 10, "filters": 16, "r": 3, "s": 3, "stride": 1}
    t = gen(tmp_path / "conv", "conv2d", shape, untimed=True)
    image = shape["batch"] * shape["c"] * shape["h"] * shape["w"] * ELEM
    reads = _hbm_ranges(t, "dma_im2col")
    base = min(lo for lo, _ in reads)  # the first gather starts at the image's first byte
    assert all(base <= lo and hi <= base + image for lo, hi in reads), (reads, base, image)
    assert _disjoint(reads, _hbm_ranges(t, "dma_load")), "im2col reads run into the weights"
    assert _disjoint(reads, _hbm_ranges(t, "dma_store")), "im2col reads run into the output"


def test_wide_rows_fit_sbuf_or_are_rejected(tmp_path: Path) -> None:
    """A layer-norm row of 50,000 bf16 values (100,000 bytes per partition, two buffers) does
    not fit a 192 KiB partition: the generator must tile it or refuse, not emit a clean trace
    with SBUF accesses past the end of the partition."""
    try:
        t = gen(tmp_path / "ln", "layernorm", {"rows": 256, "hidden": 50_000}, untimed=True)
    except WorkloadError:
        return
    sbuf = t.mem.filter(pl.col("space") == "sbuf")
    past = sbuf.filter(pl.col("addr") + pl.col("size") > SBUF_BYTES)
    assert past.height == 0, past.select("inst", "access", "addr", "size").head(3).to_dicts()


# --- 4. validity ----------------------------------------------------------------------------


@pytest.mark.parametrize("timed", [True, False], ids=["timed", "untimed"])
@pytest.mark.parametrize("case", list(CLEAN))
def test_clean_traces_validate(clean: dict[tuple[str, bool], Tables], case: str,
                               timed: bool) -> None:
    t = clean[case, timed]
    report = tracekit.validate(t.trace.path)
    assert report.findings == ()
    assert report.ok(strict=True)
    nulls = t.inst["start"].null_count(), t.inst["end"].null_count()
    assert nulls == ((0, 0) if timed else (t.inst.height, t.inst.height))
    workload, params, tiling = CLEAN[case]
    extra = t.extra
    assert extra["workload"] == workload
    assert extra["seed"] == 1
    assert extra["faults"] == []
    assert extra["tiling"]["dma_queues"] == tiling.dma_queues
    assert extra["tiling"]["double_buffer"] is tiling.double_buffer
    assert (extra["timing"] is None) is (not timed)
    if timed:
        assert extra["timing"]["parameters"]["sem_latency"] == SEM_LATENCY
    for key, value in params.items():
        assert extra["params"][key] == (list(value) if isinstance(value, tuple) else value)
    assert t.trace.manifest.tables["instructions"].rows == t.inst.height


# --- 5. determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("untimed", [False, True], ids=["timed", "untimed"])
def test_same_arguments_give_identical_bytes(tmp_path: Path, untimed: bool) -> None:
    args = {"params": {"widths": (96, 160, 64), "batch": 40}, "seed": 7, "untimed": untimed}
    generate("mlp", tmp_path / "a", **args)
    generate("mlp", tmp_path / "b", **args)
    first = file_bytes(tmp_path / "a")
    assert set(first) >= {"manifest.json", "instructions.parquet", "semaphores.parquet",
                          "memory.parquet"}
    assert file_bytes(tmp_path / "b") == first
    # Regenerating over the same path gives the same bytes again.
    generate("mlp", tmp_path / "a", overwrite=True, **args)
    assert file_bytes(tmp_path / "a") == first


def test_seed_changes_timing_only(tmp_path: Path) -> None:
    params = {"m": 200, "n": 700, "k": 300}
    a = gen(tmp_path / "a", "gemm", params, seed=1)
    b = gen(tmp_path / "b", "gemm", params, seed=2)
    fa, fb = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert fa["instructions.parquet"] != fb["instructions.parquet"]
    assert fa["semaphores.parquet"] == fb["semaphores.parquet"]
    assert fa["memory.parquet"] == fb["memory.parquet"]
    assert a.inst.height == b.inst.height
    assert a.inst.drop("start", "end").equals(b.inst.drop("start", "end"))
    assert not a.inst["end"].equals(b.inst["end"])


# --- 6. faults ------------------------------------------------------------------------------

Shape = tuple[str, dict[str, Any], Tiling]

FAULT_SHAPES: dict[str, Shape] = {
    # 6 steps: the A and B loads of a step go to different DMA queues.
    "gemm": ("gemm", {"m": 200, "n": 300, "k": 300}, Tiling()),
    # 12 steps (a multiple of the 4 queues): A and B of a step share a queue.
    "gemm-12steps": ("gemm", {"m": 200, "n": 700, "k": 300}, Tiling()),
    # One k step per output tile: every matmul starts a tile and also waits for a PSUM bank.
    "gemm-kt1": ("gemm", {"m": 512, "n": 64, "k": 64}, Tiling(tile_m=64)),
    "mlp": ("mlp", {"widths": (96, 160, 64), "batch": 40}, Tiling()),
    "attention": ("attention", {"seq": 96, "heads": 2, "head_dim": 32}, Tiling()),
    # Epochs of two steps: semaphores are reset along the way.
    "gemm-resets": ("gemm", {"m": 200, "n": 700, "k": 300}, Tiling(epoch_steps=2)),
}
# Large transfers, so the 4x bandwidth cut dominates the fixed descriptor cost.
SLOW_SHAPES: dict[str, Shape] = {
    "gemm": ("gemm", {"m": 256, "n": 512, "k": 256}, Tiling()),
    "mlp": ("mlp", {"widths": (128, 512, 128), "batch": 128}, Tiling()),
}


def faulted_and_clean(tmp_path: Path, shape: Shape,
                      inject: list[str]) -> tuple[Tables, Tables, list[dict[str, Any]]]:
    workload, params, tiling = shape
    faulted = gen(tmp_path / "faulted", workload, params, tiling=tiling, seed=SEED,
                  inject=inject)
    base = gen(tmp_path / "clean", workload, params, tiling=tiling, seed=SEED)
    records = faulted.faults()
    assert [r["kind"] for r in records] == inject
    assert json.loads(json.dumps(records)) == records  # plain JSON in the manifest
    return faulted, base, records


def wait_rows(t: Tables, inst: int) -> set[tuple[int, int]]:
    rows = t.waits().filter(pl.col("inst") == inst)
    return set(zip(rows["sem"].to_list(), rows["value"].to_list(), strict=True))


def mem_rows(t: Tables, inst: int) -> list[dict[str, Any]]:
    return t.mem.filter(pl.col("inst") == inst).drop("inst").to_dicts()


def check_missing_wait(faulted: Tables, base: Tables, rec: dict[str, Any]) -> None:
    consumer, producer, sem, value = rec["consumer"], rec["producer"], rec["sem"], rec["value"]
    assert rec["instructions"] == [producer, consumer]
    assert faulted.inst["opcode"][consumer] == "matmul"
    # The dropped wait is a data wait: the producer is a load feeding the consumer.
    assert faulted.inst["opcode"][producer] in ("dma_load", "dma_im2col"), (
        f"producer {producer} is a {faulted.inst['opcode'][producer]}, not a load")
    # The wait existed in the clean program and is gone from the faulted one.
    assert (sem, value) in wait_rows(base, consumer)
    assert (sem, value) not in wait_rows(faulted, consumer)
    assert faulted.waits().height == base.waits().height - 1
    # The recorded producer is the instruction whose signal the dropped wait stood for.
    assert SignalOracle(faulted).satisfier(sem, value, consumer) == producer
    # The dropped synchronisation is really gone: no other wait of the consumer on the same
    # semaphore for a count >= value (which would still order it after the producer).
    still = [(s, v) for s, v in wait_rows(faulted, consumer) if s == sem and v >= value]
    assert still == [], f"missing-wait is masked by the consumer's wait(s) {still}"
    # A real race: the producer writes SBUF bytes the consumer reads.
    writes = [r for r in mem_rows(faulted, producer)
              if r["space"] == "sbuf" and r["access"] == "write"]
    reads = [r for r in mem_rows(faulted, consumer)
             if r["space"] == "sbuf" and r["access"] == "read"]
    assert any(sbuf_rows_overlap(w, r) for w in writes for r in reads)
    # The recorded memory of both matches memory.parquet.
    key = ("space", "access", "addr", "size", "partition", "partitions")

    def as_set(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {tuple(r[k] for k in key) for r in rows}

    assert as_set(rec["producer_memory"]) == as_set(mem_rows(faulted, producer))
    assert as_set(rec["consumer_memory"]) == as_set(mem_rows(faulted, consumer))


@pytest.mark.parametrize("case", ["gemm", "gemm-12steps", "gemm-kt1", "mlp", "attention",
                                  "gemm-resets"])
def test_fault_missing_wait(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["missing-wait"])
    check_missing_wait(faulted, base, rec)
    assert tracekit.validate(faulted.trace.path).findings == ()


@pytest.mark.parametrize("case", ["gemm", "mlp", "gemm-resets"])
def test_fault_deadlock(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["deadlock"])
    (inst,) = rec["instructions"]
    sem, value = rec["sem"], rec["value"]
    assert (sem, value) in wait_rows(faulted, inst)
    assert value > SignalOracle(faulted).total(sem)
    row = faulted.inst.row(inst, named=True)
    assert rec["engine"] == row["engine"]
    assert row["start"] is None and row["end"] is None
    # Its engine is blocked from there on; the instructions before it on any engine ran.
    later = faulted.inst.filter((pl.col("engine") == row["engine"]) & (pl.col("seq") >= row["seq"]))
    assert later["start"].null_count() == later.height
    ran = faulted.inst.filter(pl.col("start").is_not_null())
    assert 0 < ran.height < faulted.inst.height
    assert faulted.inst.filter(pl.col("id") < inst)["start"].null_count() == 0
    # The same instructions ran identically to the clean run up to the blocked one.
    assert faulted.inst.head(inst).equals(base.inst.head(inst))
    report = tracekit.validate(faulted.trace.path)
    assert report.ok()
    assert {f.rule.value for f in report.findings} <= {"partial-timing"}


@pytest.mark.parametrize("case", ["gemm", "mlp"])
def test_fault_sem_leak(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["sem-leak"])
    sem = rec["sem"]
    assert sem not in set(base.sems["sem"].to_list())
    on_sem = faulted.sems.filter(pl.col("sem") == sem)
    assert (on_sem["op"] == "signal").all()
    assert on_sem.height == rec["signals"] == len(rec["instructions"]) > 0
    assert sorted(on_sem["inst"].to_list()) == sorted(rec["instructions"])
    assert faulted.sems.height == base.sems.height + rec["signals"]
    assert tracekit.validate(faulted.trace.path).findings == ()


@pytest.mark.parametrize("case", ["gemm", "mlp"])
def test_fault_slow_queue(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, SLOW_SHAPES[case], ["slow-queue"])
    engine = rec["engine"]
    assert engine.startswith("dma.q")

    def mean_duration(t: Tables) -> float:
        rows = t.inst.filter(pl.col("engine") == engine)
        return float((rows["end"] - rows["start"]).mean())

    on_queue = faulted.inst.filter(pl.col("engine") == engine)["id"].to_list()
    assert rec["instruction_count"] == len(on_queue) > 0
    assert rec["instructions"] == on_queue[:5]
    assert mean_duration(faulted) > 2 * mean_duration(base)
    assert faulted.inst.drop("start", "end").equals(base.inst.drop("start", "end"))
    assert tracekit.validate(faulted.trace.path).findings == ()


def test_fault_slow_queue_is_observable(tmp_path: Path) -> None:
    """A slow-queue fault must slow a queue that carries transfers: on a small conv2d (three
    DMA transfers, four queues) no seed may pick the idle queue."""
    shape = {"batch": 1, "c": 8, "h": 10, "w": 10, "filters": 16, "r": 3, "s": 3, "stride": 1}
    picked = {}
    for seed in range(8):
        t = gen(tmp_path / f"s{seed}", "conv2d", shape, seed=seed, inject=["slow-queue"])
        (rec,) = t.faults()
        on_queue = t.inst.filter(pl.col("engine") == rec["engine"]).height
        assert rec["instruction_count"] == on_queue
        picked[seed] = (rec["engine"], on_queue)
    assert all(count > 0 for _, count in picked.values()), picked


@pytest.mark.parametrize("case", ["gemm", "mlp"])
def test_fault_stuck_engine(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["stuck-engine"])
    (inst,) = rec["instructions"]
    assert rec["engine"] == faulted.inst["engine"][inst]
    assert not rec["engine"].startswith("dma.")
    assert faulted.duration(inst) >= 20 * base.duration(inst)
    assert tracekit.validate(faulted.trace.path).findings == ()


@pytest.mark.parametrize("case", ["gemm", "mlp"])
def test_fault_timestamp_skew(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["timestamp-skew"])
    producer, consumer = rec["producer"], rec["consumer"]
    assert rec["instructions"] == [producer, consumer]
    p, c = faulted.inst.row(producer, named=True), faulted.inst.row(consumer, named=True)
    assert c["start"] < p["end"]
    assert rec["producer_end"] == p["end"] and rec["consumer_start"] == c["start"]
    # The consumer really waits on the producer.
    oracle = SignalOracle(faulted)
    assert producer in {oracle.satisfier(s, v, consumer)
                        for s, v in wait_rows(faulted, consumer)}
    # Only the consumer's times changed.
    changed = faulted.inst.join(base.inst, on="id", suffix="_clean").filter(
        (pl.col("start") != pl.col("start_clean")) | (pl.col("end") != pl.col("end_clean")))
    assert changed["id"].to_list() == [consumer]


@pytest.mark.parametrize("case", ["gemm", "mlp"])
def test_fault_oob(tmp_path: Path, case: str) -> None:
    faulted, base, (rec,) = faulted_and_clean(tmp_path, FAULT_SHAPES[case], ["oob"])
    (inst,) = rec["instructions"]
    assert rec["space"] == "sbuf" and rec["capacity_per_partition"] == SBUF_BYTES
    bad = [r for r in mem_rows(faulted, inst)
           if r["space"] == "sbuf" and r["addr"] + r["size"] > SBUF_BYTES]
    assert len(bad) == 1
    (row,) = bad
    assert (row["addr"], row["size"], row["partition"], row["partitions"]) == (
        rec["addr"], rec["size"], rec["partition"], rec["partitions"])
    # Exactly one memory row differs from the clean trace.
    assert faulted.mem.height == base.mem.height
    diff = faulted.mem.with_row_index().join(base.mem.with_row_index(), on="index",
                                             suffix="_clean")
    assert diff.filter(pl.col("addr") != pl.col("addr_clean")).height == 1


def test_faults_combined(tmp_path: Path) -> None:
    faulted, base, records = faulted_and_clean(tmp_path, FAULT_SHAPES["mlp"],
                                               ["missing-wait", "slow-queue"])
    missing, slow = records
    check_missing_wait(faulted, base, missing)
    assert slow["engine"].startswith("dma.q") and slow["factor"] > 1
    rows = faulted.inst.filter(pl.col("engine") == slow["engine"])
    assert slow["instruction_count"] == rows.height


def test_faults_are_deterministic(tmp_path: Path) -> None:
    args = {"params": {"m": 200, "n": 300, "k": 300}, "seed": SEED,
            "inject": ["missing-wait", "slow-queue", "oob", "timestamp-skew"]}
    a = generate("gemm", tmp_path / "a", **args)
    generate("gemm", tmp_path / "b", **args)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert len(a.manifest.extra["generator"]["faults"]) == 4


# --- 7. errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("workload", "params", "kwargs"), [
    ("nope", {}, {}),
    ("gemm", {"seq": 4}, {}),
    ("mlp", {"m": 4}, {}),
    ("gemm", {"m": 0}, {}),
    ("gemm", {"k": -3}, {}),
    ("gemm", {"n": 2.5}, {}),
    ("mlp", {"widths": (96, 0, 64)}, {}),
    ("mlp", {"widths": (96,)}, {}),
    ("mlp", {"activation": "softmax"}, {}),
    ("conv2d", {"h": 2, "r": 3}, {}),
    ("layernorm", {"rows": 0}, {}),
    ("gemm", {}, {"inject": ["bogus"]}),
    ("gemm", {}, {"inject": ["missing-wait", "bogus"]}),
    ("gemm", {}, {"inject": ["slow-queue"], "untimed": True}),
    ("gemm", {}, {"inject": ["stuck-engine"], "untimed": True}),
    ("gemm", {}, {"inject": ["timestamp-skew"], "untimed": True}),
    ("gemm", {}, {"tiling": Tiling(tile_m=0)}),
    ("gemm", {}, {"tiling": Tiling(dma_queues=0)}),
    ("gemm", {}, {"tiling": Tiling(epoch_steps=0)}),
], ids=lambda v: json.dumps(v, default=str) if not isinstance(v, str) else v)
def test_generate_rejects(tmp_path: Path, workload: str, params: dict[str, Any],
                          kwargs: dict[str, Any]) -> None:
    out = tmp_path / "out"
    with pytest.raises(WorkloadError) as info:
        generate(workload, out, params=params, **kwargs)
    assert isinstance(info.value, TracekitError)
    assert str(info.value)
    assert not out.exists()


def test_shape_too_large_for_the_program_is_a_workload_error(tmp_path: Path) -> None:
    """A row of 2**30 elements overflows the program's 32-bit byte counts: that must be a
    WorkloadError (exit 1, one line on the command line), not a bare ValueError."""
    out = tmp_path / "big"
    with pytest.raises(WorkloadError):
        generate("layernorm", out, params={"rows": 1, "hidden": 2**30}, untimed=True)
    assert not out.exists()
    result = run("generate", "layernorm", "-o", out, "--rows", 1, "--hidden", 2**30,
                 "--untimed")
    assert_clean_failure(result, 1, "error:")


def test_untimed_program_faults_are_allowed(tmp_path: Path) -> None:
    t = gen(tmp_path / "u", "gemm", {"m": 200, "n": 300, "k": 300}, seed=SEED, untimed=True,
            inject=["missing-wait", "sem-leak", "oob"])
    assert [r["kind"] for r in t.faults()] == ["missing-wait", "sem-leak", "oob"]
    assert t.inst["start"].null_count() == t.inst.height


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("args", [
    ["nope"],
    ["gemm", "--m", "0"],
    ["mlp", "--widths", "96,0"],
    ["gemm", "--inject", "bogus"],
    ["gemm", "--untimed", "--inject", "slow-queue"],
    ["gemm", "--tile-m", "0"],
], ids=" ".join)
def test_cli_generate_errors(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    result = run("generate", args[0], "-o", out, *args[1:])
    assert_clean_failure(result, 1, "error:")
    assert result.stderr.startswith("error:")
    assert result.stdout == ""
    assert not out.exists()


def test_cli_generate_bad_widths_is_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("generate", "mlp", "-o", out, "--widths", "96,abc,64")
    assert_clean_failure(result, 2, "--widths")
    assert not out.exists()


def test_cli_generate_happy_path(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = run("generate", "gemm", "-o", out, "--m", 64, "--n", 64, "--k", 64)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"wrote {out}: 5 instructions (gemm m=64 n=64 k=64, tiles "
                             f"128x512x128, 4 DMA queues, double-buffered)\n")
    assert result.stderr == ""
    report = tracekit.validate(out)
    assert report.ok() and report.findings == ()
    t = tables(tracekit.open_trace(out))
    assert t.extra["params"] == {"m": 64, "n": 64, "k": 64}
    assert t.of("matmul")["flops"].sum() == 2 * 64**3
    assert t.of("matmul").height == 1

    again = run("generate", "gemm", "-o", out, "--m", 64, "--n", 64, "--k", 64)
    assert_clean_failure(again, 1, "error:", "already exists")
    forced = run("generate", "gemm", "-o", out, "--m", 32, "--n", 64, "--k", 64, "--force")
    assert forced.exit_code == 0, forced.output
    assert tracekit.open_trace(out).manifest.extra["generator"]["params"]["m"] == 32


def test_cli_matches_api(tmp_path: Path) -> None:
    result = run("generate", "mlp", "-o", tmp_path / "cli", "--widths", "96,160,64",
                 "--batch", 40, "--seed", SEED, "--inject", "missing-wait",
                 "--inject", "slow-queue", "--tile-k", 64, "--no-double-buffer")
    assert result.exit_code == 0, result.output
    generate("mlp", tmp_path / "api", params={"widths": (96, 160, 64), "batch": 40},
             seed=SEED, inject=["missing-wait", "slow-queue"],
             tiling=Tiling(tile_k=64, double_buffer=False))
    assert file_bytes(tmp_path / "cli") == file_bytes(tmp_path / "api")


# --- 8. the generate command: parameters and their defaults, the shape, the dry run ---------


def help_of(option: str) -> str:
    """The help text of one option of `tracekit generate`, as the command declares it."""
    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    (param,) = [p for p in command.params if option in p.opts]
    return param.help


def test_generate_help_states_each_parameter_with_its_default() -> None:
    """Every workload parameter is an option whose help names each workload that takes it
    and its default there, from the parameter records (the one place they are declared)."""
    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    options = {p.name for p in command.params} - {
        "workload", "output", "tile_m", "tile_n", "tile_k", "dma_queues", "double_buffer",
        "layer", "seed", "untimed", "inject", "force", "dry_run"}
    assert options == set(all_parameter_names())
    for name in all_parameter_names():
        assert help_of("--" + name.replace("_", "-")) == param_help(name)
    assert help_of("--m") == "gemm: rows of A and C (default 512)."
    assert help_of("--k") == "gemm: inner dimension (default 512)."
    assert help_of("--batch") == ("mlp: rows per layer (default 256); conv2d: images per "
                                  "batch (default 1).")
    assert help_of("--widths") == ("mlp: layer widths, input first, comma-separated (default "
                                   "512,1024,1024,256).")
    assert help_of("--filters") == "conv2d: output channels (default 64)."
    assert help_of("--activation") == ("mlp: after every layer but the last: relu, gelu, silu "
                                       "or tanh (default relu).")
    # The defaults in the help are the ones generated.
    for workload, cls in WORKLOADS.items():
        record = workload_params(workload, {})
        assert record == cls()
        for field in dataclasses.fields(record):
            value = getattr(record, field.name)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert f"{workload}: {field.metadata['help']} (default {text})" in \
                param_help(field.name)
    shown = " ".join(run("generate", "--help").stdout.split())
    assert "--m <int> gemm: rows of A and C (default 512)." in shown
    assert "--hidden <int> layernorm: hidden size (default 1024)." in shown


def test_cli_generate_states_the_shape_with_its_defaults(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = run("generate", "gemm", "--m", 100, "-o", out)
    assert result.exit_code == 0, result.output
    # One 128-row tile of A, one 512-column tile of B, four k steps of 128: 4 * (2 loads + 1
    # matmul) + 1 evacuation + 1 store.
    assert result.stdout == (f"wrote {out}: 14 instructions (gemm m=100 n=512 k=512, tiles "
                             f"128x512x128, 4 DMA queues, double-buffered; n and k "
                             f"defaulted)\n")
    assert tables(tracekit.open_trace(out)).extra["params"] == {"m": 100, "n": 512, "k": 512}
    assert tracekit.open_trace(out).manifest.tables["instructions"].rows == 14


@pytest.mark.parametrize(("args", "message"), [
    (["gemm", "--seq", "4"], "--seq is not a parameter of gemm; gemm takes --m, --n, --k."),
    (["layernorm", "--batch", "4", "--head-dim", "8"],
     "--batch and --head-dim are not parameters of layernorm; layernorm takes --rows, "
     "--hidden."),
    (["conv2d", "--n", "2"], "--n is not a parameter of conv2d (--n is now --batch); conv2d "
     "takes --batch, --c, --h, --w, --filters, --r, --s, --stride."),
    (["conv2d", "--batch", "2", "--k", "16", "--dry-run"],
     "--k is not a parameter of conv2d (--k is now --filters); conv2d takes --batch, --c, "
     "--h, --w, --filters, --r, --s, --stride."),
    (["mlp", "--filters", "8", "--dry-run"],
     "--filters is not a parameter of mlp; mlp takes --widths, --batch, --activation."),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_generate_rejects_another_workloads_parameter(tmp_path: Path, args: list[str],
                                                          message: str) -> None:
    out = tmp_path / "out"
    result = run("generate", args[0], "-o", out, *args[1:])
    assert_clean_failure(result, 2)
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert not out.exists()


def test_api_rejects_another_workloads_parameter_by_its_name() -> None:
    with pytest.raises(ParameterError) as info:
        workload_params("conv2d", {"batch": 2, "k": 16})
    assert str(info.value) == ("k is not a parameter of conv2d (k is now filters); conv2d "
                               "takes batch, c, h, w, filters, r, s, stride.")
    assert info.value.exit_code == 2


def test_conv2d_batch_and_filters(tmp_path: Path) -> None:
    """--batch images of 4 x 8 x 8 through --filters 16 kernels of 3 x 3: a [2*6*6, 36] @
    [36, 16] matmul, one tile."""
    out = tmp_path / "conv"
    result = run("generate", "conv2d", "--batch", 2, "--c", 4, "--h", 8, "--w", 8,
                 "--filters", 16, "-o", out, "--untimed")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"wrote {out}: 5 instructions (conv2d batch=2 c=4 h=8 w=8 "
                             f"filters=16 r=3 s=3 stride=1, tiles 128x512x128, 4 DMA queues, "
                             f"double-buffered; r, s and stride defaulted)\n")
    t = tables(tracekit.open_trace(out))
    assert t.extra["params"] == {"batch": 2, "c": 4, "h": 8, "w": 8, "filters": 16, "r": 3,
                                 "s": 3, "stride": 1}
    assert t.of("matmul")["flops"].to_list() == [2 * (2 * 6 * 6) * 36 * 16]
    assert t.of("dma_im2col")["bytes"].to_list() == [2 * 6 * 6 * 36 * ELEM]
    assert t.of("dma_load")["bytes"].to_list() == [36 * 16 * ELEM]


DRY_RUN_CASES = {
    # name: (CLI arguments, instructions counted by hand from the lowering's arithmetic)
    "gemm": (["gemm", "--m", 200, "--n", 700, "--k", 300], 3 * 2 * 2 * 3 + 2 * 2 * 2),
    "gemm-tiles": (["gemm", "--m", 200, "--n", 300, "--k", 200, "--tile-m", 64, "--tile-n",
                    128, "--tile-k", 64, "--dma-queues", 2, "--no-double-buffer"],
                   3 * 4 * 3 * 4 + 2 * 4 * 3),
    "gemm-clamped": (["gemm", "--m", 300, "--n", 600, "--k", 100, "--tile-n", 1024],
                     3 * 3 * 2 * 1 + 2 * 3 * 2),
    "mlp": (["mlp", "--widths", "96,160,600", "--batch", 40, "--activation", "gelu"],
            (3 * 1 * 1 * 1 + 2) + (3 * 1 * 2 * 2 + 2 * 2)),
    "attention": (["attention", "--seq", 200, "--heads", 2, "--head-dim", 32],
                  2 * ((3 * 2 * 1 * 1 + 2 * 2) + 2 * 6 + (3 * 2 * 1 * 2 + 2 * 2))),
    "conv2d": (["conv2d", "--batch", 2, "--c", 16, "--h", 20, "--w", 20, "--filters", 24,
                "--s", 2, "--stride", 2], 3 * 2 * 1 * 1 + 2 * 2),  # [180, 96] @ [96, 24]
    "layernorm": (["layernorm", "--rows", 300, "--hidden", 64, "--dma-queues", 1], 3 * 5),
}


@pytest.mark.parametrize("case", list(DRY_RUN_CASES))
def test_dry_run_counts_exactly_what_generate_writes(tmp_path: Path, case: str) -> None:
    args, expected = DRY_RUN_CASES[case]
    out = tmp_path / "out"
    dry = run("generate", *args, "-o", out, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert dry.stdout.startswith(f"would write {out}: {expected:,} instructions (")
    assert dry.stdout.endswith("); nothing written\n")
    wet = run("generate", *args, "-o", out, "--untimed")
    assert wet.exit_code == 0, wet.output
    assert tracekit.open_trace(out).manifest.tables["instructions"].rows == expected
    shape = dry.stdout.removeprefix(f"would write {out}: ").removesuffix(
        "; nothing written\n")
    assert wet.stdout == f"wrote {out}: {shape}\n"


def test_faults_do_not_change_the_count(tmp_path: Path) -> None:
    params, inject = {"widths": (96, 160, 64), "batch": 40}, ["deadlock", "sem-leak", "oob"]
    planned = plan("mlp", params=params, inject=inject)
    trace = generate("mlp", tmp_path / "f", params=params, inject=inject, seed=SEED)
    assert planned.instructions == trace.manifest.tables["instructions"].rows == 5 + 8


def test_dry_run_of_a_huge_shape_is_instant() -> None:
    """359,882,656 instructions: counted, never built (building them needs tens of GB)."""
    result = run("generate", "gemm", "--m", 100_000, "--n", 100_000, "--k", 100_000,
                 "--dry-run")
    assert result.exit_code == 0, result.output
    mt, nt, kt = cdiv(100_000, 128), cdiv(100_000, 512), cdiv(100_000, 128)
    assert 3 * mt * nt * kt + 2 * mt * nt == 359_882_656
    assert result.stdout == ("would generate 359,882,656 instructions (gemm m=100000 n=100000 "
                             "k=100000, tiles 128x512x128, 4 DMA queues, double-buffered); "
                             "nothing written\n")


def test_dry_run_reports_what_the_real_run_would_refuse(tmp_path: Path) -> None:
    wide = run("generate", "layernorm", "--hidden", 50_000, "--dry-run")
    assert_clean_failure(wide, 1, "error: layernorm: rows of 50000 elements do not fit SBUF")
    out = tmp_path / "taken"
    out.mkdir()
    taken = run("generate", "gemm", "-o", out, "--dry-run")
    assert_clean_failure(taken, 1, "already exists", "--force")
    forced = run("generate", "gemm", "-o", out, "--dry-run", "--force")
    assert forced.exit_code == 0, forced.output
    assert list(out.iterdir()) == []


def test_cli_generate_needs_an_output_unless_dry_run(tmp_path: Path) -> None:
    result = run("generate", "gemm")
    assert_clean_failure(result, 2, "'--output' / '-o'", "--dry-run")


# --- the reference's fluid HBM sharing ------------------------------------------------------


def test_reference_shares_hbm_fluidly() -> None:
    """The timing docstring's example: three queues of 64 B/cycle on 96 B/cycle of HBM, 3200,
    3200 and 1600 bytes from cycle 0: 32 B/cycle each until the short one ends at 50, then
    48 B/cycle each for the last 1600 bytes (83.3, rounded up to 84)."""
    from tracekit.workloads.timing import _replay

    n = 3
    engine = np.arange(n, dtype=np.int64)
    none = np.full(n, -1, dtype=np.int64)
    start, end = _replay(engine, np.ones(n, bool), np.ones(n, bool), np.zeros(n),
                         np.array([3200, 3200, 1600], dtype=np.int64),
                         np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), none,
                         none, np.ones(n), np.ones(n), n, 12.0, 64.0, 96.0, 0.0, 0.0, 512,
                         1.0, 0, 1.0, np.arange(n, dtype=np.int64))
    assert start.tolist() == [0, 0, 0]
    assert end.tolist() == [84, 84, 50]


def test_reference_never_moves_more_than_hbm_allows() -> None:
    """Four queues of 64 B/cycle on 192 B/cycle of HBM, 4800 bytes each from cycle 0: 48
    B/cycle each, all done at 100. (A rate fixed when a transfer starts, as an equal share
    among the queues already busy, gave the first three 64 B/cycle and 240 B/cycle in all.)"""
    from tracekit.workloads.timing import _replay

    n = 4
    none = np.full(n, -1, dtype=np.int64)
    start, end = _replay(np.arange(n, dtype=np.int64), np.ones(n, bool), np.ones(n, bool),
                         np.zeros(n), np.full(n, 4800, dtype=np.int64),
                         np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), none,
                         none, np.ones(n), np.ones(n), n, 12.0, 64.0, 192.0, 0.0, 0.0, 512,
                         1.0, 0, 1.0, np.arange(n, dtype=np.int64))
    assert end.tolist() == [100, 100, 100, 100]
