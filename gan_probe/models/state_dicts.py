"""The state-dict format: safetensors files and PyTorch files holding weights, built into a known architecture.

Native files are ``.safetensors`` with the ``gan_probe`` metadata
(:mod:`gan_probe.models.metadata`); foreign files are bare safetensors and
PyTorch files (``.pth``, ``.pt``, ``.ckpt``, ``.bin``, ``.model``, ``.tar``;
read with ``torch.load(weights_only=True)`` only: a checkpoint never runs code)
whose generator state dict is found inside training checkpoints by
:mod:`gan_probe.models.containers`. The architecture comes from the metadata,
``--arch`` or the keys (:mod:`gan_probe.models.architectures`); what the file
lacks, :class:`~gan_probe.models.loaded.LoadOptions` supplies. This is the last
format tried: it takes every file the others leave, and refuses an unknown
suffix by naming the types it reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gan_probe import device as machine
from gan_probe.device import format_bytes
from gan_probe.errors import CheckpointError, first_line
from gan_probe.limits import MAX_TENSOR_ELEMENTS
from gan_probe.models.architectures import build_generator, detect_arch, infer_config
from gan_probe.models.containers import Container, find_generator_state, read_container
from gan_probe.models.latent_spaces import check_space_options, stylegan2_latent
from gan_probe.models.loaded import LoadedGenerator, LoadOptions, file_sha256, resolve_prior, wrap_module
from gan_probe.models.metadata import FORMAT_VERSION, METADATA_KEY, check_metadata
from gan_probe.models.stylegan2 import StyleGAN2Generator

NAME = "state dict"
#: Suffixes read as PyTorch files (torch.load, weights only); any file may also be a TorchScript program.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".model", ".tar")


def detect(file: Path | None, options: LoadOptions) -> bool:
    """Every file: the formats before this one took theirs."""
    return file is not None


def load(file: Path | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype) -> LoadedGenerator:
    """The generator whose weights ``file`` holds (found by ``options.key`` or by rule), built and loaded."""
    if file is None:  # detect() claims files only
        raise CheckpointError("a state-dict checkpoint needs a file")
    container, meta = read_checkpoint(file, options.key)
    try:
        return _build_builtin(file, container.state, meta, options, device=device, dtype=dtype, container=container)
    except CheckpointError as exc:
        if str(file) in str(exc):
            raise
        raise CheckpointError(f"{file}: {exc}", param=exc.param) from None  # name the file at fault


def read_state_file(file: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a state dict and the gan_probe metadata (None for foreign files) without running code."""
    container, meta = read_checkpoint(file)
    return container.state, meta


def read_checkpoint(file: Path, key: str | None = None) -> tuple[Container, dict | None]:
    """The generator's weights in ``file`` (found by ``key`` or by rule, with the values stored beside them)
    and the gan_probe metadata (None for foreign files), without running code."""
    if not file.exists():
        raise CheckpointError(f"checkpoint not found: {file}")
    if not file.is_file():
        raise CheckpointError(f"checkpoint is not a file: {file}")
    if file.suffix == ".safetensors":
        state, meta = _read_safetensors(file)
        container = find_generator_state(state, key=key, where=file.name) if state else Container({})
    elif file.suffix in TORCH_SUFFIXES:
        try:
            container, meta = read_container(file, key), None
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - the unpickler fails on garbage in many ways (IndexError, KeyError)
            first = first_line(exc, default="")
            raise CheckpointError(
                f"{file} is not a readable PyTorch file (truncated or corrupt): {type(exc).__name__}: {first}"
            ) from None
    else:
        raise CheckpointError(
            f"unknown checkpoint type {file.suffix!r} for {file}: use .safetensors, a PyTorch file "
            f"({', '.join(TORCH_SUFFIXES)}), a TorchScript archive or a torch.export .pt2 program"
        )
    if not container.state:
        raise CheckpointError(f"{file} holds no tensors")
    check_tensor_sizes({k: (tuple(v.shape), v.element_size()) for k, v in container.state.items()}, file)
    for name, tensor in container.state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{file}: tensor {name!r} has NaN or infinite values")
    return container, meta


def _read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            declared = {k: fh.get_slice(k) for k in fh.keys()}
            check_tensor_sizes(
                {k: (tuple(v.get_shape()), _SAFETENSORS_BYTES.get(v.get_dtype(), 8)) for k, v in declared.items()}, file
            )
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file (truncated or corrupt): {exc}") from None
    meta = None
    if METADATA_KEY in raw_meta:
        try:
            meta = json.loads(raw_meta[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{file}: the gan_probe metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{file}: the gan_probe metadata must be a JSON object")
        version = meta.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise CheckpointError(f"{file}: gan_probe format_version {version!r} is not supported (expected 1)")
        check_metadata(meta, file)
    return _strip_prefix(state), meta


#: bytes per value of the safetensors dtypes (others: counted as 8)
_SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2}
_SAFETENSORS_BYTES |= {"I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_tensor_sizes(declared: Mapping[str, tuple[tuple[int, ...], int]], file: Path | str) -> None:
    """Refuse, before any tensor is read or converted, a tensor declaring more than MAX_TENSOR_ELEMENTS values,
    or tensors that would not fit in the host's available memory as stored plus a float32 copy (the least a
    generator built from them takes; ``declared``: name -> (shape, bytes per value)). A PyTorch file can
    hold a stride-0 view (``x.expand``) whose shape is far larger than what it stores: its declared size
    counts, since every use materialises it."""
    sizes = {name: math.prod(shape) for name, (shape, _) in declared.items()}
    for name, numel in sizes.items():
        if numel > MAX_TENSOR_ELEMENTS:
            raise CheckpointError(
                f"{file}: tensor {name!r} declares shape {declared[name][0]}, {numel:,} values, beyond the "
                f"{MAX_TENSOR_ELEMENTS:,} a checkpoint tensor may hold: not a generator's weights"
            )
    need = sum(numel * (declared[name][1] + 4) for name, numel in sizes.items())
    have = machine.host_available_bytes()
    if have is not None and need > have:
        name = max(sizes, key=lambda k: sizes[k])
        raise CheckpointError(
            f"{file}: its tensors would take at least {format_bytes(need)} once loaded (the largest, {name!r}, "
            f"declares shape {declared[name][0]}), more than the {format_bytes(have)} of memory available"
        )


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DataParallel adds."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _build_builtin(
    file: Path,
    state: dict,
    meta: dict | None,
    options: LoadOptions,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    latent_avg: torch.Tensor | None = None,
    container: Container | None = None,
) -> LoadedGenerator:
    meta = dict(meta or {})
    key = container.key if container is not None else None
    if latent_avg is None and container is not None:
        latent_avg = container.latent_avg  # rosinality's running mean of w, stored beside g_ema
    arch = options.arch or meta.get("arch") or detect_arch(state)
    if arch is None:
        entry = f" (entry {key}; --key picks another)" if key else ""
        raise CheckpointError(
            f"{file}: cannot tell the architecture from its keys{entry} (e.g. {next(iter(state))!r}); "
            "pass --arch dcgan|mlp|stylegan2 or --generator package.module:factory"
        )
    config = dict(meta["config"]) if meta.get("arch") == arch and "config" in meta else infer_config(arch, state)
    if options.nz is not None and "nz" in config and config["nz"] != options.nz:
        raise CheckpointError(
            f"{file}: --nz {options.nz} does not match the weights, which have nz = {config.get('nz')}"
        )
    check_space_options(
        arch, options.space, options.truncation, options.noise, options.truncation_cutoff, options.class_index
    )
    try:
        # in the requested dtype before the weights go in: a float64 file loaded as float64 keeps every bit
        module = build_generator(arch, config).to(dtype)
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        # a config of the right type with impossible values (nz = -3, ngf = 1e12): torch's own refusal, one line
        first = first_line(exc)
        raise CheckpointError(f"{file}: the {arch} config {config} cannot be built: {first}") from None
    _load_state(module, state, file)
    out_meta = meta.get("output", {})
    output_range = out_meta.get("range")
    if output_range is None and (arch in ("dcgan", "stylegan2") or config.get("output_activation") == "tanh"):
        output_range = [-1.0, 1.0]
    prior = resolve_prior(meta.get("prior"), options)
    nz = int(config["nz"]) if "nz" in config else 0
    ignores_norm = False
    if isinstance(module, StyleGAN2Generator):
        latent, space_prior, record = stylegan2_latent(
            module,
            space=options.space,
            truncation=options.truncation,
            noise=options.noise,
            latent_avg=latent_avg,
            device=device,
            dtype=dtype,
            truncation_cutoff=options.truncation_cutoff,
            class_index=options.class_index,
        )
        module, nz, config = latent, latent.nz, {**config, **record}
        prior = space_prior if record["space"] != "z" else prior
        ignores_norm = record["space"] == "z"
        if prior.kind != "normal" and record["space"] == "z":
            raise CheckpointError("a StyleGAN2's z prior is normal(0, I): drop --prior/--low/--high", param="prior")
    if options.nz is not None and nz != options.nz:
        where = f" in its {config['space']} space" if "space" in config else ""
        raise CheckpointError(f"{file}: --nz {options.nz} does not match the weights, which have nz = {nz}{where}")
    loaded = wrap_module(
        module,
        nz=nz,
        prior=prior,
        arch=arch,
        config=config,
        output_shape=tuple(int(v) for v in out_meta.get("shape", [])),
        output_range=output_range,
        provenance=str(meta.get("provenance", f"foreign file {file.name}: no gan_probe metadata")),
        path=str(file),
        sha256=file_sha256(file),
        source="native" if meta else ("safetensors" if file.suffix == ".safetensors" else "pth"),
        device=device,
        dtype=dtype,
        key=key,
        extras=container.extras if container is not None else None,
        seed=options.seed,
    )
    loaded.ignores_norm = ignores_norm
    return loaded


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], file: Path | str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{file}: state dict does not fit the architecture: {'; '.join(parts)}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{file}: {key!r} has shape {tuple(state[key].shape)}, the architecture expects {tuple(ref.shape)}"
            )
        have = state[key].dtype
        # a float weight stored as int, bool or complex would be cast silently: refused (integer buffers such as
        # BatchNorm's num_batches_tracked stay integers)
        if ref.is_floating_point() and (not have.is_floating_point or have.is_complex):
            raise CheckpointError(
                f"{file}: tensor {key!r} has dtype {str(have).replace('torch.', '')}, but it is a weight of "
                f"dtype {str(ref.dtype).replace('torch.', '')}: the file is not a checkpoint of this architecture "
                "or was saved after a cast; save the weights as floating point"
            )
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected})
