"""A StyleGAN2 seen from one of its latent spaces: z, w or w+ (docs/design.md §1.5), as a LoadedGenerator.

- ``z``: the prior N(0, I) through the mapping network (with truncation
  psi: w = w_avg + psi (w - w_avg)), one w to every layer. PixelNorm makes
  G(c z) = G(z), so z is read in the sphere geometry (§1.4).
- ``w``: one w copied to every layer (the space SeFa, GANSpace, LowRankGAN and
  GAN-Geometry analyse); ``w+``: one w per layer (num_layers x style_dim).
  Neither has a closed-form prior: points are mapped prior draws
  (:class:`gan_probe.models.priors.MappedPrior`), truncated when psi != 1.

Noise (``stored``, ``zero`` or ``seed:N``) is fixed when the generator is
built, so G is a deterministic function of its latents. The mean w for the
truncation is the checkpoint's ``latent_avg`` when it has one, otherwise the
mean of 10,000 seeded mapped draws (recorded in the config as ``w_avg``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gan_probe.errors import CheckpointError
from gan_probe.limits import SEED_MAX, check_count
from gan_probe.models.priors import MappedPrior, Prior
from gan_probe.models.stylegan2 import LATENT_SPACES, NoiseMode, StyleGAN2Generator, StyleGAN2Latent, mean_w, truncate

#: Mapped draws used to measure the spread of w (the step size of eigvecs/veff) and, without latent_avg, w_avg.
NUM_MEAN_DRAWS = 10_000


def parse_noise(text: str | None) -> NoiseMode:
    """``stored`` (default), ``zero`` or ``seed:N`` with N in 0..SEED_MAX (as ``--seed``)."""
    if text is None or text == "stored":
        return "stored"
    if text == "zero":
        return "zero"
    if text.startswith("seed:"):
        try:
            seed = int(text.split(":", 1)[1])
        except ValueError:
            pass
        else:
            return check_count(
                seed, f"the noise seed of {text!r}", param="noise", low=0, high=SEED_MAX, error=CheckpointError
            )
    raise CheckpointError(f"noise must be stored, zero or seed:N, got {text!r}", param="noise")


def check_space_options(arch: str, space: str | None, truncation: float | None, noise: str | None) -> None:
    """--space, --truncation and --noise belong to style-based generators only."""
    if arch == "stylegan2":
        return
    for name, value in (("space", space), ("truncation", truncation), ("noise", noise)):
        if value is not None:
            raise CheckpointError(f"{name} applies to StyleGAN2 generators only; this one is {arch}", param=name)


def stylegan2_latent(
    module: StyleGAN2Generator,
    *,
    space: str | None,
    truncation: float | None,
    noise: str | None,
    latent_avg: torch.Tensor | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[StyleGAN2Latent, Prior, dict[str, Any]]:
    """(the latent-space module, its prior, what to record in the report's config)."""
    space = space or "z"
    if space not in LATENT_SPACES:
        raise CheckpointError(f"unknown latent space {space!r}: use one of {', '.join(LATENT_SPACES)}", param="space")
    psi = 1.0 if truncation is None else float(truncation)
    if not math.isfinite(psi):
        raise CheckpointError(f"the truncation psi must be a finite number, got {truncation}", param="truncation")
    mode = parse_noise(noise)
    module = module.eval().requires_grad_(False).to(device=device, dtype=dtype)
    if latent_avg is not None:
        w_avg, avg_source = latent_avg.reshape(-1).to(device=device, dtype=dtype), "latent_avg of the checkpoint"
    else:
        w_avg, avg_source = mean_w(module, num=NUM_MEAN_DRAWS, seed=0), f"mean of {NUM_MEAN_DRAWS} mapped draws, seed 0"
    latent = StyleGAN2Latent(module, space, psi, w_avg if space == "z" else None, mode)
    record = {
        "space": space,
        "truncation": psi,
        "noise": "stored" if mode == "stored" else ("zero" if mode == "zero" else f"seed:{mode}"),
        "w_avg": avg_source,
        "num_layers": module.n_latent,
    }
    if space == "z":
        return latent, Prior("normal", sigma=1.0), record

    @torch.no_grad()
    def mapper(z: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, z.shape[0], 1024):
            w = module.mapping(z[start : start + 1024].to(device=device, dtype=dtype))
            w = truncate(w, w_avg, psi)
            if space == "w+":
                w = w.unsqueeze(1).expand(-1, module.n_latent, -1).reshape(w.shape[0], -1)
            out.append(w.to("cpu", torch.float64))
        return torch.cat(out) if out else torch.zeros(0, latent.nz, dtype=torch.float64)

    draws = mapper(torch.randn(2048, module.style_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    std = float(draws.var(dim=0).mean().sqrt())
    prior = MappedPrior(space=space, z_dim=module.style_dim, truncation=psi, std=std, mapper=mapper)
    return latent, prior, record


__all__ = ["NUM_MEAN_DRAWS", "check_space_options", "parse_noise", "stylegan2_latent"]
