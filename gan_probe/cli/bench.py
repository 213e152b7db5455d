"""``gan-probe bench``, ``bench spectrum`` and ``bench throughput``: where speed and accuracy are measured.

- ``gan-probe bench [CKPT]``: the exact method timed against its limit, the
  naive reverse-mode peer, the estimators and the exact gradient, on a
  checkpoint or a ``--synthetic`` model;
- ``gan-probe bench spectrum``: estimator accuracy and slq interval coverage on
  linear generators with known log-spaced spectra;
- ``gan-probe bench throughput [CKPT]``: exact ln Q latents/s and peak memory
  over batch and chunk sizes (the one mode under torchrun);
- ``gan-probe bench divergence [CKPT]``: the phases of a ``divergence`` run
  timed, and AIS from the encoder against AIS from the prior.

The targets each mode checks are the table :data:`gan_probe.analyses.targets.TARGETS`.
Before 0.3 the modes were flags of ``bench`` (``--synthetic spectrum``,
``--throughput``); that form still runs, rewritten to the subcommand with a note
on stderr (:class:`BenchGroup`), and goes in the next release.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from gan_probe import distributed
from gan_probe.analyses.bench import (
    SPECTRUM_DEFAULTS,
    BenchParams,
    BenchResult,
    LinearModelParams,
    SyntheticModelParams,
    parse_splits,
    run_bench,
    run_spectrum_bench,
)
from gan_probe.analyses.divergence_bench import (
    DivergenceBenchParams,
    DivergenceBenchResult,
    default_run,
    run_divergence_bench,
)
from gan_probe.analyses.throughput import ThroughputParams, run_throughput
from gan_probe.cli.app import app
from gan_probe.cli.runner import Outcome, RunContext, fmt, probe_command
from gan_probe.errors import GanProbeError
from gan_probe.limits import MAX_COUNT
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.estimators import ESTIMATORS, params_json

#: The hidden name of ``gan-probe bench`` itself (the command run when no subcommand is named).
DEFAULT_MODE = "model"
#: Old flag forms of the subcommands: (flag, its value or None for a switch) -> the subcommand.
OLD_FORMS = {("--synthetic", "spectrum"): "spectrum", ("--throughput", None): "throughput"}


class BenchGroup(TyperGroup):
    """``bench`` with no subcommand named runs the default comparison (the hidden command :data:`DEFAULT_MODE`);
    the old forms ``bench --synthetic spectrum`` and ``bench --throughput`` are rewritten to their subcommands
    with a note on stderr."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's (vendored) click Context
        args = list(args)
        if not args or args[0] not in self.commands:
            mode, args = rewrite_old_form(args)
            if mode != DEFAULT_MODE:
                args, dropped = self._drop_unused(ctx, mode, args)
                if not ({"--quiet", "-q"} & set(args)):
                    ignored = f"; ignored, as bench always did in this mode: {' '.join(dropped)}" if dropped else ""
                    typer.echo(
                        f"note: the {mode} mode of bench is now its own subcommand, gan-probe bench {mode} "
                        f"(the flag form is kept for this release only){ignored}",
                        err=True,
                    )
            args = [mode, *args]
        return super().parse_args(ctx, args)

    def _drop_unused(self, ctx: Any, mode: str, args: list[str]) -> tuple[list[str], list[str]]:
        """``args`` less the options that another bench mode takes and ``mode`` does not (the one-command bench
        took every mode's options and ignored the others'), and those options."""
        takes = {name for p in self.commands[mode].get_params(ctx) for name in (*p.opts, *p.secondary_opts)}
        others: dict[str, bool] = {}  # option -> whether it takes a value
        for name, command in self.commands.items():
            if name != mode:
                for p in command.get_params(ctx):
                    for opt in (*p.opts, *p.secondary_opts):
                        others[opt] = not getattr(p, "is_flag", False) and not getattr(p, "count", False)
        kept: list[str] = []
        dropped: list[str] = []
        rest = iter(args)
        for arg in rest:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in takes and flag in others:
                dropped.append(arg)
                if others[flag] and "=" not in arg:
                    dropped[-1] += " " + next(rest, "")
                continue
            kept.append(arg)
        return kept, dropped

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        # the default mode is plain `gan-probe bench` in usage lines and errors, not `bench model`
        return (None if name == DEFAULT_MODE else name), command, rest


def rewrite_old_form(args: Sequence[str]) -> tuple[str, list[str]]:
    """(the subcommand, its arguments) of a ``bench`` command line without a subcommand name: ``--throughput``
    and ``--synthetic spectrum`` (or ``--synthetic=spectrum``) become ``throughput`` and ``spectrum``."""
    args = list(args)
    mode = DEFAULT_MODE
    if "--throughput" in args:
        args.remove("--throughput")
        mode = "throughput"
    for i, arg in enumerate(args):
        if arg == "--synthetic=spectrum" or (arg == "--synthetic" and args[i + 1 : i + 2] == ["spectrum"]):
            if mode == "throughput":
                raise typer.BadParameter(
                    "bench throughput times a generator: use a checkpoint or a synthetic model",
                    param_hint="--synthetic",
                )
            del args[i : i + (1 if "=" in arg else 2)]
            mode = "spectrum"
            break
    return mode, args


#: Where the options' defaults come from: the parameter dataclasses, each default stated there once.
_BENCH = BenchParams()
_MODEL = SyntheticModelParams()
_LINEAR = LinearModelParams()
_THROUGHPUT = ThroughputParams()

bench_app = typer.Typer(
    cls=BenchGroup,
    help="Time the exact method against its limit, the naive reverse-mode peer, the estimators and the exact "
    "gradient (bench spectrum: estimator accuracy; bench throughput: latents/s; bench divergence: the divergence "
    "run's phases and AIS starts).",
    no_args_is_help=False,
)
app.add_typer(bench_app, name="bench")


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


#: The options of the synthetic generators, shared by bench and bench throughput (name -> (annotation, default)).
SynthArg = Annotated[
    Optional[str],
    typer.Option(
        help="Time a synthetic model instead of CKPT: dcgan64 (PyTorch-examples 64x64x3 DCGAN, nz=100, ngf=64, "
        "DCGAN init), dcgan64-nz128, stylegan2-256 (rosinality layout, 256x256, channel_multiplier 2, "
        "style_dim 512, random init, w space), stylegan2-64 (the same at 64x64, channel_multiplier 1: CPU-sized), "
        "stylegan2-32 (32x32), stylegan3-t-256 (gan-probe's StyleGAN3 with NVIDIA's config T at 256x256: channel base "
        "32768, channel max 512, 14 layers, margin 10; NVIDIA's init and Kaiser filters, seeded; w space), "
        "stylegan3-t-32 (32x32, channel base 512, channel max 32, 4 layers: test-sized)."
    ),
]
SynthNzArg = Annotated[
    Optional[int], typer.Option(help="nz of a synthetic DCGAN \\[default: 100; dcgan64-nz128: 128].")
]
SynthSpaceArg = Annotated[
    str, typer.Option(help="stylegan models: the latent space benched, z, w or w+ (w+: 2 log2(size) - 2 x 512).")
]
SynthChannelsArg = Annotated[
    Optional[int],
    typer.Option(help="stylegan models: one channel width at every resolution (a narrow, CPU-sized model)."),
]
SynthStyleDimArg = Annotated[
    int,
    typer.Option(
        help="stylegan models: style_dim, StyleGAN3's z_dim = w_dim (w+ has one style per layer; it is singular "
        "unless every modulated layer has at least style_dim input channels)."
    ),
]
MethodsArg = Annotated[str, typer.Option(help=f"Estimators to time: a comma list of {','.join(ESTIMATORS)}, or none.")]
SplitsArg = Annotated[
    str,
    typer.Option(
        help="slq budget splits run side by side, a comma list of STEPSxPROBES like 100x4,40x10 "
        "(empty: slq at --steps x --probes)."
    ),
]


def _splits_text(splits: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{a}x{b}" for a, b in splits)


def _build(ctx: RunContext, model: SyntheticModelParams) -> LoadedGenerator:
    """The --synthetic model on the checkpoint's device and dtype."""
    return model.build(seed=ctx.common.seed, device=ctx.gen.device, dtype=ctx.gen.dtype)


def _no_prior_net(ctx: RunContext, what: str) -> None:
    """--prior-net composes h with CKPT; a mode that times another model would leave it unused: refuse it."""
    if ctx.common.prior_net is not None:
        raise GanProbeError(f"--prior-net composes a prior with CKPT, but {what}: drop --prior-net")


def _no_torchrun(mode: str) -> None:
    if distributed.current().distributed:
        raise GanProbeError(
            f"under torchrun, bench measures throughput only (gan-probe bench throughput); {mode} times one "
            "process: run it without torchrun"
        )


@probe_command(bench_app, DEFAULT_MODE, estimators=True, report_as="bench")
def bench(
    ctx: RunContext,
    synthetic: SynthArg = _MODEL.name,
    synthetic_nz: SynthNzArg = _MODEL.nz,
    n: Annotated[int, typer.Option("--n", "--num", help="Latents timed together.")] = _BENCH.num,
    repeats: Annotated[
        int, typer.Option(help="Timed runs per method (median reported), after the warm-up.")
    ] = _BENCH.repeats,
    naive_latents: Annotated[
        int,
        typer.Option(
            help="Latents for the naive reverse-mode peer (slow: ~1 min each for a 64x64x3 DCGAN on CPU); 0 skips."
        ),
    ] = _BENCH.naive_latents,
    methods: MethodsArg = ",".join(_BENCH.methods),
    gradient: Annotated[
        bool, typer.Option("--gradient/--no-gradient", help="Time the exact gradient too.")
    ] = _BENCH.gradient,
    splits: SplitsArg = _splits_text(_BENCH.splits),
    synthetic_space: SynthSpaceArg = _MODEL.space,
    synthetic_channels: SynthChannelsArg = _MODEL.channels,
    synthetic_style_dim: SynthStyleDimArg = _MODEL.style_dim,
    warmup: Annotated[
        int, typer.Option(help="Untimed runs before the timed ones (0 for runs of minutes).")
    ] = _BENCH.warmup,
    limit: Annotated[
        bool, typer.Option("--limit/--no-limit", help="Time the limit (nz JVPs + one QR).")
    ] = _BENCH.limit,
    chunk_size: Annotated[
        Optional[int], typer.Option(help="Latent axes per batched JVP call \\[default: auto].")
    ] = _BENCH.chunk_size,
    naive_rows: Annotated[
        Optional[int],
        typer.Option(
            help="Time the naive peer on this many output rows and extrapolate to all of them (0: the whole "
            "Jacobian) [default: 64 for stylegan models, 0 otherwise]."
        ),
    ] = None,
    columns: Annotated[
        int,
        typer.Option(
            help="Time exact's and the limit's JVPs on this many of the nz columns (evenly spread) and scale them "
            "to nz, with the QR and SVD timed on a stand-in of J's shape: for models too slow for nz products "
            "(needs --methods none --no-gradient and --naive-rows) [default: 0, all nz columns]."
        ),
    ] = _BENCH.columns,
) -> Outcome:
    """Time the exact method against its limit, the naive reverse-mode peer, the estimators and the exact gradient.

    One run on the given checkpoint (or --synthetic model) and --device; prints ratios and each
    estimator's error against exact. gan-probe bench spectrum measures estimator accuracy on linear
    generators instead, gan-probe bench throughput latents per second. No timing is a test: this is
    where speed is measured (docs/design.md §9).
    """
    model = SyntheticModelParams(synthetic, synthetic_nz, synthetic_space, synthetic_channels, synthetic_style_dim)
    model.validate()
    if model.name is not None:
        _no_prior_net(ctx, f"--synthetic {model.name} times a synthetic model instead")
    params = BenchParams(
        num=n,
        repeats=repeats,
        naive_latents=naive_latents,
        methods=parse_methods(methods),
        estimators=ctx.estimators,
        chunk_size=chunk_size,
        gradient=gradient,
        seed=ctx.common.seed,
        naive_rows=naive_rows if naive_rows is not None else (64 if model.stylegan else _BENCH.naive_rows),
        splits=parse_splits(splits),
        warmup=warmup,
        limit=limit,
        columns=columns,
    ).validate()
    _no_torchrun("bench")
    gen = (
        ctx.gen if model.name is None else model.build(seed=ctx.common.seed, device=ctx.gen.device, dtype=ctx.gen.dtype)
    )
    result = run_bench(gen, params)
    parameters = _parameters(params, ctx, model, spectrum=None)
    return _outcome(result, parameters, synthetic)


@probe_command(bench_app, "spectrum", estimators=True, report_as="bench")
def spectrum(
    ctx: RunContext,
    synthetic_nz: Annotated[
        Optional[int], typer.Option(help=f"nz of the linear generators \\[default: {_LINEAR.nz}].")
    ] = None,
    n: Annotated[int, typer.Option("--n", "--num", help="Probe seeds per condition number.")] = SPECTRUM_DEFAULTS.num,
    methods: MethodsArg = ",".join(SPECTRUM_DEFAULTS.methods),
    conds: Annotated[str, typer.Option(help="Condition numbers of M.")] = ",".join(
        f"{c:g}" for c in SPECTRUM_DEFAULTS.conds
    ),
    splits: SplitsArg = _splits_text(SPECTRUM_DEFAULTS.splits),
    exact_max_nz: Annotated[
        int, typer.Option(help="Time the exact method up to this nz; beyond, extrapolate it as nz^3.")
    ] = SPECTRUM_DEFAULTS.exact_max_nz,
    synthetic_operator: Annotated[
        str,
        typer.Option(
            help="dense (Haar U, V: an nz x nz matrix), hadamard (Walsh-Hadamard, nz a power of two) "
            "or auto (hadamard from nz 2048 when nz is a power of two)."
        ),
    ] = _LINEAR.operator,
) -> Outcome:
    """Estimator accuracy and slq interval coverage on linear generators with known log-spaced spectra.

    Per condition number of M, each estimator's error in nats per dimension against the prescribed
    ln det over --n probe seeds, slq's interval coverage, and the cost against the exact method's
    (docs/design.md §9).
    """
    _no_prior_net(ctx, "bench spectrum measures linear generators, not CKPT")
    linear = LinearModelParams(
        nz=synthetic_nz if synthetic_nz is not None else _LINEAR.nz,
        operator=synthetic_operator,
    ).validate()
    params = BenchParams(
        num=n,
        naive_latents=SPECTRUM_DEFAULTS.naive_latents,
        methods=parse_methods(methods),
        estimators=ctx.estimators,
        seed=ctx.common.seed,
        conds=parse_conds(conds),
        splits=parse_splits(splits),
        exact_max_nz=exact_max_nz,
    ).validate()
    _no_torchrun("bench spectrum")
    result = run_spectrum_bench(
        params, nz=linear.nz, device=ctx.gen.device, dtype=ctx.gen.dtype, operator=linear.operator
    )
    model = SyntheticModelParams(name=None, nz=synthetic_nz)
    parameters = _parameters(params, ctx, model, spectrum=linear)
    return _outcome(result, parameters, "spectrum")


def _parameters(
    params: BenchParams, ctx: RunContext, model: SyntheticModelParams, *, spectrum: LinearModelParams | None
) -> dict[str, Any]:
    """The report's parameters of bench and bench spectrum (the fields and names of the one-command form)."""
    return {
        "synthetic": "spectrum" if spectrum is not None else model.name,
        "synthetic_nz": model.nz,
        "n": params.num,
        "repeats": params.repeats,
        "naive_latents": params.naive_latents,
        "methods": list(params.methods),
        "gradient": params.gradient,
        "chunk_size": params.chunk_size,
        "conds": list(params.conds) if spectrum is not None else None,
        "exact_max_nz": params.exact_max_nz if spectrum is not None else None,
        "synthetic_operator": spectrum.operator if spectrum is not None else None,
        "naive_rows": params.naive_rows,
        "splits": [f"{a}x{b}" for a, b in params.splits] or None,
        "warmup": params.warmup,
        "limit": params.limit,
        "columns": params.columns,
        "synthetic_space": model.space if model.stylegan else None,
        "synthetic_channels": model.channels,
        "synthetic_style_dim": model.style_dim,
        "estimators": {name: params_json(ctx.estimators[name]) for name in params.methods},
    }


def _outcome(result: BenchResult, parameters: dict[str, Any], synthetic: str | None) -> Outcome:
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


@probe_command(bench_app, "throughput", report_as="bench")
def throughput(
    ctx: RunContext,
    synthetic: SynthArg = _MODEL.name,
    synthetic_nz: SynthNzArg = _MODEL.nz,
    n: Annotated[
        int, typer.Option("--n", "--num", help="Latents per configuration (all ranks together).")
    ] = _THROUGHPUT.num,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to time.")] = ",".join(
        str(b) for b in _THROUGHPUT.batch_sizes
    ),
    chunk_sizes: Annotated[
        str, typer.Option(help="Latent axes per JVP call to time (auto: from free GPU memory).")
    ] = ",".join("auto" if c is None else str(c) for c in _THROUGHPUT.chunk_sizes),
    synthetic_space: SynthSpaceArg = _MODEL.space,
    synthetic_channels: SynthChannelsArg = _MODEL.channels,
    synthetic_style_dim: SynthStyleDimArg = _MODEL.style_dim,
) -> Outcome:
    """Exact ln Q latents/s and peak memory over --batch-sizes x --chunk-sizes.

    Under torchrun: the aggregate of all ranks, and the speed-up over rank 0 alone (docs/design.md §9).
    """
    model = SyntheticModelParams(synthetic, synthetic_nz, synthetic_space, synthetic_channels, synthetic_style_dim)
    model.validate()
    if model.name is not None:
        _no_prior_net(ctx, f"--synthetic {model.name} times a synthetic model instead")
    params = ThroughputParams(
        num=n,
        batch_sizes=tuple(b for b in parse_sizes(batch_sizes, "--batch-sizes") if b is not None),
        chunk_sizes=parse_sizes(chunk_sizes, "--chunk-sizes", auto=True),
        seed=ctx.common.seed,
    ).validate()
    gen = (
        ctx.gen if model.name is None else model.build(seed=ctx.common.seed, device=ctx.gen.device, dtype=ctx.gen.dtype)
    )
    result = run_throughput(gen, params)
    checkpoint = None
    if model.name is not None:
        checkpoint = {"path": None, "sha256": None, "source": f"synthetic:{model.name}", **gen.describe()}
    notes = []  # ranks left idle by a configuration get the runner's note (gan_probe.distributed.idle_note)
    missed = [tg["name"] for tg in result["targets"] if tg["met"] is False]
    if missed:
        notes.append("targets missed: " + "; ".join(missed))
    parameters = {
        "throughput": True,
        "synthetic": model.name,
        "synthetic_nz": model.nz,
        "n": params.num,
        "batch_sizes": list(params.batch_sizes),
        "chunk_sizes": [c if c is not None else "auto" for c in params.chunk_sizes],
    }
    return Outcome(
        parameters=parameters, results=result, table=_throughput_table(result), notes=notes, checkpoint=checkpoint
    )


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


def _throughput_table(result: dict) -> Table:
    world = result["world"]["size"]
    table = Table(
        title=f"exact ln Q throughput, {result['dtype']}, {escape(result['device'])}, "
        f"{world} process{'es' if world > 1 else ''}"
    )
    for col in ("batch", "chunk", "latents", "time \\[s]", "latents/s", "peak memory \\[MiB]"):
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
            "time \\[s]",
            "per latent \\[s]",
            "x exact",
            "products",
            "median |err| \\[nats]",
            "\\[nats/dim]",
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


_DIVERGENCE_BENCH = DivergenceBenchParams()


@probe_command(bench_app, "divergence", report_as="bench")
def divergence(
    ctx: RunContext,
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Images as for gan-probe divergence [default: the bundled held-out MNIST images].", show_default=False
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    spread: Annotated[float, typer.Option(help="The spread noise width sigma.")] = _DIVERGENCE_BENCH.run.sigmas[0],
    steps: Annotated[int, typer.Option(help="Adam steps per encoder (early stopped).")] = _DIVERGENCE_BENCH.run.steps,
    importance: Annotated[
        int, typer.Option(help="K draws from the encoder per point.")
    ] = _DIVERGENCE_BENCH.run.importance,
    model_samples: Annotated[
        int, typer.Option(help="Pairs (z, y) drawn from the generator.")
    ] = _DIVERGENCE_BENCH.run.num_model_samples,
    ais: Annotated[
        bool, typer.Option("--ais/--no-ais", help="Compare AIS from the encoder and from the prior after the run.")
    ] = True,
    images: Annotated[int, typer.Option(help="Held-out images in the AIS comparison.")] = _DIVERGENCE_BENCH.num_images,
    chain_steps: Annotated[str, typer.Option(help="AIS lengths run from each start, increasing.")] = ",".join(
        str(s) for s in _DIVERGENCE_BENCH.chain_steps
    ),
    reference_steps: Annotated[
        int, typer.Option(help="AIS steps of the reference chain (from the encoder).")
    ] = _DIVERGENCE_BENCH.reference_steps,
    tolerance: Annotated[
        float, typer.Option(help="Nats from the reference that count as reached.")
    ] = _DIVERGENCE_BENCH.tolerance,
) -> Outcome:
    """Time the phases of a divergence run (its defaults unless told) and compare AIS started from the encoder
    with AIS started from the prior against a long reference chain (docs/design.md §9)."""
    _no_torchrun("bench divergence")
    run = default_run(
        ctx.common.batch_size,
        data=str(data) if data is not None else None,
        limit=limit,
        sigmas=(spread,),
        steps=steps,
        importance=importance,
        num_model_samples=model_samples,
        seed=ctx.common.seed,
    )
    params = DivergenceBenchParams(
        run=run,
        num_images=images,
        chain_steps=tuple(s for s in parse_sizes(chain_steps, "--chain-steps") if s is not None),
        reference_steps=reference_steps,
        tolerance=tolerance,
        seed=ctx.common.seed,
    ).validate()
    result = run_divergence_bench(ctx.gen, params, ais=ais, progress=ctx.progress)
    parameters = {
        "data": run.data,
        "limit": limit,
        "spread": spread,
        "steps": steps,
        "importance": importance,
        "model_samples": model_samples,
        "ais": ais,
        "images": images,
        "chain_steps": list(params.chain_steps),
        "reference_steps": reference_steps,
        "tolerance": tolerance,
    }
    missed = [tg["name"] for tg in result.targets if tg["met"] is False]
    notes = ["targets missed: " + "; ".join(missed)] if missed else []
    return Outcome(parameters=parameters, results=result.to_json(), table=_divergence_table(result), notes=notes)


def _divergence_table(result: DivergenceBenchResult) -> Table:
    table = Table(title=f"bench divergence: phases of the run, {escape(result.machine['device'])}")
    table.add_column("phase or chain", no_wrap=True)
    for col in ("seconds", "steps", "mean gap [nats]", "max |err| [nats]", "within", "acceptance"):
        table.add_column(col, justify="right")
    for name, seconds in result.phases.items():
        table.add_row(name, fmt(seconds, ".3g"), "", "", "", "", "")
    table.add_row("run (total)", fmt(result.run_seconds, ".3g"), "", "", "", "", "")
    lines = [
        f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in result.load_before)}; "
        f"after {', '.join(f'{v:.2f}' for v in result.load_after)}; torch threads {result.machine['torch_threads']}"
    ]
    if result.ais is not None:
        a = result.ais.to_json()
        table.add_row(
            "AIS reference (encoder)", fmt(a["reference_seconds"], ".3g"), str(a["reference_steps"]), "", "", "", ""
        )
        for r in a["rows"]:
            table.add_row(
                f"AIS from the {r['start']}",
                fmt(r["seconds"], ".3g"),
                str(r["steps"]),
                fmt(r["mean_gap_nats"], ".3g"),
                fmt(r["max_abs_error_nats"], ".3g"),
                "yes" if r["within_tolerance"] else "no",
                fmt(r["acceptance"], ".2f"),
            )
        need = a["steps_needed"]
        lines.append(
            f"{a['num_images']} held-out images at sigma {a['sigma']:g}: within {a['tolerance_nats']:g} nat of the "
            f"reference from {need['encoder'] or 'never'} steps (encoder start), "
            f"{need['prior'] or 'never'} (prior start)"
        )
    for tg in result.targets:
        state = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        lines.append(f"{tg['name']} = {fmt(tg['value'], '.4g')} (target {tg['target']}): {state}")
    table.caption = "\n".join(lines)
    return table
