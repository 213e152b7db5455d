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
from gan_probe.analyses.divergence import DivergenceParams, DivergenceResult, run_divergence
from gan_probe.analyses.eigvecs import EigvecsParams, EigvecsResult, run_eigvecs
from gan_probe.analyses.loglik import GridParams, LoglikParams, LoglikResult, run_loglik
from gan_probe.analyses.pag import PagParams, PagResult, run_pag
from gan_probe.analyses.prior import PganParams, PriorParams, PriorResult, run_prior
from gan_probe.analyses.reversal import ReversalParams
from gan_probe.analyses.veff import VeffParams, VeffResult, run_veff
from gan_probe.device import resolve_device, resolve_dtype
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator, LoadOptions
from gan_probe.models.checkpoint import load_generator as _load
from gan_probe.models.prior_net import DEFAULT_WIDTHS
from gan_probe.spectral.estimators import REGISTRY


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
    n: int = 16,
    method: str = "exact",
    estimator: Any = None,
    check: bool = False,
    grid: GridParams | None = None,
    geometry: str = "auto",
    batch_size: int = 16,
    chunk_size: int | None = None,
    seed: int = 0,
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
    n: int = 4,
    steps: int = 50,
    lr: float = 0.05,
    optimizer: str = "adam",
    method: str = "exact",
    estimator: Any = None,
    frames: int = 8,
    geometry: str = "auto",
    seed: int = 0,
    batch_size: int = 16,
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
    n: int = 12,
    top: int | None = None,
    step: float | None = None,
    traversal_steps: int = 9,
    project: bool = False,
    batch_size: int = 16,
    chunk_size: int | None = None,
    seed: int = 0,
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
    n: int = 64,
    tau: float | Sequence[float] = 1.0,
    k: int = 32,
    step: float | None = None,
    directions: str = "unit",
    project: bool = False,
    batch_size: int = 16,
    chunk_size: int | None = None,
    seed: int = 0,
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
    limit: int | None = None,
    resize: bool = False,
    steps: int = 400,
    lr: float = 0.05,
    optimizer: str = "sgd",
    init_std: float = 1e-4,
    prior_samples: int = 1000,
    top: int = 20,
    batch_size: int = 64,
    seed: int = 0,
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


def prior(
    gen: LoadedGenerator,
    data: str | os.PathLike[str] | torch.Tensor | None = None,
    *,
    codes: str | os.PathLike[str] | torch.Tensor | None = None,
    limit: int | None = None,
    resize: bool = False,
    reversal_steps: int = 400,
    reversal_lr: float = 0.05,
    reversal_optimizer: str = "sgd",
    reversal_init_std: float = 1e-4,
    heldout: float = 0.2,
    steps: int = PganParams.steps,
    dim: int | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    critic_widths: Sequence[int] = tuple(reversed(DEFAULT_WIDTHS)),
    lr: float = PganParams.lr,
    prior_batch: int = PganParams.batch_size,
    samples: int | None = None,
    permutations: int = 1000,
    prior_samples: int = 1000,
    top: int = 20,
    batch_size: int = 64,
    seed: int = 0,
) -> PriorResult:
    """Learn the data-induced prior from ``data`` (reversed as by :func:`pag`) or from ``codes`` (N, nz): the PGAN
    h (``result.training.h``) and the Gaussian baselines, each compared with the held-out codes
    (``result.comparisons``). ``steps``, ``lr``, ``dim`` and the widths are the PGAN's."""
    params = PriorParams(
        data=data if isinstance(data, torch.Tensor) or data is None else os.fspath(data),
        codes=codes if isinstance(codes, torch.Tensor) or codes is None else os.fspath(codes),
        limit=limit,
        resize=resize,
        reversal=ReversalParams(
            steps=reversal_steps,
            lr=reversal_lr,
            optimizer=reversal_optimizer,
            init_std=reversal_init_std,
            batch_size=batch_size,
            seed=seed,
        ),
        heldout=heldout,
        pgan=PganParams(
            steps=steps,
            dim=dim,
            widths=tuple(widths),
            critic_widths=tuple(critic_widths),
            lr=lr,
            batch_size=prior_batch,
        ),
        num_samples=samples,
        num_permutations=permutations,
        num_prior_samples=prior_samples,
        num_top=top,
        seed=seed,
    )
    return run_prior(gen, params)


def divergence(
    gen: LoadedGenerator,
    data: str | os.PathLike[str] | torch.Tensor | None = None,
    *,
    spread: float | Sequence[float] = 0.1,
    f: Sequence[str] = ("kl", "rkl", "js"),
    limit: int | None = None,
    resize: bool = False,
    steps: int = 400,
    importance: int = 64,
    refine: int = 0,
    ais: int = 0,
    heldout: float = 0.25,
    model_samples: int = 512,
    batch_size: int = 64,
    seed: int = 0,
) -> DivergenceResult:
    """Bound the spread KL(data || G) ("kl"), KL(G || data) ("rkl") and JS between the generator and ``data``
    (as for :func:`pag`) at noise width(s) ``spread``; ``result.per_sigma[i].divergences["kl"].bound`` in nats."""
    params = DivergenceParams(
        data=data if isinstance(data, torch.Tensor) or data is None else os.fspath(data),
        limit=limit,
        resize=resize,
        sigmas=(float(spread),) if isinstance(spread, (int, float)) else tuple(float(s) for s in spread),
        divergences=(f,) if isinstance(f, str) else tuple(f),
        heldout=heldout,
        num_model_samples=model_samples,
        steps=steps,
        batch_size=batch_size,
        importance=importance,
        refine=refine,
        ais=ais,
        seed=seed,
    )
    return run_divergence(gen, params)


__all__ = ["ascend", "divergence", "eigvecs", "load_generator", "loglik", "pag", "prior", "veff"]
