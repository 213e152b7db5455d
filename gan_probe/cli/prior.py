"""``gan-probe prior``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gan_probe.analyses.prior import PganParams, PriorParams, PriorResult, run_prior
from gan_probe.cli.app import app
from gan_probe.cli.options import reversal_options, reversal_params, with_options
from gan_probe.cli.runner import Outcome, RunContext, fmt, probe_command
from gan_probe.errors import GanProbeError
from gan_probe.models.prior_net import DEFAULT_WIDTHS


def _widths(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise GanProbeError(f"{flag} takes three comma-separated integers such as 512,256,128, got {text!r}") from None


@probe_command(app, "prior")
@with_options(reversal_options("reversal"), after="resize")
def prior(
    ctx: RunContext,
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Images to reverse, as pag reads them: a folder of PNG/JPEG files or a .npy/.npz array. "
            "Default: the bundled held-out MNIST images.",
            show_default=False,
        ),
    ] = None,
    codes: Annotated[
        Optional[Path],
        typer.Option(
            help="Reversed latents instead of images: .npy, .npz (key z, e.g. pag's latents.npz) or .safetensors.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images or codes.")] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize images of another size (bilinear).")] = False,
    heldout: Annotated[float, typer.Option(help="Fraction of the codes held out for the comparison.")] = 0.2,
    steps: Annotated[int, typer.Option(help="Training steps of the PGAN.")] = PganParams.steps,
    dim: Annotated[
        Optional[int],
        typer.Option(help="Dimension d' >= nz of the PGAN's latent z' \\[default: nz].", show_default=False),
    ] = None,
    widths: Annotated[
        str, typer.Option(help="Hidden widths of the PGAN's generator h (four fully connected layers).")
    ] = ",".join(map(str, DEFAULT_WIDTHS)),
    critic_widths: Annotated[str, typer.Option(help="Hidden widths of the PGAN's discriminator.")] = ",".join(
        map(str, reversed(DEFAULT_WIDTHS))
    ),
    lr: Annotated[float, typer.Option(help="RMSProp step size of the PGAN (paper: 3e-4).")] = PganParams.lr,
    prior_batch: Annotated[int, typer.Option(help="Codes per PGAN step (paper: 100).")] = PganParams.batch_size,
    r1: Annotated[
        float,
        typer.Option(
            help="Weight of the discriminator's R1 gradient penalty (not in the paper: without it the PGAN "
            "collapses on a few hundred codes; 0 turns it off)."
        ),
    ] = PganParams.r1,
    samples: Annotated[
        Optional[int],
        typer.Option(
            help="Draws of each prior compared with the held-out codes \\[default: as many].", show_default=False
        ),
    ] = None,
    permutations: Annotated[int, typer.Option(help="Permutations of each two-sample test.")] = 1000,
    prior_samples: Annotated[int, typer.Option(help="Prior draws ranked for the disagreement samples.")] = 1000,
    top: Annotated[int, typer.Option(help="Disagreement samples rendered.")] = 20,
    **reversal: Any,
) -> Outcome:
    """Learn the data-induced prior (Kilcher et al. 2017, sec. 3): a PGAN and Gaussians, compared on held-out codes."""
    params = PriorParams(
        data=str(data) if data is not None else None,
        codes=str(codes) if codes is not None else None,
        limit=limit,
        resize=resize,
        reversal=reversal_params(reversal, prefix="reversal", batch_size=ctx.common.batch_size, seed=ctx.common.seed),
        heldout=heldout,
        pgan=PganParams(
            steps=steps,
            dim=dim,
            widths=_widths(widths, "--widths"),
            critic_widths=_widths(critic_widths, "--critic-widths"),
            lr=lr,
            batch_size=prior_batch,
            r1=r1,
        ),
        num_samples=samples,
        num_permutations=permutations,
        num_prior_samples=prior_samples,
        num_top=top,
        seed=ctx.common.seed,
    )
    result = run_prior(ctx.gen, params, progress=ctx.progress)
    ctx.write(result)
    return Outcome(
        parameters={
            "data": params.data,
            "codes": params.codes,
            "limit": limit,
            "resize": resize,
            **reversal,  # reversal_steps, reversal_lr, reversal_optimizer, reversal_init_std
            "heldout": heldout,
            "steps": steps,
            "dim": dim,
            "widths": list(params.pgan.widths),
            "critic_widths": list(params.pgan.critic_widths),
            "lr": lr,
            "prior_batch": prior_batch,
            "r1": r1,
            "samples": samples,
            "permutations": permutations,
            "prior_samples": prior_samples,
            "top": top,
        },
        results={**result.to_json(), "timings": result.timings},
        table=_table(result),
        notes=[f"data conversion: {s}" for s in (result.data.conversion if result.data else []) if "none" not in s],
    )


def _table(result: PriorResult) -> Table:
    table = Table(title=f"Data-induced prior (Kilcher et al. 2017): {result.num_heldout} held-out codes")
    for name in ("prior", "energy (p)", "MMD^2 (p)", "|d mean|", "|d Cov|_F rel", "ln p held-out", "PAG"):
        table.add_column(name, justify="left" if name == "prior" else "right")
    for c in result.comparisons:
        e, m = c.tests["energy"], c.tests["mmd"]
        table.add_row(
            c.name,
            f"{e.value:.4g} ({e.p_value:.3g})",
            f"{m.value:.4g} ({m.p_value:.3g})",
            fmt(c.mean_error, ".3g"),
            fmt(c.cov_error_relative, ".3g"),
            fmt(c.heldout_log_density, ".5g"),
            fmt(c.pag.pag, ".4g"),
        )
    table.caption = escape(
        f"codes: {result.codes_source}; MMD bandwidth {result.comparisons[0].tests['mmd'].bandwidth:.3g} "
        "(median heuristic); PAG of each prior in its own latent space"
    )
    return table
