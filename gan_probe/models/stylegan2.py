"""StyleGAN2 generator in plain differentiable torch, state-dict compatible with rosinality's ``Generator``.

The architecture is config F of Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"
(CVPR 2020): a mapping network ``z -> w`` (PixelNorm, then ``n_mlp`` equalised-lr dense layers with
leaky ReLU) and a synthesis network driven by one style vector per layer (``w+``, shape
(B, n_latent, style_dim) with ``n_latent = 2 log2(size) - 2``) through weight modulation/demodulation,
per-pixel noise and skip connections to RGB.

Parameter and buffer names and shapes follow rosinality/stylegan2-pytorch (``model.py``), the layout its
``train.py`` writes under ``"g_ema"`` and its ``convert_weight.py`` produces from NVIDIA's TF pickles::

    style.{1..n_mlp}.{weight,bias}            mapping (PixelNorm is style.0 and has no weights)
    input.input                               (1, C4, 4, 4) learned constant
    conv1.*, to_rgb1.*                        the 4x4 block
    convs.{2k}.*                              3x3 modulated conv with 2x upsampling (and conv.blur.kernel)
    convs.{2k+1}.*                            3x3 modulated conv at the same resolution
    to_rgbs.{k}.*                             1x1 modulated conv (no demodulation), upsample.kernel for the skip
    noises.noise_{i}                          (1, 1, r, r) stored noise maps, r = 2**((i + 5) // 2)

A styled conv holds ``conv.weight`` (1, out, in, k, k), ``conv.modulation.{weight,bias}`` ((in, style_dim), (in,)),
``noise.weight`` (1,) and ``activate.bias`` (out,). Channel widths are read from the weights, so narrower models of
the same layout (``channel_multiplier`` 1 or 2, or any other table) load.

Everything is ordinary autograd-visible torch (``F.linear``, ``F.conv2d``, ``F.conv_transpose2d``, ``F.pad``,
``F.leaky_relu``): no custom ``autograd.Function`` or compiled kernel, no in-place op on a differentiable
tensor and no random draw inside ``forward``, so ``torch.func.jvp`` under ``torch.func.vmap`` (exact forward-mode
Jacobians) works on CPU and CUDA, in float32 and float64. Forward-mode AD is not switched off by
``torch.no_grad()``: run Jacobians under it (or with ``requires_grad_(False)`` parameters), else each output
keeps the reverse-mode graph of the parameters alive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from gan_probe.errors import CheckpointError, GanProbeError

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
EPS = 1e-8  # PixelNorm and demodulation
DEFAULT_BLUR = (1, 3, 3, 1)
DEFAULT_LR_MLP = 0.01
NoiseMode = str | int
_SEED_CACHE_LIMIT = 8
_SIGNATURE_KEYS = ("input.input", "conv1.conv.weight", "conv1.conv.modulation.weight", "to_rgb1.conv.weight")


# --------------------------------------------------------------------------------------------------- ops


def fir_kernel(taps: Sequence[float] | torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """2-D FIR kernel (n, n) from 1-D taps: k k^T / sum(k k^T) * gain (a 2-D input is only normalised).

    ``gain = up**2`` keeps the mean of a zero-inserted (upsampled) signal, as in StyleGAN2's ``upfirdn2d``.
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    return k / k.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: Sequence[int] = (0, 0)
) -> torch.Tensor:
    """Upsample, pad, FIR-filter, downsample each channel of x (B, C, H, W) independently.

    1. up: zero insertion, x_up[u * i] = x[i] and up - 1 zeros after every sample (length H * up);
    2. pad: ``pad`` = (p0, p1) on both axes or (px0, px1, py0, py1); a negative pad crops;
    3. filter: true 2-D convolution with ``kernel`` (n, n), "valid" (length H * up + p0 + p1 - n + 1);
    4. down: keep every ``down``-th sample from index 0.

    Output (B, C, (H * up + py0 + py1 - n) // down + 1, ...). Computed as one depthwise (``groups=C``)
    convolution with the kernel shared by every channel, never on an upsampled or padded copy where the
    convolution can do it:

    - up = 1: ``F.conv2d`` with the flipped kernel (conv2d is a cross-correlation), stride ``down``, and
      the padding inside the convolution when it is the same on all four sides;
    - up > 1: zero insertion followed by a full convolution with k is the transposed convolution with
      stride ``up``, whose output F[m] = sum_i x[i] k[m - up i] has length (H - 1) up + n; the filtered
      signal of step 3 is z[m] = F[m + n - 1 - p0], i.e. F padded by (p0 - n + 1, p1 + up - n), a crop
      that ``conv_transpose2d`` does itself when it is the same on all four sides.

    Differentiable in both AD modes and batched under ``torch.func.vmap`` (the vmapped axis folds into the
    batch: the kernel is not batched). Against zero insertion by ``F.pad`` and a single-channel convolution
    over (B * C, 1, H, W), measured 2-50x faster forward, 2-6x under vmap over jvp and 20-170x in reverse
    mode at StyleGAN2's shapes (docs/performance.md).
    """
    if len(pad) == 2:
        px0, px1, py0, py1 = pad[0], pad[1], pad[0], pad[1]
    else:
        px0, px1, py0, py1 = pad
    c = x.shape[1]
    kh, kw = kernel.shape
    k = kernel.to(x.dtype)
    if up > 1:
        weight = k.reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
        edges = (px0 - kw + 1, px1 + up - kw, py0 - kh + 1, py1 + up - kh)
        crop = -edges[0] if edges[0] <= 0 and len(set(edges)) == 1 else 0
        x = F.conv_transpose2d(x, weight, stride=up, padding=crop, groups=c)
        if not crop and any(edges):
            x = F.pad(x, edges)  # a negative pad crops
        return x[:, :, ::down, ::down] if down > 1 else x
    weight = torch.flip(k, (0, 1)).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    if px0 == px1 == py0 == py1 and px0 >= 0:
        return F.conv2d(x, weight, stride=down, padding=px0, groups=c)
    return F.conv2d(F.pad(x, (px0, px1, py0, py1)), weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """sqrt(2) * leaky_relu(x + bias, 0.2), bias (C,) added along dim 1; the gain keeps unit second moment."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


class FusedLeakyReLU(nn.Module):
    """Per-channel bias then scaled leaky ReLU (parameter ``bias`` (C,))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2 over dim 1) + 1e-8): projects each latent onto the sphere of radius sqrt(dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPS)


class EqualLinear(nn.Module):
    """Equalised-learning-rate dense layer: y = x (c W)^T + lr_mul b, c = lr_mul / sqrt(in_dim).

    Stored weight (out, in) and bias (out,) are the unscaled parameters (rosinality layout); with
    ``activation`` the fused leaky ReLU follows (bias added inside it).
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """upfirdn2d with up = down = 1: FIR low-pass with buffer ``kernel`` (n, n) and padding (p0, p1)."""

    kernel: torch.Tensor

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion, filter with gain 4): (B, C, H, W) -> (B, C, 2H, 2W)."""

    kernel: torch.Tensor

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", fir_kernel(taps, factor * factor))
        # output length H f + p0 + p1 - n + 1 = H f  <=>  p0 + p1 = n - 1; centred
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (Karras et al. 2020, eq. 1-3).

    s = A(w) (B, in) with A an EqualLinear whose bias starts at 1; per sample b the weight is
    w'_{oikl} = c s_i W_{oikl}, c = 1/sqrt(in k^2), and with demodulation
    w''_{oikl} = w'_{oikl} / sqrt(sum_{ikl} w'^2_{oikl} + 1e-8).

    ``fused=True`` convolves with the per-sample weights as one grouped convolution over the batch
    (rosinality's default path). ``fused=False`` uses the identity conv(x, s * W) * d = conv(x * s, W) * d:
    the input is scaled, the shared weight convolved and the output scaled by d (B, out); the same
    function, and cheaper under vmap where the weight would otherwise be batched.

    With ``upsample`` the conv is a stride-2 transposed convolution (H -> 2H + k - 2) followed by a
    Blur with gain 4 and padding p0 + p1 = n - k + 1, which gives 2H (rosinality's arithmetic).
    x (B, in, H, W), style (B, style_dim) -> (B, out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        self.fused = fused
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor * factor)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._forward_grouped(x, style)
        return self._forward_input_scaled(x, style)

    def _forward_grouped(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin, h, w = x.shape
        cout, k = self.out_channels, self.kernel_size
        s = self.modulation(style).reshape(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4)) + EPS).reshape(b, cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            # conv_transpose2d weights are (in, out / groups, k, k)
            weight = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
            return self.blur(out.reshape(b, cout, out.shape[2], out.shape[3]))
        out = F.conv2d(x, weight.reshape(b * cout, cin, k, k), padding=self.padding, groups=b)
        return out.reshape(b, cout, out.shape[2], out.shape[3])

    def _forward_input_scaled(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        s = self.modulation(style)  # (B, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s.reshape(b, cin, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{ikl} (c W_{oikl} s_i)^2 = sum_i s_i^2 sum_{kl} (c W_{oikl})^2
            d = torch.rsqrt(s.square() @ weight.square().sum(dim=(2, 3)).T + EPS)  # (B, out)
            out = out * d.reshape(b, self.out_channels, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """x + weight * noise: one learned scalar ``weight`` (1,) times a (1 or B, 1, H, W) noise image."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 constant ``input`` (1, C, 4, 4), expanded to the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + scaled leaky ReLU (keys conv.*, noise.weight, activate.bias)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel, fused=fused
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + ``bias`` (1, 3, 1, 1), plus the 2x FIR-upsampled skip."""

    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False, fused=fused)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# --------------------------------------------------------------------------------------------------- generator


def _normalise_config(config: Mapping) -> dict:
    """Validated copy of a StyleGAN2 config with int channel keys (JSON gives string keys)."""
    try:
        size = int(config["size"])
        style_dim = int(config["style_dim"])
        n_mlp = int(config["n_mlp"])
        channels = {int(r): int(c) for r, c in dict(config["channels"]).items()}
        blur = [float(t) for t in config.get("blur_kernel", DEFAULT_BLUR)]
        lr_mlp = float(config.get("lr_mlp", DEFAULT_LR_MLP))
    except KeyError as exc:
        raise CheckpointError(f"stylegan2 config lacks {exc.args[0]!r} (got {dict(config)})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"bad stylegan2 config {dict(config)}: {exc}") from None
    if size < 4 or size & (size - 1):
        raise CheckpointError(f"stylegan2 size must be a power of two >= 4, got {size}")
    if style_dim < 1 or n_mlp < 0 or lr_mlp <= 0:
        raise CheckpointError(f"stylegan2 needs style_dim >= 1, n_mlp >= 0, lr_mlp > 0 (got {dict(config)})")
    need = [2**i for i in range(2, int(math.log2(size)) + 1)]
    missing = [r for r in need if r not in channels]
    if missing:
        raise CheckpointError(f"stylegan2 config has no channel width for resolution(s) {missing} (size {size})")
    if any(channels[r] < 1 for r in need):
        raise CheckpointError(f"stylegan2 channel widths must be positive, got {channels}")
    if len(blur) < 2 or sum(blur) == 0:
        raise CheckpointError(f"stylegan2 blur_kernel must have >= 2 taps and a nonzero sum, got {blur}")
    blur_out: list[float] | list[int] = [int(t) for t in blur] if all(t.is_integer() for t in blur) else blur
    return {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channels": {r: channels[r] for r in need},
        "blur_kernel": blur_out,
        "lr_mlp": lr_mlp,
    }


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator (Karras et al. 2020) with rosinality's ``Generator`` state-dict layout.

    ``config``: {"size", "style_dim", "n_mlp", "channels": {resolution: width} for 4 .. size,
    "blur_kernel" (default [1, 3, 3, 1]), "lr_mlp" (default 0.01)}; see :func:`infer_stylegan2_config`.
    ``fused`` picks the modulated-conv formulation (same function, see :class:`ModulatedConv2d`); it is
    not part of the state dict. The default is the input-scaled one: under ``vmap`` over ``jvp`` (exact
    Jacobians) it keeps the weights unbatched, and measured 3x faster per forward-mode product on a 64 px
    model in w (docs/performance.md); ``fused=True`` is rosinality's arithmetic op for op.

    Attributes: ``size``, ``style_dim``, ``n_latent`` = 2 log2(size) - 2 (styles per image),
    ``num_layers`` = 2 log2(size) - 3 (noise maps), ``config`` (normalised copy).
    """

    def __init__(self, config: Mapping, fused: bool = False) -> None:
        super().__init__()
        cfg = _normalise_config(config)
        self.config = cfg
        self.size = cfg["size"]
        self.style_dim = cfg["style_dim"]
        self.log_size = int(math.log2(self.size))
        self.n_latent = 2 * self.log_size - 2
        self.num_layers = 2 * self.log_size - 3
        ch, blur, sd = cfg["channels"], cfg["blur_kernel"], self.style_dim

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(sd, sd, lr_mul=cfg["lr_mlp"], activation=True) for _ in range(cfg["n_mlp"])],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, sd, blur_kernel=blur, fused=fused)
        self.to_rgb1 = ToRGB(ch[4], sd, upsample=False, fused=fused)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        c_in = ch[4]
        for i in range(3, self.log_size + 1):
            c_out = ch[2**i]
            self.convs.append(StyledConv(c_in, c_out, 3, sd, upsample=True, blur_kernel=blur, fused=fused))
            self.convs.append(StyledConv(c_out, c_out, 3, sd, blur_kernel=blur, fused=fused))
            self.to_rgbs.append(ToRGB(c_out, sd, blur_kernel=blur, fused=fused))
            c_in = c_out
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        self._seeded: dict[int, list[torch.Tensor]] = {}

    @property
    def fused(self) -> bool:
        return self.conv1.conv.fused

    @fused.setter
    def fused(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = bool(value)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim): PixelNorm, then n_mlp EqualLinear(lr_mul=lr_mlp) + lrelu."""
        return self.style(z)

    def stored_noise(self) -> list[torch.Tensor]:
        """The ``noises.noise_i`` buffers, (1, 1, r_i, r_i) each, in layer order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def noise_maps(self, noise_mode: NoiseMode = "stored") -> list[torch.Tensor]:
        """The noise images for ``noise_mode``, shaped, typed and placed like the stored buffers.

        "stored": the buffers (rosinality's ``randomize_noise=False``); "zero": zeros (no noise);
        int seed: each map redrawn as N(0, 1) in float32 from ``torch.Generator().manual_seed(seed)``
        (CPU, layer order), so every dtype and device sees the same maps. Seeded draws are cached,
        which lets a later call run inside ``torch.func.vmap`` (a random op there would fail).
        """
        stored = self.stored_noise()
        if isinstance(noise_mode, bool) or not isinstance(noise_mode, (str, int)):
            raise GanProbeError(f"noise mode must be 'stored', 'zero' or an int seed, got {noise_mode!r}")
        if noise_mode == "stored":
            return stored
        if noise_mode == "zero":
            return [torch.zeros_like(n) for n in stored]
        if isinstance(noise_mode, str):
            raise GanProbeError(f"noise mode must be 'stored', 'zero' or an int seed, got {noise_mode!r}")
        seed = int(noise_mode)
        maps = self._seeded.get(seed)
        if maps is None:
            gen = torch.Generator().manual_seed(seed)
            maps = [torch.randn(tuple(n.shape), generator=gen, dtype=torch.float32) for n in stored]
            if len(self._seeded) >= _SEED_CACHE_LIMIT:
                self._seeded.clear()
            self._seeded[seed] = maps
        return [m.to(device=n.device, dtype=n.dtype) for m, n in zip(maps, stored)]

    def synthesis(
        self,
        w_plus: torch.Tensor,
        noise_mode: NoiseMode = "stored",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """w+ (B, n_latent, style_dim) -> image (B, 3, size, size), roughly in [-1, 1], not clamped.

        Layer use of the styles: conv1 w[0], to_rgb1 w[1]; block k (resolution 2**(k+3)) upsampling conv
        w[2k+1], conv w[2k+2], to_rgb w[2k+3] (a to_rgb and the next block's first conv share a style).
        ``noise`` (a list like :meth:`stored_noise`) overrides ``noise_mode``.
        """
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise GanProbeError(f"w+ must have shape (B, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}")
        maps = list(noise) if noise is not None else self.noise_maps(noise_mode)
        if len(maps) != self.num_layers:
            raise GanProbeError(f"need {self.num_layers} noise maps, got {len(maps)}")
        out = self.input(w_plus.shape[0])
        out = self.conv1(out, w_plus[:, 0], maps[0])
        skip = self.to_rgb1(out, w_plus[:, 1])
        for k, to_rgb in enumerate(self.to_rgbs):
            i = 2 * k + 1
            out = self.convs[2 * k](out, w_plus[:, i], maps[i])
            out = self.convs[2 * k + 1](out, w_plus[:, i + 1], maps[i + 1])
            skip = to_rgb(out, w_plus[:, i + 2], skip)
        return skip

    def forward(self, z: torch.Tensor, noise_mode: NoiseMode = "stored") -> torch.Tensor:
        """z (B, style_dim) -> image (B, 3, size, size): mapping, one w for every layer, synthesis."""
        w = self.mapping(z)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.n_latent, -1), noise_mode)


# --------------------------------------------------------------------------------------------------- state dicts


def looks_like_stylegan2(state_dict: Mapping[str, object]) -> bool:
    """Whether a state dict has the signature keys of rosinality's StyleGAN2 ``Generator``."""
    return all(k in state_dict for k in _SIGNATURE_KEYS)


def _shape(state_dict: Mapping[str, object], key: str, ndim: int) -> tuple[int, ...]:
    value = state_dict.get(key)
    if value is None:
        raise CheckpointError(f"stylegan2 state dict lacks {key!r}")
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"stylegan2 state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    if value.ndim != ndim:
        raise CheckpointError(f"stylegan2 {key!r} should have {ndim} dims, has shape {tuple(value.shape)}")
    return tuple(value.shape)


def _blur_taps(kernel: torch.Tensor) -> list[float] | list[int]:
    """1-D taps of a stored separable blur kernel c k k^T: the row sums are proportional to k."""
    rows = kernel.detach().to("cpu", torch.float64).sum(dim=1)
    taps = rows / rows.abs().min() if bool((rows.abs() > 0).all()) else rows / rows.sum()
    rounded = taps.round()
    if bool(torch.allclose(taps, rounded, rtol=0, atol=1e-4)):
        return [int(t) for t in rounded.tolist()]
    return taps.tolist()


def infer_stylegan2_config(state_dict: Mapping[str, object]) -> dict:
    """Config of a rosinality-layout StyleGAN2 state dict, read from its shapes; checks every key.

    Returns {"size", "style_dim", "n_mlp", "channels": {res: width}, "blur_kernel", "lr_mlp"}.
    ``lr_mlp`` does not show in the weights and is rosinality's (and NVIDIA's) 0.01. Raises
    :class:`CheckpointError` naming the missing, unexpected or mis-shaped keys when the dict does not fit.
    """
    if not looks_like_stylegan2(state_dict):
        lacking = [k for k in _SIGNATURE_KEYS if k not in state_dict]
        raise CheckpointError(
            f"not a StyleGAN2 generator state dict in rosinality's layout (lacks {', '.join(map(repr, lacking))}); "
            "a train.py checkpoint keeps the generator under 'g_ema'"
        )
    inp = _shape(state_dict, "input.input", 4)
    if inp[0] != 1 or inp[2:] != (4, 4):
        raise CheckpointError(f"stylegan2 'input.input' should be (1, C, 4, 4), is {inp}")
    style_dim = _shape(state_dict, "conv1.conv.modulation.weight", 2)[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state_dict:
        n_mlp += 1
    n_blocks = 0
    while f"to_rgbs.{n_blocks}.conv.weight" in state_dict:
        n_blocks += 1
    channels = {4: inp[1]}
    for k in range(n_blocks):
        channels[2 ** (k + 3)] = _shape(state_dict, f"convs.{2 * k}.conv.weight", 5)[1]
    blur: list[float] | list[int] = list(DEFAULT_BLUR)
    if n_blocks:
        kernel = state_dict.get("convs.0.conv.blur.kernel")
        if isinstance(kernel, torch.Tensor) and kernel.ndim == 2 and kernel.shape[0] == kernel.shape[1]:
            blur = _blur_taps(kernel)
    config = {
        "size": 2 ** (n_blocks + 2),
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channels": channels,
        "blur_kernel": blur,
        "lr_mlp": DEFAULT_LR_MLP,
    }
    check_stylegan2_state(state_dict, config)
    return _normalise_config(config)


def stylegan2_state_shapes(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a StyleGAN2 generator with ``config`` and its shape, in module order."""
    with torch.device("meta"):
        module = StyleGAN2Generator(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_stylegan2_state(state_dict: Mapping[str, object], config: Mapping) -> None:
    """Raise :class:`CheckpointError` unless the state dict has exactly the keys and shapes of ``config``."""
    expected = stylegan2_state_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} (expected {expected[k]})"
        for k, v in state_dict.items()
        if k in expected and (not isinstance(v, torch.Tensor) or tuple(v.shape) != expected[k])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label} {', '.join(items[:3])}{more}")
    if problems:
        cfg = _normalise_config(config)
        raise CheckpointError(
            f"stylegan2 state dict does not fit size {cfg['size']}, style_dim {cfg['style_dim']}, "
            f"n_mlp {cfg['n_mlp']}, channels {cfg['channels']}: " + "; ".join(problems)
        )


def load_stylegan2(
    state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None, fused: bool = False
) -> StyleGAN2Generator:
    """Infer the config, build the generator without initialising it, load the weights strictly, eval mode.

    The parameters are the state dict's tensors (``assign=True``: no copy) unless ``dtype`` converts them.
    """
    config = infer_stylegan2_config(state_dict)
    with torch.device("meta"):
        module = StyleGAN2Generator(config, fused=fused)
    module.load_state_dict(dict(state_dict), strict=True, assign=True)
    if dtype is not None:
        module = module.to(dtype)
    return module.eval()


# --------------------------------------------------------------------------------------------------- latent spaces

LATENT_SPACES = ("z", "w", "w+")


def _prior_z(num: int, style_dim: int, seed: int) -> torch.Tensor:
    """num draws of z ~ N(0, I) in float32 from a seeded CPU generator (the same for every dtype/device)."""
    return torch.randn(num, style_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _param_like(generator: StyleGAN2Generator) -> torch.Tensor:
    return generator.input.input


@torch.no_grad()
def mean_w(generator: StyleGAN2Generator, num: int = 10000, seed: int = 0, batch: int = 1000) -> torch.Tensor:
    """w_avg (style_dim,): the mean of mapping(z) over ``num`` seeded draws z ~ N(0, I) (summed in float64).

    This is what rosinality's ``mean_latent(n)`` estimates (with an unseeded draw); NVIDIA's models
    carry a running average instead (``latent_avg`` in a ``convert_weight.py`` file).
    """
    if num < 1:
        raise GanProbeError(f"mean_w needs num >= 1, got {num}")
    ref = _param_like(generator)
    z = _prior_z(num, generator.style_dim, seed)
    total = torch.zeros(generator.style_dim, dtype=torch.float64, device=ref.device)
    for start in range(0, num, batch):
        chunk = z[start : start + batch].to(device=ref.device, dtype=ref.dtype)
        total += generator.mapping(chunk).to(torch.float64).sum(dim=0)
    return (total / num).to(ref.dtype)


def truncate(w: torch.Tensor, w_avg: torch.Tensor, truncation: float) -> torch.Tensor:
    """The truncation trick: w_avg + psi (w - w_avg) (Karras et al. 2019, 2020)."""
    if truncation == 1.0:
        return w
    return w_avg + truncation * (w - w_avg)


@torch.no_grad()
def sample_w(
    generator: StyleGAN2Generator,
    num: int,
    seed: int = 0,
    truncation: float = 1.0,
    w_avg: torch.Tensor | None = None,
    plus: bool = False,
) -> torch.Tensor:
    """Prior points in W: truncate(mapping(z)), z ~ N(0, I) seeded on CPU; (num, style_dim).

    ``plus``: the same points in W+ (each w copied to every layer, as the generator itself produces
    them without style mixing), flattened to (num, n_latent * style_dim) like :class:`StyleGAN2Latent`
    "w+". ``w_avg`` defaults to :func:`mean_w` (seed 0) when truncation is not 1.
    """
    ref = _param_like(generator)
    z = _prior_z(num, generator.style_dim, seed).to(device=ref.device, dtype=ref.dtype)
    w = generator.mapping(z)
    if truncation != 1.0:
        avg = mean_w(generator) if w_avg is None else w_avg.to(device=ref.device, dtype=ref.dtype)
        w = truncate(w, avg, truncation)
    if plus:
        w = w.unsqueeze(1).expand(-1, generator.n_latent, -1).reshape(num, -1)
    return w


class StyleNetwork(Protocol):
    """The interface :class:`StyleGAN2Latent` drives, NVIDIA's (``gan_probe.models.nvidia``) and, through
    :class:`RosinalityStyleNetwork`, rosinality's: attributes ``z_dim, c_dim, w_dim, num_ws``; ``w_avg`` (w_dim,);
    ``mapping(z (B, z_dim), c (B, c_dim) | None) -> ws (B, num_ws, w_dim)`` without truncation;
    ``synthesis(ws, noise_mode "const" | "none", noise maps | None) -> images``; ``noise_shapes()`` (layer order)."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int

    @property
    def w_avg(self) -> torch.Tensor: ...

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor: ...

    def synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor: ...

    def noise_shapes(self) -> list[tuple[int, ...]]: ...


class RosinalityStyleNetwork(nn.Module):
    """rosinality's :class:`StyleGAN2Generator` seen through :class:`StyleNetwork`.

    ``mapping(z, c)`` is the generator's w copied to its ``n_latent`` layers (c must be None: unconditional);
    ``synthesis`` maps NVIDIA's noise modes "const" and "none" to rosinality's "stored" and "zero";
    ``w_avg`` is the one given (the checkpoint's ``latent_avg`` or :func:`mean_w`), None where none is needed.
    """

    w_avg: torch.Tensor | None

    def __init__(self, generator: StyleGAN2Generator, w_avg: torch.Tensor | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.z_dim = self.w_dim = generator.style_dim
        self.c_dim = 0
        self.num_ws = generator.n_latent
        ref = _param_like(generator)
        if w_avg is not None:
            if w_avg.numel() != generator.style_dim:
                raise GanProbeError(f"w_avg must have {generator.style_dim} entries, got shape {tuple(w_avg.shape)}")
            w_avg = w_avg.detach().reshape(generator.style_dim).to(device=ref.device, dtype=ref.dtype)
        self.register_buffer("w_avg", w_avg, persistent=False)

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is not None:
            raise GanProbeError("a rosinality StyleGAN2 is unconditional: it takes no class label c")
        return self.generator.mapping(z).unsqueeze(1).expand(-1, self.num_ws, -1)

    def synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        modes = {"const": "stored", "none": "zero"}
        if noise_mode not in modes:
            raise GanProbeError(f"noise_mode must be 'const' or 'none', got {noise_mode!r} (give seeded maps as noise)")
        return self.generator.synthesis(ws, modes[noise_mode], noise=noise)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(n.shape) for n in self.generator.stored_noise()]


def truncate_ws(ws: torch.Tensor, w_avg: torch.Tensor, truncation: float, cutoff: int | None = None) -> torch.Tensor:
    """ws (B, num_ws, w_dim) with the truncation trick applied to the first ``cutoff`` layers (None: all):
    w_avg + psi (w - w_avg) there, the rest as they are (NVIDIA's ``truncation_cutoff``)."""
    if truncation == 1.0 or cutoff == 0:
        return ws
    if cutoff is None or cutoff >= ws.shape[1]:
        return truncate(ws, w_avg, truncation)
    return torch.cat([truncate(ws[:, :cutoff], w_avg, truncation), ws[:, cutoff:]], dim=1)


def seeded_noise(shapes: Sequence[tuple[int, ...]], seed: int) -> list[torch.Tensor]:
    """Noise maps of ``shapes`` drawn as N(0, 1) in float32 from ``torch.Generator().manual_seed(seed)`` (CPU, in
    order), so every dtype and device sees the same maps (for rosinality's layout the maps of
    :meth:`StyleGAN2Generator.noise_maps`)."""
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randn(tuple(shape), generator=gen, dtype=torch.float32) for shape in shapes]


class StyleGAN2Latent(nn.Module):
    """A style-based generator seen from one latent space: flat latents (B, nz) -> images (B, C, H, W).

    ``generator``: rosinality's :class:`StyleGAN2Generator` (wrapped in :class:`RosinalityStyleNetwork`) or any
    :class:`StyleNetwork` (NVIDIA's StyleGAN2 and StyleGAN3).

    space "z": nz = z_dim; ws = mapping(z, c) truncated toward w_avg (the first ``truncation_cutoff`` layers;
    all when None), so with a cutoff the layers get different ws.
    space "w": nz = w_dim; the latent is w itself, copied to every layer (no truncation inside).
    space "w+": nz = num_ws * w_dim; reshaped to (B, num_ws, w_dim) (no truncation inside).
    ``c``: the (1, c_dim) label of a conditional generator (used by the mapping, so in space "z").
    ``noise_mode`` ("stored", "zero" or an int seed) is fixed at construction, so the map is deterministic:
    NVIDIA's "const", "none", or maps of ``noise_shapes()`` drawn here from the seed (:func:`seeded_noise`),
    outside any vmap. ``w_avg`` defaults to the network's stored one (rosinality: :func:`mean_w`) when space "z"
    has truncation != 1.
    """

    def __init__(
        self,
        generator: StyleGAN2Generator | nn.Module,
        space: str = "w",
        truncation: float = 1.0,
        w_avg: torch.Tensor | None = None,
        noise_mode: NoiseMode = "stored",
        *,
        truncation_cutoff: int | None = None,
        c: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if space not in LATENT_SPACES:
            raise GanProbeError(f"unknown StyleGAN2 latent space {space!r}; use one of {', '.join(LATENT_SPACES)}")
        if isinstance(noise_mode, bool) or not (noise_mode in ("stored", "zero") or isinstance(noise_mode, int)):
            raise GanProbeError(f"noise mode must be 'stored', 'zero' or an int seed, got {noise_mode!r}")
        truncation = float(truncation)
        if isinstance(generator, StyleGAN2Generator):
            if w_avg is None and space == "z" and truncation != 1.0:
                w_avg = mean_w(generator)
            generator = RosinalityStyleNetwork(generator, w_avg if space == "z" else None)
        elif w_avg is None and space == "z" and truncation != 1.0:
            w_avg = cast(StyleNetwork, generator).w_avg
        self.generator = generator
        net = self.network
        self.space = space
        self.truncation = truncation
        self.truncation_cutoff = truncation_cutoff
        self.noise_mode = noise_mode
        self.nz = net.w_dim * net.num_ws if space == "w+" else (net.z_dim if space == "z" else net.w_dim)
        ref = next(iter(generator.parameters()))
        self.w_avg: torch.Tensor | None
        if w_avg is not None and space == "z":
            if w_avg.numel() != net.w_dim:
                raise GanProbeError(f"w_avg must have {net.w_dim} entries, got shape {tuple(w_avg.shape)}")
            w_avg = w_avg.detach().reshape(net.w_dim).to(device=ref.device, dtype=ref.dtype)
        else:
            w_avg = None
        self.register_buffer("w_avg", w_avg, persistent=False)
        self.c: torch.Tensor | None
        if c is not None and (c.ndim != 2 or tuple(c.shape) != (1, net.c_dim)):
            raise GanProbeError(f"the class label c must have shape (1, {net.c_dim}), got {tuple(c.shape)}")
        self.register_buffer("c", None if c is None else c.to(device=ref.device, dtype=ref.dtype), persistent=False)
        maps = seeded_noise(net.noise_shapes(), noise_mode) if isinstance(noise_mode, int) else []
        self._noise_names: list[str] = []
        for i, m in enumerate(maps):
            self.register_buffer(f"noise_{i}", m.to(device=ref.device, dtype=ref.dtype), persistent=False)
            self._noise_names.append(f"noise_{i}")

    @property
    def network(self) -> StyleNetwork:
        """The generator behind the :class:`StyleNetwork` interface."""
        return cast(StyleNetwork, self.generator)

    def to_w_plus(self, x: torch.Tensor) -> torch.Tensor:
        """Flat latents (B, nz) -> ws (B, num_ws, w_dim)."""
        net = self.network
        if x.ndim != 2 or x.shape[1] != self.nz:
            raise GanProbeError(f"{self.space} latents must have shape (B, {self.nz}), got {tuple(x.shape)}")
        if self.space == "w+":
            return x.reshape(x.shape[0], net.num_ws, net.w_dim)
        if self.space == "w":
            return x.unsqueeze(1).expand(-1, net.num_ws, -1)
        ws = net.mapping(x, None if self.c is None else self.c.expand(x.shape[0], -1))
        if self.truncation != 1.0:
            assert self.w_avg is not None
            ws = truncate_ws(ws, self.w_avg, self.truncation, self.truncation_cutoff)
        return ws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, nz) -> image (B, C, H, W)."""
        noise = [getattr(self, n) for n in self._noise_names] if self._noise_names else None
        mode = "none" if self.noise_mode == "zero" else "const"
        return self.network.synthesis(self.to_w_plus(x), mode, noise=noise)
