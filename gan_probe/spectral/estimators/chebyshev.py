r"""Chebyshev estimator of ln det M: Han, Malioutov, Avron & Shin, "Approximating spectral sums
of large-scale matrices using stochastic Chebyshev approximations", SIAM J. Sci. Comput. 39
(2017); Ramesh & LeCun (2018), Algorithm 1 and eq. 4-7.

With spectral bounds Sp(M) in [mu, nu] (mu = eps, nu = g * lambda_max_hat from
t power iterations), A_bar = M / (mu + nu) has its spectrum in [a, b],
a = mu/(mu+nu), b = nu/(mu+nu), and X = phi^{-1}(A_bar) = (2M - (mu+nu) I)/(nu - mu)
has it in [-1, 1]. With the Chebyshev interpolant of ln(phi(x)) on the m+1
Chebyshev nodes x_j = cos(pi (j + 1/2)/(m + 1)),

.. math::

    c_0 = \frac{1}{m+1}\sum_j \ln\varphi(x_j), \quad
    c_i = \frac{2}{m+1}\sum_j \ln\varphi(x_j)\, T_i(x_j),

    \Gamma = \frac1p \sum_{k=1}^p \sum_{i=0}^m c_i\, v_k^T T_i(X) v_k \approx \ln\det \bar A,
    \qquad \ln\det M \approx n \ln(\mu + \nu) + \Gamma .

**Correction.** The paper's Algorithm 1 returns n ln(a + b) + Gamma; since
a + b = 1 that is Gamma alone, which drops the scale n ln(mu + nu). This module
returns the correct value (``extras["scale_term"]`` holds the dropped term and
``extras["gamma"]`` the printed value, both as ln det, not halved).

**Bounds.** eps fixed: a spectrum reaching below eps (or above nu) is
evaluated outside [-1, 1], where T_i grows like cosh(i arccosh|x|). It is known
to happen when a Ritz value from the bound estimation falls outside
[mu, nu], or when any |v^T T_i(X) v| exceeds |v|^2 (impossible for a spectrum in
[-1, 1]); ``bounds_violated`` flags it. ``eps="auto"`` takes t Golub-Kahan
(Lanczos) steps instead of the power method: nu = g * theta_max,
mu = theta_min / g from the Ritz values (estimates, not guarantees: Ritz
values lie inside the spectrum).

Cost per latent: t + m p products with M (paper setting: 20 + 10 * 20 = 220).
Differentiable by backpropagation through the recurrence (the bounds are held
fixed).
"""

from __future__ import annotations

import math

import torch

from gan_probe.spectral.estimators import (
    Generators,
    LogdetEstimate,
    draw_normal,
    draw_rademacher,
    probe_statistics,
)
from gan_probe.spectral.jacobian import Fn, metric_matvec


def power_method(fn: Fn, z: torch.Tensor, t: int, generator: Generators) -> torch.Tensor:
    """(B,) lambda_max estimate of M(z) by t power iterations (Rayleigh quotient of the last), t products."""
    batch, nz = z.shape
    with torch.no_grad():
        matvec = metric_matvec(fn, z.detach())
        x = draw_normal(generator, batch, nz).to(z.device)
        x = x / x.norm(dim=-1, keepdim=True)
        lam = torch.zeros(batch, dtype=torch.float64, device=z.device)
        for _ in range(t):
            y = matvec(x[None].to(z.dtype))[0].to(torch.float64)
            lam = (x * y).sum(-1)
            x = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return lam


def lanczos_bounds(fn: Fn, z: torch.Tensor, t: int, generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta_min, theta_max), each (B,): extreme Ritz values of M after t Golub-Kahan steps (one probe)."""
    from gan_probe.spectral.estimators.slq import golub_kahan, ritz_values

    batch, nz = z.shape
    v = draw_rademacher(generator, 1, batch, nz).to(z.device)
    ritz = ritz_values(golub_kahan(fn, z, v, t))[0]
    return ritz[:, -1], ritz[:, 0]


def chebyshev_coefficients(m: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, m+1) coefficients of the degree-m Chebyshev interpolant of ln(phi(x)), phi: [-1,1] -> [a, b]."""
    j = torch.arange(m + 1, dtype=torch.float64, device=a.device)
    theta = math.pi * (j + 0.5) / (m + 1)
    x = torch.cos(theta)  # (m+1,)
    f = torch.log((b - a)[:, None] / 2 * x + (b + a)[:, None] / 2)  # (B, m+1)
    i = torch.arange(m + 1, dtype=torch.float64, device=a.device)
    t_ij = torch.cos(i[:, None] * theta[None, :])  # T_i(x_j) (m+1, m+1)
    c = 2.0 / (m + 1) * f @ t_ij.T
    c[:, 0] /= 2
    return c


def chebyshev_logdet(
    fn: Fn,
    z: torch.Tensor,
    *,
    m: int = 10,
    p: int = 20,
    t: int = 20,
    g: float = 1.2,
    eps: float | str = 0.1,
    generator: Generators,
) -> LogdetEstimate:
    """Algorithm 1 of Ramesh & LeCun (2018) with the scale term restored: 1/2 ln det M(z), z (B, nz)."""
    batch, nz = z.shape
    if eps == "auto":
        theta_min, theta_max = lanczos_bounds(fn, z, t, generator)
        lam_max = theta_max
        mu, nu = theta_min / g, g * theta_max
        known_outside = torch.zeros(batch, dtype=torch.bool, device=z.device)
    else:
        lam_max = power_method(fn, z, t, generator)
        mu = torch.full_like(lam_max, float(eps))
        nu = g * lam_max
        # the power method's Rayleigh quotient lies in the spectrum: above nu means outside
        known_outside = lam_max < mu
        nu = torch.maximum(nu, mu * (1 + 1e-6))  # keep [mu, nu] non-empty even when eps > lambda_max
    scale = mu + nu
    a, b = mu / scale, nu / scale
    coeffs = chebyshev_coefficients(m, a, b)  # (B, m+1)
    v = draw_rademacher(generator, p, batch, nz).to(z.device)  # (P, B, nz)
    matvec = metric_matvec(fn, z)
    centre, half_width = (scale / 2)[None, :, None], ((nu - mu) / 2)[None, :, None]

    def x_matvec(w: torch.Tensor) -> torch.Tensor:
        # X w = (M w - (mu + nu)/2 w) / ((nu - mu)/2)
        return (matvec(w.to(z.dtype)).to(torch.float64) - centre * w) / half_width

    vv = (v * v).sum(-1)  # |v|^2 = nz
    w_prev, w = v, x_matvec(v)
    traces = [vv, (v * w).sum(-1)]
    for _ in range(2, m + 1):
        w_prev, w = w, 2 * x_matvec(w) - w_prev
        traces.append((v * w).sum(-1))
    traces_t = torch.stack(traces, -1)  # (P, B, m+1): v^T T_i(X) v
    outside = (traces_t.detach().abs() > vv[..., None] * (1 + 1e-8)).any(-1).any(0)
    per_probe = (traces_t * coeffs[None]).sum(-1)  # (P, B) estimates of ln det A_bar
    gamma, stderr = probe_statistics(per_probe)
    scale_term = nz * torch.log(scale)
    return LogdetEstimate(
        method="chebyshev",
        half_logdet=0.5 * (scale_term + gamma),
        num_matvecs=t + m * p,
        stderr=0.5 * stderr,
        bounds_violated=known_outside | outside,
        lambda_max=lam_max,
        extras={"mu": mu, "nu": nu, "gamma": gamma.detach(), "scale_term": scale_term},
    )


__all__ = ["chebyshev_coefficients", "chebyshev_logdet", "lanczos_bounds", "power_method"]
