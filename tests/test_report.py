"""`tracekit report`, `diff --format html` and nightly's index.html: the numbers behind each
figure are those of the JSON reports of the same trace, the binned timeline adds up to the same
busy cycles, the window keeps the instructions it should, bad input is refused cleanly and the
page is the same bytes every time. The pages in a real browser: tests/test_report_browser.py."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_failed_cleanly
from typer.testing import CliRunner, Result

import tracekit
from tracekit.analysis.figures import accounts, busy_over_time
from tracekit.cli.app import app
from tracekit.replay.machine import builtin_machine
from tracekit.trace.builder import TraceBuilder

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_traces"
MLP = str(SAMPLES / "mlp")  # timed, three layers
runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def json_of(*args: Any) -> dict[str, Any]:
    result = run(*args, "-f", "json")
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)


def page_data(page: Path) -> dict[str, Any]:
    """The figures' numbers as the page's script reads them."""
    text = page.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="tracekit-data">(.*?)</script>',
                      text, re.S)
    assert block is not None
    return json.loads(block.group(1))["figures"]


def decode(a: dict[str, str]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(a["b64"]), dtype=f"<{a['dtype']}")


def traces(figure: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t.get("name", ""): t for t in figure["data"]}


@pytest.fixture(scope="module")
def mlp_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "mlp.html"
    result = run("report", MLP, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr and result.stdout == ""
    return out


@pytest.fixture(scope="module")
def analyze_json() -> dict[str, Any]:
    return json_of("analyze", MLP)


# --- each figure's numbers are the JSON reports' ------------------------------------------------


def test_the_head_is_analyze_head(mlp_page: Path, analyze_json: dict[str, Any]) -> None:
    text = mlp_page.read_text(encoding="utf-8")
    assert "<th>workload</th><td>mlp_1024x2048x2048x512x1024</td>" in text
    assert "<th>producer</th><td>tracekit.workloads" in text
    assert "<th>timeline</th><td>observed (the trace&#x27;s own timing)</td>" in text
    makespan = analyze_json["makespan_cycles"]
    assert f"<th>makespan</th><td>{makespan:,} cycles (" in text
    assert "<th>instructions</th><td>2,832</td>" in text
    assert '<ul class="verdict"><li>critical path (' in text


def test_stall_bars_are_the_stall_table(mlp_page: Path, analyze_json: dict[str, Any]) -> None:
    figure = page_data(mlp_page)["stalls"]
    stalls = json_of("stalls", MLP)
    want = {(r["engine"], f"{r['bucket']}: {r['cause']}"): r["cycles"]
            for r in stalls["stalls"]}
    got = {(engine, name): y for name, t in traces(figure).items()
           for engine, y in zip(t["x"], t["y"], strict=True) if y}
    assert got == want
    per_engine: dict[str, int] = {}
    for (engine, _), cycles in got.items():
        per_engine[engine] = per_engine.get(engine, 0) + cycles
    assert set(per_engine.values()) == {analyze_json["makespan_cycles"]}


def test_critical_path_bars_are_critical_path_json(mlp_page: Path) -> None:
    figures = page_data(mlp_page)
    path = json_of("critical-path", MLP)
    for key, group in (("critical-path-engine", "engine"), ("critical-path-layer", "layer")):
        bars = figures[key]["data"][0]
        assert dict(zip(bars["y"], bars["x"], strict=True)) == {
            r[group]: r["cycles"] for r in path[f"by_{group}"]}
        assert sum(bars["x"]) == path["makespan_cycles"]


def test_opcode_bars_sum_the_stall_table_busy_rows(mlp_page: Path) -> None:
    bars = page_data(mlp_page)["opcodes"]["data"][0]
    busy: dict[str, int] = {}
    for r in json_of("stalls", MLP)["stalls"]:
        if r["bucket"] == "busy":
            busy[r["cause"]] = busy.get(r["cause"], 0) + r["cycles"]
    assert dict(zip(bars["y"], bars["x"], strict=True)) == busy


def test_utilization_over_time_adds_up_to_analyze_busy(mlp_page: Path,
                                                       analyze_json: dict[str, Any]) -> None:
    figure = traces(page_data(mlp_page)["utilization"])
    busy = {r["engine"]: r["busy_cycles"] for r in analyze_json["engines"]}
    assert {name: sum(t["customdata"]) for name, t in figure.items()} == busy
    x = figure["tensor"]["x"]
    widths = np.diff([*x, x[0] + analyze_json["makespan_cycles"]])
    for name, t in figure.items():
        assert sum(np.array(t["y"]) * widths / 100) == pytest.approx(busy[name])


def test_bandwidth_over_time_averages_to_analyze_bandwidth(
        mlp_page: Path, analyze_json: dict[str, Any]) -> None:
    figures = page_data(mlp_page)
    makespan = analyze_json["makespan_cycles"]
    queues = traces(figures["dma-bandwidth"])
    x = queues["dma.q0"]["x"]
    widths = np.diff([*x, x[0] + makespan])
    for row in analyze_json["engines"]:
        if row["engine"].startswith("dma."):
            mean = float(np.sum(np.array(queues[row["engine"]]["y"]) * widths)) / makespan
            assert mean == pytest.approx(row["bandwidth"], abs=1e-3)
    hbm = traces(figures["hbm-bandwidth"])
    total = float(np.sum(np.array(hbm["HBM (all queues)"]["y"]) * widths)) / makespan
    assert total == pytest.approx(analyze_json["hbm"]["bandwidth"])
    limit = builtin_machine().hbm_bytes_per_cycle
    assert hbm[f"HBM limit {limit:,.0f} B/cycle"]["y"] == [limit, limit]
    # Rates are read against zero: both axes start there, whatever the data.
    for name in ("dma-bandwidth", "hbm-bandwidth"):
        assert figures[name]["layout"]["yaxis"]["rangemode"] == "tozero"


def test_tables_and_ranking_are_analyze_json(mlp_page: Path,
                                             analyze_json: dict[str, Any]) -> None:
    text = mlp_page.read_text(encoding="utf-8")
    for row in analyze_json["engines"]:
        assert f'<td class="txt">{row["engine"]}</td><td class="num">' \
               f'{row["instructions"]:,}</td><td class="num">{row["busy_cycles"]:,}</td>' in text
    bars = page_data(mlp_page)["sensitivity"]["data"][0]
    assert bars["x"] == [r["gained"] for r in analyze_json["sensitivity"]]
    assert bars["y"] == [f"{r['group']} {r['name']}" for r in analyze_json["sensitivity"]]
    for finding in analyze_json["findings"]:
        assert f'<td class="txt">{finding["code"]}</td>' in text


def test_model_against_observed_is_replay_correlation(mlp_page: Path) -> None:
    figures = page_data(mlp_page)
    corr = json_of("replay", MLP)["correlation"]
    bias, mape = (traces(figures["model-opcodes"])[k] for k in ("bias %", "MAPE %"))
    assert bias["x"] == [r["opcode"] for r in corr["opcodes"]]
    assert [round(v, 3) for v in bias["y"]] == [r["bias_pct"] for r in corr["opcodes"]]
    assert [round(v, 3) for v in mape["y"]] == [r["mape_pct"] for r in corr["opcodes"]]
    scatter = traces(figures["model-scatter"])
    shown = {i: (o, p) for t in scatter.values() if "customdata" in t
             for i, o, p in zip(t["customdata"], t["x"], t["y"], strict=True)}
    for r in corr["largest_duration_errors"]:  # the most divergent are always shown
        assert shown[r["id"]] == (r["observed_duration"], r["predicted_duration"])


def test_each_figure_names_the_command_with_its_numbers(mlp_page: Path) -> None:
    text = mlp_page.read_text(encoding="utf-8")
    for command in ("analyze", "stalls", "critical-path"):
        assert (f"<code>tracekit {command} {MLP} --timeline observed -f json</code>") in text
    assert f"<code>tracekit replay {MLP} -f json</code>" in text


# --- the engine timeline: detail, binned, window ------------------------------------------------


def _timeline(path: Path) -> dict[str, Any]:
    runs = page_data(path)["timeline"]["runs"]
    assert len(runs) == 1
    return runs[0]


def test_past_max_bars_the_timeline_is_binned_and_adds_up_to_busy(
        tmp_path: Path, analyze_json: dict[str, Any]) -> None:
    out = tmp_path / "binned.html"
    assert run("report", MLP, "-o", out, "--max-bars", 100).exit_code == 0
    lane = _timeline(out)
    assert "bars" not in lane and lane["instructions"] == 2832
    busy = decode(lane["busy"]).reshape(len(lane["names"]), lane["bins"])
    want = {r["engine"]: r["busy_cycles"] for r in analyze_json["engines"]}
    assert dict(zip(lane["names"], busy.sum(axis=1).astype(int).tolist(), strict=True)) == want
    assert "more than 100: each lane&#x27;s busy cycles per bin" in out.read_text()


def test_under_max_bars_every_instruction_is_a_bar(mlp_page: Path) -> None:
    lane = _timeline(mlp_page)
    bars = lane["bars"]
    assert sorted(decode(bars["id"]).tolist()) == list(range(2832))
    a = tracekit.analyze(MLP)
    frame = a.line.frame.sort("id")
    start = decode(bars["start"]) + lane["lo"]
    order = np.argsort(decode(bars["id"]))
    assert (start[order] == frame["start"].to_numpy()).all()
    names = [lane["names"][k] for k in decode(bars["lane"])[order]]
    assert names == frame["engine"].cast(str).to_list()
    # The critical path's steps, merged per lane where they touch, cover its counted cycles.
    path = lane["path"]
    covered = int((decode(path["end"]) - decode(path["start"])).sum())
    assert covered >= a.path.steps["counted"].sum()


def test_the_window_holds_its_instructions_one_by_one(tmp_path: Path) -> None:
    frame = tracekit.analyze(MLP).line.frame
    lo, hi = 100_000, 140_000
    inside = frame.filter((frame["start"] < hi) & ((frame["end"] > lo) | (frame["start"] >= lo)))
    out = tmp_path / "window.html"
    result = run("report", MLP, "-o", out, "--from", lo, "--to", hi, "--max-bars", 1000)
    assert result.exit_code == 0, result.output
    lane = _timeline(out)
    assert (lane["lo"], lane["hi"], lane["instructions"]) == (lo, hi, inside.height)
    assert sorted(decode(lane["bars"]["id"]).tolist()) == sorted(inside["id"].to_list())
    assert "window [100,000, 140,000) of the timeline" in out.read_text()


def test_busy_over_time_of_a_tiny_timeline() -> None:
    # tensor: 0-10 and 15-35; dma.q0: 5-25 of which the last 5 cycles are HBM contention.
    import polars as pl

    t = pl.DataFrame({"id": [0, 1, 2], "engine": ["tensor", "tensor", "dma.q0"],
                      "start": [0, 15, 5], "end": [10, 35, 25], "contention": [0, 0, 5]})
    acc = accounts(t)
    assert acc.engines == ["dma.q0", "tensor"]
    assert busy_over_time(t, acc, 0, 35, 10).tolist() == [[5, 10, 0, 0], [10, 5, 10, 5]]
    assert busy_over_time(t, acc, 8, 22, 5).tolist() == [[5, 5, 2], [2, 3, 4]]


# --- diff and nightly pages ---------------------------------------------------------------------


def test_diff_page_waterfalls_are_diff_attribution(tmp_path: Path) -> None:
    base, cand = SAMPLES / "gemm", SAMPLES / "gemm_faults"
    out = tmp_path / "diff.html"
    result = run("diff", base, cand, "--format", "html", "-o", out)
    assert result.exit_code == 3 and result.stdout == ""  # a regression, as the text diff says
    want = json_of("diff", base, cand)
    assert (f"REGRESSION: makespan {want['base_makespan_cycles']:,} -> "
            f"{want['cand_makespan_cycles']:,}") in result.stderr
    figures = page_data(out)
    for key, table, group in (("waterfall-engine", "attribution_by_engine", "engine"),
                              ("waterfall-layer", "attribution_by_layer", "layer")):
        w = figures[key]["data"][0]
        assert w["x"] == ["base", *(r[group] for r in want[table]), "candidate"]
        assert w["y"] == [want["base_makespan_cycles"], *(r["delta"] for r in want[table]),
                          want["cand_makespan_cycles"]]
        assert w["y"][0] + sum(w["y"][1:-1]) == w["y"][-1]
    moved = figures["stall-causes"]["data"][0]
    assert moved["x"] == [r["delta"] for r in want["stall_causes"][:20]]
    runs = figures["timelines"]["runs"]
    assert [r["instructions"] for r in runs] == [6272, 6272]
    text = out.read_text()
    assert all(f'<td class="txt">{r["code"]}</td>' in text for r in want["new_findings"])


def test_nightly_writes_an_index_linking_the_regression_diff(tmp_path: Path) -> None:
    import shutil

    for folder, sample in (("a", "gemm"), ("b", "gemm_faults")):
        shutil.copytree(SAMPLES / sample, tmp_path / folder / "gemm")
    for name, folder in (("s1", "a"), ("s2", "b")):
        (tmp_path / f"{name}.toml").write_text(
            f'name = "t"\n[[workloads]]\ntrace = "{folder}/gemm"\n', encoding="utf-8")
    history = tmp_path / "h"
    first = run("nightly", tmp_path / "s1.toml", "--history", history, "--run-id", "r1",
                "--workers", 1, "--report", tmp_path / "r1")
    assert first.exit_code == 0, first.output
    second = run("nightly", tmp_path / "s2.toml", "--history", history, "--run-id", "r2",
                 "--workers", 1, "--report", tmp_path / "r2")
    assert second.exit_code == 3, second.output
    index = (tmp_path / "r2" / "index.html").read_text()
    assert '<a href="diff-gemm.html">diff-gemm.html</a>' in index
    assert (tmp_path / "r2" / "diff-gemm.html").exists()
    trend = page_data(tmp_path / "r2" / "index.html")["trend-0"]["data"]
    history_json = json_of("history", history, "--workload", "gemm")
    assert trend[0]["x"] == ["r1", "r2"]
    assert trend[0]["y"] == [r["makespan"] for r in history_json["runs"]]
    assert trend[1]["x"] == ["r2"]  # the regression, marked
    assert not (tmp_path / "r1" / "diff-gemm.html").exists()


# --- bad input, determinism, nothing from the network -------------------------------------------


def test_bad_input_is_refused_with_no_file_written(tmp_path: Path, valid_bundle: Path) -> None:
    out = tmp_path / "r.html"
    assert_failed_cleanly(run("report", valid_bundle, "-o", out, "--from", 50, "--to", 40), 1,
                          "--from must be less than --to")
    assert_failed_cleanly(run("report", valid_bundle, "-o", out, "--from", 10_000), 1,
                          "no instruction overlaps the window [10,000, 336)")
    assert_failed_cleanly(run("report", tmp_path / "nothing", "-o", out), 1, "nothing")
    assert not out.exists()
    assert_failed_cleanly(run("report", valid_bundle, "-o", tmp_path), 2, "is a folder")
    out.write_text("mine")
    assert_failed_cleanly(run("report", valid_bundle, "-o", out), 1, "already exists")
    assert out.read_text() == "mine"
    assert run("report", valid_bundle, "-o", out, "--force").exit_code == 0
    assert_failed_cleanly(run("diff", valid_bundle, valid_bundle, "-f", "html"), 2,
                          "give both --format html and -o FILE")
    assert_failed_cleanly(run("diff", valid_bundle, valid_bundle, "-o", tmp_path / "d.html"),
                          2, "give both --format html and -o FILE")
    untimed = TraceBuilder("untimed")
    untimed.inst("tensor", "matmul", flops=1 << 20)
    untimed.write(tmp_path / "u")
    assert_failed_cleanly(run("report", tmp_path / "u", "-o", tmp_path / "u.html",
                              "--timeline", "observed"), 1, "untimed")
    assert not (tmp_path / "u.html").exists()
    assert list(tmp_path.glob(".*")) == []  # no temporary file left behind


def test_same_trace_same_bytes_and_a_replayed_timeline(tmp_path: Path,
                                                       valid_bundle: Path) -> None:
    pages = []
    for name in ("one.html", "two.html"):
        assert run("report", valid_bundle, "-o", tmp_path / name, "--timeline",
                   "replayed").exit_code == 0
        pages.append((tmp_path / name).read_bytes())
    assert pages[0] == pages[1]
    figures = page_data(tmp_path / "one.html")
    assert "model-scatter" in figures  # a timed trace: its replayed timeline compared
    text = pages[0].decode()
    assert "replayed (the model&#x27;s prediction on trn-like)" in text
    stalls = json_of("stalls", valid_bundle, "--timeline", "replayed")
    got = {(e, n): y for n, t in traces(figures["stalls"]).items()
           for e, y in zip(t["x"], t["y"], strict=True) if y}
    assert got == {(r["engine"], f"{r['bucket']}: {r['cause']}"): r["cycles"]
                   for r in stalls["stalls"]}


MAP_TRACES = {"scattergeo", "choropleth", "scattermapbox", "choroplethmapbox",
              "densitymapbox", "scattermap", "choroplethmap", "densitymap"}


def test_the_page_loads_nothing_from_the_network(mlp_page: Path) -> None:
    text = mlp_page.read_text(encoding="utf-8")
    # The document's own markup (outside the inlined scripts) references no URL to load...
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", text, flags=re.S)
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", markup, re.I)
    assert not re.search(r"<(link|iframe|img|object|embed)\b", markup, re.I)
    assert "@import" not in markup and "url(" not in markup
    # ... nor does tracekit's own script, and no figure is a map (plotly.js holds the URLs of
    # map tiles and fonts, which only map traces load).
    from tracekit.report.render import _asset

    assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\(", _asset("report.js"))
    kinds = {t.get("type") for f in page_data(mlp_page).values() for t in f.get("data", [])}
    assert kinds and not kinds & MAP_TRACES


def test_stall_figure_keeps_the_largest_causes_and_the_sums() -> None:
    import polars as pl

    from tracekit.report.pages import STALL_CAUSES, _stall_figure

    rows = [(e, "busy", f"op{k:02d}", (k + 1) * (2 if e == "a" else 3))
            for e in ("a", "b") for k in range(20)]
    rows += [("a", "idle", "after last", 7)]
    stalls = pl.DataFrame(rows, schema={"engine": pl.String, "bucket": pl.String,
                                        "cause": pl.String, "cycles": pl.Int64}, orient="row")
    data = _stall_figure(stalls, "cli").spec["data"]
    busy = [t for t in data if t["name"].startswith("busy: ")]
    assert len(busy) == STALL_CAUSES
    assert busy[0]["name"] == "busy: op19" and busy[-1]["name"] == "busy: other (9 causes)"
    totals = [sum(t["y"][i] for t in data) for i in range(2)]
    assert totals == [2 * 210 + 7, 3 * 210]
