"""``gan-probe divergence``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gan_probe.analyses.divergence import DIVERGENCES, DivergenceParams, DivergenceResult, run_divergence
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, check_gate_bounds, fmt, probe_command
from gan_probe.report.report import Gate


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint="--spread") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@probe_command(app, "divergence")
def divergence(
    ctx: RunContext,
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Images: a folder of PNG/JPEG files or a .npy/.npz array (N x C x H x W, N x H x W or "
            "N x H x W x C). Default: the bundled held-out MNIST images.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize images of another size (bilinear).")] = False,
    spread: Annotated[
        str,
        typer.Option(
            help="Spread noise widths sigma in the generator's output units, comma-separated (--sigma is the prior's)."
        ),
    ] = ",".join(f"{s:g}" for s in DivergenceParams.sigmas),
    f: Annotated[str, typer.Option("--f", help=f"Divergences, comma-separated: {', '.join(DIVERGENCES)}.")] = ",".join(
        DIVERGENCES
    ),
    steps: Annotated[int, typer.Option(help="Adam steps per encoder (early stopped).")] = DivergenceParams.steps,
    importance: Annotated[
        int, typer.Option(help="K draws from the encoder per point (importance-weighted estimates).")
    ] = DivergenceParams.importance,
    refine: Annotated[int, typer.Option(help="Adam steps on each point's r(z|y) after the encoder.")] = 0,
    ais: Annotated[
        int,
        typer.Option(
            help="AIS steps from the encoder to the posterior (HMC moves; 0: off); adds the kl AIS estimate and "
            "the rkl bracket with its bidirectional Monte Carlo gap on simulated data."
        ),
    ] = 0,
    heldout: Annotated[float, typer.Option(help="Fraction of the data held out (seeded).")] = DivergenceParams.heldout,
    model_samples: Annotated[
        int, typer.Option(help="Pairs (z, y) drawn from the generator for the reverse figures.")
    ] = DivergenceParams.num_model_samples,
    gate: Annotated[
        str, typer.Option(help="The divergence --min/--max apply to (its bound at the first sigma).")
    ] = "kl",
    minimum: Annotated[Optional[float], typer.Option("--min", help="Fail (exit 3) if the bound is below this.")] = None,
    maximum: Annotated[Optional[float], typer.Option("--max", help="Fail (exit 3) if the bound is above this.")] = None,
) -> Outcome:
    """Bound the spread KL, reverse KL and JS between the generator and the data with a fitted encoder."""
    check_gate_bounds(minimum, maximum)
    names = _names(f)
    if gate not in names:
        raise typer.BadParameter(f"{gate!r} is not among the divergences --f {f}", param_hint="--gate")
    params = DivergenceParams(
        data=str(data) if data is not None else None,
        limit=limit,
        resize=resize,
        sigmas=_sigmas(spread),
        divergences=names,
        heldout=heldout,
        num_model_samples=model_samples,
        steps=steps,
        batch_size=ctx.common.batch_size,
        importance=importance,
        refine=refine,
        ais=ais,
        seed=ctx.common.seed,
    )
    result = run_divergence(ctx.gen, params, progress=ctx.progress)  # interrupted with no sigma done: it raises
    ctx.write(result)
    value = result.per_sigma[0].divergences[gate].bound
    return Outcome(
        parameters={
            "data": params.data,
            "limit": limit,
            "resize": resize,
            "spread": list(params.sigmas),
            "f": list(names),
            "steps": steps,
            "importance": importance,
            "refine": refine,
            "ais": ais,
            "heldout": heldout,
            "model_samples": model_samples,
            "gate": gate,
            "min": minimum,
            "max": maximum,
        },
        results=result.to_json(),
        table=_table(result),
        gate=Gate(f"{gate} bound at sigma {params.sigmas[0]:g}", value, minimum, maximum),
        notes=_notes(result),
        interrupted=result.interrupted,
    )


def _notes(result: DivergenceResult) -> list[str]:
    notes = [f"data conversion: {step}" for step in result.data.conversion if not step.startswith("none")]
    if result.interrupted:
        sigmas = result.params.sigmas
        done = len(result.per_sigma)
        notes.append(
            f"interrupted: {done} of {len(sigmas)} spread widths measured (sigma {sigmas[done]:g} was in progress "
            "and is dropped)"
        )
    if result.latent != "z":
        notes.append(f"the uniform prior is read through its normal reparametrisation: {result.latent}")
    for s in result.per_sigma:
        rkl = s.divergences.get("rkl")
        if rkl is not None and rkl.estimate_below_zero:
            notes.append(
                f"rkl at sigma {s.sigma:g}: the lower estimate {rkl.estimate:,.0f} is below 0, where no KL lies, so "
                f"the interval says only [0, {rkl.bound:,.0f}]: the model-side encoder is far from the posterior "
                "(--importance, --refine or --ais tighten it)"
            )
    return notes


def _table(result: DivergenceResult) -> Table:
    table = Table(title="Spread divergences, generator vs data (nats; upper bounds from a fitted encoder)")
    for col in ("sigma", "divergence", "bound", "stderr", "estimate", "nats/dim", "encoder"):
        table.add_column(col, justify="right" if col not in ("divergence", "encoder") else "left")
    for s in result.per_sigma:
        for name, d in s.divergences.items():
            est = None if d.estimate is None or math.isnan(d.estimate) else d.estimate
            table.add_row(
                f"{s.sigma:g}",
                name,
                fmt(d.bound, ".5g"),
                fmt(d.stderr, ".2g"),
                fmt(est, ".5g"),
                fmt(d.bound / d.dim, ".3g"),
                d.encoder,
            )
        if s.ais is not None:
            a = s.ais.to_json()
            table.add_row(f"{s.sigma:g}", "kl (AIS)", "", "", fmt(a["kl_estimate"], ".5g"), "", "data")
            lo, up = a["rkl_bracket"]
            table.add_row(
                f"{s.sigma:g}",
                "rkl (AIS, BDMC)",
                fmt(up, ".5g"),
                fmt(a["bdmc_gap"], ".2g") + " gap",
                fmt(lo, ".5g"),
                "",
                "model",
            )
    n = result.heldout_index.numel()
    table.caption = (
        f"{n} held-out of {result.data.images.shape[0]} data points, {result.params.num_model_samples} model samples, "
        f"K = {result.params.importance}; data: {escape(result.data.source)}. kl estimate: importance-weighted "
        "bound; rkl lies in \\[estimate, bound]."
    )
    return table
