"""The workloads' parameters, declared once: their names, meanings and defaults, read by the
generator, by `tracekit generate`'s options and their help, and by the checks of what a caller
gives.

    workload_params("gemm", {"m": 100})     # Gemm(m=100, n=512, k=512)
    param_help("batch")                      # "mlp: rows per layer (default 256); conv2d: ..."

Light on imports on purpose: the command line reads it to build its help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from tracekit.errors import TracekitError


class WorkloadError(TracekitError):
    """Unknown workload, parameter out of range, or a fault the workload cannot host."""


class ParameterError(WorkloadError):
    """A parameter the chosen workload does not take: a usage error (exit 2)."""

    exit_code = 2


def _param(default: Any, meaning: str) -> Any:
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n]."""

    m: int = _param(512, "rows of A and C")
    n: int = _param(512, "columns of B and C")
    k: int = _param(512, "inner dimension")


ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


@dataclass(frozen=True)
class Mlp:
    """A stack of fully connected layers: widths[0] -> widths[1] -> ... on `batch` rows."""

    widths: tuple[int, ...] = _param((512, 1024, 1024, 256),
                                     "layer widths, input first, comma-separated")
    batch: int = _param(256, "rows per layer")
    activation: str = _param("relu", f"after every layer but the last: "
                                     f"{', '.join(ACTIVATIONS[:-1])} or {ACTIVATIONS[-1]}")


@dataclass(frozen=True)
class Attention:
    """Per head: S = Q K^T, P = softmax(S), O = P V."""

    seq: int = _param(256, "sequence length")
    heads: int = _param(2, "heads")
    head_dim: int = _param(64, "head dimension")


@dataclass(frozen=True)
class Conv2d:
    """A convolution lowered as an im2col matmul: [batch*ho*wo, c*r*s] @ [c*r*s, filters]."""

    batch: int = _param(1, "images per batch")
    c: int = _param(64, "input channels")
    h: int = _param(28, "image height")
    w: int = _param(28, "image width")
    filters: int = _param(64, "output channels")
    r: int = _param(3, "kernel height")
    s: int = _param(3, "kernel width")
    stride: int = _param(1, "stride")


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation over `hidden` of `rows` rows."""

    rows: int = _param(2048, "rows")
    hidden: int = _param(1024, "hidden size")


WORKLOADS: dict[str, type] = {"gemm": Gemm, "mlp": Mlp, "attention": Attention,
                              "conv2d": Conv2d, "layernorm": LayerNorm}

RENAMED: dict[str, dict[str, str]] = {"conv2d": {"n": "batch", "k": "filters"}}
"""Per workload, parameters that an earlier tracekit called by another name: old -> new."""


def as_name(name: str) -> str:
    """A parameter's name as the library spells it (the default of `spell`)."""
    return name


def option(name: str) -> str:
    """A parameter's name as a command-line option: head_dim -> --head-dim."""
    return "--" + name.replace("_", "-")


def and_list(names: list[str]) -> str:
    """a; a and b; a, b and c."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def value_text(value: Any) -> str:
    """A parameter's value as written on the command line: widths as 512,1024,256."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def parameter_names(workload: str) -> tuple[str, ...]:
    """The parameters `workload` takes, in declaration order; WorkloadError if it is unknown."""
    if workload not in WORKLOADS:
        raise WorkloadError(f"unknown workload {workload!r}; choose one of "
                            f"{', '.join(WORKLOADS)}.")
    return tuple(f.name for f in fields(WORKLOADS[workload]))


def all_parameter_names() -> tuple[str, ...]:
    """Every workload parameter, once, in the order the workloads declare them."""
    return tuple(dict.fromkeys(name for workload in WORKLOADS
                               for name in parameter_names(workload)))


def param_help(name: str) -> str:
    """What the parameter `name` means in each workload that takes it, with its default."""
    parts = [f"{workload}: {f.metadata['help']} (default {value_text(f.default)})"
             for workload, cls in WORKLOADS.items() for f in fields(cls) if f.name == name]
    if not parts:
        raise KeyError(name)
    return "; ".join(parts) + "."


def workload_params(workload: str, given: dict[str, Any],
                    spell: Callable[[str], str] = as_name) -> Any:
    """The parameter record of `workload` from the values given (the rest defaulted).
    ParameterError on a name the workload does not take, WorkloadError on a value out of
    range; `spell` writes parameter names in the messages (`option` on the command line)."""
    takes = parameter_names(workload)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    unknown = [name for name in given if name not in takes]
    if unknown:
        renamed = RENAMED.get(workload, {})
        hints = [f"{spell(old)} is now {spell(renamed[old])}" for old in unknown
                 if old in renamed]
        raise ParameterError(
            f"{and_list([spell(name) for name in unknown])} "
            f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} of "
            f"{workload}{' (' + '; '.join(hints) + ')' if hints else ''}; {workload} takes "
            f"{', '.join(spell(name) for name in takes)}.")
    params = WORKLOADS[workload](**given)
    for f in fields(params):
        value = getattr(params, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if f.name != "activation" and any(isinstance(v, bool) or not isinstance(v, int)
                                          or v < 1 for v in values):
            raise WorkloadError(f"{workload}: {spell(f.name)} must be a positive integer, "
                                f"not {value_text(value)}.")
    if isinstance(params, Mlp):
        if len(params.widths) < 2:
            raise WorkloadError(f"mlp: {spell('widths')} needs at least two values (input "
                                f"and output).")
        if params.activation not in ACTIVATIONS:
            raise WorkloadError(f"mlp: {spell('activation')} must be one of "
                                f"{', '.join(ACTIVATIONS)}, not {params.activation!r}.")
    if isinstance(params, Conv2d) and (params.h < params.r or params.w < params.s):
        raise WorkloadError(f"conv2d: the kernel ({spell('r')} {params.r}, {spell('s')} "
                            f"{params.s}) is larger than the image ({spell('h')} {params.h}, "
                            f"{spell('w')} {params.w}).")
    return params


def defaulted(workload: str, given: dict[str, Any]) -> tuple[str, ...]:
    """The parameters of `workload` that `given` leaves to their defaults, in order."""
    return tuple(name for name in parameter_names(workload) if name not in given)
