"""NVIDIA's StyleGAN pickles through the command line: every command opens them, in z, w and w+, with truncation
(and its cutoff), noise modes and classes, and bad files end in one line.

The pickles are written here (tests/nvidia_pickles.py) from the committed numeric fixtures: each fixture's flat
state, under NVIDIA's names, is laid out as the module tree NVIDIA's classes have and pickled in NVIDIA's
persistence format with a module source that would write a marker file if anything ran it. The fixtures also hold
what NVIDIA's own code computed for their inputs (tests/test_nvidia_stylegan2.py and test_nvidia_stylegan3.py say
how they were made), so the images the CLI writes are compared with NVIDIA's numbers, not only with the builders.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import gan_probe
from gan_probe.models.checkpoint import LoadOptions, load_generator
from gan_probe.models.nvidia.pickle_reader import NetworkRecord
from gan_probe.models.nvidia.stylegan2 import build_stylegan2
from gan_probe.models.nvidia.stylegan3 import build_stylegan3
from tests.conftest import invoke, invoke_json
from tests.nvidia_pickles import Persistent, marker_source, stand_in_modules, write_snapshot, write_tensorflow_pickle

DATA = Path(__file__).parent / "data"
#: Buffers (not parameters) in NVIDIA's module trees, by their last name.
BUFFERS = ("w_avg", "noise_const", "resample_filter", "up_filter", "down_filter", "magnitude_ema", "transform")
BUFFERS += ("freqs", "phases")


def read_fixture(name: str) -> tuple[NetworkRecord, dict[str, torch.Tensor]]:
    """(the fixture's generator as a record, its inputs and NVIDIA's outputs by name)."""
    with safe_open(str(DATA / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    data_prefixes = ("inputs.", "expected.", "expected/", "edited/")
    state = {k: v for k, v in tensors.items() if not k.startswith(data_prefixes)}
    data = {k: v for k, v in tensors.items() if k.startswith(data_prefixes)}
    record = NetworkRecord(meta["class_name"], (), json.loads(meta["init_kwargs"]), state, {})
    return record, data


def module_tree(state: dict[str, torch.Tensor], class_name: str) -> tuple[nn.Module, dict[str, str]]:
    """The flat state laid out as nested modules (NVIDIA's tree) and each module's class name by its path."""
    root = nn.Module()
    classes = {"": "Generator"}
    for key, tensor in state.items():
        *path, leaf = key.split(".")
        module = root
        for depth, part in enumerate(path):
            if part not in module._modules:
                module.add_module(part, nn.Module())
                dotted = ".".join(path[: depth + 1])
                classes[dotted] = _class_of(dotted)
            module = module._modules[part]  # type: ignore[assignment]
        if leaf in BUFFERS:
            module.register_buffer(leaf, tensor.clone())
        else:
            module.register_parameter(leaf, nn.Parameter(tensor.clone(), requires_grad=False))
    if class_name == "training.networks_stylegan2.Generator":  # the attribute only that repository's blocks store
        for path, cls in classes.items():
            if cls == "SynthesisBlock":
                root.get_submodule(path).fused_modconv_default = "inference_only"
    return root, classes


def _class_of(path: str) -> str:
    if path in ("mapping", "synthesis"):
        return {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork"}[path]
    if path == "synthesis.input":
        return "SynthesisInput"
    if re.fullmatch(r"synthesis\.b\d+", path):
        return "SynthesisBlock"
    if re.fullmatch(r"synthesis\.L\d+_\d+_\d+", path):
        return "SynthesisLayer"
    return "FullyConnectedLayer" if path.endswith(("affine", "embed")) or ".fc" in path else "Layer"


class EasyDict(dict):
    """Stands for dnnlib's EasyDict when a snapshot is written."""


def write_generator_pickle(path: Path, record: NetworkRecord, marker: Path, **extra: object) -> None:
    """A network snapshot like NVIDIA's training loop writes (G, D, G_ema, augment_pipe, training_set_kwargs),
    G and G_ema the fixture's generator (G with its weights halved, so that picking G_ema is seen)."""
    src = marker_source(marker)
    tree, classes = module_tree(record.state, record.class_name)
    g_tree, _ = module_tree({k: 0.5 * v for k, v in record.state.items()}, record.class_name)
    kwargs = {k: EasyDict(v) if isinstance(v, dict) else v for k, v in record.init_kwargs.items()}
    disc = nn.Module()
    disc.register_parameter("weight", nn.Parameter(torch.ones(2, 3), requires_grad=False))
    entries = {
        "G": Persistent(g_tree, classes, module_src=src, init_kwargs=kwargs),
        "D": Persistent(disc, {"": "Discriminator"}, module_src=src, init_kwargs={"c_dim": 0}),
        "G_ema": Persistent(tree, classes, module_src=src, init_kwargs=kwargs),
        "augment_pipe": None,
        "training_set_kwargs": EasyDict(path="data.zip", resolution=16, use_labels=False),
        **extra,
    }
    with stand_in_modules(dnnlib__util={"EasyDict": EasyDict}):
        write_snapshot(path, entries)


def assert_nothing_ran(marker: Path) -> None:
    assert not marker.exists(), "the pickle's module source was executed"
    assert not {"torch_utils", "dnnlib", "training"} & set(sys.modules), "a module of NVIDIA's was imported"


FIXTURES = {
    "ada_skip": "nvidia_stylegan2_ada_skip",
    "ada_conditional": "nvidia_stylegan2_ada_conditional",
    "stylegan3_repo": "nvidia_stylegan2_stylegan3_repo",
    "stylegan3_t": "nvidia_stylegan3_t",
}


@pytest.fixture(scope="module")
def pickles(tmp_path_factory) -> dict[str, tuple[Path, NetworkRecord, dict[str, torch.Tensor]]]:
    """Each fixture generator pickled in NVIDIA's format: label -> (file, record, NVIDIA's numbers)."""
    d = tmp_path_factory.mktemp("nvidia")
    out = {}
    for label, name in FIXTURES.items():
        record, data = read_fixture(name)
        write_generator_pickle(d / f"{label}.pkl", record, d / "executed")
        out[label] = (d / f"{label}.pkl", record, data)
    return out


def test_info_names_the_architecture_and_the_entries(pickles, runner):
    path, record, _ = pickles["ada_skip"]
    report = invoke_json(runner, ["info", path])
    ckpt = report["checkpoint"]
    assert ckpt["source"] == "nvidia-pickle" and ckpt["key"] == "G_ema"
    config = ckpt["config"]
    assert config["architecture"] == "StyleGAN2-ADA (skip)" and ckpt["arch"] == config["architecture"]
    assert config["class_name"] == "training.networks.Generator"
    assert config["init_kwargs"] == record.init_kwargs
    assert config["entries"] == {
        "G": "training.networks.Generator",
        "D": "Discriminator",
        "G_ema": "training.networks.Generator",
        "augment_pipe": "None",
        "training_set_kwargs": "dict",
    }
    assert (config["resolution"], config["z_dim"], config["w_dim"], config["num_ws"], config["c_dim"]) == (
        32,
        24,
        20,
        8,
        0,
    )
    assert ckpt["nz"] == 24 and ckpt["output"]["shape"] == [3, 32, 32] and ckpt["output"]["range"] == [-1.0, 1.0]
    assert config["space"] == "z" and config["w_avg"].startswith("stored w_avg")
    assert_nothing_ran(path.parent / "executed")


def build(record: NetworkRecord, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The fixture's generator rebuilt directly (no pickle, no CLI), eval mode, in ``dtype``."""
    if record.class_name == "training.networks_stylegan3.Generator":
        return build_stylegan3(record).to(dtype)
    return build_stylegan2(record, dtype=dtype)


def nvidia_numbers(label: str, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVIDIA's float64 numbers under one naming for both fixture layouts: z, ws, img (const noise, psi 1),
    img_psi07 (StyleGAN3) / img_none_psi07 (StyleGAN2), w_plus and img_w_plus."""
    if label == "stylegan3_t":
        return {
            "z": data["expected/z"],
            "ws": data["expected/float64/ws"],
            "img": data["expected/float64/img"],
            "img_psi07": data["expected/float64/img_psi07"],
            "w_plus": data["expected/float64/wplus"],
            "img_w_plus": data["expected/float64/img_wplus"],
        }
    return {
        "z": data["inputs.z"],
        "ws": data["expected.ws"],
        "img": data["expected.img_const"],
        "ws_psi07_cutoff2": data["expected.ws_psi0.7_cutoff2"],
        "img_none_psi07": data["expected.img_none_psi0.7"],
        "w_plus": data["inputs.w_plus"],
        "img_w_plus": data["expected.img_w_plus_const"],
        **({"c": data["inputs.c"]} if "inputs.c" in data else {}),
    }


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def render(runner, path: Path, out: Path, *args: object) -> tuple[dict, dict[str, np.ndarray]]:
    """``gan-probe sample`` -> (the report, samples.npz)."""
    report = invoke_json(runner, ["sample", path, *args, "--out", out])
    with np.load(out / "samples.npz") as f:
        return report, {k: f[k] for k in f.files}


@pytest.mark.parametrize("label", ["ada_skip", "stylegan3_repo", "stylegan3_t", "ada_conditional"])
def test_sample_seeds_gives_the_generator_at_numpys_per_seed_z(label, pickles, runner, tmp_path):
    path, record, _ = pickles[label]
    cls = ["--class", "1"] if label == "ada_conditional" else []
    report, npz = render(runner, path, tmp_path / "s", "--seeds", "0-2,7", *cls)
    assert report["parameters"]["seeds"] == "0-2,7" and report["results"]["num_samples"] == 4
    g = build(record, torch.float32)
    z = np.concatenate([np.random.RandomState(s).randn(1, g.z_dim) for s in (0, 1, 2, 7)])
    np.testing.assert_array_equal(npz["seeds"], [0, 1, 2, 7])
    np.testing.assert_array_equal(npz["z"], z)
    c = None
    if cls:
        c = torch.zeros(4, g.c_dim)
        c[:, 1] = 1
    with torch.no_grad():
        expected = g(torch.from_numpy(z).float(), c)
    assert npz["images"].dtype == np.float32 and npz["images"].shape == tuple(expected.shape)
    assert rel(torch.from_numpy(npz["images"]), expected) < 1e-6  # the same float32 computation
    assert_nothing_ran(path.parent / "executed")


@pytest.mark.parametrize("label", ["ada_skip", "stylegan3_t", "ada_conditional"])
def test_sample_latents_in_z_w_and_w_plus_equal_nvidias_images(label, pickles, runner, tmp_path):
    """float64 through the CLI against NVIDIA's own float64 images (stored noise, psi 1)."""
    path, _, data = pickles[label]
    nv = nvidia_numbers(label, data)
    files = tmp_path / "latents.npz"
    one_class = []
    if "c" in nv:  # the fixture's latents have classes 0 and 2: render those of class 2
        rows = nv["c"].argmax(1) == 2
        nv = {k: v[rows] for k, v in nv.items()}
        one_class = ["--class", "2"]
    np.savez(files, z=nv["z"].numpy(), w=nv["ws"][:, 0].numpy(), w_plus=nv["w_plus"].flatten(1).numpy())
    for space, target in (("z", nv["img"]), ("w", nv["img"]), ("w+", nv["img_w_plus"])):
        report, npz = render(
            runner, path, tmp_path / space, "--latents", files, "--space", space, "--dtype", "float64", *one_class
        )
        assert report["checkpoint"]["config"]["space"] == space
        # float32 on the way out (samples.npz keeps float32 images); NVIDIA's float64 numbers to that rounding
        assert rel(torch.from_numpy(npz["images"]), target) < 1e-6, space


@pytest.mark.parametrize("label", ["ada_skip", "stylegan3_repo", "ada_conditional"])
def test_truncation_with_a_cutoff_is_nvidias(label, pickles, runner, tmp_path):
    """psi 0.7 on the first 2 layers only (z space: the layers get different ws), against NVIDIA's ws."""
    path, record, data = pickles[label]
    nv = nvidia_numbers(label, data)
    one_class = []
    if "c" in nv:
        rows = nv["c"].argmax(1) == 2
        nv = {k: v[rows] for k, v in nv.items()}
        one_class = ["--class", "2"]
    np.savez(tmp_path / "z.npz", z=nv["z"].numpy())
    args = ["--latents", tmp_path / "z.npz", "--truncation", "0.7", "--truncation-cutoff", "2", "--dtype", "float64"]
    report, npz = render(runner, path, tmp_path / "cut", *args, *one_class)
    assert report["checkpoint"]["config"]["truncation_cutoff"] == 2
    g = build(record)
    with torch.no_grad():
        expected = g.synthesis(nv["ws_psi07_cutoff2"], noise_mode="const")
    assert rel(torch.from_numpy(npz["images"]), expected) < 1e-6
    # without the cutoff every layer is truncated: a different image
    _, everywhere = render(runner, path, tmp_path / "all", *args[:4], "--dtype", "float64", *one_class)
    assert rel(torch.from_numpy(everywhere["images"]), expected) > 1e-3


def test_noise_modes_are_nvidias_const_none_and_seeded_maps(pickles, runner, tmp_path):
    path, record, data = pickles["ada_skip"]
    nv = nvidia_numbers("ada_skip", data)
    np.savez(tmp_path / "z.npz", z=nv["z"].numpy())
    common = ["--latents", tmp_path / "z.npz", "--dtype", "float64"]
    _, none = render(runner, path, tmp_path / "none", *common, "--noise", "zero", "--truncation", "0.7")
    assert rel(torch.from_numpy(none["images"]), nv["img_none_psi07"]) < 1e-6
    report, seeded = render(runner, path, tmp_path / "seed", *common, "--noise", "seed:3")
    assert report["checkpoint"]["config"]["noise"] == "seed:3"
    g = build(record)
    gen = torch.Generator().manual_seed(3)
    maps = [torch.randn(shape, generator=gen, dtype=torch.float32).double() for shape in g.noise_shapes()]
    with torch.no_grad():
        expected = g.synthesis(nv["ws"], noise=maps)
    assert rel(torch.from_numpy(seeded["images"]), expected) < 1e-6
    assert rel(expected, nv["img"]) > 1e-3  # the seeded maps are not the stored ones


def test_class_flag_is_checked(pickles, runner, tmp_path):
    conditional, unconditional = pickles["ada_conditional"][0], pickles["ada_skip"][0]
    for path, args, fragment in (
        (conditional, [], "conditional (c_dim 3): choose the class with --class K, 0 <= K < 3"),
        (conditional, ["--class", "3"], "--class 3 is out of range: this generator has c_dim 3 classes, 0 .. 2"),
        (conditional, ["--class", "-1"], "--class -1 is out of range"),
        (unconditional, ["--class", "0"], "--class 0: this generator is unconditional (c_dim 0)"),
        (unconditional, ["--truncation", "0.7", "--truncation-cutoff", "2", "--space", "w"], "use --space z or w+"),
    ):
        assert_one_line_error(runner, ["sample", path, "--n", "2", *args], fragment, tmp_path / "out")
    info = invoke_json(runner, ["info", conditional, "--class", "2"])["checkpoint"]["config"]
    assert info["class"] == 2 and info["c_dim"] == 3


def test_latents_files_carry_the_class_of_a_conditional_generator(pickles, runner, tmp_path):
    """samples.npz of a conditional run has a class column; read back, it must match the run's --class."""
    conditional, unconditional = pickles["ada_conditional"][0], pickles["ada_skip"][0]
    _, first = render(runner, conditional, tmp_path / "a", "--seeds", "0-3", "--class", "1")
    np.testing.assert_array_equal(first["class"], [1, 1, 1, 1])
    assert first["class"].dtype == np.int64
    _, again = render(runner, conditional, tmp_path / "b", "--latents", tmp_path / "a" / "samples.npz", "--class", "1")
    np.testing.assert_array_equal(again["images"], first["images"])
    np.testing.assert_array_equal(again["class"], first["class"])
    _, plain = render(runner, unconditional, tmp_path / "c", "--n", "2")
    assert "class" not in plain
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, z=first["z"], **{"class": np.array([1, 1, 2, 0])})
    floats = tmp_path / "floats.npz"
    np.savez(floats, z=first["z"], **{"class": np.ones(4)})
    short = tmp_path / "short.npz"
    np.savez(short, z=first["z"], **{"class": np.ones(3, dtype=np.int64)})
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, z=plain["z"], **{"class": np.zeros(2, dtype=np.int64)})
    a = tmp_path / "a" / "samples.npz"
    for path, args, fragment in (
        (conditional, ["--latents", a, "--class", "2"], "holds latents of class 1 but the run uses --class 2"),
        (
            conditional,
            ["--latents", mixed, "--class", "1"],
            "holds latents of class 0, 1, 2 but the run uses --class 1",
        ),
        (conditional, ["--latents", floats, "--class", "1"], "holds float64, not integers"),
        (conditional, ["--latents", short, "--class", "1"], "has shape (3,); expected (4,), one per latent"),
        (unconditional, ["--latents", labelled], "has a class column (classes 0) but the generator is unconditional"),
    ):
        assert_one_line_error(runner, ["sample", path, *args], fragment, tmp_path / "out")
    # every latents file a command writes carries it: ascend's end points too
    ascended = invoke(
        runner, ["ascend", conditional, "--n", "2", "--steps", "1", "--class", "1", "--out", tmp_path / "asc"]
    )
    assert ascended.exit_code == 0, ascended.stderr
    with np.load(tmp_path / "asc" / "latents.npz") as f:
        np.testing.assert_array_equal(f["class"], [1, 1])
    # under --prior-net the class is G's: G o h keeps writing and checking it
    from gan_probe.models.prior_net import save_prior_net
    from tests.test_prior_net_option import linear_prior_net

    z_dim = first["z"].shape[1]
    identity = tmp_path / "identity.safetensors"
    save_prior_net(identity, linear_prior_net(torch.eye(z_dim)), fitted={}, provenance="tests")
    _, composed = render(runner, conditional, tmp_path / "h", "--seeds", "0-1", "--class", "2", "--prior-net", identity)
    np.testing.assert_array_equal(composed["class"], [2, 2])
    # every command reading latents checks the column (loglik refuses w, eigvecs takes z here)
    assert_one_line_error(
        runner, ["eigvecs", conditional, "--latents", a, "--class", "0"], "but the run uses --class 0", tmp_path / "out"
    )


def assert_one_line_error(runner, argv: list, fragment: str, out: Path) -> None:
    """Exit 1, one line naming the problem, no traceback, nothing written."""
    if argv[0] != "info":
        argv = [*argv, "--out", out]
    result = invoke(runner, argv)
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_z_space_is_read_on_the_sphere_and_loglik_matches_a_dense_jacobian(pickles):
    """NVIDIA's mapping normalises z (2nd moment), so G(c z) = G(z): ln Q on the sphere, against a dense float64
    autograd Jacobian of the same wrapper (its n - 1 non-zero singular values, docs/design.md §1.4). (In ada_skip
    z_dim 24 > w_dim 20, and ln Q is +inf, rightly: the stylegan3 repository's StyleGAN2 has z_dim = w_dim 16.)"""
    path, _, _ = pickles["stylegan3_repo"]
    gen = load_generator(path, LoadOptions(truncation=0.7, truncation_cutoff=3), dtype=torch.float64)
    assert gen.ignores_norm and gen.nz == 16 and gen.source == "nvidia-pickle"
    z = gen.prior.sample(2, gen.nz, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # up to the 1e-8 inside the normalisation, relative 1e-8 here
        torch.testing.assert_close(gen(2.5 * z), gen(z), rtol=0, atol=1e-6)
        assert float((gen(1.1 * z) - gen(z)).abs().max()) < 1e-7 < float((gen(z.flip(1)) - gen(z)).abs().max())
    res = gan_probe.loglik(gen, z)
    assert res.values.sphere.all()
    n = gen.nz
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: gen.flat(v[None])[0], z[i])
        s = torch.linalg.svdvals(jac)[: n - 1]
        r = float(z[i].norm())
        area = math.log(2) + n / 2 * math.log(math.pi) - math.lgamma(n / 2)
        expected = -area - float(s.log().sum()) - (n - 1) * math.log(r)
        assert float(res.loglik[i]) == pytest.approx(expected, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize(("label", "space"), [("ada_skip", "w"), ("stylegan3_t", "w"), ("ada_conditional", "w+")])
def test_eigvecs_in_w_is_the_exact_spectrum_of_a_dense_jacobian(label, space, pickles, runner, tmp_path):
    """eigvecs' exact eigenvalues of M = J^T J in float64 (so ln det M) against a dense autograd Jacobian."""
    path, _, _ = pickles[label]
    cls = ["--class", "1"] if label == "ada_conditional" else []
    args = ["eigvecs", path, "--space", space, "--n", "1", "--top", "2", "--traversal-steps", "3", *cls]
    invoke_json(runner, [*args, "--dtype", "float64", "--out", tmp_path / "e"])
    with np.load(tmp_path / "e" / "eigvecs.npz") as f:
        latents, eigenvalues = f["w" if space == "w" else "w_plus"], f["eigenvalues"]
    options = LoadOptions(space=space, class_index=1 if cls else None)
    gen = load_generator(path, options, dtype=torch.float64)
    x = torch.from_numpy(latents[0])
    # column by column in forward mode (torch.autograd's dual tensors; 3,072 reverse passes would take minutes)
    jac = torch.autograd.functional.jacobian(lambda v: gen.flat(v[None])[0], x, vectorize=True, strategy="forward-mode")
    dense = torch.linalg.eigvalsh(jac.T @ jac).flip(0)
    np.testing.assert_allclose(eigenvalues[0], dense.numpy(), rtol=1e-8, atol=1e-10 * float(dense[0]))
    assert float(np.log(eigenvalues[0]).sum()) == pytest.approx(2 * float(torch.linalg.svdvals(jac).log().sum()))


def test_loglik_and_ascend_refuse_w_and_every_other_command_runs(pickles, runner, tmp_path):
    path, _, _ = pickles["stylegan3_t"]
    for command in ("loglik", "ascend"):
        assert_one_line_error(runner, [command, path, "--space", "w", "--n", "1"], "(--space)", tmp_path / command)
    veff = invoke_json(runner, ["veff", path, "--space", "w", "--n", "2", "--k", "4", "--out", tmp_path / "v"])
    assert veff["checkpoint"]["config"]["space"] == "w" and 0 < veff["results"]["veff"] <= veff["checkpoint"]["nz"]
    loglik = invoke_json(runner, ["loglik", path, "--n", "1", "--truncation", "0.7", "--out", tmp_path / "l"])
    assert loglik["results"]["summary"]["num_sphere"] == 1
    note = invoke(runner, ["info", path, "--noise", "seed:3"])
    assert note.exit_code == 0 and "StyleGAN3-T has no noise inputs" in note.stderr


def test_info_of_each_family(pickles, runner, tmp_path):
    names = {
        "stylegan3_repo": "StyleGAN2, stylegan3 repository (skip)",
        "stylegan3_t": "StyleGAN3-T",
        "ada_conditional": "StyleGAN2-ADA (skip)",
    }
    for label, name in names.items():
        args = ["--class", "0"] if label == "ada_conditional" else []
        config = invoke_json(runner, ["info", pickles[label][0], *args])["checkpoint"]["config"]
        assert config["architecture"] == name
    # the content decides, not the extension: an NVIDIA pickle named .pt never reaches torch.load
    renamed = tmp_path / "snapshot.pt"
    renamed.write_bytes(pickles["stylegan3_t"][0].read_bytes())
    assert invoke_json(runner, ["info", renamed])["checkpoint"]["source"] == "nvidia-pickle"


def tensorflow_fixture() -> tuple[dict, dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """The 'skip' generator of data/tensorflow_stylegan2_tiny.safetensors: its static kwargs, TensorFlow variables
    and the state (with init kwargs) NVIDIA's converter made of them."""
    with safe_open(str(DATA / "tensorflow_stylegan2_tiny.safetensors"), "pt") as f:
        configs = json.loads(f.metadata()["configs"])
        variables, state = {}, {}
        for key in f.keys():
            config, kind, name = key.split("/", 2)
            if config != "skip":
                continue
            tensor = f.get_tensor(key)
            if kind == "variables":
                array = tensor.numpy()
                variables[name] = array[()] if array.ndim == 0 and name != "lod" else array
            else:
                state[name] = tensor
    return configs["skip"], variables, state


def test_a_tensorflow_era_pickle_renders_the_generator_nvidias_converter_makes(runner, tmp_path):
    config, variables, state = tensorflow_fixture()
    marker = tmp_path / "executed"
    write_tensorflow_pickle(tmp_path / "tf.pkl", config["static_kwargs"], variables, module_src=marker_source(marker))
    report, npz = render(runner, tmp_path / "tf.pkl", tmp_path / "s", "--seeds", "0-1", "--dtype", "float64")
    ckpt = report["checkpoint"]
    assert ckpt["config"]["architecture"].startswith("StyleGAN2 (TensorFlow-era file")
    assert ckpt["key"] == "G_ema" and ckpt["config"]["entries"]["D"] == "TensorFlow network D"
    g = build(NetworkRecord("training.networks.Generator", (), config["init_kwargs"], state, {}))
    with torch.no_grad():
        expected = g(torch.from_numpy(npz["z"]))
    assert rel(torch.from_numpy(npz["images"]), expected) < 1e-6
    assert_nothing_ran(marker)


# ---------------------------------------------------------------------------------------------------------------
# Bad files and flags: exit 1, one line, nothing written


def _truncated(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return []


def _nan_weights(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    state = dict(record.state)
    state["mapping.fc0.weight"] = state["mapping.fc0.weight"].clone()
    state["mapping.fc0.weight"][0, 0] = float("nan")
    write_generator_pickle(path, NetworkRecord(record.class_name, (), record.init_kwargs, state, {}), tmp / "x")
    return []


def _disallowed_global(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed", augment_pipe=print)
    return []


def _wrong_key(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed")
    return ["--key", "G_emma"]


def _discriminator(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed")
    return ["--key", "D"]


def _plain_entry(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed")
    return ["--key", "training_set_kwargs"]


def _not_nvidias(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    import pickle

    path.write_bytes(pickle.dumps({"G_ema": [1, 2, 3]}, protocol=4))
    return []


def _with_generator_flag(path: Path, record: NetworkRecord, tmp: Path) -> list[str]:
    write_generator_pickle(path, record, tmp / "executed")
    return ["--generator", "os:system"]


BAD_FILES = [
    ("truncated", _truncated, "not a complete pickle"),
    ("nan-weights", _nan_weights, "tensor 'mapping.fc0.weight' has NaN or infinite values"),
    ("disallowed-global", _disallowed_global, "builtins.print"),
    ("wrong-key", _wrong_key, "no entry 'G_emma'; its entries: G: training.networks.Generator"),
    ("discriminator", _discriminator, "Discriminator, which gan-probe does not rebuild (supported: "),
    ("plain-entry", _plain_entry, "the entry 'training_set_kwargs' holds dict, not a network"),
    ("not-nvidias", _not_nvidias, "not one of NVIDIA's StyleGAN pickles"),
    ("generator-flag", _with_generator_flag, "drop --generator"),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
@pytest.mark.parametrize("command", ["info", "sample"])
def test_bad_nvidia_pickles_end_in_one_line(make, fragment, command, runner, tmp_path):
    record, _ = read_fixture(FIXTURES["ada_conditional"])
    path = tmp_path / "snapshot.pkl"
    args = make(path, record, tmp_path)
    assert_one_line_error(runner, [command, path, "--class", "0", *args], fragment, tmp_path / "out")
    assert not (tmp_path / "executed").exists()


def test_seeds_on_any_generator_and_their_refusals(runner, tmp_path, tiny_ckpt):
    """--seeds follows NVIDIA's convention for every generator with a normal prior (here a DCGAN, nz 8)."""
    from gan_probe.models.bundled import samples_dir

    report, npz = render(runner, tiny_ckpt, tmp_path / "s", "--seeds", "3,5-6")
    z = np.concatenate([np.random.RandomState(s).randn(1, 8) for s in (3, 5, 6)])
    np.testing.assert_array_equal(npz["z"], z)
    gen = load_generator(tiny_ckpt, LoadOptions(), dtype=torch.float32)
    with torch.no_grad():
        expected = gen(torch.from_numpy(z).float())
    assert rel(torch.from_numpy(npz["images"]), expected) < 1e-6 and report["results"]["num_samples"] == 3
    uniform = samples_dir() / "mnist-dcgan-nz32-uniform.safetensors"
    np.save(tmp_path / "z.npy", z)
    for ckpt, args, fragment in (
        (uniform, ["--seeds", "0"], "seeds draw normal latents (NVIDIA's convention)"),
        (tiny_ckpt, ["--seeds", "5-2"], "the range '5-2' runs backwards; write 2-5 (--seeds)"),
        (tiny_ckpt, ["--seeds", "a"], "give numbers and ranges like 0-7,12"),
        (tiny_ckpt, ["--seeds", "0-4294967296"], "every seed must be 0 to 4294967295"),
        (tiny_ckpt, ["--seeds", "0-100000"], "name more than 100,000 seeds"),
        (tiny_ckpt, ["--seeds", "0", "--latents", tmp_path / "z.npy"], "give --latents or --seeds, not both"),
        (tiny_ckpt, ["--class", "1"], "--class applies to StyleGAN2 and StyleGAN3 generators only"),
        (tiny_ckpt, ["--truncation-cutoff", "2"], "--truncation-cutoff applies to StyleGAN2 and StyleGAN3"),
    ):
        assert_one_line_error(runner, ["sample", ckpt, *args], fragment, tmp_path / "out")


def test_ascend_in_z_and_pag_in_w_run_on_an_nvidia_pickle(pickles, runner, tmp_path):
    path, _, _ = pickles["stylegan3_repo"]  # 16 px, z_dim = w_dim = 16
    ascend = invoke_json(runner, ["ascend", path, "--n", "1", "--steps", "2", "--frames", "2", "--out", tmp_path / "a"])
    assert len(ascend["results"]["latents"]) == 1
    with np.load(tmp_path / "a" / "trajectories.npz") as f:  # on the sphere (the mapping ignores |z|): |z| is kept
        z = f["z"]
    norms = np.linalg.norm(z, axis=-1)
    assert np.ptp(norms) < 1e-6 * norms.max() and np.ptp(z[:, 0, 0]) > 0
    data = np.random.default_rng(0).uniform(-1, 1, size=(3, 3, 16, 16))
    np.save(tmp_path / "x.npy", data)
    args = ["pag", path, "--space", "w", "--data", tmp_path / "x.npy", "--steps", "3", "--prior-samples", "8"]
    pag = invoke_json(runner, [*args, "--top", "2", "--out", tmp_path / "p"])
    # (the fixture's weights make images far outside [-1, 1], so the score of these data says nothing; the run counts)
    assert pag["checkpoint"]["config"]["space"] == "w" and "mapped prior draws in w" in pag["results"]["reference"]
    assert len(pag["results"]["per_image"]) == 3
