"""``gan-probe info`` and ``gan-probe sample``: describe a checkpoint, render samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from gan_probe.analyses.common import (
    count_latents,
    draw_or_load_latents,
    generate,
    given_latents,
    latent_key,
    parse_seeds,
    seed_latents,
)
from gan_probe.analyses.memory import check_memory, sample_memory
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, probe_command
from gan_probe.errors import GanProbeError
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
    if d["prior_net"] is not None:  # --prior-net: G o h, the prior network's file and what it was fitted to
        table.add_row("prior_net", escape(str(d["prior_net"])))
    return Outcome(parameters={}, results=d, table=table)


@probe_command(app, "sample")
def sample(
    ctx: RunContext,
    n: Annotated[int, typer.Option("--n", "--num", help="Number of samples (a square-ish grid).")] = 64,
    latents: Annotated[
        Optional[Path],
        typer.Option(
            help="Render these latents (.npy/.npz/.safetensors) instead of prior draws, in the chosen space: an array "
            "named w or w_plus holds points of that space, one named z (or unnamed) prior latents."
        ),
    ] = None,
    seeds: Annotated[
        Optional[str],
        typer.Option(
            help="Render these seeds instead, e.g. 0-7,12: z = np.random.RandomState(seed).randn(1, nz) each "
            "(NVIDIA's convention), mapped in w and w+."
        ),
    ] = None,
) -> Outcome:
    """Render a PNG grid of G(z) for prior draws, a latents file or seeds (samples.png; samples.npz: the latents
    and the raw images)."""
    if latents is not None and seeds is not None:
        raise GanProbeError("give --latents or --seeds, not both", param="seeds")
    seed_list = parse_seeds(seeds) if seeds is not None else None
    given = given_latents(ctx.gen, latents)
    num = len(seed_list) if seed_list is not None else count_latents(given, n)
    check_memory(sample_memory(ctx.gen, num=num, batch_size=ctx.common.batch_size))
    extra: dict[str, np.ndarray] = {}
    if seed_list is not None:
        z, z_drawn = seed_latents(ctx.gen, seed_list)
        extra["seeds"] = np.asarray(seed_list, dtype=np.int64)
        if latent_key(ctx.gen) != "z":
            extra["z"] = z_drawn.numpy()
    elif given is not None:
        z = given
    else:
        z = draw_or_load_latents(ctx.gen, num=n, latents=None, seed=ctx.common.seed)
    images = generate(ctx.gen, z, ctx.common.batch_size)
    if ctx.out is not None:  # rank 0 only under torchrun
        write_samples(images, z, ctx.gen, ctx.out, **extra)
    results: dict[str, object] = {
        "num_samples": num,
        "output_min": float(images.min()),
        "output_max": float(images.max()),
        "output_mean": float(images.mean()),
    }
    parameters: dict[str, object] = {"n": num}
    if seed_list is not None:
        parameters["seeds"] = seeds
    if latents is not None:
        parameters["latents"] = str(latents)
    return Outcome(parameters=parameters, results=results)
