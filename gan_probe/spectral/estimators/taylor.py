r"""Taylor estimator of ln det M: Boutsidis, Drineas, Kambadur, Kontopoulou & Zouzias,
"A randomized algorithm for approximating the log determinant of a symmetric positive
definite matrix", Linear Algebra Appl. 533 (2017); Ramesh & LeCun (2018), section 2.2.
docs/design.md §3.3.

With nu = g * theta_max (t Golub-Kahan steps), B = M / nu and X = I - B
(spectrum in [0, 1) when Sp(M) lies in (0, nu]):

.. math::

    \ln\det M = n \ln\nu + \operatorname{tr}\ln(I - X)
              \approx n \ln\nu - \frac1p \sum_{j=1}^p \sum_{k=1}^m \frac{v_j^T X^k v_j}{k}.

The truncated series drops -sum_{k>m} tr(X^k)/k < 0, so the estimate is
biased upwards, badly so for small eigenvalues: an eigenvalue lambda = nu (1 - x)
loses e_m(x) = sum_{k>m} x^k / k nats. The estimator's accuracy interval is
therefore [mu_m, nu], mu_m the smallest lambda with e_m <= ``tol`` nats
(docs/design.md §3.5); ``bounds_violated`` is set whenever the Ritz values and
their residuals allow an eigenvalue outside it (below mu_m: the truncation
error of that eigenvalue exceeds ``tol``; above nu, or some |v^T X^k v| > |v|^2:
the series diverges). Cost: t + m p products per latent. Differentiable by
backpropagation through the recurrence (nu held fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


@dataclass(frozen=True)
class TaylorParams:
    """The parameters of the Taylor-series estimator of ln det M.

    Boutsidis, Drineas, Kambadur, Kontopoulou & Zouzias (2017) (docs/design.md §3.3):
    with nu = g lambda_max and X = I - M / nu,

        ln det M = n ln nu + tr ln(I - X)  ~  n ln nu - (1/p) sum_j sum_{k=1..m} v_j^T X^k v_j / k

    at t + m p products per latent; biased upwards for eigenvalues far below nu.

    Args:
        m: the series degree.
        p: probe vectors.
        t: Golub-Kahan steps for the bounds of the spectrum.
        g: the margin (>= 1) on the estimated lambda_max.
        tol: the truncation error per eigenvalue [nats] that bounds the accuracy interval.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.loglik(gen, n=2, method="taylor", estimator=gan_probe.TaylorParams(m=10, p=20))
        >>> result.values.num_matvecs
        220
        >>> result.values.bounds_violated.tolist()  # eigenvalues far below nu: the truncation is flagged
        [True, True]
    """

    m: int = param(10, "Chebyshev/Taylor degree.")
    p: int = param(20, "Chebyshev/Taylor probe vectors.")
    t: int = param(20, "Chebyshev/Taylor Golub-Kahan steps for the spectral bounds (the paper: power iterations).")
    g: float = param(1.2, "Chebyshev/Taylor multiplier (>= 1) on the estimated lambda_max.")
    tol: float = param(0.1, "Taylor: truncation error per eigenvalue [nats] that bounds its accuracy interval.")

    def __post_init__(self) -> None:
        check_int("taylor", "m", self.m, high=MAX_DEGREE)
        check_int("taylor", "p", self.p, high=MAX_PROBES)
        check_int("taylor", "t", self.t, high=MAX_KRYLOV_STEPS)
        check_float("taylor", "g", self.g, low=1.0, open_low=False)
        check_float("taylor", "tol", self.tol, low=0.0, open_low=True)


def truncation_error(x: float, m: int) -> float:
    """e_m(x) = -ln(1 - x) - sum_{k<=m} x^k / k >= 0, the nats the degree-m series loses at 1 - lambda/nu = x."""
    return -math.log1p(-x) - sum(x**k / k for k in range(1, m + 1))


def accurate_fraction(m: int, tol: float) -> float:
    """mu_m / nu: the smallest lambda / nu whose degree-m truncation error is at most ``tol`` nats (bisection)."""
    lo, hi = 0.0, 1.0 - 1e-15  # e_m is increasing in x = 1 - lambda/nu
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if truncation_error(mid, m) <= tol:
            lo = mid
        else:
            hi = mid
    return 1.0 - lo


def taylor_logdet(
    op: JacobianOperator, params: TaylorParams = TaylorParams(), *, generator: Generators
) -> LogdetEstimate:
    """1/2 ln det M(z) per latent by the degree-m Taylor series of ln(1 - x) and p probes."""
    batch, nz = op.batch, op.nz
    bounds = spectral_bounds(op, params.t, generator)
    lam_max = bounds.theta_max
    nu = params.g * lam_max.clamp_min(1e-300)
    mu = accurate_fraction(params.m, params.tol) * nu
    v = draw_rademacher(generator, params.p, batch, nz).to(op.device)
    nu_b = nu[None, :, None]
    vv = (v * v).sum(-1)
    w = v
    series = torch.zeros_like(vv)
    outside = torch.zeros(batch, dtype=torch.bool, device=op.device)
    for k in range(1, params.m + 1):
        w = w - op.metric_matvec(w).to(torch.float64) / nu_b  # X^k v
        quad = (v * w).sum(-1)
        outside |= (quad.detach().abs() > vv * (1 + 1e-8)).any(0)
        series = series + quad / k
    per_probe = nz * torch.log(nu)[None] - series
    value, stderr = probe_statistics(per_probe)
    return LogdetEstimate(
        method="taylor",
        half_logdet=0.5 * value,
        num_matvecs=params.t + params.m * params.p,
        stderr=0.5 * stderr,
        bounds_violated=bounds.can_leave(mu, nu) | outside,
        lambda_max=lam_max,
        extras={"mu": mu, "nu": nu, "theta_min": bounds.theta_min, "rho_min": bounds.rho_min},
    )


ESTIMATOR = register(
    Estimator(
        name="taylor",
        params=TaylorParams,
        run=taylor_logdet,
        num_products=lambda p: p.t + p.m * p.p,
        summary="Boutsidis et al. 2017, truncated Taylor series of ln(1 - x)",
    )
)

__all__ = ["TaylorParams", "accurate_fraction", "taylor_logdet", "truncation_error"]
