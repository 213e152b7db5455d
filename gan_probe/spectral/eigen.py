"""Eigenvectors of the metric M = J^T J and how concentrated its spectrum is.

Ramesh & LeCun (2018), section 5: the eigenvectors v_i of M(z) are the latent
directions along which G changes fastest, |G(z + t v_i) - G(z)| ~ |t| sqrt(lambda_i).
With J = U S V^T, M = V S^2 V^T: they are the right singular vectors of J,
taken by the dense route (:func:`gan_probe.spectral.exact.spectrum_from_jacobian`,
float64, QR first, J^T J never formed), so eigenvectors of eigenvalues far
below eps * lambda_max keep their accuracy (or by the Gram route when the run's
plan takes it: :func:`gan_probe.spectral.route.exact_spectrum`).

Sign convention (docs/design.md §5; eigenvectors are unique only up to
sign): each v_i is flipped so that its component of largest magnitude is
positive (scikit-learn's ``svd_flip``). Eigenvectors of repeated eigenvalues
are not unique beyond that; trained generators have simple spectra almost surely.
"""

from __future__ import annotations

import math

import torch

from gan_probe.spectral.exact import Spectrum
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip columns of (..., n, k) so that each column's largest-magnitude entry is positive.

    Ties in magnitude resolve to the first index (``argmax``), so the result is
    a deterministic function of the input.
    """
    idx = vectors.abs().argmax(dim=-2, keepdim=True)  # (..., 1, k)
    lead = torch.gather(vectors, -2, idx)
    sign = torch.where(lead < 0, -1.0, 1.0).to(vectors.dtype)
    return vectors * sign


def exact_eigen(op: JacobianOperator, *, route: str = "dense", block: int | None = None) -> Spectrum:
    """The exact spectrum of M(z) with its eigenvectors (columns, descending, signs fixed), by ``route``
    (dense or gram, ``block`` columns per JVP-VJP pair: a run passes its plan's)."""
    spec = exact_spectrum(op, route=route, block=block, vectors=True)
    assert spec.eigenvectors is not None
    spec.eigenvectors = fix_signs(spec.eigenvectors)
    return spec


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


__all__ = ["exact_eigen", "fix_signs", "spectrum_concentration"]
