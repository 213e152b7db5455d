"""Stochastic estimators of ln det M, M = J^T J, from matrix-vector products only.

One module per family, named after its paper:

- :mod:`.chebyshev` -- Han, Malioutov, Avron & Shin (2017), the algorithm of
  Ramesh & LeCun (2018, Algorithm 1) with its scale term corrected;
- :mod:`.taylor` -- Boutsidis, Drineas, Kambadur, Kontopoulou & Zouzias (2017);
- :mod:`.slq` -- stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) by
  Golub-Kahan bidiagonalisation of J itself.

Every estimator works on a batch of latents z (B, nz) with all probes batched
(vmap over probes; no Python loop per probe), draws Rademacher probes from
explicit ``torch.Generator`` s, accumulates in float64, and returns a
:class:`LogdetEstimate` holding **1/2 ln det M** per latent (the quantity in
ln Q = ln P_Z - 1/2 ln det M), differentiable w.r.t. z and the generator's
parameters when grad mode is on ("spectral backpropagation").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gan_probe.errors import GanProbeError

ESTIMATORS = ("chebyshev", "taylor", "slq")

#: One generator for the whole batch, or one per latent (results then do not depend on batching).
Generators = torch.Generator | Sequence[torch.Generator]


@dataclass(frozen=True)
class EstimatorParams:
    """Budgets of the stochastic estimators (defaults: the paper's Chebyshev setting, ~220 products).

    ``m`` degree, ``p`` probes, ``t`` power iterations (or Lanczos steps for
    ``eps="auto"``), ``g`` multiplier on the estimated lambda_max, ``eps`` lower
    spectral bound mu (a float or ``"auto"``) -- Chebyshev and Taylor.
    ``steps`` Lanczos (Golub-Kahan) steps and ``probes`` -- SLQ (default 50 x 4 =
    200 products: on ill-conditioned spectra the quadrature bias of few steps
    dominates the probe variance, so steps buy more than probes); ``confidence``
    the level of SLQ's interval.
    """

    m: int = 10
    p: int = 20
    t: int = 20
    g: float = 1.2
    eps: float | str = 0.1
    steps: int = 50
    probes: int = 4
    confidence: float = 0.95

    def validate(self) -> EstimatorParams:
        for name, flag in (("m", "--m"), ("p", "--p"), ("t", "--t"), ("steps", "--steps"), ("probes", "--probes")):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise GanProbeError(f"{name} must be an integer >= 1, got {value!r} ({flag})")
        if not (isinstance(self.g, (int, float)) and math.isfinite(self.g) and self.g >= 1):
            raise GanProbeError(f"g must be >= 1, got {self.g!r} (--g)")
        if isinstance(self.eps, str):
            if self.eps != "auto":
                raise GanProbeError(f"eps must be a positive number or 'auto', got {self.eps!r} (--eps)")
        elif not (math.isfinite(self.eps) and self.eps > 0):
            raise GanProbeError(f"eps must be > 0 or 'auto', got {self.eps!r} (--eps)")
        if not 0 < self.confidence < 1:
            raise GanProbeError(f"confidence must lie in (0, 1), got {self.confidence!r} (--confidence)")
        if self.probes < 2:
            raise GanProbeError(f"slq needs at least 2 probes for its interval, got {self.probes} (--probes)")
        return self


@dataclass
class LogdetEstimate:
    """An estimate of 1/2 ln det M per latent.

    ``half_logdet`` (B,) float64, differentiable when grad mode was on;
    ``stderr`` (B,) the probe standard error (Hutchinson variance only, not the
    polynomial/quadrature bias); ``interval`` (B, 2) a confidence interval
    (SLQ); ``num_matvecs`` products with M per latent (one JVP + one VJP each);
    ``bounds_violated`` (B,) the spectrum is known to leave the interval the
    polynomial was built on; ``lambda_max`` (B,) the estimate used for the
    bounds; ``extras`` per-latent tensors specific to the method.
    """

    method: str
    half_logdet: torch.Tensor
    num_matvecs: int
    stderr: torch.Tensor | None = None
    interval: torch.Tensor | None = None
    bounds_violated: torch.Tensor | None = None
    lambda_max: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


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
        bits = torch.randint(0, 2, (num, batch, nz), generator=generator)
    else:
        bits = torch.stack([torch.randint(0, 2, (num, nz), generator=g) for g in gens], dim=1)
    return bits.to(torch.float64).mul_(2).sub_(1)


def draw_normal(generator: Generators, batch: int, nz: int) -> torch.Tensor:
    """(batch, nz) float64 standard normal start vectors on the CPU."""
    gens = _generator_list(generator, batch)
    if gens is None:
        return torch.randn(batch, nz, generator=generator, dtype=torch.float64)
    return torch.stack([torch.randn(nz, generator=g, dtype=torch.float64) for g in gens])


def probe_statistics(per_probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, B) per-probe estimates -> (mean (B,), standard error (B,)) in float64."""
    num = per_probe.shape[0]
    mean = per_probe.mean(0)
    if num < 2:
        return mean, torch.full_like(mean, math.nan)
    return mean, per_probe.detach().std(0, unbiased=True) / math.sqrt(num)


def estimate_half_logdet(
    fn, z: torch.Tensor, method: str, params: EstimatorParams, generator: Generators
) -> LogdetEstimate:
    """Dispatch to ``chebyshev``, ``taylor`` or ``slq`` with the budgets in ``params``."""
    from gan_probe.spectral.estimators.chebyshev import chebyshev_logdet
    from gan_probe.spectral.estimators.slq import slq_logdet
    from gan_probe.spectral.estimators.taylor import taylor_logdet

    params.validate()
    if method == "chebyshev":
        return chebyshev_logdet(
            fn, z, m=params.m, p=params.p, t=params.t, g=params.g, eps=params.eps, generator=generator
        )
    if method == "taylor":
        return taylor_logdet(fn, z, m=params.m, p=params.p, t=params.t, g=params.g, generator=generator)
    if method == "slq":
        return slq_logdet(
            fn, z, steps=params.steps, probes=params.probes, confidence=params.confidence, generator=generator
        )
    raise GanProbeError(f"unknown estimator {method!r}: use one of {', '.join(ESTIMATORS)} (--method)")


__all__ = [
    "ESTIMATORS",
    "EstimatorParams",
    "LogdetEstimate",
    "draw_normal",
    "draw_rademacher",
    "estimate_half_logdet",
    "probe_statistics",
]
