"""Small seeded float64 generators and helpers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gan_probe.models import DCGANGenerator, LoadedGenerator, MLPGenerator, Prior, save_checkpoint, wrap_module


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for the whole suite: the tests run many small products, for which a second thread
    only adds synchronisation, and on a shared 2-core machine it stalls (measured 45 s -> 1 s end to end)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def wrap(module: torch.nn.Module, nz: int, prior: Prior = Prior(), output_range=None) -> LoadedGenerator:
    """A LoadedGenerator around an in-memory float64 module (no file)."""
    return wrap_module(
        module,
        nz=nz,
        prior=prior,
        output_range=output_range,
        arch="test",
        provenance="test",
        source="test",
        dtype=torch.float64,
    )


class Linear(torch.nn.Module):
    """G(z) = A z: the closed-form reference (ln det M = 2 sum ln s_i(A))."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())
        self.nz = a.shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


@pytest.fixture
def mlp_gen() -> LoadedGenerator:
    torch.manual_seed(0)
    return wrap(MLPGenerator(5, [24, 24], [16], "tanh", "tanh"), 5, output_range=(-1.0, 1.0))


@pytest.fixture
def dcgan_gen() -> LoadedGenerator:
    torch.manual_seed(1)
    module = DCGANGenerator(6, 4, 1, 32)
    _randomize_bn(module)
    return wrap(module, 6, output_range=(-1.0, 1.0))


@pytest.fixture
def linear_gen() -> tuple[LoadedGenerator, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    return wrap(Linear(a), 6), a


def _randomize_bn(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm running statistics, as a trained model has."""
    gen = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> Path:
    """A small native DCGAN checkpoint with random weights."""
    torch.manual_seed(4)
    module = DCGANGenerator(8, 4, 1, 32)
    _randomize_bn(module)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(
        path,
        module,
        arch="dcgan",
        config={"nz": 8, "ngf": 4, "nc": 1, "image_size": 32},
        prior=Prior(),
        output_shape=[1, 32, 32],
        output_range=[-1, 1],
        provenance="tests: random weights",
    )
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, args: list[str]):
    """Run the CLI in-process; returns the result (stdout and stderr kept apart)."""
    from gan_probe.cli import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def invoke_json(runner: CliRunner, args: list[str]) -> dict:
    result = invoke(runner, [*args, "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def logdet_of(jac: torch.Tensor) -> torch.Tensor:
    """ln det J^T J (B,) float64 through the one exact route, differentiable through J."""
    from gan_probe.spectral.exact import spectrum_from_jacobian

    return 2 * spectrum_from_jacobian(jac, grad=True).half_logdet
