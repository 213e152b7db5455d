"""Reading and writing generator checkpoints.

Native format: a ``.safetensors`` file holding the generator's state dict,
with a metadata key ``gan_probe`` whose JSON value records ``format_version``,
``arch``, ``config``, ``prior``, ``output`` (shape and range) and
``provenance``. Foreign files are ``.pth``/``.pt`` state dicts (read with
``torch.load(weights_only=True)`` only: a checkpoint never runs code) and bare
safetensors; flags in :class:`LoadOptions` supply or override what they lack.
A custom architecture comes from ``--generator package.module:factory``, the
one path that runs code, and only the user's own, by explicit request.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from gan_probe.atomic import write_atomic
from gan_probe.errors import CheckpointError
from gan_probe.models.architectures import build_generator, detect_arch, infer_config
from gan_probe.models.bundled import default_checkpoint
from gan_probe.models.priors import Prior

FORMAT_VERSION = 1
METADATA_KEY = "gan_probe"
_WRAPPER_KEYS = ("state_dict", "generator", "netG", "G", "model", "gen", "generator_state_dict")


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


@dataclass
class LoadedGenerator:
    """A generator ready to run: eval mode, on its device and dtype, latents (B, nz) in."""

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

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def output_dim(self) -> int:
        return math.prod(self.output_shape)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) for z of shape (B, nz); returns (B, *output_shape)."""
        return self.module(z)

    def flat(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) flattened to (B, N)."""
        return self.module(z).reshape(z.shape[0], -1)

    def describe(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "source": self.source,
            "arch": self.arch,
            "config": self.config,
            "nz": self.nz,
            "prior": self.prior.to_meta(),
            "output": {"shape": list(self.output_shape), "range": _range_json(self.output_range)},
            "num_params": self.num_params,
            "provenance": self.provenance,
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
    """Load a checkpoint (None: the bundled default) and move it to ``device``/``dtype`` in eval mode."""
    if options.nz is not None and (isinstance(options.nz, bool) or not isinstance(options.nz, int) or options.nz < 1):
        raise CheckpointError(f"the latent size nz must be a positive integer, got {options.nz!r}", param="nz")
    if options.generator is not None:
        return _load_custom(path, options, device=device, dtype=dtype)
    file = Path(path) if path is not None else default_checkpoint()
    state, meta = read_state_file(file)
    try:
        return _build_builtin(file, state, meta, options, device=device, dtype=dtype)
    except CheckpointError as exc:
        if str(file) in str(exc):
            raise
        raise CheckpointError(f"{file}: {exc}", param=exc.param) from None  # name the file at fault


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
) -> LoadedGenerator:
    """An ``nn.Module`` mapping (B, nz) latents to outputs, ready to run: eval mode, weights frozen, on
    ``device``/``dtype``. One forward pass at the prior's centre learns the output shape (and checks it
    against ``output_shape`` when that is given)."""
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
    )
    return _with_output_shape(loaded)


def read_state_file(file: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a state dict and the gan_probe metadata (None for foreign files) without running code."""
    if not file.exists():
        raise CheckpointError(f"checkpoint not found: {file}")
    if not file.is_file():
        raise CheckpointError(f"checkpoint is not a file: {file}")
    if file.suffix == ".safetensors":
        state, meta = _read_safetensors(file)
    elif file.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            state, meta = _read_torch(file), None
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - the unpickler fails on garbage in many ways (IndexError, KeyError)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(
                f"{file} is not a readable PyTorch file (truncated or corrupt): {type(exc).__name__}: {first}"
            ) from None
    else:
        raise CheckpointError(f"unknown checkpoint type {file.suffix!r} for {file}: use .safetensors, .pth or .pt")
    if not state:
        raise CheckpointError(f"{file} holds no tensors")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{file}: tensor {key!r} has NaN or infinite values")
    return state, meta


def _read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
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


def _read_torch(file: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{file} was refused: it holds pickled objects other than tensors ({first}); "
            "gan-probe loads .pth files with weights_only=True and never runs code from a checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable PyTorch file (truncated or corrupt): {exc}") from None
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(
            f"{file} does not hold a state dict (a mapping of names to tensors) but {type(obj).__name__}"
        )
    return _strip_prefix(dict(obj))


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DataParallel adds."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _build_builtin(
    file: Path, state: dict, meta: dict | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype
) -> LoadedGenerator:
    meta = dict(meta or {})
    arch = options.arch or meta.get("arch") or detect_arch(state)
    if arch is None:
        raise CheckpointError(
            f"{file}: cannot tell the architecture from its keys (e.g. {next(iter(state))!r}); "
            "pass --arch dcgan|mlp or --generator package.module:factory"
        )
    config = dict(meta["config"]) if meta.get("arch") == arch and "config" in meta else infer_config(arch, state)
    if options.nz is not None and config.get("nz") != options.nz:
        raise CheckpointError(
            f"{file}: --nz {options.nz} does not match the weights, which have nz = {config.get('nz')}"
        )
    try:
        module = build_generator(arch, config)
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        # a config of the right type with impossible values (nz = -3, ngf = 1e12): torch's own refusal, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: the {arch} config {config} cannot be built: {first}") from None
    _load_state(module, state, file)
    out_meta = meta.get("output", {})
    output_range = out_meta.get("range")
    if output_range is None and (arch == "dcgan" or config.get("output_activation") == "tanh"):
        output_range = [-1.0, 1.0]
    return wrap_module(
        module,
        nz=int(config["nz"]),
        prior=_resolve_prior(meta.get("prior"), options),
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
    )


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
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected})


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
    """Run the generator once on the prior's centre to learn (and check) its output shape."""
    try:
        z = torch.full((2, loaded.nz), loaded.prior.center, dtype=loaded.dtype, device=loaded.device)
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
        raise CheckpointError("the generator's output is not finite at the prior's centre")
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
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - user code, reported on one line
        raise CheckpointError(f"--generator {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"--generator {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    nz = options.nz or getattr(module, "nz", None)
    if nz is None:
        raise CheckpointError(f"--generator {spec}: give --nz (the module has no 'nz' attribute)")
    sha = None
    if path is not None:
        state, _ = read_state_file(Path(path))
        _load_state(module, state, str(path))
        sha = file_sha256(Path(path))
    module.eval()
    with torch.no_grad():
        try:
            module(torch.zeros(2, int(nz)))
        except Exception:  # noqa: BLE001 - try the DCGAN-style (B, nz, 1, 1) input next
            module = _Unsqueezed(module)
    return wrap_module(
        module,
        nz=int(nz),
        prior=_resolve_prior(None, options),
        arch=f"custom:{spec}",
        provenance=f"custom architecture {spec}" + (f" with weights {path}" if path else ""),
        path=str(path) if path is not None else None,
        sha256=sha,
        source="custom",
        device=device,
        dtype=dtype,
    )


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
) -> None:
    """Write a native gan-probe checkpoint (safetensors + ``gan_probe`` metadata), atomically."""
    from safetensors.torch import save as safetensors_bytes

    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": dict(config),
        "prior": prior.to_meta(),
        "output": {"shape": [int(s) for s in output_shape], "range": _range_json(output_range)},
        "provenance": provenance,
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    blob = safetensors_bytes(state, metadata={METADATA_KEY: json.dumps(meta)})
    write_atomic(Path(path), lambda fh: fh.write(blob))
