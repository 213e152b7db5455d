"""``bench divergence`` and the prior start of AIS, against the closed form of a linear generator.

G(z) = A z + b, z ~ N(0, I): q_s = N(b, A A^T + sigma^2 I) exactly (tests/test_divergence.py), so a long enough
AIS chain from either start must reach ln q_s(y), and the bench's step counts can be checked against its own
table.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gan_probe.analyses.common import seeded_generator
from gan_probe.analyses.divergence import DivergenceParams, ais_log_q, pilot_step_size, prior_encoder
from gan_probe.analyses.divergence_bench import (
    AisComparison,
    DivergenceBenchParams,
    default_run,
    run_divergence_bench,
    side_by_side,
)
from tests.conftest import invoke, invoke_json
from tests.test_divergence import affine_setup, exact_posterior, log_qs

SIGMA = 0.2


def _bench(tolerance: float = 1.0):
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=31)
    data = gen(torch.randn(48, 2, generator=seeded_generator(32), dtype=torch.float64)).detach()
    run = DivergenceParams(
        data=data, sigmas=(SIGMA,), steps=60, importance=4, num_model_samples=16, heldout=0.5, batch_size=16
    )
    params = DivergenceBenchParams(
        run=run, num_images=5, chain_steps=(2, 10, 40, 200, 1000), reference_steps=1500, tolerance=tolerance, seed=3
    )
    return gen, a, b, data, params


def test_prior_start_ais_reaches_the_exact_ln_qs():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=33)
    z = torch.randn(16, 2, generator=seeded_generator(34), dtype=torch.float64)
    y = gen(z).detach() + SIGMA * torch.randn(16, 6, generator=seeded_generator(35), dtype=torch.float64)
    prior = prior_encoder(gen)
    mean, log_std = prior(y)
    assert torch.equal(mean, torch.zeros(16, 2, dtype=torch.float64)) and torch.equal(log_std, torch.zeros(16, 2))
    eps = pilot_step_size(gen, prior, y, SIGMA, steps=30, seed=1)
    run = ais_log_q(gen, prior, y, SIGMA, steps=2000, seed=2, step_size=eps)
    # one chain per point: ln w scatters about ln q_s (its exponential is unbiased), less the longer the chain
    err = run.log_weights - log_qs(y, a, b, SIGMA)
    assert float(err.std()) < 0.25 and abs(float(err.mean())) < 3 * float(err.std()) / 4 + 0.02, err
    assert run.point_acceptance is not None and run.point_acceptance.shape == (16,)
    assert abs(float(run.point_acceptance.mean()) - run.acceptance) < 1e-12
    # a short chain from the prior is far off: the start matters
    short = ais_log_q(gen, prior, y, SIGMA, steps=2, seed=2, step_size=eps)
    assert float((log_qs(y, a, b, SIGMA) - short.log_weights).mean()) > 1.0


def test_side_by_side_runs_each_start_on_its_half():
    gen, a, b, d = affine_setup(dim=6, nz=2, seed=36)
    exact = exact_posterior(a, b, d, SIGMA)
    y = torch.randn(3, 6, generator=seeded_generator(37), dtype=torch.float64)
    m, s = side_by_side(exact, prior_encoder(gen))(torch.cat([y, y]))
    em, es = exact(y)
    torch.testing.assert_close(m[:3], em, rtol=0, atol=0)
    torch.testing.assert_close(s[:3], es, rtol=0, atol=0)
    assert torch.equal(m[3:], torch.zeros(3, 2, dtype=torch.float64)) and float(s[3:].abs().max()) == 0.0


def _needed_from_rows(rows: list[dict], start: str) -> int | None:
    """Steps needed, recomputed from the table alone."""
    mine = sorted((r for r in rows if r["start"] == start), key=lambda r: r["steps"])
    for i, r in enumerate(mine):
        if all(later["within_tolerance"] for later in mine[i:]):
            return r["steps"]
    return None


def test_bench_ais_from_both_starts_reaches_the_exact_value_and_counts_agree_with_the_table():
    gen, a, b, data, params = _bench()
    result = run_divergence_bench(gen, params)
    ais = result.ais
    assert isinstance(ais, AisComparison) and ais.image_index.shape == (5,)
    y = data[ais.image_index] + SIGMA * torch.randn(
        5, 6, generator=seeded_generator(params.seed + 1), dtype=torch.float64
    )
    exact = log_qs(y, a, b, SIGMA)
    # single chains: each scatters by about a tenth of a nat about ln q_s
    assert float((ais.reference - exact).abs().max()) < 0.3 and abs(float((ais.reference - exact).mean())) < 0.1
    # both starts converge to the exact value (the prior's single chains scatter more at the same length)
    longest = max(params.chain_steps)
    assert float((ais.estimates["encoder"][longest] - exact).abs().max()) < 0.3
    assert float((ais.estimates["prior"][longest] - exact).abs().max()) < 0.5
    assert float((ais.estimates["prior"][2] - exact).mean()) < -5  # and a 2-step chain from the prior does not
    report = ais.to_json()
    rows = report["rows"]
    assert len(rows) == 2 * len(params.chain_steps)
    for r in rows:
        worst = float((ais.estimates[r["start"]][r["steps"]] - ais.reference).abs().max())
        assert r["max_abs_error_nats"] == worst and r["within_tolerance"] == (worst <= params.tolerance)
        assert torch.equal(r["log_q"], ais.estimates[r["start"]][r["steps"]])
        assert 0 < r["acceptance"] <= 1
    for start in ("encoder", "prior"):
        assert report["steps_needed"][start] == _needed_from_rows(rows, start) == ais.steps_needed(start)
    enc, pri = report["steps_needed"]["encoder"], report["steps_needed"]["prior"]
    assert enc is not None and pri is not None and pri >= enc
    assert report["prior_over_encoder_steps"] == pri / enc and report["prior_over_encoder_is"] == "exact"
    # the run's phases are its own timings, each part within the whole
    phases = result.phases
    assert phases["encoders_s_sigma_0.2"] == phases["encoder_data_s_sigma_0.2"] + phases["encoder_model_s_sigma_0.2"]
    assert 0 < phases["log_ps_s_sigma_0.2"] <= phases["evaluation_s_sigma_0.2"] <= result.run_seconds
    targets = {t["name"]: t for t in result.targets}
    # not the default run (synthetic data): the time target does not apply
    assert targets["divergence default run, seconds"]["met"] is None
    ratio = targets["AIS steps to 1 nat, prior start / encoder start"]
    assert ratio["value"] == pri / enc and ratio["met"] == (pri / enc >= 10)


def test_a_tolerance_nothing_reaches_gives_no_step_count():
    gen, a, b, data, params = _bench(tolerance=1e-9)
    report = run_divergence_bench(gen, params).ais
    assert report is not None
    assert report.steps_needed("encoder") is None and report.steps_needed("prior") is None
    assert report.to_json()["prior_over_encoder_steps"] is None


def test_default_run_is_the_commands_defaults_with_the_batch_size():
    run = default_run(16)
    assert run == DivergenceParams(batch_size=16) and run.steps == DivergenceParams.steps
    assert default_run(16, steps=5).steps == 5


def test_cli_bench_divergence(runner, tiny_ckpt, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8))
    args = ["bench", "divergence", tiny_ckpt, "--data", data, "--steps", "2", "--importance", "2"]
    args += ["--model-samples", "4", "--images", "2", "--chain-steps", "2,4", "--reference-steps", "6"]
    report = invoke_json(runner, [*args, "--out", tmp_path / "b"])
    res = report["results"]
    assert report["command"] == "bench" and report["parameters"]["chain_steps"] == [2, 4]
    assert res["run"]["num_heldout"] == 3 and res["run"]["seconds"] > 0 and len(res["run"]["load_average_before"]) == 3
    assert set(res["run"]["phases_s"]) >= {"encoder_data_s_sigma_0.1", "encoder_model_s_sigma_0.1"}
    assert res["ais"]["num_images"] == 2 and res["ais"]["reference_steps"] == 6
    assert [(r["start"], r["steps"]) for r in res["ais"]["rows"]] == [
        ("encoder", 2),
        ("encoder", 4),
        ("prior", 2),
        ("prior", 4),
    ]
    assert all(math.isfinite(v) for v in res["ais"]["reference_log_q"])
    assert all(len(r["log_q"]) == 2 for r in res["ais"]["rows"])
    assert res["machine"]["torch_threads"] >= 1 and len(res["targets"]) == 2
    no_ais = invoke_json(runner, [*args, "--no-ais", "--out", tmp_path / "c"])
    assert no_ais["results"]["ais"] is None and len(no_ais["results"]["targets"]) == 1
    for bad, flag in ((["--chain-steps", "4,2"], "--chain-steps"), (["--tolerance", "0"], "--tolerance")):
        result = invoke(runner, [*args, *bad, "--out", tmp_path / "bad"])
        assert result.exit_code == 1, result.output
        assert flag in result.stderr and len(result.stderr.strip().splitlines()) == 1
