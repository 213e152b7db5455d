"""``gan-probe pag``: generator reversal on real data and the Prior Agreement score.

Kilcher, Lucchi & Hofmann (2017), section 2.2, eq. 2. With Z_hat (n x nz) the
latents recovered from n data points by :func:`~gan_probe.analyses.reversal.invert_generator`
and nu_i^2 the eigenvalues of Z_hat^T Z_hat / n (the second moments of the
recovered latents along their principal axes),

.. math::

    \\mathrm{PAG} = \\tfrac12 \\sum_{i=1}^{nz}
        \\Big[ \\frac{\\nu_i^2}{\\sigma^2} - \\ln \\frac{\\nu_i^2}{\\sigma^2} - 1 \\Big]
      = \\mathrm{KL}\\big(N(0, \\mathrm{diag}\\,\\nu^2) \\,\\|\\, N(0, \\sigma^2 I)\\big)

in nats: 0 when the recovered latents have the prior's second moments, larger
the more they disagree. The paper's text takes nu_i as the raw singular values
of Z_hat (no 1/n), which inflates every term by about n; that reading is
reported as ``pag_paper_literal`` (it explains the size of the published
scores, 1.5e3-4e4). A uniform prior U([a, b]^nz) is compared with its
moment-matched normal N((a+b)/2, (b-a)^2/12 I): the latents are centred on
(a+b)/2 and sigma^2 = (b-a)^2 / 12.

Prior-data-disagreement samples (section 4.2): draw latents from the prior,
rank them by mean squared distance to the recovered latents (largest first)
and render the top ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_probe.analyses.common import Progress, check_positive, finite_stats, generate, seeded_generator
from gan_probe.analyses.memory import check_memory, pag_memory
from gan_probe.analyses.reversal import ReversalParams, ReversalResult, invert_generator, psnr
from gan_probe.data import ImageData, images_from_tensor, load_images
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.priors import MappedPrior, Prior

#: Images shown in reconstructions.png (originals and reconstructions, row pairs of 8).
NUM_SHOWN = 32
SHOWN_PER_ROW = 8


@dataclass(frozen=True)
class PagParams:
    """``data``: an image folder or array file (None: the bundled held-out MNIST images), or a tensor
    (N, *output_shape) in the generator's units; ``limit`` the first N; ``reversal`` its parameters;
    ``num_prior_samples`` prior draws ranked, the ``num_top`` farthest rendered."""

    data: str | torch.Tensor | None = None
    limit: int | None = None
    resize: bool = False
    reversal: ReversalParams = ReversalParams()
    num_prior_samples: int = 1000
    num_top: int = 20
    seed: int = 0


@dataclass
class PagScore:
    """PAG of latents z (n, nz) against N(center, sigma^2 I); ``nu`` (nz,) descending.

    ``pag`` and ``pag_paper_literal`` are +inf when some nu_i is 0 (fewer latents
    than nz, or latents confined to a subspace).
    """

    pag: float
    pag_paper_literal: float
    nu: torch.Tensor
    singular_values: torch.Tensor
    sigma: float
    center: float
    num_latents: int

    @property
    def rank_deficient(self) -> bool:
        return bool((self.nu == 0).any())

    def to_json(self) -> dict[str, Any]:
        nz = self.nu.numel()
        return {
            "pag": self.pag,
            "pag_per_dim": self.pag / nz,
            "pag_paper_literal": self.pag_paper_literal,
            "sigma": self.sigma,
            "center": self.center,
            "nu": self.nu,
            "nu_over_sigma": self.nu / self.sigma,
            "singular_values": self.singular_values,
            "num_latents": self.num_latents,
            "rank_deficient": self.rank_deficient,
        }


def kl_terms(nu2_over_sigma2: torch.Tensor) -> torch.Tensor:
    """1/2 [r - ln r - 1] per axis for r = nu_i^2 / sigma^2 (+inf at r = 0)."""
    r = nu2_over_sigma2.to(torch.float64)
    return 0.5 * (r - torch.log(r) - 1.0)


def pag_score(z: torch.Tensor, sigma: float, *, center: float = 0.0) -> PagScore:
    """PAG (Kilcher et al. 2017, eq. 2) of latents z (n, nz) against N(center, sigma^2 I).

    nu_i^2 = s_i^2 / n with s_i the singular values of Z_hat = z - center (the
    eigenvalues of Z_hat^T Z_hat / n, through an SVD in float64 so that tiny
    nu_i keep their accuracy); axes beyond rank n get s_i = 0.
    """
    check_positive("the prior sigma", sigma, "sigma")
    if z.ndim != 2 or z.shape[0] < 1:
        raise GanProbeError(f"PAG needs latents of shape (n, nz) with n >= 1, got {tuple(z.shape)}", param="z")
    n, nz = z.shape
    zc = z.to(torch.float64) - center
    s = torch.linalg.svdvals(zc)
    if s.numel() < nz:
        s = torch.cat([s, torch.zeros(nz - s.numel(), dtype=s.dtype)])
    s2 = s.square()
    pag = float(kl_terms(s2 / n / sigma**2).sum())
    literal = float(kl_terms(s2 / sigma**2).sum())
    return PagScore(pag, literal, (s / math.sqrt(n)), s, float(sigma), float(center), n)


@dataclass
class FittedGaussian:
    """N(mean, cov) fitted to mapped prior draws of a StyleGAN2's w (style_dim); for w+ every layer
    is compared with it independently. :meth:`whiten` maps latents to where that reference is N(0, I)."""

    mean: torch.Tensor  # (d,) float64
    chol: torch.Tensor  # (d, d) lower Cholesky factor of the covariance
    layers: int  # 1 for w, num_layers for w+

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        d = self.mean.numel()
        blocks = z.to(torch.float64).reshape(-1, self.layers, d) - self.mean
        white = torch.linalg.solve_triangular(self.chol, blocks.reshape(-1, d).T, upper=False).T
        return white.reshape(z.shape[0], -1)

    def start(self) -> torch.Tensor:
        """The reference's mean in the latent space's own layout (the reversal's starting point)."""
        return self.mean.repeat(self.layers)


#: Mapped prior draws the w reference is fitted to.
NUM_REFERENCE_DRAWS = 10_000


def fit_mapped_reference(prior: MappedPrior, *, seed: int = 0) -> FittedGaussian:
    """N(mean, cov) of NUM_REFERENCE_DRAWS seeded mapped prior draws in w (one layer's worth for w+)."""
    z = torch.randn(NUM_REFERENCE_DRAWS, prior.z_dim, generator=seeded_generator(seed), dtype=torch.float64)
    draws = prior.map_z(z)
    d = prior.z_dim
    layers = draws.shape[1] // d
    w = draws[:, :d]  # every layer of a mapped w+ draw holds the same w
    mean = w.mean(0)
    cov = torch.cov(w.T).reshape(d, d)
    chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(d, dtype=torch.float64) * cov.diagonal().mean())
    return FittedGaussian(mean, chol, layers)


def prior_reference(prior: Prior) -> tuple[float, float, str]:
    """(center, sigma, description) of the normal the recovered latents are compared with."""
    if prior.kind == "normal":
        return 0.0, prior.sigma, f"the prior itself, N(0, {prior.sigma:g}^2 I)"
    return (
        prior.center,
        prior.scale,
        f"N({prior.center:g}, {prior.scale:.6g}^2 I), moment-matched to the uniform prior "
        f"U([{prior.low:g}, {prior.high:g}]^nz): sigma^2 = (high - low)^2 / 12",
    )


@dataclass
class Disagreement:
    """Prior draws ranked by mean squared distance to the recovered latents (largest first)."""

    z: torch.Tensor  # (num_top, nz) the top prior draws
    index: torch.Tensor  # (num_top,) their index among the draws
    distance: torch.Tensor  # (num_top,) mean squared distance
    all_distances: torch.Tensor  # (num_prior_samples,)
    images: torch.Tensor  # (num_top, *output_shape) G(z)
    agree_images: torch.Tensor  # (num_top, *output_shape): the draws closest to the recovered latents


def check_disagreement(num_prior_samples: int, num_top: int) -> None:
    """At least one prior draw, and 1..num_prior_samples of them rendered."""
    if num_prior_samples < 1:
        raise GanProbeError(
            f"the number of prior draws must be at least 1, got {num_prior_samples}", param="num_prior_samples"
        )
    if not 1 <= num_top <= num_prior_samples:
        raise GanProbeError(
            f"the number of disagreement samples must be in 1..{num_prior_samples} (the prior draws), got {num_top}",
            param="num_top",
        )


def disagreement_samples(
    gen: LoadedGenerator, z_hat: torch.Tensor, *, num_prior_samples: int, num_top: int, seed: int, batch_size: int
) -> Disagreement:
    """Kilcher et al. section 4.2: ``num_prior_samples`` prior draws, the ``num_top`` farthest from Z_hat.

    d_j = (1/n) sum_i |z_j - z_hat_i|^2 = |z_j - mean(z_hat)|^2 + (1/n) sum_i |z_hat_i - mean(z_hat)|^2.
    """
    check_disagreement(num_prior_samples, num_top)
    zp = gen.prior.sample(num_prior_samples, gen.nz, generator=seeded_generator(seed))
    return rank_disagreement(gen, zp, z_hat, num_top=num_top, batch_size=batch_size)


def rank_disagreement(
    gen: LoadedGenerator, zp: torch.Tensor, z_hat: torch.Tensor, *, num_top: int, batch_size: int
) -> Disagreement:
    """Rank the draws zp (P, nz) of a prior over G's latents by mean squared distance to z_hat, render the ends."""
    check_disagreement(int(zp.shape[0]), num_top)
    zh = z_hat.to(torch.float64)
    mean = zh.mean(0)
    spread = (zh - mean).square().sum(1).mean()
    d = (zp - mean).square().sum(1) + spread
    order = torch.argsort(d, descending=True, stable=True)
    top, low = order[:num_top], order.flip(0)[:num_top]
    return Disagreement(
        z=zp[top],
        index=top,
        distance=d[top],
        all_distances=d,
        images=generate(gen, zp[top], batch_size),
        agree_images=generate(gen, zp[low], batch_size),
    )


@dataclass
class PagResult:
    params: PagParams
    data: ImageData
    reversal: ReversalResult
    score: PagScore | None
    reference: str
    disagreement: Disagreement | None
    psnr_peak: float | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.reversal.interrupted

    def psnr(self) -> torch.Tensor | None:
        return None if self.psnr_peak is None else psnr(self.reversal.mse, self.psnr_peak)

    def per_image(self) -> list[dict[str, Any]]:
        p = self.psnr()
        labels = self.data.labels
        rows = []
        for i in range(self.reversal.num_done):
            row: dict[str, Any] = {
                "index": i,
                "mse": float(self.reversal.mse[i]),
                "psnr": None if p is None else float(p[i]),
            }
            if labels is not None:
                row["label"] = int(labels[i])
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        rev = self.reversal
        p = self.psnr()
        hist = rev.loss_history
        return {
            **(self.score.to_json() if self.score is not None else {"pag": None, "pag_paper_literal": None}),
            "reference": self.reference,
            "num_images": rev.num_images,
            "num_recovered": rev.num_done,
            "interrupted": rev.interrupted,
            "data": self.data.describe(),
            "reconstruction": {
                "mse": finite_stats(rev.mse),
                "psnr": finite_stats(p) if p is not None else None,
                "psnr_peak": self.psnr_peak,
                "loss_first": float(hist[0]) if rev.num_done else None,
                "loss_last": float(hist[-1]) if rev.num_done else None,
                "units": "generator output units; loss = 1/2 |G(z) - x|^2 per image, mse = mean over pixels",
            },
            "disagreement": None
            if self.disagreement is None
            else {
                "num_prior_samples": self.params.num_prior_samples,
                "top_index": self.disagreement.index,
                "top_mean_sq_distance": self.disagreement.distance,
                "median_mean_sq_distance": float(self.disagreement.all_distances.median()),
            },
            "per_image": self.per_image(),
        }


def run_pag(gen: LoadedGenerator, params: PagParams, *, progress: Progress | None = None) -> PagResult:
    """Load the data, reverse the generator on it, score the recovered latents, rank prior draws."""
    if isinstance(params.data, torch.Tensor):
        data = images_from_tensor(params.data, output_shape=gen.output_shape, limit=params.limit)
    else:
        data = load_images(
            params.data,
            output_shape=gen.output_shape,
            output_range=gen.output_range,
            limit=params.limit,
            resize=params.resize,
        )
    params.reversal.validate()
    check_disagreement(params.num_prior_samples, params.num_top)
    check_memory(
        pag_memory(
            gen,
            num_images=int(data.images.shape[0]),
            batch_size=params.reversal.batch_size,
            num_prior_samples=params.num_prior_samples,
            num_top=params.num_top,
            steps=params.reversal.steps,
        )
    )
    timings: dict[str, float] = {}
    fitted_reference = fit_mapped_reference(gen.prior, seed=params.seed) if isinstance(gen.prior, MappedPrior) else None
    t0 = time.perf_counter()
    start = fitted_reference.start() if fitted_reference is not None else None
    rev = invert_generator(gen, data.images, params.reversal, progress=progress, start=start)
    timings["reversal_s"] = time.perf_counter() - t0
    if isinstance(gen.prior, MappedPrior):
        # no closed-form prior in w: whiten by the Gaussian fitted to mapped prior draws, compare with N(0, I)
        fitted = fitted_reference
        assert fitted is not None
        layout = "every layer against it independently" if fitted.layers > 1 else "the latents whitened by it"
        reference = (
            f"N(mean, cov) fitted to {NUM_REFERENCE_DRAWS} mapped prior draws in w (seed {params.seed}), "
            f"{layout}; PAG of the whitened latents against N(0, I)"
        )
        score = pag_score(fitted.whiten(rev.z), 1.0) if rev.num_done else None
    else:
        center, sigma, reference = prior_reference(gen.prior)
        score = pag_score(rev.z, sigma, center=center) if rev.num_done else None
    dis = None
    if rev.num_done:
        dis = disagreement_samples(
            gen,
            rev.z,
            num_prior_samples=params.num_prior_samples,
            num_top=params.num_top,
            seed=params.seed + 1,
            batch_size=params.reversal.batch_size,
        )
    peak = None if gen.output_range is None else float(gen.output_range[1] - gen.output_range[0])
    return PagResult(params, data, rev, score, reference, dis, peak, timings)


__all__ = [
    "Disagreement",
    "PagParams",
    "PagResult",
    "PagScore",
    "disagreement_samples",
    "kl_terms",
    "pag_score",
    "prior_reference",
    "rank_disagreement",
    "run_pag",
]
