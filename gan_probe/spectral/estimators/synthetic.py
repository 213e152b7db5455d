"""Synthetic spectra with known ln det, the dense references the estimators are measured against.

A linear map A = U diag(sqrt(lambda)) V^T with Haar-random orthogonal U, V
(QR of Gaussian matrices) has M = A^T A = V diag(lambda) V^T, so
1/2 ln det M = 1/2 sum_i ln lambda_i exactly. ``log_spaced_spectrum`` puts
the eigenvalues of M log-spaced from lam_max down to lam_max / cond, the
hardest case for polynomial and quadrature estimators: half of the spectrum
sits in the bottom few decades.
"""

from __future__ import annotations

import math

import torch


def log_spaced_spectrum(
    nz: int, cond: float, *, seed: int = 0, lam_max: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A (nz, nz) float64, lambda (nz,) descending, exact 1/2 ln det A^T A) with cond(A^T A) = ``cond``."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(nz, nz, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(nz, nz, generator=gen, dtype=torch.float64))
    lam = lam_max * torch.logspace(0, -math.log10(cond), nz, dtype=torch.float64)
    a = (u * lam.sqrt()) @ v.T
    return a, lam, 0.5 * float(torch.log(lam).sum())


__all__ = ["log_spaced_spectrum"]
