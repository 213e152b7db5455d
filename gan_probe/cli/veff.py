"""``gan-probe veff``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gan_probe.analyses.veff import VeffParams, VeffResult, run_veff
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, check_gate_bounds, fmt, latent_name, probe_command
from gan_probe.errors import GanProbeError
from gan_probe.report.report import Gate

#: The defaults of the options: the parameter dataclass's (stated there once).
DEFAULTS = VeffParams()


def parse_taus(values: list[str] | None) -> tuple[float, ...]:
    """``--tau 1 --tau 2`` and ``--tau 1,2`` (or both) -> (1.0, 2.0), in the order given."""
    if not values:
        return DEFAULTS.taus
    taus = []
    for value in values:
        for part in value.split(","):
            try:
                taus.append(float(part))
            except ValueError:
                raise GanProbeError(f"--tau takes numbers like 1 or 0.5,1,2; got {part.strip()!r}") from None
    return tuple(taus)


@probe_command(app, "veff")
def veff(
    ctx: RunContext,
    n: Annotated[
        int, typer.Option("--n", "--num", "--m", help="Number M of latents drawn from the prior (seeded).")
    ] = DEFAULTS.num,
    latents: Annotated[
        Optional[Path], typer.Option(help="Latents file (.npy/.npz/.safetensors, M x nz) instead.")
    ] = None,
    k: Annotated[
        int, typer.Option("--k", help="Random directions K per latent for delta(j,0).")
    ] = DEFAULTS.num_directions,
    tau: Annotated[
        Optional[list[str]],
        typer.Option("--tau", help="Threshold(s): repeat or comma-separate; the first is the headline \\[default: 1]."),
    ] = None,
    step: Annotated[
        Optional[float],
        typer.Option("--step", help="Step alpha \\[default: 0.8 x box half-width, or 0.8 sigma, as eigvecs]."),
    ] = DEFAULTS.step,
    directions: Annotated[
        str,
        typer.Option(help="Random directions: unit (uniform on the sphere) or normal (the paper's literal N(0, I))."),
    ] = DEFAULTS.directions,
    project: Annotated[
        bool, typer.Option("--project", help="Uniform prior: clamp perturbed latents into the box (bends directions).")
    ] = DEFAULTS.project,
    minimum: Annotated[
        Optional[float], typer.Option("--min", help="Gate: exit 3 if v_eff at the first tau is below.")
    ] = None,
    maximum: Annotated[
        Optional[float], typer.Option("--max", help="Gate: exit 3 if v_eff at the first tau is above.")
    ] = None,
    chunk_size: Annotated[
        Optional[int], typer.Option(help="Latent axes per batched JVP call \\[default: auto].")
    ] = DEFAULTS.chunk_size,
) -> Outcome:
    """Effective latent dimensionality v_eff(tau): eigen-directions of M that change G more than tau random ones."""
    check_gate_bounds(minimum, maximum)
    params = VeffParams(
        num=n,
        latents=str(latents) if latents is not None else None,
        num_directions=k,
        step=step,
        taus=parse_taus(tau),
        directions=directions,
        project=project,
        batch_size=ctx.common.batch_size,
        chunk_size=chunk_size,
        seed=ctx.common.seed,
    )
    result = run_veff(ctx.gen, params, progress=ctx.progress)
    ctx.write(result)
    results = result.to_json()
    return Outcome(
        parameters={
            "n": n,
            "latents": params.latents,
            "k": k,
            "tau": list(result.taus),
            "step": result.step,
            "step_default": step is None,
            "directions": directions,
            "project": project,
            "min": minimum,
            "max": maximum,
            "chunk_size": chunk_size,
        },
        results=results,
        table=_table(result, latent_name(ctx.gen)),
        gate=Gate(f"v_eff(tau={result.taus[0]:g})", results["veff"], minimum, maximum),
        notes=_notes(result),
    )


def _table(result: VeffResult, latent: str) -> Table:
    """``latent``: the latent's name (:func:`~gan_probe.cli.runner.latent_name`), in the title."""
    r = result.to_json()
    table = Table(title=f"effective latent dimensionality v_eff of {latent} (nz = {r['nz']})")
    for col in ("tau", "v_eff", "std over latents", "min", "max"):
        table.add_column(col, justify="right")
    for row in r["by_tau"]:
        table.add_row(
            fmt(row["tau"], "g"), fmt(row["veff"], ".3f"), fmt(row["std"], ".3f"), str(row["min"]), str(row["max"])
        )
    table.caption = (
        f"M = {r['num_latents']} latents, K = {r['num_directions']} {r['directions']} directions, "
        f"alpha = {r['step']:g}; median delta(j,0) = {fmt(r['delta0']['median'], '.3g')}, "
        f"median delta(j,1) = {fmt(r['delta1_median'], '.3g')}"
    )
    return table


def _notes(result: VeffResult) -> list[str]:
    notes = []
    if result.num_flat:
        notes.append(f"{result.num_flat} latents have delta(j,0) = 0 (G does not move); they count 0 directions")
    if result.outside_box:
        action = "clamped into it (--project)" if result.params.project else "kept as they are (--project clamps them)"
        notes.append(
            f"{result.outside_box} of {result.num_perturbed} perturbed latents leave the uniform prior's box; {action}"
        )
    if result.params.directions == "normal":
        notes.append(
            "--directions normal: |eps| is about sqrt(nz) while |v_i| = 1, so delta(j,i) is smaller by about "
            "sqrt(nz) than with unit directions"
        )
    return notes
