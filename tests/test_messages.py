"""What tracekit tells its users points only at what a pip-installed user has: commands,
built-in names and files inside the installed package, never folders of the repository
(sample_traces/, analysis/, replay/machines/, schemas/, docs/, tests/, benchmarks/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tracekit.analysis.nightly import SUITE_KEYS, WORKLOAD_KEYS
from tracekit.analysis.signatures import SIGNATURES
from tracekit.cli.app import app
from tracekit.errors import TracekitError
from tracekit.replay.machine import builtin_folder, load_machine
from tracekit.trace import contract
from tracekit.trace.rules import RULES

REPO_PATH = re.compile(
    r"(?<![\w./-])(?:sample_traces|analysis|replay|schemas|docs|tests|benchmarks)/"
    r"|\b(?:sample\.toml|signatures\.md|regenerate\.py)\b")

runner = CliRunner()


def repository_paths(text: str) -> list[str]:
    """The repository-relative paths in `text`; the installed package's machine folder is a
    path every user has, so it is taken out first."""
    return REPO_PATH.findall(text.replace(builtin_folder(), "<installed>"))


def test_the_pattern_catches_the_old_messages() -> None:
    for old in ["Suite TOML file (analysis/suites/sample.toml shows the format).",
                "mtl.toml: clock_hz: missing. See replay/machines/ for the format.",
                "Add the column; schemas/<table>.json lists every column with its type.",
                "each with its evidence and a hint (analysis/signatures.md).",
                "run `python sample_traces/regenerate.py`"]:
        assert repository_paths(old), old
    assert repository_paths("tracekit machines; python -m tracekit.trace.contract DIR "
                            "writes DIR/README.md; --report HISTORY/reports/RUN_ID") == []


def command_paths() -> list[list[str]]:
    """Every command and group of the app, as the arguments that reach it."""
    out: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        out.append(path)
        if hasattr(command, "commands"):  # a group (Typer's own click)
            for name, sub in sorted(command.commands.items()):
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_every_help_text_is_free_of_repository_paths() -> None:
    paths = command_paths()
    assert ["generate"] in paths and ["export", "perfetto"] in paths and len(paths) >= 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.startswith("Usage: tracekit"), path
        assert repository_paths(result.stdout) == [], (path, result.stdout)


def test_nightly_help_states_the_suite_format() -> None:
    """The suite's format is in `tracekit nightly --help` instead of a file of the repo."""
    shown = " ".join(runner.invoke(app, ["nightly", "--help"]).stdout.split())
    assert '[[workloads]] table per workload with trace = "PATH or GLOB"' in shown
    for key in sorted((SUITE_KEYS | WORKLOAD_KEYS) - {"workloads"}):
        assert re.search(rf"\b{key}\b", shown), key


def test_rule_and_signature_texts_are_free_of_repository_paths() -> None:
    texts = [text for info in RULES.values() for text in (info.summary, info.fix)]
    texts += [text for info in SIGNATURES.values() for text in (info.summary, info.hint)]
    assert len(texts) > 40
    for text in texts:
        assert repository_paths(text) == [], text
    assert "`python -m tracekit.trace.contract DIR` writes the contract into DIR" in \
        RULES[next(r for r in RULES if r.value == "column-missing")].fix


def test_contract_writer_help_is_free_of_repository_paths(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        contract.main(["--help"])
    text = capsys.readouterr().out
    assert "the folder to write the contract into" in text
    assert repository_paths(text) == []


@pytest.mark.parametrize("content", [None, 'name = "x"\n'], ids=["missing", "incomplete"])
def test_machine_errors_point_to_the_installed_built_ins(tmp_path: Path,
                                                          content: str | None) -> None:
    path = tmp_path / "mine.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TracekitError) as info:
        load_machine(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "`tracekit machines`" in message and builtin_folder() in message
    assert repository_paths(message) == []
    # The folder named is real and holds the built-in files to copy.
    assert (Path(builtin_folder()) / "trn-like.toml").is_file()
