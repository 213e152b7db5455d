"""Generator reversal, the PAG score and ``gan-probe pag`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.analyses import reversal as reversal_module
from gan_probe.analyses.common import load_latents
from gan_probe.analyses.pag import disagreement_samples, pag_score, prior_reference
from gan_probe.analyses.reversal import ReversalParams, invert_generator
from gan_probe.errors import GanProbeError
from gan_probe.models import Prior
from tests.conftest import invoke, invoke_json, wrap


class TanhLayer(torch.nn.Module):
    """G(z) = tanh(A z) with A = 3 Q, Q orthonormal columns: injective and well conditioned near 0."""

    def __init__(self, nz: int, n_out: int, seed: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(
            torch.randn(n_out, nz, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        )
        self.a = torch.nn.Parameter(3.0 * q)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.a.T)


@pytest.fixture
def tanh_gen():
    return wrap(TanhLayer(5, 16, seed=7), 5, output_range=(-1.0, 1.0))


def numpy_pag(nu2: np.ndarray, sigma: float) -> float:
    r = nu2 / sigma**2
    return float(0.5 * np.sum(r - np.log(r) - 1.0))


# --------------------------------------------------------------------------- reversal


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reversal_recovers_latents_of_generated_images(tanh_gen, optimizer):
    z_true = 0.3 * torch.randn(40, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = tanh_gen(z_true)
    steps = 300 if optimizer == "sgd" else 400
    params = ReversalParams(steps=steps, lr=0.05, optimizer=optimizer, batch_size=16)
    res = invert_generator(tanh_gen, x, params)
    assert res.num_done == 40 and not res.interrupted
    assert res.mse.max() < 1e-10
    torch.testing.assert_close(res.z, z_true, atol=1e-4, rtol=0)
    # the loss history is the mean per-image loss, and it fell by orders of magnitude
    assert res.loss_history.shape == (steps,)
    assert res.loss_history[-1] < 1e-6 * res.loss_history[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reversal_does_not_depend_on_batch_size(dcgan_gen, optimizer):
    x = torch.tanh(torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    results = [
        invert_generator(dcgan_gen, x, ReversalParams(steps=8, lr=0.01, optimizer=optimizer, batch_size=b))
        for b in (1, 3, 7)
    ]
    for other in results[1:]:
        torch.testing.assert_close(other.z, results[0].z, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(other.mse, results[0].mse, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(other.loss_history, results[0].loss_history, atol=1e-10, rtol=1e-10)
    # the same seed gives the same latents; another seed does not
    again = invert_generator(dcgan_gen, x, ReversalParams(steps=8, lr=0.01, optimizer=optimizer, batch_size=3))
    assert torch.equal(again.z, results[1].z)
    other_seed = invert_generator(dcgan_gen, x, ReversalParams(steps=8, lr=0.01, optimizer=optimizer, seed=1))
    assert not torch.equal(other_seed.z, results[1].z)


def test_reversal_ctrl_c_keeps_finished_chunks(tanh_gen):
    x = tanh_gen(0.3 * torch.randn(10, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    steps, calls = 5, {"n": 0}

    class Interrupting:
        def task(self, description, total):
            def advance(n):
                calls["n"] += 1
                if calls["n"] == 2 * steps + 2:  # in the third chunk
                    raise KeyboardInterrupt

            return advance

    res = invert_generator(tanh_gen, x, ReversalParams(steps=steps, batch_size=4), progress=Interrupting())
    assert res.interrupted and res.num_done == 8 and res.num_images == 10
    full = invert_generator(tanh_gen, x, ReversalParams(steps=steps, batch_size=4))
    torch.testing.assert_close(res.z, full.z[:8], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": math.inf}, "lr"),
    ],
)
def test_reversal_rejects_bad_parameters(tanh_gen, kwargs, param):
    """Library errors name the parameter (the CLI turns it into its flag), not a flag."""
    with pytest.raises(GanProbeError) as info:
        invert_generator(tanh_gen, torch.zeros(2, 16, dtype=torch.float64), ReversalParams(**kwargs))
    assert info.value.param == param and "--" not in str(info.value)


def test_reversal_divergence_is_a_clear_error(linear_gen):
    gen, a = linear_gen  # lambda_max(A^T A) is about 45, so SGD with lr 1 diverges
    x = gen(torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    with pytest.raises(GanProbeError, match="diverged.*lower the learning rate"):
        invert_generator(gen, x, ReversalParams(steps=2000, lr=1.0))


# --------------------------------------------------------------------------- the score


def test_pag_matches_numpy_formula_and_literal_variant():
    rng = np.random.default_rng(0)
    n, nz, sigma = 60, 6, 1.7
    z = rng.normal(size=(n, nz)) @ rng.normal(size=(nz, nz)) + 0.3  # correlated, off-centre
    score = pag_score(torch.from_numpy(z), sigma)
    nu2 = np.sort(np.linalg.eigvalsh(z.T @ z / n))[::-1]
    assert score.pag == pytest.approx(numpy_pag(nu2, sigma), rel=1e-10)
    np.testing.assert_allclose(score.nu.numpy(), np.sqrt(nu2), rtol=1e-10)
    s = np.linalg.svd(z, compute_uv=False)
    assert score.pag_paper_literal == pytest.approx(numpy_pag(s**2, sigma), rel=1e-10)
    np.testing.assert_allclose(score.singular_values.numpy(), s, rtol=1e-10)
    # KL(N(0, diag nu^2) || N(0, sigma^2 I)) from the general Gaussian KL formula (scipy-free closed form)
    cov_p, cov_q = np.diag(nu2), sigma**2 * np.eye(nz)
    kl = 0.5 * (
        np.trace(np.linalg.solve(cov_q, cov_p)) - nz + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
    )
    assert score.pag == pytest.approx(kl, rel=1e-10)


def test_pag_of_prior_latents_is_near_zero_and_grows_with_scale():
    nz, sigma = 8, 2.0
    z = sigma * torch.randn(20000, nz, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    score = pag_score(z, sigma)
    assert 0 <= score.pag < 0.02
    sum_r = float((score.nu / sigma).square().sum())
    values = []
    for c in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0):
        v = pag_score(c * z, sigma).pag
        # exact for these latents: each nu_i scales by c
        assert v == pytest.approx(score.pag + 0.5 * (c**2 - 1) * sum_r - nz * math.log(c), rel=1e-10)
        # and close to the population value nz/2 (c^2 - ln c^2 - 1)
        assert v == pytest.approx(0.5 * nz * (c**2 - math.log(c**2) - 1), rel=0.02, abs=0.02)
        values.append(v)
    assert values[0] > values[1] > values[2] < values[3] < values[4] < values[5]


def test_pag_uniform_prior_uses_the_moment_matched_normal():
    prior = Prior("uniform", low=0.0, high=3.0)
    center, sigma, text = prior_reference(prior)
    assert center == 1.5 and sigma == pytest.approx(3.0 / math.sqrt(12.0))
    assert "moment-matched" in text and "(high - low)^2 / 12" in text
    z = prior.sample(20000, 6, generator=torch.Generator().manual_seed(0))
    assert pag_score(z, sigma, center=center).pag < 0.02
    assert pag_score(z, sigma, center=0.0).pag > 1.0  # uncentred, the box would look far off


def test_pag_with_fewer_latents_than_nz_is_infinite():
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = pag_score(z, 1.0)
    assert score.rank_deficient and math.isinf(score.pag) and math.isinf(score.pag_paper_literal)
    assert score.nu.shape == (5,) and (score.nu[3:] == 0).all()


def test_disagreement_samples_are_the_farthest_prior_draws(tanh_gen):
    z_hat = 0.5 + 0.1 * torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dis = disagreement_samples(tanh_gen, z_hat, num_prior_samples=200, num_top=20, seed=3, batch_size=16)
    zp = tanh_gen.prior.sample(200, 5, generator=torch.Generator().manual_seed(3))
    brute = torch.cdist(zp, z_hat).square().mean(1)
    torch.testing.assert_close(dis.all_distances, brute, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dis.index, torch.argsort(brute, descending=True)[:20])
    assert (dis.distance[:-1] >= dis.distance[1:]).all()
    torch.testing.assert_close(dis.images, tanh_gen(zp[dis.index]).float())


# --------------------------------------------------------------------------- CLI


def _open_png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_cli_pag_end_to_end_on_bundled_checkpoint(runner, tmp_path):
    out = tmp_path / "pag"
    report = invoke_json(
        runner, ["pag", "--limit", "40", "--steps", "30", "--batch-size", "40", "--optimizer", "adam", "--out", out]
    )
    res = report["results"]
    assert report["command"] == "pag" and report["checkpoint"]["nz"] == 32
    assert res["num_images"] == 40 and res["num_recovered"] == 40 and res["interrupted"] is False
    assert res["data"]["kind"] == "bundled" and res["data"]["raw"]["dtype"] == "uint8"
    assert any("0..255" in step and "[-1, 1]" in step for step in res["data"]["conversion"])
    assert len(res["nu"]) == 32 and res["nu"] == sorted(res["nu"], reverse=True)
    assert res["sigma"] == 1.0 and "N(0, 1^2 I)" in res["reference"]
    assert 0 < res["pag"] < res["pag_paper_literal"]
    nu2 = np.square(res["nu"])
    assert res["pag"] == pytest.approx(numpy_pag(nu2, 1.0), rel=1e-9)
    rec = res["reconstruction"]
    assert rec["psnr_peak"] == 2.0 and rec["loss_last"] < rec["loss_first"]
    assert len(res["per_image"]) == 40 and {"index", "mse", "psnr", "label"} <= set(res["per_image"][0])
    assert rec["mse"]["mean"] == pytest.approx(np.mean([r["mse"] for r in res["per_image"]]))
    assert len(res["disagreement"]["top_index"]) == 20
    names = {Path(f).name for f in report["files"]}
    assert names == {
        "report.json",
        "latents.npz",
        "reconstructions.png",
        "disagreement.png",
        "agreement.png",
        "pag.png",
    }
    recs = _open_png(out / "reconstructions.png")
    assert recs.mode == "L" and recs.size == (2 * (2 + 8 * 34), 2 * (2 + 8 * 34))  # 4 row pairs of 8, 32x32, pad 2
    assert _open_png(out / "disagreement.png").size == (2 * (2 + 10 * 34), 2 * (2 + 2 * 34))
    assert _open_png(out / "pag.png").size[0] > 400
    assert json.loads((out / "report.json").read_text())["results"]["pag"] == res["pag"]
    with np.load(out / "latents.npz") as z:
        z_saved = z["z"]
    assert z_saved.shape == (40, 32) and z_saved.dtype == np.float64
    assert res["pag"] == pytest.approx(pag_score(torch.from_numpy(z_saved), 1.0).pag, rel=1e-12)
    # the recovered latents are what `loglik --latents` reads (its CLI round trip is in the slow test)
    torch.testing.assert_close(load_latents(out / "latents.npz", 32), torch.from_numpy(z_saved))


def test_cli_pag_gate_and_table(runner, tiny_ckpt, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8))
    args = ["pag", tiny_ckpt, "--data", data, "--steps", "3", "--prior-samples", "50", "--top", "5"]
    ok = invoke(runner, [*args, "--min", "0", "--out", tmp_path / "ok"])
    assert ok.exit_code == 0, ok.output
    assert "PAG" in ok.stdout and "paper-literal" in ok.stdout
    failed = invoke(runner, [*args, "--max", "1e-6", "--json", "--out", tmp_path / "gate"])
    assert failed.exit_code == 3
    report = json.loads(failed.stdout)
    assert report["gate"] == {
        "name": "PAG",
        "value": report["results"]["pag"],
        "min": None,
        "max": 1e-6,
        "passed": False,
    }
    assert "above --max" in failed.stderr
    assert (tmp_path / "gate" / "latents.npz").is_file()  # a failed gate still writes the report and files


def test_cli_pag_ctrl_c_writes_latents_so_far(runner, tiny_ckpt, tmp_path, monkeypatch):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(10, 1, 32, 32), dtype=np.uint8))
    real, calls = reversal_module._invert_chunk, {"n": 0}

    def interrupt_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reversal_module, "_invert_chunk", interrupt_second_chunk)
    out = tmp_path / "int"
    result = invoke(
        runner, ["pag", tiny_ckpt, "--data", data, "--steps", "2", "--batch-size", "4", "--json", "--out", out]
    )
    assert result.exit_code == 130
    report = json.loads(result.stdout)
    assert report["interrupted"] is True and report["results"]["num_recovered"] == 4
    assert report["results"]["pag"] is None  # 4 latents cannot span nz = 8 axes: infinite, reported as null
    with np.load(out / "latents.npz") as z:
        assert z["z"].shape == (4, 8)
    assert "interrupted" in result.stderr


@pytest.mark.slow
def test_cli_pag_subprocess_on_bundled_checkpoint(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    proc = subprocess.run(
        [sys.executable, "-m", "gan_probe", "pag", "--limit", "64", "--steps", "100", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert math.isfinite(report["results"]["pag"]) and report["results"]["num_recovered"] == 64
    _open_png(tmp_path / "reconstructions.png")
    ll = subprocess.run(
        [sys.executable, "-m", "gan_probe", "loglik", "--latents", str(tmp_path / "latents.npz"), "--json"]
        + ["--out", str(tmp_path / "ll")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    assert ll.returncode == 0, ll.stderr
    assert json.loads(ll.stdout)["results"]["summary"]["num_samples"] == 64
