"""The learned latent prior: the PGAN's generator h: Z' -> Z, its file, and the composition G o h.

Kilcher, Lucchi & Hofmann (2017), section 3 and appendix E: a secondary GAN
(the PGAN) learns the *data-induced prior*, the distribution of the latents
that generator reversal recovers from data, as h(z') with z' ~ N(0, I) in an
auxiliary space Z' = R^{d'}, d' >= nz. Its generator and discriminator are
four fully connected layers each, "analogous to the original GAN": ReLU in
the generator, LeakyReLU(0.2) and a sigmoid classifier (here: a logit) in the
discriminator. The generator's last layer is linear, not the image GAN's tanh:
latents are unbounded.

G o h is a generator with latent z' ~ N(0, I): its log-likelihood needs nothing
new, ln Q(G(h(z'))) = ln N(z'; 0, I) - 1/2 ln det(J^T J) with J = J_G(h(z')) J_h(z')
(docs/design.md §7.6), the Jacobian of the composed module.

A prior file is a native checkpoint (``arch`` ``prior-net``; ``config`` the
constructor's arguments; ``prior`` N(0, I) of Z'; ``output`` shape [nz]) whose
metadata field ``fitted`` records the generator it was fitted to (``sha256``,
``path``), the data, the seed and the training steps.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_probe.errors import CheckpointError, first_line
from gan_probe.models.loaded import LoadedGenerator, LoadOptions, file_sha256, wrap_module
from gan_probe.models.metadata import save_checkpoint
from gan_probe.models.noise import frozen_call
from gan_probe.models.priors import MappedPrior, Prior
from gan_probe.models.state_dicts import read_checkpoint

ARCH = "prior-net"
#: Hidden widths of the PGAN's generator: the image GAN's 512, 256, 128 (appendix E), fully connected.
DEFAULT_WIDTHS = (512, 256, 128)


def _stack(widths: list[int], activation: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation)
    return nn.Sequential(*layers)


class PriorNet(nn.Module):
    """h: (B, dim) -> (B, nz), ``len(hidden) + 1`` fully connected layers with ReLU between, a linear output."""

    def __init__(self, dim: int, nz: int, hidden: list[int] | tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        self.dim, self.nz, self.hidden = int(dim), int(nz), [int(w) for w in hidden]
        self.net = _stack([self.dim, *self.hidden, self.nz], nn.ReLU())

    @property
    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "nz": self.nz, "hidden": list(self.hidden)}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PriorCritic(nn.Module):
    """The PGAN's discriminator: (B, nz) -> (B,) logits, LeakyReLU(0.2) between fully connected layers."""

    def __init__(self, nz: int, hidden: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        self.net = _stack([int(nz), *[int(w) for w in hidden], 1], nn.LeakyReLU(0.2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)[:, 0]


@dataclass
class LoadedPriorNet:
    """A prior network read from a file (or fresh from training): h, and what it was fitted to."""

    module: nn.Module  # (B, dim) -> (B, nz): a PriorNet, or any module of that shape (e.g. a test's linear map)
    dim: int
    nz: int
    path: str | None = None
    sha256: str | None = None
    fitted: dict[str, Any] = field(default_factory=dict)

    @property
    def generator_sha256(self) -> str | None:
        """The sha256 of the generator the prior was fitted to (None: not recorded)."""
        generator = self.fitted.get("generator")
        sha = generator.get("sha256") if isinstance(generator, dict) else None
        return sha if isinstance(sha, str) else None

    def describe(self, generator_sha256: str | None) -> dict[str, Any]:
        """What a report records of the prior composed with the generator of hash ``generator_sha256``:
        ``same_generator`` is None when either hash is unknown."""
        generator = self.fitted.get("generator")
        fitted_path = generator.get("path") if isinstance(generator, dict) else None
        fitted_to = self.generator_sha256
        return {
            "path": self.path,
            "sha256": self.sha256,
            "dim": self.dim,
            "nz": self.nz,
            "fitted_to": {"sha256": fitted_to, "path": fitted_path if isinstance(fitted_path, str) else None},
            "same_generator": None if fitted_to is None or generator_sha256 is None else fitted_to == generator_sha256,
        }


def save_prior_net(path: str | os.PathLike, module: PriorNet, *, fitted: Mapping[str, Any], provenance: str) -> None:
    """Write h as a native checkpoint (the checkpoint writer, atomically); ``fitted`` goes to the metadata."""
    save_checkpoint(
        path,
        module,
        arch=ARCH,
        config=module.config,
        prior=Prior(),
        output_shape=[module.nz],
        output_range=None,
        provenance=provenance,
        extra={"fitted": dict(fitted)},
    )


def load_prior_net(path: str | os.PathLike) -> LoadedPriorNet:
    """Read a prior file written by :func:`save_prior_net` (weights only: no code runs)."""
    file = Path(path)
    if not file.is_file():
        what = f"the prior network {file} is not a file" if file.exists() else f"prior network not found: {file}"
        raise CheckpointError(what, param="prior_net")
    container, meta = read_checkpoint(file)
    if meta is None or meta.get("arch") != ARCH:
        what = "no gan_probe metadata" if meta is None else f"arch {meta.get('arch')!r}"
        raise CheckpointError(
            f"{file} is not a prior network ({what}); make one with gan-probe prior", param="prior_net"
        )
    config, fitted = meta.get("config", {}), meta.get("fitted", {})
    try:
        module = PriorNet(int(config["dim"]), int(config["nz"]), [int(w) for w in config["hidden"]])
        module.load_state_dict(container.state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = first_line(exc)
        raise CheckpointError(
            f"{file}: the prior network's config {config} does not fit its weights: {first}"
        ) from None
    if not isinstance(fitted, dict):
        raise CheckpointError(f"{file}: the gan_probe metadata field fitted must be a JSON object")
    return LoadedPriorNet(module.eval(), module.dim, module.nz, str(file), file_sha256(file), fitted)


def check_prior_net_options(options: LoadOptions) -> None:
    """Refuse the prior overrides beside ``--prior-net``: G o h's latent is z' ~ N(0, I), whatever G's prior."""
    given = [
        flag
        for flag, value in (
            ("--prior", options.prior),
            ("--sigma", options.sigma),
            ("--low", options.low),
            ("--high", options.high),
        )
        if value is not None
    ]
    if given:
        raise CheckpointError(
            f"{'/'.join(given)} cannot be combined with --prior-net: the latent is then z' ~ N(0, I) of the prior "
            "network, mapped to the generator's z by h; drop one of them"
        )


class _Composed(nn.Module):
    """z' -> G(h(z')); a stochastic G keeps its frozen noise."""

    def __init__(self, h: nn.Module, g: nn.Module, noise: Any) -> None:
        super().__init__()
        self.h, self.g, self.noise = h, g, noise

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        code = self.h(z)
        return self.g(code) if self.noise is None else frozen_call(self.g, code, self.noise)


class NormalToUniform(nn.Module):
    """u -> low + (high - low) Phi(u), elementwise: u ~ N(0, I) gives exactly U([low, high]^nz) (Phi the
    standard normal CDF), so G o this map, under N(0, I), has the distribution of G under the uniform prior."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = float(low), float(high)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.special.ndtr(u)


def _before_generator(
    gen: LoadedGenerator, h: nn.Module, *, nz: int, arch: str, config: Any, provenance: str
) -> LoadedGenerator:
    """G o h under N(0, I) in R^nz, keeping everything else of ``gen`` (output, file, noise, notes)."""
    composed = wrap_module(
        _Composed(h, gen.module, gen.noise),
        nz=nz,
        prior=Prior(),
        arch=arch,
        config=config,
        output_shape=gen.output_shape,
        output_range=gen.output_range,
        provenance=f"{gen.provenance}; {provenance}",
        path=gen.path,
        sha256=gen.sha256,
        source=gen.source,
        device=gen.device,
        dtype=gen.dtype,
        key=gen.key,
        extras=gen.extras,
    )
    composed.routes.randomness = gen.routes.randomness
    composed.prior_net = gen.prior_net
    composed.class_index = gen.class_index
    composed.notes.extend(gen.notes)
    return composed


def with_normal_latent(gen: LoadedGenerator) -> LoadedGenerator:
    """``gen`` itself under a normal prior; under U([low, high]^nz), G o :class:`NormalToUniform` with latent
    u ~ N(0, I): the same distribution of outputs (what a divergence between G and data sees), with a latent
    density that is positive and smooth everywhere (what an encoder over the latent needs)."""
    if isinstance(gen.prior, MappedPrior) or gen.prior.kind != "uniform":
        return gen
    low, high = gen.prior.low, gen.prior.high
    provenance = f"z = {low:g} + ({high:g} - {low:g}) Phi(u), u ~ N(0, I)"
    return _before_generator(
        gen, NormalToUniform(low, high), nz=gen.nz, arch=gen.arch, config=gen.config, provenance=provenance
    )


def compose_with_prior(gen: LoadedGenerator, prior_net: LoadedPriorNet) -> LoadedGenerator:
    """G o h as a generator with latent z' (B, dim) under N(0, I); every analysis applies to it unchanged.

    Refuses an h whose output is not G's latent size, a G whose latent is a StyleGAN's w or w+ (``gan-probe
    prior`` fits priors over z only) and a G that is already composed with a prior network; a note (not an
    error) when the file records another generator's sha256. ``prior_net`` of the result records h
    (:meth:`LoadedPriorNet.describe`) for the report."""
    if gen.prior_net is not None:
        raise CheckpointError(
            f"the generator is already composed with the prior network {gen.prior_net.get('path') or '(in memory)'}; "
            "compose a prior network with the plain generator",
            param="prior_net",
        )
    if isinstance(gen.prior, MappedPrior):
        raise CheckpointError(
            f"--prior-net maps to a generator's z (gan-probe prior fits priors over z only), but with --space "
            f"{gen.prior.space} the latent is the StyleGAN's {gen.prior.space}: use --space z with --prior-net"
        )
    if prior_net.nz != gen.nz:
        raise CheckpointError(
            f"the prior network {prior_net.path or '(in memory)'} maps to nz = {prior_net.nz} but the generator "
            f"has nz = {gen.nz}",
            param="prior_net",
        )
    h = copy.deepcopy(prior_net.module).to(gen.device, gen.dtype)  # the loaded h keeps its own dtype
    composed = _before_generator(
        gen,
        h,
        nz=prior_net.dim,
        arch=f"{gen.arch} o {ARCH}",
        config={"generator": gen.config, "prior_net": getattr(prior_net.module, "config", {"dim": prior_net.dim})},
        provenance=f"latent z' ~ N(0, I) in R^{prior_net.dim} mapped by the prior network "
        f"{prior_net.path or '(in memory)'} (sha256 {prior_net.sha256})",
    )
    composed.prior_net = prior_net.describe(gen.sha256)
    composed.notes.append(
        f"the latent is z' ~ N(0, I) of the prior network {prior_net.path or '(in memory)'}: the generator is G o h, "
        f"h: R^{prior_net.dim} -> R^{gen.nz}"
    )
    if gen.ignores_norm:  # G(c z) = G(z): G o h is flat along the z' direction that h moves along its ray
        composed.notes.append(
            "the generator ignores |z| (read on the sphere, docs/design.md §1.4) and G o h inherits it along the "
            "direction in which h(z') moves along its ray: J is singular and ln Q (loglik, ascend) undefined "
            "wherever h does not map rays to rays (a linear h does, and is then read on the sphere)"
        )
    if prior_net.dim > gen.nz:  # J = J_G J_h is (N, d') of rank <= nz < d': M = J^T J is singular everywhere
        composed.notes.append(
            f"h: R^{prior_net.dim} -> R^{gen.nz} widens the latent: the Jacobian of G o h has rank at most "
            f"{gen.nz} < {prior_net.dim}, so ln Q (loglik, ascend) is undefined at every z'; a prior fitted with "
            f"--dim {gen.nz} (the default) has one"
        )
    fitted_to = prior_net.generator_sha256
    if fitted_to is not None and gen.sha256 is not None and fitted_to != gen.sha256:
        composed.notes.append(
            f"the prior network was fitted to the generator with sha256 {fitted_to}, not to this one ({gen.sha256})"
        )
    return composed


__all__ = [
    "ARCH",
    "DEFAULT_WIDTHS",
    "LoadedPriorNet",
    "NormalToUniform",
    "PriorCritic",
    "PriorNet",
    "check_prior_net_options",
    "compose_with_prior",
    "load_prior_net",
    "save_prior_net",
    "with_normal_latent",
]
