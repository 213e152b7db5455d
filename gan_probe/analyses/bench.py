"""``gan-probe bench``: the exact method timed against its limit, the naive peer and the estimators.

All in one run, on one generator and device (docs/design.md §9):

- ``limit``: the cost floor of the exact method, nz forward-mode products
  (:meth:`JacobianOperator.dense`, chunked as ``loglik`` chunks them) plus
  one QR of J in float64;
- ``exact``: :func:`gan_probe.spectral.route.exact_spectrum` (what ``loglik``
  runs), target within 1.3x of the limit;
- ``naive``: ``torch.autograd.functional.jacobian`` in its default reverse
  mode, one latent at a time, followed by the same float64 spectrum; timed on
  a few latents and compared per latent (target >= 50x on a 64x64x3 DCGAN);
- each estimator at its budget, with its error against exact in nats and
  nats per dimension, and how many estimates flag ``bounds_violated``
  (target: exact faster than the paper's Chebyshev setting at nz = 128);
- ``gradient``: value and gradient w.r.t. z of the exact ln det through a
  differentiable J, target <= 3.5x the value alone.

Every timing is the median of ``repeats`` runs after one warm-up run (the naive
peer, which takes tens of seconds per latent, gets no warm-up beyond a
forward/backward pass), with ``torch.cuda.synchronize`` around each on CUDA.

``spectrum`` mode instead measures estimator accuracy on linear generators
G(z) = A z with log-spaced eigenvalues of M (known ln det) over a range of
condition numbers: the median error in nats per dimension and the slq
interval's coverage over independent probe seeds, several slq budget splits
(steps x probes) side by side, and each row's cost against the exact method's
(timed up to ``exact_max_nz``, extrapolated as nz^3 beyond and labelled so). From
nz = 2,048 (a power of two) the operator is a Walsh-Hadamard one with the same
spectrum (no nz x nz matrix), so nz = 16,384 runs on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_probe.analyses.common import finite_stats, jacobian_operator, probe_streams, seeded_generator
from gan_probe.analyses.plan import plan_run
from gan_probe.analyses.targets import SLQ_MAX_PRODUCTS, TARGETS
from gan_probe.analyses.timing import machine_info, synchronize, time_call
from gan_probe.device import describe_device
from gan_probe.errors import GanProbeError
from gan_probe.limits import MAX_COUNT, MAX_NZ, MAX_REPEATS, check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.synthetic import (
    OPERATORS,
    resolve_operator,
    synthetic_dcgan,
    synthetic_linear,
    synthetic_stylegan2,
    synthetic_stylegan3,
)
from gan_probe.spectral.estimators import ESTIMATORS, ChebyshevParams, LogdetEstimate, estimate_half_logdet
from gan_probe.spectral.exact import spectrum_from_jacobian
from gan_probe.spectral.jacobian import Fn, default_chunk_size
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.plan import estimator_params
from gan_probe.spectral.route import exact_spectrum

#: The synthetic generators ``bench`` and ``bench throughput`` time (spectrum: ``bench spectrum``'s linear ones).
SYNTHETIC_MODELS = (
    "dcgan64",
    "dcgan64-nz128",
    "stylegan2-256",
    "stylegan2-64",
    "stylegan2-32",
    "stylegan3-t-256",
    "stylegan3-t-32",
)
SYNTHETIC = (*SYNTHETIC_MODELS, "spectrum")
DEFAULT_CONDS = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7)
#: (size, channel_multiplier) of the synthetic StyleGAN2s
_STYLEGAN2_SIZES = {"stylegan2-256": (256, 2), "stylegan2-64": (64, 1), "stylegan2-32": (32, 1)}
#: (size, channel_base, channel_max, num_layers) of the synthetic StyleGAN3-Ts: NVIDIA's config T at 256 px,
#: and a small one of the same construction (4 layers, 32 channels at most) for tests
_STYLEGAN3_SIZES = {"stylegan3-t-256": (256, 32768, 512, 14), "stylegan3-t-32": (32, 512, 32, 4)}


@dataclass(frozen=True)
class SyntheticModelParams:
    """A synthetic generator to time instead of a checkpoint (``name`` None: the checkpoint).

    ``name``: one of :data:`SYNTHETIC_MODELS`; ``nz``: a DCGAN's latent size
    (default 100, 128 for dcgan64-nz128); a StyleGAN2's latent ``space`` (z, w
    or w+), ``channels`` (one width at every resolution: a narrow, CPU-sized
    model) and ``style_dim``; the StyleGAN3-Ts take the same three (z_dim = w_dim = style_dim)."""

    name: str | None = None
    nz: int | None = None
    space: str = "w"
    channels: int | None = None
    style_dim: int = 512

    def validate(self) -> SyntheticModelParams:
        if self.name is not None and self.name not in SYNTHETIC_MODELS:
            what = "times a generator, not spectrum (use gan-probe bench spectrum)" if self.name == "spectrum" else ""
            raise GanProbeError(
                f"--synthetic {self.name!r}: {what or 'use one of ' + ', '.join(SYNTHETIC_MODELS)}", param="synthetic"
            )
        if self.nz is not None and self.name is None:
            raise GanProbeError("--synthetic-nz needs --synthetic", param="synthetic_nz")
        if self.nz is not None:
            check_count(self.nz, "--synthetic-nz", param=None, low=2, high=MAX_NZ)
        if self.channels is not None:
            check_count(self.channels, "--synthetic-channels", param=None, high=MAX_NZ)
        check_count(self.style_dim, "--synthetic-style-dim", param=None, high=MAX_NZ)
        return self

    @property
    def stylegan2(self) -> bool:
        return (self.name or "").startswith("stylegan2")

    @property
    def stylegan(self) -> bool:
        """A StyleGAN2 or StyleGAN3: takes ``space``, ``channels`` and ``style_dim``."""
        return (self.name or "").startswith("stylegan")

    def build(self, *, seed: int, device: torch.device, dtype: torch.dtype) -> LoadedGenerator:
        """The synthetic generator, seeded, on ``device`` in ``dtype``."""
        if self.name is None:
            raise GanProbeError("no synthetic model named (--synthetic)", param="synthetic")
        if self.stylegan2:
            size, mult = _STYLEGAN2_SIZES[self.name]
            return synthetic_stylegan2(
                size,
                channel_multiplier=mult,
                space=self.space,
                channels=self.channels,
                style_dim=self.style_dim,
                seed=seed,
                device=device,
                dtype=dtype,
            )
        if self.name in _STYLEGAN3_SIZES:
            size, base, cmax, layers = _STYLEGAN3_SIZES[self.name]
            return synthetic_stylegan3(
                size,
                channel_base=base,
                channel_max=cmax,
                num_layers=layers,
                style_dim=self.style_dim,
                space=self.space,
                channels=self.channels,
                seed=seed,
                device=device,
                dtype=dtype,
            )
        nz = self.nz or (128 if self.name == "dcgan64-nz128" else 100)
        return synthetic_dcgan(nz, seed=seed, device=device, dtype=dtype)


@dataclass(frozen=True)
class LinearModelParams:
    """``bench spectrum``'s linear generators: latent size ``nz`` and the ``operator`` (dense: Haar U, V, an
    nz x nz matrix; hadamard: Walsh-Hadamard, nz a power of two; auto: hadamard from nz 2048 when nz is a power
    of two)."""

    nz: int = 512
    operator: str = "auto"

    def validate(self) -> LinearModelParams:
        check_count(self.nz, "--synthetic-nz", param=None, low=2, high=MAX_NZ)
        if self.operator not in OPERATORS:
            raise GanProbeError(
                f"--synthetic-operator {self.operator!r}: use one of {', '.join(OPERATORS)}",
                param="synthetic_operator",
            )
        if self.operator == "hadamard" and self.nz & (self.nz - 1):
            raise GanProbeError(
                f"--synthetic-operator hadamard needs a power-of-two --synthetic-nz, got {self.nz}",
                param="synthetic_operator",
            )
        return self


@dataclass(frozen=True)
class BenchParams:
    """``num`` latents timed together; ``repeats`` timed runs (median); ``naive_latents`` latents for
    the reverse-mode peer (0 skips it); ``methods`` estimators to time with ``estimators`` (name ->
    parameters; missing: defaults); ``gradient`` time the exact gradient; spectrum mode: ``conds``
    condition numbers of M, ``num`` probe seeds, ``splits`` slq (steps, probes) splits, ``exact_max_nz`` the
    largest nz at which exact is timed (extrapolated beyond)."""

    num: int = 4
    repeats: int = 3
    naive_latents: int = 1
    methods: tuple[str, ...] = ESTIMATORS
    estimators: Mapping[str, Any] | None = None
    chunk_size: int | None = None
    gradient: bool = True
    seed: int = 0
    conds: tuple[float, ...] = DEFAULT_CONDS
    #: time the naive peer on this many output rows only and extrapolate to all N (0: the whole Jacobian)
    naive_rows: int = 0
    #: spectrum mode: slq (steps, probes) splits run side by side (empty: slq at its parameters)
    splits: tuple[tuple[int, int], ...] = ()
    #: spectrum mode: the exact method is timed up to this nz and extrapolated as nz^3 beyond
    exact_max_nz: int = 4096
    #: untimed runs before the timed ones (0: time the first run; for models where one run takes minutes)
    warmup: int = 1
    #: time the limit (nz JVPs + QR) too
    limit: bool = True
    #: time exact's and the limit's JVPs on this many of the nz columns and scale to nz (0: all nz); the QR
    #: and SVD are then timed on an N x nz matrix of the same shape (:func:`column_subset_seconds`)
    columns: int = 0

    def validate(self) -> BenchParams:
        for name, low, high in (
            ("num", 1, MAX_COUNT),
            ("repeats", 1, MAX_REPEATS),
            ("naive_latents", 0, MAX_COUNT),
            ("warmup", 0, MAX_REPEATS),
        ):
            check_count(getattr(self, name), name, param=name, low=low, high=high)
        if self.naive_latents > self.num:
            raise GanProbeError(
                f"the naive peer's latents ({self.naive_latents}) cannot exceed the latents timed ({self.num})",
                param="naive_latents",
            )
        for m in self.methods:
            if m not in ESTIMATORS:
                raise GanProbeError(f"unknown estimator {m!r}: use some of {', '.join(ESTIMATORS)}", param="methods")
        check_count(self.exact_max_nz, "exact_max_nz", param="exact_max_nz", low=2, high=MAX_NZ)
        if self.chunk_size is not None:
            check_count(self.chunk_size, "the chunk size", param="chunk_size")
        check_count(self.naive_rows, "naive_rows", param="naive_rows", low=0)
        check_count(self.columns, "columns", param="columns", low=0)
        if self.columns and (self.methods or self.gradient or (self.naive_latents and not self.naive_rows)):
            raise GanProbeError(
                "--columns times the exact method's cost without its value: use it with --methods none "
                "--no-gradient and --naive-rows (or --naive-latents 0)",
                param="columns",
            )
        for c in self.conds:
            if not (math.isfinite(c) and c >= 1):
                raise GanProbeError(f"condition numbers must be finite and >= 1, got {c!r}", param="conds")
        return self

    def params_for(self, method: str) -> Any:
        return estimator_params(method, self.estimators)


#: ``bench spectrum``'s defaults: 20 probe seeds per condition number, no naive peer (G is linear).
SPECTRUM_DEFAULTS = BenchParams(num=20, naive_latents=0)


def limit_jacobian_qr(op: JacobianOperator) -> torch.Tensor:
    """The exact method's floor: J from nz batched JVPs (the same chunks) + one float64 QR of J. Returns R."""
    with torch.no_grad():
        return torch.linalg.qr(op.dense().to(torch.float64), mode="r").R


def naive_spectra(fn: Fn, z: torch.Tensor) -> torch.Tensor:
    """The naive peer: per latent, torch.autograd.functional.jacobian (reverse mode, one VJP per output)."""
    out = []
    for i in range(z.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda x: fn(x[None])[0], z[i])  # (N, nz)
        out.append(spectrum_from_jacobian(jac[None]).half_logdet)
    return torch.cat(out)


def naive_row_seconds(fn: Fn, z: torch.Tensor, rows: int) -> tuple[float, int]:
    """(seconds per output row, N) of the naive peer on one latent z (1, nz).

    ``torch.autograd.functional.jacobian`` in reverse mode takes one backward
    pass per output value; this times ``rows`` of them (evenly spaced over the
    N outputs) after the one forward pass, so that the whole Jacobian's cost,
    N times a row, can be extrapolated where it would take hours.
    """
    with torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        x = fn(zz).reshape(-1)
        n = x.numel()
        picks = torch.linspace(0, n - 1, min(rows, n)).round().long().tolist()
        torch.autograd.grad(x[picks[0]], zz, retain_graph=True)  # warm-up
        t0 = time.perf_counter()
        for i in picks:
            torch.autograd.grad(x[i], zz, retain_graph=True)
        synchronize(z.device)
        seconds = time.perf_counter() - t0
    return seconds / len(picks), n


def column_picks(nz: int, columns: int) -> list[int]:
    """``columns`` latent axes evenly spread over 0 .. nz - 1 (all nz when columns >= nz)."""
    return sorted(set(torch.linspace(0, nz - 1, min(columns, nz)).round().long().tolist()))


def column_subset_operator(op: JacobianOperator, picks: list[int]) -> JacobianOperator:
    """The operator of u -> G(z + u E) at u = 0 with E the rows ``picks`` of the identity: its Jacobian is
    J's columns ``picks``, built by the same chunked forward-mode products (``op``'s chunk size and routes)."""
    basis = torch.eye(op.nz, dtype=op.z.dtype, device=op.z.device)[picks]  # (k, nz)
    z = op.z.detach()

    def fn(u: torch.Tensor) -> torch.Tensor:
        return op.fn(z + u @ basis)

    u0 = torch.zeros(z.shape[0], len(picks), dtype=z.dtype, device=z.device)
    chunk = op.chunk_size or default_chunk_size(op.batch, op.nz)  # the whole J's chunk, not one of len(picks)
    return JacobianOperator(fn, u0, chunk_size=chunk, routes=op.routes)


def column_subset_seconds(
    op: JacobianOperator, output_dim: int, columns: int, *, repeats: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Exact's and the limit's seconds for all ``op.batch`` latents, their JVPs timed on ``columns`` of the nz
    columns (evenly spread, chunked as the whole J is) and scaled by nz / columns; the float64 QR (limit) and
    QR + SVD (exact, :func:`spectrum_from_jacobian`) timed on a seeded Gaussian matrix of J's shape
    (B, N, nz) in J's dtype, whose cost does not depend on its values. For a generator too slow for nz
    products in the time at hand; the report labels both rows so.

    Each chunk of the JVPs also runs the primal forward pass once, so the scaling is exact when ``columns``
    is a multiple of the chunk; with fewer columns than one chunk the primal is counted nz / columns times
    instead of nz / chunk times and the estimate is high (``whole_chunks`` False in the result)."""
    picks = column_picks(op.nz, columns)
    sub = column_subset_operator(op, picks)
    chunk = int(sub.chunk_size or 1)
    device = op.z.device
    with torch.no_grad():
        t_cols, times_cols, _ = time_call(sub.dense, device, repeats=repeats, warmup=warmup)
        gen = torch.Generator(device=device).manual_seed(seed)
        stand_in = torch.randn(op.batch, output_dim, op.nz, generator=gen, dtype=op.dtype, device=device)
        t_svd, times_svd, _ = time_call(
            lambda: spectrum_from_jacobian(stand_in), device, repeats=repeats, warmup=min(warmup, 1)
        )
        t_qr, times_qr, _ = time_call(
            lambda: torch.linalg.qr(stand_in.to(torch.float64), mode="r").R, device, repeats=repeats, warmup=0
        )
    scale = op.nz / len(picks)
    return {
        "columns_timed": len(picks),
        "nz": op.nz,
        "chunk": chunk,
        "whole_chunks": len(picks) % chunk == 0,
        "jvp_seconds_timed": t_cols,
        "jvp_times_s": times_cols,
        "jvp_seconds_scaled": t_cols * scale,
        "qr_svd_seconds": t_svd,
        "qr_seconds": t_qr,
        "qr_svd_times_s": times_svd,
        "qr_times_s": times_qr,
        "exact_seconds": t_cols * scale + t_svd,
        "limit_seconds": t_cols * scale + t_qr,
        "exact_times_s": [t * scale + t_svd for t in times_cols],
        "limit_times_s": [t * scale + t_qr for t in times_cols],
    }


def peak_memory_bytes(device: torch.device) -> int | None:
    """The process's peak memory so far: the device allocator's peak on CUDA, else the peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux
    except (ImportError, OSError):
        return None


def exact_value_and_gradient(op: JacobianOperator) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/2 ln det M (B,), d/dz (B, nz)) through a differentiable J and the QR surrogate."""
    with torch.enable_grad():
        zz = op.z.detach().clone().requires_grad_(True)
        diff = JacobianOperator(op.fn, zz, chunk_size=op.chunk_size, routes=op.routes)  # the route is learnt once
        half = exact_spectrum(diff, grad=True).half_logdet
        (grad,) = torch.autograd.grad(half.sum(), zz)
    return half.detach(), grad


def error_stats(estimate: torch.Tensor, exact: torch.Tensor, nz: int, interval: torch.Tensor | None) -> dict[str, Any]:
    """Errors of ln Q (= exact - estimated 1/2 ln det) in nats and nats per latent dimension."""
    err = (exact - estimate).double().cpu()
    ok = torch.isfinite(err)
    signed, absolute = finite_stats(err), finite_stats(err.abs())
    out: dict[str, Any] = {
        "mean_error_nats": signed["mean"],
        "median_abs_error_nats": absolute["median"],
        "max_abs_error_nats": absolute["max"],
    }
    for key in list(out):
        out[key.replace("_nats", "_nats_per_dim")] = None if out[key] is None else out[key] / nz
    # an estimate that left its polynomial's interval can overflow or take ln of a negative number
    out["num_nonfinite"] = int((~ok).sum())
    if interval is not None:
        iv = interval.double().cpu()
        ex = exact.double().cpu()
        covered = (iv[:, 0] <= ex) & (ex <= iv[:, 1])
        out["interval_coverage"] = float(covered[ok].double().mean()) if ok.any() else None
        # coverage says little without the width: 2 probes' t quantile (12.7 at 95%) covers almost anything
        width = finite_stats((iv[:, 1] - iv[:, 0])[ok])["median"]
        out["median_interval_width_nats_per_dim"] = None if width is None else width / nz
    return out


def flag_stats(est: LogdetEstimate, exact: torch.Tensor, nz: int) -> dict[str, Any]:
    """How many estimates flag ``bounds_violated``, and the error of the unflagged ones [nats/dim]."""
    if est.bounds_violated is None:
        return {}
    flagged = est.bounds_violated.cpu()
    err = ((exact - est.half_logdet.detach().cpu()).abs() / nz)[~flagged]
    return {
        "num_bounds_violated": int(flagged.sum()),
        "max_abs_error_nats_per_dim_unflagged": finite_stats(err)["max"],
    }


def _row(name: str, seconds: float, times: list[float], num: int, note: str) -> dict[str, Any]:
    return {
        "name": name,
        "seconds": seconds,
        "per_latent_s": seconds / num,
        "times_s": times,
        "num_latents": num,
        "note": note,
    }


@dataclass
class BenchResult:
    """One bench run: ``rows`` (one per method), ``targets`` (docs/design.md §9), the machine."""

    mode: str
    device: str
    dtype: str
    model: dict[str, Any]
    rows: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    machine: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "device": self.device,
            "dtype": self.dtype,
            "machine": self.machine,
            "model": self.model,
            "rows": self.rows,
            "targets": self.targets,
            **self.extra,
        }


def estimator_runs(params: BenchParams) -> list[tuple[str, str, Any]]:
    """(row name, estimator, parameters) per estimator run: slq once per ``params.splits`` split (``slq SxP``)
    when there are splits, else every method at its parameters."""
    runs: list[tuple[str, str, Any]] = []
    for method in params.methods:
        if method == "slq" and params.splits:
            for steps, probes in params.splits:
                split = dataclasses.replace(params.params_for("slq"), steps=steps, probes=probes)
                runs.append((f"slq {steps}x{probes}", "slq", split))
        else:
            runs.append((method, method, params.params_for(method)))
    return runs


def run_bench(gen: LoadedGenerator, params: BenchParams) -> BenchResult:
    """Time exact, its limit, the naive peer, the estimators and the exact gradient on ``gen``."""
    params.validate()
    device = gen.device
    nz = gen.nz
    z = gen.prior.sample(params.num, nz, generator=seeded_generator(params.seed))
    plan = plan_run(gen, batch=params.num, chunk_size=params.chunk_size)  # as loglik --method exact plans
    op = jacobian_operator(gen, z, plan)
    reps = params.repeats
    rows: list[dict[str, Any]] = []

    warm = params.warmup
    ratios: dict[str, float] = {}
    subset = 0 < params.columns < nz
    extra: dict[str, Any] = {}
    if subset:
        cols = column_subset_seconds(op, gen.output_dim, params.columns, repeats=reps, warmup=warm, seed=params.seed)
        extra["column_subset"] = cols
        how = (
            f"{cols['columns_timed']} of {nz} columns' JVPs timed (chunks of {cols['chunk']}), scaled by "
            f"{nz / cols['columns_timed']:.4g}; the float64 {{}} timed on a stand-in matrix of J's shape"
        )
        if not cols["whole_chunks"]:
            how += "; not whole chunks: the primal pass is over-counted, the time is high"
        t_exact = cols["exact_seconds"]
        rows.append(_row("exact", t_exact, cols["exact_times_s"], params.num, note=how.format("QR + SVD")))
        exact_half = torch.full((params.num,), math.nan, dtype=torch.float64)
        if params.limit:
            t_limit = cols["limit_seconds"]
            rows.append(_row("limit", t_limit, cols["limit_times_s"], params.num, note=how.format("QR")))
            ratios["exact_over_limit"] = t_exact / t_limit
    else:
        t_exact, times, spec = time_call(
            lambda: exact_spectrum(op, route=plan.route, block=plan.block), device, repeats=reps, warmup=warm
        )
        exact_half = spec.half_logdet.cpu()
        note = "loglik --method exact (nz JVPs, QR + SVD in float64)"
        rows.append(_row("exact", t_exact, times, params.num, note=note))
    if params.limit and not subset:
        t_limit, times, _ = time_call(lambda: limit_jacobian_qr(op), device, repeats=reps, warmup=warm)
        rows.append(_row("limit", t_limit, times, params.num, note="nz batched JVPs + one float64 QR of J"))
        ratios["exact_over_limit"] = t_exact / t_limit

    if params.naive_latents and params.naive_rows:
        per_row, n_out = naive_row_seconds(gen.flat, op.z[:1], params.naive_rows)
        t_naive = per_row * n_out
        timed = min(params.naive_rows, n_out)
        note = f"reverse mode, one backward per output: {timed} of {n_out} rows timed, extrapolated to all"
        rows.append(_row("naive", t_naive, [t_naive], 1, note=note))
        ratios["naive_over_exact_per_latent"] = t_naive / (t_exact / params.num)
    elif params.naive_latents:
        zn = op.z[: params.naive_latents]
        with torch.enable_grad():
            gen.flat(zn[:1].detach().requires_grad_(True)).sum().backward()  # warm-up: one reverse pass
        t_naive, times, naive_half = time_call(lambda: naive_spectra(gen.flat, zn), device, repeats=1, warmup=0)
        row = _row(
            "naive", t_naive, times, params.naive_latents, note="torch.autograd.functional.jacobian, reverse mode"
        )
        row["max_abs_diff_vs_exact_nats"] = float((naive_half.cpu() - exact_half[: params.naive_latents]).abs().max())
        rows.append(row)
        ratios["naive_over_exact_per_latent"] = (t_naive / params.naive_latents) / (t_exact / params.num)

    for name, method, method_params in estimator_runs(params):

        def run(method: str = method, method_params: Any = method_params) -> LogdetEstimate:
            # fresh probe streams per call: every repeat computes the same estimate
            with torch.no_grad():
                return estimate_half_logdet(
                    op, method, method_params, generator=probe_streams(params.seed, 0, params.num)
                )

        t, times, est = time_call(run, device, repeats=reps, warmup=warm)
        row = _row(name, t, times, params.num, note="")
        row["num_matvecs_per_latent"] = est.num_matvecs
        if method == "slq":
            row.update(steps=method_params.steps, probes=method_params.probes)
        row.update(error_stats(est.half_logdet.detach().cpu(), exact_half, nz, est.interval))
        row.update(flag_stats(est, exact_half, nz))
        if "quadrature_bias" in est.extras:
            bias = finite_stats(est.extras["quadrature_bias"])["median"]
            row["median_quadrature_bias_nats_per_dim"] = None if bias is None else bias / nz
        rows.append(row)
        ratios[f"{name.replace(' ', '_')}_over_exact"] = t / t_exact

    if params.gradient:
        t_grad, times, (half_g, _) = time_call(lambda: exact_value_and_gradient(op), device, repeats=reps, warmup=warm)
        row = _row("gradient", t_grad, times, params.num, note="exact value + d/dz (QR surrogate)")
        row["max_abs_diff_vs_exact_nats"] = float((half_g.cpu() - exact_half).abs().max())
        rows.append(row)
        ratios["gradient_over_value"] = t_grad / t_exact

    for row in rows:
        # per latent: the naive peer runs on fewer latents than the others
        row["ratio_to_exact"] = row["per_latent_s"] / (t_exact / params.num)

    is_dcgan64x3 = gen.arch == "dcgan" and tuple(gen.output_shape) == (3, 64, 64)
    family = style_family(gen.arch)
    is_style_256 = family is not None and tuple(gen.output_shape) == (3, 256, 256)
    paper_cheb = params.params_for("chebyshev") == ChebyshevParams()
    targets = []
    on_device = TARGETS["exact_over_limit"].runs_on(device)
    if "exact_over_limit" in ratios:
        targets.append(TARGETS["exact_over_limit"].check(ratios["exact_over_limit"], applies=on_device))
    if "naive_over_exact_per_latent" in ratios:
        naive = TARGETS[f"{family}_naive_over_exact" if family else "naive_over_exact"]
        stated = is_style_256 if family else is_dcgan64x3
        targets.append(naive.check(ratios["naive_over_exact_per_latent"], applies=stated and naive.runs_on(device)))
    if "chebyshev_over_exact" in ratios:
        cheb = TARGETS["chebyshev_over_exact"]
        stated = nz == 128 and paper_cheb
        targets.append(cheb.check(ratios["chebyshev_over_exact"], applies=stated and cheb.runs_on(device)))
    if "gradient_over_value" in ratios:
        gradient = TARGETS["gradient_over_value"]
        targets.append(gradient.check(ratios["gradient_over_value"], applies=gradient.runs_on(device)))
    return BenchResult(
        mode="model",
        device=describe_device(device),
        dtype=str(gen.dtype).replace("torch.", ""),
        model=gen.describe(),
        rows=rows,
        targets=targets,
        machine=machine_info(device),
        extra={
            "ratios": ratios,
            "num_latents": params.num,
            "repeats": reps,
            "nz": nz,
            "output_dim": gen.output_dim,
            "peak_memory_bytes": peak_memory_bytes(device),
            **extra,
        },
    )


def style_family(arch: str) -> str | None:
    """'stylegan2' or 'stylegan3' for a generator of that family in any layout (rosinality's ``stylegan2``,
    NVIDIA's 'StyleGAN2-ADA (skip)', 'StyleGAN3-T', ...), else None: the family a StyleGAN target names."""
    name = arch.lower()
    return next((f for f in ("stylegan2", "stylegan3") if name.startswith(f)), None)


def spectrum_exact_seconds(
    nz: int, *, seed: int, device: torch.device, dtype: torch.dtype, operator: str = "auto", max_nz: int = 4096
) -> dict[str, Any]:
    """The exact method's time for one latent of the synthetic linear generator at ``nz`` (the dense route:
    nz JVPs, QR and SVD in float64), measured when ``nz <= max_nz``, else measured at the largest nz0 <= max_nz
    of the same operator kind (a power of two for hadamard) and extrapolated as (nz / nz0)^3 (the QR and SVD
    dominate): ``extrapolated_from_nz`` says which. Also the exact value's error against the closed form."""
    kind = resolve_operator(nz, operator)
    at = nz
    if nz > max_nz:
        at = 1 << (max_nz.bit_length() - 1) if kind == "hadamard" else max_nz
    gen, half = synthetic_linear(at, 1e4, seed=seed, device=device, dtype=dtype, operator=kind)
    plan = plan_run(gen, batch=1)
    op = jacobian_operator(gen, torch.zeros(1, at), plan)
    times = []
    value = math.nan
    for _ in range(2):  # the first run warms up
        synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            value = float(exact_spectrum(op, route=plan.route, block=plan.block).half_logdet[0])
        synchronize(device)
        times.append(time.perf_counter() - t0)
    seconds = times[-1] * (nz / at) ** 3
    return {
        "exact_seconds_per_latent": seconds,
        "exact_measured_nz": at,
        "exact_measured_seconds": times[-1],
        "extrapolated_from_nz": at if at != nz else None,
        "exact_abs_error_nats": abs(value - half),
    }


def parse_splits(text: str) -> tuple[tuple[int, int], ...]:
    """``100x4,40x10`` -> ((100, 4), (40, 10)): slq budget splits, steps x probes."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            steps, probes = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise GanProbeError(f"a split is STEPSxPROBES, like 100x4; got {part.strip()!r}", param="splits") from None
        if steps < 1 or probes < 2:
            raise GanProbeError(f"a split needs steps >= 1 and probes >= 2, got {part.strip()!r}", param="splits")
        out.append((steps, probes))
    return tuple(out)


def run_spectrum_bench(
    params: BenchParams, *, nz: int = 512, device: torch.device, dtype: torch.dtype, operator: str = "auto"
) -> BenchResult:
    """Estimator accuracy on linear generators with log-spaced spectra, one row per (condition number, method).

    ``params.num`` independent probe seeds per condition number (one latent
    each: G is linear, so only the probes differ); the reference is the
    prescribed 1/2 sum ln lambda_i. ``params.splits``: slq runs once per
    (steps, probes) split instead of at its parameters (rows ``slq SxP``).
    ``operator``: the synthetic operator (:func:`gan_probe.models.synthetic.resolve_operator`;
    auto: Walsh-Hadamard from nz = 2,048 when nz is a power of two, the dense Haar one below).
    Every row also has the cost ratio against exact: seconds per latent of the exact method
    (:func:`spectrum_exact_seconds`, measured up to ``params.exact_max_nz``, extrapolated beyond:
    ``exact_extrapolated_from_nz``) over the row's, and nz (exact's products) over the row's products.
    """
    params.validate()
    if not params.methods:
        raise GanProbeError("spectrum mode needs at least one estimator", param="methods")
    kind = resolve_operator(nz, operator)
    exact_time = spectrum_exact_seconds(
        nz, seed=params.seed, device=device, dtype=dtype, operator=kind, max_nz=params.exact_max_nz
    )
    runs = estimator_runs(params)
    rows, targets = [], []
    for cond in params.conds:
        gen, half = synthetic_linear(nz, cond, seed=params.seed, device=device, dtype=dtype, operator=kind)
        z = gen.prior.sample(params.num, nz, generator=seeded_generator(params.seed))
        op = jacobian_operator(gen, z, plan_run(gen, batch=params.num))
        exact = torch.full((params.num,), half, dtype=torch.float64)
        for name, method, method_params in runs:
            streams = probe_streams(params.seed + int(round(math.log10(cond) * 1000)), 0, params.num)
            synchronize(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                est = estimate_half_logdet(op, method, method_params, generator=streams)
            synchronize(device)
            seconds = time.perf_counter() - t0
            per_latent = seconds / params.num
            row: dict[str, Any] = {
                "cond": cond,
                "name": name,
                "method": method,
                "seconds": seconds,
                "per_latent_s": per_latent,
                "num_matvecs_per_latent": est.num_matvecs,
                "exact_seconds_per_latent": exact_time["exact_seconds_per_latent"],
                "exact_extrapolated_from_nz": exact_time["extrapolated_from_nz"],
                "exact_over_estimator_seconds": exact_time["exact_seconds_per_latent"] / per_latent,
                "exact_over_estimator_products": nz / est.num_matvecs,
            }
            if method == "slq":
                row.update(steps=method_params.steps, probes=method_params.probes)
            row.update(error_stats(est.half_logdet.detach().cpu(), exact, nz, est.interval))
            row.update(flag_stats(est, exact, nz))
            if "quadrature_bias" in est.extras and est.interval is not None:
                bias = finite_stats(est.extras["quadrature_bias"])["median"]
                row["median_quadrature_bias_nats_per_dim"] = None if bias is None else bias / nz
                # the symmetric probe-variance-only interval (mean +- t s.e.), for comparison
                value = est.half_logdet.detach().cpu()
                half_width = est.interval[:, 1].cpu() - value
                row["interval_coverage_probe_only"] = float(((exact - value).abs() <= half_width).double().mean())
            rows.append(row)
            if method == "slq":
                cheap = est.num_matvecs <= SLQ_MAX_PRODUCTS
                note = "" if cheap else f"budget {est.num_matvecs} products exceeds {SLQ_MAX_PRODUCTS}"
                for key, value in (
                    ("slq_error", row["median_abs_error_nats_per_dim"]),
                    ("slq_coverage", row["interval_coverage"]),
                ):
                    target = TARGETS[key]
                    applies = cheap and target.runs_on(device)
                    targets.append(target.check(value, applies=applies, note=note, method=name, cond=cond))
    return BenchResult(
        mode="spectrum",
        device=describe_device(device),
        dtype=str(dtype).replace("torch.", ""),
        model={
            "arch": "linear",
            "nz": nz,
            "operator": kind,
            "spectrum": "eigenvalues of M log-spaced in [1/cond, 1]",
            "seed": params.seed,
        },
        rows=rows,
        targets=targets,
        machine=machine_info(device),
        extra={"num_seeds": params.num, "nz": nz, "conds": list(params.conds), "exact": exact_time},
    )


__all__ = [
    "DEFAULT_CONDS",
    "SPECTRUM_DEFAULTS",
    "SYNTHETIC",
    "SYNTHETIC_MODELS",
    "BenchParams",
    "BenchResult",
    "LinearModelParams",
    "SyntheticModelParams",
    "column_picks",
    "column_subset_operator",
    "column_subset_seconds",
    "error_stats",
    "estimator_runs",
    "exact_value_and_gradient",
    "flag_stats",
    "limit_jacobian_qr",
    "naive_row_seconds",
    "naive_spectra",
    "parse_splits",
    "peak_memory_bytes",
    "run_bench",
    "run_spectrum_bench",
    "spectrum_exact_seconds",
    "style_family",
]
