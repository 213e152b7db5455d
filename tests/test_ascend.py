"""``gan-probe ascend`` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import invoke, invoke_json


def test_ascend_raises_loglik_and_writes_files(runner, tiny_ckpt, tmp_path):
    out = tmp_path / "asc"
    report = invoke_json(runner, ["ascend", tiny_ckpt, "--n", "2", "--steps", "6", "--lr", "0.1", "--out", out])
    res = report["results"]
    assert res["steps_done"] == 6 and not res["interrupted"]
    for row in res["latents"]:
        assert row["loglik_end"] > row["loglik_start"]
    for name in ("strips.png", "strip_000.png", "strip_001.png", "ascent.png"):
        with Image.open(out / name) as img:
            img.verify()
    traj = np.load(out / "trajectories.npz")
    assert traj["z"].shape == (7, 2, 8) and traj["loglik"].shape == (7, 2)
    assert np.allclose(traj["loglik"][[0, -1]].T, [[r["loglik_start"], r["loglik_end"]] for r in res["latents"]])
    # the final latents feed straight into loglik
    ll = invoke_json(runner, ["loglik", tiny_ckpt, "--latents", out / "latents.npz", "--out", tmp_path / "ll"])
    assert [s["loglik"] for s in ll["results"]["samples"]] == pytest.approx(
        [r["loglik_end"] for r in res["latents"]], abs=1e-3
    )


def test_ascend_uniform_prior_stays_in_the_box(runner, tiny_ckpt, tmp_path):
    out = tmp_path / "box"
    args = ["ascend", tiny_ckpt, "--prior", "uniform", "--low", "-0.5", "--high", "0.5", "--n", "2", "--steps", "5"]
    report = invoke_json(runner, [*args, "--lr", "0.5", "--optimizer", "sgd", "--dtype", "float64", "--out", out])
    z = np.load(out / "trajectories.npz")["z"]
    assert z.min() >= -0.5 and z.max() <= 0.5
    res = report["results"]
    assert all(r["loglik_end"] >= r["loglik_start"] - 1e-6 for r in res["latents"])


def test_ascend_with_an_estimator_gradient(runner, tiny_ckpt, tmp_path):
    report = invoke_json(
        runner,
        [
            "ascend",
            tiny_ckpt,
            "--n",
            "2",
            "--steps",
            "4",
            "--lr",
            "0.1",
            "--method",
            "slq",
            "--slq-steps",
            "8",
            "--probes",
            "4",
            "--dtype",
            "float64",
            "--out",
            tmp_path / "slq",
        ],
    )
    res = report["results"]
    assert res["method"] == "slq" and res["loglik_recorded_exactly"]
    assert res["end"]["loglik"]["mean"] > res["start"]["loglik"]["mean"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--steps", "0"], "--steps"),
        (["--lr", "0"], "--lr"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--method", "magic"], "--method"),
        (["--method", "chebyshev", "--g", "0.5"], "--g"),
    ],
)
def test_ascend_bad_input(runner, tiny_ckpt, tmp_path, args, flag):
    result = invoke(runner, ["ascend", tiny_ckpt, *args, "--out", tmp_path / "bad"])
    assert result.exit_code == 1
    assert flag in result.stderr
    assert not (tmp_path / "bad").exists()


def test_ascend_interrupt_keeps_the_steps_done(runner, tiny_ckpt, tmp_path, monkeypatch):
    import gan_probe.analyses.ascend as mod

    calls = {"n": 0}
    real = mod._record

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mod, "_record", flaky)
    out = tmp_path / "int"
    result = invoke(runner, ["ascend", tiny_ckpt, "--n", "2", "--steps", "10", "--out", out, "--json"])
    assert result.exit_code == 130
    import json

    report = json.loads(result.stdout)
    assert report["results"]["interrupted"] and report["results"]["steps_done"] == 2
    assert (out / "strips.png").exists() and (out / "latents.npz").exists()


@pytest.mark.parametrize("method", ["exact", "slq"])
def test_ascend_on_a_wide_generator_reports_singular_latents(runner, tmp_path, method):
    """An MLP 4 -> 2 has a wide J: ln Q = -inf at every latent. ascend used to exit 1 with
    'internal error: linalg.solve_triangular: A must be batches of square matrices'; it now reports the
    latents as singular (ln Q null), leaves them where they are, and loglik agrees."""
    import torch

    from gan_probe.models import MLPGenerator, Prior, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "wide.safetensors"
    config = {"nz": 4, "hidden": [8], "out_shape": [2], "activation": "tanh", "output_activation": "none"}
    save_checkpoint(path, MLPGenerator(4, [8], [2], "tanh", "none"), arch="mlp", config=config, prior=Prior(),
                    output_shape=[2], output_range=None, provenance="test: a wide Jacobian")  # fmt: skip
    report = invoke_json(runner, ["ascend", path, "--n", "3", "--steps", "2", "--method", method,
                                  "--slq-steps", "3", "--probes", "2", "--out", tmp_path / "a"])  # fmt: skip
    res = report["results"]
    assert res["num_singular_start"] == 3 and res["steps_done"] == 2
    assert all(row["loglik_start"] is None and row["loglik_end"] is None for row in res["latents"])
    with np.load(tmp_path / "a" / "trajectories.npz") as f:
        assert np.array_equal(f["z"][0], f["z"][-1])
    loglik = invoke_json(runner, ["loglik", path, "--n", "3", "--out", tmp_path / "l"])["results"]
    assert all(s["singular"] and s["loglik"] is None for s in loglik["samples"])
