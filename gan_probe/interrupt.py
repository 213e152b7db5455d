"""Ctrl-C, SIGTERM and SIGHUP on the command line: one line and exit 128 + N at any moment, never a traceback.

Imports nothing but the standard library, so that the entry point
(:func:`gan_probe.__main__.main`) can install :func:`install_exit_handler`
before torch is imported. A KeyboardInterrupt raised in the middle of an
import (torch, functorch's lazy modules, matplotlib) leaves half-initialised
modules behind, and what runs next can fail in any way (a RecursionError,
"ImportError: initialization failed", SIGABRT); so a signal never raises at an
arbitrary point here. SIGINT (Ctrl-C), SIGTERM (``kill``, a job scheduler's
stop) and SIGHUP (the terminal closed) are handled alike; the exit code is
128 + the signal's number (130, 143, 129), as a shell reports a process the
signal killed:

- Before a command runs (imports, parsing, loading the checkpoint), nothing has
  been written, so the signal prints ``error: interrupted`` (``error:
  interrupted by SIGTERM``, ...) and leaves at once (``os._exit``).
- While a command runs (:func:`deferred`), the first signal only sets a flag.
  :func:`poll`, called between steps and batches (every progress advance),
  raises KeyboardInterrupt there, at a safe point: ``ascend``, ``pag`` and
  ``divergence`` keep the work done, the others discard their staged files. A second signal before
  that point leaves at once, after the cleanups registered with
  :func:`on_exit` (the staging folder).
- :func:`critical` (the commit of the output folder) defers every signal to
  its end, so the folder is never half replaced.

Under torchrun (``RANK`` set) only rank 0 prints the line. Outside the command
line (the Python API) none of this is installed and :func:`poll` does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals handled like Ctrl-C (SIGHUP does not exist on Windows).
SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Exit code of an interrupt by SIGINT; by any of :data:`SIGNALS`, :func:`exit_code`.
EXIT_CODE = 128 + signal.SIGINT
#: Every exit code an interrupt can give.
EXIT_CODES = frozenset(128 + s for s in SIGNALS)


class _State:
    pending = False
    critical = 0
    #: the signal that interrupted the run (the first one); SIGINT when none did (a KeyboardInterrupt)
    signum = int(signal.SIGINT)
    #: the run's one line (an error, or why it stopped) is printed: a later signal adds no second one
    reported = False
    cleanups: list[Callable[[], object]] = []


def exit_code(signum: int | None = None) -> int:
    """128 + the signal's number: of ``signum``, or of the signal that interrupted this run."""
    return 128 + (_State.signum if signum is None else signum)


def message(signum: int | None = None) -> str:
    """``interrupted`` for Ctrl-C, ``interrupted by SIGTERM`` (SIGHUP) for the others."""
    signum = _State.signum if signum is None else signum
    return "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"


def _prints() -> bool:
    """Whether this process prints the line: the only one, or rank 0 under torchrun."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def exit_now(signum: int | None = None) -> None:
    """Print one line, run the registered cleanups, leave with 128 + N (no unwinding, no traceback)."""
    if signum is not None:
        _State.signum = signum
    run_cleanups()
    if _prints() and not _State.reported:
        try:
            os.write(2, f"error: {message()}\n".encode())
        except OSError:  # stderr closed or full: the exit code says it
            pass
    os._exit(exit_code())


def reported() -> None:
    """Say that the run's one line is out: a signal from now on leaves without printing another (under
    torchrun the launcher forwards the Ctrl-C it got, which would otherwise make a second line)."""
    _State.reported = True


def run_cleanups() -> None:
    """Run the cleanups registered with :func:`on_exit` (for a caller that leaves the process by itself)."""
    for cleanup in list(_State.cleanups):
        try:
            cleanup()
        except BaseException:  # noqa: BLE001 - leaving anyway
            pass


def _exit_handler(signum: int, frame: FrameType | None) -> None:
    exit_now(signum)


def _deferring_handler(signum: int, frame: FrameType | None) -> None:
    if _State.pending and not _State.critical:
        exit_now()  # a second signal before the first was served: the first one's code
    if not _State.pending:
        _State.signum = signum
    _State.pending = True


def _set_handlers(handler: Callable[[int, FrameType | None], None]) -> dict[int, object]:
    return {s: signal.signal(s, handler) for s in SIGNALS}


def install_exit_handler() -> None:
    """Every signal of :data:`SIGNALS` leaves at once with 128 + N (the entry point, before any heavy import)."""
    _set_handlers(_exit_handler)


def poll() -> None:
    """Raise KeyboardInterrupt here if a signal arrived while :func:`deferred` (a no-op otherwise)."""
    if _State.pending and not _State.critical:
        _State.pending = False
        raise KeyboardInterrupt


def pending() -> bool:
    """Whether a signal arrived that no :func:`poll` has served yet."""
    return _State.pending


@contextmanager
def deferred() -> Iterator[None]:
    """While inside, the signals are served by :func:`poll` (a second one leaves at once); restored on exit.

    Only in the main thread (signal handlers cannot be set elsewhere); elsewhere it changes nothing.
    """
    try:
        previous = _set_handlers(_deferring_handler)
    except ValueError:  # not the main thread
        yield
        return
    _State.pending = False
    _State.signum = int(signal.SIGINT)
    _State.reported = False
    try:
        yield
    finally:
        _State.pending = False
        for signum, handler in previous.items():
            # None: the previous handler was not set from Python; the default action is the best restoration
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # type: ignore[arg-type]


@contextmanager
def critical() -> Iterator[None]:
    """Signals wait until the block is done (they are then served by the next :func:`poll`)."""
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
    "EXIT_CODES",
    "SIGNALS",
    "critical",
    "deferred",
    "exit_code",
    "exit_now",
    "install_exit_handler",
    "message",
    "on_exit",
    "pending",
    "poll",
    "reported",
    "run_cleanups",
]
