"""Strict JSON and atomic, all-or-nothing output.

:class:`OutputDir` stages every file of a run in a hidden folder inside
``--out`` and moves them into place only on :meth:`OutputDir.commit`, each by
an atomic rename; a run that fails leaves nothing behind (not even ``--out``
itself if it created it). The staging folder's name holds the run's pid, so
that the next run into the folder removes what a killed run left.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_probe.errors import GanProbeError


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, arrays and numpy scalars to plain JSON; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_strict(obj: Any, *, indent: int | None = 2) -> str:
    """One strict JSON document: no NaN or Infinity tokens anywhere."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


#: Staging folders: ``.gan-probe-PID-RANDOM-HOST`` (HOST: 8 hex digits of the host name), so that a later run
#: can tell the folders of a killed run (its pid dead on this host) from those of a run still going.
STAGE_PREFIX = ".gan-probe-"
_STAGE = re.compile(r"\.gan-probe-(\d+)-[A-Za-z0-9_]+-([0-9a-f]{8})")
#: Staging folders of versions before the pid was in the name (mkdtemp's 8 random characters).
_LEGACY_STAGE = re.compile(r"\.gan-probe-[A-Za-z0-9_]{8}")
#: Such a legacy folder is taken as abandoned once it is this old [s].
LEGACY_STALE_S = 3600.0


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT: cannot tell
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep its folder
    return True


def stale_stages(root: Path) -> list[Path]:
    """Staging folders in ``root`` left by runs that were killed (their pid is gone on this host)."""
    stale = []
    host, now = _host_tag(), time.time()
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(STAGE_PREFIX):
            continue
        try:
            if not entry.is_dir() or entry.is_symlink():
                continue
            if m := _STAGE.fullmatch(entry.name):
                if m.group(2) == host and not _pid_alive(int(m.group(1))):
                    stale.append(entry)
            elif _LEGACY_STAGE.fullmatch(entry.name) and now - entry.stat().st_mtime > LEGACY_STALE_S:
                stale.append(entry)
        except OSError:
            continue
    return stale


class OutputDir:
    """All files of one run, staged and then committed together.

    Creating one removes the staging folders that killed runs left in ``root``
    (:func:`stale_stages`); a folder that cannot be created or written is a
    GanProbeError naming ``out``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._created_root = not self.root.exists()
        if self.root.exists() and not self.root.is_dir():
            raise GanProbeError(f"the output folder {self.root} exists and is not a folder", param="out")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._created_root = False
            raise GanProbeError(
                f"cannot create the output folder {self.root}: {exc.strerror or exc}", param="out"
            ) from None
        for stage in stale_stages(self.root):
            shutil.rmtree(stage, ignore_errors=True)
        try:
            self._stage = Path(
                tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", suffix=f"-{_host_tag()}", dir=self.root)
            )
        except OSError as exc:
            self._remove_created_root()
            raise GanProbeError(
                f"cannot write in the output folder {self.root}: {exc.strerror or exc}", param="out"
            ) from None
        self.files: list[str] = []

    def path(self, name: str) -> Path:
        """A staging path for ``name``; the file appears under ``root`` on commit."""
        if name not in self.files:
            self.files.append(name)
        return self._stage / name

    def owns(self, filename: str | os.PathLike) -> bool:
        """Whether ``filename`` is in the output folder or its staging folder."""
        path = Path(os.path.abspath(filename))
        root = Path(os.path.abspath(self.root))
        return path == root or root in path.parents

    def final_name(self, filename: str | os.PathLike) -> Path:
        """Where a staged file will appear (``filename`` itself when it is not staged)."""
        path = Path(os.path.abspath(filename))
        stage = Path(os.path.abspath(self._stage))
        if stage in path.parents:
            return self.root / path.relative_to(stage)
        return Path(filename)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.path(name).write_bytes(data)

    def write_json(self, name: str, obj: Any) -> None:
        self.path(name).write_text(dumps_strict(obj) + "\n")

    def commit(self) -> list[Path]:
        """Move every staged file into ``root`` (one atomic rename each)."""
        done = []
        for name in self.files:
            src = self._stage / name
            if src.exists():
                os.replace(src, self.root / name)
                done.append(self.root / name)
        shutil.rmtree(self._stage, ignore_errors=True)
        return done

    def discard(self) -> None:
        """Drop everything staged; remove ``root`` too if this run created it and it is empty."""
        shutil.rmtree(self._stage, ignore_errors=True)
        self._remove_created_root()

    def _remove_created_root(self) -> None:
        if self._created_root:
            try:
                self.root.rmdir()
            except OSError:
                pass
