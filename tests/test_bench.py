"""gan-probe bench end to end at tiny budgets: the report's fields and their consistency (no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from gan_probe.analyses.bench import LinearModelParams, SyntheticModelParams, limit_jacobian_qr, naive_spectra
from gan_probe.analyses.common import probe_streams, seeded_generator
from gan_probe.analyses.targets import TARGETS
from gan_probe.cli.bench import rewrite_old_form
from gan_probe.errors import GanProbeError
from gan_probe.models import load_generator
from gan_probe.models.synthetic import synthetic_dcgan, synthetic_linear
from gan_probe.spectral.estimators import ChebyshevParams, SLQParams, TaylorParams, estimate_half_logdet
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum
from tests.conftest import invoke, invoke_json

TINY = [
    "--n",
    "2",
    "--repeats",
    "1",
    "--steps",
    "4",
    "--probes",
    "2",
    "--m",
    "4",
    "--p",
    "2",
    "--t",
    "3",
    "--threads",
    "1",
]


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_on_a_checkpoint_reports_times_ratios_and_errors(runner, tiny_ckpt, tmp_path):
    report = invoke_json(runner, ["bench", tiny_ckpt, *TINY, "--dtype", "float64", "--out", tmp_path / "b"])
    res = report["results"]
    assert res["mode"] == "model" and res["device"] == "cpu" and res["machine"]["torch_threads"] == 1
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"exact", "limit", "naive", "chebyshev", "taylor", "slq", "gradient"}
    for row in rows.values():
        assert _positive(row["seconds"]) and _positive(row["ratio_to_exact"]), row
    assert rows["exact"]["ratio_to_exact"] == pytest.approx(1.0)
    for key in ("exact_over_limit", "naive_over_exact_per_latent", "gradient_over_value", "slq_over_exact"):
        assert _positive(res["ratios"][key]), key
    # the naive peer and the differentiable exact path compute the same ln det as exact
    assert rows["naive"]["max_abs_diff_vs_exact_nats"] < 1e-8
    assert rows["gradient"]["max_abs_diff_vs_exact_nats"] < 1e-8
    # each estimator's errors, recomputed here from the library on the same latents and probe streams
    gen = load_generator(tiny_ckpt, dtype=torch.float64)
    nz = res["nz"]
    z = gen.prior.sample(2, nz, generator=seeded_generator(0))
    op = JacobianOperator(gen.flat, z)
    exact = exact_spectrum(op).half_logdet
    budgets = {"chebyshev": ChebyshevParams(m=4, p=2, t=3), "taylor": TaylorParams(m=4, p=2, t=3),
               "slq": SLQParams(steps=4, probes=2)}  # fmt: skip
    for name, params in budgets.items():
        with torch.no_grad():
            est = estimate_half_logdet(op, name, params, generator=probe_streams(0, 0, 2))
        err = (exact - est.half_logdet).abs()
        r = rows[name]
        assert r["median_abs_error_nats"] == pytest.approx(float(err.mean()), rel=1e-9)  # median of two
        assert r["max_abs_error_nats"] == pytest.approx(float(err.max()), rel=1e-9)
        assert r["median_abs_error_nats_per_dim"] == pytest.approx(float(err.mean()) / nz, rel=1e-9)
        assert r["num_nonfinite"] == 0
        if est.bounds_violated is not None:
            assert r["num_bounds_violated"] == int(est.bounds_violated.sum())
        if name == "slq":
            covered = (est.interval[:, 0] <= exact) & (exact <= est.interval[:, 1])
            assert r["interval_coverage"] == float(covered.double().mean())
    assert rows["slq"]["num_matvecs_per_latent"] == 4 * 2
    targets = {t["name"]: t for t in res["targets"]}
    assert targets["exact / limit"]["met"] == (res["ratios"]["exact_over_limit"] <= 1.3)
    assert targets["naive / exact per latent"]["applies"] is False  # not a 64x64x3 DCGAN
    assert (tmp_path / "b" / "report.json").is_file()


def test_bench_model_mode_splits_without_limit_or_warmup(runner, tiny_ckpt, tmp_path):
    args = ["bench", tiny_ckpt, *TINY, "--naive-latents", "0", "--no-gradient", "--methods", "slq"]
    args += ["--splits", "4x2,2x4", "--no-limit", "--warmup", "0", "--dtype", "float64"]
    res = invoke_json(runner, [*args, "--out", tmp_path / "b"])["results"]
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"exact", "slq 4x2", "slq 2x4"}
    assert (rows["slq 4x2"]["steps"], rows["slq 4x2"]["probes"], rows["slq 4x2"]["num_matvecs_per_latent"]) == (4, 2, 8)
    assert rows["slq 2x4"]["num_matvecs_per_latent"] == 8 and "interval_coverage" in rows["slq 2x4"]
    assert "exact_over_limit" not in res["ratios"] and _positive(res["ratios"]["slq_4x2_over_exact"])
    assert all(len(r["times_s"]) == 1 for r in res["rows"])


def test_bench_errors_agree_with_loglik_check(runner, tiny_ckpt, tmp_path):
    common = ["--dtype", "float64", "--steps", "4", "--probes", "2", "--n", "2"]
    bench = invoke_json(
        runner,
        [
            "bench",
            tiny_ckpt,
            *common,
            "--repeats",
            "1",
            "--naive-latents",
            "0",
            "--methods",
            "slq",
            "--no-gradient",
            "--threads",
            "1",
            "--out",
            tmp_path / "b",
        ],
    )["results"]
    check = invoke_json(runner, ["loglik", tiny_ckpt, *common, "--method", "slq", "--check", "--out", tmp_path / "l"])
    slq = next(r for r in bench["rows"] if r["name"] == "slq")
    assert slq["median_abs_error_nats"] == pytest.approx(
        check["results"]["summary"]["check"]["median_abs_error_nats"], rel=1e-9
    )
    assert {r["name"] for r in bench["rows"]} == {"exact", "limit", "slq"}


def test_bench_spectrum_mode_measures_slq_against_the_prescribed_logdet(runner, tmp_path):
    args = [
        "bench",
        "spectrum",
        "--synthetic-nz",
        "24",
        "--conds",
        "10,1e4",
        "--n",
        "6",
        "--steps",
        "24",
        "--probes",
        "3",
        "--methods",
        "slq,chebyshev",
        "--eps",
        "auto",
        "--dtype",
        "float64",
        "--threads",
        "1",
    ]
    res = invoke_json(runner, [*args, "--out", tmp_path / "s"])["results"]
    assert res["mode"] == "spectrum" and res["nz"] == 24
    rows = [r for r in res["rows"] if r["name"] == "slq"]
    assert [r["cond"] for r in rows] == [10.0, 1e4]
    # steps = nz: the quadrature is exact and only probe noise remains, which the interval covers
    # (at cond 10 its standard deviation is ~0.05 nats/dim with 3 probes)
    assert rows[0]["median_abs_error_nats_per_dim"] < 0.15
    for r in rows:
        assert r["interval_coverage"] >= 0.5
    cheb = [r for r in res["rows"] if r["name"] == "chebyshev"]
    assert len(cheb) == 2 and all("num_bounds_violated" in r for r in cheb)
    assert any(t["name"].startswith("slq interval coverage") for t in res["targets"])


def test_hadamard_operator_has_exactly_the_prescribed_spectrum():
    from gan_probe.models.synthetic import fwht, log_spaced_eigenvalues, resolve_operator

    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fwht(fwht(x)), x, atol=1e-12)  # orthonormal and symmetric
    lin, half = synthetic_linear(64, 1e6, seed=3, device=torch.device("cpu"), dtype=torch.float64, operator="hadamard")
    assert lin.config["operator"] == "hadamard"
    # the dense A from the Jacobian, its M = A^T A in float64 against the prescribed eigenvalues
    a = torch.func.jacrev(lin.module)(torch.zeros(64, dtype=torch.float64))
    lam, ref = log_spaced_eigenvalues(64, 1e6)
    got = torch.linalg.eigvalsh(a.T @ a).flip(0)
    assert torch.allclose(got, lam, rtol=1e-9, atol=1e-15)
    assert ref == pytest.approx(half, rel=1e-12)
    # the eigenvectors are dense, as a Haar basis's are: no row of Q is close to a coordinate axis
    q = a / lin.module.scale[:, None]
    assert float(q.abs().max()) < 0.6
    spec = exact_spectrum(JacobianOperator(lin.flat, torch.zeros(1, 64, dtype=torch.float64)))
    assert float(spec.half_logdet[0]) == pytest.approx(half, rel=1e-10)
    assert resolve_operator(512) == "dense" and resolve_operator(2048) == "hadamard"
    assert resolve_operator(3000) == "dense"
    with pytest.raises(ValueError, match="power of two"):
        synthetic_linear(48, 10.0, seed=0, device=torch.device("cpu"), dtype=torch.float64, operator="hadamard")


def test_bench_spectrum_splits_on_the_hadamard_operator(runner, tmp_path):
    args = [
        "bench",
        "spectrum",
        "--synthetic-nz",
        "32",
        "--synthetic-operator",
        "hadamard",
        "--conds",
        "1e3",
        "--n",
        "4",
        "--splits",
        "16x2,8x4",
        "--methods",
        "slq,taylor",
        "--m",
        "4",
        "--p",
        "2",
        "--t",
        "3",
        "--exact-max-nz",
        "16",
        "--dtype",
        "float64",
        "--threads",
        "1",
    ]
    res = invoke_json(runner, [*args, "--out", tmp_path / "s"])["results"]
    assert res["model"]["operator"] == "hadamard"
    names = [r["name"] for r in res["rows"]]
    assert names == ["slq 16x2", "slq 8x4", "taylor"]
    for r in res["rows"]:
        assert r["exact_extrapolated_from_nz"] == 16  # exact timed at nz 16, extrapolated as nz^3
        assert _positive(r["exact_over_estimator_seconds"]) and _positive(r["per_latent_s"])
        assert r["exact_over_estimator_products"] == pytest.approx(32 / r["num_matvecs_per_latent"])
    slq = res["rows"][0]
    assert (slq["steps"], slq["probes"], slq["num_matvecs_per_latent"]) == (16, 2, 32)
    assert slq["median_abs_error_nats_per_dim"] < 0.5 and "interval_coverage" in slq
    assert _positive(slq["median_interval_width_nats_per_dim"])
    assert res["exact"]["exact_abs_error_nats"] < 1e-8
    bad = invoke(runner, [*args[:-2], "--splits", "10x1", "--out", tmp_path / "bad"])
    assert bad.exit_code != 0 and "probes >= 2" in bad.output + bad.stderr


def test_limit_and_naive_agree_with_exact(dcgan_gen, mlp_gen):
    z = dcgan_gen.prior.sample(2, dcgan_gen.nz, generator=torch.Generator().manual_seed(0))
    ref = exact_spectrum(JacobianOperator(dcgan_gen.flat, z))
    r = limit_jacobian_qr(JacobianOperator(dcgan_gen.flat, z, chunk_size=4))
    assert torch.allclose(torch.log(torch.linalg.svdvals(r)).sum(-1), ref.half_logdet, rtol=1e-10)
    # the naive peer costs one backward pass per output pixel: check it on the small-output MLP
    z = mlp_gen.prior.sample(2, mlp_gen.nz, generator=torch.Generator().manual_seed(0))
    ref = exact_spectrum(JacobianOperator(mlp_gen.flat, z))
    assert torch.allclose(naive_spectra(mlp_gen.flat, z), ref.half_logdet, rtol=1e-10)


def test_synthetic_models():
    gen = synthetic_dcgan(8, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    assert gen.output_shape == (3, 64, 64) and gen.nz == 8
    assert gen.module.main[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    lin, half = synthetic_linear(16, 1e3, seed=0, device=torch.device("cpu"), dtype=torch.float64)
    spec = exact_spectrum(JacobianOperator(lin.flat, torch.zeros(1, 16, dtype=torch.float64)))
    assert float(spec.half_logdet[0]) == pytest.approx(half, rel=1e-10)
    assert float(spec.condition[0]) == pytest.approx(1e3, rel=1e-8)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--synthetic", "vae"], "--synthetic"),
        (["--synthetic-nz", "12"], "--synthetic-nz"),
        (["--methods", "magic"], "--methods"),
        (["--repeats", "0"], "--repeats"),
        (["--n", "1", "--naive-latents", "2"], "--naive-latents"),
        (["--threads", "0"], "--threads"),
        (["spectrum", "--conds", "1e2,x"], "--conds"),
        (["spectrum", "--synthetic-nz", "1"], "--synthetic-nz"),
        (["spectrum", "--synthetic-nz", "48", "--synthetic-operator", "hadamard"], "--synthetic-operator"),
        (["spectrum", "--synthetic-operator", "sparse"], "--synthetic-operator"),
        (["spectrum", "--methods", "none"], "--methods"),
        (["throughput", "--synthetic", "spectrum"], "--synthetic"),
        (["throughput", "--batch-sizes", "0"], "--batch-sizes"),
        (["throughput", "--chunk-sizes", "auto,x"], "--chunk-sizes"),
    ],
)
def test_bench_bad_input_names_the_flag(runner, tiny_ckpt, tmp_path, args, flag):
    sub, rest = (args[:1], args[1:]) if args[0] in ("spectrum", "throughput") else ([], args)
    result = invoke(runner, ["bench", *sub, tiny_ckpt, *rest, "--out", tmp_path / "x"])
    assert result.exit_code == 1, result.output
    assert flag in result.stderr
    assert not (tmp_path / "x").exists()


def test_old_flag_forms_are_rewritten_to_the_subcommands():
    assert rewrite_old_form(["ckpt.pt", "--n", "2"]) == ("model", ["ckpt.pt", "--n", "2"])
    assert rewrite_old_form(["--synthetic", "spectrum", "--n", "2"]) == ("spectrum", ["--n", "2"])
    assert rewrite_old_form(["--n", "2", "--synthetic=spectrum"]) == ("spectrum", ["--n", "2"])
    assert rewrite_old_form(["--throughput", "--synthetic", "dcgan64"]) == (
        "throughput",
        ["--synthetic", "dcgan64"],
    )
    # a synthetic generator stays with the default mode
    assert rewrite_old_form(["--synthetic", "dcgan64"]) == ("model", ["--synthetic", "dcgan64"])


def test_the_old_spectrum_form_gives_the_report_of_bench_spectrum(runner, tmp_path):
    """``bench --synthetic spectrum`` still runs for one release, with a note naming the new form; its report is
    the subcommand's, field by field but for the timings (the options spectrum mode never used are dropped:
    the report records their defaults)."""
    args = ["--synthetic-nz", "8", "--conds", "10", "--n", "2", "--steps", "8", "--probes", "2", "--methods", "slq"]
    args += ["--dtype", "float64", "--threads", "1"]
    # --repeats and --no-gradient: taken by the one-command bench, never used by its spectrum mode
    old_args = ["bench", "--synthetic", "spectrum", "--repeats", "1", *args, "--no-gradient", "--json"]
    old = invoke(runner, [*old_args, "--out", tmp_path / "old"])
    assert old.exit_code == 0, old.output
    assert "gan-probe bench spectrum" in old.stderr
    assert "ignored, as bench always did in this mode: --repeats 1 --no-gradient" in old.stderr
    new = invoke_json(runner, ["bench", "spectrum", *args, "--out", tmp_path / "new"])
    old_report = json.loads(old.stdout)
    assert old_report["command"] == new["command"] == "bench"
    assert old_report["parameters"] == new["parameters"]
    assert new["parameters"]["synthetic"] == "spectrum" and new["parameters"]["conds"] == [10.0]
    timing = ("per_latent_s", "seconds", "exact_over_estimator_seconds", "exact_seconds_per_latent")
    for a, b in zip(old_report["results"]["rows"], new["results"]["rows"], strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


def test_the_old_throughput_flag_runs_bench_throughput(runner, tiny_ckpt, tmp_path):
    args = [tiny_ckpt, "--n", "2", "--batch-sizes", "2", "--chunk-sizes", "4", "--threads", "1", "--json"]
    old = invoke(runner, ["bench", "--throughput", "--methods", "slq", *args, "--out", tmp_path / "old"])
    assert old.exit_code == 0, old.output
    assert "gan-probe bench throughput" in old.stderr
    new = invoke_json(runner, ["bench", "throughput", *args[:-1], "--out", tmp_path / "new"])
    assert (
        json.loads(old.stdout)["parameters"]
        == new["parameters"]
        == {
            "throughput": True,
            "synthetic": None,
            "synthetic_nz": None,
            "n": 2,
            "batch_sizes": [2],
            "chunk_sizes": [4],
        }
    )
    assert [r["num_latents"] for r in new["results"]["rows"]] == [2]


def test_the_targets_table_checks_a_value_by_its_comparison_and_where_it_applies():
    limit = TARGETS["exact_over_limit"]
    assert limit.check(1.2)["met"] is True and limit.check(1.4)["met"] is False
    assert limit.check(1.3) == {
        "name": "exact / limit",
        "value": 1.3,
        "target": "<= 1.3",
        "applies": True,
        "met": True,
        "note": "",
    }
    naive = TARGETS["naive_over_exact"]
    assert naive.check(60.0)["met"] is True and naive.check(40.0)["met"] is False
    off = naive.check(60.0, applies=False)
    assert off["met"] is None and off["note"] == "the target is stated for a 64x64x3 DCGAN"
    assert naive.check(None)["met"] is None
    coverage = TARGETS["slq_coverage"].check(0.8, method="slq 4x2", cond=1e3)
    assert coverage["name"] == "slq 4x2 interval coverage, cond 1000" and coverage["met"] is False
    rate = TARGETS["dcgan_latents_per_s"]
    assert rate.runs_on(torch.device("cuda")) and not rate.runs_on(torch.device("cpu"))
    assert TARGETS["exact_over_limit"].runs_on(torch.device("cpu"))
    for target in TARGETS.values():  # every row is complete: a comparison, a bound, a mode and devices
        assert target.comparison in ("<=", ">=") and target.threshold > 0 and target.quantity
        assert target.mode in ("bench", "bench spectrum", "bench throughput", "bench divergence") and target.devices


def test_bench_model_params_refuse_what_the_modes_cannot_run():
    with pytest.raises(GanProbeError, match="bench spectrum") as exc:
        SyntheticModelParams("spectrum").validate()
    assert exc.value.param == "synthetic"
    with pytest.raises(GanProbeError, match="needs --synthetic"):
        SyntheticModelParams(nz=12).validate()
    with pytest.raises(GanProbeError, match="power-of-two"):
        LinearModelParams(nz=48, operator="hadamard").validate()
    assert LinearModelParams(nz=64, operator="hadamard").validate().nz == 64
    assert SyntheticModelParams("stylegan2-32").validate().stylegan2


def test_rosinality_channel_table_and_the_stylegan2_bench_rows():
    from gan_probe.analyses.bench import BenchParams, run_bench
    from gan_probe.models.synthetic import rosinality_channels, synthetic_stylegan2

    assert rosinality_channels(256, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    assert rosinality_channels(64, 1)[64] == 256
    gen = synthetic_stylegan2(8, channel_multiplier=1, style_dim=8, n_mlp=1, seed=0,
                              device=torch.device("cpu"), dtype=torch.float64)  # fmt: skip
    assert gen.nz == 8 and gen.output_shape == (3, 8, 8) and gen.prior.kind == "mapped"
    res = run_bench(gen, BenchParams(num=1, repeats=1, methods=(), gradient=False, naive_rows=5))
    naive = next(r for r in res.rows if r["name"] == "naive")
    assert "5 of 192 rows timed" in naive["note"]
    assert res.extra["ratios"]["naive_over_exact_per_latent"] == pytest.approx(
        naive["seconds"] / res.rows[0]["seconds"]
    )
    target = next(t for t in res.targets if t["name"].startswith("naive"))
    assert target["name"].endswith("StyleGAN2 256x256") and target["applies"] is False
    assert res.extra["peak_memory_bytes"] > 0


def test_narrow_stylegan2_in_w_plus_has_one_style_per_layer():
    from gan_probe.models.synthetic import synthetic_stylegan2

    gen = synthetic_stylegan2(
        32, channel_multiplier=1, space="w+", channels=8, style_dim=8, seed=0, device=torch.device("cpu"),
        dtype=torch.float32,
    )  # fmt: skip
    assert gen.nz == 8 * 8 and gen.output_shape == (3, 32, 32)  # 2 log2(32) - 2 = 8 styles
    assert set(gen.config["channels"].values()) == {8}


def _tiny_stylegan3(dtype: torch.dtype = torch.float64):
    return SyntheticModelParams("stylegan3-t-32", style_dim=8).build(seed=0, device=torch.device("cpu"), dtype=dtype)


def test_synthetic_stylegan3_has_nvidias_config_t_init_and_filters():
    import scipy.signal

    from gan_probe.analyses.bench import _STYLEGAN3_SIZES
    from gan_probe.models.nvidia.stylegan3 import StyleGAN3Config

    # the 256 px model is NVIDIA's config T defaults (train.py --cfg=stylegan3-t: cbase 32768, cmax 512)
    defaults = StyleGAN3Config(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3)
    assert _STYLEGAN3_SIZES["stylegan3-t-256"] == (
        256,
        defaults.channel_base,
        defaults.channel_max,
        defaults.num_layers,
    )
    assert (defaults.channel_base, defaults.channel_max, defaults.num_layers, defaults.margin_size) == (
        32768,
        512,
        14,
        10,
    )
    gen = _tiny_stylegan3()
    assert gen.arch == "StyleGAN3-T" and gen.nz == 8 and gen.output_shape == (3, 32, 32)
    assert gen.prior.kind == "mapped" and gen.config["space"] == "w"
    net = gen.module.network
    layers = [getattr(net.synthesis, name) for name in net.synthesis.layer_names]
    for layer in layers[:-1]:
        g = layer.geometry
        want = scipy.signal.firwin(g.up_taps, g.in_cutoff, width=2 * g.in_half_width, fs=g.tmp_sampling_rate)
        assert torch.equal(layer.up_filter, torch.as_tensor(want, dtype=torch.float32).double())
        assert layer.down_filter.ndim == 1 and float(layer.down_filter.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.equal(layer.affine.bias, torch.ones_like(layer.affine.bias))
    assert layers[-1].up_filter is None and layers[-1].down_filter is None
    assert torch.equal(net.synthesis.input.affine.bias, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert float(net.synthesis.input.freqs.norm(dim=1).max()) <= net.synthesis.input.bandwidth
    again = _tiny_stylegan3()
    z = gen.prior.sample(2, gen.nz, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen.flat(z), again.flat(z))  # seeded


def test_style_family_of_every_layout():
    from gan_probe.analyses.bench import style_family

    assert style_family("stylegan2") == "stylegan2" and style_family("StyleGAN2-ADA (skip)") == "stylegan2"
    assert style_family("StyleGAN3-T") == "stylegan3" and style_family("dcgan") is None


def test_column_subset_times_the_columns_of_j_and_labels_the_rows():
    from gan_probe.analyses.bench import BenchParams, column_picks, column_subset_operator, run_bench

    gen = _tiny_stylegan3()
    z = gen.prior.sample(1, gen.nz, generator=torch.Generator().manual_seed(1))
    op = JacobianOperator(gen.flat, z, chunk_size=2)
    picks = column_picks(gen.nz, 3)
    assert picks == [0, 4, 7]
    with torch.no_grad():
        full = op.dense()
        sub = column_subset_operator(op, picks).dense()
    assert sub.shape == (1, gen.output_dim, 3)
    assert torch.allclose(sub, full[:, :, picks], rtol=0, atol=1e-12 * float(full.abs().max()))
    params = BenchParams(num=1, repeats=1, warmup=0, methods=(), gradient=False, naive_rows=2, columns=3, chunk_size=1)
    res = run_bench(gen, params)
    rows = {r["name"]: r for r in res.rows}
    assert "3 of 8 columns' JVPs timed" in rows["exact"]["note"] and "QR + SVD" in rows["exact"]["note"]
    assert "over-counted" not in rows["exact"]["note"]  # 3 columns in chunks of 1: whole chunks
    assert "stand-in" in rows["limit"]["note"]
    cols = res.extra["column_subset"]
    assert cols["exact_seconds"] == pytest.approx(cols["jvp_seconds_timed"] * 8 / 3 + cols["qr_svd_seconds"])
    assert res.extra["ratios"]["exact_over_limit"] == pytest.approx(rows["exact"]["seconds"] / rows["limit"]["seconds"])
    target = next(t for t in res.targets if t["name"].startswith("naive"))
    assert target["name"].endswith("StyleGAN3 256x256") and target["applies"] is False
    halves = run_bench(gen, dataclasses.replace(params, chunk_size=2, naive_rows=0, naive_latents=0))
    assert halves.extra["column_subset"]["whole_chunks"] is False  # 3 columns in chunks of 2
    assert "over-counted" in halves.rows[0]["note"]
    with pytest.raises(GanProbeError, match="--methods none --no-gradient") as exc:
        BenchParams(columns=3).validate()
    assert exc.value.param == "columns"


def test_stylegan3_exact_gradient_keeps_forward_mode():
    """The one-factor nonlinearity keeps forward mode differentiable: the exact gradient takes the forward
    route and agrees with the double-VJP (reverse-only) route."""
    from gan_probe.analyses.bench import exact_value_and_gradient
    from gan_probe.spectral.jacobian import JacobianRoutes

    gen = _tiny_stylegan3()
    z = gen.prior.sample(1, gen.nz, generator=torch.Generator().manual_seed(2))
    forward = JacobianOperator(gen.flat, z, routes=JacobianRoutes())
    half, grad = exact_value_and_gradient(forward)
    assert forward.routes.grad == "forward"
    reverse = JacobianOperator(gen.flat, z, routes=JacobianRoutes(value="reverse", grad="reverse"))
    half_r, grad_r = exact_value_and_gradient(reverse)
    assert torch.allclose(half, half_r, rtol=1e-10)
    assert torch.allclose(grad, grad_r, rtol=1e-7, atol=1e-9 * float(grad_r.abs().max()))
