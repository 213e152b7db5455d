"""Training checkpoints as users have them: the generator's state dict found by rule or by --key, extras beside it,
and every refusal (pickled objects other than the allowlist, nothing that fits, a bad key)."""

from __future__ import annotations

import argparse
import json
import pathlib
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models import LoadOptions, load_generator
from gan_probe.models.containers import find_generator_state, read_container
from tests.conftest import invoke
from tests.test_checkpoint import ExamplesGenerator, Exploit

NZ = 7


def _generator(seed: int) -> ExamplesGenerator:
    torch.manual_seed(seed)
    net = ExamplesGenerator(NZ, 3, 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _discriminator() -> nn.Module:
    torch.manual_seed(99)
    return nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.Flatten(), nn.Linear(4 * 32 * 32, 1))


def _prefixed(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def _optimizer_state(module: nn.Module) -> dict:
    """A real Adam state dict after one step (int-keyed per-parameter state, param_groups); changes ``module``."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def _same_outputs(gen, net: nn.Module) -> bool:
    z = torch.randn(3, NZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(gen(z.to(gen.dtype)).float(), net.float()(z[:, :, None, None]), atol=1e-5)


def test_lightning_checkpoint_takes_the_generator_prefix(tmp_path):
    g, d = _generator(1), _discriminator()
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.2.0",
            "state_dict": {**_prefixed(g, "generator."), **_prefixed(d, "discriminator.")},
            "optimizer_states": [_optimizer_state(_generator(1)), _optimizer_state(_discriminator())],
            "lr_schedulers": [],
            "hyper_parameters": {"latent_dim": NZ, "lr": 2e-4, "b1": 0.5},
        },
        path,
    )
    gen = load_generator(path)
    assert gen.arch == "dcgan" and gen.nz == NZ and gen.key == "state_dict.generator"
    assert _same_outputs(gen, _generator(1))
    assert gen.describe()["key"] == "state_dict.generator"
    assert gen.extras["hyper_parameters"] == {"latent_dim": NZ, "lr": 2e-4, "b1": 0.5}
    assert gen.extras["epoch"] == 3 and "optimizer_states" not in gen.extras


@pytest.mark.parametrize("prefix", ["G.", "netG.", "gen."])
def test_other_lightning_prefixes(tmp_path, prefix):
    g, d = _generator(2), _discriminator()
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {**_prefixed(g, prefix), **_prefixed(d, "D." if prefix == "G." else "netD.")}}, path)
    gen = load_generator(path)
    assert gen.key == "state_dict." + prefix[:-1] and _same_outputs(gen, g)


def _lucidrains(tmp_path: Path) -> Path:
    path = tmp_path / "model_12.pt"
    gan = {**_prefixed(_generator(3), "G."), **_prefixed(_generator(4), "GE."), **_prefixed(_discriminator(), "D.")}
    torch.save({"GAN": gan, "version": "1.8.9"}, path)
    return path


def test_lucidrains_prefers_the_ema_copy_and_key_selects(tmp_path):
    path = _lucidrains(tmp_path)
    gen = load_generator(path)
    assert gen.key == "GAN.GE" and _same_outputs(gen, _generator(4))
    explicit = load_generator(path, LoadOptions(key="GAN.GE"))
    assert explicit.key == "GAN.GE" and explicit.extras == {"version": "1.8.9"}
    plain = load_generator(path, LoadOptions(key="GAN.G"))
    assert plain.key == "GAN.G" and _same_outputs(plain, _generator(3)) and not _same_outputs(plain, _generator(4))
    narrowed = load_generator(path, LoadOptions(key="GAN"))  # a key narrows, the rules pick inside it
    assert narrowed.key == "GAN.GE"


def test_lucidrains_key_on_the_command_line(tmp_path, runner):
    path = _lucidrains(tmp_path)
    result = invoke(runner, ["info", path, "--key", "GAN.G", "--json"])
    assert result.exit_code == 0, result.stderr
    checkpoint = json.loads(result.stdout)["checkpoint"]
    assert checkpoint["key"] == "GAN.G" and checkpoint["extras"] == ["version"]


@pytest.mark.parametrize("wrappers", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_dataparallel_and_compile_prefixes(tmp_path, wrappers):
    g = _generator(5)
    path = tmp_path / "wrapped.pth"
    torch.save({"netG": _prefixed(g, wrappers), "netD": _prefixed(_discriminator(), wrappers)}, path)
    container = read_container(path)
    assert container.key == "netG" and container.stripped == tuple(p + "." for p in wrappers.split(".")[:-1])
    assert _same_outputs(load_generator(path), g)


@pytest.mark.parametrize("suffix", [".model", ".tar", ".bin", ".ckpt"])
def test_torch_suffixes(tmp_path, suffix):
    g = _generator(6)
    path = tmp_path / f"gan4{suffix}"
    torch.save(
        {
            "epoch": 4,
            "loss_information": {"generator_losses": [0.5, 0.25]},
            "generator": g.state_dict(),
            "discriminator": _discriminator().state_dict(),
            "optimizer_generator": _optimizer_state(_generator(6)),
        },
        path,
    )
    gen = load_generator(path)
    assert gen.key == "generator" and _same_outputs(gen, g)
    assert gen.extras["loss_information"] == {"generator_losses": [0.5, 0.25]}


def _train_py_args() -> argparse.Namespace:
    """The argparse.Namespace rosinality's train.py stores under 'args' (a subset of its fields)."""
    return argparse.Namespace(
        path="lmdb",
        arch="stylegan2",
        iter=800000,
        batch=16,
        size=32,
        r1=10.0,
        latent=NZ,
        n_mlp=8,
        channel_multiplier=2,
        ckpt=None,
        lr=0.002,
        augment=False,
        wandb=False,
        local_rank=0,
        distributed=False,
    )


def test_rosinality_train_py_checkpoint_uses_g_ema(tmp_path):
    g, g_ema = _generator(7), _generator(8)  # different weights: the test can tell which was used
    assert not _same_outputs_modules(g, g_ema)
    path = tmp_path / "010000.pt"
    torch.save(
        {
            "g": g.state_dict(),
            "d": _discriminator().state_dict(),
            "g_ema": g_ema.state_dict(),
            "g_optim": _optimizer_state(_generator(7)),
            "d_optim": _optimizer_state(_discriminator()),
            "args": _train_py_args(),
            "ada_aug_p": 0.25,
        },
        path,
    )
    container = read_container(path)
    assert container.key == "g_ema"
    assert container.args == vars(_train_py_args())
    assert container.extras["ada_aug_p"] == 0.25 and "g_optim" not in container.extras
    gen = load_generator(path)
    assert gen.key == "g_ema" and _same_outputs(gen, g_ema) and not _same_outputs(gen, g)
    assert gen.extras["args"]["latent"] == NZ
    assert argparse.Namespace not in torch.serialization.get_safe_globals(), "the allowlist outlived the load"


def _same_outputs_modules(a: nn.Module, b: nn.Module) -> bool:
    z = torch.randn(3, NZ, 1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a(z), b(z))


def test_rosinality_convert_weight_exposes_latent_avg(tmp_path):
    g_ema = _generator(9)
    latent_avg = torch.linspace(-1, 1, NZ)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": latent_avg}, path)
    container = read_container(path)
    assert container.key == "g_ema" and container.args == {}
    assert torch.equal(container.latent_avg, latent_avg) and torch.equal(container.tensor("latent_avg"), latent_avg)
    gen = load_generator(path)
    assert torch.equal(gen.extras["latent_avg"], latent_avg) and gen.describe()["extras"] == ["latent_avg"]


def test_bare_state_dict_has_no_key(tmp_path):
    path = tmp_path / "netG_epoch_24.pth"
    torch.save(_generator(10).state_dict(), path)
    gen = load_generator(path)
    assert gen.key is None and gen.describe()["key"] is None and gen.extras == {}


def test_find_generator_state_in_memory():
    g = _generator(11)
    found = find_generator_state({"model": {"G_ema": g.state_dict(), "G": _generator(12).state_dict()}})
    assert found.key == "model.G_ema" and found.state.keys() == g.state_dict().keys()


# --- refusals ------------------------------------------------------------------------------------------------------


class Settings:
    """A plain custom class a training script might store: not on the allowlist, so refused."""

    def __init__(self) -> None:
        self.size = 32


def _train_py_with(tmp_path: Path, extra: object, name: str = "evil.pt") -> Path:
    path = tmp_path / name
    torch.save({"g": _generator(7).state_dict(), "g_ema": _generator(8).state_dict(), "args": extra}, path)
    return path


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (lambda tmp: Exploit(tmp / "pwned"), "builtins.getattr"),
        (lambda tmp: Settings(), "Settings"),
        (lambda tmp: pathlib.PurePosixPath("/data"), "PurePosixPath"),
    ],
)
def test_train_py_file_with_other_pickled_objects_is_refused(tmp_path, runner, extra, needle):
    path = _train_py_with(tmp_path, extra(tmp_path))
    with pytest.raises(CheckpointError, match="never runs code") as info:
        load_generator(path)
    assert needle in str(info.value) and "argparse.Namespace" in str(info.value)
    out = tmp_path / "out"
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", out])
    assert result.exit_code == 1 and "refused" in result.stderr and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    assert not (tmp_path / "pwned").exists()
    assert argparse.Namespace not in torch.serialization.get_safe_globals()


def test_allowlist_is_namespace_only(tmp_path):
    """argparse.Namespace loads; its look-alike types.SimpleNamespace, a class of the standard library with the
    same fields, is refused by name: the allowlist holds that one class and nothing near it."""
    args = vars(_train_py_args())
    assert load_generator(_train_py_with(tmp_path, argparse.Namespace(**args), "ns.pt")).extras["args"] == args
    with pytest.raises(CheckpointError, match="never runs code") as info:
        load_generator(_train_py_with(tmp_path, types.SimpleNamespace(**args), "simple.pt"))
    assert "SimpleNamespace" in str(info.value)


@pytest.mark.parametrize(
    ("content", "key", "needles"),
    [
        (
            lambda: {"foo": _generator(1).state_dict(), "bar": _generator(2).state_dict(), "step": 3},
            None,
            ["cannot tell which entry", "foo (25 tensors)", "bar (25 tensors)", "top-level keys: foo (state dict"],
        ),
        (
            lambda: {"netD": _discriminator().state_dict(), "epoch": 1},
            None,
            [
                "does not hold a generator state dict",
                "top-level keys: netD (state dict, 4 tensors), epoch (int)",
                "candidate sub-dicts: netD (4 tensors)",
            ],
        ),
        (
            lambda: {"GAN": {**_prefixed(_generator(3), "G."), **_prefixed(_discriminator(), "D.")}, "version": "1"},
            "GAN.X",
            ["no entry or key prefix 'X' in GAN", "GAN.G (25 tensors)", "GAN.D (4 tensors)"],
        ),
        (lambda: {"g": _generator(1).state_dict(), "version": "1"}, "version", ["names a str, not a state dict"]),
        (lambda: {"g": _generator(1).state_dict()}, "g..x", ["not a dotted path"]),
        (lambda: [torch.zeros(2)], None, ["does not hold a state dict", "but list"]),
    ],
)
def test_nothing_fits_lists_what_the_file_holds(tmp_path, runner, content, key, needles):
    path = tmp_path / "ckpt.pt"
    torch.save(content(), path)
    with pytest.raises(CheckpointError) as info:
        load_generator(path, LoadOptions(key=key))
    for needle in needles:
        assert needle in str(info.value)
    result = invoke(runner, ["info", path, *(["--key", key] if key else [])])
    assert result.exit_code == 1 and needles[0] in result.stderr
    if key is not None:
        assert "--key" in result.stderr


def test_rosinality_stylegan2_train_and_convert_weight_files(tmp_path):
    """The built-in StyleGAN2 from rosinality's own files: g_ema taken over g, latent_avg used as the mean w."""
    from safetensors.torch import load_file

    data = load_file(str(Path(__file__).parent / "data" / "rosinality_stylegan2_tiny.safetensors"))
    g_ema = {k[2:]: v for k, v in data.items() if k.startswith("g.")}  # rosinality's Generator.state_dict()
    bare_file = tmp_path / "g_ema.pt"
    torch.save(g_ema, bare_file)
    g = {k: v + 0.05 if k.startswith("style.") and v.is_floating_point() else v for k, v in g_ema.items()}
    train = tmp_path / "000100.pt"
    torch.save(
        {"g": g, "d": _discriminator().state_dict(), "g_ema": g_ema, "args": _train_py_args(), "ada_aug_p": 0.0},
        train,
    )
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    gen, bare = load_generator(train), load_generator(bare_file)
    assert gen.arch == "stylegan2" and gen.key == "g_ema" and gen.extras["args"]["n_mlp"] == 8
    with torch.no_grad():
        assert torch.equal(gen(z), bare(z))
    latent_avg = torch.zeros(8)
    converted = tmp_path / "converted.pt"
    torch.save({"g_ema": g_ema, "latent_avg": latent_avg}, converted)
    gen = load_generator(converted, LoadOptions(truncation=0.5))
    assert gen.key == "g_ema" and gen.config["w_avg"] == "latent_avg of the checkpoint"
