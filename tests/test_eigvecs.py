"""gan-probe eigvecs: eigen-decomposition vs eigh, perturbation magnitudes, invariances, CLI, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.analyses.common import generate
from gan_probe.analyses.eigvecs import EigvecsParams, run_eigvecs
from gan_probe.analyses.perturbation import default_step, perturb
from gan_probe.models import load_generator
from gan_probe.models.priors import Prior
from tests.conftest import dense_jacobian, invoke, invoke_json, wrap
from tests.test_eigen import dense_metric, eigh_descending


def test_matches_eigh_and_renders_the_right_latents(dcgan_gen):
    res = run_eigvecs(dcgan_gen, EigvecsParams(num=3, top=4, step=0.5, traversal_steps=3))
    lam_ref, vec_ref = eigh_descending(dense_metric(dcgan_gen, res.z))
    torch.testing.assert_close(res.eigenvalues, lam_ref, rtol=0, atol=1e-10 * float(lam_ref.max()))
    torch.testing.assert_close(res.eigenvectors, vec_ref, rtol=0, atol=1e-8)
    # second grid row is G(z + alpha v_i), the traversal's middle column is G(z)
    z_eig = res.z[:, None] + 0.5 * vec_ref[:, :, :4].transpose(1, 2)
    expected = generate(dcgan_gen, z_eig.reshape(-1, dcgan_gen.nz), 16).reshape(res.eigen_images.shape)
    torch.testing.assert_close(res.eigen_images, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.traversal_images[:, :, 1], res.originals[:, None].expand(-1, 4, -1, -1, -1))
    assert res.top == 4 and res.traversal_t.tolist() == [-0.5, 0.0, 0.5]


def test_linear_generator_changes_are_alpha_singular_values(linear_gen):
    gen, a = linear_gen
    res = run_eigvecs(gen, EigvecsParams(num=2, top=6, step=0.3))
    s = torch.linalg.svdvals(a)
    torch.testing.assert_close(res.change_eigen, (0.3 * s).expand(2, -1), rtol=1e-6, atol=0)
    torch.testing.assert_close(res.change_random, 0.3 * (res.random_directions @ a.T).norm(dim=-1), rtol=1e-6, atol=0)
    assert res.summary()["change_ratio_top1_median"] > 1


def test_batch_size_and_seed(mlp_gen):
    full = run_eigvecs(mlp_gen, EigvecsParams(num=5, batch_size=5))
    one = run_eigvecs(mlp_gen, EigvecsParams(num=5, batch_size=1, chunk_size=2))
    torch.testing.assert_close(one.eigenvalues, full.eigenvalues, rtol=1e-12, atol=0)
    torch.testing.assert_close(one.eigenvectors, full.eigenvectors, rtol=0, atol=1e-10)
    assert torch.equal(one.random_directions, full.random_directions)
    other = run_eigvecs(mlp_gen, EigvecsParams(num=5, seed=1))
    assert not torch.equal(other.z, full.z)


def test_step_defaults_and_uniform_box():
    assert default_step(Prior("uniform", low=-1.0, high=1.0)) == pytest.approx(0.8)
    assert default_step(Prior("normal", sigma=2.0)) == pytest.approx(1.6)
    prior = Prior("uniform")
    z = torch.tensor([[0.9, 0.0], [0.1, -0.2], [-1.5, 0.3]], dtype=torch.float64)
    kept, outside = perturb(prior, z, project=False)
    assert outside == 1 and torch.equal(kept, z)
    clamped, outside = perturb(prior, z + torch.tensor([0.2, 0.0], dtype=torch.float64), project=True)
    assert outside == 2 and float(clamped.abs().max()) <= 1.0


def test_uniform_prior_reports_box_exits(mlp_gen):
    gen = wrap(mlp_gen.module, mlp_gen.nz, prior=Prior("uniform"), output_range=(-1.0, 1.0))
    res = run_eigvecs(gen, EigvecsParams(num=2, top=3, traversal_steps=5))
    assert res.to_json()["outside_box"] == {"num_outside": res.outside_box, "num_perturbed": 2 * (3 + 3 + 3 * 5)}
    assert res.outside_box > 0
    assert run_eigvecs(mlp_gen, EigvecsParams(num=1, top=2)).to_json()["outside_box"] is None


def test_cli_end_to_end_and_reusable_npz(tiny_ckpt, tmp_path, runner):
    out = tmp_path / "eig"
    report = invoke_json(runner, ["eigvecs", tiny_ckpt, "--n", 3, "--top", 4, "--traversal-steps", 5, "--out", out])
    r = report["results"]
    assert r["num_trials"] == 3 and r["top"] == 4 and r["step"] == pytest.approx(0.8)
    trial = r["trials"][0]
    assert len(trial["eigenvalues"]) == 8 and trial["eigenvalues"] == sorted(trial["eigenvalues"], reverse=True)
    assert trial["condition"] == pytest.approx(trial["eigenvalues"][0] / trial["eigenvalues"][-1], rel=1e-9)
    assert 0 < trial["top_share"] <= 1 and 1 <= trial["participation_ratio"] <= 8 and 1 <= trial["effective_rank"] <= 8
    names = {p.name for p in out.iterdir()}
    expected = {"report.json", "eigvecs.npz", "spectra.png", "perturbations.png"}
    expected |= {f"{kind}_{t:02d}.png" for kind in ("trial", "traversal") for t in range(3)}
    assert names == expected
    cell = 2 * (32 + 2)  # image + padding, scaled 2x
    with Image.open(out / "trial_00.png") as img:
        assert img.size == (2 * 2 + 5 * cell, 2 * 2 + 2 * cell)
    with Image.open(out / "traversal_02.png") as img:
        assert img.size == (2 * 2 + 5 * cell, 2 * 2 + 4 * cell)
    with Image.open(out / "spectra.png") as img:
        assert img.size[0] > 300
    with np.load(out / "eigvecs.npz") as data:
        assert data["eigenvectors"].shape == (3, 8, 8) and data["z"].shape == (3, 8)
        v, lam = data["eigenvectors"], data["eigenvalues"]
        np.testing.assert_allclose(np.einsum("tki,tkj->tij", v, v), np.broadcast_to(np.eye(8), (3, 8, 8)), atol=1e-12)
        np.testing.assert_allclose(lam[0], trial["eigenvalues"], rtol=1e-12)
    # the saved latents feed straight back in
    again = invoke_json(
        runner, ["eigvecs", tiny_ckpt, "--latents", out / "eigvecs.npz", "--top", 2, "--out", tmp_path / "b"]
    )
    assert again["results"]["trials"][0]["eigenvalues"] == pytest.approx(trial["eigenvalues"], rel=1e-12)
    assert json.loads((out / "report.json").read_text())["results"]["num_trials"] == 3


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--top", "9"], "--top"),
        (["--top", "0"], "--top"),
        (["--step", "0"], "--step"),
        (["--step", "-1"], "--step"),
        (["--n", "0"], "--n"),
        (["--traversal-steps", "1"], "--traversal-steps"),
    ],
)
def test_cli_bad_input(extra, needle, tiny_ckpt, tmp_path, runner):
    out = tmp_path / "bad"
    result = invoke(runner, ["eigvecs", tiny_ckpt, "--n", 2, "--out", out, *extra])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("error:") and needle in message and "\n" not in message
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()


def test_cli_bundled_default(tmp_path, runner):
    out = tmp_path / "default"
    report = invoke_json(runner, ["eigvecs", "--n", 2, "--top", 4, "--traversal-steps", 3, "--out", out])
    # the bundled generator, loaded by the API with no path: each trial's spectrum is that of its dense metric
    gen = load_generator(None, dtype=torch.float64)
    with np.load(out / "eigvecs.npz") as data:
        z = torch.from_numpy(data["z"]).double()
    jac = dense_jacobian(gen.flat, z)
    ref = torch.linalg.eigvalsh(jac.transpose(1, 2) @ jac).flip(-1)
    assert len(report["results"]["trials"]) == len(ref) == 2
    for trial, lam in zip(report["results"]["trials"], ref):
        torch.testing.assert_close(
            torch.tensor(trial["eigenvalues"], dtype=torch.float64), lam, rtol=1e-5, atol=1e-5 * float(lam[0])
        )
    for name in ("spectra.png", "perturbations.png", "trial_01.png", "traversal_01.png"):
        with Image.open(out / name) as img:
            img.verify()
