"""``gan-probe prior``: learn the data-induced prior (Kilcher et al. 2017, sections 3 and 4.4).

The latents Z_hat that generator reversal recovers from data (the reversal of
``pag``, :func:`~gan_probe.analyses.reversal.invert_generator`) are samples of
the prior the data induce. A seeded fraction of them is held out; on the rest
four priors over Z are fitted or taken:

- ``generator``: the generator's own prior (N(0, sigma^2 I), or a uniform box);
- ``diagonal``: N(c, V diag(nu^2) V^T), the Gaussian PAG compares with
  (docs/design.md §7.2: nu_i^2 the second moments of Z_hat - c along its
  principal axes V, c the prior's centre);
- ``full``: N(mu, Sigma) with the sample mean and the unbiased sample
  covariance (1/(n-1));
- ``pgan``: the paper's PGAN, h(z') with z' ~ N(0, I_{d'})
  (:mod:`gan_probe.models.prior_net`), trained adversarially on Z_hat.

The PGAN's training follows appendix E where it speaks: four fully connected
layers in generator and discriminator, RMSProp with step size 3e-4, batches of
100. Where it is silent: the discriminator's loss is the standard GAN binary
cross-entropy (its sigmoid classifier), the generator's the non-saturating
-ln D(h(z')), one discriminator step per generator step, codes drawn with
replacement, and h is trained on the codes standardised per coordinate, the
affine map folded back into its last layer afterwards (so h maps to Z itself).

Each prior is compared with the held-out codes X (n, nz): two-sample
statistics against m of its draws (:mod:`gan_probe.analyses.two_sample`:
energy distance and Gaussian-kernel MMD^2 with permutation p-values); the mean
error |mean(P) - mean(X)|_2 and the covariance error |Cov(P) - Cov(X)|_F (also
divided by |Cov(X)|_F), with P's moments exact for the closed forms and from
NUM_MOMENT_DRAWS draws for the PGAN; the mean held-out log-density ln p(x)
where there is one (not the PGAN: h has no tractable density); and PAG in the
prior's own latent space: the held-out codes mapped to where the prior is
N(0, I) (whitened by the Gaussians; reversed through h for the PGAN, with the
same reversal and its parameters) and scored against N(0, I) (docs/design.md §7.2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gan_probe.analyses.common import Progress, check_positive, generate, load_latents, progress_task, seeded_generator
from gan_probe.analyses.pag import Disagreement, PagScore, check_disagreement, pag_score, rank_disagreement
from gan_probe.analyses.reversal import ReversalParams, ReversalResult, invert_generator
from gan_probe.analyses.two_sample import STATISTICS, TwoSampleResult, describe_statistic, two_sample_test
from gan_probe.data import ImageData, images_from_tensor, load_images
from gan_probe.errors import DataError, GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator, wrap_module
from gan_probe.models.prior_net import DEFAULT_WIDTHS, PriorCritic, PriorNet
from gan_probe.models.priors import MappedPrior

#: Draws of the PGAN from which its mean and covariance are estimated.
NUM_MOMENT_DRAWS = 10_000
#: Weight gamma of the R1 penalty gamma/2 E|grad D(x)|^2 on real codes (Mescheder et al. 2018): without it the
#: discriminator memorises a few hundred codes and h collapses onto a narrow band (docs/design.md §7.6).
DEFAULT_R1 = 1.0
#: The priors compared, in the order of the report.
PRIOR_NAMES = ("generator", "diagonal", "full", "pgan")


@dataclass(frozen=True)
class PganParams:
    """The PGAN (appendix E): ``steps`` RMSProp steps of size ``lr`` on batches of ``batch_size`` codes;
    h: R^dim -> R^nz (``dim`` None: nz) with hidden ``widths``, the discriminator with ``critic_widths``;
    ``r1`` the weight gamma of the discriminator's R1 gradient penalty (0: none, the paper's losses as such)."""

    steps: int = 2000
    dim: int | None = None
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    critic_widths: tuple[int, ...] = tuple(reversed(DEFAULT_WIDTHS))
    lr: float = 3e-4
    batch_size: int = 100
    r1: float = DEFAULT_R1

    def validate(self, nz: int) -> None:
        if self.steps < 1:
            raise GanProbeError(f"the PGAN needs at least 1 training step, got {self.steps}", param="steps")
        if self.dim is not None and self.dim < nz:
            raise GanProbeError(
                f"the dimension d' of Z' must be at least the generator's nz = {nz}, got {self.dim}", param="dim"
            )
        for name, widths in (("widths", self.widths), ("critic_widths", self.critic_widths)):
            if len(widths) != 3 or any(w < 1 for w in widths):
                raise GanProbeError(
                    f"give three positive hidden widths (four fully connected layers), got {list(widths)}", param=name
                )
        check_positive("the PGAN learning rate", self.lr, "lr")
        if self.batch_size < 1:
            raise GanProbeError(f"the PGAN batch size must be at least 1, got {self.batch_size}", param="prior_batch")
        if not (math.isfinite(self.r1) and self.r1 >= 0):
            raise GanProbeError(f"the R1 penalty weight must be a finite number >= 0, got {self.r1}", param="r1")


@dataclass(frozen=True)
class PriorParams:
    """``data`` (images, as ``pag`` reads them) or ``codes`` (a latents file or an (N, nz) tensor of reversed
    latents); ``heldout`` the fraction held out; ``num_samples`` draws of each prior against them (None: as many
    as held out); ``num_permutations`` of the two-sample tests; ``num_shown`` images in the sample pictures."""

    data: str | torch.Tensor | None = None
    codes: str | torch.Tensor | None = None
    limit: int | None = None
    resize: bool = False
    reversal: ReversalParams = ReversalParams()
    heldout: float = 0.2
    pgan: PganParams = PganParams()
    num_samples: int | None = None
    num_permutations: int = 1000
    num_prior_samples: int = 1000
    num_top: int = 20
    num_shown: int = 32
    seed: int = 0


@dataclass
class GaussianPrior:
    """N(mean, cov) over Z: draws, log-density and whitening through the Cholesky factor of cov."""

    mean: torch.Tensor  # (nz,) float64
    cov: torch.Tensor  # (nz, nz) float64

    def __post_init__(self) -> None:
        chol, info = torch.linalg.cholesky_ex(self.cov)
        if int(info) != 0:
            raise GanProbeError(
                "the codes span fewer than nz axes (their covariance is singular): use more images or other codes"
            )
        self.chol = chol

    def sample(self, num: int, *, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(num, self.mean.numel(), generator=generator, dtype=torch.float64)
        return self.mean + eps @ self.chol.T

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """L^{-1} (z - mean) (N, nz): N(0, I) when z is drawn from this prior."""
        return torch.linalg.solve_triangular(self.chol, (z.to(torch.float64) - self.mean).T, upper=False).T

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """ln N(z; mean, cov) (N,) = -1/2 |L^{-1}(z - mean)|^2 - sum ln L_ii - nz/2 ln 2 pi."""
        d = self.mean.numel()
        half_logdet = self.chol.diagonal().log().sum()
        return -0.5 * self.whiten(z).square().sum(1) - half_logdet - 0.5 * d * math.log(2 * math.pi)


def fit_full_gaussian(codes: torch.Tensor) -> GaussianPrior:
    """N(mu, Sigma): the sample mean and the unbiased sample covariance of codes (n, nz)."""
    z = codes.to(torch.float64)
    return GaussianPrior(z.mean(0), torch.cov(z.T).reshape(z.shape[1], z.shape[1]))


def fit_diagonal_gaussian(codes: torch.Tensor, center: float) -> GaussianPrior:
    """N(c, V diag(nu^2) V^T): nu_i^2 = s_i^2 / n and V from the SVD of codes - c (docs/design.md §7.2)."""
    z = codes.to(torch.float64) - center
    n, nz = z.shape
    _, s, vh = torch.linalg.svd(z, full_matrices=True)
    nu2 = torch.zeros(nz, dtype=torch.float64)
    nu2[: s.numel()] = s.square() / n
    v = vh.T
    return GaussianPrior(torch.full((nz,), float(center), dtype=torch.float64), (v * nu2) @ v.T)


@dataclass
class PganTraining:
    """h and its training curve: per step the discriminator's and generator's losses and the discriminator's
    mean output (a probability) on real codes and on h(z')."""

    h: PriorNet
    d_loss: torch.Tensor
    g_loss: torch.Tensor
    d_real: torch.Tensor
    d_fake: torch.Tensor
    seconds: float


def train_pgan(
    codes: torch.Tensor,
    params: PganParams,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> PganTraining:
    """Train the PGAN on codes (n, nz); h is returned on the CPU in float32, in eval mode.

    Seeded throughout: the initial weights, the batches and the z' draws come from ``seed``; the same seed on
    the same device gives the same h bit for bit.
    """
    nz = int(codes.shape[1])
    params.validate(nz)
    dim = params.dim if params.dim is not None else nz
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        h = PriorNet(dim, nz, params.widths)
        critic = PriorCritic(nz, params.critic_widths)
    h.to(device)
    critic.to(device)
    # standardised codes: the GAN sees unit scales; the affine map goes back into h's last layer afterwards
    z = codes.to(torch.float64)
    loc, scale = z.mean(0), z.std(0).clamp_min(1e-12)
    data = ((z - loc) / scale).to(device, torch.float32)
    opt_h = torch.optim.RMSprop(h.parameters(), lr=params.lr)
    opt_d = torch.optim.RMSprop(critic.parameters(), lr=params.lr)
    rng = seeded_generator(seed + 1)
    n, b = int(z.shape[0]), params.batch_size
    curves = torch.zeros(4, params.steps, dtype=torch.float64)
    ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
    t0 = time.perf_counter()
    with torch.enable_grad(), progress_task(progress, "PGAN", params.steps) as advance:
        for step in range(params.steps):
            real = data[torch.randint(n, (b,), generator=rng).to(device)]
            fake = h(torch.randn(b, dim, generator=rng).to(device))
            if params.r1 > 0:
                real.requires_grad_(True)
            logit_real, logit_fake = critic(real), critic(fake.detach())
            d_loss = F.binary_cross_entropy_with_logits(logit_real, ones) + F.binary_cross_entropy_with_logits(
                logit_fake, zeros
            )
            if params.r1 > 0:  # R1: gamma/2 E|grad_x D(x)|^2 at the real codes (in standardised units)
                (grad,) = torch.autograd.grad(logit_real.sum(), real, create_graph=True)
                d_loss = d_loss + 0.5 * params.r1 * grad.square().sum(1).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(critic(fake), ones)  # non-saturating: -ln D(h(z'))
            opt_h.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_h.step()
            with torch.no_grad():
                curves[:, step] = torch.stack(
                    [d_loss, g_loss, logit_real.sigmoid().mean(), logit_fake.sigmoid().mean()]
                ).cpu()
            advance(1)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(curves).all() or not all(torch.isfinite(p).all() for p in h.parameters()):
        raise GanProbeError(f"the PGAN diverged (NaN losses) at learning rate {params.lr:g}; lower it", param="lr")
    h = h.to("cpu").eval().requires_grad_(False)
    last = h.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():  # h(z') = loc + scale * net(z')
        last.weight.copy_((scale[:, None] * last.weight.double()).float())
        last.bias.copy_((loc + scale * last.bias.double()).float())
    return PganTraining(h, curves[0], curves[1], curves[2], curves[3], seconds)


@dataclass
class PriorComparison:
    """One prior against the held-out codes."""

    name: str
    description: str
    tests: dict[str, TwoSampleResult]
    mean_error: float
    cov_error: float
    cov_error_relative: float
    moments: str  # "exact" or "sampled (N draws)"
    heldout_log_density: float | None
    pag: PagScore
    pag_space: str
    projection: torch.Tensor  # (m, 2): its two-sample draws on the held-out codes' first two principal axes

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "two_sample": {name: t.to_json() for name, t in self.tests.items()},
            "mean_error": self.mean_error,
            "cov_error": self.cov_error,
            "cov_error_relative": self.cov_error_relative,
            "moments": self.moments,
            "heldout_log_density": self.heldout_log_density,
            "pag": self.pag.pag,
            "pag_per_dim": self.pag.pag / self.pag.nu.numel(),
            "pag_space": self.pag_space,
        }


@dataclass
class PriorResult:
    params: PriorParams
    data: ImageData | None
    codes_source: str
    reversal: ReversalResult | None
    codes: torch.Tensor  # (n, nz) float64
    heldout_index: torch.Tensor  # (n_heldout,) sorted
    training: PganTraining
    dim: int
    comparisons: list[PriorComparison]
    code_reversal: ReversalResult  # the held-out codes reversed through h (the PGAN's PAG)
    heldout_projection: torch.Tensor  # (n_heldout, 2)
    samples_z: torch.Tensor  # (num_shown, *output_shape) G(z)
    samples_h: torch.Tensor  # (num_shown, *output_shape) G(h(z')), the same seeds
    disagreement: Disagreement  # under the generator's prior
    disagreement_pgan: Disagreement  # under the PGAN
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_heldout(self) -> int:
        return int(self.heldout_index.numel())

    def comparison(self, name: str) -> PriorComparison:
        return next(c for c in self.comparisons if c.name == name)

    def data_json(self) -> dict[str, Any]:
        if self.data is not None:
            return self.data.describe()
        return {"source": self.codes_source, "kind": "codes", "num_used": int(self.codes.shape[0])}

    def to_json(self) -> dict[str, Any]:
        p, tr = self.params, self.training
        rec = self.code_reversal
        return {
            "num_codes": int(self.codes.shape[0]),
            "num_heldout": self.num_heldout,
            "num_fit": int(self.codes.shape[0]) - self.num_heldout,
            "heldout_fraction": p.heldout,
            "data": self.data_json(),
            "reversal": None
            if self.reversal is None
            else {
                "loss_first": float(self.reversal.loss_history[0]),
                "loss_last": float(self.reversal.loss_history[-1]),
                "mse_mean": float(self.reversal.mse.mean()),
            },
            "statistics": {name: describe_statistic(name) for name in STATISTICS},
            "errors": "mean_error = |mean(P) - mean(X)|_2, cov_error = |Cov(P) - Cov(X)|_F, cov_error_relative = "
            "cov_error / |Cov(X)|_F, X the held-out codes (unbiased covariance)",
            "priors": {c.name: c.to_json() for c in self.comparisons},
            "pgan": {
                "dim": self.dim,
                "widths": list(p.pgan.widths),
                "critic_widths": list(p.pgan.critic_widths),
                "steps": p.pgan.steps,
                "lr": p.pgan.lr,
                "batch_size": p.pgan.batch_size,
                "optimizer": "rmsprop",
                "loss": "discriminator: binary cross-entropy + r1/2 E|grad D(x)|^2 on real codes; generator: "
                "non-saturating -ln D(h(z'))",
                "r1": p.pgan.r1,
                "d_loss_last": float(tr.d_loss[-1]),
                "g_loss_last": float(tr.g_loss[-1]),
                "d_real_last": float(tr.d_real[-1]),
                "d_fake_last": float(tr.d_fake[-1]),
                "code_reversal_mse_mean": float(rec.mse.mean()),
            },
            "disagreement": {
                "generator_top_mean_sq_distance": self.disagreement.distance,
                "pgan_top_mean_sq_distance": self.disagreement_pgan.distance,
                "generator_median_mean_sq_distance": float(self.disagreement.all_distances.median()),
                "pgan_median_mean_sq_distance": float(self.disagreement_pgan.all_distances.median()),
            },
        }


def check_prior_params(params: PriorParams, nz: int) -> None:
    """Every user-set parameter, before any work."""
    if params.data is not None and params.codes is not None:
        raise GanProbeError("give images (data) or reversed latents (codes), not both", param="codes")
    if not (math.isfinite(params.heldout) and 0 < params.heldout < 1):
        raise GanProbeError(f"the held-out fraction must lie in (0, 1), got {params.heldout}", param="heldout")
    params.pgan.validate(nz)
    if params.num_samples is not None and params.num_samples < 2:
        raise GanProbeError(f"draw at least 2 samples of each prior, got {params.num_samples}", param="samples")
    if params.num_permutations < 1:
        raise GanProbeError(f"use at least 1 permutation, got {params.num_permutations}", param="permutations")
    if params.num_shown < 1:
        raise GanProbeError(f"show at least 1 sample, got {params.num_shown}", param="num_shown")
    check_disagreement(params.num_prior_samples, params.num_top)
    if params.codes is None:
        with _reversal_errors():
            params.reversal.validate()


@contextmanager
def _reversal_errors() -> Iterator[None]:
    """The reversal's errors name its parameters as fields of ``reversal`` (``reversal.steps``), apart from the
    shared batch size: here ``steps`` and ``lr`` are the PGAN's."""
    try:
        yield
    except GanProbeError as exc:
        if exc.param is None or exc.param == "batch_size":
            raise
        raise type(exc)(str(exc), param=f"reversal.{exc.param}") from None


def split_codes(num: int, heldout: float, nz: int, *, seed: int) -> torch.Tensor:
    """The sorted indices of the held-out codes: round(heldout * num) of them, a seeded random subset.

    Refuses a split that leaves fewer than 2 held out or fewer than nz + 1 to fit (the full covariance)."""
    num_heldout = int(round(heldout * num))
    if num_heldout < 2 or num - num_heldout < nz + 1:
        raise DataError(
            f"{num} codes with held-out fraction {heldout:g} leave {num - num_heldout} to fit and {num_heldout} held "
            f"out; the full covariance needs at least nz + 1 = {nz + 1} to fit and the two-sample tests 2 held out: "
            "use more images (--limit) or codes, or another --heldout",
            param="heldout",
        )
    order = torch.randperm(num, generator=seeded_generator(seed))
    return order[:num_heldout].sort().values


def _checked_codes(codes: torch.Tensor, nz: int) -> torch.Tensor:
    t = torch.as_tensor(codes)
    if t.ndim != 2 or t.shape[1] != nz:
        raise DataError(f"codes have shape {tuple(t.shape)}; expected (N, {nz})", param="codes")
    if t.is_complex() or t.dtype == torch.bool:
        raise DataError(f"codes must be real numbers, got dtype {t.dtype}", param="codes")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise DataError("codes contain NaN or infinite values", param="codes")
    return t


def _wrap_prior_net(h: PriorNet, gen: LoadedGenerator) -> LoadedGenerator:
    """h as a generator of codes (output (nz,)), so that the reversal runs through it unchanged."""
    return wrap_module(
        h,
        nz=h.dim,
        arch="prior-net",
        config=h.config,
        output_shape=(h.nz,),
        provenance="the PGAN's generator h",
        source="module",
        device=gen.device,
        dtype=gen.dtype,
    )


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.to(torch.float64)
    return z.mean(0), torch.cov(z.T).reshape(z.shape[1], z.shape[1])


def _compare(
    name: str,
    description: str,
    draws: torch.Tensor,
    heldout: torch.Tensor,
    moments: tuple[torch.Tensor, torch.Tensor, str],
    log_density: float | None,
    pag: PagScore,
    pag_space: str,
    basis: tuple[torch.Tensor, torch.Tensor],
    *,
    num_permutations: int,
    seed: int,
) -> PriorComparison:
    mean_x, cov_x = _moments(heldout)
    mean_p, cov_p, how = moments
    cov_norm = float(torch.linalg.matrix_norm(cov_x))
    cov_error = float(torch.linalg.matrix_norm(cov_p - cov_x))
    tests = {
        stat: two_sample_test(heldout, draws, statistic=stat, num_permutations=num_permutations, seed=seed + i)
        for i, stat in enumerate(STATISTICS)
    }
    center, axes = basis
    return PriorComparison(
        name=name,
        description=description,
        tests=tests,
        mean_error=float(torch.linalg.vector_norm(mean_p - mean_x)),
        cov_error=cov_error,
        cov_error_relative=cov_error / cov_norm if cov_norm > 0 else math.inf,
        moments=how,
        heldout_log_density=log_density if log_density is not None and math.isfinite(log_density) else None,
        pag=pag,
        pag_space=pag_space,
        projection=(draws - center) @ axes,
    )


def _pgan_draws(h: PriorNet, num: int, seed: int) -> torch.Tensor:
    zp = torch.randn(num, h.dim, generator=seeded_generator(seed), dtype=torch.float64)
    with torch.no_grad():
        return h(zp.float()).double()


def run_prior(gen: LoadedGenerator, params: PriorParams, *, progress: Progress | None = None) -> PriorResult:
    """Reverse the data (or read the codes), hold some out, fit the four priors and compare them on the rest.

    Refuses a generator composed with a prior network (``--prior-net``): a prior fitted over its z' would be
    a second network h2 to compose as G o h o h2, which one ``--prior-net`` cannot express; fit h to G alone."""
    if gen.prior_net is not None:
        raise GanProbeError(
            f"prior fits a prior over the generator's own z; this generator is composed with the prior network "
            f"{gen.prior_net.get('path') or '(in memory)'}: run gan-probe prior without --prior-net"
        )
    if isinstance(gen.prior, MappedPrior):
        raise GanProbeError(
            f"prior learns a prior over z; the {gen.prior.space} space of a StyleGAN2 has no closed-form prior "
            "to compare with: use --space z",
            param="space",
        )
    nz = gen.nz
    check_prior_params(params, nz)
    timings: dict[str, float] = {}
    data: ImageData | None = None
    rev: ReversalResult | None = None
    t0 = time.perf_counter()
    if params.codes is not None:
        if isinstance(params.codes, torch.Tensor):
            codes, source = _checked_codes(params.codes, nz), "in-memory codes"
        else:
            codes, source = load_latents(params.codes, nz, gen.prior, param="codes"), str(params.codes)
        codes = codes[: params.limit] if params.limit is not None else codes
    else:
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
        split_codes(int(data.images.shape[0]), params.heldout, nz, seed=params.seed)  # refuse before reversing
        with _reversal_errors():
            rev = invert_generator(gen, data.images, params.reversal, progress=progress)
        if rev.interrupted:
            raise KeyboardInterrupt
        codes, source = rev.z, data.source
        timings["reversal_s"] = time.perf_counter() - t0
    held = split_codes(int(codes.shape[0]), params.heldout, nz, seed=params.seed)
    mask = torch.zeros(codes.shape[0], dtype=torch.bool)
    mask[held] = True
    fit, heldout = codes[~mask], codes[mask]
    num_draws = params.num_samples if params.num_samples is not None else int(heldout.shape[0])

    t1 = time.perf_counter()
    training = train_pgan(fit, params.pgan, seed=params.seed, device=gen.device, progress=progress)
    timings["pgan_s"] = time.perf_counter() - t1
    h = training.h

    t2 = time.perf_counter()
    diag = fit_diagonal_gaussian(fit, gen.prior.center)
    full = fit_full_gaussian(fit)
    mean_x = heldout.mean(0)
    _, _, vh = torch.linalg.svd(heldout - mean_x, full_matrices=False)
    basis = (mean_x, vh[:2].T)
    # the held-out codes reversed through h, with the reversal's own parameters (from z' ~ N(0, init_std^2 I))
    with _reversal_errors():
        code_rev = invert_generator(_wrap_prior_net(h, gen), heldout, params.reversal)
    if code_rev.interrupted:
        raise KeyboardInterrupt
    center, sigma = gen.prior.center, gen.prior.scale
    scale_word = f"{sigma:g}^2 I" if gen.prior.kind == "normal" else f"{sigma:.6g}^2 I, moment-matched"
    draw_seed = params.seed + 100
    gen_draws = gen.prior.sample(num_draws, nz, generator=seeded_generator(draw_seed))
    pgan_draws = _pgan_draws(h, num_draws, draw_seed + 3)
    pgan_moment_draws = _pgan_draws(h, NUM_MOMENT_DRAWS, draw_seed + 4)
    mean_pg, cov_pg = _moments(pgan_moment_draws)
    eye = torch.eye(nz, dtype=torch.float64)
    perm_seed = params.seed + 200
    gen_log = float(gen.prior.log_prob(heldout).mean())
    comparisons = [
        _compare(
            "generator",
            f"the generator's prior {gen.prior.describe()}",
            gen_draws,
            heldout,
            (torch.full((nz,), center, dtype=torch.float64), sigma**2 * eye, "exact"),
            gen_log,
            pag_score(heldout, sigma, center=center),
            f"Z, against N({center:g}, {scale_word})",
            basis,
            num_permutations=params.num_permutations,
            seed=perm_seed,
        ),
        _compare(
            "diagonal",
            "N(c, V diag(nu^2) V^T): the Gaussian PAG compares with, fitted to the codes",
            diag.sample(num_draws, generator=seeded_generator(draw_seed + 1)),
            heldout,
            (diag.mean, diag.cov, "exact"),
            float(diag.log_prob(heldout).mean()),
            pag_score(diag.whiten(heldout), 1.0),
            "whitened by the prior, against N(0, I)",
            basis,
            num_permutations=params.num_permutations,
            seed=perm_seed + 10,
        ),
        _compare(
            "full",
            "N(mu, Sigma): sample mean and unbiased covariance of the codes",
            full.sample(num_draws, generator=seeded_generator(draw_seed + 2)),
            heldout,
            (full.mean, full.cov, "exact"),
            float(full.log_prob(heldout).mean()),
            pag_score(full.whiten(heldout), 1.0),
            "whitened by the prior, against N(0, I)",
            basis,
            num_permutations=params.num_permutations,
            seed=perm_seed + 20,
        ),
        _compare(
            "pgan",
            f"the PGAN h(z'), z' ~ N(0, I) in R^{h.dim}",
            pgan_draws,
            heldout,
            (mean_pg, cov_pg, f"sampled ({NUM_MOMENT_DRAWS} draws)"),
            None,
            pag_score(code_rev.z, 1.0),
            "Z', the held-out codes reversed through h, against N(0, I)",
            basis,
            num_permutations=params.num_permutations,
            seed=perm_seed + 30,
        ),
    ]
    timings["compare_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    # the same seeds: z is sigma times the first nz coordinates of z' (all of them when d' = nz)
    zp_shown = torch.randn(params.num_shown, h.dim, generator=seeded_generator(params.seed + 300), dtype=torch.float64)
    if gen.prior.kind == "normal":
        z_shown = gen.prior.sigma * zp_shown[:, :nz]
    else:
        z_shown = gen.prior.sample(params.num_shown, nz, generator=seeded_generator(params.seed + 300))
    with torch.no_grad():
        h_shown = h(zp_shown.float()).double()
    batch = params.reversal.batch_size
    disagreement = rank_disagreement(
        gen,
        gen.prior.sample(params.num_prior_samples, nz, generator=seeded_generator(params.seed + 1)),
        codes,
        num_top=params.num_top,
        batch_size=batch,
    )
    disagreement_pgan = rank_disagreement(
        gen, _pgan_draws(h, params.num_prior_samples, params.seed + 1), codes, num_top=params.num_top, batch_size=batch
    )
    result = PriorResult(
        params=params,
        data=data,
        codes_source=source,
        reversal=rev,
        codes=codes,
        heldout_index=held,
        training=training,
        dim=h.dim,
        comparisons=comparisons,
        code_reversal=code_rev,
        heldout_projection=(heldout - basis[0]) @ basis[1],
        samples_z=generate(gen, z_shown, batch),
        samples_h=generate(gen, h_shown, batch),
        disagreement=disagreement,
        disagreement_pgan=disagreement_pgan,
        timings=timings,
    )
    timings["pictures_s"] = time.perf_counter() - t3
    return result


__all__ = [
    "DEFAULT_R1",
    "NUM_MOMENT_DRAWS",
    "PRIOR_NAMES",
    "GaussianPrior",
    "PganParams",
    "PganTraining",
    "PriorComparison",
    "PriorParams",
    "PriorResult",
    "fit_diagonal_gaussian",
    "fit_full_gaussian",
    "run_prior",
    "split_codes",
    "train_pgan",
]
