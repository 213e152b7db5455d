"""What reaches stdout and stderr (docs/design.md §8.2): a closed, full or dead stdout is one line and exit 1
(141 for a broken pipe), never a traceback; an unusable stderr changes nothing else; odd terminal settings
still show the output and the error; no control character from a file reaches the terminal; Python
warnings become notes; Rich markup in user text is printed as it is.

Closed and full streams need real processes (``stdout=DEVNULL`` is open, so a shell's ``>&-`` is used);
the rest runs in-process through Typer's CliRunner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_probe.cli.terminal import printable
from gan_probe.limits import MAX_COUNT
from tests.conftest import assert_refused, invoke, save_tiny_dcgan

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PYTHON = f"'{sys.executable}' -m gan_probe"


#: Shell command lines (``{py}``: python -m gan_probe), started together since each mostly waits for its imports;
#: each writes the exit status of gan-probe to ``status``.
SHELL = {
    "stdout-closed-json": "{py} info --json >&-",
    "stdout-closed-table": "{py} info >&-",
    "stdout-full-json": "{py} info --json >/dev/full",
    "stdout-full-table": "{py} info >/dev/full",
    "version-full": "{py} --version >/dev/full",
    "pipe-json": "{{ {py} loglik --n 2 --json --out o; echo $? >status; }} | true",
    "pipe-table": "{{ {py} info; echo $? >status; }} | true",
    "stderr-closed": "{py} info 2>&-",
    "stderr-full": "{py} info 2>/dev/full",
    "stderr-full-error": "{py} info --batch-size 0 2>/dev/full",
    "stderr-closed-error": "{py} info --batch-size 0 2>&-",
}


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    folder: Path


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    base = tmp_path_factory.mktemp("streams")
    procs = {}
    for name, line in SHELL.items():
        (base / name).mkdir()
        # the exit status of gan-probe itself, also in a pipe (POSIX sh has no PIPESTATUS)
        command = line.format(py=PYTHON) if "status" in line else f"{line.format(py=PYTHON)}; echo $? >status"
        procs[name] = subprocess.Popen(
            ["sh", "-c", command], cwd=base / name, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        code = int((base / name / "status").read_text())
        done[name] = Finished(code, out, err, base / name)
    return done


LOST = "error: cannot write the output to stdout: "


@pytest.mark.parametrize(
    "name, reason",
    [
        ("stdout-closed-json", "it is closed"),
        ("stdout-closed-table", "it is closed"),
        ("stdout-full-json", "No space left on device"),
        ("stdout-full-table", "No space left on device"),
        ("version-full", "No space left on device"),
    ],
)
def test_a_closed_or_full_stdout_is_one_line(name, reason, shell):
    assert (shell[name].code, shell[name].stderr) == (1, f"{LOST}{reason}\n")


@pytest.mark.parametrize("name", ["pipe-json", "pipe-table"])
def test_a_broken_pipe_is_141_and_one_line(name, shell):
    """The reader of the pipe has left before the output is written (``| true``, or ``| head -c 1`` once it
    has its byte): the result is lost, the files are not."""
    assert (shell[name].code, shell[name].stderr) == (141, f"{LOST}the reading end of the pipe was closed\n")
    if name == "pipe-json":
        assert (shell[name].folder / "o" / "report.json").is_file()  # committed before stdout was written


def test_an_unusable_stderr_changes_nothing_else(shell):
    for name in ("stderr-closed", "stderr-full"):
        assert shell[name].code == 0 and "provenance" in shell[name].stdout
    for name in ("stderr-full-error", "stderr-closed-error"):
        assert shell[name].code == 1 and shell[name].stdout == ""


@pytest.mark.parametrize(
    "name, value",
    [("COLUMNS", "0"), ("COLUMNS", "-3"), ("COLUMNS", "abc"), ("COLUMNS", ""), ("LINES", "0"), ("TERM", "dumb")],
)
def test_odd_terminal_settings_still_show_the_output_and_the_error(name, value, tiny_ckpt, runner, monkeypatch):
    monkeypatch.setenv(name, value)
    failed = invoke(runner, ["info", tiny_ckpt, "--batch-size", "0"])
    assert_refused(failed, "--batch-size")
    assert failed.stderr == f"error: --batch-size must be an integer from 1 to {MAX_COUNT:,}, got 0\n"
    shown = invoke(runner, ["info", tiny_ckpt])
    assert shown.exit_code == 0 and "tests: random weights" in shown.stdout


HOSTILE = "red \x1b[31mRED\x1b[0m, title \x1b]0;pwned\x07, cr\rbell\x07, c1 \x9b31m, bidi \u202eevil"


def test_printable_shows_every_control_character():
    assert printable(HOSTILE) == (
        "red \\x1b[31mRED\\x1b[0m, title \\x1b]0;pwned\\x07, cr\\x0dbell\\x07, c1 \\x9b31m, bidi \\u202eevil"
    )
    assert printable("tab\tand\nnewline stay, é and 中 too") == "tab\tand\nnewline stay, é and 中 too"


def _checkpoint(path: Path, *, provenance: str = "tests", arch: str = "dcgan") -> Path:
    save_tiny_dcgan(path, provenance=provenance, arch=arch)
    return path


def _inert(text: str) -> bool:
    return not any(c in text for c in "\x1b\x07\r\x9b\u202e")


def test_escape_sequences_from_a_checkpoint_never_reach_the_terminal(runner, tmp_path):
    ckpt = _checkpoint(tmp_path / "hostile.safetensors", provenance=HOSTILE)
    table = invoke(runner, ["info", ckpt])
    assert table.exit_code == 0 and _inert(table.stdout) and _inert(table.stderr)
    assert "\\x1b[31mRED" in table.stdout and "\\x1b]0;pwned\\x07" in table.stdout
    exact = invoke(runner, ["info", ckpt, "--json"])
    assert json.loads(exact.stdout)["checkpoint"]["provenance"] == HOSTILE  # JSON stays exact
    assert "\\u001b[31m" in exact.stdout and _inert(exact.stdout)


def test_escape_sequences_in_error_lines_are_shown_inertly(runner, tmp_path):
    missing = invoke(runner, ["info", tmp_path / "gone\x1b[31m\x07.safetensors"])
    assert _inert(assert_refused(missing, "gone\\x1b[31m\\x07"))
    arch = invoke(runner, ["info", _checkpoint(tmp_path / "arch.safetensors", arch="\x1b]0;pwned\x07dcgan")])
    assert _inert(assert_refused(arch, "\\x1b]0;pwned"))


def test_markup_in_user_text_is_printed_as_is(runner, tmp_path):
    """A provenance '[/data/mnist]', an --out and a --data path with brackets: printed verbatim, no MarkupError."""
    ckpt = _checkpoint(tmp_path / "tiny.safetensors", provenance="[/data/mnist] [bold]markup[/bold]")
    info = invoke(runner, ["info", ckpt])
    assert info.exit_code == 0 and "[/data/mnist] [bold]markup[/bold]" in info.stdout
    out = tmp_path / "o[/x]"
    data = tmp_path / "d[/y]"  # the folder y] inside d[
    data.mkdir(parents=True)
    np.save(data / "x.npy", np.random.default_rng(0).integers(0, 255, size=(4, 1, 32, 32), dtype=np.uint8))
    result = invoke(
        runner,
        ["pag", ckpt, "--data", data / "x.npy", "--steps", "1", "--prior-samples", "20", "--top", "2"] + ["--out", out],
    )
    assert result.exit_code == 0, result.stderr
    assert f"wrote 6 files to {out}\n" in result.stderr
    assert "d[/y]/x.npy" in re.sub(r"\s+", "", result.stdout)  # the caption, however Rich wraps it
    assert (out / "report.json").is_file()


WARNING_FACTORY = """
import warnings

import torch


class Warns(torch.nn.Module):
    nz = 4

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 16)

    def forward(self, z):
        warnings.warn("this op is slow\\nsecond line", UserWarning)
        return torch.tanh(self.lin(z))


def make():
    return Warns()
"""


def test_a_library_warning_becomes_one_note(runner, tmp_path, monkeypatch):
    (tmp_path / "warngen.py").write_text(WARNING_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke(runner, ["loglik", "--generator", "warngen:make", "--n", "2", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("note: warning (UserWarning): this op is slow\n") == 1
    assert "warnings.warn" not in result.stderr and "second line" not in result.stderr


def test_pil_decompression_bomb_warning_becomes_a_note(tiny_ckpt, runner, tmp_path, monkeypatch):
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, size=(32, 32), dtype=np.uint8)).save(data / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # 1024 pixels: a warning (an error above 1200)
    args = ["pag", tiny_ckpt, "--data", data, "--steps", "1", "--prior-samples", "4", "--top", "2"]
    result = invoke(runner, [*args, "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.stderr
    assert "note: warning (DecompressionBombWarning): Image size (1024 pixels) exceeds limit" in result.stderr
    assert "DecompressionBombWarning:" not in result.stderr.replace("(DecompressionBombWarning):", "")


def test_a_table_says_which_rows_it_leaves_out(tiny_ckpt, runner, tmp_path):
    """The terminal table shows 12 latents; with more it says so (every row is in the report)."""
    many = invoke(runner, ["loglik", tiny_ckpt, "--n", "14", "--out", tmp_path / "a"])
    assert many.exit_code == 0, many.stderr
    assert "first 12 of 14 latents shown (all in report.json)" in re.sub(r"\s+", " ", many.stdout)
    assert len(json.loads((tmp_path / "a" / "report.json").read_text())["results"]["samples"]) == 14
    few = invoke(runner, ["loglik", tiny_ckpt, "--n", "3", "--out", tmp_path / "b"])
    assert few.exit_code == 0 and "shown (all in" not in few.stdout


def test_brackets_in_help_texts_are_shown_not_taken_as_markup(runner, monkeypatch):
    """Rich reads '[default: z]' in an option's help as a markup tag and drops it unless it is escaped."""
    monkeypatch.setenv("COLUMNS", "250")
    result = invoke(runner, ["eigvecs", "--help"])
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", result.stdout)
    for shown in ("z, w or w+ [default: z].", "[default: gan-probe-out/COMMAND]", "t in [-alpha, alpha]."):
        assert shown in text, shown
