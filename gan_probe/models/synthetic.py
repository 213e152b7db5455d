"""Synthetic generators with known answers, for ``bench`` and the tests.

- :class:`LinearGenerator` G(z) = A z: ln det M = 2 sum ln s_i(A) exactly.
- :func:`log_spaced_spectrum`: A = U diag(sqrt(lambda)) V^T with Haar-random
  orthogonal U, V (QR of Gaussian matrices), so M = A^T A = V diag(lambda) V^T
  and 1/2 ln det M = 1/2 sum_i ln lambda_i; the eigenvalues are log-spaced from
  lam_max down to lam_max / cond, the hardest case for polynomial and
  quadrature estimators (half of the spectrum sits in the bottom few decades).
- :class:`HadamardLinearGenerator`: the same spectrum at large nz (a power of
  two) without an nz x nz matrix: A = diag(sqrt(lambda)) Q with
  Q = P_2 H S_2 P_1 H S_1 (H the orthonormal Walsh-Hadamard transform, S random
  signs, P random permutations), so A z costs O(nz log nz), M = Q^T diag(lambda) Q
  has exactly the prescribed eigenvalues and its eigenvectors (the rows of Q)
  are dense, as a Haar-random basis's are (a probe sees every eigenvalue).
- :func:`synthetic_dcgan`: the PyTorch-examples 64x64x3 DCGAN with the
  examples' initialisation (no trained 64x64 checkpoint ships).
- :func:`synthetic_stylegan2`: rosinality's StyleGAN2 layout at a given size
  and channel multiplier, randomly initialised (seeded), seen from one latent space.
- :func:`synthetic_stylegan3`: gan-probe's rebuild of NVIDIA's StyleGAN3 (config T)
  with NVIDIA's initialisation (seeded) and its Kaiser filters, seen from one latent space.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gan_probe.models.architectures import DCGANGenerator
from gan_probe.models.loaded import LoadedGenerator, wrap_module


class LinearGenerator(nn.Module):
    """G(z) = A z (B, nz) -> (B, N): the closed-form reference, ln det M = 2 sum ln s_i(A)."""

    a: torch.Tensor

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a.clone())
        self.nz = a.shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


def log_spaced_eigenvalues(nz: int, cond: float, *, lam_max: float = 1.0) -> tuple[torch.Tensor, float]:
    """(lambda (nz,) float64 descending, log-spaced from lam_max to lam_max / cond; 1/2 sum ln lambda)."""
    lam = lam_max * torch.logspace(0, -math.log10(cond), nz, dtype=torch.float64)
    return lam, 0.5 * float(torch.log(lam).sum())


def log_spaced_spectrum(
    nz: int, cond: float, *, seed: int = 0, lam_max: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A (nz, nz) float64, lambda (nz,) descending, exact 1/2 ln det A^T A) with cond(A^T A) = ``cond``."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(nz, nz, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(nz, nz, generator=gen, dtype=torch.float64))
    lam, half = log_spaced_eigenvalues(nz, cond, lam_max=lam_max)
    a = (u * lam.sqrt()) @ v.T
    return a, lam, half


def fwht(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform along the last axis (a power of two): H x / sqrt(n), H = H^T,
    H^2 = n I. Butterflies of stack/reshape only, so forward- and reverse-mode AD and vmap go through it."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Walsh-Hadamard transform needs a power-of-two length, got {n}")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x / math.sqrt(n)


class HadamardLinearGenerator(nn.Module):
    """G(z) = diag(sqrt(lambda)) Q z with Q = P_2 H S_2 P_1 H S_1 orthogonal (H: :func:`fwht`): the spectrum of
    M = A^T A is exactly ``lam``, at O(nz log nz) per product and O(nz) memory (nz a power of two)."""

    scale: torch.Tensor
    signs: torch.Tensor
    perms: torch.Tensor

    def __init__(self, lam: torch.Tensor, *, seed: int) -> None:
        super().__init__()
        nz = lam.shape[0]
        if nz < 1 or nz & (nz - 1):
            raise ValueError(f"the Hadamard operator needs nz a power of two, got {nz}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("scale", lam.sqrt().clone())
        self.register_buffer("signs", torch.randint(0, 2, (2, nz), generator=gen).to(lam.dtype).mul_(2).sub_(1))
        self.register_buffer("perms", torch.stack([torch.randperm(nz, generator=gen) for _ in range(2)]))
        self.nz = nz

    def orthogonal(self, z: torch.Tensor) -> torch.Tensor:
        """Q z along the last axis."""
        x = fwht(z * self.signs[0])[..., self.perms[0]]
        return fwht(x * self.signs[1])[..., self.perms[1]]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.orthogonal(z) * self.scale


#: Synthetic operators of :func:`synthetic_linear`: dense (Haar U, V; an nz x nz matrix), hadamard
#: (:class:`HadamardLinearGenerator`, nz a power of two), auto (hadamard from nz = 2,048 when nz is a power of
#: two, dense below: the figures at nz <= 1,024 stay those of the dense operator).
OPERATORS: tuple[str, ...] = ("auto", "dense", "hadamard")
HADAMARD_FROM_NZ = 2048


def resolve_operator(nz: int, operator: str = "auto") -> str:
    """The synthetic operator ``auto`` stands for at ``nz`` (see :data:`OPERATORS`)."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown synthetic operator {operator!r}: use one of {', '.join(OPERATORS)}")
    if operator != "auto":
        return operator
    return "hadamard" if nz >= HADAMARD_FROM_NZ and not nz & (nz - 1) else "dense"


def dcgan_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """The PyTorch-examples DCGAN init (conv N(0, 0.02), BN weight N(1, 0.02), bias 0) plus random
    BatchNorm running statistics, as a trained model has (eval mode uses them)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.copy_(0.02 * torch.randn(m.weight.shape, generator=generator))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.02 * torch.randn(m.num_features, generator=generator))
                m.bias.zero_()
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
    return module


def synthetic_dcgan(nz: int, *, seed: int, device: torch.device, dtype: torch.dtype) -> LoadedGenerator:
    """PyTorch-examples 64x64x3 DCGAN (ngf = 64) with DCGAN init."""
    module = dcgan_init_(DCGANGenerator(nz, 64, 3, 64), torch.Generator().manual_seed(seed + 17))
    return wrap_module(
        module,
        arch="dcgan",
        config={"nz": nz, "ngf": 64, "nc": 3, "image_size": 64},
        nz=nz,
        source="synthetic",
        output_shape=(3, 64, 64),
        output_range=(-1.0, 1.0),
        provenance=f"synthetic: DCGAN init N(0, 0.02), random BatchNorm statistics, seed {seed}",
        device=device,
        dtype=dtype,
    )


def synthetic_linear(
    nz: int, cond: float, *, seed: int, device: torch.device, dtype: torch.dtype, operator: str = "auto"
) -> tuple[LoadedGenerator, float]:
    """(G(z) = A z with log-spaced eigenvalues of M and condition number ``cond``, exact 1/2 ln det M).

    ``operator``: dense, hadamard or auto (:func:`resolve_operator`)."""
    kind = resolve_operator(nz, operator)
    module: nn.Module
    if kind == "hadamard":
        lam, half = log_spaced_eigenvalues(nz, cond)
        module = HadamardLinearGenerator(lam, seed=seed)
        how = "diag(s) P H S P H S (Walsh-Hadamard, random signs and permutations)"
    else:
        a, _, half = log_spaced_spectrum(nz, cond, seed=seed)
        module = LinearGenerator(a)
        how = "U diag(s) V^T"
    gen = wrap_module(
        module,
        arch="linear",
        config={"nz": nz, "cond": cond, "operator": kind},
        nz=nz,
        source="synthetic",
        output_shape=(nz,),
        output_range=None,
        provenance=f"synthetic: {how}, eigenvalues of M log-spaced over cond {cond:g}, seed {seed}",
        device=device,
        dtype=dtype,
    )
    return gen, half


def rosinality_channels(size: int, channel_multiplier: int) -> dict[int, int]:
    """The channel widths of rosinality's ``Generator`` up to ``size`` (its fixed table)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {res: width * (channel_multiplier if res >= 64 else 1) for res, width in table.items() if res <= size}


def synthetic_stylegan2(
    size: int,
    *,
    channel_multiplier: int = 2,
    style_dim: int = 512,
    n_mlp: int = 8,
    space: str = "w",
    channels: int | None = None,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedGenerator:
    """A randomly initialised (seeded) StyleGAN2 in rosinality's layout, seen from ``space``.

    ``channels``: one width for every resolution instead of rosinality's table (a narrow model whose
    exact w+ spectrum is affordable on a CPU)."""
    from gan_probe.models.latent_spaces import stylegan2_latent
    from gan_probe.models.stylegan2 import StyleGAN2Generator

    torch.manual_seed(seed + 29)
    config = {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channels": {res: channels for res in rosinality_channels(size, channel_multiplier)}
        if channels
        else rosinality_channels(size, channel_multiplier),
        "blur_kernel": [1, 3, 3, 1],
        "lr_mlp": 0.01,
    }
    module = StyleGAN2Generator(config)
    latent, prior, record = stylegan2_latent(
        module, space=space, truncation=None, noise=None, latent_avg=None, device=device, dtype=dtype
    )
    loaded = wrap_module(
        latent,
        arch="stylegan2",
        config={**config, "channel_multiplier": channel_multiplier, **record},
        nz=latent.nz,
        prior=prior,
        source="synthetic",
        output_shape=(3, size, size),
        output_range=(-1.0, 1.0),
        provenance=f"synthetic: rosinality StyleGAN2 layout, {size}px, channel_multiplier {channel_multiplier}, "
        + (f"{channels} channels at every resolution, " if channels else "")
        + f"random init, seed {seed}",
        device=device,
        dtype=dtype,
    )
    loaded.ignores_norm = space == "z"
    return loaded


def stylegan3_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """NVIDIA's initialisation of ``training.networks_stylegan3.Generator`` on gan-probe's rebuild
    (:class:`gan_probe.models.nvidia.stylegan3.StyleGAN3Generator`), config T (separable filters).

    Dense layers: weight N(0, 1) / lr_multiplier, bias 0, but the layers' style affines start at bias 1
    and the input's affine at weight 0, bias (1, 0, 0, 0) (the identity transform); the Fourier input's
    frequencies f = b r / (|r| e^{|r|^2 / 4}) with r ~ N(0, I_2) and b its bandwidth, phases U(-1/2, 1/2),
    mixing weight N(0, 1); convolution weights N(0, 1), biases 0, ``magnitude_ema`` 1, ``w_avg`` 0; the
    filters are NVIDIA's designs, ``scipy.signal.firwin(taps, cutoff, width = 2 half_width, fs)`` at each
    layer's band limits (stored float32, as NVIDIA stores them)."""
    import scipy.signal

    from gan_probe.models.nvidia.stylegan3 import FullyConnected, StyleGAN3Generator, SynthesisLayer

    if not isinstance(module, StyleGAN3Generator):
        raise TypeError(f"stylegan3_init_ initialises a StyleGAN3Generator, got {type(module).__name__}")

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    def lowpass(taps: int, cutoff: float, half_width: float, fs: float) -> torch.Tensor:
        taps_ = scipy.signal.firwin(numtaps=taps, cutoff=cutoff, width=2 * half_width, fs=fs)
        return torch.as_tensor(taps_, dtype=torch.float32)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FullyConnected):
                lr = m.bias_gain
                m.weight.copy_(normal(*m.weight.shape) / lr)
                m.bias.zero_()
        inp = module.synthesis.input
        inp.affine.weight.zero_()
        inp.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        inp.weight.copy_(normal(*inp.weight.shape))
        freqs = normal(inp.channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        inp.freqs.copy_(freqs / (radii * radii.square().exp().pow(0.25)) * inp.bandwidth)
        inp.phases.copy_(torch.rand(inp.channels, generator=generator) - 0.5)
        for m in module.modules():
            if isinstance(m, SynthesisLayer):
                g = m.geometry
                if g.radial_down:
                    raise ValueError("stylegan3_init_ designs the separable filters of config T, not config R's")
                m.affine.bias.fill_(1.0)
                m.weight.copy_(normal(*m.weight.shape))
                m.bias.zero_()
                m.magnitude_ema.fill_(1.0)
                if m.up_filter is not None:
                    m.up_filter.copy_(lowpass(g.up_taps, g.in_cutoff, g.in_half_width, g.tmp_sampling_rate))
                if m.down_filter is not None:
                    m.down_filter.copy_(lowpass(g.down_taps, g.out_cutoff, g.out_half_width, g.tmp_sampling_rate))
    return module


def synthetic_stylegan3(
    size: int,
    *,
    channel_base: int = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    style_dim: int = 512,
    space: str = "w",
    channels: int | None = None,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedGenerator:
    """A StyleGAN3-T with NVIDIA's initialisation (seeded, :func:`stylegan3_init_`), seen from ``space``.

    NVIDIA's config T hyperparameters otherwise (``StyleGAN3Config``'s defaults: 2 mapping layers, 2 critical
    layers, margin 10, filter size 6, lrelu upsampling 2, conv_clamp 256, output scale 0.25), z_dim = w_dim =
    ``style_dim``, 3 channels. ``channels``: one width for every layer but ToRGB (channel_max = channels,
    channel_base = channels * size), a narrow, CPU-sized model."""
    from gan_probe.models.latent_spaces import stylegan2_latent
    from gan_probe.models.nvidia.stylegan3 import StyleGAN3Config, StyleGAN3Generator

    if channels:
        channel_base, channel_max = channels * size, channels
    cfg = StyleGAN3Config(
        z_dim=style_dim,
        c_dim=0,
        w_dim=style_dim,
        img_resolution=size,
        img_channels=3,
        channel_base=channel_base,
        channel_max=channel_max,
        num_layers=num_layers,
    )
    module = StyleGAN3Generator(cfg)
    stylegan3_init_(module, torch.Generator().manual_seed(seed + 31))
    latent, prior, record = stylegan2_latent(
        module, space=space, truncation=None, noise=None, latent_avg=None, device=device, dtype=dtype
    )
    config = {
        "architecture": module.architecture,
        "resolution": size,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "num_layers": num_layers,
        "z_dim": style_dim,
        "w_dim": style_dim,
        "layers": list(module.synthesis.layer_names),
        **record,
    }
    loaded = wrap_module(
        latent,
        arch=module.architecture,
        config=config,
        nz=latent.nz,
        prior=prior,
        source="synthetic",
        output_shape=(3, size, size),
        output_range=(-1.0, 1.0),
        provenance=f"synthetic: gan-probe's StyleGAN3-T (NVIDIA's layout and init), {size}px, channel_base "
        f"{channel_base}, channel_max {channel_max}, {num_layers} layers, random init, seed {seed}",
        device=device,
        dtype=dtype,
    )
    loaded.ignores_norm = space == "z"
    return loaded


__all__ = [
    "HADAMARD_FROM_NZ",
    "OPERATORS",
    "HadamardLinearGenerator",
    "LinearGenerator",
    "dcgan_init_",
    "fwht",
    "log_spaced_eigenvalues",
    "log_spaced_spectrum",
    "resolve_operator",
    "rosinality_channels",
    "synthetic_dcgan",
    "synthetic_linear",
    "stylegan3_init_",
    "synthetic_stylegan2",
    "synthetic_stylegan3",
]
