"""Machine descriptions: the TOML format of the timing model's parameters, loaded and checked.

    name = "trn-like"
    clock_hz = 1.4e9

    [hbm]
    bytes_per_cycle = 192.0          # shared by every DMA queue

    [dma]
    bytes_per_cycle = 64.0           # each queue's own bandwidth
    [dma.queues]                     # optional: queues with another bandwidth
    "dma.q3" = 16.0

    [latency]
    semaphore = 12.0                 # a signal reaches its waiter this many cycles after it ends
    data = 0.0

    [semaphores]                     # optional
    counter_bits = 16                # a count past 2**bits - 1 overflows the hardware counter

    [memory]
    partitions = 128
    sbuf_partition_bytes = 196608
    psum_partition_bytes = 16384

    [engines.tensor]                 # default of an engine kind: tensor, vector, scalar, gpsimd,
    fixed_cycles = 64.0              # dma (dma.q0, dma.q1, ...) or any other engine name
    per_flop = 3.0517578125e-05
    [engines.dma]                    # a transfer's set-up, before its bytes move
    fixed_cycles = 96.0
    per_byte = 0.00390625
    [engines.tensor.opcodes.transpose]
    fixed_cycles = 32.0
    per_element = 0.0078125

A duration is fixed_cycles + per_element * elements + per_byte * bytes + per_flop * flops, from
the first entry found of: the engine's entry for the opcode, the engine kind's entry for the
opcode, the engine's own, the kind's, `[engines.default]`. An opcode entry is the more specific
fact, so it wins over an engine-wide one (every key of it, the effects below included). DMA
transfers take their set-up from the same model and move their bytes through the contention
model of `tracekit.replay.engine`.

Effects beyond that first-order model, each off unless its keys are given (an entry without
them means what it always meant):

- Granular transfer costs: `per_descriptor` cycles per descriptor of `descriptor_bytes` bytes,
  the count rounded up. With per_descriptor = 2 and descriptor_bytes = 512, a 4096-byte transfer
  pays 2 * 8 = 16 cycles and a 4097-byte one 2 * 9 = 18 (per_byte = 2/512 would give 16.004).
- Warm-up: the first `warmup_count` instructions of an engine (in its queue order) take
  `warmup_factor` times their duration (a DMA's set-up and bytes alike). With warmup_count = 4
  and warmup_factor = 1.5 on tensor, 64-cycle matmuls take 96, 96, 96, 96, then 64, 64, ...
- SBUF partition conflicts: an instruction that starts while another engine's instruction is
  under way on overlapping SBUF partitions (the trace's memory table) takes `conflict_stretch`
  times its duration (a DMA's set-up and bytes alike). With conflict_stretch = 1.25 on vector,
  a 100-cycle vector op on partitions 0-63 that starts while a DMA load into partitions 32-95
  moves its bytes takes 125 cycles; one on partitions 64-127 alongside a load into 0-63 takes
  100. Only the instruction that starts is stretched; the one under way keeps its time.
- Transfers in flight: a DMA queue with `max_in_flight` = N (an engine-wide entry: [engines.dma]
  or one queue's) may have up to N transfers under way at once, sharing its bandwidth
  (max-min fair, under the HBM bandwidth as ever); each starts once the one N places before it
  in the queue has ended (and its dependencies allow), so one's set-up overlaps another's bytes.
  With 1 (the default) a queue runs one transfer at a time. Worked example: a queue of
  64 B/cycle with two transfers of set-up 96 and 6400 bytes: with 1 in flight the second ends
  at 2 * (96 + 100) = 392; with 2, both set up from 0, share 32 B/cycle each from 96, and end
  at 96 + 200 = 296.

    [engines.dma]
    fixed_cycles = 96.0
    per_descriptor = 2.0             # cycles per descriptor ...
    descriptor_bytes = 512           # ... of 512 bytes, rounded up
    max_in_flight = 2                # two transfers of a queue at once
    warmup_count = 4                 # the first 4 transfers of each queue ...
    warmup_factor = 1.6              # ... take 1.6 times longer
    conflict_stretch = 1.15          # 15 % longer when starting on partitions in use
"""

from __future__ import annotations

import re

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tracekit.errors import TracekitError


class MachineError(TracekitError):
    """A machine file that cannot be read or breaks the format."""


@dataclass(frozen=True)
class Latency:
    """fixed + per_element * elements + per_byte * bytes + per_flop * flops
    + per_descriptor * ceil(bytes / descriptor_bytes), in cycles, and the effects on it (module
    docstring): warm-up, SBUF partition conflicts, transfers in flight (of an engine-wide DMA
    entry only). The defaults are the effects off."""

    fixed_cycles: float = 0.0
    per_element: float = 0.0
    per_byte: float = 0.0
    per_flop: float = 0.0
    per_descriptor: float = 0.0
    descriptor_bytes: int = 0
    warmup_count: int = 0
    warmup_factor: float = 1.0
    conflict_stretch: float = 1.0
    max_in_flight: int = 1

    @property
    def coefficients(self) -> tuple[float, ...]:
        """The cost terms, as the replay's duration table takes them: fixed, per_element,
        per_byte, per_flop, per_descriptor, descriptor_bytes (0: no descriptors)."""
        return (self.fixed_cycles, self.per_element, self.per_byte, self.per_flop,
                self.per_descriptor, float(self.descriptor_bytes))


@dataclass(frozen=True)
class Machine:
    """Every parameter the replay uses. Engines are looked up by name, then by kind."""

    name: str
    clock_hz: float
    hbm_bytes_per_cycle: float
    dma_bytes_per_cycle: float
    semaphore_latency: float
    data_latency: float
    partitions: int
    sbuf_partition_bytes: int
    psum_partition_bytes: int
    engines: dict[str, Latency] = field(default_factory=dict)
    opcodes: dict[tuple[str, str], Latency] = field(default_factory=dict)
    queue_bytes_per_cycle: dict[str, float] = field(default_factory=dict)
    source: str = "<built-in>"
    semaphore_bits: int = 16

    @property
    def semaphore_max(self) -> int:
        """The largest count a hardware semaphore holds."""
        return 2**self.semaphore_bits - 1

    def latency(self, engine: str, opcode: str) -> Latency:
        """The latency model of `opcode` on `engine` (most specific entry first)."""
        kind = engine_kind(engine)
        for key in ((engine, opcode), (kind, opcode)):
            if key in self.opcodes:
                return self.opcodes[key]
        for name in (engine, kind, "default"):
            if name in self.engines:
                return self.engines[name]
        return Latency()

    def queue_bandwidth(self, engine: str) -> float:
        return self.queue_bytes_per_cycle.get(engine, self.dma_bytes_per_cycle)

    @property
    def entries(self) -> tuple[Latency, ...]:
        """Every latency entry, engine-wide and per opcode."""
        return (*self.engines.values(), *self.opcodes.values())

    @property
    def warms_up(self) -> bool:
        return any(e.warmup_count > 0 and e.warmup_factor != 1.0 for e in self.entries)

    @property
    def conflicts(self) -> bool:
        return any(e.conflict_stretch != 1.0 for e in self.entries)

    def in_flight(self, engine: str) -> int:
        """How many transfers DMA queue `engine` may have in flight (its own entry's
        max_in_flight, else its kind's; 1 for compute engines)."""
        for name in (engine, engine_kind(engine)):
            if name in self.engines:
                return self.engines[name].max_in_flight
        return 1


_CORE = re.compile(r"p[0-9]+\.")


def engine_kind(engine: str) -> str:
    """dma.q3 -> dma; tensor -> tensor. A physical core's prefix (`p1.tensor`, `p0.dma.q3`, as
    imported device profiles with several cores name their engines) is not part of the kind."""
    if engine.startswith("p") and (core := _CORE.match(engine)):
        engine = engine[core.end():]
    return "dma" if engine.startswith("dma.") else engine


MAX_PARAMETER = 1e15
MIN_POSITIVE = 1e-9
"""Bounds of every number in a machine file: beyond them event times stop being exact."""

_LATENCY_KEYS = {"fixed_cycles", "per_element", "per_byte", "per_flop"}
_EFFECT_KEYS = {"per_descriptor", "descriptor_bytes", "warmup_count", "warmup_factor",
                "conflict_stretch", "max_in_flight"}
_TOP_KEYS = {"name", "clock_hz", "hbm", "dma", "latency", "memory", "engines", "description",
             "semaphores"}


class _Reader:
    """Typed access to the TOML document that names the file and key of every problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str) -> MachineError:
        return MachineError(f"{self.source}: {key}: {what}. The built-in machines show the "
                            f"format: `tracekit machines` lists them, and their files are "
                            f"in {builtin_folder()}.")

    def table(self, data: dict[str, Any], key: str, allowed: set[str] | None = None,
              required: bool = True) -> dict[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "missing table" if value is None else "must be a table")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise self.fail(key, f"unknown key(s) {', '.join(unknown)}; allowed: "
                                     f"{', '.join(sorted(allowed))}")
        return value

    def number(self, data: dict[str, Any], key: str, default: float | None = None, *,
               positive: bool = False, name: str | None = None) -> float:
        """data[name] (by default the key's last part) as a checked number."""
        value = data.get(key.rsplit(".", 1)[-1] if name is None else name, default)
        if value is None:
            raise self.fail(key, "missing")
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise self.fail(key, f"must be a number, not {value!r}")
        if value < 0 or (positive and value == 0):
            raise self.fail(key, f"must be {'positive' if positive else 'non-negative'}, "
                                 f"not {value!r}")
        if value > MAX_PARAMETER or (positive and value < MIN_POSITIVE):
            raise self.fail(key, f"{value!r} is outside the range a machine can have "
                                 f"({MIN_POSITIVE:g} to {MAX_PARAMETER:g})")
        return float(value)

    def whole(self, data: dict[str, Any], key: str, default: float, low: float) -> int:
        value = self.number(data, key, default)
        if value != int(value) or value < low:
            raise self.fail(key, f"must be a whole number of at least {low:g}, not {value:g}")
        return int(value)

    def latency(self, data: dict[str, Any], key: str) -> Latency:
        unknown = sorted(set(data) - _LATENCY_KEYS - _EFFECT_KEYS - {"opcodes"})
        if unknown:
            raise self.fail(key, f"unknown key(s) {', '.join(unknown)}; a latency has "
                                 f"{', '.join(sorted(_LATENCY_KEYS | _EFFECT_KEYS))}")
        terms = {k: self.number(data, f"{key}.{k}", 0.0) for k in _LATENCY_KEYS}
        per_descriptor = self.number(data, f"{key}.per_descriptor", 0.0)
        descriptor_bytes = self.whole(data, f"{key}.descriptor_bytes", 0.0, 0.0)
        if (per_descriptor > 0) != (descriptor_bytes > 0):
            given, other = (("per_descriptor", "descriptor_bytes") if per_descriptor > 0
                            else ("descriptor_bytes", "per_descriptor"))
            raise self.fail(f"{key}.{other}", f"needs a value above 0 with {given}: "
                                              f"per_descriptor and descriptor_bytes go "
                                              f"together (cycles per descriptor of so many "
                                              f"bytes)")
        factor = self.number(data, f"{key}.warmup_factor", 1.0, positive=True)
        count = self.whole(data, f"{key}.warmup_count", 0.0, 0.0)
        if ("warmup_factor" in data) != ("warmup_count" in data):
            given, other = (("warmup_factor", "warmup_count") if "warmup_factor" in data
                            else ("warmup_count", "warmup_factor"))
            raise self.fail(f"{key}.{other}", f"missing: {given} needs it (the first "
                                              f"warmup_count instructions cost warmup_factor "
                                              f"times more)")
        stretch = self.number(data, f"{key}.conflict_stretch", 1.0, positive=True)
        return Latency(**terms, per_descriptor=per_descriptor,
                       descriptor_bytes=descriptor_bytes,
                       warmup_count=count,
                       warmup_factor=factor, conflict_stretch=stretch,
                       max_in_flight=self.whole(data, f"{key}.max_in_flight", 1.0, 1.0))


def parse_machine(data: dict[str, Any], source: str) -> Machine:
    """A Machine from a parsed TOML document; MachineError naming the key on any problem."""
    r = _Reader(source)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise r.fail(", ".join(unknown), f"unknown top-level key; allowed: "
                                         f"{', '.join(sorted(_TOP_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise r.fail("name", "must be a non-empty string")
    hbm = r.table(data, "hbm", {"bytes_per_cycle"})
    dma = r.table(data, "dma", {"bytes_per_cycle", "queues"})
    latency = r.table(data, "latency", {"semaphore", "data"})
    memory = r.table(data, "memory", {"partitions", "sbuf_partition_bytes",
                                      "psum_partition_bytes"})
    engines_doc = r.table(data, "engines")
    engines: dict[str, Latency] = {}
    opcodes: dict[tuple[str, str], Latency] = {}
    for engine, entry in sorted(engines_doc.items()):
        key = f"engines.{engine}"
        if not isinstance(entry, dict):
            raise r.fail(key, "must be a table")
        # A table holding only opcode tables (TOML makes it for [engines.x.opcodes.y]) sets
        # no engine-wide latency; an explicitly empty [engines.x] sets an all-zero one.
        if set(entry) != {"opcodes"}:
            engines[engine] = r.latency(entry, key)
            if engines[engine].max_in_flight != 1 and engine_kind(engine) != "dma":
                raise r.fail(f"{key}.max_in_flight", "only a DMA queue ([engines.dma] or "
                                                     "[engines.\"dma.qN\"]) has transfers "
                                                     "in flight")
        for opcode, op_entry in sorted(r.table(entry, f"{key}.opcodes", required=False).items()):
            if not isinstance(op_entry, dict):
                raise r.fail(f"{key}.opcodes.{opcode}", "must be a table")
            opcodes[(engine, opcode)] = r.latency(op_entry, f"{key}.opcodes.{opcode}")
            if "max_in_flight" in op_entry:
                where = (f"[{key}]" if engine_kind(engine) == "dma" else
                         "[engines.dma] or [engines.\"dma.qN\"] (only DMA queues have "
                         "transfers in flight)")
                raise r.fail(f"{key}.opcodes.{opcode}.max_in_flight",
                             f"a limit of the queue, not of an opcode: set it in {where}")
    queues = r.table(dma, "dma.queues", required=False)
    queue_bw = {q: r.number(queues, f"dma.queues.{q}", positive=True, name=q)
                for q in sorted(queues)}
    partitions = r.number(memory, "memory.partitions", positive=True)
    if partitions != int(partitions):
        raise r.fail("memory.partitions", "must be an integer")
    semaphores = r.table(data, "semaphores", {"counter_bits"}, required=False)
    bits = r.number(semaphores, "semaphores.counter_bits", 16.0, positive=True)
    if bits != int(bits) or bits > 62:
        raise r.fail("semaphores.counter_bits", f"must be a whole number of bits from 1 to 62, "
                                                f"not {bits:g}")
    return Machine(
        name=name,
        clock_hz=r.number(data, "clock_hz", positive=True),
        hbm_bytes_per_cycle=r.number(hbm, "hbm.bytes_per_cycle", positive=True),
        dma_bytes_per_cycle=r.number(dma, "dma.bytes_per_cycle", positive=True),
        semaphore_latency=r.number(latency, "latency.semaphore", 0.0),
        data_latency=r.number(latency, "latency.data", 0.0),
        partitions=int(partitions),
        sbuf_partition_bytes=int(r.number(memory, "memory.sbuf_partition_bytes",
                                          positive=True)),
        psum_partition_bytes=int(r.number(memory, "memory.psum_partition_bytes",
                                          positive=True)),
        engines=engines, opcodes=opcodes, queue_bytes_per_cycle=queue_bw, source=source,
        semaphore_bits=int(bits),
    )


def load_machine(path: str | Path) -> Machine:
    """Read and check a machine TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MachineError(f"{path}: no such machine file. `tracekit machines` lists the "
                           f"built-in ones (pass a name to --machine); their files, to copy "
                           f"and edit, are in {builtin_folder()}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MachineError(f"{path}: cannot read the machine file ({exc}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MachineError(f"{path}: not valid TOML ({exc}).") from None
    return parse_machine(data, str(path))


BUILTIN = "trn-like"


def builtin_folder() -> str:
    """Where the built-in machine files are installed (inside the package)."""
    return str(resources.files("tracekit.replay.machines"))


def builtin_machines() -> dict[str, str]:
    """Name -> first line of the description, of every machine shipped in the package."""
    out = {}
    for entry in sorted(resources.files("tracekit.replay.machines").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            out[entry.name.removesuffix(".toml")] = str(data.get("description", "")).strip()
    return out


def builtin_machine(name: str = BUILTIN) -> Machine:
    """A machine shipped inside the package, by name."""
    entry = resources.files("tracekit.replay.machines") / f"{name}.toml"
    if not entry.is_file():
        raise MachineError(f"no built-in machine {name!r}; built-in: "
                           f"{', '.join(builtin_machines())}.")
    return parse_machine(tomllib.loads(entry.read_text(encoding="utf-8")),
                         f"<built-in {name}>")


def resolve_machine(spec: str | Path | None) -> Machine:
    """A machine file path, a built-in name, or None for the default."""
    if spec is None:
        return builtin_machine()
    if isinstance(spec, str) and spec in builtin_machines() and not Path(spec).exists():
        return builtin_machine(spec)
    return load_machine(spec)
