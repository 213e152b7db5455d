"""Reading and writing generator checkpoints.

Native format: a ``.safetensors`` file holding the generator's state dict,
with a metadata key ``gan_probe`` whose JSON value records ``format_version``,
``arch``, ``config``, ``prior``, ``output`` (shape and range) and
``provenance``. Foreign files are PyTorch files (``.pth``, ``.pt``, ``.ckpt``,
``.bin``, ``.model``, ``.tar``; read with ``torch.load(weights_only=True)``
only: a checkpoint never runs code) whose generator state dict is found inside
training checkpoints by :mod:`gan_probe.models.containers`, bare safetensors,
and TorchScript or torch.export programs (:mod:`gan_probe.models.programs`);
flags in :class:`LoadOptions` supply or override what they lack. A custom
architecture comes from ``--generator package.module:factory``, the one path
that runs code, and only the user's own, by explicit request. A generator that
draws noise inside ``forward`` is run with its noise frozen
(:mod:`gan_probe.models.noise`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_probe import device as machine
from gan_probe.atomic import write_atomic
from gan_probe.device import format_bytes
from gan_probe.errors import CheckpointError
from gan_probe.limits import MAX_NZ, MAX_TENSOR_ELEMENTS, check_count
from gan_probe.models.architectures import build_generator, detect_arch, infer_config
from gan_probe.models.bundled import default_checkpoint
from gan_probe.models.containers import Container, find_generator_state, read_container
from gan_probe.models.latent_spaces import check_space_options, parse_noise, stylegan2_latent
from gan_probe.models.noise import FrozenNoise, detect_noise, freeze, frozen_call
from gan_probe.models.priors import Prior
from gan_probe.models.stylegan2 import StyleGAN2Generator
from gan_probe.spectral.jacobian import JacobianRoutes

FORMAT_VERSION = 1
METADATA_KEY = "gan_probe"
#: Suffixes read as PyTorch files (torch.load, weights only); any file may also be a TorchScript program.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".model", ".tar")


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
            "output": {"shape": list(self.output_shape), "range": _range_json(self.output_range)},
            "num_params": self.num_params,
            "provenance": self.provenance,
            "dtype": "auto" if self.auto_float64 else str(self.dtype).replace("torch.", ""),
            "noise": None if self.noise is None else self.noise.describe(),
            "extras": sorted(self.extras),
            "notes": list(self.notes),
        }


def _range_json(r: tuple[float, float] | list[float] | None) -> list[float] | None:
    return None if r is None else [float(r[0]), float(r[1])]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_generator(
    path: str | os.PathLike | None,
    options: LoadOptions = LoadOptions(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedGenerator:
    """Load a checkpoint (None: the bundled default) and move it to ``device``/``dtype`` in eval mode.

    ``options.dtype_auto`` (``--dtype auto``) runs float32 and marks the generator for float64 promotion."""
    if options.nz is not None:
        check_count(options.nz, "the latent size nz", param="nz", high=MAX_NZ, error=CheckpointError)
    if options.noise is not None:
        parse_noise(options.noise)  # a bad --noise is refused before the weights are read
    if options.dtype_auto:
        dtype = torch.float32
    from gan_probe.models.nvidia.loader import claims_nvidia_pickle, load_nvidia_pickle  # it imports this module

    if path is not None and claims_nvidia_pickle(Path(path)):  # read by the restricted reader only, never torch.load
        gen = load_nvidia_pickle(Path(path), options, device=device, dtype=dtype)
    elif options.generator is not None and (path is None or _program_kind(Path(path)) is None):
        gen = _load_custom(path, options, device=device, dtype=dtype)
    else:
        file = Path(path) if path is not None else default_checkpoint()
        kind = _program_kind(file)
        if kind is not None:
            from gan_probe.models.programs import load_program

            gen = load_program(file, kind, options, device=device, dtype=dtype)
        else:
            container, meta = read_checkpoint(file, options.key)
            try:
                gen = _build_builtin(
                    file, container.state, meta, options, device=device, dtype=dtype, container=container
                )
            except CheckpointError as exc:
                if str(file) in str(exc):
                    raise
                raise CheckpointError(f"{file}: {exc}", param=exc.param) from None  # name the file at fault
    if options.output_range is not None:
        gen.output_range = parse_output_range(options.output_range)
    gen.auto_float64 = options.dtype_auto
    return gen


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


def _program_kind(file: Path) -> str | None:
    if file.suffix == ".safetensors" or not file.is_file():
        return None
    from gan_probe.models.programs import program_kind

    return program_kind(file)


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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_metadata(meta: Mapping, file: Path | str) -> None:
    """Refuse gan_probe metadata whose fields have the wrong JSON types, naming the field and the value.

    ``arch`` a string, ``config`` an object, ``prior`` an object with a string ``kind`` and finite
    numbers ``sigma``/``low``/``high``, ``output`` an object with ``shape`` a list of positive integers
    and ``range`` null or two finite numbers low < high, ``provenance`` a string; every field optional.
    """

    def bad(field: str, want: str, value: object) -> CheckpointError:
        shown = json.dumps(value) if len(json.dumps(value)) <= 60 else json.dumps(value)[:57] + "..."
        return CheckpointError(
            f"{file}: the gan_probe metadata field {field} must be {want}, got {shown}; fix the file's metadata"
        )

    if "arch" in meta and not (isinstance(meta["arch"], str) and meta["arch"]):
        raise bad("arch", "an architecture name (a string)", meta["arch"])
    if "config" in meta and not isinstance(meta["config"], dict):
        raise bad("config", 'a JSON object like {"nz": 32, ...}', meta["config"])
    if "provenance" in meta and not isinstance(meta["provenance"], str):
        raise bad("provenance", "a string", meta["provenance"])
    prior = meta.get("prior")
    if "prior" in meta and not isinstance(prior, dict):
        raise bad("prior", 'a JSON object like {"kind": "normal", "sigma": 1.0}', prior)
    if isinstance(prior, dict):
        if "kind" in prior and not isinstance(prior["kind"], str):
            raise bad("prior.kind", '"normal" or "uniform"', prior["kind"])
        for key in ("sigma", "low", "high"):
            if key in prior and not _is_number(prior[key]):
                raise bad(f"prior.{key}", "a finite number", prior[key])
    output = meta.get("output")
    if "output" in meta and not isinstance(output, dict):
        raise bad("output", 'a JSON object like {"shape": [1, 32, 32], "range": [-1, 1]}', output)
    if isinstance(output, dict):
        shape = output.get("shape")
        if "shape" in output and not (isinstance(shape, list) and all(type(v) is int and v >= 1 for v in shape)):
            raise bad("output.shape", "a list of positive integers", shape)
        rng = output.get("range")
        if rng is not None and not (
            isinstance(rng, list) and len(rng) == 2 and all(_is_number(v) for v in rng) and rng[0] < rng[1]
        ):
            raise bad("output.range", "null or two finite numbers [low, high] with low < high", rng)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: the {arch} config {config} cannot be built: {first}") from None
    _load_state(module, state, file)
    out_meta = meta.get("output", {})
    output_range = out_meta.get("range")
    if output_range is None and (arch in ("dcgan", "stylegan2") or config.get("output_activation") == "tanh"):
        output_range = [-1.0, 1.0]
    prior = _resolve_prior(meta.get("prior"), options)
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


def resolve_prior(meta: dict | None, options: LoadOptions) -> Prior:
    """The prior of the file's metadata (N(0, I) without), with the options' overrides."""
    return _resolve_prior(meta, options)


def _resolve_prior(meta: dict | None, options: LoadOptions) -> Prior:
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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


def _load_custom(
    path: str | os.PathLike | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype
) -> LoadedGenerator:
    """Build ``--generator package.module:factory``. A factory taking ``ckpt_path`` gets CKPT's path and loads
    the weights itself; one taking ``device`` gets the device. Otherwise CKPT's weights are loaded into the
    module (found by ``--key`` or by rule). The module's ``nz`` and ``output_range`` attributes are read."""
    spec = options.generator or ""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CheckpointError(f"--generator must be package.module:factory, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"--generator {spec}: cannot import it ({exc})") from None
    takes = _factory_parameters(factory)
    if "ckpt_path" in takes and options.key is not None:
        raise CheckpointError(f"--generator {spec} loads CKPT itself (it takes ckpt_path): drop --key", param="key")
    kwargs: dict[str, Any] = {}
    if "ckpt_path" in takes:
        kwargs["ckpt_path"] = str(path) if path is not None else None
    if "device" in takes:
        kwargs["device"] = torch.device(device)
    try:
        module = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code, reported on one line
        raise CheckpointError(f"--generator {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"--generator {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    nz = options.nz or getattr(module, "nz", None)
    if nz is None:
        raise CheckpointError(f"--generator {spec}: give --nz (the module has no 'nz' attribute)", param="nz")
    output_range = _range_attribute(module, spec)
    sha, container = None, None
    if path is not None:
        sha = file_sha256(Path(path))
        if "ckpt_path" not in takes:
            container, _ = read_checkpoint(Path(path), options.key)
            _load_state(module, container.state, str(path))
    module.eval()
    probe = next(iter(module.parameters()), None)
    with torch.no_grad():
        try:
            module(
                torch.zeros(
                    2,
                    int(nz),
                    device=probe.device if probe is not None else "cpu",
                    dtype=probe.dtype if probe is not None and probe.is_floating_point() else None,
                )
            )
        except Exception:  # noqa: BLE001 - try the DCGAN-style (B, nz, 1, 1) input next
            module = _Unsqueezed(module)
    weights = ""
    if path is not None:
        weights = (
            f" with weights {path}" if "ckpt_path" not in takes else f", weights loaded by the factory from {path}"
        )
    return wrap_module(
        module,
        nz=int(nz),
        prior=_resolve_prior(None, options),
        output_range=output_range,
        arch=f"custom:{spec}",
        provenance=f"custom architecture {spec}{weights}",
        path=str(path) if path is not None else None,
        sha256=sha,
        source="custom",
        device=device,
        dtype=dtype,
        key=container.key if container is not None else None,
        extras=container.extras if container is not None else None,
        seed=options.seed,
    )


def _factory_parameters(factory: Any) -> set[str]:
    """The names of the parameters a factory accepts (empty when its signature cannot be read)."""
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _range_attribute(module: nn.Module, spec: str) -> tuple[float, float] | None:
    """A module's ``output_range`` attribute, checked: a pair low < high, or None."""
    value = getattr(module, "output_range", None)
    if value is None:
        return None
    try:
        return parse_output_range(value)
    except CheckpointError as exc:
        raise CheckpointError(f"--generator {spec}: its output_range attribute: {exc}") from None


def save_checkpoint(
    path: str | os.PathLike,
    module: nn.Module,
    *,
    arch: str,
    config: Mapping,
    prior: Prior,
    output_shape: tuple[int, ...] | list[int],
    output_range: tuple[float, float] | list[float] | None,
    provenance: str,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a native gan-probe checkpoint (safetensors + ``gan_probe`` metadata), atomically.

    ``extra``: further metadata fields (JSON values) beside the standard ones, which they may not replace."""
    from safetensors.torch import save as safetensors_bytes

    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": dict(config),
        "prior": prior.to_meta(),
        "output": {"shape": [int(s) for s in output_shape], "range": _range_json(output_range)},
        "provenance": provenance,
    }
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata may not replace the standard fields {clash}")
    meta.update(extra or {})
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    blob = safetensors_bytes(state, metadata={METADATA_KEY: json.dumps(meta)})
    write_atomic(Path(path), lambda fh: fh.write(blob))
