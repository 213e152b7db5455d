"""``gan-probe loglik``: the generator's implicit log-likelihood.

Ramesh & LeCun (2018), eq. 1-2 (smooth coarea formula, non-injectivity ignored):

    ln Q(G(z)) = ln P_Z(z) - 1/2 ln det M(z),    M = J^T J,  J = dG/dz,

in nats, with pixels in the generator's own output units. ``--grid`` evaluates
it over a 2-D plane of latent space (the paper's Figure 3).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_probe import distributed
from gan_probe.analyses.common import (
    Latents,
    Progress,
    check_latent_range,
    check_positive,
    count_latents,
    draw_or_load_latents,
    finite_stats,
    generate,
    given_latents,
    load_latents,
    probe_streams,
    progress_task,
    require_density,
    resolve_geometry,
    seeded_generator,
)
from gan_probe.analyses.memory import check_memory, loglik_memory
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.precision import auto_half_logdet, join_routes
from gan_probe.errors import GanProbeError
from gan_probe.limits import MAX_GRID_SIZE, check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.estimators import params_json
from gan_probe.spectral.plan import METHODS, RunPlan, estimator_params


@dataclass(frozen=True)
class GridParams:
    """A plane z = c + a u_1 + b u_2, a and b on ``size`` points in [-extent, extent].

    ``dims``: the latent axes spanning the plane (None: a seeded random
    orthonormal pair; for nz = 2, axes 0 and 1). ``extent``: None gives the
    whole box for a uniform prior and 3 sigma for a normal one. ``center``:
    ``prior`` (its centre), ``random`` (one seeded prior draw) or a latents file
    (its first row).
    """

    dims: tuple[int, int] | None = None
    extent: float | None = None
    size: int = 15
    center: str = "prior"


@dataclass(frozen=True)
class LoglikParams:
    """``num`` prior draws (or the ``latents`` file); ``method`` exact, an estimator's name or auto;
    ``estimators`` estimator name -> its parameter dataclass (missing: that estimator's defaults);
    ``check`` adds the exact value beside an estimate; ``grid`` a latent plane too."""

    num: int = 16
    latents: Latents = None
    method: str = "exact"
    batch_size: int = 16
    chunk_size: int | None = None
    seed: int = 0
    grid: GridParams | None = None
    estimators: Mapping[str, Any] | None = None
    check: bool = False
    geometry: str = "auto"

    def validate(self) -> None:
        check_positive("the batch size", self.batch_size, "batch_size")
        if self.chunk_size is not None:
            check_count(self.chunk_size, "the chunk size", param="chunk_size")
        if self.grid is not None:
            check_count(self.grid.size, "the grid's points per side", param="grid.size", low=2, high=MAX_GRID_SIZE)
        if self.method not in METHODS:
            raise GanProbeError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}", param="method")


@dataclass
class LoglikValues:
    """Per-latent results, all (n,) float64 tensors (bools for the flags)."""

    z: torch.Tensor
    log_prior: torch.Tensor
    half_logdet: torch.Tensor
    lambda_max: torch.Tensor
    lambda_min: torch.Tensor
    condition: torch.Tensor
    singular: torch.Tensor
    precision_warning: torch.Tensor
    method: str = "exact"
    # stochastic estimators only (None for exact): probe standard error and interval of 1/2 ln det M,
    # products with M per latent, spectrum known to leave the polynomial's interval
    stderr: torch.Tensor | None = None
    interval: torch.Tensor | None = None
    num_matvecs: int | None = None
    bounds_violated: torch.Tensor | None = None
    # --check: the exact 1/2 ln det M next to the estimate
    exact_half_logdet: torch.Tensor | None = None
    # latents read in the sphere geometry (the generator ignores |z|, docs/design.md §1.4)
    sphere: torch.Tensor | None = None
    # --dtype auto (exact method): the latents recomputed in float64; their flags are float64's, and a latent
    # still flagged precision_warning is rounding noise, left out of the summary's ln Q
    promoted: torch.Tensor | None = None
    # the exact route(s) that ran (docs/design.md §2.2): dense (J held, QR) or gram (M = J^T J by blocks)
    exact_route: str | None = None

    @property
    def rounding_noise(self) -> torch.Tensor:
        """(n,) bool: ln Q known to be rounding noise (still flagged after --dtype auto's float64 recomputation)."""
        if self.promoted is None:
            return torch.zeros_like(self.precision_warning)
        return self.precision_warning

    @property
    def loglik(self) -> torch.Tensor:
        return self.log_prior - self.half_logdet

    @property
    def error(self) -> torch.Tensor | None:
        """(n,) error of ln Q against exact [nats] (estimate - exact), with --check."""
        if self.exact_half_logdet is None:
            return None
        return self.exact_half_logdet - self.half_logdet

    def per_sample(self) -> list[dict[str, Any]]:
        rows = []
        nz = self.z.shape[1]
        error = self.error
        for i in range(self.z.shape[0]):
            row: dict[str, Any] = {
                "index": i,
                "log_prior": float(self.log_prior[i]),
                "half_logdet": float(self.half_logdet[i]),
                "loglik": float(self.loglik[i]),
                "lambda_max": float(self.lambda_max[i]),
                "lambda_min": float(self.lambda_min[i]),
                "condition": float(self.condition[i]),
                "singular": bool(self.singular[i]),
                "precision_warning": bool(self.precision_warning[i]),
                "geometry": "sphere" if self.sphere is not None and bool(self.sphere[i]) else "euclidean",
            }
            if self.promoted is not None:
                row["promoted"] = bool(self.promoted[i])
            if self.stderr is not None:
                row["half_logdet_stderr"] = float(self.stderr[i])
            if self.interval is not None:
                row["half_logdet_interval"] = [float(self.interval[i, 0]), float(self.interval[i, 1])]
            if self.bounds_violated is not None:
                row["bounds_violated"] = bool(self.bounds_violated[i])
            if error is not None and self.exact_half_logdet is not None:
                row["exact_half_logdet"] = float(self.exact_half_logdet[i])
                row["exact_loglik"] = float(self.log_prior[i] - self.exact_half_logdet[i])
                row["error_nats"] = float(error[i])
                row["error_nats_per_dim"] = float(error[i]) / nz
                if self.interval is not None:
                    row["interval_covers_exact"] = bool(
                        self.interval[i, 0] <= self.exact_half_logdet[i] <= self.interval[i, 1]
                    )
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        ll = self.loglik
        noise = self.rounding_noise
        out = {
            "loglik": finite_stats(ll[~noise]),
            "num_samples": int(ll.numel()),
            "num_finite": int(torch.isfinite(ll).sum()),
            "num_singular": int(self.singular.sum()),
            "num_precision_warning": int(self.precision_warning.sum()),
            "num_sphere": int(self.sphere.sum()) if self.sphere is not None else 0,
            "condition_median": finite_stats(self.condition)["median"],
            **self._estimator_summary(),
        }
        if self.promoted is not None:
            out["num_promoted"] = int(self.promoted.sum())
            out["num_rounding_noise"] = int(noise.sum())
        return out

    def _estimator_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.exact_route is not None:
            out["exact_route"] = self.exact_route
        if self.num_matvecs is not None:
            out["num_matvecs_per_latent"] = self.num_matvecs
        if self.bounds_violated is not None:
            out["num_bounds_violated"] = int(self.bounds_violated.sum())
        error = self.error
        if error is not None and self.exact_half_logdet is not None:
            abs_error = finite_stats(error.abs())
            nz = self.z.shape[1]
            per_dim = {k: None if v is None else v / nz for k, v in abs_error.items()}
            out["check"] = {
                "median_abs_error_nats": abs_error["median"],
                "max_abs_error_nats": abs_error["max"],
                "median_abs_error_nats_per_dim": per_dim["median"],
                "max_abs_error_nats_per_dim": per_dim["max"],
            }
            if self.interval is not None:
                ok = torch.isfinite(self.exact_half_logdet)
                covered = (self.interval[:, 0] <= self.exact_half_logdet) & (
                    self.exact_half_logdet <= self.interval[:, 1]
                )
                out["check"]["interval_coverage"] = float(covered[ok].double().mean()) if ok.any() else None
        return out


@dataclass
class GridResult:
    center: torch.Tensor  # (nz,)
    basis: torch.Tensor  # (2, nz) orthonormal rows
    dims: tuple[int, int] | None
    coords: torch.Tensor  # (size,) offsets along each basis vector
    values: LoglikValues  # size*size points, row-major: row = b (second axis), column = a
    images: torch.Tensor  # (size*size, C, H, W) on the CPU


@dataclass
class LoglikResult:
    """ln Q at the latents (``values``), their images, and the latent plane (``grid``) when asked for."""

    params: LoglikParams
    values: LoglikValues
    images: torch.Tensor
    grid: GridResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the run's plan (method, exact route, chunk, block), shared by the latents and the grid
    plan: RunPlan | None = None

    @property
    def loglik(self) -> torch.Tensor:
        """(n,) ln Q(G(z)) [nats] at the latents; -inf where J is singular."""
        return self.values.loglik

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.values.method,
            "requested_method": self.params.method,
            "summary": self.values.summary(),
            "samples": self.values.per_sample(),
        }
        choice = self.plan.choice_json() if self.plan is not None else None
        if choice is not None:
            out["method_choice"] = choice
        if self.grid is not None:
            g = self.grid
            size = g.coords.numel()
            out["grid"] = {
                "dims": list(g.dims) if g.dims is not None else None,
                "center": g.center,
                "basis": g.basis,
                "coords": g.coords,
                "size": size,
                "loglik": g.values.loglik.reshape(size, size),
                "summary": g.values.summary(),
            }
        return out


def evaluate_loglik(
    gen: LoadedGenerator,
    z: torch.Tensor,
    *,
    method: str = "exact",
    batch_size: int = 16,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    description: str = "log-likelihood",
    estimators: Mapping[str, Any] | None = None,
    seed: int = 0,
    check: bool = False,
    geometry: str = "auto",
    plan: RunPlan | None = None,
) -> LoglikValues:
    """ln Q(G(z)) and the spectrum statistics for latents z (n, nz), batch by batch.

    ``plan``: the run's (:func:`gan_probe.analyses.plan.plan_run`: method, exact route, chunk, block); None
    plans a run of these latents here from ``method`` (exact, an estimator's name or auto), ``batch_size``
    and ``chunk_size``, which a given plan overrides.
    For an estimator, lambda_max is its own estimate (a Ritz value), lambda_min
    and the condition number are unknown (NaN, null in JSON) unless ``check``
    also computes the exact spectrum, which then fills them and ``exact_half_logdet``.
    ``geometry``: :func:`resolve_geometry`; a sphere latent's ``log_prior`` is ln P_U(u) = -ln|S^{nz-1}|
    and its ``half_logdet`` that of the tangent metric (docs/design.md §1.4).
    """
    if plan is None:
        plan = plan_run(
            gen, batch=min(batch_size, max(1, z.shape[0])), method=method, estimators=estimators, chunk_size=chunk_size
        )
    method = plan.method
    geometry = resolve_geometry(gen, geometry)
    z = z.to(torch.float64)

    def one(sl: slice) -> dict[str, Any]:
        streams = probe_streams(seed, sl.start, sl.stop)
        # with --dtype auto, the exact method recomputes in float64 the latents flagged in float32
        res, up = auto_half_logdet(
            gen,
            z[sl],
            plan,
            estimators=estimators,
            generator=streams,
            check=check,
            geometry=geometry,
        )
        half, est, st = res.value.detach().cpu(), res.estimate, res.stats
        stats = [st["lambda_max"], st["lambda_min"], st["condition"], st["singular"], st["precision_warning"]]
        part: dict[str, Any] = {
            "columns": [half, *(x.cpu() for x in stats), res.sphere.cpu(), res.log_base.cpu()],
            "route": res.route,
            "promoted": up,
        }
        if est is not None:
            part["num_matvecs"] = est.num_matvecs
            part["stderr"] = est.stderr.cpu() if est.stderr is not None else torch.full_like(half, float("nan"))
            part["interval"] = est.interval.cpu() if est.interval is not None else None
            part["violated"] = est.bounds_violated.cpu() if est.bounds_violated is not None else None
            part["exact"] = res.exact_value.cpu() if res.exact_value is not None else None
        return part

    # the batches are shared out over the ranks under torchrun, and gathered back in order
    with progress_task(progress, description, distributed.local_count(z.shape[0], batch_size)) as advance:
        parts, _ = distributed.map_batches(z.shape[0], batch_size, one, advance=advance, main_work=True)
    route: str | None = None
    for part in parts:
        route = join_routes(route, part["route"])
    promoted = [part["promoted"] for part in parts]

    def joined(key: str) -> list[torch.Tensor]:
        return [part[key] for part in parts if part.get(key) is not None]

    stderr, interval, violated, exact_parts = joined("stderr"), joined("interval"), joined("violated"), joined("exact")
    num_matvecs = parts[-1].get("num_matvecs")
    half_c, lmax_c, lmin_c, cond_c, sing_c, pwarn_c, sphere_c, base_c = (
        torch.cat(c) for c in zip(*(part["columns"] for part in parts))
    )
    log_prior = torch.where(sphere_c, base_c, gen.prior.log_prob(z))
    values = LoglikValues(z, log_prior, half_c, lmax_c, lmin_c, cond_c, sing_c, pwarn_c, method=method, sphere=sphere_c)
    values.exact_route = route
    if method != "exact":
        values.stderr = torch.cat(stderr)
        values.interval = torch.cat(interval) if interval else None
        values.bounds_violated = torch.cat(violated) if violated else None
        values.num_matvecs = num_matvecs
        values.exact_half_logdet = torch.cat(exact_parts) if exact_parts else None
    elif check:
        values.exact_half_logdet = values.half_logdet.clone()
    if method == "exact" and gen.auto_float64:
        values.promoted = torch.cat(promoted)
    return values


def latent_plane(gen: LoadedGenerator, grid: GridParams, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(center (nz,), basis (2, nz), coords (size,)) of the plane described by ``grid``."""
    nz = gen.nz
    if grid.size < 2:
        raise GanProbeError(f"the grid needs at least 2 points per side, got {grid.size}", param="grid.size")
    if grid.extent is not None:
        check_positive("the grid extent", grid.extent, "grid.extent")
    rng = seeded_generator(seed)
    if grid.center == "prior":
        center = torch.full((nz,), gen.prior.center, dtype=torch.float64)
    elif grid.center == "random":
        center = gen.prior.sample(1, nz, generator=seeded_generator(seed + 1))[0]
    else:
        center = load_latents(grid.center, nz, param="grid.center")[0]
    dims = grid.dims if grid.dims is not None else ((0, 1) if nz == 2 else None)
    if dims is not None:
        i, j = dims
        if not (0 <= i < nz and 0 <= j < nz) or i == j:
            raise GanProbeError(f"grid axes {i},{j}: need two different axes in 0..{nz - 1}", param="grid.dims")
        basis = torch.zeros(2, nz, dtype=torch.float64)
        basis[0, i] = basis[1, j] = 1.0
    else:
        if nz < 2:
            raise GanProbeError("a latent plane needs nz >= 2", param="grid")
        q, _ = torch.linalg.qr(torch.randn(nz, 2, generator=rng, dtype=torch.float64))
        basis = q.T.contiguous()
    if grid.extent is not None:
        extent = grid.extent
    elif gen.prior.kind == "uniform":
        extent = 0.5 * (gen.prior.high - gen.prior.low)
    else:
        extent = 3.0 * gen.prior.sigma
    coords = torch.linspace(-extent, extent, grid.size, dtype=torch.float64)
    return center, basis, coords


def run_loglik(gen: LoadedGenerator, params: LoglikParams, *, progress: Progress | None = None) -> LoglikResult:
    """Evaluate ln Q at prior draws (or given latents) and, with a grid, over a latent plane."""
    params.validate()
    require_density(gen, "loglik")
    given = given_latents(gen, params.latents)
    num = count_latents(given, params.num)
    grid_size = params.grid.size if params.grid is not None else None
    # one plan for the latents and the grid: the largest batch either runs
    plan = plan_run(
        gen,
        batch=min(params.batch_size, max(num, grid_size**2 if grid_size else 1)),
        method=params.method,
        estimators=params.estimators,
        chunk_size=params.chunk_size,
    )
    estimate = loglik_memory(
        gen, plan, num=num, latents_given=given is not None, estimators=params.estimators, grid_size=grid_size
    )
    check_memory(estimate)
    z = given if given is not None else draw_or_load_latents(gen, num=params.num, latents=None, seed=params.seed)
    grid_spec = latent_plane(gen, params.grid, params.seed) if params.grid is not None else None
    zg = None
    if grid_spec is not None:
        center, basis, coords = grid_spec
        a, b = torch.meshgrid(coords, coords, indexing="xy")  # row = b, column = a
        zg = center + a.reshape(-1, 1) * basis[0] + b.reshape(-1, 1) * basis[1]
        check_latent_range(zg, gen, "grid.extent", "the grid's latents")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    values = evaluate_loglik(
        gen,
        z,
        plan=plan,
        batch_size=params.batch_size,
        progress=progress,
        estimators=params.estimators,
        seed=params.seed,
        check=params.check,
        geometry=params.geometry,
    )
    timings["samples_s"] = time.perf_counter() - t0
    images = generate(gen, z, params.batch_size)
    grid = None
    if grid_spec is not None and zg is not None and params.grid is not None:
        center, basis, coords = grid_spec
        t0 = time.perf_counter()
        gvalues = evaluate_loglik(
            gen,
            zg,
            plan=plan,
            batch_size=params.batch_size,
            progress=progress,
            description="grid",
            estimators=params.estimators,
            seed=params.seed + 1,
            geometry=params.geometry,
        )
        timings["grid_s"] = time.perf_counter() - t0
        dims = params.grid.dims if params.grid.dims is not None else ((0, 1) if gen.nz == 2 else None)
        grid = GridResult(center, basis, dims, coords, gvalues, generate(gen, zg, params.batch_size))
    return LoglikResult(params, values, images, grid, timings, plan)


def estimator_parameters(params: LoglikParams, method: str) -> dict[str, Any] | None:
    """The parameters the estimator ``method`` ran with (None for exact), as plain JSON."""
    return None if method == "exact" else params_json(estimator_params(method, params.estimators))


__all__ = [
    "GridParams",
    "GridResult",
    "LoglikParams",
    "LoglikResult",
    "LoglikValues",
    "estimator_parameters",
    "evaluate_loglik",
    "latent_plane",
    "run_loglik",
]
