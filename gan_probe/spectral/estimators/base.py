"""What every estimator shares: the result type, probe draws, the parameter fields and the registry.

An estimator is registered once (:func:`register`) with its frozen parameter
dataclass, whose field defaults are the single source of its defaults: the
command line builds its options from those fields (:func:`param` carries the
flag and help text), ``bench`` and the tests read them from there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gan_probe.errors import GanProbeError
from gan_probe.limits import check_count
from gan_probe.spectral.operator import JacobianOperator

#: One generator for the whole batch, or one per latent (results then do not depend on batching).
Generators = torch.Generator | Sequence[torch.Generator]


def param(default: Any, help: str, *, flag: str | None = None, cli_type: type | None = None) -> Any:
    """A parameter field: its default, a one-line help and the command-line flag (default ``--NAME``).

    ``cli_type``: the type the command line reads when it differs from the
    field's own (``eps`` is read as text: a number or ``auto``).
    """
    return field(default=default, metadata={"help": help, "flag": flag, "cli_type": cli_type})


@dataclass
class LogdetEstimate:
    """An estimate of 1/2 ln det M per latent.

    ``half_logdet`` (B,) float64, differentiable when grad mode was on;
    ``stderr`` (B,) the probe standard error (Hutchinson variance only, not the
    polynomial/quadrature bias); ``interval`` (B, 2) a confidence interval
    (SLQ); ``num_matvecs`` products with M per latent (one JVP + one VJP each);
    ``bounds_violated`` (B,) the spectrum can leave the interval the
    polynomial was built on (docs/design.md §3.5); ``lambda_max`` (B,) the
    estimate used for the bounds; ``extras`` per-latent tensors specific to the method.
    """

    method: str
    half_logdet: torch.Tensor
    num_matvecs: int
    stderr: torch.Tensor | None = None
    interval: torch.Tensor | None = None
    bounds_violated: torch.Tensor | None = None
    lambda_max: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class EstimatorFn(Protocol):
    def __call__(self, op: JacobianOperator, params: Any, *, generator: Generators) -> LogdetEstimate: ...


@dataclass(frozen=True)
class Estimator:
    """A registered estimator: ``name``, its parameter dataclass ``params`` (defaults = the single source),
    the function ``run(op, params, generator=...)``, its products per latent, and a one-line ``summary``."""

    name: str
    params: type
    run: EstimatorFn
    num_products: Callable[[Any], int]
    summary: str

    def default_params(self) -> Any:
        return self.params()


REGISTRY: dict[str, Estimator] = {}


def register(estimator: Estimator) -> Estimator:
    if estimator.name in REGISTRY or estimator.name in ("exact", "auto"):
        raise ValueError(f"estimator name {estimator.name!r} is taken")
    REGISTRY[estimator.name] = estimator
    return estimator


def check_int(method: str, name: str, value: object, low: int = 1, *, high: int) -> None:
    """Raise unless ``value`` is an int in [low, high] (a parameter of ``method``; the bounds of
    :mod:`gan_probe.limits`)."""
    check_count(value, f"{method} {name}", param=f"{method}.{name}", low=low, high=high)


def check_float(method: str, name: str, value: object, *, low: float, high: float = math.inf, open_low: bool) -> None:
    """Raise unless ``value`` is a finite number in (low, high) / [low, high)."""
    ok = False
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        ok = (value > low if open_low else value >= low) and value < high
    if not ok:
        bound = f"{'>' if open_low else '>='} {low:g}" + (f" and < {high:g}" if math.isfinite(high) else "")
        raise GanProbeError(f"{method} {name} must be a finite number {bound}, got {value!r}", param=f"{method}.{name}")


def params_json(params: Any) -> dict[str, Any]:
    """A parameter dataclass as plain JSON."""
    return dataclasses.asdict(params)


def _generator_list(generator: Generators, batch: int) -> list[torch.Generator] | None:
    if isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for {batch} latents")
    return gens


def draw_rademacher(generator: Generators, num: int, batch: int, nz: int) -> torch.Tensor:
    """(num, batch, nz) float64 Rademacher (+-1) probes on the CPU.

    With one generator per latent, latent b's probes come from its own stream,
    so an estimate does not depend on how latents are batched.
    """
    gens = _generator_list(generator, batch)
    if gens is None:
        bits = torch.randint(0, 2, (num, batch, nz), generator=generator)  # type: ignore[arg-type]
    else:
        bits = torch.stack([torch.randint(0, 2, (num, nz), generator=g) for g in gens], dim=1)
    return bits.to(torch.float64).mul_(2).sub_(1)


def probe_statistics(per_probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, B) per-probe estimates -> (mean (B,), standard error (B,)) in float64."""
    num = per_probe.shape[0]
    mean = per_probe.mean(0)
    if num < 2:
        return mean, torch.full_like(mean, math.nan)
    return mean, per_probe.detach().std(0, unbiased=True) / math.sqrt(num)


__all__ = [
    "REGISTRY",
    "Estimator",
    "Generators",
    "LogdetEstimate",
    "check_float",
    "check_int",
    "draw_rademacher",
    "param",
    "params_json",
    "probe_statistics",
    "register",
]
