"""A columnar program under construction: lowerings emit whole batches of instructions,
semaphore operations and memory accesses as NumPy arrays, never one row at a time.

    prog = Program(engines=("tensor", "scalar", "dma.q0"))
    loads = prog.emit("dma.q0", "dma_load", key=np.arange(4) * 10, bytes=np.full(4, 4096))
    mms = prog.emit("tensor", "matmul", key=np.arange(4) * 10 + 1, flops=...)
    sem = prog.new_semaphore()
    prog.signal(loads, sem)                        # each load adds 1
    prog.wait(mms, sem, np.arange(1, 5))           # matmul i waits until i + 1 loads are done

Every instruction carries an integer `key`, its position in program order; `finish` sorts by
key (ties keep emission order), numbers the instructions 0..n-1 in that order and gives each
engine's queue its `seq`. Handles returned by `emit` are emission indices, valid until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracekit.trace.schema import Access, MemSpace, SemOp

NULL = -1
"""Stands for null in the integer columns of the program (no value is negative)."""


INST_TYPES = {"key": np.int64, "engine": np.int16, "opcode": np.int16, "elements": np.int32,
              "bytes": np.int32, "flops": np.int64, "layer": np.int32, "pc": np.int32}
SEM_TYPES = {"inst": np.int32, "sem": np.int32, "op": np.int8, "value": np.int32}
MEM_TYPES = {"inst": np.int32, "space": np.int8, "access": np.int8, "addr": np.int64,
             "size": np.int32, "partition": np.int16, "partitions": np.int16}
"""Storage types of the program's columns: as narrow as the values allow, since a program of
ten million instructions holds tens of millions of rows (the bundle stores int64)."""


def _column(value: object, n: int, dtype: type = np.int64) -> np.ndarray:
    array = np.asarray(value)
    if array.size and np.issubdtype(array.dtype, np.integer) and (
            array.max() > np.iinfo(dtype).max or array.min() < np.iinfo(dtype).min):
        raise ValueError(f"value {array.max()} does not fit the program's {np.dtype(dtype)} "
                         f"column; use smaller tiles")
    array = array.astype(dtype)
    return np.broadcast_to(array, (n,)).copy() if array.ndim == 0 else array


def _gather(chunks: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """Concatenate one column of all chunks, releasing the chunks' copies as it goes."""
    return np.concatenate([chunk.pop(name) for chunk in chunks])


@dataclass
class Program:
    """Instruction, semaphore and memory columns gathered in chunks, one chunk per emission."""

    engines: tuple[str, ...]
    opcodes: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    _inst: list[dict[str, np.ndarray]] = field(default_factory=list)
    _sems: list[dict[str, np.ndarray]] = field(default_factory=list)
    _mem: list[dict[str, np.ndarray]] = field(default_factory=list)
    _pending: list[dict[str, np.ndarray]] = field(default_factory=list)
    _count: int = 0
    _next_sem: int = 0

    def _code(self, names: list[str], name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    def engine_code(self, engine: str) -> int:
        return self.engines.index(engine)

    def emit(self, engine: str | np.ndarray, opcode: str, key: np.ndarray, *,
             elements: object = NULL, bytes: object = NULL, flops: object = NULL,  # noqa: A002
             layer: str | None = None, pc: object = NULL) -> np.ndarray:
        """Add len(key) instructions of one opcode; `engine` is a name or an array of engine
        codes. Returns their handles."""
        key = np.asarray(key, dtype=np.int64)
        n = key.size
        engine_codes = self.engine_code(engine) if isinstance(engine, str) else engine
        values = {"key": key, "engine": engine_codes,
                  "opcode": self._code(self.opcodes, opcode), "elements": elements,
                  "bytes": bytes, "flops": flops,
                  "layer": NULL if layer is None else self._code(self.layers, layer), "pc": pc}
        self._inst.append({name: _column(values[name], n, dtype)
                           for name, dtype in INST_TYPES.items()})
        handles = np.arange(self._count, self._count + n, dtype=np.int64)
        self._count += n
        return handles

    def new_semaphore(self) -> int:
        sem = self._next_sem
        self._next_sem += 1
        return sem

    def _sem_rows(self, handles: np.ndarray, sem: object, op: SemOp, value: object) -> None:
        n = handles.size
        values = {"inst": handles, "sem": sem, "op": 0 if op is SemOp.WAIT else 1,
                  "value": value}
        self._sems.append({name: _column(values[name], n, dtype)
                           for name, dtype in SEM_TYPES.items()})

    def signal(self, handles: np.ndarray, sem: object, value: object = 1) -> None:
        """Each instruction adds `value` to semaphore `sem` when it ends."""
        self._sem_rows(handles, sem, SemOp.SIGNAL, value)

    def wait(self, handles: np.ndarray, sem: object, value: object) -> None:
        """Each instruction starts once semaphore `sem` has reached its `value`; waits for a
        value <= 0 are always satisfied and are not emitted."""
        value = _column(value, handles.size)
        keep = value > 0
        self._sem_rows(handles[keep], _column(sem, handles.size)[keep], SemOp.WAIT, value[keep])

    def wait_for(self, handles: np.ndarray, producers: np.ndarray, sem: object) -> None:
        """Each instruction waits on `sem` until the signal of its producer has been counted:
        the value is resolved in `finish`, once program order is known, as the number of
        signals on `sem` up to and including the producer's."""
        n = handles.size
        self._pending.append({"inst": _column(handles, n, np.int32),
                              "producer": _column(producers, n, np.int32),
                              "sem": _column(sem, n, np.int32)})

    def access(self, handles: np.ndarray, space: MemSpace, access: Access, addr: object,
               size: object, partition: object = NULL, partitions: object = NULL) -> None:
        n = handles.size
        values = {"inst": handles, "space": list(MemSpace).index(space),
                  "access": list(Access).index(access), "addr": addr, "size": size,
                  "partition": partition, "partitions": partitions}
        self._mem.append({name: _column(values[name], n, dtype)
                          for name, dtype in MEM_TYPES.items()})

    def _resolve_waits(self, sems: dict[str, np.ndarray],
                       rank: np.ndarray) -> dict[str, np.ndarray]:
        """Wait rows for `wait_for`: the count on the semaphore once the producer signalled.
        `sems` holds the explicit rows, instructions already in program order."""
        signal = sems["op"] == 1
        sig_sem = sems["sem"][signal].astype(np.int64)
        sig_rank = sems["inst"][signal].astype(np.int64)
        sig_val = sems["value"][signal].astype(np.int64)
        order = np.lexsort((sig_rank, sig_sem))
        sig_sem, sig_rank, sig_val = sig_sem[order], sig_rank[order], sig_val[order]
        cum = np.cumsum(sig_val)
        first = np.searchsorted(sig_sem, sig_sem, side="left")
        within = cum - np.where(first > 0, cum[np.maximum(first - 1, 0)], 0)
        pending = {k: _gather(self._pending, k) for k in ("inst", "producer", "sem")}
        span = np.int64(rank.size + 1)
        keys = sig_sem * span + sig_rank
        wanted = pending["sem"].astype(np.int64) * span + rank[pending["producer"]]
        pos = np.searchsorted(keys, wanted)
        if np.any(pos >= keys.size) or np.any(keys[np.minimum(pos, keys.size - 1)] != wanted):
            raise ValueError("a wait_for producer does not signal the semaphore waited on")
        n = wanted.size
        return {"inst": rank[pending["inst"]], "sem": pending["sem"],
                "op": np.zeros(n, dtype=np.int8), "value": within[pos].astype(np.int32)}

    def finish(self) -> Lowered:
        """Sort into program order and renumber: the program as flat arrays. Consumes the
        chunks, so that the program is never held twice."""
        order = np.argsort(_gather(self._inst, "key"), kind="stable")
        n = order.size
        rank = np.empty(n, dtype=np.int32)
        rank[order] = np.arange(n, dtype=np.int32)
        inst = {k: _gather(self._inst, k)[order] for k in INST_TYPES if k != "key"}
        del order
        seq = np.zeros(n, dtype=np.int32)
        for code in np.unique(inst["engine"]):
            on_engine = np.flatnonzero(inst["engine"] == code)
            seq[on_engine] = np.arange(on_engine.size, dtype=np.int32)
        inst["seq"] = seq

        sems = {k: _gather(self._sems, k) for k in SEM_TYPES} if self._sems else {}
        if sems:
            sems["inst"] = rank[sems["inst"]]
        if self._pending:
            waits = self._resolve_waits(sems, rank)
            sems = {k: np.concatenate([sems[k], waits[k]]) for k in SEM_TYPES}
        if sems:
            # A semaphore nobody waits on needs no signals (small shapes leave some unused):
            # emitting them would be the leak that the bug signatures report.
            waited = np.unique(sems["sem"][sems["op"] == 0])
            keep = (sems["op"] == 0) | np.isin(sems["sem"], waited)
            sems = {k: v[keep] for k, v in sems.items()}
        mem = {k: _gather(self._mem, k) for k in MEM_TYPES} if self._mem else {}
        if mem:
            mem["inst"] = rank[mem["inst"]]
        # Rows of one instruction keep their emission order: a stable sort by instruction.
        for table in (sems, mem):
            if table:
                perm = np.argsort(table["inst"], kind="stable")
                for k in table:
                    table[k] = table[k][perm]
        self._inst, self._sems, self._mem = [], [], []
        return Lowered(engines=self.engines, opcodes=tuple(self.opcodes),
                       layers=tuple(self.layers), inst=inst, sems=sems, mem=mem,
                       semaphores=self._next_sem)


@dataclass
class Lowered:
    """A finished program: instruction columns in program order (row i is instruction id i),
    semaphore and memory rows sorted by instruction. Codes index `engines`, `opcodes`,
    `layers`, `SemOp` (0 wait, 1 signal), `MemSpace` and `Access`; NULL marks a null."""

    engines: tuple[str, ...]
    opcodes: tuple[str, ...]
    layers: tuple[str, ...]
    inst: dict[str, np.ndarray]
    sems: dict[str, np.ndarray]
    mem: dict[str, np.ndarray]
    semaphores: int

    @property
    def size(self) -> int:
        return int(self.inst["engine"].size)
