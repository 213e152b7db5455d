"""Built-in generator architectures and the inference of their configs from weights.

``dcgan`` is state-dict compatible with the Generator of the PyTorch examples
repository (``dcgan/main.py``): a ``main`` ``nn.Sequential`` of bias-free
ConvTranspose2d layers with BatchNorm2d + ReLU between them and a Tanh at the
end, taking (B, nz, 1, 1). 64x64 has five convolutions (keys
``main.{0,3,6,9,12}``), 32x32 four (``main.{0,3,6,9}``); channel widths halve
from ``ngf * 2**(depth-2)`` down to ``ngf``.

``stylegan2`` is rosinality/stylegan2-pytorch's ``Generator`` layout (:mod:`gan_probe.models.stylegan2`).

``mlp`` is a fully connected generator for toy and vector-valued models:
``net = Sequential(Linear, act, ..., Linear[, Tanh])``.

Every built-in takes latents of shape (B, nz) at its interface.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models.stylegan2 import StyleGAN2Generator, infer_stylegan2_config, looks_like_stylegan2

ARCHITECTURES = ("dcgan", "mlp", "stylegan2")
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


class DCGANGenerator(nn.Module):
    """PyTorch-examples DCGAN generator; ``image_size`` 4 * 2**k (32 and 64 are the usual)."""

    def __init__(self, nz: int, ngf: int, nc: int, image_size: int = 64) -> None:
        super().__init__()
        depth = _dcgan_depth(image_size)
        widths = [ngf * 2 ** (depth - 2 - i) for i in range(depth - 1)] + [nc]
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.BatchNorm2d(c_in), nn.ReLU(True), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)]
        layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)
        self.nz = nz

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class MLPGenerator(nn.Module):
    """z (B, nz) -> Linear/act stack -> (B, *out_shape); optional Tanh on the output."""

    def __init__(
        self,
        nz: int,
        hidden: list[int],
        out_shape: list[int],
        activation: str = "relu",
        output_activation: str = "none",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise CheckpointError(f"unknown mlp activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
        if output_activation not in ("none", "tanh"):
            raise CheckpointError(f"unknown mlp output_activation {output_activation!r}; use none or tanh")
        widths = [nz, *hidden, int(torch.tensor(out_shape).prod())]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(_ACTIVATIONS[activation]())
        if output_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.nz = nz
        self.out_shape = tuple(out_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[0], *self.out_shape)


def _dcgan_depth(image_size: int) -> int:
    depth = 2
    while 4 * 2 ** (depth - 1) < image_size:
        depth += 1
    if 4 * 2 ** (depth - 1) != image_size:
        raise CheckpointError(f"dcgan image_size must be 4 * 2^k (e.g. 32 or 64), got {image_size}")
    return depth


def build_generator(arch: str, config: Mapping) -> nn.Module:
    """Instantiate a built-in architecture from its config dict."""
    try:
        if arch == "dcgan":
            return DCGANGenerator(
                int(config["nz"]), int(config["ngf"]), int(config["nc"]), int(config.get("image_size", 64))
            )
        if arch == "stylegan2":
            return StyleGAN2Generator(config)
        if arch == "mlp":
            return MLPGenerator(
                int(config["nz"]),
                [int(h) for h in config.get("hidden", [])],
                [int(s) for s in config["out_shape"]],
                str(config.get("activation", "relu")),
                str(config.get("output_activation", "none")),
            )
    except KeyError as exc:
        raise CheckpointError(f"{arch} config lacks {exc.args[0]!r} (got {dict(config)})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"bad {arch} config {dict(config)}: {exc}") from None
    raise CheckpointError(f"unknown architecture {arch!r}: use --arch {' or '.join(ARCHITECTURES)}")


def detect_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """Guess the built-in architecture of a state dict from its keys."""
    w = state.get("main.0.weight")
    if w is not None and w.ndim == 4:
        return "dcgan"
    if looks_like_stylegan2(state):
        return "stylegan2"
    if state.get("net.0.weight") is not None:
        return "mlp"
    return None


def infer_config(arch: str, state: Mapping[str, torch.Tensor]) -> dict:
    """Read a built-in architecture's config off the weight shapes.

    For ``dcgan``: ``main.0.weight`` is (nz, ngf * 2**(depth-2), 4, 4) and the
    last convolution is (ngf, nc, 4, 4); the number of convolutions gives the
    image size. For ``mlp``: nz, the hidden widths and the output width
    (activation and output shape are not recoverable and default to relu and
    a flat vector).
    """
    if arch == "dcgan":
        convs = []
        i = 0
        while f"main.{i}.weight" in state:
            w = state[f"main.{i}.weight"]
            if w.ndim != 4:
                raise CheckpointError(
                    f"'main.{i}.weight' has shape {tuple(w.shape)}; a dcgan ConvTranspose2d weight is 4-D"
                )
            convs.append(w)
            i += 3
        if len(convs) < 2:
            raise CheckpointError("not a dcgan state dict: fewer than two 'main.{0,3,...}.weight' convolutions")
        nz, ngf, nc = convs[0].shape[0], convs[-1].shape[0], convs[-1].shape[1]
        config = {"nz": int(nz), "ngf": int(ngf), "nc": int(nc), "image_size": 4 * 2 ** (len(convs) - 1)}
        expected = DCGANGenerator(**config).state_dict()
        _check_shapes(arch, expected, state)
        return config
    if arch == "stylegan2":
        return infer_stylegan2_config(state)
    if arch == "mlp":
        indexed = sorted(
            (int(m.group(1)), w) for k, w in state.items() if (m := re.fullmatch(r"net\.(\d+)\.weight", k))
        )
        weights = [w for _, w in indexed]
        if not weights or any(w.ndim != 2 for w in weights):
            raise CheckpointError("not an mlp state dict: expected 2-D 'net.{i}.weight' Linear weights")
        config = {
            "nz": int(weights[0].shape[1]),
            "hidden": [int(w.shape[0]) for w in weights[:-1]],
            "out_shape": [int(weights[-1].shape[0])],
            "activation": "relu",
            "output_activation": "none",
        }
        return config
    raise CheckpointError(f"unknown architecture {arch!r}: use --arch {' or '.join(ARCHITECTURES)}")


def _check_shapes(arch: str, expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(f"{arch} state dict lacks {key!r}")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{arch} state dict: {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
