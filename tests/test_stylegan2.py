"""The built-in StyleGAN2 generator: rosinality's layout, its outputs, exact Jacobians, noise and truncation.

Two fixtures under tests/data come from rosinality/stylegan2-pytorch's own ``Generator`` (model.py at
bef283a, run on CPU with its native upfirdn2d / leaky-ReLU fallbacks):
``rosinality_stylegan2_state_shapes.json`` (key -> shape at sizes 32 and 64, channel_multiplier 1 and 2,
style_dim 512, n_mlp 8, plus the values of its FIR kernel buffers) and ``rosinality_stylegan2_tiny.safetensors``
(a size-16 model narrowed to channels {4: 8, 8: 6, 16: 5}, with float64 latents and the images it produced).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.func import jvp, vmap

from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.models.stylegan2 import (
    StyleGAN2Generator,
    StyleGAN2Latent,
    fir_kernel,
    infer_stylegan2_config,
    load_stylegan2,
    looks_like_stylegan2,
    mean_w,
    sample_w,
    stylegan2_state_shapes,
    upfirdn2d,
)

DATA = Path(__file__).parent / "data"
TINY = {"size": 16, "style_dim": 8, "n_mlp": 2, "channels": {4: 8, 8: 6, 16: 4}}


def _rosinality_widths(size: int, channel_multiplier: int) -> dict[int, int]:
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier}
    return {r: c for r, c in table.items() if r <= size}


def _tiny(config: dict = TINY, seed: int = 0, fused: bool = True) -> StyleGAN2Generator:
    """A float64 tiny generator with nonzero biases and noise strengths (a fresh one has zeros there)."""
    torch.manual_seed(seed)
    g = StyleGAN2Generator(config, fused=fused).double().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if "bias" in name or name.endswith("noise.weight"):
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return g


def _jac_forward(f, x: torch.Tensor) -> torch.Tensor:
    """J (out, nz) of f at one latent x (1, nz) by jvp over the basis under vmap."""
    basis = torch.eye(x.shape[1], dtype=x.dtype).unsqueeze(1)  # (nz, 1, nz)
    cols = vmap(lambda v: jvp(f, (x,), (v,))[1])(basis)  # (nz, 1, ...)
    return cols.reshape(x.shape[1], -1).T


def _jac_reverse(f, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(f, x).reshape(-1, x.shape[1])


# --------------------------------------------------------------------------------------------------- layout


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((DATA / "rosinality_stylegan2_state_shapes.json").read_text())


@pytest.mark.parametrize("index", range(4))
def test_rosinality_layout_keys_shapes_and_inference(layouts, index):
    spec = layouts["configs"][index]
    expected = [(k, tuple(s)) for k, s in spec["state"]]
    # a state dict in that layout; uninitialised storage except the FIR kernels, whose values are read
    state = {k: torch.empty(s) for k, s in expected}
    for k in state:
        if k.endswith("blur.kernel"):
            state[k] = torch.tensor(layouts["blur_kernel_buffer"])
        elif k.endswith("upsample.kernel"):
            state[k] = torch.tensor(layouts["upsample_kernel_buffer"])
    assert looks_like_stylegan2(state)
    config = infer_stylegan2_config(state)
    assert config == {
        "size": spec["size"],
        "style_dim": 512,
        "n_mlp": 8,
        "channels": _rosinality_widths(spec["size"], spec["channel_multiplier"]),
        "blur_kernel": [1, 3, 3, 1],
        "lr_mlp": 0.01,
    }
    assert list(stylegan2_state_shapes(config).items()) == expected  # same keys, shapes and order
    g = load_stylegan2(state)  # strict load, no flags
    assert g.n_latent == 2 * int(np.log2(spec["size"])) - 2
    assert g.convs[0].conv.blur.kernel.data_ptr() == state["convs.0.conv.blur.kernel"].data_ptr()


def test_kernel_buffers_match_rosinality(layouts):
    g = StyleGAN2Generator(TINY)
    assert torch.equal(g.convs[0].conv.blur.kernel, torch.tensor(layouts["blur_kernel_buffer"]))
    assert torch.equal(g.to_rgbs[0].upsample.kernel, torch.tensor(layouts["upsample_kernel_buffer"]))


def test_narrow_widths_load_strictly_into_a_fresh_module():
    state = _tiny().state_dict()
    config = infer_stylegan2_config(state)
    assert config["channels"] == TINY["channels"] and config["n_mlp"] == 2 and config["style_dim"] == 8
    g = StyleGAN2Generator(config).double()
    g.load_state_dict(state, strict=True)
    assert all(torch.equal(state[k], v) for k, v in g.state_dict().items())


def test_config_from_json_keys_and_mlp_free_models():
    g = StyleGAN2Generator(json.loads(json.dumps({**TINY, "n_mlp": 0})))
    assert g.config["channels"] == TINY["channels"] and len(g.style) == 1
    assert infer_stylegan2_config(g.state_dict())["n_mlp"] == 0


def test_misfit_state_dicts_raise_clear_errors():
    state = _tiny().state_dict()
    with pytest.raises(CheckpointError, match="not a StyleGAN2.*'input.input'"):
        infer_stylegan2_config({k: v for k, v in state.items() if k != "input.input"})
    with pytest.raises(CheckpointError, match="missing noises.noise_4"):
        infer_stylegan2_config({k: v for k, v in state.items() if k != "noises.noise_4"})
    with pytest.raises(CheckpointError, match="unexpected convs.9.noise.weight"):
        infer_stylegan2_config({**state, "convs.9.noise.weight": torch.zeros(1)})
    bad = dict(state)
    bad["convs.1.conv.modulation.weight"] = torch.zeros(5, 8)
    with pytest.raises(
        CheckpointError, match=r"mis-shaped convs.1.conv.modulation.weight \(5, 8\) \(expected \(6, 8\)\)"
    ):
        infer_stylegan2_config(bad)
    with pytest.raises(CheckpointError, match="not a tensor"):
        infer_stylegan2_config({**state, "conv1.conv.modulation.weight": [[0.0]]})
    assert not looks_like_stylegan2({"main.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="channel width for resolution"):
        StyleGAN2Generator({**TINY, "channels": {4: 8, 8: 6}})


# --------------------------------------------------------------------------------------------------- values


def test_outputs_equal_rosinality_generator():
    data = load_file(DATA / "rosinality_stylegan2_tiny.safetensors")
    state = {k[2:]: v for k, v in data.items() if k.startswith("g.")}
    for fused in (True, False):
        g = load_stylegan2(state, dtype=torch.float64, fused=fused)
        z, w_avg = data["z"], data["w_avg"]
        with torch.no_grad():
            img = StyleGAN2Latent(g, "z")(z)
            img_psi = StyleGAN2Latent(g, "z", truncation=0.6, w_avg=w_avg)(z)
            img_plus = StyleGAN2Latent(g, "w+")(data["wplus"].reshape(3, -1))
        tol = 1e-14 if fused else 1e-12  # the grouped path is rosinality's arithmetic, op for op
        assert (img - data["image_z"]).abs().max() <= tol
        assert (img_psi - data["image_z_psi"]).abs().max() <= tol
        assert (img_plus - data["image_wplus"]).abs().max() <= tol


def _upfirdn2d_by_definition(x, k, up, down, px0, px1, py0, py1):
    """Zero insertion, pad (negative crops), true convolution with k, decimation: written with loops."""
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    u = np.pad(u, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    u = u[:, :, max(-py0, 0) : u.shape[2] - max(-py1, 0), max(-px0, 0) : u.shape[3] - max(-px1, 0)]
    n = k.shape[0]
    out = np.zeros((b, c, u.shape[2] - n + 1, u.shape[3] - n + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            # y[i, j] = sum_{a,b} u[i + a, j + b] k[n - 1 - a, n - 1 - b]
            out[:, :, i, j] = (u[:, :, i : i + n, j : j + n] * k[::-1, ::-1]).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad", [(2, 1, (2, 1, 2, 1)), (1, 1, (1, 1, 1, 1)), (1, 2, (2, 1, 1, 2)), (2, 2, (-1, 2, 0, -1))]
)
def test_upfirdn2d_matches_its_definition(up, down, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    k = torch.rand(4, 4, generator=gen, dtype=torch.float64)  # not symmetric: the flip matters
    got = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = _upfirdn2d_by_definition(x.numpy(), k.numpy(), up, down, *pad)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-13)


def test_fir_kernel_and_upsample_preserve_constants():
    assert torch.allclose(fir_kernel([1, 3, 3, 1]).sum(), torch.tensor(1.0))
    g = StyleGAN2Generator(TINY).double()
    ones = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    up = g.to_rgbs[0].upsample(ones)
    assert up.shape == (1, 2, 8, 8)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 4, 4, dtype=torch.float64))


def test_fused_and_input_scaled_modulation_agree():
    g = _tiny()
    w = torch.randn(2, g.n_latent, 8, dtype=torch.float64)
    with torch.no_grad():
        a = g.synthesis(w)
        g.fused = False
        b = g.synthesis(w)
    assert a.shape == (2, 3, 16, 16)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------- Jacobians


@pytest.mark.parametrize("space", ["w", "z", "w+"])
@pytest.mark.parametrize("fused", [True, False])
def test_forward_jacobian_equals_reverse_mode(space, fused):
    g = _tiny({**TINY, "size": 8, "channels": {4: 6, 8: 5}}, fused=fused)
    f = StyleGAN2Latent(g, space, truncation=0.7 if space == "z" else 1.0)
    x = torch.randn(1, f.nz, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jf, jr = _jac_forward(f, x), _jac_reverse(f, x)
    assert jf.shape == (3 * 8 * 8, f.nz)
    assert (jf - jr).abs().max() <= 1e-10 * jr.abs().max()


def test_forward_jacobian_under_no_grad_keeps_no_graph():
    """jvp is forward-mode AD, which no_grad does not switch off; without it every chunk of J would keep
    the reverse-mode graph of the generator's parameters alive (measured: OOM at size 64 in w+)."""
    g = _tiny()
    f = StyleGAN2Latent(g, "w+")
    x = sample_w(g, 1, seed=2, plus=True)
    with torch.no_grad():
        j = _jac_forward(f, x)
    assert not j.requires_grad
    assert torch.allclose(j, _jac_forward(f, x), rtol=0, atol=1e-14)


def test_log_det_from_singular_values_equals_slogdet():
    g = _tiny()
    f = StyleGAN2Latent(g, "w")
    x = sample_w(g, 1, seed=4)
    j = _jac_forward(f, x)
    sign, logdet = torch.linalg.slogdet(j.T @ j)
    assert sign > 0
    assert torch.allclose(2 * torch.log(torch.linalg.svdvals(j)).sum(), logdet, rtol=1e-10, atol=1e-10)


def test_z_space_is_scale_invariant_so_the_jacobian_kills_z():
    """PixelNorm makes G_z(c z) = G_z(z) for c > 0, so J(z) z = 0 up to PixelNorm's eps: differentiating
    z (mean z^2 + eps)^(-1/2) along z leaves eps / (mean z^2 + eps) of it, ~1e-8 here."""
    g = _tiny()
    f = StyleGAN2Latent(g, "z", truncation=0.8)
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps_ratio = 1e-8 / z.square().mean()
    with torch.no_grad():
        img = f(z)
        assert (f(2.5 * z) - img).abs().max() <= 10 * eps_ratio * img.abs().max()
        j = _jac_forward(f, z)
    s = torch.linalg.svdvals(j)
    assert (j @ z[0]).norm() <= 10 * eps_ratio * s[0] * z.norm()
    assert s[-1] <= 10 * eps_ratio * s[0] and s[-2] >= 1e-4 * s[0]  # only the radial direction is lost


def test_float32_jacobian_runs_and_is_close():
    g = _tiny()
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    j64 = _jac_forward(StyleGAN2Latent(g, "w"), x)
    j32 = _jac_forward(StyleGAN2Latent(g.float(), "w"), x.float())
    assert j32.dtype == torch.float32
    assert (j32.double() - j64).abs().max() <= 1e-4 * j64.abs().max()


# --------------------------------------------------------------------------------------------------- noise, truncation


def test_noise_modes():
    g = _tiny()
    w = torch.randn(2, g.n_latent, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        stored = g.synthesis(w, "stored")
        assert torch.equal(stored, g.synthesis(w, "stored"))
        assert torch.equal(stored, g.synthesis(w, noise=[getattr(g.noises, f"noise_{i}") for i in range(5)]))
        zero = g.synthesis(w, "zero")
        assert (zero - stored).abs().max() > 1e-3
        seeded = g.synthesis(w, 11)
        g._seeded.clear()
        assert torch.equal(seeded, g.synthesis(w, 11))
        assert (seeded - g.synthesis(w, 12)).abs().max() > 1e-3
    maps = g.noise_maps(11)
    gen = torch.Generator().manual_seed(11)
    for m, buf in zip(maps, g.stored_noise()):
        assert m.shape == buf.shape and m.dtype == torch.float64
        assert torch.equal(m, torch.randn(tuple(buf.shape), generator=gen).double())
    for bad in ("random", 1.5, True):
        with pytest.raises(GanProbeError, match="noise mode"):
            g.noise_maps(bad)


def test_seeded_noise_latent_is_deterministic_under_vmap():
    g = _tiny()
    f = StyleGAN2Latent(g, "w", noise_mode=3)
    g._seeded.clear()  # the wrapper holds its own maps: nothing is drawn inside vmap
    x = sample_w(g, 2, seed=1)
    with torch.no_grad():
        batched = vmap(lambda v: f(v.unsqueeze(0))[0])(x)
        assert torch.equal(f(x), f(x))
        assert torch.allclose(batched, f(x), rtol=0, atol=1e-13)
        assert torch.allclose(f(x), g.synthesis(x.unsqueeze(1).expand(-1, g.n_latent, -1), 3), rtol=0, atol=0)


def test_truncation_zero_maps_every_z_to_the_image_of_w_avg():
    g = _tiny()
    w_avg = mean_w(g, num=500, seed=2)
    f = StyleGAN2Latent(g, "z", truncation=0.0, w_avg=w_avg)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        target = StyleGAN2Latent(g, "w")(w_avg.unsqueeze(0))
        assert torch.allclose(f(z), target.expand(3, -1, -1, -1), rtol=0, atol=1e-13)


def test_mean_w_and_sample_w():
    g = _tiny()
    w_avg = mean_w(g, num=300, seed=1, batch=64)
    z = torch.randn(300, 8, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        assert torch.allclose(w_avg, g.mapping(z).mean(0), rtol=0, atol=1e-13)
        w = sample_w(g, 4, seed=9)
        assert torch.equal(w, sample_w(g, 4, seed=9)) and w.shape == (4, 8)
        assert torch.allclose(w, g.mapping(torch.randn(4, 8, generator=torch.Generator().manual_seed(9)).double()))
        half = sample_w(g, 4, seed=9, truncation=0.5, w_avg=w_avg)
        assert torch.allclose(half, w_avg + 0.5 * (w - w_avg))
        plus = sample_w(g, 4, seed=9, truncation=0.5, w_avg=w_avg, plus=True)
        assert plus.shape == (4, g.n_latent * 8)
        assert torch.equal(plus.reshape(4, g.n_latent, 8), half.unsqueeze(1).expand(-1, g.n_latent, -1))
        # the same image from w+ and w
        assert torch.allclose(StyleGAN2Latent(g, "w+")(plus), StyleGAN2Latent(g, "w")(half), rtol=0, atol=1e-13)


def test_latent_wrapper_shapes_and_errors():
    g = _tiny()
    assert StyleGAN2Latent(g, "z").nz == 8 and StyleGAN2Latent(g, "w").nz == 8
    assert StyleGAN2Latent(g, "w+").nz == g.n_latent * 8 == 48
    with pytest.raises(GanProbeError, match="latent space"):
        StyleGAN2Latent(g, "s")
    with pytest.raises(GanProbeError, match=r"shape \(B, 48\)"):
        StyleGAN2Latent(g, "w+")(torch.zeros(1, 8, dtype=torch.float64))
    with pytest.raises(GanProbeError, match="w_avg must have 8 entries"):
        StyleGAN2Latent(g, "z", truncation=0.5, w_avg=torch.zeros(7))
    f = StyleGAN2Latent(g, "z", truncation=0.5)  # w_avg defaults to mean_w(g)
    assert torch.allclose(f.w_avg, mean_w(g))
