"""NVIDIA's StyleGAN2 generators rebuilt in plain torch from the mathematics, under NVIDIA's parameter names.

Two classes share one network: ``training.networks.Generator`` (stylegan2-ada-pytorch, Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data") and ``training.networks_stylegan2.Generator``
(the StyleGAN2 shipped with the stylegan3 repository). Both are config F of Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN" (CVPR 2020), with the refinements of the ADA code: ``conv_clamp``,
a label embedding for conditional models and the ``orig`` / ``skip`` / ``resnet`` synthesis architectures.
This module holds no NVIDIA code; it computes the same function from the formulas below, and the tests
compare it with images made by NVIDIA's own classes.

**Mapping** (``mapping.*``): with n(v) = v / sqrt(mean(v^2) + 1e-8) (2nd-moment normalisation),
x = [n(z), n(E c)] (E = ``embed``, a linear layer with gain 1/sqrt(c_dim), only when c_dim > 0), then
``num_layers`` dense layers fc_i(x) = sqrt(2) lrelu_0.2(x (a W_i)^T + l b_i), a = l / sqrt(fan_in),
l = ``lr_multiplier``; w is copied to all ``num_ws`` layers. ``w_avg`` (the training-time running mean of w)
is a stored buffer; truncation w_avg + psi (w - w_avg) is the caller's.

**Synthesis layer** (``synthesis.b{r}.conv{0,1}.*``), style s = A(w) (``affine``: dense, gain 1/sqrt(w_dim),
bias stored, initialised at 1), weight W (O, I, k, k) used as stored (no 1/sqrt(fan_in) gain: demodulation
removes the scale, and keeping W raw keeps the 1e-8 of the demodulation where NVIDIA has it):

    y_o = d_o * conv(x * s, W)_o + g n,   d_o = (sum_{i,k,l} (W_oikl s_i)^2 + 1e-8)^(-1/2)      (paper eq. 1-3)
    out = clamp(sqrt(2) gain lrelu_0.2(y + b), -conv_clamp gain, +conv_clamp gain)

with n the noise image (``noise_const`` (r, r) for noise_mode "const", zeros for "none") and g the learned
``noise_strength``. The 2x up-sampling layer (``conv0``) is the transposed convolution with stride 2 (the
convolution of the zero-inserted input) followed by the FIR low-pass f of the layer's ``resample_filter``
buffer with gain 4 and padding chosen so that the output is exactly 2r (:func:`fir_filter`).

**ToRGB** (``torgb.*``): 1x1 modulated conv without demodulation, style A(w) / sqrt(I), then + bias and
clamp to +-conv_clamp. **Blocks** (``synthesis.b{r}``): b4 starts from ``const`` (C, 4, 4); "skip" adds each
block's ToRGB to the 2x FIR-up-sampled image of the block before (filter: the block's ``resample_filter``);
"orig" has one ToRGB, in the last block; "resnet" adds to the two convolutions (conv1 with gain sqrt(1/2)) a
skip path sqrt(1/2) * up2(conv1x1(x, W / sqrt(I))) (``skip.weight``, ``skip.resample_filter``), with ToRGB
only in the last block. Block b_r reads the styles ws[:, i : i + num_conv + num_torgb] with i the number of
convolutions before it (a ToRGB shares its style with the next block's first convolution).

**Buffers win.** Every FIR filter is read from the stored ``resample_filter`` buffers (2-D (n, n), or 1-D taps
of a separable filter as NVIDIA stores filters of 8 or more taps), and the padding follows the stored size;
the ``resample_filter`` init kwarg only records how training built them. (NVIDIA's ``conv1`` layers and the
4x4 block hold filters they never use; they are kept so that the state round-trips.)

**Precision.** NVIDIA runs the ``num_fp16_res`` highest resolutions in float16 on CUDA (with a rescaling of
the weights and styles before the demodulation that is exact up to the 1e-8), and casts everything else to
float32. Here every layer runs in the module's dtype (float32 or float64, ``.to(dtype)``), which is NVIDIA's
computation with ``force_fp32=True``.

**Modulated convolution** uses the identity conv(x, s W) = conv(x s, W): the input is scaled by the style,
one weight serves the whole batch and the output is scaled by d (``fused_modconv=False``, NVIDIA's
training-time form). It is the same function as the per-sample grouped convolution (NVIDIA's inference
default, ``fused_modconv=True`` here too) and much cheaper under ``torch.func.vmap``/``jvp``, where the
grouped form would batch the weights. All ops are plain differentiable torch, usable under forward-mode AD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.models.stylegan2 import upfirdn2d

SUPPORTED_CLASSES = ("training.networks.Generator", "training.networks_stylegan2.Generator")
ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("const", "none")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
EPS = 1e-8  # 2nd-moment normalisation and demodulation

_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
_MAPPING_KWARGS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")
_SYNTHESIS_KWARGS = (
    "channel_base",
    "channel_max",
    "num_fp16_res",
    "architecture",
    "resample_filter",
    "conv_clamp",
    "fp16_channels_last",
    "kernel_size",
    "use_noise",
    "activation",
)
# the two classes differ in where the synthesis kwargs sit and in three defaults
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "training.networks.Generator": {"conv_clamp": None, "num_fp16_res": 0, "w_avg_beta": 0.995},
    "training.networks_stylegan2.Generator": {"conv_clamp": 256, "num_fp16_res": 4, "w_avg_beta": 0.998},
}


# --------------------------------------------------------------------------------------------------- ops


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x^2 over dim 1) + 1e-8)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPS)


def fir_kernel_2d(f: torch.Tensor) -> torch.Tensor:
    """The 2-D kernel of a stored filter: itself if 2-D, else the outer product of separable taps."""
    return f if f.ndim == 2 else torch.outer(f, f)


def fir_filter(
    x: torch.Tensor, f: torch.Tensor, *, up: int, pad: tuple[int, int, int, int], gain: float
) -> torch.Tensor:
    """Zero-insertion up-sampling by ``up``, padding (px0, px1, py0, py1), true convolution with ``gain`` * f.

    x (B, C, H, W); f a stored filter buffer (see :func:`fir_kernel_2d`). Output (B, C, H up + px0 + px1 - fw + 1,
    ...). Every FIR operation of the network goes through here, so a faster formulation of the same
    arithmetic replaces one function.
    """
    return upfirdn2d(x, fir_kernel_2d(f) * gain, up=up, pad=pad)


def upsample_2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zeros inserted, filtered by 4 f, centred (padding ((n+1)//2, (n-2)//2))."""
    fh, fw = f.shape[0], f.shape[-1]
    return fir_filter(x, f, up=2, pad=((fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2), gain=4.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """Modulated (and demodulated) convolution, 'same' size, or 2x up-sampling when ``up`` = 2.

    x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> (B, O, H up, W up). With demodulation each output
    channel is scaled by d_o = (sum_{ikl} (W_oikl s_i)^2 + 1e-8)^(-1/2). ``fused``: one grouped convolution
    with the per-sample weights s W d (B, O, I, k, k); otherwise x s convolved with the shared W, times d.

    Up-sampling: transposed convolution with stride 2 (length 2H + k - 2), then the FIR filter with gain 4 and
    padding (p + (n+1)//2 - (k-1), p + (n-2)//2 - (k-2)), p = k // 2: the whole is the zero-inserted input,
    padded by (p + (n+1)//2, p + (n-2)//2), convolved with W * f, which is 2H long.
    """
    b, cin = x.shape[0], x.shape[1]
    cout, _, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs = None
    if demodulate:
        # sum_{ikl} (W_oikl s_i)^2 = sum_i s_i^2 sum_{kl} W_oikl^2
        dcoefs = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).T + EPS)  # (B, O)
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(b, 1, cin, 1, 1)
        if dcoefs is not None:
            w = w * dcoefs.reshape(b, cout, 1, 1, 1)
        xg = x.reshape(1, b * cin, x.shape[2], x.shape[3])
        if up == 1:
            out = F.conv2d(xg, w.reshape(b * cout, cin, kh, kw), padding=(kh // 2, kw // 2), groups=b)
        else:
            # conv_transpose2d weights are (in, out / groups, k, k)
            out = F.conv_transpose2d(xg, w.transpose(1, 2).reshape(b * cin, cout, kh, kw), stride=up, groups=b)
        out = out.reshape(b, cout, out.shape[2], out.shape[3])
    else:
        xs = x * styles.reshape(b, cin, 1, 1)
        if up == 1:
            out = F.conv2d(xs, weight, padding=(kh // 2, kw // 2))
        else:
            out = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=up)
        if dcoefs is not None:
            out = out * dcoefs.reshape(b, cout, 1, 1)
    if up == 1:
        return out
    if up != 2 or resample_filter is None:
        raise GanProbeError(f"modulated_conv2d up-samples by 2 with a filter, got up={up}")
    fh, fw = resample_filter.shape[0], resample_filter.shape[-1]
    px0, px1 = kw // 2 + (fw + 1) // 2 - (kw - 1), kw // 2 + (fw - 2) // 2 - (kw - 2)
    py0, py1 = kh // 2 + (fh + 1) // 2 - (kh - 1), kh // 2 + (fh - 2) // 2 - (kh - 2)
    return fir_filter(out, resample_filter, up=1, pad=(px0, px1, py0, py1), gain=4.0)


def bias_lrelu_clamp(x: torch.Tensor, bias: torch.Tensor, gain: float, clamp: float | None) -> torch.Tensor:
    """clamp(gain sqrt(2) lrelu_0.2(x + b), -clamp, clamp), b (C,) along dim 1; no clamp when ``clamp`` is None."""
    x = F.leaky_relu(x + bias.to(x.dtype).reshape(1, -1, 1, 1), LRELU_SLOPE) * (LRELU_GAIN * gain)
    return x if clamp is None else x.clamp(-clamp, clamp)


# --------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class StyleGAN2Config:
    """The init kwargs of NVIDIA's StyleGAN2 ``Generator``, validated, with the class's defaults filled in."""

    class_name: str
    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    num_mapping_layers: int = 8
    embed_features: int = 0
    layer_features: int = 0
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    architecture: str = "skip"
    resample_filter: tuple = (1, 3, 3, 1)
    conv_clamp: float | None = None
    kernel_size: int = 3
    use_noise: bool = True

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)


def _as_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointError(f"StyleGAN2 init kwarg {name} must be an int >= {minimum}, got {value!r}")
    return value


def _as_float(value: object, name: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"StyleGAN2 init kwarg {name} must be a finite number, got {value!r}")
    return float(value)


def _unsupported(where: str, names: Sequence[str], supported: Sequence[str]) -> CheckpointError:
    return CheckpointError(
        f"StyleGAN2 {where} {', '.join(map(repr, names))} not supported (supported: {', '.join(supported)})"
    )


def parse_stylegan2_kwargs(
    class_name: str, init_kwargs: Mapping[str, Any], init_args: Sequence[Any] = ()
) -> StyleGAN2Config:
    """Validate NVIDIA's init args/kwargs of a StyleGAN2 ``Generator`` and fill in the class's defaults.

    ``training.networks.Generator`` takes ``synthesis_kwargs`` as one dict, ``training.networks_stylegan2``'s
    takes them as keyword arguments; both take ``mapping_kwargs``. Unknown classes, kwargs or values raise
    :class:`CheckpointError` naming them and what is supported.
    """
    if class_name not in SUPPORTED_CLASSES:
        raise CheckpointError(
            f"StyleGAN2 builder does not support class {class_name!r} (supported: {', '.join(SUPPORTED_CLASSES)})"
        )
    ada = class_name == "training.networks.Generator"
    names = (*_GENERATOR_ARGS, "synthesis_kwargs") if ada else _GENERATOR_ARGS
    if len(init_args) > len(names):
        raise CheckpointError(f"{class_name} takes at most {len(names)} positional args, got {len(init_args)}")
    kwargs = dict(zip(names, init_args))
    for key, value in init_kwargs.items():
        if key in kwargs:
            raise CheckpointError(f"{class_name} init arg {key!r} given both by position and by name")
        kwargs[key] = value
    missing = [k for k in _GENERATOR_ARGS[:5] if k not in kwargs]
    if missing:
        raise CheckpointError(f"{class_name} init kwargs lack {', '.join(missing)}")
    mapping = kwargs.pop("mapping_kwargs", None) or {}
    if ada:
        synthesis = kwargs.pop("synthesis_kwargs", None) or {}
        top = {k: kwargs.pop(k) for k in _GENERATOR_ARGS[:5]}
        if kwargs:
            raise _unsupported(f"{class_name} init kwarg(s)", sorted(kwargs), (*_GENERATOR_ARGS, "synthesis_kwargs"))
    else:
        top = {k: kwargs.pop(k) for k in _GENERATOR_ARGS[:5]}
        synthesis = kwargs
    if not isinstance(mapping, Mapping) or not isinstance(synthesis, Mapping):
        raise CheckpointError(f"{class_name} mapping_kwargs / synthesis kwargs must be dicts")
    bad_mapping = sorted(k for k in mapping if k not in _MAPPING_KWARGS)
    if bad_mapping:
        raise _unsupported("mapping kwarg(s)", bad_mapping, _MAPPING_KWARGS)
    synthesis_names = (*_SYNTHESIS_KWARGS, *(() if ada else ("fused_modconv_default",)))
    bad_synthesis = sorted(k for k in synthesis if k not in synthesis_names)
    if bad_synthesis:
        raise _unsupported("synthesis kwarg(s)", bad_synthesis, synthesis_names)
    for where, group in (("mapping", mapping), ("synthesis", synthesis)):
        activation = group.get("activation", "lrelu")
        if activation != "lrelu":
            raise CheckpointError(f"StyleGAN2 {where} activation {activation!r} not supported (supported: 'lrelu')")

    defaults = _CLASS_DEFAULTS[class_name]
    z_dim = _as_int(top["z_dim"], "z_dim", 1)
    c_dim = _as_int(top["c_dim"], "c_dim", 0)
    w_dim = _as_int(top["w_dim"], "w_dim", 1)
    res = _as_int(top["img_resolution"], "img_resolution", 4)
    if res & (res - 1):
        raise CheckpointError(f"StyleGAN2 img_resolution must be a power of two >= 4, got {res}")
    embed = mapping.get("embed_features")
    layer = mapping.get("layer_features")
    beta = mapping.get("w_avg_beta", defaults["w_avg_beta"])
    if beta is None:
        raise CheckpointError("StyleGAN2 mapping_kwargs w_avg_beta=None: the model keeps no w_avg to truncate towards")
    architecture = synthesis.get("architecture", "skip")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"StyleGAN2 architecture {architecture!r} not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    taps = synthesis.get("resample_filter", [1, 3, 3, 1])
    try:
        taps_tensor = torch.as_tensor(taps, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"StyleGAN2 resample_filter must be numbers, got {taps!r}") from None
    if taps_tensor.ndim not in (1, 2) or taps_tensor.numel() == 0:
        raise CheckpointError(f"StyleGAN2 resample_filter must be 1-D or 2-D, got {taps!r}")
    kernel_size = _as_int(synthesis.get("kernel_size", 3), "kernel_size", 1)
    use_noise = synthesis.get("use_noise", True)
    if not isinstance(use_noise, bool):
        raise CheckpointError(f"StyleGAN2 use_noise must be a bool, got {use_noise!r}")
    conv_clamp = _as_float(synthesis.get("conv_clamp", defaults["conv_clamp"]), "conv_clamp", allow_none=True)
    if conv_clamp is not None and conv_clamp < 0:
        raise CheckpointError(f"StyleGAN2 conv_clamp must be >= 0 or None, got {conv_clamp}")
    lr = _as_float(mapping.get("lr_multiplier", 0.01), "lr_multiplier")
    assert lr is not None
    config = StyleGAN2Config(
        class_name=class_name,
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=res,
        img_channels=_as_int(top["img_channels"], "img_channels", 1),
        num_mapping_layers=_as_int(mapping.get("num_layers", 8), "num_layers", 1),
        embed_features=0 if c_dim == 0 else _as_int(w_dim if embed is None else embed, "embed_features", 1),
        layer_features=_as_int(w_dim if layer is None else layer, "layer_features", 1),
        lr_multiplier=lr,
        w_avg_beta=_as_float(beta, "w_avg_beta"),
        channel_base=_as_int(synthesis.get("channel_base", 32768), "channel_base", 1),
        channel_max=_as_int(synthesis.get("channel_max", 512), "channel_max", 1),
        num_fp16_res=_as_int(synthesis.get("num_fp16_res", defaults["num_fp16_res"]), "num_fp16_res", 0),
        architecture=architecture,
        resample_filter=tuple(taps_tensor.tolist()),
        conv_clamp=conv_clamp,
        kernel_size=kernel_size,
        use_noise=use_noise,
    )
    narrow = [r for r in config.resolutions if config.channels(r) < 1]
    if narrow:
        raise CheckpointError(
            f"StyleGAN2 channel_base {config.channel_base} leaves no channels at resolution(s) {narrow}"
        )
    return config


# --------------------------------------------------------------------------------------------------- layers


def _filter_buffer(taps: Sequence) -> torch.Tensor:
    """A filter buffer as training stored it: normalised, separable 1-D taps if 8 or more, else their outer product."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


class FullyConnectedLayer(nn.Module):
    """y = x (a W)^T + l b, a = l / sqrt(in), then sqrt(2) lrelu_0.2 if ``lrelu``; ``weight`` (out, in), ``bias`` (out,)

    ``lr_multiplier`` l is the learning-rate multiplier of equalised learning rate (the mapping's 0.01).
    """

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, lrelu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight.to(x.dtype) * self.weight_gain, self.bias.to(x.dtype) * self.bias_gain)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.lrelu else x


class MappingNetwork(nn.Module):
    """z (B, z_dim), c (B, c_dim) -> ws (B, num_ws, w_dim), no truncation; buffer ``w_avg`` (w_dim,)."""

    w_avg: torch.Tensor

    def __init__(self, config: StyleGAN2Config, num_ws: int) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = config.z_dim, config.c_dim, config.w_dim, num_ws
        self.num_layers = config.num_mapping_layers
        features = [config.z_dim + config.embed_features]
        features += [config.layer_features] * (self.num_layers - 1) + [config.w_dim]
        if config.c_dim > 0:
            self.embed = FullyConnectedLayer(config.c_dim, config.embed_features)
        for i in range(self.num_layers):
            layer = FullyConnectedLayer(features[i], features[i + 1], config.lr_multiplier, lrelu=True)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.empty(config.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.w_avg.dtype
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise GanProbeError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            if c is None:
                raise GanProbeError(f"this generator is conditional (c_dim {self.c_dim}): give a class label c")
            if c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise GanProbeError(f"c must have shape ({z.shape[0]}, {self.c_dim}), got {tuple(c.shape)}")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(dtype)))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x.unsqueeze(1).expand(-1, self.num_ws, -1)


class SynthesisLayer(nn.Module):
    """Modulated conv (2x up-sampling if ``up`` = 2) -> + noise_strength * noise -> bias, lrelu, gain, clamp."""

    resample_filter: torch.Tensor
    noise_const: torch.Tensor

    def __init__(
        self,
        config: StyleGAN2Config,
        in_channels: int,
        out_channels: int,
        resolution: int,
        *,
        up: int,
        resample_filter: Sequence,
    ) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, config.use_noise
        self.conv_clamp = config.conv_clamp
        self.fused_modconv = False
        self.register_buffer("resample_filter", _filter_buffer(resample_filter))
        self.affine = FullyConnectedLayer(config.w_dim, in_channels)
        k = config.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        if self.use_noise:
            self.register_buffer("noise_const", torch.empty(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.empty(()))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, gain: float = 1.0) -> torch.Tensor:
        x = modulated_conv2d(
            x,
            self.weight,
            self.affine(w),
            demodulate=True,
            up=self.up,
            resample_filter=self.resample_filter,
            fused=self.fused_modconv,
        )
        if self.use_noise and noise is not None:
            x = x + self.noise_strength.to(x.dtype) * noise.to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_lrelu_clamp(x, self.bias, gain, clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation (style A(w) / sqrt(in)), + bias, clamp to +-conv_clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.fused_modconv = False
        self.affine = FullyConnectedLayer(w_dim, in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused_modconv)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class UpsampleSkip(nn.Module):
    """The resnet skip path: up2(conv1x1(x, W / sqrt(in))) * gain, no bias; ``weight`` (out, in, 1, 1)."""

    resample_filter: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, resample_filter: Sequence) -> None:
        super().__init__()
        self.register_buffer("resample_filter", _filter_buffer(resample_filter))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        x = F.conv2d(x, self.weight.to(x.dtype) * self.weight_gain)
        return upsample_2x(x, self.resample_filter) * gain


class SynthesisBlock(nn.Module):
    """One resolution: (const or conv0 up) -> conv1 [-> ToRGB], per the architecture."""

    resample_filter: torch.Tensor

    def __init__(self, config: StyleGAN2Config, in_channels: int, out_channels: int, resolution: int) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.architecture = config.architecture
        self.is_last = resolution == config.img_resolution
        self.register_buffer("resample_filter", _filter_buffer(config.resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                config, in_channels, out_channels, resolution, up=2, resample_filter=config.resample_filter
            )
            self.num_conv += 1
        # NVIDIA builds conv1's (unused) filter from the default taps, not the kwarg
        self.conv1 = SynthesisLayer(config, out_channels, out_channels, resolution, up=1, resample_filter=(1, 3, 3, 1))
        self.num_conv += 1
        if self.is_last or self.architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, config.img_channels, config.w_dim, config.conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and self.architecture == "resnet":
            self.skip = UpsampleSkip(in_channels, out_channels, config.resample_filter)

    def noise_layers(self) -> list[SynthesisLayer]:
        layers = [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]
        return [layer for layer in layers if layer.use_noise]

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise: Sequence[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ws (B, num_conv + num_torgb, w_dim); ``noise`` one map (or None) per conv layer of this block."""
        if x is None:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise[0])
        elif self.architecture == "resnet":
            half = math.sqrt(0.5)
            y = self.skip(x, gain=half)
            x = self.conv0(x, ws[:, 0], noise[0])
            x = y + self.conv1(x, ws[:, 1], noise[1], gain=half)
        else:
            x = self.conv0(x, ws[:, 0], noise[0])
            x = self.conv1(x, ws[:, 1], noise[1])
        if img is not None:
            img = upsample_2x(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv])
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, img_channels, R, R) through blocks ``b4`` .. ``b{R}``."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.w_dim = config.w_dim
        self.block_resolutions = config.resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = config.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(config, in_channels, config.channels(res), res)
            self.num_ws += block.num_conv + (block.num_torgb if block.is_last else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """The layers with noise inputs, in order (b4.conv1, b8.conv0, b8.conv1, ...)."""
        return [layer for block in self.blocks() for layer in block.noise_layers()]

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """(1, 1, r, r) for each noise input, in layer order."""
        return [(1, 1, layer.resolution, layer.resolution) for layer in self.noise_layers()]

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``noise_mode`` "const" (the ``noise_const`` buffers) or "none"; ``noise`` (maps (1 or B, 1, r, r) in
        the order of :meth:`noise_shapes`, unscaled: each is multiplied by its layer's noise_strength) overrides it."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise GanProbeError(f"ws must have shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        layers = self.noise_layers()
        if noise is not None:
            maps: list[torch.Tensor | None] = list(noise)
            if len(maps) != len(layers):
                raise GanProbeError(f"need {len(layers)} noise maps, got {len(maps)}")
            for i, (m, layer) in enumerate(zip(noise, layers)):
                r = layer.resolution
                if m.ndim != 4 or m.shape[1:] != (1, r, r) or m.shape[0] not in (1, ws.shape[0]):
                    raise GanProbeError(f"noise map {i} must have shape (1 or B, 1, {r}, {r}), got {tuple(m.shape)}")
        elif noise_mode == "const":
            maps = [layer.noise_const.reshape(1, 1, *layer.noise_const.shape) for layer in layers]
        elif noise_mode == "none":
            maps = [None] * len(layers)
        else:
            raise GanProbeError(
                f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r} (give random maps as noise)"
            )
        dtype = next(iter(self.parameters())).dtype
        ws = ws.to(dtype)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_index = 0
        noise_index = 0
        for block in self.blocks():
            block_noise: list[torch.Tensor | None] = []
            for layer in [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]:
                block_noise.append(maps[noise_index] if layer.use_noise else None)
                noise_index += int(layer.use_noise)
            x, img = block(x, img, ws[:, w_index : w_index + block.num_conv + block.num_torgb], block_noise)
            w_index += block.num_conv
        assert img is not None
        return img


# --------------------------------------------------------------------------------------------------- generator


class NvidiaStyleGAN2Generator(nn.Module):
    """NVIDIA's StyleGAN2 ``Generator`` (stylegan2-ada-pytorch or the stylegan3 repository), state under NVIDIA's names.

    Attributes ``z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels``, ``config`` (:class:`StyleGAN2Config`);
    ``w_avg`` (w_dim,) is the stored ``mapping.w_avg``. ``mapping(z, c)`` -> ws (B, num_ws, w_dim) without
    truncation; ``synthesis(ws, noise_mode, noise)`` -> image (B, img_channels, R, R), not clamped.
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config, self.num_ws)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def fused_modconv(self) -> bool:
        """Whether the modulated convolutions run as grouped per-sample convolutions (same numbers, see module doc)."""
        return self.synthesis.blocks()[0].conv1.fused_modconv

    @fused_modconv.setter
    def fused_modconv(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, (SynthesisLayer, ToRGBLayer)):
                m.fused_modconv = bool(value)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return self.synthesis.noise_shapes()

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, noise_mode: str = "const") -> torch.Tensor:
        """z (B, z_dim), c (B, c_dim) or None -> image: synthesis(mapping(z, c), noise_mode), psi = 1."""
        return self.synthesis(self.mapping(z, c), noise_mode)


def _owner(module: nn.Module, key: str) -> tuple[nn.Module, str]:
    *path, name = key.split(".")
    for part in path:
        module = getattr(module, part)
    return module, name


def build_stylegan2(record: Any, dtype: torch.dtype = torch.float32) -> NvidiaStyleGAN2Generator:
    """Rebuild a StyleGAN2 generator from a record with ``class_name``, ``init_kwargs`` (and optional ``init_args``)
    and ``state`` (the flat named parameters and buffers, NVIDIA's keys); eval mode, in ``dtype``.

    Every stored key must be one the kwargs imply and vice versa, with the implied shape; the
    ``resample_filter`` buffers are taken as stored, whatever their size (1-D taps or a 2-D kernel).
    Raises :class:`CheckpointError` naming what does not fit.
    """
    config = parse_stylegan2_kwargs(
        str(record.class_name), dict(record.init_kwargs), tuple(getattr(record, "init_args", ()) or ())
    )
    state: Mapping[str, Any] = record.state
    with torch.device("meta"):
        module = NvidiaStyleGAN2Generator(config)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for key, value in state.items():
        if key not in expected:
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
            wrong.append(f"{key} ({kind}, expected floating-point tensor)")
        elif key.endswith("resample_filter"):
            if value.ndim not in (1, 2) or value.numel() == 0 or not bool(torch.isfinite(value).all()):
                wrong.append(f"{key} {tuple(value.shape)} (expected a finite 1-D or 2-D filter)")
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})")
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label} {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(
            f"{config.class_name} state does not fit its init kwargs (resolution {config.img_resolution}, "
            f"architecture {config.architecture}): " + "; ".join(problems)
        )
    for key in expected:
        if key.endswith("resample_filter"):
            owner, name = _owner(module, key)
            owner._buffers[name] = torch.empty(state[key].shape, device="meta")
    module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return module.to(dtype).eval()
