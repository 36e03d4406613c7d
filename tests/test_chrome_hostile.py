"""Hostile Chrome trace JSON through `tracekit convert chrome`: each reproduction of issue 18's
Chrome items is refused with a clear error (or imported), never a traceback, and a quick
hypothesis fuzz of event lists keeps to that (a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tracekit.cli.app import app
from tracekit.convert.chrome import ChromeTraceError, chrome_tables

runner = CliRunner()
DEEP = 100_000


def convert(tmp_path: Path, text: str, name: str = "t.json") -> Any:
    source = tmp_path / name
    source.write_text(text, encoding="utf-8", errors="surrogatepass")
    return runner.invoke(app, ["convert", "chrome", str(source), "-o", str(tmp_path / "out")])


@pytest.mark.parametrize("text", [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[" * DEEP,
    '[{"ph":"X","name":"a","pid":1,"tid":1,"ts":0,"dur":1,"args":' + "[" * DEEP + "]" * DEEP
    + "}]",
], ids=["arrays", "objects", "unterminated", "in-args"])
def test_deep_nesting_is_refused_clearly(tmp_path: Path, text: str) -> None:
    result = convert(tmp_path, text)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_5000_digit_ts_is_refused(tmp_path: Path) -> None:
    result = convert(tmp_path, '[{"ph":"X","name":"a","pid":1,"tid":1,"ts":' + "9" * 5000
                     + ',"dur":1}]')
    assert result.exit_code == 1 and "number" in result.output


def test_an_array_ts_beside_a_missing_one_is_refused(tmp_path: Path) -> None:
    """A field holding a list in one row and absent in another was an internal error: the
    value's list was read by numpy as a dimension."""
    result = convert(tmp_path, '[{"ph":"X","name":"a","pid":1,"tid":1,"dur":1},'
                               '{"ph":"X","name":"b","pid":1,"tid":1,"ts":[],"dur":1}]')
    assert result.exit_code == 1, result.output
    assert 'event 0: "ts" is missing' in result.output


def test_a_lone_surrogate_in_a_name_is_replaced(tmp_path: Path) -> None:
    result = convert(tmp_path, '[{"ph":"X","name":"a\\ud800","pid":1,"tid":1,"ts":0,"dur":1}]')
    assert result.exit_code == 0, result.output


def test_a_huge_pc_is_left_out(tmp_path: Path) -> None:
    result = convert(tmp_path, '[{"ph":"X","name":"a","pid":1,"tid":1,"ts":0,"dur":1,'
                               '"args":{"pc":1180591620717411303424}}]')
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("tk", [{"format": 1, "timelines": 5}, {"format": 1, "timelines": [5]},
                                {"format": 1, "timelines": [{"pid": [1]}]}, "x"])
def test_other_data_of_the_wrong_types_is_ignored(tmp_path: Path, tk: Any) -> None:
    doc = {"otherData": {"tracekit": tk},
           "traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 1}]}
    result = convert(tmp_path, json.dumps(doc))
    assert result.exit_code == 0, result.output


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True), st.text(max_size=4))
events = st.fixed_dictionaries({}, optional={
    "ph": st.sampled_from(["X", "B", "E", "s", "t", "f", "i", "M", "C", "Z"]) | scalars,
    "name": st.sampled_from(["a", "b", "thread_name", "process_name"]) | scalars,
    "cat": st.sampled_from(["kernel", "cpu_op", "cuda_runtime", "cuda_sync", "Trace",
                            "user_annotation", "ac2g"]) | scalars,
    "pid": st.sampled_from([0, 1, "p"]) | scalars, "tid": st.sampled_from([0, 1, 7]) | scalars,
    "ts": st.integers(0, 50) | scalars, "dur": st.integers(0, 20) | scalars,
    "id": st.integers(0, 3) | scalars, "bp": st.just("e"),
    "args": st.dictionaries(st.sampled_from(["correlation", "stream", "pc", "bytes", "name",
                                             "cuda_sync_kind", "wait_on_stream",
                                             "wait_on_cuda_event_record_corr_id", "device"]),
                            st.integers(-3, 9) | scalars, max_size=4) | scalars,
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=12),
       st.sampled_from(["auto", "kineto", "generic"]), st.sampled_from(["depth", "top", "leaf"]))
def test_fuzzed_events_import_or_fail_cleanly(evs: list[dict[str, Any]], profile: str,
                                              nesting: str) -> None:
    try:
        result = chrome_tables(evs, {"_keys": ["schemaVersion"]}, "f.json", profile=profile,
                               nesting=nesting)
    except ChromeTraceError as exc:
        assert str(exc).startswith("f.json")
        return
    assert result.instructions.height > 0
