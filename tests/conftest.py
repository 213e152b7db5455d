"""Small seeded float64 generators and helpers shared by the tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import typer.main
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


def save_tiny_dcgan(
    path: Path, *, provenance: str = "tests", arch: str = "dcgan", randomize_bn: bool = False
) -> DCGANGenerator:
    """Write a small native DCGAN checkpoint (nz 8, seeded weights) at ``path``; returns its module."""
    torch.manual_seed(4)
    module = DCGANGenerator(8, 4, 1, 32)
    if randomize_bn:
        _randomize_bn(module)
    config = {"nz": 8, "ngf": 4, "nc": 1, "image_size": 32}
    save_checkpoint(
        path, module, arch=arch, config=config, prior=Prior(), output_shape=[1, 32, 32], output_range=[-1, 1],
        provenance=provenance,
    )  # fmt: skip
    return module


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> Path:
    """A small native DCGAN checkpoint with random weights."""
    path = tmp_path / "tiny.safetensors"
    save_tiny_dcgan(path, provenance="tests: random weights", randomize_bn=True)
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


# --------------------------------------------------------------------------- the dense float64 twin


def dense_jacobian(fn, z: torch.Tensor, *, create_graph: bool = False, vectorize: bool = True) -> torch.Tensor:
    """(B, N, nz) J of ``fn`` (B, nz) -> (B, ...) at each latent, by plain reverse-mode autograd, one latent at a
    time: the reference the Jacobian code (forward mode, chunked, vmapped) is tested against. ``create_graph``
    keeps it differentiable (w.r.t. ``z`` and ``fn``'s parameters); ``vectorize=False`` for a function that
    cannot run under vmap."""
    return torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda v: fn(v[None]).reshape(-1), zi, create_graph=create_graph, vectorize=vectorize
            )
            for zi in z
        ]
    )


def dense_half_logdet(fn, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
    """(B,) 1/2 ln det J^T J of :func:`dense_jacobian` by ``slogdet`` of the dense metric (no QR, no SVD)."""
    jac = dense_jacobian(fn, z, create_graph=create_graph)
    return 0.5 * torch.linalg.slogdet(jac.transpose(1, 2) @ jac).logabsdet


# --------------------------------------------------------------------------- the bad-input harness

#: a flag named twice in one line: "... (--n) (--n)"
_FLAG_TWICE = re.compile(r"\(--[\w-]+\) \(--")


def assert_refused(result, fragment: str, *, code: int = 1, out: Path | None = None) -> str:
    """The one way the command line may refuse bad input: exit ``code``; for 1, exactly one line on stderr, an
    ``error:`` line holding ``fragment`` that names its flag once, and nothing on stdout; for 2 (a usage error
    from the parser), ``fragment`` on stderr; never a traceback or an internal error; ``out`` not created.
    Returns the error line (for 2, the whole stderr)."""
    text = result.stderr
    assert result.exit_code == code, result.stdout + text
    assert "Traceback" not in result.output + text and "internal error" not in text, text
    if out is not None:
        assert not out.exists(), f"{out} was written"  # nothing written, not even the folder
    if code != 1:
        assert fragment in text, text
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    line = lines[0]
    assert fragment in line, text
    assert not _FLAG_TWICE.search(line), line
    assert result.stdout == "", result.stdout
    return line


def run_refused(runner: CliRunner, args: list[str], fragment: str, *, folder: Path, out: Path, code: int = 1):
    """One row of a bad-input table: ``args`` with ``{d}`` standing for ``folder``, run with ``--out out`` (but
    ``info``, which writes nothing), must be refused as :func:`assert_refused` says. Returns the result."""
    argv = [a.format(d=folder) for a in args]
    if argv[0] != "info" and "--out" not in argv:
        argv += ["--out", str(out)]
    result = invoke(runner, argv)
    assert_refused(result, fragment, code=code, out=out)
    return result


def command_options(command: str) -> set[str]:
    """Every flag the command line's ``command`` takes (its subcommands' too)."""
    from gan_probe.cli import app

    # typer's command tree, read through the attributes click and typer's own copy of it share (typer >= 0.20
    # no longer installs click)
    group = typer.main.get_command(app)
    found: set[str] = set()
    todo = [group.commands.get(command)]  # type: ignore[attr-defined]
    while todo:
        cmd = todo.pop()
        assert cmd is not None, command
        found.update(opt for p in cmd.params if p.param_type_name == "option" for opt in p.opts)
        todo.extend(getattr(cmd, "commands", {}).values())
    return found


def assert_flags_exist(rows: list[tuple[str, list[str], str]]) -> None:
    """For a bad-input table of (id, arguments, fragment of the message): ids are unique (pytest would run a
    repeated one under another name), and every flag a fragment names ("... (--n)", "give --nz") is one the row's
    command takes: the harness checks the fragment is in the message, so the advice can be followed."""
    assert len({r[0] for r in rows}) == len(rows)
    named = 0
    for case, args, fragment in rows:
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", fragment):
            assert flag in command_options(args[0]), f"{case}: {args[0]} takes no {flag}"
            named += 1
    assert named >= len(rows) // 3, named  # the pattern reached the rows: the check above is not empty
