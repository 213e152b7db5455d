"""What the command line prints, and where: consoles that show text from files inertly, stdout that fails
with one line, terminal settings that cannot hide the output, warnings turned into notes.

- Text from a file (a checkpoint's provenance, arch and key names, file names in messages) may hold
  control characters; printed as they are, an escape sequence would recolour, retitle or rewrite the
  user's terminal. Every :func:`console` shows them as visible ``\\x1b``-style escapes
  (:func:`printable`). The ``--json`` document needs nothing: JSON escapes them anyway.
- ``COLUMNS`` or ``LINES`` that are not a positive integer (``COLUMNS=0`` made Rich print nothing at all)
  are ignored, as if unset; ``TERM=dumb`` is Rich's own business (plain text).
- stdout closed (``>&-``), full (``>/dev/full``) or a pipe whose reader left (``| head -c 1``): the
  result cannot be delivered, so :func:`write_stdout` raises :class:`StdoutError` and the run ends with
  one line on stderr and exit 1 (141 for the broken pipe, as a shell reports a process SIGPIPE killed).
- Python warnings (torch's UserWarnings, PIL's DecompressionBombWarning, ...) raised while a command
  runs are collected (:func:`collect_warnings`) and printed as notes (:func:`warning_notes`), never as
  warnings with a source line.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

#: Exit code for a stdout whose reader went away: 128 + SIGPIPE (13), as a shell reports it.
BROKEN_PIPE_EXIT = 141

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that reorder text
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character (ESC, CR, BEL, ..., C1, bidi overrides) shown as an escape."""

    def show(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(show, text)


class SafeConsole(Console):
    """A Rich console whose text (markup, table cells, messages) is shown through :func:`printable`."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        # Rich's default leaves by SystemExit(1) in the middle of printing; ours is an ordinary error
        raise StdoutError(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))


def _environ() -> dict[str, str]:
    """The environment with a COLUMNS or LINES that is not a positive integer left out."""
    env = dict(os.environ)
    for name in ("COLUMNS", "LINES"):
        value = env.get(name)
        if value is not None and not (value.strip().isdigit() and int(value) > 0):
            del env[name]
    return env


def console(*, stderr: bool = False, quiet: bool = False) -> SafeConsole:
    """The console for stdout (tables) or stderr (progress, notes, errors)."""
    return SafeConsole(stderr=stderr, quiet=quiet, highlight=False, _environ=_environ())


class StdoutError(Exception):
    """stdout cannot take the output: closed, full, or a pipe nobody reads."""

    def __init__(self, cause: OSError | None) -> None:
        self.broken_pipe = isinstance(cause, BrokenPipeError)
        reason = "it is closed" if cause is None else (cause.strerror or str(cause) or type(cause).__name__)
        if self.broken_pipe:
            reason = "the reading end of the pipe was closed"
        super().__init__(f"cannot write the output to stdout: {reason}")

    @property
    def exit_code(self) -> int:
        return BROKEN_PIPE_EXIT if self.broken_pipe else 1


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's last flush of what could not be
    written fails nowhere ("Exception ignored ... BrokenPipeError" would be a second message)."""
    stream = sys.__stdout__
    if stream is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to flush at exit
        pass


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout and flush it; :class:`StdoutError` if it cannot be delivered."""
    stream: TextIO | None = sys.stdout
    if stream is None:
        raise StdoutError(None)
    try:
        stream.write(text)
        stream.flush()
    except OSError as exc:
        _silence_stdout()
        raise StdoutError(exc) from None


@contextmanager
def stdout_errors() -> Iterator[None]:
    """Turn a failed write to stdout inside (a Rich table) into :class:`StdoutError`."""
    if sys.stdout is None:
        raise StdoutError(None)
    try:
        yield
        sys.stdout.flush()
    except StdoutError:
        _silence_stdout()
        raise
    except OSError as exc:
        _silence_stdout()
        raise StdoutError(exc) from None


@contextmanager
def collect_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The Python warnings raised inside, collected instead of shown (:func:`warning_notes` makes them notes).

    Filters stay as they are: what Python would have shown, and nothing else, is collected."""
    with warnings.catch_warnings(record=True) as caught:
        yield caught


def warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """One note per distinct warning: ``warning (Category): its first line``."""
    notes: list[str] = []
    for w in caught:
        lines = str(w.message).strip().splitlines()
        note = f"warning ({w.category.__name__})" + (f": {lines[0]}" if lines else "")
        if note not in notes:
            notes.append(note)
    return notes


__all__ = [
    "BROKEN_PIPE_EXIT",
    "SafeConsole",
    "StdoutError",
    "collect_warnings",
    "console",
    "printable",
    "warning_notes",
    "stdout_errors",
    "write_stdout",
]
