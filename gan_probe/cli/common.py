"""What every subcommand shares: the common options, the report, output and exit codes.

A subcommand is a plain function ``body(ctx: RunContext, **own_options) -> Outcome``
registered with :func:`probe_command`, which adds the CKPT argument and the
common options (declared once, below) to its signature and runs it inside
:func:`execute`: load the checkpoint, stage the output files, write
``report.json``, print a table or one JSON document, and map failures to exit
codes (0 ok, 1 error, 2 usage, 3 gate failed).
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from gan_probe import __version__
from gan_probe.device import describe_device, resolve_device, resolve_dtype
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator, LoadOptions, load_generator
from gan_probe.report.files import OutputDir, dumps_strict

#: Set by :func:`gan_probe.cli.main` so reports record the real command line.
ARGV: list[str] | None = None

CKPT_PANEL = "Checkpoint"
COMMON_PANEL = "Common"

CkptArg = Annotated[
    Optional[Path],
    typer.Argument(
        help="Generator checkpoint (.safetensors, .pth/.pt). Omitted: the bundled MNIST DCGAN (nz=32).",
        show_default=False,
    ),
]

# name -> (annotation, default); the order is the order in --help
COMMON_OPTIONS: dict[str, tuple[Any, Any]] = {
    "arch": (
        Annotated[
            Optional[str],
            typer.Option(help="Architecture of a foreign file: dcgan or mlp.", rich_help_panel=CKPT_PANEL),
        ],
        None,
    ),
    "nz": (
        Annotated[
            Optional[int], typer.Option(help="Latent size (checked against the weights).", rich_help_panel=CKPT_PANEL)
        ],
        None,
    ),
    "prior": (
        Annotated[
            Optional[str],
            typer.Option(help="Latent prior: normal or uniform (overrides the file's).", rich_help_panel=CKPT_PANEL),
        ],
        None,
    ),
    "sigma": (
        Annotated[Optional[float], typer.Option(help="Std. dev. of a normal prior.", rich_help_panel=CKPT_PANEL)],
        None,
    ),
    "low": (
        Annotated[Optional[float], typer.Option(help="Lower bound of a uniform prior.", rich_help_panel=CKPT_PANEL)],
        None,
    ),
    "high": (
        Annotated[Optional[float], typer.Option(help="Upper bound of a uniform prior.", rich_help_panel=CKPT_PANEL)],
        None,
    ),
    "generator": (
        Annotated[
            Optional[str],
            typer.Option(
                help="Custom architecture package.module:factory (runs that code; CKPT, if given, holds its weights).",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "device": (
        Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=COMMON_PANEL)],
        "auto",
    ),
    "dtype": (
        Annotated[str, typer.Option(help="float32 or float64 for the generator.", rich_help_panel=COMMON_PANEL)],
        "float32",
    ),
    "seed": (
        Annotated[
            int,
            typer.Option(help="Random seed: the same command gives the same numbers.", rich_help_panel=COMMON_PANEL),
        ],
        0,
    ),
    "threads": (
        Annotated[
            Optional[int],
            typer.Option(
                help="CPU threads for torch [default: torch's]; 1 is often faster on a small busy CPU.",
                rich_help_panel=COMMON_PANEL,
            ),
        ],
        None,
    ),
    "batch_size": (
        Annotated[
            int,
            typer.Option("--batch-size", help="Latents (or images) processed together.", rich_help_panel=COMMON_PANEL),
        ],
        16,
    ),
    "out": (
        Annotated[
            Optional[Path],
            typer.Option(help="Output folder [default: gan-probe-out/COMMAND].", rich_help_panel=COMMON_PANEL),
        ],
        None,
    ),
    "json": (
        Annotated[
            bool,
            typer.Option(
                "--json", help="Print the report as one JSON document on stdout.", rich_help_panel=COMMON_PANEL
            ),
        ],
        False,
    ),
    "quiet": (
        Annotated[
            bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.", rich_help_panel=COMMON_PANEL)
        ],
        False,
    ),
    "debug": (
        Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.", rich_help_panel=COMMON_PANEL)],
        False,
    ),
}


@dataclass(frozen=True)
class CommonOptions:
    ckpt: Path | None
    arch: str | None
    nz: int | None
    prior: str | None
    sigma: float | None
    low: float | None
    high: float | None
    generator: str | None
    device: str
    dtype: str
    seed: int
    threads: int | None
    batch_size: int
    out: Path | None
    json: bool
    quiet: bool
    debug: bool

    def load_options(self) -> LoadOptions:
        return LoadOptions(self.arch, self.nz, self.prior, self.sigma, self.low, self.high, self.generator)


@dataclass
class Gate:
    """A ``--min``/``--max`` check on a command's headline figure (exit 3 when it fails)."""

    name: str
    value: float | None
    minimum: float | None
    maximum: float | None

    def failure(self) -> str | None:
        if self.minimum is None and self.maximum is None:
            return None
        if self.value is None:
            return f"{self.name} is undefined, so the gate cannot pass"
        if self.minimum is not None and self.value < self.minimum:
            return f"{self.name} = {self.value:.6g} is below --min {self.minimum:g}"
        if self.maximum is not None and self.value > self.maximum:
            return f"{self.name} = {self.value:.6g} is above --max {self.maximum:g}"
        return None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "min": self.minimum,
            "max": self.maximum,
            "passed": self.failure() is None,
        }


@dataclass
class Outcome:
    """What a subcommand hands back: the report's ``parameters`` and ``results``, a table, a gate."""

    parameters: dict
    results: dict
    table: Table | None = None
    gate: Gate | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: replaces the report's ``checkpoint`` block when the command analysed another model (bench --synthetic)
    checkpoint: dict | None = None


@dataclass
class RunContext:
    common: CommonOptions
    gen: LoadedGenerator
    out: OutputDir | None
    progress: RichProgress
    console: Console


class RichProgress:
    """A Rich bar on stderr, only when stderr is a terminal and not ``--quiet``."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if enabled
            else None
        )

    def __enter__(self) -> RichProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if self._progress is None:
            return lambda n: None
        task_id = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(task_id, n)


def probe_command(app: typer.Typer, name: str, *, writes_files: bool = True):
    """Register ``body(ctx, **own)`` as subcommand ``name`` with CKPT and the common options."""

    def decorate(body: Callable[..., Outcome]) -> Callable[..., Outcome]:
        own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]
        params = [inspect.Parameter("ckpt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=CkptArg, default=None)]
        params += [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in own]
        params += [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ann, default=default)
            for n, (ann, default) in COMMON_OPTIONS.items()
        ]

        def wrapper(**kwargs: Any) -> None:
            common = CommonOptions(ckpt=kwargs.pop("ckpt"), **{n: kwargs.pop(n) for n in COMMON_OPTIONS})
            execute(name, common, body, kwargs, writes_files=writes_files)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__doc__ = body.__doc__
        wrapper.__name__ = body.__name__
        app.command(name)(wrapper)
        return body

    return decorate


def execute(
    name: str,
    common: CommonOptions,
    body: Callable[..., Outcome],
    own: dict,
    *,
    writes_files: bool,
) -> None:
    console = Console(stderr=True, quiet=common.quiet, highlight=False)
    out: OutputDir | None = None
    try:
        if common.batch_size < 1:
            raise GanProbeError(f"--batch-size must be at least 1, got {common.batch_size}")
        if common.threads is not None:
            if common.threads < 1:
                raise GanProbeError(f"--threads must be at least 1, got {common.threads}")
            torch.set_num_threads(common.threads)
        device = resolve_device(common.device)
        dtype = resolve_dtype(common.dtype, device)
        torch.manual_seed(common.seed)
        t0 = time.perf_counter()
        gen = load_generator(common.ckpt, common.load_options(), device=device, dtype=dtype)
        load_s = time.perf_counter() - t0
        if writes_files:
            out = OutputDir(common.out if common.out is not None else Path("gan-probe-out") / name)
        enabled = sys.stderr.isatty() and not common.quiet and not common.json
        with RichProgress(console, enabled) as progress:
            t1 = time.perf_counter()
            outcome = body(RunContext(common, gen, out, progress, console), **own)
            run_s = time.perf_counter() - t1
        report = build_report(name, common, gen, device, dtype, outcome, {"load_s": load_s, "run_s": run_s}, out)
        if out is not None:
            out.write_json("report.json", report)
            out.commit()
    except GanProbeError as exc:
        _fail(console, out, common, str(exc))
    except KeyboardInterrupt:
        _fail(console, out, common, "interrupted", code=130)
    except torch.OutOfMemoryError:
        _fail(console, out, common, "out of device memory: lower --batch-size (or use --device cpu)")
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        _fail(
            console, out, common, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        )
    for note in outcome.notes:
        console.print(f"[yellow]note:[/] {note}")
    if common.json:
        sys.stdout.write(dumps_strict(report) + "\n")
        sys.stdout.flush()
    else:
        stdout = Console(highlight=False)
        if outcome.table is not None:
            stdout.print(outcome.table)
        if out is not None:
            console.print(f"wrote {len(report['files'])} files to {out.root}")
    if outcome.interrupted:
        console.print("[yellow]interrupted:[/] the report and files hold the work done so far")
        raise typer.Exit(130)
    if outcome.gate is not None and (why := outcome.gate.failure()) is not None:
        console.print(f"[red]gate failed:[/] {why}")
        raise typer.Exit(3)


def _fail(console: Console, out: OutputDir | None, common: CommonOptions, message: str, code: int = 1) -> None:
    if out is not None:
        out.discard()
    if common.debug:
        console.print_exception()
    Console(stderr=True, highlight=False).print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def build_report(
    name: str,
    common: CommonOptions,
    gen: LoadedGenerator,
    device: torch.device,
    dtype: torch.dtype,
    outcome: Outcome,
    timings: dict,
    out: OutputDir | None,
) -> dict:
    """The report every command writes: provenance first, headline figures under ``results``."""
    files = [] if out is None else [str(out.root / f) for f in [*out.files, "report.json"]]
    report = {
        "tool": "gan-probe",
        "version": __version__,
        "command": name,
        "argv": ARGV,
        "checkpoint": outcome.checkpoint if outcome.checkpoint is not None else gen.describe(),
        "device": describe_device(device),
        "dtype": str(dtype).replace("torch.", ""),
        "seed": common.seed,
        "batch_size": common.batch_size,
        "torch_threads": torch.get_num_threads(),
        "parameters": outcome.parameters,
        "timings": timings,
        "results": outcome.results,
        "files": files,
    }
    if outcome.gate is not None:
        report["gate"] = outcome.gate.to_json()
    if outcome.interrupted:
        report["interrupted"] = True
    return report


def fmt(value: float | None, spec: str = ".4g") -> str:
    """A number for a table cell; None (undefined) shows as a dash."""
    return "-" if value is None else format(value, spec)
