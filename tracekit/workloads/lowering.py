"""Lowering of layers onto the NeuronCore-like machine, vectorized over tiles.

A GEMM C[M, N] = A[M, K] @ B[K, N] on tiles (tm, tn, tk) becomes, for every output tile t and
every k step (program order: t outer, k inner):

    dma.q*   dma_load   A tile (tk x tm) HBM -> SBUF
    dma.q*   dma_load   B tile (tk x tn) HBM -> SBUF
    tensor   matmul     A^T B into the tile's PSUM bank     after both loads
    -- after the last k step of tile t --
    scalar   relu/gelu/... (or vector copy) PSUM -> SBUF    after the last matmul
    dma.q*   dma_store  SBUF -> HBM                         after the evacuation

so a GEMM does 2*M*N*K flops in ceil(M/tm)*ceil(N/tn)*ceil(K/tk) matmuls and moves
(ceil(N/tn)*M*K + ceil(M/tm)*K*N + M*N) * 2 bytes. Buffers: with double buffering the loads of
step s reuse the SBUF slot of step s - 2 * (queues // 2) and wait for its matmul (two slots
in flight per queue); without, of step s-1. Tensors
live in HBM in a tile-major (blocked) layout, so every DMA moves one contiguous HBM range.
Row-wise stages (softmax, layer norm) load 128-row tiles, run a chain of vector and scalar steps
on them and store them back. A stage's first transfer on each DMA queue comes after the latest
store on every other queue (the previous stage's output is in HBM).

The lowering states only which instruction waits for which ("after"); the program turns that
into semaphores, one per pair of engines, reset between epochs of `Tiling.epoch_steps` program
steps (program.py). `gemm_size` and `rowwise_size` give the number of instructions each
emits without emitting them; a `Counter` takes a lowering's calls to size a whole program.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracekit.trace.schema import Access, MemSpace
from tracekit.workloads.program import Program

PARTITIONS = 128
SBUF_PARTITION_BYTES = 192 * 1024
PSUM_PARTITION_BYTES = 16 * 1024
PSUM_BANK_BYTES = 2048
ELEM = 2  # bf16 in HBM and SBUF
ACC = 4  # fp32 in PSUM
HBM_ALIGN = 4096
STEP = 16  # key slots per program step


@dataclass(frozen=True)
class Tiling:
    """Tile sizes and the memory-system options of a lowering."""

    tile_m: int = 128
    tile_n: int = 512
    tile_k: int = 128
    dma_queues: int = 4
    double_buffer: bool = True
    epoch_steps: int = 4096
    """Program steps (k steps of a GEMM, row tiles of a row-wise stage) per synchronisation
    epoch: semaphore counts start again from 0 every other epoch (program.py), so no count
    passes what a 16-bit counter holds however long the program is."""

    def tiles(self) -> tuple[int, int, int]:
        """The (rows, columns, depth) of a GEMM's tiles: the ones asked for, clamped to the
        array's partitions (rows, depth) and to a PSUM bank (512 fp32 columns)."""
        return (min(self.tile_m, PARTITIONS), min(self.tile_n, PSUM_BANK_BYTES // ACC),
                min(self.tile_k, PARTITIONS))

    def buffers(self) -> int:
        """SBUF slots per operand: double buffering gives each DMA queue two slots in flight
        (the loads of one step spread over the queues); without it, one slot in all."""
        return 2 * max(1, self.dma_queues // 2) if self.double_buffer else 1


def gemm_size(tiling: Tiling, m: int, n: int, k: int) -> int:
    """The instructions `Lowerer.gemm` emits: per k step two loads and a matmul, per output
    tile an evacuation and a store."""
    tm, tn, tk = tiling.tiles()
    tiles = -(-m // tm) * -(-n // tn)
    return 3 * tiles * -(-k // tk) + 2 * tiles


def rowwise_size(rows: int, cols: int, steps: int, tiling: Tiling) -> int:
    """The instructions `Lowerer.rowwise` emits: per 128-row tile a load, `steps` compute
    steps and a store. ValueError when a row does not fit SBUF."""
    _check_rows_fit(cols, tiling.buffers())
    return -(-rows // PARTITIONS) * (steps + 2)


def _check_rows_fit(cols: int, nbuf: int) -> None:
    if nbuf * cols * ELEM > SBUF_PARTITION_BYTES:
        raise ValueError(f"rows of {cols} elements do not fit SBUF {nbuf} times "
                         f"({SBUF_PARTITION_BYTES} bytes per partition); at most "
                         f"{SBUF_PARTITION_BYTES // (nbuf * ELEM)}")


@dataclass
class Counter:
    """Takes a Lowerer's calls and only counts the instructions they would emit, from the
    same tile arithmetic (`gemm_size`, `rowwise_size`): a program's size without building
    it. Addresses it returns are 0."""

    tiling: Tiling
    instructions: int = 0

    def alloc(self, nbytes: int) -> int:
        return 0

    def gemm(self, m: int, n: int, k: int, **_: object) -> int:
        self.instructions += gemm_size(self.tiling, m, n, k)
        return 0

    def rowwise(self, rows: int, cols: int, steps: list[tuple[str, str, int]],
                **_: object) -> int:
        self.instructions += rowwise_size(rows, cols, len(steps), self.tiling)
        return 0


@dataclass
class Lowerer:
    """Holds the program being built, the HBM allocator and the running program position."""

    tiling: Tiling
    prog: Program = field(init=False)
    hbm_next: int = 0x1000_0000
    key: int = 0
    dma_counter: int = 0
    last_store: dict[int, int] = field(default_factory=dict)
    """Per DMA queue, the handle of its latest store."""
    gated: dict[tuple[int, int], int] = field(default_factory=dict)
    """Per (queue, other queue), the latest store of the other queue that the queue's
    transfers already come after."""

    def __post_init__(self) -> None:
        engines = ("tensor", "vector", "scalar", "gpsimd") + tuple(
            f"dma.q{q}" for q in range(self.tiling.dma_queues))
        self.prog = Program(engines=engines, epoch_keys=self.tiling.epoch_steps * STEP)

    def alloc(self, nbytes: int) -> int:
        """Address of a fresh HBM tensor of `nbytes`."""
        addr = self.hbm_next
        self.hbm_next += (nbytes + HBM_ALIGN - 1) // HBM_ALIGN * HBM_ALIGN
        return addr

    def _queues(self, count: int) -> np.ndarray:
        """Round-robin DMA queue codes for the next `count` transfers."""
        q = (self.dma_counter + np.arange(count)) % self.tiling.dma_queues
        self.dma_counter += count
        return q

    def _dma(self, opcode: str, keys: np.ndarray, nbytes: np.ndarray, layer: str,
             pc: int) -> tuple[np.ndarray, np.ndarray]:
        """Emit transfers round-robin over the queues. Returns the handles and the queue of
        each transfer."""
        queues = self._queues(keys.size)
        first = self.prog.engine_code("dma.q0")
        handles = self.prog.emit(first + queues, opcode, keys, bytes=nbytes, layer=layer, pc=pc)
        return handles, queues

    def _stored(self, stores: np.ndarray, queues: np.ndarray) -> None:
        """Remember each queue's latest store (stores in program order)."""
        for q in np.unique(queues):
            self.last_store[int(q)] = int(stores[np.flatnonzero(queues == q)[-1]])

    def _gate(self, handles: np.ndarray, keys: np.ndarray, queues: np.ndarray) -> None:
        """The first of a stage's transfers on each queue comes after every store so far (data
        produced by earlier stages is in HBM): after the latest store of every other queue
        that it does not come after already (its own queue is in order)."""
        for q in np.unique(queues).tolist():
            on_queue = np.flatnonzero(queues == q)
            first = handles[on_queue[np.argmin(keys[on_queue])]]
            for other, store in sorted(self.last_store.items()):
                if other != q and self.gated.get((q, other)) != store:
                    self.prog.after(np.array([first]), store)
                    self.gated[q, other] = store

    def gemm(self, m: int, n: int, k: int, *, a_addr: int, b_addr: int, layer: str,
             evacuate: str = "relu", pc_base: int = 0, a_load: str = "dma_load",
             a_size: int | None = None) -> int:
        """Lower C = A @ B; returns C's HBM address (tile-major layout). `evacuate` is the
        opcode that moves each output tile out of PSUM: "copy" on the vector engine, or an
        activation function (relu, gelu, ...) on the scalar engine.

        `a_size` is the size of the tensor A's tiles are read from when A is not materialised
        (an im2col load gathers each tile from the smaller input feature map). Every HBM read
        stays inside its tensor: tile ranges are clamped to it.
        """
        tm, tn, tk = self.tiling.tiles()
        mt, nt, kt = -(-m // tm), -(-n // tn), -(-k // tk)
        tiles = mt * nt
        mi, ni, ki = (g.ravel() for g in np.meshgrid(np.arange(mt), np.arange(nt),
                                                     np.arange(kt), indexing="ij"))
        steps = mi.size
        sm = np.minimum(tm, m - mi * tm)
        sn = np.minimum(tn, n - ni * tn)
        sk = np.minimum(tk, k - ki * tk)
        base = self.key
        key = base + np.arange(steps, dtype=np.int64) * STEP
        nbuf = self.tiling.buffers()
        prog = self.prog

        # Loads: A tile (mi, ki) and B tile (ki, ni), tile-major so each is contiguous.
        a_bytes, b_bytes = sk * sm * ELEM, sk * sn * ELEM
        a_tile = tk * tm * ELEM
        b_tile = tk * tn * ELEM
        la, qa = self._dma(a_load, key, a_bytes, layer, pc_base + 1)
        lb, qb = self._dma("dma_load", key + 1, b_bytes, layer, pc_base + 2)
        self._gate(np.r_[la, lb], np.r_[key, key + 1], np.r_[qa, qb])
        slot = np.arange(steps) % nbuf
        a_sbuf = slot * tm * ELEM
        b_sbuf = nbuf * tm * ELEM + slot * tn * ELEM
        out_base = nbuf * (tm + tn) * ELEM
        a_read, a_offset = _inside((mi * kt + ki) * a_tile, a_bytes,
                                   m * k * ELEM if a_size is None else a_size)
        b_read, b_offset = _inside((ki * nt + ni) * b_tile, b_bytes, k * n * ELEM)
        prog.access(la, MemSpace.HBM, Access.READ, a_addr + a_offset, a_read)
        prog.access(la, MemSpace.SBUF, Access.WRITE, a_sbuf, sm * ELEM, 0, sk)
        prog.access(lb, MemSpace.HBM, Access.READ, b_addr + b_offset, b_read)
        prog.access(lb, MemSpace.SBUF, Access.WRITE, b_sbuf, sn * ELEM, 0, sk)

        # Matmuls accumulate over k into one of two PSUM banks per output tile.
        tile = mi * nt + ni
        mm = prog.emit("tensor", "matmul", key + 2, elements=sk * sm + sk * sn,
                       flops=2 * sm * sn * sk, layer=layer, pc=pc_base + 3)
        prog.after(mm, la)
        prog.after(mm, lb)
        bank = (tile % 2) * PSUM_BANK_BYTES
        prog.access(mm, MemSpace.SBUF, Access.READ, a_sbuf, sm * ELEM, 0, sk)
        prog.access(mm, MemSpace.SBUF, Access.READ, b_sbuf, sn * ELEM, 0, sk)
        prog.access(mm, MemSpace.PSUM, Access.WRITE, bank, sn * ACC, 0, sm)
        # Loads of step s reuse the slot of step s - nbuf: after that step's matmul.
        reuse = np.arange(nbuf, steps)
        prog.after(la[reuse], mm[reuse - nbuf])
        prog.after(lb[reuse], mm[reuse - nbuf])

        # Evacuation and store once per output tile, after its last k step.
        last = np.flatnonzero(ki == kt - 1)
        first = np.flatnonzero(ki == 0)
        engine = "vector" if evacuate == "copy" else "scalar"  # activations on scalar
        em, en = sm[last], sn[last]
        ev = prog.emit(engine, evacuate, key[last] + 3, elements=em * en, flops=em * en,
                       layer=layer, pc=pc_base + 4)
        prog.after(ev, mm[last])
        # The first matmul of tile t reuses tile t-2's PSUM bank: after its evacuation.
        prog.after(mm[first[2:]], ev[:-2])
        out_sbuf = out_base + (np.arange(tiles) % 2) * tn * ELEM
        prog.access(ev, MemSpace.PSUM, Access.READ, bank[last], en * ACC, 0, em)
        prog.access(ev, MemSpace.SBUF, Access.WRITE, out_sbuf, en * ELEM, 0, em)
        c_tile = tm * tn * ELEM
        c_addr = self.alloc(tiles * c_tile)
        st, qs = self._dma("dma_store", key[last] + 4, em * en * ELEM, layer, pc_base + 5)
        prog.after(st, ev)
        prog.after(ev[2:], st[:-2])  # output slot t % 2 is freed by store t-2
        prog.access(st, MemSpace.SBUF, Access.READ, out_sbuf, en * ELEM, 0, em)
        prog.access(st, MemSpace.HBM, Access.WRITE, c_addr + np.arange(tiles) * c_tile,
                    em * en * ELEM)
        self._stored(st, qs)
        self.key = int(key[-1]) + STEP
        return c_addr

    def rowwise(self, rows: int, cols: int, steps: list[tuple[str, str, int]], *, in_addr: int,
                layer: str, pc_base: int = 0) -> int:
        """Lower a row-wise operation (softmax, layer norm) on 128-row tiles: load, a chain of
        (engine, opcode, passes over the tile) steps, store. Returns the output address."""
        nbuf = self.tiling.buffers()
        _check_rows_fit(cols, nbuf)
        ntiles = -(-rows // PARTITIONS)
        r = np.minimum(PARTITIONS, rows - np.arange(ntiles) * PARTITIONS)
        key = self.key + np.arange(ntiles, dtype=np.int64) * STEP
        prog = self.prog
        tile_bytes = PARTITIONS * cols * ELEM
        slot = np.arange(ntiles) % nbuf
        sbuf = slot * cols * ELEM
        ld, ql = self._dma("dma_load", key, r * cols * ELEM, layer, pc_base + 1)
        self._gate(ld, key, ql)
        prog.access(ld, MemSpace.HBM, Access.READ, in_addr + np.arange(ntiles) * tile_bytes,
                    r * cols * ELEM)
        prog.access(ld, MemSpace.SBUF, Access.WRITE, sbuf, cols * ELEM, 0, r)
        prev = ld
        for i, (engine, opcode, passes) in enumerate(steps):
            h = prog.emit(engine, opcode, key + 1 + i, elements=r * cols * passes,
                          flops=r * cols * passes, layer=layer, pc=pc_base + 2 + i)
            prog.after(h, prev)
            prog.access(h, MemSpace.SBUF, Access.READ, sbuf, cols * ELEM, 0, r)
            prog.access(h, MemSpace.SBUF, Access.WRITE, sbuf, cols * ELEM, 0, r)
            prev = h
        out = self.alloc(ntiles * tile_bytes)
        st, qs = self._dma("dma_store", key + 1 + len(steps), r * cols * ELEM, layer,
                           pc_base + 2 + len(steps))
        prog.after(st, prev)
        prog.access(st, MemSpace.SBUF, Access.READ, sbuf, cols * ELEM, 0, r)
        prog.access(st, MemSpace.HBM, Access.WRITE, out + np.arange(ntiles) * tile_bytes,
                    r * cols * ELEM)
        # The load of tile i reuses the slot of tile i - nbuf: after that tile's store.
        reuse = np.arange(nbuf, ntiles)
        prog.after(ld[reuse], st[reuse - nbuf])
        self._stored(st, qs)
        self.key = int(key[-1]) + STEP
        return out


def _inside(offset: np.ndarray, nbytes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The HBM range a tile read touches: its tile-major range, clamped into the `size`-byte
    tensor (a read larger than the tensor, as an im2col gather can be, touches all of it)."""
    read = np.minimum(nbytes, size)
    return read, np.minimum(offset, size - read)
