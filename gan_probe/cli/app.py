"""The Typer application object (commands register themselves on it)."""

from __future__ import annotations

from typing import Annotated

import typer

from gan_probe import __version__
from gan_probe.cli import terminal

app = typer.Typer(
    name="gan-probe",
    help="How a trained GAN generator uses its latent space: implicit likelihood, its spectrum, v_eff and PAG.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        try:
            terminal.write_stdout(f"gan-probe {__version__}\n")
        except terminal.StdoutError as exc:
            terminal.console(stderr=True).print(f"[red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """gan-probe: the implicit spectral density of a GAN generator, and what it says."""
