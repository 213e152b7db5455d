"""Exact Jacobians J = dG/dz of a batched map, column block by column block.

The exact Jacobian is built from nz forward-mode products (one per latent
axis) under :func:`torch.func.vmap`, in chunks of ``chunk_size`` axes so that
memory stays bounded: the primal forward pass is shared inside a chunk and only
the tangents are batched. Modules without forward-mode rules fall back to the
double-backward trick (J v as the VJP of the linear map u -> J^T u).
:class:`gan_probe.spectral.operator.JacobianOperator` is the public face of
these routines.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vmap

#: A batched map (B, nz) -> (B, N), samples independent (a generator in eval mode, flattened).
Fn = Callable[[torch.Tensor], torch.Tensor]

#: Forward evaluations (latents x tangents) allowed in flight by default.
DEFAULT_FORWARD_BUDGET = 1024


def default_chunk_size(batch: int, nz: int, budget: int = DEFAULT_FORWARD_BUDGET) -> int:
    """Latent axes per vmap call so that ``batch * chunk <= budget`` (at least 1, at most nz)."""
    return max(1, min(nz, budget // max(1, batch)))


def jacobian(fn: Fn, z: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Per-sample Jacobians of a batched map.

    ``fn`` maps (B, nz) to (B, N) and treats samples independently. Returns J
    of shape (B, N, nz) in z's dtype, with J[b, :, k] = dG(z_b)/dz_k.
    Differentiable w.r.t. z and the parameters of fn when grad mode is on.
    """
    batch, nz = z.shape
    chunk = chunk_size or default_chunk_size(batch, nz)
    try:
        cols = [jvp_columns(fn, z, start, min(nz, start + chunk)) for start in range(0, nz, chunk)]
    except (NotImplementedError, RuntimeError) as exc:
        if "forward" not in str(exc).lower() and "jvp" not in str(exc).lower():
            raise
        cols = [double_vjp_columns(fn, z, start, min(nz, start + chunk)) for start in range(0, nz, chunk)]
    return torch.cat(cols, dim=0).permute(1, 2, 0)


def axis_tangents(z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(stop - start, B, nz): tangent k is e_{start+k} for every sample."""
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[start:stop]
    return eye[:, None, :].expand(stop - start, z.shape[0], z.shape[1])


def batched_jvp(fn: Fn, z: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """J v for a batch of tangents: z (B, nz), tangents (P, B, nz) -> (P, B, N), by vmap over jvp."""
    return vmap(lambda t: jvp(fn, (z,), (t,))[1])(tangents)


def jvp_columns(fn: Fn, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(k, B, N): J e_i for i in [start, stop), by vmap over forward-mode products."""
    return batched_jvp(fn, z, axis_tangents(z, start, stop))


def double_vjp_columns(fn: Fn, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(k, B, N): J e_i via the VJP of the linear map u -> J^T u (reverse mode only)."""
    with torch.enable_grad():
        z_ = z if z.requires_grad else z.detach().requires_grad_(True)
        x = fn(z_)
        u = torch.zeros_like(x, requires_grad=True)
        (jt_u,) = torch.autograd.grad(x, z_, u, create_graph=True)
        tangents = axis_tangents(z, start, stop)
        (cols,) = torch.autograd.grad(
            jt_u, u, tangents, is_grads_batched=True, create_graph=torch.is_grad_enabled() and z.requires_grad
        )
    return cols
