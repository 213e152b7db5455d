"""FIR up/down-sampling (``upfirdn2d``): the depthwise-convolution route against the route it replaced and a
dense definition, values and both AD modes; the StyleGAN2 checkpoints give the same images and log-dets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vjp, vmap

import gan_probe
import gan_probe.models.stylegan2 as sg2
from gan_probe.models.bundled import samples_dir
from gan_probe.models.stylegan2 import fir_kernel, upfirdn2d
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum


def upfirdn2d_by_folding(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: Sequence[int] = (0, 0)
) -> torch.Tensor:
    """The previous implementation, kept as the reference: channels folded into the batch, zero insertion by
    ``F.pad`` on a 6-D view, padding, a single-channel ``conv2d`` with the flipped kernel, decimation."""
    if len(pad) == 2:
        px0, px1, py0, py1 = pad[0], pad[1], pad[0], pad[1]
    else:
        px0, px1, py0, py1 = pad
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    if up > 1:
        x = F.pad(x.reshape(b * c, 1, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, (max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)))
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    kh, kw = kernel.shape
    x = F.conv2d(x, torch.flip(kernel, (0, 1)).to(x.dtype).reshape(1, 1, kh, kw))
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x.reshape(b, c, x.shape[2], x.shape[3])


def upfirdn2d_dense(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int, pad: Sequence[int]) -> torch.Tensor:
    """Output by output from the definition, with loops: y[oy, ox] = sum_{iy, ix} x[iy, ix] k[jy, jx] where
    jy = down oy + kh - 1 - py0 - up iy (a sample x[i] sits at up i + p0 in the padded signal and the true
    convolution pairs position q with tap m + kh - 1 - q), and likewise jx; taps outside the kernel are 0."""
    px0, px1, py0, py1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out_h = (h * up + py0 + py1 - kh) // down + 1
    out_w = (w * up + px0 + px1 - kw) // down + 1
    y = torch.zeros(b, c, out_h, out_w, dtype=torch.float64)
    for oy in range(out_h):
        for ox in range(out_w):
            for iy in range(h):
                jy = down * oy + kh - 1 - py0 - up * iy
                if not 0 <= jy < kh:
                    continue
                for ix in range(w):
                    jx = down * ox + kw - 1 - px0 - up * ix
                    if 0 <= jx < kw:
                        y[:, :, oy, ox] += x[:, :, iy, ix] * kernel[jy, jx]
    return y


def _kernels() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "[1,3,3,1] (separable, even)": fir_kernel([1, 3, 3, 1]).double(),
        "[1,2,1] x 4 (separable, odd)": fir_kernel([1, 2, 1], gain=4.0).double(),
        "random 4x4 (full rank)": torch.rand(4, 4, generator=gen, dtype=torch.float64),
        "random 3x3 (full rank, odd)": torch.rand(3, 3, generator=gen, dtype=torch.float64),
        "random 5x2 (not square)": torch.rand(5, 2, generator=gen, dtype=torch.float64),
        "1x1": torch.full((1, 1), 1.7, dtype=torch.float64),
    }


KERNELS = _kernels()
PADS = [(0, 0), (1, 1), (2, 1), (-1, 2), (2, -1, 0, 3), (1, 2, -1, -1), (3, 3, 3, 3)]


def _cases():
    for name in KERNELS:
        for up in (1, 2):
            for down in (1, 2):
                for pad in PADS:
                    yield pytest.param(name, up, down, pad, id=f"{name}-up{up}-down{down}-pad{pad}")


def _input(seed: int = 1, shape=(2, 3, 5, 6)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fits(kernel: torch.Tensor, up: int, pad: Sequence[int], h: int = 5, w: int = 6) -> bool:
    px0, px1, py0, py1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
    return h * up + py0 + py1 >= kernel.shape[0] and w * up + px0 + px1 >= kernel.shape[1]


@pytest.mark.parametrize("name,up,down,pad", list(_cases()))
def test_upfirdn2d_equals_the_folded_route_and_the_definition(name, up, down, pad):
    kernel = KERNELS[name]
    if not _fits(kernel, up, pad):
        pytest.skip("the padded signal is shorter than the kernel")
    x = _input()
    got = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    old = upfirdn2d_by_folding(x, kernel, up=up, down=down, pad=pad)
    assert got.shape == old.shape
    torch.testing.assert_close(got, old, rtol=0, atol=1e-14)
    torch.testing.assert_close(got, upfirdn2d_dense(x, kernel, up, down, pad), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "up,down,pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (2, 1, 1, 2)), (2, 2, (-1, 2, 0, -1)), (2, 1, (0, 0))]
)
@pytest.mark.parametrize("kernel", ["[1,3,3,1] (separable, even)", "random 4x4 (full rank)"])
def test_upfirdn2d_jvp_and_vjp_equal_the_folded_route(kernel, up, down, pad):
    """Forward- and reverse-mode derivatives (under vmap too, as the exact Jacobian takes them) agree."""
    k = KERNELS[kernel]
    x, t = _input(2), _input(3, (4, 2, 3, 5, 6))

    def new(v):
        return upfirdn2d(v, k, up=up, down=down, pad=pad)

    def old(v):
        return upfirdn2d_by_folding(v, k, up=up, down=down, pad=pad)

    jvp_new = vmap(lambda v: jvp(new, (x,), (v,))[1])(t)
    jvp_old = vmap(lambda v: jvp(old, (x,), (v,))[1])(t)
    torch.testing.assert_close(jvp_new, jvp_old, rtol=0, atol=1e-14)
    out, pull_new = vjp(new, x)
    _, pull_old = vjp(old, x)
    ct = torch.randn((4, *out.shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(vmap(pull_new)(ct)[0], vmap(pull_old)(ct)[0], rtol=0, atol=1e-14)
    # the adjoint identity <f(x), y> = <x, f^T(y)> (f is linear), so the vjp is the right one, not a shared bug
    assert torch.allclose((new(x) * ct[0]).sum(), (x * pull_new(ct[0])[0]).sum(), rtol=1e-13, atol=0)


def test_upfirdn2d_takes_float32_strided_and_single_channel_inputs():
    k = fir_kernel([1, 3, 3, 1], gain=4.0)
    x = _input(5, (1, 6, 7, 3)).float().permute(0, 3, 1, 2)  # (1, 3, 6, 7), not contiguous
    got = upfirdn2d(x, k.double(), up=2, pad=(2, 1))  # the kernel follows x's dtype
    assert got.dtype == torch.float32 and got.shape == (1, 3, 12, 14)
    torch.testing.assert_close(got, upfirdn2d_by_folding(x, k, up=2, pad=(2, 1)), rtol=1e-6, atol=1e-6)
    one = x[:, :1].contiguous()
    torch.testing.assert_close(upfirdn2d(one, k, pad=(1, 2)), upfirdn2d_by_folding(one, k, pad=(1, 2)))


def _bundled_stylegan2(dtype: torch.dtype):
    return gan_probe.load_generator(samples_dir() / "mnist-stylegan2.safetensors", space="w", device="cpu", dtype=dtype)


def test_bundled_stylegan2_images_and_exact_log_det_are_unchanged(monkeypatch):
    """The bundled MNIST StyleGAN2 (32x32, its Blur after every upsampling conv and the ToRGB skips'
    Upsample go through upfirdn2d) gives the images of the folded route to float32 rounding and the same
    exact 1/2 ln det J^T J in float64 (in w: z only reaches the sphere, where J is singular)."""
    gen32 = _bundled_stylegan2(torch.float32)
    z = gen32.prior.sample(3, gen32.nz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = gen32.flat(z.float())
    gen64 = _bundled_stylegan2(torch.float64)
    half = exact_spectrum(JacobianOperator(gen64.flat, z[:2].double(), routes=gen64.routes)).half_logdet
    monkeypatch.setattr(sg2, "upfirdn2d", upfirdn2d_by_folding)
    with torch.no_grad():
        img_old = gen32.flat(z.float())
    half_old = exact_spectrum(JacobianOperator(gen64.flat, z[:2].double(), routes=gen64.routes)).half_logdet
    assert img.shape == (3, 3 * 32 * 32)
    torch.testing.assert_close(img, img_old, rtol=0, atol=2e-6)
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, half_old, rtol=0, atol=1e-9)
