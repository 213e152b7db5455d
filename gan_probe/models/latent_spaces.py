"""A style-based generator seen from one of its latent spaces: z, w or w+ (docs/design.md §1.5), as a
LoadedGenerator. The generator is rosinality's StyleGAN2 or one of NVIDIA's (StyleGAN2, StyleGAN2-ADA,
StyleGAN3), all driven through one interface (:class:`gan_probe.models.stylegan2.StyleNetwork`).

- ``z``: the prior N(0, I) through the mapping network (with truncation
  psi: w = w_avg + psi (w - w_avg), on the first ``--truncation-cutoff`` layers
  when given, NVIDIA's convention). The mapping normalises z (rosinality's
  PixelNorm, NVIDIA's 2nd-moment normalisation), so G(c z) = G(z) and z is read
  in the sphere geometry (§1.4).
- ``w``: one w copied to every layer (the space SeFa, GANSpace, LowRankGAN and
  GAN-Geometry analyse); ``w+``: one w per layer (num_layers x style_dim).
  Neither has a closed-form prior: points are mapped prior draws
  (:class:`gan_probe.models.priors.MappedPrior`), truncated when psi != 1.

Noise (``stored``, ``zero`` or ``seed:N``; NVIDIA's ``const``, ``none`` and
random maps drawn once) is fixed when the generator is built, so G is a
deterministic function of its latents. The mean w for the truncation is
NVIDIA's stored ``w_avg``; for rosinality's layout the checkpoint's
``latent_avg`` when it has one, otherwise the mean of 10,000 seeded mapped
draws (recorded in the config as ``w_avg``). A conditional generator
(``c_dim > 0``) is seen for one class, ``--class K`` (a one-hot c).
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.limits import SEED_MAX, check_count
from gan_probe.models.priors import MappedPrior, Prior
from gan_probe.models.stylegan2 import (
    LATENT_SPACES,
    NoiseMode,
    RosinalityStyleNetwork,
    StyleGAN2Generator,
    StyleGAN2Latent,
    StyleNetwork,
    mean_w,
    truncate_ws,
)

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


def check_space_options(
    arch: str,
    space: str | None,
    truncation: float | None,
    noise: str | None,
    truncation_cutoff: int | None = None,
    class_index: int | None = None,
) -> None:
    """--space, --truncation, --truncation-cutoff, --noise and --class belong to style-based generators only."""
    if arch == "stylegan2":
        return
    given = (
        ("space", "--space", space),
        ("truncation", "--truncation", truncation),
        ("noise", "--noise", noise),
        ("truncation_cutoff", "--truncation-cutoff", truncation_cutoff),
        ("class_index", "--class", class_index),
    )
    for name, flag, value in given:
        if value is not None:
            raise CheckpointError(
                f"{flag} applies to StyleGAN2 and StyleGAN3 generators only (rosinality's or NVIDIA's); "
                f"this one is {arch}",
                param=name,
            )


def class_label(c_dim: int, class_index: int | None) -> torch.Tensor | None:
    """The one-hot (1, c_dim) label of ``--class K`` for a conditional generator; None for an unconditional one.

    A conditional generator without ``--class``, a class out of 0 .. c_dim - 1, or ``--class`` on an
    unconditional generator is refused, naming the flag."""
    if c_dim == 0:
        if class_index is not None:
            raise CheckpointError(
                f"--class {class_index}: this generator is unconditional (c_dim 0), it takes no class",
                param="class_index",
            )
        return None
    if class_index is None:
        raise CheckpointError(
            f"this generator is conditional (c_dim {c_dim}): choose the class with --class K, 0 <= K < {c_dim}",
            param="class_index",
        )
    if isinstance(class_index, bool) or not isinstance(class_index, int) or not 0 <= class_index < c_dim:
        raise CheckpointError(
            f"--class {class_index} is out of range: this generator has c_dim {c_dim} classes, 0 .. {c_dim - 1}",
            param="class_index",
        )
    c = torch.zeros(1, c_dim)
    c[0, class_index] = 1.0
    return c


def stylegan2_latent(
    module: StyleGAN2Generator | nn.Module,
    *,
    space: str | None,
    truncation: float | None,
    noise: str | None,
    latent_avg: torch.Tensor | None,
    device: torch.device | str,
    dtype: torch.dtype,
    truncation_cutoff: int | None = None,
    class_index: int | None = None,
) -> tuple[StyleGAN2Latent, Prior, dict[str, Any]]:
    """(the latent-space module, its prior, what to record in the report's config).

    ``module``: rosinality's StyleGAN2 (w_avg: ``latent_avg`` when the file has it, else the mean of
    :data:`NUM_MEAN_DRAWS` mapped draws) or a :class:`~gan_probe.models.stylegan2.StyleNetwork` such as NVIDIA's
    StyleGAN2 and StyleGAN3 (w_avg: the stored ``mapping.w_avg``, the mean NVIDIA's own truncation uses)."""
    space = space or "z"
    if space not in LATENT_SPACES:
        raise CheckpointError(f"unknown latent space {space!r}: use one of {', '.join(LATENT_SPACES)}", param="space")
    psi = 1.0 if truncation is None else float(truncation)
    if not math.isfinite(psi):
        raise CheckpointError(f"the truncation psi must be a finite number, got {truncation}", param="truncation")
    mode = parse_noise(noise)
    module = module.eval().requires_grad_(False).to(device=device, dtype=dtype)
    if isinstance(module, StyleGAN2Generator):
        if latent_avg is not None:
            w_avg, avg_source = latent_avg.reshape(-1).to(device=device, dtype=dtype), "latent_avg of the checkpoint"
        else:
            w_avg = mean_w(module, num=NUM_MEAN_DRAWS, seed=0)
            avg_source = f"mean of {NUM_MEAN_DRAWS} mapped draws, seed 0"
        network = cast(StyleNetwork, RosinalityStyleNetwork(module, w_avg))
    else:
        network = cast(StyleNetwork, module)
        w_avg, avg_source = network.w_avg, "stored w_avg of the generator (mapping.w_avg)"
    num_ws = network.num_ws
    if truncation_cutoff is not None:
        if isinstance(truncation_cutoff, bool) or not isinstance(truncation_cutoff, int) or truncation_cutoff < 0:
            raise CheckpointError(
                f"the truncation cutoff must be a number of layers >= 0, got {truncation_cutoff!r}",
                param="truncation_cutoff",
            )
        if space == "w" and truncation_cutoff < num_ws and psi != 1.0:
            raise CheckpointError(
                f"--truncation-cutoff {truncation_cutoff} truncates only the first {truncation_cutoff} of {num_ws} "
                "layers, which one w copied to every layer cannot express: use --space z or w+",
                param="truncation_cutoff",
            )
    label = class_label(network.c_dim, class_index)
    latent = StyleGAN2Latent(
        cast(nn.Module, network),
        space,
        psi,
        w_avg if space == "z" else None,
        mode,
        truncation_cutoff=truncation_cutoff,
        c=label,
    )
    record: dict[str, Any] = {
        "space": space,
        "truncation": psi,
        "noise": "stored" if mode == "stored" else ("zero" if mode == "zero" else f"seed:{mode}"),
        "w_avg": avg_source,
        "num_layers": num_ws,
    }
    if truncation_cutoff is not None:
        record["truncation_cutoff"] = truncation_cutoff
    if label is not None:
        record["class"] = class_index
    if space == "z":
        return latent, Prior("normal", sigma=1.0), record

    @torch.no_grad()
    def mapper(z: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, z.shape[0], 1024):
            chunk = z[start : start + 1024].to(device=device, dtype=dtype)
            c = None if label is None else label.to(device=device, dtype=dtype).expand(chunk.shape[0], -1)
            ws = truncate_ws(network.mapping(chunk, c), w_avg, psi, truncation_cutoff)
            w = ws.reshape(ws.shape[0], -1) if space == "w+" else ws[:, 0]
            out.append(w.to("cpu", torch.float64))
        return torch.cat(out) if out else torch.zeros(0, latent.nz, dtype=torch.float64)

    z_dim = network.z_dim
    draws = mapper(torch.randn(2048, z_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    std = float(draws.var(dim=0).mean().sqrt())
    prior = MappedPrior(space=space, z_dim=z_dim, truncation=psi, std=std, mapper=mapper)
    return latent, prior, record


__all__ = ["NUM_MEAN_DRAWS", "check_space_options", "class_label", "parse_noise", "stylegan2_latent"]
