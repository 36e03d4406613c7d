"""Quick fuzz suite (issue 18; under a minute): hypothesis-made and hand-made hostile bundles,
manifests and SCALE-Sim runs. Each must end in a TracekitError or a clean exit 1 with a
message, never a traceback, a Python warning or a half-written output. The long campaign is
benchmarks/fuzz_campaign.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import build_valid_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_convert_scalesim import TINY, tiny_run
from typer.testing import CliRunner

from tracekit.cli.app import app
from tracekit.errors import TracekitError
from tracekit.trace.bundle import open_trace
from tracekit.trace.validate import validate

runner = CliRunner()
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
MANIFEST_KEYS = ["schema_version", "workload", "producer", "machine", "clock_hz", "time_unit",
                 "created", "tables", "extra"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "base"
    build_valid_trace().write(path)
    return path


def _copy(base: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target)
    return target


def _clean(*command: str) -> None:
    result = runner.invoke(app, [*command])
    assert result.exit_code in (0, 1, 3), result.output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output


def _library(path: Path) -> None:
    for call in (validate, open_trace):
        try:
            call(path)
        except TracekitError:
            pass


@FUZZ
@given(key=st.sampled_from(MANIFEST_KEYS), value=json_values)
def test_manifest_field_values(base: Path, tmp_path: Path, key: str, value: Any) -> None:
    bundle = _copy(base, tmp_path, "m")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[key] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _library(bundle)
    _clean("validate", str(bundle))
    _clean("stalls", str(bundle))


@FUZZ
@given(data=st.binary(max_size=200))
def test_manifest_bytes(base: Path, tmp_path: Path, data: bytes) -> None:
    bundle = _copy(base, tmp_path, "b")
    (bundle / "manifest.json").write_bytes(data)
    _library(bundle)
    _clean("info", str(bundle))


@FUZZ
@given(table=st.sampled_from(["instructions", "semaphores", "memory", "deps"]),
       flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1,
                      max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 0.999)), rehash=st.booleans())
def test_table_bytes(base: Path, tmp_path: Path, table: str,
                     flips: list[tuple[float, int]], cut: float | None, rehash: bool) -> None:
    import hashlib

    bundle = _copy(base, tmp_path, "t")
    path = bundle / f"{table}.parquet"
    data = bytearray(path.read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    path.write_bytes(bytes(data))
    if rehash:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["tables"][table].update(bytes=len(data),
                                         sha256=hashlib.sha256(data).hexdigest())
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    _library(bundle)
    _clean("bugs", str(bundle))


@FUZZ
@given(file=st.sampled_from(sorted(
           ["COMPUTE_REPORT.csv", "layer0/IFMAP_DRAM_TRACE.csv", "layer0/OFMAP_SRAM_TRACE.csv",
            f"inputs/{TINY}.cfg", f"inputs/{TINY}.csv"])),
       at=st.floats(0, 0.999),
       value=st.sampled_from(["1e300", "-5", "99999999999999999999", "nan", "%(x)s", "", "0.5",
                              "inf", "9223372036854775807", ",,,", "\x00", "[x]"]))
def test_scalesim_runs(tmp_path: Path, file: str, at: float, value: str) -> None:
    run = tiny_run(tmp_path / "r")
    path = run / file
    text = path.read_text()
    cut = int(at * len(text))
    path.write_text(text[:cut] + value + text[cut + 1:])
    out = tmp_path / "out"
    result = runner.invoke(app, ["convert", "scalesim", str(run), "-o", str(out),
                                 "--force"])
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    if result.exit_code == 1:
        assert not list(tmp_path.glob(".out*"))
    shutil.rmtree(tmp_path / "r")


HOSTILE_MANIFESTS = [
    "[" * 100_000, "{" * 100_000, '{"schema_version": 1e999}', '{"tables": {"instructions": '
    '{"file": "../../../etc/passwd"}}}', "\ufeff{}", '{"schema_version": -99999999999999999}',
    '{"schema_version": 2, "clock_hz": 1e300, "time_unit": "us"}', "null", '"x"', "1" * 5000,
]


@pytest.mark.parametrize("text", HOSTILE_MANIFESTS, ids=range(len(HOSTILE_MANIFESTS)))
def test_hand_made_manifests(base: Path, tmp_path: Path, text: str) -> None:
    bundle = _copy(base, tmp_path, "h")
    (bundle / "manifest.json").write_text(text)
    _library(bundle)
    for command in ("validate", "info", "analyze"):
        _clean(command, str(bundle))


def test_hand_made_tables(base: Path, tmp_path: Path) -> None:
    """A table file that is a folder, a FIFO-free empty file, a link to /dev/zero."""
    for name, make in {
            "folder": lambda p: (p.unlink(), p.mkdir()),
            "empty": lambda p: p.write_bytes(b""),
            "zero": lambda p: (p.unlink(), p.symlink_to("/dev/zero")),
            "magic": lambda p: p.write_bytes(b"PAR1" * 4)}.items():
        bundle = _copy(base, tmp_path, name)
        make(bundle / "memory.parquet")
        _library(bundle)
        _clean("validate", str(bundle))
        _clean("replay", str(bundle))


def test_every_column_all_null(base: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    from tracekit.trace.builder import replace_table_file

    for column in pq.read_schema(base / "instructions.parquet").names:
        bundle = _copy(base, tmp_path, "n")
        data = pq.read_table(bundle / "instructions.parquet")
        index = data.schema.get_field_index(column)
        data = data.set_column(index, pa.field(column, pa.int64(), nullable=True),
                               pa.nulls(data.num_rows, pa.int64()))
        replace_table_file(bundle, "instructions", data)
        _library(bundle)
        for command in ("bugs", "analyze"):
            _clean(command, str(bundle))


def test_strings_that_are_not_utf8(base: Path, tmp_path: Path) -> None:
    """Found by the campaign: a string page that is not UTF-8 made polars panic inside
    validate (a PanicException, which is no Exception) and every command print a traceback."""
    import pyarrow as pa

    from tracekit.trace.builder import replace_table_file

    bundle = _copy(base, tmp_path, "u")
    data = pq.read_table(bundle / "instructions.parquet")
    index = data.schema.get_field_index("opcode")
    values = pa.array([b"\xff\xfe"] * data.num_rows, pa.binary()).view(pa.string())
    values = values.dictionary_encode()
    data = data.set_column(index, pa.field("opcode", values.type), values)
    replace_table_file(bundle, "instructions", data)
    _library(bundle)
    for command in ("validate", "info", "analyze", "bugs", "replay"):
        _clean(command, str(bundle))
