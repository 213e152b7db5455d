"""``gan-probe loglik``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gan_probe.analyses.loglik import METHODS, GridParams, LoglikParams, run_loglik, write_loglik_outputs
from gan_probe.cli.app import app
from gan_probe.cli.common import Outcome, RunContext, fmt, probe_command
from gan_probe.errors import GanProbeError


def parse_dims(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, j = (int(p) for p in text.split(","))
    except ValueError:
        raise GanProbeError(f"--grid-dims must be two latent axes like 0,1; got {text!r}") from None
    return i, j


@probe_command(app, "loglik")
def loglik(
    ctx: RunContext,
    n: Annotated[int, typer.Option("--n", help="Latents drawn from the prior (seeded).")] = 16,
    latents: Annotated[Optional[Path], typer.Option(help="Latents file (.npy/.npz/.safetensors, N x nz) instead.")] = None,
    method: Annotated[str, typer.Option(help=f"How ln det M is computed: {'|'.join(METHODS)}.")] = "exact",
    grid: Annotated[bool, typer.Option("--grid", help="Also evaluate ln Q over a 2-D latent plane (images + contour plot).")] = False,
    grid_dims: Annotated[Optional[str], typer.Option(help="Plane spanned by latent axes i,j [default: random orthonormal pair].")] = None,
    grid_extent: Annotated[Optional[float], typer.Option(help="Half-width of the plane [default: the box / 3 sigma].")] = None,
    grid_size: Annotated[int, typer.Option(help="Grid points per side.")] = 15,
    grid_center: Annotated[str, typer.Option(help="Centre: prior, random, or a latents file (first row).")] = "prior",
    chunk_size: Annotated[Optional[int], typer.Option(help="Latent axes per batched JVP call [default: auto].")] = None,
) -> Outcome:
    """Implicit log-likelihood ln Q(G(z)) = ln P_Z(z) - 1/2 ln det J^T J, per latent and over a plane."""
    if chunk_size is not None and chunk_size < 1:
        raise GanProbeError(f"--chunk-size must be at least 1, got {chunk_size}")
    params = LoglikParams(
        num=n,
        latents=str(latents) if latents is not None else None,
        method=method,
        batch_size=ctx.common.batch_size,
        chunk_size=chunk_size,
        seed=ctx.common.seed,
        grid=GridParams(parse_dims(grid_dims), grid_extent, grid_size, grid_center) if grid else None,
    )
    result = run_loglik(ctx.gen, params, progress=ctx.progress)
    write_loglik_outputs(result, ctx.gen, ctx.out)
    return Outcome(
        parameters={
            "n": n,
            "latents": params.latents,
            "method": method,
            "chunk_size": chunk_size,
            "grid": None if not grid else {"dims": grid_dims, "extent": grid_extent, "size": grid_size, "center": grid_center},
        },
        results=result.results(),
        table=_table(result),
        notes=_notes(result),
    )


def _table(result) -> Table:
    summary = result.values.summary()
    table = Table(title=f"ln Q(G(z)) \\[nats], method {result.params.method}")
    for col in ("#", "ln P_Z(z)", "1/2 ln det M", "ln Q", "lambda_max", "lambda_min", "cond(M)"):
        table.add_column(col, justify="right")
    for row in result.values.per_sample()[:12]:
        table.add_row(
            str(row["index"]),
            fmt(row["log_prior"], ".2f"),
            fmt(row["half_logdet"], ".2f"),
            fmt(row["loglik"], ".2f"),
            fmt(row["lambda_max"], ".3g"),
            fmt(row["lambda_min"], ".3g"),
            fmt(row["condition"], ".3g"),
        )
    stats = summary["loglik"]
    table.caption = (
        f"{summary['num_samples']} latents; ln Q mean {fmt(stats['mean'], '.2f')}, median {fmt(stats['median'], '.2f')}, "
        f"min {fmt(stats['min'], '.2f')}, max {fmt(stats['max'], '.2f')}"
    )
    if result.grid is not None:
        g = result.grid.values.summary()["loglik"]
        table.caption += f"; grid ln Q from {fmt(g['min'], '.2f')} to {fmt(g['max'], '.2f')}"
    return table


def _notes(result) -> list[str]:
    notes = []
    for label, values in (("latents", result.values), ("grid points", result.grid.values if result.grid else None)):
        if values is None:
            continue
        s = values.summary()
        if s["num_singular"]:
            notes.append(f"{s['num_singular']} {label} have a singular J (ln Q undefined, reported as null)")
        if s["num_precision_warning"]:
            notes.append(
                f"{s['num_precision_warning']} {label} have lambda_min below float32 rounding of J; "
                "rerun with --dtype float64 for their small eigenvalues"
            )
    return notes
