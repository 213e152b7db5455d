"""What every analysis shares: latents in, progress out, batching, per-latent random streams."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gan_probe.errors import DataError, GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.priors import MappedPrior, Prior
from gan_probe.spectral.geometry import GEOMETRIES
from gan_probe.spectral.operator import JacobianOperator

Advance = Callable[[int], None]


class Progress(Protocol):
    """Reports progress; the CLI gives a Rich bar on a TTY, the library a no-op."""

    def task(self, description: str, total: int) -> Advance: ...


class NoProgress:
    def task(self, description: str, total: int) -> Advance:
        return lambda n: None


@contextmanager
def progress_task(progress: Progress | None, description: str, total: int) -> Iterator[Advance]:
    yield (progress or NoProgress()).task(description, total)


def finite_stats(x: torch.Tensor) -> dict[str, float | None]:
    """mean, median (the average of the two middle values for an even count), min and max of the
    finite entries of x; all None when there are none (e.g. every ln Q undefined)."""
    finite = x.detach().double().flatten()
    finite = finite[torch.isfinite(finite)]
    if not finite.numel():
        return {"mean": None, "median": None, "min": None, "max": None}
    return {
        "mean": float(finite.mean()),
        "median": float(finite.quantile(0.5)),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same numbers on every device."""
    return torch.Generator().manual_seed(int(seed))


def probe_streams(seed: int, start: int, stop: int) -> list[torch.Generator]:
    """One random stream per latent index in [start, stop), so estimates do not depend on the batch size."""
    return [seeded_generator(seed * 1_000_003 + 7919 + i) for i in range(start, stop)]


def jacobian_operator(gen: LoadedGenerator, z: torch.Tensor, chunk_size: int | None = None) -> JacobianOperator:
    """The Jacobian operator of ``gen`` at latents z (moved to the generator's device and dtype)."""
    return JacobianOperator(gen.flat, z.to(gen.device, gen.dtype), chunk_size=chunk_size, routes=gen.routes)


def batches(num: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` out of ``num``."""
    for start in range(0, num, size):
        yield slice(start, min(num, start + size))


def check_positive(name: str, value: float, param: str, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``); ``param`` names the argument."""
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise GanProbeError(f"{name} must be a finite number {bound}, got {value}", param=param)


def load_latents(path: str | Path, nz: int, prior: Prior | None = None) -> torch.Tensor:
    """Latents (N, nz) as float64 from .npy, .npz or .safetensors.

    In an .npz or .safetensors file the array is the one named ``z`` or
    ``latents``, or the only array in the file. In a StyleGAN2's w or w+ space
    (``prior`` a :class:`MappedPrior`) an array named ``w`` / ``w_plus`` holds
    points of that space, while ``z`` (or an unnamed array) holds prior latents,
    which are mapped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"latents file not found: {path}", param="latents")
    try:
        if path.suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = dict(load_file(str(path)))
        else:
            raise DataError(f"latents file {path} must be .npy, .npz or .safetensors", param="latents")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"cannot read latents from {path}: {exc}", param="latents") from None
    mapped = isinstance(prior, MappedPrior)
    own = LATENT_KEYS.get(prior.space, "z") if isinstance(prior, MappedPrior) else "z"
    if mapped and own in arrays:
        arr = arrays[own]
    else:
        arr = arrays[""] if "" in arrays else _pick_array(arrays, path)
        if isinstance(prior, MappedPrior):
            z = _as_latents(arr, path, prior.z_dim)
            return prior.map_z(z)
    return _as_latents(arr, path, nz)


def _as_latents(arr: np.ndarray, path: Path, nz: int) -> torch.Tensor:
    if np.iscomplexobj(arr):
        raise DataError(f"latents in {path} are complex ({arr.dtype}); give real numbers", param="latents")
    if arr.ndim != 2:
        raise DataError(f"latents in {path} have shape {arr.shape}; expected (N, {nz})", param="latents")
    if arr.shape[1] != nz:
        raise DataError(f"latents in {path} have width {arr.shape[1]} but the generator has nz = {nz}", param="latents")
    if arr.shape[0] < 1:
        raise DataError(f"latents file {path} holds no latents")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"latents in {path} are not numbers ({arr.dtype})")
    z = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    if not torch.isfinite(z).all():
        raise DataError(f"latents in {path} contain NaN or infinite values")
    return z


#: The array name of each latent space's points in a latents file (what the tool writes and reads back).
LATENT_KEYS = {"z": "z", "w": "w", "w+": "w_plus"}


def latent_key(gen: LoadedGenerator) -> str:
    """The name under which latents of ``gen``'s space are saved (``z``, ``w`` or ``w_plus``)."""
    return LATENT_KEYS.get(gen.prior.space, "z") if isinstance(gen.prior, MappedPrior) else "z"


def _pick_array(arrays: dict[str, np.ndarray], path: Path) -> np.ndarray:
    for key in ("z", "latents"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"{path} holds arrays {sorted(arrays)}; name the latents 'z' or 'latents'")


#: Latents as an analysis takes them: a file (.npy/.npz/.safetensors), an (N, nz) array, or None (prior draws).
Latents = str | Path | torch.Tensor | np.ndarray | None


def check_latents(z: torch.Tensor | np.ndarray, nz: int) -> torch.Tensor:
    """An in-memory (N, nz) array of real, finite numbers, as float64 on the CPU."""
    t = torch.as_tensor(z)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise DataError(f"latents must be real numbers, got dtype {t.dtype}", param="latents")
    if t.ndim != 2 or t.shape[1] != nz or t.shape[0] < 1:
        raise DataError(f"latents have shape {tuple(t.shape)}; expected (N, {nz}) with N >= 1", param="latents")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise DataError("latents contain NaN or infinite values", param="latents")
    return t


def draw_or_load_latents(gen: LoadedGenerator, *, num: int, latents: Latents, seed: int) -> torch.Tensor:
    """(N, nz) float64 latents: from ``latents`` (a file or an array) if given, else ``num`` draws from the prior."""
    if isinstance(latents, (torch.Tensor, np.ndarray)):
        return check_latents(latents, gen.nz)
    if latents is not None:
        return load_latents(latents, gen.nz, gen.prior)
    if num < 1:
        raise GanProbeError(f"the number of latents must be at least 1, got {num}", param="num")
    return gen.prior.sample(num, gen.nz, generator=seeded_generator(seed))


def generate(
    gen: LoadedGenerator, z: torch.Tensor, batch_size: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """G(z) in batches of ``batch_size``, returned on the CPU in ``dtype`` (float32 for rendering)."""
    out = []
    with torch.no_grad():
        for sl in batches(z.shape[0], batch_size):
            out.append(gen(z[sl].to(gen.device, gen.dtype)).to("cpu", dtype))
    return torch.cat(out)


def resolve_geometry(gen: LoadedGenerator, geometry: str) -> str:
    """The geometry to read latents in: ``auto`` is sphere for a generator known to ignore |z|, per-latent
    detection otherwise; the sphere reading needs a normal prior (a box is not rotation-invariant)."""
    if geometry not in GEOMETRIES:
        raise GanProbeError(f"unknown geometry {geometry!r}: use one of {', '.join(GEOMETRIES)}", param="geometry")
    if gen.prior.kind != "normal":
        if geometry == "sphere":
            raise GanProbeError(
                "the sphere geometry needs a normal prior: under a uniform box the direction z/|z| is not uniform",
                param="geometry",
            )
        return "euclidean"
    if geometry == "auto" and gen.ignores_norm:
        return "sphere"
    return geometry


def require_density(gen: LoadedGenerator, command: str) -> None:
    """ln Q needs ln P_Z: a space without a closed-form prior (a StyleGAN2's w, w+) is refused."""
    if isinstance(gen.prior, MappedPrior):
        raise GanProbeError(
            f"{command} needs a latent space with a closed-form prior; {gen.prior.space} has none "
            "(its points are mapped draws): use the z space",
            param="space",
        )
