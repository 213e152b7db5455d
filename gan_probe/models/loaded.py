"""A loaded generator, what the command line may supply or override, and the wrapping every format ends with.

Every checkpoint format (:mod:`gan_probe.models.checkpoint` lists them) builds an
``nn.Module`` mapping (B, nz) latents to outputs and hands it to
:func:`wrap_module`, which puts it in eval mode on its device and dtype, learns
its output shape from two seeded prior draws and freezes the noise of a
generator that draws it inside ``forward`` (:mod:`gan_probe.models.noise`).
The options a format reads are :class:`LoadOptions`; the prior they resolve to
is :func:`resolve_prior`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_probe.errors import CheckpointError, first_line
from gan_probe.limits import MAX_NZ, check_count
from gan_probe.models.noise import FrozenNoise, detect_noise, freeze, frozen_call
from gan_probe.models.priors import Prior
from gan_probe.spectral.jacobian import JacobianRoutes


@dataclass(frozen=True)
class LoadOptions:
    """What the command line may supply or override (None: take the file's)."""

    arch: str | None = None
    nz: int | None = None
    prior: str | None = None
    sigma: float | None = None
    low: float | None = None
    high: float | None = None
    generator: str | None = None
    #: StyleGAN2 only: latent space z, w or w+ (default z), truncation psi, noise stored|zero|seed:N
    space: str | None = None
    truncation: float | None = None
    noise: str | None = None
    #: style generators: truncate the first N layers only (NVIDIA's truncation_cutoff); the class of a conditional one
    truncation_cutoff: int | None = None
    class_index: int | None = None
    #: the entry of a checkpoint container holding the generator ("a.b": nested entries, then a key prefix)
    key: str | None = None
    #: (low, high) of the output, or "none" for no pixel range (None: the file's or the module's)
    output_range: tuple[float, float] | str | None = None
    #: the seed of a stochastic generator's frozen noise
    seed: int = 0
    #: --dtype auto: run in float32 and recompute in float64 the latents whose float32 J is flagged
    dtype_auto: bool = False
    #: a prior network file (gan-probe prior's prior.safetensors): the generator becomes G o h, latent z' ~ N(0, I)
    prior_net: str | None = None


@dataclass
class LoadedGenerator:
    """A generator ready to run: eval mode, on its device and dtype, latents (B, nz) in.

    ``key``: the checkpoint entry the weights came from (None: the whole file).
    ``extras``: non-weight values stored beside them (see
    :class:`~gan_probe.models.containers.Container`: ``latent_avg``, ``args``).
    ``noise``: how a stochastic generator's noise is frozen (None: deterministic).
    ``notes``: what the user should be told about how it runs (shared with
    ``routes``, which adds a note when J needs another route). ``auto_float64``:
    ``--dtype auto``, latents flagged in float32 are recomputed by :meth:`float64`.
    """

    module: nn.Module
    arch: str
    config: dict
    nz: int
    prior: Prior
    output_shape: tuple[int, ...]
    output_range: tuple[float, float] | None
    provenance: str
    path: str | None
    sha256: str | None
    source: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    #: G(c z) = G(z) for c > 0 by construction (StyleGAN2's PixelNorm in z): read in the sphere geometry
    ignores_norm: bool = False
    key: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    noise: FrozenNoise | None = None
    notes: list[str] = field(default_factory=list)
    auto_float64: bool = False
    #: why the float64 copy cannot run (``--dtype auto`` then promotes nothing), None when it can or is untried
    float64_unavailable: str | None = None
    routes: JacobianRoutes = field(default_factory=JacobianRoutes)
    #: the prior network h this generator is composed with (G o h, latent z'): its path, sha256, dim, nz and the
    #: generator it was fitted to (:func:`~gan_probe.models.prior_net.compose_with_prior`); None: plain G
    prior_net: dict[str, Any] | None = None
    #: the class a conditional generator runs with (``--class K``); None for an unconditional one
    class_index: int | None = None
    _twin: LoadedGenerator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.routes.notes = self.notes  # one list: notes from loading and from the Jacobian's routes

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def output_dim(self) -> int:
        return math.prod(self.output_shape)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) for z of shape (B, nz); returns (B, *output_shape). A stochastic generator's noise is frozen."""
        if self.noise is None:
            return self.module(z)
        return frozen_call(self.module, z, self.noise)

    def flat(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) flattened to (B, N)."""
        return self(z).reshape(z.shape[0], -1)

    def float64(self) -> LoadedGenerator:
        """This generator in float64 (a copy of the module, made on first use and kept): ``--dtype auto``
        recomputes with it the latents whose float32 J is flagged. Itself when already float64."""
        if self.dtype == torch.float64:
            return self
        if self._twin is None:
            module = copy.deepcopy(self.module).to(torch.float64)
            # the copy shares the notes and the routes (replace passes the same objects)
            self._twin = replace(self, module=module, dtype=torch.float64, auto_float64=False)
        return self._twin

    def describe(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "source": self.source,
            "key": self.key,
            "arch": self.arch,
            "config": self.config,
            "nz": self.nz,
            "prior": self.prior.to_meta(),
            "output": {"shape": list(self.output_shape), "range": range_json(self.output_range)},
            "num_params": self.num_params,
            "provenance": self.provenance,
            "dtype": "auto" if self.auto_float64 else str(self.dtype).replace("torch.", ""),
            "noise": None if self.noise is None else self.noise.describe(),
            "extras": sorted(self.extras),
            "prior_net": None if self.prior_net is None else dict(self.prior_net),
            "notes": list(self.notes),
        }


def range_json(r: tuple[float, float] | list[float] | None) -> list[float] | None:
    return None if r is None else [float(r[0]), float(r[1])]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_output_range(value: tuple[float, float] | list[float] | str | None) -> tuple[float, float] | None:
    """``(low, high)`` from a pair or from "LOW,HIGH" text; "none" (or None) for no pixel range."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        low, high = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"output range {value!r}: give LOW,HIGH (e.g. -1,1 or 0,1) or none", param="output_range"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise CheckpointError(f"output range [{low:g}, {high:g}] needs finite LOW < HIGH", param="output_range")
    return low, high


def resolve_prior(meta: dict | None, options: LoadOptions) -> Prior:
    """The prior of the file's metadata (N(0, I) without), with the options' overrides."""
    base = Prior.from_meta(meta) if meta else Prior()
    kind = options.prior or base.kind
    if kind != base.kind:
        base = Prior(kind)
    return replace(
        base,
        sigma=options.sigma if options.sigma is not None else base.sigma,
        low=options.low if options.low is not None else base.low,
        high=options.high if options.high is not None else base.high,
    )


def wrap_module(
    module: nn.Module,
    *,
    nz: int,
    prior: Prior = Prior(),
    arch: str = "module",
    config: dict | None = None,
    output_shape: tuple[int, ...] = (),
    output_range: tuple[float, float] | list[float] | None = None,
    provenance: str = "in-memory module",
    path: str | None = None,
    sha256: str | None = None,
    source: str = "module",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    key: str | None = None,
    extras: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> LoadedGenerator:
    """An ``nn.Module`` mapping (B, nz) latents to outputs, ready to run: eval mode, weights frozen, on
    ``device``/``dtype``. One forward pass at the prior's centre learns the output shape (and checks it
    against ``output_shape`` when that is given). A module that draws noise inside ``forward`` is run with
    its noise frozen by ``seed`` (:mod:`gan_probe.models.noise`), and a note says so."""
    check_count(nz, "the latent size nz", param="nz", high=MAX_NZ, error=CheckpointError)
    module = module.eval().requires_grad_(False).to(device=device, dtype=dtype)
    loaded = LoadedGenerator(
        module=module,
        arch=arch,
        config=dict(config) if config is not None else {"nz": int(nz)},
        nz=int(nz),
        prior=prior,
        output_shape=tuple(int(v) for v in output_shape),
        output_range=(float(output_range[0]), float(output_range[1])) if output_range is not None else None,
        provenance=provenance,
        path=path,
        sha256=sha256,
        source=source,
        device=torch.device(device),
        dtype=dtype,
        key=key,
        extras=dict(extras or {}),
    )
    return _with_frozen_noise(_with_output_shape(loaded), seed)


def _with_frozen_noise(loaded: LoadedGenerator, seed: int) -> LoadedGenerator:
    """Freeze a stochastic generator's noise (detected at seeded prior draws) and say so."""
    z = loaded.prior.sample(2, loaded.nz, generator=torch.Generator().manual_seed(seed + 12345))
    z = z.to(loaded.device, loaded.dtype)
    why = detect_noise(loaded.module, z)
    if why is None:
        return loaded
    loaded.noise = freeze(loaded.module, z, seed)
    loaded.routes.randomness = "same"
    loaded.notes.append(
        f"the generator draws noise inside forward ({why}): noise: frozen, seed {seed}. Every evaluation is "
        "seeded alike, each latent gets the noise a batch of one draws, and the primal and every tangent see it; "
        "--seed picks another draw"
    )
    return loaded


def _with_output_shape(loaded: LoadedGenerator) -> LoadedGenerator:
    """Run the generator once on two seeded prior draws to learn (and check) its output shape.

    Prior draws rather than the prior's centre: a generator that ignores |z| is undefined at z = 0.
    """
    try:
        draws = loaded.prior.sample(2, loaded.nz, generator=torch.Generator().manual_seed(0))
        z = draws.to(dtype=loaded.dtype, device=loaded.device)
        with torch.no_grad():
            x = loaded.module.eval()(z)
    except Exception as exc:  # noqa: BLE001 - any failure here means the model does not fit the interface
        first = first_line(exc)
        raise CheckpointError(
            f"the generator fails on latents of shape (2, {loaded.nz}): {first}", param="generator"
        ) from None
    if not isinstance(x, torch.Tensor):
        raise CheckpointError(
            f"the generator returns a {type(x).__name__}, not a tensor of shape (B, ...)", param="generator"
        )
    if x.ndim < 2 or x.shape[0] != 2:
        raise CheckpointError(
            f"the generator maps a batch of 2 latents to shape {tuple(x.shape)}; it must return a tensor of "
            "shape (B, ...) with the batch first and at least one output axis (a scalar output: reshape it to (B, 1))",
            param="generator",
        )
    if not x.is_floating_point():
        raise CheckpointError(
            f"the generator's output has dtype {x.dtype}; it must be real floating point", param="generator"
        )
    shape = tuple(int(s) for s in x.shape[1:])
    if loaded.output_shape and loaded.output_shape != shape:
        raise CheckpointError(
            f"metadata says output shape {list(loaded.output_shape)}, the generator gives {list(shape)}"
        )
    if not torch.isfinite(x).all():
        raise CheckpointError("the generator's output is not finite at two prior draws")
    loaded.output_shape = shape
    return loaded


class _Unsqueezed(nn.Module):
    """Adapter for custom modules that want (B, nz, 1, 1) inside: the interface stays (B, nz)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z[:, :, None, None])
