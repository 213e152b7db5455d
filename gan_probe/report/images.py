"""Image grids as PNG (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] | None) -> np.ndarray:
    """(B, C, H, W) in ``value_range`` (None: the batch's own min..max) to (B, H, W, C) uint8.

    Non-image outputs (a flat vector) are drawn as a 1-pixel-high strip.
    """
    x = images.detach().to("cpu", torch.float64)
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    if not hi > lo:
        hi = lo + 1.0
    x = ((x - lo) / (hi - lo)).clamp(0, 1).nan_to_num(0.0)
    arr = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if arr.shape[-1] not in (1, 3):
        arr = arr[..., :1]
    return arr


def grid_image(
    images: torch.Tensor,
    *,
    value_range: tuple[float, float] | None,
    ncol: int | None = None,
    pad: int = 2,
    scale: int = 1,
    pad_value: int = 255,
) -> Image.Image:
    """Tile (B, C, H, W) images row-major into one picture, ``ncol`` per row."""
    arr = to_uint8(images, value_range)
    n, h, w, c = arr.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = max(1, math.ceil(n / ncol))
    canvas = np.full((pad + nrow * (h + pad), pad + ncol * (w + pad), c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def save_grid(path: Path, images: torch.Tensor, **kwargs) -> None:
    """Write :func:`grid_image` as a PNG at ``path``."""
    grid_image(images, **kwargs).save(path, format="PNG")
