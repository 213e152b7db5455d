"""Command line: Typer and Rich live here only; every command is a thin layer over gan_probe.analyses."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gan_probe.cli.app import app

# isort: off
# Importing a command module registers it; this order is the order of `gan-probe --help`.
from gan_probe.cli import loglik, ascend, eigvecs, veff, pag, prior, info, bench  # noqa: E402,F401
# isort: on


def main(argv: Sequence[str] | None = None) -> None:
    """The ``gan-probe`` entry point; ``argv`` (default: sys.argv[1:]) is recorded in every report."""
    args = list(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="gan-probe", obj=args)


__all__ = ["app", "main"]
