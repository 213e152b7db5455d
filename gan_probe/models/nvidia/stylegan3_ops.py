"""The filtered leaky ReLU of StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks",
Sec. 3.2 and Appendix C), as direct convolutions in plain differentiable torch.

A nonlinearity applied to a band-limited signal creates frequencies above the Nyquist limit; StyleGAN3
therefore applies it at a higher sampling rate: per channel,

    y = D_fd( clamp( gain * lrelu( U_fu(x + b), slope ), conv_clamp ) )

where ``U_fu`` upsamples by an integer factor (zero insertion, pad, low-pass ``fu`` with gain ``up`` per
axis) and ``D_fd`` low-passes with ``fd`` and keeps every ``down``-th sample. A filter is 1-D (separable:
the same taps along width then height) or 2-D (the radially symmetric jinc filters of config R);
``None`` is the identity (the ToRGB layer, where up = down = 1 and slope = gain = 1 leave bias and clamp).

Every filtering is a true convolution (the kernel flipped relative to ``F.conv2d``'s cross-correlation)
done as a depthwise direct convolution (no FFT). Upsampling never multiplies the inserted zeros (a
transposed convolution with stride ``up``, or its polyphase form in float64), followed by a pad or crop
to the requested window; downsampling is a convolution with stride ``down``, which computes no discarded
samples. Both give the same sums as zero insertion / decimation around a stride-1 convolution, so the
numbers agree to rounding, while forward-mode Jacobians (``torch.func.jvp`` under ``vmap``) do up to
``up`` (``down``) times less work per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def upsample_fir(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: Sequence[int]) -> torch.Tensor:
    """Zero-insertion upsampling by ``up``, padding ``(px0, px1, py0, py1)`` (negative crops), true
    convolution with ``f`` scaled by ``up`` per axis ("valid"). x (B, C, H, W) ->
    (B, C, H up + py0 + py1 - k + 1, W up + px0 + px1 - k + 1) for a filter of k taps per axis.

    With ``x_up * f`` the full convolution of the zero-inserted signal (length (H - 1) up + k along an
    axis), the output is ``(x_up * f)[m + k - 1 - p0]``: the full result shifted left by k - 1 - p0 and
    padded or cropped on the right. A separable filter is applied along width, then height.
    """
    px0, px1, py0, py1 = padding
    if f is None:
        if up != 1:
            raise ValueError(f"upsampling by {up} needs a filter")
        return F.pad(x, (px0, px1, py0, py1))
    f = f.to(x.dtype)
    h, w = x.shape[2:]
    if f.ndim == 1:
        k = f.shape[0]
        x = _full_upsampling_convolution(x, f * up, up, dim=3)
        x = F.pad(x, (px0 - (k - 1), w * up + px0 + px1 - k + 1 - (x.shape[3] - (k - 1 - px0))))
        x = _full_upsampling_convolution(x, f * up, up, dim=2)
        return F.pad(x, (0, 0, py0 - (k - 1), h * up + py0 + py1 - k + 1 - (x.shape[2] - (k - 1 - py0))))
    # a 2-D upsampling filter (NVIDIA designs only separable ones; a stored 2-D one is used as stored)
    kh, kw = f.shape
    c = x.shape[1]
    x = F.conv_transpose2d(x, (f * up * up).reshape(1, 1, kh, kw).expand(c, 1, kh, kw), stride=up, groups=c)
    return F.pad(x, (px0 - (kw - 1), up + px1 - kw, py0 - (kh - 1), up + py1 - kh))


def _full_upsampling_convolution(x: torch.Tensor, f: torch.Tensor, up: int, dim: int) -> torch.Tensor:
    """Full convolution of x zero-inserted by ``up`` along ``dim`` (2 or 3) with the 1-D filter f.

    float32 (and half): a depthwise transposed convolution with stride ``up``. float64, where the CPU has
    no fast depthwise kernels: the polyphase form, y[up q + r] = sum_j x[q - j] f[up j + r], as one
    depthwise convolution with ``up`` outputs per channel (one per phase r) whose results are interleaved;
    the filter is zero-padded to a multiple of ``up`` taps, which only appends zeros to the result.
    Both compute the same sums; each is the faster one for its dtype. Length (L - 1) up + k, or up to
    up - 1 more (zeros) in the polyphase form.
    """
    b, c = x.shape[:2]
    k = f.shape[0]
    if x.dtype != torch.float64:
        shape = (c, 1, 1, k) if dim == 3 else (c, 1, k, 1)
        stride = (1, up) if dim == 3 else (up, 1)
        return F.conv_transpose2d(x, f.reshape(1, 1, *shape[2:]).expand(shape), stride=stride, groups=c)
    m = -(-k // up)
    phases = F.pad(f, (0, m * up - k)).reshape(m, up).T.flip(1)  # (up, m): phase r holds f[up j + r], reversed
    kernel = phases.reshape(up, 1, 1, m) if dim == 3 else phases.reshape(up, 1, m, 1)
    pad = (0, m - 1) if dim == 3 else (m - 1, 0)
    y = _depthwise_conv2d(x, kernel, stride=(1, 1), padding=pad)  # (B, C up, H', W')
    hh, ww = y.shape[2:]
    y = y.reshape(b, c, up, hh, ww)
    if dim == 3:
        return y.permute(0, 1, 3, 4, 2).reshape(b, c, hh, ww * up)
    return y.permute(0, 1, 3, 2, 4).reshape(b, c, hh * up, ww)


def downsample_fir(x: torch.Tensor, f: torch.Tensor | None, down: int) -> torch.Tensor:
    """True convolution with ``f`` ("valid", no padding), then every ``down``-th sample from index 0.
    x (B, C, H, W) -> (B, C, (H - k) // down + 1, (W - k) // down + 1)."""
    if f is None:
        if down != 1:
            raise ValueError(f"downsampling by {down} needs a filter")
        return x
    f = torch.flip(f.to(x.dtype), tuple(range(f.ndim)))  # conv2d correlates; flipped it convolves
    if f.ndim == 1:
        k = f.shape[0]
        x = _depthwise_conv2d(x, f.reshape(1, 1, 1, k), stride=(1, down), padding=(0, 0))
        return _depthwise_conv2d(x, f.reshape(1, 1, k, 1), stride=(down, 1), padding=(0, 0))
    kh, kw = f.shape
    return _depthwise_conv2d(x, f.reshape(1, 1, kh, kw), stride=(down, down), padding=(0, 0))


def _depthwise_conv2d(
    x: torch.Tensor, kernel: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """The same kernels (M, 1, kh, kw) correlated with every channel of x (B, C, H, W) -> (B, C M, H', W')
    (channel-major). float64 folds the channels into the batch: the CPU's float64 grouped convolution
    runs group by group and concatenates, several times slower than one single-channel convolution."""
    b, c, h, w = x.shape
    m = kernel.shape[0]
    if x.dtype == torch.float64:
        y = F.conv2d(x.reshape(b * c, 1, h, w), kernel, stride=stride, padding=padding)
        return y.reshape(b, c * m, y.shape[2], y.shape[3])
    return F.conv2d(x, kernel.repeat(c, 1, 1, 1), stride=stride, padding=padding, groups=c)


def filtered_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    *,
    up: int,
    down: int,
    padding: Sequence[int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """D_fd(clamp(gain * lrelu(U_fu(x + b), slope), clamp)), x (B, C, H, W), bias (C,).

    Output (B, C, (H up + py0 + py1 - (ku - 1) - (kd - 1) + down - 1) // down, ...) for filters of
    ku and kd taps per axis (1 for ``None``).
    """
    x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = upsample_fir(x, up_filter, up, padding)
    if slope != 1 or gain != 1 or clamp is not None:
        x = (
            _LeakyReluGainClamp.apply(x, slope, gain, clamp)[0]
            if _differentiated(x)
            else _lrelu_gain_clamp(x, slope, gain, clamp)
        )
    return downsample_fir(x, down_filter, down)


def _lrelu_gain_clamp(u: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    """clamp(gain * lrelu(u, slope), clamp): the value of :class:`_LeakyReluGainClamp`, bit for bit, without
    its derivative factor (a plain evaluation, where no product will ask for it)."""
    y = F.leaky_relu(u, slope) if slope != 1 else u
    if gain != 1:
        y = y * gain
    return y.clamp(-clamp, clamp) if clamp is not None else y


def _differentiated(u: torch.Tensor) -> bool:
    """Whether a derivative of ``u`` may be asked for: reverse mode records it, a forward-mode dual carries a
    tangent, or a torch.func transform (jvp, vjp, vmap) wraps it. A plain evaluation (sampling, under
    no_grad) skips the derivative factor, which costs about half again the forward's time."""
    if torch.is_grad_enabled() and u.requires_grad:
        return True
    if torch.autograd.forward_ad.unpack_dual(u).tangent is not None:
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(u))


class _LeakyReluGainClamp(torch.autograd.Function):
    """y = clamp(gain * lrelu(u, slope), clamp) elementwise, with its derivative as one precomputed factor.

    The derivative is dy/du = d(u) = gain * (1 if u > 0 else slope) * [-clamp <= gain lrelu(u) <= clamp]
    (torch's own conventions at the kinks: slope at u = 0, as ``leaky_relu``'s; 1 on the clamp's bounds,
    as ``clamp``'s). Built from ``leaky_relu``, ``mul`` and ``clamp``, a tangent or cotangent costs three
    passes over the upsampled tensor per product (a mask, a scaling, a mask); here d is computed once with
    the primal and shared by every tangent under ``vmap``, so a product costs one multiplication. y is
    computed exactly as before; J v differs from the three-op form only by the rounding of gain * slope.
    d does not depend on u between kinks, so its own derivative is zero, as torch's is for those ops:
    second derivatives (the exact gradient, the double-VJP route) are unchanged.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(u: torch.Tensor, slope: float, gain: float, clamp: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        y = _lrelu_gain_clamp(u, slope, gain, None)
        one = torch.tensor(gain, dtype=u.dtype, device=u.device)
        d = torch.where(u > 0, one, torch.tensor(gain * slope, dtype=u.dtype, device=u.device))
        if clamp is not None:
            low, high = torch.aminmax(y)
            if low < -clamp or high > clamp:  # the mask costs three passes: only where the clamp acts
                d = d * ((y >= -clamp) & (y <= clamp))
            y = y.clamp(-clamp, clamp)
        return y, d

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        d = output[1]
        ctx.mark_non_differentiable(d)
        ctx.save_for_forward(d)
        ctx.save_for_backward(d)

    @staticmethod
    def jvp(ctx: Any, u_t: torch.Tensor, *_: Any) -> tuple[torch.Tensor, None]:
        (d,) = ctx.saved_tensors
        return u_t * d, None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, _grad_d: Any) -> tuple[torch.Tensor, None, None, None]:
        (d,) = ctx.saved_tensors
        return grad_y * d, None, None, None
