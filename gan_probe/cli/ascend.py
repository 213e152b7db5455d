"""``gan-probe ascend``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from gan_probe.analyses.ascend import OPTIMIZERS, AscendParams, run_ascend
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, fmt, latent_name, probe_command, shown_rows
from gan_probe.spectral.estimators import REGISTRY, params_json
from gan_probe.spectral.logdet import METHODS

#: The defaults of the options: the parameter dataclass's (stated there once).
DEFAULTS = AscendParams()


@probe_command(app, "ascend", estimators=True)
def ascend(
    ctx: RunContext,
    n: Annotated[
        int, typer.Option("--n", "--num", help="Starting latents drawn from the prior (seeded).")
    ] = DEFAULTS.num,
    latents: Annotated[
        Optional[Path], typer.Option(help="Starting latents file (.npy/.npz/.safetensors) instead.")
    ] = None,
    method: Annotated[str, typer.Option(help=f"Gradient of ln det M: {'|'.join(METHODS)}.")] = DEFAULTS.method,
    steps: Annotated[int, typer.Option("--steps", help="Ascent steps.")] = DEFAULTS.steps,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = DEFAULTS.lr,
    optimizer: Annotated[str, typer.Option(help=f"{'|'.join(OPTIMIZERS)}.")] = DEFAULTS.optimizer,
    frames: Annotated[int, typer.Option(help="Images per latent in the strips.")] = DEFAULTS.frames,
    geometry: Annotated[
        str,
        typer.Option(
            help="auto|euclidean|sphere: sphere reads ln Q on the sphere of directions, for generators that ignore "
            "|z| (auto: where |J z| is rounding noise, and always for a StyleGAN2 in z)."
        ),
    ] = DEFAULTS.geometry,
) -> Outcome:
    """Gradient ascent on ln Q(G(z)) in latent space (Ramesh & LeCun 2018, Fig. 4).

    Records ln Q (exact whenever nz <= 1024), lambda_min, lambda_max and cond(M) per step; writes
    strips.png (one row of images per latent, start to end), strip_KKK.png, ascent.png (ln Q and
    condition number against step), latents.npz (key z; feed it to loglik --latents) and
    trajectories.npz. A uniform prior keeps z in its box by projection. Ctrl-C keeps the steps done.
    For ReLU generators J is piecewise constant in z, so the gradient of ln det M comes only from
    the smooth parts (the tanh output, smooth activations).
    """
    params = AscendParams(
        num=n,
        latents=str(latents) if latents is not None else None,
        method=method,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        frames=frames,
        seed=ctx.common.seed,
        estimators=ctx.estimators,
        geometry=geometry,
        batch_size=ctx.common.batch_size,
    )
    result = run_ascend(ctx.gen, params, progress=ctx.progress)
    if result.interrupted and result.steps_done == 0:
        raise KeyboardInterrupt  # nothing done: the folder keeps what it held
    ctx.write(result)
    res = result.to_json()
    latent = latent_name(ctx.gen)
    table = Table(title=f"ascent of ln Q(G({latent})) \\[nats], {result.method} gradient, {res['steps_done']} steps")
    for col in ("#", "ln Q start", "ln Q end", "cond start", "cond end"):
        table.add_column(col, justify="right")
    rows, left_out = shown_rows(res["latents"])
    if left_out:
        table.caption = left_out.rstrip("; ")
    for row in rows:
        table.add_row(
            str(row["index"]),
            fmt(row["loglik_start"], ".2f"),
            fmt(row["loglik_end"], ".2f"),
            fmt(row["condition_start"], ".3g"),
            fmt(row["condition_end"], ".3g"),
        )
    choice = result.plan.choice_note() if result.plan is not None else None
    notes = [] if choice is None else [choice]
    if not result.exact_recorded:
        notes.append("nz > 1024: ln Q recorded from the estimator, not exactly")
    if result.num_singular:
        notes.append(
            f"{result.num_singular} latents have a singular J at the start (ln Q undefined, null): "
            "they have no likelihood gradient and were not moved"
        )
    return Outcome(
        parameters={
            "n": n,
            "latents": params.latents,
            "method": method,
            "steps": steps,
            "lr": lr,
            "optimizer": optimizer,
            "frames": frames,
            "geometry": geometry,
            "estimators": {name: params_json(ctx.estimators[name]) for name in REGISTRY},
        },
        results=res,
        table=table,
        notes=notes,
        interrupted=result.interrupted,
    )
