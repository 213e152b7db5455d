"""``gan-probe eigvecs``: eigenvectors of M = J^T J as local explanatory factors.

Ramesh & LeCun (2018), section 5 and Figure 5: at T trial latents (12 in the
paper) take the exact eigen-decomposition M(z) = sum_i lambda_i v_i v_i^T
(:mod:`gan_probe.spectral.eigen`, float64, signs fixed) and compare
G(z + alpha v_i) with G(z + alpha r) for random unit directions r at the same
step alpha. Since |G(z + t v) - G(z)| ~ |t| sqrt(v^T M v) for small t, the top
eigenvectors are the directions of fastest change; a random unit direction
changes G by about sqrt(tr M / nz). Step size and the uniform box:
:mod:`gan_probe.analyses.perturbation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_probe import distributed
from gan_probe.analyses.common import (
    Latents,
    Progress,
    check_positive,
    count_latents,
    draw_or_load_latents,
    generate,
    given_latents,
    progress_task,
)
from gan_probe.analyses.memory import check_memory, eigvecs_memory
from gan_probe.analyses.perturbation import perturb, random_unit_directions, resolve_step
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.precision import auto_spectrum
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.eigen import spectrum_concentration


@dataclass(frozen=True)
class EigvecsParams:
    """``num`` trial latents (or ``latents``); ``top`` eigenvectors shown (None: min(8, nz));
    ``step`` alpha (None: :func:`default_step`); ``traversal_steps`` values of t in [-alpha, alpha]."""

    num: int = 12
    latents: Latents = None
    top: int | None = None
    step: float | None = None
    traversal_steps: int = 9
    project: bool = False
    batch_size: int = 16
    chunk_size: int | None = None
    seed: int = 0


@dataclass
class EigvecsResult:
    params: EigvecsParams
    top: int
    step: float
    z: torch.Tensor  # (T, nz) float64
    eigenvalues: torch.Tensor  # (T, nz) float64, descending
    eigenvectors: torch.Tensor  # (T, nz, nz) float64, eigenvectors[t, :, i] = v_i(z_t)
    condition: torch.Tensor  # (T,)
    singular: torch.Tensor  # (T,) bool
    precision_warning: torch.Tensor  # (T,) bool
    concentration: dict[str, torch.Tensor]  # each (T,)
    random_directions: torch.Tensor  # (T, top, nz) unit vectors
    traversal_t: torch.Tensor  # (traversal_steps,)
    originals: torch.Tensor  # (T, C, H, W)
    random_images: torch.Tensor  # (T, top, C, H, W): G(z + alpha r_i)
    eigen_images: torch.Tensor  # (T, top, C, H, W): G(z + alpha v_i)
    traversal_images: torch.Tensor  # (T, top, steps, C, H, W): G(z + t v_i)
    change_eigen: torch.Tensor  # (T, top): |G(z + alpha v_i) - G(z)|
    change_random: torch.Tensor  # (T, top): |G(z + alpha r_i) - G(z)|
    outside_box: int | None
    num_perturbed: int
    timings: dict[str, float] = field(default_factory=dict)
    promoted: torch.Tensor | None = None  # (T,) bool: recomputed in float64 (--dtype auto); None without auto

    def per_trial(self) -> list[dict[str, Any]]:
        rows = []
        for t in range(self.z.shape[0]):
            rows.append(
                {
                    "index": t,
                    "eigenvalues": self.eigenvalues[t],
                    "lambda_max": float(self.eigenvalues[t, 0]),
                    "lambda_min": float(self.eigenvalues[t, -1]),
                    "condition": float(self.condition[t]),
                    "singular": bool(self.singular[t]),
                    "precision_warning": bool(self.precision_warning[t]),
                    **{k: float(v[t]) for k, v in self.concentration.items()},
                    "change_eigen": self.change_eigen[t],
                    "change_random": self.change_random[t],
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        def median(x: torch.Tensor) -> float | None:
            finite = x[torch.isfinite(x)]
            return float(finite.median()) if finite.numel() else None

        return {
            "lambda_max_median": median(self.eigenvalues[:, 0]),
            "condition_median": median(self.condition),
            **{f"{k}_median": median(v) for k, v in self.concentration.items()},
            "change_ratio_top1_median": median(self.change_eigen[:, 0] / self.change_random.mean(1)),
            "num_singular": int(self.singular.sum()),
            "num_precision_warning": int(self.precision_warning.sum()),
            **({} if self.promoted is None else {"num_promoted": int(self.promoted.sum())}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "num_trials": int(self.z.shape[0]),
            "nz": int(self.z.shape[1]),
            "top": self.top,
            "step": self.step,
            "traversal_t": self.traversal_t,
            "project": self.params.project,
            "outside_box": None
            if self.outside_box is None
            else {"num_outside": self.outside_box, "num_perturbed": self.num_perturbed},
            "summary": self.summary(),
            "trials": self.per_trial(),
            "timings": self.timings,
        }


def run_eigvecs(gen: LoadedGenerator, params: EigvecsParams, *, progress: Progress | None = None) -> EigvecsResult:
    """Eigen-decompose M at the trial latents and render the perturbations along eigenvectors and at random."""
    check_positive("the batch size", params.batch_size, "batch_size")
    if params.chunk_size is not None and params.chunk_size < 1:
        raise GanProbeError(f"the chunk size must be at least 1, got {params.chunk_size}", param="chunk_size")
    nz = gen.nz
    top = min(8, nz) if params.top is None else params.top
    if top < 1:
        raise GanProbeError(f"the number of eigenvectors shown must be at least 1, got {top}", param="top")
    if top > nz:
        raise GanProbeError(f"{top} eigenvectors shown exceed the latent size nz = {nz}; use {nz} or less", param="top")
    if params.traversal_steps < 2:
        raise GanProbeError(
            f"a traversal needs at least 2 steps, got {params.traversal_steps}", param="traversal_steps"
        )
    step = resolve_step(gen.prior, params.step)
    given = given_latents(gen, params.latents)
    num = count_latents(given, params.num)
    plan = plan_run(gen, batch=min(params.batch_size, num), chunk_size=params.chunk_size, vectors=True)
    check_memory(
        eigvecs_memory(
            gen, plan, num=num, top=top, traversal_steps=params.traversal_steps, batch_size=params.batch_size
        )
    )
    z = given if given is not None else draw_or_load_latents(gen, num=num, latents=None, seed=params.seed)

    t0 = time.perf_counter()

    def one(sl: slice) -> list[torch.Tensor]:
        spec, up = auto_spectrum(gen, z[sl], plan, eigen=True)
        assert spec.eigenvectors is not None
        cols = [spec.eigenvalues, spec.eigenvectors, spec.condition, spec.singular, spec.precision_warning, up]
        return [c.cpu() for c in cols]

    # the batches are shared out over the ranks under torchrun, and gathered back in order
    with progress_task(progress, "eigenvectors", distributed.local_count(num, params.batch_size)) as advance:
        parts, _ = distributed.map_batches(num, params.batch_size, one, advance=advance, main_work=True)
    lam, vec, cond, singular, pwarn, promoted = (torch.cat(c) for c in zip(*parts, strict=True))
    eigen_s = time.perf_counter() - t0

    rand = random_unit_directions(num, top, nz, seed=params.seed + 1)
    v_top = vec[:, :, :top].transpose(1, 2)  # (T, top, nz) rows v_1..v_top
    ts = torch.linspace(-step, step, params.traversal_steps, dtype=torch.float64)
    pert_random = z[:, None] + step * rand
    pert_eigen = z[:, None] + step * v_top
    pert_trav = z[:, None, None] + ts[None, None, :, None] * v_top[:, :, None]  # (T, top, steps, nz)
    flat = torch.cat([pert_random.reshape(-1, nz), pert_eigen.reshape(-1, nz), pert_trav.reshape(-1, nz)])
    flat, outside = perturb(gen.prior, flat, project=params.project)

    t0 = time.perf_counter()
    originals = generate(gen, z, params.batch_size)
    images = generate(gen, flat, max(params.batch_size, 64))
    render_s = time.perf_counter() - t0
    shape = originals.shape[1:]
    n_r = num * top
    random_images = images[:n_r].reshape(num, top, *shape)
    eigen_images = images[n_r : 2 * n_r].reshape(num, top, *shape)
    traversal_images = images[2 * n_r :].reshape(num, top, params.traversal_steps, *shape)

    def change(imgs: torch.Tensor) -> torch.Tensor:
        return (imgs.double() - originals.double()[:, None]).flatten(2).norm(dim=-1)

    return EigvecsResult(
        params=params,
        top=top,
        step=step,
        z=z,
        eigenvalues=lam,
        eigenvectors=vec,
        condition=cond,
        singular=singular,
        precision_warning=pwarn,
        concentration=spectrum_concentration(lam, top),
        random_directions=rand,
        traversal_t=ts,
        originals=originals,
        random_images=random_images,
        eigen_images=eigen_images,
        traversal_images=traversal_images,
        change_eigen=change(eigen_images),
        change_random=change(random_images),
        outside_box=outside if gen.prior.kind == "uniform" else None,
        num_perturbed=int(flat.shape[0]),
        timings={"eigen_s": eigen_s, "render_s": render_s},
        promoted=promoted if gen.auto_float64 else None,
    )


__all__ = ["EigvecsParams", "EigvecsResult", "run_eigvecs"]
