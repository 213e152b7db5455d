"""Checkpoint reading: native, PyTorch-examples DCGAN state dicts, overrides, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models import LoadOptions, Prior, load_generator
from gan_probe.models.checkpoint import METADATA_KEY
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum
from tests.conftest import invoke


class ExamplesGenerator(nn.Module):
    """The Generator of the PyTorch examples repository (dcgan/main.py), written out as there."""

    def __init__(self, nz: int, ngf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


def _examples_state(tmp_path: Path, nz=7, ngf=3, nc=3) -> tuple[Path, ExamplesGenerator]:
    torch.manual_seed(10)
    net = ExamplesGenerator(nz, ngf, nc)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "netG_epoch_24.pth"
    torch.save(net.state_dict(), path)
    return path, net.eval()


def test_examples_dcgan_state_dict_loads_with_inferred_config(tmp_path):
    path, net = _examples_state(tmp_path)
    gen = load_generator(path, dtype=torch.float64)
    assert gen.arch == "dcgan"
    assert gen.config == {"nz": 7, "ngf": 3, "nc": 3, "image_size": 64}
    assert gen.output_shape == (3, 64, 64) and gen.output_range == (-1.0, 1.0)
    z = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    net = net.double()
    with torch.no_grad():
        torch.testing.assert_close(gen(z), net(z[:, :, None, None]))
    ours = exact_spectrum(JacobianOperator(gen.flat, z)).half_logdet
    ref = exact_spectrum(JacobianOperator(lambda v: net(v[:, :, None, None]).flatten(1), z)).half_logdet
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_native_roundtrip_keeps_metadata(tiny_ckpt):
    gen = load_generator(tiny_ckpt)
    assert gen.source == "native" and gen.nz == 8 and gen.prior == Prior()
    assert gen.provenance == "tests: random weights"
    assert len(gen.sha256) == 64


def test_wrapped_and_dataparallel_state_dicts(tmp_path):
    path, net = _examples_state(tmp_path)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"netG": state, "epoch": torch.tensor(3)}, wrapped)
    assert load_generator(wrapped).config["nz"] == 7


def test_overrides_prior(tiny_ckpt):
    gen = load_generator(tiny_ckpt, LoadOptions(prior="uniform", low=-2.0, high=2.0))
    assert gen.prior == Prior("uniform", low=-2.0, high=2.0)
    gen = load_generator(tiny_ckpt, LoadOptions(sigma=0.5))
    assert gen.prior.sigma == 0.5


def test_bare_safetensors_and_mlp(tmp_path):
    from safetensors.torch import save_file

    from gan_probe.models import MLPGenerator

    torch.manual_seed(0)
    mlp = MLPGenerator(3, [8], [5])
    path = tmp_path / "bare.safetensors"
    save_file(mlp.state_dict(), str(path))
    gen = load_generator(path)
    assert gen.arch == "mlp" and gen.nz == 3 and gen.output_shape == (5,)
    assert gen.source == "safetensors"


def test_custom_generator_factory(tmp_path, monkeypatch):
    (tmp_path / "mygen.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.Tanh())\n"
        "    m.nz = 4\n"
        "    return m\n"
    )
    monkeypatch.chdir(tmp_path)
    gen = load_generator(None, LoadOptions(generator="mygen:make"))
    assert gen.nz == 4 and gen.output_shape == (9,) and gen.source == "custom"


# --- bad input: one line, exit 1, no traceback, no output folder -------------------------------------------


class Exploit:
    """Unpickling this would create a file: loading must refuse it without running anything."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_files(tmp_path: Path, tiny_ckpt: Path) -> dict[str, tuple[Path, str]]:
    files = {}
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_ckpt.read_bytes()[:200])
    files["truncated"] = (truncated, "truncated or corrupt")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00garbage" * 10)
    files["corrupt"] = (corrupt, "truncated or corrupt")
    files["missing"] = (tmp_path / "nope.safetensors", "not found")
    pickled = tmp_path / "evil.pth"
    torch.save({"weights": Exploit(tmp_path / "pwned")}, pickled)
    files["pickle"] = (pickled, "refused")
    path, net = _examples_state(tmp_path)
    state = net.state_dict()
    state["main.3.weight"] = torch.zeros(5, 5, 4, 4)
    shapes = tmp_path / "shapes.pth"
    torch.save(state, shapes)
    files["shapes"] = (shapes, "main.3.weight")
    state = net.state_dict()
    state["main.0.weight"][0, 0, 0, 0] = float("nan")
    nan = tmp_path / "nan.pth"
    torch.save(state, nan)
    files["nan"] = (nan, "NaN")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    files["suffix"] = (text, "unknown checkpoint type")
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_dict)
    files["not a state dict"] = (not_dict, "does not hold a state dict")
    return files


@pytest.mark.parametrize(
    "case", ["truncated", "corrupt", "missing", "pickle", "shapes", "nan", "suffix", "not a state dict"]
)
def test_bad_checkpoints_exit_1_with_message(case, tmp_path, tiny_ckpt, runner):
    path, needle = _bad_files(tmp_path, tiny_ckpt)[case]
    out = tmp_path / "out"
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", out])
    assert result.exit_code == 1, result.output
    assert needle in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()


def test_pickle_refused_by_the_library_without_running(tmp_path, tiny_ckpt):
    path, _ = _bad_files(tmp_path, tiny_ckpt)["pickle"]
    with pytest.raises(CheckpointError, match="never runs code"):
        load_generator(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--arch", "resnet"], "unknown architecture 'resnet'"),
        (["--nz", "9"], "--nz 9 does not match"),
        (["--prior", "cauchy"], "unknown prior"),
        (["--sigma", "-1"], "sigma must be a positive"),
        (["--prior", "uniform", "--low", "1", "--high", "0"], "low < high"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--dtype", "float16"], "--dtype 'float16'"),
        (["--batch-size", "0"], "--batch-size"),
        (["--grid", "--grid-dims", "0,0"], "--grid-dims"),
        (["--grid", "--grid-size", "1"], "--grid-size"),
        (["--generator", "no_such_module:make"], "cannot import"),
    ],
)
def test_bad_options_exit_1(args, needle, tiny_ckpt, tmp_path, runner):
    out = tmp_path / "out"
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", out, *args])
    assert result.exit_code == 1, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_metadata(tmp_path, tiny_ckpt):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_ckpt), framework="pt") as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(fh.metadata()[METADATA_KEY])
    meta["format_version"] = 99
    path = tmp_path / "future.safetensors"
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_generator(path)
