"""Spread f-divergences against the closed forms of a linear generator G(z) = A z + b, z ~ N(0, I).

q_s = N(b, C), C = A A^T + sigma^2 I; with A = U diag(d) (orthonormal U) the posterior of z given y is
N(Sigma A^T (y - b) / sigma^2, Sigma), Sigma = diag(sigma^2 / (sigma^2 + d^2)): diagonal, so the encoder
family holds it and every bound is tight.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.analyses.common import seeded_generator
from gan_probe.analyses.divergence import (
    DivergenceParams,
    ais_log_q,
    data_side_terms,
    fit_encoder,
    log_spread_data_density,
    model_side_terms,
    pilot_step_size,
    run_divergence,
)
from gan_probe.errors import GanProbeError
from gan_probe.report.files import dumps_strict
from tests.conftest import invoke, invoke_json, wrap


class Affine(torch.nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())
        self.b = torch.nn.Parameter(b.clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T + self.b


def affine_setup(dim: int = 6, nz: int = 2, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, nz, generator=g, dtype=torch.float64))
    d = scale * torch.linspace(1.5, 0.7, nz, dtype=torch.float64)
    a = u * d
    b = 0.3 * torch.randn(dim, generator=g, dtype=torch.float64)
    return wrap(Affine(a, b), nz), a, b, d


def exact_posterior(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, sigma: float):
    var = sigma**2 / (sigma**2 + d.square())

    def encoder(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (y.double() - b) @ a * (var / sigma**2)
        return mean, 0.5 * torch.log(var).expand(y.shape[0], -1)

    return encoder


def log_qs(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    cov = a @ a.T + sigma**2 * torch.eye(a.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(y)


def test_log_spread_data_density_matches_direct_sum_for_any_chunk():
    g = torch.Generator().manual_seed(1)
    data, y = torch.randn(37, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    sigma = 0.3
    direct = torch.stack(
        [torch.logsumexp(torch.distributions.Normal(data, sigma).log_prob(yi).sum(1), 0) - math.log(37) for yi in y]
    )
    for chunk in (1, 5, 37, 100):
        torch.testing.assert_close(log_spread_data_density(y, data, sigma, chunk=chunk), direct, rtol=1e-12, atol=1e-10)


def test_exact_posterior_makes_every_bound_exact():
    gen, a, b, d = affine_setup()
    sigma = 0.4
    g = seeded_generator(3)
    data = b + torch.randn(30, 6, generator=g, dtype=torch.float64)
    enc = exact_posterior(a, b, d, sigma)
    y = data[:20] + sigma * torch.randn(20, 6, generator=g, dtype=torch.float64)
    lps = log_spread_data_density(y, data, sigma)
    fwd = data_side_terms(gen, enc, y, lps, sigma, num_draws=8, seed=0, batch_size=7)
    ref = lps - log_qs(y, a, b, sigma)
    # with the posterior every draw's log weight is ln q_s(y): the terms are exact point by point
    torch.testing.assert_close(fwd.joint, ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(fwd.iw, ref, rtol=0, atol=1e-9)
    z = torch.randn(25, 2, generator=g, dtype=torch.float64)
    gz = gen(z).detach()
    ym = gz + sigma * torch.randn(gz.shape, generator=g, dtype=torch.float64)
    lpm = log_spread_data_density(ym, data, sigma)
    rev = model_side_terms(gen, enc, z, gz, ym, lpm, sigma, num_draws=4, seed=0, batch_size=10)
    torch.testing.assert_close(rev.joint, log_qs(ym, a, b, sigma) - lpm, rtol=0, atol=1e-9)
    torch.testing.assert_close(rev.iw, rev.joint, rtol=0, atol=1e-9)
    assert bool((fwd.js <= math.log(2)).all()) and bool((rev.js <= math.log(2)).all())


def test_reverse_kl_to_one_point_matches_closed_form():
    gen, a, b, d = affine_setup(dim=5, nz=2, seed=4)
    sigma, dim = 0.5, 5
    x = torch.full((1, dim), 0.2, dtype=torch.float64)
    enc = exact_posterior(a, b, d, sigma)
    g = seeded_generator(5)
    n = 4000
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    gz = gen(z).detach()
    y = gz + sigma * torch.randn(gz.shape, generator=g, dtype=torch.float64)
    lps = log_spread_data_density(y, x, sigma)
    rev = model_side_terms(gen, enc, z, gz, y, lps, sigma, num_draws=1, seed=0, batch_size=1000)
    c = a @ a.T + sigma**2 * torch.eye(dim, dtype=torch.float64)
    closed = 0.5 * float(
        torch.trace(c) / sigma**2
        + (b - x[0]).square().sum() / sigma**2
        - dim
        + dim * math.log(sigma**2)
        - torch.logdet(c)
    )
    mean, se = float(rev.joint.mean()), float(rev.joint.std() / math.sqrt(n))
    assert abs(mean - closed) < 4 * se, (mean, closed, se)
    assert se < 0.05 * closed


def _fast_params(**kw) -> DivergenceParams:
    base = dict(steps=300, lr=3e-3, batch_size=256, eval_every=25, patience=4, importance=16, num_model_samples=400)
    base.update(kw)
    return DivergenceParams(**base)


def test_trained_encoder_gets_within_a_tenth_of_a_nat():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=6)
    sigma = 0.5
    g = seeded_generator(7)
    data = b + 1.2 * torch.randn(400, 6, generator=g, dtype=torch.float64)
    params = _fast_params(data=data, sigmas=(sigma,), heldout=0.5)
    result = run_divergence(gen, params)
    s = result.per_sigma[0]
    held = data[result.heldout_index]
    y = held + sigma * torch.randn(held.shape, generator=seeded_generator(params.seed + 30), dtype=torch.float64)
    exact_fwd = log_spread_data_density(y, data, sigma) - log_qs(y, a, b, sigma)
    # the same held-out noise: the gap is the encoder's alone (plus its z-draws)
    assert s.divergences["kl"].bound - float(exact_fwd.mean()) < 0.1
    assert s.divergences["kl"].bound >= float(exact_fwd.mean()) - 3 * s.divergences["kl"].stderr
    # the model-side pairs exactly as run_divergence drew them
    exact_rev = log_qs(_model_y(gen, params, sigma), a, b, sigma) - log_spread_data_density(
        _model_y(gen, params, sigma), data, sigma
    )
    assert s.divergences["rkl"].bound - float(exact_rev.mean()) < 0.1
    assert 0 <= s.divergences["js"].bound <= math.log(2)


def _model_y(gen, params: DivergenceParams, sigma: float) -> torch.Tensor:
    from gan_probe.analyses.divergence import _simulate

    return _simulate(gen, params.num_model_samples, sigma, seeded_generator(params.seed + 40))[2]


def test_importance_weighted_bound_is_non_increasing_in_k():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=8)
    sigma = 0.4
    exact = exact_posterior(a, b, d, sigma)

    def poor(y):  # shifted and too wide: a loose ELBO that importance weighting tightens
        m, ls = exact(y)
        return m + 0.5, ls + 0.7

    g = seeded_generator(9)
    data = b + torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = data + sigma * torch.randn(50, 6, generator=g, dtype=torch.float64)
    lps = log_spread_data_density(y, data, sigma)
    ref = float((lps - log_qs(y, a, b, sigma)).mean())
    values, terms = [], []
    for k in (1, 4, 16, 64, 256):
        t = data_side_terms(gen, poor, y, lps, sigma, num_draws=k, seed=k, batch_size=50)
        values.append(float(t.iw.mean()))
        terms.append(t.iw)
    # non-increasing in expectation: each step down, or up by less than 3 standard errors of the paired change
    for earlier, later in zip(terms, terms[1:], strict=False):
        change = later - earlier
        assert float(change.mean()) <= 3 * float(change.std()) / math.sqrt(change.numel()), values
    assert values[0] - ref > 0.5 and values[-1] - ref < 0.5 * (values[0] - ref) and values[-1] >= ref - 1e-2


def test_generator_on_one_of_two_clusters_has_kl_far_above_rkl():
    g = seeded_generator(10)
    centers = torch.tensor([[3.0, 3.0], [-3.0, -3.0]], dtype=torch.float64)
    data = centers[torch.arange(200) % 2] + 0.3 * torch.randn(200, 2, generator=g, dtype=torch.float64)
    gen = wrap(Affine(0.3 * torch.eye(2, dtype=torch.float64), centers[0]), 2)
    result = run_divergence(gen, _fast_params(data=data, sigmas=(0.3,), steps=200, num_model_samples=200))
    div = result.per_sigma[0].divergences
    assert div["kl"].bound > 10 * div["rkl"].bound and div["kl"].bound > 20
    assert div["rkl"].bound < 2.0 and div["js"].bound < math.log(2)


def test_seeded_runs_reproduce_bit_for_bit():
    gen, a, b, d = affine_setup(dim=4, nz=2, seed=11)
    data = b + torch.randn(40, 4, generator=seeded_generator(12), dtype=torch.float64)
    params = _fast_params(data=data, sigmas=(0.3, 0.6), steps=30, importance=4, num_model_samples=20, refine=3)
    r1, r2 = run_divergence(gen, params), run_divergence(gen, params)
    for s1, s2 in zip(r1.per_sigma, r2.per_sigma, strict=True):
        assert dumps_strict(s1.to_json()) == dumps_strict(s2.to_json())
        assert torch.equal(s1.forward["data"].iw, s2.forward["data"].iw)
        assert torch.equal(s1.reverse["model"].joint, s2.reverse["model"].joint)


@pytest.mark.parametrize(
    ("change", "param", "text"),
    [
        ({"data": torch.zeros(10, 5, dtype=torch.float64)}, "data", "shape"),
        ({"sigmas": (0.0,)}, "spread", "sigma"),
        ({"sigmas": (float("nan"),)}, "spread", "sigma"),
        ({"sigmas": (-1.0,)}, "spread", "sigma"),
        ({"data": torch.full((10, 4), float("nan"), dtype=torch.float64)}, "data", "NaN"),
        ({"data": torch.zeros(3, 4, dtype=torch.float64)}, "data", "too few"),
        ({"importance": 0}, "importance", "K"),
        ({"divergences": ("tv",)}, "f", "unknown"),
    ],
)
def test_bad_inputs_are_one_line_errors(change, param, text):
    gen, *_ = affine_setup(dim=4, nz=2)
    params = _fast_params(data=torch.zeros(10, 4, dtype=torch.float64), steps=1)
    with pytest.raises(GanProbeError) as info:
        run_divergence(gen, DivergenceParams(**{**params.__dict__, **change}))
    assert info.value.param == param and text in str(info.value) and "\n" not in str(info.value)


def test_fit_encoder_model_side_approaches_the_posterior():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=13)
    sigma = 0.4
    fit = fit_encoder(gen, "model", sigma, _fast_params(steps=800, patience=8), seed=0)
    assert fit.val_loss[-1] < fit.val_loss[0] and 0 < fit.best_step <= fit.steps_done
    z = torch.randn(200, 2, generator=seeded_generator(14), dtype=torch.float64)
    y = gen(z).detach() + sigma * torch.randn(200, 6, generator=seeded_generator(15), dtype=torch.float64)
    with torch.no_grad():
        m, ls = fit.encoder(y)
    em, els = exact_posterior(a, b, d, sigma)(y)
    # KL(r(.|y) || posterior(.|y)): the reverse bound's gap at y
    gap = (els - ls + (torch.exp(2 * ls) + (m - em).square()) / (2 * torch.exp(2 * els)) - 0.5).sum(1)
    assert float(gap.mean()) < 0.05, float(gap.mean())


def _open_png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_cli_divergence_on_bundled_default(runner, tmp_path):
    out = tmp_path / "div"
    args = ["divergence", "--limit", "48", "--steps", "4", "--importance", "3", "--model-samples", "16"]
    report = invoke_json(runner, [*args, "--spread", "0.2,0.5", "--batch-size", "16", "--out", out])
    res = report["results"]
    assert report["command"] == "divergence" and report["parameters"]["spread"] == [0.2, 0.5]
    assert res["dim"] == 1024 and res["num_data"] == 48 and res["num_heldout"] == 12 and res["num_train"] == 36
    assert res["pixel_range"][0] >= -1 and res["pixel_range"][1] <= 1 and res["data"]["kind"] == "bundled"
    assert res["encoder"]["kind"] == "conv" and res["encoder"]["channels"] == [32, 64]
    assert [r["sigma"] for r in res["results"]] == [0.2, 0.5]
    for r in res["results"]:
        d = r["divergences"]
        assert set(d) == {"kl", "rkl", "js"}
        assert d["kl"]["estimate"] <= d["kl"]["bound"] + 1e-9  # with the same draws: Jensen
        assert d["kl"]["per_dim"] == pytest.approx(d["kl"]["bound"] / 1024)
        assert d["kl"]["bits_per_dim"] == pytest.approx(d["kl"]["bound"] / 1024 / math.log(2))
        assert 0 <= d["js"]["bound"] <= math.log(2) + 1e-12 and d["js"]["estimate"] is None
        assert d["rkl"]["stderr"] > 0 and {"data", "model"} == set(r["encoders"])
    # a larger spread brings the two closer
    assert res["results"][1]["divergences"]["kl"]["bound"] < res["results"][0]["divergences"]["kl"]["bound"]
    names = {Path(f).name for f in report["files"]}
    assert names == {
        "report.json",
        "divergence.npz",
        "divergence_vs_sigma.png",
        *(f"{k}_{i}.png" for k in ("worst_covered", "farthest_samples", "encoder") for i in (0, 1)),
    }
    worst = _open_png(out / "worst_covered_0.png")
    assert worst.mode == "L" and worst.size == (2 + 8 * 34, 2 + 2 * 34)  # 8 held-out images above 8 reconstructions
    assert _open_png(out / "farthest_samples_1.png").size == (2 + 8 * 34, 2 + 2 * 34)
    assert _open_png(out / "encoder_0.png").size[0] > 400 and _open_png(out / "divergence_vs_sigma.png").size[0] > 300
    with np.load(out / "divergence.npz") as z:
        fwd, rev = z["s0_forward_joint_data"], z["s0_reverse_joint_model"]
        assert fwd.shape == (12,) and rev.shape == (16,) and z["s0_encoder_mean_data"].shape == (12, 32)
        assert res["results"][0]["divergences"]["kl"]["bound"] == pytest.approx(
            min(fwd.mean(), z["s0_forward_joint_model"].mean()), rel=1e-12
        )


def test_cli_divergence_gate_and_errors(runner, tiny_ckpt, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8))
    args = ["divergence", tiny_ckpt, "--data", data, "--steps", "2", "--importance", "2", "--model-samples", "4"]
    ok = invoke(runner, [*args, "--gate", "rkl", "--min", "0", "--ais", "2", "--out", tmp_path / "ok"])
    assert ok.exit_code == 0, ok.output
    assert "rkl" in ok.stdout and "bound" in ok.stdout and "BDMC" in ok.stdout
    ais = json.loads((tmp_path / "ok" / "report.json").read_text())["results"]["results"][0]["ais"]
    assert ais["steps"] == 2 and len(ais["rkl_bracket"]) == 2 and math.isfinite(ais["bdmc_gap"])
    failed = invoke(runner, [*args, "--gate", "js", "--max", "1e-9", "--json", "--out", tmp_path / "gate"])
    assert failed.exit_code == 3
    report = json.loads(failed.stdout)
    assert report["gate"]["value"] == report["results"]["results"][0]["divergences"]["js"]["bound"]
    for bad, text in (
        (["--spread", "nan"], "--spread"),
        (["--spread", "-0.1"], "--spread"),
        (["--importance", "0"], "--importance"),
        (["--ais", "-1"], "--ais"),
        (["--limit", "3"], "too few"),
    ):
        result = invoke(runner, [*args, *bad, "--out", tmp_path / "bad"])
        assert result.exit_code == 1, result.output
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_api_divergence_matches_run_divergence():
    import gan_probe

    gen, *_ = affine_setup(dim=4, nz=2, seed=16)
    data = torch.randn(20, 4, generator=seeded_generator(17), dtype=torch.float64)
    r = gan_probe.divergence(gen, data, spread=0.5, f="kl", steps=3, importance=2, model_samples=8)
    assert set(r.per_sigma[0].divergences) == {"kl"} and r.per_sigma[0].sigma == 0.5
    direct = run_divergence(
        gen, DivergenceParams(data=data, sigmas=(0.5,), divergences=("kl",), steps=3, importance=2, num_model_samples=8)
    )
    assert r.per_sigma[0].divergences["kl"].bound == direct.per_sigma[0].divergences["kl"].bound


def test_ais_recovers_ln_qs_with_a_small_bidirectional_gap():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=18)
    sigma = 0.4
    exact = exact_posterior(a, b, d, sigma)

    def poor(y):  # a shifted, too wide start: importance sampling from it alone is loose
        m, ls = exact(y)
        return m + 0.5, ls + 0.7

    num = 64
    z = torch.randn(num, 2, generator=seeded_generator(19), dtype=torch.float64)
    y = gen(z).detach() + sigma * torch.randn(num, 6, generator=seeded_generator(20), dtype=torch.float64)
    ref = log_qs(y, a, b, sigma)
    eps = pilot_step_size(gen, poor, y, sigma, steps=30, seed=1)
    fwd = ais_log_q(gen, poor, y, sigma, steps=150, seed=2, step_size=eps)
    rev = ais_log_q(gen, poor, y, sigma, steps=150, seed=3, step_size=eps, z_posterior=z)
    err = fwd.log_weights - ref
    assert abs(float(err.mean())) < 3 * float(err.std()) / math.sqrt(num) + 1e-3, float(err.mean())
    gap = float((rev.log_weights - fwd.log_weights).mean())
    assert 0 <= gap < 0.1, gap
    assert 0.3 < fwd.acceptance < 1.0
    # importance sampling from the same start with one draw is far looser
    iw = data_side_terms(gen, poor, y, torch.zeros(num, dtype=torch.float64), sigma, num_draws=1, seed=4, batch_size=64)
    assert float((ref + iw.iw).mean()) > 10 * abs(float(err.mean())) + 0.3


def test_run_divergence_with_ais_brackets_the_exact_reverse_kl():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=21)
    sigma = 0.5
    data = b + 1.2 * torch.randn(64, 6, generator=seeded_generator(22), dtype=torch.float64)
    params = _fast_params(data=data, sigmas=(sigma,), steps=100, num_model_samples=64, ais=100, heldout=0.5)
    s = run_divergence(gen, params).per_sigma[0]
    assert s.ais is not None
    ais = s.ais.to_json()
    y = _model_y(gen, params, sigma)
    exact_rev = log_qs(y, a, b, sigma) - log_spread_data_density(y, data, sigma)
    lo, up = ais["rkl_bracket"]
    se = ais["rkl_bracket_stderr"][0]
    assert lo - 3 * se <= float(exact_rev.mean()) <= up + 3 * se
    assert -3 * ais["bdmc_gap_stderr"] <= ais["bdmc_gap"] < 0.1 and 0.5 < ais["acceptance"] < 1
    # the AIS kl estimate is at least as tight as the encoder's bound, and above the exact value up to noise
    assert ais["kl_estimate"] <= s.divergences["kl"].bound + 2 * ais["kl_stderr"]
    held = data[run_divergence_heldout(params)]
    yh = held + sigma * torch.randn(held.shape, generator=seeded_generator(params.seed + 30), dtype=torch.float64)
    exact_fwd = float((log_spread_data_density(yh, data, sigma) - log_qs(yh, a, b, sigma)).mean())
    assert abs(ais["kl_estimate"] - exact_fwd) < 0.1


def run_divergence_heldout(params: DivergenceParams) -> torch.Tensor:
    from gan_probe.analyses.divergence import split_heldout

    assert isinstance(params.data, torch.Tensor)
    return split_heldout(params.data.shape[0], params.heldout, params.seed)[1]


def test_a_js_bound_at_its_ceiling_is_flagged():
    """JS <= ln 2 holds for any two densities, so a bound of ln 2 carries no information: flagged, not hidden."""
    from gan_probe.analyses.divergence import DivergenceEstimate

    ceiling = DivergenceEstimate("js", math.log(2), 0.0, None, None, "data", 4).to_json()
    below = DivergenceEstimate("js", 0.3, 0.01, None, None, "data", 4).to_json()
    kl = DivergenceEstimate("kl", 5.0, 0.1, 4.0, 0.1, "data", 4).to_json()
    assert ceiling["at_ceiling"] is True and below["at_ceiling"] is False and kl["at_ceiling"] is False


def test_an_rkl_lower_estimate_below_zero_is_flagged_and_noted():
    """KL >= 0: a negative lower estimate (a model-side encoder far from the posterior) bounds nothing."""
    from gan_probe.analyses.divergence import DivergenceEstimate
    from gan_probe.cli.divergence import _notes

    negative = DivergenceEstimate("rkl", 8423.0, 130.0, -2049.0, 90.0, "model", 4)
    positive = DivergenceEstimate("rkl", 8423.0, 130.0, 2049.0, 90.0, "model", 4)
    kl = DivergenceEstimate("kl", 5.0, 0.1, -1.0, 0.1, "data", 4)
    assert negative.to_json()["estimate_below_zero"] is True
    assert positive.to_json()["estimate_below_zero"] is False and kl.to_json()["estimate_below_zero"] is False

    class Sigma:
        sigma = 0.1
        divergences = {"rkl": negative, "kl": kl}

    class Result:
        interrupted = False
        latent = "z"
        per_sigma = [Sigma()]

        class data:  # noqa: N801 - the attribute the notes read
            conversion: list[str] = []

    (note,) = _notes(Result())  # type: ignore[arg-type]
    assert "lower estimate -2,049 is below 0" in note and "[0, 8,423]" in note


def test_an_interrupt_keeps_the_sigmas_finished_and_drops_the_one_in_progress(monkeypatch):
    """Ctrl-C (a KeyboardInterrupt from the deferred signal's poll) in the third encoder fit, the first of the
    second sigma: the first sigma is kept whole and equals an uninterrupted run's; in the first sigma nothing is."""
    import gan_probe.analyses.divergence as divergence

    gen, a, b, d = affine_setup(dim=4, nz=2, seed=23)
    data = b + torch.randn(24, 4, generator=seeded_generator(24), dtype=torch.float64)
    params = _fast_params(data=data, sigmas=(0.3, 0.6), steps=5, importance=2, num_model_samples=8)
    whole = run_divergence(gen, params)
    fit = divergence.fit_encoder

    def interrupted_at(call: int):
        calls = [0]

        def fit_or_stop(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call:
                raise KeyboardInterrupt
            return fit(*args, **kwargs)

        return fit_or_stop

    monkeypatch.setattr(divergence, "fit_encoder", interrupted_at(3))
    part = run_divergence(gen, params)
    assert part.interrupted and [s.sigma for s in part.per_sigma] == [0.3] and not whole.interrupted
    assert dumps_strict(part.per_sigma[0].to_json()) == dumps_strict(whole.per_sigma[0].to_json())
    report = part.to_json()
    assert report["interrupted"] is True and report["num_sigmas_done"] == 1 and len(report["results"]) == 1
    monkeypatch.setattr(divergence, "fit_encoder", interrupted_at(2))
    with pytest.raises(KeyboardInterrupt):
        run_divergence(gen, params)


def test_a_uniform_prior_is_read_through_its_normal_reparametrisation(runner, tiny_ckpt, tmp_path):
    """z = low + (high - low) Phi(u) with u ~ N(0, I) is exactly U([low, high]^nz) (moments and support
    checked on 200,000 draws), so divergence runs a uniform-prior generator as G o that map, and says so."""
    from gan_probe.models.prior_net import NormalToUniform

    z = NormalToUniform(-2.0, 1.0)(torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0)).double())
    assert float(z.min()) > -2.0 and float(z.max()) < 1.0
    assert abs(float(z.mean()) + 0.5) < 0.01 and abs(float(z.var()) - 9 / 12) < 0.01
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8))
    args = ["divergence", tiny_ckpt, "--data", data, "--steps", "2", "--importance", "2", "--model-samples", "4"]
    uniform = invoke(runner, [*args, "--prior", "uniform", "--low", "-2", "--high", "1", "--out", tmp_path / "u"])
    assert uniform.exit_code == 0, uniform.stderr
    assert "normal reparametrisation: u ~ N(0, I), z = -2 + (1 - -2) Phi(u)" in re.sub(r"\s+", " ", uniform.stderr)
    report = json.loads((tmp_path / "u" / "report.json").read_text())
    assert report["results"]["latent"].startswith("u ~ N(0, I)")
    bounds = [d["bound"] for d in report["results"]["results"][0]["divergences"].values()]
    assert all(math.isfinite(b) for b in bounds)
    normal = json.loads((invoke(runner, [*args, "--json", "--out", tmp_path / "n"])).stdout)
    assert normal["results"]["latent"] == "z"
