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

# Every default below is the parameter dataclass's, stated there once (the command line reads the same).
_LOGLIK = LoglikParams()
_ASCEND = AscendParams()
_EIGVECS = EigvecsParams()
_VEFF = VeffParams()
_PAG = PagParams()
_REVERSAL = _PAG.reversal
_PRIOR = PriorParams()
_DIVERGENCE = DivergenceParams()


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
    truncation_cutoff: int | None = None,
    class_index: int | None = None,
    key: str | None = None,
    output_range: tuple[float, float] | str | None = None,
    seed: int = 0,
    prior_net: str | os.PathLike[str] | None = None,
) -> LoadedGenerator:
    """Load a checkpoint (None: the bundled MNIST DCGAN, nz = 32) ready to run, in eval mode.

    A checkpoint never runs code: safetensors and PyTorch state dicts are read as
    weights only, TorchScript and torch.export programs are checked against an
    operator allow-list; only ``generator`` runs code, the caller's own.

    Args:
        path: the checkpoint (.safetensors, .pth/.pt/.ckpt/.bin/.model/.tar, a
            TorchScript archive or a .pt2 program); None for the bundled default.
        device: auto (the GPU when there is one), cpu, cuda, cuda:N or mps.
        dtype: auto (float32, with float64 for the latents whose float32 J is
            flagged), float32 or float64.
        arch, nz, prior, sigma, low, high, output_range: supply or override what a
            foreign file lacks (``output_range``: (low, high) or "none").
        generator: "package.module:factory", a custom architecture.
        space, truncation, noise: a StyleGAN2's latent space (z, w or w+), its
            truncation psi and its noise (stored, zero or seed:N).
        truncation_cutoff: truncate only the first N layers' w (NVIDIA's truncation_cutoff; None: all).
        class_index: the class K of a conditional NVIDIA generator (c_dim > 0): one-hot c, 0 <= K < c_dim;
            required for such a generator, refused for an unconditional one.
        key: the generator's entry in a training checkpoint ("g_ema", "GAN.GE").
        seed: the seed of the noise frozen in a generator that draws it inside forward.
        prior_net: a prior network file (``gan-probe prior``'s prior.safetensors): the generator
            returned is G o h, whose latent is z' ~ N(0, I) of dimension dim, mapped to z by h
            (``gen.prior_net`` records the file, its sha256 and the generator it was fitted to).

    Returns:
        A :class:`~gan_probe.models.loaded.LoadedGenerator`: call it on latents
        (B, nz) for outputs (B, *output_shape); ``describe()`` gives what ``info``
        prints.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu")
        >>> gen.arch, gen.nz, gen.output_shape
        ('dcgan', 32, (1, 32, 32))
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, dev)
    auto = isinstance(dtype, str) and dtype.strip().lower() == "auto"
    options = LoadOptions(
        arch=arch,
        nz=nz,
        prior=prior,
        sigma=sigma,
        low=low,
        high=high,
        generator=generator,
        space=space,
        truncation=truncation,
        noise=noise,
        truncation_cutoff=truncation_cutoff,
        class_index=class_index,
        key=key,
        output_range=output_range,
        seed=seed,
        dtype_auto=auto,
        prior_net=os.fspath(prior_net) if prior_net is not None else None,
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
    """The implicit log-likelihood of a generator's outputs at latents ``z``.

    Ramesh & LeCun (2018), eq. 1-2: where G is an injective immersion, the prior
    pushed through G has the density, on the nz-dimensional surface it spans,

        ln Q(G(z)) = ln P_Z(z) - 1/2 ln det J(z)^T J(z)      [nats]

    with J = dG/dz (N x nz). ``exact`` builds J from nz batched JVPs and takes its
    singular values in float64; the estimators use only products with M = J^T J
    (docs/design.md §1.3, §2, §3).

    Args:
        gen: a loaded generator (:func:`load_generator`).
        z: latents (N, nz), a latents file, or None for ``n`` seeded prior draws.
        n: how many prior draws when ``z`` is None.
        method: exact, chebyshev, taylor, slq or auto (exact or slq by cost and memory).
        estimator: the method's parameters (:class:`~gan_probe.SLQParams`, ...); None: its defaults.
        check: also compute exact beside an estimate, and each estimate's error.
        grid: also evaluate ln Q over a 2-D latent plane (:class:`~gan_probe.analyses.loglik.GridParams`).
        geometry: auto, euclidean or sphere (for generators that ignore |z|).
        batch_size: latents per batch.
        chunk_size: latent axes per batched JVP call (None: chosen from memory).
        seed: the seed of the prior draws and of the estimators' probes.

    Returns:
        A :class:`~gan_probe.analyses.loglik.LoglikResult`: ``loglik`` (N,) in nats;
        ``values`` holds ln P_Z, 1/2 ln det M, the extreme eigenvalues and the flags per latent.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.loglik(gen, n=2)
        >>> result.loglik.shape
        torch.Size([2])
        >>> bool((result.loglik == result.values.log_prior - result.values.half_logdet).all())
        True
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
    """Gradient ascent on ln Q(G(z)) in latent space, recording ln Q and the conditioning of M per step.

    Ramesh & LeCun (2018), section 4 and Fig. 4: z_{k+1} = z_k + lr * d/dz ln Q(G(z_k))
    (through ``optimizer``), with ln Q = ln P_Z(z) - 1/2 ln det J^T J; a uniform
    prior's box is kept by projection (docs/design.md §4).

    Args:
        gen: a loaded generator (:func:`load_generator`).
        z: starting latents (N, nz), a latents file, or None for ``n`` seeded prior draws.
        n: how many prior draws when ``z`` is None.
        steps: ascent steps.
        lr: the learning rate.
        optimizer: adam or sgd.
        method: how the gradient of ln det M is computed: exact or an estimator.
        estimator: the method's parameters (None: its defaults).
        frames: images kept per latent along the way.
        geometry: auto, euclidean or sphere.
        seed: the seed of the prior draws and of the estimators' probes.
        batch_size: latents per batch.

    Returns:
        An :class:`~gan_probe.analyses.ascend.AscendResult`: ``loglik``,
        ``lambda_min``, ``lambda_max`` and ``condition`` of shape (steps + 1, N), the
        trajectory ``z`` and the ``frames``.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.ascend(gen, n=1, steps=2)
        >>> tuple(result.loglik.shape)
        (3, 1)
    """
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
    """The eigen-decomposition of M = J^T J at trial latents, and images perturbed along its eigenvectors.

    Ramesh & LeCun (2018), section 5 and Fig. 5: with J = U S V^T, M = V S^2 V^T;
    near z, |G(z + t v_i) - G(z)| ~ |t| sqrt(lambda_i), so the top eigenvectors
    move G most, against random directions at the same step (docs/design.md §5).

    Args:
        gen: a loaded generator (:func:`load_generator`).
        z: trial latents (T, nz), a latents file, or None for ``n`` seeded prior draws.
        n: how many prior draws when ``z`` is None (the paper used 12).
        top: eigenvectors kept per latent (None: min(8, nz)).
        step: the step alpha along each direction (None: 0.8 sigma, or 0.8 x the box half-width).
        traversal_steps: images per traversal z + t v_i, t in [-alpha, alpha].
        project: clamp perturbed latents into a uniform prior's box.
        batch_size: latents per batch.
        chunk_size: latent axes per batched JVP call (None: chosen from memory).
        seed: the seed of the prior draws and of the random directions.

    Returns:
        An :class:`~gan_probe.analyses.eigvecs.EigvecsResult`: ``eigenvalues``
        (T, nz) in descending order, ``eigenvectors`` (T, nz, top), and the images.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.eigvecs(gen, n=1, traversal_steps=3)
        >>> tuple(result.eigenvalues.shape), bool((result.eigenvalues[0, :-1] >= result.eigenvalues[0, 1:]).all())
        ((1, 32), True)
    """
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
    """The effective latent dimensionality v_eff(tau): eigen-directions of M that change G more than random ones.

    Ramesh & LeCun (2018), section 5 and Fig. 6 (docs/design.md §6), for M latents
    z_j, K random directions eps_k and a step alpha:

        delta(j,0) = mean_k |G(z_j + alpha eps_k) - G(z_j)|
        delta(j,i) = |G(z_j + alpha v_i(z_j)) - G(z_j)| / delta(j,0)
        v_eff(tau) = (1/M) sum_j #{i : delta(j,i) > tau}

    Args:
        gen: a loaded generator (:func:`load_generator`).
        z: latents (M, nz), a latents file, or None for ``n`` seeded prior draws.
        n: how many prior draws when ``z`` is None.
        tau: the threshold(s); the first is the headline.
        k: random directions K per latent.
        step: the step alpha (None: 0.8 sigma, or 0.8 x the box half-width).
        directions: unit (uniform on the sphere) or normal (the paper's N(0, I)).
        project: clamp perturbed latents into a uniform prior's box.
        batch_size: latents per batch.
        chunk_size: latent axes per batched JVP call (None: chosen from memory).
        seed: the seed of the prior draws and of the random directions.

    Returns:
        A :class:`~gan_probe.analyses.veff.VeffResult`: ``veff`` (one per tau), the
        ``counts`` per latent and the ``delta0`` of each latent.

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.veff(gen, n=2, k=4, tau=(1.0, 2.0))
        >>> result.veff.shape, bool(result.veff[0] >= result.veff[1])
        (torch.Size([2]), True)
    """
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
    """Reverse the generator on images and score how well the recovered latents fit the prior (PAG).

    Kilcher, Lucchi & Hofmann (2017), section 2.1 and Algorithm 1: each image x is
    reversed by minimising 1/2 |G(z) - x|^2 from a small random z; with nu_i^2 the
    eigenvalues of the recovered latents' second moments (docs/design.md §7),

        PAG = 1/2 sum_i [ nu_i^2 / sigma^2 - ln(nu_i^2 / sigma^2) - 1 ]
            = KL( N(0, diag nu^2) || N(0, sigma^2 I) )      [nats]

    Args:
        gen: a loaded generator (:func:`load_generator`).
        data: a folder of images, an array file, a tensor in the generator's units,
            or None for the bundled held-out MNIST images.
        limit: use only the first ``limit`` images.
        resize: resize images of another size (bilinear).
        steps: gradient steps of the reversal per image.
        lr: the reversal's learning rate (paper: 0.05).
        optimizer: sgd (Algorithm 1) or adam.
        init_std: the standard deviation of the initial latents (paper: 1e-4).
        prior_samples: prior draws ranked for the disagreement samples.
        top: disagreement samples kept.
        batch_size: images reversed together.
        seed: the seed of the initial latents and of the prior draws.

    Returns:
        A :class:`~gan_probe.analyses.pag.PagResult`: ``score.pag`` in nats (inf
        when the recovered latents span fewer than nz dimensions), ``reversal``
        (the latents and reconstruction errors).

    Example::

        >>> import gan_probe
        >>> gen = gan_probe.load_generator(device="cpu", dtype="float64")
        >>> result = gan_probe.pag(gen, limit=40, steps=5, prior_samples=20, top=2)
        >>> result.reversal.num_done, result.score.pag > 0
        (40, True)
    """
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
    reversal_steps: int = _REVERSAL.steps,
    reversal_lr: float = _REVERSAL.lr,
    reversal_optimizer: str = _REVERSAL.optimizer,
    reversal_init_std: float = _REVERSAL.init_std,
    heldout: float = _PRIOR.heldout,
    steps: int = PganParams.steps,
    dim: int | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    critic_widths: Sequence[int] = tuple(reversed(DEFAULT_WIDTHS)),
    lr: float = PganParams.lr,
    prior_batch: int = PganParams.batch_size,
    samples: int | None = None,
    permutations: int = _PRIOR.num_permutations,
    prior_samples: int = _PRIOR.num_prior_samples,
    top: int = _PRIOR.num_top,
    batch_size: int = _REVERSAL.batch_size,
    seed: int = 0,
) -> PriorResult:
    """Learn the data-induced prior: the distribution of the latent codes that reverse ``data``, by a PGAN.

    Kilcher, Lucchi & Hofmann (2017), sections 3 and 4.4, appendix E: the codes
    z_hat(x) = argmin_z 1/2 |G(z) - x|^2 (reversed as by :func:`pag`) sample the
    data-induced prior; the PGAN h maps z' ~ N(0, I_d') onto them, trained
    adversarially, and h(z') replaces z ~ P_Z. The Gaussian baselines (diagonal and
    full covariance) and the generator's prior are compared with h on held-out codes.

    Args:
        gen: a loaded generator (:func:`load_generator`).
        data: images to reverse (a folder, an array file, a tensor in the generator's
            units), or None for the bundled held-out MNIST images.
        codes: latent codes (N, nz) to learn from instead of reversing ``data``.
        limit, resize: as for :func:`pag`: the first ``limit`` images, resized.
        reversal_steps, reversal_lr, reversal_optimizer, reversal_init_std: the
            reversal's steps, learning rate, optimizer and initial spread.
        heldout: the fraction of the codes held out for the comparison.
        steps, lr, prior_batch: the PGAN's RMSProp steps, step size and batch of codes.
        dim: the PGAN's input size d' (None: nz).
        widths, critic_widths: the hidden widths of h and of its critic.
        samples: draws of each prior against the held-out codes (None: as many as held out).
        permutations: permutations of the two-sample tests.
        prior_samples, top: as for :func:`pag`: prior draws ranked, disagreement samples kept.
        batch_size: images reversed together.
        seed: the seed of the split, the reversal, the PGAN and the draws.

    Returns:
        A :class:`~gan_probe.analyses.prior.PriorResult`: ``codes`` (N, nz),
        ``training`` (the PGAN's h and its losses), ``comparisons`` (one per prior:
        generator, diagonal, full, pgan) on the held-out codes.

    Example::

        >>> import torch, gan_probe
        >>> from gan_probe.api import prior
        >>> gen = gan_probe.load_generator(device="cpu")
        >>> codes = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
        >>> result = prior(gen, codes=codes, steps=20, permutations=20, prior_samples=20, top=2)
        >>> [c.name for c in result.comparisons], result.num_heldout
        (['generator', 'diagonal', 'full', 'pgan'], 40)
    """
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
    spread: float | Sequence[float] = _DIVERGENCE.sigmas,
    f: Sequence[str] = _DIVERGENCE.divergences,
    limit: int | None = None,
    resize: bool = False,
    steps: int = _DIVERGENCE.steps,
    importance: int = _DIVERGENCE.importance,
    refine: int = _DIVERGENCE.refine,
    ais: int = _DIVERGENCE.ais,
    heldout: float = _DIVERGENCE.heldout,
    model_samples: int = _DIVERGENCE.num_model_samples,
    batch_size: int = _DIVERGENCE.batch_size,
    seed: int = 0,
) -> DivergenceResult:
    """Bound the spread f-divergences between the generator and ``data`` with fitted encoders.

    Zhang, Barber et al. (2019), spread divergence: with y = x + sigma eps on both sides,
    p_s(y) = (1/n) sum_k N(y; x_k, sigma^2 I) and q_s(y) = E_z N(y; G(z), sigma^2 I), and for
    any encoder r(z|y) the f-divergence of the joints bounds that of p_s and q_s (Jensen), e.g.
    KL(p_s || q_s) <= E_{y~p_s, z~r}[ln r(z|y) + ln p_s(y) - ln N(y; G(z), sigma^2) - ln P_Z(z)].

    Args:
        gen: a loaded generator (:func:`load_generator`).
        data: images (a folder, an array file, a tensor in the generator's units), or
            None for the bundled held-out MNIST images.
        spread: the noise width(s) sigma, in the generator's output units.
        f: which divergences: "kl" (data || G), "rkl" (G || data), "js".
        limit, resize: as for :func:`pag`: the first ``limit`` images, resized.
        steps: Adam steps of each encoder (early stopped on held-out figures).
        importance: K draws from the encoder per point (the importance-weighted estimate).
        refine: Adam steps on each point's r(z|y) after the encoder.
        ais: annealed importance sampling steps (0: off).
        heldout: the fraction of the data every figure is reported on.
        model_samples: pairs (z, y) drawn from the generator for the reverse figures.
        batch_size: points processed together.
        seed: the seed of the split, the encoders and every draw.

    Returns:
        A :class:`~gan_probe.analyses.divergence.DivergenceResult`: one entry of
        ``per_sigma`` per sigma, whose ``divergences["kl"]`` (and ``rkl``, ``js``) hold
        the ``bound`` and its ``stderr`` in nats.

    Example::

        >>> import torch, gan_probe
        >>> from gan_probe.api import divergence
        >>> gen = gan_probe.load_generator(device="cpu")
        >>> result = divergence(gen, spread=0.3, f=("kl",), limit=64, steps=2, importance=2, model_samples=16)
        >>> sorted(result.per_sigma[0].divergences)
        ['kl']
    """
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
