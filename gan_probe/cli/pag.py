"""``gan-probe pag``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gan_probe.analyses.pag import PagParams, PagResult, run_pag
from gan_probe.cli.app import app
from gan_probe.cli.options import reversal_options, reversal_params, with_options
from gan_probe.cli.runner import Outcome, RunContext, check_gate_bounds, fmt, probe_command
from gan_probe.report.report import Gate

#: The defaults of the options: the parameter dataclasses' (stated there once).
DEFAULTS = PagParams()


@probe_command(app, "pag")
@with_options(reversal_options(), after="resize")
def pag(
    ctx: RunContext,
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Images: a folder of PNG/JPEG files or a .npy/.npz array (N x C x H x W, N x H x W or "
            "N x H x W x C). Default: the bundled held-out MNIST images.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = DEFAULTS.limit,
    resize: Annotated[
        bool, typer.Option("--resize", help="Resize images of another size (bilinear).")
    ] = DEFAULTS.resize,
    prior_samples: Annotated[
        int, typer.Option(help="Prior draws ranked for the disagreement samples.")
    ] = DEFAULTS.num_prior_samples,
    top: Annotated[int, typer.Option(help="Disagreement samples rendered.")] = DEFAULTS.num_top,
    minimum: Annotated[Optional[float], typer.Option("--min", help="Fail (exit 3) if PAG is below this.")] = None,
    maximum: Annotated[Optional[float], typer.Option("--max", help="Fail (exit 3) if PAG is above this.")] = None,
    **reversal: Any,
) -> Outcome:
    """Reverse the generator on real images (Kilcher et al. 2017, Alg. 1) and score the prior fit (PAG)."""
    check_gate_bounds(minimum, maximum)
    params = PagParams(
        data=str(data) if data is not None else None,
        limit=limit,
        resize=resize,
        reversal=reversal_params(reversal, batch_size=ctx.common.batch_size, seed=ctx.common.seed),
        num_prior_samples=prior_samples,
        num_top=top,
        seed=ctx.common.seed,
    )
    result = run_pag(ctx.gen, params, progress=ctx.progress)
    if result.interrupted and result.reversal.num_done == 0:
        raise KeyboardInterrupt  # nothing done: the folder keeps what it held
    ctx.write(result)
    value = result.score.pag if result.score is not None else None
    return Outcome(
        parameters={
            "data": params.data,
            "limit": limit,
            "resize": resize,
            **reversal,  # steps, lr, optimizer, init_std
            "prior_samples": prior_samples,
            "top": top,
            "min": minimum,
            "max": maximum,
        },
        results=result.to_json(),
        table=_table(result),
        gate=Gate("PAG", value, minimum, maximum),
        notes=_notes(result),
        interrupted=result.interrupted,
    )


def _table(result: PagResult) -> Table:
    res = result.to_json()
    rec = res["reconstruction"]
    table = Table(title="Prior agreement (Kilcher et al. 2017)", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    table.add_row("PAG \\[nats]", fmt(res["pag"], ".5g"))
    table.add_row("PAG per latent dim", fmt(res.get("pag_per_dim"), ".4g"))
    table.add_row("PAG, paper-literal nu_i = s_i(Z)", fmt(res["pag_paper_literal"], ".5g"))
    if result.score is not None:
        ratio = result.score.nu / result.score.sigma
        table.add_row("nu_i / sigma (max, median, min)", f"{ratio.max():.3g}, {ratio.median():.3g}, {ratio.min():.3g}")
    table.add_row("images recovered", f"{res['num_recovered']} of {res['num_images']}")
    table.add_row("MSE (mean, median, max)", ", ".join(fmt(rec["mse"][k], ".4g") for k in ("mean", "median", "max")))
    if rec["psnr"] is not None:
        table.add_row(
            f"PSNR \\[dB] (peak {rec['psnr_peak']:g}; mean, median, min)",
            ", ".join(fmt(rec["psnr"][k], ".2f") for k in ("mean", "median", "min")),
        )
    table.caption = f"reference: {escape(result.reference)}; data: {escape(result.data.source)}"
    return table


def _notes(result: PagResult) -> list[str]:
    notes = [f"data conversion: {step}" for step in result.data.conversion if not step.startswith("none")]
    if result.reversal.interrupted:
        done, n = result.reversal.num_done, result.reversal.num_images
        notes.append(f"interrupted: {done} of {n} images reversed (the chunk in progress was dropped)")
    score = result.score
    if score is not None and score.rank_deficient:
        nz = score.nu.numel()
        notes.append(
            f"PAG is infinite (null in JSON): the {score.num_latents} recovered latents span fewer than nz = {nz} "
            f"axes; use at least {nz} images (--limit)"
        )
    if result.score is None:
        notes.append("no image was reversed, so PAG is undefined")
    return notes
