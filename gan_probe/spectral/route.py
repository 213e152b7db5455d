"""Which exact route runs, from the sizes and the free memory, and running it (docs/design.md §2.2, §9).

Two routes give the exact spectrum of M = J^T J:

- ``dense`` (:mod:`gan_probe.spectral.exact`): J held (N x nz per latent), one QR and SVD in float64;
  resolves s_min down to about eps * s_max and carries the gradient;
- ``gram`` (:mod:`gan_probe.spectral.gram`): M assembled block by block from JVP-VJP pairs, J never held;
  resolves lambda_min only down to eps * lambda_max, no gradient.

:func:`choose_route` picks one from numbers alone (the batch, N, nz, the dtype's bytes, the activations of
one forward pass and the memory available), so that the memory check, ``--method auto`` and the run read
the same decision: :class:`gan_probe.spectral.plan.RunPlan` carries it. Working sets, in bytes, with ``b``
the batch, ``e`` the generator dtype's bytes, ``A`` the activation elements per latent, ``c`` the latent
axes in flight in one batched JVP and ``P`` the Gram route's block:

- dense: ``b N nz (e + 16) + 2 b c A e`` (J, its float64 copy and the QR workspace; primal and tangent
  activations of ``c`` axes), ``+ 3 b nz^2 8`` with the eigenvectors;
- dense with the gradient (``ascend``): ``b N nz (e + 32) + 2 b nz A e`` (also Q and Q R^-T in float64;
  the saved activations of all nz axes), ``+ 3 b nz^2 8`` with the eigenvectors;
- gram: ``2 b nz^2 8 + b P (N + nz)(e + 8) + (2 P + 1) b A e`` (M and the eigensolver's copy, one block's
  products, the block's JVP and VJP activations), ``3 b nz^2 8`` for the matrices with the eigenvectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.exact import Spectrum, dense_spectrum
from gan_probe.spectral.gram import gram_spectrum
from gan_probe.spectral.operator import JacobianOperator

#: The routes a run may ask for: ``auto`` is decided by :func:`choose_route`.
ROUTES: tuple[str, ...] = ("auto", "dense", "gram")


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


def dense_gradient_bytes(batch: int, n: int, nz: int, itemsize: int, *, activations: int, vectors: bool = False) -> int:
    """The dense route's working set with the gradient: J, its float64 copy, Q and Q R^-T (``b N nz (e + 32)``),
    the saved activations of all nz axes (``2 b nz A e``), and ``3 b nz^2 8`` for the eigenvectors."""
    nbytes = batch * n * nz * (itemsize + 32) + 2 * batch * nz * activations * itemsize
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
    """Which exact route runs (``route``, at ``block`` columns per JVP-VJP pair on the Gram route) and the
    figures it was chosen by: each route's working set in bytes (the dense one with the gradient when
    ``grad``) and the memory ``available`` (None: not known)."""

    route: str
    block: int
    dense_bytes: int
    gram_bytes: int
    available: int | None = None
    grad: bool = False

    @property
    def bytes(self) -> int:
        """The working set of the route that runs."""
        return self.gram_bytes if self.route == "gram" else self.dense_bytes

    @property
    def fits(self) -> bool | None:
        """Whether the exact spectrum fits in the memory available by the route that runs (None: not known);
        ``--method auto`` takes an estimator when it does not."""
        if self.available is None:
            return None
        return self.bytes <= self.available


def choose_route(
    *,
    batch: int,
    output_dim: int,
    nz: int,
    itemsize: int,
    chunk: int,
    activations: int,
    available: int | None,
    route: str = "auto",
    vectors: bool = False,
    grad: bool = False,
    block: int | None = None,
) -> RouteChoice:
    """The exact route for batches of ``batch`` latents: ``dense`` (J, QR, SVD) or ``gram`` (M by blocks, eigh).

    ``auto``: dense when its working set (:func:`dense_route_bytes`, ``chunk`` axes in flight) fits in
    ``available`` bytes (None: not known -> dense), else gram when its working set is smaller; the Gram
    route's block (``block``, else ``chunk``) is then halved until it fits, down to 1. With ``grad`` the
    route is dense (the gradient differentiates J; ``route="gram"`` is refused) and its working set
    :func:`dense_gradient_bytes`. ``activations``: the activation elements of one forward pass per latent
    (measured: :func:`gan_probe.analyses.memory.activation_elements`).
    """
    if route not in ROUTES:
        raise GanProbeError(f"unknown exact route {route!r}: use one of {', '.join(ROUTES)}", param="route")
    if route == "gram" and grad:
        raise GanProbeError(
            "the exact gradient is taken by the dense route only (it differentiates J): use route dense or auto",
            param="route",
        )
    b, n, e, act = batch, output_dim, itemsize, activations
    blk = max(1, min(nz, block or chunk))
    if grad:
        dense = dense_gradient_bytes(b, n, nz, e, activations=act, vectors=vectors)
    else:
        dense = dense_route_bytes(b, n, nz, e, chunk=chunk, activations=act, vectors=vectors)

    def gram_bytes(p: int) -> int:
        return gram_route_bytes(b, n, nz, e, block=p, activations=act, vectors=vectors)

    if route != "auto" or grad or available is None or dense <= available:
        chosen = "dense" if route == "auto" else route
        return RouteChoice(chosen, blk, dense, gram_bytes(blk), available, grad)
    gram = gram_bytes(blk)
    while gram > available and blk > 1:
        blk //= 2
        gram = gram_bytes(blk)
    return RouteChoice("gram" if gram < dense else "dense", blk, dense, gram, available, grad)


def exact_spectrum(
    op: JacobianOperator, *, route: str = "dense", block: int | None = None, vectors: bool = False, grad: bool = False
) -> Spectrum:
    """The exact :class:`Spectrum` of M(z) at every latent of ``op`` by ``route``: ``dense``
    (:func:`gan_probe.spectral.exact.dense_spectrum`) or ``gram`` (:func:`gan_probe.spectral.gram.gram_spectrum`,
    ``block`` columns per JVP-VJP pair; no gradient). A run takes the route of its plan
    (:attr:`gan_probe.spectral.plan.RunPlan.route`). The route that ran is the result's ``route``.
    """
    if route == "gram":
        return gram_spectrum(op, block=block, vectors=vectors, grad=grad)
    if route != "dense":
        raise GanProbeError(f"unknown exact route {route!r}: use dense or gram", param="route")
    return dense_spectrum(op, vectors=vectors, grad=grad)


def element_bytes(dtype: torch.dtype) -> int:
    """Bytes of one element of ``dtype`` (``e`` above)."""
    return torch.empty((), dtype=dtype).element_size()


__all__ = [
    "ROUTES",
    "RouteChoice",
    "choose_route",
    "dense_gradient_bytes",
    "dense_route_bytes",
    "element_bytes",
    "exact_spectrum",
    "gram_route_bytes",
]
