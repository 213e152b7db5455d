"""NVIDIA's StyleGAN2 generators rebuilt in plain torch, compared with numbers made by NVIDIA's own classes.

The fixtures ``tests/data/nvidia_stylegan2_*.safetensors`` each hold one tiny generator (its flat state under
NVIDIA's names, float32, with the class name and init kwargs in the metadata) and what NVIDIA's code computed
for it. They were made on CPU with NVlabs/stylegan2-ada-pytorch at d72cc7d041b42ec8e806021a205ed9349f87c6a4
(``training.networks.Generator``) and NVlabs/stylegan3 at c233a919a6faee6e36a316ddd4eddababad1adf9
(``training.networks_stylegan2.Generator``), whose custom ops fall back to their plain-torch reference code on
CPU. Configurations (all ``img_channels`` 3, ``channel_base`` 256, ``num_fp16_res`` 2 unless said):

- ``ada_skip``: z_dim 24, w_dim 20, 32 px, ``channel_max`` 16 (widths 16, 16, 16, 8), mapping ``num_layers`` 2,
  ``conv_clamp`` 256, architecture 'skip' (the default);
- ``ada_orig``: 16 px, z/w 16, mapping 3 layers of 24 features, ``lr_multiplier`` 0.05, 'orig', ``conv_clamp``
  0.9 (it clips);
- ``ada_resnet``: 16 px, 'resnet', ``conv_clamp`` 1.2 (it clips, scaled by sqrt(1/2) in conv1),
  ``resample_filter`` [1, 2, 3, 4, 4, 3, 2, 1] (8 taps: NVIDIA stores them as separable 1-D buffers);
- ``ada_conditional``: 16 px, ``c_dim`` 3, ``embed_features`` 8, ``conv_clamp`` 256;
- ``stylegan3_repo``: the stylegan3 repository's class, 16 px, its defaults (``conv_clamp`` 256,
  ``num_fp16_res`` 4), synthesis kwargs at the top level.

Every parameter and buffer was moved off its init (biases and noise strengths nonzero, ``w_avg`` random, the
filters perturbed asymmetrically), so that each one counts. For two latents z (and one-hot c) the files hold
ws = mapping(z, c), NVIDIA's truncation at psi 0.7 (with and without ``truncation_cutoff`` 2), images for
noise_mode 'const' (psi 1), 'none' (psi 0.7) and a w+ input, in float64: NVIDIA's code run with ``G.double()``
and ``force_fp32=True`` in a copy whose hard-coded float32 casts (z, c, ws, the block dtype, the ToRGB output)
and float32 filter assertions read float64, and nothing else changed (its fused and non-fused modulated
convolutions agreed to 1e-13, and the float64 images agree with the unmodified float32 code to 8e-7).
``expected.img_const_float32`` is the unmodified code in float32. ``ada_skip`` also holds an image for
noise_mode 'random' with the maps it drew (``inputs.noise.*``) and one after its filter buffers were replaced
by the asymmetric filters of :func:`_asymmetric_filters`. The script that made them imports NVIDIA's code
(licensed non-commercially) and is not part of the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.func import jvp, vmap

from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.models.nvidia.stylegan2 import (
    SUPPORTED_CLASSES,
    NvidiaStyleGAN2Generator,
    build_stylegan2,
    modulated_conv2d,
    parse_stylegan2_kwargs,
)

DATA = Path(__file__).parent / "data"
LABELS = ("ada_skip", "ada_orig", "ada_resnet", "ada_conditional", "stylegan3_repo")


def _load(label: str) -> tuple[SimpleNamespace, dict[str, torch.Tensor]]:
    """(record with class_name, init_kwargs, state) and the fixture's inputs/expected tensors."""
    path = DATA / f"nvidia_stylegan2_{label}.safetensors"
    tensors = load_file(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = {k: v for k, v in tensors.items() if not k.startswith(("inputs.", "expected."))}
    data = {k: v for k, v in tensors.items() if k.startswith(("inputs.", "expected."))}
    record = SimpleNamespace(class_name=meta["class_name"], init_kwargs=json.loads(meta["init_kwargs"]), state=state)
    return record, data


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=LABELS)
def fixture(request) -> tuple[str, SimpleNamespace, dict[str, torch.Tensor]]:
    record, data = _load(request.param)
    return request.param, record, data


# --------------------------------------------------------------------------------------------------- against NVIDIA


@torch.no_grad()
def test_float64_matches_nvidia(fixture):
    label, record, data = fixture
    g = build_stylegan2(record, torch.float64)
    z, c = data["inputs.z"], data.get("inputs.c")
    ws = g.mapping(z, c)
    assert ws.dtype == torch.float64 and ws.shape == data["expected.ws"].shape
    assert _rel(ws, data["expected.ws"]) < 1e-10
    # truncation is the caller's: w_avg + psi (w - w_avg), the cutoff keeping the later layers untouched
    w_avg = g.w_avg
    truncated = w_avg + 0.7 * (ws - w_avg)
    assert _rel(truncated, data["expected.ws_psi0.7"]) < 1e-10
    cut = torch.cat([truncated[:, :2], ws[:, 2:]], dim=1)
    assert _rel(cut, data["expected.ws_psi0.7_cutoff2"]) < 1e-10
    assert _rel(g.synthesis(ws, "const"), data["expected.img_const"]) < 1e-10
    assert _rel(g(z, c, "const"), data["expected.img_const"]) < 1e-10
    assert _rel(g.synthesis(truncated, "none"), data["expected.img_none_psi0.7"]) < 1e-10
    assert _rel(g.synthesis(data["inputs.w_plus"], "const"), data["expected.img_w_plus_const"]) < 1e-10


@torch.no_grad()
def test_float32_matches_nvidia_float32(fixture):
    label, record, data = fixture
    g = build_stylegan2(record)  # float32, as NVIDIA computes off its fp16 layers
    c = data.get("inputs.c")
    img = g(data["inputs.z"].float(), None if c is None else c.float(), "const")
    assert img.dtype == torch.float32
    # two float32 computations of the same function: a few units of float32 rounding apart
    assert _rel(img, data["expected.img_const_float32"]) < 1e-5
    assert _rel(img.double(), data["expected.img_const"]) < 1e-5


@torch.no_grad()
def test_grouped_and_shared_weight_modulated_convs_agree(fixture):
    label, record, data = fixture
    g = build_stylegan2(record, torch.float64)
    ws = data["inputs.w_plus"]
    assert not g.fused_modconv
    shared = g.synthesis(ws, "const")
    g.fused_modconv = True
    assert _rel(g.synthesis(ws, "const"), shared) < 1e-12


def test_modulated_conv2d_forms_agree_with_up_sampling():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    f = torch.outer(torch.tensor([1.0, 2.0, 4.0, 1.0]), torch.tensor([1.0, 3.0, 2.0, 2.0])).double() / 64
    for up, demodulate in ((1, True), (1, False), (2, True), (2, False)):
        kw = {"demodulate": demodulate, "up": up, "resample_filter": f}
        shared = modulated_conv2d(x, weight, styles, fused=False, **kw)
        grouped = modulated_conv2d(x, weight, styles, fused=True, **kw)
        assert shared.shape == (3, 4, 6 * up, 6 * up)
        assert _rel(grouped, shared) < 1e-13
    # sample b alone gives sample b of the batch (no mixing across the batch in either form)
    one = modulated_conv2d(x[1:2], weight, styles[1:2], demodulate=True, up=2, resample_filter=f, fused=True)
    assert _rel(one, modulated_conv2d(x, weight, styles, demodulate=True, up=2, resample_filter=f)[1:2]) < 1e-13


@torch.no_grad()
def test_noise_maps_replace_the_stored_ones():
    record, data = _load("ada_skip")
    g = build_stylegan2(record, torch.float64)
    ws = data["expected.ws"][:1]
    maps = [data[f"inputs.noise.{i}"] for i in range(len(g.noise_shapes()))]
    assert [tuple(m.shape) for m in maps] == g.noise_shapes()
    # NVIDIA's noise_mode 'random' with the maps it drew: noise_strength times each map. There NVIDIA's product
    # randn (float32) * noise_strength (a 0-dim float64 parameter) stays float32 by torch's promotion rule for
    # 0-dim tensors, so even its float64 run rounds the noise to float32 (measured 2.5e-8 here)
    assert _rel(g.synthesis(ws, noise=maps), data["expected.img_random"]) < 1e-6
    keys = [f"synthesis.b{r}.conv{i}.noise_const" for r in (4, 8, 16, 32) for i in (0, 1)]
    stored = [record.state[k].reshape(1, 1, *record.state[k].shape) for k in keys if k in record.state]
    assert len(stored) == 7
    assert _rel(g.synthesis(ws, noise=stored), g.synthesis(ws, "const")) < 1e-15
    zeros = [torch.zeros(s, dtype=torch.float64) for s in g.noise_shapes()]
    assert _rel(g.synthesis(ws, noise=zeros), g.synthesis(ws, "none")) < 1e-15
    assert _rel(g.synthesis(ws, "none"), g.synthesis(ws, "const")) > 1e-3
    with pytest.raises(GanProbeError, match="noise_mode"):
        g.synthesis(ws, "random")
    with pytest.raises(GanProbeError, match="7 noise maps"):
        g.synthesis(ws, noise=maps[:-1])
    with pytest.raises(GanProbeError, match=r"noise map 1 must have shape \(1 or B, 1, 8, 8\)"):
        g.synthesis(ws, noise=[maps[0], maps[0], *maps[2:]])


def _asymmetric_filters(key: str) -> torch.Tensor:
    """The filters the ``ada_skip`` fixture's modified image was made with: one for the up-sampling convolutions
    (conv0), another for every other filter buffer (the image up-sampling of the skip architecture)."""
    if key.endswith("conv0.resample_filter"):
        f = torch.outer(torch.tensor([2.0, 1.0, 3.0, 1.0]), torch.tensor([1.0, 1.0, 3.0, 4.0]))
    else:
        f = torch.outer(torch.tensor([1.0, 2.0, 4.0, 1.0]), torch.tensor([1.0, 3.0, 2.0, 2.0]))
    return f / f.sum()


@torch.no_grad()
def test_stored_filter_buffers_win_over_the_init_kwargs():
    """The filters are read from the buffers, not rebuilt from ``resample_filter``: NVIDIA's code filters with
    its buffers, so a state whose buffers differ from what the kwargs would build gives NVIDIA's image only when
    the buffers are used."""
    record, data = _load("ada_skip")
    assert "resample_filter" not in record.init_kwargs["synthesis_kwargs"]  # the kwargs say [1, 3, 3, 1]
    modified = {k: _asymmetric_filters(k) if k.endswith("resample_filter") else v for k, v in record.state.items()}
    g = build_stylegan2(SimpleNamespace(**{**vars(record), "state": modified}), torch.float64)
    ws = data["expected.ws"][:1]
    img = g.synthesis(ws, "const")
    assert _rel(img, data["expected.img_modified_filters"]) < 1e-10
    assert _rel(img, data["expected.img_const"][:1]) > 0.05
    # the fixture's own buffers are perturbed off [1, 3, 3, 1]; filters built from the kwargs miss NVIDIA's image
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    rebuilt = {k: torch.outer(taps, taps) / 64 if k.endswith("resample_filter") else v for k, v in record.state.items()}
    g_kwargs = build_stylegan2(SimpleNamespace(**{**vars(record), "state": rebuilt}), torch.float64)
    assert _rel(g_kwargs.synthesis(ws, "const"), data["expected.img_const"][:1]) > 1e-3


def test_separable_filters_are_stored_one_dimensional():
    record, _ = _load("ada_resnet")  # its 8-tap filter: NVIDIA stores 1-D taps, applied along both axes
    shapes = {k: tuple(v.shape) for k, v in record.state.items() if k.endswith("resample_filter")}
    assert shapes["synthesis.b8.conv0.resample_filter"] == (8,)
    assert shapes["synthesis.b8.skip.resample_filter"] == (8,)
    assert shapes["synthesis.b8.conv1.resample_filter"] == (4, 4)  # conv1 keeps the default (never used)


@pytest.mark.parametrize("label", ["ada_orig", "ada_resnet"])
@torch.no_grad()
def test_conv_clamp_is_applied(label):
    record, data = _load(label)
    kwargs = json.loads(json.dumps(record.init_kwargs))
    kwargs["synthesis_kwargs"]["conv_clamp"] = None
    g = build_stylegan2(SimpleNamespace(**{**vars(record), "init_kwargs": kwargs}), torch.float64)
    # without the clamp the image is far from NVIDIA's: these fixtures clip
    assert _rel(g.synthesis(data["expected.ws"], "const"), data["expected.img_const"]) > 0.1


@torch.no_grad()
def test_conditional_model_needs_and_uses_c():
    record, data = _load("ada_conditional")
    g = build_stylegan2(record, torch.float64)
    z, c = data["inputs.z"], data["inputs.c"]
    assert g.c_dim == 3 and "mapping.embed.weight" in record.state
    with pytest.raises(GanProbeError, match="conditional"):
        g.mapping(z)
    with pytest.raises(GanProbeError, match="c must have shape"):
        g.mapping(z, c[:, :2])
    other = torch.roll(c, 1, dims=1)
    assert _rel(g.mapping(z, other), g.mapping(z, c)) > 1e-3


def test_state_round_trips_under_nvidias_names(fixture):
    label, record, data = fixture
    g = build_stylegan2(record)
    state = g.state_dict()
    assert set(state) == set(record.state)
    for key, value in record.state.items():
        assert torch.equal(state[key], value), key
    assert g.w_avg is g.mapping.w_avg and torch.equal(g.w_avg, record.state["mapping.w_avg"])


def test_interface_attributes(fixture):
    label, record, data = fixture
    g = build_stylegan2(record)
    kw = record.init_kwargs
    assert isinstance(g, NvidiaStyleGAN2Generator) and not g.training
    assert (g.z_dim, g.c_dim, g.w_dim) == (kw["z_dim"], kw["c_dim"], kw["w_dim"])
    assert (g.img_resolution, g.img_channels) == (kw["img_resolution"], kw["img_channels"])
    assert g.num_ws == data["expected.ws"].shape[1] == 2 * (kw["img_resolution"].bit_length() - 1) - 2
    noise_keys = [k for k in record.state if k.endswith("noise_const")]
    assert len(g.noise_shapes()) == len(noise_keys)


def test_stylegan3_repository_defaults():
    record, _ = _load("stylegan3_repo")
    assert "synthesis_kwargs" not in record.init_kwargs
    config = parse_stylegan2_kwargs(record.class_name, record.init_kwargs)
    assert (config.conv_clamp, config.num_fp16_res, config.w_avg_beta) == (256, 4, 0.998)
    top = {k: record.init_kwargs[k] for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    synthesis = {k: record.init_kwargs[k] for k in ("channel_base", "channel_max")}
    ada = parse_stylegan2_kwargs("training.networks.Generator", {**top, "synthesis_kwargs": synthesis})
    assert (ada.conv_clamp, ada.num_fp16_res, ada.w_avg_beta) == (None, 0, 0.995)
    # the stylegan3 repository's kwargs layout is not stylegan2-ada-pytorch's: refused by name
    with pytest.raises(CheckpointError, match="'channel_base', 'channel_max' not supported"):
        parse_stylegan2_kwargs("training.networks.Generator", record.init_kwargs)


@torch.no_grad()
def test_positional_init_args():
    record, data = _load("ada_orig")
    kw = dict(record.init_kwargs)
    args = tuple(kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"))
    positional = SimpleNamespace(class_name=record.class_name, init_args=args, init_kwargs=kw, state=record.state)
    g = build_stylegan2(positional)
    assert _rel(g.mapping(data["inputs.z"].float()).double(), data["expected.ws"]) < 1e-5


# --------------------------------------------------------------------------------------------------- jacobians


def test_forward_mode_jacobian_in_w_matches_reverse_mode():
    record, data = _load("ada_resnet")
    g = build_stylegan2(record, torch.float64).requires_grad_(False)
    w0 = data["expected.ws"][:1, 0]  # one w (1, w_dim), broadcast to every layer

    def f(w: torch.Tensor) -> torch.Tensor:
        return g.synthesis(w.unsqueeze(1).expand(-1, g.num_ws, -1), "const").reshape(-1)

    basis = torch.eye(g.w_dim, dtype=torch.float64).unsqueeze(1)
    forward = vmap(lambda v: jvp(f, (w0,), (v,))[1])(basis).T  # (pixels, w_dim)
    reverse = torch.autograd.functional.jacobian(f, w0).reshape(-1, g.w_dim)
    assert forward.shape == (3 * 16 * 16, g.w_dim)
    assert _rel(forward, reverse) < 1e-10
    assert float(forward.abs().max()) > 0


# --------------------------------------------------------------------------------------------------- refusals


def _with(record: SimpleNamespace, **changes) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(record), **changes})


def test_unsupported_class_is_refused_with_the_supported_ones():
    record, _ = _load("ada_orig")
    with pytest.raises(CheckpointError) as err:
        build_stylegan2(_with(record, class_name="training.networks_stylegan3.Generator"))
    message = str(err.value)
    assert "training.networks_stylegan3.Generator" in message
    assert all(name in message for name in SUPPORTED_CLASSES)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"mapping_kwargs": {"num_layers": 2, "mystery": 1}}, "'mystery'"),
        ({"synthesis_kwargs": {"channel_base": 256, "channel_max": 16, "bogus": 0}}, "'bogus'"),
        ({"extra_top": 1}, "'extra_top'"),
        ({"synthesis_kwargs": {"channel_base": 256, "channel_max": 16, "architecture": "fancy"}}, "'fancy'"),
        ({"synthesis_kwargs": {"channel_base": 256, "channel_max": 16, "activation": "relu"}}, "'relu'"),
        ({"mapping_kwargs": {"num_layers": 3, "activation": "tanh"}}, "'tanh'"),
        ({"mapping_kwargs": {"num_layers": 3, "w_avg_beta": None}}, "w_avg_beta"),
        ({"img_resolution": 24}, "power of two"),
        ({"z_dim": 0}, "z_dim"),
    ],
)
def test_unsupported_kwargs_are_refused_by_name(change, named):
    record, _ = _load("ada_orig")
    with pytest.raises(CheckpointError) as err:
        build_stylegan2(_with(record, init_kwargs={**record.init_kwargs, **change}))
    assert named in str(err.value)
    if "'" in named and named not in ("'fancy'", "'relu'", "'tanh'"):
        assert "supported:" in str(err.value)


def test_state_that_does_not_fit_is_refused():
    record, _ = _load("ada_orig")
    state = dict(record.state)
    missing = {k: v for k, v in state.items() if k != "synthesis.b8.conv0.weight"}
    with pytest.raises(CheckpointError, match=r"missing synthesis\.b8\.conv0\.weight"):
        build_stylegan2(_with(record, state=missing))
    with pytest.raises(CheckpointError, match=r"unexpected synthesis\.b32\.const"):
        build_stylegan2(_with(record, state={**state, "synthesis.b32.const": torch.zeros(1)}))
    wrong = {**state, "mapping.fc0.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match=r"mis-shaped mapping\.fc0\.weight \(3, 3\) \(expected \(24, 16\)\)"):
        build_stylegan2(_with(record, state=wrong))
    with pytest.raises(CheckpointError, match="filter"):
        build_stylegan2(_with(record, state={**state, "synthesis.b8.resample_filter": torch.zeros(2, 2, 2)}))
    with pytest.raises(CheckpointError, match="floating-point"):
        build_stylegan2(_with(record, state={**state, "mapping.w_avg": torch.zeros(16, dtype=torch.int64)}))


@torch.no_grad()
def test_model_without_noise_inputs_is_the_noiseless_image():
    record, data = _load("ada_orig")
    kwargs = json.loads(json.dumps(record.init_kwargs))
    kwargs["synthesis_kwargs"]["use_noise"] = False
    state = {k: v for k, v in record.state.items() if not k.endswith(("noise_const", "noise_strength"))}
    g = build_stylegan2(SimpleNamespace(class_name=record.class_name, init_kwargs=kwargs, state=state), torch.float64)
    assert g.noise_shapes() == []
    reference = build_stylegan2(record, torch.float64)
    ws = data["expected.ws"]
    assert _rel(g.synthesis(ws, "const"), reference.synthesis(ws, "none")) < 1e-15
    with pytest.raises(CheckpointError, match="unexpected"):
        build_stylegan2(SimpleNamespace(class_name=record.class_name, init_kwargs=kwargs, state=record.state))
