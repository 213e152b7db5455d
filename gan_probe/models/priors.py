"""Latent priors P_Z: an isotropic normal or a uniform box."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        if self.kind not in ("normal", "uniform"):
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
