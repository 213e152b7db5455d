r"""Chebyshev estimator of ln det M: Han, Malioutov, Avron & Shin, "Approximating spectral sums
of large-scale matrices using stochastic Chebyshev approximations", SIAM J. Sci. Comput. 39
(2017); Ramesh & LeCun (2018), Algorithm 1 and eq. 4-7. docs/design.md §3.2.

With spectral bounds Sp(M) in [mu, nu] (mu = eps, nu = g * theta_max),
A_bar = M / (mu + nu) has its spectrum in [a, b], a = mu/(mu+nu),
b = nu/(mu+nu), and X = (2M - (mu+nu) I)/(nu - mu) has it in [-1, 1]. With the
Chebyshev interpolant of ln(phi(x)) on the m+1 Chebyshev nodes
x_j = cos(pi (j + 1/2)/(m + 1)),

.. math::

    c_0 = \frac{1}{m+1}\sum_j \ln\varphi(x_j), \quad
    c_i = \frac{2}{m+1}\sum_j \ln\varphi(x_j)\, T_i(x_j),

    \Gamma = \frac1p \sum_{k=1}^p \sum_{i=0}^m c_i\, v_k^T T_i(X) v_k \approx \ln\det \bar A,
    \qquad \ln\det M \approx n \ln(\mu + \nu) + \Gamma .

**Correction.** The paper's Algorithm 1 returns n ln(a + b) + Gamma; since
a + b = 1 that is Gamma alone, which drops the scale n ln(mu + nu). This module
returns the correct value (``extras["scale_term"]`` holds the dropped term and
``extras["gamma"]`` the printed value, both as ln det, not halved).

**Bounds** (docs/design.md §3.5). theta_max comes from t Golub-Kahan steps
(where the paper takes t power iterations: the same t products, a better
lambda_max, and the low end of the spectrum too). A spectrum below mu (or above
nu) is evaluated outside [-1, 1], where T_i grows like cosh(i arccosh|x|) and
the estimate can be off by orders of magnitude. ``bounds_violated`` is set
whenever the Ritz values and their residuals allow an eigenvalue outside
[mu, nu] (:meth:`SpectralBounds.can_leave`), or some |v^T T_i(X) v| exceeds
|v|^2 (impossible for a spectrum inside). ``eps="auto"`` takes
mu = theta_min / g, nu = g theta_max from the same steps.

Cost per latent: t + m p products with M (paper setting: 20 + 10 * 20 = 220).
Differentiable by backpropagation through the recurrence (the bounds are held
fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.errors import GanProbeError
from gan_probe.limits import MAX_DEGREE, MAX_KRYLOV_STEPS, MAX_PROBES
from gan_probe.spectral.estimators.base import (
    Estimator,
    Generators,
    LogdetEstimate,
    check_float,
    check_int,
    draw_rademacher,
    param,
    probe_statistics,
    register,
)
from gan_probe.spectral.estimators.lanczos import spectral_bounds
from gan_probe.spectral.operator import JacobianOperator


def parse_eps(value: float | str) -> float | str:
    """eps: a positive number or ``"auto"`` (text from the command line is parsed)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            return float(text)
        except ValueError:
            raise GanProbeError(
                f"chebyshev eps must be a positive number or auto, got {value!r}", param="chebyshev.eps"
            ) from None
    return value


@dataclass(frozen=True)
class ChebyshevParams:
    """The parameters of the Chebyshev estimator of ln det M; the defaults are the paper's setting.

    Han, Malioutov, Avron & Shin (2017), as Ramesh & LeCun (2018) Algorithm 1, with
    the scale term restored (docs/design.md §3.2): with M's spectrum in [mu, nu],
    X = (2M - (mu+nu) I) / (nu - mu) and the degree-m Chebyshev interpolant
    sum_i c_i T_i of ln phi on [-1, 1],

        ln det M ~ n ln(mu + nu) + (1/p) sum_k sum_{i=0..m} c_i v_k^T T_i(X) v_k

    at t + m p products per latent (the paper: 220).

    Args:
        m: the polynomial degree (paper 10).
        p: probe vectors (paper 20).
        t: Golub-Kahan steps for the bounds of the spectrum (paper 20 power iterations).
        g: the margin (>= 1) on the estimated lambda_max: nu = g lambda_max.
        eps: the lower bound mu (paper 0.1), or "auto" (from the Ritz values).

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.loglik(gen, n=2, method="chebyshev", estimator=gan_probe.ChebyshevParams())
        >>> result.values.num_matvecs
        220
        >>> result.values.bounds_violated.tolist()  # the spectrum leaves [0.1, nu]: the estimates are flagged
        [True, True]
    """

    m: int = param(10, "Chebyshev/Taylor degree.")
    p: int = param(20, "Chebyshev/Taylor probe vectors.")
    t: int = param(20, "Chebyshev/Taylor Golub-Kahan steps for the spectral bounds (the paper: power iterations).")
    g: float = param(1.2, "Chebyshev/Taylor multiplier (>= 1) on the estimated lambda_max.")
    eps: float | str = param(0.1, "Chebyshev lower spectral bound mu, or auto.", cli_type=str)

    def __post_init__(self) -> None:
        check_int("chebyshev", "m", self.m, high=MAX_DEGREE)
        check_int("chebyshev", "p", self.p, high=MAX_PROBES)
        check_int("chebyshev", "t", self.t, high=MAX_KRYLOV_STEPS)
        check_float("chebyshev", "g", self.g, low=1.0, open_low=False)
        object.__setattr__(self, "eps", parse_eps(self.eps))
        if self.eps != "auto":
            check_float("chebyshev", "eps", self.eps, low=0.0, open_low=True)


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
    op: JacobianOperator, params: ChebyshevParams = ChebyshevParams(), *, generator: Generators
) -> LogdetEstimate:
    """Algorithm 1 of Ramesh & LeCun (2018) with the scale term restored: 1/2 ln det M(z) per latent."""
    batch, nz = op.batch, op.nz
    g = params.g
    bounds = spectral_bounds(op, params.t, generator)
    lam_max = bounds.theta_max
    if params.eps == "auto":
        mu, nu = bounds.theta_min / g, g * bounds.theta_max
    else:
        mu = torch.full_like(lam_max, float(params.eps))
        nu = torch.maximum(g * lam_max, mu * (1 + 1e-6))  # keep [mu, nu] non-empty even when eps > lambda_max
    can_leave = bounds.can_leave(mu, nu)
    scale = mu + nu
    a, b = mu / scale, nu / scale
    coeffs = chebyshev_coefficients(params.m, a, b)  # (B, m+1)
    v = draw_rademacher(generator, params.p, batch, nz).to(op.device)  # (P, B, nz)
    centre, half_width = (scale / 2)[None, :, None], ((nu - mu) / 2)[None, :, None]

    def x_matvec(w: torch.Tensor) -> torch.Tensor:
        # X w = (M w - (mu + nu)/2 w) / ((nu - mu)/2)
        return (op.metric_matvec(w).to(torch.float64) - centre * w) / half_width

    vv = (v * v).sum(-1)  # |v|^2 = nz
    w_prev, w = v, x_matvec(v)
    traces = [vv, (v * w).sum(-1)]
    for _ in range(2, params.m + 1):
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
        num_matvecs=params.t + params.m * params.p,
        stderr=0.5 * stderr,
        bounds_violated=can_leave | outside,
        lambda_max=lam_max,
        extras={
            "mu": mu,
            "nu": nu,
            "gamma": gamma.detach(),
            "scale_term": scale_term,
            "theta_min": bounds.theta_min,
            "rho_min": bounds.rho_min,
        },
    )


ESTIMATOR = register(
    Estimator(
        name="chebyshev",
        params=ChebyshevParams,
        run=chebyshev_logdet,
        num_products=lambda p: p.t + p.m * p.p,
        summary="Ramesh & LeCun Algorithm 1 (Han et al. 2017), scale term corrected",
    )
)

__all__ = ["ChebyshevParams", "chebyshev_coefficients", "chebyshev_logdet", "parse_eps"]
