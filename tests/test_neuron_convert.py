"""The Neuron Explorer importer's own rules on tiny profiles built here (columns as SCHEMA.md
names them): the operand grammar, linking by nearest time and its ties, the semaphore delta
rule, sem_wr_imm, waits the observed counts contradict, the DMA memory rows, the parsers, and
the machine description. The round trips and the documented oddities are in
test_neuron_import.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tracekit
from tracekit.convert.neuron_explorer import NeuronProfileError, convert, machine_toml
from tracekit.convert.neuron_explorer.passes import (
    count_at,
    link_nearest,
    location_space,
    parse_offset,
    parse_waits,
    partition_runs,
    union_ns,
)
from tracekit.replay.machine import load_machine

I32 = pa.int32()

METADATA = {"profile_schema_version": ["7.4.0"], "neuroncore_clock_freq": [1.0],
            "num_physical_cores": pa.array([1], I32), "tensor_engine_num_rows": [128],
            "tensor_engine_num_cols": [128], "tensor_engine_clock_freq": [1.0],
            "hbm_ddr_bandwidth": [4.0e11], "dma_ddr_bandwidth": [1.6e11],
            "num_dma_engines_per_neuroncore": pa.array([16], I32)}


def instructions(rows: list[tuple[int, str, str, int, int, str]]) -> dict[str, Any]:
    """Instruction columns from (id, engine, opcode, start_ts, end_ts, operands); pc in row
    order per engine."""
    pcs: dict[str, int] = {}
    pc = []
    for _, engine, *_ in rows:
        pc.append(pcs.get(engine, 0))
        pcs[engine] = pc[-1] + 1
    return {"id": [r[0] for r in rows], "engine": [r[1] for r in rows],
            "opcode": [r[2] for r in rows], "start_ts": [r[3] for r in rows],
            "end_ts": [r[4] for r in rows], "duration_ns": [r[4] - r[3] for r in rows],
            "operands": [r[5] for r in rows], "pc": pc, "bir_id": ["sg0000:1"] * len(rows)}


def updates(rows: list[tuple[int, str, int, str, str, str]]) -> dict[str, Any]:
    """SemaphoreUpdate columns from (timestamp, id, value, update_source,
    update_operation_type, update_trigger_timing)."""
    return {"timestamp": [r[0] for r in rows], "id": [r[1] for r in rows],
            "value": pa.array([r[2] for r in rows], I32),
            "update_source": [r[3] for r in rows],
            "update_operation_type": [r[4] for r in rows],
            "update_trigger_timing": [r[5] for r in rows]}


def write_profile(folder: Path, **tables: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    for name, columns in {"Metadata": METADATA, **tables}.items():
        pq.write_table(pa.table(columns), folder / f"{name}.parquet")
    return folder


def semaphore_rows(out: Path) -> list[tuple[Any, ...]]:
    """(engine, seq, sem, op, value, cond) of every semaphore row, sorted."""
    trace = tracekit.open_trace(out)
    inst = trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    key = {i: (e, s) for i, e, s in inst.select("id", "engine", "seq").iter_rows()}
    sems = trace.read("semaphores").with_columns(pl.col("op").cast(pl.String),
                                                 pl.col("cond").cast(pl.String))
    return sorted((*key[i], s, o, v, c) for i, s, o, v, c in sems.iter_rows())


# --- parsers ---------------------------------------------------------------------------------


def test_operand_grammar() -> None:
    text = pl.Series(["src=fp16@0x5600 $S[4]>=36 $S[22] > 7 x", "$S[8]++@complete",
                      None, "$S[3]==0 and $S[ 5 ]>=1", "S[4] (Scalar)>=2"])
    got = parse_waits(text)
    assert got.rows() == [(0, 4, 36, "ge"), (0, 22, 8, "ge"), (3, 3, 0, "eq"),
                          (3, 5, 1, "ge")]


def test_offsets_labels_and_partition_runs() -> None:
    frame = pl.DataFrame({"o": ["[0x2000]", "[512, 0]", "[0X1f]", "[]", None]})
    assert frame.select(parse_offset(pl.col("o")))["o"].to_list() == [8192, 512, 31, None,
                                                                      None]
    labels = pl.DataFrame({"l": ["[SB]", "[[INPUT]]", "[OUTPUT]", "[[VIRTUAL]]", "[PSUM]",
                                 "[sb]"]})
    assert labels.select(location_space(pl.col("l")))["l"].to_list() == [
        "sbuf", "hbm", "hbm", "hbm", None, "sbuf"]
    runs = partition_runs(pl.Series(["0-3,8-11", "0,1", "5", "2-1", "x", "0-3,2-5,7"]))
    assert sorted(runs.rows()) == [
        ("0,1", 0, 2, 2), ("0-3,2-5,7", 0, 6, 7), ("0-3,2-5,7", 7, 1, 7),
        ("0-3,8-11", 0, 4, 8), ("0-3,8-11", 8, 4, 8), ("5", 5, 1, 1)]


def test_union_of_packet_intervals() -> None:
    assert union_ns(np.array([0, 5, 20, 30]), np.array([10, 12, 25, 30])) == 17
    assert union_ns(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0


# --- linking ---------------------------------------------------------------------------------


def test_link_by_time_ties() -> None:
    group = np.array([0, 0, 0, 1])
    key = np.array([100, 200, 200, 150])
    ident = np.array([5, 7, 6, 9])
    q_group = np.array([0, 0, 0, 0, 1, 2, -1])
    q_time = np.array([150, 210, 90, 400, 140, 150, 150])
    assert link_nearest(group, key, ident, q_group, q_time, 1000).tolist() == [
        5, 6, 5, 6, 9, -1, -1]
    assert link_nearest(group, key, ident, q_group, q_time, 20).tolist() == [
        -1, 6, 5, -1, 9, -1, -1]


def test_count_at_replays_values_in_time() -> None:
    sem = np.array([1, 1, 1, 2])
    ts = np.array([10, 20, 20, 5])
    order = np.array([0, 1, 2, 3])
    value = np.array([1, 2, 5, 7])
    got = count_at(sem, ts, order, value, np.array([1, 1, 1, 1, 2, 3]),
                   np.array([9, 10, 20, 99, 4, 50]))
    assert got.tolist() == [0, 1, 5, 5, 0, 0]


# --- semaphores through a whole import ---------------------------------------------------------


def test_semaphore_deltas_set_and_links(tmp_path: Path) -> None:
    """Deltas from the previous value (from 0), a sem_wr_imm set, sub on a fall, events and
    `none` skipped, a `read` update linked by start, a tie going to the earlier end."""
    prof = write_profile(
        tmp_path / "p",
        Instruction=instructions([
            (10, "Tensor", "MATMUL", 0, 100, ""),
            (11, "Tensor", "MATMUL", 100, 200, ""),
            (12, "Vector", "TENSOR_TENSOR", 300, 400, ""),
            (13, "Act", "ACTIVATE", 150, 250, "")]),
        SemaphoreUpdate=updates([
            (101, "S[2]", 1, "Tensor", "sem_inc", "complete"),   # +1, linked to 10 (end 100)
            (150, "S[2]", 3, "Tensor", "sem_add_imm", "complete"),  # tie 100/200 -> 10
            (201, "S[2]", 1, "Tensor", "sem_sub_imm", "complete"),  # -2 -> sub 2 on 11
            (301, "S[2]", 9, "Vector", "sem_wr_imm", "read"),    # set 9, start 300 -> 12
            (250, "S[5]", 1, "Scalar", "evt_set", "complete"),   # event: skipped
            (251, "S[2]", 1, "Scalar", "none", ""),              # none: skipped
            (402, "S[6]", 4, "Vector", "sem_add_imm", "complete")]))  # +4 on 12
    out = tmp_path / "b"
    report = convert(prof, out).to_dict()
    assert semaphore_rows(out) == [
        ("tensor", 0, 2, "signal", 1, None), ("tensor", 0, 2, "signal", 2, None),
        ("tensor", 1, 2, "sub", 2, None), ("vector", 0, 2, "set", 9, None),
        ("vector", 0, 6, "signal", 4, None)]
    assert report["semaphores"]["by_op"] == {"signal": 3, "sub": 1, "set": 1}
    assert report["semaphores"]["by_link"] == {"engine-time": 5, "axi-semaphore-id": 0}
    assert report["semaphores"]["dropped"] == {
        "event (evt_set, evt_clr), not a counter": 1, "operation none or unknown": 1}
    assert tracekit.validate(out).ok()


def test_unlinked_updates_are_counted(tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "p",
        Instruction=instructions([(1, "Sync", "NOP", 0, 10, "")]),
        SemaphoreUpdate=updates([
            (5000, "S[1]", 3, "Sync", "sem_inc", "complete"),    # 4990 ns from the end
            (20, "S[1]", 2, "GpSimd", "sem_inc", "complete"),    # no gpsimd instruction
            (30, "TODO", 3, "Sync", "sem_inc", "complete"),      # id not S[n]
            (40, "S[9]", 1, "AXI", "sem_inc", "complete")]))     # no DMA table
    out = tmp_path / "b"
    report = convert(prof, out, link_tolerance_ns=100).to_dict()
    assert report["semaphores"]["dropped"] == {
        "semaphore id not of the form S[n]": 1,
        "no instruction on the update's engine": 1,
        "no instruction within 100 ns (engine time)": 1,
        "AXI update, and no DMA transfer names semaphores": 1}
    assert report["semaphores"]["by_op"] == {}
    wide = convert(prof, tmp_path / "wide", link_tolerance_ns=5000).to_dict()
    assert wide["semaphores"]["by_link"]["engine-time"] == 1


def test_waits_kept_only_where_observed_counts_allow(tmp_path: Path) -> None:
    """S[1] reaches 1 at 50 and 2 at 150: `>=1` at 100 holds, `>=2` at 100 does not, `>1` at
    200 (>= 2) holds, `==1` at 200 does not; compiler_operands only where operands have no
    condition."""
    inst = instructions([
        (1, "Sync", "NOP", 0, 49, ""),
        (2, "Sync", "NOP", 49, 149, ""),
        (3, "Tensor", "MATMUL", 100, 110, "$S[1]>=1 $S[1]>=2"),
        (4, "Vector", "TENSOR_TENSOR", 200, 210, "$S[1]>1 $S[1]==1"),
        (5, "Scalar", "ACTIVATE", 200, 210, "no condition")])
    inst["compiler_operands"] = ["", "", "$S[1]>=9", "", "$S[1]>=2"]
    prof = write_profile(tmp_path / "p", Instruction=inst, SemaphoreUpdate=updates([
        (50, "S[1]", 1, "Sync", "sem_inc", "complete"),
        (150, "S[1]", 2, "Sync", "sem_inc", "complete")]))
    out = tmp_path / "b"
    report = convert(prof, out).to_dict()
    waits = [r for r in semaphore_rows(out) if r[3] == "wait"]
    assert waits == [("scalar", 0, 1, "wait", 2, None), ("tensor", 0, 1, "wait", 1, None),
                     ("vector", 0, 1, "wait", 2, None)]
    assert report["waits"] == {"parsed": 5, "kept": 3,
                               "dropped": {"contradicted by observed counts": 2}}
    assert tracekit.replay(out).result is not None


# --- deps, memory, names ---------------------------------------------------------------------


def transfers(rows: list[tuple[int, str, int, int, str, str, str, str, str]]
              ) -> dict[str, Any]:
    """DmaPacketAggregated columns from (id, queue_name, start_ts, end_ts, variable, source,
    dest, read_offset, write_sbuf_partitions); 4096 bytes, write offset [0x40]."""
    n = len(rows)
    return {"start_ts": [r[2] for r in rows], "end_ts": [r[3] for r in rows],
            "duration_ns": [r[3] - r[2] for r in rows], "id": [r[0] for r in rows],
            "block_id": pa.array(range(n), I32), "queue_idx": [0] * n,
            "queue_name": [r[1] for r in rows], "op": ["read"] * n,
            "variable": [r[4] for r in rows], "read_bytes": [4096] * n,
            "write_bytes": [4096] * n, "transfer_bytes": [4096] * n,
            "throughput": [1.0] * n, "source": [r[5] for r in rows],
            "dest": [r[6] for r in rows], "semaphore_id": ["S[1] (q)"] * n,
            "read_sbuf_partitions": ["0-1"] * n,
            "read_num_sbuf_partitions": pa.array([2] * n, I32),
            "read_shape": ["[1]"] * n, "read_offset": [r[7] for r in rows],
            "read_steps": ["[1]"] * n, "write_sbuf_partitions": [r[8] for r in rows],
            "write_num_sbuf_partitions": pa.array([4] * n, I32), "write_shape": ["[1]"] * n,
            "write_offset": ["[0x40]"] * n, "write_steps": ["[1]"] * n}


def test_memory_rows_of_transfers(tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "p", Instruction=instructions([(1, "Sync", "NOP", 0, 10, "")]),
        DmaPacketAggregated=transfers([
            (7, "qA", 20, 30, "w", "[[INPUT]]", "[SB]", "[0x100]", "0-1,4-5"),
            (8, "qA", 40, 50, "a", "[SB]", "[OUTPUT]", "[0x0]", ""),
            (9, "qB", 20, 30, "w", "[PSUM]", "[[VIRTUAL]]", "[0x8]", "")]))
    out = tmp_path / "b"
    report = convert(prof, out).to_dict()
    trace = tracekit.open_trace(out)
    inst = trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    key = {i: (e, s) for i, e, s in inst.select("id", "engine", "seq").iter_rows()}
    mem = trace.read("memory").with_columns(pl.col("space").cast(pl.String),
                                            pl.col("access").cast(pl.String))
    region = 2**40  # variables sorted by name: a then w
    assert sorted((key[r[0]], *r[1:]) for r in mem.iter_rows()) == [
        (("dma.qA", 0), "hbm", "read", region + 0x100, 4096, None, None),
        (("dma.qA", 0), "sbuf", "write", 0x40, 1024, 0, 2),
        (("dma.qA", 0), "sbuf", "write", 0x40, 1024, 4, 2),
        (("dma.qA", 1), "hbm", "write", 0x40, 4096, None, None),
        (("dma.qA", 1), "sbuf", "read", 0, 2048, 0, 2),
        (("dma.qB", 0), "hbm", "write", region + 0x40, 4096, None, None)]
    assert report["memory"]["unknown location labels"] == 1
    assert report["engines"] == {"dma.qA": 2, "dma.qB": 1, "sync": 1}
    assert inst.sort("id")["opcode"].cast(pl.String).to_list() == [
        "DMA.read", "DMA.read", "DMA.read", "NOP"]


def test_flow_edges_kinds_and_drops(tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "p",
        Instruction=instructions([(1, "PE", "MATMUL", 0, 10, ""), (2, "DVE", "TT", 20, 30, ""),
                                  (3, "pool", "IOTA", 5, 8, "")]),
        Flow={"in_id": [1, 1, 2, 1, 1, 3, 1], "out_id": [2, 2, 1, 99, 3, 3, 2],
              "in_table": ["Instruction", "instruction", "Instruction", "Instruction",
                           "Instruction", "Instruction", "CcOp"],
              "out_table": ["Instruction", "Instruction", "Instruction", "Instruction",
                            "Instruction", "Instruction", "Instruction"],
              "dependency_type": ["FLOW_DEPENDENCE", "ANTI_DEPENDENCE", None,
                                  "FLOW_DEPENDENCE", "OUTPUT_DEPENDENCE", None, None]})
    out = tmp_path / "b"
    report = convert(prof, out).to_dict()
    deps = tracekit.open_trace(out).read("deps").with_columns(pl.col("kind").cast(pl.String))
    inst = tracekit.open_trace(out).read("instructions").with_columns(
        pl.col("engine").cast(pl.String))
    name = dict(inst.select("id", "engine").iter_rows())
    assert [(name[s], name[d], k) for s, d, k in deps.iter_rows()] == [
        ("tensor", "vector", "data")]
    assert report["edges"] == {"by_source": {"Flow": 1, "trigger fallback": 0},
                               "dropped": {"names a row not in the profile": 1,
                                           "names a table not imported": 1,
                                           "self edge": 1,
                                           "contradicted by observed times": 2,
                                           "duplicate": 1}}
    assert set(report["engines"]) == {"tensor", "vector", "gpsimd"}


def test_machine_description_from_metadata(tmp_path: Path) -> None:
    meta = {k: v[0] for k, v in METADATA.items() if not isinstance(v, pa.Array)}
    meta.update(num_dma_engines_per_neuroncore=16, neuroncore_clock_freq=1.4,
                tensor_engine_clock_freq=2.8, instance_type="trn2.48xlarge")
    path = tmp_path / "m.toml"
    path.write_text(machine_toml(meta, tmp_path / "Metadata.parquet"), encoding="utf-8")
    machine = load_machine(path)
    assert machine.name == "trn2.48xlarge" and machine.clock_hz == pytest.approx(1.4e9)
    assert machine.engines["tensor"].per_flop == pytest.approx(1.4 / (2 * 128 * 128 * 2.8))
    assert machine.hbm_bytes_per_cycle == pytest.approx(4e11 / 1.4e9)
    # one queue may use the core's whole DMA bandwidth (its packets spread over the engines)
    assert machine.dma_bytes_per_cycle == pytest.approx(1.6e11 / 1.4e9)
    assert "not measured" in path.read_text(encoding="utf-8")
    del meta["hbm_ddr_bandwidth"]
    assert "trn-like default" in machine_toml(meta, tmp_path / "Metadata.parquet")


def test_errors_name_file_table_column(tmp_path: Path) -> None:
    bad = write_profile(tmp_path / "p", Instruction={
        **instructions([(1, "Sync", "NOP", 10, 5, "")])})
    with pytest.raises(NeuronProfileError, match=r"Instruction\.parquet: table Instruction, "
                                                 r"columns start_ts and end_ts"):
        convert(bad, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    dup = write_profile(tmp_path / "q", Instruction=instructions(
        [(1, "Sync", "NOP", 0, 5, ""), (1, "Sync", "NOP", 5, 6, "")]))
    with pytest.raises(NeuronProfileError, match="column id: ids repeat"):
        convert(dup, tmp_path / "b")
    with pytest.raises(NeuronProfileError, match="link tolerance"):
        convert(dup, tmp_path / "b", link_tolerance_ns=-1)
