"""Strict JSON and atomic, all-or-nothing output.

:class:`OutputDir` stages every file of a run in a hidden folder inside
``--out`` and moves them into place only on :meth:`OutputDir.commit`, each by
an atomic rename; a run that fails leaves nothing behind (not even ``--out``
itself if it created it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
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


class OutputDir:
    """All files of one run, staged and then committed together."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._created_root = not self.root.exists()
        if self.root.exists() and not self.root.is_dir():
            raise GanProbeError(f"the output folder {self.root} exists and is not a folder", param="out")
        self.root.mkdir(parents=True, exist_ok=True)
        self._stage = Path(tempfile.mkdtemp(prefix=".gan-probe-", dir=self.root))
        self.files: list[str] = []

    def path(self, name: str) -> Path:
        """A staging path for ``name``; the file appears under ``root`` on commit."""
        if name not in self.files:
            self.files.append(name)
        return self._stage / name

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
        if self._created_root:
            try:
                self.root.rmdir()
            except OSError:
                pass
