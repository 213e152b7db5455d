"""Latent perturbations shared by ``eigvecs`` and ``veff``: the step alpha, random unit directions, the box.

Step size: the paper used alpha = 0.4-0.8 for a uniform prior on [-1, 1]
(Ramesh & LeCun 2018, section 5). The default here is 0.8 times the half-width
of a uniform box, and 0.8 sigma for a normal prior. Perturbed latents of a
uniform prior may leave the box; they are counted, and ``project=True`` clamps
them back into it (which bends the direction: off by default).
"""

from __future__ import annotations

import math

import torch

from gan_probe.analyses.common import check_positive, seeded_generator
from gan_probe.errors import GanProbeError
from gan_probe.models.priors import Prior

#: alpha = STEP_FRACTION x (half-width of a uniform box | sigma of a normal prior); the paper's upper value.
STEP_FRACTION = 0.8


def default_step(prior: Prior) -> float:
    """The default perturbation step alpha for ``prior`` (paper: 0.4-0.8 on U[-1, 1])."""
    if prior.kind == "uniform":
        return STEP_FRACTION * 0.5 * (prior.high - prior.low)
    return STEP_FRACTION * prior.scale  # sigma of a normal prior; the spread of one coordinate of mapped draws


def resolve_step(prior: Prior, step: float | None) -> float:
    """``step`` if given (finite, > 0), else :func:`default_step`."""
    if step is None:
        return default_step(prior)
    if not math.isfinite(step):
        raise GanProbeError(f"the step alpha must be a finite number, got {step}", param="step")
    check_positive("the step alpha", step, "step")
    return float(step)


def random_unit_directions(num: int, count: int, nz: int, *, seed: int) -> torch.Tensor:
    """(num, count, nz) float64 directions uniform on the unit sphere (normalised Gaussians), seeded."""
    eps = torch.randn(num, count, nz, generator=seeded_generator(seed), dtype=torch.float64)
    return eps / eps.norm(dim=-1, keepdim=True)


def perturb(prior: Prior, z: torch.Tensor, *, project: bool) -> tuple[torch.Tensor, int]:
    """(perturbed latents, how many of them lie outside a uniform prior's box before any projection)."""
    outside = 0
    if prior.kind == "uniform":
        outside = int(((z < prior.low) | (z > prior.high)).any(-1).sum())
        if project:
            z = prior.project(z)
    return z, outside


__all__ = ["STEP_FRACTION", "default_step", "perturb", "random_unit_directions", "resolve_step"]
