"""1/2 ln det M by any method: the one route every analysis takes.

``exact`` is :func:`gan_probe.spectral.exact.exact_spectrum` (docs/design.md
§2.4); every other name is a registered estimator
(:mod:`gan_probe.spectral.estimators`); ``auto`` picks between them.
Callers differ only in what they ask of it: the value, the flags, the exact
spectrum beside an estimate (``check``), or a differentiable value (``grad``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import ESTIMATORS, LogdetEstimate, estimate_half_logdet, get_estimator
from gan_probe.spectral.estimators.base import Generators
from gan_probe.spectral.exact import Spectrum, exact_spectrum
from gan_probe.spectral.operator import JacobianOperator

METHODS: tuple[str, ...] = ("exact", *ESTIMATORS, "auto")

#: ``auto`` uses the exact method up to this nz (J fits in memory and costs nz JVPs).
AUTO_EXACT_MAX_NZ = 1024


def estimator_params(method: str, estimators: Mapping[str, Any] | None) -> Any:
    """The parameters of estimator ``method`` in ``estimators`` (name -> dataclass), else its defaults."""
    if estimators is not None and method in estimators:
        return estimators[method]
    return get_estimator(method).default_params()


def resolve_method(method: str, nz: int, estimators: Mapping[str, Any] | None = None) -> str:
    """``auto``: exact up to nz = AUTO_EXACT_MAX_NZ or when slq's budget (steps x probes) reaches nz, else slq."""
    if method not in METHODS:
        raise GanProbeError(f"unknown method {method!r}: use one of {', '.join(METHODS)}", param="method")
    if method != "auto":
        return method
    slq = get_estimator("slq")
    if nz <= AUTO_EXACT_MAX_NZ or slq.num_products(estimator_params("slq", estimators)) >= nz:
        return "exact"
    return "slq"


@dataclass
class HalfLogdet:
    """1/2 ln det M at a batch of latents by ``method``.

    ``value`` (B,) float64, differentiable when asked for. ``spectrum``: the
    exact spectrum (method exact, or ``check``). ``estimate``: the estimator's
    full result (stochastic methods).
    """

    method: str
    value: torch.Tensor
    spectrum: Spectrum | None
    estimate: LogdetEstimate | None


def half_logdet(
    op: JacobianOperator,
    method: str,
    estimators: Mapping[str, Any] | None = None,
    *,
    generator: Generators | None = None,
    grad: bool = False,
    check: bool = False,
) -> HalfLogdet:
    """1/2 ln det M(z) at every latent of ``op`` by ``method`` (exact or an estimator; not auto).

    ``grad``: the value carries the gradient w.r.t. z and the generator's
    parameters (exact: the QR surrogate; estimators: spectral backpropagation).
    ``check``: an estimator's result comes with the exact spectrum beside it.
    """
    if method == "exact":
        spec = exact_spectrum(op, grad=grad)
        return HalfLogdet("exact", spec.half_logdet, spec, None)
    if generator is None:
        raise ValueError("a stochastic estimator needs a generator (one per latent for batch invariance)")
    with torch.set_grad_enabled(grad):
        est = estimate_half_logdet(op, method, estimator_params(method, estimators), generator=generator)
    value = est.half_logdet if grad else est.half_logdet.detach()
    return HalfLogdet(method, value, exact_spectrum(op) if check else None, est)


__all__ = ["AUTO_EXACT_MAX_NZ", "METHODS", "HalfLogdet", "estimator_params", "half_logdet", "resolve_method"]
