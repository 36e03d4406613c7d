"""The README's Python examples run as written: every ```python block of README.md, run from the
repository root, each in a fresh namespace (a reader copies one block at a time, so each block
imports what it uses and builds on no other), without an error or a warning.

A failure names the block by the README.md line it starts on and shows the failing line.
"""

from __future__ import annotations

import linecache
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

API_CALLS = ("replay", "analyze", "stalls", "critical_path", "bugs", "diff", "whatif",
             "sensitivity", "sweep")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the block's first code line, code) of every ```python block, in order."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_python_blocks_are_found() -> None:
    text = "intro\n```python\nx = 1\n```\nmid\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = 2\nz = 3\n")]


def test_readme_shows_every_api_call() -> None:
    code = "\n".join(block for _, block in BLOCKS)
    missing = [name for name in API_CALLS if f"tracekit.{name}(" not in code]
    assert not missing, f"README.md's Python examples do not call {missing}"


@pytest.mark.parametrize(("line", "code"), BLOCKS,
                         ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_example_runs(line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    before = sorted(p.name for p in ROOT.iterdir())
    # A traceback names the block and shows its lines (line numbers count from the block's
    # first line).
    name = f"<README.md python block at line {line}>"
    monkeypatch.setitem(linecache.cache, name, (len(code), None, code.splitlines(True), name))
    exec(compile(code, name, "exec"), {"__name__": "__readme__"})  # noqa: S102
    assert sorted(p.name for p in ROOT.iterdir()) == before, \
        "the example wrote into the repository root; write into a temporary folder"
