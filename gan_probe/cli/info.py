"""``gan-probe info`` and ``gan-probe sample``: describe a checkpoint, render samples."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gan_probe.analyses.common import count_latents, draw_or_load_latents, generate
from gan_probe.analyses.memory import check_memory, sample_memory
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, probe_command
from gan_probe.report.outputs import write_samples


@probe_command(app, "info", writes_files=False)
def info(ctx: RunContext) -> Outcome:
    """Describe a checkpoint: arch, config, nz, prior, output, parameters, sha256, provenance."""
    d = ctx.gen.describe()
    table = Table(title="checkpoint", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    fields = ("path", "sha256", "source", "key", "arch", "config", "nz", "prior", "output", "num_params")
    for key in (*fields, "provenance", "dtype", "noise", "extras"):
        table.add_row(key, escape(str(d[key])))
    return Outcome(parameters={}, results=d, table=table)


@probe_command(app, "sample")
def sample(
    ctx: RunContext,
    n: Annotated[int, typer.Option("--n", "--num", help="Number of samples (a square-ish grid).")] = 64,
) -> Outcome:
    """Render a PNG grid of G(z) for latents drawn from the prior (samples.png, latents in samples.npz)."""
    count_latents(None, n)
    check_memory(sample_memory(ctx.gen, num=n, batch_size=ctx.common.batch_size))
    z = draw_or_load_latents(ctx.gen, num=n, latents=None, seed=ctx.common.seed)
    images = generate(ctx.gen, z, ctx.common.batch_size)
    if ctx.out is not None:  # rank 0 only under torchrun
        write_samples(images, z, ctx.gen, ctx.out)
    results = {
        "num_samples": n,
        "output_min": float(images.min()),
        "output_max": float(images.max()),
        "output_mean": float(images.mean()),
    }
    return Outcome(parameters={"n": n}, results=results)
