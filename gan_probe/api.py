"""The Python API: one plain function per command, returning the command's result object.

    >>> import gan_probe
    >>> gen = gan_probe.load_generator()              # the bundled MNIST DCGAN (nz = 32)
    >>> result = gan_probe.loglik(gen, n=4)           # or gan_probe.loglik(gen, z) for your own (N, nz) latents
    >>> result.loglik.shape
    torch.Size([4])

Nothing here prints or writes files (``gan_probe.report`` turns a result into
files); errors are :class:`gan_probe.errors.GanProbeError` whose ``param``
names the argument at fault.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from gan_probe.analyses.ascend import AscendParams, AscendResult, run_ascend
from gan_probe.analyses.common import Latents
from gan_probe.analyses.eigvecs import EigvecsParams, EigvecsResult, run_eigvecs
from gan_probe.analyses.loglik import GridParams, LoglikParams, LoglikResult, run_loglik
from gan_probe.analyses.pag import PagParams, PagResult, run_pag
from gan_probe.analyses.reversal import ReversalParams
from gan_probe.analyses.veff import VeffParams, VeffResult, run_veff
from gan_probe.device import resolve_device, resolve_dtype
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator, LoadOptions
from gan_probe.models.checkpoint import load_generator as _load
from gan_probe.spectral.estimators import REGISTRY

# Every default below is the parameter dataclass's, stated there once (the command line reads the same).
_LOGLIK = LoglikParams()
_ASCEND = AscendParams()
_EIGVECS = EigvecsParams()
_VEFF = VeffParams()
_PAG = PagParams()
_REVERSAL = _PAG.reversal


def load_generator(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    arch: str | None = None,
    nz: int | None = None,
    prior: str | None = None,
    sigma: float | None = None,
    low: float | None = None,
    high: float | None = None,
    generator: str | None = None,
    space: str | None = None,
    truncation: float | None = None,
    noise: str | None = None,
    key: str | None = None,
    output_range: tuple[float, float] | str | None = None,
    seed: int = 0,
) -> LoadedGenerator:
    """Load a checkpoint (None: the bundled default) onto ``device`` (auto: the GPU when there is one).

    ``dtype``: auto (float32, with float64 for the latents whose float32 J is
    flagged), float32 or float64. ``arch``, ``nz``, ``prior``, ``sigma``,
    ``low``, ``high``, ``output_range`` ((low, high) or "none") supply or
    override what a foreign file lacks; ``key`` selects the generator's entry in
    a training checkpoint ("g_ema", "GAN.GE"); ``generator``
    ("package.module:factory") builds a custom architecture (the only route that
    runs code, yours); ``seed`` freezes the noise of a generator that draws it
    inside forward. For a StyleGAN2: ``space`` z, w or w+ (default z),
    ``truncation`` psi, ``noise`` stored, zero or seed:N.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, dev)
    auto = isinstance(dtype, str) and dtype.strip().lower() == "auto"
    options = LoadOptions(
        arch,
        nz,
        prior,
        sigma,
        low,
        high,
        generator,
        space,
        truncation,
        noise,
        key=key,
        output_range=output_range,
        seed=seed,
        dtype_auto=auto,
    )
    return _load(path, options, device=dev, dtype=dt)


def _estimators(method: str, estimator: Any) -> dict[str, Any] | None:
    """An estimator's parameter dataclass, keyed by its method (``auto`` may pick slq)."""
    if estimator is None:
        return None
    names = [name for name, est in REGISTRY.items() if isinstance(estimator, est.params)]
    if not names or method not in ("auto", names[0]):
        raise GanProbeError(
            f"estimator parameters {type(estimator).__name__} do not fit method {method!r}", param="estimator"
        )
    return {names[0]: estimator}


def loglik(
    gen: LoadedGenerator,
    z: Latents = None,
    *,
    n: int = _LOGLIK.num,
    method: str = _LOGLIK.method,
    estimator: Any = None,
    check: bool = _LOGLIK.check,
    grid: GridParams | None = _LOGLIK.grid,
    geometry: str = _LOGLIK.geometry,
    batch_size: int = _LOGLIK.batch_size,
    chunk_size: int | None = _LOGLIK.chunk_size,
    seed: int = _LOGLIK.seed,
) -> LoglikResult:
    """ln Q(G(z)) = ln P_Z(z) - 1/2 ln det J^T J at latents ``z`` (N, nz) (None: ``n`` seeded prior draws).

    ``method``: exact, chebyshev, taylor, slq or auto; ``estimator`` its
    parameters (e.g. ``SLQParams(steps=100)``); ``check`` adds the exact value
    beside an estimate. ``result.loglik`` is (N,) in nats.
    """
    params = LoglikParams(
        num=n,
        latents=z,
        method=method,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
        grid=grid,
        estimators=_estimators(method, estimator),
        check=check,
        geometry=geometry,
    )
    return run_loglik(gen, params)


def ascend(
    gen: LoadedGenerator,
    z: Latents = None,
    *,
    n: int = _ASCEND.num,
    steps: int = _ASCEND.steps,
    lr: float = _ASCEND.lr,
    optimizer: str = _ASCEND.optimizer,
    method: str = _ASCEND.method,
    estimator: Any = None,
    frames: int = _ASCEND.frames,
    geometry: str = _ASCEND.geometry,
    seed: int = _ASCEND.seed,
    batch_size: int = _ASCEND.batch_size,
) -> AscendResult:
    """Gradient ascent on ln Q(G(z)) from latents ``z`` (None: ``n`` prior draws); trajectories in the result."""
    params = AscendParams(
        num=n,
        latents=z,
        method=method,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        frames=frames,
        seed=seed,
        estimators=_estimators(method, estimator),
        geometry=geometry,
        batch_size=batch_size,
    )
    return run_ascend(gen, params)


def eigvecs(
    gen: LoadedGenerator,
    z: Latents = None,
    *,
    n: int = _EIGVECS.num,
    top: int | None = _EIGVECS.top,
    step: float | None = _EIGVECS.step,
    traversal_steps: int = _EIGVECS.traversal_steps,
    project: bool = _EIGVECS.project,
    batch_size: int = _EIGVECS.batch_size,
    chunk_size: int | None = _EIGVECS.chunk_size,
    seed: int = _EIGVECS.seed,
) -> EigvecsResult:
    """Eigen-decomposition of M = J^T J at trial latents and the images perturbed along eigenvectors and at random."""
    params = EigvecsParams(
        num=n,
        latents=z,
        top=top,
        step=step,
        traversal_steps=traversal_steps,
        project=project,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
    )
    return run_eigvecs(gen, params)


def veff(
    gen: LoadedGenerator,
    z: Latents = None,
    *,
    n: int = _VEFF.num,
    tau: float | Sequence[float] = _VEFF.taus,
    k: int = _VEFF.num_directions,
    step: float | None = _VEFF.step,
    directions: str = _VEFF.directions,
    project: bool = _VEFF.project,
    batch_size: int = _VEFF.batch_size,
    chunk_size: int | None = _VEFF.chunk_size,
    seed: int = _VEFF.seed,
) -> VeffResult:
    """v_eff(tau) over latents ``z`` (None: ``n`` prior draws) with ``k`` random directions; ``result.veff`` per tau."""
    taus = (float(tau),) if isinstance(tau, (int, float)) else tuple(float(t) for t in tau)
    params = VeffParams(
        num=n,
        latents=z,
        num_directions=k,
        step=step,
        taus=taus,
        directions=directions,
        project=project,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
    )
    return run_veff(gen, params)


def pag(
    gen: LoadedGenerator,
    data: str | os.PathLike[str] | torch.Tensor | None = None,
    *,
    limit: int | None = _PAG.limit,
    resize: bool = _PAG.resize,
    steps: int = _REVERSAL.steps,
    lr: float = _REVERSAL.lr,
    optimizer: str = _REVERSAL.optimizer,
    init_std: float = _REVERSAL.init_std,
    prior_samples: int = _PAG.num_prior_samples,
    top: int = _PAG.num_top,
    batch_size: int = _REVERSAL.batch_size,
    seed: int = _PAG.seed,
) -> PagResult:
    """Reverse the generator on ``data`` (a folder, an array file, a tensor in the generator's units, or None: the
    bundled held-out MNIST images) and score the recovered latents (PAG); ``result.score.pag`` in nats."""
    params = PagParams(
        data=data if isinstance(data, torch.Tensor) or data is None else os.fspath(data),
        limit=limit,
        resize=resize,
        reversal=ReversalParams(
            steps=steps, lr=lr, optimizer=optimizer, init_std=init_std, batch_size=batch_size, seed=seed
        ),
        num_prior_samples=prior_samples,
        num_top=top,
        seed=seed,
    )
    return run_pag(gen, params)


__all__ = ["ascend", "eigvecs", "load_generator", "loglik", "pag", "veff"]
