"""``gan-probe divergence``: spread f-divergences between the generator and its data, bounded by an encoder.

Zhang, Barber et al., "Spread divergence" and "Training generative latent models
by variational f-divergence minimization" (docs/design.md §7.7). A generator puts
its mass on a low-dimensional set, so its f-divergence to data is undefined;
convolved with Gaussian noise y = x + sigma eps both have densities,

.. math::

    p_s(y) = \\frac1n \\sum_k N(y; x_k, \\sigma^2 I), \\qquad
    q_s(y) = \\int N(y; G(z), \\sigma^2 I) P_Z(z) \\, dz .

With an encoder r(z|y) (a diagonal Gaussian) the joints P(y, z) = r(z|y) p_s(y)
and Q(y, z) = N(y; G(z), sigma^2 I) P_Z(z) have explicit densities and
D_f(P || Q) >= D_f(p_s || q_s) for every f and r (equality at the posterior):

.. math::

    \\mathrm{KL}(p_s\\|q_s) \\le E_{y\\sim p_s, z\\sim r}[\\ln r(z|y) + \\ln p_s(y) - \\ln N(y; G(z)) - \\ln P_Z(z)]

    \\mathrm{KL}(q_s\\|p_s) \\le E_{z\\sim P_Z, y\\sim N(G(z))}[\\ln N(y; G(z)) + \\ln P_Z(z)
        - \\ln r(z|y) - \\ln p_s(y)]

and JS(p_s, q_s) <= JS(P, Q), estimated on samples of both joints. The
importance-weighted estimate ln q_hat(y) = logsumexp_k w_k - ln K, w_k = ln N(y;
G(z_k)) + ln P_Z(z_k) - ln r(z_k|y), z_k ~ r (Burda et al. 2016), has E ln q_hat
<= ln q_s, non-decreasing in K: ln p_s - ln q_hat is a tighter upper bound on the
forward KL term, and ln q_hat - ln p_s on model samples a stochastic lower
estimate of KL(q_s || p_s).

The data are split (seeded) into a training part, on which the data-side encoder
is fitted, and a held-out part, on which every forward figure is reported; p_s
is the mixture over all n points and ln p_s(y) is exact (a chunked logsumexp).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gan_probe import distributed
from gan_probe.analyses.common import Advance, Progress, progress_task, seeded_generator
from gan_probe.analyses.memory import check_memory, divergence_memory
from gan_probe.data import ImageData, images_from_tensor, load_images
from gan_probe.errors import DataError, GanProbeError
from gan_probe.limits import check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.prior_net import with_normal_latent
from gan_probe.models.priors import MappedPrior

#: The divergences this command bounds, by name.
DIVERGENCES = ("kl", "rkl", "js")
#: Encoder widths: hidden units of the MLP (vectors), channels of the two strided convolutions (images).
MLP_WIDTHS = (256, 256)
CONV_CHANNELS = (32, 64)
#: Held-out images and model samples rendered in the pictures.
NUM_SHOWN = 16

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""y (B, D) flattened -> (mean (B, nz), log standard deviation (B, nz)) of r(z|y)."""


@dataclass(frozen=True)
class DivergenceParams:
    """``data`` as for ``pag`` (None: the bundled held-out MNIST images; a tensor in the generator's units).

    ``sigmas``: the spread noise widths in output units; ``divergences``: a subset of kl, rkl, js;
    ``heldout``: the fraction of the data held out (seeded split); ``num_model_samples``: pairs (z, y)
    drawn from the generator for the reverse figures; ``steps``: Adam steps per encoder (early stopped
    every ``eval_every`` steps after ``patience`` evaluations without improvement); ``importance``: K
    draws from r per point; ``refine``: Adam steps on each evaluated point's r(z|y) parameters;
    ``chunk``: data points per block of the logsumexp for ln p_s; ``ais``: annealing steps (0: no AIS) after a
    pilot of ``ais_pilot`` moves that fixes each point's step size, ``ais_leapfrog`` leapfrog steps per move."""

    data: str | torch.Tensor | None = None
    limit: int | None = None
    resize: bool = False
    sigmas: tuple[float, ...] = (0.1,)
    divergences: tuple[str, ...] = DIVERGENCES
    heldout: float = 0.25
    num_model_samples: int = 512
    steps: int = 400
    lr: float = 1e-3
    batch_size: int = 16
    eval_every: int = 25
    patience: int = 4
    importance: int = 64
    refine: int = 0
    refine_lr: float = 0.05
    ais: int = 0
    ais_pilot: int = 30
    ais_leapfrog: int = 5
    chunk: int = 1024
    seed: int = 0

    def validate(self) -> None:
        for s in self.sigmas:
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise GanProbeError(f"every sigma must be a finite number > 0, got {s}", param="spread")
        if not self.sigmas:
            raise GanProbeError("give at least one sigma", param="spread")
        bad = [d for d in self.divergences if d not in DIVERGENCES]
        if bad or not self.divergences:
            raise GanProbeError(
                f"unknown divergence {bad[0] if bad else '(none)'!r}: choose from {', '.join(DIVERGENCES)}",
                param="f",
            )
        if not (math.isfinite(self.heldout) and 0 < self.heldout < 1):
            raise GanProbeError(f"the held-out fraction must be in (0, 1), got {self.heldout}", param="heldout")
        check_count(self.importance, "the number of importance draws K", param="importance")
        check_count(self.num_model_samples, "the number of model samples", param="model_samples", low=2)
        check_count(self.steps, "the number of encoder steps", param="steps", low=0)
        check_count(self.batch_size, "the batch size", param="batch_size")
        check_count(self.eval_every, "the evaluation interval", param="eval_every")
        check_count(self.patience, "the patience", param="patience")
        check_count(self.refine, "the number of refinement steps", param="refine", low=0)
        check_count(self.chunk, "the chunk size", param="chunk")
        check_count(self.ais, "the number of AIS steps", param="ais", low=0)
        check_count(self.ais_pilot, "the number of AIS pilot steps", param="ais_pilot")
        check_count(self.ais_leapfrog, "the number of leapfrog steps", param="ais_leapfrog")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GanProbeError(f"the learning rate must be a finite number > 0, got {self.lr}", param="lr")


# --------------------------------------------------------------------------- densities


def log_normal(y: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """ln N(y; mean, sigma^2 I) row by row, y and mean (B, D) -> (B,) float64."""
    d = y.shape[1]
    diff = (y.double() - mean.double()).square().sum(1)
    return -diff / (2 * sigma**2) - 0.5 * d * math.log(2 * math.pi * sigma**2)


def log_spread_data_density(y: torch.Tensor, data: torch.Tensor, sigma: float, *, chunk: int = 1024) -> torch.Tensor:
    """ln p_s(y) = logsumexp_k ln N(y; x_k, sigma^2 I) - ln n, exactly; y (B, D), data (n, D) -> (B,) float64.

    The data are visited ``chunk`` points at a time with a running logsumexp, so memory is B x chunk
    (never B x n x D); |y - x|^2 = |y|^2 + |x|^2 - 2 y.x in float64.
    """
    y = y.double()
    n, d = data.shape
    y2 = y.square().sum(1, keepdim=True)
    running = torch.full((y.shape[0],), -math.inf, dtype=torch.float64, device=y.device)
    for start in range(0, n, chunk):
        x = data[start : start + chunk].to(y.device, torch.float64)
        sq = (y2 + x.square().sum(1) - 2 * y @ x.T).clamp_min(0.0)
        running = torch.logaddexp(running, torch.logsumexp(-sq / (2 * sigma**2), dim=1))
    return running - math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma**2)


def log_diag_normal(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """ln r(z|y) of a diagonal Gaussian, z, mean, log_std (..., nz) -> (...)."""
    u = (z - mean) * torch.exp(-log_std)
    return (-0.5 * u.square() - log_std).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


# --------------------------------------------------------------------------- the encoder


class GaussianEncoder(nn.Module):
    """r(z|y) = N(mean(y), diag exp(2 log_std(y))): a linear map of y plus a network, so that the Gaussian
    posterior of a linear generator (mean linear in y, covariance constant) lies in the family.

    The network is an MLP (``MLP_WIDTHS``, SiLU) for vector outputs and two strided 4x4 convolutions
    (``CONV_CHANNELS``, SiLU) then a linear layer for images (C, H, W) with H, W >= 4.
    """

    def __init__(self, output_shape: tuple[int, ...], nz: int) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        dim = math.prod(output_shape)
        self.linear = nn.Linear(dim, 2 * nz)
        self.conv = len(output_shape) == 3 and output_shape[1] >= 4 and output_shape[2] >= 4
        if self.conv:
            c, h, w = output_shape
            c1, c2 = CONV_CHANNELS
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(c, c1, 4, 2, 1),
                nn.SiLU(),
                nn.Conv2d(c1, c2, 4, 2, 1),
                nn.SiLU(),
                nn.Flatten(),
                nn.Linear(c2 * (h // 4) * (w // 4), 2 * nz),
            )
            self.widths: dict[str, Any] = {"kind": "conv", "channels": list(CONV_CHANNELS)}
        else:
            h1, h2 = MLP_WIDTHS
            self.body = nn.Sequential(
                nn.Linear(dim, h1), nn.SiLU(), nn.Linear(h1, h2), nn.SiLU(), nn.Linear(h2, 2 * nz)
            )
            self.widths = {"kind": "mlp", "hidden": list(MLP_WIDTHS)}
        # start near the prior: small weights on the output layers
        for layer in (self.linear, self.body[-1]):
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.bias)
            layer.weight.data.mul_(0.01)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        body_in = y.reshape(y.shape[0], *self.output_shape) if self.conv else y
        out = self.linear(y) + self.body(body_in)
        mean, log_std = out.chunk(2, dim=1)
        return mean, log_std.clamp(-12.0, 6.0)

    @staticmethod
    def activation_elements(output_shape: tuple[int, ...], nz: int) -> int:
        """Elements of the layer outputs for one y (pre- and post-activation, both outputs): the encoder's share
        of the memory estimate (:func:`gan_probe.analyses.memory.divergence_memory`)."""
        if len(output_shape) == 3 and output_shape[1] >= 4 and output_shape[2] >= 4:
            h, w = output_shape[1], output_shape[2]
            hidden = CONV_CHANNELS[0] * (h // 2) * (w // 2) + CONV_CHANNELS[1] * (h // 4) * (w // 4)
        else:
            hidden = sum(MLP_WIDTHS)
        return 2 * hidden + 4 * nz

    def describe(self) -> dict[str, Any]:
        return {
            **self.widths,
            "linear_skip": True,
            "activation": "SiLU",
            "num_params": sum(p.numel() for p in self.parameters()),
        }


@dataclass
class EncoderFit:
    """An encoder fitted on one side: ``side`` "data" (forward bound) or "model" (simulated pairs)."""

    encoder: GaussianEncoder
    side: str
    train_loss: torch.Tensor  # (steps_done,) per step
    val_steps: torch.Tensor  # (num_evals,)
    val_loss: torch.Tensor  # (num_evals,)
    best_step: int
    steps_done: int

    def describe(self) -> dict[str, Any]:
        objective = (
            "forward bound on the training split (negative ELBO), validated on the held-out split"
            if self.side == "data"
            else "-E ln r(z|y) on pairs simulated from G, validated on a fixed simulated set"
        )
        return {
            "side": self.side,
            "objective": objective,
            "steps_done": self.steps_done,
            "best_step": self.best_step,
            "final_train_loss": float(self.train_loss[-1]) if self.train_loss.numel() else None,
            "best_val_loss": float(self.val_loss.min()) if self.val_loss.numel() else None,
        }


def _noisy(x: torch.Tensor, sigma: float, rng: torch.Generator) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=rng, dtype=x.dtype)


def _simulate(
    gen: LoadedGenerator, num: int, sigma: float, rng: torch.Generator, *, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """num pairs from Q: z ~ P_Z, y = G(z) + sigma eps; returns z (num, nz), G(z) and y (num, D) float64 CPU.

    With ``batch_size`` G runs in chunks of that many latents, shared out over the ranks under torchrun
    (z and the noise are drawn whole on every rank from ``rng``, so they do not depend on the world size)."""
    z = gen.prior.sample(num, gen.nz, generator=rng)

    def forward(sl: slice) -> torch.Tensor:
        with torch.no_grad():
            return gen.flat(z[sl].to(gen.device, gen.dtype)).to("cpu", torch.float64)

    if batch_size is None:
        gz = forward(slice(0, num))
    else:
        gz = torch.cat(distributed.map_batches(num, batch_size, forward)[0])
    return z, gz, _noisy(gz, sigma, rng)


def chunk_seed(seed: int, start: int, stream: int = 0) -> int:
    """The seed of the chunk of points that starts at position ``start`` (``stream``: which of the chunk's
    streams, 0 to 4): a function of the points alone, so that sharding the chunks over ranks changes no draw."""
    return seed * 1_000_003 + 5 * start + stream


def elbo_terms(
    gen: LoadedGenerator, encoder: Encoder, y: torch.Tensor, sigma: float, rng: torch.Generator, *, num_draws: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """w_k = ln N(y; G(z_k), sigma^2) + ln P_Z(z_k) - ln r(z_k|y), z_k ~ r(.|y) reparameterised: (B, K) float64,
    differentiable in the encoder's parameters; and the encoder means (B, nz)."""
    yd = y.to(gen.device, gen.dtype)
    mean, log_std = encoder(yd)
    b, nz = mean.shape
    eps = torch.randn(num_draws, b, nz, generator=rng, dtype=torch.float64).to(gen.device, mean.dtype)
    z = mean + torch.exp(log_std) * eps  # (K, B, nz)
    gz = gen.flat(z.reshape(-1, nz)).reshape(num_draws, b, -1)
    w = (
        log_normal(yd.expand(num_draws, -1, -1).reshape(num_draws * b, -1), gz.reshape(num_draws * b, -1), sigma)
        .reshape(num_draws, b)
        .to(torch.float64)
        + gen.prior.log_prob(z.double())
        - log_diag_normal(z.double(), mean.double(), log_std.double())
    )
    return w.T, mean


def adam(params: Sequence[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel: one operation per parameter tensor per step instead of about ten. The
    encoder's tensors are small, so the unfused steps were launch-bound, and on a busy CPU with two threads
    every launch waits at a barrier: measured 200 ms per step unfused, 12 ms fused (docs/performance.md,
    "Spread divergence"). The same update rule; its rounding differs from the unfused loop's."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    """One Adam step on ``params`` only (autograd.grad: the generator's own .grad stays untouched)."""
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()


def fit_encoder(
    gen: LoadedGenerator,
    side: str,
    sigma: float,
    params: DivergenceParams,
    *,
    train: torch.Tensor | None = None,
    val: torch.Tensor | None = None,
    seed: int,
    progress: Progress | None = None,
) -> EncoderFit:
    """Fit r(z|y) with Adam (seeded), keeping the state of the best validation loss.

    ``side`` "data": minimise -mean ELBO of y = x + sigma eps, x from ``train`` (n_train, D), validated on
    ``val`` (held-out points with fixed noise). ``side`` "model": maximise mean ln r(z|y) over fresh pairs
    simulated from G, validated on a fixed simulated set of ``num_model_samples`` pairs.
    """
    torch.manual_seed(seed)  # the initial weights
    encoder = GaussianEncoder(gen.output_shape, gen.nz).to(gen.device, gen.dtype)
    weights = [p for p in encoder.parameters()]
    opt = adam(weights, params.lr)
    rng = seeded_generator(seed + 1)
    val_rng = seeded_generator(seed + 2)
    if side == "data":
        assert train is not None and val is not None
        y_val = _noisy(val, sigma, val_rng)

        def val_loss() -> float:
            with torch.no_grad():
                w, _ = elbo_terms(gen, encoder, y_val, sigma, seeded_generator(seed + 3))
            return float(-w.mean())
    else:
        z_val, _, y_val = _simulate(gen, params.num_model_samples, sigma, val_rng)

        def val_loss() -> float:
            with torch.no_grad():
                m, ls = encoder(y_val.to(gen.device, gen.dtype))
                return float(-log_diag_normal(z_val, m.double(), ls.double()).mean())

    best = val_loss()
    best_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    best_step, stale = 0, 0
    losses: list[float] = []
    val_steps, val_losses = [0], [best]
    with progress_task(progress, f"encoder ({side} side, sigma {sigma:g})", params.steps) as advance:
        for step in range(1, params.steps + 1):
            if side == "data":
                assert train is not None
                idx = torch.randint(train.shape[0], (params.batch_size,), generator=rng)
                y = _noisy(train[idx], sigma, rng)
                w, _ = elbo_terms(gen, encoder, y, sigma, rng)
                loss = -w.mean()
            else:
                z, _, y = _simulate(gen, params.batch_size, sigma, rng)
                m, ls = encoder(y.to(gen.device, gen.dtype))
                loss = -log_diag_normal(z.to(m.device, m.dtype), m, ls).mean()
            _step(opt, loss, weights)
            losses.append(float(loss.detach()))
            advance(1)
            if step % params.eval_every == 0 or step == params.steps:
                v = val_loss()
                val_steps.append(step)
                val_losses.append(v)
                if v < best:
                    best, best_step, stale = v, step, 0
                    best_state = {k: t.clone() for k, t in encoder.state_dict().items()}
                else:
                    stale += 1
                    if stale >= params.patience:
                        break
    encoder.load_state_dict(best_state)
    encoder.eval()
    return EncoderFit(
        encoder,
        side,
        torch.tensor(losses, dtype=torch.float64),
        torch.tensor(val_steps),
        torch.tensor(val_losses, dtype=torch.float64),
        best_step,
        len(losses),
    )


# --------------------------------------------------------------------------- evaluation


class RefinedEncoder:
    """r(z|y) with its per-point mean and log_std optimised by Adam for ``steps`` on the ELBO of each y (the
    amortisation gap shrinks); a deterministic function of y and the seed, so still a valid r."""

    def __init__(self, gen: LoadedGenerator, base: Encoder, sigma: float, *, steps: int, lr: float, seed: int) -> None:
        self.gen, self.base, self.sigma, self.steps, self.lr, self.seed = gen, base, sigma, steps, lr, seed

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            m0, ls0 = self.base(y)
        mean = m0.detach().clone().requires_grad_(True)
        log_std = ls0.detach().clone().requires_grad_(True)
        opt = adam([mean, log_std], self.lr)
        rng = seeded_generator(self.seed)
        with torch.enable_grad():
            for _ in range(self.steps):
                w, _ = elbo_terms(self.gen, lambda _y: (mean, log_std), y, self.sigma, rng)
                _step(opt, -w.sum(), [mean, log_std])
        return mean.detach(), log_std.detach()


@dataclass
class SideTerms:
    """Per-point terms of one side with one encoder (all float64, nats).

    Data side (y from held-out points): ``joint`` = ln p_s(y) - mean_k w_k (the forward bound's term),
    ``iw`` = ln p_s(y) - ln q_hat(y). Model side (z ~ P_Z, y = G(z) + noise): ``joint`` = ln N(y; G(z)) +
    ln P_Z(z) - ln r(z|y) - ln p_s(y) (the reverse bound's term), ``iw`` = ln q_hat(y) - ln p_s(y).
    ``js`` the per-point JS contribution ln 2 - softplus(-ln(P/Q)) (data side) or -ln(Q/P) (model side).
    """

    joint: torch.Tensor
    iw: torch.Tensor
    js: torch.Tensor
    means: torch.Tensor  # (B, nz) the encoder means


def data_side_terms(
    gen: LoadedGenerator,
    encoder: Encoder,
    y: torch.Tensor,
    log_ps: torch.Tensor,
    sigma: float,
    *,
    num_draws: int,
    seed: int,
    batch_size: int,
    advance: Advance | None = None,
) -> SideTerms:
    """Forward terms for noisy data y (B, D) with ln p_s(y) given.

    In chunks of ``batch_size`` points, each with its own random stream (:func:`chunk_seed`), shared out over
    the ranks under torchrun; ``advance(n)`` after each of this rank's chunks."""

    def chunk(sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = seeded_generator(chunk_seed(seed, sl.start))
        with torch.no_grad():
            w, mean = elbo_terms(gen, encoder, y[sl], sigma, rng, num_draws=num_draws)
        lp = log_ps[sl].unsqueeze(1)
        log_ratio = lp - w  # ln P(y, z_k) - ln Q(y, z_k)
        return (
            log_ratio.mean(1),
            log_ps[sl] - (torch.logsumexp(w, 1) - math.log(num_draws)),
            (math.log(2) - nn.functional.softplus(-log_ratio)).mean(1),
            mean.to("cpu", torch.float64),
        )

    parts, _ = distributed.map_batches(y.shape[0], batch_size, chunk, advance=advance, main_work=True)
    return SideTerms(*(torch.cat([p[i] for p in parts]) for i in range(4)))


def _given(mean: torch.Tensor, log_std: torch.Tensor) -> Encoder:
    """An encoder that returns r(.|y)'s parameters already computed for the batch y."""
    return lambda _y: (mean, log_std)


def model_side_terms(
    gen: LoadedGenerator,
    encoder: Encoder,
    z: torch.Tensor,
    gz: torch.Tensor,
    y: torch.Tensor,
    log_ps: torch.Tensor,
    sigma: float,
    *,
    num_draws: int,
    seed: int,
    batch_size: int,
    advance: Advance | None = None,
) -> SideTerms:
    """Reverse terms for pairs (z, y) drawn from Q, G(z) = gz, with ln p_s(y) given; chunked, seeded and
    shared out as :func:`data_side_terms`."""

    def chunk(sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = seeded_generator(chunk_seed(seed, sl.start))
        with torch.no_grad():
            mean, log_std = encoder(y[sl].to(gen.device, gen.dtype))
            log_q_joint = log_normal(y[sl], gz[sl], sigma) + gen.prior.log_prob(z[sl])
            log_ratio = log_q_joint - log_diag_normal(z[sl], mean.double().cpu(), log_std.double().cpu()) - log_ps[sl]
            # r(.|y) once per batch: the encoder is a deterministic function of y
            w, _ = elbo_terms(gen, _given(mean, log_std), y[sl], sigma, rng, num_draws=num_draws)
        return (
            log_ratio,
            torch.logsumexp(w, 1) - math.log(num_draws) - log_ps[sl],
            math.log(2) - nn.functional.softplus(-log_ratio),
            mean.to("cpu", torch.float64),
        )

    parts, _ = distributed.map_batches(y.shape[0], batch_size, chunk, advance=advance, main_work=True)
    return SideTerms(*(torch.cat([p[i] for p in parts]) for i in range(4)))


def spread_data_density_in_chunks(
    y: torch.Tensor, data: torch.Tensor, sigma: float, *, batch_size: int, chunk: int, advance: Advance | None = None
) -> torch.Tensor:
    """:func:`log_spread_data_density` of y (B, D) in chunks of ``batch_size`` points, shared out over the ranks
    under torchrun: (B,) float64, the same chunks (so the same numbers) for any world size."""
    parts, _ = distributed.map_batches(
        y.shape[0], batch_size, lambda sl: log_spread_data_density(y[sl], data, sigma, chunk=chunk), advance=advance
    )
    return torch.cat(parts)


# --------------------------------------------------------------------------- annealed importance sampling


#: The pilot's target HMC acceptance: higher than the usual 0.65, because a step near the leapfrog's stability
#: limit in the stiffest posterior direction mixes badly and biases short AIS chains (measured on the linear case).
TARGET_ACCEPTANCE = 0.9


def prior_encoder(gen: LoadedGenerator) -> Encoder:
    """The normal prior N(0, s^2 I) as an r(z|y) that ignores y: AIS and importance sampling started from the
    prior rather than from a fitted encoder. Each y (B, D) -> (zeros (B, nz), ln s (B, nz))."""
    if isinstance(gen.prior, MappedPrior) or gen.prior.kind != "normal":
        raise GanProbeError(f"a prior start needs a normal prior, got {gen.prior.describe()}", param="prior")
    log_s = math.log(gen.prior.sigma)

    def encoder(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (y.shape[0], gen.nz)
        return torch.zeros(shape, dtype=torch.float64), torch.full(shape, log_s, dtype=torch.float64)

    return encoder


def sigmoid_schedule(steps: int, *, sharpness: float = 4.0) -> torch.Tensor:
    """beta_0 = 0 < ... < beta_T = 1, a rescaled sigmoid (Grosse et al. 2015): dense at both ends. (T+1,)."""
    x = torch.sigmoid(sharpness * (2 * torch.arange(steps + 1, dtype=torch.float64) / steps - 1))
    return (x - x[0]) / (x[-1] - x[0])


def _log_joint_and_grad(
    gen: LoadedGenerator, z: torch.Tensor, y: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ln N(y; G(z), sigma^2) + ln P_Z(z) (B,) float64 and its gradient in z (B, nz): one forward and one
    backward pass of G."""
    with torch.enable_grad():
        x = z.detach().requires_grad_(True)
        gz = gen.flat(x.to(gen.device, gen.dtype)).to(torch.float64)
        lj = log_normal(y.to(gz.device), gz, sigma).cpu() + gen.prior.log_prob(x)
        (g,) = torch.autograd.grad(lj.sum(), x)
    return lj.detach(), g


def _log_r_and_grad(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ln r(z|y) (B,) and its gradient -(z - mean) / std^2 (B, nz): closed form, no pass of G."""
    return log_diag_normal(z, mean, log_std), -(z - mean) * torch.exp(-2 * log_std)


def _hmc_move(
    gen: LoadedGenerator,
    z: torch.Tensor,
    log_joint: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    y: torch.Tensor,
    mean: torch.Tensor,
    log_std: torch.Tensor,
    sigma: float,
    step_size: torch.Tensor,
    num_leapfrog: int,
    rng: torch.Generator,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One HMC transition (Neal 2011) leaving f_beta(z) = r(z|y)^(1-beta) [N(y; G(z)) P_Z(z)]^beta invariant,
    per point with its own ``step_size`` (B,). ``log_joint``: (ln N(y; G(z)) P_Z(z), its gradient) at ``z``,
    carried from the previous move, so a move costs ``num_leapfrog`` passes of G (forward and backward) and
    the energy at any beta is a combination of the two parts. Returns the new z, the log joint and gradient
    there, and the acceptance probabilities (B,)."""

    def energy_and_grad(x: torch.Tensor, lj: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lr, glr = _log_r_and_grad(x, mean, log_std)
        return -(beta * lj[0] + (1 - beta) * lr), -(beta * lj[1] + (1 - beta) * glr)

    # jittered by a factor in [0.5, 1.5] each move: a fixed trajectory length resonates with the posterior's
    # periods and mixes badly (Neal 2011, section 5.4.2.2)
    jitter = 0.5 + torch.rand(z.shape[0], generator=rng, dtype=torch.float64)
    eps = (step_size * jitter).unsqueeze(1)
    p0 = torch.randn(z.shape, generator=rng, dtype=torch.float64)
    u0, g = energy_and_grad(z, log_joint)
    x, p = z, p0 - 0.5 * eps * g
    proposed = log_joint
    for i in range(num_leapfrog):
        x = x + eps * p
        proposed = _log_joint_and_grad(gen, x, y, sigma)
        u1, g = energy_and_grad(x, proposed)
        if i < num_leapfrog - 1:
            p = p - eps * g
    p = p - 0.5 * eps * g
    log_accept = (u0 + 0.5 * p0.square().sum(1)) - (u1 + 0.5 * p.square().sum(1))
    log_accept = torch.nan_to_num(log_accept, nan=-math.inf)
    accept_prob = log_accept.clamp(max=0.0).exp()
    accept = torch.rand(z.shape[0], generator=rng, dtype=torch.float64) < accept_prob
    kept = (
        torch.where(accept, proposed[0], log_joint[0]),
        torch.where(accept.unsqueeze(1), proposed[1], log_joint[1]),
    )
    return torch.where(accept.unsqueeze(1), x, z), kept, accept_prob


@dataclass
class AisRun:
    """ln of the AIS weights per point (B,): forward runs estimate ln q_s(y) from below in expectation,
    reverse runs (from an exact posterior sample) from above; the frozen step sizes (B,) and mean acceptance;
    ``point_acceptance`` each point's mean acceptance (B,)."""

    log_weights: torch.Tensor
    step_size: torch.Tensor
    acceptance: float
    point_acceptance: torch.Tensor | None = None


def ais_log_q(
    gen: LoadedGenerator,
    encoder: Encoder,
    y: torch.Tensor,
    sigma: float,
    *,
    steps: int,
    seed: int,
    num_leapfrog: int = 5,
    step_size: torch.Tensor | None = None,
    z_posterior: torch.Tensor | None = None,
    adapt: bool = False,
) -> AisRun:
    """Annealed importance sampling (Neal 2001) from r(z|y) to the posterior p(z|y), HMC moves, sigmoid schedule.

    Forward (``z_posterior`` None): z_0 ~ r, ln w = sum_t (beta_t - beta_{t-1}) [ln N(y; G(z)) P_Z(z) - ln r(z|y)]
    at z_{t-1}, then an HMC move at beta_t; E exp(ln w) = q_s(y), so E ln w <= ln q_s(y). Reverse (from
    z_posterior, an exact posterior sample: the z of a pair drawn from G): the chain runs from beta = 1 to 0
    and -ln w_rev bounds ln q_s(y) from above in expectation (bidirectional Monte Carlo, Grosse et al. 2016).
    ``adapt``: after each move multiply each point's step size by 1.1 (acceptance > TARGET_ACCEPTANCE) or 0.9
    (the pilot). ``encoder`` :func:`prior_encoder` starts from the prior instead: r = P_Z, f_beta = P_Z(z)
    N(y; G(z))^beta, the usual AIS for decoders (Wu et al. 2017), which ``bench divergence`` compares with.
    """
    rng = seeded_generator(seed)
    b, nz = y.shape[0], gen.nz
    with torch.no_grad():
        mean, log_std = encoder(y.to(gen.device, gen.dtype))
    mean, log_std = mean.to("cpu", torch.float64), log_std.to("cpu", torch.float64)
    # without a given step size: a fifth of the geometric mean of r's standard deviations, per point
    eps = step_size.clone() if step_size is not None else 0.2 * torch.exp(log_std.mean(1))
    betas = sigmoid_schedule(steps)
    yd = y.to(torch.float64)
    reverse = z_posterior is not None
    if reverse:
        assert z_posterior is not None
        z = z_posterior.to(torch.float64).clone()
        order = [(float(betas[t]), float(betas[t - 1])) for t in range(steps, 0, -1)]
    else:
        z = mean + torch.exp(log_std) * torch.randn(b, nz, generator=rng, dtype=torch.float64)
        order = [(float(betas[t - 1]), float(betas[t])) for t in range(1, steps + 1)]
    log_w = torch.zeros(b, dtype=torch.float64)
    accepted = torch.zeros(b, dtype=torch.float64)
    log_joint = _log_joint_and_grad(gen, z, yd, sigma)
    for before, after in order:
        lr = log_diag_normal(z, mean, log_std)
        log_w = log_w + (after - before) * (log_joint[0] - lr)
        z, log_joint, acc = _hmc_move(gen, z, log_joint, after, yd, mean, log_std, sigma, eps, num_leapfrog, rng)
        accepted += acc
        if adapt:
            eps = torch.where(acc > TARGET_ACCEPTANCE, eps * 1.1, eps * 0.9)
    per_point = accepted / max(steps, 1)
    return AisRun(-log_w if reverse else log_w, eps, float(per_point.mean()), per_point)


def pilot_step_size(
    gen: LoadedGenerator, encoder: Encoder, y: torch.Tensor, sigma: float, *, steps: int, seed: int
) -> torch.Tensor:
    """Per-point HMC step sizes adapted in a short forward AIS run (``steps`` moves), then frozen (B,)."""
    return ais_log_q(gen, encoder, y, sigma, steps=steps, seed=seed, adapt=True).step_size


@dataclass
class DivergenceEstimate:
    """One divergence at one sigma: the upper ``bound`` and its Monte Carlo ``stderr``; ``estimate`` (the
    importance-weighted bound for kl, the stochastic lower estimate for rkl, None for js) and its stderr;
    ``encoder`` the side whose encoder gave the (lower) bound; ``dim`` the output dimension."""

    name: str
    bound: float
    stderr: float
    estimate: float | None
    estimate_stderr: float | None
    encoder: str
    dim: int

    def to_json(self) -> dict[str, Any]:
        meaning = {
            "kl": "KL(p_s || q_s) (data || generator); estimate: importance-weighted upper bound",
            "rkl": "KL(q_s || p_s) (generator || data); the value lies in [estimate, bound] in expectation",
            "js": "JS(p_s, q_s), at most ln 2",
        }[self.name]
        return {
            "bound": self.bound,
            "stderr": self.stderr,
            "estimate": self.estimate,
            "estimate_stderr": self.estimate_stderr,
            "per_dim": self.bound / self.dim,
            "bits_per_dim": self.bound / (self.dim * math.log(2)),
            "encoder": self.encoder,
            # JS <= ln 2 always: a bound at that ceiling (every sample's log-ratio saturated) says nothing
            "at_ceiling": self.name == "js" and self.bound >= math.log(2) * (1 - 1e-9),
            "estimate_below_zero": self.estimate_below_zero,
            "meaning": meaning,
        }

    @property
    def estimate_below_zero(self) -> bool:
        """An rkl lower estimate below 0: a KL never is, so the interval says only [0, bound] (the model-side
        encoder is far from the posterior there)."""
        return self.name == "rkl" and self.estimate is not None and self.estimate < 0


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    n = x.numel()
    return float(x.mean()), float(x.std() / math.sqrt(n)) if n > 1 else math.nan


@dataclass
class AisSummary:
    """AIS at one sigma: ``kl_terms`` ln p_s(y) - ln q_ais(y) on the held-out points (data-side encoder as the
    start); on the model samples (model-side encoder) the forward ``lower`` and reverse ``upper`` estimates
    of ln q_s(y) and ln p_s(y) there, so KL(q_s || p_s) lies in [mean(lower - ln p_s), mean(upper - ln p_s)]."""

    steps: int
    leapfrog: int
    kl_terms: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    log_ps_model: torch.Tensor
    acceptance: float

    def to_json(self) -> dict[str, Any]:
        kl, kl_se = _mean_se(self.kl_terms)
        lo, lo_se = _mean_se(self.lower - self.log_ps_model)
        up, up_se = _mean_se(self.upper - self.log_ps_model)
        gap, gap_se = _mean_se(self.upper - self.lower)
        return {
            "steps": self.steps,
            "leapfrog": self.leapfrog,
            "kl_estimate": kl,
            "kl_stderr": kl_se,
            "rkl_bracket": [lo, up],
            "rkl_bracket_stderr": [lo_se, up_se],
            "bdmc_gap": gap,
            "bdmc_gap_stderr": gap_se,
            "acceptance": self.acceptance,
            "meaning": "kl_estimate: ln p_s - AIS ln q_s on held-out data (an upper bound in expectation); "
            "rkl_bracket and bdmc_gap from forward and reverse chains on data simulated from G",
        }


@dataclass
class SigmaResult:
    """Everything measured at one sigma."""

    sigma: float
    divergences: dict[str, DivergenceEstimate]
    fits: dict[str, EncoderFit]
    forward: dict[str, SideTerms]  # encoder side -> data-side terms on the held-out points
    reverse: dict[str, SideTerms]  # encoder side -> model-side terms on the model samples
    model_z: torch.Tensor  # (num_model_samples, nz)
    worst_index: torch.Tensor  # held-out positions with the largest forward terms (kl's encoder)
    worst_images: torch.Tensor  # their images
    worst_reconstructions: torch.Tensor  # G(mean r(z|y)) of them
    farthest_index: torch.Tensor  # model samples with the largest reverse terms (rkl's encoder)
    farthest_images: torch.Tensor  # G(z) of them
    ais: AisSummary | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "ais": None if self.ais is None else self.ais.to_json(),
            "divergences": {k: v.to_json() for k, v in self.divergences.items()},
            "encoders": {k: f.describe() for k, f in self.fits.items()},
            "worst_covered_heldout": self.worst_index,
            "farthest_samples": self.farthest_index,
        }


@dataclass
class DivergenceResult:
    params: DivergenceParams
    data: ImageData
    heldout_index: torch.Tensor  # (num_heldout,) positions of the held-out points in the data
    per_sigma: list[SigmaResult]
    encoder: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: Ctrl-C stopped the run: ``per_sigma`` holds the sigmas finished (a prefix of ``params.sigmas``)
    interrupted: bool = False
    #: the latent the encoders and ``model_z`` / encoder means live in: z, or u with z = low + (high - low) Phi(u)
    latent: str = "z"

    @property
    def dim(self) -> int:
        return int(self.data.images[0].numel())

    def to_json(self) -> dict[str, Any]:
        n = int(self.data.images.shape[0])
        imgs = self.data.images
        return {
            "dim": self.dim,
            "num_data": n,
            "num_heldout": int(self.heldout_index.numel()),
            "num_train": n - int(self.heldout_index.numel()),
            "num_model_samples": self.params.num_model_samples,
            "importance": self.params.importance,
            "refine": self.params.refine,
            "pixel_range": [float(imgs.min()), float(imgs.max())],
            "data": self.data.describe(),
            "encoder": self.encoder,
            "latent": self.latent,
            "units": "nats (per_dim: nats per output dimension; bits_per_dim: bits per output dimension)",
            "results": [s.to_json() for s in self.per_sigma],
            "interrupted": self.interrupted,
            "num_sigmas_done": len(self.per_sigma),
            "timings": dict(self.timings),
        }


def _load(gen: LoadedGenerator, params: DivergenceParams) -> ImageData:
    if isinstance(params.data, torch.Tensor):
        if params.data.ndim >= 1 and tuple(params.data.shape[1:]) == tuple(gen.output_shape):
            if not torch.isfinite(params.data).all():
                raise DataError("the data contain NaN or infinite values", param="data")
        return images_from_tensor(params.data, output_shape=gen.output_shape, limit=params.limit)
    return load_images(
        params.data,
        output_shape=gen.output_shape,
        output_range=gen.output_range,
        limit=params.limit,
        resize=params.resize,
    )


def split_heldout(num: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation split: (train positions, held-out positions), each sorted; at least 2 of each."""
    num_heldout = int(round(num * fraction))
    if num_heldout < 2 or num - num_heldout < 2:
        raise DataError(
            f"{num} data points are too few to hold out a fraction {fraction:g}: the split needs at least 2 "
            "training and 2 held-out points",
            param="data",
        )
    perm = torch.randperm(num, generator=seeded_generator(seed))
    return perm[num_heldout:].sort().values, perm[:num_heldout].sort().values


def run_divergence(
    gen: LoadedGenerator, params: DivergenceParams, *, progress: Progress | None = None
) -> DivergenceResult:
    """Fit the two encoders and bound the chosen divergences at every sigma (see the module's docstring).

    Under torchrun every rank fits the encoders (seeded, the same data) and takes rank 0's weights; the
    evaluation (ln p_s, the forward and reverse terms, AIS) is shared out by chunks of ``batch_size`` points
    whose random streams depend on the chunk alone (:func:`chunk_seed`), so every figure is that of one process.
    Ctrl-C (one process) keeps the sigmas finished and drops the one in progress (``interrupted``); with none
    finished it raises KeyboardInterrupt. The memory a run needs is checked before any work
    (:func:`gan_probe.analyses.memory.divergence_memory`).
    """
    params.validate()
    if isinstance(gen.prior, MappedPrior):
        raise GanProbeError(
            f"divergence needs a latent prior with a density, got {gen.prior.describe()}: use --space z",
            param="space",
        )
    # a uniform prior is read through z = low + (high - low) Phi(u), u ~ N(0, I): the same outputs, and an
    # encoder over u whose Gaussian draws never leave the prior's support
    latent = "z"
    if gen.prior.kind == "uniform":
        latent = f"u ~ N(0, I), z = {gen.prior.low:g} + ({gen.prior.high:g} - {gen.prior.low:g}) Phi(u)"
    gen = with_normal_latent(gen)
    data = _load(gen, params)
    x = data.images.reshape(data.images.shape[0], -1).to(torch.float64)
    train_idx, held_idx = split_heldout(x.shape[0], params.heldout, params.seed)
    check_memory(
        divergence_memory(
            gen,
            num_data=x.shape[0],
            num_heldout=held_idx.numel(),
            num_model_samples=params.num_model_samples,
            importance=params.importance,
            batch_size=params.batch_size,
            ais=params.ais > 0,
            num_sigmas=len(params.sigmas),
            chunk=params.chunk,
            encoder_activations=GaussianEncoder.activation_elements(gen.output_shape, gen.nz),
        )
    )
    train, held = x[train_idx], x[held_idx]
    timings: dict[str, float] = {}
    results: list[SigmaResult] = []
    interrupted = False
    try:
        for si, sigma in enumerate(params.sigmas):
            results.append(_measure_sigma(gen, params, data, x, train, held, held_idx, si, sigma, timings, progress))
    except KeyboardInterrupt:
        if distributed.current().distributed or not results:
            raise  # under torchrun an interrupt stops every rank and nothing is written; here nothing was done
        interrupted = True
    description = results[0].fits["data"].encoder.describe()
    return DivergenceResult(params, data, held_idx, results, description, timings, interrupted, latent)


def _measure_sigma(
    gen: LoadedGenerator,
    params: DivergenceParams,
    data: ImageData,
    x: torch.Tensor,
    train: torch.Tensor,
    held: torch.Tensor,
    held_idx: torch.Tensor,
    si: int,
    sigma: float,
    timings: dict[str, float],
    progress: Progress | None,
) -> SigmaResult:
    """Everything at the ``si``-th sigma: the two encoders, the evaluation, AIS, the points shown."""
    seed = params.seed + 1000 * si
    t0 = time.perf_counter()
    with distributed.local():  # every rank fits both encoders in full, then all take rank 0's
        fits = {
            "data": fit_encoder(gen, "data", sigma, params, train=train, val=held, seed=seed + 10, progress=progress)
        }
        t1 = time.perf_counter()
        fits["model"] = fit_encoder(gen, "model", sigma, params, seed=seed + 20, progress=progress)
    _share_encoders(fits)
    t2 = time.perf_counter()
    timings[f"encoders_s_sigma_{sigma:g}"] = t2 - t0
    timings[f"encoder_data_s_sigma_{sigma:g}"] = t1 - t0
    timings[f"encoder_model_s_sigma_{sigma:g}"] = t2 - t1
    t0 = time.perf_counter()
    k, b = params.importance, params.batch_size
    num_held, num_model = held.shape[0], params.num_model_samples
    # this rank's points: ln p_s at both, then the terms of each encoder side at both
    total = 3 * (distributed.local_count(num_held, b) + distributed.local_count(num_model, b))
    with progress_task(progress, f"evaluation (sigma {sigma:g})", total) as advance:
        # evaluation draws, independent of the validation noise
        y_held = _noisy(held, sigma, seeded_generator(seed + 30))
        log_ps_held = spread_data_density_in_chunks(y_held, x, sigma, batch_size=b, chunk=params.chunk, advance=advance)
        z_m, gz_m, y_m = _simulate(gen, num_model, sigma, seeded_generator(seed + 40), batch_size=b)
        log_ps_m = spread_data_density_in_chunks(y_m, x, sigma, batch_size=b, chunk=params.chunk, advance=advance)
        timings[f"log_ps_s_sigma_{sigma:g}"] = time.perf_counter() - t0
        forward, reverse = {}, {}
        for side, fit in fits.items():
            enc: Encoder = fit.encoder
            if params.refine:
                enc = RefinedEncoder(gen, fit.encoder, sigma, steps=params.refine, lr=params.refine_lr, seed=seed + 50)
            forward[side] = data_side_terms(
                gen, enc, y_held, log_ps_held, sigma, num_draws=k, seed=seed + 60, batch_size=b, advance=advance
            )
            reverse[side] = model_side_terms(
                gen, enc, z_m, gz_m, y_m, log_ps_m, sigma, num_draws=k, seed=seed + 70, batch_size=b, advance=advance
            )
    timings[f"evaluation_s_sigma_{sigma:g}"] = time.perf_counter() - t0
    ais = None
    if params.ais:
        t0 = time.perf_counter()
        total = distributed.local_count(num_held, b) + distributed.local_count(num_model, b)
        with progress_task(progress, f"AIS (sigma {sigma:g})", total) as advance:
            ais = _run_ais(gen, fits, params, sigma, y_held, log_ps_held, z_m, y_m, log_ps_m, seed + 80, advance)
        timings[f"ais_s_sigma_{sigma:g}"] = time.perf_counter() - t0
    divs = _estimates(params.divergences, forward, reverse, x.shape[1])
    kl_side = divs["kl"].encoder if "kl" in divs else "data"
    rkl_side = divs["rkl"].encoder if "rkl" in divs else "model"
    num_shown = min(NUM_SHOWN, num_held)
    worst = torch.argsort(forward[kl_side].joint, descending=True, stable=True)[:num_shown]
    far = torch.argsort(reverse[rkl_side].joint, descending=True, stable=True)[: min(NUM_SHOWN, num_model)]
    with torch.no_grad():
        recon = gen(forward[kl_side].means[worst].to(gen.device, gen.dtype)).to("cpu", torch.float32)
    return SigmaResult(
        sigma=float(sigma),
        divergences=divs,
        fits=fits,
        forward=forward,
        reverse=reverse,
        model_z=z_m,
        worst_index=held_idx[worst],
        worst_images=data.images[held_idx[worst]].float(),
        worst_reconstructions=recon,
        farthest_index=far,
        farthest_images=gz_m[far].reshape(-1, *gen.output_shape).float(),
        ais=ais,
    )


def _share_encoders(fits: dict[str, EncoderFit]) -> None:
    """Under torchrun, rank 0's fitted weights on every rank (one exchange). The ranks fit alike from the same
    seed and data, but a GPU's kernels need not be deterministic: this way every chunk is evaluated with one
    encoder, the one rank 0 reports."""
    world = distributed.current()
    if not world.distributed:
        return
    mine = {side: {k: v.to("cpu") for k, v in f.encoder.state_dict().items()} for side, f in fits.items()}
    shared = distributed.exchange(mine if world.is_main else None)[0]
    assert shared is not None
    for side, f in fits.items():
        f.encoder.load_state_dict(shared[side])


def _run_ais(
    gen: LoadedGenerator,
    fits: dict[str, EncoderFit],
    params: DivergenceParams,
    sigma: float,
    y_held: torch.Tensor,
    log_ps_held: torch.Tensor,
    z_m: torch.Tensor,
    y_m: torch.Tensor,
    log_ps_m: torch.Tensor,
    seed: int,
    advance: Advance | None = None,
) -> AisSummary:
    """AIS in batches: forward on the held-out points from the data-side encoder; forward and reverse (BDMC)
    on the model samples from the model-side encoder; step sizes from a pilot per batch. The batches are shared
    out over the ranks under torchrun, each with its own streams (:func:`chunk_seed`)."""
    steps, leapfrog = params.ais, params.ais_leapfrog

    def chain(side: str, y: torch.Tensor, sl: slice, stream: int, reverse_from: AisRun | None = None) -> AisRun:
        """AIS over the batch ``y[sl]`` from ``side``'s encoder: forward with a step size from a pilot (the chunk's
        streams ``stream`` and ``stream + 1``), or with ``reverse_from``'s step size the reverse (BDMC) chain
        from the model samples' true z (stream ``stream + 2``)."""
        enc = fits[side].encoder
        if reverse_from is None:
            pilot_seed = chunk_seed(seed, sl.start, stream)
            eps = pilot_step_size(gen, enc, y[sl], sigma, steps=params.ais_pilot, seed=pilot_seed)
        else:
            eps = reverse_from.step_size
        return ais_log_q(
            gen,
            enc,
            y[sl],
            sigma,
            steps=steps,
            num_leapfrog=leapfrog,
            seed=chunk_seed(seed, sl.start, stream + (1 if reverse_from is None else 2)),
            step_size=eps,
            z_posterior=None if reverse_from is None else z_m[sl],
        )

    def held_chunk(sl: slice) -> tuple[torch.Tensor, float]:
        run = chain("data", y_held, sl, 0)
        return log_ps_held[sl] - run.log_weights, run.acceptance

    def model_chunk(sl: slice) -> tuple[torch.Tensor, torch.Tensor, float]:
        fwd = chain("model", y_m, sl, 2)
        rev = chain("model", y_m, sl, 2, reverse_from=fwd)
        return fwd.log_weights, rev.log_weights, fwd.acceptance

    b = params.batch_size
    held, _ = distributed.map_batches(y_held.shape[0], b, held_chunk, advance=advance, main_work=True)
    model, _ = distributed.map_batches(y_m.shape[0], b, model_chunk, advance=advance, main_work=True)
    acc = [a for _, a in held] + [a for *_, a in model]
    return AisSummary(
        params.ais,
        params.ais_leapfrog,
        torch.cat([kl for kl, _ in held]),
        torch.cat([lower for lower, _, _ in model]),
        torch.cat([upper for _, upper, _ in model]),
        log_ps_m,
        sum(acc) / len(acc),
    )


def _estimates(
    names: tuple[str, ...], forward: dict[str, SideTerms], reverse: dict[str, SideTerms], dim: int
) -> dict[str, DivergenceEstimate]:
    """Each divergence bounded with both encoders; the lower bound is reported, with the side that gave it."""
    out: dict[str, DivergenceEstimate] = {}
    for name in names:
        candidates = []
        for side in forward:
            f, r = forward[side], reverse[side]
            if name == "kl":
                b, se = _mean_se(f.joint)
                e, ese = _mean_se(f.iw)
            elif name == "rkl":
                b, se = _mean_se(r.joint)
                e, ese = _mean_se(r.iw)
            else:
                bf, sf = _mean_se(f.js)
                br, sr = _mean_se(r.js)
                b, se = 0.5 * (bf + br), 0.5 * math.hypot(sf, sr)
                e, ese = math.nan, math.nan
            candidates.append((b, se, e, ese, side))
        b, se, e, ese, side = min(candidates, key=lambda c: c[0])
        if name == "kl":
            # the importance-weighted bound with the encoder that gives the lowest one
            e, ese = min(((c[2], c[3]) for c in candidates), key=lambda c: c[0])
        out[name] = DivergenceEstimate(
            name, b, se, None if name == "js" else e, None if name == "js" else ese, side, dim
        )
    return out


__all__ = [
    "DIVERGENCES",
    "AisRun",
    "AisSummary",
    "DivergenceEstimate",
    "DivergenceParams",
    "DivergenceResult",
    "EncoderFit",
    "GaussianEncoder",
    "RefinedEncoder",
    "SideTerms",
    "SigmaResult",
    "ais_log_q",
    "chunk_seed",
    "pilot_step_size",
    "prior_encoder",
    "sigmoid_schedule",
    "data_side_terms",
    "elbo_terms",
    "fit_encoder",
    "log_diag_normal",
    "log_normal",
    "log_spread_data_density",
    "model_side_terms",
    "run_divergence",
    "split_heldout",
    "spread_data_density_in_chunks",
]
