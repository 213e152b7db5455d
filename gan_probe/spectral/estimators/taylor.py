r"""Taylor estimator of ln det M: Boutsidis, Drineas, Kambadur, Kontopoulou & Zouzias,
"A randomized algorithm for approximating the log determinant of a symmetric positive
definite matrix", Linear Algebra Appl. 533 (2017); Ramesh & LeCun (2018), section 2.2.

With nu = g * lambda_max_hat (t power iterations), B = M / nu and X = I - B
(spectrum in [0, 1) when Sp(M) lies in (0, nu]):

.. math::

    \ln\det M = n \ln\nu + \operatorname{tr}\ln(I - X)
              \approx n \ln\nu - \frac1p \sum_{j=1}^p \sum_{k=1}^m \frac{v_j^T X^k v_j}{k}.

The truncated series drops -sum_{k>m} tr(X^k)/k < 0, so the estimate is
biased upwards, badly so for small eigenvalues (1 - lambda/nu close to 1):
the method suits well-conditioned M. Cost: t + m p products per latent.
``bounds_violated`` flags a spectrum known to leave (0, 2 nu), where the
series diverges (some |v^T X^k v| > |v|^2). Differentiable by backpropagation
through the recurrence (nu held fixed).
"""

from __future__ import annotations

import torch

from gan_probe.spectral.estimators import Generators, LogdetEstimate, draw_rademacher, probe_statistics
from gan_probe.spectral.estimators.chebyshev import power_method
from gan_probe.spectral.jacobian import Fn, metric_matvec


def taylor_logdet(
    fn: Fn,
    z: torch.Tensor,
    *,
    m: int = 10,
    p: int = 20,
    t: int = 20,
    g: float = 1.2,
    generator: Generators,
) -> LogdetEstimate:
    """1/2 ln det M(z) for z (B, nz) by the degree-m Taylor series of ln(1 - x) and p probes."""
    batch, nz = z.shape
    lam_max = power_method(fn, z, t, generator)
    nu = g * lam_max.clamp_min(1e-300)
    v = draw_rademacher(generator, p, batch, nz).to(z.device)
    matvec = metric_matvec(fn, z)
    nu_b = nu[None, :, None]
    vv = (v * v).sum(-1)
    w = v
    series = torch.zeros_like(vv)
    outside = torch.zeros(batch, dtype=torch.bool, device=z.device)
    for k in range(1, m + 1):
        w = w - matvec(w.to(z.dtype)).to(torch.float64) / nu_b  # X^k v
        quad = (v * w).sum(-1)
        outside |= (quad.detach().abs() > vv * (1 + 1e-8)).any(0)
        series = series + quad / k
    per_probe = nz * torch.log(nu)[None] - series
    value, stderr = probe_statistics(per_probe)
    return LogdetEstimate(
        method="taylor",
        half_logdet=0.5 * value,
        num_matvecs=t + m * p,
        stderr=0.5 * stderr,
        bounds_violated=outside,
        lambda_max=lam_max,
        extras={"nu": nu},
    )


__all__ = ["taylor_logdet"]
