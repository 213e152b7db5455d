"""StyleGAN3 generator (configs T and R) in plain differentiable torch, rebuilt from the state and init
kwargs of NVIDIA's ``training.networks_stylegan3.Generator`` (Karras et al. 2021, "Alias-Free Generative
Adversarial Networks", NeurIPS 2021).

Written from the paper; parameter and buffer names follow NVIDIA's module tree so the flat state of a
pickle loads as it is::

    mapping.embed.{weight,bias}                  c -> w_dim (only when c_dim > 0)
    mapping.fc{i}.{weight,bias}, mapping.w_avg   the mapping MLP and the tracked mean of w
    synthesis.input.{weight,affine.*}            Fourier-feature input (Sec. 3.1)
    synthesis.input.{transform,freqs,phases}     its buffers: user transform, frequencies, phases
    synthesis.L{i}_{size}_{channels}.*           layers 0 .. num_layers; the last is ToRGB
        weight (out, in, k, k), bias (out,), affine.{weight,bias}, magnitude_ema (),
        up_filter, down_filter                   (absent where a layer does not resample)

Mathematics. Mapping: z and the embedded c are each normalised to unit second moment, concatenated and
passed through ``num_layers`` equalised-lr dense layers with sqrt(2)-gain leaky ReLU (slope 0.2).
Synthesis (Sec. 3 and Appendix F): a per-layer cutoff f_c and minimum stopband f_t progress
geometrically from (first_cutoff, first_stopband) to (res/2, res/2 * last_stopband_rel), reaching the end
at layer num_layers - num_critical; the sampling rate s = 2^ceil(log2(min(2 f_t, res))), the transition
half-width f_h = max(f_t, s/2) - f_c, the size s + 2 margin (res for the last two layers, which crops the
margin away), the channels rint(min(channel_base / (2 f_c), channel_max)). Each layer is

    x <- filtered_lrelu(modconv(x * magnitude_ema^-1/2, styles), b)

with a demodulated modulated convolution (Karras et al. 2020, eq. 1-3, with weights and styles first
normalised to unit mean square) and the filtered leaky ReLU of ``stylegan3_ops`` at the sampling rate
max(s_in, s_out) * lrelu_upsampling, padded as in Appendix C.3 (symmetric sample positions). The ToRGB
layer is a 1x1 modulation without demodulation (styles scaled by 1/sqrt(in)), bias and clamp; the image
is scaled by ``output_scale``.

Stored buffers are used as stored: the filters (``up_filter``, ``down_filter``), the input's ``transform``,
``freqs`` and ``phases``, ``magnitude_ema`` and ``w_avg``. The init kwargs set only the geometry (sizes,
factors, paddings, channel counts); the filter values come from the state, because NVIDIA's forward pass
reads them from the buffers and a network fine-tuned with ``--resume`` carries the filters it was resumed
from (``copy_params_and_buffers`` copies buffers too) even where its own kwargs would design others.

Differences from NVIDIA's code that do not change the function of one sample: its modulation normalises
the styles by their mean square over the whole batch, which couples the samples of a batch through the
demodulation's 1e-8 only (relative changes of about 1e-10); here each sample is normalised alone, which is
NVIDIA's result at batch size 1. Its fp16 layers (CUDA only) are computed here in the module's dtype.
The modulated convolution scales the input by the styles and the output by the demodulation coefficients
around one shared-weight convolution (the same function as per-sample weights in a grouped convolution,
and cheaper under ``torch.func.vmap``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.models.nvidia.stylegan3_ops import filtered_leaky_relu

STYLEGAN3_CLASS = "training.networks_stylegan3.Generator"
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
EPS = 1e-8  # z / c normalisation and demodulation
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
_MAPPING_KWARGS = ("num_layers", "lr_multiplier", "w_avg_beta")
# accepted and without effect on the forward pass of a trained network: EMA decays, fp16 (CUDA only)
_TRAINING_ONLY = ("w_avg_beta", "magnitude_ema_beta", "num_fp16_res")


class NetworkState(Protocol):
    """What the builder reads from a pickled network (the reader's ``NetworkRecord`` has these)."""

    class_name: str
    init_kwargs: dict
    state: dict[str, torch.Tensor]


@dataclass(frozen=True)
class StyleGAN3Config:
    """The init kwargs of ``training.networks_stylegan3.Generator`` with their defaults (config T)."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    mapping_num_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256.0

    @property
    def config_name(self) -> str:
        """'T' (3x3 convolutions, separable filters), 'R' (1x1, radial) or a description of a mix."""
        if self.conv_kernel == 3 and not self.use_radial_filters:
            return "T"
        if self.conv_kernel == 1 and self.use_radial_filters:
            return "R"
        return f"conv_kernel={self.conv_kernel}, use_radial_filters={self.use_radial_filters}"


@dataclass(frozen=True)
class LayerGeometry:
    """One synthesis layer's sizes, resampling factors, filter lengths and padding (px0, px1, py0, py1), and
    the band limits its filters were designed for: cutoffs f_c and transition half-widths f_h of its input
    and output, at the temporary sampling rate (the stored filters are used, these are for reference)."""

    name: str
    is_torgb: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    conv_kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    radial_down: bool
    padding: tuple[int, int, int, int]
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float


@dataclass(frozen=True)
class InputGeometry:
    """The Fourier-feature input: channels, size, sampling rate and bandwidth (its cutoff f_c,0)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


def _kwarg_error(message: str) -> CheckpointError:
    return CheckpointError(f"{STYLEGAN3_CLASS}: {message}")


def parse_stylegan3_kwargs(init_kwargs: Mapping[str, Any], init_args: tuple = ()) -> StyleGAN3Config:
    """The config from a pickle's init kwargs (and positional args, in the constructor's order).

    Raises CheckpointError naming any kwarg that is not supported and listing the supported ones.
    """
    kwargs = dict(init_kwargs)
    if len(init_args) > len(_POSITIONAL):
        raise _kwarg_error(f"{len(init_args)} positional init args; at most {len(_POSITIONAL)} are supported")
    for name, value in zip(_POSITIONAL, init_args):
        if name in kwargs:
            raise _kwarg_error(f"init arg {name!r} given both by position and by name")
        kwargs[name] = value
    mapping = kwargs.pop("mapping_kwargs", None) or {}
    if not isinstance(mapping, Mapping):
        raise _kwarg_error(f"mapping_kwargs must be a dict, got {type(mapping).__name__}")
    required = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise _kwarg_error(f"init kwargs lack {', '.join(missing)}")
    own = {f.name for f in fields(StyleGAN3Config)} - {"mapping_num_layers", "mapping_lr_multiplier"}
    unknown = sorted(set(kwargs) - own - set(_TRAINING_ONLY))
    unknown_mapping = sorted(f"mapping_kwargs.{k}" for k in set(mapping) - set(_MAPPING_KWARGS))
    if unknown or unknown_mapping:
        supported = sorted(own | set(_TRAINING_ONLY) | {"mapping_kwargs"})
        raise _kwarg_error(
            f"unsupported init kwargs {', '.join(unknown + unknown_mapping)}; supported: {', '.join(supported)}"
            f" and mapping_kwargs {', '.join(_MAPPING_KWARGS)}"
        )
    values = {k: v for k, v in kwargs.items() if k in own}
    if "num_layers" in mapping:
        values["mapping_num_layers"] = mapping["num_layers"]
    if "lr_multiplier" in mapping:
        values["mapping_lr_multiplier"] = mapping["lr_multiplier"]
    try:
        cfg = StyleGAN3Config(**values)
        for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_layers", "num_critical"):
            _as_int(getattr(cfg, name), name, minimum=0)
        _as_int(cfg.conv_kernel, "conv_kernel", minimum=1)
        _as_int(cfg.filter_size, "filter_size", minimum=1)
        _as_int(cfg.lrelu_upsampling, "lrelu_upsampling", minimum=1)
        _as_int(cfg.margin_size, "margin_size", minimum=0)
    except (TypeError, ValueError) as exc:
        raise _kwarg_error(str(exc)) from None
    if cfg.num_layers <= cfg.num_critical:
        raise _kwarg_error(f"num_layers ({cfg.num_layers}) must exceed num_critical ({cfg.num_critical})")
    if cfg.z_dim < 1 or cfg.w_dim < 1 or cfg.img_resolution < 1 or cfg.img_channels < 1:
        raise _kwarg_error("z_dim, w_dim, img_resolution and img_channels must be positive")
    return cfg


def _as_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def synthesis_geometry(cfg: StyleGAN3Config) -> tuple[InputGeometry, list[LayerGeometry]]:
    """The input and per-layer geometry that the init kwargs define (Appendix F of the paper).

    f_c[i] = f_c,0 (f_c,N / f_c,0)^e_i and f_t[i] likewise, e_i = min(i / (N - N_crit), 1), with
    f_c,N = res / 2 and f_t,N = f_c,N * last_stopband_rel; s[i] = 2^ceil(log2(min(2 f_t[i], res)));
    f_h[i] = max(f_t[i], s[i] / 2) - f_c[i]; sizes s[i] + 2 margin except res for the last two layers;
    channels rint(min(channel_base / 2 / f_c[i], channel_max)), the last one img_channels. Layer i maps
    layer i - 1's output (the input's for i = 0) at the temporary rate max(s_in, s_out) * lrelu_upsampling
    (no oversampling for ToRGB); the filters have filter_size * factor taps when they resample.
    """
    n, res = cfg.num_layers, cfg.img_resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = [min(i / (n - cfg.num_critical), 1.0) for i in range(n + 1)]
    cutoffs = [cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** e for e in exponents]
    stopbands = [cfg.first_stopband * (last_stopband / cfg.first_stopband) ** e for e in exponents]
    rates = [2.0 ** math.ceil(math.log2(min(2 * f_t, res))) for f_t in stopbands]
    half_widths = [max(f_t, s / 2) - f_c for f_t, s, f_c in zip(stopbands, rates, cutoffs)]
    sizes = [int(s + 2 * cfg.margin_size) for s in rates]
    sizes[-2:] = [res, res]
    channels = [int(round(min(cfg.channel_base / 2 / f_c, cfg.channel_max))) for f_c in cutoffs]
    channels[-1] = cfg.img_channels
    inp = InputGeometry(channels=channels[0], size=sizes[0], sampling_rate=rates[0], bandwidth=cutoffs[0])
    layers = []
    for i in range(n + 1):
        prev = max(i - 1, 0)
        is_torgb = i == n
        in_rate, out_rate = int(rates[prev]), int(rates[i])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else cfg.lrelu_upsampling)
        if tmp_rate % in_rate or tmp_rate % out_rate:
            raise _kwarg_error(f"layer {i}: sampling rate {tmp_rate} is not a multiple of {in_rate} and {out_rate}")
        up, down = tmp_rate // in_rate, tmp_rate // out_rate
        k = 1 if is_torgb else cfg.conv_kernel
        up_taps = cfg.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not is_torgb else 1
        # output length before decimation, minus the upsampled input, plus what the two filters consume
        pad_total = (sizes[i] - 1) * down + 1 - (sizes[prev] + k - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2  # symmetric sample positions (Appendix C.3)
        pad_hi = pad_total - pad_lo
        layers.append(
            LayerGeometry(
                name=f"L{i}_{sizes[i]}_{channels[i]}",
                is_torgb=is_torgb,
                in_channels=channels[prev],
                out_channels=channels[i],
                in_size=sizes[prev],
                out_size=sizes[i],
                conv_kernel=k,
                up=up,
                down=down,
                up_taps=up_taps,
                down_taps=down_taps,
                radial_down=cfg.use_radial_filters and i < n - cfg.num_critical,
                padding=(pad_lo, pad_hi, pad_lo, pad_hi),
                tmp_sampling_rate=tmp_rate,
                in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[i],
                in_half_width=half_widths[prev],
                out_half_width=half_widths[i],
            )
        )
    return inp, layers


# --------------------------------------------------------------------------------------------------- layers


class FullyConnected(nn.Module):
    """Equalised-lr dense layer: y = x (g W)^T + lr b, g = lr / sqrt(in), then sqrt(2) lrelu(., 0.2) if
    ``lrelu``. Stored weight (out, in) and bias (out,) are the unscaled parameters (NVIDIA's layout)."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, lrelu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.lrelu else x


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x^2 over dim 1) + 1e-8)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPS)


class MappingNetwork(nn.Module):
    """(z, c) -> ws (B, num_ws, w_dim) without truncation: normalise z (and embed(c)) to unit second moment,
    concatenate, ``num_layers`` dense lrelu layers, broadcast to every layer. ``w_avg`` is stored, not used."""

    w_avg: torch.Tensor

    def __init__(self, cfg: StyleGAN3Config, num_ws: int) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, num_ws
        self.num_layers = cfg.mapping_num_layers
        if cfg.c_dim > 0:
            self.embed = FullyConnected(cfg.c_dim, cfg.w_dim)
        features = [cfg.z_dim + (cfg.w_dim if cfg.c_dim > 0 else 0)] + [cfg.w_dim] * self.num_layers
        for i in range(self.num_layers):
            layer = FullyConnected(features[i], features[i + 1], lr_multiplier=cfg.mapping_lr_multiplier, lrelu=True)
            self.add_module(f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise GanProbeError(f"z must have shape (batch, {self.z_dim}), got {tuple(z.shape)}", param="z")
        x = _normalize_2nd_moment(z.to(self.w_avg.dtype))
        if self.c_dim > 0:
            if c is None:
                raise GanProbeError(f"the generator is conditional (c_dim={self.c_dim}): give a class c", param="c")
            if c.shape != (z.shape[0], self.c_dim):
                raise GanProbeError(f"c must have shape ({z.shape[0]}, {self.c_dim}), got {tuple(c.shape)}", param="c")
            y = _normalize_2nd_moment(self.embed(c.to(x.dtype)))
            x = torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


class FourierInput(nn.Module):
    """Fourier features (Sec. 3.1): channel j is sin(2 pi (<f_j, p> + phi_j)) at sample positions p, mixed by
    ``weight`` / sqrt(C). From w, a dense layer gives t = (r_c, r_s, t_x, t_y), normalised so that
    r_c^2 + r_s^2 = 1; the inverse image transform M = R(r) T(-t) ``transform`` (3x3 homogeneous) maps the
    frequencies f <- f M[:2, :2] and phases phi <- phi + f . M[:2, 2]. Frequencies outside the band are
    faded: amplitude clamp(1 - (|f| - bandwidth) / (s/2 - bandwidth), 0, 1). Positions of a size x size
    grid at sampling rate s: (j + 1/2 - size/2) / s along each axis (x along width, y along height).
    w (B, w_dim) -> (B, C, size, size)."""

    transform: torch.Tensor
    freqs: torch.Tensor
    phases: torch.Tensor

    def __init__(self, w_dim: int, geometry: InputGeometry) -> None:
        super().__init__()
        self.channels, self.size = geometry.channels, geometry.size
        self.sampling_rate, self.bandwidth = geometry.sampling_rate, geometry.bandwidth
        self.weight = nn.Parameter(torch.zeros(self.channels, self.channels))
        self.affine = FullyConnected(w_dim, 4)
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(self.channels, 2))
        self.register_buffer("phases", torch.zeros(self.channels))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # (B, 4)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        one, zero = torch.ones_like(t[:, 0]), torch.zeros_like(t[:, 0])
        rotation = torch.stack(
            [
                torch.stack([t[:, 0], -t[:, 1], zero], 1),
                torch.stack([t[:, 1], t[:, 0], zero], 1),
                torch.stack([zero, zero, one], 1),
            ],
            1,
        )
        translation = torch.stack(
            [
                torch.stack([one, zero, -t[:, 2]], 1),
                torch.stack([zero, one, -t[:, 3]], 1),
                torch.stack([zero, zero, one], 1),
            ],
            1,
        )
        m = rotation @ translation @ self.transform.to(t.dtype)  # (B, 3, 3)
        freqs = self.freqs.to(t.dtype)
        phases = self.phases.to(t.dtype) + (freqs @ m[:, :2, 2:]).squeeze(2)  # (B, C)
        freqs = freqs @ m[:, :2, :2]  # (B, C, 2)
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        pos = (torch.arange(self.size, dtype=t.dtype, device=t.device) + 0.5 - self.size / 2) / self.sampling_rate
        arg = (
            pos.reshape(1, 1, -1, 1) * freqs[:, None, None, :, 0]
            + pos.reshape(1, -1, 1, 1) * freqs[:, None, None, :, 1]
            + phases[:, None, None, :]
        )  # (B, H, W, C)
        x = torch.sin(arg * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).T
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    input_gain: torch.Tensor | float,
    padding: int,
) -> torch.Tensor:
    """Modulated convolution with one shared weight: conv(x * s * g, W') * d.

    With demodulation the weight and styles are first normalised to unit mean square, W' = W / rms_{ikl}(W)
    per output channel and s = styles / rms_i(styles) per sample; the demodulation coefficients are
    d_o = (sum_i s_i^2 sum_{kl} W'^2_{oikl} + 1e-8)^-1/2. This equals the per-sample weights
    W''_{oikl} = W'_{oikl} s_i d_o g in a grouped convolution, since conv(x, W' s) = conv(x s, W').
    Without demodulation W' = W, s = styles and d = 1. ``input_gain`` g is a scalar.
    x (B, in, H, W), weight (out, in, k, k), styles (B, in) -> (B, out, H + 2 padding - k + 1, ...).
    """
    b, cin = styles.shape
    w = weight.to(x.dtype)
    s = styles
    if demodulate:
        w = w * torch.rsqrt(w.square().mean(dim=(1, 2, 3), keepdim=True))
        s = s * torch.rsqrt(s.square().mean(dim=1, keepdim=True))
    out = F.conv2d(x * (s * input_gain).reshape(b, cin, 1, 1), w, padding=padding)
    if demodulate:
        d = torch.rsqrt(s.square() @ w.square().sum(dim=(2, 3)).T + EPS)  # (B, out)
        out = out * d.reshape(b, -1, 1, 1)
    return out


class SynthesisLayer(nn.Module):
    """One layer: input scaled by magnitude_ema^-1/2, modulated convolution (k x k, padding k - 1, styles
    from ``affine(w)``, whose bias starts at 1), then the filtered leaky ReLU with the stored filters.
    ToRGB: no demodulation, styles scaled by 1/sqrt(in k^2), slope and gain 1 (bias and clamp only)."""

    magnitude_ema: torch.Tensor
    up_filter: torch.Tensor | None
    down_filter: torch.Tensor | None

    def __init__(self, w_dim: int, geometry: LayerGeometry, conv_clamp: float | None) -> None:
        super().__init__()
        g = self.geometry = geometry
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, g.in_channels)
        self.weight = nn.Parameter(torch.zeros(g.out_channels, g.in_channels, g.conv_kernel, g.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(g.out_channels))
        self.register_buffer("magnitude_ema", torch.ones(()))
        # as NVIDIA's: a 1-tap (identity) filter is no buffer at all
        self.register_buffer("up_filter", torch.zeros(g.up_taps) if g.up_taps > 1 else None)
        down_shape = (g.down_taps, g.down_taps) if g.radial_down else (g.down_taps,)
        self.register_buffer("down_filter", torch.zeros(down_shape) if g.down_taps > 1 else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        styles = self.affine(w)
        input_gain = torch.rsqrt(self.magnitude_ema.to(x.dtype))
        if g.is_torgb:
            styles = styles / math.sqrt(g.in_channels * g.conv_kernel**2)
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=not g.is_torgb, input_gain=input_gain, padding=g.conv_kernel - 1
        )
        return filtered_leaky_relu(
            x,
            self.bias,
            self.up_filter,
            self.down_filter,
            up=g.up,
            down=g.down,
            padding=g.padding,
            gain=1.0 if g.is_torgb else LRELU_GAIN,
            slope=1.0 if g.is_torgb else LRELU_SLOPE,
            clamp=self.conv_clamp,
        )


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, img_channels, res, res): the Fourier input from ws[:, 0], layer i
    from ws[:, i + 1], the result times ``output_scale``. StyleGAN3 has no noise inputs."""

    def __init__(self, cfg: StyleGAN3Config) -> None:
        super().__init__()
        geometry, layers = synthesis_geometry(cfg)
        self.w_dim, self.num_ws = cfg.w_dim, cfg.num_layers + 2
        self.img_channels, self.img_resolution = cfg.img_channels, cfg.img_resolution
        self.output_scale = cfg.output_scale
        self.input = FourierInput(cfg.w_dim, geometry)
        self.layer_names = [g.name for g in layers]
        for g in layers:
            self.add_module(g.name, SynthesisLayer(cfg.w_dim, g, cfg.conv_clamp))

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        if noise_mode not in ("const", "none", "random"):
            raise GanProbeError(
                f"noise_mode must be 'const', 'none' or 'random', got {noise_mode!r}", param="noise_mode"
            )
        if noise:
            raise GanProbeError(f"StyleGAN3 has no noise inputs, got {len(noise)} noise maps", param="noise")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise GanProbeError(
                f"ws must have shape (batch, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}", param="ws"
            )
        ws = ws.to(self.input.weight.dtype)
        x = self.input(ws[:, 0])
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, i + 1])
        return x * self.output_scale if self.output_scale != 1 else x


class StyleGAN3Generator(nn.Module):
    """NVIDIA's ``training.networks_stylegan3.Generator`` (configs T and R), always in eval mode.

    ``mapping(z, c)`` gives ws (B, num_ws, w_dim) without truncation (the caller truncates as
    w_avg + psi (w - w_avg)); ``synthesis(ws, noise_mode, noise)`` the image; ``w_avg`` is the mapping's
    stored buffer. ``noise_mode`` is accepted for the shared interface and changes nothing.
    """

    def __init__(self, cfg: StyleGAN3Config) -> None:
        super().__init__()
        self.config = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)
        self.eval()

    @property
    def w_avg(self) -> torch.Tensor:
        """(w_dim,) the stored mean of w (``mapping.w_avg``)."""
        return self.mapping.w_avg

    @property
    def architecture(self) -> str:
        """'StyleGAN3-T', 'StyleGAN3-R' or StyleGAN3 with the kwargs that make it neither."""
        name = self.config.config_name
        return f"StyleGAN3-{name}" if len(name) == 1 else f"StyleGAN3 ({name})"

    def train(self, mode: bool = True) -> StyleGAN3Generator:
        """Stays in eval mode: the stored EMAs are not updated here."""
        return super().train(False)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """StyleGAN3 has no per-layer noise: an empty list."""
        return []

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, c), noise_mode)


# --------------------------------------------------------------------------------------------------- builder


def build_stylegan3(record: NetworkState) -> StyleGAN3Generator:
    """Rebuild ``training.networks_stylegan3.Generator`` from its class name, init kwargs and flat state
    (keys as NVIDIA's ``named_parameters()`` and ``named_buffers()``), in float32 and eval mode. A record's
    ``init_args`` (positional, rare) are read in the constructor's order.

    The kwargs set the geometry; every stored tensor is used as stored, filters included (their tap
    counts must be those the geometry needs). Raises CheckpointError for another class, an unsupported
    kwarg, or a state whose keys or shapes are not the ones the kwargs define.
    """
    if record.class_name != STYLEGAN3_CLASS:
        raise CheckpointError(f"class {record.class_name!r} is not StyleGAN3; supported: {STYLEGAN3_CLASS}")
    args = tuple(getattr(record, "init_args", ()) or ())  # positional init args, where the record has them
    cfg = parse_stylegan3_kwargs(record.init_kwargs, args)
    generator = StyleGAN3Generator(cfg)
    state = dict(record.state)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short_list(unexpected)}")
        raise CheckpointError(
            f"{STYLEGAN3_CLASS} state does not match its init kwargs ({', '.join(parts)});"
            f" kwargs: {json.dumps(record.init_kwargs, sort_keys=True, default=str)}"
        )
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise CheckpointError(f"{STYLEGAN3_CLASS} state {key!r} is not a floating-point tensor")
        want = tuple(expected[key].shape)
        got = tuple(tensor.shape)
        if key.endswith(("up_filter", "down_filter")):
            # the stored filter wins, separable (taps,) or 2-D (taps, taps) alike: NVIDIA filters with it as stored
            taps = want[0]
            if got not in ((taps,), (taps, taps)):
                raise CheckpointError(
                    f"{STYLEGAN3_CLASS} filter {key!r} has shape {got}; the geometry needs {taps} taps"
                )
            module = generator.get_submodule(key.rsplit(".", 1)[0])
            setattr(module, key.rsplit(".", 1)[1], torch.empty(got))
        elif got != want:
            raise CheckpointError(f"{STYLEGAN3_CLASS} state {key!r} has shape {got}, the init kwargs give {want}")
    generator.load_state_dict(state)
    return generator.requires_grad_(False)


def _short_list(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
