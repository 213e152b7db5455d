"""1/2 ln det M by any method: the one route every analysis takes.

``exact`` is the exact spectrum (docs/design.md §2.4) by the dense route
(:mod:`gan_probe.spectral.exact`) or the Gram route (:mod:`gan_probe.spectral.gram`);
every other name is a registered estimator (:mod:`gan_probe.spectral.estimators`).
Which method and route run is the run's plan (:class:`gan_probe.spectral.plan.RunPlan`,
``auto`` resolved there). Callers differ only in what they ask of it: the value, the
flags, the exact spectrum beside an estimate (``check``), or a differentiable value (``grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import LogdetEstimate, estimate_half_logdet
from gan_probe.spectral.estimators.base import Generators
from gan_probe.spectral.estimators.lanczos import spectral_bounds
from gan_probe.spectral.exact import Spectrum, spectrum_from_jacobian
from gan_probe.spectral.geometry import (
    GEOMETRIES,
    log_sphere_area,
    radial_ratio,
    radial_tolerance,
    tangent_jacobian,
    tangent_operator,
)
from gan_probe.spectral.gram import gram_spectrum
from gan_probe.spectral.operator import JacobianOperator

# the method rule lives with the run plan; its names stay importable from here
from gan_probe.spectral.plan import (
    AUTO_EXACT_COST_FACTOR,
    EXACT_PRODUCT_COST,
    METHODS,
    MethodCosts,
    RunPlan,
    estimator_params,
    exact_linalg_flops,
    method_costs,
    resolve_method,
)

#: ``ascend`` records ln Q exactly at every step up to this nz (its per-step record, not the auto rule).
AUTO_EXACT_MAX_NZ = 1024


@dataclass
class HalfLogdet:
    """1/2 ln det of the metric at a batch of latents by ``method``, in the geometry each latent was read in.

    ``value`` (B,) float64, differentiable when asked for: 1/2 ln det M (Euclidean latents) or of the
    tangent metric (r J B)^T (r J B) (``sphere`` latents, docs/design.md §1.4). ``log_base`` (B,): the
    log-density the value is subtracted from for sphere latents, -ln|S^{n-1}| (NaN for Euclidean ones,
    whose base is ln P_Z(z)). ``spectrum``: the exact spectrum (method exact, or ``check``) in the
    geometry of each latent, as (B,) statistics. ``estimate``: the estimator's full result. ``route``: the
    exact route that ran (``dense`` or ``gram``, docs/design.md §2.2; None when nothing exact ran).
    """

    method: str
    value: torch.Tensor
    sphere: torch.Tensor
    log_base: torch.Tensor
    stats: dict[str, torch.Tensor]
    exact_value: torch.Tensor | None
    estimate: LogdetEstimate | None
    route: str | None = None

    @property
    def has_spectrum(self) -> bool:
        return self.exact_value is not None


Stats = dict[str, torch.Tensor]


def _stats(spec: Spectrum) -> Stats:
    return {
        "lambda_max": spec.lambda_max,
        "lambda_min": spec.lambda_min,
        "condition": spec.condition,
        "singular": spec.singular,
        "precision_warning": spec.precision_warning,
    }


def _merge(sphere: torch.Tensor, a: Stats, b: Stats) -> Stats:
    """Per latent: ``b`` where ``sphere``, else ``a``."""
    return {k: torch.where(sphere.to(a[k].device), b[k], a[k]) for k in a}


def _exact(
    op: JacobianOperator,
    *,
    grad: bool,
    geometry: str = "euclidean",
    mask: torch.Tensor | None = None,
    route: str = "dense",
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Stats, str]:
    """(value, sphere mask, stats, route) by the exact method; each latent read in ``geometry`` (or as
    ``mask`` says). ``route``: dense or gram (``block`` columns per JVP-VJP pair)."""
    if route == "gram":
        if grad:
            raise GanProbeError(
                "the exact gradient is taken by the dense route only (it differentiates J): use route dense",
                param="route",
            )
        return _exact_gram(op, block, geometry=geometry, mask=mask)
    if route != "dense":
        raise GanProbeError(f"unknown exact route {route!r}: use dense or gram", param="route")
    with torch.set_grad_enabled(grad):
        jac = op.dense()
        spec = spectrum_from_jacobian(jac, grad=grad)
        if mask is None:
            s_max = spec.singular_values[:, 0]
            mask = _sphere_mask(geometry, op, lambda: radial_ratio(jac.detach(), op.z.detach(), s_max))
        if not bool(mask.any()):
            return spec.half_logdet, mask, _stats(spec), "dense"
        tangent = spectrum_from_jacobian(tangent_jacobian(jac, op.z), grad=grad)
    value = torch.where(mask.to(spec.half_logdet.device), tangent.half_logdet, spec.half_logdet)
    return value, mask, _merge(mask, _stats(spec), _stats(tangent)), "dense"


def _exact_gram(
    op: JacobianOperator, block: int | None, *, geometry: str, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, Stats, str]:
    """:func:`_exact` by the Gram route (no gradient): |J z| from one JVP, the tangent metric from the tangent
    operator's Gram matrix."""
    spec = gram_spectrum(op, block=block)
    if mask is None:
        s_max = spec.singular_values[:, 0]

        def ratio() -> torch.Tensor:
            with torch.no_grad():
                z = op.z.detach()
                jz = op.jvp(z[None])[0].to(torch.float64).norm(dim=-1)
                scale = s_max * z.to(torch.float64).norm(dim=-1)
            return torch.where(scale > 0, jz / scale.clamp_min(1e-300), torch.full_like(jz, math.inf))

        mask = _sphere_mask(geometry, op, ratio)
    if not bool(mask.any()):
        return spec.half_logdet, mask, _stats(spec), "gram"
    tangent = gram_spectrum(tangent_operator(op), block=block)
    value = torch.where(mask.to(spec.half_logdet.device), tangent.half_logdet, spec.half_logdet)
    return value, mask, _merge(mask, _stats(spec), _stats(tangent)), "gram"


def _sphere_mask(geometry: str, op: JacobianOperator, ratio: Callable[[], torch.Tensor]) -> torch.Tensor:
    if geometry not in GEOMETRIES:
        raise GanProbeError(f"unknown geometry {geometry!r}: use one of {', '.join(GEOMETRIES)}", param="geometry")
    if geometry == "euclidean":
        return torch.zeros(op.batch, dtype=torch.bool)
    # at z = 0 the direction z/|z| is undefined: such a latent is read in the Euclidean geometry
    nonzero = (op.z.detach().norm(dim=-1) > 0).cpu()
    if geometry == "sphere":
        return nonzero
    return (ratio() < radial_tolerance(op.dtype)).cpu() & nonzero


def _clone(generator: Generators) -> Generators:
    """An independent copy of the probe streams (so two estimates can draw the same probes)."""
    if isinstance(generator, torch.Generator):
        return torch.Generator().set_state(generator.get_state())
    return [torch.Generator().set_state(g.get_state()) for g in generator]


def half_logdet(
    op: JacobianOperator,
    plan: RunPlan,
    estimators: Mapping[str, Any] | None = None,
    *,
    generator: Generators | None = None,
    grad: bool = False,
    check: bool = False,
    geometry: str = "euclidean",
) -> HalfLogdet:
    """1/2 ln det of the metric at every latent of ``op`` by the ``plan``'s method (exact or an estimator:
    ``auto`` is resolved when the plan is made, :func:`gan_probe.spectral.plan.make_plan`), the exact value
    by the plan's route (dense: J held; gram: M = J^T J by blocks of ``plan.block`` columns).

    ``estimators``: estimator name -> its parameters (missing: its defaults).
    ``grad``: the value carries the gradient w.r.t. z and the generator's
    parameters (exact: the QR surrogate, dense route only; estimators: spectral backpropagation).
    ``check``: an estimator's result comes with the exact value beside it.
    ``geometry``: euclidean, sphere (the generator ignores |z|, docs/design.md
    §1.4) or auto (sphere for the latents where |J z| is zero to working
    precision relative to s_1 |z|).
    """
    method, route, block = plan.method, plan.route, plan.block
    if method == "auto":
        raise ValueError("half_logdet needs a plan with the method resolved (gan_probe.spectral.plan.make_plan)")
    n = op.nz
    log_base = torch.full((op.batch,), -log_sphere_area(n) if n > 1 else math.nan, dtype=torch.float64)
    if method == "exact":
        value, sphere, stats, ran = _exact(op, grad=grad, geometry=geometry, route=route, block=block)
        base = torch.where(sphere, log_base, torch.full_like(log_base, math.nan))
        return HalfLogdet("exact", value, sphere, base, stats, value.detach(), None, ran)
    if generator is None:
        raise ValueError("a stochastic estimator needs a generator (one per latent for batch invariance)")
    params = estimator_params(method, estimators)

    def ratio() -> torch.Tensor:
        with torch.no_grad():
            jz = op.jvp(op.z[None])[0].to(torch.float64).norm(dim=-1)
            bounds = spectral_bounds(op, 10, [torch.Generator().manual_seed(0) for _ in range(op.batch)])
        return (jz / (bounds.theta_max.sqrt() * op.z.to(torch.float64).norm(dim=-1)).clamp_min(1e-300)).cpu()

    sphere = _sphere_mask(geometry, op, ratio)
    runs: list[tuple[bool, LogdetEstimate]] = []
    for use_sphere in (False, True):
        if bool((sphere == use_sphere).any()):
            target = tangent_operator(op) if use_sphere else op
            gen = _clone(generator) if runs else generator
            with torch.set_grad_enabled(grad):
                runs.append((use_sphere, estimate_half_logdet(target, method, params, generator=gen)))
    est = runs[0][1] if len(runs) == 1 else _merge_estimates(sphere, runs[0][1], runs[1][1])
    value = est.half_logdet if grad else est.half_logdet.detach()
    nan = torch.full_like(value.detach(), math.nan)
    stats = {
        "lambda_max": est.lambda_max if est.lambda_max is not None else nan,
        "lambda_min": nan,
        "condition": nan,
        "singular": torch.zeros_like(sphere),
        "precision_warning": torch.zeros_like(sphere),
    }
    exact_value = None
    ran_route: str | None = None
    if check:
        exact_value, _, stats, ran_route = _exact(op, grad=False, mask=sphere, route=route, block=block)
    base = torch.where(sphere, log_base, torch.full_like(log_base, math.nan))
    return HalfLogdet(method, value, sphere, base, stats, exact_value, est, ran_route)


def _merge_estimates(sphere: torch.Tensor, flat: LogdetEstimate, round_: LogdetEstimate) -> LogdetEstimate:
    """One estimate per latent from the Euclidean (``flat``) and sphere (``round_``) runs."""

    def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return None
        mask = sphere.to(a.device).reshape(-1, *([1] * (a.ndim - 1)))
        return torch.where(mask, b, a)

    half = pick(flat.half_logdet, round_.half_logdet)
    assert half is not None
    return LogdetEstimate(
        method=flat.method,
        half_logdet=half,
        num_matvecs=max(flat.num_matvecs, round_.num_matvecs),
        stderr=pick(flat.stderr, round_.stderr),
        interval=pick(flat.interval, round_.interval),
        bounds_violated=pick(flat.bounds_violated, round_.bounds_violated),
        lambda_max=pick(flat.lambda_max, round_.lambda_max),
        extras={},
    )


__all__ = [
    "AUTO_EXACT_COST_FACTOR",
    "AUTO_EXACT_MAX_NZ",
    "EXACT_PRODUCT_COST",
    "GEOMETRIES",
    "METHODS",
    "HalfLogdet",
    "MethodCosts",
    "RunPlan",
    "estimator_params",
    "exact_linalg_flops",
    "half_logdet",
    "method_costs",
    "resolve_method",
]
