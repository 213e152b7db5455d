"""Bad input ends in one line naming the value, the problem and the flag or file (exit 1, no traceback, nothing
written): hostile checkpoint files and metadata, custom architectures that misbehave, and a bad value for each
option of each command; random metadata and random latents files never give a traceback.

The table runs in-process through Typer's CliRunner, through the shared harness (tests/conftest.py
``run_refused``); the bounds on sizes, dtypes and paths have their own table (tests/test_input_limits.py).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from gan_probe.errors import first_line
from gan_probe.models import DCGANGenerator
from gan_probe.models.prior_net import PriorNet, save_prior_net
from tests.conftest import assert_flags_exist, invoke, run_refused, save_tiny_dcgan

NZ = 8

FACTORIES = """
import torch


class Flat(torch.nn.Module):
    nz = 4

    def forward(self, z):
        return z.sum(1)


class Pair(torch.nn.Module):
    nz = 4

    def forward(self, z):
        return z, z


class Ints(torch.nn.Module):
    nz = 4

    def forward(self, z):
        return (z > 0).long()


class Raises(torch.nn.Module):
    nz = 4

    def forward(self, z):
        raise ValueError("boom")


def flat():
    return Flat()


def pair():
    return Pair()


def ints():
    return Ints()


def raising():
    return Raises()


def broken():
    raise RuntimeError("factory failed")


def text():
    return "not a module"


def no_nz():
    return torch.nn.Linear(3, 5)
"""


def _meta(**changes: object) -> dict:
    meta: dict = {
        "format_version": 1,
        "arch": "dcgan",
        "config": {"nz": NZ, "ngf": 4, "nc": 1, "image_size": 32},
        "prior": {"kind": "normal", "sigma": 1.0},
        "output": {"shape": [1, 32, 32], "range": [-1, 1]},
        "provenance": "tests",
    }
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            meta[outer] = {**meta[outer], inner: value}
        else:
            meta[key] = value
    return meta


#: gan_probe metadata variants: name -> the metadata (a dict, or raw text)
METAS: dict[str, object] = {
    "cfg_str": _meta(config="nz=32"),
    "out_str": _meta(output="x"),
    "prior_str": _meta(prior="normal"),
    "range_str": _meta(**{"output.range": "tanh"}),
    "range_rev": _meta(**{"output.range": [1, -1]}),
    "range_nan": _meta(**{"output.range": [float("nan"), 1]}),
    "range_one": _meta(**{"output.range": [1]}),
    "shape_zero": _meta(**{"output.shape": [0, 32, 32]}),
    "shape_str": _meta(**{"output.shape": "1x32x32"}),
    "shape_bad": _meta(**{"output.shape": [1, 28, 28]}),
    "kind_int": _meta(**{"prior.kind": 5}),
    "kind_bad": _meta(**{"prior.kind": "cauchy"}),
    "sigma_str": _meta(**{"prior.sigma": "one"}),
    "sigma_neg": _meta(**{"prior.sigma": -1.0}),
    "low_high": _meta(prior={"kind": "uniform", "low": 1.0, "high": -1.0}),
    "arch_int": _meta(arch=5),
    "arch_bad": _meta(arch="resnet"),
    "cfg_list": _meta(config=[32, 4]),
    "cfg_neg": _meta(config={"nz": -3, "ngf": 4, "nc": 1, "image_size": 32}),
    "cfg_huge": _meta(config={"nz": NZ, "ngf": 10**12, "nc": 1, "image_size": 32}),
    "cfg_size": _meta(config={"nz": NZ, "ngf": 4, "nc": 1, "image_size": 33}),
    "prov_int": _meta(provenance=5),
    "version2": _meta(format_version=2),
    "version_str": _meta(format_version="1"),
    "version_bool": _meta(format_version=True),
    "not_json": "{nz: 32",
    "json_list": "[1, 2]",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every hostile file of the table, made once."""
    d = tmp_path_factory.mktemp("hostile")
    module = save_tiny_dcgan(d / "tiny.safetensors", provenance="[/data/mnist] [bold]markup[/bold]")  # nz = NZ
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    for name, meta in METAS.items():
        text = meta if isinstance(meta, str) else json.dumps(meta)
        save_file(state, str(d / f"meta_{name}.safetensors"), metadata={"gan_probe": text})
    bad = dict(state)
    bad["main.0.weight"] = torch.full_like(bad["main.0.weight"], float("nan"))
    save_file(bad, str(d / "nan_weights.safetensors"))
    (d / "truncated.safetensors").write_bytes((d / "tiny.safetensors").read_bytes()[:100])
    (d / "garbage.pth").write_bytes(os.urandom(256))
    (d / "garbage2.pth").write_bytes(random.Random(2).randbytes(256))  # the unpickler fails with IndexError
    torch.save({"not": "tensors", "x": {1, 2}}, d / "objects.pth")
    torch.save({}, d / "empty.pth")
    torch.save({"foo.weight": torch.zeros(3, 3)}, d / "unknown_keys.pth")
    torch.save(state, d / "model[v2].pth")
    (d / "truncated.pth").write_bytes((d / "model[v2].pth").read_bytes()[:-200])  # the zip's directory cut off
    (d / "ckpt.txt").write_text("hello")
    (d / "a_folder.safetensors").mkdir()
    (d / "regular_file").write_text("x")
    (d / "relfactory.py").write_text(FACTORIES)
    torch.manual_seed(5)
    save_prior_net(d / "prior_nz8.safetensors", PriorNet(NZ, NZ, (8, 8, 8)), fitted={}, provenance="tests")
    save_prior_net(d / "prior_nz4.safetensors", PriorNet(4, 4, (8, 8, 8)), fitted={}, provenance="tests")

    rng = np.random.default_rng(0)
    np.save(d / "z_width.npy", rng.normal(size=(2, 5)))
    np.save(d / "z_1d.npy", rng.normal(size=(NZ,)))
    np.save(d / "z_3d.npy", rng.normal(size=(1, 2, NZ)))
    np.save(d / "z_empty.npy", np.zeros((0, NZ)))
    np.save(d / "z_complex.npy", rng.normal(size=(2, NZ)) + 1j)
    np.save(d / "z_nan.npy", np.full((2, NZ), np.nan))
    np.save(d / "z_inf.npy", np.full((2, NZ), np.inf))
    np.save(d / "z_huge.npy", np.full((2, NZ), 1e300))
    np.save(d / "z_text.npy", np.array([["a"] * NZ]))
    np.save(d / "z_bool.npy", np.ones((2, NZ), dtype=bool))
    np.savez(d / "z_two.npz", a=np.zeros((2, NZ)), b=np.zeros((2, NZ)))
    (d / "z_corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    (d / "z.txt").write_text("0 0 0")
    save_file({"z": torch.zeros(2, NZ, dtype=torch.bfloat16)}, str(d / "z_bf16.safetensors"))
    np.save(d / "z_ok.npy", rng.normal(size=(2, NZ)))

    np.save(d / "x_shape.npy", rng.integers(0, 255, size=(5, 3, 7), dtype=np.uint8))
    np.save(d / "x_nan.npy", np.full((4, 1, 32, 32), np.nan))
    np.save(d / "x_complex.npy", np.ones((4, 1, 32, 32), dtype=np.complex64))
    np.save(d / "x_range.npy", np.full((4, 1, 32, 32), 1000.0))
    (d / "x_empty_folder").mkdir()
    (d / "x.txt").write_text("pixels")
    np.save(d / "x_ok.npy", rng.integers(0, 255, size=(4, 1, 32, 32), dtype=np.uint8))
    return d


T = "{d}/tiny.safetensors"
P = "{d}/prior_nz8.safetensors"  # a prior network for T
#: (id, arguments, exit code, a fragment of the one-line message). {d}: the folder of hostile files.
CASES: list[tuple[str, list[str], int, str]] = [
    # --- checkpoints
    ("ckpt-missing", ["info", "{d}/missing.safetensors"], 1, "checkpoint not found"),
    ("ckpt-missing-brackets", ["info", "{d}/gone[v2].pth"], 1, "gone[v2].pth"),
    ("ckpt-brackets-loads", ["info", "{d}/model[v2].pth", "--nz", "16"], 1, "model[v2].pth: --nz 16"),
    ("ckpt-folder", ["info", "{d}/a_folder.safetensors"], 1, "is not a file"),
    ("ckpt-suffix", ["info", "{d}/ckpt.txt"], 1, "unknown checkpoint type"),
    ("ckpt-truncated", ["info", "{d}/truncated.safetensors"], 1, "not a readable safetensors"),
    (
        "ckpt-truncated-zip",
        ["info", "{d}/truncated.pth", "--arch", "dcgan"],
        1,
        "(truncated or corrupt): a zip archive without its central directory (the end of the file is missing)",
    ),
    ("ckpt-garbage-pth", ["info", "{d}/garbage.pth"], 1, "garbage.pth"),
    ("ckpt-garbage-unpickler", ["info", "{d}/garbage2.pth"], 1, "not a readable PyTorch file"),
    ("ckpt-objects-pth", ["info", "{d}/objects.pth"], 1, "objects.pth"),
    ("ckpt-empty-pth", ["info", "{d}/empty.pth"], 1, "empty.pth"),
    ("ckpt-unknown-keys", ["info", "{d}/unknown_keys.pth"], 1, "--arch"),
    ("ckpt-nan-weights", ["info", "{d}/nan_weights.safetensors"], 1, "NaN or infinite"),
    ("ckpt-wrong-arch", ["info", T, "--arch", "mlp"], 1, "mlp"),
    ("ckpt-unknown-arch", ["info", "{d}/model[v2].pth", "--arch", "resnet"], 1, "unknown architecture 'resnet'"),
    ("ckpt-nz-mismatch", ["info", T, "--nz", "16"], 1, "--nz 16 does not match"),
    ("ckpt-nz-zero", ["info", T, "--nz", "0"], 1, "(--nz)"),
    ("ckpt-nz-negative", ["info", T, "--nz", "-3"], 1, "got -3 (--nz)"),
    ("prior-unknown", ["info", T, "--prior", "cauchy"], 1, "--prior normal"),
    ("prior-sigma-zero", ["info", T, "--sigma", "0"], 1, "--sigma"),
    ("prior-sigma-nan", ["info", T, "--sigma", "nan"], 1, "--sigma"),
    ("prior-sigma-inf", ["info", T, "--sigma", "inf"], 1, "--sigma"),
    ("prior-box-reversed", ["info", T, "--prior", "uniform", "--low", "1", "--high", "-1"], 1, "--low/--high"),
    ("prior-box-nan", ["info", T, "--prior", "uniform", "--low", "nan"], 1, "--low/--high"),
    # --- prior networks (--prior-net)
    ("prior-net-missing", ["info", T, "--prior-net", "{d}/nope.safetensors"], 1, "prior network not found"),
    ("prior-net-folder", ["info", T, "--prior-net", "{d}/a_folder.safetensors"], 1, "is not a file (--prior-net)"),
    ("prior-net-truncated", ["info", T, "--prior-net", "{d}/truncated.safetensors"], 1, "not a readable safetensors"),
    ("prior-net-generator", ["info", T, "--prior-net", T], 1, "is not a prior network (arch 'dcgan')"),
    ("prior-net-width", ["loglik", T, "--prior-net", "{d}/prior_nz4.safetensors"], 1, "maps to nz = 4 but"),
    ("prior-net-sigma", ["loglik", T, "--prior-net", P, "--sigma", "2"], 1, "--sigma cannot be combined with"),
    ("prior-net-box", ["info", T, "--prior-net", P, "--prior", "uniform"], 1, "--prior cannot be combined"),
    ("prior-net-prior", ["prior", T, "--prior-net", P], 1, "run gan-probe prior without --prior-net"),
    ("prior-net-synthetic", ["bench", T, "--prior-net", P, "--synthetic", "dcgan64"], 1, "drop --prior-net"),
    ("prior-net-spectrum", ["bench", "spectrum", T, "--prior-net", P], 1, "measures linear generators"),
    # --- gan_probe metadata with wrong types or values
    ("meta-config-str", ["info", "{d}/meta_cfg_str.safetensors"], 1, "field config must be a JSON object"),
    ("meta-output-str", ["info", "{d}/meta_out_str.safetensors"], 1, "field output must be a JSON object"),
    ("meta-prior-str", ["info", "{d}/meta_prior_str.safetensors"], 1, "field prior must be a JSON object"),
    ("meta-range-str", ["info", "{d}/meta_range_str.safetensors"], 1, "field output.range must be null or two"),
    ("meta-range-reversed", ["info", "{d}/meta_range_rev.safetensors"], 1, "got [1, -1]"),
    ("meta-range-nan", ["info", "{d}/meta_range_nan.safetensors"], 1, "field output.range"),
    ("meta-range-one", ["info", "{d}/meta_range_one.safetensors"], 1, "field output.range"),
    ("meta-shape-zero", ["info", "{d}/meta_shape_zero.safetensors"], 1, "field output.shape"),
    ("meta-shape-str", ["info", "{d}/meta_shape_str.safetensors"], 1, "field output.shape"),
    ("meta-shape-mismatch", ["info", "{d}/meta_shape_bad.safetensors"], 1, "metadata says output shape"),
    ("meta-kind-int", ["info", "{d}/meta_kind_int.safetensors"], 1, "field prior.kind"),
    ("meta-kind-unknown", ["info", "{d}/meta_kind_bad.safetensors"], 1, "unknown prior 'cauchy'"),
    ("meta-sigma-str", ["info", "{d}/meta_sigma_str.safetensors"], 1, "field prior.sigma must be a finite number"),
    ("meta-sigma-negative", ["info", "{d}/meta_sigma_neg.safetensors"], 1, "sigma must be a positive number"),
    ("meta-box-reversed", ["info", "{d}/meta_low_high.safetensors"], 1, "low < high"),
    ("meta-arch-int", ["info", "{d}/meta_arch_int.safetensors"], 1, "field arch"),
    ("meta-arch-unknown", ["info", "{d}/meta_arch_bad.safetensors"], 1, "unknown architecture 'resnet'"),
    ("meta-config-list", ["info", "{d}/meta_cfg_list.safetensors"], 1, "field config"),
    ("meta-config-negative", ["info", "{d}/meta_cfg_neg.safetensors"], 1, "cannot be built"),
    ("meta-config-huge", ["info", "{d}/meta_cfg_huge.safetensors"], 1, "meta_cfg_huge.safetensors"),
    ("meta-config-size", ["info", "{d}/meta_cfg_size.safetensors"], 1, "image_size must be 4 * 2^k"),
    ("meta-provenance-int", ["info", "{d}/meta_prov_int.safetensors"], 1, "field provenance"),
    ("meta-version-2", ["info", "{d}/meta_version2.safetensors"], 1, "format_version 2 is not supported"),
    ("meta-version-str", ["info", "{d}/meta_version_str.safetensors"], 1, "format_version '1'"),
    ("meta-version-bool", ["info", "{d}/meta_version_bool.safetensors"], 1, "format_version True"),
    ("meta-not-json", ["info", "{d}/meta_not_json.safetensors"], 1, "not valid JSON"),
    ("meta-json-list", ["info", "{d}/meta_json_list.safetensors"], 1, "must be a JSON object"),
    # --- custom architectures
    ("factory-flat-output", ["info", "--generator", "relfactory:flat"], 1, "to shape (2,)"),
    ("factory-nz-negative", ["info", "--generator", "relfactory:flat", "--nz", "-3"], 1, "(--nz)"),
    ("factory-tuple-output", ["info", "--generator", "relfactory:pair"], 1, "returns a tuple"),
    ("factory-int-output", ["info", "--generator", "relfactory:ints"], 1, "real floating point"),
    ("factory-forward-raises", ["info", "--generator", "relfactory:raising"], 1, "boom"),
    ("factory-raises", ["info", "--generator", "relfactory:broken"], 1, "factory failed"),
    ("factory-not-module", ["info", "--generator", "relfactory:text"], 1, "not an nn.Module"),
    ("factory-no-nz", ["info", "--generator", "relfactory:no_nz"], 1, "give --nz"),
    ("factory-missing", ["info", "--generator", "no_such_module_xyz:make"], 1, "cannot import"),
    ("factory-spec", ["info", "--generator", "nocolon"], 1, "package.module:factory"),
    # --- common options
    ("batch-size-zero", ["loglik", T, "--batch-size", "0"], 1, "--batch-size"),
    ("threads-zero", ["loglik", T, "--threads", "0"], 1, "--threads"),
    ("threads-huge", ["loglik", T, "--threads", "100000"], 1, "--threads 100000"),
    ("device-unknown", ["loglik", T, "--device", "tpu"], 1, "--device 'tpu'"),
    ("device-cuda-99", ["loglik", T, "--device", "cuda:99"], 1, "--device cuda:99"),
    ("dtype-half", ["loglik", T, "--dtype", "float16"], 1, "--dtype 'float16'"),
    ("seed-huge", ["loglik", T, "--seed", str(2**70)], 1, "(--seed)"),
    ("seed-negative", ["loglik", T, "--seed", "-1"], 1, "(--seed)"),
    ("seed-type", ["loglik", T, "--seed", "abc"], 2, "--seed"),
    ("out-below-file", ["loglik", T, "--n", "1", "--out", "{d}/regular_file/sub"], 1, "(--out)"),
    ("out-is-file", ["loglik", T, "--n", "1", "--out", "{d}/regular_file"], 1, "is not a folder"),
    # --- latents
    ("latents-missing", ["loglik", T, "--latents", "{d}/nope.npy"], 1, "latents file not found"),
    ("latents-suffix", ["loglik", T, "--latents", "{d}/z.txt"], 1, "must be .npy, .npz or .safetensors"),
    ("latents-width", ["loglik", T, "--latents", "{d}/z_width.npy"], 1, "width 5"),
    ("latents-1d", ["loglik", T, "--latents", "{d}/z_1d.npy"], 1, "expected (N, 8)"),
    ("latents-3d", ["loglik", T, "--latents", "{d}/z_3d.npy"], 1, "expected (N, 8)"),
    ("latents-empty", ["loglik", T, "--latents", "{d}/z_empty.npy"], 1, "holds no latents"),
    ("latents-complex", ["loglik", T, "--latents", "{d}/z_complex.npy"], 1, "complex"),
    ("latents-nan", ["loglik", T, "--latents", "{d}/z_nan.npy"], 1, "NaN or infinite"),
    ("latents-inf", ["eigvecs", T, "--latents", "{d}/z_inf.npy"], 1, "NaN or infinite"),
    ("latents-huge", ["loglik", T, "--latents", "{d}/z_huge.npy"], 1, "beyond the float32 range"),
    ("latents-huge-ascend", ["ascend", T, "--latents", "{d}/z_huge.npy"], 1, "(--latents)"),
    ("latents-text", ["veff", T, "--latents", "{d}/z_text.npy"], 1, "not real numbers"),
    ("latents-bool", ["loglik", T, "--latents", "{d}/z_bool.npy"], 1, "not real numbers"),
    ("latents-two-arrays", ["loglik", T, "--latents", "{d}/z_two.npz"], 1, "name the latents 'z'"),
    ("latents-corrupt-npz", ["loglik", T, "--latents", "{d}/z_corrupt.npz"], 1, "cannot read latents"),
    ("latents-bf16", ["loglik", T, "--latents", "{d}/z_bf16.safetensors"], 1, "cannot read latents"),
    # --- loglik
    ("loglik-n-zero", ["loglik", T, "--n", "0"], 1, "(--n)"),
    ("loglik-method", ["loglik", T, "--method", "magic"], 1, "unknown method 'magic'"),
    ("loglik-chunk-zero", ["loglik", T, "--chunk-size", "0"], 1, "--chunk-size"),
    ("grid-size-one", ["loglik", T, "--grid", "--grid-size", "1"], 1, "--grid-size"),
    ("grid-size-huge", ["loglik", T, "--grid", "--grid-size", "100000"], 1, "got 100000 (--grid-size)"),
    ("grid-extent-zero", ["loglik", T, "--grid", "--grid-extent", "0"], 1, "--grid-extent"),
    ("grid-extent-inf", ["loglik", T, "--grid", "--grid-extent", "inf"], 1, "got inf (--grid-extent)"),
    ("grid-extent-nan", ["loglik", T, "--grid", "--grid-extent", "nan"], 1, "got nan (--grid-extent)"),
    ("grid-extent-1e300", ["loglik", T, "--grid", "--grid-extent", "1e300"], 1, "beyond the float32 range"),
    ("grid-dims-text", ["loglik", T, "--grid", "--grid-dims", "a,b"], 1, "--grid-dims"),
    ("grid-dims-same", ["loglik", T, "--grid", "--grid-dims", "0,0"], 1, "--grid-dims"),
    ("grid-dims-range", ["loglik", T, "--grid", "--grid-dims", "0,99"], 1, "--grid-dims"),
    ("grid-center-missing", ["loglik", T, "--grid", "--grid-center", "{d}/nope.npy"], 1, "(--grid-center)"),
    ("grid-center-complex", ["loglik", T, "--grid", "--grid-center", "{d}/z_complex.npy"], 1, "(--grid-center)"),
    ("estimator-m-zero", ["loglik", T, "--method", "chebyshev", "--m", "0"], 1, "got 0 (--m)"),
    ("estimator-g-small", ["loglik", T, "--method", "chebyshev", "--g", "0.5"], 1, "--g"),
    ("estimator-g-nan", ["loglik", T, "--method", "taylor", "--g", "nan"], 1, "--g"),
    ("estimator-probes-one", ["loglik", T, "--method", "slq", "--probes", "1"], 1, "got 1 (--probes)"),
    ("estimator-confidence", ["loglik", T, "--method", "slq", "--confidence", "2"], 1, "--confidence"),
    ("estimator-eps-text", ["loglik", T, "--method", "chebyshev", "--eps", "lots"], 1, "--eps"),
    # --- ascend
    ("ascend-steps-zero", ["ascend", T, "--steps", "0"], 1, "--steps"),
    ("ascend-lr-inf", ["ascend", T, "--lr", "inf"], 1, "got inf (--lr)"),
    ("ascend-lr-nan", ["ascend", T, "--lr", "nan"], 1, "(--lr)"),
    ("ascend-lr-negative", ["ascend", T, "--lr", "-1"], 1, "(--lr)"),
    ("ascend-optimizer", ["ascend", T, "--optimizer", "lbfgs"], 1, "--optimizer"),
    ("ascend-frames", ["ascend", T, "--frames", "1"], 1, "--frames"),
    ("ascend-n-zero", ["ascend", T, "--n", "0"], 1, "(--n)"),
    ("ascend-n-huge", ["ascend", T, "--n", "100000000", "--steps", "1"], 1, "would need about"),
    ("ascend-complex", ["ascend", T, "--latents", "{d}/z_complex.npy"], 1, "complex"),
    # --- eigvecs
    ("eigvecs-top-zero", ["eigvecs", T, "--top", "0"], 1, "--top"),
    ("eigvecs-top-big", ["eigvecs", T, "--top", "99"], 1, "--top"),
    ("eigvecs-step-nan", ["eigvecs", T, "--step", "nan"], 1, "--step"),
    ("eigvecs-step-inf", ["eigvecs", T, "--step", "inf"], 1, "--step"),
    ("eigvecs-traversal-one", ["eigvecs", T, "--traversal-steps", "1"], 1, "--traversal-steps"),
    ("eigvecs-traversal-huge", ["eigvecs", T, "--traversal-steps", "100000000"], 1, "(--traversal-steps)"),
    # --- veff
    ("veff-k-zero", ["veff", T, "--k", "0"], 1, "(--k)"),
    ("veff-k-huge", ["veff", T, "--k", "100000000"], 1, "random directions (--k)"),
    ("veff-tau-negative", ["veff", T, "--tau", "-1"], 1, "--tau"),
    ("veff-tau-nan", ["veff", T, "--tau", "nan"], 1, "--tau"),
    ("veff-tau-text", ["veff", T, "--tau", "one"], 1, "--tau"),
    ("veff-directions", ["veff", T, "--directions", "spiral"], 1, "--directions"),
    ("veff-step-zero", ["veff", T, "--step", "0"], 1, "--step"),
    ("veff-gate-reversed", ["veff", T, "--min", "10", "--max", "1"], 2, "--min"),
    ("veff-gate-nan", ["veff", T, "--min", "nan"], 2, "--min"),
    # --- pag
    ("pag-data-missing", ["pag", T, "--data", "{d}/nope.npy"], 1, "data not found"),
    ("pag-data-brackets", ["pag", T, "--data", "{d}/no[/x].npy"], 1, "no[/x].npy"),
    ("pag-data-suffix", ["pag", T, "--data", "{d}/x.txt"], 1, "--data"),
    ("pag-data-shape", ["pag", T, "--data", "{d}/x_shape.npy"], 1, "--data"),
    ("pag-data-nan", ["pag", T, "--data", "{d}/x_nan.npy"], 1, "NaN or infinite"),
    ("pag-data-complex", ["pag", T, "--data", "{d}/x_complex.npy"], 1, "complex"),
    ("pag-data-range", ["pag", T, "--data", "{d}/x_range.npy"], 1, "rescale the data"),
    ("pag-data-empty-folder", ["pag", T, "--data", "{d}/x_empty_folder"], 1, "no PNG or JPEG"),
    ("pag-limit-zero", ["pag", T, "--limit", "0"], 1, "--limit"),
    ("pag-steps-zero", ["pag", T, "--steps", "0"], 1, "--steps"),
    ("pag-steps-huge", ["pag", T, "--steps", "1000000000000"], 1, "loss history of 1000000000000 steps"),
    ("pag-lr-inf", ["pag", T, "--lr", "inf"], 1, "--lr"),
    ("pag-optimizer", ["pag", T, "--optimizer", "rmsprop"], 1, "--optimizer"),
    ("pag-init-std", ["pag", T, "--init-std", "-1"], 1, "--init-std"),
    ("pag-prior-samples-zero", ["pag", T, "--prior-samples", "0"], 1, "--prior-samples"),
    ("pag-prior-samples-huge", ["pag", T, "--prior-samples", "100000000000"], 1, "prior draws"),
    ("pag-top-zero", ["pag", T, "--top", "0"], 1, "--top"),
    ("pag-top-above-draws", ["pag", T, "--prior-samples", "10", "--top", "20"], 1, "--top"),
    ("pag-gate-reversed", ["pag", T, "--min", "10", "--max", "1"], 2, "--min"),
    # --- divergence: sizes beyond the memory, refused before any encoder is trained
    (
        "divergence-model-samples-huge",
        ["divergence", T, "--data", "{d}/x_ok.npy", "--heldout", "0.5", "--model-samples", "1000000000"],
        1,
        "lower the number of model samples (--model-samples)",
    ),
    (
        "divergence-importance-huge",
        ["divergence", T, "--data", "{d}/x_ok.npy", "--heldout", "0.5", "--importance", "1000000000"],
        1,
        "1000000000 importance draws for each of 16 points",
    ),
    # --- sample and bench
    ("sample-n-zero", ["sample", T, "--n", "0"], 1, "(--n)"),
    ("sample-n-huge", ["sample", T, "--n", "1000000000"], 1, "would need about"),
    ("bench-synthetic", ["bench", T, "--synthetic", "gan9000"], 1, "--synthetic"),
    ("bench-synthetic-nz", ["bench", "spectrum", "--synthetic-nz", "1"], 1, "--synthetic-nz"),
    ("bench-methods", ["bench", T, "--methods", "magic"], 1, "--methods"),
    ("bench-conds", ["bench", "spectrum", T, "--conds", "many"], 1, "--conds"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_named_line(args, code, fragment, files, runner, tmp_path, monkeypatch):
    monkeypatch.chdir(files)  # --generator relfactory:... imports from the working folder
    run_refused(runner, args, fragment, folder=files, out=tmp_path / "out", code=code)


def test_torchs_reader_errors_lose_their_boilerplate():
    """torch's zip reader appends "This is an internal miniz error. If you are seeing this error, ..." (four
    sentences about nothing in the file): the one line stops at what is wrong."""
    exc = RuntimeError(
        "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal "
        "miniz error. If you are seeing this error, there is a high likelihood that your checkpoint file is "
        "corrupted.\nsecond line"
    )
    assert first_line(exc) == "PytorchStreamReader failed reading zip archive: failed finding central directory."
    assert first_line(ValueError()) == "ValueError" and first_line(ValueError(), default="") == ""


def test_the_flag_a_refusal_names_is_one_its_command_takes():
    """Each message above names the flag that fixes it ("... (--n)"): the command the user ran must take it."""
    assert_flags_exist([(c[0], c[1], c[3]) for c in CASES])


# --------------------------------------------------------------------------- property-based

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_FIELDS = ("format_version", "arch", "config", "prior", "output", "provenance")


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(_FIELDS), _json, min_size=1, max_size=3), drop=st.booleans())
def test_random_metadata_never_gives_a_traceback(changes, drop, files, runner, tmp_path):
    meta = _meta(**changes)
    if drop:
        meta.pop(next(iter(changes)))
    torch.manual_seed(4)
    state = {k: v.contiguous() for k, v in DCGANGenerator(NZ, 4, 1, 32).state_dict().items()}
    path = tmp_path / "random_meta.safetensors"
    save_file(state, str(path), metadata={"gan_probe": json.dumps(meta)})
    result = invoke(runner, ["info", path, "--json"])
    assert result.exit_code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.exit_code == 1:
        assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr
    else:
        json.loads(result.stdout)


_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64, np.complex128]
_VALUES = st.sampled_from([0.0, 1.0, -2.5, 1e300, -1e38, 3e38, np.nan, np.inf, -np.inf, 1e-320])


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3),
    dtype=st.sampled_from(_DTYPES),
    special=_VALUES,
    fmt=st.sampled_from(["npy", "npz", "safetensors"]),
    command=st.sampled_from(["loglik", "eigvecs"]),
)
def test_random_latents_files_never_give_a_traceback(shape, dtype, special, fmt, command, files, runner, tmp_path):
    rng = np.random.default_rng(len(shape))
    with np.errstate(all="ignore"):
        arr = rng.normal(size=shape).astype(dtype) if shape else np.asarray(special).astype(dtype)
        if arr.size:
            arr.flat[0] = np.asarray(special).astype(dtype)
    path = tmp_path / f"z.{fmt}"
    if fmt == "npy":
        np.save(path, arr)
    elif fmt == "npz":
        np.savez(path, z=arr)
    elif arr.dtype.kind == "c":  # safetensors stores no complex numbers: the .npy then
        path = tmp_path / "z.npy"
        np.save(path, arr)
    else:
        save_file({"z": torch.from_numpy(np.ascontiguousarray(arr))}, str(path))
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "out"  # one per example: tmp_path is shared by all of them
    args = [command, files / "tiny.safetensors", "--latents", path, "--out", out]
    if command == "eigvecs":
        args += ["--top", "2", "--traversal-steps", "2"]
    result = invoke(runner, args)
    assert result.exit_code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.exit_code == 1:
        assert len(result.stderr.strip().splitlines()) == 1 and "(--latents)" in result.stderr
        assert not out.exists()


#: The rows that check a command's own options (not a file's content): each must be refused alike whatever
#: loads the generator.
OPTION_ROWS = [
    c
    for c in CASES
    if T in c[1]
    and c[1][0] in ("loglik", "ascend", "eigvecs", "veff", "pag")
    and not any("{d}" in a for a in c[1] if a != T)
]


@pytest.fixture(scope="module")
def other_loaders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled rosinality StyleGAN2 and an NVIDIA StyleGAN2 pickle (the stylegan3 repository's, from the
    numeric fixture, pickled as NVIDIA's training loop writes it), and images of the pickle's 3x16x16 size."""
    from gan_probe.models.bundled import samples_dir
    from tests.test_nvidia_loading import read_fixture, write_generator_pickle

    d = tmp_path_factory.mktemp("loaders")
    record, _ = read_fixture("nvidia_stylegan2_stylegan3_repo")
    write_generator_pickle(d / "nvidia.pkl", record, d / "executed")
    np.save(d / "images.npy", np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8))
    return {
        "stylegan2": samples_dir() / "mnist-stylegan2.safetensors",
        "nvidia-pickle": d / "nvidia.pkl",
        "images": d / "images.npy",
    }


@pytest.mark.parametrize("loader", ["stylegan2", "nvidia-pickle"])
@pytest.mark.parametrize(("args", "code", "fragment"), [c[1:] for c in OPTION_ROWS], ids=[c[0] for c in OPTION_ROWS])
def test_option_refusals_hold_on_the_stylegan_loaders(loader, args, code, fragment, other_loaders, runner, tmp_path):
    argv = [str(other_loaders[loader]) if a == T else a for a in args]
    if loader == "nvidia-pickle" and args[0] == "pag":
        argv += ["--data", str(other_loaders["images"])]  # the bundled 1x32x32 images do not fit it
    run_refused(runner, argv, fragment, folder=tmp_path, out=tmp_path / "out", code=code)
