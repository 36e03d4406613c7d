"""The exported schema contract in schemas/ matches the schema in code, and drift is caught."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pytest

from tracekit.trace import contract
from tracekit.trace.schema import TABLES, ColumnSpec, ColumnType

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_checked_in_contract_matches_the_code() -> None:
    assert contract.stale_files(SCHEMAS) == [], (
        "schemas/ is out of date: run `python -m tracekit.trace.contract schemas`")


def test_a_schema_change_without_re_export_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TABLES["deps"]
    changed = dataclasses.replace(
        spec, columns=(*spec.columns, ColumnSpec("latency", ColumnType.INT64, True, "x")))
    monkeypatch.setattr(contract, "TABLES", {**TABLES, "deps": changed})
    assert contract.stale_files(SCHEMAS) == ["deps.json", "README.md"]


def test_check_mode_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert contract.main([str(tmp_path / "out")]) == 0
    assert contract.main([str(tmp_path / "out"), "--check"]) == 0
    (tmp_path / "out" / "memory.json").write_text("{}")
    assert contract.main([str(tmp_path / "out"), "--check"]) == 1
    assert "memory.json: differs from the schema in code" in capsys.readouterr().err


def test_every_table_documents_every_column() -> None:
    for name, spec in TABLES.items():
        doc = json.loads((SCHEMAS / f"{name}.json").read_text())
        assert [c["name"] for c in doc["columns"]] == list(spec.column_names)
        for col, entry in zip(spec.columns, doc["columns"], strict=True):
            assert entry["nullable"] is col.nullable
            assert entry["meaning"]
            assert entry["type"] == col.type.value
        assert {r["code"] for r in doc["rules"]}, f"{name} lists no rules"


def test_spelled_out_arrow_types_are_the_real_ones() -> None:
    spelled = {"int64": pa.int64(), "dictionary<int32, string>": pa.dictionary(pa.int32(),
                                                                              pa.string())}
    for spec in TABLES.values():
        for col in spec.columns:
            assert spelled[contract._ARROW_TYPE[col.type]] == col.arrow_type


def test_the_semaphore_semantics_are_written_once() -> None:
    # The contract's README and the replay's module docstring carry the one text in schema.py.
    import tracekit.replay.semaphores as semaphores
    from tracekit.trace.contract import readme
    from tracekit.trace.schema import SEMAPHORE_SEMANTICS

    def flat(text: str) -> str:
        return " ".join(text.split())

    assert flat(SEMAPHORE_SEMANTICS) in flat(semaphores.__doc__ or "")
    assert SEMAPHORE_SEMANTICS in readme()
