"""What every analysis shares: latents in, progress out, batching, per-latent random streams."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal, Protocol

import numpy as np
import torch

from gan_probe import device as machine
from gan_probe import distributed, interrupt
from gan_probe.data import check_regular_file
from gan_probe.device import format_bytes
from gan_probe.errors import DataError, GanProbeError, first_line
from gan_probe.limits import SEED_MAX, check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.priors import MappedPrior, Prior
from gan_probe.spectral.geometry import GEOMETRIES
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.plan import RunPlan

Advance = Callable[[int], None]


class Progress(Protocol):
    """Reports progress; the CLI gives a Rich bar on a TTY, the library a no-op."""

    def task(self, description: str, total: int) -> Advance: ...


class NoProgress:
    def task(self, description: str, total: int) -> Advance:
        return lambda n: None


@contextmanager
def progress_task(progress: Progress | None, description: str, total: int) -> Iterator[Advance]:
    """The progress callback of a task; every advance is also a point where a deferred Ctrl-C is served
    (:func:`gan_probe.interrupt.poll`: a no-op outside the command line)."""
    task = (progress or NoProgress()).task(description, total)

    def advance(n: int) -> None:
        task(n)
        interrupt.poll()

    yield advance


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
    try:
        return torch.Generator().manual_seed(int(seed))
    except (RuntimeError, ValueError, OverflowError):
        raise GanProbeError(f"the seed {seed} is out of range: use 0 to {SEED_MAX}", param="seed") from None


def check_seed(seed: int) -> None:
    """Refuse a seed outside 0..SEED_MAX before any work."""
    check_count(seed, "the seed", param="seed", low=0, high=SEED_MAX)


def probe_streams(seed: int, start: int, stop: int) -> list[torch.Generator]:
    """One random stream per latent index in [start, stop), so estimates do not depend on the batch size."""
    return [seeded_generator(seed * 1_000_003 + 7919 + i) for i in range(start, stop)]


def jacobian_operator(gen: LoadedGenerator, z: torch.Tensor, plan: RunPlan) -> JacobianOperator:
    """The Jacobian operator of ``gen`` at latents z (moved to the generator's device and dtype), with the
    run's chunk (:attr:`gan_probe.spectral.plan.RunPlan.chunk`: on a GPU, from its free memory)."""
    return JacobianOperator(gen.flat, z.to(gen.device, gen.dtype), chunk_size=plan.chunk, routes=gen.routes)


def batches(num: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` out of ``num``."""
    yield from distributed.chunks(num, size)


def check_positive(name: str, value: float, param: str, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``); ``param`` names the argument."""
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise GanProbeError(f"{name} must be a finite number {bound}, got {value}", param=param)


def load_latents(
    path: str | Path,
    nz: int,
    prior: Prior | None = None,
    *,
    param: str = "latents",
    label: int | None | Literal["any"] = "any",
) -> torch.Tensor:
    """Latents (N, nz) as float64 from .npy, .npz or .safetensors.

    In an .npz or .safetensors file the array is the one named ``z`` or
    ``latents``, or the only array in the file. In a StyleGAN2's w or w+ space
    (``prior`` a :class:`MappedPrior`) an array named ``w`` / ``w_plus`` holds
    points of that space, while ``z`` (or an unnamed array) holds prior latents,
    which are mapped. The values must be real (integer or floating point;
    complex is refused, not cast) and finite. ``param`` names the argument that
    gave the file. A ``class`` column (written for a conditional generator) is
    checked against ``label``, the generator's class (None: unconditional;
    ``"any"``: not checked).
    """
    path = Path(path)
    check_regular_file(path, "latents file", param)
    try:
        check_declared_arrays(path, param)
        if path.suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = dict(load_file(str(path)))
        else:
            raise DataError(f"latents file {path} must be .npy, .npz or .safetensors", param=param)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        first = first_line(exc)
        raise DataError(f"cannot read latents from {path}: {first}", param=param) from None
    if isinstance(prior, MappedPrior) and LATENT_KEYS[prior.space] in arrays:
        z = _as_latents(arrays[LATENT_KEYS[prior.space]], nz, param, f"latents in {path}")
    else:
        arr = arrays[""] if "" in arrays else _pick_array(arrays, path, param)
        if isinstance(prior, MappedPrior):
            z = prior.map_z(_as_latents(arr, prior.z_dim, param, f"latents in {path}"))
        else:
            z = _as_latents(arr, nz, param, f"latents in {path}")
    if CLASS_KEY in arrays and label != "any":
        check_class_column(arrays[CLASS_KEY], int(z.shape[0]), label, path, param)
    return z


def _as_latents(arr: np.ndarray, nz: int, param: str, what: str) -> torch.Tensor:
    """Check an array as (N, nz) real, finite latents (``what`` names them in messages); float64 on the CPU."""
    if arr.ndim != 2:
        raise DataError(f"{what} have shape {arr.shape}; expected (N, {nz})", param=param)
    if arr.shape[1] != nz:
        raise DataError(f"{what} have width {arr.shape[1]} but the generator has nz = {nz}", param=param)
    if arr.shape[0] < 1:
        raise DataError(f"{what}: the array holds no latents", param=param)
    check_latent_dtype(arr.dtype, what, param)
    z = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    if not torch.isfinite(z).all():
        raise DataError(f"{what} contain NaN or infinite values", param=param)
    return z


#: numpy dtype kinds that hold real numbers: floats, signed and unsigned integers (not bool 'b', complex 'c',
#: timedelta 'm', datetime 'M', object 'O', strings 'U'/'S' or records 'V')
REAL_KINDS = "fiu"


def check_latent_dtype(dtype: np.dtype, what: str, param: str) -> None:
    """Refuse a dtype that is not a real number (naming it): timedelta64 is an integer to numpy, but not a latent."""
    if dtype.kind == "c":
        raise DataError(f"{what} are complex ({dtype}); give real numbers", param=param)
    if dtype.kind not in REAL_KINDS or dtype.fields is not None:
        raise DataError(f"{what} are not real numbers (dtype {dtype}); give floats or integers", param=param)


def check_declared_arrays(path: Path, param: str) -> None:
    """Read the shapes and dtypes a latents file declares and refuse, before any array is read, a dtype that
    is not a real number (object arrays included, which need pickle) or an array larger than the file holds
    or than the memory available for its float64 copy. An .npz member's size is its zip entry's."""
    declared: list[tuple[str, tuple[int, ...], np.dtype, int | None]] = []  # name, shape, dtype, bytes held
    if path.suffix == ".npy":
        with open(path, "rb") as fh:
            shape, dtype = _npy_header(fh)
            declared.append(("", shape, dtype, path.stat().st_size - fh.tell()))
    elif path.suffix == ".npz":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    shape, dtype = _npy_header(fh)
                    declared.append((info.filename[:-4], shape, dtype, info.file_size - fh.tell()))
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as st:  # the library checks the sizes against the file
            for key in st.keys():
                piece = st.get_slice(key)
                dtype = np.dtype(bool) if piece.get_dtype() == "BOOL" else np.dtype("float64")  # others: numbers
                declared.append((key, tuple(piece.get_shape()), dtype, None))
    total = 0
    for name, shape, dtype, held in declared:
        label = f"latents in {path}" + (f" (array {name!r})" if name else "")
        check_latent_dtype(dtype, label, param)
        numel = math.prod(shape)
        if held is not None and numel * dtype.itemsize > held:
            raise DataError(
                f"{label} declare shape {shape} ({format_bytes(numel * dtype.itemsize)}) but the file holds "
                f"{format_bytes(max(held, 0))}: truncated or corrupt",
                param=param,
            )
        total += 8 * numel
    have = machine.host_available_bytes()
    if have is not None and total > have:
        raise DataError(
            f"latents in {path} would take {format_bytes(total)} as float64, more than the {format_bytes(have)} "
            "of memory available; give fewer latents",
            param=param,
        )


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy stream ``fh``, which is left at the start of the data; nothing is unpickled."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # 3.0: numpy writes it only for record dtypes with non-Latin-1 field names, which are no latents
        raise ValueError(f".npy format version {version[0]}.{version[1]} holds no plain numbers (1.0 and 2.0 do)")
    return tuple(int(s) for s in shape), np.dtype(dtype)


#: The array name of each latent space's points in a latents file (what the tool writes and reads back).
LATENT_KEYS = {"z": "z", "w": "w", "w+": "w_plus"}


def latent_key(gen: LoadedGenerator) -> str:
    """The name under which latents of ``gen``'s space are saved (``z``, ``w`` or ``w_plus``)."""
    return LATENT_KEYS.get(gen.prior.space, "z") if isinstance(gen.prior, MappedPrior) else "z"


def latent_arrays(gen: LoadedGenerator, z: torch.Tensor) -> dict[str, np.ndarray]:
    """The arrays a latents file holds for ``z``: the points under :func:`latent_key`, and for a conditional
    generator a ``class`` column (int64, one entry per row) that a later ``--latents`` run checks."""
    arrays = {latent_key(gen): z.numpy()}
    if gen.class_index is not None:
        arrays[CLASS_KEY] = np.full(z.shape[0], gen.class_index, dtype=np.int64)
    return arrays


#: The name of a latents file's class column (one class per row, for a conditional generator).
CLASS_KEY = "class"


def check_class_column(column: np.ndarray, rows: int, label: int | None, path: Path, param: str) -> None:
    """A latents file's class column must be one integer per row and match the generator's ``--class``
    (``label``; None: an unconditional generator, which takes no class)."""
    if column.ndim != 1 or column.shape[0] != rows:
        raise DataError(
            f"the class column of {path} has shape {column.shape}; expected ({rows},), one per latent", param=param
        )
    if column.dtype.kind not in "iu":
        raise DataError(f"the class column of {path} holds {column.dtype}, not integers", param=param)
    found = sorted({int(v) for v in np.unique(column)})
    shown = ", ".join(str(v) for v in found[:8]) + (", ..." if len(found) > 8 else "")
    if label is None:
        raise DataError(
            f"{path} has a class column (classes {shown}) but the generator is unconditional: drop the column",
            param=param,
        )
    if found != [label]:
        raise DataError(
            f"{path} holds latents of class {shown} but the run uses --class {label}: a run takes one class "
            "(give --class to match, or split the file by class)",
            param=param,
        )


def _pick_array(arrays: dict[str, np.ndarray], path: Path, param: str) -> np.ndarray:
    arrays = {k: v for k, v in arrays.items() if k != CLASS_KEY}
    for key in ("z", "latents"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"{path} holds arrays {sorted(arrays)}; name the latents 'z' or 'latents'", param=param)


def check_latent_range(z: torch.Tensor, gen: LoadedGenerator, param: str, what: str = "latents") -> None:
    """Refuse latents beyond the largest number of the generator's dtype: they would turn into inf there."""
    if z.numel() == 0:
        return
    largest = float(z.abs().max())
    limit = torch.finfo(gen.dtype).max
    if largest > limit:
        name = str(gen.dtype).replace("torch.", "")
        hint = "use --dtype float64 or smaller values" if gen.dtype != torch.float64 else "use smaller values"
        raise DataError(
            f"{what} reach {largest:.3g}, beyond the {name} range of the generator ({limit:.3g}); {hint}", param=param
        )


#: Latents as an analysis takes them: a file (.npy/.npz/.safetensors), an (N, nz) array, or None (prior draws).
Latents = str | Path | torch.Tensor | np.ndarray | None


def check_latents(z: torch.Tensor | np.ndarray, nz: int) -> torch.Tensor:
    """An in-memory (N, nz) array of real, finite numbers, as float64 on the CPU (the file route's checks)."""
    t = torch.as_tensor(z).detach().cpu()
    arr = t.double().numpy() if t.is_floating_point() else t.numpy()
    return _as_latents(arr, nz, "latents", "the latents")


def given_latents(gen: LoadedGenerator, latents: Latents) -> torch.Tensor | None:
    """The (N, nz) float64 latents given as a file or an array, checked; None when none were given."""
    if latents is None:
        return None
    if isinstance(latents, (torch.Tensor, np.ndarray)):
        z = check_latents(latents, gen.nz)
        check_latent_range(z, gen, "latents")
    else:
        z = load_latents(latents, gen.nz, gen.prior, label=gen.class_index)
        check_latent_range(z, gen, "latents", f"latents in {latents}")
    return z


def count_latents(z: torch.Tensor | None, num: int) -> int:
    """How many latents a run takes: the given ones, else ``num`` (at least 1) prior draws."""
    if z is not None:
        return int(z.shape[0])
    check_count(num, "the number of latents", param="num")
    return num


def draw_or_load_latents(gen: LoadedGenerator, *, num: int, latents: Latents, seed: int) -> torch.Tensor:
    """(N, nz) float64 latents: from ``latents`` (a file or an array) if given, else ``num`` draws from the prior."""
    z = given_latents(gen, latents)
    if z is not None:
        return z
    check_count(num, "the number of latents", param="num")
    return gen.prior.sample(num, gen.nz, generator=seeded_generator(seed))


#: The most seeds one --seeds list may name.
MAX_SEEDS = 100_000


def parse_seeds(text: str) -> list[int]:
    """The seeds of a list like ``0-7,12`` (ranges inclusive, in the order given), each 0 .. 2**32 - 1 (numpy's
    RandomState seeds); at most :data:`MAX_SEEDS` in all."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise GanProbeError(
                f"seeds {text!r}: give numbers and ranges like 0-7,12 ({part!r} is neither)", param="seeds"
            ) from None
        if not (0 <= low <= SEED_MAX and 0 <= high <= SEED_MAX):
            raise GanProbeError(f"seeds {text!r}: every seed must be 0 to {SEED_MAX} ({part!r})", param="seeds")
        if high < low:
            raise GanProbeError(f"seeds {text!r}: the range {part!r} runs backwards; write {high}-{low}", param="seeds")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise GanProbeError(f"seeds {text!r} name more than {MAX_SEEDS:,} seeds", param="seeds")
        seeds.extend(range(low, high + 1))
    return seeds


def seed_latents(gen: LoadedGenerator, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """NVIDIA's per-seed latents: z_s = ``np.random.RandomState(s).randn(1, z_dim)`` for each seed s (what
    stylegan2-ada-pytorch's and stylegan3's ``gen_images.py`` draw, so seed numbers give the images users know),
    then, in a w or w+ space, mapped (and truncated) like prior draws; a normal prior's sigma scales z.

    Returns (latents of the generator's space (N, nz), the z drawn (N, z_dim)), float64 on the CPU. A uniform
    prior is refused (the convention draws normal latents)."""
    prior = gen.prior
    if not isinstance(prior, MappedPrior) and prior.kind != "normal":
        raise GanProbeError(
            f"seeds draw normal latents (NVIDIA's convention) but this generator's prior is {prior.describe()}: "
            "use --latents or --n",
            param="seeds",
        )
    z_dim = prior.z_dim if isinstance(prior, MappedPrior) else gen.nz
    z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds]))
    if isinstance(prior, MappedPrior):
        return prior.map_z(z), z
    return prior.sigma * z, z


def generate(
    gen: LoadedGenerator, z: torch.Tensor, batch_size: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """G(z) in batches of ``batch_size``, returned on the CPU in ``dtype`` (float32 for rendering); the batches
    are shared out over the ranks under torchrun (:func:`gan_probe.distributed.map_batches`)."""

    def one(sl: slice) -> torch.Tensor:
        with torch.no_grad():
            images = gen(z[sl].to(gen.device, gen.dtype)).to("cpu", dtype)
        interrupt.poll()
        return images

    parts, _ = distributed.map_batches(z.shape[0], batch_size, one)
    return torch.cat(parts)


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
