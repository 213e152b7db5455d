"""``gan-probe ascend``: gradient ascent on the implicit log-likelihood in latent space.

Ramesh & LeCun (2018), section 4 and Figure 4: maximise

    ln Q(G(z)) = ln P_Z(z) - 1/2 ln det M(z)

over z from K starting latents. The gradient of 1/2 ln det M comes from the
exact QR surrogate (``method="exact"``, docs/design.md §2.3) or from a
stochastic estimator's spectral backpropagation. A uniform prior's box is kept
by projection after every step. Each step records ln Q (exact whenever nz <=
AUTO_EXACT_MAX_NZ), lambda_min, lambda_max and cond(M). For ReLU generators J
is piecewise constant in z, so the gradient of ln det M comes only from the
smooth parts (tanh output, BatchNorm scale is constant in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gan_probe import distributed
from gan_probe.analyses.common import (
    Latents,
    Progress,
    batches,
    check_positive,
    count_latents,
    draw_or_load_latents,
    finite_stats,
    generate,
    given_latents,
    probe_streams,
    progress_task,
    require_density,
    resolve_geometry,
)
from gan_probe.analyses.memory import ascend_memory, check_memory
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.precision import auto_half_logdet
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.logdet import AUTO_EXACT_MAX_NZ, HalfLogdet
from gan_probe.spectral.plan import METHODS, RunPlan

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class AscendParams:
    num: int = 4
    latents: Latents = None
    method: str = "exact"
    steps: int = 50
    lr: float = 0.05
    optimizer: str = "adam"
    frames: int = 8
    seed: int = 0
    estimators: Mapping[str, Any] | None = None
    geometry: str = "auto"
    batch_size: int = 16

    def validate(self) -> None:
        check_positive("the batch size", self.batch_size, "batch_size")
        if self.steps < 1:
            raise GanProbeError(f"the number of ascent steps must be at least 1, got {self.steps}", param="steps")
        check_positive("the learning rate", self.lr, "lr")
        if self.optimizer not in OPTIMIZERS:
            raise GanProbeError(
                f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}", param="optimizer"
            )
        if self.frames < 2:
            raise GanProbeError(f"the strips need at least 2 frames, got {self.frames}", param="frames")
        if self.method not in METHODS:
            raise GanProbeError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}", param="method")


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
    num_promoted: int | None = None  # (step, latent) pairs recomputed in float64 (--dtype auto, exact method)
    plan: RunPlan | None = None  # the run's plan (method, chunk)

    @property
    def steps_done(self) -> int:
        return self.z.shape[0] - 1

    @property
    def num_singular(self) -> int:
        """Latents whose J is singular at the start (ln Q undefined: they are not moved)."""
        return int((~torch.isfinite(self.half_logdet[0])).sum())

    def to_json(self) -> dict[str, Any]:
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
        choice = self.plan.choice_json() if self.plan is not None else None
        return {
            "method": self.method,
            "steps_done": self.steps_done,
            "interrupted": self.interrupted,
            "loglik_recorded_exactly": self.exact_recorded,
            "num_singular_start": self.num_singular,
            "start": {"loglik": finite_stats(self.loglik[start]), "condition": finite_stats(self.condition[start])},
            "end": {"loglik": finite_stats(self.loglik[end]), "condition": finite_stats(self.condition[end])},
            "loglik_gain": finite_stats(self.loglik[end] - self.loglik[start]),
            **({} if self.num_promoted is None else {"num_promoted": self.num_promoted}),
            **({} if choice is None else {"method_choice": choice}),
            "latents": per_latent,
            "trajectory": {"loglik": self.loglik.T, "condition": self.condition.T},
        }


def _record(res: HalfLogdet, log_base: torch.Tensor) -> list[torch.Tensor]:
    """[half_logdet, lambda_min, lambda_max, condition, log base] (K,) each: exact when it was computed."""
    half = res.exact_value if res.exact_value is not None else res.value.detach()
    st = res.stats
    values = (half, st["lambda_min"], st["lambda_max"], st["condition"], log_base.detach())
    return [x.cpu().to(torch.float64) for x in values]


def run_ascend(gen: LoadedGenerator, params: AscendParams, *, progress: Progress | None = None) -> AscendResult:
    """Ascend ln Q from K latents; KeyboardInterrupt stops the loop and keeps the steps done.

    The latents are processed in chunks of ``batch_size``, each with its own
    optimizer, one step of every chunk per step: the objective is a sum over
    latents and Adam and SGD act elementwise, so the chunks change nothing but
    the memory (probe streams are per latent index too). A latent whose J is
    singular (ln Q = -inf, e.g. a generator with fewer outputs than latents) has
    no gradient and stays where it is. A latent read in the sphere geometry (the
    generator ignores |z|) moves on its sphere: the gradient is projected on the
    tangent plane and |z| is kept. Interrupted before the first record, it
    raises KeyboardInterrupt (nothing is done).
    """
    params.validate()
    require_density(gen, "ascend")
    geometry = resolve_geometry(gen, params.geometry)
    given = given_latents(gen, params.latents)
    num = count_latents(given, params.num)
    plan = plan_run(
        gen, batch=min(params.batch_size, num), method=params.method, estimators=params.estimators, grad=True
    )
    method = plan.method
    exact_recorded = method == "exact" or gen.nz <= AUTO_EXACT_MAX_NZ
    check_memory(
        ascend_memory(gen, plan, num=num, steps=params.steps, frames=params.frames, estimators=params.estimators)
    )
    z0 = given if given is not None else draw_or_load_latents(gen, num=num, latents=None, seed=params.seed)
    chunks = list(batches(num, params.batch_size))
    zs = [gen.prior.project(z0[sl].clone()).requires_grad_(True) for sl in chunks]
    make = torch.optim.Adam if params.optimizer == "adam" else torch.optim.SGD
    opts = [make([z], lr=params.lr) for z in zs]
    trail = [torch.cat([z.detach() for z in zs])]
    records: list[list[torch.Tensor]] = []
    interrupted = False
    promoted = [0]
    # under torchrun each rank steps its own chunks (i mod world size) and the records are gathered every step
    mine = distributed.owned(len(chunks))
    distributed.record_idle(num, params.batch_size)
    with progress_task(progress, "likelihood ascent", params.steps) as advance:
        try:
            for step in range(params.steps + 1):
                local = {
                    i: (
                        _ascend_chunk(
                            gen, params, plan, exact_recorded, geometry, zs[i], opts[i], chunks[i], step,
                            promoted, last=step == params.steps,
                        ),
                        zs[i].detach().clone(),
                    )
                    for i in mine
                }  # fmt: skip
                everything = distributed.gather_chunks(local, len(chunks))
                records.append([torch.cat(c) for c in zip(*(rec for rec, _ in everything))])
                if step == params.steps:
                    break
                trail.append(torch.cat([z for _, z in everything]))
                advance(1)
        except KeyboardInterrupt:
            if distributed.current().distributed:
                raise  # under torchrun an interrupt stops every rank and nothing is written
            interrupted = True
    promoted[0] = sum(distributed.exchange(promoted[0]))
    n = min(len(trail), len(records))
    if n == 0:
        raise KeyboardInterrupt  # interrupted before the starting point was recorded: nothing done
    trail, records = trail[:n], records[:n]
    half_t, lmin, lmax, cond, base_t = (torch.stack(c) for c in zip(*records))
    zs_t = torch.stack(trail)
    loglik = base_t - half_t
    result = AscendResult(params, method, zs_t, loglik, half_t, lmin, lmax, cond, exact_recorded, interrupted)
    result.plan = plan
    result.num_promoted = promoted[0] if gen.auto_float64 and method == "exact" else None
    _add_frames(gen, result)
    return result


def _ascend_chunk(
    gen: LoadedGenerator,
    params: AscendParams,
    plan: RunPlan,
    exact_recorded: bool,
    geometry: str,
    z: torch.Tensor,
    opt: torch.optim.Optimizer,
    sl: slice,
    step: int,
    promoted: list[int],
    *,
    last: bool,
) -> list[torch.Tensor]:
    """Record one chunk's spectrum at its current latents and (unless ``last``) take one step on them."""
    res, up = auto_half_logdet(
        gen,
        z,
        plan,
        estimators=params.estimators,
        generator=probe_streams(params.seed + 7 * step, sl.start, sl.stop),
        grad=True,
        check=plan.method != "exact" and exact_recorded,
        geometry=geometry,
    )
    promoted[0] += int(up.sum())
    sphere = res.sphere
    base = torch.where(sphere, res.log_base, gen.prior.log_prob(z))
    rec = _record(res, base)
    if last:
        return rec
    objective = base - res.value.to(torch.float64).cpu()
    # a singular J (known from the exact spectrum when it was taken) has no likelihood gradient
    usable = torch.isfinite(objective.detach()) & ~res.stats["singular"].cpu()
    opt.zero_grad()
    if bool(usable.any()):
        (-objective[usable].sum()).backward()
    if z.grad is None:
        z.grad = torch.zeros_like(z)  # a step with no gradient, as this chunk's latents take in a larger chunk
    # an estimator's gradient through a rank-deficient Krylov space can be NaN: such a latent is not moved
    z.grad.copy_(torch.where(torch.isfinite(z.grad).all(-1, keepdim=True), z.grad, torch.zeros_like(z.grad)))
    radius = z.detach().norm(dim=-1, keepdim=True)
    if bool(sphere.any()):
        u = z.detach() / radius.clamp_min(1e-300)
        tangent = z.grad - (z.grad * u).sum(-1, keepdim=True) * u
        z.grad.copy_(torch.where(sphere[:, None], tangent, z.grad))
    opt.step()
    with torch.no_grad():
        if bool(sphere.any()):
            rescaled = z * (radius / z.norm(dim=-1, keepdim=True))
            z.copy_(torch.where(sphere[:, None], rescaled, z))
        z.copy_(gen.prior.project(z))
    return rec


def _add_frames(gen: LoadedGenerator, result: AscendResult) -> None:
    """F frames per latent, evenly spaced over the steps done, laid out one row per latent."""
    steps = result.steps_done
    count = min(result.params.frames, steps + 1)
    idx = sorted(set(np.linspace(0, steps, count).round().astype(int).tolist()))
    picked = result.z[idx].transpose(0, 1).reshape(-1, result.z.shape[-1])  # (K * F, nz), latent-major
    result.frames = generate(gen, picked, 64)
    result.frame_steps = idx


__all__ = ["OPTIMIZERS", "AscendParams", "AscendResult", "run_ascend"]
