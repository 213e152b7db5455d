"""The public Python API: what ``import gan_probe`` exposes, and the README's examples, run as they stand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gan_probe
from gan_probe.errors import GanProbeError
from gan_probe.models.stylegan2 import truncate_ws
from tests.test_nvidia_loading import FIXTURES, assert_nothing_ran, build, read_fixture, write_generator_pickle

ROOT = Path(__file__).resolve().parent.parent


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_api_is_the_documented_set():
    assert set(gan_probe.__all__) >= {"load_generator", "loglik", "ascend", "eigvecs", "veff", "pag"}
    for name in gan_probe.__all__:
        assert getattr(gan_probe, name) is not None


def test_importing_gan_probe_imports_neither_torch_nor_the_cli():
    code = "import sys, gan_probe; print('torch' in sys.modules, 'typer' in sys.modules, gan_probe.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"] and out[2] == gan_probe.__version__


def test_numerics_import_no_cli():
    code = "import sys, gan_probe.spectral.logdet, gan_probe.analyses.loglik; print('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("index", range(2))
def test_readme_examples_run(index):
    blocks = readme_python_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile(blocks[index], f"README.md python block {index}", "exec"), namespace)  # noqa: S102
    if index == 0:
        lnq = namespace["lnq"]
        assert lnq.shape == (8,) and torch.isfinite(lnq).all()
    else:
        assert namespace["slq"].values.interval.shape == (4, 2)
        assert 0 < float(namespace["v"].veff[0]) < 32
        assert namespace["score"].pag > 0


def test_three_lines_match_the_command_line(runner, tmp_path):
    from tests.conftest import invoke_json

    gen = gan_probe.load_generator()
    lnq = gan_probe.loglik(gen, n=3).loglik
    report = invoke_json(runner, ["loglik", "--n", "3", "--out", tmp_path])
    assert [r["loglik"] for r in report["results"]["samples"]] == pytest.approx(lnq.tolist(), rel=1e-12)


def test_api_errors_name_arguments_not_flags():
    gen = gan_probe.load_generator()
    with pytest.raises(GanProbeError) as info:
        gan_probe.loglik(gen, torch.zeros(2, 5))
    assert info.value.param == "latents" and "--" not in str(info.value)
    with pytest.raises(GanProbeError) as info:
        gan_probe.loglik(gen, n=2, method="taylor", estimator=gan_probe.SLQParams())
    assert info.value.param == "estimator"
    with pytest.raises(GanProbeError) as info:
        gan_probe.veff(gen, n=2, tau=-1.0)
    assert info.value.param == "taus" and "--" not in str(info.value)


@pytest.fixture(scope="module")
def conditional_pickle(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """The conditional StyleGAN2-ADA fixture (c_dim 3) pickled in NVIDIA's format, and its generator rebuilt."""
    record, _ = read_fixture(FIXTURES["ada_conditional"])
    path = tmp_path_factory.mktemp("conditional") / "conditional.pkl"
    write_generator_pickle(path, record, path.parent / "executed")
    return path, build(record)


def test_load_generator_takes_the_class_and_truncation_cutoff_of_an_nvidia_pickle(conditional_pickle):
    """w+ of class 1, psi 0.7 on the first 2 layers: the prior's draws are the rebuilt network's truncated
    mapping(z, one-hot c = e_1) and the generator is its synthesis (stored noise)."""
    path, g = conditional_pickle
    kwargs = dict(device="cpu", dtype="float64", space="w+", truncation=0.7)
    gen = gan_probe.load_generator(path, class_index=1, truncation_cutoff=2, **kwargs)
    assert gen.config["class"] == 1 and gen.config["truncation_cutoff"] == 2 and gen.config["space"] == "w+"
    z = torch.randn(3, g.z_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.zeros(3, g.c_dim, dtype=torch.float64)
    c[:, 1] = 1
    with torch.no_grad():
        ws = truncate_ws(g.mapping(z, c), g.mapping.w_avg, 0.7, 2)
        w_plus = gen.prior.map_z(z)
        torch.testing.assert_close(w_plus, ws.flatten(1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gen(w_plus), g.synthesis(ws), rtol=1e-10, atol=1e-10)
        other = gan_probe.load_generator(path, class_index=2, truncation_cutoff=2, **kwargs).prior.map_z(z)
    assert float((other - w_plus).abs().max()) > 1e-3  # the class reaches the mapping
    assert_nothing_ran(path.parent / "executed")


def test_load_generator_refuses_a_missing_or_unknown_class(conditional_pickle):
    path, _ = conditional_pickle
    for class_index, fragment in ((None, "conditional (c_dim 3)"), (3, "out of range"), (-1, "out of range")):
        with pytest.raises(GanProbeError, match=re.escape(fragment)) as info:
            gan_probe.load_generator(path, device="cpu", space="w+", class_index=class_index)
        assert info.value.param == "class_index"
