"""The run plan: what a run will do, decided once before any work (docs/design.md §2.2, §3.6, §9).

A :class:`RunPlan` names the method (``--method auto`` resolved), the exact route (dense or Gram), the
latent axes per batched JVP (the chunk) and the Gram route's block. :func:`make_plan` decides all four
from numbers alone, :class:`PlanSizes`: nz, N, the batch, the dtype's bytes, the activations of one
forward pass and the memory available. The analyses measure those once per run
(:func:`gan_probe.analyses.plan.plan_run`, which also agrees on the memory across torchrun ranks), and the
memory check (:mod:`gan_probe.analyses.memory`), the spectrum
(:func:`gan_probe.spectral.logdet.half_logdet`) and the report all read the same plan, so what was
counted is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import ESTIMATORS, get_estimator
from gan_probe.spectral.jacobian import default_chunk_size
from gan_probe.spectral.route import RouteChoice, choose_route

METHODS: tuple[str, ...] = ("exact", *ESTIMATORS, "auto")

#: The cost of one product of the exact method's, in estimator products (one JVP + one VJP each): the dense
#: route takes one JVP per latent axis, batched over up to 1024 axes, where an estimator's products run step
#: by step. Measured on a CPU (docs/performance.md): exact's per-axis cost, QR included, was 0.42 (nz 100)
#: and 0.56 (nz 128) of slq's per-product cost on the 64x64x3 DCGAN, 0.73 on a StyleGAN2 in w+ (nz 2,048).
#: The Gram route takes a JVP and a VJP per axis: 1.
EXACT_PRODUCT_COST = {"dense": 0.5, "gram": 1.0}

#: ``auto`` takes exact while its estimated cost is at most this many times slq's: exact has no error
#: and gives the spectrum and its flags, where slq at its default budget is off by 0.13 nats per
#: dimension at cond(M) = 1e6 and 0.42 on a StyleGAN2 in w+ (docs/performance.md), so exact is worth
#: up to twice the time.
AUTO_EXACT_COST_FACTOR = 2.0

#: the share of free memory the tangents of one chunk may take (J and the QR workspace come first)
CHUNK_MEMORY_SHARE = 0.5


def exact_linalg_flops(route: str, nz: int, output_dim: int) -> float:
    """Float64 flops of the exact method's factorisation for one latent: the dense route's QR of J (N x nz)
    and SVD of R, ``2 N nz^2 + 2 nz^3``; the Gram route's symmetric eigensolver, ``(4/3) nz^3`` (values only)."""
    if route == "gram":
        return 4.0 / 3.0 * nz**3
    return 2.0 * output_dim * nz**2 + 2.0 * nz**3


@dataclass(frozen=True)
class MethodCosts:
    """The ``auto`` rule's figures, in estimator products per latent: ``exact`` (route ``route``), ``slq``
    (its steps x probes), the ``factor`` exact may cost more, and whether exact fits in memory."""

    exact: float
    slq: float
    route: str
    factor: float
    exact_fits: bool | None

    @property
    def choice(self) -> str:
        if self.exact_fits is False:
            return "slq"
        return "exact" if self.exact <= self.factor * self.slq else "slq"


def estimator_params(method: str, estimators: Mapping[str, Any] | None) -> Any:
    """The parameters of estimator ``method`` in ``estimators`` (name -> dataclass), else its defaults."""
    if estimators is not None and method in estimators:
        return estimators[method]
    return get_estimator(method).default_params()


def method_costs(
    nz: int,
    estimators: Mapping[str, Any] | None = None,
    *,
    exact_fits: bool | None = None,
    route: str = "dense",
    output_dim: int | None = None,
    product_flops: float | None = None,
) -> MethodCosts:
    """The costs ``auto`` compares (docs/design.md §3.6).

    exact = ``EXACT_PRODUCT_COST[route]`` x nz (+ the factorisation's flops over ``product_flops``, the
    flops of one product, when both it and ``output_dim`` are known: for deep generators the products
    dominate and it is left out), slq = steps x probes of its parameters in ``estimators`` (else defaults).
    """
    if route not in EXACT_PRODUCT_COST:
        raise GanProbeError(f"unknown exact route {route!r}: use dense or gram", param="route")
    exact = EXACT_PRODUCT_COST[route] * nz
    if output_dim is not None and product_flops is not None and product_flops > 0:
        exact += exact_linalg_flops(route, nz, output_dim) / product_flops
    slq = float(get_estimator("slq").num_products(estimator_params("slq", estimators)))
    return MethodCosts(exact, slq, route, AUTO_EXACT_COST_FACTOR, exact_fits)


def resolve_method(
    method: str,
    nz: int,
    estimators: Mapping[str, Any] | None = None,
    *,
    exact_fits: bool | None = None,
    route: str = "dense",
    output_dim: int | None = None,
    product_flops: float | None = None,
) -> str:
    """The method that runs: ``method`` itself, or for ``auto`` the choice by cost and memory
    (docs/design.md §3.6, :func:`method_costs`): slq whenever ``exact_fits`` is False (the exact spectrum
    fits in memory by neither the dense nor the Gram route, :attr:`gan_probe.spectral.route.RouteChoice.fits`;
    None: not known), else exact when its estimated cost, ``EXACT_PRODUCT_COST[route]`` x nz products (plus
    the factorisation when ``output_dim`` and ``product_flops`` are given), is at most
    AUTO_EXACT_COST_FACTOR times slq's steps x probes, else slq. With the defaults (slq 100 x 4 = 400
    products, dense route) that is exact up to nz = 1,600."""
    if method not in METHODS:
        raise GanProbeError(f"unknown method {method!r}: use one of {', '.join(METHODS)}", param="method")
    if method != "auto":
        return method
    costs = method_costs(
        nz, estimators, exact_fits=exact_fits, route=route, output_dim=output_dim, product_flops=product_flops
    )
    return costs.choice


@dataclass(frozen=True)
class PlanSizes:
    """What a run is planned from: ``nz``, ``output_dim`` (N), ``batch`` (the most latents in one batch),
    ``itemsize`` (the generator dtype's bytes), ``activations`` (the activation elements of one forward pass
    per latent, measured), ``available`` (the memory free for the working set, in bytes; None: not known)
    and whether the generator runs on a GPU."""

    nz: int
    output_dim: int
    batch: int
    itemsize: int
    activations: int
    available: int | None
    on_gpu: bool = False


def choose_chunk(sizes: PlanSizes) -> int:
    """Latent axes per batched JVP call when ``--chunk-size`` is not given (docs/design.md §9).

    The axes whose primal and tangent activations (``2 b c A e``) fit in CHUNK_MEMORY_SHARE of the free
    memory left after J and its float64 QR copy: on a GPU as many as fit (more axes in flight, more
    throughput, up to nz); on the CPU at most the fixed forward budget of
    :func:`gan_probe.spectral.jacobian.default_chunk_size` (more measured no faster there), fewer when
    memory is short (a StyleGAN2's activations at 1,024 axes take tens of GB). At least 1; the default
    when the free memory cannot be told.
    """
    nz, batch, e = sizes.nz, sizes.batch, sizes.itemsize
    default = default_chunk_size(batch, nz)
    if sizes.available is None:
        return default
    left = sizes.available - batch * sizes.output_dim * nz * (e + 16)
    per_axis = 2 * batch * sizes.activations * e
    fits = int(CHUNK_MEMORY_SHARE * left // per_axis) if left > 0 else 0
    return max(1, min(nz if sizes.on_gpu else default, fits))


@dataclass(frozen=True)
class RunPlan:
    """What one run does: ``method`` (exact or an estimator's name: ``auto`` resolved), ``route`` (how the
    exact spectrum is taken: ``dense`` or ``gram``), ``chunk`` (latent axes per batched JVP; None: the
    default budget) and ``block`` (identity columns per JVP-VJP pair on the Gram route; None: the chunk).

    A plan made by :func:`make_plan` also keeps what it was decided from and by: ``requested`` (the method
    asked for), ``memory`` (each route's working set and the memory available), ``costs`` (the ``auto``
    rule's figures, for ``auto`` only), ``sizes``, the ``chunk_size`` asked for, and whether the run takes
    eigenvectors (``vectors``) or the gradient (``grad``). A plan written by hand (``RunPlan("exact",
    route="gram")``) names the decisions alone.
    """

    method: str
    route: str = "dense"
    chunk: int | None = None
    block: int | None = None
    requested: str | None = None
    memory: RouteChoice | None = None
    costs: MethodCosts | None = None
    sizes: PlanSizes | None = None
    chunk_size: int | None = None
    vectors: bool = False
    grad: bool = False

    @property
    def auto(self) -> bool:
        """Whether the method was chosen by ``--method auto``."""
        return self.requested == "auto"

    def in_float64(self) -> RunPlan:
        """The plan for recomputing latents with a float64 copy of the generator (``--dtype auto``): the exact
        method, its route, chunk and block decided anew for 8-byte elements from the same sizes (no new
        measurement). A plan without sizes (written by hand) is returned as it is, with the exact method."""
        if self.sizes is None:
            return replace(self, method="exact", requested=None, costs=None)
        return make_plan(
            replace(self.sizes, itemsize=8),
            method="exact",
            chunk_size=self.chunk_size,
            vectors=self.vectors,
            grad=self.grad,
        )

    def choice_json(self) -> dict[str, Any] | None:
        """``--method auto``'s choice and its figures, for the report (None for any other method)."""
        if not self.auto or self.costs is None:
            return None
        return {
            "method": self.method,
            "route": self.route,
            "exact_fits": self.costs.exact_fits,
            "exact_products": self.costs.exact,
            "slq_products": self.costs.slq,
            "factor": self.costs.factor,
        }

    def choice_note(self) -> str | None:
        """``--method auto``'s choice in one sentence (None for any other method)."""
        if not self.auto or self.costs is None:
            return None
        c = self.costs
        cost = (
            f"exact costs about {c.exact:.0f} products per latent ({c.route} route) against slq's {c.slq:.0f} "
            f"(exact is taken up to {c.factor:g}x slq's cost)"
        )
        if c.exact_fits is False:
            why = f"the exact spectrum of one batch fits in memory by neither route; {cost}"
        elif c.exact_fits is None:
            why = f"{cost}; the free memory could not be told"
        else:
            why = cost
        return f"--method auto chose {self.method}: {why}"


def make_plan(
    sizes: PlanSizes,
    *,
    method: str = "exact",
    estimators: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    route: str = "auto",
    vectors: bool = False,
    grad: bool = False,
) -> RunPlan:
    """The :class:`RunPlan` of a run of batches of up to ``sizes.batch`` latents.

    The chunk: ``chunk_size`` (at most nz) when given, else :func:`choose_chunk`. The route:
    :func:`gan_probe.spectral.route.choose_route` with the measured activations and the memory available
    (``route`` forces one; with ``grad`` always dense). The method: ``method`` itself, or for ``auto``
    :func:`resolve_method` with whether that route fits and its cost. ``vectors``: the run takes
    eigenvectors (more memory on either route).
    """
    if method not in METHODS:
        raise GanProbeError(f"unknown method {method!r}: use one of {', '.join(METHODS)}", param="method")
    if chunk_size is not None and chunk_size < 1:
        raise GanProbeError(f"the chunk size must be at least 1, got {chunk_size}", param="chunk_size")
    chunk = min(sizes.nz, chunk_size) if chunk_size else choose_chunk(sizes)
    choice = choose_route(
        batch=sizes.batch,
        output_dim=sizes.output_dim,
        nz=sizes.nz,
        itemsize=sizes.itemsize,
        chunk=chunk,
        activations=sizes.activations,
        available=sizes.available,
        route=route,
        vectors=vectors,
        grad=grad,
    )
    costs = None
    resolved = method
    if method == "auto":
        costs = method_costs(sizes.nz, estimators, exact_fits=choice.fits, route=choice.route)
        resolved = costs.choice
    return RunPlan(
        method=resolved,
        route=choice.route,
        chunk=chunk,
        block=choice.block,
        requested=method,
        memory=choice,
        costs=costs,
        sizes=sizes,
        chunk_size=chunk_size,
        vectors=vectors,
        grad=grad,
    )


__all__ = [
    "AUTO_EXACT_COST_FACTOR",
    "CHUNK_MEMORY_SHARE",
    "EXACT_PRODUCT_COST",
    "METHODS",
    "MethodCosts",
    "PlanSizes",
    "RunPlan",
    "choose_chunk",
    "estimator_params",
    "exact_linalg_flops",
    "make_plan",
    "method_costs",
    "resolve_method",
]
