"""The project's exception types. Imports nothing of the project.

Every error a user can cause is a :class:`GanProbeError`. Its message speaks in
library terms (the value and what is wrong with it); ``param`` names the
keyword argument or parameter field at fault (``"batch_size"``,
``"slq.steps"``), so that the command line can name the flag that sets it
while the Python API names the argument. :class:`GateFailed` is the exit-3
outcome of a ``--min``/``--max`` gate, raised only after the report has been
written.
"""

from __future__ import annotations


class GanProbeError(Exception):
    """Bad input or an unusable checkpoint: one clear line (exit code 1 on the command line)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class CheckpointError(GanProbeError):
    """A checkpoint file is missing, corrupt, unsafe or inconsistent."""


class DataError(GanProbeError):
    """A latent, image or array file cannot be used."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: torch's OutOfMemoryError (CUDA), its CPU allocator's
    RuntimeError ("can't allocate memory"), or Python's MemoryError (numpy). Imports no torch."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


#: Sentences torch appends to a reader's error that say nothing about the file (cut from a one-line message).
_BOILERPLATE = (" This is an internal miniz error.",)


def first_line(exc: BaseException, *, default: str | None = None) -> str:
    """The line of ``exc`` a one-line error shows: its first, without torch's boilerplate tail (miniz's
    "This is an internal miniz error. If you are seeing this error, ..."); ``default`` (else the exception's
    type name) when it has no text."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if default is None else default
    line = text.splitlines()[0]
    for tail in _BOILERPLATE:
        line = line.split(tail, 1)[0]
    return line


class GateFailed(Exception):
    """A ``--min``/``--max`` gate on a headline figure failed (exit code 3)."""
