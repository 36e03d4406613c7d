"""Reading the TOML files users write (suites, grid files): one place for the errors."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from tracekit.errors import TracekitError


def read_toml(path: str | os.PathLike[str], kind: str,
              error: type[TracekitError]) -> dict[str, Any]:
    """The parsed TOML file at `path`, a `kind` file ("suite", "grid"); `error` (naming the
    file) when it is missing, unreadable or not TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {kind} file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc}).") from None
