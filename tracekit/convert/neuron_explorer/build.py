"""One execution of a profile as bundle tables: instructions (compute and DMA), deps,
semaphores and memory, with the counts the import report gives. The rules are in the
package's docstring; every step is columnar (polars, NumPy, the compiled passes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.convert.neuron_explorer.passes import (
    ENGINE_ALIASES,
    count_at,
    link_nearest,
    location_space,
    parse_offset,
    parse_waits,
    partition_runs,
    semaphore_number,
    union_ns,
)
from tracekit.convert.neuron_explorer.report import ImportReport, value_counts
from tracekit.convert.neuron_explorer.tables import (
    BYTE_COLUMNS,
    COUNTER_COLUMNS,
    FLOW_COLS,
    FLOW_TABLES,
    INSTRUCTION_COLS,
    LAYER_COLUMNS,
    NEFF_COLS,
    PACKET_COLS,
    SEMAPHORE_COLS,
    TRANSFER_COLS,
    Col,
    Execution,
    NeuronProfileError,
    plain_values,
    read_table,
    rows_of,
    table_files,
)
from tracekit.errors import first_line

CORE_STRIDE = 1_000_000
"""Semaphore numbers of physical core c start at c * CORE_STRIDE when a profile has several."""

REGION_BYTES = 2**40
"""The HBM address space each DMA variable (tensor) gets: offsets are relative to it."""

EVENT_OPS = ("evt_set", "evt_clr")
SKIPPED_OPS = ("none", "unknown")
SET_OP = "sem_wr_imm"

SRC_INSTRUCTION, SRC_TRANSFER, SRC_PACKET_GROUP = 0, 1, 2
SOURCE_NAMES = ("Instruction", "DmaPacketAggregated", "DmaPacket groups")
TABLE_ORDER = ("Metadata", "ExecutionInfo", "Instruction", "DmaPacketAggregated", "DmaPacket",
               "Flow", "SemaphoreUpdate", "Summary", "Warning")


@dataclass
class _Dropped:
    """Counters of rows left out, by reason, in the order the reasons first occur."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + int(n)


def _by_distinct(series: pl.Series, fn: Any, dtype: pl.DataType) -> pl.Series:
    """`fn` (an expression builder) applied to each distinct value of a string series once,
    then mapped back onto the rows: the text columns repeat a few values many times."""
    distinct = series.unique().drop_nulls()
    mapped = pl.DataFrame({"v": distinct}).select(fn(pl.col("v")).cast(dtype))["v"]
    return series.replace_strict(distinct, mapped, default=None, return_dtype=dtype)


def _bare_engine(name: str) -> str:
    low = name.strip().lower()
    return ENGINE_ALIASES.get(low, low)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(found, value) of each key in `sorted_keys` (value -1 where not found)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.size, dtype=bool), np.full(keys.size, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    found = sorted_keys[pos] == keys
    return found, np.where(found, values[pos], -1)


def _sort_order(ecode: np.ndarray, t0: np.ndarray, tie: np.ndarray, src: np.ndarray,
                sid: np.ndarray) -> np.ndarray:
    """The row order by (ecode, t0, tie, src, sid): one stable sort of a packed key (engine
    code in the high bits, t0 in the low), then the rows with equal keys ordered by (tie,
    src, sid) among themselves. Several-key sorts cost several times more at 10M rows."""
    n = ecode.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(t0.min())
    span = int(t0.max()) - low
    shift = 62 - max(int(ecode.max()).bit_length(), 1)
    if span >= 2**shift:  # pragma: no cover - times spanning centuries
        return pl.DataFrame({"e": ecode, "t": t0, "x": tie, "s": src, "i": sid}).select(
            pl.arg_sort_by(["e", "t", "x", "s", "i"])).to_series().to_numpy().astype(np.int64)
    key = (ecode.astype(np.int64) << shift) | (t0 - low)
    order = (pl.DataFrame({"k": key}).with_row_index("i").sort("k", maintain_order=True)["i"]
             .to_numpy().astype(np.int64))
    ks = key[order]
    tied = np.r_[False, ks[1:] == ks[:-1]]
    if tied.any():
        member = tied | np.r_[tied[1:], False]
        idx = np.flatnonzero(member)
        run = np.cumsum(~tied)[idx]
        rows = order[idx]
        order[idx] = rows[np.lexsort((sid[rows], src[rows], tie[rows], run))]
    return order


class _IdMap:
    """Bundle ids of one source table's rows by their source id: every id of the table (all
    executions) sorted, with the bundle id of the imported ones (-1 for the others)."""

    def __init__(self, all_ids: np.ndarray, sid: np.ndarray, bundle_id: np.ndarray) -> None:
        if sid.size == all_ids.size and (sid.size < 2 or bool((sid[1:] > sid[:-1]).all())):
            self.keys, self.ids = sid, bundle_id  # every row imported, already in id order
        else:
            self.keys = np.sort(all_ids)
            self.ids = np.full(all_ids.size, -1, dtype=np.int64)
            if sid.size:
                self.ids[np.searchsorted(self.keys, sid)] = bundle_id

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(in the table, bundle id or -1) of each key."""
        return _lookup(self.keys, self.ids, keys)


class Build:
    """The tables of one execution, built step by step (`run`), and the counts for the
    report."""

    def __init__(self, folder: Path, execution: Execution, tolerance: int) -> None:
        self.folder = folder
        self.execution = execution
        self.tolerance = tolerance
        self.tables_read: dict[str, int] = {"Metadata": 1}
        self.missing: list[str] = []
        self.notes: list[str] = []
        self.edges_dropped = _Dropped()
        self.sem_dropped = _Dropped()
        self.waits_dropped = _Dropped()
        self.checks: dict[str, int] = {}
        self.summary: dict[str, Any] | None = None
        self.network_name: str | None = None
        self.origin = 0
        self.end_ns = 0
        self.outside = 0
        if execution.table_rows is None:
            self.missing.append("ExecutionInfo")
        else:
            self.tables_read["ExecutionInfo"] = execution.table_rows

    def _read(self, table: str, cols: tuple[Col, ...], *, required: bool = False
              ) -> pl.DataFrame | None:
        data = read_table(self.folder, table, cols, required=required)
        if data is None:
            self.missing.append(table)
        else:
            self.tables_read[table] = data.height
        return data

    def _path(self, table: str) -> Path:
        files = table_files(self.folder, table)
        return files[0] if len(files) == 1 else self.folder / f"{table}_*.parquet"

    # ---- the steps

    def run(self) -> None:
        inst = self._read("Instruction", INSTRUCTION_COLS, required=True)
        assert inst is not None
        transfers = self._read("DmaPacketAggregated", TRANSFER_COLS)
        packets = self._read("DmaPacket", PACKET_COLS)
        self.dma_source = SRC_TRANSFER
        self._check(inst, "Instruction")
        if transfers is not None:
            self._check(transfers, "DmaPacketAggregated")
        if packets is not None:
            self._check(packets, "DmaPacket")
        if transfers is None and packets is not None:
            self.dma_source = SRC_PACKET_GROUP
            transfers = self._transfers_from_packets(packets)
            self.notes.append("DmaPacketAggregated is missing: DMA transfers are DmaPacket "
                              "rows grouped by packet_aggregation_id (no source, dest, "
                              "semaphore or trigger fields).")
        cores = pl.concat([inst.select("pcore_idx")]
                          + ([transfers.select("pcore_idx")] if transfers is not None else []))
        self.multicore = cores["pcore_idx"].drop_nulls().n_unique() > 1
        if self.multicore and (nulls := cores["pcore_idx"].null_count()):
            self.notes.append(f"{nulls:,} instruction or DMA row(s) of a profile with several "
                              f"physical cores have no pcore_idx: counted as core 0.")
        del cores
        self._compute(inst)
        del inst
        self._transfers(transfers)
        del transfers
        self._packets(packets)
        del packets
        self._order()
        self._deps()
        self._semaphores()
        self._memory()
        self._extras()

    def _check(self, frame: pl.DataFrame, table: str) -> None:
        """end_ts >= start_ts, and ids unique within the table."""
        bad = frame.select((pl.col("end_ts") < pl.col("start_ts")).arg_true())["end_ts"]
        if bad.len():
            rows = ", ".join(str(r) for r in bad.head(5).to_list())
            raise NeuronProfileError(
                f"{self._path(table)}: table {table}, columns start_ts and end_ts: end_ts < "
                f"start_ts on {bad.len():,} row(s) (rows {rows}). Check the capture; every "
                f"event must end at or after its start.")
        if frame["id"].n_unique() != frame.height:
            dup = frame.filter(pl.col("id").is_duplicated())["id"].unique().sort().head(5)
            raise NeuronProfileError(
                f"{self._path(table)}: table {table}, column id: ids repeat (e.g. "
                f"{', '.join(map(str, dup.to_list()))}); ids are unique within a table, and "
                f"Flow names rows by them. Write the profile again.")

    def _core(self) -> pl.Expr:
        return pl.col("pcore_idx").fill_null(0)

    def _duration_check(self, frame: pl.DataFrame, table: str) -> None:
        if frame["duration_ns"].null_count() < frame.height:
            self.checks[f"{table} duration_ns != end_ts - start_ts"] = int(frame.select(
                (pl.col("duration_ns") != pl.col("end_ts") - pl.col("start_ts")).sum()).item())

    def _compute(self, inst: pl.DataFrame) -> None:
        """Compute instructions of the execution, their counters and parsed waits."""
        self.inst_ids = np.sort(inst["id"].to_numpy())
        w = rows_of(inst, "start_ts", self.execution)
        self.outside += inst.height - w.height
        self._duration_check(w, "Instruction")
        raw = _by_distinct(w["engine"], lambda v: v.str.strip_chars(), pl.String)
        self.compute_engine_raw = raw
        counters = [pl.col(c) for c in BYTE_COLUMNS]
        transpose = (pl.col("tensor_instruction_type").str.to_uppercase() == "TRANSPOSE"
                     ).fill_null(False)
        self.compute = w.select(
            sid="id", core=self._core(), t0="start_ts", t1="end_ts",
            tie=pl.col("pc").fill_null(-1),
            opcode=pl.when(transpose).then(pl.col("opcode") + ".TRANSPOSE")
            .otherwise(pl.col("opcode")).cast(pl.Categorical),
            elements="tensor_elements",
            bytes=pl.when(pl.any_horizontal(c.is_not_null() for c in counters))
            .then(pl.sum_horizontal(counters)).otherwise(None).cast(pl.Int64),
            flops="raw_flops",
            layer=pl.coalesce([pl.col(c) for c in LAYER_COLUMNS]).cast(pl.Categorical),
            pc="pc")
        sums = w.select([pl.col(c).sum().alias(c) for c in COUNTER_COLUMNS]
                        + [pl.col(c).null_count().alias(f"{c}_nulls") for c in COUNTER_COLUMNS])
        counters_out: dict[str, int | None] = {
            c: int(sums[c][0]) if sums[f"{c}_nulls"][0] < w.height else None
            for c in COUNTER_COLUMNS}
        is_tensor = _by_distinct(raw, lambda v: v.str.to_lowercase().replace(ENGINE_ALIASES)
                                 == "tensor", pl.Boolean)
        matmul = w.filter(is_tensor & w["opcode"].str.to_uppercase().str.starts_with("MATMUL"))
        for c in ("adjusted_flops", "adjusted_flops_transpose"):
            counters_out[c] = (int(matmul[c].sum()) if matmul[c].null_count() < matmul.height
                               else None)
        self.counters = counters_out
        runtime = parse_waits(w["operands"])
        compiled = parse_waits(w["compiler_operands"])
        compiled = compiled.filter(~pl.col("row").is_in(runtime["row"].unique().implode()))
        self.wait_rows = pl.concat([runtime, compiled], how="vertical")

    def _transfers_from_packets(self, packets: pl.DataFrame) -> pl.DataFrame:
        """DMA transfers formed from packets grouped by packet_aggregation_id: first start,
        last end, summed bytes, the first packet's queue and core."""
        return (packets.sort(["packet_aggregation_id", "start_ts", "id"])
                .group_by("packet_aggregation_id", maintain_order=True)
                .agg(start_ts=pl.col("start_ts").min(), end_ts=pl.col("end_ts").max(),
                     pcore_idx=pl.col("pcore_idx").drop_nulls().first(),
                     transfer_bytes=pl.col("transfer_bytes").sum(),
                     queue_name=pl.col("queue_name").drop_nulls().first(),
                     queue_idx=pl.col("queue_idx").drop_nulls().first())
                .rename({"packet_aggregation_id": "id"})
                .with_columns(queue_name=pl.coalesce(
                    pl.col("queue_name"), pl.lit("q") + pl.col("queue_idx").cast(pl.String),
                    pl.lit("unknown")), duration_ns=pl.lit(None, pl.Int64)))

    def _transfers(self, transfers: pl.DataFrame | None) -> None:
        """DMA transfers of the execution, and what memory rows and links need of them."""
        self.dma: pl.DataFrame | None = None
        self.dma_extra: pl.DataFrame | None = None
        self.dma_ids = np.zeros(0, dtype=np.int64)
        if transfers is None:
            return
        self.dma_ids = np.sort(transfers["id"].to_numpy())
        w = rows_of(transfers, "start_ts", self.execution)
        self.outside += transfers.height - w.height
        if self.dma_source == SRC_TRANSFER:
            self._duration_check(w, "DmaPacketAggregated")
            op = pl.col("op").str.strip_chars()
            opcode = (pl.when(pl.col("is_transpose_mode").fill_null(False))
                      .then(pl.lit("DMA.TRANSPOSE"))
                      .when(op.is_not_null() & (op.str.len_chars() > 0))
                      .then(pl.lit("DMA.") + op).otherwise(pl.lit("DMA")))
            tie = pl.col("block_id").fill_null(-1)
        else:
            opcode, tie = pl.lit("DMA"), pl.lit(-1, pl.Int64)
        self.dma_engine_raw = "dma." + w["queue_name"]
        self.dma = w.select(
            sid="id", core=self._core(), t0="start_ts", t1="end_ts", tie=tie,
            opcode=opcode.cast(pl.Categorical), elements=pl.lit(None, pl.Int64),
            bytes="transfer_bytes", flops=pl.lit(None, pl.Int64),
            layer=pl.lit(None, pl.String).cast(pl.Categorical),
            pc=pl.lit(None, pl.Int64))
        if self.dma_source == SRC_TRANSFER:
            self.dma_extra = w.select(
                sem_n=_by_distinct(w["semaphore_id"], semaphore_number, pl.Int64),
                trigger="trigger", completion="completion", variable="variable",
                source="source", dest="dest", read_offset="read_offset",
                write_offset="write_offset", read_sbuf_partitions="read_sbuf_partitions",
                write_sbuf_partitions="write_sbuf_partitions", read_bytes="read_bytes",
                write_bytes="write_bytes", transfer_bytes="transfer_bytes")

    def _packets(self, packets: pl.DataFrame | None) -> None:
        """DmaPacket's totals for the report, and its ids for Flow rows that name packets."""
        self.packet_ids: tuple[np.ndarray, np.ndarray] | None = None
        if packets is None:
            return
        p = rows_of(packets, "start_ts", self.execution)
        self.counters["dma_packets"] = p.height
        self.counters["dma_packet_bytes"] = int(p["transfer_bytes"].sum())
        self.counters["dma_packet_active_ns"] = union_ns(p["start_ts"].to_numpy(),
                                                         p["end_ts"].to_numpy())
        self.counters["dma_packet_ns"] = int((p["end_ts"] - p["start_ts"]).sum())
        self._duration_check(p, "DmaPacket")
        order = np.argsort(packets["id"].to_numpy(), kind="stable")
        self.packet_ids = (packets["id"].to_numpy()[order],
                           packets["packet_aggregation_id"].to_numpy()[order])

    def _order(self) -> None:
        """Engines named, rows sorted by (engine, start, pc or block_id, source, source id),
        ids and seq assigned; the instructions table."""
        parts = [(self.compute, self.compute_engine_raw, SRC_INSTRUCTION)]
        if self.dma is not None:
            parts.append((self.dma, self.dma_engine_raw, self.dma_source))
        bares: list[str] = []
        keys, frames = [], []
        for frame, raw, src in parts:
            distinct = raw.unique().sort()
            bare_of = [_bare_engine(n) if src == SRC_INSTRUCTION else n
                       for n in distinct.to_list()]
            index = []
            for b in bare_of:
                if b not in bares:
                    bares.append(b)
                index.append(bares.index(b))
            code = raw.cast(pl.Enum(distinct.to_list())).to_physical().to_numpy()
            bare_idx = np.asarray(index, dtype=np.int64)[code]
            keys.append((frame["core"].to_numpy(), bare_idx))
            frames.append(frame.with_columns(src=pl.lit(src, pl.Int64)))
        nb = len(bares)
        core = np.concatenate([k[0] for k in keys]).astype(np.int64)
        bare = np.concatenate([k[1] for k in keys]).astype(np.int64)
        pair = core * nb + bare
        pairs = np.unique(pair)
        names = [f"p{p // nb}.{bares[p % nb]}" if self.multicore else bares[p % nb]
                 for p in pairs.tolist()]
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
        ecode = rank[np.searchsorted(pairs, pair)]
        rows = pl.concat(frames, how="vertical")
        order = _sort_order(ecode, rows["t0"].to_numpy(), rows["tie"].to_numpy(),
                            rows["src"].to_numpy(), rows["sid"].to_numpy())
        n = order.size
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n, dtype=np.int64)
        nc = self.compute.height
        self.compute_id, self.dma_id = inverse[:nc], inverse[nc:]
        rows = rows[order]
        ec = ecode[order]
        first = np.flatnonzero(np.r_[True, ec[1:] != ec[:-1]]) if n else np.zeros(0, np.int64)
        seq = np.arange(n, dtype=np.int64) - np.repeat(first, np.diff(np.r_[first, n]))
        self.t0 = rows["t0"].to_numpy()
        self.t1 = rows["t1"].to_numpy()
        self.core = core[order]
        self.bare = bare[order]
        self.src = rows["src"].to_numpy()
        self.bares = bares
        if n:
            self.origin = int(self.t0.min())
            if self.execution.start_ts is not None and self.execution.start_ts <= self.origin:
                self.origin = int(self.execution.start_ts)
        end = self.execution.end_ts if self.execution.end_ts is not None else (
            int(self.t1.max()) if n else self.origin)
        self.end_ns = max(int(end) - self.origin, 0)
        sorted_names = sorted(names)
        engine = pl.Series(sorted_names).cast(pl.Enum(sorted_names)).gather(ec)
        self.instructions = rows.select(
            id=pl.int_range(n, dtype=pl.Int64), engine=engine, seq=pl.Series(seq),
            opcode="opcode", start=pl.col("t0") - self.origin, end=pl.col("t1") - self.origin,
            elements="elements", bytes="bytes", flops="flops", layer="layer", pc="pc")
        # Program order: a pc lower than the one before it on the engine (loops repeat pcs).
        lower = (rows["pc"] < rows["pc"].shift(1)).fill_null(False).to_numpy()
        compute = self.src == SRC_INSTRUCTION
        same = np.r_[False, (ec[1:] == ec[:-1]) & compute[1:] & compute[:-1]] if n else lower
        self.checks["pc lower than the one before on its engine"] = int((lower & same).sum())
        self.engine_counts = {name: int(c) for name, c in zip(
            sorted_names, np.bincount(ec, minlength=len(sorted_names)).tolist())}
        # What later steps need of the source rows (the rest is in the instructions table).
        self.compute = self.compute.select("sid", "core", "t0", "t1")
        if self.dma is not None:
            self.dma = self.dma.select("sid", "core")
        del self.compute_engine_raw
        self.dma_engine_raw = None

    # ---- deps

    def _endpoint(self, table: pl.Series, raw: np.ndarray) -> tuple[np.ndarray, pl.Series]:
        """A Flow side (its table names and ids) as bundle ids (-1: unresolved) and the
        reason each unresolved one does not resolve."""
        canon = _by_distinct(table, lambda v: v.str.strip_chars().str.to_lowercase()
                             .replace_strict(FLOW_TABLES, default=None,
                                             return_dtype=pl.String), pl.String)
        is_inst = (canon == "Instruction").fill_null(False).to_numpy()
        is_packet = (canon == "DmaPacket").fill_null(False).to_numpy()
        known = canon.is_not_null().to_numpy() & (is_inst | (self.dma_map is not None))
        sid = raw
        packet_found = np.zeros(raw.size, dtype=bool)
        if self.packet_ids is not None:
            packet_found, transfer = _lookup(*self.packet_ids, raw)
            sid = np.where(is_packet, transfer, raw)
        in_table, ident = self.inst_map.lookup(sid)
        if self.dma_map is not None:
            dma_in, dma_id = self.dma_map.lookup(sid)
            in_table = np.where(is_inst, in_table, dma_in)
            ident = np.where(is_inst, ident, dma_id)
        ok = known & (ident >= 0)
        why = np.zeros(raw.size, dtype=np.int64)
        why[~ok & in_table] = 1
        why[~ok & ~in_table] = 2
        why[~ok & is_packet & ~packet_found] = 3
        why[~known] = 4
        reasons = pl.Series(why).replace_strict(
            {1: "names a row of another execution", 2: "names a row not in the profile",
             3: "names a DmaPacket row not in the profile", 4: "names a table not imported"},
            default=None, return_dtype=pl.String)
        return np.where(ok, ident, -1), reasons

    def _deps(self) -> None:
        flow = self._read("Flow", FLOW_COLS)
        src = np.zeros(0, dtype=np.int64)
        dst = np.zeros(0, dtype=np.int64)
        kind = np.zeros(0, dtype="<U6")
        if flow is not None and flow.height:
            self.inst_map = _IdMap(self.inst_ids, self.compute["sid"].to_numpy(),
                                   self.compute_id)
            self.dma_map = (None if self.dma is None else
                            _IdMap(self.dma_ids, self.dma["sid"].to_numpy(), self.dma_id))
            a, why_a = self._endpoint(flow["in_table"], flow["in_id"].to_numpy())
            b, why_b = self._endpoint(flow["out_table"], flow["out_id"].to_numpy())
            why = pl.select(pl.coalesce(why_a, why_b)).to_series()
            for reason, n in value_counts(why.drop_nulls()).items():
                self.edges_dropped.add(reason, n)
            ok = why.is_null().to_numpy()
            dtype = flow["dependency_type"].str.to_uppercase()
            memory = (dtype.str.contains("ANTI", literal=True)
                      | dtype.str.contains("OUTPUT", literal=True)).fill_null(False).to_numpy()
            src, dst, memory = a[ok], b[ok], memory[ok]
            self_edge = src == dst
            self.edges_dropped.add("self edge", int(self_edge.sum()))
            src, dst, memory = src[~self_edge], dst[~self_edge], memory[~self_edge]
            late = self.t0[dst] < self.t1[src]
            self.edges_dropped.add("contradicted by observed times", int(late.sum()))
            src, dst, memory = src[~late], dst[~late], memory[~late]
            edges = pl.DataFrame({"src": src, "dst": dst, "memory": memory}).unique(
                ["src", "dst"], keep="first", maintain_order=True)
            self.edges_dropped.add("duplicate", src.size - edges.height)
            src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()
            kind = np.where(edges["memory"].to_numpy(), "memory", "data")
        flow_count = src.size
        fallback = 0
        if self.dma_extra is not None and self.dma_extra.height:
            has_in = np.zeros(self.t0.size, dtype=bool)
            has_in[dst] = True
            need = self.dma_extra.select("trigger", "completion").with_columns(
                id=pl.Series(self.dma_id), core=self.dma["core"] if self.dma is not None
                else None).filter(pl.col("trigger").is_not_null()
                                  & pl.col("completion").is_not_null()
                                  & ~pl.Series(has_in[self.dma_id]))
            compute = pl.DataFrame({"core": self.compute["core"], "trigger": self.compute["t0"],
                                    "completion": self.compute["t1"],
                                    "src": self.compute_id})
            matched = need.join(compute, on=["core", "trigger", "completion"], how="inner")
            matched = matched.sort(["id", "src"])
            ambiguous = matched.height - matched["id"].n_unique()
            if ambiguous:
                self.notes.append("some DMA transfers have several instructions at their "
                                  "trigger/completion times: each is linked to the lowest id.")
            matched = matched.unique("id", keep="first", maintain_order=True)
            self.edges_dropped.add("no instruction at trigger and completion (fallback)",
                                   need.height - matched.height)
            f_src, f_dst = matched["src"].to_numpy(), matched["id"].to_numpy()
            late = self.t0[f_dst] < self.t1[f_src]
            self.edges_dropped.add("contradicted by observed times (fallback)",
                                   int(late.sum()))
            f_src, f_dst = f_src[~late], f_dst[~late]
            fallback = f_src.size
            src, dst = np.concatenate([src, f_src]), np.concatenate([dst, f_dst])
            kind = np.concatenate([kind, np.full(fallback, "data", dtype="<U6")])
        self.edges = {"Flow": int(flow_count), "trigger fallback": int(fallback)}
        self.deps = pl.DataFrame({"src": src.astype(np.int64), "dst": dst.astype(np.int64),
                                  "kind": pl.Series(kind, dtype=pl.String)}).sort(["dst", "src"])

    # ---- semaphores

    def _semaphores(self) -> None:
        """Signal/sub/set rows from SemaphoreUpdate, and the parsed waits that the observed
        counts satisfy."""
        updates = self._read("SemaphoreUpdate", SEMAPHORE_COLS)
        self.sem_links = {"engine-time": 0, "axi-semaphore-id": 0}
        chain = {k: np.zeros(0, dtype=np.int64) for k in ("sem", "ts", "order", "value")}
        signals = pl.DataFrame(schema={"inst": pl.Int64, "sem": pl.Int64, "op": pl.String,
                                       "value": pl.Int64})
        if updates is not None and updates.height:
            u = rows_of(updates, "timestamp", self.execution)
            lower = lambda v: v.str.strip_chars().str.to_lowercase()  # noqa: E731
            u = u.select(
                ts="timestamp", value="value", core=self._core(),
                n=_by_distinct(u["id"], semaphore_number, pl.Int64),
                optype=_by_distinct(u["update_operation_type"], lower, pl.String),
                timing=_by_distinct(u["update_trigger_timing"], lower, pl.String),
                source=_by_distinct(u["update_source"], lambda v: lower(v).replace(
                    ENGINE_ALIASES), pl.String)).with_row_index("order")
            self.sem_dropped.add("semaphore id not of the form S[n]",
                                 u["n"].null_count())
            u = u.filter(pl.col("n").is_not_null()).with_columns(
                sem=self._sem_number(pl.col("n")), order=pl.col("order").cast(pl.Int64))
            events = pl.col("optype").is_in(EVENT_OPS).fill_null(False)
            self.sem_dropped.add("event (evt_set, evt_clr), not a counter",
                                 u.select(events.sum()).item())
            u = u.filter(~events).sort(["sem", "ts", "order"])
            sem, value = u["sem"].to_numpy(), u["value"].to_numpy()
            previous = np.r_[0, value[:-1]] if value.size else value
            if value.size:
                previous[np.r_[True, sem[1:] != sem[:-1]]] = 0
            u = u.with_columns(delta=pl.Series(value - previous))
            chain = {"sem": sem, "ts": u["ts"].to_numpy(), "order": u["order"].to_numpy(),
                     "value": value}
            skipped = pl.col("optype").is_in(SKIPPED_OPS).fill_null(False)
            self.sem_dropped.add("operation none or unknown", u.select(skipped.sum()).item())
            u = u.filter(~skipped)
            is_set = (pl.col("optype") == SET_OP).fill_null(False)
            self.sem_dropped.add("no change of value", u.select(
                (~is_set & (pl.col("delta") == 0)).sum()).item())
            u = u.filter(is_set | (pl.col("delta") != 0)).with_columns(
                op=pl.when(is_set).then(pl.lit("set"))
                .when(pl.col("delta") > 0).then(pl.lit("signal")).otherwise(pl.lit("sub")),
                amount=pl.when(is_set).then(pl.col("value")).otherwise(pl.col("delta").abs()))
            signals = self._link(u)
        waits = self._waits(chain)
        self.sem_ops = value_counts(signals["op"], ("signal", "sub", "set"))
        rows = pl.concat([signals.with_columns(cond=pl.lit(None, pl.String)), waits],
                         how="vertical")
        self.semaphores = rows.sort(["inst", "sem", "op"], maintain_order=True)

    def _sem_number(self, n: pl.Expr) -> pl.Expr:
        if not self.multicore:
            return n
        return pl.col("core") * CORE_STRIDE + n

    def _link(self, u: pl.DataFrame) -> pl.DataFrame:
        """The signal/sub/set rows of updates `u`, each linked to its instruction; rows that
        link to none are dropped and counted."""
        self.sem_dropped.add("no update_source", u["source"].null_count())
        u = u.filter(pl.col("source").is_not_null())
        axi = u.filter(pl.col("source") == "axi")
        eng = u.filter(pl.col("source") != "axi")
        parts = []
        if eng.height:
            nb = max(len(self.bares), 1)
            index = {b: i for i, b in enumerate(self.bares)}
            bare = eng["source"].replace_strict(index, default=-1, return_dtype=pl.Int64)
            q_pair = eng["core"].to_numpy() * nb + bare.to_numpy()
            q_side = (eng["timing"] == "read").fill_null(False).to_numpy().astype(np.int64)
            is_compute = self.src == SRC_INSTRUCTION
            pair = self.core * nb + self.bare
            present = np.isin(q_pair, pair[is_compute]) & (bare.to_numpy() >= 0)
            self.sem_dropped.add("no instruction on the update's engine",
                                 int((~present).sum()))
            cand = is_compute & np.isin(pair, q_pair[present])
            ids = np.flatnonzero(cand)
            sides = [s for s in (0, 1) if (q_side[present] == s).any()]
            group = np.concatenate([pair[ids] * 2 + s for s in sides])
            key = np.concatenate([(self.t1 if s == 0 else self.t0)[ids] for s in sides])
            ident = np.concatenate([ids for _ in sides])
            inst = link_nearest(group, key, ident,
                                np.where(present, q_pair * 2 + q_side, -1),
                                eng["ts"].to_numpy(), self.tolerance)
            far = present & (inst < 0)
            self.sem_dropped.add(f"no instruction within {self.tolerance} ns (engine time)",
                                 int(far.sum()))
            got = eng.with_columns(inst=pl.Series(inst)).filter(pl.col("inst") >= 0)
            self.sem_links["engine-time"] = got.height
            parts.append(got)
        if axi.height:
            if self.dma_extra is None:
                self.sem_dropped.add("AXI update, and no DMA transfer names semaphores",
                                     axi.height)
            else:
                sem_n = self.dma_extra["sem_n"].to_numpy(allow_copy=True)
                named = self.dma_extra["sem_n"].is_not_null().to_numpy()
                ids = self.dma_id[named]
                stride = np.int64(2**32)
                group = self.core[ids] * stride + sem_n[named].astype(np.int64)
                q = axi["core"].to_numpy() * stride + axi["n"].to_numpy()
                inst = link_nearest(group, self.t1[ids], ids, q, axi["ts"].to_numpy(),
                                    self.tolerance)
                self.sem_dropped.add(f"no DMA transfer naming the semaphore within "
                                     f"{self.tolerance} ns (AXI)", int((inst < 0).sum()))
                got = axi.with_columns(inst=pl.Series(inst)).filter(pl.col("inst") >= 0)
                self.sem_links["axi-semaphore-id"] = got.height
                parts.append(got)
        if not parts:
            return pl.DataFrame(schema={"inst": pl.Int64, "sem": pl.Int64, "op": pl.String,
                                        "value": pl.Int64})
        return pl.concat([p.select("inst", "sem", "op", value="amount") for p in parts],
                         how="vertical")

    def _waits(self, chain: dict[str, np.ndarray]) -> pl.DataFrame:
        """The parsed waits (operands, else compiler_operands) the observed counts satisfy at
        their instruction's start."""
        found = self.wait_rows
        parsed = found.height
        rows = found["row"].to_numpy()
        ident = self.compute_id[rows]
        core = self.compute["core"].to_numpy()[rows]
        sem = found["sem"].to_numpy() + (core * CORE_STRIDE if self.multicore else 0)
        found = pl.DataFrame({"inst": ident, "sem": sem, "value": found["value"],
                              "cond": found["cond"]})
        found = found.unique(["inst", "sem", "value", "cond"], keep="first",
                             maintain_order=True)
        self.waits_dropped.add("duplicate", parsed - found.height)
        ident = found["inst"].to_numpy()
        count = count_at(chain["sem"], chain["ts"], chain["order"], chain["value"],
                         found["sem"].to_numpy(), self.t0[ident])
        value = found["value"].to_numpy()
        ok = np.where(found["cond"].to_numpy() == "eq", count == value, count >= value)
        self.waits_dropped.add("contradicted by observed counts", int((~ok).sum()))
        kept = found.filter(pl.Series(ok))
        self.waits = {"parsed": parsed, "kept": kept.height}
        return kept.select("inst", "sem", op=pl.lit("wait"), value="value",
                           cond=pl.when(pl.col("cond") == "eq").then(pl.lit("eq"))
                           .otherwise(pl.lit(None, pl.String)))

    # ---- memory

    def _memory(self) -> None:
        """Memory rows of the DMA transfers' read and write sides."""
        empty = pl.DataFrame(schema={"inst": pl.Int64, "space": pl.String,
                                     "access": pl.String, "addr": pl.Int64, "size": pl.Int64,
                                     "partition": pl.Int64, "partitions": pl.Int64})
        self.memory_counts: dict[str, int] = {}
        self.memory = empty
        if self.dma_extra is None or self.dma_extra.height == 0:
            return
        d = self.dma_extra.with_columns(id=pl.Series(self.dma_id),
                                        variable=pl.col("variable").fill_null(""))
        variables = d["variable"].unique().sort()
        d = d.with_columns(base=pl.col("variable").cast(pl.Enum(variables.to_list()))
                           .to_physical().cast(pl.Int64) * REGION_BYTES)
        parts = []
        unknown = unparsed = 0
        for access, label, offset, plist, side_bytes in (
                ("read", "source", "read_offset", "read_sbuf_partitions", "read_bytes"),
                ("write", "dest", "write_offset", "write_sbuf_partitions", "write_bytes")):
            side = d.select(
                "id", "base", space=_by_distinct(d[label], location_space, pl.String),
                off=_by_distinct(d[offset], parse_offset, pl.Int64), plist=plist,
                size=pl.coalesce(pl.col(side_bytes), pl.col("transfer_bytes")),
                total=pl.col("transfer_bytes"))
            unknown += side["space"].null_count()
            side = side.filter(pl.col("space").is_not_null())
            unparsed += side["off"].null_count()
            side = side.filter(pl.col("off").is_not_null())
            hbm = side.filter(pl.col("space") == "hbm").select(
                inst="id", space="space", access=pl.lit(access),
                addr=pl.col("base") + pl.col("off"), size=pl.col("size").fill_null(0),
                partition=pl.lit(None, pl.Int64), partitions=pl.lit(None, pl.Int64))
            sb = side.filter(pl.col("space") == "sbuf")
            runs = partition_runs(sb["plist"]).rename({"text": "plist", "total": "count"})
            sbuf = sb.join(runs, on="plist", how="inner", maintain_order="left").select(
                inst="id", space=pl.lit("sbuf"), access=pl.lit(access), addr="off",
                size=pl.max_horizontal(pl.col("total").fill_null(0) // pl.col("count"),
                                       pl.lit(1)),
                partition="partition", partitions="partitions")
            unparsed += sb.height - sb.select(pl.col("plist").is_in(
                runs["plist"].implode()).sum()).item()
            parts += [hbm, sbuf]
        memory = pl.concat([p.cast(empty.schema) for p in parts], how="vertical")
        self.memory = memory.sort(["inst", "access", "space", "partition", "addr"],
                                  maintain_order=True)
        self.memory_counts = {
            "hbm rows": memory.select((pl.col("space") == "hbm").sum()).item(),
            "sbuf rows": memory.select((pl.col("space") == "sbuf").sum()).item(),
            "unknown location labels": unknown,
            "offset or partitions not parsed": unparsed,
            "variables (hbm regions)": variables.len()}

    # ---- the rest

    def _row_count(self, table: str) -> int | None:
        files = table_files(self.folder, table)
        if not files:
            self.missing.append(table)
            return None
        total = 0
        for path in files:
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, pa.ArrowException) as exc:
                raise NeuronProfileError(
                    f"{path}: table {table}: not a readable Parquet file ({first_line(exc)}). "
                    f"Re-run `neuron-explorer view`, or remove the damaged file.") from None
        self.tables_read[table] = total
        return total

    def _extras(self) -> None:
        self.checks["profile Warning rows"] = self._row_count("Warning") or 0
        if self._row_count("Summary") is not None:
            files = table_files(self.folder, "Summary")
            try:
                summary = pl.concat([pl.read_parquet(f) for f in files],
                                    how="diagonal_relaxed")
            except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
                raise NeuronProfileError(f"{files[0]}: table Summary: cannot be read "
                                         f"({first_line(exc)}).") from None
            if summary.height == 1:
                self.summary = plain_values(summary.row(0, named=True))
            else:
                self.notes.append(f"Summary holds {summary.height} rows, not one: not kept.")
        if table_files(self.folder, "NeffHeader"):
            neff = read_table(self.folder, "NeffHeader", NEFF_COLS)
            if neff is not None and neff.height:
                self.network_name = neff["network_name"].drop_nulls().first()
        self.checks["rows outside the execution"] = self.outside

    def execution_record(self) -> dict[str, Any]:
        """index, neff_name, start_ns and end_ns (profile ns) of the execution, and how many
        the profile holds (`of`)."""
        e = self.execution
        return {"index": e.index, "neff_name": e.neff_name, "start_ns": self.origin,
                "end_ns": self.origin + self.end_ns, "of": e.count}

    def report(self, profile: str, bundle: str, machine: str | None,
               version: str) -> ImportReport:
        instructions = {SOURCE_NAMES[SRC_INSTRUCTION]: self.compute.height}
        if self.dma is not None:
            instructions[SOURCE_NAMES[self.dma_source]] = self.dma.height
        return ImportReport(
            profile=profile, bundle=bundle, machine_file=machine, schema_version=version,
            execution=self.execution_record(),
            tables_read={t: self.tables_read[t] for t in TABLE_ORDER if t in self.tables_read},
            tables_missing=tuple(t for t in TABLE_ORDER if t in self.missing),
            instructions=instructions, engines=self.engine_counts,
            edges=self.edges, edges_dropped=self.edges_dropped.counts,
            semaphores=self.sem_ops, semaphore_links=self.sem_links,
            semaphores_dropped=self.sem_dropped.counts,
            waits=self.waits, waits_dropped=self.waits_dropped.counts,
            memory=self.memory_counts, counters=self.counters, checks=self.checks,
            notes=tuple(self.notes))
