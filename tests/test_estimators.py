"""Stochastic ln det estimators against exact spectra: synthetic (known eigenvalues) and seeded generators."""

from __future__ import annotations

import math

import pytest
import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import EstimatorParams, estimate_half_logdet
from gan_probe.spectral.estimators.chebyshev import chebyshev_logdet
from gan_probe.spectral.estimators.slq import slq_logdet
from gan_probe.spectral.estimators.synthetic import log_spaced_spectrum
from gan_probe.spectral.estimators.taylor import taylor_logdet
from gan_probe.spectral.exact import exact_spectrum
from tests.conftest import invoke, invoke_json


@pytest.fixture(autouse=True)
def _no_grad():
    """Values only here (gradients live in test_gradients.py): no autograd graphs to build."""
    with torch.no_grad():
        yield


def synthetic(nz: int, cond: float, seed: int = 0, lam_max: float = 1.0):
    """G(z) = A z with M = A^T A having eigenvalues log-spaced in [lam_max/cond, lam_max]: (fn, exact 1/2 ln det)."""
    a, lam, half = log_spaced_spectrum(nz, cond, seed=seed, lam_max=lam_max)
    return (lambda z: z @ a.T), half, lam


def streams(num: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(1000 + offset + i) for i in range(num)]


def repeated(nz: int, reps: int) -> torch.Tensor:
    """reps copies of one latent: with one generator per latent, reps independent estimates in one batched call."""
    return torch.zeros(reps, nz, dtype=torch.float64)


@pytest.mark.parametrize("cond", [10.0, 1e4])
def test_chebyshev_corrected_scale_term_matches_exact(cond):
    fn, ref, lam = synthetic(48, cond, lam_max=7.0)
    eps = float(lam.min()) / 1.5  # a true lower bound: the polynomial never extrapolates
    est = chebyshev_logdet(fn, repeated(48, 32), m=60, p=20, t=30, g=1.2, eps=eps, generator=streams(32))
    mean = float(est.half_logdet.mean())
    se = float(est.half_logdet.std() / math.sqrt(32))
    assert not est.bounds_violated.any()
    assert abs(mean - ref) < 4 * se + 0.02 * 48, (mean, ref, se)
    # the paper's printed return value n ln(a + b) + Gamma = Gamma drops n ln(mu + nu), which is far from zero here
    printed = 0.5 * float(est.extras["gamma"].mean())
    scale = 0.5 * float(est.extras["scale_term"].mean())
    assert abs(scale) > 10
    assert abs(printed - ref) > 0.5 * abs(scale)
    assert abs(printed + scale - mean) < 1e-9


def test_chebyshev_mean_converges_on_a_generator(mlp_gen):
    z = mlp_gen.prior.sample(1, mlp_gen.nz, generator=torch.Generator().manual_seed(5)).repeat(64, 1)
    ref = float(exact_spectrum(mlp_gen.flat, z[:1]).half_logdet[0])
    est = chebyshev_logdet(mlp_gen.flat, z, m=40, p=10, t=20, g=1.2, eps="auto", generator=streams(64))
    se = float(est.half_logdet.std() / 8)
    assert abs(float(est.half_logdet.mean()) - ref) < 4 * se + 0.05, (float(est.half_logdet.mean()), ref)


def test_chebyshev_reports_a_spectrum_leaving_its_interval():
    fn, ref, lam = synthetic(32, 1e6)  # lambda_min = 1e-6, far below the paper's eps = 0.1
    bad = chebyshev_logdet(fn, repeated(32, 4), m=30, p=10, t=20, g=1.2, eps=0.1, generator=streams(4))
    assert bad.bounds_violated.all()
    good = chebyshev_logdet(fn, repeated(32, 4), m=30, p=10, t=20, g=1.2, eps=0.5e-6, generator=streams(4))
    assert not good.bounds_violated.any()


@pytest.mark.parametrize("cond", [2.0, 1e4])
def test_taylor_mean_converges(cond):
    fn, ref, _ = synthetic(40, cond)
    est = taylor_logdet(fn, repeated(40, 32), m=60, p=10, t=30, g=1.05, generator=streams(32))
    mean = float(est.half_logdet.mean())
    se = float(est.half_logdet.std() / math.sqrt(32))
    if cond < 10:
        assert abs(mean - ref) < 4 * se + 0.01 * 40, (mean, ref)
    else:
        # truncated series: biased upwards on an ill-conditioned spectrum, never below (up to noise)
        assert mean > ref - 4 * se


@pytest.mark.parametrize(("cond", "steps"), [(10.0, 24), (1e4, 24), (1e7, 36)])
def test_slq_mean_converges_and_interval_covers(cond, steps):
    nz, reps = 48, 40
    fn, ref, _ = synthetic(nz, cond, seed=1)
    est = slq_logdet(fn, repeated(nz, reps), steps=steps, probes=5, generator=streams(reps))
    mean = float(est.half_logdet.mean())
    se = float(est.half_logdet.std() / math.sqrt(reps))
    assert abs(mean - ref) < 4 * se + 0.01 * nz, (mean, ref, se)
    covered = ((est.interval[:, 0] <= ref) & (ref <= est.interval[:, 1])).double().mean()
    assert covered >= 0.8, float(covered)
    assert est.num_matvecs == steps * 5


def test_slq_quadrature_bias_is_one_sided_and_in_the_interval():
    nz, reps = 64, 24
    fn, ref, _ = synthetic(nz, 1e7, seed=3)
    few = slq_logdet(fn, repeated(nz, reps), steps=10, probes=4, generator=streams(reps))
    # the Gauss rule overestimates v^T ln(M) v for every probe: far above the truth at 10 of 64 steps
    se = float(few.half_logdet.std() / math.sqrt(reps))
    assert float(few.half_logdet.mean()) - ref > 4 * se, (float(few.half_logdet.mean()), ref, se)
    bias = few.extras["quadrature_bias"]
    assert (bias > 0).all()
    # the bias estimate widens the interval below only
    assert torch.allclose(few.half_logdet - few.interval[:, 0] - bias, few.interval[:, 1] - few.half_logdet)
    # at steps = nz the k- and k/2-step rules differ only by what the first half missed; after breakdown none
    full = slq_logdet(fn, repeated(nz, 2), steps=nz, probes=2, generator=streams(2))
    assert (full.extras["quadrature_bias"] >= 0).all()


def test_slq_is_exact_when_steps_reach_nz():
    fn, ref, _ = synthetic(24, 1e7, seed=2)
    est = slq_logdet(fn, repeated(24, 3), steps=40, probes=2, generator=streams(3))
    # the Krylov space is the whole space: quadrature exact, only Hutchinson noise on v^T ln M v remains
    assert torch.allclose(est.extras["ritz_min"], torch.full((3,), 1e-7, dtype=torch.float64), rtol=1e-5)
    assert torch.isfinite(est.half_logdet).all()


def test_slq_on_generators_against_exact(mlp_gen, dcgan_gen):
    for gen in (mlp_gen, dcgan_gen):
        z = gen.prior.sample(1, gen.nz, generator=torch.Generator().manual_seed(3)).repeat(16, 1)
        ref = float(exact_spectrum(gen.flat, z[:1]).half_logdet[0])
        est = slq_logdet(gen.flat, z, steps=gen.nz, probes=4, generator=streams(16))
        se = float(est.half_logdet.std() / 4)
        assert abs(float(est.half_logdet.mean()) - ref) < 4 * se + 1e-6


def test_same_seed_same_estimate_and_batching_invariance(mlp_gen):
    z = mlp_gen.prior.sample(6, mlp_gen.nz, generator=torch.Generator().manual_seed(9))
    params = EstimatorParams(steps=4, probes=3)
    whole = estimate_half_logdet(mlp_gen.flat, z, "slq", params, streams(6)).half_logdet
    again = estimate_half_logdet(mlp_gen.flat, z, "slq", params, streams(6)).half_logdet
    split = torch.cat(
        [
            estimate_half_logdet(mlp_gen.flat, z[:2], "slq", params, streams(2)).half_logdet,
            estimate_half_logdet(mlp_gen.flat, z[2:], "slq", params, streams(4, offset=2)).half_logdet,
        ]
    )
    assert torch.equal(whole, again)
    assert torch.allclose(whole, split, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("params", "flag"),
    [
        (EstimatorParams(p=0), "--p"),
        (EstimatorParams(m=0), "--m"),
        (EstimatorParams(t=0), "--t"),
        (EstimatorParams(g=0.5), "--g"),
        (EstimatorParams(eps=0.0), "--eps"),
        (EstimatorParams(eps="sometimes"), "--eps"),
        (EstimatorParams(steps=0), "--steps"),
        (EstimatorParams(probes=1), "--probes"),
    ],
)
def test_bad_estimator_parameters_name_the_flag(params, flag):
    with pytest.raises(GanProbeError, match=flag):
        params.validate()


@pytest.mark.parametrize("method", ["chebyshev", "taylor", "slq"])
def test_loglik_cli_check_reports_errors(runner, tiny_ckpt, tmp_path, method):
    report = invoke_json(
        runner,
        [
            "loglik",
            tiny_ckpt,
            "--n",
            "3",
            "--method",
            method,
            "--check",
            "--dtype",
            "float64",
            "--steps",
            "8",
            "--probes",
            "3",
            "--m",
            "12",
            "--p",
            "6",
            "--t",
            "10",
            "--eps",
            "auto",
            "--out",
            tmp_path / method,
        ],
    )
    res = report["results"]
    assert res["method"] == method
    check = res["summary"]["check"]
    assert check["median_abs_error_nats_per_dim"] is not None
    for row in res["samples"]:
        assert math.isclose(row["error_nats"], row["exact_half_logdet"] - row["half_logdet"], abs_tol=1e-9)
        assert math.isclose(row["error_nats_per_dim"], row["error_nats"] / 8, rel_tol=1e-9)
        assert row["lambda_min"] is not None
    if method == "slq":
        assert "interval_coverage" in check
        assert all(len(r["half_logdet_interval"]) == 2 for r in res["samples"])
    else:
        assert all("bounds_violated" in r for r in res["samples"])


def test_loglik_batch_size_does_not_change_estimates(runner, tiny_ckpt, tmp_path):
    args = ["loglik", tiny_ckpt, "--n", "4", "--method", "slq", "--steps", "5", "--probes", "3", "--dtype", "float64"]
    a = invoke_json(runner, [*args, "--batch-size", "4", "--out", tmp_path / "a"])["results"]["samples"]
    b = invoke_json(runner, [*args, "--batch-size", "1", "--out", tmp_path / "b"])["results"]["samples"]
    assert [r["half_logdet"] for r in a] == pytest.approx([r["half_logdet"] for r in b], rel=1e-9)


def test_loglik_auto_picks_exact_for_small_nz(runner, tiny_ckpt, tmp_path):
    report = invoke_json(runner, ["loglik", tiny_ckpt, "--n", "2", "--method", "auto", "--out", tmp_path])
    assert report["results"]["method"] == "exact"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--method", "magic"], "--method"),
        (["--method", "chebyshev", "--eps", "-1"], "--eps"),
        (["--method", "chebyshev", "--p", "0"], "--p"),
        (["--method", "slq", "--steps", "0"], "--steps"),
        (["--method", "taylor", "--g", "0.9"], "--g"),
    ],
)
def test_loglik_cli_bad_estimator_input(runner, tiny_ckpt, tmp_path, args, flag):
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", *args, "--out", tmp_path / "x"])
    assert result.exit_code == 1
    assert flag in result.stderr
    assert not (tmp_path / "x").exists()
