"""``gan-probe ascend``: gradient ascent on the implicit log-likelihood in latent space.

Ramesh & LeCun (2018), section 4 and Figure 4: maximise

    ln Q(G(z)) = ln P_Z(z) - 1/2 ln det M(z)

over z from K starting latents. The gradient of 1/2 ln det M comes from the
exact QR surrogate (``method="exact"``, DESIGN.md section 1) or from a
stochastic estimator's spectral backpropagation. A uniform prior's box is kept
by projection after every step. Each step records ln Q (exact whenever nz <=
AUTO_EXACT_MAX_NZ), lambda_min, lambda_max and cond(M). For ReLU generators J
is piecewise constant in z, so the gradient of ln det M comes only from the
smooth parts (tanh output, BatchNorm scale is constant in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gan_probe.analyses.common import (
    Progress,
    check_positive,
    draw_or_load_latents,
    finite_stats,
    generate,
    progress_task,
)
from gan_probe.analyses.loglik import AUTO_EXACT_MAX_NZ, latent_generators, resolve_method
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.report.files import OutputDir
from gan_probe.spectral.estimators import EstimatorParams, estimate_half_logdet
from gan_probe.spectral.exact import logdet_from_jacobian, spectrum_from_jacobian
from gan_probe.spectral.jacobian import jacobian

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class AscendParams:
    num: int = 4
    latents: str | None = None
    method: str = "exact"
    steps: int = 50
    lr: float = 0.05
    optimizer: str = "adam"
    frames: int = 8
    seed: int = 0
    estimator: EstimatorParams = EstimatorParams()

    def validate(self) -> None:
        if self.steps < 1:
            raise GanProbeError(f"--steps must be at least 1, got {self.steps}")
        check_positive("the learning rate", self.lr, "--lr")
        if self.optimizer not in OPTIMIZERS:
            raise GanProbeError(f"unknown optimizer {self.optimizer!r}: use --optimizer {'|'.join(OPTIMIZERS)}")
        if self.frames < 2:
            raise GanProbeError(f"--frames must be at least 2, got {self.frames}")


@dataclass
class AscendResult:
    """Trajectories: ``z`` (S+1, K, nz); ``loglik``, ``half_logdet``, ``lambda_min``, ``lambda_max``,
    ``condition`` (S+1, K) float64, row s after s steps (row 0: the start)."""

    params: AscendParams
    method: str
    z: torch.Tensor
    loglik: torch.Tensor
    half_logdet: torch.Tensor
    lambda_min: torch.Tensor
    lambda_max: torch.Tensor
    condition: torch.Tensor
    exact_recorded: bool
    interrupted: bool = False
    frames: torch.Tensor | None = None  # (K * F, C, H, W)
    frame_steps: list[int] = field(default_factory=list)

    @property
    def steps_done(self) -> int:
        return self.z.shape[0] - 1

    def results(self) -> dict:
        start, end = 0, self.steps_done
        per_latent = [
            {
                "index": k,
                "loglik_start": float(self.loglik[start, k]),
                "loglik_end": float(self.loglik[end, k]),
                "condition_start": float(self.condition[start, k]),
                "condition_end": float(self.condition[end, k]),
                "lambda_min_end": float(self.lambda_min[end, k]),
                "lambda_max_end": float(self.lambda_max[end, k]),
            }
            for k in range(self.z.shape[1])
        ]
        return {
            "method": self.method,
            "steps_done": self.steps_done,
            "interrupted": self.interrupted,
            "loglik_recorded_exactly": self.exact_recorded,
            "start": {"loglik": finite_stats(self.loglik[start]), "condition": finite_stats(self.condition[start])},
            "end": {"loglik": finite_stats(self.loglik[end]), "condition": finite_stats(self.condition[end])},
            "loglik_gain": finite_stats(self.loglik[end] - self.loglik[start]),
            "latents": per_latent,
            "trajectory": {"loglik": self.loglik.T, "condition": self.condition.T},
        }


def _record(gen: LoadedGenerator, zb: torch.Tensor, jac: torch.Tensor | None) -> list[torch.Tensor]:
    """[half_logdet, lambda_min, lambda_max, condition] (K,) each from the exact spectrum."""
    with torch.no_grad():
        if jac is None:
            jac = jacobian(gen.flat, zb)
        spec = spectrum_from_jacobian(jac.detach())
    return [x.cpu().to(torch.float64) for x in (spec.half_logdet, spec.lambda_min, spec.lambda_max, spec.condition)]


def run_ascend(gen: LoadedGenerator, params: AscendParams, *, progress: Progress | None = None) -> AscendResult:
    """Ascend ln Q from K latents; KeyboardInterrupt stops the loop and keeps the steps done."""
    params.validate()
    method = resolve_method(params.method, gen.nz, params.estimator)
    if method != "exact":
        params.estimator.validate()
    exact_recorded = method == "exact" or gen.nz <= AUTO_EXACT_MAX_NZ
    z0 = draw_or_load_latents(gen, num=params.num, latents=params.latents, seed=params.seed)
    z = gen.prior.project(z0.clone()).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=params.lr) if params.optimizer == "adam" else torch.optim.SGD([z], lr=params.lr)
    trail, records = [z.detach().clone()], []
    interrupted = False
    with progress_task(progress, "likelihood ascent", params.steps) as advance:
        try:
            for step in range(params.steps + 1):
                zb = z.to(gen.device, gen.dtype)
                if method == "exact":
                    jac = jacobian(gen.flat, zb)
                    half = 0.5 * logdet_from_jacobian(jac)
                    rec = _record(gen, zb, jac)
                else:
                    est = estimate_half_logdet(
                        gen.flat,
                        zb,
                        method,
                        params.estimator,
                        latent_generators(params.seed + 7 * step, 0, zb.shape[0]),
                    )
                    half = est.half_logdet
                    if exact_recorded:
                        rec = _record(gen, zb.detach(), None)
                    else:
                        nan = torch.full_like(half.detach().cpu(), float("nan"))
                        rec = [half.detach().cpu(), nan, nan, nan]
                records.append(rec)
                if step == params.steps:
                    break
                objective = gen.prior.log_prob(z) - half.to(torch.float64).cpu()
                loss = -objective[torch.isfinite(objective)].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    z.copy_(gen.prior.project(z))
                trail.append(z.detach().clone())
                advance(1)
        except KeyboardInterrupt:
            interrupted = True
    n = min(len(trail), len(records))
    trail, records = trail[:n], records[:n]
    half, lmin, lmax, cond = (torch.stack(c) for c in zip(*records))
    zs = torch.stack(trail)
    loglik = gen.prior.log_prob(zs) - half
    result = AscendResult(params, method, zs, loglik, half, lmin, lmax, cond, exact_recorded, interrupted)
    _add_frames(gen, result)
    return result


def _add_frames(gen: LoadedGenerator, result: AscendResult) -> None:
    """F frames per latent, evenly spaced over the steps done, laid out one row per latent."""
    steps = result.steps_done
    count = min(result.params.frames, steps + 1)
    idx = sorted(set(np.linspace(0, steps, count).round().astype(int).tolist()))
    picked = result.z[idx].transpose(0, 1).reshape(-1, result.z.shape[-1])  # (K * F, nz), latent-major
    result.frames = generate(gen, picked, 64)
    result.frame_steps = idx


def write_ascend_outputs(result: AscendResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """strips.png (a row per latent), strip_KKK.png, ascent.png, latents.npz (key z), trajectories.npz."""
    from gan_probe.report.images import save_grid
    from gan_probe.report.plots import plot_ascent

    ncol = len(result.frame_steps)
    save_grid(out.path("strips.png"), result.frames, value_range=gen.output_range, ncol=ncol, scale=2)
    for k in range(result.z.shape[1]):
        save_grid(
            out.path(f"strip_{k:03d}.png"),
            result.frames[k * ncol : (k + 1) * ncol],
            value_range=gen.output_range,
            ncol=ncol,
            scale=2,
        )
    plot_ascent(
        out.path("ascent.png"),
        result.loglik.numpy(),
        result.condition.numpy(),
        title=f"likelihood ascent ({result.method} gradient, {result.params.optimizer}, lr {result.params.lr:g})",
    )
    np.savez_compressed(out.path("latents.npz"), z=result.z[-1].numpy())
    np.savez_compressed(
        out.path("trajectories.npz"),
        z=result.z.numpy(),
        loglik=result.loglik.numpy(),
        half_logdet=result.half_logdet.numpy(),
        lambda_min=result.lambda_min.numpy(),
        lambda_max=result.lambda_max.numpy(),
        condition=result.condition.numpy(),
        frame_steps=np.asarray(result.frame_steps),
    )


__all__ = ["OPTIMIZERS", "AscendParams", "AscendResult", "run_ascend", "write_ascend_outputs"]
