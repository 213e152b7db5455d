r"""The dense route: the exact spectrum of M = J^T J from J, and the exact ln det M with its gradient.

docs/design.md §2.2-2.3. J is promoted to float64; when it is tall (N > nz) a QR
reduces it to R (nz x nz, the same singular values and right singular vectors)
before the SVD. J^T J is never formed, so condition numbers of M far beyond
1/eps(float32) keep their accuracy, and

.. math::

    \tfrac12 \ln\det M = \sum_i \ln s_i(J).

A wide J (N < nz) or one whose smallest singular value is zero to float64
working precision is *singular*: 1/2 ln det M = -inf, flagged, never NaN.

Gradient (spectral backpropagation): d ln det M = 2 tr(J^+ dJ), which the
surrogate 2 <stopgrad(J (J^T J)^{-1}), J> reproduces exactly, with
J (J^T J)^{-1} = Q R^{-T} from the QR of J (J^T J is never inverted). A
singular latent gets value -inf and a zero gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.operator import JacobianOperator


@dataclass
class Spectrum:
    """The exact spectrum of M(z) for a batch of latents.

    ``singular_values`` (B, nz) float64, descending (zeros pad a wide J).
    ``singular`` (B,): s_min is zero to float64 working precision, so ln det M =
    -inf. ``precision_warning`` (B,): s_min lies below the rounding level of
    the dtype J was computed in, so the small end of the spectrum is rounding
    noise (float64 removes it). ``half_logdet`` (B,) float64, 1/2 ln det M
    (-inf where singular), differentiable when the spectrum was taken with
    ``grad=True``. ``eigenvectors`` (B, nz, nz) float64, columns v_i of M
    (right singular vectors of J, same order), when asked for. ``route``: how
    it was taken, ``dense`` (J held, QR then SVD) or ``gram`` (M = J^T J
    accumulated block by block, :mod:`gan_probe.spectral.gram`, whose flags
    resolve lambda_min only down to eps * lambda_max; :mod:`gan_probe.spectral.route`).
    """

    singular_values: torch.Tensor
    singular: torch.Tensor
    precision_warning: torch.Tensor
    half_logdet: torch.Tensor
    eigenvectors: torch.Tensor | None = None
    route: str = "dense"

    @property
    def eigenvalues(self) -> torch.Tensor:
        """(B, nz) eigenvalues lambda_i = s_i^2 of M, descending."""
        return self.singular_values**2

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


def check_finite_jacobian(x: torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse a batch (B, ...) of Jacobians (or of the metrics J^T J built from them) with a non-finite entry:
    the generator overflowed there in ``dtype``."""
    finite = torch.isfinite(x).flatten(1).all(1)
    if not bool(finite.all()):
        name = str(dtype).replace("torch.", "")
        raise GanProbeError(
            f"the generator's Jacobian is not finite at {int((~finite).sum())} of {x.shape[0]} latents: the "
            f"generator overflows there in {name}; give smaller latents or use --dtype float64",
            param="latents",
        )


def spectrum_from_jacobian(jac: torch.Tensor, *, vectors: bool = False, grad: bool = False) -> Spectrum:
    """The :class:`Spectrum` of M = J^T J for J of shape (B, N, nz): the one exact route.

    ``vectors``: also the eigenvectors (right singular vectors of J, columns,
    descending). ``grad``: make ``half_logdet`` differentiable through J (J must
    have been built with autograd) by the QR surrogate.
    """
    j64 = jac.to(torch.float64)
    batch, n, nz = j64.shape
    with torch.no_grad():
        jd = j64.detach()
        check_finite_jacobian(jd, jac.dtype)
        q = None
        if grad and n >= nz:
            q, r = torch.linalg.qr(jd, mode="reduced")
        elif n > nz:
            r = torch.linalg.qr(jd, mode="r").R
        else:
            r = jd
        if vectors:
            _, s, vh = torch.linalg.svd(r, full_matrices=True)
            v = vh.transpose(-1, -2)
        else:
            s, v = torch.linalg.svdvals(r), None
        if s.shape[-1] < nz:
            s = torch.cat([s, s.new_zeros(batch, nz - s.shape[-1])], dim=-1)
        s_max, s_min = s[:, 0], s[:, -1]
        size = max(n, nz)
        singular = (s_max <= 0) | (s_min <= s_max * size * torch.finfo(torch.float64).eps)
        working_eps = torch.finfo(jac.dtype).eps if jac.dtype.is_floating_point else 0.0
        precision_warning = ~singular & (s_min <= s_max * math.sqrt(size) * working_eps)
        value = torch.log(s.clamp_min(torch.finfo(torch.float64).tiny)).sum(-1)
        value = torch.where(singular, torch.full_like(value, -math.inf), value)
    half = value
    if grad:
        # a wide J is singular at every latent: the value -inf keeps a (zero) gradient path to J
        half = value + (_surrogate(j64, q, r, singular) if q is not None else 0.0 * j64.sum(dim=(-2, -1)))
    return Spectrum(s, singular, precision_warning, half, v)


def _surrogate(j64: torch.Tensor, q: torch.Tensor, r: torch.Tensor, singular: torch.Tensor) -> torch.Tensor:
    """<stopgrad(J (J^T J)^{-1}), J> - its value: zero-valued, with the gradient of 1/2 ln det M.

    J (J^T J)^{-1} = Q R^{-T}; singular latents solve against the identity instead and are masked out.
    """
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device).expand_as(r)
    r_safe = torch.where(singular[:, None, None], eye, r)
    with torch.no_grad():
        # solve R^T X^T = Q^T, i.e. X = Q R^{-T}
        pinv_t = torch.linalg.solve_triangular(r_safe, q.transpose(-1, -2), upper=True, left=True).transpose(-1, -2)
    inner = (pinv_t * j64).sum(dim=(-2, -1))
    inner = torch.where(singular, torch.zeros_like(inner), inner)
    return inner - inner.detach()


def dense_spectrum(op: JacobianOperator, *, vectors: bool = False, grad: bool = False) -> Spectrum:
    """The exact :class:`Spectrum` of M(z) at every latent of ``op`` by the dense route: J built from nz
    forward-mode products, then one QR and SVD (:func:`spectrum_from_jacobian`). With ``grad`` J is built
    under autograd and ``half_logdet`` carries the exact gradient; otherwise no graph is kept. (The Gram
    route, J never held, is :func:`gan_probe.spectral.gram.gram_spectrum`; a run's plan picks one:
    :func:`gan_probe.spectral.route.choose_route`.)
    """
    if grad:
        with torch.enable_grad():
            return spectrum_from_jacobian(op.dense(), vectors=vectors, grad=True)
    with torch.no_grad():
        return spectrum_from_jacobian(op.dense(), vectors=vectors)


__all__ = ["Spectrum", "check_finite_jacobian", "dense_spectrum", "spectrum_from_jacobian"]
