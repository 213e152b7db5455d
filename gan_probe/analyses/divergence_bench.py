"""``gan-probe bench divergence``: the phases of a ``divergence`` run timed, and AIS from the encoder against AIS
from the prior.

Two measurements (docs/design.md §9):

1. One ``divergence`` run with the given parameters (the command's defaults unless told otherwise), its
   phases timed: the data-side and model-side encoders, ln p_s of the evaluation points, the importance-
   weighted evaluation (which includes ln p_s), and AIS when asked; with the 1-minute load average before and
   after, since the machine may be shared.
2. ln q_s(y) of a few held-out images y = x + sigma eps by forward AIS (:func:`ais_log_q`) from chains of
   increasing length, started from the run's data-side encoder and from the prior N(0, s^2 I)
   (:func:`prior_encoder`), each with its own pilot step sizes; against one long reference chain from the
   encoder. A start *reaches* the reference at the shortest length from which every image, at that length and
   every longer one in the table, lies within ``tolerance`` nats of it. Forward AIS estimates ln q_s from
   below in expectation and tightens with the length (Neal 2001), so the reference is the tightest figure the
   bench has; on a linear generator, where ln q_s is exact, the tests check it against the closed form.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gan_probe.analyses.common import Progress, progress_task, seeded_generator
from gan_probe.analyses.divergence import (
    DivergenceParams,
    DivergenceResult,
    Encoder,
    ais_log_q,
    pilot_step_size,
    prior_encoder,
    run_divergence,
)
from gan_probe.analyses.targets import TARGETS
from gan_probe.analyses.timing import machine_info
from gan_probe.errors import GanProbeError
from gan_probe.limits import check_count
from gan_probe.models.checkpoint import LoadedGenerator

#: The starts compared: the run's data-side encoder r(z|y) and the prior P_Z.
STARTS = ("encoder", "prior")


@dataclass(frozen=True)
class DivergenceBenchParams:
    """``run``: the timed ``divergence`` run (its first sigma is the AIS comparison's); ``num_images``: held-out
    images compared (the first of the held-out split); ``chain_steps``: the AIS lengths run from each start
    (increasing); ``reference_steps``: the reference chain's length (from the encoder); ``tolerance``: nats."""

    run: DivergenceParams = DivergenceParams()
    num_images: int = 4
    chain_steps: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000)
    reference_steps: int = 10_000
    tolerance: float = 1.0
    seed: int = 0

    def validate(self) -> DivergenceBenchParams:
        self.run.validate()
        check_count(self.num_images, "the number of images", param="images")
        check_count(self.reference_steps, "the reference chain's AIS steps", param="reference_steps")
        if not self.chain_steps:
            raise GanProbeError("give at least one chain length", param="chain_steps")
        for steps in self.chain_steps:
            check_count(steps, "every chain length", param="chain_steps")
        if list(self.chain_steps) != sorted(set(self.chain_steps)):
            raise GanProbeError(
                f"the chain lengths must increase, got {','.join(map(str, self.chain_steps))}", param="chain_steps"
            )
        if not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise GanProbeError(f"the tolerance must be a finite number > 0, got {self.tolerance}", param="tolerance")
        return self


@dataclass
class AisComparison:
    """ln q_s of ``image_index`` (positions in the data) at ``sigma``: the ``reference`` (n,) from a chain of
    ``reference_steps``; ``estimates[start][steps]`` (n,) per start and length, with each start's mean
    acceptance and the wall seconds of the chain (both starts ran in it); the pilot's step sizes per start (n,)."""

    sigma: float
    image_index: torch.Tensor
    reference: torch.Tensor
    reference_steps: int
    reference_seconds: float
    tolerance: float
    estimates: dict[str, dict[int, torch.Tensor]]
    acceptance: dict[str, dict[int, float]]
    seconds: dict[str, dict[int, float]]
    step_size: dict[str, torch.Tensor]

    def rows(self) -> list[dict[str, Any]]:
        """One row per start and length: the mean gap to the reference (reference - estimate; positive in
        expectation) and the largest |estimate - reference| over the images, whether it is within the
        tolerance, and the estimates (n,)."""
        out = []
        for start, by_steps in self.estimates.items():
            for steps, est in by_steps.items():
                err = est - self.reference
                worst = float(err.abs().max())
                out.append(
                    {
                        "start": start,
                        "steps": steps,
                        "mean_gap_nats": float(-err.mean()),
                        "max_abs_error_nats": worst,
                        "within_tolerance": worst <= self.tolerance,
                        "acceptance": self.acceptance[start][steps],
                        "seconds": self.seconds[start][steps],
                        "log_q": est,
                    }
                )
        return out

    def steps_needed(self, start: str) -> int | None:
        """The shortest length from which every longer one in the table is within the tolerance (None: not even
        the longest)."""
        needed = None
        for steps in sorted(self.estimates[start], reverse=True):
            if float((self.estimates[start][steps] - self.reference).abs().max()) > self.tolerance:
                break
            needed = steps
        return needed

    def to_json(self) -> dict[str, Any]:
        enc, pri = self.steps_needed("encoder"), self.steps_needed("prior")
        longest = max(self.estimates["prior"])
        if enc is not None and pri is not None:
            ratio, bound = pri / enc, "exact"
        elif enc is not None:  # the prior never got there: the ratio is at least the next length over enc
            ratio, bound = longest / enc, "lower"
        else:
            ratio, bound = None, None
        return {
            "sigma": self.sigma,
            "num_images": int(self.image_index.numel()),
            "image_index": self.image_index,
            "tolerance_nats": self.tolerance,
            "reference_steps": self.reference_steps,
            "reference_seconds": self.reference_seconds,
            "reference_log_q": self.reference,
            "step_size": {k: v for k, v in self.step_size.items()},
            "rows": self.rows(),
            "steps_needed": {"encoder": enc, "prior": pri},
            "prior_over_encoder_steps": ratio,
            "prior_over_encoder_is": bound,
            "meaning": "steps_needed: the shortest AIS length from which every image's ln q_s estimate, at it and "
            "every longer length in the table, is within tolerance_nats of the reference chain's (from the "
            "encoder); prior_over_encoder_is lower when the prior start never got there (the ratio uses the "
            "longest length run)",
        }


@dataclass
class DivergenceBenchResult:
    """The timed run (``run`` with its ``phases`` in seconds and the load around it), the AIS comparison,
    the machine and the targets checked."""

    run: DivergenceResult
    phases: dict[str, float]
    run_seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    ais: AisComparison | None
    machine: dict[str, Any]
    targets: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        s = self.run.per_sigma[0]
        return {
            "machine": self.machine,
            "run": {
                "seconds": self.run_seconds,
                "phases_s": dict(self.phases),
                "load_average_before": list(self.load_before),
                "load_average_after": list(self.load_after),
                "num_data": int(self.run.data.images.shape[0]),
                "num_heldout": int(self.run.heldout_index.numel()),
                "num_model_samples": self.run.params.num_model_samples,
                "batch_size": self.run.params.batch_size,
                "sigma": s.sigma,
                "divergences": {k: v.to_json() for k, v in s.divergences.items()},
                "encoders": {k: f.describe() for k, f in s.fits.items()},
            },
            "ais": None if self.ais is None else self.ais.to_json(),
            "targets": self.targets,
        }


def side_by_side(first: Encoder, second: Encoder) -> Encoder:
    """An encoder for y stacked twice (2n, D): ``first`` on the top half, ``second`` on the bottom. AIS moves each
    point with its own step size and its own accept test, so the two starts run as one batch of G."""

    def encoder(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = y.shape[0] // 2
        (m1, s1), (m2, s2) = first(y[:n]), second(y[n:])
        f64 = torch.float64
        return torch.cat([m1.to("cpu", f64), m2.to("cpu", f64)]), torch.cat([s1.to("cpu", f64), s2.to("cpu", f64)])

    return encoder


def compare_ais_starts(
    gen: LoadedGenerator,
    encoder: Encoder,
    x: torch.Tensor,
    image_index: torch.Tensor,
    sigma: float,
    params: DivergenceBenchParams,
    *,
    progress: Progress | None = None,
) -> AisComparison:
    """AIS estimates of ln q_s(y), y = x + sigma eps (x (n, D) float64, seeded noise), from ``encoder`` and from
    the prior at every length of ``params.chain_steps`` (the two starts side by side in one batch, each point
    with its pilot's step size), and the reference chain of ``params.reference_steps`` from the encoder."""
    run = params.run
    seed = params.seed
    n = x.shape[0]
    y = x + sigma * torch.randn(x.shape, generator=seeded_generator(seed + 1), dtype=torch.float64)
    both, y2 = side_by_side(encoder, prior_encoder(gen)), torch.cat([y, y])
    halves = {"encoder": slice(0, n), "prior": slice(n, 2 * n)}
    leapfrog = run.ais_leapfrog
    estimates: dict[str, dict[int, torch.Tensor]] = {s: {} for s in STARTS}
    acceptance: dict[str, dict[int, float]] = {s: {} for s in STARTS}
    seconds: dict[str, dict[int, float]] = {s: {} for s in STARTS}
    total = run.ais_pilot + sum(params.chain_steps) + params.reference_steps
    with progress_task(progress, "AIS: encoder and prior starts", total) as advance:
        eps = pilot_step_size(gen, both, y2, sigma, steps=run.ais_pilot, seed=seed + 10)
        advance(run.ais_pilot)
        for j, steps in enumerate(params.chain_steps):
            t0 = time.perf_counter()
            r = ais_log_q(gen, both, y2, sigma, steps=steps, seed=seed + 100 + j, step_size=eps, num_leapfrog=leapfrog)
            took = time.perf_counter() - t0
            assert r.point_acceptance is not None
            for name, half in halves.items():
                estimates[name][steps] = r.log_weights[half]
                acceptance[name][steps] = float(r.point_acceptance[half].mean())
                seconds[name][steps] = took
            advance(steps)
        t0 = time.perf_counter()
        ref = ais_log_q(
            gen,
            encoder,
            y,
            sigma,
            steps=params.reference_steps,
            seed=seed + 1000,
            step_size=eps[halves["encoder"]],
            num_leapfrog=leapfrog,
        )
        reference_seconds = time.perf_counter() - t0
        advance(params.reference_steps)
    return AisComparison(
        sigma=sigma,
        image_index=image_index,
        reference=ref.log_weights,
        reference_steps=params.reference_steps,
        reference_seconds=reference_seconds,
        tolerance=params.tolerance,
        estimates=estimates,
        acceptance=acceptance,
        seconds=seconds,
        step_size={name: eps[half] for name, half in halves.items()},
    )


def run_divergence_bench(
    gen: LoadedGenerator, params: DivergenceBenchParams, *, ais: bool = True, progress: Progress | None = None
) -> DivergenceBenchResult:
    """Time ``params.run`` by phase, then (``ais``) compare AIS from its data-side encoder and from the prior on
    the first ``num_images`` held-out images at its first sigma."""
    params.validate()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = run_divergence(gen, params.run, progress=progress)
    run_seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    first = result.per_sigma[0]
    comparison = None
    if ais:
        index = result.heldout_index[: params.num_images]
        x = result.data.images[index].reshape(index.numel(), -1).to(torch.float64)
        comparison = compare_ais_starts(
            gen, first.fits["data"].encoder, x, index, first.sigma, params, progress=progress
        )
    # stated for the command's defaults (any --batch-size) on at most 2 CPU threads
    default = params.run == DivergenceParams(batch_size=params.run.batch_size)
    two_cores = gen.device.type == "cpu" and torch.get_num_threads() <= 2
    targets = [TARGETS["divergence_run_seconds"].check(run_seconds, applies=default and two_cores)]
    if comparison is not None:
        summary = comparison.to_json()
        value = summary["prior_over_encoder_steps"]
        exact = summary["prior_over_encoder_is"] == "exact"
        targets.append(
            TARGETS["ais_prior_over_encoder_steps"].check(
                value,
                applies=exact or (value is not None and value >= TARGETS["ais_prior_over_encoder_steps"].threshold),
                note=None
                if exact
                else "the prior start did not reach the reference: the ratio is a lower bound"
                if value is not None
                else "the encoder start did not reach the reference within the tolerance at any length run",
            )
        )
    return DivergenceBenchResult(
        run=result,
        phases={k: v for k, v in result.timings.items()},
        run_seconds=run_seconds,
        load_before=load_before,
        load_after=load_after,
        ais=comparison,
        machine=machine_info(gen.device),
        targets=targets,
    )


def default_run(batch_size: int, **changes: Any) -> DivergenceParams:
    """The parameters of ``gan-probe divergence`` with ``batch_size`` (the common --batch-size) and ``changes``."""
    return replace(DivergenceParams(batch_size=batch_size), **changes)


__all__ = [
    "STARTS",
    "AisComparison",
    "DivergenceBenchParams",
    "DivergenceBenchResult",
    "compare_ais_starts",
    "default_run",
    "run_divergence_bench",
    "side_by_side",
]
