r"""The exact spectrum of M = J^T J without holding J: the Gram route (docs/design.md §2.2).

For latents of thousands of dimensions the dense J (N x nz per latent) does not
fit in memory. This route never stores it: M is assembled column block by
column block as

.. math::

    M E_k = J^T (J E_k),

with E_k a block of ``block`` columns of the identity: one batched JVP and one
batched VJP of the operator per block (:meth:`JacobianOperator.metric_matvec`),
in the generator's dtype, the result accumulated in float64 (nz x nz per
latent, symmetrised). Its eigenvalues come from ``torch.linalg.eigvalsh``
(``eigh`` when the eigenvectors are asked for), and

.. math::

    \tfrac12 \ln\det M = \tfrac12 \sum_i \ln \lambda_i(M), \qquad s_i = \sqrt{\max(\lambda_i, 0)}.

Precision: unlike the QR route (:mod:`gan_probe.spectral.exact`), which never
forms J^T J and resolves s_min down to about eps * s_max, M here is formed from
products rounded in the dtype they were computed in. The rounding error of M is
of order nz * eps(dtype) * lambda_max, so the Gram route resolves lambda_min
only down to eps * lambda_max, i.e. s_min only down to sqrt(eps) * s_max
(float32 products: eigenvalues below about 1e-7 lambda_max are rounding noise).
The flags are therefore set on eigenvalues with the eps of M, not sqrt(eps):

- ``singular``: lambda_min <= lambda_max * nz * eps(float64) (negative after
  rounding included; with products in a lower precision, |lambda_min| <= that
  floor, since a negative lambda_min within the products' rounding band is
  unresolved rather than null), or N < nz (a wide J); then 1/2 ln det M = -inf.
- ``precision_warning``: not singular and lambda_min <= lambda_max * nz * eps(dtype of the
  products); with float32 products this fires from cond(M) ~ 8.4e6 / nz onwards (the QR route,
  s_min <= s_max sqrt(max(N, nz)) eps(dtype), only from cond(M) ~ 7e13 / max(N, nz)). A flagged
  value is rounding noise (finite: eigenvalues are clamped at the smallest positive float64).

The remedy is float64 products: ``--dtype float64``, or ``--dtype auto``, which
recomputes the flagged latents with a float64 copy of the generator.

Route choice (:func:`gan_probe.spectral.route.choose_route`, once per run in its plan): the dense QR
route is taken when its estimated working set fits in the memory available, the Gram route when it does
not and the Gram route needs less. The gradient (``grad=True``, used by ``ascend``) is taken by the dense
route only: :func:`gram_spectrum` with ``grad`` raises a GanProbeError.
"""

from __future__ import annotations

import math

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.exact import Spectrum, check_finite_jacobian
from gan_probe.spectral.jacobian import default_chunk_size
from gan_probe.spectral.operator import JacobianOperator


def gram_matrix(op: JacobianOperator, *, block: int | None = None) -> tuple[torch.Tensor, int]:
    """(M (B, nz, nz) float64, symmetrised; N the output size) from nz / block JVP-VJP pairs, J never stored."""
    b, nz = op.batch, op.nz
    blk = max(1, min(nz, block or op.chunk_size or default_chunk_size(b, nz)))
    m = torch.zeros(b, nz, nz, dtype=torch.float64, device=op.device)
    n = 0
    with torch.no_grad():
        for start in range(0, nz, blk):
            stop = min(nz, start + blk)
            p = stop - start
            v = torch.zeros(p, b, nz, dtype=op.dtype, device=op.device)
            v[torch.arange(p), :, torch.arange(start, stop)] = 1.0
            jv = op.jvp(v)  # (P, B, N)
            n = int(jv.shape[-1])
            mv = op.vjp(jv)  # (P, B, nz): columns start..stop of M
            del jv
            m[:, :, start:stop] = mv.to(torch.float64).permute(1, 2, 0)
            del mv
    m = 0.5 * (m + m.transpose(-1, -2))
    return m, n


def gram_spectrum(
    op: JacobianOperator, *, block: int | None = None, vectors: bool = False, grad: bool = False
) -> Spectrum:
    """The exact :class:`Spectrum` of M(z) by the Gram route (J never stored); ``route`` is ``"gram"``.

    ``block``: columns of the identity per JVP-VJP pair (default: the operator's chunk size, else the
    default chunk). ``vectors``: also the eigenvectors (columns, descending). ``grad``: not available
    (a GanProbeError; the dense route carries the gradient).
    """
    if grad:
        raise GanProbeError(
            "the exact gradient is taken by the dense route only (it differentiates J): use route dense or auto",
            param="route",
        )
    m, n = gram_matrix(op, block=block)
    nz = op.nz
    check_finite_jacobian(m, op.dtype)
    if vectors:
        lam, vec = torch.linalg.eigh(m)
        lam, v = lam.flip(-1), vec.flip(-1)
    else:
        lam, v = torch.linalg.eigvalsh(m).flip(-1), None
    lam_max, lam_min = lam[:, 0], lam[:, -1]
    eps64 = torch.finfo(torch.float64).eps
    working_eps = torch.finfo(op.dtype).eps if op.dtype.is_floating_point else 0.0
    floor64, floor_w = lam_max * nz * eps64, lam_max * nz * working_eps
    if op.dtype == torch.float64:
        zero = lam_min <= floor64  # negative after rounding included
    else:
        # products rounded to eps(dtype): a lam_min within that noise band, negative or not, is unresolved
        # (precision_warning), not evidence of a null direction; zero to float64 precision (an exactly zero
        # column, a saturated unit) still is
        zero = lam_min.abs() <= floor64
    singular = (lam_max <= 0) | zero
    if n < nz:
        singular = torch.ones_like(singular)
    precision_warning = ~singular & (lam_min <= floor_w)
    lam_c = lam.clamp_min(0.0)
    value = 0.5 * torch.log(lam_c.clamp_min(torch.finfo(torch.float64).tiny)).sum(-1)
    value = torch.where(singular, torch.full_like(value, -math.inf), value)
    return Spectrum(lam_c.sqrt(), singular, precision_warning, value, v, route="gram")


__all__ = ["gram_matrix", "gram_spectrum"]
