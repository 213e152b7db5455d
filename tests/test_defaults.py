"""Every default is stated once, in the parameter dataclasses: the command line and the Python API read it there.

For each command, the default of every option that sets a parameter is compared with the dataclass field's, and
so is the default of every keyword of the API function; a default changed in one place alone fails here. The
loading options (:class:`~gan_probe.models.loaded.LoadOptions`) are checked the same way: each field is a keyword
of ``load_generator`` and a checkpoint option of the command line, with the field's default.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import typer
from typer.main import get_command

from gan_probe import api
from gan_probe.analyses.ascend import AscendParams
from gan_probe.analyses.bench import SPECTRUM_DEFAULTS, BenchParams, LinearModelParams, SyntheticModelParams
from gan_probe.analyses.divergence import DivergenceParams
from gan_probe.analyses.divergence_bench import DivergenceBenchParams
from gan_probe.analyses.eigvecs import EigvecsParams
from gan_probe.analyses.loglik import GridParams, LoglikParams
from gan_probe.analyses.pag import PagParams
from gan_probe.analyses.prior import PganParams, PriorParams
from gan_probe.analyses.reversal import ReversalParams
from gan_probe.analyses.throughput import ThroughputParams
from gan_probe.analyses.veff import VeffParams
from gan_probe.cli import app
from gan_probe.cli.bench import DEFAULT_MODE, parse_conds, parse_methods, parse_sizes
from gan_probe.cli.options import COMMON_OPTIONS, REVERSAL_HELP
from gan_probe.cli.veff import parse_taus
from gan_probe.models.loaded import LoadOptions

Same = Callable[[Any], Any]
SAME: Same = lambda v: v  # noqa: E731


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (a default factory's value for a factory)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING, f"{cls.__name__}.{name} has no default"
    return field.default_factory()


def _taus(value: Any) -> tuple[float, ...]:
    return (float(value),) if isinstance(value, (int, float)) else tuple(float(t) for t in value)


#: command path -> {option or keyword: (dataclass, field, how the CLI's text becomes the field's value)}
CLI: dict[tuple[str, ...], dict[str, tuple[type, str, Same]]] = {
    ("loglik",): {
        "n": (LoglikParams, "num", SAME),
        "method": (LoglikParams, "method", SAME),
        "chunk_size": (LoglikParams, "chunk_size", SAME),
        "check": (LoglikParams, "check", SAME),
        "geometry": (LoglikParams, "geometry", SAME),
        "grid": (LoglikParams, "grid", lambda on: GridParams() if on else None),
        "grid_extent": (GridParams, "extent", SAME),
        "grid_size": (GridParams, "size", SAME),
        "grid_center": (GridParams, "center", SAME),
        "batch_size": (LoglikParams, "batch_size", SAME),
        "seed": (LoglikParams, "seed", SAME),
    },
    ("ascend",): {
        **{name: (AscendParams, name, SAME) for name in ("method", "steps", "lr", "optimizer", "frames", "geometry")},
        "n": (AscendParams, "num", SAME),
        "batch_size": (AscendParams, "batch_size", SAME),
        "seed": (AscendParams, "seed", SAME),
    },
    ("eigvecs",): {
        **{name: (EigvecsParams, name, SAME) for name in ("top", "step", "traversal_steps", "project", "chunk_size")},
        "n": (EigvecsParams, "num", SAME),
        "batch_size": (EigvecsParams, "batch_size", SAME),
        "seed": (EigvecsParams, "seed", SAME),
    },
    ("veff",): {
        **{name: (VeffParams, name, SAME) for name in ("step", "directions", "project", "chunk_size")},
        "n": (VeffParams, "num", SAME),
        "k": (VeffParams, "num_directions", SAME),
        "tau": (VeffParams, "taus", lambda v: parse_taus(v)),
        "batch_size": (VeffParams, "batch_size", SAME),
        "seed": (VeffParams, "seed", SAME),
    },
    ("pag",): {
        "limit": (PagParams, "limit", SAME),
        "resize": (PagParams, "resize", SAME),
        "prior_samples": (PagParams, "num_prior_samples", SAME),
        "top": (PagParams, "num_top", SAME),
        **{name: (ReversalParams, name, SAME) for name in ("steps", "lr", "optimizer", "init_std", "batch_size")},
        "seed": (PagParams, "seed", SAME),
    },
    ("prior",): {
        **{f"reversal_{name}": (ReversalParams, name, SAME) for name in ("steps", "lr", "optimizer", "init_std")},
        "batch_size": (ReversalParams, "batch_size", SAME),
        **{name: (PriorParams, name, SAME) for name in ("limit", "resize", "heldout", "seed")},
        "samples": (PriorParams, "num_samples", SAME),
        "permutations": (PriorParams, "num_permutations", SAME),
        "prior_samples": (PriorParams, "num_prior_samples", SAME),
        "top": (PriorParams, "num_top", SAME),
        **{name: (PganParams, name, SAME) for name in ("steps", "dim", "lr", "r1")},
        "prior_batch": (PganParams, "batch_size", SAME),
        "widths": (PganParams, "widths", lambda text: tuple(int(w) for w in text.split(","))),
        "critic_widths": (PganParams, "critic_widths", lambda text: tuple(int(w) for w in text.split(","))),
    },
    ("divergence",): {
        **{name: (DivergenceParams, name, SAME) for name in ("limit", "resize", "steps", "importance", "refine")},
        **{name: (DivergenceParams, name, SAME) for name in ("ais", "heldout", "batch_size", "seed")},
        "model_samples": (DivergenceParams, "num_model_samples", SAME),
        "spread": (DivergenceParams, "sigmas", lambda text: tuple(float(x) for x in text.split(","))),
        "f": (DivergenceParams, "divergences", lambda text: tuple(text.split(","))),
    },
    ("bench",): {
        **{name: (BenchParams, name, SAME) for name in ("repeats", "naive_latents", "gradient", "warmup", "limit")},
        "n": (BenchParams, "num", SAME),
        "chunk_size": (BenchParams, "chunk_size", SAME),
        "methods": (BenchParams, "methods", parse_methods),
        "splits": (BenchParams, "splits", lambda text: () if not text else text),
        "synthetic": (SyntheticModelParams, "name", SAME),
        "synthetic_nz": (SyntheticModelParams, "nz", SAME),
        "synthetic_space": (SyntheticModelParams, "space", SAME),
        "synthetic_channels": (SyntheticModelParams, "channels", SAME),
        "synthetic_style_dim": (SyntheticModelParams, "style_dim", SAME),
    },
    ("bench", "throughput"): {
        "n": (ThroughputParams, "num", SAME),
        "batch_sizes": (ThroughputParams, "batch_sizes", lambda text: parse_sizes(text, "--batch-sizes")),
        "chunk_sizes": (ThroughputParams, "chunk_sizes", lambda text: parse_sizes(text, "--chunk-sizes", auto=True)),
        "synthetic": (SyntheticModelParams, "name", SAME),
        "synthetic_space": (SyntheticModelParams, "space", SAME),
    },
    ("bench", "spectrum"): {
        "synthetic_operator": (LinearModelParams, "operator", SAME),
    },
    ("bench", "divergence"): {
        "spread": (DivergenceParams, "sigmas", lambda v: (v,)),
        "steps": (DivergenceParams, "steps", SAME),
        "importance": (DivergenceParams, "importance", SAME),
        "model_samples": (DivergenceParams, "num_model_samples", SAME),
        "images": (DivergenceBenchParams, "num_images", SAME),
        "chain_steps": (DivergenceBenchParams, "chain_steps", lambda text: parse_sizes(text, "--chain-steps")),
        "reference_steps": (DivergenceBenchParams, "reference_steps", SAME),
        "tolerance": (DivergenceBenchParams, "tolerance", SAME),
    },
}

#: bench spectrum's own defaults are an instance (SPECTRUM_DEFAULTS), not the field defaults of BenchParams
SPECTRUM: dict[str, tuple[str, Same]] = {
    "n": ("num", SAME),
    "methods": ("methods", parse_methods),
    "conds": ("conds", parse_conds),
    "exact_max_nz": ("exact_max_nz", SAME),
}

#: API function -> {keyword: (dataclass, field, how the keyword becomes the field's value)}
API: dict[str, dict[str, tuple[type, str, Same]]] = {
    "loglik": {
        **{name: (LoglikParams, name, SAME) for name in ("method", "check", "grid", "geometry", "batch_size")},
        **{name: (LoglikParams, name, SAME) for name in ("chunk_size", "seed")},
        "n": (LoglikParams, "num", SAME),
    },
    "ascend": {
        **{name: (AscendParams, name, SAME) for name in ("steps", "lr", "optimizer", "method", "frames", "geometry")},
        **{name: (AscendParams, name, SAME) for name in ("seed", "batch_size")},
        "n": (AscendParams, "num", SAME),
    },
    "eigvecs": {
        **{name: (EigvecsParams, name, SAME) for name in ("top", "step", "traversal_steps", "project", "batch_size")},
        **{name: (EigvecsParams, name, SAME) for name in ("chunk_size", "seed")},
        "n": (EigvecsParams, "num", SAME),
    },
    "veff": {
        **{name: (VeffParams, name, SAME) for name in ("step", "directions", "project", "batch_size", "chunk_size")},
        "seed": (VeffParams, "seed", SAME),
        "n": (VeffParams, "num", SAME),
        "tau": (VeffParams, "taus", _taus),
        "k": (VeffParams, "num_directions", SAME),
    },
    "pag": {
        "limit": (PagParams, "limit", SAME),
        "resize": (PagParams, "resize", SAME),
        **{name: (ReversalParams, name, SAME) for name in ("steps", "lr", "optimizer", "init_std", "batch_size")},
        "prior_samples": (PagParams, "num_prior_samples", SAME),
        "top": (PagParams, "num_top", SAME),
        "seed": (PagParams, "seed", SAME),
    },
    "prior": {
        **{f"reversal_{name}": (ReversalParams, name, SAME) for name in ("steps", "lr", "optimizer", "init_std")},
        "batch_size": (ReversalParams, "batch_size", SAME),
        **{name: (PriorParams, name, SAME) for name in ("limit", "resize", "heldout", "seed")},
        "permutations": (PriorParams, "num_permutations", SAME),
        "prior_samples": (PriorParams, "num_prior_samples", SAME),
        "top": (PriorParams, "num_top", SAME),
        **{name: (PganParams, name, SAME) for name in ("steps", "lr", "dim")},
        **{name: (PganParams, name, tuple) for name in ("widths", "critic_widths")},
        "prior_batch": (PganParams, "batch_size", SAME),
        "samples": (PriorParams, "num_samples", SAME),
    },
    "divergence": {
        **{name: (DivergenceParams, name, SAME) for name in ("limit", "resize", "steps", "importance", "refine")},
        **{name: (DivergenceParams, name, SAME) for name in ("ais", "heldout", "batch_size", "seed")},
        "model_samples": (DivergenceParams, "num_model_samples", SAME),
        "spread": (DivergenceParams, "sigmas", SAME),
        "f": (DivergenceParams, "divergences", SAME),
    },
}
#: API keywords that are inputs, not parameters with a default of their own
API_INPUTS = {"gen", "z", "estimator", "data", "codes"}


def cli_defaults(path: tuple[str, ...], root: typer.Typer = app) -> dict[str, Any]:
    """{parameter name: default} of the command at ``path`` (a group: its default command, bench's)."""
    command: Any = get_command(root)
    for name in path:
        command = command.commands[name]
    if hasattr(command, "commands"):
        command = command.commands[DEFAULT_MODE]
    return {p.name: p.default for p in command.params}


def disagreements(defaults: dict[str, Any], table: dict[str, tuple[type, str, Same]]) -> list[str]:
    """The entries of ``table`` whose default in ``defaults`` does not become the dataclass field's default."""
    out = []
    for name, (cls, field, convert) in table.items():
        got, want = convert(defaults[name]), default_of(cls, field)
        if got != want:
            out.append(f"{name}: {got!r} != {cls.__name__}.{field} = {want!r}")
    return out


@pytest.mark.parametrize("path", list(CLI), ids=" ".join)
def test_cli_defaults_are_the_dataclass_defaults(path):
    assert disagreements(cli_defaults(path), CLI[path]) == []


def test_pag_and_prior_share_the_reversal_options():
    """pag's --steps ... and prior's --reversal-steps ... are one declaration: the same default (and its type), prior's
    help naming pag's flag; every ReversalParams field is one of them or a common option (batch size, seed)."""
    options = {
        command: {p.name: p for p in get_command(app).commands[command].params}  # type: ignore[attr-defined]
        for command in ("pag", "prior")
    }
    for field in REVERSAL_HELP:
        own, prefixed = options["pag"][field], options["prior"][f"reversal_{field}"]
        flag = "--" + field.replace("_", "-")
        assert own.opts == [flag] and prefixed.opts == [f"--reversal-{flag[2:]}"]
        assert own.default == prefixed.default == default_of(ReversalParams, field)
        assert type(own.default) is type(prefixed.default) is type(default_of(ReversalParams, field))
        assert f"(pag {flag})" in prefixed.help and own.help == REVERSAL_HELP[field][0]
    assert {f.name for f in dataclasses.fields(ReversalParams)} - set(REVERSAL_HELP) == {"batch_size", "seed"}


def test_bench_spectrum_defaults_are_its_params_instance():
    defaults = cli_defaults(("bench", "spectrum"))
    for name, (field, convert) in SPECTRUM.items():
        assert convert(defaults[name]) == getattr(SPECTRUM_DEFAULTS, field), name
    assert SPECTRUM_DEFAULTS.num == 20 and SPECTRUM_DEFAULTS.naive_latents == 0


@pytest.mark.parametrize("name", list(API))
def test_api_defaults_are_the_dataclass_defaults(name):
    signature = inspect.signature(getattr(api, name))
    keywords = {p.name: p.default for p in signature.parameters.values()}
    assert set(keywords) - API_INPUTS == set(API[name]), "every API keyword is in the table"
    assert disagreements(keywords, API[name]) == []


def test_a_default_changed_in_one_place_is_caught():
    """The check fails on a command whose option states its own default (5) beside the dataclass's (4)."""
    probe = typer.Typer()

    @probe.command()
    def ascend(n: int = 5, steps: int = default_of(AscendParams, "steps")) -> None:
        """Stand-in."""

    @probe.command()
    def other() -> None:
        """A second command, so that the app is a group."""

    table = {"n": (AscendParams, "num", SAME), "steps": (AscendParams, "steps", SAME)}
    assert disagreements(cli_defaults(("ascend",), probe), table) == ["n: 5 != AscendParams.num = 4"]


#: LoadOptions fields set through another keyword: dtype_auto is dtype="auto" (--dtype auto)
LOAD_DERIVED = {"dtype_auto": "dtype"}


def missing_load_options(defaults: dict[str, Any]) -> list[str]:
    """The LoadOptions fields that ``defaults`` (keyword -> default) lacks or gives another default."""
    out = []
    for field in dataclasses.fields(LoadOptions):
        name = LOAD_DERIVED.get(field.name, field.name)
        if name not in defaults:
            out.append(f"{name}: missing")
        elif field.name not in LOAD_DERIVED and defaults[name] != field.default:
            out.append(f"{name}: {defaults[name]!r} != LoadOptions.{field.name} = {field.default!r}")
    return out


def test_load_generator_takes_every_load_option_with_its_default():
    keywords = {p.name: p.default for p in inspect.signature(api.load_generator).parameters.values()}
    assert missing_load_options(keywords) == []
    assert set(keywords) - {f.name for f in dataclasses.fields(LoadOptions)} == {"path", "device", "dtype"}


def test_the_command_line_takes_every_load_option_with_its_default():
    cli = {name: default for name, (_, default) in COMMON_OPTIONS.items()}
    assert missing_load_options(cli) == []
    assert cli["dtype"] == inspect.signature(api.load_generator).parameters["dtype"].default == "auto"


def test_a_load_option_missing_from_the_api_is_caught():
    """The check fails on keywords without class_index, and on keywords whose seed defaults to 1."""
    keywords = {f.name: f.default for f in dataclasses.fields(LoadOptions)} | {"dtype": "auto"}
    del keywords["class_index"], keywords["dtype_auto"]
    assert missing_load_options(keywords) == ["class_index: missing"]
    assert missing_load_options({**keywords, "class_index": None, "seed": 1}) == ["seed: 1 != LoadOptions.seed = 0"]
