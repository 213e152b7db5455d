"""Image data for the analyses that look at real data (``pag``).

:func:`load_images` reads a folder of PNG/JPEG images or a ``.npy``/``.npz``
array and converts it to the generator's output shape, channels and range,
recording every conversion step in words so the report can state it. What
cannot be converted without guessing (a different image size without
``--resize``, 2 or 4 channels for an RGB generator, a float array outside any
known pixel range) is a :class:`~gan_probe.errors.DataError` naming the file,
what was found, what the generator needs, and the flag to change.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gan_probe.errors import DataError


def _data_error(message: str) -> DataError:
    """An error about the image data (the ``data`` argument)."""
    return DataError(message, param="data")


def check_regular_file(path: Path, what: str, param: str) -> None:
    """Refuse a path that is missing, a directory or not a regular file (a FIFO, socket or device), saying
    which, without opening it: opening a FIFO would block until something writes to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}", param=param) from None
    except OSError as exc:
        raise DataError(f"{what} {path} cannot be read: {exc.strerror or exc}", param=param) from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} {path} is a directory; give a file", param=param)
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
        raise DataError(f"{what} {path} is not a regular file ({kind}); give a file", param=param)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
#: ITU-R BT.601 luma, the weights Pillow uses for RGB -> L.
LUMA = (0.299, 0.587, 0.114)
_NPZ_KEYS = ("images", "x", "data", "arr_0")


@dataclass
class ImageData:
    """Images ready for the generator.

    ``images``: (N, *output_shape) float64 on the CPU, in the generator's output
    units. ``labels``: (N,) ints when the source has them (an .npz ``labels``
    array), else None. ``conversion``: what was done to the raw data, in words.
    """

    images: torch.Tensor
    source: str
    kind: str  # "folder", "npy", "npz" or "bundled"
    raw_shape: tuple[int, ...]
    raw_dtype: str
    raw_range: tuple[float, float]
    num_available: int
    labels: np.ndarray | None = None
    conversion: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "num_available": self.num_available,
            "num_used": int(self.images.shape[0]),
            "raw": {"shape": list(self.raw_shape), "dtype": self.raw_dtype, "range": list(self.raw_range)},
            "shape": list(self.images.shape[1:]),
            "conversion": list(self.conversion),
        }


def images_from_tensor(x: torch.Tensor, *, output_shape: tuple[int, ...], limit: int | None = None) -> ImageData:
    """In-memory images (N, *output_shape), already in the generator's output units (the Python API's route)."""
    if limit is not None and limit < 1:
        raise DataError(f"the image limit must be at least 1, got {limit}", param="limit")
    t = torch.as_tensor(x)
    if t.is_complex() or not t.is_floating_point():
        raise _data_error(f"images must be a floating-point array in the generator's units, got dtype {t.dtype}")
    if tuple(t.shape[1:]) != tuple(output_shape) or t.shape[0] < 1:
        raise _data_error(f"images have shape {tuple(t.shape)}; expected (N, {', '.join(map(str, output_shape))})")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise _data_error("images contain NaN or infinite values")
    num = int(t.shape[0])
    t = t[:limit] if limit is not None else t
    return ImageData(
        images=t,
        source="in-memory tensor",
        kind="tensor",
        raw_shape=tuple(x.shape),
        raw_dtype=str(x.dtype).replace("torch.", ""),
        raw_range=(float(t.min()), float(t.max())),
        num_available=num,
        conversion=["none (given in the generator's units)"],
    )


def load_images(
    path: str | Path | None,
    *,
    output_shape: tuple[int, ...],
    output_range: tuple[float, float] | None,
    limit: int | None = None,
    resize: bool = False,
) -> ImageData:
    """Read ``path`` (None: the bundled held-out MNIST images) and convert it for a generator.

    ``output_shape`` is the generator's (C, H, W) (or any shape for a non-image
    generator, whose data must then be an array of shape (N, *output_shape) in
    its own units). ``limit`` keeps the first N images (folder entries in name
    order). ``resize`` allows a bilinear, antialiased resize to (H, W).
    """
    if limit is not None and limit < 1:
        raise DataError(f"the image limit must be at least 1, got {limit}", param="limit")
    kind = "bundled" if path is None else None
    if path is None:
        from gan_probe.models.bundled import heldout_data

        path = heldout_data()
    path = Path(path)
    if not path.exists():
        raise _data_error(f"data not found: {path}")
    if not path.is_dir():
        check_regular_file(path, "data file", "data")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        arr, read_notes, num_available = _read_image_files(path, limit)
        labels, kind, layout = None, kind or "folder", "NHWC"
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        arr, labels = _read_array_file(path)
        read_notes = []
        num_available = arr.shape[0] if arr.ndim >= 1 else 0
        kind = kind or path.suffix.lower().lstrip(".")
        layout = None
    else:
        raise _data_error(f"cannot read data from {path}: give a folder of PNG/JPEG images or a .npy/.npz array")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise _data_error(f"{path} holds no images")
    if limit is not None:
        arr = arr[:limit]
        labels = labels[:limit] if labels is not None else None
    raw_shape, raw_dtype = tuple(int(s) for s in arr.shape), str(arr.dtype)
    if not any(np.issubdtype(arr.dtype, t) for t in (np.integer, np.floating, np.bool_)):
        raise _data_error(f"{path}: pixels must be integers or floats, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise _data_error(f"{path}: the array contains NaN or infinite values")
    raw_range = (float(arr.min()), float(arr.max()))
    conversion: list[str] = list(read_notes)
    if len(output_shape) != 3:
        images = _as_vectors(arr, path, output_shape, conversion)
    else:
        x = _to_nchw(arr, path, output_shape, layout, conversion)
        x = _match_channels(x, path, output_shape[0], conversion)
        x = _scale_values(x, arr.dtype, raw_range, path, output_range, conversion)
        images = _match_size(x, path, output_shape[1:], resize, conversion)
    if not conversion:
        conversion.append("none: the data already matched the generator's output shape and range")
    return ImageData(
        images=images,
        source=str(path),
        kind=kind,
        raw_shape=raw_shape,
        raw_dtype=raw_dtype,
        raw_range=raw_range,
        num_available=int(num_available),
        labels=labels,
        conversion=conversion,
    )


# --------------------------------------------------------------------------- reading


def _read_image_files(path: Path, limit: int | None) -> tuple[np.ndarray, list[str], int]:
    """(N, H, W, C) uint8 from a folder (or one file) of PNG/JPEG images, notes on what was dropped, file count."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _data_error(f"no PNG or JPEG images in folder {path}")
    else:
        files = [path]
    num_available = len(files)
    if limit is not None:
        files = files[:limit]
    arrays, notes, first = [], [], None
    for file in files:
        try:
            with Image.open(file) as img:
                img.load()
                arr, note = _pil_to_array(img, file)
        except DataError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            raise _data_error(f"cannot read image {file}: {exc} (corrupt or not an image)") from None
        if first is None:
            first = (file, arr.shape)
        elif arr.shape != first[1]:
            raise _data_error(
                f"images in {path} differ in size or channels: {first[0].name} is {_hwc(first[1])} but "
                f"{file.name} is {_hwc(arr.shape)}; all images must have the same size and mode"
            )
        arrays.append(arr)
        if note is not None and note not in notes:
            notes.append(note)
    return np.stack(arrays), notes, num_available


def _pil_to_array(img, file: Path) -> tuple[np.ndarray, str | None]:
    """(H, W, C) uint8 with C = 1 (gray) or 3 (RGB), and a note when something was dropped or rescaled."""
    mode = img.mode
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None], None
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64) / 65535.0 * 255.0
        return np.round(arr).clip(0, 255).astype(np.uint8)[..., None], "16-bit gray images reduced to 8 bits"
    if mode == "LA":
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None], "alpha channel of gray+alpha images dropped"
    if mode == "P":
        return np.asarray(img.convert("RGB"), dtype=np.uint8), "palette images expanded to RGB"
    if mode == "RGBA":
        return np.asarray(img.convert("RGB"), dtype=np.uint8), "alpha channel of RGBA images dropped"
    if mode in ("RGB", "CMYK", "YCbCr"):
        note = None if mode == "RGB" else f"{mode} images converted to RGB"
        return np.asarray(img.convert("RGB"), dtype=np.uint8), note
    raise _data_error(
        f"image {file} has Pillow mode {mode!r}, which gan-probe cannot convert; save it as 8-bit gray or RGB"
    )


def _hwc(shape: tuple[int, ...]) -> str:
    h, w, c = shape
    return f"{w}x{h} {'gray' if c == 1 else 'RGB'}"


def _read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    labels = None
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                names = list(data.files)
                key = next((k for k in _NPZ_KEYS if k in names), None)
                if key is None:
                    candidates = [k for k in names if k not in ("labels", "y")]
                    if len(candidates) != 1:
                        raise _data_error(f"{path} holds arrays {sorted(names)}; name the images 'images'")
                    key = candidates[0]
                arr = data[key]
                if "labels" in names:
                    labels = np.asarray(data["labels"])
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise _data_error(f"cannot read array file {path}: {exc}") from None
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != arr.shape[0]):
        labels = None
    return arr, labels


# --------------------------------------------------------------------------- converting


def _as_vectors(arr: np.ndarray, path: Path, output_shape: tuple[int, ...], conversion: list[str]) -> torch.Tensor:
    """A non-image generator: the array must already be (N, *output_shape) in its units."""
    if tuple(arr.shape[1:]) != tuple(output_shape):
        raise _data_error(
            f"{path} has shape {tuple(arr.shape)} but the generator outputs vectors of shape {tuple(output_shape)}; "
            f"give an array of shape (N, {', '.join(map(str, output_shape))})"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        conversion.append(f"{arr.dtype} values cast to float64 unchanged (a non-image generator has no pixel range)")
    return torch.from_numpy(np.asarray(arr, dtype=np.float64))


def _to_nchw(
    arr: np.ndarray, path: Path, output_shape: tuple[int, ...], layout: str | None, conversion: list[str]
) -> torch.Tensor:
    """(N, C, H, W) float64 from N x H x W, N x C x H x W or N x H x W x C."""
    _, height, width = output_shape
    if arr.ndim == 3:
        return torch.from_numpy(np.asarray(arr, dtype=np.float64))[:, None]
    if arr.ndim != 4:
        raise _data_error(
            f"{path} has an array of rank {arr.ndim} (shape {tuple(arr.shape)}); expected images as "
            f"N x H x W, N x C x H x W or N x H x W x C"
        )
    x = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    if layout is None:
        layout = _guess_layout(arr.shape, (height, width), path)
        if layout == "NHWC":
            conversion.append("channels-last array (N x H x W x C) transposed to N x C x H x W")
    return x.permute(0, 3, 1, 2).contiguous() if layout == "NHWC" else x


def _guess_layout(shape: tuple[int, ...], hw: tuple[int, int], path: Path) -> str:
    first, last = shape[1], shape[3]
    # Prefer the reading whose spatial size is the generator's; else the one with a small channel axis.
    if tuple(shape[2:]) == hw and tuple(shape[1:3]) != hw:
        return "NCHW"
    if tuple(shape[1:3]) == hw and tuple(shape[2:]) != hw:
        return "NHWC"
    small_first, small_last = first <= 4, last <= 4
    if small_first and not small_last:
        return "NCHW"
    if small_last and not small_first:
        return "NHWC"
    if small_first and small_last:
        return "NCHW"
    raise _data_error(
        f"{path}: cannot tell the channel axis of an array of shape {tuple(shape)}; "
        "give N x C x H x W or N x H x W x C with C in 1..4"
    )


def _match_channels(x: torch.Tensor, path: Path, channels: int, conversion: list[str]) -> torch.Tensor:
    have = x.shape[1]
    if have == channels:
        return x
    if have == 3 and channels == 1:
        conversion.append("RGB converted to gray with ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B)")
        w = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    if have == 1 and channels == 3:
        conversion.append("gray replicated to 3 RGB channels")
        return x.expand(-1, 3, -1, -1).contiguous()
    raise _data_error(
        f"{path} has {have} channel(s) per image but the generator makes {channels}; gan-probe converts only "
        f"between gray (1) and RGB (3)"
    )


def _scale_values(
    x: torch.Tensor,
    dtype: np.dtype,
    raw_range: tuple[float, float],
    path: Path,
    output_range: tuple[float, float] | None,
    conversion: list[str],
) -> torch.Tensor:
    """Map pixel values to the generator's output range, saying which source range was assumed."""
    lo_raw, hi_raw = raw_range
    is_bool = np.issubdtype(dtype, np.bool_)
    if np.issubdtype(dtype, np.integer) or is_bool:
        if is_bool:
            src = (0.0, 1.0)
        elif dtype in (np.uint16, np.int32, np.int64, np.uint32, np.uint64) and hi_raw > 255:
            src = (0.0, 65535.0)
        else:
            src = (0.0, 255.0)
        if lo_raw < src[0] or hi_raw > src[1]:
            raise _data_error(f"{path}: integer pixels span [{lo_raw:g}, {hi_raw:g}], outside {src}; give uint8")
        if output_range is None:
            raise _data_error(
                f"{path} holds integer pixels but the checkpoint declares no output range to map them to; "
                "declare it with --output-range LOW,HIGH (e.g. 0,1) or give float data in the generator's own units"
            )
        label = f"{dtype} {src[0]:g}..{src[1]:g}"
    else:
        if output_range is None:
            conversion.append("float data used as is (the checkpoint declares no output range)")
            return x
        lo, hi = output_range
        tol = 1e-6 * max(1.0, hi - lo)
        if lo_raw >= lo - tol and hi_raw <= hi + tol and (lo_raw < -tol or (lo, hi) == (0.0, 1.0)):
            return x  # already in the generator's units (negative values rule out [0, 1] and 0..255)
        if lo_raw >= -tol and hi_raw <= 1.0 + tol:
            src = (0.0, 1.0)
        elif lo_raw >= -tol and hi_raw <= 255.0 + tol:
            src = (0.0, 255.0)
        else:
            raise _data_error(
                f"{path}: float pixels span [{lo_raw:.4g}, {hi_raw:.4g}], which is neither the generator's range "
                f"[{lo:g}, {hi:g}] nor [0, 1] nor [0, 255]; rescale the data"
            )
        label = f"float {src[0]:g}..{src[1]:g}"
    lo, hi = output_range
    if src == (lo, hi):
        return x
    conversion.append(f"values mapped linearly from {label} to the generator's range [{lo:g}, {hi:g}]")
    return lo + (x - src[0]) * ((hi - lo) / (src[1] - src[0]))


def _match_size(x: torch.Tensor, path: Path, hw: tuple[int, int], resize: bool, conversion: list[str]) -> torch.Tensor:
    have = tuple(x.shape[2:])
    if have == tuple(hw):
        return x
    if not resize:
        raise _data_error(
            f"images in {path} are {have[1]}x{have[0]} but the generator makes {hw[1]}x{hw[0]}; "
            "pass --resize to resize them (bilinear) or give data of the generator's size"
        )
    conversion.append(f"resized from {have[1]}x{have[0]} to {hw[1]}x{hw[0]} (bilinear, antialiased; --resize)")
    return torch.nn.functional.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False, antialias=True)
