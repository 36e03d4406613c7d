"""Explicit upgrades of bundles written under an older schema version, one function per step.

Schema versions only ever add (DESIGN section 3), so a step from version v to v + 1 rewrites the
raw manifest and adds the new columns or tables to the lazy frames; files on disk are never
touched.

- 1 -> 2: semaphores gained the operations sub and set and the wait condition column `cond`.
  A version-1 semaphores table holds only waits (meaning count >= value) and signals, which
  mean the same in version 2, so the step adds `cond` as nulls (>=) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import polars as pl

from tracekit.errors import SchemaVersionError
from tracekit.trace.schema import SCHEMA_VERSION

FIRST_SCHEMA_VERSION = 1

UpgradeStep = Callable[
    [dict[str, Any], dict[str, pl.LazyFrame]],
    tuple[dict[str, Any], dict[str, pl.LazyFrame]],
]
"""Takes the raw manifest and lazy frames of version v; returns those of version v + 1."""

def _v1_to_v2(manifest: dict[str, Any], frames: dict[str, pl.LazyFrame]
              ) -> tuple[dict[str, Any], dict[str, pl.LazyFrame]]:
    """Version 1 to 2: a null `cond` (>=) on every semaphore row."""
    sems = frames.get("semaphores")
    if sems is not None and "cond" not in sems.collect_schema().names():
        frames = {**frames, "semaphores": sems.with_columns(
            pl.lit(None, pl.Categorical()).alias("cond"))}
    return manifest, frames


UPGRADE_STEPS: Mapping[int, UpgradeStep] = MappingProxyType({1: _v1_to_v2})
"""Version v -> the step that upgrades a version-v bundle to v + 1."""


def version_problem(version: object, *, current: int = SCHEMA_VERSION,
                    steps: Mapping[int, UpgradeStep] = UPGRADE_STEPS) -> str | None:
    """Why this tracekit cannot read schema version `version`, or None when it can."""
    if not isinstance(version, int) or isinstance(version, bool):
        return (f"schema_version is {version!r}; it must be an integer (this tracekit writes "
                f"version {current}).")
    if version > current:
        return (f"schema version {version} is newer than this tracekit understands (up to "
                f"{current}). Upgrade tracekit to read this bundle.")
    if version < FIRST_SCHEMA_VERSION or any(v not in steps for v in range(version, current)):
        return (f"schema version {version} is not a known tracekit schema version (known: "
                f"{FIRST_SCHEMA_VERSION} to {current}). Re-export the trace with a current "
                f"producer.")
    return None


def check_version(version: object, source: str, *, current: int = SCHEMA_VERSION,
                  steps: Mapping[int, UpgradeStep] = UPGRADE_STEPS) -> int:
    """The bundle's schema version if this tracekit can read it; SchemaVersionError otherwise."""
    problem = version_problem(version, current=current, steps=steps)
    if problem is not None:
        raise SchemaVersionError(f"{source}: {problem}")
    return version  # type: ignore[return-value]


def upgrade(manifest: dict[str, Any], frames: dict[str, pl.LazyFrame], source: str, *,
            current: int = SCHEMA_VERSION, steps: Mapping[int, UpgradeStep] = UPGRADE_STEPS,
            ) -> tuple[dict[str, Any], dict[str, pl.LazyFrame]]:
    """Apply every step from the bundle's version to `current`, in order."""
    version = check_version(manifest.get("schema_version"), source, current=current, steps=steps)
    for step_from in range(version, current):
        manifest, frames = steps[step_from](manifest, frames)
        manifest = {**manifest, "schema_version": step_from + 1}
    return manifest, frames
