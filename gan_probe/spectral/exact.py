"""The exact spectrum of M = J^T J from the singular values of J, in float64.

ln det M = 2 sum_i ln s_i(J). J is promoted to float64 and reduced by a QR
(J = Q R, R is nz x nz) before the SVD of R; J^T J is never formed, so
condition numbers of M far beyond 1/eps(float32) keep their accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.spectral.jacobian import Fn, jacobian


@dataclass
class Spectrum:
    """Singular values of J per sample, with what follows from them.

    ``singular``: s_min is zero to float64 working precision (rank-deficient J),
    so ln det M = -inf. ``precision_warning``: s_min lies below the rounding
    level of the dtype J was computed in, so the small end of the spectrum is
    dominated by rounding; ``--dtype float64`` removes it.
    """

    singular_values: torch.Tensor  # (B, nz) float64, descending
    singular: torch.Tensor  # (B,) bool
    precision_warning: torch.Tensor  # (B,) bool

    @property
    def eigenvalues(self) -> torch.Tensor:
        """(B, nz) eigenvalues lambda_i = s_i^2 of M, descending."""
        return self.singular_values**2

    @property
    def half_logdet(self) -> torch.Tensor:
        """(B,) 1/2 ln det M = sum ln s_i; -inf where singular."""
        s = self.singular_values
        value = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny)).sum(-1)
        return torch.where(self.singular, torch.full_like(value, -math.inf), value)

    @property
    def lambda_max(self) -> torch.Tensor:
        return self.eigenvalues[:, 0]

    @property
    def lambda_min(self) -> torch.Tensor:
        return torch.where(self.singular, torch.zeros_like(self.lambda_max), self.eigenvalues[:, -1])

    @property
    def condition(self) -> torch.Tensor:
        """(B,) lambda_max / lambda_min of M; inf where singular."""
        lmin = self.lambda_min
        return torch.where(lmin > 0, self.lambda_max / lmin.clamp_min(1e-300), torch.full_like(lmin, math.inf))


def singular_values(jac: torch.Tensor) -> torch.Tensor:
    """(B, N, nz) -> (B, nz) float64 singular values, descending; zeros pad when N < nz."""
    j64 = jac.detach().to(torch.float64)
    batch, n, nz = j64.shape
    if n > nz:
        j64 = torch.linalg.qr(j64, mode="r").R
    s = torch.linalg.svdvals(j64)
    if s.shape[-1] < nz:
        s = torch.cat([s, s.new_zeros(batch, nz - s.shape[-1])], dim=-1)
    return s


def spectrum_from_jacobian(jac: torch.Tensor) -> Spectrum:
    """The :class:`Spectrum` of M = J^T J for J of shape (B, N, nz)."""
    s = singular_values(jac)
    n, nz = jac.shape[-2:]
    s_max = s[:, 0]
    s_min = s[:, -1]
    size = max(n, nz)
    singular = (s_max <= 0) | (s_min <= s_max * size * torch.finfo(torch.float64).eps)
    working_eps = torch.finfo(jac.dtype).eps if jac.dtype.is_floating_point else 0.0
    precision_warning = ~singular & (s_min <= s_max * math.sqrt(size) * working_eps)
    return Spectrum(s, singular, precision_warning)


def exact_spectrum(fn: Fn, z: torch.Tensor, *, chunk_size: int | None = None) -> Spectrum:
    """Exact spectrum of M(z) for a batch z (B, nz) of a flat map fn: (B, nz) -> (B, N)."""
    with torch.no_grad():
        return spectrum_from_jacobian(jacobian(fn, z, chunk_size=chunk_size))


def logdet_from_jacobian(jac: torch.Tensor) -> torch.Tensor:
    """Differentiable ln det M for J (B, N, nz) built with autograd (spectral backpropagation).

    Value: 2 sum ln s_i from float64. Gradient: d ln det M = 2 tr(J^+ dJ), taken
    through the surrogate 2 <stopgrad(J (J^T J)^{-1}), J> with
    J (J^T J)^{-1} = Q R^{-T} from the QR of J (never inverting J^T J).
    Returns (B,) in float64.
    """
    j64 = jac.to(torch.float64)
    with torch.no_grad():
        q, r = torch.linalg.qr(j64.detach(), mode="reduced")
        # Q R^{-T}: solve R^T X^T = Q^T, i.e. X = Q R^{-T}
        pinv_t = torch.linalg.solve_triangular(r, q.transpose(-1, -2), upper=True, left=True).transpose(-1, -2)
        value = 2 * torch.log(torch.linalg.svdvals(r).clamp_min(1e-300)).sum(-1)
    surrogate = 2 * (pinv_t * j64).sum(dim=(-2, -1))
    return value + surrogate - surrogate.detach()
