"""loglik: the analysis against references, and the CLI end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gan_probe import __version__
from gan_probe.analyses.loglik import GridParams, LoglikParams, evaluate_loglik, run_loglik
from gan_probe.models import MLPGenerator, Prior, load_generator, save_checkpoint
from gan_probe.models.bundled import default_checkpoint
from tests.conftest import dense_half_logdet, invoke, invoke_json, wrap


def test_loglik_linear_closed_form(linear_gen):
    gen, a = linear_gen
    z = torch.randn(4, gen.nz, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = evaluate_loglik(gen, z)
    log_prior = -0.5 * (z * z).sum(-1) - 0.5 * gen.nz * math.log(2 * math.pi)
    expected = log_prior - torch.log(torch.linalg.svdvals(a)).sum()
    torch.testing.assert_close(values.loglik, expected, rtol=1e-12, atol=1e-10)


def test_uniform_prior_outside_box_is_null():
    gen = wrap(MLPGenerator(2, [8], [4], "tanh"), 2, prior=Prior("uniform", low=-1.0, high=1.0))
    z = torch.tensor([[0.5, -0.5], [1.5, 0.0]], dtype=torch.float64)
    values = evaluate_loglik(gen, z)
    assert values.log_prior[0] == -2 * math.log(2.0)  # the box [-1, 1]^2 has area 4
    # inside: ln p(z) - 1/2 ln det J^T J against the dense twin
    ref = -2 * math.log(2.0) - float(dense_half_logdet(gen.flat, z[:1])[0])
    assert float(values.loglik[0]) == pytest.approx(ref, rel=1e-10, abs=1e-10)
    assert values.loglik[1] == -math.inf
    assert values.per_sample()[1]["loglik"] == -math.inf  # becomes null in JSON


def test_batch_and_chunk_size_do_not_change_results(dcgan_gen):
    a = run_loglik(dcgan_gen, LoglikParams(num=7, batch_size=7, seed=3)).values
    b = run_loglik(dcgan_gen, LoglikParams(num=7, batch_size=2, chunk_size=1, seed=3)).values
    torch.testing.assert_close(a.loglik, b.loglik, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.condition, b.condition, rtol=1e-12, atol=0)


def test_same_seed_same_numbers(dcgan_gen):
    a = run_loglik(dcgan_gen, LoglikParams(num=3, seed=5)).values.loglik
    b = run_loglik(dcgan_gen, LoglikParams(num=3, seed=5)).values.loglik
    c = run_loglik(dcgan_gen, LoglikParams(num=3, seed=6)).values.loglik
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grid_plane_geometry(dcgan_gen):
    result = run_loglik(dcgan_gen, LoglikParams(num=1, grid=GridParams(dims=(1, 4), size=3, extent=2.0)))
    z = result.grid.values.z
    assert z.shape == (9, dcgan_gen.nz)
    assert torch.equal(z[:, [0, 2, 3, 5]], torch.zeros(9, 4, dtype=torch.float64))
    assert z[0, 1] == -2.0 and z[2, 1] == 2.0 and z[0, 4] == -2.0 and z[8, 4] == 2.0
    random = run_loglik(dcgan_gen, LoglikParams(num=1, grid=GridParams(size=3))).grid
    torch.testing.assert_close(random.basis @ random.basis.T, torch.eye(2, dtype=torch.float64))


def _open_png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_cli_loglik_grid_end_to_end(tiny_ckpt, tmp_path, runner):
    out = tmp_path / "run"
    report = invoke_json(
        runner, ["loglik", tiny_ckpt, "--n", "5", "--grid", "--grid-size", "4", "--grid-dims", "0,3", "--out", out]
    )
    assert report["command"] == "loglik" and report["version"] == __version__
    assert report["checkpoint"]["nz"] == 8 and len(report["checkpoint"]["sha256"]) == 64
    res = report["results"]
    assert res["method"] == "exact" and len(res["samples"]) == 5
    row = res["samples"][0]
    assert math.isclose(row["loglik"], row["log_prior"] - row["half_logdet"], rel_tol=1e-12)
    assert row["condition"] >= 1 and row["lambda_max"] >= row["lambda_min"] > 0
    grid = res["grid"]
    assert grid["size"] == 4 and np.array(grid["loglik"]).shape == (4, 4) and grid["dims"] == [0, 3]
    # the JSON agrees with the library
    gen = load_generator(tiny_ckpt)
    lib = run_loglik(gen, LoglikParams(num=5, seed=0)).values.loglik
    np.testing.assert_allclose([r["loglik"] for r in res["samples"]], lib.numpy(), rtol=1e-9)
    assert (out / "report.json").is_file()
    assert json.loads((out / "report.json").read_text())["results"]["samples"] == res["samples"]
    for name in ("samples.png", "grid_samples.png", "grid_loglik.png"):
        w, h = _open_png(out / name)
        assert w > 32 and h > 32
    with np.load(out / "grid.npz") as npz:
        assert npz["z"].shape == (16, 8)
    assert not list(out.glob(".gan-probe-*")) and not list(out.glob("*.tmp"))


def test_cli_latents_file(tiny_ckpt, tmp_path, runner):
    z = np.random.default_rng(0).standard_normal((3, 8))
    np.savez(tmp_path / "z.npz", z=z)
    report = invoke_json(runner, ["loglik", tiny_ckpt, "--latents", tmp_path / "z.npz", "--out", tmp_path / "o"])
    assert len(report["results"]["samples"]) == 3
    np.testing.assert_allclose(
        report["results"]["samples"][1]["log_prior"], -0.5 * (z[1] ** 2).sum() - 4 * math.log(2 * math.pi)
    )


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((3, 5)), "width 5 but the generator has nz = 8"),
        (np.zeros(8), "shape (8,)"),
        (np.full((2, 8), np.nan), "NaN"),
    ],
)
def test_cli_bad_latents(array, needle, tiny_ckpt, tmp_path, runner):
    np.save(tmp_path / "z.npy", array)
    out = tmp_path / "o"
    result = invoke(runner, ["loglik", tiny_ckpt, "--latents", tmp_path / "z.npy", "--out", out])
    assert result.exit_code == 1 and needle in result.stderr and not out.exists()


def test_singular_generator_reports_null_and_flag(tmp_path, runner):
    torch.manual_seed(0)
    path = tmp_path / "squash.safetensors"
    save_checkpoint(
        path,
        MLPGenerator(4, [6], [2]),
        arch="mlp",
        config={"nz": 4, "hidden": [6], "out_shape": [2], "activation": "relu", "output_activation": "none"},
        prior=Prior(),
        output_shape=[2],
        output_range=None,
        provenance="test: 4 -> 2 is never injective",
    )
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", tmp_path / "o", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    row = report["results"]["samples"][0]
    assert row["loglik"] is None and row["singular"] is True and row["condition"] is None
    assert report["results"]["summary"]["num_singular"] == 2
    assert "singular J" in result.stderr


def test_cli_info_and_sample(tiny_ckpt, tmp_path, runner):
    info = invoke_json(runner, ["info", tiny_ckpt])
    assert info["results"]["arch"] == "dcgan" and info["results"]["num_params"] > 0
    assert info["files"] == []
    report = invoke_json(runner, ["sample", tiny_ckpt, "--n", "6", "--out", tmp_path / "s"])
    assert report["results"]["num_samples"] == 6
    _open_png(tmp_path / "s" / "samples.png")
    with np.load(tmp_path / "s" / "samples.npz") as npz:
        assert npz["z"].shape == (6, 8)


def test_version_and_usage_error(runner):
    result = invoke(runner, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    assert invoke(runner, ["loglik", "--no-such-flag"]).exit_code == 2


def test_bundled_default_exists_and_loads():
    """No path loads the bundled file: the same generator as naming the file, with its metadata's sizes."""
    from safetensors import safe_open

    path = default_checkpoint()
    assert path.is_file() and path.name == "mnist-dcgan-nz32.safetensors"
    gen, named = load_generator(None), load_generator(path)
    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["gan_probe"])
    assert gen.nz == meta["config"]["nz"] and list(gen.output_shape) == meta["output"]["shape"]
    z = torch.randn(3, gen.nz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gen(z), named(z), rtol=0, atol=0)
        assert gen(z).shape == (3, *gen.output_shape)


def test_subprocess_default_checkpoint_grid(tmp_path):
    """The README's main job, as a real process: no CKPT, --grid, strict JSON on stdout only."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gan_probe",
            "loglik",
            "--grid",
            "--grid-size",
            "5",
            "--n",
            "4",
            "--json",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"]["path"].endswith("mnist-dcgan-nz32.safetensors")
    assert np.array(report["results"]["grid"]["loglik"]).shape == (5, 5)
    for name in ("samples.png", "grid_samples.png", "grid_loglik.png"):
        _open_png(out / name)


@pytest.mark.cuda
def test_cuda_matches_cpu(tiny_ckpt):
    """The same latents give the same ln Q on the GPU (float64 there too) as on the CPU."""
    cpu = load_generator(tiny_ckpt, dtype=torch.float64)
    gpu = load_generator(tiny_ckpt, device="cuda", dtype=torch.float64)
    a = run_loglik(cpu, LoglikParams(num=4, seed=1)).values.loglik
    b = run_loglik(gpu, LoglikParams(num=4, seed=1)).values.loglik
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
def test_cli_device_auto_picks_cuda(tiny_ckpt, tmp_path, runner):
    report = invoke_json(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", tmp_path / "o"])
    assert report["device"].startswith("cuda")
