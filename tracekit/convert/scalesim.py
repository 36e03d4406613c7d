"""Import a run of SCALE-Sim (the public cycle-accurate systolic-array simulator, version 3) as a
trace bundle, and its config as a machine description for `tracekit replay --mode model`.

A run folder holds COMPUTE_REPORT.csv and layer<N>/ with six traces per layer: the array's reads
and writes of its three SRAMs (one row per array step, one word address per lane) and the DRAM
side of each SRAM (one row per interface cycle). The config (.cfg) and GEMM topology (.csv) that
made the run are looked for beside it (RUN/, RUN/inputs/, RUN/../inputs/, named after the run)
or given.

Worked example, gemm64x48x80_16x16_ws_user_bw4 (M=64, N=48, K=80 on a 16x16 weight-stationary
array; reads at 10 words/cycle, writes at 4), 20 instructions:

    id engine  opcode     cycles        work
     0 dma.q0  dma_load   [0, 512)      the ifmap SRAM's fill: 512 rows x 10 words
     1 dma.q1  dma_load   [128, 512)    the filter SRAM's: 384 rows
     2 tensor  matmul     [512, 622)    fold 0: 110 array steps, 2 x 16 x 16 x 64 flops
       ...                              one matmul per fold, the ninth cut at step 912, the
    11 dma.q2  dma_store  [1423, 3471)  write that starts this drain of 8,192 outputs
       ...
    19 dma.q3  dma_store  [2161, 3954)  the final flush, from the last step on

    deps: 0 -> 2, 1 -> 2, 10 -> 11, 18 -> 19 (data)

SCALE-Sim reports 3953 Total Cycles (incl. prefetch), the makespan less 1, and 0 Stall Cycles;
the replay with the converted machine ends at 3956.

Rules:

- Time: SCALE-Sim's cycles, shifted so that the first DRAM read is at 0. A DRAM row stamped t
  occupies [t, t+1). SCALE-Sim demands array step i at c_i (c_0 = 0) and charges the stall it
  meets to the next: c_(i+1) = max(c_i + 1, the step's IFMAP and FILTER SRAM stamps, its OFMAP
  SRAM stamp + 1). Step i occupies [c_(i+1) - 1, c_(i+1)), so the gaps between array steps sum
  to SCALE-Sim's Stall Cycles, and the last DRAM write less the first DRAM read is its Total
  Cycles (incl. prefetch).
- tensor (the array): one `matmul` per run of steps, cut at fold boundaries, at stalls and where
  a dependency enters or leaves. elements = array steps; flops = 2 x the MACs of those steps (a
  fold maps Ru x Cu processing elements, and PE (r, c) does its t-th MAC at step o + r + c + t,
  o = the fold's weight or input load: R for ws and is, 0 for os); bytes = SRAM words read and
  written. pc = the first step's position in the run; layer = the topology's layer name.
- DRAM (one word = 1 byte, SCALE-Sim's own word size): ifmap reads on dma.q0 and filter reads on
  dma.q1, one `dma_load` per prefetch burst (user mode: a run of consecutive stamps, the active
  buffer's fill first, then one per miss; calc mode: the fill before cycle 0, then one per change
  of row width). Output drains on dma.q2, and the final flush of the output SRAM on dma.q3 (SCALE-
  Sim starts it at the last step without waiting for a drain in flight), `dma_store`; a drain is
  the drain buffer's rows (half the SRAM over the write width). bytes = rows x row width: the
  interface cycles SCALE-Sim bills as DRAM accesses, idle slots included; elements = words moved.
- memory: the words each instruction moves or touches, merged into ranges of consecutive
  addresses. DRAM words are hbm at SCALE-Sim's word address. SRAM words are at their place in
  their operand (the address less the config's IfmapOffset, FilterOffset or OfmapOffset), ifmap
  in sbuf partition 0, filter in sbuf partition 1, ofmap in psum: SCALE-Sim's SRAMs look words
  up by operand address, and hold no other place for them. Loads read hbm and write sbuf, stores
  read psum and write hbm, the array reads sbuf and writes psum.
- deps: the first array step depends on both fills, and each read operand's first burst after
  its fill on the other operand's fill (SCALE-Sim stamps both fills to end the cycle before the
  array's first demand, and every later burst follows the one before: user mode); a step whose
  miss in the active buffer issued a burst depends on it (data; user mode, reconstructed from
  the stamps as read_buffer.service_reads computes them; calc mode: a burst to the first step
  that reads one of its words after it ends); a step that found the output SRAM full depends on
  the drain it waited for (resource); a drain depends on the step whose write started it (the
  first write that found the SRAM past half full and the interface free), the flush on the last
  step (data); the echoes of read stalls, below. Layer l + 1's fills depend on layer l's last
  instruction.
- Machine: one array step per cycle (tensor per_element = 1); each queue moves a row of its
  trace per cycle (user mode: IfmapSRAMBankBandwidth, FilterSRAMBankBandwidth and Bandwidth words;
  calc mode: the trace's row widths for reads, ArrayWidth for writes); in user mode a burst
  starts one cycle after the previous one's last answer (dma_load fixed_cycles = 1), and so does
  a burst's copy on a shadow queue (fixed_cycles = 1, per_byte = 1 / the operand's width); HBM
  is the sum of the queues, as SCALE-Sim's interfaces share nothing; memory: the operands' sizes
  (the SRAMs' capacities are in the description).

Read stalls (user mode). A deliberate model of SCALE-Sim 3.0.0's read buffer, not a tuning.
read_buffer.service_reads serves a step demanded at c from T = c + 1, and for each burst its
misses issue, in order:

    while not self.active_buffer_hit(addr):
        self.new_prefetch()
        potential_stall_cycles = self.last_prefetch_cycle - (cycle + offset)
        offset += potential_stall_cycles        # Offset increments if there were potential stalls
        if potential_stall_cycles > 0:
            offset += potential_stall_cycles

while new_prefetch stamps a burst from the previous one's last answer, not from the miss
(`cycles_arr[i][0] = self.last_prefetch_cycle + i + 1`, then the port's one cycle). So, from
s = T, a burst whose last stamp is E takes s to E if it has arrived (E <= s) and to 2 E - s if
not: the burst's end reflected about the time the step asked for it, twice what its data still
needed; a step whose first burst has arrived and whose second has not is served at
E_2 + (E_2 - E_1), a whole second period after its data is in. Such a reflection serves a later
demand sooner, which no dependency can (a replay's times only grow with the times before
them). But every cycle here is c_0 plus whole burst periods (a burst's rows and the cycle
before it) plus step counts, and two reflections about bursts of one operand make a
translation. So the converter writes each stall's end the way SCALE-Sim computes it and
follows it back through the stalls before it (up to ECHO_DEPTH) until, with no burst period
counted a negative number of times, it is a fixed time after an event the replay reproduces:
the end of a step at or after a stall the replay reproduces, the fills, or a burst's end. The
stalled step then depends on an echo: copies of those bursts (`burst_shadow`, each with its
burst's bytes and words) that run one after another from that event on shadow queues of the
burst's operand (`shadow.ifmap.K`, `shadow.filter.K`: not DMA queues, they move nothing and take
no HBM bandwidth). Step counts are absorbed by starting from a step earlier, or by making the
step x steps later depend on the echo, when no stall lies in between; the fewest copies win,
then the smallest x, then the latest event. The copies' observed times run from the event's
end to the step's start, so the observed timeline is SCALE-Sim's, and the array's figures in
`analyze` (its engine only) do not change.

Worked example, gemm96x64x128_16x16_ws_user_bw8 (ifmap bursts of 820 rows, one every 821
cycles; SCALE-Sim's cycles): burst 1 ends at 820, and step 766, asked for at T = 767, is served
at 2 x 820 - 767 = 873. Burst 2 ends at 1641; step 1152 asks at 873 + 386 = 1259 and is served
at 2 x 1641 - 1259 = 2 x 821 + 767 - 386 = 2023: the end of step 379 (380), two copies of burst
2 (821 cycles each), then step 1152 itself. Step 766 (reflected about the array's start, with
766 steps before it and 385 hits after) has no echo and waits for its burst once; the second
stall of each pair, the last one of the run included, is reproduced, and the replay predicts
10,765 Total Cycles (incl. prefetch) where SCALE-Sim reports 10,763. In
gemm24x128x160_16x16_ws_user_bw16_sram8-16-4, step 2255 is asked for at 2256 and issues filter
bursts 2 (ended at 1641) and 3 (ends at 2462): served at 2 x 2462 - 1641 = 3283, an echo of one
copy of burst 3 after burst 3, two steps later (the copy's set-up and the row's own cycle).

Limit. A stall no echo reproduces waits for its burst once in the replay: one reflected about
the end of a drain or of the other operand's burst (no whole periods of its own bursts lead
there), one reflected about the array's start or a burst's end with more steps to absorb than
hit steps after it (a run's first miss, usually: the fill lasts many steps), and the stalls an
odd number of reflections after such a one (every second stall of a series). The replay
catches up at the next echoed stall, so it ends short of SCALE-Sim's total only when a run's
last read stall is one of these, by that stall's second wait: half its stall cycles
(`LayerImport.unechoed` lists them).
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tracekit.errors import TraceExistsError, TracekitError
from tracekit.trace.bundle import Trace, atomic_file, write_trace
from tracekit.trace.manifest import Producer


class ScaleSimError(TracekitError):
    """A SCALE-Sim run folder, config, topology or trace that cannot be imported."""


class Dataflow(StrEnum):
    OS = "os"
    WS = "ws"
    IS = "is"


class BandwidthMode(StrEnum):
    USER = "user"
    CALC = "calc"


WORD_BYTES = 1
"""Bytes per SCALE-Sim word: it sizes its SRAMs and counts traffic with 1-byte words."""

CALC_READ_WORDS = 10
"""Words per cycle of the read interfaces' first fill in calc mode (SCALE-Sim's fixed value)."""

IFMAP, FILTER, OFMAP = "ifmap", "filter", "ofmap"
OPERANDS = (IFMAP, FILTER, OFMAP)
TRACE_FILES = {(op, side): f"{op.upper()}_{side.upper()}_TRACE.csv"
               for op in OPERANDS for side in ("sram", "dram")}
ARRAY, DRAIN, FLUSH = "tensor", "dma.q2", "dma.q3"
LOAD_QUEUE = {IFMAP: "dma.q0", FILTER: "dma.q1"}
ENGINE_RANK = {ARRAY: 0, "dma.q0": 1, "dma.q1": 2, DRAIN: 3, FLUSH: 4}
ON_CHIP = {IFMAP: ("sbuf", 0), FILTER: ("sbuf", 1), OFMAP: ("psum", 0)}
"""Where each SRAM's words go in the memory table: (space, partition)."""


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSimConfig:
    """What a run's timing depends on, from its .cfg (SRAM sizes in KiB, bandwidths in words
    per cycle)."""

    run_name: str
    array_rows: int
    array_cols: int
    ifmap_sram_kb: int
    filter_sram_kb: int
    ofmap_sram_kb: int
    dataflow: Dataflow
    bandwidth_mode: BandwidthMode
    write_bandwidth: int
    read_bandwidth: tuple[int, int]
    """ifmap and filter words per cycle (user mode: the [layout] SRAM bank bandwidths, which
    SCALE-Sim 3 uses as the read interfaces; calc mode: the first fill's 10)."""
    offsets: tuple[int, int, int] = (0, 10_000_000, 20_000_000)
    """Word addresses of the ifmap, filter and ofmap operands' first words."""

    @property
    def half_ofmap_words(self) -> int:
        """Words of the output SRAM's drain buffer: half of it."""
        return self.ofmap_sram_kb * 1024 // WORD_BYTES // 2


def _cfg_value(parser: configparser.ConfigParser, path: Path, section: str, key: str) -> str:
    if not parser.has_section(section):
        raise ScaleSimError(f"{path}: no [{section}] section. A SCALE-Sim config has [general], "
                            f"[architecture_presets], [layout] and [run_presets]; pass the "
                            f"config the run was made with (--config).")
    if not parser.has_option(section, key):
        raise ScaleSimError(f"{path}: [{section}] has no {key}. Add it as in SCALE-Sim's "
                            f"configs/scale.cfg, or pass the config the run was made with.")
    return parser.get(section, key).strip()


CFG_MOST = {"ArrayHeight": 1 << 16, "ArrayWidth": 1 << 16, "IfmapSramSzkB": 1 << 30,
            "FilterSramSzkB": 1 << 30, "OfmapSramSzkB": 1 << 30, "Bandwidth": 1 << 20,
            "IfmapSRAMBankBandwidth": 1 << 20, "FilterSRAMBankBandwidth": 1 << 20}
"""The largest value tracekit takes for a config key (a 65,536-wide array, a TiB of SRAM, a
million words per cycle); offsets take word addresses below EXACT_LIMIT."""

EXACT_LIMIT = 1 << 53
"""Cycle stamps and word addresses are written as floats: at and above 2**53 they are no longer
exact whole numbers, so tracekit refuses them rather than import rounded values."""


def _cfg_int(parser: configparser.ConfigParser, path: Path, section: str, key: str,
             least: int = 1) -> int:
    text = _cfg_value(parser, path, section, key)
    try:
        value = int(text.split(",")[0].strip())
    except ValueError:
        raise ScaleSimError(f"{path}: [{section}] {key} = {text!r} is not a whole number. "
                            f"Write one, as SCALE-Sim does.") from None
    if value < least:
        raise ScaleSimError(f"{path}: [{section}] {key} = {value}; it must be at least "
                            f"{least}.")
    most = CFG_MOST.get(key, EXACT_LIMIT - 1)
    if value > most:
        raise ScaleSimError(f"{path}: [{section}] {key} = {value:,}; tracekit takes at most "
                            f"{most:,}. Check the config the run was made with.")
    return value


def _cfg_flag(parser: configparser.ConfigParser, section: str, key: str) -> bool:
    return parser.has_option(section, key) and \
        parser.get(section, key).strip().lower() == "true"


def read_config(path: str | os.PathLike[str]) -> ScaleSimConfig:
    """A SCALE-Sim .cfg file's run name, array, SRAM sizes, dataflow and bandwidths."""
    path = Path(path)
    # No interpolation: a '%' in a value is text (SCALE-Sim's configs use none), never a
    # reference to another option.
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except FileNotFoundError:
        raise ScaleSimError(f"{path}: no such config file. Pass the .cfg the run was made "
                            f"with (--config).") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        lines = str(exc).strip().splitlines()
        raise ScaleSimError(f"{path}: not a readable SCALE-Sim config "
                            f"({lines[0] if lines else type(exc).__name__}). Pass the .cfg the "
                            f"run was made with.") from None
    arch = "architecture_presets"
    dataflow = _cfg_value(parser, path, arch, "Dataflow").lower()
    if dataflow not in {d.value for d in Dataflow}:
        raise ScaleSimError(f"{path}: [{arch}] Dataflow = {dataflow!r}; SCALE-Sim knows os, "
                            f"ws and is.")
    mode = _cfg_value(parser, path, "run_presets", "InterfaceBandwidth").lower()
    if mode not in {m.value for m in BandwidthMode}:
        raise ScaleSimError(f"{path}: [run_presets] InterfaceBandwidth = {mode!r}; SCALE-Sim "
                            f"knows USER and CALC.")
    unsupported = [f"[{s}] {k}" for s, k in (("sparsity", "SparsitySupport"),
                                             ("layout", "IfmapCustomLayout"),
                                             ("layout", "FilterCustomLayout"),
                                             ("run_presets", "UseRamulatorTrace"))
                   if _cfg_flag(parser, s, k)]
    if unsupported:
        raise ScaleSimError(f"{path}: {', '.join(unsupported)} is on; tracekit imports dense "
                            f"runs with the default layout and no Ramulator trace. Re-run "
                            f"SCALE-Sim with it off.")
    user = mode == BandwidthMode.USER
    cols = _cfg_int(parser, path, arch, "ArrayWidth")
    return ScaleSimConfig(
        run_name=_cfg_value(parser, path, "general", "run_name"),
        array_rows=_cfg_int(parser, path, arch, "ArrayHeight"),
        array_cols=cols,
        ifmap_sram_kb=_cfg_int(parser, path, arch, "IfmapSramSzkB"),
        filter_sram_kb=_cfg_int(parser, path, arch, "FilterSramSzkB"),
        ofmap_sram_kb=_cfg_int(parser, path, arch, "OfmapSramSzkB"),
        dataflow=Dataflow(dataflow),
        bandwidth_mode=BandwidthMode(mode),
        write_bandwidth=_cfg_int(parser, path, arch, "Bandwidth") if user else cols,
        read_bandwidth=((_cfg_int(parser, path, "layout", "IfmapSRAMBankBandwidth"),
                         _cfg_int(parser, path, "layout", "FilterSRAMBankBandwidth"))
                        if user else (CALC_READ_WORDS, CALC_READ_WORDS)),
        offsets=(_cfg_int(parser, path, arch, "IfmapOffset", 0),
                 _cfg_int(parser, path, arch, "FilterOffset", 0),
                 _cfg_int(parser, path, arch, "OfmapOffset", 0)),
    )


@dataclass(frozen=True)
class GemmLayer:
    name: str
    m: int
    n: int
    k: int


def _csv_lines(path: Path, fix: str) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScaleSimError(f"{path}: no such file. {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScaleSimError(f"{path}: cannot read the file ({exc}). {fix}") from None
    return [[cell.strip() for cell in line.split(",") if cell.strip()]
            for line in text.splitlines()]


def read_topology(path: str | os.PathLike[str]) -> list[GemmLayer]:
    """The layers (name, M, N, K) of a SCALE-Sim GEMM topology file (a header line first)."""
    path = Path(path)
    lines = _csv_lines(path, "Pass the topology the run was made with (--topology).")
    layers = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        try:
            if len(cells) < 4:
                raise ValueError
            m, n, k = (int(c) for c in cells[1:4])
            if min(m, n, k) < 1 or max(m, n, k) >= EXACT_LIMIT:
                raise ValueError
        except ValueError:
            raise ScaleSimError(f"{path}: line {number}: expected 'name, M, N, K' with "
                                f"positive whole numbers below 2**53, got {', '.join(cells)!r}. Only GEMM "
                                f"topologies (scalesim -i gemm) can be imported: pass the "
                                f"topology the run was made with (--topology).") from None
        layers.append(GemmLayer(cells[0], m, n, k))
    if not layers:
        raise ScaleSimError(f"{path}: no layers: a header line, then 'name, M, N, K' per layer.")
    return layers


@dataclass(frozen=True)
class ComputeReport:
    """One layer's row of COMPUTE_REPORT.csv."""

    total_cycles_incl_prefetch: int
    total_cycles: int
    stall_cycles: int
    overall_util_pct: float
    mapping_efficiency_pct: float
    compute_util_pct: float


def read_compute_report(path: str | os.PathLike[str]) -> list[ComputeReport]:
    """The layers of a run's COMPUTE_REPORT.csv, in order."""
    path = Path(path)
    lines = _csv_lines(path, "A SCALE-Sim run folder holds COMPUTE_REPORT.csv: point at the "
                             "run's own folder.")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        try:
            if len(cells) != 7 or int(cells[0]) != len(rows):
                raise ValueError
            values = [float(c) for c in cells[1:]]
        except ValueError:
            raise ScaleSimError(
                f"{path}: line {number}: expected LayerID {len(rows)} and six numbers (Total "
                f"Cycles (incl. prefetch), Total Cycles, Stall Cycles, Overall Util %, Mapping "
                f"Efficiency %, Compute Util %), got {', '.join(cells)!r}. Re-run "
                f"SCALE-Sim.") from None
        rows.append(ComputeReport(int(values[0]), int(values[1]), int(values[2]), *values[3:]))
    if not rows:
        raise ScaleSimError(f"{path}: no layer rows. Re-run SCALE-Sim.")
    return rows


def find_inputs(run: Path, config: Path | None = None,
                topology: Path | None = None) -> tuple[Path, Path]:
    """The config and topology of the run in folder `run`: as given, else RUN_NAME.cfg and
    RUN_NAME.csv in the run folder, its inputs/ or ../inputs/, else the only .cfg and .csv in
    the run folder or its inputs/."""
    places = (run, run / "inputs", run.parent / "inputs")

    def pick(given: Path | None, suffix: str, option: str) -> Path:
        if given is not None:
            return given
        for place in places:
            if (place / f"{run.name}{suffix}").is_file():
                return place / f"{run.name}{suffix}"
        for place in places[:2]:
            found = sorted(p for p in place.glob(f"*{suffix}")
                           if p.is_file() and not p.name.endswith("_REPORT.csv"))
            if len(found) == 1:
                return found[0]
        raise ScaleSimError(f"{run}: cannot find the run's {suffix} file (looked for "
                            f"{run.name}{suffix} in the run folder, inputs/ and ../inputs/). "
                            f"Pass it with {option}.")

    return pick(config, ".cfg", "--config"), pick(topology, ".csv", "--topology")


# --- traces --------------------------------------------------------------------------------


def _fail(path: Path, line: int | None, what: str) -> ScaleSimError:
    """An inconsistent trace: `line` is a 0-based row (reported 1-based) or None."""
    where = f"{path}: line {line + 1}: " if line is not None else f"{path}: "
    return ScaleSimError(f"{where}{what} The traces are not one SCALE-Sim 3 run of this config "
                         f"and topology: re-run SCALE-Sim, or pass the run's own --config and "
                         f"--topology.")


@dataclass(frozen=True)
class TraceTable:
    """One trace file: a cycle stamp per row and word addresses (-1 where a slot is idle)."""

    path: Path
    cycles: np.ndarray
    addrs: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.cycles.size)

    @property
    def width(self) -> int:
        return int(self.addrs.shape[1])


def read_trace_csv(path: Path) -> TraceTable:
    """A SCALE-Sim trace (no header; a cycle stamp, then addresses, on every line)."""
    fix = "Re-run SCALE-Sim with trace saving on (-s Y) to write it."
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise ScaleSimError(f"{path}: missing. A SCALE-Sim layer folder holds the IFMAP, FILTER "
                            f"and OFMAP SRAM and DRAM traces. {fix}") from None
    except OSError as exc:
        raise ScaleSimError(f"{path}: cannot read the file ({exc.strerror}). {fix}") from None
    if not first.strip():
        raise ScaleSimError(f"{path}: empty. {fix}")
    width = first.count(b",") + 1
    if width < 2:
        raise ScaleSimError(f"{path}: line 1: a cycle and no addresses. {fix}")
    names = [f"c{i}" for i in range(width)]
    try:
        frame = pl.read_csv(path, has_header=False, new_columns=names,
                            schema=dict.fromkeys(names, pl.Float64))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        text = str(exc).strip().splitlines()
        raise ScaleSimError(f"{path}: not a SCALE-Sim trace ({text[0] if text else exc!r}): "
                            f"every line must hold {width} numbers like the first. "
                            f"{fix}") from None
    values = frame.to_numpy()
    with np.errstate(invalid="ignore"):  # NaN and infinities are refused just below
        bad = ~np.isfinite(values) | (values != np.round(values))
        bad |= np.abs(values) >= EXACT_LIMIT
        bad[:, 1:] |= values[:, 1:] < -1
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        raise ScaleSimError(f"{path}: line {int(rows[0]) + 1}: a value that is not a whole "
                            f"number below 2**53 (or an address below -1); {rows.size:,} such "
                            f"line(s). {fix}")
    ints = values.astype(np.int64)
    return TraceTable(path, np.ascontiguousarray(ints[:, 0]), ints[:, 1:])


# --- how a GEMM layer folds onto the array --------------------------------------------------


@dataclass(frozen=True)
class Folds:
    """The folds of one GEMM layer (SCALE-Sim's compute/systolic_compute_*.py), in its order:
    column folds outer, row folds inner."""

    rows_used: np.ndarray
    cols_used: np.ndarray
    t: int
    """MACs each mapped PE does per fold (M for ws, K for os, N for is)."""
    steps: int
    """Array steps (demand rows) per fold."""
    window: int
    """SCALE-Sim's cycles of a fold in Compute Util: the steps for os, steps + C - 1 for ws
    and is (it adds a skew to a demand matrix that already holds one)."""
    offset: int
    """Steps before a fold's first MAC: the weight (ws) or input (is) load, 0 for os."""

    @property
    def count(self) -> int:
        return int(self.rows_used.size)


def fold_count(layer: GemmLayer, cfg: ScaleSimConfig) -> tuple[int, int]:
    """(folds, steps per fold) of a layer, as Python integers: what the SRAM traces' row count
    must be before any array of that size is made."""
    r, c = cfg.array_rows, cfg.array_cols
    if cfg.dataflow is Dataflow.OS:
        sr, sc, t = layer.m, layer.n, layer.k
        steps = t + r + c - 2
    else:
        sr, sc, t = (layer.k, layer.n, layer.m) if cfg.dataflow is Dataflow.WS else \
            (layer.k, layer.m, layer.n)
        steps = 2 * r + c + t - 2
    return -(-sr // r) * -(-sc // c), steps


def fold_layer(layer: GemmLayer, cfg: ScaleSimConfig) -> Folds:
    r, c = cfg.array_rows, cfg.array_cols
    if cfg.dataflow is Dataflow.OS:
        sr, sc, t = layer.m, layer.n, layer.k
        steps = window = t + r + c - 2
        offset = 0
    else:
        sr, sc, t = (layer.k, layer.n, layer.m) if cfg.dataflow is Dataflow.WS else \
            (layer.k, layer.m, layer.n)
        steps, window, offset = 2 * r + c + t - 2, 2 * r + 2 * c + t - 3, r
    row_folds, col_folds = math.ceil(sr / r), math.ceil(sc / c)
    fr = np.tile(np.arange(row_folds), col_folds)
    fc = np.repeat(np.arange(col_folds), row_folds)
    return Folds(np.minimum(r, sr - fr * r), np.minimum(c, sc - fc * c), t, steps, window,
                 offset)


def step_macs(folds: Folds) -> np.ndarray:
    """MACs the array does at each step of a layer: PE (r, c) of a fold does its t-th MAC at
    step offset + r + c + t. Each fold sums to rows_used x cols_used x t."""
    out = np.zeros(folds.count * folds.steps, dtype=np.int64)
    shapes, which = np.unique(np.stack([folds.rows_used, folds.cols_used], axis=1), axis=0,
                              return_inverse=True)
    for s, (ru, cu) in enumerate(shapes.tolist()):
        diag = np.arange(ru + cu - 1)
        on_diag = np.minimum(np.minimum(diag + 1, ru + cu - 1 - diag), min(ru, cu))
        cum = np.r_[0, np.cumsum(on_diag)]
        k = np.arange(folds.steps) - folds.offset
        profile = cum[np.clip(k + 1, 0, diag.size)] - cum[np.clip(k + 1 - folds.t, 0, diag.size)]
        for f in np.flatnonzero(which.ravel() == s).tolist():
            out[f * folds.steps:(f + 1) * folds.steps] = profile
    return out


# --- reconstruction of SCALE-Sim's events ---------------------------------------------------


def demand_cycles(ifmap: TraceTable, filt: TraceTable, ofmap: TraceTable) -> np.ndarray:
    """c_0 .. c_n: the cycle SCALE-Sim demands each step (c_n: one past the last), from
    c_(i+1) = max(c_i + 1, IFMAP stamp, FILTER stamp, OFMAP stamp + 1), c_0 = 0."""
    n = ifmap.rows
    steps = np.arange(1, n + 1)
    lead = np.maximum(np.maximum(ifmap.cycles, filt.cycles), ofmap.cycles + 1) - steps
    return np.r_[0, steps + np.maximum.accumulate(np.maximum(lead, 0))]


def _runs(stamps: np.ndarray) -> np.ndarray:
    """Bounds of the runs of consecutive stamps (t, t+1, ...): their starts, then the end."""
    return np.r_[0, np.flatnonzero(np.diff(stamps) != 1) + 1, stamps.size].astype(np.int64)


def miss_steps(sram: TraceTable, burst_ends: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """User mode: for each prefetch burst, the array step whose miss issued it (step 0 for the
    first, the fill of the active buffer).

    SCALE-Sim (memory/read_buffer.py) serves step i, demanded at c_i, at c_i + off: off starts
    at the hit latency 1, and each burst j a miss issues adds pot = end_j - (c_i + off), then pot
    again when pot > 0. The steps whose stamp is not c_i + 1 are matched in order to the runs of
    bursts that reproduce their stamp; a step whose only burst had pot = 0 leaves no mark
    (end_j = c_i + 1) and is placed where the matching needs it. The matching is a depth-first
    search, for the rare stamp that a shorter and a longer run of bursts would both explain.
    """
    n_bursts = int(burst_ends.size)
    owner = np.full(n_bursts, -1, dtype=np.int64)
    owner[:1] = 0
    c = demand[:-1]
    marked = np.flatnonzero(sram.cycles != c + 1)
    rows, served, at = marked.tolist(), sram.cycles[marked].tolist(), c[marked].tolist()
    ends = burst_ends.tolist()
    # The step a burst would have been issued by, had it left no mark: c_i + 1 = end.
    silent = np.searchsorted(c + 1, burst_ends)
    silent_ok = (silent < c.size) & (c[np.minimum(silent, c.size - 1)] + 1 == burst_ends)
    quiet = np.where(silent_ok, silent, -1).tolist()

    def options(p: int, b: int, prev: int) -> list[tuple[int, int]]:
        """(first burst of the run, its length) that can explain marked step p after burst b,
        the bursts before the run having been issued silently by steps in (prev, rows[p])."""
        out = []
        k = b
        while k < n_bursts:
            off, j = 1, k
            while j < n_bursts and ends[j] <= served[p]:
                pot = ends[j] - (at[p] + off)
                off += pot + max(pot, 0)
                j += 1
                if at[p] + off == served[p]:
                    out.append((k, j - k))
            if quiet[k] != -1 and prev < quiet[k] < rows[p]:
                k += 1
            else:
                break
        return out

    failed: set[tuple[int, int]] = set()
    trail: list[tuple[int, int, int]] = []   # (marked step, next burst, prev step) per choice
    memo: dict[tuple[int, int], list[tuple[int, int]]] = {}
    p, b, prev = 0, 1, 0
    while True:
        if p == len(rows):
            k = b
            while k < n_bursts and quiet[k] != -1 and prev < quiet[k]:
                k += 1
            if k == n_bursts:
                break
            left: list[tuple[int, int]] = []
        else:
            if (p, b) not in memo:
                memo[(p, b)] = options(p, b, prev)
            left = [o for o in memo[(p, b)] if (p + 1, o[0] + o[1]) not in failed]
        if left:
            first, m = left[0]
            trail.append((p, b, prev))
            owner[b:first] = [quiet[k] for k in range(b, first)]
            owner[first:first + m] = rows[p]
            p, b, prev = p + 1, first + m, rows[p]
            continue
        failed.add((p, b))
        if not trail:
            if p < len(rows):
                raise _fail(sram.path, rows[p], f"the step served at cycle {served[p]} matches "
                                                f"no prefetch burst of the DRAM trace.")
            raise _fail(sram.path, None, "a prefetch burst of the DRAM trace was issued by no "
                                         "array step.")
        p, b, prev = trail.pop()
    owner[b:] = [quiet[k] for k in range(b, n_bursts)]
    return owner


def first_use(sram: TraceTable, dram: TraceTable, valid: np.ndarray, bounds: np.ndarray,
              demand: np.ndarray) -> np.ndarray:
    """Calc mode: for each burst, the first array step that reads one of its words at or after
    its last stamp (-1 if none does); step 0 for the first. SCALE-Sim stamps calc-mode bursts
    so that the array never waits for them."""
    n_bursts = bounds.size - 1
    reads = sram.addrs >= 0
    steps = np.repeat(np.arange(sram.rows), reads.sum(axis=1))
    uses = pl.DataFrame({"addr": sram.addrs[reads], "time": demand[:-1][steps],
                         "step": steps}).sort("time")
    line_burst = np.repeat(np.arange(n_bursts), np.diff(bounds))
    word_burst = np.repeat(line_burst, valid.sum(axis=1))
    words = pl.DataFrame({"addr": dram.addrs[valid],
                          "time": dram.cycles[bounds[1:] - 1][word_burst],
                          "burst": word_burst}).sort("time")
    first = (words.join_asof(uses, on="time", by="addr", strategy="forward",
                             check_sortedness=False)
             .drop_nulls("step").group_by("burst").agg(pl.col("step").min()))
    owner = np.full(n_bursts, -1, dtype=np.int64)
    owner[first["burst"].to_numpy()] = first["step"].to_numpy()
    owner[:1] = 0
    return owner


def dram_words(table: TraceTable) -> np.ndarray:
    """Where a DRAM row holds a word: not -1, and not one of the 1s SCALE-Sim pads a narrower
    calc-mode burst's rows with at their end (read_buffer_estimate_bw.prefetch)."""
    valid = table.addrs >= 0
    ones = table.addrs == 1
    tail = np.flip(np.logical_and.accumulate(np.flip(ones | ~valid, axis=1), axis=1), axis=1)
    return valid & ~(tail & ones)


# --- SCALE-Sim's read stalls, as echoes of bursts --------------------------------------------

C0, ONE = "c0", "1"
"""Atoms of a symbolic cycle (`_Cycle`): the layer's origin c_0 (the array's first demand; both
fills end the cycle before it) and one cycle. The others: (op, j), the periods of op's bursts 1
to j (a period is a burst's rows and the cycle before it; burst j's last stamp is
c_0 - 1 + (op, j)), and ("root", r), the end of the drain that step r waited for."""

ECHO_DEPTH = 16
"""How many stalls back a stall's cycle is followed to find an event it is a fixed time after."""
ECHO_COPIES = 32
"""The most burst copies one echo holds; a stall that needs more is left to its own burst."""


@dataclass(frozen=True)
class _Cycle:
    """A cycle as sign x (the end of stall `base`) + sum of coefficient x atom over `terms`;
    base -1 (and sign 0): no stall, the atoms alone."""

    base: int
    sign: int
    terms: dict[Any, int]


def _plus(a: dict[Any, int], b: dict[Any, int], k: int = 1) -> dict[Any, int]:
    """a + k b, atom by atom."""
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + k * value
        if out[key] == 0:
            del out[key]
    return out


@dataclass(frozen=True)
class Echo:
    """The burst copies that reproduce one of SCALE-Sim's read stalls: they run one after
    another from the end of `anchor` (("step", "", a): array step a; ("burst", op, j): op's
    burst j; ("fills", "", 0): both fills), and array step `step` starts when the last ends
    (right after the anchor when there are none). `start`: SCALE-Sim's cycle at which the anchor
    ends; `copies`: (operand, burst) of each copy, in order."""

    step: int
    anchor: tuple[str, str, int]
    copies: tuple[tuple[str, int], ...]
    start: int


@dataclass(frozen=True)
class EchoPlan:
    """A layer's echoes, and the read stalls no echo reproduces (their steps): the replay waits
    for those stalls' bursts once, where SCALE-Sim waits up to twice."""

    echoes: tuple[Echo, ...]
    unechoed: tuple[int, ...]


def _copies(diff: dict[Any, int]) -> tuple[tuple[str, int], ...] | None:
    """The burst copies whose periods make the period terms of `diff` (burst m of op counted
    sum over j >= m of diff[(op, j)] times), or None if a count is negative, the origin or a
    drain is left over, or there are more than ECHO_COPIES."""
    per_op: dict[str, list[tuple[int, int]]] = {}
    for key, value in diff.items():
        if key == ONE:
            continue
        if key == C0 or key[0] == "root":
            return None
        per_op.setdefault(key[0], []).append((key[1], value))
    out: list[tuple[str, int]] = []
    for op in sorted(per_op):
        bursts = sorted(per_op[op], reverse=True) + [(0, 0)]
        count = 0
        for (j, weight), (below, _) in zip(bursts[:-1], bursts[1:]):
            count += weight
            if count < 0 or len(out) + count * (j - below) > ECHO_COPIES:
                return None
            out += [(op, m) for m in range(below + 1, j + 1) for _ in range(count)]
    return tuple(sorted(out, key=lambda c: (c[1], c[0])))


def echo_plan(demand: np.ndarray, served: dict[str, np.ndarray], written: np.ndarray,
              ends: dict[str, np.ndarray], issued: dict[str, np.ndarray]) -> EchoPlan:
    """The echoes that make a replay charge SCALE-Sim's read stalls (user mode; the rule is in
    the module docstring). `demand`: c_0 .. c_n; `served`: each read SRAM's stamp per step;
    `written`: the output SRAM's; `ends`: each read operand's bursts' last stamps, the fill's
    first (it ends at c_0 - 1; each burst starts two cycles after the one before ends);
    `issued`: the step that issued each burst.

    Each stall's end is written as a `_Cycle` the way SCALE-Sim computes it (a reflection
    2 E - s per burst that arrives late, E otherwise), then followed back through the stalls
    before it until it is a fixed number of whole burst periods and steps after an event that
    the replay reproduces: the end of a step at or after a reproduced stall, the fills, or a
    burst's end. Steps are absorbed by moving that step earlier or the stalled step later
    (when no stall lies in between); the fewest copies win, then the nearest step, then the
    latest event."""
    n = demand.size - 1
    stalls = np.flatnonzero(np.diff(demand) > 1).tolist()
    if not stalls:
        return EchoPlan((), ())
    following = dict(zip(stalls, stalls[1:] + [n]))
    c0 = int(demand[0])
    by_step: dict[str, dict[int, list[int]]] = {op: {} for op in ends}
    for op, steps in issued.items():
        for j in np.flatnonzero(steps[1:] >= 0).tolist():
            by_step[op].setdefault(int(steps[j + 1]), []).append(j + 1)
    cycles: dict[int, _Cycle] = {}
    reproduced: dict[int, int] = {}   # stall -> x: the replay ends it on time from step stall + x
    echoes: list[Echo] = []

    def options(r: int, cycle: _Cycle) -> Iterator[tuple[int, tuple, tuple, int]]:
        """(x, copies, anchor, anchor's end) of each way to reproduce `cycle` at step r + x."""
        room = following[r] - 1 - r
        sign, terms, base = cycle.sign, cycle.terms, cycle.base
        for _ in range(ECHO_DEPTH):
            if base < 0:
                break
            copies = _copies(terms) if sign == 1 and base in reproduced else None
            if copies is not None:   # after step base + q, between the stall and the next
                x = max(0, 1 - terms.get(ONE, 0) + reproduced[base])
                q = x - 1 + terms.get(ONE, 0)
                if q <= following[base] - 1 - base and x <= room:
                    yield x, copies, ("step", "", base + q), int(demand[base + q + 1])
            up = cycles[base]
            terms, sign, base = _plus(terms, up.terms, sign), sign * up.sign, up.base
        if base >= 0:
            return
        diff = _plus(terms, {C0: 1}, -1)
        copies = _copies(diff)
        if copies is not None:   # after the fills, or a step before the first stall
            x = max(0, 1 - diff.get(ONE, 0))
            q = x - 1 + diff.get(ONE, 0)
            if q <= stalls[0] and x <= room:
                yield x, copies, ("fills", "", 0) if q == 0 else ("step", "", q - 1), c0 + q
        for op, e in ends.items():   # after the latest burst all of whose periods are counted
            weights = sorted((k[1], v) for k, v in diff.items()
                             if isinstance(k, tuple) and k[0] == op)
            count, j = sum(v for _, v in weights), 0
            for key, v in weights:   # periods up to `key` are counted `count` times
                if count < 1:
                    break
                j, count = key, count - v
            rest = _plus(diff, {(op, j): 1}, -1)
            copies = _copies(rest) if j else None
            if copies is not None and 0 <= 1 - rest.get(ONE, 0) <= room:
                yield 1 - rest.get(ONE, 0), copies, ("burst", op, j), int(e[j]) + 1

    previous = -1
    for r in stalls:
        end = int(demand[r + 1])
        hit = _Cycle(previous, 1, {ONE: r - previous}) if previous >= 0 else \
            _Cycle(-1, 0, {C0: 1, ONE: r + 1})
        causes = []
        for op in ends:
            if int(served[op][r]) != end:
                continue
            cycle, at = hit, int(demand[r]) + 1
            for j in by_step[op].get(r, ()):
                burst = {C0: 1, (op, j): 1, ONE: -1}
                if int(ends[op][j]) <= at:
                    cycle, at = _Cycle(-1, 0, burst), int(ends[op][j])
                else:
                    cycle = _Cycle(cycle.base, -cycle.sign, _plus(_plus({}, burst, 2),
                                                                  cycle.terms, -1))
                    at = 2 * int(ends[op][j]) - at
            causes.append(cycle)
        best = min((o + (c,) for c in causes for o in options(r, c)),
                   key=lambda o: (len(o[1]), o[0], -o[3]), default=None)
        if best is not None:
            x, copies, anchor, start, cycles[r] = best
            reproduced[r] = x
            if copies or anchor != ("step", "", r + x - 1):
                echoes.append(Echo(r + x, anchor, copies, start))
        elif int(written[r]) + 1 == end:   # the drain it waited for
            cycles[r] = causes[0] if causes else _Cycle(-1, 0, {("root", r): 1})
            reproduced[r] = 0
        else:
            cycles[r] = causes[0]
        previous = r
    return EchoPlan(tuple(echoes), tuple(r for r in stalls if r not in reproduced))


# --- one layer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerImport:
    """What one layer's import found, next to SCALE-Sim's report of it."""

    layer: GemmLayer
    steps: int
    folds: int
    instructions: int
    stall_cycles: int
    total_cycles_incl_prefetch: int
    macs: int
    window_cycles: int
    compute_util_pct: float
    report: ComputeReport
    echoes: int = 0
    unechoed: tuple[tuple[int, int], ...] = ()
    """(step, stall cycles) of each read stall no echo reproduces: the replay charges it the
    wait its data needed, SCALE-Sim up to twice that (module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer.name, "m": self.layer.m, "n": self.layer.n,
                "k": self.layer.k, "steps": self.steps, "folds": self.folds,
                "stall_cycles": self.stall_cycles,
                "total_cycles_incl_prefetch": self.total_cycles_incl_prefetch,
                "macs": self.macs, "window_cycles": self.window_cycles,
                "compute_util_pct": round(self.compute_util_pct, 6),
                "echoes": self.echoes,
                "unechoed_read_stalls": [list(u) for u in self.unechoed],
                "reported": {"total_cycles_incl_prefetch": self.report.total_cycles_incl_prefetch,
                             "total_cycles": self.report.total_cycles,
                             "stall_cycles": self.report.stall_cycles,
                             "compute_util_pct": self.report.compute_util_pct}}


@dataclass
class _Rows:
    """The bundle's rows as numpy column chunks, appended per kind of instruction."""

    inst: list[dict[str, Any]] = field(default_factory=list)
    deps: list[tuple[np.ndarray, np.ndarray, str]] = field(default_factory=list)
    memory: list[tuple[np.ndarray, np.ndarray, str, str, int | None]] = field(
        default_factory=list)
    keys: int = 0
    shadows: dict[str, list[int]] = field(default_factory=dict)
    """Per read operand, when each of its shadow queues is free (bundle cycles)."""

    def add(self, engine: str, opcode: str, start: np.ndarray, end: np.ndarray, *,
            elements: np.ndarray, nbytes: np.ndarray, flops: np.ndarray | None = None,
            pc: np.ndarray | None = None, layer: str) -> np.ndarray:
        """Instructions with provisional keys (ids are given once all are known)."""
        keys = np.arange(self.keys, self.keys + start.size, dtype=np.int64)
        self.keys += start.size
        self.inst.append({"key": keys, "engine": engine, "opcode": opcode, "start": start,
                          "end": end, "elements": elements, "bytes": nbytes, "flops": flops,
                          "pc": pc, "layer": layer})
        return keys

    def words(self, keys: np.ndarray, per_row: np.ndarray | None, valid: np.ndarray,
              words: np.ndarray, access: str, where: tuple[str, int | None]) -> None:
        """Memory rows: the words of each trace row (`valid` of them), for the instruction of
        that row (`keys` per run of `per_row` rows, or per row)."""
        row_key = keys if per_row is None else np.repeat(keys, per_row)
        self.memory.append((np.repeat(row_key, valid.sum(axis=1)), words, where[0], access,
                            where[1]))


def shadow_engine(op: str, queue: int) -> str:
    """Shadow queue `queue` of read operand `op`: it holds copies of op's bursts (echoes)."""
    return f"shadow.{op}.{queue}"


def _echo_rows(rows: _Rows, echoes: tuple[Echo, ...], loads: dict[str, tuple[np.ndarray, ...]],
               dram: dict[str, TraceTable], shift: int, layer: str,
               at_step: Callable[[np.ndarray], np.ndarray]) -> None:
    """Each echo's copies as `burst_shadow` instructions, one after another from the end of its
    anchor, each with the bytes and words of its burst; and its deps: anchor -> copies -> the
    array step. A copy goes on the shadow queue of the copy before it when that one is free,
    else on the queue of its operand free longest (a new one if none is)."""
    copies = [(k, op, j) for k, e in enumerate(echoes) for op, j in e.copies]
    period = {op: np.diff(loads[op][1]) + 1 for op in (IFMAP, FILTER)}
    words = {op: np.diff(np.r_[0, np.cumsum(loads[op][3].sum(axis=1))][loads[op][1]])
             for op in (IFMAP, FILTER)}
    begin = np.zeros(len(copies), dtype=np.int64)
    queue = np.zeros(len(copies), dtype=np.int64)
    at, last = 0, -1
    for i, (k, op, j) in enumerate(copies):
        if i == 0 or copies[i - 1][0] != k:
            at, last = echoes[k].start + shift, -1
        free = rows.shadows.setdefault(op, [])
        if not (0 <= last < len(free) and free[last] <= at and copies[i - 1][1] == op):
            fits = [q for q, t in enumerate(free) if t <= at]
            last = min(fits, key=lambda q: (free[q], q)) if fits else len(free)
            if last == len(free):
                free.append(at)
        begin[i], queue[i] = at, last
        at += int(period[op][j])
        free[last] = at
    key = np.zeros(len(copies), dtype=np.int64)
    ops = np.array([op for _, op, _ in copies])
    burst = np.array([j for _, _, j in copies], dtype=np.int64)
    for op in sorted(set(ops.tolist())):
        for q in sorted(set(queue[ops == op].tolist())):
            pick = np.flatnonzero((ops == op) & (queue == q))
            key[pick] = rows.add(shadow_engine(op, q), "burst_shadow", begin[pick],
                                 begin[pick] + period[op][burst[pick]], layer=layer,
                                 elements=words[op][burst[pick]],
                                 nbytes=(period[op][burst[pick]] - 1) * dram[op].width
                                 * WORD_BYTES)
    src: list[int] = []
    dst: list[int] = []
    first_copy = 0
    for e in echoes:
        kind, op, where = e.anchor
        anchors = ([int(at_step(np.array([where]))[0])] if kind == "step" else
                   [int(loads[op][0][where])] if kind == "burst" else
                   [int(loads[IFMAP][0][0]), int(loads[FILTER][0][0])])
        chain = key[first_copy:first_copy + len(e.copies)].tolist()
        first_copy += len(e.copies)
        chain.append(int(at_step(np.array([e.step]))[0]))
        src += anchors + chain[:-1]
        dst += [chain[0]] * len(anchors) + chain[1:]
    rows.deps.append((np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), "data"))


def _import_layer(rows: _Rows, folder: Path, index: int, layer: GemmLayer, cfg: ScaleSimConfig,
                  report: ComputeReport, start_at: int, step_base: int,
                  after: np.ndarray) -> tuple[LayerImport, int, np.ndarray, tuple[int, int]]:
    """Append one layer's instructions, deps and memory; returns its summary, the time its last
    instruction ends, that instruction's key (the next layer's prefetches wait for it) and the
    ifmap and filter DRAM traces' row widths."""
    t = {key: read_trace_csv(folder / name) for key, name in TRACE_FILES.items()}
    sram = {op: t[(op, "sram")] for op in OPERANDS}
    dram = {op: t[(op, "dram")] for op in OPERANDS}
    n = sram[IFMAP].rows
    count, steps = fold_count(layer, cfg)  # checked before the folds' arrays are made
    if n != count * steps:
        raise _fail(sram[IFMAP].path, None,
                    f"{n:,} array steps, but {layer.name} ({layer.m}x{layer.n}x{layer.k}) folds "
                    f"onto a {cfg.array_rows}x{cfg.array_cols} {cfg.dataflow.value} array as "
                    f"{count:,} x {steps:,} = {count * steps:,} steps.")
    folds = fold_layer(layer, cfg)
    r, c = cfg.array_rows, cfg.array_cols
    lanes = {IFMAP: c if cfg.dataflow is Dataflow.IS else r,
             FILTER: r if cfg.dataflow is Dataflow.IS else c, OFMAP: c}
    for op in OPERANDS:
        if sram[op].rows != n:
            raise _fail(sram[op].path, None, f"{sram[op].rows:,} array steps, but "
                                             f"{sram[IFMAP].path.name} has {n:,}.")
        if sram[op].width != lanes[op]:
            raise _fail(sram[op].path, 0, f"{sram[op].width} lanes, but a {r}x{c} "
                                          f"{cfg.dataflow.value} array has {lanes[op]}.")
        if op != OFMAP and dram[op].rows == 0:
            raise _fail(dram[op].path, None, "no DRAM reads.")
        back = np.flatnonzero(np.diff(dram[op].cycles) < 1) if op != OFMAP else ()
        if len(back):
            raise _fail(dram[op].path, int(back[0]) + 1, "a cycle stamp that is not after the "
                                                         "one before.")
    widths = {IFMAP: cfg.read_bandwidth[0], FILTER: cfg.read_bandwidth[1],
              OFMAP: cfg.write_bandwidth}
    for op in OPERANDS if cfg.bandwidth_mode is BandwidthMode.USER else (OFMAP,):
        if dram[op].rows and dram[op].width != widths[op]:
            raise _fail(dram[op].path, 0, f"rows of {dram[op].width} words, but the config's "
                                          f"{op} interface moves {widths[op]} per cycle.")

    demand = demand_cycles(sram[IFMAP], sram[FILTER], sram[OFMAP])
    stall = np.diff(demand) - 1
    first_read = min(int(dram[IFMAP].cycles[0]), int(dram[FILTER].cycles[0]))
    shift = start_at - first_read
    cuts: list[np.ndarray] = [np.array([0, n]), np.arange(folds.count) * folds.steps,
                              np.flatnonzero(stall > 0)]

    # Prefetch bursts into the ifmap and filter SRAMs.
    loads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for op in (IFMAP, FILTER):
        d = dram[op]
        valid = dram_words(d)
        words = valid.sum(axis=1)
        if cfg.bandwidth_mode is BandwidthMode.USER:
            bounds = _runs(d.cycles)
        else:
            fill = int(np.searchsorted(d.cycles, 0))
            change = np.flatnonzero(np.diff(words) != 0) + 1
            bounds = np.unique(np.r_[0, fill, change[change > fill], d.rows])
        cum = np.r_[0, np.cumsum(words)]
        keys = rows.add(LOAD_QUEUE[op], "dma_load", d.cycles[bounds[:-1]] + shift,
                        d.cycles[bounds[1:] - 1] + 1 + shift, layer=layer.name,
                        elements=cum[bounds[1:]] - cum[bounds[:-1]],
                        nbytes=np.diff(bounds) * d.width * WORD_BYTES)
        if cfg.bandwidth_mode is BandwidthMode.USER:
            issued = miss_steps(sram[op], d.cycles[bounds[1:] - 1], demand)
        else:
            issued = first_use(sram[op], d, valid, bounds, demand)
        loads[op] = (keys, bounds, issued, valid)
        cuts.append(issued[issued >= 0])

    # Drains of the output SRAM, and its final flush: the tail of the DRAM trace that starts at
    # the last step's write stamp and runs on without a gap.
    d, o = dram[OFMAP], sram[OFMAP]
    last_write = int(o.cycles[-1])
    flush_at = d.rows
    if d.rows and int(d.cycles[-1]) >= last_write:
        flush_at = d.rows - 1 - (int(d.cycles[-1]) - last_write)
        if flush_at < 0 or int(d.cycles[flush_at]) != last_write or \
                np.any(np.diff(d.cycles[flush_at:]) != 1):
            raise _fail(d.path, max(flush_at, 0), f"the final flush of the output SRAM does not "
                                                  f"start at the last step's write (cycle "
                                                  f"{last_write}) and run on.")
    written = o.addrs >= 0
    out_valid = d.addrs >= 0
    if not np.array_equal(d.addrs[out_valid], o.addrs[written]):
        raise _fail(d.path, None, f"the DRAM writes ({int(out_valid.sum()):,} words) are not the "
                                  f"array's writes ({int(written.sum()):,} words) in order.")
    line_words = np.r_[0, np.cumsum(out_valid.sum(axis=1))]
    drain_rows = math.ceil(cfg.half_ofmap_words / cfg.write_bandwidth)
    runs = _runs(d.cycles[:flush_at]) if flush_at else np.zeros(1, dtype=np.int64)
    drain_bounds = np.unique(np.concatenate(
        [runs] + [np.arange(a, b, drain_rows) for a, b in zip(runs[:-1], runs[1:])]))
    stores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for engine, bounds in ((DRAIN, drain_bounds), (FLUSH, np.array([flush_at, d.rows]))):
        if bounds.size < 2 or bounds[0] == bounds[-1]:
            continue
        # SCALE-Sim starts a drain at the write that finds the SRAM past half full and the
        # interface free (memory/write_buffer.py): the step whose write stamp is the drain's
        # first row; the flush at the last step.
        source = np.searchsorted(o.cycles, d.cycles[bounds[:-1]])
        wrong = np.flatnonzero((source >= n) | (o.cycles[np.minimum(source, n - 1)]
                                                != d.cycles[bounds[:-1]]))
        if wrong.size:
            raise _fail(d.path, int(bounds[wrong[0]]), f"a drain starts at cycle "
                                                       f"{int(d.cycles[bounds[wrong[0]]])}, "
                                                       f"when no array step writes.")
        keys = rows.add(engine, "dma_store", d.cycles[bounds[:-1]] + shift,
                        d.cycles[bounds[1:] - 1] + 1 + shift, layer=layer.name,
                        elements=line_words[bounds[1:]] - line_words[bounds[:-1]],
                        nbytes=np.diff(bounds) * d.width * WORD_BYTES)
        stores[engine] = (keys, bounds, source)
        cuts.append(source + 1)
    # Steps that found the output SRAM full waited for the drain in flight: their stamp is the
    # drain's last row.
    waited = np.flatnonzero(o.cycles > demand[:-1])
    drain_of_wait = np.zeros(0, dtype=np.int64)
    if waited.size:
        ends = d.cycles[drain_bounds[1:] - 1] if DRAIN in stores else np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(ends, o.cycles[waited]), max(ends.size - 1, 0))
        ok = (ends[pos] == o.cycles[waited]) if ends.size else np.zeros(waited.size, bool)
        if not ok.all():
            bad = int(waited[np.flatnonzero(~ok)[0]])
            raise _fail(o.path, bad, f"the step written at cycle {int(o.cycles[bad])} waited "
                                     f"for no drain of {d.path.name}.")
        drain_of_wait = pos
    cuts.append(waited)

    # SCALE-Sim's read stalls (user mode): echoes of bursts on shadow queues.
    plan = EchoPlan((), ())
    if cfg.bandwidth_mode is BandwidthMode.USER:
        ends = {op: dram[op].cycles[loads[op][1][1:] - 1] for op in (IFMAP, FILTER)}
        for op, e in ends.items():
            starts = dram[op].cycles[loads[op][1][:-1]]
            bad = np.flatnonzero(np.r_[e[0] != demand[0] - 1, starts[1:] != e[:-1] + 2])
            if bad.size:
                raise _fail(dram[op].path, int(loads[op][1][bad[0]]),
                            "a prefetch burst that does not start two cycles after the one "
                            "before ends (or a fill that does not end the cycle before the "
                            "array's first demand).")
        plan = echo_plan(demand, {op: sram[op].cycles for op in ends}, o.cycles, ends,
                         {op: loads[op][2] for op in ends})
        cuts.append(np.array([e.step for e in plan.echoes], dtype=np.int64))
        cuts.append(np.array([e.anchor[2] + 1 for e in plan.echoes if e.anchor[0] == "step"],
                             dtype=np.int64))

    # Array instructions: runs of steps between cuts.
    edges = np.unique(np.concatenate(cuts))
    first, stop = edges[:-1], edges[1:]
    macs = np.r_[0, np.cumsum(step_macs(folds))]
    touched = np.r_[0, np.cumsum(sum((sram[op].addrs >= 0).sum(axis=1) for op in OPERANDS))]
    seg = rows.add(ARRAY, "matmul", demand[first + 1] - 1 + shift, demand[stop] + shift,
                   layer=layer.name, elements=stop - first,
                   nbytes=(touched[stop] - touched[first]) * WORD_BYTES,
                   flops=2 * (macs[stop] - macs[first]), pc=first + step_base)

    def at_step(step: np.ndarray) -> np.ndarray:
        return seg[np.searchsorted(first, step, side="right") - 1]

    # Dependencies.
    for op in (IFMAP, FILTER):
        keys, _, issued, _ = loads[op]
        has = np.flatnonzero(issued >= 0)
        dst = at_step(issued[has])
        last = np.r_[dst[1:] != dst[:-1], True] if dst.size else np.zeros(0, bool)
        rows.deps.append((keys[has][last], dst[last], "data"))   # the last of a step's bursts
        if after.size:   # the previous layer's outputs are this layer's inputs
            rows.deps.append((after, keys[:1], "data"))
        if cfg.bandwidth_mode is BandwidthMode.USER and keys.size > 1:
            other = loads[FILTER if op == IFMAP else IFMAP][0]
            rows.deps.append((other[:1], keys[1:2], "data"))
    for keys, _, source in stores.values():
        rows.deps.append((at_step(source), keys, "data"))
    if waited.size:
        rows.deps.append((stores[DRAIN][0][drain_of_wait], at_step(waited), "resource"))
    if plan.echoes:
        _echo_rows(rows, plan.echoes, loads, dram, shift, layer.name, at_step)

    # Memory: DRAM words of every transfer (at their addresses in hbm), SRAM words of every
    # array instruction (in the SRAM's partition, at their place in the operand).
    sizes = {IFMAP: layer.m * layer.k, FILTER: layer.k * layer.n, OFMAP: layer.m * layer.n}
    offset = dict(zip(OPERANDS, cfg.offsets))

    def local(op: str, table: TraceTable, valid: np.ndarray) -> np.ndarray:
        words = table.addrs[valid] - offset[op]
        bad = np.flatnonzero((words < 0) | (words >= sizes[op]))
        if bad.size:
            line = int(np.repeat(np.arange(table.rows), valid.sum(axis=1))[bad[0]])
            raise _fail(table.path, line, f"address {int(words[bad[0]]) + offset[op]:,} is not "
                                          f"in the {op} operand ({sizes[op]:,} words from "
                                          f"{offset[op]:,}).")
        return words

    for op in (IFMAP, FILTER):
        keys, bounds, _, valid = loads[op]
        rows.words(keys, np.diff(bounds), valid, dram[op].addrs[valid], "read", ("hbm", None))
        rows.words(keys, np.diff(bounds), valid, local(op, dram[op], valid), "write", ON_CHIP[op])
    for keys, bounds, _ in stores.values():
        part = slice(int(bounds[0]), int(bounds[-1]))
        out = TraceTable(d.path, d.cycles[part], d.addrs[part])
        rows.words(keys, np.diff(bounds), out_valid[part], local(OFMAP, out, out_valid[part]),
                   "read", ON_CHIP[OFMAP])
        rows.words(keys, np.diff(bounds), out_valid[part], d.addrs[part][out_valid[part]],
                   "write", ("hbm", None))
    step_key = at_step(np.arange(n))
    for op in OPERANDS:
        valid = sram[op].addrs >= 0
        rows.words(step_key, None, valid, local(op, sram[op], valid),
                   "write" if op == OFMAP else "read", ON_CHIP[op])

    # The layer's end: its last DRAM write (or step), and the instruction that makes it.
    ends = [(int(demand[-1]), int(seg[-1]))] + [
        (int(d.cycles[b[1:] - 1].max()) + 1, int(k[np.argmax(d.cycles[b[1:] - 1])]))
        for k, b, _ in stores.values()]
    end, last_key = max(ends)
    if d.rows:  # SCALE-Sim: the last DRAM write's stamp less the first DRAM read's
        end = int(d.cycles.max()) + 1
    total_macs = int(macs[-1])
    window = folds.count * folds.window
    summary = LayerImport(
        layer=layer, steps=n, folds=folds.count,
        instructions=int(seg.size + sum(v[0].size for v in loads.values())
                         + sum(v[0].size for v in stores.values())
                         + sum(len(e.copies) for e in plan.echoes)),
        stall_cycles=int(stall.sum()),
        total_cycles_incl_prefetch=end - 1 - first_read, macs=total_macs,
        window_cycles=window, compute_util_pct=100.0 * total_macs / (r * c * window),
        report=report, echoes=len(plan.echoes),
        unechoed=tuple((u, int(stall[u])) for u in plan.unechoed))
    _check_report(summary, folder.parent / "COMPUTE_REPORT.csv", index)
    return summary, end + shift, np.array([last_key]), (dram[IFMAP].width, dram[FILTER].width)


def _check_report(found: LayerImport, path: Path, index: int) -> None:
    """The import must find what SCALE-Sim reported, or the inputs do not belong together."""
    rep = found.report
    pairs = (("Stall Cycles", found.stall_cycles, rep.stall_cycles),
             ("Total Cycles (incl. prefetch)", found.total_cycles_incl_prefetch,
              rep.total_cycles_incl_prefetch))
    for name, got, want in pairs:
        if got != want:
            raise ScaleSimError(f"{path}: layer {index}: {name} is {want:,}, but the traces "
                                f"give {got:,}. The report and the traces are not one SCALE-Sim "
                                f"3 run: re-run SCALE-Sim.")
    if not math.isclose(found.compute_util_pct, rep.compute_util_pct, rel_tol=1e-9,
                        abs_tol=1e-9):
        raise ScaleSimError(f"{path}: layer {index}: Compute Util is {rep.compute_util_pct:.6g} "
                            f"%, but {found.layer.name} folded by the config gives "
                            f"{found.compute_util_pct:.6g} %. Pass the run's own --config and "
                            f"--topology.")


# --- the bundle and the machine -------------------------------------------------------------


def _ranges(keys: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, first word, count) of the maximal runs of consecutive distinct words per key. Keys
    and words are packed into one int64 (key above bit 40) for a single sort."""
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if int(words.max()) >= 1 << 40 or int(keys.max()) >= 1 << 22:
        raise ScaleSimError("a SCALE-Sim address past 2**40 words, or more than 4 million "
                            "instructions in one table: too large to import.")
    # Keys arrive in order and words nearly so: a stable (merge) sort runs in near-linear time
    # on that, where numpy's hashing unique is many times slower.
    packed = np.sort((keys.astype(np.int64) << 40) | words.astype(np.int64), kind="stable")
    packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
    begin = np.flatnonzero(np.r_[True, np.diff(packed) != 1])
    k = packed[begin] >> 40
    return k, packed[begin] & ((1 << 40) - 1), np.diff(np.r_[begin, packed.size])


def _tables(rows: _Rows) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The instructions (ids by start, then engine), deps and memory tables."""
    parts = []
    for chunk in rows.inst:
        size = chunk["key"].size
        parts.append(pl.DataFrame({
            "key": chunk["key"], "engine": [chunk["engine"]] * size,
            "opcode": [chunk["opcode"]] * size, "start": chunk["start"], "end": chunk["end"],
            "elements": chunk["elements"], "bytes": chunk["bytes"],
            "flops": chunk["flops"], "layer": [chunk["layer"]] * size, "pc": chunk["pc"],
        }, schema={"key": pl.Int64, "engine": pl.String, "opcode": pl.String,
                   "start": pl.Int64, "end": pl.Int64, "elements": pl.Int64, "bytes": pl.Int64,
                   "flops": pl.Int64, "layer": pl.String, "pc": pl.Int64}))
    shadows = [shadow_engine(op, q) for op in (IFMAP, FILTER)
               for q in range(len(rows.shadows.get(op, ())))]
    rank = {**ENGINE_RANK, **{e: len(ENGINE_RANK) + i for i, e in enumerate(shadows)}}
    frame = (pl.concat(parts)
             .with_columns(pl.col("engine").replace_strict(rank).alias("rank"))
             .sort("start", "rank", "key")
             .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("id"),
                           pl.int_range(pl.len(), dtype=pl.Int64).over("engine").alias("seq")))
    ids = np.empty(rows.keys, dtype=np.int64)
    ids[frame["key"].to_numpy()] = frame["id"].to_numpy()
    deps = pl.DataFrame({
        "src": ids[np.concatenate([s for s, _, _ in rows.deps])],
        "dst": ids[np.concatenate([d for _, d, _ in rows.deps])],
        "kind": np.concatenate([[k] * s.size for s, _, k in rows.deps]).astype(str),
    }).unique(maintain_order=True).sort("dst", "src", "kind")
    memory = []
    for keys, words, space, access, partition in rows.memory:
        k, first, count = _ranges(keys, words)
        memory.append(pl.DataFrame({
            "inst": ids[k], "space": [space] * k.size, "access": [access] * k.size,
            "addr": first * WORD_BYTES, "size": count * WORD_BYTES,
            "partition": pl.Series([partition] * k.size, dtype=pl.Int64),
            "partitions": pl.Series([None if partition is None else 1] * k.size,
                                    dtype=pl.Int64)}))
    instructions = frame.select("id", "engine", "seq", "opcode", "start", "end", "elements",
                                "bytes", "flops", "layer", "pc")
    return instructions, deps, pl.concat(memory).sort("inst", "space", "access", "addr")


def machine_toml(cfg: ScaleSimConfig, read_widths: tuple[int, int],
                 layers: Sequence[GemmLayer], shadow_queues: dict[str, int] | None = None
                 ) -> str:
    """The machine description of a SCALE-Sim config (with the read interfaces' widths the
    traces show, which calc mode chooses), for `tracekit replay --machine FILE`. Its on-chip
    spaces hold the layers' operands: SCALE-Sim's SRAMs look words up by their operand
    address, so the bundle places them there, ifmap in sbuf partition 0, filter in 1, ofmap in
    psum; the SRAMs' capacities are in the description."""
    sbuf = max(max(la.m * la.k, la.k * la.n) for la in layers) * WORD_BYTES
    psum = max(la.m * la.n for la in layers) * WORD_BYTES
    ifmap_bw, filter_bw = (w * WORD_BYTES for w in read_widths)
    write_bw = cfg.write_bandwidth * WORD_BYTES
    load_setup = 1.0 if cfg.bandwidth_mode is BandwidthMode.USER else 0.0
    return "\n".join([
        f"# Made by `tracekit convert scalesim` from the SCALE-Sim config of {cfg.run_name}.",
        "# Replay the converted trace with it: tracekit replay TRACE --machine THIS --mode model",
        f'name = "scalesim-{cfg.run_name}"',
        f'description = "SCALE-Sim {cfg.array_rows}x{cfg.array_cols} {cfg.dataflow.value} '
        f"array, {cfg.bandwidth_mode.value} bandwidth: reads {read_widths[0]} + "
        f"{read_widths[1]}, writes {cfg.write_bandwidth} words/cycle; SRAMs "
        f'{cfg.ifmap_sram_kb}/{cfg.filter_sram_kb}/{cfg.ofmap_sram_kb} KiB"',
        "clock_hz = 1.0e9    # SCALE-Sim counts cycles only",
        "",
        "[hbm]               # SCALE-Sim's interfaces share nothing: the sum of the queues",
        f"bytes_per_cycle = {float(ifmap_bw + filter_bw + 2 * write_bw)!r}",
        "",
        "[dma]               # one word is 1 byte; a queue moves one trace row per cycle",
        f"bytes_per_cycle = {float(ifmap_bw)!r}    # dma.q0: DRAM -> ifmap SRAM",
        "[dma.queues]",
        f'"dma.q1" = {float(filter_bw)!r}    # DRAM -> filter SRAM',
        f'"dma.q2" = {float(write_bw)!r}    # ofmap SRAM -> DRAM, drains',
        f'"dma.q3" = {float(write_bw)!r}    # ofmap SRAM -> DRAM, the final flush',
        "",
        "[latency]",
        "semaphore = 0.0",
        "data = 0.0",
        "",
        "[memory]            # the operands as the SRAMs address them: ifmap in sbuf partition",
        "partitions = 2      # 0, filter in 1, ofmap in psum (capacities: see the description)",
        f"sbuf_partition_bytes = {sbuf}",
        f"psum_partition_bytes = {psum}",
        "",
        "[engines.tensor]    # the array: one step per cycle",
        "fixed_cycles = 0.0",
        "per_element = 1.0",
        "",
        "[engines.dma]       # transfers: no set-up, rows x width bytes at the queue's rate",
        "fixed_cycles = 0.0",
        "[engines.dma.opcodes.dma_load]",
        f"fixed_cycles = {load_setup!r}    # user mode: a burst starts a cycle after the "
        f"previous one's last answer",
        "",
    ] + [line for op, width in ((IFMAP, ifmap_bw), (FILTER, filter_bw))
         for q in range((shadow_queues or {}).get(op, 0)) for line in (
        f'[engines."{shadow_engine(op, q)}"]    # copies of {op} bursts that reproduce '
        f"SCALE-Sim's read stalls",
        "fixed_cycles = 1.0",
        f"per_byte = {1.0 / width!r}", "")])


@dataclass(frozen=True)
class ScaleSimImport:
    """The bundle written, the machine description's text and what each layer holds."""

    trace: Trace
    machine_toml: str
    config: ScaleSimConfig
    layers: tuple[LayerImport, ...]


def convert_scalesim(run: str | os.PathLike[str], output: str | os.PathLike[str], *,
                     config: str | os.PathLike[str] | None = None,
                     topology: str | os.PathLike[str] | None = None,
                     overwrite: bool = False) -> ScaleSimImport:
    """Import the SCALE-Sim run in folder `run` as a bundle at `output` (written atomically).
    The machine description is returned as text; `import_scalesim` also writes it."""
    run = Path(run)
    if not run.is_dir():
        raise ScaleSimError(f"{run}: {'is a file, not' if run.exists() else 'no such'} folder. "
                            f"Pass a SCALE-Sim run folder: it holds COMPUTE_REPORT.csv and "
                            f"layer0/.")
    if Path(output).exists() and not overwrite:
        raise TraceExistsError(f"{output}: already exists. Choose another path or pass "
                               f"--force to replace it.")
    cfg_path, topo_path = find_inputs(run, None if config is None else Path(config),
                                      None if topology is None else Path(topology))
    cfg = read_config(cfg_path)
    layers = read_topology(topo_path)
    report_path = run / "COMPUTE_REPORT.csv"
    reports = read_compute_report(report_path)
    if len(reports) != len(layers):
        raise ScaleSimError(f"{report_path}: {len(reports)} layer(s), but the topology "
                            f"{topo_path} has {len(layers)}. Pass the run's own --topology.")
    rows = _Rows()
    found = []
    end, after, step_base = 0, np.zeros(0, dtype=np.int64), 0
    widths = [1, 1]
    for index, (layer, report) in enumerate(zip(layers, reports)):
        folder = run / f"layer{index}"
        if not folder.is_dir():
            raise ScaleSimError(f"{folder}: missing; {report_path} reports {len(reports)} "
                                f"layer(s). Re-run SCALE-Sim with trace saving on (-s Y).")
        summary, end, after, width = _import_layer(rows, folder, index, layer, cfg, report,
                                                   end, step_base, after)
        step_base += summary.steps
        found.append(summary)
        widths = [max(w, v) for w, v in zip(widths, width)]
    instructions, deps, memory = _tables(rows)
    extra = {
        "scalesim": {"run": run.name, "config": cfg_path.name, "topology": topo_path.name,
                     "dataflow": cfg.dataflow.value, "bandwidth_mode": cfg.bandwidth_mode.value,
                     "array": [cfg.array_rows, cfg.array_cols], "word_bytes": WORD_BYTES,
                     "layers": [s.to_dict() for s in found]},
        "array": {"engine": ARRAY, "rows": cfg.array_rows, "cols": cfg.array_cols,
                  "window_cycles": {s.layer.name: s.window_cycles for s in found},
                  "window": "cycles of SCALE-Sim's folds per layer (Compute Util's "
                            "denominator)"},
    }
    trace = write_trace(output, instructions, deps=deps, memory=memory, workload=cfg.run_name,
                        producer=Producer("scalesim", "3"), machine=f"scalesim-{cfg.run_name}",
                        clock_hz=1.0e9, created=None, extra=extra, overwrite=overwrite)
    queues = {op: len(free) for op, free in rows.shadows.items()}
    return ScaleSimImport(trace, machine_toml(cfg, (widths[0], widths[1]), layers, queues), cfg,
                          tuple(found))


def default_machine_path(output: str | os.PathLike[str]) -> Path:
    """Where `tracekit convert scalesim` puts the machine description: beside the bundle."""
    out = Path(output)
    return out.with_name(f"{out.name}.machine.toml")


def import_scalesim(run: str | os.PathLike[str], output: str | os.PathLike[str], *,
                    machine_out: str | os.PathLike[str] | None = None,
                    config: str | os.PathLike[str] | None = None,
                    topology: str | os.PathLike[str] | None = None,
                    overwrite: bool = False) -> tuple[ScaleSimImport, Path]:
    """Write the bundle at `output` and the machine description at `machine_out` (default:
    OUTPUT.machine.toml beside it). Nothing is left behind when either fails."""
    machine_path = Path(machine_out) if machine_out is not None else \
        default_machine_path(output)
    if machine_path.exists() and not overwrite:
        raise TraceExistsError(f"{machine_path}: already exists. Choose another path "
                               f"(--machine-out) or pass --force to replace it.")
    if not machine_path.resolve().parent.is_dir():
        raise ScaleSimError(f"{machine_path.parent}: no such folder for the machine "
                            f"description. Create it or choose another --machine-out.")
    if machine_path.resolve() == Path(output).resolve():
        raise ScaleSimError(f"{machine_path}: the machine description would replace the "
                            f"bundle. Choose another --machine-out.")
    try:
        # The machine goes to a temporary file first (made before the conversion's work, so
        # that an unwritable folder fails early) and is renamed into place once the bundle,
        # itself written atomically, is complete.
        with atomic_file(machine_path) as temporary:
            temporary.write_text("", encoding="utf-8")
            imported = convert_scalesim(run, output, config=config, topology=topology,
                                        overwrite=overwrite)
            temporary.write_text(imported.machine_toml, encoding="utf-8")
    except OSError as exc:
        raise ScaleSimError(f"{machine_path}: cannot write the machine description "
                            f"({exc.strerror}).") from None
    return imported, machine_path
