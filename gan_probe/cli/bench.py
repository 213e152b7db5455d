"""``gan-probe bench``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gan_probe import distributed
from gan_probe.analyses.bench import (
    DEFAULT_CONDS,
    SYNTHETIC,
    BenchParams,
    BenchResult,
    parse_splits,
    run_bench,
    run_spectrum_bench,
)
from gan_probe.analyses.throughput import ThroughputParams, run_throughput
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, fmt, probe_command
from gan_probe.errors import GanProbeError
from gan_probe.limits import MAX_COUNT, MAX_NZ, check_count
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.synthetic import OPERATORS, synthetic_dcgan, synthetic_stylegan2
from gan_probe.spectral.estimators import ESTIMATORS, params_json


def parse_methods(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if text.strip().lower() == "none":
        return ()
    for name in names:
        if name not in ESTIMATORS:
            raise GanProbeError(
                f"--methods: unknown estimator {name!r}; use a comma list of {','.join(ESTIMATORS)} or none"
            )
    return names


def parse_conds(text: str) -> tuple[float, ...]:
    try:
        conds = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise GanProbeError(f"--conds must be a comma list of numbers like 1e2,1e7; got {text!r}") from None
    if not conds:
        raise GanProbeError("--conds is empty")
    return conds


@probe_command(app, "bench", estimators=True)
def bench(
    ctx: RunContext,
    synthetic: Annotated[
        Optional[str],
        typer.Option(
            help="Bench a synthetic model instead of CKPT: dcgan64 (PyTorch-examples 64x64x3 DCGAN, nz=100, ngf=64, "
            "DCGAN init), dcgan64-nz128, stylegan2-256 (rosinality layout, 256x256, channel_multiplier 2, "
            "style_dim 512, random init, w space), stylegan2-64 (the same at 64x64, channel_multiplier 1: CPU-sized), "
            "stylegan2-32 (32x32), "
            "or spectrum (linear generators with log-spaced spectra: estimator accuracy)."
        ),
    ] = None,
    synthetic_nz: Annotated[
        Optional[int], typer.Option(help="nz of the synthetic model [default: 100 for dcgan64, 512 for spectrum].")
    ] = None,
    n: Annotated[
        Optional[int],
        typer.Option("--n", "--num", help="Latents timed together (spectrum: probe seeds per cond) [default: 4 / 20]."),
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per method (median reported), after one warm-up.")] = 3,
    naive_latents: Annotated[
        int,
        typer.Option(
            help="Latents for the naive reverse-mode peer (slow: ~1 min each for a 64x64x3 DCGAN on CPU); 0 skips."
        ),
    ] = 1,
    methods: Annotated[
        str, typer.Option(help=f"Estimators to time: a comma list of {','.join(ESTIMATORS)}, or none.")
    ] = ",".join(ESTIMATORS),
    gradient: Annotated[bool, typer.Option("--gradient/--no-gradient", help="Time the exact gradient too.")] = True,
    conds: Annotated[str, typer.Option(help="Spectrum mode: condition numbers of M.")] = ",".join(
        f"{c:g}" for c in DEFAULT_CONDS
    ),
    splits: Annotated[
        str,
        typer.Option(
            help="Spectrum mode: slq budget splits run side by side, a comma list of STEPSxPROBES like 100x4,40x10 "
            "(empty: slq at --steps x --probes)."
        ),
    ] = "",
    exact_max_nz: Annotated[
        int,
        typer.Option(help="Spectrum mode: time the exact method up to this nz; beyond, extrapolate it as nz^3."),
    ] = 4096,
    synthetic_space: Annotated[
        str, typer.Option(help="stylegan2 models: the latent space benched, z, w or w+ (w+: 2 log2(size) - 2 x 512).")
    ] = "w",
    synthetic_channels: Annotated[
        Optional[int],
        typer.Option(help="stylegan2 models: one channel width at every resolution (a narrow, CPU-sized model)."),
    ] = None,
    synthetic_style_dim: Annotated[
        int,
        typer.Option(
            help="stylegan2 models: style_dim (w+ has one style per layer; it is singular unless every modulated "
            "layer has at least style_dim input channels)."
        ),
    ] = 512,
    warmup: Annotated[int, typer.Option(help="Untimed runs before the timed ones (0 for runs of minutes).")] = 1,
    limit: Annotated[bool, typer.Option("--limit/--no-limit", help="Time the limit (nz JVPs + one QR).")] = True,
    synthetic_operator: Annotated[
        str,
        typer.Option(
            help="Spectrum mode: dense (Haar U, V: an nz x nz matrix), hadamard (Walsh-Hadamard, nz a power of two) "
            "or auto (hadamard from nz 2048 when nz is a power of two)."
        ),
    ] = "auto",
    chunk_size: Annotated[Optional[int], typer.Option(help="Latent axes per batched JVP call [default: auto].")] = None,
    throughput: Annotated[
        bool,
        typer.Option(
            "--throughput",
            help="Measure exact ln Q latents/s and peak memory over --batch-sizes x --chunk-sizes instead (under "
            "torchrun: the aggregate of all ranks, and the speed-up over rank 0 alone).",
        ),
    ] = False,
    batch_sizes: Annotated[str, typer.Option(help="--throughput: batch sizes to time.")] = "1,4,16",
    chunk_sizes: Annotated[
        str, typer.Option(help="--throughput: latent axes per JVP call to time (auto: from free GPU memory).")
    ] = "auto",
    naive_rows: Annotated[
        int,
        typer.Option(
            help="Time the naive peer on this many output rows and extrapolate to all of them (0: the whole "
            "Jacobian) [default: 64 for stylegan2 models, 0 otherwise]."
        ),
    ] = -1,
) -> Outcome:
    """Time the exact method against its limit, the naive reverse-mode peer, the estimators and the exact gradient.

    One run on the given checkpoint (or --synthetic model) and --device; prints ratios and each
    estimator's error against exact. --synthetic spectrum measures estimator accuracy and slq interval
    coverage on linear generators with known log-spaced spectra instead. No timing is a test: this is
    where speed is measured (docs/design.md §9).
    """
    if synthetic is not None and synthetic not in SYNTHETIC:
        raise GanProbeError(f"--synthetic {synthetic!r}: use one of {', '.join(SYNTHETIC)}")
    if synthetic_nz is not None and synthetic is None:
        raise GanProbeError("--synthetic-nz needs --synthetic")
    if synthetic_nz is not None:
        check_count(synthetic_nz, "--synthetic-nz", param=None, low=2, high=MAX_NZ)
    if synthetic_channels is not None:
        check_count(synthetic_channels, "--synthetic-channels", param=None, high=MAX_NZ)
    check_count(synthetic_style_dim, "--synthetic-style-dim", param=None, high=MAX_NZ)
    if synthetic_operator not in OPERATORS:
        raise GanProbeError(f"--synthetic-operator {synthetic_operator!r}: use one of {', '.join(OPERATORS)}")
    spectrum_nz = synthetic_nz or 512
    if synthetic_operator == "hadamard" and spectrum_nz & (spectrum_nz - 1):
        raise GanProbeError(f"--synthetic-operator hadamard needs a power-of-two --synthetic-nz, got {spectrum_nz}")
    params = BenchParams(
        num=n if n is not None else (20 if synthetic == "spectrum" else 4),
        repeats=repeats,
        naive_latents=naive_latents if synthetic != "spectrum" else 0,
        methods=parse_methods(methods),
        estimators=ctx.estimators,
        chunk_size=chunk_size,
        gradient=gradient,
        seed=ctx.common.seed,
        conds=parse_conds(conds),
        naive_rows=naive_rows if naive_rows >= 0 else (64 if (synthetic or "").startswith("stylegan2") else 0),
        splits=parse_splits(splits),
        exact_max_nz=exact_max_nz,
        warmup=warmup,
        limit=limit,
    ).validate()
    device, dtype = ctx.gen.device, ctx.gen.dtype
    stylegan2 = {"space": synthetic_space, "channels": synthetic_channels, "style_dim": synthetic_style_dim}
    if throughput:
        if synthetic == "spectrum":
            raise GanProbeError("--throughput times a generator: use a checkpoint or a synthetic model, not spectrum")
        return _throughput(ctx, synthetic, synthetic_nz, stylegan2, n, batch_sizes, chunk_sizes)
    if distributed.current().distributed:
        raise GanProbeError(
            "under torchrun, bench measures --throughput only (its other modes time one process: run them without "
            "torchrun)"
        )
    if synthetic == "spectrum":
        result = run_spectrum_bench(params, nz=spectrum_nz, device=device, dtype=dtype, operator=synthetic_operator)
    else:
        result = run_bench(_model(ctx, synthetic, synthetic_nz, stylegan2), params)
    parameters = {
        "synthetic": synthetic,
        "synthetic_nz": synthetic_nz,
        "n": params.num,
        "repeats": params.repeats,
        "naive_latents": params.naive_latents,
        "methods": list(params.methods),
        "gradient": params.gradient,
        "chunk_size": chunk_size,
        "conds": list(params.conds) if synthetic == "spectrum" else None,
        "exact_max_nz": params.exact_max_nz if synthetic == "spectrum" else None,
        "synthetic_operator": synthetic_operator if synthetic == "spectrum" else None,
        "naive_rows": params.naive_rows,
        "splits": [f"{a}x{b}" for a, b in params.splits] or None,
        "warmup": params.warmup,
        "limit": params.limit,
        "synthetic_space": synthetic_space if (synthetic or "").startswith("stylegan2") else None,
        "synthetic_channels": synthetic_channels,
        "synthetic_style_dim": synthetic_style_dim,
        "estimators": {name: params_json(ctx.estimators[name]) for name in params.methods},
    }
    notes = []
    missed = [tg["name"] for tg in result.targets if tg["met"] is False]
    if missed:
        notes.append("targets missed: " + "; ".join(missed))
    checkpoint = None
    if synthetic is not None:
        checkpoint = {"path": None, "sha256": None, "source": f"synthetic:{synthetic}", **result.model}
    return Outcome(
        parameters=parameters, results=result.to_json(), table=_table(result), notes=notes, checkpoint=checkpoint
    )


def _model(ctx: RunContext, synthetic: str | None, synthetic_nz: int | None, stylegan2: dict) -> LoadedGenerator:
    """The generator to time: the checkpoint, or the --synthetic model built on its device and dtype
    (``stylegan2``: the synthetic StyleGAN2's space, channels and style_dim)."""
    device, dtype = ctx.gen.device, ctx.gen.dtype
    if synthetic is None:
        return ctx.gen
    if synthetic.startswith("stylegan2"):
        size, mult = {"stylegan2-256": (256, 2), "stylegan2-64": (64, 1), "stylegan2-32": (32, 1)}[synthetic]
        return synthetic_stylegan2(
            size, channel_multiplier=mult, **stylegan2, seed=ctx.common.seed, device=device, dtype=dtype
        )
    nz = synthetic_nz or (128 if synthetic == "dcgan64-nz128" else 100)
    return synthetic_dcgan(nz, seed=ctx.common.seed, device=device, dtype=dtype)


def parse_sizes(text: str, flag: str, *, auto: bool = False) -> tuple[int | None, ...]:
    """A comma list of positive integers (and ``auto`` where allowed, as None)."""
    out: list[int | None] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if auto and part == "auto":
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_COUNT:
            allowed = f"integers from 1 to {MAX_COUNT:,}" + (" or auto" if auto else "")
            raise GanProbeError(f"{flag} must be a comma list of {allowed}, like 1,4,16; got {text!r}")
        out.append(value)
    if not out:
        raise GanProbeError(f"{flag} is empty")
    return tuple(out)


def _throughput(
    ctx: RunContext,
    synthetic: str | None,
    synthetic_nz: int | None,
    stylegan2: dict,
    n: int | None,
    batch_sizes: str,
    chunk_sizes: str,
) -> Outcome:
    params = ThroughputParams(
        num=n if n is not None else 64,
        batch_sizes=tuple(b for b in parse_sizes(batch_sizes, "--batch-sizes") if b is not None),
        chunk_sizes=parse_sizes(chunk_sizes, "--chunk-sizes", auto=True),
        seed=ctx.common.seed,
    ).validate()
    gen = _model(ctx, synthetic, synthetic_nz, stylegan2)
    result = run_throughput(gen, params)
    checkpoint = None
    if synthetic is not None:
        checkpoint = {"path": None, "sha256": None, "source": f"synthetic:{synthetic}", **gen.describe()}
    notes = []  # ranks left idle by a configuration get the runner's note (gan_probe.distributed.idle_note)
    missed = [tg["name"] for tg in result["targets"] if tg["met"] is False]
    if missed:
        notes.append("targets missed: " + "; ".join(missed))
    parameters = {
        "throughput": True,
        "synthetic": synthetic,
        "synthetic_nz": synthetic_nz,
        "n": params.num,
        "batch_sizes": list(params.batch_sizes),
        "chunk_sizes": [c if c is not None else "auto" for c in params.chunk_sizes],
    }
    return Outcome(
        parameters=parameters, results=result, table=_throughput_table(result), notes=notes, checkpoint=checkpoint
    )


def _throughput_table(result: dict) -> Table:
    world = result["world"]["size"]
    table = Table(
        title=f"exact ln Q throughput, {result['dtype']}, {escape(result['device'])}, "
        f"{world} process{'es' if world > 1 else ''}"
    )
    for col in ("batch", "chunk", "latents", "time [s]", "latents/s", "peak memory [MiB]"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        peak = r["peak_memory_bytes"]
        table.add_row(
            str(r["batch_size"]),
            f"{r['chunk_size']}{' (auto)' if r['chunk_auto'] else ''}",
            str(r["num_latents"]),
            fmt(r["seconds"], ".3g"),
            fmt(r["latents_per_s"], ".4g"),
            "-" if peak is None else f"{peak / 2**20:.0f}",
        )
    lines = []
    sc = result["scaling"]
    if sc is not None:
        lines.append(
            f"{sc['world_size']} processes: {sc['latents_per_s']:.4g} latents/s; rank 0 alone "
            f"{sc['single_process_latents_per_s']:.4g} latents/s: speed-up {sc['speedup']:.2f}x"
        )
    for tg in result["targets"]:
        state = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        lines.append(f"{tg['name']} = {fmt(tg['value'], '.4g')} (target {tg['target']}): {state}")
    table.caption = "\n".join(lines)
    return table


def _table(result: BenchResult) -> Table:
    if result.mode == "spectrum":
        table = Table(
            title=f"estimator accuracy, linear G ({result.model['operator']}), nz = {result.model['nz']}, "
            f"log-spaced spectra ({result.device})"
        )
        for col in (
            "cond(M)",
            "method",
            "products",
            "s/latent",
            "x exact (time)",
            "median |err| [nats/dim]",
            "max |err| [nats/dim]",
            "mean err [nats/dim]",
            "coverage",
            "coverage (probe var. only)",
            "interval width [nats/dim]",
        ):
            table.add_column(col, justify="right")
        for r in result.rows:
            table.add_row(
                f"{r['cond']:.0e}",
                r["name"],
                str(r["num_matvecs_per_latent"]),
                fmt(r["per_latent_s"], ".3g"),
                fmt(r["exact_over_estimator_seconds"], ".3g") + ("*" if r["exact_extrapolated_from_nz"] else ""),
                fmt(r["median_abs_error_nats_per_dim"], ".3f"),
                fmt(r["max_abs_error_nats_per_dim"], ".3f"),
                fmt(r["mean_error_nats_per_dim"], "+.3f"),
                fmt(r.get("interval_coverage"), ".0%") if "interval_coverage" in r else "",
                fmt(r.get("interval_coverage_probe_only"), ".0%") if "interval_coverage_probe_only" in r else "",
                fmt(r.get("median_interval_width_nats_per_dim"), ".3f")
                if "median_interval_width_nats_per_dim" in r
                else "",
            )
    else:
        m = result.model
        table = Table(
            title=f"bench: {escape(str(m['arch']))} nz={m['nz']} out={tuple(m['output']['shape'])}, "
            f"{result.dtype}, {result.device}"
        )
        for col in (
            "method",
            "time [s]",
            "per latent [s]",
            "x exact",
            "products",
            "median |err| [nats]",
            "[nats/dim]",
            "coverage",
        ):
            table.add_column(col, justify="right")
        for r in result.rows:
            table.add_row(
                r["name"],
                fmt(r["seconds"], ".3g"),
                fmt(r["per_latent_s"], ".3g"),
                fmt(r["ratio_to_exact"], ".3g"),
                str(r.get("num_matvecs_per_latent", "")),
                fmt(r["median_abs_error_nats"], ".3g") if "median_abs_error_nats" in r else "",
                fmt(r["median_abs_error_nats_per_dim"], ".3g") if "median_abs_error_nats_per_dim" in r else "",
                fmt(r["interval_coverage"], ".0%") if "interval_coverage" in r else "",
            )
    lines = []
    if result.mode == "spectrum":
        ex = result.extra["exact"]
        how = (
            f"extrapolated as nz^3 from {fmt(ex['exact_measured_seconds'], '.3g')} s measured at nz = "
            f"{ex['extrapolated_from_nz']} (*)"
            if ex["extrapolated_from_nz"]
            else "measured"
        )
        lines.append(
            f"exact: {fmt(ex['exact_seconds_per_latent'], '.3g')} s per latent ({how}); "
            "x exact = exact's seconds per latent over the row's"
        )
    for tg in result.targets:
        state = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        lines.append(f"{tg['name']} = {fmt(tg['value'], '.3g')} (target {tg['target']}): {state}")
    table.caption = "\n".join(lines)
    return table
