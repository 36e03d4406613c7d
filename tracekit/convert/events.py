"""Chrome trace events held as compact columns, filled chunk by chunk while the file is read,
so that no list of every event's dict is ever in memory.

    [{"ph": "X", "name": "gemm", "pid": 1, "tid": 7, "ts": 16.0, "dur": 20.0},
     {"ph": "i", "name": "mark", "pid": 1, "tid": 1, "ts": 12.0},
     {"ph": "f", "id": 3, "cat": "ac2g", "name": "ac2g", "pid": 1, "tid": 7, "ts": 16.0}]

keeps rows 0 (event 0, ph X) and 1 (event 2, ph f) with their fields as columns, and of event
1 (an instant, which the importer only counts) its phase and pid in a counter.

Rows are the events the importer reads (slices, B/E, flows: `ROW_PHASES`), in file order;
`event_index` maps a row back to its event's position in traceEvents for messages. A column
stores the rows where the field is present, a kind per value and a payload: the integer
itself, a float's bits, or a code into one table of the distinct other values (names,
categories, strings, odd types), so a name repeated a million times is stored once. Each part
is one array grown in place as chunks arrive, and the common cases cost nothing: a field
present in every row stores no rows, a field of one kind no kinds, and payloads that fit in
32 bits take 4 bytes (about 4 to 9 bytes a field of an event in all).
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
_PHASES = np.array(sorted(ROW_PHASES), dtype="<U1")
_PHASE_CODE = {p: k for k, p in enumerate(_PHASES.tolist())}
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


class _Buffer:
    """A numpy array appended to in place: grown by realloc (which moves a large block's pages
    rather than copying them), never kept as a list of parts to concatenate, so its values are
    never held twice. numpy zero-fills what a resize adds, so the spare room is resident:
    it grows by a quarter at a time."""

    def __init__(self, dtype: type) -> None:
        self.array = np.zeros(0, dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.size + values.size
        if need > self.array.size:
            self.array.resize(max(need, self.array.size + self.array.size // 4, 1024),
                              refcheck=False)
        self.array[self.size:need] = values
        self.size = need

    def retype(self, dtype: type) -> None:
        self.array = self.array[:self.size].astype(dtype)

    def finish(self) -> np.ndarray:
        """The values, the spare room given back."""
        self.array.resize(self.size, refcheck=False)
        return self.array


_INT32 = (-(2**31), 2**31 - 1)


class _Column:
    """One field's values over the rows, appended chunk by chunk: the rows where the field is
    present (`rows`; None while they are one run from `first`), the kind of each value
    (`kind`; None while every value is of kind `kind0`) and a payload (int32 while every
    payload fits, else int64)."""

    def __init__(self, interner: _Interner) -> None:
        self.interner = interner
        self.count = 0
        self.first = 0
        self.kind0 = 0
        self._rows: _Buffer | None = None
        self._kind: _Buffer | None = None
        self._payload = _Buffer(np.int32)
        self.rows: np.ndarray | None = None
        self.kind: np.ndarray | None = None
        self.payload = np.zeros(0, np.int32)

    def add(self, first_row: int, values: list[Any], absent: Any = None) -> None:
        """Values of rows first_row, first_row + 1, ...; `absent` marks a missing one."""
        missing = values.count(absent) if absent is None else sum(v is absent for v in values)
        if missing == len(values):
            return
        rows: np.ndarray | None = None
        if missing:
            flags = list(map(is_not, values, repeat(absent)))
            rows = np.flatnonzero(np.array(flags, dtype=bool)) + first_row
            values = list(compress(values, flags))
        types = set(map(type, values))
        if types == {int}:
            try:
                self._put(first_row, rows, INT, np.array(values, dtype=np.int64))
                return
            except OverflowError:
                pass
        elif types == {str}:
            self._put(first_row, rows, OTHER, np.fromiter(
                map(self.interner.__getitem__, values), np.int64, len(values)))
            return
        elif types == {float}:
            self._put(first_row, rows, FLOAT,
                      np.array(values, dtype=np.float64).view(np.int64))
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
        self._put(first_row, rows, kind, payload)

    def _put(self, first_row: int, rows: np.ndarray | None, kind: int | np.ndarray,
             payload: np.ndarray) -> None:
        """Append values (of rows first_row, ... when `rows` is None) of one kind or of a kind
        each."""
        n = payload.size
        if self._rows is None:
            if self.count == 0:
                self.first = first_row if rows is None else int(rows[0])
            run = self.first + self.count
            if not (first_row == run if rows is None
                    else rows[0] == run and rows[-1] - rows[0] == n - 1):
                self._rows = _Buffer(np.int32)
                self._rows.extend(np.arange(self.first, run))
        if self._rows is not None:
            if rows is None:
                rows = np.arange(first_row, first_row + n)
            if self._rows.array.dtype == np.int32 and rows[-1] > _INT32[1]:
                self._rows.retype(np.int64)
            self._rows.extend(rows)
        if self._kind is None:
            if self.count == 0 and not isinstance(kind, np.ndarray):
                self.kind0 = kind
            elif isinstance(kind, np.ndarray) or kind != self.kind0:
                self._kind = _Buffer(np.uint8)
                self._kind.extend(np.full(self.count, self.kind0, np.uint8))
        if self._kind is not None:
            self._kind.extend(kind if isinstance(kind, np.ndarray)
                              else np.full(n, kind, np.uint8))
        if self._payload.array.dtype == np.int32 and not (
                _INT32[0] <= payload.min() and payload.max() <= _INT32[1]):
            self._payload.retype(np.int64)
        self._payload.extend(payload)
        self.count += n

    def finish(self) -> None:
        self.payload = self._payload.finish()
        self.rows = self._rows.finish() if self._rows is not None else None
        self.kind = self._kind.finish() if self._kind is not None else None
        self._rows = self._kind = None
        self._payload = _Buffer(np.int32)

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `rows` (int64) in this column and whether each is present."""
        if self.count == 0:
            return np.zeros(rows.size, np.int64), np.zeros(rows.size, bool)
        if self.rows is None:
            pos = rows - self.first
            found = (pos >= 0) & (pos < self.count)
            return np.where(found, pos, 0), found
        pos = np.searchsorted(self.rows, rows)
        pos = np.minimum(pos, self.count - 1)
        return pos, self.rows[pos] == rows

    def at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kind (0 where absent) and int64 payload (0 where absent) at each of `rows`."""
        pos, found = self.locate(rows)
        if self.kind is None:
            kind = np.where(found, np.uint8(self.kind0), np.uint8(0))
        else:
            kind = np.where(found, self.kind[pos] if self.count else 0, 0).astype(np.uint8)
        payload = (np.where(found, self.payload[pos], 0).astype(np.int64) if self.count
                   else np.zeros(rows.size, np.int64))
        return kind, payload

    def get(self, rows: np.ndarray, values: np.ndarray) -> list[Any]:
        """The Python values at `rows` (None where absent); `values` is the interner's table
        as an object array."""
        kind, payload = self.at(np.asarray(rows, dtype=np.int64))
        kinds = set(np.unique(kind).tolist())
        if kinds == {INT}:
            return payload.tolist()
        if kinds == {OTHER}:
            return values[payload].tolist()
        if kinds == {FLOAT}:
            return payload.view(np.float64).tolist()
        # Mixed kinds, or some absent: placed one by one (a value may be a list, which numpy
        # would read as a dimension).
        out: list[Any] = [None] * kind.size
        for k in (INT, FLOAT, OTHER):
            sel = np.flatnonzero(kind == k)
            if sel.size:
                p = payload[sel]
                got = (p.tolist() if k == INT else p.view(np.float64).tolist() if k == FLOAT
                       else values[p].tolist())
                for i, v in zip(sel.tolist(), got, strict=True):
                    out[i] = v
        return out


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
        self._ph = _Buffer(np.uint8)
        # Where a row's event index stops being its row number plus the last offset: rows
        # and offsets (as few as the events between rows that are not rows).
        self._shift_rows = _Buffer(np.int64)
        self._shift = _Buffer(np.int64)
        self.rows = 0
        self.ph = np.zeros(0, dtype="<U1")
        """Each row's phase (one of `ROW_PHASES`)."""
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
        self._ph.extend(np.fromiter(map(_PHASE_CODE.__getitem__, phases), np.uint8,
                                    len(phases)))
        shift = np.asarray(keep, dtype=np.int64) + (first - start) - np.arange(len(keep))
        last = self._shift.array[self._shift.size - 1] if self._shift.size else 0
        moved = np.flatnonzero(np.diff(shift, prepend=last))
        if moved.size:
            self._shift_rows.extend(moved + start)
            self._shift.extend(shift[moved])
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
        self.ph = _PHASES[self._ph.finish()]
        self._ph = _Buffer(np.uint8)
        self._shift_rows.finish()
        self._shift.finish()
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

    def event_index(self, row: int) -> int:
        """The position in traceEvents of the event of `row`."""
        k = int(np.searchsorted(self._shift_rows.array, row, side="right")) - 1
        return row + (int(self._shift.array[k]) if k >= 0 else 0)

    def get(self, rows: Iterable[int] | np.ndarray, key: str) -> list[Any]:
        """The field `key` ("args.KEY" for an args field) of each row (None where absent)."""
        return self._columns[key].get(np.asarray(rows, dtype=np.int64), self._values)

    def raw(self, rows: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The kind (0 where absent, else INT, FLOAT or OTHER) and int64 payload of the field
        `key` at each row, with no Python object made."""
        return self._columns[key].at(np.asarray(rows, dtype=np.int64))

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

    def holds(self, key: str) -> bool:
        """Whether any row has the field."""
        return self._columns[key].count > 0

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
