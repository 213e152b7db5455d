"""TorchScript and torch.export programs as generators: loaded with no --generator, checked against the eager
module they came from, and refused (with the fix named) when they cannot work or could run Python."""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models import LoadOptions, load_generator
from gan_probe.models.programs import EXPORT, TORCHSCRIPT, program_kind
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum
from tests.conftest import dense_half_logdet, invoke, invoke_json
from tests.test_checkpoint import Exploit

NZ = 5

# torch deprecates TorchScript in favour of torch.export; users still have TorchScript files, so the tests make them
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class Small(nn.Module):
    """A small conv generator taking (B, nz): Linear -> (B, 4, 4, 4) -> ConvTranspose -> tanh, (B, 1, 8, 8)."""

    def __init__(self, nz: int = NZ, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(nz, 64)
        self.up = nn.ConvTranspose2d(4, 1, 4, 2, 1)
        self.nz = nz
        self.output_range = (-1.0, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(z)).reshape(z.shape[0], 4, 4, 4)
        return torch.tanh(self.up(h))


class Warped(nn.Module):
    """Small followed by grid_sample, which has no forward-mode AD rule: J must come by reverse mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Small(seed=1)
        g = torch.Generator().manual_seed(2)
        self.register_buffer("grid", torch.rand(1, 6, 6, 2, generator=g) * 1.6 - 0.8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.grid.expand(z.shape[0], 6, 6, 2)
        return nn.functional.grid_sample(self.body(z), grid, align_corners=False)


def _latents(n: int = 3) -> torch.Tensor:
    return torch.randn(n, NZ, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _reference_half_logdet(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    module = module.double().eval()
    return dense_half_logdet(module, z)


def _half_logdet(gen, z: torch.Tensor) -> torch.Tensor:
    return exact_spectrum(JacobianOperator(gen.flat, z.to(gen.dtype), routes=gen.routes)).half_logdet


def test_traced_torchscript_needs_nz_and_matches_the_module(tmp_path):
    module = Small().eval()
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(module, torch.randn(2, NZ)), str(path))
    assert program_kind(path) == TORCHSCRIPT
    with pytest.raises(CheckpointError, match="does not record its latent size.*give --nz"):
        load_generator(path)
    gen = load_generator(path, LoadOptions(nz=NZ), dtype=torch.float64)
    assert gen.source == "torchscript" and gen.nz == NZ and gen.output_shape == (1, 8, 8) and gen.key is None
    assert gen.output_range is None  # a traced module keeps no attributes: --output-range supplies it
    z = _latents()
    torch.testing.assert_close(_half_logdet(gen, z), _reference_half_logdet(Small(), z), rtol=1e-10, atol=1e-10)


def test_scripted_torchscript_reads_its_attributes_whatever_the_extension(tmp_path):
    path = tmp_path / "generator.jit"  # detected by content, not by name
    torch.jit.save(torch.jit.script(Small().eval()), str(path))
    gen = load_generator(path, dtype=torch.float64)
    assert gen.arch == "torchscript" and gen.nz == NZ and gen.output_range == (-1.0, 1.0)
    z = _latents()
    torch.testing.assert_close(_half_logdet(gen, z), _reference_half_logdet(Small(), z), rtol=1e-10, atol=1e-10)
    overridden = load_generator(path, LoadOptions(output_range="0,1"))
    assert overridden.output_range == (0.0, 1.0)


def _export(tmp_path: Path, module: nn.Module, name: str = "g.pt2", dynamic: bool = True) -> Path:
    path = tmp_path / name
    shapes = {"z": {0: torch.export.Dim("batch")}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module.eval(), (torch.randn(2, NZ),), dynamic_shapes=shapes), path)
    return path


def test_export_with_dynamic_batch_loads_with_nz_from_its_input_spec(tmp_path, runner):
    path = _export(tmp_path, Small())
    assert program_kind(path) == EXPORT
    gen = load_generator(path, dtype=torch.float64)
    assert gen.source == "torch.export" and gen.nz == NZ and gen.output_shape == (1, 8, 8)
    z = _latents()
    torch.testing.assert_close(_half_logdet(gen, z), _reference_half_logdet(Small(), z), rtol=1e-10, atol=1e-10)
    report = invoke_json(runner, ["loglik", path, "--n", "3", "--batch-size", "2", "--out", tmp_path / "o"])
    assert report["checkpoint"]["source"] == "torch.export" and report["results"]["summary"]["num_finite"] == 3


def test_export_with_static_batch_names_torch_export_dim(tmp_path, runner):
    path = _export(tmp_path, Small(), "static.pt2", dynamic=False)
    with pytest.raises(CheckpointError, match=r"fixed batch size of 2.*torch\.export\.Dim\('batch'\)"):
        load_generator(path)
    result = invoke(runner, ["info", path])
    assert result.exit_code == 1 and "torch.export.Dim" in result.stderr


def test_program_without_forward_ad_falls_back_to_reverse_mode_with_a_note(tmp_path, runner):
    path = tmp_path / "warped.pt"
    torch.jit.save(torch.jit.script(Warped().eval()), str(path))
    gen = load_generator(path, LoadOptions(nz=NZ), dtype=torch.float64)
    z = _latents()
    torch.testing.assert_close(_half_logdet(gen, z), _reference_half_logdet(Warped(), z), rtol=1e-9, atol=1e-9)
    assert gen.routes.value == "reverse"
    assert any("grid_sampler_2d" in n and "reverse mode" in n for n in gen.notes)
    result = invoke(runner, ["loglik", path, "--nz", str(NZ), "--n", "2", "--out", tmp_path / "o", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "double VJP" in result.stderr and "grid_sampler_2d" in result.stderr
    assert any("grid_sampler_2d" in n for n in json.loads(result.stdout)["checkpoint"]["notes"])


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--generator", "x:y"], "drop --generator"), (["--key", "g_ema"], "drop --key"), (["--arch", "mlp"], "--arch")],
)
def test_program_refuses_flags_that_do_not_apply(tmp_path, runner, flags, needle):
    path = _export(tmp_path, Small())
    result = invoke(runner, ["info", path, *flags])
    assert result.exit_code == 1 and needle in result.stderr and "carries its own architecture" in result.stderr


class TrainModeBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc, self.bn = nn.Linear(NZ, 12), nn.BatchNorm1d(12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc(z)))


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc = nn.Linear(NZ, 12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).reshape(2, 12)


class ReadsFiles(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        noise = torch.from_file("/dev/zero", size=1, dtype=torch.uint8)
        return z + noise.sum().to(z.dtype)


def test_program_that_mixes_a_batch_is_refused(tmp_path):
    path = tmp_path / "train_mode.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(TrainModeBN().train(), torch.randn(4, NZ)), str(path))
    with pytest.raises(CheckpointError, match="depends on the other latents of its batch.*model.eval"):
        load_generator(path, LoadOptions(nz=NZ))


def test_program_traced_with_a_fixed_batch_is_refused(tmp_path):
    path = tmp_path / "fixed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(FixedBatch().eval(), torch.randn(2, NZ)), str(path))
    with pytest.raises(CheckpointError, match="fails on a batch of 3 latents.*torch.export.Dim"):
        load_generator(path, LoadOptions(nz=NZ))


def test_torchscript_calling_file_io_is_refused(tmp_path):
    path = tmp_path / "reads.pt"
    torch.jit.save(torch.jit.script(ReadsFiles()), str(path))
    with pytest.raises(CheckpointError, match="refused: its TorchScript calls aten::from_file"):
        load_generator(path, LoadOptions(nz=NZ))


# --- torch.export archives whose loading could run Python are refused before torch.export.load sees them ----------


def _tampered(tmp_path: Path, edit) -> Path:
    """A copy of a good .pt2 archive with ``edit(members: dict[name, bytes], root)`` applied."""
    good = _export(tmp_path, Small(), "good.pt2")
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    root = next(iter(members)).split("/", 1)[0] + "/"
    edit(members, root)
    path = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _edit_model(fn):
    def edit(members: dict[str, bytes], root: str) -> None:
        name = root + "models/model.json"
        members[name] = json.dumps(fn(json.loads(members[name]))).encode()

    return edit


def _exploit_sample_inputs(marker: Path):
    def edit(members: dict[str, bytes], root: str) -> None:
        buffer = io.BytesIO()
        torch.save(((Exploit(marker),), {}), buffer)
        members[root + "data/sample_inputs/model.pt"] = buffer.getvalue()

    return edit


def _set_guards(model: dict) -> dict:
    model["guards_code"] = ["L['z'].size()[0] >= 0", "__import__('os').system('true')"]
    return model


def _set_target(model: dict) -> dict:
    node = next(n for n in model["graph_module"]["graph"]["nodes"] if n["target"].startswith("torch.ops.aten."))
    node["target"] = "torch.os.system"
    return model


def _set_expr(model: dict) -> dict:
    text = json.dumps(model)
    text = re.sub(r'"expr_str": "[^"]*"', '"expr_str": "Symbol(\'s0\').func.__globals__"', text, count=1)
    return json.loads(text)


def _add_library(members: dict[str, bytes], root: str) -> None:
    members[root + "data/aotinductor/model/model.so"] = b"\x7fELF not really"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("sample_inputs", "pickled objects other than tensors"),
        ("guards", 'carries guard code "__import__'),
        ("target", "its graph calls 'torch.os.system'"),
        ("expr", "symbolic shape expression"),
        ("library", "data/aotinductor/model/model.so"),
    ],
)
def test_export_archive_that_could_run_python_is_refused(tmp_path, runner, case, needle):
    marker = tmp_path / "pwned"
    edit = {
        "sample_inputs": _exploit_sample_inputs(marker),
        "guards": _edit_model(_set_guards),
        "target": _edit_model(_set_target),
        "expr": _edit_model(_set_expr),
        "library": _add_library,
    }[case]
    path = _tampered(tmp_path, edit)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_generator(path)
    assert needle in str(info.value)
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", tmp_path / "o"])
    assert result.exit_code == 1 and needle in result.stderr and not (tmp_path / "o").exists()
    assert not marker.exists()


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(NZ, 8)

    def forward(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z) + noise)


class ThreeD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(NZ, 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z))


BATCH = torch.export.Dim("batch")


def _export_any(tmp_path: Path, module: nn.Module, args: tuple, shapes) -> Path:
    path = tmp_path / "other.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module.eval(), args, dynamic_shapes=shapes), path)
    return path


def _custom_object_constant(members: dict[str, bytes], root: str) -> None:
    name = root + "data/constants/model_constants_config.json"
    members[name] = json.dumps({"config": {"obj": {"path_name": "custom_obj_0", "use_pickle": True}}}).encode()


def _old_format(members: dict[str, bytes], root: str) -> None:
    del members[root + "archive_format"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (
            lambda tmp: _export_any(
                tmp, TwoInputs(), (torch.randn(2, NZ), torch.randn(2, 8)), ({0: BATCH}, {0: BATCH})
            ),
            "takes 2 inputs (z, noise)",
        ),
        (
            lambda tmp: _export_any(tmp, ThreeD(), (torch.randn(2, 3, NZ),), ({0: torch.export.Dim("b")},)),
            "has shape",
        ),
        (lambda tmp: _tampered(tmp, _custom_object_constant), "constant 'obj' is a pickled object"),
        (lambda tmp: _tampered(tmp, _old_format), "not a torch.export archive in the current format"),
    ],
)
def test_export_programs_gan_probe_cannot_feed_are_refused(tmp_path, make, needle):
    with pytest.raises(CheckpointError) as info:
        load_generator(make(tmp_path))
    assert needle in str(info.value)


def test_unreadable_pt2_and_nz_mismatch(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="not a readable torch.export archive"):
        load_generator(junk)
    with pytest.raises(CheckpointError, match="--nz 3 does not match the program, which takes nz = 5"):
        load_generator(_export(tmp_path, Small()), LoadOptions(nz=3))
