r"""Golub-Kahan bidiagonalisation of J, and the spectral bounds of M read off it.

Golub & Kahan (1965). For a start vector v, k steps on J give
J V_k = U_k B_k and J^T U_k = V_k B_k^T + beta_k v_{k+1} e_k^T, with B_k upper
bidiagonal (alphas on the diagonal, betas above), so that

.. math::

    M V_k = V_k T_k + \alpha_k \beta_k v_{k+1} e_k^T, \qquad T_k = B_k^T B_k :

T_k is the Lanczos matrix of M = J^T J, its eigenvalues (the Ritz values
theta_i = s_i(B_k)^2) lie inside [lambda_min, lambda_max], and the Ritz pair
(theta_i, y_i) has residual rho_i = |alpha_k beta_k y_i[k]|: an eigenvalue of
M lies within rho_i of theta_i. :func:`spectral_bounds` turns that into the
bounds the polynomial estimators are built on and the evidence for their
``bounds_violated`` flag (docs/design.md §3.5). Working on J rather than M
sees singular values, so a condition number of 1e7 in M is 3e3 in J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.spectral.estimators.base import Generators, draw_rademacher
from gan_probe.spectral.operator import JacobianOperator


@dataclass
class Bidiagonalisation:
    """k Golub-Kahan steps for P probes x B latents.

    ``alpha`` (P, B, k), ``beta`` (P, B, k-1) float64; ``u`` (k, P, B, N) the
    left basis; ``norm`` (P, B) |v|; ``num_matvecs`` products with M per probe;
    ``last_beta`` (P, B) beta_k, the coupling to the next step (0 after a
    breakdown; only with ``residual=True``).
    """

    alpha: torch.Tensor
    beta: torch.Tensor
    u: torch.Tensor
    norm: torch.Tensor
    num_matvecs: int
    last_beta: torch.Tensor | None = None

    def bidiagonal(self) -> torch.Tensor:
        """(P, B, k, k) upper bidiagonal B_k."""
        k = self.alpha.shape[-1]
        mat = torch.diag_embed(self.alpha)
        if k > 1:
            mat = mat + torch.diag_embed(self.beta, offset=1)
        return mat


def _reorthogonalise(r: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove from r (P, B, n) its components along basis (j, P, B, n), twice (CGS2)."""
    for _ in range(2):
        r = r - torch.einsum("jpbn,jpb->pbn", basis, torch.einsum("jpbn,pbn->jpb", basis, r))
    return r


def golub_kahan(op: JacobianOperator, v: torch.Tensor, steps: int, *, residual: bool = False) -> Bidiagonalisation:
    """Golub-Kahan bidiagonalisation of J(z) from start vectors v (P, B, nz), full reorthogonalisation.

    Runs without autograd. Breakdown (an invariant subspace: always by step nz)
    is handled per probe by decoupling the remaining steps (alpha = 1,
    beta = 0), which adds quadrature nodes of zero weight. ``residual`` takes
    one more product with J^T for beta_k (the Ritz residuals).
    """
    steps = min(steps, op.nz)
    with torch.no_grad():
        op = op.detached()
        norm = v.norm(dim=-1)
        vj = v / norm[..., None]
        vs: list[torch.Tensor] = [vj]
        us: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        betas: list[torch.Tensor] = []
        u = op.jvp(vj).to(torch.float64)
        alive = torch.ones_like(norm, dtype=torch.bool)
        scale: torch.Tensor | None = None
        last_beta = None
        for j in range(steps):
            if us:
                u = _reorthogonalise(u - betas[-1][..., None] * us[-1], torch.stack(us))
            a = u.norm(dim=-1)
            scale = a.clamp_min(1e-300) if scale is None else torch.maximum(scale, a)
            # alpha -> 0: J is singular on the Krylov space; keep the tiny value (ln det -> very negative)
            a = torch.where(alive, a, torch.ones_like(a))
            us.append(torch.where(alive[..., None], u / a.clamp_min(1e-300)[..., None], torch.zeros_like(u)))
            alphas.append(a)
            if j == steps - 1 and not residual:
                break
            r = op.vjp(us[-1]).to(torch.float64) - a[..., None] * vs[-1]
            r = _reorthogonalise(r, torch.stack(vs))
            b = r.norm(dim=-1)
            broke = alive & (b <= scale * 1e-12 * math.sqrt(op.nz))
            alive = alive & ~broke
            b = torch.where(alive, b, torch.zeros_like(b))
            if j == steps - 1:
                last_beta = b
                break
            vs.append(torch.where(alive[..., None], r / b.clamp_min(1e-300)[..., None], torch.zeros_like(r)))
            betas.append(b)
            u = op.jvp(vs[-1]).to(torch.float64)
        alpha = torch.stack(alphas, -1)
        beta = torch.stack(betas, -1) if betas else alpha.new_zeros(*alpha.shape[:-1], 0)
        return Bidiagonalisation(alpha, beta, torch.stack(us), norm, len(alphas), last_beta)


def ritz_pairs(bd: Bidiagonalisation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Ritz values (P, B, k) descending, weights y_i[1]^2 (P, B, k), last components y_i[k] (P, B, k)).

    Nodes of zero weight come from decoupled steps after a breakdown: they are not Ritz values of M.
    """
    _, s, yh = torch.linalg.svd(bd.bidiagonal())
    return s**2, yh[..., :, 0] ** 2, yh[..., :, -1]


@dataclass
class SpectralBounds:
    """Extreme Ritz values of M per latent with their residuals, all (B,) float64.

    ``theta_min <= ... <= theta_max`` lie inside [lambda_min, lambda_max];
    ``rho_min``/``rho_max``: an eigenvalue of M lies within rho of each.
    ``num_products`` products with M per latent.
    """

    theta_min: torch.Tensor
    theta_max: torch.Tensor
    rho_min: torch.Tensor
    rho_max: torch.Tensor
    num_products: int

    def can_leave(self, mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the spectrum of M can reach outside [mu, nu] (docs/design.md §3.5).

        True when theta_min - rho_min < mu or theta_max + rho_max > nu: either an
        eigenvalue is known to lie outside, or the Krylov space has not yet
        resolved that end of the spectrum well enough to rule it out.
        """
        return (self.theta_min - self.rho_min < mu) | (self.theta_max + self.rho_max > nu)


def spectral_bounds(op: JacobianOperator, steps: int, generator: Generators) -> SpectralBounds:
    """Extreme Ritz values of M(z) and their residuals after ``steps`` Golub-Kahan steps from one Rademacher probe.

    Costs ``steps`` products with M per latent (steps JVPs and steps VJPs), as
    many as ``steps`` power iterations, and bounds both ends of the spectrum.
    """
    v = draw_rademacher(generator, 1, op.batch, op.nz).to(op.device)
    bd = golub_kahan(op, v, steps, residual=True)
    ritz, weights, last = ritz_pairs(bd)
    ritz, weights, last = ritz[0], weights[0], last[0]  # one probe
    assert bd.last_beta is not None
    coupling = (bd.alpha[0, :, -1] * bd.last_beta[0]).abs()[:, None]  # (B, 1) |alpha_k beta_k|
    rho = coupling * last.abs()
    real = weights > 1e-24
    lo = torch.where(real, ritz, torch.full_like(ritz, math.inf)).argmin(-1, keepdim=True)
    hi = torch.where(real, ritz, torch.full_like(ritz, -math.inf)).argmax(-1, keepdim=True)
    pick = lambda x, i: x.gather(-1, i)[:, 0]  # noqa: E731
    return SpectralBounds(pick(ritz, lo), pick(ritz, hi), pick(rho, lo), pick(rho, hi), bd.num_matvecs)


__all__ = ["Bidiagonalisation", "SpectralBounds", "golub_kahan", "ritz_pairs", "spectral_bounds"]
