"""A columnar program under construction: lowerings emit whole batches of instructions,
synchronisation edges and memory accesses as NumPy arrays, never one row at a time; `finish`
turns the edges into semaphores that are correct in every legal order of execution.

    prog = Program(engines=("tensor", "dma.q0"), epoch_keys=32)
    loads = prog.emit("dma.q0", "dma_load", key=np.arange(6) * 16, bytes=np.full(6, 4096))
    mms = prog.emit("tensor", "matmul", key=np.arange(6) * 16 + 2, flops=...)
    prog.after(mms, loads)                         # matmul i waits for load i

Every instruction carries an integer `key`, its position in program order; `finish` sorts by
key (ties keep emission order), numbers the instructions 0..n-1 in that order and gives each
engine's queue its `seq`. Handles returned by `emit` are emission indices, valid until then.

Synchronisation. A semaphore is a counter (schema v2): signals add when their instruction
ends, a wait holds its instruction until the count reaches its value, and which signal
releases a wait depends on the timeline. So that every wait means the same thing in every
order, each semaphore belongs to one (producer engine, consumer engine) pair: only the
producer's engine signals it, in its queue order, and only the consumer's engine waits on it,
for the count that the producer's signal brings it to. A producer signals once per consumer
engine, however many instructions there wait for it.

Epochs and resets. Counts that only grow pass the machine's 16-bit counter in long programs,
so keys are cut into epochs of `epoch_keys` (0: one epoch) and each pair has two banks, one
semaphore for the signals of even epochs and one for odd. A bank is reused two epochs later
after a reset: the consumer engine `set`s it to 0 on its last instruction that waits on the
bank's earlier signals (X) and signals a reset semaphore (consumer engine -> producer engine,
only counting up, one signal per reset, landing with the set). The producer's first signal
into the bank in the new epoch (Y) and the consumer's first wait on the new signals (W) both
wait for that signal. So in every order the old signals have all arrived before X starts, the
new ones arrive after the set (Y ends after it has landed), and no wait sees the old count
after X (W starts after the set has landed): the new signals count from 0, and waits count
within the bank's current use. A reset needs X before Y in program order (otherwise Y would
wait on a later instruction); where that fails (a dependency spanning more than an epoch) the
bank is not reset there and its count goes on.

For the example (epochs of two steps): semaphore 0 is dma.q0 -> tensor for even epochs,
semaphore 1 for odd ones. Loads 0, 1 signal 0 and matmuls 0, 1 wait for 1 and 2; loads 2, 3
signal 1 and matmuls 2, 3 wait for 1 and 2; matmul 1 sets semaphore 0 to 0 and signals
semaphore 2 (tensor -> dma.q0, resets); load 4 and matmul 4 wait for semaphore 2 >= 1, load
4 signals semaphore 0 again, and matmuls 4, 5 wait for it to reach 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracekit.trace.schema import Access, MemSpace, SemOp

NULL = -1
"""Stands for null in the integer columns of the program (no value is negative)."""

WAIT, SIGNAL, SUB, SET = (list(SemOp).index(op)
                          for op in (SemOp.WAIT, SemOp.SIGNAL, SemOp.SUB, SemOp.SET))
"""Codes of the semaphore operations in the program's `op` column (SemOp order)."""

BANKS = 2
"""Semaphores per (producer, consumer) pair: epochs alternate between them."""

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


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values (np.unique, by a plain sort: several times faster on the
    tens of millions of keys of a large program)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


def _rows(inst: np.ndarray, sem: np.ndarray, op: int, value: object) -> dict[str, np.ndarray]:
    n = inst.size
    values = {"inst": inst, "sem": sem, "op": op, "value": value}
    return {name: _column(values[name], n, dtype) for name, dtype in SEM_TYPES.items()}


@dataclass
class Program:
    """Instruction, edge and memory columns gathered in chunks, one chunk per emission.
    `epoch_keys`: the length of a synchronisation epoch in keys (0: the whole program is one
    epoch, and no semaphore is ever reset)."""

    engines: tuple[str, ...]
    epoch_keys: int = 0
    opcodes: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    _inst: list[dict[str, np.ndarray]] = field(default_factory=list)
    _edges: list[dict[str, np.ndarray]] = field(default_factory=list)
    _mem: list[dict[str, np.ndarray]] = field(default_factory=list)
    _count: int = 0

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

    def after(self, consumers: np.ndarray, producers: object) -> None:
        """Each consumer starts only once its producer has ended (pairwise; one producer may
        stand for all). The semaphore and the count are chosen in `finish`; a producer must
        come before its consumer in program order."""
        consumers = np.asarray(consumers, dtype=np.int64)
        self._edges.append({"consumer": consumers.copy(),
                            "producer": _column(producers, consumers.size)})

    def access(self, handles: np.ndarray, space: MemSpace, access: Access, addr: object,
               size: object, partition: object = NULL, partitions: object = NULL) -> None:
        n = handles.size
        values = {"inst": handles, "space": list(MemSpace).index(space),
                  "access": list(Access).index(access), "addr": addr, "size": size,
                  "partition": partition, "partitions": partitions}
        self._mem.append({name: _column(values[name], n, dtype)
                          for name, dtype in MEM_TYPES.items()})

    def _synchronise(self, rank: np.ndarray, keys: np.ndarray,
                     engine: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        """The semaphore rows of the edges (module docstring) and the number of semaphores.
        `keys` and `engine` are in program order, `rank` maps handles to it."""
        consumer = rank[_gather(self._edges, "consumer")].astype(np.int64)
        producer = rank[_gather(self._edges, "producer")].astype(np.int64)
        self._edges = []
        if np.any(producer >= consumer):
            raise ValueError("an instruction waits for one that comes after it in program "
                             "order (a lowering bug)")
        span = np.int64(keys.size + 1)
        n_eng = len(self.engines)
        both = _distinct(consumer * span + producer)  # one edge per pair of instructions
        consumer, producer = both // span, both % span
        del both

        def epoch_of(inst: np.ndarray) -> np.ndarray:
            return keys[inst] // self.epoch_keys if self.epoch_keys > 0 else \
                np.zeros(inst.size, dtype=np.int64)

        engine = engine.astype(np.int64)
        # A family is (producer engine, consumer engine, bank): one semaphore, reused.
        family = (engine[producer] * n_eng + engine[consumer]) * BANKS + \
            epoch_of(producer) % BANKS
        signal = _distinct(family * span + producer)
        sig_family, sig_inst = signal // span, signal % span
        sig_epoch = epoch_of(sig_inst)
        # Groups: a family's signals of one epoch (contiguous: epochs grow with the key).
        new = np.r_[True, (sig_family[1:] != sig_family[:-1]) | (sig_epoch[1:] != sig_epoch[:-1])]
        group = np.cumsum(new) - 1
        heads = np.flatnonzero(new)
        g_family, first_signal = sig_family[heads], sig_inst[heads]
        edge_signal = np.searchsorted(signal, family * span + producer)
        del family, producer
        at_group = group[edge_signal]
        last_wait = np.full(heads.size, -1, dtype=np.int64)
        np.maximum.at(last_wait, at_group, consumer)
        first_wait = np.full(heads.size, span, dtype=np.int64)
        np.minimum.at(first_wait, at_group, consumer)
        del at_group
        # X: the family's last waiting instruction up to each group (a running maximum that
        # the family's offset keeps from leaking into the next family).
        upto = np.maximum.accumulate(g_family * span + last_wait) - g_family * span
        follows = np.r_[False, g_family[1:] == g_family[:-1]]
        x = np.r_[-1, upto[:-1]]
        reset = follows & (x < first_signal)
        # Uses: the runs of groups between resets; waits count within a use.
        begins = ~follows | reset
        use_of_group = np.cumsum(begins) - 1
        use = use_of_group[group]
        starts = np.flatnonzero(np.r_[True, use[1:] != use[:-1]])
        count = np.arange(signal.size) - np.repeat(starts, np.diff(np.r_[starts, signal.size])) + 1
        # W: the first instruction that waits on a use's signals.
        w = np.minimum.reduceat(first_wait, np.flatnonzero(begins))[use_of_group[reset]]
        families = _distinct(sig_family)

        def number(fam: np.ndarray) -> np.ndarray:
            return np.searchsorted(families, fam)

        parts = [_rows(consumer, number(sig_family[edge_signal]), WAIT, count[edge_signal]),
                 _rows(sig_inst, number(sig_family), SIGNAL, 1)]
        del consumer, edge_signal
        x, y, fam = x[reset], first_signal[reset], g_family[reset]
        parts.append(_rows(x, number(fam), SET, 0))
        # Reset semaphores, consumer engine -> producer engine: X signals, and Y (on the
        # producer) and W (on the consumer) wait, so that neither looks at the count before
        # X's set has landed. On one engine, its queue already orders Y after X.
        pair = fam // BANKS
        p_eng, c_eng = pair // n_eng, pair % n_eng
        rst = c_eng * n_eng + p_eng
        rst_signal = _distinct(rst * span + x)
        rst_families = _distinct(rst)
        rst_number = families.size + np.searchsorted(rst_families, rst)
        value = (np.searchsorted(rst_signal, rst * span + x)
                 - np.searchsorted(rst_signal, rst * span) + 1)
        other = p_eng != c_eng
        parts += [_rows(rst_signal % span, families.size + np.searchsorted(
                      rst_families, rst_signal // span), SIGNAL, 1),
                  _rows(y[other], rst_number[other], WAIT, value[other]),
                  _rows(w, rst_number, WAIT, value)]
        sems = {k: np.concatenate([part[k] for part in parts]) for k in SEM_TYPES}
        order = np.lexsort((sems["value"], sems["sem"], sems["op"], sems["inst"]))
        sems = {k: v[order] for k, v in sems.items()}
        repeated = np.r_[False, np.all([(v[1:] == v[:-1]) for v in sems.values()], axis=0)]
        return ({k: v[~repeated] for k, v in sems.items()},
                int(families.size + rst_families.size))

    def finish(self) -> Lowered:
        """Sort into program order and renumber: the program as flat arrays. Consumes the
        chunks, so that the program is never held twice."""
        keys = _gather(self._inst, "key")
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        n = order.size
        rank = np.empty(n, dtype=np.int32)
        rank[order] = np.arange(n, dtype=np.int32)
        inst = {k: _gather(self._inst, k)[order] for k in INST_TYPES if k != "key"}
        del order
        seq = np.zeros(n, dtype=np.int32)
        for code in _distinct(inst["engine"]):
            on_engine = np.flatnonzero(inst["engine"] == code)
            seq[on_engine] = np.arange(on_engine.size, dtype=np.int32)
        inst["seq"] = seq

        sems, semaphores = (self._synchronise(rank, keys, inst["engine"]) if self._edges
                            else ({}, 0))
        mem = {k: _gather(self._mem, k) for k in MEM_TYPES} if self._mem else {}
        if mem:
            mem["inst"] = rank[mem["inst"]]
            # Rows of one instruction keep their emission order: a stable sort.
            perm = np.argsort(mem["inst"], kind="stable")
            mem = {k: v[perm] for k, v in mem.items()}
        self._inst, self._mem = [], []
        return Lowered(engines=self.engines, opcodes=tuple(self.opcodes),
                       layers=tuple(self.layers), inst=inst, sems=sems, mem=mem,
                       semaphores=semaphores)


@dataclass
class Lowered:
    """A finished program: instruction columns in program order (row i is instruction id i),
    semaphore rows sorted by (instruction, op, semaphore, value), memory rows by instruction.
    Codes index `engines`, `opcodes`, `layers`, `SemOp` (WAIT, SIGNAL, SUB, SET), `MemSpace`
    and `Access`; NULL marks a null."""

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
