"""Latent priors P_Z: an isotropic normal, a uniform box, or (for w and w+) the mapped normal.

A StyleGAN2's w space has no closed-form prior: its points are mapped prior
draws w = f(z), z ~ N(0, I) (docs/design.md §1.5). :class:`MappedPrior` draws
them through the generator's mapping network and has no log-density.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gan_probe.errors import CheckpointError


@dataclass(frozen=True)
class Prior:
    """``normal``: N(0, sigma^2 I). ``uniform``: U([low, high]^nz)."""

    kind: str = "normal"
    sigma: float = 1.0
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("normal", "uniform", "mapped"):
            raise CheckpointError(f"unknown prior {self.kind!r}: use --prior normal or --prior uniform")
        if self.kind == "normal" and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise CheckpointError(f"prior sigma must be a positive number, got {self.sigma} (--sigma)")
        if self.kind == "uniform" and not (
            math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high
        ):
            raise CheckpointError(f"uniform prior needs low < high, got [{self.low}, {self.high}] (--low/--high)")

    @classmethod
    def from_meta(cls, meta: dict) -> Prior:
        kind = meta.get("kind", "normal")
        if kind == "normal":
            return cls("normal", sigma=float(meta.get("sigma", 1.0)))
        return cls(kind, low=float(meta.get("low", -1.0)), high=float(meta.get("high", 1.0)))

    def to_meta(self) -> dict:
        if self.kind == "normal":
            return {"kind": "normal", "sigma": self.sigma}
        return {"kind": "uniform", "low": self.low, "high": self.high}

    def describe(self) -> str:
        if self.kind == "normal":
            return f"normal(0, {self.sigma:g}^2 I)"
        return f"uniform([{self.low:g}, {self.high:g}]^nz)"

    @property
    def center(self) -> float:
        return 0.0 if self.kind == "normal" else 0.5 * (self.low + self.high)

    @property
    def scale(self) -> float:
        """Standard deviation of one coordinate (moment-matched for the box)."""
        if self.kind == "normal":
            return self.sigma
        return (self.high - self.low) / math.sqrt(12.0)

    def sample(self, num: int, nz: int, *, generator: torch.Generator) -> torch.Tensor:
        """(num, nz) float64 latents drawn on the CPU, so a seed means the same on every device."""
        if self.kind == "normal":
            return self.sigma * torch.randn(num, nz, generator=generator, dtype=torch.float64)
        u = torch.rand(num, nz, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """ln P_Z(z) for z of shape (B, nz); -inf outside a uniform box. Returns (B,)."""
        nz = z.shape[-1]
        if self.kind == "normal":
            return -(z * z).sum(-1) / (2 * self.sigma**2) - 0.5 * nz * math.log(2 * math.pi * self.sigma**2)
        inside = ((z >= self.low) & (z <= self.high)).all(-1)
        value = torch.full(z.shape[:-1], -nz * math.log(self.high - self.low), dtype=z.dtype, device=z.device)
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Projection onto the support (a no-op for the normal prior)."""
        if self.kind == "uniform":
            return z.clamp(self.low, self.high)
        return z


@dataclass(frozen=True)
class MappedPrior(Prior):
    """The distribution of mapped prior draws in a StyleGAN2's w or w+ space (no closed-form density).

    ``mapper`` maps standard-normal z (N, z_dim) float64 to latents (N, nz)
    float64 of this space (mapping network, truncation, and for w+ one w copied
    to every layer). ``std`` is the root-mean-square standard deviation of one
    coordinate, for step sizes; ``center`` is 0 (the mean w is not a scalar).
    """

    kind: str = "mapped"
    space: str = "w"
    z_dim: int = 0
    truncation: float = 1.0
    std: float = 1.0
    mapper: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def to_meta(self) -> dict:
        return {"kind": "mapped", "space": self.space, "truncation": self.truncation, "z": "normal(0, I)"}

    def describe(self) -> str:
        psi = f", truncation {self.truncation:g}" if self.truncation != 1.0 else ""
        return f"{self.space} = mapping(z), z ~ normal(0, I){psi}"

    @property
    def center(self) -> float:
        return 0.0

    @property
    def scale(self) -> float:
        return self.std

    def map_z(self, z: torch.Tensor) -> torch.Tensor:
        """Prior latents z (N, z_dim) -> points of this space (N, nz), float64 on the CPU."""
        if self.mapper is None:
            raise CheckpointError("this mapped prior has no mapping network")
        return self.mapper(z.to(torch.float64))

    def sample(self, num: int, nz: int, *, generator: torch.Generator) -> torch.Tensor:
        """(num, nz) mapped draws: z ~ N(0, I) drawn on the CPU from ``generator``, then mapped."""
        z = torch.randn(num, self.z_dim, generator=generator, dtype=torch.float64)
        return self.map_z(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """No closed form in w: NaN (the analyses that need ln P_Z work in z)."""
        return torch.full(z.shape[:-1], math.nan, dtype=z.dtype, device=z.device)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return z
