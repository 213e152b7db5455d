"""Image data loading for ``pag``: layouts, conversions, and every bad-input path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.data import load_images
from gan_probe.errors import DataError
from tests.conftest import invoke

GRAY = (1, 32, 32)
RGB = (3, 32, 32)
TANH = (-1.0, 1.0)


def _uint8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _write_pngs(folder: Path, images: np.ndarray) -> Path:
    """(N, H, W) or (N, H, W, 3) uint8 to 0000.png, 0001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


# --------------------------------------------------------------------------- conversions


def test_uint8_nchw_is_mapped_to_the_generator_range(tmp_path):
    arr = _uint8((5, 1, 32, 32))
    arr[0, 0, 0, :2] = (0, 255)
    data = load_images(_save(tmp_path / "x.npy", arr), output_shape=GRAY, output_range=TANH)
    assert data.images.dtype == torch.float64 and data.images.shape == (5, 1, 32, 32)
    torch.testing.assert_close(data.images, torch.from_numpy(arr).double() / 127.5 - 1.0)
    assert data.images[0, 0, 0, 0] == -1.0 and data.images[0, 0, 0, 1] == 1.0
    assert data.conversion == ["values mapped linearly from uint8 0..255 to the generator's range [-1, 1]"]
    d = data.describe()
    assert d["raw"] == {"shape": [5, 1, 32, 32], "dtype": "uint8", "range": [float(arr.min()), 255.0]}
    assert d["num_used"] == 5 and d["kind"] == "npy"


def test_layouts_nhw_nhwc_nchw_agree(tmp_path):
    arr = _uint8((4, 32, 32))
    ref = load_images(_save(tmp_path / "a.npy", arr[:, None]), output_shape=GRAY, output_range=TANH).images
    for name, a in (("nhw", arr), ("nhwc", arr[..., None])):
        data = load_images(_save(tmp_path / f"{name}.npy", a), output_shape=GRAY, output_range=TANH)
        torch.testing.assert_close(data.images, ref)
    rgb = _uint8((3, 32, 32, 3))
    data = load_images(_save(tmp_path / "rgb.npy", rgb), output_shape=RGB, output_range=TANH)
    torch.testing.assert_close(data.images, torch.from_numpy(rgb).permute(0, 3, 1, 2).double() / 127.5 - 1)
    assert any("channels-last" in c for c in data.conversion)


@pytest.mark.parametrize(
    ("values", "expected_from"),
    [
        (np.linspace(-1, 1, 32), None),  # already the generator's units
        (np.linspace(0, 1, 32), (0.0, 1.0)),
        (np.linspace(0, 255, 32), (0.0, 255.0)),
    ],
)
def test_float_ranges(tmp_path, values, expected_from):
    arr = np.broadcast_to(values, (2, 1, 32, 32)).astype(np.float32)
    data = load_images(_save(tmp_path / "f.npy", arr), output_shape=GRAY, output_range=TANH)
    x = torch.from_numpy(arr).double()
    if expected_from is None:
        torch.testing.assert_close(data.images, x)
        assert data.conversion[0].startswith("none")
    else:
        lo, hi = expected_from
        torch.testing.assert_close(data.images, -1 + 2 * (x - lo) / (hi - lo))
        assert f"float {lo:g}..{hi:g}" in data.conversion[0]


def test_rgb_to_gray_uses_bt601_luma_and_gray_to_rgb_replicates(tmp_path):
    rgb = _uint8((3, 3, 32, 32))
    data = load_images(_save(tmp_path / "rgb.npy", rgb), output_shape=GRAY, output_range=(0.0, 1.0))
    r, g, b = (torch.from_numpy(rgb[:, i]).double() / 255 for i in range(3))
    torch.testing.assert_close(data.images[:, 0], 0.299 * r + 0.587 * g + 0.114 * b)
    assert any("BT.601" in c for c in data.conversion)
    gray = _uint8((2, 32, 32))
    data = load_images(_save(tmp_path / "g.npy", gray), output_shape=RGB, output_range=TANH)
    assert data.images.shape == (2, 3, 32, 32)
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    assert any("replicated" in c for c in data.conversion)


def test_png_folder_equals_the_array(tmp_path):
    arr = _uint8((6, 32, 32))
    folder = _write_pngs(tmp_path / "imgs", arr)
    (folder / "notes.txt").write_text("not an image, ignored")
    from_folder = load_images(folder, output_shape=GRAY, output_range=TANH, limit=4)
    from_array = load_images(_save(tmp_path / "a.npy", arr[:4]), output_shape=GRAY, output_range=TANH)
    torch.testing.assert_close(from_folder.images, from_array.images)
    assert from_folder.kind == "folder" and from_folder.num_available == 6
    assert from_folder.describe()["num_used"] == 4


def test_rgba_folder_drops_alpha_and_says_so(tmp_path):
    folder = tmp_path / "rgba"
    folder.mkdir()
    rgba = _uint8((2, 32, 32, 4))
    for i, img in enumerate(rgba):
        Image.fromarray(img, mode="RGBA").save(folder / f"{i}.png")
    data = load_images(folder, output_shape=RGB, output_range=TANH)
    torch.testing.assert_close(data.images, torch.from_numpy(rgba[..., :3]).permute(0, 3, 1, 2).double() / 127.5 - 1)
    assert any("alpha" in c for c in data.conversion)


def test_jpeg_folder_and_resize(tmp_path):
    folder = tmp_path / "jpg"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_uint8((28, 28, 3), seed=i)).save(folder / f"{i}.jpg", quality=95)
    with pytest.raises(DataError, match=r"28x28 but the generator makes 32x32; pass --resize"):
        load_images(folder, output_shape=GRAY, output_range=TANH)
    data = load_images(folder, output_shape=GRAY, output_range=TANH, resize=True)
    assert data.images.shape == (3, 1, 32, 32)
    assert any("resized from 28x28 to 32x32" in c for c in data.conversion)
    assert data.images.min() >= -1 and data.images.max() <= 1


def test_npz_images_key_labels_and_limit(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=_uint8((10, 1, 32, 32)), labels=np.arange(10))
    data = load_images(path, output_shape=GRAY, output_range=TANH, limit=3)
    assert data.images.shape[0] == 3 and data.num_available == 10
    assert data.labels.tolist() == [0, 1, 2]


def test_non_image_generator_takes_vectors_as_is(tmp_path):
    vec = np.random.default_rng(0).normal(size=(7, 16))
    data = load_images(_save(tmp_path / "v.npy", vec), output_shape=(16,), output_range=None)
    torch.testing.assert_close(data.images, torch.from_numpy(vec))
    with pytest.raises(DataError, match=r"vectors of shape \(16,\)"):
        load_images(_save(tmp_path / "w.npy", vec[:, :5]), output_shape=(16,), output_range=None)


def test_bundled_heldout_data_is_the_default():
    data = load_images(None, output_shape=GRAY, output_range=TANH, limit=8)
    assert data.kind == "bundled" and data.num_available == 512 and data.images.shape == (8, 1, 32, 32)
    assert data.labels is not None and data.images.min() == -1.0


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.linspace(-5, 300, 2 * 32 * 32).reshape(2, 1, 32, 32), r"float pixels span \[-5, 300\], which is neither"),
        (np.full((2, 1, 32, 32), np.nan), "NaN or infinite"),
        (np.full((2, 1, 32, 32), -3, dtype=np.int16), r"integer pixels span \[-3, -3\]"),
        (np.zeros((0, 1, 32, 32), dtype=np.uint8), "holds no images"),
        (np.array(["a", "b"]), "pixels must be integers or floats"),
    ],
)
def test_unconvertible_values(tmp_path, arr, message):
    with pytest.raises(DataError, match=message):
        load_images(_save(tmp_path / "bad.npy", arr), output_shape=GRAY, output_range=TANH)


def test_uint16_is_scaled_from_its_full_range(tmp_path):
    arr = np.zeros((2, 1, 32, 32), dtype=np.uint16)
    arr[0, 0, 0, 0] = 65535
    data = load_images(_save(tmp_path / "u16.npy", arr), output_shape=GRAY, output_range=TANH)
    assert "uint16 0..65535" in data.conversion[0]
    assert data.images.max() == 1.0 and data.images.min() == -1.0


def test_integer_pixels_need_a_declared_range(tmp_path):
    with pytest.raises(DataError, match="declares no output range"):
        load_images(_save(tmp_path / "i.npy", _uint8((2, 32, 32))), output_shape=GRAY, output_range=None)


# --------------------------------------------------------------------------- bad input through the CLI


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("no images here")
    return tmp / "empty"


def _mixed_sizes(tmp: Path) -> Path:
    folder = _write_pngs(tmp / "mixed", _uint8((2, 32, 32)))
    Image.fromarray(_uint8((28, 28))).save(folder / "zz-small.png")
    return folder


def _wrong_channels(tmp: Path) -> Path:
    return _save(tmp / "two.npy", _uint8((4, 2, 32, 32)))


def _corrupt_image(tmp: Path) -> Path:
    folder = _write_pngs(tmp / "corrupt", _uint8((2, 32, 32)))
    good = (folder / "0000.png").read_bytes()
    (folder / "0001.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (folder / "0002.png").write_bytes(b"this is not a png at all")
    return folder


def _wrong_rank(tmp: Path) -> Path:
    return _save(tmp / "flat.npy", _uint8((4, 1024)))


def _rank_five(tmp: Path) -> Path:
    return _save(tmp / "five.npy", _uint8((2, 1, 1, 32, 32)))


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere"


def _wrong_size(tmp: Path) -> Path:
    return _save(tmp / "small.npy", _uint8((3, 28, 28)))


def _npz_ambiguous(tmp: Path) -> Path:
    np.savez(tmp / "amb.npz", a=_uint8((2, 32, 32)), b=_uint8((2, 32, 32)))
    return tmp / "amb.npz"


def _not_data(tmp: Path) -> Path:
    (tmp / "data.csv").write_text("1,2,3\n")
    return tmp / "data.csv"


def _corrupt_npy(tmp: Path) -> Path:
    (tmp / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    return tmp / "bad.npy"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_empty_folder, "no PNG or JPEG images in folder"),
        (_mixed_sizes, r"differ in size or channels: 0000.png is 32x32 gray but zz-small.png is 28x28 gray"),
        (_wrong_channels, r"2 channel\(s\) per image but the generator makes 1"),
        (_corrupt_image, r"cannot read image .*0001.png"),
        (_wrong_rank, r"array of rank 2 \(shape \(4, 1024\)\)"),
        (_rank_five, "array of rank 5"),
        (_missing, "data not found"),
        (_wrong_size, "28x28 but the generator makes 32x32; pass --resize"),
        (_npz_ambiguous, r"holds arrays \['a', 'b'\]; name the images 'images'"),
        (_not_data, "give a folder of PNG/JPEG images or a .npy/.npz array"),
        (_corrupt_npy, "cannot read array file"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_cli_bad_data_exits_1_with_a_clear_message_and_no_files(runner, tiny_ckpt, tmp_path, make, message):
    data = make(tmp_path)
    out = tmp_path / "out"
    result = invoke(runner, ["pag", tiny_ckpt, "--data", data, "--steps", "2", "--out", out])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    err = " ".join(result.stderr.split())  # Rich may wrap long lines
    assert err.startswith("error:") and "--data" in err, err
    assert re.search(message, err), err
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_bad_limit(runner, tiny_ckpt, tmp_path):
    result = invoke(runner, ["pag", tiny_ckpt, "--limit", "0", "--out", tmp_path / "o"])
    assert result.exit_code == 1 and "the image limit must be at least 1, got 0 (--limit)" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_states_the_conversion(runner, tiny_ckpt, tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(_uint8((32, 32, 3), seed=i)).save(folder / f"{i}.png")
    result = invoke(runner, ["pag", tiny_ckpt, "--data", folder, "--steps", "2", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "RGB converted to gray" in err and "uint8 0..255" in err
