"""``--prior-net FILE`` on every command (``prior_net=`` in the API): the generator becomes G o h, latent z' ~ N(0, I)
(docs/design.md §7.6).

An identity h reproduces every command's figures exactly; a linear h in front of a linear G gives the dense
float64 formula; the report's checkpoint block records the prior; a prior of the wrong width, a file that is no
prior and the flags it cannot be combined with are refused in one line, a prior fitted to another generator is
a note naming both hashes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import gan_probe
from gan_probe.cli import app
from gan_probe.cli.runner import latent_name
from gan_probe.models import MLPGenerator, Prior, save_checkpoint
from gan_probe.models.checkpoint import file_sha256
from gan_probe.models.prior_net import PriorNet, save_prior_net
from tests.conftest import invoke, invoke_json, run_refused, save_tiny_dcgan

NZ = 8  # save_tiny_dcgan's


def linear_prior_net(b: torch.Tensor) -> PriorNet:
    """A PriorNet (its ReLUs included) computing h(z') = B z' for B of shape (nz, dim), exactly.

    The first layer writes (B z', -B z'), the hidden layers copy both halves (a ReLU leaves a non-negative value
    as it is), the last subtracts them: relu(x) - relu(-x) = x. Every weight after the first is 0 or +-1 and
    every sum has one non-zero term, so no rounding enters beyond B z' itself: with B = I, h(z') = z' to the
    bit, and so is its Jacobian wherever no coordinate of B z' is exactly 0 (the ReLU masks of the two halves
    add up to 1 there; at 0 autodiff takes relu'(0) = 0 for both, so the Jacobian's row is 0: a grid through
    the prior's centre z' = 0 would meet it, hence loglik --grid-center random below)."""
    nz, dim = b.shape
    h = PriorNet(dim, nz, (2 * nz, 2 * nz, 2 * nz))
    layers = [m for m in h.net if isinstance(m, torch.nn.Linear)]
    eye = torch.eye(nz)
    with torch.no_grad():
        layers[0].weight.copy_(torch.cat([b, -b]))
        for layer in layers[1:-1]:
            layer.weight.copy_(torch.eye(2 * nz))
        layers[-1].weight.copy_(torch.cat([eye, -eye], dim=1))
        for layer in layers:
            layer.bias.zero_()
    return h


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny DCGAN (nz 8), priors for it (identity; d' = 10; fitted to another hash) and one of width 4."""
    d = tmp_path_factory.mktemp("prior_net")
    ckpt = d / "tiny.safetensors"
    save_tiny_dcgan(ckpt, randomize_bn=True)
    fitted = {"generator": {"sha256": file_sha256(ckpt), "path": str(ckpt), "arch": "dcgan", "nz": NZ}}
    paths = {"ckpt": ckpt}
    identity = linear_prior_net(torch.eye(NZ))
    torch.manual_seed(5)
    for name, h, fit in (
        ("identity", identity, fitted),
        ("wide", PriorNet(10, NZ, (16, 16, 16)), fitted),
        ("other", identity, {"generator": {"sha256": "ab" * 32, "path": "elsewhere.safetensors"}}),
        ("width4", PriorNet(4, 4, (8, 8, 8)), fitted),
    ):
        paths[name] = d / f"{name}.safetensors"
        save_prior_net(paths[name], h, fitted=fit, provenance="tests")
    return paths


def _figures(value):
    """A report's results without what measures time (seconds, rates), which no two runs share."""
    if isinstance(value, dict):
        return {k: _figures(v) for k, v in value.items() if k != "timings" and not k.endswith("_s")}
    if isinstance(value, list):
        return [_figures(v) for v in value]
    return value


#: command -> tiny settings (the bundled MNIST images are 1 x 32 x 32, as the tiny DCGAN's output)
COMMANDS = {
    "sample": ["--n", "4"],
    "loglik": ["--n", "3"],
    "loglik-grid": ["--grid", "--grid-size", "3", "--grid-center", "random", "--n", "1"],
    "ascend": ["--n", "2", "--steps", "2"],
    "eigvecs": ["--n", "2", "--top", "2", "--traversal-steps", "3"],
    "veff": ["--n", "2", "--k", "4"],
    "pag": ["--limit", "8", "--steps", "3", "--prior-samples", "10", "--top", "2"],
    "divergence": ["--limit", "16", "--steps", "2", "--importance", "2", "--model-samples", "4"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_identity_prior_reproduces_every_commands_figures(command, files, runner, tmp_path):
    """G o h with h = identity (a real PriorNet, read from its file) gives the plain generator's results to the
    bit; only the checkpoint block differs, and it records the prior."""
    args = [command.split("-")[0], files["ckpt"], *COMMANDS[command]]
    plain = invoke_json(runner, [*args, "--out", tmp_path / "plain"])
    composed = invoke_json(runner, [*args, "--prior-net", files["identity"], "--out", tmp_path / "composed"])
    assert _figures(composed["results"]) == _figures(plain["results"])
    assert plain["checkpoint"]["prior_net"] is None
    prior = composed["checkpoint"]["prior_net"]
    assert prior["path"] == str(files["identity"]) and prior["sha256"] == file_sha256(files["identity"])
    assert (prior["dim"], prior["nz"], prior["same_generator"]) == (NZ, NZ, True)
    assert prior["fitted_to"]["sha256"] == plain["checkpoint"]["sha256"] == composed["checkpoint"]["sha256"]
    for name in sorted(p.name for p in (tmp_path / "plain").glob("*.npz")):  # the arrays written, latents included
        with np.load(tmp_path / "plain" / name) as a, np.load(tmp_path / "composed" / name) as b:
            assert sorted(a.files) == sorted(b.files), name
            for key in a.files:
                assert np.array_equal(a[key], b[key]), f"{name}:{key}"


def test_a_linear_prior_on_a_linear_generator_is_the_dense_formula(tmp_path, runner):
    """G(z) = A z + c, h(z') = B z': ln Q of G o h = ln N(z'; 0, I) - 1/2 ln det((A B)^T (A B)), dense float64,
    through the command line (--latents holds z') and through the API."""
    torch.manual_seed(6)
    nz, out = 5, 12
    module = MLPGenerator(nz, [], [out])
    config = {"nz": nz, "hidden": [], "out_shape": [out], "activation": "relu", "output_activation": "none"}
    ckpt = tmp_path / "linear.safetensors"
    save_checkpoint(ckpt, module, arch="mlp", config=config, prior=Prior(), output_shape=[out], output_range=None,
                    provenance="tests: a linear generator")  # fmt: skip
    b = torch.randn(nz, nz, generator=torch.Generator().manual_seed(7))  # float32, as the file stores it
    prior_file = tmp_path / "linear_prior.safetensors"
    save_prior_net(prior_file, linear_prior_net(b), fitted={"generator": {"sha256": file_sha256(ckpt)}}, provenance="t")
    z = torch.randn(4, nz, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    np.save(tmp_path / "z.npy", z.numpy())

    j = module.net[0].weight.double() @ b.double()
    ref = -0.5 * (z * z).sum(1) - 0.5 * nz * math.log(2 * math.pi) - 0.5 * torch.logdet(j.T @ j)
    args = ["loglik", ckpt, "--latents", tmp_path / "z.npy", "--prior-net", prior_file, "--dtype", "float64"]
    report = invoke_json(runner, [*args, "--out", tmp_path / "loglik"])
    cli = torch.tensor([s["loglik"] for s in report["results"]["samples"]], dtype=torch.float64)
    torch.testing.assert_close(cli, ref, rtol=1e-10, atol=1e-10)
    gen = gan_probe.load_generator(ckpt, prior_net=prior_file, device="cpu", dtype="float64")
    assert gen.prior_net is not None and gen.prior_net["sha256"] == file_sha256(prior_file)
    torch.testing.assert_close(gan_probe.loglik(gen, z).loglik, ref, rtol=1e-10, atol=1e-10)
    # without the prior the same latents give the generator's own figure, which differs
    plain = gan_probe.loglik(gan_probe.load_generator(ckpt, device="cpu", dtype="float64"), z).loglik
    assert not torch.allclose(plain, ref)


def test_pag_reverses_into_the_prior_networks_space(files, runner, tmp_path):
    """With h: R^10 -> R^8, pag recovers latents z' of dimension 10 and scores them against N(0, I)."""
    out = tmp_path / "pag"
    args = ["pag", files["ckpt"], "--prior-net", files["wide"], "--limit", "6", "--steps", "3"]
    report = invoke_json(runner, [*args, "--prior-samples", "10", "--top", "2", "--out", out])
    assert report["checkpoint"]["nz"] == 10 and report["checkpoint"]["prior_net"]["dim"] == 10
    assert any("rank at most 8 < 10" in note for note in report["checkpoint"]["notes"])  # ln Q is undefined
    with np.load(out / "latents.npz") as saved:
        assert saved["z"].shape == (6, 10)
    # the latents written are z': loglik reads them back under the same prior, and refuses them without it
    again = invoke_json(runner, ["loglik", files["ckpt"], "--prior-net", files["wide"], "--latents",
                                 out / "latents.npz", "--out", tmp_path / "loglik"])  # fmt: skip
    assert again["results"]["summary"]["num_samples"] == 6 and again["results"]["summary"]["num_singular"] == 6
    run_refused(runner, ["loglik", str(files["ckpt"]), "--latents", str(out / "latents.npz")], "width 10",
                folder=tmp_path, out=tmp_path / "refused")  # fmt: skip


def test_a_prior_fitted_to_another_generator_is_a_note_naming_both_hashes(files, runner, tmp_path):
    args = ["loglik", files["ckpt"], "--n", "1", "--prior-net", files["other"], "--out", tmp_path / "o"]
    result = invoke(runner, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    mine = file_sha256(files["ckpt"])
    stderr = " ".join(result.stderr.split())  # rich wraps long notes
    assert "note:" in stderr and "ab" * 32 in stderr and mine in stderr
    block = json.loads(result.stdout)["checkpoint"]
    assert block["prior_net"]["same_generator"] is False and block["prior_net"]["fitted_to"]["sha256"] == "ab" * 32
    assert any("ab" * 32 in note and mine in note for note in block["notes"])
    # the prior fitted to this generator: no such note
    fine = invoke(runner, ["loglik", files["ckpt"], "--n", "1", "--prior-net", files["identity"], "--json"])
    assert fine.exit_code == 0 and "ab" * 32 not in fine.stderr and "fitted to" not in fine.stderr


def test_info_and_bench_throughput_record_the_prior(files, runner, tmp_path):
    info = invoke_json(runner, ["info", files["ckpt"], "--prior-net", files["wide"]])
    assert info["results"]["nz"] == 10 and info["results"]["prior_net"]["path"] == str(files["wide"])
    table = invoke(runner, ["info", files["ckpt"], "--prior-net", files["wide"]])
    assert table.exit_code == 0 and "prior_net" in table.stdout
    args = ["bench", "throughput", files["ckpt"], "--prior-net", files["wide"], "--n", "2", "--batch-sizes", "2"]
    bench = invoke_json(runner, [*args, "--chunk-sizes", "auto", "--out", tmp_path / "bench"])
    assert bench["checkpoint"]["prior_net"]["dim"] == 10 and bench["checkpoint"]["nz"] == 10


def table_text(latent: str) -> dict[str, list[str]]:
    """What each command's terminal table says about the latent ``latent`` (whitespace as one space: the title
    "... trial latents z" ends in a space, so that it is not found in "... trial latents z'")."""
    return {
        "loglik": [f"ln Q(G({latent}))", f"ln P_{latent.upper()}({latent})"],
        "ascend": [f"ln Q(G({latent}))"],
        "eigvecs": [f"trial latents {latent} ", f"|G({latent} + alpha v_1) - G({latent})|"],
        "veff": [f"v_eff of {latent} (nz"],
    }


@pytest.mark.parametrize("command", ["loglik", "ascend", "eigvecs", "veff"])
def test_the_tables_name_the_latent_of_the_run(command, files, runner, tmp_path):
    """Without --prior-net the tables speak of z and ln P_Z(z); with it of G o h's latent z' and ln P_Z'(z')."""
    args = [command, files["ckpt"], *COMMANDS[command]]
    for extra, latent, other in (([], "z", "z'"), (["--prior-net", files["identity"]], "z'", "z")):
        result = runner.invoke(app, [str(a) for a in [*args, *extra, "--out", tmp_path / latent]],
                               env={"COLUMNS": "300"})  # fmt: skip
        assert result.exit_code == 0, result.output + result.stderr
        text = " ".join(result.stdout.split())  # rich wraps a caption to the table's width
        for fragment in table_text(latent)[command]:
            assert fragment in text, (fragment, text)
        for fragment in table_text(other)[command]:
            assert fragment not in text, (fragment, text)


def rosinality_stylegan2(folder: Path) -> Path:
    """The tiny rosinality StyleGAN2 fixture's generator as a plain state dict file."""
    state = {k[2:]: v.contiguous() for k, v in load_file("tests/data/rosinality_stylegan2_tiny.safetensors").items()
             if k.startswith("g.")}  # fmt: skip
    ckpt = folder / "sg2.safetensors"
    save_file(state, str(ckpt))
    return ckpt


def test_a_stylegans_latent_is_named_by_its_space(tmp_path):
    ckpt = rosinality_stylegan2(tmp_path)
    for space in ("z", "w", "w+"):
        assert latent_name(gan_probe.load_generator(ckpt, device="cpu", space=space)) == space


def test_a_stylegan_in_w_refuses_a_prior_over_z(files, runner, tmp_path):
    """h maps to z (gan-probe prior fits priors over z only): --space w or w+ with --prior-net names both flags;
    in z the composition loads."""
    ckpt = rosinality_stylegan2(tmp_path)
    z_dim = gan_probe.load_generator(ckpt, device="cpu").nz
    prior_file = tmp_path / "sg2_prior.safetensors"
    save_prior_net(prior_file, linear_prior_net(torch.eye(z_dim)), fitted={}, provenance="tests")
    for space in ("w", "w+"):
        refused = run_refused(runner, ["info", str(ckpt), "--space", space, "--prior-net", str(prior_file)],
                              f"--space {space}", folder=tmp_path, out=tmp_path / "out")  # fmt: skip
        assert "--prior-net" in refused.stderr and "--space z" in refused.stderr
    composed = invoke_json(runner, ["info", ckpt, "--space", "z", "--prior-net", prior_file])
    assert composed["results"]["nz"] == z_dim and composed["results"]["prior_net"]["fitted_to"]["sha256"] is None
    # G ignores |z|: G o h is flat along one direction of Z', and a note says that ln Q is then undefined
    assert any("ignores |z|" in note for note in composed["results"]["notes"])
    torch.manual_seed(1)
    save_prior_net(prior_file, PriorNet(z_dim, z_dim, (16, 16, 16)), fitted={}, provenance="tests")
    gen = gan_probe.load_generator(ckpt, prior_net=prior_file, device="cpu", dtype="float64")
    assert gan_probe.loglik(gen, n=2).values.singular.all()


def test_the_api_composes_once(files):
    gen = gan_probe.load_generator(files["ckpt"], prior_net=files["identity"], device="cpu")
    assert gen.arch == "dcgan o prior-net" and gen.prior_net is not None and gen.prior_net["same_generator"] is True
    from gan_probe.errors import CheckpointError
    from gan_probe.models.prior_net import compose_with_prior, load_prior_net

    with pytest.raises(CheckpointError, match="already composed") as info:
        compose_with_prior(gen, load_prior_net(files["identity"]))
    assert info.value.param == "prior_net"
    with pytest.raises(gan_probe.GanProbeError, match="without --prior-net"):
        gan_probe.prior(gen, codes=torch.zeros(40, NZ, dtype=torch.float64), steps=1)
