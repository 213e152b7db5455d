"""Generators that draw noise inside ``forward``, evaluated with the noise frozen.

StyleGAN-style noise inputs, lightweight-gan's and any ``torch.randn`` in
``forward`` make G a random function: two evaluations at the same z differ, and
``torch.func.vmap`` refuses the random call (its default randomness mode is
``error``). The spectral analyses need one function, the same for the primal and
every tangent. So a stochastic generator is *frozen*: G(z) := G(z; n_s), one
fixed noise draw n_s per seed s.

- Detection (:func:`detect_noise`): the output differs between two evaluations
  at the same latents, or a vmap in randomness mode ``error`` raises.
- Freezing (:func:`frozen_call`): each evaluation runs under
  :func:`torch.random.fork_rng` (the caller's random state is left as it was)
  with the random generator seeded with s, and every latent is evaluated as a
  batch of one under ``vmap(randomness="same")``, so each latent draws the same
  noise, a draw of the shape a batch of one has. A latent's noise therefore does
  not depend on its batch neighbours or on the batch size, and reruns give the
  same numbers. The Jacobian's vmaps run with ``randomness="same"`` too, so the
  primal and every tangent see that noise (one forward pass holds both).
- A module vmap cannot run per sample (e.g. a torch.export program whose graph
  reads its input's size) is evaluated latent by latent in a loop, each
  evaluation seeded the same way: the same guarantees, B calls instead of one.

Limitation: the noise is one fixed draw per seed, not an average over noise
(a different ``--seed`` is a different frozen function). Noise drawn in
float64 (``--dtype auto`` promotion) is a different draw from float32 noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import vmap


@dataclass(frozen=True)
class FrozenNoise:
    """How a stochastic generator is evaluated: every call seeded with ``seed``; ``vmapped``: per latent by
    vmap (one call), else latent by latent in a loop (where vmap cannot run the module)."""

    seed: int
    vmapped: bool = True

    def describe(self) -> str:
        return f"frozen, seed {self.seed}"


def _seed_all(seed: int, device: torch.device) -> None:
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


def _fork_devices(device: torch.device) -> list[int]:
    """The accelerator whose random state fork_rng must save and restore (none for the CPU)."""
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "mps":
        return [0]
    return []


def frozen_call(module: nn.Module, z: torch.Tensor, noise: FrozenNoise) -> torch.Tensor:
    """module(z) with its noise frozen: each latent of z (B, nz) sees the draw a seeded batch of one gets."""
    device = z.device
    kind = device.type if device.type in ("cuda", "mps") else "cuda"
    with torch.random.fork_rng(devices=_fork_devices(device), device_type=kind):
        if noise.vmapped:
            _seed_all(noise.seed, device)
            return vmap(lambda zi: module(zi[None])[0], randomness="same")(z)
        outs = []
        for i in range(z.shape[0]):
            _seed_all(noise.seed, device)
            outs.append(module(z[i : i + 1]))
        return torch.cat(outs)


def detect_noise(module: nn.Module, z: torch.Tensor) -> str | None:
    """Why ``module`` is stochastic at latents z (B, nz), or None when it is a plain function of z."""
    with torch.no_grad():
        a, b = module(z), module(z)
    scale = float(a.detach().abs().max()) if a.numel() else 0.0
    tol = 64 * torch.finfo(a.dtype).eps * max(scale, torch.finfo(a.dtype).tiny) if a.is_floating_point() else 0.0
    if a.shape != b.shape or float((a - b).abs().max()) > tol:
        return "its output differs between two evaluations at the same latents"
    try:
        with torch.no_grad():
            vmap(module, randomness="error")(z[None])
    except RuntimeError as exc:
        if "randomness" in str(exc):
            return "it draws random numbers inside forward (vmap's randomness error)"
    except Exception:  # noqa: BLE001 - a module vmap cannot run says nothing about noise
        pass
    return None


def freeze(module: nn.Module, z: torch.Tensor, seed: int) -> FrozenNoise:
    """The way to evaluate ``module`` with frozen noise: vmap per sample, or a loop where vmap fails
    (or disagrees with the loop)."""
    looped = FrozenNoise(seed, vmapped=False)
    with torch.no_grad():
        ref = frozen_call(module, z, looped)
        try:
            out = frozen_call(module, z, FrozenNoise(seed, vmapped=True))
        except Exception:  # noqa: BLE001 - vmap cannot run this module per sample: loop
            return looped
    if out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max() + 1)):
        return looped
    return FrozenNoise(seed, vmapped=True)


__all__ = ["FrozenNoise", "detect_noise", "freeze", "frozen_call"]
