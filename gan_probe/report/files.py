"""Strict JSON and atomic, all-or-nothing output.

:class:`OutputDir` stages every file of a run and puts them in place in one
step on :meth:`OutputDir.commit` (docs/design.md §8.3): the staging folder is
a hidden sibling of ``--out`` on the same file system, and the commit swaps it
with ``--out``, so that after any failure, kill or power loss ``--out`` holds
either all its old files or all the new ones. The entries of ``--out`` that
the run does not write are carried over (hard links, or copies where links
cannot be made). A run that fails leaves nothing behind (not even ``--out``).
Staging and old folders hold the run's pid in their name, so that the next
run into the folder removes (or, for an interrupted swap, restores) what a
killed run left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_probe.atomic import exchange, fsync_folder, fsync_tree
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


#: Sibling folders of ``--out DIR``: ``.DIR.gan-probe-stage-TAG-PID-RANDOM-HOST`` (the staged files) and
#: ``.DIR.gan-probe-old-TAG-PID-RANDOM-HOST`` (the previous folder, during a swap without an atomic exchange);
#: TAG: 8 hex digits of DIR's name (the visible prefix is cut to 40 characters).
_SIBLING = re.compile(r"\.gan-probe-(stage|old)-([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+-([0-9a-f]{8})")


def _sibling_prefix(name: str) -> tuple[str, str]:
    """(the start of every sibling folder's name for ``--out`` named ``name``, its tag)."""
    return f".{name[:40]}.gan-probe-", hashlib.sha1(name.encode()).hexdigest()[:8]


def stale_siblings(target: Path) -> tuple[list[Path], list[Path]]:
    """(staging folders, old folders) beside ``target`` left by killed runs (their pid gone on this host)."""
    start, tag = _sibling_prefix(target.name)
    host = _host_tag()
    stages: list[Path] = []
    olds: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return stages, olds
    for entry in entries:
        if not entry.name.startswith(start):
            continue
        m = _SIBLING.fullmatch(entry.name[len(start) - len(".gan-probe-") :])
        if m is None or m.group(2) != tag or m.group(4) != host or _pid_alive(int(m.group(3))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                (stages if m.group(1) == "stage" else olds).append(entry)
        except OSError:
            continue
    return stages, olds


def recover(target: Path) -> Path | None:
    """Put back the folder of a run killed in the middle of its swap: ``target`` missing and exactly one old
    folder of a dead run beside it. Removes the dead runs' staging folders (and their old folders once
    ``target`` is there). Returns the folder restored, or None."""
    stages, olds = stale_siblings(target)
    restored = None
    if not os.path.lexists(target) and len(olds) == 1:
        os.rename(olds[0], target)
        restored, olds = olds[0], []
    for stale in stages + (olds if os.path.lexists(target) else []):
        shutil.rmtree(stale, ignore_errors=True)
    return restored


class OutputDir:
    """All files of one run, staged and then committed together (docs/design.md §8.3).

    ``--out DIR`` is staged in a sibling folder and :meth:`commit` swaps the two: by one atomic exchange
    (``renameat2``) where the system has it, else by two renames (DIR to an old folder, the staging folder
    to DIR) whose gap a killed run leaves as DIR missing beside its complete old folder, which
    :func:`recover` (the next :class:`OutputDir` for DIR) puts back. Entries of DIR that the run does not
    write are carried into the new folder (hard links; copies where links fail). Where DIR cannot be
    swapped (a mount point, the working folder or one holding it, a parent that cannot be written), the
    files are staged inside DIR and each moved by its own rename, as before the swap existed.

    Creating one recovers or removes what killed runs left, and refuses (GanProbeError naming ``out``)
    an output folder that cannot be created or written, or a ``report.json`` there that is a folder.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise GanProbeError(f"the output folder {self.root} exists and is not a folder", param="out")
        # a symbolic link to a folder stays a link: the folder it points to is the one swapped
        self._target = Path(os.path.realpath(self.root))
        self._created: list[Path] = []  # folders made for this run, removed again if it fails
        try:
            self._make_folders(self._target.parent)
            recover(self._target)
        except OSError as exc:
            self._remove_created()
            raise GanProbeError(
                f"cannot create the output folder {self.root}: {exc.strerror or exc}", param="out"
            ) from None
        existed = self._target.is_dir()
        if existed and not _writable(self._target):
            raise GanProbeError(f"cannot write in the output folder {self.root}: Permission denied", param="out")
        if existed:
            for stage in stale_stages(self._target):
                shutil.rmtree(stage, ignore_errors=True)
        self.swaps = not existed or self._swappable()
        try:
            self._stage = self._make_stage(existed)
        except OSError as exc:
            self._remove_created()
            raise GanProbeError(
                f"cannot write in the output folder {self.root}: {exc.strerror or exc}", param="out"
            ) from None
        self.files: list[str] = []
        try:
            self.check_replaceable(["report.json"])
        except GanProbeError:
            self.discard()
            raise

    def _make_folders(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for f in reversed(missing):
            f.mkdir()
            self._created.append(f)

    def _swappable(self) -> bool:
        """Whether the existing folder can be renamed as a whole (see the class docstring)."""
        target = self._target
        try:
            cwd = Path(os.path.realpath(os.getcwd()))
        except OSError:
            cwd = None
        if cwd is not None and (cwd == target or target in cwd.parents):
            return False
        return not os.path.ismount(target) and _writable(target.parent)

    def _make_stage(self, existed: bool) -> Path:
        if self.swaps:
            start, tag = _sibling_prefix(self._target.name)
            try:
                return Path(
                    tempfile.mkdtemp(
                        prefix=f"{start}stage-{tag}-{os.getpid()}-", suffix=f"-{_host_tag()}", dir=self._target.parent
                    )
                )
            except OSError as exc:
                if not existed or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                self.swaps = False  # the parent cannot be written: stage inside the folder instead
        return Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", suffix=f"-{_host_tag()}", dir=self.root))

    def path(self, name: str) -> Path:
        """A staging path for ``name``; the file appears under ``root`` on commit."""
        if name not in self.files:
            self.files.append(name)
        return self._stage / name

    def owns(self, filename: str | os.PathLike) -> bool:
        """Whether ``filename`` is in the output folder or its staging folder."""
        path = Path(os.path.abspath(filename))
        for folder in (self.root, self._target, self._stage):
            folder = Path(os.path.abspath(folder))
            if path == folder or folder in path.parents:
                return True
        return False

    def final_name(self, filename: str | os.PathLike) -> Path:
        """Where a staged file will appear (``filename`` itself when it is not staged)."""
        path = Path(os.path.abspath(filename))
        stage = Path(os.path.abspath(self._stage))
        if path == stage:
            return self.root
        if stage in path.parents:
            return self.root / path.relative_to(stage)
        return Path(filename)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.path(name).write_bytes(data)

    def write_json(self, name: str, obj: Any) -> None:
        self.path(name).write_text(dumps_strict(obj) + "\n")

    def check_replaceable(self, names: list[str]) -> None:
        """GanProbeError if an entry of the folder that a file of this run would replace is a folder."""
        for name in names:
            existing = self._target / name
            if existing.is_dir() and not existing.is_symlink():
                raise GanProbeError(
                    f"{self.root / name} is a folder, which the new {name} would replace: "
                    "move it away or choose another --out",
                    param="out",
                )

    def commit(self) -> list[Path]:
        """Put every staged file in place, all in one step (see the class docstring); the files' final paths.

        Everything that could stop it is checked before anything moves; a failure leaves the folder as it
        was."""
        names = [name for name in self.files if (self._stage / name).exists()]
        self.check_replaceable(names)
        if not self.swaps:
            for name in names:
                os.replace(self._stage / name, self._target / name)
            shutil.rmtree(self._stage, ignore_errors=True)
            return [self.root / name for name in names]
        target, stage = self._target, self._stage
        if target.is_dir():
            for entry in os.scandir(target):
                if entry.name not in names:
                    _carry(Path(entry.path), stage / entry.name)
            _copy_folder_attributes(target, stage)
        else:
            os.chmod(stage, 0o777 & ~_umask())
        fsync_tree(stage)
        if not target.is_dir():
            os.rename(stage, target)
        elif exchange(stage, target):
            shutil.rmtree(stage, ignore_errors=True)  # it now holds the old folder
        else:
            start, tag = _sibling_prefix(target.name)
            old = target.parent / f"{start}old-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{_host_tag()}"
            os.rename(target, old)
            try:
                os.rename(stage, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_folder(target.parent)
        self._created = []
        return [self.root / name for name in names]

    def discard(self) -> None:
        """Drop everything staged; remove the folders this run created (``root`` and its parents) if empty."""
        shutil.rmtree(self._stage, ignore_errors=True)
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass
        self._created = []


def _writable(folder: Path) -> bool:
    """Whether files can be made and removed in ``folder`` (by this user)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _carry(src: Path, dst: Path) -> None:
    """An entry of the old folder into the new one: a hard link, a folder of hard links, a copy of a link."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a file system without hard links, or a file whose link the system protects
        shutil.copy2(src, dst, follow_symlinks=False)


def _copy_folder_attributes(src: Path, dst: Path) -> None:
    """The old folder's mode, times and (where permitted) owner onto the new one."""
    shutil.copystat(src, dst)
    st = src.stat()
    if (st.st_uid, st.st_gid) != (dst.stat().st_uid, dst.stat().st_gid):
        try:
            os.chown(dst, st.st_uid, st.st_gid)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
