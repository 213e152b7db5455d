"""gan-probe: how a trained GAN generator uses its latent space.

Implements Ramesh & LeCun (2018), "Backpropagation for Implicit Spectral
Densities", and Kilcher, Lucchi & Hofmann (2017), "Flexible Prior
Distributions for Deep Generative Models". The Python API (:mod:`gan_probe.api`)
is one function per command::

    import gan_probe
    gen = gan_probe.load_generator("ckpt.safetensors")
    lnq = gan_probe.loglik(gen, z).loglik          # (N,) nats

The numerics live in :mod:`gan_probe.spectral` and need neither Typer nor
Rich. ``import gan_probe`` itself imports nothing heavy: the API functions
(and torch with them) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gan_probe._version import __version__ as __version__

if TYPE_CHECKING:
    from gan_probe.api import ascend, eigvecs, load_generator, loglik, pag, prior, veff
    from gan_probe.errors import GanProbeError
    from gan_probe.spectral.estimators import ChebyshevParams, SLQParams, TaylorParams

__all__ = [
    "ChebyshevParams",
    "GanProbeError",
    "SLQParams",
    "TaylorParams",
    "__version__",
    "ascend",
    "eigvecs",
    "load_generator",
    "loglik",
    "pag",
    "prior",
    "veff",
]

_HOMES = {
    "ascend": "gan_probe.api",
    "eigvecs": "gan_probe.api",
    "load_generator": "gan_probe.api",
    "loglik": "gan_probe.api",
    "pag": "gan_probe.api",
    "prior": "gan_probe.api",
    "veff": "gan_probe.api",
    "GanProbeError": "gan_probe.errors",
    "ChebyshevParams": "gan_probe.spectral.estimators",
    "SLQParams": "gan_probe.spectral.estimators",
    "TaylorParams": "gan_probe.spectral.estimators",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gan_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
