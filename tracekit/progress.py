"""Progress of the long steps (reading, deriving, replaying, the bug checks, generating...),
told to whoever is listening: the command line shows it on stderr, the library alone says
nothing.

    with progress.step("replaying", total=n) as s:   # a step of n units (None: unknown)
        ...
        s.advance(k)

`listening(reporter)` installs a reporter for the calls made inside it. Steps nest: a
reporter sees each with its depth. Reports never touch stdout, so outputs stay byte-identical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Step:
    """A step under way: its name, total units (None: unknown) and units done."""

    name: str
    total: int | None = None
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    reporter: Reporter | None = None

    def advance(self, units: int = 1) -> None:
        self.done += units
        if self.reporter is not None:
            self.reporter.update(self)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Reporter(Protocol):
    def begin(self, step: Step) -> None: ...
    def update(self, step: Step) -> None: ...
    def end(self, step: Step) -> None: ...


_listener: ContextVar[Reporter | None] = ContextVar("tracekit_progress", default=None)


@contextmanager
def step(name: str, total: int | None = None) -> Iterator[Step]:
    """A long step, reported to the installed reporter (if any)."""
    reporter = _listener.get()
    current = Step(name, total, reporter=reporter)
    if reporter is not None:
        reporter.begin(current)
    try:
        yield current
    finally:
        if reporter is not None:
            reporter.end(current)


@contextmanager
def listening(reporter: Reporter | None) -> Iterator[None]:
    """Report the steps of the calls made inside to `reporter` (None: to nobody)."""
    token = _listener.set(reporter)
    try:
        yield
    finally:
        _listener.reset(token)


def _count(step: Step) -> str:
    if step.total is None:
        return f"{step.done:,}" if step.done else ""
    return f"{step.done:,}/{step.total:,}"


class LineReporter:
    """For a log (stderr not a terminal): every `every` seconds a line per step under way,
    with counts and elapsed time, and a line when such a step ends; short runs say nothing."""

    def __init__(self, write: Callable[[str], None], every: float = 5.0) -> None:
        self.write = write
        self.every = every
        self.active: list[Step] = []
        self.told: set[int] = set()  # the steps a line was written for
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="tracekit-progress",
                                       daemon=True)
        self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                for s in self.active:
                    pct = f" {s.done / s.total:.0%}" if s.total else ""
                    count = _count(s)
                    self.write(f"tracekit: {s.name}{pct}{' ' + count if count else ''} "
                               f"({s.elapsed:.0f} s)")
                    self.told.add(id(s))

    def begin(self, step: Step) -> None:
        with self.lock:
            self.active.append(step)

    def update(self, step: Step) -> None:
        pass

    def end(self, step: Step) -> None:
        with self.lock:
            self.active.remove(step)
            if id(step) in self.told:
                self.told.discard(id(step))
                count = _count(step)
                self.write(f"tracekit: {step.name} done{' ' + count if count else ''} in "
                           f"{step.elapsed:.1f} s")

    def close(self) -> None:
        self.stop.set()


class BarReporter:
    """For a terminal: a rich progress bar per step (spinner, name, bar, counts, elapsed)."""

    def __init__(self, console: object) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(),
                             console=console, transient=True)  # type: ignore[arg-type]
        self.tasks: dict[int, object] = {}
        self.bars.start()

    def begin(self, step: Step) -> None:
        self.tasks[id(step)] = self.bars.add_task(step.name, total=step.total)

    def update(self, step: Step) -> None:
        self.bars.update(self.tasks[id(step)], completed=step.done)  # type: ignore[arg-type]

    def end(self, step: Step) -> None:
        task = self.tasks.pop(id(step))
        self.bars.remove_task(task)  # type: ignore[arg-type]

    def close(self) -> None:
        self.bars.stop()
