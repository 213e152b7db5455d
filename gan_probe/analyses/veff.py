"""``gan-probe veff``: the effective dimensionality of latent space.

Ramesh & LeCun (2018), section 5. For latents z_1..z_M, K random directions
eps_k and step alpha:

    delta(j, 0) = mean_k |G(z_j + alpha eps_k) - G(z_j)|_2
    delta(j, i) = |G(z_j + alpha v_i(z_j)) - G(z_j)|_2 / delta(j, 0)
    v_eff(tau)  = (1/M) sum_j #{i : delta(j, i) > tau}

with v_i(z_j) the unit eigenvectors of M(z_j) = J^T J (exact, float64). The
paper writes eps ~ N(0, I); its norm is about sqrt(nz) while |v_i| = 1, so with
that reading a linear generator has v_eff(1) = 0 whatever its spectrum.
``directions="unit"`` (the default) draws eps uniformly on the unit sphere, so
that eigen- and random perturbations have the same length; ``"normal"`` is the
literal reading. For a linear G(z) = A z and unit directions,
delta(j, 0) * delta(j, i) = alpha sqrt(lambda_i) exactly (docs/design.md §6.3).

All M (nz + K) perturbed latents are generated in chunks of at most
``forward_budget`` rows, each chunk reduced to its distances before the next
is generated; the outer loop is over batches of latents.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    progress_task,
    seeded_generator,
)
from gan_probe.analyses.memory import check_memory, veff_memory
from gan_probe.analyses.perturbation import perturb, random_unit_directions, resolve_step
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.precision import auto_spectrum
from gan_probe.errors import GanProbeError
from gan_probe.limits import check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.jacobian import DEFAULT_FORWARD_BUDGET

DIRECTIONS = ("unit", "normal")


@dataclass(frozen=True)
class VeffParams:
    """``num`` latents M (or ``latents``), ``num_directions`` K, ``step`` alpha (None: the prior's default,
    as for eigvecs), thresholds ``taus`` (the first is the headline and the gated figure)."""

    num: int = 64
    latents: Latents = None
    num_directions: int = 32
    step: float | None = None
    taus: tuple[float, ...] = (1.0,)
    directions: str = "unit"
    project: bool = False
    curve_points: int = 201
    batch_size: int = 16
    chunk_size: int | None = None
    forward_budget: int = DEFAULT_FORWARD_BUDGET
    seed: int = 0


def check_taus(taus: Sequence[float]) -> tuple[float, ...]:
    if not taus:
        raise GanProbeError("give at least one threshold tau", param="taus")
    for tau in taus:
        if not math.isfinite(tau) or tau < 0:
            raise GanProbeError(f"tau must be a finite number >= 0, got {tau}", param="taus")
    return tuple(float(t) for t in taus)


def count_above(delta: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """(M, nz) ratios, (P,) thresholds -> (M, P) counts #{i : delta(j, i) > tau_p}."""
    return (delta[:, :, None] > taus[None, None, :]).sum(1)


@dataclass
class VeffResult:
    params: VeffParams
    step: float
    taus: tuple[float, ...]
    z: torch.Tensor  # (M, nz)
    eigenvalues: torch.Tensor  # (M, nz)
    delta0: torch.Tensor  # (M,) mean random-direction change
    delta: torch.Tensor  # (M, nz) relative eigen-direction change delta(j, i)
    counts: torch.Tensor  # (M, len(taus))
    curve_tau: torch.Tensor  # (P,)
    curve_counts: torch.Tensor  # (M, P)
    outside_box: int | None
    num_perturbed: int
    timings: dict[str, float] = field(default_factory=dict)
    num_promoted: int | None = None  # latents whose eigenvectors were recomputed in float64 (--dtype auto)

    @property
    def veff(self) -> torch.Tensor:
        """(len(taus),) v_eff at each requested tau."""
        return self.counts.double().mean(0)

    @property
    def num_flat(self) -> int:
        """Latents where no random perturbation changed G at all (delta(j, 0) = 0; their counts are 0)."""
        return int((self.delta0 == 0).sum())

    def to_json(self) -> dict[str, Any]:
        c = self.counts.double()
        return {
            "veff": float(self.veff[0]),
            "tau": self.taus[0],
            "by_tau": [
                {
                    "tau": tau,
                    "veff": float(self.veff[p]),
                    "std": float(c[:, p].std(unbiased=False)),
                    "min": int(self.counts[:, p].min()),
                    "max": int(self.counts[:, p].max()),
                }
                for p, tau in enumerate(self.taus)
            ],
            "nz": int(self.z.shape[1]),
            "num_latents": int(self.z.shape[0]),
            "num_directions": self.params.num_directions,
            "directions": self.params.directions,
            "step": self.step,
            "curve": {"tau": self.curve_tau, "veff": self.curve_counts.double().mean(0)},
            "delta0": finite_stats(self.delta0),
            "delta1_median": finite_stats(self.delta[:, 0])["median"],
            "num_flat": self.num_flat,
            **({} if self.num_promoted is None else {"num_promoted": self.num_promoted}),
            "outside_box": None
            if self.outside_box is None
            else {"num_outside": self.outside_box, "num_perturbed": self.num_perturbed},
            "per_latent": [
                {"index": j, "delta0": float(self.delta0[j]), "counts": self.counts[j]} for j in range(self.z.shape[0])
            ],
            "timings": self.timings,
        }


def _distances(gen: LoadedGenerator, zp: torch.Tensor, base: torch.Tensor, per: int, budget: int) -> torch.Tensor:
    """|G(zp_r) - base_{r // per}| for the (b * per, nz) perturbed latents zp, ``budget`` forward passes at a time
    (only one chunk of images is ever held); returns (b, per)."""
    dist = torch.empty(zp.shape[0], dtype=torch.float64)
    owner = torch.arange(zp.shape[0]) // per
    for sl in batches(zp.shape[0], budget):
        moved = generate(gen, zp[sl], budget, dtype=torch.float64).flatten(1)
        dist[sl] = (moved - base[owner[sl]]).norm(dim=-1)
    return dist.reshape(base.shape[0], per)


def run_veff(gen: LoadedGenerator, params: VeffParams, *, progress: Progress | None = None) -> VeffResult:
    """v_eff(tau) of ``gen`` at prior draws (or the given latents)."""
    check_positive("the batch size", params.batch_size, "batch_size")
    if params.chunk_size is not None:
        check_count(params.chunk_size, "the chunk size", param="chunk_size")
    taus = check_taus(params.taus)
    if params.num_directions < 1:
        raise GanProbeError(
            f"the number of random directions must be at least 1, got {params.num_directions}", param="num_directions"
        )
    if params.directions not in DIRECTIONS:
        raise GanProbeError(
            f"unknown directions {params.directions!r}: use one of {', '.join(DIRECTIONS)}", param="directions"
        )
    if params.curve_points < 2:
        raise GanProbeError(f"the v_eff curve needs at least 2 points, got {params.curve_points}", param="curve_points")
    step = resolve_step(gen.prior, params.step)
    given = given_latents(gen, params.latents)
    num, nz, k = count_latents(given, params.num), gen.nz, params.num_directions
    plan = plan_run(gen, batch=min(params.batch_size, num), chunk_size=params.chunk_size, vectors=True)
    check_memory(veff_memory(gen, plan, num=num, num_directions=k, batch_size=params.batch_size))
    z = given if given is not None else draw_or_load_latents(gen, num=num, latents=None, seed=params.seed)

    # every random direction is drawn up front from one seeded stream, so the batch size changes nothing
    if params.directions == "unit":
        eps = random_unit_directions(num, k, nz, seed=params.seed + 1)
    else:
        eps = torch.randn(num, k, nz, generator=seeded_generator(params.seed + 1), dtype=torch.float64)

    def one(sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        zb = z[sl]
        eig, up = auto_spectrum(gen, zb, plan, eigen=True)
        assert eig.eigenvectors is not None
        dirs = torch.cat([eig.eigenvectors.cpu().transpose(1, 2), eps[sl]], dim=1)  # (b, nz + K, nz)
        zp, outside = perturb(gen.prior, (zb[:, None] + step * dirs).reshape(-1, nz), project=params.project)
        base = generate(gen, zb, params.forward_budget, dtype=torch.float64).flatten(1)  # (b, N)
        dist = _distances(gen, zp, base, nz + k, params.forward_budget)  # (b, nz + K)
        d0 = dist[:, nz:].mean(1)
        ratio = torch.where(d0[:, None] > 0, dist[:, :nz] / d0.clamp_min(1e-300)[:, None], 0.0)
        return eig.eigenvalues.cpu(), d0, ratio, int(up.sum()), outside

    t0 = time.perf_counter()
    # the batches are shared out over the ranks under torchrun, and gathered back in order
    with progress_task(progress, "v_eff", distributed.local_count(num, params.batch_size)) as advance:
        parts, _ = distributed.map_batches(num, params.batch_size, one, advance=advance, main_work=True)
    lam_parts, delta0_parts, delta_parts, promoted_counts, outside_counts = zip(*parts, strict=True)
    num_promoted, outside = sum(promoted_counts), sum(outside_counts)
    delta = torch.cat(delta_parts)
    run_s = time.perf_counter() - t0

    top = max(max(taus), float(delta.max()) if delta.numel() else 0.0)
    curve_tau = torch.linspace(0.0, 1.05 * top if top > 0 else 1.0, params.curve_points, dtype=torch.float64)
    return VeffResult(
        params=params,
        step=step,
        taus=taus,
        z=z,
        eigenvalues=torch.cat(lam_parts),
        delta0=torch.cat(delta0_parts),
        delta=delta,
        counts=count_above(delta, torch.tensor(taus, dtype=torch.float64)),
        curve_tau=curve_tau,
        curve_counts=count_above(delta, curve_tau),
        outside_box=outside if gen.prior.kind == "uniform" else None,
        num_perturbed=num * (nz + k),
        timings={"veff_s": run_s},
        num_promoted=num_promoted if gen.auto_float64 else None,
    )


__all__ = ["DIRECTIONS", "VeffParams", "VeffResult", "check_taus", "count_above", "run_veff"]
