"""The ``gan-probe`` entry point (also ``python -m gan_probe``).

Ctrl-C handling is installed first, before the command line (and torch with
it) is imported, so that an interrupt at any moment exits 130 with one line
(:mod:`gan_probe.interrupt`).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Install the SIGINT handler, then import and run the command line."""
    from gan_probe import interrupt

    interrupt.install_exit_handler()
    from gan_probe.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
