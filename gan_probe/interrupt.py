"""Ctrl-C on the command line: exit 130 with one line at any moment, never a traceback.

Imports nothing but the standard library, so that the entry point
(:func:`gan_probe.__main__.main`) can install :func:`install_exit_handler`
before torch is imported. A KeyboardInterrupt raised in the middle of an
import (torch, functorch's lazy modules, matplotlib) leaves half-initialised
modules behind, and what runs next can fail in any way (a RecursionError,
"ImportError: initialization failed", SIGABRT); so SIGINT never raises at an
arbitrary point here:

- Before a command runs (imports, parsing, loading the checkpoint), nothing has
  been written, so SIGINT prints ``error: interrupted`` and leaves at once
  (``os._exit(130)``).
- While a command runs (:func:`deferred`), the first SIGINT only sets a flag.
  :func:`poll`, called between steps and batches (every progress advance),
  raises KeyboardInterrupt there, at a safe point: ``ascend`` and ``pag`` keep
  the work done, the others discard their staged files. A second SIGINT before
  that point leaves at once, after the cleanups registered with
  :func:`on_exit` (the staging folder).
- :func:`critical` (the final renames of the output files) defers every SIGINT
  to its end, so the files are never half replaced.

Outside the command line (the Python API) none of this is installed and
:func:`poll` does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 130
_MESSAGE = b"error: interrupted\n"


class _State:
    pending = False
    critical = 0
    cleanups: list[Callable[[], object]] = []


def exit_now() -> None:
    """Print one line, run the registered cleanups, leave with 130 (no unwinding, no traceback)."""
    for cleanup in list(_State.cleanups):
        try:
            cleanup()
        except BaseException:  # noqa: BLE001 - leaving anyway
            pass
    try:
        os.write(2, _MESSAGE)
    except OSError:
        pass
    os._exit(EXIT_CODE)


def run_cleanups() -> None:
    """Run the cleanups registered with :func:`on_exit` (for a caller that leaves the process by itself)."""
    for cleanup in list(_State.cleanups):
        try:
            cleanup()
        except BaseException:  # noqa: BLE001 - leaving anyway
            pass


def _exit_handler(signum: int, frame: FrameType | None) -> None:
    exit_now()


def _deferring_handler(signum: int, frame: FrameType | None) -> None:
    if _State.pending and not _State.critical:
        exit_now()  # a second Ctrl-C before the first was served
    _State.pending = True


def install_exit_handler() -> None:
    """SIGINT leaves at once with 130 (the entry point, before any heavy import)."""
    signal.signal(signal.SIGINT, _exit_handler)


def poll() -> None:
    """Raise KeyboardInterrupt here if SIGINT arrived while :func:`deferred` (a no-op otherwise)."""
    if _State.pending and not _State.critical:
        _State.pending = False
        raise KeyboardInterrupt


def pending() -> bool:
    """Whether a SIGINT arrived that no :func:`poll` has served yet."""
    return _State.pending


@contextmanager
def deferred() -> Iterator[None]:
    """While inside, SIGINT is served by :func:`poll` (a second one leaves at once); restored on exit.

    Only in the main thread (signal handlers cannot be set elsewhere); elsewhere it changes nothing.
    """
    try:
        previous = signal.signal(signal.SIGINT, _deferring_handler)
    except ValueError:  # not the main thread
        yield
        return
    _State.pending = False
    try:
        yield
    finally:
        _State.pending = False
        # None: the previous handler was not set from Python; the default action is the best restoration
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def critical() -> Iterator[None]:
    """SIGINT waits until the block is done (it is then served by the next :func:`poll`)."""
    _State.critical += 1
    try:
        yield
    finally:
        _State.critical -= 1


@contextmanager
def on_exit(cleanup: Callable[[], object]) -> Iterator[None]:
    """Run ``cleanup`` if the process leaves through :func:`exit_now` inside the block."""
    _State.cleanups.append(cleanup)
    try:
        yield
    finally:
        _State.cleanups.remove(cleanup)


__all__ = [
    "EXIT_CODE",
    "critical",
    "deferred",
    "exit_now",
    "install_exit_handler",
    "on_exit",
    "pending",
    "poll",
    "run_cleanups",
]
