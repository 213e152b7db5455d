"""StyleGAN2 through the tool: rosinality files with no flags, the z / w / w+ spaces, truncation, noise,
latents files, and the sphere geometry of generators that ignore |z| (docs/design.md §1.4-1.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import gan_probe
from gan_probe.errors import GanProbeError
from gan_probe.models import Prior
from gan_probe.spectral.geometry import log_sphere_area, tangent_basis
from tests.conftest import dense_jacobian, invoke, invoke_json, wrap

FIXTURE = "tests/data/rosinality_stylegan2_tiny.safetensors"


@pytest.fixture(scope="module")
def sg2_files(tmp_path_factory):
    """The rosinality-layout state dict of the fixture as a bare .pt state dict and a bare safetensors file."""
    d = tmp_path_factory.mktemp("sg2")
    state = {k[2:]: v.contiguous() for k, v in load_file(FIXTURE).items() if k.startswith("g.")}
    torch.save(state, d / "g_ema.pt")
    save_file(state, str(d / "g_ema.safetensors"))
    return d / "g_ema.pt", d / "g_ema.safetensors"


class Sphere(torch.nn.Module):
    """G(z) = A z / |z| with A^T A = I: ignores |z|, and ln Q = -ln|S^{n-1}| at every z (the closed form)."""

    def __init__(self, n: int, out: int) -> None:
        super().__init__()
        a, _ = torch.linalg.qr(torch.randn(out, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        self.register_buffer("a", a)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z / z.norm(dim=-1, keepdim=True)) @ self.a.T


def test_sphere_closed_form():
    gen = wrap(Sphere(6, 20), 6)
    res = gan_probe.loglik(gen, n=5)  # auto: |J z| is rounding noise, so every latent is read on the sphere
    assert res.values.sphere.all()
    torch.testing.assert_close(res.loglik, torch.full((5,), -log_sphere_area(6), dtype=torch.float64))
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))  # |S^2| = 4 pi
    # the Euclidean reading of the same generator is singular, as it must be
    flat = gan_probe.loglik(gen, n=5, geometry="euclidean")
    assert flat.values.singular.all() and not torch.isfinite(flat.loglik).any()


def test_generic_generators_stay_euclidean(mlp_gen):
    auto = gan_probe.loglik(mlp_gen, n=4)
    flat = gan_probe.loglik(mlp_gen, n=4, geometry="euclidean")
    assert not auto.values.sphere.any()
    assert torch.equal(auto.loglik, flat.loglik)


def test_tangent_basis_is_orthonormal_and_orthogonal_to_z():
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z[0] = torch.tensor([3.0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)  # the reflection's degenerate case
    b = tangent_basis(z)
    torch.testing.assert_close(b.transpose(1, 2) @ b, torch.eye(6, dtype=torch.float64).expand(5, 6, 6))
    assert float((b.transpose(1, 2) @ z[:, :, None]).abs().max()) < 1e-12


def test_stylegan2_z_loglik_matches_the_dense_sphere_formula(sg2_files):
    """ln Q in z against a dense float64 computation: autograd Jacobian, its n-1 largest singular values."""
    gen = gan_probe.load_generator(sg2_files[0], dtype="float64", device="cpu")
    assert gen.arch == "stylegan2" and gen.ignores_norm and gen.nz == 8
    z = gen.prior.sample(3, gen.nz, generator=torch.Generator().manual_seed(2))
    res = gan_probe.loglik(gen, z)
    assert res.values.sphere.all()
    for i in range(3):
        jac = dense_jacobian(gen.flat, z[i : i + 1])[0]
        s = torch.linalg.svdvals(jac)
        n, r = gen.nz, float(z[i].norm())
        ref = -log_sphere_area(n) - float(torch.log(s[: n - 1]).sum()) - (n - 1) * math.log(r)
        assert float(res.loglik[i]) == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert float(s[-1] / s[0]) < 1e-7  # J z = 0: the smallest singular value collapses


def test_rosinality_files_load_with_no_flags_in_every_space(sg2_files):
    for path in sg2_files:
        for space, nz in (("z", 8), ("w", 8), ("w+", 6 * 8)):
            gen = gan_probe.load_generator(path, space=space, device="cpu")
            assert gen.arch == "stylegan2" and gen.nz == nz and gen.output_shape == (3, 16, 16)
            assert gen.config["space"] == space and gen.config["noise"] == "stored"
            assert (gen.prior.kind == "normal") == (space == "z")


def test_stored_noise_truncation_and_w_avg_match_the_recorded_rosinality_images(sg2_files):
    """The fixture holds rosinality's own float64 outputs for z at psi 1 and 0.6 (its w_avg) and for w+."""
    ref = load_file(FIXTURE)
    gen = gan_probe.load_generator(sg2_files[1], dtype="float64", device="cpu")
    torch.testing.assert_close(gen(ref["z"].double()), ref["image_z"].double(), rtol=0, atol=1e-12)
    plus = gan_probe.load_generator(sg2_files[1], space="w+", dtype="float64", device="cpu")
    torch.testing.assert_close(
        plus(ref["wplus"].double().reshape(ref["wplus"].shape[0], -1)), ref["image_wplus"].double(), rtol=0, atol=1e-12
    )


def test_truncation_zero_gives_one_image_and_noise_modes(sg2_files, runner, tmp_path):
    gen = gan_probe.load_generator(sg2_files[0], truncation=0.0, device="cpu", dtype="float64")
    imgs = gen(gen.prior.sample(4, gen.nz, generator=torch.Generator().manual_seed(3)))
    assert float((imgs - imgs[:1]).abs().max()) < 1e-12
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = {m: gan_probe.load_generator(sg2_files[0], noise=m, dtype="float64", device="cpu")(z) for m in
           ("stored", "zero", "seed:3")}  # fmt: skip
    again = gan_probe.load_generator(sg2_files[0], noise="seed:3", dtype="float64", device="cpu")(z)
    assert not torch.equal(out["stored"], out["zero"]) and not torch.equal(out["zero"], out["seed:3"])
    assert torch.equal(out["seed:3"], again)
    report = invoke_json(runner, ["info", sg2_files[0], "--noise", "seed:3", "--truncation", "0.5"])
    cfg = report["results"]["config"]
    assert cfg["noise"] == "seed:3" and cfg["truncation"] == 0.5 and cfg["w_avg"].startswith("mean of 10000")


def test_latents_files_in_w_are_points_and_z_is_mapped(sg2_files, tmp_path):
    gen = gan_probe.load_generator(sg2_files[0], space="w", device="cpu", dtype="float64")
    w = gen.prior.sample(3, gen.nz, generator=torch.Generator().manual_seed(5))
    np.savez(tmp_path / "w.npz", w=w.numpy())
    assert torch.equal(gan_probe.eigvecs(gen, str(tmp_path / "w.npz"), top=2).z, w)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    np.savez(tmp_path / "z.npz", z=z.numpy())
    torch.testing.assert_close(gan_probe.eigvecs(gen, str(tmp_path / "z.npz"), top=2).z, gen.prior.map_z(z))


@pytest.mark.parametrize("space", ["w", "w+"])
def test_cli_commands_in_w_spaces(sg2_files, runner, tmp_path, space):
    ckpt = sg2_files[0]
    common = [ckpt, "--space", space, "--dtype", "float64"]
    r = invoke_json(runner, ["eigvecs", *common, "--n", "2", "--top", "3", "--traversal-steps", "3",
                             "--out", tmp_path / "e"])  # fmt: skip
    assert r["checkpoint"]["nz"] == (8 if space == "w" else 48)
    r = invoke_json(runner, ["veff", *common, "--n", "3", "--k", "4", "--out", tmp_path / "v"])
    assert 0 <= r["results"]["veff"] <= r["results"]["nz"]
    r = invoke_json(runner, ["sample", *common, "--n", "4", "--out", tmp_path / "s"])
    with np.load(tmp_path / "s" / "samples.npz") as f:
        assert set(f.files) == {"w" if space == "w" else "w_plus", "images"}
        assert f["images"].shape == (4, 3, 16, 16)
    for command in ("loglik", "ascend"):
        bad = invoke(runner, [command, *common, "--out", tmp_path / command])
        assert bad.exit_code == 1 and "closed-form prior" in bad.stderr and "--space" in bad.stderr


def test_pag_in_w_compares_with_the_fitted_gaussian(sg2_files):
    gen = gan_probe.load_generator(sg2_files[0], space="w", device="cpu", dtype="float64")
    x = gen(gen.prior.sample(12, gen.nz, generator=torch.Generator().manual_seed(7))).clamp(-1, 1)
    res = gan_probe.pag(gen, x, steps=5, optimizer="adam", prior_samples=20, top=2)
    assert "fitted to 10000 mapped prior draws" in res.reference
    assert res.score is not None and math.isfinite(res.score.pag) and res.score.pag > 0


def test_ascend_in_z_moves_on_the_sphere(sg2_files):
    gen = gan_probe.load_generator(sg2_files[0], device="cpu", dtype="float64")
    res = gan_probe.ascend(gen, n=2, steps=3, lr=0.05)
    radii = res.z.norm(dim=-1)  # (steps + 1, K)
    torch.testing.assert_close(radii, radii[:1].expand_as(radii), rtol=1e-12, atol=0)
    assert torch.isfinite(res.loglik).all() and not torch.equal(res.z[0], res.z[-1])


def test_space_options_belong_to_stylegan2(tiny_ckpt, runner, tmp_path):
    for flag in (["--space", "w"], ["--truncation", "0.5"], ["--noise", "zero"]):
        result = invoke(runner, ["info", tiny_ckpt, *flag])
        assert result.exit_code == 1 and flag[0] in result.stderr and "StyleGAN2" in result.stderr
    bad = invoke(runner, ["info", FIXTURE.replace("tiny", "tiny"), "--noise", "loud"])
    assert bad.exit_code == 1


def test_sphere_geometry_needs_a_normal_prior(mlp_gen):
    boxed = wrap(mlp_gen.module, mlp_gen.nz, prior=Prior("uniform"))
    with pytest.raises(GanProbeError) as info:
        gan_probe.loglik(boxed, n=2, geometry="sphere")
    assert info.value.param == "geometry" and "normal prior" in str(info.value)


def test_the_bundled_stylegan2_runs_in_every_space(runner, tmp_path):
    """sample_checkpoints/mnist-stylegan2.safetensors (trained by train.py): native metadata, z read on the sphere."""
    from gan_probe.models.bundled import samples_dir

    ckpt = samples_dir() / "mnist-stylegan2.safetensors"
    gen = gan_probe.load_generator(ckpt, device="cpu")
    assert gen.arch == "stylegan2" and gen.nz == 64 and gen.output_shape == (3, 32, 32) and gen.ignores_norm
    res = gan_probe.loglik(gen, n=2)
    assert res.values.sphere.all() and torch.isfinite(res.loglik).all()
    report = invoke_json(runner, ["eigvecs", ckpt, "--space", "w", "--n", "1", "--top", "2",
                                  "--traversal-steps", "3", "--out", tmp_path / "e"])  # fmt: skip
    assert report["checkpoint"]["nz"] == 64 and report["checkpoint"]["config"]["space"] == "w"
    assert gan_probe.load_generator(ckpt, space="w+", device="cpu").nz == 8 * 64


def test_a_linear_synthesis_in_w_has_the_closed_form_spectrum_and_veff():
    """G(w) = A w seen from a w space (points are mapped draws): eigenvalues of M are s_i(A)^2 and
    delta(j,0) * delta(j,i) = alpha sqrt(lambda_i) (docs/design.md §6.3), whatever the mapping."""
    from gan_probe.models.priors import MappedPrior
    from tests.conftest import Linear

    a = torch.randn(12, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    prior = MappedPrior(space="w", z_dim=5, std=2.0, mapper=lambda z: 2 * torch.tanh(z) + 0.5)
    gen = wrap(Linear(a), 5, prior=prior)
    s = torch.linalg.svdvals(a)
    eig = gan_probe.eigvecs(gen, n=3, top=2)
    torch.testing.assert_close(eig.eigenvalues, (s**2).expand(3, 5), rtol=1e-10, atol=1e-12)
    v = gan_probe.veff(gen, n=3, k=8, step=0.3)
    torch.testing.assert_close(v.delta0[:, None] * v.delta, 0.3 * s.expand(3, 5), rtol=1e-9, atol=1e-12)
    with pytest.raises(GanProbeError) as info:
        gan_probe.loglik(gen, n=2)
    assert info.value.param == "space"


def test_a_uniform_prior_report_says_why_the_sphere_does_not_apply(runner, tmp_path):
    from gan_probe.models.bundled import samples_dir

    report = invoke_json(runner, ["loglik", samples_dir() / "mnist-dcgan-nz32-uniform.safetensors", "--n", "2",
                                  "--out", tmp_path])  # fmt: skip
    assert "not rotation-invariant" in report["results"]["geometry_note"]
    assert report["results"]["summary"]["num_sphere"] == 0
