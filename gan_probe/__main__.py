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
    from gan_probe import distributed
    from gan_probe.cli import main as cli_main

    try:
        cli_main(argv)
    except SystemExit as exc:
        if distributed.joined():
            _hard_exit(exc.code)
        raise
    if distributed.joined():
        _hard_exit(0)


def _hard_exit(code: object) -> None:
    """End a torchrun rank without the interpreter's teardown (:func:`gan_probe.distributed.joined`): its
    files are committed and closed by now; only stdout and stderr need flushing."""
    import os
    import sys

    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
