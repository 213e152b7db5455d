"""The ``gan-probe`` entry point (also ``python -m gan_probe``).

Signal handling is installed first, before the command line (and torch with
it) is imported, so that SIGINT, SIGTERM or SIGHUP at any moment exits
128 + N with one line (:mod:`gan_probe.interrupt`). Then the standard streams
are made safe (docs/design.md §8.2): a closed descriptor 0, 1 or 2 is held
open on /dev/null, so that no file this run opens takes its number (a stray
print would then write into an output file), and stderr, which only ever
carries diagnostics, can no longer fail a write (a full or closed stderr
leaves the exit code to the run itself).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> None:
    """Install the signal handlers, guard the standard streams, then import and run the command line."""
    from gan_probe import interrupt

    interrupt.install_exit_handler()
    _hold_closed_descriptors()
    if sys.stderr is None:  # closed: what would go there goes nowhere (libraries write to it without checking)
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if not isinstance(sys.stderr, _Unfailing):
        sys.stderr = _Unfailing(sys.stderr)
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


def _hold_closed_descriptors() -> None:
    """Open /dev/null on each of 0, 1, 2 that is closed (``>&-``); ``sys.stdout`` stays None for it, so
    that the output it should have carried is reported as lost (:mod:`gan_probe.cli.terminal`); ``sys.stderr``
    is then pointed there too."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                held = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if held != fd:  # a lower one was free after all: put it back
                os.close(held)


class _Unfailing:
    """stderr whose writes and flushes never raise: a diagnostic that cannot be shown is dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _hard_exit(code: object) -> None:
    """End a torchrun rank without the interpreter's teardown (:func:`gan_probe.distributed.joined`): its
    files are committed and closed by now; only stdout and stderr need flushing."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
