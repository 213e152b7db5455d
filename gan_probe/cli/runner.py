"""Running a command: load the checkpoint, call the analysis, write the report, print, exit.

A command is a plain function ``body(ctx: RunContext, **own_options) -> Outcome``
registered with :func:`probe_command`, which adds the CKPT argument, the
common options and (with ``estimators=True``) the estimator options to its
signature and runs it inside :func:`execute`: load the checkpoint, stage the
output files, write ``report.json``, print a table or one JSON document, and
map failures to exit codes (0 ok, 1 error, 2 usage, 3 gate failed, 130 / 143 /
129 interrupted by SIGINT / SIGTERM / SIGHUP, 141 stdout's reader gone). Library
errors name a parameter; here it becomes its flag. What is printed goes through
:mod:`gan_probe.cli.terminal` (control characters from files shown inertly,
stdout failures as one line, warnings as notes).
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gan_probe import distributed, interrupt
from gan_probe.analyses.common import check_seed
from gan_probe.cli import terminal
from gan_probe.cli.options import (
    COMMON_OPTIONS,
    CkptArg,
    CommonOptions,
    EstimatorOption,
    build_estimator_params,
    estimator_options,
    flag_for,
)
from gan_probe.cli.progress import RichProgress
from gan_probe.device import resolve_device, resolve_dtype
from gan_probe.errors import GanProbeError, first_line, is_out_of_memory
from gan_probe.models.checkpoint import LoadedGenerator, load_generator
from gan_probe.models.priors import MappedPrior
from gan_probe.report.files import OutputDir, dumps_strict
from gan_probe.report.outputs import write_outputs
from gan_probe.report.report import Gate, build_report


@dataclass
class Outcome:
    """What a command hands back: the report's ``parameters`` and ``results``, a table, a gate, notes."""

    parameters: dict[str, Any]
    results: dict[str, Any]
    table: Table | None = None
    gate: Gate | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: replaces the report's ``checkpoint`` block when the command analysed another model (bench --synthetic)
    checkpoint: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What a command body gets: the options, the loaded generator, the output folder, progress,
    and (for commands that take them) every estimator's parameters, name -> dataclass."""

    common: CommonOptions
    gen: LoadedGenerator
    out: OutputDir | None
    progress: RichProgress
    console: Console
    estimators: dict[str, Any] = field(default_factory=dict)

    def write(self, result: Any) -> None:
        """Write a result's files into the output folder (under torchrun only rank 0 has one)."""
        if self.out is not None:
            write_outputs(result, self.gen, self.out)


def check_gate_bounds(minimum: float | None, maximum: float | None) -> None:
    """``--min`` above ``--max`` (or either NaN) can never pass: a usage error (exit 2) before any work."""
    for value, flag in ((minimum, "--min"), (maximum, "--max")):
        if value is not None and math.isnan(value):
            raise typer.BadParameter("nan is not a number: the gate could never pass", param_hint=flag)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise typer.BadParameter(f"{minimum:g} is above --max {maximum:g}: the gate can never pass", param_hint="--min")


def probe_command(
    app: typer.Typer, name: str, *, writes_files: bool = True, estimators: bool = False, report_as: str | None = None
) -> Callable[[Callable[..., Outcome]], Callable[..., Outcome]]:
    """Register ``body(ctx, **own)`` as command ``name`` with CKPT, the common and (optionally) estimator options.

    ``report_as``: the command named in the report and the default output folder (a subcommand's group: bench)."""

    def decorate(body: Callable[..., Outcome]) -> Callable[..., Outcome]:
        own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]
        taken = {_flag_of(p) for p in own}
        est_opts: list[EstimatorOption] = estimator_options(taken) if estimators else []
        params = [
            inspect.Parameter("typer_ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
            inspect.Parameter("ckpt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=CkptArg, default=None),
        ]
        params += [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in own]
        params += [
            inspect.Parameter(
                o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=o.annotation(), default=o.default
            )
            for o in est_opts
        ]
        params += [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ann, default=default)
            for n, (ann, default) in COMMON_OPTIONS.items()
        ]

        def wrapper(**kwargs: Any) -> None:
            common = CommonOptions(ckpt=kwargs.pop("ckpt"), **{n: kwargs.pop(n) for n in COMMON_OPTIONS})
            est_values = {o.name: kwargs.pop(o.name) for o in est_opts}
            root = kwargs.pop("typer_ctx").find_root()
            argv = root.obj if isinstance(root.obj, list) else None
            execute(report_as or name, common, body, kwargs, est_opts, est_values, argv=argv, writes_files=writes_files)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__doc__ = body.__doc__
        wrapper.__name__ = body.__name__
        app.command(name)(wrapper)
        return body

    return decorate


def _flag_of(p: inspect.Parameter) -> str:
    for meta in getattr(p.annotation, "__metadata__", ()):
        decls = getattr(meta, "param_decls", None) or ()
        for decl in decls:
            if decl.startswith("--"):
                return str(decl)
    return "--" + p.name.replace("_", "-")


def _is_main_rank() -> bool:
    """Whether this process prints: the only one, or rank 0 under torchrun (read before the group is joined)."""
    try:
        where = distributed.launched()
    except GanProbeError:
        return True
    return where is None or where[0] == 0


def execute(
    name: str,
    common: CommonOptions,
    body: Callable[..., Outcome],
    own: dict[str, Any],
    est_opts: list[EstimatorOption],
    est_values: dict[str, Any],
    *,
    argv: list[str] | None,
    writes_files: bool,
) -> None:
    """Run one command (see the module's docstring); Python warnings raised meanwhile become notes."""
    with terminal.collect_warnings() as warned:
        _execute(name, common, body, own, est_opts, est_values, argv=argv, writes_files=writes_files, warned=warned)


def _execute(
    name: str,
    common: CommonOptions,
    body: Callable[..., Outcome],
    own: dict[str, Any],
    est_opts: list[EstimatorOption],
    est_values: dict[str, Any],
    *,
    argv: list[str] | None,
    writes_files: bool,
    warned: list[warnings.WarningMessage],
) -> None:
    console = terminal.console(stderr=True, quiet=common.quiet or not _is_main_rank())
    try:
        out: OutputDir | None = None
        world = distributed.SINGLE
        try:
            common.check()
            check_seed(common.seed)
            if common.threads is not None:
                if common.threads < 1:
                    raise GanProbeError(f"--threads must be at least 1, got {common.threads}")
                most = 4 * (os.cpu_count() or 1)  # far beyond it, torch's kernels fail ('could not create a primitive')
                if common.threads > most:
                    raise GanProbeError(
                        f"--threads {common.threads} is more than 4 per CPU core here; use at most {most}"
                    )
                torch.set_num_threads(common.threads)
            estimators = build_estimator_params(est_opts, est_values) if est_opts else {}
            device = resolve_device(common.device)
            world, device = distributed.setup(device)
            dtype = resolve_dtype(common.dtype, device)
            torch.manual_seed(common.seed)
            t0 = time.perf_counter()
            gen = load_generator(common.ckpt, common.load_options(), device=device, dtype=dtype)
            load_s = time.perf_counter() - t0
            # from here on Ctrl-C is served between steps (interrupt.poll), so that ascend and pag keep their work
            with interrupt.deferred():
                if writes_files and world.is_main:
                    out = OutputDir(common.out if common.out is not None else Path("gan-probe-out") / name)
                with interrupt.on_exit(out.discard if out is not None else lambda: None):
                    enabled = (
                        sys.stderr is not None
                        and sys.stderr.isatty()
                        and not common.quiet
                        and not common.json
                        and world.is_main
                    )
                    with RichProgress(console, enabled) as progress:
                        t1 = time.perf_counter()
                        outcome = body(RunContext(common, gen, out, progress, console, estimators), **own)
                        run_s = time.perf_counter() - t1
                    files = [] if out is None else [str(out.root / f) for f in [*out.files, "report.json"]]
                    report = build_report(
                        name,
                        argv=argv,
                        checkpoint=outcome.checkpoint if outcome.checkpoint is not None else gen.describe(),
                        device=device,
                        dtype=dtype,
                        seed=common.seed,
                        batch_size=common.batch_size,
                        parameters=outcome.parameters,
                        timings={"load_s": load_s, "run_s": run_s},
                        results=outcome.results,
                        files=files,
                        gate=outcome.gate,
                        interrupted=outcome.interrupted,
                        world=world.describe(),
                    )
                    if out is not None:
                        out.write_json("report.json", report)
                        interrupt.poll()
                    distributed.exchange(None)  # every rank has finished: rank 0 may publish its files
                    if out is not None:
                        with interrupt.critical():
                            out.commit()
                    late_interrupt = interrupt.pending()
        except distributed.RankFailure as exc:  # another rank failed, or every rank did: already agreed on
            _fail(console, out, common, str(exc), code=exc.code, announce=False)
        except GanProbeError as exc:
            _fail(console, out, common, _with_flag(exc))
        except KeyboardInterrupt:
            _fail(console, out, common, interrupt.message(), code=interrupt.exit_code())
        except typer.BadParameter:
            if out is not None:
                out.discard()  # a usage error found by the command body: nothing written, not even the folder
            raise
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
            _fail(console, out, common, _describe_failure(exc, out, common))
        idle = distributed.idle_note()
        for note in [*gen.notes, *outcome.notes, *terminal.warning_notes(warned), *([idle] if idle else [])]:
            console.print(f"[yellow]note:[/] {escape(note)}")
        if not world.is_main:  # under torchrun only rank 0 prints; every rank exits with the same code
            if outcome.interrupted or late_interrupt:
                raise typer.Exit(interrupt.exit_code())
            if outcome.gate is not None and outcome.gate.failure() is not None:
                raise typer.Exit(3)
            return
        try:
            if common.json:
                terminal.write_stdout(dumps_strict(report) + "\n")
            elif outcome.table is not None:
                with terminal.stdout_errors():
                    terminal.console().print(outcome.table)
        except terminal.StdoutError as exc:  # the files are written; the result on stdout is lost
            _say_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        if not common.json and out is not None:
            count = len(report["files"])
            console.print(f"wrote {count} file{'' if count == 1 else 's'} to {escape(str(out.root))}", soft_wrap=True)
        if outcome.interrupted or late_interrupt:
            # printed even with --quiet, like an error: it is why the exit code is 130 (143, 129)
            done = "the report and files hold the work done so far" if outcome.interrupted else "its files are complete"
            when = "" if outcome.interrupted else " after the run had finished"
            interrupt.reported()
            terminal.console(stderr=True).print(f"[yellow]{interrupt.message()}{when}:[/] {done}")
            raise typer.Exit(interrupt.exit_code())
        if outcome.gate is not None and (why := outcome.gate.failure()) is not None:
            console.print(f"[red]gate failed:[/] {escape(why)}")
            raise typer.Exit(3)
    finally:
        distributed.shutdown()  # leave the torchrun group before the interpreter tears its threads down


def _describe_failure(exc: Exception, out: OutputDir | None, common: CommonOptions) -> str:
    """One line for an exception that is not a GanProbeError: out of memory (torch's text kept), a file that
    cannot be written, or (the last resort) an internal error."""
    first = first_line(exc)
    if is_out_of_memory(exc):
        gpu = "cuda" in first.lower() or "gpu" in first.lower()
        return f"out of memory: {first}; lower --batch-size" + (" or use --device cpu" if gpu else "")
    if isinstance(exc, OSError):
        return os_error_message(exc, out)
    return f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)"


def os_error_message(exc: OSError, out: OutputDir | None) -> str:
    """A failed read or write as one line naming the file; under the output folder, the flag too."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    filename = None if exc.filename is None else str(exc.filename)
    if out is not None and (filename is None or out.owns(filename)):
        target = out.root if filename is None else out.final_name(filename)
        return f"cannot write {target}: {reason}; free some space, fix its permissions or choose another --out"
    return f"{filename}: {reason}" if filename is not None else f"input/output error: {reason}"


def _with_flag(exc: GanProbeError) -> str:
    """The error's message with the flag of its parameter appended (unless the message names one already)."""
    message = str(exc)
    if exc.param is None:
        return message
    flag = flag_for(exc.param)
    return message if flag in message else f"{message} ({flag})"


def _fail(
    console: Console, out: OutputDir | None, common: CommonOptions, message: str, code: int = 1, announce: bool = True
) -> None:
    """Discard the staged files, print one line (rank 0 only under torchrun) and exit ``code``.

    Under torchrun a rank's own failure is first announced to the others (one exchange,
    docs/design.md §8.8), and every rank reports the failure they agreed on: the rank and its cause."""
    if out is not None:
        out.discard()
    if common.debug:
        terminal.console(stderr=True).print_exception()
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())  # one line, always
    if announce and distributed.current().distributed:
        try:
            failure = distributed.announce_failure(message, code)
            message, code = str(failure), failure.code
        except Exception:  # noqa: BLE001 - the group is gone (a rank died): report this rank's own cause
            message = f"rank {distributed.current().rank}: {message}"
    if _is_main_rank():
        _say_error(message)
    raise typer.Exit(code)


def _say_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, even with --quiet."""
    interrupt.reported()
    terminal.console(stderr=True).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


#: Rows a per-latent table shows on the terminal; the report holds every row.
TABLE_ROWS = 12


def shown_rows(rows: list, what: str = "latents") -> tuple[list, str]:
    """(the first :data:`TABLE_ROWS` of ``rows``, and a caption line saying so when some are left out)."""
    if len(rows) <= TABLE_ROWS:
        return rows, ""
    return rows[:TABLE_ROWS], f"first {TABLE_ROWS} of {len(rows)} {what} shown (all in report.json); "


def latent_name(gen: LoadedGenerator) -> str:
    """The latent ``gen`` takes, as the tables name it: z' under a prior network (G o h, z' ~ N(0, I)), w or w+ in a
    StyleGAN's mapped space (its prior is a :class:`~gan_probe.models.priors.MappedPrior`), else z."""
    if gen.prior_net is not None:
        return "z'"
    if isinstance(gen.prior, MappedPrior):
        return gen.prior.space
    return "z"


def fmt(value: float | None, spec: str = ".4g") -> str:
    """A number for a table cell; None or a non-finite value (undefined, null in JSON) shows as a dash."""
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


__all__ = [
    "TABLE_ROWS",
    "Outcome",
    "RunContext",
    "check_gate_bounds",
    "execute",
    "fmt",
    "latent_name",
    "probe_command",
    "shown_rows",
]
