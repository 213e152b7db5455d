"""Exact eigen-decomposition of the metric M = J^T J, in float64, from the SVD of J.

Ramesh & LeCun (2018), section 5: the eigenvectors v_i of M(z) are the latent
directions along which G changes fastest, |G(z + t v_i) - G(z)| ~ |t| sqrt(lambda_i).

With J = U S V^T, M = V S^2 V^T: the eigenvalues are lambda_i = s_i^2 and the
eigenvectors are the right singular vectors of J. J is promoted to float64 and
reduced by a QR first (R is nz x nz, same right singular vectors); J^T J is
never formed, so eigenvectors belonging to eigenvalues far below
eps * lambda_max keep their accuracy (``eigh`` of a float32 J^T J would not).

Sign convention (eigenvectors are unique only up to sign): each v_i is flipped
so that its component of largest magnitude is positive (the convention of
scikit-learn's ``svd_flip``). Eigenvectors of repeated eigenvalues are not
unique beyond that; trained generators have simple spectra almost surely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.spectral.exact import Spectrum, spectrum_from_jacobian
from gan_probe.spectral.jacobian import Fn, jacobian


@dataclass
class Eigen:
    """Eigen-decomposition of M(z) for a batch of latents.

    ``eigenvectors[b, :, i]`` is the unit eigenvector v_i of M(z_b) for the
    eigenvalue ``eigenvalues[b, i]`` (descending), float64, signs fixed by
    :func:`fix_signs`.
    """

    spectrum: Spectrum
    eigenvectors: torch.Tensor  # (B, nz, nz) float64, columns are eigenvectors

    @property
    def eigenvalues(self) -> torch.Tensor:
        """(B, nz) float64 eigenvalues lambda_1 >= ... >= lambda_nz >= 0."""
        return self.spectrum.eigenvalues

    @property
    def condition(self) -> torch.Tensor:
        """(B,) lambda_max / lambda_min; inf where M is singular."""
        return self.spectrum.condition


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip columns of (..., n, k) so that each column's largest-magnitude entry is positive.

    Ties in magnitude resolve to the first index (``argmax``), so the result is
    a deterministic function of the input.
    """
    idx = vectors.abs().argmax(dim=-2, keepdim=True)  # (..., 1, k)
    lead = torch.gather(vectors, -2, idx)
    sign = torch.where(lead < 0, -1.0, 1.0).to(vectors.dtype)
    return vectors * sign


def right_singular_vectors(jac: torch.Tensor) -> torch.Tensor:
    """(B, N, nz) -> V (B, nz, nz) float64, columns ordered by descending singular value.

    When N < nz the trailing columns span the null space of J (eigenvalue 0).
    """
    j64 = jac.detach().to(torch.float64)
    n, nz = j64.shape[-2:]
    if n > nz:
        j64 = torch.linalg.qr(j64, mode="r").R  # same right singular vectors, nz x nz
    _, _, vh = torch.linalg.svd(j64, full_matrices=True)
    return vh.transpose(-1, -2)


def eigen_from_jacobian(jac: torch.Tensor) -> Eigen:
    """The eigen-decomposition of M = J^T J for J of shape (B, N, nz)."""
    return Eigen(spectrum_from_jacobian(jac), fix_signs(right_singular_vectors(jac)))


def exact_eigen(fn: Fn, z: torch.Tensor, *, chunk_size: int | None = None) -> Eigen:
    """Eigenvalues and eigenvectors of M(z) for a batch z (B, nz) of a flat map fn: (B, nz) -> (B, N)."""
    with torch.no_grad():
        return eigen_from_jacobian(jacobian(fn, z, chunk_size=chunk_size))


def spectrum_concentration(eigenvalues: torch.Tensor, top: int) -> dict[str, torch.Tensor]:
    """How concentrated each spectrum (B, nz) is; every entry is (B,) float64.

    - ``top_share``: sum of the top ``top`` eigenvalues over the trace, in [0, 1].
    - ``participation_ratio``: (sum lambda)^2 / sum lambda^2, between 1 (one
      direction) and nz (flat spectrum).
    - ``effective_rank``: exp of the entropy of p_i = lambda_i / sum lambda
      (Roy & Vetterli 2007), also between 1 and nz.

    All are NaN for an all-zero spectrum (JSON null).
    """
    lam = eigenvalues.to(torch.float64).clamp_min(0.0)
    trace = lam.sum(-1)
    safe = torch.where(trace > 0, trace, torch.ones_like(trace))
    p = lam / safe[:, None]
    entropy = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)
    out = {
        "top_share": lam[:, :top].sum(-1) / safe,
        "participation_ratio": trace**2 / torch.where(trace > 0, (lam**2).sum(-1), torch.ones_like(trace)),
        "effective_rank": torch.exp(entropy),
    }
    nan = torch.full_like(trace, math.nan)
    return {k: torch.where(trace > 0, v, nan) for k, v in out.items()}


__all__ = [
    "Eigen",
    "eigen_from_jacobian",
    "exact_eigen",
    "fix_signs",
    "right_singular_vectors",
    "spectrum_concentration",
]
