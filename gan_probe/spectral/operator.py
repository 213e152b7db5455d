"""The Jacobian of a generator at a batch of latents, as one linear operator.

In the manner of curvlinops and linear_operator, every spectral routine of
gan-probe is a function of a :class:`JacobianOperator`: the exact method asks
it for the dense J (:meth:`JacobianOperator.dense`), the stochastic estimators
only for products J v, J^T u and M v = J^T (J v). The operator is the place a
latent space plugs in: whatever maps (B, nz) latents to (B, N) outputs (a
generator, its w or w+ synthesis, a linear test map) is an operator's ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import vjp, vmap

from gan_probe.errors import is_out_of_memory
from gan_probe.spectral.jacobian import Fn, JacobianRoutes, default_chunk_size, jacobian, jvp_blocks


class JacobianOperator:
    """J(z) = dG/dz for every latent of a batch z (B, nz) of a flat map fn: (B, nz) -> (B, N).

    Products act on batches of probe vectors with a leading probe axis:
    :meth:`jvp` maps (P, B, nz) to (P, B, N), :meth:`vjp` (P, B, N) to
    (P, B, nz), :meth:`metric_matvec` (P, B, nz) to (P, B, nz). Each works in
    the generator's dtype; callers accumulate in float64. Under grad mode the
    products are differentiable w.r.t. z and the generator's parameters
    ("spectral backpropagation"). ``routes``: how J is built for this generator
    (:class:`~gan_probe.spectral.jacobian.JacobianRoutes`, shared by every
    operator of one generator so a fallback is learnt once).
    """

    def __init__(
        self, fn: Fn, z: torch.Tensor, *, chunk_size: int | None = None, routes: JacobianRoutes | None = None
    ) -> None:
        if z.ndim != 2:
            raise ValueError(f"latents must have shape (B, nz), got {tuple(z.shape)}")
        self.fn = fn
        self.z = z
        self.chunk_size = chunk_size
        self.routes = routes if routes is not None else JacobianRoutes()
        self._pullback: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
        self._pullback_grad: bool | None = None

    @property
    def batch(self) -> int:
        return int(self.z.shape[0])

    @property
    def nz(self) -> int:
        return int(self.z.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.z.dtype

    @property
    def device(self) -> torch.device:
        return self.z.device

    def detached(self) -> JacobianOperator:
        """The same operator at z.detach() (for the parts of an estimator held fixed under differentiation)."""
        return JacobianOperator(self.fn, self.z.detach(), chunk_size=self.chunk_size, routes=self.routes)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v: (P, B, nz) -> (P, B, N), one forward-mode product per probe, all probes batched."""
        return jvp_blocks(self.fn, self.z, [v.to(self.dtype)], self.routes)[0]

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u: (P, B, N) -> (P, B, nz). The forward pass is taken once and reused by later calls."""
        grad = torch.is_grad_enabled()
        if self._pullback is None or self._pullback_grad != grad:
            self._pullback = vjp(self.fn, self.z)[1]
            self._pullback_grad = grad
        pullback = self._pullback
        return vmap(lambda w: pullback(w)[0], randomness=self.routes.randomness)(u.to(self.dtype))

    def metric_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """M v = J^T (J v): (P, B, nz) -> (P, B, nz), one JVP and one VJP per probe."""
        return self.vjp(self.jvp(v))

    def dense(self) -> torch.Tensor:
        """J (B, N, nz) from nz forward-mode products in chunks (differentiable under grad mode).

        Out of memory, it retries with half as many latent axes in flight, down to one at a time,
        and then lets the allocator's error through (the command line reports it in one line).
        """
        chunk = self.chunk_size
        while True:
            try:
                return jacobian(self.fn, self.z, chunk_size=chunk, routes=self.routes)
            except (RuntimeError, MemoryError) as exc:
                current = chunk or default_chunk_size(self.batch, self.nz)
                if not is_out_of_memory(exc) or current <= 1:
                    raise
                chunk = current // 2
                del exc
                if self.z.device.type == "cuda":
                    torch.cuda.empty_cache()


__all__ = ["Fn", "JacobianOperator", "JacobianRoutes"]
