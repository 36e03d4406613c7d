"""Writing and reading bundles: round trip, atomicity, overwrite, determinism, upgrades."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import tracekit
from tracekit.errors import (
    InvalidTraceError,
    OutputError,
    SchemaVersionError,
    TableDataError,
    TraceExistsError,
)
from tracekit.trace import bundle as bundle_module
from tracekit.trace.builder import TraceBuilder
from tracekit.trace.bundle import (
    atomic_file,
    file_sha256,
    open_trace,
    write_text_atomic,
    write_trace,
)
from tracekit.trace.schema import PARQUET_KEY_TABLE, PARQUET_KEY_VERSION, TABLES
from tracekit.trace.upgrade import check_version, upgrade


def _builder() -> TraceBuilder:
    b = TraceBuilder("roundtrip")
    load = b.inst("dma.q0", "dma_load", 0, 40, bytes=4096, layer="fc1", pc=1)
    mm = b.inst("tensor", "matmul", 44, 90, elements=16384, flops=4194304, layer="fc1", pc=2)
    b.inst("scalar", "activation", 94, 120, elements=16384, layer=None, pc=3)
    b.signal(load, sem=0)
    b.wait(mm, sem=0, value=1)
    b.access(load, "hbm", "read", 4096, 4096)
    b.access(load, "sbuf", "write", 0, 32, 0, 128)
    b.dep(load, mm, "data")
    return b


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    b = _builder()
    trace = b.write(tmp_path / "t")
    got = trace.instructions.collect()
    assert got.columns == list(TABLES["instructions"].column_names)
    assert got["id"].to_list() == [0, 1, 2]
    assert got["engine"].cast(pl.String).to_list() == ["dma.q0", "tensor", "scalar"]
    assert got["seq"].to_list() == [0, 0, 0]
    assert got["start"].to_list() == [0, 44, 94]
    assert got["end"].to_list() == [40, 90, 120]
    assert got["bytes"].to_list() == [4096, None, None]
    assert got["layer"].cast(pl.String).to_list() == ["fc1", "fc1", None]
    mem = trace.memory.collect()
    assert mem["partition"].to_list() == [None, 0]
    assert mem["partitions"].to_list() == [None, 128]
    assert trace.deps.collect().rows() == [(0, 1, "data")]
    assert trace.semaphores.collect()["op"].cast(pl.String).to_list() == ["signal", "wait"]


def test_manifest_records_rows_sizes_and_hashes(tmp_path: Path) -> None:
    trace = _builder().write(tmp_path / "t", extra={"seed": 7})
    raw = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert raw["schema_version"] == 2
    assert raw["workload"] == "roundtrip"
    assert raw["extra"] == {"seed": 7}
    assert set(raw["tables"]) == {"instructions", "semaphores", "memory", "deps"}
    for name, entry in raw["tables"].items():
        path = tmp_path / "t" / entry["file"]
        assert entry["rows"] == pq.ParquetFile(path).metadata.num_rows
        assert entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == file_sha256(path)
        meta = pq.read_schema(path).metadata
        assert meta[PARQUET_KEY_TABLE.encode()] == name.encode()
        assert meta[PARQUET_KEY_VERSION.encode()] == b"2"
    assert trace.manifest.tables["instructions"].rows == 3


def test_absent_optional_table_reads_as_empty_frame_with_schema(tmp_path: Path) -> None:
    b = TraceBuilder("bare")
    b.inst("tensor", "matmul")
    trace = b.write(tmp_path / "t")
    assert not trace.has_table("deps")
    deps = trace.deps.collect()
    assert deps.height == 0
    assert deps.columns == ["src", "dst", "kind"]
    assert sorted(os.listdir(tmp_path / "t")) == ["instructions.parquet", "manifest.json"]


def test_same_build_gives_identical_bytes(tmp_path: Path) -> None:
    _builder().write(tmp_path / "a")
    _builder().write(tmp_path / "b")
    for name in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_dictionary_is_sorted_whatever_the_input_order(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [0, 1, 2], "engine": ["vector", "dma.q0", "tensor"],
                          "seq": [0, 0, 0], "opcode": ["z", "a", "m"]})
    write_trace(tmp_path / "t", frame, workload="w", created="x")
    column = pq.read_table(tmp_path / "t" / "instructions.parquet")["engine"].combine_chunks()
    assert column.dictionary.to_pylist() == ["dma.q0", "tensor", "vector"]
    assert column.to_pylist() == ["vector", "dma.q0", "tensor"]


def test_existing_bundle_is_replaced_only_when_asked(tmp_path: Path) -> None:
    _builder().write(tmp_path / "t")
    with pytest.raises(TraceExistsError, match="already exists"):
        _builder().write(tmp_path / "t")
    b = TraceBuilder("replacement")
    b.inst("tensor", "matmul")
    b.write(tmp_path / "t", overwrite=True)
    assert open_trace(tmp_path / "t").manifest.workload == "replacement"
    assert sorted(os.listdir(tmp_path)) == ["t"]


class _Interrupted(BaseException):
    pass


def test_interrupted_write_leaves_nothing_behind(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = bundle_module._write_parquet
    calls = []

    def failing(table, spec, path):  # type: ignore[no-untyped-def]
        calls.append(spec.name)
        if len(calls) == 2:
            raise _Interrupted()
        return real(table, spec, path)

    monkeypatch.setattr(bundle_module, "_write_parquet", failing)
    with pytest.raises(_Interrupted):
        _builder().write(tmp_path / "t")
    assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_the_old_bundle(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _builder().write(tmp_path / "t")
    before = {n: (tmp_path / "t" / n).read_bytes() for n in os.listdir(tmp_path / "t")}

    def failing(table, spec, path):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_module, "_write_parquet", failing)
    with pytest.raises(KeyboardInterrupt):
        _builder().write(tmp_path / "t", overwrite=True)
    assert os.listdir(tmp_path) == ["t"]
    assert {n: (tmp_path / "t" / n).read_bytes() for n in os.listdir(tmp_path / "t")} == before


def test_invalid_data_is_not_written_when_validating(tmp_path: Path) -> None:
    b = _builder()
    b.inst("tensor", "matmul", 100, 50)  # ends before it starts
    with pytest.raises(InvalidTraceError, match="end-before-start") as info:
        b.write(tmp_path / "t")
    assert os.listdir(tmp_path) == []
    assert [f.rule.value for f in info.value.report.errors] == ["end-before-start"]
    b.write(tmp_path / "t", validate=False)
    assert not tracekit.validate(tmp_path / "t").ok()


@pytest.mark.parametrize(
    ("instructions", "match"),
    [
        ({"id": [0], "engine": ["t"], "seq": [0]}, "required column 'opcode' is missing"),
        ({"id": [0], "engine": ["t"], "seq": [0], "opcode": ["x"], "colour": ["red"]},
         "unknown column"),
        ({"id": ["zero"], "engine": ["t"], "seq": [0], "opcode": ["x"]},
         r"instructions\.id: cannot store as int64"),
        ({"id": [0.5], "engine": ["t"], "seq": [0], "opcode": ["x"]},
         r"instructions\.id: cannot store as int64"),
        ({"id": [0], "engine": [3], "seq": [0], "opcode": ["x"]},
         r"instructions\.engine: cannot store as string"),
    ],
)
def test_writer_refuses_data_that_does_not_fit_the_schema(tmp_path: Path, instructions: dict,
                                                          match: str) -> None:
    with pytest.raises(TableDataError, match=match):
        write_trace(tmp_path / "t", instructions, workload="w")
    assert os.listdir(tmp_path) == []


def test_writer_accepts_arrow_pandas_and_lazy_frames(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [0, 1], "engine": ["t", "t"], "seq": [0, 1],
                          "opcode": ["x", "y"], "start": pl.Series([0, 5], dtype=pl.Int32),
                          "end": pl.Series([5, 9], dtype=pl.UInt16)})
    for i, data in enumerate([frame.to_arrow(), frame.to_pandas(), frame.lazy()]):
        trace = write_trace(tmp_path / f"t{i}", data, workload="w", created="x")
        got = trace.instructions.collect()
        assert got["end"].to_list() == [5, 9]
        assert got["end"].dtype == pl.Int64


def test_nullable_columns_may_be_left_out_by_foreign_producers(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t", {"id": [0], "engine": ["t"], "seq": [0],
                                         "opcode": ["x"]}, workload="w", created="x")
    # Rewrite the file the way a minimal C++ producer might: only the required columns.
    table = pq.read_table(tmp_path / "t" / "instructions.parquet",
                          columns=["id", "engine", "seq", "opcode"])
    from tracekit.trace.builder import replace_table_file

    replace_table_file(tmp_path / "t", "instructions", table,
                       metadata={PARQUET_KEY_TABLE: "instructions", PARQUET_KEY_VERSION: "2"})
    assert tracekit.validate(tmp_path / "t").findings == ()
    got = open_trace(tmp_path / "t").instructions.collect()
    assert got.columns == list(TABLES["instructions"].column_names)
    assert got["start"].to_list() == [None]
    assert trace.path == tmp_path / "t"


def test_newer_schema_version_is_refused_with_upgrade_advice(tmp_path: Path) -> None:
    _builder().write(tmp_path / "t")
    path = tmp_path / "t" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["schema_version"] = 3
    path.write_text(json.dumps(raw))
    with pytest.raises(SchemaVersionError, match="newer than this tracekit .* Upgrade tracekit"):
        open_trace(tmp_path / "t")


def test_upgrade_applies_one_step_per_version_in_order() -> None:
    seen: list[int] = []

    def step(version: int):  # type: ignore[no-untyped-def]
        def apply(manifest, frames):  # type: ignore[no-untyped-def]
            seen.append(manifest["schema_version"])
            frames = {k: v.with_columns(pl.lit(version).alias(f"added_v{version + 1}"))
                      for k, v in frames.items()}
            return {**manifest, f"field_v{version + 1}": True}, frames

        return apply

    frames = {"instructions": pl.LazyFrame({"id": [0]})}
    manifest, upgraded = upgrade({"schema_version": 1}, frames, "m.json", current=3,
                                 steps={1: step(1), 2: step(2)})
    assert seen == [1, 2]
    assert manifest == {"schema_version": 3, "field_v2": True, "field_v3": True}
    assert upgraded["instructions"].collect().columns == ["id", "added_v2", "added_v3"]


def test_a_version_1_bundle_is_upgraded_in_memory(tmp_path: Path) -> None:
    # A bundle written by a version-1 producer: no cond column, version 1 everywhere. It
    # reads and validates as before, its waits meaning count >= value (cond null).
    _builder().write(tmp_path / "t")
    from tracekit.trace.builder import replace_table_file

    for name in ("instructions", "semaphores", "memory", "deps"):
        table = pq.read_table(tmp_path / "t" / f"{name}.parquet")
        if name == "semaphores":
            table = table.drop(["cond"])
        replace_table_file(tmp_path / "t", name, table,
                           metadata={PARQUET_KEY_TABLE: name, PARQUET_KEY_VERSION: "1"})
    raw = json.loads((tmp_path / "t" / "manifest.json").read_text())
    raw["schema_version"] = 1
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(raw))
    assert tracekit.validate(tmp_path / "t").findings == ()
    trace = open_trace(tmp_path / "t")
    sems = trace.semaphores.collect()
    assert sems.columns == list(TABLES["semaphores"].column_names)
    assert sems["cond"].to_list() == [None, None]
    assert trace.manifest.schema_version == 2


def test_a_missing_upgrade_step_is_an_error() -> None:
    with pytest.raises(SchemaVersionError, match="not a known tracekit schema version"):
        check_version(1, "m.json", current=3, steps={2: lambda m, f: (m, f)})
    assert check_version(1, "m.json") == 1


def test_paths_with_glob_characters_are_read_literally(tmp_path: Path) -> None:
    _builder().write(tmp_path / "run[1]?")
    other = TraceBuilder("other")
    for _ in range(5):
        other.inst("tensor", "matmul")
    other.write(tmp_path / "run1A")
    assert open_trace(tmp_path / "run[1]?").instructions.collect().height == 3
    assert tracekit.validate(tmp_path / "run[1]?").findings == ()


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("x")
    with pytest.raises(TraceExistsError, match="not a trace bundle"):
        _builder().write(tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "x"


def test_written_bundle_folder_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _builder().write(tmp_path / "t")
    finally:
        os.umask(old)
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o755


def test_open_refuses_a_column_of_the_wrong_type(tmp_path: Path) -> None:
    from tracekit.errors import TableReadError
    from tracekit.trace.builder import replace_table_file

    _builder().write(tmp_path / "t")
    table = pq.read_table(tmp_path / "t" / "instructions.parquet")
    index = table.schema.get_field_index("end")
    table = table.set_column(index, "end", table["end"].cast("float64"))
    replace_table_file(tmp_path / "t", "instructions", table)
    with pytest.raises(TableReadError, match=r"wrong type: end \(double\)"):
        open_trace(tmp_path / "t")


@pytest.mark.parametrize(("fields", "says"), [
    ({"clock_hz": float("nan")}, "clock_hz: must be a positive number"),
    ({"time_unit": "fortnights"}, "time_unit: is 'fortnights'"),
    ({"extra": {"when": object()}}, "extra: must hold JSON values only"),
    ({"workload": ""}, "workload: must be a non-empty string"),
])
def test_writer_refuses_manifest_fields_before_writing(tmp_path: Path, fields: dict,
                                                       says: str) -> None:
    from tracekit.errors import ManifestError

    args = {"workload": "w", **fields}
    with pytest.raises(ManifestError, match=re.escape(says)):
        write_trace(tmp_path / "t", {"id": [0], "engine": ["t"], "seq": [0], "opcode": ["x"]},
                    validate=False, **args)
    assert os.listdir(tmp_path) == []


def test_open_refuses_a_file_that_differs_from_the_manifest(tmp_path: Path) -> None:
    from tracekit.errors import TableReadError

    _builder().write(tmp_path / "t")
    path = tmp_path / "t" / "deps.parquet"
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF  # inside the first data page; the footer stays readable
    path.write_bytes(bytes(data))
    with pytest.raises(TableReadError, match="damaged or modified"):
        open_trace(tmp_path / "t")
    assert open_trace(tmp_path / "t", verify=False).manifest.workload == "roundtrip"


def test_info_labels_times_in_the_bundles_unit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tracekit.cli.app import app

    write_trace(tmp_path / "t", {"id": [0, 1], "engine": ["t", "t"], "seq": [0, 1],
                                 "opcode": ["x", "x"], "start": [0, 10], "end": [10, 2010]},
                workload="w", time_unit="ns", created="x")
    result = CliRunner().invoke(app, ["info", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "summed durations (ns)" in result.stdout
    assert "0 .. 2,010 (2,010 ns)" in result.stdout
    result = CliRunner().invoke(app, ["info", str(tmp_path / "t"), "--format", "json"])
    assert json.loads(result.stdout)["span"]["seconds"] == pytest.approx(2.01e-6)


def test_atomic_file_replaces_whole_or_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_file(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    write_text_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    # A folder in the way, or a folder that does not exist: an OutputError that says so.
    with pytest.raises(OutputError, match="is a folder"):
        write_text_atomic(tmp_path, "x")
    with pytest.raises(OutputError, match="cannot be written"):
        write_text_atomic(tmp_path / "missing" / "report.md", "x")


# --- what an interrupted write leaves (issue 18) -------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        child.wait()
    return child.pid


def test_leftovers_of_an_interrupted_write_are_cleaned_on_the_next_write(tmp_path: Path) -> None:
    import uuid

    from conftest import build_valid_trace

    dead = _dead_pid()
    stale = [tmp_path / f".out.tmp-{dead}-{uuid.uuid4().hex}",    # a killed write_trace
             tmp_path / f".out.tmp-{uuid.uuid4().hex}",            # one of an older tracekit
             tmp_path / f".out.old-{dead}-{uuid.uuid4().hex}"]     # a killed replacement
    for entry in stale:
        entry.mkdir()
        (entry / "manifest.json").write_text("{}")
    live = tmp_path / f".out.tmp-{os.getpid()}-{uuid.uuid4().hex}"  # a write in progress
    live.mkdir()
    other = tmp_path / f".out2.tmp-{dead}-{uuid.uuid4().hex}"       # another target's
    other.mkdir()
    build_valid_trace().write(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", live.name, other.name])


def test_a_bundle_half_replaced_is_restored_on_the_next_open(tmp_path: Path) -> None:
    import uuid

    from conftest import build_valid_trace

    from tracekit.trace.bundle import open_trace

    build_valid_trace().write(tmp_path / "out")
    # kill -9 between renaming the old bundle away and the new one in (the fallback path
    # where the system cannot exchange two folders) left no bundle at all.
    (tmp_path / "out").rename(tmp_path / f".out.old-{_dead_pid()}-{uuid.uuid4().hex}")
    assert open_trace(tmp_path / "out").manifest.workload
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_a_bundle_exchanges_the_two_folders(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import build_valid_trace

    from tracekit.trace import bundle

    seen = []
    real = bundle._exchange

    def exchange(a: Path, b: Path) -> bool:
        done = real(a, b)
        seen.append((done, (b / "manifest.json").is_file(), (a / "manifest.json").is_file()))
        return done

    monkeypatch.setattr(bundle, "_exchange", exchange)
    build_valid_trace().write(tmp_path / "out")
    b = build_valid_trace()
    b.workload = "second"
    b.write(tmp_path / "out", overwrite=True)
    if sys.platform == "linux":
        assert seen == [(True, True, True)]   # both whole at every moment
    assert bundle.open_trace(tmp_path / "out").manifest.workload == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
