"""gan-probe veff: closed form on a linear generator, invariances, gate, CLI end to end, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe.analyses.veff import VeffParams, run_veff
from gan_probe.models import load_generator
from gan_probe.models.bundled import bundled_checkpoints, samples_dir
from gan_probe.models.priors import Prior
from tests.conftest import Linear, invoke, invoke_json, wrap


def test_linear_generator_closed_form(linear_gen):
    """delta(j,0) * delta(j,i) = |A alpha v_i| = alpha sqrt(lambda_i) = alpha s_i(A).

    (docs/design.md §6.3: the specification's misprint alpha * delta(j,0) * delta(j,i) has one
    alpha too many, since delta(j,0) is not divided by alpha.)
    """
    gen, a = linear_gen
    step = 0.37
    res = run_veff(gen, VeffParams(num=5, num_directions=8, step=step, taus=(0.5, 1.0, 2.0), batch_size=2))
    s = torch.linalg.svdvals(a)
    torch.testing.assert_close(res.delta * res.delta0[:, None], (step * s).expand(5, -1), rtol=1e-10, atol=0)
    # a random unit direction moves G by between s_min and s_max
    assert bool((res.delta0 > step * s[-1]).all() and (res.delta0 < step * s[0]).all())
    # the counts follow from the closed form
    expected = (step * s[None, :, None] / res.delta0[:, None, None] > torch.tensor([0.5, 1.0, 2.0])).sum(1)
    assert torch.equal(res.counts, expected)
    assert res.to_json()["veff"] == pytest.approx(float(expected[:, 0].double().mean()))
    assert 0 < res.to_json()["veff"] < gen.nz


def test_literal_normal_directions_give_zero_for_linear(linear_gen):
    """The paper's eps ~ N(0, I) has |eps| ~ sqrt(nz): E|A eps| ~ sqrt(tr M) > s_1, so v_eff(1) = 0."""
    gen, _ = linear_gen
    unit = run_veff(gen, VeffParams(num=4, num_directions=64, step=0.5))
    normal = run_veff(gen, VeffParams(num=4, num_directions=64, step=0.5, directions="normal"))
    assert normal.to_json()["veff"] == 0.0
    assert unit.to_json()["veff"] > 0


def test_monotone_in_tau_and_batch_invariant(mlp_gen):
    params = VeffParams(num=7, num_directions=6, step=0.4, taus=(0.0, 0.5, 1.0, 1.5, 3.0), batch_size=7)
    res = run_veff(mlp_gen, params)
    curve = res.curve_counts.double().mean(0)
    assert bool((curve[1:] <= curve[:-1]).all())
    assert float(curve[-1]) == 0.0
    veff = res.veff
    assert bool((veff[1:] <= veff[:-1]).all())
    assert float(veff[0]) == mlp_gen.nz  # every direction moves G more than 0 times the random one
    one = run_veff(mlp_gen, VeffParams(**{**params.__dict__, "batch_size": 1, "forward_budget": 5}))
    torch.testing.assert_close(one.delta, res.delta, rtol=1e-12, atol=0)
    assert torch.equal(one.counts, res.counts)


def test_uniform_prior_box_exits_counted(mlp_gen):
    gen = wrap(mlp_gen.module, mlp_gen.nz, prior=Prior("uniform"), output_range=(-1.0, 1.0))
    res = run_veff(gen, VeffParams(num=4, num_directions=3, step=0.8))
    assert res.outside_box is not None and 0 < res.outside_box <= res.num_perturbed == 4 * (gen.nz + 3)
    assert run_veff(mlp_gen, VeffParams(num=2, num_directions=3)).outside_box is None


def test_cli_json_shape_files_and_gate(tiny_ckpt, tmp_path, runner):
    out = tmp_path / "veff"
    args = ["veff", tiny_ckpt, "--n", 3, "--k", 4, "--tau", 1, "--tau", "2,0.5", "--out", out]
    report = invoke_json(runner, args)
    r = report["results"]
    assert [b["tau"] for b in r["by_tau"]] == [1.0, 2.0, 0.5]
    assert r["veff"] == r["by_tau"][0]["veff"] and r["tau"] == 1.0
    assert len(r["per_latent"]) == 3 and all(len(p["counts"]) == 3 for p in r["per_latent"])
    assert r["veff"] == pytest.approx(np.mean([p["counts"][0] for p in r["per_latent"]]))
    assert len(r["curve"]["tau"]) == len(r["curve"]["veff"])
    assert report["parameters"]["tau"] == [1.0, 2.0, 0.5]
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "veff.npz", "veff_curve.png"]
    with Image.open(out / "veff_curve.png") as img:
        assert img.size[0] > 300 and img.size[1] > 200
    with np.load(out / "veff.npz") as data:
        assert data["delta"].shape == (3, 8) and data["z"].shape == (3, 8)

    value = r["veff"]
    failed = invoke(runner, [*args, "--min", value + 0.5])
    assert failed.exit_code == 3, failed.stderr
    assert "gate failed" in failed.stderr and "--min" in failed.stderr
    written = json.loads((out / "report.json").read_text())
    assert written["gate"]["passed"] is False and written["gate"]["value"] == value
    assert invoke(runner, [*args, "--max", value - 0.5]).exit_code == 3
    passed = invoke(runner, [*args, "--min", value - 0.5, "--max", value + 0.5])
    assert passed.exit_code == 0, passed.stderr


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--tau", "-1"], "--tau"),
        (["--tau", "1,abc"], "--tau"),
        (["--step", "0"], "--step"),
        (["--step", "-0.5"], "--step"),
        (["--n", "0"], "--n"),
        (["--k", "0"], "--k"),
        (["--directions", "gaussian"], "--directions"),
    ],
)
def test_cli_bad_input(extra, needle, tiny_ckpt, tmp_path, runner):
    out = tmp_path / "bad"
    result = invoke(runner, ["veff", tiny_ckpt, "--n", 2, "--k", 2, "--out", out, *extra])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("error:") and needle in message and "\n" not in message
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()


def test_cli_bundled_default(tmp_path, runner):
    """No CKPT: the bundled default (committed, so its absence is a failure, not a skip); the CLI's figure is
    the library's on the same latents, and a trained model uses some but not all of its 32 directions."""
    out = tmp_path / "default"
    report = invoke_json(runner, ["veff", "--n", 2, "--k", 4, "--out", out])
    r = report["results"]
    assert report["checkpoint"]["path"] == str(samples_dir() / "mnist-dcgan-nz32.safetensors")
    assert report["checkpoint"]["nz"] == r["nz"] == 32
    lib = run_veff(load_generator(None), VeffParams(num=2, num_directions=4))
    assert r["veff"] == pytest.approx(float(lib.veff[0]), abs=1e-12)
    assert 0 < r["veff"] < 32
    with Image.open(out / "veff_curve.png") as img:
        img.verify()


@pytest.mark.slow
def test_subprocess_each_bundled_checkpoint(tmp_path):
    """The CI use: ``gan-probe veff CKPT --tau 1 --json`` piped into a JSON reader."""
    for ckpt in bundled_checkpoints():
        proc = subprocess.run(
            [sys.executable, "-m", "gan_probe", "veff", str(ckpt), "--n", "4", "--k", "8", "--tau", "1", "--json",
             "--out", str(tmp_path / ckpt.stem)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        r = json.loads(proc.stdout)["results"]
        counts = [row["counts"][0] for row in r["per_latent"]]
        assert r["veff"] == pytest.approx(sum(counts) / len(counts)) and 0 < r["veff"] < r["nz"]


def test_veff_of_singular_direction_generator():
    """A generator that ignores a latent axis: that eigen-direction never counts (delta(j, nz) = 0)."""
    a = torch.randn(12, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    a[:, 3] = 0
    res = run_veff(wrap(Linear(a), 4), VeffParams(num=3, num_directions=8, step=0.5, taus=(1e-6,)))
    assert float(res.delta[:, 3].max()) < 1e-12 and torch.all(res.counts[:, 0] == 3)
