"""``gan-probe eigvecs``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gan_probe.analyses.eigvecs import EigvecsParams, EigvecsResult, run_eigvecs
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, fmt, latent_name, probe_command, shown_rows

#: The defaults of the options: the parameter dataclass's (stated there once).
DEFAULTS = EigvecsParams()


@probe_command(app, "eigvecs")
def eigvecs(
    ctx: RunContext,
    n: Annotated[
        int, typer.Option("--n", "--num", help="Trial latents drawn from the prior (seeded); the paper used 12.")
    ] = DEFAULTS.num,
    latents: Annotated[
        Optional[Path], typer.Option(help="Latents file (.npy/.npz/.safetensors, T x nz) instead.")
    ] = None,
    top: Annotated[
        Optional[int], typer.Option("--top", help="Eigenvectors shown per trial \\[default: min(8, nz)].")
    ] = DEFAULTS.top,
    step: Annotated[
        Optional[float],
        typer.Option("--step", help="Step alpha along each direction \\[default: 0.8 x box half-width, or 0.8 sigma]."),
    ] = DEFAULTS.step,
    traversal_steps: Annotated[
        int, typer.Option(help="Images per traversal z + t v_i, t in \\[-alpha, alpha].")
    ] = DEFAULTS.traversal_steps,
    project: Annotated[
        bool, typer.Option("--project", help="Uniform prior: clamp perturbed latents into the box (bends directions).")
    ] = DEFAULTS.project,
    chunk_size: Annotated[
        Optional[int], typer.Option(help="Latent axes per batched JVP call \\[default: auto].")
    ] = DEFAULTS.chunk_size,
) -> Outcome:
    """Eigenvectors of M = J^T J at trial latents: log spectra, perturbations vs random directions, traversals."""
    params = EigvecsParams(
        num=n,
        latents=str(latents) if latents is not None else None,
        top=top,
        step=step,
        traversal_steps=traversal_steps,
        project=project,
        batch_size=ctx.common.batch_size,
        chunk_size=chunk_size,
        seed=ctx.common.seed,
    )
    result = run_eigvecs(ctx.gen, params, progress=ctx.progress)
    ctx.write(result)
    return Outcome(
        parameters={
            "n": n,
            "latents": params.latents,
            "top": result.top,
            "step": result.step,
            "step_default": step is None,
            "traversal_steps": traversal_steps,
            "project": project,
            "chunk_size": chunk_size,
        },
        results=result.to_json(),
        table=_table(result, latent_name(ctx.gen)),
        notes=_notes(result),
    )


def _table(result: EigvecsResult, latent: str) -> Table:
    """``latent``: the latent's name (:func:`~gan_probe.cli.runner.latent_name`), in the title and the caption."""
    table = Table(title=f"eigenvalues of M = J^T J at {result.z.shape[0]} trial latents {latent}")
    for col in (
        "#",
        "lambda_1",
        "lambda_2",
        "lambda_nz",
        "cond(M)",
        f"top-{result.top} share",
        "part. ratio",
        "eff. rank",
    ):
        table.add_column(col, justify="right")
    rows, left_out = shown_rows(result.per_trial(), "trial latents")
    for row in rows:
        lam = row["eigenvalues"]
        table.add_row(
            str(row["index"]),
            fmt(float(lam[0]), ".3g"),
            fmt(float(lam[1]) if lam.numel() > 1 else None, ".3g"),
            fmt(row["lambda_min"], ".3g"),
            fmt(row["condition"], ".3g"),
            fmt(row["top_share"], ".1%"),
            fmt(row["participation_ratio"], ".2f"),
            fmt(row["effective_rank"], ".2f"),
        )
    s = result.summary()
    table.caption = left_out + (
        f"step alpha = {result.step:g}; |G({latent} + alpha v_1) - G({latent})| / "
        f"mean |G({latent} + alpha r) - G({latent})| median "
        f"{fmt(s['change_ratio_top1_median'], '.3g')}; medians: cond {fmt(s['condition_median'], '.3g')}, "
        f"participation ratio {fmt(s['participation_ratio_median'], '.2f')} of nz = {result.z.shape[1]}"
    )
    return table


def _notes(result: EigvecsResult) -> list[str]:
    notes = []
    s = result.summary()
    if s["num_singular"]:
        notes.append(
            f"{s['num_singular']} trial latents have a singular J (lambda_min = 0, condition reported as null)"
        )
    if s.get("num_promoted"):
        notes.append(
            f"--dtype auto: {s['num_promoted']} trial latents had a float32 J at rounding level and were "
            "recomputed in float64"
        )
    if s["num_precision_warning"]:
        notes.append(
            f"{s['num_precision_warning']} trial latents have lambda_min below the rounding level of J; "
            "their small eigenvalues and eigenvectors are rounding noise"
            + ("" if "num_promoted" in s else " (rerun with --dtype float64 or auto)")
        )
    if result.outside_box:
        action = "clamped into it (--project)" if result.params.project else "kept as they are (--project clamps them)"
        notes.append(
            f"{result.outside_box} of {result.num_perturbed} perturbed latents leave the uniform prior's box; {action}"
        )
    return notes
