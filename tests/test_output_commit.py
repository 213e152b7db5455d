"""The output folder is committed in one step: after any failure or kill, ``--out`` holds all its old files
or all the new ones (docs/design.md §8.3); a write that fails (a full disk, a read-only folder) is one line
naming the folder; staging folders that killed runs left behind are removed by the next run.

Most cases drive :class:`OutputDir` directly (fast) with faults injected between the steps of the commit;
the CLI is run where the message matters, and real subprocesses are SIGKILLed in the middle of the swap.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import gan_probe.report.files as files_module
from gan_probe.errors import GanProbeError
from gan_probe.report.files import OutputDir, recover
from tests.conftest import assert_refused, invoke

ROOT = Path(__file__).resolve().parent.parent
OLD = {"report.json": "old report", "samples.png": "old samples", "notes.txt": "the user's own file"}
NEW = {"report.json": "new report", "samples.png": "new samples"}


def _fill(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _contents(folder: Path) -> dict[str, str]:
    return {
        p.name: p.read_bytes().decode("utf-8", "replace")
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink()
    }


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if ".gan-probe-" in p.name)


def _staged(folder: Path) -> OutputDir:
    out = OutputDir(folder)
    for name, text in NEW.items():
        out.path(name).write_text(text)
    return out


ALL_OLD = OLD
ALL_NEW = {**OLD, **NEW}  # the user's own file is carried over


def test_commit_replaces_the_run_files_and_keeps_the_others(tmp_path):
    folder = tmp_path / "out"
    _fill(folder, OLD)
    (folder / "sub").mkdir()
    (folder / "sub" / "kept.txt").write_text("deep")
    (folder / "link").symlink_to("notes.txt")
    os.chmod(folder, 0o750)
    before = os.stat(folder / "notes.txt").st_ino
    out = _staged(folder)
    assert _siblings(folder) != [] and not any(p.name.startswith(".gan-probe-") for p in folder.iterdir())
    assert out.commit() == [folder / "report.json", folder / "samples.png"]
    assert _contents(folder) == ALL_NEW
    assert (folder / "sub" / "kept.txt").read_text() == "deep"
    assert os.readlink(folder / "link") == "notes.txt"
    assert os.stat(folder / "notes.txt").st_ino == before  # carried by a hard link, not copied
    assert os.stat(folder).st_mode & 0o777 == 0o750
    assert _siblings(folder) == []


def test_a_new_folder_appears_whole(tmp_path):
    folder = tmp_path / "a" / "b" / "out"
    out = _staged(folder)
    assert not folder.exists()  # nothing there until the commit
    out.commit()
    assert _contents(folder) == NEW
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(folder).st_mode & 0o777 == 0o777 & ~mask
    assert _siblings(folder) == []


def test_a_discarded_run_leaves_nothing(tmp_path):
    folder = tmp_path / "a" / "out"
    _staged(folder).discard()
    assert not (tmp_path / "a").exists()
    _fill(folder, OLD)
    _staged(folder).discard()
    assert _contents(folder) == ALL_OLD and _siblings(folder) == []


def test_a_symlinked_out_stays_a_link(tmp_path):
    real = tmp_path / "real"
    _fill(real, OLD)
    link = tmp_path / "link"
    link.symlink_to(real)
    _staged(link).commit()
    assert link.is_symlink() and _contents(real) == ALL_NEW


def _fail_on_call(monkeypatch, target, name: str, failing_call: int) -> None:
    """Make ``target.name`` raise ENOSPC on its ``failing_call``-th call (1-based); earlier calls go through."""
    real = getattr(target, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)


@pytest.mark.parametrize(
    "fault",
    [
        "carry",  # linking the user's file into the new folder
        "flush",  # the flush to the disk before the swap
        "exchange",  # the atomic exchange itself
        "first-rename",  # without an exchange: DIR to the old folder
        "second-rename",  # without an exchange: the new folder to DIR (the first rename is undone)
    ],
)
def test_a_failure_in_any_step_leaves_all_the_old_files(fault, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    _fill(folder, OLD)
    out = _staged(folder)
    if fault in ("first-rename", "second-rename"):
        monkeypatch.setattr(files_module, "exchange", lambda a, b: False)
    if fault == "carry":
        _fail_on_call(monkeypatch, files_module, "_carry", 1)
    elif fault == "flush":
        _fail_on_call(monkeypatch, files_module, "fsync_tree", 1)
    elif fault == "exchange":
        _fail_on_call(monkeypatch, files_module, "exchange", 1)
    else:
        _fail_on_call(monkeypatch, files_module.os, "rename", 1 if fault == "first-rename" else 2)
    with pytest.raises(OSError, match="No space left"):
        out.commit()
    out.discard()  # what the command line does next
    assert _contents(folder) == ALL_OLD
    assert _siblings(folder) == []


def test_the_two_rename_swap_without_an_exchange(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    _fill(folder, OLD)
    monkeypatch.setattr(files_module, "exchange", lambda a, b: False)
    _staged(folder).commit()
    assert _contents(folder) == ALL_NEW and _siblings(folder) == []


def test_an_entry_that_cannot_be_replaced_is_found_before_anything_moves(tmp_path):
    folder = tmp_path / "out"
    _fill(folder, OLD)
    out = _staged(folder)
    (folder / "samples.png").unlink()
    (folder / "samples.png").mkdir()  # appeared while the run worked
    with pytest.raises(GanProbeError, match="samples.png is a folder"):
        out.commit()
    out.discard()
    assert _contents(folder) == {"report.json": "old report", "notes.txt": "the user's own file"}
    assert (folder / "samples.png").is_dir() and _siblings(folder) == []


def test_report_json_as_a_folder_fails_before_the_work(tiny_ckpt, runner, tmp_path):
    """The case of the issue: the run failed, but samples.png had already been replaced."""
    folder = tmp_path / "out"
    _fill(folder, {"samples.png": "old samples"})
    (folder / "report.json").mkdir()
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", folder])
    assert_refused(result, "report.json is a folder")
    assert result.stderr == (
        f"error: {folder}/report.json is a folder, which the new report.json would replace: "
        "move it away or choose another --out\n"
    )
    assert _contents(folder) == {"samples.png": "old samples"} and _siblings(folder) == []


def test_an_unwritable_folder_is_refused_before_anything_moves(tiny_ckpt, runner, tmp_path, monkeypatch):
    """Simulated (the tests run as root, whom chmod does not stop)."""
    folder = tmp_path / "out"
    _fill(folder, OLD)
    monkeypatch.setattr(files_module, "_writable", lambda p: Path(p) != folder)
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", folder])
    assert_refused(result, "Permission denied (--out)")
    assert result.stderr == f"error: cannot write in the output folder {folder}: Permission denied (--out)\n"
    assert _contents(folder) == ALL_OLD and _siblings(folder) == []


def test_out_naming_a_file_is_refused(tiny_ckpt, runner, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    assert_refused(
        invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", path]), "exists and is not a folder (--out)"
    )
    assert path.read_text() == "x"


def test_the_working_folder_is_committed_in_place(tmp_path, monkeypatch):
    """--out . cannot be swapped (the user's shell would be left in a deleted folder): files are moved one by one."""
    folder = tmp_path / "here"
    _fill(folder, OLD)
    monkeypatch.chdir(folder)
    inode = os.stat(folder).st_ino
    out = _staged(Path("."))
    assert not out.swaps
    out.commit()
    assert os.stat(folder).st_ino == inode and _contents(folder) == ALL_NEW
    assert _siblings(folder) == [] and not any(p.name.startswith(".gan-probe-") for p in folder.iterdir())


def test_recovery_puts_back_the_folder_of_a_run_killed_between_the_renames(tmp_path):
    folder = tmp_path / "out"
    _fill(folder, OLD)
    start, tag = files_module._sibling_prefix("out")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = files_module._host_tag()
    old = tmp_path / f"{start}old-{tag}-{int(dead.stdout)}-abcd1234-{host}"
    stage = tmp_path / f"{start}stage-{tag}-{int(dead.stdout)}-efgh5678-{host}"
    folder.rename(old)
    _fill(stage, NEW)
    assert recover(folder) == old
    assert _contents(folder) == ALL_OLD and _siblings(folder) == []
    # an old folder of a run still going (our own pid) is left alone
    live = tmp_path / f"{start}old-{tag}-{os.getpid()}-abcd1234-{host}"
    folder.rename(live)
    assert recover(folder) is None and not folder.exists() and live.is_dir()


KILLER = """
import os, signal, sys
import gan_probe.report.files as files

step = sys.argv[1]
if step == "between-renames":
    files.exchange = lambda a, b: False
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # DIR is now the old folder; the new one is not in place yet
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    files.os.rename = rename
else:  # after the exchange, before the old folder is removed
    real_rmtree = files.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if ".gan-probe-stage-" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_rmtree(path, *args, **kwargs)

    files.shutil.rmtree = rmtree
from gan_probe.__main__ import main

main(sys.argv[2:])
"""


@pytest.mark.parametrize("step", ["between-renames", "after-exchange"])
def test_sigkill_in_the_middle_of_the_commit(step, tiny_ckpt, runner, tmp_path):
    """A real process killed by SIGKILL inside the commit: the folder (after the next run's recovery) holds all
    the old files or all the new ones, never a mix."""
    folder = tmp_path / "out"
    _fill(folder, OLD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["loglik", str(tiny_ckpt), "--n", "2", "--out", str(folder)]
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), step, *args], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if step == "between-renames":
        assert not folder.exists() and len(_siblings(folder)) == 2  # the old folder, the staged new one
    recover(folder)
    contents = _contents(folder)
    assert contents == ALL_OLD if step == "between-renames" else contents.keys() == ALL_NEW.keys()
    if step == "after-exchange":
        assert contents["notes.txt"] == OLD["notes.txt"] and contents["report.json"].startswith("{")
    assert _siblings(folder) == []
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "1", "--out", folder])
    assert result.exit_code == 0, result.stderr
    assert _contents(folder)["notes.txt"] == OLD["notes.txt"] and _siblings(folder) == []


# --------------------------------------------------------------------------- writes that fail, through the command line


def _earlier_report(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text('{"earlier": true}\n')
    return (folder / "report.json").read_text()


def test_full_disk_is_one_line_and_keeps_the_folder(tiny_ckpt, runner, tmp_path, monkeypatch):
    import gan_probe.report.files as files_module

    out = tmp_path / "full"
    before = _earlier_report(out)

    def no_space(stage):  # the commit's flush to the disk, where a full disk shows with delayed allocation
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(stage) / "report.json"))

    monkeypatch.setattr(files_module, "fsync_tree", no_space)
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", out])
    assert_refused(result, "No space left on device")
    assert "No space left on device" in result.stderr and "(--out)" not in result.stderr
    assert "choose another --out" in result.stderr and "Traceback" not in result.stderr
    assert (out / "report.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # the staging folder is gone


def test_full_disk_while_writing_an_image(tiny_ckpt, runner, tmp_path, monkeypatch):
    from PIL import Image

    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", no_space)
    out = tmp_path / "img"
    result = invoke(runner, ["sample", tiny_ckpt, "--n", "4", "--out", out])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write") and str(out) in line and "No space left" in line
    assert not out.exists()


def test_read_only_out_is_one_line(tiny_ckpt, runner, tmp_path, monkeypatch):
    """Read-only --out: simulated, since the tests run as root and chmod does not stop root's writes."""
    import gan_probe.report.files as files_module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files_module.tempfile, "mkdtemp", read_only)
    out = tmp_path / "ro"
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", out])
    assert_refused(result, "Read-only file system (--out)", out=out)
    assert result.stderr.strip() == f"error: cannot write in the output folder {out}: Read-only file system (--out)"
    assert not out.exists()


def test_read_only_working_folder(tiny_ckpt, runner, tmp_path, monkeypatch):
    """The default --out (gan-probe-out/COMMAND) in a working folder that cannot be written."""
    import gan_probe.report.files as files_module

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files_module.Path, "mkdir", denied)
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2"])
    assert_refused(result, "Permission denied (--out)", out=tmp_path / "gan-probe-out")
    assert "cannot create the output folder gan-probe-out/loglik: Permission denied (--out)" in result.stderr


# --------------------------------------------------------------------------- staging folders of killed runs


def test_staging_folders_of_killed_runs_are_removed(tiny_ckpt, runner, tmp_path):
    from gan_probe.report.files import _host_tag

    out = tmp_path / "stale"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = out / f".gan-probe-{dead_pid}-abcd1234-{_host_tag()}"
    stale.mkdir()
    (stale / "report.json").write_bytes(b"")  # the 0-byte file a SIGKILL can leave
    alive = out / f".gan-probe-{os.getppid()}-efgh5678-{_host_tag()}"  # a run still going (our parent)
    alive.mkdir()
    elsewhere = out / f".gan-probe-{dead_pid}-ijkl9012-00000000"  # another host's: cannot tell, kept
    elsewhere.mkdir()
    legacy = out / ".gan-probe-a1b2c3d4"  # before the pid was in the name: removed once an hour old
    legacy.mkdir()
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "1", "--out", out])
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and not legacy.exists()
    assert alive.is_dir() and elsewhere.is_dir()
