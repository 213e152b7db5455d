"""Command line: Typer and Rich live here only; every subcommand is a thin layer over gan_probe.analyses."""

from __future__ import annotations

import sys

from gan_probe.cli import common
from gan_probe.cli.app import app

# isort: off
# Importing a command module registers it; this order is the order of `gan-probe --help`.
from gan_probe.cli import loglik, ascend, eigvecs, veff, pag, info, bench  # noqa: E402,F401
# isort: on


def main() -> None:
    common.ARGV = sys.argv[1:]
    app(prog_name="gan-probe")


__all__ = ["app", "main"]
