"""Chrome trace events held as compact columns, filled chunk by chunk while the file is read,
so that no list of every event's dict is ever in memory.

    [{"ph": "X", "name": "gemm", "pid": 1, "tid": 7, "ts": 16.0, "dur": 20.0},
     {"ph": "i", "name": "mark", "pid": 1, "tid": 1, "ts": 12.0},
     {"ph": "f", "id": 3, "cat": "ac2g", "name": "ac2g", "pid": 1, "tid": 7, "ts": 16.0}]

keeps rows 0 (event 0, ph X) and 1 (event 2, ph f) with their fields as columns, and of event
1 (an instant, which the importer only counts) its phase and pid in a counter.

Rows are the events the importer reads (slices, B/E, flows: `ROW_PHASES`), in file order;
`index` maps a row back to its event's position in traceEvents for messages. A column stores,
per chunk, the rows where the field is present, a kind per value and an int64 payload: the
integer itself, a float's bits, or a code into one table of the distinct other values (names,
categories, strings, odd types), so a name repeated a million times is stored once.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import is_not, methodcaller
from typing import Any

import numpy as np

ROW_PHASES = frozenset({"X", "B", "E", "s", "t", "f"})
"""Phases whose events become rows; M events are kept as thread and process names, and every
other phase is counted."""
FIELDS = ("name", "cat", "pid", "tid", "ts", "dur", "id", "id2", "bp", "bind_id", "flow_in",
          "flow_out")
"""Top-level fields of a row kept as columns (ph is kept apart)."""
ARGS = ("correlation", "stream", "device", "wait_on_stream", "wait_on_cuda_event_record_corr_id",
        "cuda_sync_kind", "pc", "elements", "bytes", "flops", "edge", "id", "seq", "engine",
        "layer")
"""Fields of a row's args object kept as columns ("args.KEY")."""
PRESENCE = frozenset({"id", "bind_id"})
"""Fields whose presence (even as null) the importer asks about (`EventTable.has`)."""
TAIL = 64
"""How many of the last events are kept whole (the Kineto detection looks at them)."""

INT, FLOAT, OTHER = 1, 2, 3
_ABSENT = object()
_INT64 = (-(2**63), 2**63 - 1)


class _Interner(dict):
    """Codes of distinct values, keyed so that 1, 1.0, True and "1" stay apart."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def __missing__(self, key: Any) -> int:
        code = len(self.values)
        self[key] = code
        self.values.append(key)
        return code

    def code(self, value: Any) -> int:
        if type(value) is str:
            return self[value]
        try:
            key = (type(value).__name__, value)
            hash(key)
        except TypeError:
            key = ("json", json.dumps(value, sort_keys=True))
        code = self.get(key)
        if code is None:
            code = len(self.values)
            self[key] = code
            self.values.append(value)
        return code


class _Column:
    """One field's values over the rows: chunks of (rows where present, kind, payload)."""

    def __init__(self, interner: _Interner) -> None:
        self.interner = interner
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.rows = np.zeros(0, np.int32)
        self.kind = np.zeros(0, np.uint8)
        self.payload = np.zeros(0, np.int64)

    def add(self, first_row: int, values: list[Any], absent: Any = None) -> None:
        """Values of rows first_row, first_row + 1, ...; `absent` marks a missing one."""
        missing = values.count(absent) if absent is None else sum(v is absent for v in values)
        if missing == len(values):
            return
        if not missing:
            rows = np.arange(first_row, first_row + len(values), dtype=np.int32)
        else:
            flags = list(map(is_not, values, repeat(absent)))
            rows = (np.flatnonzero(np.array(flags, dtype=bool)) + first_row).astype(np.int32)
            values = list(compress(values, flags))
        types = set(map(type, values))
        if types == {int}:
            try:
                payload = np.array(values, dtype=np.int64)
                self.parts.append((rows, np.full(rows.size, INT, np.uint8), payload))
                return
            except OverflowError:
                pass
        elif types == {str}:
            payload = np.fromiter(map(self.interner.__getitem__, values), np.int64, len(values))
            self.parts.append((rows, np.full(rows.size, OTHER, np.uint8), payload))
            return
        elif types == {float}:
            payload = np.array(values, dtype=np.float64).view(np.int64)
            self.parts.append((rows, np.full(rows.size, FLOAT, np.uint8), payload))
            return
        kind = np.empty(len(values), np.uint8)
        payload = np.empty(len(values), np.int64)
        for k, v in enumerate(values):
            t = type(v)
            if t is int and _INT64[0] <= v <= _INT64[1]:
                kind[k], payload[k] = INT, v
            elif t is float:
                kind[k] = FLOAT
                payload[k] = np.float64(v).view(np.int64)
            else:
                kind[k], payload[k] = OTHER, self.interner.code(v)
        self.parts.append((rows, kind, payload))

    def finish(self) -> None:
        if self.parts:
            self.rows = np.concatenate([p[0] for p in self.parts])
            self.kind = np.concatenate([p[1] for p in self.parts])
            self.payload = np.concatenate([p[2] for p in self.parts])
        self.parts = []

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `rows` in this column and whether each is present."""
        pos = np.searchsorted(self.rows, rows)
        pos = np.minimum(pos, max(self.rows.size - 1, 0))
        found = (self.rows[pos] == rows) if self.rows.size else np.zeros(rows.size, bool)
        return pos, found

    def get(self, rows: np.ndarray, values: np.ndarray) -> list[Any]:
        """The Python values at `rows` (None where absent); `values` is the interner's table
        as an object array."""
        rows = np.asarray(rows, dtype=np.int64)
        pos, found = self.locate(rows)
        kind = np.where(found, self.kind[pos] if self.kind.size else 0, 0)
        payload = self.payload[pos] if self.payload.size else np.zeros(rows.size, np.int64)
        kinds = set(np.unique(kind).tolist())
        if kinds == {INT}:
            return payload.tolist()
        if kinds == {OTHER}:
            return values[payload].tolist()
        if kinds == {FLOAT}:
            return payload.view(np.float64).tolist()
        out = np.full(rows.size, None, dtype=object)
        for k, convert in ((INT, None), (FLOAT, np.float64), (OTHER, values)):
            sel = kind == k
            if sel.any():
                p = payload[sel]
                out[sel] = (p.tolist() if convert is None else p.view(np.float64).tolist()
                            if convert is np.float64 else values[p].tolist())
        return out.tolist()


class EventTable:
    """The rows (slices, B/E and flow events) of a Chrome trace as columns, the M events'
    names, a count of every other event by phase and pid, and the last `TAIL` events whole.

    Filled by `add` with chunks of decoded events in file order, then `finish`.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0
        self.first_not_object: tuple[int, str] | None = None
        self.first_no_phase: int | None = None
        self.tail: deque[Any] = deque(maxlen=TAIL)
        self.names: list[tuple[Any, Any, Any, str]] = []
        """(name, pid, tid, args.name) of the M events naming a process or thread."""
        self.others: Counter[tuple[str, int]] = Counter()
        """(ph, pid code) of the events that are neither rows nor M."""
        self._interner = _Interner()
        self._columns = {key: _Column(self._interner) for key in FIELDS}
        self._columns.update({f"args.{key}": _Column(self._interner) for key in ARGS})
        self._ph: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        self.rows = 0
        self.ph = np.zeros(0, dtype=object)
        self.index = np.zeros(0, dtype=np.int64)
        self._values = np.zeros(0, dtype=object)
        self._is_str = np.zeros(1, dtype=bool)
        self._is_int = np.zeros(1, dtype=bool)

    @classmethod
    def of(cls, events: Sequence[Any], source: str, chunk: int = 65536) -> EventTable:
        """A table of a list of events (the in-memory form tests and callers use)."""
        table = cls(source)
        for k in range(0, len(events), chunk):
            table.add(events[k:k + chunk])
        table.finish()
        return table

    def add(self, events: list[Any]) -> None:
        """Append a chunk of decoded events (any JSON values) in file order."""
        first = self.count
        self.count += len(events)
        self.tail.extend(events[-TAIL:])
        if not set(map(type, events)) <= {dict}:
            for k, e in enumerate(events):
                if type(e) is not dict and self.first_not_object is None:
                    self.first_not_object = (first + k, type(e).__name__)
            events = [e if type(e) is dict else {} for e in events]
        phases = list(map(methodcaller("get", "ph"), events))
        if not set(map(type, phases)) <= {str}:
            if self.first_no_phase is None:
                self.first_no_phase = first + next(k for k, p in enumerate(phases)
                                                   if type(p) is not str)
        keep = [k for k, p in enumerate(phases) if p in ROW_PHASES]
        if len(keep) < len(events):
            for k, p in enumerate(phases):
                if p in ROW_PHASES or type(p) is not str:
                    continue
                e = events[k]
                if p == "M":
                    args = e.get("args")
                    name = args.get("name") if type(args) is dict else None
                    if type(name) is str and e.get("name") in ("process_name", "thread_name"):
                        self.names.append((e.get("name"), e.get("pid"), e.get("tid"), name))
                else:
                    self.others[(p, self._interner.code(e.get("pid")))] += 1
            rows = [events[k] for k in keep]
            phases = [phases[k] for k in keep]
        else:
            rows = events
        if not rows:
            return
        start = self.rows
        self.rows += len(rows)
        self._ph.append(np.array(phases, dtype=object))
        self._index.append(np.asarray(keep, dtype=np.int64) + first)
        # Only the keys some event of the chunk has; a null is stored as absent, except for
        # the keys whose presence matters (PRESENCE).
        present = set().union(*rows)
        for key in FIELDS:
            if key in present:
                if key in PRESENCE:
                    self._columns[key].add(
                        start, list(map(methodcaller("get", key, _ABSENT), rows)), _ABSENT)
                else:
                    self._columns[key].add(start, list(map(methodcaller("get", key), rows)))
        if "args" not in present:
            return
        args = list(map(methodcaller("get", "args"), rows))
        if not set(map(type, args)) <= {dict}:
            args = [a if type(a) is dict else {} for a in args]
        present = set().union(*args)
        for key in ARGS:
            if key in present:
                self._columns[f"args.{key}"].add(start, list(map(methodcaller("get", key), args)))

    def finish(self) -> None:
        if self._ph:
            self.ph = np.concatenate(self._ph)
            self.index = np.concatenate(self._index)
        self._ph, self._index = [], []
        for column in self._columns.values():
            column.finish()
        self._values = np.empty(len(self._interner.values), dtype=object)
        for k, v in enumerate(self._interner.values):
            self._values[k] = v
        self._is_str = np.array([type(v) is str for v in self._interner.values] + [False],
                                dtype=bool)
        self._is_int = np.array([type(v) is int for v in self._interner.values] + [False],
                                dtype=bool)

    # --- access ---------------------------------------------------------------------------

    def get(self, rows: Iterable[int] | np.ndarray, key: str) -> list[Any]:
        """The field `key` ("args.KEY" for an args field) of each row (None where absent)."""
        return self._columns[key].get(np.asarray(rows, dtype=np.int64), self._values)

    def raw(self, rows: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The kind (0 where absent, else INT, FLOAT or OTHER) and int64 payload of the field
        `key` at each row, with no Python object made."""
        column = self._columns[key]
        rows = np.asarray(rows, dtype=np.int64)
        if not column.rows.size:
            return np.zeros(rows.size, np.uint8), np.zeros(rows.size, np.int64)
        pos, found = column.locate(rows)
        return (np.where(found, column.kind[pos], 0).astype(np.uint8),
                np.where(found, column.payload[pos], 0))

    def floats(self, rows: np.ndarray, key: str) -> np.ndarray | None:
        """The field as float64 when every row holds an int64 or a float, else None (the
        caller falls back to `get` to see why)."""
        kind, payload = self.raw(rows, key)
        if not ((kind == INT) | (kind == FLOAT)).all():
            return None
        out = payload.astype(np.float64)
        is_float = kind == FLOAT
        out[is_float] = payload[is_float].view(np.float64)
        return out

    def texts(self, rows: np.ndarray, key: str) -> np.ndarray:
        """Each row's string as a code into `text_values` (-1 where absent or not a
        string)."""
        kind, payload = self.raw(rows, key)
        other = kind == OTHER
        index = np.where(other, payload, len(self._is_str) - 1)
        return np.where(other & self._is_str[index], payload, -1)

    def int_keys(self, rows: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Keys that are equal exactly where the rows' integer values are (bools are not
        integers), and whether each row holds an integer."""
        kind, payload = self.raw(rows, key)
        other = kind == OTHER
        index = np.where(other, payload, len(self._is_int) - 1)
        big = other & self._is_int[index]
        valid = (kind == INT) | big
        if not big.any():
            return np.where(valid, payload, 0), valid
        _, inverse = np.unique(np.stack([big.astype(np.int64), payload]), axis=1,
                               return_inverse=True)
        return np.where(valid, inverse.reshape(-1), 0), valid

    def decode(self, kind: int, payload: int) -> Any:
        """The Python value of one (kind, payload) of `raw`."""
        if kind == INT:
            return int(payload)
        if kind == FLOAT:
            return float(np.int64(payload).view(np.float64))
        if kind == OTHER:
            return self._values[payload]
        return None

    def code_of(self, text: str) -> int:
        """The code of a string in `text_values` (-1 when no row holds it)."""
        return self._interner.get(text, -1)

    @property
    def text_values(self) -> np.ndarray:
        """The table of distinct values the codes of `texts` point into."""
        return self._values

    def has(self, rows: np.ndarray, key: str) -> np.ndarray:
        """Whether each row has the field (present, even as null)."""
        return self._columns[key].locate(np.asarray(rows, dtype=np.int64))[1]

    def value(self, row: int, key: str) -> Any:
        return self.get(np.array([row]), key)[0]

    def other_phases(self, keep_pid: Any = _ABSENT) -> Counter[str]:
        """Events that are neither rows nor M, by phase (only those of pid `keep_pid` when
        given, compared as the importer compares pids)."""
        out: Counter[str] = Counter()
        for (ph, pid), n in self.others.items():
            if keep_pid is _ABSENT or self._interner.values[pid] == keep_pid:
                out[ph] += n
        return out
