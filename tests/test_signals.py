"""Ctrl-C (SIGINT), SIGTERM and SIGHUP at any moment: one line, exit 128 + N (130, 143, 129), no traceback,
staging removed; nothing written before the work starts; ``ascend``, ``pag`` and ``divergence`` keep their
finished work and the others keep the earlier folder; under torchrun, one line from rank 0 and no traceback
from our ranks (docs/design.md §8.5).

Real subprocesses, started together (each mostly waits for its imports) and signalled once a slow generator
has made a given number of forward passes, or once ``-X importtime`` reports a module imported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gan_probe import interrupt

ROOT = Path(__file__).resolve().parent.parent

SLOW_FACTORY = '''
import os
import time

import torch


class Slow(torch.nn.Module):
    """tanh(Linear) whose every forward pass of 3 latents is slow and leaves a mark."""

    nz = 3

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 16)

    def forward(self, z):
        if z.shape[0] == 3:
            with open(os.environ["SLOWGEN_MARKS"], "a") as fh:
                fh.write("x")
            time.sleep(0.1)
        return torch.tanh(self.lin(z))


def make():
    torch.manual_seed(0)
    return Slow()
'''

EARLIER = '{"earlier": true}\n'


@dataclass
class Signalled:
    """One `python -m gan_probe` (or torchrun) process, sent ``signum`` after ``after_marks`` forward passes of
    the slow generator, or as soon as ``after_import`` is imported."""

    name: str
    args: list[str]
    signum: int
    after_marks: int
    folder: Path
    torchrun: bool = False
    after_import: str | None = None  # else once -X importtime reports this module imported
    earlier: bool = True  # --out holds an earlier report.json; else it does not exist
    proc: subprocess.Popen | None = None
    signalled: bool = False
    stderr: str = ""

    @property
    def out(self) -> Path:
        return self.folder / "out"

    @property
    def marks(self) -> int:
        path = self.folder / "marks"
        return len(path.read_text()) if path.exists() else 0

    def ready(self) -> bool:
        """Whether the moment to send the signal has come."""
        if self.after_import is None:
            return self.marks >= self.after_marks
        path = self.folder / "stderr"
        text = path.read_text() if path.exists() else ""
        return any(line.rstrip().endswith(f" {self.after_import}") for line in text.splitlines())

    def start(self) -> None:
        self.folder.mkdir()
        (self.folder / "slowgen.py").write_text(SLOW_FACTORY)
        if self.earlier:
            self.out.mkdir()
            (self.out / "report.json").write_text(EARLIER)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOWGEN_MARKS": str(self.folder / "marks")}
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "--"]
        python = [sys.executable, *(["-X", "importtime"] if self.after_import else []), "-m"]
        command = [*launcher] if self.torchrun else python
        self.proc = subprocess.Popen(
            [*command, "gan_probe", *self.args, "--generator", "slowgen:make", "--out", str(self.out)],
            cwd=self.folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "stderr", "w"),  # noqa: SIM115 - closed by the child's exit
            start_new_session=True,  # a process group of its own, as a terminal's Ctrl-C reaches it
        )

    def send(self) -> None:
        assert self.proc is not None
        self.signalled = True
        if self.torchrun:
            os.killpg(self.proc.pid, self.signum)  # the launcher and both ranks, like Ctrl-C in a terminal
        else:
            self.proc.send_signal(self.signum)


def _run_all(base: Path, runs: list[Signalled]) -> dict[str, Signalled]:
    for run in runs:
        run.start()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and any(r.proc.poll() is None for r in runs):  # type: ignore[union-attr]
        for run in runs:
            if not run.signalled and run.proc.poll() is None and run.ready():  # type: ignore[union-attr]
                run.send()
        time.sleep(0.01)
    for run in runs:
        assert run.proc is not None
        try:
            run.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        lines = (run.folder / "stderr").read_text().splitlines(keepends=True)
        run.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return {run.name: run for run in runs}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signalled]:
    base = tmp_path_factory.mktemp("signals")
    x = base / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(6, 16)))
    term, hup = signal.SIGTERM, signal.SIGHUP
    return _run_all(
        base,
        [
            Signalled("ascend-term", ["ascend", "--n", "3", "--steps", "40"], term, 4, base / "a"),
            # the first batch of 3 images takes 4 steps (5 passes with the final one): 7 passes are in the second
            Signalled(
                "pag-hup",
                ["pag", "--data", str(x), "--steps", "4", "--batch-size", "3", "--prior-samples", "6", "--top", "2"],
                hup,
                7,
                base / "b",
            ),
            Signalled("loglik-term", ["loglik", "--n", "30", "--batch-size", "3"], term, 2, base / "c"),
            Signalled("term-import", ["loglik", "--n", "2"], term, 0, base / "e", after_import="torch", earlier=False),
            Signalled(
                "torchrun-int",
                ["loglik", "--n", "30", "--batch-size", "3"],
                signal.SIGINT,
                2,
                base / "d",
                torchrun=True,
            ),
        ],
    )


def _siblings(folder: Path) -> list[str]:
    inside = [p.name for p in folder.iterdir() if p.name.startswith(".gan-probe-")] if folder.exists() else []
    return [p.name for p in folder.parent.iterdir() if ".gan-probe-" in p.name] + inside


def _check_clean(run: Signalled, code: int) -> list[str]:
    assert run.signalled, f"the run ended before its signal: {run.stderr[-2000:]}"
    assert run.proc is not None and run.proc.returncode == code, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr
    assert _siblings(run.out) == []
    return run.stderr.strip().splitlines()


@pytest.mark.parametrize("name, code, signame", [("ascend-term", 143, "SIGTERM"), ("pag-hup", 129, "SIGHUP")])
def test_sigterm_and_sighup_keep_the_work_done(name, code, signame, signalled):
    run = signalled[name]
    lines = _check_clean(run, code)
    assert lines[-1] == f"interrupted by {signame}: the report and files hold the work done so far"
    report = json.loads((run.out / "report.json").read_text())
    assert report["interrupted"] is True
    if name == "ascend-term":
        assert 1 <= report["results"]["steps_done"] < 40
    else:
        assert 3 <= report["results"]["num_recovered"] < 6


def test_sigterm_in_a_command_that_keeps_nothing(signalled):
    run = signalled["loglik-term"]
    assert _check_clean(run, 143) == ["error: interrupted by SIGTERM"]
    assert sorted(p.name for p in run.out.iterdir()) == ["report.json"]
    assert (run.out / "report.json").read_text() == EARLIER


def test_ctrl_c_under_torchrun_is_one_line_from_rank_0(signalled):
    """torchrun's own agent still logs the signal and its own traceback (SignalException) and exits 1: that
    output is torchrun's. Our ranks print one line between them, with no traceback of ours."""
    run = signalled["torchrun-int"]
    assert run.signalled, run.stderr[-2000:]
    assert run.stderr.count("error: interrupted") == 1, run.stderr[-3000:]
    assert not re.search(r'File ".*gan_probe', run.stderr), run.stderr[-3000:]
    assert "KeyboardInterrupt" not in run.stderr
    assert (run.out / "report.json").read_text() == EARLIER and _siblings(run.out) == []


def test_exit_codes_and_lines_of_each_signal(signalled, interrupted):
    """128 + N, the shell's convention: what the real runs above ended with, one code per signal handled."""
    assert [interrupt.exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
    assert interrupt.message(signal.SIGINT) == "interrupted"
    assert interrupt.message(signal.SIGHUP) == "interrupted by SIGHUP"
    runs = [run for run in [*signalled.values(), *interrupted.values()] if not run.torchrun]
    assert {run.signum for run in runs} == set(interrupt.SIGNALS)  # every signal handled was sent
    for run in runs:
        assert run.proc is not None and run.proc.returncode == interrupt.exit_code(run.signum), run.name
    assert {run.proc.returncode for run in runs} == interrupt.EXIT_CODES  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signalled]:
    """Ctrl-C (SIGINT) at the moments that matter: during the imports, in the first step, mid-run."""
    base = tmp_path_factory.mktemp("sigint")
    x = base / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(6, 16)))
    sigint = signal.SIGINT
    pag = ["pag", "--data", str(x), "--steps", "30", "--batch-size", "3"]
    # each sigma makes 21 slow passes: 10 training steps of each encoder and the model samples' first chunk
    divergence = ["divergence", "--data", str(x), "--spread", "0.1,0.2", "--steps", "10", "--batch-size", "3"]
    divergence += ["--importance", "2", "--model-samples", "4"]
    return _run_all(
        base,
        [
            Signalled("int-import", ["loglik", "--n", "2"], sigint, 0, base / "a", after_import="torch", earlier=False),
            Signalled("ascend-first-step", ["ascend", "--n", "3", "--steps", "30"], sigint, 1, base / "b"),
            Signalled("pag-first-batch", pag, sigint, 1, base / "c"),
            Signalled("ascend-mid-run", ["ascend", "--n", "3", "--steps", "40"], sigint, 4, base / "d", earlier=False),
            Signalled("divergence-first-sigma", divergence, sigint, 3, base / "e"),
            Signalled("divergence-second-sigma", divergence, sigint, 26, base / "f"),
        ],
    )


@pytest.fixture(scope="module")
def interrupted_slow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signalled]:
    base = tmp_path_factory.mktemp("sigint_slow")
    sigint = signal.SIGINT
    loglik = ["loglik", "--n", "30", "--batch-size", "3"]
    return _run_all(
        base,
        [
            Signalled(
                "int-cli", ["loglik", "--n", "2"], sigint, 0, base / "a", after_import="gan_probe.cli", earlier=False
            ),
            Signalled("loglik-mid-run", loglik, sigint, 2, base / "b", earlier=False),
        ],
    )


@pytest.mark.parametrize(
    ("name", "code", "line"),
    [("int-import", 130, "error: interrupted"), ("term-import", 143, "error: interrupted by SIGTERM")],
)
def test_a_signal_during_the_imports(name, code, line, interrupted, signalled):
    """The signal as soon as torch is imported (the command line's own imports go on): the line and the code at
    once, nothing written."""
    run = {**interrupted, **signalled}[name]
    assert _check_clean(run, code) == [line]
    assert not run.out.exists()


@pytest.mark.slow
def test_ctrl_c_before_loading(interrupted_slow):
    """SIGINT once the whole command line is imported (parsing, loading the generator)."""
    run = interrupted_slow["int-cli"]
    assert _check_clean(run, 130) == ["error: interrupted"]
    assert not run.out.exists()


@pytest.mark.parametrize("name", ["ascend-first-step", "pag-first-batch", "divergence-first-sigma"])
def test_ctrl_c_in_the_first_step_keeps_the_earlier_folder(name, interrupted):
    run = interrupted[name]
    assert _check_clean(run, 130)[-1] == "error: interrupted"
    assert "KeyboardInterrupt" not in run.stderr
    assert (run.out / "report.json").read_text() == EARLIER
    assert sorted(p.name for p in run.out.iterdir()) == ["report.json"]


def test_ctrl_c_mid_run_keeps_the_steps_done(interrupted):
    run = interrupted["ascend-mid-run"]
    _check_clean(run, 130)
    assert "interrupted: the report and files hold the work done so far" in run.stderr
    report = json.loads((run.out / "report.json").read_text())
    assert report["interrupted"] is True and 1 <= report["results"]["steps_done"] < 40


def test_ctrl_c_in_the_second_sigma_keeps_the_first(interrupted):
    """divergence's unit of finished work is a spread width: the first is kept whole, the one in progress dropped."""
    run = interrupted["divergence-second-sigma"]
    lines = _check_clean(run, 130)
    assert lines[-1] == "interrupted: the report and files hold the work done so far"
    said = " ".join(run.stderr.split())  # the note wraps at the console's width
    assert "note: interrupted: 1 of 2 spread widths measured (sigma 0.2 was in progress and is dropped)" in said
    report = json.loads((run.out / "report.json").read_text())
    res = report["results"]
    assert report["interrupted"] is True and res["interrupted"] is True and res["num_sigmas_done"] == 1
    assert [r["sigma"] for r in res["results"]] == [0.1] and report["parameters"]["spread"] == [0.1, 0.2]
    assert res["results"][0]["encoders"]["data"]["steps_done"] == 10
    names = sorted(p.name for p in run.out.iterdir())
    assert names == ["divergence.npz", "encoder_0.png", "report.json"]  # one sigma: no plot against sigma


@pytest.mark.slow
def test_ctrl_c_mid_loglik_discards_everything(interrupted_slow):
    """A command that cannot keep partial work: 130, and nothing written."""
    run = interrupted_slow["loglik-mid-run"]
    assert _check_clean(run, 130)[-1] == "error: interrupted"
    assert not run.out.exists()
