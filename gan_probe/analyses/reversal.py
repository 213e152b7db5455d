"""Generator reversal: find z with G(z) close to a given x by gradient descent on z.

Kilcher, Lucchi & Hofmann (2017), "Flexible Prior Distributions for Deep
Generative Models", section 2.1, Algorithm 1:

.. math::

    z_0 \\sim N(0, (10^{-4})^2 I), \\qquad
    z \\leftarrow z - \\eta \\nabla_z \\ell(z, x), \\qquad
    \\ell(z, x) = \\tfrac12 \\lVert G(z) - x \\rVert_2^2,

with the paper's learning rate eta = 0.05 and a fixed number of steps (the
paper's "until converged"). Images are reversed in chunks of ``batch_size``
with one batched forward and backward pass per step per chunk. The chunk's
loss is the *sum* of the per-image losses, so the gradient with respect to
each z_i is that of its own image alone and does not depend on the chunk
size (Adam's update is elementwise, so this holds for Adam too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gan_probe import distributed
from gan_probe.analyses.common import Progress, check_positive, progress_task, seeded_generator
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class ReversalParams:
    """``steps`` gradient steps of size ``lr`` with ``optimizer``, from N(0, init_std^2 I)."""

    steps: int = 400
    lr: float = 0.05
    optimizer: str = "sgd"
    init_std: float = 1e-4
    batch_size: int = 16
    seed: int = 0

    def validate(self) -> None:
        if self.steps < 1:
            raise GanProbeError(f"the number of reversal steps must be at least 1, got {self.steps}", param="steps")
        check_positive("the learning rate", self.lr, "lr")
        if self.optimizer not in OPTIMIZERS:
            raise GanProbeError(
                f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}", param="optimizer"
            )
        check_positive("the initial latent std", self.init_std, "init_std", allow_zero=True)
        check_positive("the batch size", self.batch_size, "batch_size")


@dataclass
class ReversalResult:
    """Recovered latents of the first ``num_done`` images (whole chunks only).

    ``z``: (num_done, nz) float64 on the CPU. ``reconstructions``: (num_done,
    *output_shape) float32, G(z). ``mse``: (num_done,) mean squared pixel error
    in output units. ``loss_history``: (steps,) mean over the finished images
    of 1/2 |G(z) - x|^2 before each step. ``interrupted``: Ctrl-C stopped the
    run; the chunk in progress was dropped (its latents were not converged).
    """

    z: torch.Tensor
    reconstructions: torch.Tensor
    mse: torch.Tensor
    loss_history: torch.Tensor
    num_images: int
    interrupted: bool = False

    @property
    def num_done(self) -> int:
        return int(self.z.shape[0])


def invert_generator(
    gen: LoadedGenerator,
    x: torch.Tensor,
    params: ReversalParams = ReversalParams(),
    *,
    progress: Progress | None = None,
    start: torch.Tensor | None = None,
) -> ReversalResult:
    """Reverse G on the images x (n, *output_shape), chunk by chunk; Ctrl-C keeps finished chunks.

    The initial latents of all n images are drawn at once from one seeded CPU
    generator, so neither the chunk size nor the device changes them; ``start``
    (nz,) shifts them (a StyleGAN2's mean w).
    """
    params.validate()
    n = x.shape[0]
    if tuple(x.shape[1:]) != tuple(gen.output_shape):
        raise GanProbeError(f"images have shape {tuple(x.shape[1:])} but the generator makes {gen.output_shape}")
    z0 = params.init_std * torch.randn(n, gen.nz, generator=seeded_generator(params.seed), dtype=torch.float64)
    if start is not None:
        z0 = z0 + start.to(torch.float64)  # around the mean w: the usual start of a StyleGAN projection
    # the chunks are shared out over the ranks under torchrun, and gathered back in order; in one process
    # Ctrl-C keeps the chunks finished
    with progress_task(progress, "reversal", distributed.local_count(n, params.batch_size) * params.steps) as advance:
        parts, interrupted = distributed.map_batches(
            n,
            params.batch_size,
            lambda sl: _invert_chunk(gen, x[sl], z0[sl], params, advance),
            keep_on_interrupt=True,
            main_work=True,
        )
    zs, recs, mses, _ = (list(c) for c in zip(*parts, strict=True)) if parts else ([], [], [], [])
    history = torch.zeros(params.steps, dtype=torch.float64)
    for *_, losses in parts:
        history += losses
    done = sum(z.shape[0] for z in zs)
    empty = torch.zeros(0, gen.nz, dtype=torch.float64)
    return ReversalResult(
        z=torch.cat(zs) if zs else empty,
        reconstructions=torch.cat(recs) if recs else torch.zeros(0, *gen.output_shape),
        mse=torch.cat(mses) if mses else torch.zeros(0, dtype=torch.float64),
        loss_history=history / max(done, 1),
        num_images=n,
        interrupted=interrupted,
    )


def _invert_chunk(
    gen: LoadedGenerator, x: torch.Tensor, z0: torch.Tensor, params: ReversalParams, advance
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk: (z (b, nz) float64, G(z) float32, mse (b,), summed loss per step (steps,)), all on the CPU."""
    target = x.to(gen.device, gen.dtype)
    z = z0.to(gen.device, gen.dtype).clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=params.lr) if params.optimizer == "sgd" else torch.optim.Adam([z], lr=params.lr)
    losses = torch.zeros(params.steps, dtype=torch.float64, device=gen.device)
    b = x.shape[0]
    with torch.enable_grad():
        for step in range(params.steps):
            opt.zero_grad(set_to_none=True)
            # Summed over the chunk: each z_i's gradient is that of its own image (chunk size invariant).
            loss = 0.5 * (gen(z) - target).square().sum()
            loss.backward()
            opt.step()
            losses[step] = loss.detach()
            advance(b)
    with torch.no_grad():
        rec = gen(z)
        mse = (rec - target).square().reshape(b, -1).mean(1)
    if not torch.isfinite(z).all():
        raise GanProbeError(
            f"generator reversal diverged (latents became NaN/inf) with optimizer {params.optimizer} and "
            f"learning rate {params.lr:g}; lower the learning rate",
            param="lr",
        )
    return z.detach().to("cpu", torch.float64), rec.float().cpu(), mse.to("cpu", torch.float64), losses.cpu()


def psnr(mse: torch.Tensor, peak: float) -> torch.Tensor:
    """Peak signal-to-noise ratio 10 log10(peak^2 / mse) in dB; +inf where mse = 0."""
    return 10.0 * torch.log10(peak**2 / mse)
