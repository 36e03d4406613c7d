"""Start-up (issue 19 point 5): `tracekit --version`, `--help` and every `tracekit COMMAND --help`
import neither numba nor polars nor pyarrow nor numpy (they are what made start-up take over a
second); `import tracekit` loads its public names on first use and they work as before.
Behaviour, not timing: the modules a fresh process imported, as `python -X importtime` lists
them. `benchmarks/bench_startup.py` times the same commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import tracekit
from tracekit.cli.app import app

GEMM = str(Path(__file__).resolve().parents[1] / "sample_traces" / "gemm")
HEAVY = ("numba", "numpy", "polars", "pyarrow", "pandas", "llvmlite")


def imported_by(*args: str) -> set[str]:
    """The modules `python -m tracekit ARGS` imports in a fresh process (it must exit 0)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tracekit", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    assert "tracekit.cli.app" in modules  # the listing is what it claims to be
    return modules


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def command_paths() -> list[list[str]]:
    """Every command and subcommand of the app, as the words that name it."""
    paths: list[list[str]] = []

    def walk(group: Any, prefix: list[str]) -> None:  # a click group (typer's own click)
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])
            else:
                paths.append([*prefix, name])

    walk(typer.main.get_group(app), [])
    return sorted(paths)


def test_the_listing_sees_heavy_imports() -> None:
    # The check below could pass by never seeing anything: a command that runs imports them.
    modules = imported_by("info", GEMM, "-f", "json")
    assert {"polars", "pyarrow"} <= {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("args", [["--version"], ["--help"], []], ids=str)
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    if not args:  # no command: the help, exit 2 (typer's no_args_is_help)
        done = subprocess.run([sys.executable, "-m", "tracekit"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and "Usage" in done.stdout + done.stderr
        return
    assert heavy_in(imported_by(*args)) == []


def test_every_command_has_a_light_help() -> None:
    paths = command_paths()
    assert ["replay"] in paths and ["convert", "chrome"] in paths and len(paths) > 20
    heavy = {" ".join(path): heavy_in(imported_by(*path, "--help")) for path in paths}
    assert {name: found for name, found in heavy.items() if found} == {}


def test_import_tracekit_is_light_and_its_names_work() -> None:
    code = ("import sys, tracekit\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
            "t = tracekit.open_trace({gemm!r})\n"
            "print(type(t).__name__, t.manifest.tables['instructions'].rows)\n"
            "from tracekit import analyze, Trace\n"
            "print(isinstance(t, Trace), callable(analyze), callable(tracekit.replay))\n"
            ).format(heavy=set(HEAVY), gemm=GEMM)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith("Trace ") and int(lines[1].split()[1]) > 0
    assert lines[2] == "True True True"


def test_the_public_names_are_listed_and_resolve() -> None:
    assert set(tracekit.__all__) <= set(dir(tracekit))
    for name in tracekit.__all__:
        assert getattr(tracekit, name) is not None
    assert tracekit.__version__ == tracekit.__version__.strip() and tracekit.__version__[0].isdigit()
    from tracekit.api import analyze
    from tracekit.trace import open_trace

    assert tracekit.analyze is analyze and tracekit.open_trace is open_trace
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tracekit.nothing  # noqa: B018


def test_the_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    assert version("tracekit") == tracekit.__version__
    done = subprocess.run([sys.executable, "-m", "tracekit", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout == f"tracekit {tracekit.__version__}\n"
