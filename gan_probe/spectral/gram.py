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

Route choice (:func:`choose_route`): the dense QR route is taken when its
estimated working set fits in the memory available (``gan_probe.analyses.memory.available_bytes``),
the Gram route when it does not and the Gram route needs less. The gradient
(``grad=True``, used by ``ascend``) is taken by the dense route only: ``route="auto"``
with ``grad`` always runs dense (``ascend``'s memory check refuses it up front
when J does not fit), and ``route="gram"`` with ``grad`` raises a GanProbeError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.exact import Spectrum, check_finite_jacobian
from gan_probe.spectral.jacobian import default_chunk_size
from gan_probe.spectral.operator import JacobianOperator

ROUTES: tuple[str, ...] = ("auto", "dense", "gram")

#: Activation elements of one forward pass assumed per output element when they are not known.
ACTIVATIONS_PER_OUTPUT = 4


def dense_route_bytes(
    batch: int, n: int, nz: int, itemsize: int, *, chunk: int, activations: int, vectors: bool = False
) -> int:
    """The dense route's working set: J in the generator's dtype, its float64 copy and the QR workspace
    (``b N nz (e + 16)``), the primal and tangent activations of ``chunk`` axes (``2 b c A e``), and
    ``3 b nz^2 8`` for the eigenvectors."""
    nbytes = batch * n * nz * (itemsize + 16) + 2 * batch * chunk * activations * itemsize
    if vectors:
        nbytes += 3 * batch * nz * nz * 8
    return nbytes


def gram_route_bytes(
    batch: int, n: int, nz: int, itemsize: int, *, block: int, activations: int, vectors: bool = False
) -> int:
    """The Gram route's working set: M in float64 and the eigensolver's copy (``2 b nz^2 8``, one more for
    the eigenvectors), one block's products J V and J^T J V (``b P (N + nz)(e + 8)``), and the activations of
    the block's JVP (primal and tangents) and VJP (saved forward pass and the cotangents):
    ``(2 P + 1) b A e`` with ``P = block``."""
    matrices = (3 if vectors else 2) * batch * nz * nz * 8
    products = batch * block * (n + nz) * (itemsize + 8)
    acts = (2 * block + 1) * batch * activations * itemsize
    return matrices + products + acts


@dataclass(frozen=True)
class RouteChoice:
    """Which exact route runs and why: the estimates (bytes; None when not measured) and the memory available."""

    route: str
    block: int
    dense_bytes: int | None = None
    gram_bytes: int | None = None
    available: int | None = None


def _output_size(op: JacobianOperator) -> int:
    """N from one forward pass of one latent, remembered in the operator's routes (shared per generator)."""
    if op.routes.output_size is None:
        with torch.no_grad():
            op.routes.output_size = int(op.fn(op.z[:1].detach()).reshape(1, -1).shape[1])
    return op.routes.output_size


def choose_route(
    op: JacobianOperator,
    *,
    route: str = "auto",
    vectors: bool = False,
    grad: bool = False,
    block: int | None = None,
    available: int | None = None,
    activations: int | None = None,
) -> RouteChoice:
    """The exact route for ``op``: ``dense`` (J, QR, SVD) or ``gram`` (M = J^T J by blocks, eigh).

    ``auto``: dense when its estimate (:func:`dense_route_bytes`) fits in ``available`` bytes (default:
    :func:`gan_probe.analyses.memory.available_bytes` of the operator's device; no figure -> dense),
    else gram when its estimate is smaller; with ``grad`` always dense. The Gram route's block
    (``block``, else the operator's chunk size, else the default chunk) is halved until its estimate
    fits, down to 1. ``activations``: the activation elements of one forward pass per latent
    (default ``4 N``).
    """
    if route not in ROUTES:
        raise GanProbeError(f"unknown exact route {route!r}: use one of {', '.join(ROUTES)}", param="route")
    b, nz = op.batch, op.nz
    chunk = min(nz, op.chunk_size) if op.chunk_size else default_chunk_size(b, nz)
    blk = max(1, min(nz, block or chunk))
    if route == "gram" and grad:
        raise GanProbeError(
            "the exact gradient is taken by the dense route only (it differentiates J): use route dense or auto",
            param="route",
        )
    if route != "auto" or grad:
        return RouteChoice("dense" if route == "auto" else route, blk)
    if available is None:
        from gan_probe.analyses import memory

        available = memory.available_bytes(op.device)
    if available is None:
        return RouteChoice("dense", blk)
    n = _output_size(op)
    e = torch.empty((), dtype=op.dtype).element_size()
    act = activations if activations is not None else ACTIVATIONS_PER_OUTPUT * n
    dense = dense_route_bytes(b, n, nz, e, chunk=chunk, activations=act, vectors=vectors)
    if dense <= available:
        return RouteChoice("dense", blk, dense, None, available)
    gram = gram_route_bytes(b, n, nz, e, block=blk, activations=act, vectors=vectors)
    while gram > available and blk > 1:
        blk //= 2
        gram = gram_route_bytes(b, n, nz, e, block=blk, activations=act, vectors=vectors)
    return RouteChoice("gram" if gram < dense else "dense", blk, dense, gram, available)


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


__all__ = [
    "ROUTES",
    "RouteChoice",
    "choose_route",
    "dense_route_bytes",
    "gram_matrix",
    "gram_route_bytes",
    "gram_spectrum",
]
