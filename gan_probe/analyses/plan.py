"""A command's run plan: its sizes and the free memory measured once, agreed across ranks, then decided.

Every command that takes a spectrum calls :func:`plan_run` once, before any work, and hands the plan
to the memory check (:mod:`gan_probe.analyses.memory`), the spectrum
(:func:`gan_probe.spectral.logdet.half_logdet`) and its report; the decisions themselves are
:func:`gan_probe.spectral.plan.make_plan`'s. Under torchrun every rank plans with the smallest memory
any rank has (free memory differs between devices), so every rank takes the same method, route, chunk
and block and every figure stays bit-identical for any world size (docs/design.md §8.8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gan_probe import device as machine
from gan_probe import distributed
from gan_probe.analyses.memory import activation_elements
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.plan import PlanSizes, RunPlan, make_plan
from gan_probe.spectral.route import element_bytes


def agreed_available_bytes(device: torch.device) -> int | None:
    """The memory available on ``device`` (:func:`gan_probe.device.available_bytes`), the smallest over the
    torchrun ranks (None when no rank can tell). Every rank must call it (one exchange)."""
    known = [v for v in distributed.exchange(machine.available_bytes(device)) if v is not None]
    return min(known) if known else None


def plan_sizes(gen: LoadedGenerator, batch: int) -> PlanSizes:
    """The sizes a run of ``gen`` on batches of up to ``batch`` latents is planned from, the activations
    measured (:func:`gan_probe.analyses.memory.activation_elements`) and the free memory agreed."""
    return PlanSizes(
        nz=gen.nz,
        output_dim=gen.output_dim,
        batch=max(1, batch),
        itemsize=element_bytes(gen.dtype),
        activations=activation_elements(gen),
        available=agreed_available_bytes(gen.device),
        on_gpu=gen.device.type == "cuda",
    )


def plan_run(
    gen: LoadedGenerator,
    *,
    batch: int,
    method: str = "exact",
    estimators: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    vectors: bool = False,
    grad: bool = False,
) -> RunPlan:
    """The plan of a run of ``gen`` on batches of up to ``batch`` latents (the batch size, or fewer when the
    run has fewer latents): :func:`gan_probe.spectral.plan.make_plan` on :func:`plan_sizes`. ``method``:
    exact, an estimator's name or auto; ``chunk_size``: ``--chunk-size`` (None: chosen from the free memory);
    ``vectors``: eigenvectors are taken; ``grad``: the gradient is. Every torchrun rank must call it."""
    return make_plan(
        plan_sizes(gen, batch),
        method=method,
        estimators=estimators,
        chunk_size=chunk_size,
        vectors=vectors,
        grad=grad,
    )


__all__ = ["agreed_available_bytes", "plan_run", "plan_sizes"]
