"""``gan-probe bench --throughput``: latents per second of exact ln Q, over batch and chunk sizes.

For each (batch size, chunk size) the run evaluates the exact ln Q of ``num``
seeded prior latents exactly as ``loglik --method exact`` does
(:func:`gan_probe.analyses.loglik.evaluate_loglik`: Jacobian by batched JVPs,
float64 spectrum, ``--dtype auto`` promotion, results gathered). Under torchrun
the latents are shared out over the ranks in batches, as in every command, and
the figure is the aggregate: all latents over the wall time of the slowest
rank, every rank starting together. A ``chunk_size`` of None is the automatic
choice (:func:`gan_probe.spectral.plan.choose_chunk`: on a GPU, from its
free memory); the chunk that ran is reported.

Scaling is measured in the same run (docs/design.md §9): the best configuration
is timed once more with rank 0 alone doing all the work, and the ratio of the
two rates is the speed-up of the world size. Peak memory is the device
allocator's peak per configuration on CUDA, and the process's peak resident set
so far on the CPU (it only grows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from gan_probe import distributed
from gan_probe.analyses.bench import peak_memory_bytes
from gan_probe.analyses.common import seeded_generator
from gan_probe.analyses.loglik import evaluate_loglik
from gan_probe.analyses.memory import check_memory, loglik_memory
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.targets import TARGETS
from gan_probe.analyses.timing import machine_info, synchronize
from gan_probe.device import describe_device
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.plan import RunPlan

#: docs/design.md §9: exact ln Q of the 64x64x3 DCGAN (nz 128) on one H100-class GPU, and two processes over one
TARGET_DCGAN_LATENTS_PER_S = TARGETS["dcgan_latents_per_s"].threshold
TARGET_TWO_PROCESS_SCALING = TARGETS["two_process_speedup"].threshold


@dataclass(frozen=True)
class ThroughputParams:
    """``num`` latents per configuration (all ranks together), each ``batch_sizes`` x ``chunk_sizes``
    (None: automatic); ``scaling`` also times the best configuration on rank 0 alone."""

    num: int = 64
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    chunk_sizes: tuple[int | None, ...] = (None,)
    scaling: bool = True
    seed: int = 0

    def validate(self) -> ThroughputParams:
        if self.num < 1:
            raise GanProbeError(f"the number of latents must be at least 1, got {self.num}", param="num")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise GanProbeError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}", param="batch_sizes")
        if not self.chunk_sizes or any(c is not None and c < 1 for c in self.chunk_sizes):
            raise GanProbeError(
                f"chunk sizes must be at least 1 (or auto), got {list(self.chunk_sizes)}", param="chunk_sizes"
            )
        return self


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _seconds(gen: LoadedGenerator, z: torch.Tensor, batch: int, plan: RunPlan, seed: int) -> float:
    """Wall seconds of exact ln Q of z as loglik computes it (sharded over the ranks, unless run alone)."""
    synchronize(gen.device)
    t0 = time.perf_counter()
    evaluate_loglik(gen, z, plan=plan, batch_size=batch, seed=seed)
    synchronize(gen.device)
    return time.perf_counter() - t0


def _timed(gen: LoadedGenerator, z: torch.Tensor, batch: int, plan: RunPlan, seed: int) -> tuple[float, int | None]:
    """(seconds of the slowest rank, peak memory of the hungriest rank) for exact ln Q of z, every rank
    starting together."""
    device = gen.device
    check_memory(loglik_memory(gen, plan, num=int(z.shape[0]), latents_given=True, estimators=None, grid_size=None))
    _reset_peak(device)
    distributed.exchange(None)  # start together
    seconds = _seconds(gen, z, batch, plan, seed)
    reports = distributed.exchange((seconds, peak_memory_bytes(device)))
    peaks = [p for _, p in reports if p is not None]
    return max(s for s, _ in reports), (max(peaks) if peaks else None)


def run_throughput(gen: LoadedGenerator, params: ThroughputParams) -> dict[str, Any]:
    """Rows of latents/s and peak memory per (batch, chunk), the scaling of the world size, the targets."""
    params.validate()
    world = distributed.current()
    device = gen.device
    z = gen.prior.sample(params.num, gen.nz, generator=seeded_generator(params.seed))
    # warm-up on every rank: kernels chosen, caches filled, activations measured (the plans read them)
    with distributed.local():
        evaluate_loglik(gen, z[: min(2, params.num)], method="exact", batch_size=2, seed=params.seed)
    rows: list[dict[str, Any]] = []
    plans: list[RunPlan] = []  # one per row: every configuration is a run of its own
    for batch in params.batch_sizes:
        for chunk in params.chunk_sizes:
            plan = plan_run(gen, batch=min(batch, params.num), chunk_size=chunk)
            plans.append(plan)
            seconds, peak = _timed(gen, z, batch, plan, params.seed)
            rows.append(
                {
                    "batch_size": batch,
                    "chunk_size": plan.chunk,
                    "chunk_auto": chunk is None,
                    "num_latents": params.num,
                    "world_size": world.size,
                    "idle_ranks": distributed.idle_ranks(params.num, batch),
                    "seconds": seconds,
                    "latents_per_s": params.num / seconds,
                    "peak_memory_bytes": peak,
                }
            )
    fastest = max(range(len(rows)), key=lambda i: rows[i]["latents_per_s"])
    best, best_plan = rows[fastest], plans[fastest]
    scaling: dict[str, Any] | None = None
    if params.scaling and world.distributed:
        # the same configuration with rank 0 alone: the other ranks wait at the exchange
        seconds = distributed.on_main(lambda: _seconds(gen, z, best["batch_size"], best_plan, params.seed))
        single_rate = params.num / seconds
        scaling = {
            "batch_size": best["batch_size"],
            "chunk_size": best["chunk_size"],
            "world_size": world.size,
            "latents_per_s": best["latents_per_s"],
            "single_process_latents_per_s": single_rate,
            "speedup": best["latents_per_s"] / single_rate,
        }
    targets = _targets(gen, device, best, scaling)
    return {
        "mode": "throughput",
        "device": describe_device(device),
        "dtype": str(gen.dtype).replace("torch.", ""),
        "machine": machine_info(device),
        "world": world.describe(),
        "rows": rows,
        "best": best,
        "scaling": scaling,
        "targets": targets,
    }


def _targets(
    gen: LoadedGenerator, device: torch.device, best: dict[str, Any], scaling: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """docs/design.md §9; a target applies to the model and machine it was set for (else met is None)."""
    dcgan = gen.nz == 128 and tuple(gen.output_shape) == (3, 64, 64)
    one_process = best["latents_per_s"] if scaling is None else scaling["single_process_latents_per_s"]
    rate = TARGETS["dcgan_latents_per_s"]
    out = [
        rate.check(
            one_process if best["world_size"] == 1 or scaling is not None else None,
            applies=dcgan and rate.runs_on(device),
        )
    ]
    if scaling is not None:
        speedup = TARGETS["two_process_speedup"]
        out.append(speedup.check(scaling["speedup"], applies=scaling["world_size"] == 2 and speedup.runs_on(device)))
    return out


__all__ = ["TARGET_DCGAN_LATENTS_PER_S", "TARGET_TWO_PROCESS_SCALING", "ThroughputParams", "run_throughput"]
