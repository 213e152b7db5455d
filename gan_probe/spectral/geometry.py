r"""Generators that ignore |z|: the sphere geometry of docs/design.md §1.4.

If G(c z) = G(z) for c > 0 (StyleGAN's PixelNorm on z), then J z = 0 and
ln det J^T J = -inf: the images are the pushforward of the direction
u = z/|z|, uniform on S^{n-1} under a normal prior. With B (n x (n-1)) an
orthonormal basis of the complement of z and r = |z|, the tangent Jacobian at
u is r J B, and

.. math::

    \ln Q(G(z)) = -\ln|S^{n-1}| - \sum_{i<n} \ln s_i(J(z)) - (n-1) \ln r
                = \ln P_U(u) - \tfrac12 \ln\det\big((rJB)^T (rJB)\big),

so the sphere reading keeps the shape of the Euclidean one: ln P_U(u) =
-ln|S^{n-1}| in place of ln P_Z(z), and the spectrum of the tangent metric
(r J B)^T (r J B) in place of J^T J. :func:`tangent_operator` builds that
tangent map as an ordinary :class:`JacobianOperator` of n-1 latents, so the
exact method and every estimator apply to it unchanged.
"""

from __future__ import annotations

import math

import torch

from gan_probe.spectral.operator import JacobianOperator

GEOMETRIES = ("auto", "euclidean", "sphere")


def log_sphere_area(n: int) -> float:
    """ln|S^{n-1}| = ln(2 pi^{n/2} / Gamma(n/2)), the area of the unit sphere in R^n."""
    return math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)


def tangent_basis(z: torch.Tensor) -> torch.Tensor:
    """(B, n, n-1) orthonormal bases of the complements of z (B, n), by the Householder reflection e_1 -> z/|z|.

    Smooth in z away from z/|z| = e_1 (where the reflection is the identity), so it can be differentiated.
    """
    n = z.shape[-1]
    u = z / z.norm(dim=-1, keepdim=True)
    e1 = torch.zeros_like(u)
    e1[:, 0] = 1.0
    w = e1 - u
    wn = w.norm(dim=-1, keepdim=True)
    near = wn[:, 0] < 1e-8
    # near e_1 the reflection degenerates: use the identity there (e_2..e_n already span the complement)
    w = torch.where(near[:, None], torch.zeros_like(w), w / wn.clamp_min(1e-300))
    h = torch.eye(n, dtype=z.dtype, device=z.device) - 2 * w[:, :, None] * w[:, None, :]
    return h[:, :, 1:]


def radial_ratio(jac: torch.Tensor, z: torch.Tensor, s_max: torch.Tensor) -> torch.Tensor:
    """(B,) |J z| / (s_1 |z|): 0 when G ignores |z|, of order 1 for a generic generator; inf at z = 0."""
    jz = torch.einsum("bnk,bk->bn", jac.to(torch.float64), z.to(torch.float64)).norm(dim=-1)
    scale = s_max.to(torch.float64) * z.to(torch.float64).norm(dim=-1)
    return torch.where(scale > 0, jz / scale.clamp_min(1e-300), torch.full_like(jz, math.inf))


def radial_tolerance(dtype: torch.dtype) -> float:
    """The ratio below which |J z| is zero to working precision: sqrt(eps) of the generator's dtype."""
    return math.sqrt(torch.finfo(dtype).eps)


def tangent_jacobian(jac: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """r J B (B, N, n-1) from a dense J (B, N, n) at z (B, n); differentiable in both."""
    basis = tangent_basis(z.to(jac.dtype))
    r = z.to(jac.dtype).norm(dim=-1)
    return r[:, None, None] * torch.bmm(jac, basis)


def tangent_operator(op: JacobianOperator) -> JacobianOperator:
    """The tangent map y -> G(z + r B y) at y = 0, whose Jacobian is r J B: an operator of n - 1 latents."""
    z = op.z
    basis = tangent_basis(z)
    r = z.norm(dim=-1)
    fn = op.fn

    def on_sphere(y: torch.Tensor) -> torch.Tensor:
        return fn(z + r[:, None] * torch.einsum("bnk,bk->bn", basis, y))

    y0 = torch.zeros(z.shape[0], z.shape[1] - 1, dtype=z.dtype, device=z.device)
    return JacobianOperator(on_sphere, y0, chunk_size=op.chunk_size)


__all__ = [
    "GEOMETRIES",
    "log_sphere_area",
    "radial_ratio",
    "radial_tolerance",
    "tangent_basis",
    "tangent_jacobian",
    "tangent_operator",
]
