"""A bound on the time of one evaluation of a loaded program, and Ctrl-C while a program runs.

While TorchScript's interpreter runs a program, the main thread does not come
back to Python, so a Python signal handler (:mod:`gan_probe.interrupt`) waits
for the evaluation to end, and a loop that never ends would ignore Ctrl-C for
ever. On the command line (where :mod:`gan_probe.interrupt` handles SIGINT),
:func:`evaluating` therefore brings up, on first use, a daemon thread that:

- is woken by Python's C-level signal handler itself, through
  ``signal.set_wakeup_fd`` (a pipe the handler writes the signal's number to at
  once, whatever the main thread is doing). When SIGINT, SIGTERM or SIGHUP
  arrives during an evaluation that is still running
  :data:`GRACE_SECONDS` later, it serves the signal from this thread: SIGINT
  through :func:`gan_probe.interrupt.exit_now` (its cleanups, one line, 130),
  SIGTERM and SIGHUP through the Python handler installed for them, else with
  one line and 128 + the signal's number. A signal during a short evaluation is
  left to the main thread, which serves it as usual when the evaluation ends.
- ends the process when one evaluation runs longer than the bound
  (:data:`DEFAULT_SECONDS`, or the environment variable
  ``GAN_PROBE_PROGRAM_SECONDS``): one line naming the bound and the variable,
  the cleanups of :mod:`gan_probe.interrupt` run, exit 1.

Outside the command line (the Python API) nothing is installed and a program
runs unguarded: ending the caller's process is not this library's to decide.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gan_probe import interrupt

#: Seconds one evaluation of a program may take on the command line, unless GAN_PROBE_PROGRAM_SECONDS says otherwise.
DEFAULT_SECONDS = 900.0
ENVIRONMENT = "GAN_PROBE_PROGRAM_SECONDS"
#: Seconds a signal waits for a running evaluation to end before this thread serves it.
GRACE_SECONDS = 0.5


class _State:
    lock = threading.Lock()
    depth = 0
    since: float | None = None  # when the outermost running evaluation began
    started = False
    limit = DEFAULT_SECONDS
    wakeup: int | None = None  # the read end of the signal pipe (None: signals not watched)


def time_limit() -> float:
    """The bound on one evaluation, in seconds (the environment variable, else :data:`DEFAULT_SECONDS`)."""
    text = os.environ.get(ENVIRONMENT, "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # nan too
        from gan_probe.errors import GanProbeError

        raise GanProbeError(f"{ENVIRONMENT}={text!r}: give a positive number of seconds")
    return value


def _command_line() -> bool:
    """Whether gan-probe's command line handles SIGINT in this process (the only place the watchdog runs)."""
    try:
        handler = signal.getsignal(signal.SIGINT)
    except ValueError:
        return False
    return getattr(handler, "__module__", None) == interrupt.__name__


def _start() -> None:
    """Bring up the watchdog thread (once), and the signal pipe when in the main thread and no one else uses it."""
    _State.limit = time_limit()
    if threading.current_thread() is threading.main_thread():
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:
            previous = -2
        if previous == -1:
            _State.wakeup = read
        else:  # another wakeup fd was set (an event loop): leave it in place
            if previous != -2:
                signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
    threading.Thread(target=_watch, name="gan-probe program watchdog", daemon=True).start()
    _State.started = True


@contextmanager
def evaluating() -> Iterator[None]:
    """Mark one evaluation of a program as running (nested calls count once); see the module docstring."""
    if not _State.started:
        if not _command_line():
            yield
            return
        with _State.lock:
            if not _State.started:
                _start()
    with _State.lock:
        _State.depth += 1
        if _State.depth == 1:
            _State.since = time.monotonic()
    try:
        yield
    finally:
        with _State.lock:
            _State.depth -= 1
            if _State.depth == 0:
                _State.since = None


def _watch() -> None:
    pending: tuple[int, float] | None = None  # a signal that arrived during an evaluation, and when
    while True:
        now = time.monotonic()
        since = _State.since
        waits = [1.0]
        if since is not None:
            waits.append(since + _State.limit - now)
        if pending is not None:
            waits.append(pending[1] + GRACE_SECONDS - now)
        timeout = max(0.0, min(waits))
        if _State.wakeup is not None:
            ready, _, _ = select.select([_State.wakeup], [], [], timeout)
            if ready:
                for number in os.read(_State.wakeup, 64):
                    if number in interrupt.SIGNALS and _State.since is not None and pending is None:
                        pending = (number, time.monotonic())
        else:
            time.sleep(timeout)
        now = time.monotonic()
        since = _State.since
        if pending is not None:
            if since is None or since > pending[1]:
                pending = None  # the evaluation ended: the main thread serves the signal
            elif now >= pending[1] + GRACE_SECONDS:
                _serve(pending[0])
        if since is not None and now - since > _State.limit:
            _leave(
                f"error: the TorchScript or torch.export program ran for more than {_State.limit:g} s on one "
                f"evaluation (a loop that never ends?); set {ENVIRONMENT} to allow longer evaluations\n",
                1,
            )


def _serve(number: int) -> None:
    """Serve a signal the main thread cannot, since it is inside a program: as the command line serves it
    (its cleanups, one line, exit 128 + N)."""
    interrupt.exit_now(number)


def _leave(message: str, code: int) -> None:
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed stderr: the line below may fail too
        pass
    interrupt.run_cleanups()  # the staging folder, as exit_now would, with another message and exit code
    try:
        os.write(2, message.encode())
    except OSError:
        pass
    os._exit(code)


__all__ = ["DEFAULT_SECONDS", "ENVIRONMENT", "GRACE_SECONDS", "evaluating", "time_limit"]
