"""``gan-probe loglik``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gan_probe.analyses.loglik import GridParams, LoglikParams, LoglikResult, estimator_parameters, run_loglik
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, fmt, latent_name, probe_command, shown_rows
from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import REGISTRY, params_json
from gan_probe.spectral.logdet import METHODS

#: The defaults of the options: the parameter dataclasses' (stated there once).
DEFAULTS = LoglikParams()
GRID = GridParams()


def parse_dims(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, j = (int(p) for p in text.split(","))
    except ValueError:
        raise GanProbeError(f"--grid-dims must be two latent axes like 0,1; got {text!r}") from None
    return i, j


@probe_command(app, "loglik", estimators=True)
def loglik(
    ctx: RunContext,
    n: Annotated[int, typer.Option("--n", "--num", help="Latents drawn from the prior (seeded).")] = DEFAULTS.num,
    latents: Annotated[
        Optional[Path], typer.Option(help="Latents file (.npy/.npz/.safetensors, N x nz) instead.")
    ] = None,
    method: Annotated[str, typer.Option(help=f"How ln det M is computed: {'|'.join(METHODS)}.")] = DEFAULTS.method,
    grid: Annotated[
        bool, typer.Option("--grid", help="Also evaluate ln Q over a 2-D latent plane (images + contour plot).")
    ] = DEFAULTS.grid is not None,
    grid_dims: Annotated[
        Optional[str], typer.Option(help="Plane spanned by latent axes i,j \\[default: random orthonormal pair].")
    ] = None,
    grid_extent: Annotated[
        Optional[float], typer.Option(help="Half-width of the plane \\[default: the box / 3 sigma].")
    ] = GRID.extent,
    grid_size: Annotated[int, typer.Option(help="Grid points per side.")] = GRID.size,
    grid_center: Annotated[
        str, typer.Option(help="Centre: prior, random, or a latents file (first row).")
    ] = GRID.center,
    chunk_size: Annotated[
        Optional[int], typer.Option(help="Latent axes per batched JVP call \\[default: auto].")
    ] = DEFAULTS.chunk_size,
    check: Annotated[
        bool, typer.Option("--check", help="Also compute exact and report each estimate's error in nats.")
    ] = DEFAULTS.check,
    geometry: Annotated[
        str,
        typer.Option(
            help="auto|euclidean|sphere: sphere reads ln Q on the sphere of directions, for generators that ignore "
            "|z| (auto: where |J z| is rounding noise, and always for a StyleGAN2 in z)."
        ),
    ] = DEFAULTS.geometry,
) -> Outcome:
    """Implicit log-likelihood ln Q(G(z)) = ln P_Z(z) - 1/2 ln det J^T J, per latent and over a plane.

    --method exact (default) builds J from nz batched JVPs; chebyshev (Ramesh & LeCun Algorithm 1,
    scale term corrected), taylor and slq (Golub-Kahan quadrature with a 95% interval) use only
    matrix-vector products; auto picks exact or slq by estimated cost and memory (docs/design.md §3.6).
    --check adds the exact value and the error of every estimate in nats and nats per latent dimension.
    """
    params = LoglikParams(
        num=n,
        latents=str(latents) if latents is not None else None,
        method=method,
        batch_size=ctx.common.batch_size,
        chunk_size=chunk_size,
        seed=ctx.common.seed,
        grid=GridParams(parse_dims(grid_dims), grid_extent, grid_size, grid_center) if grid else None,
        estimators=ctx.estimators,
        check=check,
        geometry=geometry,
    )
    result = run_loglik(ctx.gen, params, progress=ctx.progress)
    ctx.write(result)
    uniform = ctx.gen.prior.kind == "uniform"
    return Outcome(
        parameters={
            "n": n,
            "latents": params.latents,
            "method": method,
            "chunk_size": chunk_size,
            "check": check,
            "geometry": geometry,
            "estimator": estimator_parameters(params, result.values.method),
            "estimators": {name: params_json(ctx.estimators[name]) for name in REGISTRY},
            "grid": None
            if not grid
            else {"dims": grid_dims, "extent": grid_extent, "size": grid_size, "center": grid_center},
        },
        results=_with_geometry_note(result.to_json(), uniform),
        table=_table(result, latent_name(ctx.gen)),
        notes=_notes(result)
        + ([UNIFORM_SPHERE_NOTE] if ctx.gen.prior.kind == "uniform" and _any_singular(result) else []),
    )


#: docs/design.md §1.4: why a uniform prior's latents are never read on the sphere.
UNIFORM_SPHERE_NOTE = (
    "the sphere geometry (for generators that ignore |z|) does not apply under a uniform prior: the box is not "
    "rotation-invariant, so the direction z/|z| is not uniform and its density is not the sphere's"
)


def _any_singular(result: LoglikResult) -> bool:
    return bool(result.values.singular.any()) or (result.grid is not None and bool(result.grid.values.singular.any()))


def _with_geometry_note(results: dict, uniform: bool) -> dict:
    """A uniform prior's report says why its latents are read in the Euclidean geometry only."""
    if uniform:
        results["geometry_note"] = UNIFORM_SPHERE_NOTE
    return results


def _table(result: LoglikResult, latent: str) -> Table:
    """``latent``: the latent's name (:func:`~gan_probe.cli.runner.latent_name`), in the title and the prior column."""
    summary = result.values.summary()
    table = Table(title=f"ln Q(G({latent})) \\[nats], method {result.values.method}")
    checked = result.values.exact_half_logdet is not None and result.values.method != "exact"
    cols = ["#", f"ln P_{latent.upper()}({latent})", "1/2 ln det M", "ln Q", "lambda_max", "lambda_min", "cond(M)"]
    if result.values.stderr is not None:
        cols.append("+- s.e.")
    if checked:
        cols += ["exact ln Q", "error", "error/dim"]
    for col in cols:
        table.add_column(col, justify="right")
    rows, left_out = shown_rows(result.values.per_sample())
    for row in rows:
        cells = [
            str(row["index"]),
            fmt(row["log_prior"], ".2f"),
            fmt(row["half_logdet"], ".2f"),
            fmt(row["loglik"], ".2f"),
            fmt(row["lambda_max"], ".3g"),
            fmt(row["lambda_min"], ".3g"),
            fmt(row["condition"], ".3g"),
        ]
        if result.values.stderr is not None:
            cells.append(fmt(row.get("half_logdet_stderr"), ".2f"))
        if checked:
            cells += [
                fmt(row["exact_loglik"], ".2f"),
                fmt(row["error_nats"], "+.3f"),
                fmt(row["error_nats_per_dim"], "+.4f"),
            ]
        table.add_row(*cells)
    stats = summary["loglik"]
    table.caption = left_out + (
        f"{summary['num_samples']} latents; ln Q mean {fmt(stats['mean'], '.2f')}, "
        f"median {fmt(stats['median'], '.2f')}, min {fmt(stats['min'], '.2f')}, max {fmt(stats['max'], '.2f')}"
    )
    if result.grid is not None:
        g = result.grid.values.summary()["loglik"]
        table.caption += f"; grid ln Q from {fmt(g['min'], '.2f')} to {fmt(g['max'], '.2f')}"
    return table


def _notes(result: LoglikResult) -> list[str]:
    choice = result.plan.choice_note() if result.plan is not None else None
    notes = [] if choice is None else [choice]
    v = result.values
    if v.bounds_violated is not None and int(v.bounds_violated.sum()):
        notes.append(
            f"{int(v.bounds_violated.sum())} latents have a spectrum that can leave the estimator's interval [mu, nu] "
            "(by the Ritz values and their residuals): the estimate may be far off (use --method slq or exact)"
        )
    if v.method == "slq" and v.num_matvecs is not None and v.num_matvecs >= v.z.shape[1]:
        notes.append(
            f"slq used {v.num_matvecs} products per latent (steps x probes), reaching nz = {v.z.shape[1]}: "
            "--method exact is cheaper and exact"
        )
    if v.method in ("chebyshev", "taylor") and v.num_matvecs is not None and v.num_matvecs >= v.z.shape[1]:
        notes.append(
            f"{v.method} used {v.num_matvecs} products per latent, more than nz = {v.z.shape[1]}: exact is cheaper"
        )
    for label, values in (("latents", result.values), ("grid points", result.grid.values if result.grid else None)):
        if values is None:
            continue
        s = values.summary()
        if "gram" in (values.exact_route or "").split("+"):
            notes.append(
                f"the dense J of these {label} did not fit in memory: their exact spectrum was taken by the Gram "
                "route (M = J^T J block by block, J never held; exact_route in the JSON), which resolves lambda_min "
                "only down to nz eps lambda_max (design §2.2)"
            )
        if s["num_sphere"]:
            notes.append(
                f"{s['num_sphere']} {label} read on the sphere (the generator ignores |z|): the prior column is "
                "ln P_U(u) = -ln|S^(nz-1)| of the direction and 1/2 ln det that of the tangent metric"
            )
        if s["num_singular"]:
            notes.append(f"{s['num_singular']} {label} have a singular J (ln Q undefined, reported as null)")
        if s.get("num_promoted"):
            notes.append(
                f"--dtype auto: {s['num_promoted']} {label} had a float32 J at rounding level (flagged "
                "precision_warning or singular) and were recomputed in float64"
            )
        if s.get("num_rounding_noise"):
            notes.append(
                f"{s['num_rounding_noise']} {label} have lambda_min below the rounding level of J even so: their "
                "ln Q is rounding noise, reported per latent but left out of the summary"
            )
        elif s["num_precision_warning"] and "num_promoted" not in s:
            notes.append(
                f"{s['num_precision_warning']} {label} have lambda_min below float32 rounding of J; "
                "rerun with --dtype float64 (or auto) for their small eigenvalues"
            )
    return notes
