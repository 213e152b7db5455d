"""Generators as users write them: noise drawn inside forward (frozen), operators without forward-mode rules (GLU
through ascend, custom autograd Functions), --dtype auto on ill-conditioned Jacobians, output ranges and factory
arguments."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.analyses.common import jacobian_operator
from gan_probe.analyses.eigvecs import EigvecsParams, run_eigvecs
from gan_probe.analyses.loglik import evaluate_loglik
from gan_probe.analyses.plan import plan_run
from gan_probe.errors import GanProbeError
from gan_probe.models import LoadOptions, load_generator
from gan_probe.spectral.route import exact_spectrum
from tests.conftest import dense_half_logdet, invoke, invoke_json

MODULE = "gp_user_generators"
SOURCE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Noisy(nn.Module):
        """Draws noise inside forward three ways (randn_like, new_empty().normal_(), dropout in train mode)."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Linear(6, 40), nn.Linear(40, 30)
            self.nz = 6

        def forward(self, z):
            h = torch.tanh(self.a(z))
            h = h + 0.1 * torch.randn_like(h) + 0.1 * h.new_empty(h.shape[0], 1).normal_()
            h = nn.functional.dropout(h, 0.2, training=True)
            return torch.tanh(self.b(h))


    class ZeroNoise(nn.Module):
        """StyleGAN's noise input before training: the noise is drawn but weighted by 0 (outputs agree)."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.a = nn.Linear(6, 30)
            self.weight = nn.Parameter(torch.zeros(1))
            self.nz = 6

        def forward(self, z):
            h = self.a(z)
            return torch.tanh(h + self.weight * torch.randn(h.shape[0], 1, device=h.device, dtype=h.dtype))


    class NoisyItem(Noisy):
        """Noise plus a Python-side read of a value (.item()): vmap cannot run it per sample, a loop can."""

        def forward(self, z):
            scale = 1.0 + 0.0 * float(z.detach().abs().max())
            return scale * super().forward(z)


    class Glu(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.a, self.b = nn.Linear(4, 40), nn.Linear(20, 24)
            self.nz = 4

        def forward(self, z):
            return torch.tanh(self.b(nn.functional.glu(self.a(z), dim=-1)))


    class Quantize(torch.autograd.Function):
        """A custom Function with neither a forward-mode rule nor a working backward."""

        @staticmethod
        def forward(ctx, x):
            return torch.round(x * 8) / 8

        @staticmethod
        def backward(ctx, g):
            raise NotImplementedError("Quantize has no gradient")


    class Quantized(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.a = nn.Linear(4, 12)
            self.nz = 4

        def forward(self, z):
            return Quantize.apply(torch.tanh(self.a(z)))


    class Cancel(nn.Module):
        """Two nearly equal input columns: a float32 J loses their difference (precision_warning)."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(4)
            w = torch.randn(40, 6, generator=g, dtype=torch.float64)
            w[:, 1] = w[:, 0] + 2e-7 * torch.randn(40, generator=g, dtype=torch.float64)
            self.w = nn.Parameter(w.float())
            self.v = nn.Parameter(torch.randn(30, 40, generator=g) / 6)
            self.nz = 6

        def forward(self, z):
            return torch.tanh(z @ self.w.T) @ self.v.T


    class Saturated(nn.Module):
        """A tanh deep in saturation on one axis: its derivative rounds to 0 in float32 (singular J)."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(5)
            self.lin = nn.Linear(6, 30)
            self.lin.weight.data.copy_(torch.randn(30, 6, generator=g))
            self.nz = 6

        def forward(self, z):
            # tanh at 9 to 14: 1 - tanh^2 rounds to 0 in float32, not in float64
            return self.lin(torch.cat([z[:, :1], torch.tanh(1.2 * z[:, 1:2] + 11.5), z[:, 2:]], dim=1))


    class Float32Only(Cancel):
        """Cancel with a weight kept in a plain attribute: .to(float64) leaves it float32, so float64 fails."""

        def __init__(self):
            super().__init__()
            self.v_plain = self.v.detach().clone()

        def forward(self, z):
            return torch.tanh(z @ self.w.T) @ self.v_plain.T


    class Unit(nn.Module):
        """A [0, 1] image generator (sigmoid output) that declares its range."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(6)
            self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 64), nn.Sigmoid())
            self.nz = 2
            self.output_range = (0.0, 1.0)

        def forward(self, z):
            return self.net(z).reshape(-1, 1, 8, 8)


    def unit_from_file(ckpt_path, device):
        """A factory that loads its own weights: the tool fills ckpt_path and device."""
        module = Unit()
        module.load_state_dict(torch.load(ckpt_path, weights_only=True)["ema"])
        module.received = (ckpt_path, str(device))
        return module.to(device)


    def noisy():
        return Noisy()


    def zero_noise():
        return ZeroNoise()


    def noisy_item():
        return NoisyItem()


    def glu():
        return Glu()


    def quantized():
        return Quantized()


    def cancel():
        return Cancel()


    def saturated():
        return Saturated()


    def float32_only():
        return Float32Only()


    def unit():
        return Unit()


    def bad_range():
        module = Unit()
        module.output_range = (1.0, 0.0)
        return module
    '''
)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    """A folder holding the user's generator module, made the working directory (--generator imports from it)."""
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _load(name: str, **options) -> object:
    dtype = options.pop("dtype", torch.float32)
    return load_generator(None, LoadOptions(generator=f"{MODULE}:{name}", **options), dtype=dtype)


def _z(n: int, nz: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- stochastic generators ------------------------------------------------------------------------------------------


def test_stochastic_generator_is_frozen_and_its_jacobian_is_that_of_the_frozen_function(user_dir):
    gen = _load("noisy", dtype=torch.float64)
    assert gen.noise is not None and gen.noise.vmapped and gen.describe()["noise"] == "frozen, seed 0"
    assert any("noise: frozen, seed 0" in n for n in gen.notes)
    z = _z(4, 6)
    torch.testing.assert_close(gen(z), gen(z), rtol=0, atol=0)
    torch.testing.assert_close(gen(z)[2:3], gen(z[2:3]), rtol=0, atol=1e-15)  # a latent's noise ignores its batch
    ours = exact_spectrum(jacobian_operator(gen, z, plan_run(gen, batch=4))).half_logdet
    torch.testing.assert_close(ours, dense_half_logdet(gen.flat, z), rtol=1e-10, atol=1e-10)
    other = _load("noisy", dtype=torch.float64, seed=1)
    assert other.describe()["noise"] == "frozen, seed 1" and not torch.allclose(other(z), gen(z))


def test_noise_weighted_by_zero_is_still_detected_by_vmap(user_dir):
    gen = _load("zero_noise", dtype=torch.float64)
    assert gen.noise is not None and any("randomness error" in n for n in gen.notes)
    z = _z(2, 6)
    with torch.no_grad():
        spec = exact_spectrum(jacobian_operator(gen, z, plan_run(gen, batch=2)))
    # the frozen function's spectrum is that of its dense Jacobian, one latent at a time
    torch.testing.assert_close(spec.half_logdet, dense_half_logdet(gen.flat, z), rtol=1e-10, atol=1e-10)


def test_stochastic_module_vmap_cannot_run_is_frozen_in_a_loop(user_dir):
    gen = _load("noisy_item", dtype=torch.float64)
    assert gen.noise is not None and not gen.noise.vmapped
    z = _z(3, 6)
    torch.testing.assert_close(gen(z)[1:2], gen(z[1:2]), rtol=0, atol=0)
    a = evaluate_loglik(gen, z, batch_size=3).loglik
    b = evaluate_loglik(gen, z, batch_size=1).loglik
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_stochastic_reports_identical_on_rerun_and_across_batch_sizes(user_dir, runner):
    def run(batch: int, out: str, *extra: str) -> dict:
        args = ["loglik", "--generator", f"{MODULE}:noisy", "--n", "5", "--batch-size", str(batch), "--out", out]
        return invoke_json(runner, [*args, *extra])

    first, again = run(2, "a"), run(2, "b")
    assert first["checkpoint"]["noise"] == "frozen, seed 0"
    assert first["results"] == again["results"]
    # the noise does not depend on the batch; in float32 the arithmetic itself differs by ~1e-8 relative with the
    # batch size (batched matmul kernels), as for any deterministic generator, so the batch sizes compare in float64
    wide, single = run(5, "c", "--dtype", "float64"), run(1, "d", "--dtype", "float64")
    for x, y in zip(wide["results"]["samples"], single["results"]["samples"]):
        assert x["loglik"] == pytest.approx(y["loglik"], rel=1e-13, abs=1e-13)
    result = invoke(runner, ["loglik", "--generator", f"{MODULE}:noisy", "--n", "2", "--out", "d"])
    assert "noise: frozen, seed 0" in " ".join(result.stderr.split())


# --- operators without forward-mode rules ---------------------------------------------------------------------------


def test_glu_generator_ascends_by_the_double_vjp_route(user_dir, runner):
    gen = _load("glu", dtype=torch.float64)
    z = _z(2, 4).requires_grad_(True)
    plan = plan_run(gen, batch=2, grad=True)
    half = exact_spectrum(jacobian_operator(gen, z, plan), grad=True).half_logdet
    half.sum().backward()
    assert gen.routes.grad == "reverse" and any("glu_jvp" in n for n in gen.notes)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack(
            [
                (
                    exact_spectrum(jacobian_operator(gen, z + h * e, plan)).half_logdet
                    - exact_spectrum(jacobian_operator(gen, z - h * e, plan)).half_logdet
                )
                / (2 * h)
                for e in torch.eye(4, dtype=torch.float64)
            ],
            dim=-1,
        )
    torch.testing.assert_close(z.grad, fd, rtol=1e-5, atol=1e-7)
    args = ["ascend", "--generator", f"{MODULE}:glu", "--n", "2", "--steps", "3", "--out", "asc", "--json"]
    result = invoke(runner, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["results"]["steps_done"] == 3 and "glu_jvp" in " ".join(report["checkpoint"]["notes"])
    assert report["results"]["loglik_gain"]["min"] > 0


def test_operator_without_any_derivative_is_named(user_dir, runner):
    gen = _load("quantized")
    with pytest.raises(GanProbeError, match="forward mode fails in Quantize.*reverse mode fails in Quantize"):
        with torch.no_grad():
            exact_spectrum(jacobian_operator(gen, _z(2, 4), plan_run(gen, batch=2)))
    result = invoke(runner, ["loglik", "--generator", f"{MODULE}:quantized", "--n", "2", "--out", "q"])
    assert result.exit_code == 1 and "cannot differentiate the generator" in result.stderr
    assert "Quantize" in result.stderr and "Traceback" not in result.stderr


# --- --dtype auto ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "flag"), [("cancel", "precision_warning"), ("saturated", "singular")])
def test_dtype_auto_promotes_flagged_latents_to_match_float64(user_dir, name, flag):
    z = _z(4, 6, seed=1)
    f32 = evaluate_loglik(_load(name), z)
    assert bool(getattr(f32, flag).all()), f"the float32 J of {name} should be flagged {flag}"
    auto = evaluate_loglik(_load(name, dtype_auto=True), z)
    f64 = evaluate_loglik(_load(name, dtype=torch.float64), z)
    assert not f64.singular.any() and not f64.precision_warning.any()
    torch.testing.assert_close(auto.loglik, f64.loglik, rtol=1e-9, atol=1e-9)
    assert auto.promoted is not None and bool(auto.promoted.all())
    summary = auto.summary()
    assert summary["num_promoted"] == 4 and summary["num_rounding_noise"] == 0
    assert summary["loglik"] == f64.summary()["loglik"]
    assert "num_promoted" not in f32.summary()


def test_dtype_auto_on_the_command_line(user_dir, runner):
    report = invoke_json(runner, ["loglik", "--generator", f"{MODULE}:cancel", "--n", "3", "--out", "o"])
    assert report["checkpoint"]["dtype"] == "auto" and report["results"]["summary"]["num_promoted"] == 3
    assert all(s["promoted"] and not s["precision_warning"] for s in report["results"]["samples"])
    f64 = invoke_json(
        runner, ["loglik", "--generator", f"{MODULE}:cancel", "--n", "3", "--dtype", "float64", "--out", "p"]
    )
    for a, b in zip(report["results"]["samples"], f64["results"]["samples"]):
        assert a["loglik"] == pytest.approx(b["loglik"], rel=1e-9)
    old = invoke_json(runner, ["loglik", "--generator", f"{MODULE}:cancel", "--n", "3", "--dtype", "float32"])
    assert old["results"]["summary"]["num_precision_warning"] == 3 and "num_promoted" not in old["results"]["summary"]


def test_dtype_auto_keeps_rounding_noise_out_of_the_headline_when_float64_fails(user_dir):
    gen = _load("float32_only", dtype_auto=True)
    values = evaluate_loglik(gen, _z(3, 6, seed=1))
    assert gen.float64_unavailable is not None and any("cannot run in float64" in n for n in gen.notes)
    summary = values.summary()
    assert summary["num_promoted"] == 0 and summary["num_rounding_noise"] == 3
    assert summary["loglik"]["mean"] is None  # every value is rounding noise: none is a headline
    assert torch.isfinite(values.loglik).all()  # still reported per latent, flagged


def test_dtype_auto_eigvecs_and_ascend(user_dir, runner):
    z = _z(2, 6, seed=1)
    auto = run_eigvecs(_load("saturated", dtype_auto=True), EigvecsParams(latents=z, top=2))
    f64 = run_eigvecs(_load("saturated", dtype=torch.float64), EigvecsParams(latents=z, top=2))
    assert auto.summary()["num_promoted"] == 2 and not auto.singular.any()
    torch.testing.assert_close(auto.eigenvalues, f64.eigenvalues, rtol=1e-9, atol=0)
    args = ["ascend", "--generator", f"{MODULE}:saturated", "--n", "2", "--steps", "2", "--out", "a"]
    report = invoke_json(runner, args)
    ref = invoke_json(runner, [*args[:-1], "b", "--dtype", "float64"])
    assert report["results"]["num_promoted"] >= 2
    assert report["results"]["start"]["loglik"]["mean"] == pytest.approx(ref["results"]["start"]["loglik"]["mean"])


# --- output range and factory arguments -----------------------------------------------------------------------------


def test_factory_gets_ckpt_path_and_device(user_dir):
    torch.manual_seed(7)
    from gp_user_generators import Unit  # type: ignore[import-not-found]

    weights = Unit()
    for p in weights.parameters():
        p.data.normal_()
    torch.save({"ema": weights.state_dict(), "step": 10}, user_dir / "run.pt")
    gen = load_generator(user_dir / "run.pt", LoadOptions(generator=f"{MODULE}:unit_from_file"))
    assert gen.module.received == (str(user_dir / "run.pt"), "cpu")
    assert "weights loaded by the factory" in gen.provenance and gen.output_range == (0.0, 1.0)
    z = _z(2, 2).float()
    with torch.no_grad():
        torch.testing.assert_close(gen(z), weights(z))
    with pytest.raises(GanProbeError, match="drop --key"):
        load_generator(user_dir / "run.pt", LoadOptions(generator=f"{MODULE}:unit_from_file", key="ema"))


def _png_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    for i in range(n):
        pixels = (np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_zero_one_generator_runs_pag_on_png_folders_with_psnr(user_dir, runner):
    data = _png_folder(user_dir / "pngs")
    args = ["pag", "--generator", f"{MODULE}:unit", "--data", data, "--steps", "3", "--batch-size", "4"]
    report = invoke_json(runner, [*args, "--out", "p"])
    assert report["checkpoint"]["output"]["range"] == [0.0, 1.0]
    assert report["results"]["reconstruction"]["psnr"]["mean"] is not None
    assert report["results"]["reconstruction"]["psnr_peak"] == 1.0
    refused = invoke(runner, [*args, "--output-range", "none", "--out", "q"])
    assert refused.exit_code == 1 and "--output-range LOW,HIGH" in refused.stderr


@pytest.mark.parametrize(("flag", "expected"), [("0,1", [0.0, 1.0]), ("-2,2", [-2.0, 2.0]), ("none", None)])
def test_output_range_flag_overrides_the_checkpoint(tiny_ckpt, runner, tmp_path, flag, expected):
    report = invoke_json(runner, ["info", tiny_ckpt, "--output-range", flag])
    assert report["checkpoint"]["output"]["range"] == expected


@pytest.mark.parametrize("flag", ["1,0", "0", "a,b", "0,inf"])
def test_bad_output_range_names_the_flag(tiny_ckpt, runner, flag):
    result = invoke(runner, ["info", tiny_ckpt, "--output-range", flag])
    assert result.exit_code == 1 and "--output-range" in result.stderr and "output range" in result.stderr


def test_bad_output_range_attribute_is_refused(user_dir):
    with pytest.raises(GanProbeError, match=r"its output_range attribute: output range \[1, 0\] needs finite LOW"):
        _load("bad_range")
