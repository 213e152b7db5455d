"""The data-induced prior: the Gaussian fits, the PGAN, G o h, and ``gan-probe prior`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import multivariate_normal

import gan_probe
from gan_probe.analyses.pag import pag_score
from gan_probe.analyses.prior import (
    PganParams,
    fit_diagonal_gaussian,
    fit_full_gaussian,
    split_codes,
    train_pgan,
)
from gan_probe.analyses.two_sample import two_sample_test
from gan_probe.errors import CheckpointError, DataError, GanProbeError
from gan_probe.models.prior_net import LoadedPriorNet, PriorNet, compose_with_prior, load_prior_net, save_prior_net
from tests.conftest import Linear, invoke, invoke_json


def _gaussian_codes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    sigma = a @ a.T + 0.5 * torch.eye(4, dtype=torch.float64)
    z = mu + torch.randn(n, 4, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    return z, mu, sigma


def test_full_gaussian_recovers_a_known_gaussian_and_its_log_density_is_scipys():
    z, mu, sigma = _gaussian_codes(20_000)
    full = fit_full_gaussian(z)
    # the sample mean's standard error is sqrt(Sigma_ii / n); a covariance entry's about sqrt((S_ii S_jj + S_ij^2) / n)
    se_mean = (sigma.diagonal() / z.shape[0]).sqrt()
    assert ((full.mean - mu).abs() < 5 * se_mean).all()
    se_cov = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma.square()) / z.shape[0]).sqrt()
    assert ((full.cov - sigma).abs() < 5 * se_cov).all()
    held, _, _ = _gaussian_codes(50, seed=1)
    ref = multivariate_normal(full.mean.numpy(), full.cov.numpy()).logpdf(held.numpy())
    np.testing.assert_allclose(full.log_prob(held).numpy(), ref, rtol=1e-12, atol=1e-10)
    # its draws have its moments, and whitening maps them to N(0, I)
    draws = full.sample(20_000, generator=torch.Generator().manual_seed(2))
    white = full.whiten(draws)
    assert white.mean(0).abs().max() < 0.05 and (torch.cov(white.T) - torch.eye(4)).abs().max() < 0.05


def test_diagonal_gaussian_is_the_one_pag_compares_with():
    z, _, _ = _gaussian_codes(500)
    diag = fit_diagonal_gaussian(z, 0.0)
    nu2 = torch.linalg.eigvalsh(diag.cov).flip(0)
    torch.testing.assert_close(nu2, pag_score(z, 1.0).nu.square(), rtol=1e-10, atol=1e-12)
    assert (diag.mean == 0).all()
    # whitened by it, its own codes have unit second moments on every axis: PAG 0
    assert pag_score(diag.whiten(z), 1.0).pag == pytest.approx(0.0, abs=1e-9)
    ref = multivariate_normal(np.zeros(4), diag.cov.numpy()).logpdf(z[:5].numpy())
    np.testing.assert_allclose(diag.log_prob(z[:5]).numpy(), ref, rtol=1e-12)


def _mixture(n: int, gen: torch.Generator) -> torch.Tensor:
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    centre = torch.stack([3 * sign, torch.zeros(n, dtype=torch.float64)], 1)
    return centre + 0.3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def test_pgan_puts_mass_on_both_modes_of_a_mixture():
    gen = torch.Generator().manual_seed(0)
    small = (32, 32, 32)
    params = PganParams(steps=1200, widths=small, critic_widths=small, lr=1e-3)
    h = train_pgan(_mixture(1000, gen), params, seed=0).h
    with torch.no_grad():
        draws = h(torch.randn(300, 2, generator=gen)).double()
    assert 0.3 < float((draws[:, 0] > 0).double().mean()) < 0.7
    assert two_sample_test(_mixture(300, gen), draws, num_permutations=200).p_value > 0.01
    standard = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    assert two_sample_test(standard, draws, num_permutations=200).p_value < 0.01


def test_pgan_training_is_seeded_and_h_round_trips_through_its_file(tmp_path):
    codes, _, _ = _gaussian_codes(200)
    params = PganParams(steps=20, dim=6, widths=(8, 8, 8), critic_widths=(8, 8, 8))
    first, again = train_pgan(codes, params, seed=3), train_pgan(codes, params, seed=3)
    other = train_pgan(codes, params, seed=4)
    assert torch.equal(first.d_loss, again.d_loss) and torch.equal(first.h.net[0].weight, again.h.net[0].weight)
    assert not torch.equal(first.h.net[0].weight, other.h.net[0].weight)
    path = tmp_path / "h.safetensors"
    save_prior_net(path, first.h, fitted={"generator": {"sha256": "ab" * 32}, "seed": 3}, provenance="test")
    loaded = load_prior_net(path)
    assert (loaded.dim, loaded.nz, loaded.generator_sha256) == (6, 4, "ab" * 32)
    z = torch.randn(5, 6)
    assert torch.equal(loaded.module(z), first.h(z))


def test_composition_loglik_is_the_dense_formula_of_the_product_jacobian(linear_gen):
    """ln Q(G(h(z'))) = ln N(z'; 0, I) - 1/2 ln det (A_G A_h)^T (A_G A_h) for linear G and h."""
    gen, a_g = linear_gen
    a_h = torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    composed = compose_with_prior(gen, LoadedPriorNet(Linear(a_h), dim=6, nz=6))
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    j = a_g @ a_h
    ref = -0.5 * (z * z).sum(1) - 3 * math.log(2 * math.pi) - 0.5 * torch.logdet(j.T @ j)
    result = gan_probe.loglik(composed, z)
    torch.testing.assert_close(result.loglik, ref, rtol=1e-10, atol=1e-10)


def test_identity_prior_reproduces_the_generators_figures(mlp_gen):
    composed = compose_with_prior(mlp_gen, LoadedPriorNet(torch.nn.Identity(), dim=5, nz=5))
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(gan_probe.loglik(composed, z).loglik, gan_probe.loglik(mlp_gen, z).loglik)
    eig, eig_plain = gan_probe.eigvecs(composed, z, top=2), gan_probe.eigvecs(mlp_gen, z, top=2)
    assert torch.equal(eig.eigenvalues, eig_plain.eigenvalues)
    assert torch.equal(gan_probe.veff(composed, z, k=4).veff, gan_probe.veff(mlp_gen, z, k=4).veff)


def test_composition_refuses_a_wrong_width_and_notes_another_generator(mlp_gen):
    with pytest.raises(CheckpointError, match=r"maps to nz = 4 but the generator has nz = 5"):
        compose_with_prior(mlp_gen, LoadedPriorNet(PriorNet(4, 4, (8, 8, 8)), dim=4, nz=4))
    mlp_gen.sha256 = "cd" * 32
    h = LoadedPriorNet(PriorNet(5, 5, (8, 8, 8)), dim=5, nz=5, fitted={"generator": {"sha256": "ab" * 32}})
    composed = compose_with_prior(mlp_gen, h)
    assert any("ab" * 32 in n and "cd" * 32 in n for n in composed.notes)
    assert composed.nz == 5 and composed.output_shape == mlp_gen.output_shape


def test_split_codes_is_seeded_and_refuses_too_few():
    held = split_codes(100, 0.2, 4, seed=0)
    assert held.numel() == 20 and torch.equal(held, split_codes(100, 0.2, 4, seed=0))
    assert not torch.equal(held, split_codes(100, 0.2, 4, seed=1))
    with pytest.raises(DataError, match="nz \\+ 1 = 33"):
        split_codes(30, 0.2, 32, seed=0)


# --------------------------------------------------------------------------- command line


def _codes_file(tmp_path: Path, n: int = 60, nz: int = 8, seed: int = 0) -> Path:
    path = tmp_path / "codes.npz"
    np.savez(path, z=np.random.default_rng(seed).normal(size=(n, nz)))
    return path


SMALL = ["--steps", "15", "--widths", "8,8,8", "--critic-widths", "8,8,8", "--permutations", "20"]
SMALL += ["--reversal-steps", "3", "--prior-samples", "50", "--top", "5"]


def test_cli_prior_is_reproducible_bit_for_bit(runner, tiny_ckpt, tmp_path):
    codes = _codes_file(tmp_path)
    reports, blobs = [], []
    for k in range(2):
        out = tmp_path / f"run{k}"
        reports.append(invoke_json(runner, ["prior", tiny_ckpt, "--codes", codes, *SMALL, "--out", out]))
        blobs.append((out / "prior.safetensors").read_bytes())
    assert blobs[0] == blobs[1]
    strip = [{k: v for k, v in r["results"].items() if k != "timings"} for r in reports]
    assert json.dumps(strip[0], sort_keys=True) == json.dumps(strip[1], sort_keys=True)
    other = invoke_json(runner, ["prior", tiny_ckpt, "--codes", codes, *SMALL, "--seed", "1", "--out", tmp_path / "s1"])
    assert other["results"]["priors"]["pgan"] != strip[0]["priors"]["pgan"]


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: np.savez(p, z=np.where(np.eye(60, 8) > 0, np.nan, 0.5)), [], "NaN"),
        (lambda p: np.savez(p, z=np.zeros((60, 5))), [], "width 5 but the generator has nz = 8"),
        (lambda p: np.savez(p, z=np.random.default_rng(0).normal(size=(60, 8))), ["--heldout", "1.5"], "(0, 1)"),
        (lambda p: np.savez(p, z=np.random.default_rng(0).normal(size=(10, 8))), [], "nz + 1 = 9"),
        (lambda p: np.savez(p, z=np.random.default_rng(0).normal(size=(60, 8))), ["--dim", "4"], "at least"),
        (lambda p: np.savez(p, z=np.random.default_rng(0).normal(size=(60, 8))), ["--widths", "8,8"], "three"),
    ],
    ids=["nan", "width", "heldout", "too-few", "dim", "widths"],
)
def test_cli_prior_bad_inputs_are_one_line_errors(runner, tiny_ckpt, tmp_path, make, extra, message):
    path = tmp_path / "codes.npz"
    make(path)
    result = invoke(runner, ["prior", tiny_ckpt, "--codes", path, *SMALL, *extra, "--out", tmp_path / "o"])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_prior_refuses_data_and_codes_together(runner, tiny_ckpt, tmp_path):
    codes = _codes_file(tmp_path)
    result = invoke(runner, ["prior", tiny_ckpt, "--codes", codes, "--data", codes, *SMALL, "--out", tmp_path / "o"])
    assert result.exit_code == 1 and "not both" in result.stderr


def _open_png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_cli_prior_end_to_end_on_bundled_checkpoint(runner, tmp_path):
    out = tmp_path / "prior"
    report = invoke_json(
        runner,
        ["prior", "--limit", "60", "--batch-size", "60", "--reversal-optimizer", "adam", *SMALL, "--out", out],
    )
    res = report["results"]
    assert report["command"] == "prior" and report["checkpoint"]["nz"] == 32
    assert (res["num_codes"], res["num_heldout"], res["num_fit"]) == (60, 12, 48)
    assert res["data"]["kind"] == "bundled" and res["reversal"]["loss_last"] < res["reversal"]["loss_first"]
    assert list(res["priors"]) == ["generator", "diagonal", "full", "pgan"]
    for name, prior in res["priors"].items():
        for stat in ("energy", "mmd"):
            test = prior["two_sample"][stat]
            assert test["num_x"] == 12 and test["num_y"] == 12 and 0 < test["p_value"] <= 1
        assert prior["mean_error"] >= 0 and prior["cov_error"] > 0
        assert (prior["heldout_log_density"] is None) == (name == "pgan")
        assert prior["pag"] is None  # 12 held-out codes span fewer than nz = 32 axes: infinite, null in JSON
    assert "median heuristic" in res["statistics"]["mmd"]
    assert res["pgan"]["dim"] == 32 and res["pgan"]["steps"] == 15
    names = {Path(f).name for f in report["files"]}
    assert names == {
        "report.json",
        "prior.safetensors",
        "latents.npz",
        "prior_training.npz",
        "prior_training.png",
        "samples_prior.png",
        "codes_pca.png",
        "disagreement.png",
        "disagreement_pgan.png",
    }
    assert _open_png(out / "samples_prior.png").size == (2 * (2 + 8 * 34), 2 * (2 + 8 * 34))  # 4 row pairs of 8
    assert _open_png(out / "disagreement_pgan.png").size == (2 * (2 + 10 * 34), 2 * (2 + 34))  # 5 in a row of 10
    for name in ("codes_pca.png", "prior_training.png", "disagreement.png"):
        assert _open_png(out / name).size[0] > 300
    with np.load(out / "prior_training.npz") as curve:
        assert curve["d_loss"].shape == (15,) and np.isfinite(curve["g_loss"]).all()
    with np.load(out / "latents.npz") as codes:
        assert codes["z"].shape == (60, 32) and codes["heldout"].shape == (12,)
    h = load_prior_net(out / "prior.safetensors")
    gen = gan_probe.load_generator(device="cpu", dtype="float32")
    assert h.generator_sha256 == gen.sha256 and h.fitted["steps"] == 15 and h.fitted["seed"] == 0
    composed = compose_with_prior(gen, h)
    assert composed(torch.zeros(2, 32)).shape == (2, 1, 32, 32)
    # the saved codes (pag's latents.npz format, key z) are what --codes reads: the same split, the same codes
    again = invoke_json(runner, ["prior", "--codes", out / "latents.npz", *SMALL, "--out", tmp_path / "again"])
    assert again["results"]["num_codes"] == 60 and again["results"]["data"]["kind"] == "codes"
    gen_again = again["results"]["priors"]["generator"]
    assert gen_again["heldout_log_density"] == res["priors"]["generator"]["heldout_log_density"]


def test_api_prior_from_codes_tensor(tiny_ckpt):
    gen = gan_probe.load_generator(tiny_ckpt, device="cpu", dtype="float32")
    codes = torch.from_numpy(np.random.default_rng(0).normal(size=(60, 8)))
    result = gan_probe.prior(
        gen, codes=codes, steps=5, widths=(8, 8, 8), critic_widths=(8, 8, 8), permutations=10, prior_samples=20, top=4
    )
    assert result.reversal is None and result.codes_source == "in-memory codes"
    assert [c.name for c in result.comparisons] == ["generator", "diagonal", "full", "pgan"]
    # the codes are N(0, I): the generator's prior fits them (p not small), its log-density is scipy's
    gen_cmp = result.comparison("generator")
    held = codes[result.heldout_index]
    ref = multivariate_normal(np.zeros(8), np.eye(8)).logpdf(held.numpy()).mean()
    assert gen_cmp.heldout_log_density == pytest.approx(ref, rel=1e-12)
    with pytest.raises(GanProbeError, match="not both"):
        gan_probe.prior(gen, codes, codes=codes)
