"""`tracekit convert neuron-explorer`: Neuron Explorer profile folders written from known bundles
(tests/neuron_profiles.py) import back to the same instructions, timing and critical path;
every option of the writer round-trips; every documented oddity either imports with the right
counts in the import report or exits 1 naming the file, the table and the column, leaving no
bundle behind. The writer's own output is checked against SCHEMA.md's names and types first.

The decisions tested are those of ../notes/ne-design.md (ids renumbered in (engine, seq) order,
times in ns from the execution's start, DMA opcodes DMA.<op>, engines lower-cased with the
glossary's aliases, `pN.` prefixes with several physical cores, semaphores pcore * 1_000_000 + n).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from conftest import assert_failed_cleanly
from neuron_profiles import (
    SCHEMA_TEXT,
    Profile,
    arrow_type,
    columns,
    odd_corrupt,
    odd_flow_gaps,
    odd_missing_aggregated,
    odd_missing_column,
    odd_optional_nulls,
    odd_required_nulls,
    odd_schema_version,
    odd_two_executions,
    odd_without,
    odd_wrong_type,
    read_profile_table,
    tiny_bundle,
    two_core_bundle,
    write_profile,
)
from typer.testing import CliRunner, Result

import tracekit
from tracekit.cli.app import app
from tracekit.workloads.generate import generate

SCHEMA_MD = Path(__file__).resolve().parents[2] / "shared" / "external" / "neuron-explorer" / \
    "SCHEMA.md"

runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def convert(*args: Any, **kwargs: Any) -> Any:
    from tracekit.convert.neuron_explorer import convert as ne_convert
    return ne_convert(*args, **kwargs)


# --- bundles to write as profiles -----------------------------------------------------------


def _at_1ghz(trace: tracekit.Trace, path: Path) -> Path:
    """`trace` with clock_hz 1 GHz (the profile's clock), so that cycles and ns read alike."""
    tables = {n: trace.read(n) for n in ("semaphores", "memory", "deps") if trace.has_table(n)}
    tracekit.write_trace(path, trace.read("instructions"), **tables,
                         workload=trace.manifest.workload, producer="tests", clock_hz=1e9,
                         created=None)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ne-bundles")
    gemm = generate("gemm", folder / "gemm.raw", params={"m": 128, "n": 256, "k": 256})
    attention = generate("attention", folder / "attn.raw",
                         params={"seq": 128, "heads": 1, "head_dim": 64})
    out = {"tiny": tiny_bundle(folder / "tiny"),
           "gemm": _at_1ghz(gemm, folder / "gemm"),
           "attention": _at_1ghz(attention, folder / "attention")}
    out["two-core"] = two_core_bundle(tracekit.open_trace(out["attention"]),
                                      folder / "two-core")
    return out


@pytest.fixture
def profile(tmp_path: Path, bundles: dict[str, Path]) -> Any:
    """Factory: write_profile(bundles[name], a fresh folder, **options)."""
    made = 0

    def make(name: str = "tiny", **options: Any) -> Profile:
        nonlocal made
        made += 1
        return write_profile(bundles[name], tmp_path / f"profile{made}", **options)

    return make


# --- what an import must give back ----------------------------------------------------------

INST_COLS = ["engine", "seq", "opcode", "start", "end", "elements", "bytes", "flops", "layer",
             "pc"]


def expected_instructions(bundle: Path, *, clock_ghz: float = 1.0) -> pl.DataFrame:
    """The bundle's instructions as an import must give them (ne-design.md): DMA opcodes
    DMA.<opcode>, no layer, pc or elements on DMA rows; times round(cycles / clock) ns."""
    inst = tracekit.open_trace(bundle).read("instructions").with_columns(
        pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
        pl.col("layer").cast(pl.String))
    dma = pl.col("engine").str.contains(r"(^|\.)dma\.")
    return inst.with_columns(
        pl.when(dma).then(pl.lit("DMA.") + pl.col("opcode")).otherwise("opcode").alias("opcode"),
        *(pl.when(dma).then(None).otherwise(pl.col(c)).alias(c)
          for c in ("layer", "pc", "elements")),
        *((pl.col(c) / clock_ghz).round(0).cast(pl.Int64) for c in ("start", "end")),
    ).sort("engine", "seq").select(INST_COLS)


def imported_instructions(bundle: Path) -> pl.DataFrame:
    inst = tracekit.open_trace(bundle).read("instructions")
    return inst.with_columns(pl.col("engine").cast(pl.String), pl.col("opcode").cast(pl.String),
                             pl.col("layer").cast(pl.String)).sort("engine", "seq") \
        .select(INST_COLS)


def assert_same_instructions(imported: Path, original: Path, **kwargs: Any) -> None:
    got, want = imported_instructions(imported), expected_instructions(original, **kwargs)
    assert got.equals(want), f"imported:\n{got}\nexpected:\n{want}"
    ids = tracekit.open_trace(imported).read("instructions").sort("engine", "seq")["id"]
    assert ids.to_list() == list(range(len(ids)))   # dense, in (engine, seq) order


def report_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def import_cli(folder: Path, out: Path, *extra: Any) -> dict[str, Any]:
    return report_json(run("convert", "neuron-explorer", folder, "-o", out, *extra,
                           "--format", "json"))


def critical_path(bundle: Path) -> dict[str, Any]:
    result = run("critical-path", bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def path_steps(cp: dict[str, Any], trace: Path) -> list[tuple[Any, ...]]:
    """The critical path as (engine, seq, opcode, start, end, gap, counted), DMA opcodes as an
    import writes them; edge kinds left out (a DMA's semaphore wait comes back as a Flow data
    edge, by design)."""
    inst = tracekit.open_trace(trace).read("instructions")
    seq = dict(zip(inst["id"].to_list(), inst["seq"].to_list(), strict=True))
    out = []
    for s in cp["path"]:
        opcode = s["opcode"]
        if ".dma." in f".{s['engine']}" and not opcode.startswith("DMA"):
            opcode = f"DMA.{opcode}"
        out.append((s["engine"], seq[s["id"]], opcode, s["start"], s["end"], s["gap"],
                    s["counted"]))
    return out


# --- the writer against SCHEMA.md -----------------------------------------------------------


def schema_md_tables() -> dict[str, list[tuple[str, str, bool]]]:
    text = SCHEMA_MD.read_text(encoding="utf-8")
    out = {}
    for table in SCHEMA_TEXT:
        m = re.search(rf"^### {table}\n(.*?)(?=^### |^## )", text, re.S | re.M)
        assert m, table
        rows = []
        for line in m.group(1).splitlines():
            if line.startswith("| `"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                rows.append((cells[0].strip("`"), cells[1].split(" ")[0], cells[3] == "Y"))
        out[table] = rows
    return out


@pytest.mark.skipif(not SCHEMA_MD.is_file(), reason="../shared/external/neuron-explorer absent")
def test_writer_column_list_is_schema_md() -> None:
    for table, rows in schema_md_tables().items():
        assert [(c.name, c.type, c.required) for c in columns(table)] == rows, table


def test_written_files_have_schema_names_and_types(profile: Any) -> None:
    prof = profile("tiny")
    files = sorted(p.name for p in prof.path.iterdir())
    assert files == ["DmaPacket.parquet", "DmaPacketAggregated.parquet", "ExecutionInfo.parquet",
                     "Flow.parquet", "Instruction.parquet", "Metadata.parquet",
                     "NeffHeader.parquet", "SchemaFields.parquet", "SemaphoreUpdate.parquet",
                     "Summary.parquet"]
    for name in files:
        table = name.removesuffix(".parquet")
        schema = read_profile_table(prof.path, table).schema
        assert schema.names == [c.name for c in columns(table)], table
        assert [schema.field(c.name).type for c in columns(table)] == \
            [arrow_type(c.type) for c in columns(table)], table
    fields = read_profile_table(prof.path, "SchemaFields").to_pylist()
    assert {(f["table_name"], f["field_name"]) for f in fields} == {
        (t, c.name) for t in [f.removesuffix(".parquet") for f in files]
        if t != "SchemaFields" for c in columns(t)}


def test_tiny_profile_rows(profile: Any) -> None:
    prof = profile("tiny")
    inst = prof.frame("Instruction")
    assert inst.select("start_ts", "end_ts", "engine", "opcode", "operands", "id", "pc",
                       "tensor_instruction_type", "raw_flops").rows() == [
        (130, 230, "Tensor", "MATMUL", "$S[0]>=2 $S[1]++@complete", 5, 0, "REGULAR", 4194304),
        (230, 260, "Tensor", "MATMUL", "$S[1]++@complete", 7, 1, "TRANSPOSE", 1048576),
        (272, 300, "Scalar", "ACTIVATE", "$S[1]>=2 $S[2]++@complete", 9, 0, None, None),
        (424, 450, "Vector", "TENSOR_COPY", "$S[3]==1", 13, 0, None, None)]
    assert inst.filter(pl.col("opcode") == "ACTIVATE").select(
        "psum_read_bytes", "sbuf_write_bytes", "hbm_read_bytes").row(0) == (32768, 32768, None)
    dma = prof.frame("DmaPacketAggregated")
    assert dma.select("start_ts", "end_ts", "id", "block_id", "queue_name", "op",
                      "transfer_bytes", "source", "dest", "semaphore_id", "trigger",
                      "completion", "read_offset", "write_sbuf_partitions").rows() == [
        (0, 100, 0, 0, "qSyncIO0", "dma_load", 8192, "[INPUT]", "[SB]", "S[0] (qSyncIO0)",
         None, None, "[0x1000]", "0-127"),
        (10, 120, 4, 0, "qSyncIO1", "dma_load", 4096, "[INPUT]", "[SB]", "S[0] (qSyncIO1)",
         None, None, "[0x4000]", "0-127"),
        (312, 412, 2, 1, "qSyncIO0", "dma_store", 8192, "[SB]", "[OUTPUT]", "S[3] (qSyncIO0)",
         272, 300, "[0x400]", "")]
    assert prof.frame("DmaPacket").select("start_ts", "end_ts", "packet_aggregation_id",
                                          "transfer_bytes").rows() == [
        (0, 100, 0, 8192), (10, 120, 4, 4096), (312, 387, 2, 4096), (337, 412, 2, 4096)]
    assert prof.frame("SemaphoreUpdate").select(
        "timestamp", "id", "value", "update_source", "update_operation_type").rows() == [
        (100, "S[0]", 1, "AXI", "sem_inc"), (120, "S[0]", 2, "AXI", "sem_inc"),
        (230, "S[1]", 1, "Tensor", "sem_inc"), (260, "S[1]", 2, "Tensor", "sem_inc"),
        (300, "S[2]", 1, "Scalar", "sem_inc"), (412, "S[3]", 1, "AXI", "sem_inc"),
        (412, "S[4]", 1, "AXI", "sem_inc")]
    assert prof.frame("Flow").rows() == [
        (9, 2, "Instruction", "DmaPacketAggregated", "FLOW_DEPENDENCE", 12)]
    assert prof.frame("ExecutionInfo").rows() == [(0, "tiny-ne.neff", 0, 450, 1, 19)]
    assert (prof.unlinkable_axi, prof.compute_waits, prof.dma_waits) == (1, 3, 1)


def test_tiny_summary_from_known_inputs(profile: Any) -> None:
    """Summary figures by SUMMARY-METRICS.md's recipes, worked out by hand for tiny_bundle."""
    s = profile("tiny").summary
    assert s is not None
    peak = 2 * 128 * 128 * 1.4e9
    total = 450e-9
    expected = {
        "total_time": total, "neuroncore_cycle_count": 450,
        "tensor_engine_instruction_time": 130e-9, "tensor_engine_active_time": 130e-9,
        "tensor_engine_instruction_count": 2, "scalar_engine_instruction_count": 1,
        "vector_engine_active_time": 26e-9, "matmul_instruction_count": 2,
        "activate_instruction_count": 1, "activate_instruction_time": 28e-9,
        "hardware_flops": 5242880, "transpose_flops": 1048576,
        "hfu_estimated_percent": 100 * 5242880 / (peak * total),
        "mfu_inst_estimated_percent": 100 * 4194304 / (peak * total),
        "hbm_read_bytes": 12288, "hbm_write_bytes": 8192,
        "sbuf_read_bytes": 8192, "sbuf_write_bytes": 12288 + 32768, "psum_read_bytes": 32768,
        "mbu_estimated_percent": 100 * 20480 / total / 4.0e11,
        "mm_arithmetic_intensity": 4194304 / 20480,
        "dma_active_time": 220e-9, "dma_active_cycles": 220,
        "dma_packet_time": (100 + 110 + 75 + 75) * 1e-9,
        "dma_transfer_time": (100 + 110 + 100) * 1e-9, "dma_transfer_count": 3,
        "dma_transfer_total_bytes": 20480, "dma_transfer_average_bytes": 20480 / 3,
        "input_queue_bytes": 12288, "output_queue_bytes": 8192, "event_count": 7,
        "total_exec_time": 450e-9, "total_active_time": 404e-9,
    }
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, rel=1e-12), key


def test_writer_options(profile: Any) -> None:
    split = profile("tiny", split={"Instruction": 3, "SemaphoreUpdate": 2})
    names = sorted(p.name for p in split.path.iterdir())
    assert [n for n in names if n.startswith(("Instruction", "SemaphoreUpdate"))] == [
        "Instruction_0.parquet", "Instruction_1.parquet", "Instruction_2.parquet",
        "SemaphoreUpdate_0.parquet", "SemaphoreUpdate_1.parquet"]
    assert read_profile_table(split.path, "Instruction").num_rows == 4
    bare = profile("tiny", optional_columns=False)
    assert read_profile_table(bare.path, "Instruction").schema.names == [
        c.name for c in columns("Instruction") if c.required]
    assert read_profile_table(bare.path, "SemaphoreUpdate").schema.names == [
        "timestamp", "id", "value"]
    for case, tensor in (("lower", "tensor"), ("UPPER", "TENSOR"), ("alias", "PE")):
        assert profile("tiny", engine_case=case).frame("Instruction")["engine"][0] == tensor
    two = profile("tiny", executions=2, execution_gap_ns=50)
    assert two.frame("ExecutionInfo").select(
        "execution_index", "execution_start_ts", "execution_end_ts").rows() == [
        (0, 0, 450), (1, 500, 950)]
    assert two.frame("Instruction")["start_ts"].to_list() == [130, 230, 272, 424,
                                                              630, 730, 772, 924]
    assert two.frame("Instruction")["id"].n_unique() == 8
    slow = profile("tiny", clock_ghz=1.4)
    assert slow.frame("Instruction")["end_ts"].to_list() == [164, 186, 214, 321]
    cores = profile("two-core")
    assert sorted(cores.frame("Instruction")["pcore_idx"].unique()) == [0, 1]
    assert cores.frame("Metadata")["num_physical_cores"].to_list() == [2]
    assert profile("tiny", aggregated=False).transfers == 3
    assert not (profile("tiny", aggregated=False).path / "DmaPacketAggregated.parquet").exists()


# --- round trips through the converter ------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "gemm", "attention"])
def test_round_trip_instructions_and_critical_path(name: str, profile: Any, tmp_path: Path,
                                                   bundles: dict[str, Path]) -> None:
    prof = profile(name)
    out = tmp_path / "imported"
    report = import_cli(prof.path, out)
    assert report["instructions"]["total"] == prof.instructions + prof.transfers
    assert_same_instructions(out, bundles[name])
    assert path_steps(critical_path(out), out) == \
        path_steps(critical_path(bundles[name]), bundles[name])
    assert run("validate", out).exit_code == 0


def test_round_trip_semaphores_and_deps_of_tiny(profile: Any, tmp_path: Path) -> None:
    """Signals linked by engine time and AXI semaphore id (S[4] of the store cannot be: the
    transfer names S[3]), compute waits from the operands, the store's wait as a Flow edge."""
    prof = profile("tiny")
    out = tmp_path / "imported"
    report = convert(prof.path, out)
    trace = tracekit.open_trace(out)
    inst = trace.read("instructions").with_columns(pl.col("engine").cast(pl.String))
    key = {i: (e, s) for i, e, s in inst.select("id", "engine", "seq").iter_rows()}
    sems = trace.read("semaphores").with_columns(pl.col("op").cast(pl.String),
                                                 pl.col("cond").cast(pl.String))
    assert sorted((key[r[0]], *r[1:]) for r in sems.select("inst", "sem", "op", "value", "cond")
                  .iter_rows()) == sorted([
                      (("dma.qSyncIO0", 0), 0, "signal", 1, None),
                      (("dma.qSyncIO1", 0), 0, "signal", 1, None),
                      (("tensor", 0), 0, "wait", 2, None),
                      (("tensor", 0), 1, "signal", 1, None),
                      (("tensor", 1), 1, "signal", 1, None),
                      (("scalar", 0), 1, "wait", 2, None),
                      (("scalar", 0), 2, "signal", 1, None),
                      (("dma.qSyncIO0", 1), 3, "signal", 1, None),
                      (("vector", 0), 3, "wait", 1, "eq")])
    deps = trace.read("deps").with_columns(pl.col("kind").cast(pl.String))
    assert [(key[s], key[d], k) for s, d, k in deps.iter_rows()] == [
        (("scalar", 0), ("dma.qSyncIO0", 1), "data")]
    d = report.to_dict()
    assert d["edges"]["by_source"].get("Flow") == 1
    assert sum(d["semaphores"]["by_link"].values()) == 6
    assert sum(d["semaphores"]["dropped"].values()) == prof.unlinkable_axi == 1
    assert d["waits"]["dropped"] == {}
    assert d["counters"]["dma_packets"] == 4
    assert d["counters"]["dma_packet_active_ns"] == 220
    extra = trace.manifest.extra["neuron_explorer"]
    assert extra["schema_version"] == "7.4.0"
    assert extra["summary"]["hardware_flops"] == 5242880
    assert trace.manifest.time_unit.value == "ns" and trace.manifest.clock_hz == 1e9


@pytest.mark.parametrize("options", [
    {"split": 3}, {"engine_case": "lower"}, {"engine_case": "UPPER"}, {"engine_case": "alias"},
    {"flow_tables": "schema"}, {"wait_syntax": ">"}, {"float_type": pa.float64()},
    {"origin_ns": 5_000_000}, {"max_packets": 1}, {"summary": False},
    {"execution_info": False, "origin_ns": 777},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_option_round_trips(options: dict[str, Any], profile: Any, tmp_path: Path,
                            bundles: dict[str, Path]) -> None:
    prof = profile("attention", **options)
    out = tmp_path / "imported"
    convert(prof.path, out)
    assert_same_instructions(out, bundles["attention"])
    assert path_steps(critical_path(out), out) == \
        path_steps(critical_path(bundles["attention"]), bundles["attention"])


def test_clock_1_4_ghz_round_trips_in_ns(profile: Any, tmp_path: Path,
                                         bundles: dict[str, Path]) -> None:
    prof = profile("gemm", clock_ghz=1.4)
    out = tmp_path / "imported"
    convert(prof.path, out)
    assert_same_instructions(out, bundles["gemm"], clock_ghz=1.4)
    assert tracekit.open_trace(out).manifest.clock_hz == pytest.approx(1.4e9)


def test_optional_columns_left_out(profile: Any, tmp_path: Path,
                                   bundles: dict[str, Path]) -> None:
    """Only required columns: times, engines, opcodes and DMA bytes stay; flops, elements,
    layer and compute bytes are gone; no semaphore update can be linked (no update_source)."""
    prof = profile("gemm", optional_columns=False)
    out = tmp_path / "imported"
    report = convert(prof.path, out)
    want = expected_instructions(bundles["gemm"])
    compute = ~pl.col("engine").str.starts_with("dma.")
    want = want.with_columns(*(pl.when(compute).then(None).otherwise(pl.col(c)).alias(c)
                               for c in ("bytes",)), pl.lit(None, pl.Int64).alias("flops"),
                             pl.lit(None, pl.Int64).alias("elements"),
                             pl.lit(None, pl.String).alias("layer"))
    assert imported_instructions(out).equals(want)
    assert sum(report.to_dict()["semaphores"]["by_link"].values()) == 0
    assert run("validate", out).exit_code == 0


def test_two_physical_cores(profile: Any, tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = profile("two-core")
    out = tmp_path / "imported"
    convert(prof.path, out)
    assert_same_instructions(out, bundles["two-core"])
    sems = tracekit.open_trace(out).read("semaphores")
    original = tracekit.open_trace(bundles["two-core"]).read("semaphores")
    assert set(sems["sem"].unique()) <= set(original["sem"].unique())
    assert sems["sem"].max() >= 1_000_000
    assert run("validate", out).exit_code == 0


def test_two_executions(profile: Any, tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_two_executions(bundles["attention"], tmp_path / "two")
    result = run("convert", "neuron-explorer", prof.path, "-o", tmp_path / "none")
    neff = f"{tracekit.open_trace(bundles['attention']).manifest.workload}.neff"
    assert_failed_cleanly(result, 1, "--execution", neff, "0 to 8,190 ns", "9,190 to 17,380 ns")
    assert "0" in result.stderr and "1" in result.stderr
    assert not (tmp_path / "none").exists()
    for index in (0, 1):
        out = tmp_path / f"exec{index}"
        report = import_cli(prof.path, out, "--execution", index)
        assert report["execution"]["index"] == index
        assert_same_instructions(out, bundles["attention"])
    a = tracekit.open_trace(tmp_path / "exec0").read("instructions")
    b = tracekit.open_trace(tmp_path / "exec1").read("instructions")
    assert a.equals(b)
    result = run("convert", "neuron-explorer", prof.path, "-o", tmp_path / "none",
                 "--execution", 2)
    assert_failed_cleanly(result, 1, "2")
    assert not (tmp_path / "none").exists()


# --- the documented oddities ----------------------------------------------------------------


def test_missing_aggregated_table_uses_packets(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_missing_aggregated(bundles["tiny"], tmp_path / "p")
    out = tmp_path / "imported"
    report = import_cli(prof.path, out)
    assert "DmaPacketAggregated" in report["tables"]["missing"]
    assert report["instructions"]["total"] == 4 + 3
    got = imported_instructions(out)
    assert got.filter(pl.col("engine").str.starts_with("dma.")).select(
        "engine", "start", "end", "bytes").rows() == [
        ("dma.qSyncIO0", 0, 100, 8192), ("dma.qSyncIO0", 312, 412, 8192),
        ("dma.qSyncIO1", 10, 120, 4096)]
    # Without semaphore_id no AXI update can be linked: all four dropped and counted.
    assert sum(report["semaphores"]["dropped"].values()) == 4


def test_flow_edges_missing_fall_back_to_trigger(tmp_path: Path,
                                                 bundles: dict[str, Path]) -> None:
    prof = odd_flow_gaps(bundles["tiny"], tmp_path / "p")
    out = tmp_path / "imported"
    report = import_cli(prof.path, out)
    assert report["edges"]["by_source"].get("Flow", 0) == 0
    assert sum(report["edges"]["by_source"].values()) == 1   # the store's trigger fallback
    assert tracekit.open_trace(out).read("deps").height == 1


def test_nulls_in_optional_columns(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_optional_nulls(bundles["tiny"], tmp_path / "p")
    out = tmp_path / "imported"
    report = import_cli(prof.path, out)
    assert report["instructions"]["total"] == 7
    got = imported_instructions(out)
    assert got["flops"].null_count() == 7 and got["layer"].null_count() == 7
    assert got.select("engine", "start", "end").rows() == [
        ("dma.qSyncIO0", 0, 100), ("dma.qSyncIO0", 312, 412), ("dma.qSyncIO1", 10, 120),
        ("scalar", 272, 300), ("tensor", 130, 230), ("tensor", 230, 260), ("vector", 424, 450)]
    # Flow's dependency_type null -> data; update_source null -> nothing to link.
    assert tracekit.open_trace(out).read("deps")["kind"].cast(pl.String).to_list() == ["data"]
    assert sum(report["semaphores"]["by_link"].values()) == 0
    assert run("validate", out).exit_code == 0


def refused(folder: Path, out: Path, *needles: str) -> Result:
    result = run("convert", "neuron-explorer", folder, "-o", out)
    assert_failed_cleanly(result, 1, *needles)
    assert not out.exists()
    return result


def test_unknown_schema_major(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_schema_version(bundles["tiny"], tmp_path / "p")
    refused(prof.path, tmp_path / "out", "12.0.1", "Metadata.parquet", "profile_schema_version",
            "7")


def test_corrupt_file(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_corrupt(bundles["tiny"], tmp_path / "p")
    refused(prof.path, tmp_path / "out", "Instruction.parquet")


def test_corrupt_part_of_a_split_table(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = write_profile(bundles["tiny"], tmp_path / "p", split={"DmaPacketAggregated": 2})
    part = prof.path / "DmaPacketAggregated_1.parquet"
    part.write_bytes(part.read_bytes()[:40])
    refused(prof.path, tmp_path / "out", "DmaPacketAggregated_1.parquet")


@pytest.mark.parametrize("table,column", [("Instruction", "engine"),
                                          ("Instruction", "start_ts"),
                                          ("DmaPacketAggregated", "queue_name"),
                                          ("Flow", "out_table")])
def test_required_column_missing(table: str, column: str, tmp_path: Path,
                                 bundles: dict[str, Path]) -> None:
    prof = odd_missing_column(bundles["tiny"], tmp_path / "p", table, column)
    refused(prof.path, tmp_path / "out", f"{table}.parquet", table, column)


@pytest.mark.parametrize("table,column,found", [("Instruction", "start_ts", "string"),
                                                ("SemaphoreUpdate", "value", "string"),
                                                ("DmaPacketAggregated", "transfer_bytes",
                                                 "string")])
def test_column_of_wrong_type(table: str, column: str, found: str, tmp_path: Path,
                              bundles: dict[str, Path]) -> None:
    prof = odd_wrong_type(bundles["tiny"], tmp_path / "p", table, column)
    refused(prof.path, tmp_path / "out", f"{table}.parquet", column, found)


def test_nulls_in_a_required_column(tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_required_nulls(bundles["tiny"], tmp_path / "p")
    refused(prof.path, tmp_path / "out", "Instruction.parquet", "start_ts")


@pytest.mark.parametrize("table", ["Metadata", "Instruction"])
def test_required_table_missing(table: str, tmp_path: Path, bundles: dict[str, Path]) -> None:
    prof = odd_without(bundles["tiny"], tmp_path / "p", table)
    refused(prof.path, tmp_path / "out", table)


def test_not_a_profile_folder(tmp_path: Path) -> None:
    refused(tmp_path / "nothing-here", tmp_path / "out", "nothing-here")


# --- machine description, determinism, Python API ------------------------------------------


def test_machine_out_is_accepted_by_replay(profile: Any, tmp_path: Path) -> None:
    prof = profile("gemm")
    out, machine = tmp_path / "imported", tmp_path / "machine.toml"
    import_cli(prof.path, out, "--machine-out", machine)
    text = machine.read_text(encoding="utf-8")
    assert "clock_hz" in text and "default" in text
    result = run("replay", out, "--machine", machine)
    assert result.exit_code == 0, result.output


def test_imports_are_byte_identical(profile: Any, tmp_path: Path) -> None:
    prof = profile("attention")
    for name in ("a", "b"):
        import_cli(prof.path, tmp_path / name)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_existing_output_is_refused(profile: Any, tmp_path: Path) -> None:
    prof = profile("tiny")
    out = tmp_path / "imported"
    import_cli(prof.path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run("convert", "neuron-explorer", prof.path, "-o", out)
    assert_failed_cleanly(result, 1, str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
