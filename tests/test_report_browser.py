"""The HTML pages in a real browser: headless Chromium (Debian's `chromium`; `.ci/run` installs
it) loads the report of every sample trace, a diff page and a nightly index with the network
blocked, and each page must draw every figure with no error. One launch per page dumps the DOM
(the page's script marks the body when every figure has drawn) and takes a screenshot, kept in
test-artifacts/browser/ (git-ignored).

Without chromium the tests are skipped, except under CI (the CI variable set), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracekit.cli.app import app
from tracekit.workloads.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
runner = CliRunner()


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y "
                        "chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); under CI this "
                    "test fails instead")
    return found


def load(chromium: str, page: Path, name: str, tmp_path: Path) -> str:
    """`page` loaded in headless Chromium with the network blocked (every host name fails to
    resolve, and the proxy is a closed port): its DOM once the scripts have run; the
    screenshot goes to test-artifacts/browser/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
         "--window-size=1400,2400", f"--screenshot={shot}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page writes nothing to the console
    assert shot.stat().st_size > 10_000
    return done.stdout


def assert_drawn(dom: str, figures: int) -> None:
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("errors") == "0", re.search(r'<pre id="tracekit-errors"[^>]*>(.*?)</pre>',
                                                 dom, re.S)
    assert attrs.get("figures") == str(figures)
    assert attrs.get("rendered") == str(figures)
    assert dom.count('class="main-svg"') >= 1 or figures <= 2  # plotly drew its SVG


@pytest.mark.parametrize("sample", [s.name for s in SAMPLES])
def test_the_report_of_each_sample_draws_in_chromium(chromium: str, sample: str,
                                                     tmp_path: Path) -> None:
    page = tmp_path / f"{sample}.html"
    result = runner.invoke(app, ["report", str(ROOT / "sample_traces" / sample), "-o",
                                 str(page)])
    assert result.exit_code in (0, 3), result.output  # 3: a run that cannot finish
    figures = page.read_text(encoding="utf-8").count("data-figure=")
    dom = load(chromium, page, f"report-{sample}", tmp_path)
    assert_drawn(dom, figures)
    assert dom.count("<canvas") == 1  # the engine timeline


def test_a_diff_page_draws_in_chromium(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "diff.html"
    result = runner.invoke(app, ["diff", str(ROOT / "sample_traces" / "gemm"),
                                 str(ROOT / "sample_traces" / "gemm_faults"), "--format",
                                 "html", "-o", str(page)])
    assert result.exit_code == 3, result.output
    dom = load(chromium, page, "diff-gemm", tmp_path)
    assert_drawn(dom, 6)
    assert "waterfall" in dom


def test_a_nightly_index_draws_in_chromium(chromium: str, tmp_path: Path) -> None:
    for folder, sample in (("a", "gemm"), ("b", "gemm_faults")):
        shutil.copytree(ROOT / "sample_traces" / sample, tmp_path / folder / "gemm")
        (tmp_path / f"{folder}.toml").write_text(
            f'name = "t"\n[[workloads]]\ntrace = "{folder}/gemm"\n', encoding="utf-8")
    for run_id, suite in (("r1", "a"), ("r2", "b")):
        result = runner.invoke(app, ["nightly", str(tmp_path / f"{suite}.toml"), "--history",
                                     str(tmp_path / "h"), "--run-id", run_id, "--workers",
                                     "1", "--report", str(tmp_path / run_id)])
        assert result.exit_code in (0, 3), result.output
    dom = load(chromium, tmp_path / "r2" / "index.html", "nightly-index", tmp_path)
    assert_drawn(dom, 2)
    assert 'href="diff-gemm.html"' in dom
