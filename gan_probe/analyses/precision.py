"""``--dtype auto``: the exact spectrum in float32, recomputed in float64 where float32 is not enough.

docs/design.md §2.2 flags a latent ``precision_warning`` when s_min of its J lies
below the rounding level of the dtype J was computed in, and ``singular`` when
s_min is zero to float64 precision. Computed in float32, either flag may be an
artefact: a J singular in float32 need not be singular in float64 (a saturated
tanh whose derivative rounds to 0 in float32), and a float32 s_min at rounding
level is noise. With ``--dtype auto`` (:attr:`LoadedGenerator.auto_float64`)
every such latent is recomputed with the generator in float64 (a float64 copy of
the module, made the first time a latent needs it: :meth:`LoadedGenerator.float64`),
and its spectrum replaces the float32 one. The caller reports how many latents
were promoted. Only flags still raised in float64 remain; a number they mark is
rounding noise and stays out of the headline figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gan_probe.analyses.common import jacobian_operator
from gan_probe.errors import first_line
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.eigen import exact_eigen
from gan_probe.spectral.estimators.base import Generators
from gan_probe.spectral.exact import Spectrum
from gan_probe.spectral.logdet import HalfLogdet, half_logdet
from gan_probe.spectral.plan import RunPlan
from gan_probe.spectral.route import exact_spectrum


def auto_half_logdet(
    gen: LoadedGenerator,
    z: torch.Tensor,
    plan: RunPlan,
    *,
    estimators: Mapping[str, Any] | None = None,
    generator: Generators | None = None,
    grad: bool = False,
    check: bool = False,
    geometry: str = "euclidean",
) -> tuple[HalfLogdet, torch.Tensor]:
    """:func:`gan_probe.spectral.logdet.half_logdet` at latents z (B, nz) of ``gen`` as the run's ``plan`` says,
    with ``--dtype auto``: for the exact method, the latents flagged in float32 are recomputed in float64
    (:meth:`~gan_probe.spectral.plan.RunPlan.in_float64`), each in the geometry it was read in. Returns (the
    result, a (B,) CPU bool mask of the latents promoted)."""
    op = jacobian_operator(gen, z, plan)
    res = half_logdet(op, plan, estimators, generator=generator, grad=grad, check=check, geometry=geometry)
    promoted = torch.zeros(z.shape[0], dtype=torch.bool)
    if plan.method != "exact" or not _promotes(gen):
        return res, promoted
    flagged = (res.stats["singular"] | res.stats["precision_warning"]).cpu()
    sphere = res.sphere.cpu()
    if gen.ignores_norm:
        flagged &= sphere  # read in R^nz, J z = 0 by construction: singular in every dtype
    if not bool(flagged.any()):
        return res, promoted
    parts = []
    try:
        twin, plan64 = gen.float64(), plan.in_float64()
        for round_ in (False, True):
            idx = (flagged & (sphere == round_)).nonzero().flatten()
            if idx.numel():
                op64 = jacobian_operator(twin, z[idx.to(z.device)], plan64)
                geo = "sphere" if round_ else "euclidean"
                parts.append((idx, half_logdet(op64, plan64, grad=grad, geometry=geo)))
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - no float64 for this generator (MPS, a program fixed to float32)
        _unavailable(gen, exc)
        return res, promoted
    for idx, part in parts:
        res = _merge_half(res, part, idx)
    return res, flagged


def _promotes(gen: LoadedGenerator) -> bool:
    """--dtype auto, not yet float64, a float64 copy not known to fail, and not a wide J (singular in every
    dtype)."""
    return (
        gen.auto_float64 and gen.dtype != torch.float64 and gen.float64_unavailable is None and gen.output_dim >= gen.nz
    )


def _unavailable(gen: LoadedGenerator, exc: BaseException) -> None:
    message = first_line(exc)
    gen.float64_unavailable = message
    gen.notes.append(
        f"--dtype auto: the generator cannot run in float64 ({message}); latents flagged in float32 keep "
        "their flags and are left out of the headline figures"
    )


def _put(a: torch.Tensor, idx: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` with rows ``idx`` replaced by ``b`` (out of place, differentiable where the inputs are)."""
    out = a.clone()
    out[idx.to(a.device)] = b.to(a.device, a.dtype)
    return out


def _merge_half(base: HalfLogdet, part: HalfLogdet, idx: torch.Tensor) -> HalfLogdet:
    """``base`` with the latents ``idx`` replaced by the exact result ``part`` (same geometry per latent)."""
    exact = base.exact_value
    return HalfLogdet(
        base.method,
        _put(base.value, idx, part.value),
        base.sphere,
        base.log_base,
        {k: _put(v, idx, part.stats[k]) for k, v in base.stats.items()},
        None if exact is None or part.exact_value is None else _put(exact, idx, part.exact_value),
        base.estimate,
        join_routes(base.route, part.route),
    )


def join_routes(*routes: str | None) -> str | None:
    """The exact routes that ran, e.g. ``dense`` or ``dense+gram`` (None when none did)."""
    names = sorted({r for rt in routes if rt for r in rt.split("+")})
    return "+".join(names) if names else None


def auto_spectrum(
    gen: LoadedGenerator,
    z: torch.Tensor,
    plan: RunPlan,
    *,
    eigen: bool = False,
    grad: bool = False,
) -> tuple[Spectrum, torch.Tensor]:
    """(the exact spectrum at latents z (B, nz) by the run's ``plan``, a (B,) CPU bool mask of the latents
    recomputed in float64).

    ``eigen``: with eigenvectors (signs fixed, :func:`gan_probe.spectral.eigen.exact_eigen`); ``grad``: the
    half log-determinant carries its gradient (for promoted latents, through the float64 generator).
    """
    spec = _spectrum(gen, z, plan, eigen=eigen, grad=grad)
    promoted = torch.zeros(z.shape[0], dtype=torch.bool)
    if not _promotes(gen) or gen.ignores_norm:
        return spec, promoted  # (a generator that ignores |z| has J z = 0: M is singular in every dtype)
    flagged = (spec.precision_warning | spec.singular).cpu()
    if not bool(flagged.any()):
        return spec, promoted
    idx = flagged.nonzero().flatten()
    try:
        twin = gen.float64()
        spec64 = _spectrum(twin, z[idx.to(z.device)], plan.in_float64(), eigen=eigen, grad=grad)
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - no float64 for this generator (MPS, a program fixed to float32)
        _unavailable(gen, exc)
        return spec, promoted
    return merge_spectra(spec, spec64, idx), flagged


def _spectrum(gen: LoadedGenerator, z: torch.Tensor, plan: RunPlan, *, eigen: bool, grad: bool) -> Spectrum:
    op = jacobian_operator(gen, z, plan)
    if eigen:
        return exact_eigen(op, route=plan.route, block=plan.block)
    return exact_spectrum(op, route=plan.route, block=plan.block, grad=grad)


def merge_spectra(base: Spectrum, part: Spectrum, idx: torch.Tensor) -> Spectrum:
    """``base`` with the latents ``idx`` replaced by ``part`` (differentiable where the inputs are)."""
    vectors = None
    if base.eigenvectors is not None and part.eigenvectors is not None:
        vectors = _put(base.eigenvectors, idx, part.eigenvectors)
    return Spectrum(
        singular_values=_put(base.singular_values, idx, part.singular_values),
        singular=_put(base.singular, idx, part.singular),
        precision_warning=_put(base.precision_warning, idx, part.precision_warning),
        half_logdet=_put(base.half_logdet, idx, part.half_logdet),
        eigenvectors=vectors,
        route=join_routes(base.route, part.route) or base.route,
    )


__all__ = ["auto_half_logdet", "auto_spectrum", "merge_spectra"]
