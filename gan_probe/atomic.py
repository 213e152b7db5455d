"""Atomic file writes, shared by the checkpoint writer and the report layer (imports nothing of the project)."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], write: Callable[[io.BufferedWriter], object]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    The temporary file is created with mode 0o666 less the umask, like any
    ordinary file (``mkstemp`` would make it private). On any failure the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
