"""Command line: Typer and Rich live here only; every subcommand is a thin layer over gan_probe.analyses."""

from __future__ import annotations

import sys

from gan_probe.cli import common
from gan_probe.cli.app import app
from gan_probe.cli import ascend, bench, eigvecs, info, loglik, pag, veff  # noqa: F401 - registers the subcommands


def main() -> None:
    common.ARGV = sys.argv[1:]
    app(prog_name="gan-probe")


__all__ = ["app", "main"]
