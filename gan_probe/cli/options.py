"""The options every command shares, and the estimator options built from the estimator registry.

Declared once: :data:`COMMON_OPTIONS` (CKPT flags and the common ones),
:func:`estimator_options` (one option per distinct field of the registered
estimators' parameter dataclasses, with the dataclass default, so adding an
estimator or a parameter touches only its own module) and
:func:`reversal_options` (the generator reversal's, pag's ``--steps`` and
prior's ``--reversal-steps`` alike). A command whose own option takes an
estimator flag (``ascend --steps``) gets that estimator's flag prefixed with its
name (``--slq-steps``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from gan_probe.analyses.reversal import OPTIMIZERS, ReversalParams
from gan_probe.errors import GanProbeError
from gan_probe.limits import check_count
from gan_probe.models.checkpoint import LoadOptions
from gan_probe.spectral.estimators import REGISTRY

CKPT_PANEL = "Checkpoint"
COMMON_PANEL = "Common"

CkptArg = Annotated[
    Optional[Path],
    typer.Argument(
        help="Generator checkpoint (.safetensors, .pth/.pt/.ckpt/.bin/.model/.tar, TorchScript, .pt2, NVIDIA .pkl). "
        "Omitted: the bundled MNIST DCGAN (nz=32).",
        show_default=False,
    ),
]

# name -> (annotation, default); the order is the order in --help
COMMON_OPTIONS: dict[str, tuple[Any, Any]] = {
    "arch": (
        Annotated[
            Optional[str],
            typer.Option(help="Architecture of a foreign file: dcgan, mlp or stylegan2.", rich_help_panel=CKPT_PANEL),
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
                help="Custom architecture package.module:factory (runs that code; CKPT, if given, holds its weights; "
                "a factory taking ckpt_path and device gets them).",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "key": (
        Annotated[
            Optional[str],
            typer.Option(
                help="Entry of a training checkpoint holding the generator: nested entries, then a key prefix "
                "(e.g. g_ema, state_dict.generator, GAN.GE) [default: found by rule].",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "output_range": (
        Annotated[
            Optional[str],
            typer.Option(
                "--output-range",
                help="Pixel range of the output, LOW,HIGH (e.g. 0,1) or none \\[default: the file's or module's].",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "space": (
        Annotated[
            Optional[str],
            typer.Option(help="StyleGAN latent space: z, w or w+ \\[default: z].", rich_help_panel=CKPT_PANEL),
        ],
        None,
    ),
    "truncation": (
        Annotated[
            Optional[float],
            typer.Option(
                help="StyleGAN truncation psi (w pulled toward the mean w) \\[default: 1].", rich_help_panel=CKPT_PANEL
            ),
        ],
        None,
    ),
    "noise": (
        Annotated[
            Optional[str],
            typer.Option(
                help="StyleGAN noise: stored, zero or seed:N \\[default: stored].", rich_help_panel=CKPT_PANEL
            ),
        ],
        None,
    ),
    "truncation_cutoff": (
        Annotated[
            Optional[int],
            typer.Option(
                "--truncation-cutoff",
                help="StyleGAN truncation on the first N layers only (NVIDIA's truncation_cutoff) \\[default: all].",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "class_index": (
        Annotated[
            Optional[int],
            typer.Option(
                "--class",
                help="Class K of a conditional generator (NVIDIA's c_dim > 0): one-hot c, 0 <= K < c_dim.",
                rich_help_panel=CKPT_PANEL,
            ),
        ],
        None,
    ),
    "prior_net": (
        Annotated[
            Optional[Path],
            typer.Option(
                "--prior-net",
                help="A learned prior (gan-probe prior's prior.safetensors): analyse G o h, whose latent is "
                "z' ~ N(0, I) mapped to z by the prior network h (--latents files then hold z').",
                rich_help_panel=CKPT_PANEL,
                show_default=False,
            ),
        ],
        None,
    ),
    "device": (
        Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=COMMON_PANEL)],
        "auto",
    ),
    "dtype": (
        Annotated[
            str,
            typer.Option(
                help="auto (float32, and float64 for latents whose float32 J is at rounding level), float32 or "
                "float64 for the generator.",
                rich_help_panel=COMMON_PANEL,
            ),
        ],
        "auto",
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
                help="CPU threads for torch \\[default: torch's]; 1 is often faster on a small busy CPU.",
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
            typer.Option(help="Output folder \\[default: gan-probe-out/COMMAND].", rich_help_panel=COMMON_PANEL),
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
    space: str | None
    truncation: float | None
    noise: str | None
    truncation_cutoff: int | None
    class_index: int | None
    key: str | None
    output_range: str | None
    prior_net: Path | None
    device: str
    dtype: str
    seed: int
    threads: int | None
    batch_size: int
    out: Path | None
    json: bool
    quiet: bool
    debug: bool

    def check(self) -> None:
        """Refuse common options that no run can use, before any work: a batch size outside
        1..MAX_COUNT, and an ``--out`` that is the working folder or holds it (``--out ""`` reads as the
        working folder): a run's outputs replace what is in ``--out``, not the folder it is started from."""
        check_count(self.batch_size, "--batch-size", param=None)
        if self.out is not None:
            out, cwd = Path(os.path.abspath(self.out)), Path.cwd()
            if out == cwd or out in cwd.parents:
                which = "is the working folder (as an empty --out is)" if out == cwd else "holds the working folder"
                raise GanProbeError(
                    f"--out {str(self.out)!r} {which}; give a folder of its own for the outputs, e.g. --out results"
                )

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            self.arch,
            self.nz,
            self.prior,
            self.sigma,
            self.low,
            self.high,
            self.generator,
            space=self.space,
            truncation=self.truncation,
            noise=self.noise,
            truncation_cutoff=self.truncation_cutoff,
            class_index=self.class_index,
            key=self.key,
            output_range=self.output_range,
            seed=self.seed,
            dtype_auto=self.dtype.strip().lower() == "auto",
            prior_net=str(self.prior_net) if self.prior_net is not None else None,
        )


EST_PANEL = f"Estimators (--method {'|'.join(REGISTRY)})"

#: Library parameter names whose flag is not simply --NAME (with _ and . as -).
FLAG_ALIASES = {
    "num": "--n",
    "taus": "--tau",
    "num_directions": "--k",
    "num_prior_samples": "--prior-samples",
    "num_top": "--top",
    "class_index": "--class",
}


def flag_for(param: str) -> str:
    """The command-line flag of a library parameter (``batch_size`` -> ``--batch-size``, ``grid.size`` -> ...)."""
    return FLAG_ALIASES.get(param, "--" + param.replace("_", "-").replace(".", "-"))


@dataclass(frozen=True)
class EstimatorOption:
    """One command-line option shared by the estimator fields ``uses`` ((method, field) pairs)."""

    name: str  # the keyword in the command's signature
    flag: str
    kind: type
    default: Any
    help: str
    uses: tuple[tuple[str, str], ...]

    def annotation(self) -> Any:
        return Annotated[self.kind, typer.Option(self.flag, help=self.help, rich_help_panel=EST_PANEL)]


def _field_type(cls: type, f: dataclasses.Field[Any]) -> type:
    if f.metadata.get("cli_type") is not None:
        return f.metadata["cli_type"]
    hint = typing.get_type_hints(cls)[f.name]
    if hint not in (int, float, str, bool):
        raise TypeError(f"{cls.__name__}.{f.name}: give cli_type for the command line ({hint})")
    return hint


def estimator_options(taken: Iterable[str]) -> list[EstimatorOption]:
    """One option per distinct flag of the registered estimators' fields; ``taken`` flags are prefixed.

    Fields that share a flag (chebyshev and taylor's ``--m``) must share its
    type and default: a disagreement is a bug in the estimators, raised here.
    """
    taken = set(taken)
    merged: dict[str, dict[str, Any]] = {}
    for method, est in REGISTRY.items():
        for f in dataclasses.fields(est.params):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            if flag in taken:
                flag = f"--{method}-{flag[2:]}"
            kind = _field_type(est.params, f)
            default = kind(f.default) if kind is str else f.default
            entry = merged.setdefault(
                flag, {"kind": kind, "default": default, "help": f.metadata.get("help", ""), "uses": []}
            )
            if (entry["kind"], entry["default"]) != (kind, default):
                raise TypeError(f"estimators disagree on {flag}: {entry['kind'], entry['default']} vs {kind, default}")
            entry["uses"].append((method, f.name))
    return [
        EstimatorOption(flag[2:].replace("-", "_"), flag, e["kind"], e["default"], e["help"], tuple(e["uses"]))
        for flag, e in merged.items()
    ]


def build_estimator_params(options: list[EstimatorOption], values: dict[str, Any]) -> dict[str, Any]:
    """{method: its parameter dataclass} from the option values; a bad value names its flag."""
    kwargs: dict[str, dict[str, Any]] = {method: {} for method in REGISTRY}
    flags = {}
    for opt in options:
        for method, name in opt.uses:
            kwargs[method][name] = values[opt.name]
            flags[f"{method}.{name}"] = opt.flag
    out = {}
    for method, est in REGISTRY.items():
        try:
            out[method] = est.params(**kwargs[method])
        except GanProbeError as exc:
            flag = flags.get(exc.param or "", "")
            # the flag is named here (--m, --probes): no param left for the runner to turn into a flag again
            raise GanProbeError(f"{exc} ({flag})" if flag else str(exc), param=None if flag else exc.param) from None
    return out


#: Help of each reversal option, by its ReversalParams field (in --help order): (as pag's own --FIELD, as another
#: command's --PREFIX-FIELD, which names pag's flag). Batch size and seed are the common options'.
REVERSAL_HELP: dict[str, tuple[str, str]] = {
    "steps": ("Gradient steps of the reversal per image.", "Gradient steps of the reversal (pag --steps)."),
    "lr": ("Learning rate of the reversal (paper: 0.05).", "Learning rate of the reversal (pag --lr)."),
    "optimizer": (
        f"{'|'.join(OPTIMIZERS)} (Algorithm 1 is plain SGD).",
        f"{'|'.join(OPTIMIZERS)}: the reversal's optimizer (pag --optimizer).",
    ),
    "init_std": (
        "Std. dev. of the initial latents (paper: 1e-4).",
        "Std. dev. of the reversal's initial latents (pag --init-std).",
    ),
}


def _prefixed(prefix: str, field: str) -> str:
    return f"{prefix}_{field}" if prefix else field


def reversal_options(prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """name -> (annotation, default) of the generator reversal's options (Kilcher et al. 2017, Algorithm 1), typed
    and defaulted as :class:`~gan_probe.analyses.reversal.ReversalParams`' fields: pag's own ``--steps``, ``--lr``,
    ``--optimizer``, ``--init-std`` (``prefix`` ""), or another command's ``--PREFIX-steps`` ... (prior's
    ``--reversal-steps``, ``prefix`` "reversal"), whose help names pag's flag."""
    hints = typing.get_type_hints(ReversalParams)
    defaults = ReversalParams()
    out: dict[str, tuple[Any, Any]] = {}
    for field, (own_help, prefixed_help) in REVERSAL_HELP.items():
        name = _prefixed(prefix, field)
        option = typer.Option(flag_for(name), help=prefixed_help if prefix else own_help)
        out[name] = (Annotated[hints[field], option], getattr(defaults, field))
    return out


def reversal_params(values: Mapping[str, Any], *, prefix: str = "", batch_size: int, seed: int) -> ReversalParams:
    """The reversal's parameters from the values of :func:`reversal_options` (``prefix``), by their names."""
    fields = {field: values[_prefixed(prefix, field)] for field in REVERSAL_HELP}
    return ReversalParams(**fields, batch_size=batch_size, seed=seed)


Body = TypeVar("Body", bound=Callable[..., Any])


def with_options(options: Mapping[str, tuple[Any, Any]], *, after: str) -> Callable[[Body], Body]:
    """Declare ``options`` (name -> (annotation, default)) as parameters of a command body that takes them as
    ``**kwargs``, placed after its parameter ``after`` (their place in --help); apply below ``probe_command``."""

    def decorate(body: Body) -> Body:
        signature = inspect.signature(body, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        if len(params) == len(signature.parameters):
            raise TypeError(f"{body.__name__} must take **kwargs to receive {', '.join(options)}")
        at = [p.name for p in params].index(after) + 1
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        added = [inspect.Parameter(n, kind, annotation=ann, default=default) for n, (ann, default) in options.items()]
        body.__signature__ = signature.replace(parameters=[*params[:at], *added, *params[at:]])  # type: ignore[attr-defined]
        return body

    return decorate


__all__ = [
    "COMMON_OPTIONS",
    "REVERSAL_HELP",
    "CkptArg",
    "CommonOptions",
    "EstimatorOption",
    "build_estimator_params",
    "estimator_options",
    "flag_for",
    "reversal_options",
    "reversal_params",
    "with_options",
]
