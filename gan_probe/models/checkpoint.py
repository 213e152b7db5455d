"""Reading and writing generator checkpoints: one list of formats, tried in order, and the native writer.

A format is a module with the same small interface:

- ``NAME``: what it reads, in words;
- ``detect(file, options) -> bool``: whether it reads ``file`` (a
  :class:`~pathlib.Path`, or None when no CKPT is given with ``--generator``)
  under ``options``; it reads as little as it can (a suffix, a zip listing) and
  never runs code;
- ``load(file, options, *, device, dtype) -> LoadedGenerator``: the generator,
  built by :func:`~gan_probe.models.loaded.wrap_module`; bad input raises
  :class:`~gan_probe.errors.CheckpointError` naming the file.

:data:`FORMATS` lists them; the first whose ``detect`` is true loads the file,
so adding a format is one module and one line there. Today:
:mod:`gan_probe.models.nvidia.loader` (NVIDIA's StyleGAN pickles, by content or
``.pkl``, read by a restricted unpickler only), :mod:`gan_probe.models.programs`
(TorchScript and torch.export programs, which carry their own architecture), :mod:`gan_probe.models.factories` (a custom
architecture from ``--generator package.module:factory``, the one path that
runs code, and only the user's own, by explicit request) and
:mod:`gan_probe.models.state_dicts` (native and foreign safetensors, PyTorch
state dicts and training checkpoints, built into a known architecture; last: it
takes every other file). Whatever the format, a checkpoint never runs code, and
a generator that draws noise inside ``forward`` is run with its noise frozen
(:mod:`gan_probe.models.noise`).

The loaded-generator type, :class:`LoadOptions` (what flags supply or
override) and the wrapping live in :mod:`gan_probe.models.loaded`; the native
metadata and the writer in :mod:`gan_probe.models.metadata`. Their names are re-exported here.

``options.prior_net`` (``--prior-net``) names a prior network file
(:mod:`gan_probe.models.prior_net`): the loaded generator is then G o h, whose
latent is z' ~ N(0, I) (docs/design.md §7.6).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch

from gan_probe.errors import CheckpointError
from gan_probe.limits import MAX_NZ, check_count
from gan_probe.models import factories, programs, state_dicts
from gan_probe.models.bundled import default_checkpoint
from gan_probe.models.latent_spaces import parse_noise
from gan_probe.models.loaded import (
    LoadedGenerator,
    LoadOptions,
    file_sha256,
    parse_output_range,
    resolve_prior,
    wrap_module,
)
from gan_probe.models.metadata import FORMAT_VERSION, METADATA_KEY, check_metadata, save_checkpoint
from gan_probe.models.nvidia import loader as nvidia_pickles
from gan_probe.models.prior_net import check_prior_net_options, compose_with_prior, load_prior_net
from gan_probe.models.state_dicts import TORCH_SUFFIXES, check_tensor_sizes, read_checkpoint, read_state_file


class CheckpointFormat(Protocol):
    """The interface of a checkpoint format module (see the module docstring)."""

    NAME: str

    def detect(self, file: Path | None, options: LoadOptions, /) -> bool: ...

    def load(
        self, file: Path | None, options: LoadOptions, /, *, device: torch.device | str, dtype: torch.dtype
    ) -> LoadedGenerator: ...


#: The checkpoint formats, in the order they are tried.
FORMATS: tuple[CheckpointFormat, ...] = (nvidia_pickles, programs, factories, state_dicts)


def checkpoint_format(file: Path | None, options: LoadOptions) -> CheckpointFormat:
    """The first format of :data:`FORMATS` that reads ``file`` under ``options``."""
    for fmt in FORMATS:
        if fmt.detect(file, options):
            return fmt
    raise CheckpointError(f"{file}: no checkpoint format reads it ({', '.join(f.NAME for f in FORMATS)})")


def load_generator(
    path: str | os.PathLike | None,
    options: LoadOptions = LoadOptions(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedGenerator:
    """Load a checkpoint (None: the bundled default) and move it to ``device``/``dtype`` in eval mode.

    ``options.dtype_auto`` (``--dtype auto``) runs float32 and marks the generator for float64 promotion.
    ``options.prior_net``: the generator returned is G o h with the prior network of that file (read first, so
    that a bad file is refused before the weights), latent z' ~ N(0, I)."""
    prior_net = None
    if options.prior_net is not None:
        check_prior_net_options(options)
        prior_net = load_prior_net(options.prior_net)
    if options.nz is not None:
        check_count(options.nz, "the latent size nz", param="nz", high=MAX_NZ, error=CheckpointError)
    if options.noise is not None:
        parse_noise(options.noise)  # a bad --noise is refused before the weights are read
    if options.dtype_auto:
        dtype = torch.float32
    if path is not None:
        file: Path | None = Path(path)
    else:  # --generator without CKPT builds from code alone; otherwise the bundled default
        file = None if options.generator is not None else default_checkpoint()
    gen = checkpoint_format(file, options).load(file, options, device=device, dtype=dtype)
    if options.output_range is not None:
        gen.output_range = parse_output_range(options.output_range)
    if prior_net is not None:
        gen = compose_with_prior(gen, prior_net)
    gen.auto_float64 = options.dtype_auto
    return gen


__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "TORCH_SUFFIXES",
    "CheckpointFormat",
    "LoadOptions",
    "LoadedGenerator",
    "check_metadata",
    "check_tensor_sizes",
    "checkpoint_format",
    "file_sha256",
    "load_generator",
    "parse_output_range",
    "read_checkpoint",
    "read_state_file",
    "resolve_prior",
    "save_checkpoint",
    "wrap_module",
]
