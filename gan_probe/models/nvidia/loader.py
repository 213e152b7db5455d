"""NVIDIA's StyleGAN pickles as generators: read by the restricted reader, rebuilt in plain torch, seen from a
latent space.

A file is NVIDIA's by its content (:func:`~gan_probe.models.nvidia.pickle_reader.looks_like_nvidia_pickle`: the
persistence reconstructor or the TensorFlow network class named near its start) or by its ``.pkl`` extension; such
a file goes to :func:`~gan_probe.models.nvidia.pickle_reader.read_nvidia_pickle` only, never to ``torch.load`` or
any other unpickler, and a ``.pkl`` that is not NVIDIA's is refused unread. The generator is the entry ``G_ema``,
else ``G`` (``--key`` picks another); stylegan2-ada-pytorch's and the stylegan3 repository's StyleGAN2 (and the
TensorFlow-era files, converted by the reader to the former) are rebuilt by
:func:`~gan_probe.models.nvidia.stylegan2.build_stylegan2`, StyleGAN3 (T and R) by
:func:`~gan_probe.models.nvidia.stylegan3.build_stylegan3`. The latent spaces, truncation (against the stored
``w_avg``), noise and class are those of :func:`gan_probe.models.latent_spaces.stylegan2_latent`.

The report's ``checkpoint`` block records ``source: nvidia-pickle``, ``key`` (the entry used) and in ``config``
the architecture in words, the class name, the init kwargs, the entries of the file and what each holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch

from gan_probe.errors import CheckpointError
from gan_probe.models.latent_spaces import stylegan2_latent
from gan_probe.models.loaded import LoadedGenerator, LoadOptions, file_sha256, resolve_prior, wrap_module
from gan_probe.models.nvidia.pickle_reader import (
    STYLEGAN2_ADA_GENERATOR,
    STYLEGAN3_GENERATOR,
    WHOLE_FILE,
    NetworkRecord,
    describe_entry,
    looks_like_nvidia_pickle,
    pick_generator,
    read_nvidia_pickle,
)

SOURCE = "nvidia-pickle"
SUFFIX = ".pkl"
#: The pixel range of NVIDIA's generators: their scripts save (img * 127.5 + 128).clamp(0, 255).
OUTPUT_RANGE = (-1.0, 1.0)


NAME = "NVIDIA pickle"


def detect(file: Path | None, options: LoadOptions) -> bool:
    """The checkpoint format's test (:mod:`gan_probe.models.checkpoint`): :func:`claims_nvidia_pickle`."""
    return file is not None and claims_nvidia_pickle(file)


def load(file: Path | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype) -> LoadedGenerator:
    """The checkpoint format's loader: :func:`load_nvidia_pickle`."""
    if file is None:  # detect() claims files only
        raise CheckpointError("an NVIDIA pickle checkpoint needs a file")
    return load_nvidia_pickle(file, options, device=device, dtype=dtype)


def claims_nvidia_pickle(file: Path) -> bool:
    """Whether ``file`` is for this loader: a ``.pkl`` (NVIDIA's extension), or any file whose start names
    NVIDIA's globals. Reads at most 1 MiB of it; unpickles nothing."""
    return file.suffix == SUFFIX or (file.is_file() and looks_like_nvidia_pickle(file))


def architecture_name(record: NetworkRecord, module: Any) -> str:
    """The architecture in words: 'StyleGAN2-ADA (skip)', 'StyleGAN2, stylegan3 repository (skip)',
    'StyleGAN2 (TensorFlow-era file, skip)', 'StyleGAN3-T', 'StyleGAN3-R'."""
    if record.class_name == STYLEGAN3_GENERATOR:
        return str(getattr(module, "architecture", "StyleGAN3"))
    synthesis = str(getattr(getattr(module, "config", None), "architecture", "skip"))
    if not record.module_classes:  # converted from a TensorFlow network: no module tree was stored
        return f"StyleGAN2 (TensorFlow-era file, {synthesis})"
    if record.class_name == STYLEGAN2_ADA_GENERATOR:
        return f"StyleGAN2-ADA ({synthesis})"
    return f"StyleGAN2, stylegan3 repository ({synthesis})"


def _build(record: NetworkRecord, dtype: torch.dtype) -> Any:
    if record.class_name == STYLEGAN3_GENERATOR:
        from gan_probe.models.nvidia.stylegan3 import build_stylegan3

        # its NetworkState protocol declares settable attributes; the frozen record has the same fields, read-only
        return build_stylegan3(cast(Any, record)).to(dtype)
    from gan_probe.models.nvidia.stylegan2 import build_stylegan2

    return build_stylegan2(record, dtype=dtype)


def _check_finite(record: NetworkRecord, file: Path) -> None:
    for name, tensor in record.state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{file}: tensor {name!r} has NaN or infinite values")


def _refuse_flags(options: LoadOptions, file: Path) -> None:
    """Flags that describe a file without its architecture have no place here: the pickle says it all."""
    if options.generator is not None:
        raise CheckpointError(
            f"{file} is an NVIDIA pickle, rebuilt from its own class and init kwargs: drop --generator",
            param="generator",
        )
    if options.arch is not None:
        raise CheckpointError(
            f"{file} is an NVIDIA pickle, rebuilt from its own class and init kwargs: drop --arch", param="arch"
        )


def load_nvidia_pickle(
    file: str | os.PathLike,
    options: LoadOptions,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
) -> LoadedGenerator:
    """The generator of an NVIDIA pickle, seen from ``options.space`` (z, w or w+), on ``device``/``dtype``.

    Raises :class:`CheckpointError` (one line, naming the file and the flag) for a file that is not one of
    NVIDIA's pickles, any global or structure the reader refuses, an entry that is not a supported generator,
    non-finite weights, and flags that do not apply or do not fit (``--nz``, ``--class``, ``--prior``)."""
    file = Path(file)
    if not file.exists():
        raise CheckpointError(f"checkpoint not found: {file}")
    if not file.is_file():
        raise CheckpointError(f"checkpoint is not a file: {file}")
    if not looks_like_nvidia_pickle(file):
        raise CheckpointError(
            f"{file} is a {SUFFIX} file but not one of NVIDIA's StyleGAN pickles (none of their globals near its "
            "start); gan-probe reads other pickles only as PyTorch files (.pt, .pth, ...) with "
            "torch.load(weights_only=True)"
        )
    _refuse_flags(options, file)
    entries = read_nvidia_pickle(file)
    try:
        entry, record = pick_generator(entries, options.key)
        _check_finite(record, file)
        module = _build(record, dtype)
        latent, space_prior, space_record = stylegan2_latent(
            module,
            space=options.space,
            truncation=options.truncation,
            noise=options.noise,
            latent_avg=None,
            device=device,
            dtype=dtype,
            truncation_cutoff=options.truncation_cutoff,
            class_index=options.class_index,
        )
    except CheckpointError as exc:
        if str(file) in str(exc):
            raise
        raise CheckpointError(f"{file}: {exc}", param=exc.param) from None
    space = space_record["space"]
    if options.nz is not None and options.nz != latent.nz:
        raise CheckpointError(f"{file}: --nz {options.nz} does not match the {space} space, which has nz = {latent.nz}")
    prior = resolve_prior(None, options)
    if space == "z" and prior.kind != "normal":
        raise CheckpointError("a StyleGAN's z prior is normal(0, I): drop --prior/--low/--high", param="prior")
    config = _config(record, module, entry, entries, space_record)
    label = entry if entry != WHOLE_FILE else "the whole file"
    loaded = wrap_module(
        latent,
        nz=latent.nz,
        prior=prior if space == "z" else space_prior,
        arch=config["architecture"],
        config=config,
        output_shape=(int(module.img_channels), *(2 * [int(module.img_resolution)])),
        output_range=OUTPUT_RANGE,
        provenance=f"NVIDIA pickle {file.name}: {record.class_name} from {label}, read without running its code",
        path=str(file),
        sha256=file_sha256(file),
        source=SOURCE,
        device=device,
        dtype=dtype,
        key=None if entry == WHOLE_FILE else entry,
        seed=options.seed,
    )
    loaded.ignores_norm = space == "z"  # the mapping normalises z: G(c z) = G(z), read on the sphere (§1.4)
    loaded.class_index = space_record.get("class")
    if options.noise is not None and not module.noise_shapes():
        loaded.notes.append(f"{config['architecture']} has no noise inputs: --noise {options.noise} changes nothing")
    return loaded


def _config(
    record: NetworkRecord, module: Any, entry: str, entries: dict[str, Any], space_record: dict[str, Any]
) -> dict[str, Any]:
    """What the report's ``checkpoint.config`` holds for an NVIDIA pickle."""
    return {
        "architecture": architecture_name(record, module),
        "class_name": record.class_name,
        "entry": entry if entry != WHOLE_FILE else "(whole file)",
        "entries": {name or "(whole file)": describe_entry(value) for name, value in entries.items()},
        "init_kwargs": record.init_kwargs,
        "resolution": int(module.img_resolution),
        "img_channels": int(module.img_channels),
        "z_dim": int(module.z_dim),
        "w_dim": int(module.w_dim),
        "num_ws": int(module.num_ws),
        "c_dim": int(module.c_dim),
        **space_record,
    }


__all__ = ["NAME", "SOURCE", "architecture_name", "claims_nvidia_pickle", "detect", "load", "load_nvidia_pickle"]
