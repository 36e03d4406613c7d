"""The machine description of an imported profile: the clocks, the Tensor Engine's array and
the HBM and DMA bandwidths from Metadata, the rest tracekit's trn-like defaults (marked so).

With neuroncore_clock_freq 1.4 GHz, a 128 x 128 array at 1.4 GHz, hbm_ddr_bandwidth 4e11 B/s
and dma_ddr_bandwidth 2e11 B/s: clock_hz 1.4e9, tensor per_flop 1 / 32768 cycles, HBM 285.7
bytes per cycle, each DMA queue 142.9 bytes per cycle (a transfer's packets spread over the
core's DMA engines, so one queue can use the core's whole DMA bandwidth).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tracekit.convert.neuron_explorer.tables import meta_number
from tracekit.replay.machine import parse_machine

_DEFAULTS = """\
[latency]                        # defaults of tracekit's trn-like machine, not measured
semaphore = 12.0
data = 0.0

[semaphores]
counter_bits = 16

[memory]                         # defaults of trn-like, not measured
partitions = 128
sbuf_partition_bytes = 196608
psum_partition_bytes = 16384

[engines.default]                # defaults of trn-like, not measured
fixed_cycles = 16.0

[engines.vector]
fixed_cycles = 48.0
per_element = 0.0078125

[engines.scalar]
fixed_cycles = 56.0
per_element = 0.0078125

[engines.gpsimd]
fixed_cycles = 80.0
per_element = 0.015625

[engines.dma]                    # defaults of trn-like, not measured
fixed_cycles = 96.0
per_byte = 0.00390625
"""


def machine_toml(meta: dict[str, Any], path: Path) -> str:
    """A machine description (for `tracekit replay --machine`) from Metadata: the clock, the
    Tensor Engine's array and clock, the HBM and per-queue DMA bandwidths; the rest are the
    trn-like machine's defaults, marked as such. Values Metadata lacks fall back to trn-like
    with a comment."""
    clock_ghz = meta_number(meta, "neuroncore_clock_freq", path, required=True)
    assert clock_ghz is not None
    clock_hz = clock_ghz * 1e9
    name = meta.get("instance_type") if isinstance(meta.get("instance_type"), str) \
        and meta.get("instance_type") else "neuron-explorer-import"
    rows = meta_number(meta, "tensor_engine_num_rows", path, required=False)
    cols = meta_number(meta, "tensor_engine_num_cols", path, required=False)
    tensor_ghz = meta_number(meta, "tensor_engine_clock_freq", path, required=False)
    hbm = meta_number(meta, "hbm_ddr_bandwidth", path, required=False)
    dma = meta_number(meta, "dma_ddr_bandwidth", path, required=False)
    engines = meta_number(meta, "num_dma_engines_per_neuroncore", path, required=False)
    lines = [
        "# Made by `tracekit convert neuron-explorer` from the profile's Metadata.",
        "# Replay the imported bundle with it: tracekit replay BUNDLE --machine THIS",
        f"name = {_toml_str(name)}",
        f"description = {_toml_str('Neuron Explorer profile of ' + name)}",
        f"clock_hz = {clock_hz!r}    # neuroncore_clock_freq {clock_ghz:g} GHz", ""]
    if hbm is not None:
        lines += ["[hbm]", f"bytes_per_cycle = {hbm / clock_hz!r}    # hbm_ddr_bandwidth "
                           f"{hbm:g} B/s / clock_hz"]
    else:
        lines += ["[hbm]", "bytes_per_cycle = 192.0    # trn-like default: Metadata has no "
                           "hbm_ddr_bandwidth"]
    lines.append("")
    if dma is not None:
        # A queue's transfer is split into packets over the core's DMA engines (up to
        # num_dma_engines_per_neuroncore at once), so one queue can use the core's whole DMA
        # bandwidth; the HBM bandwidth caps what all queues move together.
        lines += ["[dma]", f"bytes_per_cycle = {dma / clock_hz!r}    # per queue: "
                           f"dma_ddr_bandwidth {dma:g} B/s / clock_hz (a transfer's packets "
                           f"use the core's {engines or 16:g} DMA engines at once)"]
    else:
        lines += ["[dma]", "bytes_per_cycle = 64.0    # trn-like default: Metadata has no "
                           "dma_ddr_bandwidth"]
    lines.append("")
    lines.append(_DEFAULTS)
    lines.append("[engines.tensor]")
    lines.append("fixed_cycles = 64.0               # trn-like default, not measured")
    if rows is not None and cols is not None and tensor_ghz is not None:
        lines.append(f"per_flop = {clock_ghz / (2 * rows * cols * tensor_ghz)!r}    # "
                     f"neuroncore clock / (2 x {rows:g} x {cols:g} x tensor clock "
                     f"{tensor_ghz:g} GHz)")
    else:
        lines.append("per_flop = 3.0517578125e-05    # trn-like default: Metadata lacks the "
                     "tensor array or clock")
    text = "\n".join(lines) + "\n"

    parse_machine(tomllib.loads(text), str(path))  # the description replay will read
    return text


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
