"""Golden cases: a bundle, a command, and the exact output checked in under tests/golden/.

Refresh after an intended change with `pytest tests/test_golden.py --update-golden` and review
the diff of tests/golden/ like any other change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracekit.cli.app import app
from tracekit.trace.builder import TraceBuilder

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def _broken_bundle(folder: Path) -> None:
    """A small bundle breaking several rules at once, for the validate report's golden text."""
    b = TraceBuilder("broken")
    load = b.inst("dma.q0", "dma_load", 0, 40, bytes=4096)
    mm = b.inst("tensor", "matmul", 44, 30, elements=16384)  # ends before it starts
    b.inst("tensor", "matmul", 90, None, seq=0)  # reuses seq 0, has no end
    b.inst("tensor", "matmul", id=1)  # duplicate id, untimed
    b.signal(load, sem=0)
    b.wait(mm, sem=0, value=-1)
    b.access(load, "sbuf", "write", 0, 64)  # on-chip access without partitions
    b.dep(load, 42, "data")  # names no instruction
    b.dep(mm, mm, "control")  # self edge, unknown kind
    b.write(folder, validate=False)


CASES = {
    "gemm.info.txt": (["info", "sample_traces/gemm"], 0),
    "gemm.info.json": (["info", "sample_traces/gemm", "--format", "json"], 0),
    "gemm.validate.txt": (["validate", "sample_traces/gemm"], 0),
    "gemm.replay.txt": (["replay", "sample_traces/gemm"], 0),
    "mlp.replay.observed.json": (["replay", "sample_traces/mlp", "--mode", "observed",
                                  "--format", "json"], 0),
    "conv2d.replay.md": (["replay", "sample_traces/conv2d", "--format", "md"], 0),
    "attention.analyze.md": (["analyze", "sample_traces/attention", "--format", "md"], 0),
    "mlp.stalls.observed.json": (["stalls", "sample_traces/mlp", "--timeline", "observed",
                                  "--format", "json"], 0),
    "gemm.critical-path.txt": (["critical-path", "sample_traces/gemm", "--steps", "5"], 0),
    "conv2d.critical-path.md": (["critical-path", "sample_traces/conv2d", "--format", "md",
                                 "--steps", "5"], 0),
    "attention.stalls.md": (["stalls", "sample_traces/attention", "--format", "md"], 0),
    "mlp_faults.validate.json": (["validate", "sample_traces/mlp_faults", "--format", "json"],
                                 0),
    "gemm_faults.bugs.txt": (["bugs", "sample_traces/gemm_faults"], 3),
    "attention_faults.bugs.md": (["bugs", "sample_traces/attention_faults", "--format", "md"],
                                 3),
    "mlp_faults.bugs.json": (["bugs", "sample_traces/mlp_faults", "--format", "json"], 3),
    "broken.validate.txt": (["validate", "BROKEN"], 1),
    "gemm.whatif.md": (["whatif", "sample_traces/gemm", "--scale", "engine=dma.q0:0.9",
                        "--format", "md"], 0),
    "gemm.sensitivity.md": (["sensitivity", "sample_traces/gemm", "--format", "md"], 0),
    "gemm.sensitivity.txt": (["sensitivity", "sample_traces/gemm", "--top", "5"], 0),
    "gemm.calibrate.md": (["calibrate", "sample_traces/gemm", "-o", "TMP/fitted.toml",
                           "--format", "md"], 0),
    "mlp.calibrate.txt": (["calibrate", "sample_traces/mlp", "-o", "TMP/fitted.toml"], 0),
    "broken.validate.json": (["validate", "BROKEN", "--format", "json"], 1),
    "broken.validate.md": (["validate", "BROKEN", "--format", "md"], 1),
    "gemm.info.md": (["info", "sample_traces/gemm", "--format", "md"], 0),
    "machines.md": (["machines", "--format", "md"], 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                request: pytest.FixtureRequest) -> None:
    args, exit_code = CASES[name]
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("COLUMNS", "120")
    if "BROKEN" in args:
        _broken_bundle(tmp_path / "broken")
        monkeypatch.chdir(tmp_path)
        args = [a.replace("BROKEN", "broken") for a in args]
    # TMP/: a file the command writes, in tmp_path; the output names it TMP/ again.
    args = [a.replace("TMP/", f"{tmp_path}/") for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == exit_code, result.output
    # tmp_path's length varies from run to run, and so does the padding of a table column
    # that holds it: trailing blanks do not count.
    stdout = "\n".join(line.rstrip() for line in
                       result.stdout.replace(f"{tmp_path}/", "TMP/").split("\n"))
    expected = GOLDEN / name
    if request.config.getoption("--update-golden"):
        expected.write_text(stdout, encoding="utf-8")
    assert stdout == "\n".join(line.rstrip() for line in
                                expected.read_text(encoding="utf-8").split("\n"))


@pytest.mark.parametrize("args", [
    ["replay", "sample_traces/gemm", "--format", "md"],
    ["analyze", "sample_traces/mlp", "--format", "md"],
    ["bugs", "sample_traces/mlp_faults", "--format", "md"],
    ["critical-path", "sample_traces/conv2d", "--format", "md"],
    ["whatif", "sample_traces/mlp", "--scale", "engine=tensor:0.5", "--format", "md"],
    ["sensitivity", "sample_traces/gemm", "--format", "md"],
    ["calibrate", "sample_traces/gemm", "-o", "TMP/fitted.toml", "--format", "md"],
    ["info", "sample_traces/layernorm_untimed", "--format", "md"],
    ["validate", "sample_traces/mlp_faults", "--format", "md"],
    ["machines", "--format", "md"],
], ids=lambda a: a[0])
def test_markdown_tables_have_as_many_cells_in_every_row(args: list[str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # A `|` inside a header or a cell (the correlation table's "p50 |err|", calibration's
    # "median |err|") is escaped, so every row of a table splits into as many cells as its
    # separator row.
    import re

    monkeypatch.chdir(REPO)
    args = [a.replace("TMP/", f"{tmp_path}/") for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 3), result.output
    lines = result.stdout.splitlines()
    tables = 0
    for k, line in enumerate(lines):
        if re.fullmatch(r"\|(-+:?\|)+", line):
            tables += 1
            width = line.count("|")
            j = k - 1
            while j >= 0 and lines[j].startswith("|"):
                j -= 1
            j += 1
            while j < len(lines) and lines[j].startswith("|"):
                cells = len(re.findall(r"(?<!\\)\|", lines[j]))
                assert cells == width, (args, lines[j])
                j += 1
    assert tables
