"""Regression diff of two runs of one workload: what changed, where, and which part of the
makespan change each layer and engine accounts for.

For a base run of 1,000 cycles and a candidate of 1,100 whose critical paths hold 600 and 680
cycles of dma.q2, 300 and 310 of tensor, and 100 and 110 of edge latency, the attribution reads

    dma.q2           +80   80.0 % of the change
    tensor           +10   10.0 %
    (edge latency)   +10   10.0 %

and always adds up to the makespan change, because each critical path's composition sums to
its makespan. Instructions are aligned by `pc` and occurrence (the n-th dynamic instance of a
static instruction) when both traces carry pc, else by layer, opcode and occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from tracekit.analysis.critical_path import CriticalPath, critical_path
from tracekit.analysis.figures import accounts
from tracekit.analysis.signatures import find_bugs, findings_frame
from tracekit.analysis.stalls import stall_table
from tracekit.analysis.timelines import Source, timeline
from tracekit.errors import TracekitError
from tracekit.replay.machine import Machine
from tracekit.trace.bundle import Trace
from tracekit.trace.names import shortened_column

TOP_INSTRUCTIONS = 10
"""Aligned instructions listed as the ones that changed most."""

NO_LAYER = "(none)"
"""The layer group of instructions whose layer is null."""


class DiffError(TracekitError):
    """Two traces that cannot be compared as asked (different workloads, say)."""


class Alignment(StrEnum):
    PC = "pc and occurrence"
    LAYER_OPCODE = "layer, opcode and occurrence"


@dataclass(frozen=True)
class Profile:
    """What a diff needs of one run: its timeline with each instruction's busy cycles and wait
    before it (`instructions`: id, engine, opcode, layer, pc, start, end, duration (busy),
    wait (with the HBM contention), contention (the HBM contention alone)), its stall
    table, critical path and findings."""

    path: str
    workload: str
    source: Source
    makespan: int
    instructions: pl.DataFrame
    stalls: pl.DataFrame
    critical: CriticalPath
    findings: pl.DataFrame


def profile(trace: Trace, machine: Machine, source: Source | str,
            findings: bool = True) -> Profile:
    """Timeline, stalls, critical path and (unless `findings` is False) bug signatures."""
    if trace.manifest.tables["instructions"].rows == 0:
        raise DiffError(f"{trace.path}: the trace has no instructions; there is nothing to "
                        f"compare.")
    line = timeline(trace, machine, source)
    f = line.frame
    # Busy and wait as every report counts them (`figures.accounts`): the cycles a replayed
    # DMA transfer lost to HBM sharing are waiting, with the gap before the instruction.
    acc = accounts(f)
    t = pl.DataFrame({
        # Names stay dictionary codes (shared by both runs' frames): no row's name is copied.
        "id": f["id"], "engine": f["engine"], "opcode": f["opcode"],
        "layer": f["layer"].fill_null(NO_LAYER),
        "pc": trace.read_instructions(["id", "pc"])["pc"],
        "start": f["start"], "end": f["end"], "duration": acc.busy,
        "wait": acc.wait + acc.contention, "contention": acc.contention})
    path = critical_path(line.frame, line.graph, line.kind_latency)
    found = findings_frame(find_bugs(trace, machine, line.graph, line.replayed) if findings else [])
    return Profile(path=str(trace.path), workload=trace.manifest.workload, source=line.source,
                   makespan=path.makespan, instructions=t, stalls=stall_table(line.frame),
                   critical=path, findings=found)


@dataclass(frozen=True)
class Diff:
    """A diff's facts. Frames:

    - `by_layer`, `by_engine`, `by_opcode`: the group, then for base, candidate and delta:
      instructions, busy (cycles of its instructions), stall (cycles waited before them).
    - `attribution_engine`, `attribution_layer`: group, base and cand cycles on the critical
      path, delta, share_pct (of the makespan change; sums to 100 when it is non-zero).
    - `stall_causes`: engine, cause ("engine/kind", "hbm", ...), base, cand, delta cycles of
      the waiting bucket, largest change first.
    - `changed`: the aligned instructions whose duration changed most: key, base_id, cand_id,
      engine, opcode, layer, base and cand duration, delta, start_shift (cycles).
    - `new_findings`, `resolved_findings`: code, severity, message.
    """

    base: str
    cand: str
    workload: str
    source: Source
    base_makespan: int
    cand_makespan: int
    threshold_pct: float
    alignment: Alignment
    matched: int
    only_base: int
    only_cand: int
    by_layer: pl.DataFrame
    by_engine: pl.DataFrame
    by_opcode: pl.DataFrame
    attribution_engine: pl.DataFrame
    attribution_layer: pl.DataFrame
    stall_causes: pl.DataFrame
    changed: pl.DataFrame
    new_findings: pl.DataFrame
    resolved_findings: pl.DataFrame

    @property
    def delta(self) -> int:
        return self.cand_makespan - self.base_makespan

    @property
    def delta_pct(self) -> float:
        return 100.0 * self.delta / max(self.base_makespan, 1)

    @property
    def regression(self) -> bool:
        return self.delta_pct > self.threshold_pct


def _by(key: str, base: pl.DataFrame, cand: pl.DataFrame) -> pl.DataFrame:
    def agg(t: pl.DataFrame) -> pl.DataFrame:
        return t.group_by(key).agg(pl.len().cast(pl.Int64).alias("instructions"),
                                   pl.col("duration").sum().alias("busy"),
                                   pl.col("wait").sum().alias("stall"))

    out = (agg(base).join(agg(cand), on=key, how="full", coalesce=True, suffix="_cand")
           .with_columns(pl.col(key).cast(pl.String)))
    out = out.rename({"instructions": "instructions_base", "busy": "busy_base",
                      "stall": "stall_base"}).fill_null(0)
    for col in ("instructions", "busy", "stall"):
        out = out.with_columns((pl.col(f"{col}_cand") - pl.col(f"{col}_base"))
                               .alias(f"{col}_delta"))
    order = ["busy_delta", "stall_delta"]
    return (out.select(key, *[f"{c}_{s}" for c in ("instructions", "busy", "stall")
                              for s in ("base", "cand", "delta")])
            .sort(pl.col(order[0]).abs() + pl.col(order[1]).abs(), key,
                  descending=[True, False]))


def attribution(key: str, base: pl.DataFrame, cand: pl.DataFrame, total: int) -> pl.DataFrame:
    """The makespan change `total` split by `key` (engine or layer) between two critical
    paths' compositions (`base`, `cand`: key, cycles): key (null as NO_LAYER), base, cand,
    delta (cycles), share_pct (of `total`); groups that did not change are left out, the
    largest change first, ties by key."""

    def side(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return (frame.select(pl.col(key).fill_null(NO_LAYER), pl.col("cycles"))
                .group_by(key).agg(pl.col("cycles").sum().alias(name)))

    out = (side(base, "base").join(side(cand, "cand"), on=key, how="full", coalesce=True)
           .fill_null(0)
           .with_columns((pl.col("cand") - pl.col("base")).alias("delta")))
    share = (pl.col("delta") / total * 100) if total else pl.lit(0.0)
    return (out.with_columns(share.alias("share_pct"))
            .filter(pl.col("delta") != 0)
            .sort(pl.col("delta").abs(), key, descending=[True, False]))


def _aligned(base: pl.DataFrame, cand: pl.DataFrame) -> tuple[Alignment, pl.DataFrame]:
    """Both runs' instructions with a shared key: pc and occurrence, or layer, opcode and
    occurrence."""
    if base["pc"].null_count() == 0 and cand["pc"].null_count() == 0:
        method, parts = Alignment.PC, ["pc"]
    else:
        method, parts = Alignment.LAYER_OPCODE, ["layer", "opcode"]
    joined = keyed(base, parts).join(keyed(cand, parts), on=[*parts, "occurrence"],
                                     how="full", coalesce=True, suffix="_cand",
                                     nulls_equal=True)
    return method, joined


def keyed(t: pl.DataFrame, parts: list[str]) -> pl.DataFrame:
    """`t` with `occurrence` (the n-th instruction of its `parts` group in program order:
    ids, stable when only the timing changed) and a readable `key`, e.g. "pc 7 #3"."""
    t = t.sort("id").with_columns(pl.int_range(pl.len()).over(parts).alias("occurrence"))
    # Names in the key as people read them (`names.shortened`): rows x a bounded length.
    label = (pl.concat_str([pl.lit("pc "), pl.col("pc").cast(pl.String)]) if parts == ["pc"]
             else pl.concat_str([shortened_column(t["layer"]), pl.lit("/"),
                                 shortened_column(t["opcode"])]))
    return t.with_columns(pl.concat_str([label, pl.lit(" #"), pl.col("occurrence")
                                         .cast(pl.String)]).alias("key"))


PER_INSTRUCTION = {"deadlock-wait", "start-before-dependency", "engine-overlap",
                   "negative-duration", "out-of-bounds", "race-raw", "race-war", "race-waw",
                   "latency-outlier", "engine-stuck", "dead-write"}
"""Codes whose evidence names the instructions a finding is about; the other codes'
evidence lists examples, which move with the timing."""


def masked_message() -> pl.Expr:
    """A finding's message with every number masked ("#"): the figures move with the timing,
    the words say which finding it is."""
    return pl.col("message").str.replace_all(r"[0-9][0-9,.]*", "#")


def _finding_keys(frame: pl.DataFrame, names: dict[int, str]) -> pl.DataFrame:
    """A finding's identity across runs: its code, engines and message with every number
    masked (the figures move with the timing), and for per-instruction codes the aligned
    keys of its instructions (ids differ between runs of one program)."""
    masked = masked_message()
    aligned = [",".join(names.get(i, f"?{i}") for i in ids) if code in PER_INSTRUCTION
               else "" for code, ids in frame.select("code", "instructions").iter_rows()]
    return frame.with_columns(
        pl.concat_str([pl.col("code"), pl.col("engines").list.join(","), masked,
                       pl.Series(aligned, dtype=pl.String)], separator="|").alias("_key"))


def check_comparable(base: Trace | Profile, cand: Trace | Profile, force: bool = False) -> None:
    """Refuse two runs of different workloads (by the manifests' workload names) unless
    `force`."""
    names = [t.manifest.workload if isinstance(t, Trace) else t.workload for t in (base, cand)]
    if names[0] != names[1] and not force:
        paths = [str(t.path) for t in (base, cand)]
        raise DiffError(f"{paths[0]} is workload {names[0]!r} but {paths[1]} is {names[1]!r}: "
                        f"a diff of different workloads compares unrelated instructions. Pass "
                        f"--force to compare them anyway.")


def diff(base: Profile, cand: Profile, threshold_pct: float = 2.0,
         force: bool = False) -> Diff:
    """Compare two profiles. Refuses different workloads unless `force`."""
    check_comparable(base, cand, force)
    total = cand.makespan - base.makespan
    method, joined = _aligned(base.instructions, cand.instructions)
    matched = joined.filter(pl.col("id").is_not_null() & pl.col("id_cand").is_not_null())
    changed = (matched.with_columns((pl.col("duration_cand") - pl.col("duration"))
                                    .alias("delta"),
                                    (pl.col("start_cand") - pl.col("start")).alias("start_shift"))
               .filter(pl.col("delta") != 0)
               .sort(pl.col("delta").abs(), "key", descending=[True, False])
               .head(TOP_INSTRUCTIONS)
               .select("key", pl.col("id").alias("base_id"), pl.col("id_cand").alias("cand_id"),
                       "engine", "opcode", "layer", pl.col("duration").alias("base"),
                       pl.col("duration_cand").alias("cand"), "delta", "start_shift"))
    waits = [s.filter(pl.col("bucket") == "waiting").select("engine", "cause", "cycles")
             for s in (base.stalls, cand.stalls)]
    stall_causes = (waits[0].rename({"cycles": "base"})
                    .join(waits[1].rename({"cycles": "cand"}), on=["engine", "cause"],
                          how="full", coalesce=True).fill_null(0)
                    .with_columns((pl.col("cand") - pl.col("base")).alias("delta"))
                    .filter(pl.col("delta") != 0)
                    .sort(pl.col("delta").abs(), "engine", "cause",
                          descending=[True, False, False]))
    # Aligned keys of the instructions the findings name (a handful, not the whole run).
    names = []
    for p, id_col, key_col in ((base, "id", "key"), (cand, "id_cand", "key_cand")):
        named = p.findings["instructions"].explode().drop_nulls().unique()
        keys = joined.filter(pl.col(id_col).is_in(named.implode())).select(id_col, key_col)
        names.append(dict(keys.iter_rows()))
    keys = [_finding_keys(f, n) for f, n in zip((base.findings, cand.findings), names,
                                                strict=True)]
    cols = ["code", "severity", "message"]
    new = keys[1].filter(~pl.col("_key").is_in(keys[0]["_key"].implode())).select(cols)
    resolved = keys[0].filter(~pl.col("_key").is_in(keys[1]["_key"].implode())).select(cols)
    return Diff(
        base=base.path, cand=cand.path, workload=cand.workload, source=cand.source,
        base_makespan=base.makespan, cand_makespan=cand.makespan, threshold_pct=threshold_pct,
        alignment=method, matched=matched.height,
        only_base=joined.filter(pl.col("id_cand").is_null()).height,
        only_cand=joined.filter(pl.col("id").is_null()).height,
        by_layer=_by("layer", base.instructions, cand.instructions),
        by_engine=_by("engine", base.instructions, cand.instructions),
        by_opcode=_by("opcode", base.instructions, cand.instructions),
        attribution_engine=attribution("engine", base.critical.by_engine, cand.critical.by_engine,
                                        total),
        attribution_layer=attribution("layer", base.critical.by_layer, cand.critical.by_layer,
                                       total),
        stall_causes=stall_causes, changed=changed, new_findings=new,
        resolved_findings=resolved)
