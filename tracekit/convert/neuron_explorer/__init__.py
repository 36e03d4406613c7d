"""Import a Neuron Explorer device profile (the folder of Parquet tables that `neuron-explorer
view` writes, schema 7.x) as a trace bundle, one bundle per execution, with an import report of
what was and was not reconstructed, and a machine description from its Metadata.

Worked example: a profile whose tables hold

    Instruction          id 7: Tensor MATMUL [1310, 1700) pc 3, operands "... $S[4]>=1"
                         id 9: Sync   DMA_TRIGGER [900, 950) pc 0
    DmaPacketAggregated  id 2: queue qSyncIO0, op read, [960, 1300), 4096 bytes,
                         source [INPUT] read_offset [0x100], dest [SB] write_offset [0x0],
                         write_sbuf_partitions 0-1, semaphore_id "S[4] (qSyncIO0)"
    Flow                 Instruction 9 -> DmaPacketAggregated 2 (FLOW_DEPENDENCE)
    SemaphoreUpdate      S[4] = 1 at 1302 from AXI (sem_inc)

imports (times relative to the first start, 900) as

    id engine        opcode       start  end   bytes
     0 dma.qSyncIO0  DMA.read        60  400   4096
     1 sync          DMA_TRIGGER      0   50
     2 tensor        MATMUL         410  800
    deps: 1 -> 0 (data); semaphores: 0 signals S4 by 1 (AXI, linked by semaphore_id),
    2 waits for S4 >= 1 (the observed count was 1 at 1310, so the wait is kept);
    memory: 0 reads hbm [region of the variable + 0x100, 4096 bytes), writes sbuf partitions
    0-1 at 0 (2048 bytes each).

The rules (`/work/notes/ne-design.md` fixed them for every part of issue 15):

- Tables are `NAME.parquet` or `NAME_<n>.parquet` parts (all parts, in number order); columns
  are read by name, only those used, and every optional column may be absent. Metadata's
  profile_schema_version is read first: only MAJOR 7 is read.
- Executions: ExecutionInfo rows; rows belong to an execution by start time within
  [execution_start_ts, execution_end_ts]. No ExecutionInfo or one row: the whole profile.
  Times are ns from the execution's start (else the first start among its rows).
- Engines: Instruction.engine lower-cased with the glossary's aliases (pe, act, dve, pool, sp);
  DMA transfers on `dma.<queue_name>`; with several physical cores, `p<core>.` before each.
  Ids are dense in (engine, seq) order; seq by (start, pc or block_id, source id).
- Instructions: opcode verbatim (`.TRANSPOSE` appended for tensor_instruction_type TRANSPOSE);
  flops raw_flops; bytes the sum of the hbm/sbuf/psum counters; elements tensor_elements; layer
  the first of layer, hlo_name, nki_source_location, bir_debug_info_source_location. DMA
  transfers from DmaPacketAggregated, else DmaPacket grouped by packet_aggregation_id; opcode
  DMA, DMA.<op> or DMA.TRANSPOSE; bytes transfer_bytes.
- deps: Flow (FLOW_DEPENDENCE, DGE_TRIGGER or null: data; ANTI or OUTPUT: memory), dropped
  when an end is not imported or the observed times contradict it; a transfer with no Flow
  edge takes one from the instruction that starts at its `trigger` and ends at its
  `completion` (same core).
- semaphores: SemaphoreUpdate values become signal/sub (the change from the semaphore's
  previous value in the execution, from 0) or set (sem_wr_imm), linked to the instruction of
  the update's engine whose end (timing complete) or start (read) is nearest, within the
  tolerance (ties: the earlier time, then the lower id); AXI updates to the DMA transfer whose
  semaphore_id names the semaphore and whose end is nearest. Waits are parsed from operands
  (else compiler_operands): `$S[k]>=v`, `$S[k]>v` (>= v+1), `$S[k]==v` (eq), kept only if the
  observed count (the last update at or before the instruction's start) satisfies them.
  Several cores: semaphore numbers are core * 1,000,000 + n.
- memory: DMA transfers only; the read side from `source`, the write side from `dest` (SB:
  sbuf, INPUT/OUTPUT/VIRTUAL: hbm). HBM: each variable (sorted by name) owns a region of 2**40
  bytes, addr = region + the parsed offset. SBUF: addr = offset, one row per contiguous run of
  the partition list, size = transfer bytes / partitions. Compute instructions record no
  addresses: their byte counters go to the report.

Bad profiles raise NeuronProfileError naming the file, table and column and the fix. Modules:
`tables` reads the profile, `build` makes the bundle's tables, `passes` holds the compiled
linking and the text parsers, `report` the import report, `machine` the machine description.
"""

from __future__ import annotations

import os
from pathlib import Path

from tracekit.convert.neuron_explorer.build import CORE_STRIDE, REGION_BYTES, Build
from tracekit.convert.neuron_explorer.machine import machine_toml
from tracekit.convert.neuron_explorer.report import ImportReport
from tracekit.convert.neuron_explorer.tables import (
    KNOWN_MAJORS,
    NeuronProfileError,
    choose_execution,
    meta_number,
    plain_values,
    read_metadata,
)
from tracekit.errors import TraceExistsError
from tracekit.options import DEFAULT_LINK_TOLERANCE_NS
from tracekit.trace.bundle import atomic_file, write_trace
from tracekit.trace.manifest import Producer, TimeUnit

__all__ = ["CORE_STRIDE", "DEFAULT_LINK_TOLERANCE_NS", "KNOWN_MAJORS", "REGION_BYTES",
           "ImportReport", "NeuronProfileError", "convert", "machine_toml"]


def convert(profile_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
            execution: int | None = None, machine_out: str | os.PathLike[str] | None = None,
            link_tolerance_ns: int = DEFAULT_LINK_TOLERANCE_NS,
            overwrite: bool = False) -> ImportReport:
    """Import the Neuron Explorer profile in folder `profile_dir` as a bundle at `out` (written
    atomically and validated), one execution of it (`execution`: its execution_index; needed
    when the profile holds several), and with `machine_out` a machine description from its
    Metadata. Returns the import report; NeuronProfileError on a bad profile."""
    folder = Path(profile_dir)
    target = Path(out)
    machine_path = None if machine_out is None else Path(machine_out)
    if link_tolerance_ns < 0:
        raise NeuronProfileError(f"link tolerance {link_tolerance_ns} ns: must be 0 or more.")
    if target.exists() and not overwrite:
        raise TraceExistsError(f"{target}: already exists. Choose another path or pass "
                               f"--force to replace it.")
    if machine_path is not None:
        if machine_path.exists() and not overwrite:
            raise TraceExistsError(f"{machine_path}: already exists. Choose another path "
                                   f"(--machine-out) or pass --force to replace it.")
        if machine_path.resolve() == target.resolve():
            raise NeuronProfileError(f"{machine_path}: the machine description would replace "
                                     f"the bundle. Choose another --machine-out.")
        if not machine_path.resolve().parent.is_dir():
            raise NeuronProfileError(f"{machine_path.parent}: no such folder for the machine "
                                     f"description. Create it or choose another "
                                     f"--machine-out.")
    version, meta, meta_path = read_metadata(folder)
    clock_ghz = meta_number(meta, "neuroncore_clock_freq", meta_path, required=True)
    assert clock_ghz is not None
    chosen = choose_execution(folder, execution)
    built = Build(folder, chosen, link_tolerance_ns)
    built.run()
    machine_text = machine_toml(meta, meta_path)
    report = built.report(str(folder), str(target),
                          None if machine_path is None else str(machine_path), version)
    extra = {"neuron_explorer": {
        "schema_version": version,
        "execution": built.execution_record(),
        "metadata": plain_values(meta),
        "counters": report.counters,
        **({"summary": built.summary} if built.summary is not None else {}),
        "import": report.manifest_dict()},
        # What the profile does not record, for the checks that need it (signatures.COVERAGE).
        "coverage": {"memory": "dma-only", "semaphore_waits": "partial"}}
    workload = (meta.get("profile_name") or built.network_name or folder.resolve().name
                or "neuron-profile")
    explorer = meta.get("explorer_version")

    def write() -> None:
        write_trace(target, built.instructions,
                    semaphores=built.semaphores if built.semaphores.height else None,
                    memory=built.memory if built.memory.height else None,
                    deps=built.deps if built.deps.height else None,
                    workload=str(workload),
                    producer=Producer("neuron-explorer",
                                      explorer if isinstance(explorer, str) else ""),
                    machine=meta.get("instance_type") if isinstance(
                        meta.get("instance_type"), str) else None,
                    clock_hz=clock_ghz * 1e9, time_unit=TimeUnit.NS, created=None,
                    extra=extra, overwrite=overwrite)

    if machine_path is None:
        write()
        return report
    try:
        with atomic_file(machine_path) as temporary:
            temporary.write_text("", encoding="utf-8")  # an unwritable folder fails here
            write()
            temporary.write_text(machine_text, encoding="utf-8")
    except OSError as exc:
        raise NeuronProfileError(f"{machine_path}: cannot write the machine description "
                                 f"({exc.strerror or exc}).") from None
    return report


