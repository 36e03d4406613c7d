"""Build sample_traces/tiny_gemm: C = relu(A @ B) with A, B, C 256 x 256 bf16, on 128 x 128 tiles.

    python sample_traces/build_tiny_gemm.py

Two DMA queues load the A and B tiles from HBM into SBUF, the tensor engine accumulates each
output tile over two K tiles into PSUM, the scalar engine applies relu while moving the tile back
to SBUF, and a third DMA queue stores it to HBM. Engines synchronise only through semaphores.
Times come from a simple in-order schedule (DMA 1 cycle per 64 bytes + 64 cycles of setup,
matmul 128 cycles, activation 96 cycles, semaphore latency 4 cycles).

A stop-gap made with the test bundle builder until the reference workload generator exists; the
output is byte-identical on every run.
"""

from __future__ import annotations

from pathlib import Path

from tracekit.trace.builder import TraceBuilder

TILE = 128
ELEM = 2  # bf16 bytes
SEM_LATENCY = 4
TILE_BYTES = TILE * TILE * ELEM
A_BASE, B_BASE, C_BASE = 0x0000_0000, 0x0100_0000, 0x0200_0000


def build(path: Path) -> None:
    b = TraceBuilder("tiny_gemm_256x256x256", clock_hz=1.4e9, machine="trn-like")
    free: dict[str, int] = {}

    def run(engine: str, opcode: str, ready: int, cycles: int, **work: object) -> tuple[int, int]:
        start = max(free.get(engine, 0), ready)
        end = start + cycles
        free[engine] = end
        return b.inst(engine, opcode, start, end, **work), end  # type: ignore[arg-type]

    dma_cycles = 64 + TILE_BYTES // 64
    loads_done = 0
    for mi in range(2):
        for ni in range(2):
            layer = f"gemm.tile{mi}{ni}"
            mm_end = 0
            for ki in range(2):
                slot = (mi * 2 + ni) * 2 + ki
                a_addr = A_BASE + (mi * 2 + ki) * TILE_BYTES
                b_addr = B_BASE + (ki * 2 + ni) * TILE_BYTES
                la, a_end = run("dma.q0", "dma_load", 0, dma_cycles, bytes=TILE_BYTES,
                                layer=layer, pc=10)
                lb, b_end = run("dma.q1", "dma_load", 0, dma_cycles, bytes=TILE_BYTES,
                                layer=layer, pc=11)
                sbuf_off = (slot % 4) * TILE * ELEM
                for inst, hbm in ((la, a_addr), (lb, b_addr)):
                    b.access(inst, "hbm", "read", hbm, TILE_BYTES)
                    b.access(inst, "sbuf", "write", sbuf_off + (inst == lb) * 8192, TILE * ELEM,
                             0, TILE)
                    b.signal(inst, sem=0)
                loads_done += 2
                mm, mm_end = run("tensor", "matmul", max(a_end, b_end) + SEM_LATENCY, 128,
                                 elements=TILE * TILE, flops=2 * TILE ** 3, layer=layer, pc=20)
                b.wait(mm, sem=0, value=loads_done)
                b.access(mm, "sbuf", "read", sbuf_off, TILE * ELEM, 0, TILE)
                b.access(mm, "sbuf", "read", sbuf_off + 8192, TILE * ELEM, 0, TILE)
                b.access(mm, "psum", "write", (ni % 2) * TILE * 4, TILE * 4, 0, TILE)
            b.signal(mm, sem=1)
            tile_index = mi * 2 + ni + 1
            act, act_end = run("scalar", "activation", mm_end + SEM_LATENCY, 96,
                               elements=TILE * TILE, flops=TILE * TILE, layer=layer, pc=30)
            b.wait(act, sem=1, value=tile_index)
            b.access(act, "psum", "read", (ni % 2) * TILE * 4, TILE * 4, 0, TILE)
            b.access(act, "sbuf", "write", 16384, TILE * ELEM, 0, TILE)
            b.signal(act, sem=2)
            st, _ = run("dma.q2", "dma_store", act_end + SEM_LATENCY, dma_cycles,
                        bytes=TILE_BYTES, layer=layer, pc=40)
            b.wait(st, sem=2, value=tile_index)
            b.access(st, "sbuf", "read", 16384, TILE * ELEM, 0, TILE)
            b.access(st, "hbm", "write", C_BASE + (mi * 2 + ni) * TILE_BYTES, TILE_BYTES)
    b.write(path, overwrite=True)


if __name__ == "__main__":
    build(Path(__file__).resolve().parent / "tiny_gemm")
