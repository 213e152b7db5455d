"""Stochastic estimators of ln det M, M = J^T J, from matrix-vector products only. docs/design.md §3.

One module per method, named after it, each registering itself with its own
frozen parameter dataclass (the single source of its defaults):

- :mod:`.chebyshev` -- Han, Malioutov, Avron & Shin (2017), the algorithm of
  Ramesh & LeCun (2018, Algorithm 1) with its scale term corrected;
- :mod:`.taylor` -- Boutsidis, Drineas, Kambadur, Kontopoulou & Zouzias (2017);
- :mod:`.slq` -- stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) by
  Golub-Kahan bidiagonalisation of J itself.

Shared pieces: :mod:`.base` (the result type, probes, the registry) and
:mod:`.lanczos` (Golub-Kahan, Ritz values and the spectral bounds).

Every estimator is a function of a :class:`~gan_probe.spectral.operator.JacobianOperator`
and its parameters; it works on a batch of latents with all probes batched
(vmap over probes; no Python loop per probe), draws Rademacher probes from
explicit ``torch.Generator`` s, accumulates in float64, and returns a
:class:`LogdetEstimate` holding **1/2 ln det M** per latent (the quantity in
ln Q = ln P_Z - 1/2 ln det M), differentiable w.r.t. z and the generator's
parameters when grad mode is on ("spectral backpropagation").
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators.base import REGISTRY, Estimator, Generators, LogdetEstimate, params_json
from gan_probe.spectral.estimators.chebyshev import ChebyshevParams
from gan_probe.spectral.estimators.slq import SLQParams
from gan_probe.spectral.estimators.taylor import TaylorParams
from gan_probe.spectral.operator import JacobianOperator

# Every module of this package but the shared ones is an estimator that registers itself on import.
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "lanczos", "synthetic"):
        importlib.import_module(f"{__name__}.{_info.name}")

#: The registered estimators' names, in registration order.
ESTIMATORS: tuple[str, ...] = tuple(REGISTRY)


def get_estimator(name: str) -> Estimator:
    """The registered estimator called ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise GanProbeError(f"unknown estimator {name!r}: use one of {', '.join(REGISTRY)}", param="method") from None


def estimate_half_logdet(
    op: JacobianOperator, method: str, params: Any = None, *, generator: Generators
) -> LogdetEstimate:
    """1/2 ln det M at every latent of ``op`` by estimator ``method`` (``params``: its dataclass; None: defaults)."""
    est = get_estimator(method)
    if params is None:
        params = est.default_params()
    if not isinstance(params, est.params):
        raise TypeError(f"{method} takes {est.params.__name__}, got {type(params).__name__}")
    return est.run(op, params, generator=generator)


__all__ = [
    "ESTIMATORS",
    "REGISTRY",
    "ChebyshevParams",
    "Estimator",
    "Generators",
    "LogdetEstimate",
    "SLQParams",
    "TaylorParams",
    "estimate_half_logdet",
    "get_estimator",
    "params_json",
]
