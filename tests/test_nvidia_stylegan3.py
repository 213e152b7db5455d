"""StyleGAN3 (configs T and R) rebuilt from NVIDIA's state, against numbers NVIDIA's own code produced.

How the fixtures were made (the script imports NVIDIA's code, so it is not in this repository):

* Code: NVlabs/stylegan3 at commit c233a919a6faee6e36a316ddd4eddababad1adf9, run on CPU, where its
  custom ops (``filtered_lrelu``, ``bias_act``, ``upfirdn2d``) take their plain-torch reference paths.
  Only change for torch 2.13: ``pkg_resources.parse_version`` imported from ``packaging.version``.
* Networks: ``training.networks_stylegan3.Generator`` built with the init kwargs stored in each file's
  metadata: ``nvidia_stylegan3_t.safetensors`` config T (z_dim = w_dim = 16, img_resolution 32,
  channel_base 512, channel_max 32, num_layers 4, num_critical 2; layers up-sample by 2 and 4 and crop
  the margin away) and ``nvidia_stylegan3_r_conditional.safetensors`` config R with c_dim 3
  (conv_kernel 1, use_radial_filters, z_dim 24, w_dim 20, 16 px, margin_size 4, output_scale 0.5,
  conv_clamp 1.5, which clamps). After construction: every bias += 0.5 N(0, 1), the input affine weight
  += 0.3 N(0, 1) (so w rotates and translates the features), each magnitude_ema ~ U(0.5, 2), w_avg
  ~ N(0, 1); for T the input ``transform`` buffer is a 10 degree rotation with translation (0.1, -0.2).
  The file's tensors are the generator's ``named_parameters()`` and ``named_buffers()`` as NVIDIA names
  them.
* Expected outputs (``expected/...``), one latent per call: ws = ``G.mapping(z, c)`` for three z (and
  classes), images ``G.synthesis(ws, noise_mode='const')`` at psi 1 and at psi 0.7 by w_avg + 0.7 (w -
  w_avg) (which equals NVIDIA's own ``truncation_psi=0.7``), and for w+ inputs ws + 0.5 N(0, 1) per layer.
  ``float32``: NVIDIA's code as it is. ``float64``: the same code after ``G.double()`` with its
  hard-wired float32 casts (``z``, ``c``, ``ws``, the input layer's ``torch.eye`` matrices and the
  layers' compute dtype) made to follow the parameters' dtype, the filters kept float32 as its
  ``upfirdn2d`` asserts. The two agree to float32 rounding (largest difference 2e-6).
* ``edited/...``: the filters of layers 0 and 1 replaced by filters of the same lengths designed for
  other cutoffs (what a network fine-tuned with ``--resume`` from another configuration carries, since
  ``copy_params_and_buffers`` copies buffers), and NVIDIA's images with them (``expected/*/img_edited``).
* ``nvidia_stylegan3_geometry.json``: layer names, factors, paddings, filter shapes and band limits of
  NVIDIA's ``SynthesisNetwork`` for the released configurations (built on the meta device).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from safetensors import safe_open

from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.models.nvidia.stylegan3 import (
    STYLEGAN3_CLASS,
    StyleGAN3Config,
    build_stylegan3,
    modulated_conv2d,
    parse_stylegan3_kwargs,
    synthesis_geometry,
)
from gan_probe.models.nvidia.stylegan3_ops import filtered_leaky_relu

DATA = Path(__file__).parent / "data"
FIXTURES = {"T": "nvidia_stylegan3_t.safetensors", "R": "nvidia_stylegan3_r_conditional.safetensors"}


@dataclass
class Record:
    class_name: str
    init_kwargs: dict
    state: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor] = field(default_factory=dict)
    edited: dict[str, torch.Tensor] = field(default_factory=dict)


def load_fixture(config: str) -> Record:
    with safe_open(str(DATA / FIXTURES[config]), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: v for k, v in tensors.items() if not k.startswith(("expected/", "edited/"))}
    expected = {k.removeprefix("expected/"): v for k, v in tensors.items() if k.startswith("expected/")}
    edited = {k.removeprefix("edited/"): v for k, v in tensors.items() if k.startswith("edited/")}
    return Record(meta["class_name"], json.loads(meta["init_kwargs"]), state, expected, edited)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module", params=["T", "R"])
def fixture(request: pytest.FixtureRequest) -> tuple[str, Record]:
    return request.param, load_fixture(request.param)


# ------------------------------------------------------------------------------------- against NVIDIA


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_outputs_match_nvidia(fixture: tuple[str, Record], dtype: torch.dtype) -> None:
    config, rec = fixture
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    ref = "float64" if dtype == torch.float64 else "float32"
    exp = rec.expected
    g = build_stylegan3(rec).to(dtype)
    assert g.architecture == f"StyleGAN3-{config}"
    c = exp["c"].to(dtype) if "c" in exp else None
    assert (c is not None) == (config == "R")
    ws = torch.cat([g.mapping(exp["z"][i : i + 1].to(dtype), None if c is None else c[i : i + 1]) for i in range(3)])
    assert ws.dtype == dtype
    assert rel_err(ws, exp[f"{ref}/ws"]) < tol
    ws_ref = exp[f"{ref}/ws"].to(dtype)
    img = g.synthesis(ws_ref)
    assert img.dtype == dtype and img.shape == (3, 3, g.img_resolution, g.img_resolution)
    assert rel_err(img, exp[f"{ref}/img"]) < tol
    truncated = g.w_avg + 0.7 * (ws_ref - g.w_avg)
    assert rel_err(g.synthesis(truncated), exp[f"{ref}/img_psi07"]) < tol
    assert rel_err(g.synthesis(exp[f"{ref}/wplus"].to(dtype)), exp[f"{ref}/img_wplus"]) < tol
    # z -> image in one call, the three latents as one batch
    assert rel_err(g(exp["z"].to(dtype), c), exp[f"{ref}/img"]) < max(tol, 1e-9)


def test_float32_and_float64_references_agree(fixture: tuple[str, Record]) -> None:
    """The float64 references come from NVIDIA's code with its float32 casts made dtype-following; they
    agree with the unmodified code's float32 numbers to float32 rounding."""
    _, rec = fixture
    for key in ("img", "img_psi07", "img_edited"):
        assert rel_err(rec.expected[f"float32/{key}"], rec.expected[f"float64/{key}"]) < 1e-5


def test_stored_filters_win_over_kwargs(fixture: tuple[str, Record]) -> None:
    """The kwargs design the filters at construction, but NVIDIA's forward pass filters with the stored
    buffers. As constructed they agree (the kwargs' Kaiser designs are the stored float32 taps); a network
    fine-tuned with --resume keeps the filters it was resumed from. Built from such a state, the images are
    NVIDIA's with the stored filters, which differ from the ones the kwargs' filters would give by far more
    than rounding: rebuilding filters from the kwargs would be wrong."""
    config, rec = fixture
    _, layers = synthesis_geometry(parse_stylegan3_kwargs(rec.init_kwargs))
    for geo in layers[:2]:
        designed = scipy.signal.firwin(
            numtaps=geo.up_taps, cutoff=geo.in_cutoff, width=2 * geo.in_half_width, fs=geo.tmp_sampling_rate
        )
        stored = rec.state[f"synthesis.{geo.name}.up_filter"]
        assert torch.equal(torch.as_tensor(designed, dtype=torch.float32), stored)
        assert not torch.equal(rec.edited[f"synthesis.{geo.name}.up_filter"], stored)
        assert rec.state[f"synthesis.{geo.name}.down_filter"].ndim == (2 if config == "R" else 1)
    edited = Record(rec.class_name, rec.init_kwargs, rec.state | rec.edited)
    g = build_stylegan3(edited).to(torch.float64)
    img = g.synthesis(rec.expected["float64/ws"])
    assert rel_err(img, rec.expected["float64/img_edited"]) < 1e-10
    assert rel_err(img, rec.expected["float64/img"]) > 1e-2


def test_input_transform_buffer_is_used() -> None:
    """The T fixture's stored transform (a user's rotation and translation) is in NVIDIA's images; the
    identity that the kwargs would give changes them."""
    rec = load_fixture("T")
    assert not torch.equal(rec.state["synthesis.input.transform"], torch.eye(3))
    g = build_stylegan3(
        Record(rec.class_name, rec.init_kwargs, rec.state | {"synthesis.input.transform": torch.eye(3)})
    )
    img = g.to(torch.float64).synthesis(rec.expected["float64/ws"])
    assert rel_err(img, rec.expected["float64/img"]) > 1e-2


def test_geometry_matches_nvidia_released_configs() -> None:
    """Layer names (sizes and channels), factors, paddings, filter shapes and band limits of NVIDIA's
    SynthesisNetwork for the released T and R configurations at 1024, 512 and 256 px."""
    cases = json.loads((DATA / "nvidia_stylegan3_geometry.json").read_text())
    assert len(cases) == 4
    for case in cases.values():
        cfg = StyleGAN3Config(z_dim=8, c_dim=0, w_dim=8, img_channels=3, **case["kwargs"])
        inp, layers = synthesis_geometry(cfg)
        assert (inp.channels, inp.size) == (case["input"]["channels"], case["input"]["size"])
        assert inp.sampling_rate == case["input"]["sampling_rate"]
        assert inp.bandwidth == pytest.approx(case["input"]["bandwidth"], rel=1e-14)
        assert [geo.name for geo in layers] == [ref["name"] for ref in case["layers"]]
        for geo, ref in zip(layers, case["layers"]):
            assert (geo.up, geo.down, list(geo.padding)) == (ref["up"], ref["down"], ref["padding"])
            up_shape = [geo.up_taps] if geo.up_taps > 1 else None
            down_shape = ([geo.down_taps] * (2 if geo.radial_down else 1)) if geo.down_taps > 1 else None
            assert (up_shape, down_shape) == (ref["up_filter"], ref["down_filter"])
            assert geo.tmp_sampling_rate == ref["tmp_sampling_rate"]
            for key in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
                assert getattr(geo, key) == pytest.approx(ref[key], rel=1e-14)


# ------------------------------------------------------------------------------------- formulations


def grouped_modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, input_gain: float, padding: int
) -> torch.Tensor:
    """Per-sample weights W''_b = W' s_b d_b g in one grouped convolution (the form in the paper)."""
    b, cin = styles.shape
    w, s = weight, styles
    if demodulate:
        w = w / w.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        s = s / s.square().mean(dim=1, keepdim=True).sqrt()
    wb = w.unsqueeze(0) * s.reshape(b, 1, cin, 1, 1)  # (B, out, in, k, k)
    if demodulate:
        wb = wb / (wb.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).sqrt()
    wb = wb * input_gain
    out = F.conv2d(x.reshape(1, b * cin, *x.shape[2:]), wb.reshape(-1, cin, *w.shape[2:]), padding=padding, groups=b)
    return out.reshape(b, -1, *out.shape[2:])


@pytest.mark.parametrize(("kernel", "demodulate"), [(3, True), (1, True), (1, False)])
def test_shared_weight_modulation_equals_grouped(kernel: int, demodulate: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, kernel, kernel, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=gen, dtype=torch.float64) + 1
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, input_gain=0.7, padding=kernel - 1)
    want = grouped_modulated_conv2d(x, weight, styles, demodulate, 0.7, kernel - 1)
    assert got.shape == (3, 4, 7 + kernel - 1, 7 + kernel - 1)
    assert rel_err(got, want) < 1e-13


def zero_insertion_filtered_lrelu(
    x: torch.Tensor,
    b: torch.Tensor,
    fu: torch.Tensor,
    fd: torch.Tensor,
    up: int,
    down: int,
    pad: list[int],
    clamp: float,
) -> torch.Tensor:
    """Upsample by inserting zeros, pad/crop, convolve (stride 1), lrelu, clamp, convolve, decimate."""
    n, c, h, w = x.shape
    x = x + b.reshape(1, -1, 1, 1)
    z = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    z = F.pad(z, (px0, px1, py0, py1))  # negative values crop

    def conv(t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        f2 = torch.outer(f, f) if f.ndim == 1 else f
        k = torch.flip(f2, (0, 1)).reshape(1, 1, *f2.shape).expand(c, 1, *f2.shape)
        return F.conv2d(t, k, groups=c)

    y = conv(z, fu * up**fu.ndim)  # gain up per axis
    y = (F.leaky_relu(y, 0.2) * math.sqrt(2)).clamp(-clamp, clamp)
    return conv(y, fd)[:, :, ::down, ::down]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("up", "down", "pad", "up_taps", "radial"),
    [
        (2, 2, [9, 8, 9, 8], 12, False),
        (4, 2, [-6, -9, -6, -9], 24, False),
        (2, 2, [-11, -12, -11, -12], 12, True),
        (2, 1, [3, 2, 4, 1], 12, True),
        (3, 2, [2, 5, 0, 1], 7, False),  # taps not a multiple of up: the polyphase form pads the filter
    ],
)
def test_strided_filtering_equals_zero_insertion(
    up: int, down: int, pad: list[int], up_taps: int, radial: bool, dtype: torch.dtype
) -> None:
    """The strided / polyphase filtering (float64) and the transposed-convolution one (float32) against
    zero insertion and decimation around stride-1 convolutions, with asymmetric random filters."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 30, 30, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    fu = torch.randn(up_taps, generator=gen, dtype=torch.float64)
    fd = torch.randn(6 * down, generator=gen, dtype=torch.float64)
    if radial:
        fd = torch.randn(6 * down, 6 * down, generator=gen, dtype=torch.float64)
    kwargs = {"up": up, "down": down, "padding": pad, "gain": math.sqrt(2), "slope": 0.2}
    got = filtered_leaky_relu(x.to(dtype), b.to(dtype), fu.to(dtype), fd.to(dtype), **kwargs, clamp=2.0)
    want = zero_insertion_filtered_lrelu(x, b, fu, fd, up, down, pad, clamp=2.0)
    assert got.shape == want.shape and got.dtype == dtype
    assert rel_err(got, want) < (1e-13 if dtype == torch.float64 else 1e-5)
    unclamped = filtered_leaky_relu(x, b, fu, fd, **kwargs, clamp=None)
    assert rel_err(unclamped, want) > 1e-3  # the clamp is active


def test_samples_of_a_batch_are_independent() -> None:
    """Each sample's styles are normalised alone: a batch gives the batch-size-1 images exactly."""
    rec = load_fixture("T")
    g = build_stylegan3(rec).to(torch.float64)
    ws = rec.expected["float64/wplus"]
    batched = g.synthesis(ws)
    singles = torch.cat([g.synthesis(ws[i : i + 1]) for i in range(3)])
    assert rel_err(batched, singles) < 1e-14


def test_jacobian_forward_mode_under_vmap_equals_reverse_mode() -> None:
    """Columns of J = d image / d w by torch.func.jvp under vmap against reverse-mode u^T J (five of the
    w_dim columns keep the test quick)."""
    rec = load_fixture("R")
    g = build_stylegan3(rec).to(torch.float64)
    w0 = rec.expected["float64/ws"][0, 0]  # (w_dim,)

    def image_of_w(w: torch.Tensor) -> torch.Tensor:
        return g.synthesis(w.expand(1, g.num_ws, -1)).reshape(-1)

    basis = torch.eye(g.w_dim, dtype=torch.float64)[:5]
    with torch.no_grad():
        jac = torch.func.vmap(lambda v: torch.func.jvp(image_of_w, (w0,), (v,))[1])(basis).T
    assert jac.shape == (3 * 16 * 16, 5)
    image, vjp = torch.func.vjp(image_of_w, w0)
    u = torch.randn(3, image.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows = torch.stack([vjp(ui)[0] for ui in u])[:, :5]
    assert rel_err(u @ jac, rows) < 1e-12


# ------------------------------------------------------------------------------------- refusals


def test_unsupported_kwarg_is_named() -> None:
    rec = load_fixture("T")
    bad = Record(
        rec.class_name, rec.init_kwargs | {"magic": 1, "mapping_kwargs": {"num_layers": 2, "depth": 3}}, rec.state
    )
    with pytest.raises(CheckpointError, match=r"unsupported init kwargs magic, mapping_kwargs\.depth; supported: "):
        build_stylegan3(bad)


def test_other_class_is_refused() -> None:
    rec = load_fixture("T")
    with pytest.raises(CheckpointError, match="'training.networks_stylegan2.Generator' is not StyleGAN3"):
        build_stylegan3(Record("training.networks_stylegan2.Generator", rec.init_kwargs, rec.state))
    assert STYLEGAN3_CLASS == rec.class_name


def test_state_that_does_not_fit_the_kwargs_is_refused() -> None:
    rec = load_fixture("T")
    with pytest.raises(CheckpointError, match=r"missing mapping.w_avg"):
        build_stylegan3(
            Record(rec.class_name, rec.init_kwargs, {k: v for k, v in rec.state.items() if k != "mapping.w_avg"})
        )
    with pytest.raises(CheckpointError, match=r"the init kwargs give \(16, 16\)"):
        build_stylegan3(
            Record(rec.class_name, rec.init_kwargs, rec.state | {"mapping.fc0.weight": torch.zeros(16, 17)})
        )
    key = "synthesis.L0_36_32.up_filter"
    with pytest.raises(CheckpointError, match=r"needs 12 taps"):
        build_stylegan3(Record(rec.class_name, rec.init_kwargs, rec.state | {key: torch.zeros(10)}))
    with pytest.raises(CheckpointError, match=r"num_layers \(2\) must exceed num_critical \(2\)"):
        build_stylegan3(Record(rec.class_name, rec.init_kwargs | {"num_layers": 2}, rec.state))


def test_conditional_generator_needs_c() -> None:
    rec = load_fixture("R")
    g = build_stylegan3(rec)
    with pytest.raises(GanProbeError, match="conditional \\(c_dim=3\\)"):
        g.mapping(torch.zeros(1, 24))
    with pytest.raises(GanProbeError, match="no noise inputs"):
        g.synthesis(torch.zeros(1, g.num_ws, g.w_dim), noise=[torch.zeros(1, 1, 4, 4)])
    assert g.noise_shapes() == []
    assert not g.training and not g.train().training


# ------------------------------------------------------------------------------------- the nonlinearity's derivative


def three_op_lrelu_gain_clamp(u: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    """The filtered leaky ReLU's pointwise part as it was written before (leaky_relu, mul, clamp): torch's own
    derivatives of the three ops are the reference for the precomputed factor."""
    u = F.leaky_relu(u, slope) if slope != 1 else u
    u = u * gain if gain != 1 else u
    return u if clamp is None else u.clamp(-clamp, clamp)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("slope", "gain", "clamp"), [(0.2, math.sqrt(2), 0.8), (0.2, math.sqrt(2), None), (1, 1, 0.5)])
def test_precomputed_derivative_equals_the_three_op_form(
    slope: float, gain: float, clamp: float | None, dtype: torch.dtype
) -> None:
    """Value (bit for bit), J v under vmap, u^T J and the second-order products (forward over reverse, reverse
    over reverse, as the exact gradient and the double-VJP route take them) of the one-factor form against
    torch's derivatives of leaky_relu, mul and clamp, including the kinks (u = 0, |y| = clamp) where both
    follow torch's conventions."""
    from gan_probe.models.nvidia.stylegan3_ops import _LeakyReluGainClamp

    def new(u: torch.Tensor) -> torch.Tensor:
        return _LeakyReluGainClamp.apply(u, slope, gain, clamp)[0]

    def old(u: torch.Tensor) -> torch.Tensor:
        return three_op_lrelu_gain_clamp(u, slope, gain, clamp)

    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    u[0, 0, 0, :2] = 0.0  # the lrelu kink
    if clamp is not None:
        u[0, 1, 0, 0] = clamp / gain  # on the clamp's upper bound
        u[0, 1, 0, 1] = -clamp / (gain * slope)  # on its lower bound
    u = u.to(dtype)
    tangents = torch.randn(4, *u.shape, generator=gen, dtype=torch.float64).to(dtype)
    rounding = 1e-15 if dtype == torch.float64 else 1e-6
    assert torch.equal(new(u), old(u))
    jv_new = torch.func.vmap(lambda t: torch.func.jvp(new, (u,), (t,))[1])(tangents)
    jv_old = torch.func.vmap(lambda t: torch.func.jvp(old, (u,), (t,))[1])(tangents)
    assert rel_err(jv_new, jv_old) < rounding
    if clamp is not None:
        assert (jv_old == 0).any()  # the clamp is active somewhere
    for ct in tangents:
        assert rel_err(torch.func.vjp(new, u)[1](ct)[0], torch.func.vjp(old, u)[1](ct)[0]) < rounding

    # through a smooth map first, so that the tangent and cotangent depend on x: the second derivatives
    x = u.double().requires_grad_(True)
    v = tangents[0].double()

    def second_order(f) -> tuple[torch.Tensor, torch.Tensor]:
        def chain(x: torch.Tensor) -> torch.Tensor:
            return f(torch.sin(x) * 2) * x

        with torch.enable_grad():
            col = torch.func.jvp(chain, (x,), (v,))[1]
            (forward_over_reverse,) = torch.autograd.grad(col.square().sum(), x)
            (g,) = torch.autograd.grad(chain(x).sum(), x, create_graph=True)
            (reverse_over_reverse,) = torch.autograd.grad((g * v).sum(), x)
        return forward_over_reverse, reverse_over_reverse

    for a, b in zip(second_order(new), second_order(old)):
        assert rel_err(a, b) < 1e-14


@pytest.mark.parametrize(("dtype", "rounding"), [(torch.float64, 1e-14), (torch.float32, 1e-5)])
def test_filtered_lrelu_jacobian_equals_the_three_op_form(dtype: torch.dtype, rounding: float) -> None:
    """The whole filtered leaky ReLU (upsample, the one-factor nonlinearity, downsample): forward-mode
    columns under vmap against the same op with the three-op nonlinearity."""
    import gan_probe.models.nvidia.stylegan3_ops as ops

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 12, 12, generator=gen, dtype=torch.float64).to(dtype)
    b, fu, fd = (torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in (3, 12, 12))
    kwargs = {"up": 2, "down": 2, "padding": [9, 8, 9, 8], "gain": math.sqrt(2), "slope": 0.2, "clamp": 1.5}
    tangents = torch.randn(5, *x.shape, generator=gen, dtype=torch.float64).to(dtype)

    def previous(x: torch.Tensor) -> torch.Tensor:
        y = ops.upsample_fir(x + b.reshape(1, -1, 1, 1), fu, 2, kwargs["padding"])
        y = three_op_lrelu_gain_clamp(y, kwargs["slope"], kwargs["gain"], kwargs["clamp"])
        return ops.downsample_fir(y, fd, 2)

    def current(x: torch.Tensor) -> torch.Tensor:
        return filtered_leaky_relu(x, b, fu, fd, **kwargs)

    assert torch.equal(current(x), previous(x))
    new = torch.func.vmap(lambda t: torch.func.jvp(current, (x,), (t,))[1])(tangents)
    old = torch.func.vmap(lambda t: torch.func.jvp(previous, (x,), (t,))[1])(tangents)
    assert rel_err(new, old) < rounding


def test_the_derivative_factor_is_computed_only_where_a_derivative_is_taken(monkeypatch) -> None:
    """A plain evaluation (no_grad, no transform) takes the plain ops, with the same bits; a forward-mode
    product under vmap, a forward-AD dual and reverse mode take the one-factor op."""
    import gan_probe.models.nvidia.stylegan3_ops as ops

    calls = []
    apply = ops._LeakyReluGainClamp.apply

    def counted(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(ops._LeakyReluGainClamp, "apply", counted)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 12, 12, generator=gen, dtype=torch.float64)
    b, fu, fd = (torch.randn(n, generator=gen, dtype=torch.float64) for n in (3, 12, 12))
    kwargs = {"up": 2, "down": 2, "padding": [9, 8, 9, 8], "gain": math.sqrt(2), "slope": 0.2, "clamp": 1.5}

    def op(x: torch.Tensor) -> torch.Tensor:
        return filtered_leaky_relu(x, b, fu, fd, **kwargs)

    with torch.no_grad():
        plain = op(x)
    assert not calls
    with torch.no_grad():
        torch.func.vmap(lambda t: torch.func.jvp(op, (x,), (t,))[1])(torch.randn(2, *x.shape, dtype=torch.float64))
    assert len(calls) == 1
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        assert torch.equal(torch.autograd.forward_ad.unpack_dual(op(dual)).primal, plain)
    assert len(calls) == 2
    assert torch.equal(op(x.clone().requires_grad_(True)).detach(), plain) and len(calls) == 3
