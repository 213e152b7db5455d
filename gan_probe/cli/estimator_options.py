"""The estimator options (``--m --p --t --g --eps --steps --probes``), declared once for every command that
takes them (loglik, ascend, bench)."""

from __future__ import annotations

from typing import Annotated

import typer

from gan_probe.errors import GanProbeError
from gan_probe.spectral.estimators import EstimatorParams

EST_PANEL = "Estimators (--method chebyshev|taylor|slq)"

MOpt = Annotated[int, typer.Option("--m", help="Chebyshev/Taylor degree.", rich_help_panel=EST_PANEL)]
POpt = Annotated[int, typer.Option("--p", help="Chebyshev/Taylor probe vectors.", rich_help_panel=EST_PANEL)]
TOpt = Annotated[
    int, typer.Option("--t", help="Power iterations (Lanczos steps with --eps auto).", rich_help_panel=EST_PANEL)
]
GOpt = Annotated[
    float, typer.Option("--g", help="Multiplier (>= 1) on the estimated lambda_max.", rich_help_panel=EST_PANEL)
]
EpsOpt = Annotated[
    str, typer.Option("--eps", help="Chebyshev lower spectral bound, or auto.", rich_help_panel=EST_PANEL)
]
SlqStepsOpt = Annotated[
    int, typer.Option("--steps", help="SLQ Golub-Kahan steps per probe.", rich_help_panel=EST_PANEL)
]
#: for commands whose own --steps means something else (ascend)
SlqStepsRenamedOpt = Annotated[
    int, typer.Option("--slq-steps", help="SLQ Golub-Kahan steps per probe.", rich_help_panel=EST_PANEL)
]
ProbesOpt = Annotated[int, typer.Option("--probes", help="SLQ probe vectors.", rich_help_panel=EST_PANEL)]


def parse_eps(text: str) -> float | str:
    """--eps: a positive number or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise GanProbeError(f"--eps must be a positive number or auto, got {text!r}") from None


def estimator_params(m: int, p: int, t: int, g: float, eps: str, steps: int, probes: int) -> EstimatorParams:
    return EstimatorParams(m=m, p=p, t=t, g=g, eps=parse_eps(eps), steps=steps, probes=probes).validate()


def estimator_parameters_json(est: EstimatorParams) -> dict:
    return {"m": est.m, "p": est.p, "t": est.t, "g": est.g, "eps": est.eps, "steps": est.steps, "probes": est.probes}
