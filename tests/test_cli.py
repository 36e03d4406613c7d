"""The `tracekit` command line, driven through Typer's CliRunner (which keeps stdout and stderr
apart: `result.stdout`, `result.stderr`, and both in `result.output`), plus two real subprocess
runs of `python -m tracekit`."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import (
    WORKLOAD,
    assert_failed_cleanly,
    build_valid_trace,
    edit,
    edit_manifest,
    read_manifest,
    read_table,
)
from typer.testing import CliRunner, Result

import tracekit
from tracekit.cli.app import app
from tracekit.trace.builder import replace_table_file
from tracekit.trace.bundle import file_sha256

MakeBundle = Callable[..., Path]

runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


# --- --version -----------------------------------------------------------------------------


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"tracekit {importlib.metadata.version('tracekit')}\n"
    assert tracekit.__version__ == importlib.metadata.version("tracekit")


# --- validate ------------------------------------------------------------------------------


def test_validate_valid_bundle_text(valid_bundle: Path) -> None:
    result = run("validate", valid_bundle)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"valid: {valid_bundle}")
    assert "(0 errors, 0 warnings)" in result.stdout
    assert result.stderr == ""


def test_validate_valid_bundle_json(valid_bundle: Path) -> None:
    result = run("validate", valid_bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["strict"] is False
    assert (report["errors"], report["warnings"], report["findings"]) == (0, 0, [])
    assert report["path"] == str(valid_bundle)


@pytest.fixture
def broken_bundle(make_bundle: MakeBundle) -> Path:
    """Ends before starts on instruction rows 3 and 5, and a self-edge on deps row 2."""
    return make_bundle(edit("instructions", 3, end=70), edit("instructions", 5, end=150),
                       edit("deps", 2, dst=3))


def test_validate_broken_bundle_text(broken_bundle: Path) -> None:
    result = run("validate", broken_bundle)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    out = result.stdout
    assert out.startswith(f"INVALID: {broken_bundle}")
    assert "(2 errors, 0 warnings)" in out
    assert "[end-before-start] instructions.parquet: 2 rows where end < start" in out
    assert "rows: 3, 5" in out
    assert "id=3 engine=tensor start=80 end=70" in out
    assert "[self-dependency] deps.parquet" in out
    assert "rows: 2\n" in out
    assert "Traceback" not in result.output


def test_validate_broken_bundle_json(broken_bundle: Path) -> None:
    result = run("validate", broken_bundle, "-f", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["errors"] == 2
    found = {f["rule"]: f for f in report["findings"]}
    assert set(found) == {"end-before-start", "self-dependency"}
    ebs = found["end-before-start"]
    assert (ebs["count"], ebs["rows"], ebs["table"], ebs["file"], ebs["severity"]) == \
        (2, [3, 5], "instructions", "instructions.parquet", "error")
    assert ebs["examples"] == ["id=3 engine=tensor start=80 end=70",
                               "id=5 engine=scalar start=180 end=150"]
    assert ebs["fix"]
    selfdep = found["self-dependency"]
    assert (selfdep["count"], selfdep["rows"], selfdep["file"]) == (1, [2], "deps.parquet")


def test_validate_text_says_how_many_more_rows(make_bundle: MakeBundle) -> None:
    def seven_negative(b: Any) -> None:
        for row in b.rows["instructions"]:
            row["elements"] = -1

    result = run("validate", make_bundle(seven_negative))
    assert result.exit_code == 1
    assert "rows: 0, 1, 2, 3, 4 (+2 more)" in result.stdout


@pytest.fixture
def warning_only_bundle(valid_bundle: Path) -> Path:
    (valid_bundle / "notes.txt").write_text("not part of the trace\n")
    return valid_bundle


def test_validate_warning_passes_without_strict(warning_only_bundle: Path) -> None:
    result = run("validate", warning_only_bundle)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: ")
    assert "(0 errors, 1 warning)" in result.stdout
    assert "warning [unlisted-file] notes.txt" in result.stdout


def test_validate_warning_fails_with_strict(warning_only_bundle: Path) -> None:
    result = run("validate", warning_only_bundle, "--strict")
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("INVALID: ")
    assert "warnings count as errors (--strict)" in result.stdout

    as_json = run("validate", warning_only_bundle, "--strict", "--format", "json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert (report["valid"], report["strict"], report["errors"], report["warnings"]) == \
        (False, True, 0, 1)
    assert [f["rule"] for f in report["findings"]] == ["unlisted-file"]


# --- info ----------------------------------------------------------------------------------


def expected_engines() -> dict[str, tuple[int, int]]:
    """engine -> (instructions, busy cycles), computed from the builder's rows."""
    counts: Counter[str] = Counter()
    busy: dict[str, int] = defaultdict(int)
    for row in build_valid_trace().rows["instructions"]:
        counts[row["engine"]] += 1
        busy[row["engine"]] += row["end"] - row["start"]
    return {engine: (counts[engine], busy[engine]) for engine in counts}


def test_expected_engines_are_the_fixture() -> None:
    assert expected_engines() == {"dma.q0": (2, 80), "dma.q1": (2, 90), "tensor": (2, 100),
                                  "scalar": (1, 20)}


def test_info_json(valid_bundle: Path) -> None:
    result = run("info", valid_bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["workload"] == WORKLOAD
    assert info["instructions"] == 7
    assert info["timing"] == "timed"
    assert info["span"]["start"] == 0
    assert info["span"]["end"] == 240
    assert info["span"]["length"] == 240
    assert info["span"]["seconds"] == pytest.approx(240 / 1.0e9)
    engines = {e["engine"]: (e["instructions"], e["busy_cycles"]) for e in info["engines"]}
    assert engines == expected_engines()
    assert [e["engine"] for e in info["engines"]] == ["dma.q0", "dma.q1", "scalar", "tensor"]
    assert [(o["opcode"], o["instructions"]) for o in info["opcodes"]] == [
        ("dma_load", 3), ("matmul", 2), ("activation", 1), ("dma_store", 1)]
    manifest = read_manifest(valid_bundle)
    assert {t["name"]: t["rows"] for t in info["tables"]} == {
        "instructions": 7, "semaphores": 7, "memory": 8, "deps": 5}
    assert {t["name"]: t["bytes"] for t in info["tables"]} == {
        name: entry["bytes"] for name, entry in manifest["tables"].items()}
    assert info["producer"]["name"] == "tracekit.builder"
    assert info["schema_version"] == 2


def test_info_text(valid_bundle: Path) -> None:
    result = run("info", valid_bundle)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(rf"^workload\s+{re.escape(WORKLOAD)}\s*$", out, re.M)
    assert re.search(r"^instructions\s+7 \(timed\)\s*$", out, re.M)
    assert re.search(r"^time span\s+0 \.\. 240 \(240 cycles", out, re.M)
    for engine, (count, busy) in expected_engines().items():
        assert re.search(rf"^{re.escape(engine)}\s+{count}\s+{busy}\s*$", out, re.M), engine
    assert re.search(r"^memory\s+8\s", out, re.M)
    assert result.stderr == ""


# --- errors: exit 1, a message naming the problem, no traceback -------------------------------


@pytest.mark.parametrize("command", ["validate", "info"])
def test_missing_path(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-bundle"
    assert_failed_cleanly(run(command, missing), 1, str(missing), "no such file or folder")


@pytest.mark.parametrize("command", ["validate", "info"])
def test_plain_file(tmp_path: Path, command: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("hello\n")
    assert_failed_cleanly(run(command, path), 1, str(path), "is a file, not a trace bundle")


@pytest.mark.parametrize("command", ["validate", "info"])
def test_folder_without_manifest(tmp_path: Path, command: str) -> None:
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    (folder / "instructions.parquet").write_bytes(b"")
    assert_failed_cleanly(run(command, folder), 1, str(folder), "has no manifest.json")


@pytest.mark.parametrize("command", ["validate", "info"])
def test_manifest_not_json(valid_bundle: Path, command: str) -> None:
    (valid_bundle / "manifest.json").write_text('{"schema_version": 1,')
    result = run(command, valid_bundle, "--format", "json")
    assert_failed_cleanly(result, 1, "manifest.json", "not valid JSON")
    assert result.stdout == ""


def test_corrupt_parquet_info(valid_bundle: Path) -> None:
    (valid_bundle / "instructions.parquet").write_bytes(b"garbage, not parquet\n" * 20)
    # Refused by the quick validation every reading command runs, naming the file and rule.
    assert_failed_cleanly(run("info", valid_bundle), 1, "instructions.parquet",
                          "[file-hash]", "truncated or rewritten")


def test_corrupt_parquet_with_a_matching_hash_info(valid_bundle: Path) -> None:
    path = valid_bundle / "instructions.parquet"
    path.write_bytes(b"garbage, not parquet\n" * 20)
    edit_manifest(valid_bundle, lambda m: m["tables"]["instructions"].update(
        bytes=path.stat().st_size, sha256=file_sha256(path)))
    assert_failed_cleanly(run("info", valid_bundle), 1, "instructions.parquet",
                          "not a readable Parquet file")


def test_corrupt_parquet_validate(valid_bundle: Path) -> None:
    (valid_bundle / "instructions.parquet").write_bytes(b"garbage, not parquet\n" * 20)
    result = run("validate", valid_bundle)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "[table-unreadable] instructions.parquet: not a readable Parquet file" in result.stdout
    assert "[file-hash] instructions.parquet" in result.stdout

    as_json = run("validate", valid_bundle, "--format", "json")
    assert as_json.exit_code == 1
    rules = {f["rule"] for f in json.loads(as_json.stdout)["findings"]}
    assert rules == {"table-unreadable", "file-hash"}


def test_truncated_parquet_info(valid_bundle: Path) -> None:
    path = valid_bundle / "memory.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_failed_cleanly(run("info", valid_bundle), 1, "memory.parquet", "[file-hash]",
                          "truncated or rewritten")


def test_unknown_schema_version_info(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=99))
    assert_failed_cleanly(run("info", valid_bundle), 1, "schema version 99",
                          "Upgrade tracekit")


def test_unknown_schema_version_validate(valid_bundle: Path) -> None:
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=99))
    result = run("validate", valid_bundle)
    assert result.exit_code == 1
    assert "[schema-version]" in result.stdout
    assert "Traceback" not in result.output


def test_validate_reports_engine_seq_breakage_without_crashing(make_bundle: MakeBundle) -> None:
    result = run("validate", make_bundle(edit("instructions", 2, seq=0)))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "[engine-seq-unique] instructions.parquet" in result.stdout
    assert "rows: 0, 2" in result.stdout


def test_info_on_a_table_without_its_required_engine_column(valid_bundle: Path) -> None:
    # `engine` may not be left out; info must say so rather than crash on the nulls it reads.
    data = read_table(valid_bundle, "instructions").drop_columns(["engine"])
    replace_table_file(valid_bundle, "instructions", data)
    assert_failed_cleanly(run("info", valid_bundle), 1, "instructions.parquet", "engine")


def test_info_on_a_null_engine_does_not_crash(valid_bundle: Path) -> None:
    data = read_table(valid_bundle, "instructions")
    engines = data.column("engine").to_pylist()
    engines[4] = None
    index = data.schema.get_field_index("engine")
    replace_table_file(valid_bundle, "instructions", data.set_column(
        index, pa.field("engine", pa.string()), pa.array(engines, pa.string())))
    result = run("info", valid_bundle)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code in (0, 1)
    assert "Traceback" not in result.output


def _limit_memory() -> None:  # runs in the child process before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS to contain a failure")
def test_info_schema_version_far_below_the_first(valid_bundle: Path) -> None:
    # Run in a child limited to 3 GiB, so a reader that enumerates every version from
    # -10**12 up to 1 fails this test instead of exhausting the machine's memory.
    edit_manifest(valid_bundle, lambda m: m.update(schema_version=-10**12))
    proc = subprocess.run([sys.executable, "-m", "tracekit", "info", str(valid_bundle)],
                          capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "schema version -1000000000000 is not a known tracekit schema version" in proc.stderr


# --- usage errors: exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["validate"],
    ["info"],
    ["info", "{bundle}", "--format", "xml"],
    ["validate", "{bundle}", "-f", "yaml"],
    ["validate", "{bundle}", "--no-such-option"],
    ["frobnicate"],
], ids=["validate-no-arg", "info-no-arg", "info-bad-format", "validate-bad-format",
        "unknown-option", "unknown-command"])
def test_usage_errors_exit_2(valid_bundle: Path, args: list[str]) -> None:
    result = run(*[a.replace("{bundle}", str(valid_bundle)) for a in args])
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_bad_format_names_the_legal_values(valid_bundle: Path) -> None:
    result = run("info", valid_bundle, "--format", "xml")
    assert result.exit_code == 2
    assert "'xml'" in result.stderr and "text" in result.stderr and "json" in result.stderr


# --- python -m tracekit --------------------------------------------------------------------


def test_python_m_tracekit_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "tracekit", "--version"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"tracekit {tracekit.__version__}\n"


def test_python_m_tracekit_validate(valid_bundle: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tracekit", "validate", str(valid_bundle)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"valid: {valid_bundle}")
    assert "Traceback" not in proc.stderr
